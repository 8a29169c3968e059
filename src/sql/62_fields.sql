-------------------------------------------------------------------------------
-- Per-field authority and the merge function
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._expr_columns(expr text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'softmig_expr_columns_sql' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION @extschema@._expr_columns(text) IS
    'internal: the column names a mapping expression refers to';

CREATE FUNCTION @extschema@.merge(current jsonb, incoming jsonb, incoming_side @extschema@.side,
                                  authority jsonb DEFAULT '{}', default_owner @extschema@.side DEFAULT 'legacy',
                                  fresh text[] DEFAULT '{}',
                                  OUT merged jsonb, OUT taken text[])
    AS 'MODULE_PATHNAME', 'softmig_merge' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.merge(jsonb, jsonb, @extschema@.side, jsonb, @extschema@.side, text[]) IS
    'the per-field merge rule: a field takes the incoming value iff the incoming side owns it (authority, else default_owner) and no live write newer than the incoming image touched it (fresh); returns the merged image and the fields taken';

CREATE FUNCTION @extschema@._set_field_authority(p_name text, p_field name, p_side @extschema@.side)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    v_fwd text;
    v_partners text[];
    v_owned text[];
    r record;
    c text;
BEGIN
    IF p_field IS NULL OR p_side IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'field and side must not be null';
    END IF;
    m := @extschema@._lock_migration(m.id);
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['legacy', 'mirrored']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('per-field authority of migration "%s" cannot change in state %s', m.name, m.state),
            DETAIL = 'From new_write on, every field belongs to the target.';
    END IF;
    SELECT mp.expression INTO v_fwd FROM @extschema@.mappings mp
     WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) 'forward'
       AND mp.column_name OPERATOR(pg_catalog.=) p_field;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('"%s" is not a mapped column of target table %s', p_field, m.target),
            HINT = 'Per-field authority applies to target columns fed by the forward mapping.';
    END IF;
    IF p_field::text OPERATOR(pg_catalog.=) ANY (m.target_key) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('key column "%s" cannot change authority on its own', p_field);
    END IF;

    IF p_side OPERATOR(pg_catalog.=) 'legacy' THEN
        IF NOT COALESCE((SELECT e.open FROM @extschema@.envelope e WHERE e.migration_id OPERATOR(pg_catalog.=) m.id), true) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('field "%s" cannot move back to legacy: the rollback envelope of migration "%s" is closed', p_field, m.name);
        END IF;
        DELETE FROM @extschema@.field_authority
         WHERE migration_id OPERATOR(pg_catalog.=) m.id AND field_authority.field OPERATOR(pg_catalog.=) p_field;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('field "%s" of migration "%s" already belongs to legacy', p_field, m.name);
        END IF;
    ELSE
        -- the fields the target will own, this one included
        SELECT pg_catalog.array_agg(fa.field::text) OPERATOR(pg_catalog.||) ARRAY[p_field::text] INTO v_owned
          FROM @extschema@.field_authority fa WHERE fa.migration_id OPERATOR(pg_catalog.=) m.id;
        v_owned := COALESCE(v_owned, ARRAY[p_field::text]);
        -- the legacy columns that carry it: backward mappings that read it
        v_partners := '{}';
        FOR r IN SELECT mp.column_name, mp.expression FROM @extschema@.mappings mp
                  WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) 'backward'
        LOOP
            IF p_field::text OPERATOR(pg_catalog.=) ANY (@extschema@._expr_columns(r.expression)) THEN
                IF NOT (@extschema@._expr_columns(r.expression) OPERATOR(pg_catalog.<@) v_owned) THEN
                    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                        MESSAGE = pg_catalog.format('field "%s" cannot be handed to the target on its own', p_field),
                        DETAIL = pg_catalog.format('Legacy column "%s" (%s) also reads fields legacy still owns.',
                                                   r.column_name, r.expression);
                END IF;
                IF r.column_name::text OPERATOR(pg_catalog.=) ANY (m.legacy_key) THEN
                    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                        MESSAGE = pg_catalog.format('field "%s" feeds legacy key column "%s"', p_field, r.column_name);
                END IF;
                v_partners := v_partners OPERATOR(pg_catalog.||) r.column_name::text;
            END IF;
        END LOOP;
        IF pg_catalog.cardinality(v_partners) OPERATOR(pg_catalog.=) 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('field "%s" has no backward mapping, so legacy could not follow the target''s writes', p_field);
        END IF;
        FOREACH c IN ARRAY @extschema@._expr_columns(v_fwd) LOOP
            IF c OPERATOR(pg_catalog.<>) ALL (v_partners) THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('field "%s" cannot be handed to the target on its own', p_field),
                    DETAIL = pg_catalog.format('Its forward mapping (%s) reads legacy column "%s", which does not carry it back.', v_fwd, c);
            END IF;
        END LOOP;
        INSERT INTO @extschema@.field_authority (migration_id, field, side, legacy_columns)
        VALUES (m.id, p_field, 'new', v_partners)
        ON CONFLICT (migration_id, field) DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('field "%s" of migration "%s" already belongs to the target', p_field, m.name);
        END IF;
    END IF;
    -- writers switch rules at their next lock on either table
    PERFORM @extschema@._lock_tables(m, NULL);
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._validate(m.id);
    PERFORM @extschema@._history(m.id, 'set_field_authority', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('field', p_field, 'side', p_side));
END $$;
COMMENT ON FUNCTION @extschema@._set_field_authority(text, name, @extschema@.side) IS
    'internal: implementation of softmig.set_field_authority';

CREATE FUNCTION @extschema@.set_field_authority(name text, field name, side @extschema@.side)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.set_field_authority(text, name, @extschema@.side) IS
    'hand one target field to the target (side new) before the whole table moves, or back (side legacy); owners only';

REVOKE ALL ON FUNCTION
    @extschema@._set_field_authority(text, name, @extschema@.side)
FROM PUBLIC;
