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
    state_changed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    mirror_snapshot  pg_snapshot,     -- taken when mirroring began (backfill freshness)
    mirror_xid       xid8             -- the transaction that began mirroring
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
-- Backfill bookkeeping (the procedure and its steps are in 60_backfill.sql)
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.backfill_progress (
    migration_id    integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    phase           text NOT NULL DEFAULT 'scan'
                    CHECK (phase OPERATOR(pg_catalog.=) ANY (ARRAY['scan', 'revisit', 'verify', 'done'])),
    cursor          jsonb,             -- legacy key of the last row of the last scan batch
    rows_backfilled bigint NOT NULL DEFAULT 0,
    rows_removed    bigint NOT NULL DEFAULT 0,
    batches         bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at     timestamptz
);
COMMENT ON TABLE @extschema@.backfill_progress IS
    'softmig: checkpoint of each migration''s backfill, updated in the same transaction as each batch';

CREATE TABLE @extschema@.backfill_revisit (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    id           bigserial,
    lo           jsonb,                -- exclusive lower bound (NULL: none)
    hi           jsonb,                -- inclusive upper bound (NULL: none)
    attempts     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (migration_id, id)
);
COMMENT ON TABLE @extschema@.backfill_revisit IS
    'softmig: key ranges a backfill batch could not fully lock (a live writer held rows); visited again';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.backfill_progress', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.backfill_revisit', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.backfill_revisit_id_seq', '');
REVOKE ALL ON @extschema@.backfill_progress, @extschema@.backfill_revisit FROM PUBLIC;
GRANT SELECT ON @extschema@.backfill_progress, @extschema@.backfill_revisit TO PUBLIC;

CREATE FUNCTION @extschema@._backfill_done(p_id integer) RETURNS boolean
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT bp.phase OPERATOR(pg_catalog.=) 'done'
                       FROM @extschema@.backfill_progress bp
                      WHERE bp.migration_id OPERATOR(pg_catalog.=) p_id), false)
$$;
COMMENT ON FUNCTION @extschema@._backfill_done(integer) IS
    'internal: has the backfill of the current mirroring epoch proven the target complete';

CREATE FUNCTION @extschema@._backfill_status(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'phase', COALESCE(bp.phase, 'not started'),
        'cursor', bp.cursor,
        'rows_backfilled', COALESCE(bp.rows_backfilled, 0),
        'rows_removed', COALESCE(bp.rows_removed, 0),
        'batches', COALESCE(bp.batches, 0),
        'ranges_to_revisit', (SELECT pg_catalog.count(*) FROM @extschema@.backfill_revisit r
                               WHERE r.migration_id OPERATOR(pg_catalog.=) p_id),
        'remaining_estimate', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0 ELSE
            GREATEST(0, (SELECT (l.reltuples OPERATOR(pg_catalog.-) t.reltuples)::bigint
                           FROM pg_catalog.pg_class l, pg_catalog.pg_class t
                          WHERE l.oid OPERATOR(pg_catalog.=) m.legacy AND t.oid OPERATOR(pg_catalog.=) m.target
                            AND l.reltuples OPERATOR(pg_catalog.>=) 0 AND t.reltuples OPERATOR(pg_catalog.>=) 0)) END,
        'started_at', bp.started_at,
        'updated_at', bp.updated_at,
        'finished_at', bp.finished_at)
      FROM @extschema@.migrations m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._backfill_status(integer) IS
    'internal: the backfill part of softmig.status';
-------------------------------------------------------------------------------
-- Rollback envelope, quarantine and shadow state (functions in 65_envelope.sql)
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.envelope (
    migration_id   integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    open           boolean NOT NULL DEFAULT true,
    closed_at      timestamptz,
    reason         text,
    first_key      jsonb,             -- the first entity legacy could not represent
    new_only_count bigint NOT NULL DEFAULT 0,
    closed_by      name
);
COMMENT ON TABLE @extschema@.envelope IS
    'softmig: the rollback envelope of each migration; it closes when the target holds state legacy cannot represent';

CREATE TABLE @extschema@.quarantine (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    key          jsonb NOT NULL,      -- legacy key columns, typed as in legacy
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    actor        name NOT NULL,
    PRIMARY KEY (migration_id, key)
);
COMMENT ON TABLE @extschema@.quarantine IS
    'softmig: entities excluded from projection and parity; writes to them are refused until released';

CREATE TABLE @extschema@.shadow (
    migration_id integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    disabled_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    reason       text NOT NULL,
    actor        name NOT NULL
);
COMMENT ON TABLE @extschema@.shadow IS
    'softmig: migrations whose non-authoritative table is not being written (shadow_disable)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.envelope', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.quarantine', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.shadow', '');
REVOKE ALL ON @extschema@.envelope, @extschema@.quarantine, @extschema@.shadow FROM PUBLIC;
GRANT SELECT ON @extschema@.envelope, @extschema@.quarantine, @extschema@.shadow TO PUBLIC;

CREATE FUNCTION @extschema@._envelope_open_now(migration_id integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_envelope_open_now' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._envelope_open_now(integer) IS
    'internal: is the rollback envelope open, read with the latest snapshot';

CREATE FUNCTION @extschema@._envelope_json(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'open', COALESCE(e.open, true),
        'closed_at', e.closed_at,
        'reason', e.reason,
        'first_key', e.first_key,
        'new_only_count', COALESCE(e.new_only_count, 0),
        'closed_by', e.closed_by)
      FROM (SELECT p_id AS id) x
      LEFT JOIN @extschema@.envelope e ON e.migration_id OPERATOR(pg_catalog.=) x.id
$$;
COMMENT ON FUNCTION @extschema@._envelope_json(integer) IS 'internal: the envelope of a migration as jsonb';

-------------------------------------------------------------------------------
-- Per-field authority (functions in 62_fields.sql)
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.field_authority (
    migration_id   integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    field          name NOT NULL,      -- a target column
    side           @extschema@.side NOT NULL,
    legacy_columns text[] NOT NULL,    -- the legacy columns that carry it
    set_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (migration_id, field)
);
COMMENT ON TABLE @extschema@.field_authority IS
    'softmig: fields handed to the target before the whole table (side new) while legacy is the write authority';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.field_authority', '');
REVOKE ALL ON @extschema@.field_authority FROM PUBLIC;
GRANT SELECT ON @extschema@.field_authority TO PUBLIC;

-- Field-level write versions of target-side writes in mirrored (per-field
-- authority and overrides), so hydrate knows which target-owned fields a
-- live write changed after its snapshot.  Mirror writes never touch those
-- fields, so they need no entry.
CREATE TABLE @extschema@.field_writes (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    key          jsonb NOT NULL,        -- legacy key of the entity
    field        text NOT NULL,         -- target column
    xid          xid8 NOT NULL,         -- last writer
    PRIMARY KEY (migration_id, key, field)
);
COMMENT ON TABLE @extschema@.field_writes IS
    'softmig: last writer of each target-owned field written on the target side while legacy is authoritative';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.field_writes', '');
REVOKE ALL ON @extschema@.field_writes FROM PUBLIC;
GRANT SELECT ON @extschema@.field_writes TO PUBLIC;
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

CREATE FUNCTION @extschema@._lock_migration(p_id integer)
RETURNS @extschema@.migrations
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout FROM CURRENT
AS $$
DECLARE
    m @extschema@.migrations;
    v_timeout text := COALESCE((SELECT options OPERATOR(pg_catalog.->>) 'lock_timeout'
                                  FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id), '5s');
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', v_timeout, true);
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id FOR NO KEY UPDATE;
    RETURN m;
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
        MESSAGE = 'could not lock the migration for a change: another change of it is in progress',
        DETAIL = pg_catalog.format('It did not finish within lock_timeout (%s).', v_timeout),
        HINT = 'Retry the call; nothing was changed.';
END $$;
COMMENT ON FUNCTION @extschema@._lock_migration(integer) IS
    'internal: lock a migration''s catalog row for a change, waiting at most its lock_timeout';

CREATE FUNCTION @extschema@._lock_tables(m @extschema@.migrations, p_to @extschema@.state)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout FROM CURRENT
AS $$
DECLARE
    v_timeout text := COALESCE(m.options OPERATOR(pg_catalog.->>) 'lock_timeout', '5s');
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', v_timeout, true);
    -- Writers lock the authoritative table first and the projection second;
    -- take them in the same order so a state change never deadlocks with a
    -- writer that arrives while it waits.
    IF m.state OPERATOR(@extschema@.>=) 'new_write' THEN
        EXECUTE pg_catalog.format('LOCK TABLE %s, %s IN SHARE ROW EXCLUSIVE MODE', m.target, m.legacy);
    ELSE
        EXECUTE pg_catalog.format('LOCK TABLE %s, %s IN SHARE ROW EXCLUSIVE MODE', m.legacy, m.target);
    END IF;
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
        MESSAGE = pg_catalog.format('could not lock tables %s and %s to move migration "%s" from %s to %s',
                                    m.legacy, m.target, m.name, m.state, COALESCE(p_to, m.state)),
        DETAIL = pg_catalog.format('Writers kept a conflicting lock for longer than lock_timeout (%s).', v_timeout),
        HINT = 'Retry the call; nothing was changed. Long transactions writing either table delay state changes; option lock_timeout sets how long to wait.';
END $$;
COMMENT ON FUNCTION @extschema@._lock_tables(@extschema@.migrations, @extschema@.state) IS
    'internal: lock both tables of a migration against writers, authoritative table first, within lock_timeout';

CREATE FUNCTION @extschema@._set_state(p_id integer, p_to @extschema@.state, p_action text,
                                       p_reason text, p_detail jsonb)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    v_legal text;
BEGIN
    -- serialize state changes of one migration (bounded by lock_timeout too)
    m := @extschema@._lock_migration(p_id);
    IF m.state OPERATOR(@extschema@.=) p_to THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is already in state %s', m.name, m.state),
            DETAIL = 'Another session changed its state while this call waited.';
    END IF;

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

    -- Guards (force => true with a reason overrides them; recorded in history)
    IF NOT COALESCE((p_detail OPERATOR(pg_catalog.->>) 'force')::boolean, false) THEN
        IF m.state OPERATOR(@extschema@.=) 'mirrored' AND p_to OPERATOR(@extschema@.=) 'new_write'
           AND NOT @extschema@._backfill_done(p_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: the backfill is not done', m.name),
                DETAIL = 'The target must hold every legacy row before it becomes the write authority.',
                HINT = pg_catalog.format('CALL softmig.backfill(%L) first, or pass force => true with a reason.', m.name);
        END IF;
        -- clean structural parity, no failing error-severity invariant (75_observe.sql)
        IF m.state OPERATOR(@extschema@.=) 'mirrored' AND p_to OPERATOR(@extschema@.=) 'new_write' THEN
            PERFORM @extschema@._require_semantic_health(p_id);
        END IF;
        -- read paths: no registered reader on legacy, no unregistered reader seen on it recently
        IF m.state OPERATOR(@extschema@.=) 'new_read' AND p_to OPERATOR(@extschema@.=) 'cutover' THEN
            PERFORM @extschema@._readpath_guard(p_id);
        END IF;
    END IF;

    -- Lock out writers on both tables (readers are not blocked): in-flight
    -- writers finish under the old state, later ones see the new one.
    PERFORM @extschema@._lock_tables(m, p_to);

    -- The rollback envelope, checked after the locks so a racing first
    -- new-only write is either already recorded or not yet projected.
    IF (m.state OPERATOR(@extschema@.=) 'new_write' AND p_to OPERATOR(@extschema@.=) 'mirrored')
       OR (m.state OPERATOR(@extschema@.=) 'new_read' AND p_to OPERATOR(@extschema@.=) 'new_write') THEN
        IF NOT @extschema@._envelope_open_now(p_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot roll migration "%s" back from %s to %s: the rollback envelope is closed',
                                            m.name, m.state, p_to),
                DETAIL = COALESCE((SELECT pg_catalog.format('Closed because: %s (first entity %s).', e.reason, COALESCE(e.first_key::text, 'unknown'))
                                     FROM @extschema@.envelope e WHERE e.migration_id OPERATOR(pg_catalog.=) p_id),
                                  'It closed while this call waited for the tables.'),
                HINT = 'Legacy cannot represent state the target already holds. Fix forward instead: quarantine the affected entities (softmig.quarantine), repair them on the target, or stop a broken projection with softmig.shadow_disable.';
        END IF;
    END IF;

    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        PERFORM @extschema@._install_triggers(p_id);
        -- Every write from now on reaches the target; anything the target
        -- holds that is visible in this snapshot predates mirroring and may
        -- be corrected by the backfill.  A new mirroring epoch needs a new
        -- backfill.
        IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
            RAISE EXCEPTION USING ERRCODE = 'active_sql_transaction',
                MESSAGE = 'the move to mirrored must run at isolation level READ COMMITTED',
                DETAIL = 'It records a snapshot that must include every write committed before the move.';
        END IF;
        UPDATE @extschema@.migrations
           SET mirror_snapshot = pg_catalog.pg_current_snapshot(), mirror_xid = pg_catalog.pg_current_xact_id()
         WHERE id OPERATOR(pg_catalog.=) p_id;
        DELETE FROM @extschema@.backfill_progress WHERE migration_id OPERATOR(pg_catalog.=) p_id;
        DELETE FROM @extschema@.backfill_revisit WHERE migration_id OPERATOR(pg_catalog.=) p_id;
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
CREATE FUNCTION @extschema@._check_options(p_options jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout FROM CURRENT   -- the trial set_config below must not leak
AS $$
DECLARE
    k text;
    v jsonb;
    -- every option softmig knows; each concern adds its own here
    known text[] := ARRAY['target_key', 'lock_timeout', 'require_operation_key',
                          'on_new_only', 'representable',
                          'unregistered_reader_window',
                          'transition_rules', 'parity_chunk_rows'];
BEGIN
    IF p_options IS NULL OR pg_catalog.jsonb_typeof(p_options) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'options must be a jsonb object';
    END IF;
    FOR k, v IN SELECT j.key, j.value FROM pg_catalog.jsonb_each(p_options) j LOOP
        IF k OPERATOR(pg_catalog.<>) ALL (known) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('unknown option "%s"', k),
                HINT = pg_catalog.format('Known options: %s.', pg_catalog.array_to_string(known, ', '));
        END IF;
        IF k OPERATOR(pg_catalog.=) 'on_new_only'
           AND v OPERATOR(pg_catalog.<>) ALL (ARRAY['"allow"'::jsonb, '"reject"'::jsonb]) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option on_new_only must be "allow" or "reject", not %s', v);
        END IF;
        IF k OPERATOR(pg_catalog.=) 'representable' THEN
            IF pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.<>) 'string' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = 'option representable must be a string holding a boolean SQL expression over target columns';
            END IF;
            PERFORM @extschema@._check_expression(v OPERATOR(pg_catalog.#>>) '{}', 'option representable');
        END IF;
        IF k OPERATOR(pg_catalog.=) ANY (ARRAY['transition_rules', 'parity_chunk_rows']) THEN
            PERFORM @extschema@._check_observe_option(k, v);    -- 75_observe.sql
        END IF;
        IF k OPERATOR(pg_catalog.=) 'lock_timeout' THEN
            BEGIN
                IF pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.<>) 'string' THEN
                    RAISE EXCEPTION 'not a string';
                END IF;
                PERFORM pg_catalog.set_config('lock_timeout', v OPERATOR(pg_catalog.#>>) '{}', true);
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('option lock_timeout is not a valid duration: %s', v);
            END;
        END IF;
        IF k OPERATOR(pg_catalog.=) 'require_operation_key'
           AND pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.<>) 'boolean' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option require_operation_key must be a JSON boolean, not %s', v),
                HINT = 'Use true or false (without quotes).';
        END IF;
        IF k OPERATOR(pg_catalog.=) 'unregistered_reader_window' THEN
            PERFORM @extschema@._check_reader_window(v);
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._check_options(jsonb) IS
    'internal: raise 22023 unless every option is known and well-formed';

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
    v_maps jsonb;
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
    PERFORM @extschema@._check_options(v_options);

    -- resolve the forward mapping: every insertable target column
    -- the resolved mappings, built in a variable (no temp table: this runs as
    -- the catalog owner and must not touch anything the caller can create)
    v_maps := '[]';
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) target AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_fwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, target);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'forward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', v_fwd OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) legacy AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'forward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
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
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'backward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', v_bwd OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) target AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'backward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
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
            SELECT pm.column_name INTO e FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean)
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
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean)
                        WHERE pm.direction OPERATOR(pg_catalog.=) 'forward' AND pm.column_name OPERATOR(pg_catalog.=) k) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target key column "%s" has no forward mapping', k);
        END IF;
    END LOOP;
    FOREACH k IN ARRAY v_key LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean)
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
    SELECT v_id, pm.direction, pm.column_name, pm.ordinal, pm.expression, pm.is_default FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean);

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
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) m.id FOR NO KEY UPDATE;
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

CREATE FUNCTION @extschema@._set_option(name text, option text, value jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_new jsonb;
BEGIN
    IF option IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'option must not be null';
    END IF;
    IF option OPERATOR(pg_catalog.=) 'target_key' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'option target_key cannot be changed after create_migration';
    END IF;
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) m.id FOR NO KEY UPDATE;
    IF value IS NULL OR value OPERATOR(pg_catalog.=) 'null'::jsonb THEN
        v_new := m.options OPERATOR(pg_catalog.-) option;
    ELSE
        v_new := m.options OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(option, value);
    END IF;
    PERFORM @extschema@._check_options(v_new);
    UPDATE @extschema@.migrations SET options = v_new WHERE id OPERATOR(pg_catalog.=) m.id;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._validate(m.id);     -- e.g. a representable predicate must type-check
    PERFORM @extschema@._history(m.id, 'set_option', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('option', option, 'old', m.options OPERATOR(pg_catalog.->) option, 'new', value));
    RETURN v_new;
END $$;
COMMENT ON FUNCTION @extschema@._set_option(text, text, jsonb) IS 'internal: implementation of softmig.set_option';

CREATE FUNCTION @extschema@.set_option(name text, option text, value jsonb)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.set_option(text, text, jsonb) IS
    'set (or with NULL remove) one option of a migration and return all options; owners of both tables only';

