/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Shims over differences between the PostgreSQL major versions softmig
 *	  supports: 15 and later (tested on 15, 17 and 18, and run on 19 as it
 *	  ships; 16 is expected to work but no test runs on it).  Every
 *	  version-dependent line of softmig is here, next to the PostgreSQL
 *	  change it answers, so the rest of the code reads as if written for one
 *	  release.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_COMPAT_H
#define SOFTMIG_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "softmig requires PostgreSQL 15 or later"
#endif

#include "access/tableam.h"
#include "executor/executor.h"
#include "nodes/plannodes.h"
#include "parser/parse_relation.h"
#include "parser/parsetree.h"
#include "utils/acl.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/*
 * Ownership checks: pg_class_ownercheck() was folded into
 * object_ownercheck() in PostgreSQL 16.
 */
#if PG_VERSION_NUM >= 160000
#define softmig_rel_ownercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#define softmig_rel_ownercheck(relid, roleid) \
	pg_class_ownercheck((relid), (roleid))
#endif

/*
 * Can role "member" act as role "role" (SET ROLE to it)?  PostgreSQL 16 made
 * that a property of the membership (the SET option).
 */
#if PG_VERSION_NUM >= 160000
#define softmig_member_can_act_as(member, role) member_can_set_role((member), (role))
#else
#define softmig_member_can_act_as(member, role) is_member_of_role((member), (role))
#endif

/*
 * A relation's physical file: RelFileNode rd_node (spcNode, relNode) became
 * RelFileLocator rd_locator (spcOid, relNumber) in PostgreSQL 16.
 */
#if PG_VERSION_NUM >= 160000
#define softmig_rel_tablespace(rel)	((rel)->rd_locator.spcOid)
#define softmig_rel_filenumber(rel)	((rel)->rd_locator.relNumber)
#else
#define softmig_rel_tablespace(rel)	((rel)->rd_node.spcNode)
#define softmig_rel_filenumber(rel)	((rel)->rd_node.relNode)
#endif

/*
 * old_snapshot_threshold ("snapshot too old") was removed in PostgreSQL 17;
 * before, -1 means off.
 */
#if PG_VERSION_NUM >= 170000
#define softmig_old_snapshot_threshold_on() false
#else
#define softmig_old_snapshot_threshold_on() (old_snapshot_threshold >= 0)
#endif

/*
 * get_guc_variables() returns its count through an argument since
 * PostgreSQL 16 (GUCs moved to a hash table); before, GetNumConfigOptions().
 */
#if PG_VERSION_NUM >= 160000
#define softmig_get_guc_variables(nvars) get_guc_variables(nvars)
#else
#define softmig_get_guc_variables(nvars) \
	(*(nvars) = GetNumConfigOptions(), get_guc_variables())
#endif

/*
 * The type-specific part of a GUC: struct config_string (and the others)
 * began with a struct config_generic until PostgreSQL 18; from 19 it is a
 * member of config_generic (_string).
 */
#if PG_VERSION_NUM >= 190000
#define softmig_guc_string(gen) (&(gen)->_string)
#else
#define softmig_guc_string(gen) ((struct config_string *) (gen))
#endif

/*
 * Run-time partition pruning of an Append or MergeAppend: the node held its
 * PartitionPruneInfo (part_prune_info) until PostgreSQL 17; from 18 it holds
 * an index into PlannedStmt.partPruneInfos, -1 for none (part_prune_index).
 */
#if PG_VERSION_NUM >= 180000
#define softmig_plan_prunes(node) ((node)->part_prune_index >= 0)
#else
#define softmig_plan_prunes(node) ((node)->part_prune_info != NULL)
#endif

/*
 * The RT indexes of a plan's result relations: a List of integers until
 * PostgreSQL 18, a Bitmapset (resultRelationRelids) from 19.  Returns a
 * Bitmapset either way (do not modify it).
 */
static inline Bitmapset *
softmig_result_relids(PlannedStmt *stmt)
{
#if PG_VERSION_NUM >= 190000
	return stmt->resultRelationRelids;
#else
	Bitmapset  *relids = NULL;
	ListCell   *lc;

	foreach(lc, stmt->resultRelations)
		relids = bms_add_member(relids, lfirst_int(lc));
	return relids;
#endif
}

