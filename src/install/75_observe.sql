-------------------------------------------------------------------------------
-- Semantic observability: parity, invariants, transition rules, check,
-- inspect, report, metrics, pgTAP helpers (C in src/parity.c, src/rules.c;
-- guide in doc/observability.md).
-------------------------------------------------------------------------------

-------------------------------------------------------------------------------
-- Catalog
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.invariants (
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    name         text NOT NULL,
    query        text NOT NULL,      -- one read-only SELECT returning the violating rows
    severity     text NOT NULL CHECK (severity OPERATOR(pg_catalog.=) ANY (ARRAY['error', 'warn'])),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   name NOT NULL,
    PRIMARY KEY (migration_id, name)
);
COMMENT ON TABLE @extschema@.invariants IS
    'softmig: behavioural invariants of each migration: queries returning violating rows (severity error blocks mirrored -> new_write)';

CREATE TABLE @extschema@.transition_rules (
    id           serial PRIMARY KEY,
    migration_id integer NOT NULL REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    tbl          regclass NOT NULL,  -- the migration's legacy or target table
    col          name NOT NULL,
    from_value   text,               -- NULL: the first value (INSERT, or a row whose column is still NULL)
    to_value     text NOT NULL,      -- values are stored in the column type's canonical text form
    requires     text,               -- boolean SQL expression over the new row (new.<col>), or NULL
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   name NOT NULL
);
CREATE UNIQUE INDEX transition_rules_edge ON @extschema@.transition_rules
    (migration_id, tbl, col, (from_value IS NULL), (COALESCE(from_value, '')), to_value);
COMMENT ON TABLE @extschema@.transition_rules IS
    'softmig: allowed edges of status columns, enforced by the trigger softmig_rule_<migration id> on the table';

