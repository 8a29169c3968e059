#!/usr/bin/env bash
#
# bench/backfill_bench.sh -- how fast is softmig's backfill?
#
# Starts ONE throwaway PostgreSQL 15 cluster (temp dir under /tmp, unix socket
# only, shared_preload_libraries = 'softmig'), fills a legacy table with
# BENCH_ROWS rows and copies them into an empty target through a mapping with
# expressions
#
#   legacy(id bigint pk, cust text, amount_cents int, note text)
#   -> target(order_id bigint pk, customer text, amount numeric(12,2), note text)
#   forward  {"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}
#   backward {"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}
#
# three ways, side by side, interleaved (each on its own table pair
# legacy_<method>/target_<method>, freshly built for every round; softmig's
# pairs and migrations get a _r<round> suffix from round 2 on, since migrated
# tables cannot be dropped):
#
#   floor    one INSERT INTO target SELECT <mapping> FROM legacy (autocommit):
#            the cheapest a copy can be, no batching, no race safety
#   plpgsql  how trigger-based tools backfill today: a PL/pgSQL AFTER ... FOR
#            EACH ROW trigger on legacy upserts (INSERT ... ON CONFLICT DO
#            UPDATE) the mapped row into target, and a procedure touches every
#            row with a no-op UPDATE legacy SET id = id WHERE id BETWEEN x AND
#            x + BATCH - 1, COMMIT after each batch
#   softmig  the migration in state mirrored, CALL softmig.backfill('m',
#            batch_size => BATCH)  (only the CALL is timed)
#
# plus, for information, softmig with the other batch sizes in
# BENCH_BATCH_SIZES (same work, own table pairs, same rounds).
#
# Then the backfill under live traffic: a fresh pair in state mirrored,
# pgbench (BENCH_LOAD_CLIENTS clients, random single-row UPDATE / upsert /
# DELETE on legacy) starts, BENCH_LOAD_WARMUP seconds later CALL
# softmig.backfill(batch_size => BATCH) starts; pgbench is stopped when the
# backfill returns (it is capped at BENCH_LOAD_CAP seconds; if the cap hits
# first the backfill simply runs to completion alone and the report says how
# much of it ran under load).  One run per rate in BENCH_LOAD_RATES (0 =
# unthrottled, otherwise pgbench -R <rate>), each on its own fresh pair.
# pgbench TPS comes from its per-second progress lines, split into "before
# the backfill" and "during".
#
# Before every timed item: VACUUM ANALYZE and CHECKPOINT.  After every item the
# pair is checked: target = mapping of legacy (row counts and a mapped EXCEPT
# both ways), and for softmig the backfill reports done; a mismatch aborts the
# run with exit status 3.
#
# Output: a markdown table on stdout and in bench/out/backfill_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_ROWS=1000000          legacy rows to backfill
#   BENCH_BATCH=5000            batch size of softmig and of the plpgsql UPDATE loop
#   BENCH_BATCH_SIZES="1000 20000"  extra softmig batch sizes (informational; "" = none)
#   BENCH_ROUNDS=2              rounds of (a), (b), (c) and the extra batch sizes,
#                               interleaved; one value per item (the live-traffic
#                               runs happen once, after the rounds)
#   BENCH_STAT=best             with rounds > 1: best (fastest) or median
#   BENCH_LOAD_CLIENTS=2        pgbench clients (and threads) of the live-traffic runs
#   BENCH_LOAD_RATES="0 1000"   one live-traffic run per entry: 0 = unthrottled,
#                               N = pgbench -R N (N transactions/s in total);
#                               "" = no live-traffic run
#   BENCH_LOAD_MIX=60/25/15     percent UPDATE / upsert / DELETE in the pgbench script
#   BENCH_LOAD_WARMUP=5         seconds of pgbench before the backfill starts
#   BENCH_LOAD_CAP=300          pgbench stops after this many seconds at the latest
#   BENCH_PROFILE=1             also load pg_stat_statements (track = all) and report
#                               where the time of (a) goes, statement by statement
#   BENCH_PORT=55502            port of the throwaway cluster
#   BENCH_KEEP=1                keep the temp dir (data dir, server log) on exit
#
# Needs PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin and
# softmig already installed there (this script never builds or installs).
# As root, the cluster runs as the postgres user (initdb refuses root).

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${BENCH_ROWS:-1000000}
BATCH=${BENCH_BATCH:-5000}
BATCH_SIZES=${BENCH_BATCH_SIZES-1000 20000}
ROUNDS=${BENCH_ROUNDS:-2}
STAT=${BENCH_STAT:-best}
LOAD_CLIENTS=${BENCH_LOAD_CLIENTS:-2}
LOAD_RATES=${BENCH_LOAD_RATES-0 1000}
LOAD_MIX=${BENCH_LOAD_MIX:-60/25/15}
LOAD_WARMUP=${BENCH_LOAD_WARMUP:-5}
LOAD_CAP=${BENCH_LOAD_CAP:-300}
PROFILE=${BENCH_PROFILE:-0}
PORT=${BENCH_PORT:-55502}

