/*-------------------------------------------------------------------------
 *
 * parity.c
 *	  Structural parity: compare the legacy table, seen through the forward
 *	  mapping, with the target table, and report every difference exactly.
 *
 *	  The comparison happens in the target's shape on the strict fields:
 *	  every forward-mapped target column except the correlation key (rows
 *	  are matched on it), divergent columns and new_only columns.  Entities
 *	  listed by softmig._quarantined_keys are skipped on both sides.
 *
 *	  Three steps:
 *
 *	  0. Chunks.  The key space is cut into ranges of about chunk_rows rows
 *	     by quantiles of a repeatable block sample of the target's keys (the
 *	     legacy side's mapped keys when the target is empty).  Any
 *	     increasing bounds give a correct answer; the sample only makes the
 *	     chunks even.
 *
 *	  1. Digest.  Each side is read once by one statement, SELECT
 *	     softmig.parity_digest(...) FROM side: a parallel-safe aggregate
 *	     that hashes every row into per-chunk row counts and two 64-bit sums
 *	     (a primary digest and an independent guard digest), so the planner
 *	     can scan and map in parallel workers and only the small state comes
 *	     back.  Rows too wide for one function call go through a
 *	     DestReceiver in this backend instead (same code, parity_acc_row).  With
 *	     the digest cache (paritywarm.c) a run whose tables
 *	     changed little since the last one reads only the segments that
 *	     changed and takes the other digests from softmig.parity_cache.
 *
 *	  2. Descent.  Only chunks whose count or either digest differ are read
 *	     again, both sides through cursors over the chunk's key range in key
 *	     order, and merged row by row: a key on one side only is missing on
 *	     the other, and a key on both is compared field by field with the
 *	     type's equality operator.  So every reported difference is
 *	     confirmed (no false positives), and memory is bounded by a fetch
 *	     batch.  The entity's key (legacy key as jsonb) is only computed for
 *	     rows that are reported.
 *
 *	  Exactness: a difference can only be missed if a chunk's count and
 *	  both of its digests match although the chunk differs.  The per-row
 *	  hashes are seeded with a random value per full pass (kept with the
 *	  cached digests, which only the catalog owner can read), so this is a
 *	  probability of about 2^-64 per differing chunk, for any data.  The
 *	  test hook softmig.parity_digest_bits keeps only the low N bits of the
 *	  primary digest (0 turns it off, and fixes the seed so runs repeat) to
 *	  force collisions; the guard digest then still sends the chunk into the
 *	  descent, which the regression tests check.
 *
 *	  Snapshot: every statement runs with read_only = true, i.e. under the
 *	  snapshot of the calling statement (REPEATABLE READ: of the
 *	  transaction), so both phases and both sides see one consistent state
 *	  and an in-flight mirrored write is never half seen.
 *
 *	  Security: the mapping expressions are the table owner's SQL.  They
 *	  run as the owner of the table being read (legacy side: the legacy
 *	  owner, target side: the target owner), never as the catalog owner and
 *	  never with the rights of whoever happens to call, in a
 *	  security-restricted operation with search_path pinned to pg_catalog,
 *	  pg_temp, row_security off and transaction_read_only on, so nothing
 *	  can be written.  Since that reads with the owners' rights, the caller
 *	  (the role that passed the ownership gate, or the current user) must be
 *	  allowed to read both tables itself: SELECT on each and no row-level
 *	  security policy that applies to it (softmig_check_read_access, 42501).
 *	  Only the quarantine list is read with the catalog owner's rights.
 *
 *	  The files, in the order of a run: paritybuild.c (what to compare,
 *	  the quarantine), parityhash.c (row hashes, digest state, chunk of a
 *	  key), paritydigest.c (step 0 and 1), paritywarm.c with paritycache.c
 *	  (the digest cache), paritydescent.c (step 2); parityinspect.c is
 *	  softmig.inspect (both sides of one entity).  parityint.h holds their
 *	  shared types; paritybuild.c also defines the observability GUCs.
 *	  Here: the run itself, softmig.parity (the SRF) and
 *	  softmig._parity_summary (counts and a sample, used by check and the
 *	  mirrored -> new_write guard).
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

static const char *const cache_mode_names[] = {"off", "full", "warm"};

const char *const parity_kind_names[] = {
	"missing_in_target", "missing_in_legacy", "mismatch"
};

/* ---------------------------------------------------------------------
 * A run: build, digests, descent
 * --------------------------------------------------------------------- */

/*
 * parity_error_context
 *		errcontext naming the migration being compared.
 */
