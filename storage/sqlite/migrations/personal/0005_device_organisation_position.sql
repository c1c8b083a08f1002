-- D2: a device's acknowledged position in the organisation conversation stream (the third
-- position of a sync token), beside the cross-domain and personal ones.
ALTER TABLE devices ADD COLUMN acked_organisation INTEGER NOT NULL DEFAULT 0;
