-- test/soak/lifecycle.sql -- schema and client functions of the lifecycle
-- soak (test/soak/lifecycle.pl), run by psql as a superuser in a fresh
-- database after lifecycle.pl replaced @ROWS@ (initial entities), @BUCKETS@
-- (counter rows) and @SPAN@ (ids per premade partition).  See
-- test/soak/README.md.
--
-- Two migrations:
--   acct   legacy_acct -> acct, both partitioned by range of the key, with
--          renamed and converted columns, application triggers (a row
--          normalizer, a statement-level audit with transition tables, a
--          row counter that writes migration bstat) and child tables
--          (legacy_acct_tag, acct_tag) referencing them ON DELETE CASCADE
--          ON UPDATE CASCADE;
--   bstat  legacy_bstat -> bstat, one counter row per bucket, written only
--          by the counter triggers of acct's tables, so its writes are
--          nested in acct's statements, acct's mirror, projection,
--          backfill and re-syncs.
-- The tables belong to soak_owner; the clients run as soak_app, which may
-- write both tables of each migration (it writes whichever has the write
-- authority) and run COPY FROM PROGRAM.

\set ON_ERROR_STOP 1
CREATE EXTENSION softmig;
GRANT CREATE ON SCHEMA public TO soak_owner;
SET ROLE soak_owner;

CREATE SEQUENCE lc_ids START 1000001;      -- keys of created entities and key changes
CREATE SEQUENCE lc_eids START 1000001;     -- stable entity ids of created entities
CREATE SEQUENCE lc_ops;                    -- operation keys

CREATE TABLE legacy_acct (id bigint NOT NULL, eid bigint NOT NULL, bucket int NOT NULL,
                          owner text NOT NULL, balance int NOT NULL, note text, version int NOT NULL,
                          PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE acct (acct_id bigint NOT NULL, eid bigint NOT NULL, bucket int NOT NULL,
                   owner_name text NOT NULL, balance_cents bigint NOT NULL, note_uc text,
                   version int NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (acct_id)) PARTITION BY RANGE (acct_id);
CREATE TABLE legacy_acct_p0 PARTITION OF legacy_acct FOR VALUES FROM (MINVALUE) TO (1000001);
CREATE TABLE acct_p0 PARTITION OF acct FOR VALUES FROM (MINVALUE) TO (1000001);
SELECT format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
              t || '_p' || i, t, 1000001 + (i - 1) * @SPAN@, 1000001 + i * @SPAN@)
  FROM unnest(ARRAY['legacy_acct', 'acct']) t, generate_series(1, 3) i \gexec
CREATE TABLE legacy_acct_pdef PARTITION OF legacy_acct DEFAULT;
CREATE TABLE acct_pdef PARTITION OF acct DEFAULT;
CREATE INDEX ON legacy_acct (eid);
CREATE INDEX ON acct (eid);

INSERT INTO legacy_acct
SELECT g, g, g % @BUCKETS@, 'o' || (g % 97), 0, 'n' || g, 0 FROM generate_series(1, @ROWS@) g;
-- the target as an earlier, abandoned copy left it: stale rows, orphans
INSERT INTO acct (acct_id, eid, bucket, owner_name, balance_cents, note_uc, version)
SELECT g, g, g % @BUCKETS@, 'STALE', -1, 'STALE', -1 FROM generate_series(1, @ROWS@, 37) g
UNION ALL
SELECT g, g, 0, 'ORPHAN', 0, NULL, 0 FROM generate_series(900001, 900040) g;

-- children of each side (not migrated): the application writes both; a
-- delete or key change reaches the other side's children only through
-- softmig's mirrored or projected DELETE and key move (ON ... CASCADE)
CREATE TABLE legacy_acct_tag (acct_id bigint NOT NULL REFERENCES legacy_acct ON DELETE CASCADE ON UPDATE CASCADE,
                              tag text NOT NULL, PRIMARY KEY (acct_id, tag));
CREATE TABLE acct_tag (acct_id bigint NOT NULL REFERENCES acct ON DELETE CASCADE ON UPDATE CASCADE,
                       tag text NOT NULL, PRIMARY KEY (acct_id, tag));

