/* softmig install script (current version): soft migrations of live tables */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION softmig" to load this file. \quit
