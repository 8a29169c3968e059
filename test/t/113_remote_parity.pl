# Parity across databases (doc/cross-database.md, "Parity across databases").
#
# softmig.remote_parity compares the legacy table with the landing copy the
# target database holds at one point of the replication (layer
# replication), and the copy with the target through the mapping (layer
# mapping), without shipping rows but those of chunks that differ.
#
#   - While the replication lags (the target's apply is held back by a lock
#     and the legacy database keeps writing), parity waits for its point and
#     reports nothing: no false positives.
#   - Differences planted in the legacy database (a change the target never
#     received: its slot skipped past it) and in the target database (rows
#     changed under session_replication_role = replica, on the copy and on
#     the target) are each reported, exactly, and nothing else; after they
#     are repaired, parity is clean again.
#   - The same from new_write on, where the replication runs the other way
#     and the comparison runs in the legacy database: under load on the
#     target, then with differences planted on either side.
#
# About 30 seconds.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SoftmigTwo;
use Test::More;
use Time::HiRes qw(sleep);

my ($A, $B) = two_nodes('parity');
define_orders($A, $B, 30000);
app_functions($A, $B);
my $tag = tag_of($B);
my $apply_trigger = 'softmig_' . $B->safe_psql('postgres', q{SELECT id FROM softmig.migrations WHERE name = 'orders'}) . '_apply';
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
wait_forward($A, $B);
$B->safe_psql('postgres', q{CALL softmig.backfill('orders')});

sub parity
{
	return $B->safe_psql('postgres', q{
		SELECT string_agg(format('%s %s %s %s %s/%s', layer, kind, key, coalesce(field, '-'),
		                         coalesce(legacy_value, '-'), coalesce(target_value, '-')), E'\n'
		                  ORDER BY layer DESC, key::text, kind, field)
		  FROM softmig.remote_parity('orders', 1000)});
}

is(parity(), '', 'parity is clean after the backfill');
my $stats = $B->safe_psql('postgres', q{SELECT softmig.remote_parity_report('orders', 1000)->'stats'});
like($stats, qr/"chunks": (\d{2})/, "the tables are compared in chunks: $stats");
like($stats, qr/"chunks_descended": 0/, 'no chunk read row by row when nothing differs');

# 1. the replication lags: the target's apply waits for a lock while the
# legacy database writes; parity waits for its point and finds nothing
my $stdin = "BEGIN; LOCK TABLE orders IN SHARE MODE; SELECT 'locked';\n";
my ($stdout, $stderr) = ('', '');
my $lock = IPC::Run::start([ 'psql', '-X', '-At', '-h', $B->host, '-p', $B->port, '-d', 'postgres' ],
	'<', \$stdin, '>', \$stdout, '2>', \$stderr);
$lock->pump until $stdout =~ /locked/;
my $load = start_pgbench($A, 6, 3, 'lag', 40000, 10000);
writing($A, 'lag');
my ($pout, $perr) = ('', '');
my $ph = IPC::Run::start(
	[ 'psql', '-X', '-At', '-h', $B->host, '-p', $B->port, '-d', 'postgres', '-c',
		q{SELECT layer, kind, key, field, legacy_value, target_value FROM softmig.remote_parity('orders', 1000)} ],
	'>', \$pout, '2>', \$perr);
sleep 2;
my $lag = $A->safe_psql('postgres', "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = '${tag}_fwd'");
cmp_ok($lag, '>', 0, "the replication lags behind ($lag bytes) while parity waits for its point");
$stdin .= "COMMIT;\n\\q\n";
$lock->finish;
$ph->finish;
finish_pgbench($load);
is($pout, "", "parity under load and lag reports no difference") or diag($perr);
wait_forward($A, $B);

