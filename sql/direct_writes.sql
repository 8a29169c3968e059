-- A one-row UPDATE or DELETE is carried to the other table without a second
-- executor where the kept statement's plan allows (src/directwrite.c); DEBUG2 says
-- "carried without a second executor" when it is.  Every case compares with
-- softmig.direct_writes = off (the kept statement) on a second pair of
-- tables with the same data: same rows, same errors.  The cases where the
-- statement must run instead (a user trigger, row-level security,
-- REPEATABLE READ) show no such line; partitions.sql covers partitioned
-- tables, which take the statement too.
CREATE TABLE du_l1 (id int PRIMARY KEY, cust text NOT NULL, cents int NOT NULL, note text);
CREATE TABLE du_t1 (id int PRIMARY KEY, customer text NOT NULL,
                    amount numeric(8,2) NOT NULL CHECK (amount < 1000), note varchar(10));
CREATE TABLE du_l2 (LIKE du_l1 INCLUDING ALL);
CREATE TABLE du_t2 (LIKE du_t1 INCLUDING ALL);
CREATE FUNCTION du_fmt(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)';
SELECT softmig.create_migration('du' || i, 'du_l' || i, 'du_t' || i,
    forward  => '{"customer": "public.du_fmt(cust)", "amount": "cents / 100.0"}',
    backward => '{"cust": "lower(customer)", "cents": "(amount * 100)::int"}')
  FROM generate_series(1, 2) i;
SELECT softmig.advance('du' || i) FROM generate_series(1, 2) i;
INSERT INTO du_l1 SELECT g, 'c' || g, g * 100, 'n' || g FROM generate_series(1, 6) g;
INSERT INTO du_l2 SELECT * FROM du_l1;

-- p_sql on pair p_a, then with direct_writes off on pair p_b ('?' names the pair)
CREATE FUNCTION pg_temp.upd(p_sql text, p_a text DEFAULT '1', p_b text DEFAULT '2')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE pg_catalog.replace(p_sql, '?', p_a);
    SET LOCAL softmig.direct_writes = off;
    EXECUTE pg_catalog.replace(p_sql, '?', p_b);
    SET LOCAL softmig.direct_writes = on;
