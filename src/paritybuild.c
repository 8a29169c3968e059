/*-------------------------------------------------------------------------
 *
 * paritybuild.c
 *	  Structural parity, building the comparison: everything a run of
 *	  migration id needs, copied out of the migration cache (compared
 *	  columns, key mapping, collations, the SQL of both sides), and the
 *	  quarantine list the run skips.  Also the observability GUCs (test
 *	  hooks) and the switch to a table's owner inside a run, which every
 *	  later phase uses.
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

/* GUCs (test hooks, see softmig_observe_init) */
int			softmig_parity_digest_bits = 64;
int			softmig_parity_pause_lock = 0;

/*
 * softmig_observe_init
 *		Define the observability GUCs (test hooks, superuser only).  Called
 *		once per backend from _PG_init; no locks.
 */
void
softmig_observe_init(void)
{
	DefineCustomIntVariable("softmig.parity_digest_bits",
							"Test hook: bits of the primary parity chunk digest that are kept.",
							"64 (default) keeps all; fewer bits force digest collisions, which the guard digest and the row-by-row confirmation must absorb.  0 also fixes the hash seed so runs repeat.",
							&softmig_parity_digest_bits,
							64, 0, 64,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("softmig.parity_pause_lock",
							"Test hook: advisory lock parity waits for between reading legacy and reading the target.",
							"0 disables it.  For isolation tests only.",
							&softmig_parity_pause_lock,
							0, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	softmig_paritycache_init();
}

/*
 * parity_as_role
 *		Inside the read-only context, run the following user SQL as role
 *		(a table owner): security-restricted, GUCs as set on entry.
 */
void
parity_as_role(ParityCtx *c, Oid role)
{
	softmig_set_user(role, c->run_sec);
}

/* ---------------------------------------------------------------------
 * Building the comparison
 * --------------------------------------------------------------------- */

/*
 * copy_str_list
 *		Deep copy of a List of C strings into the current memory context.
 */
static List *
copy_str_list(List *l)
{
	List	   *r = NIL;
	ListCell   *lc;

	foreach(lc, l)
		r = lappend(r, pstrdup((char *) lfirst(lc)));
	return r;
}

/*
 * parity_collation_sql
 *		" COLLATE schema.name" for a collation, or "" when there is none.
 */
char *
parity_collation_sql(Oid collid)
{
	HeapTuple	tup;
	Form_pg_collation coll;
	char	   *r;

	if (!OidIsValid(collid))
		return "";
	tup = SearchSysCache1(COLLOID, ObjectIdGetDatum(collid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for collation %u", collid);
	coll = (Form_pg_collation) GETSTRUCT(tup);
	r = psprintf(" COLLATE %s",
				 quote_qualified_identifier(get_namespace_name(coll->collnamespace),
											NameStr(coll->collname)));
	ReleaseSysCache(tup);
	return r;
}

/*
 * pcol_setup
 *		Fill a PCol from the target column's attribute: type, collation,
 *		equality and output functions.  Raises 42883 for a key type without
 *		a default btree operator class (hashing and ordering are set up by
 *		parity_acc_col_init).
 */
static void
pcol_setup(ParityCtx *c, PCol *pc, Form_pg_attribute att, bool iskey)
{
	Oid			base = getBaseType(att->atttypid);
	TypeCacheEntry *tc;
	Oid			outfn;
	bool		isvarlena;

	tc = lookup_type_cache(base, TYPECACHE_EQ_OPR_FINFO |
						   (iskey ? TYPECACHE_CMP_PROC_FINFO : 0));
	pc->typid = att->atttypid;
	pc->typmod = att->atttypmod;
	pc->collid = att->attcollation;
	pc->has_eq = OidIsValid(tc->eq_opr_finfo.fn_oid);
	if (pc->has_eq)
		fmgr_info_cxt(tc->eq_opr_finfo.fn_oid, &pc->eq, c->cxt);
	if (iskey)
	{
		if (!OidIsValid(tc->cmp_proc_finfo.fn_oid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("parity cannot order key column \"%s\" of type %s",
							pc->name, format_type_be(att->atttypid)),
					 errdetail("Migration \"%s\" compares rows in key order.", c->name),
					 errhint("The correlation key needs types with a default btree operator class.")));
	}
	getTypeOutputInfo(att->atttypid, &outfn, &isvarlena);
	fmgr_info_cxt(outfn, &pc->out, c->cxt);
}


/*
 * split_attribute_rows
 *		c->lsplit and c->tsplit: what follows each side's table in FROM:
 *		nothing, or, for an attribute member of a split, a join that keeps
 *		only the rows that carry an attribute: legacy rows with one of the member's legacy columns set,
 *		target rows whose backward mapping sets one.  An attribute row the
 *		target does not hold is the same entity as legacy columns all NULL
 *		(doc/shapes.md), so neither is a difference; the entity's existence
 *		is the owner's member's to compare.  bwd describes the legacy side,
 *		fwd the target side.  For an attribute member of a merge the sides
 *		swap: target rows with one of the member's target columns set,
 *		legacy rows whose forward mapping sets one.
 */
static void
split_attribute_rows(ParityCtx *c, SoftmigMigration *m, SoftmigDest *bwd, SoftmigDest *fwd)
{
	SoftmigDest *shared = m->split_merge ? fwd : bwd;
	StringInfo	rawf;
	StringInfo	mapf;
	StringInfoData lf;
	StringInfoData tf;
	ListCell   *lc;
	ListCell   *le;
	int			n = 0;

	c->lsplit = "";
	c->tsplit = "";
	if (m->split_owner == 0)
		return;
	initStringInfo(&lf);
	initStringInfo(&tf);
	/* the shared table's raw columns, the other table's mapped values */
	rawf = m->split_merge ? &tf : &lf;
	mapf = m->split_merge ? &lf : &tf;
	forboth(lc, shared->cols, le, shared->exprs)
	{
		if (softmig_str_member(shared->keycols, lfirst(lc)))
			continue;
		appendStringInfo(rawf, "%s%s.%s IS NULL", n ? " AND " : "",
						 m->split_merge ? "softmig_t" : "softmig_l", quote_identifier(lfirst(lc)));
		appendStringInfo(mapf, "%s(%s\n) IS NULL", n ? " AND " : "", (char *) lfirst(le));
		n++;
	}
	if (n == 0)
		return;
	c->lsplit = psprintf(" JOIN (SELECT 1 AS softmig_one) AS softmig_f ON NOT (%s)", lf.data);
	c->tsplit = psprintf(" JOIN (SELECT 1 AS softmig_one) AS softmig_f ON NOT (%s)", tf.data);
}

/*
 * parity_build
 *		Everything a comparison of migration "id" needs, copied out of the
 *		migration cache into cxt (the cache entry may be retired by an
 *		invalidation while user SQL runs; cxt must outlive the SPI
 *		connection this runs in).  Takes AccessShareLock on both tables.
 */
ParityCtx *
parity_build(int32 id, int chunk_rows, MemoryContext cxt)
{
	ParityCtx  *c;
	SoftmigMigration *m;
	SoftmigDest *fwd;
	SoftmigDest *bwd;
	MemoryContext old;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	bool		isnull;
	List	   *divergent;
	List	   *new_only;
	List	   *fields = NIL;
	List	   *fexprs = NIL;
	List	   *mapnames = NIL;
	List	   *mapexprs = NIL;
	Relation	trel;
	TupleDesc	tdesc;
	ListCell   *lc;
	ListCell   *lc2;
	int			i;

	old = MemoryContextSwitchTo(cxt);
	c = palloc0(sizeof(ParityCtx));
	c->cxt = cxt;
	c->rowcxt = AllocSetContextCreate(cxt, "softmig parity row", ALLOCSET_SMALL_SIZES);
	c->id = id;
	c->chunk_rows = chunk_rows;
	c->apply_quarantine = true;
	c->actor = OidIsValid(softmig_gate_actor) ? softmig_gate_actor : GetUserId();

	m = softmig_get_migration(id);
	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("migration %d does not exist", id)));
	c->name = pstrdup(m->name);
	c->legacy = m->legacy;
	c->target = m->target;
	c->lowner = softmig_rel_owner(m->legacy);
	c->towner = softmig_rel_owner(m->target);
	fwd = softmig_build_dest(m, SIDE_LEGACY);	/* target side */
	bwd = softmig_build_dest(m, SIDE_TARGET);	/* legacy side */
	c->lqual = softmig_qualified_relname(m->legacy);
	c->tqual = pstrdup(fwd->qualname);
	split_attribute_rows(c, m, bwd, fwd);
	c->lkeycols = copy_str_list(bwd->keycols);
	{
		Relation	lrel = table_open(m->legacy, AccessShareLock);
		ListCell   *lk;

		c->lkeytypes = palloc(sizeof(Oid) * list_length(c->lkeycols));
		foreach(lk, c->lkeycols)
		{
			AttrNumber	a = attnameAttNum(lrel, lfirst(lk), false);

			if (a <= 0)
				elog(ERROR, "softmig: legacy key column \"%s\" does not exist", (char *) lfirst(lk));
			c->lkeytypes[foreach_current_index(lk)] = TupleDescAttr(RelationGetDescr(lrel), a - 1)->atttypid;
		}
		table_close(lrel, NoLock);
	}
	c->lkeyops = copy_str_list(bwd->keyops);
	c->tkeyops = copy_str_list(fwd->keyops);
	{
		List	   *tkeycols = copy_str_list(fwd->keycols);
		List	   *tkeyexprs = copy_str_list(fwd->keyexprs);
		List	   *fcols = copy_str_list(fwd->cols);
		List	   *fex = copy_str_list(fwd->exprs);
		List	   *lkeyexprs_t = copy_str_list(bwd->keyexprs);
		List	   *lkeyquoted = NIL;

		/* strict fields need the catalog's divergent and new_only lists */
		values[0] = Int32GetDatum(id);
		if (SPI_execute_with_args("SELECT divergent, new_only FROM softmig.migrations "
								  "WHERE id OPERATOR(pg_catalog.=) $1",
								  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "softmig: migration %d vanished", id);

		/*
		 * SPI calls return in SPI's procedure context, which SPI_finish frees
		 * while callers (softmig._parity_summary) still read c: back to cxt.
		 */
		MemoryContextSwitchTo(cxt);
		divergent = softmig_text_array_list(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		new_only = softmig_text_array_list(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		forboth(lc, fcols, lc2, fex)
		{
			mapnames = lappend(mapnames, lfirst(lc));
			if (softmig_str_member(tkeycols, lfirst(lc)) || softmig_str_member(divergent, lfirst(lc)) ||
				softmig_str_member(new_only, lfirst(lc)))
				continue;
			fields = lappend(fields, lfirst(lc));
			fexprs = lappend(fexprs, lfirst(lc2));
		}

		c->nkeys = list_length(tkeycols);
		c->ncols = c->nkeys + list_length(fields);
		c->cols = palloc0(sizeof(PCol) * c->ncols);

		trel = table_open(c->target, AccessShareLock);
		tdesc = RelationGetDescr(trel);
		for (i = 0; i < c->ncols; i++)
		{
			PCol	   *pc = &c->cols[i];
			bool		iskey = i < c->nkeys;
			char	   *col = iskey ? list_nth(tkeycols, i) : list_nth(fields, i - c->nkeys);
			char	   *expr = iskey ? list_nth(tkeyexprs, i) : list_nth(fexprs, i - c->nkeys);
			AttrNumber	attno = attnameAttNum(trel, col, false);
			Form_pg_attribute att;

			if (attno <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of table %s does not exist", col, c->tqual),
						 errdetail("Migration \"%s\" maps it.", c->name)));
			att = TupleDescAttr(tdesc, attno - 1);
			pc->name = col;
			pcol_setup(c, pc, att, iskey);
			pc->lexpr = psprintf("(%s\n)::%s%s", expr,
								 format_type_extended(att->atttypid, att->atttypmod,
													  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY),
								 iskey ? parity_collation_sql(att->attcollation) : "");
		}
		/* every forward-mapped column, cast like the mirror would write it */
		foreach(lc, mapnames)
		{
			AttrNumber	attno = attnameAttNum(trel, lfirst(lc), false);
			Form_pg_attribute att = TupleDescAttr(tdesc, attno - 1);

			mapexprs = lappend(mapexprs,
							   psprintf("(%s\n)::%s", (char *) list_nth(fex, foreach_current_index(lc)),
										format_type_extended(att->atttypid, att->atttypmod,
															 FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY)));
		}
		table_close(trel, NoLock);

		foreach(lc, c->lkeycols)
			lkeyquoted = lappend(lkeyquoted, (char *) quote_identifier(lfirst(lc)));
		c->lkeyjson = softmig_json_object_sql(c->lkeycols, lkeyquoted);
		c->tkeyjson = softmig_json_object_sql(c->lkeycols, lkeyexprs_t);
		c->lmapped = softmig_json_object_sql(mapnames, mapexprs);
	}

	c->digest_bits = softmig_parity_digest_bits;
	c->d1mask = c->digest_bits >= 64 ? ~UINT64CONST(0) :
		((UINT64CONST(1) << c->digest_bits) - 1);
	if (c->digest_bits >= 64)
	{
		if (!pg_strong_random(&c->seed, sizeof(c->seed)))
			c->seed = (uint64) GetCurrentTimestamp();
	}
	else
		c->seed = UINT64CONST(0x5eed50f7a11e5);
	c->fresh_seed = c->seed;

	c->acc.nkeys = c->nkeys;
	c->acc.ncols = c->ncols;
	c->acc.seed = c->seed;
	c->acc.cols = palloc0(sizeof(AccCol) * c->ncols);
	for (int k = 0; k < c->ncols; k++)
		parity_acc_col_init(&c->acc.cols[k], c->cols[k].typid, c->cols[k].collid, k < c->nkeys, cxt);
	c->nchunks = 1;
	c->chunks = palloc0(sizeof(PChunk));
	MemoryContextSwitchTo(old);
	return c;
}

/* ---------------------------------------------------------------------
 * Quarantine
 * --------------------------------------------------------------------- */

/*
 * parity_load_quarantine
 *		Read the quarantined keys (as the catalog owner: the list is
 *		catalog data) and turn each into its target key through the forward
 *		key mapping (as the caller, who must already be in the read-only
 *		context).  Sorted for binary search.  Inside the SPI connection.
 */
void
parity_load_quarantine(ParityCtx *c)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	Oid			save_user;
	int			save_sec;
	uint64		n;
	SPITupleTable *tt;
	StringInfoData buf;
	SPIPlanPtr	plan;
	MemoryContext old;
	int			i;

	values[0] = Int32GetDatum(c->id);
	softmig_become_catalog_owner(&save_user, &save_sec);
	if (SPI_execute_with_args("SELECT k FROM softmig._quarantined_keys($1) AS k "
							  "WHERE k IS NOT NULL",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading the quarantine failed");
	softmig_set_user(save_user, save_sec);
	n = SPI_processed;
	tt = SPI_tuptable;
	if (n == 0)
		return;
	parity_as_role(c, c->lowner);	/* the forward key mapping is the owner's
									 * SQL */

	old = MemoryContextSwitchTo(c->cxt);
	c->qjson = palloc(sizeof(Jsonb *) * n);
	c->qkeys = palloc(sizeof(Datum) * n * c->nkeys);
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;

		c->qjson[c->nqjson++] = DatumGetJsonbPCopy(SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull));
	}
	MemoryContextSwitchTo(old);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	for (i = 0; i < c->nkeys; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", c->cols[i].lexpr);
	appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) AS softmig_l", c->lqual);
	argtypes[0] = JSONBOID;
	plan = SPI_prepare(buf.data, 1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	for (i = 0; i < c->nqjson; i++)
	{
		bool		anynull = false;
		Datum	   *dst = &c->qkeys[c->nq * c->nkeys];

		values[0] = JsonbPGetDatum(c->qjson[i]);
		if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "softmig: mapping a quarantined key failed");
		old = MemoryContextSwitchTo(c->cxt);
		for (int k = 0; k < c->nkeys; k++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, k + 1, &isnull);
			Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, k);

			if (isnull)
				anynull = true;
			else
				dst[k] = datumCopy(d, att->attbyval, att->attlen);
		}
		MemoryContextSwitchTo(old);
		if (!anynull)
			c->nq++;
		SPI_freetuptable(SPI_tuptable);
	}
	if (c->nq > 1)
		qsort_arg(c->qkeys, c->nq, sizeof(Datum) * c->nkeys, parity_qkey_cmp, c);
	c->acc.q = c->qkeys;
	c->acc.nq = c->nq;
}
