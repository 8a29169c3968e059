# Crash points (issue 9, "Crash and chaos").
#
# Every case freezes one softmig operation at a known point, crashes the
# server there and checks, after the restart, that every invariant holds.
# Each case runs twice: once with kill -9 of the backend doing the operation
# (the postmaster then kills every backend and runs crash recovery), once
# with $node->stop('immediate') of the postmaster (then a fresh start).
#
# The crash points:
#
#   state_adv    advance mirrored -> new_write, waiting inside its LOCK TABLE
#                for a writer transaction that is still open on legacy;
#   state_rb     rollback new_write -> mirrored, waiting inside its LOCK TABLE
#                for a writer transaction open on the target;
#   state_inst   advance legacy -> mirrored inside an explicit transaction:
#                all its work done (triggers created, state and history
#                written), not committed, a writer queued behind its locks;
#   backfill     a backfill batch frozen between reading its rows (behind
#                the delete fence) and writing them (softmig.backfill_pause_lock),
#                with committed and uncommitted live writes around it;
#   proj_idle    new_write: a transaction that updated, re-keyed, deleted and
#                inserted target rows (projected into legacy in the same
#                transaction), killed after the writes, before COMMIT;
#   proj_frozen  new_write: an UPDATE of the target frozen in the middle of its
#                projection into legacy (a legacy row it must write is locked
#                FOR UPDATE by another session);
#   mirror_frozen mirrored: a key-changing UPDATE of legacy frozen in the
#                middle of moving the target rows (a target row is locked);
#   opkey        an operation-key claim: one transaction claimed key k1 and
#                wrote, a second one with k1 waits on the ledger for it; both
#                die before COMMIT (k0 was committed before the crash);
#   parity       softmig.parity in a REPEATABLE READ transaction, frozen
#                between its legacy and its target pass
#                (softmig.parity_pause_lock), while a live write commits.
#
# After each restart (check_invariants):
#   - the state in softmig.migrations is the one before the crash (the
#     frozen change never committed) or, once redone, the new one; never in
#     between: softmig.status(name)->'triggers'->>'healthy' is true, pg_trigger
#     holds exactly the four enabled softmig triggers per table in managed
#     states and none in legacy, and the last state change in the history
#     ends in the current state;
#   - the triggers behave as the state says (a probe row written on the
#     write authority reaches the other table, through insert, update and
#     delete; a write to the other table is refused with SM001);
#   - no half-mirrored rows: legacy seen through the mapping equals the
#     target (plain SQL, EXCEPT ALL both ways, row counts), and every write of
#     the killed transactions is gone from both tables;
#   - operations: the killed key is not applied, a retry with it succeeds
#     exactly once, a replay of a key committed before the crash is refused;
#   - backfill: the checkpoint survived, the next CALL completes and the
#     tables match.
#
# About 15-30 seconds (18 crashes and restarts).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $ROWS = 2000;
my $BF_PAUSE_LOCK = 6061;
my $PARITY_PAUSE_LOCK = 6062;

my $node = PostgreSQL::Test::Cluster->new('crash_points');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'softmig'
restart_after_crash = on
max_connections = 40
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION softmig;
	-- the SQLSTATE a statement raises, or 'ok'; the statement's writes are
	-- rolled back with the exception block's subtransaction when it fails
	CREATE FUNCTION sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
	BEGIN
		EXECUTE stmt;
		RETURN 'ok';
	EXCEPTION WHEN OTHERS THEN
		RETURN SQLSTATE;
	END $$;
});

sub sql { return $node->safe_psql('postgres', shift) }

# ---------------------------------------------------------------------------
# Tables, migration, oracle
# ---------------------------------------------------------------------------