CREATE FUNCTION @extschema@._repair_triggers(name text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_before jsonb;
BEGIN
    m := @extschema@._lock_migration(m.id);
    v_before := @extschema@._trigger_health(m.id);
    PERFORM @extschema@._lock_tables(m, NULL);
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
        'read_default', @extschema@.group_source(m.name, 'default')::text,   -- readers nobody registered
        'envelope_open', (@extschema@._envelope_json(m.id) OPERATOR(pg_catalog.->>) 'open')::boolean,
        'envelope', @extschema@._envelope_json(m.id),
        'quarantined', (SELECT pg_catalog.count(*) FROM @extschema@.quarantine q
                         WHERE q.migration_id OPERATOR(pg_catalog.=) m.id),
        'shadow', (SELECT pg_catalog.jsonb_build_object('disabled', true, 'since', s.disabled_at, 'reason', s.reason)
                     FROM @extschema@.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id),
        'backfill_done', @extschema@._backfill_done(m.id),
        'rows_backfilled', COALESCE(bp.rows_backfilled, 0),
        'backfill', @extschema@._backfill_status(m.id),
        'triggers', @extschema@._trigger_health(m.id),
        'state_changed_at', m.state_changed_at)
      FROM @extschema@._migration(name) m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
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
-- Operation keys (idempotency): one ledger for both sides of a migration.
-- The claim itself is made in C (src/opkey.c) by the guard trigger.
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.operations (
    migration_id integer NOT NULL,
    key          text COLLATE "C" NOT NULL,
    side         @extschema@.side NOT NULL,
    relation     text NOT NULL,
    state        @extschema@.state NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    xid          xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    claimed_by   name NOT NULL,
    PRIMARY KEY (migration_id, key)
);
-- No foreign key to softmig.migrations on purpose: its check would take a
-- FOR KEY SHARE lock on the migration row in every claiming transaction,
-- which conflicts with the FOR UPDATE that state changes and set_option take
-- (a state change waiting for writers could deadlock with them).  Rows of a
-- dropped migration are removed by the trigger below.
COMMENT ON TABLE @extschema@.operations IS
    'softmig: operation key ledger, one row per (migration, key) applied: side, table, state, time, transaction and role of the claim';
COMMENT ON COLUMN @extschema@.operations.side IS 'side written by the claiming transaction: legacy or new (the target)';
COMMENT ON COLUMN @extschema@.operations.relation IS 'table (or partition) whose write claimed the key';
COMMENT ON COLUMN @extschema@.operations.state IS 'state of the migration when the key was claimed';
COMMENT ON COLUMN @extschema@.operations.claimed_at IS 'clock time of the claim (the first write of the transaction)';
COMMENT ON COLUMN @extschema@.operations.xid IS 'top-level transaction id of the claiming transaction';
COMMENT ON COLUMN @extschema@.operations.claimed_by IS 'role that wrote';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.operations', '');

REVOKE ALL ON @extschema@.operations FROM PUBLIC;
GRANT SELECT ON @extschema@.operations TO PUBLIC;

CREATE FUNCTION @extschema@._forget_dropped_operations() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.operations o WHERE o.migration_id OPERATOR(pg_catalog.=) OLD.id;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@._forget_dropped_operations() IS
    'internal: AFTER DELETE trigger on softmig.migrations removing the ledger rows of a dropped migration';

CREATE TRIGGER forget_dropped_operations
    AFTER DELETE ON @extschema@.migrations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._forget_dropped_operations();

CREATE FUNCTION @extschema@.operation_applied(name text, key text) RETURNS boolean
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    IF key OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'operation key must not be empty';
    END IF;
    IF pg_catalog.octet_length(key) OPERATOR(pg_catalog.>) 512 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'operation key is too long',
            DETAIL = pg_catalog.format('The key has %s bytes; the limit is 512 bytes.', pg_catalog.octet_length(key));
    END IF;
    RETURN EXISTS (SELECT 1 FROM @extschema@.operations o
                    WHERE o.migration_id OPERATOR(pg_catalog.=) m.id
                      AND o.key OPERATOR(pg_catalog.=) (operation_applied.key COLLATE pg_catalog."C"));
END $$;
COMMENT ON FUNCTION @extschema@.operation_applied(text, text) IS
    'true when a committed transaction (or the current one) applied the operation key to the migration, on either side';

CREATE FUNCTION @extschema@._forget_operations(name text, older_than interval) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET intervalstyle = iso_8601          -- history records older_than the same way for everyone
AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    n bigint;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'older_than must not be null',
            HINT = 'Pass interval ''0'' to forget every key claimed before the current transaction.';
    END IF;
    IF older_than OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('older_than must not be negative (got %s)', older_than);
    END IF;
    DELETE FROM @extschema@.operations o
     WHERE o.migration_id OPERATOR(pg_catalog.=) m.id
       AND o.claimed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM @extschema@._history(m.id, 'forget_operations', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('older_than', older_than::text, 'forgotten', n));
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._forget_operations(text, interval) IS
    'internal: implementation of softmig.forget_operations';

CREATE FUNCTION @extschema@.forget_operations(name text, older_than interval)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.forget_operations(text, interval) IS
    'retention: remove the ledger rows of operation keys claimed more than older_than ago and return how many; a forgotten key can be applied again; owners of both tables only';

REVOKE ALL ON FUNCTION
    @extschema@._forget_dropped_operations(),
    @extschema@._forget_operations(text, interval)
FROM PUBLIC;
-------------------------------------------------------------------------------
-- Backfill: copy every legacy row the target lacks, race-safe, one committed
-- batch at a time (see doc/backfill.md for why it is correct).
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._written_before(xmin xid, snap pg_snapshot, snap_xid xid8 DEFAULT NULL) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_written_before' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._written_before(xid, pg_snapshot, xid8) IS
    'internal: was a row version with this xmin written before snap was taken (visible in it, or written by snap_xid, the transaction that took it)';

CREATE FUNCTION @extschema@._bf_step(migration_id integer, op text, batch_size integer,
                                     lo jsonb, hi jsonb, snap pg_snapshot, snap_xid xid8)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_backfill_step' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._bf_step(integer, text, integer, jsonb, jsonb, pg_snapshot, xid8) IS
    'internal: one unit of backfill work (next, range, sweep, orphans, verify), run as the caller';

CREATE FUNCTION @extschema@._backfill_batch(name text, batch_size integer)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    p @extschema@.backfill_progress;
    rv @extschema@.backfill_revisit;
    r jsonb;
    v_copied bigint := 0;
    v_removed bigint := 0;
    v_waiting boolean := false;
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR batch_size OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'batch_size must be between 1 and 1000000';
    END IF;
    IF m.state OPERATOR(@extschema@.<>) 'mirrored' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot backfill migration "%s" in state %s', m.name, m.state),
            DETAIL = 'Backfill runs only in state mirrored, where every live write already reaches the target.',
            HINT = CASE WHEN m.state OPERATOR(@extschema@.=) 'legacy'
                        THEN pg_catalog.format('SELECT softmig.advance(%L) first.', m.name)
                        ELSE 'Past mirrored the target is the write authority and needs no backfill.' END;
    END IF;

    INSERT INTO @extschema@.backfill_progress (migration_id) VALUES (m.id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT p FROM @extschema@.backfill_progress
     WHERE migration_id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    IF p.phase OPERATOR(pg_catalog.=) 'done' THEN
        -- live writes keep a complete target complete: nothing left to do
        RETURN pg_catalog.jsonb_build_object('phase', p.phase, 'copied', 0, 'removed', 0,
                                             'done', true, 'waiting', false);
    END IF;

    IF p.phase OPERATOR(pg_catalog.=) 'scan' THEN
        r := @extschema@._bf_step(m.id, 'next', batch_size, p.cursor, NULL, m.mirror_snapshot, m.mirror_xid);
        IF (r OPERATOR(pg_catalog.->>) 'tail_skipped')::bigint OPERATOR(pg_catalog.>) 0 THEN
            -- rows past the end of this batch that a live writer held: revisit them
            INSERT INTO @extschema@.backfill_revisit (migration_id, lo, hi)
            VALUES (m.id, COALESCE(r OPERATOR(pg_catalog.->) 'last_key', p.cursor), NULL);
        END IF;
        IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
            p.phase := 'revisit';
        ELSE
            IF (r OPERATOR(pg_catalog.->>) 'skipped')::bigint OPERATOR(pg_catalog.>) 0 THEN
                INSERT INTO @extschema@.backfill_revisit (migration_id, lo, hi)
                VALUES (m.id, p.cursor, r OPERATOR(pg_catalog.->) 'last_key');
            END IF;
            p.cursor := r OPERATOR(pg_catalog.->) 'last_key';
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
        END IF;
    ELSIF p.phase OPERATOR(pg_catalog.=) 'revisit' THEN
        SELECT * INTO rv FROM @extschema@.backfill_revisit
         WHERE migration_id OPERATOR(pg_catalog.=) m.id ORDER BY attempts, id LIMIT 1 FOR UPDATE;
        IF NOT FOUND THEN
            p.phase := 'verify';
        ELSE
            r := @extschema@._bf_step(m.id, 'range', batch_size, rv.lo, rv.hi, m.mirror_snapshot, m.mirror_xid);
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'skipped')::bigint OPERATOR(pg_catalog.=) 0 THEN
                DELETE FROM @extschema@.backfill_revisit
                 WHERE migration_id OPERATOR(pg_catalog.=) m.id AND id OPERATOR(pg_catalog.=) rv.id;
            ELSE
                UPDATE @extschema@.backfill_revisit SET attempts = attempts OPERATOR(pg_catalog.+) 1
                 WHERE migration_id OPERATOR(pg_catalog.=) m.id AND id OPERATOR(pg_catalog.=) rv.id;
                v_waiting := true;
            END IF;
        END IF;
    ELSIF p.phase OPERATOR(pg_catalog.=) 'verify' THEN
        -- safety net: copy any legacy row still missing, remove stale target
        -- rows legacy does not have, then prove completeness
        r := @extschema@._bf_step(m.id, 'sweep', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
        v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
        IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
            r := @extschema@._bf_step(m.id, 'orphans', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_removed := (r OPERATOR(pg_catalog.->>) 'deleted')::bigint;
            IF v_removed OPERATOR(pg_catalog.<) batch_size THEN
                r := @extschema@._bf_step(m.id, 'verify', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
                IF (r OPERATOR(pg_catalog.->>) 'missing')::bigint OPERATOR(pg_catalog.=) 0 THEN
                    p.phase := 'done';
                    p.finished_at := pg_catalog.now();
                ELSE
                    v_waiting := true;     -- rows held by live writers; try again
                END IF;
            END IF;
        END IF;
    END IF;

    UPDATE @extschema@.backfill_progress
       SET phase = p.phase, cursor = p.cursor,
           rows_backfilled = rows_backfilled OPERATOR(pg_catalog.+) v_copied,
           rows_removed = rows_removed OPERATOR(pg_catalog.+) v_removed,
           batches = batches OPERATOR(pg_catalog.+) 1,
           updated_at = pg_catalog.now(), finished_at = p.finished_at
     WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    IF p.phase OPERATOR(pg_catalog.=) 'done' THEN
        PERFORM @extschema@._history(m.id, 'backfill_done', m.state, m.state, NULL,
            @extschema@._backfill_status(m.id));
    END IF;
    RETURN pg_catalog.jsonb_build_object('phase', p.phase, 'copied', v_copied, 'removed', v_removed,
                                         'done', p.phase OPERATOR(pg_catalog.=) 'done', 'waiting', v_waiting);
END $$;
COMMENT ON FUNCTION @extschema@._backfill_batch(text, integer) IS 'internal: implementation of softmig.backfill_batch';

CREATE FUNCTION @extschema@.backfill_batch(name text, batch_size integer DEFAULT 1000)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.backfill_batch(text, integer) IS
    'run one backfill batch in the current transaction and checkpoint it (softmig.backfill calls it between commits); owners of both tables only';

-- SECURITY DEFINER: pg_stat_activity hides other roles' session state from
-- ordinary roles; this answers one yes/no question about softmig's own lock.
CREATE FUNCTION @extschema@._backfill_running_elsewhere(p_id integer) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l
          JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
         WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
           AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
           AND l.objid OPERATOR(pg_catalog.=) p_id::pg_catalog.oid
           AND l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
           AND a.state OPERATOR(pg_catalog.=) 'active')
$$;
COMMENT ON FUNCTION @extschema@._backfill_running_elsewhere(integer) IS
    'internal: is a backfill of this migration running in another session right now (holding the backfill lock and active); callable by anyone, it reveals nothing else';

CREATE PROCEDURE @extschema@.backfill(name text, batch_size integer DEFAULT 1000,
                                      max_batches integer DEFAULT NULL, pause_ms integer DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    v_id integer := (@extschema@._migration(name)).id;
    r jsonb;
    n integer := 0;
    v_copied bigint := 0;
    v_mine boolean;
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'batch_size must be at least 1';
    END IF;
    IF max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'max_batches must be at least 1';
    END IF;
    IF pause_ms IS NULL OR pause_ms OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'pause_ms must not be negative';
    END IF;
    -- one backfill per migration at a time: a session-level advisory lock
    -- (kept across the commits below; a session that already holds it, e.g.
    -- after a cancelled CALL, may continue)
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
                      AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                      AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
                      AND l.objid OPERATOR(pg_catalog.=) v_id::pg_catalog.oid
                      AND l.granted)
      INTO v_mine;
    IF NOT v_mine AND NOT pg_catalog.pg_try_advisory_lock(1936550247, v_id) THEN
        -- a session whose CALL was cancelled keeps the lock while it stays
        -- connected; only a backfill that is actually running refuses us
        IF @extschema@._backfill_running_elsewhere(v_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('a backfill of migration "%s" is already running', name),
                HINT = 'Wait for it to finish, or cancel it; the next CALL resumes from its last checkpoint.';
        END IF;
    END IF;
    LOOP
        r := @extschema@.backfill_batch(name, batch_size);
        COMMIT;
        n := n OPERATOR(pg_catalog.+) 1;
        v_copied := v_copied OPERATOR(pg_catalog.+) (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
        EXIT WHEN (r OPERATOR(pg_catalog.->>) 'done')::boolean;
        EXIT WHEN max_batches IS NOT NULL AND n OPERATOR(pg_catalog.>=) max_batches;
        IF (r OPERATOR(pg_catalog.->>) 'waiting')::boolean THEN
            PERFORM pg_catalog.pg_sleep(GREATEST(pause_ms, 100) OPERATOR(pg_catalog./) 1000.0);
        ELSIF pause_ms OPERATOR(pg_catalog.>) 0 THEN
            PERFORM pg_catalog.pg_sleep(pause_ms OPERATOR(pg_catalog./) 1000.0);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
                  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                  AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
                  AND l.objid OPERATOR(pg_catalog.=) v_id::pg_catalog.oid) THEN
        PERFORM pg_catalog.pg_advisory_unlock(1936550247, v_id);
    END IF;
    RAISE NOTICE 'softmig: backfill of "%": % batches, % rows copied, phase %', name, n, v_copied,
        r OPERATOR(pg_catalog.->>) 'phase';
END $$;
COMMENT ON PROCEDURE @extschema@.backfill(text, integer, integer, integer) IS
    'copy every legacy row the target lacks, one committed batch at a time, race-safe and resumable; state mirrored only; owners of both tables only';

REVOKE ALL ON FUNCTION
    @extschema@._bf_step(integer, text, integer, jsonb, jsonb, pg_snapshot, xid8),
    @extschema@._backfill_batch(text, integer)
FROM PUBLIC;
-------------------------------------------------------------------------------
-- Per-field authority and the merge function
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._expr_columns(expr text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'softmig_expr_columns_sql' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION @extschema@._expr_columns(text) IS
    'internal: the column names a mapping expression refers to';

CREATE FUNCTION @extschema@.merge(current jsonb, incoming jsonb, incoming_side @extschema@.side,
                                  authority jsonb DEFAULT '{}', default_owner @extschema@.side DEFAULT 'legacy',
                                  fresh text[] DEFAULT '{}',
                                  OUT merged jsonb, OUT taken text[])
    AS 'MODULE_PATHNAME', 'softmig_merge' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.merge(jsonb, jsonb, @extschema@.side, jsonb, @extschema@.side, text[]) IS
    'the per-field merge rule: a field takes the incoming value iff the incoming side owns it (authority, else default_owner) and no live write newer than the incoming image touched it (fresh); returns the merged image and the fields taken';

CREATE FUNCTION @extschema@._set_field_authority(p_name text, p_field name, p_side @extschema@.side)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    v_fwd text;
    v_partners text[];
    v_owned text[];
    r record;
    c text;
BEGIN
    IF p_field IS NULL OR p_side IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'field and side must not be null';
    END IF;
    m := @extschema@._lock_migration(m.id);
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['legacy', 'mirrored']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('per-field authority of migration "%s" cannot change in state %s', m.name, m.state),
            DETAIL = 'From new_write on, every field belongs to the target.';
    END IF;
    SELECT mp.expression INTO v_fwd FROM @extschema@.mappings mp
     WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) 'forward'
       AND mp.column_name OPERATOR(pg_catalog.=) p_field;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('"%s" is not a mapped column of target table %s', p_field, m.target),
            HINT = 'Per-field authority applies to target columns fed by the forward mapping.';
    END IF;
    IF p_field::text OPERATOR(pg_catalog.=) ANY (m.target_key) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('key column "%s" cannot change authority on its own', p_field);
    END IF;

    IF p_side OPERATOR(pg_catalog.=) 'legacy' THEN
        IF NOT COALESCE((SELECT e.open FROM @extschema@.envelope e WHERE e.migration_id OPERATOR(pg_catalog.=) m.id), true) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('field "%s" cannot move back to legacy: the rollback envelope of migration "%s" is closed', p_field, m.name);
        END IF;
        DELETE FROM @extschema@.field_authority
         WHERE migration_id OPERATOR(pg_catalog.=) m.id AND field_authority.field OPERATOR(pg_catalog.=) p_field;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('field "%s" of migration "%s" already belongs to legacy', p_field, m.name);
        END IF;
    ELSE
        -- the fields the target will own, this one included
        SELECT pg_catalog.array_agg(fa.field::text) OPERATOR(pg_catalog.||) ARRAY[p_field::text] INTO v_owned
          FROM @extschema@.field_authority fa WHERE fa.migration_id OPERATOR(pg_catalog.=) m.id;
        v_owned := COALESCE(v_owned, ARRAY[p_field::text]);
        -- the legacy columns that carry it: backward mappings that read it
        v_partners := '{}';
        FOR r IN SELECT mp.column_name, mp.expression FROM @extschema@.mappings mp
                  WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) 'backward'
        LOOP
            IF p_field::text OPERATOR(pg_catalog.=) ANY (@extschema@._expr_columns(r.expression)) THEN
                IF NOT (@extschema@._expr_columns(r.expression) OPERATOR(pg_catalog.<@) v_owned) THEN
                    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                        MESSAGE = pg_catalog.format('field "%s" cannot be handed to the target on its own', p_field),
                        DETAIL = pg_catalog.format('Legacy column "%s" (%s) also reads fields legacy still owns.',
                                                   r.column_name, r.expression);
                END IF;
                IF r.column_name::text OPERATOR(pg_catalog.=) ANY (m.legacy_key) THEN
                    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                        MESSAGE = pg_catalog.format('field "%s" feeds legacy key column "%s"', p_field, r.column_name);
                END IF;
                v_partners := v_partners OPERATOR(pg_catalog.||) r.column_name::text;
            END IF;
        END LOOP;
        IF pg_catalog.cardinality(v_partners) OPERATOR(pg_catalog.=) 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('field "%s" has no backward mapping, so legacy could not follow the target''s writes', p_field);
        END IF;
        -- the carriers must not feed target columns that stay with legacy
        FOR r IN SELECT mp.column_name, mp.expression FROM @extschema@.mappings mp
                  WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) 'forward'
                    AND mp.column_name::text OPERATOR(pg_catalog.<>) ALL (v_owned)
        LOOP
            IF @extschema@._expr_columns(r.expression) OPERATOR(pg_catalog.&&) v_partners THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('field "%s" cannot be handed to the target on its own', p_field),
                    DETAIL = pg_catalog.format('Legacy column(s) %s that carry it also feed target column "%s" (%s), which legacy keeps.',
                                               pg_catalog.array_to_string(v_partners, ', '), r.column_name, r.expression);
            END IF;
        END LOOP;
        FOREACH c IN ARRAY @extschema@._expr_columns(v_fwd) LOOP
            IF c OPERATOR(pg_catalog.<>) ALL (v_partners) THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('field "%s" cannot be handed to the target on its own', p_field),
                    DETAIL = pg_catalog.format('Its forward mapping (%s) reads legacy column "%s", which does not carry it back.', v_fwd, c);
            END IF;
        END LOOP;
        INSERT INTO @extschema@.field_authority (migration_id, field, side, legacy_columns)
        VALUES (m.id, p_field, 'new', v_partners)
        ON CONFLICT (migration_id, field) DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('field "%s" of migration "%s" already belongs to the target', p_field, m.name);
        END IF;
    END IF;
    -- writers switch rules at their next lock on either table
    PERFORM @extschema@._lock_tables(m, NULL);
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._validate(m.id);
    PERFORM @extschema@._history(m.id, 'set_field_authority', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('field', p_field, 'side', p_side));
END $$;
COMMENT ON FUNCTION @extschema@._set_field_authority(text, name, @extschema@.side) IS
    'internal: implementation of softmig.set_field_authority';

CREATE FUNCTION @extschema@.set_field_authority(name text, field name, side @extschema@.side)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.set_field_authority(text, name, @extschema@.side) IS
    'hand one target field to the target (side new) before the whole table moves, or back (side legacy); owners only';

REVOKE ALL ON FUNCTION
    @extschema@._set_field_authority(text, name, @extschema@.side)
FROM PUBLIC;

-------------------------------------------------------------------------------
-- Snapshot hydration
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._hydrate_exec(migration_id integer, rows jsonb, as_of pg_snapshot,
                                          authority jsonb, default_owner @extschema@.side)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_hydrate_exec' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._hydrate_exec(integer, jsonb, pg_snapshot, jsonb, @extschema@.side) IS
    'internal: the set-based statements of softmig.hydrate, run as the caller';

CREATE FUNCTION @extschema@._hydrate(p_name text, p_rows jsonb, p_as_of pg_snapshot)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    v_cols text[];
    v_bad text;
    v_authority jsonb;
    v_n bigint;
BEGIN
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot hydrate migration "%s" in state %s', m.name, m.state),
            DETAIL = 'Hydration merges into a target that softmig keeps in step: states mirrored, new_write and new_read.';
    END IF;
    IF p_rows IS NULL OR pg_catalog.jsonb_typeof(p_rows) OPERATOR(pg_catalog.<>) 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'rows must be a jsonb array of objects shaped like the target table';
    END IF;
    IF p_as_of IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'as_of must be the snapshot the rows were computed from',
            HINT = 'Take it with pg_current_snapshot() in the transaction that exported the data.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(p_rows) e
                WHERE pg_catalog.jsonb_typeof(e) OPERATOR(pg_catalog.<>) 'object') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'every element of rows must be a jsonb object';
    END IF;
    SELECT pg_catalog.array_agg(a.attname::text) INTO v_cols FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) m.target AND a.attnum OPERATOR(pg_catalog.>) 0
       AND NOT a.attisdropped AND a.attgenerated OPERATOR(pg_catalog.=) '';
    SELECT k INTO v_bad FROM pg_catalog.jsonb_array_elements(p_rows) e, pg_catalog.jsonb_object_keys(e) k
     WHERE k OPERATOR(pg_catalog.<>) ALL (v_cols) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('column "%s" of the hydrated rows is not a writable column of %s', v_bad, m.target);
    END IF;
    SELECT k INTO v_bad FROM pg_catalog.jsonb_array_elements(p_rows) e, pg_catalog.unnest(m.target_key) k
     WHERE NOT e ? k OR e OPERATOR(pg_catalog.->) k OPERATOR(pg_catalog.=) 'null'::jsonb LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('a hydrated row lacks key column "%s"', v_bad),
            HINT = pg_catalog.format('Every row needs the target key: %s.', pg_catalog.array_to_string(m.target_key, ', '));
    END IF;
    IF (SELECT pg_catalog.count(*) OPERATOR(pg_catalog.<>) pg_catalog.count(DISTINCT k)
          FROM (SELECT (SELECT pg_catalog.jsonb_object_agg(kk, e OPERATOR(pg_catalog.->) kk)
                          FROM pg_catalog.unnest(m.target_key) kk) AS k
                  FROM pg_catalog.jsonb_array_elements(p_rows) e) x) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'rows name the same key twice';
    END IF;

    -- who owns what: unmapped target columns and handed-over fields belong
    -- to the target; in mirrored the mapped ones belong to legacy
    SELECT COALESCE(pg_catalog.jsonb_object_agg(c, 'new'), '{}') INTO v_authority
      FROM pg_catalog.unnest(v_cols) c
     WHERE NOT EXISTS (SELECT 1 FROM @extschema@.mappings mp
                        WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id
                          AND mp.direction OPERATOR(pg_catalog.=) 'forward'
                          AND mp.column_name::text OPERATOR(pg_catalog.=) c)
        OR EXISTS (SELECT 1 FROM @extschema@.field_authority fa
                    WHERE fa.migration_id OPERATOR(pg_catalog.=) m.id AND fa.field::text OPERATOR(pg_catalog.=) c
                      AND fa.side OPERATOR(pg_catalog.=) 'new');

    v_n := @extschema@._hydrate_exec(m.id, p_rows, p_as_of, v_authority,
        CASE WHEN m.state OPERATOR(@extschema@.=) 'mirrored' THEN 'legacy' ELSE 'new' END::@extschema@.side);
    PERFORM @extschema@._history(m.id, 'hydrate', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('rows', pg_catalog.jsonb_array_length(p_rows), 'changed', v_n,
                                      'as_of', p_as_of::text));
    RETURN v_n;
