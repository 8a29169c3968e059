-- Structural parity: every kind of difference, exactly, in the target's shape
\pset null '(null)'
SET client_min_messages = warning;

-- A mapping with renames, expressions and type casts (int cents -> numeric,
-- text -> date, int flag -> boolean, varchar -> text), a divergent column and
-- a new-only column.
CREATE TABLE pa_l (
    id      int PRIMARY KEY,
    cust    varchar(20) NOT NULL,
    cents   int,
    note    text,
    day     text,
    flag    int,
    legacy_only text);
CREATE TABLE pa_t (
    order_id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount   numeric(12,2),
    note     text,
    day      date,
    flagged  boolean,
    loyalty  text,      -- divergent: allowed to differ
    gift     text);     -- new_only
SELECT softmig.create_migration('pa', 'pa_l', 'pa_t',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0",
                  "day": "day::date", "flagged": "flag <> 0", "loyalty": "legacy_only"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int",
                  "day": "day::text", "flag": "CASE WHEN flagged THEN 1 ELSE 0 END", "legacy_only": "loyalty"}',
    new_only => '{gift}', divergent => '{loyalty}');
INSERT INTO pa_l SELECT g, 'c' || g, g * 7, CASE WHEN g % 4 = 0 THEN NULL ELSE 'n' || g END,
                        '2024-01-' || lpad((g % 28 + 1)::text, 2, '0'), g % 2, 'L' || g
  FROM generate_series(1, 60) g;
SELECT softmig.advance('pa');
CALL softmig.backfill('pa');

-- clean after the backfill, whatever the chunk size
SELECT count(*) AS differences FROM softmig.parity('pa');
SELECT count(*) AS differences FROM softmig.parity('pa', 1);
SELECT count(*) AS differences FROM softmig.parity('pa', 7);
-- the casts went through the mapping: the target holds typed values
SELECT order_id, customer, amount, day, flagged FROM pa_t WHERE order_id IN (4, 5) ORDER BY 1;

