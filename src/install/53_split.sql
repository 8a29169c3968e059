-------------------------------------------------------------------------------
-- Split: one legacy table, several target tables with disjoint columns
-- (doc/shapes.md "Split").  The member created first owns the entity's
-- existence; the others name it with option attribute_of.
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._split_owner(p_name text, p_legacy regclass, p_target regclass)
RETURNS @extschema@.migrations
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o @extschema@.migrations;
BEGIN
    SELECT * INTO o FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" named by option attribute_of does not exist', p_name),
            HINT = 'Create the migration that owns the entity first.';
    END IF;
    IF o.options OPERATOR(pg_catalog.?) 'attribute_of' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('migration "%s" is itself an attribute member of migration "%s"',
                                        o.name, o.options OPERATOR(pg_catalog.->>) 'attribute_of'),
            HINT = pg_catalog.format('Name the migration that owns the entity: "%s".', o.options OPERATOR(pg_catalog.->>) 'attribute_of');
    END IF;
    IF o.legacy OPERATOR(pg_catalog.<>) p_legacy::pg_catalog.oid
       AND o.target OPERATOR(pg_catalog.<>) p_target::pg_catalog.oid THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('migration "%s" migrates neither table %s nor into table %s', o.name, p_legacy, p_target),
            DETAIL = pg_catalog.format('An attribute member shares the legacy table (%s, a split) or the target table (%s, a merge) of the migration that owns the entity.',
                                       o.legacy::regclass, o.target::regclass);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) o.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migration "%s" is a cross-database migration and cannot own a split or a merge', o.name),
            DETAIL = 'The members of a split or a merge move only as one group, and a cross-database migration cannot be a group member.';
    END IF;
    IF o.state OPERATOR(@extschema@.<>) 'legacy' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is in state %s', o.name, o.state),
            DETAIL = 'Attribute members are added while the migration that owns the entity is in state legacy.',
            HINT = 'Roll it back to legacy first.';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.group_members gm WHERE gm.migration_id OPERATOR(pg_catalog.=) o.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is a member of a group', o.name),
            HINT = 'Create every member of the split first, then the group of all of them (softmig.drop_group, then softmig.create_group).';
    END IF;
    -- tools that act on one member's tables alone (_refuse_split_member), and
    -- quarantines the new member would not share
    IF EXISTS (SELECT 1 FROM @extschema@.field_authority f
                WHERE f.migration_id OPERATOR(pg_catalog.=) o.id AND f.side OPERATOR(pg_catalog.=) 'new')
       OR EXISTS (SELECT 1 FROM @extschema@.shape_views v WHERE v.migration_id OPERATOR(pg_catalog.=) o.id)
       OR EXISTS (SELECT 1 FROM @extschema@.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) o.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migration "%s" has fields given to the target, shape views or quarantined entities', o.name),
            DETAIL = 'Per-field authority and shape views are not supported for the members of a split or a merge, and an entity quarantined in the owner alone would not be quarantined in the new member.',
            HINT = 'Hand the fields back (softmig.set_field_authority), drop the shape views (softmig.drop_shape_views) and release the entities (softmig.release) first; see doc/shapes.md, "Not built yet".';
    END IF;
    RETURN o;
END $$;
COMMENT ON FUNCTION @extschema@._split_owner(text, regclass, regclass) IS
    'internal: the migration option attribute_of names, checked to own a split of table p_legacy or a merge into table p_target: 42704, 22023, 55000, 0A000';

CREATE FUNCTION @extschema@._split_member_check(o @extschema@.migrations, p_key text[], p_maps jsonb,
                                                p_others text[], p_merge boolean)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- the side the members share: legacy (a split) or target (a merge)
    v_side text := CASE WHEN p_merge THEN 'target' ELSE 'legacy' END;
    v_own text[] := CASE WHEN p_merge THEN o.target_key ELSE o.legacy_key END;
    v_mine text[];
    v_both text[];
