# Differential soak of the backfill: pgbench runs random live writes on the
# legacy table (INSERT .. ON CONFLICT, updates, key changes, deletes) while
# CALL softmig.backfill copies the table in small batches; afterwards legacy
# and target must match exactly.  The comparison is a plain SQL query over
# the mapping (EXCEPT ALL both ways, row counts), never softmig's own checks.
#
# The target has a different shape: renamed and converted columns.  Before
# mirroring begins the target also holds stale copies of some legacy rows
# and orphans legacy never had: the backfill must correct the first and
# remove the second while the load runs.
#
# Bounded to about 40 s: pgbench runs for 20 s.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my $PGBENCH_SECONDS = 20;
my $ROWS = 50_000;

my $node = PostgreSQL::Test::Cluster->new('backfill_soak');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
log_statement = none
max_connections = 40
});
$node->start;

$node->safe_psql('postgres', qq{
	CREATE EXTENSION softmig;
	CREATE TABLE legacy (id bigint PRIMARY KEY, grp int NOT NULL, v text NOT NULL, n int NOT NULL);
	CREATE TABLE target (legacy_id bigint PRIMARY KEY, group_code text NOT NULL,
	                     label text NOT NULL, amount numeric(12,2) NOT NULL);
	INSERT INTO legacy
	SELECT g, g % 17, md5(g::text), g % 1000 FROM generate_series(1, $ROWS) g;
	-- written before mirroring begins (state legacy, target not managed):
	-- stale copies of about 500 rows, and 50 orphans
	INSERT INTO target
	SELECT id, 'stale', 'STALE', -1 FROM legacy WHERE id % 101 = 0;
	INSERT INTO target
	SELECT g, 'orphan', 'ORPHAN', 0 FROM generate_series(900001, 900050) g;
	-- pgbench helper: a key change that gives up when the new key is taken
	CREATE FUNCTION soak_move(x bigint) RETURNS void LANGUAGE plpgsql AS \$\$
	BEGIN
		UPDATE legacy SET id = id + 1000000 WHERE id = x;
	EXCEPTION WHEN unique_violation THEN
		NULL;
	END \$\$;
	ANALYZE legacy;
});

# Define and switch to mirrored in a transaction of its own: rows the
# switching transaction itself wrote would count as live writes.
$node->safe_psql('postgres', q{
	SELECT softmig.create_migration('m', 'legacy', 'target',
		forward  => '{"legacy_id": "id", "group_code": "''g'' || grp", "label": "upper(v)", "amount": "n / 100.0"}',
		backward => '{"id": "legacy_id", "grp": "substr(group_code, 2)::int", "v": "lower(label)", "n": "(amount * 100)::int"}');
});
is($node->safe_psql('postgres', q{SELECT softmig.advance('m')}), 'mirrored', 'migration advanced to mirrored');
is($node->safe_psql('postgres', q{SELECT softmig.status('m')->>'backfill_done'}), 'false',
	'backfill_done is false before the backfill');

# The plain-SQL differential check: legacy through the mapping vs target.
my $diff_sql = q{
	SELECT count(*) FROM (
		(SELECT id AS legacy_id, 'g' || grp AS group_code, upper(v) AS label,
		        (n / 100.0)::numeric(12,2) AS amount FROM legacy
		 EXCEPT ALL
		 SELECT legacy_id, group_code, label, amount FROM target)
		UNION ALL
		(SELECT legacy_id, group_code, label, amount FROM target
		 EXCEPT ALL
		 SELECT id, 'g' || grp, upper(v), (n / 100.0)::numeric(12,2) FROM legacy)) d
};
my $diff_rows_sql = q{
	(SELECT 'missing_in_target' AS problem, * FROM (
		SELECT id AS legacy_id, 'g' || grp AS group_code, upper(v) AS label,
		       (n / 100.0)::numeric(12,2) AS amount FROM legacy
		EXCEPT ALL SELECT legacy_id, group_code, label, amount FROM target) a LIMIT 10)
	UNION ALL
	(SELECT 'extra_in_target', * FROM (
		SELECT legacy_id, group_code, label, amount FROM target
		EXCEPT ALL
		SELECT id, 'g' || grp, upper(v), (n / 100.0)::numeric(12,2) FROM legacy) b LIMIT 10)
};
isnt($node->safe_psql('postgres', $diff_sql), '0', 'the differential check sees the tables differ before the backfill');

# The load: ids 1..60000 (inside and beyond the initial table), key changes
# move a row to id + 1000000.
my $script = $node->basedir . '/soak.sql';
PostgreSQL::Test::Utils::append_to_file($script, q{
\set r random(1, 100)
\set x random(1, 60000)
\set y random(0, 99999)
\if :r <= 25
INSERT INTO legacy (id, grp, v, n) VALUES (:x, :y % 17, md5(:y::text), :y)
    ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = legacy.n + 1;
\elif :r <= 50
UPDATE legacy SET v = md5(v || :y), n = :y WHERE id = :x;
\elif :r <= 60
UPDATE legacy SET grp = grp + 1 WHERE id = :x;
\elif :r <= 75
SELECT soak_move(:x);
\else
DELETE FROM legacy WHERE id = :x;
\endif
});

