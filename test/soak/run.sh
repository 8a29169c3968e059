#!/usr/bin/env bash
#
# test/soak/run.sh -- `make soak`: build and install softmig, start a
# throwaway PostgreSQL 15 cluster and run a randomized soak against it: the
# lifecycle soak (test/soak/lifecycle.pl; `make test` runs a minute of it
# as test/t/120_lifecycle_soak.pl) or the operations soak
# (test/soak/soak.pl).  Not part of `make test`.
#
# Like test/run_all.sh: as root it installs missing Debian packages, builds,
# installs, copies the tree (without .git) to a `mktemp -d` directory owned
# by `postgres` and runs the rest as that user; the cluster is stopped and
# the directory removed on every exit.
#
# Knobs (environment), passed on to the soak (test/soak/README.md):
#   SOAK_KIND         lifecycle (default) or operations
#   SOAK_SECONDS      length of the workload, default 600 (lifecycle) or
#                     180 (operations)
#   SOAK_CLIENTS      pgbench clients, default 4
#   SOAK_ROWS         initial entities, default 20000
#   SOAK_CHECK_EVERY  mean seconds between quiescent checks, default 10
#                     (lifecycle) or 8 (operations)
#   SOAK_STATEMENT_TIMEOUT  statement_timeout of every soak statement
#                     (lifecycle), default 180s
#   SOAK_SEED         random seed (printed at the start), default random
#   SOAK_SABOTAGE=1   corrupt one row halfway (self-test: must end in FAIL)
#   SOAK_KEEP=1       keep the temp directory (server log, data directory)
#   SOAK_PGBIN        PostgreSQL 15 bin directory to build against and run,
#                     default /usr/lib/postgresql/15/bin; e.g. the
#                     assert-enabled build of test/assert_check.sh
#                     (ASSERT_KEEP=1 keeps it: <its temp dir>/pg/bin)
#
# Internal: `run.sh --inner WORKDIR` is the second half, run as the
# unprivileged user inside the copied tree.

set -euo pipefail

PGBIN=${SOAK_PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PGBIN/pg_config
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 libipc-run-perl make gcc)

unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES

say() { printf '==> %s\n' "$*"; }
die() { printf 'soak/run.sh: error: %s\n' "$*" >&2; exit 2; }

# pkg_installed and ensure_packages
. "$(dirname "${BASH_SOURCE[0]}")/../pkg.sh"

check_tools() {
    local missing=()
    [[ -x $PG_CONFIG ]] || missing+=("$PG_CONFIG (postgresql-server-dev-15)")
    [[ -x $PGBIN/initdb ]] || missing+=("$PGBIN/initdb (postgresql-15)")
    [[ -x $PGBIN/pgbench ]] || missing+=("$PGBIN/pgbench (postgresql-15)")
    command -v make >/dev/null || missing+=("make")
    perl -MIPC::Run -e1 2>/dev/null || missing+=("IPC::Run (libipc-run-perl)")
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]}"
}

WORK=
cleanup_outer() {
    local rc=$?
    [[ -n $WORK && -d $WORK ]] || return $rc
    if [[ -f $WORK/data/postmaster.pid ]]; then
        if ((EUID == 0)); then
            runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
        else
            "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    fi
    if [[ ${SOAK_KEEP:-0} == 1 ]]; then
        say "kept $WORK (SOAK_KEEP=1)"
    else
        rm -rf "$WORK"
    fi
    return $rc
}

outer() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ensure_packages
    check_tools

    say "building softmig"
    make -C "$root" -s PG_CONFIG="$PG_CONFIG"
    if ((EUID == 0)); then
        say "installing softmig"
        make -C "$root" -s PG_CONFIG="$PG_CONFIG" install
    elif ! make -C "$root" -s PG_CONFIG="$PG_CONFIG" install; then
        say "warning: 'make install' failed; soaking the softmig build already installed"
    fi

    trap cleanup_outer EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d /tmp/softmig-soak.XXXXXX)
    mkdir "$WORK/tree"
    tar -C "$root" --exclude=./.git --exclude=./results --exclude=./output_iso \
        --exclude=./tmp_check --exclude='./regression.*' -cf - . |
        tar -C "$WORK/tree" -xf -

    local rc=0
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user (is postgresql-15 installed?)"
        chown -R postgres: "$WORK"
        runuser -u postgres -- env $(env | grep -o '^SOAK_[A-Z_]*=.*' || true) \
            bash "$WORK/tree/test/soak/run.sh" --inner "$WORK" || rc=$?
    else
        bash "$WORK/tree/test/soak/run.sh" --inner "$WORK" || rc=$?
    fi
    return $rc
}

PGDATA=
stop_cluster() {
    if [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]]; then
        "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 ||
            "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

inner() {
    local work=$1
    PGDATA=$work/data
    cd "$work/tree"
    export PATH="$PGBIN:$PATH"
    trap stop_cluster EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local port=$((55000 + RANDOM % 1000))
    say "starting cluster in $PGDATA (socket $work, port $port)"
    if ! initdb -D "$PGDATA" -U postgres -A trust --no-sync --no-locale -E UTF8 >"$work/initdb.log" 2>&1; then
        cat "$work/initdb.log" >&2
        die "initdb failed"
    fi
    cat >>"$PGDATA/postgresql.conf" <<EOF

# softmig soak
shared_preload_libraries = 'softmig'
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
max_connections = 50
fsync = off
synchronous_commit = off
shared_buffers = 256MB
max_wal_size = 4GB
log_min_messages = warning
log_line_prefix = '%m [%p] %e %a '
EOF
    if ! pg_ctl -D "$PGDATA" -l "$work/postgres.log" -w -t 120 start >/dev/null; then
        cat "$work/postgres.log" >&2 || true
        die "the soak cluster did not start (server log above)"
    fi
    export PGHOST=$work PGPORT=$port PGUSER=postgres PGDATABASE=postgres

    local rc=0
    case ${SOAK_KIND:-lifecycle} in
        lifecycle) SOAK_SERVER_LOG=$work/postgres.log perl test/soak/lifecycle.pl || rc=$? ;;
        operations) perl test/soak/soak.pl || rc=$? ;;
        *) die "unknown SOAK_KIND '${SOAK_KIND}' (lifecycle or operations)" ;;
    esac
    if ((rc != 0)); then
        say "tail of the server log ($work/postgres.log)"
        grep -E 'PANIC|FATAL|ERROR|TRAP|terminated by signal' "$work/postgres.log" | tail -n 30 || true
    fi
    return $rc
}

if [[ ${1:-} == --inner ]]; then
    [[ -n ${2:-} ]] || die "--inner needs the work directory"
    inner "$2"
else
    outer
fi
