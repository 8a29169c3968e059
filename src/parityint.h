/*-------------------------------------------------------------------------
 *
 * parityint.h
 *	  Types and functions the structural parity files share (parity.c,
 *	  paritybuild.c, parityhash.c, paritydigest.c, paritydescent.c,
 *	  paritywarm.c, parityinspect.c).  Internal to them: nothing else
 *	  includes it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_PARITYINT_H
#define SOFTMIG_PARITYINT_H

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/sortsupport.h"

#include "softmig.h"
#include "observe.h"
#include "paritycache.h"


#define PSIDE_LEGACY 0
#define PSIDE_TARGET 1

/* rows per cursor fetch in the descent */
#define PARITY_FETCH 1000

/*
 * digest state: ACC_HDR header words, 3 per chunk (see parity_acc_row), then an
 * open-addressing table of (segment, chunk) digests, 4 words per slot (see
 * parity_sparse_add), when the rows' ctid is passed.
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

extern const char *const parity_kind_names[];

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
	int			nb;				/* chunk i is (b[i-1], b[i]]; chunk nb
								 * unbounded */
	Datum	   *bounds;			/* nb * nkeys */
	int			nq;
	Datum	   *q;				/* nq * nkeys, sorted */
	int			last_chunk;		/* chunk of the previous one-column key */
} AccSetup;

typedef struct ParityCtx ParityCtx;
typedef struct KeyRef KeyRef;

/*
 * Called for every confirmed difference; values are of the column's type.
 * The entity's key (legacy-key jsonb) is computed on demand with parity_key_of().
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
	char	   *lsplit;			/* follows "FROM lqual AS softmig_l": "", or
								 * for an attribute member of a split a join
								 * that keeps the rows with an attribute set */
	char	   *tsplit;			/* the same after "FROM tqual AS softmig_t" */
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
	AccSetup	acc;			/* hashing, chunking, quarantine (see
								 * parity_acc_row) */
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
	uint64		stale_segs[2];	/* segments read again (warm), or found stale
								 * by the warm attempt a full pass replaced */
	bool		stored;			/* the cache row was written */
	/* output */
	ParityEmit	emit;
	void	   *emit_arg;
	MemoryContext cxt;			/* lives for the whole call */
	MemoryContext rowcxt;		/* reset per row */
};


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

#define PCM_OFF 0
#define PCM_FULL 1				/* full pass; its digests are stored */
#define PCM_WARM 2				/* stored digests reused */


/* bump when hashing or the digest state changes: old cache rows then miss */
#define PARITY_CACHE_FORMAT 2


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
 * What parity_acc_row did with a row: its chunk (nchunks: NULL key, nchunks + 1:
 * quarantined) and its two hashes (0 unless digested).
 */
typedef struct AccHit
{
	uint32		chunk;
	uint64		a;
	uint64		b;
} AccHit;

/* lo bound: none, > or >=; hi bound: none or <= */
#define LO_NONE 0
#define LO_GT 1
#define LO_GE 2
#define HI_NONE 0
#define HI_LE 1

/* parity.c */
extern void parity_as_role(ParityCtx *c, Oid role);
extern void parity_enter(ParityCtx *c, ErrorContextCallback *errcb, const char *what,
						 int *save_nest, Oid *save_user, int *save_sec, bool *save_ro);

/* paritybuild.c */
extern char *parity_collation_sql(Oid collid);
extern ParityCtx *parity_build(int32 id, int chunk_rows, MemoryContext cxt);
extern void parity_load_quarantine(ParityCtx *c);

/* parityhash.c */
extern void parity_acc_col_init(AccCol *ac, Oid typid, Oid collid, bool iskey, MemoryContext cxt);
extern void parity_acc_row(AccSetup *s, uint64 *st, const Datum *v, const bool *isnull, AccHit *hit);
extern Size parity_acc_state_size(uint64 nchunks, uint64 cap);
extern bytea *parity_sparse_add(bytea *state, uint64 key, uint64 n, uint64 a, uint64 b, MemoryContext cxt);
extern int	parity_key_cmp(ParityCtx *c, const Datum *a, const Datum *b);
extern bool parity_is_quarantined(ParityCtx *c, const Datum *key);
extern char *parity_value_text(PCol *pc, Datum v);
extern bool parity_values_equal(PCol *pc, Datum a, Datum b);
extern int	parity_qkey_cmp(const void *a, const void *b, void *arg);
extern bool parity_is_quarantined_json(ParityCtx *c, Datum key);

/* paritydigest.c */
extern void parity_choose_bounds(ParityCtx *c);
extern void parity_keep_ent(ParityCtx *c, int side, const PcEnt *e);
extern void parity_append_select_list(StringInfo buf, ParityCtx *c, int side);
extern void parity_append_order_by(StringInfo buf, ParityCtx *c, int first);
extern void parity_append_from(StringInfo buf, ParityCtx *c, int side);
extern Datum parity_key_array(ParityCtx *c, int k, const Datum *keys, int n);
extern void parity_digest_pass_agg(ParityCtx *c, int side, const bool *stale, uint32 nseg);
extern bool parity_digest_fits_aggregate(ParityCtx *c);
extern void parity_digest_pass(ParityCtx *c, int side);

/* paritydescent.c */
extern Datum parity_key_of(ParityCtx *c, KeyRef *kr);
extern void parity_compare_range(ParityCtx *c, SPIPlanPtr plans[2][3][2], int lo_mode, Datum *lo,
								 int hi_mode, Datum *hi);
extern void parity_null_key_rows(ParityCtx *c, int side);
extern bool parity_chunk_differs(ParityCtx *c, PChunk *ch);

/* paritywarm.c */
extern void parity_cache_prepare(ParityCtx *c);
extern bool parity_cache_try_warm(ParityCtx *c);
extern void parity_cache_store(ParityCtx *c);

#endif							/* SOFTMIG_PARITYINT_H */
