-------------------------------------------------------------------------------
-- Definition
-------------------------------------------------------------------------------
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

CREATE FUNCTION @extschema@._check_options(p_options jsonb)
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

CREATE FUNCTION @extschema@._create_migration(name text, legacy regclass, target regclass,
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

CREATE FUNCTION @extschema@._require_column(rel regclass, col text, what text, must_be_not_null boolean)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    SELECT a.attnotnull INTO r FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) col
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('%s "%s" does not exist in table %s', what, col, rel);
    END IF;
    IF must_be_not_null AND NOT r.attnotnull THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s "%s" of table %s must be NOT NULL', what, col, rel),
            DETAIL = 'Rows are correlated on the key; a NULL key cannot be matched.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._require_column(regclass, text, text, boolean) IS
    'internal: raise 42703 unless a column exists (and 22023 unless NOT NULL when required)';

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

CREATE FUNCTION @extschema@.create_migration(name text, legacy regclass, target regclass,
    key text[] DEFAULT NULL, forward jsonb DEFAULT '{}', backward jsonb DEFAULT '{}',
    new_only text[] DEFAULT '{}', divergent text[] DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'define a migration from legacy to target (validates everything, leaves nothing behind on error); owners of both tables only';
