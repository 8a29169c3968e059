-- softmig.tap_ok calls pgTAP with pg_catalog first on its search_path, so a
-- function in pgTAP's schema with a built-in's name and signature (here
-- substr(text, integer), which pgTAP's ok() calls unqualified) cannot take
-- the built-in's place.  Everything runs in one transaction and is rolled
-- back.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS softmig;

BEGIN;
SET LOCAL search_path = public, pg_catalog;
SELECT plan(1);
-- pgTAP lives in public; plant the shadow there, next to it
CREATE FUNCTION public.substr(text, integer) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'public.substr ran in place of pg_catalog.substr';
END $$;
SELECT softmig.tap_ok(true, 'tap_ok resolves built-in names in pg_catalog before pgTAP''s schema');
DROP FUNCTION public.substr(text, integer);
SELECT * FROM finish();
ROLLBACK;
