-- Security: hostile search_path (modelled on PostgreSQL's CVE-2020-14350
-- tests), the ownership gate, what user SQL runs as, application roles,
-- row-level security, catalog and function privileges, SECURITY DEFINER audit.
-- See doc/security.md.
\pset null '(null)'

------------------------------------------------------------------ set-up
-- Start from a clean extension: earlier tests leave migrations behind, and the
-- extension itself is re-created below under a hostile search_path.  The t.*
-- helpers of setup.sql do not depend on softmig and survive this.
SET client_min_messages = warning;
DROP EXTENSION softmig CASCADE;
RESET client_min_messages;
SELECT * FROM t.err('SELECT 1/0');

CREATE ROLE regress_sec_owner;          -- owns the migrated tables
CREATE ROLE regress_sec_member;         -- member of the owner role: an owner too
CREATE ROLE regress_sec_app;            -- application: rights on the legacy tables only
CREATE ROLE regress_sec_app_new;        -- application: rights on the target tables only
CREATE ROLE regress_sec_stranger;       -- no rights at all
CREATE ROLE regress_sec_evil;           -- plants look-alike objects
GRANT regress_sec_owner TO regress_sec_member;

-- Logs anyone may write: what hostile code caught, and who ran user SQL.
CREATE SCHEMA sec_log;
CREATE TABLE sec_log.evil_calls (fn text NOT NULL, who name NOT NULL);
CREATE TABLE sec_log.who_ran (tag text NOT NULL, who name NOT NULL);
GRANT USAGE ON SCHEMA sec_log TO PUBLIC;
GRANT SELECT, INSERT, DELETE ON sec_log.evil_calls, sec_log.who_ran TO PUBLIC;

CREATE SCHEMA sec AUTHORIZATION regress_sec_owner;
GRANT USAGE ON SCHEMA sec TO PUBLIC;
CREATE SCHEMA sec_stranger AUTHORIZATION regress_sec_stranger;

