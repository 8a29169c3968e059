#!/usr/bin/env bash
#
# test/run_all.sh -- build softmig and run every test suite on every supported
# PostgreSQL version.  `make test` calls this from the repo root.
#
# The matrix (PG_MATRIX below): PostgreSQL 15 on the host (Debian 12's own
# packages), 17 in a Debian trixie chroot, 18 in a sid chroot and 19 in an
# experimental chroot, each Debian's own build of that version.  A version
# whose package is a pre-release (19~rc1) is run without the TAP files
# and reported, but its failures do not fail the run.  In the chroots the
# TAP files' timed soaks run half as long as on the host.  The chroots are
# made with debootstrap and cached under /var/cache/softmig/chroots
# (test/chroot.sh); they are made while the host's suites run, and their
# versions then run one after the other in a second lane alongside the
# host's (their output is printed after the host's).
#
# For each version (`run_all.sh --one`, on the host or inside the chroot):
#   1. As root: installs the missing apt packages for that version (only if
#      something is missing).  As any other user: checks the tools are there
#      and says what is missing.
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
#        monitoring host only: test/monitoring/run.sh: promtool rule tests,
#                   the exporter, Prometheus and the dashboard live on
#                   loopback, pg_cron
#        demo       the live demo (demo/demo.sh, remote.sh, rolling.sh, split.sh)
#        assert     host only: the suites on an assert-enabled server built
#                   from Debian's source package (test/assert_check.sh;
#                   the server is compiled in the background while the
#                   other suites run)
#      A failing suite does not stop the others; a suite that ran zero tests
#      is a failure.  Last, with regress: the cluster is restarted without
#      shared_preload_libraries and pg_regress runs again (regress_nopreload),
#      the case of `make installcheck` against a server of one's own.
#   5. Prints one line per suite and "N passed, N failed" (individual tests:
#      each pg_regress/isolation test counts 1, pgTAP and TAP count
#      subtests).  The cluster is stopped and the temp directory removed on
#      every exit.
# Then the matrix prints every version's suites, one line per version, and,
# as the very last line, "N passed, N failed" over the versions that count.
# Exits non-zero if anything that counts failed.
#
# Knobs (environment):
#   SOFTMIG_PG_VERSIONS  the versions to run, default all of PG_MATRIX
#                   ("15 17 18 19"); e.g. "15 18" for quick work; "host"
#                   is the host's version
#   SOFTMIG_SUITES  space-separated subset of the suites in SUITE_TABLE:
#                   regress pgtap tap monitoring demo assert (also:
#                   pg_regress, isolation for one half of regress); default
#                   "regress pgtap tap monitoring demo assert".  Host-only
#                   suites are left out on the other versions.
#   SOFTMIG_PGBIN   the host's PostgreSQL bin directory to build against and
#                   test with (default /usr/lib/postgresql/15/bin), e.g. a
#                   relocated copy of the installation
#   PGSRC           for assert: an unpacked PostgreSQL 15 source tree to
#                   build instead of fetching one
#   SOFTMIG_KEEP=1  keep the temp directories (logs, data dirs) for debugging
#   SOFTMIG_TAP_JOBS  how many TAP files run at once (prove -j; default 2:
#                   most of their time is spent waiting on servers,
#                   replication and timed soaks, and the longest files go
#                   first, see TAP_SLOW in the Makefile); 1 runs them one
#                   after the other
#   SOFTMIG_MATRIX_PARALLEL=0  run the chroots' versions after the host's
#                   instead of alongside it (default 1)
#   SOFTMIG_FULL_SOAKS=1  the TAP files' soaks at full length in the
#                   chroots too
#   SOFTMIG_PRERELEASE_TAP=1  the TAP files on a pre-release version too
#   SOFTMIG_CHROOT_DIR      where the chroots are cached
#                           (default /var/cache/softmig/chroots)
#   SOFTMIG_CHROOT_UPGRADE=1  upgrade the cached chroots' packages first
#
# Internal: `run_all.sh --one` runs one version where it is called (the
# host, or inside its chroot); `run_all.sh --inner WORKDIR` is its second
# half, run as the unprivileged user inside the copied tree.

