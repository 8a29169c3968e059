#!/usr/bin/env bash
#
# test/run_all.sh -- build softmig and run every test suite against a
# throwaway PostgreSQL 15 cluster.  `make test` calls this from the repo root.
#
# What it does:
#   1. As root on a fresh Debian 12 machine: installs the missing apt packages
#      (only if something is missing).  As any other user: checks the tools are
#      there and says what is missing.
#   2. Builds with PGXS and installs the extension (`make install`; a non-root
#      user whose install fails gets a warning and the already installed copy
#      is tested).
#   3. Copies the tree (without .git) to a fresh `mktemp -d` directory, because
#      initdb and the PostgreSQL TAP framework refuse to run as root; as root
#      that directory is chowned to `postgres` and the rest runs as postgres.
#   4. Starts a cluster in that directory (unix socket only, random port,
#      shared_preload_libraries = 'softmig') and runs the suites:
#        regress    pg_regress tests (sql/, expected/) and isolation tests
#                   (test/isolation/), each reported as its own suite
#        pgtap      pg_prove over test/pgtap/*.sql (own database)
#        tap        Perl TAP tests test/t/*.pl (PostgreSQL::Test::Cluster
#                   starts its own nodes)
#        monitoring test/monitoring/run.sh: promtool rule tests, the exporter,
#                   Prometheus and the dashboard live on loopback, pg_cron
#      A failing suite does not stop the others; a suite that ran zero tests
#      is a failure.  Last, with regress: the cluster is restarted without
#      shared_preload_libraries and pg_regress runs again (regress_nopreload),
#      the case of `make installcheck` against a server of one's own.
#   5. Prints one line per suite and, as the very last line, "N passed, N failed"
#      (individual tests: each pg_regress/isolation test counts 1, pgTAP and
#      TAP count subtests).  Exits non-zero if anything failed.  The cluster is
#      stopped and the temp directory removed on every exit.
#
# Knobs (environment):
#   SOFTMIG_SUITES  space-separated subset of: regress pgtap tap
#                   (also: pg_regress, isolation for one half of regress,
#                   demo, the live demo `make demo` runs, and assert, the
#                   suites on an assert-enabled server built from Debian's
#                   source package by test/assert_check.sh, about 3 minutes)
#                   (also: monitoring, see test/monitoring/run.sh)
#                   default "regress pgtap tap monitoring demo assert"
#   PGSRC           for assert: an unpacked PostgreSQL 15 source tree to
#                   build instead of fetching one
#   SOFTMIG_KEEP=1  keep the temp directory (logs, data dir) for debugging
#   SOFTMIG_PGBIN   the PostgreSQL 15 bin directory to build against and test
#                   with (default /usr/lib/postgresql/15/bin), e.g. a
#                   relocated copy of the installation
#
# Internal: `run_all.sh --inner WORKDIR` is the second half, run as the
# unprivileged user inside the copied tree.

set -euo pipefail

PGBIN=${SOFTMIG_PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PGBIN/pg_config
SUITES=${SOFTMIG_SUITES:-regress pgtap tap monitoring demo assert}
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap
              libtap-parser-sourcehandler-pgtap-perl libipc-run-perl make gcc bzip2
              postgresql-15-partman
              prometheus prometheus-postgres-exporter postgresql-15-cron)

# `make test -jN` or `make -s test` must not leak into our own make calls.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES

say() { printf '==> %s\n' "$*"; }
die() { printf 'run_all.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Outer half: dependencies, build, install, temp copy, privilege drop.
# ---------------------------------------------------------------------------

check_suites() {
    local s
    for s in $SUITES; do
        case $s in
            regress|pg_regress|isolation|pgtap|tap|monitoring|demo|assert) ;;
            *) die "unknown suite '$s' in SOFTMIG_SUITES (known: regress pg_regress isolation pgtap tap monitoring demo assert)" ;;
        esac
    done
    [[ -n ${SUITES// /} ]] || die "SOFTMIG_SUITES is empty"
}

# pkg_installed and ensure_packages
. "$(dirname "${BASH_SOURCE[0]}")/pkg.sh"

check_tools() {
    local missing=()
    [[ -x $PG_CONFIG ]] || missing+=("$PG_CONFIG (postgresql-server-dev-15)")
    [[ -x $PGBIN/initdb ]] || missing+=("$PGBIN/initdb (postgresql-15)")
    command -v make >/dev/null || missing+=("make")
    case " $SUITES " in *" pgtap "*)
        command -v pg_prove >/dev/null ||
            missing+=("pg_prove (libtap-parser-sourcehandler-pgtap-perl)") ;;
    esac
    case " $SUITES " in *" tap "*)
        command -v prove >/dev/null || missing+=("prove (perl)")
        perl -MIPC::Run -e1 2>/dev/null || missing+=("IPC::Run (libipc-run-perl)") ;;
    esac
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]}"
}

WORK=
cleanup_outer() {
    local rc=$?
    [[ -n $WORK && -d $WORK ]] || return $rc
    # The inner half stops its cluster itself; this catches the cases where
    # it was killed before its trap could run.
    if [[ -f $WORK/data/postmaster.pid ]]; then
        if ((EUID == 0)); then
            runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
        else
            "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    fi
    if [[ ${SOFTMIG_KEEP:-0} == 1 ]]; then
        say "kept $WORK (SOFTMIG_KEEP=1)"
    else
        rm -rf "$WORK"
    fi
    return $rc
}

outer() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    check_suites
    ensure_packages
    check_tools

    say "building softmig"
    make -C "$root" PG_CONFIG="$PG_CONFIG"

    if ((EUID == 0)); then
        say "installing softmig"
        make -C "$root" PG_CONFIG="$PG_CONFIG" install
    elif ! make -C "$root" PG_CONFIG="$PG_CONFIG" install; then
        say "warning: 'make install' failed (no write access to $($PG_CONFIG --pkglibdir)?)"
        say "warning: testing whatever softmig build is already installed there"
    fi
    # pg_partman for test/t/100_partman.pl, also in a relocated installation
    copy_extension_files pg_partman "$PG_CONFIG" ||
        say "warning: could not copy pg_partman into $($PG_CONFIG --sharedir)"

    trap cleanup_outer EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d /tmp/softmig-test.XXXXXX)
    mkdir "$WORK/tree"
    tar -C "$root" --exclude=./.git --exclude=./results --exclude=./output_iso \
        --exclude=./tmp_check --exclude='./regression.*' -cf - . |
        tar -C "$WORK/tree" -xf -
    cd "$WORK"

    # the assert suite builds PostgreSQL from Debian's source package; fetching
    # it may need root (a deb-src entry), so it happens here
    case " $SUITES " in *" assert "*)
        if [[ -n ${PGSRC:-} ]]; then
            echo "$PGSRC" >"$WORK/pgsrc.path"
        elif ! bash "$root/test/assert_check.sh" --fetch-only "$WORK/pgsrc" >"$WORK/pgsrc.path"; then
            say "warning: could not fetch the PostgreSQL source; the assert suite will fail"
            : >"$WORK/pgsrc.path"
        fi ;;
    esac

    local rc=0
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user (is postgresql-15 installed?)"
        chown -R postgres: "$WORK"
        runuser -u postgres -- env SOFTMIG_SUITES="$SUITES" SOFTMIG_PGBIN="$PGBIN" SOFTMIG_REQUIRE_PARTMAN=1 \
            bash "$WORK/tree/test/run_all.sh" --inner "$WORK" || rc=$?
    else
        SOFTMIG_SUITES="$SUITES" SOFTMIG_PGBIN="$PGBIN" SOFTMIG_REQUIRE_PARTMAN=1 \
            bash "$WORK/tree/test/run_all.sh" --inner "$WORK" || rc=$?
    fi
    return $rc
}

# ---------------------------------------------------------------------------
# Inner half: cluster, suites, summary.  Runs unprivileged in $WORK/tree.
# ---------------------------------------------------------------------------

