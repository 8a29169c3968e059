-- PostgreSQL 18 and later (the Makefile adds this test there): virtual
-- generated columns on the other table.  A one-row write carried without a
-- second executor (src/directwrite.c) checks a CHECK or NOT NULL constraint
-- on a virtual column as the statement does: the column is computed for the
-- check, never stored.  Pair 1 goes direct, pair 2 runs with
-- softmig.direct_writes = off (the kept statement): same rows, same errors.
CREATE TABLE dv_l1 (id int PRIMARY KEY, cents int NOT NULL);
CREATE TABLE dv_t1 (id int PRIMARY KEY, amount numeric NOT NULL,
    twice numeric GENERATED ALWAYS AS (amount * 2) VIRTUAL CHECK (twice < 100),
    half numeric GENERATED ALWAYS AS (CASE WHEN amount > 0 THEN amount / 2 END) VIRTUAL NOT NULL);
CREATE TABLE dv_l2 (LIKE dv_l1 INCLUDING ALL);
CREATE TABLE dv_t2 (LIKE dv_t1 INCLUDING ALL);
SELECT softmig.create_migration('dv' || i, 'dv_l' || i, 'dv_t' || i,
    forward  => '{"amount": "cents / 100.0"}',
    backward => '{"cents": "(amount * 100)::int"}')
  FROM generate_series(1, 2) i;
SELECT softmig.advance('dv' || i) FROM generate_series(1, 2) i;

-- p_sql on both pairs ('?' names the pair), the second with direct_writes off
CREATE FUNCTION pg_temp.both(p_sql text) RETURNS TABLE (pair int, state text, message text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT 1, e.state, e.message FROM t.err(pg_catalog.replace(p_sql, '?', '1')) e;
    SET LOCAL softmig.direct_writes = off;
    RETURN QUERY SELECT 2, e.state, pg_catalog.replace(e.message, 'dv_t2', 'dv_t1')
                   FROM t.err(pg_catalog.replace(p_sql, '?', '2')) e;
    SET LOCAL softmig.direct_writes = on;
END $$;
CREATE FUNCTION pg_temp.same() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM ((TABLE dv_t1 EXCEPT TABLE dv_t2) UNION ALL (TABLE dv_t2 EXCEPT TABLE dv_t1)) d
$$;

-- the path: the INSERT and the UPDATE go direct
SET client_min_messages = debug2;
INSERT INTO dv_l1 VALUES (1, 100);
UPDATE dv_l1 SET cents = 200 WHERE id = 1;
RESET client_min_messages;
SET softmig.direct_writes = off;
INSERT INTO dv_l2 VALUES (1, 100);
UPDATE dv_l2 SET cents = 200 WHERE id = 1;
RESET softmig.direct_writes;

-- the CHECK on a virtual column refuses an INSERT and an UPDATE
SELECT * FROM pg_temp.both('INSERT INTO dv_l? VALUES (2, 6000)');
SELECT * FROM pg_temp.both('UPDATE dv_l? SET cents = 7000 WHERE id = 1');
-- the NOT NULL on a virtual column refuses a row whose value computes to NULL
SELECT * FROM pg_temp.both('INSERT INTO dv_l? VALUES (3, 0)');
SELECT * FROM pg_temp.both('UPDATE dv_l? SET cents = 0 WHERE id = 1');
-- rows within both constraints go through
SELECT * FROM pg_temp.both('UPDATE dv_l? SET cents = 4000 WHERE id = 1');
SELECT * FROM pg_temp.both('INSERT INTO dv_l? VALUES (4, 250)');
SELECT * FROM dv_t1 ORDER BY id;
SELECT pg_temp.same() AS rows_differing;
SELECT * FROM pg_temp.both('DELETE FROM dv_l? WHERE id = 1');
SELECT * FROM dv_t1 ORDER BY id;
SELECT pg_temp.same() AS rows_differing;

-- clean up
SELECT softmig.rollback('dv' || i) FROM generate_series(1, 2) i;
SELECT softmig.drop_migration('dv' || i) FROM generate_series(1, 2) i;
DROP TABLE dv_l1, dv_t1, dv_l2, dv_t2;
