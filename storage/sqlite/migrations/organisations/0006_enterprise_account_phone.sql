-- G1 with P5: an enterprise account's contact phone number (E.164, validated by the
-- server), set by its organisation's admins, where its DING SMS and calls go. The
-- organisation's data (D2), like the rest of the row: never a login identifier (the
-- account's personal user row keeps its placeholder phone 'ent:<org>:<account>'), not
-- unique (accounts may share a number). NULL: the account has none, and a DING's SMS or
-- call step to it fails at once, its unit refunded (docs/ding.md).
ALTER TABLE enterprise_accounts ADD COLUMN phone TEXT;
