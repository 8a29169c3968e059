# The lifecycle of a group under load: orders and order_items, a foreign
# key on each side, moved together by advance_group and rollback_group
# (mirrored -> new_write -> mirrored -> new_write -> new_read -> new_write
# -> new_read, then cutover) while pgbench clients insert orders with
# their items (children before their parents too, under a deferred key),
# add, update and delete items and orders, always on the write authority
# of the moment.  Every state change, both backfills and the target's
# foreign key happen while the clients write.
#
# What must hold: no client transaction fails (pgbench counts none and no
# client aborts), every state change succeeds (a lock timeout is retried),
# the clients wrote in every state, and at the end parity finds nothing on
# either member, both sides' foreign keys are valid and no child is
# orphaned on either side.
#
# Knobs: GROUP_SOAK_PHASE_SECONDS (default 5, each of the nine phases) and
# GROUP_SOAK_CLIENTS (default 3).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $phase_seconds = $ENV{GROUP_SOAK_PHASE_SECONDS} // 5;
my $clients = $ENV{GROUP_SOAK_CLIENTS} // 3;

my $node = PostgreSQL::Test::Cluster->new('group_soak');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'softmig'
max_connections = 30
log_min_messages = warning
});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION softmig;
CREATE SCHEMA shop;
CREATE SCHEMA shop_v2;
CREATE TABLE shop.orders (id int PRIMARY KEY, customer text NOT NULL, note text);
CREATE TABLE shop.order_items (id int PRIMARY KEY, order_id int NOT NULL,
    sku text NOT NULL, qty int NOT NULL,
    CONSTRAINT items_order_l FOREIGN KEY (order_id) REFERENCES shop.orders ON DELETE CASCADE
        DEFERRABLE INITIALLY IMMEDIATE);
CREATE INDEX ON shop.order_items (order_id);
CREATE TABLE shop_v2.orders (id int PRIMARY KEY, customer text NOT NULL, note text);
CREATE TABLE shop_v2.order_items (id int PRIMARY KEY, order_id int NOT NULL,
    sku text NOT NULL, qty int NOT NULL);
CREATE INDEX ON shop_v2.order_items (order_id);
INSERT INTO shop.orders SELECT g, 'c' || g FROM generate_series(1, 300) g;
INSERT INTO shop.order_items SELECT 10 * o + i, o, 'sku' || i, i
  FROM generate_series(1, 300) o, generate_series(1, 2) i;

SELECT softmig.create_migration('orders', 'shop.orders', 'shop_v2.orders');
SELECT softmig.create_migration('order_items', 'shop.order_items', 'shop_v2.order_items');
SELECT softmig.create_group('shop', ARRAY['orders', 'order_items']);
SELECT softmig.advance_group('shop');

-- the clients' side of the soak
CREATE SCHEMA soak;
CREATE SEQUENCE soak.order_ids START 100000;
CREATE SEQUENCE soak.item_ids START 10000000;
CREATE UNLOGGED TABLE soak.seen (state text, op int);

