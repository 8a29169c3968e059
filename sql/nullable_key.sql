-- A nullable correlation key: target rows whose legacy key is NULL are
-- entities the new system created on its own (new-only for the envelope)
\pset null '(null)'
CREATE TABLE nk_l (id bigserial PRIMARY KEY, v text NOT NULL);
CREATE TABLE nk_t (id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000) PRIMARY KEY,
                   legacy_id bigint UNIQUE, v text NOT NULL);
INSERT INTO nk_l (v) VALUES ('a'), ('b');
INSERT INTO nk_t (v) VALUES ('native1');          -- the new system's own entity
-- accepted: legacy_id may be NULL; the target's own id (fed from legacy's
-- by the same name) keeps its own value on target-born rows: divergent
SELECT softmig.create_migration('nk', 'nk_l', 'nk_t',
    forward => '{"legacy_id": "id"}', backward => '{"id": "legacy_id"}', divergent => '{id}',
    options => '{"target_key": ["legacy_id"]}');
SELECT softmig.status('nk')->'target_key' AS target_key;
-- the legacy key must still be NOT NULL
CREATE TABLE nk_bad (id bigint UNIQUE, v text);
CREATE TABLE nk_bad_t (id bigint UNIQUE, v text);
SELECT * FROM t.err($$SELECT softmig.create_migration('nk_bad', 'nk_bad', 'nk_bad_t', key => '{id}')$$);

-- mirrored: legacy rows arrive with their key; the target's own row stays
SELECT softmig.advance('nk');
INSERT INTO nk_l (v) VALUES ('c');
CALL softmig.backfill('nk');
SELECT * FROM nk_t ORDER BY id;
SELECT * FROM softmig.parity('nk');
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT layer, check_name FROM softmig.check('nk') WHERE NOT ok AND check_name <> 'readers';
RESET client_min_messages;

-- new_write: a keyless insert on the target gets an id past legacy's, and,
-- having no legacy key, is a new-only entity: not projected, the envelope closes
SELECT softmig.advance('nk');
INSERT INTO nk_t (v) VALUES ('native2') RETURNING *;
SELECT e->'open' AS open, e->>'reason' AS reason, e->'first_key' AS first_key, e->'new_only_count' AS n
  FROM softmig.envelope('nk') e;
-- rows with a legacy key are projected as usual, alone or beside new-only ones
INSERT INTO nk_t (legacy_id, v) VALUES (50, 'x'), (NULL, 'native3');
UPDATE nk_t SET v = v || '!';
DELETE FROM nk_t WHERE v = 'native3!';
SELECT * FROM nk_l ORDER BY id;
SELECT softmig.envelope('nk')->'new_only_count' AS new_only_count;
-- parity: the target's own entities are no difference
SELECT * FROM softmig.parity('nk');
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT layer, check_name, violations FROM softmig.check('nk') WHERE NOT ok AND check_name <> 'readers';
RESET client_min_messages;
-- an entity that gets a legacy key becomes correlated and is projected
UPDATE nk_t SET legacy_id = 60 WHERE v = 'native2!';
SELECT * FROM nk_l WHERE id = 60;
SELECT * FROM softmig.parity('nk');
-- legacy cannot take the target's own entities back: the rollback is refused
SELECT state, message FROM t.err($$SELECT softmig.rollback('nk')$$);

-- on_new_only = reject: such a write waits for the DBA's approval (SM004)
CREATE TABLE nk2_l (id int PRIMARY KEY, v text);
CREATE TABLE nk2_t (legacy_id int UNIQUE, v text);
INSERT INTO nk2_l VALUES (1, 'a');
SELECT softmig.create_migration('nk2', 'nk2_l', 'nk2_t', forward => '{"legacy_id": "id"}',
    backward => '{"id": "legacy_id"}', options => '{"on_new_only": "reject"}');
SELECT softmig.advance('nk2');
CALL softmig.backfill('nk2');
SELECT softmig.advance('nk2');
SELECT * FROM t.err($$INSERT INTO nk2_t VALUES (NULL, 'own')$$);
INSERT INTO nk2_t VALUES (2, 'b');
SELECT softmig.close_envelope('nk2', 'the new system may create its own entities');
INSERT INTO nk2_t VALUES (NULL, 'own');
SELECT * FROM nk2_l ORDER BY id;
SELECT * FROM softmig.parity('nk2');
