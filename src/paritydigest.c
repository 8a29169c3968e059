/*-------------------------------------------------------------------------
 *
 * paritydigest.c
 *	  Structural parity, phase 1: chunk boundaries from a sample, and the
 *	  digest of each side in one pass (the parallel-safe aggregate
 *	  softmig.parity_digest, or a DestReceiver for rows too wide for it).
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
 * Phase 1: chunk boundaries and digests
 * --------------------------------------------------------------------- */

/*
 * rel_estimate
 *		Rows and 8kB blocks of a table (all partitions): rows from the
 *		planner statistics or, for a table never analyzed, 50 per block.
 *		Only sizes the chunks and the key sample.
 */
static void
rel_estimate(Oid relid, double *rows, double *blocks)
{
	bool		isnull;
	Datum		d;

	(void) softmig_spi_select_arg("SELECT pg_catalog.sum(CASE WHEN c.reltuples OPERATOR(pg_catalog.>=) 0 THEN c.reltuples::pg_catalog.float8 "
								  "ELSE pg_catalog.pg_relation_size(c.oid)::pg_catalog.float8 OPERATOR(pg_catalog./) 8192 OPERATOR(pg_catalog.*) 50 END), "
								  "pg_catalog.sum(pg_catalog.pg_relation_size(c.oid)::pg_catalog.float8 OPERATOR(pg_catalog./) 8192) "
								  "FROM pg_catalog.pg_class c WHERE c.relkind OPERATOR(pg_catalog.=) 'r' "
								  "AND (c.oid OPERATOR(pg_catalog.=) $1 OR c.oid OPERATOR(pg_catalog.=) ANY "
								  "(SELECT p.relid FROM pg_catalog.pg_partition_tree($1) p))",
								  REGCLASSOID, ObjectIdGetDatum(relid), 1, "estimating the size of a table");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*rows = isnull ? 0 : DatumGetFloat8(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*blocks = isnull ? 0 : DatumGetFloat8(d);
}

/*
 * parity_choose_bounds
 *		Cut the key space into ranges of about chunk_rows rows: sample the
 *		target's keys (TABLESAMPLE SYSTEM, repeatable; the legacy side's
 *		mapped keys if the target sample is empty) and take evenly spaced
 *		quantiles (computed by the query, so only they come back).  Any
 *		increasing keys give a correct comparison; the sample only makes
 *		chunks even.  Sets c->chunks and c->acc.bounds.
 */
void
parity_choose_bounds(ParityCtx *c)
{
	double		trows;
	double		tblocks;
	double		lrows;
	double		lblocks;
	double		est;
	double		want;
	int			nb;
	double		pct;
	uint64		n = 0;
	SPITupleTable *tt = NULL;
	MemoryContext old;

	c->nchunks = 1;
	c->chunks = MemoryContextAllocZero(c->cxt, sizeof(PChunk));
	c->acc.nb = 0;
	rel_estimate(c->target, &trows, &tblocks);
	rel_estimate(c->legacy, &lrows, &lblocks);
	est = Max(trows, lrows);
	want = floor(est / c->chunk_rows);
	nb = (int) Min(want, (double) (PARITY_MAX_CHUNKS - 1));
	if (nb < 1)
		return;

	/*
	 * SYSTEM sampling reads whole blocks, whose keys are often neighbours:
	 * sample about 4 blocks per boundary, which keeps chunk sizes within
	 * about a quarter of chunk_rows when keys follow the physical order (and
	 * much closer when they do not).
	 */
	pct = Min(100.0, 100.0 * Max((double) nb * 4, 64.0) / Max(Max(tblocks, lblocks), 1.0));
	for (int side = PSIDE_TARGET; side >= PSIDE_LEGACY && n == 0; side--)
	{
		StringInfoData buf;
		StringInfoData outer;
		Oid			argtypes[2] = {FLOAT8OID, INT4OID};
		Datum		values[2];

		initStringInfo(&buf);
		initStringInfo(&outer);
		appendStringInfoString(&buf, "SELECT * FROM (SELECT ");
		for (int i = 0; i < c->nkeys; i++)
		{
			if (i)
				appendStringInfoString(&buf, ", ");
			if (side == PSIDE_LEGACY)
				appendStringInfo(&buf, "%s AS k%d", c->cols[i].lexpr, i);
			else
				appendStringInfo(&buf, "softmig_t.%s AS k%d", quote_identifier(c->cols[i].name), i);
		}
		if (side == PSIDE_LEGACY)
			appendStringInfo(&buf, " FROM %s AS softmig_l", c->lqual);
		else
			appendStringInfo(&buf, " FROM %s AS softmig_t", c->tqual);
		appendStringInfoString(&buf, " TABLESAMPLE SYSTEM ($1) REPEATABLE (8)) AS softmig_s WHERE ");
		for (int i = 0; i < c->nkeys; i++)
			appendStringInfo(&buf, "%sk%d IS NOT NULL", i ? " AND " : "", i);

		/*
		 * Only the nb quantiles come back (the first key of each of nb + 1
		 * tiles but the first): the sample itself stays in the executor,
		 * whose sort spills to disk, so memory does not grow with the table.
		 */
		resetStringInfo(&outer);
		appendStringInfoString(&outer, "SELECT DISTINCT ON (softmig_tile) ");
		for (int i = 0; i < c->nkeys; i++)
			appendStringInfo(&outer, "%sk%d", i ? ", " : "", i);
		appendStringInfoString(&outer, ", softmig_tile FROM (SELECT *, pg_catalog.ntile($2) OVER (ORDER BY ");
		for (int i = 0; i < c->nkeys; i++)
			appendStringInfo(&outer, "%sk%d", i ? ", " : "", i);
		appendStringInfo(&outer, ") AS softmig_tile FROM (%s) AS softmig_q) AS softmig_w WHERE softmig_tile > 1 ORDER BY softmig_tile",
						 buf.data);
		for (int i = 0; i < c->nkeys; i++)
			appendStringInfo(&outer, ", k%d", i);
		values[0] = Float8GetDatum(pct);
		values[1] = Int32GetDatum(nb + 1);
		parity_as_role(c, side == PSIDE_LEGACY ? c->lowner : c->towner);
		if (SPI_execute_with_args(outer.data, 2, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "softmig: sampling keys failed");
		n = SPI_processed;
		tt = SPI_tuptable;
	}
	if (n == 0)
		return;

	old = MemoryContextSwitchTo(c->cxt);
	c->chunks = palloc0(sizeof(PChunk) * (nb + 1));
	c->acc.bounds = palloc(sizeof(Datum) * nb * c->nkeys);
	c->acc.nb = 0;
	for (uint64 row = 0; row < n && row < (uint64) nb; row++)
	{
		Datum	   *b = &c->acc.bounds[c->acc.nb * c->nkeys];

		for (int k = 0; k < c->nkeys; k++)
		{
			bool		isnull;
			Form_pg_attribute att = TupleDescAttr(tt->tupdesc, k);

			b[k] = datumCopy(SPI_getbinval(tt->vals[row], tt->tupdesc, k + 1, &isnull),
							 att->attbyval, att->attlen);
		}
		/* equal neighbours would make an empty chunk */
		if (c->acc.nb > 0 && parity_key_cmp(c, b, &c->acc.bounds[(c->acc.nb - 1) * c->nkeys]) <= 0)
			continue;
		c->chunks[c->acc.nb].bound = b;
		c->acc.nb++;
	}
	c->nchunks = c->acc.nb + 1;
	MemoryContextSwitchTo(old);
	SPI_freetuptable(tt);
}

/*
 * parity_keep_ent
 *		Remember one (segment, chunk) digest of a side for the cache, in
 *		c->cxt; over SPARSE_MAX_CAP / 2 pairs the cache is given up.
 */
void
parity_keep_ent(ParityCtx *c, int side, const PcEnt *e)
{
	if (c->overflow)
		return;
	if (c->nents[side] >= SPARSE_MAX_CAP / 2)
	{
		c->overflow = true;
		return;
	}
	if (c->nents[side] == c->maxents[side])
	{
		c->maxents[side] = Max(64, c->maxents[side] * 2);
		c->ents[side] = c->ents[side] == NULL ?
			MemoryContextAlloc(c->cxt, sizeof(PcEnt) * c->maxents[side]) :
			repalloc(c->ents[side], sizeof(PcEnt) * c->maxents[side]);
	}
	c->ents[side][c->nents[side]++] = *e;
}

/*
 * merge_state
 *		Add a digest state of one side (nwords uint64, maybe unaligned) into
 *		the chunks and keep its (segment, chunk) digests for the cache.
 */
static void
merge_state(ParityCtx *c, int side, const char *data, Size nwords)
{
	uint64		hdr[ACC_HDR];
	uint64	   *st;

	if (nwords < ACC_HDR)
		elog(ERROR, "softmig: parity digest state too short");
	memcpy(hdr, data, sizeof(hdr));
	if ((int) hdr[ACC_H_NCHUNKS] != c->nchunks ||
		nwords != ACC_HDR + ACC_PER * hdr[ACC_H_NCHUNKS] + ACC_SLOT * hdr[ACC_H_CAP])
		elog(ERROR, "softmig: parity digest has %d chunks, expected %d", (int) hdr[0], c->nchunks);
	st = palloc(sizeof(uint64) * nwords);
	memcpy(st, data, sizeof(uint64) * nwords);
	c->nullkeys[side] += st[ACC_H_NULLKEYS];
	c->qskipped[side] += st[ACC_H_QUARANTINED];
	c->rows[side] += st[ACC_H_ROWS];
	for (int i = 0; i < c->nchunks; i++)
	{
		c->chunks[i].n[side] += st[ACC_HDR + ACC_PER * i];
		c->chunks[i].d1[side] += st[ACC_HDR + ACC_PER * i + 1];
		c->chunks[i].d2[side] += st[ACC_HDR + ACC_PER * i + 2];
	}
	if (st[ACC_H_OVERFLOW])
		c->overflow = true;
	else
	{
		uint64	   *slots = acc_slots(st);

		for (uint64 i = 0; i < st[ACC_H_CAP]; i++)
			if (slots[ACC_SLOT * i] != 0)
				parity_keep_ent(c, side, (PcEnt *) &slots[ACC_SLOT * i]);
	}
	pfree(st);
}

/*
 * parity_append_select_list
 *		The key and strict-field columns of one side, in c->cols order:
 *		legacy through the mapping (cast to the target's types, keys with
 *		the target's collation), target as stored.
 */
void
parity_append_select_list(StringInfo buf, ParityCtx *c, int side)
{
	for (int i = 0; i < c->ncols; i++)
	{
		if (i)
			appendStringInfoString(buf, ", ");
		if (side == PSIDE_LEGACY)
			appendStringInfoString(buf, c->cols[i].lexpr);
		else
			appendStringInfo(buf, "softmig_t.%s", quote_identifier(c->cols[i].name));
	}
}

/*
 * parity_append_order_by
 *		" ORDER BY <first> .. <first+nkeys-1>" (output column positions).
 */
void
parity_append_order_by(StringInfo buf, ParityCtx *c, int first)
{
	appendStringInfoString(buf, " ORDER BY ");
	for (int i = 0; i < c->nkeys; i++)
		appendStringInfo(buf, "%s%d", i ? ", " : "", first + i);
}

/*
 * parity_append_from
 *		" FROM <table> AS <alias>" for a side.
 */
void
parity_append_from(StringInfo buf, ParityCtx *c, int side)
{
	if (side == PSIDE_LEGACY)
		appendStringInfo(buf, " FROM %s AS softmig_l%s", c->lqual, c->lsplit);
	else
		appendStringInfo(buf, " FROM %s AS softmig_t%s", c->tqual, c->tsplit);
}

/*
 * parity_key_array
 *		An array of the base type of key column k holding element k of n
 *		keys stored nkeys apart (boundaries or quarantined keys).
 */
Datum
parity_key_array(ParityCtx *c, int k, const Datum *keys, int n)
{
	Oid			base = getBaseType(c->cols[k].typid);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	get_typlenbyvalalign(base, &typlen, &typbyval, &typalign);
	for (int i = 0; i < n; i++)
		elems[i] = keys[i * c->nkeys + k];
	return PointerGetDatum(construct_array(elems, n, base, typlen, typbyval, typalign));
}

/*
 * parity_digest_pass_agg
 *		Phase 1 for one side: the aggregate softmig.parity_digest over the
 *		side's rows, which the planner may run in parallel workers (partial
 *		states are combined).  Arguments: seed, number of key columns,
 *		collations, one boundary array and one quarantine array per key
 *		column, the row's ctid (NULL without the cache), then the columns.
 *		With stale (a warm run of the digest cache) only the runs of stale
 *		segments among the first nseg are read, one TID range scan each.
 */
void
parity_digest_pass_agg(ParityCtx *c, int side, const bool *stale, uint32 nseg)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	int			nparams = 3 + 2 * c->nkeys;
	Oid		   *argtypes = palloc(sizeof(Oid) * (nparams + 2));
	Datum	   *values = palloc(sizeof(Datum) * (nparams + 2));
	Datum	   *colls = palloc(sizeof(Datum) * c->ncols);
	const char *alias = side == PSIDE_LEGACY ? "softmig_l" : "softmig_t";
	ItemPointerData lo;
	ItemPointerData hi;
	int			p;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT softmig.parity_digest(");
	for (p = 1; p <= nparams; p++)
		appendStringInfo(&buf, "$%d, ", p);
	if (c->cache_on)
		appendStringInfo(&buf, "%s.ctid, ", alias);
	else
		appendStringInfoString(&buf, "NULL::pg_catalog.tid, ");
	parity_append_select_list(&buf, c, side);
	appendStringInfoChar(&buf, ')');
	parity_append_from(&buf, c, side);
	if (stale)
		appendStringInfo(&buf, " WHERE %s.ctid OPERATOR(pg_catalog.>=) $%d AND %s.ctid OPERATOR(pg_catalog.<) $%d",
						 alias, nparams + 1, alias, nparams + 2);

	argtypes[0] = INT8OID;
	values[0] = Int64GetDatum((int64) c->seed);
	argtypes[1] = INT4OID;
	values[1] = Int32GetDatum(c->nkeys);
	for (int i = 0; i < c->ncols; i++)
		colls[i] = ObjectIdGetDatum(c->cols[i].collid);
	argtypes[2] = OIDARRAYOID;
	values[2] = PointerGetDatum(construct_array(colls, c->ncols, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	for (int k = 0; k < c->nkeys; k++)
	{
		Oid			arrtype = get_array_type(getBaseType(c->cols[k].typid));

		if (!OidIsValid(arrtype))
			elog(ERROR, "softmig: no array type for %s", format_type_be(c->cols[k].typid));
		argtypes[3 + k] = arrtype;
		values[3 + k] = parity_key_array(c, k, c->acc.bounds, c->acc.nb);
		argtypes[3 + c->nkeys + k] = arrtype;
		values[3 + c->nkeys + k] = parity_key_array(c, k, c->acc.q, c->acc.nq);
	}
	argtypes[nparams] = TIDOID;
	argtypes[nparams + 1] = TIDOID;
	values[nparams] = PointerGetDatum(&lo);
	values[nparams + 1] = PointerGetDatum(&hi);

	plan = SPI_prepare_cursor(buf.data, nparams + (stale ? 2 : 0), argtypes,
							  CURSOR_OPT_PARALLEL_OK);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	for (uint32 a = 0; stale == NULL || a < nseg;)
	{
		uint32		b = a + 1;
		bool		isnull;
		Datum		d;

		if (stale)
		{
			if (!stale[a])
			{
				a++;
				continue;
			}
			while (b < nseg && stale[b])
				b++;
			ItemPointerSet(&lo, a * PC_SEG_BLOCKS, 0);
			ItemPointerSet(&hi, b * PC_SEG_BLOCKS, 0);
		}

		/*
		 * no row limit: a limited execution would run without parallel
		 * workers
		 */
		if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "softmig: parity digest failed");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			bytea	   *st = DatumGetByteaPP(d);

			merge_state(c, side, VARDATA_ANY(st) + (ACC_PAD - VARHDRSZ),
						(VARSIZE_ANY_EXHDR(st) - (ACC_PAD - VARHDRSZ)) / sizeof(uint64));
		}
		SPI_freetuptable(SPI_tuptable);
		if (stale == NULL)
			break;
		a = b;
	}
	SPI_freeplan(plan);
}

/* DestReceiver digesting rows in this backend (rows too wide for the aggregate). */
typedef struct DigestDest
{
	DestReceiver pub;
	ParityCtx  *c;
	uint64	   *st;
} DigestDest;

/*
 * digest_receive
 *		DestReceiver callback: digest one row.
 */
static bool
digest_receive(TupleTableSlot *slot, DestReceiver *self)
{
	DigestDest *d = (DigestDest *) self;
	MemoryContext old;
	AccHit		hit;

	slot_getallattrs(slot);
	old = MemoryContextSwitchTo(d->c->rowcxt);
	parity_acc_row(&d->c->acc, d->st, slot->tts_values, slot->tts_isnull, &hit);
	MemoryContextSwitchTo(old);
	MemoryContextReset(d->c->rowcxt);
	return true;
}

/*
 * digest_startup
 *		DestReceiver callback: nothing to prepare.
 */
static void
digest_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

/*
 * digest_shutdown
 *		DestReceiver callback: nothing to finish.
 */
static void
digest_shutdown(DestReceiver *self)
{
}

/*
 * digest_destroy
 *		DestReceiver callback: the receiver lives on the caller's stack.
 */
static void
digest_destroy(DestReceiver *self)
{
}

/*
 * digest_pass_local
 *		Phase 1 for one side when the row does not fit the aggregate's
 *		argument list: one statement whose rows (scanned and mapped, maybe
 *		by parallel workers) are digested here as they arrive, without
 *		copies.
 */
static void
digest_pass_local(ParityCtx *c, int side)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	SPIExecuteOptions opts;
	DigestDest	dest;
	int			rc;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	parity_append_select_list(&buf, c, side);
	parity_append_from(&buf, c, side);
	plan = SPI_prepare_cursor(buf.data, 0, NULL, CURSOR_OPT_PARALLEL_OK);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	memset(&dest, 0, sizeof(dest));
	dest.pub.receiveSlot = digest_receive;
	dest.pub.rStartup = digest_startup;
	dest.pub.rShutdown = digest_shutdown;
	dest.pub.rDestroy = digest_destroy;
	dest.pub.mydest = DestNone;
	dest.c = c;
	dest.st = MemoryContextAllocZero(c->cxt, sizeof(uint64) * (ACC_HDR + ACC_PER * c->nchunks));
	dest.st[ACC_H_NCHUNKS] = c->nchunks;

	memset(&opts, 0, sizeof(opts));
	opts.read_only = true;
	opts.dest = (DestReceiver *) &dest;
	rc = SPI_execute_plan_extended(plan, &opts);
	if (rc < 0)
		elog(ERROR, "softmig: parity scan failed: %s", SPI_result_code_string(rc));
	SPI_freeplan(plan);
	merge_state(c, side, (const char *) dest.st, ACC_HDR + ACC_PER * c->nchunks);
}

/*
 * parity_digest_fits_aggregate
 *		Do a side's columns fit the digest aggregate's argument list
 *		(FUNC_MAX_ARGS: state, seed, key count, collations, two arrays per
 *		key column, ctid, the columns)?
 */
bool
parity_digest_fits_aggregate(ParityCtx *c)
{
	return 1 + 4 + 2 * c->nkeys + c->ncols <= FUNC_MAX_ARGS;
}

/*
 * parity_digest_pass
 *		Phase 1 for one side, by the aggregate when its arguments fit in one
 *		call (FUNC_MAX_ARGS), else locally.
 */
void
parity_digest_pass(ParityCtx *c, int side)
{
	if (parity_digest_fits_aggregate(c))
		parity_digest_pass_agg(c, side, NULL, 0);
	else
		digest_pass_local(c, side);
}

/*
 * bad_digest_args
 *		22023 for a call of softmig.parity_digest that parity did not make.
 */
static void
bad_digest_args(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("softmig.parity_digest called with arguments softmig.parity does not use"),
			 errhint("It is a building block of softmig.parity; call that instead.")));
}

