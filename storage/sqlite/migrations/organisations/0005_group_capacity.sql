-- M2: each organisation's group-expansion package, as a ledger: a top-up (org.group_topup)
-- adds units, an expansion (group.expand) spends a tier's price, recorded against the
-- member who asked. (org_id, sender, client_id) is the request's idempotency key: a resend
-- with the same key writes nothing. Kept for the organisation's life, a record of each
-- purchase and spend; deleted with the organisation (O4).
CREATE TABLE group_package_ledger (
    org_id      INTEGER NOT NULL,
    entry_id    INTEGER NOT NULL,
    sender      INTEGER NOT NULL,
    client_id   TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('topup', 'expand')),
    units       INTEGER NOT NULL CHECK (units >= 0),
    ts          INTEGER NOT NULL,
    PRIMARY KEY (org_id, entry_id),
    UNIQUE (org_id, sender, client_id)
) WITHOUT ROWID;

-- M2: the expansions an organisation paid for: group conv_id may have member_limit members
-- until expires_at. One row per (organisation, group, tier); renewing extends it.
CREATE TABLE group_expansions (
    org_id       INTEGER NOT NULL,
    expansion_id INTEGER NOT NULL,
    conv_id      TEXT    NOT NULL,
    member_limit INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    paid_by      INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (org_id, expansion_id),
    UNIQUE (org_id, conv_id, member_limit)
) WITHOUT ROWID;
CREATE INDEX group_expansions_by_conv ON group_expansions (conv_id);
