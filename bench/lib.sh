# shellcheck shell=bash
#
# bench/lib.sh -- the set-up the benches share; sourced, never run:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# right after `set -euo pipefail`.  Sourcing only defines things; nothing runs
# until the bench calls the functions.  It provides
#
#   variables  PGBIN (the server binaries: BENCH_PGBIN, default Debian 12's
#              PostgreSQL 15), HERE (this directory),
#              OUTDIR (bench/out), BENCH_SCRIPT (the bench's file name, used
#              in messages and in the postgresql.conf heading)
#   messages   say, die
#   checks     bench_find_softmig BIN...  (server binaries, installed softmig;
#              sets PKGLIB, SHAREDIR, SO), so_sum
#   OS user    bench_os_user  (sets PGUSER_OS, defines as_pg)
#   cluster    bench_init_cluster PREFIX <<EOF ... EOF  (temp dir, cleanup
#              trap, initdb, postgresql.conf; sets TMP, DATA, LOG),
#              bench_start, and the EXIT trap bench_cleanup (with an optional
#              hook bench_cleanup_extra the bench may define)
#   client     bench_psql_env (PGHOST/PGPORT/PGUSER, PSQL, sql),
#              bench_create_db (database bench, PGDATABASE)
#   schema     bench_plpgsql_trigger_sql (the PL/pgSQL row trigger the
#              benches compare softmig with)
#   measure    bench_callgrind_ir FILE  (instructions of a standalone
#              backend running FILE)
#
# Knob parsing, schema, measurements and reports stay in each bench.

# shellcheck disable=SC2034  # the variables set here are used by the benches

PGBIN=${BENCH_PGBIN:-/usr/lib/postgresql/15/bin}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUTDIR=$HERE/out
BENCH_SCRIPT=${0##*/}

# die MESSAGE: print "<bench>: error: MESSAGE" on stderr and exit 1.
die() { printf '%s: error: %s\n' "$BENCH_SCRIPT" "$*" >&2; exit 1; }

# say MESSAGE: a progress line on stderr.
say() { printf '==> %s\n' "$*" >&2; }

# bench_find_softmig BIN...: die unless every BIN is an executable in PGBIN
# and softmig is installed in that server; sets PKGLIB, SHAREDIR and SO (the
# installed softmig.so).
bench_find_softmig() {
    local b
    for b in "$@"; do
        [[ -x $PGBIN/$b ]] || die "$PGBIN/$b not found (PostgreSQL server package missing? BENCH_PGBIN)"
    done
    PKGLIB=$("$PGBIN/pg_config" --pkglibdir)
    SHAREDIR=$("$PGBIN/pg_config" --sharedir)
    SO=$PKGLIB/softmig.so
    [[ -f $SO && -f $SHAREDIR/extension/softmig.control ]] ||
        die "softmig is not installed in $PKGLIB / $SHAREDIR/extension (run make install first)"
}

# so_sum: the md5 of the installed softmig.so (to notice a make install
# during a run).
so_sum() { md5sum "$SO" | cut -d' ' -f1; }

# bench_os_user: who runs the server (initdb refuses root): as root the
# postgres user, else the caller.  Sets PGUSER_OS and defines as_pg CMD...,
# which runs CMD as that user with the temp dir as working directory.
# shellcheck disable=SC2317  # as_pg is called by the benches
bench_os_user() {
    if [[ $EUID -eq 0 ]]; then
        PGUSER_OS=postgres
        id "$PGUSER_OS" >/dev/null 2>&1 || die "running as root but there is no postgres user"
        as_pg() { (cd "$TMP" && runuser -u "$PGUSER_OS" -- "$@"); }
    else
        PGUSER_OS=$(id -un)
        as_pg() { (cd "$TMP" && "$@"); }
    fi
}

# bench_cleanup: the EXIT trap.  Runs bench_cleanup_extra if the bench
# defines it (e.g. to stop its own background clients), stops the server
# (fast, else immediate), prints the tail of the server log if the exit status
# is not 0, removes the temp dir unless BENCH_KEEP=1, and exits with the
# status the bench exited with.
# shellcheck disable=SC2317  # called through the trap
bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if declare -F bench_cleanup_extra >/dev/null; then
        bench_cleanup_extra
    fi
    if [[ -f $DATA/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ $rc -ne 0 && -f $LOG ]]; then
        printf '\n--- last lines of the server log (%s) ---\n' "$LOG" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}

