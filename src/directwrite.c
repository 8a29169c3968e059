/*-------------------------------------------------------------------------
 *
 * directwrite.c
 *	  A one-row UPDATE, DELETE or INSERT of the other table without a
 *	  second executor.
 *
 *	  The write path carries a one-row UPDATE or DELETE to the other table
 *	  with a kept statement (mapping.c: p->update, "UPDATE dst SET c =
 *	  <mapping> ... WHERE <key> = <mapped key>", and p->delete_row), and a
 *	  one-row INSERT, mirrored or projected, with a kept upsert
 *	  (p->upsert_row), the written row as parameters.  The generic plan of
 *	  an UPDATE or DELETE is an index probe of dst's unique key, with an
 *	  UPDATE's new values computed from the parameters alone; that of the
 *	  INSERT one row computed from them, perhaps under a condition on them
 *	  (ON CONFLICT: a key already there leaves the write to the statement,
 *	  see direct_insert).  Starting an executor for that one row (range
 *	  table, result relation, index scan node, projections) and ending it again
 *	  costs about half of what the write itself costs, so when the plan has
 *	  exactly that shape, and nothing on dst needs a statement around the
 *	  row, this file runs the plan's own expressions with the executor's
 *	  single-row primitives: the same privilege check, an index probe of the
 *	  plan's index with the statement's snapshot, the same constraint
 *	  checks, heap update or delete, index entries and AFTER ROW triggers
 *	  (foreign keys) as the statement.
 *
 *	  Whatever the statement would do differently is left to the statement:
 *	  the caller runs the kept plan when softmig_direct_write returns -1:
 *	  - REPEATABLE READ and SERIALIZABLE (a row updated concurrently is a
 *	    serialization failure there, which the statement raises), and a
 *	    read-only transaction or parallel mode (the statement raises its
 *	    error);
 *	  - a plan of any other shape: a filter beyond the key, values that read
 *	    dst's row, subqueries, a partitioned table;
 *	  - dst with row-level security, stored generated columns, or a trigger
 *	    firing on the command other than a foreign-key trigger or a softmig
 *	    statement trigger of a migration softmig is writing for right now
 *	    (those return at once for softmig's own write, so not firing them
 *	    changes nothing);
 *	  - an index that is not a plain, immediate, unique btree on columns.
 *	  Under READ COMMITTED a row updated concurrently is handled as the
 *	  statement's EvalPlanQual handles it: the newest version is locked, its
 *	  key checked again, and that version written; a row deleted meanwhile
 *	  is not found (0 rows; after an UPDATE the caller then runs its upsert,
 *	  as after the statement).
 *
 *	  The plan is analyzed once per generation of its generic plan: any
 *	  change to dst, its indexes, triggers or policies, or to a function the
 *	  mapping calls, makes PostgreSQL's plan cache build a new generation,
 *	  and the analysis is made again.  softmig.direct_writes = off makes
 *	  every write take the statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "nodes/plannodes.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "storage/lmgr.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "softmig.h"

/* softmig.direct_writes */
static bool direct_writes = true;


/*
 * What one generation of a kept UPDATE's or DELETE's generic plan does, in the terms
 * of the single-row primitives.  Allocated in the caller's memory context
 * (the migration's); everything it points to lives in cxt.
 */
