#!/usr/bin/env bash
#
# bench/remote_bench.sh -- what do migrations across databases cost?
# (doc/cross-database.md)
#
# Starts TWO throwaway PostgreSQL 15 clusters (temp dir under /tmp, unix
# sockets only, wal_level = logical, softmig preloaded): A, the publisher,
# and B, the subscriber.  Two table pairs with the same columns:
#
#   softmig  legacy_orders in A -> orders in B: a cross-database migration in
#            state mirrored (subscription <tag>_fwd applies to the landing
#            copy, whose apply trigger maps each row into the target)
#   plain    plain_orders in A -> plain_orders in B: a plain publication and
#            subscription of the same table, nothing else
#
# 1. Mirrored-lag throughput.  Both subscriptions are disabled; A then runs
#    the same work on both tables (BENCH_ROWS rows inserted, then all of
#    them updated, in transactions of BENCH_BATCH rows), which piles up in
#    the slots as lag.  Then, one subscription at a time, B enables it and
#    times how long its apply takes until its replication origin has
#    applied A's WAL up to the end of that work: rows applied per second at
#    the subscriber.  Rounds alternate which side goes first; the best round
#    of each counts (other load only slows a run down).  The ratio
#    softmig / plain is the cost of mapping at the subscriber.
# 2. Cross-cluster parity.  softmig.remote_parity_report in B (state
#    mirrored: B compares), BENCH_PARITY_RUNS times: rows per second of the
#    chunk digest on each side (rows / ms_digest_*), and of the whole
#    comparison (both sides' rows over its wall time, both layers).  For
#    scale, a plain full scan hashing every row (sum(hashtext(t::text))) on
#    each side, the same rows.  The digest cache is off (softmig.parity_cache),
#    so the mapping layer reads both tables in full every run.  The two
#    digests run at once; A's time is measured until its result arrives, so
#    it is at least B's (an upper bound of A's own time).
#
# Output: markdown tables on stdout and in bench/out/remote_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_ROWS=100000       rows inserted (then updated) per table
#   BENCH_BATCH=1000        rows per transaction of the work
#   BENCH_ROUNDS=2          lag measurements per side
#   BENCH_PARITY_RUNS=3     parity runs (best counts)
#   BENCH_PGBIN=...         PostgreSQL 15 server binaries (default: Debian's)
#   BENCH_PORT=56100        port of A (B: +1)
#   BENCH_KEEP=1            keep the temp dir on exit
#
# Softmig must be installed in BENCH_PGBIN's server (this script never
# builds or installs).  As root, the clusters run as the postgres user.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PGBIN=${BENCH_PGBIN:-$PGBIN}

ROWS=${BENCH_ROWS:-100000}
BATCH=${BENCH_BATCH:-1000}
ROUNDS=${BENCH_ROUNDS:-2}
PRUNS=${BENCH_PARITY_RUNS:-3}
PORT=${BENCH_PORT:-56100}
PORTB=$((PORT + 1))

bench_find_softmig initdb pg_ctl psql
bench_os_user
SUM0=$(so_sum)

