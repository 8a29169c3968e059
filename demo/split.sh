#!/usr/bin/env bash
#
# demo/split.sh -- the demo's fourth act: one entity split across two target
# tables (doc/shapes.md, "Split"), against the server in the PG* environment
# (make demo runs it after the other acts).
#
# Legacy users(id, email, street, city) becomes v2.users(id, email) and
# v2.addresses(user_id, street, city): two migrations share the legacy
# table, the first owns the entity's existence, the second carries its
# address, and a group moves both at once.  An old application build writes
# legacy while the group goes to mirrored and both members are backfilled;
# after the switch a new build writes the targets, creating an address
# before its user in one transaction (a deferred foreign key), moving users
# and clearing addresses.  Every request must succeed, parity of both members
# must be clean, and legacy must equal the two targets joined, row by row,
# after the switch and after a rollback.  It leaves nothing running.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB=softmig_split
ROWS=${DEMO_SPLIT_ROWS:-20000}
SECS=${DEMO_SPLIT_SECONDS:-6}
RATE=${DEMO_SPLIT_RATE:-200}       # requests per second
export PGDATABASE=postgres
T0=$(date +%s)
. "$(dirname "$0")/lib.sh"
demo_scratch demo4

# one application build (old: legacy's table; new: the two targets) under
# pgbench for SECONDS, in the background
build() {  # old|new seconds
    local f
    f=()
    for s in "$TMP/$1"_*.sql; do f+=(-f "$s"); done
    PGAPPNAME="users-$1" "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -T "$2" -R "$RATE" "${f[@]}" \
        "$DB" > "$TMP/$1.log" 2>&1 &
    PIDS+=($!)
}
# the build must exit 0 with no failed transaction; prints what it did
build_wait() {  # old|new
    local p n f rc=0
    for p in "${PIDS[@]}"; do wait "$p" || rc=$?; done
    PIDS=()
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/$1.log")
    f=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/$1.log")
    if ((rc != 0)) || [[ -z $n || $f != 0 ]] || grep -q 'ERROR\|aborted' "$TMP/$1.log"; then
        cat "$TMP/$1.log" >&2
        echo "ASSERTION FAILED: the $1 build failed (pgbench exit $rc)" >&2
        exit 1
    fi
    printf '  %s build: %s requests, %s failed\n' "$1" "$n" "$f"
}
# legacy = the owner's rows with their address (absent: NULL), both ways
JOINED_EQUAL="SELECT NOT EXISTS (
    (SELECT id, email, street, city FROM users
     EXCEPT SELECT u.id, u.email, a.street, a.city FROM v2.users u LEFT JOIN v2.addresses a ON a.user_id = u.id)
    UNION ALL
    (SELECT u.id, u.email, a.street, a.city FROM v2.users u LEFT JOIN v2.addresses a ON a.user_id = u.id
     EXCEPT SELECT id, email, street, city FROM users))"
PARITY_CLEAN="SELECT NOT EXISTS (SELECT 1 FROM softmig.parity('users'))
                 AND NOT EXISTS (SELECT 1 FROM softmig.parity('addresses'))"

step "one legacy table, two target tables, two migrations, one group"
psql -X -q -c "DROP DATABASE IF EXISTS $DB" 2>/dev/null
psql -X -q -c "CREATE DATABASE $DB"
q <<SQL
CREATE EXTENSION softmig;
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, street text, city text);
INSERT INTO users
SELECT g, 'user' || g || '@example.com',
       CASE WHEN g % 4 <> 0 THEN 'Street ' || g END,
       CASE WHEN g % 4 <> 0 THEN (ARRAY['Oslo', 'Lima', 'Rome', 'Kyiv'])[1 + g % 4] END
  FROM generate_series(1, $ROWS) g;
CREATE SCHEMA v2;
CREATE TABLE v2.users (id bigint PRIMARY KEY, email text NOT NULL);
CREATE TABLE v2.addresses (user_id bigint PRIMARY KEY, street text, city text);
-- the owner of the entity: its rows decide whether a user exists
SELECT softmig.create_migration('users', 'users', 'v2.users');
-- an attribute member: the address of the same user, keyed by the owner's key
SELECT softmig.create_migration('addresses', 'users', 'v2.addresses',
    forward  => '{"user_id": "id"}',
    backward => '{"id": "user_id"}',
    options  => '{"attribute_of": "users"}');
SELECT softmig.create_group('user_entity', ARRAY['users', 'addresses']);
SQL
printf '  legacy users(id, email, street, city): %s rows, a quarter without an address\n' "$ROWS"
q -c "SELECT name, legacy, target, options FROM softmig.migrations ORDER BY id"

