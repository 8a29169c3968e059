#!/usr/bin/env bash
#
# bench/oltp_insn_bench.sh -- single-row writes counted in instructions:
# what does softmig cost per statement, against the in-server floor and a
# PL/pgSQL row trigger, in a measure the load of other sessions cannot move?
#
# The same three methods, two states and workloads as bench/oltp_bench.sh
# (floor: one statement writing both tables; plpgsql: an AFTER ROW trigger;
# softmig: its statement triggers; mirrored and new_write), but each run is
# one standalone backend (postgres --single) under valgrind --tool=callgrind
# executing prepared statements (PREPARE once, then EXECUTE, as pgbench -M
# prepared does).  Instructions per transaction = (Ir(N2) - Ir(N1)) / (N2 -
# N1) over two runs of N1 and N2 transactions from the same copy of the data
# directory, so start-up, the first plans and shut-down cancel out.
#
# Workloads: update (UPDATE of two non-key columns by key), insdel (INSERT
# of a new key, then DELETE of it), ins (the INSERT alone), del (DELETE of a
# pre-loaded row).
#
# Output: a markdown table (instructions per transaction, ratios to floor
# and plpgsql) on stdout and in bench/out/insn_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_N1=100, BENCH_N2=500      transactions of the two runs
#   BENCH_IDS=20000                 rows pre-loaded into each pair
#   BENCH_STATES="mirrored new_write"
#   BENCH_WORKS="update insdel ins del"
#   BENCH_METHODS="floor plpgsql softmig"
#   BENCH_PORT=55520                port of the set-up server
#   BENCH_KEEP=1                    keep the temp dir on exit

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N1=${BENCH_N1:-100}
N2=${BENCH_N2:-500}
IDS=${BENCH_IDS:-20000}
STATES=${BENCH_STATES:-mirrored new_write}
WORKS=${BENCH_WORKS:-update insdel ins del}
METHODS=${BENCH_METHODS:-floor plpgsql softmig}
PORT=${BENCH_PORT:-55520}

for v in N1 N2 IDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
((N2 > N1)) || die "BENCH_N2 must be larger than BENCH_N1"
((N2 <= IDS)) || die "BENCH_N2 must not exceed BENCH_IDS (del deletes pre-loaded rows)"
for s in $STATES; do [[ $s == mirrored || $s == new_write ]] || die "unknown state '$s'"; done
for w in $WORKS; do [[ $w =~ ^(update|insdel|ins|del)$ ]] || die "unknown workload '$w'"; done
for m in $METHODS; do [[ $m =~ ^(floor|plpgsql|softmig)$ ]] || die "unknown method '$m'"; done
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
bench_find_softmig initdb pg_ctl psql postgres pg_config
bench_os_user
SO_MD5_START=$(so_sum)

bench_init_cluster softmig-insn <<EOF
shared_preload_libraries = 'softmig'
synchronous_commit = off
autovacuum = off
EOF
bench_start
bench_psql_env
bench_create_db
PGVERSION=$(sql -c "SHOW server_version")

sfx() { bench_oltp_state_suffix "$1"; }

say "schema: 3 table pairs per state, $IDS rows each"
{
    bench_oltp_schema_sql "$IDS" "$STATES" "floor plpgsql softmig"
    echo "VACUUM ANALYZE;"
    echo "CHECKPOINT;"
} | sql >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || die "the server did not stop"

