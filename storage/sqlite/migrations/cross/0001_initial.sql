-- D3, the cross domain: single chats, ordinary groups, chat with oneself, and their stream.

CREATE TABLE conversations (
    conv_id         TEXT    NOT NULL PRIMARY KEY,
    kind            TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    owner_id        INTEGER,
    created_at      INTEGER NOT NULL,
    member_limit    INTEGER NOT NULL,
    mute_all        INTEGER NOT NULL DEFAULT 0,
    history_visible INTEGER NOT NULL DEFAULT 0,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_stream     INTEGER NOT NULL DEFAULT 0,
    member_count    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Departed members keep their row (left_seq set).
CREATE TABLE members (
    conv_id      TEXT    NOT NULL,
    user_id      INTEGER NOT NULL,
    role         TEXT    NOT NULL,
    muted        INTEGER NOT NULL DEFAULT 0,
    visible_from INTEGER NOT NULL,
    left_seq     INTEGER,
    read_seq     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id);
-- Read receipts come from read positions, never from a row per message per member: who has
-- read seq N is a range of this index over current members. user_id rides along as part of
-- the primary key; left_seq (always NULL here) is listed so that SQLite, which does not
-- count a partial index's WHERE as covered, answers from the index alone.
CREATE INDEX members_by_read ON members (conv_id, read_seq, visible_from, left_seq)
    WHERE left_seq IS NULL;
-- Who joined after seq N (few, even in a group of 10,000).
CREATE INDEX members_by_join ON members (conv_id, visible_from, left_seq)
    WHERE left_seq IS NULL;

-- The stream. AUTOINCREMENT: a committed stream position (which doubles as the message id)
-- is never handed out again, even if the newest rows were ever deleted.
-- message/system entries have their own seq; recall/read entries have seq NULL and name
-- the message recalled or the new read position in ref_seq, so they take no seq and never
-- collide with the unique (conv_id, seq) index (NULLs are distinct).
CREATE TABLE entries (
    stream      INTEGER PRIMARY KEY AUTOINCREMENT,
    conv_id     TEXT    NOT NULL,
    seq         INTEGER,
    ref_seq     INTEGER,
    kind        TEXT    NOT NULL,
    sender      INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    cmid        TEXT,
    body        BLOB,
    -- M4: the stream position of the first recall entry naming this message.
    recalled_by INTEGER,
    CHECK ((seq IS NULL) != (ref_seq IS NULL))
);
CREATE UNIQUE INDEX entries_by_seq ON entries (conv_id, seq);
CREATE INDEX entries_by_stream ON entries (conv_id, stream);

CREATE TABLE idempotency (
    sender      INTEGER NOT NULL,
    client_id   TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    stream      INTEGER NOT NULL,
    PRIMARY KEY (sender, client_id)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency (created_at);

CREATE TABLE counters (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('group_number', 0);
