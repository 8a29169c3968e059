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
