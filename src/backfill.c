/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  One step of a race-safe backfill: copy legacy rows that the target
 *	  lacks, without ever overwriting a live write, resurrecting a deleted
 *	  row or leaving a row out.  The orchestration (checkpoints, phases,
 *	  commits between batches) is SQL (src/install/60_backfill.sql); every step
 *	  that touches user data is here, with cached plans.
 *
 *	  Why it is safe (doc/backfill.md has the long version):
 *
 *	  - Live writes in state mirrored upsert into the target in the same
 *	    transaction, so any row written after mirroring began is already
 *	    there, fresher than anything the backfill could read.
 *	  - The delete fence: every live statement that deletes legacy rows or
 *	    changes their key takes a heavyweight lock on the migration (ROW
 *	    EXCLUSIVE, not self-conflicting) before it carries that to the
 *	    target, and holds it to its commit.  A batch tries the same lock in
 *	    SHARE mode before it reads (never waiting, so it never queues in
 *	    front of live writers) and holds it to its commit.  With it, a
 *	    delete committed before the batch took the fence is not read, and
 *	    any other delete reaches the target after the batch committed, so
 *	    its mirror deletes the copied row: the batch reads without row
 *	    locks.  Its waits for live writers are bounded by a short
 *	    lock_timeout (deleters wait for the batch meanwhile).
 *	  - Without the fence (a deleting transaction is open), the batch locks
 *	    the rows it copies FOR KEY SHARE SKIP LOCKED.  That lock conflicts
 *	    with DELETE and key-changing UPDATE: a row deleted while the batch
 *	    runs is either locked first (the delete then waits for the batch
 *	    and deletes the copied row through the mirror) or already gone
 *	    (never copied); rows it skipped are revisited.  No resurrection
 *	    either way, and the backfill progresses under any delete load.
 *	    Its copy's lock waits are bounded too: a live transaction that
 *	    wrote a target row the copy meets may next want to delete or
 *	    re-key a legacy row the batch holds (a deadlock); the batch gives
 *	    way, commits (releasing its row locks) and is retried.  So does the
 *	    removal of stale target rows.  A backfill never fails with 40P01.
 *	  - The copy is INSERT .. ON CONFLICT DO UPDATE .. WHERE the target row
 *	    was written before mirroring began (its xmin is visible in the
 *	    snapshot taken at the switch to mirrored).  A row the live path
 *	    wrote, committed or not, is never overwritten (speculative insertion
 *	    waits for an in-progress writer); a stale row left by an earlier
 *	    mirroring epoch is corrected.  No clock is involved.
 *	  - A final anti-join sweep proves nothing is missing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"

#include "softmig.h"
#include "backfillint.h"

/* Test hook: advisory lock taken between reading and writing a batch. */
int			softmig_backfill_pause_lock = 0;

/*
 * softmig_backfill_init
 *		Define the backfill's GUC (a test hook, superuser only).  Called once
 *		from _PG_init; no locks.
 */
void
softmig_backfill_init(void)
{
	DefineCustomIntVariable("softmig.backfill_pause_lock",
							"Test hook: advisory lock a backfill batch waits for between reading and writing.",
							"0 disables it.  For isolation tests only.",
							&softmig_backfill_pause_lock,
							0, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
}

#define BF_ENR "softmig_batch"

/*
 * At most this many legacy key columns (checked by softmig_backfill_step):
 * last_key() passes one parameter per key column.
 */
#define BF_MAX_KEY_COLUMNS 60

/* batches of this session that use row locks after the fence stalled writers */
#define BF_FENCE_PAUSE 16
static int	bf_fence_pause = 0;

/* the migration bf_fence_pause and bf_plain_pause were set for */
static int32 bf_pause_migration = 0;

/*
 * fence_batch
 *		Try to take the delete fence for one backfill batch (fence.c).  Never
 *		waits.  After the fence stalled writers (fence_done), the next
 *		BF_FENCE_PAUSE batches of this session do not try it and use row
 *		locks instead.  The test hook freezes batches on purpose, which
 *		would make every writer that meets one look like delete load: with
 *		it set, always try.
 */
static bool
fence_batch(int32 migration_id)
{
	if (bf_fence_pause > 0 && softmig_backfill_pause_lock == 0)
	{
		bf_fence_pause--;
		return false;
	}
	return softmig_fence_try_batch(migration_id);
}

/*
 * fence_done
 *		At the end of a batch that held the fence: if a live delete or key
 *		change is waiting for it (or the copy timed out behind a writer), the
 *		workload deletes while we copy, and holding the fence stalls it:
 *		run the next BF_FENCE_PAUSE batches of this session with row locks
 *		instead, which only make writers of the batch's own rows wait.
 */
static void
fence_done(int32 migration_id, bool busy)
{
	if (softmig_backfill_pause_lock == 0 &&
		(busy || softmig_fence_has_waiters(migration_id)))
		bf_fence_pause = BF_FENCE_PAUSE;
}

/* >0 while a backfill step (and so perhaps one of our plans) runs */
static int	bf_step_depth = 0;


/*
 * softmig_bf_context
 *		Gather names, types and mappings for migration m.  Locks both tables
 *		AccessShareLock (via softmig_build_dest).
 */
BfContext *
softmig_bf_context(SoftmigMigration *m)
{
	BfContext  *c = palloc0(sizeof(BfContext));
	Relation	rel;
	TupleDesc	desc;
	StringInfoData buf;
	ListCell   *lc;
	int			i;

	c->m = m;
	c->legacy = softmig_qualified_relname(m->legacy);
	c->target = softmig_qualified_relname(m->target);
	c->lkeys = m->legacy_key;
	c->fwd = softmig_build_dest(m, SIDE_LEGACY);
	c->bwd = softmig_build_dest(m, SIDE_TARGET);
	softmig_merge_backfill_prepare(m, c->fwd, BF_ENR, &c->merge_lock, &c->merge_refresh);
	c->ltypes = c->bwd->keytypes;

	rel = table_open(m->legacy, AccessShareLock);
	desc = RelationGetDescr(rel);
	initStringInfo(&buf);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		appendStringInfo(&buf, "%s%s", buf.len ? ", " : "",
						 quote_identifier(NameStr(att->attname)));
	}
	c->cols = buf.data;

	initStringInfo(&buf);
	foreach(lc, c->lkeys)
		appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", quote_identifier(lfirst(lc)));
	c->keylist = buf.data;

	/* positions of the key columns in the select list built from cols */
	initStringInfo(&buf);
	foreach(lc, c->lkeys)
	{
		int			pos = 0;

		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped)
				continue;
			pos++;
			if (strcmp(NameStr(att->attname), lfirst(lc)) == 0)
				appendStringInfo(&buf, "%s%d", buf.len ? ", " : "", pos);
		}
	}
	c->keypos = buf.data;
	table_close(rel, NoLock);

	c->keyjson = softmig_json_object_sql(c->lkeys, softmig_quoted_idents(c->lkeys, ""));
	return c;
}

