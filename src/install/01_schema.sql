-------------------------------------------------------------------------------
-- The schema: only one that CREATE EXTENSION made, or one as safe
-------------------------------------------------------------------------------
-- softmig's catalog and its SECURITY DEFINER functions live in schema
-- softmig, and superusers run its functions.  A role with CREATE on the
-- database could create that schema first (CREATE EXTENSION then installs
-- into it) and later replace softmig's objects there: the CVE-2022-2625
-- class.  So the schema must belong to a superuser, nobody else may create
-- objects in it, and it must be empty.  A schema CREATE EXTENSION makes
-- itself is all three; so is the one pg_restore creates before it.
DO $$
DECLARE
    v_owner name;
    v_super boolean;
    v_others text;
    v_objects bigint;
BEGIN
    SELECT r.rolname, r.rolsuper INTO v_owner, v_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
     WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@';
    SELECT pg_catalog.string_agg(DISTINCT COALESCE(g.rolname, 'PUBLIC'), ', ') INTO v_others
      FROM pg_catalog.pg_namespace n,
           LATERAL pg_catalog.aclexplode(n.nspacl) a
           LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
     WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@'
       AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
       AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner;
    SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_opclass k WHERE k.opcnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_collation l WHERE l.collnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_conversion v WHERE v.connamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_config s WHERE s.cfgnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace OPERATOR(pg_catalog.=) n.oid)
         OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_statistic_ext x WHERE x.stxnamespace OPERATOR(pg_catalog.=) n.oid)
      INTO v_objects
      FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@';
    IF NOT v_super OR v_others IS NOT NULL OR v_objects OPERATOR(pg_catalog.<>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('schema "%s" already exists and is not safe for softmig', '@extschema@'),
            DETAIL = CASE WHEN NOT v_super THEN pg_catalog.format('It is owned by role "%s", which is not a superuser.', v_owner)
                          WHEN v_others IS NOT NULL THEN pg_catalog.format('Roles other than its owner may create objects in it: %s.', v_others)
                          ELSE pg_catalog.format('It already holds objects (%s).', v_objects) END,
            HINT = 'softmig''s catalog and security-definer functions live in this schema; whoever could create objects in it could replace them. Drop or rename the schema and run CREATE EXTENSION softmig again.';
    END IF;
END $$;
