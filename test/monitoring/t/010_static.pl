# The files under monitoring/, checked without a database:
#   - promtool accepts the alert rules, and the promtool unit tests of
#     test/prometheus/*.yaml pass (every alert is tested firing);
#   - every alert has a severity and a runbook naming a softmig function;
#   - the exporter query file reads only softmig.monitor* views, declares
#     every column it selects, and names counters "_total";
#   - the Grafana dashboard is a well-formed dashboard model (ids, grid,
#     datasources, template variables) whose queries use only metrics the
#     exporter file defines.
# t/020_live.pl runs all of them against the real services.
use strict;
use warnings;

use File::Basename qw(dirname);
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{TESTDIR} // '.';
my $rules_file = "$root/monitoring/prometheus_rules.yaml";
my $exporter_file = "$root/monitoring/postgres_exporter.yaml";
my $dashboard_file = "$root/monitoring/grafana_dashboard.json";

################################################################ alert rules
my ($out, $err) = run_command([ 'promtool', 'check', 'rules', $rules_file ]);
like($out, qr/SUCCESS: \d+ rules found/, 'promtool check rules accepts monitoring/prometheus_rules.yaml')
  or diag($out . $err);

my @tests = sort glob("$root/test/prometheus/*.yaml");
ok(@tests > 0, 'there are promtool rule tests');
my $tests_text = '';
for my $t (@tests)
{
	# promtool resolves rule_files relative to the test file
	my $ok = run_log([ 'promtool', 'test', 'rules', $t ]);
	ok($ok, "promtool test rules " . ($t =~ s{^\Q$root\E/}{}r));
	$tests_text .= slurp_file($t);
}

