-- Public SQL API surface: every function of DESIGN.md "Public SQL API" that
-- exists so far, with its full argument list and return type, and the types.
-- Functions not implemented yet are listed in pending_contract.sql.in; move
-- their checks here as they land (and adjust plan()).
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
SELECT plan(42);

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

SELECT * FROM finish();
ROLLBACK;
