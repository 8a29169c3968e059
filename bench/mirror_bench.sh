#!/usr/bin/env bash
#
# bench/mirror_bench.sh -- what does softmig's write mirroring cost?
#
# Starts ONE throwaway PostgreSQL 15 cluster (temp dir under /tmp, unix socket
# only, shared_preload_libraries = 'softmig'), runs the same work three ways
# and prints a markdown table of timings and ratios:
#
#   floor    by hand: set-based writes to both tables in one transaction, no
#            trigger (the cheapest a dual write can be)
#   plpgsql  a PL/pgSQL AFTER ... FOR EACH ROW trigger on legacy that upserts
#            (INSERT ... ON CONFLICT DO UPDATE) / deletes the mapped row in
#            target: how trigger-based migration tools do it today
#   softmig  softmig.create_migration + softmig.advance (state mirrored):
#            C AFTER STATEMENT triggers over transition tables
#
# Each method has its own table pair (legacy_<m>/target_<m>).  Work items run
# interleaved (floor, plpgsql, softmig for INSERT; then the same for UPDATE;
# then DELETE; then pgbench) so drift in machine load hits all methods alike.
# Before every timed item: VACUUM ANALYZE and CHECKPOINT.  After every item
# each pair is checked (row counts and a mapped EXCEPT both ways); a mismatch
# aborts the run.
#
#   bulk     BENCH_ROWS-row INSERT ... SELECT FROM generate_series, UPDATE of
#            every row (amount_cents and note), DELETE of every row; timed with
#            clock_timestamp() inside one psql session, commit included.
#   pgbench  BENCH_CLIENTS clients, BENCH_SECONDS each, -M prepared, single-row
#            upserts with a random id in 1..100000 over pre-loaded tables:
#            floor = BEGIN; upsert legacy; upsert target; END
#            plpgsql / softmig = one upsert into legacy (autocommit)
#
# Output: the table on stdout and in bench/out/mirror_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_ROWS=1000000   rows of the bulk work
#   BENCH_SECONDS=20     duration of each pgbench run
#   BENCH_CLIENTS=2      pgbench clients (and threads)
#   BENCH_ROUNDS=1       repeat every item this many times (still interleaved:
#                        round 1 of all methods, then round 2, ...) and report
#                        one value per item with the min..max spread
#   BENCH_STAT=best      with rounds > 1: best = fastest time / highest TPS of the
#                        rounds (other load only ever slows a run down, so the
#                        best round is the least disturbed one); median = median
#   BENCH_PORT=55500     port of the throwaway cluster
#   BENCH_KEEP=1         keep the temp dir (data dir, server log) on exit
#
# Needs PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin and
# softmig already installed there (this script never builds or installs).
# As root, the cluster runs as the postgres user (initdb refuses root).

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${BENCH_ROWS:-1000000}
SECS=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-2}
ROUNDS=${BENCH_ROUNDS:-1}
STAT=${BENCH_STAT:-best}
PORT=${BENCH_PORT:-55500}
PGBENCH_IDS=100000
METHODS=(floor plpgsql softmig)

