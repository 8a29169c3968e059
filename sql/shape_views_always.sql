-- Shape views over tables whose key is GENERATED ALWAYS AS IDENTITY: the
-- views' writes insert with OVERRIDING SYSTEM VALUE where a key is given,
-- leave such a column out of their UPDATEs, and refuse (428C9) an UPDATE
-- that would change it; on either side, in both directions of the switch.
SET softmig.discovery = off;

-- the target's key is GENERATED ALWAYS
CREATE TABLE sva_legacy (id bigserial PRIMARY KEY, cust text NOT NULL);
CREATE TABLE sva_orders (order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                         customer text NOT NULL);
SELECT softmig.create_migration('sva', 'sva_legacy', 'sva_orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)"}',
    backward => '{"id": "order_id", "cust": "lower(customer)"}');
CREATE SCHEMA sva_v1;
CREATE SCHEMA sva_v2;
SELECT softmig.create_shape_views('sva', 'sva_v1', 'sva_v2');
SELECT softmig.advance('sva');                                 -- mirrored
INSERT INTO sva_v1.sva_legacy (cust) VALUES ('ann') RETURNING *;
INSERT INTO sva_v2.sva_orders (customer) VALUES ('BOB') RETURNING *;
INSERT INTO sva_v2.sva_orders (order_id, customer) VALUES (10, 'CID') RETURNING *;
UPDATE sva_v2.sva_orders SET customer = 'BOBBY' WHERE order_id = 2 RETURNING *;
SELECT softmig.advance('sva', reason => 'switch', force => true);   -- new_write
INSERT INTO sva_v1.sva_legacy (cust) VALUES ('dan') RETURNING *;
INSERT INTO sva_v2.sva_orders (customer) VALUES ('EVE') RETURNING *;
INSERT INTO sva_v1.sva_legacy (id, cust) VALUES (20, 'fay') RETURNING *;
INSERT INTO sva_v2.sva_orders (order_id, customer) VALUES (21, 'GUS') RETURNING *;
UPDATE sva_v1.sva_legacy SET cust = 'anne' WHERE id = 1 RETURNING *;
UPDATE sva_v2.sva_orders SET customer = 'DANNY' WHERE order_id = 11 RETURNING *;
COPY sva_v1.sva_legacy (cust) FROM stdin;
hal
\.
UPDATE sva_v2.sva_orders SET order_id = 99 WHERE order_id = 11;
UPDATE sva_v1.sva_legacy SET id = 99 WHERE id = 11;
DELETE FROM sva_v1.sva_legacy WHERE id = 20 RETURNING *;
SELECT softmig.rollback('sva', 'back');                        -- mirrored
UPDATE sva_v2.sva_orders SET customer = 'EVA' WHERE order_id = 12 RETURNING *;
SELECT * FROM sva_legacy ORDER BY id;
SELECT * FROM sva_orders ORDER BY order_id;
SELECT count(*) AS differences FROM softmig.parity('sva');

-- the legacy table's key is GENERATED ALWAYS
CREATE TABLE svb_legacy (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, cust text NOT NULL);
CREATE TABLE svb_orders (order_id bigserial PRIMARY KEY, customer text NOT NULL);
SELECT softmig.create_migration('svb', 'svb_legacy', 'svb_orders',
    forward  => '{"order_id": "id", "customer": "upper(cust)"}',
    backward => '{"id": "order_id", "cust": "lower(customer)"}');
SELECT softmig.create_shape_views('svb', 'sva_v1', 'sva_v2');
SELECT softmig.advance('svb');                                 -- mirrored
INSERT INTO sva_v1.svb_legacy (id, cust) VALUES (5, 'ann') RETURNING *;
INSERT INTO sva_v2.svb_orders (customer) VALUES ('BOB') RETURNING *;
UPDATE sva_v2.svb_orders SET customer = 'BOBBY' WHERE order_id = 1 RETURNING *;
UPDATE sva_v2.svb_orders SET order_id = 7 WHERE order_id = 1;
UPDATE sva_v1.svb_legacy SET id = 7 WHERE id = 1;
SELECT softmig.advance('svb', reason => 'switch', force => true);   -- new_write
INSERT INTO sva_v1.svb_legacy (cust) VALUES ('cid') RETURNING *;
UPDATE sva_v1.svb_legacy SET cust = 'anne' WHERE id = 5 RETURNING *;
SELECT * FROM svb_legacy ORDER BY id;
SELECT count(*) AS differences FROM softmig.parity('svb');

SELECT softmig.drop_shape_views('sva');
SELECT softmig.drop_shape_views('svb');
SELECT softmig.rollback('sva', 'done');                        -- legacy
SELECT softmig.rollback('svb', 'done');                        -- mirrored
SELECT softmig.rollback('svb', 'done');                        -- legacy
SELECT softmig.drop_migration('sva');
SELECT softmig.drop_migration('svb');
DROP SCHEMA sva_v1, sva_v2;
DROP TABLE sva_legacy, sva_orders, svb_legacy, svb_orders;
