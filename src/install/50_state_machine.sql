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

CREATE FUNCTION @extschema@._next_state(p_state @extschema@.state) RETURNS @extschema@.state
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['mirrored', 'new_write', 'new_read', 'cutover']::@extschema@.state[])
           [pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read']::@extschema@.state[], p_state)]
$$;
COMMENT ON FUNCTION @extschema@._next_state(@extschema@.state) IS
    'internal: the state one step forward of a state (the default target of advance), NULL after cutover';
REVOKE ALL ON FUNCTION @extschema@._next_state(@extschema@.state) FROM PUBLIC;

CREATE FUNCTION @extschema@._previous_state(p_state @extschema@.state) RETURNS @extschema@.state
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['legacy', 'mirrored', 'new_write']::@extschema@.state[])
           [pg_catalog.array_position(ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[], p_state)]
$$;
COMMENT ON FUNCTION @extschema@._previous_state(@extschema@.state) IS
    'internal: the state one step back of a state (where rollback goes), NULL from legacy and cutover';
REVOKE ALL ON FUNCTION @extschema@._previous_state(@extschema@.state) FROM PUBLIC;

CREATE FUNCTION @extschema@._advance(name text, to_state @extschema@.state, reason text, force boolean)
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
    RETURN @extschema@._set_state(m.id, @extschema@._previous_state(m.state), 'rollback', reason, '{}');
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
        -- a migration across databases: this side, its replication, the switch in progress
        OPERATOR(pg_catalog.||) CASE WHEN rs.x IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('remote', rs.x) END
      FROM @extschema@._migration(name) m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
     CROSS JOIN LATERAL (SELECT @extschema@._remote_status_local(m.id) AS x) rs
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
