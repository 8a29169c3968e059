-- Fixture for the examples in doc/read-paths.md: a migration in mirrored.
CREATE EXTENSION softmig;
CREATE SCHEMA reporting;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL);
CREATE TABLE public.orders (id bigint PRIMARY KEY, cust text NOT NULL);
INSERT INTO public.legacy_orders SELECT g, 'c' || g FROM generate_series(1, 100) g;
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders');
SELECT softmig.advance('orders');
