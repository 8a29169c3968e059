/*-------------------------------------------------------------------------
 *
 * onetomany.c
 *	  One-to-many migrations: one legacy row implies a set of target rows.
 *
 *	  A migration created with options cardinality "one_to_many" and entity
 *	  {legacy key column: target column} gathers, per legacy row (an
 *	  entity), the set of target rows whose entity columns equal its key.
 *	  The target's own key (grant_id) identifies a member of the set and is
 *	  never derived from legacy.
 *
 *	  mirrored (legacy is the authority): the write trigger on legacy
 *	  rewrites exactly the set each written legacy row implies.  The
 *	  expansion of a legacy row is one target row, the forward mapping of
 *	  it; target rows the expansion still yields stay as they are (matched
 *	  on all mapped columns, as multisets); of the rest, as many as the
 *	  expansion yields new rows are updated in place (keeping their
 *	  identity), the others deleted, and the expansion's remaining rows
 *	  inserted.  A change of the legacy key first moves
 *	  the set to the new key (the set keeps its identities), then the set
 *	  is reconciled.  A deleted legacy row deletes its set.  All of it is
 *	  one or two set-based statements per application statement, with kept
 *	  plans.
 *
 *	  new_write and new_read (the target is the authority): at the end of
 *	  each statement on the target, the entities it touched (entity
 *	  columns of its old and new rows) are locked (transaction advisory
 *	  locks, see lock_entities), then re-aggregated once with a fresh
 *	  snapshot: the backward mapping holds aggregates over the set, the
 *	  option representable an aggregate predicate.  The aggregated rows are
 *	  upserted into legacy; an empty set deletes the legacy row.  The
 *	  advisory lock serialises the statements of concurrent transactions
 *	  that write the same entity, so neither aggregate misses the other's
 *	  rows (READ COMMITTED takes the fresh snapshot after the wait;
 *	  REPEATABLE READ and SERIALIZABLE fail with 40001 instead of losing a
 *	  write).  A set whose representable predicate is false, or that
 *	  legacy's constraints refuse, closes the rollback envelope (or, with
 *	  on_new_only = reject while it is open, the statement fails with
 *	  SM004).
 *
 *	  The set is read as the target's owner (the backward aggregates and
 *	  representable are evaluated there), legacy is written as legacy's
 *	  owner, through an ephemeral named relation holding the aggregated
 *	  rows.
 *
 *	  Backfill (softmig_otm_bf_step) rewrites the sets entity by entity
 *	  under the same entity locks as the mirror, so a batch and a live
 *	  writer of one entity serialise and the later one sees the other's
 *	  commit.  Parity and inspect compare per entity: while legacy is the
 *	  authority, a legacy row's expansion with its target set; from
 *	  new_write on, the legacy row with the aggregate of its set; both as
 *	  multisets (EXCEPT ALL), so neither the order of a set nor the
 *	  target's own key can make a difference.  Hydrate and release
 *	  (softmig_otm_resync_keys) bring named entities in line with their
 *	  authority as a write of them would; a quarantined entity's writes are
 *	  refused (check_quarantine) and parity leaves it out.  Row-at-a-time
 *	  tools (inspect_group, transition rules, shape views, per-field
 *	  authority) refuse a one-to-many migration (softmig_otm_refuse).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "softmig.h"
#include "onetomany.h"
#include "sqlstate.h"

/*
 * softmig_otm_refuse
 *		Raise 0A000 when m is one-to-many: what (a row-at-a-time tool) does
 *		not work on sets.
 */
void
softmig_otm_refuse(SoftmigMigration *m, const char *what)
{
	if (m->one_to_many)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s are not supported for migration \"%s\": it is one_to_many", what, m->name),
				 errdetail("A one_to_many migration maps one legacy row to a set of target rows; its write path, backfill, parity and inspect work per entity."),
				 errhint("See doc/shapes.md, \"One-to-many\".")));
}

/* One statement text, kept in the migration's cache entry (m->otm_sql). */
typedef struct OtmSqlText
{
	OtmStmt		kind;
	Oid			relid;
	bool		has_new;
	bool		has_old;
	char	   *sql;
} OtmSqlText;

/*
 * otm_text
 *		otm_sql's text for these arguments, built once per cache entry of m
 *		(in m->cxt, so it goes when the definition or a table changes).
 */
static const char *
otm_text(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old)
{
	ListCell   *lc;
	OtmSqlText *t;
	char	   *sql;
	MemoryContext old;

	foreach(lc, m->otm_sql)
	{
		t = lfirst(lc);
		if (t->kind == kind && t->relid == relid && t->has_new == has_new && t->has_old == has_old)
			return t->sql;
	}
	sql = softmig_otm_sql(m, kind, relid, has_new, has_old);
	old = MemoryContextSwitchTo(m->cxt);
	t = palloc(sizeof(OtmSqlText));
	t->kind = kind;
	t->relid = relid;
	t->has_new = has_new;
	t->has_old = has_old;
	t->sql = pstrdup(sql);
	m->otm_sql = lappend(m->otm_sql, t);
	MemoryContextSwitchTo(old);
	return t->sql;
}

/*
 * run
 *		Execute statement kind (kept plan) and check its SPI result code.
 */
