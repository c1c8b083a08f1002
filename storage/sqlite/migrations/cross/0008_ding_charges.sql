-- G2 across databases (docs/ding.md, "Quota"). These tables exist in cross.db and in
-- organisation-conversations.db (both run the "cross" migrations); each database uses them
-- for the DINGs and quota accounts it keeps.

-- The charge of each SMS or call step, in the database that keeps the payer's account,
-- keyed by the DING's store and the step (x:<step> or o:<step>): charging the same step
-- again returns the recorded outcome, so a step is charged at most once across crashes.
-- state: paid, exhausted, refunded (a paid unit given back), void (refunded before it was
-- charged: it never will be). account..member are NULL for void.
CREATE TABLE quota_charges (
    charge_key TEXT    NOT NULL PRIMARY KEY,
    account    TEXT,
    channel    TEXT,
    period     TEXT,
    member     INTEGER,
    state      TEXT    NOT NULL,
    at         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX quota_charges_by_account ON quota_charges (account, charge_key);

-- Refunds owed for steps of this database's DINGs that ended without reaching the provider
-- after they may have been charged (a confirm, cancel or re-DING after they fell due, or a
-- hand-over that found them cancelled): written in that transaction, carried out by the
-- DING runtime in the payer's database (idempotent by the charge key), then deleted.
CREATE TABLE ding_refunds (
    step_id INTEGER NOT NULL PRIMARY KEY
) WITHOUT ROWID;

-- O4: an organisation's DINGs are found by their payer (org:<org>/user:<member>).
CREATE INDEX dings_by_payer ON dings (payer, ding_id);
