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
 *	  Row by row.  The INSTEAD OF trigger of a shape view is
 *	  softmig._shape_write_trigger (C).  As the view's owner (identity.c)
 *	  it locks both tables, reads the state and writes the row to the
 *	  authority with one statement: a kept, generic plan of one of the
 *	  statements its arguments carry (made by softmig._shape_write_sql when
 *	  the view was created: per table INSERT with and without key, UPDATE
 *	  with and without RETURNING, the UPDATE's GENERATED ALWAYS check,
 *	  DELETE), its parameters the new row, the old row and, per column,
 *	  whether the statement changed it (shape_changed).  The plan is found
 *	  again by the trigger's OID, the argument's number and text (so by
 *	  view, operation, authority, and the mappings and columns the text was
 *	  made from); PostgreSQL's plan cache replans it when either table
 *	  changes.  An UPDATE takes the form without RETURNING when its
 *	  statement looks at no row the trigger returns (rows_needed).
 *
 *	  Set-based INSERT.  The rows of an INSERT whose statement needs no row
 *	  back (no RETURNING on any INSERT into the view in the statement: an
 *	  ExecutorStart hook looks at every ModifyTable of the plan) are not
 *	  written one by one: they are collected in a tuplestore (a "batch" of
 *	  that statement and view), and the view's AFTER INSERT statement
 *	  trigger, softmig._shape_flush_trigger, writes them at the end of the
 *	  statement with one INSERT ... SELECT over them (an ephemeral named
 *	  relation) into the authority of that moment, as the view's owner,
 *	  with kept plans.  The authority's own triggers then guard, check and
 *	  project that one statement as they would a direct INSERT ... SELECT.
 *	  A row is collected only by the statement that made the batch, while
 *	  it runs (ExecutorRun and ExecutorFinish hooks keep a stack of the
 *	  running statements), in its (sub)transaction; anything else (COPY,
 *	  RETURNING, a nested statement) takes the row-by-row path.  Batches
 *	  end with their statement (ExecutorEnd) or its (sub)transaction's
 *	  abort; a batch whose rows were not written by the end of its
 *	  statement is an error, never a silent loss.
 *
 *	  INSERT ... ON CONFLICT names no arbiter PostgreSQL can use on a view,
 *	  except DO NOTHING without a conflict target, which PostgreSQL accepts
 *	  and an INSTEAD OF trigger cannot honour (it never learns of the
 *	  clause).  A parse analysis hook refuses it with SM009 instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

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

/*
 * lock_authority
 *		Is the target the write authority of migration id now?  Takes ROW
 *		EXCLUSIVE on both tables, authority first (released at transaction
 *		end like any writer's), and answers with the state read under the
 *		authority's lock, with pending invalidations processed: the state
 *		after any state change that lock waited for.  The current user
 *		must be allowed to write both tables (42501 otherwise); 42704 for
 *		an unknown migration.
 *
 *		A state change locks the authority first too.  If the authority
 *		moved while this waited for the table it took for the authority,
 *		the next state change (moving it back) locks the other table first
 *		and then waits for this one: holding it while waiting for the other
 *		would deadlock.  So the lock is let go and taken again in the new
 *		order.  It was taken by this call: had the transaction held it
 *		before, no state change could have committed meanwhile.
 */
static bool
lock_authority(int32 id)
{
	SoftmigMigration *m = softmig_require_migration(id);
	bool		tw;
	Oid			first;
	Oid			second;

	if (!may_write_rel(m->legacy) || !may_write_rel(m->target))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to write the tables of migration \"%s\"", m->name),
				 errdetail("Writes through a shape view run as the owner of the view, which must be allowed to write %s and %s.",
						   get_rel_name(m->legacy), get_rel_name(m->target))));

	for (;;)
	{
		tw = m->state >= SM_NEW_WRITE;
		first = tw ? m->target : m->legacy;
		second = tw ? m->legacy : m->target;
		LockRelationOid(first, RowExclusiveLock);

		/* the state after the lock: a change we waited for is committed now */
		m = softmig_require_migration(id);
		if ((m->state >= SM_NEW_WRITE) == tw)
			break;
		UnlockRelationOid(first, RowExclusiveLock);
	}

	/*
	 * The authority is locked: no state change can commit until this
	 * transaction ends, and one in flight waits for it before the other
	 * table.
	 */
	LockRelationOid(second, RowExclusiveLock);
	return tw;
}