-- No foreign key to softmig.migrations on purpose (as for softmig.operations):
-- a writer recording a violation must not lock the migration's row.  Rows of
-- a dropped migration are removed by the trigger at the end of this file.
CREATE TABLE @extschema@.rule_violations (
    id           bigserial PRIMARY KEY,
    migration_id integer NOT NULL,
    rule_id      integer,            -- the edge's rule when its requires was not true; NULL: no rule allows the edge
    tbl          text NOT NULL,
    col          name NOT NULL,
    from_value   text,
    to_value     text,
    key          jsonb NOT NULL,     -- the entity, as legacy key columns
    reason       text NOT NULL CHECK (reason OPERATOR(pg_catalog.=) ANY (ARRAY['edge', 'requires'])),
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    actor        name NOT NULL,
    xid          xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
CREATE INDEX rule_violations_migration ON @extschema@.rule_violations (migration_id, id);
COMMENT ON TABLE @extschema@.rule_violations IS
    'softmig: transition-rule violations let through under option transition_rules = observe';

CREATE SEQUENCE @extschema@.check_run_seq AS bigint;
CREATE TABLE @extschema@.check_results (
    run_id       bigint NOT NULL,
    migration_id integer NOT NULL,   -- no foreign key: see rule_violations
    at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    actor        name NOT NULL,
    state        @extschema@.state NOT NULL,
    ordinal      integer NOT NULL,
    layer        text NOT NULL CHECK (layer OPERATOR(pg_catalog.=) ANY (ARRAY['transport', 'structural', 'behavioral'])),
    check_name   text NOT NULL,
    ok           boolean NOT NULL,
    violations   bigint NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',   -- with a bounded sample of violating keys
    PRIMARY KEY (run_id, ordinal)
);
CREATE INDEX check_results_migration ON @extschema@.check_results (migration_id, run_id);
COMMENT ON TABLE @extschema@.check_results IS
    'softmig: every softmig.check run, one row per check (a time series for dashboards)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.invariants', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.transition_rules', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.transition_rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rule_violations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rule_violations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.check_results', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.check_run_seq', '');

REVOKE ALL ON @extschema@.invariants, @extschema@.transition_rules, @extschema@.rule_violations,
              @extschema@.check_results FROM PUBLIC;
GRANT SELECT ON @extschema@.invariants, @extschema@.transition_rules, @extschema@.rule_violations,
                @extschema@.check_results TO PUBLIC;

-------------------------------------------------------------------------------
-- Quarantine as parity sees it
-------------------------------------------------------------------------------
-- Parity skips the entities this function lists (legacy-key jsonb objects).
-- The quarantine itself belongs to the envelope work (issue 6, table
-- softmig.quarantine); that work may replace this body, parity only relies on
-- the signature.
CREATE FUNCTION @extschema@._quarantined_keys(p_id integer) RETURNS SETOF jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT q.key FROM @extschema@.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._quarantined_keys(integer) IS
    'internal: the quarantined entities of a migration (legacy-key jsonb), which parity skips; the quarantine work owns the body';

-------------------------------------------------------------------------------
-- C functions
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.parity(name text, chunk_rows integer DEFAULT 10000)
RETURNS TABLE(kind text, key jsonb, field text, legacy_value text, target_value text)
    AS 'MODULE_PATHNAME', 'softmig_parity' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.parity(text, integer) IS
    'every difference between legacy (through the forward mapping) and the target on strict fields: missing_in_target, missing_in_legacy, one mismatch per field; exact, read-only, for a caller who may read both tables';

-- Phase 1 of parity: the digest of one side, computed by an aggregate so the
-- planner can scan and map in parallel workers.  Executable by everyone: the
-- table owners run it inside parity, and it only hashes its arguments.
CREATE FUNCTION @extschema@._parity_acc(state bytea, VARIADIC "any") RETURNS bytea
    AS 'MODULE_PATHNAME', 'softmig_parity_acc' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._parity_acc(bytea, "any") IS
    'internal: transition function of softmig.parity_digest';
CREATE FUNCTION @extschema@._parity_combine(a bytea, b bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'softmig_parity_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._parity_combine(bytea, bytea) IS
    'internal: combine function of softmig.parity_digest (adds partial digests)';
CREATE AGGREGATE @extschema@.parity_digest(VARIADIC "any") (
    SFUNC = @extschema@._parity_acc,
    STYPE = bytea,
    COMBINEFUNC = @extschema@._parity_combine,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.parity_digest(VARIADIC "any") IS
    'building block of softmig.parity: per-chunk row counts and digests of one side (arguments: seed, key count, collations, boundary and quarantine arrays, columns); public because table owners run it';

-- Parity's digest cache: derived data, rebuilt whenever it does not match
-- (src/parity.c, "Digest cache"); deliberately not dumped.
CREATE TABLE @extschema@.parity_cache (
    migration_id integer PRIMARY KEY REFERENCES @extschema@.migrations (id) ON DELETE CASCADE,
    chunk_rows   integer NOT NULL,
    fingerprint  text NOT NULL,      -- md5 of everything the digests depend on
    bounds       bytea[] NOT NULL,   -- per key column, the chunk bounds (array, binary form)
    legacy_state bytea NOT NULL,     -- digests, segment ranges and page state of each side
    target_state bytea NOT NULL,
    built_at     timestamptz NOT NULL,
    used_at      timestamptz NOT NULL,
    warm_runs    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE @extschema@.parity_cache IS
    'softmig: parity''s digest cache: per-chunk digests and per-segment page state from the last full comparison (derived, not dumped)';
REVOKE ALL ON @extschema@.parity_cache FROM PUBLIC;

CREATE FUNCTION @extschema@._parity_cache_reset(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
BEGIN
    DELETE FROM @extschema@.parity_cache WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION @extschema@._parity_cache_reset(text) IS 'internal: implementation of softmig.parity_cache_reset';
CREATE FUNCTION @extschema@.parity_cache_reset(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.parity_cache_reset(text) IS
    'forget the stored parity digests of a migration, so the next comparison reads both tables in full; true if there were any; owners only';

CREATE FUNCTION @extschema@._parity_summary(p_id integer, chunk_rows integer, sample integer)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_parity_summary' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._parity_summary(integer, integer, integer) IS
    'internal: parity counts per kind and field, a bounded sample of keys and run statistics (for check and the new_write guard)';

CREATE FUNCTION @extschema@._rule_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'softmig_rule_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._rule_trigger() IS
    'internal: AFTER INSERT OR UPDATE row trigger enforcing (or observing) the transition rules of a table';

CREATE FUNCTION @extschema@._check_rule(tbl regclass, col name, from_value text, to_value text, requires text)
RETURNS text[] AS 'MODULE_PATHNAME', 'softmig_check_rule' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._check_rule(regclass, name, text, text, text) IS
    'internal: validate a transition rule as the table owner and return its from/to values in canonical form';

CREATE FUNCTION @extschema@._validate_invariant(legacy regclass, query text) RETURNS text
    AS 'MODULE_PATHNAME', 'softmig_validate_invariant' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._validate_invariant(regclass, text) IS
    'internal: check, as the legacy table''s owner who will run it, that an invariant query is one read-only SELECT; returns it trimmed';

CREATE FUNCTION @extschema@.invariant_violations(name text, invariant text DEFAULT NULL, sample integer DEFAULT 10)
RETURNS TABLE(invariant text, severity text, violations bigint, sample jsonb)
    AS 'MODULE_PATHNAME', 'softmig_invariant_violations' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.invariant_violations(text, text, integer) IS
    'run the invariants of a migration (or one) as its legacy table''s owner, read-only, for a caller who may read both tables: rows returned and a sample of them';

-------------------------------------------------------------------------------
-- Options of this concern (called from _check_options)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._check_observe_option(p_key text, p_value jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ok boolean;
BEGIN
    IF p_key OPERATOR(pg_catalog.=) 'transition_rules' THEN
        PERFORM @extschema@._check_option_choice(p_key, p_value, 'enforce', 'observe');
    END IF;
    IF p_key OPERATOR(pg_catalog.=) 'parity_chunk_rows' THEN
        -- step by step: a cast is only tried on what is surely an integer
        IF pg_catalog.jsonb_typeof(p_value) OPERATOR(pg_catalog.<>) 'number'
           OR p_value::text OPERATOR(pg_catalog.!~) '^[0-9]{1,8}$' THEN
            v_ok := false;
        ELSE
            v_ok := p_value::text::integer BETWEEN 1 AND 10000000;
        END IF;
        IF NOT v_ok THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('option parity_chunk_rows must be an integer between 1 and 10000000, not %s', p_value);
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._check_observe_option(text, jsonb) IS
    'internal: validate the options transition_rules and parity_chunk_rows';

CREATE FUNCTION @extschema@._chunk_rows(m @extschema@.migrations) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((m.options OPERATOR(pg_catalog.->>) 'parity_chunk_rows')::integer, 10000)
$$;
COMMENT ON FUNCTION @extschema@._chunk_rows(@extschema@.migrations) IS
    'internal: the parity chunk size of a migration (option parity_chunk_rows, default 10000)';

-------------------------------------------------------------------------------
-- Invariants
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._add_invariant(name text, invariant text, query text, severity text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_query text;
BEGIN
    PERFORM @extschema@._require_nonblank(invariant, 'invariant name must not be empty');
    IF query IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'invariant query must not be null';
    END IF;
    IF severity IS NULL OR severity OPERATOR(pg_catalog.<>) ALL (ARRAY['error', 'warn']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('severity must be error or warn, not %s', COALESCE(severity, 'NULL')),
            HINT = 'error blocks mirrored -> new_write while the invariant has violations; warn only reports.';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.invariants i
                WHERE i.migration_id OPERATOR(pg_catalog.=) m.id AND i.name OPERATOR(pg_catalog.=) invariant) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('invariant "%s" of migration "%s" already exists', invariant, m.name),
            HINT = 'softmig.drop_invariant removes it.';
    END IF;
    v_query := @extschema@._validate_invariant(m.legacy, query);   -- as the legacy owner
    INSERT INTO @extschema@.invariants (migration_id, name, query, severity, created_by)
    VALUES (m.id, invariant, v_query, severity, @extschema@._actor());
    PERFORM @extschema@._history(m.id, 'add_invariant', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('invariant', invariant, 'severity', severity, 'query', v_query));
END $$;
COMMENT ON FUNCTION @extschema@._add_invariant(text, text, text, text) IS 'internal: implementation of softmig.add_invariant';

CREATE FUNCTION @extschema@.add_invariant(name text, invariant text, query text, severity text DEFAULT 'error')
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.add_invariant(text, text, text, text) IS
    'add a behavioural invariant: a read-only SELECT returning the violating rows, severity error or warn; owners of both tables only';

CREATE FUNCTION @extschema@._drop_invariant(name text, invariant text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    i @extschema@.invariants;
BEGIN
    DELETE FROM @extschema@.invariants x
     WHERE x.migration_id OPERATOR(pg_catalog.=) m.id AND x.name OPERATOR(pg_catalog.=) invariant
    RETURNING * INTO i;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('invariant "%s" of migration "%s" does not exist', invariant, m.name);
    END IF;
    PERFORM @extschema@._history(m.id, 'drop_invariant', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('invariant', i.name, 'severity', i.severity, 'query', i.query));
END $$;
COMMENT ON FUNCTION @extschema@._drop_invariant(text, text) IS 'internal: implementation of softmig.drop_invariant';

CREATE FUNCTION @extschema@.drop_invariant(name text, invariant text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_invariant(text, text) IS
    'remove an invariant; owners of both tables only';

-------------------------------------------------------------------------------
-- Transition rules
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._install_rule_trigger(p_id integer, p_tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := 'softmig_rule_' OPERATOR(pg_catalog.||) p_id::text;
    v_cols text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.col::text), ', ' ORDER BY c.col) INTO v_cols
      FROM (SELECT DISTINCT r.col FROM @extschema@.transition_rules r
             WHERE r.migration_id OPERATOR(pg_catalog.=) p_id AND r.tbl OPERATOR(pg_catalog.=) p_tbl) c;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid OPERATOR(pg_catalog.=) p_tbl AND t.tgname OPERATOR(pg_catalog.=) v_name) THEN
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_name, p_tbl);
    END IF;
    IF v_cols IS NOT NULL THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OF %s ON %s '
            'FOR EACH ROW EXECUTE FUNCTION @extschema@._rule_trigger(%L)',
            v_name, v_cols, p_tbl, p_id);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._install_rule_trigger(integer, regclass) IS
    'internal: (re)create or drop the transition-rule trigger of a migration on a table to match its rules';

CREATE FUNCTION @extschema@._add_transition_rule(name text, tbl regclass, col name, from_value text,
                                                 to_value text, requires text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_vals text[];
    v_id integer;
BEGIN
    IF tbl IS NULL OR col IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'tbl and col must not be null';
    END IF;
    IF tbl OPERATOR(pg_catalog.<>) ALL (ARRAY[m.legacy, m.target]::pg_catalog.oid[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('table %s is not a table of migration "%s"', tbl, m.name),
            HINT = pg_catalog.format('Transition rules go on %s or %s.', m.legacy, m.target);
    END IF;
    IF to_value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'to_value must not be null',
            DETAIL = 'A ruled column never moves back to NULL; from_value NULL means the first value.';
    END IF;
    -- column, values in canonical form, requires: checked as the table owner
    v_vals := @extschema@._check_rule(tbl, col, from_value, to_value, requires);
    IF v_vals[1] IS NOT DISTINCT FROM v_vals[2] THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('an edge must change the value (%s -> %s)', v_vals[1], v_vals[2]);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.transition_rules r
                WHERE r.migration_id OPERATOR(pg_catalog.=) m.id AND r.tbl OPERATOR(pg_catalog.=) _add_transition_rule.tbl
                  AND r.col OPERATOR(pg_catalog.=) _add_transition_rule.col AND r.from_value IS NOT DISTINCT FROM v_vals[1]
                  AND r.to_value OPERATOR(pg_catalog.=) v_vals[2]) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already has a rule for %s.%s %s -> %s', m.name, tbl, col,
                                        COALESCE(pg_catalog.quote_literal(v_vals[1]), 'NULL'),
                                        pg_catalog.quote_literal(v_vals[2])),
            HINT = 'softmig.drop_transition_rule removes it.';
    END IF;
    INSERT INTO @extschema@.transition_rules (migration_id, tbl, col, from_value, to_value, requires, created_by)
    VALUES (m.id, tbl, col, v_vals[1], v_vals[2], requires, @extschema@._actor())
    RETURNING id INTO v_id;
    PERFORM @extschema@._install_rule_trigger(m.id, tbl);
    PERFORM @extschema@._history(m.id, 'add_transition_rule', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('rule', v_id, 'table', tbl::text, 'column', col, 'from', v_vals[1],
                                      'to', v_vals[2], 'requires', requires));
END $$;
COMMENT ON FUNCTION @extschema@._add_transition_rule(text, regclass, name, text, text, text) IS
    'internal: implementation of softmig.add_transition_rule';

CREATE FUNCTION @extschema@.add_transition_rule(name text, tbl regclass, col name, from_value text,
                                                to_value text, requires text DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.add_transition_rule(text, regclass, name, text, text, text) IS
    'allow one edge of a status column (from_value NULL = insert), optionally requiring a boolean expression over the new row; owners of both tables only';

CREATE FUNCTION @extschema@._drop_transition_rule(name text, tbl regclass, col name, from_value text, to_value text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    r @extschema@.transition_rules;
    v_vals text[];
BEGIN
    IF tbl IS NULL OR col IS NULL OR to_value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'tbl, col and to_value must not be null';
    END IF;
    IF tbl OPERATOR(pg_catalog.<>) ALL (ARRAY[m.legacy, m.target]::pg_catalog.oid[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('table %s is not a table of migration "%s"', tbl, m.name);
    END IF;
    v_vals := @extschema@._check_rule(tbl, col, from_value, to_value, NULL);
    DELETE FROM @extschema@.transition_rules x
     WHERE x.migration_id OPERATOR(pg_catalog.=) m.id AND x.tbl OPERATOR(pg_catalog.=) _drop_transition_rule.tbl
       AND x.col OPERATOR(pg_catalog.=) _drop_transition_rule.col AND x.from_value IS NOT DISTINCT FROM v_vals[1]
       AND x.to_value OPERATOR(pg_catalog.=) v_vals[2]
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('migration "%s" has no rule for %s.%s %s -> %s', m.name, tbl, col,
                                        COALESCE(pg_catalog.quote_literal(v_vals[1]), 'NULL'),
                                        pg_catalog.quote_literal(v_vals[2]));
    END IF;
    PERFORM @extschema@._install_rule_trigger(m.id, tbl);
    PERFORM @extschema@._history(m.id, 'drop_transition_rule', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('rule', r.id, 'table', tbl::text, 'column', col, 'from', r.from_value,
                                      'to', r.to_value, 'requires', r.requires));
END $$;
COMMENT ON FUNCTION @extschema@._drop_transition_rule(text, regclass, name, text, text) IS
    'internal: implementation of softmig.drop_transition_rule';

CREATE FUNCTION @extschema@.drop_transition_rule(name text, tbl regclass, col name, from_value text, to_value text)
RETURNS void AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.drop_transition_rule(text, regclass, name, text, text) IS
    'remove one edge (the trigger goes when a table has no rules left); owners of both tables only';

-------------------------------------------------------------------------------
-- check: transport, structural, behavioural; every run is kept
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._check_row(p_rows jsonb, p_layer text, p_check_name text, p_ok boolean,
                                     p_violations bigint, p_detail jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_rows OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
               'ordinal', pg_catalog.jsonb_array_length(p_rows) OPERATOR(pg_catalog.+) 1,
               'layer', p_layer, 'check_name', p_check_name,
               'ok', p_ok, 'violations', p_violations, 'detail', p_detail))
$$;
COMMENT ON FUNCTION @extschema@._check_row(jsonb, text, text, boolean, bigint, jsonb) IS
    'internal: the results of a check run so far (a jsonb array) with one more check''s result, numbered after them';
REVOKE ALL ON FUNCTION @extschema@._check_row(jsonb, text, text, boolean, bigint, jsonb) FROM PUBLIC;

CREATE FUNCTION @extschema@._run_checks(name text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_run bigint := pg_catalog.nextval('@extschema@.check_run_seq');
    v_rows jsonb := '[]';
    v_prev bigint;
    v_actor name := @extschema@._actor();
    v_ok boolean;
    v_n bigint;
    v_detail jsonb;
    v_s jsonb;
    v_err text;
    v_new bigint;
    v_last timestamptz;
    r record;
    k text;
BEGIN
    SELECT pg_catalog.max(c.run_id) INTO v_prev FROM @extschema@.check_results c
     WHERE c.migration_id OPERATOR(pg_catalog.=) m.id;
    -- results are collected in a jsonb array, not a temporary table: this
    -- runs as the catalog owner, and a caller's own temporary table of the
    -- same name (with triggers or checks) must never be used

    ------------------------------------------------------------- transport
    -- the write triggers of the migration
    v_detail := @extschema@._trigger_health(m.id);
    v_rows := @extschema@._check_row(v_rows, 'transport', 'triggers',
                                     (v_detail OPERATOR(pg_catalog.->>) 'healthy')::boolean, pg_catalog.jsonb_array_length(v_detail OPERATOR(pg_catalog.->) 'problems'),
                                     v_detail);

    -- the transition-rule triggers
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('rel', x.tbl::text, 'tgname', x.tgname,
               'problem', CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END) ORDER BY x.tbl::text), '[]')
      INTO v_detail
      FROM (SELECT DISTINCT r2.tbl, 'softmig_rule_' OPERATOR(pg_catalog.||) m.id::text AS tgname
              FROM @extschema@.transition_rules r2 WHERE r2.migration_id OPERATOR(pg_catalog.=) m.id) x
      LEFT JOIN pg_catalog.pg_trigger t
        ON t.tgrelid OPERATOR(pg_catalog.=) x.tbl AND t.tgname OPERATOR(pg_catalog.=) x.tgname
     WHERE t.oid IS NULL OR t.tgenabled OPERATOR(pg_catalog.=) 'D';
    v_rows := @extschema@._check_row(v_rows, 'transport', 'rule_triggers',
                                     pg_catalog.jsonb_array_length(v_detail) OPERATOR(pg_catalog.=) 0, pg_catalog.jsonb_array_length(v_detail),
                                     pg_catalog.jsonb_build_object('problems', v_detail));

    -- backfill progress and staleness (it only applies in mirrored)
    v_detail := @extschema@._backfill_status(m.id);
    v_ok := m.state OPERATOR(@extschema@.<>) 'mirrored' OR @extschema@._backfill_done(m.id);
    v_detail := v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
        'applies', m.state OPERATOR(@extschema@.=) 'mirrored',
        'stale_seconds', CASE WHEN v_ok THEN NULL ELSE
            pg_catalog.round(EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-)
                COALESCE((v_detail OPERATOR(pg_catalog.->>) 'updated_at')::timestamptz, m.state_changed_at))) END);
    v_rows := @extschema@._check_row(v_rows, 'transport', 'backfill',
                                     v_ok, CASE WHEN v_ok THEN 0 ELSE GREATEST(COALESCE((v_detail OPERATOR(pg_catalog.->>) 'remaining_estimate')::bigint, 1), 1) END,
                                     v_detail);

    -- projection failures: rows the target holds that legacy could not take
    v_detail := @extschema@._envelope_json(m.id);
    v_n := COALESCE((v_detail OPERATOR(pg_catalog.->>) 'new_only_count')::bigint, 0);
    v_rows := @extschema@._check_row(v_rows, 'transport', 'projection',
                                     v_n OPERATOR(pg_catalog.=) 0, v_n,
                                     pg_catalog.jsonb_build_object('envelope', v_detail));

    -- shadow writes disabled by hand
    SELECT pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.-) 'migration_id' INTO v_detail
      FROM @extschema@.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id;
    v_rows := @extschema@._check_row(v_rows, 'transport', 'shadow',
                                     v_detail IS NULL, CASE WHEN v_detail IS NULL THEN 0 ELSE 1 END,
                                     COALESCE(pg_catalog.jsonb_build_object('disabled', v_detail), '{"disabled": null}'));

    -- readers nobody registered (when the read-path inventory is installed)
    v_detail := NULL;
    IF pg_catalog.to_regprocedure('@extschema@.readers(text)') IS NOT NULL THEN
        BEGIN
            EXECUTE 'SELECT pg_catalog.count(*), COALESCE(pg_catalog.jsonb_agg(x.reader ORDER BY x.reader) '
                    'FILTER (WHERE x.n OPERATOR(pg_catalog.<=) 10), ''[]'') '
                    'FROM (SELECT r.reader, pg_catalog.row_number() OVER (ORDER BY r.reader) AS n '
                    'FROM @extschema@.readers($1) r WHERE NOT r.registered) x'
              INTO v_n, v_detail USING m.name;
            v_detail := pg_catalog.jsonb_build_object('unregistered', v_detail);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
            v_n := 0;
            v_detail := pg_catalog.jsonb_build_object('error', v_err);
        END;
    ELSE
        v_n := 0;
        v_detail := '{"available": false}';
    END IF;
    v_rows := @extschema@._check_row(v_rows, 'transport', 'readers',
                                     v_n OPERATOR(pg_catalog.=) 0 AND NOT v_detail OPERATOR(pg_catalog.?) 'error', v_n,
                                     v_detail);

    ------------------------------------------------------------- structural
    BEGIN
        v_s := @extschema@._parity_summary(m.id, @extschema@._chunk_rows(m), 10);
        FOREACH k IN ARRAY ARRAY['missing_in_target', 'missing_in_legacy', 'mismatch'] LOOP
            v_n := (v_s OPERATOR(pg_catalog.->>) k)::bigint;
            v_detail := pg_catalog.jsonb_build_object('sample', v_s OPERATOR(pg_catalog.->) 'sample' OPERATOR(pg_catalog.->) k,
                'run', v_s OPERATOR(pg_catalog.-) ARRAY['sample', 'mismatch_fields', 'missing_in_target',
                                                        'missing_in_legacy', 'mismatch']);
            IF k OPERATOR(pg_catalog.=) 'mismatch' THEN
                v_detail := v_detail OPERATOR(pg_catalog.||)
                    pg_catalog.jsonb_build_object('fields', v_s OPERATOR(pg_catalog.->) 'mismatch_fields');
            END IF;
            v_rows := @extschema@._check_row(v_rows, 'structural', 'parity_' OPERATOR(pg_catalog.||) k,
                                             v_n OPERATOR(pg_catalog.=) 0, v_n,
                                             v_detail);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
        v_rows := @extschema@._check_row(v_rows, 'structural', 'parity',
                                         false, 1,
                                         pg_catalog.jsonb_build_object('error', v_err));
    END;

    ------------------------------------------------------------- behavioural
    FOR r IN SELECT i.name, i.severity FROM @extschema@.invariants i
              WHERE i.migration_id OPERATOR(pg_catalog.=) m.id ORDER BY i.name LOOP
        BEGIN
            SELECT v.violations, pg_catalog.jsonb_build_object('severity', v.severity, 'sample', v.sample)
              INTO v_n, v_detail
              FROM @extschema@.invariant_violations(m.name, r.name, 10) v;
            v_ok := v_n OPERATOR(pg_catalog.=) 0;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT;
            v_ok := false;
            v_n := 1;
            v_detail := pg_catalog.jsonb_build_object('severity', r.severity, 'error', v_err);
        END;
        v_rows := @extschema@._check_row(v_rows, 'behavioral', 'invariant:' OPERATOR(pg_catalog.||) r.name,
                                         v_ok, v_n,
                                         v_detail);
    END LOOP;

    -- each rule's requires violations, then each ruled column's illegal edges
    FOR r IN SELECT x.* FROM (
                 SELECT tr.id AS rule_id, tr.tbl::text AS tbl, tr.col, tr.from_value, tr.to_value, tr.requires,
                        pg_catalog.format('rule %s: %s.%s %s -> %s', tr.id, tr.tbl, tr.col,
                                          COALESCE(pg_catalog.quote_literal(tr.from_value), 'NULL'),
                                          pg_catalog.quote_literal(tr.to_value)) AS check_name, 1 AS kind
                   FROM @extschema@.transition_rules tr WHERE tr.migration_id OPERATOR(pg_catalog.=) m.id
                 UNION ALL
                 SELECT DISTINCT NULL::integer, tr.tbl::text, tr.col, NULL, NULL, NULL,
                        pg_catalog.format('rules %s.%s: edges not allowed', tr.tbl, tr.col), 2
                   FROM @extschema@.transition_rules tr WHERE tr.migration_id OPERATOR(pg_catalog.=) m.id) x
              ORDER BY x.tbl, x.col, x.kind, x.rule_id LOOP
        SELECT pg_catalog.count(*),
               pg_catalog.count(*) FILTER (WHERE v_prev IS NULL OR v.at OPERATOR(pg_catalog.>)
                   (SELECT pg_catalog.max(c.at) FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) v_prev)),
               pg_catalog.max(v.at)
          INTO v_n, v_new, v_last
          FROM @extschema@.rule_violations v
         WHERE v.migration_id OPERATOR(pg_catalog.=) m.id AND v.tbl OPERATOR(pg_catalog.=) r.tbl
           AND v.col OPERATOR(pg_catalog.=) r.col
           AND (CASE WHEN r.rule_id IS NULL THEN v.rule_id IS NULL ELSE v.rule_id OPERATOR(pg_catalog.=) r.rule_id END);
        v_detail := pg_catalog.jsonb_build_object(
            'mode', COALESCE(m.options OPERATOR(pg_catalog.->>) 'transition_rules', 'enforce'),
            'new_since_last_check', v_new,
            'last_at', v_last,
            'sample', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                'key', s.key, 'from', s.from_value, 'to', s.to_value, 'at', s.at) ORDER BY s.id DESC), '[]')
                         FROM (SELECT v.* FROM @extschema@.rule_violations v
                                WHERE v.migration_id OPERATOR(pg_catalog.=) m.id AND v.tbl OPERATOR(pg_catalog.=) r.tbl
                                  AND v.col OPERATOR(pg_catalog.=) r.col
                                  AND (CASE WHEN r.rule_id IS NULL THEN v.rule_id IS NULL
                                            ELSE v.rule_id OPERATOR(pg_catalog.=) r.rule_id END)
                                ORDER BY v.id DESC LIMIT 10) s));
        IF r.rule_id IS NOT NULL THEN
            v_detail := v_detail OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('rule', r.rule_id,
                'requires', (SELECT tr.requires FROM @extschema@.transition_rules tr WHERE tr.id OPERATOR(pg_catalog.=) r.rule_id));
        END IF;
        v_rows := @extschema@._check_row(v_rows, 'behavioral', r.check_name,
                                         v_n OPERATOR(pg_catalog.=) 0, v_n,
                                         v_detail);
    END LOOP;

    INSERT INTO @extschema@.check_results (run_id, migration_id, actor, state, ordinal, layer, check_name, ok, violations, detail)
    SELECT v_run, m.id, v_actor, m.state, (c.r OPERATOR(pg_catalog.->>) 'ordinal')::integer, c.r OPERATOR(pg_catalog.->>) 'layer',
           c.r OPERATOR(pg_catalog.->>) 'check_name', (c.r OPERATOR(pg_catalog.->>) 'ok')::boolean,
           (c.r OPERATOR(pg_catalog.->>) 'violations')::bigint, c.r OPERATOR(pg_catalog.->) 'detail'
      FROM pg_catalog.jsonb_array_elements(v_rows) AS c(r);
    SELECT COALESCE(pg_catalog.jsonb_agg(c.r OPERATOR(pg_catalog.-) 'ordinal'
                                         ORDER BY (c.r OPERATOR(pg_catalog.->>) 'ordinal')::integer), '[]')
      INTO v_detail FROM pg_catalog.jsonb_array_elements(v_rows) AS c(r);
    RETURN v_detail;
