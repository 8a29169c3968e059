-- Every function and procedure of softmig under a hostile search_path.
--
-- Schema evil shadows, with the same names and argument types, every type,
-- function, aggregate and operator of pg_catalog that SQL can declare again
-- (built from pg_catalog itself, so a name the install script or the C code
-- starts to use unqualified tomorrow is covered too).  Each shadow records
-- that it ran (a sequence, which no rollback undoes) and raises a WARNING.
-- Then, with search_path = evil, pg_catalog, public (evil shadowing
-- pg_catalog exactly), every function of the extension (enumerated from
-- pg_proc) is called in every state of a migration, procedures are CALLed,
-- and the tables are written; the trigger and event-trigger functions run
-- through those writes and DDL.  No shadow may run.
\pset null '(null)'
SET client_min_messages = warning;
CREATE SCHEMA evil;
CREATE SEQUENCE evil.hits;
CREATE TABLE evil.shadows (kind text, n bigint);
-- evil._hit(what): the shadow's payload (non-transactional record + WARNING)
CREATE FUNCTION evil._hit(what text) RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
BEGIN
    BEGIN
        PERFORM pg_catalog.nextval('evil.hits');
    EXCEPTION WHEN OTHERS THEN
        NULL;   -- read-only transaction: the WARNING still tells
    END;
    RAISE WARNING 'shadow % ran', what;
    RETURN true;
END $$;

-- functions: every pg_catalog function whose argument and result types a
-- PL/pgSQL function may have
DO $do$
DECLARE
    r record;
    n bigint := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR r IN SELECT p.oid, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
                    pg_catalog.pg_get_function_result(p.oid) AS result, p.proretset
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proargtypes::oid[] || p.prorettype) t
                                 WHERE t IN ('internal'::regtype, 'cstring'::regtype, '"any"'::regtype,
                                             'language_handler'::regtype, 'fdw_handler'::regtype,
                                             'index_am_handler'::regtype, 'tsm_handler'::regtype,
                                             'table_am_handler'::regtype, 'trigger'::regtype,
                                             'event_trigger'::regtype))
    LOOP
        BEGIN
            EXECUTE format($f$CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS $b$
                BEGIN PERFORM evil._hit(%L); %s END $b$$f$,
                r.proname, r.args, r.result, 'function ' || r.proname,
                CASE WHEN r.proretset THEN 'RETURN;' WHEN r.result = 'void' THEN 'RETURN;' ELSE 'RETURN NULL;' END);
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            NULL;   -- not declarable in PL/pgSQL (or a duplicate signature)
        END;
    END LOOP;
    INSERT INTO evil.shadows VALUES ('functions', n);
END $do$;

-- aggregates: same argument types, a state function that records the call
DO $do$
DECLARE
    r record;
    n bigint := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR r IN SELECT p.oid, p.proname, p.pronargs, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'a'
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proargtypes::oid[]) t
                                 WHERE t IN ('internal'::regtype, '"any"'::regtype) OR t IN (
                                       SELECT oid FROM pg_catalog.pg_type WHERE typtype = 'p'))
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_aggregate a
                                 WHERE a.aggfnoid = p.oid AND a.aggkind <> 'n')
    LOOP
        BEGIN
            EXECUTE format($f$CREATE FUNCTION evil.%I(bigint%s) RETURNS bigint LANGUAGE plpgsql AS $b$
                BEGIN PERFORM evil._hit(%L); RETURN 0; END $b$$f$,
                '_agg_' || r.oid, CASE WHEN r.pronargs > 0 THEN ', ' || r.args ELSE '' END,
                'aggregate ' || r.proname);
            EXECUTE format('CREATE AGGREGATE evil.%I(%s) (SFUNC = evil.%I, STYPE = bigint)',
                r.proname, CASE WHEN r.pronargs > 0 THEN r.args ELSE '*' END, '_agg_' || r.oid);
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
    INSERT INTO evil.shadows VALUES ('aggregates', n);
END $do$;