# Result bookkeeping, one entry per reported suite.
ORDER=()
declare -A NPASS NFAIL NOTE

record() {  # suite passed failed note
    ORDER+=("$1")
    NPASS[$1]=$2
    NFAIL[$1]=$3
    NOTE[$1]=$4
}

# pg_regress / pg_isolation_regress result lines.  PostgreSQL 15 prints
#   test state                        ... ok           12 ms
#   test writes                       ... FAILED       30 ms
# (and "     name ... ok" inside parallel groups, "failed (ignored)" for
# ignored tests); PostgreSQL 16+ prints TAP-like "ok 1  - state  12 ms" /
# "not ok 2  - writes  30 ms".  Both are understood.
REGRESS_OK_RE='^((test +| +)[^ ]+ +\.\.\. +(ok|failed \(ignored\))( |$)|ok [0-9]+ )'
REGRESS_FAIL_RE='^((test +| +)[^ ]+ +\.\.\. +FAILED( |$)|not ok [0-9]+ )'

count_lines() {  # regex file
    grep -cE "$1" "$2" || true
}

# The live demo (make demo): demo/demo.sh against the throwaway cluster, then
# demo/remote.sh (its second act, on two clusters it starts itself); each
# prints its story and exits non-zero if anything it asserts fails.
run_demo() {
    local rc script name
    for script in demo remote; do
        name=demo; [[ $script == demo ]] || name=demo_$script
        rc=0
        say "demo: demo/$script.sh"
        bash "$TREE/demo/$script.sh" || rc=$?
        if ((rc == 0)); then
            record "$name" 1 0 ""
        else
            record "$name" 0 1 "demo/$script.sh exited $rc"
        fi
    done
}

# The assert suite: test/assert_check.sh builds an assert-enabled server from
# the source the outer half fetched and runs pg_regress, isolation and TAP on
# it; counted as one test (its own output above shows the parts).
run_assert() {  # work-dir
    local src log=$LOGDIR/assert.log rc=0 parts
    src=$(cat "$1/pgsrc.path" 2>/dev/null || true)
    if [[ -z $src || ! -f $src/configure ]]; then
        record assert 0 1 "no PostgreSQL source (fetching it failed; set PGSRC to an unpacked tree)"
        return
    fi
    say "suite assert: test/assert_check.sh (PGSRC=$src)"
    PGSRC=$src bash "$TREE/test/assert_check.sh" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    parts=$(grep -E '^ All [0-9]+ tests passed|^Files=[0-9]+, Tests=[0-9]+' "$log" |
        sed -E 's/^ All ([0-9]+) tests passed.*/\1/; s/^Files=[0-9]+, Tests=([0-9]+).*/\1/' |
        paste -sd/ - || true)
    if ((rc == 0)); then
        record assert 1 0 "assert-enabled server: regress/isolation/TAP ${parts:-?} passed"
    else
        record assert 0 1 "assert_check.sh exited $rc (see above)"
    fi
}

run_regress_suite() {  # name diffs-file make-args...
    local name=$1 diffs=$2
    shift 2
    local log=$LOGDIR/$name.log rc=0
    say "suite $name: make installcheck $*"
    rm -f "$diffs"
    make -C "$TREE" PG_CONFIG="$PG_CONFIG" installcheck "$@" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}

    local pass fail note=
    pass=$(count_lines "$REGRESS_OK_RE" "$log")
    fail=$(count_lines "$REGRESS_FAIL_RE" "$log")
    if ((pass + fail == 0)); then
        note="ran zero tests (make exited $rc; see output above)"
        fail=1
    elif ((rc != 0 && fail == 0)); then
        note="make exited $rc although no test line failed"
        fail=1
    fi
    if ((fail > 0)) && [[ -s $diffs ]]; then
        say "suite $name: ${diffs#"$TREE"/}"
        cat "$diffs"
    fi
    record "$name" "$pass" "$fail" "$note"
}

