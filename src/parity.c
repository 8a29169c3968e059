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
 *	  Two phases:
 *
 *	  1. Digest.  Each side is read once, in key order, by one statement
 *	     whose rows go straight into a DestReceiver (no tuple copies).  The
 *	     legacy rows are cut into chunks of chunk_rows rows at key
 *	     boundaries; the target rows are assigned to the same key ranges.
 *	     Per chunk and side we keep the row count and two 64-bit sums of
 *	     per-row hashes: a primary digest and an independent guard digest.
 *	     Memory: one boundary key and a few counters per chunk.
 *
 *	  2. Descent.  Only chunks whose count or either digest differ are read
 *	     again, both sides through cursors over the chunk's key range, and
 *	     merged row by row: a key on one side only is missing on the other,
 *	     and a key on both is compared field by field with the type's
 *	     equality operator.  So every reported difference is confirmed (no
 *	     false positives), and memory is bounded by a fetch batch.
 *
 *	  Exactness: a difference can only be missed if a chunk's count and
 *	  both of its digests match although the chunk differs.  The per-row
 *	  hashes are seeded with a random value per run, so this is a
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
 *	  Security: the mapping expressions are user SQL.  They run as the
 *	  caller (the role that passed the ownership gate, or the current user)
 *	  in a security-restricted operation with search_path pinned to
 *	  pg_catalog, pg_temp, row_security off (a policy makes parity fail,
 *	  never silently filter) and transaction_read_only on, so the caller
 *	  needs SELECT on both tables and nothing can be written.  They are
 *	  never evaluated as the catalog owner; only the quarantine list is
 *	  read with the catalog owner's rights.
 *
 *	  Also here: softmig.parity (the SRF), softmig._parity_summary (counts
 *	  and a sample, used by check and the mirrored -> new_write guard),
 *	  softmig._inspect_sides (both sides of one entity, for inspect) and
 *	  the observability GUCs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "parser/parse_relation.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

#include "softmig.h"
#include "observe.h"

/* GUCs (see softmig_observe_init) */
int			softmig_parity_digest_bits = 64;
int			softmig_parity_pause_lock = 0;

#define PSIDE_LEGACY 0
#define PSIDE_TARGET 1

/* rows per cursor fetch in the descent */
#define PARITY_FETCH 1000

/* jsonb_build_object takes at most 100 arguments: build in groups */
#define JSON_PAIRS_PER_CALL 40

typedef enum ParityKind
{
	PK_MISSING_IN_TARGET = 0,
	PK_MISSING_IN_LEGACY = 1,
	PK_MISMATCH = 2
} ParityKind;

static const char *const parity_kind_names[] = {
	"missing_in_target", "missing_in_legacy", "mismatch"
};

/* One compared column, in the target's shape. */
typedef struct PCol
{
	char	   *name;			/* target column */
	char	   *lexpr;			/* the same value computed from legacy columns */
	Oid			typid;
	int32		typmod;
	Oid			collid;			/* collation used to hash, compare, order */
	bool		has_hash;
	FmgrInfo	hash;			/* extended hash proc of the type */
	bool		has_eq;
	FmgrInfo	eq;				/* equality operator's proc */
	FmgrInfo	cmp;			/* btree comparison (key columns only) */
	FmgrInfo	out;			/* output function */
} PCol;

/* One chunk: keys in (previous bound, bound]; bound NULL = unbounded. */
typedef struct PChunk
{
	Datum	   *bound;
	uint64		n[2];
	uint64		d1[2];			/* primary digest */
	uint64		d2[2];			/* guard digest */
} PChunk;

typedef struct ParityCtx ParityCtx;

/* Called for every confirmed difference; values are of the column's type. */
typedef void (*ParityEmit) (ParityCtx *c, ParityKind kind, Datum key,
							int field, Datum lval, bool lnull,
							Datum tval, bool tnull);

