#!/usr/bin/env bash
#
# bench/parity_bench.sh -- how fast is softmig.parity, against what people
# do by hand?
#
# Starts ONE throwaway PostgreSQL 15 cluster (temp dir under /tmp, unix
# socket only, shared_preload_libraries = 'softmig'), builds a legacy and a
# target table of BENCH_ROWS rows each with a mapping that includes
# expressions (renamed key, upper(), integer cents -> numeric(12,2)
# division, two copied columns), and times, in one run:
#
#   count    the floor: SELECT count(*) over both tables
#   mapscan  the floor of any comparison in the target's shape: read both
#            tables once and evaluate the mapping (count() of every mapped
#            column), comparing nothing
#   join     a FULL OUTER JOIN on the key comparing the mapped fields
#            (IS DISTINCT FROM over the row), counting differing keys
#   except   EXCEPT both ways over the mapped rows, counting rows
#   nocache  SELECT count(*) FROM softmig.parity(...) with
#            softmig.parity_cache = off: every difference, one row per
#            differing field, both tables read and mapped in full
#   softmig  the same after softmig.parity_cache_reset (untimed): a first
#            comparison, which also stores the digest cache
#   warm     the same right after it: the cache is reused (page headers
#            are read, no row is digested unless its segment changed)
#
# and, after the two data sets, "incremental" (BENCH_ROUNDS times): the
# cache is built on the clean data (untimed), the ten differences are
# planted and vacuumed, and one comparison is timed: what a dashboard's
# next check costs after a few writes.
#
# on two data sets: "clean" (the target is exactly the mapped legacy) and
# "dirty" (ten planted differences: 4 changed fields, 3 rows missing in the
# target, 3 rows missing in legacy).  Every method's answer is checked (0
# when clean; join 10, except 14, softmig 10 when dirty, and softmig must
# name exactly the planted keys), so a fast wrong answer aborts the run
# (mapscan only counts).
#
# Methods run interleaved (count, join, except, softmig, then the next
# round) after one warm-up pass, so machine noise hits all of them alike;
# the table shows the median of BENCH_ROUNDS rounds with min..max, rows/s
# (2 x BENCH_ROWS rows compared per second) and ratios.  Timing is psql's
# \timing (the result is one row, so it is server time).
#
# Output: a markdown table on stdout and in bench/out/parity_<UTC time>.md.
#
# Knobs (environment):
#   BENCH_ROWS=1000000   rows per table
#   BENCH_ROUNDS=5       timed rounds per method and data set
#   BENCH_PORT=55501     port of the throwaway cluster
#   BENCH_KEEP=1         keep the temp dir (data dir, server log) on exit
#   BENCH_PARALLEL=n     max_parallel_workers_per_gather for every method
#                        (default: the server's, 2); 0 compares single
#                        processes
#   BENCH_LOAD_SYNC=off  load both tables under synchronous_commit = off and
#                        vacuum right after (pages whose commits' WAL was
#                        not flushed yet stay not all-visible); default on
#
# Needs PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin and
# softmig already installed there (this script never builds or installs).
# As root, the cluster runs as the postgres user (initdb refuses root).

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${BENCH_ROWS:-1000000}
ROUNDS=${BENCH_ROUNDS:-5}
PORT=${BENCH_PORT:-55501}
PARALLEL_SET=${BENCH_PARALLEL:-}
LOAD_SYNC=${BENCH_LOAD_SYNC:-on}
METHODS=(count mapscan join except nocache softmig warm)

[[ $ROWS =~ ^[1-9][0-9]*$ ]] && ((ROWS >= 1000)) || die "BENCH_ROWS must be an integer >= 1000 (got '$ROWS')"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $PORT =~ ^[0-9]+$ ]] || die "BENCH_PORT must be a number (got '$PORT')"
[[ -z $PARALLEL_SET || $PARALLEL_SET =~ ^[0-9]+$ ]] || die "BENCH_PARALLEL must be a number (got '$PARALLEL_SET')"
[[ $LOAD_SYNC == on || $LOAD_SYNC == off ]] || die "BENCH_LOAD_SYNC must be on or off (got '$LOAD_SYNC')"
bench_find_softmig initdb pg_ctl psql pg_config

bench_os_user

