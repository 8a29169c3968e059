-- Per-field authority, the merge function and snapshot hydration
\pset null '(null)'

------------------------------------------------------------------ the merge rule
-- a field takes the incoming value iff the incoming side owns it and it is not fresh
SELECT * FROM softmig.merge('{"a": 1, "b": 2, "c": 3}', '{"a": 10, "b": 20, "d": 40}', 'new',
                            '{"a": "new", "b": "legacy"}', 'new', '{}');
SELECT * FROM softmig.merge('{"a": 1, "b": 2}', '{"a": 10, "b": 20}', 'new', '{}', 'new', '{b}');
SELECT * FROM softmig.merge('{"a": 1, "b": 2}', '{"a": 10, "b": 20}', 'legacy', '{}', 'new', '{}');
SELECT * FROM softmig.merge(NULL, '{"a": 10, "b": 20}', 'new', '{}', 'new', '{a}');   -- nothing live to protect
SELECT * FROM softmig.merge('{"a": {"x": [1, 2]}}', '{"a": {"y": null}}', 'new');        -- default owner legacy
SELECT * FROM softmig.merge('{"a": {"x": [1, 2]}}', '{"a": {"y": null}}', 'new', '{}', 'new');
SELECT * FROM t.err($$SELECT * FROM softmig.merge('[1]', '{}', 'new')$$);
SELECT * FROM t.err($$SELECT * FROM softmig.merge('{}', '{"a": 1}', 'new', '{"a": "both"}')$$);
SELECT * FROM t.err($$SELECT * FROM softmig.merge('{}', NULL, 'new')$$);

------------------------------------------------------------------ per-field authority
CREATE TABLE pf_l (id int PRIMARY KEY, email text, tier text, score int);
CREATE TABLE pf_t (id int PRIMARY KEY, email text, tier_code text, score int, badge text);
INSERT INTO pf_l VALUES (1, 'a@x', 'gold', 1), (2, 'b@x', 'silver', 2);
SELECT softmig.create_migration('pf', 'pf_l', 'pf_t',
    forward => '{"tier_code": "upper(tier)", "score": "score * 10"}',
    backward => '{"tier": "lower(tier_code)", "score": "score / 10"}');
SELECT softmig.set_field_authority('pf', 'tier_code', 'new');       -- allowed in legacy too
SELECT softmig.set_field_authority('pf', 'tier_code', 'legacy');
SELECT softmig.advance('pf');
CALL softmig.backfill('pf');
-- bad requests
SELECT * FROM t.err($$SELECT softmig.set_field_authority('pf', 'nope', 'new')$$);
SELECT * FROM t.err($$SELECT softmig.set_field_authority('pf', 'badge', 'new')$$);   -- not mapped
SELECT * FROM t.err($$SELECT softmig.set_field_authority('pf', 'id', 'new')$$);
SELECT * FROM t.err($$SELECT softmig.set_field_authority('pf', 'email', 'legacy')$$);
SELECT * FROM t.err($$SELECT softmig.set_field_authority('pf', NULL, 'new')$$);
SELECT * FROM t.err($$SELECT softmig.set_field_authority('nope', 'email', 'new')$$);
-- hand tier_code to the target
SELECT softmig.set_field_authority('pf', 'tier_code', 'new');
SELECT * FROM t.err($$SELECT softmig.set_field_authority('pf', 'tier_code', 'new')$$);
SELECT field, side, legacy_columns FROM softmig.field_authority;
-- the target changes what it owns, and it flows to legacy in the same statement
UPDATE pf_t SET tier_code = 'PLATINUM' WHERE id = 1;
SELECT * FROM pf_l ORDER BY id;
-- the target may not change what legacy owns; legacy may not change what the target owns
SELECT * FROM t.err($$UPDATE pf_t SET email = 'no@x' WHERE id = 1$$);
SELECT * FROM t.err($$UPDATE pf_t SET tier_code = 'X', score = 1 WHERE id = 1$$);
SELECT * FROM t.err($$UPDATE pf_l SET tier = 'bronze' WHERE id = 2$$);
SELECT * FROM t.err($$INSERT INTO pf_t (id, email) VALUES (9, 'x')$$);
SELECT * FROM t.err($$DELETE FROM pf_t WHERE id = 1$$);
-- target-only columns are the target's too
UPDATE pf_t SET badge = 'vip' WHERE id = 2;
-- legacy's own writes flow forward and leave the target's field alone
UPDATE pf_l SET email = 'new@x', score = 5 WHERE id = 1;
INSERT INTO pf_l VALUES (3, 'c@x', 'gold', 3);              -- a new entity starts with legacy's value
SELECT * FROM pf_t ORDER BY id;
SELECT * FROM pf_l ORDER BY id;
-- a big legacy statement (over 2000 rows, the set-based path) also leaves the
-- target-owned field alone: row 1 keeps PLATINUM, not upper(tier) = GOLD
INSERT INTO pf_l SELECT g, 'e' || g, 'tin', 0 FROM generate_series(100, 2599) g;
UPDATE pf_l SET email = email WHERE id = 1 OR id >= 100;
SELECT id, tier_code FROM pf_t WHERE id IN (1, 100) ORDER BY id;
DELETE FROM pf_l WHERE id >= 100;
SELECT count(*) AS big_rows_left FROM pf_t WHERE id >= 100;
SELECT action, detail FROM softmig.history('pf') WHERE action = 'set_field_authority';
-- back to legacy: the target's updates are refused again
SELECT softmig.set_field_authority('pf', 'tier_code', 'legacy');
SELECT * FROM t.err($$UPDATE pf_t SET tier_code = 'X' WHERE id = 1$$);
UPDATE pf_l SET tier = 'bronze' WHERE id = 2;
SELECT id, tier_code FROM pf_t ORDER BY id;
-- fields whose backward mapping mixes owners cannot be handed over alone
CREATE TABLE mx_l (id int PRIMARY KEY, full_name text);
CREATE TABLE mx_t (id int PRIMARY KEY, first text, last text);
SELECT softmig.create_migration('mx', 'mx_l', 'mx_t',
    forward => '{"first": "split_part(full_name, '' '', 1)", "last": "split_part(full_name, '' '', 2)"}',
    backward => '{"full_name": "first || '' '' || last"}');
