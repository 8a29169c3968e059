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

-- Backfill progress (doc/monitoring.md): the current run's figures, kept by
-- a trigger on each checkpoint; live row estimates; rows per second, percent
-- done and time left in status; progress NOTICEs from CALL softmig.backfill.
ALTER TABLE @extschema@.backfill_progress
    ADD COLUMN run_started_at timestamptz,
    ADD COLUMN run_rows bigint NOT NULL DEFAULT 0,
    ADD COLUMN batch_ended_at timestamptz,
    ADD COLUMN progressed_at timestamptz;

CREATE FUNCTION @extschema@._backfill_progress_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.batch_ended_at IS NULL
       OR (pg_catalog.now() OPERATOR(pg_catalog.-) OLD.batch_ended_at) OPERATOR(pg_catalog.>) interval '1 minute' THEN
        NEW.run_started_at := pg_catalog.now();
        NEW.run_rows := 0;
    END IF;
    NEW.run_rows := NEW.run_rows OPERATOR(pg_catalog.+) (NEW.rows_backfilled OPERATOR(pg_catalog.-) OLD.rows_backfilled);
    NEW.batch_ended_at := pg_catalog.clock_timestamp();
    IF NEW.rows_backfilled OPERATOR(pg_catalog.<>) OLD.rows_backfilled
       OR NEW.rows_removed OPERATOR(pg_catalog.<>) OLD.rows_removed
       OR NEW.phase OPERATOR(pg_catalog.<>) OLD.phase
       OR NEW.cursor IS DISTINCT FROM OLD.cursor THEN
        NEW.progressed_at := NEW.batch_ended_at;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION @extschema@._backfill_progress_run() IS
    'internal: BEFORE UPDATE trigger on softmig.backfill_progress keeping the current run''s start, rows, last batch and last progress';

CREATE TRIGGER backfill_progress_run
    BEFORE UPDATE ON @extschema@.backfill_progress
    FOR EACH ROW WHEN (NEW.batches OPERATOR(pg_catalog.<>) OLD.batches)
    EXECUTE FUNCTION @extschema@._backfill_progress_run();
REVOKE ALL ON FUNCTION @extschema@._backfill_progress_run() FROM PUBLIC;

CREATE FUNCTION @extschema@._rows_estimate(rel regclass) RETURNS double precision
    AS 'MODULE_PATHNAME', 'softmig_rows_estimate' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._rows_estimate(regclass) IS
    'internal: estimated live rows of a table now (its blocks times the row density of its statistics or of sampled pages; partitions summed), without scanning it (at most three pages read) or waiting for a lock';

CREATE OR REPLACE FUNCTION @extschema@._backfill_status(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'phase', COALESCE(bp.phase, 'not started'),
        'cursor', bp.cursor,
        'rows_backfilled', COALESCE(bp.rows_backfilled, 0),
        'rows_removed', COALESCE(bp.rows_removed, 0),
        'batches', COALESCE(bp.batches, 0),
        'ranges_to_revisit', (SELECT pg_catalog.count(*) FROM @extschema@.backfill_revisit r
                               WHERE r.migration_id OPERATOR(pg_catalog.=) p_id),
        'remaining_estimate', x.remaining,
        -- below 100 until the backfill has proven the target complete
        'percent_done', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 100
            WHEN x.remaining IS NOT NULL AND (COALESCE(bp.rows_backfilled, 0) OPERATOR(pg_catalog.+) x.remaining) OPERATOR(pg_catalog.>) 0
            THEN LEAST(99.9, pg_catalog.round((100.0 OPERATOR(pg_catalog.*) COALESCE(bp.rows_backfilled, 0))
                                  OPERATOR(pg_catalog./) (COALESCE(bp.rows_backfilled, 0) OPERATOR(pg_catalog.+) x.remaining), 1)) END,
        'rows_per_second', x.rate,
        'eta_seconds', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0
            WHEN x.rate OPERATOR(pg_catalog.>) 0 THEN pg_catalog.round(x.remaining OPERATOR(pg_catalog./) x.rate) END,
        'run_started_at', bp.run_started_at,
        'run_rows', COALESCE(bp.run_rows, 0),
        'last_batch_at', bp.batch_ended_at,
        'last_progress_at', bp.progressed_at,
        'started_at', bp.started_at,
        'updated_at', bp.updated_at,
        'finished_at', bp.finished_at)
      FROM @extschema@.migrations m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
      CROSS JOIN LATERAL (
        -- legacy rows the target does not hold yet; the target holds at
        -- least what was copied (its estimate lags while it has no statistics)
        SELECT CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0::bigint ELSE
                   GREATEST(0, (@extschema@._rows_estimate(m.legacy) OPERATOR(pg_catalog.-)
                                GREATEST(@extschema@._rows_estimate(m.target), COALESCE(bp.rows_backfilled, 0)))::bigint) END AS remaining,
               -- rows per second of the current run, pauses included (what the ETA needs)
               CASE WHEN bp.batch_ended_at OPERATOR(pg_catalog.>) bp.run_started_at
                    THEN pg_catalog.round((bp.run_rows OPERATOR(pg_catalog./)
                         EXTRACT(epoch FROM bp.batch_ended_at OPERATOR(pg_catalog.-) bp.run_started_at))::numeric, 1)
                    ELSE 0 END AS rate) x
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;

