/*-------------------------------------------------------------------------
 *
 * route.c
 *	  Plan-time routing of routed views.
 *
 *	  A routed view (softmig.create_read_view) is a UNION ALL of the two
 *	  tables in which each branch is gated by a One-Time Filter
 *	  "side = softmig.read_source(name)".  Executed as planned, every
 *	  statement starts up both branches (locks the indexes, initializes both
 *	  scans) and then runs one: about +2.7 us of CPU per key lookup, +125%
 *	  over reading the table directly (bench/RESULTS.md).
 *
 *	  This planner hook evaluates such filters when the plan is made and
 *	  replaces the Append by the one branch that passes, so a lookup through
 *	  the view runs the plan a lookup on the table runs.  The decision is
 *	  then part of the plan, which therefore depends on everything that
 *	  decided it, and is invalidated when any of it changes:
 *
 *	  - the read-path catalog: the plan lists softmig.migrations among its
 *		relations, and every registration, switch and migration change
 *		queues a relcache invalidation of that table
 *		(softmig._readpath_invalidate and the trigger on the table);
 *	  - the migration's state: every state change invalidates both tables,
 *		which are among the plan's relations anyway;
 *	  - the reader, application_name: the plan carries an invalidation item
 *		for softmig.read_source's pg_proc row, and a wrapper around the
 *		assign hook of application_name fires that item in this backend
 *		whenever the setting changes (SET, RESET, function SET clauses,
 *		transaction end), so the next execution plans again.
 *
 *	  The table of a dropped branch stays in the plan's range table (its
 *	  invalidations still apply); its privilege check is made once, at plan
 *	  time, and the entry is then marked so the executor neither locks nor
 *	  checks it at each execution (route_release_dropped).
 *
 *	  Only a filter made of constants, immutable functions and operators and
 *	  read_source itself (the shape the views use) is evaluated; anything
 *	  else, an Append with partition pruning, or a parallel-aware Append
 *	  whose chosen branch is not a partial plan is left alone.  softmig.route_at_plan_time = off keeps the one-time
 *	  filters for execution time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/parsetree.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "softmig.h"
#include "readpath.h"

/* softmig.route_at_plan_time */
static bool route_at_plan_time = true;

static planner_hook_type prev_planner_hook = NULL;
static GucStringAssignHook prev_appname_assign = NULL;

/*
 * pg_proc hash values of the read_source functions routed plans of this
 * backend depend on (normally one: the installed extension's).  Fired by the
 * application_name wrapper; computed at plan time so the wrapper needs no
 * catalog access.
 */
#define ROUTE_MAX_FUNCS 8
static uint32 route_func_hashes[ROUTE_MAX_FUNCS];
static int	route_nfuncs = 0;
static bool route_funcs_overflow = false;

typedef struct RouteContext
{
	bool		routed;			/* some Append was replaced */
	List	   *funcs;			/* OIDs of the read_source calls evaluated */
	Bitmapset  *dropped;		/* RT indexes scanned only by dropped branches */
} RouteContext;

/*
 * dropped_scans
 *		Add to *rtis the range-table indexes a dropped branch scans, when the
 *		branch is a plain scan of one table (sequential, index, index-only or
 *		bitmap, under the gating Result); false for any other shape (joins,
 *		partitioned tables, subplans), which keeps its relations as they are.
 */
static bool
dropped_scans(Plan *p, Bitmapset **rtis)
{
	if (p == NULL)
		return true;
	switch (nodeTag(p))
	{
		case T_Result:
			if (p->righttree != NULL || p->initPlan != NIL)
				return false;
			return dropped_scans(p->lefttree, rtis);
		case T_SeqScan:
		case T_IndexScan:
		case T_IndexOnlyScan:
		case T_BitmapIndexScan:
		case T_BitmapHeapScan:
			/* only a bitmap heap scan has a child: its bitmap */
			if (p->righttree != NULL || p->initPlan != NIL ||
				(p->lefttree != NULL && !IsA(p, BitmapHeapScan)))
				return false;
			*rtis = bms_add_member(*rtis, ((Scan *) p)->scanrelid);
			return dropped_scans(p->lefttree, rtis);
		case T_BitmapAnd:
		case T_BitmapOr:
			{
				List	   *kids = (IsA(p, BitmapAnd) ? ((BitmapAnd *) p)->bitmapplans :
									((BitmapOr *) p)->bitmapplans);
				ListCell   *lc;

				foreach(lc, kids)
				{
					if (!dropped_scans(lfirst(lc), rtis))
						return false;
				}
				return true;
			}
		default:
			return false;
	}
}