PG_FUNCTION_INFO_V1(softmig_shape_target_writes);
/*
 * softmig_shape_target_writes
 *		softmig._shape_target_writes(migration_id) -> boolean: is the target
 *		the write authority of the migration now?  See lock_authority (the
 *		locks it takes, the errors it raises).
 */
Datum
softmig_shape_target_writes(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(lock_authority(PG_GETARG_INT32(0)));
}

/* The names of the triggers of every shape view. */
#define SM_SHAPE_TRIGGER "softmig_shape_write"
#define SM_SHAPE_FLUSH_TRIGGER "softmig_shape_flush"

/* The name under which the flush statements read a batch's rows. */
#define SM_SHAPE_ROWS "softmig_shape_rows"

/* The flush trigger's arguments: migration id, four statements, key columns. */
#define SM_FLUSH_FIXED_ARGS 5

static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;

/*
 * softmig_shape_view_migration
 *		The migration a shape view writes, if relid (locked by the caller:
 *		parse analysis or the planner of the statement) is one: its
 *		INSTEAD OF trigger softmig_shape_write calls softmig's own
 *		_shape_write_trigger, whose first argument is the migration id.
 *		0 for any other relation.
 */
int32
softmig_shape_view_migration(Oid relid)
{
	Relation	rel;
	int32		id = 0;

	if (get_rel_relkind(relid) != RELKIND_VIEW)
		return 0;
	rel = table_open(relid, NoLock);
	if (rel->trigdesc != NULL)
	{
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *tg = &rel->trigdesc->triggers[i];
			FmgrInfo	finfo;

			if (strcmp(tg->tgname, SM_SHAPE_TRIGGER) != 0 || tg->tgnargs < 1)
				continue;
			fmgr_info(tg->tgfoid, &finfo);
			if (finfo.fn_addr == softmig_shape_write_trigger)
				id = pg_strtoint32(tg->tgargs[0]);
		}
	}
	table_close(rel, NoLock);
	return id;
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

		if (rte->rtekind == RTE_RELATION &&
			softmig_shape_view_migration(rte->relid) != 0)
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
 * The rows one statement inserts through one shape view, collected for one
 * set-based write (see the file header).  Lives in its own memory context
 * under TopTransactionContext; the tuplestore's temporary files belong to
 * the statement's (sub)transaction.
 */
typedef struct ShapeBatch
{
	Oid			viewid;			/* the shape view */
	QueryDesc  *query;			/* the statement that made it */
	SubTransactionId subid;		/* (sub)transaction of that statement */
	bool		collect;		/* no RETURNING: rows are collected */
	int			nkeys;			/* key columns of the view's shape */
	AttrNumber *keyattnos;		/* their numbers in the view */
	MemoryContext cxt;
	Tuplestorestate *rows;		/* collected rows, NULL before the first */
	int64		nkeyed;			/* rows with every key column set */
	int64		nkeyless;		/* the others: keys from the generators */
	struct ShapeBatch *next;	/* the batch made before this one */
} ShapeBatch;

/* Batches of the statements in progress, the newest first. */
static ShapeBatch *batches = NULL;

/* The statements running (ExecutorRun, ExecutorFinish), innermost last. */
static QueryDesc **running = NULL;
static int	nrunning = 0;
static int	maxrunning = 0;

/*
 * Whether the UPDATEs through one view of one statement need the rows the
 * trigger returns (rows_needed), remembered for the statement that asked
 * last; forgotten at its end and at any (sub)transaction abort.
 */
static QueryDesc *rows_query = NULL;
static PlannedStmt *rows_stmt = NULL;
static Oid	rows_view = InvalidOid;
static bool rows_answer = true;

/*
 * A kept plan of a statement a shape view trigger carries: one per trigger,
 * argument and parameter count, in TopMemoryContext, found again by the
 * trigger's OID, the argument's number and its text (a trigger made again,
 * with other text, gets a new plan; the text names the table it writes and
 * holds the mappings and columns it was made from).  Generic: planned once,
 * never per row.  PostgreSQL's plan cache replans it when a table it uses
 * changes.
 */
typedef struct ShapePlan
{
	Oid			tgoid;
	int			argno;
	int			nargs;
	Oid		   *argtypes;		/* the parameters' types (nargs) */
	char	   *sql;
	SPIPlanPtr	plan;
	struct ShapePlan *next;
} ShapePlan;

static ShapePlan *shape_plans = NULL;

