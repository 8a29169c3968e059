#!/usr/bin/env bash
#
# test/monitoring/run.sh -- the monitoring suite: the files under monitoring/
# tested with the real tools, and scheduling with pg_cron.
#
#   t/010_static.pl   promtool check rules, the promtool rule tests of
#                     test/prometheus/*.yaml, the exporter query file and
#                     the Grafana dashboard model
#   t/020_live.pl     a throwaway cluster with migrations, Debian's
#                     prometheus-postgres-exporter and Prometheus on loopback
#                     ports: planted problems fire their alerts, every
#                     dashboard expression returns data
#   t/030_pg_cron.pl  softmig.check and softmig.forget_operations scheduled
#                     with pg_cron, as doc/monitoring.md shows
#
# test/run_all.sh runs it (suite "monitoring") as the unprivileged user in
# the copied tree, with PGBIN set; by hand, from the repository root:
#
#   PGBIN=/usr/lib/postgresql/15/bin bash test/monitoring/run.sh
#
# It needs promtool and prometheus (Debian package prometheus),
# prometheus-postgres-exporter, postgresql-15-cron, and softmig installed in
# PGBIN's installation.  Output is TAP::Harness's; the exit status is
# prove's.  Every process a test starts listens on 127.0.0.1 only and is
# stopped when the test ends, however it ends.

set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

missing=()
for tool in promtool prometheus prometheus-postgres-exporter; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -f $("$PGBIN/pg_config" --pkglibdir)/pg_cron.so ]] || missing+=("pg_cron for $PGBIN")
if ((${#missing[@]} > 0)); then
    echo "test/monitoring/run.sh: missing: ${missing[*]} (Debian packages prometheus, prometheus-postgres-exporter, postgresql-15-cron)" >&2
    exit 1
fi

unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
exec make -C "$root" PG_CONFIG="$PGBIN/pg_config" installcheck REGRESS= ISOLATION= \
    PROVE_TESTS="test/monitoring/t/*.pl"
