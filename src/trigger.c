/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  The write-authority triggers.
 *
 *	  While a migration is in a managed state (mirrored .. cutover) every
 *	  table of it (and every partition) carries, for migration <id>:
 *
 *	    softmig_<id>_guard  BEFORE INSERT/UPDATE/DELETE/TRUNCATE, statement:
 *	                        refuses writes to the non-authoritative side and
 *	                        TRUNCATE before anything is written;
 *	    softmig_<id>_ins    AFTER INSERT, statement, NEW TABLE softmig_new
 *	    softmig_<id>_upd    AFTER UPDATE, statement, OLD/NEW TABLE
 *	    softmig_<id>_del    AFTER DELETE, statement, OLD TABLE softmig_old
 *
 *	  The AFTER triggers write the other side with set-based statements over
 *	  the transition tables (see mapping.c), in the same transaction, so
 *	  exactly what the statement changed is carried over: ON CONFLICT DO
 *	  NOTHING rows that were not inserted never reach the transition table,
 *	  MERGE and writable CTEs fire per action, COPY fires INSERT.  An UPDATE
 *	  that changes a row's key moves the other side's row instead of
 *	  deleting and re-inserting it (old and new transition tables are read
 *	  in step; PostgreSQL appends to both per updated row).
 *
 *	  While softmig writes the other side for migration <id>, that
 *	  migration is marked as mirroring (softmig_mirror_enter), so its
 *	  triggers on the other side let our own writes through and never echo
 *	  them back (loop guard).  The mark is per migration: a write made
 *	  meanwhile to a table of another migration (by an application trigger
 *	  on the table softmig writes, or an ON DELETE CASCADE from it) is
 *	  that migration's business and is mirrored, projected or refused by
 *	  its own rules.  Since the marked migration's triggers ignore our own
 *	  writes, the executor need not collect transition tables for them
 *	  either: an
 *	  ExecutorStart hook drops the transition capture of statements softmig
 *	  runs itself, unless a trigger that is not softmig's wants the rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "parser/parse_relation.h"
#include "utils/json.h"
#include "utils/snapmgr.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "softmig.h"
#include "transwalk.h"
#include "opkey.h"

/* softmig.mirror_work_mem (kB; -1: maintenance_work_mem, 0: work_mem) */
static int	mirror_work_mem = -1;

/* Above this many rows a statement's mirror is planned afresh. */
#define SM_BIG_STATEMENT_ROWS 2000

/*
 * authority_of
 *		The side that owns writes in a state (SIDE_NONE in legacy).
 */
static SoftmigSide
authority_of(SoftmigState s)
{
	switch (s)
	{
		case SM_LEGACY:
			return SIDE_NONE;
		case SM_MIRRORED:
			return SIDE_LEGACY;
		default:
			return SIDE_TARGET;
	}
}

/*
 * trigger_migration
 *		Resolve the migration a trigger belongs to from its first argument.
 *		A trigger whose migration no longer exists refuses the write: it is
 *		an orphan of a half-removed migration and silence would be worse.
 */
static SoftmigMigration *
trigger_migration(TriggerData *td)
{
	Trigger    *tg = td->tg_trigger;
	SoftmigMigration *m;

	if (tg->tgnargs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig trigger \"%s\" has no migration argument", tg->tgname)));
	m = softmig_get_migration(pg_strtoint32(tg->tgargs[0]));
	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
				 errmsg("trigger \"%s\" on table \"%s\" belongs to a migration that no longer exists",
						tg->tgname, RelationGetRelationName(td->tg_relation)),
				 errhint("Drop the trigger, or restore the migration's catalog rows.")));
	return m;
}

/*
 * side_name
 *		"legacy" or "target", for messages.
 */
static const char *
side_name(SoftmigSide s)
{
	return s == SIDE_LEGACY ? "legacy" : "target";
}

/*
 * trigger_migration_id
 *		The migration id a softmig trigger carries as its argument.
 */
static int32
trigger_migration_id(TriggerData *td)
{
	if (td->tg_trigger->tgnargs < 1)
		elog(ERROR, "softmig trigger \"%s\" has no migration argument", td->tg_trigger->tgname);
	return pg_strtoint32(td->tg_trigger->tgargs[0]);
}

/*
 * check_write_triggers
 *		Refuse the write (SM002) unless the guard and the three AFTER
 *		triggers of migration m on rel exist and are plainly enabled
 *		(tgenabled 'O'): a disabled, REPLICA or ALWAYS trigger means a write
 *		that does not reach the other table, or is not refused, in some
 *		session_replication_role.  Reads rel's relcache trigger descriptor
 *		only.  A table found in order is remembered in m (triggers_ok) and
 *		not read again: any change to its triggers invalidates its relcache
 *		entry, and with it m (cache.c's relcache callback).
 */
static void
check_write_triggers(SoftmigMigration *m, Relation rel)
{
	static const char *const suffix[] = {"guard", "ins", "upd", "del"};
	TriggerDesc *trigdesc = rel->trigdesc;
	MemoryContext old;

	if (list_member_oid(m->triggers_ok, RelationGetRelid(rel)))
		return;
	for (int s = 0; s < lengthof(suffix); s++)
	{
		char		name[NAMEDATALEN];
		bool		ok = false;

		snprintf(name, sizeof(name), "softmig_%d_%s", m->id, suffix[s]);
		for (int i = 0; trigdesc && i < trigdesc->numtriggers; i++)
		{
			Trigger    *t = &trigdesc->triggers[i];

			if (strcmp(t->tgname, name) == 0 && t->tgenabled == TRIGGER_FIRES_ON_ORIGIN)
				ok = true;
		}
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
					 errmsg("write to table \"%s\" refused: trigger \"%s\" of migration \"%s\" is missing or not plainly enabled",
							RelationGetRelationName(rel), name, m->name),
					 errdetail("Without it the write would not reach the other table of the migration, or would not be refused."),
					 errhint("Re-enable it with ALTER TABLE ... ENABLE TRIGGER, or call softmig.repair_triggers(%s).",
							 quote_literal_cstr(m->name))));
	}
	old = MemoryContextSwitchTo(m->cxt);
	m->triggers_ok = lappend_oid(m->triggers_ok, RelationGetRelid(rel));
	MemoryContextSwitchTo(old);
}