# ---------------------------------------------------------------------------
# The throwaway cluster
# ---------------------------------------------------------------------------
bench_init_cluster softmig-pbench <<EOF
shared_preload_libraries = 'softmig'
shared_buffers = 1GB
work_mem = 64MB
max_wal_size = 8GB
synchronous_commit = off
autovacuum = off
${PARALLEL_SET:+max_parallel_workers_per_gather = $PARALLEL_SET}
EOF
bench_start
bench_psql_env
bench_create_db
PGVERSION=$(sql -c "SHOW server_version")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PARALLEL=$(sql -c "SHOW max_parallel_workers_per_gather")

# ---------------------------------------------------------------------------
# Data: legacy, target = mapped legacy, the migration (state legacy: nothing
# is mirrored, so differences can be planted directly)
# ---------------------------------------------------------------------------
say "loading $ROWS rows per table"
# synchronous_commit = on for the load by default: VACUUM marks a page
# all-visible only once its rows' commit is flushed; BENCH_LOAD_SYNC=off
# loads as a write-heavy server would, and the vacuum right after leaves
# the newest pages not all-visible
sql >/dev/null <<EOF
SET synchronous_commit = $LOAD_SYNC;
CREATE EXTENSION softmig;
CREATE TABLE legacy_orders (id int PRIMARY KEY, cust text NOT NULL, cents int NOT NULL,
                            note text, created date NOT NULL);
CREATE TABLE orders (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
                     note text, created date NOT NULL);
SELECT softmig.create_migration('bench', 'legacy_orders', 'orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}');
INSERT INTO legacy_orders
SELECT g, 'customer ' || g, ((g::bigint * 7919) % 1000000)::int,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || (g % 1000) END,
       date '2020-01-01' + (g % 1500)
  FROM generate_series(1, $ROWS) g;
INSERT INTO orders SELECT id, upper(cust), cents / 100.0, note, created FROM legacy_orders;
VACUUM (ANALYZE) legacy_orders;
VACUUM (ANALYZE) orders;
CHECKPOINT;
EOF

ALLVIS=$(sql -c "SELECT sum(relallvisible) || ' of ' || sum(relpages) FROM pg_class
                  WHERE relname IN ('legacy_orders', 'orders')")
Q_count="SELECT (SELECT count(*) FROM legacy_orders) + (SELECT count(*) FROM orders)"
Q_mapscan="SELECT (SELECT count(upper(cust)) + count((cents / 100.0)::numeric(12,2)) + count(note) + count(created) FROM legacy_orders)
     + (SELECT count(customer) + count(amount) + count(note) + count(created) FROM orders)"
Q_join="SELECT count(*) FROM legacy_orders l FULL OUTER JOIN orders t ON t.order_id = l.id
 WHERE l.id IS NULL OR t.order_id IS NULL
    OR ROW(upper(l.cust), (l.cents / 100.0)::numeric(12,2), l.note, l.created)
       IS DISTINCT FROM ROW(t.customer, t.amount, t.note, t.created)"
Q_except="SELECT count(*) FROM (
   (SELECT id, upper(cust), (cents / 100.0)::numeric(12,2), note, created FROM legacy_orders
    EXCEPT SELECT order_id, customer, amount, note, created FROM orders)
   UNION ALL
   (SELECT order_id, customer, amount, note, created FROM orders
    EXCEPT SELECT id, upper(cust), (cents / 100.0)::numeric(12,2), note, created FROM legacy_orders)) d"
Q_nocache="SELECT count(*) FROM softmig.parity('bench')"
PRE_nocache="SET softmig.parity_cache = off;"
Q_softmig="SELECT count(*) FROM softmig.parity('bench')"
PRE_softmig="SELECT softmig.parity_cache_reset('bench') AS reset \gset"
Q_warm="SELECT count(*) FROM softmig.parity('bench')"

