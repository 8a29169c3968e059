-- Reentrancy is per migration: a write made while softmig mirrors or projects
-- for migration A, to a table of migration B, is carried over or refused by
-- B's own rules (softmig only steps aside for its own writes of A).
\pset null '(null)'
CREATE SCHEMA re;
SET search_path = re, public;
CREATE TABLE re.a_l (id int PRIMARY KEY, v text);
CREATE TABLE re.a_t (id int PRIMARY KEY, v text);
CREATE TABLE re.b_l (id int PRIMARY KEY, a_id int REFERENCES re.a_l ON DELETE CASCADE, n int);
CREATE TABLE re.b_t (id int PRIMARY KEY, a_id int, n int);
SELECT softmig.create_migration('re_a', 're.a_l', 're.a_t');
SELECT softmig.create_migration('re_b', 're.b_l', 're.b_t');
SELECT softmig.advance('re_a');
SELECT softmig.advance('re_b');
INSERT INTO re.a_l VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO re.b_l VALUES (10, 1, 0), (20, 2, 0), (30, 3, 0);

-- re.diff(): rows of B that differ between its two tables
CREATE FUNCTION re.diff() RETURNS TABLE (side text, id int, a_id int, n int) LANGUAGE sql AS $$
    (SELECT 'only legacy', * FROM re.b_l EXCEPT SELECT 'only legacy', * FROM re.b_t)
    UNION ALL
    (SELECT 'only target', * FROM re.b_t EXCEPT SELECT 'only target', * FROM re.b_l)
    ORDER BY 2, 1
$$;

------------------------------------------------------------------ an application trigger on A's legacy table writes B's legacy table
CREATE FUNCTION re.count_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE re.b_l SET n = n + 1 WHERE a_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER count_touch AFTER UPDATE ON re.a_l FOR EACH ROW EXECUTE FUNCTION re.count_touch();
-- A in new_write: a write to A's target is projected into A's legacy table,
-- where the application trigger writes B's legacy table; B is in mirrored,
-- so that write reaches B's target
SELECT softmig.advance('re_a', force => true, reason => 'test');
UPDATE re.a_t SET v = 'ONE' WHERE id = 1;
SELECT * FROM re.b_l ORDER BY id;
SELECT * FROM re.diff();
-- B in new_write too: its legacy table is now B's projection, so the nested
-- write is refused and A's write with it
SELECT softmig.advance('re_b', force => true, reason => 'test');
SELECT * FROM t.err($$UPDATE re.a_t SET v = 'TWO' WHERE id = 2$$);
SELECT v FROM re.a_t WHERE id = 2;
SELECT softmig.rollback('re_b');
DROP TRIGGER count_touch ON re.a_l;

------------------------------------------------------------------ ON DELETE CASCADE from a projected delete
-- deleting from A's target deletes from A's legacy table (projection), which
-- cascades into B's legacy table; B (mirrored) carries the cascade to its target
DELETE FROM re.a_t WHERE id = 3;
SELECT * FROM re.b_l ORDER BY id;
SELECT * FROM re.b_t ORDER BY id;
SELECT * FROM re.diff();

------------------------------------------------------------------ a write nested in A's mirror, to B's non-authoritative table
SELECT softmig.rollback('re_a');
-- an application trigger on A's target fires while softmig mirrors into it
CREATE FUNCTION re.shadow_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE re.b_t SET n = n + 100 WHERE a_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER shadow_count AFTER INSERT OR UPDATE ON re.a_t FOR EACH ROW EXECUTE FUNCTION re.shadow_count();
-- B is mirrored: its target is B's projection and refuses the nested write
SELECT * FROM t.err($$UPDATE re.a_l SET v = 'uno' WHERE id = 1$$);
SELECT v FROM re.a_t WHERE id = 1;
DROP TRIGGER shadow_count ON re.a_t;
-- the same trigger writing B's legacy table is mirrored into B's target
CREATE FUNCTION re.legacy_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE re.b_l SET n = n + 100 WHERE a_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER legacy_count AFTER INSERT OR UPDATE ON re.a_t FOR EACH ROW EXECUTE FUNCTION re.legacy_count();
UPDATE re.a_l SET v = 'uno' WHERE id = 1;
SELECT * FROM re.b_t ORDER BY id;
SELECT * FROM re.diff();
DROP TRIGGER legacy_count ON re.a_t;

------------------------------------------------------------------ A's own writes still never echo
INSERT INTO re.a_l VALUES (4, 'four');
UPDATE re.a_l SET v = 'FOUR' WHERE id = 4;
SELECT * FROM re.a_t ORDER BY id;
SELECT count(*) AS history_rows FROM softmig.history('re_a') WHERE action = 'override';

SELECT softmig.rollback('re_a');
SELECT softmig.rollback('re_b');
SELECT softmig.drop_migration('re_a');
SELECT softmig.drop_migration('re_b');
RESET search_path;
DROP SCHEMA re CASCADE;