/*
 * refuse_write
 *		Raise the documented SM001 error for a write to the wrong side.
 */
static void
refuse_write(SoftmigMigration *m, Relation rel, SoftmigSide side, const char *what)
{
	SoftmigSide auth = authority_of(m->state);
	const char *other = get_rel_name(auth == SIDE_LEGACY ? m->legacy : m->target);

	if (m->state == SM_CUTOVER && side == SIDE_LEGACY)
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
				 errmsg("%s on table \"%s\" refused: migration \"%s\" is in state cutover and the legacy table is frozen",
						what, RelationGetRelationName(rel), m->name),
				 errhint("Write to table \"%s\" instead.", other)));
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
			 errmsg("%s on table \"%s\" refused: migration \"%s\" is in state %s",
					what, RelationGetRelationName(rel), m->name,
					softmig_state_name(m->state)),
			 errdetail("In state %s the write authority is the %s table \"%s\"; table \"%s\" is its projection.",
					   softmig_state_name(m->state), side_name(auth), other,
					   RelationGetRelationName(rel)),
			 errhint("Write to table \"%s\" instead, or, as an owner of both tables, SET LOCAL softmig.override = '<reason>' for a recorded manual repair.",
					 other)));
}

/*
 * override_requested
 *		Is softmig.override set to a non-empty reason?
 */
static bool
override_requested(void)
{
	return softmig_override != NULL && softmig_override[0] != '\0';
}

PG_FUNCTION_INFO_V1(softmig_guard_trigger);
/*
 * softmig_guard_trigger
 *		BEFORE statement trigger: decide whether this statement may write
 *		this table at all, before any row is written.  Takes no locks of its
 *		own; ownership checks read the syscache.
 */
Datum
softmig_guard_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	SoftmigMigration *m;
	SoftmigSide side;
	SoftmigSide auth;
	Relation	rel;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) ||
		!TRIGGER_FIRED_BEFORE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._guard_trigger must be a BEFORE statement trigger")));

	if (softmig_mirroring(trigger_migration_id(td)))
		return PointerGetDatum(NULL);	/* softmig's own write for this
										 * migration */

	rel = td->tg_relation;
	m = trigger_migration(td);
	if (m->state == SM_LEGACY)
		return PointerGetDatum(NULL);
	/* no plans here: preparing them would lock the other table first */
	side = softmig_side_of_cached(m, RelationGetRelid(rel));
	if (side == SIDE_NONE)
		(void) softmig_get_plans(m, rel);	/* raises the "not one of its
											 * tables" error */
	auth = authority_of(m->state);
	if (side != auth && softmig_mirror_depth > 0 && softmig_mirroring_group_sibling(m))
		return PointerGetDatum(NULL);	/* a foreign key action of a
										 * projection */

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		if (m->state != SM_CUTOVER || side == SIDE_LEGACY)
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
					 errmsg("TRUNCATE on table \"%s\" refused: migration \"%s\" is in state %s",
							RelationGetRelationName(rel), m->name,
							softmig_state_name(m->state)),
					 errdetail("TRUNCATE fires no row triggers, so it cannot be carried to the other table."),
					 errhint("Delete the rows with DELETE on the %s table, or roll the migration back to legacy first.",
							 side_name(auth))));
		return PointerGetDatum(NULL);
	}

	if (side == auth)
	{
		if (m->state != SM_CUTOVER)
			check_write_triggers(m, rel);
		softmig_opkey_claim(m, rel, side);	/* operation key (opkey.c) */
		return PointerGetDatum(NULL);
	}

	if (override_requested())
	{
		Oid			role = GetUserId();

		if (!superuser_arg(role) &&
			!(softmig_rel_ownercheck(m->legacy, role) &&
			  softmig_rel_ownercheck(m->target, role)))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("softmig.override refused for table \"%s\"", RelationGetRelationName(rel)),
					 errdetail("Only owners of both tables of migration \"%s\" may write its non-authoritative table.",
							   m->name)));
		check_write_triggers(m, rel);
		softmig_opkey_claim(m, rel, side);	/* operation key (opkey.c) */
		return PointerGetDatum(NULL);
	}

	/*
	 * Per-field authority: in mirrored the target may UPDATE the fields
	 * handed to it; the AFTER trigger checks that nothing else changed.
	 */
	if (m->state == SM_MIRRORED && side == SIDE_TARGET && m->new_fields != NIL &&
		TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		check_write_triggers(m, rel);
		softmig_opkey_claim(m, rel, side);	/* operation key (opkey.c) */
		return PointerGetDatum(NULL);
	}

	refuse_write(m, rel, side,
				 TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" :
				 TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" : "DELETE");
	return PointerGetDatum(NULL);
}

/*
 * log_override
 *		Record one history row per row written under softmig.override, with
 *		actor, reason, table, operation and the row's legacy key.  Keys are
 *		computed as the table's owner (mapping expressions are user SQL),
 *		the history insert runs as the catalog owner.
 */
static void
log_override(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	static SPIPlanPtr insert_plan = NULL;
	bool		use_old = TRIGGER_FIRED_BY_DELETE(td->tg_event);
	Datum		keys;
	bool		isnull;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	Oid			argtypes[6] = {INT4OID, NAMEOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
	Datum		values[6];
	int			ret;
	const char *op;

	softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
	ret = SPI_execute_plan(use_old ? p->keyjson_old : p->keyjson_new, NULL, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: computing override keys failed: %d", ret);
	keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if (isnull)
		return;					/* the statement changed no row */

	op = TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" :
		TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" : "DELETE";
	values[0] = Int32GetDatum(m->id);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(save_user, false)));
	values[2] = CStringGetTextDatum(softmig_override);
	values[3] = CStringGetTextDatum(get_rel_name(RelationGetRelid(td->tg_relation)));
	values[4] = CStringGetTextDatum(op);
	values[5] = keys;

	softmig_catalog_exec(&insert_plan,
						 "INSERT INTO softmig.history_log (migration_id, actor, action, reason, detail) "
						 "SELECT $1, $2, 'override', $3, pg_catalog.jsonb_build_object("
						 "'table', $4, 'operation', $5, 'key', k) "
						 "FROM pg_catalog.jsonb_array_elements($6) AS k",
						 6, argtypes, values, NULL, SPI_OK_INSERT, "writing the override log");
}