END $$;
COMMENT ON FUNCTION @extschema@._hydrate(text, jsonb, pg_snapshot) IS 'internal: implementation of softmig.hydrate';

CREATE FUNCTION @extschema@.hydrate(name text, rows jsonb, as_of pg_snapshot)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.hydrate(text, jsonb, pg_snapshot) IS
    'merge target-shaped rows computed from snapshot as_of into the target: live writes the snapshot did not see win, deleted keys stay deleted; returns rows changed; owners only';

REVOKE ALL ON FUNCTION
    @extschema@._hydrate_exec(integer, jsonb, pg_snapshot, jsonb, @extschema@.side),
    @extschema@._hydrate(text, jsonb, pg_snapshot)
FROM PUBLIC;
-------------------------------------------------------------------------------
-- Rollback envelope and forward-fix tools (tables in 26_envelope_catalog.sql)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._resync_key(migration_id integer, key jsonb) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_resync_key' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._resync_key(integer, jsonb) IS
    'internal: re-project one entity from the authoritative table, as the caller';

CREATE FUNCTION @extschema@._resync_all(migration_id integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_resync_all' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._resync_all(integer) IS
    'internal: rebuild legacy from the target''s projection (new_write/new_read), as the caller';

CREATE FUNCTION @extschema@._note_new_only(p_id integer, p_count bigint, p_keys jsonb,
                                           p_reason text, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e @extschema@.envelope;
    m @extschema@.migrations;
BEGIN
    INSERT INTO @extschema@.envelope (migration_id) VALUES (p_id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT e FROM @extschema@.envelope WHERE migration_id OPERATOR(pg_catalog.=) p_id FOR UPDATE;
    UPDATE @extschema@.envelope
       SET open = false,
           new_only_count = new_only_count OPERATOR(pg_catalog.+) p_count,
           closed_at = COALESCE(closed_at, pg_catalog.now()),
           reason = COALESCE(reason, p_reason),
           first_key = COALESCE(first_key, p_keys),
           closed_by = COALESCE(closed_by, p_actor::name)
     WHERE migration_id OPERATOR(pg_catalog.=) p_id;
    IF e.open THEN
        SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
        INSERT INTO @extschema@.history_log (migration_id, actor, action, from_state, to_state, reason, detail)
        VALUES (p_id, p_actor::name, 'envelope_close', m.state, m.state, p_reason,
                pg_catalog.jsonb_build_object('first_key', p_keys, 'automatic', true));
        PERFORM @extschema@._invalidate(m.legacy, m.target);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._note_new_only(integer, bigint, jsonb, text, text) IS
    'internal: the projection saw rows legacy cannot represent: close the envelope, count them';

CREATE FUNCTION @extschema@.envelope(name text) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._envelope_json((@extschema@._migration(name)).id)
$$;
COMMENT ON FUNCTION @extschema@.envelope(text) IS
    'the rollback envelope: open, closed_at, reason, first_key, new_only_count';

CREATE FUNCTION @extschema@._close_envelope(name text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    e @extschema@.envelope;
BEGIN
    IF reason IS NULL OR pg_catalog.btrim(reason) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'closing the envelope needs a reason';
    END IF;
    m := @extschema@._lock_migration(m.id);
    INSERT INTO @extschema@.envelope (migration_id) VALUES (m.id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT e FROM @extschema@.envelope WHERE migration_id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    IF NOT e.open THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('the rollback envelope of migration "%s" is already closed', m.name),
            DETAIL = pg_catalog.format('Closed because: %s', e.reason);
    END IF;
    UPDATE @extschema@.envelope
       SET open = false, closed_at = pg_catalog.now(), reason = _close_envelope.reason,
           closed_by = @extschema@._actor()
     WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'envelope_close', m.state, m.state, reason, '{"automatic": false}');
END $$;
COMMENT ON FUNCTION @extschema@._close_envelope(text, text) IS 'internal: implementation of softmig.close_envelope';

CREATE FUNCTION @extschema@.close_envelope(name text, reason text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.close_envelope(text, text) IS
    'close the rollback envelope on purpose (approves new-only writes under on_new_only = reject); owners of both tables only';

CREATE FUNCTION @extschema@._key_typed(migration_id integer, key jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_normalize_key' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._key_typed(integer, jsonb) IS
    'internal: an entity key with its values cast to the legacy key types, as the legacy owner';

CREATE FUNCTION @extschema@._normalize_key(m @extschema@.migrations, key jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v_out jsonb;
BEGIN
    IF key IS NULL OR pg_catalog.jsonb_typeof(key) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'key must be a jsonb object of the legacy key columns',
            HINT = pg_catalog.format('For example {"%s": ...}.', m.legacy_key[1]);
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(key) LOOP
        IF k OPERATOR(pg_catalog.<>) ALL (m.legacy_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('"%s" is not a key column of migration "%s"', k, m.name),
                HINT = pg_catalog.format('The key columns are: %s.', pg_catalog.array_to_string(m.legacy_key, ', '));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY m.legacy_key LOOP
        IF NOT key ? k OR key OPERATOR(pg_catalog.->) k OPERATOR(pg_catalog.=) 'null'::jsonb THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('key lacks column "%s"', k);
        END IF;
    END LOOP;
    -- the casts run as the legacy table's owner (C), never as the catalog owner
    v_out := @extschema@._key_typed(m.id, key);
    RETURN v_out;
END $$;
COMMENT ON FUNCTION @extschema@._normalize_key(@extschema@.migrations, jsonb) IS
    'internal: validate an entity key and type its values like the legacy key columns';

CREATE FUNCTION @extschema@._quarantine(name text, key jsonb, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_key jsonb;
BEGIN
    IF reason IS NULL OR pg_catalog.btrim(reason) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'quarantine needs a reason';
    END IF;
    v_key := @extschema@._normalize_key(m, key);
    INSERT INTO @extschema@.quarantine (migration_id, key, reason, actor)
    VALUES (m.id, v_key, reason, @extschema@._actor())
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('entity %s of migration "%s" is already quarantined', v_key, m.name);
    END IF;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'quarantine', m.state, m.state, reason,
                                 pg_catalog.jsonb_build_object('key', v_key));
END $$;
COMMENT ON FUNCTION @extschema@._quarantine(text, jsonb, text) IS 'internal: implementation of softmig.quarantine';

CREATE FUNCTION @extschema@.quarantine(name text, key jsonb, reason text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.quarantine(text, jsonb, text) IS
    'exclude one entity (legacy key as jsonb) from projection and parity and refuse writes to it on both tables; owners only';

CREATE FUNCTION @extschema@._release(name text, key jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_key jsonb;
    v_rows bigint;
BEGIN
    v_key := @extschema@._normalize_key(m, key);
    DELETE FROM @extschema@.quarantine
     WHERE migration_id OPERATOR(pg_catalog.=) m.id AND quarantine.key OPERATOR(pg_catalog.=) v_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('entity %s of migration "%s" is not quarantined', v_key, m.name);
    END IF;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    -- the other table takes the authoritative version of the entity again
    v_rows := @extschema@._resync_key(m.id, v_key);
    PERFORM @extschema@._history(m.id, 'release', m.state, m.state, NULL,
                                 pg_catalog.jsonb_build_object('key', v_key, 'resynced_rows', v_rows));
END $$;
COMMENT ON FUNCTION @extschema@._release(text, jsonb) IS 'internal: implementation of softmig.release';

CREATE FUNCTION @extschema@.release(name text, key jsonb)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.release(text, jsonb) IS
    'end a quarantine and re-sync the entity from the authoritative table; owners only';

CREATE FUNCTION @extschema@._shadow_disable(name text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    IF reason IS NULL OR pg_catalog.btrim(reason) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'shadow_disable needs a reason';
    END IF;
    m := @extschema@._lock_migration(m.id);
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" has no shadow writes in state %s', m.name, m.state);
    END IF;
    INSERT INTO @extschema@.shadow (migration_id, reason, actor) VALUES (m.id, reason, @extschema@._actor())
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('shadow writes of migration "%s" are already disabled', m.name);
    END IF;
    -- in-flight writers finish with the projection, later ones without it
    PERFORM @extschema@._lock_tables(m, NULL);
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'shadow_disable', m.state, m.state, reason, '{}');
END $$;
COMMENT ON FUNCTION @extschema@._shadow_disable(text, text) IS 'internal: implementation of softmig.shadow_disable';

CREATE FUNCTION @extschema@.shadow_disable(name text, reason text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.shadow_disable(text, text) IS
    'stop writing the non-authoritative table without changing authority (when the projection itself is broken); owners only';

CREATE FUNCTION @extschema@._shadow_enable(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_rows bigint := 0;
BEGIN
    m := @extschema@._lock_migration(m.id);
    -- writers wait while the other table catches up
    PERFORM @extschema@._lock_tables(m, NULL);
    DELETE FROM @extschema@.shadow WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('shadow writes of migration "%s" are not disabled', m.name);
    END IF;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    IF m.state OPERATOR(@extschema@.=) 'mirrored' THEN
        -- what was missed is re-synced by the backfill machinery: a new
        -- mirroring epoch (rows written before now are correctable) and a
        -- new backfill, which advance to new_write waits for
        UPDATE @extschema@.migrations
           SET mirror_snapshot = pg_catalog.pg_current_snapshot(), mirror_xid = pg_catalog.pg_current_xact_id()
         WHERE id OPERATOR(pg_catalog.=) m.id;
        DELETE FROM @extschema@.backfill_progress WHERE migration_id OPERATOR(pg_catalog.=) m.id;
        DELETE FROM @extschema@.backfill_revisit WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    ELSIF m.state OPERATOR(@extschema@.=) ANY (ARRAY['new_write', 'new_read']::@extschema@.state[]) THEN
        v_rows := @extschema@._resync_all(m.id);
    END IF;
    PERFORM @extschema@._history(m.id, 'shadow_enable', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('resynced_rows', v_rows,
                                      'backfill_required', m.state OPERATOR(@extschema@.=) 'mirrored'));
END $$;
COMMENT ON FUNCTION @extschema@._shadow_enable(text) IS 'internal: implementation of softmig.shadow_enable';

CREATE FUNCTION @extschema@.shadow_enable(name text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.shadow_enable(text) IS
    'write the non-authoritative table again and re-sync what was missed (mirrored: a new backfill; new_write/new_read: legacy rebuilt from the target); owners only';

REVOKE ALL ON FUNCTION
    @extschema@._resync_key(integer, jsonb),
    @extschema@._resync_all(integer),
    @extschema@._note_new_only(integer, bigint, jsonb, text, text),
    @extschema@._close_envelope(text, text),
    @extschema@._normalize_key(@extschema@.migrations, jsonb),
    @extschema@._key_typed(integer, jsonb),
    @extschema@._quarantine(text, jsonb, text),
    @extschema@._release(text, jsonb),
    @extschema@._shadow_disable(text, text),
    @extschema@._shadow_enable(text)
FROM PUBLIC;
-------------------------------------------------------------------------------
-- Read paths: reader registry, switch groups, routed views, reader discovery.
-- Routing is computed in C (src/readpath.c) from the two tables below;
-- discovery lives in shared memory (src/discovery.c).
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.reader_registry (
    migration_id  integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    reader        text NOT NULL,        -- the application_name its sessions present
    class         text NOT NULL
                  CHECK (class OPERATOR(pg_catalog.=) ANY (ARRAY['latency', 'consistency', 'audit', 'bulk'])),
    switch_group  text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    registered_by name NOT NULL,
    PRIMARY KEY (migration_id, reader)
);
CREATE INDEX ON @extschema@.reader_registry (migration_id, switch_group);
COMMENT ON TABLE @extschema@.reader_registry IS
    'softmig: registered readers of each migration (by application_name), their class and switch group';

CREATE TABLE @extschema@.read_switches (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    switch_group text NOT NULL,
    side         @extschema@.side NOT NULL,
    switched_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    switched_by  name NOT NULL,
    reason       text,
    PRIMARY KEY (migration_id, switch_group)
);
COMMENT ON TABLE @extschema@.read_switches IS
    'softmig: explicit read position of each switched (or pinned) switch group; groups without a row follow the state';

CREATE TABLE @extschema@.read_views (
    view_name    regclass PRIMARY KEY,
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    shape        @extschema@.side NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   name NOT NULL
);
CREATE INDEX ON @extschema@.read_views (migration_id);
COMMENT ON TABLE @extschema@.read_views IS
    'softmig: routed views created by softmig.create_read_view';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.reader_registry', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.read_switches', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.read_views', '');
REVOKE ALL ON @extschema@.reader_registry, @extschema@.read_switches, @extschema@.read_views FROM PUBLIC;
GRANT SELECT ON @extschema@.reader_registry, @extschema@.read_switches, @extschema@.read_views TO PUBLIC;

-------------------------------------------------------------------------------
-- C entry points
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.read_source(name text, reader text DEFAULT NULL)
RETURNS @extschema@.side
    AS 'MODULE_PATHNAME', 'softmig_read_source' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.read_source(text, text) IS
    'where a reader (NULL: the session''s application_name) reads a migration from: legacy or new; readers nobody registered follow switch group "default"';

CREATE FUNCTION @extschema@.group_source(name text, switch_group text)
RETURNS @extschema@.side
    AS 'MODULE_PATHNAME', 'softmig_group_source' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.group_source(text, text) IS
    'where the readers of a switch group read a migration from ("default": every reader nobody registered)';

CREATE FUNCTION @extschema@.observed_readers(name text)
RETURNS TABLE(reader text, role name, side @extschema@.side, reads bigint, writes bigint,
              first_seen timestamptz, last_seen timestamptz)
    AS 'MODULE_PATHNAME', 'softmig_observed_readers' LANGUAGE C VOLATILE ROWS 20;
COMMENT ON FUNCTION @extschema@.observed_readers(text) IS
    'reader discovery''s raw observations of a migration: per application_name, role and side, statements that read and wrote, first and last seen (empty without shared_preload_libraries)';

CREATE FUNCTION @extschema@.discovery(OUT available boolean, OUT recording boolean,
    OUT max_entries integer, OUT entries integer, OUT evicted bigint,
    OUT evicted_last_seen timestamptz, OUT since timestamptz)
    AS 'MODULE_PATHNAME', 'softmig_discovery_info' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.discovery() IS
    'state of reader discovery: available (softmig preloaded), recording (this session), capacity, use, evictions and since when it observes';

CREATE FUNCTION @extschema@._discovery_forget(p_id integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_discovery_forget' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._discovery_forget(integer) IS
    'internal: remove every discovery observation of a migration in this database';

CREATE FUNCTION @extschema@._readpath_invalidate() RETURNS void
    AS 'MODULE_PATHNAME', 'softmig_readpath_invalidate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._readpath_invalidate() IS
    'internal: make every backend reload its read routing and discovery set at its next statement';

-------------------------------------------------------------------------------
-- The rollback envelope, as far as read paths need it
-------------------------------------------------------------------------------
-- The rule switch_reads applies before moving a group back to legacy.  The
-- rollback-envelope issue owns the envelope and may replace this body (and
-- take the function over); this one reads softmig.envelope (no row: open).
CREATE FUNCTION @extschema@._envelope_open(p_id integer) RETURNS boolean
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT e.open FROM @extschema@.envelope e
                      WHERE e.migration_id OPERATOR(pg_catalog.=) p_id), true)
$$;
COMMENT ON FUNCTION @extschema@._envelope_open(integer) IS
    'internal: is the rollback envelope of a migration open (legacy can still show what users saw)? the envelope issue may replace this body';

-------------------------------------------------------------------------------
-- Option validation and the cutover guard (called from _check_options and
-- _set_state)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._check_reader_window(v jsonb) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i interval;
BEGIN
    IF v IS NULL OR pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.<>) 'string' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('option unregistered_reader_window must be a string holding an interval, not %s', v),
            HINT = 'For example "15 minutes"; "0" turns the unregistered-reader check off.';
    END IF;
    BEGIN
        i := (v OPERATOR(pg_catalog.#>>) '{}')::interval;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('option unregistered_reader_window is not a valid interval: %s', v),
            HINT = 'For example "15 minutes"; "0" turns the unregistered-reader check off.';
    END;
    IF i OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('option unregistered_reader_window must not be negative: %s', v);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._check_reader_window(jsonb) IS
    'internal: raise 22023 unless option unregistered_reader_window is a non-negative interval string';

CREATE FUNCTION @extschema@._readpath_guard(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    d record;
    v_window interval;
    v_list text;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    v_window := COALESCE((m.options OPERATOR(pg_catalog.->>) 'unregistered_reader_window')::interval,
                         '15 minutes'::interval);

    -- 1. registered readers whose group still reads legacy
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (group %s)', r.reader, r.switch_group),
                                 ', ' ORDER BY r.reader)
      INTO v_list
      FROM @extschema@.reader_registry r
     WHERE r.migration_id OPERATOR(pg_catalog.=) p_id
       AND @extschema@.group_source(m.name, r.switch_group) OPERATOR(pg_catalog.=) 'legacy'::@extschema@.side;
    IF v_list IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" to cutover: registered readers still read legacy: %s',
                                        m.name, v_list),
            DETAIL = 'After cutover legacy is frozen; every reader must read the target first.',
            HINT = pg_catalog.format('Switch their groups with softmig.switch_reads(%L, <group>, ''new''), or pass force => true with a reason.', m.name);
    END IF;

    -- 2. readers nobody registered that touched legacy within the window
    IF v_window OPERATOR(pg_catalog.=) '0'::interval THEN
        RETURN;                 -- the check is turned off for this migration
    END IF;
    SELECT * INTO d FROM @extschema@.discovery();
    IF NOT d.available THEN
        RAISE NOTICE 'reader discovery is off (softmig is not in shared_preload_libraries): readers nobody registered were not checked';
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (last %s)',
               CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(no application_name)'
                    ELSE pg_catalog.quote_literal(o.reader) END,
               o.last_seen), ', ' ORDER BY o.reader)
      INTO v_list
      FROM (SELECT x.reader, pg_catalog.max(x.last_seen) AS last_seen
              FROM @extschema@.observed_readers(m.name) x
             WHERE x.side OPERATOR(pg_catalog.=) 'legacy'::@extschema@.side
               -- the caller (its application_name and role) vouches for itself
               AND NOT (x.reader OPERATOR(pg_catalog.=) pg_catalog.current_setting('application_name')
                        AND x.role OPERATOR(pg_catalog.=) @extschema@._actor())
               AND NOT EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                                WHERE r.migration_id OPERATOR(pg_catalog.=) p_id
                                  AND r.reader OPERATOR(pg_catalog.=) x.reader)
             GROUP BY x.reader
            HAVING pg_catalog.max(x.last_seen) OPERATOR(pg_catalog.>) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) v_window)) o;
    IF v_list IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" to cutover: readers nobody registered touched legacy table %s within the last %s: %s',
                                        m.name, m.legacy, v_window, v_list),
            DETAIL = 'Reader discovery saw them read or write the legacy table; after cutover it is frozen and they would read stale data.',
            HINT = pg_catalog.format('Register them with softmig.register_reader(%L, ...) and switch their group, wait until they have been quiet for option unregistered_reader_window, or pass force => true with a reason.', m.name);
    END IF;

    -- 3. evidence that discovery had to throw away
    IF d.evicted_last_seen OPERATOR(pg_catalog.>) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) v_window) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" to cutover: reader discovery evicted observations seen within the last %s',
                                        m.name, v_window),
            DETAIL = pg_catalog.format('Its table is full (%s entries); a reader of legacy may have been forgotten.', d.max_entries),
            HINT = 'Raise softmig.discovery_max_entries (restart), retry after the window, or pass force => true with a reason.';
    END IF;
    -- After a restart discovery starts empty; say so in the server log
    -- (softmig.discovery().since tells the operator too).
    IF d.since OPERATOR(pg_catalog.>) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) v_window) THEN
        RAISE LOG 'softmig: cutover of migration "%": reader discovery has only observed since % (server start), less than unregistered_reader_window (%)',
            m.name, d.since, v_window;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._readpath_guard(integer) IS
    'internal: new_read -> cutover guard: no registered reader reads legacy, no reader nobody registered touched legacy within option unregistered_reader_window';

-------------------------------------------------------------------------------
-- Registry and switches
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._register_reader(name text, reader text, class text, switch_group text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_reader text := reader;
    v_class text := class;
    v_group text := switch_group;
    v_old @extschema@.reader_registry;
    v_before @extschema@.side;
BEGIN
    IF v_reader IS NULL OR v_class IS NULL OR v_group IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'reader, class and switch_group must not be null';
    END IF;
    IF pg_catalog.btrim(v_reader) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'reader name must not be empty',
            HINT = 'A reader is the application_name its sessions present.';
    END IF;
    IF pg_catalog.octet_length(v_reader) OPERATOR(pg_catalog.>) 63 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('reader name "%s" is longer than 63 bytes', v_reader),
            DETAIL = 'PostgreSQL truncates application_name to 63 bytes, so no session could present it.';
    END IF;
    IF v_reader OPERATOR(pg_catalog.~) '[^ -~]' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('reader name "%s" contains characters application_name cannot hold', v_reader),
            DETAIL = 'PostgreSQL replaces anything but printable ASCII in application_name with question marks.';
    END IF;
    IF v_class OPERATOR(pg_catalog.<>) ALL (ARRAY['latency', 'consistency', 'audit', 'bulk']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('unknown reader class "%s"', v_class),
            HINT = 'Reader classes: latency, consistency, audit, bulk.';
    END IF;
    IF pg_catalog.btrim(v_group) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'switch group must not be empty';
    END IF;

    m := @extschema@._lock_migration(m.id);
    SELECT * INTO v_old FROM @extschema@.reader_registry r
     WHERE r.migration_id OPERATOR(pg_catalog.=) m.id AND r.reader OPERATOR(pg_catalog.=) v_reader;
    IF FOUND AND v_old.class OPERATOR(pg_catalog.=) v_class AND v_old.switch_group OPERATOR(pg_catalog.=) v_group THEN
        RETURN;                 -- already registered exactly so
    END IF;
    v_before := @extschema@.read_source(m.name, v_reader);
    INSERT INTO @extschema@.reader_registry AS r (migration_id, reader, class, switch_group, registered_by)
    VALUES (m.id, v_reader, v_class, v_group, @extschema@._actor())
    ON CONFLICT ON CONSTRAINT reader_registry_pkey DO UPDATE
       SET class = EXCLUDED.class, switch_group = EXCLUDED.switch_group,
           registered_at = pg_catalog.now(), registered_by = EXCLUDED.registered_by;
    PERFORM @extschema@._readpath_invalidate();
    PERFORM @extschema@._history(m.id, 'register_reader', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('reader', v_reader, 'class', v_class, 'switch_group', v_group,
            'previous', CASE WHEN v_old.reader IS NULL THEN NULL
                             ELSE pg_catalog.jsonb_build_object('class', v_old.class, 'switch_group', v_old.switch_group) END,
            'source_before', v_before,
            'source', @extschema@.group_source(m.name, v_group)));
END $$;
COMMENT ON FUNCTION @extschema@._register_reader(text, text, text, text) IS
    'internal: implementation of softmig.register_reader';

CREATE FUNCTION @extschema@.register_reader(name text, reader text, class text,
                                            switch_group text DEFAULT 'default')
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.register_reader(text, text, text, text) IS
    'register (or re-register) a reader of a migration by the application_name it presents, with its class (latency, consistency, audit, bulk) and switch group; owners of both tables only';

CREATE FUNCTION @extschema@._unregister_reader(name text, reader text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_reader text := reader;
    v_old @extschema@.reader_registry;
BEGIN
    m := @extschema@._lock_migration(m.id);
    DELETE FROM @extschema@.reader_registry r
     WHERE r.migration_id OPERATOR(pg_catalog.=) m.id AND r.reader OPERATOR(pg_catalog.=) v_reader
    RETURNING * INTO v_old;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('reader "%s" is not registered for migration "%s"', v_reader, m.name),
            HINT = pg_catalog.format('softmig.readers(%L) lists its readers.', m.name);
    END IF;
    PERFORM @extschema@._readpath_invalidate();
    PERFORM @extschema@._history(m.id, 'unregister_reader', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('reader', v_reader, 'class', v_old.class, 'switch_group', v_old.switch_group));
END $$;
COMMENT ON FUNCTION @extschema@._unregister_reader(text, text) IS
    'internal: implementation of softmig.unregister_reader';

CREATE FUNCTION @extschema@.unregister_reader(name text, reader text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.unregister_reader(text, text) IS
    'remove a reader from the registry (it then follows switch group "default"); owners of both tables only';

CREATE FUNCTION @extschema@._switch_reads(name text, switch_group text, to_side @extschema@.side, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_group text := switch_group;
    v_to @extschema@.side := to_side;
    v_from @extschema@.side;
    v_explicit @extschema@.side;
    v_readers jsonb;
BEGIN
    IF v_group IS NULL OR v_to IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'switch_group and to_side must not be null';
    END IF;
    -- serialize with state changes: the checks below hold until commit
    m := @extschema@._lock_migration(m.id);

    SELECT pg_catalog.jsonb_agg(r.reader ORDER BY r.reader) INTO v_readers
      FROM @extschema@.reader_registry r
     WHERE r.migration_id OPERATOR(pg_catalog.=) m.id AND r.switch_group OPERATOR(pg_catalog.=) v_group;
    IF v_readers IS NULL AND v_group OPERATOR(pg_catalog.<>) 'default' THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('switch group "%s" of migration "%s" has no registered readers', v_group, m.name),
            HINT = 'Register readers into it with softmig.register_reader; group "default" holds every reader nobody registered.';
    END IF;
    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot switch reads of migration "%s" in state legacy', m.name),
            DETAIL = 'The target is not kept in step before mirroring starts.',
            HINT = pg_catalog.format('Advance to mirrored and CALL softmig.backfill(%L) first.', m.name);
    END IF;
    IF m.state OPERATOR(@extschema@.=) 'cutover' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot switch reads of migration "%s" in state cutover', m.name),
            DETAIL = 'After cutover every reader reads the target; legacy is frozen.';
    END IF;

    SELECT s.side INTO v_explicit FROM @extschema@.read_switches s
     WHERE s.migration_id OPERATOR(pg_catalog.=) m.id AND s.switch_group OPERATOR(pg_catalog.=) v_group;
    IF v_explicit OPERATOR(pg_catalog.=) v_to THEN
        RAISE NOTICE 'switch group "%" of migration "%" already reads from %', v_group, m.name, v_to;
        RETURN;
    END IF;
    v_from := @extschema@.group_source(m.name, v_group);

    IF v_to OPERATOR(pg_catalog.=) 'new' AND m.state OPERATOR(@extschema@.<) 'new_read'
       AND NOT @extschema@._backfill_done(m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot switch reads of group "%s" of migration "%s" to new: the backfill is not done',
                                        v_group, m.name),
            DETAIL = 'The target must hold every legacy row before anyone reads from it.',
            HINT = pg_catalog.format('CALL softmig.backfill(%L) first.', m.name);
    END IF;
    IF v_to OPERATOR(pg_catalog.=) 'legacy' AND m.state OPERATOR(@extschema@.>=) 'new_write'
       AND NOT @extschema@._envelope_open(m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot switch reads of group "%s" of migration "%s" back to legacy: the rollback envelope is closed',
                                        v_group, m.name),
            DETAIL = 'The target holds state legacy cannot represent, so readers moved back would not see what users already saw.',
            HINT = pg_catalog.format('Fix forward on the target (softmig.quarantine, softmig.shadow_disable); softmig.envelope(%L) says why it closed.', m.name);
    END IF;

    INSERT INTO @extschema@.read_switches AS s (migration_id, switch_group, side, switched_by, reason)
    VALUES (m.id, v_group, v_to, @extschema@._actor(), reason)
    ON CONFLICT ON CONSTRAINT read_switches_pkey DO UPDATE
       SET side = EXCLUDED.side, switched_at = pg_catalog.now(),
           switched_by = EXCLUDED.switched_by, reason = EXCLUDED.reason;
    PERFORM @extschema@._readpath_invalidate();
    PERFORM @extschema@._history(m.id, 'switch_reads', m.state, m.state, reason,
        pg_catalog.jsonb_build_object('switch_group', v_group, 'from', v_from, 'to', v_to,
                                      'readers', COALESCE(v_readers, '[]'::jsonb)));
END $$;
COMMENT ON FUNCTION @extschema@._switch_reads(text, text, @extschema@.side, text) IS
    'internal: implementation of softmig.switch_reads';

CREATE FUNCTION @extschema@.switch_reads(name text, switch_group text,
                                         to_side @extschema@.side DEFAULT 'new', reason text DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.switch_reads(text, text, @extschema@.side, text) IS
    'move every reader of a switch group to a read source at once (to new: once the backfill is done; back to legacy: while the rollback envelope is open; never in legacy or cutover); recorded in history; owners of both tables only';

-------------------------------------------------------------------------------
-- Routed views
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._create_read_view(name text, view_name text, shape @extschema@.side)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_shape @extschema@.side := shape;
    v_actor name := @extschema@._actor();
    v_parts text[];
    v_schema text;
    v_view text;
    v_nsp oid;
    v_own regclass;             -- the table whose columns the view has
    v_other regclass;           -- the table mapped into that shape
    v_dir text;                 -- mappings feeding v_own's columns from v_other
    v_own_side @extschema@.side;
    v_other_side @extschema@.side;
    v_own_list text;
    v_inner_list text;
    v_outer_list text;
    v_sql text;
    v_src_col name;
BEGIN
    IF view_name IS NULL OR v_shape IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'view_name and shape must not be null';
    END IF;
    v_parts := pg_catalog.parse_ident(view_name);
    IF pg_catalog.cardinality(v_parts) OPERATOR(pg_catalog.>) 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_name',
            MESSAGE = pg_catalog.format('improper view name (too many dotted names): %s', view_name);
    END IF;
    IF pg_catalog.cardinality(v_parts) OPERATOR(pg_catalog.=) 2 THEN
        v_schema := v_parts[1];
        v_view := v_parts[2];
    ELSE
        -- an unqualified name goes next to the legacy table, whatever the
        -- caller's search_path says
        SELECT n.nspname INTO v_schema
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
         WHERE c.oid OPERATOR(pg_catalog.=) m.legacy;
        v_view := v_parts[1];
    END IF;
    SELECT n.oid INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) v_schema;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_schema_name',
            MESSAGE = pg_catalog.format('schema "%s" does not exist', v_schema);
    END IF;
    IF NOT pg_catalog.has_schema_privilege(v_actor, v_nsp, 'CREATE') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('permission denied for schema %s', v_schema),
            DETAIL = pg_catalog.format('The view is created as role %s, which needs CREATE on the schema.', v_actor);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                WHERE c.relnamespace OPERATOR(pg_catalog.=) v_nsp AND c.relname OPERATOR(pg_catalog.=) v_view) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_table',
            MESSAGE = pg_catalog.format('relation "%s.%s" already exists', v_schema, v_view);
    END IF;

    IF v_shape OPERATOR(pg_catalog.=) 'legacy' THEN
        v_own := m.legacy; v_other := m.target; v_dir := 'backward';
        v_own_side := 'legacy'; v_other_side := 'new';
    ELSE
        v_own := m.target; v_other := m.legacy; v_dir := 'forward';
        v_own_side := 'new'; v_other_side := 'legacy';
    END IF;

    -- the shape's own table: its columns as they are
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
      INTO v_own_list
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;

    -- the other table mapped into the shape: stored columns through the
    -- mapping (NULL where nothing maps), then generated columns computed
    -- from those, with the shape's types and collations
    SELECT pg_catalog.string_agg(
               CASE WHEN mp.expression IS NULL
                    THEN 'NULL::' OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
                    ELSE '(' OPERATOR(pg_catalog.||) mp.expression OPERATOR(pg_catalog.||) E'\n)::'
                         OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod) END
               OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname),
               ', ' ORDER BY a.attnum)
      INTO v_inner_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN @extschema@.mappings mp
             ON mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) v_dir
            AND mp.column_name OPERATOR(pg_catalog.=) a.attname
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND a.attgenerated OPERATOR(pg_catalog.=) '';
    SELECT pg_catalog.string_agg(
               CASE WHEN a.attgenerated OPERATOR(pg_catalog.<>) ''
                    THEN '(' OPERATOR(pg_catalog.||) pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)
                         OPERATOR(pg_catalog.||) ')::' OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
                    ELSE pg_catalog.quote_ident(a.attname) END
               OPERATOR(pg_catalog.||)
               CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) 0
                         AND a.attcollation OPERATOR(pg_catalog.<>) 'pg_catalog.default'::pg_catalog.regcollation
                    THEN ' COLLATE ' OPERATOR(pg_catalog.||) a.attcollation::pg_catalog.regcollation::text
                    ELSE '' END
               OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname),
               ', ' ORDER BY a.attnum)
      INTO v_outer_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN pg_catalog.pg_attrdef ad
             ON ad.adrelid OPERATOR(pg_catalog.=) a.attrelid AND ad.adnum OPERATOR(pg_catalog.=) a.attnum
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;

    -- Each branch carries its side as a constant column; the one filter
    -- "that column = read_source(...)" is pushed into both branches, where it
    -- no longer depends on any row: the planner turns it into a One-Time
    -- Filter, so the branch not taken is never executed.  The branches have
    -- no WHERE clause of their own, so they are flattened into an append
    -- relation (no Subquery Scan in between), and filters on the view, key
    -- filters included, reach each table's indexes.
    v_src_col := 'softmig_source';
    WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attname OPERATOR(pg_catalog.=) v_src_col) LOOP
        v_src_col := v_src_col OPERATOR(pg_catalog.||) '_';
    END LOOP;
    v_sql := pg_catalog.format(
        'CREATE VIEW %I.%I%s AS SELECT %s FROM ('
        ' SELECT %s, %L::@extschema@.side AS %I FROM %s'
        ' UNION ALL'
        ' SELECT %s, %L::@extschema@.side FROM (SELECT %s FROM %s) AS softmig_mapped'
        ') AS softmig_routed'
        ' WHERE softmig_routed.%I OPERATOR(pg_catalog.=) @extschema@.read_source(%L::text)',
        v_schema, v_view,
        CASE WHEN pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog.>=) 150000
             THEN ' WITH (security_invoker = true)' ELSE '' END,
        v_own_list,
        v_own_list, v_own_side, v_src_col, v_own,
        v_outer_list, v_other_side, v_inner_list, v_other,
        v_src_col, m.name);
    EXECUTE v_sql;
    EXECUTE pg_catalog.format('ALTER VIEW %I.%I OWNER TO %I', v_schema, v_view, v_actor);
    EXECUTE pg_catalog.format('COMMENT ON VIEW %I.%I IS %L', v_schema, v_view,
        pg_catalog.format('softmig routed view of migration "%s" in the %s shape: rows come from the caller''s read source (softmig.read_source)',
                          m.name, v_shape));

    INSERT INTO @extschema@.read_views (view_name, migration_id, shape, created_by)
    VALUES (pg_catalog.format('%I.%I', v_schema, v_view)::pg_catalog.regclass, m.id, v_shape, v_actor);
    PERFORM @extschema@._history(m.id, 'create_read_view', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('view', pg_catalog.format('%I.%I', v_schema, v_view), 'shape', v_shape));
