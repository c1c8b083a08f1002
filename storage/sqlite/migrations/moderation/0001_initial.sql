-- C1, platform moderation: users' reports and the append-only log of moderators' acts.
-- Platform data: no organisation path reads this database (D5).

-- AUTOINCREMENT: an id is never handed out twice.
CREATE TABLE reports (
    report_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter      INTEGER NOT NULL,
    target_user   INTEGER NOT NULL,
    conv_id       TEXT,
    seq           INTEGER,
    reason        TEXT    NOT NULL,
    note          TEXT    NOT NULL,
    -- The reported message's body when it was reported (evidence), or NULL.
    evidence      BLOB,
    created_at    INTEGER NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'open',
    closed_by_act INTEGER,
    CHECK ((conv_id IS NULL) = (seq IS NULL))
);
-- A reporter's open reports, to answer a repeated report with the first one.
CREATE INDEX reports_open_by_reporter ON reports (reporter, target_user) WHERE status = 'open';
CREATE INDEX reports_by_status ON reports (status, report_id);

-- Append-only: acts are never updated or deleted. report_ids: the reports the act answered,
-- as a comma-separated list of ids.
CREATE TABLE acts (
    act_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT    NOT NULL,
    operator    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    target_user INTEGER,
    conv_id     TEXT,
    seq         INTEGER,
    evidence    BLOB,
    report_ids  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