static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorFinish_hook_type prev_ExecutorFinish = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;

/*
 * find_trigger
 *		The trigger of relation rel named name, or NULL.
 */
static Trigger *
find_trigger(Relation rel, const char *name)
{
	for (int i = 0; rel->trigdesc && i < rel->trigdesc->numtriggers; i++)
		if (strcmp(rel->trigdesc->triggers[i].tgname, name) == 0)
			return &rel->trigdesc->triggers[i];
	return NULL;
}

/*
 * batch_free
 *		End a batch's tuplestore and free its memory.
 */
static void
batch_free(ShapeBatch *b)
{
	if (b->rows)
		tuplestore_end(b->rows);
	MemoryContextDelete(b->cxt);
}

/*
 * drop_batches
 *		Free the batches of statement queryDesc, or (queryDesc NULL) those
 *		made in (sub)transaction subid.
 */
static void
drop_batches(QueryDesc *queryDesc, SubTransactionId subid)
{
	ShapeBatch **prev = &batches;

	while (*prev)
	{
		ShapeBatch *b = *prev;

		if (queryDesc ? b->query == queryDesc : b->subid == subid)
		{
			*prev = b->next;
			batch_free(b);
		}
		else
			prev = &b->next;
	}
}

/*
 * note_insert
 *		One INSERT (a ModifyTable result relation) of statement queryDesc
 *		into rel: if rel is a shape view whose two triggers are plainly
 *		enabled, make or update the statement's batch for it; any RETURNING
 *		turns collection off.  Returns whether rel is a shape view.
 */
static bool
note_insert(QueryDesc *queryDesc, Relation rel, bool returning)
{
	Oid			viewid = RelationGetRelid(rel);
	Trigger    *wt;
	Trigger    *ft;
	ShapeBatch *b;
	MemoryContext cxt;
	MemoryContext old;

	if (rel->rd_rel->relkind != RELKIND_VIEW)
		return false;
	wt = find_trigger(rel, SM_SHAPE_TRIGGER);
	ft = find_trigger(rel, SM_SHAPE_FLUSH_TRIGGER);
	if (wt == NULL)
		return false;
	for (b = batches; b; b = b->next)
		if (b->query == queryDesc && b->viewid == viewid)
		{
			b->collect = b->collect && !returning;
			return true;
		}

	cxt = AllocSetContextCreate(TopTransactionContext, "softmig shape view batch",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	b = palloc0(sizeof(ShapeBatch));
	b->viewid = viewid;
	b->query = queryDesc;
	b->subid = GetCurrentSubTransactionId();
	b->cxt = cxt;
	b->collect = !returning && ft != NULL &&
		wt->tgenabled == TRIGGER_FIRES_ON_ORIGIN &&
		ft->tgenabled == TRIGGER_FIRES_ON_ORIGIN &&
		ft->tgnargs > SM_FLUSH_FIXED_ARGS;
	if (b->collect)
	{
		b->nkeys = ft->tgnargs - SM_FLUSH_FIXED_ARGS;
		b->keyattnos = palloc(sizeof(AttrNumber) * b->nkeys);
		for (int i = 0; i < b->nkeys; i++)
		{
			b->keyattnos[i] = attnameAttNum(rel, ft->tgargs[SM_FLUSH_FIXED_ARGS + i], false);
			if (b->keyattnos[i] <= 0)
				b->collect = false;
		}
	}
	MemoryContextSwitchTo(old);
	b->next = batches;
	batches = b;
	return true;
}

/*
 * note_modify_table
 *		Note the INSERTs of one ModifyTable node (note_insert); count the
 *		shape views among its result relations in *nviews.
 */
static void
note_modify_table(QueryDesc *queryDesc, PlanState *ps, int *nviews)
{
	ModifyTableState *mt;
	bool		returning;

	if (ps == NULL || !IsA(ps, ModifyTableState))
		return;
	mt = (ModifyTableState *) ps;
	if (mt->operation != CMD_INSERT)
		return;
	returning = ((ModifyTable *) mt->ps.plan)->returningLists != NIL;
	for (int i = 0; i < mt->mt_nrels; i++)
		if (note_insert(queryDesc, mt->resultRelInfo[i].ri_RelationDesc, returning))
			(*nviews)++;
}

/*
 * shape_ExecutorStart
 *		ExecutorStart hook: start the executor as usual; for an INSERT (or a
 *		statement with a data-modifying WITH), make a batch per shape view
 *		it inserts into (note_insert).  A ModifyTable is the top node of the
 *		plan or of a WITH subplan; if the executor opened more view result
 *		relations than found there, collection is off for the statement.
 *		Other statements cost a test of the command type.
 */
static void
shape_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *stmt;
	int			nviews = 0;
	int			nresults = 0;
	ListCell   *lc;

	softmig_chain_hook(prev_ExecutorStart, standard_ExecutorStart, queryDesc, eflags);

	stmt = queryDesc->plannedstmt;
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) || queryDesc->planstate == NULL ||
		(queryDesc->operation != CMD_INSERT && !stmt->hasModifyingCTE))
		return;
	note_modify_table(queryDesc, queryDesc->planstate, &nviews);
	foreach(lc, queryDesc->estate->es_subplanstates)
		note_modify_table(queryDesc, (PlanState *) lfirst(lc), &nviews);

	foreach(lc, queryDesc->estate->es_opened_result_relations)
	{
		ResultRelInfo *rri = (ResultRelInfo *) lfirst(lc);

		if (rri->ri_RelationDesc->rd_rel->relkind == RELKIND_VIEW)
			nresults++;
	}
	if (nresults != nviews)
	{
		for (ShapeBatch *b = batches; b; b = b->next)
			if (b->query == queryDesc)
				b->collect = false;
	}
}

