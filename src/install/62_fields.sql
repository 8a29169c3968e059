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
    PERFORM @extschema@._refuse_one_to_many(m.id, 'per-field authorities');
    PERFORM @extschema@._refuse_split_member(m.id, 'per-field authorities');
    IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migration "%s" spans two databases: its fields cannot change authority one by one', m.name),
            DETAIL = 'A field owned by the target while legacy owns the rest needs replication in both directions at once, which PostgreSQL 15 cannot run without echoing changes back.';
    END IF;
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
        -- the carriers must not feed target columns that stay with legacy
        FOR r IN SELECT mp.column_name, mp.expression FROM @extschema@.mappings mp
                  WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) 'forward'
                    AND mp.column_name::text OPERATOR(pg_catalog.<>) ALL (v_owned)
        LOOP
            IF @extschema@._expr_columns(r.expression) OPERATOR(pg_catalog.&&) v_partners THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('field "%s" cannot be handed to the target on its own', p_field),
                    DETAIL = pg_catalog.format('Legacy column(s) %s that carry it also feed target column "%s" (%s), which legacy keeps.',
                                               pg_catalog.array_to_string(v_partners, ', '), r.column_name, r.expression);
            END IF;
        END LOOP;
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

-------------------------------------------------------------------------------
-- Snapshot hydration
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._hydrate_exec(migration_id integer, rows jsonb, as_of pg_snapshot,
                                          authority jsonb, default_owner @extschema@.side)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_hydrate_exec' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._hydrate_exec(integer, jsonb, pg_snapshot, jsonb, @extschema@.side) IS
    'internal: the set-based statements of softmig.hydrate, run as the caller';

CREATE FUNCTION @extschema@._hydrate_entities(m @extschema@.migrations, p_keys jsonb)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_keys jsonb := '[]';
    v_key jsonb;
    v_quarantined jsonb;
    e jsonb;
    v_n bigint;
