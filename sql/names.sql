-- Names: quotes, spaces, upper case, dots, reserved words and unicode in
-- every identifier softmig touches (schemas, tables, columns, keys, migration
-- names, readers, views, options), columns named like softmig's own aliases,
-- and injection attempts through names, reasons and keys: everything works
-- and everything is stored and used literally.  (Data that goes through
-- upper()/lower() is ASCII and text is ordered COLLATE "C", so the expected
-- output does not depend on the database's locale.)
\pset null '(null)'
CREATE SCHEMA "My Schema";

------------------------------------------------------------------ quotes, spaces, unicode, composite key
CREATE TABLE "My Schema"."Legacy ""Orders""" (
    "Order ID" int NOT NULL,
    "Line No" smallint NOT NULL,
    "kündé" text NOT NULL,
    "a""b" text,
    "Preis €" int,
    PRIMARY KEY ("Order ID", "Line No"));
CREATE TABLE "My Schema"."ñeue Tabelle" (
    "Bestell-Nr" int NOT NULL,
    "Zeile" int NOT NULL,
    "Kunde" text NOT NULL,
    "a""b" text,
    "Betrag €" numeric(10,2),
    "Spalte mit Leerzeichen" text,
    "CamelCase" text,
    UNIQUE ("Zeile", "Bestell-Nr"));
INSERT INTO "My Schema"."Legacy ""Orders""" VALUES
    (1, 1, 'anna', 'x"y ✓', 1000), (1, 2, 'bjoern', NULL, 250), (2, 1, 'ca va', NULL, NULL);
SELECT softmig.create_migration('o''brien migration',
    '"My Schema"."Legacy ""Orders"""', '"My Schema"."ñeue Tabelle"',
    forward => $j${"Bestell-Nr": "\"Order ID\"", "Zeile": "\"Line No\"", "Kunde": "upper(\"kündé\")",
                   "Betrag €": "\"Preis €\" / 100.0",
                   "Spalte mit Leerzeichen": "coalesce(\"a\"\"b\", '') || ' & ' || \"kündé\""}$j$,
    backward => $j${"Order ID": "\"Bestell-Nr\"", "Line No": "\"Zeile\"", "kündé": "lower(\"Kunde\")",
                    "Preis €": "(\"Betrag €\" * 100)::int"}$j$,
    new_only => '{CamelCase}');
SELECT name, legacy, target, legacy_key, target_key, new_only FROM softmig.migrations
 WHERE name = 'o''brien migration';
SELECT direction, column_name, expression, is_default FROM softmig.mappings m
  JOIN softmig.migrations g ON g.id = m.migration_id
 WHERE g.name = 'o''brien migration' ORDER BY direction, ordinal;
SELECT softmig.state('o''brien migration');
SELECT softmig.advance('o''brien migration');

-- mirrored writes, a key change, COPY
INSERT INTO "My Schema"."Legacy ""Orders""" VALUES (3, 1, 'dzungla', 'q''uote ☃', 5);
UPDATE "My Schema"."Legacy ""Orders""" SET "Line No" = 3 WHERE "Order ID" = 1 AND "Line No" = 2;
UPDATE "My Schema"."Legacy ""Orders""" SET "a""b" = 'new "ab"' WHERE "Order ID" = 3;
DELETE FROM "My Schema"."Legacy ""Orders""" WHERE "Order ID" = 2;
COPY "My Schema"."Legacy ""Orders""" ("Order ID", "Line No", "kündé", "Preis €") FROM stdin;
4	1	elan	400
\.
CALL softmig.backfill('o''brien migration', batch_size => 1);
SELECT s->>'legacy' AS legacy, s->>'target' AS target, s->'key' AS key, s->'target_key' AS target_key,
       s->>'backfill_done' AS backfill_done, s->'triggers'->>'healthy' AS healthy
  FROM softmig.status('o''brien migration') s;
SELECT * FROM "My Schema"."ñeue Tabelle" ORDER BY 1, 2;
SELECT count(*) AS differences FROM softmig.parity('o''brien migration');

-- quarantine with an odd composite key; per-field authority on "Betrag €"
SELECT softmig.quarantine('o''brien migration', '{"Order ID": 1, "Line No": 1}', 'reason with ''quotes'' and "dq"');
SELECT key, reason FROM softmig.quarantine;
SELECT * FROM t.err($$UPDATE "My Schema"."Legacy ""Orders""" SET "Preis €" = 1 WHERE "Order ID" = 1$$);
SELECT softmig.release('o''brien migration', '{"Line No": 1, "Order ID": 1}');
SELECT softmig.set_field_authority('o''brien migration', 'Betrag €', 'new');
UPDATE "My Schema"."ñeue Tabelle" SET "Betrag €" = 12.34 WHERE "Bestell-Nr" = 1 AND "Zeile" = 3;
SELECT "Order ID", "Line No", "Preis €" FROM "My Schema"."Legacy ""Orders""" WHERE "Order ID" = 1 ORDER BY 2;
SELECT softmig.set_field_authority('o''brien migration', 'Betrag €', 'legacy');
SELECT softmig.hydrate('o''brien migration', '[{"Bestell-Nr": 4, "Zeile": 1, "CamelCase": "hydrated"}]',
                       pg_current_snapshot());

-- read paths with odd names
SELECT softmig.register_reader('o''brien migration', 'o''brien "app"', 'latency', 'grp ''1''');
SELECT softmig.create_read_view('o''brien migration', '"My Schema"."Vüew ""Orders"""', 'new');
SELECT "Bestell-Nr", "Zeile", "Kunde" FROM "My Schema"."Vüew ""Orders""" ORDER BY 1, 2;
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT reader, class, switch_group, source, registered FROM softmig.readers('o''brien migration')
 WHERE registered;
RESET client_min_messages;

-- new_write: projection through the quoted mappings, with an operation key
SELECT softmig.advance('o''brien migration');
BEGIN;
SET LOCAL softmig.operation_key = 'ключ ''1'' ✓ "x"';
INSERT INTO "My Schema"."ñeue Tabelle" ("Bestell-Nr", "Zeile", "Kunde", "Betrag €") VALUES (5, 1, 'OEL', 1.5);
COMMIT;
SELECT softmig.operation_applied('o''brien migration', 'ключ ''1'' ✓ "x"');
UPDATE "My Schema"."ñeue Tabelle" SET "Zeile" = 2, "Kunde" = 'ANNA B' WHERE "Bestell-Nr" = 1 AND "Zeile" = 1;
DELETE FROM "My Schema"."ñeue Tabelle" WHERE "Bestell-Nr" = 3;
SELECT * FROM "My Schema"."Legacy ""Orders""" ORDER BY 1, 2;
SELECT * FROM t.err($$INSERT INTO "My Schema"."Legacy ""Orders""" VALUES (9, 9, 'no', NULL, NULL)$$);
SELECT softmig.set_option('o''brien migration', 'on_new_only', '"reject"') ->> 'on_new_only' AS on_new_only;
SELECT * FROM t.err($$UPDATE "My Schema"."ñeue Tabelle" SET "CamelCase" = 'only new' WHERE "Bestell-Nr" = 5$$);
SELECT softmig.close_envelope('o''brien migration', $r$approved by 'ops' "team"; DROP TABLE x; --$r$);
UPDATE "My Schema"."ñeue Tabelle" SET "CamelCase" = 'only new' WHERE "Bestell-Nr" = 5;
SELECT e->>'open' AS open, e->'first_key' AS first_key FROM softmig.envelope('o''brien migration') e;
SELECT softmig.switch_reads('o''brien migration', 'grp ''1''', 'new', '''); DROP TABLE "My Schema"."ñeue Tabelle"; --');
SELECT softmig.advance('o''brien migration');
SELECT softmig.reset_discovery('o''brien migration') >= 0 AS reset;   -- earlier tests' sessions
SET client_min_messages = warning;  -- no "discovery is off" notice without preload
SELECT softmig.advance('o''brien migration');
RESET client_min_messages;
SELECT action, reason, detail FROM softmig.history('o''brien migration')
 WHERE action NOT IN ('create', 'backfill_done', 'hydrate', 'register_reader', 'create_read_view', 'reset_discovery');

------------------------------------------------------------------ reserved words and unicode everywhere
CREATE TABLE "My Schema"."Tåble ☃" ("from" text PRIMARY KEY, "select" int, "user" text, "ÄÖÜ" text);
CREATE TABLE "My Schema"."select" ("from" text PRIMARY KEY, "where" int, "user" text, "ÄÖÜ" text);
INSERT INTO "My Schema"."Tåble ☃" VALUES ('a', 1, 'u1', 'ä'), ('b', 2, 'u2', 'ö');
SELECT softmig.create_migration('Ünïcode ✓', '"My Schema"."Tåble ☃"', '"My Schema"."select"',
    forward => '{"where": "\"select\" * 2"}', backward => '{"select": "\"where\" / 2"}');
SELECT softmig.advance('Ünïcode ✓');
INSERT INTO "My Schema"."Tåble ☃" VALUES ('''); DROP TABLE "My Schema"."select"; --', 3, 'u3', 'ü');
UPDATE "My Schema"."Tåble ☃" SET "from" = 'b ☃' WHERE "from" = 'b';
CALL softmig.backfill('Ünïcode ✓');
SELECT * FROM "My Schema"."select" ORDER BY "from" COLLATE "C";
SELECT softmig.quarantine('Ünïcode ✓', '{"from": "''); DROP TABLE \"My Schema\".\"select\"; --"}', '%s %n %x %%');
SELECT * FROM t.err($$UPDATE "My Schema"."Tåble ☃" SET "user" = 'x' WHERE "select" = 3$$);
SELECT (softmig.status('Ünïcode ✓')->>'quarantined') AS quarantined;
SELECT softmig.release('Ünïcode ✓', '{"from": "''); DROP TABLE \"My Schema\".\"select\"; --"}');
SELECT softmig.advance('Ünïcode ✓');
UPDATE "My Schema"."select" SET "where" = 10, "from" = 'ä ☃' WHERE "from" = 'a';
SELECT * FROM "My Schema"."Tåble ☃" ORDER BY "from" COLLATE "C";
SELECT softmig.rollback('Ünïcode ✓', 'zurück ✓');
SELECT softmig.rollback('Ünïcode ✓', 'ganz zurück');
SELECT action, from_state, to_state, reason FROM softmig.history('Ünïcode ✓')
 WHERE action IN ('advance', 'rollback', 'quarantine');
SELECT softmig.drop_migration('Ünïcode ✓');

------------------------------------------------------------------ injection through names, reasons and keys
CREATE TABLE "My Schema"."inj.l" ("id'); DROP TABLE x; --" text PRIMARY KEY, "v%s" text);
CREATE TABLE "My Schema"."inj;t" ("id'); DROP TABLE x; --" text PRIMARY KEY, "v%s" text);
SELECT softmig.create_migration($n$x'); DROP TABLE "My Schema"."inj.l"; -- %s %n "\$n$,
    '"My Schema"."inj.l"', '"My Schema"."inj;t"');
SELECT name, length(name), legacy, target, legacy_key FROM softmig.migrations WHERE name LIKE 'x''); DROP%';
SELECT softmig.advance($n$x'); DROP TABLE "My Schema"."inj.l"; -- %s %n "\$n$,
                       reason => $r$'); DELETE FROM softmig.migrations; --$r$);
INSERT INTO "My Schema"."inj.l" VALUES ($v$'); DROP TABLE "My Schema"."inj;t"; --$v$, 'v1'), ('plain', 'v2');
UPDATE "My Schema"."inj.l" SET "v%s" = '%s%s' WHERE "id'); DROP TABLE x; --" = 'plain';
SELECT * FROM "My Schema"."inj;t" ORDER BY "id'); DROP TABLE x; --" COLLATE "C";
SELECT softmig.quarantine($n$x'); DROP TABLE "My Schema"."inj.l"; -- %s %n "\$n$,
    jsonb_build_object($k$id'); DROP TABLE x; --$k$, $v$'); DROP TABLE "My Schema"."inj;t"; --$v$),
    $r$'); DROP TABLE "My Schema"."inj.l"; --$r$);
SELECT key, reason FROM softmig.quarantine q JOIN softmig.migrations m ON m.id = q.migration_id
 WHERE m.name LIKE 'x''); DROP%';
-- keys that are not keys, values that are not of the key's type
SELECT state, message FROM t.err($$SELECT softmig.quarantine('o''brien migration', '{"x": 1}', 'r')$$);
SELECT state, message FROM t.err($$SELECT softmig.quarantine('o''brien migration', '{"Order ID": "1); DROP TABLE x; --", "Line No": 1}', 'r')$$);
SELECT state, message FROM t.err($$SELECT softmig.quarantine('o''brien migration', '{"Order ID\"); DROP TABLE x; --": 1}', 'r')$$);
-- unknown names are just unknown, whatever they contain
SELECT state, message FROM t.err($$SELECT softmig.status($q$'); DROP TABLE "My Schema"."inj.l"; --$q$)$$);
SELECT state, message FROM t.err($$SELECT softmig.advance('%s%s%s%n')$$);
-- the routed view name and the reader name are identifiers and labels, not SQL
SELECT state, message FROM t.err($$SELECT softmig.create_read_view('o''brien migration', 'v; DROP TABLE x')$$);
SELECT state, message FROM t.err($$SELECT softmig.register_reader('o''brien migration', 'r''); DROP TABLE x; --', 'audit')$$);
SELECT reader, class, switch_group FROM softmig.reader_registry WHERE class = 'audit';
SELECT softmig.rollback($n$x'); DROP TABLE "My Schema"."inj.l"; -- %s %n "\$n$, $r$%s%n$r$);
SELECT softmig.drop_migration($n$x'); DROP TABLE "My Schema"."inj.l"; -- %s %n "\$n$);
SELECT action, reason FROM softmig.history_log h WHERE h.detail->>'name' LIKE 'x''); DROP%'
   OR h.migration_id IN (SELECT migration_id FROM softmig.history_log WHERE detail->>'name' LIKE 'x''); DROP%')
 ORDER BY h.id;
-- every table is still there
SELECT c.relname FROM pg_class c WHERE c.relnamespace = '"My Schema"'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY 1;

------------------------------------------------------------------ columns named like softmig's own aliases
CREATE TABLE "My Schema".l_alias (
    softmig_key int PRIMARY KEY, softmig_t text, softmig_s text, softmig_l text, softmig_k1 int,
    softmig_i text, softmig_r text, softmig_v1 text, softmig_old text, softmig_o text, softmig_new text,
    softmig_n text, softmig_f text, softmig_x text, softmig_q text, softmig_m text, softmig_batch text,
    softmig_ctid text, softmig_tableoid text, softmig_mapped text, softmig_src text);
CREATE TABLE "My Schema".t_alias (LIKE "My Schema".l_alias INCLUDING ALL, softmig_k text, softmig_v text);
INSERT INTO "My Schema".l_alias (softmig_key, softmig_t, softmig_o) VALUES (1, 't1', 'o1'), (2, 't2', 'o2');
SELECT softmig.create_migration('aliases', '"My Schema".l_alias', '"My Schema".t_alias',
    forward => '{"softmig_s": "softmig_t || softmig_o"}', new_only => '{softmig_v}');
SELECT softmig.advance('aliases');
INSERT INTO "My Schema".l_alias (softmig_key, softmig_t, softmig_o) VALUES (3, 't3', 'o3');
UPDATE "My Schema".l_alias SET softmig_key = 4, softmig_new = 'n' WHERE softmig_key = 3;
CALL softmig.backfill('aliases');
SELECT softmig.quarantine('aliases', '{"softmig_key": 1}', 'x');
SELECT softmig.release('aliases', '{"softmig_key": 1}');
SELECT softmig.set_field_authority('aliases', 'softmig_x', 'new');
UPDATE "My Schema".t_alias SET softmig_x = 'from target' WHERE softmig_key = 2;
SELECT softmig.set_field_authority('aliases', 'softmig_x', 'legacy');
SELECT softmig.hydrate('aliases', '[{"softmig_key": 2, "softmig_k": "hydrated"}]', pg_current_snapshot());
SELECT count(*) AS differences FROM softmig.parity('aliases');
SELECT softmig.advance('aliases');
UPDATE "My Schema".t_alias SET softmig_key = 5, softmig_old = 'old' WHERE softmig_key = 4;
UPDATE "My Schema".t_alias SET softmig_v = 'new only' WHERE softmig_key = 5;
DELETE FROM "My Schema".t_alias WHERE softmig_key = 1;
SELECT softmig.shadow_disable('aliases', 'x');
SELECT softmig.shadow_enable('aliases');
SELECT softmig_key, softmig_t, softmig_s, softmig_o, softmig_new, softmig_old, softmig_x, softmig_k, softmig_v
  FROM "My Schema".t_alias ORDER BY 1;
SELECT softmig_key, softmig_t, softmig_o, softmig_new, softmig_old, softmig_x FROM "My Schema".l_alias ORDER BY 1;

------------------------------------------------------------------ clean-up
SELECT state, message FROM t.err($$SELECT softmig.drop_migration('o''brien migration')$$);
DROP VIEW "My Schema"."Vüew ""Orders""";
SELECT softmig.drop_migration('o''brien migration');
SET client_min_messages = warning;
DROP EXTENSION softmig CASCADE;
CREATE EXTENSION softmig;
DROP SCHEMA "My Schema" CASCADE;
RESET client_min_messages;