# legacy_<tag> (id, qty, note) -> target_<tag> (item_id, quantity, note_uc),
# brought to $state (legacy; mirrored with a complete backfill; new_write).
sub setup_migration
{
	my ($tag, $state, %opt) = @_;
	sql(qq{
		CREATE TABLE legacy_$tag (id int PRIMARY KEY, qty int NOT NULL, note text);
		CREATE TABLE target_$tag (item_id int PRIMARY KEY, quantity bigint NOT NULL, note_uc text);
		INSERT INTO legacy_$tag SELECT g, g * 3, 'n' || g FROM generate_series(1, $ROWS) g;
	});
	sql(qq{
		SELECT softmig.create_migration('$tag', 'legacy_$tag', 'target_$tag',
			forward  => '{"item_id": "id", "quantity": "qty::bigint", "note_uc": "upper(note)"}',
			backward => '{"id": "item_id", "qty": "quantity::int", "note": "lower(note_uc)"}');
		-- frozen state changes must wait for the crash, not time out
		SELECT softmig.set_option('$tag', 'lock_timeout', '"10min"');
	});
	return if $state eq 'legacy';
	sql(qq{SELECT softmig.advance('$tag')});
	return if $opt{no_backfill};
	sql(qq{CALL softmig.backfill('$tag', batch_size => 1000)});
	return if $state eq 'mirrored';
	sql(qq{SELECT softmig.advance('$tag', 'new_write', reason => 'crash test setup', force => true)});
	die "unexpected setup state $state" unless $state eq 'new_write';
}

# Rows in one table and not in the other, legacy seen through the forward
# mapping; plain SQL, not softmig's parity.
sub diff_count
{
	my ($tag) = @_;
	return sql(qq{
		SELECT count(*) FROM (
			(SELECT id, qty::bigint, upper(note) FROM legacy_$tag
			 EXCEPT ALL SELECT item_id, quantity, note_uc FROM target_$tag)
			UNION ALL
			(SELECT item_id, quantity, note_uc FROM target_$tag
			 EXCEPT ALL SELECT id, qty::bigint, upper(note) FROM legacy_$tag)) d});
}

sub row_counts
{
	my ($tag) = @_;
	return sql(qq{SELECT (SELECT count(*) FROM legacy_$tag) || '|' || (SELECT count(*) FROM target_$tag)});
}

# A fingerprint of both tables' contents (to prove a killed transaction
# changed nothing).
sub fingerprint
{
	my ($tag) = @_;
	return sql(qq{
		SELECT md5((SELECT string_agg(format('%s/%s/%s', id, qty, note), ',' ORDER BY id) FROM legacy_$tag))
		    || '|' ||
		       md5((SELECT string_agg(format('%s/%s/%s', item_id, quantity, note_uc), ',' ORDER BY item_id)
		              FROM target_$tag))});
}

# The softmig triggers of the migration that exist and are enabled, per table.
sub trigger_counts
{
	my ($tag) = @_;
	return sql(qq{
		WITH m AS (SELECT id FROM softmig.migrations WHERE name = '$tag'),
		     t AS (SELECT tg.tgrelid, tg.tgenabled FROM pg_trigger tg, m
		            WHERE tg.tgname IN ('softmig_' || m.id || '_guard', 'softmig_' || m.id || '_ins',
		                                'softmig_' || m.id || '_upd', 'softmig_' || m.id || '_del'))
		SELECT (SELECT count(*) FROM t WHERE tgrelid = 'legacy_$tag'::regclass AND tgenabled IN ('O', 'A'))
		    || '|' ||
		       (SELECT count(*) FROM t WHERE tgrelid = 'target_$tag'::regclass AND tgenabled IN ('O', 'A'))
		    || '|' ||
		       (SELECT count(*) FROM t WHERE tgenabled NOT IN ('O', 'A'))});
}

