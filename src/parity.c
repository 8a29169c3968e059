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
 *	     DestReceiver in this backend instead (same code, acc_row).  With
 *	     the digest cache (section "Digest cache") a run whose tables
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
 *	  Also here: softmig.parity (the SRF), softmig._parity_summary (counts
 *	  and a sample, used by check and the mirrored -> new_write guard),
 *	  softmig.inspect (both sides of one entity) and
 *	  the observability GUCs.
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

/* GUCs (see softmig_observe_init) */
int			softmig_parity_digest_bits = 64;
int			softmig_parity_pause_lock = 0;

#define PSIDE_LEGACY 0
#define PSIDE_TARGET 1

/* rows per cursor fetch in the descent */
#define PARITY_FETCH 1000

/*
 * digest state: ACC_HDR header words, 3 per chunk (see acc_row), then an
 * open-addressing table of (segment, chunk) digests, 4 words per slot (see
 * sparse_add), when the rows' ctid is passed.
 */
#define ACC_HDR 8
#define ACC_PER 3
#define ACC_SLOT 4

/* header words */
#define ACC_H_NCHUNKS 0			/* number of chunks */
#define ACC_H_NULLKEYS 1		/* rows whose key has a NULL */
#define ACC_H_QUARANTINED 2		/* rows of quarantined entities */
#define ACC_H_ROWS 3			/* rows digested into chunks */
#define ACC_H_CAP 4				/* slots of the (segment, chunk) table */
#define ACC_H_USED 5			/* slots in use */
#define ACC_H_OVERFLOW 6		/* 1: too many pairs, the table is void */
#define ACC_H_LAST 7			/* 1 + slot of the last pair updated */

/* the (segment, chunk) table: initial and largest number of slots */
#define SPARSE_INIT_CAP 64
#define SPARSE_MAX_CAP (1 << 18)

/*
 * A digest state as a bytea: the uint64 array starts 8 bytes in (after the
 * 4-byte header and 4 bytes of padding), so it is aligned in our palloc'd
 * states; states from elsewhere are read with memcpy.
 */
#define ACC_PAD 8
#define ACC_STATE(b) ((uint64 *) (((char *) (b)) + ACC_PAD))

/* Hard limit on chunks (the digest state is 24 bytes per chunk). */
#define PARITY_MAX_CHUNKS 100000

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
	bool		has_eq;
	FmgrInfo	eq;				/* equality operator's proc */
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

typedef struct AccCol
{
	Oid			collid;
	int			how;			/* ACC_HASH_* */
	int16		typlen;
	FmgrInfo	hash;			/* extended hash proc of the (base) type */
	FmgrInfo	out;			/* output function: last-resort hash */
	SortSupportData ssup;		/* key columns: the default btree order */
} AccCol;

/* How a column's values are hashed (see acc_value_hash). */
#define ACC_HASH_BINARY 0		/* the value's bytes: equal iff bytes equal */
#define ACC_HASH_TYPE 1			/* the type's extended hash function */
#define ACC_HASH_TEXT 2			/* the text form (no hash function) */

typedef struct AccSetup
{
	int			nkeys;
	int			ncols;
	uint64		seed;
	AccCol	   *cols;
	int			nb;				/* chunk i is (b[i-1], b[i]]; chunk nb unbounded */
	Datum	   *bounds;			/* nb * nkeys */
	int			nq;
	Datum	   *q;				/* nq * nkeys, sorted */
} AccSetup;

typedef struct ParityCtx ParityCtx;
typedef struct KeyRef KeyRef;

/*
 * Called for every confirmed difference; values are of the column's type.
 * The entity's key (legacy-key jsonb) is computed on demand with key_of().
 */
typedef void (*ParityEmit) (ParityCtx *c, ParityKind kind, KeyRef *kr,
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
	Oid		   *lkeytypes;		/* their types */
	SPIPlanPtr	lkeyplan;		/* legacy key values -> jsonb */
	SPIPlanPtr	tkeyplan;		/* target key values -> legacy-key jsonb */
	List	   *lkeyops;		/* their equality operators */
	List	   *tkeyops;		/* target key equality operators */
	Oid			actor;			/* on whose behalf (privileges are checked) */
	Oid			lowner;			/* legacy user SQL runs as the legacy owner */
	Oid			towner;			/* target user SQL runs as the target owner */
	int			run_sec;		/* security context while running user SQL */
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
	AccSetup	acc;			/* hashing, chunking, quarantine (see acc_row) */
	/* statistics */
	uint64		rows[2];
	uint64		nullkeys[2];
	uint64		qskipped[2];
	uint64		descended;
	uint64		found[3];
	/* digest cache (see "Digest cache") */
	bool		cache_on;		/* this run may read and write the cache */
	const char *cache_why;		/* why not (off), or why a full pass */
	char		cache_fp[33];	/* fingerprint of the comparison (md5) */
	int			cache_mode;		/* PCM_* */
	uint64		fresh_seed;		/* this run's own seed (a full pass uses it) */
	PcEnt	   *ents[2];		/* each side's (segment, chunk) digests */
	int			nents[2];
	int			maxents[2];
	bool		overflow;		/* too many pairs to keep: nothing stored */
	PcPages		pages[2];		/* page state stored with the digests */
	uint64		stale_segs[2];	/* warm run: segments read again */
	bool		stored;			/* the cache row was written */
	/* output */
	ParityEmit	emit;
	void	   *emit_arg;
	MemoryContext cxt;			/* lives for the whole call */
	MemoryContext rowcxt;		/* reset per row */
};

static void acc_col_init(AccCol *ac, Oid typid, Oid collid, bool iskey,
						 MemoryContext cxt);

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

	softmig_paritycache_init();
}

/*
 * as_role
 *		Inside the read-only context, run the following user SQL as role
 *		(a table owner): security-restricted, GUCs as set on entry.
 */
static void
as_role(ParityCtx *c, Oid role)
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
 *		equality and output functions.  Raises 42883 for a key type without
 *		a default btree operator class (hashing and ordering are set up by
 *		acc_col_init).
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
	c->lowner = softmig_rel_owner(m->legacy);
	c->towner = softmig_rel_owner(m->target);
	fwd = softmig_build_dest(m, SIDE_LEGACY);	/* target side */
	bwd = softmig_build_dest(m, SIDE_TARGET);	/* legacy side */
	c->lqual = softmig_qualified_relname(m->legacy);
	c->tqual = pstrdup(fwd->qualname);
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
	c->fresh_seed = c->seed;

	c->acc.nkeys = c->nkeys;
	c->acc.ncols = c->ncols;
	c->acc.seed = c->seed;
	c->acc.cols = palloc0(sizeof(AccCol) * c->ncols);
	for (int k = 0; k < c->ncols; k++)
		acc_col_init(&c->acc.cols[k], c->cols[k].typid, c->cols[k].collid, k < c->nkeys, cxt);
	c->nchunks = 1;
	c->chunks = palloc0(sizeof(PChunk));
	MemoryContextSwitchTo(old);
	return c;
}