/*
 * is_read_source
 *		Is funcid softmig's read_source (a C function of that name whose
 *		entry point is ours, whatever schema the extension is in)?  Only
 *		called for functions in one-time filters, at plan time.
 */
static bool
is_read_source(Oid funcid)
{
	HeapTuple	tp;
	bool		candidate;
	FmgrInfo	finfo;

	tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tp))
		return false;
	candidate = ((Form_pg_proc) GETSTRUCT(tp))->prolang == ClanguageId &&
		strcmp(NameStr(((Form_pg_proc) GETSTRUCT(tp))->proname), "read_source") == 0;
	ReleaseSysCache(tp);
	if (!candidate)
		return false;
	fmgr_info(funcid, &finfo);
	return finfo.fn_addr == softmig_read_source;
}

/*
 * route_expr_ok
 *		Can a one-time filter be decided at plan time?  True when it is made
 *		of constants, immutable functions and operators, boolean operators,
 *		relabelings and calls of read_source (whose OIDs are added to
 *		*funcs); false for anything else.
 */
static bool
route_expr_ok(Node *node, List **funcs)
{
	ListCell   *lc;

	if (node == NULL)
		return true;
	switch (nodeTag(node))
	{
		case T_Const:
			return true;
		case T_List:
			foreach(lc, (List *) node)
			{
				if (!route_expr_ok(lfirst(lc), funcs))
					return false;
			}
			return true;
		case T_RelabelType:
			return route_expr_ok((Node *) ((RelabelType *) node)->arg, funcs);
		case T_BoolExpr:
			return route_expr_ok((Node *) ((BoolExpr *) node)->args, funcs);
		case T_FuncExpr:
			{
				FuncExpr   *f = (FuncExpr *) node;

				if (is_read_source(f->funcid))
					*funcs = list_append_unique_oid(*funcs, f->funcid);
				else if (func_volatile(f->funcid) != PROVOLATILE_IMMUTABLE)
					return false;
				return route_expr_ok((Node *) f->args, funcs);
			}
		case T_OpExpr:
			{
				OpExpr	   *o = (OpExpr *) node;

				set_opfuncid(o);
				if (func_volatile(o->opfuncid) != PROVOLATILE_IMMUTABLE)
					return false;
				return route_expr_ok((Node *) o->args, funcs);
			}
		default:
			return false;
	}
}

/*
 * route_eval
 *		Evaluate a one-time filter (an implicitly ANDed list) now.  NULL
 *		counts as false, as it does in a Result node.  Errors of the
 *		functions called propagate.
 */
static bool
route_eval(List *qual)
{
	EState	   *estate = CreateExecutorState();
	MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
	ExprState  *es = ExecPrepareExpr((Expr *) make_ands_explicit(qual), estate);
	bool		isnull;
	Datum		d = ExecEvalExprSwitchContext(es, GetPerTupleExprContext(estate), &isnull);
	bool		pass = !isnull && DatumGetBool(d);

	MemoryContextSwitchTo(old);
	FreeExecutorState(estate);
	return pass;
}

/*
 * passthrough_tlist
 *		Does a Result's target list only hand its child's columns on, in
 *		order (so the Result can go)?
 */
static bool
passthrough_tlist(Plan *result)
{
	Plan	   *child = result->lefttree;
	ListCell   *lc;
	AttrNumber	n = 0;

	if (child == NULL || list_length(result->targetlist) != list_length(child->targetlist))
		return false;
	foreach(lc, result->targetlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		Var		   *v = (Var *) tle->expr;

		n++;
		if (!IsA(v, Var) || v->varno != OUTER_VAR || v->varattno != n)
			return false;
	}
	return true;
}