/*
 * softmig_bf_append_key_values
 *		"(SELECT softmig_b.k1 FROM pg_catalog.jsonb_to_record($n) AS
 *		softmig_b(k1 t1, k2 t2)), ...": the values of a key jsonb parameter
 *		$n, one per key column, each read as its column's type the way
 *		jsonb_populate_record reads it (strings through the type's input
 *		function, objects into composites, arrays into arrays), so every key
 *		softmig stores as jsonb comes back exactly.  Each is an initplan, so
 *		a row comparison with them can use an index.
 */
void
softmig_bf_append_key_values(StringInfo buf, BfContext *c, int param)
{
	StringInfoData cols;
	ListCell   *k;
	ListCell   *t;
	int			i = 0;

	initStringInfo(&cols);
	forboth(k, c->lkeys, t, c->ltypes)
		appendStringInfo(&cols, "%s%s %s", cols.len ? ", " : "",
						 quote_identifier(lfirst(k)), (char *) lfirst(t));
	foreach(k, c->lkeys)
		appendStringInfo(buf, "%s(SELECT softmig_b.%s FROM pg_catalog.jsonb_to_record($%d) AS softmig_b(%s))",
						 i++ ? ", " : "", quote_identifier(lfirst(k)), param, cols.data);
	pfree(cols.data);
}

/*
 * softmig_bf_append_row_bound
 *		"ROW(k1, k2) <op> ROW(<the key in jsonb parameter $n>)", using
 *		parameter *param and advancing it.
 */
void
softmig_bf_append_row_bound(StringInfo buf, BfContext *c, const char *op, int *param)
{
	appendStringInfo(buf, "ROW(%s) %s ROW(", c->keylist, op);
	softmig_bf_append_key_values(buf, c, (*param)++);
	appendStringInfoChar(buf, ')');
}

/*
 * softmig_bf_bound_values
 *		Check that a key jsonb object has a non-null value for every key
 *		column (22023 otherwise) and append it as one jsonb parameter at
 *		values[*n].
 */