/*
 * running_push, running_pop
 *		The stack of statements running (for batch_of_running).
 */
static void
running_push(QueryDesc *queryDesc)
{
	if (nrunning >= maxrunning)
		running = softmig_grow_array(running, &maxrunning, sizeof(QueryDesc *));
	running[nrunning++] = queryDesc;
}

static void
running_pop(void)
{
	if (nrunning > 0)
		nrunning--;
}

/*
 * shape_ExecutorRun
 *		ExecutorRun hook: the statement is running (rows of INSTEAD OF
 *		triggers arrive now).
 */
static void
shape_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count
				  SOFTMIG_EXECUTOR_RUN_EXTRA_PARAM)
{
	running_push(queryDesc);
	PG_TRY();
	{
		softmig_chain_hook(prev_ExecutorRun, standard_ExecutorRun,
						   queryDesc, direction, count SOFTMIG_EXECUTOR_RUN_EXTRA_ARG);
	}
	PG_FINALLY();
	{
		running_pop();
	}
	PG_END_TRY();
}

/*
 * shape_ExecutorFinish
 *		ExecutorFinish hook: the statement is running (a WITH's INSERT may
 *		run now, and AFTER statement triggers fire now).  Afterwards, rows
 *		it collected and did not write (its flush trigger did not fire) are
 *		an error: they would be lost.
 */
static void
shape_ExecutorFinish(QueryDesc *queryDesc)
{
	running_push(queryDesc);
	PG_TRY();
	{
		softmig_chain_hook(prev_ExecutorFinish, standard_ExecutorFinish, queryDesc);
	}
	PG_FINALLY();
	{
		running_pop();
	}
	PG_END_TRY();

	for (ShapeBatch *b = batches; b; b = b->next)
		if (b->query == queryDesc && b->nkeyed + b->nkeyless > 0)
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
					 errmsg("rows inserted through shape view \"%s\" were not written",
							get_rel_name(b->viewid)),
					 errdetail("Its statement trigger \"%s\" did not fire.", SM_SHAPE_FLUSH_TRIGGER),
					 errhint("Enable the trigger, or drop and create the shape views again.")));
}

/*
 * shape_ExecutorEnd
 *		ExecutorEnd hook: drop the statement's batches.
 */
static void
shape_ExecutorEnd(QueryDesc *queryDesc)
{
	drop_batches(queryDesc, InvalidSubTransactionId);
	if (queryDesc == rows_query)
		rows_query = NULL;
	softmig_chain_hook(prev_ExecutorEnd, standard_ExecutorEnd, queryDesc);
}

/*
 * shape_xact_callback
 *		Transaction end: every batch is gone with TopTransactionContext.
 */
static void
shape_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			batches = NULL;
			nrunning = 0;
			rows_query = NULL;
			break;
		default:
			break;
	}
}

/*
 * shape_subxact_callback
 *		Subtransaction abort: drop the batches of the statements that ran in
 *		it (their rows were never written, and no longer need to be).
 */
static void
shape_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		drop_batches(NULL, mySubid);
		rows_query = NULL;
	}
}

