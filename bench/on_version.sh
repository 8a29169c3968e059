#!/usr/bin/env bash
#
# bench/on_version.sh -- run benches on each PostgreSQL version of the test
# matrix, one after the other, so that their ratios can be put side by side.
#
#   bash bench/on_version.sh "15 18" mirror_bench.sh backfill_bench.sh
#
# For each version in turn, each bench in turn:
#   - the host's version (15): the bench runs here, on the softmig installed
#     in BENCH_PGBIN (default /usr/lib/postgresql/15/bin; make install first);
#   - any other version of test/run_all.sh's PG_MATRIX: in that version's
#     Debian chroot (test/chroot.sh: cached under /var/cache/softmig/chroots,
#     made with debootstrap where missing; root only), through an overlay:
#     softmig is built from a clean copy of the tree and installed there, and
#     the bench runs with BENCH_PGBIN=/usr/lib/postgresql/<version>/bin.
# Every BENCH_* knob is passed on.  Each bench's table lands in bench/out as
# usual; the chroot's are copied there, with a line naming the repo HEAD (the
# copy inside has no .git).
#
# Exit status: 0 when every bench ran.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# the matrix (PG_MATRIX, matrix_where, prepare_chroot, copy_clean_tree) and
# test/chroot.sh
# shellcheck source=../test/run_all.sh
. "$HERE/../test/run_all.sh"

[[ $# -ge 2 ]] || die "usage: bench/on_version.sh \"VERSION...\" BENCH..."
VERSIONS=$1
shift
for b in "$@"; do
    [[ -f $HERE/$b ]] || die "no bench $HERE/$b"
done
HEAD_REV=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
HOST_V=15
if [[ -x ${BENCH_PGBIN:-/usr/lib/postgresql/15/bin}/pg_config ]]; then
    HOST_V=$("${BENCH_PGBIN:-/usr/lib/postgresql/15/bin}/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
fi

MWORK=$(mktemp -d /tmp/softmig-bench.XXXXXX)
trap cleanup_matrix EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

knobs=()
while IFS= read -r k; do
    knobs+=("$k=${!k}")
done < <(compgen -e | grep '^BENCH_' | grep -v '^BENCH_PGBIN$' || true)

rc=0
for v in $VERSIONS; do
    if [[ $v == "$HOST_V" ]]; then
        for b in "$@"; do
            say "PostgreSQL $v (host): $b"
            bash "$HERE/$b" || rc=1
        done
        continue
    fi
    where=$(matrix_where "$v")
    [[ -n $where && $where != host ]] || die "PostgreSQL $v is not in test/run_all.sh's PG_MATRIX"
    ((EUID == 0)) || die "PostgreSQL $v runs in a chroot: run as root"
    say "PostgreSQL $v: preparing the $where chroot"
    prepare_chroot "$v" "$where" >"$MWORK/prepare$v.log" 2>&1 ||
        { cat "$MWORK/prepare$v.log" >&2; die "the $where chroot could not be prepared"; }
    src=$MWORK/pg$v/src
    copy_clean_tree "$src"
    mkdir -p "$src/bench/out"
    script="set -e; cd '$src'
        make -s PG_CONFIG=/usr/lib/postgresql/$v/bin/pg_config >/dev/null
        make -s PG_CONFIG=/usr/lib/postgresql/$v/bin/pg_config install >/dev/null
        rc=0"
    for b in "$@"; do
        script+="
        echo '==> PostgreSQL $v ($where chroot): $b' >&2
        bash bench/$b || rc=1"
    done
    script+="
        exit \$rc"
    chroot_run "$where" "$MWORK/pg$v/overlay" "$src" "${knobs[@]}" \
        BENCH_PGBIN="/usr/lib/postgresql/$v/bin" bash -c "$script" || rc=1
    mkdir -p "$HERE/out"
    for f in "$src"/bench/out/*; do
        [[ -f $f ]] || continue
        { cat "$f"; echo "- run by bench/on_version.sh in the Debian $where chroot, repo HEAD $HEAD_REV"; } \
            >"$HERE/out/$(basename "$f" .md)_pg$v.md"
        say "table: bench/out/$(basename "$f" .md)_pg$v.md"
    done
done
exit $rc