# Summarise TAP::Harness output (prove and pg_prove print the same):
#   Files=2, Tests=31,  1 wallclock secs ...
#   Result: PASS | FAIL | NOTESTS
# and, in the "Test Summary Report", one line per troubled file:
#   test/t/001_harness.pl (Wstat: 256 (exited 1) Tests: 3 Failed: 1)
#     Failed test:  2
#     Parse errors: Bad plan.  You planned 4 tests but ran 3.
# Prints "tests failed_subtests broken_files result failed_files...".
parse_harness() {  # file
    awk '
        /^Files=[0-9]+, Tests=[0-9]+/ {
            t = $0; sub(/^Files=[0-9]+, Tests=/, "", t); sub(/,.*/, "", t); tests = t
        }
        /^Result: / { result = $2 }
        /\(Wstat: [0-9]+( \([^()]*\))? Tests: [0-9]+ Failed: [0-9]+\)$/ {
            if (cur != "") { if (!curf && (curw || curp)) broken++ }
            f = $0; sub(/.*Failed: /, "", f); sub(/\).*/, "", f)
            w = $0; sub(/.*\(Wstat: /, "", w); sub(/ .*/, "", w)
            cur = $1; curf = f + 0; curw = w + 0; curp = 0
            failed += curf
            if (curf || curw) files = files " " cur
            next
        }
        cur != "" && /^  Parse errors:/ { curp = 1; if (index(files, " " cur) == 0) files = files " " cur }
        END {
            if (cur != "") { if (!curf && (curw || curp)) broken++ }
            printf "%d %d %d %s%s\n", tests, failed, broken, (result == "" ? "NONE" : result), files
        }' "$1"
}

record_harness() {  # name rc log ; sets HARNESS_FAILED_FILES
    local name=$1 rc=$2 log=$3 tests failed broken result note=
    read -r tests failed broken result HARNESS_FAILED_FILES < <(parse_harness "$log")
    local pass=$((tests - failed)) fail=$((failed + broken))
    if ((tests == 0)); then
        note="ran zero tests (exit $rc, result $result; see output above)"
        fail=$((fail > 0 ? fail : 1))
    elif [[ $result != PASS ]] && ((fail == 0)); then
        note="harness result $result"
        fail=1
    elif ((rc != 0 && fail == 0)); then
        note="exited $rc although no test failed"
        fail=1
    fi
    record "$name" "$pass" "$fail" "$note"
}

