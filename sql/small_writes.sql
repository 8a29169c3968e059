-- Single-row writes: what the write path remembers between statements of a
-- session (its triggers found in place, the option require_operation_key)
-- follows every change, and what it leaves out for a small statement (the
-- OLD rows of an UPDATE that sets no key, the subtransaction of a projection
-- that rejects new-only state) changes nothing a write does.
CREATE TABLE sw_l (id int PRIMARY KEY, v text CHECK (v IS DISTINCT FROM 'legacy cannot'));
CREATE TABLE sw_t (id int PRIMARY KEY, v text);
INSERT INTO sw_l VALUES (1, 'a'), (2, 'b');
SELECT softmig.create_migration('sw', 'sw_l', 'sw_t', options => '{"on_new_only": "reject"}');
SELECT softmig.advance('sw');
CALL softmig.backfill('sw');
SELECT format('softmig_%s_upd', id) AS trg_upd, format('softmig_%s_guard', id) AS trg_guard
  FROM softmig.migrations WHERE name = 'sw' \gset

------------------------------------------------------------------ triggers switched off after a write
UPDATE sw_l SET v = 'a1' WHERE id = 1;          -- the triggers are checked and remembered
SET session_replication_role = replica;         -- (the DDL guard refuses it otherwise)
ALTER TABLE sw_l DISABLE TRIGGER :"trg_upd";
RESET session_replication_role;
SELECT state, regexp_replace(message, 'softmig_[0-9]+_', 'softmig_N_') AS message
  FROM t.err($$UPDATE sw_l SET v = 'lost?' WHERE id = 1$$);
SELECT softmig.repair_triggers('sw')->'healthy' AS healthy;
UPDATE sw_l SET v = 'a2' WHERE id = 1;
SET session_replication_role = replica;
ALTER TABLE sw_l DISABLE TRIGGER :"trg_guard";  -- the AFTER trigger refuses then
RESET session_replication_role;
SELECT state, regexp_replace(message, 'softmig_[0-9]+_', 'softmig_N_') AS message
  FROM t.err($$UPDATE sw_l SET v = 'lost?' WHERE id = 1$$);
SELECT softmig.repair_triggers('sw')->'healthy' AS healthy;
SELECT * FROM sw_l ORDER BY id;
SELECT * FROM sw_t ORDER BY id;

------------------------------------------------------------------ require_operation_key set after a write
UPDATE sw_l SET v = 'b1' WHERE id = 2;
SELECT softmig.set_option('sw', 'require_operation_key', 'true');
SELECT state, message FROM t.err($$UPDATE sw_l SET v = 'no key' WHERE id = 2$$);
SELECT softmig.set_option('sw', 'require_operation_key', NULL);
UPDATE sw_l SET v = 'b2' WHERE id = 2;

------------------------------------------------------------------ new_write: projection of single rows
SELECT softmig.advance('sw');
UPDATE sw_t SET v = 'a3' WHERE id = 1;          -- no key set: legacy's row is updated
UPDATE sw_t SET id = 3 WHERE id = 2;            -- a key set: legacy's row moves
UPDATE sw_t SET id = id, v = 'a4' WHERE id = 1; -- a key set to itself
INSERT INTO sw_t VALUES (4, 'd');
DELETE FROM sw_t WHERE id = 4;
SELECT * FROM sw_l ORDER BY id;
-- on_new_only = reject: a row legacy refuses fails the statement, as it is
SELECT state, message FROM t.err($$UPDATE sw_t SET v = 'legacy cannot' WHERE id = 1$$);
SELECT state, message FROM t.err($$INSERT INTO sw_t VALUES (5, 'legacy cannot')$$);
BEGIN;
SAVEPOINT s;
UPDATE sw_t SET v = 'legacy cannot' WHERE id = 3;
ROLLBACK TO SAVEPOINT s;
UPDATE sw_t SET v = 'c1' WHERE id = 3;          -- the transaction goes on
COMMIT;
SELECT * FROM sw_l ORDER BY id;
SELECT * FROM sw_t ORDER BY id;
SELECT softmig.envelope('sw')->'open' AS still_open;

SELECT softmig.rollback('sw', 'done') AS back, softmig.rollback('sw', 'done') AS back_again;
SELECT softmig.drop_migration('sw');
DROP TABLE sw_l, sw_t;
