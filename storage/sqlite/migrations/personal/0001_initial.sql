-- D1, the personal domain: users, devices, sessions, login codes, contacts, settings and the
-- personal stream. Nothing here is ever visible to an organisation.

-- AUTOINCREMENT: an id is never handed out twice.
CREATE TABLE users (
    user_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    phone            TEXT    NOT NULL UNIQUE,
    display_name     TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    token_generation INTEGER NOT NULL DEFAULT 0,
    suspended        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE devices (
    device_id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             INTEGER NOT NULL,
    name                TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    acked_conversations INTEGER NOT NULL DEFAULT 0,
    acked_personal      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_user ON devices (user_id);

-- A2: only a keyed MAC of the refresh secret is stored.
CREATE TABLE refresh_sessions (
    session_id TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    device_id  INTEGER NOT NULL,
    secret_mac BLOB    NOT NULL,
    generation INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_sessions_by_user ON refresh_sessions (user_id);

-- A2: one-time codes as a keyed MAC, never in plain text.
CREATE TABLE login_codes (
    phone      TEXT    NOT NULL PRIMARY KEY,
    mac        BLOB    NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE qr_tokens (
    token_hash BLOB    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- M5: owner's view of peer.
CREATE TABLE contacts (
    owner      INTEGER NOT NULL,
    peer       INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;

-- M3: a row only once the user changed a default.
CREATE TABLE settings (
    user_id       INTEGER PRIMARY KEY,
    notifications INTEGER NOT NULL
);

CREATE TABLE muted_conversations (
    user_id INTEGER NOT NULL,
    conv_id TEXT    NOT NULL,
    PRIMARY KEY (user_id, conv_id)
) WITHOUT ROWID;

-- The personal stream: positions are never reused.
CREATE TABLE personal_stream (
    pstream INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    body    BLOB    NOT NULL
);
CREATE INDEX personal_stream_by_user ON personal_stream (user_id, pstream);

-- A write's changes are consecutive pstream positions (one writer, one transaction):
-- first_pstream and change_count name them.
CREATE TABLE idempotency (
    sender        INTEGER NOT NULL,
    client_id     TEXT    NOT NULL,
    fingerprint   BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    first_pstream INTEGER,
    change_count  INTEGER NOT NULL,
    PRIMARY KEY (sender, client_id)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency (created_at);