-- operators: every pg_catalog operator on declarable types
DO $do$
DECLARE
    r record;
    n bigint := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR r IN SELECT o.oid, o.oprname, o.oprleft, o.oprright, o.oprresult
               FROM pg_catalog.pg_operator o
              WHERE o.oprnamespace = 'pg_catalog'::regnamespace
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(ARRAY[o.oprleft, o.oprright, o.oprresult]) t
                                 WHERE t IN ('internal'::regtype, 'cstring'::regtype, '"any"'::regtype))
    LOOP
        BEGIN
            EXECUTE format($f$CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS $b$
                BEGIN PERFORM evil._hit(%L); RETURN NULL; END $b$$f$,
                '_op_' || r.oid,
                concat_ws(', ', CASE WHEN r.oprleft <> 0 THEN r.oprleft::regtype::text END,
                                CASE WHEN r.oprright <> 0 THEN r.oprright::regtype::text END),
                r.oprresult::regtype, 'operator ' || r.oprname);
            EXECUTE format('CREATE OPERATOR evil.%s (%s FUNCTION = evil.%I)', r.oprname,
                concat(CASE WHEN r.oprleft <> 0 THEN format('LEFTARG = %s, ', r.oprleft::regtype) END,
                       CASE WHEN r.oprright <> 0 THEN format('RIGHTARG = %s, ', r.oprright::regtype) END),
                '_op_' || r.oid);
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
    INSERT INTO evil.shadows VALUES ('operators', n);
END $do$;

-- types: a domain per pg_catalog base, enum, range and multirange type whose
-- CHECK records that a value was made of it
DO $do$
DECLARE
    r record;
    n bigint := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR r IN SELECT t.oid, t.typname FROM pg_catalog.pg_type t
              WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typtype IN ('b', 'e', 'r', 'm')
                AND t.typname !~ '^_' AND t.typisdefined
    LOOP
        BEGIN
            EXECUTE format('CREATE DOMAIN evil.%I AS %s CHECK (evil._hit(%L))', r.typname, r.oid::regtype,
                           'type ' || r.typname);
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
    INSERT INTO evil.shadows VALUES ('types', n);
END $do$;

-- enough of each kind to mean something
SELECT kind, n > CASE kind WHEN 'functions' THEN 1500 WHEN 'operators' THEN 500
                           WHEN 'aggregates' THEN 50 ELSE 50 END AS many
  FROM evil.shadows ORDER BY kind;

-- positive control: the shadows do run where a name is resolved through the path
SET search_path = evil, pg_catalog, public;
SELECT pg_catalog.length(upper('x')) AS upper_shadowed;
SELECT 1 + 1 AS plus_shadowed;
SELECT count(*) AS count_shadowed FROM (VALUES (1)) v;
DO $$ DECLARE j jsonb := '{}'; BEGIN END $$;
RESET search_path;
SELECT pg_catalog.nextval('evil.hits') > 4 AS control_hits;
SELECT pg_catalog.setval('evil.hits', 1, false);

------------------------------------------------------------------ the migration the calls work on
CREATE SCHEMA sp;
CREATE TABLE sp.l (id int PRIMARY KEY, v text, n int);
CREATE TABLE sp.t (id int PRIMARY KEY, v text, n int, extra text);
CREATE TABLE sp.l2 (id int PRIMARY KEY, v text);
CREATE TABLE sp.t2 (id int PRIMARY KEY, v text);
INSERT INTO sp.l SELECT g, 'v' || g, g FROM generate_series(1, 20) g;
SELECT softmig.create_migration('sp', 'sp.l', 'sp.t', forward => '{"v": "upper(v)"}',
                                backward => '{"v": "lower(v)"}', new_only => '{extra}',
                                options => '{"transition_rules": "observe"}');
SELECT softmig.register_reader('sp', 'r1', 'latency', 'g1');
SELECT softmig.add_invariant('sp', 'inv1', 'SELECT id FROM sp.t WHERE n < 0');
SELECT softmig.add_transition_rule('sp', 'sp.t', 'v', NULL, 'x');
-- a group (sp_g1, sp_g2) and two migrations for create_group (sp_g3, sp_g4)
CREATE TABLE sp.l3 (id int PRIMARY KEY); CREATE TABLE sp.t3 (id int PRIMARY KEY);
CREATE TABLE sp.l4 (id int PRIMARY KEY); CREATE TABLE sp.t4 (id int PRIMARY KEY);
CREATE TABLE sp.l5 (id int PRIMARY KEY); CREATE TABLE sp.t5 (id int PRIMARY KEY);
CREATE TABLE sp.l6 (id int PRIMARY KEY); CREATE TABLE sp.t6 (id int PRIMARY KEY);
SELECT softmig.create_migration('sp_g' || i, 'sp.l' || (i + 2), 'sp.t' || (i + 2)) FROM generate_series(1, 4) i;
SELECT softmig.create_group('sp_group', ARRAY['sp_g1', 'sp_g2']);

