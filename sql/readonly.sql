-- The read-only context of user SQL: parity's mapping expressions,
-- invariant queries and the requires expressions of transition rules run
-- read-only.  No write gets through, however it is reached (a volatile
-- function, a SECURITY DEFINER function, nextval, DDL, a function that tries
-- to switch read-only off), and the caller's transaction is exactly as it was
-- afterwards: read-write again after success and after an error caught by a
-- savepoint or an exception block, and still read-only when it was.
\pset null '(null)'
\set VERBOSITY terse
SET client_min_messages = warning;
SET softmig.discovery = off;

CREATE TABLE ro_log (what text);
CREATE SEQUENCE ro_seq;
-- what user SQL may try
CREATE FUNCTION public.ro_insert(x int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.ro_log VALUES ('insert ' || x); RETURN x; END $$;
CREATE FUNCTION public.ro_definer(x int) RETURNS int LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN INSERT INTO public.ro_log VALUES ('definer ' || x); RETURN x; END $$;
CREATE FUNCTION public.ro_nextval(x int) RETURNS int LANGUAGE sql AS $$
    SELECT x + 0 * pg_catalog.nextval('public.ro_seq')::int $$;
CREATE FUNCTION public.ro_ddl(x int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN CREATE TABLE public.ro_made (n int); RETURN x; END $$;
CREATE FUNCTION public.ro_sneaky(x int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('transaction_read_only', 'off', true);
    INSERT INTO public.ro_log VALUES ('sneaky ' || x);
    RETURN x;
END $$;
-- the state of the caller's transaction, and a write to prove it
CREATE FUNCTION ro_state(tag text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        RETURN tag || ': read-only';
    END IF;
    INSERT INTO public.ro_log VALUES (tag);
    RETURN tag || ': read-write, written';
END $$;

CREATE TABLE ro_l (id int PRIMARY KEY, v int);
CREATE TABLE ro_t (id int PRIMARY KEY, v int);
INSERT INTO ro_l VALUES (1, 1), (2, 2);
INSERT INTO ro_t VALUES (1, 1), (2, 2);
SELECT softmig.create_migration('ro_ok', 'ro_l', 'ro_t');
-- one migration per way of writing, its forward mapping of v calls it
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY '{insert,definer,nextval,ddl,sneaky}'::text[] LOOP
        EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, v int)', 'ro_l_' || f);
        EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, v int)', 'ro_t_' || f);
        EXECUTE format('INSERT INTO %I VALUES (1, 1)', 'ro_l_' || f);
        PERFORM softmig.create_migration('ro_' || f, ('ro_l_' || f)::regclass, ('ro_t_' || f)::regclass,
                                         forward => jsonb_build_object('v', 'public.ro_' || f || '(v)'));
    END LOOP;
END $$;

------------------------------------------------------------------ parity
-- every way of writing from a mapping expression is refused, nothing written
SELECT f AS mapping, e.state, e.message
  FROM unnest('{insert,definer,nextval,ddl,sneaky}'::text[]) f,
       t.err(format('SELECT * FROM softmig.parity(%L)', 'ro_' || f)) e;
SELECT count(*) AS written, pg_catalog.pg_sequence_last_value('ro_seq') AS seq_used,
       to_regclass('ro_made') AS made FROM ro_log;

-- success: the transaction is read-write again, in the same transaction
BEGIN;
SELECT count(*) AS differences FROM softmig.parity('ro_ok');
SHOW transaction_read_only;
SELECT ro_state('after parity');
COMMIT;
-- an error caught by a savepoint
BEGIN;
SAVEPOINT s;
SELECT * FROM softmig.parity('ro_insert');
ROLLBACK TO SAVEPOINT s;
SHOW transaction_read_only;
SELECT ro_state('after a failed parity, savepoint');
COMMIT;
-- an error caught by an exception block
DO $$
BEGIN
    BEGIN
        PERFORM * FROM softmig.parity('ro_definer');
    EXCEPTION WHEN read_only_sql_transaction THEN
        RAISE WARNING 'caught: %', SQLERRM;
    END;
    RAISE WARNING '%', ro_state('after a failed parity, exception block');
END $$;
-- an error that ends the transaction: the next one is read-write
SELECT * FROM softmig.parity('ro_sneaky');
SELECT ro_state('after a failed parity, next transaction');
-- a read-only transaction stays read-only
BEGIN READ ONLY;
SELECT count(*) AS differences FROM softmig.parity('ro_ok');
SHOW transaction_read_only;
SELECT ro_state('in a read-only transaction');
COMMIT;
SELECT * FROM ro_log ORDER BY what;
TRUNCATE ro_log;

------------------------------------------------------------------ invariants
SELECT softmig.add_invariant('ro_ok', 'writes', 'SELECT id FROM public.ro_l WHERE public.ro_insert(id) < 0');
SELECT softmig.add_invariant('ro_ok', 'writes as definer', 'SELECT id FROM public.ro_l WHERE public.ro_definer(id) < 0');
SELECT * FROM t.err($$SELECT * FROM softmig.invariant_violations('ro_ok', 'writes')$$);
SELECT * FROM t.err($$SELECT * FROM softmig.invariant_violations('ro_ok', 'writes as definer')$$);
BEGIN;
SAVEPOINT s;
SELECT layer, check_name, ok FROM softmig.check('ro_ok') WHERE layer = 'behavioral';
ROLLBACK TO SAVEPOINT s;
SELECT ro_state('after failed invariants, savepoint');
COMMIT;
SELECT count(*) AS written FROM ro_log WHERE what NOT LIKE 'after%';
TRUNCATE ro_log;
DELETE FROM softmig.invariants WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ro_ok');

------------------------------------------------------------------ transition rules
-- requires is evaluated inside the write it rules: read-only only while it
-- runs, the write itself and the rest of the transaction go on
CREATE TABLE ro_legacy_orders (id int PRIMARY KEY, status text);
CREATE TABLE ro_orders (id int PRIMARY KEY, status text);
SELECT softmig.create_migration('ro_rules', 'ro_legacy_orders', 'ro_orders');
SELECT softmig.add_transition_rule('ro_rules', 'ro_orders', 'status', NULL, 'new');
SELECT softmig.add_transition_rule('ro_rules', 'ro_orders', 'status', 'new', 'paid',
    'public.ro_insert(new.id) > 0');
SELECT softmig.add_transition_rule('ro_rules', 'ro_orders', 'status', 'new', 'lost',
    'new.id > 0');
INSERT INTO ro_orders VALUES (1, 'new'), (2, 'new');
SELECT * FROM t.err($$UPDATE ro_orders SET status = 'paid' WHERE id = 1$$);
BEGIN;
UPDATE ro_orders SET status = 'lost' WHERE id = 2;
SHOW transaction_read_only;
SELECT ro_state('after a requires expression');
INSERT INTO ro_orders VALUES (3, 'new');
COMMIT;
BEGIN;
SAVEPOINT s;
UPDATE ro_orders SET status = 'paid' WHERE id = 1;
ROLLBACK TO SAVEPOINT s;
SELECT ro_state('after a failed requires expression, savepoint');
COMMIT;
SELECT * FROM ro_orders ORDER BY id;
SELECT * FROM ro_log ORDER BY what;