static void
run(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old, int expect)
{
	SPIPlanPtr	plan = softmig_cached_plan(m, otm_text(m, kind, relid, has_new, has_old), 0, NULL);

	softmig_spi_expect(SPI_execute_plan(plan, NULL, NULL, false, 0), expect,
					   "write the other side of a one_to_many migration");
}

/*
 * The entity locks.  A statement that touches few entities takes, per
 * entity, a shared lock on its stripe (one of OTM_STRIPES, by the key's
 * hash) and an exclusive lock on the entity itself; one that touches more
 * than OTM_FEW_ENTITIES (a big statement, a backfill batch) takes its
 * stripes exclusively instead, so the lock table never holds more than
 * OTM_STRIPES of its locks.  Either way two writers of one entity
 * conflict.  Entity locks are transaction advisory locks with the legacy
 * table's oid in the high 32 bits of the key and the hash in the low 32;
 * stripe locks use the two-key form (oid, stripe).
 */
#define OTM_FEW_ENTITIES	64
#define OTM_STRIPES			256

/*
 * lock_entities
 *		Take the entity locks of the entities in the transition tables
 *		(kind OTM_LOCK: entity columns of target rows; OTM_LOCK_LEGACY:
 *		key columns of legacy rows), in one order: stripes ascending, then
 *		entities ascending.  Held to the end of the transaction.  The
 *		caller is connected to SPI with the transition tables registered.
 */
static void
lock_entities(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old)
{
	uint64		n;
	int32	   *hashes;
	bool		stripe[OTM_STRIPES] = {false};
	bool		few;

	run(m, kind, relid, has_new, has_old, SPI_OK_SELECT);
	n = SPI_processed;
	few = (n <= OTM_FEW_ENTITIES);
	hashes = palloc(sizeof(int32) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		hashes[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		stripe[(uint32) hashes[i] % OTM_STRIPES] = true;
	}
	SPI_freetuptable(SPI_tuptable);
	for (int s = 0; s < OTM_STRIPES; s++)
	{
		if (!stripe[s])
			continue;
		if (few)
			(void) DirectFunctionCall2(pg_advisory_xact_lock_shared_int4,
									   Int32GetDatum((int32) m->legacy), Int32GetDatum(s));
		else
			(void) DirectFunctionCall2(pg_advisory_xact_lock_int4,
									   Int32GetDatum((int32) m->legacy), Int32GetDatum(s));
	}
	if (few)
	{
		/* in the order of the hashes (the query's), the same for everyone */
		for (uint64 i = 0; i < n; i++)
			(void) DirectFunctionCall1(pg_advisory_xact_lock_int8,
									   Int64GetDatum((int64) (((uint64) m->legacy << 32) | (uint32) hashes[i])));
	}
	pfree(hashes);
}

/*
 * run_args
 *		Execute statement kind (kept plan, parameters $1 jsonb and $2
 *		integer) and check its SPI result code.
 */
static void
run_args(SoftmigMigration *m, OtmStmt kind, Datum lo, bool lo_null, int batch, int expect)
{
	Oid			argtypes[2] = {JSONBOID, INT4OID};
	Datum		values[2] = {lo, Int32GetDatum(batch)};
	char		nulls[2] = {lo_null ? 'n' : ' ', ' '};
	SPIPlanPtr	plan = softmig_cached_plan(m, otm_text(m, kind, InvalidOid, true, true), 2, argtypes);

	softmig_spi_expect(SPI_execute_plan(plan, values, nulls, false, 0), expect,
					   "backfill a one_to_many migration");
}

/*
 * store_result
 *		Register the rows of the last SPI query as ephemeral relation name
 *		(unregistering an earlier one of that name); returns how many.
 */
static uint64
store_result(const char *name)
{
	uint64		n = SPI_processed;
	TupleDesc	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	Tuplestorestate *store = tuplestore_begin_heap(false, false, work_mem);

	for (uint64 i = 0; i < n; i++)
		tuplestore_puttuple(store, SPI_tuptable->vals[i]);
	SPI_freetuptable(SPI_tuptable);
	(void) SPI_unregister_relation(name);
	softmig_spi_register_rows(name, InvalidOid, desc, store, (int64) n);
	return n;
}

/*
 * bf_rewrite
 *		Rewrite the sets of the legacy rows the last SPI query returned
 *		(legacy's columns and softmig_key): lock their entities as a
 *		mirrored writer does, read their current versions (a fresh
 *		snapshot, after any writer that held an entity committed) and
 *		reconcile the sets.  Returns the number of rows read first and sets
 *		*last_key to the last one's key (NULL when none).
 */
static uint64
bf_rewrite(SoftmigMigration *m, char **last_key)
{
	uint64		n;
	bool		isnull;

	*last_key = NULL;
	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		k = SPI_getbinval(SPI_tuptable->vals[SPI_processed - 1], desc, desc->natts, &isnull);

		*last_key = JsonbToCString(NULL, &DatumGetJsonbP(k)->root, 0);
	}
	n = store_result("softmig_new");
	if (n == 0)
		return 0;
	lock_entities(m, OTM_LOCK_LEGACY, InvalidOid, true, false);
	run(m, OTM_BF_FRESH, InvalidOid, true, false, SPI_OK_SELECT);
	(void) store_result("softmig_new");
	run(m, OTM_MIRROR_UPSERT, InvalidOid, true, false, SPI_OK_INSERT);
	return n;
}