END $$;
COMMENT ON FUNCTION @extschema@._run_checks(text) IS 'internal: implementation of softmig.run_checks';

CREATE FUNCTION @extschema@.run_checks(name text)
RETURNS jsonb AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.run_checks(text) IS
    'run every check of a migration, keep the results in softmig.check_results and return them as a jsonb array; owners of both tables only';

CREATE FUNCTION @extschema@.check(name text)
RETURNS TABLE(layer text, check_name text, ok boolean, violations bigint, detail jsonb)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.layer, r.check_name, r.ok, r.violations, r.detail
      FROM ROWS FROM (pg_catalog.jsonb_to_recordset(@extschema@.run_checks(name))
                      AS (layer text, check_name text, ok boolean, violations bigint, detail jsonb))
           WITH ORDINALITY AS r(layer, check_name, ok, violations, detail, n)
     ORDER BY r.n
$$;
COMMENT ON FUNCTION @extschema@.check(text) IS
    'run every check (transport, structural, behavioral) of a migration, keep the results and return one row per check; owners of both tables only';

CREATE FUNCTION @extschema@._forget_older(p_name text, older_than interval, p_log text, p_event text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(p_name);
    n bigint;
BEGIN
    IF older_than IS NULL OR older_than OPERATOR(pg_catalog.<) '0'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'older_than must be a non-negative interval';
    END IF;
    EXECUTE pg_catalog.format('DELETE FROM @extschema@.%I l WHERE l.migration_id OPERATOR(pg_catalog.=) $1 '
                              'AND l.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $2)', p_log)
        USING m.id, older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF p_event IS NOT NULL THEN
        PERFORM @extschema@._history(m.id, p_event, m.state, m.state, NULL,
            pg_catalog.jsonb_build_object('older_than', older_than::text, 'removed', n));
    END IF;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@._forget_older(text, interval, text, text) IS
    'internal: delete the rows of a migration older than an interval from one of its logs (check_results, rule_violations), recording p_event in history unless NULL';

CREATE FUNCTION @extschema@._forget_checks(name text, older_than interval) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._forget_older(name, older_than, 'check_results', NULL)
$$;
COMMENT ON FUNCTION @extschema@._forget_checks(text, interval) IS 'internal: implementation of softmig.forget_checks';

CREATE FUNCTION @extschema@.forget_checks(name text, older_than interval)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.forget_checks(text, interval) IS
    'delete stored check results older than the interval; returns the rows removed; owners of both tables only';

CREATE FUNCTION @extschema@._forget_rule_violations(name text, older_than interval) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._forget_older(name, older_than, 'rule_violations', 'forget_rule_violations')
$$;
COMMENT ON FUNCTION @extschema@._forget_rule_violations(text, interval) IS
    'internal: implementation of softmig.forget_rule_violations';

CREATE FUNCTION @extschema@.forget_rule_violations(name text, older_than interval)
RETURNS bigint AS 'MODULE_PATHNAME', 'softmig_gate' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.forget_rule_violations(text, interval) IS
    'delete recorded transition-rule violations older than the interval (after they were dealt with); owners of both tables only';

-------------------------------------------------------------------------------
-- The mirrored -> new_write guard (called by _set_state)
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._require_semantic_health(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
-- the guard compares both tables in full, never from cached digests
SET softmig.parity_cache = off AS $$
DECLARE
    m @extschema@.migrations;
    s jsonb;
    n bigint;
    r record;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    s := @extschema@._parity_summary(p_id, @extschema@._chunk_rows(m), 3);
    n := (s OPERATOR(pg_catalog.->>) 'missing_in_target')::bigint OPERATOR(pg_catalog.+)
         (s OPERATOR(pg_catalog.->>) 'missing_in_legacy')::bigint OPERATOR(pg_catalog.+)
         (s OPERATOR(pg_catalog.->>) 'mismatch')::bigint;
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: parity is not clean', m.name),
            DETAIL = pg_catalog.format('%s missing in target, %s missing in legacy, %s mismatched fields; for example %s.',
                                       s OPERATOR(pg_catalog.->>) 'missing_in_target',
                                       s OPERATOR(pg_catalog.->>) 'missing_in_legacy',
                                       s OPERATOR(pg_catalog.->>) 'mismatch',
                                       s OPERATOR(pg_catalog.->) 'sample'),
            HINT = pg_catalog.format('SELECT * FROM softmig.parity(%L) lists every difference; fix them, or pass force => true with a reason.', m.name);
    END IF;
    FOR r IN SELECT i.name FROM @extschema@.invariants i
              WHERE i.migration_id OPERATOR(pg_catalog.=) p_id AND i.severity OPERATOR(pg_catalog.=) 'error'
              ORDER BY i.name LOOP
        SELECT v.violations, v.sample INTO n, s FROM @extschema@.invariant_violations(m.name, r.name, 3) v;
        IF n OPERATOR(pg_catalog.>) 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: invariant "%s" fails', m.name, r.name),
                DETAIL = pg_catalog.format('It returns %s violating %s; for example %s.', n,
                                           CASE WHEN n OPERATOR(pg_catalog.=) 1 THEN 'row' ELSE 'rows' END, s),
                HINT = 'Fix the data, drop the invariant, or pass force => true with a reason.';
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._require_semantic_health(integer) IS
    'internal: the mirrored -> new_write guard: clean parity and no failing error-severity invariant (raises 55000)';

-------------------------------------------------------------------------------
-- inspect: one entity, both sides, for support
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._inspect_assemble(p_id integer, key jsonb, s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    v_xmins text[];
    v_track boolean := pg_catalog.current_setting('track_commit_timestamp')::boolean;
    v_last jsonb := '{}';
    k text;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    v_xmins := ARRAY[s OPERATOR(pg_catalog.->>) 'legacy_xmin', s OPERATOR(pg_catalog.->>) 'target_xmin'];
    FOREACH k IN ARRAY ARRAY['legacy', 'target'] LOOP
        IF s OPERATOR(pg_catalog.->>) (k OPERATOR(pg_catalog.||) '_xmin') IS NOT NULL THEN
            v_last := v_last OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(k, pg_catalog.jsonb_build_object(
                'xmin', s OPERATOR(pg_catalog.->>) (k OPERATOR(pg_catalog.||) '_xmin'),
                'committed_at', CASE WHEN v_track THEN pg_catalog.pg_xact_commit_timestamp(
                    (s OPERATOR(pg_catalog.->>) (k OPERATOR(pg_catalog.||) '_xmin'))::xid) END));
        END IF;
    END LOOP;
    RETURN pg_catalog.jsonb_build_object(
        'migration', m.name,
        'key', key,
        'state', m.state::text,
        'write_authority', CASE WHEN m.state OPERATOR(@extschema@.<=) 'mirrored' THEN 'legacy' ELSE 'target' END,
        'parity', s OPERATOR(pg_catalog.->) 'parity',
        'differences', s OPERATOR(pg_catalog.->) 'differences',
        'legacy', s OPERATOR(pg_catalog.->) 'legacy',
        'legacy_mapped', s OPERATOR(pg_catalog.->) 'legacy_mapped',
        'target', s OPERATOR(pg_catalog.->) 'target',
        'divergent', (SELECT COALESCE(pg_catalog.jsonb_object_agg(d, pg_catalog.jsonb_build_object(
                                 'legacy_mapped', s OPERATOR(pg_catalog.->) 'legacy_mapped' OPERATOR(pg_catalog.->) d,
                                 'target', s OPERATOR(pg_catalog.->) 'target' OPERATOR(pg_catalog.->) d)), '{}')
                        FROM pg_catalog.unnest(m.divergent) d),
        'flags', pg_catalog.jsonb_build_object(
            'in_legacy', s OPERATOR(pg_catalog.->) 'legacy' OPERATOR(pg_catalog.<>) 'null',
            'in_target', s OPERATOR(pg_catalog.->) 'target' OPERATOR(pg_catalog.<>) 'null',
            'new_only', (SELECT COALESCE(pg_catalog.jsonb_agg(c ORDER BY c), '[]') FROM pg_catalog.unnest(m.new_only) c
                          WHERE pg_catalog.jsonb_typeof(s OPERATOR(pg_catalog.->) 'target' OPERATOR(pg_catalog.->) c)
                                OPERATOR(pg_catalog.<>) 'null'),
            'quarantined', EXISTS (SELECT 1 FROM @extschema@._quarantined_keys(m.id) q WHERE q OPERATOR(pg_catalog.=) key),
            'quarantine', (SELECT pg_catalog.to_jsonb(q) OPERATOR(pg_catalog.-) 'migration_id' FROM @extschema@.quarantine q
                            WHERE q.migration_id OPERATOR(pg_catalog.=) m.id AND q.key OPERATOR(pg_catalog.=) _inspect_assemble.key)),
        'last_writes', v_last,
        'operation_keys', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                  'key', o.key, 'side', o.side, 'relation', o.relation, 'state', o.state,
                                  'claimed_at', o.claimed_at, 'claimed_by', o.claimed_by) ORDER BY o.claimed_at), '[]')
                             FROM @extschema@.operations o
                            WHERE o.migration_id OPERATOR(pg_catalog.=) m.id
                              AND ((o.xid::text::numeric OPERATOR(pg_catalog.%) 4294967296)::text) OPERATOR(pg_catalog.=) ANY (v_xmins)),
        'history', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                           'at', h.at, 'actor', h.actor, 'action', h.action, 'reason', h.reason, 'detail', h.detail)
                           ORDER BY h.id), '[]')
                      FROM (SELECT * FROM @extschema@.history_log h
                             WHERE h.migration_id OPERATOR(pg_catalog.=) m.id
                               AND h.detail OPERATOR(pg_catalog.->) 'key' OPERATOR(pg_catalog.=) _inspect_assemble.key
                             ORDER BY h.id DESC LIMIT 20) h),
        'rule_violations', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                   'rule', v.rule_id, 'table', v.tbl, 'column', v.col, 'from', v.from_value,
                                   'to', v.to_value, 'reason', v.reason, 'at', v.at, 'actor', v.actor) ORDER BY v.id), '[]')
                              FROM (SELECT * FROM @extschema@.rule_violations v
                                     WHERE v.migration_id OPERATOR(pg_catalog.=) m.id
                                       AND v.key OPERATOR(pg_catalog.=) _inspect_assemble.key
                                     ORDER BY v.id DESC LIMIT 20) v));
