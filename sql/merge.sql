-- merge: several legacy tables, one target table with disjoint columns
-- (doc/shapes.md "Merge")
\pset null '(null)'
CREATE SCHEMA mg;
CREATE SCHEMA mg_v2;
CREATE TABLE mg.profiles (user_id int PRIMARY KEY, bio text);
CREATE TABLE mg.settings (user_id int PRIMARY KEY, theme text);
CREATE TABLE mg_v2.accounts (user_id int PRIMARY KEY, bio text, theme text);
CREATE TABLE mg.alt (k int PRIMARY KEY, user_id int, theme text);
CREATE TABLE mg.bio2 (user_id int PRIMARY KEY, bio text);
CREATE TABLE mg.keyonly (user_id int PRIMARY KEY);
CREATE TABLE mg.other (user_id int PRIMARY KEY, theme text);
CREATE TABLE mg_v2.other (user_id int PRIMARY KEY, theme text);
INSERT INTO mg.profiles VALUES (1, 'ann'), (2, 'bob');
-- settings of ann, and of user 9, who has no profile (an orphan)
INSERT INTO mg.settings VALUES (1, 'dark'), (9, 'orphan');

-- row counters on every table: which rows each statement writes
CREATE TABLE mg.writes (tbl text, op text, id int);
CREATE FUNCTION mg.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mg.writes VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END);
    RETURN NULL;
END $$;
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON mg.profiles FOR EACH ROW EXECUTE FUNCTION mg.count_write();
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON mg.settings FOR EACH ROW EXECUTE FUNCTION mg.count_write();
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON mg_v2.accounts FOR EACH ROW EXECUTE FUNCTION mg.count_write();
CREATE FUNCTION mg.writes() RETURNS TABLE (tbl text, op text, id int) LANGUAGE sql AS $$
    WITH w AS (DELETE FROM mg.writes RETURNING *) SELECT * FROM w ORDER BY 1, 2, 3
$$;
CREATE FUNCTION mg.entity() RETURNS TABLE (user_id int, bio text, theme text,
                                           v2_bio text, v2_theme text) LANGUAGE sql AS $$
    SELECT coalesce(p.user_id, s.user_id, a.user_id), p.bio, s.theme, a.bio, a.theme
      FROM mg.profiles p
      FULL JOIN mg.settings s ON s.user_id = p.user_id
      FULL JOIN mg_v2.accounts a ON a.user_id = coalesce(p.user_id, s.user_id)
     ORDER BY 1
$$;

-- the owner: its rows (profiles) decide whether the entity exists
SELECT softmig.create_migration('mg_profiles', 'mg.profiles', 'mg_v2.accounts');

-- a second migration into the same target must be declared
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_settings', 'mg.settings', 'mg_v2.accounts')$$);
-- an attribute member shares the owner's legacy table or its target table
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_settings', 'mg.other', 'mg_v2.other',
    options => '{"attribute_of": "mg_profiles"}')$$);
-- mapped target columns must be disjoint: bio is the owner's
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_settings', 'mg.bio2', 'mg_v2.accounts',
    options => '{"attribute_of": "mg_profiles"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_settings', 'mg.settings', 'mg_v2.accounts',
    forward => '{"bio": "theme"}', options => '{"attribute_of": "mg_profiles"}')$$);
-- the attribute member's key maps to the owner's target key
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_settings', 'mg.alt', 'mg_v2.accounts',
    forward => '{"theme": "k::text", "user_id": "user_id"}', backward => '{"k": "user_id"}',
    options => '{"attribute_of": "mg_profiles", "target_key": ["theme"]}')$$);
-- a member that maps nothing but the key carries no attribute
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_settings', 'mg.keyonly', 'mg_v2.accounts',
    options => '{"attribute_of": "mg_profiles"}')$$);
SELECT name FROM softmig.migrations WHERE name LIKE 'mg\_%' ORDER BY name;

