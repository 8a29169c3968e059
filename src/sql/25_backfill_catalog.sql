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
    finished_at     timestamptz
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
        'remaining_estimate', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0 ELSE
            GREATEST(0, (SELECT (l.reltuples OPERATOR(pg_catalog.-) t.reltuples)::bigint
                           FROM pg_catalog.pg_class l, pg_catalog.pg_class t
                          WHERE l.oid OPERATOR(pg_catalog.=) m.legacy AND t.oid OPERATOR(pg_catalog.=) m.target
                            AND l.reltuples OPERATOR(pg_catalog.>=) 0 AND t.reltuples OPERATOR(pg_catalog.>=) 0)) END,
        'started_at', bp.started_at,
        'updated_at', bp.updated_at,
        'finished_at', bp.finished_at)
      FROM @extschema@.migrations m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._backfill_status(integer) IS
    'internal: the backfill part of softmig.status';