END $$;
COMMENT ON FUNCTION @extschema@._inspect_assemble(integer, jsonb, jsonb) IS
    'internal: add the catalog side of inspect (flags, operation keys, last writes, history, rule violations) to what was read from the tables';

CREATE FUNCTION @extschema@.inspect(name text, key jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_inspect' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.inspect(text, jsonb) IS
    'both sides of one entity, mapped and compared, with its flags (new-only, quarantined), operation keys, last writes and history: the page support opens; for a caller who may read both tables';

CREATE FUNCTION @extschema@.inspect_group(group_name text, key jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'softmig_inspect_group' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.inspect_group(text, jsonb) IS
    'one entity of a group on both sides: the root member''s row for key and every child member''s rows found through the foreign keys between the members'' tables, each as inspect shows it; for a caller who may read both tables of every member';

-------------------------------------------------------------------------------
-- report: a readable summary for psql
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.report(name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    st jsonb := @extschema@.status(name);
    env jsonb := @extschema@._envelope_json(m.id);
    bf jsonb := @extschema@._backfill_status(m.id);
    lines text[] := '{}';
    v_run bigint;
    v_line text;
    r record;
    v_n bigint;
    v_fail bigint;
BEGIN
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('softmig migration "%s": %s -> %s', m.name, m.legacy, m.target);
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  state        %s since %s', m.state,
        pg_catalog.to_char(m.state_changed_at, 'YYYY-MM-DD HH24:MI:SS TZ'));
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  authority    writes go to %s; projection %s; reads default to %s',
        st OPERATOR(pg_catalog.->>) 'write_authority', st OPERATOR(pg_catalog.->>) 'projection',
        st OPERATOR(pg_catalog.->>) 'read_default');

    -- read groups (when the read-path inventory is installed)
    IF pg_catalog.to_regprocedure('@extschema@.readers(text)') IS NOT NULL THEN
        BEGIN
            FOR r IN EXECUTE 'SELECT x.switch_group, pg_catalog.string_agg(DISTINCT x.source::text, ''/'') AS source, '
                             'pg_catalog.count(*) FILTER (WHERE x.registered) AS registered, '
                             'pg_catalog.count(*) FILTER (WHERE NOT x.registered) AS unregistered '
                             'FROM @extschema@.readers($1) x GROUP BY x.switch_group ORDER BY x.switch_group'
                     USING m.name LOOP
                lines := lines OPERATOR(pg_catalog.||) pg_catalog.format(
                    '  read group   %s: reads %s (%s registered, %s unregistered readers)',
                    COALESCE(r.switch_group, '(none)'), r.source, r.registered, r.unregistered);
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  read groups  unavailable: %s', SQLERRM);
        END;
    ELSE
        lines := lines OPERATOR(pg_catalog.||) '  read groups  (read-path inventory not installed)'::text;
    END IF;

    lines := lines OPERATOR(pg_catalog.||) CASE WHEN (env OPERATOR(pg_catalog.->>) 'open')::boolean
        THEN '  envelope     open: rollback across the authority switch is possible'
        ELSE pg_catalog.format('  envelope     closed since %s: %s (%s new-only rows)',
                               pg_catalog.to_char((env OPERATOR(pg_catalog.->>) 'closed_at')::timestamptz, 'YYYY-MM-DD HH24:MI:SS TZ'),
                               env OPERATOR(pg_catalog.->>) 'reason', env OPERATOR(pg_catalog.->>) 'new_only_count') END;
    lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  backfill     %s, %s rows copied, %s batches',
        bf OPERATOR(pg_catalog.->>) 'phase', bf OPERATOR(pg_catalog.->>) 'rows_backfilled', bf OPERATOR(pg_catalog.->>) 'batches');
    SELECT pg_catalog.count(*) INTO v_n FROM @extschema@._quarantined_keys(m.id);
    IF v_n OPERATOR(pg_catalog.>) 0 THEN
        lines := lines OPERATOR(pg_catalog.||) pg_catalog.format('  quarantine   %s entities excluded from projection and parity', v_n);
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) m.id) THEN
        lines := lines OPERATOR(pg_catalog.||) '  shadow       DISABLED: the other table is not being written'::text;
    END IF;

    SELECT pg_catalog.max(c.run_id) INTO v_run FROM @extschema@.check_results c
     WHERE c.migration_id OPERATOR(pg_catalog.=) m.id;
    IF v_run IS NULL THEN
        lines := lines OPERATOR(pg_catalog.||) pg_catalog.format(
            '  checks       none recorded yet: SELECT * FROM softmig.check(%L)', m.name);
    ELSE
        SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE NOT c.ok) INTO v_n, v_fail
          FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) v_run;
        SELECT pg_catalog.format('  checks       run %s at %s by %s: %s checks, %s failing', v_run,
                                 pg_catalog.to_char(c.at, 'YYYY-MM-DD HH24:MI:SS TZ'), c.actor, v_n, v_fail)
          INTO v_line FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) v_run LIMIT 1;
        lines := lines OPERATOR(pg_catalog.||) v_line;
        FOR r IN SELECT c.* FROM @extschema@.check_results c
                  WHERE c.run_id OPERATOR(pg_catalog.=) v_run ORDER BY c.ordinal LOOP
            v_line := pg_catalog.format('    %-11s %-4s %-40s %s', r.layer, CASE WHEN r.ok THEN 'ok' ELSE 'FAIL' END,
                                        r.check_name, r.violations);
            IF NOT r.ok AND pg_catalog.jsonb_typeof(r.detail OPERATOR(pg_catalog.->) 'sample') OPERATOR(pg_catalog.=) 'array'
               AND pg_catalog.jsonb_array_length(r.detail OPERATOR(pg_catalog.->) 'sample') OPERATOR(pg_catalog.>) 0 THEN
                v_line := v_line OPERATOR(pg_catalog.||) '  e.g. ' OPERATOR(pg_catalog.||)
                    pg_catalog.left(((r.detail OPERATOR(pg_catalog.->) 'sample' OPERATOR(pg_catalog.->) 0)
                                     OPERATOR(pg_catalog.-) 'at')::text, 60);
            ELSIF NOT r.ok AND r.detail OPERATOR(pg_catalog.?) 'error' THEN
                v_line := v_line OPERATOR(pg_catalog.||) '  error: ' OPERATOR(pg_catalog.||)
                    pg_catalog.left(r.detail OPERATOR(pg_catalog.->>) 'error', 60);
            END IF;
            lines := lines OPERATOR(pg_catalog.||) v_line;
        END LOOP;
    END IF;
    RETURN pg_catalog.array_to_string(lines, E'\n');
