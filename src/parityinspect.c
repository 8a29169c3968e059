/*-------------------------------------------------------------------------
 *
 * parityinspect.c
 *	  softmig.inspect: both sides of one entity, with the comparison
 *	  parity makes for it; softmig.inspect_group: the same for every row
 *	  of one entity of a group, found through the foreign keys between
 *	  the members' tables.
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
					 "FROM %s AS softmig_l%s WHERE ", c->lmapped, c->lqual, c->lsplit);
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
						 "FROM %s AS softmig_t%s WHERE ", c->tqual, c->tsplit);
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

/*
 * inspect_entity
 *		softmig.inspect of one entity of migration "id": both sides
 *		(inspect_sides, with reader discovery suppressed: these reads are
 *		softmig's), completed by softmig._inspect_assemble with what the
 *		catalog knows about it (flags, operation keys, last writes, history,
 *		rule violations), which runs with the catalog owner's rights and
 *		evaluates no user SQL.  Opens and closes its own SPI connections;
 *		the result is allocated in the caller's memory context.
 */
static Datum
inspect_entity(int32 id, Jsonb *key)
{
	volatile Datum sides = (Datum) 0;
	Datum		result;
	Oid			argtypes[3] = {INT4OID, JSONBOID, JSONBOID};
	Datum		values[3];
	Oid			save_user;
	int			save_sec;
	bool		isnull;

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
	return result;
}

PG_FUNCTION_INFO_V1(softmig_inspect);
/*
 * softmig_inspect
 *		softmig.inspect(name, key) -> jsonb: both sides of one entity
 *		(inspect_entity).  42704 for an unknown migration, 22004 for NULL
 *		arguments, 42501 for a caller who may not read both tables.
 */
Datum
softmig_inspect(PG_FUNCTION_ARGS)
{
	int32		id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key must not be null")));
	id = softmig_migration_by_name(PG_GETARG_TEXT_PP(0), NULL, NULL);
	if (softmig_require_migration(id)->one_to_many)	/* sets per entity */
		PG_RETURN_DATUM(softmig_otm_inspect(softmig_require_migration(id), PG_GETARG_JSONB_P(1)));
	PG_RETURN_DATUM(inspect_entity(id, PG_GETARG_JSONB_P(1)));
}

/* ---------------------------------------------------------------------
 * softmig.inspect_group: one entity of a group, every member, both sides
 * --------------------------------------------------------------------- */

/* A foreign key from a child member's table to its parent member's, on one side. */
typedef struct GroupFk
{
	int			child;			/* member indexes, in group order */
	int			parent;
	int			side;			/* PSIDE_LEGACY or PSIDE_TARGET */
	char	   *name;
	char	   *refsel;			/* "r.<referenced column>, ...": the parent row's values */
	char	   *refobj;			/* jsonb_build_object arguments: those columns of $1 */
	char	   *cond;			/* "$1 OPERATOR(<pk = fk>) softmig_l.<column> AND ..." */
} GroupFk;

typedef struct GroupMember
{
	int32		id;
	char	   *name;
	Oid			legacy;
	Oid			target;
	bool		tied;			/* the root, or reached from it through keys */
	int			parent;			/* member it was reached from; -1: none */
	List	   *fks[2];			/* GroupFk * to the parent, per side */
	List	   *rows;			/* Jsonb *: inspect of each of its entity's rows */
	int			unkeyed;		/* target rows found whose legacy key is NULL */
	ParityCtx  *c;				/* built for the look-ups */
} GroupMember;

/*
 * group_error_context
 *		errcontext naming the group being inspected.
 */
static void
group_error_context(void *arg)
{
	errcontext("inspecting group \"%s\" (softmig.inspect_group)", (char *) arg);
}

/*
 * jsonb_cmp_qsort
 *		qsort comparator on Jsonb pointers, jsonb's own order.
 */
