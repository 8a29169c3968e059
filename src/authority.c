/*-------------------------------------------------------------------------
 *
 * authority.c
 *	  Per-field authority in the write trigger (set_field_authority, state
 *	  mirrored): an UPDATE may change only the fields its table owns
 *	  (softmig_authority_check_columns), the target's writes are logged per
 *	  field for hydrate (softmig_authority_log_field_writes), and the
 *	  target-owned fields of a target UPDATE are carried to the legacy
 *	  columns that hold them (softmig_authority_project_fields); and the
 *	  same rule across a DELETE and a re-INSERT of the same entity:
 *
 *	  In state mirrored a field handed to the target (set_field_authority)
 *	  may be changed only by the target; legacy keeps a copy in the columns
 *	  that carry it, and an UPDATE of legacy that changes one of them is
 *	  refused (softmig_authority_check_columns, below).  An application can also
 *	  "update" a row by deleting and inserting it again in one transaction
 *	  (an ORM's replace, DELETE then INSERT, or a MERGE that deletes a row
 *	  and inserts one with the same key: PostgreSQL fires its DELETE
 *	  statement triggers first).  The DELETE's mirror removes the target
 *	  row, so without more the INSERT would create the target row from
 *	  legacy's values, overwriting the target's field with whatever legacy
 *	  wrote: a stale value.
 *
 *	  So within a transaction the same rule as for UPDATE applies: a legacy
 *	  row deleted and inserted again with the same key must carry the same
 *	  values in the carrying columns, or the INSERT is refused (SM001).  A
 *	  row deleted in one transaction and inserted in a later one is a new
 *	  entity, which starts with legacy's values, as any new entity does.
 *
 *	  The write trigger calls softmig_authority_note_deletes for a legacy
 *	  DELETE and softmig_authority_check_inserts for a legacy INSERT (state
 *	  mirrored, fields handed to the target).  Deleted rows are remembered
 *	  per transaction in a backend-local hash table in TopTransactionContext
 *	  as two 64-bit hashes: the key (with each key type's own hash
 *	  function, so keys equal under the unique index match, else of the
 *	  value's bytes) and the carrying columns' exact values (their bytes,
 *	  compared like softmig_authority_check_columns compares UPDATEs).  16 bytes a row,
 *	  whatever the row's width.  Entries follow the subtransaction that made
 *	  them: forgotten when it aborts (its DELETE was undone), handed to the
 *	  parent when it commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

#include "softmig.h"
#include "transwalk.h"

/* Hash key of a deleted entity: the migration and its key's hash. */
typedef struct DeletedKey
{
	int32		migration_id;
	uint64		keyhash;
} DeletedKey;

/* One legacy row deleted by this transaction. */
typedef struct DeletedEntry
{
	DeletedKey	key;			/* hash key */
	uint64		carried;		/* hash of its carrying columns' values */
	SubTransactionId subid;		/* (sub)transaction that deleted it */
} DeletedEntry;

/* Rows deleted by the current transaction (its table is NULL when none). */
static SoftmigXactMemo deleted_memo = {
	"softmig deleted entities", sizeof(DeletedKey), sizeof(DeletedEntry),
	offsetof(DeletedEntry, subid), false, 64, NULL, false
};

/*
 * bytes_hash
 *		Hash of a datum's exact bytes (the data of a varlena, whatever its
 *		header), mixed into seed.
 */
static uint64
bytes_hash(Datum value, Form_pg_attribute att, uint64 seed)
{
	if (att->attbyval)
		return hash_bytes_extended((const unsigned char *) &value, sizeof(Datum), seed);
	if (att->attlen == -1)
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(value);

		return hash_bytes_extended((const unsigned char *) VARDATA_ANY(v),
								   VARSIZE_ANY_EXHDR(v), seed);
	}
	if (att->attlen == -2)
		return hash_bytes_extended((const unsigned char *) DatumGetCString(value),
								   strlen(DatumGetCString(value)), seed);
	return hash_bytes_extended((const unsigned char *) DatumGetPointer(value), att->attlen, seed);
}