[[ $ROWS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive integer (got '$ROWS')"
[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer (got '$SECS')"
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS must be a positive integer (got '$CLIENTS')"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $STAT == best || $STAT == median ]] || die "BENCH_STAT must be best or median (got '$STAT')"
[[ $PORT =~ ^[0-9]+$ ]] || die "BENCH_PORT must be a number (got '$PORT')"
bench_find_softmig initdb pg_ctl psql pgbench pg_config

# Who runs the server: initdb refuses root.
bench_os_user

SO_MD5_START=$(so_sum)
SO_MTIME=$(date -u -r "$SO" +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------------------
# The throwaway cluster
# ---------------------------------------------------------------------------
bench_init_cluster softmig-bench <<EOF
shared_preload_libraries = 'softmig'
synchronous_commit = off
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
bench_start
bench_psql_env
bench_create_db

PGVERSION=$(sql -c "SHOW server_version")

# ---------------------------------------------------------------------------
# Schema: one table pair per method
# ---------------------------------------------------------------------------
say "schema (3 table pairs), softmig migration m_softmig in state mirrored"
{
    echo "CREATE EXTENSION softmig;"
    for m in "${METHODS[@]}"; do
        cat <<EOF
CREATE TABLE legacy_$m (id bigint PRIMARY KEY, cust text NOT NULL,
                        amount_cents int NOT NULL, note text)
    WITH (autovacuum_enabled = off);
CREATE TABLE target_$m (order_id bigint PRIMARY KEY, customer text NOT NULL,
                        amount numeric(12,2) NOT NULL, note text)
    WITH (autovacuum_enabled = off);
EOF
    done
    # method 2: per-row PL/pgSQL mirror (key changes move the row, like softmig)
    bench_plpgsql_trigger_sql mirror_plpgsql legacy_plpgsql target_plpgsql forward
    cat <<'EOF'
-- method 3: softmig
SELECT softmig.create_migration('m_softmig', 'legacy_softmig', 'target_softmig',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
SELECT softmig.advance('m_softmig');
EOF
} | sql >/dev/null
[[ $(sql -c "SELECT softmig.state('m_softmig')") == mirrored ]] || die "m_softmig is not in state mirrored"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
settle() {
    sql -c "VACUUM ANALYZE" >/dev/null
    sql -c "CHECKPOINT" >/dev/null
}

# time_tx SQL: run SQL in one session, print the elapsed seconds (commit
# included; the SQL carries its own BEGIN/COMMIT).
time_tx() {
    sql <<EOF
SELECT clock_timestamp() AS softmig_bench_t0 \gset
$1
SELECT round(extract(epoch FROM clock_timestamp() - :'softmig_bench_t0'::timestamptz)::numeric, 3);
EOF
}

# verify METHOD EXPECTED_ROWS WHEN: target must equal the mapping of legacy.
verify() {
    local m=$1 want=$2 when=$3 nl nt missing extra res
    res=$(sql <<EOF
SELECT (SELECT count(*) FROM legacy_$m),
       (SELECT count(*) FROM target_$m),
       (SELECT count(*) FROM (
            SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note FROM legacy_$m
            EXCEPT
            SELECT order_id, customer, amount, note FROM target_$m) d),
       (SELECT count(*) FROM (
            SELECT order_id, customer, amount, note FROM target_$m
            EXCEPT
            SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note FROM legacy_$m) d);
EOF
    ) || die "verification query failed after $when ($m)"
    IFS='|' read -r nl nt missing extra <<<"$res"
    if [[ $nl != "$want" || $nt != "$nl" || $missing != 0 || $extra != 0 ]]; then
        printf '\n!!! MISMATCH after %s, method %s: legacy %s rows (expected %s), target %s rows, ' \
            "$when" "$m" "$nl" "$want" "$nt" >&2
        printf '%s legacy rows missing/different in target, %s target rows without their legacy row\n' \
            "$missing" "$extra" >&2
        exit 3
    fi
    if [[ $m == softmig ]]; then
        local st
        st=$(sql -c "SELECT softmig.state('m_softmig')")
        [[ $st == mirrored ]] || die "after $when m_softmig is in state '$st', not mirrored"
    fi
}

declare -A RES         # RES[method,work] = "v1 v2 ..." (one value per round)
WORKS=()               # work labels, in order
UNIT_OF=()             # parallel to WORKS: s or tps

record() { RES[$1,$2]="${RES[$1,$2]:-}${RES[$1,$2]:+ }$3"; }
add_work() { # LABEL UNIT, once
    local w
    for w in "${WORKS[@]}"; do [[ $w == "$1" ]] && return; done
    WORKS+=("$1"); UNIT_OF+=("$2")
}

gen_rows() { # the rows of the bulk INSERT, from generate_series
    echo "SELECT g, 'cust' || (g % 1000), ((g * 7) % 100000)::int,
                 CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END
            FROM generate_series(1, $1) g"
}

bulk_sql() { # METHOD WORK -> the timed transaction
    local m=$1 w=$2
    case $w in
        insert)
            if [[ $m == floor ]]; then
                echo "BEGIN;
INSERT INTO legacy_floor $(gen_rows "$ROWS");
INSERT INTO target_floor SELECT id, upper(cust), amount_cents / 100.0, note FROM legacy_floor;
COMMIT;"
            else
                echo "BEGIN;
INSERT INTO legacy_$m $(gen_rows "$ROWS");
COMMIT;"
            fi ;;
        update)
            if [[ $m == floor ]]; then
                echo "BEGIN;
UPDATE legacy_floor SET amount_cents = amount_cents + 1, note = coalesce(note, '') || ' u';
UPDATE target_floor SET amount = amount + 0.01, note = coalesce(note, '') || ' u';
COMMIT;"
            else
                echo "BEGIN;
UPDATE legacy_$m SET amount_cents = amount_cents + 1, note = coalesce(note, '') || ' u';
COMMIT;"
            fi ;;
        delete)
            if [[ $m == floor ]]; then
                echo "BEGIN;
DELETE FROM legacy_floor;
DELETE FROM target_floor;
COMMIT;"
            else
                echo "BEGIN;
DELETE FROM legacy_$m;
COMMIT;"
            fi ;;
    esac
}

# ---------------------------------------------------------------------------
# Bulk work: INSERT, UPDATE, DELETE of BENCH_ROWS rows
# ---------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
    declare -A TOT=()
    for w in insert update delete; do
        label="$(tr '[:lower:]' '[:upper:]' <<<"$w") $ROWS rows"
        add_work "$label" s
        want=$ROWS; [[ $w == delete ]] && want=0
        for m in "${METHODS[@]}"; do
            settle
            t=$(time_tx "$(bulk_sql "$m" "$w")")
            verify "$m" "$want" "bulk $w"
            record "$m" "$label" "$t"
            TOT[$m]=$(awk -v a="${TOT[$m]:-0}" -v b="$t" 'BEGIN { printf "%.3f", a + b }')
            say "$(printf 'round %d/%d  %-9s %-22s %10s s' "$r" "$ROUNDS" "$m" "$label" "$t")"
        done
    done
    add_work "bulk total (I+U+D)" s
    for m in "${METHODS[@]}"; do record "$m" "bulk total (I+U+D)" "${TOT[$m]}"; done
done

# ---------------------------------------------------------------------------
# pgbench: single-row upserts, BENCH_CLIENTS clients, BENCH_SECONDS each
# ---------------------------------------------------------------------------
say "pgbench: loading $PGBENCH_IDS rows into each pair"
for m in "${METHODS[@]}"; do
    if [[ $m == floor ]]; then
        sql -c "BEGIN; INSERT INTO legacy_floor $(gen_rows $PGBENCH_IDS);
                INSERT INTO target_floor SELECT id, upper(cust), amount_cents / 100.0, note FROM legacy_floor;
                COMMIT;" >/dev/null
    else
        sql -c "INSERT INTO legacy_$m $(gen_rows $PGBENCH_IDS)" >/dev/null
    fi
    verify "$m" "$PGBENCH_IDS" "pgbench load"
done

cat >"$TMP/pgb_floor.sql" <<EOF
\set id random(1, $PGBENCH_IDS)
\set amt random(0, 1000000)
BEGIN;
INSERT INTO legacy_floor (id, cust, amount_cents, note)
    VALUES (:id, 'cust' || (:id % 1000), :amt, 'pgbench')
    ON CONFLICT (id) DO UPDATE
    SET cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note;
INSERT INTO target_floor (order_id, customer, amount, note)
    VALUES (:id, upper('cust' || (:id % 1000)), :amt / 100.0, 'pgbench')
    ON CONFLICT (order_id) DO UPDATE
    SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note;
END;
EOF
# Informational only: the by-hand floor in ONE statement (writable CTE), so one
# client/server round trip per transaction like the trigger methods.
cat >"$TMP/pgb_floor_cte.sql" <<EOF
\set id random(1, $PGBENCH_IDS)
\set amt random(0, 1000000)
WITH l AS (
    INSERT INTO legacy_floor (id, cust, amount_cents, note)
        VALUES (:id, 'cust' || (:id % 1000), :amt, 'pgbench')
        ON CONFLICT (id) DO UPDATE
        SET cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note
        RETURNING id, cust, amount_cents, note)
INSERT INTO target_floor (order_id, customer, amount, note)
    SELECT id, upper(cust), amount_cents / 100.0, note FROM l
    ON CONFLICT (order_id) DO UPDATE
    SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note;
EOF
for m in plpgsql softmig; do
    cat >"$TMP/pgb_$m.sql" <<EOF
\set id random(1, $PGBENCH_IDS)
\set amt random(0, 1000000)
INSERT INTO legacy_$m (id, cust, amount_cents, note)
    VALUES (:id, 'cust' || (:id % 1000), :amt, 'pgbench')
    ON CONFLICT (id) DO UPDATE
    SET cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note;
EOF
done

pglabel="pgbench upsert ${CLIENTS}c ${SECS}s"
add_work "$pglabel" tps
for ((r = 1; r <= ROUNDS; r++)); do
for m in floor floor_cte plpgsql softmig; do
    settle
    out=$("$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" \
            -f "$TMP/pgb_$m.sql" 2>&1) || { printf '%s\n' "$out" >&2; die "pgbench ($m) failed"; }
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    [[ -n $tps ]] || { printf '%s\n' "$out" >&2; die "could not read the TPS of pgbench ($m)"; }
    [[ ${failed:-0} == 0 ]] || { printf '%s\n' "$out" >&2; die "pgbench ($m): $failed failed transactions"; }
    verify "${m%_cte}" "$PGBENCH_IDS" "pgbench ($m)"
    tps=$(awk -v x="$tps" 'BEGIN { printf "%.0f", x }')
    record "$m" "$pglabel" "$tps"
    say "$(printf 'round %d/%d  %-9s %-22s %10s tps' "$r" "$ROUNDS" "$m" "$pglabel" "$tps")"
done
done
T_END=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# Anomalies: server log, library swapped under us
# ---------------------------------------------------------------------------
ANOMALIES=()
n=$(grep -cE 'PANIC|terminated by signal|server process .* was terminated|TRAP:' "$LOG" || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n crash line(s) (PANIC / terminated by signal / TRAP)")
n=$(grep -cE '(ERROR|FATAL):' "$LOG" || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n ERROR/FATAL line(s), first: $(grep -m1 -E '(ERROR|FATAL):' "$LOG")")
n=$(grep -cE 'WARNING:' "$LOG" || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n WARNING line(s), first: $(grep -m1 -E 'WARNING:' "$LOG")")
[[ $(so_sum) == "$SO_MD5_START" ]] ||
    ANOMALIES+=("$SO changed on disk during the run (make install by someone?); the server kept the copy it preloaded at start (md5 ${SO_MD5_START:0:12}), but rerun to bench one consistent build")

# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
pick() { # "v1 v2 ..." UNIT -> the reported value (BENCH_STAT of the rounds)
    tr ' ' '\n' <<<"$1" | sort -g | awk -v u="$2" -v stat="$STAT" '{ a[NR] = $1 } END {
        if (stat == "best") m = (u == "s") ? a[1] : a[NR]
        else m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        if (u == "s") printf "%.3f", m; else printf "%.0f", m }'
}
minmax() { tr ' ' '\n' <<<"$1" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo ".." hi }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'; }

# target verdict for softmig rows
verdict() { # UNIT VALUE FLOOR PLPGSQL
    awk -v u="$1" -v v="$2" -v f="$3" -v p="$4" 'BEGIN {
        if (u == "s") {
            ok = (v <= 1.3 * f) && (v <= 0.5 * p)
            printf "<= 1.3x floor and <= 0.5x plpgsql: %s", ok ? "**met**" : "**missed**"
        } else {
            ok = (v >= 0.9 * f)
            printf ">= 0.9x floor TPS: %s", ok ? "**met**" : "**missed**"
        }
    }'
}

STAMP=$(date -u +%Y%m%d-%H%M%S)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
GITREV=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$HERE/.." status --porcelain -- src 2>/dev/null) ]]; then GITREV="$GITREV (src/ has uncommitted changes)"; fi

report() {
    echo "### softmig mirroring bench, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- command: \`BENCH_ROWS=$ROWS BENCH_SECONDS=$SECS BENCH_CLIENTS=$CLIENTS BENCH_ROUNDS=$ROUNDS$( ((ROUNDS > 1)) && echo " BENCH_STAT=$STAT") bash bench/mirror_bench.sh\`"
    echo "- machine: $(nproc) CPUs ($CPU), $MEM RAM; PostgreSQL $PGVERSION"
    echo "- server: defaults except synchronous_commit=off, shared_buffers=1GB, max_wal_size=8GB, checkpoint_timeout=30min (fsync on); bench tables have autovacuum off, VACUUM ANALYZE + CHECKPOINT before each timed item"
    echo "- softmig: $SO (mtime $SO_MTIME, md5 ${SO_MD5_START:0:12}), repo HEAD $GITREV"
    echo "- wall time of the timed part: $((T_END - T_START)) s; load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END"
    echo
    if ((ROUNDS > 1)); then
        if [[ $STAT == best ]]; then
            echo "Values are the best of $ROUNDS interleaved rounds (lowest time, highest TPS; spread = min..max of the rounds); ratios compare best with best."
        else
            echo "Values are medians of $ROUNDS interleaved rounds (spread = min..max); ratios are ratios of medians."
        fi
    fi
    echo "Bulk rows: seconds, lower is better (ratio = time / time of the reference)."
    echo "pgbench rows: transactions per second, higher is better (ratio = TPS / TPS of the reference)."
    echo
    local spreadh="" spreadsep=""
    if ((ROUNDS > 1)); then spreadh=" spread |"; spreadsep="---:|"; fi
    echo "| method | work | seconds or TPS |$spreadh vs floor | vs plpgsql | target (softmig) |"
    echo "|---|---|---:|$spreadsep---:|---:|---|"
    local i w u m v f p tgt spread unit
    for i in "${!WORKS[@]}"; do
        w=${WORKS[$i]}; u=${UNIT_OF[$i]}
        f=$(pick "${RES[floor,$w]}" "$u"); p=$(pick "${RES[plpgsql,$w]}" "$u")
        for m in floor floor_cte plpgsql softmig; do
            [[ -n ${RES[$m,$w]:-} ]] || continue
            v=$(pick "${RES[$m,$w]}" "$u")
            tgt=""
            [[ $m == softmig ]] && tgt=$(verdict "$u" "$v" "$f" "$p")
            unit=$u; [[ $u == s ]] || unit=tps
            spread=""
            ((ROUNDS > 1)) && spread=" $(minmax "${RES[$m,$w]}") |"
            printf '| %s | %s | %s %s |%s %s | %s | %s |\n' "$m" "$w" "$v" "$unit" "$spread" \
                "$(ratio "$v" "$f")" "$(ratio "$v" "$p")" "$tgt"
        done
    done
    echo
    if [[ -n ${RES[floor_cte,$pglabel]:-} ]]; then
        echo "floor_cte (informational, not a target reference): the by-hand floor as one statement (writable CTE), i.e. one round trip per transaction like the trigger methods; floor needs four (BEGIN, two upserts, END)."
        echo
    fi
    echo "Checks: after every item target = mapping of legacy for all three pairs (counts and mapped EXCEPT both ways): ok."
    if [[ ${#ANOMALIES[@]} -eq 0 ]]; then
        echo "Anomalies: none (no ERROR/WARNING/crash in the server log)."
    else
        echo "Anomalies:"
        local a
        for a in "${ANOMALIES[@]}"; do echo "- $a"; done
    fi
}

mkdir -p "$OUTDIR"
OUTFILE=$OUTDIR/mirror_$STAMP.md
report | tee "$OUTFILE"
say "written to $(realpath --relative-to="$PWD" "$OUTFILE")"
