/*-------------------------------------------------------------------------
 *
 * rules.c
 *	  The behavioural layer, part one: transition rules (an enforced state
 *	  machine on a status column).  Invariants (queries that return
 *	  violating rows) are invariants.c.
 *
 *	  Transition rules.  softmig.add_transition_rule(name, tbl, col, from,
 *	  to, requires) adds one allowed edge of column tbl.col (from NULL: the
 *	  first value, on INSERT or while the column is still NULL).  Once a
 *	  column has rules, the trigger softmig_rule_<migration id> on tbl,
 *	  AFTER INSERT OR UPDATE OF <ruled columns> FOR EACH ROW, checks every
 *	  change of a ruled column: the edge (old value -> new value, compared
 *	  as the column's text output) must be allowed, and the edge's requires
 *	  expression (boolean SQL over the new row, refer to it as new.<col>)
 *	  must be true.  A violation is refused with SM008 naming the rule, the
 *	  edge and the entity's key, or, with option transition_rules =
 *	  'observe', recorded in softmig.rule_violations and let through.
 *	  Unchanged values are no transition; a change to NULL is never allowed.
 *
 *	  The trigger keeps, per firing relation (the table or one of its
 *	  partitions, which inherit the trigger), the rules and cached plans for
 *	  the requires expressions and the key in a backend-local list,
 *	  invalidated by relcache invalidation of the relation (adding or
 *	  dropping a rule recreates the trigger, which sends one).  requires
 *	  runs as the owner of the ruled table (it is the owner's rule, like
 *	  mirroring runs as the owner), security-restricted, with the pinned
 *	  search_path and transaction_read_only on.  Writes softmig makes itself
 *	  (mirroring, projection, backfill: softmig_mirroring(id)) carry a
 *	  change that was already judged where it was made and are not checked
 *	  again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "softmig.h"
#include "observe.h"
#include "readpath.h"

/* One allowed edge of a ruled column. */
typedef struct RuleEdge
{
	int32		id;
	char	   *from;			/* NULL: the first value */
	char	   *to;
	char	   *requires;		/* NULL: none */
	SPIPlanPtr	plan;			/* SELECT (requires)::boolean FROM (row) AS
								 * new */
} RuleEdge;

/* A ruled column of the firing relation. */
typedef struct RuleColumn
{
	char	   *col;
	int			attidx;			/* 0-based in the firing relation */
	FmgrInfo	out;
	List	   *edges;			/* RuleEdge * */
} RuleColumn;

/* The rules that apply to one firing relation for one migration. */
typedef struct RuleSet
{
	int32		migid;
	Oid			relid;			/* firing relation */
	Oid			ruled;			/* table the rules are defined on */
	bool		valid;
	MemoryContext cxt;
	char	   *tblname;		/* ruled table, for messages */
	Oid			owner;			/* owner of the ruled table */
	List	   *columns;		/* RuleColumn * */
	int			nparams;		/* non-dropped attributes of relid */
	int		   *paramidx;		/* their 0-based attribute indexes */
	Oid		   *paramtypes;
	SPIPlanPtr	keyplan;		/* the row's legacy key as jsonb */
	struct RuleSet *next;
} RuleSet;

static RuleSet *rule_sets = NULL;
static List *retired_sets = NIL;
static int	rules_depth = 0;	/* >0 while a rule set is in use */

/*
 * rules_relcache_callback
 *		Mark rule sets of the invalidated relation (or all) stale.  No
 *		allocation, no catalog access.
 */
static void
rules_relcache_callback(Datum arg, Oid relid)
{
	for (RuleSet *rs = rule_sets; rs; rs = rs->next)
		if (!OidIsValid(relid) || rs->relid == relid || rs->ruled == relid)
			rs->valid = false;
}

/*
 * rules_xact_callback
 *		At transaction end no rule set is in use any more (an error may
 *		have skipped the decrement of rules_depth).
 */
static void
rules_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		rules_depth = 0;
}

/*
 * softmig_rules_init
 *		Register the invalidation and transaction callbacks.  Called from
 *		softmig_observe_init (i.e. _PG_init).
 */
void
softmig_rules_init(void)
{
	CacheRegisterRelcacheCallback(rules_relcache_callback, (Datum) 0);
	RegisterXactCallback(rules_xact_callback, NULL);
}

/*
 * free_rule_set
 *		Free a rule set's plans and memory.
 */
