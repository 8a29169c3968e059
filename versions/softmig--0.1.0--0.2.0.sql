/* softmig--0.1.0--0.2.0.sql: upgrade from the released 0.1.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION softmig UPDATE TO '0.2.0'" to load this file. \quit

-- The SQL objects of 0.2.0 are those of 0.1.0: nothing to change here yet.
-- 0.2.0 so far changes only the C library (set-based mirroring of big
-- statements), which both versions load from $libdir/softmig.
--
-- Rules for this file (doc/packaging.md, "Versions and upgrades"):
--   * every change to src/sql/*.sql gets its counterpart here, so that an
--     updated 0.1.0 installation equals a fresh 0.2.0 one; test/t/070_upgrade.pl
--     compares the two object by object and fails otherwise;
--   * versions/softmig--0.1.0.sql is released and never edited;
--   * C entry points that 0.1.0 declares stay exported by the library.
