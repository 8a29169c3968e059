-- Read paths: reader registry, read_source in every state and switch group,
-- switch guards, routed views in both shapes, the cutover guard.
\pset null '(null)'
-- Keep this session out of reader discovery: the output must not depend on
-- whether softmig is preloaded (discovery itself is tested by TAP).
SET softmig.discovery = off;
CREATE ROLE regress_rp_stranger;

CREATE TABLE rp_legacy (
    id int PRIMARY KEY,
    cust text NOT NULL,
    cents int,
    note text,
    cust_len int GENERATED ALWAYS AS (length(cust)) STORED);
CREATE TABLE rp_target (
    acc_id int PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12,2),
    note text,
    vip boolean,
    shout text GENERATED ALWAYS AS (customer || '!') STORED);
-- unregistered_reader_window 0: the cutover guard only looks at the registry
SELECT softmig.create_migration('rp', 'rp_legacy', 'rp_target',
    forward => '{"acc_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "acc_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    new_only => '{vip}',
    options => '{"unregistered_reader_window": "0"}');
INSERT INTO rp_legacy (id, cust, cents, note)
SELECT g, 'cust' || g, g * 100, CASE WHEN g % 2 = 0 THEN 'even' END FROM generate_series(1, 2000) g;
ANALYZE rp_legacy;

------------------------------------------------------------------ registry
-- errors, with their SQLSTATEs; nothing is registered by a failed call
SELECT * FROM t.err($$SELECT softmig.register_reader('nope', 'web', 'latency')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader(NULL, 'web', 'latency')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', 'web', 'fast')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', NULL, 'latency')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', 'web', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', 'web', 'latency', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', ' ', 'latency')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', 'web', 'latency', '')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', repeat('x', 64), 'bulk')$$);
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', 'réport', 'bulk')$$);
SET ROLE regress_rp_stranger;
SELECT * FROM t.err($$SELECT softmig.register_reader('rp', 'web', 'latency')$$);
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'default')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('rp', 'rp_nope')$$);
SELECT * FROM t.err($$SELECT softmig.unregister_reader('rp', 'web')$$);
SELECT * FROM t.err($$SELECT softmig.reset_discovery('rp')$$);
-- reading the routing needs no rights on the tables
SELECT softmig.read_source('rp', 'web'), softmig.group_source('rp', 'front');
RESET ROLE;
SELECT count(*) AS registered FROM softmig.reader_registry;

-- the five readers of this test and their groups
SELECT softmig.register_reader('rp', 'web', 'latency', 'front');
SELECT softmig.register_reader('rp', 'mobile', 'latency', 'front');
SELECT softmig.register_reader('rp', 'support', 'consistency', 'support');
SELECT softmig.register_reader('rp', 'audit_job', 'bulk', 'audit');
SELECT softmig.register_reader('rp', 'nightly', 'bulk');          -- group "default"
-- registering again the same way changes nothing; a change is recorded
SELECT softmig.register_reader('rp', 'audit_job', 'bulk', 'audit');
SELECT softmig.register_reader('rp', 'audit_job', 'audit', 'audit');
SELECT reader, class, switch_group FROM softmig.reader_registry ORDER BY reader;
SELECT detail FROM softmig.history('rp') WHERE action = 'register_reader' ORDER BY detail->>'reader', at;
-- unregister: the reader falls back to group "default"
SELECT softmig.register_reader('rp', 'tmp_reader', 'audit', 'temp');
SELECT softmig.unregister_reader('rp', 'tmp_reader');
SELECT * FROM t.err($$SELECT softmig.unregister_reader('rp', 'tmp_reader')$$);
SELECT * FROM t.err($$SELECT softmig.unregister_reader('nope', 'tmp_reader')$$);
SELECT action, detail FROM softmig.history('rp') WHERE action = 'unregister_reader';
-- readers(): registered readers; readers nobody registered show up with
-- discovery (TAP test 040), the columns it fills are left out here
SET client_min_messages = warning;    -- without preloading it says discovery is off
SELECT reader, class, switch_group, source, registered FROM softmig.readers('rp');
RESET client_min_messages;
SELECT * FROM t.err($$SELECT * FROM softmig.readers('nope')$$);

