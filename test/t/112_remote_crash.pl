# Crashes of a cross-database migration (doc/cross-database.md, "Crashes").
#
# Under pgbench load on the legacy database, in state mirrored:
#   - kill -9 of the target database's apply worker (its postmaster then
#     restarts every backend and recovers): the apply resumes from its
#     replication origin, nothing is applied twice or lost (the load adds to
#     counters, so a change applied twice would show);
#   - kill -9 of the legacy database's postmaster, then of the target's;
#   - the target database down for a while: the legacy database keeps
#     writing, the slot holds the changes (lag visible in status), and the
#     target catches up when it is back.
# During the switch and its rollback, the coordinator stops after a given
# step (test hook softmig.remote_stop_after: as if it had crashed there), and
# the postmaster of one side is killed with -9.  After the restart:
#   - status explains the switch in progress (its step, the fence);
#   - no side accepts a write while the fence is up;
#   - remote_resume finishes the switch, or remote_abort gives it up, and
#     the data are the same on both sides, writes made in between included.
# Also a kill -9 of the target's postmaster while the coordinator waits for
# the apply to reach the fence (the apply is held back by a lock).
#
# About 60 seconds.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SoftmigTwo;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep);

my ($A, $B) = two_nodes('crash');
define_orders($A, $B, 5000);
app_functions($A, $B);
my $tag = tag_of($B);
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
wait_forward($A, $B);
$B->safe_psql('postgres', q{CALL softmig.backfill('orders')});

# kill -9 a postmaster and start it again (its children notice its death
# and leave; the new postmaster waits until they are gone)
sub crash
{
	my ($node) = @_;
	$node->kill9;
	for my $try (1 .. 100)
	{
		# (Cluster::start would take the dead postmaster's pid file for a
		# running server after a failed attempt; like it, keep PGAPPNAME out
		# of the server's environment, or subscriptions connect under it)
		local $ENV{PGAPPNAME};
		delete $ENV{PGAPPNAME};
		my $ret = PostgreSQL::Test::Utils::system_log('pg_ctl', '-w', '-D', $node->data_dir,
			'-l', $node->logfile, '-o', '--cluster-name=' . $node->name, 'start');
		if ($ret == 0)
		{
			$node->_update_pid(1);
			last;
		}
		die 'the ' . $node->name . ' node does not start again' if $try == 100;
		sleep 0.2;
	}
	wait_until($node, 'SELECT true', $node->name . ' to accept connections');
	return;
}

# background load that survives a crash: its result is not checked
sub load
{
	my ($node, $secs, $name) = @_;
	return start_pgbench($node, $secs, 2, $name);
}

sub drain
{
	my ($p) = @_;
	$p->{h}->finish;
	return;
}

# 1. kill -9 of the apply worker while it applies the load
my $p = load($A, 4, 'k_apply');
sleep 1.5;
my $apid = $B->safe_psql('postgres', "SELECT pid FROM pg_stat_subscription WHERE subname = '${tag}_fwd' AND relid IS NULL");
ok($apid =~ /^\d+$/, "the apply worker runs (pid $apid)");
kill 9, $apid;
drain($p);
wait_until($B, 'SELECT true', 'the target database after the crash');
wait_forward($A, $B);
same_data($A, $B, 'kill -9 of the apply worker');

# 2. kill -9 of the legacy database's postmaster under load
$p = load($A, 3, 'k_legacy');
sleep 1;
crash($A);
drain($p);
$p = load($A, 1, 'k_legacy2');
drain($p);
wait_forward($A, $B);
same_data($A, $B, "kill -9 of the legacy database's postmaster");

# 3. kill -9 of the target database's postmaster under load
$p = load($A, 3, 'k_target');
sleep 1;
crash($B);
drain($p);
wait_forward($A, $B);
same_data($A, $B, "kill -9 of the target database's postmaster");

# 4. the target database down for a while
$B->stop('fast');
$p = load($A, 3, 'down');
drain($p);
my $lag = $A->safe_psql('postgres', q{SELECT (softmig._remote_describe('orders')->'slot'->>'lag_bytes')::bigint});
cmp_ok($lag, '>', 100000, "while the target database is down the legacy database shows the lag ($lag bytes)");
like($A->safe_psql('postgres', q{SELECT (softmig.remote_status('orders')->'there'->>'sqlstate')}), qr/^08/,
	'remote_status says the other database cannot be reached');