# A probe entity written on the write authority must reach the other table
# (insert, update, delete); a write to the other table is refused (SM001).
my $probe_id = 900000;
sub probe_writes
{
	my ($tag, $state) = @_;
	my $p = ++$probe_id;
	if ($state eq 'legacy')
	{
		sql(qq{INSERT INTO legacy_$tag VALUES ($p, 1, 'probe')});
		is(sql(qq{SELECT count(*) FROM target_$tag WHERE item_id = $p}), '0',
			"$tag: in legacy a write to legacy is not mirrored");
		sql(qq{DELETE FROM legacy_$tag WHERE id = $p});
		return;
	}
	my $legacy_auth = $state eq 'mirrored';
	my ($auth, $other) = $legacy_auth ? ("legacy_$tag", "target_$tag") : ("target_$tag", "legacy_$tag");
	my ($k, $q_col, $n_col, $other_k) = $legacy_auth ? ('id', 'qty', 'note', 'item_id')
	                                                 : ('item_id', 'quantity', 'note_uc', 'id');
	my $note = $legacy_auth ? 'probe' : 'PROBE';
	my $other_row = $legacy_auth
	  ? qq{SELECT quantity || '/' || note_uc FROM target_$tag WHERE item_id = $p}
	  : qq{SELECT qty || '/' || note FROM legacy_$tag WHERE id = $p};

	sql(qq{INSERT INTO $auth VALUES ($p, 1, '$note')});
	is(sql($other_row), '1/' . ($legacy_auth ? 'PROBE' : 'probe'),
		"$tag: $state: an insert into $auth reaches $other");
	sql(qq{UPDATE $auth SET $q_col = 2 WHERE $k = $p});
	is(sql($other_row), '2/' . ($legacy_auth ? 'PROBE' : 'probe'),
		"$tag: $state: an update of $auth reaches $other");
	sql(qq{DELETE FROM $auth WHERE $k = $p});
	is(sql(qq{SELECT count(*) FROM $other WHERE $other_k = $p}), '0',
		"$tag: $state: a delete from $auth reaches $other");
	is(sql(qq{SELECT sqlstate_of('INSERT INTO $other VALUES ($p, 1, ''x'')')}), 'SM001',
		"$tag: $state: a write to $other is refused (SM001)");
}

# Everything that must hold after a crash, for a migration in $state.
sub check_invariants
{
	my ($tag, $state, %opt) = @_;

	is(sql(qq{SELECT state::text FROM softmig.migrations WHERE name = '$tag'}), $state,
		"$tag: state in softmig.migrations is $state");
	is(sql(qq{SELECT softmig.status('$tag')->'triggers'->>'healthy'}), 'true',
		"$tag: status reports the triggers healthy");
	is(trigger_counts($tag), $state eq 'legacy' ? '0|0|0' : '4|4|0',
		"$tag: pg_trigger holds the triggers of state $state, all enabled");
	is(sql(qq{SELECT to_state::text FROM softmig.history('$tag')
	         WHERE action IN ('create', 'advance', 'rollback') ORDER BY at DESC LIMIT 1}), $state,
		"$tag: the last state change in the history ends in $state");
	unless ($opt{no_diff})
	{
		is(diff_count($tag), '0', "$tag: legacy and target match through the mapping (no half-mirrored row)");
		my ($l, $t) = split /\|/, row_counts($tag);
		is($t, $l, "$tag: same row counts ($l)");
	}
	probe_writes($tag, $state);
}

# ---------------------------------------------------------------------------
# Sessions, freezing, crashing
# ---------------------------------------------------------------------------

# A psql session of its own, with its backend pid.
sub session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	return ($s, $pid);
}

# Send a statement that will block, and wait until its backend waits for a
# heavyweight lock of the given kind (relation, transactionid, tuple,
# advisory).
sub start_frozen
{
	my ($s, $pid, $sql, $wait_event, $what) = @_;
	$s->query_until(qr/sending/, "\\echo sending\n$sql;\n");
	$node->poll_query_until('postgres', qq{
		SELECT wait_event_type = 'Lock' AND wait_event = ANY (string_to_array('$wait_event', ','))
		  FROM pg_stat_activity WHERE pid = $pid})
	  or die "$what did not freeze (waiting for a lock: $wait_event)";
	pass("$what is frozen (waits for a lock: $wait_event)");
}