# bench_init_cluster PREFIX <<EOF ... EOF: create the temp dir
# /tmp/PREFIX.XXXXXX (TMP; DATA = the data dir, LOG = the server log), owned
# by PGUSER_OS, install bench_cleanup as the EXIT trap (INT / TERM exit 130 /
# 143), run initdb and append to postgresql.conf a heading, unix-socket-only
# settings (socket in TMP, port PORT) and then the lines read from stdin (the
# bench's own settings).  Does not start the server (bench_start does).
bench_init_cluster() {
    local prefix=$1 extra
    extra=$(cat)
    TMP=$(mktemp -d "/tmp/$prefix.XXXXXX")
    DATA=$TMP/data
    LOG=$TMP/server.log
    [[ $EUID -eq 0 ]] && chown "$PGUSER_OS": "$TMP"

    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    say "initdb in $TMP (as $PGUSER_OS)"
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$TMP/initdb.log" 2>&1 ||
        { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    cat >>"$DATA/postgresql.conf" <<EOF

# --- $BENCH_SCRIPT: defaults except these ---
listen_addresses = ''
unix_socket_directories = '$TMP'
port = $PORT
$extra
EOF
}

# bench_start: start the server (log in LOG), or die.
bench_start() {
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 120 start >/dev/null ||
        die "the server did not start (port $PORT busy? see $LOG)"
}

# bench_psql_env: point libpq at the cluster (PGHOST, PGPORT, PGUSER,
# exported), set PSQL (psql with ON_ERROR_STOP, no psqlrc, quiet) and define
# sql ARGS..., which is PSQL with unaligned, tuples-only output.
# shellcheck disable=SC2317  # sql is called by the benches
bench_psql_env() {
    export PGHOST=$TMP PGPORT=$PORT PGUSER=postgres
    PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)
    sql() { "${PSQL[@]}" -At "$@"; }
}

# bench_create_db: create the database bench and make it the default
# (PGDATABASE, exported).
bench_create_db() {
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench" >/dev/null
    export PGDATABASE=bench
}

# bench_plpgsql_trigger_sql FN SRC DST DIRECTION: print the SQL of function FN
# and row trigger FN on table SRC that carry every write to DST with the
# benches' orders mapping, the way trigger-based migration tools do (an upsert
# per row; a key change moves the row).  DIRECTION forward: SRC is
# legacy-shaped (id, cust, amount_cents, note), DST target-shaped (order_id,
# customer, amount, note); backward: the other way round.
bench_plpgsql_trigger_sql() {
    local fn=$1 src=$2 dst=$3 skey=id dkey=order_id
    local cols="order_id, customer, amount, note"
    local vals="NEW.id, upper(NEW.cust), NEW.amount_cents / 100.0, NEW.note"
    local set="customer = EXCLUDED.customer, amount = EXCLUDED.amount, note = EXCLUDED.note"
    if [[ $4 == backward ]]; then
        skey=order_id dkey=id cols="id, cust, amount_cents, note"
        vals="NEW.order_id, lower(NEW.customer), (NEW.amount * 100)::int, NEW.note"
        set="cust = EXCLUDED.cust, amount_cents = EXCLUDED.amount_cents, note = EXCLUDED.note"
    fi
    cat <<EOF
CREATE FUNCTION $fn() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM $dst WHERE $dkey = OLD.$skey;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.$skey IS DISTINCT FROM OLD.$skey THEN
        DELETE FROM $dst WHERE $dkey = OLD.$skey;
    END IF;
    INSERT INTO $dst ($cols) VALUES ($vals)
    ON CONFLICT ($dkey) DO UPDATE SET $set;
    RETURN NULL;
END \$\$;
CREATE TRIGGER $fn AFTER INSERT OR UPDATE OR DELETE ON $src
    FOR EACH ROW EXECUTE FUNCTION $fn();
EOF
}

