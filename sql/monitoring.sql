-- Monitoring: the views the Prometheus exporter reads (softmig.monitor*),
-- live row estimates, and the backfill's progress figures in status.
\pset null '(null)'
SET client_min_messages = warning;
-- this session is not a reader of the migration's tables (same output with
-- and without shared_preload_libraries)
SET softmig.discovery = off;

CREATE TABLE mo_l (id int PRIMARY KEY, cust text NOT NULL, cents int, status text);
CREATE TABLE mo_t (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2),
                   status text, gift text);
SELECT softmig.create_migration('mo', 'mo_l', 'mo_t',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    new_only => '{gift}');
INSERT INTO mo_l SELECT g, 'c' || g, g * 100, 'pending' FROM generate_series(1, 3000) g;

------------------------------------------------------------------ legacy state
SELECT migration, state, write_authority, read_default, legacy_table, target_table, info
  FROM softmig.monitor_info WHERE migration = 'mo';
SELECT datname = current_database() AS this_db, migration_state, envelope_open, triggers_healthy, trigger_problems,
       backfill_done, backfill_rows_copied_total, backfill_rows_remaining, backfill_rows_per_second,
       check_last_run_timestamp_seconds, checks_failing, ledger_keys
  FROM softmig.monitor WHERE migration = 'mo';
-- no check ran yet: nothing per check
SELECT count(*) FROM softmig.monitor_checks WHERE migration = 'mo';

------------------------------------------------------------------ a partial backfill
SELECT softmig.advance('mo');
SELECT migration_state, backfill_done, backfill_rows_copied_total, backfill_batches_total,
       backfill_last_progress_timestamp_seconds = extract(epoch FROM (SELECT state_changed_at FROM softmig.migrations WHERE name = 'mo'))
           AS not_started_counts_from_mirroring
  FROM softmig.monitor WHERE migration = 'mo';
-- quiet with client_min_messages = warning, even when reporting after every batch
SET softmig.backfill_progress_interval = 0;
CALL softmig.backfill('mo', batch_size => 1000, max_batches => 2);
RESET softmig.backfill_progress_interval;
SELECT b->'phase' AS phase, b->'rows_backfilled' AS rows, b->'run_rows' AS run_rows,
       (b->>'rows_per_second')::numeric > 0 AS has_rate,
       (b->>'percent_done')::numeric BETWEEN 1 AND 99.9 AS percent_between,
       (b->>'remaining_estimate')::bigint > 0 AS has_remaining,
       b->'eta_seconds' IS NOT NULL AS has_eta,
       (b->>'last_progress_at')::timestamptz = (b->>'last_batch_at')::timestamptz AS progressed_last_batch,
       (b->>'run_started_at')::timestamptz <= (b->>'last_batch_at')::timestamptz AS run_before_batch
  FROM (SELECT softmig.status('mo')->'backfill' AS b) s;
