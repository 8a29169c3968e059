-- Fixture for the examples in doc/observability.md: a migration in
-- new_write (the target takes the writes the transition rules watch), some
-- differences for parity to find, and pgTAP for the test helpers.
CREATE EXTENSION softmig;
CREATE EXTENSION pgtap;
CREATE TABLE public.legacy_orders (id bigint PRIMARY KEY, status text, amount numeric(12,2),
                                   note text, reviewed boolean NOT NULL DEFAULT false);
CREATE TABLE public.orders (order_id bigint PRIMARY KEY, status text, amount numeric(12,2),
                            note text, reviewed boolean NOT NULL DEFAULT false);
CREATE TABLE public.reservations (order_id bigint PRIMARY KEY);
INSERT INTO public.legacy_orders (id, status, amount, note)
SELECT g, 'pending', g / 10.0, 'n' FROM generate_series(1, 20) g;
SELECT softmig.create_migration('orders', 'legacy_orders', 'orders',
    forward => '{"order_id": "id"}', backward => '{"id": "order_id"}');
SELECT softmig.advance('orders');
CALL softmig.backfill('orders');
SELECT softmig.advance('orders', reason => 'the target takes writes', force => true);
-- differences written by hand, as an operator repair gone wrong would
BEGIN;
SET LOCAL softmig.override = 'doc example: make parity find something';
UPDATE public.orders SET amount = 99 WHERE order_id = 7;
COMMIT;
