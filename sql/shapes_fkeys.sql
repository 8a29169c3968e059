-- a foreign key that does not cascade between the tables of a split's or a
-- merge's members: the owner's delete from the shared table deletes the
-- attribute members' rows of the same entities in the same statement, so
-- the key is checked once both are gone (doc/shapes.md "Limits of a split",
-- "Limits of a merge"; sql/merge_gaps.sql has the merge in new_write)
\pset null '(null)'
CREATE SCHEMA sfk;
CREATE SCHEMA sfk_v2;
CREATE TABLE sfk.users (id int PRIMARY KEY, email text, city text);
CREATE TABLE sfk_v2.users (id int PRIMARY KEY, email text);
CREATE TABLE sfk_v2.addresses (id int PRIMARY KEY, city text);
INSERT INTO sfk.users SELECT g, 'u' || g, 'c' || g FROM generate_series(1, 6) g;
SELECT softmig.create_migration('sfk_users', 'sfk.users', 'sfk_v2.users');
SELECT softmig.create_migration('sfk_addr', 'sfk.users', 'sfk_v2.addresses',
    options => '{"attribute_of": "sfk_users"}');
SELECT softmig.create_group('sfk', ARRAY['sfk_users', 'sfk_addr']);
SELECT softmig.advance_group('sfk');
SET client_min_messages = warning;
CALL softmig.backfill('sfk_users');
CALL softmig.backfill('sfk_addr');
RESET client_min_messages;

-- mirrored: a plain key from addresses to users; a legacy delete removes
-- both target rows, one row and several
ALTER TABLE sfk_v2.addresses ADD CONSTRAINT addresses_user FOREIGN KEY (id) REFERENCES sfk_v2.users;
DELETE FROM sfk.users WHERE id = 1;
DELETE FROM sfk.users WHERE id IN (2, 3);
-- RESTRICT too
ALTER TABLE sfk_v2.addresses DROP CONSTRAINT addresses_user;
ALTER TABLE sfk_v2.addresses ADD CONSTRAINT addresses_user FOREIGN KEY (id) REFERENCES sfk_v2.users ON DELETE RESTRICT;
DELETE FROM sfk.users WHERE id = 4;
SELECT u.id, u.email, a.city FROM sfk_v2.users u FULL JOIN sfk_v2.addresses a USING (id) ORDER BY 1;
SELECT count(*) AS differences FROM softmig.parity('sfk_users');
SELECT count(*) AS differences FROM softmig.parity('sfk_addr');

-- the owner's statement deletes from the attribute member's table as the
-- owner of its own destination table: without DELETE on addresses it fails
-- and nothing is deleted
CREATE ROLE sfk_owner;
GRANT USAGE ON SCHEMA sfk, sfk_v2 TO sfk_owner;
ALTER TABLE sfk_v2.users OWNER TO sfk_owner;
SELECT state, message FROM t.err($$DELETE FROM sfk.users WHERE id = 5$$);
SELECT count(*) AS users FROM sfk.users;
GRANT SELECT, DELETE ON sfk_v2.addresses TO sfk_owner;
DELETE FROM sfk.users WHERE id = 5;
SELECT u.id, u.email, a.city FROM sfk_v2.users u FULL JOIN sfk_v2.addresses a USING (id) ORDER BY 1;

-- release of an entity legacy no longer holds: the re-sync deletes the
-- address before the user (attribute members first), so the key holds
SELECT softmig.quarantine('sfk_users', '{"id": 6}', 'check');
SET session_replication_role = replica;
DELETE FROM sfk.users WHERE id = 6;                     -- the entity gone
RESET session_replication_role;
SELECT softmig.release('sfk_users', '{"id": 6}');
SELECT u.id, u.email, a.city FROM sfk_v2.users u FULL JOIN sfk_v2.addresses a USING (id) ORDER BY 1;
SELECT m.name, h.detail FROM softmig.history_log h JOIN softmig.migrations m ON m.id = h.migration_id
 WHERE m.name LIKE 'sfk%' AND h.action = 'release' ORDER BY h.id;

-- clean up
ALTER TABLE sfk_v2.users OWNER TO CURRENT_USER;
SELECT softmig.rollback_group('sfk', 'clean up');
SELECT softmig.drop_group('sfk');
SELECT softmig.drop_migration('sfk_addr');
SELECT softmig.drop_migration('sfk_users');
REVOKE USAGE ON SCHEMA sfk, sfk_v2 FROM sfk_owner;
REVOKE ALL ON sfk_v2.addresses FROM sfk_owner;
DROP SCHEMA sfk, sfk_v2 CASCADE;
DROP ROLE sfk_owner;