/*
 * keys_differ
 *		Did an update change any source key column of this row?  Binary
 *		comparison: a change that keeps the value equal but not identical
 *		(1.0 vs 1.00) is treated as a move onto the same key, which is
 *		harmless.
 */
static bool
keys_differ(SoftmigRelPlans *p, TupleDesc desc, TupleTableSlot *os, TupleTableSlot *ns)
{
	for (int i = 0; i < p->nkeys; i++)
	{
		AttrNumber	a = p->keyattnos[i];
		Form_pg_attribute att = TupleDescAttr(desc, a - 1);
		bool		on;
		bool		nn;
		Datum		ov = slot_getattr(os, a, &on);
		Datum		nv = slot_getattr(ns, a, &nn);

		if (on != nn)
			return true;
		if (!on && !datumIsEqual(ov, nv, att->attbyval, att->attlen))
			return true;
	}
	return false;
}

/*
 * mirror_snapshot
 *		The snapshot a fenced mirror statement (a DELETE or key change of
 *		legacy rows in state mirrored) runs with: under REPEATABLE READ or
 *		SERIALIZABLE the latest one rather than the transaction's, so that it
 *		sees rows a backfill batch committed after the transaction began
 *		(as foreign-key checks do); otherwise InvalidSnapshot, i.e. SPI's
 *		usual fresh snapshot per statement.
 */
static Snapshot
mirror_snapshot(bool fence)
{
	if (fence && IsolationUsesXactSnapshot())
		return GetLatestSnapshot();
	return InvalidSnapshot;
}

/*
 * raise_work_mem
 *		For the statements that mirror or project a big write (over
 *		SM_BIG_STATEMENT_ROWS rows, planned with hash joins against the
 *		transition table): work_mem = softmig.mirror_work_mem, by default
 *		maintenance_work_mem, so the join's hash fits in memory instead of
 *		spilling in batches, as a bulk operation's memory would; never lower
 *		than the session's own work_mem.  Set for the caller's owner frame
 *		(softmig_frame_set_guc), whose end restores it.
 */
static void
raise_work_mem(void)
{
	int			kb = mirror_work_mem < 0 ? maintenance_work_mem : mirror_work_mem;
	char		buf[32];

	if (kb <= work_mem)
		return;
	snprintf(buf, sizeof(buf), "%d", kb);
	softmig_frame_set_guc("work_mem", buf);
}

/*
 * mirror_key_moves
 *		For an UPDATE, move the other side's row of every source row whose
 *		key changed, one saved-plan execution per changed row.  With fence
 *		(legacy side in state mirrored) the first changed key takes the
 *		backfill's delete fence of migration fence_id (see backfill.c) and
 *		the moves run with a fresh snapshot (mirror_snapshot).
 */
static void
mirror_key_moves(TriggerData *td, SoftmigRelPlans *p, bool fence, int32 fence_id)
{
	bool		fenced = false;
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	TransWalk	w;
	Datum	   *values = palloc(sizeof(Datum) * p->move_nargs);
	char	   *nulls = palloc(sizeof(char) * p->move_nargs);
	int			half = p->move_nargs / 2;

	softmig_trans_walk_begin(&w, td, true, true);
	while (softmig_trans_walk_next(&w))
	{
		TupleTableSlot *os = w.os;
		TupleTableSlot *ns = w.ns;
		int			k = 0;

		if (!keys_differ(p, desc, os, ns))
			continue;
		if (p->move == NULL && p->move_refused == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("key change on table \"%s\" cannot be carried to the other table of its migration",
							RelationGetRelationName(td->tg_relation)),
					 errdetail("The table takes part in a split or a merge: each member's rows belong to their entity by its key."),
					 errhint("Delete the row and insert it again with the new key.")));
		if (p->move == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("key change on table \"%s\" cannot be carried to the other table of its migration",
							RelationGetRelationName(td->tg_relation)),
					 errdetail("The other table's key column \"%s\" is GENERATED ALWAYS AS IDENTITY, which no UPDATE may set.",
							   p->move_refused),
					 errhint("Make that column GENERATED BY DEFAULT (ALTER TABLE ... ALTER COLUMN ... SET GENERATED BY DEFAULT) to allow key changes, or delete the row and insert it again.")));
		if (!fenced && fence)
		{
			softmig_fence_live_write(fence_id);
			fenced = true;
		}
		slot_getallattrs(os);
		slot_getallattrs(ns);
		for (int i = 0; i < desc->natts; i++)
		{
			if (TupleDescAttr(desc, i)->attisdropped)
				continue;
			values[k] = os->tts_values[i];
			nulls[k] = os->tts_isnull[i] ? 'n' : ' ';
			values[half + k] = ns->tts_values[i];
			nulls[half + k] = ns->tts_isnull[i] ? 'n' : ' ';
			k++;
		}
		if (SPI_execute_snapshot(p->move, values, nulls, mirror_snapshot(fence),
								 InvalidSnapshot, false, true, 0) != SPI_OK_UPDATE)
			elog(ERROR, "softmig: moving a row to its new key failed");
	}
	softmig_trans_walk_end(&w);
}

/*
 * split_rows_unchanged
 *		For an UPDATE of a table of a member of a split: did it leave every
 *		column the member's mapping to the other side reads as it was, in
 *		every row (binary comparison)?  Then it writes nothing for this
 *		member: a city update of a split users table does not rewrite the
 *		owner's target row.  Needs the OLD rows (capture.c keeps them for
 *		split members).
 */
static bool
split_rows_unchanged(TriggerData *td, SoftmigRelPlans *p)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	TransWalk	w;
	bool		same = true;

	if (td->tg_oldtable == NULL ||
		tuplestore_tuple_count(td->tg_oldtable) != tuplestore_tuple_count(td->tg_newtable))
		return false;
	softmig_trans_walk_begin(&w, td, true, true);
	while (same && softmig_trans_walk_next(&w))
	{
		slot_getallattrs(w.os);
		slot_getallattrs(w.ns);
		for (int i = 0; i < p->nwatch && same; i++)
		{
			int			a = p->watch_attnos[i] - 1;

			same = softmig_attr_unchanged(w.os, w.ns, a, TupleDescAttr(desc, a));
		}
	}
	softmig_trans_walk_end(&w);
	return same;
}