------------------------------------------------------------------ the hostile schema
-- Everything in schema evil records the call and raises a WARNING, and
-- returns a poisoned value.  Some objects shadow pg_catalog exactly (they win
-- only when evil precedes an explicit pg_catalog in the search_path), others
-- are better matches than what pg_catalog offers (varchar, name, text || int,
-- nextval(text), format(text, text), ...) and win under "evil, public" too.
CREATE SCHEMA evil AUTHORIZATION regress_sec_evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
SET ROLE regress_sec_evil;
CREATE FUNCTION evil.caught(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_log.evil_calls (fn, who) VALUES (what, current_user);
    RAISE WARNING 'hostile function evil.% was called', what;
END $$;
CREATE FUNCTION evil.upper(text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('upper(text)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.upper(varchar) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('upper(varchar)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.upper(name) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('upper(name)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('lower(text)'); RETURN 'evil'; END $$;
CREATE FUNCTION evil.lower(varchar) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('lower(varchar)'); RETURN 'evil'; END $$;
CREATE FUNCTION evil.lower(name) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('lower(name)'); RETURN 'evil'; END $$;
CREATE FUNCTION evil.eq_ii(integer, integer) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(integer,integer)'); RETURN false; END $$;
CREATE FUNCTION evil.eq_tt(text, text) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(text,text)'); RETURN false; END $$;
CREATE FUNCTION evil.eq_vv(varchar, varchar) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(varchar,varchar)'); RETURN false; END $$;
CREATE FUNCTION evil.eq_it(integer, text) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(integer,text)'); RETURN false; END $$;
CREATE FUNCTION evil.eq_ti(text, integer) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(text,integer)'); RETURN false; END $$;
CREATE FUNCTION evil.eq_nn(name, name) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(name,name)'); RETURN false; END $$;
CREATE FUNCTION evil.eq_jj(jsonb, jsonb) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('=(jsonb,jsonb)'); RETURN false; END $$;
CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.eq_ii);
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq_tt);
CREATE OPERATOR evil.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = evil.eq_vv);
CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = text, FUNCTION = evil.eq_it);
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = integer, FUNCTION = evil.eq_ti);
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.eq_nn);
CREATE OPERATOR evil.= (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.eq_jj);
CREATE FUNCTION evil.cat_tt(text, text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('||(text,text)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.cat_vv(varchar, varchar) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('||(varchar,varchar)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.cat_ti(text, integer) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('||(text,integer)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.cat_tn(text, name) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('||(text,name)'); RETURN 'EVIL'; END $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.cat_tt);
CREATE OPERATOR evil.|| (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = evil.cat_vv);
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = integer, FUNCTION = evil.cat_ti);
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = name, FUNCTION = evil.cat_tn);
CREATE FUNCTION evil.arrow_t(jsonb, text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('->>(jsonb,text)'); RETURN 'EVIL'; END $$;
CREATE OPERATOR evil.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = evil.arrow_t);
-- a type named like softmig's, and functions named like softmig's internals
CREATE TYPE evil.state AS ENUM ('legacy', 'mirrored', 'new_write', 'new_read', 'cutover');
CREATE TYPE evil.side AS ENUM ('legacy', 'new');
CREATE FUNCTION evil.state(text) RETURNS evil.state LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('state(text)'); RETURN 'cutover'; END $$;
CREATE FUNCTION evil.status(text) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('status(text)'); RETURN '{}'; END $$;
CREATE FUNCTION evil._migration(text) RETURNS record LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('_migration(text)'); RETURN NULL; END $$;
CREATE FUNCTION evil._actor() RETURNS name LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('_actor()'); RETURN 'evil'; END $$;
CREATE FUNCTION evil._history(integer, text, text, text, text, jsonb) RETURNS void LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('_history(...)'); END $$;
CREATE FUNCTION evil.backfill_batch(text, integer) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('backfill_batch(text,integer)'); RETURN '{"done": true}'; END $$;
CREATE FUNCTION evil.group_source(text, text) RETURNS evil.side LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('group_source(text,text)'); RETURN 'new'; END $$;
-- catalog functions softmig calls, as exact shadows and better matches
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('now()'); RETURN 'epoch'; END $$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('clock_timestamp()'); RETURN 'epoch'; END $$;
CREATE FUNCTION evil.nextval(text) RETURNS bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('nextval(text)'); RETURN -1; END $$;
CREATE FUNCTION evil.format(text, text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('format(text,text)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.format(text, name) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('format(text,name)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.quote_ident(name) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('quote_ident(name)'); RETURN 'EVIL'; END $$;
CREATE FUNCTION evil.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('jsonb_build_object(text,text)'); RETURN '{}'; END $$;
CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('set_config(text,text,boolean)'); RETURN ''; END $$;
CREATE FUNCTION evil.pg_current_snapshot() RETURNS pg_snapshot LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('pg_current_snapshot()'); RETURN '1:1:'; END $$;
CREATE FUNCTION evil.count(integer) RETURNS bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.caught('count(integer)'); RETURN -1; END $$;
RESET ROLE;
SELECT count(*) AS hostile_objects FROM pg_proc WHERE pronamespace = 'evil'::regnamespace;
-- positive controls: SQL evaluated with these search_paths is captured
SET search_path = evil, public;
SELECT upper('x'::varchar) AS upper_v, 'a'::varchar = 'a'::varchar AS eq_v, 'a'::varchar || 'b'::varchar AS cat_v,
       'n' || 1 AS cat_ti, lower('X'::name) AS lower_n;
SET search_path = evil, pg_catalog, public;
SELECT upper('x') AS upper_t, 1 = 1 AS eq_ii, now() = 'epoch' AS now_is_epoch, '{"a": "b"}'::jsonb ->> 'a' AS arrow;
RESET search_path;
DELETE FROM sec_log.evil_calls RETURNING fn;

-- Recorder for user SQL (mapping expressions, domain checks): it warns when
-- it runs as anyone but the owner of the tables, and logs each call when it
-- may write (parity evaluates mappings in a read-only context).
SET ROLE regress_sec_owner;
CREATE FUNCTION sec.rec(tag text, v anyelement) RETURNS anyelement LANGUAGE plpgsql AS $$
BEGIN
    IF current_user OPERATOR(pg_catalog.<>) 'regress_sec_owner' THEN
        RAISE WARNING 'user SQL (%) ran as % instead of the table owner', tag,
            CASE WHEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
                 THEN 'a superuser' ELSE 'another role' END;
    END IF;
    IF NOT pg_catalog.current_setting('transaction_read_only')::boolean THEN
        INSERT INTO sec_log.who_ran (tag, who) VALUES (tag, current_user);
    END IF;
    RETURN v;
END $$;
RESET ROLE;
-- as_other(): how often user SQL ran as anyone but the owner of the tables
-- since the last call (the WARNINGs above it say where)
CREATE FUNCTION sec_log.as_other() RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM sec_log.who_ran RETURNING who)
    SELECT count(*) FILTER (WHERE who <> 'regress_sec_owner') FROM d
$$;

------------------------------------------------------------------ hostile search_path: evil, public
-- pg_catalog is implicitly searched first here; evil wins wherever it offers
-- a better match than pg_catalog (varchar, name, text || integer, ...).
SET search_path = evil, public;
CREATE EXTENSION softmig;
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname OPERATOR(pg_catalog.=) 'softmig';

SET ROLE regress_sec_owner;
CREATE TABLE sec.l_acct (id int PRIMARY KEY, cust varchar(40) NOT NULL, tier varchar(10),
                         cents int, note text);
CREATE TABLE sec.t_acct (acct_id int PRIMARY KEY, customer varchar(40) NOT NULL, tier varchar(10),
                         amount numeric(12,2), note text, label text, extra text);
INSERT INTO sec.l_acct VALUES (1, 'ann', 'vip', 100, 'pre'), (2, 'bob', 'std', 200, NULL),
                              (3, 'cy', NULL, 300, 'pre');
GRANT SELECT, INSERT, UPDATE, DELETE ON sec.l_acct TO regress_sec_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON sec.t_acct TO regress_sec_app_new;
-- unqualified upper(), lower(), = and || over varchar columns: under this
-- search_path every one of them would resolve to evil if evaluated with it
SELECT softmig.create_migration('acct', 'sec.l_acct', 'sec.t_acct',
    forward => '{"acct_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0",
                 "label": "CASE WHEN tier = ''vip'' THEN cust || ''*'' ELSE lower(cust) END"}',
    backward => '{"id": "acct_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    new_only => '{extra}', divergent => '{label}',
    options => '{"representable": "extra IS NULL OR extra <> ''nope''"}');
SELECT softmig.state('acct'::text)::text, softmig.state('acct')::text;
SELECT softmig.advance('acct');
RESET ROLE;

-- mirrored: the application writes legacy under the hostile path
SET ROLE regress_sec_app;
SHOW search_path;
INSERT INTO sec.l_acct VALUES (4, 'dee', 'vip', 400, NULL), (5, 'eve', 'std', 500, 'x');
UPDATE sec.l_acct SET cents = 450, note = 'upd' WHERE id = 4;
UPDATE sec.l_acct SET id = 6 WHERE id = 5;
INSERT INTO sec.l_acct VALUES (4, 'dee', 'vip', 999, 'upsert') ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents;
DELETE FROM sec.l_acct WHERE id = 3;
COPY sec.l_acct (id, cust, tier, cents, note) FROM stdin;
7	fay	vip	700	copied
\.
-- the application still cannot touch the target
SELECT * FROM t.err($$SELECT count(*) FROM sec.t_acct$$);
SELECT * FROM t.err($$INSERT INTO sec.t_acct (acct_id, customer) VALUES (90, 'X')$$);
BEGIN;
SET LOCAL softmig.operation_key = 'acct:op-1';
INSERT INTO sec.l_acct VALUES (8, 'gus', 'std', 800, NULL);
COMMIT;
SELECT * FROM t.err($$INSERT INTO sec.l_acct VALUES (9, 'hal', 'std', 900, NULL)$$);
BEGIN;
SET LOCAL softmig.operation_key = 'acct:op-1';
SELECT state FROM t.err($$INSERT INTO sec.l_acct VALUES (9, 'hal', 'std', 900, NULL)$$);
ROLLBACK;
RESET ROLE;

-- backfill, status, history as the superuser, under the hostile path
CALL softmig.backfill('acct', batch_size => 2);
SELECT s OPERATOR(pg_catalog.->>) 'state' AS state,
       s OPERATOR(pg_catalog.->>) 'write_authority' AS write_authority,
       s OPERATOR(pg_catalog.->>) 'backfill_done' AS backfill_done,
       s OPERATOR(pg_catalog.->>) 'rows_backfilled' AS rows_backfilled,
       (s OPERATOR(pg_catalog.->) 'triggers') OPERATOR(pg_catalog.->>) 'healthy' AS triggers_healthy
  FROM softmig.status('acct') s;
SELECT softmig.operation_applied('acct', 'acct:op-1');
SELECT * FROM sec.t_acct ORDER BY acct_id;

-- quarantine, per-field authority, overrides, DDL under the hostile path
SET ROLE regress_sec_owner;
SELECT softmig.quarantine('acct', '{"id": 2}', 'hostile path test');
SET ROLE regress_sec_app;
SELECT state, message FROM t.err($$UPDATE sec.l_acct SET cents = 1 WHERE id = 2$$);
SET ROLE regress_sec_owner;
SELECT softmig.release('acct', '{"id": 2}');
SELECT softmig.set_field_authority('acct', 'note', 'new');
SET ROLE regress_sec_app_new;
UPDATE sec.t_acct SET note = 'from target' WHERE acct_id = 1;
SET ROLE regress_sec_owner;
SELECT id, note FROM sec.l_acct WHERE id = 1;
SELECT softmig.set_field_authority('acct', 'note', 'legacy');
BEGIN;
SET LOCAL softmig.override = 'hand repair under a hostile path';
UPDATE sec.t_acct SET label = 'hand' WHERE acct_id = 7;
COMMIT;
ALTER TABLE sec.l_acct ADD COLUMN spare int;
SELECT state, message FROM t.err($$DROP TABLE sec.t_acct$$);
SELECT softmig.set_option('acct', 'unregistered_reader_window', '"0"');
SELECT softmig.register_reader('acct', 'billing', 'consistency', 'core');
SELECT softmig.repair_triggers('acct') OPERATOR(pg_catalog.->>) 'healthy' AS healthy;

-- new_write: the target is the authority; projection through lower() etc.
SELECT softmig.advance('acct', reason => 'hostile path test');
SET ROLE regress_sec_app_new;
INSERT INTO sec.t_acct (acct_id, customer, tier, amount, note) VALUES (20, 'IVY', 'vip', 2.5, 'nw');
UPDATE sec.t_acct SET amount = 4.75, customer = 'DEE D' WHERE acct_id = 4;
UPDATE sec.t_acct SET acct_id = 21 WHERE acct_id = 8;
DELETE FROM sec.t_acct WHERE acct_id = 6;
SELECT * FROM t.err($$SELECT count(*) FROM sec.l_acct$$);
SET ROLE regress_sec_app;
SELECT state, message FROM t.err($$INSERT INTO sec.l_acct VALUES (30, 'no', 'std', 1, NULL)$$);
SET ROLE regress_sec_owner;
SELECT softmig.hydrate('acct', '[{"acct_id": 1, "amount": 1.25}]', pg_catalog.pg_current_snapshot());
SELECT softmig.shadow_disable('acct', 'hostile path test');
SET ROLE regress_sec_app_new;
UPDATE sec.t_acct SET amount = 9.99 WHERE acct_id = 20;
SET ROLE regress_sec_owner;
SELECT softmig.shadow_enable('acct');
SET ROLE regress_sec_app_new;
UPDATE sec.t_acct SET extra = 'new-only' WHERE acct_id = 21;    -- closes the envelope
SET ROLE regress_sec_owner;
SELECT e OPERATOR(pg_catalog.->>) 'open' AS open, e OPERATOR(pg_catalog.->>) 'first_key' AS first_key
  FROM softmig.envelope('acct') e;
SELECT state, message FROM t.err($$SELECT softmig.rollback('acct', 'try')$$);
SELECT * FROM sec.l_acct ORDER BY id;

-- new_read, cutover, drop
SELECT softmig.switch_reads('acct', 'core', 'new', 'hostile path test');
SELECT softmig.advance('acct');
SELECT softmig.advance('acct');
SET ROLE regress_sec_app;
SELECT state, message FROM t.err($$UPDATE sec.l_acct SET cents = 0 WHERE id = 1$$);
SET ROLE regress_sec_owner;
SELECT action, from_state, to_state, reason FROM softmig.history('acct')
 WHERE action OPERATOR(pg_catalog.<>) 'override';
SELECT count(*) AS override_rows FROM softmig.history('acct') WHERE action OPERATOR(pg_catalog.=) 'override';
SELECT softmig.unregister_reader('acct', 'billing');
SELECT softmig.drop_migration('acct');
RESET ROLE;

------------------------------------------------------------------ hostile search_path: evil, pg_catalog, public
-- Now evil shadows pg_catalog exactly: every unqualified upper(), =, ||, ->>,
-- now(), format(), ... would be evil's.  (This test's own statements avoid
-- them; softmig's must not need to.)
SET search_path = evil, pg_catalog, public;
SET ROLE regress_sec_owner;
CREATE TABLE sec.l_acct2 (id int PRIMARY KEY, cust text NOT NULL, cents int);
CREATE TABLE sec.t_acct2 (id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), tag text);
INSERT INTO sec.l_acct2 VALUES (1, 'ann', 100), (2, 'bob', 200);
SELECT softmig.create_migration('acct2', 'sec.l_acct2', 'sec.t_acct2',
    forward => '{"customer": "upper(cust)", "amount": "cents / 100.0", "tag": "cust || ''#'' || id"}',
    backward => '{"cust": "lower(customer)", "cents": "(amount * 100)::int"}');
