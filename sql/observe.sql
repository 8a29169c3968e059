-- Behavioural layer and the observability surface: invariants, transition
-- rules (enforce and observe), check, inspect, report, metrics, pgTAP
-- helpers, and the mirrored -> new_write guard.
\pset null '(null)'
SET client_min_messages = warning;
-- this session is not an unregistered reader of the migration's tables, so
-- the checks come out the same with and without shared_preload_libraries
SET softmig.discovery = off;

CREATE TABLE ob_l (id int PRIMARY KEY, cust text NOT NULL, cents int, status text);
CREATE TABLE ob_t (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2),
                   status text, gift text);
CREATE TABLE ob_reservations (order_id int PRIMARY KEY);
SELECT softmig.create_migration('ob', 'ob_l', 'ob_t',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    new_only => '{gift}');
INSERT INTO ob_l SELECT g, 'c' || g, g * 100, NULL FROM generate_series(1, 20) g;

------------------------------------------------------------------ invariants
SELECT softmig.add_invariant('ob', 'no negative amounts',
    'SELECT order_id FROM public.ob_t WHERE amount < 0;  ');
SELECT softmig.add_invariant('ob', 'captured needs a reservation',
    $$SELECT t.order_id FROM public.ob_t t
       WHERE t.status = 'captured'
         AND NOT EXISTS (SELECT 1 FROM public.ob_reservations r WHERE r.order_id = t.order_id)
       ORDER BY t.order_id$$);
SELECT softmig.add_invariant('ob', 'big orders are reviewed', 'SELECT id FROM public.ob_l WHERE cents > 1800', 'warn');
SELECT name, severity, query FROM softmig.invariants
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob') ORDER BY name;
-- bad definitions are refused, and nothing is stored
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'DELETE FROM public.ob_t')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'WITH d AS (DELETE FROM public.ob_t RETURNING *) SELECT * FROM d')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT * FROM public.ob_t FOR UPDATE')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT * FROM (SELECT * FROM public.ob_t FOR SHARE) s')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT 1 INTO ob_copy')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT 1; SELECT 2')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELEC 1')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT * FROM ob_t')$$);   -- search_path is pinned
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'TRUNCATE public.ob_t')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT 1', 'fatal')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', '', 'SELECT 1')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'no negative amounts', 'SELECT 1')$$);
SELECT * FROM t.err($$SELECT softmig.add_invariant('nope', 'x', 'SELECT 1')$$);
SELECT count(*) AS invariants FROM softmig.invariants
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob');
-- invariants run as the caller, read-only
SELECT * FROM softmig.invariant_violations('ob');
SELECT * FROM softmig.invariant_violations('ob', 'big orders are reviewed', 1);
SELECT * FROM t.err($$SELECT * FROM softmig.invariant_violations('ob', 'nope')$$);
-- not an owner: management is refused, running them needs SELECT on what they read
CREATE ROLE ob_stranger;
SET ROLE ob_stranger;
SELECT * FROM t.err($$SELECT softmig.add_invariant('ob', 'x', 'SELECT 1')$$);
SELECT * FROM t.err($$SELECT * FROM softmig.invariant_violations('ob')$$);
RESET ROLE;

------------------------------------------------------------------ transition rules
SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', NULL, 'pending');
SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'pending', 'captured',
    'EXISTS (SELECT 1 FROM public.ob_reservations r WHERE r.order_id = new.order_id)');
SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'pending', 'cancelled');
SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'captured', 'refunded');
SELECT id, tbl, col, from_value, to_value, requires FROM softmig.transition_rules
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob') ORDER BY id;
SELECT tgname = 'softmig_rule_' || (SELECT id FROM softmig.migrations WHERE name = 'ob') AS named_by_migration,
       tgrelid::regclass, pg_get_triggerdef(oid) ~ 'AFTER INSERT OR UPDATE OF status ON public.ob_t FOR EACH ROW' AS on_status
  FROM pg_trigger WHERE tgname LIKE 'softmig_rule_%';
-- bad definitions are refused
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_reservations', 'order_id', NULL, '1')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'nope', NULL, 'x')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'pending', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'pending', 'pending')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'pending', 'captured')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'a', 'b', 'amount')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'a', 'b', 'nope > 1')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'status', 'a', 'b', 'true; DROP TABLE ob_t')$$);
SELECT * FROM t.err($$SELECT softmig.add_transition_rule('ob', 'ob_t', 'amount', NULL, 'lots')$$);
SELECT count(*) AS rules FROM softmig.transition_rules
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob');