static void
free_rule_set(RuleSet *rs)
{
	ListCell   *lc;
	ListCell   *lc2;

	foreach(lc, rs->columns)
		foreach(lc2, ((RuleColumn *) lfirst(lc))->edges)
	{
		RuleEdge   *e = lfirst(lc2);

		if (e->plan)
			SPI_freeplan(e->plan);
	}
	if (rs->keyplan)
		SPI_freeplan(rs->keyplan);
	MemoryContextDelete(rs->cxt);
	pfree(rs);
}

/*
 * retire_stale_sets
 *		Unlink stale rule sets; free them now unless one may be in use
 *		further up the stack (then later).
 */
static void
retire_stale_sets(void)
{
	RuleSet   **pp = &rule_sets;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	while (*pp)
	{
		RuleSet    *rs = *pp;

		if (!rs->valid)
		{
			*pp = rs->next;
			retired_sets = lappend(retired_sets, rs);
		}
		else
			pp = &rs->next;
	}
	MemoryContextSwitchTo(old);
	if (rules_depth == 0 && retired_sets != NIL)
	{
		ListCell   *lc;

		foreach(lc, retired_sets)
			free_rule_set(lfirst(lc));
		list_free(retired_sets);
		retired_sets = NIL;
	}
}

/*
 * row_subquery
 *		"(SELECT $1 AS a, $2 AS b, ...) AS new": the firing row, one
 *		parameter per non-dropped attribute.
 */
static char *
row_subquery(RuleSet *rs, TupleDesc desc)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "(SELECT ");
	for (int i = 0; i < rs->nparams; i++)
		appendStringInfo(&buf, "%s$%d AS %s", i ? ", " : "", i + 1,
						 quote_identifier(NameStr(TupleDescAttr(desc, rs->paramidx[i])->attname)));
	appendStringInfoString(&buf, ") AS new");
	return buf.data;
}

/*
 * prepare_requires
 *		Prepare "SELECT (requires)::boolean FROM (row) AS new" (already in
 *		the owner's context, inside SPI) and check the expression is boolean:
 *		42804 otherwise.
 */