/* ---------------------------------------------------------------------
 * Hashing, ordering and chunking rows
 *
 * AccSetup describes how to digest rows of (key columns..., strict
 * fields...): per column the hash, comparison (keys) and output functions
 * and the collation, the run's seed, the chunk boundaries and the sorted
 * quarantined keys.  The same code digests rows in the aggregate
 * softmig.parity_digest (possibly in parallel workers, which rebuild the
 * setup from the aggregate's arguments) and in this backend.
 *
 * A digest state is an array of uint64: ACC_HDR header words (number of
 * chunks, rows whose key has a NULL, rows of quarantined entities, rows
 * digested, then the (segment, chunk) table's size, use, overflow flag and
 * last slot), per chunk its row count, primary sum and guard sum, and with
 * the digest cache the (segment, chunk) table (sparse_add).
 * --------------------------------------------------------------------- */



/*
 * binary_equality_type
 *		Types whose equal values always have equal bytes (so hashing the
 *		bytes agrees with equality): integers, oid, bool, char, date, time,
 *		timestamps, uuid, bytea, enums, and text/varchar under a
 *		deterministic collation.  Hashing bytes is cheaper than calling the
 *		type's hash function; for other types (numeric, floats, bpchar,
 *		jsonb, ...) equal values may differ in bytes and the type's hash is
 *		used.  Either way equality is confirmed row by row.
 */
static bool
binary_equality_type(Oid base, Oid collid)
{
	switch (base)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case BOOLOID:
		case CHAROID:
		case DATEOID:
		case TIMEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
		case UUIDOID:
		case BYTEAOID:
			return true;
		case TEXTOID:
		case VARCHAROID:
			return !OidIsValid(collid) || get_collation_isdeterministic(collid);
		default:
			return type_is_enum(base);
	}
}

/*
 * acc_col_init
 *		Decide how a column is hashed and look up its functions: hash and
 *		output, and for keys a sort comparator for the default btree order
 *		with the column's collation.  Allocates in cxt.
 */
static void
acc_col_init(AccCol *ac, Oid typid, Oid collid, bool iskey, MemoryContext cxt)
{
	Oid			base = getBaseType(typid);
	TypeCacheEntry *tc;
	Oid			outfn;
	bool		isvarlena;

	tc = lookup_type_cache(base, TYPECACHE_HASH_EXTENDED_PROC_FINFO |
						   (iskey ? TYPECACHE_LT_OPR : 0));
	ac->collid = collid;
	ac->typlen = get_typlen(base);
	if (binary_equality_type(base, collid))
		ac->how = ACC_HASH_BINARY;
	else if (OidIsValid(tc->hash_extended_proc_finfo.fn_oid))
	{
		ac->how = ACC_HASH_TYPE;
		fmgr_info_cxt(tc->hash_extended_proc_finfo.fn_oid, &ac->hash, cxt);
	}
	else
		ac->how = ACC_HASH_TEXT;
	if (iskey)
	{
		if (!OidIsValid(tc->lt_opr))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("could not identify an ordering operator for type %s",
							format_type_be(typid)),
					 errdetail("Key columns are compared in their type's default btree order."),
					 errhint("Use a key type with a default btree operator class.")));
		memset(&ac->ssup, 0, sizeof(SortSupportData));
		ac->ssup.ssup_cxt = cxt;
		ac->ssup.ssup_collation = collid;
		ac->ssup.ssup_nulls_first = false;
		PrepareSortSupportFromOrderingOp(tc->lt_opr, &ac->ssup);
	}
	getTypeOutputInfo(typid, &outfn, &isvarlena);
	fmgr_info_cxt(outfn, &ac->out, cxt);
}

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
 * acc_value_hash
 *		64-bit hash of a non-null value with the run's seed: of its bytes,
 *		through the type's extended hash (with the column's collation), or
 *		of its text form (see AccCol.how).
 */
static uint64
acc_value_hash(AccSetup *s, AccCol *ac, Datum v)
{
	switch (ac->how)
	{
		case ACC_HASH_BINARY:
			if (ac->typlen == -1)
			{
				struct varlena *p = PG_DETOAST_DATUM_PACKED(v);

				return hash_bytes_extended((const unsigned char *) VARDATA_ANY(p),
										   VARSIZE_ANY_EXHDR(p), s->seed);
			}
			if (ac->typlen > 0 && ac->typlen <= (int16) sizeof(Datum))
			{
				/* only the value's own bytes count, whatever the extension */
				uint64		x = (uint64) v;

				if (ac->typlen < 8)
					x &= (UINT64CONST(1) << (8 * ac->typlen)) - 1;
				return mix64(x ^ s->seed ^ UINT64CONST(0x9e3779b97f4a7c15));
			}
			return hash_bytes_extended((const unsigned char *) DatumGetPointer(v),
									   ac->typlen, s->seed);
		case ACC_HASH_TYPE:
			return DatumGetUInt64(FunctionCall2Coll(&ac->hash, ac->collid, v,
													UInt64GetDatum(s->seed)));
		default:
			{
				char	   *t = OutputFunctionCall(&ac->out, v);

				return hash_bytes_extended((const unsigned char *) t, strlen(t), s->seed);
			}
	}
}

/*
 * acc_key_cmp
 *		Compare two non-null keys (nkeys datums each) in the order the range
 *		statements use: each key column's default btree order with the
 *		target column's collation.
 */
static int
acc_key_cmp(AccSetup *s, const Datum *a, const Datum *b)
{
	for (int i = 0; i < s->nkeys; i++)
	{
		int			r = ApplySortComparator(a[i], false, b[i], false, &s->cols[i].ssup);

		if (r != 0)
			return r;
	}
	return 0;
}

/*
 * acc_quarantined
 *		Is this non-null key a quarantined entity?  Binary search.
 */