set -euo pipefail

# PostgreSQL versions: "version  where": host is this machine's packages
# (SOFTMIG_PGBIN), anything else a Debian suite whose chroot runs them.
PG_MATRIX=(
    "15 host"
    "17 trixie"
    "18 sid"
    "19 experimental"
)

# Suites: "name  versions": all, or host for the host's version only.
SUITE_TABLE=(
    "regress all"
    "pg_regress all"
    "isolation all"
    "pgtap all"
    "tap all"
    "monitoring host"
    "demo all"
    "assert host"
)
DEFAULT_SUITES="regress pgtap tap monitoring demo assert"

# The version this run tests (set by the matrix for --one).
PGV=${SOFTMIG_PG_VERSION:-15}
PGBIN=${SOFTMIG_PGBIN:-/usr/lib/postgresql/$PGV/bin}
PG_CONFIG=$PGBIN/pg_config
SUITES=${SOFTMIG_SUITES:-$DEFAULT_SUITES}
TAP_JOBS=${SOFTMIG_TAP_JOBS:-2}
[[ $TAP_JOBS =~ ^[1-9][0-9]*$ ]] || { echo "SOFTMIG_TAP_JOBS must be a positive integer, not '$TAP_JOBS'" >&2; exit 2; }

# Debian packages for PostgreSQL version $1, installed on the host or in the
# chroot: name version-specific packages with $1.  "package:donor" is an
# extension used through SQL only that the archive may not have yet for a
# pre-release version: there, the donor package (the same extension for the
# previous version) is installed and its extension files copied for $1.
apt_packages() {
    APT_PACKAGES=(postgresql-$1 postgresql-server-dev-$1 postgresql-$1-pgtap:postgresql-$(($1 - 1))-pgtap
                  libtap-parser-sourcehandler-pgtap-perl libipc-run-perl make gcc bzip2
                  postgresql-$1-partman:postgresql-$(($1 - 1))-partman)
}
apt_packages "$PGV"
# Debian packages of the host only: what the suites that run on the host
# only (SUITE_TABLE) need, and the matrix's own (MATRIX_APT_PACKAGES).
HOST_APT_PACKAGES=(prometheus prometheus-postgres-exporter postgresql-$PGV-cron)
MATRIX_APT_PACKAGES=(debootstrap)

# `make test -jN` or `make -s test` must not leak into our own make calls.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES

