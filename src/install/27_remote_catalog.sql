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

-- What this database knows about its side of a cross-database migration:
-- its state, the switch in progress, the subscription it applies (with the
-- position applied, from its replication origin) and the slot it publishes
-- from (with the WAL the other side has not confirmed yet).
CREATE FUNCTION @extschema@._remote_describe(p_name text) RETURNS jsonb
LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'name', r.name,
        'side', r.side,
        'database', pg_catalog.current_database(),
        'table', r.local_table::text,
        'state', r.state::text,
        'fenced', r.fenced,
        'switch', r.switch,
        'state_changed_at', r.state_changed_at,
        'subscription', (
            SELECT pg_catalog.jsonb_build_object(
                'name', s.subname,
                'enabled', s.subenabled,
                'worker_pid', st.pid,
                'received_lsn', st.received_lsn,
                'latest_end_lsn', st.latest_end_lsn,
                'latest_end_time', st.latest_end_time,
                'last_msg_receipt_time', st.last_msg_receipt_time,
                'applied_lsn', os.remote_lsn,
                'apply_error_count', ss.apply_error_count,
                -- PostgreSQL 19 counts tables and sequences apart
                'sync_error_count', COALESCE((pg_catalog.to_jsonb(ss) OPERATOR(pg_catalog.->>) 'sync_error_count')::pg_catalog.int8,
                                             (pg_catalog.to_jsonb(ss) OPERATOR(pg_catalog.->>) 'sync_table_error_count')::pg_catalog.int8
                                             OPERATOR(pg_catalog.+) COALESCE((pg_catalog.to_jsonb(ss) OPERATOR(pg_catalog.->>) 'sync_seq_error_count')::pg_catalog.int8, 0)),
                'tables', (SELECT pg_catalog.jsonb_object_agg(sr.srrelid::pg_catalog.regclass::text,
                                                              CASE sr.srsubstate WHEN 'i' THEN 'initialize' WHEN 'd' THEN 'copying'
                                                                                 WHEN 'f' THEN 'copied' WHEN 's' THEN 'synchronized'
                                                                                 WHEN 'r' THEN 'ready' ELSE sr.srsubstate::text END)
                             FROM pg_catalog.pg_subscription_rel sr
                            WHERE sr.srsubid OPERATOR(pg_catalog.=) s.oid))
              FROM pg_catalog.pg_subscription s
              -- the leader apply worker: from PostgreSQL 16 parallel apply
              -- workers have no relid either, but a leader_pid (a column 15
              -- does not have, hence the row as jsonb)
              LEFT JOIN pg_catalog.pg_stat_subscription st
                ON st.subid OPERATOR(pg_catalog.=) s.oid AND st.relid IS NULL
               AND (pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'leader_pid') IS NULL
              LEFT JOIN pg_catalog.pg_replication_origin_status os
                ON os.external_id OPERATOR(pg_catalog.=) ('pg_' OPERATOR(pg_catalog.||) s.oid::text)
              LEFT JOIN pg_catalog.pg_stat_subscription_stats ss ON ss.subid OPERATOR(pg_catalog.=) s.oid
             WHERE s.subdbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                                      WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
               AND s.subname OPERATOR(pg_catalog.=) (r.tag OPERATOR(pg_catalog.||) CASE r.side WHEN 'target' THEN '_fwd' ELSE '_rev' END)),
        'slot', (
            SELECT pg_catalog.jsonb_build_object(
                'name', sl.slot_name,
                'active', sl.active,
                'confirmed_flush_lsn', sl.confirmed_flush_lsn,
                'lag_bytes', pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.confirmed_flush_lsn),
                'wal_status', sl.wal_status)
              FROM pg_catalog.pg_replication_slots sl
             WHERE sl.slot_name OPERATOR(pg_catalog.=) (r.tag OPERATOR(pg_catalog.||) CASE r.side WHEN 'target' THEN '_rev' ELSE '_fwd' END)),
        'current_lsn', pg_catalog.pg_current_wal_lsn())
      FROM @extschema@.remote_migrations r
     WHERE r.name OPERATOR(pg_catalog.=) p_name
$$;
COMMENT ON FUNCTION @extschema@._remote_describe(text) IS
    'internal: this database''s side of a cross-database migration: state, switch in progress, the subscription it applies (position applied, errors, tables) and the slot it publishes from (lag in bytes)';

-- One row per metric of each cross-database migration this database takes
-- part in, for softmig.metrics (75_observe.sql): fence, switch, the
-- subscription it applies and the slot it publishes from.
CREATE FUNCTION @extschema@._remote_metrics() RETURNS TABLE(migration text, metric text, value double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.name, x.metric, x.value
      FROM @extschema@.remote_migrations r
     CROSS JOIN LATERAL (SELECT @extschema@._remote_describe(r.name) AS d) d
     CROSS JOIN LATERAL (VALUES
        ('remote_target_side', CASE WHEN r.side OPERATOR(pg_catalog.=) 'target' THEN 1 ELSE 0 END::double precision),
        ('remote_fenced', CASE WHEN r.fenced THEN 1 ELSE 0 END::double precision),
        ('remote_switch_in_progress', CASE WHEN r.switch IS NULL THEN 0 ELSE 1 END::double precision),
        ('remote_subscription_enabled', CASE WHEN (d.d OPERATOR(pg_catalog.#>>) '{subscription,enabled}')::boolean THEN 1 ELSE 0 END::double precision),
        ('remote_apply_running', CASE WHEN (d.d OPERATOR(pg_catalog.#>) '{subscription,worker_pid}') OPERATOR(pg_catalog.<>) 'null'
                                      THEN 1 ELSE 0 END::double precision),
        ('remote_apply_errors_total', COALESCE((d.d OPERATOR(pg_catalog.#>>) '{subscription,apply_error_count}')::double precision, 0)
                                      OPERATOR(pg_catalog.+) COALESCE((d.d OPERATOR(pg_catalog.#>>) '{subscription,sync_error_count}')::double precision, 0)),
        ('remote_seconds_since_message', EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-)
                                             (d.d OPERATOR(pg_catalog.#>>) '{subscription,last_msg_receipt_time}')::timestamptz)::double precision),
        ('remote_slot_active', CASE WHEN (d.d OPERATOR(pg_catalog.#>>) '{slot,active}')::boolean THEN 1 ELSE 0 END::double precision),
        ('remote_slot_lag_bytes', (d.d OPERATOR(pg_catalog.#>>) '{slot,lag_bytes}')::double precision)) x(metric, value)
     WHERE x.value IS NOT NULL
$$;
COMMENT ON FUNCTION @extschema@._remote_metrics() IS
    'internal: the metrics of this database''s side of each cross-database migration (fence, switch, subscription, publishing slot lag), for softmig.metrics';

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