-- the option
SELECT * FROM t.err($$SELECT softmig.set_option('rp', 'unregistered_reader_window', '"-5 minutes"')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('rp', 'unregistered_reader_window', '"soon"')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('rp', 'unregistered_reader_window', '900')$$);

-- read_source errors
SELECT * FROM t.err($$SELECT softmig.read_source('nope')$$);
SELECT * FROM t.err($$SELECT softmig.read_source(NULL, 'web')$$);
SELECT * FROM t.err($$SELECT softmig.group_source('rp', NULL)$$);

------------------------------------------------------------------ sources
-- rp_sources(): where every reader reads from, by name and by
-- application_name (read_source with a NULL reader)
CREATE FUNCTION rp_sources() RETURNS TABLE (state text, web text, mobile text, support text,
    audit_job text, nightly text, unregistered text, "as app support" text, "as app nobody" text)
LANGUAGE plpgsql AS $$
DECLARE
    app text := current_setting('application_name');
BEGIN
    state := softmig.state('rp'::text)::text;
    web := softmig.read_source('rp', 'web');
    mobile := softmig.read_source('rp', 'mobile');
    support := softmig.read_source('rp', 'support');
    audit_job := softmig.read_source('rp', 'audit_job');
    nightly := softmig.read_source('rp', 'nightly');
    unregistered := softmig.read_source('rp', 'someone-else');
    PERFORM set_config('application_name', 'support', true);
    "as app support" := softmig.read_source('rp');
    PERFORM set_config('application_name', 'nobody', true);
    "as app nobody" := softmig.read_source('rp');
    PERFORM set_config('application_name', app, true);
    RETURN NEXT;
END $$;

-- legacy: everybody reads legacy and nothing can be switched
SELECT * FROM rp_sources();
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'front')$$);
SELECT softmig.status('rp')->>'read_default' AS read_default;

-- mirrored: reads move group by group, to new only once the backfill is done
SELECT softmig.advance('rp');
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'front')$$);
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'no_such_group')$$);
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'front', NULL)$$);
-- pinning a group to legacy needs no backfill
SELECT softmig.switch_reads('rp', 'support', 'legacy', 'support stays on the monolith');
CALL softmig.backfill('rp');
SELECT softmig.switch_reads('rp', 'front', reason => 'profile page first');
SELECT softmig.switch_reads('rp', 'front', 'new');                 -- already there: nothing recorded
SELECT * FROM rp_sources();
SELECT switch_group, side, reason FROM softmig.read_switches ORDER BY switch_group;

-- a rollback to legacy forgets every switch (the target is no longer kept in step)
SELECT softmig.rollback('rp', 'practise');
SELECT * FROM rp_sources();
SELECT count(*) AS switches FROM softmig.read_switches;
SELECT action, from_state, to_state, reason, detail FROM softmig.history('rp') WHERE action = 'reset_reads';
SELECT softmig.advance('rp');
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'front')$$);   -- a new epoch needs a new backfill
CALL softmig.backfill('rp');
SELECT softmig.switch_reads('rp', 'front', reason => 'profile page first');
SELECT softmig.switch_reads('rp', 'support', 'legacy', 'support stays on the monolith');
SELECT * FROM rp_sources();

-- moving a reader to another group moves its source with the group
SELECT softmig.register_reader('rp', 'mobile', 'latency', 'support');
SELECT softmig.read_source('rp', 'mobile') AS mobile_in_support;
SELECT softmig.register_reader('rp', 'mobile', 'latency', 'front');
SELECT softmig.read_source('rp', 'mobile') AS mobile_in_front;