/*
 * acc_cache_build
 *		Rebuild the digest setup from the aggregate's arguments (see
 *		parity_digest_pass_agg), once per call site, in fn_mcxt.
 */
static AccSetup *
acc_cache_build(FunctionCallInfo fcinfo)
{
	MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	AccSetup   *s = palloc0(sizeof(AccSetup));
	int			nargs = PG_NARGS();
	int			first;
	Datum	   *colls;
	int			ncolls;

	/* callable by anyone: check every argument before trusting it */
	if (nargs < 4 || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) ||
		get_fn_expr_argtype(fcinfo->flinfo, 1) != INT8OID ||
		get_fn_expr_argtype(fcinfo->flinfo, 2) != INT4OID ||
		get_fn_expr_argtype(fcinfo->flinfo, 3) != OIDARRAYOID)
		bad_digest_args();
	s->seed = (uint64) PG_GETARG_INT64(1);
	s->nkeys = PG_GETARG_INT32(2);
	if (s->nkeys < 1 || s->nkeys > FUNC_MAX_ARGS)
		bad_digest_args();
	first = 5 + 2 * s->nkeys;
	s->ncols = nargs - first;
	if (s->ncols < s->nkeys ||
		get_fn_expr_argtype(fcinfo->flinfo, first - 1) != TIDOID)
		bad_digest_args();
	for (int k = 0; k < 2 * s->nkeys; k++)
	{
		Oid			keytype = getBaseType(get_fn_expr_argtype(fcinfo->flinfo, first + k % s->nkeys));

		if (PG_ARGISNULL(4 + k) ||
			get_element_type(get_fn_expr_argtype(fcinfo->flinfo, 4 + k)) != keytype)
			bad_digest_args();
	}
	deconstruct_array(PG_GETARG_ARRAYTYPE_P_COPY(3), OIDOID, sizeof(Oid), true, TYPALIGN_INT,
					  &colls, NULL, &ncolls);
	if (ncolls != s->ncols)
		bad_digest_args();
	s->cols = palloc0(sizeof(AccCol) * s->ncols);
	for (int i = 0; i < s->ncols; i++)
		parity_acc_col_init(&s->cols[i], get_fn_expr_argtype(fcinfo->flinfo, first + i),
							DatumGetObjectId(colls[i]), i < s->nkeys, fcinfo->flinfo->fn_mcxt);
	for (int set = 0; set < 2; set++)
	{
		Datum	  **dst = set == 0 ? &s->bounds : &s->q;
		int		   *cnt = set == 0 ? &s->nb : &s->nq;

		for (int k = 0; k < s->nkeys; k++)
		{
			ArrayType  *arr = PG_GETARG_ARRAYTYPE_P_COPY(4 + set * s->nkeys + k);
			int16		typlen;
			bool		typbyval;
			char		typalign;
			Datum	   *elems;
			int			n;

			get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
			deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign, &elems, NULL, &n);
			if (k == 0)
			{
				*cnt = n;
				*dst = palloc(sizeof(Datum) * Max(n, 1) * s->nkeys);
			}
			else if (n != *cnt)
				bad_digest_args();
			for (int i = 0; i < n; i++)
				(*dst)[i * s->nkeys + k] = elems[i];
		}
	}
	MemoryContextSwitchTo(old);
	return s;
}