/*
 * batch_of_running
 *		The batch of view viewid of the innermost running statement, if it
 *		collects rows and we are in its (sub)transaction; else NULL.
 */
static ShapeBatch *
batch_of_running(Oid viewid)
{
	if (nrunning == 0)
		return NULL;
	for (ShapeBatch *b = batches; b; b = b->next)
		if (b->viewid == viewid && b->query == running[nrunning - 1])
			return (b->collect && b->subid == GetCurrentSubTransactionId()) ? b : NULL;
	return NULL;
}

/*
 * batch_add
 *		Collect one row of the view's INSERT: into the batch's tuplestore
 *		(made on the first row, its files owned by the statement's
 *		transaction resource owner, as PostgreSQL's transition tables),
 *		counted as keyed or keyless.
 */
static void
batch_add(ShapeBatch *b, TriggerData *td)
{
	HeapTuple	tuple = td->tg_trigtuple;
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	ResourceOwner save_owner = CurrentResourceOwner;
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	bool		keyed = true;

	/* (an error aborts the (sub)transaction, which resets both) */
	CurrentResourceOwner = CurTransactionResourceOwner;
	if (b->rows == NULL)
		b->rows = tuplestore_begin_heap(false, false, work_mem);
	tuplestore_puttuple(b->rows, tuple);
	CurrentResourceOwner = save_owner;
	MemoryContextSwitchTo(old);
	for (int i = 0; i < b->nkeys; i++)
		if (heap_attisnull(tuple, b->keyattnos[i], desc))
			keyed = false;
	if (keyed)
		b->nkeyed++;
	else
		b->nkeyless++;
}

/* The row trigger's arguments: the migration, six statements per table. */
#define SM_WRITE_PER_TABLE 6
#define SM_WRITE_FIXED_ARGS (1 + 2 * SM_WRITE_PER_TABLE)

/* The six statements of one table (legacy's first, then the target's). */
#define SM_WRITE_INSERT 0		/* INSERT of a row with every key column set */
#define SM_WRITE_INSERT_KEYLESS 1	/* INSERT, keys from the generators */
#define SM_WRITE_UPDATE 2
#define SM_WRITE_CHECK 3		/* an UPDATE's GENERATED ALWAYS check, or '' */
#define SM_WRITE_DELETE 4
#define SM_WRITE_UPDATE_QUIET 5 /* UPDATE without RETURNING */

/*
 * shape_plan
 *		The kept plan of the statement in argument argno of shape view
 *		trigger tg, with nargs parameters of types argtypes: prepared
 *		(generic) on first use, prepared again if the argument's text or
 *		the parameters' types changed (a trigger OID used again by views
 *		made anew).  The caller is connected to SPI and runs as the view's
 *		owner in its identity frame (so the statement is analyzed and
 *		planned as that role, and checked by the trust rule).
 */
static SPIPlanPtr
shape_plan(Trigger *tg, int argno, int nargs, Oid *argtypes)
{
	const char *sql = tg->tgargs[argno];
	ShapePlan  *p;
	SPIPlanPtr	plan;

	for (p = shape_plans; p; p = p->next)
		if (p->tgoid == tg->tgoid && p->argno == argno)
			break;
	if (p != NULL && p->nargs == nargs && strcmp(p->sql, sql) == 0 &&
		(nargs == 0 || memcmp(p->argtypes, argtypes, sizeof(Oid) * nargs) == 0))
		return p->plan;

	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	if (p == NULL)
	{
		p = MemoryContextAllocZero(TopMemoryContext, sizeof(ShapePlan));
		p->tgoid = tg->tgoid;
		p->argno = argno;
		p->next = shape_plans;
		shape_plans = p;
	}
	else
	{
		SPI_freeplan(p->plan);
		pfree(p->sql);
		pfree(p->argtypes);
	}
	p->sql = MemoryContextStrdup(TopMemoryContext, sql);
	p->argtypes = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * Max(nargs, 1));
	if (nargs > 0)
		memcpy(p->argtypes, argtypes, sizeof(Oid) * nargs);
	p->nargs = nargs;
	p->plan = plan;
	return plan;
}

/*
 * shape_changed
 *		Did an UPDATE change column att of the view's row (old value o, new
 *		value n)?  The rule the row trigger has always applied, NEW.c::text
 *		IS DISTINCT FROM OLD.c::text: a NULL differs from any value, equal
 *		images are unchanged, otherwise the text forms decide (1.0 to 1.00 is
 *		a change; a value written again as it was is not).
 */