for v in ROWS BATCH ROUNDS LOAD_CLIENTS LOAD_WARMUP LOAD_CAP PORT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
for b in $BATCH_SIZES; do
    [[ $b =~ ^[1-9][0-9]*$ ]] || die "BENCH_BATCH_SIZES must hold positive integers (got '$b')"
done
for r in $LOAD_RATES; do
    [[ $r =~ ^[0-9]+$ ]] || die "BENCH_LOAD_RATES must hold non-negative integers (got '$r')"
done
[[ $LOAD_MIX =~ ^[0-9]+/[0-9]+/[0-9]+$ ]] &&
    (( ${LOAD_MIX//\//+} == 100 )) || die "BENCH_LOAD_MIX must be UPDATE/UPSERT/DELETE percentages adding up to 100 (got '$LOAD_MIX')"
[[ $PROFILE == 0 || $PROFILE == 1 ]] || die "BENCH_PROFILE must be 0 or 1 (got '$PROFILE')"
[[ $STAT == best || $STAT == median ]] || die "BENCH_STAT must be best or median (got '$STAT')"
bench_find_softmig initdb pg_ctl psql pgbench pg_config
grep -q softmig_backfill_step "$SO" ||
    die "the installed softmig.so has no backfill (run make install from this tree)"

# Who runs the server: initdb refuses root.
bench_os_user

SO_MD5_START=$(so_sum)
SO_MTIME=$(date -u -r "$SO" +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------------------
# The throwaway cluster
# ---------------------------------------------------------------------------
PGB_PID=
# the EXIT trap (bench/lib.sh) stops pgbench of a live-traffic run first
bench_cleanup_extra() {
    if [[ -n $PGB_PID ]] && kill -0 "$PGB_PID" 2>/dev/null; then
        kill -TERM "$PGB_PID" 2>/dev/null || true
        wait "$PGB_PID" 2>/dev/null || true
    fi
}

bench_init_cluster softmig-backfill-bench <<EOF
shared_preload_libraries = '$( ((PROFILE)) && echo softmig,pg_stat_statements || echo softmig)'
$( ((PROFILE)) && echo "pg_stat_statements.track = all")
synchronous_commit = off
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
bench_start
bench_psql_env
bench_create_db

PGVERSION=$(sql -c "SHOW server_version")

FWD='{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}'
BWD='{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}'
MAPPED="id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note"

# The fixed part of the schema: the extension, the plpgsql mirror trigger
# function and the procedure that drives the trigger-based backfill.
((PROFILE)) && sql -c "CREATE EXTENSION pg_stat_statements" >/dev/null
sql >/dev/null <<EOF
CREATE EXTENSION softmig;

-- (c) per-row PL/pgSQL mirror (key changes move the row, like softmig)
CREATE FUNCTION mirror_plpgsql() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM target_plpgsql WHERE order_id = OLD.id;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
        DELETE FROM target_plpgsql WHERE order_id = OLD.id;
    END IF;
    INSERT INTO target_plpgsql (order_id, customer, amount, note)
    VALUES (NEW.id, upper(NEW.cust), NEW.amount_cents / 100.0, NEW.note)
    ON CONFLICT (order_id) DO UPDATE
        SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note;
    RETURN NULL;
END \$\$;

-- (c) the backfill driver: touch every row with a no-op UPDATE, one
-- committed transaction per key range of bs ids
CREATE PROCEDURE backfill_plpgsql(bs bigint) LANGUAGE plpgsql AS \$\$
DECLARE
    lo bigint;
    top bigint;
BEGIN
    SELECT min(id), max(id) INTO lo, top FROM legacy_plpgsql;
    WHILE lo <= top LOOP
        UPDATE legacy_plpgsql SET id = id WHERE id BETWEEN lo AND lo + bs - 1;
        COMMIT;
        lo := lo + bs;
    END LOOP;
END \$\$;
EOF

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
settle() {
    sql -c "VACUUM ANALYZE" >/dev/null
    sql -c "CHECKPOINT" >/dev/null
}

gen_rows() { # the legacy rows, from generate_series (10 % of the notes NULL)
    echo "SELECT g, 'cust' || (g % 1000), ((g * 7) % 100000)::int,
                 CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END
            FROM generate_series(1, $1) g"
}

# build_pair TAG MIGRATION: create legacy_TAG (BENCH_ROWS rows) and an empty
# target_TAG.  MIGRATION non-empty: a softmig migration of that name, advanced
# to mirrored after the load (the usual order: legacy data exists, then
# mirroring starts, then the backfill).  TAG plpgsql: the mirror trigger.
# Pairs in a migration get fresh names every round (the event triggers refuse
# to drop migrated tables, and the bench does not depend on drop_migration).
build_pair() {
    local t=$1 mig=$2
    {
        echo "SET client_min_messages = warning;"
        cat <<EOF
DROP TABLE IF EXISTS legacy_$t, target_$t;
CREATE TABLE legacy_$t (id bigint PRIMARY KEY, cust text NOT NULL,
                        amount_cents int NOT NULL, note text)
    WITH (autovacuum_enabled = off);
CREATE TABLE target_$t (order_id bigint PRIMARY KEY, customer text NOT NULL,
                        amount numeric(12,2) NOT NULL, note text)
    WITH (autovacuum_enabled = off);
INSERT INTO legacy_$t $(gen_rows "$ROWS");
EOF
        if [[ -n $mig ]]; then
            cat <<EOF
SELECT softmig.create_migration('$mig', 'legacy_$t', 'target_$t', forward => '$FWD', backward => '$BWD');
SELECT softmig.advance('$mig');
EOF
        fi
        if [[ $t == plpgsql ]]; then
            echo "CREATE TRIGGER mirror AFTER INSERT OR UPDATE OR DELETE ON legacy_plpgsql
                      FOR EACH ROW EXECUTE FUNCTION mirror_plpgsql();"
        fi
    } | sql >/dev/null
    if [[ -n $mig ]]; then
        local st
        st=$(sql -c "SELECT softmig.state('$mig'::text)")
        [[ $st == mirrored ]] || die "migration $mig is in state '$st', not mirrored"
    fi
}

drop_pair() { # TAG: free the space once a pair without migration is checked
    [[ ${BENCH_KEEP:-0} == 1 ]] || sql -c "DROP TABLE legacy_$1, target_$1" >/dev/null
}

# verify TAG EXPECTED_ROWS WHEN [MIGRATION]: target must equal the mapping of
# legacy (EXPECTED_ROWS "-" = any count); with MIGRATION the backfill must be done.
verify() {
    local t=$1 want=$2 when=$3 mig=${4:-} nl nt missing extra res
    res=$(sql <<EOF
SELECT (SELECT count(*) FROM legacy_$t),
       (SELECT count(*) FROM target_$t),
       (SELECT count(*) FROM (
            SELECT $MAPPED FROM legacy_$t
            EXCEPT
            SELECT order_id, customer, amount, note FROM target_$t) d),
       (SELECT count(*) FROM (
            SELECT order_id, customer, amount, note FROM target_$t
            EXCEPT
            SELECT $MAPPED FROM legacy_$t) d);
EOF
    ) || die "verification query failed after $when"
    IFS='|' read -r nl nt missing extra <<<"$res"
    if [[ ($want != - && $nl != "$want") || $nt != "$nl" || $missing != 0 || $extra != 0 ]]; then
        printf '\n!!! MISMATCH after %s: legacy_%s %s rows (expected %s), target_%s %s rows, ' \
            "$when" "$t" "$nl" "$want" "$t" "$nt" >&2
        printf '%s legacy rows missing/different in target, %s target rows without their legacy row\n' \
            "$missing" "$extra" >&2
        exit 3
    fi
    if [[ -n $mig ]]; then
        local st
        st=$(sql -c "SELECT softmig.state('$mig'::text) || ' ' || (softmig.status('$mig') ->> 'backfill_done')")
        [[ $st == "mirrored true" ]] || { printf '\n!!! after %s: migration %s is "%s", not "mirrored true" (state, backfill_done)\n' "$when" "$mig" "$st" >&2; exit 3; }
    fi
}

# time_sql SQL: run SQL in one session, print "elapsed seconds|WAL bytes".
time_sql() {
    sql <<EOF
SET client_min_messages = warning;
SELECT clock_timestamp() AS softmig_bench_t0, pg_current_wal_insert_lsn() AS softmig_bench_l0 \gset
$1
SELECT round(extract(epoch FROM clock_timestamp() - :'softmig_bench_t0'::timestamptz)::numeric, 3),
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'softmig_bench_l0');
EOF
}

# profile_table: where the time of the last timed CALL went, by statement
# (BENCH_PROFILE=1: pg_stat_statements with track = all sees the statements
# the backfill runs through SPI)
PROFILE_TABLE=
profile_table() {
    sql <<'EOF'
WITH s AS (
    SELECT regexp_replace(query, '\s+', ' ', 'g') AS q, calls, rows, total_exec_time AS ms
      FROM pg_stat_statements
     WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE 'SET %'
), c AS (SELECT max(ms) AS call_ms FROM s WHERE q LIKE 'CALL softmig.backfill%')
SELECT format('| %s | %s | %s | %s | %s |',
              CASE
                WHEN q LIKE 'CALL softmig.backfill%' THEN '**the whole CALL**'
                WHEN q LIKE 'INSERT INTO % AS softmig_t %ON CONFLICT%' THEN 'copy: INSERT ... ON CONFLICT DO UPDATE from the batch (after a key conflict)'
                WHEN q LIKE 'INSERT INTO % AS softmig_t %' THEN 'copy: plain INSERT from the batch'
                WHEN q LIKE '% FROM % ROW(%) > ROW(%FOR KEY SHARE SKIP LOCKED' THEN 'read: next batch, ORDER BY key LIMIT n FOR KEY SHARE SKIP LOCKED'
                WHEN q LIKE '% FROM %WHERE $_ ORDER BY%FOR KEY SHARE SKIP LOCKED' THEN 'read: first batch'
                WHEN q LIKE 'SELECT pg_catalog.jsonb_build_object(%' THEN 'cursor: the last key as jsonb'
                WHEN q LIKE 'SELECT pg_catalog.count(*) FROM % WHERE $_ AND ROW(%' THEN 'count: rows in the batch range (skipped-row check)'
                WHEN q LIKE '% FROM % WHERE ROW(%) IN (%FOR KEY SHARE SKIP LOCKED' THEN 'verify: sweep (anti-join, copy missing rows)'
                WHEN q LIKE 'DELETE FROM % WHERE ROW(tableoid, ctid) IN%' THEN 'verify: orphans (target rows legacy lacks)'
                WHEN q LIKE 'SELECT pg_catalog.count(*) FROM (SELECT%NOT EXISTS%' THEN 'verify: anti-join count (proof)'
                ELSE '`' || left(replace(q, '|', '/'), 70) || '`'
              END,
              calls, rows, round(ms::numeric, 0),
              round((100 * ms / nullif(c.call_ms, 0))::numeric, 1))
  FROM s, c
 ORDER BY ms DESC
 LIMIT 12;
EOF
}

declare -A RES         # RES[item] = "v1 v2 ..." (seconds, one value per round)
declare -A WAL         # WAL[item] = WAL bytes written by the timed statement (last round)
record() { RES[$1]="${RES[$1]:-}${RES[$1]:+ }$2"; }
ITEMS=(floor plpgsql softmig)
for b in $BATCH_SIZES; do
    [[ $b == "$BATCH" ]] || ITEMS+=("softmig_b$b")
done

# round suffix: softmig pairs and migrations get fresh names in rounds 2, 3, ...
sfx() { ((r > 1)) && echo "_r$r" || true; }

mig_of() { # item -> migration name ('' for none); round 1 of (a) is 'm'
    case $1 in
        softmig) echo "m$(sfx)" ;;
        softmig_b*) echo "m_b${1#softmig_b}$(sfx)" ;;
        *) echo "" ;;
    esac
}

