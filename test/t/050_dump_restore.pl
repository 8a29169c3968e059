# pg_dump / pg_restore of a database with migrations in every state.
#
# A source database holds migrations in legacy, mirrored (finished backfill,
# quarantined key, per-field authority, override history, operation keys,
# registered readers, options, transition rules and an invariant), new_write
# (closed envelope), new_read (switched read group, routed view) and cutover.
# It is dumped with pg_dump -Fc and restored with createdb + pg_restore -d
# into a fresh database of the same cluster.  Then:
#   - pg_restore reports no error and every index and constraint is back;
#   - every softmig catalog table (every extension configuration table) and
#     sequence holds exactly what the source holds; ids are the same;
#   - the softmig triggers exist, are healthy and identical (same ids);
#   - the same writes replayed on both databases give the same results,
#     errors included: mirroring, projection, refusals, quarantine,
#     operation-key duplicates, per-field authority, transition rules,
#     envelope-guarded rollback, cutover freeze.
# Finally the dump is restored into a second, fresh cluster to show what
# cannot carry over between clusters: transaction-id based values
# (migrations.mirror_snapshot, operations.xid, field_writes.xid) belong to
# the source cluster's transaction-id space.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE src');

# run a client program against a node; returns (exit code, stdout, stderr)
sub run_client
{
	my ($n, @cmd) = @_;
	local $ENV{PGHOST} = $n->host;
	local $ENV{PGPORT} = $n->port;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

################################################################ the source
$node->safe_psql('src', q{
CREATE EXTENSION softmig;

-- legacy: defined, not managed
CREATE TABLE l_leg (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE t_leg (id int PRIMARY KEY, name text NOT NULL, shout text);
INSERT INTO l_leg VALUES (1, 'a'), (2, 'b');
SELECT softmig.create_migration('m_legacy', 'l_leg', 't_leg',
    forward => '{"shout": "upper(name)"}', options => '{"lock_timeout": "4s"}');

-- mirrored, backfill finished
CREATE TABLE l_mir (id int PRIMARY KEY, name text NOT NULL, note text, qty int, status text);
CREATE TABLE t_mir (id int PRIMARY KEY, name text NOT NULL, note text, qty numeric(10,2), status text,
                    extra text);
INSERT INTO l_mir SELECT g, 'name' || g, NULL, g, 'new' FROM generate_series(1, 30) g;
SELECT softmig.create_migration('m_mirrored', 'l_mir', 't_mir',
    forward => '{"name": "upper(name)"}', backward => '{"name": "lower(name)"}',
    new_only => '{extra}',
    options => '{"lock_timeout": "3s", "unregistered_reader_window": "0"}');
SELECT softmig.advance('m_mirrored', reason => 'dump test');
INSERT INTO l_mir VALUES (31, 'live', NULL, 31, 'new');
});
$node->safe_psql('src', q{CALL softmig.backfill('m_mirrored', batch_size => 7)});
$node->safe_psql('src', q{
SELECT softmig.quarantine('m_mirrored', '{"id": 5}', 'bad data, fixing by hand');
SELECT softmig.set_field_authority('m_mirrored', 'note', 'new');
UPDATE t_mir SET note = 'owned by the target' WHERE id = 6;
BEGIN;
SET LOCAL softmig.override = 'hand repair before the dump';
UPDATE t_mir SET extra = 'hand' WHERE id = 3;
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'order:mir-1';
INSERT INTO l_mir VALUES (32, 'keyed', NULL, 32, 'new');
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'order:mir-2';
UPDATE l_mir SET qty = 99 WHERE id = 8;
COMMIT;
SELECT softmig.register_reader('m_mirrored', 'billing', 'consistency', 'core');
SELECT softmig.register_reader('m_mirrored', 'audit-job', 'audit', 'slow');
SELECT softmig.set_option('m_mirrored', 'lock_timeout', '"2s"');
SELECT softmig.add_invariant('m_mirrored', 'no_negative_qty', 'SELECT id FROM public.l_mir WHERE qty < 0');
});
# transition rules: their failure is reported, not fatal for the rest
my ($rules_rc, $rules_out, $rules_err) = $node->psql('src', q{
SELECT softmig.add_transition_rule('m_mirrored', 'l_mir', 'status', NULL, 'new');
SELECT softmig.add_transition_rule('m_mirrored', 'l_mir', 'status', 'new', 'paid');
});
is($rules_rc, 0, 'transition rules defined in the source') or diag($rules_err);

$node->safe_psql('src', q{
-- new_write, envelope closed by a new-only value
CREATE TABLE l_nw (id int PRIMARY KEY, cust text NOT NULL, cents int);
CREATE TABLE t_nw (id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), gift text);
INSERT INTO l_nw SELECT g, 'c' || g, g * 100 FROM generate_series(1, 10) g;
SELECT softmig.create_migration('m_new_write', 'l_nw', 't_nw',
    forward => '{"customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"cust": "lower(customer)", "cents": "(amount * 100)::int"}',
    new_only => '{gift}');
SELECT softmig.advance('m_new_write');
});
$node->safe_psql('src', q{CALL softmig.backfill('m_new_write')});
$node->safe_psql('src', q{
SELECT softmig.advance('m_new_write', reason => 'dump test');
UPDATE t_nw SET amount = 2.5 WHERE id = 2;
UPDATE t_nw SET gift = 'wrapped' WHERE id = 3;
SELECT softmig.quarantine('m_new_write', '{"id": 9}', 'investigating');

-- new_read, one read group switched, a routed view
CREATE TABLE l_nr (id int PRIMARY KEY, v text);
CREATE TABLE t_nr (id int PRIMARY KEY, v text);
INSERT INTO l_nr SELECT g, 'v' || g FROM generate_series(1, 5) g;
SELECT softmig.create_migration('m_new_read', 'l_nr', 't_nr',
    options => '{"unregistered_reader_window": "0"}');
SELECT softmig.advance('m_new_read');
});
$node->safe_psql('src', q{CALL softmig.backfill('m_new_read')});
$node->safe_psql('src', q{
SELECT softmig.advance('m_new_read', reason => 'dump test');
SELECT softmig.advance('m_new_read');
SELECT softmig.register_reader('m_new_read', 'reports', 'bulk', 'rep');
SELECT softmig.switch_reads('m_new_read', 'rep', 'new', 'reports read the target');
SELECT softmig.create_read_view('m_new_read', 'public.v_nr', 'legacy');

-- cutover
CREATE TABLE l_co (id int PRIMARY KEY, v text);
CREATE TABLE t_co (id int PRIMARY KEY, v text);
INSERT INTO l_co SELECT g, 'v' || g FROM generate_series(1, 5) g;
SELECT softmig.create_migration('m_cutover', 'l_co', 't_co',
    options => '{"unregistered_reader_window": "0"}');
SELECT softmig.advance('m_cutover');
});
$node->safe_psql('src', q{CALL softmig.backfill('m_cutover')});
$node->safe_psql('src', q{
SELECT softmig.advance('m_cutover', reason => 'dump test');
SELECT softmig.advance('m_cutover');
SELECT softmig.advance('m_cutover');
INSERT INTO t_co VALUES (6, 'after cutover');
});
is($node->safe_psql('src', q{SELECT string_agg(name || '=' || state::text, ',' ORDER BY id) FROM softmig.migrations}),
	'm_legacy=legacy,m_mirrored=mirrored,m_new_write=new_write,m_new_read=new_read,m_cutover=cutover',
	'the source has a migration in every state');

################################################################ dump, restore
my $states_q = q{SELECT string_agg(name || '=' || state::text, ',' ORDER BY id) FROM softmig.migrations};
my $xids = q{
	SELECT 'mirror_snapshot ' || name || ' ' || mirror_snapshot FROM softmig.migrations WHERE mirror_snapshot IS NOT NULL
	UNION ALL SELECT 'operations.xid ' || key || ' ' || xid FROM softmig.operations
	UNION ALL SELECT 'field_writes.xid ' || key::text || ' ' || field || ' ' || xid FROM softmig.field_writes
	ORDER BY 1};
my $states_at_dump = $node->safe_psql('src', $states_q);
my $xids_at_dump = $node->safe_psql('src', $xids);
my $dump = $node->basedir . '/src.dump';
my ($rc, $out, $err) = run_client($node, 'pg_dump', '-Fc', '-f', $dump, '-d', 'src');
is($rc, 0, 'pg_dump -Fc succeeds') or diag($err);
($rc, $out, $err) = run_client($node, 'createdb', 'restored');
is($rc, 0, 'createdb of a fresh database') or diag($err);
($rc, $out, $err) = run_client($node, 'pg_restore', '-d', 'restored', $dump);
is($rc, 0, 'pg_restore -d succeeds');
is($err, '', 'pg_restore reports no error') or diag($err);

################################################################ catalog comparison
# every extension configuration table (the catalog pg_dump carries) and
# every softmig sequence, as text
my @config = split /\n/, $node->safe_psql('src', q{
	SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS x(oid) JOIN pg_class c ON c.oid = x.oid
	 WHERE e.extname = 'softmig' ORDER BY 1});
cmp_ok(scalar(@config), '>=', 10, 'softmig has its catalog registered for pg_dump');
foreach my $rel (@config)
{
	my $relkind = $node->safe_psql('src', "SELECT relkind FROM pg_class WHERE oid = 'softmig.$rel'::regclass");
	my $q = $relkind eq 'S'
	  ? "SELECT last_value || ' ' || is_called FROM softmig.$rel"
	  : "SELECT count(*) || E'\\n' || coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM softmig.$rel t";
	is($node->safe_psql('restored', $q), $node->safe_psql('src', $q), "softmig.$rel is restored exactly");
}
# the parts that matter most, spelled out
foreach my $q (
	q{SELECT id, name, state, legacy, target, legacy_key, target_key, forward, backward, options FROM softmig.migrations ORDER BY id},
	q{SELECT migration_id, direction, column_name, expression FROM softmig.mappings ORDER BY 1, 2, 3},
	q{SELECT count(*), count(*) FILTER (WHERE action = 'override') FROM softmig.history_log},
	q{SELECT migration_id, open, reason, first_key, new_only_count FROM softmig.envelope ORDER BY 1},
	q{SELECT migration_id, key, reason FROM softmig.quarantine ORDER BY 1, 2},
	q{SELECT migration_id, phase, rows_backfilled, batches FROM softmig.backfill_progress ORDER BY 1},
	q{SELECT migration_id, key, side, relation, state FROM softmig.operations ORDER BY 1, 2},
	q{SELECT migration_id, reader, class, switch_group FROM softmig.reader_registry ORDER BY 1, 2},
	q{SELECT migration_id, switch_group, side FROM softmig.read_switches ORDER BY 1, 2},
	q{SELECT view_name, migration_id, shape FROM softmig.read_views ORDER BY 1},
	q{SELECT migration_id, field, side, legacy_columns FROM softmig.field_authority ORDER BY 1, 2})
{
	is($node->safe_psql('restored', $q), $node->safe_psql('src', $q), "restored: $q");
}
is($node->safe_psql('restored', q{SELECT count(*) FROM softmig.operations}), '2',
	'both operation keys are in the restored ledger');
is($node->safe_psql('restored', q{SELECT open FROM softmig.envelope e JOIN softmig.migrations m ON m.id = e.migration_id WHERE m.name = 'm_new_write'}),
	'f', 'the closed envelope is still closed');

################################################################ tables, indexes, triggers
my $indexes = q{
	SELECT i.indrelid::regclass || ' ' || pg_get_indexdef(i.indexrelid)
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
	 WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1};
is($node->safe_psql('restored', $indexes), $node->safe_psql('src', $indexes),
	'every index of the migrated tables is restored (primary keys included)');
my $constraints = q{
	SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	  FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1};
is($node->safe_psql('restored', $constraints), $node->safe_psql('src', $constraints),
	'every constraint of the migrated tables is restored');
my $triggers = q{
	SELECT tgrelid::regclass || ' ' || tgenabled::text || ' ' || pg_get_triggerdef(oid)
	  FROM pg_trigger WHERE tgname LIKE 'softmig%' ORDER BY 1};
is($node->safe_psql('restored', $triggers), $node->safe_psql('src', $triggers),
	'the softmig triggers are restored identically (same migration ids in their arguments)');
foreach my $m (qw(m_mirrored m_new_write m_new_read m_cutover))
{
	is($node->safe_psql('restored', "SELECT softmig.status('$m')->'triggers'->>'healthy'"),
		'true', "restored: the triggers of $m are healthy");
}
my $status = q{
	SELECT name, s->>'state', s->>'write_authority', s->>'read_default', s->>'envelope_open',
	       s->>'backfill_done', s->>'rows_backfilled', s->>'quarantined', s->'triggers'
	  FROM softmig.migrations m, softmig.status(m.name) s ORDER BY m.id};
is($node->safe_psql('restored', $status), $node->safe_psql('src', $status), 'status() is the same');
my $history = q{SELECT m.name, h.* FROM softmig.migrations m, softmig.history(m.name) h ORDER BY m.id, h.at};
is($node->safe_psql('restored', $history), $node->safe_psql('src', $history), 'history() is the same');
my $readers = q{SELECT reader, class, switch_group, source, registered FROM softmig.readers('m_new_read') WHERE registered ORDER BY 1};
is($node->safe_psql('restored', $readers), $node->safe_psql('src', $readers), 'registered readers and their sources are the same');
is($node->safe_psql('restored', q{SELECT count(*) FROM public.v_nr}), $node->safe_psql('src', q{SELECT count(*) FROM public.v_nr}),
	'the routed view works');
my $data = q{
	SELECT 'l_mir', string_agg(t::text, ' ' ORDER BY t.id) FROM l_mir t UNION ALL
	SELECT 't_mir', string_agg(t::text, ' ' ORDER BY t.id) FROM t_mir t UNION ALL
	SELECT 'l_nw', string_agg(t::text, ' ' ORDER BY t.id) FROM l_nw t UNION ALL
	SELECT 't_nw', string_agg(t::text, ' ' ORDER BY t.id) FROM t_nw t UNION ALL
	SELECT 'l_nr', string_agg(t::text, ' ' ORDER BY t.id) FROM l_nr t UNION ALL
	SELECT 't_nr', string_agg(t::text, ' ' ORDER BY t.id) FROM t_nr t UNION ALL
	SELECT 'l_co', string_agg(t::text, ' ' ORDER BY t.id) FROM l_co t UNION ALL
	SELECT 't_co', string_agg(t::text, ' ' ORDER BY t.id) FROM t_co t UNION ALL
	SELECT 'l_leg', string_agg(t::text, ' ' ORDER BY t.id) FROM l_leg t UNION ALL
	SELECT 't_leg', string_agg(t::text, ' ' ORDER BY t.id) FROM t_leg t};
is($node->safe_psql('restored', $data), $node->safe_psql('src', $data), 'the user data is the same');

################################################################ replay the same writes on both
# Each step runs on both databases; results (rows, errors) must be equal.
# Some steps also state the expected outcome, so equal-but-wrong fails too.
my @steps = (
	# mirrored: every kind of legacy write reaches the target
	[ q{INSERT INTO l_mir VALUES (100, 'Replay', NULL, 1, 'new')}, qr/^$/ ],
	[ q{UPDATE l_mir SET qty = 7 WHERE id = 1}, qr/^$/ ],
	[ q{UPDATE l_mir SET id = 101 WHERE id = 2}, qr/^$/ ],
	[ q{DELETE FROM l_mir WHERE id = 4}, qr/^$/ ],
	[ q{SELECT id, name, qty FROM t_mir WHERE id IN (1, 2, 4, 100, 101) ORDER BY id},
	  qr/^1\|NAME1\|7\.00\n100\|REPLAY\|1\.00\n101\|NAME2\|2\.00$/ ],
	# ... and the target refuses writes
	[ q{INSERT INTO t_mir (id, name) VALUES (200, 'X')}, qr/SM001|refused/ ],
	# a quarantined key is refused on both sides
	[ q{UPDATE l_mir SET qty = 0 WHERE id = 5}, qr/quarantined/ ],
	# an operation key applied before the dump is a duplicate after it
	[ qq{BEGIN; SET LOCAL softmig.operation_key = 'order:mir-1'; INSERT INTO l_mir VALUES (102, 'dup', NULL, 1, 'new'); COMMIT;},
	  qr/already applied/ ],
	[ q{SELECT softmig.operation_applied('m_mirrored', 'order:mir-2')}, qr/^t$/ ],
	# per-field authority: the target owns "note"
	[ q{UPDATE t_mir SET note = 'after restore' WHERE id = 7}, qr/^$/ ],
	[ q{SELECT note FROM l_mir WHERE id = 7}, qr/^after restore$/ ],
	[ q{UPDATE l_mir SET note = 'legacy may not' WHERE id = 7}, qr/SM001|refused/ ],
	# transition rules on l_mir.status
	[ q{UPDATE l_mir SET status = 'paid' WHERE id = 9}, qr/^$/ ],
	[ q{UPDATE l_mir SET status = 'new' WHERE id = 9}, qr/ERROR/ ],
	# new_write: the target is projected into legacy; legacy is refused
	[ q{INSERT INTO t_nw VALUES (50, 'NEW', 5.5, NULL)}, qr/^$/ ],
	[ q{UPDATE t_nw SET customer = 'RENAMED', id = 51 WHERE id = 1}, qr/^$/ ],
	[ q{DELETE FROM t_nw WHERE id = 4}, qr/^$/ ],
	[ q{SELECT id, cust, cents FROM l_nw WHERE id IN (1, 4, 50, 51) ORDER BY id}, qr/^50\|new\|550\n51\|renamed\|100$/ ],
	[ q{UPDATE l_nw SET cents = 0 WHERE id = 2}, qr/SM001|refused/ ],
	[ q{UPDATE t_nw SET amount = 0 WHERE id = 9}, qr/quarantined/ ],
	# the closed envelope still refuses the rollback
	[ q{SELECT softmig.rollback('m_new_write', 'after restore')}, qr/envelope is closed/ ],
	# new_read: projection continues
	[ q{UPDATE t_nr SET v = 'nr' WHERE id = 1}, qr/^$/ ],
	[ q{SELECT v FROM l_nr WHERE id = 1}, qr/^nr$/ ],
	[ q{SELECT softmig.read_source('m_new_read', 'reports'), softmig.read_source('m_new_read', 'somebody')}, qr/^new\|new$/ ],
	# cutover: legacy is frozen, the target is plain
	[ q{INSERT INTO l_co VALUES (10, 'no')}, qr/SM001|frozen/ ],
	[ q{INSERT INTO t_co VALUES (10, 'yes')}, qr/^$/ ],
	[ q{SELECT count(*) FROM l_co WHERE id = 10}, qr/^0$/ ],
	# legacy: nothing is managed
	[ q{INSERT INTO t_leg VALUES (9, 'free', NULL)}, qr/^$/ ],
	# state changes still work and agree
	[ q{SELECT softmig.advance('m_mirrored', reason => 'after restore', force => true)}, qr/^new_write$/ ],
	[ q{UPDATE t_mir SET qty = 5 WHERE id = 3}, qr/^$/ ],
	[ q{SELECT qty FROM l_mir WHERE id = 3}, qr/^5$/ ],
	[ q{SELECT softmig.rollback('m_new_read', 'after restore')}, qr/^new_write$/ ],
	[ q{SELECT softmig.drop_migration('m_cutover')}, qr/^$/ ],
);
foreach my $step (@steps)
{
	my ($sql, $expect) = @$step;
	my ($rc_s, $out_s, $err_s) = $node->psql('src', $sql);
	my ($rc_r, $out_r, $err_r) = $node->psql('restored', $sql);
	my $res_s = "rc=$rc_s\n$out_s\n$err_s";
	my $res_r = "rc=$rc_r\n$out_r\n$err_r";
	is($res_r, $res_s, "same result on both: $sql");
	like($rc_r == 0 ? $out_r : $err_r, $expect, "expected result after restore: $sql");
}
is($node->safe_psql('restored', $data), $node->safe_psql('src', $data), 'after the replay the user data is the same');
is($node->safe_psql('restored', $status), $node->safe_psql('src', $status), 'after the replay status() is the same');
my $hist_tail = q{SELECT m.name, h.actor, h.action, h.from_state, h.to_state, h.reason, h.detail
	  FROM softmig.history_log h JOIN softmig.migrations m ON m.id = h.migration_id ORDER BY h.id};
is($node->safe_psql('restored', $hist_tail), $node->safe_psql('src', $hist_tail), 'after the replay history is the same');

################################################################ another cluster
# Transaction ids do not carry over to another cluster: the values below are
# restored as they were, but they describe the source cluster's transactions.
my $other = PostgreSQL::Test::Cluster->new('other');
$other->init;
$other->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$other->start;
($rc, $out, $err) = run_client($other, 'createdb', 'restored');
($rc, $out, $err) = run_client($other, 'pg_restore', '-d', 'restored', $dump);
is($rc, 0, 'pg_restore into another cluster succeeds') or diag($err);
is($other->safe_psql('restored', $states_q), $states_at_dump,
	'another cluster: the migrations and their states are back');
note("transaction-id based values in the other cluster (current snapshot "
	  . $other->safe_psql('restored', 'SELECT pg_current_snapshot()') . "):\n"
	  . $other->safe_psql('restored', $xids));
is($other->safe_psql('restored', $xids), $xids_at_dump,
	'another cluster: transaction-id based values are restored verbatim (meaningful only in the source cluster)');

$other->stop;
$node->stop;
done_testing();