END $$;
-- a row both targets lose (a hand repair under override)
CREATE FUNCTION pg_temp.lose(p_id int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL softmig.override = 'test: a row missing in the target';
    DELETE FROM du_t1 WHERE id = p_id;
    DELETE FROM du_t2 WHERE id = p_id;
    SET LOCAL softmig.override = '';
END $$;
CREATE FUNCTION pg_temp.same() RETURNS TABLE (what text, n bigint)
LANGUAGE sql AS $$
    SELECT 'target rows differing', count(*) FROM (
        (SELECT * FROM du_t1 EXCEPT SELECT * FROM du_t2)
        UNION ALL (SELECT * FROM du_t2 EXCEPT SELECT * FROM du_t1)) d
$$;

------------------------------------------------------------------ the path
SET client_min_messages = debug2;
UPDATE du_l1 SET cust = 'zed', cents = 12345 WHERE id = 1;
SET softmig.direct_writes = off;
UPDATE du_l2 SET cust = 'zed', cents = 12345 WHERE id = 1;
RESET softmig.direct_writes;
RESET client_min_messages;
SELECT pg_temp.upd('UPDATE du_l? SET note = NULL WHERE id = 2');
SELECT pg_temp.upd('UPDATE du_l? SET note = ''x'' WHERE id = 99');   -- no row: nothing
SELECT * FROM du_t1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ errors, as the statement's
-- assignment to varchar(10): an error, never a silent truncation
UPDATE du_l1 SET note = 'eleven char' WHERE id = 3;
SET softmig.direct_writes = off;
UPDATE du_l2 SET note = 'eleven char' WHERE id = 3;
RESET softmig.direct_writes;
-- the CHECK constraint of the target
UPDATE du_l1 SET cents = 100000 WHERE id = 3;
SET softmig.direct_writes = off;
UPDATE du_l2 SET cents = 100000 WHERE id = 3;
RESET softmig.direct_writes;

------------------------------------------------------------------ the plan changes, the path follows
-- a constraint added after the first write (a new generation of the plan)
ALTER TABLE du_t1 ADD CONSTRAINT du_t1_not_bad CHECK (customer <> 'BAD');
UPDATE du_l1 SET cust = 'bad' WHERE id = 4;
ALTER TABLE du_t1 DROP CONSTRAINT du_t1_not_bad;
-- a function of the mapping replaced
CREATE OR REPLACE FUNCTION du_fmt(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1) || ''!''';
SELECT pg_temp.upd('UPDATE du_l? SET cust = ''fresh'' WHERE id = 4');
SELECT id, customer FROM du_t1 WHERE id = 4;
CREATE OR REPLACE FUNCTION du_fmt(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)';
SELECT pg_temp.upd('UPDATE du_l? SET cust = ''fresh'' WHERE id = 4');
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ the other table lacks the row
SELECT pg_temp.lose(5);
SELECT pg_temp.upd('UPDATE du_l? SET cust = ''back'' WHERE id = 5');
SELECT id, customer, amount FROM du_t1 WHERE id = 5;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ a foreign key on the target
CREATE TABLE du_p (code text PRIMARY KEY);
INSERT INTO du_p SELECT DISTINCT customer FROM du_t1;
INSERT INTO du_p VALUES ('NEW');
ALTER TABLE du_t1 ADD FOREIGN KEY (customer) REFERENCES du_p (code);
SET client_min_messages = debug2;
UPDATE du_l1 SET cust = 'new' WHERE id = 6;
RESET client_min_messages;
UPDATE du_l1 SET cust = 'nobody' WHERE id = 6;
SELECT id, customer FROM du_t1 WHERE id = 6;
UPDATE du_l2 SET cust = 'new' WHERE id = 6;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ DELETE
SET client_min_messages = debug2;
DELETE FROM du_l1 WHERE id = 2;
SET softmig.direct_writes = off;
DELETE FROM du_l2 WHERE id = 2;
RESET softmig.direct_writes;
RESET client_min_messages;
SELECT * FROM pg_temp.same();
-- a row the other table lacks: nothing deleted, nothing failed
SELECT pg_temp.lose(3);
SELECT pg_temp.upd('DELETE FROM du_l? WHERE id = 3');
SELECT * FROM pg_temp.same();
-- a row of the target still referenced: the foreign key's error
CREATE TABLE du_c (id int PRIMARY KEY, t_id int REFERENCES du_t1 (id));
INSERT INTO du_c VALUES (1, 4);
DELETE FROM du_l1 WHERE id = 4;
DROP TABLE du_c;
SELECT id FROM du_t1 ORDER BY id;
-- with the referencing table, its trigger on the target is gone: the next
-- DELETE neither fires it nor fails (the analysis is made again)
SELECT pg_temp.upd('DELETE FROM du_l? WHERE id = 4');
SELECT id FROM du_t1 ORDER BY id;
SELECT * FROM pg_temp.same();

------------------------------------------------------------------ INSERT
INSERT INTO du_p VALUES ('G'), ('H'), ('STALE');
SET client_min_messages = debug2;
INSERT INTO du_l1 VALUES (7, 'g', 700, 'n7');
SET softmig.direct_writes = off;
INSERT INTO du_l2 VALUES (7, 'g', 700, 'n7');
RESET softmig.direct_writes;
RESET client_min_messages;
SELECT * FROM pg_temp.same();
-- the target holds the key already: the upsert updates it, as without
SELECT pg_temp.lose(8);
BEGIN;
SET LOCAL softmig.override = 'test: a row only the target has';
INSERT INTO du_t1 VALUES (8, 'STALE', 1, 'stale');
INSERT INTO du_t2 VALUES (8, 'STALE', 1, 'stale');
COMMIT;
SET client_min_messages = debug2;
INSERT INTO du_l1 VALUES (8, 'h', 800, 'n8');
RESET client_min_messages;
SELECT pg_temp.upd('INSERT INTO du_l? VALUES (8, ''h'', 800, ''n8'') ON CONFLICT DO NOTHING');
SELECT id, customer, amount, note FROM du_t1 WHERE id = 8;
SELECT * FROM pg_temp.same();
-- the target's constraints
INSERT INTO du_l1 VALUES (9, 'i', 100000, 'n9');
INSERT INTO du_l1 VALUES (9, 'nobody', 900, 'n9');

------------------------------------------------------------------ where the statement runs
-- REPEATABLE READ
SET client_min_messages = debug2;
BEGIN ISOLATION LEVEL REPEATABLE READ;
UPDATE du_l1 SET cents = 600 WHERE id = 6;
COMMIT;
RESET client_min_messages;
-- a user's row trigger on the target fires as with the statement
CREATE TABLE du_audit (id int, customer text);
CREATE FUNCTION du_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.du_audit VALUES (NEW.id, NEW.customer);
    RETURN NULL;
END $$;
CREATE TRIGGER du_audit AFTER UPDATE ON du_t1 FOR EACH ROW EXECUTE FUNCTION du_audit_row();
SET client_min_messages = debug2;
UPDATE du_l1 SET cents = 601 WHERE id = 6;
RESET client_min_messages;
DROP TRIGGER du_audit ON du_t1;
-- row-level security on the target
ALTER TABLE du_t1 ENABLE ROW LEVEL SECURITY;
SET client_min_messages = debug2;
UPDATE du_l1 SET cents = 602 WHERE id = 6;
RESET client_min_messages;
ALTER TABLE du_t1 DISABLE ROW LEVEL SECURITY;
-- and back
SET client_min_messages = debug2;
UPDATE du_l1 SET cents = 603 WHERE id = 6;
RESET client_min_messages;
SELECT * FROM du_audit;
SELECT id, amount FROM du_t1 WHERE id = 6;

------------------------------------------------------------------ privileges: checked as the statement checks them
CREATE ROLE du_owner;
CREATE TABLE du_l3 (id int PRIMARY KEY, v text);
CREATE TABLE du_t3 (id int PRIMARY KEY, v text);
ALTER TABLE du_l3 OWNER TO du_owner;
ALTER TABLE du_t3 OWNER TO du_owner;
SELECT softmig.create_migration('du3', 'du_l3', 'du_t3');
SELECT softmig.advance('du3');
INSERT INTO du_l3 VALUES (1, 'a');
REVOKE UPDATE ON du_t3 FROM du_owner;
UPDATE du_l3 SET v = 'b' WHERE id = 1;
SET softmig.direct_writes = off;
UPDATE du_l3 SET v = 'b' WHERE id = 1;
RESET softmig.direct_writes;
GRANT UPDATE ON du_t3 TO du_owner;
UPDATE du_l3 SET v = 'b' WHERE id = 1;
SELECT * FROM du_t3;

------------------------------------------------------------------ new_write: a one-row INSERT projected
-- The target is the authority; its one-row INSERT is projected into legacy
-- without a second executor (in the projection's subtransaction), pair 5
-- with the statement: same rows, same envelope.
CREATE TABLE du_l4 (id int PRIMARY KEY, cust text NOT NULL CHECK (cust <> 'x'), cents int NOT NULL);
CREATE TABLE du_t4 (id int PRIMARY KEY, customer text NOT NULL, amount numeric(8,2) NOT NULL);
CREATE TABLE du_l5 (LIKE du_l4 INCLUDING ALL);
CREATE TABLE du_t5 (LIKE du_t4 INCLUDING ALL);
SELECT softmig.create_migration('du' || i, 'du_l' || i, 'du_t' || i,
    forward  => '{"customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"cust": "lower(customer)", "cents": "(amount * 100)::int"}')
  FROM generate_series(4, 5) i;
SELECT softmig.advance('du' || i) FROM generate_series(4, 5) i;
CALL softmig.backfill('du4');
CALL softmig.backfill('du5');
SELECT softmig.advance('du' || i) FROM generate_series(4, 5) i;
SET client_min_messages = debug2;
INSERT INTO du_t4 VALUES (1, 'ANN', 1.50);
SET softmig.direct_writes = off;
INSERT INTO du_t5 VALUES (1, 'ANN', 1.50);
RESET softmig.direct_writes;
RESET client_min_messages;
-- legacy holds the key already (a hand repair): the upsert updates its row
BEGIN;
SET LOCAL softmig.override = 'test: a row only legacy has';
INSERT INTO du_l4 VALUES (2, 'stale', 1);
INSERT INTO du_l5 VALUES (2, 'stale', 1);
COMMIT;
SET client_min_messages = debug2;
INSERT INTO du_t4 VALUES (2, 'BEA', 2);
RESET client_min_messages;
SELECT pg_temp.upd('INSERT INTO du_t? VALUES (2, ''BEA'', 2) ON CONFLICT DO NOTHING', '4', '5');
-- a row legacy cannot hold (its CHECK): the write stands, the row is not
-- projected, the envelope closes naming it
SELECT pg_temp.upd('INSERT INTO du_t? VALUES (3, ''X'', 3)', '4', '5');
SELECT pg_temp.upd('INSERT INTO du_t? VALUES (4, ''DOT'', 4)', '4', '5');
SELECT * FROM du_l4 ORDER BY id;
SELECT 'legacy rows differing', count(*) FROM (
    (SELECT * FROM du_l4 EXCEPT SELECT * FROM du_l5)
    UNION ALL (SELECT * FROM du_l5 EXCEPT SELECT * FROM du_l4)) d;
SELECT i, e->'open' AS open, e->'first_key' AS first_key, e->'new_only_count' AS n
  FROM generate_series(4, 5) i, softmig.envelope('du' || i) e;
-- on_new_only = reject, the envelope open: the projection's error is the
-- statement's, without a subtransaction, as with the statement
CREATE TABLE du_l6 (LIKE du_l4 INCLUDING ALL);
CREATE TABLE du_t6 (LIKE du_t4 INCLUDING ALL);
SELECT softmig.create_migration('du6', 'du_l6', 'du_t6',
    forward  => '{"customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    options => '{"on_new_only": "reject"}');
SELECT softmig.advance('du6');
CALL softmig.backfill('du6');
SELECT softmig.advance('du6');
SET client_min_messages = debug2;
INSERT INTO du_t6 VALUES (1, 'ANN', 1.50);
RESET client_min_messages;
INSERT INTO du_t6 VALUES (3, 'X', 3);
SET softmig.direct_writes = off;
INSERT INTO du_t6 VALUES (3, 'X', 3);
RESET softmig.direct_writes;
SELECT * FROM du_l6;
SELECT * FROM du_t6;
SELECT softmig.envelope('du6')->'open' AS open;
-- a row without a target key (the key may be NULL: the target's own
-- entity): nothing to project, nothing tried (the plan's condition), and a
-- row with one is projected
CREATE TABLE du_l7 (id int PRIMARY KEY, v text);
CREATE TABLE du_t7 (tid int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, legacy_id int UNIQUE, v text);
SELECT softmig.create_migration('du7', 'du_l7', 'du_t7', forward => '{"legacy_id": "id"}',
    backward => '{"id": "legacy_id"}', options => '{"target_key": ["legacy_id"]}');
SELECT softmig.advance('du7');
CALL softmig.backfill('du7');
SELECT softmig.advance('du7');
SET client_min_messages = debug2;
INSERT INTO du_t7 (v) VALUES ('native');
INSERT INTO du_t7 (legacy_id, v) VALUES (5, 'five');
RESET client_min_messages;
SELECT * FROM du_l7;
SELECT softmig.envelope('du7')->'new_only_count' AS new_only_count;

-- clean up
SELECT softmig.rollback('du' || i) FROM generate_series(1, 3) i;
SELECT softmig.advance('du' || i, 'new_read', force => true, reason => 'test clean-up'),
       softmig.advance('du' || i, 'cutover', force => true, reason => 'test clean-up')
  FROM generate_series(4, 7) i;
SELECT softmig.drop_migration('du' || i) FROM generate_series(1, 7) i;
DROP TABLE du_l1, du_t1, du_l2, du_t2, du_l3, du_t3, du_l4, du_t4, du_l5, du_t5, du_l6, du_t6,
    du_l7, du_t7, du_p, du_audit;
DROP FUNCTION du_fmt(text);
DROP FUNCTION du_audit_row();
DROP ROLE du_owner;
