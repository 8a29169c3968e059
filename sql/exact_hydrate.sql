-- hydrate changes only the fields it hydrates: every other column keeps its
-- exact value (a json column its spacing and duplicate keys, an array its
-- bounds), on the target and, through the projection, on legacy.
\pset null '(null)'
CREATE TABLE hx_l (id int PRIMARY KEY, j json, a int[], note text, score int);
CREATE TABLE hx_t (id int PRIMARY KEY, j json, a int[], note text, score int, badge text, meta json);
INSERT INTO hx_l VALUES
    (1, '{"k": 1,   "k": 2}', '[0:2]={1,2,3}', 'one', 10),
    (2, '[ 1 ,2 ]', '[5:5]={7}', 'two', 20);
SELECT softmig.create_migration('hx', 'hx_l', 'hx_t');
SELECT softmig.advance('hx');
CALL softmig.backfill('hx');
SELECT id, j::text, a::text, array_lower(a, 1) AS lo FROM hx_t ORDER BY id;

-- mirrored: hydrate takes the target-owned fields (badge, meta) only
SELECT pg_current_snapshot() AS snap \gset
SELECT softmig.hydrate('hx', '[{"id": 1, "badge": "gold", "j": {"k": 9}, "a": [4], "note": "x"},
                               {"id": 2, "meta": {"m":  1, "m": 2}}]', :'snap') AS rows_changed;
SELECT id, j::text, a::text, note, badge, meta::text FROM hx_t ORDER BY id;
-- legacy untouched
SELECT id, j::text, a::text, note FROM hx_l ORDER BY id;

-- hydrated values that are equal to what the row holds change nothing
SELECT softmig.hydrate('hx', '[{"id": 1, "badge": "gold"}, {"id": 2, "meta": {"m": 2}}]', :'snap') AS rows_changed;
SELECT id, meta::text FROM hx_t WHERE id = 2;

-- per-field authority in mirrored: hydrate of a handed-over field flows to
-- legacy; the other columns of both rows keep their exact values
SELECT softmig.set_field_authority('hx', 'score', 'new');
SELECT pg_current_snapshot() AS snap \gset
SELECT softmig.hydrate('hx', '[{"id": 1, "score": 11}]', :'snap') AS rows_changed;
SELECT id, j::text, a::text, score FROM hx_t ORDER BY id;
SELECT id, j::text, a::text, score FROM hx_l ORDER BY id;
SELECT softmig.set_field_authority('hx', 'score', 'legacy');

-- new_write: hydrate writes the target, the projection writes legacy;
-- the json and array columns stay exact on both
SELECT softmig.advance('hx', force => true, reason => 'test');
SELECT pg_current_snapshot() AS snap \gset
SELECT softmig.hydrate('hx', '[{"id": 1, "note": "ONE", "badge": "platinum"}, {"id": 2, "score": 21}]', :'snap') AS rows_changed;
SELECT id, j::text, a::text, array_lower(a, 1) AS lo, note, score, badge FROM hx_t ORDER BY id;
SELECT id, j::text, a::text, array_lower(a, 1) AS lo, note, score FROM hx_l ORDER BY id;
SELECT count(*) AS differences FROM softmig.parity('hx');

SELECT softmig.rollback('hx');
SELECT softmig.rollback('hx');
SELECT softmig.drop_migration('hx');
DROP TABLE hx_l, hx_t;