static SPIPlanPtr
prepare_requires(const char *requires, const char *rowsql, int nparams, Oid *types,
				 bool keep)
{
	char	   *sql;
	SPIPlanPtr	plan;

	sql = psprintf("SELECT (%s\n) FROM %s", requires, rowsql);
	plan = SPI_prepare(sql, nparams, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	{
		List	   *srcs = SPI_plan_get_plan_sources(plan);
		CachedPlanSource *ps = linitial(srcs);

		if (ps->resultDesc == NULL || ps->resultDesc->natts != 1 ||
			TupleDescAttr(ps->resultDesc, 0)->atttypid != BOOLOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("requires must be a boolean expression, not %s",
							ps->resultDesc ? format_type_be(TupleDescAttr(ps->resultDesc, 0)->atttypid) : "nothing"),
					 errdetail("requires: %s", requires)));
	}
	if (keep && SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * build_rule_set
 *		Load the rules of migration m that apply to relation rel (defined on
 *		rel or the nearest ancestor that has rules) and prepare their plans
 *		as the ruled table's owner.  Reads softmig.transition_rules with the
 *		latest snapshot.  Must be called inside an SPI connection.
 */
static RuleSet *
build_rule_set(SoftmigMigration *m, Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *cands = list_make1_oid(relid);
	Datum	   *elems;
	ArrayType  *arr;
	Oid			argtypes[2] = {INT4OID, OIDARRAYOID};
	Datum		values[2];
	SPIPlanPtr	plan;
	RuleSet    *rs;
	MemoryContext old;
	ListCell   *lc;
	int			i;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	char	   *rowsql;
	uint64		nrules;
	SPITupleTable *tt;

	if (get_rel_relispartition(relid))
		cands = list_concat(cands, get_partition_ancestors(relid));
	elems = palloc(sizeof(Datum) * list_length(cands));
	i = 0;
	foreach(lc, cands)
		elems[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	arr = construct_array(elems, list_length(cands), OIDOID, sizeof(Oid), true, TYPALIGN_INT);
	values[0] = Int32GetDatum(m->id);
	values[1] = PointerGetDatum(arr);
	plan = SPI_prepare("SELECT r.id, r.tbl::pg_catalog.oid, r.col::pg_catalog.text, r.from_value, r.to_value, r.requires, "
					   "pg_catalog.array_position($2, r.tbl::pg_catalog.oid) AS depth "
					   "FROM softmig.transition_rules r "
					   "WHERE r.migration_id OPERATOR(pg_catalog.=) $1 "
					   "AND r.tbl::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($2) "
					   "ORDER BY depth, r.id", 2, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.transition_rules failed");
	nrules = SPI_processed;
	tt = SPI_tuptable;

	rs = MemoryContextAllocZero(TopMemoryContext, sizeof(RuleSet));
	rs->cxt = AllocSetContextCreate(TopMemoryContext, "softmig rule set", ALLOCSET_SMALL_SIZES);
	rs->migid = m->id;
	rs->relid = relid;
	rs->valid = true;
	old = MemoryContextSwitchTo(rs->cxt);

	rs->nparams = 0;
	rs->paramidx = palloc(sizeof(int) * desc->natts);
	rs->paramtypes = palloc(sizeof(Oid) * desc->natts);
	for (i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		rs->paramidx[rs->nparams] = i;
		rs->paramtypes[rs->nparams] = TupleDescAttr(desc, i)->atttypid;
		rs->nparams++;
	}

	for (uint64 r = 0; r < nrules; r++)
	{
		HeapTuple	t = tt->vals[r];
		bool		isnull;
		Oid			tbl = DatumGetObjectId(SPI_getbinval(t, tt->tupdesc, 2, &isnull));
		char	   *col = TextDatumGetCString(SPI_getbinval(t, tt->tupdesc, 3, &isnull));
		RuleColumn *rc = NULL;
		RuleEdge   *e;
		Datum		d;

		if (!OidIsValid(rs->ruled))
			rs->ruled = tbl;
		if (tbl != rs->ruled)
			break;				/* a farther ancestor: the nearest rules win */
		foreach(lc, rs->columns)
		{
			if (strcmp(((RuleColumn *) lfirst(lc))->col, col) == 0)
				rc = lfirst(lc);
		}
		if (rc == NULL)
		{
			int			attno = attnameAttNum(rel, col, false);
			Oid			outfn;
			bool		isvarlena;

			if (attno <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of table \"%s\" has transition rules but does not exist",
								col, RelationGetRelationName(rel)),
						 errdetail("Migration \"%s\" has rules on it.", m->name),
						 errhint("Drop its rules with softmig.drop_transition_rule.")));
			rc = palloc0(sizeof(RuleColumn));
			rc->col = col;
			rc->attidx = attno - 1;
			getTypeOutputInfo(TupleDescAttr(desc, attno - 1)->atttypid, &outfn, &isvarlena);
			fmgr_info_cxt(outfn, &rc->out, rs->cxt);
			rs->columns = lappend(rs->columns, rc);
		}
		e = palloc0(sizeof(RuleEdge));
		e->id = DatumGetInt32(SPI_getbinval(t, tt->tupdesc, 1, &isnull));
		d = SPI_getbinval(t, tt->tupdesc, 4, &isnull);
		e->from = isnull ? NULL : TextDatumGetCString(d);
		e->to = TextDatumGetCString(SPI_getbinval(t, tt->tupdesc, 5, &isnull));
		d = SPI_getbinval(t, tt->tupdesc, 6, &isnull);
		e->requires = isnull ? NULL : TextDatumGetCString(d);
		rc->edges = lappend(rc->edges, e);
	}
	MemoryContextSwitchTo(old);
	if (rs->columns == NIL)
		return rs;

	rs->tblname = MemoryContextStrdup(rs->cxt, get_rel_name(rs->ruled));
	rs->owner = softmig_rel_owner(rs->ruled);
	rowsql = row_subquery(rs, desc);

	softmig_enter_owner_context(rs->owner, &save_nest, &save_user, &save_sec);
	foreach(lc, rs->columns)
	{
		ListCell   *lc2;

		foreach(lc2, ((RuleColumn *) lfirst(lc))->edges)
		{
			RuleEdge   *e = lfirst(lc2);

			if (e->requires)
				e->plan = prepare_requires(e->requires, rowsql, rs->nparams, rs->paramtypes, true);
		}
	}
	/* the entity's key, as the legacy key columns */
	{
		List	   *exprs = NIL;
		SoftmigDest *bwd = softmig_build_dest(m, SIDE_TARGET);
		char	   *sql;

		if (rs->ruled == m->legacy)
		{
			foreach(lc, m->legacy_key)
				exprs = lappend(exprs, (char *) quote_identifier(lfirst(lc)));
		}
		else
			exprs = bwd->keyexprs;
		sql = psprintf("SELECT %s FROM %s", softmig_json_object_sql(m->legacy_key, exprs), rowsql);
		rs->keyplan = softmig_prepare_kept(sql, rs->nparams, rs->paramtypes);
	}
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	return rs;
}

/*
 * get_rule_set
 *		The valid rule set of (m, rel), building it on first use.
 */
static RuleSet *
get_rule_set(SoftmigMigration *m, Relation rel)
{
	RuleSet    *rs;

	retire_stale_sets();
	for (rs = rule_sets; rs; rs = rs->next)
		if (rs->migid == m->id && rs->relid == RelationGetRelid(rel) && rs->valid)
			return rs;
	rs = build_rule_set(m, rel);
	rs->next = rule_sets;
	rule_sets = rs;
	return rs;
}

/*
 * text_or_null
 *		Column attidx of a deformed row as text, or NULL.
 */
static char *
text_or_null(RuleColumn *rc, Datum *v, bool *n)
{
	if (n[rc->attidx])
		return NULL;
	return OutputFunctionCall(&rc->out, v[rc->attidx]);
}

/*
 * row_params
 *		Parameter values of the firing row for the cached plans.
 */
static void
row_params(RuleSet *rs, Datum *v, bool *n, Datum *pv, char *pn)
{
	for (int i = 0; i < rs->nparams; i++)
	{
		pv[i] = v[rs->paramidx[i]];
		pn[i] = n[rs->paramidx[i]] ? 'n' : ' ';
	}
}

/*
 * row_key
 *		The row's legacy key as jsonb text, computed as the table's owner.
 */
static char *
row_key(RuleSet *rs, Datum *pv, char *pn)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	char	   *r;

	softmig_enter_readonly_context(rs->owner, &save_nest, &save_user, &save_sec, &save_ro);
	if (SPI_execute_plan(rs->keyplan, pv, pn, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: computing a rule violation's key failed");
	r = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	return r ? r : "null";
}

/*
 * requires_holds
 *		Evaluate an edge's requires expression over the row, as the table's
 *		owner, read-only.  NULL counts as not true.
 */
static bool
requires_holds(RuleSet *rs, RuleEdge *e, Datum *pv, char *pn)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	bool		isnull;
	bool		result;

	softmig_enter_readonly_context(rs->owner, &save_nest, &save_user, &save_sec, &save_ro);
	if (SPI_execute_plan(e->plan, pv, pn, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: evaluating the requires expression of rule %d failed", e->id);
	result = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	return !isnull && result;
}

/*
 * literal_or_null
 *		A value quoted as an SQL literal, or NULL.
 */
static const char *
literal_or_null(const char *v)
{
	return v ? quote_literal_cstr(v) : "NULL";
}

/*
 * allowed_from
 *		"'a', 'b'" listing the values a column may move to from "from", or
 *		"none".
 */
static char *
allowed_from(RuleColumn *rc, const char *from)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, rc->edges)
	{
		RuleEdge   *e = lfirst(lc);

		if ((from == NULL) != (e->from == NULL))
			continue;
		if (from && strcmp(from, e->from) != 0)
			continue;
		appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", quote_literal_cstr(e->to));
	}
	return buf.len ? buf.data : "none";
}

/*
 * record_violation
 *		Observe mode: write one row to softmig.rule_violations as the
 *		catalog owner (the writer cannot write the catalog), with a saved
 *		plan.
 */
static void
record_violation(SoftmigMigration *m, RuleSet *rs, RuleColumn *rc, RuleEdge *e,
				 const char *from, const char *to, const char *key, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[9] = {INT4OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *writer = GetUserNameFromId(GetUserId(), false);

	values[0] = Int32GetDatum(m->id);
	if (e)
		values[1] = Int32GetDatum(e->id);
	else
		nulls[1] = 'n';
	values[2] = CStringGetTextDatum(softmig_qualified_relname(rs->ruled));
	values[3] = CStringGetTextDatum(rc->col);
	if (from)
		values[4] = CStringGetTextDatum(from);
	else
		nulls[4] = 'n';
	if (to)
		values[5] = CStringGetTextDatum(to);
	else
		nulls[5] = 'n';
	values[6] = DirectFunctionCall1(jsonb_in, CStringGetDatum(key));
	values[7] = CStringGetTextDatum(reason);
	values[8] = CStringGetTextDatum(writer);

	softmig_catalog_exec(&plan,
						 "INSERT INTO softmig.rule_violations "
						 "(migration_id, rule_id, tbl, col, from_value, to_value, key, reason, actor) "
						 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::pg_catalog.name)",
						 9, argtypes, values, nulls, SPI_OK_INSERT, "recording a rule violation");
}

/*
 * check_row
 *		Judge every ruled column of one row; refuse or record violations.
 *		Inside the trigger's SPI connection.
 */
static void
check_row(SoftmigMigration *m, RuleSet *rs, TupleDesc desc, HeapTuple newtup,
		  HeapTuple oldtup, bool observe)
{
	Datum	   *nv = palloc(sizeof(Datum) * desc->natts);
	bool	   *nn = palloc(sizeof(bool) * desc->natts);
	Datum	   *ov = NULL;
	bool	   *on = NULL;
	Datum	   *pv = palloc(sizeof(Datum) * (rs->nparams + 1));
	char	   *pn = palloc(rs->nparams + 1);
	ListCell   *lc;

	heap_deform_tuple(newtup, desc, nv, nn);
	if (oldtup)
	{
		ov = palloc(sizeof(Datum) * desc->natts);
		on = palloc(sizeof(bool) * desc->natts);
		heap_deform_tuple(oldtup, desc, ov, on);
	}
	row_params(rs, nv, nn, pv, pn);

	foreach(lc, rs->columns)
	{
		RuleColumn *rc = lfirst(lc);
		char	   *to = text_or_null(rc, nv, nn);
		char	   *from = oldtup ? text_or_null(rc, ov, on) : NULL;
		RuleEdge   *edge = NULL;
		ListCell   *lc2;
		const char *reason;
		char	   *key;

		if (to == NULL && from == NULL)
			continue;			/* no value yet: no transition */
		if (to && from && strcmp(to, from) == 0)
			continue;			/* unchanged */
		if (to != NULL)
			foreach(lc2, rc->edges)
		{
			RuleEdge   *e = lfirst(lc2);

			if (strcmp(e->to, to) == 0 &&
				((from == NULL && e->from == NULL) ||
				 (from != NULL && e->from != NULL && strcmp(from, e->from) == 0)))
				edge = e;
		}
		if (edge != NULL && (edge->requires == NULL || requires_holds(rs, edge, pv, pn)))
			continue;			/* allowed */

		reason = edge ? "requires" : "edge";
		key = row_key(rs, pv, pn);
		if (observe)
		{
			record_violation(m, rs, rc, edge, from, to, key, reason);
			continue;
		}
		if (edge)
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_RULE_VIOLATION),
					 errmsg("transition rule %d of migration \"%s\" refuses %s.%s %s -> %s for key %s",
							edge->id, m->name, rs->tblname, rc->col,
							literal_or_null(from), literal_or_null(to), key),
					 errdetail("The rule requires: %s", edge->requires),
					 errhint("The write is refused because the requires expression is not true for the new row; option transition_rules = 'observe' records violations instead.")));
		else
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_RULE_VIOLATION),
					 errmsg("transition rules of migration \"%s\" refuse %s.%s %s -> %s for key %s",
							m->name, rs->tblname, rc->col,
							literal_or_null(from), literal_or_null(to), key),
					 errdetail("No rule allows this edge. Allowed from %s: %s.",
							   literal_or_null(from), allowed_from(rc, from)),
					 errhint("softmig.add_transition_rule adds an edge; option transition_rules = 'observe' records violations instead of refusing them.")));
	}
}

