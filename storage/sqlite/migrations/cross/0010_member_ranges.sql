-- M1: the earlier memberships of a member who left (or was removed from) a group that hides
-- its history and was added back. Each row is one (visible_from, left_seq) range of seqs
-- they saw then; the current membership stays in members, and every row here ends before
-- that member's current visible_from. Sync, history, unread counts, receipts and recalls
-- read the union of the two (CrossDomainStore's visibility rule), so what a member saw is
-- never forgotten by being added again, and what was said while they were away stays
-- hidden. Rows exist only for such rejoined members: most lookups find none.
-- A database from before this migration had already forgotten those ranges (the membership
-- row was overwritten on the add): there is nothing to carry over. Like members, it exists
-- in cross.db and organisation-conversations.db (both run the "cross" migrations).
CREATE TABLE member_ranges (
    conv_id      TEXT    NOT NULL,
    user_id      INTEGER NOT NULL,
    visible_from INTEGER NOT NULL,
    left_seq     INTEGER NOT NULL,
    PRIMARY KEY (conv_id, user_id, visible_from),
    CHECK (visible_from <= left_seq)
) WITHOUT ROWID;
