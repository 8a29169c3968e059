/* softmig--0.1.0.sql: soft migrations of live tables */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION softmig" to load this file. \quit

-------------------------------------------------------------------------------
-- The state type: one byte, ordered legacy < mirrored < new_write < new_read
-- < cutover.
-------------------------------------------------------------------------------
CREATE TYPE @extschema@.state;

CREATE FUNCTION @extschema@.state_in(pg_catalog.cstring) RETURNS @extschema@.state
    AS 'MODULE_PATHNAME', 'softmig_state_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.state_out(@extschema@.state) RETURNS pg_catalog.cstring
    AS 'MODULE_PATHNAME', 'softmig_state_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.state_recv(pg_catalog.internal) RETURNS @extschema@.state
    AS 'MODULE_PATHNAME', 'softmig_state_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.state_send(@extschema@.state) RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'softmig_state_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE @extschema@.state (
    INPUT = @extschema@.state_in,
    OUTPUT = @extschema@.state_out,
    RECEIVE = @extschema@.state_recv,
    SEND = @extschema@.state_send,
    INTERNALLENGTH = 1,
    PASSEDBYVALUE,
    ALIGNMENT = char,
    STORAGE = plain
);
COMMENT ON TYPE @extschema@.state IS
    'migration state: legacy < mirrored < new_write < new_read < cutover';
COMMENT ON FUNCTION @extschema@.state_in(pg_catalog.cstring) IS 'input function of softmig.state';
COMMENT ON FUNCTION @extschema@.state_out(@extschema@.state) IS 'output function of softmig.state';
COMMENT ON FUNCTION @extschema@.state_recv(pg_catalog.internal) IS 'binary input function of softmig.state';
COMMENT ON FUNCTION @extschema@.state_send(@extschema@.state) IS 'binary output function of softmig.state';

