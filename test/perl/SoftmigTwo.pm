# Two PostgreSQL clusters for the cross-database tests (test/t/11*_remote_*.pl).
#
# Node "legacy" holds legacy_orders, node "target" holds orders; both run
# softmig with wal_level = logical, on unix sockets in the test's temp
# directory (nothing listens on TCP).  The helpers define the migration,
# wait for replication, compare both sides row by row through the mapping,
# and run pgbench load in the background.
package SoftmigTwo;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT = qw(two_nodes define_orders tag_of wait_forward wait_reverse wait_direction
  same_data start_pgbench finish_pgbench writing app_functions sqlstate_of wait_until);

# The forward mapping of the tests' migration, in SQL over legacy_orders.
my $MAPPED = q{SELECT id AS i, upper(cust) AS c, (amount_cents / 100.0)::numeric(12,2) AS m FROM legacy_orders};

# Two nodes, started, softmig created in database postgres on both.
sub two_nodes
{
	my ($name, %opt) = @_;
	my @nodes;
	for my $side ('legacy', 'target')
	{
		my $n = PostgreSQL::Test::Cluster->new("${name}_$side");
		$n->init(allows_streaming => 'logical');
		$n->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
max_replication_slots = 10
max_wal_senders = 10
max_worker_processes = 16
max_connections = 60
wal_receiver_timeout = 5s
wal_sender_timeout = 5s
wal_retrieve_retry_interval = 200ms
restart_after_crash = on
log_min_messages = warning
softmig.remote_timeout = '30s'
} . ($opt{conf} // ''));
		$n->start;
		$n->safe_psql('postgres', 'CREATE EXTENSION softmig');
		push @nodes, $n;
	}
	return @nodes;
}

# legacy_orders on the legacy node ($rows rows), orders on the target node,
# and the migration "orders" between them.
sub define_orders
{
	my ($A, $B, $rows, %opt) = @_;
	$A->safe_psql('postgres', qq{
		CREATE TABLE legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL);
		INSERT INTO legacy_orders SELECT g, 'c' || g, g % 5000 FROM generate_series(1, $rows) g;
	});
	$B->safe_psql('postgres', q{
		CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL,
		                     amount numeric(12,2) NOT NULL, gift_note text);
	});
	my $opts = $opt{options} // '{}';
	$B->safe_psql('postgres', sprintf(q{
		SELECT softmig.create_remote_migration('orders', 'public.legacy_orders', 'orders',
		    legacy_conninfo => %s, target_conninfo => %s,
		    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
		    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}',
		    new_only => '{gift_note}', options => %s)},
		quote($A->connstr('postgres')), quote($B->connstr('postgres')), quote($opts)));
	return;
}

sub quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub tag_of
{
	my ($B) = @_;
	return $B->safe_psql('postgres', q{SELECT tag FROM softmig.remote_migrations WHERE name = 'orders'});
}

# Poll $sql on $node until it returns 't' (or die after $secs seconds).
sub wait_until
{
	my ($node, $sql, $what, $secs) = @_;
	$secs //= 60;
	my $deadline = time() + $secs;
	while (time() < $deadline)
	{
		my ($rc, $out) = $node->psql('postgres', $sql);
		return 1 if $rc == 0 && $out eq 't';
		sleep 0.1;
	}
	die "timed out waiting for $what";
}

# Wait until the target node has applied everything the legacy node wrote
# (and its initial synchronization is over), or the other way round.
sub wait_forward
{
	my ($A, $B) = @_;
	my $tag = tag_of($B);
	wait_until($B, qq{SELECT count(*) = 0 FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
	                   WHERE s.subname = '${tag}_fwd' AND r.srsubstate <> 'r'}, 'the initial synchronization');
	$A->wait_for_catchup("${tag}_fwd");
	return;
}

sub wait_reverse
{
	my ($A, $B) = @_;
	$B->wait_for_catchup(tag_of($B) . '_rev');
	return;
}

# Catch up in whichever direction runs now.
sub wait_direction
{
	my ($A, $B) = @_;
	my $st = $B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)});
	if ($st eq 'mirrored') { wait_forward($A, $B) }
	elsif ($st ne 'legacy' && $st ne 'cutover') { wait_reverse($A, $B) }
	return $st;
}

# Both sides hold the same data: the legacy table through the mapping equals
# the target, and the landing copy equals the legacy table.  Returns true.
sub same_data
{
	my ($A, $B, $what) = @_;
	my $l = $A->safe_psql('postgres', "SELECT string_agg(format('%s|%s|%s', x.i, x.c, x.m), E'\\n' ORDER BY x.i) FROM ($MAPPED) x");
	my $t = $B->safe_psql('postgres',
		q{SELECT string_agg(format('%s|%s|%s', order_id, customer, amount), E'\n' ORDER BY order_id) FROM orders});
	my $raw_l = $A->safe_psql('postgres', q{SELECT md5(string_agg(x::text, ',' ORDER BY x.id)) FROM legacy_orders x});
	my $raw_c = $B->safe_psql('postgres', q{SELECT md5(string_agg(x::text, ',' ORDER BY x.id)) FROM legacy_orders x});
	my $n = () = $l =~ /\n/g;
	my $ok = ok($l eq $t, "$what: legacy (through the mapping) equals the target, " . ($n + 1) . ' rows');
	if (!$ok)
	{
		my %ls = map { $_ => 1 } split /\n/, $l;
		my %ts = map { $_ => 1 } split /\n/, $t;
		my @only_l = grep { !$ts{$_} } sort keys %ls;
		my @only_t = grep { !$ls{$_} } sort keys %ts;
		diag("only in legacy: @only_l[0 .. ($#only_l < 9 ? $#only_l : 9)]") if @only_l;
		diag("only in target: @only_t[0 .. ($#only_t < 9 ? $#only_t : 9)]") if @only_t;
	}
	is($raw_c, $raw_l, "$what: the landing copy equals the legacy table");
	return $ok;
}