sub crash
{
	my ($how, $pid, $tag, @sessions) = @_;
	if ($how eq 'kill9')
	{
		my $log_offset = -s $node->logfile;
		ok(kill('KILL', $pid), "$tag: kill -9 of backend $pid");
		$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
		$node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
		  or die "the server did not come back after the crash of $tag";
		# PostgreSQL 19 names the process: "client backend (PID n)"
		like(slurp_file($node->logfile, $log_offset),
			qr/(?:server process|client backend) \(PID $pid\) was terminated by signal 9/,
			"$tag: the postmaster saw the crash and reinitialized");
	}
	else
	{
		$node->stop('immediate');
		$node->start;
		pass("$tag: postmaster stopped in immediate mode and restarted");
	}
	# the sessions' backends are gone; reap their psql processes
	for my $s (@sessions)
	{
		eval { $s->quit };
	}
}

# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------

# advance mirrored -> new_write, frozen in LOCK TABLE behind an open writer
sub case_state_adv
{
	my ($how) = @_;
	my $tag = "state_adv_$how";
	setup_migration($tag, 'mirrored');
	my $before = fingerprint($tag);

	my ($w, $wpid) = session();
	$w->query_safe('BEGIN');
	$w->query_safe(qq{INSERT INTO legacy_$tag VALUES (5001, 1, 'inflight')});
	$w->query_safe(qq{UPDATE legacy_$tag SET note = 'inflight' WHERE id = 10});

	my ($a, $apid) = session();
	start_frozen($a, $apid,
		qq{SELECT softmig.advance('$tag', 'new_write', reason => 'crash test', force => true)},
		'relation', "$tag: advance");
	is(sql(qq{SELECT softmig.state('$tag'::text)::text}), 'mirrored',
		"$tag: while the change waits, the state is still mirrored");

	crash($how, $apid, $tag, $w, $a);

	check_invariants($tag, 'mirrored');
	is(fingerprint($tag), $before, "$tag: the open writer's rows are gone from both tables");

	is(sql(qq{SELECT softmig.advance('$tag', 'new_write', reason => 'after the crash', force => true)}),
		'new_write', "$tag: the advance succeeds after the restart");
	check_invariants($tag, 'new_write');
}

# rollback new_write -> mirrored, frozen in LOCK TABLE behind an open writer
# of the target (whose writes were projected into legacy)
sub case_state_rb
{
	my ($how) = @_;
	my $tag = "state_rb_$how";
	setup_migration($tag, 'new_write');
	my $before = fingerprint($tag);

	my ($w, $wpid) = session();
	$w->query_safe('BEGIN');
	$w->query_safe(qq{UPDATE target_$tag SET quantity = -1 WHERE item_id = 11});
	$w->query_safe(qq{INSERT INTO target_$tag VALUES (5001, 1, 'INFLIGHT')});

	my ($r, $rpid) = session();
	start_frozen($r, $rpid, qq{SELECT softmig.rollback('$tag', 'crash test')},
		'relation', "$tag: rollback");

	crash($how, $rpid, $tag, $w, $r);

	check_invariants($tag, 'new_write');
	is(fingerprint($tag), $before, "$tag: the open writer's rows are gone from both tables");

	is(sql(qq{SELECT softmig.rollback('$tag', 'after the crash')}), 'mirrored',
		"$tag: the rollback succeeds after the restart");
	check_invariants($tag, 'mirrored');
}

