-------------------------------------------------------------------------------
-- Privileges: implementation functions run only behind the gate.
-------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    @extschema@._actor(),
    @extschema@._envelope_open_now(integer),
    @extschema@._expr_columns(text),
    @extschema@._check_expression(text, text),
    @extschema@._invalidate(regclass, regclass),
    @extschema@._validate(integer),
    @extschema@._guard_trigger(),
    @extschema@._write_trigger(),
    @extschema@._install_triggers(integer),
    @extschema@._install_triggers_on(integer, regclass),
    @extschema@._trigger_ddl(boolean),
    @extschema@._has_rows(regclass),
    @extschema@._managing_triggers(),
    @extschema@._refuse_rules(integer),
    @extschema@._remove_triggers(integer),
    @extschema@._history(integer, text, @extschema@.state, @extschema@.state, text, jsonb),
    @extschema@._set_state(integer, @extschema@.state, text, text, jsonb),
    @extschema@._resolve_mapping(text, regclass, regclass, jsonb, text[]),
    @extschema@._create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb),
    @extschema@._require_column(regclass, text, text, boolean),
    @extschema@._check_mapping(regclass, jsonb, text),
    @extschema@._advance(text, @extschema@.state, text, boolean),
    @extschema@._rollback(text, text),
    @extschema@._drop_migration(text),
    @extschema@._repair_triggers(text),
    @extschema@._set_option(text, text, jsonb),
    @extschema@._check_options(jsonb),
    @extschema@._lock_migration(integer),
    @extschema@._lock_tables(@extschema@.migrations, @extschema@.state, boolean)
FROM PUBLIC;