say() { printf '==> %s\n' "$*"; }
die() { printf 'run_all.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Outer half: dependencies, build, install, temp copy, privilege drop.
# ---------------------------------------------------------------------------

# table_value KEY ENTRY...: the value of the entry "KEY value", if any.
table_value() {
    local key=$1 e
    shift
    for e in "$@"; do
        [[ ${e%% *} == "$key" ]] && { echo "${e##* }"; return 0; }
    done
    return 0
}

# suite_scope NAME: "all" or "host" (SUITE_TABLE), empty for an unknown suite.
suite_scope() { table_value "$1" "${SUITE_TABLE[@]}"; }

check_suites() {
    local s
    for s in $SUITES; do
        [[ -n $(suite_scope "$s") ]] ||
            die "unknown suite '$s' in SOFTMIG_SUITES (known: $(printf '%s\n' "${SUITE_TABLE[@]}" | cut -d' ' -f1 | paste -sd' ' -))"
    done
    [[ -n ${SUITES// /} ]] || die "SOFTMIG_SUITES is empty"
}

# pkg_installed and ensure_packages
. "$(dirname "${BASH_SOURCE[0]}")/pkg.sh"

check_tools() {
    local missing=()
    [[ -x $PG_CONFIG ]] || missing+=("$PG_CONFIG (postgresql-server-dev-$PGV)")
    [[ -x $PGBIN/initdb ]] || missing+=("$PGBIN/initdb (postgresql-$PGV)")
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
    # in a chroot the matrix installed the packages (test/chroot.sh)
    if [[ -z ${SOFTMIG_CHROOT:-} ]]; then
        APT_PACKAGES+=("${HOST_APT_PACKAGES[@]}")
        ensure_packages
    fi
    check_tools
    say "server: $("$PG_CONFIG" --version), $PGBIN${SOFTMIG_CHROOT:+ (Debian $SOFTMIG_CHROOT chroot)}"

    say "building softmig"
    make -C "$root" -j"$(nproc)" PG_CONFIG="$PG_CONFIG"

    if ((EUID == 0)); then
        say "installing softmig"
        make -C "$root" PG_CONFIG="$PG_CONFIG" install
    elif ! make -C "$root" PG_CONFIG="$PG_CONFIG" install; then
        say "warning: 'make install' failed (no write access to $($PG_CONFIG --pkglibdir)?)"
        say "warning: testing whatever softmig build is already installed there"
    fi
    # pg_partman for test/t/100_partman.pl, also in a relocated installation
    # pg_cron for the monitoring suite, in a relocated copy of Debian's build
    copy_extension_library pg_cron "$PG_CONFIG" ||
        say "warning: could not copy pg_cron into $($PG_CONFIG --pkglibdir)"
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
        id postgres >/dev/null 2>&1 || die "no 'postgres' user (is postgresql-$PGV installed?)"
        chown -R postgres: "$WORK"
        runuser -u postgres -- env SOFTMIG_SUITES="$SUITES" SOFTMIG_PGBIN="$PGBIN" \
            SOFTMIG_PG_VERSION="$PGV" SOFTMIG_REQUIRE_PARTMAN=1 SOFTMIG_TAP_JOBS="$TAP_JOBS" \
            bash "$WORK/tree/test/run_all.sh" --inner "$WORK" || rc=$?
    else
        SOFTMIG_SUITES="$SUITES" SOFTMIG_PGBIN="$PGBIN" SOFTMIG_PG_VERSION="$PGV" SOFTMIG_REQUIRE_PARTMAN=1 \
            SOFTMIG_TAP_JOBS="$TAP_JOBS" bash "$WORK/tree/test/run_all.sh" --inner "$WORK" || rc=$?
    fi
    return $rc
}

# ---------------------------------------------------------------------------
# The matrix: every version of PG_MATRIX, the host's here, the others in
# their chroots, and the summary over all.
# ---------------------------------------------------------------------------

MWORK=
BG_PIDS=()
# per version: where it runs, its exit status, its Debian package's version
# (host for the host's), its seconds
declare -A M_WHERE M_RC M_PKG M_SECS

# kill_tree PID: PID and its descendants (a background chroot preparation:
# debootstrap, apt).
kill_tree() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        kill_tree "$c"
    done
    kill "$1" 2>/dev/null || true
}

cleanup_matrix() {
    local rc=$? p
    for p in "${BG_PIDS[@]}"; do
        kill_tree "$p"
    done
    wait 2>/dev/null || true
    if [[ -n $MWORK && -d $MWORK ]]; then
        if [[ ${SOFTMIG_KEEP:-0} == 1 ]]; then
            say "kept $MWORK (SOFTMIG_KEEP=1)"
        else
            rm -rf "$MWORK"
        fi
    fi
    return $rc
}

# matrix_where VERSION: "host", a Debian suite, or empty (not in PG_MATRIX).
matrix_where() { table_value "$1" "${PG_MATRIX[@]}"; }

# suites_for WHERE: the requested suites that run there.
suites_for() {
    local s out=
    for s in $SUITES; do
        [[ $1 == host || $(suite_scope "$s") == all ]] && out+="$s "
    done
    echo "${out% }"
}

# prepare_chroot VERSION SUITE: SUITE's chroot with VERSION's packages
# (apt_packages; a "package:donor" the archive lacks is taken from the
# donor).  Writes the PostgreSQL package's version to $MWORK/pgVERSION.pkg.
prepare_chroot() {
    local v=$1 suite=$2 plain=() donated=() p
    apt_packages "$v"
    for p in "${APT_PACKAGES[@]}"; do
        if [[ $p == *:* ]]; then donated+=("$p"); else plain+=("$p"); fi
    done
    chroot_prepare "$suite" "${plain[@]}"
    for p in "${donated[@]}"; do
        if chroot_has_candidate "$suite" "${p%%:*}"; then
            chroot_prepare "$suite" "${p%%:*}"
        else
            chroot_prepare "$suite" "${p##*:}"
            chroot_copy_extension "$suite" "${p##*:}" "$v"
        fi
    done
    chroot_exec "$(chroot_dir "$suite")" dpkg-query -W -f='${Version}' "postgresql-$v" >"$MWORK/pg$v.pkg"
}

# copy_clean_tree DEST: the repository's tree without .git, test output and
# build products (a chroot builds it for its own PostgreSQL).
copy_clean_tree() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    mkdir -p "$1"
    tar -C "$root" --exclude=./.git --exclude=./results --exclude=./output_iso \
        --exclude=./tmp_check --exclude='./regression.*' --exclude='*.o' --exclude='*.so' \
        --exclude='*.bc' --exclude='./softmig--*.*.*.sql' --exclude=./dist \
        --exclude=./bench/out -cf - . |
        tar -C "$1" -xf -
}

# run_in_chroot VERSION SUITE SUITES: `run_all.sh --one` for VERSION
# inside SUITE's chroot, on the clean copy of the tree the matrix made in
# $MWORK/pgVERSION/src.  The timed soaks and the parity-cache fuzz run half
# as long as on the host (CHROOT_SOAK below).
run_in_chroot() {
    local v=$1 suite=$2 suites=$3 share
    share=$MWORK/pg$v
    chroot_run "$suite" "$share/overlay" "$share/src" \
        SOFTMIG_CHROOT="$suite" SOFTMIG_PG_VERSION="$v" \
        SOFTMIG_PGBIN="/usr/lib/postgresql/$v/bin" SOFTMIG_SUITES="$suites" \
        SOFTMIG_KEEP="${SOFTMIG_KEEP:-0}" SOFTMIG_TAP_JOBS="$TAP_JOBS" \
        "${CHROOT_SOAK[@]}" bash "$share/src/test/run_all.sh" --one 2>&1
}

# The TAP files' timed soaks and the parity-cache fuzz, half as long in the
# chroots as on the host: they look for races in softmig's own code, which
# the host's full-length run covers; what differs between versions the
# regression, isolation and shorter TAP runs show.  SOFTMIG_FULL_SOAKS=1
# runs them at full length everywhere.
if [[ ${SOFTMIG_FULL_SOAKS:-0} == 1 ]]; then
    CHROOT_SOAK=()
else
    CHROOT_SOAK=(SOAK_TAP_SECONDS=30 GROUP_SOAK_PHASE_SECONDS=3 SOFTMIG_SOAK_SECONDS=10
                 PARITY_FUZZ_ITERATIONS=30)
fi

# prerelease_suites SUITES: what a pre-release version runs: SUITES without
# tap, unless SOFTMIG_PRERELEASE_TAP=1 (its results are reported, not
# counted; the TAP files are the longest part of a version's run).
prerelease_suites() {
    if [[ ${SOFTMIG_PRERELEASE_TAP:-0} == 1 ]]; then
        echo "$1"
    else
        echo " $1 " | sed 's/ tap / /; s/^ *//; s/ *$//'
    fi
}

# chroot_version VERSION: run VERSION in its chroot once the chroot is
# prepared (the matrix started that), everything on stdout; writes
# "EXIT-STATUS SECONDS" to $MWORK/pgVERSION.done.
chroot_version() {
    local v=$1 t0=$SECONDS rc=0 where=${M_WHERE[$1]}
    if ((EUID != 0)); then
        echo "needs root (debootstrap and chroot): run as root, or SOFTMIG_PG_VERSIONS=host"
        rc=1
    else
        say "PostgreSQL $v: waiting for the $where chroot"
        while [[ ! -f $MWORK/prepare$v.rc ]]; do sleep 2; done
        if [[ $(cat "$MWORK/prepare$v.rc") != 0 ]]; then
            cat "$MWORK/prepare$v.log"
            echo "the $where chroot could not be prepared (log above)"
            rc=1
        else
            local pkg suites
            pkg=$(cat "$MWORK/pg$v.pkg")
            suites=$(suites_for "$where")
            if [[ $pkg == *~* ]]; then
                suites=$(prerelease_suites "$suites")
                say "PostgreSQL $v in the $where chroot (Debian package $pkg, a pre-release: suites ${suites:-none})"
            else
                say "PostgreSQL $v in the $where chroot (Debian package $pkg)"
            fi
            if [[ -n $suites ]]; then
                run_in_chroot "$v" "$where" "$suites" || rc=$?
            else
                echo "0 passed, 0 failed"
            fi
        fi
    fi
    echo "$rc $((SECONDS - t0))" >"$MWORK/pg$v.done"
    return "$rc"
}

# await_version VERSION LANE-PID: wait until the background lane has run
# VERSION (or died without saying so), then print its output.
await_version() {
    local v=$1 lane=$2
    say "PostgreSQL $v: its run in the ${M_WHERE[$v]} chroot (alongside the host's) follows"
    while [[ ! -f $MWORK/pg$v.done ]]; do
        if ! kill -0 "$lane" 2>/dev/null && [[ ! -f $MWORK/pg$v.done ]]; then
            echo "the background run of the chroots ended before PostgreSQL $v finished" >>"$MWORK/pg$v.log"
            echo "1 0" >"$MWORK/pg$v.done"
            break
        fi
        sleep 5
    done
    cat "$MWORK/pg$v.log"
}

matrix() {
    local versions=${SOFTMIG_PG_VERSIONS:-} v where host_v=$PGV chroots=() e
    check_suites
    # the host's version is the one SOFTMIG_PGBIN has, when it has one
    if [[ -x $PG_CONFIG ]]; then
        host_v=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    fi
    if [[ -z $versions ]]; then
        for e in "${PG_MATRIX[@]}"; do versions+="${e%% *} "; done
    fi
    versions=${versions//host/$host_v}
    for v in $versions; do
        if [[ $v != "$host_v" && -z $(suites_for "$(matrix_where "$v")") ]]; then
            say "PostgreSQL $v: none of the suites ($SUITES) runs there; left out"
            versions=$(echo " $versions " | sed "s/ $v / /; s/^ *//; s/ *$//")
        fi
    done
    [[ -n $versions ]] || die "no PostgreSQL version to run"
    for v in $versions; do
        if [[ $v == "$host_v" ]]; then
            M_WHERE[$v]=host
        else
            where=$(matrix_where "$v")
            [[ -n $where && $where != host ]] ||
                die "PostgreSQL $v is not in the matrix (SOFTMIG_PG_VERSIONS; known: $(printf '%s\n' "${PG_MATRIX[@]}" | cut -d' ' -f1 | paste -sd' ' -))"
            M_WHERE[$v]=$where
            chroots+=("$v")
        fi
    done

    trap cleanup_matrix EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    MWORK=$(mktemp -d /tmp/softmig-matrix.XXXXXX)

    # the chroots are made (or checked) while the host's suites run, each
    # with its own clean copy of the tree, taken before the host's build
    # writes into it
    if ((${#chroots[@]} > 0)); then
        if ((EUID != 0)); then
            say "not root: the chroots for PostgreSQL ${chroots[*]} cannot be used"
        else
            local saved=("${APT_PACKAGES[@]}")
            APT_PACKAGES=("${MATRIX_APT_PACKAGES[@]}")
            ensure_packages
            APT_PACKAGES=("${saved[@]}")
            for v in "${chroots[@]}"; do
                copy_clean_tree "$MWORK/pg$v/src"
                {
                    prc=0
                    (prepare_chroot "$v" "${M_WHERE[$v]}") >"$MWORK/prepare$v.log" 2>&1 || prc=$?
                    echo "$prc" >"$MWORK/prepare$v.rc"
                } &
                BG_PIDS+=($!)
            done
        fi
    fi

    # With the host's version in the run, the chroots' versions run one
    # after the other in a second lane, alongside the host's: much of a
    # run's time is spent waiting (one pg_regress client, servers starting,
    # replication catching up), so two lanes share the machine well.  Each
    # chroot's output is printed after the host's, in order.
    local lane=
    if [[ " $versions " == *" $host_v "* && ${#chroots[@]} -gt 0 && ${SOFTMIG_MATRIX_PARALLEL:-1} == 1 ]]; then
        say "PostgreSQL ${chroots[*]}: run in their chroots alongside the host's run; their output follows it"
        (
            for v in "${chroots[@]}"; do
                chroot_version "$v" >"$MWORK/pg$v.log" 2>&1 || true
            done
        ) &
        lane=$!
        BG_PIDS+=("$lane")
    fi

    for v in $versions; do
        local t0=$SECONDS log=$MWORK/pg$v.log done
        M_RC[$v]=0
        if [[ ${M_WHERE[$v]} == host ]]; then
            say "PostgreSQL $v on the host ($PGBIN)"
            SOFTMIG_PG_VERSION=$v bash "${BASH_SOURCE[0]}" --one 2>&1 | tee "$log" || M_RC[$v]=${PIPESTATUS[0]}
            M_PKG[$v]=host
            M_SECS[$v]=$((SECONDS - t0))
            continue
        fi
        if [[ -n $lane ]]; then
            await_version "$v" "$lane"
        else
            chroot_version "$v" 2>&1 | tee "$log" || true
        fi
        done=$(cat "$MWORK/pg$v.done")
        M_RC[$v]=${done%% *}
        M_SECS[$v]=${done##* }
        M_PKG[$v]=$(cat "$MWORK/pg$v.pkg" 2>/dev/null || echo unknown)
    done

    matrix_summary "$versions"
}

# failure_detail LOG: the beginning of what a failed suite printed about
# its failure, for the "what failed" block (a CI log may be read from its
# end only): the first lines of each regression.diffs the log shows, and
# the first diagnostics of each failed TAP test.  At most 80 lines.
failure_detail() {  # log
    awk '
        /^==> suite [a-z_]+: .*regression\.diffs$/ { diff = 1; n = 0; print; next }
        diff && /^==> / { diff = 0 }
        diff { if (n++ < 40) print; next }
        /^#   Failed test / { tap = 1; n = 0; print; next }
        tap && /^#/ { if (n++ < 25) print; next }
        { tap = 0 }
    ' "$1" | head -n 80
}

# matrix_summary VERSIONS: one line per version with its suites' lines, and
# the total over the versions that count (not the pre-release ones).
matrix_summary() {
    local versions=$1 v line verdict pass fail tpass=0 tfail=0 note failures= suites counted
    echo
    echo "==================== softmig test matrix ===================="
    for v in $versions; do
        local log=$MWORK/pg$v.log server
        pass=0 fail=0 note=
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
        if [[ -n $line ]]; then
            pass=${line%% passed*}
            fail=${line#*passed, }
            fail=${fail%% failed}
        fi
        if [[ -z $line ]]; then
            fail=$((fail > 0 ? fail : 1))
            note=$(tail -n 1 "$log" 2>/dev/null || true)
            note=" -- no summary: ${note:-the run did not start}"
        elif ((M_RC[$v] != 0 && fail == 0)); then
            fail=1
            note=" -- exited ${M_RC[$v]} although no test failed"
        fi
        verdict=PASS
        ((fail == 0)) || verdict=FAIL
        server=$(sed -n 's/^==> server: \(PostgreSQL [^ ]*\).*/\1/p' "$log" | head -n 1)
        printf '%-34s %s  (%d passed, %d failed, %dm%02ds)%s\n' \
            "${server:-PostgreSQL $v} (${M_WHERE[$v]})" "$verdict" "$pass" "$fail" \
            $((M_SECS[$v] / 60)) $((M_SECS[$v] % 60)) "$note"
        # the version's own suite lines
        suites=$(sed -n '/^==================== softmig test summary/,/^[0-9]* passed, [0-9]* failed$/p' "$log" |
            sed '1d;$d')
        [[ -z $suites ]] || printf '%s\n' "$suites" | sed 's/^/    /'
        if [[ ${M_PKG[$v]:-} == *~* ]]; then
            echo "    (Debian ${M_PKG[$v]} is a pre-release: reported, not counted)"
            counted=" (a pre-release: not counted)"
        else
            ((tpass += pass, tfail += fail)) || true
            counted=
        fi
        # what failed, gathered again just above the total: a CI log is
        # often read from its end only
        if [[ $verdict == FAIL ]]; then
            failures+="  PostgreSQL $v${counted}:${note}"$'\n'
            failures+=$(printf '%s\n' "$suites" | grep -E '^[a-z_]+ +FAIL' | sed 's/^/    /' || true)
            failures+=$'\n'
            failures+=$(failure_detail "$log" | sed 's/^/      | /')
            failures+=$'\n'
        fi
    done
    if [[ -n $failures ]]; then
        echo "what failed:"
        printf '%s' "$failures" | sed '/^$/d'
    fi
    echo "$tpass passed, $tfail failed"
    ((tfail == 0))
}

# ---------------------------------------------------------------------------
# Inner half: cluster, suites, summary.  Runs unprivileged in $WORK/tree.
# ---------------------------------------------------------------------------

# Result bookkeeping, one entry per reported suite.
ORDER=()
declare -A NPASS NFAIL NOTE

# Each suite's time is the time since the previous suite was recorded (or
# since the suites began).
SUITE_T0=$SECONDS
declare -A SECS

record() {  # suite passed failed note
    ORDER+=("$1")
    NPASS[$1]=$2
    NFAIL[$1]=$3
    NOTE[$1]=$4
    SECS[$1]=$((SECONDS - SUITE_T0))
    SUITE_T0=$SECONDS
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

# failed_names LOG: what failed, in a few words for the summary line (the
# CI log may show only its end): the names of failed pg_regress/isolation
# tests, TAP files with their failed test descriptions, comma-separated and
# cut at about 300 characters.
failed_names() {  # log
    local names
    names=$( {
        # pg_regress: "test NAME ... FAILED", "     NAME ... FAILED",
        # "not ok 2     - NAME   30 ms" (16+; "+ NAME" inside groups)
        grep -E "$REGRESS_FAIL_RE" "$1" |
            sed -E 's/^not ok [0-9]+ +[-+] +([^ ]+).*/\1/; s/^(test +| +)([^ ]+) +\.\.\..*/\2/'
        # TAP::Harness: "t/x.pl (Wstat: ...)" and "#   Failed test 'what'"
        grep -E '\(Wstat: [0-9]+' "$1" | sed -E 's/ \(Wstat:.*//'
        grep -E "^#   Failed test '" "$1" | sed -E "s/^#   Failed test '(.*)'$/'\1'/; s/^#   Failed test '(.*)/'\1/"
    } | awk '!seen[$0]++' | paste -sd, - | sed 's/,/, /g')
    if ((${#names} > 300)); then
        names="${names:0:297}..."
    fi
    printf '%s' "$names"
}

# The live demo (make demo): demo/demo.sh against the throwaway cluster, then
# demo/remote.sh (its second act, on two clusters it starts itself), then
# demo/rolling.sh (its third act, a rolling deploy through shape views, on the
# throwaway cluster), then demo/split.sh (its fourth act, one entity split
# across two target tables, on the throwaway cluster); each prints its story
# and exits non-zero if anything it asserts fails.
run_demo() {
    local rc script name
    for script in demo remote rolling split; do
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
# The server is built in the background from the start of the suites
# (start_assert_build), so its compilation overlaps the suites' waiting.
ASSERT_BUILD_PID=
start_assert_build() {  # work-dir
    local src trim=0
    src=$(cat "$1/pgsrc.path" 2>/dev/null || true)
    [[ -n $src && -f $src/configure ]] || return 0
    say "building the assert-enabled server in the background ($1/assertpg)"
    # a source this run fetched (not one given in PGSRC) may be trimmed
    [[ $src == "$1"/pgsrc/* ]] && trim=1
    ASSERT_TRIM=$trim PGSRC=$src bash "$TREE/test/assert_check.sh" --build-only "$1/assertpg" \
        >"$LOGDIR/assert_build.log" 2>&1 &
    ASSERT_BUILD_PID=$!
}

run_assert() {  # work-dir
    local src log=$LOGDIR/assert.log rc=0 parts
    src=$(cat "$1/pgsrc.path" 2>/dev/null || true)
    if [[ -z $src || ! -f $src/configure ]]; then
        record assert 0 1 "no PostgreSQL source (fetching it failed; set PGSRC to an unpacked tree)"
        return
    fi
    if [[ -z $ASSERT_BUILD_PID ]]; then
        start_assert_build "$1"
    fi
    say "suite assert: waiting for the assert-enabled server's build"
    if ! wait "$ASSERT_BUILD_PID"; then
        cat "$LOGDIR/assert_build.log"
        record assert 0 1 "building the assert-enabled server failed (log above)"
        return
    fi
    say "suite assert: test/assert_check.sh (PGSRC=$src, server built in $1/assertpg)"
    ASSERT_PREFIX=$1/assertpg PGSRC=$src PROVE_FLAGS="-j$TAP_JOBS" bash "$TREE/test/assert_check.sh" 2>&1 |
        tee "$log" || rc=${PIPESTATUS[0]}
    parts=$(grep -E '^ All [0-9]+ tests passed|^Files=[0-9]+, Tests=[0-9]+' "$log" |
        sed -E 's/^ All ([0-9]+) tests passed.*/\1/; s/^Files=[0-9]+, Tests=([0-9]+).*/\1/' |
        paste -sd/ - || true)
    if ((rc == 0)); then
        record assert 1 0 "assert-enabled server: regress/isolation/TAP ${parts:-?} passed"
    else
        local what
        what=$(failed_names "$log")
        record assert 0 1 "assert_check.sh exited $rc${what:+; failed: $what}"
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
    else
        note=$(failed_names "$log")
        [[ -z $note ]] || note="failed: $note"
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
    elif ((fail > 0)); then
        note="failed: $(failed_names "$log")"
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
    make -C "$TREE" PG_CONFIG="$PG_CONFIG" installcheck REGRESS= ISOLATION= \
        PROVE_FLAGS="-j$TAP_JOBS" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
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

    case " $SUITES " in *" assert "*) start_assert_build "$work" ;; esac

    local s
    SUITE_T0=$SECONDS
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
        line=$(printf '%-17s %s  (%d passed, %d failed, %dm%02ds)' "$name" "$verdict" \
            "${NPASS[$name]}" "${NFAIL[$name]}" $((SECS[$name] / 60)) $((SECS[$name] % 60)))
        if [[ -n ${NOTE[$name]} ]]; then line+=" -- ${NOTE[$name]}"; fi
        echo "$line"
    done
    echo "$total_pass passed, $total_fail failed"
    ((total_fail == 0))
}

# Debian chroots for the versions the host lacks
. "$(dirname "${BASH_SOURCE[0]}")/chroot.sh"

# Sourced (bench/on_version.sh uses the matrix's functions): define only.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

if [[ ${1:-} == --inner ]]; then
    [[ -n ${2:-} ]] || die "--inner needs the work directory"
    check_suites
    inner "$2"
elif [[ ${1:-} == --one ]]; then
    outer
else
    matrix
fi