PG_FUNCTION_INFO_V1(softmig_parity_acc);
/*
 * softmig_parity_acc
 *		Transition function of softmig.parity_digest(VARIADIC "any"): digest
 *		one row into the bytea state (modified in place; it lives in the
 *		aggregate's context), and with the row's ctid also into the digests
 *		of its (segment, chunk) pair.  Parallel safe; runs in workers.
 */
Datum
softmig_parity_acc(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	AccSetup   *s = (AccSetup *) fcinfo->flinfo->fn_extra;
	bytea	   *state;
	int			first;
	Datum		values[FUNC_MAX_ARGS];
	bool		nulls[FUNC_MAX_ARGS];
	AccHit		hit;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("softmig._parity_acc can only be called by the aggregate softmig.parity_digest")));
	if (s == NULL)
	{
		s = acc_cache_build(fcinfo);
		fcinfo->flinfo->fn_extra = s;
	}
	if (PG_ARGISNULL(0))
	{
		Size		len = parity_acc_state_size(s->nb + 1, 0);

		state = (bytea *) MemoryContextAllocZero(aggcxt, len);
		SET_VARSIZE(state, len);
		ACC_STATE(state)[ACC_H_NCHUNKS] = s->nb + 1;
	}
	else
		state = (bytea *) PG_GETARG_POINTER(0);
	first = 5 + 2 * s->nkeys;
	for (int i = 0; i < s->ncols; i++)
	{
		nulls[i] = PG_ARGISNULL(first + i);
		values[i] = nulls[i] ? (Datum) 0 : PG_GETARG_DATUM(first + i);
	}
	parity_acc_row(s, ACC_STATE(state), values, nulls, &hit);
	if (!PG_ARGISNULL(first - 1))
	{
		BlockNumber blk = ItemPointerGetBlockNumberNoCheck((ItemPointer) PG_GETARG_POINTER(first - 1));

		/* a grown state is allocated per call; the executor copies it */
		state = parity_sparse_add(state, PC_ENT_KEY(blk / PC_SEG_BLOCKS, hit.chunk),
								  1, hit.a, hit.b, CurrentMemoryContext);
	}
	PG_RETURN_POINTER(state);
}