CREATE FUNCTION @extschema@._backfill_progress_line(p_id integer) RETURNS text
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('softmig: backfill of "%s": %s rows copied, %s rows/s, %s done, %s (phase %s)',
               m.name, x.s OPERATOR(pg_catalog.->>) 'rows_backfilled', x.s OPERATOR(pg_catalog.->>) 'rows_per_second',
               COALESCE((x.s OPERATOR(pg_catalog.->>) 'percent_done') OPERATOR(pg_catalog.||) '%', 'unknown %'),
               COALESCE('about ' OPERATOR(pg_catalog.||) pg_catalog.justify_interval(pg_catalog.make_interval(
                            secs => (x.s OPERATOR(pg_catalog.->>) 'eta_seconds')::double precision))::text
                        OPERATOR(pg_catalog.||) ' left', 'time left unknown'),
               x.s OPERATOR(pg_catalog.->>) 'phase')
      FROM @extschema@.migrations m
     CROSS JOIN LATERAL (SELECT @extschema@._backfill_status(m.id) AS s) x
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._backfill_progress_line(integer) IS
    'internal: the progress NOTICE of CALL softmig.backfill: rows copied, rows per second, percent done, time left, phase';

CREATE OR REPLACE PROCEDURE @extschema@.backfill(name text, batch_size integer DEFAULT 1000,
                                      max_batches integer DEFAULT NULL, pause_ms integer DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    v_id integer := (@extschema@._migration(name)).id;
    r jsonb;
    n integer := 0;
    v_copied bigint := 0;
    v_mine boolean;
    v_report timestamptz;          -- when the next progress NOTICE is due
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'batch_size must be at least 1';
    END IF;
    IF max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'max_batches must be at least 1';
    END IF;
    IF pause_ms IS NULL OR pause_ms OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'pause_ms must not be negative';
    END IF;
    -- one backfill per migration at a time: a session-level advisory lock
    -- (kept across the commits below; a session that already holds it, e.g.
    -- after a cancelled CALL, may continue)
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
                      AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                      AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
                      AND l.objid OPERATOR(pg_catalog.=) v_id::pg_catalog.oid
                      AND l.granted)
      INTO v_mine;
    IF NOT v_mine AND NOT pg_catalog.pg_try_advisory_lock(1936550247, v_id) THEN
        -- a session whose CALL was cancelled keeps the lock while it stays
        -- connected; only a backfill that is actually running refuses us
        IF @extschema@._backfill_running_elsewhere(v_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('a backfill of migration "%s" is already running', name),
                HINT = 'Wait for it to finish, or cancel it; the next CALL resumes from its last checkpoint.';
        END IF;
    END IF;
    LOOP
        r := @extschema@.backfill_batch(name, batch_size);
        COMMIT;
        n := n OPERATOR(pg_catalog.+) 1;
        v_copied := v_copied OPERATOR(pg_catalog.+) (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
        EXIT WHEN (r OPERATOR(pg_catalog.->>) 'done')::boolean;
        EXIT WHEN max_batches IS NOT NULL AND n OPERATOR(pg_catalog.>=) max_batches;
        -- progress every softmig.backfill_progress_interval (defined once the first batch loaded the module)
        v_report := COALESCE(v_report, pg_catalog.statement_timestamp()
            OPERATOR(pg_catalog.+) pg_catalog.current_setting('softmig.backfill_progress_interval')::interval);
        IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) v_report THEN
            RAISE NOTICE '%', @extschema@._backfill_progress_line(v_id);
            v_report := pg_catalog.clock_timestamp()
                OPERATOR(pg_catalog.+) pg_catalog.current_setting('softmig.backfill_progress_interval')::interval;
        END IF;
        IF (r OPERATOR(pg_catalog.->>) 'waiting')::boolean THEN
            PERFORM pg_catalog.pg_sleep(GREATEST(pause_ms, 100) OPERATOR(pg_catalog./) 1000.0);
        ELSIF pause_ms OPERATOR(pg_catalog.>) 0 THEN
            PERFORM pg_catalog.pg_sleep(pause_ms OPERATOR(pg_catalog./) 1000.0);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
                  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                  AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
                  AND l.objid OPERATOR(pg_catalog.=) v_id::pg_catalog.oid) THEN
        PERFORM pg_catalog.pg_advisory_unlock(1936550247, v_id);
    END IF;
    RAISE NOTICE 'softmig: backfill of "%": % batches, % rows copied, phase %', name, n, v_copied,
        r OPERATOR(pg_catalog.->>) 'phase';
