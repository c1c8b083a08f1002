-- P5: enterprise accounts a verified organisation created, and their login records. The
-- account's personal user row (phone 'ent:<org>:<account>') lives in the personal store;
-- here are what the organisation owns: the name, the Argon2id password hash (A2), the
-- status, real-person verification (O3) and the information-security controls (O1).
CREATE TABLE enterprise_accounts (
    org_id          INTEGER NOT NULL,
    account         TEXT    NOT NULL,
    user_id         INTEGER NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'disabled', 'banned', 'cancelled')),
    person_verified INTEGER NOT NULL DEFAULT 0,
    controls        TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (org_id, account)
) WITHOUT ROWID;

CREATE TABLE enterprise_logins (
    org_id   INTEGER NOT NULL,
    login_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    ok       INTEGER NOT NULL,
    reason   TEXT    NOT NULL,
    PRIMARY KEY (org_id, login_id)
) WITHOUT ROWID;
CREATE INDEX enterprise_logins_by_user ON enterprise_logins (org_id, user_id, login_id);
