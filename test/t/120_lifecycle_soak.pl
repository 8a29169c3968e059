# The lifecycle soak, short: test/soak/lifecycle.pl for about a minute
# against a node of its own (concurrent writers of every kind on both
# tables of two migrations, a controller walking the states forward and
# back with backfill, parity, quarantine, shadow writes and DDL, a plain-SQL
# oracle at every quiet point; see test/soak/README.md), then a short run
# that corrupts one row on purpose, which the oracle must report.
#
# Knobs: SOAK_TAP_SECONDS (default 60) and SOAK_SEED (default random; the
# seed is printed, and the soak's output is shown when it fails).
use strict;
use warnings;

use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $soak = dirname(__FILE__) . '/../soak/lifecycle.pl';
my $seconds = $ENV{SOAK_TAP_SECONDS} // 60;
my $seed = $ENV{SOAK_SEED} // int(rand(1000000));

my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'softmig'
max_connections = 40
log_line_prefix = '%m [%p] %e %a '
log_min_messages = warning
});
$node->start;

# runs the soak against the node; returns (exit status, output)
sub soak
{
	my (%env) = @_;
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	local $ENV{PGUSER} = 'postgres';
	local $ENV{PGDATABASE} = 'postgres';
	local $ENV{SOAK_SERVER_LOG} = $node->logfile;
	local @ENV{ keys %env } = values %env;
	my $out = '';
	IPC::Run::run([ $^X, $soak ], '>&', \$out);
	return ($? >> 8, $out);
}

note "lifecycle soak: seed $seed, $seconds s";
my ($rc, $out) = soak(
	SOAK_SECONDS => $seconds,
	SOAK_SEED => $seed,
	SOAK_ROWS => 5000,
	SOAK_CLIENTS => 3,
	SOAK_CHECK_EVERY => 6,
	SOAK_STATEMENT_TIMEOUT => '120s');
my ($summary) = $out =~ /(=+ softmig lifecycle soak summary.*)/s;
is($rc, 0, "the lifecycle soak found nothing (seed $seed)") or diag($out);
like($out, qr/^RESULT: PASS$/m, 'it says PASS');
my ($compared) = $out =~ /acct compared (\d+) times/;
cmp_ok($compared // 0, '>=', 2, 'it compared both tables of acct at quiet points');
my ($changes) = $out =~ /(\d+) state changes/;
cmp_ok($changes // 0, '>=', 1, 'the controller changed states');
my ($ops) = $out =~ /(\d+) operations committed/;
cmp_ok($ops // 0, '>', 100, 'the clients committed operations');
note $summary // $out;

# the oracle can fail: one projection row changed by an override, not
# quarantined, must be reported at the next quiet point (a database of
# its own; the roles are made afresh)
$node->safe_psql('postgres', 'DROP DATABASE softmig_lifecycle');
($rc, $out) = soak(
	SOAK_SECONDS => 20,
	SOAK_SEED => $seed,
	SOAK_ROWS => 2000,
	SOAK_CLIENTS => 2,
	SOAK_CHECK_EVERY => 30,
	SOAK_SABOTAGE => 1,
	SOAK_DATABASE => 'softmig_sabotage');
is($rc, 1, 'a run with one corrupted row fails') or diag($out);
like($out, qr/SABOTAGE.*\n(?:.*\n)*?.*FINDING: .*rows differ through the mapping/,
	'the quiet point after the sabotage reports the difference');

$node->stop;
done_testing();