END $$;
COMMENT ON PROCEDURE @extschema@.backfill(text, integer, integer, integer) IS
    'copy every legacy row the target lacks, one committed batch at a time, race-safe and resumable, with a progress NOTICE every softmig.backfill_progress_interval; state mirrored only; owners of both tables only';

-------------------------------------------------------------------------------
-- Monitoring views for Prometheus (src/sql/77_monitoring.sql)
-------------------------------------------------------------------------------
-- Keys of the ledger without counting a big one: exact up to 100000 keys
-- in the whole ledger (an index-only scan of the migration's range),
-- above that the table's live row estimate times the migration's share in
-- the column statistics of softmig.operations.migration_id.
CREATE FUNCTION @extschema@._ledger_keys(p_id integer) RETURNS double precision
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN t.total OPERATOR(pg_catalog.<=) 100000 THEN
            (SELECT pg_catalog.count(*) FROM @extschema@.operations o
              WHERE o.migration_id OPERATOR(pg_catalog.=) p_id)::double precision
        ELSE pg_catalog.round(t.total OPERATOR(pg_catalog.*) COALESCE(
            -- the migration is among the column's most common values
            (SELECT u.f FROM ROWS FROM (pg_catalog.unnest(s.vals), pg_catalog.unnest(s.freqs)) AS u(v, f)
              WHERE u.v OPERATOR(pg_catalog.=) p_id),
            -- it is not: an even share of what the common values leave
            (SELECT (1 OPERATOR(pg_catalog.-) COALESCE((SELECT pg_catalog.sum(f) FROM pg_catalog.unnest(s.freqs) AS f), 0))
                    OPERATOR(pg_catalog./) GREATEST(1, (CASE WHEN s.n_distinct OPERATOR(pg_catalog.>=) 0 THEN s.n_distinct
                                                             ELSE (OPERATOR(pg_catalog.-) s.n_distinct) OPERATOR(pg_catalog.*) t.total END)
                                                        OPERATOR(pg_catalog.-) COALESCE(pg_catalog.cardinality(s.vals), 0))
              WHERE s.n_distinct IS NOT NULL),
            -- no statistics yet: an even share among the migrations
            1.0 OPERATOR(pg_catalog./) GREATEST(1, (SELECT pg_catalog.count(*) FROM @extschema@.migrations))))
        END
      FROM (SELECT @extschema@._rows_estimate('@extschema@.operations'::pg_catalog.regclass) AS total) t
      LEFT JOIN (SELECT st.most_common_vals::text::integer[] AS vals, st.most_common_freqs::double precision[] AS freqs,
                        st.n_distinct::double precision AS n_distinct
                   FROM pg_catalog.pg_stats st
                  WHERE st.schemaname OPERATOR(pg_catalog.=) '@extschema@'
                    AND st.tablename OPERATOR(pg_catalog.=) 'operations'
                    AND st.attname OPERATOR(pg_catalog.=) 'migration_id'
                  LIMIT 1) s ON true
$$;
COMMENT ON FUNCTION @extschema@._ledger_keys(integer) IS
    'internal: operation keys a migration holds in the ledger, exact for a ledger of up to 100000 keys, estimated from statistics above';

-- a table's name for a label: schema-qualified whatever the search_path
CREATE FUNCTION @extschema@._qualified(rel regclass) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) rel
$$;
COMMENT ON FUNCTION @extschema@._qualified(regclass) IS
    'internal: schema-qualified name of a table, the same whatever the caller''s search_path';

