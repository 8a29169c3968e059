# demo/lib.sh -- what the demo's acts on the PG* server share (sourced by
# demo/demo.sh, demo/rolling.sh and demo/split.sh): step headings, psql
# against database $DB, assertions that exit non-zero, and a scratch
# directory with background jobs cleaned up on exit.

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
q() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
val() { psql -X -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
assert() {  # description sql-returning-true
    local got
    got=$(val "$2")
    if [[ $got != t ]]; then
        printf 'ASSERTION FAILED: %s\n  query: %s\n  got: %s\n' "$1" "$2" "$got" >&2
        exit 1
    fi
    printf '  ok: %s\n' "$1"
}

# demo_scratch NAME: make TMP (/tmp/softmig-NAME.XXXXXX) and the list PIDS of
# background jobs (the act appends to it); on exit the jobs still running
# are killed and TMP is removed.
demo_scratch() {
    TMP=$(mktemp -d "/tmp/softmig-$1.XXXXXX")
    PIDS=()
    trap demo_cleanup EXIT
}
demo_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