/*
 * route_append
 *		ap is an Append or a MergeAppend with the given branches and
 *		partition pruning info.  If every branch is a Result gated by a
 *		one-time filter that calls read_source and can be decided now, and
 *		exactly one passes, return that branch (without its filter, and
 *		without the Result when it only passed rows on), carrying ap's
 *		column names.  (A MergeAppend's branches each deliver its sort
 *		order, so one alone still does.)  A parallel-aware Append is
 *		replaced only by a partial branch (index >= first_partial, which
 *		is -1 for other Appends): its workers then share that branch's
 *		parallel scan, where a non-partial branch would run once per
 *		worker.  Otherwise return ap unchanged.
 */
static Plan *
route_append(Plan *ap, List *branches, bool pruning, int first_partial,
			 RouteContext *cx)
{
	ListCell   *lc;
	Result	   *chosen = NULL;
	Plan	   *keep;
	List	   *funcs = NIL;
	ListCell   *a;
	ListCell   *k;

	int			chosen_index = -1;
	int			i = 0;

	if (pruning || (ap->parallel_aware && first_partial < 0) ||
		ap->initPlan != NIL || list_length(branches) < 2)
		return ap;
	foreach(lc, branches)
	{
		Result	   *r = (Result *) lfirst(lc);
		List	   *branch_funcs = NIL;

		if (!IsA(r, Result) || r->resconstantqual == NULL ||
			r->plan.initPlan != NIL ||
			!route_expr_ok(r->resconstantqual, &branch_funcs) ||
			branch_funcs == NIL)
			return ap;
		funcs = list_concat_unique_oid(funcs, branch_funcs);
	}
	foreach(lc, branches)
	{
		Result	   *r = (Result *) lfirst(lc);

		if (route_eval((List *) r->resconstantqual))
		{
			if (chosen != NULL)
				return ap;		/* more than one branch: leave it */
			chosen = r;
			chosen_index = i;
		}
		i++;
	}
	if (chosen == NULL || (ap->parallel_aware && chosen_index < first_partial))
		return ap;

	foreach(lc, branches)
	{
		Bitmapset  *rtis = NULL;

		if (lfirst(lc) != chosen && dropped_scans(lfirst(lc), &rtis))
			cx->dropped = bms_add_members(cx->dropped, rtis);
	}
	chosen->resconstantqual = NULL;
	keep = (Plan *) chosen;
	if (chosen->plan.qual == NIL && passthrough_tlist((Plan *) chosen))
		keep = chosen->plan.lefttree;

	/* the Append's output names (they matter at the top of the plan) */
	forboth(a, ap->targetlist, k, keep->targetlist)
	{
		TargetEntry *atle = lfirst_node(TargetEntry, a);
		TargetEntry *ktle = lfirst_node(TargetEntry, k);

		ktle->resname = atle->resname;
		ktle->resjunk = atle->resjunk;
		ktle->ressortgroupref = atle->ressortgroupref;
	}
	cx->routed = true;
	cx->funcs = list_concat_unique_oid(cx->funcs, funcs);
	return keep;
}

/*
 * route_plan
 *		Walk a plan tree, children first, routing every eligible Append;
 *		returns the (possibly replaced) node.
 */
static Plan *
route_plan(Plan *plan, RouteContext *cx)
{
	ListCell   *lc;

	if (plan == NULL)
		return NULL;
	check_stack_depth();
	plan->lefttree = route_plan(plan->lefttree, cx);
	plan->righttree = route_plan(plan->righttree, cx);
	switch (nodeTag(plan))
	{
		case T_Append:
			{
				Append	   *ap = (Append *) plan;

				foreach(lc, ap->appendplans)
					lfirst(lc) = route_plan(lfirst(lc), cx);
				return route_append(plan, ap->appendplans,
									softmig_plan_prunes(ap),
									ap->plan.parallel_aware ? ap->first_partial_plan : -1,
									cx);
			}
		case T_MergeAppend:
			{
				MergeAppend *ma = (MergeAppend *) plan;

				foreach(lc, ma->mergeplans)
					lfirst(lc) = route_plan(lfirst(lc), cx);
				return route_append(plan, ma->mergeplans,
									softmig_plan_prunes(ma), -1, cx);
			}
		case T_SubqueryScan:
			((SubqueryScan *) plan)->subplan =
				route_plan(((SubqueryScan *) plan)->subplan, cx);
			break;
		case T_CustomScan:
			foreach(lc, ((CustomScan *) plan)->custom_plans)
				lfirst(lc) = route_plan(lfirst(lc), cx);
			break;
		default:
			break;
	}
	return plan;
}

