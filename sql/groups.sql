-- Groups: migrations that change state together (doc/shapes.md)
\pset null '(null)'
CREATE SCHEMA gr;
CREATE SCHEMA gr_v2;
CREATE TABLE gr.orders (id int PRIMARY KEY, customer text NOT NULL);
CREATE TABLE gr.order_items (id int PRIMARY KEY,
    order_id int NOT NULL REFERENCES gr.orders ON DELETE CASCADE, sku text NOT NULL);
CREATE TABLE gr_v2.orders (id int PRIMARY KEY, customer text NOT NULL, channel text);
CREATE TABLE gr_v2.order_items (id int PRIMARY KEY, order_id int NOT NULL, sku text NOT NULL);
CREATE TABLE gr.notes (id int PRIMARY KEY, body text);
CREATE TABLE gr_v2.notes (id int PRIMARY KEY, body text);
SELECT softmig.create_migration('gr_orders', 'gr.orders', 'gr_v2.orders', new_only => '{channel}');
SELECT softmig.create_migration('gr_items', 'gr.order_items', 'gr_v2.order_items');
SELECT softmig.create_migration('gr_notes', 'gr.notes', 'gr_v2.notes');
INSERT INTO gr.orders VALUES (1, 'ann'), (2, 'bob');
INSERT INTO gr.order_items VALUES (10, 1, 'apple'), (11, 1, 'pear'), (20, 2, 'fig');

-- bad input to create_group, each with its error; nothing is left behind
SELECT * FROM t.err($$SELECT softmig.create_group(NULL, '{gr_orders,gr_items}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders,NULL}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group(' ', '{gr_orders,gr_items}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders,gr_items,gr_orders}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders,nope}')$$);
SELECT softmig.advance('gr_notes');
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders,gr_items,gr_notes}')$$);
SELECT softmig.rollback('gr_notes');
-- a foreign key between members checked at commit cannot be projected
ALTER TABLE gr.order_items ALTER CONSTRAINT order_items_order_id_fkey DEFERRABLE INITIALLY DEFERRED;
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders,gr_items}')$$);
ALTER TABLE gr.order_items ALTER CONSTRAINT order_items_order_id_fkey NOT DEFERRABLE;
SELECT count(*) AS groups FROM softmig.groups;

-- only an owner of every member's tables may create, move or drop a group
CREATE ROLE regress_gr_partial;
GRANT USAGE ON SCHEMA gr, gr_v2 TO regress_gr_partial;
ALTER TABLE gr.orders OWNER TO regress_gr_partial;
ALTER TABLE gr_v2.orders OWNER TO regress_gr_partial;
SET ROLE regress_gr_partial;
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_orders,gr_items}')$$);
RESET ROLE;

SELECT softmig.create_group('shop', '{gr_orders,gr_items}');
SELECT g.name, m.name AS member, gm.ordinal
  FROM softmig.groups g JOIN softmig.group_members gm ON gm.group_id = g.id
  JOIN softmig.migrations m ON m.id = gm.migration_id ORDER BY gm.ordinal;
SELECT * FROM t.err($$SELECT softmig.create_group('shop', '{gr_notes,gr_items}')$$);
SELECT * FROM t.err($$SELECT softmig.create_group('shop2', '{gr_notes,gr_items}')$$);
SET ROLE regress_gr_partial;
SELECT * FROM t.err($$SELECT softmig.advance_group('shop')$$);
SELECT * FROM t.err($$SELECT softmig.rollback_group('shop')$$);
SELECT * FROM t.err($$SELECT softmig.drop_group('shop')$$);
RESET ROLE;
ALTER TABLE gr.orders OWNER TO CURRENT_USER;
ALTER TABLE gr_v2.orders OWNER TO CURRENT_USER;

-- unknown group, null name
SELECT * FROM t.err($$SELECT softmig.advance_group('nope')$$);
SELECT * FROM t.err($$SELECT softmig.rollback_group('nope')$$);
SELECT * FROM t.err($$SELECT softmig.drop_group('nope')$$);
SELECT * FROM t.err($$SELECT softmig.advance_group(NULL)$$);

