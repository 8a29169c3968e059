-------------------------------------------------------------------------------
-- Operation keys (idempotency): one ledger for both sides of a migration.
-- The claim itself is made in C (src/opkey.c) by the guard trigger.
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.operations (
    migration_id integer NOT NULL,
    key          text COLLATE "C" NOT NULL,
    side         @extschema@.side NOT NULL,
    relation     text NOT NULL,
    state        @extschema@.state NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    xid          xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    claimed_by   name NOT NULL,
    PRIMARY KEY (migration_id, key)
);
-- No foreign key to softmig.migrations on purpose: its check would take a
-- FOR KEY SHARE lock on the migration row in every claiming transaction,
-- which conflicts with the FOR UPDATE that state changes and set_option take
-- (a state change waiting for writers could deadlock with them).  Rows of a
-- dropped migration are removed by the trigger below.
COMMENT ON TABLE @extschema@.operations IS
    'softmig: operation key ledger, one row per (migration, key) applied: side, table, state, time, transaction and role of the claim';
COMMENT ON COLUMN @extschema@.operations.side IS 'side written by the claiming transaction: legacy or new (the target)';
COMMENT ON COLUMN @extschema@.operations.relation IS 'table (or partition) whose write claimed the key';
COMMENT ON COLUMN @extschema@.operations.state IS 'state of the migration when the key was claimed';
COMMENT ON COLUMN @extschema@.operations.claimed_at IS 'clock time of the claim (the first write of the transaction)';
COMMENT ON COLUMN @extschema@.operations.xid IS 'top-level transaction id of the claiming transaction';
COMMENT ON COLUMN @extschema@.operations.claimed_by IS 'role that wrote';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.operations', '');

REVOKE ALL ON @extschema@.operations FROM PUBLIC;
GRANT SELECT ON @extschema@.operations TO PUBLIC;

CREATE FUNCTION @extschema@._forget_dropped_operations() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.operations o WHERE o.migration_id OPERATOR(pg_catalog.=) OLD.id;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@._forget_dropped_operations() IS
    'internal: AFTER DELETE trigger on softmig.migrations removing the ledger rows of a dropped migration';

CREATE TRIGGER forget_dropped_operations
    AFTER DELETE ON @extschema@.migrations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._forget_dropped_operations();

CREATE FUNCTION @extschema@.operation_applied(name text, key text) RETURNS boolean
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
BEGIN
    -- a migration across databases: keys applied in either database travel
    -- with the data (softmig.remote_operations), also to its legacy side
    IF EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.name OPERATOR(pg_catalog.=) operation_applied.name)
       AND EXISTS (SELECT 1 FROM @extschema@.remote_operations o
                    WHERE o.migration OPERATOR(pg_catalog.=) operation_applied.name
                      AND o.key OPERATOR(pg_catalog.=) (operation_applied.key COLLATE pg_catalog."C")) THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.migrations x WHERE x.name OPERATOR(pg_catalog.=) operation_applied.name)
       AND EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.name OPERATOR(pg_catalog.=) operation_applied.name) THEN
        RETURN EXISTS (SELECT 1 FROM @extschema@.operations o, @extschema@.remote_migrations xr
                        WHERE xr.name OPERATOR(pg_catalog.=) operation_applied.name
                          AND o.migration_id OPERATOR(pg_catalog.=) xr.migration_id
                          AND o.key OPERATOR(pg_catalog.=) (operation_applied.key COLLATE pg_catalog."C"));
    END IF;
    m := @extschema@._migration(name);
    IF key OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'operation key must not be empty';
    END IF;
    IF pg_catalog.octet_length(key) OPERATOR(pg_catalog.>) 512 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'operation key is too long',
            DETAIL = pg_catalog.format('The key has %s bytes; the limit is 512 bytes.', pg_catalog.octet_length(key));
    END IF;
    RETURN EXISTS (SELECT 1 FROM @extschema@.operations o
                    WHERE o.migration_id OPERATOR(pg_catalog.=) m.id
                      AND o.key OPERATOR(pg_catalog.=) (operation_applied.key COLLATE pg_catalog."C"));
END $$;
COMMENT ON FUNCTION @extschema@.operation_applied(text, text) IS
    'true when a committed transaction (or the current one) applied the operation key to the migration, on either side';

CREATE FUNCTION @extschema@._forget_operations(name text, older_than interval) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET intervalstyle = iso_8601          -- history records older_than the same way for everyone
AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    n bigint;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'older_than must not be null',
            HINT = 'Pass interval ''0'' to forget every key claimed before the current transaction.';
    END IF;
    IF older_than OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('older_than must not be negative (got %s)', older_than);
    END IF;
    DELETE FROM @extschema@.operations o
     WHERE o.migration_id OPERATOR(pg_catalog.=) m.id
       AND o.claimed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    -- and from the ledger a migration across databases replicates
    DELETE FROM @extschema@.remote_operations o
     WHERE o.migration OPERATOR(pg_catalog.=) m.name
       AND EXISTS (SELECT 1 FROM @extschema@.remote_migrations xr WHERE xr.migration_id OPERATOR(pg_catalog.=) m.id)
       AND o.claimed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) older_than);
    PERFORM @extschema@._history(m.id, 'forget_operations', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('older_than', older_than::text, 'forgotten', n));
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._forget_operations(text, interval) IS
    'internal: implementation of softmig.forget_operations';

CREATE FUNCTION @extschema@.forget_operations(name text, older_than interval)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.forget_operations(text, interval) IS
    'retention: remove the ledger rows of operation keys claimed more than older_than ago and return how many; a forgotten key can be applied again; owners of both tables only';

REVOKE ALL ON FUNCTION
    @extschema@._forget_dropped_operations(),
    @extschema@._forget_operations(text, interval)
FROM PUBLIC;
