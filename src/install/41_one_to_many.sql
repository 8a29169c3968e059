-------------------------------------------------------------------------------
-- One-to-many: one legacy row implies a set of target rows (doc/shapes.md)
-------------------------------------------------------------------------------
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
