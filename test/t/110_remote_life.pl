# The whole life of a cross-database migration, under pgbench load
# (doc/cross-database.md).
#
# Two clusters: "legacy" holds legacy_orders (20,000 rows), "target" holds
# orders.  pgbench clients write legacy_orders while the migration goes to
# mirrored (the subscription's initial synchronization, then the apply) and
# the target database backfills; then clients write both databases while
# the write authority moves at the fence (the legacy side refuses from the
# fence on, the target side until it has applied everything up to it);
# then the target database's clients write while the migration goes to
# new_read and back, and back again to mirrored (the same fence the other
# way); then forward again to cutover, and the migration is dropped.
#
# After every phase, with the load stopped and the replication caught up:
# the legacy table seen through the mapping equals the target row for row,
# the landing copy equals the legacy table, every operation a client was
# told was applied is applied exactly once (the ledger, replicated with the
# data, holds it in both databases), and the last write either side accepted
# before a switch precedes the first one the other side accepted after it
# (the same machine's clock: at no moment did both accept writes).
#
# About 40 seconds.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SoftmigTwo;
use Test::More;

my ($A, $B) = two_nodes('life');
define_orders($A, $B, 20000);
app_functions($A, $B);
my $tag = tag_of($B);

is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'legacy', 'defined in state legacy');
is($A->safe_psql('postgres', q{SELECT state FROM softmig.remote_migrations WHERE name = 'orders'}),
	'legacy', 'the legacy database knows the migration');
is($B->safe_psql('postgres', q{SELECT count(*) FROM legacy_orders}), '0', 'the landing copy starts empty');

# A split or a merge moves as one group, which a cross-database migration
# cannot join: neither side of one is refused late, both are refused at once.
is(sqlstate_of($B, q{SELECT softmig.create_migration('orders_attr', 'legacy_orders', 'orders',
	options => '{"attribute_of": "orders"}')}), '0A000', 'a cross-database migration owns no split or merge');
is(sqlstate_of($B, q{SELECT softmig.create_remote_migration('orders_attr', 'legacy_orders', 'orders',
	'host=/nowhere', 'host=/nowhere', options => '{"attribute_of": "orders"}')}), '0A000',
	'a cross-database migration is no attribute member');

# The operation ledger that travels with the data: the same keys in both
# databases, each one an operation a client was told was applied; every
# applied operation has its key there, except those applied before the
# migration left legacy (nothing claims keys then).
sub ledger_complete
{
	my ($what) = @_;
	my %ledger;
	for my $n ($A, $B)
	{
		$ledger{ $n->name } = [ sort split /\n/,
			$n->safe_psql('postgres', q{SELECT key FROM softmig.remote_operations WHERE migration = 'orders'}) ];
	}
	my @la = @{ $ledger{ $A->name } };
	my @lb = @{ $ledger{ $B->name } };
	is(scalar(@lb), scalar(@la), "$what: both databases hold the same number of ledger keys (" . scalar(@la) . ')');
	is(join(',', @lb), join(',', @la), "$what: both databases hold the same ledger keys");
	my %applied = map { $_ => 1 } map { split /\n/, $_->safe_psql('postgres', q{SELECT op FROM app_log WHERE outcome = 'applied'}) } ($A, $B);
	my %in_ledger = map { $_ => 1 } @la;
	my @stray = grep { !$applied{$_} } @la;
	my @missing = grep { !$in_ledger{$_} && !/^mirror:/ } sort keys %applied;
	is(scalar(@stray), 0, "$what: every ledger key is an applied operation") or diag("@stray[0..4]");
	is(scalar(@missing), 0, "$what: every operation applied since mirroring began is in the ledger") or diag("@missing[0..4]");
	return;
}

# 1. legacy -> mirrored under load on the legacy database, then the backfill
my $pa = start_pgbench($A, 4, 3, 'mirror');
sleep 1;
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'mirrored', 'advanced to mirrored under load');
is($A->safe_psql('postgres', q{SELECT state FROM softmig.remote_migrations WHERE name = 'orders'}), 'mirrored',
	'the legacy database is mirrored too');
