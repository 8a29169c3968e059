-- Partition DDL while a migration is managed: a partition created or attached
-- gets softmig's triggers at once (both sides, every state); what cannot be
-- carried over (a partition that brings or takes away rows) is refused.
\pset null '(null)'
CREATE SCHEMA pt;
SET search_path = pt, public;
CREATE TABLE pt.l (id int NOT NULL, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE pt.l_0 PARTITION OF pt.l FOR VALUES FROM (0) TO (100);
CREATE TABLE pt.t (id int NOT NULL, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE pt.t_0 PARTITION OF pt.t FOR VALUES FROM (0) TO (100);
SELECT softmig.create_migration('pt', 'pt.l', 'pt.t');
SELECT id AS pt_id FROM softmig.migrations WHERE name = 'pt' \gset

-- t.tg(rel): softmig's triggers on a relation, and whether each is plainly enabled
CREATE FUNCTION t.tg(rel regclass) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(regexp_replace(tgname, '^softmig_[0-9]+_', '') || ':' || tgenabled::text, ' ' ORDER BY tgname), 'none')
      FROM pg_trigger WHERE tgrelid = rel AND tgname ~ '^softmig_[0-9]+_'
$$;
CREATE FUNCTION pt.diff() RETURNS TABLE (side text, id int, v text) LANGUAGE sql AS $$
    (SELECT 'only legacy', * FROM pt.l EXCEPT SELECT 'only legacy', * FROM pt.t)
    UNION ALL
    (SELECT 'only target', * FROM pt.t EXCEPT SELECT 'only target', * FROM pt.l)
    ORDER BY 2, 1
$$;

------------------------------------------------------------------ legacy: partition DDL is not softmig's business
CREATE TABLE pt.l_legacy PARTITION OF pt.l FOR VALUES FROM (900) TO (1000);
INSERT INTO pt.l VALUES (950, 'pre');
SELECT t.tg('pt.l_legacy');
ALTER TABLE pt.l DETACH PARTITION pt.l_legacy;
DROP TABLE pt.l_legacy;
SELECT softmig.advance('pt');

------------------------------------------------------------------ mirrored: new partitions on both sides
CREATE TABLE pt.l_1 PARTITION OF pt.l FOR VALUES FROM (100) TO (200);
CREATE TABLE pt.t_1 PARTITION OF pt.t FOR VALUES FROM (100) TO (200);
SELECT t.tg('pt.l_1') AS l_1, t.tg('pt.t_1') AS t_1;
-- direct writes to the new legacy partition are mirrored ...
INSERT INTO pt.l_1 VALUES (101, 'direct'), (102, 'direct');
UPDATE pt.l_1 SET v = 'updated' WHERE id = 102;
INSERT INTO pt.l VALUES (150, 'through the parent');
SELECT * FROM pt.t ORDER BY id;
-- ... and the new target partition refuses them
SELECT state, message FROM t.err($$INSERT INTO pt.t_1 VALUES (120, 'no')$$);
SELECT state, message FROM t.err($$TRUNCATE pt.t_1$$);
SELECT state, message FROM t.err($$TRUNCATE pt.l_1$$);
-- a sub-partitioned partition: every level gets the triggers
CREATE TABLE pt.l_2 PARTITION OF pt.l FOR VALUES FROM (200) TO (300) PARTITION BY RANGE (id);
CREATE TABLE pt.l_2a PARTITION OF pt.l_2 FOR VALUES FROM (200) TO (250);
CREATE TABLE pt.t_2 PARTITION OF pt.t FOR VALUES FROM (200) TO (300);
SELECT t.tg('pt.l_2') AS l_2, t.tg('pt.l_2a') AS l_2a;
INSERT INTO pt.l_2a VALUES (210, 'leaf of a sub-partition');
SELECT * FROM pt.diff();
SELECT action, detail->>'table' AS tbl, detail->>'command' AS command
  FROM softmig.history('pt') WHERE action LIKE 'partition%';

-- ATTACH of an empty table: triggers, writes mirrored
CREATE TABLE pt.l_3 (LIKE pt.l INCLUDING ALL);
ALTER TABLE pt.l ATTACH PARTITION pt.l_3 FOR VALUES FROM (300) TO (400);
CREATE TABLE pt.t_3 (LIKE pt.t INCLUDING ALL);
ALTER TABLE pt.t ATTACH PARTITION pt.t_3 FOR VALUES FROM (300) TO (400);
SELECT t.tg('pt.l_3') AS l_3, t.tg('pt.t_3') AS t_3;
INSERT INTO pt.l_3 VALUES (301, 'attached');
-- ATTACH of a populated table is refused on either side: its rows would be
-- in one table only
CREATE TABLE pt.l_4 (LIKE pt.l INCLUDING ALL);
INSERT INTO pt.l_4 VALUES (401, 'would not reach the target');
SELECT state, message FROM t.err($$ALTER TABLE pt.l ATTACH PARTITION pt.l_4 FOR VALUES FROM (400) TO (500)$$);
CREATE TABLE pt.t_4 (LIKE pt.t INCLUDING ALL);
INSERT INTO pt.t_4 VALUES (401, 'not in legacy');
SELECT state, message FROM t.err($$ALTER TABLE pt.t ATTACH PARTITION pt.t_4 FOR VALUES FROM (400) TO (500)$$);
SELECT t.tg('pt.l_4') AS l_4, t.tg('pt.t_4') AS t_4;
-- attached empty, the rows inserted through the parent: mirrored
DELETE FROM pt.l_4;
ALTER TABLE pt.l ATTACH PARTITION pt.l_4 FOR VALUES FROM (400) TO (500);
DELETE FROM pt.t_4;
ALTER TABLE pt.t ATTACH PARTITION pt.t_4 FOR VALUES FROM (400) TO (500);
INSERT INTO pt.l VALUES (401, 'now mirrored');
SELECT * FROM pt.diff();

-- DETACH and DROP of a partition that holds rows are refused; empty, fine
SELECT state, message FROM t.err($$ALTER TABLE pt.l DETACH PARTITION pt.l_3$$);
SELECT state, message FROM t.err($$DROP TABLE pt.l_3$$);
SELECT state, message FROM t.err($$ALTER TABLE pt.t DETACH PARTITION pt.t_3$$);
SELECT state, message FROM t.err($$DROP TABLE pt.t_3$$);
-- a partition dropped other than by DROP TABLE is refused whatever it holds
CREATE SCHEMA pt_side;
CREATE TABLE pt_side.l_5 PARTITION OF pt.l FOR VALUES FROM (500) TO (600);
CREATE TABLE pt_side.t_5 PARTITION OF pt.t FOR VALUES FROM (500) TO (600);
INSERT INTO pt.l VALUES (501, 'in another schema');
SELECT state, message FROM t.err($$DROP SCHEMA pt_side CASCADE$$);
DELETE FROM pt.l WHERE id = 501;
SELECT state, message FROM t.err($$DROP SCHEMA pt_side CASCADE$$);
DROP TABLE pt_side.l_5, pt_side.t_5;
DROP SCHEMA pt_side;
DELETE FROM pt.l WHERE id BETWEEN 300 AND 399;
ALTER TABLE pt.l DETACH PARTITION pt.l_3;
SELECT t.tg('pt.l_3') AS detached_l_3;
DROP TABLE pt.l_3;
SELECT state FROM t.err($$DROP TABLE pt.t_3$$);
SELECT (softmig.status('pt')->'triggers')->>'healthy' AS healthy;
SELECT * FROM pt.diff();

------------------------------------------------------------------ new_write and new_read: the target is the authority
SELECT softmig.advance('pt', force => true, reason => 'test');
CREATE TABLE pt.t_6 PARTITION OF pt.t FOR VALUES FROM (600) TO (700);
CREATE TABLE pt.l_6 PARTITION OF pt.l FOR VALUES FROM (600) TO (700);
INSERT INTO pt.t_6 VALUES (601, 'projected from a new target partition');
SELECT state, message FROM t.err($$INSERT INTO pt.l_6 VALUES (602, 'no')$$);
SELECT * FROM pt.l WHERE id >= 600;
SELECT state, message FROM t.err($$ALTER TABLE pt.t DETACH PARTITION pt.t_6$$);
SELECT softmig.advance('pt', force => true, reason => 'test');
CREATE TABLE pt.t_7 (LIKE pt.t INCLUDING ALL);
INSERT INTO pt.t_7 VALUES (701, 'x');
SELECT state, message FROM t.err($$ALTER TABLE pt.t ATTACH PARTITION pt.t_7 FOR VALUES FROM (700) TO (800)$$);

------------------------------------------------------------------ cutover: the target is a plain table, legacy is frozen
SELECT softmig.advance('pt', force => true, reason => 'test');
ALTER TABLE pt.t ATTACH PARTITION pt.t_7 FOR VALUES FROM (700) TO (800);
SELECT t.tg('pt.t_7') AS t_7;
CREATE TABLE pt.l_7 (LIKE pt.l INCLUDING ALL);
INSERT INTO pt.l_7 VALUES (701, 'x');
SELECT state, message FROM t.err($$ALTER TABLE pt.l ATTACH PARTITION pt.l_7 FOR VALUES FROM (700) TO (800)$$);
SELECT state, message FROM t.err($$INSERT INTO pt.l_6 VALUES (603, 'frozen')$$);
ALTER TABLE pt.t DETACH PARTITION pt.t_7;
SELECT t.tg('pt.t_7') AS detached_t_7;
SELECT (softmig.status('pt')->'triggers')->>'healthy' AS healthy;

SELECT softmig.drop_migration('pt');
SELECT count(*) AS leftover_triggers FROM pg_trigger WHERE tgname ~ ('^softmig_' || :pt_id || '_');
RESET search_path;
DROP SCHEMA pt CASCADE;
DROP FUNCTION t.tg(regclass);