END $$;
COMMENT ON FUNCTION @extschema@.report(text) IS
    'a readable multi-line summary: state, authority, read groups, envelope, backfill and the latest check run per layer';

-------------------------------------------------------------------------------
-- metrics: one row per (migration, metric), for a Prometheus exporter
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.metrics AS
SELECT m.name AS migration, x.metric, x.value
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (
    SELECT (SELECT pg_catalog.max(c.run_id) FROM @extschema@.check_results c
             WHERE c.migration_id OPERATOR(pg_catalog.=) m.id) AS run_id,
           (SELECT bp FROM @extschema@.backfill_progress bp
             WHERE bp.migration_id OPERATOR(pg_catalog.=) m.id) AS bp,
           (SELECT e FROM @extschema@.envelope e
             WHERE e.migration_id OPERATOR(pg_catalog.=) m.id) AS env) l
 CROSS JOIN LATERAL (
    VALUES
    ('state', (pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover'],
                                          m.state::text) OPERATOR(pg_catalog.-) 1)::double precision),
    ('state_age_seconds', EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) m.state_changed_at)::double precision),
    ('write_authority_target', CASE WHEN m.state OPERATOR(@extschema@.>=) 'new_write' THEN 1 ELSE 0 END::double precision),
    ('read_default_new', CASE WHEN m.state OPERATOR(@extschema@.>=) 'new_read' THEN 1 ELSE 0 END::double precision),
    ('backfill_done', CASE WHEN (l.bp).phase OPERATOR(pg_catalog.=) 'done' THEN 1 ELSE 0 END::double precision),
    ('backfill_rows_copied', COALESCE((l.bp).rows_backfilled, 0)::double precision),
    ('backfill_seconds_since_progress', CASE WHEN (l.bp).phase IS NULL OR (l.bp).phase OPERATOR(pg_catalog.=) 'done' THEN 0
         ELSE EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) (l.bp).updated_at) END::double precision),
    ('triggers_healthy', CASE WHEN (@extschema@._trigger_health(m.id) OPERATOR(pg_catalog.->>) 'healthy')::boolean
                              THEN 1 ELSE 0 END::double precision),
    ('envelope_open', CASE WHEN COALESCE((l.env).open, true) THEN 1 ELSE 0 END::double precision),
    ('new_only_rows', COALESCE((l.env).new_only_count, 0)::double precision),
    ('shadow_disabled', (SELECT pg_catalog.count(*) FROM @extschema@.shadow s
                          WHERE s.migration_id OPERATOR(pg_catalog.=) m.id)::double precision),
    ('quarantined_entities', (SELECT pg_catalog.count(*) FROM @extschema@.quarantine q
                               WHERE q.migration_id OPERATOR(pg_catalog.=) m.id)::double precision),
    ('overrides_total', (SELECT pg_catalog.count(*) FROM @extschema@.history_log h
                          WHERE h.migration_id OPERATOR(pg_catalog.=) m.id
                            AND h.action OPERATOR(pg_catalog.=) 'override')::double precision),
    ('rule_violations_total', (SELECT pg_catalog.count(*) FROM @extschema@.rule_violations v
                                WHERE v.migration_id OPERATOR(pg_catalog.=) m.id)::double precision),
    ('legacy_rows_estimate', (SELECT GREATEST(c.reltuples, 0) FROM pg_catalog.pg_class c
                               WHERE c.oid OPERATOR(pg_catalog.=) m.legacy)::double precision),
    ('target_rows_estimate', (SELECT GREATEST(c.reltuples, 0) FROM pg_catalog.pg_class c
                               WHERE c.oid OPERATOR(pg_catalog.=) m.target)::double precision),
    ('last_check_age_seconds', (SELECT EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.max(c.at))
                                  FROM @extschema@.check_results c
                                 WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id)::double precision),
    ('checks_failing', (SELECT pg_catalog.count(*) FILTER (WHERE NOT c.ok) FROM @extschema@.check_results c
                         WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id)::double precision)
    UNION ALL
    SELECT 'check_violations:' OPERATOR(pg_catalog.||) c.check_name, c.violations::double precision
      FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id
    UNION ALL
    SELECT 'check_ok:' OPERATOR(pg_catalog.||) c.check_name, CASE WHEN c.ok THEN 1 ELSE 0 END::double precision
      FROM @extschema@.check_results c WHERE c.run_id OPERATOR(pg_catalog.=) l.run_id
 ) x(metric, value)