TMP=$(mktemp -d /tmp/softmig-remote-bench.XXXXXX)
[[ $EUID -eq 0 ]] && chown "$PGUSER_OS": "$TMP"
cleanup() {
    local rc=$? d
    trap - EXIT INT TERM
    for d in a b; do
        [[ -f $TMP/$d/postmaster.pid ]] &&
            { as_pg "$PGBIN/pg_ctl" -D "$TMP/$d" -m fast -w -t 60 stop >/dev/null 2>&1 ||
              as_pg "$PGBIN/pg_ctl" -D "$TMP/$d" -m immediate -w stop >/dev/null 2>&1 || true; }
    done
    if [[ $rc -ne 0 ]]; then
        for d in a b; do [[ -f $TMP/$d.log ]] && { printf '\n--- %s.log ---\n' "$d" >&2; tail -n 20 "$TMP/$d.log" >&2; }; done
    fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for d in a b; do
    port=$PORT; [[ $d == b ]] && port=$PORTB
    say "initdb $d in $TMP (as $PGUSER_OS, port $port)"
    as_pg "$PGBIN/initdb" -D "$TMP/$d" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$TMP/initdb_$d.log" 2>&1 ||
        { cat "$TMP/initdb_$d.log" >&2; die "initdb failed"; }
    cat >>"$TMP/$d/postgresql.conf" <<EOF

# --- $BENCH_SCRIPT: defaults except these ---
listen_addresses = ''
unix_socket_directories = '$TMP'
port = $port
shared_preload_libraries = 'softmig'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
shared_buffers = 256MB
max_wal_size = 4GB
softmig.remote_timeout = '600s'
wal_retrieve_retry_interval = 100ms
EOF
    as_pg "$PGBIN/pg_ctl" -D "$TMP/$d" -l "$TMP/$d.log" -w -t 120 start >/dev/null || die "cluster $d did not start"
done
export PGHOST=$TMP PGUSER=postgres
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)
sa() { "${PSQL[@]}" -At -p "$PORT" -d bench "$@"; }
sb() { "${PSQL[@]}" -At -p "$PORTB" -d bench "$@"; }
"${PSQL[@]}" -p "$PORT" -d postgres -c "CREATE DATABASE bench"
"${PSQL[@]}" -p "$PORTB" -d postgres -c "CREATE DATABASE bench"

say "schema, migration in state mirrored, plain replication"
sa <<'SQL' >/dev/null
CREATE EXTENSION softmig;
CREATE TABLE legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL, status text NOT NULL);
CREATE TABLE plain_orders (LIKE legacy_orders INCLUDING ALL);
CREATE PUBLICATION plain_pub FOR TABLE plain_orders;
-- the work, the same for both tables: inserts, then updates of every row
CREATE PROCEDURE work(tbl regclass, n bigint, batch int)
LANGUAGE plpgsql AS $$
DECLARE
    i bigint := 0;
BEGIN
    WHILE i < n LOOP
        EXECUTE format('INSERT INTO %s SELECT g, ''customer'' || (g %% 5000), (g * 37) %% 100000, ''new''
                          FROM generate_series($1 + 1, $1 + $2) g', tbl) USING i, LEAST(batch, n - i);
        COMMIT;
        i := i + batch;
    END LOOP;
    i := 0;
    WHILE i < n LOOP
        EXECUTE format('UPDATE %s SET amount_cents = amount_cents + 1, status = ''paid'' WHERE id > $1 AND id <= $1 + $2', tbl)
            USING i, batch;
        COMMIT;
        i := i + batch;
    END LOOP;
END $$;
SQL
sb <<SQL >/dev/null
CREATE EXTENSION softmig;
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL, status text NOT NULL);
CREATE TABLE plain_orders (id bigint PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL, status text NOT NULL);
CREATE SUBSCRIPTION plain_sub CONNECTION 'host=$TMP port=$PORT dbname=bench user=postgres' PUBLICATION plain_pub
    WITH (copy_data = false);
SELECT softmig.create_remote_migration('orders', 'public.legacy_orders', 'orders',
    legacy_conninfo => 'host=$TMP port=$PORT dbname=bench user=postgres',
    target_conninfo => 'host=$TMP port=$PORTB dbname=bench user=postgres',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0", "status": "status"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int", "status": "status"}');
CALL softmig.remote_advance('orders');
-- wait until origin of subscription sub has applied the publisher's WAL up to lsn
CREATE FUNCTION wait_applied(sub name, lsn pg_lsn) RETURNS timestamptz
LANGUAGE plpgsql AS \$\$
DECLARE
    v_origin text := 'pg_' || (SELECT oid FROM pg_subscription WHERE subname = sub);
BEGIN
    LOOP
        EXIT WHEN (SELECT COALESCE(remote_lsn, '0/0') FROM pg_replication_origin_status WHERE external_id = v_origin) >= lsn;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN clock_timestamp();
