-------------------------------------------------------------------------------
-- DDL on migrated tables: detected, never a silent wrong mirror
-------------------------------------------------------------------------------
-- Both event-trigger functions are SECURITY DEFINER: they run for whoever
-- issues DDL and must read and write softmig's catalog and re-prepare the
-- migration's statements (which _validate does as the table owners, never
-- as the definer).  search_path is pinned; EXECUTE is revoked from PUBLIC
-- (event triggers do not need it).

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
END $$;
COMMENT ON FUNCTION @extschema@._ddl_dropped() IS
    'internal: event trigger refusing DROP TABLE of a table that takes part in a migration';

CREATE FUNCTION @extschema@._ddl_altered() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_problem text;
BEGIN
    FOR r IN SELECT DISTINCT m.id, m.name, m.state, m.legacy, m.target, c.command_tag, c.object_identity
               FROM pg_catalog.pg_event_trigger_ddl_commands() c
               JOIN @extschema@.migrations m
                 ON c.objid OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
              WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        -- every statement the triggers will run must still prepare: a mapped
        -- column renamed, dropped or retyped incompatibly aborts the DDL
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
                RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                    MESSAGE = pg_catalog.format('%s on %s would break migration "%s"', r.command_tag, r.object_identity, r.name),
                    DETAIL = SQLERRM,
                    HINT = 'Change the mapping first (drop and re-create the migration in state legacy), or keep the column.';
        END;
        -- harmless DDL passes silently.  A missing key index is only warned
        -- about: pg_restore creates indexes after everything else (a
        -- history row per table would make every restore differ from its
        -- source), and without the index every mirrored write fails loudly
        -- (ON CONFLICT needs it), so nothing can go wrong silently.
        IF v_problem IS NOT NULL THEN
            RAISE WARNING USING MESSAGE = pg_catalog.format('migration "%s" cannot write its tables until this is fixed: %s', r.name, v_problem);
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_altered() IS
    'internal: event trigger re-validating a migration after DDL on its tables, recording it in history';

CREATE EVENT TRIGGER softmig_ddl_dropped ON sql_drop
    EXECUTE FUNCTION @extschema@._ddl_dropped();
CREATE EVENT TRIGGER softmig_ddl_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'DROP INDEX', 'ALTER INDEX', 'CREATE TRIGGER', 'CREATE TABLE')
    EXECUTE FUNCTION @extschema@._ddl_altered();

REVOKE ALL ON FUNCTION @extschema@._ddl_dropped(), @extschema@._ddl_altered() FROM PUBLIC;