SELECT softmig.advance('acct2');
INSERT INTO sec.l_acct2 VALUES (3, 'cy', 300);
UPDATE sec.l_acct2 SET cents = 301 WHERE id OPERATOR(pg_catalog.=) 3;
BEGIN;
SET LOCAL softmig.operation_key = 'acct2:op-1';
DELETE FROM sec.l_acct2 WHERE id OPERATOR(pg_catalog.=) 2;
COMMIT;
RESET ROLE;
CALL softmig.backfill('acct2');
SET ROLE regress_sec_owner;
SELECT softmig.quarantine('acct2', '{"id": 1}', 'exact shadows');
SELECT softmig.release('acct2', '{"id": 1}');
SELECT softmig.advance('acct2');
INSERT INTO sec.t_acct2 (id, customer, amount) VALUES (4, 'DEE', 4.5);
UPDATE sec.t_acct2 SET customer = 'CY C' WHERE id OPERATOR(pg_catalog.=) 3;
SELECT softmig.hydrate('acct2', '[{"id": 4, "tag": "hydrated"}]', pg_catalog.pg_current_snapshot());
SELECT softmig.close_envelope('acct2', 'exact shadows');
SELECT softmig.forget_operations('acct2', '0');
SELECT (softmig.status('acct2') OPERATOR(pg_catalog.->) 'triggers') OPERATOR(pg_catalog.->>) 'healthy' AS healthy,
       softmig.status('acct2') OPERATOR(pg_catalog.->>) 'state' AS state;