UNION ALL
-- migrations across databases: this side's fence, switch and replication (27_remote_catalog.sql)
SELECT r.migration, r.metric, r.value FROM @extschema@._remote_metrics() r;
COMMENT ON VIEW @extschema@.metrics IS
    'one row per (migration, metric): live state, backfill, envelope, triggers, the latest check run (check_violations:<check>, check_ok:<check>), and for migrations across databases their fence, switch and replication (remote_*); cheap enough to scrape';
GRANT SELECT ON @extschema@.metrics TO PUBLIC;

-------------------------------------------------------------------------------
-- pgTAP helpers for users' own migration tests
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.tap_ok(ok boolean, description text, diagnostics text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_nsp name;
    v_out text;
    v_diag text;
BEGIN
    SELECT n.nspname INTO v_nsp
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'pgtap';
    IF v_nsp IS NULL THEN
        -- no pgTAP: a bare TAP line, diagnostics as # comments
        v_out := CASE WHEN ok THEN 'ok' ELSE 'not ok' END OPERATOR(pg_catalog.||) ' - ' OPERATOR(pg_catalog.||) description;
        IF NOT ok AND diagnostics IS NOT NULL THEN
            v_out := v_out OPERATOR(pg_catalog.||) E'\n# ' OPERATOR(pg_catalog.||)
                     pg_catalog.replace(diagnostics, E'\n', E'\n# ');
        END IF;
        RETURN v_out;
    END IF;
    -- pgTAP keeps the test counter and plan; its functions expect their
    -- schema on the path, after pg_catalog so nothing there can shadow a
    -- built-in name pgTAP's code uses
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(v_nsp) OPERATOR(pg_catalog.||) ', pg_temp', true);
    EXECUTE pg_catalog.format('SELECT %I.ok($1, $2)', v_nsp) INTO v_out USING ok, description;
    IF NOT ok AND diagnostics IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT %I.diag($1)', v_nsp) INTO v_diag USING diagnostics;
        v_out := v_out OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) v_diag;
    END IF;
    RETURN v_out;
