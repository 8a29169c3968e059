#!/usr/bin/env perl
# test/soak/soak.pl -- randomized soak of softmig (issue 9), run by `make soak`
# through test/soak/run.sh against a throwaway cluster (PG* environment
# variables).  See test/soak/README.md.
#
# Clients (pgbench, custom script) apply domain operations under operation
# keys to whichever table has the write authority (catching SM001 and
# switching side): creates, deposits, two-row transfers, key changes
# (rekeys) and deletes, with injected duplicates (replay after success,
# replay after a rolled-back attempt, a pool of keys shared and raced by all
# clients), transactions applying two operations under two keys, and
# operations in REPEATABLE READ transactions (retried whole by pgbench).  A controller meanwhile, at random, advances and rolls back the
# migration between mirrored, new_write and new_read, quarantines entities
# (after damaging their projection row by an override) and releases them,
# and "touches" projection rows by owner overrides.  At quiescent points
# (both tables locked in SHARE mode: new writers wait, in-flight ones are
# waited for) a differential oracle in plain SQL over the mapping checks:
#
#   mapping   legacy seen through the forward mapping = target (EXCEPT ALL
#             both ways), quarantined entities excluded;
#   entities  on each side, the entity set and every entity's balance and
#             version are exactly what the committed operations' effects
#             (an application log written in the same transactions) say:
#             no operation lost, none applied twice, deletes stay deleted;
#   ledger    the keys in softmig.operations are exactly the operations the
#             clients were told were applied, each once; every replay
#             refused as a duplicate names an applied key;
#   state     softmig.migrations holds the state the controller set, and
#             both tables carry the four enabled softmig triggers;
#   parity    softmig.parity agrees with the oracle (a cross-check of
#             softmig's own tool, not part of the oracle).
#
# Exits 0 when every check passed, 1 on any inconsistency, 2 on a harness
# problem (pgbench client aborted, setup failed).
use strict;
use warnings;

use IPC::Run;
use Time::HiRes qw(time sleep);
use File::Temp qw(tempdir);
use POSIX qw(strftime);

my $SECONDS = $ENV{SOAK_SECONDS} // 180;
my $CLIENTS = $ENV{SOAK_CLIENTS} // 4;
my $ROWS = $ENV{SOAK_ROWS} // 20000;
my $CHECK_EVERY = $ENV{SOAK_CHECK_EVERY} // 8;
my $SEED = $ENV{SOAK_SEED} // (time() ^ $$) % 1000000;
my $MAX_QUARANTINED = 3;
# SOAK_SABOTAGE=1: halfway through, the controller corrupts one projection
# row by an override without quarantining it; the next check must fail (a
# self-test of the oracle: the run must end with RESULT: FAIL).
my $SABOTAGE = $ENV{SOAK_SABOTAGE} // 0;

srand($SEED);
$| = 1;

my $tmp = tempdir('softmig-soak-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub say { printf "[%s] %s\n", strftime('%H:%M:%S', localtime), join('', @_) }

# ---------------------------------------------------------------------------
# psql, one connection per call
# ---------------------------------------------------------------------------

# Runs a script; returns (ok, stdout, stderr, sqlstate of the error).
sub psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose' ],
		'<', \$sql, '>', \$out, '2>', \$err);
	chomp $out;
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($ok ? 1 : 0, $out, $err, $state // '');
}

sub psql_safe
{
	my ($sql) = @_;
	my ($ok, $out, $err) = psql($sql);
	die "soak: query failed:\n$sql\n$err" unless $ok;
	return $out;
}

# ---------------------------------------------------------------------------
# Schema, workload functions
# ---------------------------------------------------------------------------

say "soak: seed $SEED, $SECONDS s, $CLIENTS clients, $ROWS entities, check every ~$CHECK_EVERY s";

# a database of its own, made afresh (everything below connects to it)
my $DB = $ENV{SOAK_DATABASE} // 'softmig_soak';
psql_safe(qq{DROP DATABASE IF EXISTS "$DB"});
psql_safe(qq{CREATE DATABASE "$DB"});
$ENV{PGDATABASE} = $DB;

psql_safe(<<"SQL");
CREATE EXTENSION softmig;
CREATE SEQUENCE soak_ids START 1000001;
CREATE SEQUENCE soak_eids START 1000001;
-- legacy: cents are not a thing yet, notes are lower case
CREATE TABLE legacy_acct (id bigint PRIMARY KEY, eid bigint NOT NULL, owner text NOT NULL,
                          balance int NOT NULL, note text, version int NOT NULL);