-- the attribute member (same-named user_id and theme map themselves; bio,
-- which the owner maps, is not required of it)
SELECT softmig.create_migration('mg_settings', 'mg.settings', 'mg_v2.accounts',
    options => '{"attribute_of": "mg_profiles"}');
SELECT m.name, x.direction, x.column_name, x.expression
  FROM softmig.mappings x JOIN softmig.migrations m ON m.id = x.migration_id
 WHERE m.name LIKE 'mg\_%' ORDER BY 1, 2, 3;
-- another member mapping theme too is refused
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_other', 'mg.other', 'mg_v2.accounts',
    forward => '{"theme": "theme"}', options => '{"attribute_of": "mg_profiles"}')$$);
-- the attribute member of an attribute member is refused: name the owner
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_other', 'mg.other', 'mg_v2.accounts',
    options => '{"attribute_of": "mg_settings"}')$$);
-- the owner cannot be dropped while it has attribute members
SELECT * FROM t.err($$SELECT softmig.drop_migration('mg_profiles')$$);

-- the members of a merge move only as a group, and all of them
SELECT * FROM t.err($$SELECT softmig.advance('mg_settings')$$);
SELECT softmig.create_migration('mg_solo', 'mg.other', 'mg_v2.other');
SELECT * FROM t.err($$SELECT softmig.create_group('mg_wrong', ARRAY['mg_settings', 'mg_solo'])$$);
SELECT softmig.create_group('mg', ARRAY['mg_profiles', 'mg_settings']);
-- an owner in a group takes no new attribute member
SELECT * FROM t.err($$SELECT softmig.create_migration('mg_bio2', 'mg.bio2', 'mg_v2.accounts',
    forward => '{"bio": null}', options => '{"attribute_of": "mg_profiles"}')$$);

