#!/usr/bin/env bash
#
# demo/demo.sh -- a live soft migration, end to end, against the server in
# the PG* environment (make demo starts a throwaway one and runs this).
#
# A legacy `legacy_orders` table (200,000 rows) moves to `orders`, a new shape
# with renamed and converted columns, a new correlation key (order_no) and a
# column legacy cannot hold (gift_note), while pgbench clients keep writing
# with operation keys and replay some of their operations after simulated
# timeouts.  It walks every state, prints softmig.report at each step, asserts
# what it claims (exit non-zero on the first failed assertion) and ends with a
# summary.  It leaves nothing running.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB=softmig_demo
ROWS=${DEMO_ROWS:-200000}
export PGDATABASE=postgres
T0=$(date +%s)
PHASE_T=$T0
PHASES=()
TMP=$(mktemp -d /tmp/softmig-demo.XXXXXX)
PGB_PID=
REPORT_PID=

cleanup() {
    [[ -n $PGB_PID ]] && kill "$PGB_PID" 2>/dev/null || true
    [[ -n $REPORT_PID ]] && kill "$REPORT_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

. "$(dirname "$0")/lib.sh"
phase_done() {
    local now
    now=$(date +%s)
    PHASES+=("$(printf '%-44s %4ss' "$1" "$((now - PHASE_T))")")
    PHASE_T=$now
}
report() { psql -X -At -d "$DB" -c "SELECT softmig.report('orders')" | sed 's/^/  | /'; }
refused() {  # description sql  -- the statement must fail; shows the error
    local out
    if out=$(psql -X -v ON_ERROR_STOP=1 -d "$DB" -c "$2" 2>&1); then
        printf 'ASSERTION FAILED: %s\n  statement succeeded: %s\n' "$1" "$2" >&2
        exit 1
    fi
    printf '%s\n' "$out" | grep -E 'ERROR|DETAIL|HINT' | sed 's/^/  /'
    printf '  ok: %s\n' "$1"
}
traffic() {  # seconds clients
    # the storefront's checkout service is a registered reader
    PGAPPNAME=checkout "$PGBIN/pgbench" -n -c "$2" -j "$2" -T "$1" -f "$TMP/traffic.sql" "$DB" > "$TMP/pgbench.log" 2>&1 &
    PGB_PID=$!
}
traffic_wait() {
    wait "$PGB_PID" || { cat "$TMP/pgbench.log" >&2; exit 1; }
    PGB_PID=
    grep -E "number of transactions actually processed|tps" "$TMP/pgbench.log" | sed 's/^/  pgbench: /'
}

step "a legacy orders table with $ROWS rows, and the new shape"
psql -X -q -c "DROP DATABASE IF EXISTS $DB" 2>/dev/null
psql -X -q -c "CREATE DATABASE $DB"
q <<SQL
CREATE EXTENSION softmig;
CREATE TABLE legacy_orders (
    id bigint PRIMARY KEY,
    cust text NOT NULL,
    amount_cents int NOT NULL CHECK (amount_cents >= 0),
    status text NOT NULL DEFAULT 'new');
INSERT INTO legacy_orders
SELECT g, 'customer' || (g % 5000), (g * 37) % 100000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]
  FROM generate_series(1, $ROWS) g;
-- renamed and converted columns, a new correlation key, a new-only column
CREATE TABLE orders (
    order_no text PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL,
    gift_note text);
-- what the traffic and the reporting job record
CREATE TABLE demo_stats (op text PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO demo_stats VALUES ('writes', 0), ('duplicates_refused', 0), ('authority_retries', 0);
SQL

step "define the migration"
q -c "SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward  => '{\"order_no\": \"''ORD-'' || lpad(id::text, 8, ''0'')\", \"customer\": \"upper(cust)\", \"amount\": \"amount_cents / 100.0\"}',
    backward => '{\"id\": \"substr(order_no, 5)::bigint\", \"cust\": \"lower(customer)\", \"amount_cents\": \"(amount * 100)::int\"}',
    new_only => '{gift_note}',
    options  => '{\"target_key\": [\"order_no\"], \"require_operation_key\": true, \"unregistered_reader_window\": \"10 minutes\"}')"
q -c "SELECT direction, column_name, expression FROM softmig.mappings ORDER BY direction DESC, ordinal"

