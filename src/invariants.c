/*-------------------------------------------------------------------------
 *
 * invariants.c
 *	  The behavioural layer, part two: invariants.
 *
 *	  softmig.add_invariant stores a query that returns the rows violating
 *	  a business rule; it must be one read-only SELECT (no data-modifying
 *	  CTE, no FOR UPDATE/SHARE, checked on the analyzed query tree).  softmig.invariant_violations runs them as the owner of
 *	  the migration's legacy table, for a caller who may read both tables,
 *	  in the read-only context, and counts the rows, keeping a sample.
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

/*
 * not_readonly_walker
 *		True if the query tree contains anything but plain reading: a
 *		non-SELECT query, a utility statement, a data-modifying CTE or a
 *		row lock (FOR UPDATE/SHARE), at any level.
 */
static bool
not_readonly_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		Query	   *q = (Query *) node;

		if (q->commandType != CMD_SELECT || q->utilityStmt != NULL ||
			q->hasModifyingCTE || q->rowMarks != NIL)
			return true;
		return query_tree_walker(q, not_readonly_walker, context, 0);
	}
	return expression_tree_walker(node, not_readonly_walker, context);
}

/*
 * wrap_invariant
 *		The statement that runs an invariant: its rows as jsonb.
 */
static char *
wrap_invariant(const char *query)
{
	return psprintf("SELECT pg_catalog.to_jsonb(softmig_q.*) FROM (%s\n) AS softmig_q", query);
}

PG_FUNCTION_INFO_V1(softmig_validate_invariant);
/*
 * softmig_validate_invariant
 *		softmig._validate_invariant(legacy, query) -> text: check an
 *		invariant query as the role that will run it (the owner of the
 *		migration's legacy table, never the catalog owner) with the pinned
 *		search_path: it must parse and analyze (errors as raised, e.g. 42601,
 *		42P01), be exactly one statement (42601) and a read-only SELECT
 *		(22023).  Returns it without trailing semicolons and blanks.
 */
Datum
softmig_validate_invariant(PG_FUNCTION_ARGS)
{
	Oid			runner = softmig_rel_owner(PG_GETARG_OID(0));
	char	   *q = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int			len = strlen(q);
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	SPIPlanPtr	plan;
	List	   *srcs;
	CachedPlanSource *ps;
	ListCell   *lc;

	while (len > 0 && (q[len - 1] == ';' || isspace((unsigned char) q[len - 1])))
		q[--len] = '\0';
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invariant query must not be empty")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_enter_readonly_context(runner, &save_nest, &save_user, &save_sec, &save_ro);
	plan = SPI_prepare(q, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	srcs = SPI_plan_get_plan_sources(plan);
	if (list_length(srcs) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invariant query must be exactly one statement"),
				 errhint("Give one SELECT that returns the violating rows.")));
	ps = linitial(srcs);
	foreach(lc, ps->query_list)
	{
		if (not_readonly_walker((Node *) lfirst(lc), NULL))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invariant query must be a read-only SELECT"),
					 errdetail("Data-modifying statements and CTEs, SELECT INTO, FOR UPDATE/SHARE and utility commands are not allowed."),
					 errhint("Give one SELECT that returns the violating rows.")));
	}
	if (ps->query_list == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invariant query must be a read-only SELECT")));
	/* and it must run wrapped, as check runs it */
	if (SPI_prepare(wrap_invariant(q), 0, NULL) == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(q));
}

/*
 * invariant_error_context
 *		errcontext naming the invariant being run.
 */
static void
invariant_error_context(void *arg)
{
	errcontext("running invariant \"%s\" (softmig)", (char *) arg);
}

/*
 * invariant_violations
 *		softmig.invariant_violations(name, invariant, sample): run the
 *		migration's invariants (or the named one; 42704 if unknown) as the
 *		owner of its legacy table (the owner's SQL never runs with another
 *		role's rights), for a caller who may read both tables (42501
 *		otherwise), read-only, under the caller's snapshot, and return per
 *		invariant its severity, the number of rows it returned and up to
 *		`sample` of them as jsonb.  Memory is bounded by a fetch batch and
 *		the sample.
 */