static bool
acc_quarantined(AccSetup *s, const Datum *key)
{
	int			lo = 0;
	int			hi = s->nq - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			r = acc_key_cmp(s, key, &s->q[mid * s->nkeys]);

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
 * acc_chunk_of
 *		The chunk of a non-null key: the first i with key <= b[i], or nb.
 */
static int
acc_chunk_of(AccSetup *s, const Datum *key)
{
	int			lo = 0;
	int			hi = s->nb;

	if (s->nkeys == 1)
	{
		/* the common case, without the per-column loop */
		SortSupport ssup = &s->cols[0].ssup;

		while (lo < hi)
		{
			int			mid = (lo + hi) / 2;

			if (ApplySortComparator(key[0], false, s->bounds[mid], false, ssup) <= 0)
				hi = mid;
			else
				lo = mid + 1;
		}
		return lo;
	}
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (acc_key_cmp(s, key, &s->bounds[mid * s->nkeys]) <= 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/*
 * What acc_row did with a row: its chunk (nchunks: NULL key, nchunks + 1:
 * quarantined) and its two hashes (0 unless digested).
 */
typedef struct AccHit
{
	uint32		chunk;
	uint64		a;
	uint64		b;
} AccHit;

/*
 * acc_row
 *		Digest one row (keys then fields) into state st.  The primary hash
 *		(hash_combine64 chain) and the guard hash (rotate-xor-multiply chain,
 *		finalized by mix64) combine the same per-value hashes in unrelated
 *		ways; sums make the digest independent of row order.  *hit says
 *		where the row went, for the (segment, chunk) table.
 */
static void
acc_row(AccSetup *s, uint64 *st, const Datum *v, const bool *isnull, AccHit *hit)
{
	uint64		a = s->seed;
	uint64		b = mix64(~s->seed);
	uint64	   *ch;

	hit->a = hit->b = 0;
	for (int i = 0; i < s->nkeys; i++)
		if (isnull[i])
		{
			st[ACC_H_NULLKEYS]++;
			hit->chunk = s->nb + 1;
			return;
		}
	if (s->nq > 0 && acc_quarantined(s, v))
	{
		st[ACC_H_QUARANTINED]++;
		hit->chunk = s->nb + 2;
		return;
	}
	for (int i = 0; i < s->ncols; i++)
	{
		uint64		fh = isnull[i] ? UINT64CONST(0x6e756c6c6e756c6c) :
			acc_value_hash(s, &s->cols[i], v[i]);

		a = hash_combine64(a, fh);
		b = ((b << 31) | (b >> 33)) ^ (fh + (uint64) i);
		b *= UINT64CONST(0x9e3779b97f4a7c15);
	}
	b = mix64(b);
	hit->chunk = acc_chunk_of(s, v);
	ch = &st[ACC_HDR + ACC_PER * hit->chunk];
	ch[0]++;
	ch[1] += a;
	ch[2] += b;
	st[ACC_H_ROWS]++;
	hit->a = a;
	hit->b = b;
}

/*
 * acc_slots
 *		The (segment, chunk) table of a digest state.
 */
static inline uint64 *
acc_slots(uint64 *st)
{
	return &st[ACC_HDR + ACC_PER * st[ACC_H_NCHUNKS]];
}

/*
 * acc_state_size
 *		Bytes of a digest state bytea with nchunks chunks and cap slots.
 */
static Size
acc_state_size(uint64 nchunks, uint64 cap)
{
	return ACC_PAD + sizeof(uint64) * (ACC_HDR + ACC_PER * nchunks + ACC_SLOT * cap);
}

/*
 * sparse_add
 *		Add (n, a, b) to the digests of pair key (PC_ENT_KEY) in the state's
 *		(segment, chunk) table, growing it (a copy in cxt, returned; the old
 *		state is left to its owner) when it is half full.  Past
 *		SPARSE_MAX_CAP slots the table is given up (ACC_H_OVERFLOW): the
 *		digests stay exact, only the cache cannot be stored.
 */
static bytea *
sparse_add(bytea *state, uint64 key, uint64 n, uint64 a, uint64 b, MemoryContext cxt)
{
	uint64	   *st = ACC_STATE(state);
	uint64	   *slots;
	uint64		mask;
	uint64		h;

	if (st[ACC_H_OVERFLOW])
		return state;
	if (st[ACC_H_LAST] != 0)
	{
		uint64	   *e = &acc_slots(st)[ACC_SLOT * (st[ACC_H_LAST] - 1)];

		if (e[0] == key)
		{
			e[1] += n;
			e[2] += a;
			e[3] += b;
			return state;
		}
	}
	if ((st[ACC_H_USED] + 1) * 2 > st[ACC_H_CAP])
	{
		uint64		cap = st[ACC_H_CAP] ? st[ACC_H_CAP] * 2 : SPARSE_INIT_CAP;
		bytea	   *grown;
		uint64	   *gst;
		uint64	   *old;

		if (cap > SPARSE_MAX_CAP)
		{
			st[ACC_H_OVERFLOW] = 1;
			return state;
		}
		grown = (bytea *) MemoryContextAllocZero(cxt, acc_state_size(st[ACC_H_NCHUNKS], cap));
		SET_VARSIZE(grown, acc_state_size(st[ACC_H_NCHUNKS], cap));
		gst = ACC_STATE(grown);
		memcpy(gst, st, sizeof(uint64) * (ACC_HDR + ACC_PER * st[ACC_H_NCHUNKS]));
		gst[ACC_H_CAP] = cap;
		gst[ACC_H_USED] = 0;
		gst[ACC_H_LAST] = 0;
		old = acc_slots(st);
		for (uint64 i = 0; i < st[ACC_H_CAP]; i++)
			if (old[ACC_SLOT * i] != 0)
				grown = sparse_add(grown, old[ACC_SLOT * i], old[ACC_SLOT * i + 1],
								   old[ACC_SLOT * i + 2], old[ACC_SLOT * i + 3], cxt);
		state = grown;
		st = gst;
	}
	slots = acc_slots(st);
	mask = st[ACC_H_CAP] - 1;
	for (h = mix64(key) & mask;; h = (h + 1) & mask)
	{
		uint64	   *e = &slots[ACC_SLOT * h];

		if (e[0] == 0)
		{
			e[0] = key;
			e[1] = n;
			e[2] = a;
			e[3] = b;
			st[ACC_H_USED]++;
			st[ACC_H_LAST] = h + 1;
			return state;
		}
		if (e[0] == key)
		{
			e[1] += n;
			e[2] += a;
			e[3] += b;
			st[ACC_H_LAST] = h + 1;
			return state;
		}
	}
}

/*
 * key_cmp
 *		acc_key_cmp with the comparison's own setup.
 */
static int
key_cmp(ParityCtx *c, const Datum *a, const Datum *b)
{
	return acc_key_cmp(&c->acc, a, b);
}

/*
 * is_quarantined
 *		acc_quarantined with the comparison's own setup.
 */
static bool
is_quarantined(ParityCtx *c, const Datum *key)
{
	return acc_quarantined(&c->acc, key);
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
 * qkey_cmp
 *		qsort_arg comparator over quarantined keys (nkeys datums each).
 */
static int
qkey_cmp(const void *a, const void *b, void *arg)
{
	return key_cmp((ParityCtx *) arg, (const Datum *) a, (const Datum *) b);
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
	as_role(c, c->lowner);		/* the forward key mapping is the owner's SQL */

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
	c->acc.q = c->qkeys;
	c->acc.nq = c->nq;
}

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
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		values[1];
	bool		isnull;
	Datum		d;

	values[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args("SELECT pg_catalog.sum(CASE WHEN c.reltuples OPERATOR(pg_catalog.>=) 0 THEN c.reltuples::pg_catalog.float8 "
							  "ELSE pg_catalog.pg_relation_size(c.oid)::pg_catalog.float8 OPERATOR(pg_catalog./) 8192 OPERATOR(pg_catalog.*) 50 END), "
							  "pg_catalog.sum(pg_catalog.pg_relation_size(c.oid)::pg_catalog.float8 OPERATOR(pg_catalog./) 8192) "
							  "FROM pg_catalog.pg_class c WHERE c.relkind OPERATOR(pg_catalog.=) 'r' "
							  "AND (c.oid OPERATOR(pg_catalog.=) $1 OR c.oid OPERATOR(pg_catalog.=) ANY "
							  "(SELECT p.relid FROM pg_catalog.pg_partition_tree($1) p))",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: estimating the size of a table failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*rows = isnull ? 0 : DatumGetFloat8(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*blocks = isnull ? 0 : DatumGetFloat8(d);
}

/*
 * choose_bounds
 *		Cut the key space into ranges of about chunk_rows rows: sample the
 *		target's keys (TABLESAMPLE SYSTEM, repeatable; the legacy side's
 *		mapped keys if the target sample is empty) and take evenly spaced
 *		quantiles (computed by the query, so only they come back).  Any
 *		increasing keys give a correct comparison; the sample only makes
 *		chunks even.  Sets c->chunks and c->acc.bounds.
 */
static void
choose_bounds(ParityCtx *c)
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
	 * about a quarter of chunk_rows when keys follow the physical order
	 * (and much closer when they do not).
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
		as_role(c, side == PSIDE_LEGACY ? c->lowner : c->towner);
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
		if (c->acc.nb > 0 && key_cmp(c, b, &c->acc.bounds[(c->acc.nb - 1) * c->nkeys]) <= 0)
			continue;
		c->chunks[c->acc.nb].bound = b;
		c->acc.nb++;
	}
	c->nchunks = c->acc.nb + 1;
	MemoryContextSwitchTo(old);
	SPI_freetuptable(tt);
}

/*
 * keep_ent
 *		Remember one (segment, chunk) digest of a side for the cache, in
 *		c->cxt; over SPARSE_MAX_CAP / 2 pairs the cache is given up.
 */
static void
keep_ent(ParityCtx *c, int side, const PcEnt *e)
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
				keep_ent(c, side, (PcEnt *) &slots[ACC_SLOT * i]);
	}
	pfree(st);
}

/*
 * append_select_list
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
 * append_from
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
 * key_array
 *		An array of the base type of key column k holding element k of n
 *		keys stored nkeys apart (boundaries or quarantined keys).
 */
static Datum
key_array(ParityCtx *c, int k, const Datum *keys, int n)
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
 * digest_pass_agg
 *		Phase 1 for one side: the aggregate softmig.parity_digest over the
 *		side's rows, which the planner may run in parallel workers (partial
 *		states are combined).  Arguments: seed, number of key columns,
 *		collations, one boundary array and one quarantine array per key
 *		column, the row's ctid (NULL without the cache), then the columns.
 *		With stale (a warm run of the digest cache) only the runs of stale
 *		segments among the first nseg are read, one TID range scan each.
 */
static void
digest_pass_agg(ParityCtx *c, int side, const bool *stale, uint32 nseg)
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
	append_select_list(&buf, c, side);
	appendStringInfoChar(&buf, ')');
	append_from(&buf, c, side);
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
		values[3 + k] = key_array(c, k, c->acc.bounds, c->acc.nb);
		argtypes[3 + c->nkeys + k] = arrtype;
		values[3 + c->nkeys + k] = key_array(c, k, c->acc.q, c->acc.nq);
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
		/* no row limit: a limited execution would run without parallel workers */
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
	acc_row(&d->c->acc, d->st, slot->tts_values, slot->tts_isnull, &hit);
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
	append_select_list(&buf, c, side);
	append_from(&buf, c, side);
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
 * digest_fits_aggregate
 *		Do a side's columns fit the digest aggregate's argument list
 *		(FUNC_MAX_ARGS: state, seed, key count, collations, two arrays per
 *		key column, ctid, the columns)?
 */
static bool
digest_fits_aggregate(ParityCtx *c)
{
	return 1 + 4 + 2 * c->nkeys + c->ncols <= FUNC_MAX_ARGS;
}

/*
 * digest_pass
 *		Phase 1 for one side, by the aggregate when its arguments fit in one
 *		call (FUNC_MAX_ARGS), else locally.
 */
static void
digest_pass(ParityCtx *c, int side)
{
	if (digest_fits_aggregate(c))
		digest_pass_agg(c, side, NULL, 0);
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
 *		digest_pass_agg), once per call site, in fn_mcxt.
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
		acc_col_init(&s->cols[i], get_fn_expr_argtype(fcinfo->flinfo, first + i),
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
		Size		len = acc_state_size(s->nb + 1, 0);

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
	acc_row(s, ACC_STATE(state), values, nulls, &hit);
	if (!PG_ARGISNULL(first - 1))
	{
		BlockNumber blk = ItemPointerGetBlockNumberNoCheck((ItemPointer) PG_GETARG_POINTER(first - 1));

		/* a grown state is allocated per call; the executor copies it */
		state = sparse_add(state, PC_ENT_KEY(blk / PC_SEG_BLOCKS, hit.chunk),
						   1, hit.a, hit.b, CurrentMemoryContext);
	}
	PG_RETURN_POINTER(state);
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
		VARSIZE(b) != acc_state_size(hb[ACC_H_NCHUNKS], hb[ACC_H_CAP]))
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
			a = sparse_add(a, e[0], e[1], e[2], e[3], CurrentMemoryContext);
			sa = ACC_STATE(a);
		}
	}
	PG_RETURN_POINTER(a);
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
	int			off;			/* columns start here (legacy: after its key) */
	Oid			owner;			/* fetched as (its table's owner) */
	ParityCtx  *c;
	Datum	   *vals;			/* [0 .. off-1] legacy key, [off ..] c->cols */
	bool	   *nulls;
} Stream;