/*
 * softmig_otm_bf_step
 *		softmig._bf_step for a one-to-many migration (backfill.c hands it
 *		over), one unit of backfill work per entity, in the caller's
 *		transaction, as the target's owner:
 *		  next    rewrite the sets of up to batch legacy rows with key > lo
 *		  sweep   rewrite the sets of up to batch legacy rows without one
 *		  verify  count the legacy rows without a set
 *		  orphans delete the sets of up to batch entities legacy lacks
 *		Every entity is locked as a mirrored writer locks it (a transaction
 *		advisory lock, held to the batch's commit) and read again after the
 *		lock, so a batch never writes an older version of an entity than a
 *		live writer does.  Returns the jsonb summary _backfill_batch reads.
 */
Datum
softmig_otm_bf_step(SoftmigMigration *m, const char *op, int batch, Jsonb *lo)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	StringInfoData res;
	char	   *last_key = NULL;
	uint64		n;
	Datum		result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	initStringInfo(&res);
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		if (strcmp(op, "next") == 0 || strcmp(op, "range") == 0 || strcmp(op, "sweep") == 0)
		{
			OtmStmt		kind = strcmp(op, "sweep") == 0 ? OTM_BF_SWEEP :
			lo != NULL ? OTM_BF_NEXT : OTM_BF_FIRST;

			run_args(m, kind, lo ? JsonbPGetDatum(lo) : (Datum) 0, lo == NULL, batch, SPI_OK_SELECT);
			n = bf_rewrite(m, &last_key);
			appendStringInfo(&res, "{\"locked\": " UINT64_FORMAT ", \"copied\": " UINT64_FORMAT
							 ", \"skipped\": 0, \"tail_skipped\": 0, \"last_key\": %s}",
							 n, n, last_key ? last_key : "null");
		}
		else if (strcmp(op, "verify") == 0)
		{
			bool		isnull;

			run(m, OTM_BF_MISSING, InvalidOid, false, false, SPI_OK_SELECT);
			appendStringInfo(&res, "{\"missing\": " INT64_FORMAT "}",
							 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
		}
		else if (strcmp(op, "orphans") == 0)
		{
			run_args(m, OTM_BF_ORPHANS, (Datum) 0, true, batch, SPI_OK_SELECT);
			n = store_result("softmig_old");
			if (n > 0)
			{
				lock_entities(m, OTM_LOCK, InvalidOid, false, true);
				run(m, OTM_BF_DELETE, InvalidOid, false, true, SPI_OK_DELETE);
				n = SPI_processed;
			}
			appendStringInfo(&res, "{\"deleted\": " UINT64_FORMAT "}", n);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown backfill step \"%s\"", op)));
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(res.data)), false, -1);
	SPI_finish();
	return result;
}

/*
 * key_updated
 *		May an UPDATE on legacy have changed a key column: is one of them
 *		among the statement's updated columns (a BEFORE trigger may change
 *		any column, so then every column counts)?
 */
static bool
key_updated(TriggerData *td, SoftmigMigration *m)
{
	Relation	rel = td->tg_relation;
	ListCell   *lc;

	if (td->tg_updatedcols == NULL || (rel->trigdesc && rel->trigdesc->trig_update_before_row))
		return true;
	foreach(lc, m->legacy_key)
	{
		AttrNumber	att = get_attnum(RelationGetRelid(rel), lfirst(lc));

		if (att == InvalidAttrNumber ||
			bms_is_member(att - FirstLowInvalidHeapAttributeNumber, td->tg_updatedcols))
			return true;
	}
	return false;
}

/*
 * mirror_legacy
 *		mirrored: lock the entities of the legacy rows a statement wrote
 *		(their old and new keys) and rewrite their target sets.  Runs as the target's owner with the migration marked as
 *		mirroring; the caller holds an SPI connection with the trigger's
 *		transition tables registered.
 */
static void
mirror_legacy(TriggerData *td, SoftmigMigration *m)
{
	Oid			relid = RelationGetRelid(td->tg_relation);
	bool		has_new = !TRIGGER_FIRED_BY_DELETE(td->tg_event);
	bool		has_old = !TRIGGER_FIRED_BY_INSERT(td->tg_event);

	/* the entities' locks: a backfill batch rewriting them waits, or we do */
	lock_entities(m, OTM_LOCK_LEGACY, relid, has_new, has_old);
	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		run(m, OTM_MIRROR_DELETE, relid, false, true, SPI_OK_DELETE);
		return;
	}
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && key_updated(td, m))
		run(m, OTM_MIRROR_MOVE, relid, true, true, SPI_OK_UPDATE);
	run(m, OTM_MIRROR_UPSERT, relid, true, false, SPI_OK_INSERT);
}

/*
 * project_sets
 *		new_write, new_read: lock the entities in the transition tables
 *		(unless rel is NULL: the caller holds both tables against writers),
 *		aggregate their sets (as the target's owner, fresh snapshot), refuse
 *		(rel given, on_new_only = reject, envelope open) or record sets legacy
 *		cannot represent, and upsert or delete their legacy rows (as legacy's
 *		owner).  The caller holds an SPI connection with softmig_new and/or
 *		softmig_old registered (the entity columns by their target names)
 *		and has marked the migration as mirroring.  Returns the number of
 *		entities.
 */
