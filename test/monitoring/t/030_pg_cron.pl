# Scheduling with pg_cron, as doc/monitoring.md shows it: a cluster with
# shared_preload_libraries = 'softmig,pg_cron', the migration's tables owned
# by an ordinary role, and the documentation's pg_cron block run as that
# role.  Then pg_cron itself runs the jobs (their schedules moved to every
# minute, the finest pg_cron 1.4 has):
#   - the check job stores a check run, which softmig.monitor shows;
#   - the retention job forgets operation keys older than a week and keeps
#     the recent ones, and the history records it;
#   - both runs succeed in cron.job_run_details, as the owner.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{TESTDIR} // '.';

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->start;
if ($node->safe_psql('postgres', q{SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'}) eq '0')
{
	plan skip_all => 'pg_cron is not installed for this PostgreSQL (Debian: postgresql-15-cron)';
}
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig,pg_cron'
cron.database_name = 'app'
cron.use_background_workers = on
cron.max_running_jobs = 4
max_worker_processes = 16
});
$node->restart;

# the block the documentation shows for pg_cron
my $doc = slurp_file("$root/doc/monitoring.md");
my ($block) = $doc =~ /<!-- doc-test: skip:[^\n]*030_pg_cron\.pl[^\n]*-->\n```sql\n(.*?)```/s;
ok($block, 'doc/monitoring.md has the pg_cron block');

$node->safe_psql('app', q{
CREATE EXTENSION softmig;
CREATE EXTENSION pg_cron;
CREATE ROLE app_owner LOGIN;
GRANT USAGE ON SCHEMA cron TO app_owner;
GRANT CREATE ON SCHEMA public TO app_owner;
});
sub as_owner { return $node->safe_psql('app', $_[0], extra_params => [ '-U', 'app_owner' ]); }

as_owner(q{
CREATE TABLE legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL);
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL);
INSERT INTO legacy_orders SELECT g, 'c' || g FROM generate_series(1, 100) g;
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward => '{"order_id": "id", "customer": "upper(cust)"}',
    backward => '{"id": "order_id", "cust": "lower(customer)"}');
SELECT softmig.advance('orders');
});
as_owner(q{CALL softmig.backfill('orders')});
# two operation keys: one claimed a month ago, one now
as_owner(q{
BEGIN; SET LOCAL softmig.operation_key = 'old'; UPDATE legacy_orders SET cust = 'x' WHERE id = 1; COMMIT;
BEGIN; SET LOCAL softmig.operation_key = 'new'; UPDATE legacy_orders SET cust = 'y' WHERE id = 2; COMMIT;
});
$node->safe_psql('app', q{UPDATE softmig.operations SET claimed_at = now() - interval '30 days' WHERE key = 'old'});
is($node->safe_psql('app', q{SELECT check_last_run_timestamp_seconds FROM softmig.monitor}), '0', 'no check ran yet');

my $listed = as_owner($block);
like($listed, qr/\Qsoftmig-check-orders|*\/15 * * * *|SELECT count(*) FROM softmig.check('orders')\E\n
	\Qsoftmig-retention-orders|17 3 * * *|SELECT softmig.forget_operations('orders', '7 days'),\E\n
	\s+\Qsoftmig.forget_checks('orders', '30 days')\E\z/x,
	'the documented jobs are scheduled');
is($node->safe_psql('app', q{SELECT string_agg(DISTINCT username, ',') FROM cron.job WHERE jobname LIKE 'softmig-%'}),
	'app_owner', 'as the owner of the tables');

# a test cannot wait for a quarter past three: run both every minute
# (scheduling a job under a name the role already uses replaces it)
as_owner(q{SELECT cron.schedule(jobname, '* * * * *', command) FROM cron.job WHERE jobname LIKE 'softmig-%'});
is($node->safe_psql('app', q{SELECT count(*) FROM cron.job WHERE schedule = '* * * * *'}), '2', 'both now every minute');
ok($node->poll_query_until('app', q{
	SELECT count(DISTINCT d.jobid) = 2 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	 WHERE j.jobname LIKE 'softmig-%' AND d.status IN ('succeeded', 'failed')}),
	'pg_cron ran both jobs');
is($node->safe_psql('app', q{
	SELECT string_agg(j.jobname || ': ' || d.status || CASE WHEN d.status = 'failed' THEN ' ' || d.return_message ELSE '' END,
	                  E'\n' ORDER BY j.jobname)
	  FROM (SELECT DISTINCT ON (jobid) * FROM cron.job_run_details ORDER BY jobid, runid) d JOIN cron.job j USING (jobid)
	 WHERE j.jobname LIKE 'softmig-%'}),
	"softmig-check-orders: succeeded\nsoftmig-retention-orders: succeeded", 'both succeeded');

is($node->safe_psql('app', q{SELECT DISTINCT actor FROM softmig.check_results}), 'app_owner', 'the check run is stored, by the owner');
is($node->safe_psql('app', q{SELECT check_last_run_timestamp_seconds > extract(epoch FROM now() - interval '10 minutes') FROM softmig.monitor}),
	't', 'and monitoring sees it');
is($node->safe_psql('app', q{SELECT string_agg(key, ',' ORDER BY key) FROM softmig.operations}), 'new',
	'the retention job forgot the old operation key and kept the recent one');
is($node->safe_psql('app', q{SELECT max((detail->>'forgotten')::int) FROM softmig.history_log WHERE action = 'forget_operations'}),
	'1', 'and the history records it');

as_owner(q{SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname LIKE 'softmig-%'});
is($node->safe_psql('app', q{SELECT count(*) FROM cron.job}), '0', 'unscheduled');

$node->stop;
done_testing();