/*
 * Privileges the executor checks on a range-table entry: kept in the entry
 * (requiredPerms, checkAsUser) until PostgreSQL 15; from 16 in a separate
 * RTEPermissionInfo, in PlannedStmt.permInfos, that the entry points to by
 * perminfoindex.
 *
 * softmig_check_rte_now checks now the privileges the executor would check
 * on rte when it starts the plan (with its standard error), and takes rte
 * out of that check.  Returns true when the check was made as the current
 * user (the plan then depends on the role), false when it was made as
 * another (a view owner's) or there was nothing to check.
 *
 * softmig_prune_perminfos: from 16, drop from stmt->permInfos the entries no
 * range-table entry points to any more (and renumber the pointers), as the
 * executor expects every one to be referenced.  No-op before.
 */
static inline bool
softmig_check_rte_now(PlannedStmt *stmt, RangeTblEntry *rte)
{
#if PG_VERSION_NUM >= 160000
	RTEPermissionInfo *perminfo;
	RangeTblEntry one;

	if (rte->perminfoindex == 0)
		return false;
	perminfo = getRTEPermissionInfo(stmt->permInfos, rte);
	one = *rte;
	one.perminfoindex = 1;
	(void) ExecCheckPermissions(list_make1(&one), list_make1(perminfo), true);
	rte->perminfoindex = 0;
	return perminfo->requiredPerms != 0 && !OidIsValid(perminfo->checkAsUser);
#else
	bool		as_caller;

	if (rte->requiredPerms == 0)
		return false;
	ExecCheckRTPerms(list_make1(rte), true);
	as_caller = !OidIsValid(rte->checkAsUser);
	rte->requiredPerms = 0;
	return as_caller;
#endif
}

static inline void
softmig_prune_perminfos(PlannedStmt *stmt)
{
#if PG_VERSION_NUM >= 160000
	int			n = list_length(stmt->permInfos);
	Index	   *newindex = palloc0(sizeof(Index) * (n + 1));
	List	   *kept = NIL;
	ListCell   *lc;

	foreach(lc, stmt->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

		if (rte->perminfoindex > 0 && rte->perminfoindex <= n)
			newindex[rte->perminfoindex] = 1;
	}
	for (int i = 1; i <= n; i++)
		if (newindex[i])
		{
			kept = lappend(kept, list_nth(stmt->permInfos, i - 1));
			newindex[i] = list_length(kept);
		}
	if (list_length(kept) == n)
		return;
	foreach(lc, stmt->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

		if (rte->perminfoindex > 0 && rte->perminfoindex <= n)
			rte->perminfoindex = newindex[rte->perminfoindex];
	}
	stmt->permInfos = kept;
#else
	(void) stmt;
#endif
}

/*
 * Shared hash tables: ShmemInitHash() lost its separate initial size in
 * PostgreSQL 19 (one size, nelems).
 */
#if PG_VERSION_NUM >= 190000
#define softmig_shmem_init_hash(name, nelems, info, flags) \
	ShmemInitHash((name), (nelems), (info), (flags))
#else
#define softmig_shmem_init_hash(name, nelems, info, flags) \
	ShmemInitHash((name), (nelems), (nelems), (info), (flags))
#endif

/* table_beginscan() takes scan option flags from PostgreSQL 19 (0: none). */
#if PG_VERSION_NUM >= 190000
#define softmig_table_beginscan(rel, snap) table_beginscan((rel), (snap), 0, NULL, 0)
#else
#define softmig_table_beginscan(rel, snap) table_beginscan((rel), (snap), 0, NULL)
#endif

/*
 * planner_hook and standard_planner() take the EXPLAIN state (NULL outside
 * EXPLAIN) from PostgreSQL 19: write the hook's parameter list as
 * (..., ParamListInfo boundParams SOFTMIG_PLANNER_EXTRA_PARAM) and pass it
 * on with (..., boundParams SOFTMIG_PLANNER_EXTRA_ARG).
 */
#if PG_VERSION_NUM >= 190000
#define SOFTMIG_PLANNER_EXTRA_PARAM , ExplainState *es
#define SOFTMIG_PLANNER_EXTRA_ARG , es
#else
#define SOFTMIG_PLANNER_EXTRA_PARAM
#define SOFTMIG_PLANNER_EXTRA_ARG
#endif