-- one row per migration: the numbers (exporter query "softmig")
CREATE VIEW @extschema@.monitor AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       (pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover'],
                                  m.state::text) OPERATOR(pg_catalog.-) 1)::double precision AS migration_state,
       EXTRACT(epoch FROM m.state_changed_at)::double precision AS migration_state_changed_timestamp_seconds,
       CASE WHEN COALESCE(e.open, true) THEN 1 ELSE 0 END::double precision AS envelope_open,
       COALESCE(e.new_only_count, 0)::double precision AS envelope_new_only_rows,
       CASE WHEN tr.problems OPERATOR(pg_catalog.=) 0 THEN 1 ELSE 0 END::double precision AS triggers_healthy,
       tr.problems::double precision AS trigger_problems,
       (SELECT pg_catalog.count(*) FROM @extschema@.shadow s
         WHERE s.migration_id OPERATOR(pg_catalog.=) m.id)::double precision AS shadow_disabled,
       (SELECT pg_catalog.count(*) FROM @extschema@.quarantine q
         WHERE q.migration_id OPERATOR(pg_catalog.=) m.id)::double precision AS quarantined_entities,
       CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 1 ELSE 0 END::double precision AS backfill_done,
       COALESCE(bp.rows_backfilled, 0)::double precision AS backfill_rows_copied_total,
       COALESCE(bp.rows_removed, 0)::double precision AS backfill_rows_removed_total,
       COALESCE(bp.batches, 0)::double precision AS backfill_batches_total,
       CASE WHEN m.state OPERATOR(@extschema@.=) 'mirrored'
            THEN (@extschema@._backfill_status(m.id) OPERATOR(pg_catalog.->>) 'remaining_estimate')::double precision
            ELSE 0 END AS backfill_rows_remaining,
       -- throughput of a run that is going on (a batch ended within the last minute)
       CASE WHEN bp.batch_ended_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute')
                 AND bp.batch_ended_at OPERATOR(pg_catalog.>) bp.run_started_at
            THEN bp.run_rows OPERATOR(pg_catalog./)
                 EXTRACT(epoch FROM bp.batch_ended_at OPERATOR(pg_catalog.-) bp.run_started_at)::double precision
            ELSE 0 END AS backfill_rows_per_second,
       -- the last batch that moved the backfill on; before the first one, when mirroring began
       EXTRACT(epoch FROM COALESCE(bp.progressed_at,
                                   CASE WHEN bp.batch_ended_at IS NULL THEN bp.updated_at ELSE bp.started_at END,
                                   m.state_changed_at))::double precision
           AS backfill_last_progress_timestamp_seconds,
       COALESCE(EXTRACT(epoch FROM lc.at), 0)::double precision AS check_last_run_timestamp_seconds,
       COALESCE(lc.failing, 0)::double precision AS checks_failing,
       (SELECT pg_catalog.count(DISTINCT o.reader)
          FROM @extschema@.observed_readers(m.name) o
         WHERE o.side OPERATOR(pg_catalog.=) 'legacy'::@extschema@.side
           AND NOT EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                            WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
                              AND r.reader OPERATOR(pg_catalog.=) o.reader)
           AND o.last_seen OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) w.window_)
           AND w.window_ OPERATOR(pg_catalog.>) '0'::interval)::double precision AS unregistered_legacy_readers,
       @extschema@._ledger_keys(m.id) AS ledger_keys
  FROM @extschema@.migrations m
  LEFT JOIN @extschema@.envelope e ON e.migration_id OPERATOR(pg_catalog.=) m.id
  LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
 CROSS JOIN LATERAL (
    SELECT pg_catalog.jsonb_array_length(@extschema@._trigger_health(m.id) OPERATOR(pg_catalog.->) 'problems')
           OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*)
              FROM (SELECT DISTINCT r.tbl FROM @extschema@.transition_rules r
                     WHERE r.migration_id OPERATOR(pg_catalog.=) m.id) x
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid OPERATOR(pg_catalog.=) x.tbl
                                  AND t.tgname OPERATOR(pg_catalog.=) ('softmig_rule_' OPERATOR(pg_catalog.||) m.id::text)
                                  AND t.tgenabled OPERATOR(pg_catalog.<>) 'D')) AS problems) tr
 CROSS JOIN LATERAL (
    SELECT pg_catalog.max(c.at) AS at, pg_catalog.count(*) FILTER (WHERE NOT c.ok) AS failing
      FROM @extschema@.check_results c
     WHERE c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                            WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id)) lc
 CROSS JOIN LATERAL (
    SELECT COALESCE((m.options OPERATOR(pg_catalog.->>) 'unregistered_reader_window')::interval,
                    '15 minutes'::interval) AS window_) w;