-- mirrored: legacy is the authority
SELECT softmig.advance_group('mg');
-- the owner's backfill gathers the settings of each profile it copies; the
-- attribute member's writes no row of its own (user 9 has no profile)
CALL softmig.backfill('mg_profiles');
CALL softmig.backfill('mg_settings');
SELECT * FROM mg.writes();
SELECT * FROM mg.entity();
-- a settings row for a profile that does not exist yet writes nothing
INSERT INTO mg.settings VALUES (3, 'blue');
SELECT * FROM mg.writes();
-- the profile's insert then gathers theme from settings
INSERT INTO mg.profiles VALUES (3, 'cy');
SELECT * FROM mg.writes();
-- each legacy table writes only its columns of accounts
UPDATE mg.settings SET theme = 'red' WHERE user_id = 1;
UPDATE mg.profiles SET bio = 'Ann' WHERE user_id = 1;
SELECT * FROM mg.writes();
-- a statement that changes nothing mapped writes nothing on the target
UPDATE mg.settings SET theme = theme WHERE user_id = 1;
SELECT * FROM mg.writes();
-- deleting a settings row clears theme
DELETE FROM mg.settings WHERE user_id = 3;
SELECT * FROM mg.writes();
-- a key change is refused (every member's rows belong to the entity by its key)
SELECT * FROM t.err($$UPDATE mg.settings SET user_id = 30 WHERE user_id = 1$$);
-- deleting the profile deletes the accounts row (its settings stay in legacy)
INSERT INTO mg.settings VALUES (2, 'green');
DELETE FROM mg.profiles WHERE user_id = 2;
SELECT * FROM mg.writes();
SELECT * FROM mg.entity();
-- the target is a projection
SELECT * FROM t.err($$UPDATE mg_v2.accounts SET theme = 'x' WHERE user_id = 1$$);
-- parity: an absent settings row is theme NULL on the target (user 3: no
-- difference); settings the target cannot hold (users 2 and 9: no
-- profile) are reported
SELECT count(*) AS differences FROM softmig.parity('mg_profiles');
SELECT kind, key FROM softmig.parity('mg_settings') ORDER BY key::text;
SELECT * FROM t.err($$SELECT softmig.advance_group('mg')$$);
DELETE FROM mg.settings WHERE user_id IN (2, 9);
SELECT count(*) AS differences FROM softmig.parity('mg_settings');
SELECT * FROM t.err($$SELECT softmig.rollback('mg_settings')$$);

-- new_write: the target is the authority
SELECT softmig.advance_group('mg', reason => 'backfilled, parity clean');
SELECT * FROM mg.writes();
-- an insert into accounts creates both legacy rows
INSERT INTO mg_v2.accounts VALUES (4, 'dee', 'pink');
SELECT * FROM mg.writes();
-- an update of theme touches only settings, of bio only profiles
UPDATE mg_v2.accounts SET theme = 'gold' WHERE user_id = 4;
SELECT * FROM mg.writes();
UPDATE mg_v2.accounts SET bio = 'Dee' WHERE user_id = 4;
SELECT * FROM mg.writes();
-- deleting accounts deletes both legacy rows
DELETE FROM mg_v2.accounts WHERE user_id = 1;
SELECT * FROM mg.writes();
SELECT * FROM mg.entity();
SELECT count(*) AS differences FROM softmig.parity('mg_profiles');
SELECT count(*) AS differences FROM softmig.parity('mg_settings');
-- inspect_group shows the entity once per member, both tied by the target
SELECT m->>'migration' AS member, m->'tied' AS tied, r->>'parity' AS parity, r->'legacy' AS legacy, r->'target' AS target
  FROM jsonb_array_elements(softmig.inspect_group('mg', '{"user_id": 4}') -> 'members') m
  LEFT JOIN LATERAL jsonb_array_elements(m->'rows') r ON true;
-- an entity without settings: the attribute member has no row of it
SELECT m->>'migration' AS member, jsonb_array_length(m->'rows') AS rows
  FROM jsonb_array_elements(softmig.inspect_group('mg', '{"user_id": 3}') -> 'members') m;
-- legacy is the projection now
SELECT * FROM t.err($$UPDATE mg.settings SET theme = 'x' WHERE user_id = 4$$);
SELECT * FROM t.err($$UPDATE mg_v2.accounts SET user_id = 40 WHERE user_id = 4$$);

-- new_read, and back
SELECT softmig.advance_group('mg');
-- an accounts row without a theme makes no settings row
INSERT INTO mg_v2.accounts VALUES (5, 'eve', NULL);
SELECT * FROM mg.writes();
SELECT softmig.rollback_group('mg', 'check the rollback');     -- new_write
-- rollback: new_write -> mirrored, legacy is the authority again
SELECT softmig.rollback_group('mg', 'check the rollback');
INSERT INTO mg.settings VALUES (6, 'teal');
INSERT INTO mg.profiles VALUES (6, 'fay');
INSERT INTO mg.settings VALUES (5, 'lime');
DELETE FROM mg.settings WHERE user_id = 4;
SELECT * FROM mg.writes();
SELECT * FROM mg.entity();
SELECT count(*) AS differences FROM softmig.parity('mg_profiles');
SELECT count(*) AS differences FROM softmig.parity('mg_settings');
SELECT softmig.advance_group('mg');
SELECT softmig.advance_group('mg');
-- (without preloading, the move to cutover notes that reader discovery is off)
SET client_min_messages = warning;
SELECT softmig.advance_group('mg');
RESET client_min_messages;
SELECT softmig.group_status('mg') ->> 'state' AS state;
-- after cutover the target is a plain table and legacy is frozen
INSERT INTO mg_v2.accounts VALUES (7, 'gus', 'navy');
SELECT * FROM t.err($$UPDATE mg.settings SET theme = 'x' WHERE user_id = 5$$);
SELECT * FROM mg.writes();
SELECT * FROM mg.entity();

-- clean up
SELECT softmig.drop_group('mg');
SELECT softmig.drop_migration('mg_settings');
SELECT softmig.drop_migration('mg_profiles');
SELECT softmig.drop_migration('mg_solo');
DROP SCHEMA mg, mg_v2 CASCADE;
