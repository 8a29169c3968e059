-------------------------------------------------------------------------------
-- Rollback envelope and forward-fix tools (tables in 26_envelope_catalog.sql)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._resync_key(migration_id integer, key jsonb) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_resync_key' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._resync_key(integer, jsonb) IS
    'internal: re-project one entity from the authoritative table, as the caller';

CREATE FUNCTION @extschema@._resync_all(migration_id integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_resync_all' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._resync_all(integer) IS
    'internal: rebuild legacy from the target''s projection (new_write/new_read), as the caller';

CREATE FUNCTION @extschema@._note_new_only(p_id integer, p_count bigint, p_keys jsonb,
                                           p_reason text, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e @extschema@.envelope;
    m @extschema@.migrations;
BEGIN
    INSERT INTO @extschema@.envelope (migration_id) VALUES (p_id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT e FROM @extschema@.envelope WHERE migration_id OPERATOR(pg_catalog.=) p_id FOR UPDATE;
    UPDATE @extschema@.envelope
       SET open = false,
           new_only_count = new_only_count OPERATOR(pg_catalog.+) p_count,
           closed_at = COALESCE(closed_at, pg_catalog.now()),
           reason = COALESCE(reason, p_reason),
           first_key = COALESCE(first_key, p_keys),
           closed_by = COALESCE(closed_by, p_actor::name)
     WHERE migration_id OPERATOR(pg_catalog.=) p_id;
    IF e.open THEN
        SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
        INSERT INTO @extschema@.history_log (migration_id, actor, action, from_state, to_state, reason, detail)
        VALUES (p_id, p_actor::name, 'envelope_close', m.state, m.state, p_reason,
                pg_catalog.jsonb_build_object('first_key', p_keys, 'automatic', true));
        PERFORM @extschema@._invalidate(m.legacy, m.target);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._note_new_only(integer, bigint, jsonb, text, text) IS
    'internal: the projection saw rows legacy cannot represent: close the envelope, count them';

CREATE FUNCTION @extschema@.envelope(name text) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._envelope_json((@extschema@._migration(name)).id)
$$;
COMMENT ON FUNCTION @extschema@.envelope(text) IS
    'the rollback envelope: open, closed_at, reason, first_key, new_only_count';

CREATE FUNCTION @extschema@._close_envelope(name text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    e @extschema@.envelope;
BEGIN
    PERFORM @extschema@._require_nonblank(reason, 'closing the envelope needs a reason');
    m := @extschema@._lock_migration(m.id);
    INSERT INTO @extschema@.envelope (migration_id) VALUES (m.id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT e FROM @extschema@.envelope WHERE migration_id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    IF NOT e.open THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('the rollback envelope of migration "%s" is already closed', m.name),
            DETAIL = pg_catalog.format('Closed because: %s', e.reason);
    END IF;
    UPDATE @extschema@.envelope
       SET open = false, closed_at = pg_catalog.now(), reason = _close_envelope.reason,
           closed_by = @extschema@._actor()
     WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'envelope_close', m.state, m.state, reason, '{"automatic": false}');
END $$;
COMMENT ON FUNCTION @extschema@._close_envelope(text, text) IS 'internal: implementation of softmig.close_envelope';

CREATE FUNCTION @extschema@.close_envelope(name text, reason text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.close_envelope(text, text) IS
    'close the rollback envelope on purpose (approves new-only writes under on_new_only = reject); owners of both tables only';

CREATE FUNCTION @extschema@._key_typed(migration_id integer, key jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_normalize_key' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._key_typed(integer, jsonb) IS
    'internal: an entity key with its values cast to the legacy key types, as the legacy owner';

CREATE FUNCTION @extschema@._normalize_key(m @extschema@.migrations, key jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v_out jsonb;
BEGIN
    IF key IS NULL OR pg_catalog.jsonb_typeof(key) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'key must be a jsonb object of the legacy key columns',
            HINT = pg_catalog.format('For example {"%s": ...}.', m.legacy_key[1]);
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(key) LOOP
        IF k OPERATOR(pg_catalog.<>) ALL (m.legacy_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('"%s" is not a key column of migration "%s"', k, m.name),
                HINT = pg_catalog.format('The key columns are: %s.', pg_catalog.array_to_string(m.legacy_key, ', '));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY m.legacy_key LOOP
        IF NOT key ? k OR key OPERATOR(pg_catalog.->) k OPERATOR(pg_catalog.=) 'null'::jsonb THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('key lacks column "%s"', k);
        END IF;
    END LOOP;
    -- the casts run as the legacy table's owner (C), never as the catalog owner
    v_out := @extschema@._key_typed(m.id, key);
    RETURN v_out;
END $$;
COMMENT ON FUNCTION @extschema@._normalize_key(@extschema@.migrations, jsonb) IS
    'internal: validate an entity key and type its values like the legacy key columns';

CREATE FUNCTION @extschema@._quarantine(name text, key jsonb, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    x @extschema@.migrations;
    v_member integer;
    v_key jsonb;
    v_xkey jsonb;
BEGIN
    PERFORM @extschema@._require_nonblank(reason, 'quarantine needs a reason');
    v_key := @extschema@._normalize_key(m, key);
    -- the entity in every member of a split or a merge, owner first
    FOREACH v_member IN ARRAY @extschema@._entity_members(m.id) LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) v_member;
        v_xkey := @extschema@._normalize_key(x, v_key);
        INSERT INTO @extschema@.quarantine (migration_id, key, reason, actor)
        VALUES (x.id, v_xkey, reason, @extschema@._actor())
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
                MESSAGE = pg_catalog.format('entity %s of migration "%s" is already quarantined', v_xkey, x.name);
        END IF;
        PERFORM @extschema@._invalidate(x.legacy, x.target);
        PERFORM @extschema@._history(x.id, 'quarantine', x.state, x.state, reason,
                                     pg_catalog.jsonb_build_object('key', v_xkey)
                                     OPERATOR(pg_catalog.||) CASE WHEN x.id OPERATOR(pg_catalog.=) m.id THEN '{}'::jsonb
                                                                  ELSE pg_catalog.jsonb_build_object('via', m.name) END);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._quarantine(text, jsonb, text) IS 'internal: implementation of softmig.quarantine';

CREATE FUNCTION @extschema@.quarantine(name text, key jsonb, reason text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.quarantine(text, jsonb, text) IS
    'exclude one entity (legacy key as jsonb) from projection and parity and refuse writes to it on both tables; owners only';

CREATE FUNCTION @extschema@._release(name text, key jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    x @extschema@.migrations;
    v_members integer[] := @extschema@._entity_members(m.id);
    v_member integer;
    v_key jsonb;
    v_xkey jsonb;
    v_rows bigint[];
BEGIN
    v_key := @extschema@._normalize_key(m, key);
    DELETE FROM @extschema@.quarantine
     WHERE migration_id OPERATOR(pg_catalog.=) m.id AND quarantine.key OPERATOR(pg_catalog.=) v_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('entity %s of migration "%s" is not quarantined', v_key, m.name);
    END IF;
    -- a split or a merge: released in every member before any re-sync, for
    -- one member's re-sync writes the table it shares with the others
    FOREACH v_member IN ARRAY v_members LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) v_member;
        DELETE FROM @extschema@.quarantine
         WHERE migration_id OPERATOR(pg_catalog.=) x.id
           AND quarantine.key OPERATOR(pg_catalog.=) @extschema@._normalize_key(x, v_key);
        PERFORM @extschema@._invalidate(x.legacy, x.target);
    END LOOP;
    -- the other table takes the authoritative version of the entity again,
    -- in every member; each member's history records it, owner first
    v_rows := @extschema@._resync_entity(v_members, v_key);
    FOR i IN 1..pg_catalog.cardinality(v_members) LOOP
        SELECT * INTO STRICT x FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) v_members[i];
        v_xkey := @extschema@._normalize_key(x, v_key);
        PERFORM @extschema@._history(x.id, 'release', x.state, x.state, NULL,
                                     pg_catalog.jsonb_build_object('key', v_xkey, 'resynced_rows', v_rows[i])
                                     OPERATOR(pg_catalog.||) CASE WHEN x.id OPERATOR(pg_catalog.=) m.id THEN '{}'::jsonb
                                                                  ELSE pg_catalog.jsonb_build_object('via', m.name) END);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._release(text, jsonb) IS 'internal: implementation of softmig.release';

CREATE FUNCTION @extschema@.release(name text, key jsonb)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.release(text, jsonb) IS
    'end a quarantine and re-sync the entity from the authoritative table; owners only';

CREATE FUNCTION @extschema@._shadow_disable(name text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    PERFORM @extschema@._require_nonblank(reason, 'shadow_disable needs a reason');
    m := @extschema@._lock_migration(m.id);
    IF m.state OPERATOR(@extschema@.<>) ALL (ARRAY['mirrored', 'new_write', 'new_read']::@extschema@.state[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" has no shadow writes in state %s', m.name, m.state);
    END IF;
    INSERT INTO @extschema@.shadow (migration_id, reason, actor) VALUES (m.id, reason, @extschema@._actor())
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('shadow writes of migration "%s" are already disabled', m.name);
    END IF;
    -- in-flight writers finish with the projection, later ones without it
    PERFORM @extschema@._lock_tables(m, NULL);
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(m.id, 'shadow_disable', m.state, m.state, reason, '{}');
END $$;
COMMENT ON FUNCTION @extschema@._shadow_disable(text, text) IS 'internal: implementation of softmig.shadow_disable';

CREATE FUNCTION @extschema@.shadow_disable(name text, reason text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.shadow_disable(text, text) IS
    'stop writing the non-authoritative table without changing authority (when the projection itself is broken); owners only';

CREATE FUNCTION @extschema@._shadow_enable(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_rows bigint := 0;
BEGIN
    m := @extschema@._lock_migration(m.id);
    -- writers wait while the other table catches up
    PERFORM @extschema@._lock_tables(m, NULL);
    DELETE FROM @extschema@.shadow WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('shadow writes of migration "%s" are not disabled', m.name);
    END IF;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    IF m.state OPERATOR(@extschema@.=) 'mirrored' THEN
        -- what was missed is re-synced by the backfill machinery: a new
        -- mirroring epoch (rows written before now are correctable) and a
        -- new backfill, which advance to new_write waits for
        UPDATE @extschema@.migrations
           SET mirror_snapshot = pg_catalog.pg_current_snapshot(), mirror_xid = pg_catalog.pg_current_xact_id()
         WHERE id OPERATOR(pg_catalog.=) m.id;
        DELETE FROM @extschema@.backfill_progress WHERE migration_id OPERATOR(pg_catalog.=) m.id;
        DELETE FROM @extschema@.backfill_revisit WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    ELSIF m.state OPERATOR(@extschema@.=) ANY (ARRAY['new_write', 'new_read']::@extschema@.state[]) THEN
        v_rows := @extschema@._resync_all(m.id);
    END IF;
    PERFORM @extschema@._history(m.id, 'shadow_enable', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('resynced_rows', v_rows,
                                      'backfill_required', m.state OPERATOR(@extschema@.=) 'mirrored'));
END $$;
COMMENT ON FUNCTION @extschema@._shadow_enable(text) IS 'internal: implementation of softmig.shadow_enable';

CREATE FUNCTION @extschema@.shadow_enable(name text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.shadow_enable(text) IS
    'write the non-authoritative table again and re-sync what was missed (mirrored: a new backfill; new_write/new_read: legacy rebuilt from the target); owners only';

REVOKE ALL ON FUNCTION
    @extschema@._resync_key(integer, jsonb),
    @extschema@._resync_all(integer),
    @extschema@._note_new_only(integer, bigint, jsonb, text, text),
    @extschema@._close_envelope(text, text),
    @extschema@._normalize_key(@extschema@.migrations, jsonb),
    @extschema@._key_typed(integer, jsonb),
    @extschema@._quarantine(text, jsonb, text),
    @extschema@._release(text, jsonb),
    @extschema@._shadow_disable(text, text),
    @extschema@._shadow_enable(text)
FROM PUBLIC;