SELECT action FROM softmig.history('acct2');
RESET ROLE;
RESET search_path;
SELECT * FROM sec.l_acct2 ORDER BY id;
SELECT * FROM sec.t_acct2 ORDER BY id;

-- nothing in evil ran, at any point (and no WARNING appeared above)
SELECT fn, who, count(*) FROM sec_log.evil_calls GROUP BY fn, who ORDER BY fn COLLATE "C";

------------------------------------------------------------------ who runs user SQL
-- Mapping expressions, domain checks and anything else the table owner wrote
-- run as the owner of the table being written (or read), whoever calls
-- softmig: never as the catalog owner (a superuser) and never as a superuser
-- who happens to call a function.  sec.rec WARNs otherwise.
SET ROLE regress_sec_owner;
CREATE TABLE sec.l_who (id int PRIMARY KEY, v text);
CREATE TABLE sec.t_who (id int PRIMARY KEY, v text, w text);
INSERT INTO sec.l_who VALUES (1, 'a'), (2, 'b'), (3, 'c');
-- the owner's temp table named like create_migration's scratch table, with
-- a CHECK calling the owner's code: softmig must neither use nor run it
CREATE TEMP TABLE softmig_pending_mappings (direction text, column_name name, ordinal integer,
    expression text, is_default boolean CHECK (sec.rec('temp table check', is_default) IS NOT NULL));
SELECT * FROM t.err($$SELECT softmig.create_migration('who', 'sec.l_who', 'sec.t_who',
    forward => '{"w": "sec.rec(''forward'', v)"}', backward => '{"v": "sec.rec(''backward'', v)"}')$$);
SELECT sec_log.as_other() AS as_other;
SET client_min_messages = warning;
DROP TABLE IF EXISTS pg_temp.softmig_pending_mappings;
RESET client_min_messages;
SELECT softmig.advance('who');
INSERT INTO sec.l_who VALUES (4, 'd');
SELECT sec_log.as_other() AS as_other;
RESET ROLE;
-- a superuser writes: the mirror runs as the target's owner
INSERT INTO sec.l_who VALUES (5, 'e');
SELECT sec_log.as_other() AS as_other;
-- a superuser runs the backfill, parity, check, release, the advance guard,
-- hydrate, shadow_enable: the owner's mappings and invariants still run as
-- the owner
CALL softmig.backfill('who');
SELECT sec_log.as_other() AS as_other;
SELECT count(*) AS differences FROM softmig.parity('who');
SET ROLE regress_sec_owner;
SELECT softmig.add_invariant('who', 'no negative ids', $$SELECT id FROM sec.l_who WHERE sec.rec('invariant', id) < 0$$);
RESET ROLE;
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT count(*) > 0 AS checked FROM softmig.check('who');
RESET client_min_messages;
SELECT sec_log.as_other() AS as_other;
SELECT softmig.quarantine('who', '{"id": 1}', 'who runs');
SELECT state, message FROM t.err($$UPDATE sec.l_who SET v = 'a2' WHERE id = 1$$);   -- superusers too
SELECT softmig.release('who', '{"id": 1}');
SELECT sec_log.as_other() AS as_other;
SELECT softmig.advance('who', reason => 'who runs');
SELECT sec_log.as_other() AS as_other;
UPDATE sec.t_who SET v = 'B' WHERE id = 2;
SELECT sec_log.as_other() AS as_other;
SELECT softmig.hydrate('who', '[{"id": 3, "v": "C"}]', pg_current_snapshot());
SELECT sec_log.as_other() AS as_other;
SELECT softmig.shadow_disable('who', 'who runs');
UPDATE sec.t_who SET v = 'D' WHERE id = 4;
SELECT softmig.shadow_enable('who');
SELECT sec_log.as_other() AS as_other;
SELECT softmig.quarantine('who', '{"id": 5}', 'who runs');
SELECT softmig.release('who', '{"id": 5}');
SELECT sec_log.as_other() AS as_other;
SELECT * FROM sec.l_who ORDER BY id;

