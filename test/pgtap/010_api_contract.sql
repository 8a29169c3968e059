-- Public SQL API surface: every public function (doc/reference.md),
-- with its full argument list and return type, the types and the metrics view.
--
-- Argument and return types are spelled as regtype prints them with softmig
-- not on the search_path (function_returns compares text): integer, boolean,
-- text[], softmig.state, ...
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS softmig;

BEGIN;
SET LOCAL search_path = public, pg_catalog;
SELECT plan(80);

SELECT has_schema('softmig', 'schema softmig exists');

-- Types
SELECT has_type('softmig', 'state', 'type softmig.state exists');
SELECT has_enum('softmig', 'side', 'enum softmig.side exists');
SELECT enum_has_labels('softmig', 'side', ARRAY['legacy', 'new'],
    'softmig.side has labels legacy, new');

-- Definition and state
SELECT has_function('softmig', 'create_migration',
    ARRAY['text', 'regclass', 'regclass', 'text[]', 'jsonb', 'jsonb', 'text[]', 'text[]', 'jsonb'],
    'create_migration(name, legacy, target, key, forward, backward, new_only, divergent, options) exists');
SELECT function_returns('softmig', 'create_migration',
    ARRAY['text', 'regclass', 'regclass', 'text[]', 'jsonb', 'jsonb', 'text[]', 'text[]', 'jsonb'],
    'void', 'create_migration returns void');

SELECT has_function('softmig', 'drop_migration', ARRAY['text'],
    'drop_migration(name) exists');
SELECT function_returns('softmig', 'drop_migration', ARRAY['text'], 'void',
    'drop_migration returns void');

SELECT has_function('softmig', 'state', ARRAY['text'],
    'state(name) exists');
SELECT function_returns('softmig', 'state', ARRAY['text'], 'softmig.state',
    'state returns softmig.state');

SELECT has_function('softmig', 'advance', ARRAY['text', 'softmig.state', 'text', 'boolean'],
    'advance(name, to_state, reason, force) exists');
SELECT function_returns('softmig', 'advance', ARRAY['text', 'softmig.state', 'text', 'boolean'],
    'softmig.state', 'advance returns softmig.state');

SELECT has_function('softmig', 'rollback', ARRAY['text', 'text'],
    'rollback(name, reason) exists');
SELECT function_returns('softmig', 'rollback', ARRAY['text', 'text'], 'softmig.state',
    'rollback returns softmig.state');

SELECT has_function('softmig', 'is_legal_transition', ARRAY['softmig.state', 'softmig.state'],
    'is_legal_transition(from_state, to_state) exists');
SELECT function_returns('softmig', 'is_legal_transition', ARRAY['softmig.state', 'softmig.state'],
    'boolean', 'is_legal_transition returns boolean');

SELECT has_function('softmig', 'status', ARRAY['text'],
    'status(name) exists');
SELECT function_returns('softmig', 'status', ARRAY['text'], 'jsonb',
    'status returns jsonb');

SELECT has_function('softmig', 'history', ARRAY['text'],
    'history(name) exists');
SELECT function_returns('softmig', 'history', ARRAY['text'], 'setof record',
    'history returns a table (setof record)');

-- Idempotency
SELECT has_function('softmig', 'operation_applied', ARRAY['text', 'text'],
    'operation_applied(name, key) exists');
SELECT function_returns('softmig', 'operation_applied', ARRAY['text', 'text'], 'boolean',
    'operation_applied returns boolean');

SELECT has_function('softmig', 'forget_operations', ARRAY['text', 'interval'],
    'forget_operations(name, older_than) exists');
SELECT function_returns('softmig', 'forget_operations', ARRAY['text', 'interval'], 'bigint',
    'forget_operations returns bigint');

-- Backfill and merge
SELECT has_function('softmig', 'backfill', ARRAY['text', 'integer', 'integer', 'integer'],
    'backfill(name, batch_size, max_batches, pause_ms) exists');
SELECT is_procedure('softmig', 'backfill', ARRAY['text', 'integer', 'integer', 'integer'],
    'backfill is a procedure');

