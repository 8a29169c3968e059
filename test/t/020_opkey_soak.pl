# Duplicate-injection soak for operation keys (issue 5).
#
# pgbench clients apply "shipments", each one a domain operation with its
# own key, while the migration advances mirrored -> new_write -> new_read
# under load.  Row identity changes between the paths exactly the way that
# makes retries dangerous: every attempt takes a fresh id from a sequence,
# so only the operation key can tell a retry from a new shipment.  The
# writer function writes whichever table softmig says has the write
# authority and, when the state changes under it (SM001), the other one.
#
# Clients inject duplicates on purpose:
#   - lost reply:   the operation commits, the client never hears, replays;
#   - lost commit:  the first attempt dies before COMMIT (ROLLBACK), replays;
#   - shared pool:  operations whose keys come from a small pool shared by
#                   all clients, so the same operation races itself on
#                   several connections, before and after the switch.
# A replay answered with the operation key's 23505 counts as "already
# applied" (success); any other error aborts the client and fails the test.
#
# At the end every operation must have been applied exactly once, on both
# sides: one row per key in legacy, one in the target, one ledger entry,
# one "applied" answer, and nothing without a key.
#
# Knobs: SOFTMIG_SOAK_SECONDS (default 20), SOFTMIG_SOAK_CLIENTS (default 4).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $seconds = $ENV{SOFTMIG_SOAK_SECONDS} // 20;
my $clients = $ENV{SOFTMIG_SOAK_CLIENTS} // 4;

my $node = PostgreSQL::Test::Cluster->new('opkey_soak');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
synchronous_commit = off
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION softmig;
	CREATE SEQUENCE ship_ids;
	CREATE TABLE legacy_ship (id bigint PRIMARY KEY DEFAULT nextval('ship_ids'),
	                          op text NOT NULL, qty int NOT NULL);
	CREATE TABLE new_ship (ship_id bigint PRIMARY KEY, op text NOT NULL, quantity int NOT NULL,
	                       created_at timestamptz NOT NULL DEFAULT now());
	SELECT softmig.create_migration('soak', 'legacy_ship', 'new_ship',
	    forward  => '{"ship_id": "id", "quantity": "qty"}',
	    backward => '{"id": "ship_id", "qty": "quantity"}');
	SELECT softmig.advance('soak');

	-- what the clients were told, per attempt (not part of the migration)
	CREATE TABLE soak_log (key text NOT NULL, outcome text NOT NULL, side text NOT NULL,
	                       at timestamptz NOT NULL DEFAULT clock_timestamp());

	-- the application's write path: the table with the write authority, the
	-- other one when the authority moved under us (SM001)
	CREATE FUNCTION authority() RETURNS text LANGUAGE sql AS $$
	    SELECT CASE WHEN softmig.state('soak'::text)::text IN ('legacy', 'mirrored')
	                THEN 'legacy' ELSE 'new' END
	$$;
	CREATE FUNCTION ship(p_key text) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
	    v_side text := authority();
	BEGIN
	    FOR attempt IN 1..4 LOOP
	        BEGIN
	            IF v_side = 'legacy' THEN
	                INSERT INTO legacy_ship (op, qty) VALUES (p_key, 1);
	            ELSE
	                INSERT INTO new_ship (ship_id, op, quantity) VALUES (nextval('ship_ids'), p_key, 1);
	            END IF;
	            RETURN v_side;
	        EXCEPTION WHEN SQLSTATE 'SM001' THEN
	            v_side := CASE v_side WHEN 'legacy' THEN 'new' ELSE 'legacy' END;
	        END;
	    END LOOP;
	    RAISE EXCEPTION 'no side accepted operation %', p_key;
	END $$;
	-- one operation under its key; 23505 from the ledger = already applied
	CREATE FUNCTION soak_op(p_key text) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
	    v_side text;
	    v_msg text;
	BEGIN
	    PERFORM set_config('softmig.operation_key', p_key, true);
	    BEGIN
	        v_side := ship(p_key);
	    EXCEPTION WHEN unique_violation THEN
	        GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
	        IF v_msg NOT LIKE 'operation key %' THEN
	            RAISE;
	        END IF;
	        INSERT INTO soak_log (key, outcome, side) VALUES (p_key, 'duplicate', authority());
	        RETURN 'duplicate';
	    END;
	    INSERT INTO soak_log (key, outcome, side) VALUES (p_key, 'applied', v_side);
	    RETURN 'applied';
	END $$;
});

# The hazard is real: without a key, a replay is a second shipment.
$node->safe_psql('postgres', q{
	INSERT INTO legacy_ship (op, qty) VALUES ('control', 1);
	INSERT INTO legacy_ship (op, qty) VALUES ('control', 1);
});
is($node->safe_psql('postgres',
		q{SELECT (SELECT count(*) FROM legacy_ship WHERE op = 'control') || '/' ||
		         (SELECT count(*) FROM new_ship WHERE op = 'control')}),
	'2/2', 'without an operation key a replay duplicates the shipment on both sides');
$node->safe_psql('postgres', q{DELETE FROM legacy_ship WHERE op = 'control'});