typedef struct SoftmigDirect
{
	CachedPlan *cplan;			/* the plan analyzed: compared, never read */
	int			generation;		/* and its generation */
	bool		usable;			/* false: always the statement */
	CmdType		cmd;			/* CMD_UPDATE, CMD_DELETE or CMD_INSERT */
	MemoryContext cxt;
	Oid			relid;			/* dst */
	Index		rti;			/* its range-table index in the plan */
	Oid			indexid;		/* the plan's index */
	int			nkeys;			/* its key columns, each = an expression */
	AttrNumber	keyatt[INDEX_MAX_KEYS]; /* dst column of each */
	Oid			keyfunc[INDEX_MAX_KEYS];	/* the equality's function */
	Oid			keysubtype[INDEX_MAX_KEYS]; /* its right-hand type */
	Oid			keycoll[INDEX_MAX_KEYS];
	FmgrInfo	keyfinfo[INDEX_MAX_KEYS];
	ExprState  *keyexpr[INDEX_MAX_KEYS];	/* the key sought, over params */
	int			nset;			/* columns set */
	AttrNumber *setatt;
	ExprState **setexpr;		/* their new values, over params */
	List	   *arbiters;		/* INSERT: the ON CONFLICT arbiter indexes */
	ExprState  *gate;			/* INSERT: the row's condition over params
								 * (a Result's constant qual), or NULL */
	int			nvals;			/* INSERT: dst's columns, */
	ExprState **valexpr;		/* each one's value, over params */
	int			nown;			/* softmig statement triggers on dst */
	int32	   *ownmig;			/* their migrations */
	ResultRelInfo *rri_proto;	/* InitResultRelInfo's for dst, with its
								 * copy of dst's triggers (direct_result_rel) */
} SoftmigDirect;

/*
 * direct_triggers_ok
 *		May dst's triggers be left out of a one-row d->cmd?  Those that do
 *		not fire on it, foreign-key triggers (AFTER ROW: fired by
 *		ExecAR*Triggers as in the statement) and softmig's own statement
 *		triggers may; their migrations are recorded in d, since they return
 *		at once only while softmig writes for that migration (checked at
 *		each write).  Caller is in d->cxt.
 */
static bool
direct_triggers_ok(SoftmigDirect *d, Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	if (trigdesc == NULL)
		return true;
	d->ownmig = palloc(sizeof(int32) * trigdesc->numtriggers);
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];
		FmgrInfo	finfo;
		char	   *end;
		long		id;

		if (!(d->cmd == CMD_UPDATE ? TRIGGER_FOR_UPDATE(t->tgtype) :
			  d->cmd == CMD_DELETE ? TRIGGER_FOR_DELETE(t->tgtype) :
			  TRIGGER_FOR_INSERT(t->tgtype)) ||
			RI_FKey_trigger_type(t->tgfoid) != RI_TRIGGER_NONE)
			continue;
		if (TRIGGER_FOR_ROW(t->tgtype) || t->tgnargs < 1)
			return false;
		fmgr_info(t->tgfoid, &finfo);
		if (finfo.fn_addr != softmig_write_trigger &&
			finfo.fn_addr != softmig_guard_trigger)
			return false;
		errno = 0;
		id = strtol(t->tgargs[0], &end, 10);
		if (errno != 0 || *end != '\0' || id < 1 || id > PG_INT32_MAX)
			return false;
		d->ownmig[d->nown++] = (int32) id;
	}
	return true;
}

/*
 * direct_index_ok
 *		Is the plan's index a plain, immediate, unique btree on columns whose
 *		every key column the index condition compares for equality with an
 *		expression of the parameters?  Records the scan keys and their
 *		expressions in d.  Takes RowExclusiveLock on the index (as the
 *		statement's executor does), kept.  Caller is in d->cxt.
 */
