-- A one-row UPDATE of the authoritative table is carried to the other one by
-- a kept UPDATE of its row (the upsert only if that row is missing); a
-- statement of more rows by the upsert.  Every case below runs once with a one-row
-- statement (pair 1) and once with a two-row statement (pair 2), on the same
-- data, and both targets must end alike: an update in place, a row the
-- target lacks, a key move, a field the target owns, refusals.
CREATE TABLE su_l1 (id int PRIMARY KEY, name text, cents int CHECK (cents <= 1000000), tier text);
CREATE TABLE su_t1 (id int PRIMARY KEY, name text, amount numeric(10,2) CHECK (amount >= 0), tier_code text);
CREATE TABLE su_l2 (LIKE su_l1 INCLUDING ALL);
CREATE TABLE su_t2 (LIKE su_t1 INCLUDING ALL);
INSERT INTO su_l1 VALUES (1, 'ann', 100, 'gold'), (2, 'bob', 200, 'silver'),
                         (3, 'cy', 300, 'gold'), (4, 'dee', 400, 'bronze');
INSERT INTO su_l2 SELECT * FROM su_l1;
SELECT softmig.create_migration('su' || i, 'su_l' || i, 'su_t' || i,
    forward  => '{"amount": "cents / 100.0", "tier_code": "upper(tier)"}',
    backward => '{"cents": "(amount * 100)::int", "tier": "lower(tier_code)"}')
  FROM generate_series(1, 2) i;
SELECT softmig.advance('su' || i) FROM generate_series(1, 2) i;
CALL softmig.backfill('su1');
CALL softmig.backfill('su2');

-- compare: the two targets (and legacies) hold the same rows
CREATE FUNCTION pg_temp.same() RETURNS TABLE (what text, n bigint)
LANGUAGE sql AS $$
    SELECT 'target rows differing', count(*) FROM (
        (SELECT * FROM su_t1 EXCEPT SELECT * FROM su_t2)
        UNION ALL (SELECT * FROM su_t2 EXCEPT SELECT * FROM su_t1)) d
    UNION ALL
    SELECT 'legacy rows differing', count(*) FROM (
        (SELECT * FROM su_l1 EXCEPT SELECT * FROM su_l2)
        UNION ALL (SELECT * FROM su_l2 EXCEPT SELECT * FROM su_l1)) d
$$;

------------------------------------------------------------------ in place
UPDATE su_l1 SET cents = 101 WHERE id = 1;
UPDATE su_l1 SET cents = 201 WHERE id = 2;
UPDATE su_l2 SET cents = CASE id WHEN 1 THEN 101 ELSE 201 END WHERE id IN (1, 2);
SELECT * FROM su_t1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ a row the target lacks
-- removed by hand under softmig.override: the next UPDATE puts it back
BEGIN;
SET LOCAL softmig.override = 'test: the target lost rows';
DELETE FROM su_t1 WHERE id IN (1, 3);
DELETE FROM su_t2 WHERE id IN (1, 3);
COMMIT;
UPDATE su_l1 SET cents = 102 WHERE id = 1;
UPDATE su_l1 SET cents = 301 WHERE id = 3;
UPDATE su_l2 SET cents = CASE id WHEN 1 THEN 102 ELSE 301 END WHERE id IN (1, 3);
SELECT * FROM su_t1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- one row present, one missing, in the same two-row statement
BEGIN;
SET LOCAL softmig.override = 'test: the target lost a row';
DELETE FROM su_t1 WHERE id = 2;
DELETE FROM su_t2 WHERE id = 2;
COMMIT;
UPDATE su_l1 SET name = 'bo' WHERE id = 2;
UPDATE su_l1 SET name = 'cyd' WHERE id = 3;
UPDATE su_l2 SET name = CASE id WHEN 2 THEN 'bo' ELSE 'cyd' END WHERE id IN (2, 3);
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ key moves
UPDATE su_l1 SET id = 11, cents = 103 WHERE id = 1;
UPDATE su_l1 SET id = 12 WHERE id = 2;
UPDATE su_l2 SET id = id + 10, cents = CASE id WHEN 1 THEN 103 ELSE cents END WHERE id IN (1, 2);
SELECT * FROM su_t1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- a move onto a key the target holds already fails alike
BEGIN;
SET LOCAL softmig.override = 'test: a stray target row';
INSERT INTO su_t1 VALUES (20, 'stray', 0, 'X');
INSERT INTO su_t2 VALUES (20, 'stray', 0, 'X');
COMMIT;
SELECT state, message FROM t.err($$UPDATE su_l1 SET id = 20 WHERE id = 11$$);
SELECT state, message FROM t.err($$UPDATE su_l2 SET id = id + 9 WHERE id IN (11, 4)$$);
SELECT * FROM pg_temp.same();
BEGIN;
SET LOCAL softmig.override = 'test: the stray rows go';
DELETE FROM su_t1 WHERE id = 20;
DELETE FROM su_t2 WHERE id = 20;
COMMIT;

------------------------------------------------------------------ a field the target owns
SELECT softmig.set_field_authority('su' || i, 'tier_code', 'new') FROM generate_series(1, 2) i;
UPDATE su_t1 SET tier_code = 'PLATINUM' WHERE id IN (11, 12);
UPDATE su_t2 SET tier_code = 'PLATINUM' WHERE id IN (11, 12);
-- legacy changes other columns: the target keeps its tier_code
UPDATE su_l1 SET cents = 104 WHERE id = 11;
UPDATE su_l1 SET cents = 204 WHERE id = 12;
UPDATE su_l2 SET cents = CASE id WHEN 11 THEN 104 ELSE 204 END WHERE id IN (11, 12);
SELECT * FROM su_t1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- a legacy column carrying the target's field is refused alike
SELECT state, message FROM t.err($$UPDATE su_l1 SET tier = 'tin' WHERE id = 11$$);
SELECT state, message FROM t.err($$UPDATE su_l2 SET tier = 'tin' WHERE id IN (11, 12)$$);
SELECT softmig.set_field_authority('su' || i, 'tier_code', 'legacy') FROM generate_series(1, 2) i;

