-- split: one legacy table, several target tables with disjoint columns
-- (doc/shapes.md "Split")
\pset null '(null)'
CREATE SCHEMA sp;
CREATE SCHEMA sp_v2;
CREATE TABLE sp.users (id int PRIMARY KEY, email text NOT NULL, street text, city text);
CREATE TABLE sp_v2.users (id int PRIMARY KEY, email text NOT NULL);
CREATE TABLE sp_v2.addresses (user_id int PRIMARY KEY, street text, city text);
CREATE TABLE sp_v2.other (user_id int PRIMARY KEY, city text, zip text);
CREATE TABLE sp_v2.nokey (user_id int PRIMARY KEY);
CREATE TABLE sp.solo (id int PRIMARY KEY, v text);
CREATE TABLE sp_v2.solo (id int PRIMARY KEY, v text);
INSERT INTO sp.users VALUES (1, 'ann@x', 'Main 1', 'Oslo'), (2, 'bob@x', NULL, NULL);

-- row counters on every table: which rows each statement writes
CREATE TABLE sp.writes (tbl text, op text, id int);
CREATE FUNCTION sp.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sp.writes VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP = 'DELETE' THEN (to_jsonb(OLD) ->> TG_ARGV[0])::int
             ELSE (to_jsonb(NEW) ->> TG_ARGV[0])::int END);
    RETURN NULL;
END $$;
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON sp.users FOR EACH ROW EXECUTE FUNCTION sp.count_write('id');
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON sp_v2.users FOR EACH ROW EXECUTE FUNCTION sp.count_write('id');
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON sp_v2.addresses FOR EACH ROW EXECUTE FUNCTION sp.count_write('user_id');
CREATE FUNCTION sp.writes() RETURNS TABLE (tbl text, op text, id int) LANGUAGE sql AS $$
    WITH w AS (DELETE FROM sp.writes RETURNING *) SELECT * FROM w ORDER BY 1, 2, 3
$$;
CREATE FUNCTION sp.entity() RETURNS TABLE (id int, email text, street text, city text,
                                           v2_email text, v2_street text, v2_city text) LANGUAGE sql AS $$
    SELECT coalesce(l.id, u.id, a.user_id), l.email, l.street, l.city, u.email, a.street, a.city
      FROM sp.users l
      FULL JOIN sp_v2.users u ON u.id = l.id
      FULL JOIN sp_v2.addresses a ON a.user_id = coalesce(l.id, u.id)
     ORDER BY 1
$$;

-- the owner: its rows decide whether the entity exists
SELECT softmig.create_migration('sp_users', 'sp.users', 'sp_v2.users');

-- a second migration of the same table must be declared
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.addresses',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}')$$);
-- errors of option attribute_of
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.addresses',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}', options => '{"attribute_of": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.addresses',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}', options => '{"attribute_of": "nobody"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.solo', 'sp_v2.addresses',
    forward => '{"user_id": "id", "street": "v"}', backward => '{"v": "street"}', options => '{"attribute_of": "sp_users"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.solo', 'sp_v2.users',
    options => '{"attribute_of": "sp_users"}')$$);
-- mapped columns must be disjoint: email is the owner's
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.addresses',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id", "email": "street"}',
    options => '{"attribute_of": "sp_users"}')$$);
-- the attribute member's key maps to the owner's key
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.addresses',
    key => ARRAY['email'], forward => '{"user_id": "id"}', backward => '{"id": "user_id"}',
    options => '{"attribute_of": "sp_users"}')$$);
-- a member that maps nothing but the key carries no attribute
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.nokey',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}', options => '{"attribute_of": "sp_users"}')$$);
SELECT name FROM softmig.migrations WHERE name LIKE 'sp\_%' ORDER BY name;

-- the attribute member (same-named street and city map themselves)
SELECT softmig.create_migration('sp_addr', 'sp.users', 'sp_v2.addresses',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}',
    options => '{"attribute_of": "sp_users"}');
-- another member mapping city too is refused
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_other', 'sp.users', 'sp_v2.other',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id", "city": "city"}',
    options => '{"attribute_of": "sp_users"}')$$);
-- the attribute member of an attribute member is refused: name the owner
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_other', 'sp.users', 'sp_v2.other',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id"}', options => '{"attribute_of": "sp_addr"}')$$);
-- nor is a migration made a member of a split afterwards
SELECT * FROM t.err($$SELECT softmig.set_option('sp_users', 'attribute_of', '"sp_addr"')$$);
-- the owner cannot be dropped while it has attribute members
SELECT * FROM t.err($$SELECT softmig.drop_migration('sp_users')$$);