# advance legacy -> mirrored done but not committed, a writer queued behind it
sub case_state_inst
{
	my ($how) = @_;
	my $tag = "state_inst_$how";
	setup_migration($tag, 'legacy');
	my $before = fingerprint($tag);

	my ($a, $apid) = session();
	$a->query_safe('BEGIN');
	is($a->query_safe(qq{SELECT softmig.advance('$tag')}), 'mirrored',
		"$tag: advance to mirrored ran inside an open transaction");
	is(trigger_counts($tag), '0|0|0', "$tag: its triggers are not visible to others before COMMIT");

	my ($w, $wpid) = session();
	start_frozen($w, $wpid, qq{INSERT INTO legacy_$tag VALUES (5001, 1, 'queued')},
		'relation', "$tag: a writer behind the uncommitted state change");

	crash($how, $apid, $tag, $a, $w);

	check_invariants($tag, 'legacy', no_diff => 1);
	is(fingerprint($tag), $before, "$tag: nothing was written by the killed transactions");
	is(sql(qq{SELECT count(*) FROM softmig.history('$tag') WHERE action = 'advance'}), '0',
		"$tag: the killed advance left no history row");

	is(sql(qq{SELECT softmig.advance('$tag')}), 'mirrored', "$tag: the advance succeeds after the restart");
	sql(qq{CALL softmig.backfill('$tag', batch_size => 500)});
	check_invariants($tag, 'mirrored');
}

sub backfill_progress
{
	my ($tag) = @_;
	return sql(qq{
		SELECT bp.phase || '|' || (bp.cursor->>'id') || '|' || bp.rows_backfilled || '|' || bp.batches
		  FROM softmig.backfill_progress bp JOIN softmig.migrations m ON m.id = bp.migration_id
		 WHERE m.name = '$tag'});
}

# a backfill batch frozen between reading and writing its rows
sub case_backfill
{
	my ($how) = @_;
	my $tag = "backfill_$how";
	setup_migration($tag, 'mirrored', no_backfill => 1);

	sql(qq{CALL softmig.backfill('$tag', batch_size => 250, max_batches => 2)});
	is(backfill_progress($tag), 'scan|500|500|2', "$tag: two batches checkpointed before the crash");

	# a committed live delete beyond the checkpoint, before the frozen batch
	sql(qq{DELETE FROM legacy_$tag WHERE id = 1800});

	my ($g, $gpid) = session();
	$g->query_safe("SELECT pg_advisory_lock($BF_PAUSE_LOCK)");

	# uncommitted live writes: in the frozen batch's range and beyond it
	my ($w, $wpid) = session();
	$w->query_safe('BEGIN');
	$w->query_safe(qq{UPDATE legacy_$tag SET note = 'uncommitted' WHERE id IN (600, 1500)});
	$w->query_safe(qq{INSERT INTO legacy_$tag VALUES (5001, 1, 'uncommitted')});

	my ($b, $bpid) = session();
	$b->query_safe("SET softmig.backfill_pause_lock = $BF_PAUSE_LOCK");
	start_frozen($b, $bpid, qq{CALL softmig.backfill('$tag', batch_size => 250)},
		'advisory', "$tag: backfill batch");

	# a committed live update while the batch is frozen (a live delete would
	# wait for the batch's delete fence; doc/backfill.md)
	sql(qq{UPDATE legacy_$tag SET note = 'live' WHERE id = 700});

	crash($how, $bpid, $tag, $g, $w, $b);

	is(backfill_progress($tag), 'scan|500|500|2', "$tag: the checkpoint survived, the frozen batch left none");
	is(sql(qq{SELECT count(*) FILTER (WHERE item_id <= 500) || '|' || count(*) FILTER (WHERE item_id > 500)
	         FROM target_$tag}), '500|1',
		"$tag: target holds the checkpointed rows and the committed live update only");
	check_invariants($tag, 'mirrored', no_diff => 1);

	my ($rc, $out, $err) = $node->psql('postgres', qq{CALL softmig.backfill('$tag', batch_size => 250)});
	is($rc, 0, "$tag: CALL softmig.backfill after the crash completes") or diag($err);
	is(sql(qq{SELECT softmig.status('$tag')->>'backfill_done'}), 'true', "$tag: backfill_done");
	like(backfill_progress($tag), qr/^done\|/, "$tag: progress phase done");
	is(diff_count($tag), '0', "$tag: legacy and target match after the resumed backfill");
	is(row_counts($tag), ($ROWS - 1) . '|' . ($ROWS - 1), "$tag: same row counts, the live delete included");
	is(sql(qq{SELECT count(*) FROM legacy_$tag WHERE note = 'uncommitted' OR id = 5001}) . '|' .
	   sql(qq{SELECT count(*) FROM target_$tag WHERE note_uc = 'UNCOMMITTED' OR item_id = 5001}), '0|0',
		"$tag: the killed live writes are on neither side");
	is(sql(qq{SELECT note_uc FROM target_$tag WHERE item_id = 700}), 'LIVE',
		"$tag: the committed live update was not overwritten by the backfill");
	check_invariants($tag, 'mirrored');
}