my ($pgb_out, $pgb_err) = ('', '');
my $t0 = time;
# (the TAP framework sets PGAPPNAME for every client; give pgbench its own)
my $pgbench;
{
	local $ENV{PGAPPNAME} = 'soak_pgbench';
	$pgbench = IPC::Run::start(
		[
			'pgbench', '-n', '-h', $node->host, '-p', $node->port,
			'-c', '3', '-j', '3', '-T', $PGBENCH_SECONDS, '-R', '4000',
			'--max-tries=20', '-f', $script, 'postgres'
		],
		'>', \$pgb_out, '2>', \$pgb_err);
}

# wait until the load is actually running (all three clients connected)
my $started = 0;
for (1 .. 300)
{
	$pgbench->pump_nb;
	last unless $pgbench->pumpable;
	$started = $node->safe_psql('postgres',
		q{SELECT count(*) >= 3 FROM pg_stat_activity WHERE application_name = 'soak_pgbench'}) eq 't';
	last if $started;
	select(undef, undef, undef, 0.1);
}
if (!$started)
{
	$pgbench->finish;
	BAIL_OUT("pgbench did not start:\n$pgb_err\n$pgb_out");
}

# The backfill in small throttled batches (pause_ms stretches it over most of
# the load window), as CALLs of at most 25 batches each, called again until
# it is done; between CALLs we note whether the load is still running, to
# count the batches that ran under it.  A CALL that fails (say, with a
# deadlock against a writer) resumes from its last checkpoint on the next
# CALL; any error other than a deadlock fails the test.
my $loading_sql = q{SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'soak_pgbench'};
my $batches_sql = q{SELECT COALESCE((SELECT batches FROM softmig.backfill_progress), 0)};
my ($calls, $deadlocks, $under_load) = (0, 0, 0);
my $done = 'false';
while ($done ne 'true' && $calls < 200)
{
	$calls++;
	my $before = $node->safe_psql('postgres', $batches_sql);
	my ($rc, $out, $err) = $node->psql('postgres',
		q{CALL softmig.backfill('m', batch_size => 200, max_batches => 25, pause_ms => 40)});
	if ($rc != 0)
	{
		if ($err =~ /deadlock detected/) { $deadlocks++; }
		else { fail("CALL softmig.backfill failed: $err"); last; }
	}
	$under_load += $node->safe_psql('postgres', $batches_sql) - $before
	  if $node->safe_psql('postgres', $loading_sql) eq 't';
	$done = $node->safe_psql('postgres', q{SELECT softmig.status('m')->>'backfill_done'});
}
is($done, 'true', sprintf('the backfill finished (%d CALLs, %d deadlocks, %.1f s after the load began)',
	$calls, $deadlocks, time - $t0));
cmp_ok($under_load, '>=', 50, "the backfill raced the load ($under_load batches ran while pgbench did)");

# let the load finish
my $pgb_rc = $pgbench->finish ? 0 : $pgbench->full_result(0);
is($pgb_rc, 0, 'pgbench exited 0') or diag("pgbench stderr:\n$pgb_err\nstdout:\n$pgb_out");
my ($processed) = $pgb_out =~ /number of transactions actually processed: (\d+)/;
my ($failed) = $pgb_out =~ /number of failed transactions: (\d+)/;
my ($retried) = $pgb_out =~ /number of transactions retried: (\d+)/;
$processed //= 0;
$failed //= 0;
$retried //= 0;
note "pgbench: $processed transactions, $failed failed, $retried retried";
cmp_ok($processed, '>', 2000, "pgbench ran a real load ($processed transactions)");
is($failed, 0, 'no pgbench transaction failed');

# the load did what it says: key changes, deletes and inserts beyond the
# initial table all happened
my ($moved, $gone, $beyond) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT (SELECT count(*) FROM legacy WHERE id > 1000000),
	       $ROWS - (SELECT count(*) FROM legacy WHERE id <= $ROWS),
	       (SELECT count(*) FROM legacy WHERE id > $ROWS AND id <= 60000)});
cmp_ok($moved, '>', 0, "key changes happened ($moved rows moved)");
cmp_ok($gone, '>', 0, "deletes or key changes removed initial keys ($gone)");
cmp_ok($beyond, '>', 0, "inserts beyond the initial table happened ($beyond)");

# run the backfill to completion once more (it is done: nothing to do)
$node->safe_psql('postgres', q{CALL softmig.backfill('m', batch_size => 200)});

is($node->safe_psql('postgres', $diff_sql), '0', 'legacy and target match exactly through the mapping')
  or diag($node->safe_psql('postgres', $diff_rows_sql));
is($node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM legacy) = (SELECT count(*) FROM target)}),
	't', 'legacy and target have the same number of rows');
is($node->safe_psql('postgres', q{SELECT count(*) FROM target WHERE label IN ('STALE', 'ORPHAN')}),
	'0', 'every stale pre-mirror copy was corrected and every orphan removed');
is($node->safe_psql('postgres', q{SELECT softmig.status('m')->>'backfill_done'}), 'true',
	'softmig.status reports backfill_done');
my ($rows_bf, $batches) = split /\|/, $node->safe_psql('postgres', q{
	SELECT rows_backfilled, batches FROM softmig.backfill_progress});
# batches of at most 200 rows each: the live writes delete and move keys
# while the backfill runs, so the rows it copies (and with them the batches)
# are fewer than the table's initial $ROWS; bound the batch, not the count
cmp_ok($batches * 200, '>=', $rows_bf, "the backfill ran in small batches ($batches batches, $rows_bf rows)");
cmp_ok($batches, '>', 1, 'the backfill took more than one batch');

$node->stop;
done_testing();
