-- Parity's digest cache: stored digests are reused only for table segments
-- whose pages did not change, and every answer equals a full comparison's.
\pset null '(null)'
SET client_min_messages = warning;

-- 40000 rows of about 200 bytes: some 35 segments (32 blocks each) per
-- table, 40 chunks of 1000 rows.  The key mapping yields NULL for id <= 0.
-- (autovacuum off: the test vacuums where it means to)
CREATE TABLE pc_l (id int PRIMARY KEY, cust text NOT NULL, cents int, pad text)
    WITH (autovacuum_enabled = off);
CREATE TABLE pc_t (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), pad text)
    WITH (autovacuum_enabled = off);
SELECT softmig.create_migration('pc', 'pc_l', 'pc_t',
    forward  => '{"order_id": "CASE WHEN id > 0 THEN id END", "customer": "upper(cust)",
                  "amount": "cents / 100.0", "pad": "pad"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int", "pad": "pad"}',
    options  => '{"target_key": ["order_id"]}');
INSERT INTO pc_l SELECT g, 'c' || g, g, repeat('x', 180) FROM generate_series(1, 40000) g;
INSERT INTO pc_t SELECT id, upper(cust), cents / 100.0, pad FROM pc_l;
VACUUM (ANALYZE, INDEX_CLEANUP on) pc_l;
VACUUM (ANALYZE, INDEX_CLEANUP on) pc_t;
SELECT pg_relation_size('pc_l') / 8192 / 32 >= 20 AS many_segments;

-- what a run did (cache mode, why, stale segments per side, chunks compared
-- row by row) and how many differences it found; which segments a change
-- touches depends on where rows sit, so the tests look at whether, not how
-- many
CREATE FUNCTION pc_run(OUT mode text, OUT why text, OUT stale_l int, OUT stale_t int,
                       OUT descended int, OUT stored boolean, OUT differences bigint)
LANGUAGE sql AS $$
    SELECT s #>> '{cache,mode}', s #>> '{cache,why}', (s #>> '{cache,stale_segments,0}')::int,
           (s #>> '{cache,stale_segments,1}')::int,
           (s ->> 'chunks_descended')::int, (s #>> '{cache,stored}')::boolean,
           (s ->> 'missing_in_target')::bigint + (s ->> 'missing_in_legacy')::bigint
           + (s ->> 'mismatch')::bigint
      FROM (SELECT softmig._parity_summary(m.id, 1000, 0) AS s
              FROM softmig.migrations m WHERE m.name = 'pc') x
$$;
-- the differences a cached run reports that a full one does not, or the
-- other way round (must stay empty)
CREATE FUNCTION pc_disagreement() RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE pc_warm AS
        SELECT format('%s %s %s %s %s', kind, key, field, legacy_value, target_value) AS d
          FROM softmig.parity('pc', 1000);
    PERFORM set_config('softmig.parity_cache', 'off', true);
    CREATE TEMP TABLE pc_full AS
        SELECT format('%s %s %s %s %s', kind, key, field, legacy_value, target_value) AS d
          FROM softmig.parity('pc', 1000);
    PERFORM set_config('softmig.parity_cache', 'on', true);
    RETURN QUERY (SELECT 'only cached: ' || d FROM pc_warm EXCEPT ALL SELECT 'only cached: ' || d FROM pc_full)
           UNION ALL (SELECT 'only full: ' || d FROM pc_full EXCEPT ALL SELECT 'only full: ' || d FROM pc_warm);
    DROP TABLE pc_warm, pc_full;
END $$;

-- the first run reads everything and stores its digests; the next reuses them
SELECT * FROM pc_run();
SELECT * FROM pc_run();
SELECT chunk_rows, cardinality(bounds) AS key_columns, warm_runs
  FROM softmig.parity_cache WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'pc');

-- a change to one target row (no vacuum): its page is no longer
-- all-visible, so its segment is stale and digested again; only the chunk
-- that differs is compared row by row
UPDATE pc_t SET amount = amount + 1 WHERE order_id = 20017;
SELECT mode, why, stale_l, stale_t > 0 AS target_stale, descended, stored, differences
  FROM pc_run();
SELECT kind, key, field, legacy_value, target_value FROM softmig.parity('pc', 1000);
SELECT * FROM pc_disagreement();

-- undo it and vacuum: the page is all-visible again but its LSN moved, so the
-- segment is still stale and the row is compared again (now equal)
UPDATE pc_t SET amount = amount - 1 WHERE order_id = 20017;
VACUUM (INDEX_CLEANUP on) pc_t;
SELECT mode, why, stale_l, stale_t > 0 AS target_stale, descended, differences FROM pc_run();

-- the same, with a fresh cache: change and vacuum between two runs
SELECT softmig.parity_cache_reset('pc');
SELECT mode, why FROM pc_run();
SELECT mode, stale_l, stale_t, differences FROM pc_run();
UPDATE pc_l SET cust = 'changed' WHERE id = 31000;
VACUUM (INDEX_CLEANUP on) pc_l;
SELECT mode, stale_l > 0 AS legacy_stale, stale_t, descended, differences FROM pc_run();
SELECT kind, key, field, legacy_value, target_value FROM softmig.parity('pc', 1000);
UPDATE pc_l SET cust = 'c31000' WHERE id = 31000;

-- a new legacy row (placed wherever there is room, far from its chunk's
-- other rows), a legacy row whose mapped key is NULL and a deleted target
-- row: the segments they changed are digested again
INSERT INTO pc_l VALUES (40001, 'c40001', 40001, 'new'), (0, 'zero', 0, 'NULL key');
DELETE FROM pc_t WHERE order_id = 5;
SELECT mode, descended > 0 AS descended, differences FROM pc_run();
SELECT kind, key, field FROM softmig.parity('pc', 1000) ORDER BY key::text;
SELECT * FROM pc_disagreement();
DELETE FROM pc_l WHERE id IN (0, 40001);
INSERT INTO pc_t SELECT id, upper(cust), cents / 100.0, pad FROM pc_l WHERE id = 5;
VACUUM (INDEX_CLEANUP on) pc_l;
VACUUM (INDEX_CLEANUP on) pc_t;
SELECT mode, differences FROM pc_run();

-- quarantine is part of the comparison: a change discards the digests
SELECT softmig.quarantine('pc', '{"id": 7}', 'cache test');
SELECT mode, why, differences FROM pc_run();
SELECT softmig.release('pc', '{"id": 7}');
SELECT mode, why FROM pc_run();

-- so is each table's storage: a rewrite discards them (its rows are
-- written frozen, so the next run reuses what the first one stored); a
-- vacuum that then marks the pages all-visible moves their LSNs only with
-- data checksums or wal_log_hints, so the run after it may be full, and the
-- one after that is warm again
VACUUM FULL pc_t;
SELECT mode, why FROM pc_run();
SELECT mode, why FROM pc_run();
VACUUM (INDEX_CLEANUP on) pc_t;
SELECT mode IN ('warm', 'full') AS ran, differences FROM pc_run();
SELECT mode, why FROM pc_run();

