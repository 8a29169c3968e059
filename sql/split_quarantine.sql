-- quarantine and release of an entity of a split or a merge: quarantining
-- it through any member quarantines it in every member (writes to any of
-- their tables refused, parity of each skips it); release through any
-- member re-syncs it member by member, owner first, the attribute members
-- filling or clearing their columns of the shared row, never deleting it
\pset null '(null)'
CREATE SCHEMA sq;
CREATE SCHEMA sq_v2;
-- a split: users -> v2.users + v2.addresses
CREATE TABLE sq.users (id int PRIMARY KEY, email text, city text);
CREATE TABLE sq_v2.users (id int PRIMARY KEY, email text);
CREATE TABLE sq_v2.addresses (id int PRIMARY KEY, city text);
INSERT INTO sq.users VALUES (1, 'a@x', 'rome'), (2, 'b@x', NULL), (3, 'c@x', 'oslo');
SELECT softmig.create_migration('sq_users', 'sq.users', 'sq_v2.users');
SELECT softmig.create_migration('sq_addr', 'sq.users', 'sq_v2.addresses',
    options => '{"attribute_of": "sq_users"}');
SELECT softmig.create_group('sq_u', ARRAY['sq_users', 'sq_addr']);
-- a merge: profiles + settings -> v2.accounts
CREATE TABLE sq.profiles (user_id int PRIMARY KEY, bio text);
CREATE TABLE sq.settings (user_id int PRIMARY KEY, theme text);
CREATE TABLE sq_v2.accounts (user_id int PRIMARY KEY, bio text, theme text);
INSERT INTO sq.profiles VALUES (1, 'ann'), (2, 'bob'), (3, 'cy');
INSERT INTO sq.settings VALUES (1, 'dark'), (3, 'light');
SELECT softmig.create_migration('sq_profiles', 'sq.profiles', 'sq_v2.accounts');
SELECT softmig.create_migration('sq_settings', 'sq.settings', 'sq_v2.accounts',
    options => '{"attribute_of": "sq_profiles"}');
SELECT softmig.create_group('sq_a', ARRAY['sq_profiles', 'sq_settings']);

CREATE FUNCTION t.sq_quarantined() RETURNS TABLE (name text, key jsonb, reason text)
LANGUAGE sql AS $$
    SELECT m.name, q.key, q.reason FROM softmig.quarantine q JOIN softmig.migrations m ON m.id = q.migration_id
     WHERE m.name LIKE 'sq\_%' ORDER BY 1, 2
$$;
CREATE FUNCTION t.sq_rows() RETURNS TABLE (tbl text, r text)
LANGUAGE sql AS $$
    SELECT 'legacy users', u::text FROM sq.users u
    UNION ALL SELECT 'v2.users', u::text FROM sq_v2.users u
    UNION ALL SELECT 'v2.addresses', a::text FROM sq_v2.addresses a
    UNION ALL SELECT 'profiles', p::text FROM sq.profiles p
    UNION ALL SELECT 'settings', s::text FROM sq.settings s
    UNION ALL SELECT 'v2.accounts', a::text FROM sq_v2.accounts a
    ORDER BY 1, 2
$$;
-- the differences parity finds, every member
CREATE FUNCTION t.sq_parity() RETURNS TABLE (name text, kind text, key jsonb, field text)
LANGUAGE sql AS $$
    SELECT x, p.kind, p.key, p.field
      FROM unnest(ARRAY['sq_users', 'sq_addr', 'sq_profiles', 'sq_settings']) x,
           LATERAL softmig.parity(x) p ORDER BY 1, 3, 4