static uint64
project_sets(SoftmigMigration *m, Oid relid, bool has_new, bool has_old, Relation rel)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	TupleDesc	desc;
	Tuplestorestate *store;
	uint64		n;
	int64		bad = 0;
	int			okcol;
	int			ncol;
	SPIPlanPtr	plan;
	ErrorData  *edata;
	bool		reject = (rel != NULL && m->reject_new_only && m->envelope_open);

	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	if (rel != NULL)
		lock_entities(m, OTM_LOCK, relid, has_new, has_old);
	run(m, OTM_AGGREGATE, relid, has_new, has_old, SPI_OK_SELECT);
	softmig_leave_owner_context(save_nest, save_user, save_sec);

	n = SPI_processed;
	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	ncol = desc->natts;
	okcol = ncol - 1;			/* softmig_ok, then softmig_key */
	store = tuplestore_begin_heap(false, false, work_mem);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		cnt = DatumGetInt64(SPI_getbinval(tup, desc, list_length(m->legacy_key) + 1, &isnull));

		if (cnt > 0 && !DatumGetBool(SPI_getbinval(tup, desc, okcol, &isnull)))
			bad++;
		tuplestore_puttuple(store, tup);
	}
	SPI_freetuptable(SPI_tuptable);
	(void) SPI_unregister_relation(OTM_AGG);
	softmig_spi_register_rows(OTM_AGG, InvalidOid, desc, store, (int64) n);

	if (bad > 0)
	{
		Datum		keys;
		bool		isnull;

		if (reject)
			softmig_refuse_new_only(m, rel,
									psprintf("%lld entit%s of this statement make%s the representable predicate false.",
											 (long long) bad, bad == 1 ? "y" : "ies", bad == 1 ? "s" : ""));
		run(m, OTM_BAD_KEYS, relid, false, false, SPI_OK_SELECT);
		keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		softmig_note_new_only(m, bad, keys, isnull,
							  "the target set of an entity makes the representable predicate false");
	}

	softmig_enter_owner_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec);
	plan = softmig_cached_plan(m, otm_text(m, OTM_PROJECT, relid, has_new, has_old), 0, NULL);
	edata = softmig_spi_try(plan, NULL, NULL, NULL, false, SPI_OK_INSERT, softmig_unrepresentable);
	softmig_leave_owner_context(save_nest, save_user, save_sec);

	/* (a set already recorded as unrepresentable is not counted twice) */
	if (edata != NULL && bad == 0)
	{
		Datum		keys;
		bool		isnull;

		if (reject)
			softmig_refuse_new_only(m, rel,
									psprintf("Legacy refused the aggregated row: %s", edata->message));
		run(m, OTM_BAD_KEYS, relid, false, false, SPI_OK_SELECT);
		keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		softmig_note_new_only(m, (int64) n, keys, isnull,
							  psprintf("legacy refused the aggregated row of an entity: %s", edata->message));
	}
	return n;
}

/*
 * softmig_otm_resync_all
 *		softmig._resync_all for a one-to-many migration (shadow_enable in
 *		new_write or new_read): every entity either side holds is
 *		aggregated and projected onto legacy again.  The caller holds both
 *		tables locked against writers.  Returns the number of entities.
 */
int64
softmig_otm_resync_all(SoftmigMigration *m)
{
	StringInfoData sql;
	ListCell   *c;
	ListCell   *e;
	volatile uint64 n = 0;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT DISTINCT ");
	softmig_otm_append_idents(&sql, "t.", m->target_key);
	appendStringInfo(&sql, " FROM %s t WHERE ", softmig_qualified_relname(m->target));
	foreach(c, m->target_key)
		appendStringInfo(&sql, "%st.%s IS NOT NULL", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)));
	appendStringInfoString(&sql, " UNION SELECT ");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(&sql, "%s(l.%s)::%s AS %s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(c)), softmig_otm_col_type(m->target, lfirst(e)),
						 quote_identifier(lfirst(e)));
	appendStringInfo(&sql, " FROM %s l", softmig_qualified_relname(m->legacy));
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	softmig_spi_expect(SPI_execute(sql.data, true, 0), SPI_OK_SELECT, "list the entities of a one_to_many migration");
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	(void) store_result("softmig_new");
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		n = project_sets(m, InvalidOid, true, false, NULL);
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	SPI_finish();
	return (int64) n;
}

/*
 * check_quarantine
 *		Refuse (SM005) a statement on the authoritative side that touched a
 *		quarantined entity: the legacy keys of its old and new rows (on the
 *		target, of their entity columns) are computed as the written
 *		table's owner, then looked up (softmig_refuse_quarantined).  The
 *		caller holds an SPI connection with the transition tables
 *		registered.
 */
static void
check_quarantine(TriggerData *td, SoftmigMigration *m, SoftmigSide side)
{
	Oid			relid = (side == SIDE_LEGACY) ? m->legacy : m->target;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		isnull;
	Datum		keys;

	softmig_enter_owner_context(softmig_rel_owner(relid), &save_nest, &save_user, &save_sec);
	run(m, OTM_KEYS, relid, !TRIGGER_FIRED_BY_DELETE(td->tg_event),
		!TRIGGER_FIRED_BY_INSERT(td->tg_event), SPI_OK_SELECT);
	keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if (!isnull)
		softmig_refuse_quarantined(m, td->tg_relation, keys);
}

