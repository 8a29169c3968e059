-------------------------------------------------------------------------------
-- Groups: migrations that move together (functions in 52_groups.sql)
-------------------------------------------------------------------------------
CREATE SEQUENCE @extschema@.groups_id_seq AS integer;

CREATE TABLE @extschema@.groups (
    id         integer PRIMARY KEY
               DEFAULT pg_catalog.nextval('@extschema@.groups_id_seq'::pg_catalog.regclass),
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by name NOT NULL
);
ALTER SEQUENCE @extschema@.groups_id_seq OWNED BY @extschema@.groups.id;
COMMENT ON TABLE @extschema@.groups IS
    'softmig: one row per group of migrations that change state together (one entity made of several table pairs)';

CREATE TABLE @extschema@.group_members (
    group_id     integer NOT NULL REFERENCES @extschema@.groups (id) ON DELETE CASCADE,
    migration_id integer NOT NULL UNIQUE REFERENCES @extschema@.migrations (id),
    ordinal      integer NOT NULL,      -- position in create_group's members array, from 1
    PRIMARY KEY (group_id, migration_id),
    UNIQUE (group_id, ordinal)
);
COMMENT ON TABLE @extschema@.group_members IS
    'softmig: the migrations of each group; a migration belongs to at most one group';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.groups', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.groups_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.group_members', '');
REVOKE ALL ON @extschema@.groups, @extschema@.group_members FROM PUBLIC;
GRANT SELECT ON @extschema@.groups, @extschema@.group_members TO PUBLIC;