PG_FUNCTION_INFO_V1(softmig_rule_trigger);
/*
 * softmig_rule_trigger
 *		softmig._rule_trigger(migration_id): AFTER INSERT OR UPDATE OF
 *		<ruled columns> FOR EACH ROW on a ruled table (and, cloned, on its
 *		partitions).  Checks the row's transitions (see the file header).
 *		Takes no locks of its own beyond what its queries need.
 */
Datum
softmig_rule_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	SoftmigMigration *m;
	RuleSet    *rs;
	HeapTuple	newtup;
	HeapTuple	oldtup = NULL;
	char	   *mode;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._rule_trigger must be an AFTER INSERT OR UPDATE row trigger")));
	if (td->tg_trigger->tgnargs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig rule trigger \"%s\" has no migration argument", td->tg_trigger->tgname)));

	/* softmig's own copies were judged where the change was made */
	if (softmig_mirroring(pg_strtoint32(td->tg_trigger->tgargs[0])))
		return PointerGetDatum(NULL);

	m = softmig_get_migration(pg_strtoint32(td->tg_trigger->tgargs[0]));
	if (m == NULL)
		return PointerGetDatum(NULL);	/* migration gone: no rules */
	mode = softmig_option_text(m, "transition_rules");

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		newtup = td->tg_newtuple;
		oldtup = td->tg_trigtuple;
	}
	else
		newtup = td->tg_trigtuple;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rs = get_rule_set(m, td->tg_relation);
	/* an error leaves rules_depth raised; transaction end resets it */
	rules_depth++;
	if (rs->columns != NIL)
		check_row(m, rs, RelationGetDescr(td->tg_relation), newtup, oldtup,
				  mode != NULL && strcmp(mode, "observe") == 0);
	rules_depth--;
	SPI_finish();
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(softmig_check_rule);
/*
 * softmig_check_rule
 *		softmig._check_rule(tbl, col, from_value, to_value, requires) ->
 *		text[]: validate a transition rule as the owner of tbl (never as the
 *		catalog owner: input functions and domain checks of the column's type
 *		and the requires expression are user code), with the pinned
 *		search_path, read-only.  The column must exist (42703); the values
 *		must be valid input for its type (its input function's error); the
 *		requires expression must be one scalar (42601), boolean (42804)
 *		expression over the row.  Returns {from, to} in the canonical text
 *		form the trigger compares (the type's output of the input).  Takes
 *		AccessShareLock on tbl.
 */