/*
 * softmig_otm_resync_keys
 *		Bring the entities "keys" names (a legacy key as jsonb or a jsonb
 *		array of them, typed and distinct, none quarantined: the caller
 *		checked) in line with
 *		their authority, exactly as the write path does for a statement
 *		that touched them (hydrate, and release of a quarantine):
 *		  mirrored             each entity's target set is rewritten from
 *		                       its legacy row (backfill's per-entity
 *		                       rewrite), or deleted when legacy has no row
 *		  new_write, new_read  each entity's set is aggregated into its
 *		                       legacy row (the projection: representable,
 *		                       the envelope and on_new_only = reject
 *		                       included), which goes when the set is empty
 *		Takes the entity locks a writer of those entities takes (held to
 *		the end of the transaction), so it serialises with live writers and
 *		backfill and reads the entities after they committed.  Other states:
 *		nothing to do.  Returns the number of entities.
 */
int64
softmig_otm_resync_keys(SoftmigMigration *m, Datum keys)
{
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1] = {keys};
	bool		mirrored = (m->state == SM_MIRRORED);
	Oid			relid = mirrored ? m->legacy : m->target;
	volatile uint64 n = 0;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (m->state != SM_MIRRORED && m->state != SM_NEW_WRITE && m->state != SM_NEW_READ)
		return 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the entities as rows of the authoritative table (its owner's types) */
	softmig_enter_owner_context(softmig_rel_owner(relid), &save_nest, &save_user, &save_sec);
	softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(m, otm_text(m, OTM_ENTITIES, relid, true, false),
															1, argtypes),
										values, NULL, true, 0),
					   SPI_OK_SELECT, "list the entities of a one_to_many migration");
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	n = store_result("softmig_new");
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		if (n > 0 && mirrored)
		{
			/* as backfill rewrites a batch, then the sets legacy lacks go */
			softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
			lock_entities(m, OTM_LOCK_LEGACY, InvalidOid, true, false);
			run(m, OTM_GONE, InvalidOid, true, false, SPI_OK_SELECT);
			(void) store_result("softmig_old");
			run(m, OTM_BF_FRESH, InvalidOid, true, false, SPI_OK_SELECT);
			(void) store_result("softmig_new");
			run(m, OTM_MIRROR_UPSERT, InvalidOid, true, false, SPI_OK_INSERT);
			run(m, OTM_MIRROR_DELETE, InvalidOid, false, true, SPI_OK_DELETE);
			softmig_leave_owner_context(save_nest, save_user, save_sec);
		}
		else if (n > 0)
		{
			Relation	rel = table_open(m->target, AccessShareLock);

			(void) project_sets(m, m->target, true, false, rel);
			table_close(rel, NoLock);
		}
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	SPI_finish();
	return (int64) n;
}

/*
 * softmig_otm_write
 *		The AFTER statement trigger's work for a one-to-many migration on
 *		the authoritative side (the caller checked side == authority and
 *		holds an SPI connection): mirrored rewrites sets from legacy rows,
 *		new_write and new_read project sets onto legacy rows.
 */
void
softmig_otm_write(TriggerData *td, SoftmigMigration *m, SoftmigSide side)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "SPI_register_trigger_data failed");
	if (m->n_quarantined > 0)
		check_quarantine(td, m, side);
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		if (side == SIDE_LEGACY)
		{
			softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
			mirror_legacy(td, m);
			softmig_leave_owner_context(save_nest, save_user, save_sec);
		}
		else
			(void) project_sets(m, RelationGetRelid(td->tg_relation),
								!TRIGGER_FIRED_BY_DELETE(td->tg_event),
								!TRIGGER_FIRED_BY_INSERT(td->tg_event), td->tg_relation);
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
}

/*
 * fake_transition
 *		Register empty ephemeral relations softmig_new and softmig_old with
 *		relid's row type (to prepare the trigger's statements outside a
 *		trigger).
 */
static void
fake_transition(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = CreateTupleDescCopy(RelationGetDescr(rel));

	table_close(rel, NoLock);
	softmig_spi_register_rows("softmig_new", InvalidOid, desc, tuplestore_begin_heap(false, false, work_mem), 0);
	softmig_spi_register_rows("softmig_old", InvalidOid, desc, tuplestore_begin_heap(false, false, work_mem), 0);
}

/*
 * prepare_grouping
 *		SPI_prepare sql, turning a grouping error (42803: a column read
 *		outside an aggregate) into one that names expression what of m.
 *		The caught error is re-raised at once, so no subtransaction is
 *		needed.
 */
static SPIPlanPtr
prepare_grouping(SoftmigMigration *m, const char *sql, const char *expr, const char *what)
{
	SPIPlanPtr	plan = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		plan = SPI_prepare(sql, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_GROUPING_ERROR)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("%s of one_to_many migration \"%s\" must aggregate over the entity's target rows",
						what, m->name),
				 errdetail("Expression: %s (%s)", expr, edata->message),
				 errhint("Read the set's columns only inside aggregates, such as max(plan) FILTER (WHERE ends IS NULL) or count(*) <= 1.")));
	}
	PG_END_TRY();
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * check_aggregate
 *		Refuse expr unless it is an aggregate over one entity's target set,
 *		analysed as the target's owner: "SELECT (expr) FROM target" must
 *		aggregate (42803), use no window (42P20) or set-returning function
 *		(0A000) and, when want_bool, be boolean (22023); "... GROUP BY
 *		entity columns" must read no column outside an aggregate (42803).
 *		The caller is connected to SPI.
 */