------------------------------------------------------------------ routed views
SELECT * FROM t.err($$SELECT softmig.create_read_view('rp', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('rp', 'rp_v', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('rp', 'a.b.c')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('rp', 'no_schema.rp_v')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('rp', 'rp_legacy')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('nope', 'rp_v')$$);
SELECT softmig.create_read_view('rp', 'rp_lv');                   -- legacy's shape (default)
SELECT softmig.create_read_view('rp', 'public.rp_tv', 'new');     -- the target's shape
-- same columns and types as the shape's table; owned by the caller, security_invoker
SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname IN ('rp_lv', 'rp_tv') AND a.attnum > 0 ORDER BY 1, 2;
SELECT relname, pg_get_userbyid(relowner) = current_user AS owned_by_caller, reloptions
  FROM pg_class WHERE relname IN ('rp_lv', 'rp_tv') ORDER BY 1;
SELECT view_name, shape FROM softmig.read_views ORDER BY 1;
SELECT action, detail FROM softmig.history('rp') WHERE action = 'create_read_view' ORDER BY at;

-- Plant a difference: the target (not authoritative in mirrored) is changed
-- by hand under an override, so each answer shows which side gave it.
BEGIN;
SET LOCAL softmig.override = 'plant a difference for the routed-view test';
UPDATE rp_target SET customer = 'PLANTED', amount = 7.77, vip = true WHERE acc_id = 7;
COMMIT;
SELECT * FROM rp_legacy WHERE id = 7;
SELECT * FROM rp_target WHERE acc_id = 7;
-- web (group front, switched to new): the target answers, mapped backward / as is
SET application_name = 'web';
SELECT * FROM rp_lv WHERE id = 7;
SELECT * FROM rp_tv WHERE acc_id = 7;
-- support (group support, pinned to legacy): legacy answers, as is / mapped forward
SET application_name = 'support';
SELECT * FROM rp_lv WHERE id = 7;
SELECT * FROM rp_tv WHERE acc_id = 7;
-- filters on other columns work too, whichever side answers
SELECT id, cust FROM rp_lv WHERE cust = 'cust7';
SET application_name = 'web';
SELECT id, cust FROM rp_lv WHERE cust = 'planted';
SELECT count(*) FROM rp_lv;

-- Plans are routed when they are made (softmig.route_at_plan_time, on by
-- default): only the caller's branch is in the plan, and a key filter
-- reaches that table's index.  web reads the target, support legacy.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SHOW softmig.route_at_plan_time;
EXPLAIN (COSTS OFF) SELECT * FROM rp_lv WHERE id = 7;
EXPLAIN (COSTS OFF) SELECT * FROM rp_tv WHERE acc_id = 7;
EXPLAIN (COSTS OFF, VERBOSE) SELECT * FROM rp_lv WHERE id = 7;
SELECT * FROM t.explain_analyze('SELECT * FROM rp_lv WHERE id = 7');
SET application_name = 'support';
SELECT * FROM t.explain_analyze('SELECT * FROM rp_lv WHERE id = 7');
EXPLAIN (COSTS OFF, VERBOSE) SELECT * FROM rp_tv WHERE acc_id = 7;
-- a joined and an aggregated use are routed too
EXPLAIN (COSTS OFF) SELECT count(*) FROM rp_lv a JOIN rp_tv b ON b.acc_id = a.id WHERE a.id < 3;
-- a one-time filter that also calls another non-immutable function
-- (now()) is not decided at plan time: the Append stays
EXPLAIN (COSTS OFF)
SELECT * FROM (SELECT id FROM rp_legacy WHERE softmig.read_source('rp') = 'legacy' AND now() > '2000-01-01'
               UNION ALL
               SELECT acc_id FROM rp_target WHERE softmig.read_source('rp') = 'new') s
 WHERE id = 7;

-- a parallel-aware Append is replaced only by a partial branch: a
-- non-partial one (here rp_target, made non-parallel) would run once per
-- worker, so for web, routed to the target, the Append stays
SET enable_seqscan = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET enable_indexscan = off;
SET enable_indexonlyscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM rp_lv;
SELECT count(*) FROM rp_lv;
ALTER TABLE rp_target SET (parallel_workers = 0);
SET application_name = 'web';
EXPLAIN (COSTS OFF) SELECT count(*) FROM rp_lv;
SELECT count(*) FROM rp_lv;
ALTER TABLE rp_target RESET (parallel_workers);
RESET enable_indexonlyscan;
RESET enable_indexscan;
RESET min_parallel_table_scan_size;
RESET parallel_tuple_cost;
RESET parallel_setup_cost;
SET enable_seqscan = off;
SET application_name = 'support';

-- A kept (generic) plan is planned again when the reader changes: by SET,
-- by SET LOCAL and at the end of that transaction, and by a function's
-- SET clause.  Each EXECUTE shows which side answered (the planted row).
PREPARE rp_by_key(int) AS SELECT id, cust, cents FROM rp_lv WHERE id = $1;
SET plan_cache_mode = force_generic_plan;
EXPLAIN (COSTS OFF) EXECUTE rp_by_key(7);
EXECUTE rp_by_key(7);
SET application_name = 'web';
EXPLAIN (COSTS OFF) EXECUTE rp_by_key(7);
EXECUTE rp_by_key(7);
BEGIN;
SET LOCAL application_name = 'support';
EXECUTE rp_by_key(7);
COMMIT;
EXECUTE rp_by_key(7);
CREATE FUNCTION rp_cust_of(k int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE c text;
BEGIN
    SELECT cust INTO c FROM rp_lv WHERE id = k;   -- a plan PL/pgSQL keeps
    RETURN c;
END $$;
CREATE FUNCTION rp_cust_as_support(k int) RETURNS text LANGUAGE sql
    SET application_name = 'support' AS $$ SELECT rp_cust_of(k) $$;
SELECT rp_cust_of(7) AS as_web, rp_cust_as_support(7) AS as_support, rp_cust_of(7) AS as_web_again;
-- a switch (here: pinning web's group back to legacy) re-plans it too
SELECT softmig.switch_reads('rp', 'front', 'legacy', 'regress: re-plan on switch');
EXECUTE rp_by_key(7);
SELECT rp_cust_of(7) AS web_after_pin;
SELECT softmig.switch_reads('rp', 'front', 'new', 'regress: switch back');
EXECUTE rp_by_key(7);
SELECT rp_cust_of(7) AS web_switched_back;
DEALLOCATE rp_by_key;
DROP FUNCTION rp_cust_as_support(int), rp_cust_of(int);

-- With routing at plan time off, both branches stay in the plan behind
-- one-time filters; only the caller's branch executes.
SET softmig.route_at_plan_time = off;
EXPLAIN (COSTS OFF) SELECT * FROM rp_lv WHERE id = 7;
SELECT * FROM t.explain_analyze('SELECT * FROM rp_lv WHERE id = 7');
PREPARE rp_by_key(int) AS SELECT id, cust, cents FROM rp_lv WHERE id = $1;
EXPLAIN (COSTS OFF) EXECUTE rp_by_key(7);
EXECUTE rp_by_key(7);
SET application_name = 'support';
EXECUTE rp_by_key(7);
DEALLOCATE rp_by_key;
RESET softmig.route_at_plan_time;
RESET plan_cache_mode;
RESET enable_seqscan;
RESET enable_bitmapscan;
RESET application_name;

-- security_invoker: reading the view needs rights on both tables
GRANT SELECT ON rp_lv TO regress_rp_stranger;
SET ROLE regress_rp_stranger;
SELECT * FROM t.err($$SELECT * FROM rp_lv WHERE id = 7$$);
RESET ROLE;
GRANT SELECT ON rp_legacy, rp_target TO regress_rp_stranger;
SET ROLE regress_rp_stranger;
SELECT id, cust FROM rp_lv WHERE id = 7;
RESET ROLE;
REVOKE ALL ON rp_lv, rp_legacy, rp_target FROM regress_rp_stranger;

-- Routed at plan time, the plan does not read the other table: its privilege
-- check is made when the statement is planned, with the same error.  Still
-- required with a right on the routed table alone, for a kept plan made by
-- another role (planned again for this one), and after a REVOKE (which
-- invalidates the kept plan).
SELECT softmig.read_source('rp') AS reads;
GRANT SELECT ON rp_lv, rp_legacy TO regress_rp_stranger;
SET ROLE regress_rp_stranger;
SELECT * FROM t.err($$SELECT * FROM rp_lv WHERE id = 7$$);
RESET ROLE;
SET plan_cache_mode = force_generic_plan;
PREPARE rp_kept(int) AS SELECT id, cust FROM rp_lv WHERE id = $1;
EXECUTE rp_kept(7);
SET ROLE regress_rp_stranger;
SELECT * FROM t.err($$EXECUTE rp_kept(7)$$);
RESET ROLE;
GRANT SELECT ON rp_target TO regress_rp_stranger;
SET ROLE regress_rp_stranger;
EXECUTE rp_kept(7);
EXECUTE rp_kept(7);
RESET ROLE;
REVOKE SELECT ON rp_target FROM regress_rp_stranger;
SET ROLE regress_rp_stranger;
SELECT * FROM t.err($$EXECUTE rp_kept(7)$$);
RESET ROLE;
DEALLOCATE rp_kept;
RESET plan_cache_mode;
REVOKE ALL ON rp_lv, rp_legacy, rp_target FROM regress_rp_stranger;

-- put the planted row back
BEGIN;
SET LOCAL softmig.override = 'undo the planted difference';
UPDATE rp_target SET customer = 'CUST7', amount = 7.00, vip = NULL WHERE acc_id = 7;
COMMIT;

------------------------------------------------------------------ new_write .. cutover
SELECT softmig.advance('rp');
SELECT * FROM rp_sources();
-- group "default" (nightly and every reader nobody registered) moves too
SELECT softmig.switch_reads('rp', 'default', 'new', 'batch jobs');
SELECT * FROM rp_sources();
SELECT softmig.status('rp')->>'read_default' AS read_default;

-- new_read: everything not pinned back reads new
SELECT softmig.advance('rp');
SELECT * FROM rp_sources();
-- rollback and forward again: sources follow the state
SELECT softmig.rollback('rp', 'practise');
SELECT * FROM rp_sources();
SELECT softmig.advance('rp');

-- switching back to legacy follows the rollback envelope: allowed while open ...
SELECT softmig.switch_reads('rp', 'audit', 'legacy', 'auditors want the monolith');
SELECT * FROM rp_sources();
-- ... refused once it closed
SELECT softmig.close_envelope('rp', 'read-path test');
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'front', 'legacy')$$);
SELECT softmig.switch_reads('rp', 'audit', 'new', 'auditors moved');
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'audit', 'legacy')$$);

