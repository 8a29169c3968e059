#!/usr/bin/env perl
# test/soak/lifecycle.pl -- the lifecycle soak of softmig: concurrent
# writers of every kind on both tables of two migrations while a controller
# walks the states forward and back and runs everything an operator would,
# with a differential oracle in plain SQL at every quiet point.  Run by
# `make soak` (test/soak/run.sh) for as long as asked, and for a minute by
# `make test` (test/t/120_lifecycle_soak.pl).  See test/soak/README.md.
#
# The server is the one in the PG* environment variables, connected to as a
# superuser; the soak creates (and first drops) its own database
# (SOAK_DATABASE, default softmig_lifecycle) and the roles soak_owner and
# soak_app.
#
# Writers (pgbench, SOAK_CLIENTS connections, as soak_app): lc_op() in
# test/soak/lifecycle.sql, in autocommit, two-operation and REPEATABLE READ
# transactions: inserts, updates, deletes, key changes across partitions,
# upserts (DO UPDATE, DO NOTHING), MERGE, COPY, a DELETE and re-INSERT in
# one statement, operation keys, statements of more than 2000 rows, writes
# of the children on both sides (ON DELETE/UPDATE CASCADE) and writes to
# the table without the write authority (must be refused).  Application
# triggers fire on both tables: a normalizer, an audit with transition
# tables, and a counter that writes the second migration (bstat) from
# inside the first one's statements and softmig's own writes.
#
# Controller (this script, seeded): every 0.1-0.6 s one action: advance
# (with and without force; the guards may refuse), rollback (to legacy
# too), backfill batches, parity and check, quarantine (after damaging the
# projection row by an override) and release, shadow disable and enable,
# override repairs, making the error invariant fail or pass, and DDL from a
# list (partitions created, attached empty and populated, detached,
# dropped, truncated; softmig's and the application's triggers disabled,
# switched to replica, dropped; columns added, dropped, renamed, retyped;
# indexes, rules, constraints, row security, owners, DROP TABLE), each
# accepted or refused; what is refused is counted.
#
# Quiet points (every SOAK_CHECK_EVERY s on average, and at the end): the
# controller takes the writers' gate exclusively (every writer transaction
# holds it shared), so no writer transaction is open; shadow writes are
# enabled again and an unfinished backfill completed (state mirrored); then
#   mapping   each managed migration's tables are equal through the
#             mapping: plain SQL, EXCEPT ALL both ways, quarantined
#             entities excluded; legacy's children equal the target's;
#   parity    softmig.parity agrees (a cross-check of softmig's tool);
#   health    every softmig trigger of every partition is there and
#             plainly enabled, no other transaction is open, no client
#             reported an unexpected error, the server log shows no crash,
#             assertion failure, PANIC or internal error (XX000) and the
#             postmaster did not restart.
# Every statement runs under statement_timeout (SOAK_STATEMENT_TIMEOUT) and
# the gate is taken under lock_timeout, so a hang ends as a failure.
#
# Exit 0 when everything held, 1 on a finding (listed under FAILURES), 2 on
# a harness problem.
use strict;
use warnings;

use IPC::Run;
use Time::HiRes qw(time sleep);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use POSIX qw(strftime);

my $SECONDS = $ENV{SOAK_SECONDS} // 600;
my $CLIENTS = $ENV{SOAK_CLIENTS} // 4;
my $ROWS = $ENV{SOAK_ROWS} // 20000;
my $CHECK_EVERY = $ENV{SOAK_CHECK_EVERY} // 10;
my $SEED = $ENV{SOAK_SEED} // (time() ^ $$) % 1000000;
my $DB = $ENV{SOAK_DATABASE} // 'softmig_lifecycle';
my $SERVER_LOG = $ENV{SOAK_SERVER_LOG};
my $TIMEOUT = $ENV{SOAK_STATEMENT_TIMEOUT} // '180s';
my $SABOTAGE = $ENV{SOAK_SABOTAGE} // 0;
my $sabotage_due = 0;    # the next quiet point changes one row first
my $sabotaged = 0;
my $BUCKETS = 200;
my $SPAN = 4000;    # ids per partition the controller makes ahead
my $MAX_QUARANTINED = 3;
my $GATE = 7301;

