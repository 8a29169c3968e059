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
