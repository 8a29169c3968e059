#!/usr/bin/env bash
#
# demo/demo.sh -- a live soft migration, end to end, against the server in
# the PG* environment (make demo starts a throwaway one and runs this).
#
# It tells the story step by step and asserts what it claims: the script
# exits non-zero the moment an assertion fails.  Later work grows it (backfill
# under load, operation keys, read switches, checks); today it shows what
# exists: the state machine, write authority, mirroring under live pgbench
# traffic, refusals, projection back to legacy, rollback and cutover.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB=softmig_demo
export PGDATABASE=postgres
T0=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
q() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
val() { psql -X -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
assert() {  # description sql-returning-true
    local got
    got=$(val "$2")
    if [[ $got != t ]]; then
        printf 'ASSERTION FAILED: %s\n  query: %s\n  got: %s\n' "$1" "$2" "$got" >&2
        exit 1
    fi
    printf '  ok: %s\n' "$1"
}

step "a throwaway database with a legacy orders table (20,000 rows)"
psql -X -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
q <<'SQL'
CREATE EXTENSION softmig;
CREATE TABLE legacy_orders (
    id bigint PRIMARY KEY,
    cust text NOT NULL,
    amount_cents int NOT NULL,
    status text NOT NULL DEFAULT 'new');
INSERT INTO legacy_orders
SELECT g, 'customer' || (g % 500), (g * 37) % 100000, 'new' FROM generate_series(1, 20000) g;
-- the new shape: renamed and converted columns, and a column legacy cannot hold
CREATE TABLE orders (
    order_id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL,
    gift_note text);
SQL

step "define the migration: mappings both ways, gift_note is new-only"
q -c "SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward  => '{\"order_id\": \"id\", \"customer\": \"upper(cust)\", \"amount\": \"amount_cents / 100.0\"}',
    backward => '{\"id\": \"order_id\", \"cust\": \"lower(customer)\", \"amount_cents\": \"(amount * 100)::int\"}',
    new_only => '{gift_note}')"
q -c "SELECT direction, column_name, expression FROM softmig.mappings ORDER BY direction DESC, ordinal"
assert "state is legacy" "SELECT softmig.state('orders')::text = 'legacy'"

step "advance to mirrored while pgbench writes to legacy (2 clients, 5 s)"
cat > /tmp/softmig_demo_legacy.sql <<'SQL'
\set id random(20001, 40000)
\set amt random(1, 100000)
INSERT INTO legacy_orders VALUES (:id, 'live' || :id, :amt, 'new')
    ON CONFLICT (id) DO UPDATE SET amount_cents = EXCLUDED.amount_cents, status = 'paid';
SQL
"$PGBIN/pgbench" -n -c 2 -j 2 -T 5 -f /tmp/softmig_demo_legacy.sql "$DB" > /tmp/softmig_demo_pgbench1.log 2>&1 &
PGB=$!
sleep 1
q -c "SELECT softmig.advance('orders', reason => 'demo: start mirroring')"
wait $PGB || { cat /tmp/softmig_demo_pgbench1.log >&2; exit 1; }
grep -E "number of transactions actually processed|tps" /tmp/softmig_demo_pgbench1.log | sed 's/^/  pgbench: /'
q -c "SELECT count(*) AS legacy_rows, (SELECT count(*) FROM orders) AS target_rows FROM legacy_orders"
assert "every row the target holds equals its legacy row, mapped (no stale or lost write)" \
  "SELECT NOT EXISTS (
     SELECT order_id, customer, amount, status FROM orders
     EXCEPT SELECT id, upper(cust), amount_cents / 100.0, status FROM legacy_orders)"
q -c "SELECT count(*) AS legacy_rows_not_yet_in_target FROM legacy_orders l
      WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = l.id)"
echo "  (rows nobody wrote since the switch wait for the backfill, which a later release adds)"

step "the target is a projection now: a direct write is refused"
psql -X -d "$DB" -c "INSERT INTO orders VALUES (1, 'X', 1, 'new', NULL)" 2>&1 | sed 's/^/  /' || true
assert "nothing was written" "SELECT NOT EXISTS (SELECT 1 FROM orders WHERE order_id = 1)"

step "advance to new_write: the target takes writes, legacy receives the projection"
q -c "SELECT softmig.advance('orders', reason => 'demo: target is authoritative', force => true)"
q -c "UPDATE orders SET status = 'shipped' WHERE order_id IN (SELECT order_id FROM orders ORDER BY order_id LIMIT 3)"
q -c "INSERT INTO orders VALUES (50001, 'NEWCO', 12.34, 'new', NULL)"
q -c "SELECT id, cust, amount_cents, status FROM legacy_orders WHERE id = 50001 OR status = 'shipped' ORDER BY id"
assert "projected back through the backward mapping" \
  "SELECT cust = 'newco' AND amount_cents = 1234 FROM legacy_orders WHERE id = 50001"
psql -X -d "$DB" -c "UPDATE legacy_orders SET status = 'oops' WHERE id = 50001" 2>&1 | sed 's/^/  /' || true
assert "legacy write refused, nothing changed" "SELECT status = 'new' FROM legacy_orders WHERE id = 50001"

step "roll back to mirrored, then forward again"
q -c "SELECT softmig.rollback('orders', 'demo: practise the way back')"
q -c "UPDATE legacy_orders SET status = 'paid' WHERE id = 50001"
assert "mirrored again: legacy writes reach the target" "SELECT status = 'paid' FROM orders WHERE order_id = 50001"
q -c "SELECT softmig.advance('orders', force => true, reason => 'demo: forward again')"

step "new_read, then cutover: legacy is frozen"
q -c "SELECT softmig.advance('orders')" -c "SELECT softmig.advance('orders')"
psql -X -d "$DB" -c "DELETE FROM legacy_orders WHERE id = 1" 2>&1 | sed 's/^/  /' || true
q -c "UPDATE orders SET gift_note = 'happy birthday' WHERE order_id = 50001"
assert "cutover: the target is written plainly" "SELECT gift_note IS NOT NULL FROM orders WHERE order_id = 50001"

step "status and history"
q -c "SELECT jsonb_pretty(softmig.status('orders') - 'state_changed_at')"
q -c "SELECT to_char(at, 'HH24:MI:SS') AS at, actor, action, from_state, to_state, reason FROM softmig.history('orders')"

psql -X -q -c "DROP DATABASE $DB"
rm -f /tmp/softmig_demo_legacy.sql /tmp/softmig_demo_pgbench1.log
printf '\ndemo finished in %ss\n' "$(( $(date +%s) - T0 ))"
