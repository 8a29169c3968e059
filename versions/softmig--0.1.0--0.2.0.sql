/* softmig--0.1.0--0.2.0.sql: upgrade from the released 0.1.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION softmig UPDATE TO '0.2.0'" to load this file. \quit

-- The schema must be safe for softmig (see 01_schema.sql): an installation
-- of 0.1.0 into a schema another role created is not updated.
DO $$
DECLARE
    v_owner name;
    v_super boolean;
    v_others text;
BEGIN
    SELECT r.rolname, r.rolsuper INTO v_owner, v_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
     WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@';
    SELECT pg_catalog.string_agg(DISTINCT COALESCE(g.rolname, 'PUBLIC'), ', ') INTO v_others
      FROM pg_catalog.pg_namespace n,
           LATERAL pg_catalog.aclexplode(n.nspacl) a
           LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
     WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@'
       AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
       AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner;
    IF NOT v_super OR v_others IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('schema "%s" is not safe for softmig', '@extschema@'),
            DETAIL = CASE WHEN NOT v_super THEN pg_catalog.format('It is owned by role "%s", which is not a superuser.', v_owner)
                          ELSE pg_catalog.format('Roles other than its owner may create objects in it: %s.', v_others) END,
            HINT = 'Whoever can create objects in softmig''s schema can replace its objects. Make a superuser its owner and revoke CREATE from other roles, then update.';
    END IF;
END $$;

-- 0.2.0 changes the C library (set-based mirroring of big statements,
-- plain-insert backfill batches, routing at plan time), which both versions
-- load from $libdir/softmig, and SQL functions, below.
--
-- Rules for this file (doc/packaging.md, "Versions and upgrades"):
--   * every change to src/install/*.sql gets its counterpart here, so that an
--     updated 0.1.0 installation equals a fresh 0.2.0 one; test/t/070_upgrade.pl
--     compares the two object by object and fails otherwise;
--   * versions/softmig--0.1.0.sql is released and never edited;
--   * C entry points that 0.1.0 declares stay exported by the library.

-- Migrations across databases (doc/cross-database.md): the catalog first,
-- which functions below read; their functions at the end.
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

-- _backfill_batch: the verify phase proves completeness first and sweeps
-- only when rows are missing (one full pass fewer on a complete target);
-- a batch that got the delete fence reads without row locks, and one whose
-- copy timed out behind a live writer (busy) is retried.
CREATE OR REPLACE FUNCTION @extschema@._backfill_batch(name text, batch_size integer)
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
        IF (r OPERATOR(pg_catalog.->>) 'busy')::boolean THEN
            -- the copy timed out behind a live writer: nothing copied, retry
            v_waiting := true;
        ELSE
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
        -- prove completeness first (one anti-join); only if rows are missing,
        -- copy them (the sweep, a second anti-join); once none is missing,
        -- remove stale target rows legacy does not have.  Removing target
        -- rows never makes a legacy row missing, and a legacy row written
        -- meanwhile reaches the target in its own transaction (mirrored).
        r := @extschema@._bf_step(m.id, 'verify', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
        IF (r OPERATOR(pg_catalog.->>) 'missing')::bigint OPERATOR(pg_catalog.=) 0 THEN
            r := @extschema@._bf_step(m.id, 'orphans', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_removed := (r OPERATOR(pg_catalog.->>) 'deleted')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'busy')::boolean THEN
                -- the delete gave way to a live writer: nothing removed, retry
                v_removed := 0;
                v_waiting := true;
            ELSIF v_removed OPERATOR(pg_catalog.<) batch_size THEN
                p.phase := 'done';
                p.finished_at := pg_catalog.now();
            END IF;
        ELSE
            r := @extschema@._bf_step(m.id, 'sweep', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
                v_waiting := true;     -- rows held by live writers, or the copy timed out; try again
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

-- Parity's digest cache (src/parity.c, "Digest cache"): a comparison whose
-- tables changed little since the last full one reuses the stored digests
-- of unchanged segments.  The mirrored -> new_write guard never uses it.
CREATE TABLE @extschema@.parity_cache (
    migration_id integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    chunk_rows   integer NOT NULL,
    fingerprint  text NOT NULL,      -- md5 of everything the digests depend on
    bounds       bytea[] NOT NULL,   -- per key column, the chunk bounds (array, binary form)
    legacy_state bytea NOT NULL,     -- digests, segment ranges and page state of each side
    target_state bytea NOT NULL,
    built_at     timestamptz NOT NULL,
    used_at      timestamptz NOT NULL,
    warm_runs    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE @extschema@.parity_cache IS
    'softmig: parity''s digest cache: per-chunk digests and per-segment page state from the last full comparison (derived, not dumped)';
REVOKE ALL ON @extschema@.parity_cache FROM PUBLIC;

CREATE FUNCTION @extschema@._parity_cache_reset(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    DELETE FROM @extschema@.parity_cache WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION @extschema@._parity_cache_reset(text) IS 'internal: implementation of softmig.parity_cache_reset';
CREATE FUNCTION @extschema@.parity_cache_reset(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.parity_cache_reset(text) IS
    'forget the stored parity digests of a migration, so the next comparison reads both tables in full; true if there were any; owners only';
REVOKE ALL ON FUNCTION @extschema@._parity_cache_reset(text) FROM PUBLIC;

ALTER FUNCTION @extschema@._require_semantic_health(integer) SET softmig.parity_cache = off;

-- The trust rule, the DDL guard of softmig's triggers and of partitions, and
-- the qualified backfill procedure (doc/security.md, doc/write-authority.md):
-- new internal functions, and the functions and event triggers that changed.

CREATE FUNCTION @extschema@._trigger_ddl(on_ boolean) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_trigger_ddl' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._trigger_ddl(boolean) IS
    'internal: mark (or unmark) that softmig itself creates or drops its triggers, so the DDL guard lets it through; returns the previous mark';

CREATE FUNCTION @extschema@._managing_triggers() RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_managing_triggers' LANGUAGE C STABLE;
COMMENT ON FUNCTION @extschema@._managing_triggers() IS
    'internal: is softmig creating or dropping its own triggers right now';

CREATE FUNCTION @extschema@._has_rows(rel regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_has_rows' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._has_rows(regclass) IS
    'internal: does a table (or any partition of it) hold a row; a heap scan, no privilege check';

CREATE FUNCTION @extschema@._install_triggers_on(p_id integer, r regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p text := 'softmig_' OPERATOR(pg_catalog.||) p_id::text;
    v_prev boolean := @extschema@._trigger_ddl(true);
    t record;
BEGIN
    -- CREATE OR REPLACE: also puts back a trigger that was altered by hand
    FOR t IN SELECT * FROM (VALUES
                 (1, '_guard', 'BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE', '', '_guard_trigger'),
                 (2, '_ins', 'AFTER INSERT', 'REFERENCING NEW TABLE AS softmig_new ', '_write_trigger'),
                 (3, '_upd', 'AFTER UPDATE', 'REFERENCING OLD TABLE AS softmig_old NEW TABLE AS softmig_new ', '_write_trigger'),
                 (4, '_del', 'AFTER DELETE', 'REFERENCING OLD TABLE AS softmig_old ', '_write_trigger'))
                 AS v(n, suffix, fires, transition, func)
              ORDER BY v.n
    LOOP
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I %s ON %s %sFOR EACH STATEMENT EXECUTE FUNCTION @extschema@.%I(%L)',
            p OPERATOR(pg_catalog.||) t.suffix, t.fires, r, t.transition, t.func, p_id);
    END LOOP;
    PERFORM @extschema@._trigger_ddl(v_prev);
END $$;
COMMENT ON FUNCTION @extschema@._install_triggers_on(integer, regclass) IS
    'internal: create (or put back) the guard and write triggers of a migration on one table or partition';

CREATE OR REPLACE FUNCTION @extschema@._install_triggers(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r regclass;
BEGIN
    FOR r IN SELECT * FROM @extschema@._tables(p_id) LOOP
        PERFORM @extschema@._install_triggers_on(p_id, r);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._install_triggers(integer) IS
    'internal: create the guard and write triggers of a migration on both tables and all their partitions';

CREATE FUNCTION @extschema@._softmig_triggers(p_id integer)
RETURNS TABLE(rel regclass, tgname name, kind text, tgenabled "char", well_formed boolean)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.tgrelid::pg_catalog.regclass, t.tgname,
           pg_catalog.substring(t.tgname::text, '_([a-z]+)$'), t.tgenabled,
           t.tgfoid OPERATOR(pg_catalog.=) CASE WHEN t.tgname::text OPERATOR(pg_catalog.~) '_guard$'
                                               THEN '@extschema@._guard_trigger()'::pg_catalog.regprocedure
                                               ELSE '@extschema@._write_trigger()'::pg_catalog.regprocedure END
           AND t.tgtype OPERATOR(pg_catalog.=) CASE pg_catalog.substring(t.tgname::text, '_([a-z]+)$')
                                                   WHEN 'guard' THEN 62 WHEN 'ins' THEN 4
                                                   WHEN 'upd' THEN 16 ELSE 8 END
           AND t.tgnargs OPERATOR(pg_catalog.=) 1
      FROM pg_catalog.pg_trigger t
     WHERE t.tgname OPERATOR(pg_catalog.~) ('^softmig_' OPERATOR(pg_catalog.||) p_id::text OPERATOR(pg_catalog.||) '_(guard|ins|upd|del)$')
$$;
COMMENT ON FUNCTION @extschema@._softmig_triggers(integer) IS
    'internal: every softmig trigger of a migration, on whatever table it is, and whether it is the one softmig creates';

CREATE OR REPLACE FUNCTION @extschema@._remove_triggers(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_prev boolean := @extschema@._trigger_ddl(true);
BEGIN
    -- wherever they are: also on a partition detached meanwhile
    FOR r IN SELECT t.tgname, t.rel FROM @extschema@._softmig_triggers(p_id) t LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    PERFORM @extschema@._trigger_ddl(v_prev);
END $$;
COMMENT ON FUNCTION @extschema@._remove_triggers(integer) IS
    'internal: drop every softmig trigger of a migration';

CREATE OR REPLACE FUNCTION @extschema@._trigger_health(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH m AS (SELECT * FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id),
    tabs AS (SELECT r FROM @extschema@._tables(p_id) AS r),
    expected AS (
        SELECT r AS rel, 'softmig_' OPERATOR(pg_catalog.||) p_id::text OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s AS tgname
          FROM m, tabs, unnest(ARRAY['guard', 'ins', 'upd', 'del']) AS s
         WHERE m.state OPERATOR(@extschema@.<>) 'legacy'),
    found AS (SELECT * FROM @extschema@._softmig_triggers(p_id)),
    problems AS (
        -- missing, or not plainly enabled (tgenabled O): disabled (D),
        -- replica only (R), always (A), or altered by hand
        SELECT e.rel::text AS rel, e.tgname,
               CASE WHEN f.rel IS NULL THEN 'missing'
                    WHEN NOT f.well_formed THEN 'altered'
                    WHEN f.tgenabled OPERATOR(pg_catalog.=) 'D' THEN 'disabled'
                    WHEN f.tgenabled OPERATOR(pg_catalog.=) 'R' THEN 'replica only'
                    ELSE 'always' END AS problem
          FROM expected e
          LEFT JOIN found f ON f.rel OPERATOR(pg_catalog.=) e.rel AND f.tgname OPERATOR(pg_catalog.=) e.tgname
         WHERE f.rel IS NULL OR NOT f.well_formed OR f.tgenabled OPERATOR(pg_catalog.<>) 'O'
        UNION ALL
        -- a cross-database migration's own triggers (27_remote_catalog.sql)
        SELECT x OPERATOR(pg_catalog.->>) 'rel', (x OPERATOR(pg_catalog.->>) 'tgname')::name, x OPERATOR(pg_catalog.->>) 'problem'
          FROM pg_catalog.jsonb_array_elements(@extschema@._remote_trigger_problems(p_id)) x
        UNION ALL
        -- left on a table that is no longer part of the migration
        SELECT f.rel::text, f.tgname, 'not a table of the migration'
          FROM found f
         WHERE f.rel OPERATOR(pg_catalog.<>) ALL (ARRAY(SELECT r FROM tabs))
        UNION ALL
        -- a rule rewrites writes, so they would not reach the other table as written
        SELECT w.ev_class::pg_catalog.regclass::text, w.rulename, 'rule'
          FROM pg_catalog.pg_rewrite w
         WHERE w.ev_class OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT r FROM tabs)))
    SELECT pg_catalog.jsonb_build_object(
        'expected', (SELECT pg_catalog.count(*) FROM expected),
        'healthy', NOT EXISTS (SELECT 1 FROM problems),
        'problems', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(problems)) FROM problems), '[]'))
$$;
COMMENT ON FUNCTION @extschema@._trigger_health(integer) IS
    'internal: which softmig triggers of a migration are missing, switched off, altered or stray, and rules on its tables';

CREATE FUNCTION @extschema@._refuse_rules(p_id integer) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT w.rulename, w.ev_class::pg_catalog.regclass AS rel
               FROM pg_catalog.pg_rewrite w
              WHERE w.ev_class OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT @extschema@._tables(p_id)))
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('table %s has rule "%s"', r.rel, r.rulename),
            DETAIL = 'softmig carries each statement''s rows to the other table as written; a rule would change what is written.',
            HINT = 'Drop the rule (a trigger can do its work).';
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._refuse_rules(integer) IS
    'internal: raise 0A000 if a table of a migration has a rule';

-- _lock_tables takes ACCESS EXCLUSIVE at once for a caller that drops
-- softmig's triggers (a rollback to legacy, repair_triggers): asking for it
-- later, over SHARE ROW EXCLUSIVE, deadlocked with writers that had read a
-- table before writing it.
DROP FUNCTION @extschema@._lock_tables(@extschema@.migrations, @extschema@.state);
CREATE FUNCTION @extschema@._lock_tables(m @extschema@.migrations, p_to @extschema@.state,
                                         p_drop_triggers boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout FROM CURRENT
AS $$
DECLARE
    v_timeout text := COALESCE(m.options OPERATOR(pg_catalog.->>) 'lock_timeout', '5s');
    -- DROP TRIGGER needs ACCESS EXCLUSIVE: a caller that drops softmig's
    -- triggers takes it now, not by an upgrade later, which would deadlock
    -- with a writer that read a table (ACCESS SHARE) before writing it
    v_mode text := CASE WHEN p_drop_triggers THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE ROW EXCLUSIVE' END;
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', v_timeout, true);
    -- Writers lock the authoritative table first and the projection second;
    -- take them in the same order so a state change never deadlocks with a
    -- writer that arrives while it waits.
    IF m.state OPERATOR(@extschema@.>=) 'new_write' THEN
        EXECUTE pg_catalog.format('LOCK TABLE %s, %s IN %s MODE', m.target, m.legacy, v_mode);
    ELSE
        EXECUTE pg_catalog.format('LOCK TABLE %s, %s IN %s MODE', m.legacy, m.target, v_mode);
    END IF;
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
        MESSAGE = pg_catalog.format('could not lock tables %s and %s to move migration "%s" from %s to %s',
                                    m.legacy, m.target, m.name, m.state, COALESCE(p_to, m.state)),
        DETAIL = pg_catalog.format('Writers kept a conflicting lock for longer than lock_timeout (%s).', v_timeout),
        HINT = 'Retry the call; nothing was changed. Long transactions writing either table delay state changes; option lock_timeout sets how long to wait.';
END $$;
COMMENT ON FUNCTION @extschema@._lock_tables(@extschema@.migrations, @extschema@.state, boolean) IS
    'internal: lock both tables of a migration against writers (and readers too when the caller drops softmig''s triggers), authoritative table first, within lock_timeout';

REVOKE ALL ON FUNCTION @extschema@._lock_tables(@extschema@.migrations, @extschema@.state, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._repair_triggers(name text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_before jsonb;
BEGIN
    m := @extschema@._lock_migration(m.id);
    v_before := @extschema@._trigger_health(m.id);
    PERFORM @extschema@._lock_tables(m, NULL, true);
    PERFORM @extschema@._remove_triggers(m.id);
    IF m.state OPERATOR(@extschema@.<>) 'legacy' THEN
        PERFORM @extschema@._install_triggers(m.id);
        -- and those of a migration across databases
        PERFORM @extschema@._remote_install_triggers(xr.name) FROM @extschema@.remote_migrations xr
          WHERE xr.migration_id OPERATOR(pg_catalog.=) m.id;
    END IF;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'repair_triggers', m.state, m.state, NULL, v_before);
    RETURN @extschema@._trigger_health(m.id);
END $$;
COMMENT ON FUNCTION @extschema@._repair_triggers(text) IS 'internal: implementation of softmig.repair_triggers';

CREATE OR REPLACE FUNCTION @extschema@._set_state(p_id integer, p_to @extschema@.state, p_action text,
                                       p_reason text, p_detail jsonb)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    v_group text;
    v_keys jsonb := '[]';
BEGIN
    -- a migration across databases changes state in both, step by step
    IF NOT @extschema@._remote_stepping()
       AND EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) p_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" spans two databases', (SELECT x.name FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) p_id)),
            DETAIL = 'Its state changes in both databases together, at a fence when the write authority moves.',
            HINT = 'Use CALL softmig.remote_advance(...) or CALL softmig.remote_rollback(...).';
    END IF;
    -- serialize state changes of one migration (bounded by lock_timeout too)
    m := @extschema@._lock_migration(p_id);
    -- a member of a group changes state only with its group (52_groups.sql); read after
    -- the lock, which create_group holds until it commits
    SELECT g.name INTO v_group
      FROM @extschema@.group_members gm JOIN @extschema@.groups g ON g.id OPERATOR(pg_catalog.=) gm.group_id
     WHERE gm.migration_id OPERATOR(pg_catalog.=) p_id;
    IF v_group IS DISTINCT FROM (p_detail OPERATOR(pg_catalog.->>) 'group') THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is a member of group "%s" and changes state only with it',
                                        m.name, v_group),
            DETAIL = 'The members of a group move together, in one transaction.',
            HINT = pg_catalog.format('Use softmig.advance_group(%L) or softmig.rollback_group(%L), or softmig.drop_group(%L) first.',
                                     v_group, v_group, v_group);
    END IF;
    -- the members of a split write one table: they move only as a group (53_split.sql)
    IF v_group IS NULL AND pg_catalog.cardinality(@extschema@._split_partners(p_id)) OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" shares table %s with migration "%s" and changes state only in a group with it',
                                        m.name,
                                        (SELECT (CASE WHEN x.legacy OPERATOR(pg_catalog.=) m.legacy THEN m.legacy ELSE m.target END)::regclass
                                           FROM @extschema@.migrations x
                                          WHERE x.id OPERATOR(pg_catalog.=) (@extschema@._split_partners(p_id))[1]),
                                        (SELECT x.name FROM @extschema@.migrations x
                                          WHERE x.id OPERATOR(pg_catalog.=) (@extschema@._split_partners(p_id))[1])),
            HINT = 'Put the members of the split or merge in one group (softmig.create_group) and use softmig.advance_group or softmig.rollback_group.';
    END IF;
    IF m.state OPERATOR(@extschema@.=) p_to THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is already in state %s', m.name, m.state),
            DETAIL = 'Another session changed its state while this call waited.';
    END IF;

    PERFORM @extschema@._state_guards(m, p_to, p_detail);

    -- Lock out writers on both tables (readers are not blocked, except by a
    -- move to legacy, which drops the triggers): in-flight writers finish
    -- under the old state, later ones see the new one.
    PERFORM @extschema@._lock_tables(m, p_to, p_to OPERATOR(@extschema@.=) 'legacy');

    -- The rollback envelope, checked after the locks so a racing first
    -- new-only write is either already recorded or not yet projected.
    PERFORM @extschema@._envelope_guard(m, p_to);

    -- The write authority moves: the table that takes keyless inserts from
    -- now on draws its keys past every key the other side holds (keygen.c),
    -- under the locks above.  Across databases this database holds the
    -- target and the landing copy of legacy: the target's generator moves;
    -- the legacy table's is in the other database (doc/limitations.md).
    IF (m.state OPERATOR(@extschema@.>=) 'new_write') OPERATOR(pg_catalog.<>) (p_to OPERATOR(@extschema@.>=) 'new_write')
       AND (p_to OPERATOR(@extschema@.>=) 'new_write'
            OR NOT EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) p_id)) THEN
        v_keys := @extschema@._hand_over_keys(p_id, p_to OPERATOR(@extschema@.>=) 'new_write');
    END IF;

    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        PERFORM @extschema@._refuse_rules(p_id);
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
    IF pg_catalog.jsonb_array_length(v_keys) OPERATOR(pg_catalog.>) 0 THEN
        PERFORM @extschema@._history(p_id, 'key_handover', m.state, p_to, NULL,
            pg_catalog.jsonb_build_object('table', CASE WHEN p_to OPERATOR(@extschema@.>=) 'new_write'
                                                        THEN m.target ELSE m.legacy END::text,
                                          'columns', v_keys));
    END IF;
    RETURN p_to;
END $$;
COMMENT ON FUNCTION @extschema@._set_state(integer, @extschema@.state, text, text, jsonb) IS
    'internal: the one function that changes a migration''s state: checks legality, locks both tables, hands the key generators over, retargets triggers, records history';

-- create_migration refuses definitions that cannot work: NULLs in key,
-- new_only and divergent, the key in new_only or divergent, target_key of
-- the wrong shape (mapping expressions are checked in C, by _validate).
CREATE FUNCTION @extschema@._resolve_mapping(p_direction text, p_dest regclass, p_src regclass, p_given jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_maps jsonb := '[]';
    v_side text := CASE p_direction WHEN 'forward' THEN 'target' ELSE 'legacy' END;
BEGIN
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) p_dest AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF p_given ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, p_dest);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', p_direction, 'column_name', r.attname, 'ordinal', r.attnum, 'expression', p_given OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) p_src AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', p_direction, 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('%s column "%s" is NOT NULL without a default and nothing maps to it', v_side, r.attname),
                HINT = pg_catalog.format('Add it to %s, give it a default, or allow NULL.', p_direction);
        END IF;
    END LOOP;
    RETURN v_maps;
END $$;
COMMENT ON FUNCTION @extschema@._resolve_mapping(text, regclass, regclass, jsonb) IS
    'internal: the resolved mapping of one direction into table p_dest from p_src: given expressions, same-named columns, and 22023 for a required column nothing fills';

REVOKE ALL ON FUNCTION @extschema@._resolve_mapping(text, regclass, regclass, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._create_migration(name text, legacy regclass, target regclass,
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
    v_owner @extschema@.migrations;
    v_others text[] := '{}';
    v_merge boolean := false;
    v_maps jsonb;
    v_entity text[];
    r record;
    k text;
    e text;
    t regclass;
    i integer;
BEGIN
    PERFORM @extschema@._require_nonblank(v_name, 'migration name must not be empty');
    IF EXISTS (SELECT 1 FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already exists', v_name);
    END IF;

    -- an attribute member of a split (a merge): its owner, checked before the tables
    IF v_options OPERATOR(pg_catalog.?) 'attribute_of' THEN
        PERFORM @extschema@._check_options(v_options);
        v_owner := @extschema@._split_owner(v_options OPERATOR(pg_catalog.->>) 'attribute_of', legacy, target);
        v_merge := v_owner.legacy OPERATOR(pg_catalog.<>) legacy::pg_catalog.oid;
        -- the columns of the shared table the owner and its other attribute
        -- members write: legacy columns (split), target columns (merge)
        SELECT COALESCE(pg_catalog.array_agg(DISTINCT x.column_name::text), '{}') INTO v_others
          FROM @extschema@.mappings x JOIN @extschema@.migrations o ON o.id OPERATOR(pg_catalog.=) x.migration_id
         WHERE x.direction OPERATOR(pg_catalog.=) CASE WHEN v_merge THEN 'forward' ELSE 'backward' END
           AND (o.id OPERATOR(pg_catalog.=) v_owner.id
                OR o.options OPERATOR(pg_catalog.->>) 'attribute_of' OPERATOR(pg_catalog.=) v_owner.name)
           AND x.column_name OPERATOR(pg_catalog.<>) ALL (CASE WHEN v_merge THEN v_owner.target_key ELSE v_owner.legacy_key END);
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
        -- (a split's members share their legacy table, a merge's their
        -- target table: option attribute_of)
        SELECT m.name INTO v_other FROM @extschema@.migrations m
         WHERE t OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
           AND NOT (v_owner.id IS NOT NULL
                    AND ((NOT v_merge AND t OPERATOR(pg_catalog.=) v_owner.legacy
                          AND t OPERATOR(pg_catalog.=) _create_migration.legacy)
                         OR (v_merge AND t OPERATOR(pg_catalog.=) v_owner.target
                             AND t OPERATOR(pg_catalog.=) _create_migration.target
                             AND t OPERATOR(pg_catalog.=) m.target))
                    AND (m.id OPERATOR(pg_catalog.=) v_owner.id
                         OR m.options OPERATOR(pg_catalog.->>) 'attribute_of' OPERATOR(pg_catalog.=) v_owner.name));
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('table %s already takes part in migration "%s"', t, v_other),
                HINT = 'A table can be in one migration at a time, but for the legacy table of a split or the target table of a merge: name the migration that owns the entity with options => ''{"attribute_of": "..."}'' (doc/shapes.md).';
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
    IF pg_catalog.array_position(v_key, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'key must not contain NULL';
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
    PERFORM @extschema@._check_mapping(target, v_fwd, 'forward');
    PERFORM @extschema@._check_mapping(legacy, v_bwd, 'backward');
    IF pg_catalog.array_position(v_new_only OPERATOR(pg_catalog.||) v_divergent, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s must not contain NULL',
                CASE WHEN pg_catalog.array_position(v_new_only, NULL) IS NOT NULL THEN 'new_only' ELSE 'divergent' END);
    END IF;
    FOREACH k IN ARRAY v_new_only LOOP
        PERFORM @extschema@._require_column(target, k, 'new_only column', false);
    END LOOP;
    FOREACH k IN ARRAY v_divergent LOOP
        PERFORM @extschema@._require_column(target, k, 'divergent column', false);
    END LOOP;

    -- options
    PERFORM @extschema@._check_options(v_options);
    -- one legacy row, a set of target rows: the entity columns hold the key (41_one_to_many.sql)
    v_entity := @extschema@._check_one_to_many(legacy, target, v_key, v_fwd, v_bwd, v_new_only, v_divergent, v_options);
    IF v_entity IS NOT NULL THEN
        SELECT v_fwd OPERATOR(pg_catalog.||) pg_catalog.jsonb_object_agg(x.e, pg_catalog.quote_ident(x.k)),
               v_bwd OPERATOR(pg_catalog.||) pg_catalog.jsonb_object_agg(x.k, pg_catalog.quote_ident(x.e))
          INTO v_fwd, v_bwd
          FROM ROWS FROM (pg_catalog.unnest(v_key), pg_catalog.unnest(v_entity)) AS x(k, e);
    END IF;

    -- resolve both mappings: every insertable column of each destination
    -- (built in a variable, no temp table: this runs as the catalog owner and
    -- must not touch anything the caller can create)
    v_maps := @extschema@._resolve_mapping('forward', target, legacy, v_fwd,
                                           CASE WHEN v_merge THEN v_others ELSE '{}' END)
              OPERATOR(pg_catalog.||) @extschema@._resolve_mapping('backward', legacy, target, v_bwd,
                                                                   CASE WHEN v_merge THEN '{}' ELSE v_others END);
    IF v_owner.id IS NOT NULL AND NOT v_merge THEN
        PERFORM @extschema@._split_member_check(v_owner, v_key, v_maps, v_others, false);
    END IF;

    -- the correlation key: what each legacy key column maps to
    IF v_entity IS NOT NULL THEN
        v_tkey := v_entity;
    ELSIF v_options OPERATOR(pg_catalog.?) 'target_key' THEN
        IF pg_catalog.jsonb_typeof(v_options OPERATOR(pg_catalog.->) 'target_key') OPERATOR(pg_catalog.<>) 'array' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must be a jsonb array of target column names';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(v_options OPERATOR(pg_catalog.->) 'target_key') x
                    WHERE pg_catalog.jsonb_typeof(x) OPERATOR(pg_catalog.<>) 'string') THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must be a jsonb array of target column names',
                DETAIL = pg_catalog.format('Given: %s', v_options OPERATOR(pg_catalog.->) 'target_key');
        END IF;
        SELECT COALESCE(pg_catalog.array_agg(x), '{}') INTO v_tkey
          FROM pg_catalog.jsonb_array_elements_text(v_options OPERATOR(pg_catalog.->) 'target_key') x;
        IF pg_catalog.cardinality(v_tkey) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must name as many columns as the legacy key';
        END IF;
        IF (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(v_tkey) x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_tkey) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'option target_key names a column twice';
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
    IF v_merge THEN
        PERFORM @extschema@._split_member_check(v_owner, v_tkey, v_maps, v_others, true);
    END IF;
    -- the key correlates the rows: legacy always holds it, and it cannot differ
    FOREACH k IN ARRAY v_tkey LOOP
        IF k OPERATOR(pg_catalog.=) ANY (v_new_only OPERATOR(pg_catalog.||) v_divergent) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target key column "%s" cannot be %s', k,
                    CASE WHEN k OPERATOR(pg_catalog.=) ANY (v_new_only) THEN 'new_only' ELSE 'divergent' END),
                DETAIL = 'Rows are correlated on the key: legacy always holds it, and it is equal on both sides.';
        END IF;
    END LOOP;
    FOREACH k IN ARRAY v_tkey LOOP
        -- a NULL in it marks a row the new system created on its own: a new-only
        -- entity, never correlated (doc/write-authority.md)
        PERFORM @extschema@._require_column(target, k, 'target key column', false);
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
    PERFORM @extschema@._refuse_rules(v_id);
    PERFORM @extschema@._validate(v_id);

    PERFORM @extschema@._history(v_id, 'create', NULL, 'legacy', NULL,
        pg_catalog.jsonb_build_object('legacy', legacy::text, 'target', target::text,
                                      'key', v_key, 'target_key', v_tkey));
    IF v_owner.id IS NOT NULL THEN
        -- the owner's projection gathers this member's columns from now on
        PERFORM @extschema@._invalidate(v_owner.legacy, v_owner.target);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'internal: implementation of softmig.create_migration (runs behind the ownership gate)';
-- Backfill progress (doc/monitoring.md): the current run's figures, kept by
-- a trigger on each checkpoint; live row estimates; rows per second, percent
-- done and time left in status; progress NOTICEs from CALL softmig.backfill.
ALTER TABLE @extschema@.backfill_progress
    ADD COLUMN run_started_at timestamptz,
    ADD COLUMN run_rows bigint NOT NULL DEFAULT 0,
    ADD COLUMN batch_ended_at timestamptz,
    ADD COLUMN progressed_at timestamptz;

-- Progress of the current run, derived from each checkpoint.  A batch runs
-- in its own transaction, and CALL softmig.backfill starts the next one as
-- it commits the last, so now() - the previous batch's end is the gap
-- between two batches: within one CALL it is about zero (pauses fall inside
-- the next batch's transaction), between two CALLs it is the idle time.
CREATE FUNCTION @extschema@._backfill_progress_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.batch_ended_at IS NULL
       OR (pg_catalog.now() OPERATOR(pg_catalog.-) OLD.batch_ended_at) OPERATOR(pg_catalog.>) interval '1 minute' THEN
        NEW.run_started_at := pg_catalog.now();
        NEW.run_rows := 0;
    END IF;
    NEW.run_rows := NEW.run_rows OPERATOR(pg_catalog.+) (NEW.rows_backfilled OPERATOR(pg_catalog.-) OLD.rows_backfilled);
    NEW.batch_ended_at := pg_catalog.clock_timestamp();
    IF NEW.rows_backfilled OPERATOR(pg_catalog.<>) OLD.rows_backfilled
       OR NEW.rows_removed OPERATOR(pg_catalog.<>) OLD.rows_removed
       OR NEW.phase OPERATOR(pg_catalog.<>) OLD.phase
       OR NEW.cursor IS DISTINCT FROM OLD.cursor THEN
        NEW.progressed_at := NEW.batch_ended_at;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION @extschema@._backfill_progress_run() IS
    'internal: BEFORE UPDATE trigger on softmig.backfill_progress keeping the current run''s start, rows, last batch and last progress';

CREATE TRIGGER backfill_progress_run
    BEFORE UPDATE ON @extschema@.backfill_progress
    FOR EACH ROW WHEN (NEW.batches OPERATOR(pg_catalog.<>) OLD.batches)
    EXECUTE FUNCTION @extschema@._backfill_progress_run();
REVOKE ALL ON FUNCTION @extschema@._backfill_progress_run() FROM PUBLIC;

CREATE FUNCTION @extschema@._rows_estimate(rel regclass) RETURNS double precision
    AS 'MODULE_PATHNAME', 'softmig_rows_estimate' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._rows_estimate(regclass) IS
    'internal: estimated live rows of a table now (its blocks times the row density of its statistics or of sampled pages; partitions summed), without scanning it (at most three pages read) or waiting for a lock';

CREATE OR REPLACE FUNCTION @extschema@._backfill_status(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'phase', COALESCE(bp.phase, 'not started'),
        'cursor', bp.cursor,
        'rows_backfilled', COALESCE(bp.rows_backfilled, 0),
        'rows_removed', COALESCE(bp.rows_removed, 0),
        'batches', COALESCE(bp.batches, 0),
        'ranges_to_revisit', (SELECT pg_catalog.count(*) FROM @extschema@.backfill_revisit r
                               WHERE r.migration_id OPERATOR(pg_catalog.=) p_id),
        'remaining_estimate', x.remaining,
        -- below 100 until the backfill has proven the target complete
        'percent_done', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 100
            WHEN x.remaining IS NOT NULL AND (COALESCE(bp.rows_backfilled, 0) OPERATOR(pg_catalog.+) x.remaining) OPERATOR(pg_catalog.>) 0
            THEN LEAST(99.9, pg_catalog.round((100.0 OPERATOR(pg_catalog.*) COALESCE(bp.rows_backfilled, 0))
                                  OPERATOR(pg_catalog./) (COALESCE(bp.rows_backfilled, 0) OPERATOR(pg_catalog.+) x.remaining), 1)) END,
        'rows_per_second', x.rate,
        'eta_seconds', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0
            WHEN x.rate OPERATOR(pg_catalog.>) 0 THEN pg_catalog.round(x.remaining OPERATOR(pg_catalog./) x.rate) END,
        'run_started_at', bp.run_started_at,
        'run_rows', COALESCE(bp.run_rows, 0),
        'last_batch_at', bp.batch_ended_at,
        'last_progress_at', bp.progressed_at,
        'started_at', bp.started_at,
        'updated_at', bp.updated_at,
        'finished_at', bp.finished_at)
      FROM @extschema@.migrations m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
      CROSS JOIN LATERAL (
        -- legacy rows the target does not hold yet; the target holds at
        -- least what was copied (its estimate lags while it has no statistics)
        SELECT CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0::bigint ELSE
                   GREATEST(0, (@extschema@._rows_estimate(m.legacy) OPERATOR(pg_catalog.-)
                                GREATEST(@extschema@._rows_estimate(m.target), COALESCE(bp.rows_backfilled, 0)))::bigint) END AS remaining,
               -- rows per second of the current run, pauses included (what the ETA needs)
               CASE WHEN bp.batch_ended_at OPERATOR(pg_catalog.>) bp.run_started_at
                    THEN pg_catalog.round((bp.run_rows OPERATOR(pg_catalog./)
                         EXTRACT(epoch FROM bp.batch_ended_at OPERATOR(pg_catalog.-) bp.run_started_at))::numeric, 1)
                    ELSE 0 END AS rate) x
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;

CREATE FUNCTION @extschema@._backfill_progress_line(p_id integer) RETURNS text
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('softmig: backfill of "%s": %s rows copied, %s rows/s, %s done, %s (phase %s)',
               m.name, x.s OPERATOR(pg_catalog.->>) 'rows_backfilled', x.s OPERATOR(pg_catalog.->>) 'rows_per_second',
               COALESCE((x.s OPERATOR(pg_catalog.->>) 'percent_done') OPERATOR(pg_catalog.||) '%', 'unknown %'),
               COALESCE('about ' OPERATOR(pg_catalog.||) pg_catalog.justify_interval(pg_catalog.make_interval(
                            secs => (x.s OPERATOR(pg_catalog.->>) 'eta_seconds')::double precision))::text
                        OPERATOR(pg_catalog.||) ' left', 'time left unknown'),
               x.s OPERATOR(pg_catalog.->>) 'phase')
      FROM @extschema@.migrations m
     CROSS JOIN LATERAL (SELECT @extschema@._backfill_status(m.id) AS s) x
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._backfill_progress_line(integer) IS
    'internal: the progress NOTICE of CALL softmig.backfill: rows copied, rows per second, percent done, time left, phase';

CREATE OR REPLACE PROCEDURE @extschema@.backfill(name text, batch_size integer DEFAULT 1000,
                                      max_batches integer DEFAULT NULL, pause_ms integer DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    v_id integer := (@extschema@._migration(name)).id;
    r pg_catalog.jsonb;      -- no SET search_path here: every name is qualified
    n integer := 0;
    v_copied bigint := 0;
    v_mine boolean;
    v_report pg_catalog.timestamptz;   -- when the next progress NOTICE is due
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
        -- progress every softmig.backfill_progress_interval (defined once the first batch loaded the module)
        v_report := COALESCE(v_report, pg_catalog.statement_timestamp()
            OPERATOR(pg_catalog.+) pg_catalog.current_setting('softmig.backfill_progress_interval')::interval);
        IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) v_report THEN
            RAISE NOTICE '%', @extschema@._backfill_progress_line(v_id);
            v_report := pg_catalog.clock_timestamp()
                OPERATOR(pg_catalog.+) pg_catalog.current_setting('softmig.backfill_progress_interval')::interval;
        END IF;
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
    'copy every legacy row the target lacks, one committed batch at a time, race-safe and resumable, with a progress NOTICE every softmig.backfill_progress_interval; state mirrored only; owners of both tables only';

DROP EVENT TRIGGER softmig_ddl_altered;

-------------------------------------------------------------------------------
-- DDL on migrated tables: detected, never a silent wrong mirror
-------------------------------------------------------------------------------
-- The event-trigger functions in PL/pgSQL are SECURITY DEFINER: they run for
-- whoever issues DDL and must read and write softmig's catalog, create or
-- drop softmig's triggers on a new or detached partition and re-prepare the
-- migration's statements (which _validate does as the table owners, never as
-- the definer).  search_path is pinned; EXECUTE is revoked from PUBLIC
-- (event triggers do not need it).  None evaluates user SQL as the definer.

CREATE FUNCTION @extschema@._ddl_start() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'softmig_ddl_start' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._ddl_start() IS
    'internal: event trigger refusing DROP TABLE of a partition that holds rows while its migration is between mirrored and new_read';

CREATE FUNCTION @extschema@._drop_approved(rel oid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_drop_approved' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._drop_approved(oid) IS
    'internal: did the DROP TABLE of this transaction check that this relation may go';

CREATE OR REPLACE FUNCTION @extschema@._ddl_dropped() RETURNS event_trigger
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
    IF @extschema@._managing_triggers() THEN
        RETURN;     -- softmig's own trigger changes
    END IF;
    -- a softmig trigger dropped while its migration is managed: by DROP
    -- TRIGGER (writes would skip the other table), or with its table (a
    -- partition: fine when DROP TABLE checked that it held no rows)
    FOR r IN SELECT m.name, m.state, d.object_identity, tb.objid AS tabid
               FROM pg_catalog.pg_event_trigger_dropped_objects() d
               JOIN @extschema@.migrations m
                 ON d.address_names[3] OPERATOR(pg_catalog.~)
                    ('^softmig_' OPERATOR(pg_catalog.||) m.id::text OPERATOR(pg_catalog.||) '_(guard|ins|upd|del)$')
               LEFT JOIN pg_catalog.pg_event_trigger_dropped_objects() tb
                 ON tb.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                AND tb.objsubid OPERATOR(pg_catalog.=) 0
                AND tb.schema_name OPERATOR(pg_catalog.=) d.address_names[1]
                AND tb.object_name OPERATOR(pg_catalog.=) d.address_names[2]
              WHERE d.object_type OPERATOR(pg_catalog.=) 'trigger'
                AND m.state OPERATOR(@extschema@.<>) 'legacy'
    LOOP
        IF r.tabid IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot drop trigger %s: migration "%s" is in state %s',
                                            r.object_identity, r.name, r.state),
                DETAIL = 'Without it writes would not reach the other table of the migration, or would not be refused.',
                HINT = 'Roll the migration back to legacy to remove its triggers.';
        ELSIF r.state OPERATOR(@extschema@.<) 'cutover' AND NOT @extschema@._drop_approved(r.tabid) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot drop a partition of a table of migration "%s" in state %s this way',
                                            r.name, r.state),
                DETAIL = pg_catalog.format('It carries trigger %s; its rows would vanish from one table only.', r.object_identity),
                HINT = 'Delete its rows and drop it with DROP TABLE.';
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_dropped() IS
    'internal: event trigger refusing DROP TABLE of a table that takes part in a migration, and DROP of softmig''s triggers while the migration is managed';

CREATE FUNCTION @extschema@._ddl_partitions(command pg_ddl_command, detached boolean) RETURNS oid[]
    AS 'MODULE_PATHNAME', 'softmig_ddl_partitions' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._ddl_partitions(pg_ddl_command, boolean) IS
    'internal: the relations a DDL command made partitions (created or attached), or detached';

CREATE FUNCTION @extschema@._reconcile_partitions(p_id integer, p_command text, p_added oid[], p_removed oid[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    r record;
    t record;
    v_prev boolean;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        RETURN;
    END IF;
    -- a partition the command created or attached (with its own partitions):
    -- it gets the triggers, unless it brings rows that would not reach the
    -- other table (or, in cutover, rows into the frozen legacy table)
    FOR r IN SELECT DISTINCT p.relid::pg_catalog.regclass AS rel,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(m.legacy) l
                             WHERE l.relid OPERATOR(pg_catalog.=) p.relid) AS on_legacy
               FROM pg_catalog.unnest(p_added) a(relid),
                    LATERAL (SELECT a.relid UNION SELECT pt.relid FROM pg_catalog.pg_partition_tree(a.relid) pt) p
              WHERE p.relid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT @extschema@._tables(p_id)))
    LOOP
        IF (m.state OPERATOR(@extschema@.<) 'cutover' OR r.on_legacy) AND @extschema@._has_rows(r.rel) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot add table %s to migration "%s" in state %s: it holds rows',
                                            r.rel, m.name, m.state),
                DETAIL = 'Its rows would be in one table of the migration only.',
                HINT = 'Attach it empty and insert its rows through the partitioned table (they are mirrored), or attach it before the migration leaves legacy.';
        END IF;
        PERFORM @extschema@._install_triggers_on(p_id, r.rel);
        PERFORM @extschema@._history(p_id, 'partition_added', m.state, m.state, NULL,
            pg_catalog.jsonb_build_object('table', r.rel::text, 'command', p_command));
    END LOOP;
    -- a partition the command detached: its triggers go, unless it takes
    -- rows away from one table of the migration
    FOR r IN SELECT DISTINCT s.rel
               FROM pg_catalog.unnest(p_removed) a(relid),
                    LATERAL (SELECT a.relid UNION SELECT pt.relid FROM pg_catalog.pg_partition_tree(a.relid) pt) p,
                    @extschema@._softmig_triggers(p_id) s
              WHERE s.rel OPERATOR(pg_catalog.=) p.relid
                AND s.rel OPERATOR(pg_catalog.<>) ALL (ARRAY(SELECT @extschema@._tables(p_id)))
    LOOP
        IF m.state OPERATOR(@extschema@.<) 'cutover' AND @extschema@._has_rows(r.rel) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot detach table %s from migration "%s" in state %s: it holds rows',
                                            r.rel, m.name, m.state),
                DETAIL = 'Its rows would remain in the other table of the migration.',
                HINT = 'Delete its rows first (the deletes are mirrored), or roll the migration back to legacy.';
        END IF;
        v_prev := @extschema@._trigger_ddl(true);
        FOR t IN SELECT s.tgname FROM @extschema@._softmig_triggers(p_id) s
                  WHERE s.rel OPERATOR(pg_catalog.=) r.rel LOOP
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, r.rel);
        END LOOP;
        PERFORM @extschema@._trigger_ddl(v_prev);
        PERFORM @extschema@._history(p_id, 'partition_removed', m.state, m.state, NULL,
            pg_catalog.jsonb_build_object('table', r.rel::text, 'command', p_command));
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._reconcile_partitions(integer, text, oid[], oid[]) IS
    'internal: give partitions a DDL command added to a managed migration its triggers and take them off detached ones, refusing partitions that bring or take away rows';

CREATE FUNCTION @extschema@._refuse_untrusted(p_sqlstate text, p_error text, p_command text, p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- the trust rule's error (src/identity.c), raised again naming the DDL
    IF p_sqlstate OPERATOR(pg_catalog.=) '42501' AND p_error OPERATOR(pg_catalog.~~) 'softmig refuses to run %' THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('%s would make migration "%s" run code of another role', p_command, p_name),
            DETAIL = p_error,
            HINT = 'Code softmig runs as a table owner must be owned by that owner, a member of it, or a superuser (doc/security.md).';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._refuse_untrusted(text, text, text, text) IS
    'internal: if a re-validation failed by the trust rule, refuse the DDL that caused it (42501)';

CREATE OR REPLACE FUNCTION @extschema@._ddl_altered() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    r record;
    v_problem text;
    v_bad jsonb;
    v_added oid[];
    v_removed oid[];
BEGIN
    IF @extschema@._managing_triggers() THEN
        RETURN;     -- softmig's own trigger changes
    END IF;
    FOR c IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
        v_added := @extschema@._ddl_partitions(c.command, false);
        v_removed := @extschema@._ddl_partitions(c.command, true);
        -- the migrations whose tables (or partitions of them) the command touched
        FOR r IN SELECT DISTINCT m.id, m.name, m.state, m.legacy, m.target
                   FROM (SELECT c.objid AS relid
                          WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                         UNION
                         SELECT w.ev_class FROM pg_catalog.pg_rewrite w
                          WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                            AND w.oid OPERATOR(pg_catalog.=) c.objid
                         UNION
                         SELECT t.tgrelid FROM pg_catalog.pg_trigger t
                          WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass
                            AND t.oid OPERATOR(pg_catalog.=) c.objid) o
                   CROSS JOIN LATERAL (
                         SELECT o.relid AS rel
                         UNION
                         SELECT a.relid FROM pg_catalog.pg_partition_ancestors(o.relid) a) anc
                   JOIN @extschema@.migrations m
                     ON anc.rel OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
        LOOP
            -- partitions created, attached or detached by the command
            PERFORM @extschema@._reconcile_partitions(r.id, c.command_tag, v_added, v_removed);

            -- softmig's triggers must stay plainly enabled while it manages
            -- the migration, and no rule may rewrite writes to its tables.
            -- (A trigger that is missing altogether is only reported by
            -- status: pg_restore creates triggers after everything else.)
            SELECT pg_catalog.jsonb_agg(p) INTO v_bad
              FROM pg_catalog.jsonb_array_elements(@extschema@._trigger_health(r.id) OPERATOR(pg_catalog.->) 'problems') p
             WHERE p OPERATOR(pg_catalog.->>) 'problem' OPERATOR(pg_catalog.=) ANY
                       (ARRAY['disabled', 'replica only', 'always', 'altered', 'rule'])
                OR (p OPERATOR(pg_catalog.->>) 'problem' OPERATOR(pg_catalog.=) 'missing'
                    AND c.command_tag OPERATOR(pg_catalog.=) 'ALTER TRIGGER');
            IF v_bad IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                    MESSAGE = pg_catalog.format('%s on %s would stop migration "%s" (state %s) from carrying writes to the other table',
                                                c.command_tag, c.object_identity, r.name, r.state),
                    DETAIL = pg_catalog.format('Problems it would leave: %s.', v_bad),
                    HINT = CASE WHEN v_bad::text OPERATOR(pg_catalog.~) '"rule"'
                                THEN 'softmig carries each statement''s rows to the other table; a rule on a table of a migration would change what is written. Use a trigger instead.'
                                ELSE pg_catalog.format('Leave softmig''s triggers enabled (ENABLE TRIGGER, not REPLICA or ALWAYS); softmig.repair_triggers(%L) puts them back.', r.name) END;
            END IF;

            -- shape views read and write with their owner's rights: row level
            -- security enabled on a table now would be bypassed by every role
            -- with rights on a view (create_shape_views refuses such tables)
            IF EXISTS (SELECT 1 FROM @extschema@.shape_views sv
                        WHERE sv.migration_id OPERATOR(pg_catalog.=) r.id)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_class k
                            WHERE k.oid OPERATOR(pg_catalog.=) ANY (ARRAY[r.legacy, r.target]::pg_catalog.oid[])
                              AND k.relrowsecurity) THEN
                RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                    MESSAGE = pg_catalog.format('%s on %s would let the shape views of migration "%s" bypass row level security',
                                                c.command_tag, c.object_identity, r.name),
                    DETAIL = 'A shape view reads and writes with its owner''s rights, so a role with rights on the view would bypass the policies.',
                    HINT = pg_catalog.format('Drop the shape views first (softmig.drop_shape_views(%L)); roles subject to row level security use the tables.', r.name);
            END IF;

            -- every statement the triggers will run must still prepare: a
            -- mapped column renamed, dropped or retyped incompatibly aborts
            -- the DDL, and so does one that would make softmig run another
            -- role's code
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
                    PERFORM @extschema@._refuse_untrusted(SQLSTATE, SQLERRM,
                        pg_catalog.format('%s on %s', c.command_tag, c.object_identity), r.name);
                    RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                        MESSAGE = pg_catalog.format('%s on %s would break migration "%s"', c.command_tag, c.object_identity, r.name),
                        DETAIL = SQLERRM,
                        HINT = 'Change the mapping first (drop and re-create the migration in state legacy), or keep the column.';
            END;
            -- harmless DDL passes silently.  A missing key index is only
            -- warned about: pg_restore creates indexes after everything else
            -- (a history row per table would make every restore differ from
            -- its source), and without the index every mirrored write fails
            -- loudly (ON CONFLICT needs it), so nothing can go wrong silently.
            IF v_problem IS NOT NULL THEN
                RAISE WARNING USING MESSAGE = pg_catalog.format('migration "%s" cannot write its tables until this is fixed: %s', r.name, v_problem);
            END IF;
        END LOOP;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_altered() IS
    'internal: event trigger keeping a migration whole after DDL on its tables: triggers on new partitions, no switched-off triggers or rules, re-validated statements';

CREATE FUNCTION @extschema@._ddl_code() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    -- a new cast, an altered domain, type, function or operator may change
    -- what the migrations' statements run: prepare them all again (as the
    -- table owners), refusing the DDL if one would run another role's code
    FOR r IN SELECT DISTINCT m.id, m.name, m.legacy, m.target, c.command_tag, c.object_identity
               FROM @extschema@.migrations m, pg_catalog.pg_event_trigger_ddl_commands() c
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class l WHERE l.oid OPERATOR(pg_catalog.=) m.legacy)
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_class t WHERE t.oid OPERATOR(pg_catalog.=) m.target)
    LOOP
        BEGIN
            PERFORM @extschema@._invalidate(r.legacy, r.target);
            PERFORM @extschema@._validate(r.id);
        EXCEPTION
            WHEN OTHERS THEN
                PERFORM @extschema@._refuse_untrusted(SQLSTATE, SQLERRM,
                    pg_catalog.format('%s %s', r.command_tag, r.object_identity), r.name);
                -- anything else is not this command's doing; writes report it
        END;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_code() IS
    'internal: event trigger re-validating every migration after DDL that can change the code its statements run (casts, domains, types, functions, operators)';

CREATE EVENT TRIGGER softmig_ddl_start ON ddl_command_start
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION @extschema@._ddl_start();
CREATE EVENT TRIGGER softmig_ddl_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'DROP INDEX', 'ALTER INDEX', 'CREATE TRIGGER', 'CREATE TABLE',
                 'ALTER TRIGGER', 'CREATE RULE')
    EXECUTE FUNCTION @extschema@._ddl_altered();
CREATE EVENT TRIGGER softmig_ddl_code ON ddl_command_end
    WHEN TAG IN ('CREATE CAST', 'ALTER DOMAIN', 'ALTER TYPE', 'ALTER FUNCTION', 'ALTER AGGREGATE',
                 'ALTER OPERATOR', 'ALTER OPERATOR CLASS', 'ALTER OPERATOR FAMILY')
    EXECUTE FUNCTION @extschema@._ddl_code();


REVOKE ALL ON FUNCTION @extschema@._ddl_code(), @extschema@._ddl_start(), @extschema@._drop_approved(oid),
    @extschema@._reconcile_partitions(integer, text, oid[], oid[]), @extschema@._ddl_partitions(pg_ddl_command, boolean),
    @extschema@._install_triggers_on(integer, regclass), @extschema@._trigger_ddl(boolean),
    @extschema@._has_rows(regclass), @extschema@._managing_triggers(), @extschema@._refuse_rules(integer),
    @extschema@._refuse_untrusted(text, text, text, text) FROM PUBLIC;

-- create_read_view refuses softmig's own schema and the system schemas.
CREATE OR REPLACE FUNCTION @extschema@._create_read_view(name text, view_name text, shape @extschema@.side)
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
    -- softmig's own schema holds only the extension's objects (its functions
    -- run with it trusted), and the system schemas hold only the system's
    IF v_nsp OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
       OR v_schema OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog', 'information_schema', 'pg_toast']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_schema_name',
            MESSAGE = pg_catalog.format('a routed view cannot be created in schema %s', v_schema),
            DETAIL = 'That schema holds only the extension''s or the system''s own objects.',
            HINT = 'Create the view in an application schema.';
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

    -- the other table mapped into the shape, generated columns computed
    SELECT l.inner_list, l.outer_list INTO v_inner_list, v_outer_list
      FROM @extschema@._shape_lists(m.id, v_own, v_dir) l;

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

-- tap_ok puts pg_catalog before pgTAP's schema on its search_path.
-------------------------------------------------------------------------------
-- pgTAP helpers for users' own migration tests
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION @extschema@.tap_ok(ok boolean, description text, diagnostics text DEFAULT NULL) RETURNS text
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
    -- pgTAP keeps the test counter and plan; its functions expect their
    -- schema on the path, after pg_catalog so nothing there can shadow a
    -- built-in name pgTAP's code uses
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(v_nsp) OPERATOR(pg_catalog.||) ', pg_temp', true);
    EXECUTE pg_catalog.format('SELECT %I.ok($1, $2)', v_nsp) INTO v_out USING ok, description;
    IF NOT ok AND diagnostics IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT %I.diag($1)', v_nsp) INTO v_diag USING diagnostics;
        v_out := v_out OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) v_diag;
    END IF;
    RETURN v_out;
END $$;

-------------------------------------------------------------------------------
-- Monitoring views for Prometheus (src/install/77_monitoring.sql)
-------------------------------------------------------------------------------
-- Keys of the ledger without counting a big one: exact up to 100000 keys
-- in the whole ledger (an index-only scan of the migration's range),
-- above that the table's live row estimate times the migration's share in
-- the column statistics of softmig.operations.migration_id.
-------------------------------------------------------------------------------
-- Monitoring: views shaped for Prometheus (monitoring/postgres_exporter.yaml
-- maps each to one exporter query; guide in doc/monitoring.md).
--
-- Every column is a metric or a label: the exporter names a metric
-- <query>_<column>, so the column names below are the metric names without
-- their prefix.  Values are in base units (seconds since the epoch for
-- points in time, rows, counts); "_total" columns are counters.  Nothing here
-- runs a check, a parity comparison or a scan of a migrated table: the views
-- read softmig's catalog, the latest stored check run, reader discovery's
-- shared memory and table sizes, so a scrape costs milliseconds and is never
-- recorded as a reader of the migrated tables.  Like softmig.metrics they
-- are readable by every role (they show only what the catalog already shows).
-------------------------------------------------------------------------------

-- Keys of the ledger without counting a big one: exact up to 100000 keys
-- in the whole ledger (an index-only scan of the migration's range),
-- above that the table's live row estimate times the migration's share in
-- the column statistics of softmig.operations.migration_id.
CREATE FUNCTION @extschema@._ledger_keys(p_id integer) RETURNS double precision
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN t.total OPERATOR(pg_catalog.<=) 100000 THEN
            (SELECT pg_catalog.count(*) FROM @extschema@.operations o
              WHERE o.migration_id OPERATOR(pg_catalog.=) p_id)::double precision
        ELSE pg_catalog.round(t.total OPERATOR(pg_catalog.*) COALESCE(
            -- the migration is among the column's most common values
            (SELECT u.f FROM ROWS FROM (pg_catalog.unnest(s.vals), pg_catalog.unnest(s.freqs)) AS u(v, f)
              WHERE u.v OPERATOR(pg_catalog.=) p_id),
            -- it is not: an even share of what the common values leave
            (SELECT (1 OPERATOR(pg_catalog.-) COALESCE((SELECT pg_catalog.sum(f) FROM pg_catalog.unnest(s.freqs) AS f), 0))
                    OPERATOR(pg_catalog./) GREATEST(1, (CASE WHEN s.n_distinct OPERATOR(pg_catalog.>=) 0 THEN s.n_distinct
                                                             ELSE (OPERATOR(pg_catalog.-) s.n_distinct) OPERATOR(pg_catalog.*) t.total END)
                                                        OPERATOR(pg_catalog.-) COALESCE(pg_catalog.cardinality(s.vals), 0))
              WHERE s.n_distinct IS NOT NULL),
            -- no statistics yet: an even share among the migrations
            1.0 OPERATOR(pg_catalog./) GREATEST(1, (SELECT pg_catalog.count(*) FROM @extschema@.migrations))))
        END
      FROM (SELECT @extschema@._rows_estimate('@extschema@.operations'::pg_catalog.regclass) AS total) t
      LEFT JOIN (SELECT st.most_common_vals::text::integer[] AS vals, st.most_common_freqs::double precision[] AS freqs,
                        st.n_distinct::double precision AS n_distinct
                   FROM pg_catalog.pg_stats st
                  WHERE st.schemaname OPERATOR(pg_catalog.=) '@extschema@'
                    AND st.tablename OPERATOR(pg_catalog.=) 'operations'
                    AND st.attname OPERATOR(pg_catalog.=) 'migration_id'
                  LIMIT 1) s ON true
$$;
COMMENT ON FUNCTION @extschema@._ledger_keys(integer) IS
    'internal: operation keys a migration holds in the ledger, exact for a ledger of up to 100000 keys, estimated from statistics above';

-- a table's name for a label: schema-qualified whatever the search_path
CREATE FUNCTION @extschema@._qualified(rel regclass) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) rel
$$;
COMMENT ON FUNCTION @extschema@._qualified(regclass) IS
    'internal: schema-qualified name of a table, the same whatever the caller''s search_path';

-- one row per migration: the numbers (exporter query "softmig")
CREATE VIEW @extschema@.monitor AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       (pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover'],
                                  m.state::text) OPERATOR(pg_catalog.-) 1)::double precision AS migration_state,
       EXTRACT(epoch FROM m.state_changed_at)::double precision AS migration_state_changed_timestamp_seconds,
       CASE WHEN COALESCE(e.open, true) THEN 1 ELSE 0 END::double precision AS envelope_open,
       COALESCE(e.new_only_count, 0)::double precision AS envelope_new_only_rows,
       CASE WHEN tr.problems OPERATOR(pg_catalog.=) 0 THEN 1 ELSE 0 END::double precision AS triggers_healthy,
       tr.problems::double precision AS trigger_problems,
       (SELECT pg_catalog.count(*) FROM @extschema@.shadow s
         WHERE s.migration_id OPERATOR(pg_catalog.=) m.id)::double precision AS shadow_disabled,
       (SELECT pg_catalog.count(*) FROM @extschema@.quarantine q
         WHERE q.migration_id OPERATOR(pg_catalog.=) m.id)::double precision AS quarantined_entities,
       CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 1 ELSE 0 END::double precision AS backfill_done,
       COALESCE(bp.rows_backfilled, 0)::double precision AS backfill_rows_copied_total,
       COALESCE(bp.rows_removed, 0)::double precision AS backfill_rows_removed_total,
       COALESCE(bp.batches, 0)::double precision AS backfill_batches_total,
       CASE WHEN m.state OPERATOR(@extschema@.=) 'mirrored'
            THEN (@extschema@._backfill_status(m.id) OPERATOR(pg_catalog.->>) 'remaining_estimate')::double precision
            ELSE 0 END AS backfill_rows_remaining,
       -- throughput of a run that is going on (a batch ended within the last minute)
       CASE WHEN bp.batch_ended_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute')
                 AND bp.batch_ended_at OPERATOR(pg_catalog.>) bp.run_started_at
            THEN bp.run_rows OPERATOR(pg_catalog./)
                 EXTRACT(epoch FROM bp.batch_ended_at OPERATOR(pg_catalog.-) bp.run_started_at)::double precision
            ELSE 0 END AS backfill_rows_per_second,
       -- the last batch that moved the backfill on; before the first one, when mirroring began
       EXTRACT(epoch FROM COALESCE(bp.progressed_at,
                                   CASE WHEN bp.batch_ended_at IS NULL THEN bp.updated_at ELSE bp.started_at END,
                                   m.state_changed_at))::double precision
           AS backfill_last_progress_timestamp_seconds,
       COALESCE(EXTRACT(epoch FROM lc.at), 0)::double precision AS check_last_run_timestamp_seconds,
       COALESCE(lc.failing, 0)::double precision AS checks_failing,
       (SELECT pg_catalog.count(DISTINCT o.reader)
          FROM @extschema@.observed_readers(m.name) o
         WHERE o.side OPERATOR(pg_catalog.=) 'legacy'::@extschema@.side
           AND NOT EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                            WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
                              AND r.reader OPERATOR(pg_catalog.=) o.reader)
           AND o.last_seen OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) w.window_)
           AND w.window_ OPERATOR(pg_catalog.>) '0'::interval)::double precision AS unregistered_legacy_readers,
       @extschema@._ledger_keys(m.id) AS ledger_keys
  FROM @extschema@.migrations m
  LEFT JOIN @extschema@.envelope e ON e.migration_id OPERATOR(pg_catalog.=) m.id
  LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
 CROSS JOIN LATERAL (
    SELECT pg_catalog.jsonb_array_length(@extschema@._trigger_health(m.id) OPERATOR(pg_catalog.->) 'problems')
           OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*)
              FROM (SELECT DISTINCT r.tbl FROM @extschema@.transition_rules r
                     WHERE r.migration_id OPERATOR(pg_catalog.=) m.id) x
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid OPERATOR(pg_catalog.=) x.tbl
                                  AND t.tgname OPERATOR(pg_catalog.=) ('softmig_rule_' OPERATOR(pg_catalog.||) m.id::text)
                                  AND t.tgenabled OPERATOR(pg_catalog.<>) 'D')) AS problems) tr
 CROSS JOIN LATERAL (
    SELECT pg_catalog.max(c.at) AS at, pg_catalog.count(*) FILTER (WHERE NOT c.ok) AS failing
      FROM @extschema@.check_results c
     WHERE c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                            WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id)) lc
 CROSS JOIN LATERAL (
    SELECT COALESCE((m.options OPERATOR(pg_catalog.->>) 'unregistered_reader_window')::interval,
                    '15 minutes'::interval) AS window_) w;
COMMENT ON VIEW @extschema@.monitor IS
    'one row per migration: state number, envelope, trigger health, shadow, quarantine, backfill progress, latest check run, unregistered legacy readers, ledger keys (exporter query "softmig")';

-- one row per migration: the words (exporter query "softmig_migration")
CREATE VIEW @extschema@.monitor_info AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       m.state::text AS state,
       CASE WHEN m.state OPERATOR(@extschema@.<=) 'mirrored' THEN 'legacy' ELSE 'target' END AS write_authority,
       @extschema@.group_source(m.name, 'default')::text AS read_default,
       @extschema@._qualified(m.legacy) AS legacy_table,
       @extschema@._qualified(m.target) AS target_table,
       1::double precision AS info
  FROM @extschema@.migrations m;
COMMENT ON VIEW @extschema@.monitor_info IS
    'one row per migration with value 1: state, write authority, default read source and tables as labels (exporter query "softmig_migration")';

-- the latest stored check run, one row per check (exporter query "softmig_check")
CREATE VIEW @extschema@.monitor_checks AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       c.layer,
       c.check_name,
       CASE WHEN c.ok THEN 1 ELSE 0 END::double precision AS ok,
       c.violations::double precision AS violations
  FROM @extschema@.migrations m
  JOIN @extschema@.check_results c
    ON c.migration_id OPERATOR(pg_catalog.=) m.id
   AND c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                        WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id);
COMMENT ON VIEW @extschema@.monitor_checks IS
    'the latest stored check run of each migration, one row per check: ok (1/0) and violations (exporter query "softmig_check")';

-- parity differences by kind, as the latest check counted them
CREATE VIEW @extschema@.monitor_parity AS
SELECT c.datname, c.migration,
       CASE WHEN c.check_name OPERATOR(pg_catalog.=) 'parity' THEN 'error'   -- parity itself failed
            ELSE pg_catalog.substr(c.check_name, 8) END AS kind,
       c.violations AS differences
  FROM @extschema@.monitor_checks c
 WHERE c.layer OPERATOR(pg_catalog.=) 'structural';
COMMENT ON VIEW @extschema@.monitor_parity IS
    'parity differences of the latest check run by kind: missing_in_target, missing_in_legacy, mismatch (error: parity failed to run) (exporter query "softmig_parity")';

-- invariants of the latest check run
CREATE VIEW @extschema@.monitor_invariants AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       pg_catalog.substr(c.check_name, 11) AS invariant,
       COALESCE(c.detail OPERATOR(pg_catalog.->>) 'severity', 'error') AS severity,
       c.violations::double precision AS violations
  FROM @extschema@.migrations m
  JOIN @extschema@.check_results c
    ON c.migration_id OPERATOR(pg_catalog.=) m.id
   AND c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                        WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id)
 WHERE c.layer OPERATOR(pg_catalog.=) 'behavioral' AND c.check_name OPERATOR(pg_catalog.^@) 'invariant:';
COMMENT ON VIEW @extschema@.monitor_invariants IS
    'violating rows per invariant and severity in the latest check run (an invariant whose query failed counts 1) (exporter query "softmig_invariant")';

-- transition-rule violations of the latest check run
CREATE VIEW @extschema@.monitor_rules AS
SELECT c.datname, c.migration, c.check_name, c.violations
  FROM @extschema@.monitor_checks c
 WHERE c.layer OPERATOR(pg_catalog.=) 'behavioral' AND NOT c.check_name OPERATOR(pg_catalog.^@) 'invariant:';
COMMENT ON VIEW @extschema@.monitor_rules IS
    'recorded transition-rule violations per rule (and per ruled column for edges no rule allows) in the latest check run (exporter query "softmig_rule")';

-- every reader readers() lists, with value 1 (exporter query "softmig_reader")
CREATE VIEW @extschema@.monitor_readers AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       x.reader,
       COALESCE(reg.class, '') AS class,
       COALESCE(reg.switch_group, 'default') AS switch_group,
       @extschema@.group_source(m.name, COALESCE(reg.switch_group, 'default'))::text AS source,
       (reg.reader IS NOT NULL)::text AS registered,
       1::double precision AS info
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (
    SELECT r.reader FROM @extschema@.reader_registry r WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
    UNION
    SELECT CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(none)' ELSE o.reader END
      FROM @extschema@.observed_readers(m.name) o) x
  LEFT JOIN @extschema@.reader_registry reg
    ON reg.migration_id OPERATOR(pg_catalog.=) m.id AND reg.reader OPERATOR(pg_catalog.=) x.reader;
COMMENT ON VIEW @extschema@.monitor_readers IS
    'every registered or discovered reader of each migration with value 1: class, switch group, read source, registered (exporter query "softmig_reader")';

-- reader discovery's observations (exporter query "softmig_discovery")
CREATE VIEW @extschema@.monitor_discovery AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(none)' ELSE o.reader END AS reader,
       o.role::text AS role,
       o.side::text AS side,
       (EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                 WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
                   AND r.reader OPERATOR(pg_catalog.=) o.reader))::text AS registered,
       o.reads::double precision AS reads_total,
       o.writes::double precision AS writes_total,
       EXTRACT(epoch FROM o.last_seen)::double precision AS last_seen_timestamp_seconds
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL @extschema@.observed_readers(m.name) o;
COMMENT ON VIEW @extschema@.monitor_discovery IS
    'statements per reader (application_name), role and table side seen by reader discovery since it started, and when last (exporter query "softmig_discovery"; empty without shared_preload_libraries)';

-- live row estimates of both tables (exporter query "softmig_table")
CREATE VIEW @extschema@.monitor_tables AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       s.side,
       @extschema@._qualified(s.rel) AS "table",
       @extschema@._rows_estimate(s.rel) AS rows
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (VALUES ('legacy', m.legacy), ('new', m.target)) s(side, rel);
COMMENT ON VIEW @extschema@.monitor_tables IS
    'estimated rows of each migration''s legacy and target table now, from their size and statistics, without reading them (exporter query "softmig_table")';

GRANT SELECT ON @extschema@.monitor, @extschema@.monitor_info, @extschema@.monitor_checks,
                @extschema@.monitor_parity, @extschema@.monitor_invariants, @extschema@.monitor_rules,
                @extschema@.monitor_readers, @extschema@.monitor_discovery, @extschema@.monitor_tables
   TO PUBLIC;

-- functions that know migrations across databases
CREATE OR REPLACE FUNCTION @extschema@._migration(p_name text) RETURNS @extschema@.migrations
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
BEGIN
    SELECT * INTO m FROM @extschema@.migrations WHERE name OPERATOR(pg_catalog.=) p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" does not exist', p_name),
            HINT = CASE WHEN EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.name OPERATOR(pg_catalog.=) p_name)
                        THEN pg_catalog.format('This database holds the legacy side of cross-database migration "%s": softmig.remote_status(%L) shows it; it is managed from its target database.', p_name, p_name)
                        ELSE 'softmig.migrations lists the migrations of this database.' END;
    END IF;
    RETURN m;
END $$;

CREATE OR REPLACE FUNCTION @extschema@._drop_migration(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) m.id FOR NO KEY UPDATE;
    IF NOT @extschema@._remote_stepping()
       AND EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" spans two databases', m.name),
            HINT = 'Drop it with softmig.drop_remote_migration, which drops both sides.';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.group_members gm WHERE gm.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is a member of group "%s"', m.name,
                                        (SELECT g.name FROM @extschema@.group_members gm JOIN @extschema@.groups g ON g.id OPERATOR(pg_catalog.=) gm.group_id
                                          WHERE gm.migration_id OPERATOR(pg_catalog.=) m.id)),
            HINT = 'Drop the group first (softmig.drop_group).';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.migrations x
                WHERE x.options OPERATOR(pg_catalog.->>) 'attribute_of' OPERATOR(pg_catalog.=) m.name) THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = pg_catalog.format('migration "%s" owns the entity of a split', m.name),
            DETAIL = pg_catalog.format('Its attribute members: %s.',
                                       (SELECT pg_catalog.string_agg(x.name, ', ' ORDER BY x.name) FROM @extschema@.migrations x
                                         WHERE x.options OPERATOR(pg_catalog.->>) 'attribute_of' OPERATOR(pg_catalog.=) m.name)),
            HINT = 'Drop the attribute members first.';
    END IF;
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

CREATE OR REPLACE FUNCTION @extschema@.status(name text) RETURNS jsonb
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
        -- a migration across databases: this side, its replication, the switch in progress
        OPERATOR(pg_catalog.||) CASE WHEN rs.x IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('remote', rs.x) END
      FROM @extschema@._migration(name) m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
     CROSS JOIN LATERAL (SELECT @extschema@._remote_status_local(m.id) AS x) rs
$$;

CREATE OR REPLACE FUNCTION @extschema@.operation_applied(name text, key text) RETURNS boolean
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
BEGIN
    -- a migration across databases: keys applied in either database travel
    -- with the data (softmig.remote_operations), also to its legacy side
    IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.name OPERATOR(pg_catalog.=) operation_applied.name)
       AND EXISTS (SELECT 1 FROM @extschema@.remote_operations o
                    WHERE o.migration OPERATOR(pg_catalog.=) operation_applied.name
                      AND o.key OPERATOR(pg_catalog.=) (operation_applied.key COLLATE pg_catalog."C")) THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.migrations x WHERE x.name OPERATOR(pg_catalog.=) operation_applied.name)
       AND EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.name OPERATOR(pg_catalog.=) operation_applied.name) THEN
        RETURN EXISTS (SELECT 1 FROM @extschema@.operations o, @extschema@.remote_migrations xr
                        WHERE xr.name OPERATOR(pg_catalog.=) operation_applied.name
                          AND o.migration_id OPERATOR(pg_catalog.=) xr.migration_id
                          AND o.key OPERATOR(pg_catalog.=) (operation_applied.key COLLATE pg_catalog."C"));
    END IF;
    m := @extschema@._migration(name);
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

CREATE OR REPLACE FUNCTION @extschema@._forget_operations(name text, older_than interval) RETURNS bigint
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
    -- and from the ledger a migration across databases replicates
    DELETE FROM @extschema@.remote_operations o
     WHERE o.migration OPERATOR(pg_catalog.=) m.name
       AND EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) m.id)
       AND o.claimed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) older_than);
    PERFORM @extschema@._history(m.id, 'forget_operations', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('older_than', older_than::text, 'forgotten', n));
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION @extschema@._set_field_authority(p_name text, p_field name, p_side @extschema@.side)
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
    PERFORM @extschema@._refuse_one_to_many(m.id, 'per-field authorities');
    PERFORM @extschema@._refuse_split_member(m.id, 'per-field authorities');
    IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migration "%s" spans two databases: its fields cannot change authority one by one', m.name),
            DETAIL = 'A field owned by the target while legacy owns the rest needs replication in both directions at once, which PostgreSQL 15 cannot run without echoing changes back.';
    END IF;
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

-- metrics: also the rows of migrations across databases
CREATE OR REPLACE VIEW @extschema@.metrics AS
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
 ) x(metric, value)
UNION ALL
-- migrations across databases: this side's fence, switch and replication (27_remote_catalog.sql)
SELECT r.migration, r.metric, r.value FROM @extschema@._remote_metrics() r;
COMMENT ON VIEW @extschema@.metrics IS
    'one row per (migration, metric): live state, backfill, envelope, triggers, the latest check run (check_violations:<check>, check_ok:<check>), and for migrations across databases their fence, switch and replication (remote_*); cheap enough to scrape';

-------------------------------------------------------------------------------
-- Cross-database migrations (doc/cross-database.md)
-------------------------------------------------------------------------------
-- The legacy database holds the legacy table and publishes it (with this
-- migration's rows of softmig.remote_operations and softmig.remote_markers);
-- the target database holds a landing copy of it under the same name, the
-- target, and an ordinary migration landing copy -> target, and subscribes.
-- From new_write on the direction is reversed: the target database
-- publishes the landing copy (which the migration's projection keeps) and
-- the legacy database subscribes.  PostgreSQL 15 cannot filter changes by
-- origin, so only one direction runs at a time and a switch moves from one
-- to the other at a fence: the side giving up the write authority stops
-- its writers and writes a fence marker; the other side waits until it has
-- applied that marker, stops applying, and only then takes the authority,
-- with a fresh replication slot for the other direction.  Every step is
-- recorded (remote_migrations.switch) and can be resumed or aborted.
--
-- The target database coordinates: the DBA runs everything there, and it
-- calls softmig._remote_peer in the legacy database for that side's part.

-- C functions (src/remote.c, src/remote_trigger.c, src/remote_parity.c)
CREATE FUNCTION @extschema@._remote_call(name text, op text, arg jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_remote_call' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._remote_call(text, text, jsonb) IS
    'internal: run softmig._remote_peer(name, op, arg) in the other database of a cross-database migration and return its result';

CREATE FUNCTION @extschema@._remote_step_mark(on_ boolean) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_remote_step_mark' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._remote_step_mark(boolean) IS
    'internal: mark (or unmark) that the cross-database coordinator changes the local migration; returns the previous mark';

CREATE FUNCTION @extschema@._remote_stepping() RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_remote_stepping' LANGUAGE C STABLE;
COMMENT ON FUNCTION @extschema@._remote_stepping() IS
    'internal: is the cross-database coordinator changing a local migration right now';

CREATE FUNCTION @extschema@._remote_stop_after(step text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_remote_stop_after' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._remote_stop_after(text) IS
    'internal: is the test hook softmig.remote_stop_after set to this step';

CREATE FUNCTION @extschema@._remote_legacy_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_legacy_guard' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_legacy_guard() IS
    'internal: BEFORE statement trigger on the legacy table of a cross-database migration: writes only while it is the write authority, operation keys, no TRUNCATE';

CREATE FUNCTION @extschema@._remote_copy_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_copy_guard' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_copy_guard() IS
    'internal: BEFORE statement trigger on the landing copy: only replicated changes and softmig''s projection write it';

CREATE FUNCTION @extschema@._remote_target_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_target_guard' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_target_guard() IS
    'internal: BEFORE statement trigger on the target of a cross-database migration: no writes while a switch fences it';

CREATE FUNCTION @extschema@._remote_apply() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_apply' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_apply() IS
    'internal: AFTER ROW trigger (ENABLE REPLICA) on the landing copy: mirrors each replicated row into the target in the apply transaction';

CREATE FUNCTION @extschema@._remote_marker() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_marker' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_marker() IS
    'internal: AFTER INSERT trigger (ENABLE ALWAYS) on softmig.remote_markers: the apply of a parity marker waits for the parity session''s snapshot';

CREATE FUNCTION @extschema@._remote_ledger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_ledger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_ledger() IS
    'internal: AFTER INSERT trigger on softmig.operations: a claim of a cross-database migration goes into the replicated ledger, 23505 if the other database applied the key';

CREATE FUNCTION @extschema@._remote_replicated_once() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_remote_replicated_once' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._remote_replicated_once() IS
    'internal: BEFORE INSERT trigger (ENABLE REPLICA) on softmig.remote_operations and softmig.remote_markers: a replicated row already present is skipped';

CREATE TRIGGER remote_ledger AFTER INSERT ON @extschema@.operations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._remote_ledger();
CREATE TRIGGER remote_replicated_once BEFORE INSERT ON @extschema@.remote_operations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._remote_replicated_once('migration', 'key');
ALTER TABLE @extschema@.remote_operations ENABLE REPLICA TRIGGER remote_replicated_once;
CREATE TRIGGER remote_replicated_once BEFORE INSERT ON @extschema@.remote_markers
    FOR EACH ROW EXECUTE FUNCTION @extschema@._remote_replicated_once('migration', 'id');
ALTER TABLE @extschema@.remote_markers ENABLE REPLICA TRIGGER remote_replicated_once;
CREATE TRIGGER remote_marker AFTER INSERT ON @extschema@.remote_markers
    FOR EACH ROW EXECUTE FUNCTION @extschema@._remote_marker();
ALTER TABLE @extschema@.remote_markers ENABLE ALWAYS TRIGGER remote_marker;

-------------------------------------------------------------------------------
-- Helpers
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._remote_tag(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'softmig_'
        OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.regexp_replace(pg_catalog.lower(name), '[^a-z0-9_]', '_', 'g'), 24)
        OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(name), 8)
$$;
COMMENT ON FUNCTION @extschema@._remote_tag(text) IS
    'internal: the base of the names of a cross-database migration''s publications, subscriptions and slots (<tag>_fwd: legacy -> target, <tag>_rev: target -> legacy)';

CREATE FUNCTION @extschema@._remote_endpoint(p_name text) RETURNS @extschema@.remote_migrations
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r @extschema@.remote_migrations;
BEGIN
    SELECT * INTO r FROM @extschema@.remote_migrations WHERE name OPERATOR(pg_catalog.=) p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('cross-database migration "%s" does not exist in this database', p_name),
            HINT = 'softmig.remote_migrations lists the cross-database migrations of this database.';
    END IF;
    RETURN r;
END $$;
COMMENT ON FUNCTION @extschema@._remote_endpoint(text) IS
    'internal: this database''s side of a cross-database migration by name, 42704 if unknown';

CREATE FUNCTION @extschema@._remote_require_superuser(what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                      WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER), false) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('permission denied to %s', what),
            DETAIL = 'Cross-database migrations create subscriptions and replication slots and store connection strings, which PostgreSQL 15 reserves to superusers.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._remote_require_superuser(text) IS
    'internal: raise 42501 unless the current user is a superuser';

CREATE FUNCTION @extschema@._remote_timeout() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- shown with its unit ("1min", "500ms"), or as set before the library
    -- was loaded (a bare number means milliseconds)
    SELECT CASE WHEN v OPERATOR(pg_catalog.~) '^[0-9]+$'
                THEN (v OPERATOR(pg_catalog.||) ' ms')::pg_catalog.interval
                ELSE v::pg_catalog.interval END
      FROM pg_catalog.current_setting('softmig.remote_timeout') AS v
$$;
COMMENT ON FUNCTION @extschema@._remote_timeout() IS
    'internal: how long a step of a cross-database switch waits for the other database (softmig.remote_timeout)';

-- Wait until a condition holds (a query returning one boolean), polling;
-- 55000 after softmig.remote_timeout.  Each poll sees what committed since.
CREATE FUNCTION @extschema@._remote_wait(p_name text, p_what text, p_cond text, p_args jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_deadline timestamptz := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) @extschema@._remote_timeout();
    v_ok boolean;
BEGIN
    LOOP
        EXECUTE p_cond INTO v_ok USING p_args;
        EXIT WHEN v_ok;
        IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>) v_deadline THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cross-database migration "%s": timed out waiting for %s', p_name, p_what),
                DETAIL = pg_catalog.format('Waited %s (softmig.remote_timeout).', @extschema@._remote_timeout()),
                HINT = pg_catalog.format('softmig.status(%L) shows the replication and the switch in progress; CALL softmig.remote_resume(%L) waits again, CALL softmig.remote_abort(%L) gives the switch up while it can.',
                                         p_name, p_name, p_name);
        END IF;
        PERFORM pg_catalog.pg_sleep(0.02);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._remote_wait(text, text, text, jsonb) IS
    'internal: poll a condition until it holds, 55000 after softmig.remote_timeout';

CREATE FUNCTION @extschema@._remote_marker_applied(p_name text, p_marker bigint) RETURNS void
LANGUAGE sql STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (@extschema@._remote_endpoint(p_name)).name;    -- 42704 rather than a wait for nothing
    SELECT @extschema@._remote_wait(p_name, pg_catalog.format('marker %s to be replicated to this database', p_marker),
        'SELECT EXISTS (SELECT 1 FROM softmig.remote_markers m WHERE m.migration OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) ''name'') '
        'AND m.id OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) ''marker'')::pg_catalog.int8)',
        pg_catalog.jsonb_build_object('name', p_name, 'marker', p_marker))
$$;
COMMENT ON FUNCTION @extschema@._remote_marker_applied(text, bigint) IS
    'internal: wait until a marker written in the other database has been applied in this one';

CREATE FUNCTION @extschema@._remote_worker_gone(p_name text, p_sub text) RETURNS void
LANGUAGE sql STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (@extschema@._remote_endpoint(p_name)).name;
    SELECT @extschema@._remote_wait(p_name, pg_catalog.format('the workers of subscription %s to stop', p_sub),
        'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_subscription s '
        'WHERE s.subname OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) ''sub'') AND s.pid IS NOT NULL)',
        pg_catalog.jsonb_build_object('sub', p_sub))
$$;
COMMENT ON FUNCTION @extschema@._remote_worker_gone(text, text) IS
    'internal: wait until a disabled subscription has no worker left';

CREATE FUNCTION @extschema@._remote_create_slot(p_slot text) RETURNS pg_lsn
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_lsn pg_lsn;
BEGIN
    SELECT s.confirmed_flush_lsn INTO v_lsn FROM pg_catalog.pg_replication_slots s
     WHERE s.slot_name OPERATOR(pg_catalog.=) p_slot;
    IF FOUND THEN
        RETURN v_lsn;       -- made by an earlier attempt of the same step
    END IF;
    -- PostgreSQL refuses this too, but 19 does so only after making the slot,
    -- which then stays held by this session until the transaction ends
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'active_sql_transaction',
            MESSAGE = pg_catalog.format('cannot create replication slot %s in a transaction that has written', p_slot),
            HINT = 'softmig creates its slots at the start of a step, before any write of the transaction.';
    END IF;
    SELECT s.lsn INTO v_lsn FROM pg_catalog.pg_create_logical_replication_slot(p_slot, 'pgoutput') s;
    RETURN v_lsn;
END $$;
COMMENT ON FUNCTION @extschema@._remote_create_slot(text) IS
    'internal: create a logical replication slot (pgoutput) unless it exists; its changes start now. Must come before any write of the transaction';

CREATE FUNCTION @extschema@._remote_drop_slot(p_name text, p_slot text) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) p_slot) THEN
        RETURN;
    END IF;
    -- the walsender of a subscription that was just disabled or dropped
    -- lets the slot go when it notices
    PERFORM @extschema@._remote_wait(p_name, pg_catalog.format('replication slot %s to be released', p_slot),
        'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s '
        'WHERE s.slot_name OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) ''slot'') AND s.active)',
        pg_catalog.jsonb_build_object('slot', p_slot));
    PERFORM pg_catalog.pg_drop_replication_slot(p_slot);
END $$;
COMMENT ON FUNCTION @extschema@._remote_drop_slot(text, text) IS
    'internal: drop a replication slot once nothing uses it (waits for a departing walsender)';

CREATE FUNCTION @extschema@._remote_drop_subscription(p_sub text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s
                    WHERE s.subname OPERATOR(pg_catalog.=) p_sub
                      AND s.subdbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                                            WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())) THEN
        RETURN;
    END IF;
    -- detached from its slot first, so DROP may run in a transaction and
    -- does not reach out to the other database (the slot is dropped there)
    EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', p_sub);
    EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', p_sub);
    EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', p_sub);
END $$;
COMMENT ON FUNCTION @extschema@._remote_drop_subscription(text) IS
    'internal: drop a subscription (if it exists) without touching its slot';

CREATE FUNCTION @extschema@._remote_check_wal_level() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('wal_level') OPERATOR(pg_catalog.<>) 'logical' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('database "%s" cannot take part in a cross-database migration: wal_level is %s',
                                        pg_catalog.current_database(), pg_catalog.current_setting('wal_level')),
            HINT = 'Set wal_level = logical (and enough max_replication_slots and max_wal_senders) and restart the server.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._remote_check_wal_level() IS
    'internal: raise 55000 unless wal_level is logical';

CREATE FUNCTION @extschema@._remote_history(p_name text, p_action text, p_from @extschema@.state,
                                            p_to @extschema@.state, p_reason text, p_detail jsonb)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._history(r.migration_id, p_action, p_from, p_to, p_reason, p_detail)
      FROM @extschema@.remote_migrations r WHERE r.name OPERATOR(pg_catalog.=) p_name
$$;
COMMENT ON FUNCTION @extschema@._remote_history(text, text, @extschema@.state, @extschema@.state, text, jsonb) IS
    'internal: append one audit row for this database''s side of a cross-database migration (the legacy side under its negative endpoint id)';

-- The description of a table the landing copy must reproduce.
CREATE FUNCTION @extschema@._remote_table_shape(p_rel regclass) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'columns', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'name', a.attname,
                        'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                        'collation', CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) t.typcollation
                                          THEN (SELECT pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'
                                                       OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.collname)
                                                  FROM pg_catalog.pg_collation c
                                                  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.collnamespace
                                                 WHERE c.oid OPERATOR(pg_catalog.=) a.attcollation) END,
                        'not_null', a.attnotnull,
                        'generated', a.attgenerated OPERATOR(pg_catalog.<>) '')
                        ORDER BY a.attnum)
                      FROM pg_catalog.pg_attribute a
                      JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
                     WHERE a.attrelid OPERATOR(pg_catalog.=) p_rel AND a.attnum OPERATOR(pg_catalog.>) 0
                       AND NOT a.attisdropped), '[]'),
        'key', (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.i)
                  FROM pg_catalog.pg_index x
                 CROSS JOIN LATERAL pg_catalog.unnest(x.indkey) WITH ORDINALITY k(attnum, i)
                  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) x.indrelid
                                                AND a.attnum OPERATOR(pg_catalog.=) k.attnum
                 WHERE x.indrelid OPERATOR(pg_catalog.=) p_rel AND x.indisprimary),
        'relkind', (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) p_rel),
        'persistence', (SELECT c.relpersistence FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) p_rel))
$$;
COMMENT ON FUNCTION @extschema@._remote_table_shape(regclass) IS
    'internal: columns (name, type, collation, not null, generated), primary key, kind and persistence of a table';

-------------------------------------------------------------------------------
-- Triggers of each side
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._remote_install_triggers(p_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r @extschema@.remote_migrations := @extschema@._remote_endpoint(p_name);
    m @extschema@.migrations;
    v_prev boolean := @extschema@._trigger_ddl(true);
    p text;
BEGIN
    IF r.side OPERATOR(pg_catalog.=) 'legacy' THEN
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER softmig_x_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._remote_legacy_guard(%L)', r.local_table, r.name);
    ELSE
        SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) r.migration_id;
        p := 'softmig_' OPERATOR(pg_catalog.||) m.id::text;
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._remote_copy_guard(%L, %L)',
            p OPERATOR(pg_catalog.||) '_copy', m.legacy, m.id, r.name);
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION @extschema@._remote_apply(%L)',
            p OPERATOR(pg_catalog.||) '_apply', m.legacy, m.id);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', m.legacy, p OPERATOR(pg_catalog.||) '_apply');
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._remote_target_guard(%L)',
            p OPERATOR(pg_catalog.||) '_fence', m.target, r.name);
    END IF;
    PERFORM @extschema@._trigger_ddl(v_prev);
END $$;
COMMENT ON FUNCTION @extschema@._remote_install_triggers(text) IS
    'internal: create the triggers of this database''s side of a cross-database migration (legacy: the guard; target: copy guard and apply trigger on the landing copy, fence guard on the target)';

CREATE FUNCTION @extschema@._remote_remove_triggers(p_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r @extschema@.remote_migrations := @extschema@._remote_endpoint(p_name);
    v_prev boolean := @extschema@._trigger_ddl(true);
    t record;
BEGIN
    FOR t IN SELECT g.tgname, g.tgrelid::pg_catalog.regclass AS rel FROM pg_catalog.pg_trigger g
              WHERE (r.side OPERATOR(pg_catalog.=) 'legacy' AND g.tgrelid OPERATOR(pg_catalog.=) r.local_table
                     AND g.tgname OPERATOR(pg_catalog.=) 'softmig_x_guard')
                 OR (r.side OPERATOR(pg_catalog.=) 'target'
                     AND g.tgname OPERATOR(pg_catalog.~) ('^softmig_' OPERATOR(pg_catalog.||) r.migration_id::text OPERATOR(pg_catalog.||) '_(copy|apply|fence)$'))
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    END LOOP;
    PERFORM @extschema@._trigger_ddl(v_prev);
END $$;
COMMENT ON FUNCTION @extschema@._remote_remove_triggers(text) IS
    'internal: drop the triggers of this database''s side of a cross-database migration';

-------------------------------------------------------------------------------
-- The other database's half: softmig._remote_peer, called over libpq
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._remote_peer(name text, op text, arg jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := name;
    r @extschema@.remote_migrations;
    v_rel regclass;
    v_shape jsonb;
    v_lsn pg_lsn;
    v_sub text;
    v_slot text;
    v_tag text;
    v_timeout text;
    v_keys jsonb;
BEGIN
    PERFORM @extschema@._remote_require_superuser('run a step of a cross-database migration');
    IF op OPERATOR(pg_catalog.=) 'describe' THEN
        -- (before the migration exists here) the legacy table, as the landing copy must be
        PERFORM @extschema@._remote_check_wal_level();
        v_rel := pg_catalog.to_regclass(arg OPERATOR(pg_catalog.->>) 'legacy');
        IF v_rel IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_table',
                MESSAGE = pg_catalog.format('table %s does not exist in the legacy database', arg OPERATOR(pg_catalog.->>) 'legacy');
        END IF;
        RETURN @extschema@._remote_table_shape(v_rel)
            OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
                'table', @extschema@._qualified(v_rel),
                'server_version_num', pg_catalog.current_setting('server_version_num')::integer,
                'database', pg_catalog.current_database(),
                'in_migration', EXISTS (SELECT 1 FROM @extschema@.migrations m
                                         WHERE v_rel OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target])),
                'endpoint', (SELECT pg_catalog.to_jsonb(x) FROM @extschema@.remote_migrations x
                              WHERE x.name OPERATOR(pg_catalog.=) v_name));
    END IF;

    IF op OPERATOR(pg_catalog.=) 'define' THEN
        PERFORM @extschema@._remote_check_wal_level();
        v_rel := (arg OPERATOR(pg_catalog.->>) 'legacy')::pg_catalog.regclass;
        SELECT * INTO r FROM @extschema@.remote_migrations x WHERE x.name OPERATOR(pg_catalog.=) v_name;
        IF FOUND THEN
            IF r.side OPERATOR(pg_catalog.=) 'legacy' AND r.local_table OPERATOR(pg_catalog.=) v_rel
               AND r.tag OPERATOR(pg_catalog.=) (arg OPERATOR(pg_catalog.->>) 'tag') THEN
                UPDATE @extschema@.remote_conninfo SET peer = arg OPERATOR(pg_catalog.->>) 'peer'
                 WHERE migration OPERATOR(pg_catalog.=) v_name;
                RETURN pg_catalog.jsonb_build_object('defined', false);   -- a retry of the same definition
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
                MESSAGE = pg_catalog.format('the legacy database already has a cross-database migration "%s"', v_name);
        END IF;
        IF EXISTS (SELECT 1 FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name
                       OR v_rel OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]))
           OR EXISTS (SELECT 1 FROM @extschema@.remote_migrations x WHERE x.local_table OPERATOR(pg_catalog.=) v_rel) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('table %s already takes part in a migration of the legacy database', v_rel);
        END IF;
        INSERT INTO @extschema@.remote_migrations (name, side, migration_id, local_table, remote_table, key, tag,
                                                   options, created_by)
        VALUES (v_name, 'legacy', pg_catalog.nextval('@extschema@.remote_endpoint_seq'::pg_catalog.regclass), v_rel,
                arg OPERATOR(pg_catalog.->>) 'remote_table',
                ARRAY(SELECT pg_catalog.jsonb_array_elements_text(arg OPERATOR(pg_catalog.->) 'key')),
                arg OPERATOR(pg_catalog.->>) 'tag',
                COALESCE(arg OPERATOR(pg_catalog.->) 'options', '{}'), @extschema@._actor());
        INSERT INTO @extschema@.remote_conninfo (migration, peer) VALUES (v_name, arg OPERATOR(pg_catalog.->>) 'peer');
        EXECUTE pg_catalog.format(
            'CREATE PUBLICATION %I FOR TABLE %s, @extschema@.remote_operations WHERE (migration OPERATOR(pg_catalog.=) %L), '
            '@extschema@.remote_markers WHERE (migration OPERATOR(pg_catalog.=) %L) WITH (publish = ''insert, update, delete'')',
            (arg OPERATOR(pg_catalog.->>) 'tag') OPERATOR(pg_catalog.||) '_fwd', v_rel, v_name, v_name);
        PERFORM @extschema@._remote_history(v_name, 'remote_define', NULL, 'legacy', NULL, arg OPERATOR(pg_catalog.-) 'peer');
        RETURN pg_catalog.jsonb_build_object('defined', true);
    END IF;

    IF op OPERATOR(pg_catalog.=) 'drop' AND NOT EXISTS (SELECT 1 FROM @extschema@.remote_migrations x
                                                         WHERE x.name OPERATOR(pg_catalog.=) v_name) THEN
        RETURN '{}';    -- a retry: dropped here already
    END IF;
    r := @extschema@._remote_endpoint(v_name);
    IF r.side OPERATOR(pg_catalog.<>) 'legacy' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('database "%s" holds the target side of migration "%s"', pg_catalog.current_database(), v_name),
            HINT = 'A connection string of the migration points back to its own target database.';
    END IF;
    -- options the legacy side uses (lock_timeout, require_operation_key) follow the migration's
    IF op OPERATOR(pg_catalog.<>) ALL (ARRAY['mirror', 'forward_slot'])    -- (these create a slot first)
       AND arg OPERATOR(pg_catalog.?) 'options' AND r.options OPERATOR(pg_catalog.<>) (arg OPERATOR(pg_catalog.->) 'options') THEN
        UPDATE @extschema@.remote_migrations SET options = arg OPERATOR(pg_catalog.->) 'options'
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
        r.options := arg OPERATOR(pg_catalog.->) 'options';
    END IF;
    v_timeout := COALESCE(r.options OPERATOR(pg_catalog.->>) 'lock_timeout', '5s');

    CASE op
    WHEN 'status' THEN
        RETURN @extschema@._remote_describe(v_name);

    WHEN 'mirror' THEN
        -- legacy -> mirrored: the slot first (before any write of this transaction)
        v_lsn := @extschema@._remote_create_slot(r.tag OPERATOR(pg_catalog.||) '_fwd');
        IF r.state OPERATOR(@extschema@.=) 'legacy' THEN
            PERFORM @extschema@._remote_install_triggers(v_name);
            UPDATE @extschema@.remote_migrations SET state = 'mirrored', fenced = false, state_changed_at = pg_catalog.now(),
                   options = COALESCE(arg OPERATOR(pg_catalog.->) 'options', options)
             WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
            PERFORM @extschema@._invalidate(r.local_table, r.local_table);
            PERFORM @extschema@._remote_history(v_name, 'remote_advance', 'legacy', 'mirrored', arg OPERATOR(pg_catalog.->>) 'reason',
                                                pg_catalog.jsonb_build_object('slot_lsn', v_lsn));
        END IF;
        RETURN pg_catalog.jsonb_build_object('slot_lsn', v_lsn);

    WHEN 'unmirror' THEN
        IF r.state OPERATOR(@extschema@.<>) 'legacy' THEN
            PERFORM @extschema@._remote_remove_triggers(v_name);
            UPDATE @extschema@.remote_migrations SET state = 'legacy', fenced = false, state_changed_at = pg_catalog.now()
             WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
            PERFORM @extschema@._invalidate(r.local_table, r.local_table);
            PERFORM @extschema@._remote_history(v_name, 'remote_rollback', r.state, 'legacy', arg OPERATOR(pg_catalog.->>) 'reason', '{}');
        END IF;
        PERFORM @extschema@._remote_drop_slot(v_name, r.tag OPERATOR(pg_catalog.||) '_fwd');
        RETURN '{}';

    WHEN 'fence' THEN
        -- stop the writers of the legacy table (waiting ones wait for this
        -- transaction, then see the fence), and write the fence marker: the
        -- target database takes over once it has applied it
        IF r.fenced AND (r.switch OPERATOR(pg_catalog.->>) 'marker') OPERATOR(pg_catalog.=) (arg OPERATOR(pg_catalog.->>) 'marker') THEN
            RETURN pg_catalog.jsonb_build_object('lsn', r.switch OPERATOR(pg_catalog.->>) 'lsn');   -- a retry
        END IF;
        IF r.state OPERATOR(@extschema@.<>) 'mirrored' OR r.fenced THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('the legacy side of migration "%s" cannot be fenced in state %s%s', v_name, r.state,
                                            CASE WHEN r.fenced THEN ' (fenced by another switch)' ELSE '' END);
        END IF;
        PERFORM pg_catalog.set_config('lock_timeout', v_timeout, true);
        BEGIN
            EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', r.local_table);
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                MESSAGE = pg_catalog.format('could not lock table %s to fence migration "%s"', r.local_table, v_name),
                DETAIL = pg_catalog.format('Writers kept a conflicting lock for longer than lock_timeout (%s).', v_timeout),
                HINT = 'Retry; nothing was changed. Long transactions writing the table delay the switch; option lock_timeout sets how long to wait.';
        END;
        v_lsn := pg_catalog.pg_current_wal_lsn();
        INSERT INTO @extschema@.remote_markers (migration, id, kind, lsn)
        VALUES (v_name, (arg OPERATOR(pg_catalog.->>) 'marker')::bigint, 'fence', v_lsn);
        UPDATE @extschema@.remote_migrations
           SET fenced = true,
               switch = pg_catalog.jsonb_build_object('marker', arg OPERATOR(pg_catalog.->) 'marker', 'lsn', v_lsn,
                                                      'at', pg_catalog.now(), 'to', arg OPERATOR(pg_catalog.->>) 'to')
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
        PERFORM @extschema@._invalidate(r.local_table, r.local_table);
        PERFORM @extschema@._remote_history(v_name, 'remote_fence', r.state, r.state, NULL,
                                            pg_catalog.jsonb_build_object('marker', arg OPERATOR(pg_catalog.->) 'marker', 'lsn', v_lsn));
        RETURN pg_catalog.jsonb_build_object('lsn', v_lsn);

    WHEN 'unfence' THEN
        IF r.fenced THEN
            UPDATE @extschema@.remote_migrations SET fenced = false, switch = NULL
             WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
            PERFORM @extschema@._invalidate(r.local_table, r.local_table);
            PERFORM @extschema@._remote_history(v_name, 'remote_unfence', r.state, r.state, NULL, r.switch);
        END IF;
        RETURN '{}';

    WHEN 'accept_reverse' THEN
        -- the target database is the write authority now: apply what it
        -- projects into its landing copy, from the slot it made at the switch
        v_sub := r.tag OPERATOR(pg_catalog.||) '_rev';
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_sub
                      AND s.subdbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                                            WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())) THEN
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = %L)', v_sub, v_sub);
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I ENABLE', v_sub);
        ELSE
            EXECUTE pg_catalog.format(
                'CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I '
                'WITH (create_slot = false, slot_name = %L, copy_data = false, enabled = true)',
                v_sub, (SELECT c.peer FROM @extschema@.remote_conninfo c WHERE c.migration OPERATOR(pg_catalog.=) v_name),
                v_sub, v_sub);
        END IF;
        IF r.state OPERATOR(@extschema@.=) 'mirrored' THEN
            UPDATE @extschema@.remote_migrations
               SET state = 'new_write', fenced = false, switch = NULL, state_changed_at = pg_catalog.now()
             WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
            PERFORM @extschema@._invalidate(r.local_table, r.local_table);
            PERFORM @extschema@._remote_history(v_name, 'remote_advance', 'mirrored', 'new_write', arg OPERATOR(pg_catalog.->>) 'reason', r.switch);
        END IF;
        PERFORM @extschema@._remote_drop_slot(v_name, r.tag OPERATOR(pg_catalog.||) '_fwd');
        RETURN '{}';

    WHEN 'stop_reverse' THEN
        -- rollback: the target database fenced itself and wrote a marker;
        -- once it is applied here, stop applying
        PERFORM @extschema@._remote_marker_applied(v_name, (arg OPERATOR(pg_catalog.->>) 'marker')::bigint);
        v_sub := r.tag OPERATOR(pg_catalog.||) '_rev';
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', v_sub);
        RETURN '{}';

    WHEN 'forward_slot' THEN
        -- rollback: once the subscription's worker is gone, a new slot for
        -- the legacy -> target direction, starting after the last applied change
        PERFORM @extschema@._remote_worker_gone(v_name, r.tag OPERATOR(pg_catalog.||) '_rev');
        v_lsn := @extschema@._remote_create_slot(r.tag OPERATOR(pg_catalog.||) '_fwd');
        RETURN pg_catalog.jsonb_build_object('slot_lsn', v_lsn);

    WHEN 'accept_forward' THEN
        -- rollback: legacy is the write authority again
        IF r.state OPERATOR(@extschema@.<>) 'mirrored' THEN
            UPDATE @extschema@.remote_migrations
               SET state = 'mirrored', fenced = false, switch = NULL, state_changed_at = pg_catalog.now()
             WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
            PERFORM @extschema@._invalidate(r.local_table, r.local_table);
            PERFORM @extschema@._remote_history(v_name, 'remote_rollback', r.state, 'mirrored', arg OPERATOR(pg_catalog.->>) 'reason', '{}');
            -- legacy takes keyless inserts again: its generators move past
            -- the keys the target gave out, which the reverse replication
            -- brought here up to the fence (keygen.c)
            v_keys := @extschema@._hand_over_table_keys(r.local_table);
            IF pg_catalog.jsonb_array_length(v_keys) OPERATOR(pg_catalog.>) 0 THEN
                PERFORM @extschema@._remote_history(v_name, 'key_handover', r.state, 'mirrored', NULL,
                    pg_catalog.jsonb_build_object('table', r.local_table::text, 'columns', v_keys));
            END IF;
        END IF;
        v_sub := r.tag OPERATOR(pg_catalog.||) '_rev';
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_sub AND s.subenabled) THEN
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', v_sub);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_sub) THEN
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', v_sub);
        END IF;
        RETURN '{}';

    WHEN 'abort_rollback' THEN
        -- a rollback given up before the target database switched: apply again
        v_sub := r.tag OPERATOR(pg_catalog.||) '_rev';
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_sub) THEN
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I ENABLE', v_sub);
        END IF;
        PERFORM @extschema@._remote_drop_slot(v_name, r.tag OPERATOR(pg_catalog.||) '_fwd');
        RETURN '{}';

    WHEN 'set_state' THEN
        IF r.state OPERATOR(@extschema@.<>) (arg OPERATOR(pg_catalog.->>) 'state')::@extschema@.state THEN
            UPDATE @extschema@.remote_migrations
               SET state = (arg OPERATOR(pg_catalog.->>) 'state')::@extschema@.state, state_changed_at = pg_catalog.now()
             WHERE remote_migrations.name OPERATOR(pg_catalog.=) v_name;
            PERFORM @extschema@._invalidate(r.local_table, r.local_table);
            PERFORM @extschema@._remote_history(v_name, arg OPERATOR(pg_catalog.->>) 'action', r.state,
                                                (arg OPERATOR(pg_catalog.->>) 'state')::@extschema@.state,
                                                arg OPERATOR(pg_catalog.->>) 'reason', '{}');
        END IF;
        IF (arg OPERATOR(pg_catalog.->>) 'state') OPERATOR(pg_catalog.=) 'cutover' THEN
            -- everything the target database projected before cutover is here
            -- once its marker is; then nothing more comes
            PERFORM @extschema@._remote_marker_applied(v_name, (arg OPERATOR(pg_catalog.->>) 'marker')::bigint);
            PERFORM @extschema@._remote_drop_subscription(r.tag OPERATOR(pg_catalog.||) '_rev');
        END IF;
        RETURN '{}';

    WHEN 'drop' THEN
        IF r.state OPERATOR(@extschema@.<>) ALL (ARRAY['legacy', 'cutover']::@extschema@.state[]) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot drop cross-database migration "%s" in state %s', v_name, r.state);
        END IF;
        PERFORM @extschema@._remote_drop_subscription(r.tag OPERATOR(pg_catalog.||) '_rev');
        PERFORM @extschema@._remote_remove_triggers(v_name);
        EXECUTE pg_catalog.format('DROP PUBLICATION IF EXISTS %I', r.tag OPERATOR(pg_catalog.||) '_fwd');
        PERFORM @extschema@._remote_drop_slot(v_name, r.tag OPERATOR(pg_catalog.||) '_fwd');
        PERFORM @extschema@._remote_history(v_name, 'remote_drop', r.state, NULL, NULL, '{}');
        DELETE FROM @extschema@.operations o WHERE o.migration_id OPERATOR(pg_catalog.=) r.migration_id;
        DELETE FROM @extschema@.remote_operations o WHERE o.migration OPERATOR(pg_catalog.=) v_name;
        DELETE FROM @extschema@.remote_markers k WHERE k.migration OPERATOR(pg_catalog.=) v_name;
        DELETE FROM @extschema@.remote_conninfo c WHERE c.migration OPERATOR(pg_catalog.=) v_name;
        DELETE FROM @extschema@.remote_migrations x WHERE x.name OPERATOR(pg_catalog.=) v_name;
        PERFORM @extschema@._invalidate(r.local_table, r.local_table);
        RETURN '{}';

    WHEN 'parity' THEN
        -- from new_write on the replication flows here: compare from here
        RETURN @extschema@._remote_parity_here(v_name, (arg OPERATOR(pg_catalog.->>) 'chunk_rows')::integer);

    ELSE
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('unknown cross-database operation "%s"', op);
    END CASE;
END $$;
COMMENT ON FUNCTION @extschema@._remote_peer(text, text, jsonb) IS
    'internal: this database''s part of a step of a cross-database migration, called by the other database over libpq (superusers only)';

-------------------------------------------------------------------------------
-- The target database: definition, state changes, status
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.create_remote_migration(name text, legacy text, target regclass,
    legacy_conninfo text, target_conninfo text,
    key text[] DEFAULT NULL, forward jsonb DEFAULT '{}', backward jsonb DEFAULT '{}',
    new_only text[] DEFAULT '{}', divergent text[] DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := name;
    v_tag text;
    d jsonb;
    v_landing regclass;
    v_key text[];
    v_cols text;
    v_mine jsonb;
    v_id integer;
BEGIN
    PERFORM @extschema@._remote_require_superuser('create a cross-database migration');
    IF name IS NULL OR legacy IS NULL OR target IS NULL OR legacy_conninfo IS NULL OR target_conninfo IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'name, legacy, target, legacy_conninfo and target_conninfo must not be null';
    END IF;
    IF options OPERATOR(pg_catalog.?) 'attribute_of' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'a cross-database migration cannot be an attribute member of a split or a merge (option attribute_of)',
            DETAIL = 'The members of a split or a merge move only as one group, and a cross-database migration cannot be a group member.',
            HINT = 'Migrate the entity''s tables within one database, or move the whole legacy table across databases with one migration.';
    END IF;
    IF options OPERATOR(pg_catalog.->>) 'cardinality' OPERATOR(pg_catalog.=) 'one_to_many' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('cross-database migration "%s" cannot be one_to_many', v_name),
            DETAIL = 'The legacy side in the other database applies one row per row; a one_to_many migration rewrites and aggregates whole sets of target rows.',
            HINT = 'Run a one_to_many migration within one database (doc/shapes.md).';
    END IF;
    PERFORM @extschema@._remote_check_wal_level();
    v_tag := @extschema@._remote_tag(v_name);
    IF EXISTS (SELECT 1 FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name)
       OR EXISTS (SELECT 1 FROM @extschema@.remote_migrations r
                   WHERE r.name OPERATOR(pg_catalog.=) v_name OR r.tag OPERATOR(pg_catalog.=) v_tag) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already exists', v_name);
    END IF;

    -- the legacy table, as the legacy database describes it
    INSERT INTO @extschema@.remote_conninfo (migration, peer, peer_back) VALUES (v_name, legacy_conninfo, target_conninfo);
    d := @extschema@._remote_call(v_name, 'describe', pg_catalog.jsonb_build_object('legacy', legacy));
    IF (d OPERATOR(pg_catalog.->>) 'relkind') OPERATOR(pg_catalog.<>) 'r'
       OR (d OPERATOR(pg_catalog.->>) 'persistence') OPERATOR(pg_catalog.<>) 'p' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('table %s of the legacy database cannot be migrated across databases', d OPERATOR(pg_catalog.->>) 'table'),
            DETAIL = 'Only plain, permanent (logged) tables: partitioned, unlogged and temporary tables are not supported.';
    END IF;
    IF d OPERATOR(pg_catalog.->) 'key' OPERATOR(pg_catalog.=) 'null' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_column_reference',
            MESSAGE = pg_catalog.format('table %s of the legacy database has no primary key', d OPERATOR(pg_catalog.->>) 'table'),
            DETAIL = 'Logical replication identifies updated and deleted rows by it, and it is the legacy key.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(d OPERATOR(pg_catalog.->) 'columns') c
                WHERE (c OPERATOR(pg_catalog.->>) 'generated')::boolean) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('table %s of the legacy database has generated columns', d OPERATOR(pg_catalog.->>) 'table'),
            DETAIL = 'Logical replication does not carry them.';
    END IF;
    IF (d OPERATOR(pg_catalog.->>) 'in_migration')::boolean THEN
        RAISE EXCEPTION USING ERRCODE = 'object_in_use',
            MESSAGE = pg_catalog.format('table %s already takes part in a migration of the legacy database', d OPERATOR(pg_catalog.->>) 'table');
    END IF;
    IF ((d OPERATOR(pg_catalog.->>) 'server_version_num')::integer OPERATOR(pg_catalog./) 10000)
       OPERATOR(pg_catalog.<>) (pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog./) 10000) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'both databases of a cross-database migration must run the same PostgreSQL major version',
            DETAIL = pg_catalog.format('The legacy database runs %s, this one %s.', d OPERATOR(pg_catalog.->>) 'server_version_num',
                                       pg_catalog.current_setting('server_version_num'));
    END IF;
    v_key := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(d OPERATOR(pg_catalog.->) 'key'));
    IF key IS NOT NULL AND key OPERATOR(pg_catalog.<>) v_key THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_column_reference',
            MESSAGE = pg_catalog.format('the legacy key of a cross-database migration is the primary key of its legacy table (%s)',
                                        pg_catalog.array_to_string(v_key, ', '));
    END IF;

    -- the landing copy: same name, same columns, created here if missing
    v_landing := pg_catalog.to_regclass(d OPERATOR(pg_catalog.->>) 'table');
    IF v_landing IS NULL THEN
        SELECT pg_catalog.string_agg(pg_catalog.format('%I %s%s%s', c OPERATOR(pg_catalog.->>) 'name', c OPERATOR(pg_catalog.->>) 'type',
                                         COALESCE(' COLLATE ' OPERATOR(pg_catalog.||) (c OPERATOR(pg_catalog.->>) 'collation'), ''),
                                         CASE WHEN (c OPERATOR(pg_catalog.->>) 'not_null')::boolean THEN ' NOT NULL' ELSE '' END),
                                     ', ' ORDER BY o)
          INTO v_cols
          FROM pg_catalog.jsonb_array_elements(d OPERATOR(pg_catalog.->) 'columns') WITH ORDINALITY AS x(c, o);
        EXECUTE pg_catalog.format('CREATE TABLE %s (%s, PRIMARY KEY (%s))', d OPERATOR(pg_catalog.->>) 'table', v_cols,
                                  (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(k), ', ') FROM pg_catalog.unnest(v_key) k));
        v_landing := (d OPERATOR(pg_catalog.->>) 'table')::pg_catalog.regclass;
    ELSE
        v_mine := @extschema@._remote_table_shape(v_landing);
        IF (SELECT pg_catalog.jsonb_agg(c OPERATOR(pg_catalog.-) 'not_null' ORDER BY o)
              FROM pg_catalog.jsonb_array_elements(v_mine OPERATOR(pg_catalog.->) 'columns') WITH ORDINALITY AS x(c, o))
           IS DISTINCT FROM
           (SELECT pg_catalog.jsonb_agg(c OPERATOR(pg_catalog.-) 'not_null' ORDER BY o)
              FROM pg_catalog.jsonb_array_elements(d OPERATOR(pg_catalog.->) 'columns') WITH ORDINALITY AS x(c, o))
           OR (v_mine OPERATOR(pg_catalog.->) 'key') IS DISTINCT FROM (d OPERATOR(pg_catalog.->) 'key')
           OR (v_mine OPERATOR(pg_catalog.->>) 'relkind') OPERATOR(pg_catalog.<>) 'r' THEN
            RAISE EXCEPTION USING ERRCODE = 'datatype_mismatch',
                MESSAGE = pg_catalog.format('table %s of this database is not a copy of the legacy table', v_landing),
                DETAIL = pg_catalog.format('It must be a plain table with the same columns (names, types, collations, in order) and primary key; the legacy table has %s.',
                                           d OPERATOR(pg_catalog.->) 'columns'),
                HINT = 'Drop it and let create_remote_migration create the landing copy, or rename it.';
        END IF;
        IF @extschema@._has_rows(v_landing) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('the landing copy %s is not empty', v_landing),
                DETAIL = 'The subscription''s initial synchronization fills it.';
        END IF;
    END IF;

    -- the migration proper, within this database: landing copy -> target
    PERFORM @extschema@.create_migration(v_name, v_landing, target, v_key, forward, backward, new_only, divergent, options);
    SELECT m.id INTO STRICT v_id FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name;
    INSERT INTO @extschema@.remote_migrations (name, side, migration_id, local_table, remote_table, key, tag, created_by)
    VALUES (v_name, 'target', v_id, v_landing, d OPERATOR(pg_catalog.->>) 'table', v_key, v_tag, @extschema@._actor());
    EXECUTE pg_catalog.format(
        'CREATE PUBLICATION %I FOR TABLE %s, @extschema@.remote_operations WHERE (migration OPERATOR(pg_catalog.=) %L), '
        '@extschema@.remote_markers WHERE (migration OPERATOR(pg_catalog.=) %L) WITH (publish = ''insert, update, delete'')',
        v_tag OPERATOR(pg_catalog.||) '_rev', v_landing, v_name, v_name);
    PERFORM @extschema@._remote_call(v_name, 'define', pg_catalog.jsonb_build_object(
        'legacy', d OPERATOR(pg_catalog.->>) 'table', 'remote_table', @extschema@._qualified(v_landing),
        'key', pg_catalog.to_jsonb(v_key), 'tag', v_tag, 'peer', target_conninfo,
        'options', @extschema@._remote_legacy_options(v_id)));
    PERFORM @extschema@._history(v_id, 'remote_define', NULL, 'legacy', NULL,
        pg_catalog.jsonb_build_object('legacy_database', d OPERATOR(pg_catalog.->>) 'database',
                                      'legacy', d OPERATOR(pg_catalog.->>) 'table', 'landing', v_landing::text, 'tag', v_tag));
END $$;
COMMENT ON FUNCTION @extschema@.create_remote_migration(text, text, regclass, text, text, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'define a migration from a legacy table in another database (reached with legacy_conninfo, which reaches this one with target_conninfo) to a target here; creates the landing copy; superusers only';

CREATE FUNCTION @extschema@._remote_legacy_options(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'lock_timeout', m.options OPERATOR(pg_catalog.->) 'lock_timeout',
               'require_operation_key', m.options OPERATOR(pg_catalog.->) 'require_operation_key'))
      FROM @extschema@.migrations m WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._remote_legacy_options(integer) IS
    'internal: the options of a migration that its legacy side in the other database uses (lock_timeout, require_operation_key)';

CREATE FUNCTION @extschema@.drop_remote_migration(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r @extschema@.remote_migrations := @extschema@._remote_endpoint(name);
    m @extschema@.migrations;
BEGIN
    PERFORM @extschema@._remote_require_superuser('drop a cross-database migration');
    IF r.side OPERATOR(pg_catalog.<>) 'target' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('this database holds the legacy side of migration "%s"', r.name),
            HINT = 'Drop it in its target database, which drops both sides.';
    END IF;
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) r.migration_id;
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['legacy', 'cutover']::@extschema@.state[]) OR r.switch IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot drop migration "%s" in state %s%s', r.name, m.state,
                                        CASE WHEN r.switch IS NOT NULL THEN ' with a switch in progress' ELSE '' END),
            HINT = 'Roll it back to legacy or advance it to cutover first.';
    END IF;
    PERFORM @extschema@._remote_call(r.name, 'drop', '{}');
    PERFORM @extschema@._remote_drop_subscription(r.tag OPERATOR(pg_catalog.||) '_fwd');
    EXECUTE pg_catalog.format('DROP PUBLICATION IF EXISTS %I', r.tag OPERATOR(pg_catalog.||) '_rev');
    PERFORM @extschema@._remote_drop_slot(r.name, r.tag OPERATOR(pg_catalog.||) '_rev');
    PERFORM @extschema@._remote_remove_triggers(r.name);
    PERFORM @extschema@._remote_step_mark(true);
    PERFORM @extschema@.drop_migration(r.name);
    DELETE FROM @extschema@.remote_operations o WHERE o.migration OPERATOR(pg_catalog.=) r.name;
    DELETE FROM @extschema@.remote_markers k WHERE k.migration OPERATOR(pg_catalog.=) r.name;
    DELETE FROM @extschema@.remote_conninfo c WHERE c.migration OPERATOR(pg_catalog.=) r.name;
    DELETE FROM @extschema@.remote_migrations x WHERE x.name OPERATOR(pg_catalog.=) r.name;
END $$;
COMMENT ON FUNCTION @extschema@.drop_remote_migration(text) IS
    'remove a cross-database migration in state legacy or cutover from both databases (subscriptions, slots, publications, triggers; the landing copy stays); superusers only';

-- The steps of each state change: the first is done when the change is
-- asked for, each next one in its own transaction (the procedures commit
-- in between), so every step is recorded before the next begins.
CREATE FUNCTION @extschema@._remote_plan(p_from @extschema@.state, p_to @extschema@.state) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_from::text OPERATOR(pg_catalog.||) '>' OPERATOR(pg_catalog.||) p_to::text
        WHEN 'legacy>mirrored' THEN ARRAY['source_mirror', 'target_mirror']
        WHEN 'mirrored>legacy' THEN ARRAY['target_unmirror', 'source_unmirror']
        -- the switch: fence legacy, apply up to the fence, stop, slot back, switch, reverse
        WHEN 'mirrored>new_write' THEN ARRAY['fence', 'catchup', 'stop', 'slot', 'switch', 'reverse']
        -- its rollback: fence the target database, the other way round
        WHEN 'new_write>mirrored' THEN ARRAY['target_fence', 'source_catchup', 'source_slot', 'rollback_switch', 'forward']
        ELSE ARRAY['target_state', 'source_state'] END
$$;
COMMENT ON FUNCTION @extschema@._remote_plan(@extschema@.state, @extschema@.state) IS
    'internal: the steps of a state change of a cross-database migration';

-- Up to which step a state change can still be given up (remote_abort):
-- before the step that makes it happen on the target database.
CREATE FUNCTION @extschema@._remote_abortable(p_step text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_step OPERATOR(pg_catalog.=) ANY (ARRAY['source_mirror', 'target_mirror', 'target_unmirror',
                                                   'fence', 'catchup', 'stop', 'slot', 'switch',
                                                   'target_fence', 'source_catchup', 'source_slot', 'rollback_switch',
                                                   'target_state'])
$$;
COMMENT ON FUNCTION @extschema@._remote_abortable(text) IS
    'internal: can a state change of a cross-database migration still be given up at this step';

CREATE FUNCTION @extschema@._remote_step(name text, action text, arg jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    r @extschema@.remote_migrations;
    sw jsonb;
    v_from @extschema@.state;
    v_to @extschema@.state;
    v_plan text[];
    v_step text;
    v_res jsonb;
    v_lsn pg_lsn;
    v_fwd text;
    v_rev text;
    v_detail jsonb;
BEGIN
    SELECT * INTO r FROM @extschema@.remote_migrations x
     WHERE x.migration_id OPERATOR(pg_catalog.=) m.id AND x.side OPERATOR(pg_catalog.=) 'target';
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
            MESSAGE = pg_catalog.format('migration "%s" is not a cross-database migration', m.name),
            HINT = 'Its state changes with softmig.advance and softmig.rollback.';
    END IF;
    IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'active_sql_transaction',
            MESSAGE = 'a state change of a cross-database migration must run at isolation level READ COMMITTED',
            DETAIL = 'It waits for changes the other database replicates, which a fixed snapshot would never see.';
    END IF;
    -- one coordinator at a time (an advisory lock: no transaction id, so a
    -- step may still create a replication slot)
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1936552035, m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_in_use',
            MESSAGE = pg_catalog.format('another session is changing the state of migration "%s"', m.name);
    END IF;
    v_fwd := r.tag OPERATOR(pg_catalog.||) '_fwd';
    v_rev := r.tag OPERATOR(pg_catalog.||) '_rev';
    sw := r.switch;

    IF action OPERATOR(pg_catalog.=) ANY (ARRAY['advance', 'rollback']) THEN
        IF sw IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('migration "%s" is in the middle of a state change from %s to %s (step %s)',
                                            m.name, sw OPERATOR(pg_catalog.->>) 'from', sw OPERATOR(pg_catalog.->>) 'to',
                                            sw OPERATOR(pg_catalog.->>) 'step'),
                HINT = pg_catalog.format('CALL softmig.remote_resume(%L) finishes it; CALL softmig.remote_abort(%L) gives it up while it can.', m.name, m.name);
        END IF;
        v_from := m.state;
        IF action OPERATOR(pg_catalog.=) 'advance' THEN
            IF COALESCE((arg OPERATOR(pg_catalog.->>) 'force')::boolean, false) THEN
                PERFORM @extschema@._require_nonblank(arg OPERATOR(pg_catalog.->>) 'reason', 'force => true needs a reason',
                                                      'The reason is recorded in the migration''s history.');
            END IF;
            IF m.state OPERATOR(@extschema@.=) 'cutover' THEN
                RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                    MESSAGE = pg_catalog.format('migration "%s" is already in state cutover', m.name);
            END IF;
            v_to := COALESCE((arg OPERATOR(pg_catalog.->>) 'to')::@extschema@.state, @extschema@._next_state(m.state));
            IF v_to OPERATOR(@extschema@.<=) m.state THEN
                RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                    MESSAGE = pg_catalog.format('cannot advance migration "%s" from %s to %s', m.name, m.state, v_to),
                    HINT = 'remote_advance moves forward one step; use softmig.remote_rollback to go back.';
            END IF;
        ELSE
            IF m.state OPERATOR(@extschema@.=) ANY (ARRAY['legacy', 'cutover']::@extschema@.state[]) THEN
                RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                    MESSAGE = pg_catalog.format('migration "%s" is in state %s and cannot roll back', m.name, m.state);
            END IF;
            v_to := @extschema@._previous_state(m.state);
        END IF;
        IF NOT @extschema@.is_legal_transition(v_from, v_to) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('illegal state transition from %s to %s for migration "%s"', v_from, v_to, m.name),
                HINT = 'States move one step at a time; cutover is final.';
        END IF;

        -- checks made before anything stops: the switch fences the legacy
        -- database first, so its guards run now, while writes flow
        IF v_from OPERATOR(@extschema@.=) 'mirrored' AND v_to OPERATOR(@extschema@.=) 'new_write' THEN
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel sr
                         JOIN pg_catalog.pg_subscription s ON s.oid OPERATOR(pg_catalog.=) sr.srsubid
                        WHERE s.subname OPERATOR(pg_catalog.=) v_fwd AND sr.srsubstate OPERATOR(pg_catalog.<>) 'r')
               OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_fwd AND s.subenabled) THEN
                RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                    MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: the initial synchronization of the landing copy is not finished', m.name),
                    DETAIL = 'The landing copy does not hold the legacy table yet; force cannot help.',
                    HINT = pg_catalog.format('softmig.status(%L)->''remote''->''subscription''->''tables'' shows it; it ends in state ready.', m.name);
            END IF;
            IF NOT COALESCE((arg OPERATOR(pg_catalog.->>) 'force')::boolean, false) THEN
                IF NOT @extschema@._backfill_done(m.id) THEN
                    RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                        MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: the backfill is not done', m.name),
                        DETAIL = 'The target must hold every legacy row before it becomes the write authority.',
                        HINT = pg_catalog.format('CALL softmig.backfill(%L) first, or pass force => true with a reason.', m.name);
                END IF;
                PERFORM @extschema@._require_semantic_health(m.id);
            END IF;
        END IF;
        IF v_from OPERATOR(@extschema@.=) 'new_write' AND v_to OPERATOR(@extschema@.=) 'mirrored'
           AND NOT @extschema@._envelope_open_now(m.id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot roll migration "%s" back from new_write to mirrored: the rollback envelope is closed', m.name),
                HINT = 'Legacy cannot represent state the target already holds. Fix forward instead: softmig.quarantine, repair on the target, or softmig.shadow_disable.';
        END IF;

        v_plan := @extschema@._remote_plan(v_from, v_to);
        sw := pg_catalog.jsonb_build_object(
            'action', action, 'from', v_from::text, 'to', v_to::text, 'step', v_plan[1], 'plan', pg_catalog.to_jsonb(v_plan),
            'reason', arg OPERATOR(pg_catalog.->>) 'reason',
            'force', COALESCE((arg OPERATOR(pg_catalog.->>) 'force')::boolean, false),
            'marker', (pg_catalog.random() OPERATOR(pg_catalog.*) 9e18)::bigint,
            'started_at', pg_catalog.clock_timestamp(), 'by', @extschema@._actor());
        UPDATE @extschema@.remote_migrations SET switch = sw WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
        PERFORM @extschema@._history(m.id, 'remote_' OPERATOR(pg_catalog.||) action OPERATOR(pg_catalog.||) '_begin',
                                     v_from, v_to, arg OPERATOR(pg_catalog.->>) 'reason', sw);
        RETURN pg_catalog.jsonb_build_object('done', false, 'step', 'begin', 'next', v_plan[1]);
    END IF;

    IF sw IS NULL THEN
        RETURN pg_catalog.jsonb_build_object('done', true, 'step', NULL, 'idle', true);
    END IF;
    v_step := sw OPERATOR(pg_catalog.->>) 'step';
    v_to := (sw OPERATOR(pg_catalog.->>) 'to')::@extschema@.state;
    v_from := (sw OPERATOR(pg_catalog.->>) 'from')::@extschema@.state;

    IF action OPERATOR(pg_catalog.=) 'abort' THEN
        IF NOT @extschema@._remote_abortable(v_step) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('the change of migration "%s" from %s to %s can no longer be given up (step %s)',
                                            m.name, v_from, v_to, v_step),
                DETAIL = 'This database already changed state; only the other database''s part is left.',
                HINT = pg_catalog.format('CALL softmig.remote_resume(%L) finishes it.', m.name);
        END IF;
        IF v_from OPERATOR(@extschema@.=) 'legacy' THEN
            PERFORM @extschema@._remote_call(m.name, 'unmirror', pg_catalog.jsonb_build_object('reason', 'abort'));
        ELSIF v_from OPERATOR(@extschema@.=) 'mirrored' AND v_to OPERATOR(@extschema@.=) 'new_write' THEN
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_fwd AND NOT s.subenabled) THEN
                EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I ENABLE', v_fwd);
            END IF;
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) v_rev) THEN
                PERFORM pg_catalog.pg_drop_replication_slot(v_rev);
            END IF;
            PERFORM @extschema@._remote_call(m.name, 'unfence', '{}');
        ELSIF v_from OPERATOR(@extschema@.=) 'new_write' AND v_to OPERATOR(@extschema@.=) 'mirrored' THEN
            IF v_step OPERATOR(pg_catalog.<>) 'target_fence' THEN
                PERFORM @extschema@._remote_call(m.name, 'abort_rollback', '{}');
            END IF;
            UPDATE @extschema@.remote_migrations SET fenced = false WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
        END IF;
        RETURN @extschema@._remote_give_up(r.name, m, arg OPERATOR(pg_catalog.->>) 'reason', sw,
                                           pg_catalog.jsonb_build_object('done', true, 'step', v_step, 'aborted', true));
    END IF;

    -- action 'next': do the recorded step, record the one after it
    v_detail := pg_catalog.jsonb_build_object('remote', true, 'marker', sw OPERATOR(pg_catalog.->) 'marker');
    IF (sw OPERATOR(pg_catalog.->>) 'force')::boolean THEN
        v_detail := v_detail OPERATOR(pg_catalog.||) '{"force": true}';
    END IF;
    CASE v_step
    WHEN 'source_mirror' THEN
        PERFORM @extschema@._remote_call(m.name, 'mirror', pg_catalog.jsonb_build_object(
            'reason', sw OPERATOR(pg_catalog.->>) 'reason', 'options', @extschema@._remote_legacy_options(m.id)));
    WHEN 'target_mirror' THEN
        PERFORM @extschema@._remote_step_mark(true);
        PERFORM @extschema@._set_state(m.id, 'mirrored', 'advance', sw OPERATOR(pg_catalog.->>) 'reason', v_detail);
        PERFORM @extschema@._remote_install_triggers(r.name);
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_fwd) THEN
            PERFORM @extschema@._remote_drop_subscription(v_fwd);
        END IF;
        -- the initial synchronization copies the legacy table at a snapshot
        -- and the apply starts exactly after it; every row reaches the
        -- target through the apply trigger
        EXECUTE pg_catalog.format(
            'CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I '
            'WITH (create_slot = false, slot_name = %L, copy_data = true, enabled = true)',
            v_fwd, (SELECT c.peer FROM @extschema@.remote_conninfo c WHERE c.migration OPERATOR(pg_catalog.=) r.name),
            v_fwd, v_fwd);
        UPDATE @extschema@.remote_migrations SET state = 'mirrored', state_changed_at = pg_catalog.now()
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
    WHEN 'target_unmirror' THEN
        PERFORM @extschema@._remote_drop_subscription(v_fwd);
        PERFORM @extschema@._remote_step_mark(true);
        PERFORM @extschema@._set_state(m.id, 'legacy', 'rollback', sw OPERATOR(pg_catalog.->>) 'reason', v_detail);
        PERFORM @extschema@._remote_remove_triggers(r.name);
        -- the copy is stale from now on; the next mirroring copies afresh
        EXECUTE pg_catalog.format('TRUNCATE %s', m.legacy);
        UPDATE @extschema@.remote_migrations SET state = 'legacy', state_changed_at = pg_catalog.now()
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
    WHEN 'source_unmirror' THEN
        PERFORM @extschema@._remote_call(m.name, 'unmirror', pg_catalog.jsonb_build_object('reason', sw OPERATOR(pg_catalog.->>) 'reason'));

    -- mirrored -> new_write
    WHEN 'fence' THEN
        BEGIN
            v_res := @extschema@._remote_call(m.name, 'fence', pg_catalog.jsonb_build_object(
                'marker', sw OPERATOR(pg_catalog.->) 'marker', 'to', v_to::text,
                'options', @extschema@._remote_legacy_options(m.id)));
        EXCEPTION WHEN lock_not_available THEN
            -- the legacy database changed nothing: give the switch up, say why
            RETURN @extschema@._remote_give_up(r.name, m, 'the legacy table could not be locked', sw,
                pg_catalog.jsonb_build_object('done', true, 'step', v_step, 'failed', '55P03',
                    'message', pg_catalog.format('could not fence migration "%s": writers held the legacy table longer than lock_timeout', m.name)));
        END;
        sw := sw OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('fence_lsn', v_res OPERATOR(pg_catalog.->>) 'lsn');
    WHEN 'catchup' THEN
        PERFORM @extschema@._remote_marker_applied(m.name, (sw OPERATOR(pg_catalog.->>) 'marker')::bigint);
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', v_fwd);
    WHEN 'stop' THEN
        PERFORM @extschema@._remote_worker_gone(m.name, v_fwd);
    WHEN 'slot' THEN
        -- first thing of this transaction: a slot cannot be made after a write
        v_lsn := @extschema@._remote_create_slot(v_rev);
        sw := sw OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('slot_lsn', v_lsn);
    WHEN 'switch' THEN
        PERFORM @extschema@._remote_step_mark(true);
        PERFORM @extschema@._set_state(m.id, 'new_write', 'advance', sw OPERATOR(pg_catalog.->>) 'reason',
                                       v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
                                           'guards_checked', true, 'fence_lsn', sw OPERATOR(pg_catalog.->) 'fence_lsn',
                                           'slot_lsn', sw OPERATOR(pg_catalog.->) 'slot_lsn'));
        UPDATE @extschema@.remote_migrations SET state = 'new_write', state_changed_at = pg_catalog.now()
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
    WHEN 'reverse' THEN
        PERFORM @extschema@._remote_call(m.name, 'accept_reverse', pg_catalog.jsonb_build_object('reason', sw OPERATOR(pg_catalog.->>) 'reason'));
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname OPERATOR(pg_catalog.=) v_fwd AND s.subslotname IS NOT NULL) THEN
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', v_fwd);
        END IF;

    -- new_write -> mirrored
    WHEN 'target_fence' THEN
        BEGIN
            PERFORM @extschema@._lock_tables(m, 'mirrored');
        EXCEPTION WHEN lock_not_available THEN
            RETURN @extschema@._remote_give_up(r.name, m, 'the tables could not be locked', sw,
                pg_catalog.jsonb_build_object('done', true, 'step', v_step, 'failed', '55P03',
                    'message', pg_catalog.format('could not fence migration "%s": writers held its tables longer than lock_timeout', m.name)));
        END;
        v_lsn := pg_catalog.pg_current_wal_lsn();
        INSERT INTO @extschema@.remote_markers (migration, id, kind, lsn)
        VALUES (r.name, (sw OPERATOR(pg_catalog.->>) 'marker')::bigint, 'fence', v_lsn);
        UPDATE @extschema@.remote_migrations SET fenced = true WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
        PERFORM @extschema@._invalidate(m.legacy, m.target);
        sw := sw OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('fence_lsn', v_lsn);
    WHEN 'source_catchup' THEN
        PERFORM @extschema@._remote_call(m.name, 'stop_reverse', pg_catalog.jsonb_build_object('marker', sw OPERATOR(pg_catalog.->) 'marker'));
    WHEN 'source_slot' THEN
        v_res := @extschema@._remote_call(m.name, 'forward_slot', '{}');
        sw := sw OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('slot_lsn', v_res OPERATOR(pg_catalog.->>) 'slot_lsn');
    WHEN 'rollback_switch' THEN
        PERFORM @extschema@._remote_step_mark(true);
        PERFORM @extschema@._set_state(m.id, 'mirrored', 'rollback', sw OPERATOR(pg_catalog.->>) 'reason',
                                       v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
                                           'fence_lsn', sw OPERATOR(pg_catalog.->) 'fence_lsn', 'slot_lsn', sw OPERATOR(pg_catalog.->) 'slot_lsn'));
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = %L)', v_fwd, v_fwd);
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I ENABLE', v_fwd);
        UPDATE @extschema@.remote_migrations SET state = 'mirrored', fenced = false, state_changed_at = pg_catalog.now()
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
        PERFORM @extschema@._invalidate(m.legacy, m.target);
    WHEN 'forward' THEN
        PERFORM @extschema@._remote_call(m.name, 'accept_forward', pg_catalog.jsonb_build_object('reason', sw OPERATOR(pg_catalog.->>) 'reason'));
        PERFORM @extschema@._remote_drop_slot(m.name, v_rev);

    -- the other moves change who reads, not who writes
    WHEN 'target_state' THEN
        PERFORM @extschema@._remote_step_mark(true);
        PERFORM @extschema@._set_state(m.id, v_to, sw OPERATOR(pg_catalog.->>) 'action', sw OPERATOR(pg_catalog.->>) 'reason', v_detail);
        UPDATE @extschema@.remote_migrations SET state = v_to, state_changed_at = pg_catalog.now()
         WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
        IF v_to OPERATOR(@extschema@.=) 'cutover' THEN
            -- the last projected change: the legacy database drops its
            -- subscription once it has applied this marker
            INSERT INTO @extschema@.remote_markers (migration, id, kind, lsn)
            VALUES (r.name, (sw OPERATOR(pg_catalog.->>) 'marker')::bigint, 'fence', pg_catalog.pg_current_wal_lsn());
        END IF;
    WHEN 'source_state' THEN
        PERFORM @extschema@._remote_call(m.name, 'set_state', pg_catalog.jsonb_build_object(
            'state', v_to::text, 'action', 'remote_' OPERATOR(pg_catalog.||) (sw OPERATOR(pg_catalog.->>) 'action'),
            'reason', sw OPERATOR(pg_catalog.->>) 'reason', 'marker', sw OPERATOR(pg_catalog.->) 'marker'));
        IF v_to OPERATOR(@extschema@.=) 'cutover' THEN
            PERFORM @extschema@._remote_drop_slot(m.name, v_rev);
        END IF;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = pg_catalog.format('migration "%s" records an unknown step "%s"', m.name, v_step);
    END CASE;

    v_plan := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(sw OPERATOR(pg_catalog.->) 'plan'));
    IF pg_catalog.array_position(v_plan, v_step) OPERATOR(pg_catalog.=) pg_catalog.array_length(v_plan, 1) THEN
        UPDATE @extschema@.remote_migrations SET switch = NULL WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
        PERFORM @extschema@._history(m.id, 'remote_' OPERATOR(pg_catalog.||) (sw OPERATOR(pg_catalog.->>) 'action') OPERATOR(pg_catalog.||) '_done',
                                     v_from, v_to, sw OPERATOR(pg_catalog.->>) 'reason', sw OPERATOR(pg_catalog.-) 'plan');
        RETURN pg_catalog.jsonb_build_object('done', true, 'step', v_step, 'state', v_to::text);
    END IF;
    sw := pg_catalog.jsonb_set(sw, '{step}', pg_catalog.to_jsonb(v_plan[pg_catalog.array_position(v_plan, v_step) OPERATOR(pg_catalog.+) 1]));
    UPDATE @extschema@.remote_migrations SET switch = sw WHERE remote_migrations.name OPERATOR(pg_catalog.=) r.name;
    RETURN pg_catalog.jsonb_build_object('done', false, 'step', v_step, 'next', sw OPERATOR(pg_catalog.->>) 'step');
END $$;
COMMENT ON FUNCTION @extschema@._remote_step(text, text, jsonb) IS
    'internal: implementation of softmig.remote_step';

CREATE FUNCTION @extschema@.remote_step(name text, action text, arg jsonb DEFAULT '{}')
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.remote_step(text, text, jsonb) IS
    'one step of a state change of a cross-database migration (advance, rollback, next, abort), in the target database; the remote_* procedures call it, one transaction per step; owners of both tables only';

-- The procedures run each step in its own transaction; they qualify every
-- name (a procedure that commits cannot pin its search_path).
CREATE PROCEDURE @extschema@._remote_drive(name text, first pg_catalog.jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    r pg_catalog.jsonb := first;
BEGIN
    LOOP
        COMMIT;
        IF r OPERATOR(pg_catalog.?) 'failed' THEN
            RAISE EXCEPTION USING ERRCODE = r OPERATOR(pg_catalog.->>) 'failed', MESSAGE = r OPERATOR(pg_catalog.->>) 'message',
                HINT = 'Nothing changed; retry.';
        END IF;
        EXIT WHEN (r OPERATOR(pg_catalog.->>) 'done')::pg_catalog.bool;
        IF @extschema@._remote_stop_after(r OPERATOR(pg_catalog.->>) 'step') THEN
            RAISE EXCEPTION USING ERRCODE = 'query_canceled',
                MESSAGE = pg_catalog.format('stopped after step %s (test hook softmig.remote_stop_after)', r OPERATOR(pg_catalog.->>) 'step');
        END IF;
        r := @extschema@.remote_step(name, 'next');
    END LOOP;
END $$;
COMMENT ON PROCEDURE @extschema@._remote_drive(text, pg_catalog.jsonb) IS
    'internal: run the recorded steps of a state change of a cross-database migration, committing after each';

CREATE PROCEDURE @extschema@.remote_advance(name text, to_state @extschema@.state DEFAULT NULL,
                                            reason text DEFAULT NULL, force boolean DEFAULT false)
LANGUAGE plpgsql AS $$
BEGIN
    CALL @extschema@._remote_drive(name, @extschema@.remote_step(name, 'advance',
        pg_catalog.jsonb_build_object('to', to_state::pg_catalog.text, 'reason', reason, 'force', force)));
END $$;
COMMENT ON PROCEDURE @extschema@.remote_advance(text, @extschema@.state, text, boolean) IS
    'move a cross-database migration one state forward in both databases (mirrored -> new_write switches the write authority at a fence); run it in the target database, outside a transaction block';

CREATE PROCEDURE @extschema@.remote_rollback(name text, reason text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    CALL @extschema@._remote_drive(name, @extschema@.remote_step(name, 'rollback',
        pg_catalog.jsonb_build_object('reason', reason)));
END $$;
COMMENT ON PROCEDURE @extschema@.remote_rollback(text, text) IS
    'move a cross-database migration one state back in both databases (new_write -> mirrored is the same fence the other way); run it in the target database, outside a transaction block';

CREATE PROCEDURE @extschema@.remote_resume(name text)
LANGUAGE plpgsql AS $$
BEGIN
    CALL @extschema@._remote_drive(name, @extschema@.remote_step(name, 'next'));
END $$;
COMMENT ON PROCEDURE @extschema@.remote_resume(text) IS
    'finish a state change of a cross-database migration that a crash, a timeout or the network interrupted, from its recorded step';

CREATE PROCEDURE @extschema@.remote_abort(name text, reason text DEFAULT NULL)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.remote_step(name, 'abort', pg_catalog.jsonb_build_object('reason', reason));
END $$;
COMMENT ON PROCEDURE @extschema@.remote_abort(text, text) IS
    'give up a state change of a cross-database migration that has not changed the target database yet; both databases return to where they were';

CREATE FUNCTION @extschema@.remote_status(name text) RETURNS jsonb
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_here jsonb := @extschema@._remote_describe((@extschema@._remote_endpoint(name)).name);
    v_there jsonb;
BEGIN
    BEGIN
        v_there := @extschema@._remote_call(name, 'status', '{}');
    EXCEPTION WHEN OTHERS THEN
        v_there := pg_catalog.jsonb_build_object('error', SQLERRM, 'sqlstate', SQLSTATE);
    END;
    RETURN pg_catalog.jsonb_build_object(
        'here', v_here, 'there', v_there,
        -- WAL of the publishing side the subscribing side has not confirmed
        'lag_bytes', COALESCE(v_here OPERATOR(pg_catalog.#>) '{slot,lag_bytes}', v_there OPERATOR(pg_catalog.#>) '{slot,lag_bytes}'));
END $$;
COMMENT ON FUNCTION @extschema@.remote_status(text) IS
    'both sides of a cross-database migration (this database, and the other one, contacted): states, the switch in progress, subscriptions, slots and lag';

-------------------------------------------------------------------------------
-- Parity across databases (src/remote_parity.c)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._remote_parity_here(name text, chunk_rows integer) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_remote_parity_here' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._remote_parity_here(text, integer) IS
    'internal: compare the legacy table with its landing copy, and the copy with the target, at one point of the replication, from the database it flows to';

CREATE FUNCTION @extschema@._remote_parity_report(name text, chunk_rows integer) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r @extschema@.remote_migrations := @extschema@._remote_endpoint(name);
BEGIN
    IF r.side OPERATOR(pg_catalog.<>) 'target' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('this database holds the legacy side of migration "%s"', r.name),
            HINT = 'Run softmig.remote_parity in its target database.';
    END IF;
    -- the comparison runs where the replication flows to
    IF r.state OPERATOR(@extschema@.=) 'mirrored' THEN
        RETURN @extschema@._remote_parity_here(r.name, chunk_rows);
    END IF;
    IF r.state OPERATOR(@extschema@.<>) ALL (ARRAY['new_write', 'new_read']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot compare migration "%s" across databases in state %s', r.name, r.state),
            DETAIL = 'Cross-database parity compares the legacy table with its landing copy while replication runs, from mirrored to new_read.';
    END IF;
    RETURN @extschema@._remote_call(r.name, 'parity', pg_catalog.jsonb_build_object('chunk_rows', chunk_rows));
END $$;
COMMENT ON FUNCTION @extschema@._remote_parity_report(text, integer) IS
    'internal: implementation of softmig.remote_parity_report';

CREATE FUNCTION @extschema@.remote_parity_report(name text, chunk_rows integer DEFAULT 10000)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.remote_parity_report(text, integer) IS
    'cross-database parity with its statistics: {"differences": [...], "stats": {rows and time per side, chunks compared row by row, ...}}; owners of both tables in the target database';

CREATE FUNCTION @extschema@.remote_parity(name text, chunk_rows integer DEFAULT 10000)
RETURNS TABLE(layer text, kind text, key jsonb, field text, legacy_value text, target_value text)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.layer, x.kind, x.key, x.field, x.legacy_value, x.target_value
      FROM pg_catalog.jsonb_to_recordset(@extschema@.remote_parity_report(name, chunk_rows) OPERATOR(pg_catalog.->) 'differences')
        AS x(layer text, kind text, key jsonb, field text, legacy_value text, target_value text)
$$;
COMMENT ON FUNCTION @extschema@.remote_parity(text, integer) IS
    'every difference between the legacy table in the legacy database and its landing copy here (layer replication), and between the copy and the target (layer mapping), at one point of the replication; owners of both tables in the target database';

-------------------------------------------------------------------------------
-- Privileges: internal functions run behind the gate, as the catalog owner,
-- or in the other database as a superuser.  Executable by everyone: what
-- status, the trigger health check and the procedures call as their caller.
-------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    @extschema@._remote_call(text, text, jsonb),
    @extschema@._remote_step_mark(boolean),
    @extschema@._remote_stepping(),
    @extschema@._remote_legacy_guard(),
    @extschema@._remote_copy_guard(),
    @extschema@._remote_target_guard(),
    @extschema@._remote_apply(),
    @extschema@._remote_marker(),
    @extschema@._remote_ledger(),
    @extschema@._remote_replicated_once(),
    @extschema@._remote_endpoint(text),
    @extschema@._remote_require_superuser(text),
    @extschema@._remote_timeout(),
    @extschema@._remote_wait(text, text, text, jsonb),
    @extschema@._remote_marker_applied(text, bigint),
    @extschema@._remote_worker_gone(text, text),
    @extschema@._remote_create_slot(text),
    @extschema@._remote_drop_slot(text, text),
    @extschema@._remote_drop_subscription(text),
    @extschema@._remote_check_wal_level(),
    @extschema@._remote_history(text, text, @extschema@.state, @extschema@.state, text, jsonb),
    @extschema@._remote_table_shape(regclass),
    @extschema@._remote_install_triggers(text),
    @extschema@._remote_remove_triggers(text),
    @extschema@._remote_peer(text, text, jsonb),
    @extschema@._remote_legacy_options(integer),
    @extschema@._remote_plan(@extschema@.state, @extschema@.state),
    @extschema@._remote_abortable(text),
    @extschema@._remote_step(text, text, jsonb),
    @extschema@._remote_parity_here(text, integer),
    @extschema@._remote_parity_report(text, integer),
    @extschema@._remote_tag(text),
    @extschema@.create_remote_migration(text, text, regclass, text, text, text[], jsonb, jsonb, text[], text[], jsonb),
    @extschema@.drop_remote_migration(text)
FROM PUBLIC;

-------------------------------------------------------------------------------
-- forget_checks and forget_rule_violations share one implementation
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._forget_older(p_name text, older_than interval, p_log text, p_event text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    n bigint;
BEGIN
    IF older_than IS NULL OR older_than OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'older_than must be a non-negative interval';
    END IF;
    EXECUTE pg_catalog.format('DELETE FROM @extschema@.%I l WHERE l.migration_id OPERATOR(pg_catalog.=) $1 '
                              'AND l.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $2)', p_log)
        USING m.id, older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF p_event IS NOT NULL THEN
        PERFORM @extschema@._history(m.id, p_event, m.state, m.state, NULL,
            pg_catalog.jsonb_build_object('older_than', older_than::text, 'removed', n));
    END IF;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._forget_older(text, interval, text, text) IS
    'internal: delete the rows of a migration older than an interval from one of its logs (check_results, rule_violations), recording p_event in history unless NULL';

CREATE OR REPLACE FUNCTION @extschema@._forget_checks(name text, older_than interval) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._forget_older(name, older_than, 'check_results', NULL)
$$;
COMMENT ON FUNCTION @extschema@._forget_checks(text, interval) IS 'internal: implementation of softmig.forget_checks';

CREATE OR REPLACE FUNCTION @extschema@._forget_rule_violations(name text, older_than interval) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._forget_older(name, older_than, 'rule_violations', 'forget_rule_violations')
$$;
COMMENT ON FUNCTION @extschema@._forget_rule_violations(text, interval) IS
    'internal: implementation of softmig.forget_rule_violations';
REVOKE ALL ON FUNCTION @extschema@._forget_older(text, interval, text, text) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Key generators handed over at a switch of write authority (keygen.c)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._hand_over_keys(migration_id integer, to_target boolean) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_hand_over_keys' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._hand_over_keys(integer, boolean) IS
    'internal: move the sequence behind every mapped column of the new write authority past the keys both tables hold';
REVOKE ALL ON FUNCTION @extschema@._hand_over_keys(integer, boolean) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Nullable correlation keys: a target row whose key is NULL is the target's
-- own entity (new-only for the envelope)
-------------------------------------------------------------------------------

-------------------------------------------------------------------------------
-- Key generators across databases: the legacy side's generators at a rollback
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._hand_over_table_keys(rel regclass) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_hand_over_table_keys' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._hand_over_table_keys(regclass) IS
    'internal: move the sequence behind every column of a table past the values it holds (the legacy side of a migration across databases, at a rollback)';
REVOKE ALL ON FUNCTION @extschema@._hand_over_table_keys(regclass) FROM PUBLIC;

-- The user columns of table p_rel in attnum order, dropped ones left out:
-- n is the column's position (1..total, generated columns counted), typ its
-- type as SQL text, and expr, when p_dir names a direction, the mapping of
-- that direction that feeds the column, parenthesized and cast to typ (NULL
-- where nothing maps).  Every statement routed views and shape views build
-- reads the columns from here.
CREATE FUNCTION @extschema@._shape_columns(p_id integer, p_rel regclass, p_dir text)
RETURNS TABLE (attname name, attnum smallint, n bigint, total bigint, attidentity "char",
               attgenerated "char", typ text, expr text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.attname, a.attnum,
           pg_catalog.row_number() OVER (ORDER BY a.attnum), pg_catalog.count(*) OVER (),
           a.attidentity, a.attgenerated, pg_catalog.format_type(a.atttypid, a.atttypmod),
           '(' OPERATOR(pg_catalog.||) mp.expression OPERATOR(pg_catalog.||) E'\n)::'
               OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
      FROM pg_catalog.pg_attribute a
      LEFT JOIN @extschema@.mappings mp
             ON mp.migration_id OPERATOR(pg_catalog.=) p_id AND mp.direction OPERATOR(pg_catalog.=) p_dir
            AND mp.column_name OPERATOR(pg_catalog.=) a.attname
     WHERE a.attrelid OPERATOR(pg_catalog.=) p_rel AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
     ORDER BY a.attnum
$$;
COMMENT ON FUNCTION @extschema@._shape_columns(integer, regclass, text) IS
    'internal: the columns of a table in order, with the mapping of one direction that feeds each (routed views, shape views)';

-- Shape views: both application builds write at once (rolling deploys).
-- Same objects as src/install/72_shapeviews.sql, and the select lists they
-- share with routed views (70_readpath.sql: _shape_lists, _create_read_view).
-------------------------------------------------------------------------------
-- The rows of the other table in the shape of table p_own: the select list
-- that maps them (stored columns through the mappings of direction p_dir,
-- NULL where nothing maps) and the outer list over it that adds the shape's
-- generated columns.  Routed views and the writes of shape views use both.
CREATE FUNCTION @extschema@._shape_lists(p_id integer, p_own regclass, p_dir text,
                                         OUT inner_list text, OUT outer_list text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- stored columns through the mapping (NULL where nothing maps), then
    -- generated columns computed from those, with the shape's types and
    -- collations
    SELECT pg_catalog.string_agg(COALESCE(c.expr, 'NULL::' OPERATOR(pg_catalog.||) c.typ)
                                 OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.attname),
                                 ', ' ORDER BY c.n)
      INTO inner_list
      FROM @extschema@._shape_columns(p_id, p_own, p_dir) c
     WHERE c.attgenerated OPERATOR(pg_catalog.=) '';
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
      INTO outer_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN pg_catalog.pg_attrdef ad
             ON ad.adrelid OPERATOR(pg_catalog.=) a.attrelid AND ad.adnum OPERATOR(pg_catalog.=) a.attnum
     WHERE a.attrelid OPERATOR(pg_catalog.=) p_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
END $$;
COMMENT ON FUNCTION @extschema@._shape_lists(integer, regclass, text) IS
    'internal: the select lists that show the other table''s rows in the shape of a table (routed views, shape views)';

COMMENT ON FUNCTION @extschema@._create_read_view(text, text, @extschema@.side) IS
    'internal: implementation of softmig.create_read_view';

REVOKE ALL ON FUNCTION @extschema@._shape_columns(integer, regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._shape_lists(integer, regclass, text) FROM PUBLIC;

CREATE TABLE @extschema@.shape_views (
    view_name      regclass PRIMARY KEY,
    migration_id   integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    shape          @extschema@.side NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by     name NOT NULL
);
CREATE INDEX ON @extschema@.shape_views (migration_id);
COMMENT ON TABLE @extschema@.shape_views IS
    'softmig: shape views created by softmig.create_shape_views (one per shape)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.shape_views', '');
REVOKE ALL ON @extschema@.shape_views FROM PUBLIC;
GRANT SELECT ON @extschema@.shape_views TO PUBLIC;

CREATE FUNCTION @extschema@._shape_target_writes(migration_id integer)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_shape_target_writes' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._shape_target_writes(integer) IS
    'internal: lock both tables of a migration ROW EXCLUSIVE (authority first), then tell whether the target is the write authority; callers must be allowed to write both tables';

-- The SQL text of one write of a shape view's row into one table: the
-- statement that writes "dst" from the view's row (NEW or OLD) in the shape
-- of table "own", returning the row written in the view's shape INTO the
-- record named by p_into.
CREATE FUNCTION @extschema@._shape_write_sql(m @extschema@.migrations, p_own regclass, p_dst regclass,
                                             p_op text, p_keyless boolean)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_own_is_legacy boolean := p_own OPERATOR(pg_catalog.=) m.legacy;
    v_okey text[] := CASE WHEN v_own_is_legacy THEN m.legacy_key ELSE m.target_key END;
    v_dkey text[] := CASE WHEN p_dst OPERATOR(pg_catalog.=) m.legacy THEN m.legacy_key ELSE m.target_key END;
    v_to_dst text := CASE WHEN p_dst OPERATOR(pg_catalog.=) m.target THEN 'forward' ELSE 'backward' END;
    v_to_own text := CASE WHEN v_own_is_legacy THEN 'backward' ELSE 'forward' END;
    v_n integer;
    v_always boolean;
    v_cols text;
    v_vals text;
    v_where text;
    v_ret text;
    v_outer text;
    v_new_row text;
    v_old_row text;
    v_keep text;
    v_alias text;
    v_ucols text;       -- UPDATE: the columns it may set (no GENERATED ALWAYS identity)
    v_always_chk text;  -- UPDATE: a change of a GENERATED ALWAYS identity column
BEGIN
    -- the view's row as a one-row relation in the own table's column names
    SELECT pg_catalog.count(*)::integer,
           pg_catalog.string_agg(pg_catalog.format('$%s AS %I', c.n, c.attname), ', ' ORDER BY c.n),
           pg_catalog.string_agg(pg_catalog.format('$%s AS %I', c.n OPERATOR(pg_catalog.+) c.total, c.attname), ', ' ORDER BY c.n),
           pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.n)
      INTO v_n, v_new_row, v_old_row, v_ret
      FROM @extschema@._shape_columns(m.id, p_own, NULL) c;

    IF p_dst OPERATOR(pg_catalog.=) p_own THEN
        -- the view's own table: the row as it is
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.n),
               pg_catalog.string_agg(pg_catalog.format('$%s', c.n), ', ' ORDER BY c.n),
               pg_catalog.bool_or(c.attidentity OPERATOR(pg_catalog.=) 'a'),
               -- UPDATE writes only the columns the statement changed: the
               -- view's row may come from the other table, through mappings
               -- that need not give back exactly what this table holds
               pg_catalog.string_agg(pg_catalog.format('CASE WHEN $%s THEN $%s ELSE %I END',
                                                       c.n OPERATOR(pg_catalog.+) (2 OPERATOR(pg_catalog.*) v_n), c.n, c.attname),
                                     ', ' ORDER BY c.n)
                   FILTER (WHERE c.attidentity OPERATOR(pg_catalog.<>) 'a'),
               pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.n)
                   FILTER (WHERE c.attidentity OPERATOR(pg_catalog.<>) 'a'),
               pg_catalog.string_agg(pg_catalog.format('$%s', c.n OPERATOR(pg_catalog.+) (2 OPERATOR(pg_catalog.*) v_n)),
                                     ' OR ' ORDER BY c.n)
                   FILTER (WHERE c.attidentity OPERATOR(pg_catalog.=) 'a')
          INTO v_cols, v_vals, v_always, v_keep, v_ucols, v_always_chk
          FROM @extschema@._shape_columns(m.id, p_own, NULL) c
         WHERE c.attgenerated OPERATOR(pg_catalog.=) ''
           AND NOT (p_keyless AND c.attname::text OPERATOR(pg_catalog.=) ANY (v_okey));
        SELECT pg_catalog.string_agg(pg_catalog.format('%I OPERATOR(pg_catalog.=) $%s', c.attname, c.n OPERATOR(pg_catalog.+) v_n), ' AND ')
          INTO v_where
          FROM @extschema@._shape_columns(m.id, p_own, NULL) c
         WHERE c.attname::text OPERATOR(pg_catalog.=) ANY (v_okey);
        IF p_op OPERATOR(pg_catalog.=) 'INSERT' THEN
            RETURN pg_catalog.format('INSERT INTO %s (%s)%s VALUES (%s) RETURNING %s',
                p_own, v_cols, CASE WHEN v_always THEN ' OVERRIDING SYSTEM VALUE' ELSE '' END, v_vals, v_ret);
        ELSIF p_op OPERATOR(pg_catalog.=) 'UPDATE' THEN
            RETURN pg_catalog.format('UPDATE %s SET (%s) = ROW(%s) WHERE %s RETURNING %s',
                                     p_own, v_ucols, v_keep, v_where, v_ret);
        ELSIF p_op OPERATOR(pg_catalog.=) 'UPDATE NO RETURNING' THEN
            RETURN pg_catalog.format('UPDATE %s SET (%s) = ROW(%s) WHERE %s',
                                     p_own, v_ucols, v_keep, v_where);
        ELSIF p_op OPERATOR(pg_catalog.=) 'CHECK' THEN
            RETURN COALESCE('SELECT ' OPERATOR(pg_catalog.||) v_always_chk, '');
        ELSE
            RETURN pg_catalog.format('DELETE FROM %s WHERE %s', p_own, v_where);
        END IF;
    END IF;

    -- the other table: its mapped columns computed from the view's row
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.attnum),
           pg_catalog.string_agg(c.expr, ', ' ORDER BY c.attnum),
           pg_catalog.bool_or(c.attidentity OPERATOR(pg_catalog.=) 'a'),
           -- UPDATE: a column changes only when its mapped value changed
           pg_catalog.string_agg(pg_catalog.format(
               'CASE WHEN softmig_n.softmig_%s::text IS NOT DISTINCT FROM softmig_o.softmig_%s::text THEN %I ELSE softmig_n.softmig_%s END',
               c.attnum, c.attnum, c.attname, c.attnum), ', ' ORDER BY c.attnum)
               FILTER (WHERE c.attidentity OPERATOR(pg_catalog.<>) 'a'),
           pg_catalog.string_agg(pg_catalog.format('softmig_%s', c.attnum), ', ' ORDER BY c.attnum),
           pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.attnum)
               FILTER (WHERE c.attidentity OPERATOR(pg_catalog.<>) 'a'),
           pg_catalog.string_agg(pg_catalog.format('softmig_n.softmig_%s::text IS DISTINCT FROM softmig_o.softmig_%s::text',
                                                   c.attnum, c.attnum), ' OR ' ORDER BY c.attnum)
               FILTER (WHERE c.attidentity OPERATOR(pg_catalog.=) 'a'),
           -- the destination's key, matched against the old row's mapped key
           pg_catalog.string_agg(pg_catalog.format('%I OPERATOR(pg_catalog.=) softmig_o.softmig_%s', c.attname, c.attnum),
                                 ' AND ' ORDER BY c.attnum)
               FILTER (WHERE c.attname::text OPERATOR(pg_catalog.=) ANY (v_dkey))
      INTO v_cols, v_vals, v_always, v_keep, v_alias, v_ucols, v_always_chk, v_where
      FROM @extschema@._shape_columns(m.id, p_dst, v_to_dst) c
     WHERE c.expr IS NOT NULL AND c.attgenerated OPERATOR(pg_catalog.=) ''
       AND NOT (p_keyless AND c.attname::text OPERATOR(pg_catalog.=) ANY (v_dkey));
    -- the row written, mapped back into the view's shape: what the routed
    -- view shows for a row of the other table
    SELECT l.inner_list, l.outer_list INTO v_ret, v_outer
      FROM @extschema@._shape_lists(m.id, p_own, v_to_own) l;

    IF p_op OPERATOR(pg_catalog.=) 'INSERT' THEN
        RETURN pg_catalog.format('WITH softmig_w AS (INSERT INTO %s (%s)%s SELECT %s FROM (SELECT %s) AS softmig_row RETURNING %s) SELECT %s FROM softmig_w',
            p_dst, v_cols, CASE WHEN v_always THEN ' OVERRIDING SYSTEM VALUE' ELSE '' END, v_vals, v_new_row, v_ret, v_outer);
    ELSIF p_op OPERATOR(pg_catalog.=) ANY (ARRAY['UPDATE', 'UPDATE NO RETURNING']) THEN
        v_cols := pg_catalog.format('UPDATE %s SET (%s) = ROW(%s)'
                                    ' FROM (SELECT %s FROM (SELECT %s) AS softmig_row) AS softmig_n(%s),'
                                    ' (SELECT %s FROM (SELECT %s) AS softmig_row) AS softmig_o(%s)'
                                    ' WHERE %s',
            p_dst, v_ucols, v_keep, v_vals, v_new_row, v_alias, v_vals, v_old_row, v_alias, v_where);
        IF p_op OPERATOR(pg_catalog.=) 'UPDATE NO RETURNING' THEN
            RETURN v_cols;
        END IF;
        RETURN pg_catalog.format('WITH softmig_w AS (%s RETURNING %s) SELECT %s FROM softmig_w',
                                 v_cols, v_ret, v_outer);
    ELSIF p_op OPERATOR(pg_catalog.=) 'CHECK' THEN
        RETURN CASE WHEN v_always_chk IS NULL THEN '' ELSE
            pg_catalog.format('SELECT %s FROM (SELECT %s FROM (SELECT %s) AS softmig_row) AS softmig_n(%s),'
                              ' (SELECT %s FROM (SELECT %s) AS softmig_row) AS softmig_o(%s)',
                              v_always_chk, v_vals, v_new_row, v_alias, v_vals, v_old_row, v_alias) END;
    ELSE
        RETURN pg_catalog.format('DELETE FROM %s USING (SELECT %s FROM (SELECT %s) AS softmig_row) AS softmig_o(%s) WHERE %s',
            p_dst, v_vals, v_old_row, v_alias, v_where);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._shape_write_sql(@extschema@.migrations, regclass, regclass, text, boolean) IS
    'internal: the parameterized statement softmig._shape_write_trigger runs (kept plan) to write one shape view row into one table of the migration';

-- The set-based form of a shape view's INSERT into table "dst": one
-- INSERT ... SELECT over the rows the view's statement collected (the
-- ephemeral relation softmig_shape_rows, in the view's shape = table "own"),
-- the keyed rows (p_keyless false: every key column of "own" set) or the
-- keyless ones (their keys drawn from dst's generators).  The same columns
-- and mappings as _shape_write_sql's INSERT for one row.
CREATE FUNCTION @extschema@._shape_bulk_sql(m @extschema@.migrations, p_own regclass, p_dst regclass,
                                            p_keyless boolean)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_okey text[] := CASE WHEN p_own OPERATOR(pg_catalog.=) m.legacy THEN m.legacy_key ELSE m.target_key END;
    v_dkey text[] := CASE WHEN p_dst OPERATOR(pg_catalog.=) m.legacy THEN m.legacy_key ELSE m.target_key END;
    v_to_dst text := CASE WHEN p_dst OPERATOR(pg_catalog.=) m.target THEN 'forward' ELSE 'backward' END;
    v_cols text;
    v_vals text;
    v_always boolean;
    v_keyed text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('softmig_row.%I IS NOT NULL', k), ' AND ') INTO v_keyed
      FROM pg_catalog.unnest(v_okey) k;
    IF p_dst OPERATOR(pg_catalog.=) p_own THEN
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.attnum),
               pg_catalog.string_agg(pg_catalog.format('softmig_row.%I', c.attname), ', ' ORDER BY c.attnum),
               pg_catalog.bool_or(c.attidentity OPERATOR(pg_catalog.=) 'a')
          INTO v_cols, v_vals, v_always
          FROM @extschema@._shape_columns(m.id, p_own, NULL) c
         WHERE c.attgenerated OPERATOR(pg_catalog.=) ''
           AND NOT (p_keyless AND c.attname::text OPERATOR(pg_catalog.=) ANY (v_okey));
    ELSE
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.attnum),
               pg_catalog.string_agg(c.expr, ', ' ORDER BY c.attnum),
               pg_catalog.bool_or(c.attidentity OPERATOR(pg_catalog.=) 'a')
          INTO v_cols, v_vals, v_always
          FROM @extschema@._shape_columns(m.id, p_dst, v_to_dst) c
         WHERE c.expr IS NOT NULL AND c.attgenerated OPERATOR(pg_catalog.=) ''
           AND NOT (p_keyless AND c.attname::text OPERATOR(pg_catalog.=) ANY (v_dkey));
    END IF;
    RETURN pg_catalog.format('INSERT INTO %s (%s)%s SELECT %s FROM softmig_shape_rows AS softmig_row WHERE %s(%s)',
        p_dst, v_cols, CASE WHEN v_always AND NOT p_keyless THEN ' OVERRIDING SYSTEM VALUE' ELSE '' END, v_vals,
        CASE WHEN p_keyless THEN 'NOT ' ELSE '' END, v_keyed);
END $$;
COMMENT ON FUNCTION @extschema@._shape_bulk_sql(@extschema@.migrations, regclass, regclass, boolean) IS
    'internal: the INSERT ... SELECT that writes the rows one statement inserted through a shape view into one table of the migration, set-based';

CREATE FUNCTION @extschema@._shape_write_trigger()
RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_shape_write_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._shape_write_trigger() IS
    'internal: the INSTEAD OF row trigger of a shape view: collects the rows of an INSERT without RETURNING for _shape_flush_trigger, writes every other row to the write authority of the moment with kept plans (its arguments), as the view''s owner';

CREATE FUNCTION @extschema@._shape_flush_trigger()
RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_shape_flush_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._shape_flush_trigger() IS
    'internal: the AFTER INSERT statement trigger of a shape view: writes the rows its INSERT collected to the write authority of the moment, set-based, as the view''s owner';

-- One shape view: the routed view, owned by the tables' owner and with its
-- rights, and its INSTEAD OF trigger.
CREATE FUNCTION @extschema@._create_shape_view(m @extschema@.migrations, p_schema name, p_shape @extschema@.side,
                                               p_owner name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_own regclass := CASE WHEN p_shape OPERATOR(pg_catalog.=) 'legacy' THEN m.legacy ELSE m.target END;
    v_okey text[] := CASE WHEN p_shape OPERATOR(pg_catalog.=) 'legacy' THEN m.legacy_key ELSE m.target_key END;
    v_relname name := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) v_own);
    v_view text := pg_catalog.format('%I.%I', p_schema, v_relname);
    v_keys text := (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(k), ', ') FROM pg_catalog.unnest(v_okey) k);
    v_args text := '';
    v_dst regclass;
    v_op text;
    r record;
BEGIN
    -- the routed view (checks the schema, the name and CREATE on the schema)
    PERFORM @extschema@._create_read_view(m.name, v_view, p_shape);
    -- the owner's rights, not the invoker's: a role needs rights on the view only
    EXECUTE pg_catalog.format('ALTER VIEW %s RESET (security_invoker)', v_view);
    EXECUTE pg_catalog.format('ALTER VIEW %s OWNER TO %I', v_view, p_owner);
    -- defaults of the view's table, except the key: a NULL key is drawn
    -- from the generator of whichever table is the authority
    FOR r IN SELECT a.attname, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) AS expr
               FROM pg_catalog.pg_attribute a
               JOIN pg_catalog.pg_attrdef ad ON ad.adrelid OPERATOR(pg_catalog.=) a.attrelid AND ad.adnum OPERATOR(pg_catalog.=) a.attnum
              WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attgenerated OPERATOR(pg_catalog.=) ''
                AND NOT a.attisdropped AND a.attname::text OPERATOR(pg_catalog.<>) ALL (v_okey) LOOP
        EXECUTE pg_catalog.format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s', v_view, r.attname, r.expr);
    END LOOP;

    -- the row trigger's arguments: the migration, then per table (legacy,
    -- target) INSERT with key, INSERT without, UPDATE, the UPDATE's
    -- GENERATED ALWAYS check, DELETE, UPDATE without RETURNING; then the
    -- view's key columns
    FOREACH v_dst IN ARRAY ARRAY[m.legacy, m.target]::pg_catalog.regclass[] LOOP
        FOREACH v_op IN ARRAY ARRAY['INSERT', 'INSERT keyless', 'UPDATE', 'CHECK', 'DELETE', 'UPDATE NO RETURNING'] LOOP
            v_args := v_args OPERATOR(pg_catalog.||) ', ' OPERATOR(pg_catalog.||) pg_catalog.quote_literal(
                @extschema@._shape_write_sql(m, v_own, v_dst,
                                             CASE WHEN v_op OPERATOR(pg_catalog.=) 'INSERT keyless' THEN 'INSERT' ELSE v_op END,
                                             v_op OPERATOR(pg_catalog.=) 'INSERT keyless'));
        END LOOP;
    END LOOP;
    -- rows are written one by one (kept plans, in C), except those of an
    -- INSERT without RETURNING: collected, and written set-based at its end
    EXECUTE pg_catalog.format('CREATE TRIGGER softmig_shape_write INSTEAD OF INSERT OR UPDATE OR DELETE ON %s'
                              ' FOR EACH ROW EXECUTE FUNCTION @extschema@._shape_write_trigger(%s%s, %s)',
                              v_view, m.id, v_args, v_keys);
    EXECUTE pg_catalog.format('CREATE TRIGGER softmig_shape_flush AFTER INSERT ON %s'
                              ' FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._shape_flush_trigger(%s, %L, %L, %L, %L, %s)',
                              v_view, m.id,
                              @extschema@._shape_bulk_sql(m, v_own, m.legacy, false),
                              @extschema@._shape_bulk_sql(m, v_own, m.legacy, true),
                              @extschema@._shape_bulk_sql(m, v_own, m.target, false),
                              @extschema@._shape_bulk_sql(m, v_own, m.target, true),
                              v_keys);
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', v_view);
    EXECUTE pg_catalog.format('COMMENT ON VIEW %s IS %L', v_view,
        pg_catalog.format('softmig shape view of migration "%s" in the %s shape: reads from the caller''s read source, writes to the write authority (softmig.create_shape_views)',
                          m.name, p_shape));

    INSERT INTO @extschema@.shape_views (view_name, migration_id, shape, created_by)
    VALUES (v_view::pg_catalog.regclass, m.id, p_shape, @extschema@._actor());
END $$;
COMMENT ON FUNCTION @extschema@._create_shape_view(@extschema@.migrations, name, @extschema@.side, name) IS
    'internal: create one shape view and its INSTEAD OF and AFTER INSERT triggers';

CREATE FUNCTION @extschema@._create_shape_views(name text, legacy_schema name, new_schema name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_owner name;
    v_towner name;
BEGIN
    PERFORM @extschema@._refuse_one_to_many(m.id, 'shape views');
    PERFORM @extschema@._refuse_split_member(m.id, 'shape views');
    IF legacy_schema IS NULL OR new_schema IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'legacy_schema and new_schema must not be null';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.shape_views s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already has shape views', m.name),
            HINT = 'softmig.drop_shape_views drops them.';
    END IF;
    IF legacy_schema OPERATOR(pg_catalog.=) new_schema
       AND (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) m.legacy)
           OPERATOR(pg_catalog.=) (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) m.target) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'legacy_schema and new_schema must differ when both tables have the same name';
    END IF;
    -- the views and their writes run as the tables' owner: one role
    SELECT pg_catalog.pg_get_userbyid(c.relowner) INTO v_owner FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) m.legacy;
    SELECT pg_catalog.pg_get_userbyid(c.relowner) INTO v_towner FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) m.target;
    IF v_owner OPERATOR(pg_catalog.<>) v_towner THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('tables %s and %s of migration "%s" have different owners', m.legacy, m.target, m.name),
            DETAIL = 'A shape view writes either table as its owner and runs the mappings as that role; it must own both.',
            HINT = 'Give both tables the same owner.';
    END IF;
    -- row security would be bypassed by the owner's rights
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                WHERE c.oid OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[]) AND c.relrowsecurity) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('a table of migration "%s" has row level security enabled', m.name),
            DETAIL = 'A shape view reads and writes with its owner''s rights, so a role with rights on the view would bypass the policies.',
            HINT = 'Use the tables (or views of your own with security_invoker) for roles subject to row level security.';
    END IF;
    PERFORM @extschema@._create_shape_view(m, legacy_schema, 'legacy', v_owner);
    PERFORM @extschema@._create_shape_view(m, new_schema, 'new', v_owner);
    PERFORM @extschema@._history(m.id, 'create_shape_views', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('views', (SELECT pg_catalog.jsonb_agg(s.view_name::text ORDER BY s.shape)
                                                  FROM @extschema@.shape_views s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id)));
END $$;
COMMENT ON FUNCTION @extschema@._create_shape_views(text, name, name) IS
    'internal: implementation of softmig.create_shape_views';

CREATE FUNCTION @extschema@.create_shape_views(name text, legacy_schema name, new_schema name)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.create_shape_views(text, name, name) IS
    'create legacy_schema.<legacy table> and new_schema.<target table>: views in each table''s shape that read from the caller''s read source and write to the write authority of the moment; owners of both tables only';

CREATE FUNCTION @extschema@._drop_shape_views(name text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    r record;
    v_views jsonb;
BEGIN
    SELECT pg_catalog.jsonb_agg(s.view_name::text ORDER BY s.shape) INTO v_views
      FROM @extschema@.shape_views s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id;
    IF v_views IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" has no shape views', m.name);
    END IF;
    FOR r IN SELECT s.view_name FROM @extschema@.shape_views s
              WHERE s.migration_id OPERATOR(pg_catalog.=) m.id ORDER BY s.shape LOOP
        -- RESTRICT: a view of the application's own on a shape view stays an error
        EXECUTE pg_catalog.format('DROP VIEW IF EXISTS %s', r.view_name);
        DELETE FROM @extschema@.read_views v WHERE v.view_name OPERATOR(pg_catalog.=) r.view_name;
    END LOOP;
    DELETE FROM @extschema@.shape_views s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id;
    PERFORM @extschema@._history(m.id, 'drop_shape_views', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('views', v_views));
END $$;
COMMENT ON FUNCTION @extschema@._drop_shape_views(text) IS
    'internal: implementation of softmig.drop_shape_views';

CREATE FUNCTION @extschema@.drop_shape_views(name text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_shape_views(text) IS
    'drop the shape views of a migration; owners of both tables only';

REVOKE ALL ON FUNCTION
    @extschema@._shape_write_sql(@extschema@.migrations, regclass, regclass, text, boolean),
    @extschema@._shape_bulk_sql(@extschema@.migrations, regclass, regclass, boolean),
    @extschema@._shape_write_trigger(),
    @extschema@._shape_flush_trigger(),
    @extschema@._create_shape_view(@extschema@.migrations, name, @extschema@.side, name),
    @extschema@._create_shape_views(text, name, name),
    @extschema@._drop_shape_views(text)
FROM PUBLIC;

-------------------------------------------------------------------------------
-- Groups: migrations that change state together (doc/shapes.md)
-- 28_group_catalog.sql, 52_groups.sql; _set_state checks guards and the
-- envelope through _state_guards and _envelope_guard (30_internal.sql) and
-- refuses to move a member alone; _drop_migration refuses a member.
-------------------------------------------------------------------------------
CREATE SEQUENCE @extschema@.groups_id_seq AS integer;

CREATE TABLE @extschema@.groups (
    id         integer PRIMARY KEY
               DEFAULT pg_catalog.nextval('@extschema@.groups_id_seq'::pg_catalog.regclass),
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by name NOT NULL
);
ALTER SEQUENCE @extschema@.groups_id_seq OWNED BY @extschema@.groups.id;
COMMENT ON TABLE @extschema@.groups IS
    'softmig: one row per group of migrations that change state together (one entity made of several table pairs)';

CREATE TABLE @extschema@.group_members (
    group_id     integer NOT NULL REFERENCES @extschema@.groups (id) ON DELETE CASCADE,
    migration_id integer NOT NULL UNIQUE REFERENCES @extschema@.migrations (id),
    ordinal      integer NOT NULL,      -- position in create_group's members array, from 1
    PRIMARY KEY (group_id, migration_id),
    UNIQUE (group_id, ordinal)
);
COMMENT ON TABLE @extschema@.group_members IS
    'softmig: the migrations of each group; a migration belongs to at most one group';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.groups', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.groups_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.group_members', '');
REVOKE ALL ON @extschema@.groups, @extschema@.group_members FROM PUBLIC;
GRANT SELECT ON @extschema@.groups, @extschema@.group_members TO PUBLIC;

CREATE FUNCTION @extschema@._state_guards(m @extschema@.migrations, p_to @extschema@.state, p_detail jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_legal text;
    v_keys jsonb := '[]';
BEGIN
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

    -- Guards (force => true with a reason overrides them; recorded in history;
    -- a cross-database switch checked them before it fenced, guards_checked)
    IF NOT COALESCE((p_detail OPERATOR(pg_catalog.->>) 'force')::boolean, false)
       AND NOT COALESCE((p_detail OPERATOR(pg_catalog.->>) 'guards_checked')::boolean, false) THEN
        IF m.state OPERATOR(@extschema@.=) 'mirrored' AND p_to OPERATOR(@extschema@.=) 'new_write'
           AND NOT @extschema@._backfill_done(m.id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: the backfill is not done', m.name),
                DETAIL = 'The target must hold every legacy row before it becomes the write authority.',
                HINT = pg_catalog.format('CALL softmig.backfill(%L) first, or pass force => true with a reason.', m.name);
        END IF;
        -- clean structural parity, no failing error-severity invariant (75_observe.sql)
        IF m.state OPERATOR(@extschema@.=) 'mirrored' AND p_to OPERATOR(@extschema@.=) 'new_write' THEN
            PERFORM @extschema@._require_semantic_health(m.id);
        END IF;
        -- read paths: no registered reader on legacy, no unregistered reader seen on it recently
        IF m.state OPERATOR(@extschema@.=) 'new_read' AND p_to OPERATOR(@extschema@.=) 'cutover' THEN
            PERFORM @extschema@._readpath_guard(m.id);
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._state_guards(@extschema@.migrations, @extschema@.state, jsonb) IS
    'internal: raise 55000 unless moving a migration to a state is legal and its guards pass (force or guards_checked in p_detail skip the guards); takes no table lock';

CREATE FUNCTION @extschema@._envelope_guard(m @extschema@.migrations, p_to @extschema@.state)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The rollback envelope, checked after the locks so a racing first
    -- new-only write is either already recorded or not yet projected.
    IF (m.state OPERATOR(@extschema@.=) 'new_write' AND p_to OPERATOR(@extschema@.=) 'mirrored')
       OR (m.state OPERATOR(@extschema@.=) 'new_read' AND p_to OPERATOR(@extschema@.=) 'new_write') THEN
        IF NOT @extschema@._envelope_open_now(m.id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot roll migration "%s" back from %s to %s: the rollback envelope is closed',
                                            m.name, m.state, p_to),
                DETAIL = COALESCE((SELECT pg_catalog.format('Closed because: %s (first entity %s).', e.reason, COALESCE(e.first_key::text, 'unknown'))
                                     FROM @extschema@.envelope e WHERE e.migration_id OPERATOR(pg_catalog.=) m.id),
                                  'It closed while this call waited for the tables.'),
                HINT = 'Legacy cannot represent state the target already holds. Fix forward instead: quarantine the affected entities (softmig.quarantine), repair them on the target, or stop a broken projection with softmig.shadow_disable.';
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._envelope_guard(@extschema@.migrations, @extschema@.state) IS
    'internal: raise 55000 if a rollback across the authority switch meets a closed envelope; called with both tables locked';


-------------------------------------------------------------------------------
-- Groups: one entity made of several migrations that change state together
-- (catalog in 28_group_catalog.sql, doc/shapes.md)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._group(p_name text) RETURNS @extschema@.groups
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g @extschema@.groups;
BEGIN
    SELECT * INTO g FROM @extschema@.groups WHERE name OPERATOR(pg_catalog.=) p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('group "%s" does not exist', p_name),
            HINT = 'softmig.groups lists the groups of this database.';
    END IF;
    RETURN g;
END $$;
COMMENT ON FUNCTION @extschema@._group(text) IS
    'internal: the catalog row of a group by name, 42704 if unknown';

CREATE FUNCTION @extschema@._group_deferred_fk_check(p_ids integer[]) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fk record;
BEGIN
    -- a foreign key from one member table to another on the same side that
    -- is checked at commit (INITIALLY DEFERRED) lets the application write a
    -- child before its parent; its projection could not follow (doc/shapes.md,
    -- "Parent and child members")
    FOR v_fk IN
        WITH t AS (SELECT m.legacy::pg_catalog.oid AS rel, 'legacy' AS side FROM @extschema@.migrations m
                    WHERE m.id OPERATOR(pg_catalog.=) ANY (p_ids)
                   UNION
                   SELECT m.target::pg_catalog.oid, 'target' FROM @extschema@.migrations m
                    WHERE m.id OPERATOR(pg_catalog.=) ANY (p_ids))
        SELECT c.conname, c.conrelid::pg_catalog.regclass AS child, c.confrelid::pg_catalog.regclass AS parent
          FROM pg_catalog.pg_constraint c
          JOIN t tc ON tc.rel OPERATOR(pg_catalog.=) c.conrelid
          JOIN t tp ON tp.rel OPERATOR(pg_catalog.=) c.confrelid AND tp.side OPERATOR(pg_catalog.=) tc.side
         WHERE c.contype OPERATOR(pg_catalog.=) 'f' AND c.condeferred
         ORDER BY 2, 1
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('foreign key "%s" of table %s references member table %s and is INITIALLY DEFERRED',
                                        v_fk.conname, v_fk.child, v_fk.parent),
            DETAIL = 'Each side is written by softmig''s projection in some state, as the table''s owner in a security-restricted operation, where PostgreSQL cannot queue a deferred check.',
            HINT = pg_catalog.format('Make it DEFERRABLE INITIALLY IMMEDIATE (ALTER TABLE %s ALTER CONSTRAINT %I INITIALLY IMMEDIATE); a transaction that writes children first defers the key of the side it writes with SET CONSTRAINTS (doc/shapes.md).',
                                     v_fk.child, v_fk.conname);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._group_deferred_fk_check(integer[]) IS
    'internal: raise 0A000 for an INITIALLY DEFERRED foreign key between the tables of a set of migrations, on the same side';

CREATE FUNCTION @extschema@._create_group(group_name text, members text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ids integer[];
    v_id integer;
    m @extschema@.migrations;
    v_first @extschema@.migrations;
    v_other text;
    v_states text;
    v_gid integer;
BEGIN
    IF pg_catalog.btrim(group_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'group name must not be empty';
    END IF;
    IF pg_catalog.array_position(members, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'members must not contain null';
    END IF;
    IF COALESCE(pg_catalog.cardinality(members), 0) OPERATOR(pg_catalog.<) 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('group "%s" needs at least two members', group_name),
            DETAIL = pg_catalog.format('Given: %s.', COALESCE(members::text, '{}'));
    END IF;
    IF (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(members) x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(members) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('group "%s" names a member more than once', group_name),
            DETAIL = pg_catalog.format('Given: %s.', members::text);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.groups g WHERE g.name OPERATOR(pg_catalog.=) group_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('group "%s" already exists', group_name);
    END IF;

    -- lock the members' catalog rows in id order (as state changes do), so
    -- none of them changes state or joins another group meanwhile
    SELECT pg_catalog.array_agg(x.id ORDER BY x.id) INTO v_ids
      FROM @extschema@.migrations x WHERE x.name OPERATOR(pg_catalog.=) ANY (members);
    FOREACH v_id IN ARRAY v_ids LOOP
        m := @extschema@._lock_migration(v_id);
        SELECT g.name INTO v_other
          FROM @extschema@.group_members gm JOIN @extschema@.groups g ON g.id OPERATOR(pg_catalog.=) gm.group_id
         WHERE gm.migration_id OPERATOR(pg_catalog.=) v_id;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('migration "%s" is already a member of group "%s"', m.name, v_other),
                HINT = 'A migration belongs to at most one group.';
        END IF;
        IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) v_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
                MESSAGE = pg_catalog.format('migration "%s" spans two databases and cannot be a member of a group', m.name);
        END IF;
        IF m.options OPERATOR(pg_catalog.->>) 'cardinality' OPERATOR(pg_catalog.=) 'one_to_many' THEN
            RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
                MESSAGE = pg_catalog.format('migration "%s" is one-to-many and cannot be a member of a group', m.name),
                HINT = 'Advance and roll back a one-to-many migration on its own (doc/shapes.md, "One-to-many limits").';
        END IF;
    END LOOP;

    SELECT pg_catalog.string_agg(pg_catalog.format('%s: %s', x.name, x.state), ', ' ORDER BY pg_catalog.array_position(members, x.name))
      INTO v_states
      FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) ANY (v_ids);
    IF (SELECT pg_catalog.count(DISTINCT x.state::text) FROM @extschema@.migrations x
         WHERE x.id OPERATOR(pg_catalog.=) ANY (v_ids)) OPERATOR(pg_catalog.>) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('the members of group "%s" are not in the same state', group_name),
            DETAIL = pg_catalog.format('States: %s.', v_states),
            HINT = 'Advance or roll back the members one by one until they are in the same state, then create the group.';
    END IF;

    PERFORM @extschema@._group_deferred_fk_check(v_ids);
    PERFORM @extschema@._split_group_check(v_ids, group_name);   -- 53_split.sql

    INSERT INTO @extschema@.groups (name, created_by) VALUES (group_name, @extschema@._actor())
    RETURNING id INTO v_gid;
    INSERT INTO @extschema@.group_members (group_id, migration_id, ordinal)
    SELECT v_gid, x.id, pg_catalog.array_position(members, x.name)
      FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) ANY (v_ids);
    PERFORM @extschema@._history(x.id, 'create_group', x.state, x.state, NULL,
                                 pg_catalog.jsonb_build_object('group', group_name, 'members', pg_catalog.to_jsonb(members))),
            @extschema@._invalidate(x.legacy, x.target)   -- the write triggers learn the group
       FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) ANY (v_ids)
      ORDER BY pg_catalog.array_position(members, x.name);   -- history in member order
END $$;
COMMENT ON FUNCTION @extschema@._create_group(text, text[]) IS 'internal: implementation of softmig.create_group';

CREATE FUNCTION @extschema@.create_group(group_name text, members text[])
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.create_group(text, text[]) IS
    'make migrations in the same state one group that changes state only together; owners of every member''s tables only';

CREATE FUNCTION @extschema@._drop_group(group_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g @extschema@.groups := @extschema@._group(group_name);
BEGIN
    -- waits for a state change of the group in progress
    PERFORM 1 FROM @extschema@.groups x WHERE x.id OPERATOR(pg_catalog.=) g.id FOR UPDATE;
    PERFORM @extschema@._history(m.id, 'drop_group', m.state, m.state, NULL,
                                 pg_catalog.jsonb_build_object('group', g.name)),
            @extschema@._invalidate(m.legacy, m.target)
       FROM @extschema@.group_members gm JOIN @extschema@.migrations m ON m.id OPERATOR(pg_catalog.=) gm.migration_id
      WHERE gm.group_id OPERATOR(pg_catalog.=) g.id
      ORDER BY gm.ordinal;
    DELETE FROM @extschema@.groups WHERE id OPERATOR(pg_catalog.=) g.id;
END $$;
COMMENT ON FUNCTION @extschema@._drop_group(text) IS 'internal: implementation of softmig.drop_group';

CREATE FUNCTION @extschema@.drop_group(group_name text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_group(text) IS
    'dissolve a group (its migrations and their states stay; each then changes state on its own); owners of every member''s tables only';

CREATE FUNCTION @extschema@._lock_group_tables(g @extschema@.groups, p_tables regclass[], p_mode text,
                                               p_from @extschema@.state, p_to @extschema@.state)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout FROM CURRENT
AS $$
DECLARE
    v_timeout text := COALESCE((SELECT m.options OPERATOR(pg_catalog.->>) 'lock_timeout'
                                  FROM @extschema@.group_members gm JOIN @extschema@.migrations m ON m.id OPERATOR(pg_catalog.=) gm.migration_id
                                 WHERE gm.group_id OPERATOR(pg_catalog.=) g.id ORDER BY gm.ordinal LIMIT 1), '5s');
    v_deadline timestamptz;
    v_wait regclass;
    v_cur regclass;
    v_blocking boolean := false;
    t regclass;
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', v_timeout, true);
    v_deadline := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)
                  (interval '1 millisecond' OPERATOR(pg_catalog.*)
                   (SELECT s.setting::float8 FROM pg_catalog.pg_settings s WHERE s.name OPERATOR(pg_catalog.=) 'lock_timeout'));
    -- All or none, never waiting while holding one: the members' writers
    -- lock their tables in whatever order the application writes them, so
    -- no fixed order of ours could keep them from deadlocking with us.  Try
    -- every table without waiting, in oid order; when one is taken, give
    -- back the ones we got (the subtransaction), wait for that one alone,
    -- and try again.
    LOOP
        BEGIN
            IF v_wait IS NOT NULL THEN
                v_cur := v_wait;
                v_blocking := true;
                EXECUTE pg_catalog.format('LOCK TABLE %s IN %s MODE', v_wait, p_mode);
                v_blocking := false;
            END IF;
            FOREACH t IN ARRAY p_tables LOOP
                v_cur := t;
                EXECUTE pg_catalog.format('LOCK TABLE %s IN %s MODE NOWAIT', t, p_mode);
            END LOOP;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            IF v_blocking OR (pg_catalog.current_setting('lock_timeout') OPERATOR(pg_catalog.<>) '0'
                              AND pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) v_deadline) THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = pg_catalog.format('could not lock the tables of group "%s" to move it from %s to %s',
                                                g.name, p_from, p_to),
                    DETAIL = pg_catalog.format('Writers kept a conflicting lock on table %s for longer than lock_timeout (%s).', v_cur, v_timeout),
                    HINT = 'Retry the call; nothing was changed. Long transactions writing a member''s tables delay state changes; option lock_timeout of the group''s first member sets how long to wait.';
            END IF;
            v_wait := v_cur;
        END;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._lock_group_tables(@extschema@.groups, regclass[], text, @extschema@.state, @extschema@.state) IS
    'internal: lock every table of a group in one mode, all or none and never waiting while holding one, within lock_timeout';

CREATE FUNCTION @extschema@._group_fk_guard(g @extschema@.groups, p_ids integer[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fk record;
BEGIN
    -- A foreign key between two members' targets would refuse the mirror of
    -- every child written while its parent is not backfilled yet: the
    -- application's write would fail.
    FOR v_fk IN
        SELECT c.conname, c.conrelid::pg_catalog.regclass AS child, c.confrelid::pg_catalog.regclass AS parent,
               mp.legacy AS parent_legacy, mp.name AS parent_member
          FROM pg_catalog.pg_constraint c
          JOIN @extschema@.migrations mc ON mc.target::pg_catalog.oid OPERATOR(pg_catalog.=) c.conrelid
          JOIN @extschema@.migrations mp ON mp.target::pg_catalog.oid OPERATOR(pg_catalog.=) c.confrelid
         WHERE c.contype OPERATOR(pg_catalog.=) 'f'
           AND mc.id OPERATOR(pg_catalog.=) ANY (p_ids) AND mp.id OPERATOR(pg_catalog.=) ANY (p_ids)
           AND mc.id OPERATOR(pg_catalog.<>) mp.id
         ORDER BY 2, 1
    LOOP
        IF @extschema@._has_rows(v_fk.parent_legacy) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance group "%s" to mirrored: foreign key "%s" of table %s references member table %s, which is not backfilled yet',
                                            g.name, v_fk.conname, v_fk.child, v_fk.parent),
                DETAIL = pg_catalog.format('Until member "%s" is backfilled, mirroring a child of a row that exists only in %s would violate it and fail the application''s write.',
                                           v_fk.parent_member, v_fk.parent_legacy),
                HINT = 'Drop the foreign key, advance the group, backfill the parent member, then the child member, and add the foreign key back (NOT VALID, then VALIDATE CONSTRAINT); or pass force => true with a reason.';
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._group_fk_guard(@extschema@.groups, integer[]) IS
    'internal: raise 55000 if a foreign key between two members'' targets references a member whose legacy table holds rows';

CREATE FUNCTION @extschema@._move_group(group_name text, p_action text, to_state @extschema@.state,
                                        reason text, force boolean)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g @extschema@.groups := @extschema@._group(group_name);
    v_ids integer[];
    v_id integer;
    ms @extschema@.migrations[] := '{}';
    m @extschema@.migrations;
    v_from @extschema@.state;
    v_to @extschema@.state := to_state;
    v_detail jsonb;
    v_tables regclass[];
BEGIN
    IF COALESCE(force, false) THEN
        PERFORM @extschema@._require_nonblank(reason, 'force => true needs a reason',
                                              'The reason is recorded in the history of every member.');
    END IF;
    -- one change of a group at a time, and none while it is dropped
    PERFORM 1 FROM @extschema@.groups x WHERE x.id OPERATOR(pg_catalog.=) g.id FOR UPDATE;
    SELECT pg_catalog.array_agg(gm.migration_id ORDER BY gm.migration_id) INTO v_ids
      FROM @extschema@.group_members gm WHERE gm.group_id OPERATOR(pg_catalog.=) g.id;
    IF v_ids IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('group "%s" does not exist', group_name),
            DETAIL = 'It was dropped while this call waited.';
    END IF;
    -- the members' catalog rows in id order, as create_group takes them
    FOREACH v_id IN ARRAY v_ids LOOP
        ms := ms OPERATOR(pg_catalog.||) @extschema@._lock_migration(v_id);
    END LOOP;
    v_from := ms[1].state;
    IF EXISTS (SELECT 1 FROM pg_catalog.unnest(ms) x WHERE x.state OPERATOR(@extschema@.<>) v_from) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('the members of group "%s" are not in the same state', g.name),
            DETAIL = (SELECT pg_catalog.format('States: %s.', pg_catalog.string_agg(pg_catalog.format('%s: %s', x.name, x.state), ', ' ORDER BY x.name))
                        FROM pg_catalog.unnest(ms) x),
            HINT = 'Drop the group, bring the members to one state one by one, and create it again.';
    END IF;

    IF p_action OPERATOR(pg_catalog.=) 'advance' THEN
        IF v_from OPERATOR(@extschema@.=) 'cutover' THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('group "%s" is already in state cutover', g.name),
                DETAIL = 'cutover is the final state.';
        END IF;
        v_to := COALESCE(v_to, @extschema@._next_state(v_from));
        IF v_to OPERATOR(@extschema@.<=) v_from THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance group "%s" from %s to %s', g.name, v_from, v_to),
                HINT = 'advance_group moves forward one step; use softmig.rollback_group to go back.';
        END IF;
    ELSE
        IF v_from OPERATOR(@extschema@.=) 'cutover' THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('group "%s" is in state cutover and never rolls back', g.name),
                HINT = 'Fix forward on the target tables.';
        END IF;
        IF v_from OPERATOR(@extschema@.=) 'legacy' THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('group "%s" is in state legacy; there is nothing to roll back', g.name);
        END IF;
        v_to := @extschema@._previous_state(v_from);
    END IF;

    v_detail := pg_catalog.jsonb_build_object('group', g.name)
                OPERATOR(pg_catalog.||) CASE WHEN force THEN '{"force": true}'::jsonb ELSE '{}'::jsonb END;
    -- every member's legality and guards before any table lock or change
    FOREACH m IN ARRAY ms LOOP
        PERFORM @extschema@._state_guards(m, v_to, v_detail);
    END LOOP;
    IF v_from OPERATOR(@extschema@.=) 'legacy' AND NOT COALESCE(force, false) THEN
        PERFORM @extschema@._group_fk_guard(g, v_ids);
    END IF;
    -- a key made INITIALLY DEFERRED after create_group, where softmig projects
    IF v_to OPERATOR(@extschema@.<>) ALL (ARRAY['legacy', 'cutover']::@extschema@.state[]) THEN
        PERFORM @extschema@._group_deferred_fk_check(v_ids);
    END IF;

    -- every member's tables, all or none (a move to legacy drops triggers:
    -- ACCESS EXCLUSIVE, as _lock_tables takes it)
    SELECT pg_catalog.array_agg(r::pg_catalog.regclass ORDER BY r) INTO v_tables
      FROM (SELECT x.legacy::pg_catalog.oid AS r FROM pg_catalog.unnest(ms) x
            UNION SELECT x.target::pg_catalog.oid FROM pg_catalog.unnest(ms) x) u;
    PERFORM @extschema@._lock_group_tables(g, v_tables,
        CASE WHEN v_to OPERATOR(@extschema@.=) 'legacy' THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE ROW EXCLUSIVE' END,
        v_from, v_to);
    FOREACH m IN ARRAY ms LOOP
        PERFORM @extschema@._envelope_guard(m, v_to);
    END LOOP;

    FOREACH m IN ARRAY ms LOOP
        PERFORM @extschema@._set_state(m.id, v_to, p_action, reason,
                                       v_detail OPERATOR(pg_catalog.||) '{"guards_checked": true}'::jsonb);
    END LOOP;
    RETURN v_to;
END $$;
COMMENT ON FUNCTION @extschema@._move_group(text, text, @extschema@.state, text, boolean) IS
    'internal: move every member of a group one state forward or back in this transaction, guards of all first, tables locked all or none';

CREATE FUNCTION @extschema@._advance_group(group_name text, to_state @extschema@.state, reason text, force boolean)
RETURNS @extschema@.state
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._move_group(group_name, 'advance', to_state, reason, force)
$$;
COMMENT ON FUNCTION @extschema@._advance_group(text, @extschema@.state, text, boolean) IS
    'internal: implementation of softmig.advance_group';

CREATE FUNCTION @extschema@.advance_group(group_name text, to_state @extschema@.state DEFAULT NULL,
                                          reason text DEFAULT NULL, force boolean DEFAULT false)
RETURNS @extschema@.state AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.advance_group(text, @extschema@.state, text, boolean) IS
    'move every member of a group one state forward in one transaction (to_state defaults to the next state); owners of every member''s tables only';

CREATE FUNCTION @extschema@._rollback_group(group_name text, reason text)
RETURNS @extschema@.state
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._move_group(group_name, 'rollback', NULL, reason, false)
$$;
COMMENT ON FUNCTION @extschema@._rollback_group(text, text) IS
    'internal: implementation of softmig.rollback_group';

CREATE FUNCTION @extschema@.rollback_group(group_name text, reason text DEFAULT NULL)
RETURNS @extschema@.state AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.rollback_group(text, text) IS
    'move every member of a group one state back in one transaction; owners of every member''s tables only';

CREATE FUNCTION @extschema@.group_status(group_name text) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'name', g.name,
        'state', (SELECT CASE WHEN pg_catalog.count(DISTINCT m.state::text) OPERATOR(pg_catalog.=) 1
                              THEN pg_catalog.min(m.state::text) END
                    FROM @extschema@.group_members gm JOIN @extschema@.migrations m ON m.id OPERATOR(pg_catalog.=) gm.migration_id
                   WHERE gm.group_id OPERATOR(pg_catalog.=) g.id),
        'created_at', g.created_at,
        'created_by', g.created_by,
        'members', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                              'name', m.name,
                              'state', m.state::text,
                              'legacy', m.legacy::text,
                              'target', m.target::text,
                              'backfill_done', @extschema@._backfill_done(m.id),
                              'envelope_open', (@extschema@._envelope_json(m.id) OPERATOR(pg_catalog.->>) 'open')::boolean)
                              ORDER BY gm.ordinal)
                      FROM @extschema@.group_members gm JOIN @extschema@.migrations m ON m.id OPERATOR(pg_catalog.=) gm.migration_id
                     WHERE gm.group_id OPERATOR(pg_catalog.=) g.id))
      FROM @extschema@._group(group_name) g
$$;
COMMENT ON FUNCTION @extschema@.group_status(text) IS
    'a jsonb summary of a group: its state (NULL if the members differ), and per member state, tables, backfill and envelope';

REVOKE ALL ON FUNCTION
    @extschema@._group(text),
    @extschema@._group_deferred_fk_check(integer[]),
    @extschema@._create_group(text, text[]),
    @extschema@._drop_group(text),
    @extschema@._lock_group_tables(@extschema@.groups, regclass[], text, @extschema@.state, @extschema@.state),
    @extschema@._group_fk_guard(@extschema@.groups, integer[]),
    @extschema@._move_group(text, text, @extschema@.state, text, boolean),
    @extschema@._advance_group(text, @extschema@.state, text, boolean),
    @extschema@._rollback_group(text, text),
    @extschema@._state_guards(@extschema@.migrations, @extschema@.state, jsonb),
    @extschema@._envelope_guard(@extschema@.migrations, @extschema@.state)
FROM PUBLIC;

-------------------------------------------------------------------------------
-- create_migration checks its forward and backward mappings with one function
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._check_mapping(dest regclass, mapping jsonb, direction text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    e text;
BEGIN
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(mapping) j LOOP
        PERFORM @extschema@._require_column(dest, k, direction OPERATOR(pg_catalog.||) ' mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('%s mapping of column "%s" must be a string holding an SQL expression', direction, k);
        END IF;
        PERFORM @extschema@._check_expression(mapping OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('%s mapping of column "%s"', direction, k));
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._check_mapping(regclass, jsonb, text) IS
    'internal: raise unless every entry of a forward or backward mapping names a column of dest and holds one SQL expression';
REVOKE ALL ON FUNCTION @extschema@._check_mapping(regclass, jsonb, text) FROM PUBLIC;

-------------------------------------------------------------------------------
-- inspect_group: one entity of a group, every member, both sides
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.inspect_group(group_name text, key jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_inspect_group' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.inspect_group(text, jsonb) IS
    'one entity of a group on both sides: the root member''s row for key and every child member''s rows found through the foreign keys between the members'' tables, each as inspect shows it; for a caller who may read both tables of every member';

-------------------------------------------------------------------------------
-- split: a legacy table shared by the owner of an entity and its attribute
-- members (option attribute_of, doc/shapes.md "Split")
-------------------------------------------------------------------------------
DROP FUNCTION @extschema@._resolve_mapping(text, regclass, regclass, jsonb);
CREATE FUNCTION @extschema@._resolve_mapping(p_direction text, p_dest regclass, p_src regclass, p_given jsonb,
                                              p_others text[] DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_maps jsonb := '[]';
    v_side text := CASE p_direction WHEN 'forward' THEN 'target' ELSE 'legacy' END;
BEGIN
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) p_dest AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF p_given ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, p_dest);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', p_direction, 'column_name', r.attname, 'ordinal', r.attnum, 'expression', p_given OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attname OPERATOR(pg_catalog.=) ANY (p_others) THEN
            NULL;   -- another member of a split maps it (option attribute_of)
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) p_src AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', p_direction, 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('%s column "%s" is NOT NULL without a default and nothing maps to it', v_side, r.attname),
                HINT = pg_catalog.format('Add it to %s, give it a default, or allow NULL.', p_direction);
        END IF;
    END LOOP;
    RETURN v_maps;
END $$;
COMMENT ON FUNCTION @extschema@._resolve_mapping(text, regclass, regclass, jsonb, text[]) IS
    'internal: the resolved mapping of one direction into table p_dest from p_src: given expressions, same-named columns but those in p_others (mapped by another member of a split), and 22023 for a required column nothing fills';

REVOKE ALL ON FUNCTION @extschema@._resolve_mapping(text, regclass, regclass, jsonb, text[]) FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@._check_options(p_options jsonb)
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
                          'transition_rules', 'parity_chunk_rows', 'attribute_of',
                          'cardinality', 'entity'];
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
        IF k OPERATOR(pg_catalog.=) 'on_new_only' THEN
            PERFORM @extschema@._check_option_choice(k, v, 'allow', 'reject');
        END IF;
        IF k OPERATOR(pg_catalog.=) 'cardinality' THEN
            PERFORM @extschema@._check_option_choice(k, v, 'one_to_one', 'one_to_many');
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
        IF k OPERATOR(pg_catalog.=) 'attribute_of' AND pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option attribute_of must be a string naming the migration that owns the entity, not %s', v);
        END IF;
        IF k OPERATOR(pg_catalog.=) 'unregistered_reader_window' THEN
            PERFORM @extschema@._check_reader_window(v);
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._check_options(jsonb) IS
    'internal: raise 22023 unless every option is known and well-formed';

COMMENT ON FUNCTION @extschema@._drop_migration(text) IS 'internal: implementation of softmig.drop_migration';

CREATE OR REPLACE FUNCTION @extschema@._set_option(name text, option text, value jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_new jsonb;
BEGIN
    IF option IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'option must not be null';
    END IF;
    IF option OPERATOR(pg_catalog.=) ANY (ARRAY['target_key', 'attribute_of', 'cardinality', 'entity']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('option %s cannot be changed after create_migration', option);
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

CREATE FUNCTION @extschema@._split_owner(p_name text, p_legacy regclass, p_target regclass)
RETURNS @extschema@.migrations
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o @extschema@.migrations;
BEGIN
    SELECT * INTO o FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" named by option attribute_of does not exist', p_name),
            HINT = 'Create the migration that owns the entity first.';
    END IF;
    IF o.options OPERATOR(pg_catalog.?) 'attribute_of' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('migration "%s" is itself an attribute member of migration "%s"',
                                        o.name, o.options OPERATOR(pg_catalog.->>) 'attribute_of'),
            HINT = pg_catalog.format('Name the migration that owns the entity: "%s".', o.options OPERATOR(pg_catalog.->>) 'attribute_of');
    END IF;
    IF o.legacy OPERATOR(pg_catalog.<>) p_legacy::pg_catalog.oid
       AND o.target OPERATOR(pg_catalog.<>) p_target::pg_catalog.oid THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('migration "%s" migrates neither table %s nor into table %s', o.name, p_legacy, p_target),
            DETAIL = pg_catalog.format('An attribute member shares the legacy table (%s, a split) or the target table (%s, a merge) of the migration that owns the entity.',
                                       o.legacy::regclass, o.target::regclass);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) o.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migration "%s" is a cross-database migration and cannot own a split or a merge', o.name),
            DETAIL = 'The members of a split or a merge move only as one group, and a cross-database migration cannot be a group member.';
    END IF;
    IF o.state OPERATOR(@extschema@.<>) 'legacy' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is in state %s', o.name, o.state),
            DETAIL = 'Attribute members are added while the migration that owns the entity is in state legacy.',
            HINT = 'Roll it back to legacy first.';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.group_members gm WHERE gm.migration_id OPERATOR(pg_catalog.=) o.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is a member of a group', o.name),
            HINT = 'Create every member of the split first, then the group of all of them (softmig.drop_group, then softmig.create_group).';
    END IF;
    -- tools that act on one member's tables alone (_refuse_split_member), and
    -- quarantines the new member would not share
    IF EXISTS (SELECT 1 FROM @extschema@.field_authority f
                WHERE f.migration_id OPERATOR(pg_catalog.=) o.id AND f.side OPERATOR(pg_catalog.=) 'new')
       OR EXISTS (SELECT 1 FROM @extschema@.shape_views v WHERE v.migration_id OPERATOR(pg_catalog.=) o.id)
       OR EXISTS (SELECT 1 FROM @extschema@.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) o.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migration "%s" has fields given to the target, shape views or quarantined entities', o.name),
            DETAIL = 'Per-field authority and shape views are not supported for the members of a split or a merge, and an entity quarantined in the owner alone would not be quarantined in the new member.',
            HINT = 'Hand the fields back (softmig.set_field_authority), drop the shape views (softmig.drop_shape_views) and release the entities (softmig.release) first; see doc/shapes.md, "Not built yet".';
    END IF;
    RETURN o;
END $$;
COMMENT ON FUNCTION @extschema@._split_owner(text, regclass, regclass) IS
    'internal: the migration option attribute_of names, checked to own a split of table p_legacy or a merge into table p_target: 42704, 22023, 55000, 0A000';

CREATE FUNCTION @extschema@._split_member_check(o @extschema@.migrations, p_key text[], p_maps jsonb,
                                                p_others text[])
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_mine text[];
    v_both text[];
BEGIN
    IF p_key OPERATOR(pg_catalog.<>) o.legacy_key THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('the key of an attribute member must be the key of migration "%s"', o.name),
            DETAIL = pg_catalog.format('Key %s; the entity''s key is %s.', p_key::text, o.legacy_key::text),
            HINT = 'An attribute row belongs to exactly one entity: its key maps to the owner''s key.';
    END IF;
    -- the legacy columns this member writes (resolved: given or same-named)
    SELECT pg_catalog.array_agg(x.column_name ORDER BY x.column_name) INTO v_mine
      FROM pg_catalog.jsonb_to_recordset(p_maps) AS x(direction text, column_name text)
     WHERE x.direction OPERATOR(pg_catalog.=) 'backward' AND x.column_name OPERATOR(pg_catalog.<>) ALL (p_key);
    IF v_mine IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('an attribute member of migration "%s" must map a legacy column besides the key', o.name),
            HINT = 'Map the attribute columns backward: {"legacy_column": "expression over target columns"}.';
    END IF;
    SELECT pg_catalog.array_agg(k ORDER BY k) INTO v_both
      FROM pg_catalog.unnest(v_mine) k WHERE k OPERATOR(pg_catalog.=) ANY (p_others);
    IF v_both IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('legacy columns %s are mapped by another member of the split of migration "%s"',
                                        pg_catalog.array_to_string(v_both, ', '), o.name),
            DETAIL = 'The members of a split map disjoint columns of the legacy table (but for its key).';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[]) IS
    'internal: raise 22023 unless an attribute member (its resolved mappings p_maps) has its owner''s key and maps legacy columns, none another member maps';

CREATE FUNCTION @extschema@._split_partners(p_id integer) RETURNS integer[]
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    -- every other migration of the split p_id takes part in (owner and attribute members)
    WITH me AS (SELECT COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name) AS owner
                  FROM @extschema@.migrations m WHERE m.id OPERATOR(pg_catalog.=) p_id)
    SELECT COALESCE(pg_catalog.array_agg(x.id ORDER BY x.id), '{}')
      FROM @extschema@.migrations x, me
     WHERE x.id OPERATOR(pg_catalog.<>) p_id
       AND (x.name OPERATOR(pg_catalog.=) me.owner
            OR x.options OPERATOR(pg_catalog.->>) 'attribute_of' OPERATOR(pg_catalog.=) me.owner)
$$;
COMMENT ON FUNCTION @extschema@._split_partners(integer) IS
    'internal: the other migrations of the split a migration takes part in (empty when none)';

CREATE FUNCTION @extschema@._split_group_check(p_ids integer[], p_group text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    -- a table in several migrations is written by all of them: they move together
    FOR r IN SELECT m.name, x.name AS partner,
                    (CASE WHEN m.legacy OPERATOR(pg_catalog.=) x.legacy THEN m.legacy ELSE m.target END)::regclass AS rel
               FROM @extschema@.migrations m
              CROSS JOIN LATERAL pg_catalog.unnest(@extschema@._split_partners(m.id)) p(id)
               JOIN @extschema@.migrations x ON x.id OPERATOR(pg_catalog.=) p.id
              WHERE m.id OPERATOR(pg_catalog.=) ANY (p_ids) AND p.id OPERATOR(pg_catalog.<>) ALL (p_ids)
              ORDER BY 1, 2 LOOP
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" shares table %s with migration "%s", which is not a member of group "%s"',
                                        r.name, r.rel, r.partner, p_group),
            HINT = 'The members of a split move only together: put all of them in one group.';
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._split_group_check(integer[], text) IS
    'internal: raise 55000 unless every migration of a split among p_ids has all its partners among them too';

REVOKE ALL ON FUNCTION
    @extschema@._split_owner(text, regclass, regclass),
    @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[]),
    @extschema@._split_partners(integer),
    @extschema@._split_group_check(integer[], text)
FROM PUBLIC;

-------------------------------------------------------------------------------
-- one-to-many migrations: options cardinality and entity (doc/shapes.md)
-------------------------------------------------------------------------------

COMMENT ON FUNCTION @extschema@._set_field_authority(text, name, @extschema@.side) IS
    'internal: implementation of softmig.set_field_authority';

CREATE FUNCTION @extschema@._check_one_to_many(legacy regclass, target regclass, key text[],
    forward jsonb, backward jsonb, new_only text[], divergent text[], options jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_entity jsonb := options OPERATOR(pg_catalog.->) 'entity';
    v_cols text[] := '{}';
    k text;
    e text;
BEGIN
    IF COALESCE(options OPERATOR(pg_catalog.->>) 'cardinality', 'one_to_one') OPERATOR(pg_catalog.<>) 'one_to_many' THEN
        IF options OPERATOR(pg_catalog.?) 'entity' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option entity needs option cardinality "one_to_many"',
                HINT = 'A one-to-one migration correlates rows on its key (option target_key).';
        END IF;
        RETURN NULL;
    END IF;
    IF v_entity IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'cardinality "one_to_many" needs option entity',
            HINT = 'Map each legacy key column to the target column that gathers its rows: {"entity": {"user_id": "user_id"}}.';
    END IF;
    IF pg_catalog.jsonb_typeof(v_entity) OPERATOR(pg_catalog.<>) 'object'
       OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_each(v_entity) j
                   WHERE pg_catalog.jsonb_typeof(j.value) OPERATOR(pg_catalog.<>) 'string') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'option entity must be a jsonb object {"legacy key column": "target column"}',
            DETAIL = pg_catalog.format('Given: %s', v_entity);
    END IF;
    FOR k IN SELECT j.key FROM pg_catalog.jsonb_each(v_entity) j LOOP
        IF k OPERATOR(pg_catalog.<>) ALL (key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option entity names "%s", which is not a legacy key column', k),
                DETAIL = pg_catalog.format('The legacy key is (%s).', pg_catalog.array_to_string(key, ', '));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY key LOOP
        e := v_entity OPERATOR(pg_catalog.->>) k;
        IF e IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option entity does not map legacy key column "%s"', k);
        END IF;
        PERFORM @extschema@._require_column(target, e, 'entity column', false);
        IF e OPERATOR(pg_catalog.=) ANY (v_cols) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option entity maps two key columns to target column "%s"', e);
        END IF;
        IF forward ? e AND (forward OPERATOR(pg_catalog.->>) e) OPERATOR(pg_catalog.<>) ALL (ARRAY[k, pg_catalog.quote_ident(k)]) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('forward mapping of entity column "%s" must be legacy key column "%s"', e, k),
                DETAIL = 'The entity columns gather the target rows of one legacy row: they hold its key.';
        END IF;
        IF backward ? k AND (backward OPERATOR(pg_catalog.->>) k) OPERATOR(pg_catalog.<>) ALL (ARRAY[e, pg_catalog.quote_ident(e)]) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('backward mapping of legacy key column "%s" must be entity column "%s"', k, e);
        END IF;
        v_cols := v_cols OPERATOR(pg_catalog.||) e;
    END LOOP;
    IF options OPERATOR(pg_catalog.?) 'target_key' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'option target_key does not apply to cardinality "one_to_many"',
            HINT = 'Option entity names the target columns that hold the legacy key.';
    END IF;
    IF options OPERATOR(pg_catalog.?) 'transition_rules' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'option transition_rules is not supported with cardinality "one_to_many"';
    END IF;
    IF pg_catalog.cardinality(new_only) OPERATOR(pg_catalog.>) 0 OR pg_catalog.cardinality(divergent) OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'new_only and divergent columns are not supported with cardinality "one_to_many"',
            HINT = 'Option representable (an aggregate over the set) says which sets legacy cannot hold.';
    END IF;
    RETURN v_cols;
END $$;
COMMENT ON FUNCTION @extschema@._check_one_to_many(regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'internal: the entity columns of a one_to_many definition (NULL for one-to-one), 22023/0A000 for options that do not fit';
REVOKE ALL ON FUNCTION @extschema@._check_one_to_many(regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) FROM PUBLIC;

CREATE FUNCTION @extschema@._refuse_one_to_many(p_id integer, p_what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text;
BEGIN
    SELECT m.name INTO v_name FROM @extschema@.migrations m
     WHERE m.id OPERATOR(pg_catalog.=) p_id
       AND (m.options OPERATOR(pg_catalog.->>) 'cardinality') OPERATOR(pg_catalog.=) 'one_to_many';
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('%s are not supported for migration "%s": it is one_to_many', p_what, v_name),
            HINT = 'See doc/shapes.md, "One-to-many".';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._refuse_one_to_many(integer, text) IS
    'internal: raise 0A000 when migration p_id is one_to_many (p_what, plural, does not work on sets)';
REVOKE ALL ON FUNCTION @extschema@._refuse_one_to_many(integer, text) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Merge: several legacy tables sharing one target table (doc/shapes.md "Merge")
-------------------------------------------------------------------------------
-- the member check of a split serves a merge too (its shared side as a parameter)
DROP FUNCTION @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[]);
CREATE FUNCTION @extschema@._split_member_check(o @extschema@.migrations, p_key text[], p_maps jsonb,
                                                p_others text[], p_merge boolean)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- the side the members share: legacy (a split) or target (a merge)
    v_side text := CASE WHEN p_merge THEN 'target' ELSE 'legacy' END;
    v_own text[] := CASE WHEN p_merge THEN o.target_key ELSE o.legacy_key END;
    v_mine text[];
    v_both text[];
BEGIN
    IF p_key OPERATOR(pg_catalog.<>) v_own THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('the %skey of an attribute member must be the %skey of migration "%s"',
                                        CASE WHEN p_merge THEN 'target ' ELSE '' END,
                                        CASE WHEN p_merge THEN 'target ' ELSE '' END, o.name),
            DETAIL = pg_catalog.format('Key %s; the entity''s key is %s.', p_key::text, v_own::text),
            HINT = 'An attribute row belongs to exactly one entity: its key maps to the owner''s key.';
    END IF;
    -- the columns of the shared table this member writes (resolved: given or same-named)
    SELECT pg_catalog.array_agg(x.column_name ORDER BY x.column_name) INTO v_mine
      FROM pg_catalog.jsonb_to_recordset(p_maps) AS x(direction text, column_name text)
     WHERE x.direction OPERATOR(pg_catalog.=) CASE WHEN p_merge THEN 'forward' ELSE 'backward' END
       AND x.column_name OPERATOR(pg_catalog.<>) ALL (p_key);
    IF v_mine IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('an attribute member of migration "%s" must map a %s column besides the key', o.name, v_side),
            HINT = CASE WHEN p_merge THEN 'Map the attribute columns forward: {"target_column": "expression over legacy columns"}.'
                        ELSE 'Map the attribute columns backward: {"legacy_column": "expression over target columns"}.' END;
    END IF;
    SELECT pg_catalog.array_agg(k ORDER BY k) INTO v_both
      FROM pg_catalog.unnest(v_mine) k WHERE k OPERATOR(pg_catalog.=) ANY (p_others);
    IF v_both IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s columns %s are mapped by another member of the %s of migration "%s"',
                                        v_side, pg_catalog.array_to_string(v_both, ', '),
                                        CASE WHEN p_merge THEN 'merge' ELSE 'split' END, o.name),
            DETAIL = pg_catalog.format('The members of a %s map disjoint columns of the %s table (but for its key).',
                                       CASE WHEN p_merge THEN 'merge' ELSE 'split' END, v_side);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[], boolean) IS
    'internal: raise 22023 unless an attribute member (its resolved mappings p_maps) has its owner''s key (legacy key of a split, target key of a merge) and maps columns of the shared table, none another member maps';
REVOKE ALL ON FUNCTION @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[], boolean) FROM PUBLIC;

-- operators of jsonb schema-qualified in the check runner and the report
CREATE OR REPLACE FUNCTION @extschema@._run_checks(name text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_run bigint := pg_catalog.nextval('@extschema@.check_run_seq');
    v_rows jsonb := '[]';
    v_prev bigint;
    v_actor name := @extschema@._actor();
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
    v_rows := @extschema@._check_row(v_rows, 'transport', 'triggers',
                                     (v_detail OPERATOR(pg_catalog.->>) 'healthy')::boolean, pg_catalog.jsonb_array_length(v_detail OPERATOR(pg_catalog.->) 'problems'),
                                     v_detail);

    -- the transition-rule triggers
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('rel', x.tbl::text, 'tgname', x.tgname,
               'problem', CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END) ORDER BY x.tbl::text), '[]')
      INTO v_detail
      FROM (SELECT DISTINCT r2.tbl, 'softmig_rule_' OPERATOR(pg_catalog.||) m.id::text AS tgname
              FROM @extschema@.transition_rules r2 WHERE r2.migration_id OPERATOR(pg_catalog.=) m.id) x
      LEFT JOIN pg_catalog.pg_trigger t
        ON t.tgrelid OPERATOR(pg_catalog.=) x.tbl AND t.tgname OPERATOR(pg_catalog.=) x.tgname
     WHERE t.oid IS NULL OR t.tgenabled OPERATOR(pg_catalog.=) 'D';
    v_rows := @extschema@._check_row(v_rows, 'transport', 'rule_triggers',
                                     pg_catalog.jsonb_array_length(v_detail) OPERATOR(pg_catalog.=) 0, pg_catalog.jsonb_array_length(v_detail),
                                     pg_catalog.jsonb_build_object('problems', v_detail));

    -- backfill progress and staleness (it only applies in mirrored)
    v_detail := @extschema@._backfill_status(m.id);
    v_ok := m.state OPERATOR(@extschema@.<>) 'mirrored' OR @extschema@._backfill_done(m.id);
    v_detail := v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
        'applies', m.state OPERATOR(@extschema@.=) 'mirrored',
        'stale_seconds', CASE WHEN v_ok THEN NULL ELSE
            pg_catalog.round(EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-)
                COALESCE((v_detail OPERATOR(pg_catalog.->>) 'updated_at')::timestamptz, m.state_changed_at))) END);
    v_rows := @extschema@._check_row(v_rows, 'transport', 'backfill',
                                     v_ok, CASE WHEN v_ok THEN 0 ELSE GREATEST(COALESCE((v_detail OPERATOR(pg_catalog.->>) 'remaining_estimate')::bigint, 1), 1) END,
                                     v_detail);

    -- projection failures: rows the target holds that legacy could not take
    v_detail := @extschema@._envelope_json(m.id);
    v_n := COALESCE((v_detail OPERATOR(pg_catalog.->>) 'new_only_count')::bigint, 0);
    v_rows := @extschema@._check_row(v_rows, 'transport', 'projection',
                                     v_n OPERATOR(pg_catalog.=) 0, v_n,
                                     pg_catalog.jsonb_build_object('envelope', v_detail));

    -- shadow writes disabled by hand
    SELECT pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.-) 'migration_id' INTO v_detail
      FROM @extschema@.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id;
    v_rows := @extschema@._check_row(v_rows, 'transport', 'shadow',
                                     v_detail IS NULL, CASE WHEN v_detail IS NULL THEN 0 ELSE 1 END,
                                     COALESCE(pg_catalog.jsonb_build_object('disabled', v_detail), '{"disabled": null}'));

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
    v_rows := @extschema@._check_row(v_rows, 'transport', 'readers',
                                     v_n OPERATOR(pg_catalog.=) 0 AND NOT v_detail OPERATOR(pg_catalog.?) 'error', v_n,
                                     v_detail);

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
            v_rows := @extschema@._check_row(v_rows, 'structural', 'parity_' OPERATOR(pg_catalog.||) k,
                                             v_n OPERATOR(pg_catalog.=) 0, v_n,
                                             v_detail);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
        v_rows := @extschema@._check_row(v_rows, 'structural', 'parity',
                                         false, 1,
                                         pg_catalog.jsonb_build_object('error', v_err));
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
        v_rows := @extschema@._check_row(v_rows, 'behavioral', 'invariant:' OPERATOR(pg_catalog.||) r.name,
                                         v_ok, v_n,
                                         v_detail);
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
        v_rows := @extschema@._check_row(v_rows, 'behavioral', r.check_name,
                                         v_n OPERATOR(pg_catalog.=) 0, v_n,
                                         v_detail);
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

CREATE OR REPLACE FUNCTION @extschema@.report(name text) RETURNS text
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
            ELSIF NOT r.ok AND r.detail OPERATOR(pg_catalog.?) 'error' THEN
                v_line := v_line OPERATOR(pg_catalog.||) '  error: ' OPERATOR(pg_catalog.||)
                    pg_catalog.left(r.detail OPERATOR(pg_catalog.->>) 'error', 60);
            END IF;
            lines := lines OPERATOR(pg_catalog.||) v_line;
        END LOOP;
    END IF;
    RETURN pg_catalog.array_to_string(lines, E'\n');
END $$;


-------------------------------------------------------------------------------
-- One-to-many per entity: hydrate takes entity keys (_hydrate_entities),
-- release re-syncs an entity's set (C), quarantine refuses its writes (C);
-- create_remote_migration refuses one_to_many (0A000) where this script
-- creates it, above
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._hydrate_entities(m @extschema@.migrations, p_keys jsonb)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_keys jsonb := '[]';
    v_key jsonb;
    v_quarantined jsonb;
    e jsonb;
    v_n bigint;
BEGIN
    IF p_keys IS NULL OR pg_catalog.jsonb_typeof(p_keys) OPERATOR(pg_catalog.<>) 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('rows of one_to_many migration "%s" must be a jsonb array of entity keys', m.name),
            HINT = pg_catalog.format('For example [{"%s": ...}]: each entity is brought in line with its authority.', m.legacy_key[1]);
    END IF;
    FOR e IN SELECT pg_catalog.jsonb_array_elements(p_keys) LOOP
        v_key := @extschema@._normalize_key(m, e);
        IF v_keys OPERATOR(pg_catalog.@>) pg_catalog.jsonb_build_array(v_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'rows name the same key twice';
        END IF;
        v_keys := v_keys OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(v_key);
    END LOOP;
    SELECT q.key INTO v_quarantined FROM @extschema@.quarantine q
     WHERE q.migration_id OPERATOR(pg_catalog.=) m.id
       AND pg_catalog.jsonb_build_array(q.key) OPERATOR(pg_catalog.<@) v_keys
     ORDER BY q.key LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SM005',
            MESSAGE = pg_catalog.format('cannot hydrate entity %s of migration "%s": it is quarantined', v_quarantined, m.name),
            HINT = 'softmig.release re-syncs a quarantined entity from its authority.';
    END IF;
    -- every entity in one statement: their locks are taken in one order
    v_n := @extschema@._resync_key(m.id, v_keys);
    PERFORM @extschema@._history(m.id, 'hydrate', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('entities', v_n, 'keys', v_keys));
    RETURN v_n;
END $$;
COMMENT ON FUNCTION @extschema@._hydrate_entities(@extschema@.migrations, jsonb) IS
    'internal: softmig.hydrate of a one_to_many migration: bring each entity named in a jsonb array of legacy keys in line with its authority';

CREATE OR REPLACE FUNCTION @extschema@._hydrate(p_name text, p_rows jsonb, p_as_of pg_snapshot)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    v_cols text[];
    v_bad text;
    v_authority jsonb;
    v_n bigint;
    v_partners integer[] := @extschema@._split_partners(m.id);
    v_who text;
BEGIN
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot hydrate migration "%s" in state %s', m.name, m.state),
            DETAIL = 'Hydration merges into a target that softmig keeps in step: states mirrored, new_write and new_read.';
    END IF;
    IF m.options OPERATOR(pg_catalog.->>) 'cardinality' OPERATOR(pg_catalog.=) 'one_to_many' THEN
        -- per entity: rows are legacy keys, the sets are read fresh under their locks (no snapshot)
        RETURN @extschema@._hydrate_entities(m, p_rows);
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
    -- a member of a merge writes its own columns of the shared table; those
    -- no member maps belong to the owner (a member of a split has a target
    -- table of its own: all of it is the member's)
    IF EXISTS (SELECT 1 FROM @extschema@.migrations x
                WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners) AND x.target OPERATOR(pg_catalog.=) m.target) THEN
        SELECT s.k, s.who INTO v_bad, v_who
          FROM (SELECT DISTINCT k,
                       COALESCE((SELECT x.name FROM @extschema@.mappings mp
                                   JOIN @extschema@.migrations x ON x.id OPERATOR(pg_catalog.=) mp.migration_id
                                  WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners OPERATOR(pg_catalog.||) m.id)
                                    AND x.target OPERATOR(pg_catalog.=) m.target
                                    AND mp.direction OPERATOR(pg_catalog.=) 'forward'
                                    AND mp.column_name::text OPERATOR(pg_catalog.=) k
                                  ORDER BY x.id LIMIT 1),
                                COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name)) AS who
                  FROM pg_catalog.jsonb_array_elements(p_rows) e, pg_catalog.jsonb_object_keys(e) k
                 WHERE k OPERATOR(pg_catalog.<>) ALL (m.target_key)) s
         WHERE s.who OPERATOR(pg_catalog.<>) m.name
         ORDER BY s.k LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('column "%s" of the hydrated rows belongs to migration "%s"', v_bad, v_who),
                DETAIL = pg_catalog.format('The members of a merge into %s write disjoint columns of it; the columns no member maps belong to the owner, "%s".',
                                           m.target::regclass, COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name)),
                HINT = pg_catalog.format('Hydrate column "%s" through migration "%s".', v_bad, v_who);
        END IF;
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
REVOKE ALL ON FUNCTION @extschema@._hydrate_entities(@extschema@.migrations, jsonb) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Split and merge, closing gaps: tools that act on one member's tables alone
-- (per-field authority, hydrate, quarantine, shape views) refuse the members
-- of a split or a merge (0A000, _refuse_split_member), and an owner that uses
-- one of them takes no attribute member (_split_owner)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._refuse_split_member(p_id integer, p_what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_partners integer[] := @extschema@._split_partners(p_id);
    m @extschema@.migrations;
    v_shape text;
BEGIN
    IF pg_catalog.cardinality(v_partners) OPERATOR(pg_catalog.=) 0 THEN
        RETURN;
    END IF;
    SELECT * INTO m FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) p_id;
    v_shape := CASE WHEN EXISTS (SELECT 1 FROM @extschema@.migrations x
                                  WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners)
                                    AND x.target OPERATOR(pg_catalog.=) m.target)
                    THEN 'merge' ELSE 'split' END;
    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
        MESSAGE = pg_catalog.format('%s are not supported for migration "%s": it is a member of a %s', p_what, m.name, v_shape),
        DETAIL = pg_catalog.format('The entity''s rows span the tables of migrations %s; this tool would act on the tables of one member alone.',
                                   (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(x.name), ', ' ORDER BY x.name)
                                      FROM @extschema@.migrations x
                                     WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners || p_id))),
        HINT = 'See doc/shapes.md, "Not built yet".';
END $$;
COMMENT ON FUNCTION @extschema@._refuse_split_member(integer, text) IS
    'internal: raise 0A000 when migration p_id is a member of a split or a merge (p_what, plural, works on one member''s tables only)';
REVOKE ALL ON FUNCTION @extschema@._refuse_split_member(integer, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._quarantine(name text, key jsonb, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    x @extschema@.migrations;
    v_member integer;
    v_key jsonb;
    v_xkey jsonb;
BEGIN
    PERFORM @extschema@._require_nonblank(reason, 'quarantine needs a reason');
    v_key := @extschema@._normalize_key(m, key);
    -- the entity in every member of a split or a merge, owner first
    FOREACH v_member IN ARRAY @extschema@._entity_members(m.id) LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) v_member;
        v_xkey := @extschema@._normalize_key(x, v_key);
        INSERT INTO @extschema@.quarantine (migration_id, key, reason, actor)
        VALUES (x.id, v_xkey, reason, @extschema@._actor())
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
                MESSAGE = pg_catalog.format('entity %s of migration "%s" is already quarantined', v_xkey, x.name);
        END IF;
        PERFORM @extschema@._invalidate(x.legacy, x.target);
        PERFORM @extschema@._history(x.id, 'quarantine', x.state, x.state, reason,
                                     pg_catalog.jsonb_build_object('key', v_xkey)
                                     OPERATOR(pg_catalog.||) CASE WHEN x.id OPERATOR(pg_catalog.=) m.id THEN '{}'::jsonb
                                                                  ELSE pg_catalog.jsonb_build_object('via', m.name) END);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._quarantine(text, jsonb, text) IS 'internal: implementation of softmig.quarantine';


-------------------------------------------------------------------------------
-- Split and merge: quarantine and release per entity in every member
-- (doc/shapes.md "Quarantine and release"): _entity_members lists the
-- members an entity spans, owner first; _quarantine and _release act on
-- all of them; _split_owner's refusal text no longer calls quarantine
-- unsupported
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION @extschema@._entity_members(p_id integer) RETURNS integer[]
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_partners integer[] := @extschema@._split_partners(p_id);
    v_all integer[];
    v_odd text;
BEGIN
    IF pg_catalog.cardinality(v_partners) OPERATOR(pg_catalog.=) 0 THEN
        RETURN ARRAY[p_id];
    END IF;
    -- the owner (no option attribute_of) first, then the attribute members
    SELECT pg_catalog.array_agg(x.id ORDER BY x.options OPERATOR(pg_catalog.?) 'attribute_of', x.id) INTO v_all
      FROM @extschema@.migrations x
     WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners OPERATOR(pg_catalog.||) p_id);
    -- one key names the entity in every member: the members of a split share
    -- the legacy table and key; those of a merge must name the shared target
    -- key alike (same legacy key columns, same forward key mapping)
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(x.name), ', ' ORDER BY x.name) INTO v_odd
      FROM @extschema@.migrations x, @extschema@.migrations o
     WHERE x.id OPERATOR(pg_catalog.=) ANY (v_all) AND o.id OPERATOR(pg_catalog.=) v_all[1]
       AND (x.legacy_key OPERATOR(pg_catalog.<>) o.legacy_key
            OR EXISTS (SELECT 1 FROM @extschema@.mappings a
                         FULL JOIN @extschema@.mappings b
                           ON b.migration_id OPERATOR(pg_catalog.=) o.id AND b.direction OPERATOR(pg_catalog.=) 'forward'
                          AND b.column_name OPERATOR(pg_catalog.=) a.column_name
                        WHERE a.migration_id OPERATOR(pg_catalog.=) x.id AND a.direction OPERATOR(pg_catalog.=) 'forward'
                          AND a.column_name OPERATOR(pg_catalog.=) ANY (x.target_key)
                          AND b.expression IS DISTINCT FROM a.expression));
    IF v_odd IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migrations %s name the entity by other legacy keys than migration "%s"',
                                        v_odd, (SELECT x.name FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) v_all[1])),
            DETAIL = 'Quarantine, release and the re-sync of a missing entity by hydrate act on an entity in every member of a merge, which needs the same legacy key columns mapped to the target key by the same expressions in each.',
            HINT = 'See doc/shapes.md, "Quarantine and release of a split or a merge".';
    END IF;
    RETURN v_all;
END $$;
COMMENT ON FUNCTION @extschema@._entity_members(integer) IS
    'internal: the migrations an entity of migration p_id spans, owner first: p_id alone, or every member of its split or merge (0A000 when a merge''s members name the entity by different legacy keys)';
REVOKE ALL ON FUNCTION @extschema@._entity_members(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._release(name text, key jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    x @extschema@.migrations;
    v_members integer[] := @extschema@._entity_members(m.id);
    v_member integer;
    v_key jsonb;
    v_xkey jsonb;
    v_rows bigint[];
BEGIN
    v_key := @extschema@._normalize_key(m, key);
    DELETE FROM @extschema@.quarantine
     WHERE migration_id OPERATOR(pg_catalog.=) m.id AND quarantine.key OPERATOR(pg_catalog.=) v_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('entity %s of migration "%s" is not quarantined', v_key, m.name);
    END IF;
    -- a split or a merge: released in every member before any re-sync, for
    -- one member's re-sync writes the table it shares with the others
    FOREACH v_member IN ARRAY v_members LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) v_member;
        DELETE FROM @extschema@.quarantine
         WHERE migration_id OPERATOR(pg_catalog.=) x.id
           AND quarantine.key OPERATOR(pg_catalog.=) @extschema@._normalize_key(x, v_key);
        PERFORM @extschema@._invalidate(x.legacy, x.target);
    END LOOP;
    -- the other table takes the authoritative version of the entity again,
    -- in every member; each member's history records it, owner first
    v_rows := @extschema@._resync_entity(v_members, v_key);
    FOR i IN 1..pg_catalog.cardinality(v_members) LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) v_members[i];
        v_xkey := @extschema@._normalize_key(x, v_key);
        PERFORM @extschema@._history(x.id, 'release', x.state, x.state, NULL,
                                     pg_catalog.jsonb_build_object('key', v_xkey, 'resynced_rows', v_rows[i])
                                     OPERATOR(pg_catalog.||) CASE WHEN x.id OPERATOR(pg_catalog.=) m.id THEN '{}'::jsonb
                                                                  ELSE pg_catalog.jsonb_build_object('via', m.name) END);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._release(text, jsonb) IS 'internal: implementation of softmig.release';

-- Hydrate of a member of a split or a merge: the member's own columns; in
-- mirrored the entities its target lacks are re-synced from legacy in every
-- member (_hydrate_resync), not inserted from the hydrated rows
CREATE FUNCTION @extschema@._hydrate_resync(p_id integer, p_keys jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_members integer[] := @extschema@._entity_members(p_id);
    m @extschema@.migrations;
    v_key jsonb;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    -- entity by entity in key order, in every member, as release does
    FOR v_key IN SELECT k FROM pg_catalog.jsonb_array_elements(p_keys) k ORDER BY k LOOP
        PERFORM @extschema@._resync_entity(v_members, @extschema@._normalize_key(m, v_key));
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._hydrate_resync(integer, jsonb) IS
    'internal: softmig.hydrate of a member of a split or a merge in mirrored: re-sync from legacy, in every member, the entities (a jsonb array of legacy keys) the member''s target lacks';
REVOKE ALL ON FUNCTION @extschema@._hydrate_resync(integer, jsonb) FROM PUBLIC;

-- One check of a required text argument (a reason, a name) for every
-- function that takes one
CREATE FUNCTION @extschema@._require_nonblank(p_value text, p_message text, p_hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value IS NOT NULL AND pg_catalog.btrim(p_value) OPERATOR(pg_catalog.<>) '' THEN
        RETURN;
    ELSIF p_hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = p_message;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = p_message, HINT = p_hint;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._require_nonblank(text, text, text) IS
    'internal: raise 22023 with p_message (and p_hint) when a required text argument (a reason, a name) is null or blank';
REVOKE ALL ON FUNCTION @extschema@._require_nonblank(text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._advance(name text, to_state @extschema@.state, reason text, force boolean)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_to @extschema@.state := to_state;
BEGIN
    IF COALESCE(force, false) THEN
        PERFORM @extschema@._require_nonblank(reason, 'force => true needs a reason',
                                              'The reason is recorded in the migration''s history.');
    END IF;
    IF m.state OPERATOR(@extschema@.=) 'cutover' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is already in state cutover', m.name),
            DETAIL = 'cutover is the final state.';
    END IF;
    v_to := COALESCE(v_to, @extschema@._next_state(m.state));
    IF v_to OPERATOR(@extschema@.<=) m.state THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" from %s to %s', m.name, m.state, v_to),
            HINT = 'advance moves forward one step; use softmig.rollback to go back.';
    END IF;
    RETURN @extschema@._set_state(m.id, v_to, 'advance', reason,
        CASE WHEN force THEN '{"force": true}'::jsonb ELSE '{}'::jsonb END);
END $$;

CREATE OR REPLACE FUNCTION @extschema@._close_envelope(name text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    e @extschema@.envelope;
BEGIN
    PERFORM @extschema@._require_nonblank(reason, 'closing the envelope needs a reason');
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

CREATE OR REPLACE FUNCTION @extschema@._shadow_disable(name text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    PERFORM @extschema@._require_nonblank(reason, 'shadow_disable needs a reason');
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

CREATE OR REPLACE FUNCTION @extschema@._add_invariant(name text, invariant text, query text, severity text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_query text;
BEGIN
    PERFORM @extschema@._require_nonblank(invariant, 'invariant name must not be empty');
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

-- Giving up a cross-database state change, one function for every step
-- that does
CREATE FUNCTION @extschema@._remote_give_up(p_name text, m @extschema@.migrations, p_reason text,
                                          p_switch jsonb, p_result jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE @extschema@.remote_migrations SET switch = NULL WHERE remote_migrations.name OPERATOR(pg_catalog.=) p_name;
    PERFORM @extschema@._history(m.id, 'remote_abort', m.state, m.state, p_reason, p_switch);
    RETURN p_result;
END $$;
COMMENT ON FUNCTION @extschema@._remote_give_up(text, @extschema@.migrations, text, jsonb, jsonb) IS
    'internal: give up the state change of a cross-database migration in progress (switch p_switch, recorded as remote_abort with p_reason) and return p_result, the answer of the step';
REVOKE ALL ON FUNCTION @extschema@._remote_give_up(text, @extschema@.migrations, text, jsonb, jsonb) FROM PUBLIC;

-- The check of an option that takes one of two strings, written once
CREATE FUNCTION @extschema@._check_option_choice(p_option text, p_value jsonb, p_one text, p_other text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value OPERATOR(pg_catalog.<>) ALL (ARRAY[pg_catalog.to_jsonb(p_one), pg_catalog.to_jsonb(p_other)]) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('option %s must be "%s" or "%s", not %s', p_option, p_one, p_other, p_value);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._check_option_choice(text, jsonb, text, text) IS
    'internal: raise 22023 unless the value of an option that takes one of two strings is one of them';
REVOKE ALL ON FUNCTION @extschema@._check_option_choice(text, jsonb, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._check_observe_option(p_key text, p_value jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ok boolean;
BEGIN
    IF p_key OPERATOR(pg_catalog.=) 'transition_rules' THEN
        PERFORM @extschema@._check_option_choice(p_key, p_value, 'enforce', 'observe');
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

-- The state after a state, for every advance
CREATE FUNCTION @extschema@._next_state(p_state @extschema@.state) RETURNS @extschema@.state
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['mirrored', 'new_write', 'new_read', 'cutover']::@extschema@.state[])
           [pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read']::@extschema@.state[], p_state)]
$$;
COMMENT ON FUNCTION @extschema@._next_state(@extschema@.state) IS
    'internal: the state one step forward of a state (the default target of advance), NULL after cutover';
REVOKE ALL ON FUNCTION @extschema@._next_state(@extschema@.state) FROM PUBLIC;

-- The state before a state, for every rollback
CREATE FUNCTION @extschema@._previous_state(p_state @extschema@.state) RETURNS @extschema@.state
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['legacy', 'mirrored', 'new_write']::@extschema@.state[])
           [pg_catalog.array_position(ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[], p_state)]
$$;
COMMENT ON FUNCTION @extschema@._previous_state(@extschema@.state) IS
    'internal: the state one step back of a state (where rollback goes), NULL from legacy and cutover';
REVOKE ALL ON FUNCTION @extschema@._previous_state(@extschema@.state) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@._rollback(name text, reason text)
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
    RETURN @extschema@._set_state(m.id, @extschema@._previous_state(m.state), 'rollback', reason, '{}');
END $$;

-- One way to add a result to a check run
CREATE FUNCTION @extschema@._check_row(p_rows jsonb, p_layer text, p_check_name text, p_ok boolean,
                                     p_violations bigint, p_detail jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
               'ordinal', pg_catalog.jsonb_array_length(p_rows) OPERATOR(pg_catalog.+) 1,
               'layer', p_layer, 'check_name', p_check_name,
               'ok', p_ok, 'violations', p_violations, 'detail', p_detail))
$$;
COMMENT ON FUNCTION @extschema@._check_row(jsonb, text, text, boolean, bigint, jsonb) IS
    'internal: the results of a check run so far (a jsonb array) with one more check''s result, numbered after them';
REVOKE ALL ON FUNCTION @extschema@._check_row(jsonb, text, text, boolean, bigint, jsonb) FROM PUBLIC;

CREATE FUNCTION @extschema@._resync_entity(p_members integer[], p_key jsonb) RETURNS bigint[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    x @extschema@.migrations;
    v_rows bigint[] := pg_catalog.array_fill(0::bigint, ARRAY[pg_catalog.cardinality(p_members)]);
BEGIN
    -- Member by member, the attribute members first and the owner last.
    -- Where the authority still holds the entity, the first touch already
    -- re-projects it in every member (the write path orders the owner's
    -- row before the attribute rows of one statement), so the order does
    -- not matter; where it no longer does, each member deletes its row or
    -- clears its columns, and an attribute row must go before the owner's
    -- row that a foreign key without a cascade ties it to.
    FOR i IN REVERSE pg_catalog.cardinality(p_members)..1 LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_members[i];
        v_rows[i] := @extschema@._resync_key(x.id, @extschema@._normalize_key(x, p_key));
    END LOOP;
    RETURN v_rows;
END $$;
COMMENT ON FUNCTION @extschema@._resync_entity(integer[], jsonb) IS
    'internal: re-sync one entity (a legacy key) from the authority in every migration of p_members (as _entity_members returns them, owner first), attribute members first; the rows each re-sync affected, in the order of p_members';
REVOKE ALL ON FUNCTION @extschema@._resync_entity(integer[], jsonb) FROM PUBLIC;
