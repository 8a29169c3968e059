-- Bad-input sweep: every function and procedure of schema softmig (listed
-- from pg_proc, so a new one is swept without touching this file) is called
-- with NULLs, empty and huge values, odd identifiers, wrong jsonb shapes and
-- keys of every key type (text, uuid, numeric, timestamptz, enum, domain,
-- composite, integer), against migrations in every state.  No call may end
-- in an internal error (SQLSTATE class XX) or crash the server; every call
-- is rolled back.
\pset null '(null)'
SET client_min_messages = warning;

-- one migration per key type, the key column always "k", in various states
CREATE TYPE sw_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN sw_code AS text CHECK (VALUE ~ '^[A-Z]+$');
CREATE TYPE sw_pair AS (a int, b text);
CREATE TABLE t.sw_fix (name text PRIMARY KEY, id int, legacy regclass, target regclass,
                       key jsonb, state softmig.state);
CREATE FUNCTION t.sw_make(typ text, val text, keyjson jsonb, st softmig.state) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n text := 'sw_' || regexp_replace(typ, '\W', '', 'g');
BEGIN
    EXECUTE format('CREATE TABLE %I (k %s PRIMARY KEY, v text, w int)', n || '_l', typ);
    EXECUTE format('CREATE TABLE %I (k %s PRIMARY KEY, v text, w int, extra text)', n || '_t', typ);
    EXECUTE format('INSERT INTO %I VALUES (%s, %L, 1)', n || '_l', val, 'one');
    PERFORM softmig.create_migration(n, (n || '_l')::regclass, (n || '_t')::regclass,
                                     new_only => '{extra}');
    IF st OPERATOR(softmig.>) 'legacy' THEN
        PERFORM softmig.advance(n);
        WHILE NOT (softmig.backfill_batch(n, 100) ->> 'done')::boolean LOOP
        END LOOP;
    END IF;
    WHILE softmig.state(n)::text <> st::text LOOP
        PERFORM softmig.advance(n, reason => 'sweep fixture', force => true);
    END LOOP;
    INSERT INTO t.sw_fix SELECT n, m.id, m.legacy, m.target, keyjson, m.state
      FROM softmig.migrations m WHERE m.name = n;
END $$;
SELECT t.sw_make('text', $$'a'$$, '{"k": "a"}', 'mirrored');
SELECT t.sw_make('uuid', $$'00000000-0000-0000-0000-000000000001'$$,
                 '{"k": "00000000-0000-0000-0000-000000000001"}', 'new_write');
SELECT t.sw_make('numeric', '1.5', '{"k": 1.5}', 'legacy');
SELECT t.sw_make('timestamptz', $$'2024-01-01 00:00+00'$$, '{"k": "2024-01-01T00:00:00+00:00"}', 'mirrored');
SELECT t.sw_make('sw_mood', $$'ok'$$, '{"k": "ok"}', 'new_read');
SELECT t.sw_make('sw_code', $$'AB'$$, '{"k": "AB"}', 'cutover');
SELECT t.sw_make('sw_pair', $$ROW(1, 'x')$$, '{"k": {"a": 1, "b": "x"}}', 'mirrored');
SELECT t.sw_make('integer', '7', '{"k": 7}', 'new_write');
SELECT name, state FROM t.sw_fix ORDER BY id;
CREATE VIEW sw_view AS SELECT 1 AS k;
CREATE SEQUENCE sw_seq;

-- values to try per argument type; the first is the argument's ordinary
-- value for migration f (by argument name where the type alone says little)
CREATE FUNCTION t.sw_values(typ regtype, arg text, f t.sw_fix) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    base text;
    huge_text text := $q$repeat('x', 100000)$q$;
    odd text[] := ARRAY[$q$''$q$, $q$'"'$q$, $q$'a.b.c'$q$, $q$'x''); DROP TABLE sw_view; --'$q$,
                        $q$E'tab\tnl\n'$q$, $q$'softmig'$q$, $q$'nope'$q$];
    other_keys text[] := ARRAY(SELECT quote_literal(x.key) || '::jsonb' FROM t.sw_fix x WHERE x.name <> f.name);