static void
check_aggregate(SoftmigMigration *m, const char *expr, const char *what, bool want_bool)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	Query	   *q;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT (%s\n) FROM %s", expr, softmig_qualified_relname(m->target));
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	plan = prepare_grouping(m, buf.data, expr, what);
	q = linitial_node(Query, ((CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan)))->query_list);
	if (q->hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_WINDOWING_ERROR),
				 errmsg("%s must not use a window function", what),
				 errdetail("Expression: %s", expr)));
	if (q->hasTargetSRFs)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s must not use a set-returning function", what),
				 errdetail("Expression: %s", expr)));
	if (!q->hasAggs)
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("%s of one_to_many migration \"%s\" must aggregate over the entity's target rows",
						what, m->name),
				 errdetail("Expression: %s", expr),
				 errhint("Use an aggregate such as max(plan) FILTER (WHERE ends IS NULL) or count(*) <= 1.")));
	if (want_bool)
		softmig_expect_boolean(q, expr, what);
	SPI_freeplan(plan);
	appendStringInfoString(&buf, " GROUP BY ");
	softmig_otm_append_idents(&buf, NULL, m->target_key);
	SPI_freeplan(prepare_grouping(m, buf.data, expr, what));
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * prepare_check
 *		Prepare sql (and throw the plan away), as role owner: proves that a
 *		statement of the write path plans before any write needs it.
 */
static void
prepare_check(const char *sql, Oid owner)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	SPIPlanPtr	plan;

	softmig_enter_owner_context(owner, &save_nest, &save_user, &save_sec);
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_freeplan(plan);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * softmig_otm_validate
 *		softmig._validate for a one-to-many migration: the forward mappings
 *		are per-row expressions over legacy (as for every migration), every
 *		backward mapping of a non-key column and representable are
 *		aggregates over the set (representable boolean), and every
 *		statement of the write path prepares, with the tables' row types
 *		standing in for the transition tables.  Takes AccessShareLock on
 *		both tables; connects to SPI itself.
 */
void
softmig_otm_validate(SoftmigMigration *m)
{
	Oid			lowner = softmig_rel_owner(m->legacy);
	Oid			towner = softmig_rel_owner(m->target);
	ListCell   *c;
	ListCell   *e;
	List	   *acols;
	List	   *aexprs;
	SPIPlanPtr	plan;
	TupleDesc	aggdesc;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	forboth(c, m->fwd_cols, e, m->fwd_exprs)
		softmig_check_mapping_expression(lfirst(e),
										 psprintf("forward mapping of column \"%s\"", (char *) lfirst(c)),
										 m->legacy, towner, false, false);
	softmig_otm_aggregated_cols(m, &acols, &aexprs);
	forboth(c, acols, e, aexprs)
		check_aggregate(m, lfirst(e), psprintf("backward mapping of column \"%s\"", (char *) lfirst(c)), false);
	if (m->representable)
		check_aggregate(m, m->representable, "option representable", true);

	/* legacy's statements, over legacy's row type */
	fake_transition(m->legacy);
	prepare_check(softmig_otm_sql(m, OTM_MIRROR_UPSERT, m->legacy, true, false), towner);
	prepare_check(softmig_otm_sql(m, OTM_MIRROR_MOVE, m->legacy, true, true), towner);
	prepare_check(softmig_otm_sql(m, OTM_MIRROR_DELETE, m->legacy, false, true), towner);
	SPI_finish();

	/* the target's, over the target's row type */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	fake_transition(m->target);
	prepare_check(softmig_otm_sql(m, OTM_LOCK, m->target, true, true), towner);
	softmig_enter_owner_context(towner, &save_nest, &save_user, &save_sec);
	plan = SPI_prepare(softmig_otm_sql(m, OTM_AGGREGATE, m->target, true, true), 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	aggdesc = CreateTupleDescCopy(((CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan)))->resultDesc);
	SPI_freeplan(plan);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	softmig_spi_register_rows(OTM_AGG, InvalidOid, aggdesc, tuplestore_begin_heap(false, false, work_mem), 0);
	prepare_check(softmig_otm_sql(m, OTM_PROJECT, m->target, true, true), lowner);
	prepare_check(softmig_otm_sql(m, OTM_BAD_KEYS, m->target, true, true), towner);
	SPI_finish();
}

/*
 * otm_compare
 *		Run statement kind (OTM_PARITY, or OTM_INSPECT for key) as the
 *		legacy table's owner in the read-only context, after checking that
 *		the caller may read both tables (42501, as parity and inspect do).
 *		The caller is connected to SPI; the rows are in SPI_tuptable:
 *		kind, key, legacy set (expansion), target set.
 */
static void
otm_compare(SoftmigMigration *m, OtmStmt kind, Jsonb *key, const char *what)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	int			nargs = (kind == OTM_PARITY) ? 0 : 1;
	char		nulls[1] = {key ? ' ' : 'n'};

	softmig_check_read_access(m->legacy, m->target, GetUserId(), what);
	softmig_enter_readonly_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec, &save_ro);
	values[0] = key ? JsonbPGetDatum(key) : (Datum) 0;
	softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(m, otm_text(m, kind, InvalidOid, false, false),
															nargs, argtypes),
										values, nulls, true, 0),
					   SPI_OK_SELECT, "compare a one_to_many migration");
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
}