# 2. plant differences on either side
# the legacy database: a change the target never receives (its slot skips it)
$B->safe_psql('postgres', "ALTER SUBSCRIPTION ${tag}_fwd DISABLE");
wait_until($B, "SELECT count(*) = 0 FROM pg_stat_subscription WHERE subname = '${tag}_fwd' AND pid IS NOT NULL", 'the apply to stop');
wait_until($A, "SELECT NOT active FROM pg_replication_slots WHERE slot_name = '${tag}_fwd'", 'the slot to be released');
$A->safe_psql('postgres', q{
	UPDATE legacy_orders SET amount_cents = 424242 WHERE id = 100;
	INSERT INTO legacy_orders VALUES (900100, 'lost', 7);
	DELETE FROM legacy_orders WHERE id = 200;
});
$A->safe_psql('postgres', "SELECT pg_replication_slot_advance('${tag}_fwd', pg_current_wal_lsn())");
$B->safe_psql('postgres', "ALTER SUBSCRIPTION ${tag}_fwd ENABLE");
# the target database: the copy and the target changed behind softmig's back
$B->safe_psql('postgres', qq{
	SET session_replication_role = replica;
	ALTER TABLE legacy_orders DISABLE TRIGGER $apply_trigger;
	UPDATE legacy_orders SET cust = 'planted' WHERE id = 300;
	ALTER TABLE legacy_orders ENABLE REPLICA TRIGGER $apply_trigger;
	UPDATE orders SET amount = 0.01 WHERE order_id = 400;
	DELETE FROM orders WHERE order_id = 500;
});
# and live changes meanwhile, which are no difference
$A->safe_psql('postgres', q{UPDATE legacy_orders SET cust = 'live' WHERE id BETWEEN 600 AND 610});
my $want = join("\n",
	'replication mismatch {"id": 100} amount_cents 424242/100',
	'replication missing_in_legacy {"id": 200} - -/-',
	'replication mismatch {"id": 300} cust c300/planted',
	'replication missing_in_target {"id": 900100} - -/-',
	'mapping mismatch {"id": 300} customer PLANTED/C300',
	'mapping mismatch {"id": 400} amount 4.00/0.01',
	'mapping missing_in_target {"id": 500} - -/-');
# ORDER BY layer DESC, key::text: the expected order
my $got = parity();
my @want = sort split /\n/, $want;
my @got = sort split /\n/, $got;
is(join("\n", @got), join("\n", @want), 'parity reports exactly the planted differences, on both layers');
like($B->safe_psql('postgres', q{SELECT softmig.remote_parity_report('orders', 1000)->'stats'}),
	qr/"chunks_descended": [1-5],/, 'only the chunks that differ were read row by row');

# repair: the target database takes the legacy values back
$B->safe_psql('postgres', qq{
	SET session_replication_role = replica;
	UPDATE legacy_orders SET amount_cents = 424242 WHERE id = 100;
	INSERT INTO legacy_orders VALUES (900100, 'lost', 7);
	DELETE FROM legacy_orders WHERE id = 200;
	UPDATE legacy_orders SET cust = 'c300' WHERE id = 300;
	UPDATE orders SET amount = 4.00 WHERE order_id = 400;
	INSERT INTO orders VALUES (500, 'C500', 5.00, NULL);
});
is(parity(), '', 'after the repair parity is clean');
same_data($A, $B, 'after the repair');

# 3. from new_write on, the other way round
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_write', 'new_write');
$load = start_pgbench($B, 3, 3, 'rev', 40000, 10000);
sleep 0.5;
is($B->safe_psql('postgres', q{SELECT count(*) FROM softmig.remote_parity('orders', 1000)}), '0',
	'parity under load on the target database reports no difference');
like($B->safe_psql('postgres', q{SELECT softmig.remote_parity_report('orders', 1000)->'stats'->>'here'}),
	qr/^legacy$/, 'from new_write on the legacy database compares');
finish_pgbench($load);

# the legacy database changed behind softmig's back (its guard does not fire
# for session_replication_role = replica), and the target database too
$A->safe_psql('postgres', q{
	SET session_replication_role = replica;
	UPDATE legacy_orders SET cust = 'stale' WHERE id = 700;
	DELETE FROM legacy_orders WHERE id = 800;
});
$B->safe_psql('postgres', q{
	SET session_replication_role = replica;
	UPDATE orders SET customer = 'DRIFT' WHERE order_id = 900;
});
$got = parity();
@got = sort split /\n/, $got;
@want = sort { $a cmp $b } ('replication mismatch {"id": 700} cust stale/c700', 'replication missing_in_legacy {"id": 800} - -/-',
	'mapping mismatch {"id": 900} customer C900/DRIFT');
is(join("\n", @got), join("\n", @want), 'parity reports the differences planted in new_write, on both layers');

$A->stop;
$B->stop;
done_testing();
