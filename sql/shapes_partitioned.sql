-- split and merge over partitioned tables (doc/shapes.md): every member's
-- table may be partitioned, on either side; each member's triggers fire on
-- every partition and the entity locks and gathers see the partitioned
-- table as a whole
\pset null '(null)'
CREATE SCHEMA shp;
CREATE SCHEMA shp_v2;

-- split: users (range by id) -> v2.users (range) + v2.addresses (hash)
CREATE TABLE shp.users (id int PRIMARY KEY, email text NOT NULL, street text, city text) PARTITION BY RANGE (id);
CREATE TABLE shp.users_a PARTITION OF shp.users FOR VALUES FROM (0) TO (100);
CREATE TABLE shp.users_b PARTITION OF shp.users FOR VALUES FROM (100) TO (1000);
CREATE TABLE shp_v2.users (id int PRIMARY KEY, email text NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE shp_v2.users_a PARTITION OF shp_v2.users FOR VALUES FROM (0) TO (100);
CREATE TABLE shp_v2.users_b PARTITION OF shp_v2.users FOR VALUES FROM (100) TO (1000);
CREATE TABLE shp_v2.addresses (user_id int PRIMARY KEY, street text, city text) PARTITION BY HASH (user_id);
CREATE TABLE shp_v2.addresses_0 PARTITION OF shp_v2.addresses FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE shp_v2.addresses_1 PARTITION OF shp_v2.addresses FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO shp.users VALUES (1, 'ann@x', 'Main 1', 'Oslo'), (150, 'bob@x', NULL, NULL);

CREATE FUNCTION shp.split_entity() RETURNS TABLE (id int, email text, street text, city text,
                                                  v2_email text, v2_street text, v2_city text) LANGUAGE sql AS $$
    SELECT coalesce(l.id, u.id, a.user_id), l.email, l.street, l.city, u.email, a.street, a.city
      FROM shp.users l
      FULL JOIN shp_v2.users u ON u.id = l.id
      FULL JOIN shp_v2.addresses a ON a.user_id = coalesce(l.id, u.id)
     ORDER BY 1
$$;

SELECT softmig.create_migration('shp_users', 'shp.users', 'shp_v2.users');
SELECT softmig.create_migration('shp_addr', 'shp.users', 'shp_v2.addresses',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}',
    options => '{"attribute_of": "shp_users"}');
SELECT softmig.create_group('shp_split', ARRAY['shp_users', 'shp_addr']);
SELECT softmig.advance_group('shp_split');
CALL softmig.backfill('shp_users');
CALL softmig.backfill('shp_addr');

-- mirrored: rows land in the partitions their keys choose, on both targets
INSERT INTO shp.users VALUES (2, 'cid@x', 'Side 2', 'Bergen'), (200, 'dan@x', 'Via 200', 'Rome');
UPDATE shp.users SET city = 'Paris' WHERE id = 1;
UPDATE shp.users SET street = 'Gate 150', city = 'Turku' WHERE id IN (150, 200);
DELETE FROM shp.users WHERE id = 2;
SELECT * FROM shp.split_entity();
SELECT tableoid::regclass AS part, * FROM shp_v2.addresses ORDER BY user_id;
SELECT (SELECT count(*) FROM softmig.parity('shp_users')) AS users_diff,
       (SELECT count(*) FROM softmig.parity('shp_addr')) AS addr_diff;

-- new_write: an address first, its user second, in one transaction
SELECT softmig.advance_group('shp_split');
BEGIN;
INSERT INTO shp_v2.addresses VALUES (500, 'Kai 500', 'Kyiv');
INSERT INTO shp_v2.users VALUES (500, 'eve@x');
COMMIT;
INSERT INTO shp_v2.users VALUES (5, 'fay@x');
INSERT INTO shp_v2.addresses VALUES (5, 'Lane 5', 'Lima');
UPDATE shp_v2.addresses SET city = 'Quito' WHERE user_id = 5;
DELETE FROM shp_v2.addresses WHERE user_id = 1;
DELETE FROM shp_v2.users WHERE id = 200;
DELETE FROM shp_v2.addresses WHERE user_id = 200;
SELECT * FROM shp.split_entity();
SELECT tableoid::regclass AS part, id FROM shp.users ORDER BY id;

-- new_read and back to mirrored: legacy is the authority again
SELECT softmig.advance_group('shp_split');
SELECT softmig.rollback_group('shp_split', 'partitioned split: back to mirrored');
SELECT softmig.rollback_group('shp_split', 'partitioned split: back to mirrored');
UPDATE shp.users SET street = 'Back 5' WHERE id = 5;
SELECT * FROM shp.split_entity();
SELECT (SELECT count(*) FROM softmig.parity('shp_users')) AS users_diff,
       (SELECT count(*) FROM softmig.parity('shp_addr')) AS addr_diff;

