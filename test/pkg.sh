# test/pkg.sh -- installing the Debian packages the test and soak runners need.
#
# Sourced by test/run_all.sh, test/soak/run.sh and test/assert_check.sh. The
# caller defines APT_PACKAGES (an array), say and die. Without dpkg, nothing
# is installed; not as root, missing packages are reported and left alone.

# pkg_installed PKG: true when dpkg reports PKG as installed.
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# ensure_packages: apt-get install what APT_PACKAGES lists and is missing.
# An entry "package:donor" (see test/run_all.sh) stands for package here.
ensure_packages() {
    local missing=() p
    if ! command -v dpkg-query >/dev/null; then
        say "no dpkg here; not installing packages"
        return
    fi
    for p in "${APT_PACKAGES[@]}"; do
        p=${p%%:*}
        pkg_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    if ((EUID != 0)); then
        say "warning: missing packages (run as root to install them): ${missing[*]}"
        return
    fi
    say "installing: ${missing[*]}"
    local log policy=
    log=$(mktemp /tmp/softmig-apt.XXXXXX)
    # Packages such as prometheus start their service on install, listening
    # on every interface; the tests start their own on loopback.  Where no
    # policy says otherwise, forbid service starts for the install only.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# softmig test/pkg.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
               --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        [[ -z $policy ]] || rm -f "$policy"
        die "apt-get failed (log above)"
    fi
    rm -f "$log"
    [[ -z $policy ]] || rm -f "$policy"
}

# copy_extension_files NAME PG_CONFIG: make the extension NAME that a Debian
# package installed (control and SQL files; pg_partman needs no library) also
# available to the PostgreSQL of PG_CONFIG when that is another installation
# (a relocated copy, or the assert-enabled build).  Does nothing when the
# package is not installed or PG_CONFIG is Debian's own.
copy_extension_files() {
    local name=$1 pgc=$2 major src dst
    major=$("$pgc" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    src=/usr/share/postgresql/$major/extension
    dst=$("$pgc" --sharedir)/extension
    [[ -f $src/$name.control ]] || return 0
    [[ $src -ef $dst ]] && return 0
    cp "$src/$name.control" "$src/$name"--*.sql "$dst"/
}

# copy_extension_library NAME PG_CONFIG: copy_extension_files plus the
# extension's library (NAME.so), for an extension in C such as pg_cron, but
# only into a relocated copy of Debian's own build (same version and
# configure options as Debian's pg_config): a library is built for one
# server build.  Does nothing otherwise.
copy_extension_library() {
    local name=$1 pgc=$2 major debian_pgc lib
    major=$("$pgc" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    debian_pgc=/usr/lib/postgresql/$major/bin/pg_config
    lib=/usr/lib/postgresql/$major/lib/$name.so
    [[ -x $debian_pgc && -f $lib ]] || return 0
    [[ $("$debian_pgc" --version --configure) == "$("$pgc" --version --configure)" ]] || return 0
    [[ $lib -ef $("$pgc" --pkglibdir)/$name.so ]] && return 0
    copy_extension_files "$name" "$pgc" && cp "$lib" "$("$pgc" --pkglibdir)"/
}