static int
jsonb_cmp_qsort(const void *a, const void *b)
{
	Jsonb	   *ja = *(Jsonb *const *) a;
	Jsonb	   *jb = *(Jsonb *const *) b;

	return compareJsonbContainers(&ja->root, &jb->root);
}

/*
 * jsonb_field_present
 *		The value of object field "field" of jb, or NULL when the field is
 *		absent or JSON null.
 */
static Jsonb *
jsonb_field_present(Jsonb *jb, const char *field)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&jb->root, field, strlen(field), NULL);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	return JsonbValueToJsonb(v);
}

/*
 * jsonb_has_null_value
 *		Whether an object has a JSON null among its values (a legacy key the
 *		backward key mapping could not compute).
 */
static bool
jsonb_has_null_value(Jsonb *jb)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		found = false;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_VALUE && v.type == jbvNull)
			found = true;
	return found;
}

/*
 * group_load
 *		The members of group "name" in group order and the foreign keys
 *		between their tables on the same side (and, as such keys, the table
 *		an attribute member of a merge or a split shares with its owner),
 *		into cxt.  Catalog reads only
 *		(softmig's group catalog is readable by all), as the caller, in an
 *		SPI connection of its own.  42704 for an unknown group.
 */
static GroupMember *
group_load(text *name, int *nmembers, List **fks, MemoryContext cxt)
{
	Oid			argtypes[2] = {OIDARRAYOID, OIDARRAYOID};
	Datum		values[2];
	GroupMember *ms;
	Datum	   *loids;
	Datum	   *toids;
	int			n;
	MemoryContext old;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (softmig_spi_select_arg("SELECT m.id, m.name, m.legacy::pg_catalog.oid, m.target::pg_catalog.oid "
							   "FROM softmig.groups g "
							   "JOIN softmig.group_members gm ON gm.group_id OPERATOR(pg_catalog.=) g.id "
							   "JOIN softmig.migrations m ON m.id OPERATOR(pg_catalog.=) gm.migration_id "
							   "WHERE g.name OPERATOR(pg_catalog.=) $1 ORDER BY gm.ordinal",
							   TEXTOID, PointerGetDatum(name), 0, "reading the group catalog") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("group \"%s\" does not exist", text_to_cstring(name)),
				 errhint("softmig.groups lists the groups of this database; softmig.inspect inspects one migration.")));
	n = SPI_processed;
	old = MemoryContextSwitchTo(cxt);
	ms = palloc0(sizeof(GroupMember) * n);
	loids = palloc(sizeof(Datum) * n);
	toids = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		ms[i].id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		ms[i].name = SPI_getvalue(tup, desc, 2);
		ms[i].legacy = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		ms[i].target = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		ms[i].parent = -1;
		loids[i] = ObjectIdGetDatum(ms[i].legacy);
		toids[i] = ObjectIdGetDatum(ms[i].target);
	}
	MemoryContextSwitchTo(old);

	/*
	 * Foreign keys from one member's table to another member's on the same
	 * side (a partitioned table's key once, on the partitioned tables), with
	 * what the look-ups need: the referenced columns of the parent row and
	 * the condition on the child's columns, with the key's own "PK = FK"
	 * equality operators.
	 */
	values[0] = PointerGetDatum(construct_array(loids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(toids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	if (SPI_execute_with_args(
							  "WITH mem AS (SELECT u.l, u.t, u.i FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS u(l, t, i)),"
							  " rel AS (SELECT mem.i, mem.l AS rel, 0 AS side, 'softmig_l' AS alias FROM mem"
							  "         UNION ALL SELECT mem.i, mem.t, 1, 'softmig_t' FROM mem) "
							  "SELECT (ch.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4, (pa.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4,"
							  " ch.side, c.conname::pg_catalog.text,"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('r.%I', a.attname), ', ' ORDER BY k.n)"
							  "    FROM ROWS FROM (pg_catalog.unnest(c.conkey), pg_catalog.unnest(c.confkey)) WITH ORDINALITY AS k(ck, pk, n)"
							  "    JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.confrelid"
							  "     AND a.attnum OPERATOR(pg_catalog.=) k.pk),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('%L, $1 OPERATOR(pg_catalog.->) %L', a.attname, a.attname),"
							  "                               ', ' ORDER BY k.n)"
							  "    FROM ROWS FROM (pg_catalog.unnest(c.confkey)) WITH ORDINALITY AS k(pk, n)"
							  "    JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.confrelid"
							  "     AND a.attnum OPERATOR(pg_catalog.=) k.pk),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('$%s OPERATOR(%I.%s) %s.%I', k.n, ns.nspname,"
							  "                                                 o.oprname, ch.alias, a.attname), ' AND ' ORDER BY k.n)"
							  "    FROM ROWS FROM (pg_catalog.unnest(c.conkey), pg_catalog.unnest(c.conpfeqop)) WITH ORDINALITY AS k(ck, op, n)"
							  "    JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.conrelid"
							  "     AND a.attnum OPERATOR(pg_catalog.=) k.ck"
							  "    JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) k.op"
							  "    JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) o.oprnamespace) "
							  "FROM pg_catalog.pg_constraint c "
							  "JOIN rel ch ON ch.rel OPERATOR(pg_catalog.=) c.conrelid "
							  "JOIN rel pa ON pa.rel OPERATOR(pg_catalog.=) c.confrelid AND pa.side OPERATOR(pg_catalog.=) ch.side"
							  " AND pa.i OPERATOR(pg_catalog.<>) ch.i "
							  "WHERE c.contype OPERATOR(pg_catalog.=) 'f' AND c.conparentid OPERATOR(pg_catalog.=) 0 "
	/*
	 * an attribute member of a merge is tied to its owner by the target
	 * table they share: its rows of the entity are the owner's target row,
	 * found by the target key
	 */
							  "UNION ALL "
							  "SELECT (ch.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4, (pa.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4,"
							  " 1, pg_catalog.format('(target table shared with %s)', o.name),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('r.%I', x.k), ', ' ORDER BY x.n)"
							  "    FROM pg_catalog.unnest(o.target_key) WITH ORDINALITY AS x(k, n)),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('%L, $1 OPERATOR(pg_catalog.->) %L', x.k, x.k), ', ' ORDER BY x.n)"
							  "    FROM pg_catalog.unnest(o.target_key) WITH ORDINALITY AS x(k, n)),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('$%s OPERATOR(pg_catalog.=) softmig_t.%I', x.n, x.k), ' AND ' ORDER BY x.n)"
							  "    FROM pg_catalog.unnest(o.target_key) WITH ORDINALITY AS x(k, n)) "
							  "FROM mem ch JOIN mem pa ON pa.t OPERATOR(pg_catalog.=) ch.t AND pa.i OPERATOR(pg_catalog.<>) ch.i "
							  "JOIN softmig.migrations a ON a.legacy OPERATOR(pg_catalog.=) ch.l AND a.target OPERATOR(pg_catalog.=) ch.t "
							  "JOIN softmig.migrations o ON o.legacy OPERATOR(pg_catalog.=) pa.l AND o.target OPERATOR(pg_catalog.=) pa.t "
							  " AND o.name OPERATOR(pg_catalog.=) (a.options OPERATOR(pg_catalog.->>) 'attribute_of') "
	/*
	 * an attribute member of a split likewise by the legacy table they
	 * share (whether or not a foreign key ties their target tables): its
	 * rows of the entity are the owner's legacy row, found by the legacy key
	 */
							  "UNION ALL "
							  "SELECT (ch.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4, (pa.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4,"
							  " 0, pg_catalog.format('(legacy table shared with %s)', o.name),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('r.%I', x.k), ', ' ORDER BY x.n)"
							  "    FROM pg_catalog.unnest(o.legacy_key) WITH ORDINALITY AS x(k, n)),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('%L, $1 OPERATOR(pg_catalog.->) %L', x.k, x.k), ', ' ORDER BY x.n)"
							  "    FROM pg_catalog.unnest(o.legacy_key) WITH ORDINALITY AS x(k, n)),"
							  " (SELECT pg_catalog.string_agg(pg_catalog.format('$%s OPERATOR(pg_catalog.=) softmig_l.%I', x.n, x.k), ' AND ' ORDER BY x.n)"
							  "    FROM pg_catalog.unnest(o.legacy_key) WITH ORDINALITY AS x(k, n)) "
							  "FROM mem ch JOIN mem pa ON pa.l OPERATOR(pg_catalog.=) ch.l AND pa.i OPERATOR(pg_catalog.<>) ch.i "
							  "JOIN softmig.migrations a ON a.legacy OPERATOR(pg_catalog.=) ch.l AND a.target OPERATOR(pg_catalog.=) ch.t "
							  "JOIN softmig.migrations o ON o.legacy OPERATOR(pg_catalog.=) pa.l AND o.target OPERATOR(pg_catalog.=) pa.t "
							  " AND o.name OPERATOR(pg_catalog.=) (a.options OPERATOR(pg_catalog.->>) 'attribute_of') "
							  "ORDER BY 1, 2, 3, 4",
							  2, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading the foreign keys of a group failed");
	old = MemoryContextSwitchTo(cxt);
	*fks = NIL;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		GroupFk    *fk = palloc0(sizeof(GroupFk));
		bool		isnull;

		fk->child = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		fk->parent = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		fk->side = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		fk->name = SPI_getvalue(tup, desc, 4);
		fk->refsel = SPI_getvalue(tup, desc, 5);
		fk->refobj = SPI_getvalue(tup, desc, 6);
		fk->cond = SPI_getvalue(tup, desc, 7);
		*fks = lappend(*fks, fk);
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	*nmembers = n;
	return ms;
}

/*
 * group_tie
 *		Choose the root (the first member, in group order, whose tables
 *		reference no other member's; the first member when every one does)
 *		and tie the others to it breadth first: a member whose table
 *		references a tied member's on either side is that member's child,
 *		found through those keys.  Members reached by no key stay untied.
 *		Returns the root's index; *order receives the *ntied tied members in
 *		the order they were reached (parents before children).
 */
static int
group_tie(GroupMember *ms, int n, List *fks, int **order, int *ntied)
{
	int			root = -1;
	int			nq = 0;
	ListCell   *lc;

	for (int i = 0; i < n && root < 0; i++)
	{
		bool		refs = false;

		foreach(lc, fks)
			if (((GroupFk *) lfirst(lc))->child == i)
				refs = true;
		if (!refs)
			root = i;
	}
	if (root < 0)
		root = 0;
	*order = palloc(sizeof(int) * n);
	(*order)[nq++] = root;
	ms[root].tied = true;
	for (int q = 0; q < nq; q++)
	{
		int			p = (*order)[q];

		foreach(lc, fks)
		{
			GroupFk    *fk = lfirst(lc);

			if (fk->parent != p || (ms[fk->child].tied && ms[fk->child].parent != p))
				continue;
			if (!ms[fk->child].tied)
			{
				ms[fk->child].tied = true;
				ms[fk->child].parent = p;
				(*order)[nq++] = fk->child;
			}
			ms[fk->child].fks[fk->side] = lappend(ms[fk->child].fks[fk->side], fk);
		}
	}
	*ntied = nq;
	return root;
}

/*
 * group_child_keys
 *		The legacy keys of child member ch's rows that belong to the entity
 *		rows already inspected for its parent: on each side, through each
 *		foreign key of that side, the child rows whose key columns equal the
 *		referenced columns of the parent's row on that side.  A parent row's
 *		values are read back from what inspect showed of it (its table's
 *		row type, as that table's owner); the child rows are read as the
 *		child table's owner and their legacy key computed as parity computes
 *		it (the backward key mapping on the target side).  All of it inside
 *		the read-only context entered by the caller.  Returns a sorted,
 *		duplicate-free array of Jsonb keys in *keys (allocated in cxt).
 */
static int
group_child_keys(GroupMember *par, GroupMember *ch, Jsonb ***keys, MemoryContext cxt)
{
	List	   *found = NIL;
	ListCell   *lr;
	ListCell   *lf;
	Jsonb	  **arr;
	int			n = 0;

	foreach(lr, par->rows)
	{
		Jsonb	   *prow = lfirst(lr);

		for (int side = PSIDE_LEGACY; side <= PSIDE_TARGET; side++)
		{
			Jsonb	   *pvals = jsonb_field_present(prow, side == PSIDE_LEGACY ? "legacy" : "target");

			if (pvals == NULL)
				continue;
			foreach(lf, ch->fks[side])
			{
				GroupFk    *fk = lfirst(lf);
				Oid			argtypes[1] = {JSONBOID};
				Datum		values[1];
				int			nref;
				Oid		   *rtypes;
				Datum	   *rvals;
				bool		anynull = false;
				char	   *sql;

				/*
				 * the referenced values of the parent's row, typed: only
				 * those columns are read back (their input functions are
				 * the only code this runs)
				 */
				values[0] = JsonbPGetDatum(pvals);
				sql = psprintf("SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::%s, "
							   "pg_catalog.jsonb_build_object(%s)) AS r",
							   fk->refsel, side == PSIDE_LEGACY ? par->c->lqual : par->c->tqual,
							   fk->refobj);
				parity_as_role(par->c, side == PSIDE_LEGACY ? par->c->lowner : par->c->towner);
				if (SPI_execute_with_args(sql, 1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
					SPI_processed != 1)
					elog(ERROR, "softmig: reading the parent row of a group member failed");
				nref = SPI_tuptable->tupdesc->natts;
				rtypes = palloc(sizeof(Oid) * nref);
				rvals = palloc(sizeof(Datum) * nref);
				for (int i = 0; i < nref; i++)
				{
					bool		isnull;

					rtypes[i] = SPI_gettypeid(SPI_tuptable->tupdesc, i + 1);
					rvals[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);
					if (isnull)
						anynull = true;
				}
				if (anynull)
					continue;	/* a NULL references nothing */

				/* the child rows that reference them, as legacy keys */
				sql = psprintf("SELECT %s FROM %s AS %s%s WHERE %s",
							   side == PSIDE_LEGACY ? ch->c->lkeyjson : ch->c->tkeyjson,
							   side == PSIDE_LEGACY ? ch->c->lqual : ch->c->tqual,
							   side == PSIDE_LEGACY ? "softmig_l" : "softmig_t",
							   side == PSIDE_LEGACY ? ch->c->lsplit : ch->c->tsplit, fk->cond);
				parity_as_role(ch->c, side == PSIDE_LEGACY ? ch->c->lowner : ch->c->towner);
				if (SPI_execute_with_args(sql, nref, rtypes, rvals, NULL, true, 0) != SPI_OK_SELECT)
					elog(ERROR, "softmig: reading the child rows of a group member failed");
				for (uint64 i = 0; i < SPI_processed; i++)
				{
					bool		isnull;
					Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
					MemoryContext old;
					Jsonb	   *k;

					if (isnull)
					{
						ch->unkeyed++;
						continue;
					}
					old = MemoryContextSwitchTo(cxt);
					k = DatumGetJsonbPCopy(d);
					MemoryContextSwitchTo(old);
					if (jsonb_has_null_value(k))
						ch->unkeyed++;
					else
						found = lappend(found, k);
				}
			}
		}
	}

	arr = MemoryContextAlloc(cxt, sizeof(Jsonb *) * Max(list_length(found), 1));
	foreach(lr, found)
		arr[n++] = lfirst(lr);
	if (n > 1)
	{
		int			u = 1;

		qsort(arr, n, sizeof(Jsonb *), jsonb_cmp_qsort);
		for (int i = 1; i < n; i++)
			if (compareJsonbContainers(&arr[i]->root, &arr[u - 1]->root) != 0)
				arr[u++] = arr[i];
		n = u;
	}
	*keys = arr;
	return n;
}

/*
 * group_find_children
 *		For every child member of parent member p: the legacy keys of its
 *		rows in the entity (group_child_keys), each then inspected like
 *		softmig.inspect (inspect_entity) into the child's rows.  The
 *		look-ups run in an SPI connection of their own, in the read-only
 *		context, with reader discovery suppressed; the inspections after it,
 *		each with its own.
 */
static void
group_find_children(const char *gname, GroupMember *ms, int n, int p, MemoryContext cxt)
{
	Jsonb	 ***keys = palloc0(sizeof(Jsonb **) * n);
	int		   *nkeys = palloc0(sizeof(int) * n);
	bool		any = false;

	for (int i = 0; i < n; i++)
		if (ms[i].tied && ms[i].parent == p)
			any = true;
	if (!any || ms[p].rows == NIL)
		return;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_discovery_suppress++;
	PG_TRY();
	{
		int			save_nest;
		Oid			save_user;
		int			save_sec;
		bool		save_ro;
		ErrorContextCallback errcb;

		if (ms[p].c == NULL)
			ms[p].c = parity_build(ms[p].id, 1, cxt);
		for (int i = 0; i < n; i++)
			if (ms[i].tied && ms[i].parent == p && ms[i].c == NULL)
				ms[i].c = parity_build(ms[i].id, 1, cxt);

		errcb.callback = group_error_context;
		errcb.arg = (void *) gname;
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;
		softmig_enter_readonly_context(ms[p].c->lowner, &save_nest, &save_user, &save_sec, &save_ro);
		for (int i = 0; i < n; i++)
			if (ms[i].c != NULL)
				ms[i].c->run_sec = save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION;
		for (int i = 0; i < n; i++)
			if (ms[i].tied && ms[i].parent == p)
				nkeys[i] = group_child_keys(&ms[p], &ms[i], &keys[i], cxt);
		softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
		error_context_stack = errcb.previous;
	}
	PG_FINALLY();
	{
		softmig_discovery_suppress--;
	}
	PG_END_TRY();
	SPI_finish();

	for (int i = 0; i < n; i++)
		for (int k = 0; k < nkeys[i]; k++)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			ms[i].rows = lappend(ms[i].rows, DatumGetJsonbP(inspect_entity(ms[i].id, keys[i][k])));
			MemoryContextSwitchTo(old);
		}
}

/*
 * append_json_names
 *		Append a JSON array of the names of a list of foreign keys.
 */
static void
append_json_names(StringInfo b, List *fks)
{
	ListCell   *lc;

	appendStringInfoChar(b, '[');
	foreach(lc, fks)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoString(b, ", ");
		escape_json(b, ((GroupFk *) lfirst(lc))->name);
	}
	appendStringInfoChar(b, ']');
}

PG_FUNCTION_INFO_V1(softmig_inspect_group);
/*
 * softmig_inspect_group
 *		softmig.inspect_group(group_name, key) -> jsonb: one entity of a
 *		group on both sides, every member.  key is the root member's legacy
 *		key, inspected like softmig.inspect (its errors for a bad key); each
 *		child member's rows are those that reference the parent's rows
 *		through the foreign keys between the members' tables, on the legacy
 *		side through legacy's keys and on the target side through the
 *		target's, each inspected like softmig.inspect.  For a caller who may
 *		read both tables of every member (42501 before anything is read
 *		otherwise); user SQL (mapping expressions, the parent row's column
 *		types) runs only as softmig.inspect runs it, as the table owners,
 *		read-only; AccessShareLock on every table it reads, as inspect
 *		takes.  One snapshot: the statement's.  Members are listed root
 *		first, then parents before children, then the members no key ties
 *		to the root (without rows).  42704 for an unknown group, 22004 for
 *		NULL arguments.
 */
Datum
softmig_inspect_group(PG_FUNCTION_ARGS)
{
	text	   *gname;
	Jsonb	   *key;
	MemoryContext cxt;
	MemoryContext old;
	GroupMember *ms;
	List	   *fks;
	int			n;
	int			root;
	int		   *order;
	int			ntied;
	int			counts[4] = {0, 0, 0, 0};	/* equal, then parity_kind_names */
	StringInfoData out;
	Datum		result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("group name must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key must not be null")));
	gname = PG_GETARG_TEXT_PP(0);
	key = PG_GETARG_JSONB_P(1);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "softmig inspect_group",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	ms = group_load(gname, &n, &fks, cxt);
	root = group_tie(ms, n, fks, &order, &ntied);

	/* every member's tables before anything is read */
	for (int i = 0; i < n; i++)
		softmig_check_read_access(ms[i].legacy, ms[i].target, GetUserId(), "softmig.inspect_group");

	/* the root's entity, then each tied member's rows, parents first */
	{
		Jsonb	   *r = DatumGetJsonbP(inspect_entity(ms[root].id, key));

		if (jsonb_field_present(r, "legacy") || jsonb_field_present(r, "target"))
			ms[root].rows = list_make1(r);
	}
	for (int q = 0; q < ntied; q++)
		group_find_children(text_to_cstring(gname), ms, n, order[q], cxt);

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"group\": ");
	escape_json(&out, text_to_cstring(gname));
	appendStringInfo(&out, ", \"key\": %s, \"root\": ",
					 JsonbToCString(NULL, &key->root, VARSIZE(key)));
	escape_json(&out, ms[root].name);
	appendStringInfoString(&out, ", \"members\": [");
	for (int i = 0; i < n; i++)
		if (!ms[i].tied)
			order[ntied++] = i;
	for (int q = 0; q < n; q++)
	{
		int			i = order[q];
		ListCell   *lc;

		if (q > 0)
			appendStringInfoString(&out, ", ");
		appendStringInfoString(&out, "{\"migration\": ");
		escape_json(&out, ms[i].name);
		appendStringInfo(&out, ", \"tied\": %s, \"parent\": ", ms[i].tied ? "true" : "false");
		if (ms[i].parent >= 0)
			escape_json(&out, ms[ms[i].parent].name);
		else
			appendStringInfoString(&out, "null");
		appendStringInfoString(&out, ", \"legacy_foreign_keys\": ");
		append_json_names(&out, ms[i].fks[PSIDE_LEGACY]);
		appendStringInfoString(&out, ", \"target_foreign_keys\": ");
		append_json_names(&out, ms[i].fks[PSIDE_TARGET]);
		appendStringInfo(&out, ", \"unkeyed_target_rows\": %d, \"rows\": [", ms[i].unkeyed);
		foreach(lc, ms[i].rows)
		{
			Jsonb	   *r = lfirst(lc);
			JsonbValue *pv = getKeyJsonValueFromContainer(&r->root, "parity", 6, NULL);
			int			k = 0;

			if (pv != NULL && pv->type == jbvString)
				for (int j = 0; j < 3; j++)
					if (strlen(parity_kind_names[j]) == pv->val.string.len &&
						strncmp(parity_kind_names[j], pv->val.string.val, pv->val.string.len) == 0)
						k = j + 1;
			counts[k]++;
			if (foreach_current_index(lc) > 0)
				appendStringInfoString(&out, ", ");
			appendStringInfoString(&out, JsonbToCString(NULL, &r->root, VARSIZE(r)));
		}
		appendStringInfoString(&out, "]}");
	}
	appendStringInfo(&out, "], \"parity\": {\"rows\": %d, \"equal\": %d", counts[0] + counts[1] + counts[2] + counts[3], counts[0]);
	for (int j = 0; j < 3; j++)
		appendStringInfo(&out, ", \"%s\": %d", parity_kind_names[j], counts[j + 1]);
	appendStringInfoString(&out, "}}");

	MemoryContextSwitchTo(old);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));
	MemoryContextDelete(cxt);
	PG_RETURN_DATUM(result);
}
