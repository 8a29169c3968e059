# Backfill progress as a DBA sees it:
#   - CALL softmig.backfill raises a progress NOTICE (rows copied, rows per
#     second, percent done, time left, phase) every
#     softmig.backfill_progress_interval, none with client_min_messages =
#     warning, and the rows it reports only grow;
#   - while a backfill runs in one session, another sees the same figures in
#     softmig.status and in softmig.monitor (rows per second above 0);
#   - a row estimate never waits for a lock: with a table locked by DDL in
#     another session, the monitoring views answer at once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('progress');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION softmig;
CREATE TABLE l (id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO l SELECT g, 'v' || g FROM generate_series(1, 20000) g;
ANALYZE l;
SELECT softmig.create_migration('m', 'l', 't', forward => '{"v": "upper(v)"}', backward => '{"v": "lower(v)"}');
SELECT softmig.advance('m');
});

################################################################ NOTICEs
my ($ret, $out, $err) = $node->psql('postgres', q{
SET softmig.backfill_progress_interval = 0;
CALL softmig.backfill('m', batch_size => 1000, max_batches => 8);
});
is($ret, 0, 'a paced backfill runs');
my @lines = $err =~ /NOTICE:  (softmig: backfill of "m": .*)$/mg;
is(scalar(@lines), 8, 'interval 0: one progress NOTICE per batch but the last, and the summary')
  or diag($err);
my $re = qr/^softmig: backfill of "m": (\d+) rows copied, ([\d.]+) rows\/s, ([\d.]+)% done, about (\d\d:\d\d:\d\d) left \(phase scan\)$/;
my @copied;
for my $l (@lines[0 .. 6])
{
	like($l, $re, 'progress line: rows, rows/s, percent, time left, phase');
	my ($rows, $rate, $pct) = $l =~ $re;
	push @copied, $rows // -1;
	cmp_ok($rate, '>', 0, 'rows per second above 0');
	ok($pct > 0 && $pct < 100, "percent done between 0 and 100 ($pct)");
}
is_deeply(\@copied, [ map { $_ * 1000 } 1 .. 7 ], 'rows copied grow batch by batch');
like($lines[7], qr/^softmig: backfill of "m": 8 batches, 8000 rows copied, phase scan$/, 'the summary at the end');
my (undef, undef, $pct7) = $lines[6] =~ $re;
cmp_ok(abs($pct7 - 35), '<', 3, "7000 of 20000 rows is about 35% ($pct7)");

($ret, $out, $err) = $node->psql('postgres', q{
SET softmig.backfill_progress_interval = 0;
SET client_min_messages = warning;
CALL softmig.backfill('m', batch_size => 1000, max_batches => 2);
});
is($err, '', 'quiet with client_min_messages = warning');

# the default interval (10s) says nothing during a short run, only the summary
($ret, $out, $err) = $node->psql('postgres', q{CALL softmig.backfill('m', batch_size => 1000, max_batches => 2)});
is(scalar(() = $err =~ /rows\/s/g), 0, 'no progress NOTICE before the interval has passed');
like($err, qr/2 batches, 2000 rows copied/, 'the summary');

################################################################ another session watches
# a slow backfill: one batch of 100 rows per 300 ms
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, q{
\echo started
CALL softmig.backfill('m', batch_size => 100, pause_ms => 300, max_batches => 40);
});
ok($node->poll_query_until('postgres', q{
	SELECT backfill_rows_per_second > 0 AND backfill_rows_remaining > 0 FROM softmig.monitor WHERE migration = 'm'}),
	'softmig.monitor shows the running backfill\'s rate and what remains');
my $s = $node->safe_psql('postgres', q{
	SELECT (b->>'rows_per_second')::numeric > 0, (b->>'percent_done')::numeric BETWEEN 50 AND 99.9,
	       (b->>'eta_seconds')::numeric >= 0, (b->>'run_rows')::int > 0
	  FROM (SELECT softmig.status('m')->'backfill' AS b) x});
is($s, 't|t|t|t', 'softmig.status has rows per second, percent done, time left and the run\'s rows');
$bg->quit;

################################################################ no waiting for DDL
my $ddl = $node->background_psql('postgres');
$ddl->query_safe('BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;');
# lock_timeout: a wait for the lock would fail with 55P03
($ret, $out, $err) = $node->psql('postgres', q{
	SET lock_timeout = '1s';
	SELECT rows = GREATEST((SELECT reltuples FROM pg_class WHERE oid = 't'::regclass), 0)
	  FROM softmig.monitor_tables WHERE side = 'new';
	SELECT count(*) FROM softmig.monitor;
	SELECT (softmig.status('m')->'backfill'->>'remaining_estimate') IS NOT NULL;});
is($ret, 0, 'the monitoring views and status answer while DDL holds the target table, without waiting') or diag($err);
is($out, "t\n1\nt", 'the table\'s rows from its statistics');
$ddl->query_safe('COMMIT');
$ddl->quit;

$node->stop;
done_testing();