CREATE FUNCTION @extschema@.state_eq(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_ne(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_lt(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_le(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_gt(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_ge(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_cmp(@extschema@.state, @extschema@.state) RETURNS integer
    AS 'MODULE_PATHNAME', 'softmig_state_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_hash(@extschema@.state) RETURNS integer
    AS 'MODULE_PATHNAME', 'softmig_state_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_hash_extended(@extschema@.state, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_state_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION @extschema@.state_eq(@extschema@.state, @extschema@.state) IS 'softmig.state equality';
COMMENT ON FUNCTION @extschema@.state_ne(@extschema@.state, @extschema@.state) IS 'softmig.state inequality';
COMMENT ON FUNCTION @extschema@.state_lt(@extschema@.state, @extschema@.state) IS 'softmig.state less than';
COMMENT ON FUNCTION @extschema@.state_le(@extschema@.state, @extschema@.state) IS 'softmig.state less than or equal';
COMMENT ON FUNCTION @extschema@.state_gt(@extschema@.state, @extschema@.state) IS 'softmig.state greater than';
COMMENT ON FUNCTION @extschema@.state_ge(@extschema@.state, @extschema@.state) IS 'softmig.state greater than or equal';
COMMENT ON FUNCTION @extschema@.state_cmp(@extschema@.state, @extschema@.state) IS 'btree comparison support for softmig.state';
COMMENT ON FUNCTION @extschema@.state_hash(@extschema@.state) IS 'hash support for softmig.state';
COMMENT ON FUNCTION @extschema@.state_hash_extended(@extschema@.state, bigint) IS 'seeded hash support for softmig.state';

CREATE OPERATOR @extschema@.= (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_eq,
    COMMUTATOR = OPERATOR(@extschema@.=), NEGATOR = OPERATOR(@extschema@.<>),
    RESTRICT = pg_catalog.eqsel, JOIN = pg_catalog.eqjoinsel, HASHES, MERGES);
CREATE OPERATOR @extschema@.<> (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_ne,
    COMMUTATOR = OPERATOR(@extschema@.<>), NEGATOR = OPERATOR(@extschema@.=),
    RESTRICT = pg_catalog.neqsel, JOIN = pg_catalog.neqjoinsel);
CREATE OPERATOR @extschema@.< (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_lt,
    COMMUTATOR = OPERATOR(@extschema@.>), NEGATOR = OPERATOR(@extschema@.>=),
    RESTRICT = pg_catalog.scalarltsel, JOIN = pg_catalog.scalarltjoinsel);
CREATE OPERATOR @extschema@.<= (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_le,
    COMMUTATOR = OPERATOR(@extschema@.>=), NEGATOR = OPERATOR(@extschema@.>),
    RESTRICT = pg_catalog.scalarlesel, JOIN = pg_catalog.scalarlejoinsel);
CREATE OPERATOR @extschema@.> (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_gt,
    COMMUTATOR = OPERATOR(@extschema@.<), NEGATOR = OPERATOR(@extschema@.<=),
    RESTRICT = pg_catalog.scalargtsel, JOIN = pg_catalog.scalargtjoinsel);
CREATE OPERATOR @extschema@.>= (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_ge,
    COMMUTATOR = OPERATOR(@extschema@.<=), NEGATOR = OPERATOR(@extschema@.<),
    RESTRICT = pg_catalog.scalargesel, JOIN = pg_catalog.scalargejoinsel);

CREATE OPERATOR CLASS @extschema@.state_ops
    DEFAULT FOR TYPE @extschema@.state USING btree AS
        OPERATOR 1 @extschema@.<,
        OPERATOR 2 @extschema@.<=,
        OPERATOR 3 @extschema@.=,
        OPERATOR 4 @extschema@.>=,
        OPERATOR 5 @extschema@.>,
        FUNCTION 1 @extschema@.state_cmp(@extschema@.state, @extschema@.state);

CREATE OPERATOR CLASS @extschema@.state_hash_ops
    DEFAULT FOR TYPE @extschema@.state USING hash AS
        OPERATOR 1 @extschema@.=,
        FUNCTION 1 @extschema@.state_hash(@extschema@.state),
        FUNCTION 2 @extschema@.state_hash_extended(@extschema@.state, bigint);

CREATE CAST (@extschema@.state AS text) WITH INOUT AS ASSIGNMENT;
CREATE CAST (text AS @extschema@.state) WITH INOUT;

CREATE FUNCTION @extschema@.is_legal_transition(from_state @extschema@.state, to_state @extschema@.state)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_is_legal_transition' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.is_legal_transition(@extschema@.state, @extschema@.state) IS
    'true when a migration may move from from_state to to_state: one step forward, or one step back out of mirrored, new_write or new_read';

CREATE TYPE @extschema@.side AS ENUM ('legacy', 'new');
COMMENT ON TYPE @extschema@.side IS 'a side of a migration: the legacy table or the new (target) table';

-------------------------------------------------------------------------------
-- Catalog
-------------------------------------------------------------------------------
CREATE SEQUENCE @extschema@.migrations_id_seq AS integer;

CREATE TABLE @extschema@.migrations (
    id               integer PRIMARY KEY
                     DEFAULT pg_catalog.nextval('@extschema@.migrations_id_seq'::pg_catalog.regclass),
    name             text NOT NULL UNIQUE,
    legacy           regclass NOT NULL,
    target           regclass NOT NULL,
    legacy_key       text[] NOT NULL,
    target_key       text[] NOT NULL,
    forward          jsonb NOT NULL,
    backward         jsonb NOT NULL,
    new_only         text[] NOT NULL,
    divergent        text[] NOT NULL,
    options          jsonb NOT NULL,
    state            @extschema@.state NOT NULL DEFAULT 'legacy',
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       name NOT NULL,
    state_changed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE @extschema@.migrations_id_seq OWNED BY @extschema@.migrations.id;
COMMENT ON TABLE @extschema@.migrations IS 'softmig: one row per migration (definition and current state)';

CREATE TABLE @extschema@.mappings (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    direction    text NOT NULL CHECK (direction OPERATOR(pg_catalog.=) ANY (ARRAY['forward', 'backward'])),
    column_name  name NOT NULL,
    ordinal      integer NOT NULL,
    expression   text NOT NULL,
    is_default   boolean NOT NULL,
    PRIMARY KEY (migration_id, direction, column_name)
);
COMMENT ON TABLE @extschema@.mappings IS
    'softmig: resolved field mappings; forward rows feed target columns from legacy, backward rows feed legacy columns from target';

CREATE TABLE @extschema@.history_log (
    id           bigserial PRIMARY KEY,
    migration_id integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    actor        name NOT NULL,
    action       text NOT NULL,
    from_state   @extschema@.state,
    to_state     @extschema@.state,
    reason       text,
    detail       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ON @extschema@.history_log (migration_id, id);
COMMENT ON TABLE @extschema@.history_log IS
    'softmig: audit history of every change to a migration (state changes, overrides, ...)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.migrations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.migrations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.mappings', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.history_log', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.history_log_id_seq', '');

REVOKE ALL ON @extschema@.migrations, @extschema@.mappings, @extschema@.history_log FROM PUBLIC;
GRANT SELECT ON @extschema@.migrations, @extschema@.mappings, @extschema@.history_log TO PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

-------------------------------------------------------------------------------
-- Internal C helpers (not for direct use)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._check_expression(expr text, what text) RETURNS void
    AS 'MODULE_PATHNAME', 'softmig_check_expression_sql' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION @extschema@._check_expression(text, text) IS
    'internal: raise 42601 unless expr is exactly one scalar SQL expression';

CREATE FUNCTION @extschema@._actor() RETURNS name
    AS 'MODULE_PATHNAME', 'softmig_actor' LANGUAGE C STABLE;
COMMENT ON FUNCTION @extschema@._actor() IS
    'internal: the role recorded as actor (the caller of the current gated function)';

CREATE FUNCTION @extschema@._is_owner(legacy regclass, target regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_is_owner' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._is_owner(regclass, regclass) IS
    'internal: may the caller manage a migration between these tables (owner of both, or superuser)';

CREATE FUNCTION @extschema@._invalidate(legacy regclass, target regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'softmig_invalidate' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._invalidate(regclass, regclass) IS
    'internal: make every backend reload the migration of these tables at its next lock on them';

CREATE FUNCTION @extschema@._validate(migration_id integer) RETURNS void
    AS 'MODULE_PATHNAME', 'softmig_validate' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._validate(integer) IS
    'internal: prepare every statement the triggers of a migration will run, as the table owners';

CREATE FUNCTION @extschema@._guard_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_guard_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._guard_trigger() IS
    'internal: BEFORE statement trigger refusing writes to the non-authoritative table and TRUNCATE';

CREATE FUNCTION @extschema@._write_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_write_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._write_trigger() IS
    'internal: AFTER statement trigger mirroring or projecting a statement''s rows to the other table';

-------------------------------------------------------------------------------
-- Internal SQL helpers
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._migration(p_name text) RETURNS @extschema@.migrations
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
BEGIN
    SELECT * INTO m FROM @extschema@.migrations WHERE name OPERATOR(pg_catalog.=) p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" does not exist', p_name),
            HINT = 'softmig.migrations lists the migrations of this database.';
    END IF;
    RETURN m;
END $$;
COMMENT ON FUNCTION @extschema@._migration(text) IS
    'internal: the catalog row of a migration by name, 42704 if unknown';

CREATE FUNCTION @extschema@._tables(p_id integer) RETURNS SETOF regclass
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.relid::pg_catalog.regclass
      FROM @extschema@.migrations m,
           LATERAL (SELECT m.legacy::pg_catalog.oid AS relid
                    UNION
                    SELECT relid FROM pg_catalog.pg_partition_tree(m.legacy)
                    UNION
                    SELECT m.target::pg_catalog.oid
                    UNION
                    SELECT relid FROM pg_catalog.pg_partition_tree(m.target)) t
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._tables(integer) IS
    'internal: every relation (tables and their partitions) of a migration';

CREATE FUNCTION @extschema@._install_triggers(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r regclass;
    p text := 'softmig_' OPERATOR(pg_catalog.||) p_id::text;
BEGIN
    FOR r IN SELECT * FROM @extschema@._tables(p_id) LOOP
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._guard_trigger(%L)',
            p OPERATOR(pg_catalog.||) '_guard', r, p_id);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS softmig_new '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._write_trigger(%L)',
            p OPERATOR(pg_catalog.||) '_ins', r, p_id);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS softmig_old NEW TABLE AS softmig_new '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._write_trigger(%L)',
            p OPERATOR(pg_catalog.||) '_upd', r, p_id);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS softmig_old '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._write_trigger(%L)',
            p OPERATOR(pg_catalog.||) '_del', r, p_id);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._install_triggers(integer) IS
    'internal: create the guard and write triggers of a migration on both tables and all their partitions';

CREATE FUNCTION @extschema@._remove_triggers(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT t.tgname, t.tgrelid::pg_catalog.regclass AS rel
               FROM pg_catalog.pg_trigger t
              WHERE t.tgrelid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT @extschema@._tables(p_id)::pg_catalog.oid))
                AND t.tgname OPERATOR(pg_catalog.~) ('^softmig_' OPERATOR(pg_catalog.||) p_id::text OPERATOR(pg_catalog.||) '_(guard|ins|upd|del)$')
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._remove_triggers(integer) IS
    'internal: drop every softmig trigger of a migration';

CREATE FUNCTION @extschema@._trigger_health(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH m AS (SELECT * FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id),
    expected AS (
        SELECT r AS rel, 'softmig_' OPERATOR(pg_catalog.||) p_id::text OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s AS tgname
          FROM m, @extschema@._tables(p_id) AS r, unnest(ARRAY['guard', 'ins', 'upd', 'del']) AS s
         WHERE m.state OPERATOR(@extschema@.<>) 'legacy'),
    problems AS (
        SELECT e.rel::text AS rel, e.tgname,
               CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END AS problem
          FROM expected e
          LEFT JOIN pg_catalog.pg_trigger t
            ON t.tgrelid OPERATOR(pg_catalog.=) e.rel AND t.tgname OPERATOR(pg_catalog.=) e.tgname
         WHERE t.oid IS NULL OR t.tgenabled OPERATOR(pg_catalog.=) 'D')
    SELECT pg_catalog.jsonb_build_object(
        'expected', (SELECT pg_catalog.count(*) FROM expected),
        'healthy', NOT EXISTS (SELECT 1 FROM problems),
        'problems', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(problems)) FROM problems), '[]'))
$$;
COMMENT ON FUNCTION @extschema@._trigger_health(integer) IS
    'internal: which softmig triggers of a migration are missing or disabled';

CREATE FUNCTION @extschema@._history(p_id integer, p_action text, p_from @extschema@.state,
                                     p_to @extschema@.state, p_reason text, p_detail jsonb)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO @extschema@.history_log (migration_id, actor, action, from_state, to_state, reason, detail)
    VALUES (p_id, @extschema@._actor(), p_action, p_from, p_to, p_reason, COALESCE(p_detail, '{}'));
$$;
COMMENT ON FUNCTION @extschema@._history(integer, text, @extschema@.state, @extschema@.state, text, jsonb) IS
    'internal: append one audit row for a migration';

CREATE FUNCTION @extschema@._set_state(p_id integer, p_to @extschema@.state, p_action text,
                                       p_reason text, p_detail jsonb)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    v_timeout text;
    v_old_timeout text := pg_catalog.current_setting('lock_timeout');
    v_legal text;
BEGIN
    -- serialize state changes of one migration
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id FOR UPDATE;

    IF NOT @extschema@.is_legal_transition(m.state, p_to) THEN
        SELECT pg_catalog.string_agg(s::text, ', ' ORDER BY s) INTO v_legal
          FROM pg_catalog.unnest(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover']::@extschema@.state[]) AS s
         WHERE @extschema@.is_legal_transition(m.state, s);
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('illegal state transition from %s to %s for migration "%s"',
                                        m.state, p_to, m.name),
            DETAIL = CASE WHEN v_legal IS NULL
                          THEN pg_catalog.format('No move is legal from %s.', m.state)
                          ELSE pg_catalog.format('From %s the legal moves are: %s.', m.state, v_legal) END,
            HINT = 'States move one step at a time; cutover is final.';
    END IF;

    -- Lock out writers on both tables (readers are not blocked): in-flight
    -- writers finish under the old state, later ones see the new one.
    v_timeout := COALESCE(m.options OPERATOR(pg_catalog.->>) 'lock_timeout', '5s');
    PERFORM pg_catalog.set_config('lock_timeout', v_timeout, true);
    BEGIN
        EXECUTE pg_catalog.format('LOCK TABLE %s, %s IN SHARE ROW EXCLUSIVE MODE', m.legacy, m.target);
    EXCEPTION WHEN lock_not_available THEN
        PERFORM pg_catalog.set_config('lock_timeout', v_old_timeout, true);
        RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
            MESSAGE = pg_catalog.format('could not lock tables %s and %s to move migration "%s" from %s to %s',
                                        m.legacy, m.target, m.name, m.state, p_to),
            DETAIL = pg_catalog.format('Writers kept a conflicting lock for longer than lock_timeout (%s).', v_timeout),
            HINT = 'Retry the call; nothing was changed. Long transactions writing either table delay state changes; option lock_timeout sets how long to wait.';
    END;
    PERFORM pg_catalog.set_config('lock_timeout', v_old_timeout, true);

    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        PERFORM @extschema@._install_triggers(p_id);
    ELSIF p_to OPERATOR(@extschema@.=) 'legacy' THEN
        PERFORM @extschema@._remove_triggers(p_id);
    END IF;

    UPDATE @extschema@.migrations
       SET state = p_to, state_changed_at = pg_catalog.now()
     WHERE id OPERATOR(pg_catalog.=) p_id;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(p_id, p_action, m.state, p_to, p_reason, p_detail);
    RETURN p_to;
END $$;
COMMENT ON FUNCTION @extschema@._set_state(integer, @extschema@.state, text, text, jsonb) IS
    'internal: the one function that changes a migration''s state: checks legality, locks both tables, retargets triggers, records history';

-------------------------------------------------------------------------------
-- Definition
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._create_migration(name text, legacy regclass, target regclass,
    key text[], forward jsonb, backward jsonb, new_only text[], divergent text[], options jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := name;
    v_id integer;
    v_key text[] := key;
    v_tkey text[];
    v_fwd jsonb := COALESCE(forward, '{}');
    v_bwd jsonb := COALESCE(backward, '{}');
    v_new_only text[] := COALESCE(new_only, '{}');
    v_divergent text[] := COALESCE(divergent, '{}');
    v_options jsonb := COALESCE(options, '{}');
    v_other text;
    r record;
    k text;
    e text;
    t regclass;
    i integer;
BEGIN
    IF v_name IS NULL OR pg_catalog.btrim(v_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'migration name must not be empty';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already exists', v_name);
    END IF;

    -- the two tables
    FOREACH t IN ARRAY ARRAY[legacy, target] LOOP
        SELECT c.relkind, c.relispartition, c.relpersistence INTO r
          FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) t;
        IF r.relkind OPERATOR(pg_catalog.<>) ALL (ARRAY['r', 'p']::"char"[]) THEN
            RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
                MESSAGE = pg_catalog.format('"%s" is not a table', t),
                DETAIL = 'Only ordinary and partitioned tables can take part in a migration.';
        END IF;
        IF r.relispartition THEN
            RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
                MESSAGE = pg_catalog.format('table %s is a partition', t),
                HINT = 'Migrate its partitioned table instead; writes through the parent would bypass a partition''s migration.';
        END IF;
        IF r.relpersistence OPERATOR(pg_catalog.=) 't' THEN
            RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
                MESSAGE = pg_catalog.format('table %s is a temporary table', t);
        END IF;
        SELECT m.name INTO v_other FROM @extschema@.migrations m
         WHERE t OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[]);
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('table %s already takes part in migration "%s"', t, v_other),
                HINT = 'A table can be in one migration at a time.';
        END IF;
    END LOOP;
    IF legacy OPERATOR(pg_catalog.=) target THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'legacy and target must be different tables';
    END IF;

    -- the legacy key
    IF v_key IS NULL THEN
        SELECT pg_catalog.array_agg(a.attname::text ORDER BY x.n) INTO v_key
          FROM pg_catalog.pg_index ix
         CROSS JOIN LATERAL pg_catalog.unnest(ix.indkey) WITH ORDINALITY AS x(attnum, n)
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ix.indrelid
                                        AND a.attnum OPERATOR(pg_catalog.=) x.attnum
         WHERE ix.indrelid OPERATOR(pg_catalog.=) legacy AND ix.indisprimary;
        IF v_key IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('table %s has no primary key', legacy),
                HINT = 'Pass key => ARRAY[...] naming columns with a unique index.';
        END IF;
    END IF;
    IF pg_catalog.cardinality(v_key) OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'key must name at least one column';
    END IF;
    IF (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(v_key) x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_key) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'key names a column twice';
    END IF;
    FOREACH k IN ARRAY v_key LOOP
        PERFORM @extschema@._require_column(legacy, k, 'key column', true);
    END LOOP;

    -- mapping arguments
    IF pg_catalog.jsonb_typeof(v_fwd) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'forward must be a jsonb object {"target_column": "expression over legacy columns"}';
    END IF;
    IF pg_catalog.jsonb_typeof(v_bwd) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'backward must be a jsonb object {"legacy_column": "expression over target columns"}';
    END IF;
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(v_fwd) j LOOP
        PERFORM @extschema@._require_column(target, k, 'forward mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('forward mapping of column "%s" must be a string holding an SQL expression', k);
        END IF;
        PERFORM @extschema@._check_expression(v_fwd OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('forward mapping of column "%s"', k));
    END LOOP;
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(v_bwd) j LOOP
        PERFORM @extschema@._require_column(legacy, k, 'backward mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('backward mapping of column "%s" must be a string holding an SQL expression', k);
        END IF;
        PERFORM @extschema@._check_expression(v_bwd OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('backward mapping of column "%s"', k));
    END LOOP;
    FOREACH k IN ARRAY v_new_only LOOP
        PERFORM @extschema@._require_column(target, k, 'new_only column', false);
    END LOOP;
    FOREACH k IN ARRAY v_divergent LOOP
        PERFORM @extschema@._require_column(target, k, 'divergent column', false);
    END LOOP;

    -- options
    IF pg_catalog.jsonb_typeof(v_options) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'options must be a jsonb object';
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(v_options) LOOP
        IF k OPERATOR(pg_catalog.<>) ALL (ARRAY['target_key', 'lock_timeout']) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('unknown option "%s"', k),
                HINT = 'Known options: target_key, lock_timeout.';
        END IF;
    END LOOP;
    IF v_options ? 'lock_timeout' THEN
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', v_options OPERATOR(pg_catalog.->>) 'lock_timeout', true);
            PERFORM pg_catalog.set_config('lock_timeout', pg_catalog.current_setting('lock_timeout'), true);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option lock_timeout is not a valid duration: %s', v_options OPERATOR(pg_catalog.->>) 'lock_timeout');
        END;
    END IF;

    -- resolve the forward mapping: every insertable target column
    CREATE TEMP TABLE IF NOT EXISTS softmig_pending_mappings (
        direction text, column_name name, ordinal integer, expression text, is_default boolean)
        ON COMMIT DROP;
    TRUNCATE softmig_pending_mappings;
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) target AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_fwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, target);
            END IF;
            INSERT INTO softmig_pending_mappings VALUES ('forward', r.attname, r.attnum, v_fwd OPERATOR(pg_catalog.->>) r.attname::text, false);
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) legacy AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            INSERT INTO softmig_pending_mappings VALUES ('forward', r.attname, r.attnum, pg_catalog.quote_ident(r.attname), true);
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target column "%s" is NOT NULL without a default and nothing maps to it', r.attname),
                HINT = 'Add it to forward, give it a default, or allow NULL.';
        END IF;
    END LOOP;

    -- resolve the backward mapping: every insertable legacy column
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) legacy AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_bwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, legacy);
            END IF;
            INSERT INTO softmig_pending_mappings VALUES ('backward', r.attname, r.attnum, v_bwd OPERATOR(pg_catalog.->>) r.attname::text, false);
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) target AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            INSERT INTO softmig_pending_mappings VALUES ('backward', r.attname, r.attnum, pg_catalog.quote_ident(r.attname), true);
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('legacy column "%s" is NOT NULL without a default and nothing maps to it', r.attname),
                HINT = 'Add it to backward, give it a default, or allow NULL.';
        END IF;
    END LOOP;

    -- the correlation key: what each legacy key column maps to
    IF v_options ? 'target_key' THEN
        IF pg_catalog.jsonb_typeof(v_options OPERATOR(pg_catalog.->) 'target_key') OPERATOR(pg_catalog.<>) 'array' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must be a jsonb array of target column names';
        END IF;
        SELECT pg_catalog.array_agg(x) INTO v_tkey
          FROM pg_catalog.jsonb_array_elements_text(v_options OPERATOR(pg_catalog.->) 'target_key') x;
        IF pg_catalog.cardinality(v_tkey) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must name as many columns as the legacy key';
        END IF;
    ELSE
        v_tkey := '{}';
        FOREACH k IN ARRAY v_key LOOP
            SELECT pm.column_name INTO e FROM softmig_pending_mappings pm
             WHERE pm.direction OPERATOR(pg_catalog.=) 'forward'
               AND (pm.expression OPERATOR(pg_catalog.=) k OR pm.expression OPERATOR(pg_catalog.=) pg_catalog.quote_ident(k))
             ORDER BY pm.is_default DESC LIMIT 1;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('no target column maps from legacy key column "%s"', k),
                    HINT = 'Name the target correlation key with options => ''{"target_key": [...]}''.';
            END IF;
            v_tkey := v_tkey OPERATOR(pg_catalog.||) e;
        END LOOP;
    END IF;
    FOREACH k IN ARRAY v_tkey LOOP
        PERFORM @extschema@._require_column(target, k, 'target key column', true);
        IF NOT EXISTS (SELECT 1 FROM softmig_pending_mappings pm
                        WHERE pm.direction OPERATOR(pg_catalog.=) 'forward' AND pm.column_name OPERATOR(pg_catalog.=) k) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target key column "%s" has no forward mapping', k);
        END IF;
    END LOOP;
    FOREACH k IN ARRAY v_key LOOP
        IF NOT EXISTS (SELECT 1 FROM softmig_pending_mappings pm
                        WHERE pm.direction OPERATOR(pg_catalog.=) 'backward' AND pm.column_name OPERATOR(pg_catalog.=) k) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('legacy key column "%s" has no backward mapping', k),
                HINT = 'Add it to backward so writes on the target can be projected to legacy.';
        END IF;
    END LOOP;

    INSERT INTO @extschema@.migrations (name, legacy, target, legacy_key, target_key, forward, backward,
                                        new_only, divergent, options, created_by)
    VALUES (v_name, legacy, target, v_key, v_tkey, v_fwd, v_bwd, v_new_only, v_divergent, v_options,
            @extschema@._actor())
    RETURNING id INTO v_id;
    INSERT INTO @extschema@.mappings (migration_id, direction, column_name, ordinal, expression, is_default)
    SELECT v_id, pm.direction, pm.column_name, pm.ordinal, pm.expression, pm.is_default FROM softmig_pending_mappings pm;
    DROP TABLE softmig_pending_mappings;

    -- prepare every statement the triggers will run (as the table owners)
    PERFORM @extschema@._validate(v_id);

    PERFORM @extschema@._history(v_id, 'create', NULL, 'legacy', NULL,
        pg_catalog.jsonb_build_object('legacy', legacy::text, 'target', target::text,
                                      'key', v_key, 'target_key', v_tkey));
