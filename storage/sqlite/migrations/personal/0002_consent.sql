-- D4: consent per user and organisation, given or revoked by the user alone, with its
-- time. Personal data: never visible to an organisation.
CREATE TABLE consent (
    user_id INTEGER NOT NULL,
    org_id  INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    granted INTEGER NOT NULL,
    change  INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE INDEX consent_by_user ON consent (user_id, org_id, change);
