# ALTER EXTENSION softmig UPDATE from the oldest released version, with live
# migrations in place.
#
# Database "up" installs the oldest version shipped in versions/ (0.1.0) and
# puts migrations in legacy, mirrored (backfilled, with operation keys,
# per-field authority, a registered reader and a routed view) and new_write
# (closed envelope).  Then:
#   - the released install scripts are byte for byte what was released;
#   - every installable version has an update path to the default version;
#   - ALTER EXTENSION softmig UPDATE succeeds while a second session holds a
#     migration's cached plans, and the catalog rows are untouched;
#   - the updated extension equals a fresh install of the default version,
#     object by object (definitions, volatility, strictness, security,
#     search_path settings, ACLs, comments, columns, indexes, constraints,
#     triggers, enum labels, extension configuration tables);
#   - the migrations keep working: mirroring and projection in the session
#     that was open across the update and in a new one, refusals, operation
#     keys, state changes and the envelope-guarded rollback.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA;

# Released install scripts are frozen: versions/SHA256SUMS lists each one
# with the checksum it was released with.
my $versions = ($ENV{TESTDIR} // '.') . '/versions';
open(my $sums, '<', "$versions/SHA256SUMS") or die "cannot open $versions/SHA256SUMS: $!";
while (my $line = <$sums>)
{
	my ($sum, $file) = $line =~ /^([0-9a-f]{64})\s+(\S+)$/ or die "bad line in SHA256SUMS: $line";
	is(Digest::SHA->new(256)->addfile("$versions/$file")->hexdigest, $sum,
		"released script $file is unchanged");
}
close($sums);

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;

my $default = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'softmig'});
my $oldest = $node->safe_psql('postgres', q{
	SELECT version FROM pg_available_extension_versions WHERE name = 'softmig'
	 ORDER BY string_to_array(version, '.')::int[] LIMIT 1});
isnt($oldest, $default, "an older version ($oldest) than the default ($default) is installable");

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_available_extension_versions v
	 WHERE v.name = 'softmig' AND v.version <> (SELECT default_version FROM pg_available_extensions WHERE name = 'softmig')
	   AND NOT EXISTS (SELECT 1 FROM pg_extension_update_paths('softmig') p
	                    WHERE p.source = v.version AND p.target = (SELECT default_version FROM pg_available_extensions WHERE name = 'softmig')
	                      AND p.path IS NOT NULL)}),
	'0', 'every installable version has an update path to the default version');

$node->safe_psql('postgres', 'CREATE DATABASE up');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');

