-- Effects an entry causes on other stores (organisation copies, D4), recorded in the
-- entry's own transaction and carried out afterwards by the server's outbox relay, so a
-- crash between the two never leaves an effect half-done or forgotten.
CREATE TABLE effects (
    effect_id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT    NOT NULL,
    stream    INTEGER NOT NULL
);
