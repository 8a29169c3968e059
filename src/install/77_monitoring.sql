-------------------------------------------------------------------------------
-- Monitoring: views shaped for Prometheus (monitoring/postgres_exporter.yaml
-- maps each to one exporter query; guide in doc/monitoring.md).
--
-- Every column is a metric or a label: the exporter names a metric
-- <query>_<column>, so the column names below are the metric names without
-- their prefix.  Values are in base units (seconds since the epoch for
-- points in time, rows, counts); "_total" columns are counters.  Nothing here
-- runs a check, a parity comparison or a scan of a migrated table: the views
-- read softmig's catalog, the latest stored check run, reader discovery's
-- shared memory and table sizes, so a scrape costs milliseconds and is never
-- recorded as a reader of the migrated tables.  Like softmig.metrics they
-- are readable by every role (they show only what the catalog already shows).
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