COMMENT ON VIEW @extschema@.monitor IS
    'one row per migration: state number, envelope, trigger health, shadow, quarantine, backfill progress, latest check run, unregistered legacy readers, ledger keys (exporter query "softmig")';

-- one row per migration: the words (exporter query "softmig_migration")
CREATE VIEW @extschema@.monitor_info AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       m.state::text AS state,
       CASE WHEN m.state OPERATOR(@extschema@.<=) 'mirrored' THEN 'legacy' ELSE 'target' END AS write_authority,
       @extschema@.group_source(m.name, 'default')::text AS read_default,
       @extschema@._qualified(m.legacy) AS legacy_table,
       @extschema@._qualified(m.target) AS target_table,
       1::double precision AS info
  FROM @extschema@.migrations m;
COMMENT ON VIEW @extschema@.monitor_info IS
    'one row per migration with value 1: state, write authority, default read source and tables as labels (exporter query "softmig_migration")';

-- the latest stored check run, one row per check (exporter query "softmig_check")
CREATE VIEW @extschema@.monitor_checks AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       c.layer,
       c.check_name,
       CASE WHEN c.ok THEN 1 ELSE 0 END::double precision AS ok,
       c.violations::double precision AS violations
  FROM @extschema@.migrations m
  JOIN @extschema@.check_results c
    ON c.migration_id OPERATOR(pg_catalog.=) m.id
   AND c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                        WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id);
COMMENT ON VIEW @extschema@.monitor_checks IS
    'the latest stored check run of each migration, one row per check: ok (1/0) and violations (exporter query "softmig_check")';

-- parity differences by kind, as the latest check counted them
CREATE VIEW @extschema@.monitor_parity AS
SELECT c.datname, c.migration,
       CASE WHEN c.check_name OPERATOR(pg_catalog.=) 'parity' THEN 'error'   -- parity itself failed
            ELSE pg_catalog.substr(c.check_name, 8) END AS kind,
       c.violations AS differences
  FROM @extschema@.monitor_checks c
 WHERE c.layer OPERATOR(pg_catalog.=) 'structural';
COMMENT ON VIEW @extschema@.monitor_parity IS
    'parity differences of the latest check run by kind: missing_in_target, missing_in_legacy, mismatch (error: parity failed to run) (exporter query "softmig_parity")';

