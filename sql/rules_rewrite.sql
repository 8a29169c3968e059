-- A rule that rewrites the statements softmig runs on a migrated table is
-- reported with a clear SQLSTATE (SM002), never as an internal error.  The
-- DDL guard refuses CREATE RULE on a migrated table; event triggers do not
-- fire under session_replication_role = replica, which is how such a rule
-- can still appear.
\set VERBOSITY terse
CREATE TABLE rr_l (id int PRIMARY KEY, v text);
CREATE TABLE rr_t (id int PRIMARY KEY, v text);
INSERT INTO rr_l SELECT g, 'x' FROM generate_series(1, 3) g;
SELECT softmig.create_migration('rr', 'rr_l', 'rr_t');
SELECT softmig.advance('rr');
CREATE RULE rr_ins AS ON INSERT TO rr_t DO INSTEAD NOTHING;
SET session_replication_role = replica;
CREATE RULE rr_ins AS ON INSERT TO rr_t DO INSTEAD NOTHING;
CREATE RULE rr_upd AS ON UPDATE TO rr_t DO INSTEAD NOTHING;
RESET session_replication_role;
SELECT * FROM t.err($$SELECT softmig.backfill_batch('rr', 10)$$);
SELECT * FROM t.err(format($$SELECT softmig.hydrate('rr', '[{"id": 1, "v": "y"}]', %L)$$, pg_current_snapshot()));
DROP RULE rr_ins ON rr_t;
DROP RULE rr_upd ON rr_t;
CALL softmig.backfill('rr');
SELECT count(*) AS differences FROM softmig.parity('rr');
SELECT softmig.rollback('rr');
SELECT softmig.drop_migration('rr');
DROP TABLE rr_l, rr_t;
