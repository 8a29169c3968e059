#!/usr/bin/env bash
#
# demo/remote.sh -- the demo's second act: the same story, extracted to a
# second cluster (doc/cross-database.md).
#
# Two throwaway clusters on unix sockets in a temp directory (nothing
# listens on TCP): "monolith" holds legacy_orders, "orders-service" holds
# the new orders table.  Logical replication carries the changes; softmig
# maps them at the subscriber, switches the write authority at a fence
# while both sides take traffic, compares both clusters with parity at one
# point of the replication, refuses retried operations in either database,
# and goes on to cutover.  It asserts what it claims (exit non-zero on the
# first failed assertion), prints a summary and stops both clusters.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ROWS=${DEMO_REMOTE_ROWS:-50000}
T0=$(date +%s)
TMP=$(mktemp -d /tmp/softmig-demo2.XXXXXX)
PA=$((55000 + RANDOM % 500))
PB=$((PA + 500))
PIDS=()

stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for d in a b; do
        [[ -f $TMP/$d/postmaster.pid ]] && "$PGBIN/pg_ctl" -D "$TMP/$d" -m fast -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$TMP"
}
trap stop_all EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
qa() { psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PA" -d monolith "$@"; }
qb() { psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PB" -d orders_service "$@"; }
va() { psql -X -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$PA" -d monolith -c "$1"; }
vb() { psql -X -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$PB" -d orders_service -c "$1"; }
check() {  # description value-that-must-be-t
    if [[ $2 != t ]]; then
        printf 'ASSERTION FAILED: %s (got %s)\n' "$1" "$2" >&2
        exit 1
    fi
    printf '  ok: %s\n' "$1"
}
refused_on() {  # a|b description sql -- must fail; shows the error
    local out port db
    if [[ $1 == a ]]; then port=$PA db=monolith; else port=$PB db=orders_service; fi
    if out=$(psql -X -v ON_ERROR_STOP=1 -h "$TMP" -p "$port" -d "$db" -c "$3" 2>&1); then
        printf 'ASSERTION FAILED: %s\n  statement succeeded: %s\n' "$2" "$3" >&2
        exit 1
    fi
    printf '%s\n' "$out" | grep -E 'ERROR|HINT' | sed 's/^/  /'
    printf '  ok: %s\n' "$2"
}
# wait until the subscriber has applied everything its publisher wrote
caught_up() {  # a|b: the publishing side
    local lsn i
    for i in $(seq 1 600); do
        if [[ $1 == a ]]; then
            # (the initial synchronization first)
            [[ $(vb "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel") == t ]] || { sleep 0.1; continue; }
            lsn=$(va "SELECT pg_current_wal_lsn()")
            [[ $(va "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$lsn'), false) FROM pg_replication_slots WHERE slot_name NOT LIKE 'pg\_%'") == t ]] && return 0
        else
            lsn=$(vb "SELECT pg_current_wal_lsn()")
            [[ $(vb "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$lsn'), false) FROM pg_replication_slots WHERE slot_name NOT LIKE 'pg\_%'") == t ]] && return 0
        fi
        sleep 0.1
    done
    echo "the replication did not catch up" >&2
    exit 1
}
traffic() {  # a|b seconds tag
    local port db
    if [[ $1 == a ]]; then port=$PA db=monolith; else port=$PB db=orders_service; fi
    sed "s/TAG/$3/" "$TMP/traffic.sql" > "$TMP/traffic_$3.sql"
    "$PGBIN/pgbench" -n -h "$TMP" -p "$port" -c 2 -j 2 -T "$2" -f "$TMP/traffic_$3.sql" "$db" > "$TMP/pgbench_$3.log" 2>&1 &
    PIDS+=($!)
}
traffic_wait() {
    local p
    for p in "${PIDS[@]}"; do wait "$p" || { cat "$TMP"/pgbench_*.log >&2; exit 1; }; done
    PIDS=()
}
# both sides hold the same orders: legacy through the mapping = target
same_data() {
    local l t
    l=$(va "SELECT md5(string_agg(format('%s|%s|%s|%s', 'ORD-' || lpad(id::text, 8, '0'), upper(cust), (amount_cents / 100.0)::numeric(12,2), status), ',' ORDER BY id)) FROM legacy_orders")
    t=$(vb "SELECT md5(string_agg(format('%s|%s|%s|%s', order_no, customer, amount, status), ',' ORDER BY order_no)) FROM orders")
    check "$1: the legacy table (through the mapping) and the target hold the same orders" "$([[ $l == "$t" ]] && echo t || echo f)"
}

step "two clusters: monolith (port $PA) and orders-service (port $PB), unix sockets only"
for d in a b; do
    "$PGBIN/initdb" -D "$TMP/$d" -U postgres -A trust --no-sync --no-locale -E UTF8 >/dev/null
    port=$PA; [[ $d == b ]] && port=$PB
    cat >>"$TMP/$d/postgresql.conf" <<EOF
shared_preload_libraries = 'softmig'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
listen_addresses = ''
unix_socket_directories = '$TMP'
port = $port
softmig.remote_timeout = '30s'
EOF
    "$PGBIN/pg_ctl" -D "$TMP/$d" -l "$TMP/$d.log" -w start >/dev/null
done
export PGUSER=postgres
psql -X -q -h "$TMP" -p "$PA" -d postgres -c "CREATE DATABASE monolith"
psql -X -q -h "$TMP" -p "$PB" -d postgres -c "CREATE DATABASE orders_service"

step "the monolith: legacy_orders with $ROWS rows; the service: the new orders table"
qa <<SQL
CREATE EXTENSION softmig;
CREATE TABLE legacy_orders (
    id bigint PRIMARY KEY,
    cust text NOT NULL,
    amount_cents int NOT NULL CHECK (amount_cents >= 0),
    status text NOT NULL DEFAULT 'new');
INSERT INTO legacy_orders
SELECT g, 'customer' || (g % 5000), (g * 37) % 100000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]
  FROM generate_series(1, $ROWS) g;
SQL
qb <<'SQL'
CREATE EXTENSION softmig;
CREATE TABLE orders (
    order_no text PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL,
    gift_note text);
SQL
# The application's write path, in each database: one operation under its
# key; a write the database refuses (it is not the write authority) or a
# replay of an applied operation is logged, not raised.
for side in a b; do
    if [[ $side == a ]]; then
        write="INSERT INTO legacy_orders VALUES (p_id, 'live' || p_id, p_amount, 'new') ON CONFLICT (id) DO UPDATE SET amount_cents = EXCLUDED.amount_cents"
    else
        write="INSERT INTO orders VALUES ('ORD-' || lpad(p_id::text, 8, '0'), 'LIVE' || p_id, p_amount / 100.0, 'new', NULL) ON CONFLICT (order_no) DO UPDATE SET amount = EXCLUDED.amount"
    fi
    q=qa; [[ $side == b ]] && q=qb
    $q <<SQL
CREATE TABLE demo_log (op text PRIMARY KEY, outcome text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION demo_apply(p_key text, p_id bigint, p_amount int) RETURNS text
LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM set_config('softmig.operation_key', p_key, true);
    BEGIN
        $write;
    EXCEPTION
        WHEN SQLSTATE 'SM001' THEN
            INSERT INTO demo_log VALUES (p_key, 'refused') ON CONFLICT (op) DO NOTHING;
            RETURN 'refused';
        WHEN unique_violation THEN
            IF SQLERRM NOT LIKE 'operation key%' THEN RAISE; END IF;
            INSERT INTO demo_log VALUES (p_key, 'duplicate') ON CONFLICT (op) DO NOTHING;
            RETURN 'duplicate';
    END;
    INSERT INTO demo_log VALUES (p_key, 'applied') ON CONFLICT (op) DO UPDATE SET outcome = 'applied', at = clock_timestamp();
    RETURN 'applied';
END \$\$;
SQL
done
cat > "$TMP/traffic.sql" <<'SQL'
\set id random(100000, 160000)
\set amt random(1, 100000)
\set op random(1, 1000000000000)
SELECT demo_apply('TAG:' || :client_id || ':' || :op, :id, :amt);
SQL

step "define the migration in the service's database (it reaches the monolith by a connection string)"
qb -c "SELECT softmig.create_remote_migration('orders', 'public.legacy_orders', 'orders',
    legacy_conninfo => 'host=$TMP port=$PA dbname=monolith user=postgres',
    target_conninfo => 'host=$TMP port=$PB dbname=orders_service user=postgres',
    forward  => '{\"order_no\": \"''ORD-'' || lpad(id::text, 8, ''0'')\", \"customer\": \"upper(cust)\", \"amount\": \"amount_cents / 100.0\"}',
    backward => '{\"id\": \"substr(order_no, 5)::bigint\", \"cust\": \"lower(customer)\", \"amount_cents\": \"(amount * 100)::int\"}',
    new_only => '{gift_note}',
    options  => '{\"target_key\": [\"order_no\"]}')"
echo "  the service holds a landing copy of legacy_orders (empty until mirroring): $(vb "SELECT count(*) FROM legacy_orders") rows"

step "legacy -> mirrored under traffic on the monolith: logical replication, mapped at the subscriber"
traffic a 8 mirror
sleep 1
qb -c "CALL softmig.remote_advance('orders', reason => 'demo: extract the orders service')"
traffic_wait
caught_up a
qb -c "CALL softmig.backfill('orders', batch_size => 5000)"
echo "  the service's side: $(vb "SELECT softmig.status('orders')->'remote'->'subscription'->>'tables'")"
echo "  lag: $(vb "SELECT softmig.remote_status('orders')->>'lag_bytes'") bytes"
same_data "mirrored"
refused_on b "the service refuses writes while the monolith is the write authority" \
  "INSERT INTO orders VALUES ('ORD-99999999', 'X', 1, 'new', NULL)"

step "parity across the two clusters, while the monolith keeps writing"
traffic a 4 parity
sleep 1
qb -c "SELECT softmig.remote_parity_report('orders')->'stats' AS stats"
check "parity under traffic and replication lag reports no difference" \
  "$(vb "SELECT NOT EXISTS (SELECT 1 FROM softmig.remote_parity('orders'))")"
traffic_wait
caught_up a
echo "  a difference planted in the service's database, behind softmig's back:"
qb -c "SET session_replication_role = replica" -c "UPDATE orders SET amount = 0.01 WHERE order_no = 'ORD-00000042'"
qb -c "SELECT layer, kind, key, field, legacy_value, target_value FROM softmig.remote_parity('orders')"
check "parity finds it, and only it" \
  "$(vb "SELECT array_agg(kind || ' ' || key::text || ' ' || field) = ARRAY['mismatch {\"id\": 42} amount'] FROM softmig.remote_parity('orders')")"
qb -c "SET session_replication_role = replica" \
   -c "UPDATE orders SET amount = (SELECT amount_cents / 100.0 FROM legacy_orders WHERE id = 42) WHERE order_no = 'ORD-00000042'"

step "the switch: mirrored -> new_write at a fence, while both databases take traffic"
traffic a 6 switchA
traffic b 6 switchB
sleep 2
t=$(date +%s%N)
qb -c "CALL softmig.remote_advance('orders', reason => 'demo: the service takes writes')"
echo "  the switch took $(( ($(date +%s%N) - t) / 1000000 )) ms"
traffic_wait
echo "  monolith: $(va "SELECT string_agg(outcome || ' ' || n, ', ') FROM (SELECT outcome, count(*) n FROM demo_log WHERE op LIKE 'switchA:%' GROUP BY 1 ORDER BY 1) x")"
echo "  service:  $(vb "SELECT string_agg(outcome || ' ' || n, ', ') FROM (SELECT outcome, count(*) n FROM demo_log WHERE op LIKE 'switchB:%' GROUP BY 1 ORDER BY 1) x")"
lastA=$(va "SELECT max(at) FROM demo_log WHERE op LIKE 'switchA:%' AND outcome = 'applied'")
firstB=$(vb "SELECT min(at) FROM demo_log WHERE op LIKE 'switchB:%' AND outcome = 'applied'")
echo "  the monolith's last write: $lastA; the service's first: $firstB"
check "never both: the monolith's last write precedes the service's first" \
  "$(va "SELECT '$lastA'::timestamptz < '$firstB'::timestamptz")"
caught_up b
same_data "new_write (the service's writes projected back to the monolith)"

step "one ledger: a retried operation is refused as already applied in either database"
op=$(va "SELECT op FROM demo_log WHERE op LIKE 'switchA:%' AND outcome = 'applied' LIMIT 1")
refused_on a "a retry of $op (applied in the monolith) reaching the monolith" \
  "BEGIN; SET LOCAL softmig.operation_key = '$op'; UPDATE legacy_orders SET amount_cents = 1 WHERE id = 1; COMMIT;"
refused_on b "the same retry reaching the service" \
  "BEGIN; SET LOCAL softmig.operation_key = '$op'; UPDATE orders SET amount = 1 WHERE order_no = 'ORD-00000001'; COMMIT;"
refused_on a "a new operation reaching the monolith is refused for want of authority" \
  "BEGIN; SET LOCAL softmig.operation_key = 'new-op'; UPDATE legacy_orders SET amount_cents = 1 WHERE id = 1; COMMIT;"

step "rollback inside the envelope (the same fence the other way), and forward again"
qb -c "CALL softmig.remote_rollback('orders', 'demo: practise the way back')"
echo "  state: $(vb "SELECT softmig.state('orders'::text)") in the service, $(va "SELECT state FROM softmig.remote_migrations") in the monolith"
qb -c "CALL softmig.remote_advance('orders', reason => 'demo: forward again')"

step "new_read, then cutover: the monolith's table is frozen, the replication stops"
traffic b 3 newread
qb -c "CALL softmig.remote_advance('orders', reason => 'demo: reads default to the service')"
traffic_wait
caught_up b
same_data "new_read"
qb -c "CALL softmig.remote_advance('orders', reason => 'demo: cutover', force => true)"
refused_on a "the monolith's table is frozen after cutover" "DELETE FROM legacy_orders WHERE id = 1"
check "the monolith no longer subscribes, the service keeps no slot" \
  "$( [[ $(va "SELECT count(*) FROM pg_subscription") == 0 && $(vb "SELECT count(*) FROM pg_replication_slots") == 0 ]] && echo t || echo f)"

step "summary"
printf '  writes applied by the monolith:  %s\n' "$(va "SELECT count(*) FROM demo_log WHERE outcome = 'applied'")"
printf '  writes applied by the service:   %s\n' "$(vb "SELECT count(*) FROM demo_log WHERE outcome = 'applied'")"
printf '  writes refused (not authority):  %s\n' "$(( $(va "SELECT count(*) FROM demo_log WHERE outcome = 'refused'") + $(vb "SELECT count(*) FROM demo_log WHERE outcome = 'refused'") ))"
printf '  orders in the service:           %s\n' "$(vb "SELECT count(*) FROM orders")"
printf '  state changes recorded:          %s\n' "$(vb "SELECT count(*) FROM softmig.history('orders')")"
printf '\nsecond act finished in %ss\n' "$(( $(date +%s) - T0 ))"