-- a member alone neither advances, rolls back nor is dropped
SELECT * FROM t.err($$SELECT softmig.advance('gr_items')$$);
SELECT * FROM t.err($$SELECT softmig.rollback('gr_orders')$$);
SELECT * FROM t.err($$SELECT softmig.drop_migration('gr_orders')$$);

-- nothing to roll back in legacy; force needs a reason; one step at a time
SELECT * FROM t.err($$SELECT softmig.rollback_group('shop')$$);
SELECT * FROM t.err($$SELECT softmig.advance_group('shop', force => true)$$);
SELECT * FROM t.err($$SELECT softmig.advance_group('shop', 'new_write')$$);
SELECT * FROM t.err($$SELECT softmig.advance_group('shop', 'legacy')$$);

-- a foreign key between the targets would refuse the mirror of a child whose
-- parent is not backfilled yet: the move to mirrored refuses it
ALTER TABLE gr_v2.order_items ADD CONSTRAINT v2_items_order FOREIGN KEY (order_id) REFERENCES gr_v2.orders;
SELECT * FROM t.err($$SELECT softmig.advance_group('shop')$$);
ALTER TABLE gr_v2.order_items DROP CONSTRAINT v2_items_order;

-- legacy -> mirrored: both members, one transaction
SELECT softmig.advance_group('shop', reason => 'go');
SELECT name, state FROM softmig.migrations WHERE name LIKE 'gr_%' ORDER BY name;
SELECT s->>'name' AS name, s->>'state' AS state, jsonb_pretty(s->'members') AS members
  FROM softmig.group_status('shop') s;
SELECT * FROM t.err($$SELECT softmig.group_status('nope')$$);
SELECT m.name, h.action, h.from_state, h.to_state, h.reason, h.detail
  FROM softmig.history_log h JOIN softmig.migrations m ON m.id = h.migration_id
 WHERE m.name IN ('gr_orders', 'gr_items') AND h.action <> 'create' ORDER BY h.id;

-- parent before child, child before parent on delete (the application's
-- foreign key orders them): both are mirrored statement by statement
BEGIN;
INSERT INTO gr.orders VALUES (3, 'cy');
INSERT INTO gr.order_items VALUES (30, 3, 'kiwi');
COMMIT;
DELETE FROM gr.orders WHERE id = 3;     -- cascades to its item on legacy, and so on the target
SELECT * FROM gr_v2.order_items ORDER BY id;

-- mirrored -> new_write: every member's guard first; one member not
-- backfilled refuses the group and no member moves
CALL softmig.backfill('gr_orders');
SELECT * FROM t.err($$SELECT softmig.advance_group('shop')$$);
SELECT name, state FROM softmig.migrations WHERE name LIKE 'gr_%' ORDER BY name;
CALL softmig.backfill('gr_items');
-- now the targets' foreign key can be added: every parent is there
ALTER TABLE gr_v2.order_items ADD CONSTRAINT v2_items_order FOREIGN KEY (order_id)
    REFERENCES gr_v2.orders ON DELETE CASCADE NOT VALID;
ALTER TABLE gr_v2.order_items VALIDATE CONSTRAINT v2_items_order;
-- a parent deleted on legacy: legacy cascades to its items (mirrored), the
-- target's cascade runs inside the projection of the parent (let through)
INSERT INTO gr.orders VALUES (5, 'eve');
INSERT INTO gr.order_items VALUES (50, 5, 'plum');
DELETE FROM gr.orders WHERE id = 5;
SELECT (SELECT count(*) FROM gr_v2.orders WHERE id = 5) AS v2_orders,
       (SELECT count(*) FROM gr_v2.order_items WHERE order_id = 5) AS v2_items;
SELECT softmig.advance_group('shop');
SELECT name, state FROM softmig.migrations WHERE name LIKE 'gr_%' ORDER BY name;
SELECT * FROM t.err($$INSERT INTO gr.orders VALUES (4, 'dee')$$);

-- new_write: the targets are written, legacy is the projection
BEGIN;
INSERT INTO gr_v2.orders VALUES (4, 'dee');
INSERT INTO gr_v2.order_items VALUES (40, 4, 'lime');
COMMIT;
-- a parent deleted on the target: the target cascades (projected), and so
-- does legacy's foreign key, inside the projection
DELETE FROM gr_v2.orders WHERE id = 1;
SELECT * FROM gr.orders ORDER BY id;
SELECT * FROM gr.order_items ORDER BY id;
SELECT * FROM softmig.parity('gr_orders');
SELECT * FROM softmig.parity('gr_items');
-- the projection's foreign key actions are let through, not a direct write
SELECT * FROM t.err($$DELETE FROM gr.order_items WHERE id = 20$$);

