-- A one-row DELETE of the authoritative table is carried to the other one by
-- a kept DELETE by key with the row as parameters instead of the DELETE
-- joined to the transition table; DEBUG2 names the one-row path where it is
-- taken.  A one-row INSERT keeps the upsert over the transition table (the
-- same upsert with the row as parameters was no cheaper).  Every case below
-- runs once with one-row statements (pair 1) and once with two-row
-- statements (pair 2), on the same data, and both pairs must end alike: new
-- rows, a row the other table has already, a row it lacks, a field the
-- target owns, quarantine, operation keys, refusals, and the projection
-- with on_new_only reject and allow.
CREATE TABLE sw_l1 (id int PRIMARY KEY, name text, cents int CHECK (cents <= 1000000), tier text);
CREATE TABLE sw_t1 (id int PRIMARY KEY, name text, amount numeric(10,2) CHECK (amount >= 0), tier_code text);
CREATE TABLE sw_l2 (LIKE sw_l1 INCLUDING ALL);
CREATE TABLE sw_t2 (LIKE sw_t1 INCLUDING ALL);
INSERT INTO sw_l1 VALUES (1, 'ann', 100, 'gold'), (2, 'bob', 200, 'silver');
INSERT INTO sw_l2 SELECT * FROM sw_l1;
SELECT softmig.create_migration('sw' || i, 'sw_l' || i, 'sw_t' || i,
    forward  => '{"amount": "cents / 100.0", "tier_code": "upper(tier)"}',
    backward => '{"cents": "(amount * 100)::int", "tier": "lower(tier_code)"}')
  FROM generate_series(1, 2) i;
SELECT softmig.advance('sw' || i) FROM generate_series(1, 2) i;
CALL softmig.backfill('sw1');
CALL softmig.backfill('sw2');

-- compare: the two targets (and legacies) hold the same rows
CREATE FUNCTION pg_temp.same() RETURNS TABLE (what text, n bigint)
LANGUAGE sql AS $$
    SELECT 'target rows differing', count(*) FROM (
        (SELECT * FROM sw_t1 EXCEPT SELECT * FROM sw_t2)
        UNION ALL (SELECT * FROM sw_t2 EXCEPT SELECT * FROM sw_t1)) d
    UNION ALL
    SELECT 'legacy rows differing', count(*) FROM (
        (SELECT * FROM sw_l1 EXCEPT SELECT * FROM sw_l2)
        UNION ALL (SELECT * FROM sw_l2 EXCEPT SELECT * FROM sw_l1)) d
$$;

------------------------------------------------------------------ mirrored: new rows
SET client_min_messages = debug2;
INSERT INTO sw_l1 VALUES (3, 'cy', 300, 'gold');
INSERT INTO sw_l2 VALUES (3, 'cy', 300, 'gold'), (4, 'dee', 400, 'bronze');
INSERT INTO sw_l1 VALUES (4, 'dee', 400, 'bronze');
DELETE FROM sw_l1 WHERE id = 1;
DELETE FROM sw_l2 WHERE id IN (1, 2);
DELETE FROM sw_l1 WHERE id = 2;
RESET client_min_messages;
SELECT * FROM sw_t1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- INSERT ... ON CONFLICT DO UPDATE of one row: carried as what it did
INSERT INTO sw_l1 VALUES (3, 'cy', 301, 'gold') ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents;
INSERT INTO sw_l1 VALUES (5, 'eve', 500, 'gold') ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents;
INSERT INTO sw_l2 VALUES (3, 'cy', 301, 'gold'), (5, 'eve', 500, 'gold')
    ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ rows the target has already, or lacks
