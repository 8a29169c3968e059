# Parity's digest cache against random changes: after every step the
# comparison that may reuse the cache must list exactly what a comparison
# without it lists.
#
# Each of ITERATIONS steps makes a few random writes to either table (field
# changes, inserts, deletes, key moves, rows whose mapped key is NULL),
# half of the time under synchronous_commit = off (so a vacuum right after
# leaves pages that are not all-visible), sometimes vacuums one table or
# both (so changed pages become all-visible again with new LSNs), now and
# then repairs all differences, changes the quarantine or rewrites a third
# of a table; then it checks.  In some steps a second session holds writes
# of its own open across a check, commits or rolls them back, and the
# comparison is checked again at once (pages written by a transaction still
# in progress must never be vouched for).  The seed is printed;
# PARITY_FUZZ_SEED=<n> repeats a run.  The test also checks that the cached
# path was really taken in most checks (a full comparison follows whenever
# a quarter of a table's segments changed since the last one, or after a
# quarantine change).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $ITERATIONS = $ENV{PARITY_FUZZ_ITERATIONS} // 60;
my $SEED = $ENV{PARITY_FUZZ_SEED} // int(rand(1_000_000));
my $ROWS = 100000;
note("seed $SEED, $ITERATIONS iterations");
srand($SEED);

my $node = PostgreSQL::Test::Cluster->new('parity_cache_fuzz');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION softmig;
	CREATE TABLE pf_l (id int PRIMARY KEY, cust text NOT NULL, cents int, pad text);
	CREATE TABLE pf_t (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), pad text);
	SELECT softmig.create_migration('pf', 'pf_l', 'pf_t',
		forward  => '{"order_id": "CASE WHEN id > 0 THEN id END", "customer": "upper(cust)",
		              "amount": "cents / 100.0", "pad": "pad"}',
		backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int", "pad": "pad"}',
		options  => '{"target_key": ["order_id"]}');
	INSERT INTO pf_l SELECT g, 'c' || g, g, repeat('x', 150) FROM generate_series(1, $ROWS) g;
	INSERT INTO pf_t SELECT id, upper(cust), cents / 100.0, pad FROM pf_l;
});
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pf_l');
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pf_t');

my $next_id = $ROWS + 1;
sub rid { return 1 + int(rand($ROWS + 100)); }

# one random write, as SQL
sub random_write
{
	my $r = rand();
	my $id = rid();
	return "UPDATE pf_l SET cust = 'w' || $id WHERE id = $id" if $r < 0.15;
	return "UPDATE pf_t SET amount = amount + 1 WHERE order_id = $id" if $r < 0.30;
	return "UPDATE pf_t SET customer = upper(customer) || 'Z' WHERE order_id = $id" if $r < 0.38;
	return "DELETE FROM pf_l WHERE id = $id" if $r < 0.46;
	return "DELETE FROM pf_t WHERE order_id = $id" if $r < 0.54;
	if ($r < 0.64)
	{
		my $n = $next_id++;
		return "INSERT INTO pf_l VALUES ($n, 'c$n', $n, 'new') ON CONFLICT DO NOTHING";
	}
	if ($r < 0.72)
	{
		my $n = $next_id++;
		return "INSERT INTO pf_t VALUES ($n, 'C$n', $n / 100.0, 'new') ON CONFLICT DO NOTHING";
	}
	if ($r < 0.80)
	{
		my $n = $next_id++;
		return "UPDATE pf_l SET id = $n WHERE id = $id";    # a key move
	}
	if ($r < 0.86)
	{
		my $n = -1 - int(rand(1000));
		return "INSERT INTO pf_l VALUES ($n, 'null key', 0, 'n') ON CONFLICT DO NOTHING";
	}
	return "UPDATE pf_l SET pad = pad || 'p' WHERE id BETWEEN $id AND $id + 40";
}

my %modes;
my $agree = 0;
my $checks = 0;
my $diffs = q{SELECT coalesce(string_agg(format('%s %s %s %s %s', kind, key, field, legacy_value, target_value),
                                         '; ' ORDER BY key::text, kind, field), '')
                FROM softmig.parity('pf', 1000)};

# one check: a run that may use (and store) the cache, then a listing with
# it and one without; the listings must be the same
sub check_once
{
	my ($what) = @_;
	my $mode = $node->safe_psql('postgres', q{
		SELECT concat_ws(': ', s #>> '{cache,mode}', s #>> '{cache,why}')
		  FROM softmig.migrations m, softmig._parity_summary(m.id, 1000, 0) s
		 WHERE m.name = 'pf'});
	my $cached = $node->safe_psql('postgres', $diffs);
	my $full = $node->safe_psql('postgres', "SET softmig.parity_cache = off;\n$diffs");
	$modes{$mode}++;
	$checks++;
	if ($cached eq $full)
	{
		$agree++;
	}
	else
	{
		diag("$what (seed $SEED, mode $mode): the cached comparison disagrees\n"
			  . "cached: $cached\nfull:   $full");
	}
}

for my $i (1 .. $ITERATIONS)
{
	my @sql = map { random_write() } 1 .. (1 + int(rand(3)));
	unshift @sql, 'SET synchronous_commit = off' if rand() < 0.5;
	my $r = rand();
	if ($r < 0.03)
	{
		# repair: make the target the mapped legacy again
		push @sql, 'DELETE FROM pf_t',
		  'INSERT INTO pf_t SELECT id, upper(cust), cents / 100.0, pad FROM pf_l WHERE id > 0',
		  'DELETE FROM pf_l WHERE id <= 0';
	}
	elsif ($r < 0.06)
	{
		my $q = rid();
		push @sql, "SELECT softmig.quarantine('pf', '{\"id\": $q}', 'fuzz') WHERE NOT EXISTS (SELECT 1 FROM softmig.quarantine)",
		  "SELECT softmig.release('pf', key) FROM softmig.quarantine WHERE key <> '{\"id\": $q}'";
	}
	elsif ($r < 0.09)
	{
		push @sql, 'UPDATE pf_t SET pad = pad WHERE order_id % 3 = 0';
	}
	$node->safe_psql('postgres', join(";\n", @sql));
	my $v = rand();
	$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pf_l') if $v < 0.5;
	$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) pf_t') if $v >= 0.3 && $v < 0.8;

	if (rand() < 0.3)
	{
		# writes of a transaction left open while a check runs, then
		# committed or rolled back and checked again at once (no other write
		# or vacuum in between: only the pages' state tells what changed)
		my @held = map { random_write() } 1 .. (1 + int(rand(3)));
		my $end = rand() < 0.7 ? 'COMMIT' : 'ROLLBACK';
		my $open = $node->background_psql('postgres');

		$open->query_safe(join(";\n", 'BEGIN', @held));
		check_once("iteration $i, writes held open: " . join('; ', @sql, @held));
		$open->query_safe($end);
		$open->quit;
		check_once("iteration $i, after $end of: " . join('; ', @held));
	}
	else
	{
		check_once("iteration $i, after: " . join('; ', @sql));
	}
}
is($agree, $checks, "every comparison agreed with one without the cache (seed $SEED)");
note(join(', ', map { "$_ ($modes{$_})" } sort keys %modes));
cmp_ok($modes{warm} // 0, '>=', $checks / 2, 'the cached path was taken in at least half of the checks')
  or diag(join(', ', map { "$_ ($modes{$_})" } sort keys %modes));

$node->stop;
done_testing();