tag_of() { # item -> table pair tag
    case $1 in
        softmig*) echo "$1$(sfx)" ;;
        *) echo "$1" ;;
    esac
}

timed_sql() { # item -> the timed SQL
    case $1 in
        floor) echo "INSERT INTO target_floor (order_id, customer, amount, note)
    SELECT id, upper(cust), amount_cents / 100.0, note FROM legacy_floor;" ;;
        plpgsql) echo "CALL backfill_plpgsql($BATCH);" ;;
        softmig) echo "CALL softmig.backfill('$(mig_of "$1")', batch_size => $BATCH);" ;;
        softmig_b*) echo "CALL softmig.backfill('$(mig_of "$1")', batch_size => ${1#softmig_b});" ;;
    esac
}

# ---------------------------------------------------------------------------
# (a) (b) (c): backfill BENCH_ROWS rows into an empty target, interleaved
# ---------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
    for it in "${ITEMS[@]}"; do
        mig=$(mig_of "$it"); tag=$(tag_of "$it")
        build_pair "$tag" "$mig"
        settle
        ((PROFILE)) && sql -c "SELECT pg_stat_statements_reset()" >/dev/null
        res=$(time_sql "$(timed_sql "$it")")
        IFS='|' read -r t wal <<<"$res"
        WAL[$it]=$wal
        ((PROFILE)) && [[ $it == softmig ]] && PROFILE_TABLE=$(profile_table)
        verify "$tag" "$ROWS" "backfill ($it, round $r)" "$mig"
        [[ -n $mig ]] || drop_pair "$tag"
        record "$it" "$t"
        say "$(printf 'round %d/%d  %-15s %9s s  %9.0f rows/s' "$r" "$ROUNDS" "$it" "$t" \
            "$(awk -v n="$ROWS" -v t="$t" 'BEGIN { print (t > 0) ? n / t : 0 }')")"
    done
