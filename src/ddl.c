/*-------------------------------------------------------------------------
 *
 * ddl.c
 *	  C helpers of the DDL guard (the event triggers of src/install/80_ddl.sql).
 *
 *	  - softmig._trigger_ddl(on) marks that softmig itself is creating or
 *	    dropping its triggers (advance, rollback, repair, drop, a new
 *	    partition), so the event triggers let that through while they
 *	    refuse the same DDL made by hand between mirrored and cutover.
 *	  - softmig._has_rows(rel) tells whether a table (or any leaf of a
 *	    partitioned one) holds a row, by a plain heap scan: no SQL, so no
 *	    user code and no privilege check is involved.
 *	  - softmig._ddl_partitions(command, detached) lists the partitions one
 *	    DDL command (from pg_event_trigger_ddl_commands()) created or
 *	    attached, or detached, so ddl_command_end acts on exactly those.
 *	  - softmig._ddl_start() runs at ddl_command_start of DROP TABLE: a
 *	    partition of a migrated table that holds rows cannot be dropped
 *	    while the migration is between mirrored and new_read (its rows
 *	    would vanish from one side only); an empty one may be.  sql_drop,
 *	    which no longer sees the rows, asks softmig._drop_approved(oid).
 *
 *	  Both marks are backend-local and forgotten at transaction end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "commands/event_trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "tcop/deparse_utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/catcache.h"
#include "access/htup_details.h"

#include "softmig.h"

/* softmig is creating or dropping its own triggers right now */
static bool managing_triggers = false;

/* relations DROP TABLE may remove although they carry softmig triggers */
static List *approved_drops = NIL;
static bool ddl_callback_registered = false;

/*
 * ddl_xact_callback
 *		Forget both marks at the end of every transaction.
 */
static void
ddl_xact_callback(XactEvent event, void *arg)
{
	managing_triggers = false;
	approved_drops = NIL;		/* lives in TopTransactionContext */
}

/*
 * register_callback
 *		Register ddl_xact_callback once per backend.
 */
static void
register_callback(void)
{
	if (!ddl_callback_registered)
	{
		RegisterXactCallback(ddl_xact_callback, NULL);
		ddl_callback_registered = true;
	}
}

PG_FUNCTION_INFO_V1(softmig_trigger_ddl);
/*
 * softmig_trigger_ddl
 *		softmig._trigger_ddl(on boolean) RETURNS boolean: set the "softmig
 *		manages its triggers" mark, returning its previous value so the
 *		caller can restore it.  EXECUTE is revoked from PUBLIC.
 */
Datum
softmig_trigger_ddl(PG_FUNCTION_ARGS)
{
	bool		prev = managing_triggers;

	register_callback();
	managing_triggers = PG_GETARG_BOOL(0);
	PG_RETURN_BOOL(prev);
}

PG_FUNCTION_INFO_V1(softmig_managing_triggers);
/*
 * softmig_managing_triggers
 *		softmig._managing_triggers() RETURNS boolean: is the mark set?
 */
Datum
softmig_managing_triggers(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(managing_triggers);
}

/*
 * leaf_has_rows
 *		Does one plain table hold a row visible to the latest snapshot (so
 *		committed rows and this transaction's own count)?  Reads at most one
 *		tuple.  The caller holds a lock on the relation.
 */
static bool
leaf_has_rows(Oid relid)
{
	Relation	rel = table_open(relid, NoLock);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		found;

	slot = table_slot_create(rel, NULL);
	scan = softmig_table_beginscan(rel, snap);
	found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return found;
}

/*
 * relation_has_rows
 *		leaf_has_rows over a table or every leaf of a partitioned table.
 *		Locks each relation in lockmode (kept to transaction end).
 */
static bool
relation_has_rows(Oid relid, LOCKMODE lockmode)
{
	List	   *rels;
	ListCell   *lc;

	LockRelationOid(relid, lockmode);
	rels = find_all_inheritors(relid, lockmode, NULL);
	foreach(lc, rels)
	{
		char		kind = get_rel_relkind(lfirst_oid(lc));

		if ((kind == RELKIND_RELATION || kind == RELKIND_MATVIEW ||
			 kind == RELKIND_TOASTVALUE) && leaf_has_rows(lfirst_oid(lc)))
			return true;
	}
	return false;
}

