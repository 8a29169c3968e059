-- Fixture for the examples in doc/playbook.md: the tables they assume.
CREATE EXTENSION softmig;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, cust text NOT NULL,
                                   amount numeric(12,2) NOT NULL, status text NOT NULL);
CREATE TABLE public.orders (order_no text PRIMARY KEY, customer text NOT NULL,
                            amount numeric(12,2) NOT NULL, status text NOT NULL, gift_note text);
INSERT INTO public.legacy_orders SELECT g, 'cust' || g, g, 'new' FROM generate_series(1, 1000) g;