/*
 * remember_func
 *		Note the pg_proc hash value of a read_source function some routed
 *		plan depends on, for the application_name wrapper.
 */
static void
remember_func(uint32 hash)
{
	for (int i = 0; i < route_nfuncs; i++)
		if (route_func_hashes[i] == hash)
			return;
	if (route_nfuncs < ROUTE_MAX_FUNCS)
		route_func_hashes[route_nfuncs++] = hash;
	else
		route_funcs_overflow = true;
}

/*
 * route_release_dropped
 *		The tables of the branches routing dropped are not read by the plan,
 *		yet every execution of a kept plan would lock them and check the
 *		caller's privileges on them (they stay in the plan's range table).
 *		Do that work once, here: check the privileges now, with the
 *		standard error, and make the plan depend on the role when the check
 *		was the caller's (the plan cache then plans again for another role);
 *		then turn the entries into RTE_RESULT, which the executor neither
 *		locks nor checks, and drop their privilege entries
 *		(softmig_check_rte_now and softmig_prune_perminfos, compat.h).  The
 *		tables stay among the plan's relations, so DDL or a GRANT/REVOKE on
 *		them still invalidates it, and the plan cache still takes their
 *		locks while it revalidates the statement's query.  Entries named by
 *		a row mark or as a result relation are left alone.  Takes no locks
 *		(the planner holds AccessShareLock on every table of the query).
 */
static void
route_release_dropped(PlannedStmt *stmt, Bitmapset *dropped)
{
	int			x = -1;
	ListCell   *lc;

	if (bms_is_empty(dropped))
		return;
	foreach(lc, stmt->rowMarks)
	{
		PlanRowMark *rc = lfirst_node(PlanRowMark, lc);

		dropped = bms_del_member(dropped, rc->rti);
		dropped = bms_del_member(dropped, rc->prti);
	}
	dropped = bms_del_members(dropped, softmig_result_relids(stmt));

	while ((x = bms_next_member(dropped, x)) >= 0)
	{
		RangeTblEntry *rte;

		if (x < 1 || x > list_length(stmt->rtable))
			continue;
		rte = rt_fetch(x, stmt->rtable);
		if (rte->rtekind != RTE_RELATION || rte->inh ||
			rte->rellockmode != AccessShareLock)
			continue;
		if (softmig_check_rte_now(stmt, rte))
			stmt->dependsOnRole = true;
		rte->rtekind = RTE_RESULT;
	}
	softmig_prune_perminfos(stmt);
}

/*
 * shape_write_migration
 *		If stmt is an UPDATE or DELETE whose result relations include shape
 *		views of one migration (and no other's), that migration's id, else
 *		0.  Such a statement finds the rows it changes in the migration's
 *		write authority of the moment, not in the reader's read source
 *		(softmig_read_source_authority): the trigger writes them there, and
 *		the authority always holds every row, where the read source may be
 *		the other table.  It also reads the table the write goes to, with no
 *		mapping to evaluate when the view has the authority's shape.  The
 *		plan depends on the state through both tables, which are among its
 *		relations.
 */
static int32
shape_write_migration(PlannedStmt *stmt)
{
	Bitmapset  *relids;
	int			x = -1;
	int32		id = 0;

	if (stmt->commandType != CMD_UPDATE && stmt->commandType != CMD_DELETE)
		return 0;
	relids = softmig_result_relids(stmt);
	while ((x = bms_next_member(relids, x)) >= 0)
	{
		RangeTblEntry *rte = rt_fetch(x, stmt->rtable);
		int32		m;

		if (rte->rtekind != RTE_RELATION || rte->relkind != RELKIND_VIEW)
			continue;
		m = softmig_shape_view_migration(rte->relid);
		if (m == 0)
			continue;
		if (id != 0 && id != m)
			return 0;
		id = m;
	}
	return id;
}

/*
 * route_planner
 *		planner_hook: plan as usual, then route the routed-view Appends of
 *		the finished plan and record what the routing depends on (see the
 *		file header); for a write through a shape view, the branch of the
 *		write authority (shape_write_migration).  Takes no locks of its
 *		own; read_source may read the read-path catalog (AccessShareLock) to
 *		load its cache.
 */
