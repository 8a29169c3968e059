-- Fixture for the examples in doc/reference.md: the tables they assume
-- (the examples define the migration themselves).
CREATE EXTENSION softmig;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL, status text);
CREATE TABLE public.orders (order_id bigint PRIMARY KEY, customer text NOT NULL, status text,
                            loyalty_score int);
CREATE TABLE public.reservations (order_id bigint PRIMARY KEY);
INSERT INTO public.legacy_orders SELECT g, 'c' || g, 'pending' FROM generate_series(1, 20) g;
-- a second pair of tables for examples that must not move 'orders'
CREATE TABLE public.ex_legacy (id bigint PRIMARY KEY, v text);
CREATE TABLE public.ex_target (id bigint PRIMARY KEY, v text);
INSERT INTO public.ex_legacy SELECT g, 'v' || g FROM generate_series(1, 5) g;