BEGIN;
SET LOCAL softmig.override = 'test: a stray target row, a lost one';
INSERT INTO sw_t1 VALUES (6, 'stray', 0, 'X'), (7, 'stray', 0, 'X');
INSERT INTO sw_t2 VALUES (6, 'stray', 0, 'X'), (7, 'stray', 0, 'X');
DELETE FROM sw_t1 WHERE id IN (4, 5);
DELETE FROM sw_t2 WHERE id IN (4, 5);
COMMIT;
-- the upsert overwrites the stray rows
INSERT INTO sw_l1 VALUES (6, 'fay', 600, 'silver');
INSERT INTO sw_l1 VALUES (7, 'gus', 700, 'silver');
INSERT INTO sw_l2 VALUES (6, 'fay', 600, 'silver'), (7, 'gus', 700, 'silver');
-- deleting rows the target lacks deletes nothing there and fails nothing
DELETE FROM sw_l1 WHERE id = 4;
DELETE FROM sw_l1 WHERE id = 5;
DELETE FROM sw_l2 WHERE id IN (4, 5);
SELECT * FROM sw_t1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ a field the target owns
SELECT softmig.set_field_authority('sw' || i, 'tier_code', 'new') FROM generate_series(1, 2) i;
UPDATE sw_t1 SET tier_code = 'PLATINUM' WHERE id IN (6, 7);
UPDATE sw_t2 SET tier_code = 'PLATINUM' WHERE id IN (6, 7);
-- target rows ahead of legacy (written by hand): legacy's INSERT of their
-- keys keeps the field the target owns (the merge rule)
BEGIN;
SET LOCAL softmig.override = 'test: target rows ahead of legacy';
INSERT INTO sw_t1 VALUES (20, 'pre', 0, 'PLATINUM'), (21, 'pre', 0, 'PLATINUM');
INSERT INTO sw_t2 VALUES (20, 'pre', 0, 'PLATINUM'), (21, 'pre', 0, 'PLATINUM');
COMMIT;
INSERT INTO sw_l1 VALUES (20, 'uma', 2000, 'silver');
INSERT INTO sw_l1 VALUES (21, 'val', 2100, 'silver');
INSERT INTO sw_l2 VALUES (20, 'uma', 2000, 'silver'), (21, 'val', 2100, 'silver');
SELECT * FROM sw_t1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- deleted by legacy and inserted again: alike
DELETE FROM sw_l1 WHERE id = 20;
DELETE FROM sw_l1 WHERE id = 21;
DELETE FROM sw_l2 WHERE id IN (20, 21);
INSERT INTO sw_l1 VALUES (20, 'uma', 2001, 'silver');
INSERT INTO sw_l1 VALUES (21, 'val', 2101, 'silver');
INSERT INTO sw_l2 VALUES (20, 'uma', 2001, 'silver'), (21, 'val', 2101, 'silver');
SELECT * FROM sw_t1 ORDER BY id;
SELECT * FROM pg_temp.same();
SELECT softmig.set_field_authority('sw' || i, 'tier_code', 'legacy') FROM generate_series(1, 2) i;