# Application functions on both nodes: one operation under its key, written
# to the local table; refusals (SM001) and replays (23505 of the key) are
# logged, not raised.  Kinds: 0 insert (or bump), 1 update, 2 delete.
sub app_functions
{
	my ($A, $B) = @_;
	for my $x ([ $A, 'legacy_orders', 'id', 'cust', 'amount_cents', '1' ],
		[ $B, 'orders', 'order_id', 'customer', 'amount', '0.01' ])
	{
		my ($node, $tbl, $id, $cust, $amt, $one) = @$x;
		my $ins = $tbl eq 'orders'
		  ? "INSERT INTO orders VALUES (p_id, 'N' || p_id, p_id % 5000 / 100.0, NULL) ON CONFLICT (order_id) DO UPDATE SET amount = orders.amount + 0.01"
		  : "INSERT INTO legacy_orders VALUES (p_id, 'n' || p_id, p_id % 5000) ON CONFLICT (id) DO UPDATE SET amount_cents = legacy_orders.amount_cents + 1";
		my $upd_cust = $tbl eq 'orders' ? "'U' || p_id" : "'u' || p_id";
		$node->safe_psql('postgres', qq{
			CREATE TABLE app_log (op text PRIMARY KEY, outcome text NOT NULL, kind int, id bigint,
			                      at timestamptz NOT NULL DEFAULT clock_timestamp());
			CREATE FUNCTION app_write(p_op text, p_id bigint, p_kind int) RETURNS text LANGUAGE plpgsql AS \$\$
			DECLARE
			    v_msg text;
			BEGIN
			    PERFORM set_config('softmig.operation_key', p_op, true);
			    BEGIN
			        IF p_kind = 0 THEN
			            $ins;
			        ELSIF p_kind = 1 THEN
			            UPDATE $tbl SET $amt = $amt + $one, $cust = $upd_cust WHERE $id = p_id;
			        ELSE
			            DELETE FROM $tbl WHERE $id = p_id;
			        END IF;
			    EXCEPTION
			        WHEN SQLSTATE 'SM001' THEN
			            INSERT INTO app_log VALUES (p_op, 'refused', p_kind, p_id) ON CONFLICT (op) DO NOTHING;
			            RETURN 'refused';
			        WHEN unique_violation THEN
			            GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
			            IF v_msg NOT LIKE 'operation key %' THEN
			                RAISE;
			            END IF;
			            INSERT INTO app_log VALUES (p_op, 'duplicate', p_kind, p_id) ON CONFLICT (op) DO NOTHING;
			            RETURN 'duplicate';
			    END;
			    INSERT INTO app_log VALUES (p_op, 'applied', p_kind, p_id)
			        ON CONFLICT (op) DO UPDATE SET outcome = 'applied', at = clock_timestamp();
			    RETURN 'applied';
			END \$\$;
		});
	}
	return;
}

# pgbench in the background against $node: app_write with random ids and
# kinds, keys unique per transaction.  Returns a handle for finish_pgbench.
sub start_pgbench
{
	my ($node, $secs, $clients, $tag, $ids, $lo) = @_;
	$ids //= 40000;
	$lo //= 1;
	my $script = "$PostgreSQL::Test::Utils::tmp_check/$tag.pgbench";
	open(my $fh, '>', $script) or die "cannot write $script: $!";
	print $fh <<"PGBENCH";
\\set id random($lo, $ids)
\\set kind random(0, 9)
\\set op random(1, 1000000000000)
SELECT app_write('$tag:' || :client_id || ':' || :op, :id, CASE WHEN :kind < 4 THEN 0 WHEN :kind < 8 THEN 1 ELSE 2 END);
PGBENCH
	close($fh);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-T', $secs, '-c', $clients, '-j', $clients, '-f', $script,
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err, tag => $tag };
}

# Wait until a background load tagged $tag has called app_write on $node at
# least ten times (applied or refused), so that a step taken next runs under
# it: a fixed sleep is not enough on a busy machine.
sub writing
{
	my ($node, $tag) = @_;
	wait_until($node, qq{SELECT count(*) >= 10 FROM app_log WHERE op LIKE '$tag:%'}, "the load $tag");
	return;
}

# Wait for a background pgbench; it must have run without aborted clients.
sub finish_pgbench
{
	my ($p) = @_;
	$p->{h}->finish;
	my $rc = $p->{h}->result(0);
	my ($tx) = ${ $p->{out} } =~ /number of transactions actually processed: (\d+)/;
	ok($rc == 0 && defined $tx && $tx > 0, "pgbench $p->{tag}: " . ($tx // 0) . ' transactions, no client aborted')
	  or diag(${ $p->{err} });
	return $tx // 0;
}

# The SQLSTATE a statement fails with, or 'ok'.
sub sqlstate_of
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return 'ok' if $rc == 0 && $err !~ /ERROR/;
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "rc $rc: $err";
}

1;
