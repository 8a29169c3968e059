#!/usr/bin/env bash
#
# bench/memory_bench.sh -- does a big backfill and parity run in bounded memory?
#
# Starts ONE throwaway PostgreSQL 15 cluster (temp dir under /tmp, unix socket
# only, shared_preload_libraries = 'softmig'), and for each table size (first
# BENCH_SMALL_ROWS, then BENCH_ROWS) on a fresh pair of narrow tables
#
#   legacy_<n>(id bigint pk, v int)  ->  target_<n>(item_id bigint pk, val bigint)
#   forward {"item_id": "id", "val": "v::bigint"}, backward {"id": "item_id", "v": "val::int"}
#
#   1. loads the legacy rows (INSERT ... SELECT generate_series, then the
#      primary key, VACUUM ANALYZE, CHECKPOINT), creates the migration and
#      moves it to mirrored;
#   2. runs CALL softmig.backfill(name, batch_size => BENCH_BATCH) in a fresh
#      session and samples that backend's memory while it runs;
#   3. checks the copy (row counts and sums of both sides, backfill_done);
#   4. changes one target row in every 1000 by an owner override (so every
#      parity chunk differs and parity has to descend into all of them: the
#      worst case), then runs SELECT count(*) FROM softmig.parity(name,
#      chunk_rows => BENCH_CHUNK) in a fresh session, samples its memory the
#      same way and checks that it found exactly those differences.
#
# Memory of a backend is read from /proc/<pid>/status every BENCH_SAMPLE_MS:
#   RssAnon   the backend's private memory (palloc'ed memory lives here); its
#             maximum over the samples is the number that matters;
#   VmHWM     the kernel's exact peak of the resident set, which also counts
#             the shared_buffers pages the backend touched (bounded by
#             shared_buffers, not by the query) and the mapped binaries;
#   RssShmem  shared memory pages touched, at the last sample.
# "idle" is RssAnon of the same session just before the CALL / SELECT.
# If peak RssAnon is about the same for BENCH_SMALL_ROWS and BENCH_ROWS, the
# memory is bounded by the batch / chunk, not by the table.
#
# Output: a markdown report on stdout and in bench/out/memory_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_ROWS=10000000        legacy rows of the big run
#   BENCH_SMALL_ROWS=1000000   legacy rows of the comparison run ("" = none)
#   BENCH_BATCH=10000          backfill batch_size
#   BENCH_CHUNK=10000          parity chunk_rows
#   BENCH_SAMPLE_MS=50         sampling interval
#   BENCH_JIT=on               the server's jit setting (off: no LLVM JIT, whose
#                              memory shows up once plans cost enough)
#   BENCH_PORT=55503           port of the throwaway cluster
#   BENCH_KEEP=1               keep the temp dir (data dir, server log) on exit
#
# Needs PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin and
# softmig already installed there (this script never builds or installs).
# As root, the cluster runs as the postgres user (initdb refuses root).
# Disk: about 1.5 GB per 10 million rows (both tables, indexes, WAL).

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${BENCH_ROWS:-10000000}
SMALL_ROWS=${BENCH_SMALL_ROWS-1000000}
BATCH=${BENCH_BATCH:-10000}
CHUNK=${BENCH_CHUNK:-10000}
SAMPLE_MS=${BENCH_SAMPLE_MS:-50}
JIT=${BENCH_JIT:-on}
PORT=${BENCH_PORT:-55503}

