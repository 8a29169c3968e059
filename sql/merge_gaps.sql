-- merge: what an attribute member does with absent attribute rows
-- (doc/shapes.md "Merge")
\pset null '(null)'
CREATE SCHEMA mgg;
CREATE SCHEMA mgg_v2;
CREATE TABLE mgg.profiles (user_id int PRIMARY KEY, bio text);
CREATE TABLE mgg.settings (user_id int PRIMARY KEY, theme text, font text);
CREATE TABLE mgg_v2.accounts (user_id int PRIMARY KEY, bio text, theme text, font text);
-- the target was loaded before mirroring began ...
INSERT INTO mgg.profiles SELECT g, 'p' || g FROM generate_series(1, 6) g;
INSERT INTO mgg.settings VALUES (1, 'dark', 'mono'), (2, 'light', NULL), (3, 'blue', 'sans'), (4, 'red', NULL);
INSERT INTO mgg_v2.accounts SELECT p.user_id, p.bio, s.theme, s.font
  FROM mgg.profiles p LEFT JOIN mgg.settings s USING (user_id);
-- ... and legacy changed since: settings 3 and 4 are gone, 2 has a new
-- theme; the target kept the old values
DELETE FROM mgg.settings WHERE user_id IN (3, 4);
UPDATE mgg.settings SET theme = 'grey' WHERE user_id = 2;

CREATE TABLE mgg.writes (tbl text, op text, id int);
CREATE FUNCTION mgg.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mgg.writes VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END);
    RETURN NULL;
END $$;
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON mgg.profiles FOR EACH ROW EXECUTE FUNCTION mgg.count_write();
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON mgg.settings FOR EACH ROW EXECUTE FUNCTION mgg.count_write();
CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON mgg_v2.accounts FOR EACH ROW EXECUTE FUNCTION mgg.count_write();
CREATE FUNCTION mgg.writes() RETURNS TABLE (tbl text, op text, id int) LANGUAGE sql AS $$
    WITH w AS (DELETE FROM mgg.writes RETURNING *) SELECT * FROM w ORDER BY 1, 2, 3
$$;
CREATE FUNCTION mgg.entity() RETURNS TABLE (user_id int, bio text, theme text, font text,
                                            v2_bio text, v2_theme text, v2_font text) LANGUAGE sql AS $$
    SELECT coalesce(p.user_id, s.user_id, a.user_id), p.bio, s.theme, s.font, a.bio, a.theme, a.font
      FROM mgg.profiles p
      FULL JOIN mgg.settings s ON s.user_id = p.user_id
      FULL JOIN mgg_v2.accounts a ON a.user_id = coalesce(p.user_id, s.user_id)
     ORDER BY 1
$$;

SELECT softmig.create_migration('mgg_profiles', 'mgg.profiles', 'mgg_v2.accounts');
SELECT softmig.create_migration('mgg_settings', 'mgg.settings', 'mgg_v2.accounts',
    options => '{"attribute_of": "mgg_profiles"}');
SELECT softmig.create_group('mgg', ARRAY['mgg_profiles', 'mgg_settings']);
SELECT softmig.advance_group('mgg');
SELECT * FROM mgg.writes();

-- the backfill of the attribute member writes only the rows whose values
-- differ (2: the new theme), and clears what the target kept of deleted
-- settings rows (3 and 4); 1, 5 and 6 get no new row version
SET client_min_messages = warning;
CALL softmig.backfill('mgg_profiles', batch_size => 2);
SELECT * FROM mgg.writes();
CALL softmig.backfill('mgg_settings', batch_size => 1);
RESET client_min_messages;
SELECT * FROM mgg.writes();
SELECT * FROM mgg.entity();
SELECT count(*) AS differences FROM softmig.parity('mgg_settings');
SELECT rows_removed FROM softmig.backfill_progress p JOIN softmig.migrations m ON m.id = p.migration_id
 WHERE m.name = 'mgg_settings';
-- a second backfill has nothing to write
SET client_min_messages = warning;
CALL softmig.backfill('mgg_settings');
RESET client_min_messages;
SELECT * FROM mgg.writes();

-- a settings row whose profile does not exist (an orphan: legacy can
-- hold it, the target cannot); it keeps parity from being clean, so the
-- group is moved on with force
INSERT INTO mgg.settings VALUES (9, 'orphan', 'serif'), (10, 'orphan', NULL);
SELECT kind, key FROM softmig.parity('mgg_settings') ORDER BY key::text;
SELECT softmig.advance_group('mgg', reason => 'orphans 9 and 10 are known', force => true);
SELECT * FROM mgg.writes();