SELECT backfill_done, backfill_rows_copied_total, backfill_batches_total, backfill_rows_remaining > 0 AS remaining,
       backfill_rows_per_second > 0 AS running_rate,
       backfill_last_progress_timestamp_seconds = extract(epoch FROM (SELECT progressed_at FROM softmig.backfill_progress WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo')))
           AS last_progress
  FROM softmig.monitor WHERE migration = 'mo';
-- a batch after more than a minute's gap starts a new run; one within a minute continues it
UPDATE softmig.backfill_progress SET batch_ended_at = batch_ended_at - interval '2 minutes'
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo');
SELECT backfill_rows_per_second FROM softmig.monitor WHERE migration = 'mo';
SELECT softmig.backfill_batch('mo', 500)->'copied' AS copied;
SELECT run_rows, rows_backfilled FROM softmig.backfill_progress WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo');
SELECT softmig.backfill_batch('mo', 500)->'copied' AS copied;
SELECT run_rows, rows_backfilled FROM softmig.backfill_progress WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo');
-- a batch that moves nothing on is no progress
UPDATE softmig.backfill_progress SET progressed_at = '2000-01-01 00:00:00+00'
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo');
BEGIN;
UPDATE softmig.backfill_progress SET batches = batches + 1
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo');
SELECT progressed_at = '2000-01-01 00:00:00+00' AS unchanged FROM softmig.backfill_progress
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'mo');
ROLLBACK;

------------------------------------------------------------------ done
CALL softmig.backfill('mo', batch_size => 1000);
SELECT b->'phase' AS phase, b->'percent_done' AS percent, b->'eta_seconds' AS eta, b->'remaining_estimate' AS remaining
  FROM (SELECT softmig.status('mo')->'backfill' AS b) s;
SELECT backfill_done, backfill_rows_copied_total, backfill_rows_remaining FROM softmig.monitor WHERE migration = 'mo';

------------------------------------------------------------------ checks
-- a parity difference planted by hand, an invariant, a transition rule in observe mode
BEGIN;
SET LOCAL softmig.override = 'monitoring test';
UPDATE mo_t SET customer = 'X' WHERE order_id = 7;
COMMIT;
SELECT softmig.add_invariant('mo', 'amounts below 25', 'SELECT order_id FROM public.mo_t WHERE amount >= 25');
SELECT softmig.add_invariant('mo', 'no X customers', $$SELECT order_id FROM public.mo_t WHERE customer = 'X'$$, 'warn');
SELECT softmig.set_option('mo', 'transition_rules', '"observe"');
SELECT softmig.add_transition_rule('mo', 'mo_l', 'status', 'pending', 'paid');
UPDATE mo_l SET status = 'shipped' WHERE id = 1;
SELECT count(*) AS checks FROM softmig.check('mo');
-- (rule ids depend on the tests before this one)
SELECT layer, regexp_replace(check_name, '^rule [0-9]+:', 'rule N:') AS check_name, ok, violations
  FROM softmig.monitor_checks WHERE migration = 'mo' ORDER BY layer, 2;
SELECT kind, differences FROM softmig.monitor_parity WHERE migration = 'mo' ORDER BY kind;
SELECT invariant, severity, violations FROM softmig.monitor_invariants WHERE migration = 'mo' ORDER BY invariant;
SELECT regexp_replace(check_name, '^rule [0-9]+:', 'rule N:') AS check_name, violations
  FROM softmig.monitor_rules WHERE migration = 'mo' ORDER BY 1;
SELECT checks_failing, abs(check_last_run_timestamp_seconds - extract(epoch FROM now())) < 60 AS recent
  FROM softmig.monitor WHERE migration = 'mo';
-- the views show the latest run only
SELECT count(*) AS checks FROM softmig.check('mo');
SELECT count(*) AS rows_in_latest_run FROM softmig.monitor_checks WHERE migration = 'mo';

------------------------------------------------------------------ triggers, shadow, quarantine, envelope, readers
-- the DDL guard refuses this; event triggers do not fire under
-- session_replication_role = replica, which is how it can still happen
SET session_replication_role = replica;
ALTER TABLE mo_l DISABLE TRIGGER USER;
RESET session_replication_role;
SELECT triggers_healthy, trigger_problems FROM softmig.monitor WHERE migration = 'mo';
ALTER TABLE mo_l ENABLE TRIGGER USER;
SELECT triggers_healthy, trigger_problems FROM softmig.monitor WHERE migration = 'mo';
SELECT softmig.quarantine('mo', '{"id": 7}', 'customer under review');
SELECT quarantined_entities FROM softmig.monitor WHERE migration = 'mo';
SELECT softmig.register_reader('mo', 'billing', 'consistency', 'g1');
SELECT reader, class, switch_group, source, registered, info FROM softmig.monitor_readers
 WHERE migration = 'mo' AND registered = 'true';
SELECT softmig.advance('mo', reason => 'monitoring test', force => true);
UPDATE mo_t SET gift = 'a card' WHERE order_id = 2;
SELECT migration_state, envelope_open, envelope_new_only_rows, backfill_rows_remaining
  FROM softmig.monitor WHERE migration = 'mo';
SELECT state, write_authority, read_default FROM softmig.monitor_info WHERE migration = 'mo';

------------------------------------------------------------------ the ledger
BEGIN;
SET LOCAL softmig.operation_key = 'mo:1';
UPDATE mo_t SET amount = 1 WHERE order_id = 3;
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'mo:2';
UPDATE mo_t SET amount = 2 WHERE order_id = 3;
COMMIT;
SELECT ledger_keys FROM softmig.monitor WHERE migration = 'mo';

------------------------------------------------------------------ live row estimates
-- without statistics: pages sampled (about right, whatever autovacuum did meanwhile)
SELECT side, "table", rows BETWEEN 2900 AND 3100 AS about_3000 FROM softmig.monitor_tables WHERE migration = 'mo' ORDER BY side;
ANALYZE mo_l, mo_t;
SELECT side, "table", rows FROM softmig.monitor_tables WHERE migration = 'mo' ORDER BY side;
CREATE TABLE mo_empty (x int);
CREATE TABLE mo_parted (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE mo_p1 PARTITION OF mo_parted FOR VALUES FROM (0) TO (1000);
CREATE TABLE mo_p2 PARTITION OF mo_parted FOR VALUES FROM (1000) TO (2000);
INSERT INTO mo_parted SELECT g, 'v' FROM generate_series(0, 1999) g;
ANALYZE mo_parted;
SELECT softmig._rows_estimate('mo_empty') AS empty, softmig._rows_estimate('mo_parted') AS partitioned,
       softmig._rows_estimate(0) AS no_relation, softmig._rows_estimate(NULL) AS null_arg;

------------------------------------------------------------------ GUC
SHOW softmig.backfill_progress_interval;
-- (the message carries units from PostgreSQL 17 on: checked up to them)
SELECT state, message LIKE '-1 ms is outside the valid range for parameter "softmig.backfill_progress_interval" (0%' AS out_of_range
  FROM t.err($$SET softmig.backfill_progress_interval = -1$$);
SELECT * FROM t.err($$SET softmig.backfill_progress_interval = 'often'$$);

------------------------------------------------------------------ who may read them
-- a role with no privilege of its own reads every view (they show what the
-- catalog shows everyone) and cannot write through them
CREATE ROLE mo_monitor;
SET ROLE mo_monitor;
SELECT count(*) > 0 AS monitor FROM softmig.monitor;
SELECT count(*) > 0 AS info FROM softmig.monitor_info;
SELECT count(*) > 0 AS checks FROM softmig.monitor_checks;
SELECT count(*) > 0 AS parity FROM softmig.monitor_parity;
SELECT count(*) > 0 AS invariants FROM softmig.monitor_invariants;
SELECT count(*) > 0 AS rules FROM softmig.monitor_rules;
SELECT count(*) > 0 AS readers FROM softmig.monitor_readers;
SELECT count(*) >= 0 AS discovery FROM softmig.monitor_discovery;
SELECT count(*) > 0 AS tables FROM softmig.monitor_tables;
SELECT * FROM t.err($$DELETE FROM softmig.monitor_info$$);
SELECT * FROM t.err($$SELECT * FROM mo_l$$);
RESET ROLE;
DROP ROLE mo_monitor;

------------------------------------------------------------------ cleanup
SELECT softmig.drop_migration('mo') FROM (SELECT softmig.advance('mo', reason => 'end', force => true),
                                                 softmig.advance('mo', reason => 'end', force => true)) x;
SELECT count(*) FROM softmig.monitor WHERE migration = 'mo';
DROP TABLE mo_l, mo_t, mo_empty, mo_parted;