/* What to hash of one firing relation, looked up once per statement. */
typedef struct RowHashing
{
	int			nkeys;
	AttrNumber *keyattnos;
	FmgrInfo   *keyhash;		/* type's extended hash, or fn_oid invalid */
	int			ncarried;
	AttrNumber *carriedattnos;
} RowHashing;

/*
 * attno_of
 *		Attribute number of column name in rel; the caller's lists name
 *		columns of the migration's legacy table, so it exists.
 */
static AttrNumber
attno_of(Relation rel, const char *name)
{
	AttrNumber	a = attnameAttNum(rel, name, false);

	if (a <= 0)
		elog(ERROR, "softmig: column \"%s\" missing from table \"%s\"",
			 name, RelationGetRelationName(rel));
	return a;
}

/*
 * row_hashing
 *		Attribute numbers of the legacy key and of the carrying columns in
 *		rel (the legacy table or one of its partitions), and the key types'
 *		hash functions.
 */
static RowHashing *
row_hashing(Relation rel, SoftmigMigration *m)
{
	RowHashing *h = palloc0(sizeof(RowHashing));
	TupleDesc	desc = RelationGetDescr(rel);
	ListCell   *lc;
	int			i = 0;

	h->nkeys = list_length(m->legacy_key);
	h->keyattnos = palloc(sizeof(AttrNumber) * h->nkeys);
	h->keyhash = palloc0(sizeof(FmgrInfo) * h->nkeys);
	foreach(lc, m->legacy_key)
	{
		TypeCacheEntry *tc;

		h->keyattnos[i] = attno_of(rel, lfirst(lc));
		tc = lookup_type_cache(TupleDescAttr(desc, h->keyattnos[i] - 1)->atttypid,
							   TYPECACHE_HASH_EXTENDED_PROC);
		if (OidIsValid(tc->hash_extended_proc))
			fmgr_info(tc->hash_extended_proc, &h->keyhash[i]);
		i++;
	}
	h->ncarried = list_length(m->new_legacy_cols);
	h->carriedattnos = palloc(sizeof(AttrNumber) * Max(h->ncarried, 1));
	i = 0;
	foreach(lc, m->new_legacy_cols)
		h->carriedattnos[i++] = attno_of(rel, lfirst(lc));
	return h;
}

/*
 * hash_key
 *		The hash of one row's legacy key: each value with its type's hash
 *		function (collation-aware), or its bytes when the type has none.
 */
static uint64
hash_key(RowHashing *h, TupleDesc desc, TupleTableSlot *slot)
{
	uint64		hash = 0;

	for (int i = 0; i < h->nkeys; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, h->keyattnos[i] - 1);
		Datum		v = slot->tts_values[h->keyattnos[i] - 1];

		if (slot->tts_isnull[h->keyattnos[i] - 1])
			hash = hash_combine64(hash, UINT64CONST(0x9e3779b97f4a7c15));
		else if (OidIsValid(h->keyhash[i].fn_oid))
			hash = hash_combine64(hash,
								  DatumGetUInt64(FunctionCall2Coll(&h->keyhash[i], att->attcollation,
																   v, UInt64GetDatum(0))));
		else
			hash = hash_combine64(hash, bytes_hash(v, att, 0));
	}
	return hash;
}

/*
 * hash_carried
 *		The hash of one row's carrying columns, exact (their bytes).
 */
static uint64
hash_carried(RowHashing *h, TupleDesc desc, TupleTableSlot *slot)
{
	uint64		hash = 0;

	for (int i = 0; i < h->ncarried; i++)
	{
		int			idx = h->carriedattnos[i] - 1;

		if (slot->tts_isnull[idx])
			hash = hash_combine64(hash, UINT64CONST(0x9e3779b97f4a7c15));
		else
			hash = hash_combine64(hash, bytes_hash(slot->tts_values[idx], TupleDescAttr(desc, idx), 1));
	}
	return hash;
}

/*
 * scan_rows
 *		Walk a transition table of the legacy table rel: for a DELETE's
 *		(check false) remember each row in the deleted table; for an
 *		INSERT's (check true) look each row up there and return false at the
 *		first that was deleted with other values in the carrying columns.
 *		The deleted table must exist.
 */
