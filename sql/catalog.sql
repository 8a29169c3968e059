-- create_migration validation, ownership, transitions and history
\pset null '(null)'
CREATE TABLE legacy_a (id int PRIMARY KEY, cust text NOT NULL, cents int, note text);
CREATE TABLE target_a (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), note text, flag text);

SELECT * FROM t.counts();

-- every validation error, each checked for its SQLSTATE and message
-- (lv/tv map completely by default, so each call fails only for what it tests)
CREATE TABLE lv (id int PRIMARY KEY, cust text, cents int, note text);
CREATE TABLE tv (id int PRIMARY KEY, customer text, amount numeric, note text, flag text);
SELECT * FROM t.err($$SELECT softmig.create_migration(NULL, 'lv', 'tv')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('  ', 'lv', 'tv')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'no_such_table', 'target_a')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'lv')$$);
CREATE VIEW v_a AS SELECT * FROM legacy_a;
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'v_a', 'target_a')$$);
CREATE TABLE part_a (id int PRIMARY KEY, cust text NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE part_a1 PARTITION OF part_a FOR VALUES FROM (0) TO (100);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'part_a1', 'target_a')$$);
CREATE TEMP TABLE temp_a (id int PRIMARY KEY);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'temp_a', 'target_a')$$);
CREATE TABLE nopk (id int NOT NULL, cust text NOT NULL);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'nopk', 'target_a')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', key => '{}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', key => '{id,id}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', key => '{nope}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', key => '{note}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '[]')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', backward => '"x"')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"nope": "id"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": 5}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": ""}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "id, cust"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "id FROM pg_class"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "id; DROP TABLE legacy_a"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "id AS x"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "id) --"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"customer": "no_such_col"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"amount": "cust"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', backward => '{"nope": "id"}')$$);
-- (PostgreSQL's own error: its detail and hint are worded differently from 19)
SELECT state, message FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', backward => '{"cust": "customer + 1"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', new_only => '{nope}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', divergent => '{nope}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', options => '[1]')$$);
SELECT state, message, hint LIKE 'Known options: target_key, lock_timeout, %' AS hint_lists_options
  FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', options => '{"colour": "red"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', options => '{"lock_timeout": "soon"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "cents"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', options => '{"target_key": ["id", "note"]}')$$);
-- a target key column may allow NULL (sql/nullable_key.sql) but needs a forward mapping
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', options => '{"target_key": ["flag"]}')$$);
-- target must have a unique index on the correlation key
CREATE TABLE target_noidx (id int NOT NULL, customer text);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'target_noidx', forward => '{}')$$);
-- an unmapped NOT NULL column without default would make every mirrored insert fail
CREATE TABLE target_nn (id int PRIMARY KEY, customer text, region text NOT NULL);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'target_nn', forward => '{}')$$);
CREATE TABLE target_gen (id int PRIMARY KEY, customer text, up text GENERATED ALWAYS AS (upper(customer)) STORED);
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'target_gen', forward => '{"up": "cust"}')$$);
-- a backward mapping that does not type-check against legacy
SELECT * FROM t.err($$SELECT softmig.create_migration('m', 'lv', 'tv', forward => '{"id": "cents"}', options => '{"target_key": ["id"]}', backward => '{"id": "customer"}')$$);

-- nothing was left behind by any failure
SELECT * FROM t.counts();

-- the happy path
SELECT softmig.create_migration('orders', 'legacy_a', 'target_a',
    forward => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    new_only => '{flag}', options => '{"lock_timeout": "2s"}');
SELECT name, legacy, target, legacy_key, target_key, new_only, divergent, options, state, created_by
  FROM softmig.migrations;
SELECT direction, column_name, ordinal, expression, is_default
  FROM softmig.mappings ORDER BY direction DESC, ordinal;
SELECT * FROM t.counts();
-- duplicate name, and a table already in a migration
SELECT * FROM t.err($$SELECT softmig.create_migration('orders', 'legacy_a', 'target_a')$$);
CREATE TABLE other_t (id int PRIMARY KEY, cust text);
SELECT * FROM t.err($$SELECT softmig.create_migration('orders2', 'other_t', 'target_a')$$);
-- unknown migration names: 42704 everywhere
SELECT * FROM t.err($$SELECT softmig.state('nope')$$);
SELECT * FROM t.err($$SELECT softmig.status('nope')$$);
SELECT * FROM t.err($$SELECT softmig.advance('nope')$$);
SELECT * FROM t.err($$SELECT softmig.rollback('nope')$$);
SELECT * FROM t.err($$SELECT * FROM softmig.history('nope')$$);
SELECT * FROM t.err($$SELECT softmig.drop_migration('nope')$$);
-- a literal is a migration name, not a cast: a migration may even be called "legacy"
SELECT softmig.state('orders'), softmig.state('orders'::text);

-- options can be changed later, validated the same way, and are audited
SELECT softmig.set_option('orders', 'lock_timeout', '"3s"');
SELECT * FROM t.err($$SELECT softmig.set_option('orders', 'lock_timeout', '"later"')$$);
SELECT state, message, hint LIKE 'Known options: target_key, lock_timeout, %' AS hint_lists_options
  FROM t.err($$SELECT softmig.set_option('orders', 'colour', '"red"')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('orders', 'target_key', '["order_id"]')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('orders', NULL, '1')$$);