/*
 * parity_kind
 *		What parity compares in m's state: while legacy is the authority
 *		(legacy, mirrored) each legacy row's expansion with its target set;
 *		once the target is (new_write on) each legacy row with the aggregate
 *		of its set, which is what the projection writes.
 */
static OtmStmt
parity_kind(SoftmigMigration *m)
{
	return (m->state == SM_LEGACY || m->state == SM_MIRRORED) ? OTM_PARITY : OTM_PARITY_AGG;
}

/*
 * text_or_null
 *		Column col of the current SPI row as a text datum (nulls[i] set).
 */
static Datum
text_or_null(HeapTuple tup, int col, bool *isnull)
{
	char	   *v = SPI_getvalue(tup, SPI_tuptable->tupdesc, col);

	*isnull = (v == NULL);
	return v ? CStringGetTextDatum(v) : (Datum) 0;
}

/*
 * quarantined_keys
 *		The quarantined entities of m (legacy keys as jsonb, typed like
 *		legacy's key columns), read as the catalog owner; parity skips them.
 *		The caller is connected to SPI; the list lives in its context.
 */
static List *
quarantined_keys(SoftmigMigration *m)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(m->id)};
	Oid			save_user;
	int			save_sec;
	List	   *result = NIL;

	softmig_become_catalog_owner(&save_user, &save_sec);
	softmig_spi_expect(SPI_execute_with_args("SELECT k FROM softmig._quarantined_keys($1) AS k WHERE k IS NOT NULL",
											 1, argtypes, values, NULL, true, 0),
					   SPI_OK_SELECT, "read the quarantine");
	softmig_set_user(save_user, save_sec);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		result = lappend(result, DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[i],
																  SPI_tuptable->tupdesc, 1, &isnull)));
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/*
 * is_quarantined
 *		Is row i of the last comparison (its column 2 the entity's legacy
 *		key) one of the quarantined entities qkeys?
 */
static bool
is_quarantined(List *qkeys, uint64 i)
{
	ListCell   *lc;
	bool		isnull;
	Jsonb	   *key;

	if (qkeys == NIL)
		return false;
	key = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	if (isnull)
		return false;
	foreach(lc, qkeys)
	{
		if (compareJsonbContainers(&((Jsonb *) lfirst(lc))->root, &key->root) == 0)
			return true;
	}
	return false;
}

/*
 * softmig_otm_parity_rows
 *		softmig.parity for a one-to-many migration: one row per entity whose
 *		legacy row's expansion and target set differ as multisets (kind
 *		missing_in_target, missing_in_legacy or mismatch, the legacy key,
 *		field NULL, both sets as jsonb arrays), into ts with desc.
 */
void
softmig_otm_parity_rows(SoftmigMigration *m, Tuplestorestate *ts, TupleDesc desc)
{
	List	   *qkeys;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	qkeys = quarantined_keys(m);
	otm_compare(m, parity_kind(m), NULL, "softmig.parity");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		values[5];
		bool		nulls[5] = {false, false, true, false, false};
		bool		isnull;

		if (is_quarantined(qkeys, i))
			continue;			/* quarantined entities are left out */
		values[0] = text_or_null(tup, 1, &nulls[0]);
		values[1] = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		values[2] = (Datum) 0;
		values[3] = text_or_null(tup, 3, &nulls[3]);
		values[4] = text_or_null(tup, 4, &nulls[4]);
		tuplestore_putvalues(ts, desc, values, nulls);
	}
	SPI_finish();
}

/*
 * softmig_otm_parity_summary
 *		softmig._parity_summary for a one-to-many migration: the counts per
 *		kind (entities), up to sample legacy keys of each, the compared
 *		columns and the row counts of both tables.
 */
Datum
softmig_otm_parity_summary(SoftmigMigration *m, int sample)
{
	static const char *const kinds[] = {"missing_in_target", "missing_in_legacy", "mismatch"};
	StringInfoData samples[3];
	uint64		found[3] = {0, 0, 0};
	StringInfoData out;
	ListCell   *lc;
	Datum		result;
	bool		isnull;

	List	   *qkeys;
	uint64		skipped = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	qkeys = quarantined_keys(m);
	otm_compare(m, parity_kind(m), NULL, "softmig.parity");
	for (int k = 0; k < 3; k++)
		initStringInfo(&samples[k]);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *kind = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (is_quarantined(qkeys, i))
		{
			skipped++;			/* quarantined entities are left out */
			continue;
		}

		for (int k = 0; k < 3; k++)
		{
			if (strcmp(kind, kinds[k]) != 0)
				continue;
			if (found[k]++ < (uint64) sample)
				appendStringInfo(&samples[k], "%s%s", found[k] > 1 ? ", " : "",
								 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		}
	}
	initStringInfo(&out);
	appendStringInfo(&out, "{\"cardinality\": \"one_to_many\", \"missing_in_target\": " UINT64_FORMAT
					 ", \"missing_in_legacy\": " UINT64_FORMAT ", \"mismatch\": " UINT64_FORMAT
					 ", \"mismatch_fields\": {}, \"quarantined_entities_skipped\": " UINT64_FORMAT
					 ", \"sample\": {",
					 found[0], found[1], found[2], skipped);
	for (int k = 0; k < 3; k++)
		appendStringInfo(&out, "%s\"%s\": [%s]", k ? ", " : "", kinds[k], samples[k].data);
	appendStringInfoString(&out, "}, \"compared_fields\": [");
	foreach(lc, m->fwd_cols)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoString(&out, ", ");
		escape_json(&out, lfirst(lc));
	}
	softmig_spi_expect(SPI_execute(psprintf("SELECT (SELECT pg_catalog.count(*) FROM %s), (SELECT pg_catalog.count(*) FROM %s)",
											softmig_qualified_relname(m->legacy),
											softmig_qualified_relname(m->target)), true, 1),
					   SPI_OK_SELECT, "count the rows of a one_to_many migration");
	appendStringInfo(&out, "], \"rows_legacy\": " INT64_FORMAT ", \"rows_target\": " INT64_FORMAT "}",
					 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
					 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)));
	result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)), false, -1);
	SPI_finish();
	return result;
}

