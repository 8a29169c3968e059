-- Kept plans are keyed by everything they depend on: migrations whose key
-- columns share a name but not a type, backfilled in one session, must not
-- share a plan (that crashed the server or stored a garbage cursor), and
-- DDL on a table drops the plans built for its old shape.
\pset null '(null)'

CREATE TYPE pc_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN pc_code AS text CHECK (VALUE ~ '^[A-Z]+$');
CREATE TYPE pc_pair AS (a int, b text);

-- one legacy/target pair per key type, the key column always called "k"
CREATE FUNCTION t.pc_pair(typ text, vals text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n text := 'pc_' || regexp_replace(typ, '\W', '', 'g');
BEGIN
    EXECUTE format('CREATE TABLE %I (k %s PRIMARY KEY, v int)', n || '_l', typ);
    EXECUTE format('CREATE TABLE %I (k %s PRIMARY KEY, v int)', n || '_t', typ);
    EXECUTE format('INSERT INTO %I SELECT x, 1 FROM unnest(%s) x', n || '_l', vals);
    PERFORM softmig.create_migration(n, (n || '_l')::regclass, (n || '_t')::regclass);
    PERFORM softmig.advance(n);
END $$;
SELECT t.pc_pair('text', $$ARRAY['a', 'b', 'c']$$);
SELECT t.pc_pair('timestamptz', $$ARRAY['2024-01-01 00:00+00', '2024-06-30 12:34:56.789+02', 'infinity']::timestamptz[]$$);
SELECT t.pc_pair('uuid', $$ARRAY['00000000-0000-0000-0000-000000000001', 'ffffffff-ffff-ffff-ffff-ffffffffffff']::uuid[]$$);
SELECT t.pc_pair('numeric', $$ARRAY[1.5, 12345678901234567890.123, -3]::numeric[]$$);
SELECT t.pc_pair('integer', $$ARRAY[1, 2, 3]$$);
SELECT t.pc_pair('bigint', $$ARRAY[4294967290, 4294967296, 4294967300]::bigint[]$$);
SELECT t.pc_pair('pc_mood', $$ARRAY['sad', 'happy']::pc_mood[]$$);
SELECT t.pc_pair('pc_code', $$ARRAY['AB', 'ZZ']::pc_code[]$$);

-- the same session backfills them all, one row per batch: the cursor
-- statement has the same text for each, only its parameter type differs
CALL softmig.backfill('pc_text', 1);
CALL softmig.backfill('pc_timestamptz', 1);
CALL softmig.backfill('pc_uuid', 1);
CALL softmig.backfill('pc_numeric', 1);
CALL softmig.backfill('pc_integer', 1);
CALL softmig.backfill('pc_bigint', 1, max_batches => 20);
CALL softmig.backfill('pc_pc_mood', 1);
CALL softmig.backfill('pc_pc_code', 1);
SELECT m.name, p.phase, p.cursor, p.rows_backfilled
  FROM softmig.backfill_progress p JOIN softmig.migrations m ON m.id = p.migration_id
 WHERE m.name LIKE 'pc\_%' ORDER BY m.id;
-- every row arrived
SELECT (SELECT count(*) FROM pc_timestamptz_t) AS tstz, (SELECT count(*) FROM pc_uuid_t) AS uuid,
       (SELECT count(*) FROM pc_numeric_t) AS num, (SELECT count(*) FROM pc_bigint_t) AS big,
       (SELECT count(*) FROM pc_pc_code_t) AS code;

-- composite keys: same column name, a different row type
CREATE TABLE pc_comp_l (k pc_pair PRIMARY KEY, v int);
CREATE TABLE pc_comp_t (k pc_pair PRIMARY KEY, v int);
INSERT INTO pc_comp_l VALUES (ROW(1, 'x'), 1), (ROW(2, 'y'), 2);
SELECT softmig.create_migration('pc_comp', 'pc_comp_l', 'pc_comp_t');
SELECT softmig.advance('pc_comp');
CALL softmig.backfill('pc_comp', 1);
SELECT count(*) AS comp_rows FROM pc_comp_t;

-- DDL on legacy between two batches: the copy statement reads the batch
-- with legacy's row type, so a retyped column must not be read with the
-- plan built for the old type
CREATE TABLE pc_ddl_l (id int PRIMARY KEY, v int);
CREATE TABLE pc_ddl_t (id int PRIMARY KEY, v bigint);
INSERT INTO pc_ddl_l SELECT g, g FROM generate_series(1, 4) g;
SELECT softmig.create_migration('pc_ddl', 'pc_ddl_l', 'pc_ddl_t');
SELECT softmig.advance('pc_ddl');
CALL softmig.backfill('pc_ddl', 1, max_batches => 2);
ALTER TABLE pc_ddl_l ALTER COLUMN v TYPE bigint;
UPDATE pc_ddl_l SET v = 5000000000 + id WHERE id > 2;
BEGIN;
SET LOCAL softmig.override = 'test: the target lacks rows 3 and 4 again';
DELETE FROM pc_ddl_t WHERE id > 2;
COMMIT;
CALL softmig.backfill('pc_ddl', 1);
SELECT * FROM pc_ddl_t ORDER BY id;

-- a migration dropped and created again over the same tables with another
-- key type (a table re-created under the same name)
SELECT softmig.rollback('pc_integer');
SELECT softmig.drop_migration('pc_integer');
DROP TABLE pc_integer_l, pc_integer_t;
CREATE TABLE pc_integer_l (k text PRIMARY KEY, v int);
CREATE TABLE pc_integer_t (k text PRIMARY KEY, v int);
INSERT INTO pc_integer_l VALUES ('p', 1), ('q', 2);
SELECT softmig.create_migration('pc_integer', 'pc_integer_l', 'pc_integer_t');
SELECT softmig.advance('pc_integer');
CALL softmig.backfill('pc_integer', 1);
SELECT * FROM pc_integer_t ORDER BY k;

-- parity agrees everywhere
SELECT m.name, count(p.*) AS differences
  FROM softmig.migrations m LEFT JOIN LATERAL softmig.parity(m.name) p ON true
 WHERE m.name LIKE 'pc\_%' GROUP BY m.name ORDER BY m.name;

-- clean up
SELECT softmig.rollback(name) FROM softmig.migrations WHERE name LIKE 'pc\_%' ORDER BY id;
SELECT softmig.drop_migration(name) FROM softmig.migrations WHERE name LIKE 'pc\_%' ORDER BY id;
DROP TABLE pc_text_l, pc_text_t, pc_timestamptz_l, pc_timestamptz_t, pc_uuid_l, pc_uuid_t,
    pc_numeric_l, pc_numeric_t, pc_integer_l, pc_integer_t, pc_bigint_l, pc_bigint_t,
    pc_pc_mood_l, pc_pc_mood_t, pc_pc_code_l, pc_pc_code_t, pc_comp_l, pc_comp_t, pc_ddl_l, pc_ddl_t;
DROP FUNCTION t.pc_pair(text, text);
DROP TYPE pc_mood, pc_pair;
DROP DOMAIN pc_code;