/*
 * lock_split_entities
 *		For a member of a split projecting into legacy (new_write,
 *		new_read): take a transaction-level advisory lock per entity the
 *		statement wrote (its legacy table and a hash of its legacy key, in
 *		hash order).  The owner gathers the attribute rows when it creates
 *		a legacy row, and an attribute member updates only an existing
 *		legacy row: without the lock, an owner's row and an attribute row of
 *		one entity written by two transactions at once could each miss the
 *		other's.  With it the second waits for the first to commit, and its
 *		statement then sees it (READ COMMITTED: each projection statement
 *		takes a new snapshot).  Keys are computed as the target's owner.
 */
static void
lock_split_entities(TriggerData *td, SoftmigRelPlans *p)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	SPIPlanPtr	plan = p->split_lock[TRIGGER_FIRED_BY_DELETE(td->tg_event) ? 0 : 1];

	softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
	if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: locking the entities of a split failed");
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * check_split_snapshot
 *		REPEATABLE READ or SERIALIZABLE: the projection of a split or merge
 *		member into the shared table reads with the transaction's snapshot,
 *		which misses what another transaction committed for the same entity
 *		after it was taken, even though the entity lock (taken just before)
 *		made this one wait for it.  Run p->split_check under the latest
 *		snapshot and under the transaction's; if they differ, the
 *		projection would lose that transaction's write (an attribute row's
 *		columns with no legacy row to carry them, or a legacy row created
 *		without the attribute committed meanwhile): fail with 40001, as
 *		PostgreSQL fails such a writer's update of a row changed
 *		concurrently; the application retries.  Runs as the destination's
 *		owner.  The caller is connected to SPI with the transition tables
 *		registered.
 */
static void
check_split_snapshot(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	SPIPlanPtr	plan = p->split_check[TRIGGER_FIRED_BY_DELETE(td->tg_event) ? 0 : 1];
	char	   *seen[2];
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (plan == NULL || !IsolationUsesXactSnapshot())
		return;
	softmig_enter_owner_context(p->dst_owner, &save_nest, &save_user, &save_sec);
	for (int i = 0; i < 2; i++)
	{
		if (SPI_execute_snapshot(plan, NULL, NULL,
								 i == 0 ? GetLatestSnapshot() : GetTransactionSnapshot(),
								 InvalidSnapshot, true, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "softmig: checking the entities of a split failed");
		seen[i] = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	}
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if ((seen[0] == NULL) != (seen[1] == NULL) ||
		(seen[0] != NULL && strcmp(seen[0], seen[1]) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent write of the same entity"),
				 errdetail("Migration \"%s\" is part of a split or a merge; another transaction committed rows of an entity this statement writes after this transaction's snapshot was taken, and its projection into table \"%s\" would miss them.",
						   m->name, get_rel_name(m->split_merge ? m->target : m->legacy)),
				 errhint("Retry the transaction.")));
}

/*
 * supersede_pending
 *		An UPDATE or DELETE on the target of a group member with rows
 *		waiting for their parents: the earlier versions of the rows it
 *		changed are not to be projected any more (groups.c).  Keys are
 *		computed as the target's owner (mapping expressions are user SQL).
 */
static void
supersede_pending(SoftmigMigration *m, SoftmigRelPlans *p)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		isnull;
	Datum		keys;

	softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
	if (SPI_execute_plan(p->keyjson_old, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: computing the changed rows' keys failed");
	keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if (!isnull)
		softmig_group_supersede(m->id, DatumGetJsonbP(keys));
}

/*
 * detect_new_only
 *		Projection only: rows with a new_only column set, the
 *		representable predicate false, or a NULL correlation key (an
 *		entity the target created on its own; the projection skips it).
 *		Evaluated as the target's owner.
 */
static void
detect_new_only(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	int64		n;
	int64		nullkey;
	Datum		keys;
	bool		isnull;
	bool		keys_null;

	softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
	if (SPI_execute_plan(p->newonly, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: new-only detection failed");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &keys_null);
	nullkey = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if (n == 0)
		return;
	if (nullkey == n)
	{
		/* only rows the target created on its own: no legacy row correlates */
		if (m->reject_new_only && m->envelope_open)
			softmig_refuse_new_only(m, td->tg_relation,
									"The correlation key is NULL: an entity the target created on its own, which legacy cannot hold.");
		softmig_note_new_only(m, n, keys, keys_null, "the correlation key is NULL: an entity the target created on its own");
		return;
	}
	if (m->reject_new_only && m->envelope_open)
		softmig_refuse_new_only(m, td->tg_relation,
								"A new_only column is set, or the representable predicate is false.");
	softmig_note_new_only(m, n, keys, keys_null, "a new_only column is set or the representable predicate is false");
}

/*
 * row_key
 *		The legacy key (jsonb) of one target row given as parameters, or NULL
 *		if the backward key mapping itself cannot compute it.  Runs in its
 *		own subtransaction; the result is copied into the current context.
 */
static Jsonb *
row_key(SoftmigRelPlans *p, Datum *values, char *nulls)
{
	bool		isnull;
	Datum		d;

	if (softmig_spi_try(p->keyjson_row, NULL, values, nulls, true, SPI_OK_SELECT, NULL) != NULL ||
		SPI_processed != 1)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : DatumGetJsonbPCopy(d);
}

/*
 * is_fk_violation
 *		A foreign key violation: for the mirror of a group member, a child
 *		whose parent the target does not hold yet.
 */
static bool
is_fk_violation(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_FOREIGN_KEY_VIOLATION;
}

/*
 * row_params
 *		The live columns of a deformed row of desc as SPI parameters (the
 *		order row_params_select gives them in mapping.c).
 */
static void
row_params(TupleTableSlot *slot, TupleDesc desc, Datum *values, char *nulls)
{
	int			k = 0;

	slot_getallattrs(slot);
	for (int i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		values[k] = slot->tts_values[i];
		nulls[k] = slot->tts_isnull[i] ? 'n' : ' ';
		k++;
	}
}

/*
 * upsert_row_by_row
 *		After the set-based upsert of a statement's rows failed with an
 *		error filter accepts: upsert them one by one, each in its own
 *		subtransaction (errors filter does not accept are raised).  A row of
 *		a group member refused for a missing parent (a foreign key
 *		violation) waits for it (groups.c); the other rows that fail are
 *		counted, and the first one's message and legacy key returned.
 */
static int64
upsert_row_by_row(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p,
				  bool (*filter) (int), char **first_msg, Jsonb **first_key)
{
	Tuplestorestate *rows = td->tg_newtable;
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	Datum	   *values = palloc(sizeof(Datum) * p->row_nargs);
	char	   *nulls = palloc(sizeof(char) * p->row_nargs);
	int64		failed = 0;
	ErrorData  *rowerr;

	*first_msg = NULL;
	*first_key = NULL;
	tuplestore_select_read_pointer(rows, 0);
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, true, slot))
	{
		row_params(slot, desc, values, nulls);
		rowerr = softmig_spi_try(p->upsert_row, NULL, values, nulls, false,
								 p->upsert_rc, filter);
		if (rowerr == NULL)
			continue;
		if (m->group_id != 0 && rowerr->sqlerrcode == ERRCODE_FOREIGN_KEY_VIOLATION)
		{
			/*
			 * a child before its parent: retried after the group's next write
			 * (groups.c)
			 */
			Jsonb	   *key = row_key(p, values, nulls);

			if (key != NULL)
			{
				softmig_group_pend(m, RelationGetRelid(td->tg_relation), desc, values, nulls,
								   p->row_nargs, key, rowerr->message);
				FreeErrorData(rowerr);
				continue;
			}
		}
		failed++;
		if (*first_msg == NULL)
		{
			*first_msg = pstrdup(rowerr->message);
			*first_key = row_key(p, values, nulls);
		}
		FreeErrorData(rowerr);
	}
	ExecDropSingleTupleTableSlot(slot);
	return failed;
}

/*
 * spi_result_error
 *		A mirror statement did not report the command it is: a rule on the
 *		other table rewrote it (SPI_OK_REWRITTEN; the DDL guard refuses such
 *		rules, but event triggers do not fire under session_replication_role
 *		= replica), or something that cannot happen.
 */
static void
spi_result_error(SoftmigMigration *m, SoftmigRelPlans *p, int ret, const char *what)
{
	if (ret == SPI_OK_REWRITTEN)
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
				 errmsg("mirroring %s of migration \"%s\" failed: a rule rewrites writes to table \"%s\"",
						what, m->name, get_rel_name(p->side == SIDE_LEGACY ? m->target : m->legacy)),
				 errdetail("softmig carries each statement's rows to the other table as written; a rule would change what is written."),
				 errhint("Drop the rule (DROP RULE); use a trigger instead.")));
	elog(ERROR, "softmig: mirroring %s failed: SPI code %d", what, ret);
}