SELECT softmig.set_option('orders', 'lock_timeout', NULL);
SELECT softmig.set_option('orders', 'lock_timeout', '"2s"');
SELECT current_setting('lock_timeout') AS session_lock_timeout_untouched;
SELECT action, detail FROM softmig.history('orders') WHERE action = 'set_option';

-- transitions: every illegal move fails with 55000 and names the legal ones
SELECT * FROM t.err($$SELECT softmig.advance('orders', 'new_write')$$);
SELECT * FROM t.err($$SELECT softmig.advance('orders', 'legacy')$$);
SELECT * FROM t.err($$SELECT softmig.rollback('orders')$$);
SELECT * FROM t.err($$SELECT softmig.advance('orders', force => true)$$);
SELECT softmig.advance('orders', reason => 'start mirroring');
SELECT * FROM t.err($$SELECT softmig.advance('orders', 'cutover')$$);
SELECT * FROM t.err($$SELECT softmig.drop_migration('orders')$$);
SELECT * FROM t.err($$SELECT softmig.advance('orders', 'new_write')$$);   -- guard: no backfill yet
SELECT softmig.advance('orders', 'new_write', reason => 'empty table, nothing to backfill', force => true);
SELECT softmig.rollback('orders', 'try again');
SELECT softmig.advance('orders', force => true, reason => 'forced on purpose');
SELECT softmig.advance('orders');
SELECT softmig.rollback('orders');
SELECT softmig.advance('orders', 'new_read');
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT softmig.advance('orders');
RESET client_min_messages;
SELECT * FROM t.err($$SELECT softmig.advance('orders')$$);
SELECT * FROM t.err($$SELECT softmig.rollback('orders')$$);
SELECT softmig.state('orders');
SELECT status->>'state' AS state, status->>'write_authority' AS authority, status->>'projection' AS projection,
       status->>'read_default' AS read_default, status->>'envelope_open' AS envelope_open,
       status->>'backfill_done' AS backfill_done, status->'triggers' AS triggers
  FROM softmig.status('orders') AS status;
SELECT actor, action, from_state, to_state, reason, detail FROM softmig.history('orders');

-- ownership: only owners of both tables may manage a migration
CREATE ROLE sm_alice;
CREATE ROLE sm_bob;
CREATE TABLE alice_l (id int PRIMARY KEY, v text);
CREATE TABLE alice_t (id int PRIMARY KEY, v text);
ALTER TABLE alice_l OWNER TO sm_alice;
ALTER TABLE alice_t OWNER TO sm_alice;
CREATE TABLE bob_t (id int PRIMARY KEY, v text);
ALTER TABLE bob_t OWNER TO sm_bob;
SET ROLE sm_bob;
SELECT * FROM t.err($$SELECT softmig.create_migration('alice', 'alice_l', 'alice_t')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('mixed', 'alice_l', 'bob_t')$$);
RESET ROLE;
SET ROLE sm_alice;
SELECT softmig.create_migration('alice', 'alice_l', 'alice_t');
SELECT softmig.advance('alice');
RESET ROLE;
SET ROLE sm_bob;
SELECT * FROM t.err($$SELECT softmig.advance('alice')$$);
SELECT * FROM t.err($$SELECT softmig.rollback('alice')$$);
SELECT * FROM t.err($$SELECT softmig.drop_migration('alice')$$);
SELECT softmig.state('alice');                 -- reading is open to everyone
SELECT * FROM t.err($$INSERT INTO softmig.migrations (name) VALUES ('x')$$);
SELECT * FROM t.err($$UPDATE softmig.migrations SET state = 'cutover'$$);
SELECT * FROM t.err($$SELECT softmig._set_state(1, 'cutover', 'x', NULL, NULL)$$);
RESET ROLE;
SELECT actor, action, from_state, to_state FROM softmig.history('alice');
SET ROLE sm_alice;
SELECT softmig.rollback('alice');
SELECT softmig.drop_migration('alice');
RESET ROLE;
SELECT count(*) AS alice_triggers FROM pg_trigger WHERE tgrelid IN ('alice_l'::regclass, 'alice_t'::regclass);

-- drop in cutover removes every trigger; history is kept
SELECT count(*) AS orders_triggers FROM pg_trigger WHERE tgname ~ '^softmig_[0-9]+_';
SELECT softmig.drop_migration('orders');
SELECT count(*) AS orders_triggers FROM pg_trigger WHERE tgname ~ '^softmig_[0-9]+_';
SELECT count(*) AS migrations FROM softmig.migrations;
SELECT action FROM softmig.history_log h ORDER BY id DESC LIMIT 1;

DROP TABLE lv, tv, legacy_a, target_a, part_a, nopk, target_noidx, target_nn, target_gen, other_t, alice_l, alice_t, bob_t CASCADE;
DROP ROLE sm_alice;
DROP ROLE sm_bob;