-- enforce (default): refusals name the rule, the edge and the key
SELECT softmig.advance('ob');                       -- mirrored: the target is written by the mirror
CALL softmig.backfill('ob');
SELECT softmig.advance('ob', reason => 'target takes writes', force => true);
UPDATE ob_t SET status = 'pending' WHERE order_id IN (1, 2, 3);
SELECT * FROM t.err($$UPDATE ob_t SET status = 'shipped' WHERE order_id = 1$$);
SELECT * FROM t.err($$UPDATE ob_t SET status = 'captured' WHERE order_id = 1$$);
SELECT * FROM t.err($$INSERT INTO ob_t (order_id, customer, status) VALUES (100, 'NEW', 'captured')$$);
SELECT * FROM t.err($$UPDATE ob_t SET status = NULL WHERE order_id = 2$$);
INSERT INTO ob_reservations VALUES (1);
UPDATE ob_t SET status = 'captured' WHERE order_id = 1;       -- requires holds now
UPDATE ob_t SET status = 'captured', amount = amount WHERE order_id = 1;   -- unchanged: no transition
UPDATE ob_t SET status = 'cancelled' WHERE order_id = 2;
INSERT INTO ob_t (order_id, customer, status) VALUES (101, 'NEW', 'pending'), (102, 'NEW2', NULL);
UPDATE ob_t SET amount = 1 WHERE order_id = 3;                -- status not touched
SELECT order_id, status FROM ob_t WHERE status IS NOT NULL ORDER BY 1;
-- the projection into legacy carried the status (softmig's own writes are not judged again)
SELECT id, status FROM ob_l WHERE status IS NOT NULL ORDER BY 1;

-- observe: violations are recorded, not refused
SELECT softmig.set_option('ob', 'transition_rules', '"observe"') ->> 'transition_rules' AS mode;
SELECT * FROM t.err($$SELECT softmig.set_option('ob', 'transition_rules', '"sometimes"')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('ob', 'parity_chunk_rows', '"many"')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('ob', 'parity_chunk_rows', '0')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('ob', 'parity_chunk_rows', '2.5')$$);
SELECT softmig.set_option('ob', 'parity_chunk_rows', '3') ->> 'parity_chunk_rows' AS chunk_rows;
UPDATE ob_t SET status = 'shipped' WHERE order_id = 3;        -- illegal edge
UPDATE ob_t SET status = 'captured' WHERE order_id = 101;     -- requires is false
INSERT INTO ob_t (order_id, customer, status) VALUES (103, 'NEW3', 'refunded');
SELECT migration_id IS NOT NULL AS has_migration, rule_id, tbl, col, from_value, to_value, key, reason, actor
  FROM softmig.rule_violations
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob') ORDER BY id;
SELECT order_id, status FROM ob_t WHERE order_id IN (3, 101, 103) ORDER BY 1;

------------------------------------------------------------------ check
-- plant parity differences, and make an error invariant fail
BEGIN;
SET LOCAL softmig.override = 'plant';
UPDATE ob_l SET cents = cents + 1 WHERE id = 5;
DELETE FROM ob_l WHERE id = 6;
COMMIT;
UPDATE ob_t SET status = 'captured' WHERE order_id = 3;        -- no reservation: invariant fails
SELECT layer, check_name, ok, violations FROM softmig.check('ob') WHERE check_name <> 'readers';
-- details keep a bounded sample of violating keys
SELECT check_name, jsonb_path_query_array(detail->'sample', '$[*] ? (@.type() == "object")') #- '{0,at}' #- '{1,at}' #- '{2,at}' AS sample
  FROM softmig.check_results
 WHERE run_id = (SELECT max(run_id) FROM softmig.check_results)
   AND check_name IN ('parity_mismatch', 'parity_missing_in_legacy', 'invariant:captured needs a reservation',
                      'rules public.ob_t.status: edges not allowed')
 ORDER BY ordinal;
SELECT detail->'fields' AS mismatch_fields, detail->'run'->'compared_fields' AS compared,
       detail->'run'->'chunk_rows' AS chunk_rows
  FROM softmig.check_results
 WHERE run_id = (SELECT max(run_id) FROM softmig.check_results) AND check_name = 'parity_mismatch';
SELECT detail - 'sample' - 'last_at' AS detail FROM softmig.check_results
 WHERE run_id = (SELECT max(run_id) FROM softmig.check_results)
   AND check_name LIKE 'rule 2:%';
-- the results are kept as a time series
SELECT count(*) AS checks FROM softmig.check('ob');
SELECT count(DISTINCT run_id) AS runs, count(*) FILTER (WHERE NOT ok) > 0 AS some_failing
  FROM softmig.check_results WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob');
SELECT * FROM t.err($$SELECT * FROM softmig.check('nope')$$);
SET ROLE ob_stranger;
SELECT * FROM t.err($$SELECT * FROM softmig.check('ob')$$);
RESET ROLE;

------------------------------------------------------------------ inspect
SELECT jsonb_pretty(softmig.inspect('ob', '{"id": 5}') - 'last_writes' - 'history');
SELECT softmig.inspect('ob', '{"id": 6}') -> 'parity' AS parity,
       softmig.inspect('ob', '{"id": 6}') -> 'flags' AS flags,
       softmig.inspect('ob', '{"id": 6}') -> 'legacy' AS legacy;
UPDATE ob_t SET gift = 'ribbon' WHERE order_id = 7;
SELECT softmig.quarantine('ob', '{"id": 7}', 'support case 42');
SELECT i -> 'flags' -> 'new_only' AS new_only, i -> 'flags' -> 'quarantined' AS quarantined,
       i -> 'flags' -> 'quarantine' ->> 'reason' AS why, i -> 'parity' AS parity
  FROM softmig.inspect('ob', '{"id": 7}') i;
SELECT jsonb_path_query_array(softmig.inspect('ob', '{"id": 101}'), '$.rule_violations[*].reason') AS violations,
       softmig.inspect('ob', '{"id": 101}') -> 'last_writes' ? 'target' AS has_last_write;
SELECT jsonb_path_query_array(softmig.inspect('ob', '{"id": 5}'), '$.history[*].action') AS history;
SELECT softmig.inspect('ob', '{"id": 999}') -> 'parity' AS parity;   -- on neither side
SELECT * FROM t.err($$SELECT softmig.inspect('ob', '{"nope": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('ob', '{}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('ob', '[1]')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('ob', '{"id": "x"}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('ob', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.inspect('nope', '{"id": 1}')$$);

------------------------------------------------------------------ report and metrics
SELECT count(*) > 0 AS checked FROM softmig.check('ob') \gset
SELECT regexp_replace(regexp_replace(softmig.report('ob'),
           '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Za-z0-9+-]+', '<time>', 'g'), 'run \d+', 'run <n>', 'g')
       AS report \gset
SELECT line FROM regexp_split_to_table(:'report', E'\n') line WHERE line !~ 'read group|readers';
SELECT metric, value FROM softmig.metrics
 WHERE migration = 'ob'
   AND metric NOT LIKE '%seconds%' AND metric NOT LIKE '%estimate' AND metric NOT LIKE '%readers'
 ORDER BY metric;
SELECT count(*) > 0 AS has_age FROM softmig.metrics WHERE migration = 'ob' AND metric = 'last_check_age_seconds' AND value >= 0;
-- everyone may read the metrics (a monitoring role needs nothing else)
SET ROLE ob_stranger;
SELECT count(*) > 20 AS visible FROM softmig.metrics WHERE migration = 'ob';
RESET ROLE;
SELECT softmig.forget_checks('ob', '0 seconds') > 0 AS forgot;
SELECT count(*) AS kept FROM softmig.check_results WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob');
SELECT line FROM regexp_split_to_table(softmig.report('ob'), E'\n') line WHERE line ~ 'checks';

------------------------------------------------------------------ pgTAP helpers (no pgTAP here: bare TAP lines)
SELECT softmig.tap_ok(true, 'a passing assertion') AS passing,
       softmig.tap_ok(false, 'a failing one', E'why\nand more') AS failing;
SELECT softmig.parity_ok('ob');
SELECT softmig.invariants_ok('ob', 'business rules hold');
SELECT softmig.transition_rules_ok('ob');
SELECT softmig.forget_rule_violations('ob', '0 seconds') AS forgotten;
SELECT softmig.transition_rules_ok('ob');

------------------------------------------------------------------ the mirrored -> new_write guard
CREATE TABLE ob_gl (id int PRIMARY KEY, v int);
CREATE TABLE ob_gt (id int PRIMARY KEY, v int);
SELECT softmig.create_migration('ob_guard', 'ob_gl', 'ob_gt');
INSERT INTO ob_gl SELECT g, g FROM generate_series(1, 10) g;
SELECT softmig.advance('ob_guard');
CALL softmig.backfill('ob_guard');
BEGIN;
SET LOCAL softmig.override = 'drift';
UPDATE ob_gt SET v = -v WHERE id IN (2, 3);
COMMIT;
SELECT * FROM t.err($$SELECT softmig.advance('ob_guard')$$);
UPDATE ob_gl SET v = v WHERE id IN (2, 3);                    -- the mirror repairs the drift
SELECT softmig.add_invariant('ob_guard', 'v below 10', 'SELECT id FROM public.ob_gl WHERE v >= 10');
SELECT softmig.add_invariant('ob_guard', 'v below 5 (warn)', 'SELECT id FROM public.ob_gl WHERE v >= 5', 'warn');
SELECT * FROM t.err($$SELECT softmig.advance('ob_guard')$$);
SELECT softmig.drop_invariant('ob_guard', 'v below 10');
SELECT * FROM t.err($$SELECT softmig.drop_invariant('ob_guard', 'v below 10')$$);
SELECT softmig.advance('ob_guard');                          -- a failing warn invariant does not block
SELECT action, reason FROM softmig.history('ob_guard') WHERE action LIKE '%invariant%' OR action = 'advance' ORDER BY at;

------------------------------------------------------------------ dropping rules and migrations
SELECT softmig.drop_transition_rule('ob', 'ob_t', 'status', 'captured', 'refunded');
SELECT * FROM t.err($$SELECT softmig.drop_transition_rule('ob', 'ob_t', 'status', 'captured', 'refunded')$$);
SELECT count(*) AS rules_left FROM softmig.transition_rules WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'ob');
SELECT softmig.drop_transition_rule('ob', 'ob_t', 'status', NULL, 'pending');
SELECT softmig.drop_transition_rule('ob', 'ob_t', 'status', 'pending', 'captured');
SELECT softmig.drop_transition_rule('ob', 'ob_t', 'status', 'pending', 'cancelled');
SELECT count(*) AS rule_triggers FROM pg_trigger WHERE tgname LIKE 'softmig_rule_%' AND tgrelid = 'ob_t'::regclass;
UPDATE ob_t SET status = 'anything' WHERE order_id = 4;        -- no rules left
-- a partitioned table: the rule trigger reaches every partition
CREATE TABLE ob_pl (id int PRIMARY KEY, st text) PARTITION BY RANGE (id);
CREATE TABLE ob_pl_1 PARTITION OF ob_pl FOR VALUES FROM (0) TO (10);
CREATE TABLE ob_pl_2 PARTITION OF ob_pl FOR VALUES FROM (10) TO (20);
CREATE TABLE ob_pt (id int PRIMARY KEY, st text);
SELECT softmig.create_migration('ob_part', 'ob_pl', 'ob_pt');
SELECT softmig.add_transition_rule('ob_part', 'ob_pl', 'st', NULL, 'new');
SELECT softmig.add_transition_rule('ob_part', 'ob_pl', 'st', 'new', 'done');
INSERT INTO ob_pl VALUES (1, 'new'), (15, 'new');
UPDATE ob_pl SET st = 'done' WHERE id = 15;
SELECT * FROM t.err($$UPDATE ob_pl SET st = 'new' WHERE id = 15$$);
SELECT * FROM t.err($$INSERT INTO ob_pl_1 VALUES (2, 'done')$$);
SELECT count(*) AS rule_triggers FROM pg_trigger WHERE tgname LIKE 'softmig_rule_%';
SELECT softmig.drop_migration('ob_part');
SELECT count(*) AS rule_triggers, (SELECT count(*) FROM softmig.transition_rules) AS rules
  FROM pg_trigger WHERE tgname LIKE 'softmig_rule_%';
INSERT INTO ob_pl VALUES (3, 'anything');                     -- the rules went with the migration
DROP OWNED BY ob_stranger;
DROP ROLE ob_stranger;
