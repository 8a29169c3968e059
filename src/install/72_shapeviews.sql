-------------------------------------------------------------------------------
-- Shape views: both application builds write at once (rolling deploys).
-- A pair of routed views (70_readpath.sql), one in each table's shape, whose
-- writes go to the write authority of the moment through the mappings; the
-- other table follows through softmig's ordinary triggers.
-------------------------------------------------------------------------------
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
-- statement that writes "dst" from the view's row in the shape of table
-- "own", run by softmig._shape_write_trigger (C) with a kept plan.  Its
-- parameters, for a view of n columns (own's columns in attnum order):
-- $1..$n the new row, $n+1..$2n the old row, $2n+1..$3n whether the
-- statement changed each column (computed in C; own table only).
-- p_op: INSERT and UPDATE return the row written in the view's shape (the
-- authority's keys, generated columns computed); UPDATE NO RETURNING (for a
-- statement that needs no row back) and DELETE return nothing (PostgreSQL
-- reports the view's old row for a DELETE); CHECK is the query an UPDATE
-- runs first when dst has a GENERATED ALWAYS identity column: true when the
-- statement changes such a column (or, through the other shape, what it
-- maps from), '' when dst has none.
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
-- rights, and its two triggers, which carry the statements that write the
-- view's rows into either table (planned once per session, in C).
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
