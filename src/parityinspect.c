/*-------------------------------------------------------------------------
 *
 * parityinspect.c
 *	  softmig.inspect: both sides of one entity, with the comparison
 *	  parity makes for it.
 *	  parity.c explains the whole comparison; parityint.h holds the types
 *	  the parity files share.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/md5.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "parser/parse_relation.h"
#include "tcop/dest.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/sortsupport.h"
#include "utils/typcache.h"

#include "softmig.h"
#include "observe.h"
#include "paritycache.h"
#include "readpath.h"
#include "parityint.h"

/* ---------------------------------------------------------------------
 * softmig.inspect: both sides of one entity
 * --------------------------------------------------------------------- */

typedef struct InspectState
{
	StringInfoData diffs;
	int			n;
	int			kinds[3];
} InspectState;

/*
 * emit_inspect
 *		ParityEmit appending one difference as a JSON object.
 */
static void
emit_inspect(ParityCtx *c, ParityKind kind, KeyRef *kr, int field,
			 Datum lval, bool lnull, Datum tval, bool tnull)
{
	InspectState *st = (InspectState *) c->emit_arg;
	StringInfo	b = &st->diffs;

	st->kinds[kind]++;
	if (st->n++ > 0)
		appendStringInfoString(b, ", ");
	appendStringInfo(b, "{\"kind\": \"%s\"", parity_kind_names[kind]);
	if (field >= 0)
	{
		appendStringInfoString(b, ", \"field\": ");
		escape_json(b, c->cols[field].name);
		appendStringInfoString(b, ", \"legacy_value\": ");
		if (lnull)
			appendStringInfoString(b, "null");
		else
			escape_json(b, parity_value_text(&c->cols[field], lval));
		appendStringInfoString(b, ", \"target_value\": ");
		if (tnull)
			appendStringInfoString(b, "null");
		else
			escape_json(b, parity_value_text(&c->cols[field], tval));
	}
	appendStringInfoChar(b, '}');
}

/*
 * get_json_text
 *		Column `col` of the current SPI result row as JSON text ("null" for
 *		SQL NULL).
 */
static char *
get_json_text(int col)
{
	char	   *s = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);

	return s ? s : "null";
}

/*
 * inspect_sides
 *		The table side of softmig.inspect, as jsonb: the legacy row, what the
 *		forward mapping makes of it, the target row, both rows' xmin, and
 *		the parity differences of this one entity (quarantine ignored: this
 *		is the truth support needs).  Like parity: for a caller who may read
 *		both tables, the owners' SQL runs as the owners, read-only.  22023
 *		for a key that does not name exactly the legacy key columns.
 */
