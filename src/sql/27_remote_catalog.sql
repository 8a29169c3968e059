-------------------------------------------------------------------------------
-- Cross-database migrations: catalog (functions in 85_remote.sql)
-------------------------------------------------------------------------------
-- A cross-database migration has its legacy table in one database (the
-- legacy database) and its target in another (the target database), each
-- running softmig, connected by logical replication.  Each database keeps
-- one row per such migration in softmig.remote_migrations, describing its
-- own side.  doc/cross-database.md explains the design.
CREATE SEQUENCE @extschema@.remote_endpoint_seq AS integer INCREMENT BY -1 MAXVALUE -1 START WITH -1;

CREATE TABLE @extschema@.remote_migrations (
    name             text PRIMARY KEY,
    side             text NOT NULL CHECK (side OPERATOR(pg_catalog.=) ANY (ARRAY['legacy', 'target'])),
    -- target database: the local migration landing copy -> target;
    -- legacy database: a negative id naming this endpoint in softmig.operations
    migration_id     integer NOT NULL UNIQUE,
    local_table      regclass NOT NULL UNIQUE,     -- legacy: the legacy table; target: the landing copy
    remote_table     text NOT NULL,                -- the same table in the other database
    key              text[] NOT NULL,              -- legacy key columns
    tag              text NOT NULL UNIQUE,         -- base of the names of publications, subscriptions, slots
    state            @extschema@.state NOT NULL DEFAULT 'legacy',
    fenced           boolean NOT NULL DEFAULT false,  -- writes refused: a switch of write authority is in progress
    switch           jsonb,                        -- target database: the switch in progress, step by step
    options          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       name NOT NULL,
    state_changed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE @extschema@.remote_migrations IS
    'softmig: one row per cross-database migration, describing this database''s side (legacy or target)';

-- How this database reaches the other one: only the catalog owner reads it.
CREATE TABLE @extschema@.remote_conninfo (
    migration text PRIMARY KEY,        -- written before the migration (definition asks the other database first)
    peer      text NOT NULL,       -- libpq connection string (or service=...) to the other database
    peer_back text                 -- target database: how the legacy database reaches this one
);
COMMENT ON TABLE @extschema@.remote_conninfo IS
    'softmig: connection strings to the other database of each cross-database migration (readable by the catalog owner only)';

-- The operation-key ledger that travels with the data: every key claimed on
-- the write authority of a cross-database migration, replicated in the same
-- transactions as the rows it wrote (same publication).
CREATE TABLE @extschema@.remote_operations (
    migration  text NOT NULL,
    key        text COLLATE "C" NOT NULL,
    side       @extschema@.side NOT NULL,
    relation   text NOT NULL,
    state      @extschema@.state NOT NULL,
    claimed_at timestamptz NOT NULL,
    xid        text NOT NULL,
    claimed_by name NOT NULL,
    claimed_in text NOT NULL,          -- the database where the key was claimed
    PRIMARY KEY (migration, key)
);
COMMENT ON TABLE @extschema@.remote_operations IS
    'softmig: operation keys of cross-database migrations, replicated with the data, so a retry is refused in either database';

-- Markers: rows written in the database upstream of the replication and
-- applied downstream in commit order; a fence marker ends a switch of write
-- authority, a parity marker is the point at which both sides are compared.
CREATE TABLE @extschema@.remote_markers (
    migration text NOT NULL,
    id        bigint NOT NULL,
    kind      text NOT NULL CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['fence', 'parity'])),
    at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    lsn       pg_lsn,
    PRIMARY KEY (migration, id)
);
COMMENT ON TABLE @extschema@.remote_markers IS
    'softmig: fence and parity markers of cross-database migrations, replicated in commit order';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.remote_migrations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.remote_conninfo', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.remote_operations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.remote_endpoint_seq', '');
REVOKE ALL ON @extschema@.remote_migrations, @extschema@.remote_conninfo,
              @extschema@.remote_operations, @extschema@.remote_markers FROM PUBLIC;
GRANT SELECT ON @extschema@.remote_migrations, @extschema@.remote_operations,
                @extschema@.remote_markers TO PUBLIC;

-- What softmig.status shows of a cross-database migration (NULL for the
-- others): this side's record, its replication and the switch in progress.
-- PL/pgSQL, so that status (50_state_machine.sql) can call it before the
-- functions it uses (85_remote.sql) exist.
CREATE FUNCTION @extschema@._remote_status_local(p_id integer) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM @extschema@.remote_migrations r WHERE r.migration_id OPERATOR(pg_catalog.=) p_id) THEN
        RETURN NULL;
    END IF;
    RETURN @extschema@._remote_describe((SELECT r.name FROM @extschema@.remote_migrations r
                                          WHERE r.migration_id OPERATOR(pg_catalog.=) p_id));
END $$;
COMMENT ON FUNCTION @extschema@._remote_status_local(integer) IS
    'internal: the cross-database part of softmig.status (this side, its replication, the switch in progress), NULL for a migration within one database';

-- Problems with the cross-database triggers, in the shape _trigger_health
-- reports them (missing, switched off, or with the wrong firing mode).
CREATE FUNCTION @extschema@._remote_trigger_problems(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH r AS (SELECT * FROM @extschema@.remote_migrations x
                WHERE x.migration_id OPERATOR(pg_catalog.=) p_id AND x.side OPERATOR(pg_catalog.=) 'target'
                  AND x.state OPERATOR(@extschema@.<>) 'legacy'),
    m AS (SELECT mm.* FROM @extschema@.migrations mm, r WHERE mm.id OPERATOR(pg_catalog.=) r.migration_id),
    expected AS (
        SELECT m.legacy AS rel, 'softmig_' OPERATOR(pg_catalog.||) m.id::text OPERATOR(pg_catalog.||) '_copy' AS tgname, 'O'::"char" AS mode FROM m
        UNION ALL
        SELECT m.legacy, 'softmig_' OPERATOR(pg_catalog.||) m.id::text OPERATOR(pg_catalog.||) '_apply', 'R' FROM m
        UNION ALL
        SELECT m.target, 'softmig_' OPERATOR(pg_catalog.||) m.id::text OPERATOR(pg_catalog.||) '_fence', 'O' FROM m)
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'rel', e.rel::text, 'tgname', e.tgname,
               'problem', CASE WHEN g.oid IS NULL THEN 'missing'
                               WHEN g.tgenabled OPERATOR(pg_catalog.=) 'D' THEN 'disabled'
                               WHEN e.mode OPERATOR(pg_catalog.=) 'R' THEN 'not replica only'
                               ELSE 'not plainly enabled' END)), '[]')
      FROM expected e
      LEFT JOIN pg_catalog.pg_trigger g
        ON g.tgrelid OPERATOR(pg_catalog.=) e.rel AND g.tgname OPERATOR(pg_catalog.=) e.tgname
     WHERE g.oid IS NULL OR g.tgenabled OPERATOR(pg_catalog.<>) e.mode
$$;
COMMENT ON FUNCTION @extschema@._remote_trigger_problems(integer) IS
    'internal: missing or switched-off triggers of the target side of a cross-database migration, for _trigger_health';
