-------------------------------------------------------------------------------
-- Backfill: copy every legacy row the target lacks, race-safe, one committed
-- batch at a time (see doc/backfill.md for why it is correct).
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._written_before(xmin xid, snap pg_snapshot, snap_xid xid8 DEFAULT NULL) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_written_before' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._written_before(xid, pg_snapshot, xid8) IS
    'internal: was a row version with this xmin written before snap was taken (visible in it, or written by snap_xid, the transaction that took it)';

CREATE FUNCTION @extschema@._bf_step(migration_id integer, op text, batch_size integer,
                                     lo jsonb, hi jsonb, snap pg_snapshot, snap_xid xid8)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_backfill_step' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._bf_step(integer, text, integer, jsonb, jsonb, pg_snapshot, xid8) IS
    'internal: one unit of backfill work (next, range, sweep, orphans, verify), run as the caller';

CREATE FUNCTION @extschema@._backfill_batch(name text, batch_size integer)
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
COMMENT ON FUNCTION @extschema@._backfill_batch(text, integer) IS 'internal: implementation of softmig.backfill_batch';

CREATE FUNCTION @extschema@.backfill_batch(name text, batch_size integer DEFAULT 1000)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.backfill_batch(text, integer) IS
    'run one backfill batch in the current transaction and checkpoint it (softmig.backfill calls it between commits); owners of both tables only';

-- SECURITY DEFINER: pg_stat_activity hides other roles' session state from
-- ordinary roles; this answers one yes/no question about softmig's own lock.
CREATE FUNCTION @extschema@._backfill_running_elsewhere(p_id integer) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l
          JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
         WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
           AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
           AND l.objid OPERATOR(pg_catalog.=) p_id::pg_catalog.oid
           AND l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
           AND a.state OPERATOR(pg_catalog.=) 'active')
$$;
COMMENT ON FUNCTION @extschema@._backfill_running_elsewhere(integer) IS
    'internal: is a backfill of this migration running in another session right now (holding the backfill lock and active); callable by anyone, it reveals nothing else';

CREATE PROCEDURE @extschema@.backfill(name text, batch_size integer DEFAULT 1000,
                                      max_batches integer DEFAULT NULL, pause_ms integer DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    v_id integer := (@extschema@._migration(name)).id;
    r pg_catalog.jsonb;      -- no SET search_path here: every name is qualified
    n integer := 0;
    v_copied bigint := 0;
    v_mine boolean;
    v_report pg_catalog.timestamptz;   -- when the next progress NOTICE is due
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

REVOKE ALL ON FUNCTION
    @extschema@._bf_step(integer, text, integer, jsonb, jsonb, pg_snapshot, xid8),
    @extschema@._backfill_batch(text, integer)
FROM PUBLIC;
