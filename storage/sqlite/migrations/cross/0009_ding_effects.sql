-- D4 for DINGs: effects a DING causes on other stores (an organisation's copy of its text,
-- `org_copy:<org ids>`), recorded in the DING's own transaction and carried out afterwards
-- by the server's outbox relay (server/outbox.py), which deletes each row once done. Like
-- the other DING tables it exists in cross.db and organisation-conversations.db (both run
-- the "cross" migrations); each database keeps the effects of its own DINGs.
CREATE TABLE ding_effects (
    effect_id INTEGER PRIMARY KEY AUTOINCREMENT,
    ding_id   INTEGER NOT NULL,
    kind      TEXT    NOT NULL
);
-- O4: an organisation's DINGs are deleted with their pending effects.
CREATE INDEX ding_effects_by_ding ON ding_effects (ding_id);