Datum
softmig_check_rule(PG_FUNCTION_ARGS)
{
	Oid			tbl;
	char	   *col;
	char	   *requires = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	Relation	rel;
	RuleSet		fake;
	TupleDesc	desc;
	AttrNumber	attno;
	Form_pg_attribute att;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2];
	Datum		out[2];
	bool		outnull[2];
	int			dims[1] = {2};
	int			lbs[1] = {1};
	char	   *sql;
	ArrayType  *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tbl and col must not be null")));
	tbl = PG_GETARG_OID(0);
	col = NameStr(*PG_GETARG_NAME(1));
	if (requires != NULL)
		softmig_check_expression(requires, "requires");

	rel = try_relation_open(tbl, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", tbl)));
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	desc = RelationGetDescr(rel);
	attno = attnameAttNum(rel, col, false);
	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"%s\" does not exist", col, RelationGetRelationName(rel))));
	att = TupleDescAttr(desc, attno - 1);

	memset(&fake, 0, sizeof(fake));
	fake.paramidx = palloc(sizeof(int) * desc->natts);
	fake.paramtypes = palloc(sizeof(Oid) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		fake.paramidx[fake.nparams] = i;
		fake.paramtypes[fake.nparams] = TupleDescAttr(desc, i)->atttypid;
		fake.nparams++;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_enter_readonly_context(rel->rd_rel->relowner, &save_nest, &save_user, &save_sec, &save_ro);

	/* canonical values: the column type's output of its input */
	sql = psprintf("SELECT ($1::pg_catalog.text)::%s::pg_catalog.text, ($2::pg_catalog.text)::%s::pg_catalog.text",
				   format_type_extended(att->atttypid, att->atttypmod,
										FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY),
				   format_type_extended(att->atttypid, att->atttypmod,
										FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
	for (int i = 0; i < 2; i++)
	{
		nulls[i] = PG_ARGISNULL(2 + i) ? 'n' : ' ';
		values[i] = PG_ARGISNULL(2 + i) ? (Datum) 0 : PG_GETARG_DATUM(2 + i);
	}
	if (SPI_execute_with_args(sql, 2, argtypes, values, nulls, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "softmig: checking the rule's values failed");
	for (int i = 0; i < 2; i++)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1);

		outnull[i] = (v == NULL);
		out[i] = v ? PointerGetDatum(cstring_to_text(v)) : (Datum) 0;
	}

	if (requires != NULL)
		(void) prepare_requires(requires, row_subquery(&fake, desc), fake.nparams, fake.paramtypes, false);
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);

	/* out[] lives in SPI's memory: build the result before SPI_finish */
	result = construct_md_array(out, outnull, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT);
	result = DatumGetArrayTypeP(SPI_datumTransfer(PointerGetDatum(result), false, -1));
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_ARRAYTYPE_P(result);
}
