#!/usr/bin/env bash
#
# bench/monitor_bench.sh -- what does a Prometheus scrape of softmig cost?
#
# Starts ONE throwaway PostgreSQL 15 cluster (temp dir under /tmp, unix socket
# only, shared_preload_libraries = 'softmig'), builds one migration in state
# mirrored with BENCH_ROWS legacy rows, backfilled, BENCH_KEYS operation keys
# in the ledger, an invariant, readers seen by discovery and one stored
# softmig.check run, then times side by side, in one session, interleaved
# round by round:
#
#   scrape     the nine queries of monitoring/postgres_exporter.yaml, as the
#              exporter runs them on every scrape (SELECT ... FROM
#              softmig.monitor*)
#   metrics    SELECT * FROM softmig.metrics (the older one-gauge view)
#   count      SELECT count(*) of the legacy table: the cheapest look at
#              the data itself
#   check      softmig.check(name): what a scrape would cost if it ran the
#              checks instead of reading the last stored run
#
# Each is reported in ms per run (median of BENCH_ROUNDS rounds, each the
# mean of several runs) and as a ratio to count.
#
# Output: a markdown table on stdout and in bench/out/monitor_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_ROWS=1000000   legacy rows
#   BENCH_KEYS=200000    operation keys in the ledger
#   BENCH_ROUNDS=5       rounds
#   BENCH_PORT=55503     port of the throwaway cluster
#   BENCH_PGBIN          server binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_KEEP=1         keep the temp dir (data dir, server log) on exit
#
# Needs softmig already installed in that PostgreSQL (this script never
# builds or installs).  As root, the cluster runs as the postgres user.

set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${BENCH_ROWS:-1000000}
KEYS=${BENCH_KEYS:-200000}
ROUNDS=${BENCH_ROUNDS:-5}
PORT=${BENCH_PORT:-55503}
PGBIN=${BENCH_PGBIN:-$PGBIN}

bench_find_softmig initdb pg_ctl psql
bench_os_user
bench_init_cluster softmig-monitor-bench <<EOF
shared_preload_libraries = 'softmig'
shared_buffers = 256MB
max_wal_size = 4GB
EOF
bench_start
bench_psql_env
bench_create_db

say "loading $ROWS rows, backfilling, $KEYS operation keys"
sql <<EOF >/dev/null
CREATE EXTENSION softmig;
CREATE TABLE legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL);
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL);
INSERT INTO legacy_orders SELECT g, 'c' || g, g % 100000 FROM generate_series(1, $ROWS) g;
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
SELECT softmig.add_invariant('orders', 'no negative amounts', 'SELECT order_id FROM public.orders WHERE amount < 0');
SELECT softmig.advance('orders');
EOF
sql -c "CALL softmig.backfill('orders', batch_size => 10000)" >/dev/null 2>&1
sql <<EOF >/dev/null
INSERT INTO softmig.operations (migration_id, key, side, relation, state, claimed_by)
SELECT m.id, 'op-' || g, 'legacy', 'legacy_orders', 'mirrored', 'bench'
  FROM softmig.migrations m, generate_series(1, $KEYS) g;
VACUUM ANALYZE legacy_orders, orders, softmig.operations;
EOF
for app in billing reporting; do
    PGAPPNAME=$app sql -c "SELECT count(*) FROM legacy_orders WHERE id < 100" >/dev/null
done
sql -c "SELECT count(*) FROM softmig.check('orders')" >/dev/null

# the exporter's queries, taken from the query file itself
scrape=$(awk '
    /^  query: >-$/ { q = 1; next }
    q && /^  [a-z]/ { q = 0; printf ";\n" }
    q { sub(/^ +/, ""); printf "%s ", $0 }
' "$HERE/../monitoring/postgres_exporter.yaml")
nq=$(grep -c ';' <<<"$scrape")
[[ $nq -ge 9 ]] || die "found $nq exporter queries in monitoring/postgres_exporter.yaml"

say "timing $ROUNDS rounds"
out=$(sql <<EOF
SET softmig.discovery = off;
CREATE FUNCTION pg_temp.ms(q text, n int) RETURNS double precision LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1 .. n LOOP EXECUTE q; END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 / n;
END \$\$;
CREATE TEMP TABLE scrape_q (q text);
INSERT INTO scrape_q SELECT btrim(x) FROM regexp_split_to_table(\$q\$$scrape\$q\$, ';') x WHERE btrim(x) <> '';
CREATE TEMP TABLE r (round int, what text, ms double precision);
DO \$\$
BEGIN
    FOR rnd IN 1 .. $ROUNDS LOOP
        INSERT INTO r SELECT rnd, 'scrape', sum(pg_temp.ms(q, 20)) FROM scrape_q;
        INSERT INTO r SELECT rnd, 'metrics', pg_temp.ms('SELECT * FROM softmig.metrics', 20);
        INSERT INTO r SELECT rnd, 'count', pg_temp.ms('SELECT count(*) FROM legacy_orders', 3);
        INSERT INTO r SELECT rnd, 'check', pg_temp.ms('SELECT * FROM softmig.check(''orders'')', 1);
    END LOOP;
END \$\$;
WITH m AS (SELECT what, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms FROM r GROUP BY what)
SELECT format('| %s | %s | %s |', m.what, round(m.ms::numeric, 2),
              round((m.ms / (SELECT ms FROM m WHERE what = 'count'))::numeric, 3))
  FROM m ORDER BY array_position(ARRAY['scrape', 'metrics', 'count', 'check'], m.what);
EOF
)
mkdir -p "$OUTDIR"
report=$OUTDIR/monitor_$(date -u +%Y%m%d-%H%M%S).md
{
    echo "monitor_bench: $ROWS legacy rows, $KEYS ledger keys, $nq exporter queries, median of $ROUNDS rounds"
    echo
    echo "| what | ms per run | ratio to count(*) of legacy |"
    echo "|---|---:|---:|"
    echo "$out"
} | tee "$report"
say "report: $report"
