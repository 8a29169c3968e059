/* softmig--0.1.0--0.2.0.sql: upgrade from the released 0.1.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION softmig UPDATE TO '0.2.0'" to load this file. \quit

-- 0.2.0 changes the C library (set-based mirroring of big statements,
-- plain-insert backfill batches, routing at plan time), which both versions
-- load from $libdir/softmig, and one SQL function, below.
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
            IF v_removed OPERATOR(pg_catalog.<) batch_size THEN
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