static bool
direct_index_ok(SoftmigDirect *d, IndexScan *scan)
{
	Relation	idx = index_open(d->indexid, RowExclusiveLock);
	Form_pg_index ix = idx->rd_index;
	bool		seen[INDEX_MAX_KEYS] = {0};
	bool		ok = false;
	ListCell   *lc;

	d->nkeys = IndexRelationGetNumberOfKeyAttributes(idx);
	if (!ix->indisunique || !ix->indimmediate || idx->rd_rel->relam != BTREE_AM_OID ||
		!heap_attisnull(idx->rd_indextuple, Anum_pg_index_indexprs, NULL) ||
		!heap_attisnull(idx->rd_indextuple, Anum_pg_index_indpred, NULL) ||
		list_length(scan->indexqual) != d->nkeys)
		goto done;
	foreach(lc, scan->indexqual)
	{
		OpExpr	   *op = (OpExpr *) lfirst(lc);
		Node	   *left;
		Node	   *right;
		Var		   *var;
		int			col;
		int			strategy;
		Oid			lefttype;
		Oid			righttype;

		if (!IsA(op, OpExpr) || list_length(op->args) != 2)
			goto done;
		left = linitial(op->args);
		right = lsecond(op->args);
		while (IsA(left, RelabelType))
			left = (Node *) ((RelabelType *) left)->arg;
		if (!IsA(left, Var) || ((Var *) left)->varno != INDEX_VAR ||
			contain_var_clause(right))
			goto done;
		var = (Var *) left;
		col = var->varattno;
		if (col < 1 || col > d->nkeys || seen[col - 1] || ix->indkey.values[col - 1] <= 0)
			goto done;
		seen[col - 1] = true;
		get_op_opfamily_properties(op->opno, idx->rd_opfamily[col - 1], false,
								   &strategy, &lefttype, &righttype);
		if (strategy != BTEqualStrategyNumber)
			goto done;
		d->keyatt[col - 1] = ix->indkey.values[col - 1];
		d->keyfunc[col - 1] = get_opcode(op->opno);
		d->keysubtype[col - 1] = righttype;
		d->keycoll[col - 1] = op->inputcollid;
		fmgr_info_cxt(d->keyfunc[col - 1], &d->keyfinfo[col - 1], d->cxt);
		d->keyexpr[col - 1] = ExecInitExpr((Expr *) copyObject(right), NULL);
	}
	ok = true;
done:
	index_close(idx, NoLock);
	return ok;
}

/*
 * direct_rel_ok
 *		May dst be written with the single-row primitives at all: a plain
 *		table, no partition, no row-level security, no stored generated
 *		columns, no trigger that needs the statement (direct_triggers_ok)?
 *		If so, makes d->rri_proto.  Caller is in d->cxt; dst is locked
 *		through the plan.
 */
static bool
direct_rel_ok(SoftmigDirect *d, Relation rel)
{
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition ||
		rel->rd_rel->relrowsecurity ||
		(rel->rd_att->constr && rel->rd_att->constr->has_generated_stored) ||
		!direct_triggers_ok(d, rel))
		return false;
	d->rri_proto = makeNode(ResultRelInfo);
	InitResultRelInfo(d->rri_proto, rel, d->rti, NULL, 0);
	return true;
}

/*
 * direct_analyze_insert
 *		The INSERT part of direct_analyze: a Result over no table whose
 *		columns are dst's, in order, computed from the parameters alone,
 *		perhaps with a condition over the parameters alone (the projection
 *		to legacy carries only a row with a target key); ON CONFLICT is
 *		allowed (its arbiters are recorded: a row that conflicts leaves the
 *		write to the statement).  Caller is in d->cxt.
 */
static bool
direct_analyze_insert(SoftmigDirect *d, PlannedStmt *stmt, ModifyTable *mt)
{
	Result	   *res = (Result *) outerPlan(mt);
	Relation	rel;
	ListCell   *lc;
	bool		ok;

	if (res == NULL || !IsA(res, Result) || outerPlan(res) != NULL ||
		res->plan.qual != NIL || res->plan.initPlan != NIL ||
		contain_var_clause(res->resconstantqual) ||
		(mt->onConflictAction != ONCONFLICT_NONE && mt->arbiterIndexes == NIL))
		return false;
	d->rti = linitial_int(mt->resultRelations);
	d->relid = rt_fetch(d->rti, stmt->rtable)->relid;
	d->arbiters = list_copy(mt->arbiterIndexes);
	/* a gating qual: over parameters only (a NULL key of a projection) */
	if (res->resconstantqual != NULL)
		d->gate = ExecInitQual((List *) copyObject(res->resconstantqual), NULL);

	rel = table_open(d->relid, NoLock);
	d->nvals = RelationGetDescr(rel)->natts;
	d->valexpr = palloc0(sizeof(ExprState *) * Max(d->nvals, 1));
	ok = direct_rel_ok(d, rel) && list_length(res->plan.targetlist) == d->nvals;
	foreach(lc, res->plan.targetlist)
	{
		TargetEntry *te = lfirst_node(TargetEntry, lc);

		if (!ok)
			break;
		if (te->resjunk || te->resno != foreach_current_index(lc) + 1 ||
			contain_var_clause((Node *) te->expr))
			ok = false;
		else
			d->valexpr[te->resno - 1] = ExecInitExpr((Expr *) copyObject(te->expr), NULL);
	}
	table_close(rel, NoLock);
	return ok;
}