/*
 * softmig_otm_inspect
 *		softmig.inspect for a one-to-many migration: the entity of legacy
 *		key "key" (exactly the legacy key columns, 22023 otherwise): its
 *		legacy row, the row's expansion, the target set (with the target's
 *		own columns) and how they compare.
 */
Datum
softmig_otm_inspect(SoftmigMigration *m, Jsonb *key)
{
	StringInfoData sql;
	StringInfoData out;
	Datum		result;
	ListCell   *c;
	ListCell   *e;
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1] = {JsonbPGetDatum(key)};
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	char	   *parity = "absent";
	char	   *expansion = "[]";
	char	   *aggregate = "null";
	char	   *legacy_row;
	char	   *target_set;
	char	   *quarantine = NULL;

	/* the key names exactly the legacy key columns */
	{
		JsonbIterator *it = JsonbIteratorInit(&key->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		int			n = 0;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				char	   *k = pnstrdup(v.val.string.val, v.val.string.len);

				if (!softmig_str_member(m->legacy_key, k))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("\"%s\" is not a key column of migration \"%s\"", k, m->name)));
				n++;
			}
		}
		if (!JB_ROOT_IS_OBJECT(key) || n != list_length(m->legacy_key))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key must name every key column of migration \"%s\" and nothing else", m->name)));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	otm_compare(m, OTM_INSPECT, key, "softmig.inspect");
	if (SPI_processed > 0)
	{
		parity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		expansion = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		if (expansion == NULL)
			expansion = "[]";
	}
	otm_compare(m, OTM_PARITY_AGG, key, "softmig.inspect");
	if (SPI_processed > 0)
	{
		aggregate = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
		if (aggregate == NULL)
			aggregate = "null";
		if (parity_kind(m) == OTM_PARITY_AGG)
			parity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	}

	/* the legacy row and the target set as they are */
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT (SELECT pg_catalog.to_jsonb(l) FROM %s l, pg_catalog.jsonb_populate_record(NULL::%s, $1) c WHERE ",
					 softmig_qualified_relname(m->legacy), softmig_qualified_relname(m->legacy));
	foreach(c, m->legacy_key)
		appendStringInfo(&sql, "%sl.%s = c.%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	appendStringInfo(&sql, "), (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t) ORDER BY t.ctid), '[]') "
					 "FROM %s t, pg_catalog.jsonb_populate_record(NULL::%s, $1) c WHERE ",
					 softmig_qualified_relname(m->target), softmig_qualified_relname(m->legacy));
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(&sql, "%st.%s = (c.%s)::%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(e)), quote_identifier(lfirst(c)),
						 softmig_otm_col_type(m->target, lfirst(e)));
	appendStringInfoChar(&sql, ')');
	softmig_enter_readonly_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec, &save_ro);
	softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(m, sql.data, 1, argtypes), values, NULL, true, 1),
					   SPI_OK_SELECT, "inspect a one_to_many migration");
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	legacy_row = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	target_set = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

	/* the quarantine of the entity (catalog data, as its owner) */
	{
		Oid			qtypes[2] = {INT4OID, JSONBOID};
		Datum		qvalues[2] = {Int32GetDatum(m->id), JsonbPGetDatum(key)};

		softmig_become_catalog_owner(&save_user, &save_sec);
		softmig_spi_expect(SPI_execute_with_args("SELECT pg_catalog.to_jsonb(q) OPERATOR(pg_catalog.-) 'migration_id' "
												 "FROM softmig.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) $1 "
												 "AND q.key OPERATOR(pg_catalog.=) softmig._key_typed($1, $2)",
												 2, qtypes, qvalues, NULL, true, 1),
						   SPI_OK_SELECT, "read the quarantine");
		softmig_set_user(save_user, save_sec);
		if (SPI_processed > 0)
			quarantine = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	}

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"migration\": ");
	escape_json(&out, m->name);
	appendStringInfo(&out, ", \"cardinality\": \"one_to_many\", \"key\": %s, \"parity\": \"%s\", "
					 "\"compares\": \"%s\", \"legacy\": %s, \"expansion\": %s, \"target\": %s, \"aggregate\": %s, "
					 "\"flags\": {\"quarantined\": %s, \"quarantine\": %s}}",
					 JsonbToCString(NULL, &key->root, 0), parity,
					 parity_kind(m) == OTM_PARITY ? "expansion" : "aggregate",
					 legacy_row ? legacy_row : "null", expansion, target_set, aggregate,
					 quarantine ? "true" : "false", quarantine ? quarantine : "null");
	result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)), false, -1);
	SPI_finish();
	return result;
}