# new_write: a writer killed after its projected writes, before COMMIT
sub case_proj_idle
{
	my ($how) = @_;
	my $tag = "proj_idle_$how";
	setup_migration($tag, 'new_write');
	my $before = fingerprint($tag);

	my ($w, $wpid) = session();
	$w->query_safe('BEGIN');
	$w->query_safe(qq{UPDATE target_$tag SET quantity = quantity + 1000 WHERE item_id BETWEEN 1 AND 50});
	$w->query_safe(qq{UPDATE target_$tag SET item_id = 7000 WHERE item_id = 60});
	$w->query_safe(qq{DELETE FROM target_$tag WHERE item_id = 70});
	$w->query_safe(qq{INSERT INTO target_$tag VALUES (5001, 5, 'NEW')});
	is($w->query_safe(qq{SELECT count(*) FROM legacy_$tag WHERE id IN (5001, 7000) OR (id = 1 AND qty = 1003)}),
		'3', "$tag: inside the transaction the writes were projected into legacy");
	is(fingerprint($tag), $before, "$tag: nothing is visible to others before COMMIT");

	crash($how, $wpid, $tag, $w);

	check_invariants($tag, 'new_write');
	is(fingerprint($tag), $before, "$tag: the killed transaction left nothing on either side");
}

# new_write: an UPDATE of the target frozen inside its projection
sub case_proj_frozen
{
	my ($how) = @_;
	my $tag = "proj_frozen_$how";
	setup_migration($tag, 'new_write');
	my $before = fingerprint($tag);

	my ($g, $gpid) = session();
	$g->query_safe('BEGIN');
	$g->query_safe(qq{SELECT id FROM legacy_$tag WHERE id = 25 FOR UPDATE});

	my ($w, $wpid) = session();
	start_frozen($w, $wpid,
		qq{UPDATE target_$tag SET quantity = quantity + 1000, note_uc = 'HALF' WHERE item_id BETWEEN 20 AND 30},
		'transactionid,tuple', "$tag: the projection of an UPDATE of the target");

	crash($how, $wpid, $tag, $g, $w);

	check_invariants($tag, 'new_write');
	is(fingerprint($tag), $before, "$tag: the half-projected statement left nothing on either side");
}

# mirrored: a key-changing UPDATE of legacy frozen while moving target rows
sub case_mirror_frozen
{
	my ($how) = @_;
	my $tag = "mirror_frozen_$how";
	setup_migration($tag, 'mirrored');
	my $before = fingerprint($tag);

	my ($g, $gpid) = session();
	$g->query_safe('BEGIN');
	$g->query_safe(qq{SELECT item_id FROM target_$tag WHERE item_id = 25 FOR UPDATE});

	my ($w, $wpid) = session();
	start_frozen($w, $wpid, qq{UPDATE legacy_$tag SET id = id + 10000 WHERE id BETWEEN 20 AND 30},
		'transactionid,tuple', "$tag: the mirroring of a key-changing UPDATE of legacy");

	crash($how, $wpid, $tag, $g, $w);

	check_invariants($tag, 'mirrored');
	is(fingerprint($tag), $before, "$tag: the half-mirrored statement left nothing on either side");
}

