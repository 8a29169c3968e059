/*-------------------------------------------------------------------------
 *
 * paritydescent.c
 *	  Structural parity, phase 2: the descent into chunks whose digests
 *	  differ, both sides read through cursors in key order and merged row
 *	  by row, and the rows whose key has a NULL.
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
 * Phase 2: descent
 * --------------------------------------------------------------------- */

/*
 * stream_open
 *		Open a cursor over plan with the given parameters (read-only, the
 *		caller's snapshot), rows laid out with the columns at offset off.
 */
static void
stream_open(ParityCtx *c, Stream *s, int off, Oid owner, SPIPlanPtr plan, Datum *values, char *nulls)
{
	memset(s, 0, sizeof(Stream));
	s->off = off;
	s->owner = owner;
	s->c = c;
	parity_as_role(c, owner);
	s->vals = MemoryContextAlloc(c->cxt, sizeof(Datum) * (c->ncols + off));
	s->nulls = MemoryContextAlloc(c->cxt, sizeof(bool) * (c->ncols + off));
	s->portal = SPI_cursor_open(NULL, plan, values, nulls, true);
	if (s->portal == NULL)
		elog(ERROR, "softmig: opening a parity cursor failed: %s",
			 SPI_result_code_string(SPI_result));
}

/*
 * stream_next
 *		Advance to the next row; false at the end.  The previous row's
 *		values are invalid afterwards.
 */
static bool
stream_next(Stream *s)
{
	if (s->tt != NULL && s->pos + 1 < s->n)
		s->pos++;
	else
	{
		if (s->tt != NULL)
			SPI_freetuptable(s->tt);
		s->tt = NULL;
		if (s->done)
		{
			s->valid = false;
			return false;
		}
		parity_as_role(s->c, s->owner); /* its expressions are its owner's SQL */
		SPI_cursor_fetch(s->portal, true, PARITY_FETCH);
		s->tt = SPI_tuptable;
		s->n = SPI_processed;
		s->pos = 0;
		if (s->n == 0)
		{
			SPI_freetuptable(s->tt);
			s->tt = NULL;
			s->done = true;
			s->valid = false;
			return false;
		}
	}
	heap_deform_tuple(s->tt->vals[s->pos], s->tt->tupdesc, s->vals, s->nulls);
	s->valid = true;
	return true;
}

/*
 * stream_close
 *		Release a stream's batch and cursor.
 */
static void
stream_close(Stream *s)
{
	if (s->tt != NULL)
		SPI_freetuptable(s->tt);
	s->tt = NULL;
	if (s->portal != NULL)
		SPI_cursor_close(s->portal);
	s->portal = NULL;
}

/*
 * parity_key_of
 *		The legacy-key jsonb of the entity a difference is about, computed
 *		once per row and only when an emitter asks (most rows are never
 *		reported): from the legacy row's key columns, or for a target row by
 *		looking it up through the backward key mapping.  The result is
 *		copied into the current memory context.
 */