-- a key column of a domain whose CHECK is the owner's code: quarantine and
-- release must not type the key as the catalog owner
SET ROLE regress_sec_owner;
CREATE DOMAIN sec.guarded_id AS int CHECK (sec.rec('domain check', VALUE) > 0);
CREATE TABLE sec.l_dom (id sec.guarded_id PRIMARY KEY, v text);
CREATE TABLE sec.t_dom (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('dom', 'sec.l_dom', 'sec.t_dom');
SELECT softmig.advance('dom');
INSERT INTO sec.l_dom VALUES (1, 'a');
SELECT softmig.quarantine('dom', '{"id": 1}', 'domain key');
SELECT softmig.release('dom', '{"id": 1}');
SELECT sec_log.as_other() AS as_other;
RESET ROLE;

------------------------------------------------------------------ the ownership gate
SET ROLE regress_sec_owner;
CREATE TABLE sec.l_priv (id int PRIMARY KEY, v text, w text);
CREATE TABLE sec.t_priv (id int PRIMARY KEY, v text, w text);
CREATE TABLE sec.l_priv2 (id int PRIMARY KEY, v text);
CREATE TABLE sec.t_priv2 (id int PRIMARY KEY, v text);
INSERT INTO sec.l_priv VALUES (1, 'a', 'x');
SELECT softmig.create_migration('priv', 'sec.l_priv', 'sec.t_priv');
SELECT softmig.advance('priv');
SELECT softmig.quarantine('priv', '{"id": 1}', 'so release has something to release');
SELECT softmig.register_reader('priv', 'reporting', 'bulk');
-- a group of two more migrations, for the group functions
CREATE TABLE sec.l_g1 (id int PRIMARY KEY);
CREATE TABLE sec.t_g1 (id int PRIMARY KEY);
CREATE TABLE sec.l_g2 (id int PRIMARY KEY);
CREATE TABLE sec.t_g2 (id int PRIMARY KEY);
SELECT softmig.create_migration('priv_g1', 'sec.l_g1', 'sec.t_g1');
SELECT softmig.create_migration('priv_g2', 'sec.l_g2', 'sec.t_g2');
SELECT softmig.create_group('priv_group', ARRAY['priv_g1', 'priv_g2']);
-- privileges on the tables are not ownership
GRANT ALL ON sec.l_priv, sec.t_priv, sec.l_priv2, sec.t_priv2 TO regress_sec_app;
RESET ROLE;
SET ROLE regress_sec_stranger;
CREATE TABLE sec_stranger.mine (id int PRIMARY KEY, v text);
RESET ROLE;
CREATE TEMP TABLE sec_before AS SELECT * FROM t.counts();
CREATE TEMP TABLE sec_before_rows AS
    SELECT (SELECT count(*) FROM softmig.quarantine) AS quarantined,
           (SELECT count(*) FROM softmig.reader_registry) AS readers,
           (SELECT count(*) FROM softmig.backfill_progress) AS backfills,
           (SELECT count(*) FROM sec.l_priv) AS l_rows, (SELECT count(*) FROM sec.t_priv) AS t_rows;

-- every mutating function refuses a non-owner with 42501 and changes nothing
SET ROLE regress_sec_stranger;
SELECT f, e.state, e.message
  FROM (VALUES
    ('create_migration',  $$SELECT softmig.create_migration('priv_new', 'sec.l_priv2', 'sec.t_priv2')$$),
    ('create (half)',     $$SELECT softmig.create_migration('priv_new', 'sec_stranger.mine', 'sec.t_priv2')$$),
    ('advance',           $$SELECT softmig.advance('priv')$$),
    ('advance (force)',   $$SELECT softmig.advance('priv', force => true, reason => 'x')$$),
    ('rollback',          $$SELECT softmig.rollback('priv')$$),
    ('drop_migration',    $$SELECT softmig.drop_migration('priv')$$),
    ('set_option',        $$SELECT softmig.set_option('priv', 'lock_timeout', '"1s"')$$),
    ('backfill',          $$CALL softmig.backfill('priv')$$),
    ('backfill_batch',    $$SELECT softmig.backfill_batch('priv')$$),
    ('hydrate',           $$SELECT softmig.hydrate('priv', '[]', pg_current_snapshot())$$),
    ('set_field_authority', $$SELECT softmig.set_field_authority('priv', 'w', 'new')$$),
    ('close_envelope',    $$SELECT softmig.close_envelope('priv', 'x')$$),
    ('quarantine',        $$SELECT softmig.quarantine('priv', '{"id": 2}', 'x')$$),
    ('release',           $$SELECT softmig.release('priv', '{"id": 1}')$$),
    ('shadow_disable',    $$SELECT softmig.shadow_disable('priv', 'x')$$),
    ('shadow_enable',     $$SELECT softmig.shadow_enable('priv')$$),
    ('repair_triggers',   $$SELECT softmig.repair_triggers('priv')$$),
    ('forget_operations', $$SELECT softmig.forget_operations('priv', '0')$$),
    ('register_reader',   $$SELECT softmig.register_reader('priv', 'x', 'bulk')$$),
    ('unregister_reader', $$SELECT softmig.unregister_reader('priv', 'reporting')$$),
    ('switch_reads',      $$SELECT softmig.switch_reads('priv', 'default', 'new')$$),
    ('create_read_view',  $$SELECT softmig.create_read_view('priv', 'sec_stranger.v_priv')$$),
    ('reset_discovery',   $$SELECT softmig.reset_discovery('priv')$$),
    ('add_invariant',     $$SELECT softmig.add_invariant('priv', 'x', 'SELECT 1 WHERE false')$$),
    ('drop_invariant',    $$SELECT softmig.drop_invariant('priv', 'x')$$),
    ('add_transition_rule', $$SELECT softmig.add_transition_rule('priv', 'sec.l_priv', 'v', NULL, 'a')$$),
    ('drop_transition_rule', $$SELECT softmig.drop_transition_rule('priv', 'sec.l_priv', 'v', NULL, 'a')$$),
    ('run_checks',        $$SELECT softmig.run_checks('priv')$$),
    ('check',             $$SELECT * FROM softmig.check('priv')$$),
    ('forget_checks',     $$SELECT softmig.forget_checks('priv', '0')$$),
    ('forget_rule_violations', $$SELECT softmig.forget_rule_violations('priv', '0')$$),
    ('create_group',      $$SELECT softmig.create_group('priv_group2', ARRAY['priv_g1', 'priv'])$$),
    ('drop_group',        $$SELECT softmig.drop_group('priv_group')$$),
    ('advance_group',     $$SELECT softmig.advance_group('priv_group')$$),
    ('rollback_group',    $$SELECT softmig.rollback_group('priv_group')$$)
  ) AS c(f, sql), LATERAL t.err(c.sql) AS e
 ORDER BY c.f COLLATE "C";
SELECT e.detail FROM t.err($$SELECT softmig.advance('priv')$$) e;
-- an unknown migration is 42704 for everyone, before any ownership question
SELECT state, message FROM t.err($$SELECT softmig.advance('no such migration')$$);
-- an application role with every privilege on both tables is not an owner either
SET ROLE regress_sec_app;
SELECT f, e.state
  FROM (VALUES
    ('create_migration', $$SELECT softmig.create_migration('priv_new', 'sec.l_priv2', 'sec.t_priv2')$$),
    ('advance',          $$SELECT softmig.advance('priv')$$),
    ('quarantine',       $$SELECT softmig.quarantine('priv', '{"id": 2}', 'x')$$),
    ('shadow_disable',   $$SELECT softmig.shadow_disable('priv', 'x')$$)
  ) AS c(f, sql), LATERAL t.err(c.sql) AS e
 ORDER BY c.f COLLATE "C";
-- an override is for owners only, even with write privileges on the table
BEGIN;
SET LOCAL softmig.override = 'not mine to override';
SELECT state, message FROM t.err($$UPDATE sec.t_priv SET v = 'no' WHERE id = 1$$);
ROLLBACK;
-- every function behind the gate (whatever exists now or later) refuses a
-- non-owner: called with the migration name and NULL for the rest
SET ROLE regress_sec_stranger;
SELECT count(*) >= 20 AS enough_gated_functions,
       count(*) FILTER (WHERE e.state OPERATOR(pg_catalog.<>) '42501') AS not_refused,
       string_agg(p.proname || ': ' || e.state, ', ') FILTER (WHERE e.state OPERATOR(pg_catalog.<>) '42501') AS which
  FROM pg_proc p,
       LATERAL (SELECT string_agg(CASE WHEN a.n = 1 AND p.proname LIKE '%\_group' THEN $$'priv_group'::text$$
                                       WHEN a.n = 1 THEN $$'priv'::text$$
                                       WHEN p.proname = 'create_group' AND a.n = 2 THEN $$ARRAY['priv']$$
                                       WHEN p.proname = 'create_migration' AND a.n = 2 THEN $$'sec.l_priv2'::regclass$$
                                       WHEN p.proname = 'create_migration' AND a.n = 3 THEN $$'sec.t_priv2'::regclass$$
                                       ELSE 'NULL::' || format_type(a.t, NULL) END, ', ' ORDER BY a.n) AS args
                  FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, n)) x,
       LATERAL t.err(format('SELECT softmig.%I(%s)', p.proname, x.args)) e
 WHERE p.pronamespace = 'softmig'::regnamespace AND p.prosrc = 'softmig_gate';
