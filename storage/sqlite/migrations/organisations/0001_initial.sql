-- D2, the organisation domain. Every table is keyed by org_id first, so one
-- organisation's rows are found, exported and deleted on their own
-- (docs/storage-organisations.md explains the choice of one file keyed by organisation).

CREATE TABLE organisations (
    org_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    disclosure  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  INTEGER NOT NULL,
    verified    INTEGER NOT NULL DEFAULT 0,
    verified_at INTEGER
);
-- P2: a verified organisation's name is unique among verified organisations.
CREATE UNIQUE INDEX verified_names ON organisations (name) WHERE verified = 1;

-- One row per membership span; the current one has left_at NULL.
CREATE TABLE org_members (
    org_id              INTEGER NOT NULL,
    user_id             INTEGER NOT NULL,
    span                INTEGER NOT NULL,
    role                TEXT    NOT NULL,
    permissions         TEXT    NOT NULL DEFAULT '',
    joined_at           INTEGER NOT NULL,
    left_at             INTEGER,
    disclosure_accepted TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (org_id, user_id, span)
) WITHOUT ROWID;
CREATE INDEX org_members_by_user ON org_members (user_id, left_at);

CREATE TABLE join_requests (
    org_id     INTEGER NOT NULL,
    request_id INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    inviter    INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    disclosure TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, request_id)
) WITHOUT ROWID;

CREATE TABLE org_copies (
    org_id   INTEGER NOT NULL,
    copy_id  INTEGER NOT NULL,
    member   INTEGER NOT NULL,
    conv_ref TEXT    NOT NULL,
    ts       INTEGER NOT NULL,
    body     BLOB,
    hidden   INTEGER NOT NULL DEFAULT 0,
    recalled INTEGER NOT NULL DEFAULT 0,
    source   TEXT    NOT NULL,
    PRIMARY KEY (org_id, copy_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX org_copies_by_source ON org_copies (org_id, source);
CREATE INDEX org_copies_by_member ON org_copies (org_id, member, copy_id);

CREATE TABLE org_audit (
    org_id   INTEGER NOT NULL,
    audit_id INTEGER NOT NULL,
    actor    INTEGER NOT NULL,
    action   TEXT    NOT NULL,
    target   TEXT    NOT NULL,
    ts       INTEGER NOT NULL,
    PRIMARY KEY (org_id, audit_id)
) WITHOUT ROWID;