# operation keys: a claim in flight and a second claimant waiting for it
sub case_opkey
{
	my ($how) = @_;
	my $tag = "opkey_$how";
	setup_migration($tag, 'mirrored');

	sql(qq{
		BEGIN;
		SET LOCAL softmig.operation_key = 'k0';
		INSERT INTO legacy_$tag VALUES (5000, 1, 'k0');
		COMMIT;
	});
	my $before = fingerprint($tag);

	my ($a, $apid) = session();
	$a->query_safe('BEGIN');
	$a->query_safe(q{SET LOCAL softmig.operation_key = 'k1'});
	$a->query_safe(qq{INSERT INTO legacy_$tag VALUES (5001, 1, 'k1')});

	my ($b, $bpid) = session();
	$b->query_safe('BEGIN');
	$b->query_safe(q{SET LOCAL softmig.operation_key = 'k1'});
	start_frozen($b, $bpid, qq{INSERT INTO legacy_$tag VALUES (5002, 1, 'k1 again')},
		'transactionid,tuple', "$tag: a second claim of k1");
	is(sql(qq{SELECT softmig.operation_applied('$tag', 'k1')}), 'f',
		"$tag: the claim in flight is not applied for others");

	crash($how, $apid, $tag, $a, $b);

	is(sql(qq{SELECT softmig.operation_applied('$tag', 'k0')}), 't', "$tag: k0 (committed) is still applied");
	is(sql(qq{SELECT softmig.operation_applied('$tag', 'k1')}), 'f', "$tag: k1 (killed) is not applied");
	is(sql(qq{SELECT count(*) FROM softmig.operations o JOIN softmig.migrations m ON m.id = o.migration_id
	         WHERE m.name = '$tag' AND o.key = 'k1'}), '0', "$tag: the ledger holds no claim of k1");
	is(fingerprint($tag), $before, "$tag: neither claimant's row is on either side");
	check_invariants($tag, 'mirrored');

	# retry k1: applied exactly once
	is(sql(qq{
		BEGIN;
		SET LOCAL softmig.operation_key = 'k1';
		SELECT sqlstate_of('INSERT INTO legacy_$tag VALUES (5001, 1, ''k1'')');
		COMMIT;}), 'ok', "$tag: a retry of k1 after the crash succeeds");
	is(sql(qq{
		BEGIN;
		SET LOCAL softmig.operation_key = 'k1';
		SELECT sqlstate_of('INSERT INTO legacy_$tag VALUES (5003, 1, ''k1 replay'')');
		COMMIT;}), '23505', "$tag: a second retry of k1 is refused as a duplicate (23505)");
	is(sql(qq{
		BEGIN;
		SET LOCAL softmig.operation_key = 'k0';
		SELECT sqlstate_of('INSERT INTO legacy_$tag VALUES (5004, 1, ''k0 replay'')');
		COMMIT;}), '23505', "$tag: a replay of k0 is refused as a duplicate (23505)");
	is(sql(qq{SELECT softmig.operation_applied('$tag', 'k1')}), 't', "$tag: k1 is applied now");
	is(sql(qq{SELECT string_agg(o.key, ',' ORDER BY o.key) FROM softmig.operations o
	         JOIN softmig.migrations m ON m.id = o.migration_id WHERE m.name = '$tag'}), 'k0,k1',
		"$tag: one ledger row per applied operation");
	is(sql(qq{SELECT string_agg(id::text, ',' ORDER BY id) FROM legacy_$tag WHERE id >= 5000}) . '|' .
	   sql(qq{SELECT string_agg(item_id::text, ',' ORDER BY item_id) FROM target_$tag WHERE item_id >= 5000 AND item_id < 900000}),
		'5000,5001|5000,5001', "$tag: each operation's row exists exactly once on each side");
	is(diff_count($tag), '0', "$tag: legacy and target match after the retries");
}

