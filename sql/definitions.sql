-- Definitions that cannot work are refused by create_migration with a clear
-- error (never accepted to fail or misbehave at a later write, backfill or
-- parity check), and nothing is left behind.
\pset null '(null)'
CREATE TABLE df_l (id int PRIMARY KEY, v text, n int, softmig_flag boolean);
CREATE TABLE df_t (id int PRIMARY KEY, v text NOT NULL, n int, extra text);
CREATE TEMP TABLE df_before AS SELECT * FROM t.counts();

-- softmig's internal names: transition tables, batch relation, aliases
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "(softmig_new).v"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "softmig_new::text"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "(SELECT o.v FROM softmig_old o LIMIT 1)"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "softmig_t.v"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "\"softmig.r\".v"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "(SELECT count(*) FROM softmig_batch)::text"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "softmig_src.v"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', backward => '{"n": "softmig_k1"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"representable": "softmig_new IS NOT NULL"}')$$);
-- qualified references to the source table do not work where mappings run
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "df_l.v"}')$$);

-- one value per row: no set-returning, window or aggregate functions
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "generate_series(1, 2)::text"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "v", "n": "unnest(ARRAY[n, n])"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "row_number() OVER ()"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "v", "n": "sum(n) OVER (ORDER BY id)"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "max(v)"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "v", "n": "(SELECT count(n))::int"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', backward => '{"n": "count(*)"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"representable": "bool_and(extra IS NULL)"}')$$);

-- constant NULL into a NOT NULL column, and a NULL backward key mapping
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "NULL"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "NULL::varchar(3)"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"v": "CASE WHEN false THEN v END"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', backward => '{"id": "NULL"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"id": "NULL::int"}')$$);

-- the key: never new_only or divergent; NULLs in the lists
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', new_only => '{id}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', divergent => '{id}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', key => '{NULL}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', new_only => '{NULL}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', divergent => ARRAY[NULL, 'n'])$$);

-- options of the wrong JSON shape name the option (22023)
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"target_key": []}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"target_key": [1]}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"target_key": [null]}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"target_key": {"id": "id"}}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"representable": 1}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"representable": true}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"representable": "1"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"representable": "extra"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"lock_timeout": 5}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"on_new_only": ["reject"]}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"require_operation_key": "true"}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '{"parity_chunk_rows": 1.5}')$$);
SELECT * FROM t.err($$SELECT softmig.create_migration('df', 'df_l', 'df_t', options => '[]')$$);
-- nothing was left behind
SELECT (SELECT row(c.*) FROM t.counts() c) = (SELECT row(b.*) FROM df_before b) AS catalog_unchanged;

-- what can work still does: a legacy column whose name begins with softmig
-- is an ordinary column; subqueries may aggregate
SELECT softmig.create_migration('df', 'df_l', 'df_t',
    forward => '{"v": "coalesce(v, ''-'')", "extra": "CASE WHEN softmig_flag THEN (SELECT max(x) FROM unnest(ARRAY[v, ''z'']) x) END"}',
    backward => '{"softmig_flag": "extra IS NOT NULL"}',
    options => '{"representable": "extra IS NULL OR extra <> ''never''"}');
SELECT softmig.advance('df');
INSERT INTO df_l VALUES (1, NULL, 1, true), (2, 'b', 2, false);
SELECT * FROM df_t ORDER BY id;
-- set_option re-checks representable
SELECT * FROM t.err($$SELECT softmig.set_option('df', 'representable', '"count(*) > 0"')$$);
SELECT * FROM t.err($$SELECT softmig.set_option('df', 'representable', '"extra"')$$);
-- DDL that would make a mapping unable to work is refused too
SELECT softmig.rollback('df');
SELECT softmig.drop_migration('df');
TRUNCATE df_l, df_t;
SELECT softmig.create_migration('df', 'df_l', 'df_t', forward => '{"extra": "NULL"}');
SELECT * FROM t.err($$ALTER TABLE df_t ALTER COLUMN extra SET NOT NULL$$);
SELECT softmig.drop_migration('df');
DROP TABLE df_l, df_t;