struct ParityCtx
{
	int32		id;
	char	   *name;
	Oid			legacy;
	Oid			target;
	char	   *lqual;			/* qualified legacy name */
	char	   *tqual;			/* qualified target name */
	int			nkeys;			/* cols[0 .. nkeys-1] are the key */
	int			ncols;			/* then the strict fields */
	PCol	   *cols;
	char	   *lkeyjson;		/* legacy key as jsonb, over legacy columns */
	char	   *tkeyjson;		/* legacy key as jsonb, over target columns */
	char	   *lmapped;		/* jsonb of every forward-mapped column */
	List	   *lkeycols;		/* legacy key columns */
	List	   *lkeyops;		/* their equality operators */
	List	   *tkeyops;		/* target key equality operators */
	Oid			actor;
	int			chunk_rows;
	int			digest_bits;
	uint64		d1mask;
	uint64		seed;
	bool		apply_quarantine;
	/* quarantined entities: sorted target keys and the raw jsonb keys */
	int			nq;
	Datum	   *qkeys;			/* nq * nkeys */
	int			nqjson;
	Jsonb	  **qjson;
	/* chunks */
	PChunk	   *chunks;
	int			nchunks;
	int			maxchunks;
	/* statistics */
	uint64		rows[2];
	uint64		nullkeys[2];
	uint64		qskipped[2];
	uint64		descended;
	uint64		found[3];
	/* output */
	ParityEmit	emit;
	void	   *emit_arg;
	MemoryContext cxt;			/* lives for the whole call */
	MemoryContext rowcxt;		/* reset per row */
};

/* ---------------------------------------------------------------------
 * GUCs and contexts
 * --------------------------------------------------------------------- */

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

	softmig_rules_init();
}

/*
 * softmig_enter_readonly_context
 *		softmig_enter_owner_context(role) plus transaction_read_only = on,
 *		so user SQL run inside (mapping expressions, invariants, requires
 *		expressions) cannot write anything, not even through a volatile
 *		function.  Undo with softmig_leave_owner_context; abort undoes it
 *		too.  The restore does not go through the GUC check hook, so a
 *		read-write transaction is read-write again afterwards.
 */
void
softmig_enter_readonly_context(Oid role, int *save_nestlevel, Oid *save_userid,
							   int *save_sec)
{
	softmig_enter_owner_context(role, save_nestlevel, save_userid, save_sec);
	(void) set_config_option("transaction_read_only", "on",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

/* ---------------------------------------------------------------------
 * Building the comparison
 * --------------------------------------------------------------------- */

/*
 * str_in
 *		Is C string s in the List of C strings l?
 */
static bool
str_in(List *l, const char *s)
{
	ListCell   *lc;

	foreach(lc, l)
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	return false;
}

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
 * text_array_list
 *		A text[] datum as a List of C strings (NULL elements skipped).
 */
static List *
text_array_list(Datum d)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *r = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			r = lappend(r, TextDatumGetCString(elems[i]));
	return r;
}

/*
 * collation_sql
 *		" COLLATE schema.name" for a collation, or "" when there is none.
 */
static char *
collation_sql(Oid collid)
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
 *		hash, equality, comparison (keys) and output functions.  Raises
 *		42883 for a key type without a default btree operator class.
 */
static void
pcol_setup(ParityCtx *c, PCol *pc, Form_pg_attribute att, bool iskey)
{
	Oid			base = getBaseType(att->atttypid);
	TypeCacheEntry *tc;
	Oid			outfn;
	bool		isvarlena;

	tc = lookup_type_cache(base, TYPECACHE_EQ_OPR_FINFO |
						   TYPECACHE_HASH_EXTENDED_PROC_FINFO |
						   (iskey ? TYPECACHE_CMP_PROC_FINFO : 0));
	pc->typid = att->atttypid;
	pc->typmod = att->atttypmod;
	pc->collid = att->attcollation;
	pc->has_hash = OidIsValid(tc->hash_extended_proc_finfo.fn_oid);
	if (pc->has_hash)
		fmgr_info_cxt(tc->hash_extended_proc_finfo.fn_oid, &pc->hash, c->cxt);
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
		fmgr_info_cxt(tc->cmp_proc_finfo.fn_oid, &pc->cmp, c->cxt);
	}
	getTypeOutputInfo(att->atttypid, &outfn, &isvarlena);
	fmgr_info_cxt(outfn, &pc->out, c->cxt);
}

/*
 * softmig_json_object_sql
 *		SQL building a jsonb object from names and expressions, in groups
 *		of JSON_PAIRS_PER_CALL pairs joined with || (jsonb_build_object
 *		takes at most 100 arguments).  Expressions are parenthesized and
 *		followed by a newline, like every spliced user expression.
 */
