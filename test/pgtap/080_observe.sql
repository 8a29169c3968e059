-- The pgTAP helpers softmig.parity_ok, softmig.invariants_ok and
-- softmig.transition_rules_ok used the way a user's migration test would,
-- plus the observability API's signatures.  Everything runs in one
-- transaction and is rolled back.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS softmig;

BEGIN;
SET LOCAL search_path = public, pg_catalog;
SELECT plan(32);

-- signatures of the observability functions (doc/observability.md)
SELECT function_returns('softmig', 'parity', ARRAY['text', 'integer'], 'setof record',
    'parity(name, chunk_rows) returns a table');
SELECT function_returns('softmig', 'add_invariant', ARRAY['text', 'text', 'text', 'text'], 'void',
    'add_invariant(name, invariant, query, severity) returns void');
SELECT function_returns('softmig', 'add_transition_rule',
    ARRAY['text', 'regclass', 'name', 'text', 'text', 'text'], 'void',
    'add_transition_rule(name, tbl, col, from_value, to_value, requires) returns void');
SELECT function_returns('softmig', 'check', ARRAY['text'], 'setof record',
    'check(name) returns a table');
SELECT function_returns('softmig', 'inspect', ARRAY['text', 'jsonb'], 'jsonb',
    'inspect(name, key) returns jsonb');
SELECT function_returns('softmig', 'report', ARRAY['text'], 'text',
    'report(name) returns text');
SELECT has_view('softmig', 'metrics', 'view softmig.metrics exists');
SELECT columns_are('softmig', 'metrics', ARRAY['migration', 'metric', 'value'],
    'softmig.metrics has migration, metric, value');

-- a migration whose two tables agree
CREATE TABLE tap_l (id int PRIMARY KEY, cust text NOT NULL, status text);
CREATE TABLE tap_t (id int PRIMARY KEY, customer text NOT NULL, status text);
SELECT softmig.create_migration('tap', 'tap_l', 'tap_t',
    forward => '{"customer": "upper(cust)"}', backward => '{"cust": "lower(customer)"}',
    options => '{"transition_rules": "observe"}');
INSERT INTO tap_l SELECT g, 'c' || g, 'open' FROM generate_series(1, 50) g;
INSERT INTO tap_t SELECT id, upper(cust), status FROM tap_l;
SELECT softmig.add_invariant('tap', 'every row has a status',
    'SELECT id FROM public.tap_t WHERE status IS NULL');
SELECT softmig.add_transition_rule('tap', 'tap_t', 'status', 'open', 'closed');

-- the helpers, as a user writes them; check_test() runs each helper and
-- tests its verdict, its description and its diagnostics (it takes the
-- helper's own line back, so a planted failure does not fail this file, but
-- a helper that passed where it must fail, or said the wrong thing, does)
SELECT * FROM check_test(softmig.parity_ok('tap'), true,
    'parity_ok on equal tables', 'parity of migration tap is clean', '');
SELECT * FROM check_test(softmig.invariants_ok('tap', 'business rules hold'), true,
    'invariants_ok with no violation', 'business rules hold', '');
SELECT * FROM check_test(softmig.transition_rules_ok('tap'), true,
    'transition_rules_ok with no edge taken',
    'no transition rule of migration tap was violated', '');
UPDATE tap_t SET status = 'closed' WHERE id = 1;
UPDATE tap_l SET status = 'closed' WHERE id = 1;       -- legacy is not managed in state legacy
SELECT * FROM check_test(softmig.transition_rules_ok('tap', 'a legal edge records nothing'), true,
    'transition_rules_ok after a legal edge', 'a legal edge records nothing', '');

-- planted failures: each helper must fail and list what it found
UPDATE tap_t SET customer = 'DRIFT' WHERE id = 7;
UPDATE tap_t SET status = NULL WHERE id = 8;
UPDATE tap_t SET status = 'reopened' WHERE id = 1;
UPDATE tap_l SET status = 'reopened' WHERE id = 1;
SELECT * FROM check_test(softmig.parity_ok('tap', 'parity notices the drift'), false,
    'parity_ok on drifted tables', 'parity notices the drift',
    E'2 differences\n'
    '  mismatch {"id": 7} customer: legacy ''C7'', target ''DRIFT''\n'
    '  mismatch {"id": 8} status: legacy ''open'', target NULL');
SELECT * FROM check_test(softmig.invariants_ok('tap', 'invariants notice the missing status'), false,
    'invariants_ok with a violating row', 'invariants notice the missing status',
    E'1 invariants fail\n'
    '  invariant every row has a status (error): 1 violating rows, e.g. [{"id": 8}]');
SELECT * FROM check_test(softmig.transition_rules_ok('tap', 'the illegal edge was recorded'), false,
    'transition_rules_ok after illegal edges', 'the illegal edge was recorded',
    E'2 recorded violations\n'
    '  public.tap_t.status ''open'' -> NULL for {"id": 8} (edge)\n'
    '  public.tap_t.status ''closed'' -> ''reopened'' for {"id": 1} (edge)');

-- the same failures seen through the API
SELECT results_eq($$SELECT kind, key, field, legacy_value, target_value FROM softmig.parity('tap')$$,
    $$VALUES ('mismatch'::text, '{"id": 7}'::jsonb, 'customer'::text, 'C7'::text, 'DRIFT'::text),
             ('mismatch', '{"id": 8}', 'status', 'open', NULL)$$,
    'parity lists exactly the planted differences');
SELECT is((SELECT violations FROM softmig.invariant_violations('tap')), 1::bigint,
    'the invariant returns the row without status');
SELECT is((SELECT count(*) FROM softmig.rule_violations
            WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'tap')), 2::bigint,
    'observe mode recorded both illegal edges (to NULL, closed -> reopened)');

SELECT * FROM finish();
ROLLBACK;