# the old build: new users with their address, moves, deletes, on legacy
cat > "$TMP/old_insert.sql" <<'EOF'
\set id random(1000000, 999999999)
INSERT INTO users VALUES (:id, 'old-' || :id || '@example.com', 'Old Rd ' || :id, 'Oslo') ON CONFLICT (id) DO NOTHING;
EOF
cat > "$TMP/old_move.sql" <<EOF
\\set id random(1, $ROWS)
UPDATE users SET street = 'Moved ' || :id, city = 'Bergen' WHERE id = :id;
EOF
cat > "$TMP/old_delete.sql" <<EOF
\\set id random(1, $ROWS)
DELETE FROM users WHERE id = :id;
EOF
# the new build: a user and the address written first (deferred key),
# moves and cleared addresses, on the targets
cat > "$TMP/new_insert.sql" <<'EOF'
\set id random(1000000000, 1999999999)
BEGIN;
SET CONSTRAINTS v2.addresses_user DEFERRED;
INSERT INTO v2.addresses VALUES (:id, 'New Ave ' || :id, 'Lima') ON CONFLICT (user_id) DO NOTHING;
INSERT INTO v2.users VALUES (:id, 'new-' || :id || '@example.com') ON CONFLICT (id) DO NOTHING;
COMMIT;
EOF
cat > "$TMP/new_move.sql" <<EOF
\\set id random(1, $ROWS)
UPDATE v2.addresses SET city = 'Rome' WHERE user_id = :id;
EOF
cat > "$TMP/new_clear.sql" <<EOF
\\set id random(1, $ROWS)
DELETE FROM v2.addresses WHERE user_id = :id;
EOF

step "the old build writes legacy while the group starts mirroring and both members backfill"
build old "$SECS"
sleep 1
q -c "SELECT softmig.advance_group('user_entity', reason => 'split demo: start mirroring')"
q -c "CALL softmig.backfill('users', batch_size => 5000)"
q -c "CALL softmig.backfill('addresses', batch_size => 5000)"
build_wait old
assert "both members are backfilled" \
  "SELECT (softmig.status('users')->>'backfill_done')::boolean AND (softmig.status('addresses')->>'backfill_done')::boolean"
assert "parity of both members is clean" "$PARITY_CLEAN"
assert "legacy equals the two targets joined, row by row" "$JOINED_EQUAL"
q <<SQL
-- every user is on the target now: the key between the targets can hold
ALTER TABLE v2.addresses ADD CONSTRAINT addresses_user FOREIGN KEY (user_id)
    REFERENCES v2.users ON DELETE CASCADE DEFERRABLE;
SQL
printf '  foreign key v2.addresses -> v2.users added (deferrable)\n'

step "switch: the targets take the writes, the new build runs"
q -c "SELECT softmig.advance_group('user_entity', reason => 'split demo: the new build writes')"
build new "$SECS"
build_wait new
assert "parity of both members is clean" "$PARITY_CLEAN"
assert "legacy equals the two targets joined, row by row" "$JOINED_EQUAL"
assert "users the new build created (address first) are one legacy row each, with their address" \
  "SELECT count(*) > 0 AND bool_and(street IS NOT NULL AND city = 'Lima') FROM users WHERE id >= 1000000000"
q -c "SELECT id, email, street, city FROM users WHERE id >= 1000000000 ORDER BY id LIMIT 3"
q -c "SELECT count(*) FILTER (WHERE street IS NULL) AS legacy_rows_without_address,
             (SELECT count(*) FROM v2.users u WHERE NOT EXISTS
                 (SELECT FROM v2.addresses a WHERE a.user_id = u.id)) AS users_without_address_row
        FROM users"

step "one entity, both members, inspected at once"
ID=$(val "SELECT min(id) FROM users WHERE id >= 1000000000")
q -c "SELECT m->>'migration' AS member, r->>'parity' AS parity, r->'legacy' AS legacy_row, r->'target' AS target_row
        FROM jsonb_array_elements(softmig.inspect_group('user_entity', '{\"id\": $ID}') -> 'members') m,
             jsonb_array_elements(m->'rows') r"

step "rollback: legacy is the authority again, nothing lost"
q -c "SELECT softmig.rollback_group('user_entity', 'split demo: trial rollback')"
build old 3
build_wait old
assert "parity of both members is clean" "$PARITY_CLEAN"
assert "legacy equals the two targets joined, row by row" "$JOINED_EQUAL"

step "forward again, then reads from the targets"
q -c "SELECT softmig.advance_group('user_entity', reason => 'split demo: forward again')"
q -c "SELECT softmig.advance_group('user_entity', reason => 'split demo: reads from the targets')"
q -c "SELECT name, softmig.state(name) FROM softmig.migrations ORDER BY id"
q -c "SELECT at::time(0), migration, action, from_state, to_state
        FROM (SELECT 'users' AS migration, * FROM softmig.history('users')
              UNION ALL SELECT 'addresses', * FROM softmig.history('addresses')) h
       WHERE action IN ('advance', 'rollback') ORDER BY h.at, h.migration"

step "summary"
printf '  one legacy table, two target tables; the group moved mirrored -> new_write -> mirrored -> new_write -> new_read\n'
printf '  failed requests: 0; parity clean and legacy = targets joined after every phase\n'
psql -X -q -c "DROP DATABASE $DB WITH (FORCE)"
printf '\nsplit finished in %ss\n' "$(( $(date +%s) - T0 ))"
