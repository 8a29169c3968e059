# Partitions that pg_partman creates during mirrored: both tables of a
# migration are partitioned by id and managed by pg_partman (native
# partitioning, Debian's postgresql-15-partman).  Its maintenance run creates
# new partitions while the migration mirrors; softmig gives them its
# triggers as they are attached, so every row written to them, through the
# parent or straight into the partition, reaches the target, and the new
# target partitions refuse direct writes.  Partitions with rows cannot be
# dropped by a retention run while mirroring.
#
# pg_partman must be installed in the server under test; test/run_all.sh
# installs it (and sets SOFTMIG_REQUIRE_PARTMAN=1, so a missing extension
# fails the test instead of skipping it).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('partman');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;

my $have = $node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'});
if ($have ne '1')
{
	if ($ENV{SOFTMIG_REQUIRE_PARTMAN})
	{
		fail('pg_partman is installed in the server under test');
		done_testing();
		exit;
	}
	plan skip_all => 'pg_partman is not installed (Debian: postgresql-15-partman)';
}

sub sql { return $node->safe_psql('postgres', shift); }

# pg_partman 4 (Debian 12) names the partitioning type before the interval
# ('native'); pg_partman 5 (Debian 13 and later) has native range
# partitioning only and takes the interval third
my $partman_major = sql(q{SELECT split_part(default_version, '.', 1) FROM pg_available_extensions WHERE name = 'pg_partman'});
my $native = $partman_major < 5 ? q{'native', } : '';

sql(qq{
	CREATE SCHEMA partman;
	CREATE EXTENSION pg_partman SCHEMA partman;
	CREATE EXTENSION softmig;
	CREATE TABLE public.orders_legacy (id bigint NOT NULL, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
	CREATE TABLE public.orders (id bigint NOT NULL, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
	SELECT partman.create_parent('public.orders_legacy', 'id', ${native}'10', p_premake => 1, p_start_partition => '0');
	SELECT partman.create_parent('public.orders', 'id', ${native}'10', p_premake => 1, p_start_partition => '0');
	INSERT INTO orders_legacy SELECT g, 'before' FROM generate_series(0, 9) g;
	SELECT softmig.create_migration('orders', 'orders_legacy', 'orders');
	SELECT softmig.advance('orders');
	CALL softmig.backfill('orders');
});
my $parts_at_advance = sql(q{SELECT (SELECT count(*) FROM pg_partition_tree('orders_legacy'))
                                   + (SELECT count(*) FROM pg_partition_tree('orders'))});

# the partitions pg_partman made before mirroring began
my $before = sql(q{SELECT count(*) FROM pg_partition_tree('orders_legacy') WHERE isleaf});
ok($before >= 2, "pg_partman made $before partitions of the legacy table before mirroring");

# writes fill the premade partitions; each maintenance run then makes new
# ones, ahead of the highest id, on both tables, while the migration mirrors
my $runs = 0;
for my $step (1 .. 4)
{
	my $lo = $step * 10;
	my $hi = $lo + 9;
	sql(qq{INSERT INTO orders_legacy SELECT g, 'through the parent' FROM generate_series($lo, $hi) g});
	sql(q{SELECT partman.run_maintenance()});
	$runs++;
}
my $after = sql(q{SELECT count(*) FROM pg_partition_tree('orders_legacy') WHERE isleaf});
ok($after > $before + 2, "the maintenance runs made new legacy partitions ($before -> $after)");
is(sql(q{SELECT softmig.state('orders'::text)}), 'mirrored', 'the migration mirrored throughout');

# every partition of both tables carries softmig's four triggers, enabled
is( sql(q{
		SELECT count(*) FROM softmig._tables((SELECT id FROM softmig.migrations WHERE name = 'orders')) r
		 WHERE (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = r AND t.tgname ~ '^softmig_[0-9]+_'
		           AND t.tgenabled = 'O') <> 4}),
	'0', 'every partition pg_partman made carries softmig\'s triggers');
is(sql(q{SELECT softmig.status('orders')->'triggers'->>'healthy'}), 'true', 'status reports the triggers healthy');
is(sql(q{SELECT count(*) FROM softmig.history('orders') WHERE action = 'partition_added'}),
	sql(q{SELECT (SELECT count(*) FROM pg_partition_tree('orders_legacy'))
	           + (SELECT count(*) FROM pg_partition_tree('orders'))}) - $parts_at_advance,
	'history records each partition added during mirrored');

# direct writes to the newest legacy partition are mirrored: insert, update,
# delete, COPY
my $max = sql(q{SELECT max(id) FROM orders_legacy}) + 1;
my ($part) = sql(qq{SELECT relname FROM pg_class WHERE relname IN (SELECT c.relname FROM pg_partition_tree('orders_legacy') p JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf AND pg_get_expr(c.relpartbound, c.oid) LIKE '%FROM (''$max'')%')});
ok(defined $part && $part ne '', "a premade partition for id $max exists ($part)");
sql(qq{INSERT INTO $part VALUES ($max, 'straight into the partition'), ($max + 1, 'straight too')});
sql(qq{UPDATE $part SET v = 'updated in the partition' WHERE id = $max});
sql(qq{DELETE FROM $part WHERE id = $max + 1});
sql(qq{COPY $part FROM PROGRAM 'printf "%s\\tcopied\\n" } . ($max + 2) . qq{'});
is(sql(qq{SELECT v FROM orders WHERE id = $max}), 'updated in the partition', 'a direct write to the new partition reached the target');

# the new target partitions refuse direct writes
my ($tpart) = sql(qq{SELECT relname FROM pg_class WHERE relname IN (SELECT c.relname FROM pg_partition_tree('orders') p JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf AND pg_get_expr(c.relpartbound, c.oid) LIKE '%FROM (''$max'')%')});
my ($ret, $out, $err) = $node->psql('postgres', qq{INSERT INTO $tpart VALUES ($max + 5, 'no')});
like($err, qr/refused: migration "orders" is in state mirrored/, "a direct write to the new target partition $tpart is refused");

# every row written reaches the target
is( sql(q{
		SELECT count(*) FROM ((SELECT * FROM orders_legacy EXCEPT SELECT * FROM orders)
		                      UNION ALL (SELECT * FROM orders EXCEPT SELECT * FROM orders_legacy)) d}),
	'0', 'both tables hold the same rows');
is(sql(q{SELECT count(*) FROM softmig.parity('orders')}), '0', 'parity finds no difference');

# a retention run that would drop partitions holding rows is refused while
# mirroring (the rows would vanish from one table only)
sql(q{UPDATE partman.part_config SET retention = '20', retention_keep_table = false
       WHERE parent_table = 'public.orders_legacy'});
($ret, $out, $err) = $node->psql('postgres', q{SELECT partman.run_maintenance('public.orders_legacy')});
like($err, qr/(cannot drop partition|cannot detach table) .*: it holds rows/,
	'pg_partman retention cannot drop a partition with rows while mirroring');
is( sql(q{
		SELECT count(*) FROM ((SELECT * FROM orders_legacy EXCEPT SELECT * FROM orders)
		                      UNION ALL (SELECT * FROM orders EXCEPT SELECT * FROM orders_legacy)) d}),
	'0', 'still the same rows on both sides');

$node->stop;
done_testing();
