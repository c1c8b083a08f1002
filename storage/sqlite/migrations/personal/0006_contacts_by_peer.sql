-- A1: the rows other users hold about a user, found without a scan of every contact row:
-- the erasure of an account tells each of their owners that the contact is gone
-- (PersonalStore.contacts_naming), and deletes them.
CREATE INDEX contacts_by_peer ON contacts (peer);