static PlannedStmt *
route_planner(Query *parse, const char *query_string, int cursorOptions,
			  ParamListInfo boundParams SOFTMIG_PLANNER_EXTRA_PARAM)
{
	PlannedStmt *stmt;
	RouteContext cx = {false, NIL, NULL};
	ListCell   *lc;
	int32		prev_authority;

	stmt = softmig_chain_hook(prev_planner_hook, standard_planner,
							  parse, query_string, cursorOptions, boundParams
							  SOFTMIG_PLANNER_EXTRA_ARG);

	if (!route_at_plan_time || stmt->commandType == CMD_UTILITY)
		return stmt;

	prev_authority = softmig_read_source_authority(shape_write_migration(stmt));
	PG_TRY();
	{
		stmt->planTree = route_plan(stmt->planTree, &cx);
		foreach(lc, stmt->subplans)
			lfirst(lc) = route_plan(lfirst(lc), &cx);
	}
	PG_FINALLY();
	{
		(void) softmig_read_source_authority(prev_authority);
	}
	PG_END_TRY();
	if (!cx.routed)
		return stmt;

	{
		Oid			catalog = softmig_readpath_catalog_oid();

		if (OidIsValid(catalog))
			stmt->relationOids = list_append_unique_oid(stmt->relationOids, catalog);
	}
	foreach(lc, cx.funcs)
	{
		PlanInvalItem *item = makeNode(PlanInvalItem);

		item->cacheId = PROCOID;
		item->hashValue = GetSysCacheHashValue1(PROCOID, ObjectIdGetDatum(lfirst_oid(lc)));
		stmt->invalItems = lappend(stmt->invalItems, item);
		remember_func(item->hashValue);
	}
	route_release_dropped(stmt, cx.dropped);
	return stmt;
}

/*
 * route_appname_assign
 *		Wrapper around application_name's assign hook: after the original,
 *		when the name changes, invalidate this backend's routed plans (their
 *		pg_proc dependency on read_source).  Runs in any context, including
 *		transaction abort: no allocation, no catalog access, no error.
 */
static void
route_appname_assign(const char *newval, void *extra)
{
	if (prev_appname_assign)
		prev_appname_assign(newval, extra);
	if (route_nfuncs == 0 && !route_funcs_overflow)
		return;
	if (newval != NULL && application_name != NULL &&
		strcmp(newval, application_name) == 0)
		return;
	if (route_funcs_overflow)
		CallSyscacheCallbacks(PROCOID, 0);	/* every function */
	else
		for (int i = 0; i < route_nfuncs; i++)
			CallSyscacheCallbacks(PROCOID, route_func_hashes[i]);
}

/*
 * wrap_appname_assign
 *		Find application_name among the GUCs and put route_appname_assign in
 *		front of its assign hook.  Returns false (routing stays off) if the
 *		setting cannot be found.
 */
static bool
wrap_appname_assign(void)
{
	struct config_generic **vars;
	int			nvars;

	vars = softmig_get_guc_variables(&nvars);
	for (int i = 0; i < nvars; i++)
	{
		if (vars[i]->vartype == PGC_STRING &&
			strcmp(vars[i]->name, "application_name") == 0)
		{
			struct config_string *conf = softmig_guc_string(vars[i]);

			prev_appname_assign = conf->assign_hook;
			conf->assign_hook = route_appname_assign;
			return true;
		}
	}
	return false;
}

/*
 * softmig_route_init
 *		Called once per process from _PG_init: the GUC, the planner hook and
 *		the application_name wrapper.  Without the wrapper plans are not
 *		routed (the GUC then has no effect).
 */
void
softmig_route_init(void)
{
	DefineCustomBoolVariable("softmig.route_at_plan_time",
							 "Decide routed views' read source when a statement is planned.",
							 "On: the plan keeps only the branch of the caller's read source and is planned again when routing or application_name changes.  Off: both branches stay in the plan, gated by one-time filters evaluated at execution.",
							 &route_at_plan_time,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	if (!wrap_appname_assign())
	{
		route_at_plan_time = false;
		return;
	}
	prev_planner_hook = planner_hook;
	planner_hook = route_planner;
}