static Datum
invariant_violations(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Tuplestorestate *ts;
	TupleDesc	desc;
	MemoryContext old;
	Oid			actor = OidIsValid(softmig_gate_actor) ? softmig_gate_actor : GetUserId();
	Oid			runner;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			sample;
	uint64		ninv;
	SPITupleTable *invs;
	char	   *migname;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("softmig.invariant_violations must be called in a context that accepts a set")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name must not be null")));
	migname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sample = PG_ARGISNULL(2) ? 10 : PG_GETARG_INT32(2);
	if (sample < 0)
		sample = 0;

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = CreateTupleDescCopy(desc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = PG_GETARG_DATUM(0);
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	else
		values[1] = PG_GETARG_DATUM(1);
	if (SPI_execute_with_args("SELECT i.name, i.query, i.severity, m.id, m.legacy, m.target "
							  "FROM softmig.migrations m "
							  "LEFT JOIN softmig.invariants i ON i.migration_id OPERATOR(pg_catalog.=) m.id "
							  "AND ($2 IS NULL OR i.name OPERATOR(pg_catalog.=) $2) "
							  "WHERE m.name OPERATOR(pg_catalog.=) $1 ORDER BY i.name",
							  2, argtypes, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.invariants failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("migration \"%s\" does not exist", migname),
				 errhint("softmig.migrations lists the migrations of this database.")));
	invs = SPI_tuptable;
	ninv = SPI_processed;
	{
		bool		isnull;
		Oid			legacy = DatumGetObjectId(SPI_getbinval(invs->vals[0], invs->tupdesc, 5, &isnull));
		Oid			target = DatumGetObjectId(SPI_getbinval(invs->vals[0], invs->tupdesc, 6, &isnull));

		/*
		 * the queries run as the legacy owner on behalf of a caller who can
		 * read both tables
		 */
		softmig_check_read_access(legacy, target, actor, "softmig.invariant_violations");
		runner = softmig_rel_owner(legacy);
	}
	if (ninv == 1 && SPI_getvalue(invs->vals[0], invs->tupdesc, 1) == NULL)
	{
		if (!PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("invariant \"%s\" of migration \"%s\" does not exist",
							text_to_cstring(PG_GETARG_TEXT_PP(1)), migname)));
		ninv = 0;
	}

	for (uint64 r = 0; r < ninv; r++)
	{
		char	   *iname = SPI_getvalue(invs->vals[r], invs->tupdesc, 1);
		char	   *query = SPI_getvalue(invs->vals[r], invs->tupdesc, 2);
		char	   *severity = SPI_getvalue(invs->vals[r], invs->tupdesc, 3);
		int			save_nest;
		Oid			save_user;
		int			save_sec;
		bool		save_ro;
		SPIPlanPtr	plan;
		Portal		portal;
		int64		count = 0;
		StringInfoData smp;
		int			nsmp = 0;
		Datum		outv[4];
		bool		outn[4] = {false, false, false, false};
		ErrorContextCallback errcb;

		errcb.callback = invariant_error_context;
		errcb.arg = iname;
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;

		initStringInfo(&smp);
		softmig_enter_readonly_context(runner, &save_nest, &save_user, &save_sec, &save_ro);
		plan = SPI_prepare(wrap_invariant(query), 0, NULL);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
		for (;;)
		{
			SPI_cursor_fetch(portal, true, 1000);
			if (SPI_processed == 0)
				break;
			for (uint64 k = 0; k < SPI_processed && nsmp < sample; k++)
			{
				appendStringInfo(&smp, "%s%s", nsmp ? ", " : "",
								 SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1));
				nsmp++;
			}
			count += SPI_processed;
			SPI_freetuptable(SPI_tuptable);
		}
		SPI_cursor_close(portal);
		SPI_freeplan(plan);
		softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
		error_context_stack = errcb.previous;

		old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		outv[0] = CStringGetTextDatum(iname);
		outv[1] = CStringGetTextDatum(severity);
		outv[2] = Int64GetDatum(count);
		outv[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(psprintf("[%s]", smp.data)));
		tuplestore_putvalues(ts, desc, outv, outn);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();

	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = desc;
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(softmig_invariant_violations);
/*
 * softmig_invariant_violations
 *		softmig.invariant_violations(name, invariant, sample):
 *		invariant_violations with reader discovery suppressed (a check's
 *		reads are not an application reader's).
 */
Datum
softmig_invariant_violations(PG_FUNCTION_ARGS)
{
	volatile Datum result = (Datum) 0;

	softmig_discovery_suppress++;
	PG_TRY();
	{
		result = invariant_violations(fcinfo);
	}
	PG_FINALLY();
	{
		softmig_discovery_suppress--;
	}
	PG_END_TRY();
	return result;
}
