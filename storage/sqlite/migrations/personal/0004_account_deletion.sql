-- A1: personal account deletion. deleted_at: the user asked; their sessions are gone and
-- their phone number is free again. erased: the erasure job finished (content tombstoned,
-- personal data deleted); until then it resumes after a restart.
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
ALTER TABLE users ADD COLUMN erased INTEGER NOT NULL DEFAULT 0;
