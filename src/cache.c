/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  Per-backend cache of migration definitions used by the triggers.
 *
 *	  Triggers never read the catalog per row or per statement: they look up
 *	  a SoftmigMigration by id in a backend-local hash table.  An entry is
 *	  (re)loaded from softmig.migrations and softmig.mappings with the latest
 *	  snapshot, so a state change committed by another backend is seen even
 *	  inside an older REPEATABLE READ transaction.  Entries are invalidated by
 *	  relcache invalidation of either table: every state change, trigger
 *	  change or DDL on the tables sends one, and a writer processes it when
 *	  it acquires its lock on the table, i.e. after the state change that
 *	  held the conflicting lock has committed.
 *
 *	  A load reads several catalog tables, and locking each of them
 *	  processes pending invalidations.  An invalidation processed during a
 *	  load may belong to a state change that committed after the load took
 *	  its snapshot; it has then been consumed, and the entry would be marked
 *	  valid with the old state while no later lock brings the invalidation
 *	  back.  So every invalidation bumps a counter, and a load during which
 *	  the counter moved is done again (softmig_get_migration).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "softmig.h"

static HTAB *migration_cache = NULL;

/* Bumped by every relcache invalidation this backend processes. */
static uint64 cache_inval_count = 0;

/* Test hook: advisory lock a load waits for after its first read. */
static int	cache_pause_lock = 0;

/* Retired entries' memory, freed when no trigger frame can be using it. */
static List *graveyard = NIL;
static List *graveyard_plans = NIL;

/*
 * forget_entry_memory
 *		Clear an entry's pointers into its memory context (the context, its
 *		plans and the lists allocated in it), for a new entry or one whose
 *		memory was retired.  Takes no lock; frees nothing: the caller owns
 *		(or has parked) what they pointed to.
 */
static void
forget_entry_memory(SoftmigMigration *m)
{
	m->cxt = NULL;
	m->plans = NULL;
	m->part_sides = NIL;
	m->triggers_ok = NIL;
	m->split_attrs = NIL;
	m->split_rels = NIL;
}

/*
 * retire_entry_memory
 *		Free the plans and memory of a stale entry now, or park them until
 *		no mirroring is in progress (a trigger frame further up the stack may
 *		still be executing one of the plans).
 */
static void
retire_entry_memory(SoftmigMigration *m)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	for (SoftmigRelPlans *p = m->plans; p; p = p->next)
	{
		SPIPlanPtr	plans[] = {p->upsert, p->delete, p->move, p->keyjson_new, p->keyjson_old,
		p->newonly, p->upsert_row, p->field_project, p->keyjson_row, p->update,
		p->delete_row, p->split_lock[0], p->split_lock[1]};

		for (int i = 0; i < lengthof(plans); i++)
			if (plans[i] != NULL)
				graveyard_plans = lappend(graveyard_plans, plans[i]);
	}
	if (m->cxt)
		graveyard = lappend(graveyard, m->cxt);
	MemoryContextSwitchTo(old);
	forget_entry_memory(m);

	if (softmig_mirror_depth == 0)
	{
		ListCell   *lc;

		foreach(lc, graveyard_plans)
			SPI_freeplan((SPIPlanPtr) lfirst(lc));
		foreach(lc, graveyard)
			MemoryContextDelete((MemoryContext) lfirst(lc));
		list_free(graveyard_plans);
		list_free(graveyard);
		graveyard_plans = NIL;
		graveyard = NIL;
	}
}

/*
 * relcache_callback
 *		Mark entries that involve the invalidated relation as stale.  Must
 *		not allocate or do catalog access.
 */
static void
relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	SoftmigMigration *m;

	cache_inval_count++;
	if (migration_cache == NULL)
		return;
	hash_seq_init(&seq, migration_cache);
	while ((m = hash_seq_search(&seq)) != NULL)
	{
		if (!OidIsValid(relid) || m->legacy == relid || m->target == relid)
			m->valid = false;
		else
		{
			ListCell   *lc;

			for (SoftmigRelPlans *p = m->plans; p; p = p->next)
			{
				if (p->relid == relid)
					m->valid = false;
			}
			foreach(lc, m->part_sides)
			{
				if (((SoftmigPartSide *) lfirst(lc))->relid == relid)
					m->valid = false;
			}
			if (list_member_oid(m->triggers_ok, relid) ||
				list_member_oid(m->split_rels, relid))
				m->valid = false;
		}
	}
}

/*
 * softmig_cache_init
 *		Register the invalidation callback and define the cache's test hook
 *		softmig.cache_pause_lock (superuser only).  Called from _PG_init.
 */