done

# ---------------------------------------------------------------------------
# (d): softmig's backfill while pgbench writes to legacy (state mirrored),
# once per entry of BENCH_LOAD_RATES, after the interleaved rounds
# ---------------------------------------------------------------------------
LOAD_MAXID=$((ROWS + ROWS / 10))
IFS=/ read -r MIX_U MIX_I MIX_D <<<"$LOAD_MIX"
cat >"$TMP/load.pgbench" <<EOF
\\set id random(1, $LOAD_MAXID)
\\set op random(1, 100)
\\set amt random(0, 1000000)
\\if :op <= $MIX_U
UPDATE legacy_load SET amount_cents = :amt, note = 'pgbench u' WHERE id = :id;
\\elif :op <= $((MIX_U + MIX_I))
INSERT INTO legacy_load (id, cust, amount_cents, note)
    VALUES (:id, 'cust' || (:id % 1000), :amt, 'pgbench i')
    ON CONFLICT (id) DO UPDATE SET amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note;
\\else
DELETE FROM legacy_load WHERE id = :id;
\\endif
EOF

# tps_between PROGRESS_FILE FROM TO: mean of pgbench's per-second TPS over the
# progress intervals that lie entirely within (FROM, TO] (epoch seconds).
tps_between() {
    awk -v a="$2" -v b="$3" '
        /^progress: [0-9.]+ s, [0-9.]+ tps/ {
            ts = $2 + 0; tps = $4 + 0
            if (prev == "") prev = ts - 1          # the first report covers the first second
            if (prev >= a - 0.05 && ts <= b + 0.05) { s += tps; n++ }
            prev = ts
        }
        END { if (n) printf "%.0f", s / n; else print "n/a" }' "$1"
}