END \$\$;
SQL
TAG=$(sb -c "SELECT tag FROM softmig.remote_migrations WHERE name = 'orders'")
FWD=${TAG}_fwd
for _ in $(seq 1 600); do
    [[ $(sb -c "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel") == t ]] && break
    sleep 0.1
done
sb -c "CALL softmig.backfill('orders')" >/dev/null 2>&1

declare -A BEST
# the work reuses the same ids each round: clear both tables (through
# replication) between rounds
reset_tables() {
    local lsn
    [[ $(sa -c "SELECT EXISTS (SELECT FROM plain_orders) AND EXISTS (SELECT FROM legacy_orders)") == t ]] || return 0
    # (a replicated transaction whose commit ends after lsn, on each table)
    lsn=$(sa -c "SELECT pg_current_wal_lsn()")
    sa -c "DELETE FROM plain_orders" >/dev/null
    sa -c "DELETE FROM legacy_orders" >/dev/null
    sb -c "SELECT wait_applied('plain_sub', '$lsn'), wait_applied('$FWD', '$lsn')" >/dev/null
}
# enable sub and time its catch-up to lsn (ms), in one session of B
catch_up_ms() {
    local sub=$1 lsn=$2
    sb -c "SELECT set_config('bench.t0', clock_timestamp()::text, false)" \
       -c "ALTER SUBSCRIPTION $sub ENABLE" \
       -c "SELECT round(1000 * extract(epoch FROM wait_applied('$sub', '$lsn') - current_setting('bench.t0')::timestamptz), 1)" | tail -n 1
}
run_round() {
    local r=$1 first second side sub tbl lsn ms
    if (( r % 2 )); then first=plain second=softmig; else first=softmig second=plain; fi
    reset_tables
    for side in $first $second; do
        if [[ $side == softmig ]]; then sub=$FWD tbl=legacy_orders; else sub=plain_sub tbl=plain_orders; fi
        sb -c "ALTER SUBSCRIPTION $sub DISABLE" >/dev/null
        for _ in $(seq 1 600); do
            [[ $(sb -c "SELECT count(*) FROM pg_stat_subscription WHERE subname = '$sub' AND pid IS NOT NULL") == 0 ]] && break
            sleep 0.1
        done
        # the apply worker must be gone from the slot before the work starts
        for _ in $(seq 1 600); do
            [[ $(sa -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$sub' AND active") == 0 ]] && break
            sleep 0.1
        done
        say "round $r: $side: the work on A ($ROWS inserts + $ROWS updates) with the subscription disabled"
        sa -c "CALL work('$tbl', $ROWS, $BATCH)" >/dev/null
        # the end: one more replicated change, whose commit ends after lsn
        lsn=$(sa -c "SELECT pg_current_wal_lsn()")
        sa -c "UPDATE $tbl SET status = 'shipped' WHERE id = 1" >/dev/null
        ms=$(catch_up_ms "$sub" "$lsn")
        say "round $r: $side: caught up in $ms ms"
        LAG[$side,$r]=$ms
        if [[ -z ${BEST[$side]:-} ]] || awk -v a="$ms" -v b="${BEST[$side]}" 'BEGIN { exit !(a < b) }'; then
            BEST[$side]=$ms
        fi
    done
}
declare -A LAG
for r in $(seq 1 "$ROUNDS"); do run_round "$r"; done

# the two sides hold the same rows
[[ $(sa -c "SELECT count(*) FROM legacy_orders") == $(sb -c "SELECT count(*) FROM orders") ]] ||
    die "the target does not hold the legacy rows"
[[ $(sb -c "SELECT count(*) FROM softmig.parity('orders')") == 0 ]] || die "parity of the landing copy and the target is not clean"

say "cross-cluster parity, $PRUNS runs"
NROWS=$(sa -c "SELECT count(*) FROM legacy_orders")
sa -c "VACUUM ANALYZE legacy_orders" >/dev/null
sb -c "VACUUM ANALYZE legacy_orders" -c "VACUUM ANALYZE orders" >/dev/null
PBEST=
for i in $(seq 1 "$PRUNS"); do
    line=$(sb -c "SET softmig.parity_cache = off" -c "SELECT format('%s %s %s %s %s %s', r->'stats'->>'rows_here', r->'stats'->>'rows_there',
                                r->'stats'->>'ms_digest_here', r->'stats'->>'ms_digest_there',
                                round(1000 * extract(epoch FROM clock_timestamp() - t0), 1), jsonb_array_length(r->'differences'))
                    FROM (SELECT clock_timestamp() AS t0) x, LATERAL (SELECT softmig.remote_parity_report('orders', 10000) AS r) y")
    say "parity run $i: rows_here rows_there ms_here ms_there ms_total differences = $line"
    read -r rh rt mh mt mtot nd <<<"$line"
    [[ $nd == 0 ]] || die "parity found $nd differences"
    if [[ -z $PBEST ]] || awk -v a="$mtot" -v b="${PBEST##* }" 'BEGIN { exit !(a < b) }'; then
        PBEST="$rh $rt $mh $mt $mtot"
    fi
done
read -r rh rt mh mt mtot <<<"$PBEST"
# a plain full scan hashing every row, in one session per side, best of 3
scan_best() {
    local f=sa best= v; [[ $1 == b ]] && f=sb
    for _ in 1 2 3; do
        v=$($f -c "SELECT set_config('bench.t0', clock_timestamp()::text, false)" \
                -c "SELECT sum(hashtext(t::text)) FROM legacy_orders t" \
                -c "SELECT round(1000 * extract(epoch FROM clock_timestamp() - current_setting('bench.t0')::timestamptz), 1)" | tail -n 1)
        if [[ -z $best ]] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$v; fi
    done
    printf '%s\n' "$best"
}
SA=$(scan_best a)
SB=$(scan_best b)

rate() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.0f", n / (ms / 1000) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
mkdir -p "$OUTDIR"
OUT=$OUTDIR/remote_$(date -u +%Y%m%d-%H%M%S).md
CHANGES=$((2 * ROWS))
{
    echo "### Mirrored-lag throughput: rows applied per second at the subscriber"
    echo
    echo "$ROWS inserts then $ROWS updates ($CHANGES row changes) in transactions of $BATCH rows, applied after the fact (subscription disabled during the work); best of $ROUNDS rounds."
    echo
    echo "| side | catch-up ms (per round) | best ms | row changes / s | softmig / plain |"
    echo "|---|---:|---:|---:|---:|"
    for side in plain softmig; do
        rounds=
        for r in $(seq 1 "$ROUNDS"); do rounds+="${rounds:+, }${LAG[$side,$r]}"; done
        printf '| %s | %s | %s | %s | %s |\n' "$side" "$rounds" "${BEST[$side]}" "$(rate "$CHANGES" "${BEST[$side]}")" \
            "$(ratio "$(rate "$CHANGES" "${BEST[$side]}")" "$(rate "$CHANGES" "${BEST[plain]}")")"
    done
    echo
    echo "### Cross-cluster parity: rows per second per side"
    echo
    echo "softmig.remote_parity_report('orders', 10000) in B, $NROWS rows per side, best of $PRUNS runs (total: both layers, point, digests, mapping)."
    echo
    echo "| measure | A (legacy, over libpq) | B (landing copy, local) |"
    echo "|---|---:|---:|"
    printf '| digest ms | %s | %s |\n' "$mt" "$mh"
    printf '| digest rows / s | %s | %s |\n' "$(rate "$rt" "$mt")" "$(rate "$rh" "$mh")"
    printf '| plain scan hashing each row, ms | %s | %s |\n' "$SA" "$SB"
    printf '| digest / plain scan (time) | %s | %s |\n' "$(ratio "$mt" "$SA")" "$(ratio "$mh" "$SB")"
    printf '| whole comparison ms (rows / s, both sides) | %s (%s) | |\n' "$mtot" "$(rate "$((rh + rt))" "$mtot")"
    echo
    if [[ $(so_sum) != "$SUM0" ]]; then
        echo "Anomaly: softmig.so changed during the run."
    fi
} | tee "$OUT"
say "written to $OUT"
