-- G2: the idempotency key of each top-up of a quota balance (org.ding_topup's cmid), written
-- in the top-up's transaction: a resend with the same key adds nothing. Kept with the
-- balance, a record of each purchase.
CREATE TABLE quota_topups (
    sender      INTEGER NOT NULL,
    client_id   TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    account     TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    period      TEXT    NOT NULL,
    units       INTEGER NOT NULL,
    PRIMARY KEY (sender, client_id)
) WITHOUT ROWID;