-- a key made INITIALLY DEFERRED after create_group: the group no longer moves
-- to a state where softmig projects
ALTER TABLE gr_v2.order_items ALTER CONSTRAINT v2_items_order INITIALLY DEFERRED;
SELECT * FROM t.err($$SELECT softmig.rollback_group('shop', 'back')$$);
SELECT * FROM t.err($$SELECT softmig.advance_group('shop')$$);
ALTER TABLE gr_v2.order_items ALTER CONSTRAINT v2_items_order NOT DEFERRABLE;

-- rollback_group with both envelopes open, and forward again
SELECT softmig.rollback_group('shop', 'back');
SELECT name, state FROM softmig.migrations WHERE name LIKE 'gr_%' ORDER BY name;
-- in mirrored a child before its parent (the application defers legacy's
-- key): the target's key refuses the mirrored child; it waits for its
-- parent's mirror and is then mirrored
ALTER TABLE gr.order_items ALTER CONSTRAINT order_items_order_id_fkey DEFERRABLE;
BEGIN;
SET CONSTRAINTS gr.order_items_order_id_fkey DEFERRED;
INSERT INTO gr.order_items VALUES (70, 70, 'plum');
SELECT count(*) AS target_item_before_parent FROM gr_v2.order_items WHERE id = 70;
INSERT INTO gr.orders VALUES (70, 'hal');
SELECT count(*) AS target_item_after_parent FROM gr_v2.order_items WHERE id = 70;
COMMIT;
-- the parent never comes: legacy's own key refuses the commit
BEGIN;
SET CONSTRAINTS gr.order_items_order_id_fkey DEFERRED;
INSERT INTO gr.order_items VALUES (71, 71, 'pear');
COMMIT;
-- a parent that legacy holds and the target does not (removed by hand):
-- the child cannot be mirrored, and the commit fails rather than leave the
-- target without it
INSERT INTO gr.orders VALUES (72, 'ivy');
BEGIN;
SET LOCAL softmig.override = 'regression test: a parent missing on the target';
DELETE FROM gr_v2.orders WHERE id = 72;
COMMIT;
INSERT INTO gr.order_items VALUES (73, 72, 'sloe');
SELECT (SELECT count(*) FROM gr.order_items WHERE id = 73) AS legacy_item,
       (SELECT count(*) FROM gr_v2.order_items WHERE id = 73) AS target_item;
UPDATE gr.orders SET customer = customer WHERE id = 72;   -- mirrored again
ALTER TABLE gr.order_items ALTER CONSTRAINT order_items_order_id_fkey NOT DEFERRABLE;
SELECT kind, key FROM softmig.parity('gr_orders');
SELECT kind, key FROM softmig.parity('gr_items');
SELECT softmig.advance_group('shop');

-- rollback_group: a closed envelope on one member refuses the whole group
UPDATE gr_v2.orders SET channel = 'web' WHERE id = 2;
SELECT * FROM t.err($$SELECT softmig.rollback_group('shop', 'back')$$);
SELECT name, state FROM softmig.migrations WHERE name LIKE 'gr_%' ORDER BY name;
UPDATE gr_v2.orders SET channel = NULL WHERE id = 2;
SELECT * FROM t.err($$SELECT softmig.rollback_group('shop', 'back')$$);