/*
 * ExecutorRun_hook and standard_ExecutorRun() lost their execute_once
 * argument in PostgreSQL 18: write the hook's parameter list as
 * (..., uint64 count SOFTMIG_EXECUTOR_RUN_EXTRA_PARAM) and pass it on with
 * (..., count SOFTMIG_EXECUTOR_RUN_EXTRA_ARG).
 */
#if PG_VERSION_NUM >= 180000
#define SOFTMIG_EXECUTOR_RUN_EXTRA_PARAM
#define SOFTMIG_EXECUTOR_RUN_EXTRA_ARG
#else
#define SOFTMIG_EXECUTOR_RUN_EXTRA_PARAM , bool execute_once
#define SOFTMIG_EXECUTOR_RUN_EXTRA_ARG , execute_once
#endif

/*
 * Hand a hooked planner, executor or utility call on: to the hook installed
 * before softmig's (prev, saved at _PG_init), or to the standard function
 * when there was none, with the same arguments (written with the
 * version-dependent tails above where the hook has one).
 */
#define softmig_chain_hook(prev, standard, ...) \
	((prev) ? (prev) (__VA_ARGS__) : (standard) (__VA_ARGS__))

/* post_parse_analyze_hook's JumbleState is const from PostgreSQL 19. */
#if PG_VERSION_NUM >= 190000
#define SOFTMIG_JUMBLESTATE const JumbleState
#else
#define SOFTMIG_JUMBLESTATE JumbleState
#endif

/*
 * Building a jsonb value: pushJsonbValue() works on a JsonbParseState stack
 * and returns the finished value until PostgreSQL 18; from 19 on a
 * JsonbInState that holds the result.  Declare SoftmigJsonbBuild st = {0},
 * push with softmig_jsonb_push(&st, ...), and the closing push returns the
 * value with softmig_jsonb_end(&st, WJB_END_OBJECT).
 */
#if PG_VERSION_NUM >= 190000
typedef JsonbInState SoftmigJsonbBuild;
#define softmig_jsonb_push(st, tok, val) pushJsonbValue((st), (tok), (val))
#define softmig_jsonb_end(st, tok) (pushJsonbValue((st), (tok), NULL), (st)->result)
#else
typedef JsonbParseState *SoftmigJsonbBuild;
#define softmig_jsonb_push(st, tok, val) ((void) pushJsonbValue((st), (tok), (val)))
#define softmig_jsonb_end(st, tok) pushJsonbValue((st), (tok), NULL)
#endif

/*
 * The direct one-row writes of directwrite.c use the executor's single-row
 * primitives, whose signatures moved between releases:
 * - ExecInitRangeTable() takes the plan's RTEPermissionInfos from 16 and
 *   the unpruned relations from 18; permissions are checked with
 *   ExecCheckPermissions() from 16 (ExecCheckRTPerms() before);
 * - index_beginscan() takes instrumentation (NULL: none) from 18, and scan
 *   flags (0: none) from 19;
 * - table_tuple_update() reports which indexes need entries as a
 *   TU_UpdateIndexes from 16 (a bool before); ExecInsertIndexTuples() takes
 *   onlySummarizing from 16, and from 19 its booleans as flags (EIIT_*),
 *   with the slot and the conflict output in other places;
 * - table_tuple_update() and table_tuple_delete() take option flags (0:
 *   none) from 19, which replace table_tuple_delete()'s changingPart;
 * - ExecCheckIndexConstraints() takes the updated row's TID (NULL: an
 *   INSERT) from 18;
 * - ExecGetRangeTableRelation() takes whether the relation is a result
 *   relation from 18.
 */
#if PG_VERSION_NUM >= 180000
#define softmig_exec_init_range_table(estate, stmt) \
	ExecInitRangeTable((estate), (stmt)->rtable, (stmt)->permInfos, \
					   bms_add_range(NULL, 1, list_length((stmt)->rtable)))
#define softmig_exec_result_relation(estate, rti) \
	ExecGetRangeTableRelation((estate), (rti), true)
#define softmig_check_index_constraints(rri, slot, estate, conflict, arbiters) \
	ExecCheckIndexConstraints((rri), (slot), (estate), (conflict), NULL, (arbiters))