RESET ROLE;
-- nothing changed
SELECT (SELECT row(b.*) FROM sec_before b) = (SELECT row(c.*) FROM t.counts() c) AS catalog_unchanged;
SELECT (SELECT row(b.*) FROM sec_before_rows b) =
       (SELECT row((SELECT count(*) FROM softmig.quarantine), (SELECT count(*) FROM softmig.reader_registry),
                   (SELECT count(*) FROM softmig.backfill_progress),
                   (SELECT count(*) FROM sec.l_priv), (SELECT count(*) FROM sec.t_priv))) AS rows_unchanged;
SELECT softmig.state('priv'::text)::text;
-- a member of the owning role is an owner
SET ROLE regress_sec_member;
SELECT softmig.set_option('priv', 'lock_timeout', '"2s"') OPERATOR(pg_catalog.->>) 'lock_timeout' AS lock_timeout;
SELECT actor, action FROM softmig.history('priv') ORDER BY at DESC LIMIT 1;
RESET ROLE;

------------------------------------------------------------------ application roles keep exactly their access
-- (mirrored: see also the hostile-path section above)
-- softmig granted nothing to anyone while the tables went through every state
SELECT r AS role, has_table_privilege(r, 'sec.l_acct', 'SELECT') AS legacy_select,
       has_table_privilege(r, 'sec.l_acct', 'INSERT') AS legacy_insert,
       has_table_privilege(r, 'sec.t_acct', 'SELECT') AS target_select,
       has_table_privilege(r, 'sec.t_acct', 'INSERT') AS target_insert
  FROM unnest(ARRAY['regress_sec_app', 'regress_sec_app_new', 'regress_sec_stranger']) AS r ORDER BY 1;
