/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  What the executor captures for softmig's statement triggers.  An
 *	  ExecutorStart hook drops the transition tables of statements softmig
 *	  itself runs into a table whose only transition-table triggers are
 *	  softmig's (the loop guard lets them through anyway), and stops
 *	  PostgreSQL from collecting OLD rows for an UPDATE that sets no key
 *	  column of the write authority (the write path then needs NEW only).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "softmig.h"

/* OID of softmig._write_trigger once seen; reset by any pg_proc change */
static Oid	write_trigger_oid = InvalidOid;

/*
 * write_trigger_oid_callback
 *		Syscache callback on pg_proc: forget the remembered OID (the
 *		extension may have been dropped and its OID reused).  No allocation.
 */
static void
write_trigger_oid_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	write_trigger_oid = InvalidOid;
}

/*
 * is_write_trigger
 *		Is t one of softmig's write triggers (function softmig._write_trigger,
 *		whatever schema the extension lives in)?  The function's OID is
 *		remembered after the first positive check (fmgr lookup) until the
 *		next change of pg_proc.
 */
static bool
is_write_trigger(Trigger *t)
{
	FmgrInfo	finfo;

	if (OidIsValid(write_trigger_oid) && t->tgfoid == write_trigger_oid)
		return true;
	if (strncmp(t->tgname, "softmig_", 8) != 0)
		return false;
	fmgr_info(t->tgfoid, &finfo);
	if (finfo.fn_addr != softmig_write_trigger)
		return false;
	write_trigger_oid = t->tgfoid;
	return true;
}

/*
 * transition_tables_all_ours
 *		Are all triggers in trigdesc that declare transition tables (only
 *		those with an OLD TABLE when old_only) softmig's write triggers?
 *		*ours is set to the last of them, NULL if there is none.
 */
static bool
transition_tables_all_ours(TriggerDesc *trigdesc, bool old_only, Trigger **ours)
{
	*ours = NULL;
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (t->tgoldtable == NULL && (old_only || t->tgnewtable == NULL))
			continue;
		if (!is_write_trigger(t))
			return false;
		*ours = t;
	}
	return true;
}

/*
 * drop_own_capture
 *		For a statement run while softmig writes for some migration
 *		(softmig_mirror_depth > 0): if every trigger with transition tables
 *		on the table it writes is a softmig write trigger of a migration
 *		softmig is writing for, each of which returns at once, stop the
 *		executor from filling transition tables nobody reads (a tuplestore
 *		row per written row, spilled to temp files above work_mem).  The
 *		AFTER statement triggers still fire, without tables.  A write
 *		trigger of any other migration needs its rows.
 */
static void
drop_own_capture(ModifyTableState *mt)
{
	ResultRelInfo *rri;
	Trigger    *ours;
	TriggerDesc *trigdesc;

	if (mt->mt_transition_capture == NULL && mt->mt_oc_transition_capture == NULL)
		return;
	rri = mt->rootResultRelInfo ? mt->rootResultRelInfo : mt->resultRelInfo;
	trigdesc = rri->ri_TrigDesc;
	if (trigdesc == NULL || !transition_tables_all_ours(trigdesc, false, &ours))
		return;
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (t->tgoldtable == NULL && t->tgnewtable == NULL)
			continue;
		if (t->tgnargs < 1 || !softmig_mirroring(pg_strtoint32(t->tgargs[0])))
			return;
	}
	mt->mt_transition_capture = NULL;
	mt->mt_oc_transition_capture = NULL;
}

/*
 * skip_unneeded_old_capture
 *		For an application's UPDATE of the authoritative table that sets no
 *		key column (legacy in state mirrored, the target in new_write and
 *		new_read): stop the executor from capturing the OLD transition
 *		table, which only softmig's write trigger declares and which it
 *		would read only to find changed keys (mirror_key_moves; the
 *		quarantine check then finds every key in the NEW table, since keys
 *		do not change).  That capture is a tuplestore row per updated
 *		row, spilled to temp files above work_mem.  Done only when nothing
 *		else can change a key or read OLD: one plain (unpartitioned) result
 *		table, no data-modifying WITH, no BEFORE or INSTEAD OF row UPDATE
 *		trigger, no other trigger with an OLD TABLE, no per-field authority
 *		and no split (their checks compare OLD with NEW), and neither the key columns nor
 *		generated columns depending on them among the updated columns.  The
 *		migration cannot change before the trigger fires: state and field
 *		changes lock the table against this statement's ROW EXCLUSIVE lock.
 *		May read the catalog (softmig_get_migration).
 */
