#!/usr/bin/env bash
#
# test/assert_check.sh -- run softmig's suites on an assert-enabled server
#
# Debian ships no assert-enabled PostgreSQL, so this builds one: the
# postgresql-15 source package (apt-get source; as root it adds a deb-src
# entry for Debian's own mirror if none exists), configured with
# --enable-cassert --enable-debug into a temp prefix.  Assertions, and
# CLOBBER_FREED_MEMORY (freed memory is overwritten at once), turn latent
# memory bugs into crashes: the first run found three reads of SPI memory
# after SPI_finish.  Then it builds and installs softmig against that server,
# starts a cluster with shared_preload_libraries = 'softmig' and runs
# pg_regress, the isolation specs and the TAP tests (make installcheck).
#
# Run it with `make assert-check`, or directly, after changing C code.
#
# `make test` runs it as its suite "assert": test/run_all.sh fetches the source
# as root (--fetch-only DIR) and runs the rest as postgres with PGSRC set.
#
# Usage: test/assert_check.sh                  fetch, build, run
#        test/assert_check.sh --fetch-only DIR unpack the source into DIR
#                                               and print the tree's path
#        test/assert_check.sh --build-only DIR build the server (from PGSRC)
#                                               into the prefix DIR
# Knobs (environment):
#   PGSRC=/path/to/postgresql-15.x   use this unpacked source tree instead
#   ASSERT_PREFIX=DIR                a server --build-only made: use it
#                                    instead of building one
#   ASSERT_TRIM=1                    with --build-only: PGSRC is a fetched
#                                    copy; build only what the suites use
#   ASSERT_KEEP=1                    keep the temp directory
#   PROVE_FLAGS=-j2                  passed to prove (make test runs two
#                                    TAP files at once)
#
# Exit status: 0 when every suite passed.

set -euo pipefail
# run from `make assert-check`: PostgreSQL's build generates its headers only
# in a top-level make (MAKELEVEL 0), so drop what the outer make exported
unset MAKELEVEL MAKEFLAGS MFLAGS

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'assert_check.sh: error: %s\n' "$*" >&2; exit 1; }

# fetch_source DIR: download and unpack the postgresql-15 source package into
# DIR (as root, adding a deb-src entry for Debian's mirror if there is none);
# prints the source tree's path
fetch_source() {
    local dir=$1 v fetched=
    if [[ -z $(apt-cache showsrc postgresql-15 2>/dev/null) ]]; then
        [[ $EUID -eq 0 ]] || die "no deb-src entry for postgresql-15; set PGSRC or run as root"
        say "adding a deb-src entry for deb.debian.org (bookworm)"
        cat >/etc/apt/sources.list.d/softmig-debsrc.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt-get update -qq
    fi
    say "fetching the postgresql-15 source package"
    mkdir -p "$dir"
    # the newest version whose files the mirror still has
    for v in $(apt-cache showsrc postgresql-15 | sed -n 's/^Version: //p'); do
        if (cd "$dir" && apt-get source -qq --download-only "postgresql-15=$v" >/dev/null 2>&1); then
            fetched=$v
            break
        fi
        rm -f "$dir"/postgresql-15_*
    done
    [[ -n $fetched ]] || die "could not download the postgresql-15 source package"
    say "source version $fetched"
    tar -C "$dir" -xjf "$dir"/postgresql-15_*.orig.tar.bz2
    echo "$dir"/postgresql-15.*/
}

if [[ ${1:-} == --fetch-only ]]; then
    [[ -n ${2:-} ]] || die "--fetch-only needs a directory"
    fetch_source "$2"
    exit 0
fi

# build_server SRC PREFIX LOGDIR TRIM: configure and build an
# assert-enabled server from SRC into PREFIX.  With TRIM 1 (a source tree
# this script or make test fetched, whose Makefiles it may edit) only what
# the suites use is built (the backend, PL/pgSQL, libpq, initdb, pg_ctl,
# psql, pg_dump, pgbench, createdb, pg_config, the regression and isolation
# drivers, the TAP modules), not ecpg and the other client programs nothing
# here runs; a tree given in PGSRC is built whole and left as it was.
build_server() {
    local src=$1 prefix=$2 logs=$3 trim=$4
    (
        cd "$src"
        ./configure --prefix="$prefix" --enable-cassert --enable-debug --enable-tap-tests \
            --without-readline --without-zlib --without-icu CFLAGS=-O1 >"$logs/configure.log" 2>&1 ||
            { tail -30 "$logs/configure.log" >&2; exit 1; }
        if [[ $trim == 1 ]]; then
            trim_build
        fi
        make -j"$(nproc)" -s >"$logs/make.log" 2>&1 || { tail -30 "$logs/make.log" >&2; exit 1; }
        make -s install >"$logs/install.log" 2>&1
        make -C src/test/isolation -s install >>"$logs/install.log" 2>&1
        make -C src/test/perl -s install >>"$logs/install.log" 2>&1
    )
}

