#!/usr/bin/env bash
#
# bench/oltp_bench.sh -- single-row writes: what does softmig cost per
# statement, against the in-server floor and a PL/pgSQL row trigger?
#
# Starts ONE throwaway cluster (temp dir under /tmp, unix socket only,
# shared_preload_libraries = 'softmig') and runs pgbench (-M prepared,
# BENCH_CLIENTS clients, BENCH_SECONDS each) over single-row statements, three
# ways, each on its own table pair, interleaved round by round:
#
#   floor    one statement writing both tables: a data-modifying CTE that
#            writes the authoritative table and upserts (or deletes) the
#            mapped row of the other (the cheapest dual write there is: one
#            round trip, one plan, no trigger)
#   plpgsql  a PL/pgSQL AFTER ... FOR EACH ROW trigger on the authoritative
#            table that upserts / deletes the mapped row of the other
#   softmig  a softmig migration: its C statement triggers
#
# in two states:
#
#   mirrored   the application writes legacy, the target is the mirror
#   new_write  the application writes the target, legacy is the projection
#
# and two workloads:
#
#   update     UPDATE <authoritative> SET amount, note WHERE key = random id
#              (1..BENCH_IDS, pre-loaded)
#   insdel     INSERT of a fresh key, then DELETE of it: two autocommit
#              statements per pgbench transaction (keys per client disjoint)
#
# Before every run: VACUUM ANALYZE and CHECKPOINT.  After every run each pair
# is checked (row counts and a mapped EXCEPT both ways); a mismatch aborts.
#
# Output: a markdown table (TPS, ratios to floor and plpgsql, the targets of
# issue 22: >= 0.95x floor and >= 1.05x plpgsql) on stdout and in
# bench/out/oltp_<UTC timestamp>.md.
#
# Knobs (environment):
#   BENCH_SECONDS=10   duration of each pgbench run
#   BENCH_CLIENTS=2    pgbench clients (and threads)
#   BENCH_ROUNDS=3     interleaved rounds; the reported value is BENCH_STAT
#   BENCH_STAT=median  median or best (highest TPS) of the rounds
#   BENCH_IDS=100000   rows pre-loaded into each pair
#   BENCH_STATES="mirrored new_write"   which states to run
#   BENCH_WORKS="update insdel"         which workloads to run
#   BENCH_PORT=55510   port of the throwaway cluster
#   BENCH_KEEP=1       keep the temp dir on exit

set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
STAT=${BENCH_STAT:-median}
IDS=${BENCH_IDS:-100000}
STATES=${BENCH_STATES:-mirrored new_write}
WORKS=${BENCH_WORKS:-update insdel}
PORT=${BENCH_PORT:-55510}
METHODS=(floor plpgsql softmig)

for v in SECS CLIENTS ROUNDS IDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $STAT == best || $STAT == median ]] || die "BENCH_STAT must be best or median (got '$STAT')"
for s in $STATES; do [[ $s == mirrored || $s == new_write ]] || die "unknown state '$s'"; done
for w in $WORKS; do [[ $w == update || $w == insdel ]] || die "unknown workload '$w'"; done
bench_find_softmig initdb pg_ctl psql pgbench pg_config
bench_os_user
SO_MD5_START=$(so_sum)

bench_init_cluster softmig-oltp <<EOF
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

# Pair names: <m>_<s> with s = mw (mirrored) or nw (new_write).
sfx() { bench_oltp_state_suffix "$1"; }

say "schema: 3 table pairs per state, $IDS rows each"
bench_oltp_schema_sql "$IDS" "$STATES" "${METHODS[*]}" | sql >/dev/null
for s in $STATES; do
    x=$(sfx "$s")
    [[ $(sql -c "SELECT softmig.state('m_$x')") == "$s" ]] || die "m_$x is not in state $s"
done

settle() {
    sql -c "VACUUM ANALYZE" >/dev/null
    sql -c "CHECKPOINT" >/dev/null
}

