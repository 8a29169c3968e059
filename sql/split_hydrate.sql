-- hydrate on the members of a split and of a merge (doc/shapes.md "Hydrate
-- of a split or a merge"): each member hydrates the columns it owns; in
-- mirrored an entity the member's target lacks is re-synced from legacy in
-- every member, never inserted from the hydrated row; from new_write on the
-- write path carries hydrated columns to each member's legacy table
\pset null '(null)'
CREATE SCHEMA sh;
CREATE SCHEMA sh_v2;
-- a split: users -> v2.users + v2.addresses (verified: a target-only column)
CREATE TABLE sh.users (id int PRIMARY KEY, email text, city text);
CREATE TABLE sh_v2.users (id int PRIMARY KEY, email text, score int);
CREATE TABLE sh_v2.addresses (id int PRIMARY KEY, city text, verified boolean);
INSERT INTO sh.users VALUES (1, 'a@x', 'rome'), (2, 'b@x', NULL), (3, 'c@x', 'oslo');
SELECT softmig.create_migration('sh_users', 'sh.users', 'sh_v2.users');
SELECT softmig.create_migration('sh_addr', 'sh.users', 'sh_v2.addresses',
    options => '{"attribute_of": "sh_users"}');
SELECT softmig.create_group('sh_u', ARRAY['sh_users', 'sh_addr']);
-- a merge: profiles + settings -> v2.accounts (tier: a column no member maps)
CREATE TABLE sh.profiles (user_id int PRIMARY KEY, bio text);
CREATE TABLE sh.settings (user_id int PRIMARY KEY, theme text);
CREATE TABLE sh_v2.accounts (user_id int PRIMARY KEY, bio text, theme text, tier text);
INSERT INTO sh.profiles VALUES (1, 'ann'), (2, 'bob'), (3, 'cy');
INSERT INTO sh.settings VALUES (1, 'dark'), (3, 'blue');
SELECT softmig.create_migration('sh_profiles', 'sh.profiles', 'sh_v2.accounts');
SELECT softmig.create_migration('sh_settings', 'sh.settings', 'sh_v2.accounts',
    options => '{"attribute_of": "sh_profiles"}');
SELECT softmig.create_group('sh_a', ARRAY['sh_profiles', 'sh_settings']);
SELECT softmig.advance_group('sh_u');
SELECT softmig.advance_group('sh_a');
-- entity 3 is left out of the backfill: a gap the hydrate meets
SET session_replication_role = replica;
DELETE FROM sh.users WHERE id = 3;
DELETE FROM sh.profiles WHERE user_id = 3;
DELETE FROM sh.settings WHERE user_id = 3;
RESET session_replication_role;
SET client_min_messages = warning;
CALL softmig.backfill('sh_users');
CALL softmig.backfill('sh_addr');
CALL softmig.backfill('sh_profiles');
CALL softmig.backfill('sh_settings');
RESET client_min_messages;
SET session_replication_role = replica;
INSERT INTO sh.users VALUES (3, 'c@x', 'oslo');
INSERT INTO sh.profiles VALUES (3, 'cy');
INSERT INTO sh.settings VALUES (3, 'blue');
RESET session_replication_role;

------------------------------------------------------------------ bad input
-- a merge member names only its own columns; those no member maps are the owner's
SELECT * FROM t.err($$SELECT softmig.hydrate('sh_settings', '[{"user_id": 1, "bio": "x"}]', pg_current_snapshot())$$);
SELECT * FROM t.err($$SELECT softmig.hydrate('sh_settings', '[{"user_id": 1, "tier": "gold"}]', pg_current_snapshot())$$);
SELECT * FROM t.err($$SELECT softmig.hydrate('sh_profiles', '[{"user_id": 1, "theme": "x"}]', pg_current_snapshot())$$);
-- the usual checks hold for a member too
SELECT * FROM t.err($$SELECT softmig.hydrate('sh_addr', '[{"id": 1, "bogus": 1}]', pg_current_snapshot())$$);
SELECT * FROM t.err($$SELECT softmig.hydrate('sh_addr', '[{"city": "x"}]', pg_current_snapshot())$$);
-- nothing was written
SELECT * FROM sh_v2.accounts ORDER BY 1;

------------------------------------------------------------------ mirrored
-- the split's attribute member: its target-only column; entity 3's address
-- (missing) comes from legacy through the owner's re-sync, with its user
SELECT softmig.hydrate('sh_addr', '[{"id": 1, "verified": true, "city": "stale"},
                                    {"id": 3, "verified": false}]', pg_current_snapshot()) AS rows_changed;
SELECT u.id, u.email, a.city, a.verified FROM sh_v2.users u FULL JOIN sh_v2.addresses a USING (id) ORDER BY 1;
-- the split's owner: score on the target; a key legacy does not hold stays absent
SELECT softmig.hydrate('sh_users', '[{"id": 1, "score": 10}, {"id": 9, "score": 90}]', pg_current_snapshot()) AS rows_changed;
SELECT * FROM sh_v2.users ORDER BY 1;
-- the merge's attribute member in mirrored owns no target column: its
-- columns are legacy's, so nothing changes but the re-sync of entity 3,
-- which the owner creates with its theme
SELECT softmig.hydrate('sh_settings', '[{"user_id": 1, "theme": "stale"}, {"user_id": 3, "theme": "x"}]',
                       pg_current_snapshot()) AS rows_changed;
SELECT * FROM sh_v2.accounts ORDER BY 1;
-- the merge's owner takes tier, a column no member maps
SELECT softmig.hydrate('sh_profiles', '[{"user_id": 2, "tier": "gold", "bio": "stale"}]', pg_current_snapshot()) AS rows_changed;
SELECT * FROM sh_v2.accounts ORDER BY 1;
-- freshness: nothing here writes target columns live in mirrored, so the
-- per-field log decides, as for one table pair
SELECT action, detail - 'as_of' AS detail FROM softmig.history('sh_addr') WHERE action = 'hydrate';
SELECT count(*) AS differences FROM softmig.parity('sh_users');
SELECT count(*) AS differences FROM softmig.parity('sh_addr');
SELECT count(*) AS differences FROM softmig.parity('sh_profiles');
SELECT count(*) AS differences FROM softmig.parity('sh_settings');
-- a quarantined entity the target lacks is not re-synced (SM005): release does it
SET session_replication_role = replica;
INSERT INTO sh.profiles VALUES (4, 'dee');
RESET session_replication_role;
SELECT softmig.quarantine('sh_settings', '{"user_id": 4}', 'check');
SELECT state, message FROM t.err($$SELECT softmig.hydrate('sh_profiles', '[{"user_id": 4, "tier": "x"}]', pg_current_snapshot())$$);
SELECT softmig.release('sh_settings', '{"user_id": 4}');
SELECT softmig.hydrate('sh_profiles', '[{"user_id": 4, "tier": "x"}]', pg_current_snapshot()) AS rows_changed;
SELECT * FROM sh_v2.accounts WHERE user_id = 4;

------------------------------------------------------------------ new_write
SELECT softmig.advance_group('sh_u', reason => 'test');
SELECT softmig.advance_group('sh_a', reason => 'test');
SELECT pg_current_snapshot() AS snap \gset
-- a live write after the snapshot wins over the hydrated value
UPDATE sh_v2.accounts SET theme = 'live' WHERE user_id = 3;
SELECT softmig.hydrate('sh_settings', '[{"user_id": 1, "theme": "red"}, {"user_id": 2, "theme": "green"},
                                        {"user_id": 3, "theme": "old"}, {"user_id": 8, "theme": "gone"}]', :'snap') AS rows_changed;
SELECT * FROM sh_v2.accounts ORDER BY 1;
-- each legacy table took its own columns: settings 2 is created, profiles untouched
SELECT p.user_id, p.bio, s.theme FROM sh.profiles p FULL JOIN sh.settings s USING (user_id) ORDER BY 1;
SELECT softmig.hydrate('sh_profiles', '[{"user_id": 1, "bio": "ANN", "tier": "silver"}]', pg_current_snapshot()) AS rows_changed;
SELECT p.user_id, p.bio, s.theme FROM sh.profiles p FULL JOIN sh.settings s USING (user_id) ORDER BY 1;
SELECT softmig.hydrate('sh_addr', '[{"id": 2, "city": "lima"}]', pg_current_snapshot()) AS rows_changed;
SELECT softmig.hydrate('sh_users', '[{"id": 2, "email": "B@X"}]', pg_current_snapshot()) AS rows_changed;
SELECT * FROM sh.users ORDER BY 1;
SELECT count(*) AS differences FROM softmig.parity('sh_users');
SELECT count(*) AS differences FROM softmig.parity('sh_addr');
SELECT count(*) AS differences FROM softmig.parity('sh_profiles');
SELECT count(*) AS differences FROM softmig.parity('sh_settings');

------------------------------------------------------------------ other keys
-- a merge whose members name the entity by other legacy keys: hydrate works
-- on rows the target holds; an entity it lacks cannot be re-synced in every
-- member (0A000, as quarantine and release)
CREATE TABLE sh.bios (user_id int PRIMARY KEY, bio text);
CREATE TABLE sh.prefs (uid int PRIMARY KEY, lang text);
CREATE TABLE sh_v2.people (user_id int PRIMARY KEY, bio text, lang text, tier text);
INSERT INTO sh.bios VALUES (1, 'ann'), (2, 'bob');
SELECT softmig.create_migration('sh_bios', 'sh.bios', 'sh_v2.people');
SELECT softmig.create_migration('sh_prefs', 'sh.prefs', 'sh_v2.people',
    forward => '{"user_id": "uid"}', backward => '{"uid": "user_id"}', options => '{"attribute_of": "sh_bios"}');
SELECT softmig.create_group('sh_p', ARRAY['sh_bios', 'sh_prefs']);
SELECT softmig.advance_group('sh_p');
SET client_min_messages = warning;
CALL softmig.backfill('sh_bios');
CALL softmig.backfill('sh_prefs');
RESET client_min_messages;
SET session_replication_role = replica;
DELETE FROM sh_v2.people WHERE user_id = 2;
RESET session_replication_role;
SELECT softmig.hydrate('sh_bios', '[{"user_id": 1, "tier": "gold"}]', pg_current_snapshot()) AS rows_changed;
SELECT state, message FROM t.err($$SELECT softmig.hydrate('sh_bios', '[{"user_id": 2, "tier": "gold"}]', pg_current_snapshot())$$);
SELECT * FROM sh_v2.people ORDER BY 1;
SELECT softmig.rollback_group('sh_p', 'done');
SELECT softmig.drop_group('sh_p');
SELECT softmig.drop_migration(x) FROM unnest(ARRAY['sh_prefs', 'sh_bios']) x;

------------------------------------------------------------------ owners
-- a hydrate through one member needs the tables of every member
CREATE ROLE sh_owner;
GRANT USAGE ON SCHEMA sh, sh_v2 TO sh_owner;
ALTER TABLE sh.settings OWNER TO sh_owner;
ALTER TABLE sh_v2.accounts OWNER TO sh_owner;
SET ROLE sh_owner;
SELECT state, message, detail FROM t.err($$SELECT softmig.hydrate('sh_settings', '[{"user_id": 1, "theme": "x"}]', pg_current_snapshot())$$);
RESET ROLE;
ALTER TABLE sh.settings OWNER TO CURRENT_USER;
ALTER TABLE sh_v2.accounts OWNER TO CURRENT_USER;
REVOKE USAGE ON SCHEMA sh, sh_v2 FROM sh_owner;
DROP ROLE sh_owner;

SELECT softmig.rollback_group('sh_u', 'done');
SELECT softmig.rollback_group('sh_a', 'done');
SELECT softmig.rollback_group('sh_u', 'done');
SELECT softmig.rollback_group('sh_a', 'done');
SELECT softmig.drop_group('sh_u');
SELECT softmig.drop_group('sh_a');
SELECT softmig.drop_migration(x) FROM unnest(ARRAY['sh_addr', 'sh_users', 'sh_settings', 'sh_profiles']) x;
DROP SCHEMA sh, sh_v2 CASCADE;