SELECT has_function('softmig', 'hydrate', ARRAY['text', 'jsonb', 'pg_snapshot'],
    'hydrate(name, rows, as_of) exists');
SELECT function_returns('softmig', 'hydrate', ARRAY['text', 'jsonb', 'pg_snapshot'], 'bigint',
    'hydrate returns bigint');

SELECT has_function('softmig', 'set_field_authority', ARRAY['text', 'name', 'softmig.side'],
    'set_field_authority(name, field, side) exists');
SELECT function_returns('softmig', 'set_field_authority', ARRAY['text', 'name', 'softmig.side'],
    'void', 'set_field_authority returns void');

-- Rollback envelope and forward-fix
SELECT has_function('softmig', 'envelope', ARRAY['text'],
    'envelope(name) exists');
SELECT function_returns('softmig', 'envelope', ARRAY['text'], 'jsonb',
    'envelope returns jsonb');

SELECT has_function('softmig', 'close_envelope', ARRAY['text', 'text'],
    'close_envelope(name, reason) exists');
SELECT function_returns('softmig', 'close_envelope', ARRAY['text', 'text'], 'void',
    'close_envelope returns void');

SELECT has_function('softmig', 'quarantine', ARRAY['text', 'jsonb', 'text'],
    'quarantine(name, key, reason) exists');
SELECT function_returns('softmig', 'quarantine', ARRAY['text', 'jsonb', 'text'], 'void',
    'quarantine returns void');

SELECT has_function('softmig', 'release', ARRAY['text', 'jsonb'],
    'release(name, key) exists');
SELECT function_returns('softmig', 'release', ARRAY['text', 'jsonb'], 'void',
    'release returns void');

SELECT has_function('softmig', 'shadow_disable', ARRAY['text', 'text'],
    'shadow_disable(name, reason) exists');
SELECT function_returns('softmig', 'shadow_disable', ARRAY['text', 'text'], 'void',
    'shadow_disable returns void');

SELECT has_function('softmig', 'shadow_enable', ARRAY['text'],
    'shadow_enable(name) exists');
SELECT function_returns('softmig', 'shadow_enable', ARRAY['text'], 'void',
    'shadow_enable returns void');

-- Read paths
SELECT has_function('softmig', 'register_reader', ARRAY['text', 'text', 'text', 'text'],
    'register_reader(name, reader, class, switch_group) exists');
SELECT function_returns('softmig', 'register_reader', ARRAY['text', 'text', 'text', 'text'],
    'void', 'register_reader returns void');

SELECT has_function('softmig', 'read_source', ARRAY['text', 'text'],
    'read_source(name, reader) exists');
SELECT function_returns('softmig', 'read_source', ARRAY['text', 'text'], 'softmig.side',
    'read_source returns softmig.side');

SELECT has_function('softmig', 'switch_reads', ARRAY['text', 'text', 'softmig.side', 'text'],
    'switch_reads(name, switch_group, to_side, reason) exists');
SELECT function_returns('softmig', 'switch_reads', ARRAY['text', 'text', 'softmig.side', 'text'],
    'void', 'switch_reads returns void');

SELECT has_function('softmig', 'create_read_view', ARRAY['text', 'text', 'softmig.side'],
    'create_read_view(name, view_name, shape) exists');
SELECT function_returns('softmig', 'create_read_view', ARRAY['text', 'text', 'softmig.side'],
    'void', 'create_read_view returns void');

SELECT has_function('softmig', 'readers', ARRAY['text'],
    'readers(name) exists');
SELECT function_returns('softmig', 'readers', ARRAY['text'], 'setof record',
    'readers returns a table (setof record)');

-- Semantic observability
SELECT has_function('softmig', 'parity', ARRAY['text', 'integer'],
    'parity(name, chunk_rows) exists');
SELECT function_returns('softmig', 'parity', ARRAY['text', 'integer'], 'setof record',
    'parity returns a table (setof record)');

SELECT has_function('softmig', 'add_invariant', ARRAY['text', 'text', 'text', 'text'],
    'add_invariant(name, invariant, query, severity) exists');
SELECT function_returns('softmig', 'add_invariant', ARRAY['text', 'text', 'text', 'text'],
    'void', 'add_invariant returns void');

