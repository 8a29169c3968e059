-- Fixture for the examples in doc/reference.md: the tables they assume
-- (the examples define the migration themselves).
CREATE EXTENSION softmig;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, status text);
CREATE TABLE public.orders (order_id bigint PRIMARY KEY, customer text NOT NULL, status text,
                            loyalty_score int);
CREATE TABLE public.reservations (order_id bigint PRIMARY KEY);
INSERT INTO public.legacy_orders SELECT g, 'c' || g, 'pending' FROM generate_series(1, 20) g;
