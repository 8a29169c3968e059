# test/pkg.sh -- installing the Debian packages the test and soak runners need.
#
# Sourced by test/run_all.sh and test/soak/run.sh. The caller defines
# APT_PACKAGES (an array), say and die. Without dpkg, nothing is installed;
# not as root, missing packages are reported and left alone.

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
    local log
    log=$(mktemp /tmp/softmig-apt.XXXXXX)
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
               --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get failed (log above)"
    fi
    rm -f "$log"
}