/*
 * one_row_params
 *		The only row of transition table rows (a statement of one row) as
 *		parameters of the one-row plans (row_params), into values and nulls
 *		of p->row_nargs entries, palloc'd in the current context.
 */
static void
one_row_params(TriggerData *td, SoftmigRelPlans *p, Tuplestorestate *rows,
			   Datum **values, char **nulls)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);

	*values = palloc(sizeof(Datum) * Max(p->row_nargs, 1));
	*nulls = palloc(sizeof(char) * Max(p->row_nargs, 1));
	tuplestore_select_read_pointer(rows, 0);
	tuplestore_rescan(rows);
	if (!tuplestore_gettupleslot(rows, true, false, slot))
		elog(ERROR, "softmig: the row of a one-row statement is missing");
	row_params(slot, desc, *values, *nulls);
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * One execution of a one-row UPDATE's kept plan (one_row_update_run).
 */
typedef struct OneRowUpdate
{
	TriggerData *td;
	SoftmigMigration *m;
	SoftmigRelPlans *p;
	Datum	   *values;
	char	   *nulls;
	uint64		processed;		/* out: rows updated */
} OneRowUpdate;

/*
 * one_row_update_run
 *		Run p->update once with the row as parameters: without a second
 *		executor where its plan allows (directwrite.c), else through SPI.
 *		Sets u->processed.  Raised errors are the statement's.
 */
static void
one_row_update_run(void *arg)
{
	OneRowUpdate *u = (OneRowUpdate *) arg;
	int			ret;

	ret = softmig_direct_write(u->p->update, &u->p->update_direct, u->m->cxt,
								u->values, u->nulls);
	if (ret >= 0)
	{
		u->processed = ret;
		ereport(DEBUG2,
				(errmsg_internal("softmig: one-row UPDATE of \"%s\" carried without a second executor",
								 RelationGetRelationName(u->td->tg_relation))));
		return;
	}
	if ((ret = SPI_execute_plan(u->p->update, u->values, u->nulls, false, 0)) != SPI_OK_UPDATE)
		spi_result_error(u->m, u->p, ret, "UPDATE");
	u->processed = SPI_processed;
}

/*
 * one_row_update
 *		Carry a one-row UPDATE to the other table: update its row in place
 *		by key (p->update, the new row as parameters: an index probe of the
 *		other table, run without a second executor where its plan allows),
 *		and run the upsert only if it has no such row.  Same result as the
 *		upsert alone (the UPDATE sets what the upsert's DO UPDATE sets, so
 *		the merge rule holds alike), but a row that exists is neither probed
 *		for a conflict first nor locked before it is updated.  Key moves
 *		have run before.  With tolerated, each statement runs in a
 *		subtransaction and an error tolerated accepts is returned (the
 *		projection's new-only detection); without, errors are raised.  The
 *		caller is connected to SPI and runs as the other table's owner.
 */
static ErrorData *
one_row_update(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p,
			   bool (*tolerated) (int))
{
	OneRowUpdate u = {td, m, p, NULL, NULL, 0};
	ErrorData  *edata = NULL;
	int			ret;

	one_row_params(td, p, td->tg_newtable, &u.values, &u.nulls);
	ereport(DEBUG2,
			(errmsg_internal("softmig: one-row UPDATE of \"%s\" carried by key",
							 RelationGetRelationName(td->tg_relation))));
	if (tolerated)
		edata = softmig_subxact_try(one_row_update_run, &u, tolerated);
	else
		one_row_update_run(&u);
	if (edata != NULL || u.processed > 0)
		return edata;

	/* the other table lacks the row: the upsert over the transition table */
	if (tolerated)
		return softmig_spi_try(p->upsert, NULL, NULL, NULL, false, p->upsert_rc, tolerated);
	if ((ret = SPI_execute_plan(p->upsert, NULL, NULL, false, 0)) != p->upsert_rc)
		spi_result_error(m, p, ret, "INSERT");
	return NULL;
}

