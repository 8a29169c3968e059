-- Shared helpers for the regression suite (runs first).
CREATE EXTENSION IF NOT EXISTS softmig;
CREATE SCHEMA IF NOT EXISTS t;

-- t.err(sql): run a statement that must fail; return its SQLSTATE, message,
-- detail and hint so tests check the exact error, not only that one happened.
CREATE FUNCTION t.err(sql text, OUT state text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END $$;

-- t.counts(): what the softmig catalog holds, to prove failed calls left nothing
CREATE FUNCTION t.counts(OUT migrations bigint, OUT mappings bigint, OUT history bigint, OUT triggers bigint)
LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM softmig.migrations), (SELECT count(*) FROM softmig.mappings),
           (SELECT count(*) FROM softmig.history_log),
           (SELECT count(*) FROM pg_trigger WHERE tgname ~ '^softmig_[0-9]+_')
$$;

-- t.explain_analyze(sql): EXPLAIN (ANALYZE) of a statement without what
-- depends on the PostgreSQL version or the cache state: costs, timing,
-- buffers, index search counts (printed from 18) and the row counts'
-- decimals (18 prints rows=1.00)
CREATE FUNCTION t.explain_analyze(sql text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) ' || sql LOOP
        CONTINUE WHEN line ~ '^ *Index Searches: ';
        RETURN NEXT regexp_replace(line, '(rows=[0-9]+)\.[0-9]+', '\1', 'g');
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA t TO PUBLIC;
SELECT * FROM t.err('SELECT 1/0');
SELECT * FROM t.counts();