/* The entity a difference is about, its key computed on demand. */
struct KeyRef
{
	int			side;
	Stream	   *s;				/* the row, or NULL when key is given */
	bool		have;
	Datum		key;			/* legacy-key jsonb */
};

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
	as_role(c, owner);
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
		as_role(s->c, s->owner);	/* its expressions are its owner's SQL */
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
 * key_of
 *		The legacy-key jsonb of the entity a difference is about, computed
 *		once per row and only when an emitter asks (most rows are never
 *		reported): from the legacy row's key columns, or for a target row by
 *		looking it up through the backward key mapping.  The result is
 *		copied into the current memory context.
 */
static Datum
key_of(ParityCtx *c, KeyRef *kr)
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
			appendStringInfo(&buf, "SELECT %s FROM %s AS softmig_t WHERE ", c->tkeyjson, c->tqual);
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
	as_role(c, kr->side == PSIDE_LEGACY ? c->lowner : c->towner);
	if (SPI_execute_plan(plan, values, nulls, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: computing the key of a difference failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	kr->key = isnull ? DirectFunctionCall1(jsonb_in, CStringGetDatum("null")) : datumCopy(d, false, -1);
	SPI_freetuptable(SPI_tuptable);
	kr->have = true;
	return kr->key;
}

/* lo bound: none, > or >=; hi bound: none or <= */
#define LO_NONE 0
#define LO_GT 1
#define LO_GE 2
#define HI_NONE 0
#define HI_LE 1

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
	append_order_by(&buf, c, off + 1);
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
			same = values_equal(&c->cols[i], lv, tv);
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
			r = key_cmp(c, &l->vals[l->off], &t->vals[t->off]);

		if (r < 0)
		{
			if (!(c->nq > 0 && is_quarantined(c, &l->vals[l->off])))
			{
				KeyRef		kr = {PSIDE_LEGACY, l, false, (Datum) 0};

				c->found[PK_MISSING_IN_TARGET]++;
				c->emit(c, PK_MISSING_IN_TARGET, &kr, -1, 0, true, 0, true);
			}
			adv_l = true;
		}
		else if (r > 0)
		{
			if (!t_matched && !(c->nq > 0 && is_quarantined(c, &t->vals[t->off])))
			{
				KeyRef		kr = {PSIDE_TARGET, t, false, (Datum) 0};

				c->found[PK_MISSING_IN_LEGACY]++;
				c->emit(c, PK_MISSING_IN_LEGACY, &kr, -1, 0, true, 0, true);
			}
			adv_t = true;
		}
		else
		{
			if (!(c->nq > 0 && is_quarantined(c, &l->vals[l->off])))
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
	stream_open(c, &l, list_length(c->lkeycols), c->lowner, plans[PSIDE_LEGACY][lo_mode][hi_mode], values, nulls);
	stream_open(c, &t, 0, c->towner, plans[PSIDE_TARGET][lo_mode][hi_mode], values, nulls);
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
 *		is quarantined.  Counts them in c->nullkeys[side].
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
			kr.key = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
			if (c->apply_quarantine && c->nqjson > 0 && is_quarantined_json(c, kr.key))
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

/* ---------------------------------------------------------------------
 * Digest cache
 *
 * With the cache on, the digest aggregate also receives each row's ctid and
 * keeps, besides the chunk digests, the digests of every (segment, chunk)
 * pair: the rows of one chunk found in one segment of PC_SEG_BLOCKS heap
 * blocks.  A full pass stores, in softmig.parity_cache, the chunk bounds,
 * the run's seed, and per side those pairs and the page state of every
 * segment (paritycache.c: its highest page LSN if all its pages were
 * all-visible and unchanged since the pass began).  A later run with the
 * same fingerprint (mapping, compared columns and their types, functions,
 * column definitions, collation versions, quarantine, chunk size, both
 * tables' storage) reads the page state again instead of the rows:
 *
 *  - a segment is stale unless it was stored and still has all pages
 *    all-visible with the same highest LSN;
 *  - the stored pairs of the other segments are summed into the chunks
 *    (their rows are exactly the rows the pairs were computed from, for
 *    any snapshot);
 *  - the stale segments are digested again, with the stored seed, through
 *    TID range scans, and added.
 *
 * The chunk digests are then exactly what a full pass with that seed would
 * compute, and the run goes on as a full one: differing chunks are
 * descended and compared row by row.  When more than a quarter of either
 * table's segments are stale a full pass is cheaper (it runs in parallel
 * workers) and rebuilds the cache.  Runs in read-only transactions (no
 * write), on a standby, with the cache off or the digest test hook set, and
 * the other cases cache_prepare lists never use it.
 * --------------------------------------------------------------------- */

#define PCM_OFF 0
#define PCM_FULL 1				/* full pass; its digests are stored */
#define PCM_WARM 2				/* stored digests reused */

static const char *const cache_mode_names[] = {"off", "full", "warm"};

/* bump when hashing or the digest state changes: old cache rows then miss */
#define PARITY_CACHE_FORMAT 1

/*
 * cache_off
 *		Record why this run does not use the cache.
 */
static void
cache_off(ParityCtx *c, const char *why)
{
	c->cache_on = false;
	c->cache_mode = PCM_OFF;
	c->cache_why = why;
}

/*
 * key_types_binary
 *		Do all key column types have binary send and receive functions (the
 *		stored chunk bounds are arrays in binary form)?  Syscache only.
 */
static bool
key_types_binary(ParityCtx *c)
{
	for (int k = 0; k < c->nkeys; k++)
	{
		HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(getBaseType(c->cols[k].typid)));
		bool		ok;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for type %u", c->cols[k].typid);
		ok = OidIsValid(((Form_pg_type) GETSTRUCT(tup))->typsend) &&
			OidIsValid(((Form_pg_type) GETSTRUCT(tup))->typreceive);
		ReleaseSysCache(tup);
		if (!ok)
			return false;
	}
	return true;
}

/*
 * cache_prepare
 *		Decide whether this run may use the cache and compute the
 *		comparison's fingerprint.  Runs in the read-only context after
 *		load_quarantine; prepares (without running) one statement per side
 *		as that side's owner to inspect the mapping.  The tables are already
 *		locked (parity_build).  Never with old_snapshot_threshold set: its
 *		early pruning may mark pages all-visible that an old snapshot cannot
 *		fully see (reading them raises "snapshot too old", a stored digest
 *		would not); nor in a serializable transaction, whose reads must take
 *		predicate locks on the rows a stored digest stands for.
 */
static void
cache_prepare(ParityCtx *c)
{
	StringInfoData fp;
	List	   *colls = NIL;
	const char *why = NULL;
	const char *errstr = NULL;

	if (!softmig_parity_cache)
		why = "softmig.parity_cache is off";
	else if (!OidIsValid(get_relname_relid("parity_cache", get_namespace_oid("softmig", false))))
		why = "the extension's SQL predates the cache (ALTER EXTENSION softmig UPDATE)";
	else if (c->digest_bits < 64)
		why = "softmig.parity_digest_bits is below 64";
	else if (RecoveryInProgress())
		why = "the server is in recovery";
	else if (softmig_old_snapshot_threshold_on())
		why = "old_snapshot_threshold is set";
	else if (IsolationIsSerializable())
		why = "the transaction is serializable";
	else if (!digest_fits_aggregate(c))
		why = "too many compared columns";
	else if (!key_types_binary(c))
		why = "a key type has no binary input and output";
	if (why)
	{
		cache_off(c, why);
		return;
	}

	initStringInfo(&fp);
	appendStringInfo(&fp, "softmig parity cache %d server %s chunk_rows %d keys %d cols %d",
					 PARITY_CACHE_FORMAT, GetConfigOption("server_version_num", false, false),
					 c->chunk_rows, c->nkeys, c->ncols);
	for (int i = 0; i < c->ncols; i++)
		appendStringInfo(&fp, " [%s %u %d %u %d]", c->cols[i].name, c->cols[i].typid,
						 c->cols[i].typmod, c->cols[i].collid, c->acc.cols[i].how);
	for (int side = PSIDE_LEGACY; side <= PSIDE_TARGET && why == NULL; side++)
	{
		Relation	rel = table_open(side == PSIDE_LEGACY ? c->legacy : c->target, NoLock);
		StringInfoData q;
		SPIPlanPtr	plan;

		why = softmig_pc_rel_refusal(rel);
		appendStringInfo(&fp, " side %d rel %u node %u:%u", side, RelationGetRelid(rel),
						 softmig_rel_tablespace(rel), softmig_rel_filenumber(rel));
		softmig_pc_attribute_versions(rel, &fp);
		table_close(rel, NoLock);
		if (why)
			break;
		initStringInfo(&q);
		appendStringInfoString(&q, "SELECT ");
		append_select_list(&q, c, side);
		append_from(&q, c, side);
		appendStringInfo(&fp, " %s", q.data);
		as_role(c, side == PSIDE_LEGACY ? c->lowner : c->towner);
		plan = SPI_prepare(q.data, 0, NULL);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		why = softmig_pc_plan_refusal(plan, &fp, &colls);
		SPI_freeplan(plan);
	}
	if (why)
	{
		cache_off(c, why);
		return;
	}
	for (int k = 0; k < c->nkeys; k++)
	{
		Oid			arrtype = get_array_type(getBaseType(c->cols[k].typid));
		Oid			outfn;
		bool		isvarlena;

		getTypeOutputInfo(arrtype, &outfn, &isvarlena);
		appendStringInfo(&fp, " q%d %s", k,
						 OidOutputFunctionCall(outfn, key_array(c, k, c->acc.q, c->acc.nq)));
	}
	for (int i = 0; i < c->ncols; i++)
		if (OidIsValid(c->cols[i].collid))
			colls = list_append_unique_oid(colls, c->cols[i].collid);
	softmig_pc_collation_versions(&fp, colls);
	if (!pg_md5_hash(fp.data, fp.len, c->cache_fp, &errstr))
		elog(ERROR, "softmig: computing the parity cache fingerprint failed: %s", errstr);
	c->cache_on = true;
	c->cache_mode = PCM_FULL;
}

/*
 * cache_try_warm
 *		Use the stored digests if the cache row matches this comparison and
 *		not too much changed since: the chunks get their bounds, the stored
 *		(segment, chunk) digests of unchanged segments and the digests of
 *		the stale segments, read again now (TID range scans, with the
 *		stored seed).  Returns true if so; false leaves the run to a full
 *		pass (nothing has been reported yet; the caller resets what was
 *		accumulated).  Reads the cache row as the catalog owner and both
 *		tables' pages; runs the stale segments' digests as each side's owner.
 */
static bool
cache_try_warm(ParityCtx *c)
{
	Oid			argtypes[3] = {INT4OID, TEXTOID, INT4OID};
	Datum		values[3];
	bool		isnull;
	Oid			save_user;
	int			save_sec;
	int			ret;
	bytea	   *blob[2];
	Datum		boundsd;
	PcPages		cached[2];
	uint64		seed[2];
	PcEnt	   *ents[2];
	int			nents[2];
	Datum	   *barr;
	int			nbarr;
	int			nchunks;
	XLogRecPtr	start;
	MemoryContext old;

	values[0] = Int32GetDatum(c->id);
	values[1] = CStringGetTextDatum(c->cache_fp);
	values[2] = Int32GetDatum(c->chunk_rows);
	softmig_become_catalog_owner(&save_user, &save_sec);
	ret = SPI_execute_with_args("SELECT bounds, legacy_state, target_state FROM softmig.parity_cache "
								"WHERE migration_id OPERATOR(pg_catalog.=) $1 "
								"AND fingerprint OPERATOR(pg_catalog.=) $2 "
								"AND chunk_rows OPERATOR(pg_catalog.=) $3",
								3, argtypes, values, NULL, true, 1);
	softmig_set_user(save_user, save_sec);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.parity_cache failed");
	if (SPI_processed != 1)
	{
		c->cache_why = "no stored digests for this comparison";
		return false;
	}

	old = MemoryContextSwitchTo(c->cxt);
	boundsd = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	deconstruct_array(DatumGetArrayTypePCopy(boundsd), BYTEAOID, -1, false, TYPALIGN_INT,
					  &barr, NULL, &nbarr);
	for (int side = 0; side < 2; side++)
		blob[side] = DatumGetByteaPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
													  2 + side, &isnull));
	SPI_freetuptable(SPI_tuptable);
	c->cache_why = "the stored digests are unreadable";
	for (int side = 0; side < 2; side++)
		if (!softmig_pc_unpack(blob[side], &cached[side], &seed[side], &ents[side], &nents[side]))
		{
			MemoryContextSwitchTo(old);
			return false;
		}
	if (nbarr != c->nkeys || seed[0] != seed[1])
	{
		MemoryContextSwitchTo(old);
		return false;
	}

	/* the chunk bounds, as stored */
	nchunks = -1;
	for (int k = 0; k < c->nkeys; k++)
	{
		Oid			base = getBaseType(c->cols[k].typid);
		Oid			recvfn;
		Oid			ioparam;
		bytea	   *b = DatumGetByteaPP(barr[k]);
		StringInfoData sbuf;
		ArrayType  *arr;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		Datum	   *elems;
		int			n;

		getTypeBinaryInputInfo(get_array_type(base), &recvfn, &ioparam);
		initStringInfo(&sbuf);
		appendBinaryStringInfo(&sbuf, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
		arr = DatumGetArrayTypeP(OidReceiveFunctionCall(recvfn, &sbuf, ioparam, -1));
		get_typlenbyvalalign(base, &typlen, &typbyval, &typalign);
		if (ARR_ELEMTYPE(arr) != base)
		{
			MemoryContextSwitchTo(old);
			return false;
		}
		deconstruct_array(arr, base, typlen, typbyval, typalign, &elems, NULL, &n);
		if (k == 0)
		{
			if (n + 1 > PARITY_MAX_CHUNKS)
			{
				MemoryContextSwitchTo(old);
				return false;
			}
			nchunks = n + 1;
			c->acc.nb = n;
			c->acc.bounds = palloc(sizeof(Datum) * Max(n, 1) * c->nkeys);
		}
		else if (n + 1 != nchunks)
		{
			MemoryContextSwitchTo(old);
			return false;
		}
		for (int i = 0; i < n; i++)
			c->acc.bounds[i * c->nkeys + k] = datumCopy(elems[i], typbyval, typlen);
	}
	c->nchunks = nchunks;
	c->chunks = palloc0(sizeof(PChunk) * nchunks);
	for (int i = 0; i < c->acc.nb; i++)
		c->chunks[i].bound = &c->acc.bounds[i * c->nkeys];
	MemoryContextSwitchTo(old);
	c->seed = c->acc.seed = seed[0];

	/* which segments changed; the stored digests of the others */
	start = GetXLogInsertRecPtr();
	for (int side = 0; side < 2; side++)
	{
		Relation	rel = table_open(side == PSIDE_LEGACY ? c->legacy : c->target, NoLock);
		PcPages    *now = &c->pages[side];
		uint32		nseg;
		uint32		nstale = 0;
		bool	   *stale;

		old = MemoryContextSwitchTo(c->cxt);
		softmig_pc_read_pages(rel, start, now);
		MemoryContextSwitchTo(old);
		table_close(rel, NoLock);
		if (now->relfilenode != cached[side].relfilenode)
		{
			c->cache_why = "a table was rewritten";
			return false;
		}
		nseg = Max(now->nseg, cached[side].nseg);
		stale = palloc0(sizeof(bool) * Max(nseg, 1));
		for (uint32 g = 0; g < nseg; g++)
			stale[g] = g >= now->nseg || g >= cached[side].nseg ||
				now->seg[g] == PC_SEG_NONE || cached[side].seg[g] == PC_SEG_NONE ||
				now->seg[g] != cached[side].seg[g];
		/* a segment that lost or gained blocks is stale whatever its LSNs */
		if (now->nblocks != cached[side].nblocks)
			for (uint32 g = Min(now->nblocks, cached[side].nblocks) / PC_SEG_BLOCKS; g < nseg; g++)
				stale[g] = true;
		for (uint32 g = 0; g < nseg; g++)
			nstale += stale[g] ? 1 : 0;
		c->stale_segs[side] = nstale;
		if (nstale > 0 && (double) nstale > 0.25 * nseg)
		{
			c->cache_why = "more than a quarter of a table changed";
			return false;
		}
		for (int i = 0; i < nents[side]; i++)
		{
			PcEnt	   *e = &ents[side][i];
			uint32		g = PC_ENT_SEG(e->key);
			uint32		ch = PC_ENT_CHUNK(e->key);

			if (g >= nseg || ch > (uint32) nchunks + 1)
			{
				c->cache_why = "the stored digests are unreadable";
				return false;
			}
			if (stale[g])
				continue;
			if (ch < (uint32) nchunks)
			{
				c->chunks[ch].n[side] += e->n;
				c->chunks[ch].d1[side] += e->d1;
				c->chunks[ch].d2[side] += e->d2;
				c->rows[side] += e->n;
			}
			else if (ch == (uint32) nchunks)
				c->nullkeys[side] += e->n;
			else
				c->qskipped[side] += e->n;
			keep_ent(c, side, e);
		}
		/* and the stale segments, read again */
		as_role(c, side == PSIDE_LEGACY ? c->lowner : c->towner);
		if (nstale > 0)
			digest_pass_agg(c, side, stale, now->nseg);
		if (c->overflow)
		{
			c->cache_why = "too many (segment, chunk) pairs to store";
			return false;
		}
		if (side == PSIDE_LEGACY)
			pause_point();
	}
	c->cache_mode = PCM_WARM;
	c->cache_why = NULL;
	return true;
}

