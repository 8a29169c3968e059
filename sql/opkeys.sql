-- Operation keys: retries never duplicate, on either path (issue 5)
\pset null '(null)'
CREATE TABLE op_legacy (id int PRIMARY KEY, cust text NOT NULL, cents int NOT NULL);
CREATE TABLE op_target (order_id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL);
SELECT softmig.create_migration('op_orders', 'op_legacy', 'op_target',
    forward  => '{"order_id": "id", "customer": "upper(cust)", "amount": "cents / 100.0"}',
    backward => '{"id": "order_id", "cust": "lower(customer)", "cents": "(amount * 100)::int"}');
SELECT softmig.advance('op_orders');

-- op.err(sql): t.err with the claim's time and transaction id masked
CREATE SCHEMA op;
CREATE FUNCTION op.err(sql text, OUT state text, OUT message text, OUT detail text)
LANGUAGE sql AS $$
    SELECT e.state,
           regexp_replace(e.message, '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d\d(:\d\d)?', '<time>'),
           regexp_replace(e.detail, 'transaction \d+', 'transaction <xid>')
      FROM t.err(sql) e
$$;
-- op.ledger(): the ledger, with the time and transaction id checked, not shown
CREATE FUNCTION op.ledger() RETURNS TABLE (migration text, key text, side softmig.side, relation text,
                                           state softmig.state, claimed_by name, sane boolean)
LANGUAGE sql AS $$
    SELECT m.name, o.key, o.side, o.relation, o.state, o.claimed_by,
           o.claimed_at <= clock_timestamp() AND o.xid::text::bigint > 0
      FROM softmig.operations o JOIN softmig.migrations m ON m.id = o.migration_id
     WHERE m.name LIKE 'op\_%'
     ORDER BY 1, 2
$$;
-- op.rows(): both tables, side by side
CREATE FUNCTION op.rows() RETURNS TABLE (id int, legacy_cents int, target_amount numeric)
LANGUAGE sql AS $$
    SELECT coalesce(l.id, t.order_id), l.cents, t.amount
      FROM op_legacy l FULL JOIN op_target t ON t.order_id = l.id ORDER BY 1
$$;

------------------------------------------------------------------ no key: nothing is claimed
INSERT INTO op_legacy VALUES (1, 'ann', 100);
SELECT count(*) AS claims FROM softmig.operations;
SHOW softmig.operation_key;

------------------------------------------------------------------ replay on the same side
-- one transaction, several statements and rows: one claim, made by one index
-- probe/insert (not per row or statement); the mirrored write to the target
-- (made by softmig itself) does not claim again
CREATE TEMP TABLE op_xact (key text, xid xid8);
BEGIN;
SET LOCAL softmig.operation_key = 'ship:2';
INSERT INTO op_legacy VALUES (2, 'bob', 200), (3, 'cy', 300);
UPDATE op_legacy SET cents = cents + 1 WHERE id IN (2, 3);
INSERT INTO op_legacy SELECT g, 'gen', g FROM generate_series(4, 6) g;
DELETE FROM op_legacy WHERE id = 6;
SELECT pg_stat_get_xact_numscans('softmig.operations_pkey'::regclass) AS ledger_index_probes,
       pg_stat_get_xact_tuples_inserted('softmig.operations'::regclass) AS ledger_inserts;
SELECT softmig.operation_applied('op_orders', 'ship:2') AS applied_in_own_transaction;
INSERT INTO op_xact VALUES ('ship:2', pg_current_xact_id());
COMMIT;
SELECT * FROM op.ledger();
SELECT o.xid = x.xid AS ledger_names_the_transaction
  FROM softmig.operations o JOIN op_xact x USING (key);
SELECT * FROM op.rows();
-- the retry after a "timeout": 23505 naming key, time and side; nothing written
BEGIN;
SET LOCAL softmig.operation_key = 'ship:2';
SELECT * FROM op.err($$INSERT INTO op_legacy VALUES (2, 'bob', 200), (7, 'new', 700)$$);
ROLLBACK;
BEGIN;
SET LOCAL softmig.operation_key = 'ship:2';
SELECT hint FROM t.err($$UPDATE op_legacy SET cents = 0$$);
ROLLBACK;
SELECT * FROM op.rows();
SELECT softmig.operation_applied('op_orders', 'ship:2') AS applied,
       softmig.operation_applied('op_orders', 'ship:3') AS not_applied;