$$;
-- the writes of entity 1 to every table of the split and the merge (which
-- member's trigger refuses a write to the shared table first depends on
-- the migrations' ids: the message names either)
CREATE FUNCTION t.sq_writes() RETURNS TABLE (stmt text, state text, message text)
LANGUAGE sql AS $$
    SELECT s, e.state,
           regexp_replace(e.message, '"accounts" refused: (.*)migration "sq_(profiles|settings)"',
                          '"accounts" refused: \1migration "sq_profiles" or "sq_settings"')
      FROM unnest(ARRAY['UPDATE sq.users SET city = city WHERE id = 1',
                        'UPDATE sq_v2.users SET email = email WHERE id = 1',
                        'UPDATE sq_v2.addresses SET city = city WHERE id = 1',
                        'UPDATE sq.profiles SET bio = bio WHERE user_id = 1',
                        'UPDATE sq.settings SET theme = theme WHERE user_id = 1',
                        'UPDATE sq_v2.accounts SET theme = theme WHERE user_id = 1']) s,
           LATERAL t.err(s) e
     ORDER BY 1
$$;

-- legacy: quarantine through an attribute member covers the owner too
SELECT softmig.quarantine('sq_addr', '{"id": 1}', 'legacy check');
SELECT softmig.quarantine('sq_settings', '{"user_id": 1}', 'legacy check');
SELECT * FROM t.sq_quarantined();
-- quarantined once, in any member
SELECT * FROM t.err($$SELECT softmig.quarantine('sq_users', '{"id": 1}', 'again')$$);
SELECT * FROM t.err($$SELECT softmig.quarantine('sq_settings', '{"user_id": 1}', 'again')$$);
SELECT * FROM t.err($$SELECT softmig.release('sq_addr', '{"id": 2}')$$);
SELECT * FROM t.err($$SELECT softmig.release('sq_addr', '{"user_id": 1}')$$);
SELECT * FROM t.sq_writes();
-- release through the owner releases every member
SELECT softmig.release('sq_users', '{"id": 1}');
SELECT softmig.release('sq_settings', '{"user_id": 1}');
SELECT * FROM t.sq_quarantined();

SELECT softmig.advance_group('sq_u');
SELECT softmig.advance_group('sq_a');
SET client_min_messages = warning;
CALL softmig.backfill('sq_users');
CALL softmig.backfill('sq_addr');
CALL softmig.backfill('sq_profiles');
CALL softmig.backfill('sq_settings');
RESET client_min_messages;

-- mirrored
SELECT softmig.quarantine('sq_addr', '{"id": 1}', 'mirrored check');
SELECT softmig.quarantine('sq_profiles', '{"user_id": 1}', 'mirrored check');
SELECT softmig.quarantine('sq_settings', '{"user_id": 3}', 'mirrored check');
SELECT softmig.quarantine('sq_addr', '{"id": 3}', 'mirrored check');
SELECT * FROM t.sq_quarantined();
SELECT * FROM t.sq_writes();
-- another entity is written as usual
UPDATE sq.users SET city = 'bern' WHERE id = 2;
UPDATE sq.settings SET theme = 'blue' WHERE user_id = 2;
-- parity of every member skips the quarantined entities: a broken
-- projection (written around the triggers) is not reported
SET session_replication_role = replica;
UPDATE sq_v2.users SET email = 'bad' WHERE id = 1;
UPDATE sq_v2.addresses SET city = 'bad' WHERE id = 1;
DELETE FROM sq.settings WHERE user_id = 1;            -- its attribute row gone
DELETE FROM sq.profiles WHERE user_id = 3;            -- the entity gone
DELETE FROM sq.users WHERE id = 3;                    -- the entity gone
RESET session_replication_role;
SELECT * FROM t.sq_parity();
-- release through the attribute member: both members re-projected though
-- the touch changes no column either maps
SELECT softmig.release('sq_addr', '{"id": 1}');
-- the merge: the profile is there, the settings row is not: theme is
-- cleared, the accounts row stays
SELECT softmig.release('sq_settings', '{"user_id": 1}');
-- the profile is gone: the accounts row goes, whatever settings still has
SELECT softmig.release('sq_profiles', '{"user_id": 3}');
-- the legacy user is gone: both target rows go
SELECT softmig.release('sq_addr', '{"id": 3}');
SELECT * FROM t.sq_quarantined();
SELECT * FROM t.sq_rows();
SELECT * FROM t.sq_parity();
-- (the settings row of entity 3, its profile gone, is an orphan: parity of
-- the settings member reports it, as for any orphan attribute row)
-- every member's history records the release, naming the member called
SELECT m.name, h.action, h.detail FROM softmig.history_log h JOIN softmig.migrations m ON m.id = h.migration_id
 WHERE m.name IN ('sq_users', 'sq_addr') AND h.action = 'release'
 ORDER BY h.id DESC LIMIT 2;
-- entity 3 of the split and of the merge is whole again
INSERT INTO sq.users VALUES (3, 'c@x', 'oslo');
DELETE FROM sq.settings WHERE user_id = 3;
INSERT INTO sq.profiles VALUES (3, 'cy');
INSERT INTO sq.settings VALUES (1, 'dark'), (3, 'light');

SELECT softmig.advance_group('sq_u');
SELECT softmig.advance_group('sq_a');

-- new_write: the target tables are the authority
SELECT softmig.quarantine('sq_users', '{"id": 1}', 'new_write check');
SELECT softmig.quarantine('sq_users', '{"id": 3}', 'new_write check');
SELECT softmig.quarantine('sq_settings', '{"user_id": 1}', 'new_write check');
SELECT softmig.quarantine('sq_profiles', '{"user_id": 3}', 'new_write check');
SELECT * FROM t.sq_writes();
SET session_replication_role = replica;
UPDATE sq.users SET email = 'bad', city = 'bad' WHERE id = 1;
DELETE FROM sq_v2.addresses WHERE id = 3;             -- its attribute row gone
UPDATE sq.settings SET theme = 'bad' WHERE user_id = 1;
DELETE FROM sq_v2.accounts WHERE user_id = 3;          -- the entity gone
RESET session_replication_role;
SELECT * FROM t.sq_parity();
SELECT softmig.release('sq_addr', '{"id": 1}');
-- the address is gone, the user is not: street and city are cleared on
-- legacy, the legacy row stays
SELECT softmig.release('sq_addr', '{"id": 3}');
SELECT softmig.release('sq_profiles', '{"user_id": 1}');
-- the account is gone: both legacy rows go
SELECT softmig.release('sq_settings', '{"user_id": 3}');
SELECT * FROM t.sq_quarantined();
SELECT * FROM t.sq_rows();
SELECT * FROM t.sq_parity();

-- new_read, then cutover: quarantine and release work alike (nothing is
-- projected in cutover, release re-syncs nothing)
SELECT softmig.advance_group('sq_u');
SELECT softmig.quarantine('sq_addr', '{"id": 2}', 'new_read check');
SELECT * FROM t.sq_quarantined();
SET session_replication_role = replica;
UPDATE sq.users SET city = NULL WHERE id = 2;
RESET session_replication_role;
SELECT softmig.release('sq_users', '{"id": 2}');
SELECT * FROM sq.users WHERE id = 2;
SET client_min_messages = warning;      -- without preloading: a notice about readers
SELECT softmig.advance_group('sq_u');
RESET client_min_messages;
SELECT softmig.quarantine('sq_addr', '{"id": 2}', 'cutover check');
SELECT * FROM t.sq_quarantined();
SELECT softmig.release('sq_addr', '{"id": 2}');
SELECT * FROM t.sq_quarantined();

-- a merge whose members name the entity by different legacy keys
CREATE TABLE sq.prefs (uid int PRIMARY KEY, lang text);
CREATE TABLE sq.notes (user_id int PRIMARY KEY, note text);
CREATE TABLE sq_v2.people (user_id int PRIMARY KEY, lang text, note text);
SELECT softmig.create_migration('sq_notes', 'sq.notes', 'sq_v2.people');
SELECT softmig.create_migration('sq_prefs', 'sq.prefs', 'sq_v2.people',
    forward => '{"user_id": "uid"}', backward => '{"uid": "user_id"}',
    options => '{"attribute_of": "sq_notes"}');
SELECT * FROM t.err($$SELECT softmig.quarantine('sq_notes', '{"user_id": 1}', 'check')$$);
SELECT * FROM t.err($$SELECT softmig.quarantine('sq_prefs', '{"uid": 1}', 'check')$$);
SELECT count(*) FROM t.sq_quarantined();

-- only the owner of every member's tables quarantines or releases: owning
-- the two tables of the address member is not enough
CREATE ROLE sq_owner;
GRANT USAGE ON SCHEMA sq, sq_v2 TO sq_owner;
ALTER TABLE sq.users OWNER TO sq_owner;
ALTER TABLE sq_v2.addresses OWNER TO sq_owner;
SET ROLE sq_owner;
SELECT * FROM t.err($$SELECT softmig.quarantine('sq_addr', '{"id": 1}', 'check')$$);
RESET ROLE;
ALTER TABLE sq_v2.users OWNER TO sq_owner;
SET ROLE sq_owner;
SELECT softmig.quarantine('sq_addr', '{"id": 1}', 'check');
RESET ROLE;
ALTER TABLE sq_v2.users OWNER TO CURRENT_USER;
SET ROLE sq_owner;
SELECT * FROM t.err($$SELECT softmig.release('sq_addr', '{"id": 1}')$$);
RESET ROLE;
SELECT softmig.release('sq_addr', '{"id": 1}');
ALTER TABLE sq.users OWNER TO CURRENT_USER;
ALTER TABLE sq_v2.addresses OWNER TO CURRENT_USER;

-- clean up
SELECT softmig.rollback_group('sq_a', 'clean up');
SELECT softmig.rollback_group('sq_a', 'clean up');
SELECT softmig.drop_group('sq_u');
SELECT softmig.drop_group('sq_a');
SELECT softmig.drop_migration(x) FROM unnest(ARRAY['sq_addr', 'sq_users', 'sq_settings', 'sq_profiles', 'sq_prefs', 'sq_notes']) x;
DROP FUNCTION t.sq_quarantined(), t.sq_rows(), t.sq_writes(), t.sq_parity();
DROP SCHEMA sq, sq_v2 CASCADE;
DROP ROLE sq_owner;