SELECT has_function('softmig', 'add_transition_rule',
    ARRAY['text', 'regclass', 'name', 'text', 'text', 'text'],
    'add_transition_rule(name, tbl, col, from_value, to_value, requires) exists');
SELECT function_returns('softmig', 'add_transition_rule',
    ARRAY['text', 'regclass', 'name', 'text', 'text', 'text'],
    'void', 'add_transition_rule returns void');

SELECT has_function('softmig', 'check', ARRAY['text'],
    'check(name) exists');
SELECT function_returns('softmig', 'check', ARRAY['text'], 'setof record',
    'check returns a table (setof record)');

SELECT has_function('softmig', 'inspect', ARRAY['text', 'jsonb'],
    'inspect(name, key) exists');
SELECT function_returns('softmig', 'inspect', ARRAY['text', 'jsonb'], 'jsonb',
    'inspect returns jsonb');

SELECT has_function('softmig', 'report', ARRAY['text'],
    'report(name) exists');
SELECT function_returns('softmig', 'report', ARRAY['text'], 'text',
    'report returns text');

SELECT has_view('softmig', 'metrics', 'view softmig.metrics exists');
SELECT columns_are('softmig', 'metrics', ARRAY['migration', 'metric', 'value'],
    'softmig.metrics has columns migration, metric, value');
SELECT col_type_is('softmig', 'metrics', 'migration', 'text',
    'softmig.metrics.migration is text');
SELECT col_type_is('softmig', 'metrics', 'metric', 'text',
    'softmig.metrics.metric is text');
SELECT col_type_is('softmig', 'metrics', 'value', 'double precision',
    'softmig.metrics.value is double precision');

-- the routing GUC (doc/reference.md, GUCs): any role may set it, on by
-- default.  It exists once the library is loaded; the state type's input
-- function loads it (the server may not preload softmig).
SELECT ok('legacy'::softmig.state IS NOT NULL, 'the library is loaded');
SELECT results_eq(
    $$SELECT setting, context, vartype FROM pg_catalog.pg_settings
       WHERE name = 'softmig.route_at_plan_time'$$,
    $$VALUES ('on', 'user', 'bool')$$,
    'softmig.route_at_plan_time is a user-settable boolean, on by default');
SELECT lives_ok($$SET LOCAL softmig.route_at_plan_time = off$$,
    'any session may turn routing at plan time off');

-- work_mem of big mirrored statements (doc/reference.md, write authority)
SELECT results_eq(
    $$SELECT setting, unit, context, min_val FROM pg_catalog.pg_settings
       WHERE name = 'softmig.mirror_work_mem'$$,
    $$VALUES ('-1', 'kB', 'user', '-1')$$,
    'softmig.mirror_work_mem is a user-settable size in kB, -1 (maintenance_work_mem) by default');
SELECT lives_ok($$SET LOCAL softmig.mirror_work_mem = '256MB'$$,
    'any session may set softmig.mirror_work_mem');

-- parity's digest cache (doc/reference.md, semantic observability)
SELECT has_function('softmig', 'parity_cache_reset', ARRAY['text'],
    'parity_cache_reset(name) exists');
SELECT function_returns('softmig', 'parity_cache_reset', ARRAY['text'], 'boolean',
    'parity_cache_reset returns boolean');
SELECT has_table('softmig', 'parity_cache', 'table softmig.parity_cache exists');
SELECT ok(NOT has_table_privilege('public', 'softmig.parity_cache',
                                  'SELECT, INSERT, UPDATE, DELETE, TRUNCATE'),
    'PUBLIC may not read or write softmig.parity_cache (it holds sampled key values)');
SELECT results_eq(
    $$SELECT setting, context, vartype FROM pg_catalog.pg_settings
       WHERE name = 'softmig.parity_cache'$$,
    $$VALUES ('on', 'user', 'bool')$$,
    'softmig.parity_cache is a user-settable boolean, on by default');
SELECT lives_ok($$SET LOCAL softmig.parity_cache = off$$,
    'any session may turn the parity cache off');

SELECT * FROM finish();
ROLLBACK;