-- t.sp_arg(proc, argument name, type): the SQL literal a call passes
CREATE FUNCTION t.sp_arg(p name, a text, typ regtype) RETURNS text LANGUAGE sql
SET search_path = pg_catalog AS $$
    SELECT CASE
        WHEN p IN ('create_migration', '_create_migration') AND a = 'name' THEN '''sp_new'''
        WHEN p IN ('create_migration', '_create_migration') AND a = 'legacy' THEN '''sp.l2''::pg_catalog.regclass'
        WHEN p IN ('create_migration', '_create_migration') AND a = 'target' THEN '''sp.t2''::pg_catalog.regclass'
        WHEN p IN ('create_read_view', '_create_read_view') AND a = 'view_name' THEN '''sp.sp_view'''
        WHEN a IN ('name', 'p_name') THEN '''sp'''
        WHEN p IN ('create_group', '_create_group') AND a = 'group_name' THEN '''sp_group_new'''
        WHEN p IN ('create_group', '_create_group') AND a = 'members' THEN 'ARRAY[''sp_g3'', ''sp_g4'']'
        WHEN a = 'group_name' THEN '''sp_group'''
        WHEN a = 'p_action' THEN '''advance'''
        WHEN a = 'p_mode' THEN '''SHARE ROW EXCLUSIVE'''
        WHEN typ = 'softmig.groups'::regtype THEN '(SELECT g FROM softmig.groups g WHERE g.name OPERATOR(pg_catalog.=) ''sp_group'')'
        WHEN a = 'p_ids' THEN '(SELECT pg_catalog.array_agg(m.id) FROM softmig.migrations m WHERE m.name OPERATOR(pg_catalog.=) ANY (ARRAY[''sp_g1'', ''sp_g2'']))'
        WHEN a = 'p_members' THEN '(SELECT pg_catalog.array_agg(m.id) FROM softmig.migrations m WHERE m.name OPERATOR(pg_catalog.=) ''sp'')'
        WHEN typ = 'regclass[]'::regtype THEN 'ARRAY[''sp.l3'', ''sp.t3'']::pg_catalog.regclass[]'
        WHEN a = 'reader' THEN '''r1'''
        WHEN a = 'class' THEN '''latency'''
        WHEN a = 'switch_group' THEN '''g1'''
        WHEN a = 'invariant' AND p IN ('add_invariant', '_add_invariant') THEN '''inv2'''
        WHEN a = 'invariant' THEN '''inv1'''
        WHEN a = 'query' THEN '''SELECT id FROM sp.t WHERE n < 0'''
        WHEN a = 'requires' THEN '''n > 0'''
        WHEN a IN ('lo', 'hi') THEN 'NULL::pg_catalog.jsonb'
        WHEN p = '_check_reader_window' THEN '''"1 hour"''::pg_catalog.jsonb'
        WHEN a = 'p_to' THEN '''mirrored''::softmig.state'
        WHEN typ = 'oid[]'::regtype THEN 'ARRAY[]::pg_catalog.oid[]'
        WHEN typ = 'oid'::regtype THEN '''sp.l''::pg_catalog.regclass::pg_catalog.oid'
        WHEN a = 'severity' THEN '''warn'''
        WHEN a = 'option' THEN '''lock_timeout'''
        WHEN a = 'value' THEN '''"4s"''::pg_catalog.jsonb'
        WHEN a IN ('expr') THEN '''id + 1'''
        WHEN a IN ('col', 'field', 'p_field') THEN '''v'''
        WHEN a IN ('tbl', 'rel', 'p_tbl') THEN '''sp.t''::pg_catalog.regclass'
        WHEN a IN ('to_value') THEN '''y'''
        WHEN a IN ('from_value') THEN '''x'''
        WHEN a = 'op' THEN '''next'''
        WHEN a IN ('key', 'p_key') AND typ = 'jsonb'::regtype THEN '''{"id": 1}''::pg_catalog.jsonb'
        WHEN a IN ('rows', 'p_rows') THEN '''[{"id": 1, "v": "V1", "n": 1, "extra": null}]''::pg_catalog.jsonb'
        WHEN a IN ('migration_id', 'p_id', 'id') THEN (SELECT id::text FROM softmig.migrations WHERE name = 'sp')
        WHEN a IN ('batch_size', 'chunk_rows', 'max_entries') THEN '10'
        WHEN a IN ('max_batches') THEN '1'
        WHEN typ = 'text'::regtype THEN '''x'''
        WHEN typ = 'text[]'::regtype THEN 'NULL::pg_catalog.text[]'
        WHEN typ = 'name'::regtype THEN '''v'''
        WHEN typ = 'integer'::regtype THEN '0'
        WHEN typ = 'bigint'::regtype THEN '0'
        WHEN typ = 'boolean'::regtype THEN 'false'
        WHEN typ = 'interval'::regtype THEN '''1 day''::pg_catalog.interval'
        WHEN typ = 'jsonb'::regtype THEN '''{}''::pg_catalog.jsonb'
        WHEN typ = 'regclass'::regtype THEN '''sp.l''::pg_catalog.regclass'
        WHEN typ = 'pg_snapshot'::regtype THEN 'pg_catalog.pg_current_snapshot()'
        WHEN typ = 'xid8'::regtype THEN 'pg_catalog.pg_current_xact_id()'
        WHEN typ = 'xid'::regtype THEN '''1''::pg_catalog.xid'
        WHEN typ = 'bytea'::regtype THEN 'NULL::pg_catalog.bytea'
        WHEN typ = 'cstring'::regtype THEN '''legacy''::pg_catalog.cstring'
        WHEN typ = 'unknown'::regtype THEN '''sp'''
        WHEN typ = '"any"'::regtype THEN '1'
        WHEN typ = 'softmig.state'::regtype THEN 'NULL::softmig.state'
        WHEN typ = 'softmig.side'::regtype THEN '''new''::softmig.side'
        WHEN typ = 'softmig.migrations'::regtype THEN '(SELECT m FROM softmig.migrations m WHERE m.name OPERATOR(pg_catalog.=) ''sp'')'
    END
$$;

-- t.sp_calls(): one call per function of the extension (NULL: not callable
-- with SQL values, e.g. an internal argument; triggers run through writes);
-- "MISSING ARGUMENT" when t.sp_arg has no value for a parameter
CREATE FUNCTION t.sp_calls() RETURNS TABLE (proc text, kind "char", call text) LANGUAGE sql
SET search_path = pg_catalog AS $$
    SELECT p.oid::regprocedure::text, p.prokind,
           CASE WHEN p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
                  OR 'internal'::regtype = ANY (p.proargtypes::oid[])
                  OR 'pg_ddl_command'::regtype = ANY (p.proargtypes::oid[]) THEN NULL
                WHEN a.missing THEN 'MISSING ARGUMENT'
                ELSE format('%s softmig.%I(%s)', CASE p.prokind WHEN 'p' THEN 'CALL' ELSE 'SELECT' END,
                            p.proname, a.args) END
      FROM pg_proc p,
           LATERAL (SELECT coalesce(string_agg(x.v, ', ' ORDER BY x.i), '') AS args, coalesce(bool_or(x.v IS NULL), false) AS missing
                      FROM (SELECT i, t.sp_arg(p.proname, coalesce(p.proargnames[i], ''), p.proargtypes[i - 1]) AS v
                              FROM generate_series(1, p.pronargs) i) x) a
     WHERE p.pronamespace = 'softmig'::regnamespace AND p.prokind IN ('f', 'p', 'a')
$$;
-- every parameter of every function gets a value
SELECT proc AS no_value_for_a_parameter FROM t.sp_calls() WHERE call = 'MISSING ARGUMENT';
SELECT count(*) > 120 AS many_calls, count(*) FILTER (WHERE call IS NULL) < 30 AS few_not_callable FROM t.sp_calls();

-- t.sp_run(): every call, each rolled back afterwards so all see the same
-- state; returns the outcome (ok or SQLSTATE) per function
CREATE TABLE t.sp_outcome (state text, proc text, outcome text);
CREATE FUNCTION t.sp_run(st text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
DECLARE
    r record;
    v_state text;
BEGIN
    FOR r IN SELECT * FROM t.sp_calls() WHERE call IS NOT NULL AND kind <> 'p' ORDER BY proc LOOP
        BEGIN
            PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog, public', true);
            EXECUTE r.call;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
            RAISE EXCEPTION USING ERRCODE = 'T0001', MESSAGE = 'roll back';
        EXCEPTION WHEN OTHERS THEN
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
            v_state := CASE WHEN SQLSTATE = 'T0001' THEN 'ok' ELSE SQLSTATE END;
            INSERT INTO t.sp_outcome VALUES (st, r.proc, v_state);
        END;
    END LOOP;
END $$;

-- t.sp_write(): writes to both tables (DML, COPY, TRUNCATE), each rolled back
CREATE FUNCTION t.sp_write(st text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
DECLARE
    w text;
BEGIN
    FOREACH w IN ARRAY ARRAY[
        'INSERT INTO sp.l VALUES (100, ''new'', 1)', 'UPDATE sp.l SET v = ''w'' WHERE id OPERATOR(pg_catalog.=) 1',
        'UPDATE sp.l SET id = 101 WHERE id OPERATOR(pg_catalog.=) 2', 'DELETE FROM sp.l WHERE id OPERATOR(pg_catalog.=) 3',
        'INSERT INTO sp.l VALUES (4, ''up'', 4) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v',
        'INSERT INTO sp.t VALUES (200, ''NEW'', 1, NULL)', 'UPDATE sp.t SET v = ''W'' WHERE id OPERATOR(pg_catalog.=) 5',
        'UPDATE sp.t SET extra = ''only new'' WHERE id OPERATOR(pg_catalog.=) 6', 'DELETE FROM sp.t WHERE id OPERATOR(pg_catalog.=) 7',
        'TRUNCATE sp.l', 'TRUNCATE sp.t'] LOOP
        BEGIN
            PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog, public', true);
            EXECUTE w;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
            RAISE EXCEPTION USING ERRCODE = 'T0001', MESSAGE = 'roll back';
        EXCEPTION WHEN OTHERS THEN
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
            INSERT INTO t.sp_outcome VALUES (st, w, CASE WHEN SQLSTATE = 'T0001' THEN 'ok' ELSE SQLSTATE END);
        END;
    END LOOP;
END $$;

-- every state of the migration: calls, writes, then the procedures and a
-- state change under the hostile path, committed (the test's own statements
-- qualify their operators: they are the application's, not softmig's)
SELECT t.sp_run('legacy'), t.sp_write('legacy');
SET search_path = evil, pg_catalog, public;
SELECT softmig.advance('sp');
CALL softmig.backfill('sp', 5);
RESET search_path;
SELECT t.sp_run('mirrored'), t.sp_write('mirrored');
SET search_path = evil, pg_catalog, public;
INSERT INTO sp.l VALUES (50, 'fifty', 50);
UPDATE sp.l SET n = n OPERATOR(pg_catalog.+) 1 WHERE id OPERATOR(pg_catalog.=) 50;
COPY sp.l FROM STDIN;
51	fifty-one	51
\.
DELETE FROM sp.l WHERE id OPERATOR(pg_catalog.=) 51;
SELECT softmig.advance('sp');
RESET search_path;
SELECT t.sp_run('new_write'), t.sp_write('new_write');
SET search_path = evil, pg_catalog, public;
INSERT INTO sp.t VALUES (60, 'SIXTY', 60, NULL);
UPDATE sp.t SET n = n OPERATOR(pg_catalog.+) 1 WHERE id OPERATOR(pg_catalog.=) 60;
SELECT softmig.advance('sp');
RESET search_path;
SELECT t.sp_run('new_read'), t.sp_write('new_read');
SET search_path = evil, pg_catalog, public;
ALTER TABLE sp.t ADD COLUMN later int;
CREATE INDEX ON sp.t (n);
SELECT softmig.advance('sp', force => true, reason => 'test');
RESET search_path;
SELECT t.sp_run('cutover'), t.sp_write('cutover');

-- no shadow ran anywhere
SELECT pg_catalog.nextval('evil.hits') AS shadow_runs_plus_one;
-- most calls ran to the end (others were refused by the state or the
-- arguments, also without running a shadow); what each write did per state
SELECT count(DISTINCT proc) > 120 AS called, count(DISTINCT proc) FILTER (WHERE outcome = 'ok') > 100 AS ran_to_the_end
  FROM t.sp_outcome WHERE proc LIKE 'softmig.%';
SELECT proc AS write, string_agg(outcome, ' ' ORDER BY array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover'], state)) AS legacy_to_cutover
  FROM t.sp_outcome WHERE proc NOT LIKE 'softmig.%' GROUP BY proc ORDER BY proc;
-- the data is what pg_catalog computes
SELECT * FROM sp.t WHERE id IN (1, 50, 60) ORDER BY id;

SELECT softmig.drop_migration('sp');
SELECT softmig.drop_group('sp_group');
SELECT softmig.drop_migration('sp_g' || i) FROM generate_series(1, 4) i;
DROP SCHEMA sp CASCADE;
DROP TABLE t.sp_outcome;
DROP FUNCTION t.sp_run(text), t.sp_write(text), t.sp_calls(), t.sp_arg(name, text, regtype);
DROP SCHEMA evil CASCADE;