static bool
shape_changed(Form_pg_attribute att, Datum n, bool nnull, Datum o, bool onull)
{
	Oid			outfn;
	bool		isvarlena;
	char	   *ntext;
	char	   *otext;
	bool		changed;

	if (nnull || onull)
		return nnull != onull;
	if (datumIsEqual(n, o, att->attbyval, att->attlen))
		return false;
	getTypeOutputInfo(att->atttypid, &outfn, &isvarlena);
	ntext = OidOutputFunctionCall(outfn, n);
	otext = OidOutputFunctionCall(outfn, o);
	changed = strcmp(ntext, otext) != 0;
	pfree(ntext);
	pfree(otext);
	return changed;
}

/*
 * view_row
 *		The row a write statement returned (SPI_tuptable, first row) as a
 *		row of shape view view, made in memory context cxt.  42804 if the
 *		statement's columns are not the view's (a table's column changed
 *		type after the view was made).
 */
static HeapTuple
view_row(Relation view, SPITupleTable *tt, MemoryContext cxt)
{
	TupleDesc	desc = RelationGetDescr(view);
	TupleDesc	rdesc = tt->tupdesc;
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	MemoryContext old;
	HeapTuple	tuple;

	for (int i = 0; i < desc->natts; i++)
		if (rdesc->natts != desc->natts ||
			TupleDescAttr(rdesc, i)->atttypid != TupleDescAttr(desc, i)->atttypid)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("the row written through shape view \"%s\" does not match the view's columns",
							RelationGetRelationName(view)),
					 errdetail("A table of the migration changed after the shape views were made."),
					 errhint("Drop and create the shape views again.")));
	heap_deform_tuple(tt->vals[0], rdesc, values, nulls);
	old = MemoryContextSwitchTo(cxt);
	tuple = heap_form_tuple(desc, values, nulls);
	MemoryContextSwitchTo(old);
	return tuple;
}

/*
 * modify_needs_rows
 *		Is plan a ModifyTable that writes view viewid and needs the rows its
 *		INSTEAD OF trigger returns (a RETURNING list, or the WITH CHECK
 *		OPTION of a view over it)?  *found is set if it writes the view.
 */
static bool
modify_needs_rows(PlannedStmt *stmt, Plan *plan, Oid viewid, bool *found)
{
	ModifyTable *mt;
	ListCell   *lc;

	if (plan == NULL || !IsA(plan, ModifyTable))
		return false;
	mt = (ModifyTable *) plan;
	foreach(lc, mt->resultRelations)
	{
		if (rt_fetch(lfirst_int(lc), stmt->rtable)->relid != viewid)
			continue;
		*found = true;
		if (mt->returningLists != NIL || mt->withCheckOptionLists != NIL)
			return true;
	}
	return false;
}

/*
 * rows_needed
 *		Does the statement running now (the innermost, whose ModifyTable
 *		fires the view's trigger) need the rows the trigger returns for
 *		view viewid?  Only a RETURNING list or a WITH CHECK OPTION looks at
 *		them; the count of rows needs only that one is returned.  True when
 *		in doubt (no ModifyTable of the statement writes the view).
 *		Remembered for the statement.
 */
static bool
rows_needed(Oid viewid)
{
	QueryDesc  *qd;
	PlannedStmt *stmt;
	bool		found = false;
	bool		needed;
	ListCell   *lc;

	if (nrunning == 0)
		return true;
	qd = running[nrunning - 1];
	stmt = qd->plannedstmt;
	if (qd == rows_query && stmt == rows_stmt && viewid == rows_view)
		return rows_answer;

	needed = modify_needs_rows(stmt, stmt->planTree, viewid, &found);
	foreach(lc, stmt->subplans)
		needed = modify_needs_rows(stmt, (Plan *) lfirst(lc), viewid, &found) || needed;
	rows_query = qd;
	rows_stmt = stmt;
	rows_view = viewid;
	rows_answer = needed || !found;
	return rows_answer;
}

/*
 * write_row
 *		Write one row of a shape view's INSERT, UPDATE or DELETE (trigger
 *		data td) to the write authority of this moment, as the view's owner:
 *		lock both tables and read the state (lock_authority), run the
 *		UPDATE's GENERATED ALWAYS check (428C9) if the authority has one,
 *		then the statement, with kept plans (shape_plan).  Parameters: the
 *		new row, the old row, and per column whether an UPDATE changed it.
 *		Returns the row written in the view's shape (INSERT, UPDATE), the
 *		view's old row (DELETE), or NULL when nothing was written (the row
 *		is gone, or a trigger on the authority skipped it).  An UPDATE whose
 *		statement needs no row back (rows_needed) runs the statement without
 *		RETURNING and returns the view's new row as it came.  Errors are
 *		the statement's.
 */