-- child before parent in new_write (the application defers the target's
-- key): legacy's key refuses the child when it is projected before its
-- parent; softmig keeps it pending and projects it again after the parent
ALTER TABLE gr_v2.order_items ALTER CONSTRAINT v2_items_order DEFERRABLE INITIALLY IMMEDIATE;
BEGIN;
SET CONSTRAINTS gr_v2.v2_items_order DEFERRED;
INSERT INTO gr_v2.order_items VALUES (60, 6, 'yuzu');
SELECT count(*) AS legacy_item_before_parent FROM gr.order_items WHERE id = 60;
INSERT INTO gr_v2.orders VALUES (6, 'fay');
SELECT count(*) AS legacy_item_after_parent FROM gr.order_items WHERE id = 60;
COMMIT;
-- updated, deleted or rolled back before its parent came: the latest
-- version, or nothing, reaches legacy
BEGIN;
SET CONSTRAINTS gr_v2.v2_items_order DEFERRED;
INSERT INTO gr_v2.order_items VALUES (61, 7, 'kiwi'), (62, 7, 'lime');
UPDATE gr_v2.order_items SET sku = 'KIWI' WHERE id = 61;
DELETE FROM gr_v2.order_items WHERE id = 62;
SAVEPOINT s;
INSERT INTO gr_v2.order_items VALUES (63, 7, 'date');
ROLLBACK TO SAVEPOINT s;
INSERT INTO gr_v2.orders VALUES (7, 'gus');
COMMIT;
SELECT l.id, l.order_id, l.sku AS legacy_sku, t.sku AS target_sku
  FROM gr.order_items l FULL JOIN gr_v2.order_items t ON t.id = l.id
 WHERE coalesce(l.id, t.id) >= 60 ORDER BY 1;
SELECT softmig.envelope('gr_items') -> 'open' AS items_envelope_open;
SELECT kind, key FROM softmig.parity('gr_items');
-- the parent never comes: the target's own key refuses the commit
BEGIN;
SET CONSTRAINTS gr_v2.v2_items_order DEFERRED;
INSERT INTO gr_v2.order_items VALUES (64, 8, 'fig');
COMMIT;
SELECT count(*) AS item_64 FROM gr_v2.order_items WHERE id = 64;
-- without a key on the target, a child whose parent never comes is state
-- legacy cannot represent: the envelope closes at commit
ALTER TABLE gr_v2.order_items DROP CONSTRAINT v2_items_order;
INSERT INTO gr_v2.order_items VALUES (65, 9, 'orphan');
SELECT (SELECT count(*) FROM gr.order_items WHERE id = 65) AS legacy_item,
       (SELECT count(*) FROM gr_v2.order_items WHERE id = 65) AS target_item;
SELECT e.open, e.reason, e.first_key FROM softmig.envelope e
  JOIN softmig.migrations m ON m.id = e.migration_id WHERE m.name = 'gr_items';
SELECT kind, key FROM softmig.parity('gr_items');

-- forward to cutover, which never rolls back (without preloading, the
-- read-path guard notes that discovery is off)
SELECT softmig.advance_group('shop');
SET client_min_messages = warning;
SELECT softmig.advance_group('shop');
RESET client_min_messages;
SELECT * FROM t.err($$SELECT softmig.advance_group('shop')$$);
SELECT * FROM t.err($$SELECT softmig.rollback_group('shop')$$);

-- drop_group: the members stay where they are and move alone again
SELECT softmig.drop_group('shop');
SELECT count(*) AS groups, (SELECT count(*) FROM softmig.group_members) AS members FROM softmig.groups;
SELECT name, state FROM softmig.migrations WHERE name LIKE 'gr_%' ORDER BY name;
SELECT softmig.drop_migration('gr_orders');
SELECT action, detail FROM softmig.history('gr_items') WHERE action LIKE '%group%';

-- a group in mirrored rolls back to legacy as one (triggers dropped on all)
SELECT softmig.create_migration('gr_orders', 'gr.orders', 'gr_v2.orders');
SELECT softmig.create_group('pair', '{gr_notes,gr_orders}');
SELECT softmig.advance_group('pair');
SELECT softmig.rollback_group('pair', 'not yet');
SELECT name, state FROM softmig.migrations WHERE name IN ('gr_notes', 'gr_orders') ORDER BY name;
SELECT count(*) AS triggers FROM pg_trigger
 WHERE tgrelid IN ('gr.notes'::regclass, 'gr_v2.notes'::regclass, 'gr.orders'::regclass, 'gr_v2.orders'::regclass)
   AND tgname LIKE 'softmig%';

SELECT softmig.drop_group('pair');
SELECT softmig.drop_migration(n) FROM unnest('{gr_orders,gr_items,gr_notes}'::text[]) n;
DROP SCHEMA gr, gr_v2 CASCADE;
DROP OWNED BY regress_gr_partial;
DROP ROLE regress_gr_partial;