/*
 * direct_analyze
 *		Does this generic plan have the shape the single-row primitives can
 *		run (see the file header)?  Fills d.  dst is locked by the caller's
 *		hold on the plan.  Caller is in d->cxt.
 */
static bool
direct_analyze(SoftmigDirect *d, CachedPlan *cplan)
{
	PlannedStmt *stmt;
	ModifyTable *mt;
	IndexScan  *scan;
	Relation	rel;
	List	   *colnos;
	ListCell   *lc;
	bool		ok;

	if (list_length(cplan->stmt_list) != 1)
		return false;
	stmt = linitial_node(PlannedStmt, cplan->stmt_list);
	if ((stmt->commandType != CMD_UPDATE && stmt->commandType != CMD_DELETE &&
		 stmt->commandType != CMD_INSERT) ||
		!stmt->canSetTag || stmt->hasReturning || stmt->subplans != NIL ||
		stmt->rowMarks != NIL || stmt->planTree == NULL || !IsA(stmt->planTree, ModifyTable))
		return false;
	mt = (ModifyTable *) stmt->planTree;
	if (mt->operation != stmt->commandType || list_length(mt->resultRelations) != 1 ||
		mt->returningLists != NIL || mt->plan.initPlan != NIL ||
		list_length(mt->updateColnosLists) != (mt->operation == CMD_UPDATE ? 1 : 0))
		return false;
	d->cmd = mt->operation;
	if (d->cmd == CMD_INSERT)
		return direct_analyze_insert(d, stmt, mt);
	if (mt->onConflictAction != ONCONFLICT_NONE)
		return false;
	scan = (IndexScan *) outerPlan(mt);
	if (scan == NULL || !IsA(scan, IndexScan) || scan->scan.plan.qual != NIL ||
		scan->indexorderby != NIL || scan->scan.plan.initPlan != NIL ||
		scan->scan.scanrelid != linitial_int(mt->resultRelations))
		return false;
	d->rti = scan->scan.scanrelid;
	d->relid = rt_fetch(d->rti, stmt->rtable)->relid;
	d->indexid = scan->indexid;

	/* an UPDATE's new values: the scan's non-junk columns, in updateColnos order */
	colnos = d->cmd == CMD_UPDATE ? linitial(mt->updateColnosLists) : NIL;
	d->setatt = palloc(sizeof(AttrNumber) * Max(list_length(colnos), 1));
	d->setexpr = palloc(sizeof(ExprState *) * Max(list_length(colnos), 1));
	foreach(lc, scan->scan.plan.targetlist)
	{
		TargetEntry *te = lfirst_node(TargetEntry, lc);

		if (te->resjunk)
			continue;
		if (d->nset >= list_length(colnos) || contain_var_clause((Node *) te->expr))
			return false;
		d->setatt[d->nset] = list_nth_int(colnos, d->nset);
		d->setexpr[d->nset] = ExecInitExpr((Expr *) copyObject(te->expr), NULL);
		d->nset++;
	}
	if (d->nset != list_length(colnos))
		return false;

	rel = table_open(d->relid, NoLock);
	ok = direct_rel_ok(d, rel) && direct_index_ok(d, scan);
	table_close(rel, NoLock);
	return ok;
}