$B->start;
wait_forward($A, $B);
same_data($A, $B, 'the target database caught up');
cmp_ok($A->safe_psql('postgres', q{SELECT (softmig._remote_describe('orders')->'slot'->>'lag_bytes')::bigint}),
	'<', $lag, 'the lag went down');
cmp_ok($A->safe_psql('postgres', q{SELECT value FROM softmig.metrics WHERE migration = 'orders' AND metric = 'remote_slot_lag_bytes'}),
	'<', $lag, 'the legacy database reports the lag as a metric');
is($B->safe_psql('postgres', q{SELECT value FROM softmig.metrics WHERE migration = 'orders' AND metric = 'remote_apply_running'}),
	'1', 'the target database reports its apply worker running');

# ---------------------------------------------------------------------------
# The switch, interrupted
sub write_both
{
	my ($what) = @_;
	my $ra = sqlstate_of($A, "SELECT app_write('$what:a', 77, 1)");
	my $rb = sqlstate_of($B, "SELECT app_write('$what:b', 77, 1)");
	my $oa = $A->safe_psql('postgres', "SELECT outcome FROM app_log WHERE op = '$what:a'");
	my $ob = $B->safe_psql('postgres', "SELECT outcome FROM app_log WHERE op = '$what:b'");
	return "$oa/$ob";
}

sub stop_after
{
	my ($step, $sql) = @_;
	my ($rc, $out, $err) = $B->psql('postgres', "SET softmig.remote_stop_after = '$step'; $sql");
	like($err, qr/stopped after step \Q$step\E/, "the coordinator stopped after step $step");
	return;
}

sub switch_record
{
	return $B->safe_psql('postgres', q{SELECT softmig.status('orders')->'remote'->'switch'->>'step'});
}

