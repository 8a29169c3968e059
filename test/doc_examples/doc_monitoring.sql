-- Fixture for the examples in doc/monitoring.md: a migration "orders" in
-- legacy with rows to backfill.
CREATE EXTENSION softmig;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, amount_cents int NOT NULL);
CREATE TABLE public.orders (order_id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL);
INSERT INTO public.legacy_orders SELECT g, 'c' || g, g FROM generate_series(1, 3000) g;
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "amount_cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "amount_cents": "(amount * 100)::int"}');