BEGIN
    arg := coalesce(arg, '');
    CASE typ
    WHEN 'text'::regtype THEN
        base := CASE
            WHEN arg IN ('name', 'p_name') THEN quote_literal(f.name)
            WHEN arg IN ('reason', 'p_reason', 'description', 'diagnostics') THEN $q$'sweep'$q$
            WHEN arg = 'reader' THEN $q$'r1'$q$
            WHEN arg = 'class' THEN $q$'latency'$q$
            WHEN arg = 'switch_group' THEN $q$'default'$q$
            WHEN arg = 'invariant' THEN $q$'inv'$q$
            WHEN arg = 'query' THEN $q$'SELECT 1 WHERE false'$q$
            WHEN arg = 'severity' THEN $q$'warning'$q$
            WHEN arg = 'view_name' THEN $q$'sw_routed'$q$
            WHEN arg = 'option' THEN $q$'lock_timeout'$q$
            WHEN arg = 'from_value' THEN $q$'one'$q$
            WHEN arg = 'to_value' THEN $q$'two'$q$
            WHEN arg = 'op' THEN $q$'verify'$q$
            WHEN arg IN ('expr', 'requires') THEN $q$'v IS NOT NULL'$q$
            ELSE $q$'x'$q$ END;
        RETURN ARRAY[base, 'NULL::text', huge_text] || odd
            || ARRAY[$q$'sw_text'$q$, $q$'next'$q$, $q$'sweep'$q$, $q$'orphans'$q$, $q$'range'$q$];
    WHEN 'name'::regtype THEN
        base := CASE WHEN arg IN ('field', 'p_field', 'col') THEN $q$'v'$q$ ELSE $q$'x'$q$ END;
        RETURN ARRAY[base, 'NULL::name', $q$'k'$q$, $q$'extra'$q$, $q$repeat('n', 100)$q$] || odd;
    WHEN 'integer'::regtype THEN
        base := CASE WHEN arg IN ('migration_id', 'p_id', 'id', '') THEN f.id::text
                     WHEN arg IN ('batch_size', 'chunk_rows') THEN '100'
                     WHEN arg = 'max_batches' THEN '1'
                     ELSE '0' END;
        RETURN ARRAY[base, 'NULL::int', '0', '-1', '2147483647', '(-2147483647 - 1)', '999999'];
    WHEN 'bigint'::regtype THEN
        RETURN ARRAY['1', 'NULL::bigint', '0', '-1', '9223372036854775807'];
    WHEN 'boolean'::regtype THEN
        RETURN ARRAY['false', 'NULL::boolean', 'true'];
    WHEN 'jsonb'::regtype THEN
        base := CASE
            WHEN arg IN ('key', 'p_key', 'lo', 'hi') THEN quote_literal(f.key) || '::jsonb'
            WHEN arg IN ('rows', 'p_rows') THEN quote_literal(jsonb_build_array(f.key || '{"v": "h"}')) || '::jsonb'
            WHEN arg = 'value' THEN $q$'"5s"'::jsonb$q$
            WHEN arg IN ('current', 'incoming') THEN $q$'{"v": 1}'::jsonb$q$
            WHEN arg = 'p_keys' THEN quote_literal(jsonb_build_array(f.key)) || '::jsonb'
            ELSE $q$'{}'::jsonb$q$ END;
        RETURN ARRAY[base, 'NULL::jsonb', $q$'null'::jsonb$q$, $q$'{}'::jsonb$q$, $q$'[]'::jsonb$q$,
                     $q$'"x"'::jsonb$q$, $q$'1'::jsonb$q$, $q$'true'::jsonb$q$,
                     $q$'{"k": null}'::jsonb$q$, $q$'{"k": [1, 2]}'::jsonb$q$, $q$'{"k": {"a": []}}'::jsonb$q$,
                     $q$'[{"k": 1}, null, 2]'::jsonb$q$, $q$'{"nope": 1}'::jsonb$q$, $q$'{"k": "zz", "v": 1}'::jsonb$q$,
                     $q$(SELECT jsonb_agg(jsonb_build_object('k', g, 'v', 'x')) FROM generate_series(1, 5000) g)$q$,
                     $q$(repeat('[', 1000) || repeat(']', 1000))::jsonb$q$,
                     $q$jsonb_build_object('k', repeat('x', 100000))$q$] || other_keys;
    WHEN 'regclass'::regtype THEN
        base := CASE WHEN arg IN ('legacy', 'rel', 'p_tbl') THEN quote_literal(f.legacy::text) || '::regclass'
                     ELSE quote_literal(f.target::text) || '::regclass' END;
        RETURN ARRAY[base, 'NULL::regclass', '0::regclass', $q$'pg_class'::regclass$q$,
                     $q$'softmig.migrations'::regclass$q$, $q$'sw_view'::regclass$q$, $q$'sw_seq'::regclass$q$,
                     quote_literal(f.legacy::text) || '::regclass', '999999::regclass'];
    WHEN 'softmig.state'::regtype THEN
        base := CASE WHEN arg IN ('to_state') THEN 'NULL::softmig.state' ELSE quote_literal(f.state) || '::softmig.state' END;
        RETURN ARRAY[base, 'NULL::softmig.state', $q$'legacy'::softmig.state$q$, $q$'mirrored'::softmig.state$q$,
                     $q$'new_write'::softmig.state$q$, $q$'new_read'::softmig.state$q$, $q$'cutover'::softmig.state$q$];
    WHEN 'softmig.side'::regtype THEN
        RETURN ARRAY[$q$'new'::softmig.side$q$, 'NULL::softmig.side', $q$'legacy'::softmig.side$q$];
    WHEN 'interval'::regtype THEN
        RETURN ARRAY[$q$'1 day'::interval$q$, 'NULL::interval', $q$'-1 day'::interval$q$, $q$'0'::interval$q$,
                     $q$'100000 years'::interval$q$];
    WHEN 'text[]'::regtype THEN
        base := CASE WHEN arg = 'key' THEN 'NULL::text[]' ELSE $q$'{}'::text[]$q$ END;
        RETURN ARRAY[base, 'NULL::text[]', $q$'{}'::text[]$q$, $q$'{NULL}'::text[]$q$, $q$'{""}'::text[]$q$,
                     $q$'{k}'::text[]$q$, $q$'{v,v}'::text[]$q$, $q$'{nope}'::text[]$q$, $q$'{extra}'::text[]$q$,
                     $q$ARRAY(SELECT 'c' || g FROM generate_series(1, 2000) g)$q$];
    WHEN 'pg_snapshot'::regtype THEN
        RETURN ARRAY['pg_current_snapshot()', 'NULL::pg_snapshot', $q$'1:1:'::pg_snapshot$q$,
                     $q$'10:20:11,12'::pg_snapshot$q$];
    WHEN 'xid8'::regtype THEN
        RETURN ARRAY['NULL::xid8', $q$'0'::xid8$q$, $q$'1'::xid8$q$, $q$'18446744073709551615'::xid8$q$];
    WHEN 'xid'::regtype THEN
        RETURN ARRAY[$q$'3'::xid$q$, 'NULL::xid', $q$'0'::xid$q$, $q$'1'::xid$q$, $q$'4294967295'::xid$q$];
    WHEN 'oid'::regtype THEN
        RETURN ARRAY['0::oid', 'NULL::oid', '4294967295::oid'];
    WHEN 'cstring'::regtype THEN
        RETURN ARRAY[$q$'legacy'::cstring$q$, 'NULL::cstring', $q$''::cstring$q$, $q$'bogus'::cstring$q$];
    WHEN 'unknown'::regtype THEN
        RETURN ARRAY[quote_literal(f.name), 'NULL', $q$''$q$, $q$'nope'$q$];
    WHEN 'bytea'::regtype THEN
        RETURN ARRAY['NULL::bytea', $q$'\x'::bytea$q$, $q$'\x00'::bytea$q$, $q$decode(repeat('ff', 200), 'hex')$q$,
                     $q$decode(repeat('00', 4096), 'hex')$q$];
    WHEN '"any"'::regtype THEN
        RETURN ARRAY['1', 'NULL::int', $q$'x'::text$q$, 'now()', 'ROW(1, 2)', 'ARRAY[1]', $q$'{}'::jsonb$q$];
    WHEN 'softmig.migrations'::regtype THEN
        RETURN ARRAY[format('(SELECT m FROM softmig.migrations m WHERE m.id = %s)', f.id),
                     'NULL::softmig.migrations',
                     $q$jsonb_populate_record(NULL::softmig.migrations, '{"id": 999999, "name": "ghost"}')$q$,
                     format($q$jsonb_populate_record((SELECT m FROM softmig.migrations m WHERE m.id = %s), '{"legacy": 1259, "state": "cutover"}')$q$, f.id)];
    ELSE
        RETURN ARRAY['NULL::' || typ::text];
    END CASE;
