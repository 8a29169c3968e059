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
    @extschema@._remote_give_up(text, @extschema@.migrations, text, jsonb, jsonb),
    @extschema@._remote_step(text, text, jsonb),
    @extschema@._remote_parity_here(text, integer),
    @extschema@._remote_parity_report(text, integer),
    @extschema@._remote_tag(text),
    @extschema@.create_remote_migration(text, text, regclass, text, text, text[], jsonb, jsonb, text[], text[], jsonb),
    @extschema@.drop_remote_migration(text)
FROM PUBLIC;
