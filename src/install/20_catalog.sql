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
