-- Owner frames: softmig runs its statements over the tables as their owner,
-- with search_path and row_security pinned, and plans its kept statements
-- for index access.  A write through a shape view enters a frame for the
-- view's owner and, inside it, the projection enters one for the other
-- table's owner; the inner frame finds the settings pinned and does not pin
-- them again.  What code inside sees, and what the session keeps, is the
-- same either way.
CREATE TABLE of_l (id int PRIMARY KEY, v text);
CREATE TABLE of_t (id int PRIMARY KEY, v text);
INSERT INTO of_l VALUES (1, 'a');
SELECT softmig.create_migration('of', 'of_l', 'of_t');
SELECT softmig.advance('of');
CALL softmig.backfill('of');

------------------------------------------------------------------ kept plans prefer the index
-- Tiny tables: planned freely, the projection's UPDATE of one row would
-- scan of_t sequentially, and keep that plan when of_t is large.  The
-- statements are planned (and planned again after the ANALYZE) as if
-- enable_seqscan were off, whatever the session says.
SET enable_seqscan = on;
ANALYZE of_l, of_t;
BEGIN;   -- (the counts below are pending until the transaction ends: compare within it)
SELECT seq_scan AS s0, idx_scan AS i0 FROM pg_stat_xact_user_tables WHERE relname = 'of_t' \gset
UPDATE of_l SET v = 'a1' WHERE id = 1;
SELECT seq_scan - :s0 AS seq_scans, idx_scan - :i0 AS index_scans
  FROM pg_stat_xact_user_tables WHERE relname = 'of_t';
COMMIT;
SHOW enable_seqscan;

------------------------------------------------------------------ settings inside nested frames, and after
-- A trigger on legacy (its owner's code) records what it sees; once, in the
-- inner frame of a write through a view, it changes search_path with SET
-- LOCAL.  None of it reaches the session.  (A plain SET would, as a SET in a
-- function with a SET clause of its own does in PostgreSQL.)
CREATE TABLE of_seen (via text, search_path text, row_security text, work_mem text);
CREATE FUNCTION of_watch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.of_seen
    SELECT current_setting('application_name'), current_setting('search_path'),
           current_setting('row_security'),
           CASE WHEN current_setting('work_mem') = '64kB' THEN 'session' ELSE 'raised' END;
    IF current_setting('application_name') = 'view of the authority' THEN
        PERFORM set_config('search_path', 'public', true);   -- in the inner frame
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER of_watch AFTER INSERT OR UPDATE ON of_l FOR EACH STATEMENT EXECUTE FUNCTION of_watch();

SET search_path = public, softmig;
SET row_security = on;
SET work_mem = '64kB';
SET enable_seqscan = off;
SET softmig.mirror_work_mem = 1024;
SELECT softmig.advance('of', reason => 'owner frames', force => true);   -- new_write: of_t writes
CREATE SCHEMA of_v1;
CREATE SCHEMA of_v2;
SELECT softmig.create_shape_views('of', 'of_v1', 'of_v2');

SET application_name = 'table';
UPDATE of_t SET v = 'b' WHERE id = 1;                       -- one frame
SET application_name = 'view of the authority';
UPDATE of_v2.of_t SET v = 'c' WHERE id = 1;                 -- view frame, projection frame inside
SET application_name = 'view of the other shape';
UPDATE of_v1.of_l SET v = 'd' WHERE id = 1;
SET application_name = 'view, big statement';
INSERT INTO of_v2.of_t SELECT g, 'big' FROM generate_series(2, 2101) g;   -- work_mem raised inside
RESET application_name;
SELECT * FROM of_seen ORDER BY via;
SHOW search_path;
SHOW row_security;
SHOW work_mem;
SHOW enable_seqscan;
SELECT count(*) AS rows_alike FROM of_l JOIN of_t USING (id, v);

RESET search_path;
RESET row_security;
RESET work_mem;
RESET enable_seqscan;
RESET softmig.mirror_work_mem;
SELECT softmig.drop_shape_views('of');
DROP SCHEMA of_v1, of_v2;
SELECT softmig.rollback('of', 'done');
SELECT softmig.rollback('of', 'done');
SELECT softmig.drop_migration('of');
DROP TABLE of_l, of_t, of_seen;
DROP FUNCTION of_watch();
