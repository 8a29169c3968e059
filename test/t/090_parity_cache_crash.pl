# Parity's digest cache across a restart and a crash.
#
# The cache is a table, and what it vouches for rests on page LSNs and the
# all-visible flag, both WAL-logged: after crash recovery a change made
# before the crash must still be found, whether or not a VACUUM made its page
# all-visible again, and an unchanged table must still reuse the cache.
#
#   (a) clean restart: the stored digests are reused (nothing stale);
#   (b) a legacy row changed and vacuumed, a target row changed (no vacuum),
#       then $node->stop('immediate') before any checkpoint: after recovery
#       the next comparison reuses the cache and reports exactly those two
#       differences, the same as a comparison without the cache.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('parity_cache_crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
autovacuum = off
checkpoint_timeout = 1h
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION softmig;
	CREATE TABLE pc_l (id int PRIMARY KEY, cust text NOT NULL, pad text);
	CREATE TABLE pc_t (id int PRIMARY KEY, cust text NOT NULL, pad text);
	SELECT softmig.create_migration('pc', 'pc_l', 'pc_t',
		forward  => '{"cust": "upper(cust)", "pad": "pad"}',
		backward => '{"cust": "lower(cust)", "pad": "pad"}');
	INSERT INTO pc_l SELECT g, 'c' || g, repeat('x', 180) FROM generate_series(1, 40000) g;
	INSERT INTO pc_t SELECT id, upper(cust), pad FROM pc_l;
});
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pc_l');
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pc_t');

# mode, stale segments (legacy, target), differences of one comparison
sub run_parity
{
	return $node->safe_psql('postgres', q{
		SELECT s #>> '{cache,mode}', s #>> '{cache,stale_segments,0}', s #>> '{cache,stale_segments,1}',
		       (s ->> 'missing_in_target')::int + (s ->> 'missing_in_legacy')::int + (s ->> 'mismatch')::int
		  FROM softmig.migrations m, softmig._parity_summary(m.id, 1000, 0) s WHERE m.name = 'pc'});
}

is(run_parity(), 'full|0|0|0', 'the first comparison reads everything and stores the cache');
is(run_parity(), 'warm|0|0|0', 'the second reuses it');

# (a) clean restart
$node->restart;
is(run_parity(), 'warm|0|0|0', 'after a restart the cache is reused, nothing is stale');

# (b) changes, then a crash before any checkpoint
$node->safe_psql('postgres', q{UPDATE pc_l SET cust = 'changed' WHERE id = 12345});
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pc_l');
$node->safe_psql('postgres', q{UPDATE pc_t SET cust = 'CHANGED TOO' WHERE id = 23456});
$node->stop('immediate');
$node->start;

my ($mode, $stale_l, $stale_t, $diffs) = split /\|/, run_parity();
is($mode, 'warm', 'after crash recovery the cache is reused');
ok($stale_l > 0 && $stale_t > 0, 'the changed segments of both tables are stale (legacy vacuumed, target not)');
is($diffs, 2, 'both changes made before the crash are reported');
is($node->safe_psql('postgres', q{
		SELECT string_agg(format('%s %s %s %s', key, field, legacy_value, target_value), '; ' ORDER BY key::text)
		  FROM softmig.parity('pc', 1000)}),
	'{"id": 12345} cust CHANGED C12345; {"id": 23456} cust C23456 CHANGED TOO',
	'parity lists exactly those differences');
is($node->safe_psql('postgres', q{
		SET softmig.parity_cache = off;
		SELECT count(*) FROM softmig.parity('pc', 1000)}),
	'2', 'a comparison without the cache agrees');

$node->stop;
done_testing();