# verify PAIR (e.g. floor_mw): target must equal the mapping of legacy (the
# values the workloads write keep lower(upper(cust)) = cust).
verify() {
    local p=$1 when=$2 res nl nt a b
    res=$(sql <<EOF
SELECT (SELECT count(*) FROM legacy_$p), (SELECT count(*) FROM target_$p),
       (SELECT count(*) FROM (
            SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note FROM legacy_$p
            EXCEPT SELECT order_id, customer, amount, note FROM target_$p) d),
       (SELECT count(*) FROM (
            SELECT order_id, customer, amount, note FROM target_$p
            EXCEPT SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2), note FROM legacy_$p) d);
EOF
    ) || die "verification query failed after $when ($p)"
    IFS='|' read -r nl nt a b <<<"$res"
    [[ $nl == "$IDS" && $nt == "$IDS" && $a == 0 && $b == 0 ]] ||
        die "MISMATCH after $when, pair $p: legacy $nl rows, target $nt rows (expected $IDS), $a / $b differing"
}

# script STATE WORK METHOD FILE: the pgbench script
script() {
    local s=$1 w=$2 m=$3 f=$4 x p
    x=$(sfx "$s"); p=${m}_$x
    {
        echo "\\set id random(1, $IDS)"
        echo "\\set amt random(0, 1000000)"
        echo "\\set nid 1000000000 + :client_id * 100000000 + random(1, 99999999)"
        if [[ $s == mirrored ]]; then
            case $w/$m in
            update/floor) cat <<EOF
WITH l AS (UPDATE legacy_$p SET amount_cents = :amt, note = 'pgbench' WHERE id = :id
           RETURNING id, cust, amount_cents, note)
INSERT INTO target_$p (order_id, customer, amount, note)
    SELECT id, upper(cust), amount_cents / 100.0, note FROM l
    ON CONFLICT (order_id) DO UPDATE
    SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note;
EOF
            ;;
            update/*) echo "UPDATE legacy_$p SET amount_cents = :amt, note = 'pgbench' WHERE id = :id;" ;;
            insdel/floor) cat <<EOF
WITH l AS (INSERT INTO legacy_$p (id, cust, amount_cents, note)
           VALUES (:nid, 'cust' || (:nid % 1000), :amt, 'pgbench')
           RETURNING id, cust, amount_cents, note)
INSERT INTO target_$p (order_id, customer, amount, note)
    SELECT id, upper(cust), amount_cents / 100.0, note FROM l
    ON CONFLICT (order_id) DO UPDATE
    SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note;
WITH l AS (DELETE FROM legacy_$p WHERE id = :nid RETURNING id)
DELETE FROM target_$p t USING l WHERE t.order_id = l.id;
EOF
            ;;
            insdel/*) cat <<EOF
INSERT INTO legacy_$p (id, cust, amount_cents, note)
    VALUES (:nid, 'cust' || (:nid % 1000), :amt, 'pgbench');
DELETE FROM legacy_$p WHERE id = :nid;
EOF
            ;;
            esac
        else
            case $w/$m in
            update/floor) cat <<EOF
WITH t AS (UPDATE target_$p SET amount = :amt / 100.0, note = 'pgbench' WHERE order_id = :id
           RETURNING order_id, customer, amount, note)
INSERT INTO legacy_$p (id, cust, amount_cents, note)
    SELECT order_id, lower(customer), (amount * 100)::int, note FROM t
    ON CONFLICT (id) DO UPDATE
    SET cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note;
EOF
            ;;
            update/*) echo "UPDATE target_$p SET amount = :amt / 100.0, note = 'pgbench' WHERE order_id = :id;" ;;
            insdel/floor) cat <<EOF
WITH t AS (INSERT INTO target_$p (order_id, customer, amount, note)
           VALUES (:nid, 'CUST' || (:nid % 1000), :amt / 100.0, 'pgbench')
           RETURNING order_id, customer, amount, note)
INSERT INTO legacy_$p (id, cust, amount_cents, note)
    SELECT order_id, lower(customer), (amount * 100)::int, note FROM t
    ON CONFLICT (id) DO UPDATE
    SET cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note;
WITH t AS (DELETE FROM target_$p WHERE order_id = :nid RETURNING order_id)
DELETE FROM legacy_$p l USING t WHERE l.id = t.order_id;
EOF
            ;;
            insdel/*) cat <<EOF
INSERT INTO target_$p (order_id, customer, amount, note)
    VALUES (:nid, 'CUST' || (:nid % 1000), :amt / 100.0, 'pgbench');
DELETE FROM target_$p WHERE order_id = :nid;
EOF
            ;;
            esac
        fi
    } >"$f"
}

# children_cpu: user + system CPU ticks of the postmaster's exited children
# (the backends of finished pgbench runs; /proc/PID/stat fields 16 and 17).
HZ=$(getconf CLK_TCK)
children_cpu() {
    local pid
    pid=$(head -n1 "$DATA/postmaster.pid")
    awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$pid/stat"
}

declare -A RES CPU
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
    for s in $STATES; do
        for w in $WORKS; do
            for m in "${METHODS[@]}"; do
                f=$TMP/pgb_${s}_${w}_$m.sql
                script "$s" "$w" "$m" "$f"
                settle
                c0=$(children_cpu)
                out=$("$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -f "$f" 2>&1) ||
                    { printf '%s\n' "$out" >&2; die "pgbench ($s $w $m) failed"; }
                tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
                failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
                [[ -n $tps ]] || { printf '%s\n' "$out" >&2; die "no TPS from pgbench ($s $w $m)"; }
                [[ ${failed:-0} == 0 ]] || { printf '%s\n' "$out" >&2; die "pgbench ($s $w $m): $failed failed"; }
                verify "${m}_$(sfx "$s")" "pgbench $s $w"
                c1=$(children_cpu)
                ntx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
                [[ -n $ntx && $ntx -gt 0 ]] || { printf '%s\n' "$out" >&2; die "no transaction count from pgbench ($s $w $m)"; }
                us=$(awk -v a="$c0" -v b="$c1" -v n="$ntx" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
                tps=$(awk -v x="$tps" 'BEGIN { printf "%.0f", x }')
                RES[$s,$w,$m]="${RES[$s,$w,$m]:-}${RES[$s,$w,$m]:+ }$tps"
                CPU[$s,$w,$m]="${CPU[$s,$w,$m]:-}${CPU[$s,$w,$m]:+ }$us"
                say "$(printf 'round %d/%d  %-9s %-6s %-8s %8s tps %7s us CPU/tx' "$r" "$ROUNDS" "$s" "$w" "$m" "$tps" "$us")"
            done
        done
    done
done
T_END=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

for s in $STATES; do
    x=$(sfx "$s")
    [[ $(sql -c "SELECT softmig.state('m_$x')") == "$s" ]] || die "m_$x left state $s"
done
ANOMALIES=()
n=$(grep -cE '(ERROR|FATAL|PANIC|WARNING):|terminated by signal' "$LOG" || true)
[[ $n == 0 ]] || ANOMALIES+=("server log: $n ERROR/FATAL/WARNING/crash line(s), first: $(grep -m1 -E '(ERROR|FATAL|PANIC|WARNING):|terminated by signal' "$LOG")")
[[ $(so_sum) == "$SO_MD5_START" ]] || ANOMALIES+=("$SO changed on disk during the run; rerun")

pick() { # "v1 v2 ..." -> BENCH_STAT of the rounds
    tr ' ' '\n' <<<"$1" | sort -g | awk -v stat="$STAT" '{ a[NR] = $1 } END {
        if (stat == "best") m = a[NR]
        else m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%.0f", m }'
}
pickf() { # "v1 v2 ..." -> BENCH_STAT of the rounds, lower is better
    tr ' ' '\n' <<<"$1" | sort -g | awk -v stat="$STAT" '{ a[NR] = $1 } END {
        if (stat == "best") m = a[1]
        else m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%.1f", m }'
}
minmax() { tr ' ' '\n' <<<"$1" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo ".." hi }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'; }

# rows tps|cpu: the table of one measurement, one row per state and work.
# TPS: higher is better, ratio softmig / reference; CPU per transaction:
# lower is better, ratio reference / softmig (the throughput ratio).
rows() {
    local s w f p v unit=TPS
    [[ $1 == cpu ]] && unit=µs
    if [[ $1 == tps ]]; then
        echo "| state | work | floor $unit | plpgsql $unit | softmig $unit | softmig / floor (goal >= 0.95x) | softmig / plpgsql (goal >= 1.05x) | spread softmig |"
    else
        echo "| state | work | floor $unit | plpgsql $unit | softmig $unit | floor / softmig (goal >= 0.95x) | plpgsql / softmig (goal >= 1.05x) | spread softmig |"
    fi
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for s in $STATES; do
        for w in $WORKS; do
            if [[ $1 == tps ]]; then
                f=$(pick "${RES[$s,$w,floor]}"); p=$(pick "${RES[$s,$w,plpgsql]}"); v=$(pick "${RES[$s,$w,softmig]}")
                echo "| $s | $w | $f | $p | $v | $(ratio "$v" "$f") | $(ratio "$v" "$p") | $(minmax "${RES[$s,$w,softmig]}") |"
            else
                f=$(pickf "${CPU[$s,$w,floor]}"); p=$(pickf "${CPU[$s,$w,plpgsql]}"); v=$(pickf "${CPU[$s,$w,softmig]}")
                echo "| $s | $w | $f | $p | $v | $(ratio "$f" "$v") | $(ratio "$p" "$v") | $(minmax "${CPU[$s,$w,softmig]}") |"
            fi
        done
    done
}

report() {
    local a
    echo "### softmig single-row writes, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- command: \`BENCH_SECONDS=$SECS BENCH_CLIENTS=$CLIENTS BENCH_ROUNDS=$ROUNDS BENCH_STAT=$STAT BENCH_IDS=$IDS bash bench/oltp_bench.sh\`"
    echo "- PostgreSQL $PGVERSION; $(nproc) CPUs; softmig $SO (md5 ${SO_MD5_START:0:12}), repo HEAD $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n $(git -C "$HERE/.." status --porcelain -- src 2>/dev/null) ]] && echo ' (src/ has uncommitted changes)')"
    echo "- wall time $((T_END - T_START)) s; load average at start $LOAD_START, at end $LOAD_END"
    echo "- pgbench -M prepared, $CLIENTS clients, $SECS s per run; TPS is the $STAT of $ROUNDS interleaved rounds (spread min..max)"
    echo
    rows tps
    echo
    echo "Backend CPU per transaction (user + system time of the pgbench backends, from the postmaster's children's times, divided by the transactions; other load on the machine inflates it far less than it cuts TPS). Ratios are CPU of the reference / CPU of softmig, i.e. the throughput ratio if the server were CPU-bound:"
    echo
    rows cpu
    echo
    echo "Checks: after every run target = mapping of legacy for every pair: ok."
    if [[ ${#ANOMALIES[@]} -eq 0 ]]; then echo "Anomalies: none."; else
        echo "Anomalies:"; for a in "${ANOMALIES[@]}"; do echo "- $a"; done; fi
}

mkdir -p "$OUTDIR"
OUTFILE=$OUTDIR/oltp_$(date -u +%Y%m%d-%H%M%S).md
report | tee "$OUTFILE"
say "written to $(realpath --relative-to="$PWD" "$OUTFILE")"
