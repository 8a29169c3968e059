#!/usr/bin/env bash
#
# demo/rolling.sh -- the demo's third act: a rolling deploy through shape
# views (doc/playbook.md, "Rolling deploys with shape views"), against the
# server in the PG* environment (make demo runs it after the other acts).
#
# Two application builds run at once, as they do for minutes during a
# deploy: the old build knows only legacy_orders, the new one only orders.
# Each is a pgbench script on its own search_path (app_v1 first for the old
# build, app_v2 first for the new one), writing keyless INSERTs, UPDATEs and
# DELETEs and reading through the views softmig.create_shape_views made.
# While both run the migration goes mirrored -> new_write -> mirrored ->
# new_write -> new_read; the load stops and both tables must be equal
# through the mapping.  Then both builds run again while the migration cuts
# over, and the old build drains through its view into the target.  Every
# request must succeed: the act counts the failed ones and exits non-zero
# unless there are none.  It leaves nothing running.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB=softmig_rolling
ROWS=${DEMO_ROLLING_ROWS:-20000}
SECONDS_SWITCHES=${DEMO_ROLLING_SECONDS:-20}
RATE=${DEMO_ROLLING_RATE:-200}     # requests per second and build
export PGDATABASE=postgres
T0=$(date +%s)
. "$(dirname "$0")/lib.sh"
demo_scratch demo3

# one application build: pgbench on its own search_path, connecting under
# the build's name (a registered reader), its table name unqualified
build() {  # v1|v2 seconds
    PGOPTIONS="-c search_path=app_$1,public" PGAPPNAME="shop-$1" \
        "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -T "$2" -R "$RATE" \
        -f "$TMP/$1_insert.sql@4" -f "$TMP/$1_update.sql@4" \
        -f "$TMP/$1_delete.sql@1" -f "$TMP/$1_read.sql@3" \
        "$DB" > "$TMP/$1.log" 2>&1 &
    PIDS+=($!)
}
# When a build failed: the state changes and key handovers with their
# times, where both key generators stand, and, for each duplicate key the
# builds' logs name, the rows that hold it on either side (with the
# transaction that wrote them), so that the failure explains itself.
explain_failure() {
    local k
    {
        echo "== state changes and key handovers"
        psql -X -d "$DB" -c "SELECT at::time(3), action, from_state, to_state, detail->'columns' AS handover
                               FROM softmig.history('orders')
                              WHERE action IN ('advance', 'rollback', 'key_handover') ORDER BY at, action"
        echo "== the key generators now"
        psql -X -d "$DB" -c "SELECT pg_sequence_last_value(pg_get_serial_sequence('legacy_orders', 'id')::regclass) AS legacy_id,
                                    pg_sequence_last_value(pg_get_serial_sequence('orders', 'order_id')::regclass) AS target_order_id,
                                    softmig.state('orders')"
        for k in $(sed -n 's/.*Key ([a-z_]*)=(\([0-9]*\)) already exists.*/\1/p' "$TMP/v1.log" "$TMP/v2.log" | sort -u); do
            echo "== key $k on either side"
            psql -X -d "$DB" -c "SELECT 'legacy' AS side, xmin, id AS key, cust AS customer, amount_cents::text AS amount, status FROM legacy_orders WHERE id = $k
                                 UNION ALL
                                 SELECT 'target', xmin, order_id, customer, amount::text, status FROM orders WHERE order_id = $k"
        done
    } >&2 || true
}
# both builds' pgbench must exit 0 (no client aborted); prints what each did
# and adds its failed transactions to FAILED
FAILED=0
builds_wait() {
    local p b n f rc=0
    for p in "${PIDS[@]}"; do wait "$p" || rc=$?; done
    PIDS=()
    for b in v1 v2; do
        n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/$b.log")
        f=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/$b.log")
        if ((rc != 0)) || [[ -z $n || -z $f ]] || grep -q 'ERROR\|aborted' "$TMP/$b.log"; then
            cat "$TMP/v1.log" "$TMP/v2.log" >&2
            explain_failure
            echo "ASSERTION FAILED: an application build failed (pgbench exit $rc)" >&2
            exit 1
        fi
        printf '  build %s: %s requests, %s failed\n' "$b" "$n" "$f"
        FAILED=$((FAILED + f))
    done
}
# a state change while the builds run; one that cannot get its locks within
# lock_timeout (55P03) changes nothing and is retried
switch() {  # description sql
    local out try
    for try in $(seq 1 50); do
        if out=$(psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$2" 2>&1); then
            printf '  %-34s state now %s%s\n' "$1" "$(val "SELECT softmig.state('orders')")" \
                "$( ((try > 1)) && echo " (after $((try - 1)) lock timeout(s))")"
            return 0
        fi
        if [[ $out != *"could not lock tables"* ]]; then
            printf 'ASSERTION FAILED: %s\n%s\n' "$1" "$out" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "ASSERTION FAILED: $1: the tables were never lockable" >&2
    exit 1
}
# legacy through the mapping = the target, row by row, both ways
MAPPED_EQUAL="SELECT NOT EXISTS (
    (SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), status FROM legacy_orders
     EXCEPT SELECT order_id, customer, amount, status FROM orders)
    UNION ALL
    (SELECT order_id, customer, amount, status FROM orders
     EXCEPT SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), status FROM legacy_orders))"