/*
 * softmig_parity_state_chunks
 *		Read a state of softmig.parity_digest computed without ctids (in
 *		this database or, with the same PostgreSQL on the same platform, in
 *		another one): per chunk its row count and two digests into out
 *		(3 words per chunk), and the rows whose key had a NULL.  false when
 *		the state is not one of nchunks chunks.  For cross-database parity
 *		(remote_parity.c), which compares states made on two servers.
 */
bool
softmig_parity_state_chunks(bytea *state, int nchunks, uint64 *out, uint64 *nullkeys)
{
	Size		nbytes = VARSIZE_ANY_EXHDR(state);
	const char *data = VARDATA_ANY(state) + (ACC_PAD - VARHDRSZ);
	uint64		hdr[ACC_HDR];

	if (nbytes < ACC_PAD - VARHDRSZ + sizeof(hdr))
		return false;
	memcpy(hdr, data, sizeof(hdr));
	if ((int) hdr[ACC_H_NCHUNKS] != nchunks || hdr[ACC_H_CAP] != 0 ||
		nbytes != ACC_PAD - VARHDRSZ + sizeof(uint64) * (ACC_HDR + ACC_PER * (Size) nchunks))
		return false;
	memcpy(out, data + sizeof(hdr), sizeof(uint64) * ACC_PER * (Size) nchunks);
	*nullkeys = hdr[ACC_H_NULLKEYS];
	return true;
}

