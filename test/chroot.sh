# test/chroot.sh -- Debian chroots for the PostgreSQL versions the host lacks
#
# Sourced by test/run_all.sh (which defines say and die).  A chroot is a
# minimal Debian system made with debootstrap from Debian's own archive, one
# per suite (trixie, sid; experimental is sid with experimental's sources
# added).  It is cached under $SOFTMIG_CHROOT_DIR (default
# /var/cache/softmig/chroots) and reused by later runs on the same machine;
# on a machine without it, it is made afresh.  Root only.
#
# The cached chroot is only changed by chroot_prepare (creation, apt).  A test
# run sees it through an overlay (chroot_run), so what the run installs or
# writes never reaches the cache, and runs on the same machine do not disturb
# each other.  Mounts and processes live in private mount and PID namespaces:
# when the command ends, nothing stays mounted or running.

SOFTMIG_CHROOT_DIR=${SOFTMIG_CHROOT_DIR:-/var/cache/softmig/chroots}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# chroot_dir SUITE: where SUITE's chroot is cached.
chroot_dir() {
    echo "$SOFTMIG_CHROOT_DIR/$1"
}

# chroot_exec ROOT CMD...: run CMD as root inside the directory tree ROOT, as
# it is (no overlay), with /proc, /dev and a private /dev/shm.
chroot_exec() {
    local root=$1
    shift
    unshare --mount --pid --fork --kill-child --propagation private -- \
        bash -c '
            set -e
            root=$1; shift
            mount -t proc proc "$root/proc"
            mount --bind /dev "$root/dev"
            mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
            cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
            exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
        ' chroot_exec "$root" "$@"
}

# chroot_create SUITE: debootstrap SUITE's chroot (into a temporary
# directory, renamed when complete, so an interrupted creation is never
# mistaken for a chroot) and configure apt and postgresql-common for tests.
chroot_create() {
    local suite=$1 dir base tmp
    dir=$(chroot_dir "$suite")
    base=$suite
    [[ $suite == experimental ]] && base=sid
    tmp=$dir.new.$$
    rm -rf "$dir".new.*
    mkdir -p "$SOFTMIG_CHROOT_DIR"
    say "debootstrap $base into $tmp"
    debootstrap --variant=minbase "$base" "$tmp" "$DEBIAN_MIRROR" ||
        die "debootstrap $base failed (log: $tmp/debootstrap/debootstrap.log)"
    # sid's and experimental's Release files are often past Valid-Until
    echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/90softmig"
    echo 'APT::Install-Recommends "false";' >>"$tmp/etc/apt/apt.conf.d/90softmig"
    if [[ $suite == experimental ]]; then
        echo "deb $DEBIAN_MIRROR experimental main" >"$tmp/etc/apt/sources.list.d/experimental.list"
        # PostgreSQL's packages (server, client, libpq) from experimental,
        # everything else from sid
        printf '%s\n' 'Package: /^(postgresql|libpq|libecpg|libpgtypes)/' \
            'Pin: release a=experimental' 'Pin-Priority: 500' \
            >"$tmp/etc/apt/preferences.d/90softmig-postgresql"
    fi
    # no services start inside; no cluster is made by the packages
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"
    chroot_exec "$tmp" apt-get update -q >/dev/null || die "apt-get update in the $suite chroot failed"
    chroot_exec "$tmp" apt-get install -y -q postgresql-common >/dev/null ||
        die "installing postgresql-common in the $suite chroot failed"
    sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' \
        "$tmp/etc/postgresql-common/createcluster.conf"
    mv "$tmp" "$dir"
}