step "two tables, two application builds, one view each"
psql -X -q -c "DROP DATABASE IF EXISTS $DB" 2>/dev/null
psql -X -q -c "CREATE DATABASE $DB"
q <<SQL
CREATE EXTENSION softmig;
-- the old build's table, keyed by a serial; the new one's, by an identity
-- GENERATED ALWAYS (each switch of write authority hands the generator over)
CREATE TABLE legacy_orders (
    id bigserial PRIMARY KEY,
    cust text NOT NULL,
    amount_cents int NOT NULL CHECK (amount_cents >= 0),
    status text NOT NULL DEFAULT 'new');
INSERT INTO legacy_orders (cust, amount_cents, status)
SELECT 'customer' || (g % 500), (g * 37) % 100000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]
  FROM generate_series(1, $ROWS) g;
CREATE TABLE orders (
    order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL DEFAULT 'new');
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
-- one schema per application build, a view of its table in each
CREATE SCHEMA app_v1;
CREATE SCHEMA app_v2;
SELECT softmig.create_shape_views('orders', 'app_v1', 'app_v2');
-- each build is a reader the cutover must account for
SELECT softmig.register_reader('orders', 'shop-v1', 'latency', 'shop');
SELECT softmig.register_reader('orders', 'shop-v2', 'latency', 'shop');
SQL
q -c "SELECT view_name, shape FROM softmig.shape_views ORDER BY shape"

# what each build does: the same requests, each in its own table's shape
scripts() {  # build table key insert-columns insert-values update-set read-columns
    local ids="random(1, $((ROWS + ROWS / 5)))"
    printf '\\set amt random(1, 100000)\nINSERT INTO %s (%s) VALUES (%s) RETURNING %s;\n' "$2" "$4" "$5" "$3" > "$TMP/$1_insert.sql"
    printf '\\set id %s\nUPDATE %s SET %s WHERE %s = :id;\n' "$ids" "$2" "$6" "$3" > "$TMP/$1_update.sql"
    printf '\\set id %s\nDELETE FROM %s WHERE %s = :id;\n' "$ids" "$2" "$3" > "$TMP/$1_delete.sql"
    printf '\\set id %s\nSELECT %s FROM %s WHERE %s = :id;\n' "$ids" "$7" "$2" "$3" > "$TMP/$1_read.sql"
}
scripts v1 legacy_orders id "cust, amount_cents" "'old-build', :amt" \
    "amount_cents = amount_cents + 1" "cust, amount_cents, status"
scripts v2 orders order_id "customer, amount" "'NEW-BUILD', :amt / 100.0" \
    "status = 'paid'" "customer, amount, status"