-- new_write: an accounts row whose attribute columns are all NULL makes no
-- settings row (an absent settings row is what NULL means) ...
INSERT INTO mgg_v2.accounts VALUES (7, 'p7', NULL, NULL);
INSERT INTO mgg_v2.accounts SELECT g, 'p' || g, CASE WHEN g % 2 = 0 THEN 't' || g END, NULL
  FROM generate_series(11, 14) g;
SELECT * FROM mgg.writes();
-- ... one with a value does
UPDATE mgg_v2.accounts SET font = 'mono' WHERE user_id = 7;
SELECT * FROM mgg.writes();
-- a settings row once there stays, its columns set to NULL
UPDATE mgg_v2.accounts SET font = NULL WHERE user_id = 7;
UPDATE mgg_v2.accounts SET theme = NULL WHERE user_id IN (12, 14);
SELECT * FROM mgg.writes();
-- an orphan settings row does not block a write of its entity: the
-- accounts row takes it over (the orphan's values are replaced, to NULL too)
INSERT INTO mgg_v2.accounts VALUES (9, 'p9', NULL, NULL);
INSERT INTO mgg_v2.accounts VALUES (10, 'p10', 'pink', NULL);
SELECT * FROM mgg.writes();
SELECT * FROM mgg.entity();
SELECT count(*) AS differences FROM softmig.parity('mgg_profiles');
SELECT count(*) AS differences FROM softmig.parity('mgg_settings');
-- deleting the accounts row deletes both legacy rows, a settings row or not
DELETE FROM mgg_v2.accounts WHERE user_id IN (9, 11);
SELECT * FROM mgg.writes();

-- a foreign key from settings to profiles that does not cascade: in
-- new_write the owner's projection deletes the settings row in the same
-- statement as the profile, so the key holds (doc/shapes.md "Limits of a
-- merge"); one row (the one-row plan) and several (the statement's plan)
INSERT INTO mgg_v2.accounts VALUES (20, 'p20', 't20'), (21, 'p21', 't21'), (22, 'p22', NULL);
ALTER TABLE mgg.settings ADD CONSTRAINT settings_profile FOREIGN KEY (user_id) REFERENCES mgg.profiles;
DELETE FROM mgg_v2.accounts WHERE user_id = 10;
DELETE FROM mgg_v2.accounts WHERE user_id IN (20, 22);
ALTER TABLE mgg.settings DROP CONSTRAINT settings_profile;
ALTER TABLE mgg.settings ADD CONSTRAINT settings_profile FOREIGN KEY (user_id) REFERENCES mgg.profiles ON DELETE RESTRICT;
DELETE FROM mgg_v2.accounts WHERE user_id = 21;
SELECT * FROM mgg.writes();
SELECT count(*) AS differences FROM softmig.parity('mgg_settings');
-- release of an entity the target no longer holds: the re-sync deletes
-- the settings row before the profile, so the key holds there too
INSERT INTO mgg_v2.accounts VALUES (24, 'p24', 't24');
SELECT softmig.quarantine('mgg_profiles', '{"user_id": 24}', 'check');
SET session_replication_role = replica;
DELETE FROM mgg_v2.accounts WHERE user_id = 24;         -- the entity gone
RESET session_replication_role;
SELECT * FROM mgg.writes();
SELECT softmig.release('mgg_profiles', '{"user_id": 24}');
SELECT * FROM mgg.writes();
SELECT * FROM mgg.entity() WHERE user_id = 24;
SELECT count(*) AS differences FROM softmig.parity('mgg_settings');
-- a cascading key cascades, as before
ALTER TABLE mgg.settings DROP CONSTRAINT settings_profile;
ALTER TABLE mgg.settings ADD CONSTRAINT settings_profile FOREIGN KEY (user_id) REFERENCES mgg.profiles ON DELETE CASCADE;
INSERT INTO mgg_v2.accounts VALUES (23, 'p23', 't23');
DELETE FROM mgg_v2.accounts WHERE user_id = 23;
SELECT * FROM mgg.writes();
SELECT count(*) AS differences FROM softmig.parity('mgg_settings');

-- clean up
SELECT softmig.rollback_group('mgg', 'clean up');
SELECT softmig.rollback_group('mgg', 'clean up');
SELECT softmig.drop_group('mgg');
SELECT softmig.drop_migration('mgg_settings');
SELECT softmig.drop_migration('mgg_profiles');
DROP SCHEMA mgg, mgg_v2 CASCADE;