static void
parity_error_context(void *arg)
{
	errcontext("comparing migration \"%s\" (softmig parity)", ((ParityCtx *) arg)->name);
}

/*
 * parity_enter
 *		Start running the user SQL of a comparison: errcb (the caller's,
 *		popped by the caller) names the migration in errors; raise 42501
 *		unless the actor may read both tables (what names the caller); then
 *		the read-only context as legacy's owner, whose saved state the
 *		caller restores with softmig_leave_readonly_context.
 */
void
parity_enter(ParityCtx *c, ErrorContextCallback *errcb, const char *what,
			 int *save_nest, Oid *save_user, int *save_sec, bool *save_ro)
{
	errcb->callback = parity_error_context;
	errcb->arg = c;
	errcb->previous = error_context_stack;
	error_context_stack = errcb;
	softmig_check_read_access(c->legacy, c->target, c->actor, what);
	softmig_enter_readonly_context(c->lowner, save_nest, save_user, save_sec, save_ro);
	c->run_sec = *save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION;
}

/*
 * run_parity_inner
 *		The whole comparison of migration "id": build, phase 1 on both
 *		sides, phase 2 on differing chunks, NULL-key rows.  Differences go
 *		to emit(arg).  Opens and closes its own SPI connection; runs the
 *		user SQL as the caller in the read-only context.  Returns the
 *		context (statistics), allocated in a child of the caller's memory
 *		context (c->cxt, which the caller may delete).
 */
static ParityCtx *
run_parity_inner(int32 id, int chunk_rows, ParityEmit emit, void *arg)
{
	ParityCtx  *c;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	ErrorContextCallback errcb;
	SPIPlanPtr	plans[2][3][2];
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "softmig parity",
											  ALLOCSET_DEFAULT_SIZES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	c = parity_build(id, chunk_rows, cxt);
	c->emit = emit;
	c->emit_arg = arg;
	memset(plans, 0, sizeof(plans));

	parity_enter(c, &errcb, "softmig.parity", &save_nest, &save_user, &save_sec, &save_ro);
	parity_load_quarantine(c);
	parity_cache_prepare(c);

	if (!(c->cache_on && parity_cache_try_warm(c)))
	{
		XLogRecPtr	start;

		/*
		 * a full pass (its digests are stored if the cache is on); stale_segs
		 * keep what a failed warm attempt found, the reason for this pass
		 */
		if (c->cache_on)
			c->cache_mode = PCM_FULL;
		for (int s = 0; s < 2; s++)
		{
			c->rows[s] = c->nullkeys[s] = c->qskipped[s] = 0;
			c->nents[s] = 0;
		}
		c->overflow = false;
		c->seed = c->acc.seed = c->fresh_seed;
		parity_choose_bounds(c);
		parity_as_role(c, c->lowner);
		parity_digest_pass(c, PSIDE_LEGACY);
		softmig_pause_point(softmig_parity_pause_lock, true, "parity");
		parity_as_role(c, c->towner);
		parity_digest_pass(c, PSIDE_TARGET);

		/*
		 * the page state the digests stand for, read after the passes (see
		 * paritycache.c): pages the passes pruned are not lost to the cache
		 */
		start = c->cache_on ? GetXLogInsertRecPtr() : InvalidXLogRecPtr;
		if (c->cache_on)
			for (int s = 0; s < 2; s++)
			{
				Relation	rel = table_open(s == PSIDE_LEGACY ? c->legacy : c->target, NoLock);
				MemoryContext old = MemoryContextSwitchTo(c->cxt);

				softmig_pc_read_pages(rel, start, GetActiveSnapshot(), &c->pages[s]);
				MemoryContextSwitchTo(old);
				table_close(rel, NoLock);
			}
	}

	for (int i = 0; i < c->nchunks; i++)
	{
		PChunk	   *ch = &c->chunks[i];
		Datum	   *lo = i > 0 ? c->chunks[i - 1].bound : NULL;

		if (!parity_chunk_differs(c, ch))
			continue;
		c->descended++;
		parity_compare_range(c, plans, lo ? LO_GT : LO_NONE, lo, ch->bound ? HI_LE : HI_NONE, ch->bound);
	}
	for (int s = 0; s < 2; s++)
		if (c->nullkeys[s] > 0)
		{
			parity_as_role(c, s == PSIDE_LEGACY ? c->lowner : c->towner);
			parity_null_key_rows(c, s);
		}

	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	parity_cache_store(c);
	error_context_stack = errcb.previous;
	SPI_finish();
	return c;
}

/*
 * run_parity
 *		run_parity_inner with reader discovery suppressed: parity's reads of
 *		both tables are softmig's, not an application reader's.
 */