void
softmig_cache_init(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int32);
	ctl.entrysize = sizeof(SoftmigMigration);
	migration_cache = hash_create("softmig migrations", 16, &ctl,
								  HASH_ELEM | HASH_BLOBS);
	CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
	DefineCustomIntVariable("softmig.cache_pause_lock",
							"Test hook: advisory lock a load of a migration's definition waits for after its first read.",
							"0 disables it.  For isolation tests only.",
							&cache_pause_lock,
							0, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
}

/*
 * load_migration
 *		Fill *m from the catalog using the latest snapshot.  Returns false if
 *		the migration no longer exists.  Runs its own SPI connection; the
 *		queries are fully schema-qualified.
 */
static bool
load_migration(SoftmigMigration *m, int32 id)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(id)};
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;
	MemoryContext cxt;
	MemoryContext old;
	bool		has_groups;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* groups came with 0.2.0; the SQL of 0.1.0 may still be installed */
	has_groups = OidIsValid(get_relname_relid("group_members",
											  get_namespace_oid("softmig", false)));
	(void) softmig_spi_read(psprintf("SELECT name, legacy, target, state::pg_catalog.text, legacy_key, target_key, options, "
									 "new_only, "
									 "COALESCE((SELECT e.open FROM softmig.envelope e WHERE e.migration_id OPERATOR(pg_catalog.=) $1), true), "
									 "EXISTS (SELECT 1 FROM softmig.shadow s WHERE s.migration_id OPERATOR(pg_catalog.=) $1), "
									 "(SELECT pg_catalog.count(*) FROM softmig.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) $1), "
									 "%s, "
									 "COALESCE((SELECT o.id FROM softmig.migrations o WHERE o.name OPERATOR(pg_catalog.=) (sm_m.options OPERATOR(pg_catalog.->>) 'attribute_of')), 0), "
									 "ARRAY(SELECT a.id FROM softmig.migrations a WHERE (a.options OPERATOR(pg_catalog.->>) 'attribute_of') OPERATOR(pg_catalog.=) sm_m.name ORDER BY a.id), "
									 "ARRAY(SELECT t FROM softmig.migrations a, LATERAL (VALUES (a.target::pg_catalog.oid), (a.legacy::pg_catalog.oid)) v(t) WHERE (a.options OPERATOR(pg_catalog.->>) 'attribute_of') OPERATOR(pg_catalog.=) sm_m.name ORDER BY a.id), "
									 "EXISTS (SELECT 1 FROM softmig.migrations x WHERE x.target OPERATOR(pg_catalog.=) sm_m.target AND x.id OPERATOR(pg_catalog.<>) sm_m.id "
									 "AND (x.name OPERATOR(pg_catalog.=) (sm_m.options OPERATOR(pg_catalog.->>) 'attribute_of') OR (x.options OPERATOR(pg_catalog.->>) 'attribute_of') OPERATOR(pg_catalog.=) sm_m.name)) "
									 "FROM softmig.migrations sm_m WHERE id OPERATOR(pg_catalog.=) $1",
									 has_groups ?
									 "COALESCE((SELECT gm.group_id FROM softmig.group_members gm WHERE gm.migration_id OPERATOR(pg_catalog.=) $1), 0)" :
									 "0"),
							1, argtypes, values, GetLatestSnapshot(), true, 1);
	if (SPI_processed == 0)
	{
		SPI_finish();
		return false;
	}

	cxt = AllocSetContextCreate(CacheMemoryContext, "softmig migration",
								ALLOCSET_SMALL_SIZES);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(cxt);
	m->cxt = cxt;
	m->name = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	m->legacy = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	m->target = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	m->state = softmig_state_by_name(TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull)));
	if (get_rel_name(m->legacy) == NULL || get_rel_name(m->target) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
				 errmsg("a table of migration \"%s\" no longer exists", m->name),
				 errhint("Drop the migration with softmig.drop_migration, or restore the table.")));
	m->legacy_key = softmig_text_array_list(SPI_getbinval(tup, desc, 5, &isnull));
	m->target_key = softmig_text_array_list(SPI_getbinval(tup, desc, 6, &isnull));
	m->options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 7, &isnull));
	m->new_only = softmig_text_array_list(SPI_getbinval(tup, desc, 8, &isnull));
	m->envelope_open = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
	m->shadow_disabled = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	m->n_quarantined = DatumGetInt64(SPI_getbinval(tup, desc, 11, &isnull));
	m->group_id = DatumGetInt32(SPI_getbinval(tup, desc, 12, &isnull));
	m->split_owner = DatumGetInt32(SPI_getbinval(tup, desc, 13, &isnull));
	m->split_attrs = NIL;
	{
		ArrayType  *ids = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 14, &isnull));
		Datum	   *elems;
		int			n;

		deconstruct_array(ids, INT4OID, sizeof(int32), true, TYPALIGN_INT, &elems, NULL, &n);
		for (int i = 0; i < n; i++)
			m->split_attrs = lappend_int(m->split_attrs, DatumGetInt32(elems[i]));
		ids = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 15, &isnull));
		deconstruct_array(ids, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, NULL, &n);
		m->split_rels = NIL;
		for (int i = 0; i < n; i++)
			m->split_rels = lappend_oid(m->split_rels, DatumGetObjectId(elems[i]));
	}
	m->split_merge = DatumGetBool(SPI_getbinval(tup, desc, 16, &isnull));
	m->representable = softmig_option_text(m, "representable");
	{
		char	   *mode = softmig_option_text(m, "on_new_only");

		m->reject_new_only = (mode != NULL && strcmp(mode, "reject") == 0);
	}
	m->require_opkey = softmig_option_bool(m, "require_operation_key", false);
	{
		char	   *card = softmig_option_text(m, "cardinality");

		m->one_to_many = (card != NULL && strcmp(card, "one_to_many") == 0);
	}
	m->otm_sql = NIL;
	MemoryContextSwitchTo(old);

	/* the tests' hook: held between the first read and the next ones */
	softmig_pause_point(cache_pause_lock, false, "cache");

	/*
	 * per-field authority: fields the target owns and the legacy columns
	 * carrying them
	 */
	(void) softmig_spi_read("SELECT field::pg_catalog.text, legacy_columns FROM softmig.field_authority "
							"WHERE migration_id OPERATOR(pg_catalog.=) $1 AND side OPERATOR(pg_catalog.=) 'new' "
							"ORDER BY field",
							1, argtypes, values, GetLatestSnapshot(), true, 0);
	old = MemoryContextSwitchTo(cxt);
	m->new_fields = m->new_legacy_cols = NIL;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];

		m->new_fields = lappend(m->new_fields,
								TextDatumGetCString(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull)));
		m->new_legacy_cols = list_concat(m->new_legacy_cols,
										 softmig_text_array_list(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull)));
	}
	MemoryContextSwitchTo(old);

	(void) softmig_spi_read("SELECT direction, column_name::pg_catalog.text, expression "
							"FROM softmig.mappings WHERE migration_id OPERATOR(pg_catalog.=) $1 "
							"ORDER BY direction, ordinal",
							1, argtypes, values, GetLatestSnapshot(), true, 0);

	old = MemoryContextSwitchTo(cxt);
	m->fwd_cols = m->fwd_exprs = m->bwd_cols = m->bwd_exprs = NIL;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		char	   *dir = TextDatumGetCString(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
		char	   *col = TextDatumGetCString(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
		char	   *expr = TextDatumGetCString(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));

		if (strcmp(dir, "forward") == 0)
		{
			m->fwd_cols = lappend(m->fwd_cols, col);
			m->fwd_exprs = lappend(m->fwd_exprs, expr);
		}
		else
		{
			m->bwd_cols = lappend(m->bwd_cols, col);
			m->bwd_exprs = lappend(m->bwd_exprs, expr);
		}
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	m->plans = NULL;
	m->part_sides = NIL;
	m->triggers_ok = NIL;
	m->valid = true;
	return true;
}

