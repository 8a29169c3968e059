# The monitoring a DBA runs, end to end with the real tools: a throwaway
# cluster with two migrations, Debian's prometheus-postgres-exporter with
# monitoring/postgres_exporter.yaml connected as a role that has CONNECT and
# pg_monitor and nothing else, and Debian's Prometheus scraping it every
# second with monitoring/prometheus_rules.yaml loaded, both on free
# 127.0.0.1 ports with a temporary data directory.
#
#   - "accounts" is backfilled and then gets a parity difference planted (a
#     recorded manual write to the target): SoftmigParityDifferences fires.
#   - "orders" is mirrored, its backfill copied three batches and stopped
#     20 minutes ago (the checkpoint is dated back: waiting is no option in a
#     test): SoftmigBackfillStalled fires, and the rows its backfill has not
#     copied yet are not reported as parity drift.
#   - a write a transition rule in observe mode would refuse:
#     SoftmigTransitionRuleViolations fires.
#   - the exporter's output passes promtool check metrics (naming
#     conventions) and has every metric the query file declares;
#   - every expression of monitoring/grafana_dashboard.json, with Grafana's
#     variables as Grafana fills them ("All"), returns data through
#     Prometheus's HTTP API, and so do the variables' label queries.
# Both services are stopped when the test ends, however it ends.
use strict;
use warnings;

use Cwd qw(abs_path);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $root = abs_path($ENV{TESTDIR} // '.');
my @services;    # IPC::Run harnesses, stopped in END whatever happens

sub stop_services
{
	for my $h (@services)
	{
		eval { $h->kill_kill(grace => 5) if $h->pumpable; 1 } or eval { $h->kill_kill };
	}
	@services = ();
}
END { stop_services(); }
$SIG{INT} = $SIG{TERM} = sub { stop_services(); die "interrupted\n"; };

my $tmp = PostgreSQL::Test::Utils::tempdir('monitoring');

################################################################ the cluster
my $node = PostgreSQL::Test::Cluster->new('monitoring');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return $node->safe_psql('app', "SET softmig.discovery = off;\n" . $_[0]); }

sql(q{
CREATE EXTENSION softmig;
-- the exporter's role: CONNECT on the database and pg_monitor, nothing else
CREATE ROLE softmig_exporter LOGIN;
GRANT pg_monitor TO softmig_exporter;
REVOKE CONNECT ON DATABASE app FROM PUBLIC;
GRANT CONNECT ON DATABASE app TO softmig_exporter;

CREATE TABLE legacy_accounts (id int PRIMARY KEY, email text NOT NULL);
CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL);
INSERT INTO legacy_accounts SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 500) g;
SELECT softmig.create_migration('accounts', 'legacy_accounts', 'accounts',
    forward => '{"email": "lower(email)"}', backward => '{"email": "email"}');
SELECT softmig.advance('accounts');

CREATE TABLE legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL,
                            status text NOT NULL DEFAULT 'pending');
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
                     status text NOT NULL, gift_note text);
INSERT INTO legacy_orders SELECT g, 'c' || g, g, 'pending' FROM generate_series(1, 20000) g;
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}',
    new_only => '{gift_note}');
SELECT softmig.add_invariant('orders', 'no negative amounts', 'SELECT order_id FROM public.orders WHERE amount < 0');
SELECT softmig.set_option('orders', 'transition_rules', '"observe"');
SELECT softmig.add_transition_rule('orders', 'legacy_orders', 'status', 'pending', 'paid');
SELECT softmig.register_reader('orders', 'billing', 'consistency', 'g1');
SELECT softmig.advance('orders');
});
sql(q{CALL softmig.backfill('accounts')});
sql(q{CALL softmig.backfill('orders', batch_size => 1000, max_batches => 3)});
sql(q{
-- planted problems: a hand edit of the target, a backfill that stopped 20
-- minutes ago, an edge no transition rule allows
BEGIN;
SET LOCAL softmig.override = 'planted by the monitoring test';
UPDATE accounts SET email = 'someone@else.example' WHERE id = 42;
COMMIT;
UPDATE softmig.backfill_progress
   SET progressed_at = now() - interval '20 minutes', batch_ended_at = now() - interval '20 minutes',
       updated_at = now() - interval '20 minutes'
 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'orders');
UPDATE legacy_orders SET status = 'shipped' WHERE id = 20000;
});
# readers: a registered one and one nobody registered
for my $app (qw(billing reporting))
{
	local $ENV{PGAPPNAME} = $app;
	$node->safe_psql('app', 'SELECT count(*) FROM legacy_orders') for 1 .. 3;
}
sql(q{SELECT count(*) FROM softmig.check('accounts'); SELECT count(*) FROM softmig.check('orders');});