CREATE TABLE legacy_bstat (bucket int PRIMARY KEY, touches bigint NOT NULL, last_eid bigint);
CREATE TABLE bstat (bucket int PRIMARY KEY, touch_count bigint NOT NULL, last_eid bigint);
INSERT INTO legacy_bstat SELECT g, 0, NULL FROM generate_series(0, @BUCKETS@ - 1) g;

-- what the audit triggers saw (not migrated, not compared)
CREATE TABLE lc_audit (tbl text NOT NULL, op text NOT NULL, nrows bigint NOT NULL,
                       at timestamptz NOT NULL DEFAULT clock_timestamp());

-- the controller's switches: tags_ok (the children are comparable: the
-- application writes tags only then), invariant_fail (makes the error
-- invariant of acct fail, so only a forced advance passes its guard)
CREATE TABLE lc_ctl (one boolean PRIMARY KEY DEFAULT true CHECK (one), tags_ok boolean NOT NULL,
                     invariant_fail boolean NOT NULL);
INSERT INTO lc_ctl VALUES (true, false, false);

-- what the clients did: one row per committed operation, and every error
-- that was not one of the expected outcomes (also sent to the server log
-- as a WARNING, which survives a rollback)
CREATE TABLE lc_log (kind text NOT NULL, outcome text NOT NULL, tries int NOT NULL, rows bigint);
CREATE TABLE lc_errors (at timestamptz NOT NULL DEFAULT clock_timestamp(), kind text, side text,
                        sqlstate text, message text, detail text, context text);

-------------------------------------------------------------------------------
-- application triggers (owned by the tables' owner, as the trust rule needs;
-- with a search_path of their own, since softmig's writes run with
-- search_path = pg_catalog, pg_temp)
-------------------------------------------------------------------------------

-- normalizers: values stay in the image of the mappings whatever a
-- client writes
CREATE FUNCTION lc_norm_legacy() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    NEW.owner := lower(NEW.owner);
    NEW.note := lower(NEW.note);
    RETURN NEW;
END $$;
CREATE FUNCTION lc_norm_target() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    NEW.owner_name := upper(NEW.owner_name);
    NEW.note_uc := upper(NEW.note_uc);
    RETURN NEW;
END $$;
CREATE TRIGGER lc_norm BEFORE INSERT OR UPDATE ON legacy_acct FOR EACH ROW EXECUTE FUNCTION lc_norm_legacy();
CREATE TRIGGER lc_norm BEFORE INSERT OR UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION lc_norm_target();

-- audit: statement triggers with transition tables of their own
CREATE FUNCTION lc_audit_ins() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    INSERT INTO lc_audit (tbl, op, nrows) SELECT TG_TABLE_NAME, TG_OP, count(*) FROM lc_new;
    RETURN NULL;
END $$;
CREATE FUNCTION lc_audit_del() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    INSERT INTO lc_audit (tbl, op, nrows) SELECT TG_TABLE_NAME, TG_OP, count(*) FROM lc_old;
    RETURN NULL;
END $$;
CREATE TRIGGER lc_audit_ins AFTER INSERT ON legacy_acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_audit_ins();
CREATE TRIGGER lc_audit_upd AFTER UPDATE ON legacy_acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_audit_ins();
CREATE TRIGGER lc_audit_del AFTER DELETE ON legacy_acct REFERENCING OLD TABLE AS lc_old
    FOR EACH STATEMENT EXECUTE FUNCTION lc_audit_del();
CREATE TRIGGER lc_audit_ins AFTER INSERT ON acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_audit_ins();
CREATE TRIGGER lc_audit_upd AFTER UPDATE ON acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_audit_ins();
CREATE TRIGGER lc_audit_del AFTER DELETE ON acct REFERENCING OLD TABLE AS lc_old
    FOR EACH STATEMENT EXECUTE FUNCTION lc_audit_del();