printf '  old build: search_path app_v1,public; writes legacy_orders (id, cust, amount_cents, status)\n'
printf '  new build: search_path app_v2,public; writes orders (order_id, customer, amount, status)\n'

step "mirrored, and the backfill"
q -c "SELECT softmig.advance('orders', reason => 'rolling demo: start mirroring')"
q -c "CALL softmig.backfill('orders', batch_size => 5000)"
assert "the backfill is done" "SELECT (softmig.status('orders')->>'backfill_done')::boolean"

step "both builds run while the write authority moves back and forth (${SECONDS_SWITCHES}s)"
build v1 "$SECONDS_SWITCHES"
build v2 "$SECONDS_SWITCHES"
PAUSE=$((SECONDS_SWITCHES / 6))
sleep "$PAUSE"
switch "mirrored -> new_write" "SELECT softmig.advance('orders', reason => 'deploy: new build takes writes')"
sleep "$PAUSE"
switch "new_write -> mirrored (rollback)" "SELECT softmig.rollback('orders', 'deploy: back out')"
sleep "$PAUSE"
switch "mirrored -> new_write" "SELECT softmig.advance('orders', reason => 'deploy: forward again')"
sleep "$PAUSE"
switch "new_write -> new_read" "SELECT softmig.advance('orders', reason => 'deploy: reads from the target')"
builds_wait
assert "no request failed" "SELECT $FAILED = 0"
assert "both tables equal through the mapping (softmig.parity)" "SELECT NOT EXISTS (SELECT 1 FROM softmig.parity('orders'))"
assert "a plain SQL oracle agrees, row by row" "$MAPPED_EQUAL"
assert "rows inserted by both builds arrived in both tables" \
  "SELECT count(*) FILTER (WHERE customer = 'OLD-BUILD') > 0 AND count(*) FILTER (WHERE customer = 'NEW-BUILD') > 0 FROM orders"
q -c "SELECT at::time(0), action, from_state, to_state,
             (SELECT string_agg(format('%s: next %s -> %s', c->>'sequence', c->>'next_before', c->>'next'), ', ')
                FROM jsonb_array_elements(detail->'columns') c
               WHERE action = 'key_handover') AS generator_moved
        FROM softmig.history('orders')
       WHERE action IN ('advance', 'rollback', 'key_handover') ORDER BY at"
assert "each switch of write authority handed the key generator over" \
  "SELECT count(*) >= 3 FROM softmig.history('orders') WHERE action = 'key_handover'"

step "cutover while both builds run: the old build drains into the target"
LEGACY_BEFORE=$(val "SELECT count(*) FROM orders WHERE customer = 'OLD-BUILD'")
build v1 6
build v2 6
sleep 2
switch "new_read -> cutover" "SELECT softmig.advance('orders', reason => 'deploy done')"
FROZEN=$(val "SELECT md5(string_agg(format('%s|%s|%s|%s', id, cust, amount_cents, status), ',' ORDER BY id)) FROM legacy_orders")
builds_wait
assert "no request failed" "SELECT $FAILED = 0"
assert "legacy is frozen" \
  "SELECT md5(string_agg(format('%s|%s|%s|%s', id, cust, amount_cents, status), ',' ORDER BY id)) = '$FROZEN' FROM legacy_orders"
assert "after cutover the old build still wrote, to the target" \
  "SELECT count(*) > $LEGACY_BEFORE FROM orders WHERE customer = 'OLD-BUILD'"

step "the old build is gone: drop the views"
q -c "SELECT softmig.drop_shape_views('orders')"

step "summary"
printf '  switches while both builds ran:     mirrored -> new_write -> mirrored -> new_write -> new_read, then cutover\n'
printf '  failed requests:                    %s\n' "$FAILED"
psql -X -q -c "DROP DATABASE $DB WITH (FORCE)"
printf '\nrolling deploy finished in %ss\n' "$(( $(date +%s) - T0 ))"