#elif PG_VERSION_NUM >= 160000
#define softmig_exec_init_range_table(estate, stmt) \
	ExecInitRangeTable((estate), (stmt)->rtable, (stmt)->permInfos)
#else
#define softmig_exec_init_range_table(estate, stmt) \
	ExecInitRangeTable((estate), (stmt)->rtable)
#endif
#if PG_VERSION_NUM < 180000
#define softmig_check_index_constraints(rri, slot, estate, conflict, arbiters) \
	ExecCheckIndexConstraints((rri), (slot), (estate), (conflict), (arbiters))
#define softmig_exec_result_relation(estate, rti) \
	ExecGetRangeTableRelation((estate), (rti))
#endif

#if PG_VERSION_NUM >= 190000
#define softmig_index_beginscan(heap, index, snap, nkeys) \
	index_beginscan((heap), (index), (snap), NULL, (nkeys), 0, 0)
#elif PG_VERSION_NUM >= 180000
#define softmig_index_beginscan(heap, index, snap, nkeys) \
	index_beginscan((heap), (index), (snap), NULL, (nkeys), 0)
#else
#define softmig_index_beginscan(heap, index, snap, nkeys) \
	index_beginscan((heap), (index), (snap), (nkeys), 0)
#endif

#if PG_VERSION_NUM >= 160000
#define softmig_exec_check_perms(stmt) \
	ExecCheckPermissions((stmt)->rtable, (stmt)->permInfos, true)
typedef TU_UpdateIndexes SoftmigUpdateIndexes;
#define softmig_update_needs_indexes(u) ((u) != TU_None)
#else
#define softmig_exec_check_perms(stmt) ExecCheckRTPerms((stmt)->rtable, true)
typedef bool SoftmigUpdateIndexes;
#define softmig_update_needs_indexes(u) (u)
#endif

#if PG_VERSION_NUM >= 190000
#define softmig_table_tuple_update(rel, tid, slot, cid, snap, tmfd, lockmode, u) \
	table_tuple_update((rel), (tid), (slot), (cid), 0, (snap), InvalidSnapshot, true, \
					   (tmfd), (lockmode), (u))
#define softmig_table_tuple_delete(rel, tid, cid, snap, tmfd) \
	table_tuple_delete((rel), (tid), (cid), 0, (snap), InvalidSnapshot, true, (tmfd))
#define softmig_insert_update_index_tuples(rri, slot, estate, u) \
	ExecInsertIndexTuples((rri), (estate), \
						  EIIT_IS_UPDATE | ((u) == TU_Summarizing ? EIIT_ONLY_SUMMARIZING : 0), \
						  (slot), NIL, NULL)
#define softmig_insert_index_tuples(rri, slot, estate, nodup, conflict, arbiters) \
	ExecInsertIndexTuples((rri), (estate), (nodup) ? EIIT_NO_DUPE_ERROR : 0, (slot), \
						  (arbiters), (conflict))
#else
#define softmig_table_tuple_update(rel, tid, slot, cid, snap, tmfd, lockmode, u) \
	table_tuple_update((rel), (tid), (slot), (cid), (snap), InvalidSnapshot, true, \
					   (tmfd), (lockmode), (u))
#define softmig_table_tuple_delete(rel, tid, cid, snap, tmfd) \
	table_tuple_delete((rel), (tid), (cid), (snap), InvalidSnapshot, true, (tmfd), false)
#if PG_VERSION_NUM >= 160000
#define softmig_insert_update_index_tuples(rri, slot, estate, u) \
	ExecInsertIndexTuples((rri), (slot), (estate), true, false, NULL, NIL, \
						  (u) == TU_Summarizing)
#define softmig_insert_index_tuples(rri, slot, estate, nodup, conflict, arbiters) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, (nodup), (conflict), \
						  (arbiters), false)
#else
#define softmig_insert_update_index_tuples(rri, slot, estate, u) \
	ExecInsertIndexTuples((rri), (slot), (estate), true, false, NULL, NIL)
#define softmig_insert_index_tuples(rri, slot, estate, nodup, conflict, arbiters) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, (nodup), (conflict), \
						  (arbiters))
#endif
#endif

#endif							/* SOFTMIG_COMPAT_H */