PG_FUNCTION_INFO_V1(softmig_parity_combine);
/*
 * softmig_parity_combine
 *		Combine function of softmig.parity_digest: add two partial states
 *		(from parallel workers): counters and chunk digests element by
 *		element, (segment, chunk) digests pair by pair.
 */
Datum
softmig_parity_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	bytea	   *a;
	bytea	   *b;
	uint64	   *sa;
	uint64		hb[ACC_HDR];
	const char *db;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("softmig._parity_combine can only be called by the aggregate softmig.parity_digest")));
	if (PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		PG_RETURN_POINTER(PG_GETARG_POINTER(0));
	}
	b = PG_GETARG_BYTEA_P(1);
	if (PG_ARGISNULL(0))
	{
		a = (bytea *) MemoryContextAlloc(aggcxt, VARSIZE(b));
		memcpy(a, b, VARSIZE(b));
		PG_RETURN_POINTER(a);
	}
	a = (bytea *) PG_GETARG_POINTER(0);
	sa = ACC_STATE(a);
	db = ((const char *) b) + ACC_PAD;
	memcpy(hb, db, sizeof(hb));
	if (hb[ACC_H_NCHUNKS] != sa[ACC_H_NCHUNKS] ||
		VARSIZE(b) != parity_acc_state_size(hb[ACC_H_NCHUNKS], hb[ACC_H_CAP]))
		elog(ERROR, "softmig._parity_combine: states do not match");
	for (int i = ACC_H_NULLKEYS; i <= ACC_H_ROWS; i++)
		sa[i] += hb[i];
	for (uint64 i = ACC_HDR; i < ACC_HDR + ACC_PER * sa[ACC_H_NCHUNKS]; i++)
	{
		uint64		v;

		memcpy(&v, db + i * sizeof(uint64), sizeof(uint64));
		sa[i] += v;
	}
	if (hb[ACC_H_OVERFLOW])
		sa[ACC_H_OVERFLOW] = 1;
	for (uint64 i = 0; i < hb[ACC_H_CAP] && !sa[ACC_H_OVERFLOW]; i++)
	{
		uint64		e[ACC_SLOT];

		memcpy(e, db + sizeof(uint64) * (ACC_HDR + ACC_PER * hb[ACC_H_NCHUNKS] + ACC_SLOT * i),
			   sizeof(e));
		if (e[0] != 0)
		{
			/* a grown state is allocated per call; the executor copies it */
			a = parity_sparse_add(a, e[0], e[1], e[2], e[3], CurrentMemoryContext);
			sa = ACC_STATE(a);
		}
	}
	PG_RETURN_POINTER(a);
}
