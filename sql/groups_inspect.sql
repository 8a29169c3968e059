-- inspect_group: one entity of a group, every member, both sides (doc/shapes.md)
\pset null '(null)'
CREATE SCHEMA gi;
CREATE SCHEMA gi_v2;
CREATE TABLE gi.orders (id int PRIMARY KEY, customer text NOT NULL);
CREATE TABLE gi.order_items (id int PRIMARY KEY,
    order_id int NOT NULL REFERENCES gi.orders ON DELETE CASCADE, sku text NOT NULL);
CREATE TABLE gi.item_tags (id int PRIMARY KEY,
    item_id int NOT NULL REFERENCES gi.order_items ON DELETE CASCADE, tag text);
CREATE TABLE gi.notes (id int PRIMARY KEY, body text);
CREATE TABLE gi_v2.orders (order_no int PRIMARY KEY, customer text NOT NULL);
CREATE TABLE gi_v2.order_items (id int PRIMARY KEY, order_no int NOT NULL, sku text NOT NULL);
CREATE TABLE gi_v2.item_tags (id int PRIMARY KEY, item_id int NOT NULL, tag text);
CREATE TABLE gi_v2.notes (id int PRIMARY KEY, body text);
-- the target renames the parent's key: the child's target key is found
-- through the target's own foreign key, its legacy key through the mapping
SELECT softmig.create_migration('gi_orders', 'gi.orders', 'gi_v2.orders',
    forward => '{"order_no": "id"}', backward => '{"id": "order_no"}');
SELECT softmig.create_migration('gi_items', 'gi.order_items', 'gi_v2.order_items',
    forward => '{"order_no": "order_id"}', backward => '{"order_id": "order_no"}');
SELECT softmig.create_migration('gi_tags', 'gi.item_tags', 'gi_v2.item_tags');
SELECT softmig.create_migration('gi_notes', 'gi.notes', 'gi_v2.notes');
INSERT INTO gi.orders VALUES (1, 'ann'), (2, 'bob');
INSERT INTO gi.order_items VALUES (10, 1, 'apple'), (11, 1, 'pear'), (20, 2, 'fig');
INSERT INTO gi.item_tags VALUES (100, 10, 'red'), (101, 11, 'green'), (200, 20, 'blue');
INSERT INTO gi.notes VALUES (1, 'not tied to the orders by any key');
-- one line per member and row: what support reads first
CREATE FUNCTION gi.rows(g text, k jsonb)
RETURNS TABLE (member text, tied boolean, parent text, legacy_fks jsonb, target_fks jsonb,
               row_key jsonb, parity text, in_legacy boolean, in_target boolean)
LANGUAGE sql AS $$
    SELECT m->>'migration', (m->>'tied')::boolean, m->>'parent', m->'legacy_foreign_keys',
           m->'target_foreign_keys', r->'key', r->>'parity',
           (r->'flags'->>'in_legacy')::boolean, (r->'flags'->>'in_target')::boolean
      FROM jsonb_array_elements(softmig.inspect_group(g, k)->'members') WITH ORDINALITY AS x(m, i)
      LEFT JOIN LATERAL jsonb_array_elements(m->'rows') WITH ORDINALITY AS y(r, j) ON true
     ORDER BY x.i, y.j
$$;

-- the children first: the root is the member whose tables reference no
-- other member's, whatever the order of create_group
SELECT softmig.create_group('gi', '{gi_items,gi_tags,gi_orders,gi_notes}');
SELECT softmig.advance_group('gi');
CALL softmig.backfill('gi_orders');
CALL softmig.backfill('gi_items');
CALL softmig.backfill('gi_tags');
CALL softmig.backfill('gi_notes');
-- before the targets have their foreign keys, children are found through
-- legacy's alone
SELECT member, legacy_fks, target_fks, row_key, parity FROM gi.rows('gi', '{"id": 1}');
ALTER TABLE gi_v2.order_items ADD CONSTRAINT v2_items_order FOREIGN KEY (order_no)
    REFERENCES gi_v2.orders ON DELETE CASCADE;
ALTER TABLE gi_v2.item_tags ADD CONSTRAINT v2_tags_item FOREIGN KEY (item_id)
    REFERENCES gi_v2.order_items ON DELETE CASCADE;


-- mirrored, everything equal: order 1, its two items, their tags; notes
-- are in the group but tied by no key
SELECT * FROM gi.rows('gi', '{"id": 1}');
SELECT r->'root' AS root, r->'key' AS key, r->'parity' AS parity
  FROM softmig.inspect_group('gi', '{"id": 1}') r;
-- a child row as inspect shows it, the same object
SELECT (SELECT r FROM jsonb_array_elements(softmig.inspect_group('gi', '{"id": 1}')->'members') m,
                      jsonb_array_elements(m->'rows') r
         WHERE m->>'migration' = 'gi_items' AND r->'key' = '{"id": 11}')
       = softmig.inspect('gi_items', '{"id": 11}') AS same_as_inspect;
SELECT jsonb_pretty((SELECT r FROM jsonb_array_elements(softmig.inspect_group('gi', '{"id": 1}')->'members') m,
                                   jsonb_array_elements(m->'rows') r
                      WHERE m->>'migration' = 'gi_items' AND r->'key' = '{"id": 11}')
                    - 'last_writes') AS item_11;