# The application's write path: one operation = one transaction with an
# operation key, written to whichever table is the write authority now.  A
# share of operations is replayed with the same key, as after a timeout.
q <<'SQL'
CREATE FUNCTION demo_apply(p_key text, p_id bigint, p_amount int, p_status text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
BEGIN
    PERFORM set_config('softmig.operation_key', p_key, true);
    FOR attempt IN 1 .. 3 LOOP
        v_state := softmig.state('orders')::text;
        BEGIN
            IF v_state IN ('legacy', 'mirrored') THEN
                INSERT INTO legacy_orders VALUES (p_id, 'live' || p_id, p_amount, p_status)
                    ON CONFLICT (id) DO UPDATE SET amount_cents = EXCLUDED.amount_cents;
            ELSE
                INSERT INTO orders VALUES ('ORD-' || lpad(p_id::text, 8, '0'), 'LIVE' || p_id, p_amount / 100.0, p_status)
                    ON CONFLICT (order_no) DO UPDATE SET amount = EXCLUDED.amount;
            END IF;
            UPDATE demo_stats SET n = n + 1 WHERE op = 'writes';
            RETURN;
        EXCEPTION
            WHEN unique_violation THEN
                IF SQLERRM LIKE '%operation key%' THEN
                    UPDATE demo_stats SET n = n + 1 WHERE op = 'duplicates_refused';
                    RETURN;
                END IF;
                RAISE;
            WHEN SQLSTATE 'SM001' THEN      -- the authority moved under us: retry there
                UPDATE demo_stats SET n = n + 1 WHERE op = 'authority_retries';
        END;
    END LOOP;
    RAISE EXCEPTION 'could not apply %', p_key;
END $$;
SQL
cat > "$TMP/traffic.sql" <<'SQL'
\set id random(200001, 260000)
\set amt random(1, 100000)
\set op random(1, 1000000000)
\set replay random(1, 10)
SELECT demo_apply('op-' || :op, :id, :amt, 'new');
\if :replay = 1
SELECT demo_apply('op-' || :op, :id, :amt, 'new');
\endif
SQL
phase_done "set-up"

step "readers: two switch groups, plus a reporting job nobody registered"
q -c "SELECT softmig.register_reader('orders', 'checkout', 'latency', 'storefront')" \
  -c "SELECT softmig.register_reader('orders', 'order-history', 'consistency', 'storefront')" \
  -c "SELECT softmig.register_reader('orders', 'finance', 'audit', 'backoffice')"
# the unregistered job reads legacy now and then
( for _ in $(seq 1 40); do
      PGAPPNAME=nightly_report psql -X -q -d "$DB" -c "SELECT count(*) FROM legacy_orders WHERE status = 'paid'" >/dev/null 2>&1 || true
      sleep 2
  done ) &
REPORT_PID=$!

step "invariants and a transition rule"
q -c "SELECT softmig.add_invariant('orders', 'no_negative_amount', 'SELECT order_no FROM public.orders WHERE amount < 0')"
q -c "SELECT softmig.add_transition_rule('orders', 'orders', 'status', NULL, 'new')" \
  -c "SELECT softmig.add_transition_rule('orders', 'orders', 'status', NULL, 'paid')" \
  -c "SELECT softmig.add_transition_rule('orders', 'orders', 'status', NULL, 'shipped')" \
  -c "SELECT softmig.add_transition_rule('orders', 'orders', 'status', 'new', 'paid')" \
  -c "SELECT softmig.add_transition_rule('orders', 'orders', 'status', 'paid', 'shipped')"
phase_done "readers, invariants, rules"

step "legacy -> mirrored while traffic flows, then the backfill under load"
traffic 25 2
sleep 2
q -c "SELECT softmig.advance('orders', reason => 'demo: start mirroring')"
q -c "CALL softmig.backfill('orders', batch_size => 5000)"
traffic_wait
report
assert "the backfill is done" "SELECT (softmig.status('orders')->>'backfill_done')::boolean"
phase_done "mirrored + backfill under load"

step "parity and checks: the target means what legacy means"
q -c "SELECT count(*) AS parity_differences FROM softmig.parity('orders')"
assert "parity finds no difference" "SELECT NOT EXISTS (SELECT 1 FROM softmig.parity('orders'))"
assert "a plain SQL oracle agrees" \
  "SELECT NOT EXISTS (SELECT 'ORD-' || lpad(id::text, 8, '0'), upper(cust), amount_cents / 100.0, status FROM legacy_orders
                      EXCEPT SELECT order_no, customer, amount, status FROM orders)
      AND (SELECT count(*) FROM legacy_orders) = (SELECT count(*) FROM orders)"
