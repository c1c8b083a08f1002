-- L1: the record of every group live stream started in a cross-domain group. Viewers, hands,
-- co-hosts and signals are in-memory state of the server and are never stored.

CREATE TABLE live_streams (
    origin        TEXT    NOT NULL,
    number        INTEGER NOT NULL,
    host_id       INTEGER NOT NULL,
    host_device   INTEGER NOT NULL,
    title         TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    end_reason    TEXT,
    peak_viewers  INTEGER NOT NULL DEFAULT 0,
    total_viewers INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, number)
) WITHOUT ROWID;
-- A restarting server finds the streams that were live without reading the ended ones.
CREATE INDEX live_streams_active ON live_streams (started_at, origin, number)
    WHERE ended_at IS NULL;

-- Groups a stream is linked to besides its origin, in link order.
CREATE TABLE live_links (
    origin   TEXT    NOT NULL,
    number   INTEGER NOT NULL,
    position INTEGER NOT NULL,
    conv_id  TEXT    NOT NULL,
    PRIMARY KEY (origin, number, position),
    UNIQUE (origin, number, conv_id)
);

-- Users the host invited explicitly.
CREATE TABLE live_invited (
    origin  TEXT    NOT NULL,
    number  INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (origin, number, user_id)
) WITHOUT ROWID;
