-- Rollback envelope, new-only state, quarantine, shadow writes
\pset null '(null)'
CREATE TABLE ev_l (id int PRIMARY KEY, plan text NOT NULL, amt int CHECK (amt >= 0));
CREATE TABLE ev_t (id int PRIMARY KEY, plan text NOT NULL, amt int, extra_plans text[]);
INSERT INTO ev_l VALUES (1, 'basic', 10), (2, 'pro', 20), (3, 'basic', 30);

-- option validation
SELECT * FROM t.err($$SELECT softmig.create_migration('ev', 'ev_l', 'ev_t', options => '{"on_new_only": "maybe"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('ev', 'ev_l', 'ev_t', options => '{"representable": true}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('ev', 'ev_l', 'ev_t', options => '{"representable": "plan, amt"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('ev', 'ev_l', 'ev_t', options => '{"representable": "amt + 1"}')$$);
SELECT softmig.create_migration('ev', 'ev_l', 'ev_t', new_only => '{extra_plans}',
    options => '{"representable": "plan <> ''multi''"}');
SELECT softmig.envelope('ev');
SELECT softmig.advance('ev');
CALL softmig.backfill('ev');
SELECT softmig.advance('ev');

-- inside the envelope rollback works
UPDATE ev_t SET amt = 11 WHERE id = 1;
SELECT softmig.rollback('ev', 'inside the envelope');
SELECT softmig.advance('ev');

-- a new_only column set: the row is projected as far as legacy can hold it, the envelope closes
UPDATE ev_t SET extra_plans = '{addon}', amt = 21 WHERE id = 2;
SELECT * FROM ev_l ORDER BY id;
SELECT e - 'closed_at' AS envelope FROM softmig.envelope('ev') e;
SELECT (softmig.status('ev')->>'envelope_open')::boolean AS envelope_open;
SELECT action, reason, detail FROM softmig.history('ev') WHERE action = 'envelope_close';
-- rollback across the authority switch is refused, with the forward-fix hint
SELECT * FROM t.err($$SELECT softmig.rollback('ev')$$);
SELECT softmig.state('ev');
-- the representable predicate false counts too
UPDATE ev_t SET plan = 'multi' WHERE id = 3;
SELECT (softmig.envelope('ev')->>'new_only_count')::int AS new_only_count;
-- a row legacy refuses (its CHECK constraint): not projected, the others are
INSERT INTO ev_t VALUES (4, 'basic', -5, NULL), (5, 'basic', 5, NULL);
SELECT * FROM ev_l WHERE id >= 4 ORDER BY id;
SELECT (softmig.envelope('ev')->>'new_only_count')::int AS new_only_count;
-- closing an already closed envelope by hand
SELECT * FROM t.err($$SELECT softmig.close_envelope('ev', 'again')$$);

-- new_read -> new_write is across the envelope too; cutover never rolls back
SELECT softmig.advance('ev');
SELECT * FROM t.err($$SELECT softmig.rollback('ev')$$);

------------------------------------------------------------------ quarantine
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '[4]', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '{"nope": 4}', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '{}', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '{"id": "four"}', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '{"id": 4}', '')$$);
SELECT softmig.quarantine('ev', '{"id": 4}', 'legacy cannot hold a negative amount');
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '{"id": "4"}', 'twice')$$);
SELECT * FROM t.err($$UPDATE ev_t SET amt = 1 WHERE id = 4$$);
SELECT * FROM t.err($$DELETE FROM ev_t WHERE id IN (4, 5)$$);
UPDATE ev_t SET amt = 55 WHERE id = 5;              -- other entities are not affected
BEGIN;
SET LOCAL softmig.override = 'even by hand';
SELECT * FROM t.err($$UPDATE ev_l SET amt = 1 WHERE id = 4$$);   -- legacy never got row 4: nothing changes
ROLLBACK;
SELECT softmig.quarantine('ev', '{"id": 2}', 'second entity');
BEGIN;
SET LOCAL softmig.override = 'even by hand';
SELECT * FROM t.err($$UPDATE ev_l SET amt = 1 WHERE id = 2$$);   -- refused on the projection side too
ROLLBACK;
SELECT softmig.release('ev', '{"id": 2}');
SELECT softmig.status('ev')->'quarantined' AS quarantined;
SELECT key, reason, actor FROM softmig.quarantine;
-- fix forward on the target, release: legacy is re-synced from the authority
SELECT * FROM t.err($$SELECT softmig.release('ev', '{"id": 5}')$$);
BEGIN;
SET LOCAL softmig.override = 'fix forward';
SELECT * FROM t.err($$UPDATE ev_t SET amt = 4 WHERE id = 4$$);   -- still refused: release first
ROLLBACK;
SELECT softmig.release('ev', '{"id": 4}');
UPDATE ev_t SET amt = 4 WHERE id = 4;
SELECT * FROM ev_l WHERE id IN (4, 5) ORDER BY id;
SELECT action, reason, detail FROM softmig.history('ev') WHERE action IN ('quarantine', 'release');