-- plant every kind of difference on the target (an owner's override)
BEGIN;
SET LOCAL softmig.override = 'plant differences for the parity test';
UPDATE pa_t SET amount = amount + 1 WHERE order_id = 3;              -- value vs value
UPDATE pa_t SET note = NULL WHERE order_id = 5;                      -- value vs NULL
UPDATE pa_t SET note = 'now set' WHERE order_id = 8;                 -- NULL vs value
UPDATE pa_t SET day = day + 1, flagged = NOT flagged WHERE order_id = 9;   -- two fields of one row
UPDATE pa_t SET loyalty = 'changed' WHERE order_id = 10;             -- divergent: ignored
UPDATE pa_t SET gift = 'ribbon' WHERE order_id = 11;                 -- new_only: ignored
DELETE FROM pa_t WHERE order_id = 20;                                -- missing in target
INSERT INTO pa_t (order_id, customer) VALUES (1000, 'GHOST');        -- missing in legacy
COMMIT;
-- NULL vs NULL is equal: row 12 has a NULL note on both sides
SELECT l.note AS legacy_note, t.note AS target_note FROM pa_l l JOIN pa_t t ON t.order_id = l.id WHERE l.id = 12;

SELECT * FROM softmig.parity('pa');
-- the same answer for every chunk size (1 row per chunk .. one chunk)
SELECT n, count(*) AS differences, md5(string_agg(p::text, ',' ORDER BY p::text)) AS digest
  FROM unnest(ARRAY[1, 2, 5, 13, 10000]) n, softmig.parity('pa', n) p GROUP BY n ORDER BY n;

-- collisions: softmig.parity_digest_bits = 0 leaves only the row count and the
-- guard digest to tell chunks apart; a mismatch never changes the count, so
-- each differing chunk is found by the guard digest alone, and the answer is
-- the same, confirmed row by row.
SET softmig.parity_digest_bits = 0;
SELECT n, count(*) AS differences, md5(string_agg(p::text, ',' ORDER BY p::text)) AS digest
  FROM unnest(ARRAY[1, 5, 10000]) n, softmig.parity('pa', n) p GROUP BY n ORDER BY n;
SELECT s->'digest_bits' AS bits, s->'chunks' AS chunks, s->'chunks_descended' AS descended,
       s->'mismatch' AS mismatch, s->'missing_in_target' AS mit, s->'missing_in_legacy' AS mil
  FROM softmig._parity_summary((SELECT id FROM softmig.migrations WHERE name = 'pa'), 5, 0) s;
SET softmig.parity_digest_bits = 3;
SELECT count(*) AS differences FROM softmig.parity('pa', 5);
RESET softmig.parity_digest_bits;
SELECT s->'digest_bits' AS bits, s->'chunks_descended' AS descended, s->'mismatch_fields' AS fields,
       s->'sample'->'mismatch' AS sample
  FROM softmig._parity_summary((SELECT id FROM softmig.migrations WHERE name = 'pa'), 5, 2) s;

-- quarantined entities are skipped on both sides
SELECT softmig.quarantine('pa', '{"id": 3}', 'investigating the amount');
SELECT softmig.quarantine('pa', '{"id": 1000}', 'ghost row');
SELECT * FROM softmig.parity('pa') WHERE key IN ('{"id": 3}', '{"id": 1000}');
SELECT count(*) AS differences FROM softmig.parity('pa', 3);
-- released: re-synced from legacy by the quarantine work, so 3 is equal again
SELECT softmig.release('pa', '{"id": 3}');
SELECT * FROM softmig.parity('pa') WHERE key IN ('{"id": 3}', '{"id": 1000}');

-- a type whose equal values may differ in bytes (numeric scale) is not a difference
BEGIN;
SET LOCAL softmig.override = 'same value, other scale';
ALTER TABLE pa_t ALTER COLUMN amount TYPE numeric;
UPDATE pa_t SET amount = amount::numeric(20,6) WHERE order_id = 30;
COMMIT;
SELECT amount FROM pa_t WHERE order_id = 30;
SELECT * FROM softmig.parity('pa') WHERE key = '{"id": 30}';

-- errors
SELECT * FROM t.err($$SELECT * FROM softmig.parity('nope')$$);
SELECT * FROM t.err($$SELECT * FROM softmig.parity(NULL)$$);
SELECT * FROM t.err($$SELECT * FROM softmig.parity('pa', 0)$$);
SELECT * FROM t.err($$SELECT * FROM softmig.parity('pa', NULL)$$);
-- the collision hook is for superusers
CREATE ROLE pa_reader;
SET ROLE pa_reader;
SELECT * FROM t.err($$SET softmig.parity_digest_bits = 1$$);
-- parity runs as the caller: without SELECT on the tables it cannot read them
SELECT * FROM t.err($$SELECT * FROM softmig.parity('pa')$$);
RESET ROLE;
GRANT SELECT ON pa_l, pa_t TO pa_reader;
SET ROLE pa_reader;
SELECT count(*) AS differences_seen_by_reader FROM softmig.parity('pa');
RESET ROLE;
-- and read-only: a mapping that would write fails instead of writing
CREATE TABLE pa_side_effects (n int);
CREATE FUNCTION public.pa_noisy(x int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.pa_side_effects VALUES (x); RETURN x; END $$;
CREATE TABLE pa_nl (id int PRIMARY KEY, v int);
CREATE TABLE pa_nt (id int PRIMARY KEY, v int);
SELECT softmig.create_migration('pa_noisy', 'pa_nl', 'pa_nt', forward => '{"v": "public.pa_noisy(v)"}');
INSERT INTO pa_nl VALUES (1, 1);
SELECT * FROM t.err($$SELECT * FROM softmig.parity('pa_noisy')$$);
SELECT count(*) AS side_effects FROM pa_side_effects;
-- the owner's mapping runs as the owner, whoever calls (here a superuser)
CREATE ROLE pa_owner;
CREATE TABLE pa_ol (id int PRIMARY KEY, v int);
CREATE TABLE pa_ot (id int PRIMARY KEY, v int);
CREATE FUNCTION public.pa_who(x int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN RAISE WARNING 'mapping ran as %', current_user; RETURN x; END $$;
ALTER TABLE pa_ol OWNER TO pa_owner;
ALTER TABLE pa_ot OWNER TO pa_owner;
ALTER FUNCTION public.pa_who(int) OWNER TO pa_owner;
INSERT INTO pa_ol VALUES (1, 1);
INSERT INTO pa_ot VALUES (1, 1);
SET ROLE pa_owner;
SELECT softmig.create_migration('pa_who', 'pa_ol', 'pa_ot', forward => '{"v": "public.pa_who(v)"}');
RESET ROLE;
SELECT count(*) AS differences FROM softmig.parity('pa_who');
-- row-level security that applies to the caller: parity (which reads as the
-- owners) refuses rather than show rows the policy hides
ALTER TABLE pa_l ENABLE ROW LEVEL SECURITY;
CREATE POLICY pa_few ON pa_l USING (id < 5);
SET ROLE pa_reader;
SELECT * FROM t.err($$SELECT * FROM softmig.parity('pa')$$);
RESET ROLE;
SELECT count(*) AS differences_seen_by_owner FROM softmig.parity('pa');   -- the owner is not subject to it
DROP POLICY pa_few ON pa_l;
ALTER TABLE pa_l DISABLE ROW LEVEL SECURITY;
-- the digest aggregate is public (the owners run it) and checks its arguments
SELECT * FROM t.err($$SELECT softmig.parity_digest(1, 2, 3)$$);
SELECT * FROM t.err($$SELECT softmig.parity_digest(1::bigint, 1, '{0,0}'::oid[], 5, 5, 1, 2)$$);

------------------------------------------------------------------ composite keys
CREATE TABLE pa_cl (region text, num int, qty int, label text, PRIMARY KEY (region, num));
CREATE TABLE pa_ct (reg text, number bigint, quantity numeric, label text, PRIMARY KEY (reg, number));
SELECT softmig.create_migration('pa_comp', 'pa_cl', 'pa_ct',
    forward  => '{"reg": "region", "number": "num", "quantity": "qty * 1.5"}',
    backward => '{"region": "reg", "num": "number", "qty": "(quantity / 1.5)::int"}');
INSERT INTO pa_cl SELECT r, n, n, r || n FROM unnest(ARRAY['eu', 'us', 'apac']) r, generate_series(1, 9) n;
INSERT INTO pa_ct SELECT region, num, qty * 1.5, label FROM pa_cl;   -- state legacy: not managed
SELECT count(*) AS differences FROM softmig.parity('pa_comp', 2);
UPDATE pa_ct SET label = 'x' WHERE reg = 'us' AND number = 4;
UPDATE pa_ct SET quantity = 0 WHERE reg = 'apac' AND number = 9;
DELETE FROM pa_ct WHERE reg = 'eu' AND number = 1;
INSERT INTO pa_ct VALUES ('us', 10, 1, NULL), ('zz', 1, 1, NULL);
SELECT * FROM softmig.parity('pa_comp');
SELECT n, md5(string_agg(p::text, ',' ORDER BY p::text)) AS digest
  FROM unnest(ARRAY[1, 4, 100]) n, softmig.parity('pa_comp', n) p GROUP BY n ORDER BY n;
SELECT softmig.quarantine('pa_comp', '{"region": "us", "num": 4}', 'composite quarantine');
SELECT key FROM softmig.parity('pa_comp') ORDER BY 1;

------------------------------------------------------------------ keys mapped to NULL
-- a target key derived by an expression: legacy rows it maps to NULL can
-- match nothing and are missing in the target
CREATE TABLE pa_xl (id int PRIMARY KEY, code text);
CREATE TABLE pa_xt (ext text PRIMARY KEY, id int);
SELECT softmig.create_migration('pa_null', 'pa_xl', 'pa_xt',
    forward => '{"ext": "nullif(code, ''none'')", "id": "id"}',
    backward => '{"id": "id", "code": "ext"}',
    options => '{"target_key": ["ext"]}');
INSERT INTO pa_xl VALUES (1, 'a'), (2, 'none'), (3, 'c');
INSERT INTO pa_xt VALUES ('a', 1), ('c', 3);
SELECT * FROM softmig.parity('pa_null', 1);

------------------------------------------------------------------ partitioned tables
CREATE TABLE pa_pl (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE pa_pl_1 PARTITION OF pa_pl FOR VALUES FROM (0) TO (50);
CREATE TABLE pa_pl_2 PARTITION OF pa_pl FOR VALUES FROM (50) TO (100);
CREATE TABLE pa_pt (id int PRIMARY KEY, v text) PARTITION BY HASH (id);
CREATE TABLE pa_pt_0 PARTITION OF pa_pt FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE pa_pt_1 PARTITION OF pa_pt FOR VALUES WITH (MODULUS 2, REMAINDER 1);
SELECT softmig.create_migration('pa_part', 'pa_pl', 'pa_pt');
SELECT softmig.advance('pa_part');
INSERT INTO pa_pl SELECT g, 'v' || g FROM generate_series(1, 99) g;
SELECT count(*) AS differences FROM softmig.parity('pa_part', 10);
BEGIN;
SET LOCAL softmig.override = 'plant';
UPDATE pa_pt SET v = 'drift' WHERE id IN (7, 77);
COMMIT;
SELECT * FROM softmig.parity('pa_part', 10);

------------------------------------------------------------------ column names like softmig's aliases
CREATE TABLE pa_al (softmig_l int PRIMARY KEY, softmig_t text, k0 text, new text, softmig_q text);
CREATE TABLE pa_at (softmig_l int PRIMARY KEY, softmig_t text, k0 text, new text, softmig_q text);
SELECT softmig.create_migration('pa_alias', 'pa_al', 'pa_at',
    forward => '{"softmig_t": "upper(softmig_t)"}', backward => '{"softmig_t": "lower(softmig_t)"}');
INSERT INTO pa_al SELECT g, 'x' || g, 'k' || g, 'n' || g, 'q' || g FROM generate_series(1, 12) g;
INSERT INTO pa_at SELECT softmig_l, upper(softmig_t), k0, new, softmig_q FROM pa_al;
UPDATE pa_at SET k0 = 'drift', softmig_t = 'DRIFT' WHERE softmig_l = 4;
SELECT * FROM softmig.parity('pa_alias', 3);
SELECT i->'legacy' AS legacy, i->'differences' AS differences FROM softmig.inspect('pa_alias', '{"softmig_l": 4}') i;
SELECT softmig.add_invariant('pa_alias', 'aliased', 'SELECT softmig_l, softmig_q FROM public.pa_at WHERE k0 = ''drift''');
SELECT * FROM softmig.invariant_violations('pa_alias');

------------------------------------------------------------------ rows wider than one aggregate call
-- 120 strict fields do not fit in one function call: digested in this backend instead
DO $$
BEGIN
    EXECUTE 'CREATE TABLE pa_wl (id int PRIMARY KEY, '
         || (SELECT string_agg(format('c%s int', i), ', ') FROM generate_series(1, 120) i) || ')';
    EXECUTE 'CREATE TABLE pa_wt (id int PRIMARY KEY, '
         || (SELECT string_agg(format('c%s int', i), ', ') FROM generate_series(1, 120) i) || ')';
    EXECUTE 'INSERT INTO pa_wl SELECT g, '
         || (SELECT string_agg(format('g + %s', i), ', ') FROM generate_series(1, 120) i)
         || ' FROM generate_series(1, 30) g';
END $$;
INSERT INTO pa_wt SELECT * FROM pa_wl;
SELECT softmig.create_migration('pa_wide', 'pa_wl', 'pa_wt');
UPDATE pa_wt SET c77 = -1 WHERE id = 17;
SELECT * FROM softmig.parity('pa_wide', 4);
DROP OWNED BY pa_reader;
DROP ROLE pa_reader;
SELECT softmig.drop_migration('pa_who');
DROP OWNED BY pa_owner;
DROP ROLE pa_owner;