static bool
scan_rows(Tuplestorestate *ts, Relation rel, SoftmigMigration *m, bool check)
{
	TupleDesc	desc = RelationGetDescr(rel);
	RowHashing *h = row_hashing(rel, m);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	bool		ok = true;

	tuplestore_select_read_pointer(ts, 0);
	tuplestore_rescan(ts);
	while (ok && tuplestore_gettupleslot(ts, true, false, slot))
	{
		DeletedKey	k;
		DeletedEntry *e;

		slot_getallattrs(slot);
		memset(&k, 0, sizeof(k));
		k.migration_id = m->id;
		k.keyhash = hash_key(h, desc, slot);
		e = hash_search(deleted_memo.table, &k, check ? HASH_FIND : HASH_ENTER, NULL);
		if (!check)
		{
			e->carried = hash_carried(h, desc, slot);
			e->subid = GetCurrentSubTransactionId();
		}
		else if (e != NULL && e->carried != hash_carried(h, desc, slot))
			ok = false;
	}
	ExecDropSingleTupleTableSlot(slot);
	return ok;
}

/*
 * softmig_authority_note_deletes
 *		A legacy DELETE in state mirrored with fields handed to the target:
 *		remember each deleted row (its key and carrying columns, hashed) for
 *		the rest of the transaction.  Reads the OLD transition table; the
 *		hash table is created in TopTransactionContext on first use.
 */
void
softmig_authority_note_deletes(TriggerData *td, SoftmigMigration *m)
{
	(void) softmig_xact_memo_table(&deleted_memo);
	(void) scan_rows(td->tg_oldtable, td->tg_relation, m, false);
}

/*
 * softmig_authority_check_inserts
 *		A legacy INSERT in state mirrored with fields handed to the target:
 *		refuse it (SM001) if a row it inserted has the key of a row this
 *		transaction deleted but other values in the columns that carry the
 *		target's fields.  Reads the NEW transition table; no catalog access
 *		beyond the type cache.
 */
void
softmig_authority_check_inserts(TriggerData *td, SoftmigMigration *m)
{
	StringInfoData cols;
	ListCell   *lc;

	if (deleted_memo.table == NULL || hash_get_num_entries(deleted_memo.table) == 0 ||
		scan_rows(td->tg_newtable, td->tg_relation, m, true))
		return;
	initStringInfo(&cols);
	foreach(lc, m->new_legacy_cols)
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", quote_identifier(lfirst(lc)));
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
			 errmsg("INSERT on table \"%s\" refused: it re-inserts a row deleted in this transaction with other values in columns that carry fields migration \"%s\" gives to the target table",
					RelationGetRelationName(td->tg_relation), m->name),
			 errdetail("In state mirrored with per-field authority, legacy may not change the target's fields, by UPDATE or by DELETE and INSERT; the carrying columns are: %s.",
					   cols.data),
			 errhint("Re-insert the row with the values it had, or move the field back with softmig.set_field_authority.")));
}

/*
 * softmig_authority_check_columns
 *		Per-field authority (mirrored): refuse an UPDATE on side "side" that
 *		changes a column the other side owns.  On the target, only the fields
 *		handed to it may change; on legacy, the columns carrying those fields
 *		may not.  Reads the transition tables in step; no catalog access.
 */
void
softmig_authority_check_columns(TriggerData *td, SoftmigMigration *m, SoftmigSide side)
{
	Relation	rel = td->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	TransWalk	w;
	bool	   *guarded = palloc0(sizeof(bool) * desc->natts);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		char	   *name = NameStr(att->attname);
		bool		owned_by_target = false;
		ListCell   *lc;

		bool		mapped = false;

		if (att->attisdropped || att->attgenerated)
			continue;
		foreach(lc, side == SIDE_TARGET ? m->new_fields : m->new_legacy_cols)
		{
			if (strcmp(lfirst(lc), name) == 0)
				owned_by_target = true;
		}
		foreach(lc, m->fwd_cols)
		{
			if (strcmp(lfirst(lc), name) == 0)
				mapped = true;
		}

		/*
		 * target: the mapped fields legacy still owns (target-only columns
		 * are the target's); legacy: the columns carrying handed fields
		 */
		guarded[i] = (side == SIDE_TARGET) ? (mapped && !owned_by_target) : owned_by_target;
	}

	softmig_trans_walk_begin(&w, td, true, true);
	while (softmig_trans_walk_next(&w))
	{
		slot_getallattrs(w.os);
		slot_getallattrs(w.ns);
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!guarded[i] || softmig_attr_unchanged(w.os, w.ns, i, att))
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
					 errmsg("UPDATE of column \"%s\" on table \"%s\" refused: migration \"%s\" gives that field to the %s table",
							NameStr(att->attname), RelationGetRelationName(rel), m->name,
							side == SIDE_TARGET ? "legacy" : "target"),
					 errdetail("In state mirrored with per-field authority, each table may change only the fields it owns."),
					 errhint("softmig.set_field_authority moves a field between the tables.")));
		}
	}
	softmig_trans_walk_end(&w);
}