declare -A LRES        # LRES[rate,field]: the live-traffic results
for rate in $LOAD_RATES; do
    ltag=load_$rate; lmig=m_load_$rate
    build_pair "$ltag" "$lmig"
    sed "s/legacy_load/legacy_$ltag/g" "$TMP/load.pgbench" >"$TMP/$ltag.pgbench"
    chmod a+r "$TMP/$ltag.pgbench"
    settle
    prog=$TMP/pgbench_progress_$rate.log
    rate_opt=(); ((rate > 0)) && rate_opt=(-R "$rate")
    "$PGBIN/pgbench" -n -M prepared -c "$LOAD_CLIENTS" -j "$LOAD_CLIENTS" -T "$LOAD_CAP" \
        -P 1 --progress-timestamp "${rate_opt[@]}" -f "$TMP/$ltag.pgbench" >"$TMP/pgbench_out_$rate.log" 2>"$prog" &
    PGB_PID=$!
    sleep "$LOAD_WARMUP"
    kill -0 "$PGB_PID" 2>/dev/null || { cat "$prog" >&2; die "pgbench (rate $rate) died before the backfill started"; }
    res=$(sql <<EOF
SET client_min_messages = warning;
SELECT extract(epoch FROM clock_timestamp()) AS softmig_bench_t0 \gset
CALL softmig.backfill('$lmig', batch_size => $BATCH);
SELECT :'softmig_bench_t0', extract(epoch FROM clock_timestamp());
EOF
    ) || die "backfill under load (rate $rate) failed"
    IFS='|' read -r bf0 bf1 <<<"$res"
    pgb_alive=1
    kill -0 "$PGB_PID" 2>/dev/null || pgb_alive=0
    kill -TERM "$PGB_PID" 2>/dev/null || true
    wait "$PGB_PID" 2>/dev/null || true
    PGB_PID=
    if grep -qE 'aborted|ERROR|FATAL' "$prog"; then
        grep -E 'aborted|ERROR|FATAL' "$prog" | head -n 5 >&2
        die "pgbench (rate $rate) had failing clients"
    fi
    # how much of the backfill ran while pgbench was still writing (all of it
    # unless BENCH_LOAD_CAP ran out first; the backfill then finished alone)
    if ((pgb_alive)); then cover=100; else
        last=$(awk '/^progress: / { ts = $2 } END { print ts + 0 }' "$prog")
        cover=$(awk -v a="$bf0" -v b="$bf1" -v e="$last" 'BEGIN { c = (e - a) / (b - a); if (c < 0) c = 0; if (c > 1) c = 1; printf "%.0f", 100 * c }')
    fi
    LRES[$rate,secs]=$(awk -v a="$bf0" -v b="$bf1" 'BEGIN { printf "%.3f", b - a }')
    LRES[$rate,before]=$(tps_between "$prog" 0 "$bf0")
    LRES[$rate,during]=$(tps_between "$prog" "$bf0" "$bf1")
    LRES[$rate,cover]=$cover
    LRES[$rate,rows]=$(sql -c "SELECT count(*) FROM legacy_$ltag")
    verify "$ltag" - "backfill under load (rate $rate)" "$lmig"
    say "$(printf 'load rate %-5s backfill %9s s  %9.0f rows/s  pgbench %s tps before, %s tps during (%s%% covered)' \
        "$rate" "${LRES[$rate,secs]}" "$(awk -v n="$ROWS" -v t="${LRES[$rate,secs]}" 'BEGIN { print n / t }')" \
        "${LRES[$rate,before]}" "${LRES[$rate,during]}" "$cover")"