################################################################ the old version, in use
$node->safe_psql('up', qq{
CREATE EXTENSION softmig VERSION '$oldest';

CREATE TABLE l_leg (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE t_leg (id int PRIMARY KEY, name text NOT NULL);
SELECT softmig.create_migration('m_legacy', 'l_leg', 't_leg');

CREATE TABLE l_mir (id int PRIMARY KEY, name text NOT NULL, tier text);
CREATE TABLE t_mir (id int PRIMARY KEY, name text NOT NULL, tier_code text);
INSERT INTO l_mir SELECT g, 'n' || g, 'gold' FROM generate_series(1, 100) g;
SELECT softmig.create_migration('m_mir', 'l_mir', 't_mir',
    forward => '{"tier_code": "upper(tier)"}', backward => '{"tier": "lower(tier_code)"}');
SELECT softmig.advance('m_mir');
});
$node->safe_psql('up', q{CALL softmig.backfill('m_mir')});
$node->safe_psql('up', q{
SELECT softmig.set_field_authority('m_mir', 'tier_code', 'new');
SELECT softmig.register_reader('m_mir', 'billing', 'consistency', 'g1');
SELECT softmig.create_read_view('m_mir', 'mir_read');

CREATE TABLE l_nw (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE t_nw (id int PRIMARY KEY, name text NOT NULL, badge text);
INSERT INTO l_nw VALUES (1, 'a'), (2, 'b');
SELECT softmig.create_migration('m_nw', 'l_nw', 't_nw', new_only => '{badge}');
SELECT softmig.advance('m_nw');
});
$node->safe_psql('up', q{CALL softmig.backfill('m_nw')});
$node->safe_psql('up', q{
SELECT softmig.advance('m_nw');
UPDATE t_nw SET badge = 'vip' WHERE id = 1;     -- new-only state: the envelope closes
});
$node->safe_psql('up', q{
BEGIN;
SET LOCAL softmig.operation_key = 'op-before';
INSERT INTO l_mir VALUES (500, 'before', 'silver');
COMMIT;
});
is($node->safe_psql('up', q{SELECT extversion FROM pg_extension WHERE extname = 'softmig'}),
	$oldest, "installed $oldest");

my $catalog_sql = q{
	SELECT string_agg(line, E'\n' ORDER BY line) FROM (
		SELECT format('%s %s %s %s', name, state, backfill_done, rollback_envelope) AS line
		  FROM (SELECT m->>'name' AS name, m->>'state' AS state, m->>'backfill_done' AS backfill_done,
		               m->>'envelope_open' AS rollback_envelope
		          FROM (SELECT softmig.status(n) AS m FROM unnest(ARRAY['m_legacy', 'm_mir', 'm_nw']) n) s) s2
		UNION ALL SELECT format('opkey %s', softmig.operation_applied('m_mir', 'op-before'))
		UNION ALL SELECT format('field %s %s', field, side) FROM softmig.field_authority
		UNION ALL SELECT format('reader %s %s %s', reader, class, switch_group) FROM softmig.readers('m_mir')
		UNION ALL SELECT format('history %s', count(*)) FROM softmig.history('m_mir')
	) l};
my $catalog_before = $node->safe_psql('up', $catalog_sql);

# a second session that has used the migrations (cached plans) stays open
# across the update
my $live = $node->background_psql('up', on_error_stop => 1);
$live->query_safe(q{INSERT INTO l_mir VALUES (600, 'live-before', 'gold')});

################################################################ the update
$node->safe_psql('up', 'ALTER EXTENSION softmig UPDATE');
is($node->safe_psql('up', q{SELECT extversion FROM pg_extension WHERE extname = 'softmig'}),
	$default, "updated to $default");
is($node->safe_psql('up', $catalog_sql), $catalog_before,
	'migrations, operation keys, field authority, readers and history are untouched');

################################################################ same objects as a fresh install
$node->safe_psql('fresh', 'CREATE EXTENSION softmig');

# One line per extension member and per property that matters.
my $inventory_sql = q{
WITH members AS (
	SELECT d.classid, d.objid, d.objsubid
	  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	 WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'softmig' AND d.deptype = 'e'
), lines AS (
	SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
	       || coalesce(' comment ' || md5(obj_description(objid, (SELECT relname FROM pg_class WHERE oid = classid))), ' no comment')
	  FROM members
	UNION ALL
	SELECT format('function %s(%s) returns %s lang %s vol %s strict %s secdef %s parallel %s leakproof %s cost %s rows %s config %s acl %s body %s',
	              p.oid::regproc, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
	              l.lanname, p.provolatile, p.proisstrict, p.prosecdef, p.proparallel, p.proleakproof,
	              p.procost, p.prorows, p.proconfig, p.proacl, md5(p.prosrc || coalesce(p.probin, '')))
	  FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
	  JOIN pg_language l ON l.oid = p.prolang
	UNION ALL
	SELECT format('relation %s kind %s acl %s persistence %s', c.oid::regclass, c.relkind, c.relacl, c.relpersistence)
	  FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
	UNION ALL
	SELECT format('column %s.%s %s notnull %s default %s ident %s gen %s acl %s', c.oid::regclass, a.attname,
	              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
	              a.attidentity, a.attgenerated, a.attacl)
	  FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
	  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
	UNION ALL
	SELECT format('view %s %s', c.oid::regclass, md5(pg_get_viewdef(c.oid)))
	  FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
	 WHERE c.relkind IN ('v', 'm')
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid))
	  FROM members m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
	UNION ALL
	SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
	  FROM members m JOIN pg_constraint co ON m.classid = 'pg_class'::regclass AND co.conrelid = m.objid
	UNION ALL
	SELECT format('trigger %s', pg_get_triggerdef(t.oid))
	  FROM members m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid
	 WHERE NOT t.tgisinternal
	UNION ALL
	SELECT format('enum %s %s %s', e.enumtypid::regtype, e.enumsortorder, e.enumlabel)
	  FROM members m JOIN pg_enum e ON m.classid = 'pg_type'::regclass AND e.enumtypid = m.objid
	UNION ALL
	SELECT format('type %s %s len %s align %s in %s out %s', t.oid::regtype, t.typtype, t.typlen, t.typalign,
	              t.typinput, t.typoutput)
	  FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
	UNION ALL
	SELECT format('operator %s code %s commutator %s negator %s restrict %s join %s', o.oid::regoperator,
	              o.oprcode, o.oprcom::regoperator, o.oprnegate::regoperator, o.oprrest, o.oprjoin)
	  FROM members m JOIN pg_operator o ON m.classid = 'pg_operator'::regclass AND o.oid = m.objid
	UNION ALL
	SELECT format('event trigger %s on %s enabled %s tags %s', et.evtname, et.evtevent, et.evtenabled, et.evttags)
	  FROM members m JOIN pg_event_trigger et ON m.classid = 'pg_event_trigger'::regclass AND et.oid = m.objid
	UNION ALL
	SELECT format('config %s %s', x.cfg::regclass, x.cond)
	  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
	 WHERE e.extname = 'softmig'
	UNION ALL
	SELECT format('schema %s owner-is-extension-owner %s acl %s', n.nspname,
	              n.nspowner = e.extowner, n.nspacl)
	  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
	 WHERE e.extname = 'softmig'
)
SELECT * FROM lines ORDER BY 1};

