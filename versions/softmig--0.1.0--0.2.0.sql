/* softmig--0.1.0--0.2.0.sql: upgrade from the released 0.1.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION softmig UPDATE TO '0.2.0'" to load this file. \quit

-- 0.2.0 changes the C library (set-based mirroring of big statements,
-- plain-insert backfill batches, routing at plan time), which both versions
-- load from $libdir/softmig, and SQL functions, below.
--
-- Rules for this file (doc/packaging.md, "Versions and upgrades"):
--   * every change to src/sql/*.sql gets its counterpart here, so that an
--     updated 0.1.0 installation equals a fresh 0.2.0 one; test/t/070_upgrade.pl
--     compares the two object by object and fails otherwise;
--   * versions/softmig--0.1.0.sql is released and never edited;
--   * C entry points that 0.1.0 declares stay exported by the library.

-- _backfill_batch: the verify phase proves completeness first and sweeps
-- only when rows are missing (one full pass fewer on a complete target);
-- a batch that got the delete fence reads without row locks, and one whose
-- copy timed out behind a live writer (busy) is retried.
CREATE OR REPLACE FUNCTION @extschema@._backfill_batch(name text, batch_size integer)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    p @extschema@.backfill_progress;
    rv @extschema@.backfill_revisit;
    r jsonb;
    v_copied bigint := 0;
    v_removed bigint := 0;
    v_waiting boolean := false;
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR batch_size OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'batch_size must be between 1 and 1000000';
    END IF;
    IF m.state OPERATOR(@extschema@.<>) 'mirrored' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot backfill migration "%s" in state %s', m.name, m.state),
            DETAIL = 'Backfill runs only in state mirrored, where every live write already reaches the target.',
            HINT = CASE WHEN m.state OPERATOR(@extschema@.=) 'legacy'
                        THEN pg_catalog.format('SELECT softmig.advance(%L) first.', m.name)
                        ELSE 'Past mirrored the target is the write authority and needs no backfill.' END;
    END IF;

    INSERT INTO @extschema@.backfill_progress (migration_id) VALUES (m.id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT p FROM @extschema@.backfill_progress
     WHERE migration_id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    IF p.phase OPERATOR(pg_catalog.=) 'done' THEN
        -- live writes keep a complete target complete: nothing left to do
        RETURN pg_catalog.jsonb_build_object('phase', p.phase, 'copied', 0, 'removed', 0,
                                             'done', true, 'waiting', false);
    END IF;

    IF p.phase OPERATOR(pg_catalog.=) 'scan' THEN
        r := @extschema@._bf_step(m.id, 'next', batch_size, p.cursor, NULL, m.mirror_snapshot, m.mirror_xid);
        IF (r OPERATOR(pg_catalog.->>) 'busy')::boolean THEN
            -- the copy timed out behind a live writer: nothing copied, retry
            v_waiting := true;
        ELSE
            IF (r OPERATOR(pg_catalog.->>) 'tail_skipped')::bigint OPERATOR(pg_catalog.>) 0 THEN
                -- rows past the end of this batch that a live writer held: revisit them
                INSERT INTO @extschema@.backfill_revisit (migration_id, lo, hi)
                VALUES (m.id, COALESCE(r OPERATOR(pg_catalog.->) 'last_key', p.cursor), NULL);
            END IF;
            IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
                p.phase := 'revisit';
            ELSE
                IF (r OPERATOR(pg_catalog.->>) 'skipped')::bigint OPERATOR(pg_catalog.>) 0 THEN
                    INSERT INTO @extschema@.backfill_revisit (migration_id, lo, hi)
                    VALUES (m.id, p.cursor, r OPERATOR(pg_catalog.->) 'last_key');
                END IF;
                p.cursor := r OPERATOR(pg_catalog.->) 'last_key';
                v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            END IF;
        END IF;
    ELSIF p.phase OPERATOR(pg_catalog.=) 'revisit' THEN
        SELECT * INTO rv FROM @extschema@.backfill_revisit
         WHERE migration_id OPERATOR(pg_catalog.=) m.id ORDER BY attempts, id LIMIT 1 FOR UPDATE;
        IF NOT FOUND THEN
            p.phase := 'verify';
        ELSE
            r := @extschema@._bf_step(m.id, 'range', batch_size, rv.lo, rv.hi, m.mirror_snapshot, m.mirror_xid);
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'skipped')::bigint OPERATOR(pg_catalog.=) 0 THEN
                DELETE FROM @extschema@.backfill_revisit
                 WHERE migration_id OPERATOR(pg_catalog.=) m.id AND id OPERATOR(pg_catalog.=) rv.id;
            ELSE
                UPDATE @extschema@.backfill_revisit SET attempts = attempts OPERATOR(pg_catalog.+) 1
                 WHERE migration_id OPERATOR(pg_catalog.=) m.id AND id OPERATOR(pg_catalog.=) rv.id;
                v_waiting := true;
            END IF;
        END IF;
    ELSIF p.phase OPERATOR(pg_catalog.=) 'verify' THEN
        -- prove completeness first (one anti-join); only if rows are missing,
        -- copy them (the sweep, a second anti-join); once none is missing,
        -- remove stale target rows legacy does not have.  Removing target
        -- rows never makes a legacy row missing, and a legacy row written
        -- meanwhile reaches the target in its own transaction (mirrored).
        r := @extschema@._bf_step(m.id, 'verify', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
        IF (r OPERATOR(pg_catalog.->>) 'missing')::bigint OPERATOR(pg_catalog.=) 0 THEN
            r := @extschema@._bf_step(m.id, 'orphans', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_removed := (r OPERATOR(pg_catalog.->>) 'deleted')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'busy')::boolean THEN
                -- the delete gave way to a live writer: nothing removed, retry
                v_removed := 0;
                v_waiting := true;
            ELSIF v_removed OPERATOR(pg_catalog.<) batch_size THEN
                p.phase := 'done';
                p.finished_at := pg_catalog.now();
            END IF;
        ELSE
            r := @extschema@._bf_step(m.id, 'sweep', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
                v_waiting := true;     -- rows held by live writers, or the copy timed out; try again
            END IF;
        END IF;
    END IF;

    UPDATE @extschema@.backfill_progress
       SET phase = p.phase, cursor = p.cursor,
           rows_backfilled = rows_backfilled OPERATOR(pg_catalog.+) v_copied,
           rows_removed = rows_removed OPERATOR(pg_catalog.+) v_removed,
           batches = batches OPERATOR(pg_catalog.+) 1,
           updated_at = pg_catalog.now(), finished_at = p.finished_at
     WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    IF p.phase OPERATOR(pg_catalog.=) 'done' THEN
        PERFORM @extschema@._history(m.id, 'backfill_done', m.state, m.state, NULL,
            @extschema@._backfill_status(m.id));
    END IF;
    RETURN pg_catalog.jsonb_build_object('phase', p.phase, 'copied', v_copied, 'removed', v_removed,
                                         'done', p.phase OPERATOR(pg_catalog.=) 'done', 'waiting', v_waiting);
END $$;

-- Parity's digest cache (src/parity.c, "Digest cache"): a comparison whose
-- tables changed little since the last full one reuses the stored digests
-- of unchanged segments.  The mirrored -> new_write guard never uses it.
CREATE TABLE @extschema@.parity_cache (
    migration_id integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    chunk_rows   integer NOT NULL,
    fingerprint  text NOT NULL,      -- md5 of everything the digests depend on
    bounds       bytea[] NOT NULL,   -- per key column, the chunk bounds (array, binary form)
    legacy_state bytea NOT NULL,     -- digests, segment ranges and page state of each side
    target_state bytea NOT NULL,
    built_at     timestamptz NOT NULL,
    used_at      timestamptz NOT NULL,
    warm_runs    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE @extschema@.parity_cache IS
    'softmig: parity''s digest cache: per-chunk digests and per-segment page state from the last full comparison (derived, not dumped)';
REVOKE ALL ON @extschema@.parity_cache FROM PUBLIC;

CREATE FUNCTION @extschema@._parity_cache_reset(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    DELETE FROM @extschema@.parity_cache WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION @extschema@._parity_cache_reset(text) IS 'internal: implementation of softmig.parity_cache_reset';
CREATE FUNCTION @extschema@.parity_cache_reset(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.parity_cache_reset(text) IS
    'forget the stored parity digests of a migration, so the next comparison reads both tables in full; true if there were any; owners only';
REVOKE ALL ON FUNCTION @extschema@._parity_cache_reset(text) FROM PUBLIC;

ALTER FUNCTION @extschema@._require_semantic_health(integer) SET softmig.parity_cache = off;

-- create_migration refuses definitions that cannot work: NULLs in key,
-- new_only and divergent, the key in new_only or divergent, target_key of
-- the wrong shape (mapping expressions are checked in C, by _validate).
CREATE OR REPLACE FUNCTION @extschema@._create_migration(name text, legacy regclass, target regclass,
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
    v_maps jsonb;
    r record;
    k text;
    e text;
    t regclass;
    i integer;
BEGIN
    IF v_name IS NULL OR pg_catalog.btrim(v_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'migration name must not be empty';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already exists', v_name);
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
        SELECT m.name INTO v_other FROM @extschema@.migrations m
         WHERE t OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[]);
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('table %s already takes part in migration "%s"', t, v_other),
                HINT = 'A table can be in one migration at a time.';
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
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(v_fwd) j LOOP
        PERFORM @extschema@._require_column(target, k, 'forward mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('forward mapping of column "%s" must be a string holding an SQL expression', k);
        END IF;
        PERFORM @extschema@._check_expression(v_fwd OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('forward mapping of column "%s"', k));
    END LOOP;
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(v_bwd) j LOOP
        PERFORM @extschema@._require_column(legacy, k, 'backward mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('backward mapping of column "%s" must be a string holding an SQL expression', k);
        END IF;
        PERFORM @extschema@._check_expression(v_bwd OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('backward mapping of column "%s"', k));
    END LOOP;
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

    -- resolve the forward mapping: every insertable target column
    -- the resolved mappings, built in a variable (no temp table: this runs as
    -- the catalog owner and must not touch anything the caller can create)
    v_maps := '[]';
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) target AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_fwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, target);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'forward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', v_fwd OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) legacy AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'forward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target column "%s" is NOT NULL without a default and nothing maps to it', r.attname),
                HINT = 'Add it to forward, give it a default, or allow NULL.';
        END IF;
    END LOOP;

    -- resolve the backward mapping: every insertable legacy column
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) legacy AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_bwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, legacy);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'backward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', v_bwd OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) target AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'backward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('legacy column "%s" is NOT NULL without a default and nothing maps to it', r.attname),
                HINT = 'Add it to backward, give it a default, or allow NULL.';
        END IF;
    END LOOP;

    -- the correlation key: what each legacy key column maps to
    IF v_options ? 'target_key' THEN
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
        PERFORM @extschema@._require_column(target, k, 'target key column', true);
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
    PERFORM @extschema@._validate(v_id);

    PERFORM @extschema@._history(v_id, 'create', NULL, 'legacy', NULL,
        pg_catalog.jsonb_build_object('legacy', legacy::text, 'target', target::text,
                                      'key', v_key, 'target_key', v_tkey));
END $$;

-- create_read_view refuses softmig's own schema and the system schemas.
CREATE OR REPLACE FUNCTION @extschema@._create_read_view(name text, view_name text, shape @extschema@.side)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_shape @extschema@.side := shape;
    v_actor name := @extschema@._actor();
    v_parts text[];
    v_schema text;
    v_view text;
    v_nsp oid;
    v_own regclass;             -- the table whose columns the view has
    v_other regclass;           -- the table mapped into that shape
    v_dir text;                 -- mappings feeding v_own's columns from v_other
    v_own_side @extschema@.side;
    v_other_side @extschema@.side;
    v_own_list text;
    v_inner_list text;
    v_outer_list text;
    v_sql text;
    v_src_col name;
BEGIN
    IF view_name IS NULL OR v_shape IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'view_name and shape must not be null';
    END IF;
    v_parts := pg_catalog.parse_ident(view_name);
    IF pg_catalog.cardinality(v_parts) OPERATOR(pg_catalog.>) 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_name',
            MESSAGE = pg_catalog.format('improper view name (too many dotted names): %s', view_name);
    END IF;
    IF pg_catalog.cardinality(v_parts) OPERATOR(pg_catalog.=) 2 THEN
        v_schema := v_parts[1];
        v_view := v_parts[2];
    ELSE
        -- an unqualified name goes next to the legacy table, whatever the
        -- caller's search_path says
        SELECT n.nspname INTO v_schema
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
         WHERE c.oid OPERATOR(pg_catalog.=) m.legacy;
        v_view := v_parts[1];
    END IF;
    SELECT n.oid INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) v_schema;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_schema_name',
            MESSAGE = pg_catalog.format('schema "%s" does not exist', v_schema);
    END IF;
    -- softmig's own schema holds only the extension's objects (its functions
    -- run with it trusted), and the system schemas hold only the system's
    IF v_nsp OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
       OR v_schema OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog', 'information_schema', 'pg_toast']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_schema_name',
            MESSAGE = pg_catalog.format('a routed view cannot be created in schema %s', v_schema),
            DETAIL = 'That schema holds only the extension''s or the system''s own objects.',
            HINT = 'Create the view in an application schema.';
    END IF;
    IF NOT pg_catalog.has_schema_privilege(v_actor, v_nsp, 'CREATE') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('permission denied for schema %s', v_schema),
            DETAIL = pg_catalog.format('The view is created as role %s, which needs CREATE on the schema.', v_actor);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                WHERE c.relnamespace OPERATOR(pg_catalog.=) v_nsp AND c.relname OPERATOR(pg_catalog.=) v_view) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_table',
            MESSAGE = pg_catalog.format('relation "%s.%s" already exists', v_schema, v_view);
    END IF;

    IF v_shape OPERATOR(pg_catalog.=) 'legacy' THEN
        v_own := m.legacy; v_other := m.target; v_dir := 'backward';
        v_own_side := 'legacy'; v_other_side := 'new';
    ELSE
        v_own := m.target; v_other := m.legacy; v_dir := 'forward';
        v_own_side := 'new'; v_other_side := 'legacy';
    END IF;

    -- the shape's own table: its columns as they are
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
      INTO v_own_list
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;

    -- the other table mapped into the shape: stored columns through the
    -- mapping (NULL where nothing maps), then generated columns computed
    -- from those, with the shape's types and collations
    SELECT pg_catalog.string_agg(
               CASE WHEN mp.expression IS NULL
                    THEN 'NULL::' OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
                    ELSE '(' OPERATOR(pg_catalog.||) mp.expression OPERATOR(pg_catalog.||) E'\n)::'
                         OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod) END
               OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname),
               ', ' ORDER BY a.attnum)
      INTO v_inner_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN @extschema@.mappings mp
             ON mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) v_dir
            AND mp.column_name OPERATOR(pg_catalog.=) a.attname
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND a.attgenerated OPERATOR(pg_catalog.=) '';
    SELECT pg_catalog.string_agg(
               CASE WHEN a.attgenerated OPERATOR(pg_catalog.<>) ''
                    THEN '(' OPERATOR(pg_catalog.||) pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)
                         OPERATOR(pg_catalog.||) ')::' OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
                    ELSE pg_catalog.quote_ident(a.attname) END
               OPERATOR(pg_catalog.||)
               CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) 0
                         AND a.attcollation OPERATOR(pg_catalog.<>) 'pg_catalog.default'::pg_catalog.regcollation
                    THEN ' COLLATE ' OPERATOR(pg_catalog.||) a.attcollation::pg_catalog.regcollation::text
                    ELSE '' END
               OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname),
               ', ' ORDER BY a.attnum)
      INTO v_outer_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN pg_catalog.pg_attrdef ad
             ON ad.adrelid OPERATOR(pg_catalog.=) a.attrelid AND ad.adnum OPERATOR(pg_catalog.=) a.attnum
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;

    -- Each branch carries its side as a constant column; the one filter
    -- "that column = read_source(...)" is pushed into both branches, where it
    -- no longer depends on any row: the planner turns it into a One-Time
    -- Filter, so the branch not taken is never executed.  The branches have
    -- no WHERE clause of their own, so they are flattened into an append
    -- relation (no Subquery Scan in between), and filters on the view, key
    -- filters included, reach each table's indexes.
    v_src_col := 'softmig_source';
    WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attname OPERATOR(pg_catalog.=) v_src_col) LOOP
        v_src_col := v_src_col OPERATOR(pg_catalog.||) '_';
    END LOOP;
    v_sql := pg_catalog.format(
        'CREATE VIEW %I.%I%s AS SELECT %s FROM ('
        ' SELECT %s, %L::@extschema@.side AS %I FROM %s'
        ' UNION ALL'
        ' SELECT %s, %L::@extschema@.side FROM (SELECT %s FROM %s) AS softmig_mapped'
        ') AS softmig_routed'
        ' WHERE softmig_routed.%I OPERATOR(pg_catalog.=) @extschema@.read_source(%L::text)',
        v_schema, v_view,
        CASE WHEN pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog.>=) 150000
             THEN ' WITH (security_invoker = true)' ELSE '' END,
        v_own_list,
        v_own_list, v_own_side, v_src_col, v_own,
        v_outer_list, v_other_side, v_inner_list, v_other,
        v_src_col, m.name);
    EXECUTE v_sql;
    EXECUTE pg_catalog.format('ALTER VIEW %I.%I OWNER TO %I', v_schema, v_view, v_actor);
    EXECUTE pg_catalog.format('COMMENT ON VIEW %I.%I IS %L', v_schema, v_view,
        pg_catalog.format('softmig routed view of migration "%s" in the %s shape: rows come from the caller''s read source (softmig.read_source)',
                          m.name, v_shape));

    INSERT INTO @extschema@.read_views (view_name, migration_id, shape, created_by)
    VALUES (pg_catalog.format('%I.%I', v_schema, v_view)::pg_catalog.regclass, m.id, v_shape, v_actor);
    PERFORM @extschema@._history(m.id, 'create_read_view', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('view', pg_catalog.format('%I.%I', v_schema, v_view), 'shape', v_shape));
END $$;

-- tap_ok puts pg_catalog before pgTAP's schema on its search_path.
CREATE OR REPLACE FUNCTION @extschema@.tap_ok(ok boolean, description text, diagnostics text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_nsp name;
    v_out text;
    v_diag text;
BEGIN
    SELECT n.nspname INTO v_nsp
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'pgtap';
    IF v_nsp IS NULL THEN
        -- no pgTAP: a bare TAP line, diagnostics as # comments
        v_out := CASE WHEN ok THEN 'ok' ELSE 'not ok' END OPERATOR(pg_catalog.||) ' - ' OPERATOR(pg_catalog.||) description;
        IF NOT ok AND diagnostics IS NOT NULL THEN
            v_out := v_out OPERATOR(pg_catalog.||) E'\n# ' OPERATOR(pg_catalog.||)
                     pg_catalog.replace(diagnostics, E'\n', E'\n# ');
        END IF;
        RETURN v_out;
    END IF;
    -- pgTAP keeps the test counter and plan; its functions expect their
    -- schema on the path, after pg_catalog so nothing there can shadow a
    -- built-in name pgTAP's code uses
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(v_nsp) OPERATOR(pg_catalog.||) ', pg_temp', true);
    EXECUTE pg_catalog.format('SELECT %I.ok($1, $2)', v_nsp) INTO v_out USING ok, description;
    IF NOT ok AND diagnostics IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT %I.diag($1)', v_nsp) INTO v_diag USING diagnostics;
        v_out := v_out OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) v_diag;
    END IF;
    RETURN v_out;
END $$;