-- the counter: every row written to either table of acct (by a client,
-- or by softmig for acct) counts a touch of its bucket in bstat's
-- authoritative table, one statement per statement (transition tables), so
-- bstat's writes happen inside acct's.  Rows are locked in bucket order.
CREATE FUNCTION lc_count_rows(p_rows bigint[], p_buckets int[], p_eids bigint[]) RETURNS void
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    IF softmig.state('bstat'::text)::text IN ('legacy', 'mirrored') THEN
        PERFORM 1 FROM legacy_bstat WHERE bucket = ANY (p_buckets) ORDER BY bucket FOR NO KEY UPDATE;
        UPDATE legacy_bstat b SET touches = touches + c.n, last_eid = c.e
          FROM unnest(p_buckets, p_rows, p_eids) c(bucket, n, e) WHERE b.bucket = c.bucket;
    ELSE
        PERFORM 1 FROM bstat WHERE bucket = ANY (p_buckets) ORDER BY bucket FOR NO KEY UPDATE;
        UPDATE bstat b SET touch_count = touch_count + c.n, last_eid = c.e
          FROM unnest(p_buckets, p_rows, p_eids) c(bucket, n, e) WHERE b.bucket = c.bucket;
    END IF;
END $$;
CREATE FUNCTION lc_count_new() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_rows bigint[];
    v_buckets int[];
    v_eids bigint[];
BEGIN
    SELECT array_agg(n ORDER BY bucket), array_agg(bucket ORDER BY bucket), array_agg(e ORDER BY bucket)
      INTO v_rows, v_buckets, v_eids
      FROM (SELECT bucket, count(*) AS n, max(eid) AS e FROM lc_new GROUP BY bucket) c;
    IF v_buckets IS NOT NULL THEN
        PERFORM lc_count_rows(v_rows, v_buckets, v_eids);
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION lc_count_old() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_rows bigint[];
    v_buckets int[];
    v_eids bigint[];
BEGIN
    SELECT array_agg(n ORDER BY bucket), array_agg(bucket ORDER BY bucket), array_agg(e ORDER BY bucket)
      INTO v_rows, v_buckets, v_eids
      FROM (SELECT bucket, count(*) AS n, max(eid) AS e FROM lc_old GROUP BY bucket) c;
    IF v_buckets IS NOT NULL THEN
        PERFORM lc_count_rows(v_rows, v_buckets, v_eids);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lc_count_ins AFTER INSERT ON legacy_acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_count_new();
CREATE TRIGGER lc_count_upd AFTER UPDATE ON legacy_acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_count_new();
CREATE TRIGGER lc_count_del AFTER DELETE ON legacy_acct REFERENCING OLD TABLE AS lc_old
    FOR EACH STATEMENT EXECUTE FUNCTION lc_count_old();
CREATE TRIGGER lc_count_ins AFTER INSERT ON acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_count_new();
CREATE TRIGGER lc_count_upd AFTER UPDATE ON acct REFERENCING NEW TABLE AS lc_new
    FOR EACH STATEMENT EXECUTE FUNCTION lc_count_new();
CREATE TRIGGER lc_count_del AFTER DELETE ON acct REFERENCING OLD TABLE AS lc_old
    FOR EACH STATEMENT EXECUTE FUNCTION lc_count_old();

-------------------------------------------------------------------------------
-- the migrations
-------------------------------------------------------------------------------
RESET ROLE;
SELECT softmig.create_migration('acct', 'legacy_acct', 'acct',
    forward  => '{"acct_id": "id", "owner_name": "upper(owner)", "balance_cents": "balance::bigint * 100", "note_uc": "upper(note)"}',
    backward => '{"id": "acct_id", "owner": "lower(owner_name)", "balance": "(balance_cents / 100)::int", "note": "lower(note_uc)"}',
    options  => '{"lock_timeout": "3s"}');
SELECT softmig.create_migration('bstat', 'legacy_bstat', 'bstat',
    forward  => '{"touch_count": "touches"}',
    backward => '{"touches": "touch_count"}',
    options  => '{"lock_timeout": "3s"}');
-- an error invariant the controller can make fail: the guard of
-- mirrored -> new_write then refuses, and only force => true passes
SELECT softmig.add_invariant('acct', 'controller_says_no', 'SELECT 1 FROM public.lc_ctl WHERE invariant_fail');