-- so is each table's column list, even when no page changes
ALTER TABLE pc_l ADD COLUMN extra int DEFAULT 7;
SELECT mode, why FROM pc_run();
ALTER TABLE pc_l DROP COLUMN extra;
SELECT mode, why FROM pc_run();

-- when most of a table changed, a full pass is cheaper and is done
UPDATE pc_t SET pad = pad || '';
SELECT mode, why, differences FROM pc_run();

-- a run in a read-only transaction uses the cache but does not write it
VACUUM (INDEX_CLEANUP on) pc_t;
SELECT softmig.parity_cache_reset('pc');
BEGIN READ ONLY;
SELECT mode, why, stored FROM pc_run();
COMMIT;
SELECT count(*) AS cache_rows FROM softmig.parity_cache
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'pc');

-- runs that never use it
SET softmig.parity_cache = off;
SELECT mode, why FROM pc_run();
RESET softmig.parity_cache;
SET softmig.parity_digest_bits = 8;
SELECT mode, why FROM pc_run();
RESET softmig.parity_digest_bits;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT mode, why FROM pc_run();
COMMIT;
-- the mirrored -> new_write guard always compares in full
SELECT proconfig FROM pg_proc WHERE oid = 'softmig._require_semantic_health(integer)'::regprocedure;

-- mappings or tables whose digests could go stale unseen are never cached
CREATE FUNCTION pc_fmt(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT upper(t) $$;
CREATE TABLE pc2_l (id int PRIMARY KEY, v text);
CREATE TABLE pc2_t (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('pc2', 'pc2_l', 'pc2_t',
    forward => '{"id": "id", "v": "public.pc_fmt(v)"}', backward => '{"id": "id", "v": "lower(v)"}');
SELECT s #>> '{cache,mode}' AS mode, s #>> '{cache,why}' AS why
  FROM softmig.migrations m, softmig._parity_summary(m.id, 1000, 0) s WHERE m.name = 'pc2';
CREATE TABLE pc3_l (id int PRIMARY KEY, v text);
CREATE UNLOGGED TABLE pc3_t (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('pc3', 'pc3_l', 'pc3_t',
    forward => '{"id": "id", "v": "v"}', backward => '{"id": "id", "v": "v"}');
SELECT s #>> '{cache,mode}' AS mode, s #>> '{cache,why}' AS why
  FROM softmig.migrations m, softmig._parity_summary(m.id, 1000, 0) s WHERE m.name = 'pc3';
CREATE TABLE pc4_l (id int PRIMARY KEY, v text);
CREATE TABLE pc4_t (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('pc4', 'pc4_l', 'pc4_t',
    forward => '{"id": "id", "v": "v || now()::text"}', backward => '{"id": "id", "v": "v"}');
SELECT s #>> '{cache,mode}' AS mode, s #>> '{cache,why}' AS why
  FROM softmig.migrations m, softmig._parity_summary(m.id, 1000, 0) s WHERE m.name = 'pc4';
SELECT count(*) AS cache_rows FROM softmig.parity_cache
 WHERE migration_id IN (SELECT id FROM softmig.migrations WHERE name IN ('pc2', 'pc3', 'pc4'));

-- bad input
SELECT softmig.parity_cache_reset('no_such_migration');
SELECT softmig.parity_cache_reset(NULL);
CREATE ROLE regress_pc_other;
SET ROLE regress_pc_other;
SELECT softmig.parity_cache_reset('pc');
SELECT count(*) FROM softmig.parity_cache;
RESET ROLE;
DROP ROLE regress_pc_other;

-- dropping a migration drops its cache row
SELECT mode FROM pc_run();
SELECT id AS pc_id FROM softmig.migrations WHERE name = 'pc' \gset
SELECT count(*) AS cache_rows FROM softmig.parity_cache WHERE migration_id = :pc_id;
SELECT softmig.drop_migration('pc');
SELECT count(*) AS cache_rows FROM softmig.parity_cache WHERE migration_id = :pc_id;
SELECT softmig.drop_migration('pc2');
SELECT softmig.drop_migration('pc3');
SELECT softmig.drop_migration('pc4');
DROP TABLE pc_l, pc_t, pc2_l, pc2_t, pc3_l, pc3_t, pc4_l, pc4_t;
DROP FUNCTION pc_run(), pc_disagreement(), pc_fmt(text);