-- target: renamed and converted columns, and a column legacy does not have
CREATE TABLE acct (acct_id bigint PRIMARY KEY, eid bigint NOT NULL, owner_name text NOT NULL,
                   balance_cents bigint NOT NULL, note_uc text, version int NOT NULL,
                   created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO legacy_acct SELECT g, g, 'o' || (g % 97), 0, 'n' || g, 0 FROM generate_series(1, $ROWS) g;

-- the application's log, written in the same transaction as the operation:
-- one row per attempt that committed, one effect row per entity changed
-- entities are picked by their stable identity (eid has no holes but deletes)
CREATE INDEX ON legacy_acct (eid);
CREATE INDEX ON acct (eid);

CREATE TABLE soak_log (key text NOT NULL, kind text NOT NULL, outcome text NOT NULL,
                       side text NOT NULL, switches int NOT NULL, effects int NOT NULL,
                       at timestamptz NOT NULL DEFAULT clock_timestamp(), message text);
CREATE TABLE soak_effects (key text NOT NULL, eid bigint NOT NULL, delta int NOT NULL,
                           bump int NOT NULL, kind text NOT NULL);
CREATE INDEX ON soak_effects (eid);

SELECT softmig.create_migration('soak', 'legacy_acct', 'acct',
    forward  => '{"acct_id": "id", "owner_name": "upper(owner)", "balance_cents": "balance::bigint * 100", "note_uc": "upper(note)"}',
    backward => '{"id": "acct_id", "owner": "lower(owner_name)", "balance": "(balance_cents / 100)::int", "note": "lower(note_uc)"}',
    options  => '{"lock_timeout": "30s"}');
SELECT softmig.advance('soak');
ANALYZE legacy_acct;
SQL
psql_safe(q{CALL softmig.backfill('soak', batch_size => 5000)});
die "soak: backfill not done\n"
  unless psql_safe(q{SELECT softmig.status('soak')->>'backfill_done'}) eq 'true';

# the key of an existing entity, picked by a random point in [0, 1) of the
# entity identity space: the initial entities 1..ROWS, then the created ones
# (eids are never reused or moved, so only deletes leave holes); one pick in
# ten goes to a hot spot
psql_safe(<<"SQL");
CREATE OR REPLACE FUNCTION soak_pick(p_side text, p_r float8) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
    v_hi bigint := (SELECT last_value FROM soak_eids);
    v_x bigint;
    v_k bigint;
BEGIN
    IF p_r < 0.1 THEN
        -- a hot spot: one pick in ten goes to the first 50 entities, so
        -- writers collide (row locks, deadlocks, serialization failures)
        v_x := 1 + floor(p_r * 500);
    ELSE
        v_x := floor((p_r - 0.1) / 0.9 * ($ROWS + greatest(v_hi - 1000000, 0)));
        v_x := CASE WHEN v_x < $ROWS THEN 1 + v_x ELSE 1000001 + v_x - $ROWS END;
    END IF;
    IF p_side = 'legacy' THEN
        SELECT id INTO v_k FROM legacy_acct WHERE eid >= v_x ORDER BY eid LIMIT 1;
        IF v_k IS NULL THEN SELECT id INTO v_k FROM legacy_acct ORDER BY eid LIMIT 1; END IF;
    ELSE
        SELECT acct_id INTO v_k FROM acct WHERE eid >= v_x ORDER BY eid LIMIT 1;
        IF v_k IS NULL THEN SELECT acct_id INTO v_k FROM acct ORDER BY eid LIMIT 1; END IF;
    END IF;
    RETURN v_k;
END \$\$;
SQL

psql_safe(<<'SQL');
-- where the application writes: the table with the write authority
CREATE OR REPLACE FUNCTION soak_authority() RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN softmig.state('soak'::text)::text IN ('legacy', 'mirrored') THEN 'legacy' ELSE 'new' END
$$;

-- one operation on one side; returns the number of entities changed and
-- logs each change's effect in the same statement
CREATE OR REPLACE FUNCTION soak_apply(p_side text, p_kind text, p_key text, p_d int,
                                      p_r1 float8, p_r2 float8) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    a bigint := soak_pick(p_side, p_r1);
    b bigint := soak_pick(p_side, p_r2);
    n int;
BEGIN
    IF p_side = 'legacy' THEN
        CASE p_kind
        WHEN 'create' THEN
            WITH w AS (INSERT INTO legacy_acct VALUES (nextval('soak_ids'), nextval('soak_eids'),
                           'c' || (p_d % 7), p_d, 'created ' || p_key, 1) RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, p_d, 1, p_kind FROM w;
        WHEN 'deposit' THEN
            WITH w AS (UPDATE legacy_acct SET balance = balance + p_d, version = version + 1,
                                              note = 'deposit ' || p_key WHERE id = a RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, p_d, 1, p_kind FROM w;
        WHEN 'transfer' THEN
            WITH w AS (UPDATE legacy_acct SET balance = balance + CASE WHEN id = a THEN -p_d ELSE p_d END,
                                              version = version + 1
                        WHERE id IN (a, b) RETURNING eid, CASE WHEN id = a THEN -p_d ELSE p_d END AS d)
            INSERT INTO soak_effects SELECT p_key, eid, d, 1, p_kind FROM w;
        WHEN 'rekey' THEN
            WITH w AS (UPDATE legacy_acct SET id = nextval('soak_ids'), version = version + 1
                        WHERE id = a RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, 0, 1, p_kind FROM w;
        WHEN 'delete' THEN
            WITH w AS (DELETE FROM legacy_acct WHERE id = a RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, 0, 0, p_kind FROM w;
        END CASE;
    ELSE
        CASE p_kind
        WHEN 'create' THEN
            WITH w AS (INSERT INTO acct (acct_id, eid, owner_name, balance_cents, note_uc, version)
                       VALUES (nextval('soak_ids'), nextval('soak_eids'), 'C' || (p_d % 7), p_d * 100,
                               upper('created ' || p_key), 1) RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, p_d, 1, p_kind FROM w;
        WHEN 'deposit' THEN
            WITH w AS (UPDATE acct SET balance_cents = balance_cents + p_d * 100, version = version + 1,
                                       note_uc = upper('deposit ' || p_key) WHERE acct_id = a RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, p_d, 1, p_kind FROM w;
        WHEN 'transfer' THEN
            WITH w AS (UPDATE acct SET balance_cents = balance_cents + 100 * CASE WHEN acct_id = a THEN -p_d ELSE p_d END,
                                       version = version + 1
                        WHERE acct_id IN (a, b) RETURNING eid, CASE WHEN acct_id = a THEN -p_d ELSE p_d END AS d)
            INSERT INTO soak_effects SELECT p_key, eid, d, 1, p_kind FROM w;
        WHEN 'rekey' THEN
            WITH w AS (UPDATE acct SET acct_id = nextval('soak_ids'), version = version + 1
                        WHERE acct_id = a RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, 0, 1, p_kind FROM w;
        WHEN 'delete' THEN
            WITH w AS (DELETE FROM acct WHERE acct_id = a RETURNING eid)
            INSERT INTO soak_effects SELECT p_key, eid, 0, 0, p_kind FROM w;
        END CASE;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- one domain operation under its key.  What it does (kind, amount, which
-- entities) is derived from the key, so a replay is the same operation.
-- SM001: the authority moved, write the other table; 23505 from the ledger:
-- already applied; SM005: the entity is quarantined, not applied; deadlocks
-- are retried.  Anything else aborts the pgbench client (a soak failure).
CREATE OR REPLACE FUNCTION soak_op(p_key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    h text := md5(p_key);
    v_sel int := ('x' || substr(h, 1, 4))::bit(16)::int % 100;
    v_d int := 1 + ('x' || substr(h, 5, 4))::bit(16)::int % 500;
    v_r1 float8 := ('x' || substr(h, 9, 6))::bit(24)::int / 16777216.0;
    v_r2 float8 := ('x' || substr(h, 15, 6))::bit(24)::int / 16777216.0;
    v_kind text := CASE WHEN v_sel < 15 THEN 'create' WHEN v_sel < 55 THEN 'deposit'
                        WHEN v_sel < 75 THEN 'transfer' WHEN v_sel < 90 THEN 'rekey' ELSE 'delete' END;
    v_side text := soak_authority();
    v_switches int := 0;
    v_retries int := 0;
    v_n int;
    v_msg text;
BEGIN
    PERFORM set_config('softmig.operation_key', p_key, true);
    LOOP
        BEGIN
            v_n := soak_apply(v_side, v_kind, p_key, v_d, v_r1, v_r2);
            INSERT INTO soak_log (key, kind, outcome, side, switches, effects)
            VALUES (p_key, v_kind, 'applied', v_side, v_switches, v_n);
            RETURN 'applied';
        EXCEPTION
            WHEN SQLSTATE 'SM001' THEN
                v_switches := v_switches + 1;
                IF v_switches > 8 THEN RAISE; END IF;
                v_side := CASE v_side WHEN 'legacy' THEN 'new' ELSE 'legacy' END;
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
                IF v_msg NOT LIKE 'operation key %' THEN RAISE; END IF;
                INSERT INTO soak_log (key, kind, outcome, side, switches, effects)
                VALUES (p_key, v_kind, 'duplicate', v_side, v_switches, 0);
                RETURN 'duplicate';
            WHEN SQLSTATE 'SM005' THEN
                GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
                INSERT INTO soak_log (key, kind, outcome, side, switches, effects, message)
                VALUES (p_key, v_kind, 'quarantined', v_side, v_switches, 0, v_msg);
                RETURN 'quarantined';
            WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
                -- a REPEATABLE READ transaction cannot retry in place (its
                -- snapshot is fixed): pgbench retries it whole (--max-tries)
                IF current_setting('transaction_isolation') <> 'read committed' THEN RAISE; END IF;
                v_retries := v_retries + 1;
                IF v_retries > 20 THEN RAISE; END IF;
                PERFORM pg_sleep(0.01 * v_retries);
        END;
    END LOOP;
END $$;
SQL


my $script = "$tmp/soak.pgbench";
open(my $fh, '>', $script) or die "soak: cannot write $script: $!";
print $fh <<'PGBENCH';
\set r random(1, 100)
\set n random(1, 1000000000000)
\set p random(1, 400)
\if :r <= 10
SELECT soak_op('pool-' || :p);
\elif :r <= 20
BEGIN;
SELECT soak_op('c' || :client_id || '-' || :n);
ROLLBACK;
SELECT soak_op('c' || :client_id || '-' || :n);
\elif :r <= 35
SELECT soak_op('c' || :client_id || '-' || :n);
SELECT soak_op('c' || :client_id || '-' || :n);
\elif :r <= 42
BEGIN;
SELECT soak_op('c' || :client_id || '-' || :n || 'a');
SELECT soak_op('c' || :client_id || '-' || :n || 'b');
COMMIT;
\elif :r <= 52
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT soak_op('c' || :client_id || '-' || :n);
COMMIT;
\else
SELECT soak_op('c' || :client_id || '-' || :n);
\endif
PGBENCH
close($fh);

# ---------------------------------------------------------------------------
# Controller
# ---------------------------------------------------------------------------

my $state = psql_safe(q{SELECT state::text FROM softmig.migrations WHERE name = 'soak'});
my %quarantined;    # legacy key id => 1
my %count = map { $_ => 0 } qw(state_changes advances rollbacks lock_timeouts guard_refusals backfills
  quarantines releases damage_overrides touch_overrides touch_skipped checks_passed checks_failed
  parity_agree parity_disagree);
my %transitions;
my @failures;

sub authority { return $state eq 'mirrored' ? 'legacy' : 'new' }

# both tables, authoritative first (the order writers lock them in)
sub tables_in_lock_order
{
	return authority() eq 'legacy' ? ('legacy_acct', 'acct') : ('acct', 'legacy_acct');
}

# a random point in [0, 1) for soak_pick (seeded, unlike SQL's random())
sub random_point { return sprintf('%.6f', rand()) }

sub change_state
{
	my @moves;
	if ($state eq 'mirrored') { @moves = ([ 'advance', 'new_write' ]) }
	elsif ($state eq 'new_write') { @moves = ([ 'advance', 'new_read' ], [ 'rollback', 'mirrored' ]) }
	elsif ($state eq 'new_read') { @moves = ([ 'rollback', 'new_write' ]) }
	my ($how, $to) = @{ $moves[ int(rand(@moves)) ] };
	my $sql = $how eq 'advance'
	  ? qq{SELECT softmig.advance('soak', '$to', reason => 'soak')}
	  : qq{SELECT softmig.rollback('soak', 'soak')};
	for my $try (1 .. 3)
	{
		my ($ok, $out, $err, $code) = psql($sql);
		if ($ok)
		{
			die "soak: $how returned '$out', expected $to\n" unless $out eq $to;
			$transitions{"$state -> $to"}++;
			$count{state_changes}++;
			$count{ $how eq 'advance' ? 'advances' : 'rollbacks' }++;
			say "controller: $how $state -> $to";
			$state = $to;
			return;
		}
		if ($code eq '55P03')
		{
			$count{lock_timeouts}++;
			next;
		}
		if ($code eq '55000' && $err =~ /backfill is not done/)
		{
			# a rollback to mirrored may require a new backfill before the
			# guard lets the write authority move again
			$count{guard_refusals}++;
			say "controller: advance refused (backfill not done); running the backfill";
			psql_safe(q{CALL softmig.backfill('soak', batch_size => 5000)});
			$count{backfills}++;
			next;
		}
		if ($code eq '55000')
		{
			$count{guard_refusals}++;
			my ($msg) = $err =~ /ERROR:\s+\S+\s+(.*)/;
			say "controller: $how to $to refused: $msg";
			push @failures, "guard refused $how $state -> $to: $msg" if $err =~ /parity|invariant/;
			return;
		}
		die "soak: $how $state -> $to failed unexpectedly:\n$err";
	}
}

# Damage the projection row of an entity by an owner override, then
# quarantine it, in one transaction with the authoritative row locked.
sub quarantine_one
{
	return if keys(%quarantined) >= $MAX_QUARANTINED;
	my $x = random_point();
	my ($auth_tbl, $auth_key, $auth_side, $other_upd) = authority() eq 'legacy'
	  ? ('legacy_acct', 'id', 'legacy', q{UPDATE acct SET note_uc = 'DAMAGED BY SOAK' WHERE acct_id = :k})
	  : ('acct', 'acct_id', 'new', q{UPDATE legacy_acct SET note = 'damaged by soak' WHERE id = :k});
	my ($ok, $out, $err, $code) = psql(<<"SQL");
BEGIN;
SELECT $auth_key AS k FROM $auth_tbl WHERE $auth_key = (SELECT soak_pick('$auth_side', $x)) FOR UPDATE \\gset
SET LOCAL softmig.override = 'soak: damage a projection row before quarantining it';
$other_upd;
SELECT softmig.quarantine('soak', jsonb_build_object('id', :k), 'soak');
COMMIT;
SELECT :k;
SQL
	if (!$ok)
	{
		# the picked entity may already be quarantined, or the state moved
		return if $code eq 'SM005' || $code eq 'SM001' || $code eq '42710' || $code eq '40P01'
		  || $err =~ /no rows returned for \\gset/;    # the entity went away meanwhile
		die "soak: quarantine failed:\n$err";
	}
	$quarantined{$out} = 1;
	$count{quarantines}++;
	$count{damage_overrides}++;
}

sub release_one
{
	my @k = sort keys %quarantined;
	return unless @k;
	my $k = $k[ int(rand(@k)) ];
	my ($ok, $out, $err, $code) = psql(qq{SELECT softmig.release('soak', '{"id": $k}')});
	if (!$ok)
	{
		return if $code eq '40P01' || $code eq '55P03';
		die "soak: release of $k failed:\n$err";
	}
	delete $quarantined{$k};
	$count{releases}++;
}

# An owner override that rewrites an entity's projection row from its
# authoritative row (locked FOR SHARE), i.e. a manual repair that must not
# disturb anything.
sub touch_one
{
	my $x = random_point();
	my $sql = authority() eq 'legacy'
	  ? <<"SQL"
BEGIN;
SELECT id AS k FROM legacy_acct WHERE id = (SELECT soak_pick('legacy', $x)) FOR SHARE \\gset
SET LOCAL softmig.override = 'soak: touch up a projection row';
UPDATE acct t SET eid = l.eid, owner_name = upper(l.owner), balance_cents = l.balance::bigint * 100,
       note_uc = upper(l.note), version = l.version
  FROM legacy_acct l WHERE l.id = :k AND t.acct_id = :k;
COMMIT;
SQL
	  : <<"SQL";
BEGIN;
SELECT acct_id AS k FROM acct WHERE acct_id = (SELECT soak_pick('new', $x)) FOR SHARE \\gset
SET LOCAL softmig.override = 'soak: touch up a projection row';
UPDATE legacy_acct l SET eid = t.eid, owner = lower(t.owner_name), balance = (t.balance_cents / 100)::int,
       note = lower(t.note_uc), version = t.version
  FROM acct t WHERE t.acct_id = :k AND l.id = :k;
COMMIT;
SQL
	my ($ok, $out, $err, $code) = psql($sql);
	if (!$ok)
	{
		if ($code eq 'SM005' || $code eq 'SM001' || $code eq '40P01' || $err =~ /no rows returned for \\gset/)
		{
			$count{touch_skipped}++;
			return;
		}
		die "soak: override touch failed:\n$err";
	}
	$count{touch_overrides}++;
}

sub sabotage
{
	my $x = random_point();
	my $sql = authority() eq 'legacy'
	  ? qq{BEGIN; SET LOCAL softmig.override = 'soak: sabotage';
	       UPDATE acct SET balance_cents = balance_cents + 100
	        WHERE acct_id = (SELECT soak_pick('new', $x)) RETURNING acct_id; COMMIT;}
	  : qq{BEGIN; SET LOCAL softmig.override = 'soak: sabotage';
	       UPDATE legacy_acct SET balance = balance + 1
	        WHERE id = (SELECT soak_pick('legacy', $x)) RETURNING id; COMMIT;};
	my ($ok, $out, $err) = psql($sql);
	say $ok ? "controller: SABOTAGE: corrupted the projection row of entity $out without quarantine"
	        : "controller: sabotage failed: $err";
}

# ---------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------

sub quiescent_check
{
	my ($label) = @_;
	my $q = join(',', sort keys %quarantined);
	my ($t1, $t2) = tables_in_lock_order();
	my $t0 = time();
	my ($ok, $out, $err) = psql(<<"SQL");
BEGIN;
SET LOCAL lock_timeout = '120s';
-- quiescent: writers wait, in-flight writers are waited for
LOCK TABLE $t1, $t2 IN SHARE MODE;
CREATE TEMP TABLE q ON COMMIT DROP AS SELECT unnest('{$q}'::bigint[]) AS id;
CREATE TEMP TABLE qe ON COMMIT DROP AS
    SELECT eid FROM legacy_acct WHERE id IN (SELECT id FROM q)
    UNION SELECT eid FROM acct WHERE acct_id IN (SELECT id FROM q);
-- what the committed operations say every entity must be
CREATE TEMP TABLE expected ON COMMIT DROP AS
    WITH eff AS (SELECT eid, sum(delta) AS d, sum(bump) AS b, bool_or(kind = 'delete') AS del,
                        bool_or(kind = 'create') AS cr, count(*) FILTER (WHERE kind = 'delete') AS ndel
                   FROM soak_effects GROUP BY eid)
    SELECT e.eid, coalesce(eff.d, 0) AS balance, coalesce(eff.b, 0) AS version
      FROM (SELECT generate_series(1, $ROWS)::bigint AS eid UNION ALL SELECT eid FROM eff WHERE cr) e
      LEFT JOIN eff USING (eid)
     WHERE NOT coalesce(eff.del, false)
       AND e.eid NOT IN (SELECT eid FROM qe);

SELECT 'state|' || state::text FROM softmig.migrations WHERE name = 'soak';
SELECT 'triggers|' ||
       (SELECT count(*) FROM pg_trigger t, softmig.migrations m
         WHERE m.name = 'soak' AND t.tgrelid = 'legacy_acct'::regclass AND t.tgenabled IN ('O', 'A')
           AND t.tgname IN ('softmig_' || m.id || '_guard', 'softmig_' || m.id || '_ins',
                            'softmig_' || m.id || '_upd', 'softmig_' || m.id || '_del')) || '/' ||
       (SELECT count(*) FROM pg_trigger t, softmig.migrations m
         WHERE m.name = 'soak' AND t.tgrelid = 'acct'::regclass AND t.tgenabled IN ('O', 'A')
           AND t.tgname IN ('softmig_' || m.id || '_guard', 'softmig_' || m.id || '_ins',
                            'softmig_' || m.id || '_upd', 'softmig_' || m.id || '_del'));
-- legacy through the forward mapping vs the target
SELECT 'mapping|' || count(*) FROM (
    (SELECT id, eid, upper(owner), balance::bigint * 100, upper(note), version
       FROM legacy_acct WHERE id NOT IN (SELECT id FROM q)
     EXCEPT ALL
     SELECT acct_id, eid, owner_name, balance_cents, note_uc, version
       FROM acct WHERE acct_id NOT IN (SELECT id FROM q))
    UNION ALL
    (SELECT acct_id, eid, owner_name, balance_cents, note_uc, version
       FROM acct WHERE acct_id NOT IN (SELECT id FROM q)
     EXCEPT ALL
     SELECT id, eid, upper(owner), balance::bigint * 100, upper(note), version
       FROM legacy_acct WHERE id NOT IN (SELECT id FROM q))) d;
-- each side holds exactly the expected entities with the expected balance and version
SELECT 'entities_legacy|' || count(*) FROM (
    (SELECT eid, balance::bigint, version::bigint FROM legacy_acct WHERE eid NOT IN (SELECT eid FROM qe)
     EXCEPT ALL SELECT eid, balance, version FROM expected)
    UNION ALL
    (SELECT eid, balance, version FROM expected
     EXCEPT ALL SELECT eid, balance::bigint, version::bigint FROM legacy_acct WHERE eid NOT IN (SELECT eid FROM qe))) d;
SELECT 'entities_target|' || count(*) FROM (
    (SELECT eid, balance_cents / 100, version::bigint FROM acct WHERE eid NOT IN (SELECT eid FROM qe)
     EXCEPT ALL SELECT eid, balance, version FROM expected)
    UNION ALL
    (SELECT eid, balance, version FROM expected
     EXCEPT ALL SELECT eid, balance_cents / 100, version::bigint FROM acct WHERE eid NOT IN (SELECT eid FROM qe))) d;
SELECT 'deleted_twice|' || count(*) FROM (SELECT eid FROM soak_effects WHERE kind = 'delete'
                                          GROUP BY eid HAVING count(*) > 1) d;
-- the ledger and what the clients were told
SELECT 'applied_twice|' || count(*) FROM (SELECT key FROM soak_log WHERE outcome = 'applied'
                                          GROUP BY key HAVING count(*) > 1) d;
SELECT 'ledger_vs_applied|' || count(*) FROM
    (SELECT o.key FROM softmig.operations o JOIN softmig.migrations m ON m.id = o.migration_id
      WHERE m.name = 'soak') o
    FULL JOIN (SELECT DISTINCT key FROM soak_log WHERE outcome = 'applied') a ON a.key = o.key
  WHERE o.key IS NULL OR a.key IS NULL;
SELECT 'duplicate_unknown|' || count(*) FROM soak_log s
 WHERE s.outcome = 'duplicate'
   AND NOT EXISTS (SELECT 1 FROM soak_log a WHERE a.key = s.key AND a.outcome = 'applied');
SELECT 'effects_unlogged|' || count(*) FROM soak_effects e
 WHERE NOT EXISTS (SELECT 1 FROM soak_log a WHERE a.key = e.key AND a.outcome = 'applied');
-- softmig's own parity, as a cross-check of the tool
SELECT 'parity|' || count(*) FROM softmig.parity('soak');
SELECT 'rows|' || (SELECT count(*) FROM legacy_acct) || '/' || (SELECT count(*) FROM acct);
COMMIT;
SQL
	my $elapsed = time() - $t0;
	if (!$ok)
	{
		push @failures, "$label: the check itself failed: $err";
		$count{checks_failed}++;
		say "check $label: FAILED to run: $err";
		return;
	}
	my %r = map { split /\|/, $_, 2 } split /\n/, $out;
	my @bad;
	push @bad, "state is $r{state}, controller set $state" unless ($r{state} // '') eq $state;
	push @bad, "triggers $r{triggers}, expected 4/4" unless ($r{triggers} // '') eq '4/4';
	for my $k (qw(mapping entities_legacy entities_target deleted_twice applied_twice
		ledger_vs_applied duplicate_unknown effects_unlogged))
	{
		push @bad, "$k: $r{$k} differences" unless defined $r{$k} && $r{$k} eq '0';
	}
	my $oracle_clean = ($r{mapping} // '') eq '0';
	my $parity_clean = ($r{parity} // '') eq '0';
	if ($oracle_clean == $parity_clean) { $count{parity_agree}++ }
	else
	{
		$count{parity_disagree}++;
		push @bad, "softmig.parity reports $r{parity} differences, the oracle $r{mapping}";
	}
	if (@bad)
	{
		$count{checks_failed}++;
		push @failures, map { "$label ($state): $_" } @bad;
		say "check $label: FAILED in $state: ", join('; ', @bad);
		dump_differences($label);
	}
	else
	{
		$count{checks_passed}++;
		say sprintf("check %s: ok (%s, rows %s, %d quarantined, %.2f s)",
			$label, $state, $r{rows}, scalar(keys %quarantined), $elapsed);
	}
}

sub dump_differences
{
	my ($label) = @_;
	my $q = join(',', sort keys %quarantined);
	my ($ok, $out) = psql(<<"SQL");
SELECT 'legacy-only ' || d::text FROM (
    SELECT id, eid, upper(owner), balance::bigint * 100, upper(note), version
      FROM legacy_acct WHERE id <> ALL ('{$q}'::bigint[])
    EXCEPT ALL
    SELECT acct_id, eid, owner_name, balance_cents, note_uc, version FROM acct) d LIMIT 10;
SELECT 'target-only ' || d::text FROM (
    SELECT acct_id, eid, owner_name, balance_cents, note_uc, version
      FROM acct WHERE acct_id <> ALL ('{$q}'::bigint[])
    EXCEPT ALL
    SELECT id, eid, upper(owner), balance::bigint * 100, upper(note), version FROM legacy_acct) d LIMIT 10;
SQL
	say "  $_" for split /\n/, $out // '';
}

# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------

quiescent_check('initial');

my ($bench_out, $bench_err) = ('', '');
my $pgbench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', $CLIENTS, '-j', $CLIENTS, '-T', $SECONDS, '--max-tries', 50,
		'--random-seed', $SEED, '-f', $script
	],
	'>', \$bench_out, '2>', \$bench_err);

my $start = time();
my $sabotaged = 0;
my $next_check = $start + $CHECK_EVERY * (0.5 + rand());
my $n_check = 0;
while ($pgbench->pumpable && time() < $start + $SECONDS)
{
	sleep(0.2 + rand(0.8));
	$pgbench->pump_nb;
	last if time() >= $start + $SECONDS - 0.5;
	my $r = rand(100);
	if ($r < 30) { change_state() }
	elsif ($r < 45) { quarantine_one() }
	elsif ($r < 60) { release_one() }
	elsif ($r < 80) { touch_one() }
	if ($SABOTAGE && !$sabotaged && time() >= $start + $SECONDS / 2)
	{
		sabotage();
		$sabotaged = 1;
		$next_check = 0;    # check right away, before a client write heals it
	}
	if (time() >= $next_check)
	{
		quiescent_check('#' . ++$n_check);
		$next_check = time() + $CHECK_EVERY * (0.5 + rand());
	}
}
$pgbench->finish;
my $bench_rc = $pgbench->result(0);

# final checks: quiescent with quarantines, then everything released
quiescent_check('final');
release_one() while keys %quarantined;
quiescent_check('final, all released');

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

my $stats = psql_safe(<<'SQL');
SELECT outcome || '|' || count(*) FROM soak_log GROUP BY outcome ORDER BY outcome;
SELECT 'kind_' || kind || '|' || count(*) FROM soak_log WHERE outcome = 'applied' GROUP BY kind ORDER BY kind;
SELECT 'switches|' || coalesce(sum(switches), 0) FROM soak_log;
SELECT 'sides|' || string_agg(side || '=' || n, ',' ORDER BY side)
  FROM (SELECT side, count(*) n FROM soak_log WHERE outcome = 'applied' GROUP BY side) s;
SELECT 'overrides_in_history|' || count(*) FROM softmig.history('soak') WHERE action = 'override';
SELECT 'history_state_changes|' || count(*) FROM softmig.history('soak') WHERE action IN ('advance', 'rollback');
SELECT 'ledger|' || count(*) FROM softmig.operations o JOIN softmig.migrations m ON m.id = o.migration_id
 WHERE m.name = 'soak';
SELECT 'ledger_sides|' || string_agg(side::text || '=' || n, ',' ORDER BY side)
  FROM (SELECT o.side, count(*) n FROM softmig.operations o JOIN softmig.migrations m ON m.id = o.migration_id
         WHERE m.name = 'soak' GROUP BY o.side) s;
SELECT 'final_rows|' || (SELECT count(*) FROM legacy_acct) || '/' || (SELECT count(*) FROM acct);
SQL
my %s = map { split /\|/, $_, 2 } split /\n/, $stats;
my ($tps) = $bench_out =~ /tps = ([\d.]+)/;
my ($txns) = $bench_out =~ /number of transactions actually processed: (\d+)/;
my ($failed_tx) = $bench_out =~ /number of failed transactions: (\d+)/;
my ($retried_tx) = $bench_out =~ /number of transactions retried: (\d+)/;
push @failures, "pgbench: $failed_tx transactions failed even after retries" if ($failed_tx // 0) > 0;

if ($bench_rc != 0)
{
	push @failures, "pgbench exited $bench_rc (a client aborted on an unexpected error)";
}
push @failures, "history records $s{history_state_changes} state changes, the controller made $count{state_changes}"
  unless $s{history_state_changes} == $count{state_changes} + 1;    # + the initial advance

print "\n==================== softmig soak summary ====================\n";
printf "seed %s, %d s, %d clients, %d initial entities\n", $SEED, $SECONDS, $CLIENTS, $ROWS;
printf "pgbench: %s transactions (%s failed, %s retried whole after a serialization failure or deadlock), %s tps, exit %d\n",
  $txns // '?', $failed_tx // '?', $retried_tx // 0, $tps // '?', $bench_rc;
printf "operations: %d applied (%s), %d duplicates refused, %d refused on quarantined entities\n",
  $s{applied} // 0,
  join(', ', map { my $k = $_; $k =~ s/^kind_//; "$k $s{$_}" } sort grep { /^kind_/ } keys %s),
  $s{duplicate} // 0, $s{quarantined} // 0;
printf "applied on: %s; SM001 side switches: %d; ledger: %d keys (%s)\n",
  $s{sides} // '-', $s{switches} // 0, $s{ledger} // 0, $s{ledger_sides} // '-';
printf "state changes: %d (%s); lock timeouts retried: %d; guard refusals: %d; backfills re-run: %d\n",
  $count{state_changes},
  join(', ', map { "$_: $transitions{$_}" } sort keys %transitions),
  $count{lock_timeouts}, $count{guard_refusals}, $count{backfills};
printf "quarantines: %d, releases: %d; overrides: %d damage + %d touch (%d skipped), %d override rows in history\n",
  $count{quarantines}, $count{releases}, $count{damage_overrides}, $count{touch_overrides},
  $count{touch_skipped}, $s{overrides_in_history} // 0;
printf "quiescent checks: %d passed, %d failed; softmig.parity agreed with the oracle %d/%d times\n",
  $count{checks_passed}, $count{checks_failed}, $count{parity_agree},
  $count{parity_agree} + $count{parity_disagree};
printf "final state %s, rows legacy/target %s\n", $state, $s{final_rows} // '?';
if (@failures)
{
	print "FAILURES:\n";
	print "  - $_\n" for @failures;
	print "pgbench stderr (tail):\n", join("\n", (split /\n/, $bench_err)[-20 .. -1]), "\n"
	  if $bench_rc != 0 && $bench_err ne '';
	print "RESULT: FAIL\n";
	exit 1;
}
print "RESULT: PASS\n";
exit 0;