finish_pgbench($pa);
wait_forward($A, $B);
$B->safe_psql('postgres', q{CALL softmig.backfill('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.status('orders')->>'backfill_done'}), 'true', 'backfill done');
same_data($A, $B, 'mirrored');
is($B->safe_psql('postgres', q{SELECT count(*) FROM softmig.parity('orders')}), '0',
	'parity of the landing copy and the target is clean');
like($B->safe_psql('postgres', q{SELECT softmig.status('orders')->'remote'->'subscription'->>'tables'}),
	qr/"public.legacy_orders": "ready"/, 'status shows the synchronization ready');

# writes refused where they do not belong
is(sqlstate_of($B, q{INSERT INTO orders VALUES (900001, 'X', 1, NULL)}), 'SM001', 'the target refuses writes in mirrored');
is(sqlstate_of($B, q{INSERT INTO legacy_orders VALUES (900001, 'x', 1)}), 'SM001', 'the landing copy refuses local writes');
is(sqlstate_of($A, q{TRUNCATE legacy_orders}), 'SM001', 'the legacy table refuses TRUNCATE');
is(sqlstate_of($B, q{SELECT softmig.advance('orders')}), '55000', 'a local advance of a cross-database migration is refused');

# Is $first (a timestamp) after $last?  Both must be there: a phase whose load
# ended before the step it surrounds proves nothing.
sub precedes
{
	my ($last, $first, $what) = @_;
	ok($last ne '' && $first ne '', "both databases applied writes during the $what phase")
	  or return;
	ok($A->safe_psql('postgres', "SELECT '$last'::timestamptz < '$first'::timestamptz") eq 't',
		"$what: the last write of the database that gave up authority ($last) precedes the first of the one that took it ($first)");
	return;
}

# 2. the switch under load on both databases (the loads last long enough
# for the switch to finish inside them on a slow machine)
$pa = start_pgbench($A, 10, 3, 'switchA');
my $pb = start_pgbench($B, 10, 3, 'switchB');
writing($A, 'switchA');
writing($B, 'switchB');
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders', reason => 'service live')});
finish_pgbench($pa);
finish_pgbench($pb);
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_write', 'switched to new_write');
is($A->safe_psql('postgres', q{SELECT state || ' ' || fenced FROM softmig.remote_migrations}), 'new_write false',
	'the legacy database knows it');
my $lastA = $A->safe_psql('postgres', q{SELECT max(at) FROM app_log WHERE op LIKE 'switchA:%' AND outcome = 'applied'});
my $firstB = $B->safe_psql('postgres', q{SELECT min(at) FROM app_log WHERE op LIKE 'switchB:%' AND outcome = 'applied'});
precedes($lastA, $firstB, 'switch');
ok($A->safe_psql('postgres', q{SELECT count(*) > 0 FROM app_log WHERE op LIKE 'switchA:%' AND outcome = 'refused'}) eq 't',
	'the legacy database refused writes after the fence');
ok($B->safe_psql('postgres', q{SELECT count(*) > 0 FROM app_log WHERE op LIKE 'switchB:%' AND outcome = 'refused'}) eq 't',
	'the target refused writes before it took over');
wait_reverse($A, $B);
same_data($A, $B, 'new_write');
ledger_complete('new_write');

# 3. new_read and back, then the way back to mirrored under load
$pb = start_pgbench($B, 4, 3, 'newread');
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_read', 'new_read');
$B->safe_psql('postgres', q{CALL softmig.remote_rollback('orders', 'back to new_write')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_write', 'back to new_write');
finish_pgbench($pb);
$pa = start_pgbench($A, 10, 3, 'backA');
$pb = start_pgbench($B, 10, 3, 'backB');
writing($A, 'backA');
writing($B, 'backB');
$B->safe_psql('postgres', q{CALL softmig.remote_rollback('orders', 'practise the way back')});
finish_pgbench($pa);
finish_pgbench($pb);
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'mirrored', 'rolled back to mirrored under load');
my $lastB = $B->safe_psql('postgres', q{SELECT max(at) FROM app_log WHERE op LIKE 'backB:%' AND outcome = 'applied'});
my $firstA = $A->safe_psql('postgres', q{SELECT min(at) FROM app_log WHERE op LIKE 'backA:%' AND outcome = 'applied'});
precedes($lastB, $firstA, 'rollback');
wait_forward($A, $B);
same_data($A, $B, 'mirrored again');
ledger_complete('mirrored again');
is($B->safe_psql('postgres', q{SELECT slot_name FROM pg_replication_slots}), '',
	'the target database keeps no slot while legacy is the authority');
is($A->safe_psql('postgres', q{SELECT slot_name FROM pg_replication_slots}), "${tag}_fwd",
	'the legacy database keeps the forward slot only');

# 4. forward again, under load, to cutover
$pa = start_pgbench($A, 3, 2, 'againA');
sleep 1;
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
finish_pgbench($pa);
$pb = start_pgbench($B, 3, 2, 'againB');
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
finish_pgbench($pb);
wait_reverse($A, $B);
same_data($A, $B, 'new_read');
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders', force => true, reason => 'readers moved')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'cutover', 'cutover');
is($A->safe_psql('postgres', q{SELECT state FROM softmig.remote_migrations}), 'cutover', 'the legacy database knows it');
is(sqlstate_of($A, q{UPDATE legacy_orders SET cust = 'late' WHERE id = 1}), 'SM001', 'the legacy table is frozen');
is($A->safe_psql('postgres', q{SELECT count(*) FROM pg_subscription}), '0', 'the legacy database no longer subscribes');
is($B->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots}), '0', 'and the target database keeps no slot');
like($B->safe_psql('postgres', q{SELECT string_agg(action, ' ' ORDER BY at) FROM softmig.history('orders')}),
	qr/remote_advance_begin.*advance remote_advance_done/, 'history records each state change and its steps');

# the end: drop both sides
$B->safe_psql('postgres', q{SELECT softmig.drop_remote_migration('orders')});
is($A->safe_psql('postgres', q{SELECT count(*) FROM softmig.remote_migrations}) . '/'
	  . $A->safe_psql('postgres', q{SELECT count(*) FROM pg_publication}) . '/'
	  . $A->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots}),
	'0/0/0', 'the legacy database is clean');
is($B->safe_psql('postgres', q{SELECT count(*) FROM softmig.remote_migrations}) . '/'
	  . $B->safe_psql('postgres', q{SELECT count(*) FROM softmig.migrations}) . '/'
	  . $B->safe_psql('postgres', q{SELECT count(*) FROM pg_subscription}),
	'0/0/0', 'the target database is clean');

$A->stop;
$B->stop;
done_testing();