BEGIN
    IF p_keys IS NULL OR pg_catalog.jsonb_typeof(p_keys) OPERATOR(pg_catalog.<>) 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('rows of one_to_many migration "%s" must be a jsonb array of entity keys', m.name),
            HINT = pg_catalog.format('For example [{"%s": ...}]: each entity is brought in line with its authority.', m.legacy_key[1]);
    END IF;
    FOR e IN SELECT pg_catalog.jsonb_array_elements(p_keys) LOOP
        v_key := @extschema@._normalize_key(m, e);
        IF v_keys OPERATOR(pg_catalog.@>) pg_catalog.jsonb_build_array(v_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'rows name the same key twice';
        END IF;
        v_keys := v_keys OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(v_key);
    END LOOP;
    SELECT q.key INTO v_quarantined FROM @extschema@.quarantine q
     WHERE q.migration_id OPERATOR(pg_catalog.=) m.id
       AND pg_catalog.jsonb_build_array(q.key) OPERATOR(pg_catalog.<@) v_keys
     ORDER BY q.key LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SM005',
            MESSAGE = pg_catalog.format('cannot hydrate entity %s of migration "%s": it is quarantined', v_quarantined, m.name),
            HINT = 'softmig.release re-syncs a quarantined entity from its authority.';
    END IF;
    -- every entity in one statement: their locks are taken in one order
    v_n := @extschema@._resync_key(m.id, v_keys);
    PERFORM @extschema@._history(m.id, 'hydrate', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('entities', v_n, 'keys', v_keys));
    RETURN v_n;
END $$;
COMMENT ON FUNCTION @extschema@._hydrate_entities(@extschema@.migrations, jsonb) IS
    'internal: softmig.hydrate of a one_to_many migration: bring each entity named in a jsonb array of legacy keys in line with its authority';

CREATE FUNCTION @extschema@._hydrate_resync(p_id integer, p_keys jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_members integer[] := @extschema@._entity_members(p_id);
    m @extschema@.migrations;
    v_key jsonb;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    -- entity by entity in key order, in every member, as release does
    FOR v_key IN SELECT k FROM pg_catalog.jsonb_array_elements(p_keys) k ORDER BY k LOOP
        PERFORM @extschema@._resync_entity(v_members, @extschema@._normalize_key(m, v_key));
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._hydrate_resync(integer, jsonb) IS
    'internal: softmig.hydrate of a member of a split or a merge in mirrored: re-sync from legacy, in every member, the entities (a jsonb array of legacy keys) the member''s target lacks';

CREATE FUNCTION @extschema@._hydrate(p_name text, p_rows jsonb, p_as_of pg_snapshot)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    v_cols text[];
    v_bad text;
    v_authority jsonb;
    v_n bigint;
    v_partners integer[] := @extschema@._split_partners(m.id);
    v_who text;
BEGIN
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot hydrate migration "%s" in state %s', m.name, m.state),
            DETAIL = 'Hydration merges into a target that softmig keeps in step: states mirrored, new_write and new_read.';
    END IF;
    IF m.options OPERATOR(pg_catalog.->>) 'cardinality' OPERATOR(pg_catalog.=) 'one_to_many' THEN
        -- per entity: rows are legacy keys, the sets are read fresh under their locks (no snapshot)
        RETURN @extschema@._hydrate_entities(m, p_rows);
    END IF;
    IF p_rows IS NULL OR pg_catalog.jsonb_typeof(p_rows) OPERATOR(pg_catalog.<>) 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'rows must be a jsonb array of objects shaped like the target table';
    END IF;
    IF p_as_of IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'as_of must be the snapshot the rows were computed from',
            HINT = 'Take it with pg_current_snapshot() in the transaction that exported the data.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(p_rows) e
                WHERE pg_catalog.jsonb_typeof(e) OPERATOR(pg_catalog.<>) 'object') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'every element of rows must be a jsonb object';
    END IF;
    SELECT pg_catalog.array_agg(a.attname::text) INTO v_cols FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) m.target AND a.attnum OPERATOR(pg_catalog.>) 0
       AND NOT a.attisdropped AND a.attgenerated OPERATOR(pg_catalog.=) '';
    SELECT k INTO v_bad FROM pg_catalog.jsonb_array_elements(p_rows) e, pg_catalog.jsonb_object_keys(e) k
     WHERE k OPERATOR(pg_catalog.<>) ALL (v_cols) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('column "%s" of the hydrated rows is not a writable column of %s', v_bad, m.target);
    END IF;
    SELECT k INTO v_bad FROM pg_catalog.jsonb_array_elements(p_rows) e, pg_catalog.unnest(m.target_key) k
     WHERE NOT e ? k OR e OPERATOR(pg_catalog.->) k OPERATOR(pg_catalog.=) 'null'::jsonb LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('a hydrated row lacks key column "%s"', v_bad),
            HINT = pg_catalog.format('Every row needs the target key: %s.', pg_catalog.array_to_string(m.target_key, ', '));
    END IF;
    IF (SELECT pg_catalog.count(*) OPERATOR(pg_catalog.<>) pg_catalog.count(DISTINCT k)
          FROM (SELECT (SELECT pg_catalog.jsonb_object_agg(kk, e OPERATOR(pg_catalog.->) kk)
                          FROM pg_catalog.unnest(m.target_key) kk) AS k
                  FROM pg_catalog.jsonb_array_elements(p_rows) e) x) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'rows name the same key twice';
    END IF;
    -- a member of a merge writes its own columns of the shared table; those
    -- no member maps belong to the owner (a member of a split has a target
    -- table of its own: all of it is the member's)
    IF EXISTS (SELECT 1 FROM @extschema@.migrations x
                WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners) AND x.target OPERATOR(pg_catalog.=) m.target) THEN
        SELECT s.k, s.who INTO v_bad, v_who
          FROM (SELECT DISTINCT k,
                       COALESCE((SELECT x.name FROM @extschema@.mappings mp
                                   JOIN @extschema@.migrations x ON x.id OPERATOR(pg_catalog.=) mp.migration_id
                                  WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners OPERATOR(pg_catalog.||) m.id)
                                    AND x.target OPERATOR(pg_catalog.=) m.target
                                    AND mp.direction OPERATOR(pg_catalog.=) 'forward'
                                    AND mp.column_name::text OPERATOR(pg_catalog.=) k
                                  ORDER BY x.id LIMIT 1),
                                COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name)) AS who
                  FROM pg_catalog.jsonb_array_elements(p_rows) e, pg_catalog.jsonb_object_keys(e) k
                 WHERE k OPERATOR(pg_catalog.<>) ALL (m.target_key)) s
         WHERE s.who OPERATOR(pg_catalog.<>) m.name
         ORDER BY s.k LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('column "%s" of the hydrated rows belongs to migration "%s"', v_bad, v_who),
                DETAIL = pg_catalog.format('The members of a merge into %s write disjoint columns of it; the columns no member maps belong to the owner, "%s".',
                                           m.target::regclass, COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name)),
                HINT = pg_catalog.format('Hydrate column "%s" through migration "%s".', v_bad, v_who);
        END IF;
    END IF;

    -- who owns what: unmapped target columns and handed-over fields belong
    -- to the target; in mirrored the mapped ones belong to legacy
    SELECT COALESCE(pg_catalog.jsonb_object_agg(c, 'new'), '{}') INTO v_authority
      FROM pg_catalog.unnest(v_cols) c
     WHERE NOT EXISTS (SELECT 1 FROM @extschema@.mappings mp
                        WHERE mp.migration_id OPERATOR(pg_catalog.=) m.id
                          AND mp.direction OPERATOR(pg_catalog.=) 'forward'
                          AND mp.column_name::text OPERATOR(pg_catalog.=) c)
        OR EXISTS (SELECT 1 FROM @extschema@.field_authority fa
                    WHERE fa.migration_id OPERATOR(pg_catalog.=) m.id AND fa.field::text OPERATOR(pg_catalog.=) c
                      AND fa.side OPERATOR(pg_catalog.=) 'new');

    v_n := @extschema@._hydrate_exec(m.id, p_rows, p_as_of, v_authority,
        CASE WHEN m.state OPERATOR(@extschema@.=) 'mirrored' THEN 'legacy' ELSE 'new' END::@extschema@.side);
    PERFORM @extschema@._history(m.id, 'hydrate', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('rows', pg_catalog.jsonb_array_length(p_rows), 'changed', v_n,
                                      'as_of', p_as_of::text));
    RETURN v_n;
END $$;
COMMENT ON FUNCTION @extschema@._hydrate(text, jsonb, pg_snapshot) IS 'internal: implementation of softmig.hydrate';

CREATE FUNCTION @extschema@.hydrate(name text, rows jsonb, as_of pg_snapshot)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.hydrate(text, jsonb, pg_snapshot) IS
    'merge target-shaped rows computed from snapshot as_of into the target: live writes the snapshot did not see win, deleted keys stay deleted; returns rows changed; owners only';

REVOKE ALL ON FUNCTION
    @extschema@._hydrate_exec(integer, jsonb, pg_snapshot, jsonb, @extschema@.side),
    @extschema@._hydrate_entities(@extschema@.migrations, jsonb),
    @extschema@._hydrate_resync(integer, jsonb),
    @extschema@._hydrate(text, jsonb, pg_snapshot)
FROM PUBLIC;
