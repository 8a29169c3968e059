# Reader discovery (needs shared_preload_libraries = 'softmig'): the executor
# hook sees an application nobody registered reading the legacy table, counts
# its statements right, and the cutover guard refuses until that reader is
# registered and its switch group moved to the target.  Without preloading,
# everything else keeps working and readers() says discovery is off.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('discovery');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;

# Run SQL in a session that presents the given application_name.
sub as_app
{
	my ($app, $sql) = @_;
	local $ENV{PGAPPNAME} = $app;
	return $node->safe_psql('postgres', $sql);
}

# The administrator's own statements stay out of discovery.
sub admin
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', "SET softmig.discovery = off;\n$sql");
}

admin(q{
	CREATE EXTENSION softmig;
	CREATE TABLE legacy_acc (id int PRIMARY KEY, v text NOT NULL);
	CREATE TABLE target_acc (id int PRIMARY KEY, v text NOT NULL);
	CREATE TABLE unrelated (id int);
	INSERT INTO legacy_acc SELECT g, 'v' || g FROM generate_series(1, 100) g;
	SELECT softmig.create_migration('acc', 'legacy_acc', 'target_acc',
	    options => '{"unregistered_reader_window": "1 hour"}');
	SELECT softmig.register_reader('acc', 'web', 'latency', 'front');
	SELECT softmig.advance('acc');
	CALL softmig.backfill('acc');
	SELECT softmig.switch_reads('acc', 'front', 'new', 'web first');
	SELECT softmig.create_read_view('acc', 'acc_v');
	SELECT softmig.advance('acc');
	SELECT softmig.advance('acc');
});
is(admin(q{SELECT available FROM softmig.discovery()}), 't', 'discovery is available when preloaded');
is(admin(q{SELECT softmig.state('acc'::text)}), 'new_read', 'migration is in new_read');
is(admin(q{SELECT count(*) FROM softmig.observed_readers('acc')}), '0',
	'backfill and state changes (behind the gate) were not recorded');

# reporting_job, which nobody registered, reads legacy directly: three
# SELECTs and one COPY count; a failed statement, an EXPLAIN and a read of
# another table do not.
as_app('reporting_job', 'SELECT count(*) FROM legacy_acc WHERE id <= 10') for 1 .. 3;
as_app('reporting_job', 'COPY legacy_acc TO STDOUT');
as_app('reporting_job', 'EXPLAIN SELECT * FROM legacy_acc');
as_app('reporting_job', 'SELECT count(*) FROM unrelated');
{
	local $ENV{PGAPPNAME} = 'reporting_job';
	my ($ret) = $node->psql('postgres', 'SELECT 1 / (id - id) FROM legacy_acc');
	isnt($ret, 0, 'a failing read errors out');
}

# web reads through the routed view: its group reads new, so only the target
# branch runs and only the target is counted.
as_app('web', 'SELECT * FROM acc_v WHERE id = 1') for 1 .. 2;

# writer writes the target (the authority); the projection to legacy is
# softmig's own write and is not counted; a refused write to legacy is not
# counted either.
as_app('writer', q{INSERT INTO target_acc VALUES (1000, 'new row')});
{
	local $ENV{PGAPPNAME} = 'writer';
	my ($ret, $out, $err) = $node->psql('postgres', q{INSERT INTO legacy_acc VALUES (1001, 'x')});
	like($err, qr/SM001|refused/, 'a write to legacy is refused in new_read');
}
is(admin(q{SELECT count(*) FROM legacy_acc WHERE id = 1000}), '1', 'the target write was projected to legacy');

my $role = admin(q{SELECT current_user});
is(admin(q{SELECT reader, role, side, reads, writes, last_seen >= first_seen
             FROM softmig.observed_readers('acc') ORDER BY reader, side}),
	"reporting_job|$role|legacy|4|0|t\n"
	  . "web|$role|new|2|0|t\n"
	  . "writer|$role|new|0|1|t",
	'observations: who, which side, how many statements');
is(admin(q{SELECT reader, coalesce(class, '-'), switch_group, source, registered, reads, writes,
                  last_seen IS NOT NULL
             FROM softmig.readers('acc') ORDER BY reader}),
	"reporting_job|-|default|new|f|4|0|t\n"
	  . "web|latency|front|new|t|2|0|t\n"
	  . "writer|-|default|new|f|0|1|t",
	'readers() lists registered and observed readers and flags the unregistered ones');