run_pgtap() {
    local log=$LOGDIR/pgtap.log rc=0
    shopt -s nullglob
    local files=("$TREE"/test/pgtap/*.sql)
    shopt -u nullglob
    say "suite pgtap: pg_prove --ext .sql test/pgtap/"
    if ((${#files[@]} == 0)); then
        record pgtap 0 1 "ran zero tests: no test/pgtap/*.sql files"
        return
    fi
    createdb softmig_pgtap
    (cd "$TREE" && pg_prove -d softmig_pgtap --ext .sql test/pgtap/) 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    record_harness pgtap "$rc" "$log"
}

run_tap() {
    local log=$LOGDIR/tap.log rc=0 f base
    say "suite tap: make installcheck REGRESS= ISOLATION="
    make -C "$TREE" PG_CONFIG="$PG_CONFIG" installcheck REGRESS= ISOLATION= 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    record_harness tap "$rc" "$log"
    # The TAP framework keeps its logs in tmp_check/log; show the failing ones.
    for f in $HARNESS_FAILED_FILES; do
        base=$(basename "$f" .pl)
        for l in "$TREE"/tmp_check/log/regress_log_"$base" "$TREE"/tmp_check/log/"$base"_*.log; do
            [[ -f $l ]] || continue
            say "tail of ${l#"$TREE"/}"
            tail -n 80 "$l"
        done
    done
}

# The monitoring suite (test/monitoring/run.sh): TAP tests with their own
# clusters and services, reported like the tap suite.
run_monitoring() {
    local log=$LOGDIR/monitoring.log rc=0
    say "suite monitoring: test/monitoring/run.sh"
    PGBIN=$PGBIN bash "$TREE/test/monitoring/run.sh" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    record_harness monitoring "$rc" "$log"
}

stop_cluster() {
    if [[ -f $PGDATA/postmaster.pid ]]; then
        "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 ||
            "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

inner() {
    local work=$1
    TREE=$work/tree
    LOGDIR=$work/logs
    PGDATA=$work/data
    mkdir -p "$LOGDIR"
    cd "$TREE"
    export PATH="$PGBIN:$PATH" PGBIN

    trap stop_cluster EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local port=$((54000 + RANDOM % 1000))
    say "starting cluster in $PGDATA (socket $work, port $port)"
    if ! "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync \
            --no-locale -E UTF8 >"$LOGDIR/initdb.log" 2>&1; then
        cat "$LOGDIR/initdb.log" >&2
        die "initdb failed"
    fi
    cat >>"$PGDATA/postgresql.conf" <<EOF

# softmig test harness
shared_preload_libraries = 'softmig'
max_prepared_transactions = 10
fsync = off
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
EOF
    if ! "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOGDIR/postgres.log" -w -t 120 start >/dev/null; then
        cat "$LOGDIR/postgres.log" >&2 || true
        die "the test cluster did not start (server log above)"
    fi
    export PGHOST=$work PGPORT=$port PGUSER=postgres PGDATABASE=postgres

    local s
    for s in $SUITES; do
        case $s in
            regress)
                run_regress_suite regress "$TREE/regression.diffs" TAP_TESTS= ISOLATION=
                run_regress_suite isolation "$TREE/output_iso/regression.diffs" TAP_TESTS= REGRESS= ;;
            pg_regress)
                run_regress_suite regress "$TREE/regression.diffs" TAP_TESTS= ISOLATION= ;;
            isolation)
                run_regress_suite isolation "$TREE/output_iso/regression.diffs" TAP_TESTS= REGRESS= ;;
            pgtap) run_pgtap ;;
            tap)   run_tap ;;
            monitoring) run_monitoring ;;
            demo)  run_demo ;;
            assert) run_assert "$work" ;;
        esac
    done

    # The standard PGXS path (make installcheck against a server of one's
    # own) must pass without shared_preload_libraries too: run pg_regress
    # once more on the same cluster restarted without it.
    case " $SUITES " in *" regress "*|*" pg_regress "*)
        say "restarting the test cluster without shared_preload_libraries"
        sed -i "s/^shared_preload_libraries = 'softmig'$/shared_preload_libraries = ''/" "$PGDATA/postgresql.conf"
        if "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOGDIR/postgres.log" -w -t 120 restart >/dev/null; then
            run_regress_suite regress_nopreload "$TREE/regression.diffs" TAP_TESTS= ISOLATION=
        else
            record regress_nopreload 0 1 "the cluster did not restart without preload"
        fi ;;
    esac

    local total_pass=0 total_fail=0 name line verdict
    for name in "${ORDER[@]}"; do
        ((total_pass += NPASS[$name], total_fail += NFAIL[$name])) || true
    done
    if ((total_fail > 0)); then
        say "tail of the test cluster's server log"
        tail -n 40 "$LOGDIR/postgres.log" || true
    fi

    echo
    echo "==================== softmig test summary ===================="
    for name in "${ORDER[@]}"; do
        verdict=PASS
        if ((NFAIL[$name] > 0)); then verdict=FAIL; fi
        line=$(printf '%-17s %s  (%d passed, %d failed)' "$name" "$verdict" \
            "${NPASS[$name]}" "${NFAIL[$name]}")
        if [[ -n ${NOTE[$name]} ]]; then line+=" -- ${NOTE[$name]}"; fi
        echo "$line"
    done
    echo "$total_pass passed, $total_fail failed"
    ((total_fail == 0))
}

if [[ ${1:-} == --inner ]]; then
    [[ -n ${2:-} ]] || die "--inner needs the work directory"
    check_suites
    inner "$2"
else
    outer
fi