# trim_build: in the configured source tree (the current directory), leave
# ecpg and the client programs the suites do not run out of the build.
trim_build() {
    sed -i -E 's/^SUBDIRS = libpq ecpg$/SUBDIRS = libpq/' src/interfaces/Makefile
    sed -i -E '/^SUBDIRS = /,/^$/c\SUBDIRS = initdb pg_config pg_ctl pg_dump pgbench psql scripts\n' src/bin/Makefile
    grep -q '^SUBDIRS = libpq$' src/interfaces/Makefile &&
        grep -q '^SUBDIRS = initdb pg_config pg_ctl pg_dump pgbench psql scripts$' src/bin/Makefile ||
        { echo "the source's Makefiles are not laid out as expected" >&2; exit 1; }
}

if [[ ${1:-} == --build-only ]]; then
    [[ -n ${2:-} && -f ${PGSRC:-}/configure ]] || die "--build-only needs a prefix and PGSRC"
    mkdir -p "$2"
    build_server "$PGSRC" "$2" "$2" "${ASSERT_TRIM:-0}" || die "building PostgreSQL failed (logs in $2)"
    exit 0
fi

WORK=$(mktemp -d /tmp/softmig-assert.XXXXXX)
cleanup() {
    local rc=$?
    if [[ -x $WORK/pg/bin/pg_ctl && -d $WORK/data ]]; then
        as_user "$WORK/pg/bin/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ ${ASSERT_KEEP:-0} == 1 || $rc != 0 ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

# initdb refuses root: as root, everything after the build runs as postgres
if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no postgres user (install postgresql-15 first: make test does)"
    as_user() { runuser -u postgres -- "$@"; }
else
    as_user() { "$@"; }
fi

# 1. and 2. the server, asserts on, optimised a little so the suites stay
# quick: built here from the source, or the one --build-only made
if [[ -n ${ASSERT_PREFIX:-} ]]; then
    [[ -x $ASSERT_PREFIX/bin/postgres ]] || die "ASSERT_PREFIX=$ASSERT_PREFIX has no server"
    ln -s "$ASSERT_PREFIX" "$WORK/pg"
else
    TRIM=0
    if [[ -n ${PGSRC:-} ]]; then
        [[ -f $PGSRC/configure ]] || die "PGSRC=$PGSRC is not a PostgreSQL source tree"
        SRC=$PGSRC
    else
        SRC=$(fetch_source "$WORK/src")
        TRIM=1
    fi
    say "building an assert-enabled PostgreSQL into $WORK/pg (a few minutes)"
    mkdir -p "$WORK/pg"
    build_server "$SRC" "$WORK/pg" "$WORK" "$TRIM" || die "building PostgreSQL failed (logs in $WORK)"
fi
PGC=$WORK/pg/bin/pg_config
"$PGC" --configure | grep -q -- --enable-cassert || die "the server was not built with assertions"
# pg_partman (Debian's package) for test/t/100_partman.pl
APT_PACKAGES=()
. "$REPO/test/pkg.sh"
copy_extension_files pg_partman "$PGC" || die "copying pg_partman into the assert-enabled build failed"

# 3. softmig against it, in a copy of the tree
say "building softmig against it"
mkdir -p "$WORK/tree"
(cd "$REPO" && tar --exclude=.git --exclude='bench/out' -cf - .) | tar -C "$WORK/tree" -xf -
[[ $EUID -eq 0 ]] && chown -R postgres: "$WORK"
as_user make -C "$WORK/tree" -s clean >/dev/null 2>&1 || true
as_user make -C "$WORK/tree" -s PG_CONFIG="$PGC" >/dev/null
as_user make -C "$WORK/tree" -s PG_CONFIG="$PGC" install >/dev/null

# 4. a cluster with softmig preloaded
PORT=$((55600 + RANDOM % 300))
as_user "$WORK/pg/bin/initdb" -D "$WORK/data" -U postgres -A trust --no-sync -E UTF8 --no-locale \
    >"$WORK/initdb.log" 2>&1 || die "initdb failed"
cat >>"$WORK/data/postgresql.conf" <<EOF
shared_preload_libraries = 'softmig'
max_prepared_transactions = 10
fsync = off
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
EOF
as_user "$WORK/pg/bin/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null ||
    die "the assert-enabled server did not start (see $WORK/server.log)"

# 5. the suites
say "running pg_regress, isolation and TAP on the assert-enabled server"
rc=0
as_user env PGHOST="$WORK" PGPORT="$PORT" PGUSER=postgres \
    make -C "$WORK/tree" PG_CONFIG="$PGC" installcheck PROVE_FLAGS="${PROVE_FLAGS:-}" 2>&1 | tee "$WORK/installcheck.log" || rc=$?
for f in "$WORK/tree/regression.diffs" "$WORK/tree/output_iso/regression.diffs"; do
    [[ -s $f ]] && cat "$f"
done
if grep -E 'TRAP:|terminated by signal' "$WORK/server.log" >&2; then
    say "the server log shows an assertion failure or a crash (above)"
    rc=1
fi
if ((rc == 0)); then
    say "assert-enabled run: all suites passed"
else
    say "assert-enabled run: FAILED (everything kept in $WORK)"
fi
exit "$rc"