-- a statement that changes no row still claims: the operation ran
BEGIN;
SET LOCAL softmig.operation_key = 'noop:1';
UPDATE op_legacy SET cents = 0 WHERE false;
COMMIT;
SELECT softmig.operation_applied('op_orders', 'noop:1') AS noop_applied;
-- a write refused by write authority claims nothing
BEGIN;
SET LOCAL softmig.operation_key = 'refused:1';
SELECT * FROM op.err($$INSERT INTO op_target VALUES (90, 'X', 1)$$);
ROLLBACK;
SELECT softmig.operation_applied('op_orders', 'refused:1') AS refused_applied;
-- SET LOCAL can change the key within a transaction: each key is claimed
BEGIN;
SET LOCAL softmig.operation_key = 'two:a';
INSERT INTO op_legacy VALUES (10, 'ten', 1000);
SET LOCAL softmig.operation_key = 'two:b';
UPDATE op_legacy SET cents = 1001 WHERE id = 10;
SET LOCAL softmig.operation_key = 'two:a';
UPDATE op_legacy SET cents = 1002 WHERE id = 10;
COMMIT;
SELECT key, side FROM op.ledger() WHERE key LIKE 'two:%';
-- a key set for the whole session applies to every transaction: the second is a duplicate
SET softmig.operation_key = 'session:1';
INSERT INTO op_legacy VALUES (11, 'eleven', 1100);
SELECT * FROM op.err($$INSERT INTO op_legacy VALUES (12, 'twelve', 1200)$$);
RESET softmig.operation_key;
SELECT count(*) AS row_12 FROM op_legacy WHERE id = 12;

------------------------------------------------------------------ savepoints
-- a claim inside a rolled-back subtransaction does not count ...
BEGIN;
SET LOCAL softmig.operation_key = 'sp:1';
SAVEPOINT a;
INSERT INTO op_legacy VALUES (20, 'sp', 2000);
SELECT softmig.operation_applied('op_orders', 'sp:1') AS claimed_in_savepoint;
ROLLBACK TO SAVEPOINT a;
SELECT softmig.operation_applied('op_orders', 'sp:1') AS claimed_after_rollback_to;
COMMIT;
SELECT softmig.operation_applied('op_orders', 'sp:1') AS applied_after_commit,
       (SELECT count(*) FROM op_legacy WHERE id = 20) AS rows_20;
-- ... so the key is still free, and the next write in the same transaction claims it again
BEGIN;
SET LOCAL softmig.operation_key = 'sp:2';
SAVEPOINT a;
INSERT INTO op_legacy VALUES (21, 'sp', 2100);
ROLLBACK TO SAVEPOINT a;
INSERT INTO op_legacy VALUES (22, 'sp', 2200);
COMMIT;
SELECT key, relation FROM op.ledger() WHERE key = 'sp:2';
SET softmig.operation_key = 'sp:2';
SELECT * FROM op.err($$INSERT INTO op_legacy VALUES (23, 'sp', 2300)$$);
RESET softmig.operation_key;
-- a claim in a released (committed) subtransaction belongs to the transaction:
-- later writes do not claim again (a second claim would find our own row)
BEGIN;
SET LOCAL softmig.operation_key = 'sp:3';
SAVEPOINT a;
INSERT INTO op_legacy VALUES (24, 'sp', 2400);
RELEASE SAVEPOINT a;
SAVEPOINT b;
UPDATE op_legacy SET cents = 2401 WHERE id = 24;
ROLLBACK TO SAVEPOINT b;        -- rolls back the update, not the claim made before b
UPDATE op_legacy SET cents = 2402 WHERE id = 24;
COMMIT;
SELECT softmig.operation_applied('op_orders', 'sp:3') AS sp3_applied, cents FROM op_legacy WHERE id = 24;
-- the same through a PL/pgSQL exception block (a subtransaction per block)
DO $$
BEGIN
    PERFORM set_config('softmig.operation_key', 'sp:4', true);
    BEGIN
        INSERT INTO op_legacy VALUES (25, 'sp', 2500);
        INSERT INTO op_legacy VALUES (25, 'dup', 0);       -- unique violation
    EXCEPTION WHEN unique_violation THEN
        RAISE NOTICE 'block rolled back; claimed now: %', softmig.operation_applied('op_orders', 'sp:4');
    END;
    INSERT INTO op_legacy VALUES (26, 'sp', 2600);
    RAISE NOTICE 'claimed after the retry: %', softmig.operation_applied('op_orders', 'sp:4');
END $$;
SELECT count(*) FILTER (WHERE id = 25) AS rows_25, count(*) FILTER (WHERE id = 26) AS rows_26 FROM op_legacy;

