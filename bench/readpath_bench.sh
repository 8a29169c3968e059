#!/usr/bin/env bash
#
# bench/readpath_bench.sh -- what do softmig's read paths cost?
#
# Two questions (issue 7):
#
#   1. Reader discovery: does preloading softmig (its executor hooks) slow down
#      ordinary work?  pgbench select-only (-S) and the standard TPC-B-like
#      script, with and without shared_preload_libraries = 'softmig', while a
#      migration is active (state new_read, triggers installed, discovery
#      watching its tables) on OTHER tables than pgbench's.  Target: at most
#      1% TPS loss.
#   2. Routed views: reading one row by key through a routed view against
#      reading the table directly, for a reader routed to legacy and for one
#      routed to the target.  Target: within 5%.  The view runs twice: as
#      shipped (softmig.route_at_plan_time on, the branch chosen when the
#      plan is made) and with route_at_plan_time off (both branches in the
#      plan behind one-time filters, the routing decided at execution).
#
# One throwaway cluster (temp dir under /tmp, unix socket only), restarted
# twice so the preload comparison is interleaved and drift shows:
#
#   phase off1  shared_preload_libraries = ''          -S, TPC-B
#   phase on    shared_preload_libraries = 'softmig'   -S, TPC-B, then the
#                                                      routed-view runs
#   phase off2  shared_preload_libraries = ''          -S, TPC-B
#
# The "off" figure of a workload is the mean of off1 and off2; the table shows
# both.  Every workload: BENCH_SECONDS seconds in all, as BENCH_ROUNDS runs
# of BENCH_SECONDS/BENCH_ROUNDS seconds of which the best counts (other load
# on a shared machine only ever lowers a run), BENCH_CLIENTS clients and
# threads, -M prepared.  Routed-view runs use custom scripts side by side
# (direct table, view, view with routing at execution) with a random key
# in 1..BENCH_ROWS, interleaved round by round.  Because TPS on a shared
# machine is noisy, the routed-view cost is also measured as backend CPU
# time: BENCH_LOOKUPS key lookups in one PL/pgSQL loop (cached generic
# plans, no client round trip), CPU read from /proc/self/stat before and
# after.
#
# Output: a markdown table on stdout and in bench/out/readpath_<UTC>.md.
#
# Knobs (environment):
#   BENCH_SECONDS=15   duration of each pgbench run
#   BENCH_CLIENTS=2    pgbench clients (and threads)
#   BENCH_SCALE=10     pgbench scale factor (-i -s)
#   BENCH_ROWS=100000  rows of the migrated table pair
#   BENCH_ROUNDS=3     every workload runs as ROUNDS runs of
#                      BENCH_SECONDS/ROUNDS seconds; the best one counts
#   BENCH_VIEW_ROUNDS=5 rounds of the routed-view comparison (each runs
#                      every method for BENCH_SECONDS/BENCH_ROUNDS seconds);
#                      besides the best TPS of each method, the report gives
#                      the median of the per-round view / direct ratios
#                      (paired within a round, so drift between rounds
#                      cancels)
#   BENCH_LOOKUPS=1000000 lookups of each CPU-time measurement
#   BENCH_PORT=55510   port of the throwaway cluster
#   BENCH_KEEP=1       keep the temp dir (data dir, server log) on exit
#
# Needs PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin and
# softmig installed there (this script never builds or installs).  As root,
# the cluster runs as the postgres user (initdb refuses root).

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${BENCH_SECONDS:-15}
CLIENTS=${BENCH_CLIENTS:-2}
SCALE=${BENCH_SCALE:-10}
ROWS=${BENCH_ROWS:-100000}
VROUNDS=${BENCH_ROUNDS:-3}
WROUNDS=${BENCH_VIEW_ROUNDS:-5}
LOOKUPS=${BENCH_LOOKUPS:-1000000}
PORT=${BENCH_PORT:-55510}

for v in SECS CLIENTS SCALE ROWS PORT VROUNDS WROUNDS LOOKUPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
bench_find_softmig initdb pg_ctl psql pgbench pg_config

bench_os_user

SO_MD5_START=$(so_sum)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ANOMALIES=()

# ---------------------------------------------------------------------------
# The throwaway cluster
# ---------------------------------------------------------------------------
bench_init_cluster softmig-rpbench <<EOF
synchronous_commit = off
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
include_if_exists = 'preload.conf'
EOF