END $$;
COMMENT ON FUNCTION @extschema@._create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'internal: implementation of softmig.create_migration (runs behind the ownership gate)';

CREATE FUNCTION @extschema@._require_column(rel regclass, col text, what text, must_be_not_null boolean)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    SELECT a.attnotnull INTO r FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) col
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('%s "%s" does not exist in table %s', what, col, rel);
    END IF;
    IF must_be_not_null AND NOT r.attnotnull THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s "%s" of table %s must be NOT NULL', what, col, rel),
            DETAIL = 'Rows are correlated on the key; a NULL key cannot be matched.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._require_column(regclass, text, text, boolean) IS
    'internal: raise 42703 unless a column exists (and 22023 unless NOT NULL when required)';

CREATE FUNCTION @extschema@.create_migration(name text, legacy regclass, target regclass,
    key text[] DEFAULT NULL, forward jsonb DEFAULT '{}', backward jsonb DEFAULT '{}',
    new_only text[] DEFAULT '{}', divergent text[] DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'define a migration from legacy to target (validates everything, leaves nothing behind on error); owners of both tables only';

-------------------------------------------------------------------------------
-- State
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.state(name text) RETURNS @extschema@.state
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (@extschema@._migration(name)).state
$$;
COMMENT ON FUNCTION @extschema@.state(text) IS 'the current state of a migration';

-- softmig.state('orders') with an untyped literal would otherwise be read as a
-- cast of 'orders' to the type softmig.state; this overload catches literals.
CREATE FUNCTION @extschema@.state(name unknown) RETURNS @extschema@.state
    AS 'MODULE_PATHNAME', 'softmig_state_of_literal' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@.state(unknown) IS
    'the current state of a migration named by a literal (see state(text))';

CREATE FUNCTION @extschema@._advance(name text, to_state @extschema@.state, reason text, force boolean)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_to @extschema@.state := to_state;
BEGIN
    IF COALESCE(force, false) AND (reason IS NULL OR pg_catalog.btrim(reason) OPERATOR(pg_catalog.=) '') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'force => true needs a reason',
            HINT = 'The reason is recorded in the migration''s history.';
    END IF;
    IF m.state OPERATOR(@extschema@.=) 'cutover' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is already in state cutover', m.name),
            DETAIL = 'cutover is the final state.';
    END IF;
    IF v_to IS NULL THEN
        v_to := (ARRAY['mirrored', 'new_write', 'new_read', 'cutover']::@extschema@.state[])
                [pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read']::@extschema@.state[], m.state)];
    END IF;
    IF v_to OPERATOR(@extschema@.<=) m.state THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" from %s to %s', m.name, m.state, v_to),
            HINT = 'advance moves forward one step; use softmig.rollback to go back.';
    END IF;
    RETURN @extschema@._set_state(m.id, v_to, 'advance', reason,
        CASE WHEN force THEN '{"force": true}'::jsonb ELSE '{}'::jsonb END);
END $$;
COMMENT ON FUNCTION @extschema@._advance(text, @extschema@.state, text, boolean) IS
    'internal: implementation of softmig.advance';

CREATE FUNCTION @extschema@.advance(name text, to_state @extschema@.state DEFAULT NULL,
                                    reason text DEFAULT NULL, force boolean DEFAULT false)
RETURNS @extschema@.state AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.advance(text, @extschema@.state, text, boolean) IS
    'move a migration one state forward (to_state defaults to the next state); owners of both tables only';

CREATE FUNCTION @extschema@._rollback(name text, reason text)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    IF m.state OPERATOR(@extschema@.=) 'cutover' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is in state cutover and never rolls back', m.name),
            HINT = 'Fix forward on the target table.';
    END IF;
    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is in state legacy; there is nothing to roll back', m.name);
    END IF;
    RETURN @extschema@._set_state(m.id,
        (ARRAY['legacy', 'mirrored', 'new_write']::@extschema@.state[])
        [pg_catalog.array_position(ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[], m.state)],
        'rollback', reason, '{}');
END $$;
COMMENT ON FUNCTION @extschema@._rollback(text, text) IS 'internal: implementation of softmig.rollback';

CREATE FUNCTION @extschema@.rollback(name text, reason text DEFAULT NULL)
RETURNS @extschema@.state AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.rollback(text, text) IS
    'move a migration one state back; owners of both tables only';

CREATE FUNCTION @extschema@._drop_migration(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['legacy', 'cutover']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot drop migration "%s" in state %s', m.name, m.state),
            HINT = 'Roll it back to legacy or advance it to cutover first.';
    END IF;
    PERFORM @extschema@._remove_triggers(m.id);
    PERFORM @extschema@._history(m.id, 'drop', m.state, NULL, NULL,
        pg_catalog.jsonb_build_object('name', m.name, 'legacy', m.legacy::text, 'target', m.target::text));
    DELETE FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) m.id;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
END $$;
COMMENT ON FUNCTION @extschema@._drop_migration(text) IS 'internal: implementation of softmig.drop_migration';

CREATE FUNCTION @extschema@.drop_migration(name text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_migration(text) IS
    'remove a migration in state legacy or cutover with every trigger it created (history is kept); owners of both tables only';

CREATE FUNCTION @extschema@._repair_triggers(name text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_before jsonb;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    v_before := @extschema@._trigger_health(m.id);
    EXECUTE pg_catalog.format('LOCK TABLE %s, %s IN SHARE ROW EXCLUSIVE MODE', m.legacy, m.target);
    PERFORM @extschema@._remove_triggers(m.id);
    IF m.state OPERATOR(@extschema@.<>) 'legacy' THEN
        PERFORM @extschema@._install_triggers(m.id);
    END IF;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'repair_triggers', m.state, m.state, NULL, v_before);
    RETURN @extschema@._trigger_health(m.id);
END $$;
COMMENT ON FUNCTION @extschema@._repair_triggers(text) IS 'internal: implementation of softmig.repair_triggers';

CREATE FUNCTION @extschema@.repair_triggers(name text)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.repair_triggers(text) IS
    'recreate missing or disabled softmig triggers of a migration (e.g. on a newly attached partition); owners of both tables only';

CREATE FUNCTION @extschema@.status(name text) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'name', m.name,
        'state', m.state::text,
        'legacy', m.legacy::text,
        'target', m.target::text,
        'key', m.legacy_key,
        'target_key', m.target_key,
        'write_authority', CASE WHEN m.state OPERATOR(@extschema@.<=) 'mirrored' THEN 'legacy' ELSE 'target' END,
        'projection', CASE m.state::text WHEN 'mirrored' THEN 'legacy -> target'
                                         WHEN 'new_write' THEN 'target -> legacy'
                                         WHEN 'new_read' THEN 'target -> legacy'
                                         ELSE 'none' END,
        'read_default', CASE WHEN m.state OPERATOR(@extschema@.>=) 'new_read' THEN 'new' ELSE 'legacy' END,
        'envelope_open', true,
        'backfill_done', false,
        'rows_backfilled', 0,
        'triggers', @extschema@._trigger_health(m.id),
        'state_changed_at', m.state_changed_at)
      FROM @extschema@._migration(name) m
$$;
COMMENT ON FUNCTION @extschema@.status(text) IS
    'a jsonb summary of a migration: state, write authority, read default, envelope, backfill, trigger health';

CREATE FUNCTION @extschema@.history(name text)
RETURNS TABLE(at timestamptz, actor name, action text, from_state @extschema@.state,
              to_state @extschema@.state, reason text, detail jsonb)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT h.at, h.actor, h.action, h.from_state, h.to_state, h.reason, h.detail
      FROM @extschema@.history_log h
     WHERE h.migration_id OPERATOR(pg_catalog.=) (@extschema@._migration(name)).id
     ORDER BY h.id
$$;
COMMENT ON FUNCTION @extschema@.history(text) IS
    'the audit history of a migration, oldest first';

-------------------------------------------------------------------------------
-- Privileges: implementation functions run only behind the gate.
-------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    @extschema@._check_expression(text, text),
    @extschema@._invalidate(regclass, regclass),
    @extschema@._validate(integer),
    @extschema@._guard_trigger(),
    @extschema@._write_trigger(),
    @extschema@._install_triggers(integer),
    @extschema@._remove_triggers(integer),
    @extschema@._history(integer, text, @extschema@.state, @extschema@.state, text, jsonb),
    @extschema@._set_state(integer, @extschema@.state, text, text, jsonb),
    @extschema@._create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb),
    @extschema@._require_column(regclass, text, text, boolean),
    @extschema@._advance(text, @extschema@.state, text, boolean),
    @extschema@._rollback(text, text),
    @extschema@._drop_migration(text),
    @extschema@._repair_triggers(text)
FROM PUBLIC;