void
softmig_bf_bound_values(BfContext *c, Jsonb *key, Datum *values, char *nulls, int *n)
{
	ListCell   *lc;

	if (!JB_ROOT_IS_OBJECT(key) || JB_ROOT_IS_SCALAR(key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a key must be a jsonb object of the legacy key columns")));
	foreach(lc, c->lkeys)
	{
		JsonbValue	k;
		JsonbValue *v;

		k.type = jbvString;
		k.val.string.val = lfirst(lc);
		k.val.string.len = strlen(lfirst(lc));
		v = findJsonbValueFromContainer(&key->root, JB_FOBJECT, &k);
		if (v == NULL || v->type == jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("backfill cursor lacks key column \"%s\"", (char *) lfirst(lc))));
	}
	values[*n] = JsonbPGetDatum(key);
	nulls[*n] = ' ';
	(*n)++;
}

/*
 * After a batch's plain INSERT hit a key the target already had, this many
 * following batches of this backend go straight to the upsert (a backfill
 * racing live inserts tends to meet them in runs).
 */
#define BF_PLAIN_PAUSE 16
static int	bf_plain_pause = 0;

/*
 * copy_rows
 *		Insert the rows now in SPI_tuptable (legacy rows) into the target
 *		through the forward mapping: plainly when none of their keys is
 *		there yet (a plain INSERT in a subtransaction), else by an upsert
 *		that overwrites only rows written before mirroring began.
 *		Returns the number of target rows inserted or corrected.
 */
static uint64
copy_rows(BfContext *c, Datum snap, bool snap_null, Datum snap_xid, bool snap_xid_null)
{
	SPITupleTable *tt = SPI_tuptable;
	uint64		n = SPI_processed;
	TupleDesc	desc;
	Tuplestorestate *ts;
	StringInfoData buf;
	ListCell   *lc;
	int			i;
	Oid			argtypes[2] = {PG_SNAPSHOTOID, XID8OID};
	Datum		values[2];
	char		nulls[2];
	int			rc;

	if (n == 0)
		return 0;

	/* the rows are legacy's columns, in order: store them as they are */
	desc = CreateTupleDescCopy(tt->tupdesc);
	ts = tuplestore_begin_heap(false, false, work_mem);
	for (uint64 r = 0; r < n; r++)
		tuplestore_puttuple(ts, tt->vals[r]);

	softmig_spi_register_rows(BF_ENR, InvalidOid, desc, ts, (int64) n);

	/*
	 * a member of a merge: the batch's entities are locked as a live
	 * projection into the target locks them; an attribute member's copy
	 * writes its columns of the rows the owner created (never a row)
	 */
	if (c->merge_lock != NULL)
		softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(c->m, c->merge_lock, 0, NULL),
											NULL, NULL, false, 0),
						   SPI_OK_SELECT, "lock the entities of a merge");
	if (c->merge_refresh != NULL)
	{
		softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(c->m, c->merge_refresh, 0, NULL),
											NULL, NULL, false, 0),
						   SPI_OK_UPDATE, "copy an attribute member's columns into the target");
		n = SPI_processed;
		SPI_unregister_relation(BF_ENR);
		tuplestore_end(ts);
		return n;
	}

	initStringInfo(&buf);
	softmig_append_mapped_insert(&buf, c->target, "softmig_t",
								 list_concat_copy(c->fwd->cols, c->fwd->gather_cols),
								 list_concat_copy(c->fwd->exprs, c->fwd->gather_exprs));
	appendStringInfo(&buf, " FROM %s%s", BF_ENR, c->fwd->gather_joins ? c->fwd->gather_joins : "");

	/*
	 * Most batches meet no key the target already has: insert them plainly
	 * (speculative insertion costs about 1.5x a plain insert, see
	 * bench/RESULTS.md) and keep the upsert for batches that do.
	 */
	if (bf_plain_pause > 0)
		bf_plain_pause--;
	else if (softmig_spi_try(softmig_cached_plan(c->m, buf.data, 0, NULL), NULL, NULL, NULL, false,
							 SPI_OK_INSERT, softmig_unique_violation) == NULL)
	{
		n = SPI_processed;
		SPI_unregister_relation(BF_ENR);
		tuplestore_end(ts);
		return n;
	}
	else
		bf_plain_pause = BF_PLAIN_PAUSE;

	appendStringInfoString(&buf, " ON CONFLICT (");
	i = 0;
	foreach(lc, c->fwd->keycols)
		appendStringInfo(&buf, "%s%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
	appendStringInfoString(&buf, ") DO ");
	if (softmig_append_conflict_update(&buf, c->fwd->cols, c->fwd->keycols, c->fwd->always_cols) > 0)
	{
		/*
		 * correct only rows written before mirroring began, and only if they
		 * differ
		 */
		appendStringInfoString(&buf, " WHERE softmig._written_before(softmig_t.xmin, $1, $2) AND ROW(");
		i = 0;
		foreach(lc, c->fwd->cols)
			appendStringInfo(&buf, "%ssoftmig_t.%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
		appendStringInfoString(&buf, ") IS DISTINCT FROM ROW(");
		i = 0;
		foreach(lc, c->fwd->cols)
			appendStringInfo(&buf, "%sEXCLUDED.%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
		appendStringInfoChar(&buf, ')');
	}

	values[0] = snap;
	nulls[0] = snap_null ? 'n' : ' ';
	values[1] = snap_xid;
	nulls[1] = snap_xid_null ? 'n' : ' ';
	rc = SPI_execute_plan(softmig_cached_plan(c->m, buf.data, 2, argtypes), values, nulls, false, 0);
	softmig_spi_expect(rc, SPI_OK_INSERT, "copy rows into the target");
	n = SPI_processed;
	SPI_unregister_relation(BF_ENR);
	tuplestore_end(ts);
	return n;
}

/* One bounded unit of a batch: the copy, or one prepared statement. */
typedef struct BoundedCopy
{
	BfContext  *c;
	SPITupleTable *tt;			/* the batch's rows */
	uint64		n;
	Datum		snap;
	bool		snap_null;
	Datum		snap_xid;
	bool		snap_xid_null;
	const char *lock_timeout;
	uint64		copied;			/* rows copied, or processed by plan */
	SPIPlanPtr	plan;			/* instead of the copy: run this */
	Datum	   *values;			/* its parameters */
	char	   *nulls;
	int			expect;			/* its SPI result code */
} BoundedCopy;

/*
 * bounded_copy_run
 *		copy_rows_bounded's body, run in a subtransaction: lower lock_timeout
 *		at a new GUC nest level (restored on success here, on error by the
 *		subtransaction's rollback) and copy, or run b->plan.
 */
static void
bounded_copy_run(void *arg)
{
	BoundedCopy *b = (BoundedCopy *) arg;
	int			nest = NewGUCNestLevel();

	(void) set_config_option("lock_timeout", b->lock_timeout, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (b->plan)
	{
		softmig_spi_expect(SPI_execute_plan(b->plan, b->values, b->nulls, false, 0), b->expect,
						   "remove stale target rows");
		b->copied = SPI_processed;
	}
	else
	{
		SPI_tuptable = b->tt;
		SPI_processed = b->n;
		b->copied = copy_rows(b->c, b->snap, b->snap_null, b->snap_xid, b->snap_xid_null);
	}
	AtEOXact_GUC(true, nest);
}

/*
 * lock_not_available
 *		softmig_subxact_try's tolerated: lock_timeout expired, or the batch
 *		was chosen to break a deadlock (it waits less than deadlock_timeout,
 *		so normally the other side's check finds the cycle, but a session
 *		may run with a longer deadlock_timeout than the batch's).
 */
static bool
lock_not_available(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED;
}

/*
 * bounded_timeout
 *		The lock_timeout of a bounded unit: half of deadlock_timeout, at most
 *		500 ms, never above the session's own, written into setting.
 */
static void
bounded_timeout(char *setting, size_t len)
{
	int			ms = Max(1, Min(DeadlockTimeout / 2, 500));

	if (LockTimeout > 0 && LockTimeout < ms)
		ms = LockTimeout;
	snprintf(setting, len, "%d", ms);
}

/*
 * copy_rows_bounded
 *		copy_rows (of the rows in SPI_tuptable) in a subtransaction whose
 *		lock waits are bounded.  With the delete fence, while the batch
 *		waits for a live writer (whose mirrored row it meets in the target)
 *		live deletes wait for it too; without it, the batch holds KEY SHARE
 *		locks on the legacy rows it read, which a live transaction that
 *		wrote one of the target rows the copy meets may want next (a
 *		deadlock).  lock_timeout is lowered (bounded_timeout); when it
 *		expires, or the batch is chosen to break a deadlock, the batch's
 *		writes are rolled back and false is returned, so the caller reports
 *		the batch busy: it commits (releasing its row locks) and is retried.
 *		Waiting less than deadlock_timeout also makes the batch, not the live
 *		transaction, give way when the two wait for each other.  On success
 *		*copied is set.
 */
static bool
copy_rows_bounded(BfContext *c, Datum snap, bool snap_null, Datum snap_xid,
				  bool snap_xid_null, uint64 *copied)
{
	char		setting[32];
	BoundedCopy b = {c, SPI_tuptable, SPI_processed, snap, snap_null, snap_xid,
	snap_xid_null, setting, 0, NULL, NULL, NULL, 0};

	bounded_timeout(setting, sizeof(setting));
	if (softmig_subxact_try(bounded_copy_run, &b, lock_not_available) != NULL)
	{
		/* the batch relation may still be registered: drop it */
		(void) SPI_unregister_relation(BF_ENR);
		return false;
	}
	*copied = b.copied;
	return true;
}

/*
 * plan_bounded
 *		Run a prepared statement (which must return SPI code expect) in a
 *		subtransaction with bounded lock waits, as copy_rows_bounded does.
 *		False when it gave way (nothing it did is left); else *processed.
 */
static bool
plan_bounded(SPIPlanPtr plan, Datum *values, char *nulls, int expect, uint64 *processed)
{
	char		setting[32];
	BoundedCopy b = {NULL, NULL, 0, (Datum) 0, true, (Datum) 0, true, setting, 0,
	plan, values, nulls, expect};

	bounded_timeout(setting, sizeof(setting));
	if (softmig_subxact_try(bounded_copy_run, &b, lock_not_available) != NULL)
		return false;
	*processed = b.copied;
	return true;
}

/*
 * busy_result
 *		The summary of a next, range or sweep step that copied nothing
 *		because the delete fence was held or the copy timed out: "busy" for
 *		this version's SQL, and for the SQL of 0.1.0 (still installed between
 *		a library upgrade and ALTER EXTENSION UPDATE) values that make it
 *		retry the same step: next keeps its cursor (lo), range keeps its
 *		revisit range, sweep reports nothing locked (it then waits).
 */
static void
busy_result(StringInfo res, const char *op, Jsonb *lo)
{
	appendStringInfoString(res, "{\"read\": 0, \"copied\": 0, \"busy\": true");
	if (strcmp(op, "next") == 0)
	{
		appendStringInfoString(res, ", \"locked\": 1, \"skipped\": 0, \"tail_skipped\": 0");
		if (lo)
			appendStringInfo(res, ", \"last_key\": %s", JsonbToCString(NULL, &lo->root, VARSIZE(lo)));
	}
	else if (strcmp(op, "range") == 0)
		appendStringInfoString(res, ", \"locked\": 0, \"skipped\": 1, \"tail_skipped\": 0");
	else
		appendStringInfoString(res, ", \"locked\": 0");
	appendStringInfoChar(res, '}');
}

/*
 * count_range
 *		How many legacy rows are visible now with lo < key <= hi (NULL bounds:
 *		unbounded).
 */
static int64
count_range(BfContext *c, Jsonb *lo, Jsonb *hi)
{
	StringInfoData buf;
	Datum		values[64];
	char		nulls[64];
	Oid			argtypes[64];
	int			n = 0;
	int			param = 1;
	bool		isnull;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT pg_catalog.count(*) FROM %s WHERE true", c->legacy);
	if (lo)
	{
		appendStringInfoString(&buf, " AND ");
		softmig_bf_append_row_bound(&buf, c, ">", &param);
		softmig_bf_bound_values(c, lo, values, nulls, &n);
	}
	if (hi)
	{
		appendStringInfoString(&buf, " AND ");
		softmig_bf_append_row_bound(&buf, c, "<=", &param);
		softmig_bf_bound_values(c, hi, values, nulls, &n);
	}
	for (int i = 0; i < n; i++)
		argtypes[i] = JSONBOID;
	if (SPI_execute_plan(softmig_cached_plan(c->m, buf.data, n, argtypes), values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: backfill range count failed");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * missing_attributes_sql
 *		missing_keys_sql of an attribute member of a merge: the legacy keys
 *		whose entity the target holds with other values in the member's
 *		columns.  A legacy row whose entity the target lacks is no row
 *		missing: the owner's member decides whether an entity exists (its
 *		backfill gathers the attribute when it copies the entity).
 */
static char *
missing_attributes_sql(BfContext *c)
{
	StringInfoData buf;
	StringInfoData tv;
	StringInfoData sv;
	ListCell   *lc;
	ListCell   *le;
	int			v = 0;

	initStringInfo(&buf);
	initStringInfo(&tv);
	initStringInfo(&sv);
	appendStringInfo(&buf, "SELECT %s FROM (SELECT %s", c->keylist, c->keylist);
	forboth(lc, c->fwd->cols, le, c->fwd->exprs)
	{
		if (softmig_str_member(c->fwd->keycols, lfirst(lc)))
			continue;
		v++;
		appendStringInfo(&buf, ", (%s\n) AS softmig_a%d", (char *) lfirst(le), v);
		appendStringInfo(&tv, "%ssoftmig_t.%s", v > 1 ? ", " : "", quote_identifier(lfirst(lc)));
		appendStringInfo(&sv, "%ssoftmig_s.softmig_a%d", v > 1 ? ", " : "", v);
	}
	appendStringInfoString(&buf, ", ");
	softmig_append_key_list(&buf, c->fwd->keyexprs, c->fwd->keytypes);
	appendStringInfo(&buf, " FROM %s) AS softmig_s WHERE EXISTS (SELECT 1 FROM %s AS softmig_t WHERE ",
					 c->legacy, c->target);
	softmig_append_key_match(&buf, "softmig_t", c->fwd->keycols, c->fwd->keyops,
							 "softmig_s");
	appendStringInfo(&buf, " AND ROW(%s, NULL) IS DISTINCT FROM ROW(%s, NULL))", tv.data, sv.data);
	return buf.data;
}

/*
 * missing_keys_sql
 *		"(SELECT k... FROM (SELECT k..., (fk1)::t AS softmig_k1 FROM legacy)
 *		s WHERE NOT EXISTS (target row with that correlation key))": legacy
 *		keys the target lacks.  The derived table keeps the forward key
 *		expressions in a scope where only legacy columns are visible.
 */
static char *
missing_keys_sql(BfContext *c)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (c->merge_refresh != NULL)
		return missing_attributes_sql(c);
	appendStringInfo(&buf, "SELECT %s FROM (SELECT %s", c->keylist, c->keylist);
	appendStringInfoString(&buf, ", ");
	softmig_append_key_list(&buf, c->fwd->keyexprs, c->fwd->keytypes);
	appendStringInfo(&buf, " FROM %s) AS softmig_s WHERE NOT EXISTS (SELECT 1 FROM %s AS softmig_t WHERE ",
					 c->legacy, c->target);
	softmig_append_key_match(&buf, "softmig_t", c->fwd->keycols, c->fwd->keyops,
							 "softmig_s");
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * result_json
 *		Build the step's jsonb result from alternating key/value C strings
 *		(values are JSON literals).
 */
static Datum
result_json(const char *json)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

/*
 * last_key
 *		The backfill cursor: the legacy key of the last row in SPI_tuptable,
 *		as jsonb ({"k1": v1, ...}, built by jsonb_build_object from the key
 *		columns' values, as softmig stores keys everywhere).  Runs one cached
 *		SELECT; SPI_tuptable is then that SELECT's, and the caller restores
 *		its own.  The result is palloc'd in the caller's context.
 */
static Jsonb *
last_key(BfContext *c)
{
	SPITupleTable *tt = SPI_tuptable;
	HeapTuple	last;
	Datum		values[BF_MAX_KEY_COLUMNS];
	char		nulls[BF_MAX_KEY_COLUMNS];
	Oid			types[BF_MAX_KEY_COLUMNS];
	List	   *params = NIL;
	char	   *sql;
	ListCell   *lc;
	int			k = 0;
	bool		isnull;
	Datum		d;

	if (SPI_processed == 0)
		elog(ERROR, "softmig: no row to take the backfill cursor from");
	last = tt->vals[SPI_processed - 1];
	foreach(lc, c->lkeys)
	{
		int			att = SPI_fnumber(tt->tupdesc, lfirst(lc));

		if (att <= 0)
			elog(ERROR, "softmig: key column \"%s\" missing from a backfill batch",
				 (char *) lfirst(lc));
		values[k] = SPI_getbinval(last, tt->tupdesc, att, &isnull);
		nulls[k] = isnull ? 'n' : ' ';
		types[k] = SPI_gettypeid(tt->tupdesc, att);
		params = lappend(params, psprintf("$%d", k + 1));
		k++;
	}
	sql = psprintf("SELECT %s", softmig_json_object_sql(c->lkeys, params));
	if (SPI_execute_plan(softmig_cached_plan(c->m, sql, k, types), values, nulls, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "softmig: building the backfill cursor failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "softmig: backfill cursor key is null");
	return DatumGetJsonbPCopy(d);
}

/*
 * One backfill step (softmig_backfill_step): its arguments, the migration,
 * and the jsonb summary the operation appends to res.
 */
typedef struct BfStep
{
	int32		id;
	const char *op;
	int32		batch;
	Jsonb	   *lo;				/* exclusive lower bound, or NULL */
	Jsonb	   *hi;				/* inclusive upper bound (range), or NULL */
	Datum		snap;			/* snapshot taken at the switch to mirrored */
	bool		snap_null;
	Datum		snap_xid;
	bool		snap_xid_null;
	SoftmigMigration *m;
	BfContext  *c;
	StringInfoData res;
} BfStep;

/*
 * Parameters of a next or range read: the lower bound, the upper bound and
 * the LIMIT (a bound is one jsonb parameter, whatever the number of key
 * columns).
 */
#define BF_READ_PARAMS 3

/*
 * step_copy
 *		Copy the nread rows a step read (batch, SPI_tuptable of its read,
 *		which statements run meanwhile replace), after the test hook's
 *		pause point; with the fence held, note whether writers waited for
 *		it.  Returns true when the copy gave way to a writer (busy).
 */
static bool
step_copy(BfStep *st, SPITupleTable *batch, uint64 nread, bool fenced, uint64 *copied)
{
	bool		busy;

	softmig_pause_point(softmig_backfill_pause_lock, false, "backfill");
	SPI_tuptable = batch;
	SPI_processed = nread;
	busy = !copy_rows_bounded(st->c, st->snap, st->snap_null, st->snap_xid,
							  st->snap_xid_null, copied);
	if (fenced)
		fence_done(st->id, busy);
	return busy;
}

/*
 * step_next_range
 *		The next and range operations: read up to batch rows with key > lo
 *		(next) or the rows with lo < key <= hi (range), then copy them.
 */
static void
step_next_range(BfStep *st)
{
	BfContext  *c = st->c;
	bool		is_range = (st->op[0] == 'r');
	bool		fenced = fence_batch(st->id);
	StringInfoData buf;
	Datum		values[BF_READ_PARAMS];
	char		nulls[BF_READ_PARAMS];
	Oid			argtypes[BF_READ_PARAMS];
	int			n = 0;
	int			param = 1;
	uint64		nread;
	uint64		copied = 0;
	bool		busy = false;
	Jsonb	   *last = NULL;
	int64		visible = 0;
	int64		tail_skipped = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT %s FROM %s WHERE true", c->cols, c->legacy);
	if (st->lo)
	{
		appendStringInfoString(&buf, " AND ");
		softmig_bf_append_row_bound(&buf, c, ">", &param);
		softmig_bf_bound_values(c, st->lo, values, nulls, &n);
	}
	if (is_range && st->hi)
	{
		appendStringInfoString(&buf, " AND ");
		softmig_bf_append_row_bound(&buf, c, "<=", &param);
		softmig_bf_bound_values(c, st->hi, values, nulls, &n);
	}
	appendStringInfo(&buf, " ORDER BY %s", c->keypos);
	if (!is_range)
	{
		appendStringInfo(&buf, " LIMIT $%d", param++);
		values[n] = Int32GetDatum(st->batch);
		nulls[n] = ' ';
	}
	for (int i = 0; i < n; i++)
		argtypes[i] = JSONBOID;
	if (!is_range)
		argtypes[n++] = INT4OID;
	if (!fenced)
		appendStringInfoString(&buf, " FOR KEY SHARE SKIP LOCKED");

	if (SPI_execute_plan(softmig_cached_plan(c->m, buf.data, n, argtypes), values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: backfill read failed");
	nread = SPI_processed;
	if (!fenced && !is_range && nread < (uint64) st->batch)
	{
		/*
		 * Row-lock path, end of the table.  Rows beyond the last locked key
		 * that it skipped (a live writer held them) must be revisited too:
		 * report them as an open-ended tail.
		 */
		SPITupleTable *keep = SPI_tuptable;
		uint64		kept = SPI_processed;

		tail_skipped = count_range(c, (kept > 0) ? last_key(c) : st->lo, NULL);
		SPI_tuptable = keep;
		SPI_processed = kept;
	}
	if (nread > 0)
	{
		SPITupleTable *keep = SPI_tuptable;

		last = is_range ? NULL : last_key(c);
		busy = step_copy(st, keep, nread, fenced, &copied);
		if (fenced)
			visible = nread;	/* nothing locked, nothing skipped */
		else if (!busy)
			visible = count_range(c, st->lo, is_range ? st->hi : last);
	}
	else if (is_range && !fenced)
		visible = count_range(c, st->lo, st->hi);
	if (busy)
		busy_result(&st->res, st->op, st->lo);
	else
	{
		/* "locked" etc. as in 0.1.0, whose SQL may still be installed */
		appendStringInfo(&st->res, "{\"read\": " UINT64_FORMAT ", \"locked\": " UINT64_FORMAT
						 ", \"copied\": " UINT64_FORMAT ", \"skipped\": " INT64_FORMAT
						 ", \"tail_skipped\": " INT64_FORMAT ", \"fenced\": %s",
						 nread, nread, copied,
						 visible > (int64) nread ? visible - (int64) nread : 0,
						 tail_skipped, fenced ? "true" : "false");
		if (last)
			appendStringInfo(&st->res, ", \"last_key\": %s",
							 JsonbToCString(NULL, &last->root, VARSIZE(last)));
		appendStringInfoChar(&st->res, '}');
	}
}

/*
 * step_sweep
 *		The sweep operation: copy up to batch legacy rows the target lacks.
 */
static void
step_sweep(BfStep *st)
{
	BfContext  *c = st->c;
	bool		fenced = fence_batch(st->id);
	StringInfoData buf;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	char		nulls[1] = {' '};
	uint64		nread;
	uint64		copied = 0;
	bool		busy = false;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT %s FROM %s WHERE ROW(%s) IN (%s ORDER BY %s LIMIT $1) "
					 "ORDER BY %s%s",
					 c->cols, c->legacy, c->keylist, missing_keys_sql(c),
					 c->keylist, c->keypos, fenced ? "" : " FOR KEY SHARE SKIP LOCKED");
	values[0] = Int32GetDatum(st->batch);
	if (SPI_execute_plan(softmig_cached_plan(c->m, buf.data, 1, argtypes), values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: backfill sweep read failed");
	nread = SPI_processed;
	if (nread > 0)
		busy = step_copy(st, SPI_tuptable, nread, fenced, &copied);
	if (busy)
		busy_result(&st->res, st->op, st->lo);
	else
		appendStringInfo(&st->res, "{\"read\": " UINT64_FORMAT ", \"locked\": " UINT64_FORMAT
						 ", \"copied\": " UINT64_FORMAT ", \"fenced\": %s}",
						 nread, nread, copied, fenced ? "true" : "false");
}

/*
 * step_verify
 *		The verify operation: count the legacy rows the target lacks.
 *
 *		No parallel plan here, though it would be about 100 ms per million
 *		rows faster on two CPUs: a backfill stays gentle on a live server
 *		(one backend, throttled by pause_ms).
 */
static void
step_verify(BfStep *st)
{
	char	   *sql = psprintf("SELECT pg_catalog.count(*) FROM (%s) AS softmig_m",
							   missing_keys_sql(st->c));
	bool		isnull;

	if (SPI_execute_plan(softmig_cached_plan(st->c->m, sql, 0, NULL), NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: backfill verification failed");
	appendStringInfo(&st->res, "{\"missing\": " INT64_FORMAT "}",
					 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
}

/*
 * step_attribute_clear
 *		The orphans operation of an attribute member of a merge, which
 *		deletes no entity (the owner's does): lock the entities of up to
 *		batch target rows that keep a value of the member's columns whose
 *		legacy row is absent, then clear what is still stale of them
 *		(mergeclear.c).  Reports as "deleted" the entities it locked (each
 *		one cleared, or given its attribute row by a live writer meanwhile:
 *		stale no more either way), so the SQL loop ends on a short batch;
 *		"cleared" counts the rows written.  Gives way as step_orphans does.
 */
static void
step_attribute_clear(BfStep *st)
{
	BfContext  *c = st->c;
	char	   *lock_sql;
	char	   *clear_sql;
	Oid			inttype[1] = {INT4OID};
	Oid			jsontype[1] = {JSONBOID};
	Datum		values[1];
	char		nulls[1] = {' '};
	bool		isnull;
	int32		locked;
	uint64		cleared = 0;

	if (!softmig_merge_clear_sql(c, &lock_sql, &clear_sql))
	{
		appendStringInfoString(&st->res, "{\"deleted\": 0}");
		return;
	}
	values[0] = Int32GetDatum(st->batch);
	softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(c->m, lock_sql, 1, inttype),
										values, nulls, false, 0),
					   SPI_OK_SELECT, "lock the entities a merge's backfill clears");
	values[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
	{
		appendStringInfoString(&st->res, "{\"deleted\": 0}");
		return;
	}
	locked = DatumGetInt32(DirectFunctionCall1(jsonb_array_length, values[0]));
	if (plan_bounded(softmig_cached_plan(c->m, clear_sql, 1, jsontype), values, nulls,
					 SPI_OK_UPDATE, &cleared))
		appendStringInfo(&st->res, "{\"deleted\": %d, \"cleared\": " UINT64_FORMAT "}",
						 locked, cleared);
	else
		appendStringInfo(&st->res, "{\"deleted\": %d, \"busy\": true}", st->batch);
}

/*
 * step_orphans
 *		The orphans operation: delete up to batch target rows that legacy
 *		lacks and that were written before mirroring began; rows with a
 *		NULL correlation key are the target's own entities and stay.  An
 *		attribute member of a merge clears instead (step_attribute_clear).
 */
static void
step_orphans(BfStep *st)
{
	BfContext  *c = st->c;
	StringInfoData buf;
	Oid			argtypes[3] = {PG_SNAPSHOTOID, INT4OID, XID8OID};
	Datum		values[3];
	char		nulls[3];
	uint64		deleted = 0;

	if (c->merge_refresh != NULL)
	{
		step_attribute_clear(st);
		return;
	}
	initStringInfo(&buf);
	appendStringInfo(&buf, "DELETE FROM %s WHERE ROW(tableoid, ctid) IN ("
					 "SELECT softmig_s.softmig_tableoid, softmig_s.softmig_ctid FROM ("
					 "SELECT tableoid AS softmig_tableoid, ctid AS softmig_ctid",
					 c->target);
	appendStringInfoString(&buf, ", ");
	softmig_append_key_list(&buf, c->bwd->keyexprs, c->bwd->keytypes);
	appendStringInfo(&buf, " FROM %s WHERE softmig._written_before(xmin, $1, $3)", c->target);
	/* a row with a NULL correlation key is the target's own entity: it stays */
	softmig_append_key_not_null(&buf, c->fwd->keycols, "");
	appendStringInfo(&buf, ") AS softmig_s "
					 "WHERE NOT EXISTS (SELECT 1 FROM %s AS softmig_l WHERE ",
					 c->legacy);
	softmig_append_key_match(&buf, "softmig_l", c->bwd->keycols, c->bwd->keyops,
							 "softmig_s");
	appendStringInfoString(&buf, ") LIMIT $2)");
	values[0] = st->snap;
	nulls[0] = st->snap_null ? 'n' : ' ';
	values[1] = Int32GetDatum(st->batch);
	nulls[1] = ' ';
	values[2] = st->snap_xid;
	nulls[2] = st->snap_xid_null ? 'n' : ' ';
	/* bounded too: a live upsert of a row it deletes may wait for it */
	if (plan_bounded(softmig_cached_plan(c->m, buf.data, 3, argtypes), values, nulls, SPI_OK_DELETE, &deleted))
		appendStringInfo(&st->res, "{\"deleted\": " UINT64_FORMAT "}", deleted);
	else
	{
		/*
		 * Gave way: nothing removed.  "deleted" reads as a full batch so that
		 * the SQL of 0.1.0, which knows no busy orphans step, comes back
		 * instead of finishing; this version's SQL sees "busy".
		 */
		appendStringInfo(&st->res, "{\"deleted\": %d, \"busy\": true}", st->batch);
	}
}

/* The operations of softmig._bf_step, by name. */
typedef struct BfStepOp
{
	const char *name;
	void		(*run) (BfStep *st);
} BfStepOp;

static const BfStepOp bf_step_ops[] = {
	{"next", step_next_range},
	{"range", step_next_range},
	{"sweep", step_sweep},
	{"orphans", step_orphans},
	{"verify", step_verify},
};

PG_FUNCTION_INFO_V1(softmig_backfill_step);
/*
 * softmig_backfill_step
 *		softmig._bf_step(migration_id, op, batch_size, lo, hi, snapshot,
 *		snapshot_xid): one unit of backfill work, run as the target table's
 *		owner with the pinned search_path, in the caller's transaction.  Ops:
 *		  next    copy up to batch_size rows with key > lo
 *		  range   copy the rows with lo < key <= hi (a revisit left by 0.1.0)
 *		  sweep   copy up to batch_size legacy rows the target lacks
 *		  orphans delete up to batch_size target rows that legacy lacks and
 *		          that were written before mirroring began
 *		  verify  count the legacy rows the target lacks
 *		next, range and sweep first try the delete fence (SHARE, held to the
 *		end of the caller's transaction, one batch): with it they read
 *		without row locks; without it they lock what they read FOR KEY
 *		SHARE SKIP LOCKED and report skipped rows for a revisit.  Either way
 *		the copy's lock waits are bounded (reporting {"busy": true} and
 *		copying nothing when it gives way), as are orphans'.  Returns a
 *		jsonb summary.
 */
Datum
softmig_backfill_step(PG_FUNCTION_ARGS)
{
	BfStep		st;
	const BfStepOp *volatile sop = NULL;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	Datum		result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration_id, op and batch_size must not be null")));
	st.id = PG_GETARG_INT32(0);
	st.op = text_to_cstring(PG_GETARG_TEXT_PP(1));
	st.batch = PG_GETARG_INT32(2);
	st.lo = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	st.hi = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	st.snap = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
	st.snap_null = PG_ARGISNULL(5);
	st.snap_xid = PG_ARGISNULL(6) ? (Datum) 0 : PG_GETARG_DATUM(6);
	st.snap_xid_null = PG_ARGISNULL(6);
	if (XactIsoLevel != XACT_READ_COMMITTED)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("a backfill batch must run at isolation level READ COMMITTED"),
				 errdetail("Its delete fence and conflict handling rely on per-statement snapshots."),
				 errhint("Set default_transaction_isolation to read committed for the session that runs CALL softmig.backfill.")));
	if (st.batch < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be at least 1")));
	for (int i = 0; i < lengthof(bf_step_ops); i++)
		if (strcmp(st.op, bf_step_ops[i].name) == 0)
			sop = &bf_step_ops[i];
	if (sop == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown backfill step \"%s\"", st.op),
				 errhint("The steps are next, range, sweep, orphans and verify.")));

	st.m = softmig_require_migration(st.id);
	if (st.m->one_to_many)		/* sets per entity (onetomany.c) */
		PG_RETURN_DATUM(softmig_otm_bf_step(st.m, st.op, st.batch, st.lo));
	if (list_length(st.m->legacy_key) > BF_MAX_KEY_COLUMNS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("backfill supports at most %d key columns", BF_MAX_KEY_COLUMNS)));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	st.c = softmig_bf_context(st.m);

	/*
	 * As the owner of the table written (never as the caller, who may be a
	 * superuser running another role's migration: the mapping expressions are
	 * that role's code).  It reads and locks legacy rows too, so when the
	 * tables have different owners the target's owner needs SELECT and UPDATE
	 * on legacy.
	 */
	softmig_enter_owner_context(softmig_rel_owner(st.m->target),
								&save_nest, &save_user, &save_sec);
	initStringInfo(&st.res);

	/* stale statements can be freed now: none of ours is running */
	if (bf_step_depth == 0)
		softmig_cached_plan_prune();

	/* what earlier batches learnt about the workload is about their migration */
	if (st.id != bf_pause_migration)
	{
		bf_fence_pause = 0;
		bf_plain_pause = 0;
		bf_pause_migration = st.id;
	}

	/* our writes to the target are softmig's own: the guard lets them pass */
	softmig_mirror_enter(st.m->id);
	bf_step_depth++;
	PG_TRY();
	{
		sop->run(&st);
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
		bf_step_depth--;
	}
	PG_END_TRY();

	softmig_leave_owner_context(save_nest, save_user, save_sec);
	/* res lives in SPI's memory: build the result before SPI_finish frees it */
	result = SPI_datumTransfer(result_json(st.res.data), false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

PG_FUNCTION_INFO_V1(softmig_written_before);
/*
 * softmig_written_before
 *		softmig._written_before(xmin xid, snap pg_snapshot, snap_xid xid8):
 *		was a row version with this xmin written before the snapshot was
 *		taken: committed and visible in snap, or written by snap_xid (the
 *		transaction that took it, whose own writes a snapshot shows as
 *		running)?  Frozen and bootstrap xids count as
 *		old.  A live tuple's xmin is never more than 2^31 transactions old,
 *		so widening it with the current epoch is exact.  NULL snap: false.
 */
Datum
softmig_written_before(PG_FUNCTION_ARGS)
{
	TransactionId xid = DatumGetTransactionId(PG_GETARG_DATUM(0));
	FullTransactionId next;
	FullTransactionId fxid;
	uint32		epoch;

	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	if (!TransactionIdIsNormal(xid))
		PG_RETURN_BOOL(true);
	next = ReadNextFullTransactionId();
	epoch = EpochFromFullTransactionId(next);
	if (xid > XidFromFullTransactionId(next) && epoch > 0)
		epoch--;
	fxid = FullTransactionIdFromEpochAndXid(epoch, xid);
	/* the snapshot-taking transaction's own writes precede the snapshot */
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2) &&
		FullTransactionIdEquals(fxid, PG_GETARG_FULLTRANSACTIONID(2)))
		PG_RETURN_BOOL(true);
	return DirectFunctionCall2(pg_visible_in_snapshot,
							   FullTransactionIdGetDatum(fxid),
							   PG_GETARG_DATUM(1));
}