# statements STATE WORK METHOD N: the PREPAREs and N transactions of EXECUTEs
statements() {
    local s=$1 w=$2 m=$3 n=$4 x p L T a b k
    x=$(sfx "$s"); p=${m}_$x; L=legacy_$p; T=target_$p
    # a: the authoritative table and its key; b: the other one and its key
    if [[ $s == mirrored ]]; then a="$L id"; b="$T order_id"; else a="$T order_id"; b="$L id"; fi
    local ains aupd dmap
    if [[ $s == mirrored ]]; then
        ains="INSERT INTO $L (id, cust, amount_cents, note) VALUES (\$1, 'cust' || (\$1 % 1000), \$2, 'pgbench')"
        aupd="UPDATE $L SET amount_cents = \$2, note = 'pgbench' WHERE id = \$1"
        dmap="INSERT INTO $T (order_id, customer, amount, note) SELECT id, upper(cust), amount_cents / 100.0, note FROM w ON CONFLICT (order_id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note"
    else
        ains="INSERT INTO $T (order_id, customer, amount, note) VALUES (\$1, 'CUST' || (\$1 % 1000), \$2 / 100.0, 'pgbench')"
        aupd="UPDATE $T SET amount = \$2 / 100.0, note = 'pgbench' WHERE order_id = \$1"
        dmap="INSERT INTO $L (id, cust, amount_cents, note) SELECT order_id, lower(customer), (amount * 100)::int, note FROM w ON CONFLICT (id) DO UPDATE SET cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note"
    fi
    read -r at ak <<<"$a"; read -r bt bk <<<"$b"
    if [[ $m == floor ]]; then
        echo "PREPARE i(bigint, int) AS WITH w AS ($ains RETURNING *) $dmap;"
        echo "PREPARE u(bigint, int) AS WITH w AS ($aupd RETURNING *) $dmap;"
        echo "PREPARE d(bigint) AS WITH w AS (DELETE FROM $at WHERE $ak = \$1 RETURNING $ak) DELETE FROM $bt o USING w WHERE o.$bk = w.$ak;"
    else
        echo "PREPARE i(bigint, int) AS $ains;"
        echo "PREPARE u(bigint, int) AS $aupd;"
        echo "PREPARE d(bigint) AS DELETE FROM $at WHERE $ak = \$1;"
    fi
    for ((k = 1; k <= n; k++)); do
        case $w in
        update) echo "EXECUTE u($(((k * 7919) % IDS + 1)), $((k * 37 % 100000)));" ;;
        insdel) echo "EXECUTE i($((1000000000 + k)), $((k * 37 % 100000)));"
                echo "EXECUTE d($((1000000000 + k)));" ;;
        ins) echo "EXECUTE i($((1000000000 + k)), $((k * 37 % 100000)));" ;;
        del) echo "EXECUTE d($k);" ;;
        esac
    done
}

declare -A IR
T_START=$(date +%s)
for s in $STATES; do
    for w in $WORKS; do
        for m in $METHODS; do
            statements "$s" "$w" "$m" "$N1" >"$TMP/a.sql"
            statements "$s" "$w" "$m" "$N2" >"$TMP/b.sql"
            chmod a+r "$TMP/a.sql" "$TMP/b.sql"
            a=$(bench_callgrind_ir "$TMP/a.sql")
            b=$(bench_callgrind_ir "$TMP/b.sql")
            IR[$s,$w,$m]=$(((b - a) / (N2 - N1)))
            say "$(printf '%-9s %-6s %-8s %9d instructions per transaction' "$s" "$w" "$m" "${IR[$s,$w,$m]}")"
        done
    done
done
T_END=$(date +%s)

ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }' || echo "n/a"; }
report() {
    local s w
    echo "### softmig single-row writes in instructions, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- command: \`BENCH_N1=$N1 BENCH_N2=$N2 BENCH_IDS=$IDS BENCH_WORKS=\"$WORKS\" bash bench/oltp_insn_bench.sh\`"
    echo "- PostgreSQL $PGVERSION; softmig $SO (md5 ${SO_MD5_START:0:12}), repo HEAD $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown); wall time $((T_END - T_START)) s"
    echo "- callgrind, postgres --single, prepared statements; instructions per transaction = (Ir($N2) - Ir($N1)) / $((N2 - N1))"
    echo
    echo "| state | work | floor | plpgsql | softmig | floor / softmig (goal >= 0.95x) | plpgsql / softmig (goal >= 1.05x) |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for s in $STATES; do
        for w in $WORKS; do
            echo "| $s | $w | ${IR[$s,$w,floor]:-} | ${IR[$s,$w,plpgsql]:-} | ${IR[$s,$w,softmig]:-} | $(ratio "${IR[$s,$w,floor]:-}" "${IR[$s,$w,softmig]:-}") | $(ratio "${IR[$s,$w,plpgsql]:-}" "${IR[$s,$w,softmig]:-}") |"
        done
    done
    [[ $(so_sum) == "$SO_MD5_START" ]] || { echo; echo "Anomalies: $SO changed on disk during the run; rerun."; }
}

mkdir -p "$OUTDIR"
OUTFILE=$OUTDIR/insn_$(date -u +%Y%m%d-%H%M%S).md
report | tee "$OUTFILE"
say "written to $(realpath --relative-to="$PWD" "$OUTFILE")"