static ParityCtx *
run_parity(int32 id, int chunk_rows, ParityEmit emit, void *arg)
{
	ParityCtx  *volatile c = NULL;

	softmig_discovery_suppress++;
	PG_TRY();
	{
		c = run_parity_inner(id, chunk_rows, emit, arg);
	}
	PG_FINALLY();
	{
		softmig_discovery_suppress--;
	}
	PG_END_TRY();
	return c;
}

/*
 * check_chunk_rows
 *		22023 unless 1 <= chunk_rows <= 10,000,000.
 */
static void
check_chunk_rows(int chunk_rows)
{
	if (chunk_rows < 1 || chunk_rows > 10000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("chunk_rows must be between 1 and 10000000, not %d", chunk_rows)));
}

/* ---------------------------------------------------------------------
 * softmig.parity: every difference as a row
 * --------------------------------------------------------------------- */

typedef struct SrfState
{
	Tuplestorestate *ts;
	TupleDesc	desc;
} SrfState;

/*
 * emit_tuplestore
 *		ParityEmit writing one result row (kind, key, field, legacy_value,
 *		target_value) into the SRF's tuplestore.
 */
static void
emit_tuplestore(ParityCtx *c, ParityKind kind, KeyRef *kr, int field,
				Datum lval, bool lnull, Datum tval, bool tnull)
{
	SrfState   *st = (SrfState *) c->emit_arg;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	values[0] = CStringGetTextDatum(parity_kind_names[kind]);
	values[1] = parity_key_of(c, kr);
	if (field < 0)
	{
		nulls[2] = nulls[3] = nulls[4] = true;
	}
	else
	{
		values[2] = CStringGetTextDatum(c->cols[field].name);
		if (lnull)
			nulls[3] = true;
		else
			values[3] = CStringGetTextDatum(parity_value_text(&c->cols[field], lval));
		if (tnull)
			nulls[4] = true;
		else
			values[4] = CStringGetTextDatum(parity_value_text(&c->cols[field], tval));
	}
	tuplestore_putvalues(st->ts, st->desc, values, nulls);
}

PG_FUNCTION_INFO_V1(softmig_parity);
/*
 * softmig_parity
 *		softmig.parity(name, chunk_rows): every difference between legacy
 *		(through the forward mapping) and the target on strict fields, in
 *		key order.  Read-only, as the caller, under the caller's snapshot;
 *		takes AccessShareLock on both tables.  Materialize mode (the
 *		tuplestore spills to disk beyond work_mem).
 */
Datum
softmig_parity(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SrfState	st;
	MemoryContext old;
	int32		id;
	int			chunk_rows;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("softmig.parity must be called in a context that accepts a set")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name and chunk_rows must not be null")));
	chunk_rows = PG_GETARG_INT32(1);
	check_chunk_rows(chunk_rows);
	id = softmig_migration_by_name(PG_GETARG_TEXT_PP(0), NULL, NULL);

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &st.desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "softmig.parity: return type must be a row type");
	st.desc = CreateTupleDescCopy(st.desc);
	st.ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);

	if (softmig_require_migration(id)->one_to_many)	/* sets per entity */
		softmig_otm_parity_rows(softmig_require_migration(id), st.ts, st.desc);
	else
		MemoryContextDelete(run_parity(id, chunk_rows, emit_tuplestore, &st)->cxt);

	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = st.ts;
	rsinfo->setDesc = st.desc;
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * softmig._parity_summary: counts and a bounded sample
 * --------------------------------------------------------------------- */

typedef struct SummaryState
{
	int			sample;
	StringInfoData samples[3];	/* JSON arrays in progress */
	int			nsample[3];
	uint64	   *per_field;		/* mismatches per column */
} SummaryState;

/*
 * emit_summary
 *		ParityEmit counting differences per field and keeping the first
 *		`sample` keys of each kind (with the field for mismatches).
 */
static void
emit_summary(ParityCtx *c, ParityKind kind, KeyRef *kr, int field,
			 Datum lval, bool lnull, Datum tval, bool tnull)
{
	SummaryState *st = (SummaryState *) c->emit_arg;
	MemoryContext old;
	char	   *keytext;

	if (field >= 0)
	{
		if (st->per_field == NULL)
			st->per_field = MemoryContextAllocZero(c->cxt, sizeof(uint64) * c->ncols);
		st->per_field[field]++;
	}
	if (st->nsample[kind] >= st->sample)
		return;
	keytext = JsonbToCString(NULL, &DatumGetJsonbP(parity_key_of(c, kr))->root, 0);
	old = MemoryContextSwitchTo(c->cxt);
	if (st->nsample[kind] > 0)
		appendStringInfoString(&st->samples[kind], ", ");
	if (field >= 0)
	{
		appendStringInfo(&st->samples[kind], "{\"key\": %s, \"field\": ", keytext);
		escape_json(&st->samples[kind], c->cols[field].name);
		appendStringInfoChar(&st->samples[kind], '}');
	}
	else
		appendStringInfoString(&st->samples[kind], keytext);
	st->nsample[kind]++;
	MemoryContextSwitchTo(old);
}