my @up = split /\n/, $node->safe_psql('up', $inventory_sql);
my @fresh = split /\n/, $node->safe_psql('fresh', $inventory_sql);
my %in_up = map { $_ => 1 } @up;
my %in_fresh = map { $_ => 1 } @fresh;
my @only_up = grep { !$in_fresh{$_} } @up;
my @only_fresh = grep { !$in_up{$_} } @fresh;
cmp_ok(scalar(@fresh), '>', 300, 'the inventory covers the extension (' . scalar(@fresh) . ' lines)');
ok(grep({ /^function softmig\.advance\(/ } @fresh) && grep({ /^column softmig\.migrations\./ } @fresh),
	'the inventory sees functions and catalog columns');
is(scalar(@only_up), 0, "nothing in the updated extension that a fresh $default lacks")
  or diag(join("\n", 'only after the update:', @only_up));
is(scalar(@only_fresh), 0, "nothing in a fresh $default that the update left out")
  or diag(join("\n", 'only in a fresh install:', @only_fresh));

################################################################ still working
# the session that was open across the update
$live->query_safe(q{INSERT INTO l_mir VALUES (601, 'live-after', 'gold')});
$live->query_safe(q{UPDATE t_mir SET tier_code = 'PLATINUM' WHERE id = 1});
is($live->query_safe(q{SELECT tier FROM l_mir WHERE id = 1}), 'platinum',
	'open session: a target-owned field still flows back to legacy');
$live->quit;

is($node->safe_psql('up', q{SELECT name || ' ' || tier_code FROM t_mir WHERE id IN (600, 601) ORDER BY id}),
	"live-before GOLD\nlive-after GOLD", 'rows written before and after the update were mirrored');
$node->safe_psql('up', q{UPDATE l_mir SET name = 'renamed' WHERE id = 2});
is($node->safe_psql('up', q{SELECT name FROM t_mir WHERE id = 2}), 'renamed', 'new session: mirroring works');
my ($rc, $out, $err) = $node->psql('up', q{INSERT INTO t_mir VALUES (900, 'x', 'X')});
like($err, qr/softmig|authority|mirrored/i, 'writes to the target are still refused in mirrored');
($rc, $out, $err) = $node->psql('up', q{
	BEGIN; SET LOCAL softmig.operation_key = 'op-before'; INSERT INTO l_mir VALUES (700, 'dup', 'gold'); COMMIT;});
like($err, qr/op-before/, 'an operation key applied before the update is still refused as a duplicate');
is($node->safe_psql('up', q{SELECT count(*) FROM l_mir WHERE id = 700}), '0', 'and the duplicate wrote nothing');
is($node->safe_psql('up', q{SELECT name FROM mir_read WHERE id = 2}), 'renamed', 'the routed view still reads');
is($node->safe_psql('up', q{SELECT (softmig.status('m_mir')->'triggers'->>'healthy')}), 'true',
	'triggers are healthy after the update');
is($node->safe_psql('up', q{SELECT softmig.advance('m_legacy')}), 'mirrored', 'state changes work');
($rc, $out, $err) = $node->psql('up', q{SELECT softmig.rollback('m_nw', reason => 'try')});
like($err, qr/envelope|new-only|new only/i, 'the closed envelope still refuses the rollback');
$node->safe_psql('up', q{UPDATE t_nw SET name = 'z' WHERE id = 2});
is($node->safe_psql('up', q{SELECT name FROM l_nw WHERE id = 2}), 'z', 'new_write still projects to legacy');

done_testing();