char *
softmig_json_object_sql(List *names, List *exprs)
{
	StringInfoData buf;
	ListCell   *n;
	ListCell   *e;
	int			i = 0;

	initStringInfo(&buf);
	if (names == NIL)
		return pstrdup("'{}'::pg_catalog.jsonb");
	forboth(n, names, e, exprs)
	{
		if (i % JSON_PAIRS_PER_CALL == 0)
			appendStringInfo(&buf, "%spg_catalog.jsonb_build_object(",
							 i ? ") OPERATOR(pg_catalog.||) " : "");
		else
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, "%s, (%s\n)", quote_literal_cstr(lfirst(n)), (char *) lfirst(e));
		i++;
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * parity_build
 *		Everything a comparison of migration "id" needs, copied out of the
 *		migration cache into cxt (the cache entry may be retired by an
 *		invalidation while user SQL runs; cxt must outlive the SPI
 *		connection this runs in).  Takes AccessShareLock on both tables.
 */
static ParityCtx *
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
	fwd = softmig_build_dest(m, SIDE_LEGACY);	/* target side */
	bwd = softmig_build_dest(m, SIDE_TARGET);	/* legacy side */
	c->lqual = softmig_qualified_relname(m->legacy);
	c->tqual = pstrdup(fwd->qualname);
	c->lkeycols = copy_str_list(bwd->keycols);
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
		divergent = text_array_list(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		new_only = text_array_list(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		forboth(lc, fcols, lc2, fex)
		{
			mapnames = lappend(mapnames, lfirst(lc));
			if (str_in(tkeycols, lfirst(lc)) || str_in(divergent, lfirst(lc)) ||
				str_in(new_only, lfirst(lc)))
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
			AttrNumber attno = attnameAttNum(trel, col, false);
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
								 iskey ? collation_sql(att->attcollation) : "");
		}
		/* every forward-mapped column, cast like the mirror would write it */
		foreach(lc, mapnames)
		{
			AttrNumber attno = attnameAttNum(trel, lfirst(lc), false);
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

	c->maxchunks = 64;
	c->chunks = palloc0(sizeof(PChunk) * c->maxchunks);
	c->nchunks = 1;
	MemoryContextSwitchTo(old);
	return c;
}

/* ---------------------------------------------------------------------
 * Hashing and comparing values
 * --------------------------------------------------------------------- */

/*
 * mix64
 *		The murmur3 finalizer: a bijective 64-bit mix.
 */
static inline uint64
mix64(uint64 x)
{
	x ^= x >> 33;
	x *= UINT64CONST(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64CONST(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

/*
 * value_text
 *		A non-null value of a column as text (its output function).
 */
static char *
value_text(PCol *pc, Datum v)
{
	return OutputFunctionCall(&pc->out, v);
}

/*
 * value_hash
 *		64-bit hash of a non-null value: the type's extended hash with the
 *		run's seed and the column's collation, or a hash of its text form
 *		for types without one.
 */
static uint64
value_hash(ParityCtx *c, PCol *pc, Datum v)
{
	if (pc->has_hash)
		return DatumGetUInt64(FunctionCall2Coll(&pc->hash, pc->collid, v,
												UInt64GetDatum(c->seed)));
	else
	{
		char	   *s = value_text(pc, v);

		return hash_bytes_extended((const unsigned char *) s, strlen(s), c->seed);
	}
}

/*
 * values_equal
 *		Are two non-null values of a column equal?  The type's equality
 *		operator with the column's collation; the text forms for types
 *		without one.
 */
static bool
values_equal(PCol *pc, Datum a, Datum b)
{
	if (pc->has_eq)
		return DatumGetBool(FunctionCall2Coll(&pc->eq, pc->collid, a, b));
	return strcmp(value_text(pc, a), value_text(pc, b)) == 0;
}

/*
 * key_cmp
 *		Compare two non-null keys (arrays of nkeys datums) in the order the
 *		statements sort them: each key column's default btree order with
 *		the target column's collation.
 */
static int
key_cmp(ParityCtx *c, const Datum *a, const Datum *b)
{
	for (int i = 0; i < c->nkeys; i++)
	{
		int32		r = DatumGetInt32(FunctionCall2Coll(&c->cols[i].cmp, c->cols[i].collid,
														a[i], b[i]));

		if (r != 0)
			return r;
	}
	return 0;
}

/*
 * row_hashes
 *		The primary and guard hash of one row (key and strict fields).  The
 *		two combine the same per-value hashes in unrelated ways.
 */
static void
row_hashes(ParityCtx *c, const Datum *v, const bool *isnull, uint64 *h1, uint64 *h2)
{
	uint64		a = c->seed;
	uint64		b = mix64(~c->seed);

	for (int i = 0; i < c->ncols; i++)
	{
		uint64		fh = isnull[i] ? UINT64CONST(0x6e756c6c6e756c6c) :
			value_hash(c, &c->cols[i], v[i]);

		a = hash_combine64(a, fh);
		b = mix64(b ^ (fh + UINT64CONST(0x632be59bd9b4e019) * (uint64) (i + 1)));
	}
	*h1 = a;
	*h2 = b;
}

/*
 * qkey_cmp
 *		qsort_arg comparator over quarantined keys (nkeys datums each).
 */
static int
qkey_cmp(const void *a, const void *b, void *arg)
{
	return key_cmp((ParityCtx *) arg, (const Datum *) a, (const Datum *) b);
}

/*
 * is_quarantined
 *		Is this (non-null) target key a quarantined entity?  Binary search.
 */
static bool
is_quarantined(ParityCtx *c, const Datum *key)
{
	int			lo = 0;
	int			hi = c->nq - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			r = key_cmp(c, key, &c->qkeys[mid * c->nkeys]);

		if (r == 0)
			return true;
		if (r < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return false;
}

/*
 * is_quarantined_json
 *		Is this legacy-key jsonb a quarantined entity?  Used for rows whose
 *		key has NULLs (no target key to search by).
 */
static bool
is_quarantined_json(ParityCtx *c, Datum key)
{
	for (int i = 0; i < c->nqjson; i++)
		if (DatumGetBool(DirectFunctionCall2(jsonb_eq, key, JsonbPGetDatum(c->qjson[i]))))
			return true;
	return false;
}

/* ---------------------------------------------------------------------
 * Quarantine
 * --------------------------------------------------------------------- */

/*
 * load_quarantine
 *		Read the quarantined keys (as the catalog owner: the list is
 *		catalog data) and turn each into its target key through the forward
 *		key mapping (as the caller, who must already be in the read-only
 *		context).  Sorted for binary search.  Inside the SPI connection.
 */
static void
load_quarantine(ParityCtx *c)
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
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(softmig_catalog_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_execute_with_args("SELECT k FROM softmig._quarantined_keys($1) AS k "
							  "WHERE k IS NOT NULL",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading the quarantine failed");
	SetUserIdAndSecContext(save_user, save_sec);
	n = SPI_processed;
	tt = SPI_tuptable;
	if (n == 0)
		return;

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
		qsort_arg(c->qkeys, c->nq, sizeof(Datum) * c->nkeys, qkey_cmp, c);
}

/* ---------------------------------------------------------------------
 * Phase 1: digests
 * --------------------------------------------------------------------- */

typedef struct DigestDest
{
	DestReceiver pub;
	ParityCtx  *c;
	int			side;
	int			cur;			/* target: current chunk */
	bool		full;			/* legacy: current chunk has chunk_rows rows */
} DigestDest;

/*
 * new_chunk
 *		Append an empty, unbounded chunk.
 */
static void
new_chunk(ParityCtx *c)
{
	if (c->nchunks == c->maxchunks)
	{
		c->maxchunks *= 2;
		c->chunks = repalloc(c->chunks, sizeof(PChunk) * c->maxchunks);
	}
	memset(&c->chunks[c->nchunks], 0, sizeof(PChunk));
	c->nchunks++;
}

/*
 * digest_receive
 *		DestReceiver callback of phase 1: hash one row into its chunk.  The
 *		legacy side defines the chunks (a chunk closes after chunk_rows rows,
 *		never between two equal keys); the target side follows them.  Rows
 *		with a NULL key component are counted and handled apart; rows of
 *		quarantined entities are skipped.
 */
static bool
digest_receive(TupleTableSlot *slot, DestReceiver *self)
{
	DigestDest *d = (DigestDest *) self;
	ParityCtx  *c = d->c;
	Datum	   *v;
	bool	   *isnull;
	uint64		h1;
	uint64		h2;
	PChunk	   *ch;
	MemoryContext old;
	int			s = d->side;

	slot_getallattrs(slot);
	v = slot->tts_values;
	isnull = slot->tts_isnull;
	for (int i = 0; i < c->nkeys; i++)
		if (isnull[i])
		{
			c->nullkeys[s]++;
			return true;
		}

	old = MemoryContextSwitchTo(c->rowcxt);
	if (c->nq > 0 && is_quarantined(c, v))
	{
		c->qskipped[s]++;
		MemoryContextSwitchTo(old);
		MemoryContextReset(c->rowcxt);
		return true;
	}
	row_hashes(c, v, isnull, &h1, &h2);

	if (s == PSIDE_LEGACY)
	{
		ch = &c->chunks[c->nchunks - 1];
		if (d->full && key_cmp(c, v, ch->bound) != 0)
		{
			MemoryContextSwitchTo(c->cxt);
			new_chunk(c);
			ch = &c->chunks[c->nchunks - 1];
			d->full = false;
		}
		if (!d->full && ch->n[s] + 1 >= (uint64) c->chunk_rows)
		{
			MemoryContextSwitchTo(c->cxt);
			ch->bound = palloc(sizeof(Datum) * c->nkeys);
			for (int i = 0; i < c->nkeys; i++)
			{
				Form_pg_attribute att = TupleDescAttr(slot->tts_tupleDescriptor, i);

				ch->bound[i] = datumCopy(v[i], att->attbyval, att->attlen);
			}
			d->full = true;
		}
	}
	else
	{
		while (d->cur < c->nchunks - 1 && key_cmp(c, v, c->chunks[d->cur].bound) > 0)
			d->cur++;
		ch = &c->chunks[d->cur];
	}
	ch->n[s]++;
	ch->d1[s] += h1 & c->d1mask;
	ch->d2[s] += h2;
	c->rows[s]++;

	MemoryContextSwitchTo(old);
	MemoryContextReset(c->rowcxt);
	return true;
}

/*
 * digest_startup / digest_shutdown / digest_destroy
 *		DestReceiver callbacks with nothing to do.
 */
static void
digest_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
digest_shutdown(DestReceiver *self)
{
}

static void
digest_destroy(DestReceiver *self)
{
}

/*
 * select_list
 *		The key and strict-field columns of one side, in c->cols order:
 *		legacy through the mapping (cast to the target's types, keys with
 *		the target's collation), target as stored.
 */
static void
append_select_list(StringInfo buf, ParityCtx *c, int side)
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
 * append_order_by
 *		" ORDER BY <first> .. <first+nkeys-1>" (output column positions).
 */
static void
append_order_by(StringInfo buf, ParityCtx *c, int first)
{
	appendStringInfoString(buf, " ORDER BY ");
	for (int i = 0; i < c->nkeys; i++)
		appendStringInfo(buf, "%s%d", i ? ", " : "", first + i);
}

/*
 * side_from
 *		" FROM <table> AS <alias>" for a side.
 */
static void
append_from(StringInfo buf, ParityCtx *c, int side)
{
	if (side == PSIDE_LEGACY)
		appendStringInfo(buf, " FROM %s AS softmig_l", c->lqual);
	else
		appendStringInfo(buf, " FROM %s AS softmig_t", c->tqual);
}

/*
 * pause_point
 *		Isolation-test hook: with softmig.parity_pause_lock set, wait for
 *		that advisory lock (transaction-scoped) between the legacy and the
 *		target pass.
 */
static void
pause_point(void)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];

	if (softmig_parity_pause_lock == 0)
		return;
	values[0] = Int64GetDatum((int64) softmig_parity_pause_lock);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock($1)", 1, argtypes,
							  values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: parity pause point failed");
}

/*
 * digest_pass
 *		Phase 1 for one side: one ordered statement, its rows hashed by
 *		digest_receive as they are produced.  Parallel plans are allowed.
 */
static void
digest_pass(ParityCtx *c, int side)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	SPIExecuteOptions opts;
	DigestDest	dest;
	int			rc;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	append_select_list(&buf, c, side);
	append_from(&buf, c, side);
	append_order_by(&buf, c, 1);
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
	dest.side = side;

	memset(&opts, 0, sizeof(opts));
	opts.read_only = true;
	opts.dest = (DestReceiver *) &dest;
	rc = SPI_execute_plan_extended(plan, &opts);
	if (rc < 0)
		elog(ERROR, "softmig: parity scan failed: %s", SPI_result_code_string(rc));
	SPI_freeplan(plan);

	/* the last chunk is always unbounded */
	if (side == PSIDE_LEGACY && c->chunks[c->nchunks - 1].bound != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(c->cxt);

		new_chunk(c);
		MemoryContextSwitchTo(old);
	}
}

/* ---------------------------------------------------------------------
 * Phase 2: descent
 * --------------------------------------------------------------------- */

/* A cursor read in batches, one current row at a time. */
typedef struct Stream
{
	Portal		portal;
	SPITupleTable *tt;
	uint64		n;
	uint64		pos;
	bool		done;
	bool		valid;			/* vals/nulls hold a row */
	Datum	   *vals;			/* [0] legacy-key jsonb, [1..] the columns */
	bool	   *nulls;
} Stream;

/*
 * stream_open
 *		Open a cursor over plan with the given parameters (read-only, the
 *		caller's snapshot) and position it on its first row.
 */
static void
stream_open(ParityCtx *c, Stream *s, SPIPlanPtr plan, Datum *values, char *nulls)
{
	memset(s, 0, sizeof(Stream));
	s->vals = MemoryContextAlloc(c->cxt, sizeof(Datum) * (c->ncols + 1));
	s->nulls = MemoryContextAlloc(c->cxt, sizeof(bool) * (c->ncols + 1));
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

/* lo bound: none, > or >=; hi bound: none or <= */
#define LO_NONE 0
#define LO_GT 1
#define LO_GE 2
#define HI_NONE 0
#define HI_LE 1

/*
 * range_plan
 *		SELECT <legacy-key jsonb>, <columns> FROM side WHERE <key not null>
 *		[AND ROW(key) > / >= ROW(lo)] [AND ROW(key) <= ROW(hi)] ORDER BY key.
 *		Parameters: lo then hi, typed as the target key columns.
 */
static SPIPlanPtr
range_plan(ParityCtx *c, int side, int lo, int hi)
{
	StringInfoData buf;
	StringInfoData keyrow;
	Oid		   *argtypes = palloc(sizeof(Oid) * 2 * c->nkeys);
	int			nargs = 0;
	int			i;
	SPIPlanPtr	plan;

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
	appendStringInfo(&buf, "SELECT %s, ", side == PSIDE_LEGACY ? c->lkeyjson : c->tkeyjson);
	append_select_list(&buf, c, side);
	append_from(&buf, c, side);
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
							 collation_sql(c->cols[i].collid));
		}
		appendStringInfoChar(&buf, ')');
	}
	append_order_by(&buf, c, 2);
	plan = SPI_prepare_cursor(buf.data, nargs, argtypes, CURSOR_OPT_PARALLEL_OK);
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
	for (int i = c->nkeys; i < c->ncols; i++)
	{
		bool		ln = l->nulls[i + 1];
		bool		tn = t->nulls[i + 1];
		bool		same;

		if (ln || tn)
			same = ln && tn;
		else
			same = values_equal(&c->cols[i], l->vals[i + 1], t->vals[i + 1]);
		if (!same)
		{
			c->found[PK_MISMATCH]++;
			c->emit(c, PK_MISMATCH, l->vals[0], i, l->vals[i + 1], ln, t->vals[i + 1], tn);
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
			r = key_cmp(c, &l->vals[1], &t->vals[1]);

		if (r < 0)
		{
			if (!(c->nq > 0 && is_quarantined(c, &l->vals[1])))
			{
				c->found[PK_MISSING_IN_TARGET]++;
				c->emit(c, PK_MISSING_IN_TARGET, l->vals[0], -1, 0, true, 0, true);
			}
			adv_l = true;
		}
		else if (r > 0)
		{
			if (!t_matched && !(c->nq > 0 && is_quarantined(c, &t->vals[1])))
			{
				c->found[PK_MISSING_IN_LEGACY]++;
				c->emit(c, PK_MISSING_IN_LEGACY, t->vals[0], -1, 0, true, 0, true);
			}
			adv_t = true;
		}
		else
		{
			if (!(c->nq > 0 && is_quarantined(c, &l->vals[1])))
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
 * compare_range
 *		Phase 2 for one key range (lo_mode/hi_mode select the bound kinds):
 *		stream both sides and merge.  Plans are built on first use and kept
 *		for the rest of the call in plans[side][lo][hi].
 */
static void
compare_range(ParityCtx *c, SPIPlanPtr plans[2][3][2], int lo_mode, Datum *lo,
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
	stream_open(c, &l, plans[PSIDE_LEGACY][lo_mode][hi_mode], values, nulls);
	stream_open(c, &t, plans[PSIDE_TARGET][lo_mode][hi_mode], values, nulls);
	merge_streams(c, &l, &t);
	stream_close(&l);
	stream_close(&t);
	pfree(values);
	pfree(nulls);
}

/*
 * null_key_rows
 *		Rows of one side whose key has a NULL can match nothing on the other
 *		side (NULL equals nothing): each is missing there, unless its entity
 *		is quarantined.
 */
static void
null_key_rows(ParityCtx *c, int side)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	Portal		portal;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT %s", side == PSIDE_LEGACY ? c->lkeyjson : c->tkeyjson);
	append_from(&buf, c, side);
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
	for (;;)
	{
		SPI_cursor_fetch(portal, true, PARITY_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			Datum		key = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
			ParityKind	kind = side == PSIDE_LEGACY ? PK_MISSING_IN_TARGET : PK_MISSING_IN_LEGACY;

			if (c->apply_quarantine && c->nqjson > 0 && is_quarantined_json(c, key))
				continue;
			c->found[kind]++;
			c->emit(c, kind, key, -1, 0, true, 0, true);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/*
 * chunk_differs
 *		Do the two sides of a chunk differ in count, primary digest (masked
 *		to softmig.parity_digest_bits) or guard digest?
 */
static bool
chunk_differs(ParityCtx *c, PChunk *ch)
{
	return ch->n[0] != ch->n[1] ||
		((ch->d1[0] - ch->d1[1]) & c->d1mask) != 0 ||
		ch->d2[0] != ch->d2[1];
}

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
 * run_parity
 *		The whole comparison of migration "id": build, phase 1 on both
 *		sides, phase 2 on differing chunks, NULL-key rows.  Differences go
 *		to emit(arg).  Opens and closes its own SPI connection; runs the
 *		user SQL as the caller in the read-only context.  Returns the
 *		context (statistics), allocated in a child of the caller's memory
 *		context (c->cxt, which the caller may delete).
 */
static ParityCtx *
run_parity(int32 id, int chunk_rows, ParityEmit emit, void *arg)
{
	ParityCtx  *c;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
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

	errcb.callback = parity_error_context;
	errcb.arg = c;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	softmig_enter_readonly_context(c->actor, &save_nest, &save_user, &save_sec);
	load_quarantine(c);

	digest_pass(c, PSIDE_LEGACY);
	pause_point();
	digest_pass(c, PSIDE_TARGET);

	for (int i = 0; i < c->nchunks; i++)
	{
		PChunk	   *ch = &c->chunks[i];
		Datum	   *lo = i > 0 ? c->chunks[i - 1].bound : NULL;

		if (!chunk_differs(c, ch))
			continue;
		c->descended++;
		compare_range(c, plans, lo ? LO_GT : LO_NONE, lo, ch->bound ? HI_LE : HI_NONE, ch->bound);
	}
	for (int s = 0; s < 2; s++)
		if (c->nullkeys[s] > 0)
			null_key_rows(c, s);

	softmig_leave_owner_context(save_nest, save_user, save_sec);
	error_context_stack = errcb.previous;
	SPI_finish();
	return c;
}

/*
 * migration_id_by_name
 *		The id of a migration by name (42704 if unknown; 22004 for NULL).
 *		Reads the catalog through SPI as the current user.
 */
static int32
migration_id_by_name(text *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	int32		id;

	values[0] = PointerGetDatum(name);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT id FROM softmig.migrations WHERE name OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.migrations failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("migration \"%s\" does not exist", text_to_cstring(name)),
				 errhint("softmig.migrations lists the migrations of this database.")));
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return id;
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
emit_tuplestore(ParityCtx *c, ParityKind kind, Datum key, int field,
				Datum lval, bool lnull, Datum tval, bool tnull)
{
	SrfState   *st = (SrfState *) c->emit_arg;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	values[0] = CStringGetTextDatum(parity_kind_names[kind]);
	values[1] = key;
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
			values[3] = CStringGetTextDatum(value_text(&c->cols[field], lval));
		if (tnull)
			nulls[4] = true;
		else
			values[4] = CStringGetTextDatum(value_text(&c->cols[field], tval));
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
	id = migration_id_by_name(PG_GETARG_TEXT_PP(0));

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &st.desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "softmig.parity: return type must be a row type");
	st.desc = CreateTupleDescCopy(st.desc);
	st.ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);

	(void) run_parity(id, chunk_rows, emit_tuplestore, &st);

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
emit_summary(ParityCtx *c, ParityKind kind, Datum key, int field,
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
	keytext = JsonbToCString(NULL, &DatumGetJsonbP(key)->root, 0);
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
					 ", \"chunk_rows\": %d, \"digest_bits\": %d, \"ms\": %ld}",
					 c->rows[0] + c->nullkeys[0], c->rows[1] + c->nullkeys[1],
					 c->qskipped[0] + c->qskipped[1],
					 c->nchunks, c->descended, c->chunk_rows, c->digest_bits,
					 secs * 1000 + usecs / 1000);
	MemoryContextDelete(c->cxt);
	MemoryContextDelete(holder);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}

/* ---------------------------------------------------------------------
 * softmig._inspect_sides: both sides of one entity
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
emit_inspect(ParityCtx *c, ParityKind kind, Datum key, int field,
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
			escape_json(b, value_text(&c->cols[field], lval));
		appendStringInfoString(b, ", \"target_value\": ");
		if (tnull)
			appendStringInfoString(b, "null");
		else
			escape_json(b, value_text(&c->cols[field], tval));
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

PG_FUNCTION_INFO_V1(softmig_inspect_sides);
/*
 * softmig_inspect_sides
 *		softmig._inspect_sides(id, key) -> jsonb: the legacy row, what the
 *		forward mapping makes of it, the target row, both rows' xmin, and
 *		the parity differences of this one entity (quarantine ignored: this
 *		is the truth support needs).  Runs as the caller in the read-only
 *		context, like parity.  22023 for a key that does not name exactly
 *		the legacy key columns.
 */
Datum
softmig_inspect_sides(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	Jsonb	   *key = PG_GETARG_JSONB_P(1);
	ParityCtx  *c;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
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
		if (!str_in(c->lkeycols, k))
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

	errcb.callback = parity_error_context;
	errcb.arg = c;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	softmig_enter_readonly_context(c->actor, &save_nest, &save_user, &save_sec);

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
	appendStringInfo(&buf, "SELECT pg_catalog.to_jsonb(softmig_l), %s, softmig_l.xmin::pg_catalog.text "
					 "FROM %s AS softmig_l WHERE ", c->lmapped, c->lqual);
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
		appendStringInfo(&buf, "SELECT pg_catalog.to_jsonb(softmig_t), softmig_t.xmin::pg_catalog.text "
						 "FROM %s AS softmig_t WHERE ", c->tqual);
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
		compare_range(c, plans, LO_GE, tkey, HI_LE, tkey);
	appendStringInfo(&out, ", \"differences\": [%s], \"parity\": \"%s\"}",
					 st.diffs.data,
					 st.kinds[PK_MISSING_IN_TARGET] ? "missing_in_target" :
					 st.kinds[PK_MISSING_IN_LEGACY] ? "missing_in_legacy" :
					 st.kinds[PK_MISMATCH] ? "mismatch" : "equal");

	softmig_leave_owner_context(save_nest, save_user, save_sec);
	error_context_stack = errcb.previous;
	SPI_finish();
	{
		Datum		result = DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));

		MemoryContextDelete(cxt);
		PG_RETURN_DATUM(result);
	}
}
