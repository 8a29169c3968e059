-- softmig.state: I/O, ordering, operators, operator classes, transitions
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS softmig;
RESET client_min_messages;
-- the operators live in schema softmig: put it on the search_path (or write
-- OPERATOR(softmig.=)) to compare states
SET search_path = public, softmig;

-- input and output of every value
SELECT s::softmig.state, s::softmig.state::text AS back
  FROM unnest(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover']) AS s;

-- every bad literal fails with 22P02 and lists the valid states
\set VERBOSITY default
SELECT 'Legacy'::softmig.state;
SELECT ''::softmig.state;
SELECT 'mirror'::softmig.state;
SELECT ' legacy'::softmig.state;
SELECT 'new-write'::softmig.state;
SELECT 'cutover '::softmig.state;
\set VERBOSITY terse
DO $$
BEGIN
    PERFORM 'bogus'::softmig.state;
EXCEPTION WHEN invalid_text_representation THEN
    RAISE NOTICE 'bad literal raised %', SQLSTATE;
END $$;

-- ordering and all six operators
SELECT a, b, a = b AS eq, a <> b AS ne, a < b AS lt, a <= b AS le, a > b AS gt, a >= b AS ge
  FROM (VALUES ('legacy'::softmig.state, 'mirrored'::softmig.state),
               ('new_read', 'new_read'),
               ('cutover', 'new_write')) v(a, b);
SELECT s FROM unnest('{cutover,legacy,new_read,mirrored,new_write}'::softmig.state[]) s ORDER BY s;
SELECT s FROM unnest('{cutover,legacy,new_read,mirrored,new_write}'::softmig.state[]) s ORDER BY s DESC;
SELECT 'new_read'::softmig.state OPERATOR(softmig.>) 'mirrored' AS qualified_operator;

-- casts to and from text
SELECT 'mirrored'::softmig.state::text || '!' AS to_text, 'cutover'::text::softmig.state AS from_text;
CREATE TEMP TABLE cast_t (t text);
INSERT INTO cast_t VALUES ('new_read'::softmig.state);  -- assignment cast to text
SELECT t FROM cast_t;

-- binary I/O round trip (send/recv through COPY BINARY)
SELECT encode(softmig.state_send('new_read'), 'hex') AS send_new_read;
CREATE TEMP TABLE bin_in (s softmig.state);
CREATE TEMP TABLE bin_out (s softmig.state);
INSERT INTO bin_in SELECT unnest('{legacy,mirrored,new_write,new_read,cutover}'::softmig.state[]);
COPY bin_in TO '/tmp/softmig_regress_state.bin' (FORMAT binary);
COPY bin_out FROM '/tmp/softmig_regress_state.bin' (FORMAT binary);
SELECT array_agg(s ORDER BY s) FROM bin_out;

-- btree operator class: an index on a state column, used for ordering and lookups
CREATE TEMP TABLE st (id int, s softmig.state);
INSERT INTO st SELECT g, (ARRAY['legacy','mirrored','new_write','new_read','cutover'])[1 + g % 5]::softmig.state
  FROM generate_series(1, 2000) g;
CREATE INDEX st_s ON st (s);
ANALYZE st;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM st WHERE s = 'cutover';
SELECT count(*) FROM st WHERE s = 'cutover';
SELECT count(*) FROM st WHERE s >= 'new_read';
EXPLAIN (COSTS OFF) SELECT s FROM st WHERE s > 'legacy' ORDER BY s LIMIT 1;
SELECT s FROM st WHERE s > 'legacy' ORDER BY s LIMIT 1;
RESET enable_seqscan;

-- hash operator class: hash index, hashed DISTINCT and GROUP BY
CREATE INDEX st_h ON st USING hash (s);
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT DISTINCT s FROM st;
SELECT s, count(*) FROM st GROUP BY s ORDER BY s;
RESET enable_sort;
SELECT softmig.state_hash('mirrored') = softmig.state_hash('mirrored') AS hash_stable,
       softmig.state_hash_extended('mirrored', 0) = softmig.state_hash_extended('mirrored', 1) AS same_hash_for_other_seed;

-- a unique index works too
CREATE TEMP TABLE su (s softmig.state UNIQUE);
INSERT INTO su VALUES ('legacy'), ('mirrored');
INSERT INTO su VALUES ('legacy');

-- all 25 transition pairs
SELECT f AS from_state,
       string_agg(CASE WHEN softmig.is_legal_transition(f, t) THEN t::text END, ', ' ORDER BY t) AS legal_to,
       string_agg(CASE WHEN NOT softmig.is_legal_transition(f, t) THEN t::text END, ', ' ORDER BY t) AS illegal_to
  FROM unnest('{legacy,mirrored,new_write,new_read,cutover}'::softmig.state[]) f,
       unnest('{legacy,mirrored,new_write,new_read,cutover}'::softmig.state[]) t
 GROUP BY f ORDER BY f;
SELECT count(*) FILTER (WHERE softmig.is_legal_transition(f, t)) AS legal,
       count(*) FILTER (WHERE NOT softmig.is_legal_transition(f, t)) AS illegal
  FROM unnest('{legacy,mirrored,new_write,new_read,cutover}'::softmig.state[]) f,
       unnest('{legacy,mirrored,new_write,new_read,cutover}'::softmig.state[]) t;
SELECT softmig.is_legal_transition(NULL, 'legacy') IS NULL AS strict;

-- softmig.side
SELECT enum_range(NULL::softmig.side);
SELECT 'old'::softmig.side;