END $$;
COMMENT ON FUNCTION @extschema@._create_read_view(text, text, @extschema@.side) IS
    'internal: implementation of softmig.create_read_view';

CREATE FUNCTION @extschema@.create_read_view(name text, view_name text,
                                             shape @extschema@.side DEFAULT 'legacy')
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.create_read_view(text, text, @extschema@.side) IS
    'create a view in legacy''s or the target''s shape whose rows come from the caller''s read source (owned by the caller, security_invoker); owners of both tables only';

-------------------------------------------------------------------------------
-- Inventory
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.readers(name text)
RETURNS TABLE(reader text, class text, switch_group text, source @extschema@.side,
              registered boolean, last_seen timestamptz, reads bigint, writes bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_on boolean := (SELECT d.available FROM @extschema@.discovery() d);
BEGIN
    IF NOT v_on THEN
        RAISE NOTICE 'reader discovery is off: softmig is not in shared_preload_libraries, so only registered readers are listed'
            USING HINT = 'Add softmig to shared_preload_libraries and restart to see every application that reads the tables.';
    END IF;
    RETURN QUERY
    WITH obs AS (
        SELECT o.reader, pg_catalog.max(o.last_seen) AS last_seen,
               pg_catalog.sum(o.reads)::bigint AS reads, pg_catalog.sum(o.writes)::bigint AS writes
          FROM @extschema@.observed_readers(m.name) o
         GROUP BY o.reader),
    reg AS (
        SELECT r.reader, r.class, r.switch_group
          FROM @extschema@.reader_registry r
         WHERE r.migration_id OPERATOR(pg_catalog.=) m.id)
    SELECT COALESCE(reg.reader, obs.reader),
           reg.class,
           COALESCE(reg.switch_group, 'default'),
           @extschema@.group_source(m.name, COALESCE(reg.switch_group, 'default')),
           reg.reader IS NOT NULL,
           obs.last_seen,
           CASE WHEN v_on THEN COALESCE(obs.reads, 0) END,
           CASE WHEN v_on THEN COALESCE(obs.writes, 0) END
      FROM reg FULL JOIN obs ON obs.reader OPERATOR(pg_catalog.=) reg.reader
     ORDER BY 1;
END $$;
COMMENT ON FUNCTION @extschema@.readers(text) IS
    'registered and observed readers of a migration: class, switch group, read source, and (with discovery) last seen, read and write statements; registered = false flags a reader nobody registered';

CREATE FUNCTION @extschema@._reset_discovery(name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    n bigint;
BEGIN
    n := @extschema@._discovery_forget(m.id);
    PERFORM @extschema@._history(m.id, 'reset_discovery', m.state, m.state, NULL,
                                 pg_catalog.jsonb_build_object('observations', n));
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._reset_discovery(text) IS
    'internal: implementation of softmig.reset_discovery';

CREATE FUNCTION @extschema@.reset_discovery(name text)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.reset_discovery(text) IS
    'forget every discovery observation of a migration (recorded in history) and return how many; owners of both tables only';

-------------------------------------------------------------------------------
-- Keeping routing in step with the catalog
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._readpath_catalog_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@._readpath_invalidate();
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@._readpath_catalog_changed() IS
    'internal: AFTER statement trigger on softmig.migrations: backends reload read routing and the discovery set';

CREATE TRIGGER readpath_catalog_changed
    AFTER INSERT OR UPDATE OR DELETE ON @extschema@.migrations
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._readpath_catalog_changed();

CREATE FUNCTION @extschema@._readpath_reset_switches() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_switches jsonb;
BEGIN
    WITH d AS (DELETE FROM @extschema@.read_switches s
                WHERE s.migration_id OPERATOR(pg_catalog.=) NEW.id
               RETURNING s.switch_group, s.side)
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('switch_group', d.switch_group, 'side', d.side)
                                ORDER BY d.switch_group)
      INTO v_switches FROM d;
    IF v_switches IS NOT NULL THEN
        PERFORM @extschema@._history(NEW.id, 'reset_reads', OLD.state, NEW.state,
            'rolled back to legacy: the target is no longer kept in step',
            pg_catalog.jsonb_build_object('switches', v_switches));
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@._readpath_reset_switches() IS
    'internal: AFTER UPDATE trigger on softmig.migrations: a rollback to legacy forgets every read switch (recorded in history)';

CREATE TRIGGER readpath_reset_switches
    AFTER UPDATE OF state ON @extschema@.migrations
    FOR EACH ROW
    WHEN (NEW.state OPERATOR(@extschema@.=) 'legacy' AND OLD.state OPERATOR(@extschema@.<>) 'legacy')
    EXECUTE FUNCTION @extschema@._readpath_reset_switches();

CREATE FUNCTION @extschema@._readpath_before_drop() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_views text;
BEGIN
    -- forget views dropped by hand; refuse while routed views remain
    DELETE FROM @extschema@.read_views v
     WHERE v.migration_id OPERATOR(pg_catalog.=) OLD.id
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) v.view_name);
    SELECT pg_catalog.string_agg(v.view_name::text, ', ' ORDER BY v.view_name::text) INTO v_views
      FROM @extschema@.read_views v WHERE v.migration_id OPERATOR(pg_catalog.=) OLD.id;
    IF v_views IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = pg_catalog.format('cannot drop migration "%s": routed views depend on it: %s', OLD.name, v_views),
            HINT = 'Point their readers at the target table and drop the views first.';
    END IF;
    RETURN OLD;
