-- A1: finding a deleted user's messages to tombstone them, without a full scan.
CREATE INDEX entries_by_sender ON entries (sender, kind, stream);