END $$;

-- the calls: for every migration the ordinary call; for three of them (text,
-- uuid and composite keys) every argument through every value of its type
CREATE FUNCTION t.sw_calls() RETURNS TABLE (fn regprocedure, sql text, base boolean)
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    f t.sw_fix;
    names text[];
    types regtype[];
    vals text[][];
    args text[];
    a int;
    v text;
    callsql text;
BEGIN
    FOR p IN SELECT pr.oid, pr.proname, pr.prokind, pr.pronargs,
                    ARRAY(SELECT u.t::regtype FROM unnest(pr.proargtypes::oid[]) WITH ORDINALITY AS u(t, o) ORDER BY u.o) AS argtypes,
                    pr.proargnames, pr.proargmodes, pr.provariadic
               FROM pg_proc pr WHERE pr.pronamespace = 'softmig'::regnamespace ORDER BY pr.oid LOOP
        -- IN argument names, aligned with proargtypes
        IF p.proargmodes IS NULL THEN
            names := p.proargnames[1:p.pronargs];
        ELSE
            names := ARRAY(SELECT n FROM unnest(p.proargnames, p.proargmodes) AS x(n, md)
                            WHERE md IN ('i', 'b', 'v'));
        END IF;
        types := p.argtypes;
        FOR f IN SELECT * FROM t.sw_fix ORDER BY id LOOP
            args := ARRAY[]::text[];
            FOR a IN 1 .. p.pronargs LOOP
                args := args || (t.sw_values(types[a], names[a], f))[1];
            END LOOP;
            callsql := CASE WHEN p.prokind = 'p' THEN 'CALL ' ELSE 'SELECT ' END
                       || 'softmig.' || quote_ident(p.proname) || '(' || array_to_string(args, ', ') || ')';
            fn := p.oid; sql := callsql; base := true; RETURN NEXT;
            base := false;
            CONTINUE WHEN f.name NOT IN ('sw_text', 'sw_sw_pair', 'sw_uuid');
            FOR a IN 1 .. p.pronargs LOOP
                FOREACH v IN ARRAY (t.sw_values(types[a], names[a], f))[2:] LOOP
                    fn := p.oid;
                    sql := CASE WHEN p.prokind = 'p' THEN 'CALL ' ELSE 'SELECT ' END
                           || 'softmig.' || quote_ident(p.proname) || '('
                           || array_to_string(args[1:a-1] || v || args[a+1:], ', ') || ')';
                    RETURN NEXT;
                END LOOP;
            END LOOP;
        END LOOP;
        -- variadic "any": more and fewer arguments
        IF p.provariadic = '"any"'::regtype THEN
            fn := p.oid;
            base := false;
            sql := 'SELECT softmig.' || quote_ident(p.proname) || '(1, 2, 3)'; RETURN NEXT;
            sql := 'SELECT softmig.' || quote_ident(p.proname) || '(NULL::bytea, 1, 2, 3, 4, 5, 6, 7, 8)'; RETURN NEXT;
            sql := 'SELECT softmig.' || quote_ident(p.proname) || $q$(1, 'a', 2, 'b', NULL::int, 3, now(), 4, 5, 6, 7)$q$; RETURN NEXT;
            -- well-formed digest arguments (seed, key count, collations,
            -- bounds, quarantined keys, ctid, then key and column) with keys of
            -- every kind, some without a btree order
            CONTINUE WHEN p.prokind <> 'a';
            FOREACH v IN ARRAY ARRAY['1', $q$'x'::text$q$, $q$point '(1,2)'$q$, $q$'{}'::json$q$,
                                     $q$ROW(1, 'x')::sw_pair$q$, $q$'ok'::sw_mood$q$, $q$'AB'::sw_code$q$,
                                     $q$'00000000-0000-0000-0000-000000000001'::uuid$q$, 'now()', '1.5',
                                     $q$ARRAY[1, 2]$q$, $q$'{"a": 1}'::jsonb$q$, 'NULL::int'] LOOP
                sql := format('SELECT softmig.%I(0::int8, 1, ARRAY[0, 0]::oid[], ARRAY(SELECT x FROM (SELECT %s AS x) s), '
                              'ARRAY(SELECT x FROM (SELECT %s AS x) s WHERE false), %L::tid, %s, 1) FROM generate_series(1, 3)',
                              p.proname, v, v, '(0,1)', v);
                RETURN NEXT;
            END LOOP;
        END IF;
    END LOOP;
