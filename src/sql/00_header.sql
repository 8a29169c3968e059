/* softmig--0.1.0.sql: soft migrations of live tables */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION softmig" to load this file. \quit