BEGIN
    IF p_key OPERATOR(pg_catalog.<>) v_own THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('the %skey of an attribute member must be the %skey of migration "%s"',
                                        CASE WHEN p_merge THEN 'target ' ELSE '' END,
                                        CASE WHEN p_merge THEN 'target ' ELSE '' END, o.name),
            DETAIL = pg_catalog.format('Key %s; the entity''s key is %s.', p_key::text, v_own::text),
            HINT = 'An attribute row belongs to exactly one entity: its key maps to the owner''s key.';
    END IF;
    -- the columns of the shared table this member writes (resolved: given or same-named)
    SELECT pg_catalog.array_agg(x.column_name ORDER BY x.column_name) INTO v_mine
      FROM pg_catalog.jsonb_to_recordset(p_maps) AS x(direction text, column_name text)
     WHERE x.direction OPERATOR(pg_catalog.=) CASE WHEN p_merge THEN 'forward' ELSE 'backward' END
       AND x.column_name OPERATOR(pg_catalog.<>) ALL (p_key);
    IF v_mine IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('an attribute member of migration "%s" must map a %s column besides the key', o.name, v_side),
            HINT = CASE WHEN p_merge THEN 'Map the attribute columns forward: {"target_column": "expression over legacy columns"}.'
                        ELSE 'Map the attribute columns backward: {"legacy_column": "expression over target columns"}.' END;
    END IF;
    SELECT pg_catalog.array_agg(k ORDER BY k) INTO v_both
      FROM pg_catalog.unnest(v_mine) k WHERE k OPERATOR(pg_catalog.=) ANY (p_others);
    IF v_both IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s columns %s are mapped by another member of the %s of migration "%s"',
                                        v_side, pg_catalog.array_to_string(v_both, ', '),
                                        CASE WHEN p_merge THEN 'merge' ELSE 'split' END, o.name),
            DETAIL = pg_catalog.format('The members of a %s map disjoint columns of the %s table (but for its key).',
                                       CASE WHEN p_merge THEN 'merge' ELSE 'split' END, v_side);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[], boolean) IS
    'internal: raise 22023 unless an attribute member (its resolved mappings p_maps) has its owner''s key (legacy key of a split, target key of a merge) and maps columns of the shared table, none another member maps';

CREATE FUNCTION @extschema@._split_partners(p_id integer) RETURNS integer[]
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    -- every other migration of the split p_id takes part in (owner and attribute members)
    WITH me AS (SELECT COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name) AS owner
                  FROM @extschema@.migrations m WHERE m.id OPERATOR(pg_catalog.=) p_id)
    SELECT COALESCE(pg_catalog.array_agg(x.id ORDER BY x.id), '{}')
      FROM @extschema@.migrations x, me
     WHERE x.id OPERATOR(pg_catalog.<>) p_id
       AND (x.name OPERATOR(pg_catalog.=) me.owner
            OR x.options OPERATOR(pg_catalog.->>) 'attribute_of' OPERATOR(pg_catalog.=) me.owner)
$$;
COMMENT ON FUNCTION @extschema@._split_partners(integer) IS
    'internal: the other migrations of the split a migration takes part in (empty when none)';

CREATE FUNCTION @extschema@._entity_members(p_id integer) RETURNS integer[]
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_partners integer[] := @extschema@._split_partners(p_id);
    v_all integer[];
    v_odd text;
BEGIN
    IF pg_catalog.cardinality(v_partners) OPERATOR(pg_catalog.=) 0 THEN
        RETURN ARRAY[p_id];
    END IF;
    -- the owner (no option attribute_of) first, then the attribute members
    SELECT pg_catalog.array_agg(x.id ORDER BY x.options OPERATOR(pg_catalog.?) 'attribute_of', x.id) INTO v_all
      FROM @extschema@.migrations x
     WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners OPERATOR(pg_catalog.||) p_id);
    -- one key names the entity in every member: the members of a split share
    -- the legacy table and key; those of a merge must name the shared target
    -- key alike (same legacy key columns, same forward key mapping)
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(x.name), ', ' ORDER BY x.name) INTO v_odd
      FROM @extschema@.migrations x, @extschema@.migrations o
     WHERE x.id OPERATOR(pg_catalog.=) ANY (v_all) AND o.id OPERATOR(pg_catalog.=) v_all[1]
       AND (x.legacy_key OPERATOR(pg_catalog.<>) o.legacy_key
            OR EXISTS (SELECT 1 FROM @extschema@.mappings a
                         FULL JOIN @extschema@.mappings b
                           ON b.migration_id OPERATOR(pg_catalog.=) o.id AND b.direction OPERATOR(pg_catalog.=) 'forward'
                          AND b.column_name OPERATOR(pg_catalog.=) a.column_name
                        WHERE a.migration_id OPERATOR(pg_catalog.=) x.id AND a.direction OPERATOR(pg_catalog.=) 'forward'
                          AND a.column_name OPERATOR(pg_catalog.=) ANY (x.target_key)
                          AND b.expression IS DISTINCT FROM a.expression));
    IF v_odd IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('migrations %s name the entity by other legacy keys than migration "%s"',
                                        v_odd, (SELECT x.name FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) v_all[1])),
            DETAIL = 'Quarantine, release and the re-sync of a missing entity by hydrate act on an entity in every member of a merge, which needs the same legacy key columns mapped to the target key by the same expressions in each.',
            HINT = 'See doc/shapes.md, "Quarantine and release of a split or a merge".';
    END IF;
    RETURN v_all;