# start_with PRELOAD: (re)start the server with shared_preload_libraries = PRELOAD
start_with() {
    printf "shared_preload_libraries = '%s'\n" "$1" >"$DATA/preload.conf"
    [[ $EUID -eq 0 ]] && chown "$PGUSER_OS": "$DATA/preload.conf"
    if [[ -f $DATA/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 120 stop >/dev/null
    fi
    bench_start
    local got
    got=$(sql -d postgres -c "SHOW shared_preload_libraries")
    [[ $got == "$1" ]] || die "shared_preload_libraries is '$got', expected '$1'"
    if [[ $(so_sum) != "$SO_MD5_START" ]]; then
        ANOMALIES+=("softmig.so changed on disk before the restart into phase with preload '$1'")
    fi
}

bench_psql_env

start_with ''
bench_create_db
PGVERSION=$(sql -c "SHOW server_version")

say "pgbench -i -s $SCALE"
as_pg env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" bench >"$TMP/init.log" 2>&1 ||
    { cat "$TMP/init.log" >&2; die "pgbench -i failed"; }

say "migration 'acc' on acc_legacy/acc_target ($ROWS rows), state new_read, routed view acc_v"
sql >/dev/null <<EOF
CREATE EXTENSION softmig;
CREATE TABLE acc_legacy (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
CREATE TABLE acc_target (acc_id int PRIMARY KEY, branch int NOT NULL, balance int NOT NULL, filler char(84));
INSERT INTO acc_legacy SELECT g, 1 + g % $SCALE, 0, '' FROM generate_series(1, $ROWS) g;
SELECT softmig.create_migration('acc', 'acc_legacy', 'acc_target',
    forward  => '{"acc_id": "aid", "branch": "bid", "balance": "abalance"}',
    backward => '{"aid": "acc_id", "bid": "branch", "abalance": "balance"}');
SELECT softmig.advance('acc');
CALL softmig.backfill('acc', 10000);
SELECT softmig.advance('acc');
SELECT softmig.advance('acc');
-- bench_legacy reads legacy (its group pinned back); anyone else reads the target
SELECT softmig.register_reader('acc', 'bench_legacy', 'latency', 'pinned');
SELECT softmig.switch_reads('acc', 'pinned', 'legacy', 'benchmark: a reader routed to legacy');
SELECT softmig.create_read_view('acc', 'acc_v');
VACUUM ANALYZE;
CHECKPOINT;
-- CPU time (utime + stime, clock ticks) of this backend
CREATE FUNCTION cpu_ticks() RETURNS bigint LANGUAGE sql AS \$\$
    SELECT (f[12])::bigint + (f[13])::bigint
      FROM regexp_split_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') f
\$\$;
EOF
# lookup_<name>(n): n key lookups through one static (cached) statement
for v in direct_legacy:acc_legacy:aid:abalance direct_target:acc_target:acc_id:balance view:acc_v:aid:abalance \
         accounts:pgbench_accounts:aid:abalance; do
    IFS=: read -r name rel key col <<<"$v"
    sql >/dev/null <<EOF
CREATE FUNCTION lookup_$name(n int) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE x int; t0 bigint := cpu_ticks();
BEGIN
    FOR i IN 1..n LOOP
        SELECT $col INTO x FROM $rel WHERE $key = 1 + i % $ROWS;
    END LOOP;
    RETURN cpu_ticks() - t0;
END \$\$;
EOF
done
[[ $(sql -c "SELECT softmig.state('acc'::text)") == new_read ]] || die "migration acc is not in new_read"
[[ $(sql -c "SELECT softmig.read_source('acc', 'bench_legacy')") == legacy ]] || die "bench_legacy does not read legacy"
[[ $(sql -c "SELECT softmig.read_source('acc', 'bench_new')") == new ]] || die "bench_new does not read new"

cat >"$TMP/direct_legacy.sql" <<EOF
\set aid random(1, $ROWS)
SELECT abalance FROM acc_legacy WHERE aid = :aid;
EOF
cat >"$TMP/direct_target.sql" <<EOF
\set aid random(1, $ROWS)
SELECT balance FROM acc_target WHERE acc_id = :aid;
EOF
cat >"$TMP/view.sql" <<EOF
\set aid random(1, $ROWS)
SELECT abalance FROM acc_v WHERE aid = :aid;
EOF
[[ $EUID -eq 0 ]] && chown "$PGUSER_OS": "$TMP"/*.sql

# run_pgbench APPNAME ARGS...: one pgbench run, prints its TPS
run_pgbench() {
    local app=$1 out tps
    shift
    sql -c "CHECKPOINT" >/dev/null
    out=$(as_pg env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGAPPNAME="$app" \
        PGOPTIONS="$RUN_PGOPTIONS" "$PGBIN/pgbench" -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -M prepared "$@" bench 2>&1) ||
        { printf '%s\n' "$out" >&2; die "pgbench $* failed"; }
    tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p')
    [[ -n $tps ]] || { printf '%s\n' "$out" >&2; die "no tps in pgbench output"; }
    printf '%s\n' "$tps"
}

declare -A TPS CPU
# the routed view with the routing decided at execution (one-time filters)
ROUTE_OFF='-c softmig.route_at_plan_time=off'
RUN_PGOPTIONS=''   # PGOPTIONS of run_pgbench and cpu_us (set per call)
VSECS=$(( SECS / VROUNDS > 0 ? SECS / VROUNDS : 1 ))

TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))
cpu_us() {  # app function -> microseconds of CPU per lookup (best of 2)
    local t1 t2
    t1=$(as_pg env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGAPPNAME="$1" \
        PGOPTIONS="$RUN_PGOPTIONS" "$PGBIN/psql" -X -q -At -d bench -c "SELECT $2($LOOKUPS)")
    t2=$(as_pg env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGAPPNAME="$1" \
        PGOPTIONS="$RUN_PGOPTIONS" "$PGBIN/psql" -X -q -At -d bench -c "SELECT $2($LOOKUPS)")
    awk -v a="$t1" -v b="$t2" -v u="$TICK_US" -v n="$LOOKUPS" \
        'BEGIN { t = (a < b ? a : b); printf "%.2f", t * u / n }'
}

# run_rounds KEY APP ARGS...: ROUNDS pgbench runs of SECS/ROUNDS seconds;
# each run in TPS[KEY,r], the best in TPS[KEY]
run_rounds() {  # key app pgbench-args...
    local key=$1 app=$2 r best=0 t
    shift 2
    for ((r = 1; r <= VROUNDS; r++)); do
        # TPC-B-like updates bloat pgbench's small tables run after run; start
        # each run from vacuumed tables so the phases compare like with like
        [[ $key == *,B ]] && sql -c "VACUUM pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history" >/dev/null
        t=$(SECS=$VSECS run_pgbench "$app" "$@")
        TPS[$key,$r]=$t
        best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
    done
    TPS[$key]=$best
}

run_phase_std() {  # phase-name
    say "phase $1: pgbench -S ($VROUNDS x ${VSECS}s)"
    run_rounds "$1,S" pgbench -S
    say "phase $1: pgbench TPC-B-like ($VROUNDS x ${VSECS}s)"
    run_rounds "$1,B" pgbench
    say "phase $1: CPU time of $LOOKUPS pgbench_accounts lookups in one backend"
    CPU[$1]=$(cpu_us pgbench lookup_accounts)
}

run_phase_std off1

start_with softmig
[[ $(sql -c "SELECT available FROM softmig.discovery()") == t ]] || die "discovery is not available with preload"
run_phase_std on
for ((r = 1; r <= WROUNDS; r++)); do
    say "phase on: routed view vs direct, round $r/$WROUNDS (${VSECS}s each)"
    TPS[DL,$r]=$(SECS=$VSECS run_pgbench bench_legacy -n -f "$TMP/direct_legacy.sql")
    TPS[VL,$r]=$(SECS=$VSECS run_pgbench bench_legacy -n -f "$TMP/view.sql")
    TPS[DT,$r]=$(SECS=$VSECS run_pgbench bench_new -n -f "$TMP/direct_target.sql")
    TPS[VT,$r]=$(SECS=$VSECS run_pgbench bench_new -n -f "$TMP/view.sql")
    TPS[XL,$r]=$(SECS=$VSECS RUN_PGOPTIONS=$ROUTE_OFF run_pgbench bench_legacy -n -f "$TMP/view.sql")
    TPS[XT,$r]=$(SECS=$VSECS RUN_PGOPTIONS=$ROUTE_OFF run_pgbench bench_new -n -f "$TMP/view.sql")
done
for k in DL VL DT VT XL XT; do
    best=0
    for ((r = 1; r <= WROUNDS; r++)); do
        best=$(awk -v a="$best" -v b="${TPS[$k,$r]}" 'BEGIN { print (b > a ? b : a) }')
    done
    TPS[on,$k]=$best
done
say "phase on: CPU time of $LOOKUPS lookups in one backend (best of 2)"
CPU_DL=$(cpu_us bench_legacy lookup_direct_legacy)
CPU_VL=$(cpu_us bench_legacy lookup_view)
CPU_DT=$(cpu_us bench_new lookup_direct_target)
CPU_VT=$(cpu_us bench_new lookup_view)
CPU_XL=$(RUN_PGOPTIONS=$ROUTE_OFF cpu_us bench_legacy lookup_view)
CPU_XT=$(RUN_PGOPTIONS=$ROUTE_OFF cpu_us bench_new lookup_view)
# paired_ratios VIEWKEY DIRECTKEY: the per-round ratios, then their median
paired_ratios() {
    local r list=''
    for ((r = 1; r <= WROUNDS; r++)); do
        list+="$(awk -v a="${TPS[$1,$r]}" -v b="${TPS[$2,$r]}" 'BEGIN { printf "%.3f", a / b }') "
    done
    printf '%s(median %s)' "$list" "$(tr ' ' '\n' <<<"$list" | grep -v '^$' | sort -g |
        awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f", (a[NR/2]+a[NR/2+1])/2}')"
}
PAIR_VL=$(paired_ratios VL DL)
PAIR_VT=$(paired_ratios VT DT)
OBS=$(sql -c "SELECT string_agg(format('%s %s: %s reads', reader, side, reads), '; ' ORDER BY reader, side)
                FROM softmig.observed_readers('acc')")

start_with ''
run_phase_std off2

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
mean() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (a + b) / 2 }'; }
fmt() { awk -v a="$1" 'BEGIN { printf "%.1f", a }'; }

OFF_S=$(mean "${TPS[off1,S]}" "${TPS[off2,S]}")
OFF_B=$(mean "${TPS[off1,B]}" "${TPS[off2,B]}")
STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUTDIR"
OUT=$OUTDIR/readpath_$STAMP.md
{
    echo "### readpath_bench.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "PostgreSQL $PGVERSION; $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average at start $LOAD_START; $CLIENTS clients, -M prepared, each TPS the best of $VROUNDS runs of ${VSECS}s (routed-view comparison: of $WROUNDS rounds); pgbench scale $SCALE; migrated pair $ROWS rows in new_read."
    echo
    echo "Preloading softmig (discovery hooks) on unrelated work:"
    echo
    echo "| workload | off1 TPS | on TPS | off2 TPS | on / mean(off) |"
    echo "|---|---:|---:|---:|---:|"
    echo "| pgbench -S (select-only) | $(fmt "${TPS[off1,S]}") | $(fmt "${TPS[on,S]}") | $(fmt "${TPS[off2,S]}") | $(ratio "${TPS[on,S]}" "$OFF_S") |"
    echo "| pgbench TPC-B-like | $(fmt "${TPS[off1,B]}") | $(fmt "${TPS[on,B]}") | $(fmt "${TPS[off2,B]}") | $(ratio "${TPS[on,B]}" "$OFF_B") |"
    echo "| CPU µs per pgbench_accounts lookup (one backend, $LOOKUPS lookups) | ${CPU[off1]} | ${CPU[on]} | ${CPU[off2]} | $(ratio "${CPU[on]}" "$(mean "${CPU[off1]}" "${CPU[off2]}")") |"
    echo
    echo "Reading one row by key (softmig preloaded, discovery recording). TPS: direct and both view modes interleaved round by round. CPU: backend CPU per lookup over $LOOKUPS lookups in a PL/pgSQL loop (cached plan, no client round trip, best of 2). *view* = the routed view as shipped (softmig.route_at_plan_time on: the branch is chosen when the plan is made); *view, off* = the same view with route_at_plan_time off (both branches in the plan, one-time filters at execution):"
    echo
    echo "| reader routed to | direct TPS | view TPS | view / direct | view, off TPS | off / direct | direct CPU µs | view CPU µs | view - direct | view, off CPU µs | off - direct |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "| legacy (acc_legacy) | $(fmt "${TPS[on,DL]}") | $(fmt "${TPS[on,VL]}") | $(ratio "${TPS[on,VL]}" "${TPS[on,DL]}") | $(fmt "${TPS[on,XL]}") | $(ratio "${TPS[on,XL]}" "${TPS[on,DL]}") | $CPU_DL | $CPU_VL | $(awk -v a="$CPU_VL" -v b="$CPU_DL" 'BEGIN { printf "%+.2f µs", a - b }') | $CPU_XL | $(awk -v a="$CPU_XL" -v b="$CPU_DL" 'BEGIN { printf "%+.2f µs", a - b }') |"
    echo "| target (acc_target, mapped back) | $(fmt "${TPS[on,DT]}") | $(fmt "${TPS[on,VT]}") | $(ratio "${TPS[on,VT]}" "${TPS[on,DT]}") | $(fmt "${TPS[on,XT]}") | $(ratio "${TPS[on,XT]}" "${TPS[on,DT]}") | $CPU_DT | $CPU_VT | $(awk -v a="$CPU_VT" -v b="$CPU_DT" 'BEGIN { printf "%+.2f µs", a - b }') | $CPU_XT | $(awk -v a="$CPU_XT" -v b="$CPU_DT" 'BEGIN { printf "%+.2f µs", a - b }') |"
    echo
    echo "view / direct TPS in each of the $WROUNDS rounds (runs paired within a round): legacy $PAIR_VL; target $PAIR_VT."
    echo
    echo "Discovery saw: $OBS."
    if ((${#ANOMALIES[@]} > 0)); then
        echo
        echo "Anomalies:"
        for a in "${ANOMALIES[@]}"; do echo "- $a"; done
    fi
} | tee "$OUT"
say "written to $OUT"
