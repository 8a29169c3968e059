# Crash in the middle of a backfill batch, then resume.
#
#   (a) kill -9 of the backend running CALL softmig.backfill, while it is
#       frozen inside a batch (after reading and locking its legacy rows,
#       before writing the target) by the test hook
#       softmig.backfill_pause_lock; the postmaster then restarts every
#       backend (crash recovery);
#   (b) the same, but the whole server goes down: $node->stop('immediate').
#
# Each run first checkpoints a few batches (max_batches), then freezes the
# next batch, commits two live writes while it is frozen, crashes, and
# checks after the restart that
#   - the checkpoint of the committed batches survived and the frozen batch
#     left nothing behind (progress, target rows);
#   - the next batch continues from the checkpoint (not from the start);
#   - a new CALL is not refused as "already running" (the crashed run's lock
#     is gone), completes, and legacy and target then match exactly (plain
#     SQL over the mapping), live writes included.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $ROWS = 5000;
my $BATCH = 500;
my $PAUSE_LOCK = 777;

my $node = PostgreSQL::Test::Cluster->new('backfill_crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION softmig');

# legacy_<tag> (id, qty, note) -> target_<tag> (item_id, quantity, note_uc)
sub setup_migration
{
	my ($tag) = @_;
	$node->safe_psql('postgres', qq{
		CREATE TABLE legacy_$tag (id int PRIMARY KEY, qty int NOT NULL, note text);
		CREATE TABLE target_$tag (item_id int PRIMARY KEY, quantity bigint NOT NULL, note_uc text);
		INSERT INTO legacy_$tag SELECT g, g * 3, 'n' || g FROM generate_series(1, $ROWS) g;
	});
	$node->safe_psql('postgres', qq{
		SELECT softmig.create_migration('$tag', 'legacy_$tag', 'target_$tag',
			forward  => '{"item_id": "id", "quantity": "qty::bigint", "note_uc": "upper(note)"}',
			backward => '{"id": "item_id", "qty": "quantity::int", "note": "lower(note_uc)"}');
		SELECT softmig.advance('$tag');
	});
}

sub diff_count
{
	my ($tag) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (
			(SELECT id AS item_id, qty::bigint AS quantity, upper(note) AS note_uc FROM legacy_$tag
			 EXCEPT ALL SELECT item_id, quantity, note_uc FROM target_$tag)
			UNION ALL
			(SELECT item_id, quantity, note_uc FROM target_$tag
			 EXCEPT ALL SELECT id, qty::bigint, upper(note) FROM legacy_$tag)) d});
}

sub progress
{
	my ($tag) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT bp.phase, bp.cursor->>'id', bp.rows_backfilled, bp.batches
		  FROM softmig.backfill_progress bp JOIN softmig.migrations m ON m.id = bp.migration_id
		 WHERE m.name = '$tag'});
}