-- the catalog is readable by everyone and writable by no one but softmig
SET ROLE regress_sec_stranger;
SELECT count(*) >= 0 AS readable FROM softmig.migrations;
SELECT f, e.state, e.message
  FROM (VALUES
    ('insert migrations', $$INSERT INTO softmig.migrations (name, legacy, target, legacy_key, target_key, forward, backward, new_only, divergent, options, created_by) VALUES ('x', 'sec.l_priv2', 'sec.t_priv2', '{id}', '{id}', '{}', '{}', '{}', '{}', '{}', 'x')$$),
    ('update migrations', $$UPDATE softmig.migrations SET state = 'cutover'$$),
    ('delete history',    $$DELETE FROM softmig.history_log$$),
    ('insert operations', $$INSERT INTO softmig.operations (migration_id, key, side, relation, state, claimed_by) VALUES (1, 'k', 'legacy', 'x', 'mirrored', 'x')$$),
    ('delete quarantine', $$DELETE FROM softmig.quarantine$$),
    ('update envelope',   $$UPDATE softmig.envelope SET open = true$$),
    ('insert readers',    $$INSERT INTO softmig.reader_registry (migration_id, reader, class, switch_group, registered_by) VALUES (1, 'x', 'bulk', 'g', 'x')$$),
    ('truncate mappings', $$TRUNCATE softmig.mappings$$),
    ('nextval',           $$SELECT nextval('softmig.migrations_id_seq')$$),
    ('internal _advance', $$SELECT softmig._advance('priv', 'new_write', 'x', true)$$),
    ('internal _set_state', $$SELECT softmig._set_state(1, 'new_write', 'advance', 'x', '{}')$$),
    ('internal _history', $$SELECT softmig._history(1, 'advance', NULL, NULL, 'x', '{}')$$),
    ('create in softmig', $$CREATE FUNCTION softmig.state(varchar) RETURNS int LANGUAGE sql AS 'SELECT 1'$$)
  ) AS c(f, sql), LATERAL t.err(c.sql) AS e
 ORDER BY c.f COLLATE "C";
RESET ROLE;
-- every relation of the catalog: PUBLIC may SELECT and nothing else, except
-- parity's digest cache (sampled key values of both tables) and the
-- connection strings of cross-database migrations: nothing at all
SELECT c.oid::regclass AS relation, c.relkind
  FROM pg_class c
 WHERE c.relnamespace = 'softmig'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND c.oid NOT IN ('softmig.parity_cache'::regclass, 'softmig.remote_conninfo'::regclass)
   AND (NOT has_table_privilege('public', c.oid, 'SELECT')
        OR has_table_privilege('public', c.oid, 'INSERT') OR has_table_privilege('public', c.oid, 'UPDATE')
        OR has_table_privilege('public', c.oid, 'DELETE') OR has_table_privilege('public', c.oid, 'TRUNCATE')
        OR has_table_privilege('public', c.oid, 'REFERENCES') OR has_table_privilege('public', c.oid, 'TRIGGER'))
 ORDER BY c.oid::regclass::text COLLATE "C";
