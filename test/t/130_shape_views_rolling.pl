# Rolling deploy through shape views (issue 20).
#
# Two application "builds" run pgbench at once, each with its own
# search_path: the old one writes legacy's shape (app_v1.legacy_o), the new
# one the target's (app_v2.target_o), both through the views made by
# softmig.create_shape_views, with keyless INSERTs, UPDATEs and DELETEs.
# Under that load the migration goes mirrored -> new_write -> mirrored ->
# new_write -> new_read; then the load stops, and both tables must be equal
# through the mapping (softmig.parity finds nothing).  Then cutover, and both
# builds run again: the legacy-shaped view keeps writing, to the target.
# Every pgbench run must end with zero failed transactions and no aborted
# client: no write through a shape view fails because of the state.
#
# Both tables draw keys from one sequence, so keyless inserts through either
# view never collide whichever table is the authority.
#
# Knobs: SOFTMIG_SHAPE_SECONDS (default 12: the run with the switches),
# SOFTMIG_SHAPE_CLIENTS (default 2 per build).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $seconds = $ENV{SOFTMIG_SHAPE_SECONDS} // 12;
my $clients = $ENV{SOFTMIG_SHAPE_CLIENTS} // 2;

my $node = PostgreSQL::Test::Cluster->new('shape_views');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
synchronous_commit = off
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION softmig;
	CREATE SEQUENCE order_ids;
	CREATE TABLE legacy_o (id bigint PRIMARY KEY DEFAULT nextval('order_ids'),
	                       cust text NOT NULL, amount_cents int NOT NULL);
	CREATE TABLE target_o (order_id bigint PRIMARY KEY DEFAULT nextval('order_ids'),
	                       customer text NOT NULL, amount numeric(12,2) NOT NULL);
	INSERT INTO legacy_o (cust, amount_cents) SELECT 'c' || g, g FROM generate_series(1, 500) g;
	SELECT softmig.create_migration('m', 'legacy_o', 'target_o',
	    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
	    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
	CREATE SCHEMA app_v1;
	CREATE SCHEMA app_v2;
	SELECT softmig.create_shape_views('m', 'app_v1', 'app_v2');
	SELECT softmig.advance('m');
	CALL softmig.backfill('m');
});

my $dir = $PostgreSQL::Test::Utils::tmp_check;
my %scripts = (
	v1_ins => "INSERT INTO legacy_o (cust, amount_cents) VALUES ('old', 1);\n",
	v1_upd => "\\set id random(1, 700)\nUPDATE legacy_o SET amount_cents = amount_cents + 1 WHERE id = :id;\n",
	v1_del => "\\set id random(1, 700)\nDELETE FROM legacy_o WHERE id = :id;\n",
	v2_ins => "INSERT INTO target_o (customer, amount) VALUES ('NEW', 0.02);\n",
	v2_upd => "\\set id random(1, 700)\nUPDATE target_o SET amount = amount + 0.01 WHERE order_id = :id;\n",
	v2_del => "\\set id random(1, 700)\nDELETE FROM target_o WHERE order_id = :id;\n",);
for my $name (keys %scripts)
{
	open(my $fh, '>', "$dir/shape_$name.pgbench") or die "cannot write $name: $!";
	print $fh $scripts{$name};
	close($fh);
}

# one build: pgbench on its own search_path, its view's table unqualified
sub start_build
{
	my ($build, $secs, $out, $err) = @_;
	local $ENV{PGOPTIONS} = "-c search_path=app_$build,public";
	return IPC::Run::start(
		[
			'pgbench', '-n', '-M', 'prepared', '-c', $clients, '-j', $clients,
			'-T', $secs,
			'-f', "$dir/shape_${build}_ins.pgbench\@4",
			'-f', "$dir/shape_${build}_upd.pgbench\@5",
			'-f', "$dir/shape_${build}_del.pgbench\@1",
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', $out, '2>', $err);
}

# a state change under load; one that cannot get its locks within
# lock_timeout (55P03) changes nothing and is retried
sub switch_under_load
{
	my ($sql, $what) = @_;
	for my $try (1 .. 30)
	{
		my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
		return pass("$what under load") if $ret == 0;
		if ($stderr !~ /could not lock tables/)
		{
			fail($what);
			diag($stderr);
			return;
		}
		sleep(0.2);
	}
	fail("$what: tables never lockable");
}

sub check_build
{
	my ($build, $h, $out, $err, $phase) = @_;
	$h->finish;
	is($h->result(0), 0, "$phase: build $build: pgbench exited 0")
	  or diag($$err);
	like($$out, qr/number of failed transactions: 0 /,
		"$phase: build $build: zero failed transactions");
	my ($n) = $$out =~ /number of transactions actually processed: (\d+)/;
	ok(defined $n && $n > 0, "$phase: build $build: transactions ran")
	  or diag($$out);
	unlike($$err, qr/ERROR|aborted/, "$phase: build $build: no client error");
}

my ($o1, $e1, $o2, $e2) = ('', '', '', '');
my $v1 = start_build('v1', $seconds, \$o1, \$e1);
my $v2 = start_build('v2', $seconds, \$o2, \$e2);
my $step = $seconds / 6;
sleep($step);
switch_under_load("SELECT softmig.advance('m', 'new_write', reason => 'deploy', force => true)",
	'mirrored -> new_write');
sleep($step);
switch_under_load("SELECT softmig.rollback('m', 'deploy rehearsal')",
	'new_write -> mirrored');
sleep($step);
switch_under_load("SELECT softmig.advance('m', 'new_write', reason => 'deploy', force => true)",
	'mirrored -> new_write again');
sleep($step);
switch_under_load("SELECT softmig.advance('m', 'new_read', reason => 'deploy', force => true)",
	'new_write -> new_read');
check_build('v1', $v1, \$o1, \$e1, 'switches');
check_build('v2', $v2, \$o2, \$e2, 'switches');

is($node->safe_psql('postgres', "SELECT softmig.state('m')"), 'new_read', 'state new_read');
is($node->safe_psql('postgres', "SELECT count(*) FROM softmig.parity('m')"),
	'0', 'both tables equal through the mapping (parity)');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
	  (SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2) FROM legacy_o
	   EXCEPT SELECT order_id, customer, amount FROM target_o)
	  UNION ALL
	  (SELECT order_id, customer, amount FROM target_o
	   EXCEPT SELECT id, upper(cust), (amount_cents / 100.0)::numeric(12,2) FROM legacy_o)) d}),
	'0',
	'legacy = target mapped, row by row');
my $both = $node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE customer = 'OLD') > 0 AND count(*) FILTER (WHERE customer = 'NEW') > 0 FROM target_o");
is($both, 't', 'rows inserted by both builds arrived');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM softmig.history_log WHERE action IN ('advance', 'rollback')"),
	'5',
	'five state changes recorded');

# cutover: the last old instances drain through the legacy-shaped view
$node->safe_psql('postgres',
	"SELECT softmig.advance('m', reason => 'deploy done', force => true)");
my $before = $node->safe_psql('postgres', "SELECT count(*) FROM target_o WHERE customer = 'OLD'");
($o1, $e1, $o2, $e2) = ('', '', '', '');
$v1 = start_build('v1', 2, \$o1, \$e1);
$v2 = start_build('v2', 2, \$o2, \$e2);
check_build('v1', $v1, \$o1, \$e1, 'cutover');
check_build('v2', $v2, \$o2, \$e2, 'cutover');
ok( $node->safe_psql('postgres', "SELECT count(*) FROM target_o WHERE customer = 'OLD'") > $before,
	'after cutover the old build still writes, to the target');

$node->stop;
done_testing();
