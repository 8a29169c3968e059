-- The trust rule: code softmig evaluates as a table owner (or the catalog
-- owner) must be owned by that role, a member of it, or a superuser.  The
-- owner of one table must not be able to make softmig run his code as the
-- owner of the other table.
\pset null '(null)'
SET client_min_messages = warning;
CREATE ROLE tr_bob LOGIN;
CREATE ROLE tr_mallory LOGIN;
CREATE SCHEMA tr;
GRANT USAGE, CREATE ON SCHEMA tr TO tr_bob, tr_mallory;
SET search_path = tr, public;

-- t.escalated(): did anyone become superuser?
CREATE FUNCTION t.escalated() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(rolname, ', ' ORDER BY rolname), 'nobody')
      FROM pg_roles WHERE rolname LIKE 'tr\_%' AND rolsuper
$$;

-- bob's hostile code: a cast function that tries to make its caller's
-- identity grant bob superuser
CREATE FUNCTION tr.make_hostile(who text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format($$
        CREATE TYPE tr.%1$s_enum AS ENUM ('a', 'b');
        CREATE FUNCTION tr.%1$s_out(tr.%1$s_enum) RETURNS text LANGUAGE plpgsql AS $b$
        BEGIN
            BEGIN
                EXECUTE 'ALTER ROLE tr_%1$s SUPERUSER';
            EXCEPTION WHEN OTHERS THEN NULL;
            END;
            RETURN pg_catalog.textin(pg_catalog.enum_out($1));
        END $b$;
        CREATE FUNCTION tr.%1$s_in(text) RETURNS tr.%1$s_enum LANGUAGE plpgsql AS $b$
        BEGIN
            BEGIN
                EXECUTE 'ALTER ROLE tr_%1$s SUPERUSER';
            EXCEPTION WHEN OTHERS THEN NULL;
            END;
            RETURN pg_catalog.enum_in(pg_catalog.textout($1), 'tr.%1$s_enum'::regtype);
        END $b$;
    $$, who);
END $f$;
GRANT EXECUTE ON FUNCTION tr.make_hostile(text) TO tr_bob, tr_mallory;

------------------------------------------------------------------ the reported exploit
-- bob owns only the legacy table; the target is a superuser's
CREATE TABLE tr.leg (id int PRIMARY KEY, status text);
ALTER TABLE tr.leg OWNER TO tr_bob;
CREATE TABLE tr.tgt (id int PRIMARY KEY, status text);
INSERT INTO tr.leg VALUES (1, 'a');
SELECT softmig.create_migration('tr_m', 'tr.leg', 'tr.tgt');
SELECT softmig.advance('tr_m');
SET ROLE tr_bob;
SELECT tr.make_hostile('bob');
CREATE CAST (tr.bob_enum AS text) WITH FUNCTION tr.bob_out(tr.bob_enum) AS ASSIGNMENT;
CREATE CAST (text AS tr.bob_enum) WITH FUNCTION tr.bob_in(text) AS ASSIGNMENT;
-- retyping the mapped column to his enum is refused: the next mirrored write
-- would call bob_out as the target's owner
SELECT state, message, detail FROM t.err('ALTER TABLE tr.leg ALTER COLUMN status TYPE tr.bob_enum USING status::tr.bob_enum');
INSERT INTO tr.leg VALUES (2, 'b');
RESET ROLE;
SELECT t.escalated();
SELECT * FROM tr.tgt ORDER BY id;

------------------------------------------------------------------ a cast that appears later
-- with plain I/O casts the retype is harmless and accepted ...
SET ROLE tr_bob;
DROP CAST (tr.bob_enum AS text);
DROP CAST (text AS tr.bob_enum);
CREATE CAST (text AS tr.bob_enum) WITH INOUT AS ASSIGNMENT;
ALTER TABLE tr.leg ALTER COLUMN status TYPE tr.bob_enum USING status::tr.bob_enum;
INSERT INTO tr.leg VALUES (3, 'a');
-- ... and a hostile cast created afterwards is refused by the DDL guard too
SELECT state, message FROM t.err('CREATE CAST (tr.bob_enum AS text) WITH FUNCTION tr.bob_out(tr.bob_enum) AS ASSIGNMENT');
RESET ROLE;
SELECT t.escalated();
-- where the DDL guard does not see it (event triggers off, as under
-- session_replication_role = replica), every path refuses at run time:
ALTER EVENT TRIGGER softmig_ddl_code DISABLE;
SET ROLE tr_bob;
CREATE CAST (tr.bob_enum AS text) WITH FUNCTION tr.bob_out(tr.bob_enum) AS ASSIGNMENT;
RESET ROLE;
ALTER EVENT TRIGGER softmig_ddl_code ENABLE;
\c -
SET client_min_messages = warning;
SET search_path = tr, public;
-- a mirrored write (plans prepared afresh in this session)
SET ROLE tr_bob;
SELECT state, message FROM t.err($$INSERT INTO tr.leg VALUES (4, 'a')$$);
RESET ROLE;
SELECT t.escalated();
-- the backfill
SELECT state, message FROM t.err($$SELECT softmig.backfill_batch('tr_m', 10)$$);
SELECT t.escalated();
-- parity evaluates the forward mapping as the target's owner for keys
SELECT state, message FROM t.err($$SELECT count(*) FROM softmig.parity('tr_m')$$);
SELECT t.escalated();
-- a plan kept from before the cast existed is re-planned when its table
-- changes, and then refused too
SELECT state, message FROM t.err($$SELECT softmig.set_option('tr_m', 'lock_timeout', '"4s"')$$);
SELECT t.escalated();
SET ROLE tr_bob;
DROP CAST (tr.bob_enum AS text);
RESET ROLE;
INSERT INTO tr.leg VALUES (4, 'a');
SELECT * FROM tr.tgt ORDER BY id;
SELECT softmig.rollback('tr_m');
SELECT softmig.drop_migration('tr_m');

------------------------------------------------------------------ the other way: target owner to legacy owner
-- mallory owns only the target; legacy is a superuser's; her code would run
-- in the projection (new_write) as legacy's owner
CREATE TABLE tr.leg2 (id int PRIMARY KEY, status text);
CREATE TABLE tr.tgt2 (id int PRIMARY KEY, status text);
ALTER TABLE tr.tgt2 OWNER TO tr_mallory;
SELECT softmig.create_migration('tr_m2', 'tr.leg2', 'tr.tgt2');
SELECT softmig.advance('tr_m2');
SELECT softmig.advance('tr_m2', force => true, reason => 'test');
SET ROLE tr_mallory;
SELECT tr.make_hostile('mallory');
CREATE CAST (tr.mallory_enum AS text) WITH FUNCTION tr.mallory_out(tr.mallory_enum) AS ASSIGNMENT;
CREATE CAST (text AS tr.mallory_enum) WITH FUNCTION tr.mallory_in(text) AS ASSIGNMENT;
SELECT state, message, detail FROM t.err('ALTER TABLE tr.tgt2 ALTER COLUMN status TYPE tr.mallory_enum USING status::tr.mallory_enum');
INSERT INTO tr.tgt2 VALUES (1, 'a');
RESET ROLE;
SELECT t.escalated();
SELECT * FROM tr.leg2;
-- defined with the hostile column from the start: refused at create_migration
SELECT softmig.rollback('tr_m2');
SELECT softmig.rollback('tr_m2');
SELECT softmig.drop_migration('tr_m2');
ALTER EVENT TRIGGER softmig_ddl_altered DISABLE;
SET ROLE tr_mallory;
ALTER TABLE tr.tgt2 ALTER COLUMN status TYPE tr.mallory_enum USING status::tr.mallory_enum;
RESET ROLE;
ALTER EVENT TRIGGER softmig_ddl_altered ENABLE;
SELECT state, message FROM t.err($$SELECT softmig.create_migration('tr_m2', 'tr.leg2', 'tr.tgt2')$$);
SELECT count(*) AS migrations FROM softmig.migrations WHERE name = 'tr_m2';
SELECT t.escalated();

------------------------------------------------------------------ domains, operators, aggregates, triggers
-- a domain of bob's on the superuser's target: its CHECK would run as the
-- superuser on every mirrored write
CREATE TABLE tr.leg3 (id int PRIMARY KEY, v int);
ALTER TABLE tr.leg3 OWNER TO tr_bob;
SET ROLE tr_bob;
CREATE FUNCTION tr.bob_check(int) RETURNS boolean LANGUAGE sql AS 'SELECT $1 >= 0';
CREATE DOMAIN tr.bob_pos AS int CHECK (tr.bob_check(VALUE));
CREATE FUNCTION tr.bob_plus(int, int) RETURNS int LANGUAGE sql AS 'SELECT $1 + $2';
CREATE OPERATOR tr.<+> (LEFTARG = int, RIGHTARG = int, FUNCTION = tr.bob_plus);
CREATE AGGREGATE tr.bob_sum(int) (SFUNC = tr.bob_plus, STYPE = int);
CREATE FUNCTION tr.bob_definer(int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT $1 * 2';
RESET ROLE;
CREATE TABLE tr.tgt3 (id int PRIMARY KEY, v tr.bob_pos);
SELECT state, message FROM t.err($$SELECT softmig.create_migration('tr_m3', 'tr.leg3', 'tr.tgt3')$$);
ALTER TABLE tr.tgt3 ALTER COLUMN v TYPE int;
-- a mapping through bob's operator, aggregate or function, evaluated as the
-- target's owner (a superuser)
SELECT state, message FROM t.err($$SELECT softmig.create_migration('tr_m3', 'tr.leg3', 'tr.tgt3',
    forward => '{"v": "v OPERATOR(tr.<+>) 1"}', backward => '{"v": "v - 1"}')$$);
SELECT state, message FROM t.err($$SELECT softmig.create_migration('tr_m3', 'tr.leg3', 'tr.tgt3',
    forward => '{"v": "(SELECT tr.bob_sum(x) FROM (VALUES (v)) s(x))"}')$$);
SELECT state, message FROM t.err($$SELECT softmig.create_migration('tr_m3', 'tr.leg3', 'tr.tgt3',
    forward => '{"v": "tr.bob_check(v)::int"}')$$);
-- his own code where it runs as him (the backward mapping writes his table),
-- and a SECURITY DEFINER function (it runs as its owner), are fine
SELECT softmig.create_migration('tr_m3', 'tr.leg3', 'tr.tgt3',
    forward => '{"v": "tr.bob_definer(v)"}', backward => '{"v": "v OPERATOR(tr.<+>) 0"}');
SELECT softmig.advance('tr_m3');
INSERT INTO tr.leg3 VALUES (1, 21);
SELECT * FROM tr.tgt3;
-- an invariant runs as the legacy table's owner (bob): his own code is fine
-- there, mallory's is not
SELECT softmig.add_invariant('tr_m3', 'pos', 'SELECT id FROM tr.tgt3 WHERE NOT tr.bob_check(v)');
SET ROLE tr_mallory;
CREATE FUNCTION tr.mallory_check(int) RETURNS boolean LANGUAGE sql AS 'SELECT $1 >= 0';
RESET ROLE;
SELECT state, message FROM t.err($$SELECT softmig.add_invariant('tr_m3', 'pos2', 'SELECT id FROM tr.tgt3 WHERE NOT tr.mallory_check(v)')$$);
-- a transition rule's requires runs as the ruled table's owner (a superuser)
SELECT state, message FROM t.err($$SELECT softmig.add_transition_rule('tr_m3', 'tr.tgt3', 'v', NULL, '1', 'tr.bob_check(v)')$$);
-- a trigger of bob's on the target would run as its owner on mirrored writes
CREATE FUNCTION tr.audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
ALTER FUNCTION tr.audit() OWNER TO tr_bob;
SELECT state, message FROM t.err('CREATE TRIGGER bob_audit AFTER INSERT ON tr.tgt3 FOR EACH ROW EXECUTE FUNCTION tr.audit()');
-- a role that is a member of the identity may own the code
GRANT tr_bob TO tr_mallory;
ALTER FUNCTION tr.audit() OWNER TO tr_mallory;
CREATE TRIGGER mallory_audit AFTER INSERT ON tr.leg3 FOR EACH ROW EXECUTE FUNCTION tr.audit();
SELECT softmig.advance('tr_m3', force => true, reason => 'test');
INSERT INTO tr.tgt3 VALUES (2, 42);
SELECT * FROM tr.leg3 ORDER BY id;
SELECT t.escalated();

SELECT softmig.rollback('tr_m3');
SELECT softmig.rollback('tr_m3');
SELECT softmig.drop_migration('tr_m3');
RESET search_path;
DROP SCHEMA tr CASCADE;
DROP FUNCTION t.escalated();
DROP ROLE tr_bob, tr_mallory;