-- an existing order id (NULL if none), an old one or a new one, locked in
-- mode (FOR UPDATE when the caller changes the order: no upgrade later)
CREATE FUNCTION soak.some_order(s text, mode text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_from int := CASE WHEN random() < 0.5 THEN (random() * 300)::int
                       ELSE 100000 + (random() * ((SELECT last_value FROM soak.order_ids) - 100000))::int END;
    v int;
BEGIN
    -- a concurrent delete of the order waits for us, or we skip the order
    -- it deleted
    EXECUTE format('SELECT id FROM %I.orders WHERE id >= $1 ORDER BY id LIMIT 1 FOR %s', s, mode)
       INTO v USING v_from;
    RETURN v;
END $$;

-- one client transaction; op picks what it does
CREATE FUNCTION soak.tx(op int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    st text;
    s text;
    fk text;
    o int;
BEGIN
    -- the state cannot change between reading it and writing: a state
    -- change locks the members' tables against writers
    LOCK TABLE shop.orders, shop.order_items, shop_v2.orders, shop_v2.order_items IN ROW EXCLUSIVE MODE;
    SELECT m.state::text INTO st FROM softmig.migrations m WHERE m.name = 'orders';
    s := CASE WHEN st IN ('legacy', 'mirrored') THEN 'shop' ELSE 'shop_v2' END;
    fk := CASE WHEN s = 'shop' THEN 'items_order_l' ELSE 'items_order_t' END;
    INSERT INTO soak.seen VALUES (st, op);
    IF op <= 3 THEN                 -- an order and its items, parent first
        o := nextval('soak.order_ids');
        EXECUTE format('INSERT INTO %I.orders VALUES ($1, $2)', s) USING o, 'new' || o;
        EXECUTE format('INSERT INTO %I.order_items SELECT nextval(''soak.item_ids''), $1, ''sku'' || i, i
                          FROM generate_series(1, 1 + $1 %% 3) i', s) USING o;
    ELSIF op = 4 THEN               -- the items before their order, the written side's key deferred
        IF s = 'shop_v2' AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'items_order_t') THEN
            RETURN;
        END IF;
        o := nextval('soak.order_ids');
        EXECUTE format('SET CONSTRAINTS %I.%I DEFERRED', s, fk);
        EXECUTE format('INSERT INTO %I.order_items SELECT nextval(''soak.item_ids''), $1, ''early'' || i, i
                          FROM generate_series(1, 2) i', s) USING o;
        EXECUTE format('INSERT INTO %I.orders VALUES ($1, $2)', s) USING o, 'late' || o;
    ELSIF op = 5 THEN               -- one more item for an order
        o := soak.some_order(s, 'KEY SHARE');
        IF o IS NOT NULL THEN
            EXECUTE format('INSERT INTO %I.order_items VALUES (nextval(''soak.item_ids''), $1, ''more'', 7)', s) USING o;
        END IF;
    ELSIF op = 6 THEN               -- an order's customer
        o := soak.some_order(s, 'UPDATE');
        EXECUTE format('UPDATE %I.orders SET customer = customer || ''+'', note = now()::text
                         WHERE id = $1', s) USING o;
    ELSIF op = 7 THEN               -- an order, then its items
        o := soak.some_order(s, 'UPDATE');
        EXECUTE format('UPDATE %I.orders SET note = ''bulk'' WHERE id = $1', s) USING o;
        EXECUTE format('UPDATE %I.order_items SET qty = qty + 1 WHERE order_id = $1', s) USING o;
    ELSIF op = 8 THEN               -- an item
        o := soak.some_order(s, 'KEY SHARE');
        EXECUTE format('DELETE FROM %I.order_items WHERE id = (SELECT min(id) FROM %I.order_items
                         WHERE order_id = $1)', s, s) USING o;
    ELSE                            -- an order, its items by the keys' cascades
        o := soak.some_order(s, 'UPDATE');
        EXECUTE format('DELETE FROM %I.orders WHERE id = $1', s) USING o;
    END IF;
END $$;
});

my $script = $node->basedir . '/client.sql';
PostgreSQL::Test::Utils::append_to_file($script,
	"\\set op random(1, 9)\nSELECT soak.tx(:op);\n");

my $failures = 0;
my $phase = 0;
my $stuck;		# a state change failed: the later phases would not mean much

# Runs the clients for one phase and, while they write, $during (a code
# ref).  Checks that no client transaction failed.
sub phase
{
	my ($label, $during) = @_;
	$phase++;
	if ($stuck)
	{
		fail("phase $phase ($label): not run, $stuck");
		return;
	}
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '--failures-detailed', '-c', $clients, '-j', $clients, '-T', $phase_seconds,
			'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
	usleep(1_000_000);
	$during->() if $during;
	$h->finish;
	my $rc = $? >> 8;
	my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	ok($rc == 0 && ($done // 0) > 0 && defined $failed && $failed == 0
		  && $err !~ /aborted|ERROR/,
		"phase $phase ($label): " . ($done // 0) . " client transactions, none failed")
	  or do { $failures++; diag("pgbench exit $rc\n$out\n$err") };
}

# a state change of the group while the clients write, retried on a lock
# timeout (the writers held a member's table longer than lock_timeout)
sub move
{
	my ($sql, $want) = @_;
	for my $try (1 .. 10)
	{
		my ($rc, $out, $err) = $node->psql('postgres', $sql);
		if ($rc == 0)
		{
			is($out, $want, "$sql under load: $want")
			  or $stuck = "$sql gave $out";
			return;
		}
		next if $err =~ /could not lock the tables of group/;
		fail("$sql under load: $err");
		$stuck = "$sql failed";
		return;
	}
	fail("$sql under load: lock timeouts every time");
	$stuck = "$sql timed out";
}

# mirrored: both members backfilled while the clients write
phase('mirrored, backfill', sub {
	$node->safe_psql('postgres', q{
		CALL softmig.backfill('orders', batch_size => 50);
		CALL softmig.backfill('order_items', batch_size => 50);
	});
});
# the target's foreign key, once every parent is there
phase('mirrored, the target key', sub {
	$node->safe_psql('postgres', q{
		BEGIN;
		-- the clients' lock order (parent, then child): ADD CONSTRAINT
		-- alone would take the child first and deadlock with them
		LOCK TABLE shop_v2.orders, shop_v2.order_items IN SHARE ROW EXCLUSIVE MODE;
		ALTER TABLE shop_v2.order_items ADD CONSTRAINT items_order_t FOREIGN KEY (order_id)
		    REFERENCES shop_v2.orders ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE NOT VALID;
		COMMIT;
		ALTER TABLE shop_v2.order_items VALIDATE CONSTRAINT items_order_t;
	});
});
phase('mirrored -> new_write', sub { move("SELECT softmig.advance_group('shop')", 'new_write') });
phase('new_write -> mirrored', sub { move("SELECT softmig.rollback_group('shop', 'soak')", 'mirrored') });
phase('mirrored -> new_write', sub { move("SELECT softmig.advance_group('shop')", 'new_write') });
phase('new_write -> new_read', sub { move("SELECT softmig.advance_group('shop')", 'new_read') });
phase('new_read -> new_write', sub { move("SELECT softmig.rollback_group('shop', 'soak')", 'new_write') });
phase('new_write -> new_read', sub { move("SELECT softmig.advance_group('shop')", 'new_read') });
phase('new_read');

is($failures, 0, 'no client transaction failed in any phase');
is( $node->safe_psql('postgres',
		q{SELECT string_agg(state, ' ' ORDER BY state) FROM (SELECT DISTINCT state FROM soak.seen) s}),
	'mirrored new_read new_write',
	'the clients wrote in every state');
cmp_ok(
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM soak.seen WHERE op = 4 AND state <> 'mirrored'}),
	'>', 0, 'children came before their parents in new_write and new_read too');

# the end: both members equal through their mappings, keys valid, no orphans
is($node->safe_psql('postgres', q{SELECT count(*) FROM softmig.parity('orders')}),
	'0', 'parity finds nothing on orders');
is($node->safe_psql('postgres', q{SELECT count(*) FROM softmig.parity('order_items')}),
	'0', 'parity finds nothing on order_items');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(conrelid::regclass || ':' || convalidated, ' ' ORDER BY conname)
		  FROM pg_constraint WHERE conname IN ('items_order_l', 'items_order_t')}),
	'shop.order_items:true shop_v2.order_items:true',
	'both foreign keys are there and valid');
