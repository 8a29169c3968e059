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
    @extschema@._shape_columns(integer, regclass, text),
    @extschema@._shape_lists(integer, regclass, text),
    @extschema@._reset_discovery(text),
    @extschema@._readpath_catalog_changed(),
    @extschema@._readpath_reset_switches(),
    @extschema@._readpath_before_drop()
FROM PUBLIC;