static HeapTuple
write_row(TriggerData *td)
{
	Trigger    *tg = td->tg_trigger;
	Relation	view = td->tg_relation;
	TupleDesc	desc = RelationGetDescr(view);
	int			n = desc->natts;
	bool		is_insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
	bool		is_update = TRIGGER_FIRED_BY_UPDATE(td->tg_event);
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	Datum	   *values = palloc(sizeof(Datum) * 3 * n);
	char	   *nulls = palloc(3 * n);
	Oid		   *types = palloc(sizeof(Oid) * 3 * n);
	bool		keyed = true;
	bool		quiet;
	int			stmt;
	int			base;
	bool		tw;
	int			ret;
	HeapTuple	result;
	MemoryContext caller = CurrentMemoryContext;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (tg->tgnargs <= SM_WRITE_FIXED_ARGS)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._shape_write_trigger needs the migration, ten statements and the key columns"),
				 errhint("Drop and create the shape views again.")));
	if (is_insert)
		newtup = td->tg_trigtuple;
	else if (is_update)
	{
		oldtup = td->tg_trigtuple;
		newtup = td->tg_newtuple;
	}
	else
		oldtup = td->tg_trigtuple;

	for (int i = 0; i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		nnull = true;
		bool		onull = true;

		values[i] = newtup ? heap_getattr(newtup, i + 1, desc, &nnull) : (Datum) 0;
		values[n + i] = oldtup ? heap_getattr(oldtup, i + 1, desc, &onull) : (Datum) 0;
		nulls[i] = nnull ? 'n' : ' ';
		nulls[n + i] = onull ? 'n' : ' ';
		values[2 * n + i] = BoolGetDatum(is_update &&
										 shape_changed(att, values[i], nnull, values[n + i], onull));
		nulls[2 * n + i] = ' ';
		types[i] = types[n + i] = att->atttypid;
		types[2 * n + i] = BOOLOID;
	}
	if (is_insert)
	{
		for (int k = SM_WRITE_FIXED_ARGS; k < tg->tgnargs; k++)
		{
			AttrNumber	attno = attnameAttNum(view, tg->tgargs[k], false);

			if (attno <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						 errmsg("key column \"%s\" is not a column of shape view \"%s\"",
								tg->tgargs[k], RelationGetRelationName(view)),
						 errhint("Drop and create the shape views again.")));
			if (nulls[attno - 1] == 'n')
				keyed = false;
		}
	}

	quiet = is_update && !rows_needed(RelationGetRelid(view));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_enter_owner_context(view->rd_rel->relowner, &save_nest, &save_user, &save_sec);
	tw = lock_authority(pg_strtoint32(tg->tgargs[0]));
	base = 1 + (tw ? SM_WRITE_PER_TABLE : 0);

	if (is_update && tg->tgargs[base + SM_WRITE_CHECK][0] != '\0')
	{
		bool		isnull;

		ret = SPI_execute_plan(shape_plan(tg, base + SM_WRITE_CHECK, 3 * n, types),
							   values, nulls, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "softmig: the identity check of a shape view failed: %s",
				 SPI_result_code_string(ret));
		if (SPI_processed > 0 &&
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
			!isnull)
		{
			SoftmigMigration *m = softmig_require_migration(pg_strtoint32(tg->tgargs[0]));
			Oid			rel = tw ? m->target : m->legacy;

			ereport(ERROR,
					(errcode(ERRCODE_GENERATED_ALWAYS),
					 errmsg("a shape view cannot change the GENERATED ALWAYS identity key of table %s",
							quote_qualified_identifier(get_namespace_name(get_rel_namespace(rel)),
													   get_rel_name(rel))),
					 errdetail("PostgreSQL lets no UPDATE set a GENERATED ALWAYS identity column."),
					 errhint("Insert a new row and delete the old one.")));
		}
	}

	if (is_insert)
		stmt = base + (keyed ? SM_WRITE_INSERT : SM_WRITE_INSERT_KEYLESS);
	else if (is_update)
		stmt = base + (quiet ? SM_WRITE_UPDATE_QUIET : SM_WRITE_UPDATE);
	else
		stmt = base + SM_WRITE_DELETE;
	ret = SPI_execute_plan(shape_plan(tg, stmt, 3 * n, types), values, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "softmig: writing a row of a shape view failed: %s",
			 SPI_result_code_string(ret));
	if (SPI_processed == 0)
		result = NULL;
	else if (quiet)
		result = newtup;
	else if (is_insert || is_update)
		result = view_row(view, SPI_tuptable, caller);
	else
		result = oldtup;

	softmig_leave_owner_context(save_nest, save_user, save_sec);
	SPI_finish();
	return result;
}