# parity in a REPEATABLE READ transaction, frozen between its two passes
sub case_parity
{
	my ($how) = @_;
	my $tag = "parity_$how";
	setup_migration($tag, 'mirrored');
	# one known difference, written by hand on the target (recorded override)
	sql(qq{
		BEGIN;
		SET LOCAL softmig.override = 'crash test: a known difference';
		UPDATE target_$tag SET quantity = -5 WHERE item_id = 33;
		COMMIT;
	});
	is(sql(qq{SELECT string_agg(kind || ':' || (key->>'id') || ':' || field, ',') FROM softmig.parity('$tag')}),
		'mismatch:33:quantity', "$tag: parity sees the known difference before the crash");
	my $checks_before = sql(qq{SELECT count(*) FROM softmig.check_results c
	                          JOIN softmig.migrations m ON m.id = c.migration_id WHERE m.name = '$tag'});

	my $have_hook = sql(q{SELECT current_setting('softmig.parity_pause_lock', true) IS NOT NULL});
	my ($g, $gpid) = session();
	my ($p, $ppid) = session();
	$p->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
	$p->query_safe(qq{SELECT count(*) FROM legacy_$tag});    # the snapshot
	if ($have_hook eq 't')
	{
		$g->query_safe("SELECT pg_advisory_lock($PARITY_PAUSE_LOCK)");
		$p->query_safe("SET LOCAL softmig.parity_pause_lock = $PARITY_PAUSE_LOCK");
	}
	else
	{
		# no test hook: hold the target against the parity run instead
		$g->query_safe('BEGIN');
		$g->query_safe(qq{LOCK TABLE target_$tag IN ACCESS EXCLUSIVE MODE});
	}
	# a live write committed after the snapshot
	sql(qq{UPDATE legacy_$tag SET qty = qty + 1 WHERE id = 44}) if $have_hook eq 't';
	start_frozen($p, $ppid, qq{SELECT * FROM softmig.parity('$tag', chunk_rows => 100)},
		$have_hook eq 't' ? 'advisory' : 'relation', "$tag: parity");

	crash($how, $ppid, $tag, $g, $p);

	is(sql(qq{SELECT count(*) FROM softmig.check_results c
	         JOIN softmig.migrations m ON m.id = c.migration_id WHERE m.name = '$tag'}), $checks_before,
		"$tag: no check result was recorded by the killed run");
	is(sql(qq{SELECT string_agg(kind || ':' || (key->>'id') || ':' || field, ',') FROM softmig.parity('$tag')}),
		'mismatch:33:quantity', "$tag: parity after the restart reports exactly the known difference");
	is(sql(qq{
		SELECT string_agg(DISTINCT id::text, ',') FROM (
			(SELECT id, qty::bigint, upper(note) FROM legacy_$tag
			 EXCEPT ALL SELECT item_id, quantity, note_uc FROM target_$tag)
			UNION ALL
			(SELECT item_id, quantity, note_uc FROM target_$tag
			 EXCEPT ALL SELECT id, qty::bigint, upper(note) FROM legacy_$tag)) d(id, q, n)}),
		'33', "$tag: and so does the plain-SQL oracle");
	my ($rc, $out, $err) = $node->psql('postgres', qq{SELECT softmig.run_checks('$tag') IS NOT NULL});
	is($rc, 0, "$tag: softmig.check runs after the restart") or diag($err);

	# repair the known difference and check everything
	sql(qq{
		BEGIN;
		SET LOCAL softmig.override = 'crash test: repair';
		UPDATE target_$tag t SET quantity = l.qty FROM legacy_$tag l WHERE t.item_id = 33 AND l.id = 33;
		COMMIT;
	});
	is(sql(qq{SELECT count(*) FROM softmig.parity('$tag')}), '0', "$tag: parity is clean after the repair");
	check_invariants($tag, 'mirrored');
}

for my $how ('kill9', 'immediate')
{
	note("crash mode: $how");
	case_state_adv($how);
	case_state_rb($how);
	case_state_inst($how);
	case_backfill($how);
	case_proj_idle($how);
	case_proj_frozen($how);
	case_mirror_frozen($how);
	case_opkey($how);
	case_parity($how);
}

$node->stop;
done_testing();
