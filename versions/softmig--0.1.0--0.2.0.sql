/* softmig--0.1.0--0.2.0.sql: upgrade from the released 0.1.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION softmig UPDATE TO '0.2.0'" to load this file. \quit

-- The schema must be safe for softmig (see 01_schema.sql): an installation
-- of 0.1.0 into a schema another role created is not updated.
DO $$
DECLARE
    v_owner name;
    v_super boolean;
    v_others text;
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
    IF NOT v_super OR v_others IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('schema "%s" is not safe for softmig', '@extschema@'),
            DETAIL = CASE WHEN NOT v_super THEN pg_catalog.format('It is owned by role "%s", which is not a superuser.', v_owner)
                          ELSE pg_catalog.format('Roles other than its owner may create objects in it: %s.', v_others) END,
            HINT = 'Whoever can create objects in softmig''s schema can replace its objects. Make a superuser its owner and revoke CREATE from other roles, then update.';
    END IF;
END $$;

-- 0.2.0 changes the C library (set-based mirroring of big statements,
-- plain-insert backfill batches, routing at plan time), which both versions
-- load from $libdir/softmig, and SQL functions, below.
--
-- Rules for this file (doc/packaging.md, "Versions and upgrades"):
--   * every change to src/sql/*.sql gets its counterpart here, so that an
--     updated 0.1.0 installation equals a fresh 0.2.0 one; test/t/070_upgrade.pl
--     compares the two object by object and fails otherwise;
--   * versions/softmig--0.1.0.sql is released and never edited;
--   * C entry points that 0.1.0 declares stay exported by the library.

-- _backfill_batch: the verify phase proves completeness first and sweeps
-- only when rows are missing (one full pass fewer on a complete target);
-- a batch that got the delete fence reads without row locks, and one whose
-- copy timed out behind a live writer (busy) is retried.
CREATE OR REPLACE FUNCTION @extschema@._backfill_batch(name text, batch_size integer)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    p @extschema@.backfill_progress;
    rv @extschema@.backfill_revisit;
    r jsonb;
    v_copied bigint := 0;
    v_removed bigint := 0;
    v_waiting boolean := false;
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR batch_size OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'batch_size must be between 1 and 1000000';
    END IF;
    IF m.state OPERATOR(@extschema@.<>) 'mirrored' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('cannot backfill migration "%s" in state %s', m.name, m.state),
            DETAIL = 'Backfill runs only in state mirrored, where every live write already reaches the target.',
            HINT = CASE WHEN m.state OPERATOR(@extschema@.=) 'legacy'
                        THEN pg_catalog.format('SELECT softmig.advance(%L) first.', m.name)
                        ELSE 'Past mirrored the target is the write authority and needs no backfill.' END;
    END IF;

    INSERT INTO @extschema@.backfill_progress (migration_id) VALUES (m.id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT p FROM @extschema@.backfill_progress
     WHERE migration_id OPERATOR(pg_catalog.=) m.id FOR UPDATE;
    IF p.phase OPERATOR(pg_catalog.=) 'done' THEN
        -- live writes keep a complete target complete: nothing left to do
        RETURN pg_catalog.jsonb_build_object('phase', p.phase, 'copied', 0, 'removed', 0,
                                             'done', true, 'waiting', false);
    END IF;

    IF p.phase OPERATOR(pg_catalog.=) 'scan' THEN
        r := @extschema@._bf_step(m.id, 'next', batch_size, p.cursor, NULL, m.mirror_snapshot, m.mirror_xid);
        IF (r OPERATOR(pg_catalog.->>) 'busy')::boolean THEN
            -- the copy timed out behind a live writer: nothing copied, retry
            v_waiting := true;
        ELSE
            IF (r OPERATOR(pg_catalog.->>) 'tail_skipped')::bigint OPERATOR(pg_catalog.>) 0 THEN
                -- rows past the end of this batch that a live writer held: revisit them
                INSERT INTO @extschema@.backfill_revisit (migration_id, lo, hi)
                VALUES (m.id, COALESCE(r OPERATOR(pg_catalog.->) 'last_key', p.cursor), NULL);
            END IF;
            IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
                p.phase := 'revisit';
            ELSE
                IF (r OPERATOR(pg_catalog.->>) 'skipped')::bigint OPERATOR(pg_catalog.>) 0 THEN
                    INSERT INTO @extschema@.backfill_revisit (migration_id, lo, hi)
                    VALUES (m.id, p.cursor, r OPERATOR(pg_catalog.->) 'last_key');
                END IF;
                p.cursor := r OPERATOR(pg_catalog.->) 'last_key';
                v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            END IF;
        END IF;
    ELSIF p.phase OPERATOR(pg_catalog.=) 'revisit' THEN
        SELECT * INTO rv FROM @extschema@.backfill_revisit
         WHERE migration_id OPERATOR(pg_catalog.=) m.id ORDER BY attempts, id LIMIT 1 FOR UPDATE;
        IF NOT FOUND THEN
            p.phase := 'verify';
        ELSE
            r := @extschema@._bf_step(m.id, 'range', batch_size, rv.lo, rv.hi, m.mirror_snapshot, m.mirror_xid);
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'skipped')::bigint OPERATOR(pg_catalog.=) 0 THEN
                DELETE FROM @extschema@.backfill_revisit
                 WHERE migration_id OPERATOR(pg_catalog.=) m.id AND id OPERATOR(pg_catalog.=) rv.id;
            ELSE
                UPDATE @extschema@.backfill_revisit SET attempts = attempts OPERATOR(pg_catalog.+) 1
                 WHERE migration_id OPERATOR(pg_catalog.=) m.id AND id OPERATOR(pg_catalog.=) rv.id;
                v_waiting := true;
            END IF;
        END IF;
    ELSIF p.phase OPERATOR(pg_catalog.=) 'verify' THEN
        -- prove completeness first (one anti-join); only if rows are missing,
        -- copy them (the sweep, a second anti-join); once none is missing,
        -- remove stale target rows legacy does not have.  Removing target
        -- rows never makes a legacy row missing, and a legacy row written
        -- meanwhile reaches the target in its own transaction (mirrored).
        r := @extschema@._bf_step(m.id, 'verify', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
        IF (r OPERATOR(pg_catalog.->>) 'missing')::bigint OPERATOR(pg_catalog.=) 0 THEN
            r := @extschema@._bf_step(m.id, 'orphans', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_removed := (r OPERATOR(pg_catalog.->>) 'deleted')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'busy')::boolean THEN
                -- the delete gave way to a live writer: nothing removed, retry
                v_removed := 0;
                v_waiting := true;
            ELSIF v_removed OPERATOR(pg_catalog.<) batch_size THEN
                p.phase := 'done';
                p.finished_at := pg_catalog.now();
            END IF;
        ELSE
            r := @extschema@._bf_step(m.id, 'sweep', batch_size, NULL, NULL, m.mirror_snapshot, m.mirror_xid);
            v_copied := (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
            IF (r OPERATOR(pg_catalog.->>) 'locked')::bigint OPERATOR(pg_catalog.=) 0 THEN
                v_waiting := true;     -- rows held by live writers, or the copy timed out; try again
            END IF;
        END IF;
    END IF;

    UPDATE @extschema@.backfill_progress
       SET phase = p.phase, cursor = p.cursor,
           rows_backfilled = rows_backfilled OPERATOR(pg_catalog.+) v_copied,
           rows_removed = rows_removed OPERATOR(pg_catalog.+) v_removed,
           batches = batches OPERATOR(pg_catalog.+) 1,
           updated_at = pg_catalog.now(), finished_at = p.finished_at
     WHERE migration_id OPERATOR(pg_catalog.=) m.id;
    IF p.phase OPERATOR(pg_catalog.=) 'done' THEN
        PERFORM @extschema@._history(m.id, 'backfill_done', m.state, m.state, NULL,
            @extschema@._backfill_status(m.id));
    END IF;
    RETURN pg_catalog.jsonb_build_object('phase', p.phase, 'copied', v_copied, 'removed', v_removed,
                                         'done', p.phase OPERATOR(pg_catalog.=) 'done', 'waiting', v_waiting);
END $$;

-- Parity's digest cache (src/parity.c, "Digest cache"): a comparison whose
-- tables changed little since the last full one reuses the stored digests
-- of unchanged segments.  The mirrored -> new_write guard never uses it.
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
REVOKE ALL ON FUNCTION @extschema@._parity_cache_reset(text) FROM PUBLIC;

ALTER FUNCTION @extschema@._require_semantic_health(integer) SET softmig.parity_cache = off;

-- The trust rule, the DDL guard of softmig's triggers and of partitions, and
-- the qualified backfill procedure (doc/security.md, doc/write-authority.md):
-- new internal functions, and the functions and event triggers that changed.

CREATE FUNCTION @extschema@._trigger_ddl(on_ boolean) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_trigger_ddl' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._trigger_ddl(boolean) IS
    'internal: mark (or unmark) that softmig itself creates or drops its triggers, so the DDL guard lets it through; returns the previous mark';

CREATE FUNCTION @extschema@._managing_triggers() RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_managing_triggers' LANGUAGE C STABLE;
COMMENT ON FUNCTION @extschema@._managing_triggers() IS
    'internal: is softmig creating or dropping its own triggers right now';

CREATE FUNCTION @extschema@._has_rows(rel regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_has_rows' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._has_rows(regclass) IS
    'internal: does a table (or any partition of it) hold a row; a heap scan, no privilege check';

CREATE FUNCTION @extschema@._install_triggers_on(p_id integer, r regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p text := 'softmig_' OPERATOR(pg_catalog.||) p_id::text;
    v_prev boolean := @extschema@._trigger_ddl(true);
BEGIN
    -- CREATE OR REPLACE: also puts back a trigger that was altered by hand
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._guard_trigger(%L)',
        p OPERATOR(pg_catalog.||) '_guard', r, p_id);
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS softmig_new '
        'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._write_trigger(%L)',
        p OPERATOR(pg_catalog.||) '_ins', r, p_id);
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS softmig_old NEW TABLE AS softmig_new '
        'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._write_trigger(%L)',
        p OPERATOR(pg_catalog.||) '_upd', r, p_id);
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS softmig_old '
        'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._write_trigger(%L)',
        p OPERATOR(pg_catalog.||) '_del', r, p_id);
    PERFORM @extschema@._trigger_ddl(v_prev);
END $$;
COMMENT ON FUNCTION @extschema@._install_triggers_on(integer, regclass) IS
    'internal: create (or put back) the guard and write triggers of a migration on one table or partition';

CREATE OR REPLACE FUNCTION @extschema@._install_triggers(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r regclass;
BEGIN
    FOR r IN SELECT * FROM @extschema@._tables(p_id) LOOP
        PERFORM @extschema@._install_triggers_on(p_id, r);
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._install_triggers(integer) IS
    'internal: create the guard and write triggers of a migration on both tables and all their partitions';

CREATE FUNCTION @extschema@._softmig_triggers(p_id integer)
RETURNS TABLE(rel regclass, tgname name, kind text, tgenabled "char", well_formed boolean)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.tgrelid::pg_catalog.regclass, t.tgname,
           pg_catalog.substring(t.tgname::text, '_([a-z]+)$'), t.tgenabled,
           t.tgfoid OPERATOR(pg_catalog.=) CASE WHEN t.tgname::text OPERATOR(pg_catalog.~) '_guard$'
                                               THEN '@extschema@._guard_trigger()'::pg_catalog.regprocedure
                                               ELSE '@extschema@._write_trigger()'::pg_catalog.regprocedure END
           AND t.tgtype OPERATOR(pg_catalog.=) CASE pg_catalog.substring(t.tgname::text, '_([a-z]+)$')
                                                   WHEN 'guard' THEN 62 WHEN 'ins' THEN 4
                                                   WHEN 'upd' THEN 16 ELSE 8 END
           AND t.tgnargs OPERATOR(pg_catalog.=) 1
      FROM pg_catalog.pg_trigger t
     WHERE t.tgname OPERATOR(pg_catalog.~) ('^softmig_' OPERATOR(pg_catalog.||) p_id::text OPERATOR(pg_catalog.||) '_(guard|ins|upd|del)$')
$$;
COMMENT ON FUNCTION @extschema@._softmig_triggers(integer) IS
    'internal: every softmig trigger of a migration, on whatever table it is, and whether it is the one softmig creates';

CREATE OR REPLACE FUNCTION @extschema@._remove_triggers(p_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_prev boolean := @extschema@._trigger_ddl(true);
BEGIN
    -- wherever they are: also on a partition detached meanwhile
    FOR r IN SELECT t.tgname, t.rel FROM @extschema@._softmig_triggers(p_id) t LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    PERFORM @extschema@._trigger_ddl(v_prev);
END $$;
COMMENT ON FUNCTION @extschema@._remove_triggers(integer) IS
    'internal: drop every softmig trigger of a migration';

CREATE OR REPLACE FUNCTION @extschema@._trigger_health(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH m AS (SELECT * FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id),
    tabs AS (SELECT r FROM @extschema@._tables(p_id) AS r),
    expected AS (
        SELECT r AS rel, 'softmig_' OPERATOR(pg_catalog.||) p_id::text OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s AS tgname
          FROM m, tabs, unnest(ARRAY['guard', 'ins', 'upd', 'del']) AS s
         WHERE m.state OPERATOR(@extschema@.<>) 'legacy'),
    found AS (SELECT * FROM @extschema@._softmig_triggers(p_id)),
    problems AS (
        -- missing, or not plainly enabled (tgenabled O): disabled (D),
        -- replica only (R), always (A), or altered by hand
        SELECT e.rel::text AS rel, e.tgname,
               CASE WHEN f.rel IS NULL THEN 'missing'
                    WHEN NOT f.well_formed THEN 'altered'
                    WHEN f.tgenabled OPERATOR(pg_catalog.=) 'D' THEN 'disabled'
                    WHEN f.tgenabled OPERATOR(pg_catalog.=) 'R' THEN 'replica only'
                    ELSE 'always' END AS problem
          FROM expected e
          LEFT JOIN found f ON f.rel OPERATOR(pg_catalog.=) e.rel AND f.tgname OPERATOR(pg_catalog.=) e.tgname
         WHERE f.rel IS NULL OR NOT f.well_formed OR f.tgenabled OPERATOR(pg_catalog.<>) 'O'
        UNION ALL
        -- left on a table that is no longer part of the migration
        SELECT f.rel::text, f.tgname, 'not a table of the migration'
          FROM found f
         WHERE f.rel OPERATOR(pg_catalog.<>) ALL (ARRAY(SELECT r FROM tabs))
        UNION ALL
        -- a rule rewrites writes, so they would not reach the other table as written
        SELECT w.ev_class::pg_catalog.regclass::text, w.rulename, 'rule'
          FROM pg_catalog.pg_rewrite w
         WHERE w.ev_class OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT r FROM tabs)))
    SELECT pg_catalog.jsonb_build_object(
        'expected', (SELECT pg_catalog.count(*) FROM expected),
        'healthy', NOT EXISTS (SELECT 1 FROM problems),
        'problems', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(problems)) FROM problems), '[]'))
$$;
COMMENT ON FUNCTION @extschema@._trigger_health(integer) IS
    'internal: which softmig triggers of a migration are missing, switched off, altered or stray, and rules on its tables';

CREATE FUNCTION @extschema@._refuse_rules(p_id integer) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT w.rulename, w.ev_class::pg_catalog.regclass AS rel
               FROM pg_catalog.pg_rewrite w
              WHERE w.ev_class OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT @extschema@._tables(p_id)))
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('table %s has rule "%s"', r.rel, r.rulename),
            DETAIL = 'softmig carries each statement''s rows to the other table as written; a rule would change what is written.',
            HINT = 'Drop the rule (a trigger can do its work).';
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._refuse_rules(integer) IS
    'internal: raise 0A000 if a table of a migration has a rule';

CREATE OR REPLACE FUNCTION @extschema@._set_state(p_id integer, p_to @extschema@.state, p_action text,
                                       p_reason text, p_detail jsonb)
RETURNS @extschema@.state
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    v_legal text;
BEGIN
    -- serialize state changes of one migration (bounded by lock_timeout too)
    m := @extschema@._lock_migration(p_id);
    IF m.state OPERATOR(@extschema@.=) p_to THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('migration "%s" is already in state %s', m.name, m.state),
            DETAIL = 'Another session changed its state while this call waited.';
    END IF;

    IF NOT @extschema@.is_legal_transition(m.state, p_to) THEN
        SELECT pg_catalog.string_agg(s::text, ', ' ORDER BY s) INTO v_legal
          FROM pg_catalog.unnest(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover']::@extschema@.state[]) AS s
         WHERE @extschema@.is_legal_transition(m.state, s);
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('illegal state transition from %s to %s for migration "%s"',
                                        m.state, p_to, m.name),
            DETAIL = CASE WHEN v_legal IS NULL
                          THEN pg_catalog.format('No move is legal from %s.', m.state)
                          ELSE pg_catalog.format('From %s the legal moves are: %s.', m.state, v_legal) END,
            HINT = 'States move one step at a time; cutover is final.';
    END IF;

    -- Guards (force => true with a reason overrides them; recorded in history)
    IF NOT COALESCE((p_detail OPERATOR(pg_catalog.->>) 'force')::boolean, false) THEN
        IF m.state OPERATOR(@extschema@.=) 'mirrored' AND p_to OPERATOR(@extschema@.=) 'new_write'
           AND NOT @extschema@._backfill_done(p_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot advance migration "%s" to new_write: the backfill is not done', m.name),
                DETAIL = 'The target must hold every legacy row before it becomes the write authority.',
                HINT = pg_catalog.format('CALL softmig.backfill(%L) first, or pass force => true with a reason.', m.name);
        END IF;
        -- clean structural parity, no failing error-severity invariant (75_observe.sql)
        IF m.state OPERATOR(@extschema@.=) 'mirrored' AND p_to OPERATOR(@extschema@.=) 'new_write' THEN
            PERFORM @extschema@._require_semantic_health(p_id);
        END IF;
        -- read paths: no registered reader on legacy, no unregistered reader seen on it recently
        IF m.state OPERATOR(@extschema@.=) 'new_read' AND p_to OPERATOR(@extschema@.=) 'cutover' THEN
            PERFORM @extschema@._readpath_guard(p_id);
        END IF;
    END IF;

    -- Lock out writers on both tables (readers are not blocked): in-flight
    -- writers finish under the old state, later ones see the new one.
    PERFORM @extschema@._lock_tables(m, p_to);

    -- The rollback envelope, checked after the locks so a racing first
    -- new-only write is either already recorded or not yet projected.
    IF (m.state OPERATOR(@extschema@.=) 'new_write' AND p_to OPERATOR(@extschema@.=) 'mirrored')
       OR (m.state OPERATOR(@extschema@.=) 'new_read' AND p_to OPERATOR(@extschema@.=) 'new_write') THEN
        IF NOT @extschema@._envelope_open_now(p_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('cannot roll migration "%s" back from %s to %s: the rollback envelope is closed',
                                            m.name, m.state, p_to),
                DETAIL = COALESCE((SELECT pg_catalog.format('Closed because: %s (first entity %s).', e.reason, COALESCE(e.first_key::text, 'unknown'))
                                     FROM @extschema@.envelope e WHERE e.migration_id OPERATOR(pg_catalog.=) p_id),
                                  'It closed while this call waited for the tables.'),
                HINT = 'Legacy cannot represent state the target already holds. Fix forward instead: quarantine the affected entities (softmig.quarantine), repair them on the target, or stop a broken projection with softmig.shadow_disable.';
        END IF;
    END IF;

    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        PERFORM @extschema@._refuse_rules(p_id);
        PERFORM @extschema@._install_triggers(p_id);
        -- Every write from now on reaches the target; anything the target
        -- holds that is visible in this snapshot predates mirroring and may
        -- be corrected by the backfill.  A new mirroring epoch needs a new
        -- backfill.
        IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
            RAISE EXCEPTION USING ERRCODE = 'active_sql_transaction',
                MESSAGE = 'the move to mirrored must run at isolation level READ COMMITTED',
                DETAIL = 'It records a snapshot that must include every write committed before the move.';
        END IF;
        UPDATE @extschema@.migrations
           SET mirror_snapshot = pg_catalog.pg_current_snapshot(), mirror_xid = pg_catalog.pg_current_xact_id()
         WHERE id OPERATOR(pg_catalog.=) p_id;
        DELETE FROM @extschema@.backfill_progress WHERE migration_id OPERATOR(pg_catalog.=) p_id;
        DELETE FROM @extschema@.backfill_revisit WHERE migration_id OPERATOR(pg_catalog.=) p_id;
    ELSIF p_to OPERATOR(@extschema@.=) 'legacy' THEN
        PERFORM @extschema@._remove_triggers(p_id);
    END IF;

    UPDATE @extschema@.migrations
       SET state = p_to, state_changed_at = pg_catalog.now()
     WHERE id OPERATOR(pg_catalog.=) p_id;
    PERFORM @extschema@._invalidate(m.legacy, m.target);
    PERFORM @extschema@._history(p_id, p_action, m.state, p_to, p_reason, p_detail);
    RETURN p_to;
END $$;
COMMENT ON FUNCTION @extschema@._set_state(integer, @extschema@.state, text, text, jsonb) IS
    'internal: the one function that changes a migration''s state: checks legality, locks both tables, retargets triggers, records history';

-- create_migration refuses definitions that cannot work: NULLs in key,
-- new_only and divergent, the key in new_only or divergent, target_key of
-- the wrong shape (mapping expressions are checked in C, by _validate).
CREATE OR REPLACE FUNCTION @extschema@._create_migration(name text, legacy regclass, target regclass,
    key text[], forward jsonb, backward jsonb, new_only text[], divergent text[], options jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := name;
    v_id integer;
    v_key text[] := key;
    v_tkey text[];
    v_fwd jsonb := COALESCE(forward, '{}');
    v_bwd jsonb := COALESCE(backward, '{}');
    v_new_only text[] := COALESCE(new_only, '{}');
    v_divergent text[] := COALESCE(divergent, '{}');
    v_options jsonb := COALESCE(options, '{}');
    v_other text;
    v_maps jsonb;
    r record;
    k text;
    e text;
    t regclass;
    i integer;
BEGIN
    IF v_name IS NULL OR pg_catalog.btrim(v_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'migration name must not be empty';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.migrations m WHERE m.name OPERATOR(pg_catalog.=) v_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = pg_catalog.format('migration "%s" already exists', v_name);
    END IF;

    -- the two tables
    FOREACH t IN ARRAY ARRAY[legacy, target] LOOP
        SELECT c.relkind, c.relispartition, c.relpersistence INTO r
          FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) t;
        IF r.relkind OPERATOR(pg_catalog.<>) ALL (ARRAY['r', 'p']::"char"[]) THEN
            RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
                MESSAGE = pg_catalog.format('"%s" is not a table', t),
                DETAIL = 'Only ordinary and partitioned tables can take part in a migration.';
        END IF;
        IF r.relispartition THEN
            RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
                MESSAGE = pg_catalog.format('table %s is a partition', t),
                HINT = 'Migrate its partitioned table instead; writes through the parent would bypass a partition''s migration.';
        END IF;
        IF r.relpersistence OPERATOR(pg_catalog.=) 't' THEN
            RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
                MESSAGE = pg_catalog.format('table %s is a temporary table', t);
        END IF;
        SELECT m.name INTO v_other FROM @extschema@.migrations m
         WHERE t OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[]);
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('table %s already takes part in migration "%s"', t, v_other),
                HINT = 'A table can be in one migration at a time.';
        END IF;
    END LOOP;
    IF legacy OPERATOR(pg_catalog.=) target THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'legacy and target must be different tables';
    END IF;

    -- the legacy key
    IF v_key IS NULL THEN
        SELECT pg_catalog.array_agg(a.attname::text ORDER BY x.n) INTO v_key
          FROM pg_catalog.pg_index ix
         CROSS JOIN LATERAL pg_catalog.unnest(ix.indkey) WITH ORDINALITY AS x(attnum, n)
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ix.indrelid
                                        AND a.attnum OPERATOR(pg_catalog.=) x.attnum
         WHERE ix.indrelid OPERATOR(pg_catalog.=) legacy AND ix.indisprimary;
        IF v_key IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('table %s has no primary key', legacy),
                HINT = 'Pass key => ARRAY[...] naming columns with a unique index.';
        END IF;
    END IF;
    IF pg_catalog.cardinality(v_key) OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'key must name at least one column';
    END IF;
    IF pg_catalog.array_position(v_key, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'key must not contain NULL';
    END IF;
    IF (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(v_key) x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_key) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'key names a column twice';
    END IF;
    FOREACH k IN ARRAY v_key LOOP
        PERFORM @extschema@._require_column(legacy, k, 'key column', true);
    END LOOP;

    -- mapping arguments
    IF pg_catalog.jsonb_typeof(v_fwd) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'forward must be a jsonb object {"target_column": "expression over legacy columns"}';
    END IF;
    IF pg_catalog.jsonb_typeof(v_bwd) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'backward must be a jsonb object {"legacy_column": "expression over target columns"}';
    END IF;
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(v_fwd) j LOOP
        PERFORM @extschema@._require_column(target, k, 'forward mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('forward mapping of column "%s" must be a string holding an SQL expression', k);
        END IF;
        PERFORM @extschema@._check_expression(v_fwd OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('forward mapping of column "%s"', k));
    END LOOP;
    FOR k, e IN SELECT j.key, pg_catalog.jsonb_typeof(j.value) FROM pg_catalog.jsonb_each(v_bwd) j LOOP
        PERFORM @extschema@._require_column(legacy, k, 'backward mapping of column', false);
        IF e OPERATOR(pg_catalog.<>) 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('backward mapping of column "%s" must be a string holding an SQL expression', k);
        END IF;
        PERFORM @extschema@._check_expression(v_bwd OPERATOR(pg_catalog.->>) k,
                                              pg_catalog.format('backward mapping of column "%s"', k));
    END LOOP;
    IF pg_catalog.array_position(v_new_only OPERATOR(pg_catalog.||) v_divergent, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s must not contain NULL',
                CASE WHEN pg_catalog.array_position(v_new_only, NULL) IS NOT NULL THEN 'new_only' ELSE 'divergent' END);
    END IF;
    FOREACH k IN ARRAY v_new_only LOOP
        PERFORM @extschema@._require_column(target, k, 'new_only column', false);
    END LOOP;
    FOREACH k IN ARRAY v_divergent LOOP
        PERFORM @extschema@._require_column(target, k, 'divergent column', false);
    END LOOP;

    -- options
    PERFORM @extschema@._check_options(v_options);

    -- resolve the forward mapping: every insertable target column
    -- the resolved mappings, built in a variable (no temp table: this runs as
    -- the catalog owner and must not touch anything the caller can create)
    v_maps := '[]';
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) target AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_fwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, target);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'forward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', v_fwd OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) legacy AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'forward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target column "%s" is NOT NULL without a default and nothing maps to it', r.attname),
                HINT = 'Add it to forward, give it a default, or allow NULL.';
        END IF;
    END LOOP;

    -- resolve the backward mapping: every insertable legacy column
    FOR r IN SELECT a.attname, a.attnum, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) legacy AND a.attnum OPERATOR(pg_catalog.>) 0
                AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF v_bwd ? r.attname THEN
            IF r.attgenerated OPERATOR(pg_catalog.<>) '' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('cannot map onto generated column "%s" of table %s', r.attname, legacy);
            END IF;
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'backward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', v_bwd OPERATOR(pg_catalog.->>) r.attname::text, 'is_default', false));
        ELSIF r.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute l
                 WHERE l.attrelid OPERATOR(pg_catalog.=) target AND l.attname OPERATOR(pg_catalog.=) r.attname
                   AND l.attnum OPERATOR(pg_catalog.>) 0 AND NOT l.attisdropped) THEN
            v_maps := v_maps OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('direction', 'backward', 'column_name', r.attname, 'ordinal', r.attnum, 'expression', pg_catalog.quote_ident(r.attname), 'is_default', true));
        ELSIF r.attnotnull AND NOT r.atthasdef AND r.attidentity OPERATOR(pg_catalog.=) '' AND r.attgenerated OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('legacy column "%s" is NOT NULL without a default and nothing maps to it', r.attname),
                HINT = 'Add it to backward, give it a default, or allow NULL.';
        END IF;
    END LOOP;

    -- the correlation key: what each legacy key column maps to
    IF v_options ? 'target_key' THEN
        IF pg_catalog.jsonb_typeof(v_options OPERATOR(pg_catalog.->) 'target_key') OPERATOR(pg_catalog.<>) 'array' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must be a jsonb array of target column names';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(v_options OPERATOR(pg_catalog.->) 'target_key') x
                    WHERE pg_catalog.jsonb_typeof(x) OPERATOR(pg_catalog.<>) 'string') THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must be a jsonb array of target column names',
                DETAIL = pg_catalog.format('Given: %s', v_options OPERATOR(pg_catalog.->) 'target_key');
        END IF;
        SELECT COALESCE(pg_catalog.array_agg(x), '{}') INTO v_tkey
          FROM pg_catalog.jsonb_array_elements_text(v_options OPERATOR(pg_catalog.->) 'target_key') x;
        IF pg_catalog.cardinality(v_tkey) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_key) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'option target_key must name as many columns as the legacy key';
        END IF;
        IF (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(v_tkey) x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_tkey) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'option target_key names a column twice';
        END IF;
    ELSE
        v_tkey := '{}';
        FOREACH k IN ARRAY v_key LOOP
            SELECT pm.column_name INTO e FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean)
             WHERE pm.direction OPERATOR(pg_catalog.=) 'forward'
               AND (pm.expression OPERATOR(pg_catalog.=) k OR pm.expression OPERATOR(pg_catalog.=) pg_catalog.quote_ident(k))
             ORDER BY pm.is_default DESC LIMIT 1;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = pg_catalog.format('no target column maps from legacy key column "%s"', k),
                    HINT = 'Name the target correlation key with options => ''{"target_key": [...]}''.';
            END IF;
            v_tkey := v_tkey OPERATOR(pg_catalog.||) e;
        END LOOP;
    END IF;
    -- the key correlates the rows: legacy always holds it, and it cannot differ
    FOREACH k IN ARRAY v_tkey LOOP
        IF k OPERATOR(pg_catalog.=) ANY (v_new_only OPERATOR(pg_catalog.||) v_divergent) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target key column "%s" cannot be %s', k,
                    CASE WHEN k OPERATOR(pg_catalog.=) ANY (v_new_only) THEN 'new_only' ELSE 'divergent' END),
                DETAIL = 'Rows are correlated on the key: legacy always holds it, and it is equal on both sides.';
        END IF;
    END LOOP;
    FOREACH k IN ARRAY v_tkey LOOP
        PERFORM @extschema@._require_column(target, k, 'target key column', true);
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean)
                        WHERE pm.direction OPERATOR(pg_catalog.=) 'forward' AND pm.column_name OPERATOR(pg_catalog.=) k) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('target key column "%s" has no forward mapping', k);
        END IF;
    END LOOP;
    FOREACH k IN ARRAY v_key LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean)
                        WHERE pm.direction OPERATOR(pg_catalog.=) 'backward' AND pm.column_name OPERATOR(pg_catalog.=) k) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('legacy key column "%s" has no backward mapping', k),
                HINT = 'Add it to backward so writes on the target can be projected to legacy.';
        END IF;
    END LOOP;

    INSERT INTO @extschema@.migrations (name, legacy, target, legacy_key, target_key, forward, backward,
                                        new_only, divergent, options, created_by)
    VALUES (v_name, legacy, target, v_key, v_tkey, v_fwd, v_bwd, v_new_only, v_divergent, v_options,
            @extschema@._actor())
    RETURNING id INTO v_id;
    INSERT INTO @extschema@.mappings (migration_id, direction, column_name, ordinal, expression, is_default)
    SELECT v_id, pm.direction, pm.column_name, pm.ordinal, pm.expression, pm.is_default FROM pg_catalog.jsonb_to_recordset(v_maps) AS pm(direction text, column_name name, ordinal integer, expression text, is_default boolean);

    -- prepare every statement the triggers will run (as the table owners)
    PERFORM @extschema@._refuse_rules(v_id);
    PERFORM @extschema@._validate(v_id);

    PERFORM @extschema@._history(v_id, 'create', NULL, 'legacy', NULL,
        pg_catalog.jsonb_build_object('legacy', legacy::text, 'target', target::text,
                                      'key', v_key, 'target_key', v_tkey));
END $$;
COMMENT ON FUNCTION @extschema@._create_migration(text, regclass, regclass, text[], jsonb, jsonb, text[], text[], jsonb) IS
    'internal: implementation of softmig.create_migration (runs behind the ownership gate)';
-- Backfill progress (doc/monitoring.md): the current run's figures, kept by
-- a trigger on each checkpoint; live row estimates; rows per second, percent
-- done and time left in status; progress NOTICEs from CALL softmig.backfill.
ALTER TABLE @extschema@.backfill_progress
    ADD COLUMN run_started_at timestamptz,
    ADD COLUMN run_rows bigint NOT NULL DEFAULT 0,
    ADD COLUMN batch_ended_at timestamptz,
    ADD COLUMN progressed_at timestamptz;

-- Progress of the current run, derived from each checkpoint.  A batch runs
-- in its own transaction, and CALL softmig.backfill starts the next one as
-- it commits the last, so now() - the previous batch's end is the gap
-- between two batches: within one CALL it is about zero (pauses fall inside
-- the next batch's transaction), between two CALLs it is the idle time.
CREATE FUNCTION @extschema@._backfill_progress_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.batch_ended_at IS NULL
       OR (pg_catalog.now() OPERATOR(pg_catalog.-) OLD.batch_ended_at) OPERATOR(pg_catalog.>) interval '1 minute' THEN
        NEW.run_started_at := pg_catalog.now();
        NEW.run_rows := 0;
    END IF;
    NEW.run_rows := NEW.run_rows OPERATOR(pg_catalog.+) (NEW.rows_backfilled OPERATOR(pg_catalog.-) OLD.rows_backfilled);
    NEW.batch_ended_at := pg_catalog.clock_timestamp();
    IF NEW.rows_backfilled OPERATOR(pg_catalog.<>) OLD.rows_backfilled
       OR NEW.rows_removed OPERATOR(pg_catalog.<>) OLD.rows_removed
       OR NEW.phase OPERATOR(pg_catalog.<>) OLD.phase
       OR NEW.cursor IS DISTINCT FROM OLD.cursor THEN
        NEW.progressed_at := NEW.batch_ended_at;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION @extschema@._backfill_progress_run() IS
    'internal: BEFORE UPDATE trigger on softmig.backfill_progress keeping the current run''s start, rows, last batch and last progress';

CREATE TRIGGER backfill_progress_run
    BEFORE UPDATE ON @extschema@.backfill_progress
    FOR EACH ROW WHEN (NEW.batches OPERATOR(pg_catalog.<>) OLD.batches)
    EXECUTE FUNCTION @extschema@._backfill_progress_run();
REVOKE ALL ON FUNCTION @extschema@._backfill_progress_run() FROM PUBLIC;

CREATE FUNCTION @extschema@._rows_estimate(rel regclass) RETURNS double precision
    AS 'MODULE_PATHNAME', 'softmig_rows_estimate' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._rows_estimate(regclass) IS
    'internal: estimated live rows of a table now (its blocks times the row density of its statistics or of sampled pages; partitions summed), without scanning it (at most three pages read) or waiting for a lock';

CREATE OR REPLACE FUNCTION @extschema@._backfill_status(p_id integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
        'phase', COALESCE(bp.phase, 'not started'),
        'cursor', bp.cursor,
        'rows_backfilled', COALESCE(bp.rows_backfilled, 0),
        'rows_removed', COALESCE(bp.rows_removed, 0),
        'batches', COALESCE(bp.batches, 0),
        'ranges_to_revisit', (SELECT pg_catalog.count(*) FROM @extschema@.backfill_revisit r
                               WHERE r.migration_id OPERATOR(pg_catalog.=) p_id),
        'remaining_estimate', x.remaining,
        -- below 100 until the backfill has proven the target complete
        'percent_done', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 100
            WHEN x.remaining IS NOT NULL AND (COALESCE(bp.rows_backfilled, 0) OPERATOR(pg_catalog.+) x.remaining) OPERATOR(pg_catalog.>) 0
            THEN LEAST(99.9, pg_catalog.round((100.0 OPERATOR(pg_catalog.*) COALESCE(bp.rows_backfilled, 0))
                                  OPERATOR(pg_catalog./) (COALESCE(bp.rows_backfilled, 0) OPERATOR(pg_catalog.+) x.remaining), 1)) END,
        'rows_per_second', x.rate,
        'eta_seconds', CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0
            WHEN x.rate OPERATOR(pg_catalog.>) 0 THEN pg_catalog.round(x.remaining OPERATOR(pg_catalog./) x.rate) END,
        'run_started_at', bp.run_started_at,
        'run_rows', COALESCE(bp.run_rows, 0),
        'last_batch_at', bp.batch_ended_at,
        'last_progress_at', bp.progressed_at,
        'started_at', bp.started_at,
        'updated_at', bp.updated_at,
        'finished_at', bp.finished_at)
      FROM @extschema@.migrations m
      LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
      CROSS JOIN LATERAL (
        -- legacy rows the target does not hold yet; the target holds at
        -- least what was copied (its estimate lags while it has no statistics)
        SELECT CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 0::bigint ELSE
                   GREATEST(0, (@extschema@._rows_estimate(m.legacy) OPERATOR(pg_catalog.-)
                                GREATEST(@extschema@._rows_estimate(m.target), COALESCE(bp.rows_backfilled, 0)))::bigint) END AS remaining,
               -- rows per second of the current run, pauses included (what the ETA needs)
               CASE WHEN bp.batch_ended_at OPERATOR(pg_catalog.>) bp.run_started_at
                    THEN pg_catalog.round((bp.run_rows OPERATOR(pg_catalog./)
                         EXTRACT(epoch FROM bp.batch_ended_at OPERATOR(pg_catalog.-) bp.run_started_at))::numeric, 1)
                    ELSE 0 END AS rate) x
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;

CREATE FUNCTION @extschema@._backfill_progress_line(p_id integer) RETURNS text
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('softmig: backfill of "%s": %s rows copied, %s rows/s, %s done, %s (phase %s)',
               m.name, x.s OPERATOR(pg_catalog.->>) 'rows_backfilled', x.s OPERATOR(pg_catalog.->>) 'rows_per_second',
               COALESCE((x.s OPERATOR(pg_catalog.->>) 'percent_done') OPERATOR(pg_catalog.||) '%', 'unknown %'),
               COALESCE('about ' OPERATOR(pg_catalog.||) pg_catalog.justify_interval(pg_catalog.make_interval(
                            secs => (x.s OPERATOR(pg_catalog.->>) 'eta_seconds')::double precision))::text
                        OPERATOR(pg_catalog.||) ' left', 'time left unknown'),
               x.s OPERATOR(pg_catalog.->>) 'phase')
      FROM @extschema@.migrations m
     CROSS JOIN LATERAL (SELECT @extschema@._backfill_status(m.id) AS s) x
     WHERE m.id OPERATOR(pg_catalog.=) p_id
$$;
COMMENT ON FUNCTION @extschema@._backfill_progress_line(integer) IS
    'internal: the progress NOTICE of CALL softmig.backfill: rows copied, rows per second, percent done, time left, phase';

CREATE OR REPLACE PROCEDURE @extschema@.backfill(name text, batch_size integer DEFAULT 1000,
                                      max_batches integer DEFAULT NULL, pause_ms integer DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    v_id integer := (@extschema@._migration(name)).id;
    r pg_catalog.jsonb;      -- no SET search_path here: every name is qualified
    n integer := 0;
    v_copied bigint := 0;
    v_mine boolean;
    v_report pg_catalog.timestamptz;   -- when the next progress NOTICE is due
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'batch_size must be at least 1';
    END IF;
    IF max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'max_batches must be at least 1';
    END IF;
    IF pause_ms IS NULL OR pause_ms OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'pause_ms must not be negative';
    END IF;
    -- one backfill per migration at a time: a session-level advisory lock
    -- (kept across the commits below; a session that already holds it, e.g.
    -- after a cancelled CALL, may continue)
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
                      AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                      AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
                      AND l.objid OPERATOR(pg_catalog.=) v_id::pg_catalog.oid
                      AND l.granted)
      INTO v_mine;
    IF NOT v_mine AND NOT pg_catalog.pg_try_advisory_lock(1936550247, v_id) THEN
        -- a session whose CALL was cancelled keeps the lock while it stays
        -- connected; only a backfill that is actually running refuses us
        IF @extschema@._backfill_running_elsewhere(v_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('a backfill of migration "%s" is already running', name),
                HINT = 'Wait for it to finish, or cancel it; the next CALL resumes from its last checkpoint.';
        END IF;
    END IF;
    LOOP
        r := @extschema@.backfill_batch(name, batch_size);
        COMMIT;
        n := n OPERATOR(pg_catalog.+) 1;
        v_copied := v_copied OPERATOR(pg_catalog.+) (r OPERATOR(pg_catalog.->>) 'copied')::bigint;
        EXIT WHEN (r OPERATOR(pg_catalog.->>) 'done')::boolean;
        EXIT WHEN max_batches IS NOT NULL AND n OPERATOR(pg_catalog.>=) max_batches;
        -- progress every softmig.backfill_progress_interval (defined once the first batch loaded the module)
        v_report := COALESCE(v_report, pg_catalog.statement_timestamp()
            OPERATOR(pg_catalog.+) pg_catalog.current_setting('softmig.backfill_progress_interval')::interval);
        IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) v_report THEN
            RAISE NOTICE '%', @extschema@._backfill_progress_line(v_id);
            v_report := pg_catalog.clock_timestamp()
                OPERATOR(pg_catalog.+) pg_catalog.current_setting('softmig.backfill_progress_interval')::interval;
        END IF;
        IF (r OPERATOR(pg_catalog.->>) 'waiting')::boolean THEN
            PERFORM pg_catalog.pg_sleep(GREATEST(pause_ms, 100) OPERATOR(pg_catalog./) 1000.0);
        ELSIF pause_ms OPERATOR(pg_catalog.>) 0 THEN
            PERFORM pg_catalog.pg_sleep(pause_ms OPERATOR(pg_catalog./) 1000.0);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
                  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                  AND l.classid OPERATOR(pg_catalog.=) 1936550247::pg_catalog.oid
                  AND l.objid OPERATOR(pg_catalog.=) v_id::pg_catalog.oid) THEN
        PERFORM pg_catalog.pg_advisory_unlock(1936550247, v_id);
    END IF;
    RAISE NOTICE 'softmig: backfill of "%": % batches, % rows copied, phase %', name, n, v_copied,
        r OPERATOR(pg_catalog.->>) 'phase';
END $$;
COMMENT ON PROCEDURE @extschema@.backfill(text, integer, integer, integer) IS
    'copy every legacy row the target lacks, one committed batch at a time, race-safe and resumable, with a progress NOTICE every softmig.backfill_progress_interval; state mirrored only; owners of both tables only';

DROP EVENT TRIGGER softmig_ddl_altered;

-------------------------------------------------------------------------------
-- DDL on migrated tables: detected, never a silent wrong mirror
-------------------------------------------------------------------------------
-- The event-trigger functions in PL/pgSQL are SECURITY DEFINER: they run for
-- whoever issues DDL and must read and write softmig's catalog, create or
-- drop softmig's triggers on a new or detached partition and re-prepare the
-- migration's statements (which _validate does as the table owners, never as
-- the definer).  search_path is pinned; EXECUTE is revoked from PUBLIC
-- (event triggers do not need it).  None evaluates user SQL as the definer.

CREATE FUNCTION @extschema@._ddl_start() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'softmig_ddl_start' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._ddl_start() IS
    'internal: event trigger refusing DROP TABLE of a partition that holds rows while its migration is between mirrored and new_read';

CREATE FUNCTION @extschema@._drop_approved(rel oid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_drop_approved' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._drop_approved(oid) IS
    'internal: did the DROP TABLE of this transaction check that this relation may go';

CREATE OR REPLACE FUNCTION @extschema@._ddl_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.name, m.state, d.object_identity
               FROM pg_catalog.pg_event_trigger_dropped_objects() d
               JOIN @extschema@.migrations m
                 ON d.objid OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
              WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                AND d.objsubid OPERATOR(pg_catalog.=) 0
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = pg_catalog.format('cannot drop table %s: it takes part in migration "%s" (state %s)',
                                        r.object_identity, r.name, r.state),
            HINT = 'Finish or roll back the migration and drop it with softmig.drop_migration first.';
    END LOOP;
    IF @extschema@._managing_triggers() THEN
        RETURN;     -- softmig's own trigger changes
    END IF;
    -- a softmig trigger dropped while its migration is managed: by DROP
    -- TRIGGER (writes would skip the other table), or with its table (a
    -- partition: fine when DROP TABLE checked that it held no rows)
    FOR r IN SELECT m.name, m.state, d.object_identity, tb.objid AS tabid
               FROM pg_catalog.pg_event_trigger_dropped_objects() d
               JOIN @extschema@.migrations m
                 ON d.address_names[3] OPERATOR(pg_catalog.~)
                    ('^softmig_' OPERATOR(pg_catalog.||) m.id::text OPERATOR(pg_catalog.||) '_(guard|ins|upd|del)$')
               LEFT JOIN pg_catalog.pg_event_trigger_dropped_objects() tb
                 ON tb.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                AND tb.objsubid OPERATOR(pg_catalog.=) 0
                AND tb.schema_name OPERATOR(pg_catalog.=) d.address_names[1]
                AND tb.object_name OPERATOR(pg_catalog.=) d.address_names[2]
              WHERE d.object_type OPERATOR(pg_catalog.=) 'trigger'
                AND m.state OPERATOR(@extschema@.<>) 'legacy'
    LOOP
        IF r.tabid IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot drop trigger %s: migration "%s" is in state %s',
                                            r.object_identity, r.name, r.state),
                DETAIL = 'Without it writes would not reach the other table of the migration, or would not be refused.',
                HINT = 'Roll the migration back to legacy to remove its triggers.';
        ELSIF r.state OPERATOR(@extschema@.<) 'cutover' AND NOT @extschema@._drop_approved(r.tabid) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot drop a partition of a table of migration "%s" in state %s this way',
                                            r.name, r.state),
                DETAIL = pg_catalog.format('It carries trigger %s; its rows would vanish from one table only.', r.object_identity),
                HINT = 'Delete its rows and drop it with DROP TABLE.';
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_dropped() IS
    'internal: event trigger refusing DROP TABLE of a table that takes part in a migration, and DROP of softmig''s triggers while the migration is managed';

CREATE FUNCTION @extschema@._ddl_partitions(command pg_ddl_command, detached boolean) RETURNS oid[]
    AS 'MODULE_PATHNAME', 'softmig_ddl_partitions' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION @extschema@._ddl_partitions(pg_ddl_command, boolean) IS
    'internal: the relations a DDL command made partitions (created or attached), or detached';

CREATE FUNCTION @extschema@._reconcile_partitions(p_id integer, p_command text, p_added oid[], p_removed oid[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations;
    r record;
    t record;
    v_prev boolean;
BEGIN
    SELECT * INTO STRICT m FROM @extschema@.migrations WHERE id OPERATOR(pg_catalog.=) p_id;
    IF m.state OPERATOR(@extschema@.=) 'legacy' THEN
        RETURN;
    END IF;
    -- a partition the command created or attached (with its own partitions):
    -- it gets the triggers, unless it brings rows that would not reach the
    -- other table (or, in cutover, rows into the frozen legacy table)
    FOR r IN SELECT DISTINCT p.relid::pg_catalog.regclass AS rel,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(m.legacy) l
                             WHERE l.relid OPERATOR(pg_catalog.=) p.relid) AS on_legacy
               FROM pg_catalog.unnest(p_added) a(relid),
                    LATERAL (SELECT a.relid UNION SELECT pt.relid FROM pg_catalog.pg_partition_tree(a.relid) pt) p
              WHERE p.relid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT @extschema@._tables(p_id)))
    LOOP
        IF (m.state OPERATOR(@extschema@.<) 'cutover' OR r.on_legacy) AND @extschema@._has_rows(r.rel) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot add table %s to migration "%s" in state %s: it holds rows',
                                            r.rel, m.name, m.state),
                DETAIL = 'Its rows would be in one table of the migration only.',
                HINT = 'Attach it empty and insert its rows through the partitioned table (they are mirrored), or attach it before the migration leaves legacy.';
        END IF;
        PERFORM @extschema@._install_triggers_on(p_id, r.rel);
        PERFORM @extschema@._history(p_id, 'partition_added', m.state, m.state, NULL,
            pg_catalog.jsonb_build_object('table', r.rel::text, 'command', p_command));
    END LOOP;
    -- a partition the command detached: its triggers go, unless it takes
    -- rows away from one table of the migration
    FOR r IN SELECT DISTINCT s.rel
               FROM pg_catalog.unnest(p_removed) a(relid),
                    LATERAL (SELECT a.relid UNION SELECT pt.relid FROM pg_catalog.pg_partition_tree(a.relid) pt) p,
                    @extschema@._softmig_triggers(p_id) s
              WHERE s.rel OPERATOR(pg_catalog.=) p.relid
                AND s.rel OPERATOR(pg_catalog.<>) ALL (ARRAY(SELECT @extschema@._tables(p_id)))
    LOOP
        IF m.state OPERATOR(@extschema@.<) 'cutover' AND @extschema@._has_rows(r.rel) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                MESSAGE = pg_catalog.format('cannot detach table %s from migration "%s" in state %s: it holds rows',
                                            r.rel, m.name, m.state),
                DETAIL = 'Its rows would remain in the other table of the migration.',
                HINT = 'Delete its rows first (the deletes are mirrored), or roll the migration back to legacy.';
        END IF;
        v_prev := @extschema@._trigger_ddl(true);
        FOR t IN SELECT s.tgname FROM @extschema@._softmig_triggers(p_id) s
                  WHERE s.rel OPERATOR(pg_catalog.=) r.rel LOOP
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, r.rel);
        END LOOP;
        PERFORM @extschema@._trigger_ddl(v_prev);
        PERFORM @extschema@._history(p_id, 'partition_removed', m.state, m.state, NULL,
            pg_catalog.jsonb_build_object('table', r.rel::text, 'command', p_command));
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._reconcile_partitions(integer, text, oid[], oid[]) IS
    'internal: give partitions a DDL command added to a managed migration its triggers and take them off detached ones, refusing partitions that bring or take away rows';

CREATE FUNCTION @extschema@._refuse_untrusted(p_sqlstate text, p_error text, p_command text, p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- the trust rule's error (src/identity.c), raised again naming the DDL
    IF p_sqlstate OPERATOR(pg_catalog.=) '42501' AND p_error OPERATOR(pg_catalog.~~) 'softmig refuses to run %' THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('%s would make migration "%s" run code of another role', p_command, p_name),
            DETAIL = p_error,
            HINT = 'Code softmig runs as a table owner must be owned by that owner, a member of it, or a superuser (doc/security.md).';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@._refuse_untrusted(text, text, text, text) IS
    'internal: if a re-validation failed by the trust rule, refuse the DDL that caused it (42501)';

CREATE OR REPLACE FUNCTION @extschema@._ddl_altered() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    r record;
    v_problem text;
    v_bad jsonb;
    v_added oid[];
    v_removed oid[];
BEGIN
    IF @extschema@._managing_triggers() THEN
        RETURN;     -- softmig's own trigger changes
    END IF;
    FOR c IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
        v_added := @extschema@._ddl_partitions(c.command, false);
        v_removed := @extschema@._ddl_partitions(c.command, true);
        -- the migrations whose tables (or partitions of them) the command touched
        FOR r IN SELECT DISTINCT m.id, m.name, m.state, m.legacy, m.target
                   FROM (SELECT c.objid AS relid
                          WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                         UNION
                         SELECT w.ev_class FROM pg_catalog.pg_rewrite w
                          WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                            AND w.oid OPERATOR(pg_catalog.=) c.objid
                         UNION
                         SELECT t.tgrelid FROM pg_catalog.pg_trigger t
                          WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass
                            AND t.oid OPERATOR(pg_catalog.=) c.objid) o
                   CROSS JOIN LATERAL (
                         SELECT o.relid AS rel
                         UNION
                         SELECT a.relid FROM pg_catalog.pg_partition_ancestors(o.relid) a) anc
                   JOIN @extschema@.migrations m
                     ON anc.rel OPERATOR(pg_catalog.=) ANY (ARRAY[m.legacy, m.target]::pg_catalog.oid[])
        LOOP
            -- partitions created, attached or detached by the command
            PERFORM @extschema@._reconcile_partitions(r.id, c.command_tag, v_added, v_removed);

            -- softmig's triggers must stay plainly enabled while it manages
            -- the migration, and no rule may rewrite writes to its tables.
            -- (A trigger that is missing altogether is only reported by
            -- status: pg_restore creates triggers after everything else.)
            SELECT pg_catalog.jsonb_agg(p) INTO v_bad
              FROM pg_catalog.jsonb_array_elements(@extschema@._trigger_health(r.id) OPERATOR(pg_catalog.->) 'problems') p
             WHERE p OPERATOR(pg_catalog.->>) 'problem' OPERATOR(pg_catalog.=) ANY
                       (ARRAY['disabled', 'replica only', 'always', 'altered', 'rule'])
                OR (p OPERATOR(pg_catalog.->>) 'problem' OPERATOR(pg_catalog.=) 'missing'
                    AND c.command_tag OPERATOR(pg_catalog.=) 'ALTER TRIGGER');
            IF v_bad IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                    MESSAGE = pg_catalog.format('%s on %s would stop migration "%s" (state %s) from carrying writes to the other table',
                                                c.command_tag, c.object_identity, r.name, r.state),
                    DETAIL = pg_catalog.format('Problems it would leave: %s.', v_bad),
                    HINT = CASE WHEN v_bad::text OPERATOR(pg_catalog.~) '"rule"'
                                THEN 'softmig carries each statement''s rows to the other table; a rule on a table of a migration would change what is written. Use a trigger instead.'
                                ELSE pg_catalog.format('Leave softmig''s triggers enabled (ENABLE TRIGGER, not REPLICA or ALWAYS); softmig.repair_triggers(%L) puts them back.', r.name) END;
            END IF;

            -- every statement the triggers will run must still prepare: a
            -- mapped column renamed, dropped or retyped incompatibly aborts
            -- the DDL, and so does one that would make softmig run another
            -- role's code
            v_problem := NULL;
            BEGIN
                PERFORM @extschema@._invalidate(r.legacy, r.target);
                PERFORM @extschema@._validate(r.id);
            EXCEPTION
                WHEN invalid_column_reference THEN
                    -- the unique index on a key is missing: pg_restore creates
                    -- indexes after the catalog rows, and dropping one by hand
                    -- makes writes fail loudly (ON CONFLICT needs it); record it
                    v_problem := SQLERRM;
                WHEN OTHERS THEN
                    PERFORM @extschema@._refuse_untrusted(SQLSTATE, SQLERRM,
                        pg_catalog.format('%s on %s', c.command_tag, c.object_identity), r.name);
                    RAISE EXCEPTION USING ERRCODE = 'object_in_use',
                        MESSAGE = pg_catalog.format('%s on %s would break migration "%s"', c.command_tag, c.object_identity, r.name),
                        DETAIL = SQLERRM,
                        HINT = 'Change the mapping first (drop and re-create the migration in state legacy), or keep the column.';
            END;
            -- harmless DDL passes silently.  A missing key index is only
            -- warned about: pg_restore creates indexes after everything else
            -- (a history row per table would make every restore differ from
            -- its source), and without the index every mirrored write fails
            -- loudly (ON CONFLICT needs it), so nothing can go wrong silently.
            IF v_problem IS NOT NULL THEN
                RAISE WARNING USING MESSAGE = pg_catalog.format('migration "%s" cannot write its tables until this is fixed: %s', r.name, v_problem);
            END IF;
        END LOOP;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_altered() IS
    'internal: event trigger keeping a migration whole after DDL on its tables: triggers on new partitions, no switched-off triggers or rules, re-validated statements';

CREATE FUNCTION @extschema@._ddl_code() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    -- a new cast, an altered domain, type, function or operator may change
    -- what the migrations' statements run: prepare them all again (as the
    -- table owners), refusing the DDL if one would run another role's code
    FOR r IN SELECT DISTINCT m.id, m.name, m.legacy, m.target, c.command_tag, c.object_identity
               FROM @extschema@.migrations m, pg_catalog.pg_event_trigger_ddl_commands() c
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class l WHERE l.oid OPERATOR(pg_catalog.=) m.legacy)
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_class t WHERE t.oid OPERATOR(pg_catalog.=) m.target)
    LOOP
        BEGIN
            PERFORM @extschema@._invalidate(r.legacy, r.target);
            PERFORM @extschema@._validate(r.id);
        EXCEPTION
            WHEN OTHERS THEN
                PERFORM @extschema@._refuse_untrusted(SQLSTATE, SQLERRM,
                    pg_catalog.format('%s %s', r.command_tag, r.object_identity), r.name);
                -- anything else is not this command's doing; writes report it
        END;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@._ddl_code() IS
    'internal: event trigger re-validating every migration after DDL that can change the code its statements run (casts, domains, types, functions, operators)';

CREATE EVENT TRIGGER softmig_ddl_start ON ddl_command_start
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION @extschema@._ddl_start();
CREATE EVENT TRIGGER softmig_ddl_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'DROP INDEX', 'ALTER INDEX', 'CREATE TRIGGER', 'CREATE TABLE',
                 'ALTER TRIGGER', 'CREATE RULE')
    EXECUTE FUNCTION @extschema@._ddl_altered();
CREATE EVENT TRIGGER softmig_ddl_code ON ddl_command_end
    WHEN TAG IN ('CREATE CAST', 'ALTER DOMAIN', 'ALTER TYPE', 'ALTER FUNCTION', 'ALTER AGGREGATE',
                 'ALTER OPERATOR', 'ALTER OPERATOR CLASS', 'ALTER OPERATOR FAMILY')
    EXECUTE FUNCTION @extschema@._ddl_code();


REVOKE ALL ON FUNCTION @extschema@._ddl_code(), @extschema@._ddl_start(), @extschema@._drop_approved(oid),
    @extschema@._reconcile_partitions(integer, text, oid[], oid[]), @extschema@._ddl_partitions(pg_ddl_command, boolean),
    @extschema@._install_triggers_on(integer, regclass), @extschema@._trigger_ddl(boolean),
    @extschema@._has_rows(regclass), @extschema@._managing_triggers(), @extschema@._refuse_rules(integer),
    @extschema@._refuse_untrusted(text, text, text, text) FROM PUBLIC;

-- create_read_view refuses softmig's own schema and the system schemas.
CREATE OR REPLACE FUNCTION @extschema@._create_read_view(name text, view_name text, shape @extschema@.side)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m @extschema@.migrations := @extschema@._migration(name);
    v_shape @extschema@.side := shape;
    v_actor name := @extschema@._actor();
    v_parts text[];
    v_schema text;
    v_view text;
    v_nsp oid;
    v_own regclass;             -- the table whose columns the view has
    v_other regclass;           -- the table mapped into that shape
    v_dir text;                 -- mappings feeding v_own's columns from v_other
    v_own_side @extschema@.side;
    v_other_side @extschema@.side;
    v_own_list text;
    v_inner_list text;
    v_outer_list text;
    v_sql text;
    v_src_col name;
BEGIN
    IF view_name IS NULL OR v_shape IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'view_name and shape must not be null';
    END IF;
    v_parts := pg_catalog.parse_ident(view_name);
    IF pg_catalog.cardinality(v_parts) OPERATOR(pg_catalog.>) 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_name',
            MESSAGE = pg_catalog.format('improper view name (too many dotted names): %s', view_name);
    END IF;
    IF pg_catalog.cardinality(v_parts) OPERATOR(pg_catalog.=) 2 THEN
        v_schema := v_parts[1];
        v_view := v_parts[2];
    ELSE
        -- an unqualified name goes next to the legacy table, whatever the
        -- caller's search_path says
        SELECT n.nspname INTO v_schema
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
         WHERE c.oid OPERATOR(pg_catalog.=) m.legacy;
        v_view := v_parts[1];
    END IF;
    SELECT n.oid INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) v_schema;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_schema_name',
            MESSAGE = pg_catalog.format('schema "%s" does not exist', v_schema);
    END IF;
    -- softmig's own schema holds only the extension's objects (its functions
    -- run with it trusted), and the system schemas hold only the system's
    IF v_nsp OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
       OR v_schema OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog', 'information_schema', 'pg_toast']) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_schema_name',
            MESSAGE = pg_catalog.format('a routed view cannot be created in schema %s', v_schema),
            DETAIL = 'That schema holds only the extension''s or the system''s own objects.',
            HINT = 'Create the view in an application schema.';
    END IF;
    IF NOT pg_catalog.has_schema_privilege(v_actor, v_nsp, 'CREATE') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('permission denied for schema %s', v_schema),
            DETAIL = pg_catalog.format('The view is created as role %s, which needs CREATE on the schema.', v_actor);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                WHERE c.relnamespace OPERATOR(pg_catalog.=) v_nsp AND c.relname OPERATOR(pg_catalog.=) v_view) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_table',
            MESSAGE = pg_catalog.format('relation "%s.%s" already exists', v_schema, v_view);
    END IF;

    IF v_shape OPERATOR(pg_catalog.=) 'legacy' THEN
        v_own := m.legacy; v_other := m.target; v_dir := 'backward';
        v_own_side := 'legacy'; v_other_side := 'new';
    ELSE
        v_own := m.target; v_other := m.legacy; v_dir := 'forward';
        v_own_side := 'new'; v_other_side := 'legacy';
    END IF;

    -- the shape's own table: its columns as they are
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
      INTO v_own_list
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;

    -- the other table mapped into the shape: stored columns through the
    -- mapping (NULL where nothing maps), then generated columns computed
    -- from those, with the shape's types and collations
    SELECT pg_catalog.string_agg(
               CASE WHEN mp.expression IS NULL
                    THEN 'NULL::' OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
                    ELSE '(' OPERATOR(pg_catalog.||) mp.expression OPERATOR(pg_catalog.||) E'\n)::'
                         OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod) END
               OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname),
               ', ' ORDER BY a.attnum)
      INTO v_inner_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN @extschema@.mappings mp
             ON mp.migration_id OPERATOR(pg_catalog.=) m.id AND mp.direction OPERATOR(pg_catalog.=) v_dir
            AND mp.column_name OPERATOR(pg_catalog.=) a.attname
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND a.attgenerated OPERATOR(pg_catalog.=) '';
    SELECT pg_catalog.string_agg(
               CASE WHEN a.attgenerated OPERATOR(pg_catalog.<>) ''
                    THEN '(' OPERATOR(pg_catalog.||) pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)
                         OPERATOR(pg_catalog.||) ')::' OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
                    ELSE pg_catalog.quote_ident(a.attname) END
               OPERATOR(pg_catalog.||)
               CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) 0
                         AND a.attcollation OPERATOR(pg_catalog.<>) 'pg_catalog.default'::pg_catalog.regcollation
                    THEN ' COLLATE ' OPERATOR(pg_catalog.||) a.attcollation::pg_catalog.regcollation::text
                    ELSE '' END
               OPERATOR(pg_catalog.||) ' AS ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname),
               ', ' ORDER BY a.attnum)
      INTO v_outer_list
      FROM pg_catalog.pg_attribute a
      LEFT JOIN pg_catalog.pg_attrdef ad
             ON ad.adrelid OPERATOR(pg_catalog.=) a.attrelid AND ad.adnum OPERATOR(pg_catalog.=) a.attnum
     WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;

    -- Each branch carries its side as a constant column; the one filter
    -- "that column = read_source(...)" is pushed into both branches, where it
    -- no longer depends on any row: the planner turns it into a One-Time
    -- Filter, so the branch not taken is never executed.  The branches have
    -- no WHERE clause of their own, so they are flattened into an append
    -- relation (no Subquery Scan in between), and filters on the view, key
    -- filters included, reach each table's indexes.
    v_src_col := 'softmig_source';
    WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid OPERATOR(pg_catalog.=) v_own AND a.attname OPERATOR(pg_catalog.=) v_src_col) LOOP
        v_src_col := v_src_col OPERATOR(pg_catalog.||) '_';
    END LOOP;
    v_sql := pg_catalog.format(
        'CREATE VIEW %I.%I%s AS SELECT %s FROM ('
        ' SELECT %s, %L::@extschema@.side AS %I FROM %s'
        ' UNION ALL'
        ' SELECT %s, %L::@extschema@.side FROM (SELECT %s FROM %s) AS softmig_mapped'
        ') AS softmig_routed'
        ' WHERE softmig_routed.%I OPERATOR(pg_catalog.=) @extschema@.read_source(%L::text)',
        v_schema, v_view,
        CASE WHEN pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog.>=) 150000
             THEN ' WITH (security_invoker = true)' ELSE '' END,
        v_own_list,
        v_own_list, v_own_side, v_src_col, v_own,
        v_outer_list, v_other_side, v_inner_list, v_other,
        v_src_col, m.name);
    EXECUTE v_sql;
    EXECUTE pg_catalog.format('ALTER VIEW %I.%I OWNER TO %I', v_schema, v_view, v_actor);
    EXECUTE pg_catalog.format('COMMENT ON VIEW %I.%I IS %L', v_schema, v_view,
        pg_catalog.format('softmig routed view of migration "%s" in the %s shape: rows come from the caller''s read source (softmig.read_source)',
                          m.name, v_shape));

    INSERT INTO @extschema@.read_views (view_name, migration_id, shape, created_by)
    VALUES (pg_catalog.format('%I.%I', v_schema, v_view)::pg_catalog.regclass, m.id, v_shape, v_actor);
    PERFORM @extschema@._history(m.id, 'create_read_view', m.state, m.state, NULL,
        pg_catalog.jsonb_build_object('view', pg_catalog.format('%I.%I', v_schema, v_view), 'shape', v_shape));
END $$;

-- tap_ok puts pg_catalog before pgTAP's schema on its search_path.
-------------------------------------------------------------------------------
-- pgTAP helpers for users' own migration tests
-------------------------------------------------------------------------------
-------------------------------------------------------------------------------
-- pgTAP helpers for users' own migration tests
-------------------------------------------------------------------------------
-------------------------------------------------------------------------------
-- pgTAP helpers for users' own migration tests
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION @extschema@.tap_ok(ok boolean, description text, diagnostics text DEFAULT NULL) RETURNS text
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

-------------------------------------------------------------------------------
-- Monitoring views for Prometheus (src/sql/77_monitoring.sql)
-------------------------------------------------------------------------------
-- Keys of the ledger without counting a big one: exact up to 100000 keys
-- in the whole ledger (an index-only scan of the migration's range),
-- above that the table's live row estimate times the migration's share in
-- the column statistics of softmig.operations.migration_id.
-------------------------------------------------------------------------------
-- Monitoring: views shaped for Prometheus (monitoring/postgres_exporter.yaml
-- maps each to one exporter query; guide in doc/monitoring.md).
--
-- Every column is a metric or a label: the exporter names a metric
-- <query>_<column>, so the column names below are the metric names without
-- their prefix.  Values are in base units (seconds since the epoch for
-- points in time, rows, counts); "_total" columns are counters.  Nothing here
-- runs a check, a parity comparison or a scan of a migrated table: the views
-- read softmig's catalog, the latest stored check run, reader discovery's
-- shared memory and table sizes, so a scrape costs milliseconds and is never
-- recorded as a reader of the migrated tables.  Like softmig.metrics they
-- are readable by every role (they show only what the catalog already shows).
-------------------------------------------------------------------------------

-- Keys of the ledger without counting a big one: exact up to 100000 keys
-- in the whole ledger (an index-only scan of the migration's range),
-- above that the table's live row estimate times the migration's share in
-- the column statistics of softmig.operations.migration_id.
CREATE FUNCTION @extschema@._ledger_keys(p_id integer) RETURNS double precision
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN t.total OPERATOR(pg_catalog.<=) 100000 THEN
            (SELECT pg_catalog.count(*) FROM @extschema@.operations o
              WHERE o.migration_id OPERATOR(pg_catalog.=) p_id)::double precision
        ELSE pg_catalog.round(t.total OPERATOR(pg_catalog.*) COALESCE(
            -- the migration is among the column's most common values
            (SELECT u.f FROM ROWS FROM (pg_catalog.unnest(s.vals), pg_catalog.unnest(s.freqs)) AS u(v, f)
              WHERE u.v OPERATOR(pg_catalog.=) p_id),
            -- it is not: an even share of what the common values leave
            (SELECT (1 OPERATOR(pg_catalog.-) COALESCE((SELECT pg_catalog.sum(f) FROM pg_catalog.unnest(s.freqs) AS f), 0))
                    OPERATOR(pg_catalog./) GREATEST(1, (CASE WHEN s.n_distinct OPERATOR(pg_catalog.>=) 0 THEN s.n_distinct
                                                             ELSE (OPERATOR(pg_catalog.-) s.n_distinct) OPERATOR(pg_catalog.*) t.total END)
                                                        OPERATOR(pg_catalog.-) COALESCE(pg_catalog.cardinality(s.vals), 0))
              WHERE s.n_distinct IS NOT NULL),
            -- no statistics yet: an even share among the migrations
            1.0 OPERATOR(pg_catalog./) GREATEST(1, (SELECT pg_catalog.count(*) FROM @extschema@.migrations))))
        END
      FROM (SELECT @extschema@._rows_estimate('@extschema@.operations'::pg_catalog.regclass) AS total) t
      LEFT JOIN (SELECT st.most_common_vals::text::integer[] AS vals, st.most_common_freqs::double precision[] AS freqs,
                        st.n_distinct::double precision AS n_distinct
                   FROM pg_catalog.pg_stats st
                  WHERE st.schemaname OPERATOR(pg_catalog.=) '@extschema@'
                    AND st.tablename OPERATOR(pg_catalog.=) 'operations'
                    AND st.attname OPERATOR(pg_catalog.=) 'migration_id'
                  LIMIT 1) s ON true
$$;
COMMENT ON FUNCTION @extschema@._ledger_keys(integer) IS
    'internal: operation keys a migration holds in the ledger, exact for a ledger of up to 100000 keys, estimated from statistics above';

-- a table's name for a label: schema-qualified whatever the search_path
CREATE FUNCTION @extschema@._qualified(rel regclass) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) rel
$$;
COMMENT ON FUNCTION @extschema@._qualified(regclass) IS
    'internal: schema-qualified name of a table, the same whatever the caller''s search_path';

-- one row per migration: the numbers (exporter query "softmig")
CREATE VIEW @extschema@.monitor AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       (pg_catalog.array_position(ARRAY['legacy', 'mirrored', 'new_write', 'new_read', 'cutover'],
                                  m.state::text) OPERATOR(pg_catalog.-) 1)::double precision AS migration_state,
       EXTRACT(epoch FROM m.state_changed_at)::double precision AS migration_state_changed_timestamp_seconds,
       CASE WHEN COALESCE(e.open, true) THEN 1 ELSE 0 END::double precision AS envelope_open,
       COALESCE(e.new_only_count, 0)::double precision AS envelope_new_only_rows,
       CASE WHEN tr.problems OPERATOR(pg_catalog.=) 0 THEN 1 ELSE 0 END::double precision AS triggers_healthy,
       tr.problems::double precision AS trigger_problems,
       (SELECT pg_catalog.count(*) FROM @extschema@.shadow s
         WHERE s.migration_id OPERATOR(pg_catalog.=) m.id)::double precision AS shadow_disabled,
       (SELECT pg_catalog.count(*) FROM @extschema@.quarantine q
         WHERE q.migration_id OPERATOR(pg_catalog.=) m.id)::double precision AS quarantined_entities,
       CASE WHEN bp.phase OPERATOR(pg_catalog.=) 'done' THEN 1 ELSE 0 END::double precision AS backfill_done,
       COALESCE(bp.rows_backfilled, 0)::double precision AS backfill_rows_copied_total,
       COALESCE(bp.rows_removed, 0)::double precision AS backfill_rows_removed_total,
       COALESCE(bp.batches, 0)::double precision AS backfill_batches_total,
       CASE WHEN m.state OPERATOR(@extschema@.=) 'mirrored'
            THEN (@extschema@._backfill_status(m.id) OPERATOR(pg_catalog.->>) 'remaining_estimate')::double precision
            ELSE 0 END AS backfill_rows_remaining,
       -- throughput of a run that is going on (a batch ended within the last minute)
       CASE WHEN bp.batch_ended_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute')
                 AND bp.batch_ended_at OPERATOR(pg_catalog.>) bp.run_started_at
            THEN bp.run_rows OPERATOR(pg_catalog./)
                 EXTRACT(epoch FROM bp.batch_ended_at OPERATOR(pg_catalog.-) bp.run_started_at)::double precision
            ELSE 0 END AS backfill_rows_per_second,
       -- the last batch that moved the backfill on; before the first one, when mirroring began
       EXTRACT(epoch FROM COALESCE(bp.progressed_at,
                                   CASE WHEN bp.batch_ended_at IS NULL THEN bp.updated_at ELSE bp.started_at END,
                                   m.state_changed_at))::double precision
           AS backfill_last_progress_timestamp_seconds,
       COALESCE(EXTRACT(epoch FROM lc.at), 0)::double precision AS check_last_run_timestamp_seconds,
       COALESCE(lc.failing, 0)::double precision AS checks_failing,
       (SELECT pg_catalog.count(DISTINCT o.reader)
          FROM @extschema@.observed_readers(m.name) o
         WHERE o.side OPERATOR(pg_catalog.=) 'legacy'::@extschema@.side
           AND NOT EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                            WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
                              AND r.reader OPERATOR(pg_catalog.=) o.reader)
           AND o.last_seen OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) w.window_)
           AND w.window_ OPERATOR(pg_catalog.>) '0'::interval)::double precision AS unregistered_legacy_readers,
       @extschema@._ledger_keys(m.id) AS ledger_keys
  FROM @extschema@.migrations m
  LEFT JOIN @extschema@.envelope e ON e.migration_id OPERATOR(pg_catalog.=) m.id
  LEFT JOIN @extschema@.backfill_progress bp ON bp.migration_id OPERATOR(pg_catalog.=) m.id
 CROSS JOIN LATERAL (
    SELECT pg_catalog.jsonb_array_length(@extschema@._trigger_health(m.id) OPERATOR(pg_catalog.->) 'problems')
           OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*)
              FROM (SELECT DISTINCT r.tbl FROM @extschema@.transition_rules r
                     WHERE r.migration_id OPERATOR(pg_catalog.=) m.id) x
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid OPERATOR(pg_catalog.=) x.tbl
                                  AND t.tgname OPERATOR(pg_catalog.=) ('softmig_rule_' OPERATOR(pg_catalog.||) m.id::text)
                                  AND t.tgenabled OPERATOR(pg_catalog.<>) 'D')) AS problems) tr
 CROSS JOIN LATERAL (
    SELECT pg_catalog.max(c.at) AS at, pg_catalog.count(*) FILTER (WHERE NOT c.ok) AS failing
      FROM @extschema@.check_results c
     WHERE c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                            WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id)) lc
 CROSS JOIN LATERAL (
    SELECT COALESCE((m.options OPERATOR(pg_catalog.->>) 'unregistered_reader_window')::interval,
                    '15 minutes'::interval) AS window_) w;
COMMENT ON VIEW @extschema@.monitor IS
    'one row per migration: state number, envelope, trigger health, shadow, quarantine, backfill progress, latest check run, unregistered legacy readers, ledger keys (exporter query "softmig")';

-- one row per migration: the words (exporter query "softmig_migration")
CREATE VIEW @extschema@.monitor_info AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       m.state::text AS state,
       CASE WHEN m.state OPERATOR(@extschema@.<=) 'mirrored' THEN 'legacy' ELSE 'target' END AS write_authority,
       @extschema@.group_source(m.name, 'default')::text AS read_default,
       @extschema@._qualified(m.legacy) AS legacy_table,
       @extschema@._qualified(m.target) AS target_table,
       1::double precision AS info
  FROM @extschema@.migrations m;
COMMENT ON VIEW @extschema@.monitor_info IS
    'one row per migration with value 1: state, write authority, default read source and tables as labels (exporter query "softmig_migration")';

-- the latest stored check run, one row per check (exporter query "softmig_check")
CREATE VIEW @extschema@.monitor_checks AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       c.layer,
       c.check_name,
       CASE WHEN c.ok THEN 1 ELSE 0 END::double precision AS ok,
       c.violations::double precision AS violations
  FROM @extschema@.migrations m
  JOIN @extschema@.check_results c
    ON c.migration_id OPERATOR(pg_catalog.=) m.id
   AND c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                        WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id);
COMMENT ON VIEW @extschema@.monitor_checks IS
    'the latest stored check run of each migration, one row per check: ok (1/0) and violations (exporter query "softmig_check")';

-- parity differences by kind, as the latest check counted them
CREATE VIEW @extschema@.monitor_parity AS
SELECT c.datname, c.migration,
       CASE WHEN c.check_name OPERATOR(pg_catalog.=) 'parity' THEN 'error'   -- parity itself failed
            ELSE pg_catalog.substr(c.check_name, 8) END AS kind,
       c.violations AS differences
  FROM @extschema@.monitor_checks c
 WHERE c.layer OPERATOR(pg_catalog.=) 'structural';
COMMENT ON VIEW @extschema@.monitor_parity IS
    'parity differences of the latest check run by kind: missing_in_target, missing_in_legacy, mismatch (error: parity failed to run) (exporter query "softmig_parity")';

-- invariants of the latest check run
CREATE VIEW @extschema@.monitor_invariants AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       pg_catalog.substr(c.check_name, 11) AS invariant,
       COALESCE(c.detail OPERATOR(pg_catalog.->>) 'severity', 'error') AS severity,
       c.violations::double precision AS violations
  FROM @extschema@.migrations m
  JOIN @extschema@.check_results c
    ON c.migration_id OPERATOR(pg_catalog.=) m.id
   AND c.run_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(c2.run_id) FROM @extschema@.check_results c2
                                        WHERE c2.migration_id OPERATOR(pg_catalog.=) m.id)
 WHERE c.layer OPERATOR(pg_catalog.=) 'behavioral' AND c.check_name OPERATOR(pg_catalog.^@) 'invariant:';
COMMENT ON VIEW @extschema@.monitor_invariants IS
    'violating rows per invariant and severity in the latest check run (an invariant whose query failed counts 1) (exporter query "softmig_invariant")';

-- transition-rule violations of the latest check run
CREATE VIEW @extschema@.monitor_rules AS
SELECT c.datname, c.migration, c.check_name, c.violations
  FROM @extschema@.monitor_checks c
 WHERE c.layer OPERATOR(pg_catalog.=) 'behavioral' AND NOT c.check_name OPERATOR(pg_catalog.^@) 'invariant:';
COMMENT ON VIEW @extschema@.monitor_rules IS
    'recorded transition-rule violations per rule (and per ruled column for edges no rule allows) in the latest check run (exporter query "softmig_rule")';

-- every reader readers() lists, with value 1 (exporter query "softmig_reader")
CREATE VIEW @extschema@.monitor_readers AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       x.reader,
       COALESCE(reg.class, '') AS class,
       COALESCE(reg.switch_group, 'default') AS switch_group,
       @extschema@.group_source(m.name, COALESCE(reg.switch_group, 'default'))::text AS source,
       (reg.reader IS NOT NULL)::text AS registered,
       1::double precision AS info
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (
    SELECT r.reader FROM @extschema@.reader_registry r WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
    UNION
    SELECT CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(none)' ELSE o.reader END
      FROM @extschema@.observed_readers(m.name) o) x
  LEFT JOIN @extschema@.reader_registry reg
    ON reg.migration_id OPERATOR(pg_catalog.=) m.id AND reg.reader OPERATOR(pg_catalog.=) x.reader;
COMMENT ON VIEW @extschema@.monitor_readers IS
    'every registered or discovered reader of each migration with value 1: class, switch group, read source, registered (exporter query "softmig_reader")';

-- reader discovery's observations (exporter query "softmig_discovery")
CREATE VIEW @extschema@.monitor_discovery AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       CASE WHEN o.reader OPERATOR(pg_catalog.=) '' THEN '(none)' ELSE o.reader END AS reader,
       o.role::text AS role,
       o.side::text AS side,
       (EXISTS (SELECT 1 FROM @extschema@.reader_registry r
                 WHERE r.migration_id OPERATOR(pg_catalog.=) m.id
                   AND r.reader OPERATOR(pg_catalog.=) o.reader))::text AS registered,
       o.reads::double precision AS reads_total,
       o.writes::double precision AS writes_total,
       EXTRACT(epoch FROM o.last_seen)::double precision AS last_seen_timestamp_seconds
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL @extschema@.observed_readers(m.name) o;
COMMENT ON VIEW @extschema@.monitor_discovery IS
    'statements per reader (application_name), role and table side seen by reader discovery since it started, and when last (exporter query "softmig_discovery"; empty without shared_preload_libraries)';

-- live row estimates of both tables (exporter query "softmig_table")
CREATE VIEW @extschema@.monitor_tables AS
SELECT pg_catalog.current_database()::text AS datname,
       m.name AS migration,
       s.side,
       @extschema@._qualified(s.rel) AS "table",
       @extschema@._rows_estimate(s.rel) AS rows
  FROM @extschema@.migrations m
 CROSS JOIN LATERAL (VALUES ('legacy', m.legacy), ('new', m.target)) s(side, rel);
COMMENT ON VIEW @extschema@.monitor_tables IS
    'estimated rows of each migration''s legacy and target table now, from their size and statistics, without reading them (exporter query "softmig_table")';

GRANT SELECT ON @extschema@.monitor, @extschema@.monitor_info, @extschema@.monitor_checks,
                @extschema@.monitor_parity, @extschema@.monitor_invariants, @extschema@.monitor_rules,
                @extschema@.monitor_readers, @extschema@.monitor_discovery, @extschema@.monitor_tables
   TO PUBLIC;