# time_round DATASET: one interleaved round, appends "dataset method ms result" lines
declare -A TIMES RESULT
time_round() {
    local ds=$1 m q out ms res
    for m in "${METHODS[@]}"; do
        q=Q_$m
        pre=PRE_$m
        out=$("${PSQL[@]}" -At <<EOF
${!pre:-}
\timing on
${!q};
EOF
)
        res=$(printf '%s\n' "$out" | sed -n 1p)
        ms=$(printf '%s\n' "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        [[ -n $ms ]] || die "no timing for $m: $out"
        TIMES[$ds,$m]+="$ms "
        RESULT[$ds,$m]=$res
    done
}

check_results() {  # dataset
    local ds=$1 want_join want_except want_softmig
    if [[ $ds == clean ]]; then want_join=0; want_except=0; want_softmig=0
    else want_join=10; want_except=14; want_softmig=10; fi
    [[ ${RESULT[$ds,count]} == $((2 * ROWS)) || $ds == dirty ]] || die "$ds: count says ${RESULT[$ds,count]}"
    [[ ${RESULT[$ds,join]} == "$want_join" ]] || die "$ds: join found ${RESULT[$ds,join]}, expected $want_join"
    [[ ${RESULT[$ds,except]} == "$want_except" ]] || die "$ds: except found ${RESULT[$ds,except]}, expected $want_except"
    for m in nocache softmig warm; do
        [[ ${RESULT[$ds,$m]} == "$want_softmig" ]] || die "$ds: $m found ${RESULT[$ds,$m]}, expected $want_softmig"
    done
}

run_dataset() {  # dataset
    local ds=$1 r
    say "$ds: warm-up"
    time_round "$ds"
    TIMES=()
    for ((r = 1; r <= ROUNDS; r++)); do
        say "$ds: round $r/$ROUNDS"
        time_round "$ds"
        check_results "$ds"
    done
    for m in "${METHODS[@]}"; do TIMES_SAVED[$ds,$m]=${TIMES[$ds,$m]}; done
}
declare -A TIMES_SAVED

run_dataset clean

say "planting ten differences"
P1=$((ROWS / 10)); P2=$((ROWS / 3 - (ROWS / 3) % 3 + 1)); P3=$((ROWS / 2)); P4=$((ROWS - 5))   # P2: a row with a note
PLANT="SET synchronous_commit = on;
UPDATE orders SET amount = amount + 1 WHERE order_id = 17;
UPDATE orders SET customer = 'SOMEONE ELSE' WHERE order_id = $P1;
UPDATE orders SET note = NULL WHERE order_id = $P2;
UPDATE orders SET created = created + 1 WHERE order_id = $P3;
DELETE FROM orders WHERE order_id IN ($((P1 + 7)), $((P3 + 7)), $P4);
INSERT INTO orders VALUES (0, 'ZERO', 0, NULL, '2020-01-01'),
                          ($((ROWS + 1)), 'PAST THE END', 1, NULL, '2020-01-01'),
                          ($((ROWS + 1000)), 'FAR PAST', 2, NULL, '2020-01-01');
VACUUM (INDEX_CLEANUP on) orders;"
UNPLANT="SET synchronous_commit = on;
UPDATE orders o SET customer = upper(l.cust), amount = l.cents / 100.0, note = l.note, created = l.created
  FROM legacy_orders l WHERE o.order_id = l.id AND l.id IN (17, $P1, $P2, $P3);
INSERT INTO orders SELECT id, upper(cust), cents / 100.0, note, created FROM legacy_orders
 WHERE id IN ($((P1 + 7)), $((P3 + 7)), $P4);
DELETE FROM orders WHERE order_id IN (0, $((ROWS + 1)), $((ROWS + 1000)));
VACUUM (INDEX_CLEANUP on) orders;"
sql >/dev/null <<<"$PLANT
ANALYZE orders;"
# the planted keys, exactly
WANT="0,17,$P1,$((P1 + 7)),$P2,$P3,$((P3 + 7)),$P4,$((ROWS + 1)),$((ROWS + 1000))"
GOT=$(sql -c "SELECT string_agg((key->>'id'), ',' ORDER BY (key->>'id')::int) FROM softmig.parity('bench')")
WANT_SORTED=$(tr ',' '\n' <<<"$WANT" | sort -n | paste -sd, -)
[[ $GOT == "$WANT_SORTED" ]] || die "softmig.parity named $GOT, planted $WANT_SORTED"
STATS=$(sql -c "SELECT (s->'chunks')::text || ' chunks, ' || (s->'chunks_descended')::text || ' descended'
                  FROM softmig._parity_summary((SELECT id FROM softmig.migrations WHERE name = 'bench'), 10000, 0) s")

run_dataset dirty

# incremental: cache built on clean data, ten differences planted, one run
INCR_TIMES=
for ((r = 1; r <= ROUNDS; r++)); do
    say "incremental: round $r/$ROUNDS"
    sql >/dev/null <<<"$UNPLANT"
    [[ $(sql -c "SELECT softmig.parity_cache_reset('bench')" -c "SELECT count(*) FROM softmig.parity('bench')" | tail -1) == 0 ]] \
        || die "incremental: not clean after removing the planted differences"
    sql >/dev/null <<<"$PLANT"
    out=$("${PSQL[@]}" -At <<EOSQL
\timing on
SELECT (s->>'missing_in_target')::int + (s->>'missing_in_legacy')::int + (s->>'mismatch')::int,
       s->'cache'->>'mode', s->'cache'->'stale_segments', s->>'chunks_descended'
  FROM softmig._parity_summary((SELECT id FROM softmig.migrations WHERE name = 'bench'), 10000, 0) s;
EOSQL
)
    ms=$(printf '%s\n' "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    res=$(printf '%s\n' "$out" | sed -n 1p)
    [[ ${res%%|*} == 10 ]] || die "incremental: parity found ${res%%|*} differences, expected 10 ($res)"
    [[ $(cut -d'|' -f2 <<<"$res") == warm ]] || die "incremental: the cache was not reused ($res)"
    INCR_TIMES+="$ms "
    INCR_INFO="stale segments (legacy, target) $(cut -d'|' -f3 <<<"$res"), $(cut -d'|' -f4 <<<"$res") chunks descended"
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{min=$1} {max=$1} END {printf "%.3f..%.3f", min/1000, max/1000}'; }

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //' || echo unknown)
NCPU=$(nproc)
MEM=$(awk '/MemTotal/ {printf "%.0f GB", $2/1024/1024}' /proc/meminfo)
STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUTDIR"
OUT=$OUTDIR/parity_$STAMP.md
{
    echo "parity_bench.sh: $ROWS rows per table, $ROUNDS rounds (median, min..max), PostgreSQL $PGVERSION,"
    echo "max_parallel_workers_per_gather = $PARALLEL, load under synchronous_commit = $LOAD_SYNC, $NCPU CPU ($CPU), $MEM;"
    echo "dirty run: $STATS; after the load (vacuumed): $ALLVIS pages all-visible;"
    echo "load average before: $LOAD_START, after: $LOAD_END (other work on the machine skews every method)"
    echo
    echo "incremental: $INCR_INFO (last round)"
    echo
    echo "| data | method | seconds | min..max | rows/s | time / count(*) | speed-up vs FULL JOIN | speed-up vs EXCEPT |"
    echo "|---|---|---:|---|---:|---:|---:|---:|"
    TIMES_SAVED[incremental,softmig]=$INCR_TIMES
    for ds in clean dirty incremental; do
        if [[ $ds == incremental ]]; then ms_list=(softmig); ref=dirty
        else ms_list=("${METHODS[@]}"); ref=$ds; fi
        cnt=$(median <<<"${TIMES_SAVED[$ref,count]}")
        jn=$(median <<<"${TIMES_SAVED[$ref,join]}")
        ex=$(median <<<"${TIMES_SAVED[$ref,except]}")
        for m in "${ms_list[@]}"; do
            med=$(median <<<"${TIMES_SAVED[$ds,$m]}")
            mm=$(minmax <<<"${TIMES_SAVED[$ds,$m]}")
            rate=$(awk -v r="$ROWS" -v ms="$med" 'BEGIN {printf "%.0f", 2 * r / (ms / 1000)}')
            case $m in
                nocache|softmig|warm)
                    vs=$(awk -v a="$med" -v c="$cnt" -v j="$jn" -v e="$ex" 'BEGIN {printf "%.2fx | %.2fx | %.2fx", a / c, j / a, e / a}') ;;
                *)  vs=$(awk -v a="$med" -v c="$cnt" 'BEGIN {printf "%.2fx |  | ", a / c}') ;;
            esac
            name=$m
            [[ $ds == incremental ]] && name="softmig, cache built before the ten writes"
            printf '| %s | %s | %.3f | %s | %s | %s |\n' "$ds" "$name" "$(awk -v ms="$med" 'BEGIN {print ms / 1000}')" "$mm" "$rate" "$vs"
        done
    done
    echo
    echo "(incremental compares with the dirty data set's count(*), FULL JOIN and EXCEPT)"
} | tee "$OUT"
say "written to ${OUT#"$HERE"/../}"
