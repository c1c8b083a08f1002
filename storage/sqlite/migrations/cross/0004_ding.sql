-- G1-G3: DING messages between people of different organisations or none (D3), their
-- escalation steps, the transactional outbox of SMS and call steps, and the quota ledger.

CREATE TABLE dings (
    ding_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    sender       INTEGER NOT NULL,
    payer        TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    cmid         TEXT    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    state        TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    send_at      INTEGER NOT NULL,
    sms_after_s  INTEGER,
    call_after_s INTEGER,
    round        INTEGER NOT NULL,
    round_at     INTEGER NOT NULL
);
-- Idempotency of ding.send, and the sender's list (newest first).
CREATE UNIQUE INDEX dings_by_cmid ON dings (sender, cmid);

CREATE TABLE ding_recipients (
    ding_id      INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    delivered_at INTEGER,
    read_at      INTEGER,
    confirmed_at INTEGER,
    PRIMARY KEY (ding_id, user_id)
) WITHOUT ROWID;
CREATE INDEX ding_recipients_by_user ON ding_recipients (user_id, ding_id);

CREATE TABLE ding_steps (
    step_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    ding_id    INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    channel    TEXT    NOT NULL,
    round      INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    changed_at INTEGER
);
CREATE INDEX ding_steps_by_recipient ON ding_steps (ding_id, user_id, step_id);
-- What the scheduler waits for, in due order: only scheduled steps, so 100,000 pending
-- DINGs cost one small index, and finished steps nothing.
CREATE INDEX ding_steps_scheduled ON ding_steps (due_at, step_id) WHERE state = 'scheduled';

-- The transactional outbox: a row is written with its step's move to handed_over, and
-- leaves with the step's next state. It keeps the quota charge so a withdrawal refunds it.
CREATE TABLE ding_outbox (
    step_id         INTEGER NOT NULL PRIMARY KEY,
    idempotency_key TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    period          TEXT    NOT NULL,
    member          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX ding_outbox_ready ON ding_outbox (claimed, next_attempt_at, step_id);

-- G2: the balance of each payer account per channel and period, and its use per member.
CREATE TABLE quota_balances (
    account TEXT    NOT NULL,
    channel TEXT    NOT NULL,
    period  TEXT    NOT NULL,
    granted INTEGER NOT NULL,
    used    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, channel, period)
) WITHOUT ROWID;

CREATE TABLE quota_usage (
    account TEXT    NOT NULL,
    channel TEXT    NOT NULL,
    period  TEXT    NOT NULL,
    member  INTEGER NOT NULL,
    used    INTEGER NOT NULL,
    PRIMARY KEY (account, channel, period, member)
) WITHOUT ROWID;