------------------------------------------------------------------ quarantine
SELECT softmig.quarantine('sw' || i, '{"id": 6}', 'test') FROM generate_series(1, 2) i;
SELECT state, message FROM t.err($$DELETE FROM sw_l1 WHERE id = 6$$);
SELECT state, message FROM t.err($$DELETE FROM sw_l2 WHERE id IN (6, 7)$$);
SELECT state, message FROM t.err($$INSERT INTO sw_l1 VALUES (6, 'x', 1, 'x') ON CONFLICT (id) DO UPDATE SET cents = 1$$);
SELECT softmig.release('sw' || i, '{"id": 6}') FROM generate_series(1, 2) i;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ operation keys
SELECT softmig.set_option('sw' || i, 'require_operation_key', 'true') FROM generate_series(1, 2) i;
SELECT state, message FROM t.err($$INSERT INTO sw_l1 VALUES (8, 'hal', 800, 'gold')$$);
SELECT state, message FROM t.err($$DELETE FROM sw_l2 WHERE id IN (6, 7)$$);
BEGIN;
SET LOCAL softmig.operation_key = 'sw:1';
INSERT INTO sw_l1 VALUES (8, 'hal', 800, 'gold');
INSERT INTO sw_l2 VALUES (8, 'hal', 800, 'gold'), (9, 'ivy', 900, 'gold');
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'sw:2';
INSERT INTO sw_l1 VALUES (9, 'ivy', 900, 'gold');
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'sw:1';      -- replayed: refused, nothing written
SELECT state FROM t.err($$DELETE FROM sw_l1 WHERE id = 8$$);
SELECT state FROM t.err($$DELETE FROM sw_l2 WHERE id IN (8, 9)$$);
ROLLBACK;
SELECT softmig.set_option('sw' || i, 'require_operation_key', NULL) FROM generate_series(1, 2) i;
SELECT * FROM sw_t1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ the target refuses: the statement fails alike
SELECT state, message FROM t.err($$INSERT INTO sw_l1 VALUES (10, 'jo', -1, 'gold')$$);
SELECT state, message FROM t.err($$INSERT INTO sw_l2 VALUES (10, 'jo', -1, 'gold'), (11, 'kay', 1, 'gold')$$);
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ new_write: the projection
SELECT softmig.advance('sw' || i) FROM generate_series(1, 2) i;
SET client_min_messages = debug2;
INSERT INTO sw_t1 VALUES (10, 'jo', 10.00, 'GOLD');
INSERT INTO sw_t2 VALUES (10, 'jo', 10.00, 'GOLD'), (11, 'kay', 11.00, 'SILVER');
INSERT INTO sw_t1 VALUES (11, 'kay', 11.00, 'SILVER');
DELETE FROM sw_t1 WHERE id = 8;
DELETE FROM sw_t2 WHERE id IN (8, 9);
DELETE FROM sw_t1 WHERE id = 9;
RESET client_min_messages;
SELECT * FROM sw_l1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- rows legacy has already, or lacks
BEGIN;
SET LOCAL softmig.override = 'test: legacy strays and losses';
INSERT INTO sw_l1 VALUES (12, 'stray', 0, 'x'), (13, 'stray', 0, 'x');
INSERT INTO sw_l2 VALUES (12, 'stray', 0, 'x'), (13, 'stray', 0, 'x');
DELETE FROM sw_l1 WHERE id IN (10, 11);
DELETE FROM sw_l2 WHERE id IN (10, 11);
COMMIT;
INSERT INTO sw_t1 VALUES (12, 'lu', 12.00, 'GOLD');
INSERT INTO sw_t1 VALUES (13, 'mo', 13.00, 'GOLD');
INSERT INTO sw_t2 VALUES (12, 'lu', 12.00, 'GOLD'), (13, 'mo', 13.00, 'GOLD');
DELETE FROM sw_t1 WHERE id = 10;
DELETE FROM sw_t1 WHERE id = 11;
DELETE FROM sw_t2 WHERE id IN (10, 11);
SELECT * FROM sw_l1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- a row legacy cannot hold (its CHECK): refused alike under on_new_only = reject
SELECT softmig.set_option('sw' || i, 'on_new_only', '"reject"') FROM generate_series(1, 2) i;
SELECT state, message FROM t.err($$INSERT INTO sw_t1 VALUES (14, 'ned', 99999, 'GOLD')$$);
SELECT state, message FROM t.err($$INSERT INTO sw_t2 VALUES (14, 'ned', 99999, 'GOLD'), (15, 'ola', 1, 'GOLD')$$);
SELECT softmig.envelope('sw' || i)->'open' AS open FROM generate_series(1, 2) i;
SELECT * FROM pg_temp.same();
-- and under allow: the write succeeds, legacy lacks the row, the envelope closes
SELECT softmig.set_option('sw' || i, 'on_new_only', '"allow"') FROM generate_series(1, 2) i;
INSERT INTO sw_t1 VALUES (14, 'ned', 99999, 'GOLD');
INSERT INTO sw_t1 VALUES (15, 'ola', 15.00, 'GOLD');
INSERT INTO sw_t2 VALUES (14, 'ned', 99999, 'GOLD'), (15, 'ola', 15.00, 'GOLD');
SELECT * FROM sw_l1 ORDER BY id;
SELECT * FROM pg_temp.same();
SELECT softmig.envelope('sw' || i)->'open' AS open FROM generate_series(1, 2) i;
SELECT count(*) AS parity_differences FROM softmig.parity('sw1');
SELECT count(*) AS parity_differences FROM softmig.parity('sw2');
-- the row legacy could not hold goes: deleted alike
DELETE FROM sw_t1 WHERE id = 14;
DELETE FROM sw_t2 WHERE id = 14;
SELECT count(*) AS parity_differences FROM softmig.parity('sw1');
SELECT count(*) AS parity_differences FROM softmig.parity('sw2');
SELECT * FROM pg_temp.same();

SELECT softmig.advance('sw' || i) FROM generate_series(1, 2) i;
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT softmig.advance('sw' || i) FROM generate_series(1, 2) i;
RESET client_min_messages;
SELECT softmig.drop_migration('sw' || i) FROM generate_series(1, 2) i;
DROP TABLE sw_l1, sw_t1, sw_l2, sw_t2;