done
T_END=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# Anomalies: server log, library swapped under us
# ---------------------------------------------------------------------------
ANOMALIES=()
n=$(grep -cE 'PANIC|terminated by signal|server process .* was terminated|TRAP:' "$LOG" || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n crash line(s) (PANIC / terminated by signal / TRAP)")
# pgbench stopped with SIGTERM at the end of each live-traffic run: its
# backends log "unexpected EOF" / "could not receive data"; those are expected
n=$(grep -E '(ERROR|FATAL):' "$LOG" | grep -cvE 'unexpected EOF on client connection|could not receive data from client|connection to client lost' || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n ERROR/FATAL line(s), first: $(grep -E '(ERROR|FATAL):' "$LOG" | grep -vE 'unexpected EOF on client connection|could not receive data from client|connection to client lost' | head -n 1)")
n=$(grep -cE 'WARNING:' "$LOG" || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n WARNING line(s), first: $(grep -m1 -E 'WARNING:' "$LOG")")
[[ $(so_sum) == "$SO_MD5_START" ]] ||
    ANOMALIES+=("$SO changed on disk during the run (make install by someone?); the server kept the copy it preloaded at start (md5 ${SO_MD5_START:0:12}), but rerun to bench one consistent build")

# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
pick() { # "v1 v2 ..." s|tps -> the reported value (BENCH_STAT of the rounds)
    tr ' ' '\n' <<<"$1" | grep -v '^n/a$' | sort -g | awk -v u="$2" -v stat="$STAT" '{ a[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (stat == "best") m = (u == "s") ? a[1] : a[NR]
        else m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        if (u == "s") printf "%.3f", m; else printf "%.0f", m }'
}
minmax() { tr ' ' '\n' <<<"$1" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo ".." hi }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'; }
rps() { awk -v n="$1" -v t="$2" 'BEGIN { if (t + 0 == 0) print "n/a"; else printf "%.0f", n / t }'; }

STAMP=$(date -u +%Y%m%d-%H%M%S)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
GITREV=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$HERE/.." status --porcelain -- src 2>/dev/null) ]]; then GITREV="$GITREV (src/ has uncommitted changes)"; fi

describe() {
    case $1 in
        floor) echo "(b) floor: one \`INSERT INTO target SELECT <mapping> FROM legacy\`" ;;
        plpgsql) echo "(c) PL/pgSQL row trigger (upsert) + no-op \`UPDATE legacy SET id = id\` in batches of $BATCH, COMMIT each" ;;
        softmig) echo "(a) softmig: \`CALL softmig.backfill('m', batch_size => $BATCH)\`" ;;
        softmig_b*) echo "softmig, \`batch_size => ${1#softmig_b}\` (informational)" ;;
    esac
}

