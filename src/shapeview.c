/*-------------------------------------------------------------------------
 *
 * shapeview.c
 *	  The write authority as the writes through a shape view see it.
 *
 *	  A shape view (softmig.create_shape_views) turns every row written
 *	  through it into a write of the table that is the write authority at
 *	  that moment.  The state must be read after the write holds its lock
 *	  on the tables, never before: a state change locks both tables (SHARE
 *	  ROW EXCLUSIVE) and commits the new state before it lets writers in, so
 *	  a write that waited for it must see the new authority, not the one it
 *	  read while waiting.  softmig._shape_target_writes() takes the ROW
 *	  EXCLUSIVE locks the write would take anyway, authority first and
 *	  projection second (the order writers and state changes use), and only
 *	  then reads the state; holding both locks, the state cannot change
 *	  again before the transaction ends.
 *
 *	  INSERT ... ON CONFLICT names no arbiter PostgreSQL can use on a view,
 *	  except DO NOTHING without a conflict target, which PostgreSQL accepts
 *	  and an INSTEAD OF trigger cannot honour (it never learns of the
 *	  clause).  A parse analysis hook refuses it with SM009 instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "softmig.h"

/*
 * may_write_rel
 *		Does the current user own relid or hold one of the privileges a
 *		ROW EXCLUSIVE lock stands for (INSERT, UPDATE, DELETE)?  The same
 *		rule LOCK TABLE ... IN ROW EXCLUSIVE MODE applies.
 */
static bool
may_write_rel(Oid relid)
{
	Oid			role = GetUserId();

	return softmig_rel_ownercheck(relid, role) ||
		pg_class_aclcheck(relid, role, ACL_INSERT | ACL_UPDATE | ACL_DELETE) == ACLCHECK_OK;
}

PG_FUNCTION_INFO_V1(softmig_shape_target_writes);
/*
 * softmig_shape_target_writes
 *		softmig._shape_target_writes(migration_id) -> boolean: is the target
 *		the write authority of the migration now?  Takes ROW EXCLUSIVE on
 *		both tables (authority first, as the cached state says; released at
 *		transaction end like any writer's) and then reads the state again
 *		with pending invalidations processed, so the answer is the state
 *		after any state change the locks waited for.  The caller must be
 *		allowed to write both tables (42501 otherwise); 42704 for an unknown
 *		migration.
 */
Datum
softmig_shape_target_writes(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	SoftmigMigration *m = softmig_require_migration(id);
	Oid			first;
	Oid			second;

	if (!may_write_rel(m->legacy) || !may_write_rel(m->target))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to write the tables of migration \"%s\"", m->name),
				 errdetail("Writes through a shape view run as the owner of the view, which must be allowed to write %s and %s.",
						   get_rel_name(m->legacy), get_rel_name(m->target))));

	if (m->state >= SM_NEW_WRITE)
	{
		first = m->target;
		second = m->legacy;
	}
	else
	{
		first = m->legacy;
		second = m->target;
	}
	LockRelationOid(first, RowExclusiveLock);
	LockRelationOid(second, RowExclusiveLock);

	/* the state after the locks: a change we waited for is committed now */
	m = softmig_require_migration(id);
	PG_RETURN_BOOL(m->state >= SM_NEW_WRITE);
}

/* The name of the INSTEAD OF trigger of every shape view. */
#define SM_SHAPE_TRIGGER "softmig_shape_write"

static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;

/*
 * is_shape_view
 *		Does relation relid (locked by the caller's parse analysis) carry
 *		the INSTEAD OF trigger of a shape view?
 */
static bool
is_shape_view(Oid relid)
{
	Relation	rel;
	bool		found = false;

	if (get_rel_relkind(relid) != RELKIND_VIEW)
		return false;
	rel = table_open(relid, NoLock);
	if (rel->trigdesc != NULL)
	{
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
			if (strcmp(rel->trigdesc->triggers[i].tgname, SM_SHAPE_TRIGGER) == 0)
				found = true;
	}
	table_close(rel, NoLock);
	return found;
}

/*
 * refuse_on_conflict
 *		Raise SM009 if query, or a data-modifying statement in its WITH
 *		clause (at any depth), is an INSERT ... ON CONFLICT into a shape
 *		view.
 */
static void
refuse_on_conflict(Query *query)
{
	ListCell   *lc;

	if (query->commandType == CMD_INSERT && query->onConflict != NULL &&
		query->resultRelation > 0)
	{
		RangeTblEntry *rte = rt_fetch(query->resultRelation, query->rtable);

		if (rte->rtekind == RTE_RELATION && is_shape_view(rte->relid))
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_SHAPE_VIEW_UNSUPPORTED),
					 errmsg("INSERT ... ON CONFLICT is not supported on shape view \"%s\"",
							get_rel_name(rte->relid)),
					 errdetail("A shape view writes through an INSTEAD OF trigger, which cannot see the ON CONFLICT clause."),
					 errhint("Insert without ON CONFLICT, or handle unique_violation (23505) in the application.")));
	}
	foreach(lc, query->cteList)
	{
		CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

		if (IsA(cte->ctequery, Query))
			refuse_on_conflict((Query *) cte->ctequery);
	}
}

/*
 * shape_post_parse_analyze
 *		post_parse_analyze hook: refuse INSERT ... ON CONFLICT into a shape
 *		view (SM009), also in a WITH clause.  Costs a test of the command
 *		type and onConflict (and a walk of the WITH list) for every other
 *		statement.
 */
static void
shape_post_parse_analyze(ParseState *pstate, Query *query, SOFTMIG_JUMBLESTATE *jstate)
{
	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	refuse_on_conflict(query);
}

/*
 * softmig_shapeview_init
 *		Install the parse analysis hook.  Called from _PG_init.
 */
void
softmig_shapeview_init(void)
{
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = shape_post_parse_analyze;
}
