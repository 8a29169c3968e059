-- Routed views go to application schemas: never into softmig's own schema
-- (whose objects the extension's functions trust) or a system schema.
CREATE TABLE sg_l (id int PRIMARY KEY, v text);
CREATE TABLE sg_t (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('sg', 'sg_l', 'sg_t');
SELECT * FROM t.err($$SELECT softmig.create_read_view('sg', 'softmig.sg_v')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('sg', 'softmig."migrations_v"', 'new')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('sg', 'pg_catalog.sg_v')$$);
SELECT * FROM t.err($$SELECT softmig.create_read_view('sg', 'information_schema.sg_v')$$);
SELECT count(*) AS views_in_softmig FROM pg_class WHERE relnamespace = 'softmig'::regnamespace AND relkind = 'v' AND relname LIKE 'sg%';
-- an application schema is fine
SELECT softmig.create_read_view('sg', 'public.sg_v');
SELECT * FROM sg_v;
DROP VIEW sg_v;
SELECT softmig.drop_migration('sg');
DROP TABLE sg_l, sg_t;