-- invariants of the latest check run
CREATE VIEW @extschema@.monitor_invariants AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       pg_catalog.substr(c.check_name, 11) AS invariant,
       COALESCE(c.detail OPERATOR(pg_catalog.->>) 'severity', 'error') AS severity,
       c.violations::double precision AS violations
  FROM @extschema@.migrations m
  JOIN @extschema@.check_results c
    ON c.migration_id OPERATOR(pg_catalog.=) m.id
   AND c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                        WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id)
 WHERE c.layer OPERATOR(pg_catalog.=) 'behavioral' AND c.check_name OPERATOR(pg_catalog.^@) 'invariant:';
COMMENT ON VIEW @extschema@.monitor_invariants IS
    'violating rows per invariant and severity in the latest check run (an invariant whose query failed counts 1) (exporter query "softmig_invariant")';

-- transition-rule violations of the latest check run
CREATE VIEW @extschema@.monitor_rules AS
SELECT c.datname, c.migration, c.check_name, c.violations
  FROM @extschema@.monitor_checks c
 WHERE c.layer OPERATOR(pg_catalog.=) 'behavioral' AND NOT c.check_name OPERATOR(pg_catalog.^@) 'invariant:';
COMMENT ON VIEW @extschema@.monitor_rules IS
    'recorded transition-rule violations per rule (and per ruled column for edges no rule allows) in the latest check run (exporter query "softmig_rule")';

-- every reader readers() lists, with value 1 (exporter query "softmig_reader")
CREATE VIEW @extschema@.monitor_readers AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       x.reader,
       COALESCE(reg.class, '') AS class,
       COALESCE(reg.switch_group, 'default') AS switch_group,
       @extschema@.group_source(m.name, COALESCE(reg.switch_group, 'default'))::text AS source,
       (reg.reader IS NOT NULL)::text AS registered,
       1::double precision AS info
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (
    SELECT r.reader FROM @extschema@.reader_registry r WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
    UNION
    SELECT CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(none)' ELSE o.reader END
      FROM @extschema@.observed_readers(m.name) o) x
  LEFT JOIN @extschema@.reader_registry reg
    ON reg.migration_id OPERATOR(pg_catalog.=) m.id AND reg.reader OPERATOR(pg_catalog.=) x.reader;
COMMENT ON VIEW @extschema@.monitor_readers IS
    'every registered or discovered reader of each migration with value 1: class, switch group, read source, registered (exporter query "softmig_reader")';

-- reader discovery's observations (exporter query "softmig_discovery")
CREATE VIEW @extschema@.monitor_discovery AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(none)' ELSE o.reader END AS reader,
       o.role::text AS role,
       o.side::text AS side,
       (EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                 WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
                   AND r.reader OPERATOR(pg_catalog.=) o.reader))::text AS registered,
       o.reads::double precision AS reads_total,
       o.writes::double precision AS writes_total,
       EXTRACT(epoch FROM o.last_seen)::double precision AS last_seen_timestamp_seconds
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL @extschema@.observed_readers(m.name) o;
COMMENT ON VIEW @extschema@.monitor_discovery IS
    'statements per reader (application_name), role and table side seen by reader discovery since it started, and when last (exporter query "softmig_discovery"; empty without shared_preload_libraries)';

-- live row estimates of both tables (exporter query "softmig_table")
CREATE VIEW @extschema@.monitor_tables AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       s.side,
       @extschema@._qualified(s.rel) AS "table",
       @extschema@._rows_estimate(s.rel) AS rows
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (VALUES ('legacy', m.legacy), ('new', m.target)) s(side, rel);
COMMENT ON VIEW @extschema@.monitor_tables IS
    'estimated rows of each migration''s legacy and target table now, from their size and statistics, without reading them (exporter query "softmig_table")';

GRANT SELECT ON @extschema@.monitor, @extschema@.monitor_info, @extschema@.monitor_checks,
                @extschema@.monitor_parity, @extschema@.monitor_invariants, @extschema@.monitor_rules,
                @extschema@.monitor_readers, @extschema@.monitor_discovery, @extschema@.monitor_tables
   TO PUBLIC;
