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

CREATE FUNCTION @extschema@._hand_over_keys(migration_id integer, to_target boolean) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_hand_over_keys' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._hand_over_keys(integer, boolean) IS
    'internal: move the sequence behind every mapped column of the new write authority past the keys both tables hold';
REVOKE ALL ON FUNCTION @extschema@._hand_over_keys(integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@._hand_over_table_keys(rel regclass) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_hand_over_table_keys' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._hand_over_table_keys(regclass) IS
    'internal: move the sequence behind every column of a table past the values it holds (the legacy side of a migration across databases, at a rollback)';
REVOKE ALL ON FUNCTION @extschema@._hand_over_table_keys(regclass) FROM PUBLIC;

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
            HINT = CASE WHEN EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.name OPERATOR(pg_catalog.=) p_name)
                        THEN pg_catalog.format('This database holds the legacy side of cross-database migration "%s": softmig.remote_status(%L) shows it; it is managed from its target database.', p_name, p_name)
                        ELSE 'softmig.migrations lists the migrations of this database.' END;
    END IF;
    RETURN m;
END $$;
COMMENT ON FUNCTION @extschema@._migration(text) IS
    'internal: the catalog row of a migration by name, 42704 if unknown';

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

CREATE FUNCTION @extschema@._install_triggers(p_id integer) RETURNS void
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

CREATE FUNCTION @extschema@._remove_triggers(p_id integer) RETURNS void
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

CREATE FUNCTION @extschema@._trigger_health(p_id integer) RETURNS jsonb
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

CREATE FUNCTION @extschema@._set_state(p_id integer, p_to @extschema@.state, p_action text,
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