END $$;
COMMENT ON FUNCTION @extschema@._readpath_before_drop() IS
    'internal: BEFORE DELETE trigger on softmig.migrations: a migration with routed views cannot be dropped';

CREATE TRIGGER readpath_before_drop
    BEFORE DELETE ON @extschema@.migrations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._readpath_before_drop();

REVOKE ALL ON FUNCTION
    @extschema@._discovery_forget(integer),
    @extschema@._readpath_invalidate(),
    @extschema@._envelope_open(integer),
    @extschema@._check_reader_window(jsonb),
    @extschema@._readpath_guard(integer),
    @extschema@._register_reader(text, text, text, text),
    @extschema@._unregister_reader(text, text),
    @extschema@._switch_reads(text, text, @extschema@.side, text),
    @extschema@._create_read_view(text, text, @extschema@.side),
    @extschema@._reset_discovery(text),
    @extschema@._readpath_catalog_changed(),
    @extschema@._readpath_reset_switches(),
    @extschema@._readpath_before_drop()
FROM PUBLIC;
-------------------------------------------------------------------------------
-- Semantic observability: parity, invariants, transition rules, check,
-- inspect, report, metrics, pgTAP helpers (C in src/parity.c, src/rules.c;
-- guide in doc/observability.md).
-------------------------------------------------------------------------------

-------------------------------------------------------------------------------
-- Catalog
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.invariants (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    name         text NOT NULL,
    query        text NOT NULL,      -- one read-only SELECT returning the violating rows
    severity     text NOT NULL CHECK (severity OPERATOR(pg_catalog.=) ANY (ARRAY['error', 'warn'])),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   name NOT NULL,
    PRIMARY KEY (migration_id, name)
);
COMMENT ON TABLE @extschema@.invariants IS
    'softmig: behavioural invariants of each migration: queries returning violating rows (severity error blocks mirrored -> new_write)';

CREATE TABLE @extschema@.transition_rules (
    id           serial PRIMARY KEY,
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    tbl          regclass NOT NULL,  -- the migration's legacy or target table
    col          name NOT NULL,
    from_value   text,               -- NULL: the first value (INSERT, or a row whose column is still NULL)
    to_value     text NOT NULL,      -- values are stored in the column type's canonical text form
    requires     text,               -- boolean SQL expression over the new row (new.<col>), or NULL
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   name NOT NULL
);
CREATE UNIQUE INDEX transition_rules_edge ON @extschema@.transition_rules
    (migration_id, tbl, col, (from_value IS NULL), (COALESCE(from_value, '')), to_value);
COMMENT ON TABLE @extschema@.transition_rules IS
    'softmig: allowed edges of status columns, enforced by the trigger softmig_rule_<migration id> on the table';