for v in ROWS BATCH CHUNK SAMPLE_MS PORT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[[ $JIT == on || $JIT == off ]] || die "BENCH_JIT must be on or off (got '$JIT')"
[[ -z $SMALL_ROWS || $SMALL_ROWS =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_SMALL_ROWS must be a positive integer or empty (got '$SMALL_ROWS')"
bench_find_softmig initdb pg_ctl psql pg_config
[[ -r /proc/self/status ]] || die "/proc is needed to read backend memory"

bench_os_user

SO_MD5=$(so_sum | cut -c1-12)
SO_MTIME=$(date -u -r "$SO" +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------------------
# The throwaway cluster
# ---------------------------------------------------------------------------
bench_init_cluster softmig-memory-bench <<EOF
shared_preload_libraries = 'softmig'
synchronous_commit = off
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
autovacuum = off
jit = $JIT
EOF
chmod 755 "$TMP"
bench_start
bench_psql_env
bench_create_db
sql -c "CREATE EXTENSION softmig" >/dev/null
PGVERSION=$(sql -c "SHOW server_version")
WORK_MEM=$(sql -c "SHOW work_mem")

# ---------------------------------------------------------------------------
# Sampling one backend's memory
# ---------------------------------------------------------------------------
kb() { awk -v f="$1:" '$1 == f { print $2 }' "$2" 2>/dev/null || true; }

# run_sampled NAME SQL [PHASE_SQL]: runs SQL in a fresh session, samples its
# backend until the session ends; sets SECS, IDLE_ANON, PEAK_ANON, HWM, SHMEM
# (kB) and OUT (the statement's output).  With PHASE_SQL (a query another
# session runs every few samples, answering the current phase), PHASES lists
# the peak RssAnon per phase ("scan 8.1, verify 20.3" in MiB).
run_sampled() {
    local name=$1 stmt=$2 phase_sql=${3:-} pidfile=$TMP/$1.pid outfile=$TMP/$1.out
    local -A phase_peak=()
    local phase_order=() phase=- nsample=0
    rm -f "$pidfile" "$outfile"
    # the session: write its pid, wait for the sampler, run the statement
    "${PSQL[@]}" -At >"$outfile" 2>"$TMP/$name.err" <<EOF &
\o $pidfile
SELECT pg_backend_pid();
\o
SELECT pg_sleep(0.5);
\o $outfile.stmt
\timing on
$stmt;
EOF
    local psql_pid=$! pid= i
    for ((i = 0; i < 100; i++)); do
        [[ -s $pidfile ]] && pid=$(tr -d '[:space:]' <"$pidfile") && [[ -n $pid ]] && break
        sleep 0.05
    done
    [[ -n $pid ]] || die "$name: the session did not report its pid"
    local st=/proc/$pid/status anon peak=0 idle= hwm=0 shmem=0 h s t0 t1
    t0=$(date +%s.%N)
    while kill -0 "$psql_pid" 2>/dev/null && [[ -r $st ]]; do
        anon=$(kb RssAnon "$st"); h=$(kb VmHWM "$st"); s=$(kb RssShmem "$st")
        if [[ -n $phase_sql ]] && ((nsample++ % 4 == 0)); then
            phase=$(sql -c "$phase_sql" 2>/dev/null || true)
            phase=${phase:--}
        fi
        if [[ -n $anon ]]; then
            [[ -z $idle ]] && idle=$anon
            ((anon > peak)) && peak=$anon
            if [[ -n $phase_sql ]]; then
                [[ -n ${phase_peak[$phase]:-} ]] || { phase_peak[$phase]=0; phase_order+=("$phase"); }
                ((anon > phase_peak[$phase])) && phase_peak[$phase]=$anon
            fi
            [[ -n $h ]] && hwm=$h
            [[ -n $s ]] && shmem=$s
        fi
        sleep "$SAMPLE_S"
    done
    local rc=0
    wait "$psql_pid" || rc=$?
    t1=$(date +%s.%N)
    if ((rc != 0)); then
        cat "$TMP/$name.err" >&2
        die "$name failed (psql exit $rc)"
    fi
    # the statement's own duration from \timing (the session's pg_sleep excluded)
    SECS=$(awk '/^Time: / { printf "%.1f", $2 / 1000 }' "$outfile" "$outfile.stmt" 2>/dev/null | tail -n 1)
    [[ -n $SECS ]] || SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a - 0.5 }')
    OUT=$(grep -v '^Time: ' "$outfile.stmt" 2>/dev/null | tail -n 1 || true)
    IDLE_ANON=${idle:-0} PEAK_ANON=$peak HWM=$hwm SHMEM=$shmem
    PHASES=
    for phase in "${phase_order[@]}"; do
        PHASES+="${PHASES:+, }$phase $(mib "${phase_peak[$phase]}")"
    done
}

SAMPLE_S=$(awk -v ms="$SAMPLE_MS" 'BEGIN { printf "%.3f", ms / 1000 }')
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

ROWS_OUT=()
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

bench_size() {
    local n=$1 tag=m$1 t0 t1
    say "$n rows: loading legacy_$tag"
    t0=$(date +%s.%N)
    sql <<EOF >/dev/null
CREATE TABLE legacy_$tag (id bigint NOT NULL, v int NOT NULL);
CREATE TABLE target_$tag (item_id bigint PRIMARY KEY, val bigint NOT NULL);
ALTER TABLE legacy_$tag SET (autovacuum_enabled = off);
ALTER TABLE target_$tag SET (autovacuum_enabled = off);
INSERT INTO legacy_$tag SELECT g, (g % 1000003)::int FROM generate_series(1, $n) g;
ALTER TABLE legacy_$tag ADD PRIMARY KEY (id);
VACUUM ANALYZE legacy_$tag;
CHECKPOINT;
SELECT softmig.create_migration('$tag', 'legacy_$tag', 'target_$tag',
    forward  => '{"item_id": "id", "val": "v::bigint"}',
    backward => '{"id": "item_id", "v": "val::int"}');
SELECT softmig.advance('$tag');
EOF
    t1=$(date +%s.%N)
    local load_s
    load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
    say "$n rows: loaded in ${load_s}s; CALL softmig.backfill(batch_size => $BATCH)"

    run_sampled "backfill_$tag" "CALL softmig.backfill('$tag', batch_size => $BATCH)" \
        "SELECT coalesce(softmig.status('$tag')->'backfill'->>'phase', '-')"
    local bf_secs=$SECS bf_idle=$IDLE_ANON bf_peak=$PEAK_ANON bf_hwm=$HWM bf_shm=$SHMEM bf_phases=$PHASES

    # the copy is complete and exact (aggregates of both sides)
    local check
    check=$(sql -c "SELECT (SELECT count(*) || '/' || sum(id) || '/' || sum(v) FROM legacy_$tag) =
                           (SELECT count(*) || '/' || sum(item_id) || '/' || sum(val) FROM target_$tag)
                       AND (softmig.status('$tag')->>'backfill_done')::boolean")
    [[ $check == t ]] || die "$n rows: the backfill did not copy legacy exactly"
    local batches
    batches=$(sql -c "SELECT softmig.status('$tag')->'backfill'->>'batches'")
    say "$n rows: backfill ${bf_secs}s in $batches batches, peak RssAnon $(mib "$bf_peak") MiB ($bf_phases)"

    # a difference in every chunk, written by hand on the target
    local ndiff
    ndiff=$(sql <<EOF
BEGIN;
SET LOCAL softmig.override = 'memory bench: one difference per 1000 rows';
UPDATE target_$tag SET val = -1 WHERE item_id % 1000 = 0;
COMMIT;
SELECT count(*) FROM target_$tag WHERE val = -1;
EOF
)
    sql -c "VACUUM ANALYZE target_$tag" -c "CHECKPOINT" >/dev/null
    say "$n rows: $ndiff differences written; SELECT count(*) FROM softmig.parity(chunk_rows => $CHUNK)"
    run_sampled "parity_$tag" "SELECT count(*) FROM softmig.parity('$tag', chunk_rows => $CHUNK)"
    local pa_secs=$SECS pa_idle=$IDLE_ANON pa_peak=$PEAK_ANON pa_hwm=$HWM pa_shm=$SHMEM pa_found=$OUT
    [[ $pa_found == "$ndiff" ]] || die "$n rows: parity found '$pa_found' differences, $ndiff were written"
    say "$n rows: parity ${pa_secs}s, found $pa_found, peak RssAnon $(mib "$pa_peak") MiB"

    local size
    size=$(sql -c "SELECT pg_size_pretty(pg_total_relation_size('legacy_$tag'))")
    ROWS_OUT+=("| $n | $size | backfill, batch_size $BATCH ($batches batches) | $bf_secs | $(mib "$bf_idle") | **$(mib "$bf_peak")** | $bf_phases | $(mib "$bf_hwm") | $(mib "$bf_shm") |")
    ROWS_OUT+=("| $n | $size | parity, chunk_rows $CHUNK ($pa_found differences, every chunk) | $pa_secs | $(mib "$pa_idle") | **$(mib "$pa_peak")** | | $(mib "$pa_hwm") | $(mib "$pa_shm") |")

    # free the disk for the next size
    sql -c "SELECT softmig.rollback('$tag', 'bench done')" -c "SELECT softmig.drop_migration('$tag')" \
        -c "DROP TABLE legacy_$tag, target_$tag" -c "CHECKPOINT" >/dev/null
}

for n in $SMALL_ROWS $ROWS; do
    bench_size "$n"
done

T_END=$(date +%s)
STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUTDIR"
OUT_FILE=$OUTDIR/memory_$STAMP.md
HEAD=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo '?')
DIRTY=$(git -C "$HERE/.." status --porcelain -- src 2>/dev/null | head -n 1)
{
    echo "### softmig memory bench, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- command: \`BENCH_ROWS=$ROWS BENCH_SMALL_ROWS=\"$SMALL_ROWS\" BENCH_BATCH=$BATCH BENCH_CHUNK=$CHUNK BENCH_JIT=$JIT bash bench/memory_bench.sh\`"
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM; PostgreSQL $PGVERSION"
    echo "- server: defaults except shared_buffers=256MB, synchronous_commit=off, max_wal_size=8GB, autovacuum=off, jit=$JIT; work_mem $WORK_MEM"
    echo "- softmig: $SO (mtime $SO_MTIME, md5 $SO_MD5), repo HEAD $HEAD${DIRTY:+ (src/ has uncommitted changes)}"
    echo "- wall time $((T_END - T_START)) s; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "Tables: legacy(id bigint pk, v int) -> target(item_id bigint pk, val bigint). Memory of the backend running the statement, from /proc/<pid>/status, sampled every $SAMPLE_MS ms; MiB."
    echo
    echo "| legacy rows | legacy size | statement | seconds | RssAnon idle | RssAnon peak | RssAnon peak per phase | VmHWM | RssShmem at end |"
    echo "|---:|---:|---|---:|---:|---:|---|---:|---:|"
    printf '%s\n' "${ROWS_OUT[@]}"
    echo
    echo "Backfill phases (softmig.status()->'backfill'->>'phase', polled by another session about every $((SAMPLE_MS * 4)) ms): scan = the key-order batches, revisit = skipped ranges, verify = the anti-join sweeps and checks; '-' = before the first poll."
    echo
    echo "RssAnon is the backend's private memory (where palloc'ed memory lives). VmHWM is the kernel's peak resident set, which also counts the shared_buffers pages the backend touched (at most shared_buffers = 256MB) and the mapped binaries. Checks: the backfill copied legacy exactly (counts and sums, backfill_done), and parity found exactly the differences written: ok."
} | tee "$OUT_FILE"
say "report written to $OUT_FILE"