# cutover is refused: reporting_job touched legacy within the window
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT softmig.advance('acc')});
isnt($ret, 0, 'cutover refused while an unregistered reader touched legacy');
like($err, qr/readers nobody registered touched legacy table public\.legacy_acc within the last 01:00:00: 'reporting_job'/,
	'the refusal names the reader');
unlike($err, qr/'writer'/, 'a reader that only touched the target does not block');

# registered, but its group still reads legacy: still refused
admin(q{
	SELECT softmig.register_reader('acc', 'reporting_job', 'bulk', 'reports');
	SELECT softmig.switch_reads('acc', 'reports', 'legacy', 'the job still queries legacy_acc');
});
is(admin(q{SELECT registered, source FROM softmig.readers('acc') WHERE reader = 'reporting_job'}),
	't|legacy', 'reporting_job is registered, its group pinned to legacy');
($ret, $out, $err) = $node->psql('postgres', q{SELECT softmig.advance('acc')});
isnt($ret, 0, 'cutover refused while a registered reader reads legacy');
like($err, qr/registered readers still read legacy: reporting_job \(group reports\)/,
	'the refusal names the reader and its group');
is(admin(q{SELECT softmig.state('acc'::text)}), 'new_read', 'still in new_read');

# its group switched: cutover goes through
admin(q{SELECT softmig.switch_reads('acc', 'reports', 'new', 'the job was moved to the target')});
is(admin(q{SELECT softmig.advance('acc')}), 'cutover', 'cutover once the reader is registered and switched');
is(admin(q{SELECT softmig.read_source('acc', 'reporting_job')}), 'new', 'it reads new in cutover');

# reset_discovery forgets the migration's observations and records that
is(admin(q{SELECT softmig.reset_discovery('acc')}), '3', 'reset_discovery removed three observations');
is(admin(q{SELECT count(*) FROM softmig.observed_readers('acc')}), '0', 'nothing observed any more');
is(admin(q{SELECT detail FROM softmig.history('acc') WHERE action = 'reset_discovery'}),
	'{"observations": 3}', 'the reset is in the history');

# the unregistered window: a fresh migration, a reader seen outside a tiny window does not block
admin(q{
	CREATE TABLE l2 (id int PRIMARY KEY);
	CREATE TABLE t2 (id int PRIMARY KEY);
	SELECT softmig.create_migration('m2', 'l2', 't2', options => '{"unregistered_reader_window": "4 seconds"}');
	SELECT softmig.advance('m2');
	CALL softmig.backfill('m2');
	SELECT softmig.advance('m2');
	SELECT softmig.advance('m2');
});
as_app('old_job', 'SELECT * FROM l2');
($ret, $out, $err) = $node->psql('postgres', q{SELECT softmig.advance('m2')});
like($err, qr/'old_job'/, 'a reader seen within the window blocks');
sleep 5;
# the caller's own application_name and role do not count against it
($ret, $out, $err) = $node->psql('postgres', q{
	SELECT count(*) FROM l2;
	SELECT softmig.advance('m2');
});
is($ret, 0, 'the reader outside the window and the caller itself do not block');
like(admin(q{SELECT string_agg(reader, ',' ORDER BY reader) FROM softmig.observed_readers('m2')}),
	qr/^040_reader_discovery(\.pl)?,old_job$/, 'the caller was observed all the same');

# after a restart the observations are gone (shared memory only)
as_app('reporting_job', 'SELECT count(*) FROM l2');
$node->restart;
is(admin(q{SELECT count(*) FROM softmig.observed_readers('m2')}), '0', 'a restart forgets observations');

# without preloading: routing works, readers() says discovery is off
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
is(admin(q{SELECT available FROM softmig.discovery()}), 'f', 'discovery is not available without preloading');
as_app('reporting_job', 'SELECT count(*) FROM legacy_acc');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT reader, registered, reads IS NULL FROM softmig.readers('acc') ORDER BY reader});
is($out, "reporting_job|t|t\nweb|t|t", 'readers() lists registered readers, counts unknown');
like($err, qr/reader discovery is off/, 'readers() says discovery is off');
is(admin(q{SELECT softmig.read_source('acc', 'web')}), 'new', 'read_source works without preloading');

$node->stop;
done_testing();