GRANT SELECT, INSERT, UPDATE, DELETE ON legacy_acct, acct, legacy_acct_tag, acct_tag, legacy_bstat, bstat,
    legacy_acct_p0, legacy_acct_pdef, acct_p0, acct_pdef TO soak_app;
GRANT SELECT, INSERT ON lc_audit, lc_log, lc_errors TO soak_app;
GRANT SELECT ON lc_ctl TO soak_app;
GRANT USAGE, SELECT ON SEQUENCE lc_ids, lc_eids, lc_ops TO soak_app;
ANALYZE;

-------------------------------------------------------------------------------
-- the clients' functions (run as soak_app)
-------------------------------------------------------------------------------

-- the table with acct's write authority: 'legacy' or 'new'
CREATE FUNCTION lc_authority() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN softmig.state('acct'::text)::text IN ('legacy', 'mirrored') THEN 'legacy' ELSE 'new' END
$$;

-- an existing key on one side, picked by a point p in [0, 1) of the entity
-- id space (the initial entities, then the created ones); one pick in ten
-- goes to a hot spot of 50 entities, so that writers collide
CREATE FUNCTION lc_pick(p_side text, p float8) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_hi bigint := (SELECT last_value FROM lc_eids);
    v_x bigint;
    v_k bigint;
BEGIN
    IF p < 0.1 THEN
        v_x := 1 + floor(p * 500);
    ELSE
        v_x := floor((p - 0.1) / 0.9 * (@ROWS@ + greatest(v_hi - 1000000, 0)));
        v_x := CASE WHEN v_x < @ROWS@ THEN 1 + v_x ELSE 1000001 + v_x - @ROWS@ END;
    END IF;
    IF p_side = 'legacy' THEN
        SELECT id INTO v_k FROM legacy_acct WHERE eid >= v_x ORDER BY eid LIMIT 1;
        IF v_k IS NULL THEN SELECT id INTO v_k FROM legacy_acct ORDER BY eid LIMIT 1; END IF;
    ELSE
        SELECT acct_id INTO v_k FROM acct WHERE eid >= v_x ORDER BY eid LIMIT 1;
        IF v_k IS NULL THEN SELECT acct_id INTO v_k FROM acct ORDER BY eid LIMIT 1; END IF;
    END IF;
    RETURN coalesce(v_k, -1);
END $$;