------------------------------------------------------------------ bad keys
SET softmig.operation_key = '';
SELECT * FROM op.err($$INSERT INTO op_legacy VALUES (30, 'bad', 0)$$);
SELECT set_config('softmig.operation_key', repeat('k', 513), false) IS NOT NULL AS set_513_bytes;
SELECT * FROM op.err($$INSERT INTO op_legacy VALUES (30, 'bad', 0)$$);
SELECT count(*) AS rows_30 FROM op_legacy WHERE id = 30;
SELECT set_config('softmig.operation_key', repeat('k', 512), false) IS NOT NULL AS set_512_bytes;
INSERT INTO op_legacy VALUES (30, 'ok', 0);
RESET softmig.operation_key;
SELECT softmig.operation_applied('op_orders', repeat('k', 512)) AS applied_512_bytes;
SELECT * FROM t.err($$SELECT softmig.operation_applied('op_orders', '')$$);
SELECT * FROM t.err($$SELECT softmig.operation_applied('op_orders', repeat('k', 513))$$);
SELECT * FROM t.err($$SELECT softmig.operation_applied('nope', 'k')$$);
SELECT softmig.operation_applied('op_orders', NULL) AS null_key;

------------------------------------------------------------------ replay across the authority switch
-- applied on legacy under mirrored, replayed on the target under new_write and new_read
BEGIN;
SET LOCAL softmig.operation_key = 'invoice:40';
INSERT INTO op_legacy VALUES (40, 'inv', 4000);
COMMIT;
SELECT softmig.advance('op_orders', reason => 'opkeys test', force => true);
BEGIN;
SET LOCAL softmig.operation_key = 'invoice:40';
SELECT * FROM op.err($$INSERT INTO op_target VALUES (41, 'INV', 40.00)$$);
ROLLBACK;
SELECT count(*) AS rows_41 FROM op.rows() WHERE id = 41;
-- on the new side the key is claimed once too, and the projection does not claim
BEGIN;
SET LOCAL softmig.operation_key = 'invoice:42';
INSERT INTO op_target VALUES (42, 'NEW', 42.00);
UPDATE op_target SET amount = 42.50 WHERE order_id = 42;
COMMIT;
SELECT * FROM op.ledger() WHERE key = 'invoice:42';
SELECT * FROM op.rows() WHERE id = 42;
SELECT softmig.advance('op_orders');   -- new_read
BEGIN;
SET LOCAL softmig.operation_key = 'invoice:42';
SELECT * FROM op.err($$UPDATE op_target SET amount = 0 WHERE order_id = 42$$);
ROLLBACK;
BEGIN;
SET LOCAL softmig.operation_key = 'invoice:40';
SELECT * FROM op.err($$DELETE FROM op_target WHERE order_id = 40$$);
ROLLBACK;
SELECT * FROM op.rows() WHERE id IN (40, 42);
-- an owner's manual repair of the projection side claims the key too
BEGIN;
SET LOCAL softmig.override = 'hand repair';
SET LOCAL softmig.operation_key = 'repair:1';
UPDATE op_legacy SET cents = 4001 WHERE id = 40;
COMMIT;
SELECT * FROM op.ledger() WHERE key = 'repair:1';
BEGIN;
SET LOCAL softmig.operation_key = 'repair:1';
SELECT * FROM op.err($$UPDATE op_target SET amount = 1 WHERE order_id = 40$$);
ROLLBACK;

------------------------------------------------------------------ several migrations in one transaction
CREATE TABLE op_l2 (id int PRIMARY KEY, v text);
CREATE TABLE op_t2 (id int PRIMARY KEY, v text);
SELECT softmig.create_migration('op_second', 'op_l2', 'op_t2');
SELECT softmig.advance('op_second');
BEGIN;
SET LOCAL softmig.operation_key = 'multi:1';
UPDATE op_target SET amount = 50 WHERE order_id = 40;
INSERT INTO op_l2 VALUES (1, 'one');
COMMIT;
SELECT * FROM op.ledger() WHERE key = 'multi:1';
-- a replay fails as soon as it touches either migration; the whole transaction writes nothing
BEGIN;
SET LOCAL softmig.operation_key = 'multi:1';
SELECT * FROM op.err($$INSERT INTO op_l2 VALUES (2, 'two')$$);
ROLLBACK;
-- a key claimed in one migration is free in another
BEGIN;
SET LOCAL softmig.operation_key = 'only-second:1';
INSERT INTO op_l2 VALUES (3, 'three');
COMMIT;
BEGIN;
SET LOCAL softmig.operation_key = 'only-second:1';
INSERT INTO op_target VALUES (43, 'FREE', 43);
SELECT * FROM op.err($$INSERT INTO op_l2 VALUES (4, 'four')$$);
ROLLBACK;
SELECT (SELECT count(*) FROM op_l2 WHERE id IN (2, 4)) AS l2_rows, (SELECT count(*) FROM op_target WHERE order_id = 43) AS target_43;
SELECT * FROM op.ledger() WHERE key LIKE 'only-second%';