-- both sides differ: an item only legacy holds, an item only the target
-- holds (found through the target's key), a tag that differs
BEGIN;
SET LOCAL softmig.override = 'regression test: entity rows that differ';
DELETE FROM gi_v2.item_tags WHERE item_id = 11;
DELETE FROM gi_v2.order_items WHERE id = 11;
INSERT INTO gi_v2.order_items VALUES (12, 1, 'plum');
INSERT INTO gi_v2.item_tags VALUES (120, 12, 'violet');
UPDATE gi_v2.item_tags SET tag = 'crimson' WHERE id = 100;
COMMIT;
SELECT * FROM gi.rows('gi', '{"id": 1}');
SELECT softmig.inspect_group('gi', '{"id": 1}')->'parity' AS parity;
SELECT r->'differences' AS tag_100_differences
  FROM jsonb_array_elements(softmig.inspect_group('gi', '{"id": 1}')->'members') m,
       jsonb_array_elements(m->'rows') r
 WHERE m->>'migration' = 'gi_tags' AND r->'key' = '{"id": 100}';
-- the parent only on one side: its children are found on that side only
BEGIN;
SET LOCAL softmig.override = 'regression test: a parent only legacy holds';
DELETE FROM gi_v2.orders WHERE order_no = 2;   -- cascades on the target
COMMIT;
SELECT * FROM gi.rows('gi', '{"id": 2}');

-- a key with no rows anywhere: every member, no rows
SELECT * FROM gi.rows('gi', '{"id": 99}');
SELECT softmig.inspect_group('gi', '{"id": 99}')->'parity' AS parity;

-- bad input, with inspect's own errors for the key (of the root member)
SELECT * FROM t.err($$SELECT softmig.inspect_group(NULL, '{"id": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('nope', '{"id": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('gi_orders', '{}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": 1, "sku": "x"}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('gi_orders', '{"id": 1, "sku": "x"}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"order_no": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '[1]')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": null}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": "x"}')$$);
-- a migration's name is not a group's: groups and migrations are named
-- apart, and each function looks in its own catalog
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi_orders', '{"id": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('gi', '{"id": 1}')$$);
-- a migration may have a group's name: inspect reads the migration,
-- inspect_group the group
CREATE TABLE gi.same (id int PRIMARY KEY);
CREATE TABLE gi_v2.same (id int PRIMARY KEY);
SELECT softmig.create_migration('gi', 'gi.same', 'gi_v2.same');
SELECT softmig.inspect('gi', '{"id": 1}')->>'migration' AS inspect_reads,
       softmig.inspect_group('gi', '{"id": 1}')->>'group' AS inspect_group_reads;
SELECT softmig.drop_migration('gi');

-- privileges: no more than inspect of each member would give
CREATE ROLE regress_gi_reader;
GRANT USAGE ON SCHEMA gi, gi_v2, t TO regress_gi_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA t TO regress_gi_reader;
GRANT SELECT ON gi.orders, gi_v2.orders, gi.order_items, gi.item_tags, gi_v2.item_tags,
                gi.notes, gi_v2.notes TO regress_gi_reader;
SET ROLE regress_gi_reader;
-- no SELECT on one child table: 42501 before anything is read, as inspect
-- of that member
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect('gi_items', '{"id": 10}')$$);
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": 99}')$$);
RESET ROLE;
GRANT SELECT ON gi_v2.order_items TO regress_gi_reader;
-- row-level security that would apply to the caller on a member's table
ALTER TABLE gi.item_tags ENABLE ROW LEVEL SECURITY;
SET ROLE regress_gi_reader;
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": 1}')$$);
RESET ROLE;
ALTER TABLE gi.item_tags DISABLE ROW LEVEL SECURITY;
-- with SELECT on every member's tables: the same entity as the owner sees
SET ROLE regress_gi_reader;
SELECT member, row_key, parity FROM gi.rows('gi', '{"id": 1}');
RESET ROLE;

-- new_write: the target is the authority; a child written on the target
-- is found through the target's key on both sides once projected
BEGIN;
SET LOCAL softmig.override = 'regression test: repair before new_write';
DELETE FROM gi_v2.item_tags WHERE id = 120;
DELETE FROM gi_v2.order_items WHERE id = 12;
INSERT INTO gi_v2.order_items VALUES (11, 1, 'pear');
INSERT INTO gi_v2.item_tags VALUES (101, 11, 'green');
UPDATE gi_v2.item_tags SET tag = 'red' WHERE id = 100;
INSERT INTO gi_v2.orders VALUES (2, 'bob');
INSERT INTO gi_v2.order_items VALUES (20, 2, 'fig');
INSERT INTO gi_v2.item_tags VALUES (200, 20, 'blue');
COMMIT;
SELECT softmig.advance_group('gi');
INSERT INTO gi_v2.order_items VALUES (13, 1, 'quince');
SELECT member, row_key, parity, in_legacy, in_target FROM gi.rows('gi', '{"id": 1}');
SELECT DISTINCT r->>'state' AS state, r->>'write_authority' AS write_authority
  FROM jsonb_array_elements(softmig.inspect_group('gi', '{"id": 1}')->'members') m,
       jsonb_array_elements(m->'rows') r;

SELECT softmig.rollback_group('gi', 'done');
SELECT softmig.rollback_group('gi', 'done');
SELECT softmig.drop_group('gi');
-- a dissolved group is unknown to inspect_group
SELECT * FROM t.err($$SELECT softmig.inspect_group('gi', '{"id": 1}')$$);
SELECT softmig.drop_migration(n) FROM unnest('{gi_orders,gi_items,gi_tags,gi_notes}'::text[]) n;
DROP SCHEMA gi, gi_v2 CASCADE;
REVOKE ALL ON SCHEMA t FROM regress_gi_reader;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA t FROM regress_gi_reader;
DROP ROLE regress_gi_reader;
