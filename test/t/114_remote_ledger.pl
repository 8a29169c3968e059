# One operation-key ledger across two databases (doc/cross-database.md,
# "One ledger").
#
# A retry of an applied operation is refused as already applied (23505 of
# the key) whichever database it reaches: the write authority refuses it
# through the ledger, and the database that is not the write authority
# refuses it the same way, before its refusal for want of authority
# (SM001), when the key is in its copy of the ledger (replicated with the
# data).  A new key reaching the database that is not the write authority
# is still refused with SM001.  Checked in mirrored, after the switch to
# new_write and after the rollback, for keys applied on either side.
#
# About 15 seconds.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SoftmigTwo;
use Test::More;

my ($A, $B) = two_nodes('ledger');
define_orders($A, $B, 100);
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
wait_forward($A, $B);
$B->safe_psql('postgres', q{CALL softmig.backfill('orders')});

# one operation under its key on the legacy (A) or target (B) database
sub write_on
{
	my ($node, $key, $id) = @_;
	my $sql = $node == $A
	  ? "INSERT INTO legacy_orders VALUES ($id, 'k$id', $id)"
	  : "INSERT INTO orders VALUES ($id, 'K$id', $id / 100.0, NULL)";
	return sqlstate_of($node, "BEGIN; SET LOCAL softmig.operation_key = '$key'; $sql; COMMIT;");
}

# mirrored: the legacy database is the write authority
is(write_on($A, 'k1', 1001), 'ok', 'mirrored: k1 applied in the legacy database');
wait_forward($A, $B);
is(write_on($A, 'k1', 1002), '23505', 'mirrored: k1 retried in the legacy database is refused as applied');
is(write_on($B, 'k1', 1002), '23505', 'mirrored: k1 retried in the target database is refused as applied too');
is(write_on($B, 'k0', 1003), 'SM001', 'mirrored: a new key in the target database is refused for want of authority');

# new_write: the target database is the write authority
$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_write', 'switched to new_write');
is(write_on($A, 'k1', 1004), '23505', 'new_write: k1 (applied before the switch) retried in the legacy database is refused as applied');
is(write_on($B, 'k1', 1004), '23505', 'new_write: and in the target database');
is(write_on($B, 'k2', 1005), 'ok', 'new_write: k2 applied in the target database');
wait_reverse($A, $B);
is(write_on($A, 'k2', 1006), '23505', 'new_write: k2 retried in the legacy database is refused as applied');
is(write_on($B, 'k2', 1006), '23505', 'new_write: and in the target database');
is(write_on($A, 'k3', 1007), 'SM001', 'new_write: a new key in the legacy database is refused for want of authority');

# back to mirrored
$B->safe_psql('postgres', q{CALL softmig.remote_rollback('orders', 'ledger test')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'mirrored', 'rolled back to mirrored');
is(write_on($B, 'k2', 1008), '23505', 'mirrored again: k2 (applied in the target database) retried there is refused as applied');
is(write_on($A, 'k2', 1008), '23505', 'mirrored again: and in the legacy database');
is(write_on($B, 'k3', 1009), 'SM001', 'mirrored again: a new key in the target database is refused for want of authority');
is(write_on($A, 'k3', 1009), 'ok', 'mirrored again: and applied in the legacy database');
wait_forward($A, $B);
same_data($A, $B, 'at the end');
is($A->safe_psql('postgres', q{SELECT string_agg(key, ',' ORDER BY key) FROM softmig.remote_operations}),
	'k1,k2,k3', 'the ledger of the legacy database holds the three applied keys');
is($B->safe_psql('postgres', q{SELECT string_agg(key, ',' ORDER BY key) FROM softmig.remote_operations}),
	'k1,k2,k3', 'and so does the one of the target database');

$A->stop;
$B->stop;
done_testing();
