-- Backfill: errors, progress, resumability, guard, stale rows, shapes
\pset null '(null)'
CREATE TABLE bf_l (id int PRIMARY KEY, cust text NOT NULL, cents int);
CREATE TABLE bf_t (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2));
INSERT INTO bf_l SELECT g, 'c' || g, g * 10 FROM generate_series(1, 2500) g;
SELECT softmig.create_migration('bf', 'bf_l', 'bf_t',
    forward => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}');
-- target rows that predate mirroring: one stale, one legacy does not have
INSERT INTO bf_t VALUES (5, 'STALE', 0), (9999, 'ORPHAN', 1);

-- bad calls
SELECT * FROM t.err($$CALL softmig.backfill('bf')$$);              -- state legacy
SELECT * FROM t.err($$CALL softmig.backfill('nope')$$);
SELECT softmig.advance('bf');
SELECT * FROM t.err($$CALL softmig.backfill('bf', batch_size => 0)$$);
SELECT * FROM t.err($$CALL softmig.backfill('bf', max_batches => 0)$$);
SELECT * FROM t.err($$CALL softmig.backfill('bf', pause_ms => -1)$$);
SELECT * FROM t.err($$SELECT softmig.backfill_batch('bf', 2000000)$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM t.err($$SELECT softmig.backfill_batch('bf', 10)$$);
ROLLBACK;
CREATE ROLE sm_nobody;
SET ROLE sm_nobody;
SELECT * FROM t.err($$CALL softmig.backfill('bf')$$);
RESET ROLE;
DROP ROLE sm_nobody;

-- the guard: no new_write before the backfill is done
SELECT * FROM t.err($$SELECT softmig.advance('bf', 'new_write')$$);
SELECT softmig.status('bf')->'backfill_done' AS done, softmig.status('bf')->'backfill'->'phase' AS phase;

-- a live write before the backfill: it is already in the target and stays as written
UPDATE bf_l SET cust = 'live' WHERE id = 7;
DELETE FROM bf_l WHERE id = 8;

-- resumable: two batches, then the rest
CALL softmig.backfill('bf', batch_size => 1000, max_batches => 2);
SELECT b->'phase' AS phase, b->'cursor' AS cursor, b->'rows_backfilled' AS rows, b->'batches' AS batches
  FROM (SELECT softmig.status('bf')->'backfill' AS b) s;
SELECT softmig.status('bf')->'backfill_done' AS done;
CALL softmig.backfill('bf', batch_size => 1000);
SELECT b->'phase' AS phase, b->'rows_backfilled' AS rows, b->'rows_removed' AS removed,
       b->'ranges_to_revisit' AS revisit, b->'remaining_estimate' AS remaining
  FROM (SELECT softmig.status('bf')->'backfill' AS b) s;
SELECT (softmig.status('bf')->>'rows_backfilled')::int AS rows_backfilled, softmig.status('bf')->'backfill_done' AS done;

-- the target now equals legacy through the mapping: stale row 5 corrected,
-- orphan 9999 removed, live row 7 kept, deleted row 8 not resurrected
SELECT * FROM bf_t WHERE order_id IN (5, 7, 8, 9999) ORDER BY 1;
SELECT count(*) AS differences FROM (
    (SELECT id, upper(cust), cents / 100.0 FROM bf_l EXCEPT SELECT * FROM bf_t)
    UNION ALL
    (SELECT * FROM bf_t EXCEPT SELECT id, upper(cust), cents / 100.0 FROM bf_l)) d;
-- calling it again is harmless
CALL softmig.backfill('bf');
SELECT action, detail->'rows_backfilled' AS rows FROM softmig.history('bf') WHERE action = 'backfill_done';

-- the guard lets the move through now
SELECT softmig.advance('bf', 'new_write');
SELECT * FROM t.err($$CALL softmig.backfill('bf')$$);             -- state new_write

-- a new mirroring epoch needs a new backfill, which corrects what went stale
SELECT softmig.rollback('bf');
SELECT softmig.rollback('bf');
UPDATE bf_l SET cents = 1 WHERE id BETWEEN 1 AND 10;               -- not mirrored in legacy
DELETE FROM bf_l WHERE id = 11;
SELECT softmig.advance('bf');
SELECT softmig.status('bf')->'backfill_done' AS done_after_new_epoch;
CALL softmig.backfill('bf', batch_size => 700);
SELECT count(*) AS differences FROM (
    (SELECT id, upper(cust), cents / 100.0 FROM bf_l EXCEPT SELECT * FROM bf_t)
    UNION ALL
    (SELECT * FROM bf_t EXCEPT SELECT id, upper(cust), cents / 100.0 FROM bf_l)) d;

-- composite keys and a partitioned legacy table
CREATE TABLE bfc_l (a int NOT NULL, b text NOT NULL, v int, PRIMARY KEY (a, b)) PARTITION BY RANGE (a);
CREATE TABLE bfc_l1 PARTITION OF bfc_l FOR VALUES FROM (0) TO (50);
CREATE TABLE bfc_l2 PARTITION OF bfc_l FOR VALUES FROM (50) TO (100);
CREATE TABLE bfc_t (a int NOT NULL, b text NOT NULL, v bigint, PRIMARY KEY (b, a));
INSERT INTO bfc_l SELECT g % 100, 'k' || (g % 7), g FROM generate_series(1, 700) g ON CONFLICT DO NOTHING;
SELECT softmig.create_migration('bfc', 'bfc_l', 'bfc_t');
SELECT softmig.advance('bfc');
CALL softmig.backfill('bfc', batch_size => 64);
SELECT (SELECT count(*) FROM bfc_l) AS legacy_rows, (SELECT count(*) FROM bfc_t) AS target_rows,
       (SELECT count(*) FROM (SELECT * FROM bfc_l EXCEPT SELECT * FROM bfc_t) x) AS differences;
SELECT softmig.status('bfc')->'backfill'->'cursor' AS last_cursor;

SELECT softmig.rollback('bfc');
SELECT softmig.drop_migration('bfc');
SELECT softmig.rollback('bf');
SELECT softmig.drop_migration('bf');
DROP TABLE bf_l, bf_t, bfc_l, bfc_t;