my $rules = slurp_file($rules_file);
my @alerts = $rules =~ /^\s*- alert: (\S+)$/mg;
my %alert_text;
{
	my @chunks = split /^\s*- alert: /m, $rules;
	shift @chunks;
	for my $c (@chunks)
	{
		my ($name) = $c =~ /^(\S+)/;
		$alert_text{$name} = $c;
	}
}
for my $required (qw(SoftmigParityDifferences SoftmigInvariantFailing SoftmigTransitionRuleViolations
	SoftmigBackfillStalled SoftmigUnregisteredLegacyReader SoftmigTriggersUnhealthy SoftmigChecksNotRun
	SoftmigEnvelopeClosedBeforeCutover))
{
	ok(exists $alert_text{$required}, "alert $required is defined");
}
for my $a (@alerts)
{
	like($alert_text{$a}, qr/^\s+severity: (critical|warning)$/m, "$a has a severity");
	like($alert_text{$a}, qr/^\s+runbook: ".*\bsoftmig\.[a-z_]+\(/m, "$a has a runbook naming a softmig function");
	like($tests_text, qr/alertname: \Q$a\E\n\s+exp_alerts:\n\s+- exp_labels:/,
		"$a is tested firing in test/prometheus");
}

################################################################ exporter queries
# the file's structure: top-level query names, each with a query and a
# metrics list of "- column:" entries with a usage
my $exp = slurp_file($exporter_file);
my (%metrics, $ns, %columns_of, %query_of, %usage, $in_query);
for my $line (split /\n/, $exp)
{
	next if $line =~ /^\s*#/ || $line =~ /^\s*$/;
	if ($line =~ /^([a-z_]+):\s*$/)
	{
		$ns = $1;
		$query_of{$ns} = '';
		next;
	}
	if ($line =~ /^  (\w+):/)
	{
		$in_query = $1 eq 'query';
		next;
	}
	if ($in_query)
	{
		$query_of{$ns} .= " $line";
		next;
	}
	if ($line =~ /^ {4}- ([a-z_]+):\s*$/)
	{
		push @{ $columns_of{$ns} }, $1;
		next;
	}
	if ($line =~ /^ {8}usage: "([A-Z]+)"/)
	{
		$usage{$ns}{ $columns_of{$ns}[-1] } = $1;
		next;
	}
}
ok(keys %query_of >= 9, 'the exporter file has its queries: ' . join(' ', sort keys %query_of));
for my $q (sort keys %query_of)
{
	like($q, qr/^softmig(_[a-z]+)?$/, "query name $q is a softmig metric prefix");
	like($query_of{$q}, qr/\bFROM softmig\.monitor[a-z_]*\s*$/, "$q reads a softmig.monitor* view");
	for my $c (@{ $columns_of{$q} })
	{
		like($query_of{$q}, qr/(\b$c\b|AS "$c")/, "$q selects the column it declares: $c");
		my $u = $usage{$q}{$c} // '';
		ok($u =~ /^(LABEL|GAUGE|COUNTER)$/, "$q.$c has a usage ($u)");
		next if $u eq 'LABEL';
		my $name = "${q}_$c";
		$metrics{$name} = $u;
		if ($u eq 'COUNTER')
		{
			like($name, qr/_total$/, "counter $name ends in _total");
		}
		else
		{
			unlike($name, qr/_total$/, "gauge $name does not end in _total");
		}
	}
}

################################################################ dashboard
my $dash = eval { decode_json(slurp_file($dashboard_file)) };
ok($dash, 'the dashboard is valid JSON') or diag($@);
$dash //= {};
ok(defined $dash->{$_}, "the dashboard has $_") for qw(title uid schemaVersion panels templating);
cmp_ok($dash->{schemaVersion} // 0, '>=', 36, 'dashboard schema version');

my %vars = map { $_->{name} => $_ } @{ $dash->{templating}{list} // [] };
is($vars{datasource}{type} // '', 'datasource', 'a Prometheus data source variable');
is($vars{datasource}{query} // '', 'prometheus', 'the data source variable picks Prometheus');
for my $v (qw(datname migration))
{
	is($vars{$v}{type} // '', 'query', "template variable \$$v");
	like($vars{$v}{query}{query} // '', qr/^label_values\(softmig_[a-z_]+(\{[^}]*\})?, $v\)$/, "\$$v lists the label's values");
}

my (%ids, @exprs);
my @panels = @{ $dash->{panels} // [] };
my %types = map { $_ => 1 } qw(row timeseries state-timeline stat table bargauge gauge piechart);
for my $p (@panels)
{
	ok(!$ids{ $p->{id} }++, "panel id $p->{id} is unique");
	ok($types{ $p->{type} }, "panel \"$p->{title}\" has a known type ($p->{type})");
	my $g = $p->{gridPos} // {};
	ok(defined $g->{x} && defined $g->{y} && $g->{w} > 0 && $g->{h} > 0 && $g->{x} + $g->{w} <= 24,
		"panel \"$p->{title}\" fits the 24-column grid");
	next if $p->{type} eq 'row';
	is($p->{datasource}{uid} // '', '${datasource}', "panel \"$p->{title}\" uses the data source variable");
	ok(@{ $p->{targets} // [] } > 0, "panel \"$p->{title}\" has queries");
	my %refs;
	for my $t (@{ $p->{targets} // [] })
	{
		ok(!$refs{ $t->{refId} }++, "panel \"$p->{title}\" refId $t->{refId} is unique");
		ok(length($t->{expr} // ''), "panel \"$p->{title}\" $t->{refId} has an expression");
		push @exprs, $t->{expr};
	}
}
my %titles = map { $_->{title} => $_->{type} } @panels;
is($titles{'Migration state'}, 'state-timeline', 'a state timeline');
ok($titles{'Backfill rows'} && $titles{'Backfill rate'}, 'backfill progress and rate');
ok($titles{'Parity differences'} && $titles{'Invariant violations'}, 'parity and invariant violations over time');
ok($titles{'Readers by source'}, 'readers by source');

# every metric a dashboard query or an alert uses is one the exporter defines
my @rule_exprs;
while ($rules =~ /^\s+expr: (\|\n(?:\s{10,}.*\n)+|.*\n)/mg)
{
	push @rule_exprs, $1;
}
cmp_ok(scalar(@rule_exprs), '==', scalar(@alerts), 'every alert has an expression');
my %used;
$used{$_}++ for map { /\b(softmig_[a-z_]+)\b/g } (@exprs, @rule_exprs);
for my $m (sort keys %used)
{
	ok(exists $metrics{$m}, "$m (used by the dashboard or the alerts) is defined in the exporter file");
}
for my $e (@exprs)
{
	while ($e =~ /\$(\w+)/g)
	{
		my $v = $1;
		ok($v eq '__rate_interval' || exists $vars{$v}, "variable \$$v of \"$e\" is defined");
	}
}

done_testing();