-- one write of kind p_kind to side p_side ('legacy' or 'new'); returns the
-- rows it changed.  Legacy is written in legacy's shape, the target in the
-- target's (values in the image of the mappings).
CREATE FUNCTION lc_apply(p_side text, p_kind text, p_r1 float8, p_r2 float8, p_d int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    l boolean := p_side = 'legacy';
    t text := CASE WHEN l THEN 'legacy_acct' ELSE 'acct' END;
    k text := CASE WHEN l THEN 'id' ELSE 'acct_id' END;
    v_own text := CASE WHEN l THEN 'owner' ELSE 'owner_name' END;
    v_bal text := CASE WHEN l THEN 'balance' ELSE 'balance_cents' END;
    v_note text := CASE WHEN l THEN 'note' ELSE 'note_uc' END;
    v_mul int := CASE WHEN l THEN 1 ELSE 100 END;
    a bigint := lc_pick(p_side, p_r1);
    b bigint := lc_pick(p_side, p_r2);
    v_cols text;
    v_n bigint := 0;
    v_lines text;
BEGIN
    v_cols := format('%I, eid, bucket, %I, %I, %I, version', k, v_own, v_bal, v_note);
    CASE p_kind
    WHEN 'insert' THEN
        -- one row, or a few from a SELECT
        EXECUTE format('INSERT INTO %I (%s) SELECT nextval(''lc_ids''), nextval(''lc_eids''), $1 %% %s, ''o'' || ($1 %% 97), $1 * %s, ''Ins '' || g, 1 FROM generate_series(1, 1 + $1 %% 3) g',
                       t, v_cols, @BUCKETS@, v_mul) USING p_d;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'update' THEN
        EXECUTE format('UPDATE %I SET %I = %I + $1 * %s, %I = ''upd '' || $1, version = version + 1%s WHERE %I IN ($2, $3)',
                       t, v_bal, v_bal, v_mul, v_note,
                       CASE WHEN p_d % 5 = 0 THEN format(', bucket = (bucket + 1) %% %s', @BUCKETS@) ELSE '' END, k)
            USING p_d, a, CASE WHEN p_d % 3 = 0 THEN b ELSE a END;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'partition_update' THEN
        -- straight into a partition (the parent's statement triggers do not
        -- fire; softmig's triggers on the partition do)
        EXECUTE format('UPDATE %I SET %I = %I + $1 * %s, version = version + 1 WHERE %I = $2',
                       t || CASE WHEN a < 1000001 THEN '_p0' ELSE '_pdef' END, v_bal, v_bal, v_mul, k)
            USING p_d, a;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'delete' THEN
        EXECUTE format('DELETE FROM %I WHERE %I = $1', t, k) USING a;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'rekey' THEN
        -- a key change (across partitions; children follow by ON UPDATE CASCADE)
        EXECUTE format('UPDATE %I SET %I = nextval(''lc_ids''), version = version + 1 WHERE %I = $1', t, k, k) USING a;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'upsert' THEN
        -- an existing key or a new one; DO UPDATE or DO NOTHING
        EXECUTE format('INSERT INTO %I AS x (%s) VALUES ($1, nextval(''lc_eids''), $2 %% %s, ''up'', $2 * %s, ''upserted'', 1) ON CONFLICT (%I) DO %s',
                       t, v_cols, @BUCKETS@, v_mul, k,
                       CASE WHEN p_d % 2 = 0 THEN format('UPDATE SET %I = x.%I + excluded.%I, version = x.version + 1', v_bal, v_bal, v_bal)
                            ELSE 'NOTHING' END)
            USING CASE WHEN p_d % 4 = 0 THEN nextval('lc_ids') ELSE a END, p_d;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'merge' THEN
        -- update one, delete or update another, insert a new one
        EXECUTE format('MERGE INTO %I x USING (VALUES ($1::bigint, false), ($2::bigint, $3 %% 3 = 0), (nextval(''lc_ids''), false)) s(k, del) ON x.%I = s.k '
                       'WHEN MATCHED AND s.del THEN DELETE '
                       'WHEN MATCHED THEN UPDATE SET %I = x.%I + $3 * %s, version = x.version + 1, %I = ''merged'' '
                       'WHEN NOT MATCHED THEN INSERT (%s) VALUES (s.k, nextval(''lc_eids''), $3 %% %s, ''mg'', $3 * %s, ''merged'', 1)',
                       t, k, v_bal, v_bal, v_mul, v_note, v_cols, @BUCKETS@, v_mul)
            USING a, CASE WHEN a = b THEN -1 ELSE b END, p_d;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'copy' THEN
        SELECT string_agg(format('%s\t%s\t%s\to%s\t%s\tcopied %s\t1', nextval('lc_ids'), nextval('lc_eids'),
                                 p_d % @BUCKETS@, g, p_d * v_mul, g), '\n')
          INTO v_lines FROM generate_series(1, 1 + p_d % 4) g;
        EXECUTE format('COPY %I (%s) FROM PROGRAM %L', t, v_cols, format('printf ''%s\n''', v_lines));
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'cte' THEN
        -- delete and insert again under a new key, in one statement
        EXECUTE format('WITH d AS (DELETE FROM %I WHERE %I = $1 RETURNING *) '
                       'INSERT INTO %I (%s) SELECT nextval(''lc_ids''), eid, bucket, %I, %I, %I, version + 1 FROM d',
                       t, k, t, v_cols, v_own, v_bal, v_note) USING a;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'bulk_update' THEN
        -- more than 2000 rows: the set-based mirror
        EXECUTE format('UPDATE %I SET version = version + 1, %I = %I + %s WHERE %I BETWEEN $1 AND $1 + 2600',
                       t, v_bal, v_bal, v_mul, k) USING 1 + (p_d * 7) % greatest(@ROWS@ - 2600, 1);
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'bulk_insert' THEN
        EXECUTE format('INSERT INTO %I (%s) SELECT nextval(''lc_ids''), nextval(''lc_eids''), g %% %s, ''bulk'', 1 * %s, ''bulk'', 1 FROM generate_series(1, 2200) g',
                       t, v_cols, @BUCKETS@, v_mul);
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'bulk_delete' THEN
        -- the oldest created entities, as many as a bulk insert makes
        EXECUTE format('DELETE FROM %I WHERE %I IN (SELECT %I FROM %I WHERE %I >= 1000001 ORDER BY %I LIMIT 2200)',
                       t, k, k, t, k, k);
        GET DIAGNOSTICS v_n = ROW_COUNT;
    WHEN 'tag' THEN
        -- the application writes a child row on both sides (when they are
        -- comparable); the parent must exist on both
        IF NOT (SELECT tags_ok FROM lc_ctl) THEN
            RETURN -1;
        END IF;
        INSERT INTO legacy_acct_tag VALUES (a, 't' || p_d % 5) ON CONFLICT DO NOTHING;
        INSERT INTO acct_tag VALUES (a, 't' || p_d % 5) ON CONFLICT DO NOTHING;
        v_n := 2;
    WHEN 'untag' THEN
        DELETE FROM legacy_acct_tag WHERE acct_id = a;
        DELETE FROM acct_tag WHERE acct_id = a;
        v_n := 2;
    END CASE;
    RETURN v_n;
END $$;

-- record an error that is not an expected outcome (table and server log)
CREATE FUNCTION lc_unexpected(p_kind text, p_side text, p_state text, p_msg text, p_detail text, p_ctx text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE WARNING 'LC-UNEXPECTED % on % (%): % [%] %', p_kind, p_side, p_state, p_msg, p_detail, p_ctx;
    INSERT INTO lc_errors (kind, side, sqlstate, message, detail, context)
    VALUES (p_kind, p_side, p_state, p_msg, p_detail, p_ctx);
    RETURN 'error';
END $$;

-- one client operation: p_sel (1..100) picks the kind, the rest its
-- entities and amounts.  It first passes the gate (a shared advisory lock
-- the controller takes exclusively at quiet points), then writes the
-- table with acct's write authority, and when that moved (SM001) the
-- other one.  Expected outcomes are recorded in lc_log; anything else in
-- lc_errors.  A REPEATABLE READ transaction re-raises what only a retry
-- of the whole transaction can cure (pgbench retries it).
CREATE FUNCTION lc_op(p_sel int, p_r1 float8, p_r2 float8, p_d int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text := CASE WHEN p_sel <= 12 THEN 'insert' WHEN p_sel <= 29 THEN 'update'
                        WHEN p_sel <= 32 THEN 'partition_update'
                        WHEN p_sel <= 40 THEN 'delete' WHEN p_sel <= 49 THEN 'rekey'
                        WHEN p_sel <= 59 THEN 'upsert' WHEN p_sel <= 67 THEN 'merge'
                        WHEN p_sel <= 72 THEN 'copy' WHEN p_sel <= 76 THEN 'cte'
                        WHEN p_sel <= 85 THEN 'tag' WHEN p_sel <= 88 THEN 'untag'
                        WHEN p_sel <= 92 THEN 'wrong_side' WHEN p_sel <= 96 THEN 'opkey_update'
                        WHEN p_sel <= 97 THEN 'bulk_update' WHEN p_sel <= 98 THEN 'bulk_insert'
                        ELSE 'bulk_delete' END;
    v_side text;
    v_try int := 0;
    v_n bigint;
    v_state text;
    v_msg text;
    v_detail text;
    v_ctx text;
    v_rr boolean := current_setting('transaction_isolation') <> 'read committed';
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7301);
    v_side := lc_authority();
    LOOP
        v_try := v_try + 1;
        BEGIN
            IF v_kind = 'wrong_side' THEN
                -- the table without the write authority: refused (SM001),
                -- except in legacy, where the target is not managed yet
                v_side := CASE v_side WHEN 'legacy' THEN 'new' ELSE 'legacy' END;
                v_n := lc_apply(v_side, 'update', p_r1, p_r2, p_d);
                IF softmig.state('acct'::text)::text <> 'legacy' AND v_side <> lc_authority() THEN
                    RETURN lc_unexpected(v_kind, v_side, 'accepted',
                                         'a write to the table without the write authority was not refused', NULL, NULL);
                END IF;
                INSERT INTO lc_log VALUES (v_kind, 'accepted_in_legacy', v_try, v_n);
                RETURN 'accepted_in_legacy';
            ELSIF v_kind = 'opkey_update' THEN
                PERFORM set_config('softmig.operation_key', 'lc-' || nextval('lc_ops'), true);
                v_n := lc_apply(v_side, 'update', p_r1, p_r2, p_d);
            ELSE
                v_n := lc_apply(v_side, v_kind, p_r1, p_r2, p_d);
            END IF;
            INSERT INTO lc_log VALUES (v_kind, CASE WHEN v_n < 0 THEN 'skipped' ELSE 'applied' END, v_try, v_n);
            RETURN 'applied';
        EXCEPTION
            WHEN SQLSTATE 'SM001' THEN
                IF v_kind = 'wrong_side' THEN
                    INSERT INTO lc_log VALUES (v_kind, 'refused', v_try, 0);
                    RETURN 'refused';
                END IF;
                -- the authority moved (or bstat's did, under the counter)
                IF v_try >= 6 THEN
                    INSERT INTO lc_log VALUES (v_kind, 'gave_up_sm001', v_try, 0);
                    RETURN 'gave_up';
                END IF;
                v_side := CASE WHEN v_rr THEN CASE v_side WHEN 'legacy' THEN 'new' ELSE 'legacy' END
                               ELSE lc_authority() END;
            WHEN SQLSTATE 'SM002' THEN
                -- a softmig trigger was switched off behind the DDL guard's
                -- back (session_replication_role = replica) and not yet
                -- repaired: the write is refused, not silently one-sided
                INSERT INTO lc_log VALUES (v_kind, 'refused_sm002', v_try, 0);
                RETURN 'refused';
            WHEN SQLSTATE 'SM005' THEN
                INSERT INTO lc_log VALUES (v_kind, 'quarantined', v_try, 0);
                RETURN 'quarantined';
            WHEN foreign_key_violation THEN
                -- a tag whose parent is missing on one side (picked
                -- meanwhile, or a projection disabled by shadow_disable)
                INSERT INTO lc_log VALUES (v_kind, 'fk_refused', v_try, 0);
                RETURN 'fk_refused';
            WHEN unique_violation OR cardinality_violation THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL, v_ctx = PG_EXCEPTION_CONTEXT;
                IF v_msg LIKE 'operation key %' THEN
                    INSERT INTO lc_log VALUES (v_kind, 'duplicate_key', v_try, 0);
                    RETURN 'duplicate';
                END IF;
                -- PostgreSQL's MERGE under concurrent writers: a row updated
                -- or moved meanwhile can be taken as not matched (an INSERT
                -- of a key that exists, 23505) or as matched twice (21000),
                -- with or without softmig: try again
                IF v_kind <> 'merge' THEN
                    RETURN lc_unexpected(v_kind, v_side, v_state, v_msg, v_detail, v_ctx);
                END IF;
                IF v_try >= 20 THEN
                    INSERT INTO lc_log VALUES (v_kind, 'gave_up_merge', v_try, 0);
                    RETURN 'gave_up';
                END IF;
            WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
                IF v_rr THEN
                    RAISE;
                END IF;
                IF v_try >= 20 THEN
                    INSERT INTO lc_log VALUES (v_kind, 'gave_up_locks', v_try, 0);
                    RETURN 'gave_up';
                END IF;
                PERFORM pg_sleep(0.005 * v_try);
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL, v_ctx = PG_EXCEPTION_CONTEXT;
                RETURN lc_unexpected(v_kind, v_side, v_state, v_msg, v_detail, v_ctx);
        END;
    END LOOP;
END $$;
ALTER FUNCTION lc_authority() OWNER TO soak_owner;
ALTER FUNCTION lc_pick(text, float8) OWNER TO soak_owner;
ALTER FUNCTION lc_apply(text, text, float8, float8, int) OWNER TO soak_owner;
ALTER FUNCTION lc_unexpected(text, text, text, text, text, text) OWNER TO soak_owner;
ALTER FUNCTION lc_op(int, float8, float8, int) OWNER TO soak_owner;