Datum
parity_key_of(ParityCtx *c, KeyRef *kr)
{
	Datum	   *values;
	char	   *nulls;
	int			n;
	SPIPlanPtr	plan;
	bool		isnull;
	Datum		d;

	if (kr->have)
		return kr->key;
	if (kr->side == PSIDE_LEGACY)
	{
		n = list_length(c->lkeycols);
		if (c->lkeyplan == NULL)
		{
			List	   *params = NIL;
			char	   *sql;

			for (int i = 0; i < n; i++)
				params = lappend(params, psprintf("$%d", i + 1));
			sql = psprintf("SELECT %s", softmig_json_object_sql(c->lkeycols, params));
			c->lkeyplan = SPI_prepare(sql, n, c->lkeytypes);
			if (c->lkeyplan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		}
		plan = c->lkeyplan;
		values = kr->s->vals;
		nulls = palloc(n + 1);
		for (int i = 0; i < n; i++)
			nulls[i] = kr->s->nulls[i] ? 'n' : ' ';
	}
	else
	{
		n = c->nkeys;
		if (c->tkeyplan == NULL)
		{
			StringInfoData buf;
			Oid		   *types = palloc(sizeof(Oid) * n);

			initStringInfo(&buf);
			appendStringInfo(&buf, "SELECT %s FROM %s AS softmig_t%s WHERE ", c->tkeyjson, c->tqual, c->tsplit);
			for (int i = 0; i < n; i++)
			{
				appendStringInfo(&buf, "%ssoftmig_t.%s %s $%d", i ? " AND " : "",
								 quote_identifier(c->cols[i].name), (char *) list_nth(c->tkeyops, i), i + 1);
				types[i] = c->cols[i].typid;
			}
			c->tkeyplan = SPI_prepare(buf.data, n, types);
			if (c->tkeyplan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		}
		plan = c->tkeyplan;
		values = &kr->s->vals[kr->s->off];
		nulls = palloc(n + 1);
		for (int i = 0; i < n; i++)
			nulls[i] = ' ';
	}
	parity_as_role(c, kr->side == PSIDE_LEGACY ? c->lowner : c->towner);
	if (SPI_execute_plan(plan, values, nulls, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: computing the key of a difference failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	kr->key = isnull ? DirectFunctionCall1(jsonb_in, CStringGetDatum("null")) : datumCopy(d, false, -1);
	SPI_freetuptable(SPI_tuptable);
	kr->have = true;
	return kr->key;
}

/*
 * range_plan
 *		SELECT [<legacy key columns>,] <columns> FROM side WHERE <key not
 *		null> [AND ROW(key) > / >= ROW(lo)] [AND ROW(key) <= ROW(hi)] ORDER
 *		BY key.  Parameters: lo then hi, typed as the target key columns.
 */
static SPIPlanPtr
range_plan(ParityCtx *c, int side, int lo, int hi)
{
	StringInfoData buf;
	StringInfoData keyrow;
	Oid		   *argtypes = palloc(sizeof(Oid) * 2 * c->nkeys);
	int			nargs = 0;
	int			i;
	int			off = 0;
	SPIPlanPtr	plan;
	ListCell   *lc;

	initStringInfo(&keyrow);
	appendStringInfoString(&keyrow, "ROW(");
	for (i = 0; i < c->nkeys; i++)
	{
		if (i)
			appendStringInfoString(&keyrow, ", ");
		if (side == PSIDE_LEGACY)
			appendStringInfoString(&keyrow, c->cols[i].lexpr);
		else
			appendStringInfo(&keyrow, "softmig_t.%s", quote_identifier(c->cols[i].name));
	}
	appendStringInfoChar(&keyrow, ')');

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	if (side == PSIDE_LEGACY)
	{
		foreach(lc, c->lkeycols)
			appendStringInfo(&buf, "softmig_l.%s, ", quote_identifier(lfirst(lc)));
		off = list_length(c->lkeycols);
	}
	parity_append_select_list(&buf, c, side);
	parity_append_from(&buf, c, side);
	appendStringInfoString(&buf, " WHERE ");
	for (i = 0; i < c->nkeys; i++)
	{
		if (side == PSIDE_LEGACY)
			appendStringInfo(&buf, "%s%s IS NOT NULL", i ? " AND " : "", c->cols[i].lexpr);
		else
			appendStringInfo(&buf, "%ssoftmig_t.%s IS NOT NULL", i ? " AND " : "",
							 quote_identifier(c->cols[i].name));
	}
	for (int b = 0; b < 2; b++)
	{
		const char *op;

		if (b == 0 && lo == LO_NONE)
			continue;
		if (b == 1 && hi == HI_NONE)
			continue;
		op = b == 0 ? (lo == LO_GT ? ">" : ">=") : "<=";
		appendStringInfo(&buf, " AND %s %s ROW(", keyrow.data, op);
		for (i = 0; i < c->nkeys; i++)
		{
			argtypes[nargs] = c->cols[i].typid;
			nargs++;
			appendStringInfo(&buf, "%s$%d%s", i ? ", " : "", nargs,
							 parity_collation_sql(c->cols[i].collid));
		}
		appendStringInfoChar(&buf, ')');
	}
	parity_append_order_by(&buf, c, off + 1);
	plan = SPI_prepare_cursor(buf.data, nargs, argtypes, 0);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * compare_rows
 *		Both sides have the key: compare each strict field, NULL equal to
 *		NULL only, and emit one mismatch per differing field.
 */
static void
compare_rows(ParityCtx *c, Stream *l, Stream *t)
{
	KeyRef		kr = {PSIDE_LEGACY, l, false, (Datum) 0};

	for (int i = c->nkeys; i < c->ncols; i++)
	{
		bool		ln = l->nulls[l->off + i];
		bool		tn = t->nulls[t->off + i];
		Datum		lv = l->vals[l->off + i];
		Datum		tv = t->vals[t->off + i];
		bool		same;

		if (ln || tn)
			same = ln && tn;
		else
			same = parity_values_equal(&c->cols[i], lv, tv);
		if (!same)
		{
			c->found[PK_MISMATCH]++;
			c->emit(c, PK_MISMATCH, &kr, i, lv, ln, tv, tn);
		}
	}
}

/*
 * merge_streams
 *		Walk two key-ordered streams in step and emit every difference.
 *		After a match only the legacy stream advances, so consecutive legacy
 *		rows with the same key (a non-injective key mapping) are each
 *		compared with the same target row; a matched target row is then
 *		passed over without being reported.
 */
static void
merge_streams(ParityCtx *c, Stream *l, Stream *t)
{
	bool		t_matched = false;

	stream_next(l);
	stream_next(t);
	while (l->valid || t->valid)
	{
		MemoryContext old;
		int			r;
		bool		adv_l = false;
		bool		adv_t = false;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(c->rowcxt);
		if (!t->valid)
			r = -1;
		else if (!l->valid)
			r = 1;
		else
			r = parity_key_cmp(c, &l->vals[l->off], &t->vals[t->off]);

		if (r < 0)
		{
			if (!(c->nq > 0 && parity_is_quarantined(c, &l->vals[l->off])))
			{
				KeyRef		kr = {PSIDE_LEGACY, l, false, (Datum) 0};

				c->found[PK_MISSING_IN_TARGET]++;
				c->emit(c, PK_MISSING_IN_TARGET, &kr, -1, 0, true, 0, true);
			}
			adv_l = true;
		}
		else if (r > 0)
		{
			if (!t_matched && !(c->nq > 0 && parity_is_quarantined(c, &t->vals[t->off])))
			{
				KeyRef		kr = {PSIDE_TARGET, t, false, (Datum) 0};

				c->found[PK_MISSING_IN_LEGACY]++;
				c->emit(c, PK_MISSING_IN_LEGACY, &kr, -1, 0, true, 0, true);
			}
			adv_t = true;
		}
		else
		{
			if (!(c->nq > 0 && parity_is_quarantined(c, &l->vals[l->off])))
				compare_rows(c, l, t);
			adv_l = true;
			t_matched = true;
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(c->rowcxt);
		if (adv_l)
			stream_next(l);
		if (adv_t)
		{
			stream_next(t);
			t_matched = false;
		}
	}
}

/*
 * bound_params
 *		Fill parameter values from chunk bounds (lo then hi, either absent).
 */
static int
bound_params(ParityCtx *c, Datum *lo, Datum *hi, Datum *values, char *nulls)
{
	int			n = 0;

	if (lo)
		for (int i = 0; i < c->nkeys; i++)
		{
			values[n] = lo[i];
			nulls[n++] = ' ';
		}
	if (hi)
		for (int i = 0; i < c->nkeys; i++)
		{
			values[n] = hi[i];
			nulls[n++] = ' ';
		}
	return n;
}

/*
 * parity_compare_range
 *		Phase 2 for one key range (lo_mode/hi_mode select the bound kinds):
 *		stream both sides and merge.  Plans are built on first use and kept
 *		for the rest of the call in plans[side][lo][hi].
 */
void
parity_compare_range(ParityCtx *c, SPIPlanPtr plans[2][3][2], int lo_mode, Datum *lo,
					 int hi_mode, Datum *hi)
{
	Stream		l;
	Stream		t;
	Datum	   *values = palloc(sizeof(Datum) * 2 * c->nkeys);
	char	   *nulls = palloc(sizeof(char) * 2 * c->nkeys);

	for (int s = 0; s < 2; s++)
		if (plans[s][lo_mode][hi_mode] == NULL)
			plans[s][lo_mode][hi_mode] = range_plan(c, s, lo_mode, hi_mode);
	(void) bound_params(c, lo_mode == LO_NONE ? NULL : lo, hi_mode == HI_NONE ? NULL : hi,
						values, nulls);
	stream_open(c, &l, list_length(c->lkeycols), c->lowner, plans[PSIDE_LEGACY][lo_mode][hi_mode], values, nulls);
	stream_open(c, &t, 0, c->towner, plans[PSIDE_TARGET][lo_mode][hi_mode], values, nulls);
	merge_streams(c, &l, &t);
	stream_close(&l);
	stream_close(&t);
	pfree(values);
	pfree(nulls);
}

/*
 * parity_null_key_rows
 *		Rows of one side whose key has a NULL can match nothing on the other
 *		side (NULL equals nothing).  A legacy row's is missing in the target,
 *		unless its entity is quarantined; a target row whose correlation key
 *		is NULL is an entity the target created on its own (a new-only
 *		entity, see the envelope), not a difference.  Counts them in
 *		c->nullkeys[side].
 */
void
parity_null_key_rows(ParityCtx *c, int side)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	Portal		portal;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT %s", side == PSIDE_LEGACY ? c->lkeyjson : c->tkeyjson);
	parity_append_from(&buf, c, side);
	appendStringInfoString(&buf, " WHERE ");
	for (int i = 0; i < c->nkeys; i++)
	{
		if (side == PSIDE_LEGACY)
			appendStringInfo(&buf, "%s%s IS NULL", i ? " OR " : "", c->cols[i].lexpr);
		else
			appendStringInfo(&buf, "%ssoftmig_t.%s IS NULL", i ? " OR " : "",
							 quote_identifier(c->cols[i].name));
	}
	plan = SPI_prepare(buf.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	c->nullkeys[side] = 0;
	for (;;)
	{
		SPI_cursor_fetch(portal, true, PARITY_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			KeyRef		kr = {side, NULL, true, (Datum) 0};
			ParityKind	kind = side == PSIDE_LEGACY ? PK_MISSING_IN_TARGET : PK_MISSING_IN_LEGACY;

			c->nullkeys[side]++;

			/*
			 * the target's own entity: no legacy row correlates, no
			 * difference
			 */
			if (side == PSIDE_TARGET)
				continue;
			kr.key = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
			if (c->apply_quarantine && c->nqjson > 0 && parity_is_quarantined_json(c, kr.key))
				continue;
			c->found[kind]++;
			c->emit(c, kind, &kr, -1, 0, true, 0, true);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/*
 * parity_chunk_differs
 *		Do the two sides of a chunk differ in count, primary digest (masked
 *		to softmig.parity_digest_bits) or guard digest?
 */
bool
parity_chunk_differs(ParityCtx *c, PChunk *ch)
{
	return ch->n[0] != ch->n[1] ||
		((ch->d1[0] - ch->d1[1]) & c->d1mask) != 0 ||
		ch->d2[0] != ch->d2[1];
}