-- the cutover guard: refused while a registered reader reads legacy
SELECT * FROM t.err($$SELECT softmig.advance('rp')$$);
SELECT softmig.switch_reads('rp', 'support', 'new', 'support moves last');
SELECT softmig.advance('rp');
SELECT * FROM rp_sources();
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'support', 'legacy')$$);
SELECT * FROM t.err($$SELECT softmig.switch_reads('rp', 'support', 'new')$$);

-- every switch is in the history
SELECT action, from_state, to_state, reason, detail, actor = current_user AS by_me
  FROM softmig.history('rp') WHERE action IN ('switch_reads', 'reset_reads') ORDER BY at;

-- a migration with routed views cannot be dropped
SELECT * FROM t.err($$SELECT softmig.drop_migration('rp')$$);
DROP VIEW rp_tv;
SELECT * FROM t.err($$SELECT softmig.drop_migration('rp')$$);
DROP VIEW rp_lv;
SELECT softmig.drop_migration('rp');
SELECT count(*) AS registry, (SELECT count(*) FROM softmig.read_switches) AS switches,
       (SELECT count(*) FROM softmig.read_views) AS views FROM softmig.reader_registry;

-- forced cutover past the guard is recorded
CREATE TABLE rp2_legacy (id int PRIMARY KEY, v text);
CREATE TABLE rp2_target (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('rp2', 'rp2_legacy', 'rp2_target');
SELECT softmig.register_reader('rp2', 'web', 'latency', 'front');
SELECT softmig.advance('rp2');
CALL softmig.backfill('rp2');
SELECT softmig.switch_reads('rp2', 'front', 'legacy', 'pinned');
SELECT softmig.advance('rp2');
SELECT softmig.advance('rp2');
SELECT * FROM t.err($$SELECT softmig.advance('rp2')$$);
SET client_min_messages = warning;    -- the default window asks discovery, which may be off
SELECT softmig.advance('rp2', reason => 'web reads legacy on purpose', force => true);
RESET client_min_messages;
SELECT action, to_state, reason, detail FROM softmig.history('rp2') WHERE action = 'advance' ORDER BY at DESC LIMIT 1;
SELECT softmig.read_source('rp2', 'web');
SELECT softmig.drop_migration('rp2');
DROP TABLE rp2_legacy, rp2_target;

DROP FUNCTION rp_sources();
DROP TABLE rp_legacy, rp_target;
DROP ROLE regress_rp_stranger;
RESET softmig.discovery;
