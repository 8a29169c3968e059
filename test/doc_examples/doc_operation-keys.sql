-- Fixture for the examples in doc/operation-keys.md: a migration in mirrored.
CREATE EXTENSION softmig;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL);
CREATE TABLE public.orders (id bigint PRIMARY KEY, cust text NOT NULL);
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders');
SELECT softmig.advance('orders');