-- No foreign key to softmig.migrations on purpose (as for softmig.operations):
-- a writer recording a violation must not lock the migration's row.  Rows of
-- a dropped migration are removed by the trigger at the end of this file.
CREATE TABLE @extschema@.rule_violations (
    id           bigserial PRIMARY KEY,
    migration_id integer NOT NULL,
    rule_id      integer,            -- the edge's rule when its requires was not true; NULL: no rule allows the edge
    tbl          text NOT NULL,
    col          name NOT NULL,
    from_value   text,
    to_value     text,
    key          jsonb NOT NULL,     -- the entity, as legacy key columns
    reason       text NOT NULL CHECK (reason OPERATOR(pg_catalog.=) ANY (ARRAY['edge', 'requires'])),
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    actor        name NOT NULL,
    xid          xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
CREATE INDEX rule_violations_migration ON @extschema@.rule_violations (migration_id, id);
COMMENT ON TABLE @extschema@.rule_violations IS
    'softmig: transition-rule violations let through under option transition_rules = observe';

CREATE SEQUENCE @extschema@.check_run_seq AS bigint;
CREATE TABLE @extschema@.check_results (
    run_id       bigint NOT NULL,
    migration_id integer NOT NULL,   -- no foreign key: see rule_violations
    at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    actor        name NOT NULL,
    state        @extschema@.state NOT NULL,
    ordinal      integer NOT NULL,
    layer        text NOT NULL CHECK (layer OPERATOR(pg_catalog.=) ANY (ARRAY['transport', 'structural', 'behavioral'])),
    check_name   text NOT NULL,
    ok           boolean NOT NULL,
    violations   bigint NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',   -- with a bounded sample of violating keys
    PRIMARY KEY (run_id, ordinal)
);
CREATE INDEX check_results_migration ON @extschema@.check_results (migration_id, run_id);
COMMENT ON TABLE @extschema@.check_results IS
    'softmig: every softmig.check run, one row per check (a time series for dashboards)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.invariants', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.transition_rules', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.transition_rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rule_violations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rule_violations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.check_results', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.check_run_seq', '');

REVOKE ALL ON @extschema@.invariants, @extschema@.transition_rules, @extschema@.rule_violations,
              @extschema@.check_results FROM PUBLIC;
GRANT SELECT ON @extschema@.invariants, @extschema@.transition_rules, @extschema@.rule_violations,
                @extschema@.check_results TO PUBLIC;

-------------------------------------------------------------------------------
-- Quarantine as parity sees it
-------------------------------------------------------------------------------
-- Parity skips the entities this function lists (legacy-key jsonb objects).
-- The quarantine itself belongs to the envelope work (issue 6, table
-- softmig.quarantine); that work may replace this body, parity only relies on
-- the signature.
CREATE FUNCTION @extschema@._quarantined_keys(p_id integer) RETURNS SETOF jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT q.key FROM @extschema@.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._quarantined_keys(integer) IS
    'internal: the quarantined entities of a migration (legacy-key jsonb), which parity skips; the quarantine work owns the body';

-------------------------------------------------------------------------------
-- C functions
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.parity(name text, chunk_rows integer DEFAULT 10000)
RETURNS TABLE(kind text, key jsonb, field text, legacy_value text, target_value text)
    AS 'MODULE_PATHNAME', 'softmig_parity' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.parity(text, integer) IS
    'every difference between legacy (through the forward mapping) and the target on strict fields: missing_in_target, missing_in_legacy, one mismatch per field; exact, read-only, for a caller who may read both tables';

-- Phase 1 of parity: the digest of one side, computed by an aggregate so the
-- planner can scan and map in parallel workers.  Executable by everyone: the
-- table owners run it inside parity, and it only hashes its arguments.
CREATE FUNCTION @extschema@._parity_acc(state bytea, VARIADIC "any") RETURNS bytea
    AS 'MODULE_PATHNAME', 'softmig_parity_acc' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._parity_acc(bytea, "any") IS
    'internal: transition function of softmig.parity_digest';
CREATE FUNCTION @extschema@._parity_combine(a bytea, b bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'softmig_parity_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._parity_combine(bytea, bytea) IS
    'internal: combine function of softmig.parity_digest (adds partial digests)';
CREATE AGGREGATE @extschema@.parity_digest(VARIADIC "any") (
    SFUNC = @extschema@._parity_acc,
    STYPE = bytea,
    COMBINEFUNC = @extschema@._parity_combine,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.parity_digest(VARIADIC "any") IS
    'building block of softmig.parity: per-chunk row counts and digests of one side (arguments: seed, key count, collations, boundary and quarantine arrays, columns); public because table owners run it';

CREATE FUNCTION @extschema@._parity_summary(p_id integer, chunk_rows integer, sample integer)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_parity_summary' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._parity_summary(integer, integer, integer) IS
    'internal: parity counts per kind and field, a bounded sample of keys and run statistics (for check and the new_write guard)';

CREATE FUNCTION @extschema@._rule_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_rule_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._rule_trigger() IS
    'internal: AFTER INSERT OR UPDATE row trigger enforcing (or observing) the transition rules of a table';

CREATE FUNCTION @extschema@._check_rule(tbl regclass, col name, from_value text, to_value text, requires text)
RETURNS text[] AS 'MODULE_PATHNAME', 'softmig_check_rule' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._check_rule(regclass, name, text, text, text) IS
    'internal: validate a transition rule as the table owner and return its from/to values in canonical form';

CREATE FUNCTION @extschema@._validate_invariant(legacy regclass, query text) RETURNS text
    AS 'MODULE_PATHNAME', 'softmig_validate_invariant' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._validate_invariant(regclass, text) IS
    'internal: check, as the legacy table''s owner who will run it, that an invariant query is one read-only SELECT; returns it trimmed';

CREATE FUNCTION @extschema@.invariant_violations(name text, invariant text DEFAULT NULL, sample integer DEFAULT 10)
RETURNS TABLE(invariant text, severity text, violations bigint, sample jsonb)
    AS 'MODULE_PATHNAME', 'softmig_invariant_violations' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.invariant_violations(text, text, integer) IS
    'run the invariants of a migration (or one) as its legacy table''s owner, read-only, for a caller who may read both tables: rows returned and a sample of them';

-------------------------------------------------------------------------------
-- Options of this concern (called from _check_options)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._check_observe_option(p_key text, p_value jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ok boolean;
BEGIN
    IF p_key OPERATOR(pg_catalog.=) 'transition_rules'
       AND p_value OPERATOR(pg_catalog.<>) ALL (ARRAY['"enforce"'::jsonb, '"observe"'::jsonb]) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('option transition_rules must be "enforce" or "observe", not %s', p_value);
    END IF;
    IF p_key OPERATOR(pg_catalog.=) 'parity_chunk_rows' THEN
        -- step by step: a cast is only tried on what is surely an integer
        IF pg_catalog.jsonb_typeof(p_value) OPERATOR(pg_catalog.<>) 'number'
           OR p_value::text OPERATOR(pg_catalog.!~) '^[0-9]{1,8}$' THEN
            v_ok := false;
        ELSE
            v_ok := p_value::text::integer BETWEEN 1 AND 10000000;
        END IF;
        IF NOT v_ok THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option parity_chunk_rows must be an integer between 1 and 10000000, not %s', p_value);
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._check_observe_option(text, jsonb) IS
    'internal: validate the options transition_rules and parity_chunk_rows';

CREATE FUNCTION @extschema@._chunk_rows(m @extschema@.migrations) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((m.options OPERATOR(pg_catalog.->>) 'parity_chunk_rows')::integer, 10000)
$$;
COMMENT ON FUNCTION @extschema@._chunk_rows(@extschema@.migrations) IS
    'internal: the parity chunk size of a migration (option parity_chunk_rows, default 10000)';

-------------------------------------------------------------------------------
-- Invariants
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._add_invariant(name text, invariant text, query text, severity text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_query text;
BEGIN
    IF invariant IS NULL OR pg_catalog.btrim(invariant) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'invariant name must not be empty';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'invariant query must not be null';
    END IF;
    IF severity IS NULL OR severity OPERATOR(pg_catalog.<>) ALL (ARRAY['error', 'warn']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('severity must be error or warn, not %s', COALESCE(severity, 'NULL')),
            HINT = 'error blocks mirrored -> new_write while the invariant has violations; warn only reports.';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.invariants i
                WHERE i.migration_id OPERATOR(pg_catalog.=) m.id AND i.name OPERATOR(pg_catalog.=) invariant) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('invariant "%s" of migration "%s" already exists', invariant, m.name),
            HINT = 'softmig.drop_invariant removes it.';
    END IF;
    v_query := @extschema@._validate_invariant(m.legacy, query);   -- as the legacy owner
    INSERT INTO @extschema@.invariants (migration_id, name, query, severity, created_by)
    VALUES (m.id, invariant, v_query, severity, @extschema@._actor());
    PERFORM @extschema@._history(m.id, 'add_invariant', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('invariant', invariant, 'severity', severity, 'query', v_query));
END $$;
COMMENT ON FUNCTION @extschema@._add_invariant(text, text, text, text) IS 'internal: implementation of softmig.add_invariant';

CREATE FUNCTION @extschema@.add_invariant(name text, invariant text, query text, severity text DEFAULT 'error')
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.add_invariant(text, text, text, text) IS
    'add a behavioural invariant: a read-only SELECT returning the violating rows, severity error or warn; owners of both tables only';

CREATE FUNCTION @extschema@._drop_invariant(name text, invariant text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    i @extschema@.invariants;
BEGIN
    DELETE FROM @extschema@.invariants x
     WHERE x.migration_id OPERATOR(pg_catalog.=) m.id AND x.name OPERATOR(pg_catalog.=) invariant
    RETURNING * INTO i;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('invariant "%s" of migration "%s" does not exist', invariant, m.name);
    END IF;
    PERFORM @extschema@._history(m.id, 'drop_invariant', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('invariant', i.name, 'severity', i.severity, 'query', i.query));
END $$;
COMMENT ON FUNCTION @extschema@._drop_invariant(text, text) IS 'internal: implementation of softmig.drop_invariant';

CREATE FUNCTION @extschema@.drop_invariant(name text, invariant text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_invariant(text, text) IS
    'remove an invariant; owners of both tables only';

-------------------------------------------------------------------------------
-- Transition rules
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._install_rule_trigger(p_id integer, p_tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := 'softmig_rule_' OPERATOR(pg_catalog.||) p_id::text;
    v_cols text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.col::text), ', ' ORDER BY c.col) INTO v_cols
      FROM (SELECT DISTINCT r.col FROM @extschema@.transition_rules r
             WHERE r.migration_id OPERATOR(pg_catalog.=) p_id AND r.tbl OPERATOR(pg_catalog.=) p_tbl) c;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid OPERATOR(pg_catalog.=) p_tbl AND t.tgname OPERATOR(pg_catalog.=) v_name) THEN
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_name, p_tbl);
    END IF;
    IF v_cols IS NOT NULL THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OF %s ON %s '
            'FOR EACH ROW EXECUTE FUNCTION @extschema@._rule_trigger(%L)',
            v_name, v_cols, p_tbl, p_id);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._install_rule_trigger(integer, regclass) IS
    'internal: (re)create or drop the transition-rule trigger of a migration on a table to match its rules';

CREATE FUNCTION @extschema@._add_transition_rule(name text, tbl regclass, col name, from_value text,
                                                 to_value text, requires text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_vals text[];
    v_id integer;
BEGIN
    IF tbl IS NULL OR col IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'tbl and col must not be null';
    END IF;
    IF tbl OPERATOR(pg_catalog.<>) ALL (ARRAY[m.legacy, m.target]::pg_catalog.oid[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('table %s is not a table of migration "%s"', tbl, m.name),
            HINT = pg_catalog.format('Transition rules go on %s or %s.', m.legacy, m.target);
    END IF;
    IF to_value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'to_value must not be null',
            DETAIL = 'A ruled column never moves back to NULL; from_value NULL means the first value.';
    END IF;
    -- column, values in canonical form, requires: checked as the table owner
    v_vals := @extschema@._check_rule(tbl, col, from_value, to_value, requires);
    IF v_vals[1] IS NOT DISTINCT FROM v_vals[2] THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('an edge must change the value (%s -> %s)', v_vals[1], v_vals[2]);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.transition_rules r
                WHERE r.migration_id OPERATOR(pg_catalog.=) m.id AND r.tbl OPERATOR(pg_catalog.=) _add_transition_rule.tbl
                  AND r.col OPERATOR(pg_catalog.=) _add_transition_rule.col AND r.from_value IS NOT DISTINCT FROM v_vals[1]
                  AND r.to_value OPERATOR(pg_catalog.=) v_vals[2]) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already has a rule for %s.%s %s -> %s', m.name, tbl, col,
                                        COALESCE(pg_catalog.quote_literal(v_vals[1]), 'NULL'),
                                        pg_catalog.quote_literal(v_vals[2])),
            HINT = 'softmig.drop_transition_rule removes it.';
    END IF;
    INSERT INTO @extschema@.transition_rules (migration_id, tbl, col, from_value, to_value, requires, created_by)
    VALUES (m.id, tbl, col, v_vals[1], v_vals[2], requires, @extschema@._actor())
    RETURNING id INTO v_id;
    PERFORM @extschema@._install_rule_trigger(m.id, tbl);
    PERFORM @extschema@._history(m.id, 'add_transition_rule', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('rule', v_id, 'table', tbl::text, 'column', col, 'from', v_vals[1],
                                      'to', v_vals[2], 'requires', requires));
END $$;
COMMENT ON FUNCTION @extschema@._add_transition_rule(text, regclass, name, text, text, text) IS
    'internal: implementation of softmig.add_transition_rule';

CREATE FUNCTION @extschema@.add_transition_rule(name text, tbl regclass, col name, from_value text,
                                                to_value text, requires text DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.add_transition_rule(text, regclass, name, text, text, text) IS
    'allow one edge of a status column (from_value NULL = insert), optionally requiring a boolean expression over the new row; owners of both tables only';

CREATE FUNCTION @extschema@._drop_transition_rule(name text, tbl regclass, col name, from_value text, to_value text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    r @extschema@.transition_rules;
    v_vals text[];
BEGIN
    IF tbl IS NULL OR col IS NULL OR to_value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'tbl, col and to_value must not be null';
    END IF;
    IF tbl OPERATOR(pg_catalog.<>) ALL (ARRAY[m.legacy, m.target]::pg_catalog.oid[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('table %s is not a table of migration "%s"', tbl, m.name);
    END IF;
    v_vals := @extschema@._check_rule(tbl, col, from_value, to_value, NULL);
    DELETE FROM @extschema@.transition_rules x
     WHERE x.migration_id OPERATOR(pg_catalog.=) m.id AND x.tbl OPERATOR(pg_catalog.=) _drop_transition_rule.tbl
       AND x.col OPERATOR(pg_catalog.=) _drop_transition_rule.col AND x.from_value IS NOT DISTINCT FROM v_vals[1]
       AND x.to_value OPERATOR(pg_catalog.=) v_vals[2]
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" has no rule for %s.%s %s -> %s', m.name, tbl, col,
                                        COALESCE(pg_catalog.quote_literal(v_vals[1]), 'NULL'),
                                        pg_catalog.quote_literal(v_vals[2]));
    END IF;
    PERFORM @extschema@._install_rule_trigger(m.id, tbl);
    PERFORM @extschema@._history(m.id, 'drop_transition_rule', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('rule', r.id, 'table', tbl::text, 'column', col, 'from', r.from_value,
                                      'to', r.to_value, 'requires', r.requires));
END $$;
COMMENT ON FUNCTION @extschema@._drop_transition_rule(text, regclass, name, text, text) IS
    'internal: implementation of softmig.drop_transition_rule';

CREATE FUNCTION @extschema@.drop_transition_rule(name text, tbl regclass, col name, from_value text, to_value text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_transition_rule(text, regclass, name, text, text) IS
    'remove one edge (the trigger goes when a table has no rules left); owners of both tables only';

-------------------------------------------------------------------------------
-- check: transport, structural, behavioural; every run is kept
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._run_checks(name text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_run bigint := pg_catalog.nextval('@extschema@.check_run_seq');
    v_rows jsonb := '[]';
    v_prev bigint;
    v_actor name := @extschema@._actor();
    v_ord integer := 0;
    v_ok boolean;
    v_n bigint;
    v_detail jsonb;
    v_s jsonb;
    v_err text;
    v_new bigint;
    v_last timestamptz;
    r record;
    k text;
BEGIN
    SELECT pg_catalog.max(c.run_id) INTO v_prev FROM @extschema@.check_results c
     WHERE c.migration_id OPERATOR(pg_catalog.=) m.id;
    -- results are collected in a jsonb array, not a temporary table: this
    -- runs as the catalog owner, and a caller's own temporary table of the
    -- same name (with triggers or checks) must never be used

    ------------------------------------------------------------- transport
    -- the write triggers of the migration
    v_detail := @extschema@._trigger_health(m.id);
    v_ord := v_ord OPERATOR(pg_catalog.+) 1;
    v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'ordinal', v_ord, 'layer', 'transport', 'check_name', 'triggers',
            'ok', (v_detail OPERATOR(pg_catalog.->>) 'healthy')::boolean, 'violations', pg_catalog.jsonb_array_length(v_detail OPERATOR(pg_catalog.->) 'problems'),
            'detail', v_detail));

    -- the transition-rule triggers
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('rel', x.tbl::text, 'tgname', x.tgname,
               'problem', CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END) ORDER BY x.tbl::text), '[]')
      INTO v_detail
      FROM (SELECT DISTINCT r2.tbl, 'softmig_rule_' OPERATOR(pg_catalog.||) m.id::text AS tgname
              FROM @extschema@.transition_rules r2 WHERE r2.migration_id OPERATOR(pg_catalog.=) m.id) x
      LEFT JOIN pg_catalog.pg_trigger t
        ON t.tgrelid OPERATOR(pg_catalog.=) x.tbl AND t.tgname OPERATOR(pg_catalog.=) x.tgname
     WHERE t.oid IS NULL OR t.tgenabled OPERATOR(pg_catalog.=) 'D';
    v_ord := v_ord OPERATOR(pg_catalog.+) 1;
    v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'ordinal', v_ord, 'layer', 'transport', 'check_name', 'rule_triggers',
            'ok', pg_catalog.jsonb_array_length(v_detail) OPERATOR(pg_catalog.=) 0, 'violations', pg_catalog.jsonb_array_length(v_detail),
            'detail', pg_catalog.jsonb_build_object('problems', v_detail)));

    -- backfill progress and staleness (it only applies in mirrored)
    v_detail := @extschema@._backfill_status(m.id);
    v_ok := m.state OPERATOR(@extschema@.<>) 'mirrored' OR @extschema@._backfill_done(m.id);
    v_detail := v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
        'applies', m.state OPERATOR(@extschema@.=) 'mirrored',
        'stale_seconds', CASE WHEN v_ok THEN NULL ELSE
            pg_catalog.round(EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-)
                COALESCE((v_detail OPERATOR(pg_catalog.->>) 'updated_at')::timestamptz, m.state_changed_at))) END);
    v_ord := v_ord OPERATOR(pg_catalog.+) 1;
    v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'ordinal', v_ord, 'layer', 'transport', 'check_name', 'backfill',
            'ok', v_ok, 'violations', CASE WHEN v_ok THEN 0 ELSE GREATEST(COALESCE((v_detail OPERATOR(pg_catalog.->>) 'remaining_estimate')::bigint, 1), 1) END,
            'detail', v_detail));

    -- projection failures: rows the target holds that legacy could not take
    v_detail := @extschema@._envelope_json(m.id);
    v_n := COALESCE((v_detail OPERATOR(pg_catalog.->>) 'new_only_count')::bigint, 0);
    v_ord := v_ord OPERATOR(pg_catalog.+) 1;
    v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'ordinal', v_ord, 'layer', 'transport', 'check_name', 'projection',
            'ok', v_n OPERATOR(pg_catalog.=) 0, 'violations', v_n,
            'detail', pg_catalog.jsonb_build_object('envelope', v_detail)));

    -- shadow writes disabled by hand
    SELECT pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.-) 'migration_id' INTO v_detail
      FROM @extschema@.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id;
    v_ord := v_ord OPERATOR(pg_catalog.+) 1;
    v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'ordinal', v_ord, 'layer', 'transport', 'check_name', 'shadow',
            'ok', v_detail IS NULL, 'violations', CASE WHEN v_detail IS NULL THEN 0 ELSE 1 END,
            'detail', COALESCE(pg_catalog.jsonb_build_object('disabled', v_detail), '{"disabled": null}')));

    -- readers nobody registered (when the read-path inventory is installed)
    v_detail := NULL;
    IF pg_catalog.to_regprocedure('@extschema@.readers(text)') IS NOT NULL THEN
        BEGIN
            EXECUTE 'SELECT pg_catalog.count(*), COALESCE(pg_catalog.jsonb_agg(x.reader ORDER BY x.reader) '
                    'FILTER (WHERE x.n OPERATOR(pg_catalog.<=) 10), ''[]'') '
                    'FROM (SELECT r.reader, pg_catalog.row_number() OVER (ORDER BY r.reader) AS n '
                    'FROM @extschema@.readers($1) r WHERE NOT r.registered) x'
              INTO v_n, v_detail USING m.name;
            v_detail := pg_catalog.jsonb_build_object('unregistered', v_detail);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
            v_n := 0;
            v_detail := pg_catalog.jsonb_build_object('error', v_err);
        END;
    ELSE
        v_n := 0;
        v_detail := '{"available": false}';
    END IF;
    v_ord := v_ord OPERATOR(pg_catalog.+) 1;
    v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'ordinal', v_ord, 'layer', 'transport', 'check_name', 'readers',
            'ok', v_n OPERATOR(pg_catalog.=) 0 AND NOT v_detail ? 'error', 'violations', v_n,
            'detail', v_detail));

    ------------------------------------------------------------- structural
    BEGIN
        v_s := @extschema@._parity_summary(m.id, @extschema@._chunk_rows(m), 10);
        FOREACH k IN ARRAY ARRAY['missing_in_target', 'missing_in_legacy', 'mismatch'] LOOP
            v_n := (v_s OPERATOR(pg_catalog.->>) k)::bigint;
            v_detail := pg_catalog.jsonb_build_object('sample', v_s OPERATOR(pg_catalog.->) 'sample' OPERATOR(pg_catalog.->) k,
                'run', v_s OPERATOR(pg_catalog.-) ARRAY['sample', 'mismatch_fields', 'missing_in_target',
                                                        'missing_in_legacy', 'mismatch']);
            IF k OPERATOR(pg_catalog.=) 'mismatch' THEN
                v_detail := v_detail OPERATOR(pg_catalog.||)
                    pg_catalog.jsonb_build_object('fields', v_s OPERATOR(pg_catalog.->) 'mismatch_fields');
            END IF;
            v_ord := v_ord OPERATOR(pg_catalog.+) 1;
            v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'ordinal', v_ord, 'layer', 'structural', 'check_name', 'parity_' OPERATOR(pg_catalog.||) k,
                    'ok', v_n OPERATOR(pg_catalog.=) 0, 'violations', v_n,
                    'detail', v_detail));
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
        v_ord := v_ord OPERATOR(pg_catalog.+) 1;
        v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'ordinal', v_ord, 'layer', 'structural', 'check_name', 'parity',
                'ok', false, 'violations', 1,
                'detail', pg_catalog.jsonb_build_object('error', v_err)));
    END;

    ------------------------------------------------------------- behavioural
    FOR r IN SELECT i.name, i.severity FROM @extschema@.invariants i
              WHERE i.migration_id OPERATOR(pg_catalog.=) m.id ORDER BY i.name LOOP
        BEGIN
            SELECT v.violations, pg_catalog.jsonb_build_object('severity', v.severity, 'sample', v.sample)
              INTO v_n, v_detail
              FROM @extschema@.invariant_violations(m.name, r.name, 10) v;
            v_ok := v_n OPERATOR(pg_catalog.=) 0;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
            v_ok := false;
            v_n := 1;
            v_detail := pg_catalog.jsonb_build_object('severity', r.severity, 'error', v_err);
        END;
        v_ord := v_ord OPERATOR(pg_catalog.+) 1;
        v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'ordinal', v_ord, 'layer', 'behavioral', 'check_name', 'invariant:' OPERATOR(pg_catalog.||) r.name,
                'ok', v_ok, 'violations', v_n,
                'detail', v_detail));
    END LOOP;

    -- each rule's requires violations, then each ruled column's illegal edges
    FOR r IN SELECT x.* FROM (
                 SELECT tr.id AS rule_id, tr.tbl::text AS tbl, tr.col, tr.from_value, tr.to_value, tr.requires,
                        pg_catalog.format('rule %s: %s.%s %s -> %s', tr.id, tr.tbl, tr.col,
                                          COALESCE(pg_catalog.quote_literal(tr.from_value), 'NULL'),
                                          pg_catalog.quote_literal(tr.to_value)) AS check_name, 1 AS kind
                   FROM @extschema@.transition_rules tr WHERE tr.migration_id OPERATOR(pg_catalog.=) m.id
                 UNION ALL
                 SELECT DISTINCT NULL::integer, tr.tbl::text, tr.col, NULL, NULL, NULL,
                        pg_catalog.format('rules %s.%s: edges not allowed', tr.tbl, tr.col), 2
                   FROM @extschema@.transition_rules tr WHERE tr.migration_id OPERATOR(pg_catalog.=) m.id) x
              ORDER BY x.tbl, x.col, x.kind, x.rule_id LOOP
        SELECT pg_catalog.count(*),
               pg_catalog.count(*) FILTER (WHERE v_prev IS NULL OR v.at OPERATOR(pg_catalog.>)
                   (SELECT pg_catalog.max(c.at) FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) v_prev)),
               pg_catalog.max(v.at)
          INTO v_n, v_new, v_last
          FROM @extschema@.rule_violations v
         WHERE v.migration_id OPERATOR(pg_catalog.=) m.id AND v.tbl OPERATOR(pg_catalog.=) r.tbl
           AND v.col OPERATOR(pg_catalog.=) r.col
           AND (CASE WHEN r.rule_id IS NULL THEN v.rule_id IS NULL ELSE v.rule_id OPERATOR(pg_catalog.=) r.rule_id END);
        v_detail := pg_catalog.jsonb_build_object(
            'mode', COALESCE(m.options OPERATOR(pg_catalog.->>) 'transition_rules', 'enforce'),
            'new_since_last_check', v_new,
            'last_at', v_last,
            'sample', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                'key', s.key, 'from', s.from_value, 'to', s.to_value, 'at', s.at) ORDER BY s.id DESC), '[]')
                         FROM (SELECT v.* FROM @extschema@.rule_violations v
                                WHERE v.migration_id OPERATOR(pg_catalog.=) m.id AND v.tbl OPERATOR(pg_catalog.=) r.tbl
                                  AND v.col OPERATOR(pg_catalog.=) r.col
                                  AND (CASE WHEN r.rule_id IS NULL THEN v.rule_id IS NULL
                                            ELSE v.rule_id OPERATOR(pg_catalog.=) r.rule_id END)
                                ORDER BY v.id DESC LIMIT 10) s));
        IF r.rule_id IS NOT NULL THEN
            v_detail := v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('rule', r.rule_id,
                'requires', (SELECT tr.requires FROM @extschema@.transition_rules tr WHERE tr.id OPERATOR(pg_catalog.=) r.rule_id));
        END IF;
        v_ord := v_ord OPERATOR(pg_catalog.+) 1;
        v_rows := v_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'ordinal', v_ord, 'layer', 'behavioral', 'check_name', r.check_name,
                'ok', v_n OPERATOR(pg_catalog.=) 0, 'violations', v_n,
                'detail', v_detail));
    END LOOP;

    INSERT INTO @extschema@.check_results (run_id, migration_id, actor, state, ordinal, layer, check_name, ok, violations, detail)
    SELECT v_run, m.id, v_actor, m.state, (c.r OPERATOR(pg_catalog.->>) 'ordinal')::integer, c.r OPERATOR(pg_catalog.->>) 'layer',
           c.r OPERATOR(pg_catalog.->>) 'check_name', (c.r OPERATOR(pg_catalog.->>) 'ok')::boolean,
           (c.r OPERATOR(pg_catalog.->>) 'violations')::bigint, c.r OPERATOR(pg_catalog.->) 'detail'
      FROM pg_catalog.jsonb_array_elements(v_rows) AS c(r);
    SELECT COALESCE(pg_catalog.jsonb_agg(c.r OPERATOR(pg_catalog.-) 'ordinal'
                                         ORDER BY (c.r OPERATOR(pg_catalog.->>) 'ordinal')::integer), '[]')
      INTO v_detail FROM pg_catalog.jsonb_array_elements(v_rows) AS c(r);
    RETURN v_detail;