/*
 * cache_store
 *		Write this run's cache row (as the catalog owner): after a full
 *		pass the bounds and both sides' page states and (segment, chunk)
 *		digests; after a warm run the refreshed states, or only the row's
 *		counters when nothing was stale.  Skipped in a read-only
 *		transaction, when there were too many pairs to keep, or while
 *		another run holds the migration's cache lock.  Outside the
 *		read-only context, inside the SPI connection.
 */
static void
cache_store(ParityCtx *c)
{
	Oid			save_user;
	int			save_sec;
	bytea	   *blob[2];
	int			ret;

	if (!c->cache_on || c->cache_mode == PCM_OFF || XactReadOnly)
		return;
	if (c->overflow)
	{
		c->cache_why = "too many (segment, chunk) pairs to store";
		return;
	}
	softmig_become_catalog_owner(&save_user, &save_sec);
	if (!softmig_pc_try_lock(c->id))
	{
		softmig_set_user(save_user, save_sec);
		return;
	}
	for (int side = 0; side < 2; side++)
		blob[side] = softmig_pc_pack(&c->pages[side], c->seed, c->ents[side], c->nents[side]);
	if (c->cache_mode == PCM_FULL)
	{
		Oid			argtypes[6] = {INT4OID, INT4OID, TEXTOID, BYTEAARRAYOID, BYTEAOID, BYTEAOID};
		Datum		values[6];
		Datum	   *bounds = palloc(sizeof(Datum) * c->nkeys);

		for (int k = 0; k < c->nkeys; k++)
		{
			Oid			sendfn;
			bool		isvarlena;

			getTypeBinaryOutputInfo(get_array_type(getBaseType(c->cols[k].typid)), &sendfn, &isvarlena);
			bounds[k] = PointerGetDatum(OidSendFunctionCall(sendfn, key_array(c, k, c->acc.bounds, c->acc.nb)));
		}
		values[0] = Int32GetDatum(c->id);
		values[1] = Int32GetDatum(c->chunk_rows);
		values[2] = CStringGetTextDatum(c->cache_fp);
		values[3] = PointerGetDatum(construct_array(bounds, c->nkeys, BYTEAOID, -1, false, TYPALIGN_INT));
		values[4] = PointerGetDatum(blob[PSIDE_LEGACY]);
		values[5] = PointerGetDatum(blob[PSIDE_TARGET]);
		ret = SPI_execute_with_args("INSERT INTO softmig.parity_cache AS p "
									"(migration_id, chunk_rows, fingerprint, bounds, legacy_state, target_state, built_at, used_at, warm_runs) "
									"VALUES ($1, $2, $3, $4, $5, $6, pg_catalog.now(), pg_catalog.now(), 0) "
									"ON CONFLICT (migration_id) DO UPDATE SET chunk_rows = EXCLUDED.chunk_rows, "
									"fingerprint = EXCLUDED.fingerprint, bounds = EXCLUDED.bounds, "
									"legacy_state = EXCLUDED.legacy_state, target_state = EXCLUDED.target_state, "
									"built_at = EXCLUDED.built_at, used_at = EXCLUDED.used_at, warm_runs = 0",
									6, argtypes, values, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "softmig: writing softmig.parity_cache failed");
	}
	else
	{
		Oid			argtypes[4] = {INT4OID, TEXTOID, BYTEAOID, BYTEAOID};
		Datum		values[4];

		values[0] = Int32GetDatum(c->id);
		values[1] = CStringGetTextDatum(c->cache_fp);
		values[2] = PointerGetDatum(blob[PSIDE_LEGACY]);
		values[3] = PointerGetDatum(blob[PSIDE_TARGET]);
		if (c->stale_segs[PSIDE_LEGACY] == 0 && c->stale_segs[PSIDE_TARGET] == 0)
			/* nothing changed: leave the (TOASTed) states alone */
			ret = SPI_execute_with_args("UPDATE softmig.parity_cache SET used_at = pg_catalog.now(), "
										"warm_runs = warm_runs OPERATOR(pg_catalog.+) 1 "
										"WHERE migration_id OPERATOR(pg_catalog.=) $1 AND fingerprint OPERATOR(pg_catalog.=) $2",
										2, argtypes, values, NULL, false, 0);
		else
			ret = SPI_execute_with_args("UPDATE softmig.parity_cache SET legacy_state = $3, target_state = $4, "
										"used_at = pg_catalog.now(), warm_runs = warm_runs OPERATOR(pg_catalog.+) 1 "
										"WHERE migration_id OPERATOR(pg_catalog.=) $1 AND fingerprint OPERATOR(pg_catalog.=) $2",
										4, argtypes, values, NULL, false, 0);
		if (ret != SPI_OK_UPDATE)
			elog(ERROR, "softmig: writing softmig.parity_cache failed");
	}
	softmig_set_user(save_user, save_sec);
	c->stored = true;
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

	errcb.callback = parity_error_context;
	errcb.arg = c;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	softmig_check_read_access(c->legacy, c->target, c->actor, "softmig.parity");
	softmig_enter_readonly_context(c->lowner, &save_nest, &save_user, &save_sec, &save_ro);
	c->run_sec = save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION;
	load_quarantine(c);
	cache_prepare(c);

	if (!(c->cache_on && cache_try_warm(c)))
	{
		XLogRecPtr	start;

		/* a full pass (its digests are stored if the cache is on) */
		if (c->cache_on)
			c->cache_mode = PCM_FULL;
		for (int s = 0; s < 2; s++)
		{
			c->rows[s] = c->nullkeys[s] = c->qskipped[s] = 0;
			c->nents[s] = 0;
			c->stale_segs[s] = 0;
		}
		c->overflow = false;
		c->seed = c->acc.seed = c->fresh_seed;
		choose_bounds(c);
		start = c->cache_on ? GetXLogInsertRecPtr() : InvalidXLogRecPtr;
		as_role(c, c->lowner);
		digest_pass(c, PSIDE_LEGACY);
		pause_point();
		as_role(c, c->towner);
		digest_pass(c, PSIDE_TARGET);
		if (c->cache_on)
			for (int s = 0; s < 2; s++)
			{
				Relation	rel = table_open(s == PSIDE_LEGACY ? c->legacy : c->target, NoLock);
				MemoryContext old = MemoryContextSwitchTo(c->cxt);

				softmig_pc_read_pages(rel, start, &c->pages[s]);
				MemoryContextSwitchTo(old);
				table_close(rel, NoLock);
			}
	}

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
		{
			as_role(c, s == PSIDE_LEGACY ? c->lowner : c->towner);
			null_key_rows(c, s);
		}

	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
	cache_store(c);
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
	values[1] = key_of(c, kr);
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
	id = softmig_migration_by_name(PG_GETARG_TEXT_PP(0), NULL, NULL);

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &st.desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "softmig.parity: return type must be a row type");
	st.desc = CreateTupleDescCopy(st.desc);
	st.ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);

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
	keytext = JsonbToCString(NULL, &DatumGetJsonbP(key_of(c, kr))->root, 0);
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

	errcb.callback = parity_error_context;
	errcb.arg = c;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	softmig_check_read_access(c->legacy, c->target, c->actor, "softmig.inspect");
	softmig_enter_readonly_context(c->lowner, &save_nest, &save_user, &save_sec, &save_ro);
	c->run_sec = save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION;

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
		appendStringInfo(&buf, "SELECT pg_catalog.to_jsonb(softmig_t.*), softmig_t.xmin::pg_catalog.text "
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
		as_role(c, c->towner);
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

PG_FUNCTION_INFO_V1(softmig_inspect);
/*
 * softmig_inspect
 *		softmig.inspect(name, key) -> jsonb: both sides of one entity
 *		(inspect_sides, with reader discovery suppressed: these reads are
 *		softmig's), completed by softmig._inspect_assemble with what the
 *		catalog knows about it (flags, operation keys, last writes, history,
 *		rule violations), which runs with the catalog owner's rights and
 *		evaluates no user SQL.  42704 for an unknown migration, 22004 for
 *		NULL arguments, 42501 for a caller who may not read both tables.
 */
Datum
softmig_inspect(PG_FUNCTION_ARGS)
{
	int32		id;
	Jsonb	   *key;
	volatile Datum sides = (Datum) 0;
	Datum		result;
	Oid			argtypes[3] = {INT4OID, JSONBOID, JSONBOID};
	Datum		values[3];
	Oid			save_user;
	int			save_sec;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key must not be null")));
	id = softmig_migration_by_name(PG_GETARG_TEXT_PP(0), NULL, NULL);
	key = PG_GETARG_JSONB_P(1);

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
	PG_RETURN_DATUM(result);
}