# chroot_prepare SUITE PACKAGE...: make sure SUITE's chroot exists and has
# the packages (apt-get update and install only when one is missing), under
# an exclusive lock on the chroot.  With SOFTMIG_CHROOT_UPGRADE=1, also
# upgrade what is installed.
chroot_prepare() {
    local suite=$1 dir missing
    shift
    dir=$(chroot_dir "$suite")
    mkdir -p "$SOFTMIG_CHROOT_DIR"
    exec {lockfd}>"$SOFTMIG_CHROOT_DIR/.$suite.lock"
    flock "$lockfd"
    [[ -x $dir/usr/bin/apt-get ]] || chroot_create "$suite"
    missing=$(chroot_exec "$dir" sh -c 'for p; do
            dpkg-query -W -f="\${Status}" "$p" 2>/dev/null | grep -q " ok installed$" || echo "$p"
        done' sh "$@" | tr '\n' ' ')
    missing=${missing% }
    if [[ -n $missing || ${SOFTMIG_CHROOT_UPGRADE:-0} == 1 ]]; then
        say "$suite chroot: installing ${missing:-nothing new}"
        chroot_exec "$dir" apt-get update -q >/dev/null ||
            { flock -u "$lockfd"; die "apt-get update in the $suite chroot failed"; }
        if [[ ${SOFTMIG_CHROOT_UPGRADE:-0} == 1 ]]; then
            chroot_exec "$dir" apt-get -y -q dist-upgrade >/dev/null ||
                { flock -u "$lockfd"; die "apt-get dist-upgrade in the $suite chroot failed"; }
        fi
        # shellcheck disable=SC2086
        [[ -z $missing ]] || chroot_exec "$dir" apt-get install -y -q $missing ||
            { flock -u "$lockfd"; die "apt-get install in the $suite chroot failed"; }
        chroot_exec "$dir" apt-get clean
    fi
    flock -u "$lockfd"
    exec {lockfd}>&-
}

# chroot_has_candidate SUITE PACKAGE: does SUITE's archive have PACKAGE?
chroot_has_candidate() {
    local policy
    policy=$(chroot_exec "$(chroot_dir "$1")" apt-cache policy "$2" 2>/dev/null || true)
    [[ $policy =~ Candidate:\ [^\(] ]]
}

# chroot_copy_extension SUITE PACKAGE VERSION: copy the extension files of
# PACKAGE, an SQL-only extension packaged for another PostgreSQL version,
# into VERSION's extension directory in SUITE's chroot (under its lock).
chroot_copy_extension() {
    local dir files f
    dir=$(chroot_dir "$1")
    exec {lockfd}>"$SOFTMIG_CHROOT_DIR/.$1.lock"
    flock "$lockfd"
    files=$(chroot_exec "$dir" dpkg -L "$2" | grep -E '^/usr/share/postgresql/[0-9]+/extension/[^/]+$' || true)
    [[ -n $files ]] || { flock -u "$lockfd"; die "$2 has no extension files to copy"; }
    say "$1 chroot: PostgreSQL $3 takes the extension files of $2"
    mkdir -p "$dir/usr/share/postgresql/$3/extension"
    for f in $files; do
        cp "$dir$f" "$dir/usr/share/postgresql/$3/extension/"
    done
    flock -u "$lockfd"
    exec {lockfd}>&-
}

# chroot_run SUITE OVERLAY SHARED CMD...: run CMD as root in SUITE's chroot
# seen through an overlay whose changes go to the directory OVERLAY (the
# caller removes it), with the directory SHARED visible at the same path
# inside.  Where the kernel refuses the overlay, a private copy of the chroot
# in OVERLAY is used instead.  CMD starts with an empty environment; give
# variables as NAME=VALUE words before the command.
chroot_run() {
    local suite=$1 ovl=$2 shared=$3 dir
    shift 3
    dir=$(chroot_dir "$suite")
    mkdir -p "$ovl/upper" "$ovl/work" "$ovl/root"
    unshare --mount --pid --fork --kill-child --propagation private -- \
        bash -c '
            set -e
            dir=$1 ovl=$2 shared=$3; shift 3
            root=$ovl/root
            if ! mount -t overlay overlay -o "lowerdir=$dir,upperdir=$ovl/upper,workdir=$ovl/work" \
                    "$root" 2>/dev/null; then
                echo "==> no overlay mount here: running in a copy of the chroot" >&2
                cp -a "$dir/." "$root/"
            fi
            mount -t proc proc "$root/proc"
            mount --bind /dev "$root/dev"
            mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
            mkdir -p "$root$shared"
            mount --bind "$shared" "$root$shared"
            exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                HOME=/root LANG=C.UTF-8 "$@"
        ' chroot_run "$dir" "$ovl" "$shared" "$@"
}