END $$;
COMMENT ON FUNCTION @extschema@._run_checks(text) IS 'internal: implementation of softmig.run_checks';

CREATE FUNCTION @extschema@.run_checks(name text)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.run_checks(text) IS
    'run every check of a migration, keep the results in softmig.check_results and return them as a jsonb array; owners of both tables only';

CREATE FUNCTION @extschema@.check(name text)
RETURNS TABLE(layer text, check_name text, ok boolean, violations bigint, detail jsonb)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.layer, r.check_name, r.ok, r.violations, r.detail
      FROM ROWS FROM (pg_catalog.jsonb_to_recordset(@extschema@.run_checks(name))
                      AS (layer text, check_name text, ok boolean, violations bigint, detail jsonb))
           WITH ORDINALITY AS r(layer, check_name, ok, violations, detail, n)
     ORDER BY r.n
$$;
COMMENT ON FUNCTION @extschema@.check(text) IS
    'run every check (transport, structural, behavioral) of a migration, keep the results and return one row per check; owners of both tables only';

CREATE FUNCTION @extschema@._forget_checks(name text, older_than interval) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    n bigint;
BEGIN
    IF older_than IS NULL OR older_than OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'older_than must be a non-negative interval';
    END IF;
    DELETE FROM @extschema@.check_results c
     WHERE c.migration_id OPERATOR(pg_catalog.=) m.id
       AND c.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._forget_checks(text, interval) IS 'internal: implementation of softmig.forget_checks';

CREATE FUNCTION @extschema@.forget_checks(name text, older_than interval)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.forget_checks(text, interval) IS
    'delete stored check results older than the interval; returns the rows removed; owners of both tables only';

CREATE FUNCTION @extschema@._forget_rule_violations(name text, older_than interval) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    n bigint;
BEGIN
    IF older_than IS NULL OR older_than OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'older_than must be a non-negative interval';
    END IF;
    DELETE FROM @extschema@.rule_violations v
     WHERE v.migration_id OPERATOR(pg_catalog.=) m.id
       AND v.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM @extschema@._history(m.id, 'forget_rule_violations', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('older_than', older_than::text, 'removed', n));
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._forget_rule_violations(text, interval) IS
    'internal: implementation of softmig.forget_rule_violations';

CREATE FUNCTION @extschema@.forget_rule_violations(name text, older_than interval)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.forget_rule_violations(text, interval) IS
    'delete recorded transition-rule violations older than the interval (after they were dealt with); owners of both tables only';

-------------------------------------------------------------------------------
-- The mirrored -> new_write guard (called by _set_state)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._require_semantic_health(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    s jsonb;
    n bigint;
    r record;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    s := @extschema@._parity_summary(p_id, @extschema@._chunk_rows(m), 3);
    n := (s OPERATOR(pg_catalog.->>) 'missing_in_target')::bigint OPERATOR(pg_catalog.+)
         (s OPERATOR(pg_catalog.->>) 'missing_in_legacy')::bigint OPERATOR(pg_catalog.+)
         (s OPERATOR(pg_catalog.->>) 'mismatch')::bigint;
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: parity is not clean', m.name),
            DETAIL = pg_catalog.format('%s missing in target, %s missing in legacy, %s mismatched fields; for example %s.',
                                       s OPERATOR(pg_catalog.->>) 'missing_in_target',
                                       s OPERATOR(pg_catalog.->>) 'missing_in_legacy',
                                       s OPERATOR(pg_catalog.->>) 'mismatch',
                                       s OPERATOR(pg_catalog.->) 'sample'),
            HINT = pg_catalog.format('SELECT * FROM softmig.parity(%L) lists every difference; fix them, or pass force => true with a reason.', m.name);
    END IF;
    FOR r IN SELECT i.name FROM @extschema@.invariants i
              WHERE i.migration_id OPERATOR(pg_catalog.=) p_id AND i.severity OPERATOR(pg_catalog.=) 'error'
              ORDER BY i.name LOOP
        SELECT v.violations, v.sample INTO n, s FROM @extschema@.invariant_violations(m.name, r.name, 3) v;
        IF n OPERATOR(pg_catalog.>) 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: invariant "%s" fails', m.name, r.name),
                DETAIL = pg_catalog.format('It returns %s violating %s; for example %s.', n,
                                           CASE WHEN n OPERATOR(pg_catalog.=) 1 THEN 'row' ELSE 'rows' END, s),
                HINT = 'Fix the data, drop the invariant, or pass force => true with a reason.';
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._require_semantic_health(integer) IS
    'internal: the mirrored -> new_write guard: clean parity and no failing error-severity invariant (raises 55000)';

-------------------------------------------------------------------------------
-- inspect: one entity, both sides, for support
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._inspect_assemble(p_id integer, key jsonb, s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    v_xmins text[];
    v_track boolean := pg_catalog.current_setting('track_commit_timestamp')::boolean;
    v_last jsonb := '{}';
    k text;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    v_xmins := ARRAY[s OPERATOR(pg_catalog.->>) 'legacy_xmin', s OPERATOR(pg_catalog.->>) 'target_xmin'];
    FOREACH k IN ARRAY ARRAY['legacy', 'target'] LOOP
        IF s OPERATOR(pg_catalog.->>) (k OPERATOR(pg_catalog.||) '_xmin') IS NOT NULL THEN
            v_last := v_last OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(k, pg_catalog.jsonb_build_object(
                'xmin', s OPERATOR(pg_catalog.->>) (k OPERATOR(pg_catalog.||) '_xmin'),
                'committed_at', CASE WHEN v_track THEN pg_catalog.pg_xact_commit_timestamp(
                    (s OPERATOR(pg_catalog.->>) (k OPERATOR(pg_catalog.||) '_xmin'))::xid) END));
        END IF;
    END LOOP;
    RETURN pg_catalog.jsonb_build_object(
        'migration', m.name,
        'key', key,
        'state', m.state::text,
        'write_authority', CASE WHEN m.state OPERATOR(@extschema@.<=) 'mirrored' THEN 'legacy' ELSE 'target' END,
        'parity', s OPERATOR(pg_catalog.->) 'parity',
        'differences', s OPERATOR(pg_catalog.->) 'differences',
        'legacy', s OPERATOR(pg_catalog.->) 'legacy',
        'legacy_mapped', s OPERATOR(pg_catalog.->) 'legacy_mapped',
        'target', s OPERATOR(pg_catalog.->) 'target',
        'divergent', (SELECT COALESCE(pg_catalog.jsonb_object_agg(d, pg_catalog.jsonb_build_object(
                                 'legacy_mapped', s OPERATOR(pg_catalog.->) 'legacy_mapped' OPERATOR(pg_catalog.->) d,
                                 'target', s OPERATOR(pg_catalog.->) 'target' OPERATOR(pg_catalog.->) d)), '{}')
                        FROM pg_catalog.unnest(m.divergent) d),
        'flags', pg_catalog.jsonb_build_object(
            'in_legacy', s OPERATOR(pg_catalog.->) 'legacy' OPERATOR(pg_catalog.<>) 'null',
            'in_target', s OPERATOR(pg_catalog.->) 'target' OPERATOR(pg_catalog.<>) 'null',
            'new_only', (SELECT COALESCE(pg_catalog.jsonb_agg(c ORDER BY c), '[]') FROM pg_catalog.unnest(m.new_only) c
                          WHERE pg_catalog.jsonb_typeof(s OPERATOR(pg_catalog.->) 'target' OPERATOR(pg_catalog.->) c)
                                OPERATOR(pg_catalog.<>) 'null'),
            'quarantined', EXISTS (SELECT 1 FROM @extschema@._quarantined_keys(m.id) q WHERE q OPERATOR(pg_catalog.=) key),
            'quarantine', (SELECT pg_catalog.to_jsonb(q) OPERATOR(pg_catalog.-) 'migration_id' FROM @extschema@.quarantine q
                            WHERE q.migration_id OPERATOR(pg_catalog.=) m.id AND q.key OPERATOR(pg_catalog.=) _inspect_assemble.key)),
        'last_writes', v_last,
        'operation_keys', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                  'key', o.key, 'side', o.side, 'relation', o.relation, 'state', o.state,
                                  'claimed_at', o.claimed_at, 'claimed_by', o.claimed_by) ORDER BY o.claimed_at), '[]')
                             FROM @extschema@.operations o
                            WHERE o.migration_id OPERATOR(pg_catalog.=) m.id
                              AND ((o.xid::text::numeric OPERATOR(pg_catalog.%) 4294967296)::text) OPERATOR(pg_catalog.=) ANY (v_xmins)),
        'history', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                           'at', h.at, 'actor', h.actor, 'action', h.action, 'reason', h.reason, 'detail', h.detail)
                           ORDER BY h.id), '[]')
                      FROM (SELECT * FROM @extschema@.history_log h
                             WHERE h.migration_id OPERATOR(pg_catalog.=) m.id
                               AND h.detail OPERATOR(pg_catalog.->) 'key' OPERATOR(pg_catalog.=) _inspect_assemble.key
                             ORDER BY h.id DESC LIMIT 20) h),
        'rule_violations', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                   'rule', v.rule_id, 'table', v.tbl, 'column', v.col, 'from', v.from_value,
                                   'to', v.to_value, 'reason', v.reason, 'at', v.at, 'actor', v.actor) ORDER BY v.id), '[]')
                              FROM (SELECT * FROM @extschema@.rule_violations v
                                     WHERE v.migration_id OPERATOR(pg_catalog.=) m.id
                                       AND v.key OPERATOR(pg_catalog.=) _inspect_assemble.key
                                     ORDER BY v.id DESC LIMIT 20) v));
END $$;
COMMENT ON FUNCTION @extschema@._inspect_assemble(integer, jsonb, jsonb) IS
    'internal: add the catalog side of inspect (flags, operation keys, last writes, history, rule violations) to what was read from the tables';

CREATE FUNCTION @extschema@.inspect(name text, key jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_inspect' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.inspect(text, jsonb) IS
    'both sides of one entity, mapped and compared, with its flags (new-only, quarantined), operation keys, last writes and history: the page support opens; for a caller who may read both tables';

-------------------------------------------------------------------------------
-- report: a readable summary for psql
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.report(name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    st jsonb := @extschema@.status(name);
    env jsonb := @extschema@._envelope_json(m.id);
    bf jsonb := @extschema@._backfill_status(m.id);
    lines text[] := '{}';
    v_run bigint;
    v_line text;
    r record;
    v_n bigint;
    v_fail bigint;
BEGIN
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('softmig migration "%s": %s -> %s', m.name, m.legacy, m.target);
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  state        %s since %s', m.state,
        pg_catalog.to_char(m.state_changed_at, 'YYYY-MM-DD HH24:MI:SS TZ'));
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  authority    writes go to %s; projection %s; reads default to %s',
        st OPERATOR(pg_catalog.->>) 'write_authority', st OPERATOR(pg_catalog.->>) 'projection',
        st OPERATOR(pg_catalog.->>) 'read_default');

    -- read groups (when the read-path inventory is installed)
    IF pg_catalog.to_regprocedure('@extschema@.readers(text)') IS NOT NULL THEN
        BEGIN
            FOR r IN EXECUTE 'SELECT x.switch_group, pg_catalog.string_agg(DISTINCT x.source::text, ''/'') AS source, '
                             'pg_catalog.count(*) FILTER (WHERE x.registered) AS registered, '
                             'pg_catalog.count(*) FILTER (WHERE NOT x.registered) AS unregistered '
                             'FROM @extschema@.readers($1) x GROUP BY x.switch_group ORDER BY x.switch_group'
                     USING m.name LOOP
                lines := lines OPERATOR(pg_catalog.||) pg_catalog.format(
                    '  read group   %s: reads %s (%s registered, %s unregistered readers)',
                    COALESCE(r.switch_group, '(none)'), r.source, r.registered, r.unregistered);
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  read groups  unavailable: %s', SQLERRM);
        END;
    ELSE
        lines := lines OPERATOR(pg_catalog.||) '  read groups  (read-path inventory not installed)'::text;
    END IF;

    lines := lines OPERATOR(pg_catalog.||) CASE WHEN (env OPERATOR(pg_catalog.->>) 'open')::boolean
        THEN '  envelope     open: rollback across the authority switch is possible'
        ELSE pg_catalog.format('  envelope     closed since %s: %s (%s new-only rows)',
                               pg_catalog.to_char((env OPERATOR(pg_catalog.->>) 'closed_at')::timestamptz, 'YYYY-MM-DD HH24:MI:SS TZ'),
                               env OPERATOR(pg_catalog.->>) 'reason', env OPERATOR(pg_catalog.->>) 'new_only_count') END;
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  backfill     %s, %s rows copied, %s batches',
        bf OPERATOR(pg_catalog.->>) 'phase', bf OPERATOR(pg_catalog.->>) 'rows_backfilled', bf OPERATOR(pg_catalog.->>) 'batches');
    SELECT pg_catalog.count(*) INTO v_n FROM @extschema@._quarantined_keys(m.id);
    IF v_n OPERATOR(pg_catalog.>) 0 THEN
        lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  quarantine   %s entities excluded from projection and parity', v_n);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        lines := lines OPERATOR(pg_catalog.||) '  shadow       DISABLED: the other table is not being written'::text;
    END IF;

    SELECT pg_catalog.max(c.run_id) INTO v_run FROM @extschema@.check_results c
     WHERE c.migration_id OPERATOR(pg_catalog.=) m.id;
    IF v_run IS NULL THEN
        lines := lines OPERATOR(pg_catalog.||) pg_catalog.format(
            '  checks       none recorded yet: SELECT * FROM softmig.check(%L)', m.name);
    ELSE
        SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE NOT c.ok) INTO v_n, v_fail
          FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) v_run;
        SELECT pg_catalog.format('  checks       run %s at %s by %s: %s checks, %s failing', v_run,
                                 pg_catalog.to_char(c.at, 'YYYY-MM-DD HH24:MI:SS TZ'), c.actor, v_n, v_fail)
          INTO v_line FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) v_run LIMIT 1;
        lines := lines OPERATOR(pg_catalog.||) v_line;
        FOR r IN SELECT c.* FROM @extschema@.check_results c
                  WHERE c.run_id OPERATOR(pg_catalog.=) v_run ORDER BY c.ordinal LOOP
            v_line := pg_catalog.format('    %-11s %-4s %-40s %s', r.layer, CASE WHEN r.ok THEN 'ok' ELSE 'FAIL' END,
                                        r.check_name, r.violations);
            IF NOT r.ok AND pg_catalog.jsonb_typeof(r.detail OPERATOR(pg_catalog.->) 'sample') OPERATOR(pg_catalog.=) 'array'
               AND pg_catalog.jsonb_array_length(r.detail OPERATOR(pg_catalog.->) 'sample') OPERATOR(pg_catalog.>) 0 THEN
                v_line := v_line OPERATOR(pg_catalog.||) '  e.g. ' OPERATOR(pg_catalog.||)
                    pg_catalog.left(((r.detail OPERATOR(pg_catalog.->) 'sample' OPERATOR(pg_catalog.->) 0)
                                     OPERATOR(pg_catalog.-) 'at')::text, 60);
            ELSIF NOT r.ok AND r.detail ? 'error' THEN
                v_line := v_line OPERATOR(pg_catalog.||) '  error: ' OPERATOR(pg_catalog.||)
                    pg_catalog.left(r.detail OPERATOR(pg_catalog.->>) 'error', 60);
            END IF;
            lines := lines OPERATOR(pg_catalog.||) v_line;
        END LOOP;
    END IF;
    RETURN pg_catalog.array_to_string(lines, E'\n');
