-- A3: data keys, stored only wrapped by the master key (storage/keys.py). One row per key;
-- an owner's newest key seals new bodies, older ones open what they sealed. Deleting an
-- owner's rows (secure_delete is on) makes everything sealed with them unreadable.
CREATE TABLE data_keys (
    owner      TEXT    NOT NULL,
    key_id     INTEGER NOT NULL,
    wrapped    BLOB    NOT NULL,
    master_id  TEXT    NOT NULL,
    reserved   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (owner, key_id)
) WITHOUT ROWID;
CREATE INDEX data_keys_by_master ON data_keys (master_id);

-- Owners whose keys were destroyed (account deleted, organisation dissolved): no key is
-- ever added for them again. Holds no key material.
CREATE TABLE destroyed_key_owners (
    owner        TEXT    PRIMARY KEY,
    destroyed_at INTEGER NOT NULL
) WITHOUT ROWID;