is( $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM shop.order_items i
		         WHERE NOT EXISTS (SELECT 1 FROM shop.orders o WHERE o.id = i.order_id))
		     + (SELECT count(*) FROM shop_v2.order_items i
		         WHERE NOT EXISTS (SELECT 1 FROM shop_v2.orders o WHERE o.id = i.order_id))}),
	'0', 'no orphaned child on either side');
my ($orders, $items) = split /\|/, $node->safe_psql('postgres',
	q{SELECT (SELECT count(*) FROM shop_v2.orders), (SELECT count(*) FROM shop_v2.order_items)});
cmp_ok($orders, '>', 300, "orders were created meanwhile ($orders)");
note "$orders orders, $items items at the end";
# one entity seen whole: an order the clients made, with its items
is( $node->safe_psql('postgres', q{
		SELECT p->>'rows' = (1 + (SELECT count(*) FROM shop_v2.order_items WHERE order_id = o.id))::text
		       AND p->>'equal' = p->>'rows'
		  FROM (SELECT max(order_id) AS id FROM shop_v2.order_items) o,
		       LATERAL (SELECT softmig.inspect_group('shop', jsonb_build_object('id', o.id)) -> 'parity' AS p) i}),
	't', 'inspect_group shows the newest order and all its items, equal on both sides');
is($node->safe_psql('postgres', q{SELECT count(*) FROM softmig.envelope e WHERE NOT e.open}),
	'0', 'both envelopes are open');

# cutover, the group's last step, with every guard
is( $node->safe_psql('postgres',
		q{SELECT softmig.advance_group('shop')}),
	'cutover', 'the group reaches cutover');

$node->stop;
done_testing();