report() {
    local f p s it v spread
    echo "### softmig backfill bench, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- command: \`$( ((PROFILE)) && echo "BENCH_PROFILE=1 ")BENCH_ROWS=$ROWS BENCH_BATCH=$BATCH BENCH_BATCH_SIZES=\"$BATCH_SIZES\" BENCH_ROUNDS=$ROUNDS$( ((ROUNDS > 1)) && echo " BENCH_STAT=$STAT") BENCH_LOAD_CLIENTS=$LOAD_CLIENTS BENCH_LOAD_RATES=\"$LOAD_RATES\" BENCH_LOAD_MIX=$LOAD_MIX bash bench/backfill_bench.sh\`"
    echo "- machine: $(nproc) CPUs ($CPU), $MEM RAM; PostgreSQL $PGVERSION"
    echo "- server: defaults except synchronous_commit=off, shared_buffers=1GB, max_wal_size=8GB, checkpoint_timeout=30min (fsync on); bench tables have autovacuum off; every pair is built fresh, then VACUUM ANALYZE + CHECKPOINT before its timed item"
    echo "- softmig: $SO (mtime $SO_MTIME, md5 ${SO_MD5_START:0:12}), repo HEAD $GITREV"
    echo "- wall time of the timed part: $((T_END - T_START)) s; load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END"
    echo
    echo "Backfill of $ROWS legacy rows into an empty target (mapping with expressions: upper(), / 100.0 into numeric(12,2))."
    if ((ROUNDS > 1)); then
        if [[ $STAT == best ]]; then
            echo "Values are the best of $ROUNDS interleaved rounds (spread = min..max); ratios compare best with best."
        else
            echo "Values are medians of $ROUNDS interleaved rounds (spread = min..max); ratios are ratios of medians."
        fi
    fi
    echo
    local spreadh="" spreadsep=""
    if ((ROUNDS > 1)); then spreadh=" spread |"; spreadsep="---:|"; fi
    echo "| method | seconds |$spreadh rows/s | time vs floor | time vs (c) plpgsql | WAL MB |"
    echo "|---|---:|$spreadsep---:|---:|---:|---:|"
    f=$(pick "${RES[floor]}" s); p=$(pick "${RES[plpgsql]}" s); s=$(pick "${RES[softmig]}" s)
    for it in "${ITEMS[@]}"; do
        v=$(pick "${RES[$it]}" s)
        spread=""; ((ROUNDS > 1)) && spread=" $(minmax "${RES[$it]}") |"
        printf '| %s | %s |%s %s | %s | %s | %s |\n' "$(describe "$it")" "$v" "$spread" "$(rps "$ROWS" "$v")" \
            "$(ratio "$v" "$f")" "$(ratio "$v" "$p")" "$(awk -v b="${WAL[$it]}" 'BEGIN { printf "%.0f", b / 1048576 }')"
    done
    echo
    echo "WAL MB: WAL written by the timed statement (last round); fsync stays on, synchronous_commit is off."
    echo
    awk -v s="$s" -v f="$f" -v p="$p" 'BEGIN {
        printf "Targets: softmig within 1.5x of the floor: %.2fx, **%s**; softmig at least 3x faster than (c): %.2fx, **%s**.\n",
            s / f, (s <= 1.5 * f) ? "met" : "missed", p / s, (p >= 3 * s) ? "met" : "missed" }'
    if [[ -n $LOAD_RATES ]]; then
        echo
        echo "(d) softmig backfill (\`batch_size => $BATCH\`) of $ROWS rows into an empty target while pgbench writes to legacy (state mirrored), one run per load: $LOAD_CLIENTS clients, -M prepared, autocommit, random id in 1..$LOAD_MAXID, $MIX_U % single-row UPDATE, $MIX_I % upsert (INSERT ... ON CONFLICT DO UPDATE), $MIX_D % DELETE. pgbench starts ${LOAD_WARMUP} s before the CALL and is stopped when it returns. TPS = mean of pgbench's per-second progress reports before / during the backfill. Backfill rows/s = $ROWS / seconds of the CALL."
        echo
        echo "| pgbench load | backfill seconds | backfill rows/s | vs unloaded (a) | pgbench TPS before | pgbench TPS during | during / before | backfill under load | legacy rows at end |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        local rate secs label
        for rate in $LOAD_RATES; do
            if ((rate > 0)); then label="$LOAD_CLIENTS clients, -R $rate"; else label="$LOAD_CLIENTS clients, unthrottled"; fi
            secs=${LRES[$rate,secs]}
            printf '| %s | %s | %s | %s | %s | %s | %s | %s %% | %s |\n' "$label" "$secs" "$(rps "$ROWS" "$secs")" \
                "$(ratio "$s" "$secs")" "${LRES[$rate,before]}" "${LRES[$rate,during]}" \
                "$(ratio "${LRES[$rate,during]}" "${LRES[$rate,before]}")" "${LRES[$rate,cover]}" "${LRES[$rate,rows]}"
        done
        echo
        echo "\"vs unloaded (a)\" = backfill rows/s under load / rows/s of (a) above. \"backfill under load\" = share of the CALL's duration during which pgbench was still running (100 % unless BENCH_LOAD_CAP ran out first and the backfill finished alone). TPS n/a: no whole one-second progress interval fell inside the window (tiny BENCH_ROWS)."
    fi
    echo
    if [[ -n $PROFILE_TABLE ]]; then
        echo "Where the time of (a) goes (BENCH_PROFILE=1, last round; pg_stat_statements with track = all, which itself costs a little; statements nest, so shares do not add up to 100 %):"
        echo
        echo "| statement | calls | rows | ms | % of the CALL |"
        echo "|---|---:|---:|---:|---:|"
        echo "$PROFILE_TABLE"
        echo
    fi
    echo "Checks: after every item target = mapping of legacy (counts and mapped EXCEPT both ways), softmig migrations still mirrored with backfill_done = true: ok."
    if [[ ${#ANOMALIES[@]} -eq 0 ]]; then
        echo "Anomalies: none (no ERROR/WARNING/crash in the server log)."
    else
        echo "Anomalies:"
        local a
        for a in "${ANOMALIES[@]}"; do echo "- $a"; done
    fi
}

mkdir -p "$OUTDIR"
OUTFILE=$OUTDIR/backfill_$STAMP.md
report | tee "$OUTFILE"
say "written to $(realpath --relative-to="$PWD" "$OUTFILE")"