END $$;

CREATE TABLE t.sw_result (fn regprocedure, sql text, state text, message text, who name);
CREATE TABLE t.sw_called (fn regprocedure);
GRANT ALL ON t.sw_result, t.sw_called TO PUBLIC;
GRANT SELECT ON t.sw_fix TO PUBLIC;
-- each call in a subtransaction that is always rolled back
CREATE FUNCTION t.sw_run(public_only boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    st text;
    msg text;
BEGIN
    FOR c IN SELECT * FROM t.sw_calls() x
              WHERE NOT public_only OR (x.base AND (x.fn::text NOT LIKE 'softmig.\_%')) LOOP
        BEGIN
            BEGIN
                EXECUTE c.sql;
                st := 'ok';
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            END;
            RAISE EXCEPTION USING ERRCODE = 'SWEEP', MESSAGE = 'undo';
        EXCEPTION WHEN SQLSTATE 'SWEEP' THEN
            NULL;
        END;
        INSERT INTO t.sw_called VALUES (c.fn);
        IF st LIKE 'XX%' THEN
            INSERT INTO t.sw_result VALUES (c.fn, left(c.sql, 300), st, msg, current_user);
        END IF;
    END LOOP;
END $$;
SET statement_timeout = '60s';
-- as a superuser: everything
SELECT t.sw_run(false);
-- as a role that owns nothing: the ordinary calls of the public functions
CREATE ROLE sw_nobody;
SET ROLE sw_nobody;
SELECT t.sw_run(true);
RESET ROLE;
RESET statement_timeout;

-- procedures with transaction control, at top level
\set VERBOSITY terse
CALL softmig.backfill(NULL);
CALL softmig.backfill('sw_text', NULL);
CALL softmig.backfill('sw_text', 0);
CALL softmig.backfill('sw_text', 1, 0);
CALL softmig.backfill('sw_text', 1, 1, -1);
CALL softmig.backfill('', 1);
CALL softmig.backfill('sw_uuid', 1);
CALL softmig.backfill('sw_sw_pair', 1);
CALL softmig.backfill('sw_timestamptz', 1);
\set VERBOSITY default

-- every function and procedure was called
SELECT p.oid::regprocedure AS never_called FROM pg_proc p
 WHERE p.pronamespace = 'softmig'::regnamespace
   AND p.oid NOT IN (SELECT fn FROM t.sw_called);
SELECT count(*) > 5000 AS enough_calls FROM t.sw_called;
-- and no call ended in an internal error
SELECT fn, who, state, message, sql FROM t.sw_result ORDER BY fn, sql;
RESET client_min_messages;

-- the server is still up, and the fixtures are as they were
SELECT f.name, m.state FROM t.sw_fix f JOIN softmig.migrations m USING (name) ORDER BY m.id;

-- clean up
SET client_min_messages = warning;
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT * FROM t.sw_fix LOOP
        WHILE softmig.state(f.name)::text NOT IN ('legacy', 'cutover') LOOP
            PERFORM softmig.rollback(f.name, 'sweep done');
        END LOOP;
    END LOOP;
END $$;
SELECT softmig.drop_migration(name) FROM t.sw_fix ORDER BY id;
DROP TABLE sw_text_l, sw_text_t, sw_uuid_l, sw_uuid_t, sw_numeric_l, sw_numeric_t,
    sw_timestamptz_l, sw_timestamptz_t, sw_sw_mood_l, sw_sw_mood_t, sw_sw_code_l, sw_sw_code_t,
    sw_sw_pair_l, sw_sw_pair_t, sw_integer_l, sw_integer_t;
DROP VIEW sw_view;
DROP SEQUENCE sw_seq;
DROP FUNCTION t.sw_make(text, text, jsonb, softmig.state), t.sw_values(regtype, text, t.sw_fix), t.sw_calls();
DROP FUNCTION t.sw_run(boolean);
DROP TABLE t.sw_fix, t.sw_result, t.sw_called;
DROP ROLE sw_nobody;
DROP TYPE sw_mood, sw_pair;
DROP DOMAIN sw_code;
RESET client_min_messages;
