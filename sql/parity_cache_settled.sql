-- Parity's digest cache on pages that are not all-visible: right after a
-- backfill (no vacuum yet), or after a vacuum under synchronous_commit = off
-- (the newest commits' hint bits cannot be set before their WAL is flushed,
-- so vacuum leaves their pages not all-visible), a repeated comparison must
-- still reuse the digests of every segment nothing changed since.
\pset null '(null)'
SET client_min_messages = warning;

-- (autovacuum off: the test vacuums where it means to)
CREATE TABLE ps_l (id int PRIMARY KEY, cust text NOT NULL, pad text)
    WITH (autovacuum_enabled = off);
CREATE TABLE ps_t (order_id int PRIMARY KEY, customer text NOT NULL, pad text)
    WITH (autovacuum_enabled = off);
SELECT softmig.create_migration('ps', 'ps_l', 'ps_t',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "pad": "pad"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "pad": "pad"}',
    options  => '{"target_key": ["order_id"]}');

-- what a run did: cache mode, why it was full, stale segments per side,
-- whether it stored its digests, differences found
CREATE FUNCTION ps_run(OUT mode text, OUT why text, OUT stale_l int, OUT stale_t int,
                       OUT stored boolean, OUT differences bigint)
LANGUAGE sql AS $$
    SELECT s #>> '{cache,mode}', s #>> '{cache,why}', (s #>> '{cache,stale_segments,0}')::int,
           (s #>> '{cache,stale_segments,1}')::int, (s #>> '{cache,stored}')::boolean,
           (s ->> 'missing_in_target')::bigint + (s ->> 'missing_in_legacy')::bigint
           + (s ->> 'mismatch')::bigint
      FROM (SELECT softmig._parity_summary(m.id, 1000, 0) AS s
              FROM softmig.migrations m WHERE m.name = 'ps') x
$$;
-- 1. Freshly written, never vacuumed: no page is all-visible, every row was
-- committed before either run began.  The second run is warm.
INSERT INTO ps_l SELECT g, 'c' || g, repeat('x', 180) FROM generate_series(1, 30000) g;
INSERT INTO ps_t SELECT id, upper(cust), pad FROM ps_l;
SELECT relallvisible AS all_visible_pages FROM pg_class WHERE oid = 'ps_t'::regclass;
SELECT pg_relation_size('ps_t') / 8192 / 32 >= 20 AS many_segments;
SELECT mode, why, stored, differences FROM ps_run();
SELECT * FROM ps_run();

-- a committed change makes its segment stale; the rest is reused
UPDATE ps_t SET customer = 'CHANGED' WHERE order_id = 15017;
SELECT mode, why, stale_l, stale_t > 0 AS target_stale, stored, differences FROM ps_run();
SELECT kind, key, field, legacy_value, target_value FROM softmig.parity('ps', 1000);
UPDATE ps_t SET customer = 'C15017' WHERE order_id = 15017;
SELECT mode, stale_l, stale_t > 0 AS target_stale, differences FROM ps_run();

-- 2. Rows written by the comparing transaction itself (not settled: its
-- own snapshot sees them, a later one may not): their segment is read
-- again, and again after the transaction rolled back (the page changed)
BEGIN;
INSERT INTO ps_t VALUES (30001, 'NEW', 'new');
SELECT mode, why, stale_l, stale_t > 0 AS target_stale, differences FROM ps_run();
ROLLBACK;
SELECT mode, why, stale_l, stale_t > 0 AS target_stale, differences FROM ps_run();
SELECT mode, stale_l, stale_t, differences FROM ps_run();
-- a row the comparing statement itself inserts (a data-modifying CTE run
-- before the comparison): the statement's snapshot does not see it, and its
-- page is not vouched for, so the next run (which sees it) reads it again
-- (called directly: ps_run, a volatile SQL function, would take a newer
-- snapshot that sees the row)
WITH ins AS (INSERT INTO ps_t VALUES (30002, 'OWN', 'own') RETURNING order_id)
SELECT s #>> '{cache,mode}' AS mode, (s #>> '{cache,stale_segments,1}')::int > 0 AS target_stale,
       (s ->> 'missing_in_legacy')::int AS missing_in_legacy
  FROM (SELECT max(order_id) AS n FROM ins) i
 CROSS JOIN LATERAL (SELECT softmig._parity_summary(m.id, 1000, 0) AS s
                       FROM softmig.migrations m WHERE m.name = 'ps' AND i.n IS NOT NULL) r;
SELECT mode, stale_l, stale_t > 0 AS target_stale, differences FROM ps_run();
DELETE FROM ps_t WHERE order_id = 30002;
SELECT mode, stale_l, stale_t > 0 AS target_stale, differences FROM ps_run();

-- 3. The backfill under synchronous_commit = off, in batches, and a vacuum
-- right after it: whatever the vacuum could mark all-visible, the second
-- run is warm and reads nothing again.
SELECT softmig.parity_cache_reset('ps');
TRUNCATE ps_t;
SET synchronous_commit = off;
INSERT INTO ps_t SELECT id, upper(cust), pad FROM ps_l WHERE id <= 10000;
INSERT INTO ps_t SELECT id, upper(cust), pad FROM ps_l WHERE id > 10000 AND id <= 20000;
INSERT INTO ps_t SELECT id, upper(cust), pad FROM ps_l WHERE id > 20000;
VACUUM ps_t;
SELECT mode, why, stored, differences FROM ps_run();
SELECT * FROM ps_run();
SELECT * FROM ps_run();
RESET synchronous_commit;

-- 4. When most of a table changed the run is full, and it says how many
-- segments were stale (never [0, 0] with that reason)
UPDATE ps_t SET pad = pad || '';
SELECT mode, why, stale_l, stale_t > 0 AS target_stale, differences FROM ps_run();
SELECT mode, stale_l, stale_t, differences FROM ps_run();

SELECT softmig.drop_migration('ps');
DROP TABLE ps_l, ps_t;
DROP FUNCTION ps_run();