is($node->safe_psql('app', 'SELECT count(*) FROM softmig.monitor', extra_params => [ '-U', 'softmig_exporter' ]),
	'2', 'the exporter role reads the monitoring views');
my ($ret, $out, $err) = $node->psql('app', 'SELECT count(*) FROM legacy_orders', extra_params => [ '-U', 'softmig_exporter' ]);
like($err, qr/permission denied for table legacy_orders/, 'and nothing it was not granted');

################################################################ the exporter
my $http = HTTP::Tiny->new(timeout => 10);

sub get
{
	my ($url) = @_;
	my $r = $http->get($url);
	return $r->{success} ? $r->{content} : undef;
}

sub wait_for
{
	my ($what, $timeout, $code) = @_;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		my $v = $code->();
		return $v if $v;
		sleep 0.5;
	}
	diag("timed out after ${timeout}s waiting for $what");
	return undef;
}

my $exporter_port = PostgreSQL::Test::Cluster::get_free_port();
{
	local $ENV{DATA_SOURCE_NAME} = sprintf('host=%s port=%d user=softmig_exporter dbname=app sslmode=disable',
		$node->host, $node->port);
	push @services, IPC::Run::start(
		[ 'prometheus-postgres-exporter', "--web.listen-address=127.0.0.1:$exporter_port",
		  "--extend.query-path=$root/monitoring/postgres_exporter.yaml" ],
		'<', \undef, '>', "$tmp/exporter.log", '2>', "$tmp/exporter.log");
}
my $metrics = wait_for('the exporter', 30, sub {
	my $m = get("http://127.0.0.1:$exporter_port/metrics");
	return ($m && $m =~ /^softmig_migration_state\{/m) ? $m : undef;
});
ok($metrics, 'the exporter serves softmig metrics on 127.0.0.1')
  or diag(slurp_file("$tmp/exporter.log"));
$metrics //= '';
like($metrics, qr/^pg_up 1$/m, 'the exporter is connected');
like($metrics, qr/^pg_exporter_user_queries_load_error\{.*\} 0$/m, 'the query file loads');
unlike(slurp_file("$tmp/exporter.log"), qr/level=error/, 'no query failed');

# the metrics the query file declares are all there
my $yaml = slurp_file("$root/monitoring/postgres_exporter.yaml");
my ($ns, $col, %declared);
for my $line (split /\n/, $yaml)
{
	$ns = $1 if $line =~ /^([a-z_]+):\s*$/;
	$col = $1 if $line =~ /^ {4}- ([a-z_]+):/;
	$declared{"${ns}_$col"} = lc $1 if $line =~ /^ {8}usage: "(GAUGE|COUNTER)"/;
}
ok(keys %declared > 25, scalar(keys %declared) . ' metrics declared');
for my $m (sort keys %declared)
{
	like($metrics, qr/^# TYPE $m $declared{$m}$/m, "$m is exported as a $declared{$m}");
}
like($metrics, qr/^softmig_migration_info\{(?=.*state="mirrored")(?=.*migration="orders")(?=.*legacy_table="public\.legacy_orders").*\} 1$/m,
	'state and tables as labels');
like($metrics, qr/^softmig_parity_differences\{(?=.*kind="mismatch")(?=.*migration="accounts").*\} 1$/m,
	'the planted parity difference');
like($metrics, qr/^softmig_discovery_reads_total\{(?=.*reader="reporting")(?=.*side="legacy")(?=.*registered="false").*\} 3$/m,
	'the unregistered reader, with its statements');

# Prometheus naming conventions, as promtool lints them
my $softmig_only = join("\n", grep { /^(# (HELP|TYPE) )?softmig_/ } split /\n/, $metrics) . "\n";
my ($lint_out, $lint_err) = ('', '');
my $lint_ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', \$softmig_only, '>', \$lint_out, '2>', \$lint_err);
ok($lint_ok && $lint_out eq '' && $lint_err eq '', 'promtool check metrics finds nothing to say about the softmig metrics')
  or diag($lint_out . $lint_err);

################################################################ Prometheus
my $prom_port = PostgreSQL::Test::Cluster::get_free_port();
my $config = "$tmp/prometheus.yml";
open(my $fh, '>', $config) or die "cannot write $config: $!";
print $fh <<"EOC";
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/monitoring/prometheus_rules.yaml
scrape_configs:
  - job_name: softmig
    static_configs:
      - targets: ['127.0.0.1:$exporter_port']
EOC
close($fh);
push @services, IPC::Run::start(
	[ 'prometheus', "--config.file=$config", "--storage.tsdb.path=$tmp/prometheus-data",
	  "--web.listen-address=127.0.0.1:$prom_port", '--log.level=warn' ],
	'<', \undef, '>', "$tmp/prometheus.log", '2>', "$tmp/prometheus.log");
my $api = "http://127.0.0.1:$prom_port/api/v1";

sub api
{
	my ($path, %params) = @_;
	my $q = %params ? '?' . $http->www_form_urlencode(\%params) : '';
	my $body = get("$api/$path$q") // return undef;
	my $j = eval { decode_json($body) } // return undef;
	return $j->{status} eq 'success' ? $j->{data} : undef;
}

ok(wait_for('Prometheus to scrape the exporter', 60, sub {
	my $t = api('targets') // return 0;
	return grep { ($_->{health} // '') eq 'up' } @{ $t->{activeTargets} };
}), 'Prometheus scrapes the exporter') or diag(slurp_file("$tmp/prometheus.log"));
my $groups = api('rules') // {};
my $defined = () = slurp_file("$root/monitoring/prometheus_rules.yaml") =~ /^\s*- alert: /mg;
is(scalar(map { @{ $_->{rules} } } @{ $groups->{groups} // [] }), $defined, "Prometheus loaded the $defined alert rules");

sub firing
{
	my (%want) = @_;
	my $a = api('alerts') // return 0;
	return grep {
		my $l = $_->{labels};
		$_->{state} eq 'firing' && !grep { ($l->{$_} // '') ne $want{$_} } keys %want
	} @{ $a->{alerts} };
}

ok(wait_for('SoftmigParityDifferences', 60, sub { firing(alertname => 'SoftmigParityDifferences', migration => 'accounts', kind => 'mismatch') }),
	'the planted parity difference fires SoftmigParityDifferences');
ok(wait_for('SoftmigBackfillStalled', 60, sub { firing(alertname => 'SoftmigBackfillStalled', migration => 'orders') }),
	'the stalled backfill fires SoftmigBackfillStalled');
ok(wait_for('SoftmigTransitionRuleViolations', 60, sub { firing(alertname => 'SoftmigTransitionRuleViolations', migration => 'orders') }),
	'the observed rule violation fires SoftmigTransitionRuleViolations');
my ($stalled) = firing(alertname => 'SoftmigBackfillStalled', migration => 'orders');
like($stalled->{annotations}{runbook} // '', qr/softmig\.status\('orders'\)/, 'its runbook names the function to look with');
ok(!firing(alertname => 'SoftmigParityDifferences', migration => 'orders'),
	'rows the unfinished backfill has not copied yet are no parity alert');
ok(!firing(alertname => 'SoftmigBackfillStalled', migration => 'accounts'), 'a finished backfill does not stall');

################################################################ the dashboard
my $dash = decode_json(slurp_file("$root/monitoring/grafana_dashboard.json"));
# Grafana's substitutions with "All" selected and a short range
my %grafana = ('$datname' => '.*', '$migration' => '.*', '$__rate_interval' => '30s');
sub fill
{
	my ($e) = @_;
	$e =~ s/(\$\w+)/$grafana{$1} \/\/ die "unknown variable $1 in $e"/ge;
	return $e;
}
# rate() needs two samples in its window
sleep 3;
my @targets = map { my $p = $_; map { [ $p->{title}, $_ ] } @{ $p->{targets} // [] } }
  grep { $_->{type} ne 'row' } @{ $dash->{panels} };
ok(@targets >= 15, scalar(@targets) . ' dashboard queries');
for my $t (@targets)
{
	my ($title, $target) = @$t;
	my $expr = fill($target->{expr});
	my $r = wait_for("data for \"$title\"", 30, sub {
		my $d = api('query', query => $expr) // return 0;
		return @{ $d->{result} } ? $d->{result} : 0;
	});
	ok($r, "dashboard \"$title\" $target->{refId} returns data: $expr");
}
for my $v (grep { $_->{type} eq 'query' } @{ $dash->{templating}{list} })
{
	my ($metric, $label) = $v->{query}{query} =~ /^label_values\((.*), (\w+)\)$/ or die "unexpected variable query";
	my $values = api("label/$label/values", 'match[]' => fill($metric)) // [];
	ok(@$values > 0, "variable \$$v->{name} finds values: @$values");
}

stop_services();
ok(!grep({ $_->pumpable } @services), 'exporter and Prometheus stopped');
done_testing();