PG_FUNCTION_INFO_V1(softmig_has_rows);
/*
 * softmig_has_rows
 *		softmig._has_rows(rel regclass) RETURNS boolean.  Takes
 *		AccessShareLock on the relation and its partitions.  EXECUTE is
 *		revoked from PUBLIC (it reads without checking privileges).
 */
Datum
softmig_has_rows(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);

	if (get_rel_name(relid) == NULL)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(relation_has_rows(relid, AccessShareLock));
}

/*
 * mirrored_migration_of
 *		If relid is a partition (at any depth) of a table of a migration in
 *		state mirrored, new_write or new_read, return that migration's name
 *		and set *state to its state; else NULL.  Reads softmig.migrations
 *		through SPI (fully qualified, PUBLIC-readable).
 */
static char *
mirrored_migration_of(Oid relid, char **state)
{
	List	   *anc;
	Datum	   *elems;
	ArrayType  *arr;
	ListCell   *lc;
	int			i = 0;
	char	   *result = NULL;

	if (!get_rel_relispartition(relid))
		return NULL;
	anc = get_partition_ancestors(relid);
	elems = palloc(sizeof(Datum) * list_length(anc));
	foreach(lc, anc)
		elems[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	arr = construct_array(elems, i, OIDOID, sizeof(Oid), true, TYPALIGN_INT);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (softmig_spi_select_arg("SELECT m.name, m.state::pg_catalog.text FROM softmig.migrations m "
							   "WHERE (m.legacy::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1) "
							   "OR m.target::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1)) "
							   "AND m.state::pg_catalog.text OPERATOR(pg_catalog.=) ANY "
							   "('{mirrored,new_write,new_read}'::pg_catalog.text[])",
							   OIDARRAYOID, PointerGetDatum(arr), 1, "reading softmig.migrations") == 1)
	{
		MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);

		result = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		*state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return result;
}

PG_FUNCTION_INFO_V1(softmig_ddl_start);
/*
 * softmig_ddl_start
 *		Event trigger on ddl_command_start for DROP TABLE: refuse to drop a
 *		partition that holds rows while its migration is between mirrored
 *		and new_read; remember every other table the statement names as
 *		approved for sql_drop.  Takes AccessExclusiveLock on a partition it
 *		inspects (the lock DROP TABLE takes anyway), and only when the
 *		caller owns it (otherwise DROP TABLE fails by itself).
 */
Datum
softmig_ddl_start(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	DropStmt   *stmt;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._ddl_start must be called as an event trigger")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (trigdata->parsetree == NULL || !IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_VOID();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_TABLE)
		PG_RETURN_VOID();
	register_callback();

	foreach(lc, stmt->objects)
	{
		RangeVar   *rv = makeRangeVarFromNameList((List *) lfirst(lc));
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);
		char	   *name;
		char	   *state = NULL;
		MemoryContext old;

		if (!OidIsValid(relid))
			continue;
		name = mirrored_migration_of(relid, &state);
		if (name != NULL && softmig_rel_ownercheck(relid, GetUserId()) &&
			relation_has_rows(relid, AccessExclusiveLock))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("cannot drop partition %s: it holds rows and migration \"%s\" is in state %s",
							quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													   get_rel_name(relid)),
							name, state),
					 errdetail("Dropping it would remove its rows from one table of the migration only."),
					 errhint("DELETE its rows first (the deletes reach the other table), then drop it; or roll the migration back to legacy.")));
		old = MemoryContextSwitchTo(TopTransactionContext);
		approved_drops = lappend_oid(approved_drops, relid);
		MemoryContextSwitchTo(old);
	}
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(softmig_drop_approved);
/*
 * softmig_drop_approved
 *		softmig._drop_approved(oid) RETURNS boolean: did _ddl_start approve
 *		dropping this relation in the current transaction?
 */
Datum
softmig_drop_approved(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(list_member_oid(approved_drops, PG_GETARG_OID(0)));
}