srand($SEED);
$| = 1;
my $tmp = tempdir('softmig-lifecycle-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $here = dirname(__FILE__);

sub say { printf "[%s] %s\n", strftime('%H:%M:%S', localtime), join('', @_) }

# ---------------------------------------------------------------------------
# psql, one connection per call, every statement under statement_timeout
# ---------------------------------------------------------------------------

# Runs a script; returns (ok, stdout, stderr, sqlstate of the error).
sub psql
{
	my ($sql, %o) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGOPTIONS} = "-c statement_timeout=$TIMEOUT" . ($o{lock_timeout} ? " -c lock_timeout=$o{lock_timeout}" : '');
	local $ENV{PGDATABASE} = $o{db} if $o{db};
	my $ok = IPC::Run::run(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose' ],
		'<', \$sql, '>', \$out, '2>', \$err);
	chomp $out;
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($ok ? 1 : 0, $out, $err, $state // '');
}

sub psql_safe
{
	my ($sql, %o) = @_;
	my ($ok, $out, $err) = psql($sql, %o);
	if (!$ok)
	{
		print "soak: query failed:\n$sql\n$err";
		exit 2;
	}
	return $out;
}

# the first line of an error, for the log
sub first_error
{
	my ($err) = @_;
	my ($line) = $err =~ /(ERROR:.*)/;
	return $line // (split /\n/, $err)[0] // '';
}

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

say "lifecycle soak: seed $SEED, $SECONDS s, $CLIENTS clients, $ROWS entities, quiet point every ~$CHECK_EVERY s";
say "replay with: SOAK_SEED=$SEED SOAK_SECONDS=$SECONDS SOAK_CLIENTS=$CLIENTS SOAK_ROWS=$ROWS SOAK_CHECK_EVERY=$CHECK_EVERY";

psql_safe(qq{DROP DATABASE IF EXISTS "$DB"}, db => 'postgres');
psql_safe(q{
	DROP ROLE IF EXISTS soak_app;
	DROP ROLE IF EXISTS soak_owner;
	CREATE ROLE soak_owner NOLOGIN;
	CREATE ROLE soak_app LOGIN;
	GRANT pg_execute_server_program TO soak_app;
}, db => 'postgres');
psql_safe(qq{CREATE DATABASE "$DB"}, db => 'postgres');
$ENV{PGDATABASE} = $DB;

my $schema = do { local (@ARGV, $/) = ("$here/lifecycle.sql"); <> };
$schema =~ s/\@ROWS\@/$ROWS/g;
$schema =~ s/\@BUCKETS\@/$BUCKETS/g;
$schema =~ s/\@SPAN\@/$SPAN/g;
psql_safe($schema);

my %mid = map { split /\|/ } split /\n/, psql_safe(q{SELECT name || '|' || id FROM softmig.migrations});
my $start_time = psql_safe(q{SELECT pg_postmaster_start_time()});
my $log_offset = (defined $SERVER_LOG && -f $SERVER_LOG) ? -s $SERVER_LOG : 0;

# ---------------------------------------------------------------------------
# The controller's model of the world
# ---------------------------------------------------------------------------

my @MIGRATIONS = qw(acct bstat);
my %state = map { $_ => 'legacy' } @MIGRATIONS;
my %shadow_off = map { $_ => 0 } @MIGRATIONS;
my %quarantined;    # acct key => 1
my %count;
my %transitions;
my %ddl;            # "kind outcome" => n
my @failures;
my $n_check = 0;

# partitions the controller made (side => [ [name, lo, hi] ... ]) and
# tables it detached (side => [ [name, lo, hi] ... ])
my %parent = (legacy => 'legacy_acct', target => 'acct');
my %parts = (legacy => [], target => []);
my %detached = (legacy => [], target => []);
my %next_lo = (legacy => 1000001 + 3 * $SPAN, target => 1000001 + 3 * $SPAN);
my %added_cols = (legacy_acct => [], acct => [], legacy_bstat => [], bstat => []);
my %app_trigger_off;    # "table trigger" => 1
my $far = 9_000_000_000_000;
my $uniq = 0;

sub authority_table
{
	my ($m) = @_;
	my ($l, $t) = $m eq 'acct' ? ('legacy_acct', 'acct') : ('legacy_bstat', 'bstat');
	return ($state{$m} eq 'legacy' || $state{$m} eq 'mirrored') ? ($l, $t) : ($t, $l);
}

sub managed { my ($m) = @_; return $state{$m} ne 'legacy' }

sub fail_now
{
	my ($what) = @_;
	push @failures, $what;
	say "FINDING: $what";
}

# an error of class XX is a finding wherever it happens
sub internal_error_check
{
	my ($what, $code, $err) = @_;
	fail_now("$what: internal error $code: " . first_error($err)) if $code =~ /^XX/;
}

sub set_ctl
{
	my ($set) = @_;
	psql_safe("UPDATE lc_ctl SET $set");
}

# ---------------------------------------------------------------------------
# State changes
# ---------------------------------------------------------------------------

sub sql_lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

# the backfill, run to completion (a quiet point, or a guard that needs it)
sub backfill_to_end
{
	my ($m) = @_;
	my ($ok, $out, $err, $code) = psql(qq{CALL softmig.backfill('$m', batch_size => 2000)});
	if (!$ok)
	{
		internal_error_check("backfill of $m", $code, $err);
		fail_now("backfill of $m to the end failed: " . first_error($err)) unless $code =~ /^XX/;
		return 0;
	}
	$count{backfills_completed}++;
	return 1;
}

sub change_state
{
	my ($m) = @_;
	my $s = $state{$m};
	my @moves;
	if ($s eq 'legacy') { @moves = ([ 'advance', 'mirrored' ]) }
	elsif ($s eq 'mirrored')
	{
		@moves = ([ 'advance', 'new_write' ], [ 'advance', 'new_write' ], [ 'advance', 'new_write' ]);
		push @moves, [ 'rollback', 'legacy' ] if rand() < 0.3;
	}
	elsif ($s eq 'new_write') { @moves = ([ 'advance', 'new_read' ], [ 'rollback', 'mirrored' ]) }
	elsif ($s eq 'new_read') { @moves = ([ 'rollback', 'new_write' ]) }
	my ($how, $to) = @{ $moves[ int(rand(@moves)) ] };
	my $force = $how eq 'advance' && rand() < 0.3;
	if ($force && $s eq 'mirrored')
	{
		# force passes every guard: not into new_write before the backfill
		# is done (the target would miss rows by the operator's choice)
		my $done = psql_safe(qq{SELECT softmig.status('$m')->>'backfill_done'});
		$force = 0 if $done ne 'true';
	}
	my $sql = $how eq 'advance'
	  ? qq{SELECT softmig.advance('$m', '$to', reason => 'lifecycle soak', force => } . ($force ? 'true' : 'false') . ')'
	  : qq{SELECT softmig.rollback('$m', 'lifecycle soak')};
	my ($ok, $out, $err, $code) = psql($sql);
	if ($ok)
	{
		fail_now("$how of $m returned '$out', expected $to") unless $out eq $to;
		$transitions{"$m $s -> $to" . ($force ? ' (forced)' : '')}++;
		$count{state_changes}++;
		$count{forced}++ if $force;
		say "controller: $how $m $s -> $to", $force ? ' (forced)' : '';
		$state{$m} = $to;
		if ($m eq 'acct' && $to eq 'legacy')
		{
			# the target is not kept any more: the children stop being comparable
			set_ctl('tags_ok = false');
		}
		return;
	}
	internal_error_check("$how of $m $s -> $to", $code, $err);
	if ($code eq '55P03')
	{
		$count{state_lock_timeouts}++;
		return;
	}
	if ($code eq '40P01')
	{
		# LOCK TABLE takes a partitioned table's parent, then each
		# partition; a client that wrote a partition directly and then
		# goes through the parent takes them the other way round.  No
		# order suits both: PostgreSQL ends one of the two, and a state
		# change it ends has changed nothing (the next quiet point checks
		# the state).  doc/limitations.md says so.
		$count{state_deadlocks}++;
		say "controller: $how $m $s -> $to ended by a deadlock with a client (nothing changed)";
		return;
	}
	if ($code eq '55000')
	{
		$count{guard_refusals}++;
		my $why = first_error($err);
		$why =~ s/^ERROR:\s+55000:\s+//;
		$count{"refused: $why"}++ if $why =~ /backfill is not done|invariant|parity|envelope/;
		say "controller: $how $m $s -> $to refused: $why";
		return;
	}
	fail_now("$how of $m $s -> $to failed: " . first_error($err));
}

# ---------------------------------------------------------------------------
# Operator tools
# ---------------------------------------------------------------------------

sub backfill_some
{
	my $m = rand() < 0.8 ? 'acct' : 'bstat';
	my $bs = (200, 500, 1000, 2000)[ int(rand(4)) ];
	my $mb = 1 + int(rand(8));
	my ($ok, $out, $err, $code) =
	  psql(qq{CALL softmig.backfill('$m', batch_size => $bs, max_batches => $mb)});
	if ($ok) { $count{backfill_calls}++; return }
	internal_error_check("backfill of $m", $code, $err);
	if ($code eq '55000' && $state{$m} ne 'mirrored') { $count{backfill_refused_state}++; return }
	if ($code eq '55006') { $count{backfill_busy}++; return }
	fail_now("CALL softmig.backfill('$m') in $state{$m} failed: " . first_error($err));
}

sub parity_and_check
{
	my $m = rand() < 0.7 ? 'acct' : 'bstat';
	my ($ok, $out, $err, $code) = psql(qq{
		SELECT count(*) FROM softmig.parity('$m');
		SELECT count(*) FROM softmig.check('$m');
		SELECT softmig.status('$m') IS NOT NULL;
		SELECT length(softmig.report('$m')) > 0;
	});
	if ($ok) { $count{parity_runs}++; return }
	internal_error_check("parity/check of $m", $code, $err);
	return if $code eq '55P03' || $code eq '40P01';
	fail_now("parity/check of $m in $state{$m} failed: " . first_error($err));
}

# Damage an entity's projection row by an owner override and quarantine
# it, in one transaction with the authoritative row locked.
sub quarantine_one
{
	return if keys(%quarantined) >= $MAX_QUARANTINED || !managed('acct');
	# among the newest entities: out of the bulk statements' way (one
	# quarantined row refuses a whole statement)
	my $p = sprintf('%.6f', 0.97 + rand(0.03));
	my $auth = (authority_table('acct'))[0];
	my ($akey, $aside, $damage) = $auth eq 'legacy_acct'
	  ? ('id', 'legacy', q{UPDATE acct SET note_uc = 'DAMAGED' WHERE acct_id = :k})
	  : ('acct_id', 'new', q{UPDATE legacy_acct SET note = 'damaged' WHERE id = :k});
	my ($ok, $out, $err, $code) = psql(<<"SQL", lock_timeout => '2s');
BEGIN;
SELECT $akey AS k FROM $auth WHERE $akey = (SELECT lc_pick('$aside', $p)) FOR UPDATE \\gset
SET LOCAL softmig.override = 'lifecycle soak: damage before quarantine';
$damage;
SELECT softmig.quarantine('acct', jsonb_build_object('id', :k), 'lifecycle soak');
COMMIT;
SELECT :k;
SQL
	if (!$ok)
	{
		internal_error_check('quarantine', $code, $err);
		# 40001: the row picked was moved to another partition by a
		# concurrent key change (PostgreSQL's rule for row locks)
		return if $code =~ /^(SM005|SM001|42710|40001|40P01|55P03)$/ || $err =~ /no rows returned for \\gset/;
		fail_now("quarantine failed in $state{acct}: " . first_error($err));
		return;
	}
	$quarantined{$out} = 1;
	$count{quarantines}++;
}

sub release_one
{
	my @k = sort keys %quarantined;
	return unless @k;
	my $k = $k[ int(rand(@k)) ];
	my ($ok, $out, $err, $code) = psql(qq{SELECT softmig.release('acct', '{"id": $k}')}, lock_timeout => '5s');
	if (!$ok)
	{
		internal_error_check('release', $code, $err);
		return if $code eq '40P01' || $code eq '55P03';
		fail_now("release of $k failed in $state{acct}: " . first_error($err));
		return;
	}
	delete $quarantined{$k};
	$count{releases}++;
}

sub shadow_toggle
{
	my $m = rand() < 0.7 ? 'acct' : 'bstat';
	if ($shadow_off{$m})
	{
		my ($ok, $out, $err, $code) = psql(qq{SELECT softmig.shadow_enable('$m')});
		if ($ok)
		{
			$shadow_off{$m} = 0;
			$count{shadow_enables}++;
			say "controller: shadow_enable $m ($state{$m})";
			return;
		}
		internal_error_check("shadow_enable of $m", $code, $err);
		return if $code eq '55P03' || $code eq '40P01';
		if ($code eq '55000' && $state{$m} eq 'legacy')
		{
			# a rollback to legacy left it disabled: it stays recorded
			return;
		}
		fail_now("shadow_enable of $m in $state{$m} failed: " . first_error($err));
		return;
	}
	return unless managed($m);
	my ($ok, $out, $err, $code) = psql(qq{SELECT softmig.shadow_disable('$m', 'lifecycle soak')});
	if ($ok)
	{
		$shadow_off{$m} = 1;
		$count{shadow_disables}++;
		set_ctl('tags_ok = false') if $m eq 'acct';
		say "controller: shadow_disable $m ($state{$m})";
		return;
	}
	internal_error_check("shadow_disable of $m", $code, $err);
	return if $code eq '55P03' || $code eq '40P01';
	fail_now("shadow_disable of $m in $state{$m} failed: " . first_error($err));
}

# an owner override rewriting an entity's projection row from its
# authoritative row: a manual repair that must disturb nothing
sub touch_one
{
	return unless managed('acct') && !$shadow_off{acct};
	my $p = sprintf('%.6f', rand());
	my $sql = (authority_table('acct'))[0] eq 'legacy_acct'
	  ? <<"SQL"
BEGIN;
SELECT id AS k FROM legacy_acct WHERE id = (SELECT lc_pick('legacy', $p)) FOR SHARE \\gset
SET LOCAL softmig.override = 'lifecycle soak: repair a projection row';
UPDATE acct t SET eid = l.eid, bucket = l.bucket, owner_name = upper(l.owner), balance_cents = l.balance::bigint * 100,
       note_uc = upper(l.note), version = l.version
  FROM legacy_acct l WHERE l.id = :k AND t.acct_id = :k;
COMMIT;
SQL
	  : <<"SQL";
BEGIN;
SELECT acct_id AS k FROM acct WHERE acct_id = (SELECT lc_pick('new', $p)) FOR SHARE \\gset
SET LOCAL softmig.override = 'lifecycle soak: repair a projection row';
UPDATE legacy_acct l SET eid = t.eid, bucket = t.bucket, owner = lower(t.owner_name), balance = (t.balance_cents / 100)::int,
       note = lower(t.note_uc), version = t.version
  FROM acct t WHERE t.acct_id = :k AND l.id = :k;
COMMIT;
SQL
	my ($ok, $out, $err, $code) = psql($sql, lock_timeout => '2s');
	if ($ok) { $count{override_repairs}++; return }
	internal_error_check('override repair', $code, $err);
	# 40001: the row was moved to another partition meanwhile (as above)
	return if $code =~ /^(SM005|SM001|40001|40P01|55P03)$/ || $err =~ /no rows returned for \\gset/;
	fail_now("override repair failed in $state{acct}: " . first_error($err));
}

# DDL that gets past the DDL guard (event triggers do not fire under
# session_replication_role = replica): one of softmig's triggers switched
# off; writes meanwhile must be refused (SM002), never one-sided; then
# repair_triggers puts it back
sub replica_ddl
{
	my $m = rand() < 0.7 ? 'acct' : 'bstat';
	return unless managed($m);
	my ($l, $t) = $m eq 'acct' ? ('legacy_acct', 'acct') : ('legacy_bstat', 'bstat');
	my $tbl = rand() < 0.5 ? $l : $t;
	$tbl = "${tbl}_p0" if $m eq 'acct' && rand() < 0.3;
	my $tg = softmig_trigger($m, (qw(guard ins upd del))[ int(rand(4)) ]);
	my $how = rand() < 0.5 ? "DISABLE TRIGGER $tg" : "ENABLE REPLICA TRIGGER $tg";
	my ($ok, $out, $err, $code) =
	  psql("SET session_replication_role = replica;\nALTER TABLE $tbl $how;", lock_timeout => '3s');
	if (!$ok)
	{
		internal_error_check("replica DDL $how", $code, $err);
		return if $code eq '55P03' || $code eq '40P01';
		fail_now("ALTER TABLE $tbl $how under session_replication_role = replica failed: " . first_error($err));
		return;
	}
	$count{replica_ddl}++;
	sleep(0.3 + rand(0.7));
	for my $try (1 .. 20)
	{
		($ok, $out, $err, $code) = psql(qq{SELECT softmig.repair_triggers('$m')->>'healthy'});
		if ($ok)
		{
			fail_now("repair_triggers('$m') reports unhealthy triggers") if $out ne 'true';
			$count{repairs}++;
			return;
		}
		internal_error_check("repair_triggers of $m", $code, $err);
		last unless $code eq '55P03' || $code eq '40P01';
		$count{repair_retries}++;
	}
	fail_now("repair_triggers('$m') failed in $state{$m}: " . first_error($err));
}

sub invariant_toggle
{
	my $fail = rand() < 0.5 ? 'true' : 'false';
	set_ctl("invariant_fail = $fail");
	$count{invariant_toggles}++;
}

# sabotage_sql: the statements that change one row of acct's projection
# by an owner override without quarantining it (the oracle's self-test).
# Run by the quiet point under the gate, after its backfill, so that no
# writer, re-sync or backfill can heal the row before the comparison.
sub sabotage_sql
{
	my ($q) = @_;
	my ($auth, $other) = authority_table('acct');
	# not a quarantined entity: its projection row is neither compared nor
	# writable (SM005)
	my ($tbl, $key, $set) = $other eq 'acct'
	  ? ('acct', 'acct_id', 'balance_cents = balance_cents + 100')
	  : ('legacy_acct', 'id', 'balance = balance + 1');
	my $skip = $q eq '' ? '' : "WHERE $key NOT IN ($q)";
	return qq{BEGIN; SET LOCAL softmig.override = 'soak: sabotage';
WITH u AS (UPDATE $tbl SET $set
            WHERE $key = (SELECT $key FROM $tbl $skip ORDER BY random() LIMIT 1) RETURNING $key AS id)
SELECT 'sabotaged|' || id FROM u; COMMIT;};
}

# ---------------------------------------------------------------------------
# DDL from a list: each is accepted or refused; refusals are expected where
# softmig cannot carry the change over, and an acceptance where it must
# refuse is a finding
# ---------------------------------------------------------------------------

sub softmig_trigger
{
	my ($m, $which) = @_;
	return "softmig_$mid{$m}_$which";
}

# has_rows: does a (partition) table hold rows right now
sub has_rows
{
	my ($t) = @_;
	return psql_safe(qq{SELECT EXISTS (SELECT 1 FROM $t)}) eq 't';
}

sub random_side { return rand() < 0.5 ? 'legacy' : 'target' }

# the migration a table belongs to, and whether softmig must refuse what
# would add or remove rows on that side now
sub rows_guarded
{
	my ($side) = @_;
	my $s = $state{acct};
	return $s ne 'legacy' && ($s ne 'cutover' || $side eq 'legacy');
}

my @DDL = (
	# partitions
	[ part_create => 8, sub {
		my $side = random_side();
		my $lo = $next_lo{$side};
		my $hi = $lo + $SPAN;
		my $name = "$parent{$side}_r$lo";
		return {
			sql => "CREATE TABLE $name PARTITION OF $parent{$side} FOR VALUES FROM ($lo) TO ($hi)",
			ok => sub { push @{ $parts{$side} }, [ $name, $lo, $hi ]; $next_lo{$side} = $hi },
			# the default partition already holds rows of that range
			refuse => [ '23514' ],
		};
	} ],
	[ part_far_create => 3, sub {
		my $side = random_side();
		my $lo = $far + 1000 * ++$uniq;
		my $name = "$parent{$side}_f$uniq";
		return {
			sql => "CREATE TABLE $name PARTITION OF $parent{$side} FOR VALUES FROM ($lo) TO (" . ($lo + 1000) . ")",
			ok => sub { push @{ $parts{$side} }, [ $name, $lo, $lo + 1000 ] },
			must => 'accept',
		};
	} ],
	[ part_attach_empty => 3, sub {
		my $side = random_side();
		my $lo = $far + 1000 * ++$uniq;
		my $name = "$parent{$side}_a$uniq";
		return {
			sql => "CREATE TABLE $name (LIKE $parent{$side} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
			        ALTER TABLE $parent{$side} ATTACH PARTITION $name FOR VALUES FROM ($lo) TO (" . ($lo + 1000) . ")",
			ok => sub { push @{ $parts{$side} }, [ $name, $lo, $lo + 1000 ] },
			must => 'accept',
		};
	} ],
	[ part_attach_rows => 3, sub {
		# a populated table: a detached partition, or a new one with rows
		my $side = random_side();
		my ($name, $lo, $hi, $fill);
		if (@{ $detached{$side} } && rand() < 0.5)
		{
			($name, $lo, $hi) = @{ $detached{$side}[ int(rand(@{ $detached{$side} })) ] };
			$fill = '';
		}
		else
		{
			$lo = $far + 1000 * ++$uniq;
			$hi = $lo + 1000;
			$name = "$parent{$side}_x$uniq";
			my ($k, $o, $b, $n) = $side eq 'legacy' ? qw(id owner balance note) : qw(acct_id owner_name balance_cents note_uc);
			my ($ov, $nv) = $side eq 'legacy' ? ("'att'", "'attached'") : ("'ATT'", "'ATTACHED'");
			$fill = "CREATE TABLE $name (LIKE $parent{$side} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
			         INSERT INTO $name ($k, eid, bucket, $o, $b, $n, version)
			         SELECT $lo + g, nextval('lc_eids'), g, $ov, 0, $nv, 1 FROM generate_series(1, 3) g;";
		}
		my $has = $fill ne '' || has_rows($name);
		return {
			sql => "$fill ALTER TABLE $parent{$side} ATTACH PARTITION $name FOR VALUES FROM ($lo) TO ($hi)",
			ok => sub {
				@{ $detached{$side} } = grep { $_->[0] ne $name } @{ $detached{$side} };
				push @{ $parts{$side} }, [ $name, $lo, $hi ];
			},
			must => ($has && rows_guarded($side)) ? 'refuse' : undef,
			# 42804: a column of the parent was retyped since it was detached
			refuse => [ '55006', '42804', '23514' ],
		};
	} ],
	[ part_detach => 4, sub {
		my $side = random_side();
		return undef unless @{ $parts{$side} };
		my $i = int(rand(@{ $parts{$side} }));
		my ($name, $lo, $hi) = @{ $parts{$side}[$i] };
		my $has = has_rows($name);
		return {
			sql => "ALTER TABLE $parent{$side} DETACH PARTITION $name",
			ok => sub {
				@{ $parts{$side} } = grep { $_->[0] ne $name } @{ $parts{$side} };
				push @{ $detached{$side} }, [ $name, $lo, $hi ];
			},
			must => ($has && rows_guarded($side)) ? 'refuse' : undef,
			# rows with children (a foreign key) cannot leave
			refuse => [ '55006', '23503' ],
		};
	} ],
	[ part_drop => 3, sub {
		my $side = random_side();
		my @cand = (@{ $parts{$side} }, @{ $detached{$side} });
		return undef unless @cand;
		my ($name) = @{ $cand[ int(rand(@cand)) ] };
		my $attached = grep { $_->[0] eq $name } @{ $parts{$side} };
		my $has = has_rows($name);
		return {
			sql => "DROP TABLE $name",
			ok => sub {
				@{ $parts{$side} } = grep { $_->[0] ne $name } @{ $parts{$side} };
				@{ $detached{$side} } = grep { $_->[0] ne $name } @{ $detached{$side} };
			},
			must => ($attached && $has && rows_guarded($side)) ? 'refuse' : undef,
			refuse => [ '55006', '2BP01', '23503' ],
		};
	} ],
	[ part_truncate => 2, sub {
		my $side = random_side();
		my $name = $side eq 'legacy' ? 'legacy_acct_p1' : 'acct_p1';
		return {
			sql => "TRUNCATE $name",
			must => rows_guarded($side) ? 'refuse' : undef,
			# softmig refuses (SM001); the children's foreign key refuses too
			refuse => [ 'SM001', '0A000' ],
		};
	} ],
	# softmig's triggers
	[ softmig_trigger_disable => 3, sub {
		my $m = rand() < 0.7 ? 'acct' : 'bstat';
		my ($l, $t) = $m eq 'acct' ? ('legacy_acct', 'acct') : ('legacy_bstat', 'bstat');
		my $tbl = rand() < 0.5 ? $l : $t;
		$tbl = "${tbl}_p0" if $m eq 'acct' && rand() < 0.3;
		my $tg = softmig_trigger($m, (qw(guard ins upd del))[ int(rand(4)) ]);
		my $how = (
			"DISABLE TRIGGER $tg", "ENABLE REPLICA TRIGGER $tg", "ENABLE ALWAYS TRIGGER $tg",
			'DISABLE TRIGGER USER', 'DISABLE TRIGGER ALL')[ int(rand(5)) ];
		my $back = $how =~ /USER|ALL/ ? ($how =~ /USER/ ? 'ENABLE TRIGGER USER' : 'ENABLE TRIGGER ALL') : "ENABLE TRIGGER $tg";
		return {
			# switched back on in the same transaction: in legacy (no
			# softmig triggers) the application's must not stay off
			sql => "BEGIN; ALTER TABLE $tbl $how; ALTER TABLE $tbl $back; COMMIT;",
			must => managed($m) ? 'refuse' : undef,
			refuse => [ '55006', '42704' ],
			as_superuser => ($how =~ /ALL/ ? 1 : 0),
		};
	} ],
	[ softmig_trigger_drop => 2, sub {
		my $m = rand() < 0.7 ? 'acct' : 'bstat';
		my ($l, $t) = $m eq 'acct' ? ('legacy_acct', 'acct') : ('legacy_bstat', 'bstat');
		my $tbl = rand() < 0.5 ? $l : $t;
		my $tg = softmig_trigger($m, (qw(guard ins upd del))[ int(rand(4)) ]);
		return {
			sql => "DROP TRIGGER $tg ON $tbl",
			must => 'refuse',    # managed: refused; legacy: there is none
			refuse => [ '55006', '42704', '2BP01' ],
		};
	} ],
	[ app_trigger_toggle => 4, sub {
		my $tbl = rand() < 0.5 ? 'legacy_acct' : 'acct';
		my $tg = (qw(lc_audit_ins lc_audit_upd lc_audit_del))[ int(rand(3)) ];
		my $off = $app_trigger_off{"$tbl $tg"};
		return {
			sql => "ALTER TABLE $tbl " . ($off ? 'ENABLE' : 'DISABLE') . " TRIGGER $tg",
			ok => sub { $app_trigger_off{"$tbl $tg"} = !$off },
			must => 'accept',
		};
	} ],
	# columns
	[ column_add => 3, sub {
		my $tbl = (qw(legacy_acct acct legacy_bstat bstat))[ int(rand(4)) ];
		my $col = 'x' . ++$uniq;
		my $def = rand() < 0.5 ? ' DEFAULT 7' : '';
		return {
			sql => "ALTER TABLE $tbl ADD COLUMN $col int$def",
			ok => sub { push @{ $added_cols{$tbl} }, $col },
			must => 'accept',
		};
	} ],
	[ column_drop_added => 2, sub {
		my $tbl = (qw(legacy_acct acct legacy_bstat bstat))[ int(rand(4)) ];
		return undef unless @{ $added_cols{$tbl} };
		my $col = shift @{ $added_cols{$tbl} };
		return {
			sql => "ALTER TABLE $tbl DROP COLUMN $col",
			must => 'accept',
			fail => sub { unshift @{ $added_cols{$tbl} }, $col },
		};
	} ],
	[ column_break_mapping => 3, sub {
		my @c = (
			'ALTER TABLE legacy_acct DROP COLUMN note',
			'ALTER TABLE acct DROP COLUMN note_uc',
			'ALTER TABLE legacy_acct RENAME COLUMN owner TO owner_renamed',
			'ALTER TABLE acct RENAME COLUMN balance_cents TO cents',
			'ALTER TABLE legacy_bstat DROP COLUMN touches',
			'ALTER TABLE bstat RENAME COLUMN touch_count TO n',
			'ALTER TABLE acct ALTER COLUMN owner_name TYPE int USING 0');
		return { sql => $c[ int(rand(@c)) ], must => 'refuse', refuse => [ '55006', '42804', '22P02' ] };
	} ],
	[ column_retype => 3, sub {
		# compatible retypes: the mapping still prepares; caches must follow
		# (not the columns the application's PL/pgSQL triggers read: their
		# kept plans fail after such a change, softmig or not)
		my @c = (
			[ 'ALTER TABLE legacy_acct ALTER COLUMN version TYPE bigint', 'ALTER TABLE legacy_acct ALTER COLUMN version TYPE int' ],
			[ 'ALTER TABLE acct ALTER COLUMN balance_cents TYPE numeric', 'ALTER TABLE acct ALTER COLUMN balance_cents TYPE bigint' ],
			[ 'ALTER TABLE legacy_bstat ALTER COLUMN bucket TYPE bigint', 'ALTER TABLE legacy_bstat ALTER COLUMN bucket TYPE int' ],
			[ 'ALTER TABLE bstat ALTER COLUMN touch_count TYPE numeric', 'ALTER TABLE bstat ALTER COLUMN touch_count TYPE bigint' ],
			[ 'ALTER TABLE legacy_bstat ALTER COLUMN touches TYPE numeric(20)', 'ALTER TABLE legacy_bstat ALTER COLUMN touches TYPE bigint' ]);
		my $i = int(rand(@c));
		my $back = $count{"retyped $i"} ? 1 : 0;
		return {
			sql => $c[$i][$back],
			ok => sub { $count{"retyped $i"} = !$back },
			refuse => [ '55006' ],
		};
	} ],
	# indexes, constraints, rules, row security, owners, DROP TABLE
	[ index_toggle => 2, sub {
		my $tbl = (qw(legacy_acct acct legacy_bstat bstat))[ int(rand(4)) ];
		my $col = $tbl =~ /bstat/ ? 'last_eid' : 'version';
		my $ix = "${tbl}_lc_ix";
		my $have = psql_safe(qq{SELECT count(*) FROM pg_class WHERE relname = '$ix'});
		return { sql => $have ? "DROP INDEX $ix" : "CREATE INDEX $ix ON $tbl ($col)", must => 'accept' };
	} ],
	[ constraint_toggle => 2, sub {
		my $tbl = rand() < 0.5 ? 'legacy_acct' : 'acct';
		my $col = $tbl eq 'legacy_acct' ? 'balance' : 'balance_cents';
		my $c = "${tbl}_lc_chk";
		my $have = psql_safe(qq{SELECT count(*) FROM pg_constraint WHERE conname = '$c' AND conrelid = '$tbl'::regclass});
		if (!$have)
		{
			# a partition detached while the constraint was there keeps
			# its own copy (PostgreSQL's rule); attached again after a
			# retype of the column, that copy no longer matches and the
			# ADD would conflict with it (42710): drop such leftovers
			my $left = psql_safe(qq{SELECT string_agg(format('ALTER TABLE %s DROP CONSTRAINT %I;', conrelid::regclass, conname), ' ')
			                         FROM pg_constraint WHERE conname = '$c' AND conrelid <> '$tbl'::regclass AND coninhcount = 0});
			psql($left, lock_timeout => '5s') if $left ne '';
		}
		return {
			sql => $have ? "ALTER TABLE $tbl DROP CONSTRAINT $c"
			             : "ALTER TABLE $tbl ADD CONSTRAINT $c CHECK ($col > -1000000000000) NOT VALID",
			must => 'accept',
		};
	} ],
	[ rule => 1, sub {
		my $tbl = (qw(legacy_acct acct legacy_bstat bstat))[ int(rand(4)) ];
		return {
			sql => "CREATE RULE lc_rule AS ON DELETE TO $tbl DO INSTEAD NOTHING",
			must => 'refuse', refuse => [ '0A000', '55006' ],
		};
	} ],
	[ force_rls => 1, sub {
		# a policy the owner would be subject to: the mirror would be
		# filtered (undone in the same transaction where it is accepted)
		my $tbl = (qw(legacy_acct acct legacy_bstat bstat))[ int(rand(4)) ];
		my $m = $tbl =~ /bstat/ ? 'bstat' : 'acct';
		return {
			sql => "BEGIN; CREATE POLICY lc_all ON $tbl USING (true);
			        ALTER TABLE $tbl ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
			        ALTER TABLE $tbl DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY;
			        DROP POLICY lc_all ON $tbl; COMMIT;",
			must => managed($m) ? 'refuse' : undef,
			refuse => [ '55006', '42501' ],
		};
	} ],
	[ owner_change => 1, sub {
		# to a superuser and back: softmig then runs the mirror as that
		# owner; acct's tables carry triggers of soak_owner's, which a
		# superuser owner would run (the trust rule refuses)
		my $tbl = (qw(legacy_bstat bstat acct))[ int(rand(3)) ];
		return {
			sql => "BEGIN; ALTER TABLE $tbl OWNER TO CURRENT_USER; ALTER TABLE $tbl OWNER TO soak_owner; COMMIT;",
			refuse => [ '42501', '55006' ],
			as_superuser => 1,
		};
	} ],
	[ drop_table => 1, sub {
		my $tbl = (qw(legacy_acct acct legacy_bstat bstat))[ int(rand(4)) ];
		return { sql => "DROP TABLE $tbl CASCADE", must => 'refuse', refuse => [ '2BP01' ] };
	} ],
	[ analyze => 1, sub { return { sql => 'ANALYZE legacy_acct; ANALYZE acct', must => 'accept' } } ],
	# rewrites and vacuums of bstat's tables (not partitioned: parity may
	# reuse its digest cache, which must notice)
	[ rewrite => 2, sub {
		my $tbl = rand() < 0.5 ? 'legacy_bstat' : 'bstat';
		my @c = ("VACUUM $tbl", "VACUUM FULL $tbl", "CLUSTER $tbl USING ${tbl}_pkey",
			"ALTER TABLE $tbl SET (fillfactor = " . (50 + int(rand(50))) . ')');
		return { sql => $c[ int(rand(@c)) ], must => 'accept' };
	} ],
	[ truncate_table => 1, sub {
		my $tbl = (qw(legacy_bstat bstat))[ int(rand(2)) ];
		# bstat's rows are only written by acct's counter: empty in legacy
		# they would come back only through a new backfill
		return undef unless managed('bstat');
		return { sql => "TRUNCATE $tbl", must => 'refuse', refuse => [ 'SM001' ] };
	} ],
);
my $ddl_weight = 0;
$ddl_weight += $_->[1] for @DDL;

sub random_ddl
{
	my $r = rand($ddl_weight);
	my $d;
	for (@DDL) { $d = $_; last if ($r -= $_->[1]) < 0 }
	my ($kind, undef, $make) = @$d;
	my $x = $make->();
	return unless $x;
	my $role = $x->{as_superuser} ? '' : 'SET ROLE soak_owner;';
	my ($ok, $out, $err, $code) = psql("$role\n$x->{sql}", lock_timeout => '3s');
	$count{ddl_tried}++;
	if ($ok)
	{
		$ddl{"$kind accepted"}++;
		$count{ddl_accepted}++;
		$x->{ok}->() if $x->{ok};
		fail_now("DDL accepted that softmig must refuse in acct $state{acct}, bstat $state{bstat}: $x->{sql}")
		  if ($x->{must} // '') eq 'refuse';
		return;
	}
	$x->{fail}->() if $x->{fail};
	internal_error_check("DDL $x->{sql}", $code, $err);
	if ($code eq '55P03')
	{
		$ddl{"$kind lock timeout"}++;
		$count{ddl_lock_timeouts}++;
		return;
	}
	if (grep { $_ eq $code } @{ $x->{refuse} // [] })
	{
		$ddl{"$kind refused"}++;
		$count{ddl_refused}++;
		fail_now("DDL refused that must pass in acct $state{acct}, bstat $state{bstat}: $x->{sql}: " . first_error($err))
		  if ($x->{must} // '') eq 'accept';
		return;
	}
	# 40P01: a deadlock between the DDL's locks and a writer's
	if ($code eq '40P01') { $ddl{"$kind deadlock"}++; return }
	fail_now("DDL failed unexpectedly in acct $state{acct}, bstat $state{bstat}: $x->{sql}: " . first_error($err));
}

# ---------------------------------------------------------------------------
# The oracle, at quiet points
# ---------------------------------------------------------------------------

# new lines of the server log since the last look: crashes, assertion
# failures, PANICs, internal errors, unexpected client errors
sub server_log_findings
{
	return () unless defined $SERVER_LOG && -f $SERVER_LOG;
	open(my $fh, '<', $SERVER_LOG) or return ("cannot read $SERVER_LOG: $!");
	seek($fh, $log_offset, 0);
	my @bad;
	while (my $line = <$fh>)
	{
		push @bad, $line if $line =~ /TRAP:|PANIC|terminated by signal|server process .* was terminated|LC-UNEXPECTED|\bXX\d{3}\b/;
	}
	$log_offset = tell($fh);
	close $fh;
	chomp @bad;
	return @bad;
}

# the differences between the two tables of a migration through its
# mapping (plain SQL, EXCEPT ALL both ways), quarantined entities excluded
sub mapping_sql
{
	my ($m, $q) = @_;
	if ($m eq 'acct')
	{
		my $l = qq{SELECT id, eid, bucket, upper(owner), balance::bigint * 100, upper(note), version FROM legacy_acct WHERE id <> ALL ('{$q}'::bigint[])};
		my $t = qq{SELECT acct_id, eid, bucket, owner_name, balance_cents, note_uc, version FROM acct WHERE acct_id <> ALL ('{$q}'::bigint[])};
		return ($l, $t);
	}
	return (q{SELECT bucket, touches::bigint, last_eid FROM legacy_bstat},
	        q{SELECT bucket, touch_count::bigint, last_eid FROM bstat});
}

sub quiet_point
{
	my ($label) = @_;
	my $t0 = time();
	my $q = join(',', sort keys %quarantined);
	my @bad;

	# the gate: every writer transaction holds it shared, so once we hold
	# it no writer transaction is open and new ones wait.  Then make the
	# tables comparable: shadow writes back on (in mirrored that needs a new
	# backfill), the backfill finished.
	my @sql = ("SET lock_timeout = '60s';", "SELECT pg_advisory_lock($GATE);", 'RESET lock_timeout;');
	for my $m (@MIGRATIONS)
	{
		if ($shadow_off{$m})
		{
			push @sql, "SELECT softmig.shadow_enable('$m');";
			$shadow_off{$m} = 0;
			$count{shadow_enables}++;
		}
		push @sql, "CALL softmig.backfill('$m', batch_size => 2000);" if $state{$m} eq 'mirrored';
	}
	my $sabotage = $sabotage_due && managed('acct');
	if ($sabotage)
	{
		push @sql, sabotage_sql($q);
		$sabotage_due = 0;
		$sabotaged = 1;
	}
	push @sql, q{
-- no other transaction has written or holds a table (a client between
-- its BEGIN and its first statement has done neither)
SELECT 'open|' || count(*) FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
   AND a.xact_start IS NOT NULL AND NOT (a.wait_event_type = 'Lock' AND a.wait_event = 'advisory')
   AND (a.backend_xid IS NOT NULL
        OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'relation'));
SELECT 'open_detail ' || a.pid || ' ' || coalesce(a.application_name, '') || ' ' || coalesce(a.state, '')
       || ' ' || coalesce(a.wait_event_type || ':' || a.wait_event, '-') || ' xid ' || coalesce(a.backend_xid::text, '-')
       || ': ' || left(regexp_replace(a.query, '\s+', ' ', 'g'), 200)
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
   AND a.xact_start IS NOT NULL AND NOT (a.wait_event_type = 'Lock' AND a.wait_event = 'advisory')
   AND (a.backend_xid IS NOT NULL
        OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'relation'));
SELECT 'state_' || name || '|' || state::text FROM softmig.migrations;
SELECT 'shadow_' || m.name || '|' || count(s.*) FROM softmig.migrations m LEFT JOIN softmig.shadow s ON s.migration_id = m.id GROUP BY m.name;
SELECT 'errors|' || count(*) FROM lc_errors;
SELECT 'tags_ok|' || tags_ok FROM lc_ctl;
-- every softmig trigger of every table and partition of a managed
-- migration is there and plainly enabled
SELECT 'triggers_' || m.name || '|' || count(*) FILTER (WHERE n <> 4) FROM softmig.migrations m,
       LATERAL (SELECT r, (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = r AND t.tgenabled = 'O'
                             AND t.tgname ~ ('^softmig_' || m.id || '_(guard|ins|upd|del)$')) AS n
                  FROM softmig._tables(m.id) r) x
 WHERE m.state::text <> 'legacy' GROUP BY m.name;
SELECT 'health_' || name || '|' || (softmig.status(name)->'triggers'->>'healthy') FROM softmig.migrations
 WHERE state::text <> 'legacy';
};
	for my $m (@MIGRATIONS)
	{
		next unless managed($m);
		my ($l, $t) = mapping_sql($m, $q);
		push @sql, "SELECT 'mapping_$m|' || count(*) FROM (($l EXCEPT ALL $t) UNION ALL ($t EXCEPT ALL $l)) d;";
		push @sql, "SELECT 'parity_$m|' || count(*) FROM softmig.parity('$m');";
	}
	push @sql, q{SELECT 'tags|' || count(*) FROM ((TABLE legacy_acct_tag EXCEPT ALL TABLE acct_tag)
	                                            UNION ALL (TABLE acct_tag EXCEPT ALL TABLE legacy_acct_tag)) d;};
	push @sql, q{SELECT 'rows|' || (SELECT count(*) FROM legacy_acct) || '/' || (SELECT count(*) FROM acct);};
	my ($ok, $out, $err, $code) = psql(join("\n", @sql));
	my %r = map { split /\|/, $_, 2 } grep { /\|/ } split /\n/, $out;
	if ($sabotage)
	{
		say defined $r{sabotaged}
		  ? "controller: SABOTAGE: changed the projection row of $r{sabotaged} without quarantine"
		  : 'controller: sabotage failed (no row changed)';
	}
	if (!$ok)
	{
		internal_error_check("quiet point $label", $code, $err);
		push @bad, ($code eq '55P03' ? 'stuck: the gate was not free within 60 s (a writer transaction hung)'
		                             : 'the check itself failed: ' . first_error($err));
		dump_activity() if $code eq '55P03';
	}
	else
	{
		if ($r{open} ne '0')
		{
			push @bad, "$r{open} other transactions open at the quiet point";
			say "  $_" for grep { /^open_detail / } split /\n/, $out;
		}
		for my $m (@MIGRATIONS)
		{
			my ($st, $sh, $tg) = ($r{"state_$m"} // '?', $r{"shadow_$m"} // '?', $r{"triggers_$m"} // '0');
			push @bad, "$m: state is $st, the controller set $state{$m}" if $st ne $state{$m};
			push @bad, "$m: shadow writes disabled at the quiet point" if $sh ne '0' && managed($m);
			next unless managed($m);
			push @bad, "$m: $tg tables without their four enabled softmig triggers" if $tg ne '0';
			push @bad, "$m: status reports unhealthy triggers" if ($r{"health_$m"} // '') ne 'true';
			my $diff = $r{"mapping_$m"} // '?';
			my $par = $r{"parity_$m"} // '?';
			if ($diff ne '0')
			{
				push @bad, "$m: $diff rows differ through the mapping ($state{$m})";
				$count{differences} += $diff =~ /^\d+$/ ? $diff : 1;
			}
			if (($diff eq '0') != ($par eq '0'))
			{
				push @bad, "$m: softmig.parity reports $par differences, the oracle $diff";
				$count{parity_disagree}++;
			}
			else { $count{parity_agree}++ }
			$count{"compared_$m"}++;
		}
		push @bad, "clients reported $r{errors} unexpected errors (table lc_errors)" if $r{errors} ne '0';
		if ($r{tags_ok} eq 'true')
		{
			if ($r{tags} ne '0')
			{
				push @bad, "children: $r{tags} rows of legacy_acct_tag and acct_tag differ";
				$count{differences} += $r{tags};
			}
			else { $count{tags_compared}++ }
		}
	}

	my $now_start = psql_safe(q{SELECT pg_postmaster_start_time()});
	push @bad, "the postmaster restarted (a backend crashed)" if $now_start ne $start_time;
	my @log = server_log_findings();
	push @bad, map { "server log: $_" } @log[ 0 .. ($#log < 4 ? $#log : 4) ];
	push @bad, sprintf('server log: %d more such lines', @log - 5) if @log > 5;

	if (@bad)
	{
		$count{checks_failed}++;
		fail_now("quiet point $label (acct $state{acct}, bstat $state{bstat}): $_") for @bad;
		dump_differences($q);
	}
	else
	{
		$count{checks_passed}++;
		say sprintf('quiet point %s: ok (acct %s, bstat %s, rows %s, %d quarantined, %.1f s)',
			$label, $state{acct}, $state{bstat}, $r{rows} // '?', scalar(keys %quarantined), time() - $t0);
	}

	# the children become comparable again once both sides are equal:
	# forget the ones written while they were not
	if (($r{tags_ok} // '') ne 'true' && managed('acct') && ($r{mapping_acct} // '') eq '0' && !$shadow_off{acct})
	{
		psql_safe(qq{SELECT pg_advisory_lock($GATE);
		             BEGIN; DELETE FROM legacy_acct_tag; DELETE FROM acct_tag; UPDATE lc_ctl SET tags_ok = true; COMMIT;});
	}
}

# who holds what, and waits for whom: for a quiet point that found the
# gate held too long
sub dump_activity
{
	my ($ok, $out) = psql(q{
		SELECT 'activity ' || pid || ' ' || coalesce(application_name, '') || ' ' || coalesce(state, '') || ' '
		       || coalesce(wait_event_type || ':' || wait_event, '-') || ' blocked by ' || pg_blocking_pids(pid)::text
		       || ' xact ' || coalesce(round(extract(epoch FROM clock_timestamp() - xact_start))::text, '-') || 's: '
		       || left(regexp_replace(query, '\s+', ' ', 'g'), 300)
		  FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
		 ORDER BY xact_start NULLS LAST;
		SELECT 'lock ' || l.pid || ' ' || l.locktype || ' ' || l.mode || ' ' || l.granted || ' '
		       || coalesce(l.relation::regclass::text, l.objid::text, l.transactionid::text, l.virtualxid, '')
		  FROM pg_locks l WHERE NOT l.granted OR l.locktype = 'advisory' ORDER BY l.pid;});
	say "  $_" for split /\n/, $out // '';
}

sub dump_differences
{
	my ($q) = @_;
	for my $m (@MIGRATIONS)
	{
		next unless managed($m);
		my ($l, $t) = mapping_sql($m, $q);
		my ($ok, $out) = psql(qq{
			SELECT '$m legacy-only ' || d::text FROM ($l EXCEPT ALL $t) d LIMIT 10;
			SELECT '$m target-only ' || d::text FROM ($t EXCEPT ALL $l) d LIMIT 10;
			SELECT '$m client error ' || e::text FROM lc_errors e ORDER BY at LIMIT 5;});
		say "  $_" for split /\n/, $out // '';
	}
}

# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------

# start where a team starts: both migrations mirrored and backfilled
for my $m (@MIGRATIONS)
{
	psql_safe(qq{SELECT softmig.advance('$m', reason => 'lifecycle soak')});
	$state{$m} = 'mirrored';
	backfill_to_end($m) or exit 2;
}
quiet_point('initial');

my $script = "$tmp/lifecycle.pgbench";
open(my $fh, '>', $script) or die "soak: cannot write $script: $!";
print $fh <<'PGBENCH';
\set s random(1, 100)
\set c random(1, 100)
\set d random(1, 100000)
\set r1 random(0, 999999)
\set r2 random(0, 999999)
\if :c <= 75
SELECT lc_op(:s, :r1 / 1000000.0, :r2 / 1000000.0, :d);
\elif :c <= 90
BEGIN;
SELECT lc_op(:s, :r1 / 1000000.0, :r2 / 1000000.0, :d);
SELECT lc_op((:s * 7) % 100 + 1, :r2 / 1000000.0, :r1 / 1000000.0, :d + 1);
COMMIT;
\else
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT lc_op(:s, :r1 / 1000000.0, :r2 / 1000000.0, :d);
COMMIT;
\endif
PGBENCH
close($fh);

my ($bench_out, $bench_err) = ('', '');
my $pgbench;
{
	local $ENV{PGOPTIONS} = "-c statement_timeout=$TIMEOUT";
	local $ENV{PGUSER} = 'soak_app';
	local $ENV{PGAPPNAME} = 'lifecycle_client';
	$pgbench = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $CLIENTS, '-j', $CLIENTS, '-T', $SECONDS, '--max-tries', 100,
			'--random-seed', $SEED, '-f', $script
		],
		'>', \$bench_out, '2>', \$bench_err);
}

my @ACTIONS = (
	[ 18, sub { change_state(rand() < 0.75 ? 'acct' : 'bstat') } ],
	[ 10, \&backfill_some ],
	[ 5,  \&parity_and_check ],
	[ 6,  \&quarantine_one ],
	[ 6,  \&release_one ],
	[ 4,  \&shadow_toggle ],
	[ 4,  \&touch_one ],
	[ 2,  \&invariant_toggle ],
	[ 2,  \&replica_ddl ],
	[ 30, \&random_ddl ],
);
my $weight = 0;
$weight += $_->[0] for @ACTIONS;

my $t_start = time();
my $next_check = $t_start + $CHECK_EVERY * (0.5 + rand());
while ($pgbench->pumpable && time() < $t_start + $SECONDS - 1)
{
	sleep(0.1 + rand(0.5));
	$pgbench->pump_nb;
	my $r = rand($weight);
	for my $a (@ACTIONS)
	{
		if (($r -= $a->[0]) < 0) { $a->[1]->(); $count{actions}++; last }
	}
	if ($SABOTAGE && !$sabotaged && !$sabotage_due && time() >= $t_start + $SECONDS / 2)
	{
		# the self-test needs acct's projection: if the controller rolled
		# acct back to legacy, bring it back first (the quiet point's
		# backfill then fills the target)
		if (managed('acct'))
		{
			$sabotage_due = 1;
			$next_check = 0;
		}
		else
		{
			change_state('acct');
		}
	}
	if (time() >= $next_check)
	{
		quiet_point('#' . ++$n_check);
		$next_check = time() + $CHECK_EVERY * (0.5 + rand());
	}
}
$pgbench->finish;
my $bench_rc = $pgbench->result(0);

# the end: everything released, shadows on, compared once more; then both
# migrations walk forward to cutover (forced where a guard refuses),
# compared there, and are dropped
fail_now('the sabotage asked for never ran (acct was never managed at a quiet point of the second half)')
  if $SABOTAGE && !$sabotaged;
release_one() while keys %quarantined;
quiet_point('final');
for my $m (@MIGRATIONS)
{
	for my $try (1 .. 10)
	{
		last if $state{$m} eq 'cutover';
		backfill_to_end($m) if $state{$m} eq 'mirrored';
		my $to = { legacy => 'mirrored', mirrored => 'new_write', new_write => 'new_read', new_read => 'cutover' }->{ $state{$m} };
		my ($ok, $out, $err, $code) = psql(qq{SELECT softmig.advance('$m', '$to', reason => 'lifecycle soak: the end')});
		($ok, $out, $err, $code) = psql(qq{SELECT softmig.advance('$m', '$to', reason => 'lifecycle soak: the end', force => true)})
		  if !$ok && $code eq '55000';
		if ($ok)
		{
			$transitions{"$m $state{$m} -> $to (the end)"}++;
			$count{state_changes}++;
			$state{$m} = $to;
			next;
		}
		internal_error_check("advance of $m to $to at the end", $code, $err);
		fail_now("advance of $m to $to at the end failed: " . first_error($err)) unless $code eq '55P03';
	}
}
quiet_point('cutover');
for my $m (@MIGRATIONS)
{
	my ($ok, $out, $err, $code) = psql(qq{SELECT softmig.drop_migration('$m')});
	fail_now("drop_migration('$m') in $state{$m} failed: " . first_error($err)) unless $ok;
}

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

my $stats = psql_safe(qq{
SELECT 'op|' || kind || '|' || outcome || '|' || count(*) FROM lc_log GROUP BY kind, outcome ORDER BY kind, outcome;
SELECT 'ops|' || count(*) FROM lc_log;
SELECT 'rows|' || coalesce(sum(rows) FILTER (WHERE rows > 0), 0) FROM lc_log;
SELECT 'history|' || CASE h.migration_id WHEN $mid{acct} THEN 'acct' ELSE 'bstat' END || '|' || h.action || '|' || count(*)
  FROM softmig.history_log h GROUP BY h.migration_id, h.action ORDER BY 1;
SELECT 'partitions|' || (SELECT count(*) FROM pg_partition_tree('legacy_acct') WHERE isleaf) || '/'
       || (SELECT count(*) FROM pg_partition_tree('acct') WHERE isleaf);
SELECT 'final_rows|' || (SELECT count(*) FROM legacy_acct) || '/' || (SELECT count(*) FROM acct);
});
my (%ops, %hist, %s);
for (split /\n/, $stats)
{
	my @f = split /\|/;
	if ($f[0] eq 'op') { $ops{"$f[1] $f[2]"} = $f[3] }
	elsif ($f[0] eq 'history') { $hist{"$f[1] $f[2]"} = $f[3] }
	else { $s{ $f[0] } = $f[1] }
}
my ($txns) = $bench_out =~ /number of transactions actually processed: (\d+)/;
my ($failed_tx) = $bench_out =~ /number of failed transactions: (\d+)/;
my ($retried_tx) = $bench_out =~ /number of transactions retried: (\d+)/;
my ($tps) = $bench_out =~ /tps = ([\d.]+)/;
fail_now("pgbench exited $bench_rc (a client aborted: a crash, a statement_timeout or an unexpected error)")
  if $bench_rc != 0;
push @failures, "no quiet point compared acct" unless $count{compared_acct};

print "\n================= softmig lifecycle soak summary =================\n";
printf "seed %s, %d s, %d clients, %d initial entities, statement_timeout %s\n",
  $SEED, $SECONDS, $CLIENTS, $ROWS, $TIMEOUT;
printf "clients: %s transactions (%s retried whole, %s failed), %s tps, exit %d; %s operations committed, %s rows written\n",
  $txns // '?', $retried_tx // 0, $failed_tx // '?', $tps // '?', $bench_rc, $s{ops} // 0, $s{rows} // 0;
printf "  %s\n", join(', ', map { "$_ $ops{$_}" } sort keys %ops);
printf "controller: %d actions; %d state changes (%d forced), %d guard refusals, %d lock timeouts, %d deadlocks\n",
  $count{actions} // 0, $count{state_changes} // 0, $count{forced} // 0, $count{guard_refusals} // 0,
  $count{state_lock_timeouts} // 0, $count{state_deadlocks} // 0;
printf "  %s\n", join(', ', map { "$_: $transitions{$_}" } sort keys %transitions);
printf "  %s\n", join(', ', map { "$_: $count{$_}" } sort grep { /^refused: / } keys %count) || 'no guard refusals';
printf "  backfill CALLs %d (+%d to the end), refused outside mirrored %d; parity/check runs %d\n",
  $count{backfill_calls} // 0, $count{backfills_completed} // 0, $count{backfill_refused_state} // 0, $count{parity_runs} // 0;
printf "  quarantines %d, releases %d, shadow disable/enable %d/%d, override repairs %d, invariant toggles %d\n",
  $count{quarantines} // 0, $count{releases} // 0, $count{shadow_disables} // 0, $count{shadow_enables} // 0,
  $count{override_repairs} // 0, $count{invariant_toggles} // 0;
printf "  triggers switched off under session_replication_role = replica %d, repaired %d (%d retries)\n",
  $count{replica_ddl} // 0, $count{repairs} // 0, $count{repair_retries} // 0;
printf "DDL: %d tried, %d accepted, %d refused, %d lock timeouts\n",
  $count{ddl_tried} // 0, $count{ddl_accepted} // 0, $count{ddl_refused} // 0, $count{ddl_lock_timeouts} // 0;
printf "  %s\n", join(', ', map { "$_ $ddl{$_}" } sort keys %ddl);
printf "history: %s\n", join(', ', map { "$_ $hist{$_}" } sort keys %hist);
printf "partitions (legacy/target leaves) %s, final rows legacy/target %s\n", $s{partitions} // '?', $s{final_rows} // '?';
printf "quiet points: %d passed, %d failed; acct compared %d times, bstat %d, children %d; differences found: %d; parity agreed %d/%d\n",
  $count{checks_passed} // 0, $count{checks_failed} // 0, $count{compared_acct} // 0, $count{compared_bstat} // 0,
  $count{tags_compared} // 0, $count{differences} // 0, $count{parity_agree} // 0,
  ($count{parity_agree} // 0) + ($count{parity_disagree} // 0);
if (@failures)
{
	print "FAILURES:\n";
	print "  - $_\n" for @failures;
	print "pgbench stderr (tail):\n", join("\n", grep { defined } (split /\n/, $bench_err)[-20 .. -1]), "\n"
	  if $bench_err ne '';
	print "RESULT: FAIL\n";
	exit 1;
}
print "RESULT: PASS\n";
exit 0;
