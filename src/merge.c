/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  The per-field merge rule, written once.
 *
 *	  Every path that writes one side from the other decides, field by
 *	  field, whether the incoming value replaces the current one:
 *
 *	    a field takes the incoming value  <=>  the incoming side owns the
 *	    field, and no live write the incoming image did not see has
 *	    touched the field since ("fresh").
 *
 *	  The triggers apply the rule when they build their statements (the
 *	  columns an upsert may overwrite), the backfill applies it per row
 *	  through xmin visibility, and hydrate applies it per row and field
 *	  through softmig.merge(), the SQL face of the same function.
 *
 *	  Field ownership: in mirrored every mapped field belongs to legacy
 *	  unless softmig.set_field_authority handed it to the target; unmapped
 *	  target columns (new_only, target-only) belong to the target; from
 *	  new_write on every field belongs to the target.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "softmig.h"

/*
 * softmig_field_takes_incoming
 *		The merge rule (see the file header).
 */
bool
softmig_field_takes_incoming(SoftmigSide owner, SoftmigSide incoming, bool fresh)
{
	return owner == incoming && !fresh;
}

/*
 * side_from_datum
 *		softmig.side enum datum -> SoftmigSide ("legacy" or "new").
 */
static SoftmigSide
side_from_datum(Datum d)
{
	char	   *label = DatumGetCString(DirectFunctionCall1(enum_out, d));

	return strcmp(label, "legacy") == 0 ? SIDE_LEGACY : SIDE_TARGET;
}

/*
 * side_from_jsonb
 *		Owner of field "key" in an authority object, or dflt.  Raises 22023
 *		for anything but "legacy" / "new".
 */
static SoftmigSide
side_from_jsonb(Jsonb *authority, const char *key, int keylen, SoftmigSide dflt)
{
	JsonbValue	k;
	JsonbValue *v;

	if (authority == NULL)
		return dflt;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = keylen;
	v = findJsonbValueFromContainer(&authority->root, JB_FOBJECT, &k);
	if (v == NULL)
		return dflt;
	if (v->type == jbvString && v->val.string.len == 6 && strncmp(v->val.string.val, "legacy", 6) == 0)
		return SIDE_LEGACY;
	if (v->type == jbvString && v->val.string.len == 3 && strncmp(v->val.string.val, "new", 3) == 0)
		return SIDE_TARGET;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("authority of field \"%.*s\" must be \"legacy\" or \"new\"", keylen, key)));
	pg_unreachable();
}

PG_FUNCTION_INFO_V1(softmig_merge);
/*
 * softmig_merge
 *		softmig.merge(current, incoming, incoming_side, authority,
 *		default_owner, fresh) -> (merged jsonb, taken text[]).
 *
 *		current, incoming: jsonb objects (field -> value); current NULL means
 *		the entity does not exist yet (every field the incoming side owns is
 *		taken).  authority: {"field": "legacy"|"new"}; fields not listed
 *		belong to default_owner.  fresh: fields a live write changed after
 *		the incoming image was taken.  Pure function; no catalog access.
 */
Datum
softmig_merge(PG_FUNCTION_ARGS)
{
	Jsonb	   *current = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	Jsonb	   *incoming;
	SoftmigSide inside;
	Jsonb	   *authority = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	SoftmigSide dflt;
	ArrayType  *fresh = PG_ARGISNULL(5) ? NULL : PG_GETARG_ARRAYTYPE_P(5);
	Datum	   *fresh_elems = NULL;
	bool	   *fresh_nulls = NULL;
	int			nfresh = 0;
	SoftmigJsonbBuild state = {0};
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue *res;
	List	   *taken = NIL;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Datum	   *elems;
	ListCell   *lc;
	int			i;

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("incoming, incoming_side and default_owner must not be null")));
	incoming = PG_GETARG_JSONB_P(1);
	inside = side_from_datum(PG_GETARG_DATUM(2));
	dflt = side_from_datum(PG_GETARG_DATUM(4));
	if (!JB_ROOT_IS_OBJECT(incoming) || (current && !JB_ROOT_IS_OBJECT(current)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("current and incoming must be jsonb objects")));
	if (authority && !JB_ROOT_IS_OBJECT(authority))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("authority must be a jsonb object {\"field\": \"legacy\"|\"new\"}")));
	if (fresh)
		deconstruct_array(fresh, TEXTOID, -1, false, TYPALIGN_INT, &fresh_elems, &fresh_nulls, &nfresh);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "softmig.merge must return a record");

	/* start from the current image (or nothing) */
	softmig_jsonb_push(&state, WJB_BEGIN_OBJECT, NULL);
	if (current)
	{
		it = JsonbIteratorInit(&current->root);
		while ((tok = JsonbIteratorNext(&it, &k, false)) != WJB_DONE)
		{
			if (tok != WJB_KEY)
				continue;
			tok = JsonbIteratorNext(&it, &v, true);
			softmig_jsonb_push(&state, WJB_KEY, &k);
			softmig_jsonb_push(&state, WJB_VALUE, &v);
		}
	}

	/* then every incoming field the rule lets through (later keys win) */
	it = JsonbIteratorInit(&incoming->root);
	while ((tok = JsonbIteratorNext(&it, &k, false)) != WJB_DONE)
	{
		bool		is_fresh = false;
		SoftmigSide owner;

		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		owner = side_from_jsonb(authority, k.val.string.val, k.val.string.len, dflt);
		for (i = 0; i < nfresh; i++)
		{
			char	   *f;

			if (fresh_nulls[i])
				continue;
			f = TextDatumGetCString(fresh_elems[i]);
			if ((int) strlen(f) == k.val.string.len && strncmp(f, k.val.string.val, k.val.string.len) == 0)
				is_fresh = true;
		}
		if (current == NULL)
			is_fresh = false;	/* nothing live to protect */
		if (!softmig_field_takes_incoming(owner, inside, is_fresh))
			continue;
		softmig_jsonb_push(&state, WJB_KEY, &k);
		softmig_jsonb_push(&state, WJB_VALUE, &v);
		taken = lappend(taken, pnstrdup(k.val.string.val, k.val.string.len));
	}
	res = softmig_jsonb_end(&state, WJB_END_OBJECT);

	values[0] = JsonbPGetDatum(JsonbValueToJsonb(res));
	elems = palloc(sizeof(Datum) * (list_length(taken) + 1));
	i = 0;
	foreach(lc, taken)
		elems[i++] = CStringGetTextDatum(lfirst(lc));
	values[1] = PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