------------------------------------------------------------------ require_operation_key
SELECT * FROM t.err($$SELECT softmig.set_option('op_second', 'require_operation_key', '"yes"')$$);
CREATE TABLE op_l3 (id int PRIMARY KEY);
CREATE TABLE op_t3 (id int PRIMARY KEY);
SELECT * FROM t.err($$SELECT softmig.create_migration('op_bad', 'op_l3', 'op_t3', options => '{"require_operation_key": 1}')$$);
SELECT count(*) AS op_bad FROM softmig.migrations WHERE name = 'op_bad';
SELECT softmig.set_option('op_second', 'require_operation_key', 'true');
SELECT * FROM op.err($$INSERT INTO op_l2 VALUES (5, 'no key')$$);
SELECT * FROM op.err($$UPDATE op_l2 SET v = 'no key'$$);
SELECT count(*) AS l2_5 FROM op_l2 WHERE id = 5;
BEGIN;
SET LOCAL softmig.operation_key = 'req:1';
INSERT INTO op_l2 VALUES (5, 'keyed');
COMMIT;
-- the other migration does not require keys
INSERT INTO op_target VALUES (44, 'FREE', 44);
-- readers are never affected
SELECT count(*) AS l2_rows FROM op_l2;
SELECT softmig.set_option('op_second', 'require_operation_key', 'false');
INSERT INTO op_l2 VALUES (6, 'no key again');
SELECT softmig.set_option('op_second', 'require_operation_key', NULL);
SELECT action, detail FROM softmig.history('op_second') WHERE action = 'set_option';

------------------------------------------------------------------ application roles
-- an application role has no rights on the ledger, yet its writes claim keys
CREATE ROLE sm_op_app;
GRANT USAGE ON SCHEMA public, op TO sm_op_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON op_l2 TO sm_op_app;
SET ROLE sm_op_app;
SELECT * FROM t.err($$INSERT INTO softmig.operations VALUES (1, 'forged', 'legacy', 'x', 'mirrored', now(), '1', 'me')$$);
BEGIN;
SET LOCAL softmig.operation_key = 'app:1';
INSERT INTO op_l2 VALUES (7, 'by app');
COMMIT;
SELECT softmig.operation_applied('op_second', 'app:1') AS app_applied;
BEGIN;
SET LOCAL softmig.operation_key = 'app:1';
SELECT * FROM op.err($$INSERT INTO op_l2 VALUES (8, 'by app')$$);
ROLLBACK;
-- forget_operations is for owners of both tables
SELECT * FROM t.err($$SELECT softmig.forget_operations('op_second', '0')$$);
RESET ROLE;
SELECT key, claimed_by FROM op.ledger() WHERE key = 'app:1';

------------------------------------------------------------------ forget_operations (retention)
-- age some claims (as a superuser) to see retention at work
UPDATE softmig.operations SET claimed_at = claimed_at - interval '10 days'
 WHERE key IN ('ship:2', 'two:a') AND migration_id = (SELECT id FROM softmig.migrations WHERE name = 'op_orders');
SELECT count(*) AS op_orders_claims FROM op.ledger() WHERE migration = 'op_orders';
SELECT softmig.forget_operations('op_orders', '7 days') AS forgotten;
SELECT softmig.operation_applied('op_orders', 'ship:2') AS ship2_applied,
       softmig.operation_applied('op_orders', 'invoice:42') AS invoice42_applied;
SELECT actor, action, detail FROM softmig.history('op_orders') WHERE action = 'forget_operations';
-- the other migration's claims are untouched
SELECT count(*) AS op_second_claims FROM op.ledger() WHERE migration = 'op_second';
-- a forgotten key can be applied again
BEGIN;
SET LOCAL softmig.operation_key = 'ship:2';
UPDATE op_target SET amount = 2.22 WHERE order_id = 2;
COMMIT;
SELECT * FROM t.err($$SELECT softmig.forget_operations('op_orders', NULL)$$);
SELECT * FROM t.err($$SELECT softmig.forget_operations('op_orders', '-1 day')$$);
SELECT * FROM t.err($$SELECT softmig.forget_operations('nope', '1 day')$$);
-- '0' forgets every claim but those of the current transaction
BEGIN;
SET LOCAL softmig.operation_key = 'current:1';
UPDATE op_target SET amount = 2.23 WHERE order_id = 2;
SELECT softmig.forget_operations('op_orders', '0') > 0 AS forgot_some;
SELECT key FROM op.ledger() WHERE migration = 'op_orders';
COMMIT;

------------------------------------------------------------------ drop
SELECT softmig.rollback('op_second');
SELECT softmig.drop_migration('op_second');
SELECT count(*) AS op_second_claims_after_drop FROM softmig.operations o
 WHERE NOT EXISTS (SELECT 1 FROM softmig.migrations m WHERE m.id = o.migration_id);
SET softmig.operation_key = 'after-drop:1';
INSERT INTO op_l2 VALUES (9, 'plain table again');
INSERT INTO op_l2 VALUES (10, 'plain table again');
RESET softmig.operation_key;

DROP OWNED BY sm_op_app;
DROP ROLE sm_op_app;
DROP TABLE op_l3, op_t3;