-- merge: profiles (range) + settings (list by a column) -> v2.accounts (hash)
CREATE TABLE shp.profiles (user_id int PRIMARY KEY, bio text) PARTITION BY RANGE (user_id);
CREATE TABLE shp.profiles_a PARTITION OF shp.profiles FOR VALUES FROM (0) TO (100);
CREATE TABLE shp.profiles_b PARTITION OF shp.profiles FOR VALUES FROM (100) TO (1000);
CREATE TABLE shp.settings (user_id int, theme text, PRIMARY KEY (user_id)) PARTITION BY HASH (user_id);
CREATE TABLE shp.settings_0 PARTITION OF shp.settings FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE shp.settings_1 PARTITION OF shp.settings FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE shp_v2.accounts (user_id int PRIMARY KEY, bio text, theme text) PARTITION BY HASH (user_id);
CREATE TABLE shp_v2.accounts_0 PARTITION OF shp_v2.accounts FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE shp_v2.accounts_1 PARTITION OF shp_v2.accounts FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO shp.profiles VALUES (1, 'ann'), (150, 'bob');
INSERT INTO shp.settings VALUES (1, 'dark');

CREATE FUNCTION shp.merge_entity() RETURNS TABLE (user_id int, bio text, theme text,
                                                  v2_bio text, v2_theme text) LANGUAGE sql AS $$
    SELECT coalesce(p.user_id, s.user_id, a.user_id), p.bio, s.theme, a.bio, a.theme
      FROM shp.profiles p
      FULL JOIN shp.settings s ON s.user_id = p.user_id
      FULL JOIN shp_v2.accounts a ON a.user_id = coalesce(p.user_id, s.user_id)
     ORDER BY 1
$$;

SELECT softmig.create_migration('shp_profiles', 'shp.profiles', 'shp_v2.accounts');
SELECT softmig.create_migration('shp_settings', 'shp.settings', 'shp_v2.accounts',
    options => '{"attribute_of": "shp_profiles"}');
SELECT softmig.create_group('shp_merge', ARRAY['shp_profiles', 'shp_settings']);
SELECT softmig.advance_group('shp_merge');
CALL softmig.backfill('shp_profiles');
CALL softmig.backfill('shp_settings');

-- mirrored: each legacy table writes only its columns
INSERT INTO shp.profiles VALUES (2, 'cid');
INSERT INTO shp.settings VALUES (2, 'light'), (150, 'blue');
UPDATE shp.settings SET theme = 'dim' WHERE user_id = 1;
DELETE FROM shp.settings WHERE user_id = 150;
DELETE FROM shp.settings WHERE user_id = 2;
DELETE FROM shp.profiles WHERE user_id = 2;
SELECT * FROM shp.merge_entity();
SELECT (SELECT count(*) FROM softmig.parity('shp_profiles')) AS profiles_diff,
       (SELECT count(*) FROM softmig.parity('shp_settings')) AS settings_diff;

-- new_write: one accounts row makes both legacy rows
SELECT softmig.advance_group('shp_merge');
INSERT INTO shp_v2.accounts VALUES (300, 'dee', 'red');
UPDATE shp_v2.accounts SET theme = 'green' WHERE user_id = 150;
UPDATE shp_v2.accounts SET bio = 'ann 2' WHERE user_id = 1;
DELETE FROM shp_v2.accounts WHERE user_id = 1;
SELECT * FROM shp.merge_entity();
SELECT tableoid::regclass AS part, * FROM shp.settings ORDER BY user_id;

SELECT softmig.rollback_group('shp_merge', 'partitioned merge: back to mirrored');
UPDATE shp.settings SET theme = 'violet' WHERE user_id = 300;
SELECT * FROM shp.merge_entity();
SELECT (SELECT count(*) FROM softmig.parity('shp_profiles')) AS profiles_diff,
       (SELECT count(*) FROM softmig.parity('shp_settings')) AS settings_diff;

SELECT softmig.rollback_group('shp_merge', 'done');
SELECT softmig.rollback_group('shp_split', 'done');
SELECT softmig.drop_group('shp_merge');
SELECT softmig.drop_group('shp_split');
SELECT softmig.drop_migration(n) FROM unnest(ARRAY['shp_addr', 'shp_users', 'shp_settings', 'shp_profiles']) n;
SET client_min_messages = warning;
DROP SCHEMA shp CASCADE;
DROP SCHEMA shp_v2 CASCADE;
RESET client_min_messages;
