-- CREATE EXTENSION softmig refuses a schema softmig it cannot trust
-- (CVE-2022-2625 class): one another role created first, one others may
-- create objects in, or one that already holds objects.
\pset null '(null)'
-- (the errors' context differs by version: 18 adds the script's statement)
\set SHOW_CONTEXT never
SELECT current_database() AS origdb \gset
CREATE ROLE sm_squatter;
CREATE DATABASE sm_install;
GRANT CREATE ON DATABASE sm_install TO sm_squatter;
\c sm_install
SET client_min_messages = warning;

-- a role with CREATE on the database creates the schema first
SET ROLE sm_squatter;
CREATE SCHEMA softmig;
RESET ROLE;
CREATE EXTENSION softmig;
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'softmig';
SELECT count(*) AS objects_in_schema FROM pg_class WHERE relnamespace = 'softmig'::regnamespace;
-- (the squatter could not rename it and plant objects for a superuser to run)
DROP SCHEMA softmig;

-- a superuser's schema that others may create objects in
CREATE SCHEMA softmig;
GRANT CREATE ON SCHEMA softmig TO sm_squatter;
CREATE EXTENSION softmig;
GRANT CREATE ON SCHEMA softmig TO PUBLIC;
REVOKE CREATE ON SCHEMA softmig FROM sm_squatter;
CREATE EXTENSION softmig;
REVOKE CREATE ON SCHEMA softmig FROM PUBLIC;

-- a superuser's schema that already holds objects
CREATE TABLE softmig.migrations (id int);
CREATE EXTENSION softmig;
DROP TABLE softmig.migrations;
CREATE FUNCTION softmig._migration(text) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE EXTENSION softmig;
DROP FUNCTION softmig._migration(text);

-- a superuser's empty schema (as pg_restore creates it) is fine ...
CREATE EXTENSION softmig;
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname = 'softmig';
-- ... and so is the one DROP EXTENSION leaves behind, or none at all
DROP EXTENSION softmig;
CREATE EXTENSION softmig;
DROP EXTENSION softmig;
DROP SCHEMA softmig;
CREATE EXTENSION softmig;
SELECT nspowner::regrole AS owner, nspacl FROM pg_namespace WHERE nspname = 'softmig';

\c :origdb
DROP DATABASE sm_install;
DROP ROLE sm_squatter;