sub run_crash
{
	my ($tag, $how) = @_;

	setup_migration($tag);

	# checkpoint three batches: ids 1..1500
	$node->safe_psql('postgres',
		"CALL softmig.backfill('$tag', batch_size => $BATCH, max_batches => 3)");
	is(progress($tag), "scan|1500|1500|3", "$tag: three batches checkpointed before the crash");

	# hold the pause lock, then start a backfill that freezes in its first
	# batch (ids 1501..2000 read behind the delete fence, nothing written)
	my $gate = $node->background_psql('postgres');
	$gate->query_safe("SELECT pg_advisory_lock($PAUSE_LOCK)");

	my ($bf_out, $bf_err) = ('', '');
	my $bf;
	{
		local $ENV{PGAPPNAME} = "frozen_backfill_$tag";
		$bf = IPC::Run::start(
			[
				'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
				'-c', "SET softmig.backfill_pause_lock = $PAUSE_LOCK",
				'-c', "CALL softmig.backfill('$tag', batch_size => $BATCH)"
			],
			'>', \$bf_out, '2>', \$bf_err);
	}
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE application_name = 'frozen_backfill_$tag'
		   AND wait_event_type = 'Lock' AND wait_event = 'advisory'})
	  or die "the backfill did not reach its pause point";
	my $pid = $node->safe_psql('postgres', qq{
		SELECT pid FROM pg_stat_activity WHERE application_name = 'frozen_backfill_$tag'});

	# the frozen batch holds the migration's delete fence, and no row locks
	my ($rc, $out, $err);
	my $mid = $node->safe_psql('postgres', "SELECT id FROM softmig.migrations WHERE name = '$tag'");
	is($node->safe_psql('postgres', qq{
		SELECT mode || '|' || granted FROM pg_locks
		 WHERE locktype = 'advisory' AND classid = 1936549486 AND objid = $mid
		   AND objsubid = 3 AND pid = $pid}),
		'ShareLock|true', "$tag: the frozen batch holds the delete fence");
	is($node->safe_psql('postgres', "SELECT id FROM legacy_$tag WHERE id = 1700 FOR UPDATE NOWAIT"),
		'1700', "$tag: and no lock on the rows it read (1700)");

	# live writes while the batch is frozen: an update of a row the batch has
	# read goes through; a delete (of a row it has not reached) waits for
	# the fence, i.e. for the batch, and dies with the crash
	$node->safe_psql('postgres', "UPDATE legacy_$tag SET note = 'live' WHERE id = 1600");
	my ($del_out, $del_err) = ('', '');
	my $del;
	{
		local $ENV{PGAPPNAME} = "fenced_delete_$tag";
		$del = IPC::Run::start(
			[
				'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
				'-c', "DELETE FROM legacy_$tag WHERE id = 4000"
			],
			'>', \$del_out, '2>', \$del_err);
	}
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
		 WHERE a.application_name = 'fenced_delete_$tag' AND NOT l.granted
		   AND l.locktype = 'advisory' AND l.classid = 1936549486 AND l.objsubid = 3})
	  or die "the live delete did not wait for the delete fence";
	pass("$tag: a live delete waits for the frozen batch's fence");

	# crash
	if ($how eq 'kill9')
	{
		my $log_offset = -s $node->logfile;
		ok(kill('KILL', $pid), "$tag: kill -9 of the backfill backend $pid");
		# the postmaster notices, kills every backend and restarts
		$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
		$node->poll_query_until('postgres', 'SELECT pg_is_in_recovery() = false')
		  or die 'the server did not come back after the backend crash';
		# PostgreSQL 19 names the process: "client backend (PID n)"
		like(slurp_file($node->logfile, $log_offset),
			qr/(?:server process|client backend) \(PID $pid\) was terminated by signal 9/,
			"$tag: the postmaster saw the backend crash and reinitialized");
	}
	else
	{
		$node->stop('immediate');
		$node->start;
		pass("$tag: the server was stopped in immediate mode and restarted");
	}

	$bf->finish;
	$del->finish;
	isnt($bf->full_result(0), 0, "$tag: the frozen CALL did not complete");
	isnt($del->full_result(0), 0, "$tag: nor the delete waiting for its fence");
	like($bf_err, qr/server closed the connection|terminat|connection to server was lost/,
		"$tag: the frozen CALL lost its connection");
	eval { $gate->quit };

	# the checkpoint survived, the frozen batch left nothing behind
	is(progress($tag), "scan|1500|1500|3", "$tag: the checkpoint of the committed batches survived the crash");
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE item_id <= 1500), count(*) FILTER (WHERE item_id > 1500),
		       count(*) FILTER (WHERE item_id = 1600 AND note_uc = 'LIVE')
		  FROM target_$tag}), '1500|1|1',
		"$tag: target holds the checkpointed rows and the live write, nothing of the frozen batch");

	# the crashed batch's fence is gone: the delete goes through now
	is($node->safe_psql('postgres', qq{
		SET lock_timeout = '5s';
		DELETE FROM legacy_$tag WHERE id = 4000 RETURNING id}),
		'4000', "$tag: the crashed batch's fence is gone (the delete passes)");

	# the next batch continues from the checkpoint
	is($node->safe_psql('postgres', qq{SELECT softmig.backfill_batch('$tag', $BATCH)->>'copied'}),
		$BATCH - 1, "$tag: the first batch after the crash copies ids 1501..2000 (1600 already mirrored)");
	is(progress($tag), "scan|2000|1999|4", "$tag: and checkpoints after the old one");

	# a new CALL is not refused, and completes
	($rc, $out, $err) = $node->psql('postgres', "CALL softmig.backfill('$tag', batch_size => $BATCH)");
	is($rc, 0, "$tag: CALL softmig.backfill after the crash runs to completion") or diag($err);
	is($node->safe_psql('postgres', qq{SELECT softmig.status('$tag')->>'backfill_done'}), 'true',
		"$tag: backfill_done");
	my ($phase, $cursor, $rows, $batches) = split /\|/, progress($tag);
	is("$phase|$rows", "done|" . ($ROWS - 2), "$tag: every row copied once ($ROWS minus the live update and the delete)");
	cmp_ok($batches, '>', 4, "$tag: batches counted on from the checkpoint ($batches)");

	is(diff_count($tag), '0', "$tag: legacy and target match exactly through the mapping");
	is($node->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM legacy_$tag) || '|' || (SELECT count(*) FROM target_$tag)}),
		($ROWS - 1) . '|' . ($ROWS - 1), "$tag: same row counts");
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM target_$tag WHERE item_id = 4000 OR (item_id = 1600 AND note_uc <> 'LIVE')}),
		'0', "$tag: the live delete stayed deleted and the live update was not overwritten");
}

run_crash('bf_kill9', 'kill9');
run_crash('bf_immediate', 'immediate');

$node->stop;
done_testing();
