-- O4: when dissolution was confirmed. Set, the organisation is gone for every path and its
-- rows are deleted in chunks by a job that resumes after a restart.
ALTER TABLE organisations ADD COLUMN dissolving_at INTEGER;
