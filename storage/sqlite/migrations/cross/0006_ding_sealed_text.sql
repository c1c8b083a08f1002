-- A3: a DING's text sealed at rest with the sender's data key (storage/sealing.py). A sealed
-- DING keeps "" in `text` and the envelope here; destroying the key erases it (A1, O4).
ALTER TABLE dings ADD COLUMN sealed BLOB;