q -c "SELECT layer, check_name, ok, violations FROM softmig.check('orders') ORDER BY layer, check_name"
refused "a direct write to the target is refused" "UPDATE orders SET amount = 1 WHERE order_no = 'ORD-00000001'"
phase_done "parity and checks"

step "mirrored -> new_write: the target becomes the write authority"
traffic 10 2
sleep 1
q -c "SELECT softmig.advance('orders', reason => 'demo: new service takes writes')"
report
step "a rollback inside the envelope, and forward again"
q -c "SELECT softmig.rollback('orders', 'demo: practise the way back')"
q -c "SELECT softmig.advance('orders', reason => 'demo: forward again')"
traffic_wait
assert "still in step after the round trip" \
  "SELECT NOT EXISTS (SELECT 'ORD-' || lpad(id::text, 8, '0'), upper(cust), amount_cents / 100.0, status FROM legacy_orders
                      EXCEPT SELECT order_no, customer, amount, status FROM orders)"
phase_done "new_write, rollback, forward"

step "new-only state: a gift note legacy cannot hold closes the envelope"
q -c "SELECT set_config('softmig.operation_key', 'gift-1', false)" \
  -c "UPDATE orders SET gift_note = 'happy birthday' WHERE order_no = 'ORD-00000042'"
q -c "SELECT jsonb_pretty(softmig.envelope('orders') - 'closed_at')"
refused "rollback across the authority switch is refused" "SELECT softmig.rollback('orders', 'too late')"
phase_done "envelope closes"

step "read groups switch, then new_read"
q -c "SELECT softmig.switch_reads('orders', 'storefront', 'new', 'demo: storefront reads the new table')"
q -c "SELECT softmig.switch_reads('orders', 'backoffice', 'new', 'demo: finance follows')"
q -c "SELECT softmig.advance('orders', reason => 'demo: reads default to the target')"
q -c "SELECT reader, class, switch_group, source, registered, reads FROM softmig.readers('orders') ORDER BY reader"
phase_done "read switches, new_read"

step "cutover is refused while an unregistered reader still reads legacy"
sleep 2
refused "the reporting job nobody registered blocks cutover" "SELECT softmig.advance('orders', reason => 'demo: cutover')"
q -c "SELECT softmig.register_reader('orders', 'nightly_report', 'bulk', 'backoffice')"
q -c "SELECT softmig.advance('orders', reason => 'demo: cutover, every reader accounted for')"
refused "legacy is frozen after cutover" "DELETE FROM legacy_orders WHERE id = 1"
report
phase_done "cutover"

step "summary"
WRITES=$(val "SELECT n FROM demo_stats WHERE op = 'writes'")
DUPS=$(val "SELECT n FROM demo_stats WHERE op = 'duplicates_refused'")
RETRIES=$(val "SELECT n FROM demo_stats WHERE op = 'authority_retries'")
MISMATCHES=$(val "SELECT count(*) FROM (SELECT 'ORD-' || lpad(id::text, 8, '0'), upper(cust), amount_cents / 100.0, status FROM legacy_orders
                                       EXCEPT SELECT order_no, customer, amount, status FROM orders) d")
assert "no operation applied twice" \
  "SELECT count(*) = count(DISTINCT key) FROM softmig.operations WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'orders')"
[[ $MISMATCHES == 0 ]] || { echo "ASSERTION FAILED: $MISMATCHES mismatches" >&2; exit 1; }
printf '  rows written by the traffic:        %s\n' "$WRITES"
printf '  duplicate operations refused:       %s\n' "$DUPS"
printf '  writes retried on the new authority: %s\n' "$RETRIES"
printf '  mismatches between the tables:      %s\n' "$MISMATCHES"
printf '  time per phase:\n'
printf '    %s\n' "${PHASES[@]}"
kill "$REPORT_PID" 2>/dev/null || true
wait "$REPORT_PID" 2>/dev/null || true
REPORT_PID=
psql -X -q -c "DROP DATABASE $DB WITH (FORCE)"
printf '\ndemo finished in %ss\n' "$(( $(date +%s) - T0 ))"
