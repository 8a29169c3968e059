-- split and merge members with the tools that act on one member's tables
-- alone: per-field authority and shape views refuse them (0A000);
-- inspect_group works (sql/split.sql, sql/merge.sql), and so do quarantine
-- and release, per entity in every member (sql/split_quarantine.sql), and
-- hydrate, per member's columns (sql/split_hydrate.sql)
\pset null '(null)'
CREATE SCHEMA stl;
CREATE SCHEMA stl_v2;
CREATE SCHEMA stl_lv;
CREATE SCHEMA stl_nv;
-- a split: users -> v2.users + v2.addresses
CREATE TABLE stl.users (id int PRIMARY KEY, email text, city text);
CREATE TABLE stl_v2.users (id int PRIMARY KEY, email text);
CREATE TABLE stl_v2.addresses (id int PRIMARY KEY, city text);
INSERT INTO stl.users VALUES (1, 'a@x', 'rome'), (2, 'b@x', NULL);
SELECT softmig.create_migration('stl_users', 'stl.users', 'stl_v2.users');
SELECT softmig.create_migration('stl_addr', 'stl.users', 'stl_v2.addresses',
    options => '{"attribute_of": "stl_users"}');
SELECT softmig.create_group('stl_u', ARRAY['stl_users', 'stl_addr']);
-- a merge: profiles + settings -> v2.accounts
CREATE TABLE stl.profiles (user_id int PRIMARY KEY, bio text);
CREATE TABLE stl.settings (user_id int PRIMARY KEY, theme text);
CREATE TABLE stl_v2.accounts (user_id int PRIMARY KEY, bio text, theme text);
INSERT INTO stl.profiles VALUES (1, 'ann'), (2, 'bob');
INSERT INTO stl.settings VALUES (1, 'dark');
SELECT softmig.create_migration('stl_profiles', 'stl.profiles', 'stl_v2.accounts');
SELECT softmig.create_migration('stl_settings', 'stl.settings', 'stl_v2.accounts',
    options => '{"attribute_of": "stl_profiles"}');
SELECT softmig.create_group('stl_a', ARRAY['stl_profiles', 'stl_settings']);
SELECT softmig.advance_group('stl_u');
SELECT softmig.advance_group('stl_a');
SET client_min_messages = warning;
CALL softmig.backfill('stl_users');
CALL softmig.backfill('stl_addr');
CALL softmig.backfill('stl_profiles');
CALL softmig.backfill('stl_settings');
RESET client_min_messages;

-- every member, owner or attribute member, of a split or a merge
SELECT x.name, e.state, e.message
  FROM (VALUES ('stl_users', 'email'), ('stl_addr', 'city'), ('stl_profiles', 'bio'), ('stl_settings', 'theme')) AS x(name, field),
       LATERAL t.err(format($$SELECT softmig.set_field_authority(%L, %L, 'new')$$, x.name, x.field)) e
 ORDER BY 1;
SELECT x.name, e.state, e.message
  FROM unnest(ARRAY['stl_users', 'stl_addr', 'stl_profiles', 'stl_settings']) AS x(name),
       LATERAL t.err(format($$SELECT softmig.create_shape_views(%L, 'stl_lv', 'stl_nv')$$, x.name)) e
 ORDER BY 1;
-- nothing was written: no field given away, no view
SELECT count(*) AS fields FROM softmig.field_authority f JOIN softmig.migrations m ON m.id = f.migration_id
 WHERE m.name LIKE 'stl\_%';
SELECT count(*) AS views FROM pg_class WHERE relnamespace IN ('stl_lv'::regnamespace, 'stl_nv'::regnamespace);

-- an owner that uses one of these tools, or has quarantined entities (a
-- quarantine of its own the new member would not share), takes no
-- attribute member
CREATE TABLE stl.orders (id int PRIMARY KEY, note text, total int);
CREATE TABLE stl_v2.orders (id int PRIMARY KEY, note text);
CREATE TABLE stl_v2.totals (id int PRIMARY KEY, total int);
SELECT softmig.create_migration('stl_orders', 'stl.orders', 'stl_v2.orders');
SELECT softmig.quarantine('stl_orders', '{"id": 1}', 'check');
SELECT * FROM t.err($$SELECT softmig.create_migration('stl_totals', 'stl.orders', 'stl_v2.totals',
    options => '{"attribute_of": "stl_orders"}')$$);
SELECT softmig.release('stl_orders', '{"id": 1}');
SELECT softmig.set_field_authority('stl_orders', 'note', 'new');
SELECT * FROM t.err($$SELECT softmig.create_migration('stl_totals', 'stl.orders', 'stl_v2.totals',
    options => '{"attribute_of": "stl_orders"}')$$);
SELECT softmig.set_field_authority('stl_orders', 'note', 'legacy');
SELECT softmig.create_shape_views('stl_orders', 'stl_lv', 'stl_nv');
SELECT * FROM t.err($$SELECT softmig.create_migration('stl_totals', 'stl.orders', 'stl_v2.totals',
    options => '{"attribute_of": "stl_orders"}')$$);
SELECT softmig.drop_shape_views('stl_orders');
SELECT softmig.create_migration('stl_totals', 'stl.orders', 'stl_v2.totals',
    options => '{"attribute_of": "stl_orders"}');

-- inspect_group shows one entity of the split and of the merge: an
-- attribute member is tied to its owner by the table they share, with no
-- foreign key between the split's target tables (failed before: the
-- address member of a split was untied, without rows)
SELECT m->>'migration' AS member, m->'tied' AS tied, r->>'parity' AS parity, r->'target' AS target
  FROM jsonb_array_elements(softmig.inspect_group('stl_u', '{"id": 1}') -> 'members') m
  LEFT JOIN LATERAL jsonb_array_elements(m->'rows') r ON true ORDER BY 1;
-- user 2's address carries no value: no row of the address member (parity
-- compares it so too)
SELECT m->>'migration' AS member, m->'tied' AS tied, jsonb_array_length(m->'rows') AS rows
  FROM jsonb_array_elements(softmig.inspect_group('stl_u', '{"id": 2}') -> 'members') m ORDER BY 1;
SELECT m->>'migration' AS member, m->'tied' AS tied, r->>'parity' AS parity, r->'target' AS target
  FROM jsonb_array_elements(softmig.inspect_group('stl_a', '{"user_id": 1}') -> 'members') m
  LEFT JOIN LATERAL jsonb_array_elements(m->'rows') r ON true ORDER BY 1;

-- clean up
SELECT softmig.rollback_group('stl_u', 'clean up');
SELECT softmig.rollback_group('stl_a', 'clean up');
SELECT softmig.drop_group('stl_u');
SELECT softmig.drop_group('stl_a');
SELECT softmig.drop_migration(x) FROM unnest(ARRAY['stl_addr', 'stl_users', 'stl_settings', 'stl_profiles', 'stl_totals', 'stl_orders']) x;
DROP SCHEMA stl, stl_v2, stl_lv, stl_nv CASCADE;
