# Key generators across databases: at the switch to new_write the target's
# identity moves past every key the legacy database gave out (they reached
# the target through the landing copy), so the first keyless insert on the
# target does not collide.  At the rollback the legacy database moves its
# serial past the keys the target gave out (they reached it through the
# reverse replication, caught up at the fence).
#
# About 10 seconds.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SoftmigTwo;
use Test::More;

my ($A, $B) = two_nodes('keys');
$A->safe_psql('postgres', q{
	CREATE TABLE legacy_orders (id bigserial PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL);
	INSERT INTO legacy_orders (cust, amount_cents) SELECT 'c' || g, g FROM generate_series(1, 3) g;
});
$B->safe_psql('postgres', q{
	CREATE TABLE orders (order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL,
	                     amount numeric(12,2) NOT NULL);
});
$B->safe_psql('postgres', sprintf(q{
	SELECT softmig.create_remote_migration('orders', 'public.legacy_orders', 'orders',
	    legacy_conninfo => $c$%s$c$, target_conninfo => $c$%s$c$,
	    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
	    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}')},
	$A->connstr('postgres'), $B->connstr('postgres')));

$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders')});
# keyless inserts on the legacy database, carried to the target
$A->safe_psql('postgres', q{INSERT INTO legacy_orders (cust, amount_cents) VALUES ('d', 4), ('e', 5)});
wait_forward($A, $B);
$B->safe_psql('postgres', q{CALL softmig.backfill('orders')});
is($B->safe_psql('postgres', q{SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM orders}),
	'1,2,3,4,5', 'the target holds legacy\'s keys (identity ALWAYS, written OVERRIDING SYSTEM VALUE)');

$B->safe_psql('postgres', q{CALL softmig.remote_advance('orders', reason => 'service live')});
is($B->safe_psql('postgres', q{SELECT softmig.state('orders'::text)}), 'new_write', 'switched to new_write');
is($B->safe_psql('postgres', q{INSERT INTO orders (customer, amount) VALUES ('F', 6) RETURNING order_id}),
	'6', 'the first keyless insert on the target draws past legacy\'s keys');
like($B->safe_psql('postgres', q{SELECT detail::text FROM softmig.history('orders') WHERE action = 'key_handover'}),
	qr/"moved": true, "column": "order_id"/, 'history records the handover');
wait_reverse($A, $B);
is($A->safe_psql('postgres', q{SELECT cust || ' ' || amount_cents FROM legacy_orders WHERE id = 6}),
	'f 600', 'the target-born row reached the legacy database');

# the rollback: the legacy database takes keyless inserts again
$B->safe_psql('postgres', q{CALL softmig.remote_rollback('orders', 'back')});
is($A->safe_psql('postgres', q{SELECT state FROM softmig.remote_migrations WHERE name = 'orders'}), 'mirrored',
	'the legacy database is back in mirrored');
is($A->safe_psql('postgres', q{INSERT INTO legacy_orders (cust, amount_cents) VALUES ('g', 7) RETURNING id}),
	'7', 'the first keyless insert on legacy draws past the target\'s keys');
like($A->safe_psql('postgres', q{SELECT detail::text FROM softmig.history_log WHERE action = 'key_handover'}),
	qr/"moved": true, "column": "id"/, 'the legacy database records its handover');
wait_forward($A, $B);
is($B->safe_psql('postgres', q{SELECT string_agg(order_id || customer, ',' ORDER BY order_id) FROM orders}),
	'1C1,2C2,3C3,4D,5E,6F,7G', 'the target follows');

done_testing();