------------------------------------------------------------------ operation keys
SELECT softmig.set_option('su' || i, 'require_operation_key', 'true') FROM generate_series(1, 2) i;
SELECT state, message FROM t.err($$UPDATE su_l1 SET cents = 0 WHERE id = 11$$);
SELECT state, message FROM t.err($$UPDATE su_l2 SET cents = 0 WHERE id IN (11, 12)$$);
BEGIN;
SET LOCAL softmig.operation_key = 'su:1';
UPDATE su_l1 SET cents = 105 WHERE id = 11;
UPDATE su_l2 SET cents = CASE id WHEN 11 THEN 105 ELSE cents END WHERE id IN (11, 12);
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'su:1';      -- replayed: refused, nothing written
SELECT state FROM t.err($$UPDATE su_l1 SET cents = 0 WHERE id = 11$$);
SELECT state FROM t.err($$UPDATE su_l2 SET cents = 0 WHERE id IN (11, 12)$$);
ROLLBACK;
SELECT softmig.set_option('su' || i, 'require_operation_key', NULL) FROM generate_series(1, 2) i;
SELECT * FROM su_t1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ the target refuses: the statement fails alike
SELECT state, message FROM t.err($$UPDATE su_l1 SET cents = -1 WHERE id = 11$$);
SELECT state, message FROM t.err($$UPDATE su_l2 SET cents = -1 WHERE id IN (11, 12)$$);
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ new_write: the projection
SELECT softmig.advance('su' || i) FROM generate_series(1, 2) i;
UPDATE su_t1 SET amount = 1.11 WHERE id = 11;
UPDATE su_t1 SET amount = 2.22 WHERE id = 12;
UPDATE su_t2 SET amount = CASE id WHEN 11 THEN 1.11 ELSE 2.22 END WHERE id IN (11, 12);
SELECT * FROM su_l1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- rows legacy lacks, removed by hand
BEGIN;
SET LOCAL softmig.override = 'test: legacy lost rows';
DELETE FROM su_l1 WHERE id IN (3, 4);
DELETE FROM su_l2 WHERE id IN (3, 4);
COMMIT;
UPDATE su_t1 SET name = 'cy3' WHERE id = 3;
UPDATE su_t1 SET name = 'dee3' WHERE id = 4;
UPDATE su_t2 SET name = CASE id WHEN 3 THEN 'cy3' ELSE 'dee3' END WHERE id IN (3, 4);
SELECT * FROM su_l1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- key moves
UPDATE su_t1 SET id = 21 WHERE id = 11;
UPDATE su_t1 SET id = 22, amount = 2.23 WHERE id = 12;
UPDATE su_t2 SET id = id + 10, amount = CASE id WHEN 12 THEN 2.23 ELSE amount END WHERE id IN (11, 12);
SELECT * FROM su_l1 ORDER BY id;
SELECT * FROM pg_temp.same();
-- a row legacy cannot hold (its CHECK): refused alike under on_new_only = reject
SELECT softmig.set_option('su' || i, 'on_new_only', '"reject"') FROM generate_series(1, 2) i;
SELECT state, message FROM t.err($$UPDATE su_t1 SET amount = 99999 WHERE id = 21$$);
SELECT state, message FROM t.err($$UPDATE su_t2 SET amount = 99999 WHERE id IN (21, 22)$$);
SELECT softmig.envelope('su' || i)->'open' AS open FROM generate_series(1, 2) i;
-- and under allow: the write succeeds, legacy keeps its row, the envelope closes
SELECT softmig.set_option('su' || i, 'on_new_only', '"allow"') FROM generate_series(1, 2) i;
UPDATE su_t1 SET amount = 99999 WHERE id = 21;
UPDATE su_t1 SET amount = 3.33 WHERE id = 22;
UPDATE su_t2 SET amount = CASE id WHEN 21 THEN 99999 ELSE 3.33 END WHERE id IN (21, 22);
SELECT * FROM su_l1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ the envelope and parity
SELECT softmig.envelope('su' || i)->'open' AS open FROM generate_series(1, 2) i;
SELECT count(*) AS parity_differences FROM softmig.parity('su1');
SELECT count(*) AS parity_differences FROM softmig.parity('su2');

-- fixed forward: the row fits legacy again and is projected
UPDATE su_t1 SET amount = 1.12 WHERE id = 21;
UPDATE su_t1 SET amount = 3.33 WHERE id = 22;
UPDATE su_t2 SET amount = CASE id WHEN 21 THEN 1.12 ELSE 3.33 END WHERE id IN (21, 22);
SELECT count(*) AS parity_differences FROM softmig.parity('su1');
SELECT count(*) AS parity_differences FROM softmig.parity('su2');
SELECT * FROM pg_temp.same();
SELECT softmig.advance('su' || i) FROM generate_series(1, 2) i;
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT softmig.advance('su' || i) FROM generate_series(1, 2) i;
RESET client_min_messages;
SELECT softmig.drop_migration('su' || i) FROM generate_series(1, 2) i;
DROP TABLE su_l1, su_t1, su_l2, su_t2;