-- the members of a split move only as a group
SELECT * FROM t.err($$SELECT softmig.advance('sp_users')$$);
SELECT * FROM t.err($$SELECT softmig.advance('sp_addr')$$);
SELECT softmig.create_migration('sp_solo', 'sp.solo', 'sp_v2.solo');
SELECT * FROM t.err($$SELECT softmig.create_group('sp_wrong', ARRAY['sp_users', 'sp_solo'])$$);
SELECT softmig.create_group('sp', ARRAY['sp_users', 'sp_addr']);
-- an owner in a group takes no new attribute member
SELECT * FROM t.err($$SELECT softmig.create_migration('sp_other', 'sp.users', 'sp_v2.other',
    forward => '{"user_id": "id"}', backward => '{"id": "user_id", "zip": "zip"}',
    options => '{"attribute_of": "sp_users"}')$$);

-- mirrored: legacy is the authority
SELECT softmig.advance_group('sp');
CALL softmig.backfill('sp_users');
CALL softmig.backfill('sp_addr');
ALTER TABLE sp_v2.addresses ADD CONSTRAINT addresses_user FOREIGN KEY (user_id)
    REFERENCES sp_v2.users ON DELETE CASCADE DEFERRABLE;
SELECT * FROM sp.writes();
SELECT * FROM sp.entity();
-- a legacy insert creates both target rows
INSERT INTO sp.users VALUES (3, 'cy@x', 'Elm 3', 'Rome');
SELECT * FROM sp.writes();
-- a city update touches only the addresses (the owner's row is not rewritten)
UPDATE sp.users SET city = 'Bergen' WHERE id = 1;
SELECT * FROM sp.writes();
-- an email update touches only the owner's row; several rows at once too
UPDATE sp.users SET email = upper(email) WHERE id IN (1, 2);
SELECT * FROM sp.writes();
-- a statement that changes nothing mapped writes nothing on the targets
UPDATE sp.users SET city = city WHERE id = 1;
SELECT * FROM sp.writes();
-- a key change is refused (every member's rows belong to the entity by its key)
SELECT * FROM t.err($$UPDATE sp.users SET id = 30 WHERE id = 3$$);
-- a legacy delete removes both
DELETE FROM sp.users WHERE id = 3;
SELECT * FROM sp.writes();
SELECT * FROM sp.entity();
-- the targets are projections
SELECT * FROM t.err($$INSERT INTO sp_v2.addresses VALUES (9, 'x', 'y')$$);
SELECT count(*) AS differences FROM softmig.parity('sp_users');
SELECT count(*) AS differences FROM softmig.parity('sp_addr');
SELECT * FROM t.err($$SELECT softmig.rollback('sp_addr')$$);

-- new_write: the targets are the authority
SELECT softmig.advance_group('sp', reason => 'backfilled, parity clean');
-- address first (deferred key), then the user: one legacy row, all four columns
BEGIN;
SET CONSTRAINTS sp_v2.addresses_user DEFERRED;
INSERT INTO sp_v2.addresses VALUES (4, 'Oak 4', 'Lima');
INSERT INTO sp_v2.users VALUES (4, 'dee@x');
COMMIT;
SELECT * FROM sp.writes();
SELECT * FROM sp.users WHERE id = 4;
-- the user first, then the address
BEGIN;
INSERT INTO sp_v2.users VALUES (5, 'eve@x');
INSERT INTO sp_v2.addresses VALUES (5, 'Ash 5', 'Kyiv');
COMMIT;
SELECT * FROM sp.users WHERE id = 5;
-- an address changed, added, deleted: the legacy row's street and city follow
UPDATE sp_v2.addresses SET city = 'Paris' WHERE user_id = 1;
DELETE FROM sp_v2.addresses WHERE user_id = 2;
INSERT INTO sp_v2.addresses VALUES (2, 'Pine 2', 'Quito');
DELETE FROM sp_v2.addresses WHERE user_id = 4;
SELECT * FROM sp.writes();
SELECT * FROM sp.entity();
-- an absent address is NULL street and city on legacy: no difference
SELECT count(*) AS differences FROM softmig.parity('sp_users');
SELECT count(*) AS differences FROM softmig.parity('sp_addr');
SELECT softmig.inspect_group('sp', '{"id": 4}') -> 'parity' AS entity_4;
SELECT m->>'migration' AS member, r->>'parity' AS parity, r->'legacy' AS legacy, r->'target' AS target
  FROM jsonb_array_elements(softmig.inspect_group('sp', '{"id": 1}') -> 'members') m,
       jsonb_array_elements(m->'rows') r;
-- an email update projects only the owner's columns
UPDATE sp_v2.users SET email = 'ann@y' WHERE id = 1;
SELECT * FROM sp.writes();
-- deleting the user removes the legacy row (and its address by the key)
DELETE FROM sp_v2.users WHERE id = 5;
SELECT * FROM sp.writes();
-- legacy is the projection now
SELECT * FROM t.err($$UPDATE sp.users SET city = 'x' WHERE id = 1$$);
SELECT * FROM t.err($$UPDATE sp_v2.users SET id = 40 WHERE id = 4$$);
-- an address without its user at commit is the foreign key's business
SELECT * FROM t.err($$INSERT INTO sp_v2.addresses VALUES (6, 'Fir 6', 'Oulu')$$);

-- new_read and cutover, and back
SELECT softmig.advance_group('sp');
INSERT INTO sp_v2.users VALUES (7, 'fay@x');
INSERT INTO sp_v2.addresses VALUES (7, 'Yew 7', 'Riga');
SELECT * FROM sp.users WHERE id = 7;
SELECT softmig.rollback_group('sp', 'check the rollback');     -- new_write
-- rollback: new_write -> mirrored, legacy is the authority again
SELECT softmig.rollback_group('sp', 'check the rollback');
INSERT INTO sp.users VALUES (8, 'gus@x', 'Bay 8', 'Nice');
UPDATE sp.users SET street = NULL, city = NULL WHERE id = 7;
SELECT * FROM sp.writes();
SELECT * FROM sp.entity();
SELECT count(*) AS differences FROM softmig.parity('sp_users');
SELECT count(*) AS differences FROM softmig.parity('sp_addr');
SELECT softmig.advance_group('sp');
SELECT softmig.advance_group('sp');
-- (without preloading, the move to cutover notes that reader discovery is off)
SET client_min_messages = warning;
SELECT softmig.advance_group('sp');
RESET client_min_messages;
SELECT softmig.group_status('sp') ->> 'state' AS state;
-- after cutover the targets are plain tables and legacy is frozen
INSERT INTO sp_v2.users VALUES (9, 'hal@x');
INSERT INTO sp_v2.addresses VALUES (9, 'Elm 9', 'Graz');
SELECT * FROM t.err($$UPDATE sp.users SET city = 'x' WHERE id = 1$$);
SELECT * FROM sp.writes();
SELECT * FROM sp.entity();

-- a bulk insert in mirrored whose attribute rows are mirrored before the
-- owner's: ids 999 and 1000 make the attribute member's trigger
-- (softmig_1000_ins) fire before the owner's (softmig_999_ins); its rows wait
-- for their users as a group's children do, even above 2000 rows
CREATE TABLE sp.bulk (id int PRIMARY KEY, email text NOT NULL, city text);
CREATE TABLE sp_v2.bulk (id int PRIMARY KEY, email text NOT NULL);
CREATE TABLE sp_v2.bulk_city (id int PRIMARY KEY REFERENCES sp_v2.bulk ON DELETE CASCADE, city text);
SELECT setval('softmig.migrations_id_seq', 998);
SELECT softmig.create_migration('sp_bulk', 'sp.bulk', 'sp_v2.bulk');
SELECT softmig.create_migration('sp_bulk_city', 'sp.bulk', 'sp_v2.bulk_city',
    options => '{"attribute_of": "sp_bulk"}');
SELECT name, id FROM softmig.migrations WHERE name LIKE 'sp\_bulk%' ORDER BY id;
SELECT softmig.create_group('sp_bulk', ARRAY['sp_bulk', 'sp_bulk_city']);
SELECT softmig.advance_group('sp_bulk');
INSERT INTO sp.bulk SELECT g, 'u' || g, 'c' || g FROM generate_series(1, 2500) g;
SELECT (SELECT count(*) FROM sp_v2.bulk) AS users, (SELECT count(*) FROM sp_v2.bulk_city) AS cities;
SELECT softmig.rollback_group('sp_bulk', 'done');
SELECT softmig.drop_group('sp_bulk');
SELECT softmig.drop_migration('sp_bulk_city');
SELECT softmig.drop_migration('sp_bulk');

-- clean up
SELECT softmig.drop_group('sp');
SELECT * FROM t.err($$SELECT softmig.drop_migration('sp_users')$$);
SELECT softmig.drop_migration('sp_addr');
SELECT softmig.drop_migration('sp_users');
SELECT softmig.drop_migration('sp_solo');
DROP SCHEMA sp, sp_v2 CASCADE;