my $script = "$PostgreSQL::Test::Utils::tmp_check/opkey_soak.pgbench";
open(my $fh, '>', $script) or die "cannot write $script: $!";
print $fh <<'PGBENCH';
\set r random(1, 100)
\set n random(1, 1000000000000)
\set p random(1, 300)
\if :r <= 10
SELECT soak_op('pool-' || :p);
\elif :r <= 20
BEGIN;
SELECT soak_op('c' || :client_id || '-' || :n);
ROLLBACK;
SELECT soak_op('c' || :client_id || '-' || :n);
\elif :r <= 45
SELECT soak_op('c' || :client_id || '-' || :n);
SELECT soak_op('c' || :client_id || '-' || :n);
\else
SELECT soak_op('c' || :client_id || '-' || :n);
\endif
PGBENCH
close($fh);

my ($out, $err) = ('', '');
my $pgbench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', $clients, '-j', $clients, '-T', $seconds,
		'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$out, '2>', \$err);

# Move the write authority under load; a state change that cannot get its
# locks within lock_timeout (55P03) changes nothing and is retried.
sub advance_under_load
{
	my ($to) = @_;
	for my $try (1 .. 20)
	{
		my ($ret, $stdout, $stderr) = $node->psql('postgres',
			"SELECT softmig.advance('soak', '$to', reason => 'soak', force => true)");
		return pass("advanced to $to under load") if $ret == 0;
		if ($stderr !~ /could not lock tables/)
		{
			fail("advance to $to");
			diag($stderr);
			return;
		}
		sleep(0.2);
	}
	fail("advance to $to: tables never lockable");
}

sleep($seconds * 0.3);
advance_under_load('new_write');
sleep($seconds * 0.3);
advance_under_load('new_read');
$pgbench->finish;

is($pgbench->result(0), 0, 'pgbench finished without errors')
  or diag("stdout:\n$out\nstderr:\n$err");
like($out, qr/number of failed transactions: 0 /, 'no client transaction failed');
note($out);

is($node->safe_psql('postgres', q{SELECT softmig.state('soak'::text)}),
	'new_read', 'the migration ended in new_read');

# fresh statistics, or the checks below run as nested loops over 100k+ rows
$node->safe_psql('postgres', 'ANALYZE');
my $q = sub { $node->safe_psql('postgres', shift) };

my $ops = $q->(q{
	SELECT count(*) FROM softmig.operations
	 WHERE migration_id = (SELECT id FROM softmig.migrations WHERE name = 'soak')});
cmp_ok($ops, '>', 100, "a real load ran ($ops operations applied)");

# exactly once on each side
is($q->(q{SELECT count(*) || '/' || count(DISTINCT op) FROM legacy_ship}),
	"$ops/$ops", 'legacy: one row per operation');
is($q->(q{SELECT count(*) || '/' || count(DISTINCT op) FROM new_ship}),
	"$ops/$ops", 'target: one row per operation');
is($q->(q{
	SELECT count(*) FROM softmig.operations o
	  FULL JOIN legacy_ship l ON l.op = o.key
	  FULL JOIN new_ship t ON t.op = coalesce(o.key, l.op)
	 WHERE o.key IS NULL OR l.op IS NULL OR t.op IS NULL OR l.id <> t.ship_id}),
	'0', 'ledger keys, legacy rows and target rows are the same set of operations');

# what the clients were told agrees
is($q->(q{
	SELECT count(*) FROM (SELECT key FROM soak_log WHERE outcome = 'applied'
	                       GROUP BY key HAVING count(*) <> 1) x}),
	'0', 'no operation was reported applied twice');
is($q->(q{SELECT count(*) FROM soak_log WHERE outcome = 'applied'}),
	$ops, 'every ledger entry was reported applied exactly once');
is($q->(q{
	SELECT count(*) FROM soak_log s
	 WHERE s.outcome = 'duplicate'
	   AND NOT EXISTS (SELECT 1 FROM softmig.operations o WHERE o.key = s.key)}),
	'0', 'every replay refused as a duplicate names an applied operation');

# the duplicates were really injected, on both paths and across the switch
my ($dups, $lost_commit, $pool_races, $cross) = split /\|/, $q->(q{
	SELECT (SELECT count(*) FROM soak_log WHERE outcome = 'duplicate'),
	       (SELECT count(*) FROM softmig.operations WHERE key LIKE 'c%') -
	       (SELECT count(DISTINCT key) FROM soak_log WHERE key LIKE 'c%' AND outcome = 'duplicate'),
	       (SELECT count(*) FROM (SELECT key FROM soak_log WHERE key LIKE 'pool-%'
	                               GROUP BY key HAVING count(*) > 1) x),
	       (SELECT count(*) FROM soak_log s JOIN softmig.operations o ON o.key = s.key
	         WHERE s.outcome = 'duplicate' AND s.side = 'new' AND o.side = 'legacy')});
cmp_ok($dups, '>', 0, "replays were refused as duplicates ($dups)");
cmp_ok($pool_races, '>', 0, "shared-pool operations were attempted more than once ($pool_races keys)");
cmp_ok($cross, '>', 0,
	"operations applied on legacy were refused when replayed on the target ($cross)");
is($q->(q{SELECT string_agg(DISTINCT side::text, ',' ORDER BY side::text) FROM softmig.operations}),
	'legacy,new', 'keys were claimed on both sides');

$node->stop;
done_testing();