/*
 * one_row_insert
 *		Try to mirror or project a one-row INSERT without a second executor:
 *		p->upsert_row (the upsert with the row as parameters) run by
 *		directwrite.c, which inserts the row unless the other table already
 *		holds its key (a projection: nor when the row has no target key).
 *		Returns false, with nothing written, when the caller must run the
 *		upsert over the transition table instead (the key is there, the plan
 *		does not allow, a split or group member).  The caller is connected to
 *		SPI and runs as the other table's owner.
 */
static bool
one_row_insert(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	Datum	   *values;
	char	   *nulls;

	if (p->upsert_row == NULL || m->group_id != 0 || m->split_owner != 0 ||
		m->split_attrs != NIL)
		return false;
	one_row_params(td, p, td->tg_newtable, &values, &nulls);
	if (softmig_direct_write(p->upsert_row, &p->insert_direct, m->cxt, values, nulls) < 0)
		return false;
	ereport(DEBUG2,
			(errmsg_internal("softmig: one-row INSERT of \"%s\" carried without a second executor",
							 RelationGetRelationName(td->tg_relation))));
	return true;
}

/*
 * one_row_delete
 *		Carry a one-row DELETE to the other table: delete its row by key
 *		(p->delete_row, the old row as parameters: an index probe) with the
 *		snapshot of the statement path (mirror_snapshot).  The caller is
 *		connected to SPI, runs as the other table's owner and has taken the
 *		delete fence if one is due.
 */
static void
one_row_delete(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p, bool fence)
{
	Datum	   *values;
	char	   *nulls;
	int			ret;

	one_row_params(td, p, td->tg_oldtable, &values, &nulls);
	ereport(DEBUG2,
			(errmsg_internal("softmig: one-row DELETE of \"%s\" carried by key",
							 RelationGetRelationName(td->tg_relation))));
	if (softmig_direct_write(p->delete_row, &p->delete_direct, m->cxt, values, nulls) >= 0)
	{
		ereport(DEBUG2,
				(errmsg_internal("softmig: one-row DELETE of \"%s\" carried without a second executor",
								 RelationGetRelationName(td->tg_relation))));
		return;
	}
	ret = SPI_execute_snapshot(p->delete_row, values, nulls, mirror_snapshot(fence),
							   InvalidSnapshot, false, true, 0);
	if (ret != p->delete_rc)
		spi_result_error(m, p, ret, "DELETE");
}

/*
 * One projected one-row INSERT (one_row_project_run).
 */
typedef struct OneRowProject
{
	TriggerData *td;
	SoftmigMigration *m;
	SoftmigRelPlans *p;
} OneRowProject;

/*
 * one_row_project_run
 *		Project a one-row INSERT into legacy: without a second executor
 *		where the plan allows (one_row_insert), else the upsert over the
 *		transition table.  Raised errors are the statement's.
 */
static void
one_row_project_run(void *arg)
{
	OneRowProject *r = (OneRowProject *) arg;

	if (!one_row_insert(r->td, r->m, r->p))
		softmig_spi_expect(SPI_execute_plan(r->p->upsert, NULL, NULL, false, 0),
						   r->p->upsert_rc, "run one of its statements");
}

/*
 * project_upsert
 *		Project the statement's rows into legacy, set-based.  If that fails
 *		because legacy cannot represent some row, retry row by row in
 *		subtransactions: rows that fail are new-only (not projected; the
 *		envelope closes), the others are projected.  In reject mode with the
 *		envelope open the upsert runs without a subtransaction and its error
 *		is the statement's.  A one-row UPDATE updates legacy's row in place
 *		first (one_row_update), a one-row INSERT is inserted without a
 *		second executor where it can be (one_row_project_run), both in the
 *		same subtransaction discipline.
 */
static void
project_upsert(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	ErrorData  *edata;
	int64		failed;
	char	   *first_msg;
	Jsonb	   *first_key;
	bool		one_row = (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && p->update != NULL &&
						   tuplestore_tuple_count(td->tg_newtable) == 1);
	bool		one_ins = (TRIGGER_FIRED_BY_INSERT(td->tg_event) &&
						   tuplestore_tuple_count(td->tg_newtable) == 1);
	OneRowProject r = {td, m, p};

	/*
	 * Rejecting new-only state: any error of the upsert is the statement's
	 * error, so no subtransaction is needed to catch it (nor the
	 * subtransaction ID a write inside one is given).
	 */
	if (m->reject_new_only && m->envelope_open)
	{
		if (one_row)
			(void) one_row_update(td, m, p, NULL);
		else if (one_ins)
			one_row_project_run(&r);
		else
			softmig_spi_expect(SPI_execute_plan(p->upsert, NULL, NULL, false, 0),
							   p->upsert_rc, "run one of its statements");
		return;
	}

	if (one_row)
		edata = one_row_update(td, m, p, softmig_unrepresentable);
	else if (one_ins)
		edata = softmig_subxact_try(one_row_project_run, &r, softmig_unrepresentable);
	else
		edata = softmig_spi_try(p->upsert, NULL, NULL, NULL, false, p->upsert_rc,
								softmig_unrepresentable);
	if (edata == NULL)
		return;
	if (m->reject_new_only && m->envelope_open)
		ReThrowError(edata);
	FreeErrorData(edata);

	/* row by row: find what legacy cannot hold */
	failed = upsert_row_by_row(td, m, p, softmig_unrepresentable, &first_msg, &first_key);
	if (failed > 0)
		softmig_note_new_only(m, failed, first_key ? JsonbPGetDatum(first_key) : (Datum) 0, first_key == NULL,
							  psprintf("the backward mapping or legacy's constraints refused the row: %s", first_msg));
}

/*
 * mirror_group_upsert
 *		Mirror the statement's rows of a group member into the target,
 *		set-based; if the target's foreign key refuses some (children
 *		written before their parents, the application's key deferred), go
 *		row by row: those wait for their parents (groups.c), the others are
 *		mirrored.  Any other error is raised.
 */
