# demo/lib.sh -- what the demo's acts on the PG* server share (sourced by
# demo/demo.sh and demo/rolling.sh): step headings, psql against database
# $DB, and assertions that exit non-zero.

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