END $$;
COMMENT ON FUNCTION @extschema@.tap_ok(boolean, text, text) IS
    'one TAP assertion with diagnostics: through pgTAP''s ok() and diag() when pgTAP is installed (plans and numbering work), else a bare ok/not ok line with # comments';

CREATE FUNCTION @extschema@.parity_ok(name text, description text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n bigint := 0;
    v_diag text := '';
    r record;
BEGIN
    FOR r IN SELECT pg_catalog.count(*) OVER () AS total, p.*
               FROM @extschema@.parity(name) p LIMIT 10 LOOP
        v_n := r.total;
        v_diag := v_diag OPERATOR(pg_catalog.||) pg_catalog.format(E'\n  %s %s%s', r.kind, r.key,
            CASE WHEN r.field IS NULL THEN '' ELSE pg_catalog.format(' %s: legacy %s, target %s', r.field,
                COALESCE(pg_catalog.quote_literal(r.legacy_value), 'NULL'),
                COALESCE(pg_catalog.quote_literal(r.target_value), 'NULL')) END);
    END LOOP;
    RETURN @extschema@.tap_ok(v_n OPERATOR(pg_catalog.=) 0,
        COALESCE(description, pg_catalog.format('parity of migration %s is clean', name)),
        pg_catalog.format('%s differences%s', v_n, v_diag));
END $$;
COMMENT ON FUNCTION @extschema@.parity_ok(text, text) IS
    'pgTAP assertion: parity of the migration is clean (diagnostics list up to 10 differences); a bare TAP line without pgTAP';

CREATE FUNCTION @extschema@.invariants_ok(name text, description text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fail integer := 0;
    v_diag text := '';
    r record;
BEGIN
    FOR r IN SELECT * FROM @extschema@.invariant_violations(name, NULL, 3) v
              WHERE v.violations OPERATOR(pg_catalog.>) 0 LOOP
        v_fail := v_fail OPERATOR(pg_catalog.+) 1;
        v_diag := v_diag OPERATOR(pg_catalog.||) pg_catalog.format(E'\n  invariant %s (%s): %s violating rows, e.g. %s',
            r.invariant, r.severity, r.violations, r.sample);
    END LOOP;
    RETURN @extschema@.tap_ok(v_fail OPERATOR(pg_catalog.=) 0,
        COALESCE(description, pg_catalog.format('invariants of migration %s hold', name)),
        pg_catalog.format('%s invariants fail%s', v_fail, v_diag));
END $$;
COMMENT ON FUNCTION @extschema@.invariants_ok(text, text) IS
    'pgTAP assertion: every invariant of the migration (error and warn) returns no rows; a bare TAP line without pgTAP';

CREATE FUNCTION @extschema@.transition_rules_ok(name text, description text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_n bigint;
    v_diag text;
BEGIN
    SELECT pg_catalog.count(*) INTO v_n
      FROM @extschema@.rule_violations v WHERE v.migration_id OPERATOR(pg_catalog.=) m.id;
    SELECT pg_catalog.string_agg(pg_catalog.format(E'\n  %s.%s %s -> %s for %s (%s)', x.tbl, x.col,
               COALESCE(pg_catalog.quote_literal(x.from_value), 'NULL'), COALESCE(pg_catalog.quote_literal(x.to_value), 'NULL'),
               x.key, x.reason), '' ORDER BY x.id)
      INTO v_diag
      FROM (SELECT v.* FROM @extschema@.rule_violations v
             WHERE v.migration_id OPERATOR(pg_catalog.=) m.id ORDER BY v.id LIMIT 10) x;
    RETURN @extschema@.tap_ok(v_n OPERATOR(pg_catalog.=) 0,
        COALESCE(description, pg_catalog.format('no transition rule of migration %s was violated', name)),
        pg_catalog.format('%s recorded violations%s', v_n, COALESCE(v_diag, '')));
END $$;
COMMENT ON FUNCTION @extschema@.transition_rules_ok(text, text) IS
    'pgTAP assertion: no transition-rule violation was recorded (option transition_rules = observe); a bare TAP line without pgTAP';

-------------------------------------------------------------------------------
-- A dropped migration takes its observations and rule triggers with it
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@._forget_dropped_observations() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    DELETE FROM @extschema@.rule_violations v WHERE v.migration_id OPERATOR(pg_catalog.=) OLD.id;
    DELETE FROM @extschema@.check_results c WHERE c.migration_id OPERATOR(pg_catalog.=) OLD.id;
    FOR r IN SELECT t.tgname, t.tgrelid::pg_catalog.regclass AS rel
               FROM pg_catalog.pg_trigger t
              WHERE t.tgname OPERATOR(pg_catalog.=) ('softmig_rule_' OPERATOR(pg_catalog.||) OLD.id::text)
                AND t.tgfoid OPERATOR(pg_catalog.=) '@extschema@._rule_trigger()'::pg_catalog.regprocedure
                AND t.tgparentid OPERATOR(pg_catalog.=) 0 LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@._forget_dropped_observations() IS
    'internal: AFTER DELETE trigger on softmig.migrations removing the check results, rule violations and rule triggers of a dropped migration';

CREATE TRIGGER forget_dropped_observations
    AFTER DELETE ON @extschema@.migrations
    FOR EACH ROW EXECUTE FUNCTION @extschema@._forget_dropped_observations();

-------------------------------------------------------------------------------
-- Privileges: implementation functions run only behind the gate
-------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    @extschema@._parity_acc(bytea, "any"),
    @extschema@._parity_combine(bytea, bytea),
    @extschema@._quarantined_keys(integer),
    @extschema@._parity_summary(integer, integer, integer),
    @extschema@._rule_trigger(),
    @extschema@._check_rule(regclass, name, text, text, text),
    @extschema@._validate_invariant(regclass, text),
    @extschema@._check_observe_option(text, jsonb),
    @extschema@._chunk_rows(@extschema@.migrations),
    @extschema@._add_invariant(text, text, text, text),
    @extschema@._drop_invariant(text, text),
    @extschema@._install_rule_trigger(integer, regclass),
    @extschema@._add_transition_rule(text, regclass, name, text, text, text),
    @extschema@._drop_transition_rule(text, regclass, name, text, text),
    @extschema@._run_checks(text),
    @extschema@._forget_older(text, interval, text, text),
    @extschema@._forget_checks(text, interval),
    @extschema@._forget_rule_violations(text, interval),
    @extschema@._require_semantic_health(integer),
    @extschema@._forget_dropped_observations(),
    @extschema@._inspect_assemble(integer, jsonb, jsonb),
    @extschema@._parity_cache_reset(text)
FROM PUBLIC;