/*
 * softmig_authority_log_field_writes
 *		Target-side writes in mirrored (per-field authority, overrides):
 *		remember, per entity and field, the transaction that last wrote it,
 *		so hydrate can tell a field written after its snapshot.  Field names
 *		per row come from the transition tables (UPDATE: the columns that
 *		changed; INSERT: all), keys from the keyjson plan in the same order.
 */
void
softmig_authority_log_field_writes(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	static SPIPlanPtr plan = NULL;
	Relation	rel = td->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	bool		is_update = TRIGGER_FIRED_BY_UPDATE(td->tg_event);
	TransWalk	w;
	StringInfoData fields;
	Datum		keys;
	bool		isnull;
	Oid			argtypes[3] = {INT4OID, JSONBOID, JSONBOID};
	Datum		values[3];
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	int			nrows = 0;

	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		return;					/* a deleted entity has no fields to protect */
	softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
	if (SPI_execute_plan(p->keyjson_new, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: computing keys failed");
	keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if (isnull)
		return;

	initStringInfo(&fields);
	appendStringInfoChar(&fields, '[');
	softmig_trans_walk_begin(&w, td, false, is_update);
	while (softmig_trans_walk_next(&w))
	{
		int			nf = 0;

		slot_getallattrs(w.ns);
		if (is_update)
			slot_getallattrs(w.os);
		appendStringInfoString(&fields, nrows++ ? ", [" : "[");
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped || att->attgenerated)
				continue;
			if (is_update && softmig_attr_unchanged(w.os, w.ns, i, att))
				continue;
			appendStringInfoString(&fields, nf++ ? ", " : "");
			escape_json(&fields, NameStr(att->attname));
		}
		appendStringInfoChar(&fields, ']');
	}
	appendStringInfoChar(&fields, ']');
	softmig_trans_walk_end(&w);

	values[0] = Int32GetDatum(m->id);
	values[1] = keys;
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(fields.data));
	softmig_catalog_exec(&plan,
						 "INSERT INTO softmig.field_writes (migration_id, key, field, xid) "
						 "SELECT $1, k.v, f, pg_catalog.pg_current_xact_id() "
						 "FROM pg_catalog.jsonb_array_elements($2) WITH ORDINALITY AS k(v, i) "
						 "JOIN pg_catalog.jsonb_array_elements($3) WITH ORDINALITY AS r(fs, j) "
						 "ON k.i OPERATOR(pg_catalog.=) r.j, "
						 "LATERAL pg_catalog.jsonb_array_elements_text(r.fs) AS f "
						 "ON CONFLICT (migration_id, key, field) DO UPDATE SET xid = EXCLUDED.xid",
						 3, argtypes, values, NULL, SPI_OK_INSERT, "writing field versions");
}

/*
 * softmig_authority_project_fields
 *		Per-field authority (mirrored): carry the target-owned fields of an
 *		UPDATE on the target to the legacy columns that hold them, as the
 *		legacy table's owner with the loop guard raised.
 */
void
softmig_authority_project_fields(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (p->field_project == NULL)
		return;
	softmig_enter_owner_context(p->dst_owner, &save_nest, &save_user, &save_sec);
	softmig_prefer_index_plans(true);
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		if (SPI_execute_plan(p->field_project, NULL, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "softmig: carrying target-owned fields to legacy failed");
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}