PG_FUNCTION_INFO_V1(softmig_shape_write_trigger);
/*
 * softmig_shape_write_trigger
 *		INSTEAD OF row trigger of a shape view.  A row of an INSERT whose
 *		statement collects (batch_of_running) is added to the batch and
 *		returned as it is (so it counts as inserted); its write comes at the
 *		end of the statement (softmig_shape_flush_trigger).  Every other row
 *		is written now (write_row, which takes the locks), and the row it
 *		returns is the trigger's result.
 */
Datum
softmig_shape_write_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ShapeBatch *b;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_INSTEAD(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._shape_write_trigger must be an INSTEAD OF row trigger")));

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) &&
		(b = batch_of_running(RelationGetRelid(td->tg_relation))) != NULL)
	{
		batch_add(b, td);
		return PointerGetDatum(td->tg_trigtuple);
	}
	return PointerGetDatum(write_row(td));
}

/*
 * flush_run
 *		Run flush statement argno of trigger tg over the registered rows.
 */
static void
flush_run(Trigger *tg, int argno)
{
	int			ret = SPI_execute_plan(shape_plan(tg, argno, 0, NULL), NULL, NULL, false, 0);

	if (ret != SPI_OK_INSERT)
		elog(ERROR, "softmig: writing the rows of a shape view failed: %s",
			 SPI_result_code_string(ret));
}

PG_FUNCTION_INFO_V1(softmig_shape_flush_trigger);
/*
 * softmig_shape_flush_trigger
 *		AFTER INSERT statement trigger of a shape view: write the rows the
 *		statement collected (if any) to the write authority of this moment,
 *		as the view's owner: lock both tables and read the state
 *		(lock_authority), then one INSERT ... SELECT for the keyed rows and
 *		one for the keyless ones (the trigger's arguments: migration id, the
 *		statements into legacy keyed / keyless and into the target keyed /
 *		keyless, then the key columns).  The authority's triggers guard,
 *		check and project them as any write.  Errors are the statement's.
 */
Datum
softmig_shape_flush_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *tg;
	ShapeBatch *b;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		tw;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._shape_flush_trigger must be an AFTER statement trigger")));
	tg = td->tg_trigger;
	if (tg->tgnargs <= SM_FLUSH_FIXED_ARGS)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._shape_flush_trigger needs the migration, four statements and the key columns")));

	b = batch_of_running(RelationGetRelid(td->tg_relation));
	if (b == NULL || b->nkeyed + b->nkeyless == 0)
		return PointerGetDatum(NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_spi_register_rows(SM_SHAPE_ROWS, InvalidOid, RelationGetDescr(td->tg_relation),
							  b->rows, b->nkeyed + b->nkeyless);

	softmig_enter_owner_context(td->tg_relation->rd_rel->relowner, &save_nest, &save_user, &save_sec);
	tw = lock_authority(pg_strtoint32(tg->tgargs[0]));
	if (b->nkeyed > 0)
		flush_run(tg, tw ? 3 : 1);
	if (b->nkeyless > 0)
		flush_run(tg, tw ? 4 : 2);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	SPI_finish();

	/* written: the statement's end finds nothing left */
	tuplestore_clear(b->rows);
	b->nkeyed = 0;
	b->nkeyless = 0;
	return PointerGetDatum(NULL);
}

/*
 * softmig_shapeview_init
 *		Install the parse analysis and executor hooks and the callbacks.
 *		Called from _PG_init.
 */
void
softmig_shapeview_init(void)
{
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = shape_post_parse_analyze;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = shape_ExecutorStart;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = shape_ExecutorRun;
	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = shape_ExecutorFinish;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = shape_ExecutorEnd;
	RegisterXactCallback(shape_xact_callback, NULL);
	RegisterSubXactCallback(shape_subxact_callback, NULL);
}