/*
 * partitions_named
 *		The relations an ATTACH or DETACH PARTITION named by rv: the command
 *		resolved the name with the session's search_path, which an event
 *		trigger no longer has, so match the name instead.  Attached: the
 *		children of parent with that name (in rv's schema if given).
 *		Detached: the tables with that name that are no partition now (the
 *		caller keeps only those carrying the migration's triggers).  Reads
 *		pg_inherits and the pg_class syscache.
 */
static List *
partitions_named(RangeVar *rv, Oid parent, bool detached)
{
	Oid			nsp = rv->schemaname ? get_namespace_oid(rv->schemaname, true) : InvalidOid;
	List	   *result = NIL;

	if (rv->schemaname && !OidIsValid(nsp))
		return NIL;
	if (!detached)
	{
		List	   *children = find_inheritance_children(parent, NoLock);
		ListCell   *lc;

		foreach(lc, children)
		{
			Oid			child = lfirst_oid(lc);
			char	   *name = get_rel_name(child);

			if (name && strcmp(name, rv->relname) == 0 &&
				(!OidIsValid(nsp) || get_rel_namespace(child) == nsp))
				result = lappend_oid(result, child);
		}
	}
	else
	{
		CatCList   *list = SearchSysCacheList1(RELNAMENSP, CStringGetDatum(rv->relname));

		for (int i = 0; i < list->n_members; i++)
		{
			Form_pg_class cls = (Form_pg_class) GETSTRUCT(&list->members[i]->tuple);

			if ((!OidIsValid(nsp) || cls->relnamespace == nsp) && !cls->relispartition &&
				(cls->relkind == RELKIND_RELATION || cls->relkind == RELKIND_PARTITIONED_TABLE))
				result = lappend_oid(result, cls->oid);
		}
		ReleaseSysCacheList(list);
	}
	return result;
}

PG_FUNCTION_INFO_V1(softmig_ddl_partitions);
/*
 * softmig_ddl_partitions
 *		softmig._ddl_partitions(command pg_ddl_command, detached boolean)
 *		RETURNS oid[]: the relations one collected DDL command made
 *		partitions (CREATE TABLE ... PARTITION OF, ALTER TABLE ... ATTACH
 *		PARTITION) or, with detached, the ones it detached (partitions_named
 *		for ALTER TABLE, which records no address for them).  Reads the
 *		command's parse tree; only valid inside a ddl_command_end event
 *		trigger.
 */
Datum
softmig_ddl_partitions(PG_FUNCTION_ARGS)
{
	CollectedCommand *cmd = (CollectedCommand *) PG_GETARG_POINTER(0);
	bool		detached = PG_GETARG_BOOL(1);
	List	   *rels = NIL;
	ListCell   *lc;
	Datum	   *elems;
	int			i = 0;

	if (cmd->type == SCT_Simple && !detached && cmd->parsetree != NULL &&
		IsA(cmd->parsetree, CreateStmt) &&
		((CreateStmt *) cmd->parsetree)->partbound != NULL &&
		cmd->d.simple.address.classId == RelationRelationId)
		rels = lappend_oid(rels, cmd->d.simple.address.objectId);
	else if (cmd->type == SCT_AlterTable)
	{
		foreach(lc, cmd->d.alterTable.subcmds)
		{
			CollectedATSubcmd *sub = (CollectedATSubcmd *) lfirst(lc);
			AlterTableCmd *atc = (AlterTableCmd *) sub->parsetree;
			bool		is_detach;

			if (atc == NULL || !IsA(atc, AlterTableCmd) ||
				atc->def == NULL || !IsA(atc->def, PartitionCmd))
				continue;
			is_detach = (atc->subtype == AT_DetachPartition ||
						 atc->subtype == AT_DetachPartitionFinalize);
			if ((atc->subtype == AT_AttachPartition && !detached) ||
				(is_detach && detached))
				rels = list_concat(rels,
								   partitions_named(((PartitionCmd *) atc->def)->name,
													cmd->d.alterTable.objectId, detached));
		}
	}
	elems = palloc(sizeof(Datum) * (list_length(rels) + 1));
	foreach(lc, rels)
		elems[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, i, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
}