/*
 * direct_build
 *		(Re)build *cache for plan generation cplan, in a memory context that
 *		is a child of parent (the cache struct itself is allocated there
 *		once).  Returns the entry.
 */
static SoftmigDirect *
direct_build(SoftmigDirect *d, CachedPlan *cplan, MemoryContext parent)
{
	MemoryContext old;

	if (d == NULL)
		d = MemoryContextAllocZero(parent, sizeof(SoftmigDirect));
	else
	{
		if (d->cxt)
			MemoryContextDelete(d->cxt);
		memset(d, 0, sizeof(SoftmigDirect));
	}
	d->cplan = cplan;
	d->generation = cplan->generation;
	d->cxt = AllocSetContextCreate(parent, "softmig direct update", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(d->cxt);
	d->usable = direct_analyze(d, cplan);
	MemoryContextSwitchTo(old);
	return d;
}

/*
 * key_still_matches
 *		Does the row in slot (a newer version of the row found) still have
 *		the key sought?  As EvalPlanQual's recheck of the index condition.
 */
static bool
key_still_matches(SoftmigDirect *d, TupleTableSlot *slot, Datum *keyval)
{
	for (int k = 0; k < d->nkeys; k++)
	{
		bool		isnull;
		Datum		v = slot_getattr(slot, d->keyatt[k], &isnull);

		if (isnull || !DatumGetBool(FunctionCall2Coll(&d->keyfinfo[k], d->keycoll[k],
													  v, keyval[k])))
			return false;
	}
	return true;
}

/*
 * direct_result_rel
 *		What ExecInitResultRelation(estate, rri, d->rti) does, from
 *		d->rri_proto: the same ResultRelInfo, registered in estate the same
 *		way, but with the proto's copy of dst's trigger descriptor instead of
 *		a new copy per write (copying softmig's four triggers and any others
 *		with their arguments cost about 2 000 instructions of a one-row
 *		write, 1 % to 2 %).  The copy stays right for the plan generation: a
 *		trigger created, dropped, enabled or disabled on dst invalidates
 *		dst's relation cache entry and with it the plan, and a new
 *		generation makes a new proto.  The per-execution trigger function
 *		caches are new.  Allocates in the caller's memory context (the
 *		executor's query context); dst is locked through the plan.
 */
static ResultRelInfo *
direct_result_rel(SoftmigDirect *d, EState *estate)
{
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	memcpy(rri, d->rri_proto, sizeof(ResultRelInfo));
	rri->ri_RelationDesc = softmig_exec_result_relation(estate, d->rti);
	if (rri->ri_TrigDesc != NULL)
	{
		int			n = rri->ri_TrigDesc->numtriggers;

		rri->ri_TrigFunctions = palloc0(sizeof(FmgrInfo) * n);
		rri->ri_TrigWhenExprs = palloc0(sizeof(ExprState *) * n);
	}
	estate->es_result_relations = palloc0(sizeof(ResultRelInfo *) * estate->es_range_table_size);
	estate->es_result_relations[d->rti - 1] = rri;
	estate->es_opened_result_relations = lappend(estate->es_opened_result_relations, rri);
	return rri;
}

/*
 * direct_error_context
 *		Error context of a direct one-row write: which table softmig was
 *		writing (the statement's context would quote its SQL).
 */
static void
direct_error_context(void *arg)
{
	SoftmigDirect *d = (SoftmigDirect *) arg;
	char	   *name = get_rel_name(d->relid);

	if (name != NULL)
		errcontext("softmig's one-row %s of table \"%s.%s\"%s",
				   d->cmd == CMD_DELETE ? "DELETE" : d->cmd == CMD_INSERT ? "INSERT" : "UPDATE",
				   get_namespace_name(get_rel_namespace(d->relid)), name,
				   d->cmd == CMD_INSERT ? "" : " by key");
}

/*
 * direct_insert
 *		The INSERT of direct_run: the row from the plan's expressions, the
 *		constraints checked, then, with ON CONFLICT, the speculative
 *		insertion the statement makes (a pre-check of the arbiter indexes,
 *		the row inserted under a speculative token, confirmed only if no
 *		arbiter conflict arose meanwhile).  Returns 1, or -1 when an arbiter
 *		index already holds the key (the row inserted speculatively, if any,
 *		is dead again): the statement then does its ON CONFLICT action.
 *		Returns 0 when the plan's condition is false for these parameters.
 */
static int
direct_insert(SoftmigDirect *d, EState *estate, ResultRelInfo *rri,
			  ExprContext *econtext, TupleTableSlot *slot)
{
	Relation	rel = rri->ri_RelationDesc;
	List	   *recheck;

	if (d->gate != NULL && !ExecQual(d->gate, econtext))
		return 0;				/* the condition is false: no row */
	ExecClearTuple(slot);
	for (int i = 0; i < d->nvals; i++)
		slot->tts_values[i] = ExecEvalExprSwitchContext(d->valexpr[i], econtext,
														&slot->tts_isnull[i]);
	ExecStoreVirtualTuple(slot);
	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, estate);
	if (d->arbiters != NIL)
	{
		ItemPointerData conflict;
		TransactionId xid = GetCurrentTransactionId();
		uint32		token;
		bool		spec_conflict = false;

		if (!softmig_check_index_constraints(rri, slot, estate, &conflict, d->arbiters))
			return -1;
		token = SpeculativeInsertionLockAcquire(xid);
		table_tuple_insert_speculative(rel, slot, estate->es_output_cid, 0, NULL, token);
		recheck = softmig_insert_index_tuples(rri, slot, estate, true, &spec_conflict,
											  d->arbiters);
		table_tuple_complete_speculative(rel, slot, token, !spec_conflict);
		SpeculativeInsertionLockRelease(xid);
		if (spec_conflict)
		{
			list_free(recheck);
			return -1;
		}
	}
	else
	{
		table_tuple_insert(rel, slot, estate->es_output_cid, 0, NULL);
		recheck = softmig_insert_index_tuples(rri, slot, estate, false, NULL, NIL);
	}
	ExecARInsertTriggers(estate, rri, slot, recheck, NULL);
	return 1;
}