static void
mirror_group_upsert(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	ErrorData  *edata;
	char	   *first_msg;
	Jsonb	   *first_key;

	edata = softmig_spi_try(p->upsert, NULL, NULL, NULL, false, p->upsert_rc, is_fk_violation);
	if (edata == NULL)
		return;
	if (upsert_row_by_row(td, m, p, is_fk_violation, &first_msg, &first_key) > 0)
		ReThrowError(edata);	/* a row without a computable key */
	FreeErrorData(edata);
}

/*
 * check_quarantine
 *		Refuse the statement if any row it wrote (or, for UPDATE and DELETE,
 *		any row it changed) belongs to a quarantined entity.  Keys are
 *		computed as the table's owner, the lookup runs as the catalog owner
 *		(softmig_refuse_quarantined).
 */
static void
check_quarantine(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	for (int r = 0; r < 2; r++)
	{
		SPIPlanPtr	kp = (r == 0) ? p->keyjson_old : p->keyjson_new;
		bool		isnull;
		Datum		keys;

		if ((r == 0 && td->tg_oldtable == NULL) || (r == 1 && td->tg_newtable == NULL))
			continue;
		softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
		if (SPI_execute_plan(kp, NULL, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "softmig: computing keys failed");
		keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		softmig_leave_owner_context(save_nest, save_user, save_sec);
		if (isnull)
			continue;
		softmig_refuse_quarantined(m, td->tg_relation, keys);
	}
}

/*
 * mirror_big_insert
 *		A big INSERT mirrored as a plain INSERT in a subtransaction; if any
 *		key already exists on the other side (unique violation), roll it
 *		back and run the upsert instead.  Same result as the upsert, without
 *		speculative insertion in the common case.  The subtransaction
 *		releases the rows it inserted on rollback; the caller is connected
 *		to SPI and runs as the other table's owner.
 */
static void
mirror_big_insert(SoftmigRelPlans *p)
{
	if (softmig_spi_try(NULL, p->insert_sql, NULL, NULL, false, SPI_OK_INSERT,
						softmig_unique_violation) != NULL &&
		SPI_execute(p->upsert_sql, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "softmig: mirroring INSERT failed");
}

/*
 * mirror_statement
 *		Carry one statement's rows (its transition table) to the other table
 *		as that table's owner: key moves first for UPDATE, then the upsert,
 *		the delete, or, for statements over SM_BIG_STATEMENT_ROWS rows from
 *		the legacy side, the set-based INSERT / UPDATE with the upsert as
 *		fallback; a one-row UPDATE or DELETE runs a kept statement by key
 *		with the row as parameters instead (one_row_update, one_row_delete;
 *		a group member's UPDATE keeps the set-based path with its
 *		foreign-key retry, and so does a big INSERT of an attribute member
 *		of a split, whose rows may come before the owner's); the loop guard
 *		(softmig_mirror_enter) is up
 *		meanwhile.  Takes no locks of its own beyond what the mirrored
 *		statements take (ROW EXCLUSIVE on the other table, row locks).  The
 *		caller is connected to SPI and owns the transition tables.
 */
static void
mirror_statement(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	int			ret;
	volatile bool project_rows = (p->side == SIDE_TARGET && !TRIGGER_FIRED_BY_DELETE(td->tg_event));
	Tuplestorestate *rows = TRIGGER_FIRED_BY_DELETE(td->tg_event) ? td->tg_oldtable : td->tg_newtable;

	/*
	 * The cached plans were made for a transition table of unknown (small)
	 * size; for a big statement plan afresh, so the planner sees the real row
	 * count (a hash join instead of a nested loop for a mass DELETE).
	 */
	volatile bool big = tuplestore_tuple_count(rows) > SM_BIG_STATEMENT_ROWS;

	/*
	 * Deletes and key changes of legacy rows in state mirrored pass the
	 * backfill's delete fence, so a batch can never resurrect them.
	 */
	bool		fence = (m->state == SM_MIRRORED && p->side == SIDE_LEGACY);

	if (project_rows && p->newonly != NULL)
		detect_new_only(td, m, p);

	softmig_enter_owner_context(p->dst_owner, &save_nest, &save_user, &save_sec);
	softmig_prefer_index_plans(!big);
	if (big)
		raise_work_mem();
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		/* (no OLD rows: not captured, as no key column was set) */
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) &&
			td->tg_oldtable != NULL && tuplestore_tuple_count(td->tg_oldtable) > 0)
			mirror_key_moves(td, p, fence, m->id);
		if (project_rows)
			project_upsert(td, m, p);
		else if (TRIGGER_FIRED_BY_DELETE(td->tg_event) && tuplestore_tuple_count(rows) == 1)
		{
			if (fence)
				softmig_fence_live_write(m->id);
			one_row_delete(td, m, p, fence);
		}
		else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		{
			SPIPlanPtr	plan = p->delete;

			if (fence)
				softmig_fence_live_write(m->id);
			if (big && (plan = SPI_prepare(p->delete_sql, 0, NULL)) == NULL)
				elog(ERROR, "softmig: preparing the mirrored DELETE failed: %s",
					 SPI_result_code_string(SPI_result));
			ret = SPI_execute_snapshot(plan, NULL, NULL, mirror_snapshot(fence),
									   InvalidSnapshot, false, true, 0);
			if (big)
				SPI_freeplan(plan);
			if (ret != p->delete_rc)
				spi_result_error(m, p, ret, "DELETE");
		}
		else if (big && TRIGGER_FIRED_BY_INSERT(td->tg_event) && p->insert_sql &&
				 m->split_owner == 0)
			mirror_big_insert(p);
		else if (big && TRIGGER_FIRED_BY_UPDATE(td->tg_event) && p->update_sql)
		{
			ret = SPI_execute(p->update_sql, false, 0);
			if (ret != SPI_OK_UPDATE)
				spi_result_error(m, p, ret, "UPDATE");
			/* rows the target does not have yet: the upsert covers them */
			if (SPI_processed < (uint64) tuplestore_tuple_count(rows) &&
				SPI_execute(p->upsert_sql, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "softmig: mirroring UPDATE failed");
		}
		else if ((!big || m->split_owner != 0) && m->group_id != 0 && p->upsert_row != NULL)
			mirror_group_upsert(td, m, p);
		else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && p->update != NULL &&
				 tuplestore_tuple_count(rows) == 1)
			(void) one_row_update(td, m, p, NULL);
		else if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && tuplestore_tuple_count(rows) == 1 &&
				 one_row_insert(td, m, p))
			;					/* carried without a second executor */
		else
		{
			ret = big ? SPI_execute(p->upsert_sql, false, 0)
				: SPI_execute_plan(p->upsert, NULL, NULL, false, 0);
			if (ret != p->upsert_rc)
				spi_result_error(m, p, ret, "INSERT");
		}
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