------------------------------------------------------------------ shadow writes
SELECT * FROM t.err($$SELECT softmig.shadow_disable('ev', NULL)$$);
SELECT softmig.shadow_disable('ev', 'projection is broken');
SELECT * FROM t.err($$SELECT softmig.shadow_disable('ev', 'again')$$);
SELECT softmig.status('ev')->'shadow'->'disabled' AS shadow_disabled;
UPDATE ev_t SET amt = 99 WHERE id = 1;
INSERT INTO ev_t VALUES (6, 'basic', 6, NULL);
DELETE FROM ev_t WHERE id = 5;
SELECT * FROM ev_l ORDER BY id;                          -- untouched meanwhile
SELECT * FROM t.err($$UPDATE ev_l SET amt = 0$$);        -- still not writable
SELECT softmig.shadow_enable('ev');
SELECT * FROM t.err($$SELECT softmig.shadow_enable('ev')$$);
SELECT * FROM ev_l ORDER BY id;                          -- caught up with the target
SELECT action, detail FROM softmig.history('ev') WHERE action LIKE 'shadow%';

-- in mirrored, enabling shadow writes again asks for a new backfill
CREATE TABLE sh_l (id int PRIMARY KEY, v text);
CREATE TABLE sh_t (id int PRIMARY KEY, v text);
INSERT INTO sh_l VALUES (1, 'a'), (2, 'b');
SELECT softmig.create_migration('sh', 'sh_l', 'sh_t');
SELECT * FROM t.err($$SELECT softmig.shadow_disable('sh', 'legacy state')$$);
SELECT softmig.advance('sh');
CALL softmig.backfill('sh');
SELECT softmig.shadow_disable('sh', 'target is being rebuilt');
UPDATE sh_l SET v = 'changed' WHERE id = 1;
INSERT INTO sh_l VALUES (3, 'c');
DELETE FROM sh_l WHERE id = 2;
SELECT * FROM sh_t ORDER BY id;
SELECT softmig.shadow_enable('sh');
SELECT softmig.status('sh')->'backfill_done' AS backfill_done;
SELECT * FROM t.err($$SELECT softmig.advance('sh')$$);
CALL softmig.backfill('sh');
SELECT * FROM sh_t ORDER BY id;
-- mirrored -> legacy is always allowed, whatever the envelope
SELECT softmig.rollback('sh');

-- only owners
CREATE ROLE sm_env_other;
SET ROLE sm_env_other;
SELECT * FROM t.err($$SELECT softmig.quarantine('ev', '{"id": 1}', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.release('ev', '{"id": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.close_envelope('ev', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.shadow_disable('ev', 'x')$$);
SELECT * FROM t.err($$SELECT softmig.shadow_enable('ev')$$);
SELECT softmig.envelope('ev')->'open' AS anyone_can_read;
RESET ROLE;
DROP ROLE sm_env_other;

SELECT softmig.drop_migration('sh');
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT softmig.advance('ev');
RESET client_min_messages;
SELECT softmig.drop_migration('ev');
DROP TABLE ev_l, ev_t, sh_l, sh_t;

------------------------------------------------------------------ reject mode: an approval gate
CREATE TABLE rj_l (id int PRIMARY KEY, v text);
CREATE TABLE rj_t (id int PRIMARY KEY, v text, extra text);
INSERT INTO rj_l VALUES (1, 'a');
SELECT softmig.create_migration('rj', 'rj_l', 'rj_t', new_only => '{extra}', options => '{"on_new_only": "reject"}');
SELECT softmig.advance('rj');
CALL softmig.backfill('rj');
SELECT softmig.advance('rj');
SELECT * FROM t.err($$UPDATE rj_t SET extra = 'x' WHERE id = 1$$);
SELECT * FROM t.err($$INSERT INTO rj_t VALUES (2, 'b', 'x')$$);
SELECT * FROM rj_t ORDER BY id;
SELECT softmig.envelope('rj')->'open' AS still_open;
INSERT INTO rj_t VALUES (2, 'b', NULL);                     -- representable writes go on
SELECT * FROM t.err($$SELECT softmig.close_envelope('rj', NULL)$$);
SELECT softmig.close_envelope('rj', 'product approved linked accounts');
UPDATE rj_t SET extra = 'x' WHERE id = 1;
SELECT * FROM rj_l ORDER BY id;
SELECT e - 'closed_at' AS envelope FROM softmig.envelope('rj') e;
SELECT * FROM t.err($$SELECT softmig.rollback('rj')$$);
SELECT softmig.advance('rj');
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT softmig.advance('rj');
RESET client_min_messages;
SELECT softmig.drop_migration('rj');
DROP TABLE rj_l, rj_t;
