#!/usr/bin/env bash
#
# bench/opkey_bench.sh -- what does an operation key cost a mirrored write?
#
# Starts ONE throwaway PostgreSQL 15 cluster (temp dir under /tmp, unix socket
# only, shared_preload_libraries = 'softmig', synchronous_commit = off), puts
# a pre-loaded table pair in state mirrored, and runs pgbench single-row
# upserts into legacy (mirrored into the target by softmig) three ways, side
# by side, interleaved round by round so drift in machine load hits them
# alike:
#
#   plain    autocommit:  INSERT ... ON CONFLICT DO UPDATE  (one statement)
#   nokey    BEGIN; SELECT set_config('bench.op', 'op-' || nextval(..), true);
#            upsert; END;   -- the shape of a keyed transaction, no key
#   key      BEGIN; SELECT set_config('softmig.operation_key', 'op-' || nextval(..), true);
#            upsert; END;   -- a fresh operation key per transaction: one
#                              ledger claim (index probe + insert) each
#
# key vs nokey is the price of the claim itself; key vs plain is what an
# application pays end to end for adopting keys (two extra round trips).
# Before every run: VACUUM ANALYZE and CHECKPOINT; autovacuum is off on the
# bench tables and the ledger.  After the last run the
# script checks that every keyed transaction left exactly one ledger row and
# that target still equals legacy mapped forward.
#
# Output: a markdown table on stdout and in bench/out/opkey_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_SECONDS=15     duration of each pgbench run
#   BENCH_CLIENTS=2      pgbench clients (and threads)
#   BENCH_ROUNDS=3       rounds of (plain, nokey, key); medians are reported
#   BENCH_ROWS=100000    pre-loaded rows; upserts hit random ids in 1..BENCH_ROWS
#   BENCH_PORT=55501     port of the throwaway cluster
#   BENCH_KEEP=1         keep the temp dir (data dir, server log) on exit
#
# Needs PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin and
# softmig already installed there (this script never builds or installs).
# As root, the cluster runs as the postgres user (initdb refuses root).

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${BENCH_SECONDS:-15}
CLIENTS=${BENCH_CLIENTS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
ROWS=${BENCH_ROWS:-100000}
PORT=${BENCH_PORT:-55501}
VARIANTS=(plain nokey key)

for v in SECS CLIENTS ROUNDS ROWS PORT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
bench_find_softmig initdb pg_ctl psql pgbench pg_config
grep -q operation_key "$SO" ||
    die "the installed softmig.so has no operation keys (run make install from this tree)"

bench_os_user

# ---------------------------------------------------------------------------
# The throwaway cluster
# ---------------------------------------------------------------------------
bench_init_cluster softmig-opkey-bench <<EOF
shared_preload_libraries = 'softmig'
synchronous_commit = off
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
bench_start
bench_psql_env
bench_create_db
PGVERSION=$(sql -c "SHOW server_version")

say "schema: legacy_o/target_o with $ROWS rows, migration m in state mirrored"
sql >/dev/null <<EOF
CREATE EXTENSION softmig;
CREATE TABLE legacy_o (id bigint PRIMARY KEY, cust text NOT NULL,
                       amount_cents int NOT NULL, note text);
CREATE TABLE target_o (order_id bigint PRIMARY KEY, customer text NOT NULL,
                       amount numeric(12,2) NOT NULL, note text);
INSERT INTO legacy_o SELECT g, 'cust' || (g % 1000), g % 100000, 'note ' || g
  FROM generate_series(1, $ROWS) g;
INSERT INTO target_o SELECT id, upper(cust), amount_cents / 100.0, note FROM legacy_o;
SELECT softmig.create_migration('m', 'legacy_o', 'target_o',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
SELECT softmig.advance('m');
CREATE SEQUENCE op_keys;
-- autovacuum must not land inside one variant's window (VACUUM runs between runs)
ALTER TABLE legacy_o SET (autovacuum_enabled = off);
ALTER TABLE target_o SET (autovacuum_enabled = off);
ALTER TABLE softmig.operations SET (autovacuum_enabled = off);
EOF
[[ $(sql -c "SELECT softmig.state('m'::text)") == mirrored ]] || die "m is not in state mirrored"

UPSERT="INSERT INTO legacy_o (id, cust, amount_cents, note) VALUES (:id, 'bench', :id % 100000, 'pgbench')
    ON CONFLICT (id) DO UPDATE SET amount_cents = (legacy_o.amount_cents + 1) % 100000, note = EXCLUDED.note;"
for v in "${VARIANTS[@]}"; do
    {
        echo "\\set id random(1, $ROWS)"
        case $v in
            plain) echo "$UPSERT" ;;
            nokey) printf 'BEGIN;\nSELECT set_config(%s, %s, true);\n%s\nEND;\n' \
                       "'bench.op'" "'op-' || nextval('op_keys')" "$UPSERT" ;;
            key)   printf 'BEGIN;\nSELECT set_config(%s, %s, true);\n%s\nEND;\n' \
                       "'softmig.operation_key'" "'op-' || nextval('op_keys')" "$UPSERT" ;;
        esac
    } >"$TMP/$v.pgbench"
