# The switch of write authority under load, across two databases: zero lost
# and zero duplicated writes (doc/cross-database.md, "The switch").
#
# Client processes run operations for several seconds.  Each operation has
# its own key and does two things in one transaction: it inserts its own
# row and adds one to its client's counter row.  A client writes the
# database that accepts writes, and when a write is refused (SM001: the
# authority moved, or a switch is in progress) it retries the same
# operation, with the same key, on the other database.  One operation in
# eight is replayed after it was applied (a lost reply): the replay must be
# refused as already applied (23505 of the key), wherever the authority is
# by then.  Meanwhile the write authority moves to the target database and,
# later, back (the rollback is the same fence the other way).
#
# At the end, with the replication caught up, in both databases and for
# every client: the operations' rows are exactly the applied ones, each
# once, and the counter equals the number of applied operations.  Every
# attempt got a clear answer (applied, refused, or already applied).
#
# About 20 seconds.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";
use IPC::Run;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SoftmigTwo;
use Test::More;
use Time::HiRes qw(sleep time);

my $CLIENTS = 4;
my $SECONDS = 9;

my ($A, $B) = two_nodes('switch');
define_orders($A, $B, 2000);
# one counter row per client
$A->safe_psql('postgres', "INSERT INTO legacy_orders SELECT 900000 + c, 'counter', 0 FROM generate_series(1, $CLIENTS) c");
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
wait_forward($A, $B);
$B->safe_psql('postgres', q{CALL softmig.backfill('orders')});

# One operation on one node: 'applied', 'refused' (SM001), 'duplicate'
# (23505 of the key), or the error.
sub attempt
{
	my ($node, $client, $n, $where) = @_;
	my $key = "op:$client:$n";
	my $id = 1_000_000 + $client * 100_000 + $n;
	my $sql = $where eq 'legacy'
	  ? "INSERT INTO legacy_orders VALUES ($id, 'op$client', $n); UPDATE legacy_orders SET amount_cents = amount_cents + 1 WHERE id = 900000 + $client;"
	  : "INSERT INTO orders VALUES ($id, 'OP$client', $n / 100.0, NULL); UPDATE orders SET amount = amount + 0.01 WHERE order_id = 900000 + $client;";
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port, '-d', 'postgres' ],
		'<', \"\\set VERBOSITY verbose\nBEGIN;\nSET LOCAL softmig.operation_key = '$key';\n$sql\nCOMMIT;\n",
		'>', \$out, '2>', \$err);
	return 'applied' if $err !~ /ERROR/;
	return 'refused' if $err =~ /ERROR:\s+SM001/;
	return 'duplicate' if $err =~ /ERROR:\s+23505: operation key/;
	$err =~ s/\n/ /g;
	return "error: $err";
}

# a client process: operations until the deadline, written to its log file
sub client
{
	my ($c, $deadline) = @_;
	my $log = "$PostgreSQL::Test::Utils::tmp_check/switch_client_$c.log";
	open(my $fh, '>', $log) or die;
	my @nodes = ([ $A, 'legacy' ], [ $B, 'target' ]);
	my $side = 0;
	my $n = 0;
	while (time() < $deadline)
	{
		$n++;
		my $tries = 0;
		my $r;
		for (;;)
		{
			$r = attempt($nodes[$side][0], $c, $n, $nodes[$side][1]);
			last if $r ne 'refused';
			$side = 1 - $side;    # the authority moved: the other database
			sleep 0.01 if ++$tries % 2 == 0;
			last if $tries > 2000;
		}
		print $fh "$n $r $nodes[$side][1]\n";
		if ($r eq 'applied' && $n % 8 == 0)
		{
			# a lost reply: the client replays the operation
			my $replay;
			for (my $t = 0; $t < 2000; $t++)
			{
				$replay = attempt($nodes[$side][0], $c, $n, $nodes[$side][1]);
				last if $replay ne 'refused';
				$side = 1 - $side;
				sleep 0.01 if $t % 2;
			}
			print $fh "$n replay-$replay $nodes[$side][1]\n";
		}
	}
	close($fh);
	return;
}

my $deadline = time() + $SECONDS;
my @pids;
for my $c (1 .. $CLIENTS)
{
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		client($c, $deadline);
		POSIX::_exit(0);    # not the test framework's END blocks
	}
	push @pids, $pid;
}

sleep 2.5;
my $t0 = time();
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders', reason => 'switch under load')});
note(sprintf('switch took %.2f s', time() - $t0));
sleep 2.5;
$t0 = time();
$B->safe_psql('postgres', q{CALL softmig.remote_rollback('orders', 'roll back under load')});
note(sprintf('rollback took %.2f s', time() - $t0));
waitpid($_, 0) for @pids;
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'mirrored', 'switched and rolled back');

wait_forward($A, $B);
same_data($A, $B, 'after the switches');

my ($applied_total, %sides) = (0);
for my $c (1 .. $CLIENTS)
{
	my (%applied, @errors, @bad_replays);
	open(my $fh, '<', "$PostgreSQL::Test::Utils::tmp_check/switch_client_$c.log") or die;
	while (my $line = <$fh>)
	{
		chomp $line;
		my ($n, $r, $side) = split / /, $line, 3;
		if ($r eq 'applied') { $applied{$n} = 1; $sides{$side}++ }
		elsif ($r eq 'replay-duplicate') { }
		elsif ($r =~ /^replay-/) { push @bad_replays, $line }
		elsif ($r eq 'duplicate') { push @errors, "$line (a first attempt reported as a replay)" }
		else { push @errors, $line }
	}
	close($fh);
	is(scalar(@errors), 0, "client $c: every operation was applied") or diag(join("\n", @errors[0 .. 4]));
	is(scalar(@bad_replays), 0, "client $c: every replay was refused as already applied")
	  or diag(join("\n", @bad_replays[0 .. 4]));
	my $napplied = scalar(keys %applied);
	$applied_total += $napplied;
	my $expect_rows = join(',', sort { $a <=> $b } map { 1_000_000 + $c * 100_000 + $_ } keys %applied);
	is($A->safe_psql('postgres',
			"SELECT string_agg(id::text, ',' ORDER BY id) FROM legacy_orders WHERE id / 100000 = 10 + $c"),
		$expect_rows, "client $c: the legacy table holds exactly its $napplied applied operations, once each");
	is($B->safe_psql('postgres',
			"SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM orders WHERE order_id / 100000 = 10 + $c"),
		$expect_rows, "client $c: so does the target");
	is($A->safe_psql('postgres', "SELECT amount_cents FROM legacy_orders WHERE id = 900000 + $c"),
		$napplied, "client $c: its counter counts every applied operation once (legacy)");
	is($B->safe_psql('postgres', "SELECT (amount * 100)::int FROM orders WHERE order_id = 900000 + $c"),
		$napplied, "client $c: and in the target");
}
ok(($sides{legacy} // 0) > 0 && ($sides{target} // 0) > 0,
	"operations were applied on both databases (legacy $sides{legacy}, target $sides{target})");
is($A->safe_psql('postgres', q{SELECT count(*) FROM softmig.remote_operations WHERE key LIKE 'op:%'}),
	$applied_total, "the ledger holds one key per applied operation ($applied_total) in the legacy database");
is($B->safe_psql('postgres', q{SELECT count(*) FROM softmig.remote_operations WHERE key LIKE 'op:%'}),
	$applied_total, 'and in the target database');

$A->stop;
$B->stop;
done_testing();