PG_FUNCTION_INFO_V1(softmig_write_trigger);
/*
 * softmig_write_trigger
 *		AFTER statement trigger with transition tables: mirror (legacy ->
 *		target in mirrored) or project (target -> legacy in new_write and
 *		new_read) the statement's rows; log rows written by hand under
 *		softmig.override on the non-authoritative side.
 */
Datum
softmig_write_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	SoftmigMigration *m;
	SoftmigRelPlans *p;
	SoftmigSide auth;
	SoftmigSide side;
	Tuplestorestate *rows;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._write_trigger must be an AFTER statement trigger")));

	if (softmig_mirroring(trigger_migration_id(td)))
		return PointerGetDatum(NULL);	/* our own write: never echo it */

	rows = TRIGGER_FIRED_BY_DELETE(td->tg_event) ? td->tg_oldtable : td->tg_newtable;
	if (rows == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._write_trigger needs transition tables")));
	if (tuplestore_tuple_count(rows) == 0)
		return PointerGetDatum(NULL);

	m = trigger_migration(td);
	if (m->state == SM_LEGACY)
		return PointerGetDatum(NULL);
	auth = authority_of(m->state);
	side = softmig_side_of_cached(m, RelationGetRelid(td->tg_relation));

	if (side == auth && m->state == SM_CUTOVER)
		return PointerGetDatum(NULL);	/* the target is a plain table now */
	if (side != auth && softmig_mirror_depth > 0 && softmig_mirroring_group_sibling(m))
		return PointerGetDatum(NULL);	/* a foreign key action of a
										 * projection */
	if (side != auth && !override_requested() &&
		!(m->state == SM_MIRRORED && m->new_fields != NIL && TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
	{
		/* only reachable when the guard trigger was disabled */
		refuse_write(m, td->tg_relation, side,
					 TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" :
					 TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" : "DELETE");
	}

	if (m->one_to_many)
	{
		/* one legacy row, a set of target rows (onetomany.c) */
		if (side != auth)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("writing the %s table of one_to_many migration \"%s\" is not supported in state %s",
							side_name(side), m->name, softmig_state_name(m->state)),
					 errdetail("Manual writes under softmig.override and per-field authority work on one row per row.")));
		if (m->state != SM_CUTOVER)
			check_write_triggers(m, td->tg_relation);
		if (m->shadow_disabled)
			return PointerGetDatum(NULL);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		softmig_otm_write(td, m, side);
		SPI_finish();
		return PointerGetDatum(NULL);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	p = softmig_get_plans(m, td->tg_relation);
	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "SPI_register_trigger_data failed");

	if (m->n_quarantined > 0)
		check_quarantine(td, m, p);
	if (m->state == SM_MIRRORED && m->new_fields != NIL && side == SIDE_LEGACY && side == auth)
	{
		/* per-field authority across DELETE and re-INSERT (authority.c) */
		if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
			softmig_authority_note_deletes(td, m);
		else if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
			softmig_authority_check_inserts(td, m);
	}
	if (m->state == SM_MIRRORED && TRIGGER_FIRED_BY_UPDATE(td->tg_event) &&
		m->new_fields != NIL && !(side != auth && override_requested()))
	{
		/* per-field authority: each side changes only the fields it owns */
		softmig_authority_check_columns(td, m, side);
		if (side != auth)
		{
			softmig_authority_log_field_writes(td, m, p);
			softmig_authority_project_fields(td, m, p);
			SPI_finish();
			return PointerGetDatum(NULL);
		}
	}
	if (m->state != SM_CUTOVER)
		check_write_triggers(m, td->tg_relation);	/* the guard may be off */
	if (side != auth)
	{
		log_override(td, m, p);
		if (m->state == SM_MIRRORED && side == SIDE_TARGET)
			softmig_authority_log_field_writes(td, m, p);
	}
	else if (!m->shadow_disabled)
	{
		int32		group_id = m->group_id;
		int32		id = m->id;
		bool		projecting = (m->state != SM_LEGACY && m->state != SM_CUTOVER);

		/* a member of a split whose columns this UPDATE left alone */
		if (p->nwatch > 0 && TRIGGER_FIRED_BY_UPDATE(td->tg_event) &&
			!softmig_resync_forcing && split_rows_unchanged(td, p))
		{
			SPI_finish();
			return PointerGetDatum(NULL);
		}

		/*
		 * a split projecting into legacy: the owner creates and deletes
		 * legacy rows, the attribute members update them; each holds the
		 * entities it writes until commit (lock_split_entities)
		 */
		if (p->split_lock[0] != NULL && projecting)
		{
			lock_split_entities(td, p);
			check_split_snapshot(td, m, p);
		}
		/* a row waiting for its parent, updated or deleted since (groups.c) */
		if (group_id != 0 && projecting && !TRIGGER_FIRED_BY_INSERT(td->tg_event) &&
			softmig_group_pending(id))
			supersede_pending(m, p);
		mirror_statement(td, m, p);
		/* children of the group that waited for this projection (groups.c) */
		if (group_id != 0 && projecting)
			softmig_group_retry(group_id, id);
	}

	SPI_finish();
	return PointerGetDatum(NULL);
}

char	   *softmig_override = NULL;

/*
 * softmig_trigger_init
 *		Define softmig.override and softmig.mirror_work_mem (from _PG_init,
 *		before the softmig prefix is reserved).
 */
void
softmig_trigger_init(void)
{
	DefineCustomStringVariable("softmig.override",
							   "Reason for a manual write to the non-authoritative table of a migration.",
							   "Only owners of both tables may use it; every row written under it is recorded in the migration's history.",
							   &softmig_override,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("softmig.mirror_work_mem",
							"work_mem of the statements that mirror or project a write of more than 2000 rows.",
							"-1 uses maintenance_work_mem, 0 the session's work_mem; never lower than work_mem.",
							&mirror_work_mem,
							-1, -1, MAX_KILOBYTES,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
}