END $$;
COMMENT ON FUNCTION @extschema@._entity_members(integer) IS
    'internal: the migrations an entity of migration p_id spans, owner first: p_id alone, or every member of its split or merge (0A000 when a merge''s members name the entity by different legacy keys)';
REVOKE ALL ON FUNCTION @extschema@._entity_members(integer) FROM PUBLIC;

CREATE FUNCTION @extschema@._resync_entity(p_members integer[], p_key jsonb) RETURNS bigint[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    x @extschema@.migrations;
    v_rows bigint[] := pg_catalog.array_fill(0::bigint, ARRAY[pg_catalog.cardinality(p_members)]);
BEGIN
    -- Member by member, the attribute members first and the owner last.
    -- Where the authority still holds the entity, the first touch already
    -- re-projects it in every member (the write path orders the owner's
    -- row before the attribute rows of one statement), so the order does
    -- not matter; where it no longer does, each member deletes its row or
    -- clears its columns, and an attribute row must go before the owner's
    -- row that a foreign key without a cascade ties it to.
    FOR i IN REVERSE pg_catalog.cardinality(p_members)..1 LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_members[i];
        v_rows[i] := @extschema@._resync_key(x.id, @extschema@._normalize_key(x, p_key));
    END LOOP;
    RETURN v_rows;
END $$;
COMMENT ON FUNCTION @extschema@._resync_entity(integer[], jsonb) IS
    'internal: re-sync one entity (a legacy key) from the authority in every migration of p_members (as _entity_members returns them, owner first), attribute members first; the rows each re-sync affected, in the order of p_members';
REVOKE ALL ON FUNCTION @extschema@._resync_entity(integer[], jsonb) FROM PUBLIC;

CREATE FUNCTION @extschema@._refuse_split_member(p_id integer, p_what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_partners integer[] := @extschema@._split_partners(p_id);
    m @extschema@.migrations;
    v_shape text;
BEGIN
    IF pg_catalog.cardinality(v_partners) OPERATOR(pg_catalog.=) 0 THEN
        RETURN;
    END IF;
    SELECT * INTO m FROM @extschema@.migrations x WHERE x.id OPERATOR(pg_catalog.=) p_id;
    v_shape := CASE WHEN EXISTS (SELECT 1 FROM @extschema@.migrations x
                                  WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners)
                                    AND x.target OPERATOR(pg_catalog.=) m.target)
                    THEN 'merge' ELSE 'split' END;
    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
        MESSAGE = pg_catalog.format('%s are not supported for migration "%s": it is a member of a %s', p_what, m.name, v_shape),
        DETAIL = pg_catalog.format('The entity''s rows span the tables of migrations %s; this tool would act on the tables of one member alone.',
                                   (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(x.name), ', ' ORDER BY x.name)
                                      FROM @extschema@.migrations x
                                     WHERE x.id OPERATOR(pg_catalog.=) ANY (v_partners || p_id))),
        HINT = 'See doc/shapes.md, "Not built yet".';
END $$;
COMMENT ON FUNCTION @extschema@._refuse_split_member(integer, text) IS
    'internal: raise 0A000 when migration p_id is a member of a split or a merge (p_what, plural, works on one member''s tables only)';
REVOKE ALL ON FUNCTION @extschema@._refuse_split_member(integer, text) FROM PUBLIC;

CREATE FUNCTION @extschema@._split_group_check(p_ids integer[], p_group text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    -- a table in several migrations is written by all of them: they move together
    FOR r IN SELECT m.name, x.name AS partner,
                    (CASE WHEN m.legacy OPERATOR(pg_catalog.=) x.legacy THEN m.legacy ELSE m.target END)::regclass AS rel
               FROM @extschema@.migrations m
              CROSS JOIN LATERAL pg_catalog.unnest(@extschema@._split_partners(m.id)) p(id)
               JOIN @extschema@.migrations x ON x.id OPERATOR(pg_catalog.=) p.id
              WHERE m.id OPERATOR(pg_catalog.=) ANY (p_ids) AND p.id OPERATOR(pg_catalog.<>) ALL (p_ids)
              ORDER BY 1, 2 LOOP
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" shares table %s with migration "%s", which is not a member of group "%s"',
                                        r.name, r.rel, r.partner, p_group),
            HINT = 'The members of a split move only together: put all of them in one group.';
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._split_group_check(integer[], text) IS
    'internal: raise 55000 unless every migration of a split among p_ids has all its partners among them too';

REVOKE ALL ON FUNCTION
    @extschema@._split_owner(text, regclass, regclass),
    @extschema@._split_member_check(@extschema@.migrations, text[], jsonb, text[], boolean),
    @extschema@._split_partners(integer),
    @extschema@._split_group_check(integer[], text)
FROM PUBLIC;