# 5a. after the fence, the legacy database crashes
stop_after('fence', q{CALL softmig.remote_advance('orders')});
crash($A);
is(switch_record(), 'catchup', 'status shows the switch waiting to catch up with the fence');
is($A->safe_psql('postgres', q{SELECT fenced FROM softmig.remote_migrations}), 't', 'the legacy database is still fenced after its crash');
is(write_both('fence1'), 'refused/refused', 'during the fence neither database accepts a write');
$B->safe_psql('postgres', q{CALL softmig.remote_resume('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_write', 'remote_resume finished the switch');
is(write_both('after1'), 'refused/applied', 'then only the target accepts writes');
wait_reverse($A, $B);
same_data($A, $B, 'switch resumed after a crash of the legacy database');

# 5b. rollback: after the target fenced itself, it crashes
stop_after('target_fence', q{CALL softmig.remote_rollback('orders')});
crash($B);
is(switch_record(), 'source_catchup', 'status shows the rollback waiting for the legacy database');
is($B->safe_psql('postgres', q{SELECT softmig.status('orders')->'remote'->>'fenced'}), 'true', 'the target is fenced');
is(write_both('fence2'), 'refused/refused', 'during the fence neither database accepts a write');
$B->safe_psql('postgres', q{CALL softmig.remote_resume('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'mirrored', 'the rollback finished');
is(write_both('after2'), 'applied/refused', 'the legacy database is the write authority again');
wait_forward($A, $B);
same_data($A, $B, 'rollback resumed after a crash of the target database');

# 5c. after catching up with the fence, the target crashes
stop_after('catchup', q{CALL softmig.remote_advance('orders')});
crash($B);
is(switch_record(), 'stop', 'status shows the step after the catch-up');
$B->safe_psql('postgres', q{CALL softmig.remote_resume('orders')});
is(write_both('after3'), 'refused/applied', 'switched');
wait_reverse($A, $B);
same_data($A, $B, 'switch resumed after a crash of the target database');

# 5d. rollback: after the legacy database stopped applying, it crashes
stop_after('source_catchup', q{CALL softmig.remote_rollback('orders')});
crash($A);
$B->safe_psql('postgres', q{CALL softmig.remote_resume('orders')});
is(write_both('after4'), 'applied/refused', 'rolled back');
wait_forward($A, $B);
same_data($A, $B, 'rollback resumed after a crash of the legacy database');

# 5e. after the target database took over (its reverse slot made, the
# legacy database not told yet), the legacy database crashes; the target's
# writes made meanwhile reach it after the resume (row 77, which the load
# may have deleted, exists first)
$A->safe_psql('postgres', q{INSERT INTO legacy_orders VALUES (77, 'c77', 77) ON CONFLICT (id) DO NOTHING});
wait_forward($A, $B);
stop_after('switch', q{CALL softmig.remote_advance('orders')});
crash($A);
is(switch_record(), 'reverse', 'status shows the reverse replication to start');
is(write_both('between'), 'refused/applied', 'the target is the write authority, the legacy database still refuses');
is(sqlstate_of($B, q{CALL softmig.remote_abort('orders')}), '55000', 'a switch the target database made cannot be given up');
$B->safe_psql('postgres', q{CALL softmig.remote_resume('orders')});
wait_reverse($A, $B);
same_data($A, $B, 'switch resumed after the target took over');
is($A->safe_psql('postgres', q{SELECT cust FROM legacy_orders WHERE id = 77}), 'u77',
	'the write made between the switch and the resume reached the legacy database');

# 5f. abort: a rollback given up before the target database changed
stop_after('source_slot', q{CALL softmig.remote_rollback('orders')});
$B->safe_psql('postgres', q{CALL softmig.remote_abort('orders', 'not today')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text) || ' ' || (softmig.status('orders')->'remote'->>'fenced')}),
	'new_write false', 'the rollback was given up: new_write, not fenced');
is(write_both('aborted'), 'refused/applied', 'the target accepts writes again');
wait_reverse($A, $B);
same_data($A, $B, 'after an aborted rollback');

# 5g. kill -9 of the target's postmaster while the rollback waits for the
# legacy database to apply its fence marker (held back by a lock there)
# (SHARE mode holds the apply back; ACCESS EXCLUSIVE would also give the
# session a transaction ID, which the rollback's creation of a logical slot
# in the legacy database must wait for)
my $stdin = "BEGIN; LOCK TABLE legacy_orders IN SHARE MODE; SELECT 'locked';\n";
my ($stdout, $stderr) = ('', '');
my $h = IPC::Run::start([ 'psql', '-X', '-At', '-h', $A->host, '-p', $A->port, '-d', 'postgres' ],
	'<', \$stdin, '>', \$stdout, '2>', \$stderr);
$h->pump until $stdout =~ /locked/;
# (an upsert: the random load may have deleted the row; the write must exist
# for the apply to be held back at all)
$B->safe_psql('postgres',
	q{INSERT INTO orders VALUES (78, 'HELD', 0.78, NULL) ON CONFLICT (order_id) DO UPDATE SET customer = 'HELD'});
my ($bout, $berr) = ('', '');
my $bh = IPC::Run::start(
	[ 'psql', '-X', '-h', $B->host, '-p', $B->port, '-d', 'postgres', '-c', q{CALL softmig.remote_rollback('orders')} ],
	'>', \$bout, '2>', \$berr);
wait_until($B, q{SELECT softmig.status('orders')->'remote'->'switch'->>'step' = 'source_catchup'}, 'the rollback to wait');
sleep 0.5;
crash($B);
$bh->finish;
$stdin .= "ROLLBACK;\n\\q\n";
$h->finish;
is(switch_record(), 'source_catchup', 'after the crash status shows the rollback at the catch-up');
is(write_both('held'), 'refused/refused', 'and no database accepts writes');
$B->safe_psql('postgres', q{CALL softmig.remote_resume('orders')});
is(write_both('after5'), 'applied/refused', 'the rollback finished');
wait_forward($A, $B);
same_data($A, $B, 'rollback resumed after a crash during the fence');
is($A->safe_psql('postgres', q{SELECT cust FROM legacy_orders WHERE id = 78}), 'held',
	'the last write before the fence reached the legacy database');

# 5h. abort of a switch after the fence: the legacy database takes writes again
stop_after('stop', q{CALL softmig.remote_advance('orders')});
is(write_both('stopped'), 'refused/refused', 'fenced, the forward subscription stopped: no writes');
$B->safe_psql('postgres', q{CALL softmig.remote_abort('orders')});
is(write_both('unfenced'), 'applied/refused', 'after the abort the legacy database writes again');
$p = load($A, 2, 'after_abort');
drain($p);
wait_forward($A, $B);
same_data($A, $B, 'after an aborted switch the replication flows again');
is($B->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots}), '0', 'the aborted switch left no slot behind');

$A->stop;
$B->stop;
done_testing();