# bench_oltp_state_suffix STATE: the suffix of the single-row benches' table
# pairs in STATE (mw: mirrored, nw: new_write).
bench_oltp_state_suffix() {
    [[ $1 == mirrored ]] && echo mw || echo nw
}

# bench_oltp_schema_sql IDS "STATE..." "METHOD...": print the SQL that sets up
# the single-row benches (oltp_bench.sh, oltp_insn_bench.sh): per state and
# method a pair legacy_<method>_<sfx> (id, cust, amount_cents, note) and
# target_<method>_<sfx> (order_id, customer, amount, note) of IDS rows each,
# equal through the benches' orders mapping; the plpgsql pair gets its row
# trigger, the softmig pair its migration m_<sfx>, advanced to the state.
bench_oltp_schema_sql() {
    local ids=$1 states=$2 methods=$3 s x m
    echo "CREATE EXTENSION softmig;"
    for s in $states; do
        x=$(bench_oltp_state_suffix "$s")
        for m in $methods; do
            cat <<EOF
CREATE TABLE legacy_${m}_$x (id bigint PRIMARY KEY, cust text NOT NULL,
                             amount_cents int NOT NULL, note text)
    WITH (autovacuum_enabled = off, fillfactor = 80);
CREATE TABLE target_${m}_$x (order_id bigint PRIMARY KEY, customer text NOT NULL,
                             amount numeric(12,2) NOT NULL, note text)
    WITH (autovacuum_enabled = off, fillfactor = 80);
INSERT INTO legacy_${m}_$x SELECT g, 'cust' || (g % 1000), (g * 7) % 100000, 'note ' || g
    FROM generate_series(1, $ids) g;
INSERT INTO target_${m}_$x SELECT id, upper(cust), amount_cents / 100.0, note FROM legacy_${m}_$x;
EOF
        done
        if [[ $s == mirrored ]]; then
            bench_plpgsql_trigger_sql mirror_plpgsql_mw legacy_plpgsql_mw target_plpgsql_mw forward
        else
            bench_plpgsql_trigger_sql project_plpgsql_nw target_plpgsql_nw legacy_plpgsql_nw backward
        fi
        cat <<EOF
SELECT softmig.create_migration('m_$x', 'legacy_softmig_$x', 'target_softmig_$x',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
SELECT softmig.advance('m_$x');
EOF
        if [[ $s == new_write ]]; then
            echo "SELECT softmig.advance('m_$x', 'new_write', reason => 'bench: both tables loaded alike', force => true);"
        fi
    done
}

# bench_callgrind_ir FILE: the total instructions (callgrind's Ir) of one
# standalone backend (postgres --single, database bench) running the
# statements of FILE on a fresh copy of DATA (the server must be stopped),
# printed on stdout; dies when the backend fails or a statement errors.
# Benches run it twice, for N1 and N2 transactions, and divide the
# difference by N2 - N1, so start-up, first plans and shut-down cancel out.
bench_callgrind_ir() {
    local f=$1 t
    rm -rf "$TMP/run"
    cp -a "$DATA" "$TMP/run"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" \
        "$PGBIN/postgres" --single -D "$TMP/run" bench <"$f" >"$TMP/single.log" 2>&1 ||
        { tail -n 20 "$TMP/single.log" >&2; die "postgres --single failed"; }
    ! grep -qE '(ERROR|FATAL|PANIC):' "$TMP/single.log" ||
        { grep -m3 -E '(ERROR|FATAL|PANIC):' "$TMP/single.log" >&2; die "statement failed in $f"; }
    t=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$TMP/cg.out" | head -n1)
    [[ -n $t ]] || die "no instruction total in the callgrind output"
    echo "$t"
}