SELECT * FROM t.err($$SELECT softmig.set_field_authority('mx', 'first', 'new')$$);
SELECT softmig.drop_migration('mx');
DROP TABLE mx_l, mx_t;

------------------------------------------------------------------ hydrate
SELECT softmig.set_field_authority('pf', 'tier_code', 'new');
SELECT pg_current_snapshot() AS snap \gset
-- live writes the snapshot does not see
UPDATE pf_l SET email = 'live@x' WHERE id = 1;           -- a legacy field
UPDATE pf_t SET tier_code = 'DIAMOND' WHERE id = 2;      -- a target-owned field
DELETE FROM pf_l WHERE id = 3;                           -- an entity
-- bad input changes nothing
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '{"id": 1}', %L)$$, :'snap'));
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[1]', %L)$$, :'snap'));
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[{"id": 1, "bogus": 1}]', %L)$$, :'snap'));
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[{"email": "x"}]', %L)$$, :'snap'));
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[{"id": "one"}]', %L)$$, :'snap'));
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[{"id": 1, "score": "lots"}]', %L)$$, :'snap'));
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[{"id": 1}, {"id": 1}]', %L)$$, :'snap'));
SELECT * FROM t.err($$SELECT softmig.hydrate('pf', '[{"id": 1}]', NULL)$$);
SELECT * FROM pf_t ORDER BY id;
-- rows computed offline from the snapshot
SELECT softmig.hydrate('pf', '[
    {"id": 1, "email": "offline@x", "tier_code": "SILVER", "badge": "b1"},
    {"id": 2, "tier_code": "BRONZE", "badge": "b2"},
    {"id": 3, "email": "c@x", "badge": "b3"},
    {"id": 77, "email": "never@x", "badge": "b77"}]', :'snap') AS rows_changed;
-- 1: email is legacy's (live value kept), tier_code taken and carried to legacy, badge taken
-- 2: tier_code written after the snapshot (kept), badge taken
-- 3: deleted after the snapshot, stays deleted; 77: never existed, not created
SELECT * FROM pf_t ORDER BY id;
SELECT * FROM pf_l ORDER BY id;
-- the same call again changes nothing
SELECT softmig.hydrate('pf', '[{"id": 2, "badge": "b2"}]', :'snap') AS rows_changed;
SELECT action, detail - 'as_of' AS detail FROM softmig.history('pf') WHERE action = 'hydrate';
-- state guard
SELECT softmig.rollback('pf');
SELECT * FROM t.err(format($$SELECT softmig.hydrate('pf', '[{"id": 1}]', %L)$$, :'snap'));
SELECT softmig.drop_migration('pf');
DROP TABLE pf_l, pf_t;

-- from new_write on, freshness is per row: a row written after the snapshot keeps its live fields
CREATE TABLE hw_l (id int PRIMARY KEY, v text);
CREATE TABLE hw_t (id int PRIMARY KEY, v text, extra text);
INSERT INTO hw_l VALUES (1, 'a'), (2, 'b');
SELECT softmig.create_migration('hw', 'hw_l', 'hw_t');
SELECT softmig.advance('hw');
CALL softmig.backfill('hw');
SELECT softmig.advance('hw');
SELECT pg_current_snapshot() AS snap2 \gset
UPDATE hw_t SET v = 'live' WHERE id = 1;
SELECT softmig.hydrate('hw', '[{"id": 1, "v": "old", "extra": "e1"}, {"id": 2, "v": "B", "extra": "e2"}]', :'snap2') AS rows_changed;
SELECT * FROM hw_t ORDER BY id;
SELECT * FROM hw_l ORDER BY id;              -- projected like any target write
SELECT softmig.rollback('hw');
SELECT softmig.rollback('hw');
SELECT softmig.drop_migration('hw');
DROP TABLE hw_l, hw_t;