SELECT has_table_privilege('public', 'softmig.parity_cache', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS public_any_on_parity_cache;
SELECT has_table_privilege('public', 'softmig.remote_conninfo', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS public_any_on_remote_conninfo;
SELECT c.oid::regclass AS sequence
  FROM pg_class c
 WHERE c.relnamespace = 'softmig'::regnamespace AND c.relkind = 'S'
   AND (has_sequence_privilege('public', c.oid, 'USAGE') OR has_sequence_privilege('public', c.oid, 'UPDATE'))
 ORDER BY c.oid::regclass::text COLLATE "C";
SELECT has_schema_privilege('public', 'softmig', 'USAGE') AS public_usage,
       has_schema_privilege('public', 'softmig', 'CREATE') AS public_create;
-- internal functions (names starting with _) are not executable by PUBLIC
SELECT p.oid::regprocedure AS internal_function_executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'softmig'::regnamespace AND p.proname LIKE '\_%'
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text COLLATE "C";

------------------------------------------------------------------ SECURITY DEFINER audit
-- every SECURITY DEFINER function of softmig, its settings and PUBLIC's EXECUTE
SELECT p.oid::regprocedure AS function, p.proconfig,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
       p.proowner = (SELECT extowner FROM pg_extension WHERE extname = 'softmig') AS owned_by_extension_owner
  FROM pg_proc p
 WHERE p.pronamespace = 'softmig'::regnamespace AND p.prosecdef
 ORDER BY p.oid::regprocedure::text COLLATE "C";
SELECT count(*) AS secdef_without_pinned_path
  FROM pg_proc p
 WHERE p.pronamespace = 'softmig'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
-- the event triggers that call them
SELECT evtname, evtevent, evtfoid::regproc, evtenabled FROM pg_event_trigger
 WHERE evtfoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'softmig'::regnamespace) ORDER BY evtname;
-- functions written in SQL or PL/pgSQL run with a pinned search_path; the one
-- exception is the backfill procedure (a procedure with SET cannot COMMIT),
-- whose body qualifies every name
SELECT p.oid::regprocedure AS unpinned, l.lanname
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'softmig'::regnamespace AND l.lanname NOT IN ('c', 'internal')
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
 ORDER BY p.oid::regprocedure::text COLLATE "C";
-- the gate is the only privilege switch for callers: C entry points, executable by PUBLIC
SELECT count(*) > 0 AS gated, bool_and(has_function_privilege('public', p.oid, 'EXECUTE')) AS all_public,
       bool_and(NOT p.prosecdef) AS none_security_definer
  FROM pg_proc p WHERE p.pronamespace = 'softmig'::regnamespace AND p.prosrc = 'softmig_gate';

------------------------------------------------------------------ row-level security
SET ROLE regress_sec_owner;
CREATE TABLE sec.l_rls (id int PRIMARY KEY, tenant text NOT NULL, v text);
CREATE TABLE sec.t_rls (id int PRIMARY KEY, tenant text NOT NULL, v text);
INSERT INTO sec.l_rls VALUES (1, 'a', 'one'), (2, 'b', 'two');
ALTER TABLE sec.l_rls ENABLE ROW LEVEL SECURITY;
ALTER TABLE sec.t_rls ENABLE ROW LEVEL SECURITY;     -- no policy: non-owners see nothing
CREATE POLICY tenant_a ON sec.l_rls TO regress_sec_app USING (tenant = 'a') WITH CHECK (tenant = 'a');
GRANT SELECT, INSERT, UPDATE, DELETE ON sec.l_rls TO regress_sec_app;
GRANT SELECT ON sec.t_rls TO regress_sec_app;
SELECT softmig.create_migration('rls', 'sec.l_rls', 'sec.t_rls');
SELECT softmig.advance('rls');
CALL softmig.backfill('rls');
SET ROLE regress_sec_app;
SELECT * FROM sec.l_rls ORDER BY id;                  -- the policy applies to the application
UPDATE sec.l_rls SET v = v || '!';                    -- touches its own row only
INSERT INTO sec.l_rls VALUES (3, 'a', 'three');
SELECT * FROM t.err($$INSERT INTO sec.l_rls VALUES (4, 'b', 'not mine')$$);
SELECT count(*) AS target_rows_visible_to_app FROM sec.t_rls;
SET ROLE regress_sec_owner;
SELECT * FROM sec.t_rls ORDER BY id;                  -- the mirror is complete and exact
-- FORCE ROW LEVEL SECURITY would subject the mirror to the policies (and
-- filter it): softmig refuses it on a table in a migration ...
SELECT state, message FROM t.err($$ALTER TABLE sec.t_rls FORCE ROW LEVEL SECURITY$$);
-- ... refuses to define a migration on a table that has it ...
CREATE TABLE sec.l_rls2 (id int PRIMARY KEY, v text);
CREATE TABLE sec.t_rls2 (id int PRIMARY KEY, v text);
ALTER TABLE sec.t_rls2 ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY everything ON sec.t_rls2 USING (true);
SELECT state, message FROM t.err($$SELECT softmig.create_migration('rls2', 'sec.l_rls2', 'sec.t_rls2')$$);
RESET ROLE;
-- ... and when it is set anyway (event triggers do not fire under
-- session_replication_role = replica), a mirrored write fails loudly and
-- writes nothing, instead of being filtered
SET session_replication_role = replica;
ALTER TABLE sec.t_rls FORCE ROW LEVEL SECURITY;
RESET session_replication_role;
SET ROLE regress_sec_app;
SELECT state, message FROM t.err($$INSERT INTO sec.l_rls VALUES (5, 'a', 'five')$$);
SELECT state, message FROM t.err($$UPDATE sec.l_rls SET v = 'x' WHERE id = 1$$);
SET ROLE regress_sec_owner;
SELECT * FROM sec.l_rls ORDER BY id;
ALTER TABLE sec.t_rls NO FORCE ROW LEVEL SECURITY;
SET ROLE regress_sec_app;
INSERT INTO sec.l_rls VALUES (5, 'a', 'five');
SET ROLE regress_sec_owner;
SELECT * FROM sec.t_rls ORDER BY id;
-- and the other way round: FORCE on legacy while the target is the authority
SELECT softmig.advance('rls');
RESET ROLE;
SET session_replication_role = replica;
ALTER TABLE sec.l_rls FORCE ROW LEVEL SECURITY;
RESET session_replication_role;
SET ROLE regress_sec_owner;
SELECT state, message FROM t.err($$UPDATE sec.t_rls SET v = 'y' WHERE id = 2$$);
ALTER TABLE sec.l_rls NO FORCE ROW LEVEL SECURITY;
UPDATE sec.t_rls SET v = 'y' WHERE id = 2;
SELECT * FROM sec.l_rls ORDER BY id;
RESET ROLE;

------------------------------------------------------------------ clean-up
SET client_min_messages = warning;
DROP EXTENSION softmig CASCADE;      -- drops every migration and trigger made here
CREATE EXTENSION softmig;
DROP SCHEMA sec, sec_stranger, evil, sec_log CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_sec_owner, regress_sec_member, regress_sec_app, regress_sec_app_new,
              regress_sec_stranger, regress_sec_evil;
DROP ROLE regress_sec_owner, regress_sec_member, regress_sec_app, regress_sec_app_new,
          regress_sec_stranger, regress_sec_evil;
SELECT count(*) AS migrations_left FROM softmig.migrations;