done
chmod a+r "$TMP"/*.pgbench

settle() {
    sql -c "VACUUM ANALYZE" >/dev/null
    sql -c "CHECKPOINT" >/dev/null
}

declare -A TPS
KEYED_TX=0
for ((r = 1; r <= ROUNDS; r++)); do
    for v in "${VARIANTS[@]}"; do
        settle
        say "round $r/$ROUNDS: $v ($CLIENTS clients, ${SECS}s)"
        out=$("$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -f "$TMP/$v.pgbench" 2>&1) ||
            { printf '%s\n' "$out" >&2; die "pgbench ($v) failed"; }
        grep -q 'number of failed transactions: 0 ' <<<"$out" ||
            { printf '%s\n' "$out" >&2; die "pgbench ($v) had failed transactions"; }
        tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
        [[ -n $tps ]] || { printf '%s\n' "$out" >&2; die "no tps in pgbench output ($v)"; }
        tps=$(printf '%.0f' "$tps")
        TPS[$v]="${TPS[$v]:-}${TPS[$v]:+ }$tps"
        if [[ $v == key ]]; then
            n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
            KEYED_TX=$((KEYED_TX + n))
        fi
    done
done

# Server time per transaction, without client round trips: a procedure that
# commits every upsert, timed by the backend's own CPU time (utime + stime
# from /proc, clock ticks), which other load on the machine does not inflate,
# and by the wall clock.  key - nokey is the claim's cost in microseconds.
TICK_HZ=$(getconf CLK_TCK)
sql >/dev/null <<EOF
CREATE FUNCTION cpu_ticks() RETURNS bigint LANGUAGE sql AS \$\$
    SELECT f[12]::bigint + f[13]::bigint   -- utime, stime (fields 14, 15)
      FROM (SELECT string_to_array(split_part(
                pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ') ', 2), ' ') AS f) s
\$\$;
CREATE PROCEDURE loop_upserts(n int, keyed boolean, INOUT cpu_us numeric DEFAULT NULL,
                              INOUT wall_us numeric DEFAULT NULL)
LANGUAGE plpgsql AS \$\$
DECLARE
    t0 timestamptz := clock_timestamp();
    c0 bigint := cpu_ticks();
    v_id bigint;
BEGIN
    FOR i IN 1..n LOOP
        v_id := 1 + (random() * ($ROWS - 1))::bigint;
        IF keyed THEN
            PERFORM set_config('softmig.operation_key', 'loop-' || nextval('op_keys'), true);
        ELSE
            PERFORM set_config('bench.op', 'loop-' || nextval('op_keys'), true);
        END IF;
        INSERT INTO legacy_o (id, cust, amount_cents, note) VALUES (v_id, 'bench', v_id % 100000, 'loop')
            ON CONFLICT (id) DO UPDATE SET amount_cents = (legacy_o.amount_cents + 1) % 100000, note = EXCLUDED.note;
        COMMIT;
    END LOOP;
    cpu_us := round((cpu_ticks() - c0) * 1e6 / $TICK_HZ / n, 1);
    wall_us := round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1e6 / n, 1);
END \$\$;
EOF
LOOP_N=$((SECS * 2000))
declare -A US WALL
for ((r = 1; r <= ROUNDS; r++)); do
    for v in nokey key; do
        settle
        say "round $r/$ROUNDS: server loop, $v ($LOOP_N transactions)"
        IFS='|' read -r us wall < <(sql -c "CALL loop_upserts($LOOP_N, $([[ $v == key ]] && echo true || echo false))")
        US[$v]="${US[$v]:-}${US[$v]:+ }$us"
        WALL[$v]="${WALL[$v]:-}${WALL[$v]:+ }$wall"
        if [[ $v == key ]]; then KEYED_TX=$((KEYED_TX + LOOP_N)); fi
    done
done

say "checking: one ledger row per keyed transaction, target = legacy mapped"
ledger=$(sql -c "SELECT count(*) FROM softmig.operations")
[[ $ledger == "$KEYED_TX" ]] || die "ledger has $ledger rows, $KEYED_TX keyed transactions ran"
diff=$(sql -c "SELECT count(*) FROM (
    (SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note FROM legacy_o
     EXCEPT SELECT order_id, customer, amount, note FROM target_o)
    UNION ALL
    (SELECT order_id, customer, amount, note FROM target_o
     EXCEPT SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note FROM legacy_o)) d")
[[ $diff == 0 ]] || die "target differs from legacy in $diff rows"

median() { # VALUES [PRINTF-FORMAT]
    tr ' ' '\n' <<<"$1" | sort -n |
        awk -v f="${2:-%.0f}" '{ v[NR] = $1 } END { printf f, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
P=$(median "${TPS[plain]}")
N=$(median "${TPS[nokey]}")
K=$(median "${TPS[key]}")
UN=$(median "${US[nokey]}" %.1f)
UK=$(median "${US[key]}" %.1f)
WN=$(median "${WALL[nokey]}" %.1f)
WK=$(median "${WALL[key]}" %.1f)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
NCPU=$(nproc)
MEM=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$OUTDIR"
OUT=$OUTDIR/opkey_$(date -u +%Y%m%d-%H%M%S).md
{
    echo "## opkey_bench.sh, $NOW"
    echo
    echo "PostgreSQL $PGVERSION, $NCPU x $CPU, $MEM; synchronous_commit = off;"
    echo "$CLIENTS clients, ${SECS}s per run, $ROUNDS rounds (interleaved), -M prepared,"
    echo "single-row upserts into legacy (random id in 1..$ROWS) mirrored into the target."
    echo
    echo "| variant | what runs | TPS per round | median TPS | vs nokey | vs plain |"
    echo "|---|---|---|---|---|---|"
    echo "| plain | autocommit upsert | ${TPS[plain]} | $P | $(ratio "$P" "$N") | 1.000 |"
    echo "| nokey | BEGIN; set_config('bench.op'); upsert; END | ${TPS[nokey]} | $N | 1.000 | $(ratio "$N" "$P") |"
    echo "| key | BEGIN; set_config('softmig.operation_key'); upsert; END | ${TPS[key]} | $K | $(ratio "$K" "$N") | $(ratio "$K" "$P") |"
    echo
    echo "Server time per transaction: a procedure committing $LOOP_N upserts per run (same"
    echo "upsert, same set_config, no client round trips); backend CPU time from /proc"
    echo "(${TICK_HZ} Hz ticks) and wall clock:"
    echo
    echo "| variant | CPU µs/tx per round | median CPU µs | wall µs/tx per round | median wall µs | claim cost (CPU) |"
    echo "|---|---|---|---|---|---|"
    echo "| nokey | ${US[nokey]} | $UN | ${WALL[nokey]} | $WN | |"
    echo "| key | ${US[key]} | $UK | ${WALL[key]} | $WK | $(awk -v a="$UK" -v b="$UN" 'BEGIN { printf "%+.1f µs (%+.0f %%)", a - b, (a - b) * 100 / b }') |"
    echo
    echo "Ledger rows after the runs: $ledger (one per keyed transaction); target = legacy mapped: yes."
} | tee "$OUT"
say "written to ${OUT#"$HERE"/}"