static Datum
inspect_sides(int32 id, Jsonb *key)
{
	ParityCtx  *c;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	StringInfoData buf;
	StringInfoData out;
	SPIPlanPtr	plan;
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	Datum	   *lkey;
	bool		lnull = false;
	Datum	   *tkey;
	Oid		   *lktypes;
	char	   *lk_nulls;
	InspectState st;
	SPIPlanPtr	plans[2][3][2];
	ListCell   *lc;
	int			i;
	int			nkeyfields = 0;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	ErrorContextCallback errcb;
	MemoryContext cxt;
	bool		have_target = false;

	if (!JB_ROOT_IS_OBJECT(key) || JB_ROOT_IS_SCALAR(key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key must be a jsonb object of the legacy key columns")));

	cxt = AllocSetContextCreate(CurrentMemoryContext, "softmig inspect",
								ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	c = parity_build(id, 1, cxt);
	c->apply_quarantine = false;

	/* the key must name exactly the legacy key columns */
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *k;

		if (tok != WJB_KEY)
			continue;
		k = pnstrdup(v.val.string.val, v.val.string.len);
		if (!softmig_str_member(c->lkeycols, k))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"%s\" is not a key column of migration \"%s\"", k, c->name),
					 errhint("Keys are jsonb objects of the legacy key columns.")));
		nkeyfields++;
	}
	if (nkeyfields != list_length(c->lkeycols))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key must name every legacy key column of migration \"%s\"", c->name)));

	parity_enter(c, &errcb, "softmig.inspect", &save_nest, &save_user, &save_sec, &save_ro);

	/* typed legacy key and target key from the jsonb */
	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	foreach(lc, c->lkeycols)
		appendStringInfo(&buf, "%ssoftmig_l.%s", foreach_current_index(lc) ? ", " : "",
						 quote_identifier(lfirst(lc)));
	for (i = 0; i < c->nkeys; i++)
		appendStringInfo(&buf, ", %s", c->cols[i].lexpr);
	appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) AS softmig_l", c->lqual);
	values[0] = JsonbPGetDatum(key);
	if (SPI_execute_with_args(buf.data, 1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "softmig: reading the key failed");
	{
		int			nl = list_length(c->lkeycols);

		lkey = palloc(sizeof(Datum) * nl);
		lktypes = palloc(sizeof(Oid) * nl);
		lk_nulls = palloc(nl + 1);
		tkey = palloc(sizeof(Datum) * c->nkeys);
		for (i = 0; i < nl; i++)
		{
			bool		isnull;

			lkey[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);
			lktypes[i] = SPI_gettypeid(SPI_tuptable->tupdesc, i + 1);
			lk_nulls[i] = ' ';
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("key column \"%s\" must not be null", (char *) list_nth(c->lkeycols, i))));
		}
		lk_nulls[nl] = '\0';
		for (i = 0; i < c->nkeys; i++)
		{
			bool		isnull;

			tkey[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, nl + i + 1, &isnull);
			if (isnull)
				lnull = true;
		}
	}

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');

	/* legacy row and its mapping */
	resetStringInfo(&buf);
	appendStringInfo(&buf, "SELECT pg_catalog.to_jsonb(softmig_l.*), %s, softmig_l.xmin::pg_catalog.text "
					 "FROM %s AS softmig_l WHERE ", c->lmapped, c->lqual);
	i = 0;
	foreach(lc, c->lkeycols)
	{
		appendStringInfo(&buf, "%ssoftmig_l.%s %s $%d", i ? " AND " : "",
						 quote_identifier(lfirst(lc)), (char *) list_nth(c->lkeyops, i), i + 1);
		i++;
	}
	plan = SPI_prepare(buf.data, list_length(c->lkeycols), lktypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_execute_plan(plan, lkey, lk_nulls, true, 2) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading the legacy row failed");
	if (SPI_processed >= 1)
		appendStringInfo(&out, "\"legacy\": %s, \"legacy_mapped\": %s, \"legacy_xmin\": \"%s\"",
						 get_json_text(1), get_json_text(2), get_json_text(3));
	else
		appendStringInfoString(&out, "\"legacy\": null, \"legacy_mapped\": null, \"legacy_xmin\": null");

	/* target row */
	if (!lnull)
	{
		Oid		   *ttypes = palloc(sizeof(Oid) * c->nkeys);
		char	   *tnulls = palloc(c->nkeys + 1);

		resetStringInfo(&buf);
		appendStringInfo(&buf, "SELECT pg_catalog.to_jsonb(softmig_t.*), softmig_t.xmin::pg_catalog.text "
						 "FROM %s AS softmig_t WHERE ", c->tqual);
		for (i = 0; i < c->nkeys; i++)
		{
			appendStringInfo(&buf, "%ssoftmig_t.%s %s $%d", i ? " AND " : "",
							 quote_identifier(c->cols[i].name), (char *) list_nth(c->tkeyops, i), i + 1);
			ttypes[i] = c->cols[i].typid;
			tnulls[i] = ' ';
		}
		tnulls[c->nkeys] = '\0';
		plan = SPI_prepare(buf.data, c->nkeys, ttypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		parity_as_role(c, c->towner);
		if (SPI_execute_plan(plan, tkey, tnulls, true, 2) != SPI_OK_SELECT)
			elog(ERROR, "softmig: reading the target row failed");
		have_target = SPI_processed >= 1;
	}
	if (have_target)
		appendStringInfo(&out, ", \"target\": %s, \"target_xmin\": \"%s\"",
						 get_json_text(1), get_json_text(2));
	else
		appendStringInfoString(&out, ", \"target\": null, \"target_xmin\": null");

	/* differences of this entity, with the same rules as parity */
	memset(&st, 0, sizeof(st));
	initStringInfo(&st.diffs);
	c->emit = emit_inspect;
	c->emit_arg = &st;
	memset(plans, 0, sizeof(plans));
	if (!lnull)
		parity_compare_range(c, plans, LO_GE, tkey, HI_LE, tkey);
	appendStringInfo(&out, ", \"differences\": [%s], \"parity\": \"%s\"}",
					 st.diffs.data,
					 st.kinds[PK_MISSING_IN_TARGET] ? "missing_in_target" :
					 st.kinds[PK_MISSING_IN_LEGACY] ? "missing_in_legacy" :
					 st.kinds[PK_MISMATCH] ? "mismatch" : "equal");

	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	error_context_stack = errcb.previous;
	{
		/* out lives in SPI's memory: build the result before SPI_finish */
		Datum		result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in,
																   CStringGetDatum(out.data)),
											   false, -1);

		SPI_finish();
		MemoryContextDelete(cxt);
		return result;
	}
}

PG_FUNCTION_INFO_V1(softmig_inspect);
/*
 * softmig_inspect
 *		softmig.inspect(name, key) -> jsonb: both sides of one entity
 *		(inspect_sides, with reader discovery suppressed: these reads are
 *		softmig's), completed by softmig._inspect_assemble with what the
 *		catalog knows about it (flags, operation keys, last writes, history,
 *		rule violations), which runs with the catalog owner's rights and
 *		evaluates no user SQL.  42704 for an unknown migration, 22004 for
 *		NULL arguments, 42501 for a caller who may not read both tables.
 */
Datum
softmig_inspect(PG_FUNCTION_ARGS)
{
	int32		id;
	Jsonb	   *key;
	volatile Datum sides = (Datum) 0;
	Datum		result;
	Oid			argtypes[3] = {INT4OID, JSONBOID, JSONBOID};
	Datum		values[3];
	Oid			save_user;
	int			save_sec;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key must not be null")));
	id = softmig_migration_by_name(PG_GETARG_TEXT_PP(0), NULL, NULL);
	key = PG_GETARG_JSONB_P(1);

	softmig_discovery_suppress++;
	PG_TRY();
	{
		sides = inspect_sides(id, key);
	}
	PG_FINALLY();
	{
		softmig_discovery_suppress--;
	}
	PG_END_TRY();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(id);
	values[1] = JsonbPGetDatum(key);
	values[2] = sides;
	softmig_become_catalog_owner(&save_user, &save_sec);
	if (SPI_execute_with_args("SELECT softmig._inspect_assemble($1, $2, $3)", 3, argtypes,
							  values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: assembling inspect failed");
	softmig_set_user(save_user, save_sec);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}
