-- Per-field authority holds for every way legacy can rewrite an entity,
-- not only UPDATE: a DELETE and re-INSERT in one transaction (plain, COPY,
-- INSERT ... ON CONFLICT, MERGE) may not put legacy's stale value into a
-- field the target owns.
\pset null '(null)'
CREATE TABLE fr_l (id int PRIMARY KEY, email text, tier text);
CREATE TABLE fr_t (id int PRIMARY KEY, email text, tier_code text);
INSERT INTO fr_l VALUES (1, 'a@x', 'gold'), (2, 'b@x', 'silver');
SELECT softmig.create_migration('fr', 'fr_l', 'fr_t',
    forward => '{"tier_code": "upper(tier)"}', backward => '{"tier": "lower(tier_code)"}');
SELECT softmig.advance('fr');
CALL softmig.backfill('fr');
SELECT softmig.set_field_authority('fr', 'tier_code', 'new');
UPDATE fr_t SET tier_code = 'PLATINUM' WHERE id = 1;
SELECT * FROM fr_l ORDER BY id;

-- UPDATE was already refused
SELECT * FROM t.err($$UPDATE fr_l SET tier = 'gold' WHERE id = 1$$);
-- DELETE and INSERT with the stale value: refused, both rows stay as they were
BEGIN;
DELETE FROM fr_l WHERE id = 1;
SELECT * FROM t.err($$INSERT INTO fr_l VALUES (1, 'a@x', 'gold')$$);
SELECT * FROM t.err($$INSERT INTO fr_l VALUES (1, 'a@x', 'gold') ON CONFLICT (id) DO UPDATE SET tier = EXCLUDED.tier$$);
ROLLBACK;
BEGIN;
DELETE FROM fr_l WHERE id = 1;
COPY fr_l FROM stdin;
1	a@x	gold
\.
ROLLBACK;
-- a MERGE that deletes a row and inserts one with the same key (its DELETE
-- fires first)
SELECT * FROM t.err($$MERGE INTO fr_l USING (VALUES (1, 'a@x', 'gold'), (1, 'new@x', 'gold')) s(id, email, tier)
    ON fr_l.email = s.email
    WHEN MATCHED THEN DELETE
    WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.email, s.tier)$$);
SELECT * FROM fr_t ORDER BY id;
SELECT * FROM fr_l ORDER BY id;

-- with the values it had, the entity may be deleted and inserted again,
-- and the other (legacy-owned) columns may change
BEGIN;
DELETE FROM fr_l WHERE id = 1;
INSERT INTO fr_l VALUES (1, 'a2@x', 'platinum');
COMMIT;
MERGE INTO fr_l USING (VALUES (2, 'b@x', 'silver'), (2, 'b2@x', 'silver')) s(id, email, tier)
    ON fr_l.email = s.email
    WHEN MATCHED THEN DELETE
    WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.email, s.tier);
SELECT * FROM fr_t ORDER BY id;

-- an entity deleted in one transaction and inserted in a later one is a new
-- entity: it starts with legacy's values, like any new entity
DELETE FROM fr_l WHERE id = 2;
INSERT INTO fr_l VALUES (2, 'b@x', 'bronze');
SELECT * FROM fr_t ORDER BY id;
SELECT count(*) AS differences FROM softmig.parity('fr');

SELECT softmig.set_field_authority('fr', 'tier_code', 'legacy');
SELECT softmig.rollback('fr');
SELECT softmig.drop_migration('fr');
DROP TABLE fr_l, fr_t;