/*
 * softmig_option_text
 *		The value of a top-level option of the migration as text (jsonb
 *		strings unquoted), or NULL when it is absent or JSON null.  Result
 *		is palloc'd in the current context.
 */
char *
softmig_option_text(SoftmigMigration *m, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&m->options->root, JB_FOBJECT, &k);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvBool)
		return pstrdup(v->val.boolean ? "true" : "false");
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	return JsonbToCString(NULL, &m->options->root, VARSIZE(m->options));
}

/*
 * softmig_option_bool
 *		A boolean option of the migration; dflt when absent.
 */
bool
softmig_option_bool(SoftmigMigration *m, const char *key, bool dflt)
{
	char	   *v = softmig_option_text(m, key);

	if (v == NULL)
		return dflt;
	return strcmp(v, "true") == 0;
}

/*
 * softmig_get_migration
 *		Return the cached definition of migration "id", loading it if absent
 *		or stale (again if an invalidation arrived during the load); NULL if
 *		the migration does not exist.  The result stays valid until the next
 *		invalidation is processed.  Takes ACCESS SHARE on the catalog tables
 *		it reads (held to the end of the transaction).
 */
SoftmigMigration *
softmig_get_migration(int32 id)
{
	SoftmigMigration *m;
	bool		found;

	/* Process pending invalidations so a committed state change is seen. */
	AcceptInvalidationMessages();

	m = hash_search(migration_cache, &id, HASH_ENTER, &found);
	if (found && m->valid)
		return m;
	if (found)
		retire_entry_memory(m);
	else
		forget_entry_memory(m);
	for (;;)
	{
		uint64		before = cache_inval_count;

		m->valid = false;
		if (!load_migration(m, id))
		{
			hash_search(migration_cache, &id, HASH_REMOVE, NULL);
			return NULL;
		}

		/*
		 * An invalidation processed while the load read the catalog may
		 * come from a change its first read did not see (see the header):
		 * read again.  Each pass needs another invalidation inside its own
		 * reads, so this ends as soon as the catalog holds still for one;
		 * and a pass after the first finds the catalog tables locked by
		 * this transaction already, so its reads rarely process any.
		 */
		if (cache_inval_count == before)
			return m;
		retire_entry_memory(m);
	}
}