static void
skip_unneeded_old_capture(ModifyTableState *mt, EState *estate)
{
	TransitionCaptureState *tcs = mt->mt_transition_capture;
	ResultRelInfo *rri = mt->resultRelInfo;
	TriggerDesc *trigdesc;
	Trigger    *ours;
	Relation	rel;
	SoftmigMigration *m;
	Bitmapset  *updated;
	List	   *keys;
	ListCell   *lc;

	/* (a partitioned table's root has a ResultRelInfo of its own) */
	if (tcs == NULL || !tcs->tcs_update_old_table || mt->mt_nrels != 1 ||
		rri == NULL || mt->rootResultRelInfo != rri)
		return;
	rel = rri->ri_RelationDesc;
	trigdesc = rri->ri_TrigDesc;
	if (rel->rd_rel->relkind != RELKIND_RELATION || trigdesc == NULL ||
		trigdesc->trig_update_before_row || trigdesc->trig_update_instead_row)
		return;
	if (!transition_tables_all_ours(trigdesc, true, &ours) || ours == NULL)
		return;
	updated = ExecGetAllUpdatedCols(rri, estate);

	/* every migration whose trigger reads OLD must be able to do without */
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (t->tgoldtable == NULL)
			continue;
		if (t->tgnargs < 1)
			return;
		m = softmig_get_migration(pg_strtoint32(t->tgargs[0]));
		if (m == NULL || m->new_fields != NIL)
			return;
		/* a split member compares OLD with NEW (trigger.c) */
		if (m->split_owner != 0 || m->split_attrs != NIL)
			return;
		if (m->state == SM_MIRRORED && m->legacy == RelationGetRelid(rel))
			keys = m->legacy_key;
		else if ((m->state == SM_NEW_WRITE || m->state == SM_NEW_READ) &&
				 m->target == RelationGetRelid(rel))
			keys = m->target_key;
		else
			return;
		foreach(lc, keys)
		{
			AttrNumber	a = attnameAttNum(rel, (char *) lfirst(lc), false);

			if (a <= 0 ||
				bms_is_member(a - FirstLowInvalidHeapAttributeNumber, updated))
				return;
		}
	}
	tcs->tcs_update_old_table = false;
	ereport(DEBUG1,
			(errmsg_internal("softmig: UPDATE of \"%s\" sets no key column, OLD rows not captured",
							 RelationGetRelationName(rel))));
}

static ExecutorStart_hook_type prev_ExecutorStart = NULL;

/* SET LOCAL softmig.override = 'reason': manual write to the other side. */
/*
 * mirror_ExecutorStart
 *		ExecutorStart hook: start the executor as usual; for statements
 *		softmig runs itself, drop transition capture nobody needs
 *		(drop_own_capture); for an application's UPDATE, the OLD capture
 *		when it is not needed (skip_unneeded_old_capture).  Other
 *		statements cost a test of the top plan node.
 */
static void
mirror_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	softmig_chain_hook(prev_ExecutorStart, standard_ExecutorStart, queryDesc, eflags);
	if (queryDesc->planstate == NULL ||
		!IsA(queryDesc->planstate, ModifyTableState))
		return;
	if (softmig_mirror_depth > 0)
		drop_own_capture((ModifyTableState *) queryDesc->planstate);
	else if (queryDesc->operation == CMD_UPDATE &&
			 !queryDesc->plannedstmt->hasModifyingCTE)
		skip_unneeded_old_capture((ModifyTableState *) queryDesc->planstate,
								  queryDesc->estate);
}

/*
 * softmig_capture_init
 *		Install the ExecutorStart hook and the pg_proc callback of
 *		is_write_trigger (from _PG_init).
 */
void
softmig_capture_init(void)
{
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = mirror_ExecutorStart;
	CacheRegisterSyscacheCallback(PROCOID, write_trigger_oid_callback, (Datum) 0);
}