END $$;
COMMENT ON FUNCTION @extschema@.report(text) IS
    'a readable multi-line summary: state, authority, read groups, envelope, backfill and the latest check run per layer';

-------------------------------------------------------------------------------
-- metrics: one row per (migration, metric), for a Prometheus exporter
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.metrics AS
SELECT m.name AS migration, x.metric, x.value
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (
    SELECT (SELECT pg_catalog.max(c.run_id) FROM @extschema@.check_results c
             WHERE c.migration_id OPERATOR(pg_catalog.=) m.id) AS run_id,
           (SELECT bp FROM @extschema@.backfill_progress bp
             WHERE bp.migration_id OPERATOR(pg_catalog.=) m.id) AS bp,
           (SELECT e FROM @extschema@.envelope e
             WHERE e.migration_id OPERATOR(pg_catalog.=) m.id) AS env) l
 CROSS JOIN LATERAL (
    VALUES
    ('state', (pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover'],
                                          m.state::text) OPERATOR(pg_catalog.-) 1)::double precision),
    ('state_age_seconds', EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) m.state_changed_at)::double precision),
    ('write_authority_target', CASE WHEN m.state OPERATOR(@extschema@.>=) 'new_write' THEN 1 ELSE 0 END::double precision),
    ('read_default_new', CASE WHEN m.state OPERATOR(@extschema@.>=) 'new_read' THEN 1 ELSE 0 END::double precision),
    ('backfill_done', CASE WHEN (l.bp).phase OPERATOR(pg_catalog.=) 'done' THEN 1 ELSE 0 END::double precision),
    ('backfill_rows_copied', COALESCE((l.bp).rows_backfilled, 0)::double precision),
    ('backfill_seconds_since_progress', CASE WHEN (l.bp).phase IS NULL OR (l.bp).phase OPERATOR(pg_catalog.=) 'done' THEN 0
         ELSE EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) (l.bp).updated_at) END::double precision),
    ('triggers_healthy', CASE WHEN (@extschema@._trigger_health(m.id) OPERATOR(pg_catalog.->>) 'healthy')::boolean
                              THEN 1 ELSE 0 END::double precision),
    ('envelope_open', CASE WHEN COALESCE((l.env).open, true) THEN 1 ELSE 0 END::double precision),
    ('new_only_rows', COALESCE((l.env).new_only_count, 0)::double precision),
    ('shadow_disabled', (SELECT pg_catalog.count(*) FROM @extschema@.shadow s
                          WHERE s.migration_id OPERATOR(pg_catalog.=) m.id)::double precision),
    ('quarantined_entities', (SELECT pg_catalog.count(*) FROM @extschema@.quarantine q
                               WHERE q.migration_id OPERATOR(pg_catalog.=) m.id)::double precision),
    ('overrides_total', (SELECT pg_catalog.count(*) FROM @extschema@.history_log h
                          WHERE h.migration_id OPERATOR(pg_catalog.=) m.id
                            AND h.action OPERATOR(pg_catalog.=) 'override')::double precision),
    ('rule_violations_total', (SELECT pg_catalog.count(*) FROM @extschema@.rule_violations v
                                WHERE v.migration_id OPERATOR(pg_catalog.=) m.id)::double precision),
    ('legacy_rows_estimate', (SELECT GREATEST(c.reltuples, 0) FROM pg_catalog.pg_class c
                               WHERE c.oid OPERATOR(pg_catalog.=) m.legacy)::double precision),
    ('target_rows_estimate', (SELECT GREATEST(c.reltuples, 0) FROM pg_catalog.pg_class c
                               WHERE c.oid OPERATOR(pg_catalog.=) m.target)::double precision),
    ('last_check_age_seconds', (SELECT EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.max(c.at))
                                  FROM @extschema@.check_results c
                                 WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id)::double precision),
    ('checks_failing', (SELECT pg_catalog.count(*) FILTER (WHERE NOT c.ok) FROM @extschema@.check_results c
                         WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id)::double precision)
    UNION ALL
    SELECT 'check_violations:' OPERATOR(pg_catalog.||) c.check_name, c.violations::double precision
      FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id
    UNION ALL
    SELECT 'check_ok:' OPERATOR(pg_catalog.||) c.check_name, CASE WHEN c.ok THEN 1 ELSE 0 END::double precision
      FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id
 ) x(metric, value);
COMMENT ON VIEW @extschema@.metrics IS
    'one row per (migration, metric): live state, backfill, envelope, triggers, and the latest check run (check_violations:<check>, check_ok:<check>); cheap enough to scrape';
GRANT SELECT ON @extschema@.metrics TO PUBLIC;

-------------------------------------------------------------------------------
-- pgTAP helpers for users' own migration tests
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.tap_ok(ok boolean, description text, diagnostics text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_nsp name;
    v_out text;
    v_diag text;
BEGIN
    SELECT n.nspname INTO v_nsp
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'pgtap';
    IF v_nsp IS NULL THEN
        -- no pgTAP: a bare TAP line, diagnostics as # comments
        v_out := CASE WHEN ok THEN 'ok' ELSE 'not ok' END OPERATOR(pg_catalog.||) ' - ' OPERATOR(pg_catalog.||) description;
        IF NOT ok AND diagnostics IS NOT NULL THEN
            v_out := v_out OPERATOR(pg_catalog.||) E'\n# ' OPERATOR(pg_catalog.||)
                     pg_catalog.replace(diagnostics, E'\n', E'\n# ');
        END IF;
        RETURN v_out;
    END IF;
    -- pgTAP keeps the test counter and plan; its functions expect their schema on the path
    PERFORM pg_catalog.set_config('search_path', pg_catalog.quote_ident(v_nsp) OPERATOR(pg_catalog.||) ', pg_catalog, pg_temp', true);
    EXECUTE pg_catalog.format('SELECT %I.ok($1, $2)', v_nsp) INTO v_out USING ok, description;
    IF NOT ok AND diagnostics IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT %I.diag($1)', v_nsp) INTO v_diag USING diagnostics;
        v_out := v_out OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) v_diag;
    END IF;
    RETURN v_out;
END $$;
COMMENT ON FUNCTION @extschema@.tap_ok(boolean, text, text) IS
    'one TAP assertion with diagnostics: through pgTAP''s ok() and diag() when pgTAP is installed (plans and numbering work), else a bare ok/not ok line with # comments';

CREATE FUNCTION @extschema@.parity_ok(name text, description text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n bigint := 0;
    v_diag text := '';
    r record;
BEGIN
    FOR r IN SELECT pg_catalog.count(*) OVER () AS total, p.*
               FROM @extschema@.parity(name) p LIMIT 10 LOOP
        v_n := r.total;
        v_diag := v_diag OPERATOR(pg_catalog.||) pg_catalog.format(E'\n  %s %s%s', r.kind, r.key,
            CASE WHEN r.field IS NULL THEN '' ELSE pg_catalog.format(' %s: legacy %s, target %s', r.field,
                COALESCE(pg_catalog.quote_literal(r.legacy_value), 'NULL'),
                COALESCE(pg_catalog.quote_literal(r.target_value), 'NULL')) END);
    END LOOP;
    RETURN @extschema@.tap_ok(v_n OPERATOR(pg_catalog.=) 0,
        COALESCE(description, pg_catalog.format('parity of migration %s is clean', name)),
        pg_catalog.format('%s differences%s', v_n, v_diag));
END $$;
COMMENT ON FUNCTION @extschema@.parity_ok(text, text) IS
    'pgTAP assertion: parity of the migration is clean (diagnostics list up to 10 differences); a bare TAP line without pgTAP';

CREATE FUNCTION @extschema@.invariants_ok(name text, description text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fail integer := 0;
    v_diag text := '';
    r record;
BEGIN
    FOR r IN SELECT * FROM @extschema@.invariant_violations(name, NULL, 3) v
              WHERE v.violations OPERATOR(pg_catalog.>) 0 LOOP
        v_fail := v_fail OPERATOR(pg_catalog.+) 1;
        v_diag := v_diag OPERATOR(pg_catalog.||) pg_catalog.format(E'\n  invariant %s (%s): %s violating rows, e.g. %s',
            r.invariant, r.severity, r.violations, r.sample);
    END LOOP;
    RETURN @extschema@.tap_ok(v_fail OPERATOR(pg_catalog.=) 0,
        COALESCE(description, pg_catalog.format('invariants of migration %s hold', name)),
        pg_catalog.format('%s invariants fail%s', v_fail, v_diag));
END $$;
COMMENT ON FUNCTION @extschema@.invariants_ok(text, text) IS
    'pgTAP assertion: every invariant of the migration (error and warn) returns no rows; a bare TAP line without pgTAP';

CREATE FUNCTION @extschema@.transition_rules_ok(name text, description text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_n bigint;
    v_diag text;
BEGIN
    SELECT pg_catalog.count(*) INTO v_n
      FROM @extschema@.rule_violations v WHERE v.migration_id OPERATOR(pg_catalog.=) m.id;
    SELECT pg_catalog.string_agg(pg_catalog.format(E'\n  %s.%s %s -> %s for %s (%s)', x.tbl, x.col,
               COALESCE(pg_catalog.quote_literal(x.from_value), 'NULL'), COALESCE(pg_catalog.quote_literal(x.to_value), 'NULL'),
               x.key, x.reason), '' ORDER BY x.id)
      INTO v_diag
      FROM (SELECT v.* FROM @extschema@.rule_violations v
             WHERE v.migration_id OPERATOR(pg_catalog.=) m.id ORDER BY v.id LIMIT 10) x;
    RETURN @extschema@.tap_ok(v_n OPERATOR(pg_catalog.=) 0,
        COALESCE(description, pg_catalog.format('no transition rule of migration %s was violated', name)),
        pg_catalog.format('%s recorded violations%s', v_n, COALESCE(v_diag, '')));
END $$;
COMMENT ON FUNCTION @extschema@.transition_rules_ok(text, text) IS
    'pgTAP assertion: no transition-rule violation was recorded (option transition_rules = observe); a bare TAP line without pgTAP';

-------------------------------------------------------------------------------
-- A dropped migration takes its observations and rule triggers with it
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._forget_dropped_observations() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    DELETE FROM @extschema@.rule_violations v WHERE v.migration_id OPERATOR(pg_catalog.=) OLD.id;
    DELETE FROM @extschema@.check_results c WHERE c.migration_id OPERATOR(pg_catalog.=) OLD.id;
    FOR r IN SELECT t.tgname, t.tgrelid::pg_catalog.regclass AS rel
               FROM pg_catalog.pg_trigger t
              WHERE t.tgname OPERATOR(pg_catalog.=) ('softmig_rule_' OPERATOR(pg_catalog.||) OLD.id::text)
                AND t.tgfoid OPERATOR(pg_catalog.=) '@extschema@._rule_trigger()'::pg_catalog.regprocedure
                AND t.tgparentid OPERATOR(pg_catalog.=) 0 LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@._forget_dropped_observations() IS
    'internal: AFTER DELETE trigger on softmig.migrations removing the check results, rule violations and rule triggers of a dropped migration';

CREATE TRIGGER forget_dropped_observations
    AFTER DELETE ON @extschema@.migrations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._forget_dropped_observations();

-------------------------------------------------------------------------------
-- Privileges: implementation functions run only behind the gate
-------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    @extschema@._parity_acc(bytea, "any"),
    @extschema@._parity_combine(bytea, bytea),
    @extschema@._quarantined_keys(integer),
    @extschema@._parity_summary(integer, integer, integer),
    @extschema@._rule_trigger(),
    @extschema@._check_rule(regclass, name, text, text, text),
    @extschema@._validate_invariant(regclass, text),
    @extschema@._check_observe_option(text, jsonb),
    @extschema@._chunk_rows(@extschema@.migrations),
    @extschema@._add_invariant(text, text, text, text),
    @extschema@._drop_invariant(text, text),
    @extschema@._install_rule_trigger(integer, regclass),
    @extschema@._add_transition_rule(text, regclass, name, text, text, text),
    @extschema@._drop_transition_rule(text, regclass, name, text, text),
    @extschema@._run_checks(text),
    @extschema@._forget_checks(text, interval),
    @extschema@._forget_rule_violations(text, interval),
    @extschema@._require_semantic_health(integer),
    @extschema@._forget_dropped_observations(),
    @extschema@._inspect_assemble(integer, jsonb, jsonb)
FROM PUBLIC;
-------------------------------------------------------------------------------
-- DDL on migrated tables: detected, never a silent wrong mirror
-------------------------------------------------------------------------------
-- Both event-trigger functions are SECURITY DEFINER: they run for whoever
-- issues DDL and must read and write softmig's catalog and re-prepare the
-- migration's statements (which _validate does as the table owners, never
-- as the definer).  search_path is pinned; EXECUTE is revoked from PUBLIC
-- (event triggers do not need it).

CREATE FUNCTION @extschema@._ddl_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.name, m.state, d.object_identity
               FROM pg_catalog.pg_event_trigger_dropped_objects() d
               JOIN @extschema@.migrations m
                 ON d.objid OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
              WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                AND d.objsubid OPERATOR(pg_catalog.=) 0
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = pg_catalog.format('cannot drop table %s: it takes part in migration "%s" (state %s)',
                                        r.object_identity, r.name, r.state),
            HINT = 'Finish or roll back the migration and drop it with softmig.drop_migration first.';
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_dropped() IS
    'internal: event trigger refusing DROP TABLE of a table that takes part in a migration';

CREATE FUNCTION @extschema@._ddl_altered() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_problem text;
BEGIN
    FOR r IN SELECT DISTINCT m.id, m.name, m.state, m.legacy, m.target, c.command_tag, c.object_identity
               FROM pg_catalog.pg_event_trigger_ddl_commands() c
               JOIN @extschema@.migrations m
                 ON c.objid OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
              WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        -- every statement the triggers will run must still prepare: a mapped
        -- column renamed, dropped or retyped incompatibly aborts the DDL
        v_problem := NULL;
        BEGIN
            PERFORM @extschema@._invalidate(r.legacy, r.target);
            PERFORM @extschema@._validate(r.id);
        EXCEPTION
            WHEN invalid_column_reference THEN
                -- the unique index on a key is missing: pg_restore creates
                -- indexes after the catalog rows, and dropping one by hand
                -- makes writes fail loudly (ON CONFLICT needs it); record it
                v_problem := SQLERRM;
            WHEN OTHERS THEN
                RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                    MESSAGE = pg_catalog.format('%s on %s would break migration "%s"', r.command_tag, r.object_identity, r.name),
                    DETAIL = SQLERRM,
                    HINT = 'Change the mapping first (drop and re-create the migration in state legacy), or keep the column.';
        END;
        -- harmless DDL passes silently.  A missing key index is only warned
        -- about: pg_restore creates indexes after everything else (a
        -- history row per table would make every restore differ from its
        -- source), and without the index every mirrored write fails loudly
        -- (ON CONFLICT needs it), so nothing can go wrong silently.
        IF v_problem IS NOT NULL THEN
            RAISE WARNING USING MESSAGE = pg_catalog.format('migration "%s" cannot write its tables until this is fixed: %s', r.name, v_problem);
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_altered() IS
    'internal: event trigger re-validating a migration after DDL on its tables, recording it in history';

CREATE EVENT TRIGGER softmig_ddl_dropped ON sql_drop
    EXECUTE FUNCTION @extschema@._ddl_dropped();
CREATE EVENT TRIGGER softmig_ddl_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'DROP INDEX', 'ALTER INDEX', 'CREATE TRIGGER', 'CREATE TABLE')
    EXECUTE FUNCTION @extschema@._ddl_altered();

REVOKE ALL ON FUNCTION @extschema@._ddl_dropped(), @extschema@._ddl_altered() FROM PUBLIC;
-------------------------------------------------------------------------------
-- Privileges: implementation functions run only behind the gate.
-------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    @extschema@._actor(),
    @extschema@._envelope_open_now(integer),
    @extschema@._expr_columns(text),
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
    @extschema@._repair_triggers(text),
    @extschema@._set_option(text, text, jsonb),
    @extschema@._check_options(jsonb),
    @extschema@._lock_migration(integer),
    @extschema@._lock_tables(@extschema@.migrations, @extschema@.state)
FROM PUBLIC;