/*
 * softmig_require_migration
 *		softmig_get_migration, raising 42704 when the migration does not
 *		exist (an internal function called with an id that names none).
 */
SoftmigMigration *
softmig_require_migration(int32 id)
{
	SoftmigMigration *m = softmig_get_migration(id);

	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("migration %d does not exist", id)));
	return m;
}

/*
 * softmig_side_of
 *		Which table of migration m the relation relid is, or belongs to as a
 *		partition.  Reads pg_inherits for partitions (the caller caches the
 *		answer in its per-relation plans).
 */
SoftmigSide
softmig_side_of(SoftmigMigration *m, Oid relid)
{
	List	   *anc;
	ListCell   *lc;

	if (relid == m->legacy)
		return SIDE_LEGACY;
	if (relid == m->target)
		return SIDE_TARGET;
	if (!get_rel_relispartition(relid))
		return SIDE_NONE;
	anc = get_partition_ancestors(relid);
	foreach(lc, anc)
	{
		if (lfirst_oid(lc) == m->legacy)
			return SIDE_LEGACY;
		if (lfirst_oid(lc) == m->target)
			return SIDE_TARGET;
	}
	return SIDE_NONE;
}

/*
 * softmig_side_of_cached
 *		softmig_side_of, remembering the answer for partitions in the
 *		migration's cache entry so a statement trigger never reads the
 *		catalog twice for the same relation.
 */
SoftmigSide
softmig_side_of_cached(SoftmigMigration *m, Oid relid)
{
	ListCell   *lc;
	SoftmigPartSide *ps;
	SoftmigSide side;
	MemoryContext old;

	if (relid == m->legacy)
		return SIDE_LEGACY;
	if (relid == m->target)
		return SIDE_TARGET;
	foreach(lc, m->part_sides)
	{
		ps = lfirst(lc);
		if (ps->relid == relid)
			return ps->side;
	}
	side = softmig_side_of(m, relid);
	old = MemoryContextSwitchTo(m->cxt);
	ps = palloc(sizeof(SoftmigPartSide));
	ps->relid = relid;
	ps->side = side;
	m->part_sides = lappend(m->part_sides, ps);
	MemoryContextSwitchTo(old);
	return side;
}

PG_FUNCTION_INFO_V1(softmig_envelope_open_now);
/*
 * softmig_envelope_open_now
 *		softmig._envelope_open_now(migration_id): is the rollback envelope
 *		open, read with the latest snapshot, so a state change that waited
 *		for table locks sees a new-only write committed meanwhile even in a
 *		REPEATABLE READ transaction.
 */
Datum
softmig_envelope_open_now(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {PG_GETARG_DATUM(0)};
	SPIPlanPtr	plan;
	bool		open = true;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare("SELECT open FROM softmig.envelope WHERE migration_id OPERATOR(pg_catalog.=) $1",
					   1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading the envelope failed");
	if (SPI_processed == 1)
		open = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_BOOL(open);
}

PG_FUNCTION_INFO_V1(softmig_invalidate);
/*
 * softmig_invalidate
 *		softmig._invalidate(legacy, target): queue relcache invalidations of
 *		both tables so every backend reloads the migration's definition at
 *		its next lock on either table.  Called by every state change.
 */
Datum
softmig_invalidate(PG_FUNCTION_ARGS)
{
	for (int i = 0; i < 2; i++)
	{
		Oid			relid = PG_GETARG_OID(i);

		/* a table dropped by hand has nothing left to invalidate */
		if (get_rel_name(relid) != NULL)
			CacheInvalidateRelcacheByRelid(relid);
	}
	PG_RETURN_VOID();
}