/*
 * direct_run
 *		Carry out one execution of the analyzed plan with the parameters
 *		values/nulls (SPI convention, types of src).  Returns the rows
 *		written (0 or 1), or -1 when the statement must run instead (nothing
 *		was written).  Locks: dst RowExclusiveLock (held already through
 *		the plan), its indexes RowExclusiveLock (a DELETE: only the one it
 *		probes, as the statement), the row as the statement would.  Errors
 *		are those the statement raises (privileges, constraints).
 */
static int
direct_run(SoftmigDirect *d, CachedPlan *cplan, CachedPlanSource *src,
		   Datum *values, const char *nulls)
{
	PlannedStmt *stmt = linitial_node(PlannedStmt, cplan->stmt_list);
	EState	   *estate;
	ExprContext *econtext;
	ParamListInfo params;
	ResultRelInfo *rri;
	Relation	rel;
	Relation	idx = NULL;
	TupleTableSlot *oldslot = NULL;
	TupleTableSlot *newslot = NULL;
	ScanKeyData skey[INDEX_MAX_KEYS];
	Datum		keyval[INDEX_MAX_KEYS];
	IndexScanDesc scan;
	ErrorContextCallback errcb;
	MemoryContext oldcxt;
	bool		found = true;
	int			result = 0;

	errcb.callback = direct_error_context;
	errcb.arg = d;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	(void) softmig_exec_check_perms(stmt);

	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	estate->es_snapshot = GetActiveSnapshot();
	estate->es_output_cid = GetCurrentCommandId(true);
	params = makeParamList(src->num_params);
	for (int i = 0; i < src->num_params; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = nulls != NULL && nulls[i] == 'n';
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = src->param_types[i];
	}
	estate->es_param_list_info = params;
	softmig_exec_init_range_table(estate, stmt);

	rri = direct_result_rel(d, estate);
	rel = rri->ri_RelationDesc;
	CheckCmdReplicaIdentity(rel, d->cmd);
	if (d->cmd == CMD_DELETE)
	{
		/*
		 * A DELETE adds no index entries: as the statement, it opens only
		 * the index it probes, with the statement's lock on it.
		 */
		idx = try_relation_open(d->indexid, RowExclusiveLock);
		if (idx != NULL && idx->rd_rel->relkind != RELKIND_INDEX)
		{
			relation_close(idx, NoLock);
			idx = NULL;
		}
	}
	else
	{
		ExecOpenIndices(rri, d->cmd == CMD_INSERT && d->arbiters != NIL);
		for (int i = 0; i < rri->ri_NumIndices; i++)
			if (RelationGetRelid(rri->ri_IndexRelationDescs[i]) == d->indexid)
				idx = rri->ri_IndexRelationDescs[i];
	}
	AfterTriggerBeginQuery();
	econtext = GetPerTupleExprContext(estate);
	econtext->ecxt_param_list_info = params;

	if (d->cmd == CMD_INSERT)
	{
		result = direct_insert(d, estate, rri, econtext,
							   table_slot_create(rel, &estate->es_tupleTable));
		found = false;
	}
	else if (idx == NULL)
		result = -1;			/* the index went away: the statement */
	for (int k = 0; idx != NULL && found && k < d->nkeys; k++)
	{
		bool		isnull;

		keyval[k] = ExecEvalExprSwitchContext(d->keyexpr[k], econtext, &isnull);
		if (isnull)
			found = false;		/* "key = NULL" finds no row */
		ScanKeyEntryInitialize(&skey[k], isnull ? SK_ISNULL : 0, k + 1,
							   BTEqualStrategyNumber, d->keysubtype[k], d->keycoll[k],
							   d->keyfunc[k], keyval[k]);
	}
	if (idx != NULL && found)
	{
		oldslot = table_slot_create(rel, &estate->es_tupleTable);
		newslot = table_slot_create(rel, &estate->es_tupleTable);
		scan = softmig_index_beginscan(rel, idx, estate->es_snapshot, d->nkeys);
		index_rescan(scan, skey, d->nkeys, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, oldslot);
		index_endscan(scan);
	}
	while (idx != NULL && found)
	{
		ItemPointerData tid = oldslot->tts_tid;
		TM_FailureData tmfd;
		LockTupleMode lockmode = LockTupleExclusive;
		TM_Result	res;

		if (d->cmd == CMD_DELETE)
		{
			res = softmig_table_tuple_delete(rel, &tid, estate->es_output_cid,
											 estate->es_snapshot, &tmfd);
			if (res == TM_Ok)
			{
				ExecARDeleteTriggers(estate, rri, &tid, NULL, NULL, false);
				result = 1;
				break;
			}
		}
		else
		{
			int			natts = RelationGetDescr(rel)->natts;
			SoftmigUpdateIndexes upd;

			/* the new row: the found version with the plan's new values */
			slot_getallattrs(oldslot);
			ExecClearTuple(newslot);
			memcpy(newslot->tts_values, oldslot->tts_values, sizeof(Datum) * natts);
			memcpy(newslot->tts_isnull, oldslot->tts_isnull, sizeof(bool) * natts);
			for (int s = 0; s < d->nset; s++)
				newslot->tts_values[d->setatt[s] - 1] =
					ExecEvalExprSwitchContext(d->setexpr[s], econtext,
											  &newslot->tts_isnull[d->setatt[s] - 1]);
			ExecStoreVirtualTuple(newslot);
			if (rel->rd_att->constr)
				ExecConstraints(rri, newslot, estate);

			res = softmig_table_tuple_update(rel, &tid, newslot, estate->es_output_cid,
											 estate->es_snapshot, &tmfd, &lockmode, &upd);
			if (res == TM_Ok)
			{
				List	   *recheck = NIL;

				if (rri->ri_NumIndices > 0 && softmig_update_needs_indexes(upd))
					recheck = softmig_insert_update_index_tuples(rri, newslot, estate, upd);
				ExecARUpdateTriggers(estate, rri, NULL, NULL, &tid, NULL, newslot,
									 recheck, NULL, false);
				result = 1;
				break;
			}
		}
		if (res == TM_Deleted)
			break;				/* deleted meanwhile: no row */
		if (res != TM_Updated)
		{
			result = -1;		/* nothing written: the statement says */
			break;
		}

		/*
		 * Updated by a transaction that committed meanwhile (READ COMMITTED
		 * only): lock the newest version and write it if it still has the
		 * key, as the statement's EvalPlanQual does.
		 */
		res = table_tuple_lock(rel, &tid, estate->es_snapshot, oldslot,
							   estate->es_output_cid, lockmode, LockWaitBlock,
							   TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (res == TM_Deleted)
			break;
		if (res != TM_Ok)
		{
			result = -1;
			break;
		}
		found = key_still_matches(d, oldslot, keyval);
	}

	AfterTriggerEndQuery(estate);
	error_context_stack = errcb.previous;
	PopActiveSnapshot();
	ExecResetTupleTable(estate->es_tupleTable, false);
	if (d->cmd == CMD_DELETE && idx != NULL)
		index_close(idx, NoLock);
	ExecCloseResultRelations(estate);
	ExecCloseRangeTableRelations(estate);
	MemoryContextSwitchTo(oldcxt);
	FreeExecutorState(estate);
	return result;
}

/*
 * softmig_direct_write
 *		Carry out the kept one-row UPDATE, DELETE or INSERT plan (one statement,
 *		parameters values/nulls in SPI's convention) without a second
 *		executor if its generic plan allows (see the file header).  *cache
 *		holds the analysis of the plan's current generation; it and its
 *		memory are allocated under parent, which must live as long as plan.
 *		Returns the rows written (0 or 1), or -1 when the caller must run
 *		plan through SPI (nothing was written).  Caller is connected to SPI,
 *		in the identity the statement would run under, with the snapshot
 *		SPI would take (READ COMMITTED: a fresh one).  Takes the plan's
 *		locks (dst RowExclusiveLock) as SPI would.
 */
int
softmig_direct_write(SPIPlanPtr plan, struct SoftmigDirect **cache, MemoryContext parent,
					  Datum *values, const char *nulls)
{
	List	   *sources;
	CachedPlan *cplan;
	SoftmigDirect *d = *cache;
	int			result = -1;

	if (!direct_writes || IsolationUsesXactSnapshot() || XactReadOnly || IsInParallelMode())
		return -1;
	sources = SPI_plan_get_plan_sources(plan);
	if (list_length(sources) != 1)
		return -1;
	cplan = SPI_plan_get_cached_plan(plan);
	if (cplan == NULL)
		return -1;
	if (d == NULL || d->cplan != cplan || d->generation != cplan->generation)
		*cache = d = direct_build(d, cplan, parent);
	if (d->usable)
	{
		bool		quiet = true;

		for (int i = 0; i < d->nown; i++)
			quiet &= softmig_mirroring(d->ownmig[i]);
		if (quiet)
			result = direct_run(d, cplan, linitial(sources), values, nulls);
	}
	ReleaseCachedPlan(cplan, CurrentResourceOwner);
	return result;
}

/*
 * softmig_directwrite_init
 *		Define softmig.direct_writes (from _PG_init).
 */
void
softmig_directwrite_init(void)
{
	DefineCustomBoolVariable("softmig.direct_writes",
							 "Carries a one-row UPDATE, DELETE or INSERT to the other table with the executor's single-row primitives where its plan allows.",
							 "Off: every such write runs the kept statement (the same result, with a second executor).",
							 &direct_writes,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}
