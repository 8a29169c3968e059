-------------------------------------------------------------------------------
-- Backfill bookkeeping (the procedure and its steps are in 60_backfill.sql)
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.backfill_progress (
    migration_id    integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    phase           text NOT NULL DEFAULT 'scan'
                    CHECK (phase OPERATOR(pg_catalog.=) ANY (ARRAY['scan', 'revisit', 'verify', 'done'])),
    cursor          jsonb,             -- legacy key of the last row of the last scan batch
    rows_backfilled bigint NOT NULL DEFAULT 0,
    rows_removed    bigint NOT NULL DEFAULT 0,
    batches         bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at     timestamptz,
    -- progress bookkeeping, kept by the trigger backfill_progress_run below
    run_started_at  timestamptz,       -- start of the current run: batches with no gap over a minute
    run_rows        bigint NOT NULL DEFAULT 0,  -- rows copied by the current run
    batch_ended_at  timestamptz,       -- when the last batch wrote its checkpoint
    progressed_at   timestamptz        -- last batch that copied or removed rows or moved the cursor or phase
);
COMMENT ON TABLE @extschema@.backfill_progress IS
    'softmig: checkpoint of each migration''s backfill, updated in the same transaction as each batch';

CREATE TABLE @extschema@.backfill_revisit (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    id           bigserial,
    lo           jsonb,                -- exclusive lower bound (NULL: none)
    hi           jsonb,                -- inclusive upper bound (NULL: none)
    attempts     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (migration_id, id)
);
COMMENT ON TABLE @extschema@.backfill_revisit IS
    'softmig: key ranges a backfill batch could not fully lock (a live writer held rows); visited again';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.backfill_progress', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.backfill_revisit', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.backfill_revisit_id_seq', '');
REVOKE ALL ON @extschema@.backfill_progress, @extschema@.backfill_revisit FROM PUBLIC;
GRANT SELECT ON @extschema@.backfill_progress, @extschema@.backfill_revisit TO PUBLIC;

CREATE FUNCTION @extschema@._backfill_done(p_id integer) RETURNS boolean
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT bp.phase OPERATOR(pg_catalog.=) 'done'
                       FROM @extschema@.backfill_progress bp
                      WHERE bp.migration_id OPERATOR(pg_catalog.=) p_id), false)
$$;
COMMENT ON FUNCTION @extschema@._backfill_done(integer) IS
    'internal: has the backfill of the current mirroring epoch proven the target complete';

-- Progress of the current run, derived from each checkpoint.  A batch runs
-- in its own transaction, and CALL softmig.backfill starts the next one as
-- it commits the last, so now() - the previous batch's end is the gap
-- between two batches: within one CALL it is about zero (pauses fall inside
-- the next batch's transaction), between two CALLs it is the idle time.
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

CREATE FUNCTION @extschema@._backfill_status(p_id integer) RETURNS jsonb
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
COMMENT ON FUNCTION @extschema@._backfill_status(integer) IS
    'internal: the backfill part of softmig.status';

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
