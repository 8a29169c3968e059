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

CREATE FUNCTION @extschema@._ddl_dropped() RETURNS event_trigger
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

CREATE FUNCTION @extschema@._ddl_altered() RETURNS event_trigger
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
CREATE EVENT TRIGGER softmig_ddl_dropped ON sql_drop
    EXECUTE FUNCTION @extschema@._ddl_dropped();
CREATE EVENT TRIGGER softmig_ddl_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'DROP INDEX', 'ALTER INDEX', 'CREATE TRIGGER', 'CREATE TABLE',
                 'ALTER TRIGGER', 'CREATE RULE')
    EXECUTE FUNCTION @extschema@._ddl_altered();
CREATE EVENT TRIGGER softmig_ddl_code ON ddl_command_end
    WHEN TAG IN ('CREATE CAST', 'ALTER DOMAIN', 'ALTER TYPE', 'ALTER FUNCTION', 'ALTER AGGREGATE',
                 'ALTER OPERATOR', 'ALTER OPERATOR CLASS', 'ALTER OPERATOR FAMILY')
    EXECUTE FUNCTION @extschema@._ddl_code();

REVOKE ALL ON FUNCTION @extschema@._ddl_dropped(), @extschema@._ddl_altered(), @extschema@._ddl_code(),
    @extschema@._ddl_start(), @extschema@._drop_approved(oid),
    @extschema@._reconcile_partitions(integer, text, oid[], oid[]),
    @extschema@._ddl_partitions(pg_ddl_command, boolean),
    @extschema@._refuse_untrusted(text, text, text, text) FROM PUBLIC;