PG_FUNCTION_INFO_V1(softmig_parity_summary);
/*
 * softmig_parity_summary
 *		softmig._parity_summary(id, chunk_rows, sample) -> jsonb: counts per
 *		kind and per mismatched field, up to `sample` keys per kind, and the
 *		run's statistics.  Same rules as softmig.parity (read-only, as the
 *		caller); memory does not grow with the number of differences.
 */
Datum
softmig_parity_summary(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	int			chunk_rows = PG_GETARG_INT32(1);
	int			sample = PG_GETARG_INT32(2);
	SummaryState st;
	ParityCtx  *c;
	StringInfoData out;
	bool		first = true;
	MemoryContext holder;
	MemoryContext old;
	TimestampTz start = GetCurrentTimestamp();
	long		secs;
	int			usecs;

	check_chunk_rows(chunk_rows);
	if (sample < 0)
		sample = 0;
	if (softmig_require_migration(id)->one_to_many)	/* sets per entity */
		PG_RETURN_DATUM(softmig_otm_parity_summary(softmig_require_migration(id), sample));
	memset(&st, 0, sizeof(st));
	st.sample = sample;
	holder = AllocSetContextCreate(CurrentMemoryContext, "softmig parity summary",
								   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(holder);
	for (int k = 0; k < 3; k++)
		initStringInfo(&st.samples[k]);
	MemoryContextSwitchTo(old);

	c = run_parity(id, chunk_rows, emit_summary, &st);
	TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);

	initStringInfo(&out);
	appendStringInfo(&out, "{\"missing_in_target\": " UINT64_FORMAT
					 ", \"missing_in_legacy\": " UINT64_FORMAT
					 ", \"mismatch\": " UINT64_FORMAT ", \"mismatch_fields\": {",
					 c->found[0], c->found[1], c->found[2]);
	for (int i = c->nkeys; i < c->ncols; i++)
	{
		if (st.per_field == NULL || st.per_field[i] == 0)
			continue;
		if (!first)
			appendStringInfoString(&out, ", ");
		escape_json(&out, c->cols[i].name);
		appendStringInfo(&out, ": " UINT64_FORMAT, st.per_field[i]);
		first = false;
	}
	appendStringInfoString(&out, "}, \"sample\": {");
	for (int k = 0; k < 3; k++)
		appendStringInfo(&out, "%s\"%s\": [%s]", k ? ", " : "", parity_kind_names[k],
						 st.samples[k].data);
	appendStringInfo(&out, "}, \"compared_fields\": [");
	for (int i = c->nkeys; i < c->ncols; i++)
	{
		if (i > c->nkeys)
			appendStringInfoString(&out, ", ");
		escape_json(&out, c->cols[i].name);
	}
	appendStringInfo(&out, "], \"rows_legacy\": " UINT64_FORMAT ", \"rows_target\": " UINT64_FORMAT
					 ", \"quarantined_rows_skipped\": " UINT64_FORMAT
					 ", \"chunks\": %d, \"chunks_descended\": " UINT64_FORMAT
					 ", \"chunk_rows\": %d, \"digest_bits\": %d, \"ms\": %ld, \"cache\": {\"mode\": \"%s\"",
					 c->rows[0] + c->nullkeys[0], c->rows[1] + c->nullkeys[1],
					 c->qskipped[0] + c->qskipped[1],
					 c->nchunks, c->descended, c->chunk_rows, c->digest_bits,
					 secs * 1000 + usecs / 1000, cache_mode_names[c->cache_mode]);
	if (c->cache_mode != PCM_WARM)
	{
		appendStringInfoString(&out, ", \"why\": ");
		escape_json(&out, c->cache_why ? c->cache_why : "");
	}
	if (c->cache_mode != PCM_OFF)
		appendStringInfo(&out, ", \"stored\": %s, \"stale_segments\": [" UINT64_FORMAT ", " UINT64_FORMAT "]",
						 c->stored ? "true" : "false", c->stale_segs[0], c->stale_segs[1]);
	appendStringInfoString(&out, "}}");
	MemoryContextDelete(c->cxt);
	MemoryContextDelete(holder);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
