/*-------------------------------------------------------------------------
 *
 * parityhash.c
 *	  Structural parity, hashing: the per-row hashes and the digest state
 *	  (per-chunk counts and two digests, and the (segment, chunk) table of
 *	  the digest cache), key ordering and the chunk of a key.
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
 * the digest cache the (segment, chunk) table (parity_sparse_add).
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
 * parity_acc_col_init
 *		Decide how a column is hashed and look up its functions: hash and
 *		output, and for keys a sort comparator for the default btree order
 *		with the column's collation.  Allocates in cxt.
 */
void
parity_acc_col_init(AccCol *ac, Oid typid, Oid collid, bool iskey, MemoryContext cxt)
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
 * fold_mul
 *		The 128-bit product of a and b, its halves xor-ed: every input bit
 *		reaches every output bit.
 */
#ifdef HAVE_INT128
static inline uint64
fold_mul(uint64 a, uint64 b)
{
	uint128		p = (uint128) a * b;

	return (uint64) p ^ (uint64) (p >> 64);
}
#endif

/*
 * load64, load32
 *		An unaligned 8- or 4-byte word.
 */
static inline uint64
load64(const unsigned char *p)
{
	uint64		w;

	memcpy(&w, p, 8);
	return w;
}

static inline uint64
load32(const unsigned char *p)
{
	uint32		w;

	memcpy(&w, p, 4);
	return w;
}

/*
 * acc_bytes_hash
 *		Seeded 64-bit hash of len bytes, for the values hashed by their
 *		bytes (most text and bytea values are short).  Each 16 bytes are
 *		two 8-byte words, xor-ed with the running state, the seed and
 *		constants and folded by one 128-bit multiply; the last 1 to 16
 *		bytes are read as two words that may overlap (so every byte is
 *		read, none beyond the value), and the length and a final mix64
 *		close it, so inputs of different lengths never share a last step.
 *		Two different inputs collide with a probability of about 2^-64 over
 *		the random seed, as the digests need.  Where the compiler has no
 *		128-bit integers, hash_bytes_extended.  Words are read in the
 *		platform's byte order: digests are compared only between servers of
 *		the same platform.
 */
static inline uint64
acc_bytes_hash(const unsigned char *p, size_t len, uint64 seed)
{
#ifdef HAVE_INT128
	uint64		h = seed ^ UINT64CONST(0x243f6a8885a308d3);
	size_t		n = len;
	uint64		w0;
	uint64		w1;

	while (n > 16)
	{
		h = fold_mul(load64(p) ^ h ^ UINT64CONST(0x13198a2e03707344),
					 load64(p + 8) ^ seed ^ UINT64CONST(0xa4093822299f31d0));
		p += 16;
		n -= 16;
	}
	if (n > 8)
	{
		w0 = load64(p);
		w1 = load64(p + n - 8);
	}
	else if (n >= 4)
	{
		w0 = load32(p) | (load32(p + n - 4) << 32);
		w1 = 0;
	}
	else if (n > 0)
	{
		w0 = (uint64) p[0] | ((uint64) p[n / 2] << 8) | ((uint64) p[n - 1] << 16);
		w1 = 0;
	}
	else
		w0 = w1 = 0;
	h = fold_mul(w0 ^ h ^ UINT64CONST(0x082efa98ec4e6c89),
				 w1 ^ seed ^ UINT64CONST(0x452821e638d01377));
	return mix64(h ^ ((uint64) len * UINT64CONST(0x9e3779b97f4a7c15)));
#else
	return hash_bytes_extended(p, len, seed);
#endif
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
				struct varlena *p = (struct varlena *) DatumGetPointer(v);

				/* inline values (the common case) are hashed where they lie */
				if (VARATT_IS_EXTENDED(p) && !VARATT_IS_SHORT(p))
					p = PG_DETOAST_DATUM_PACKED(v);
				return acc_bytes_hash((const unsigned char *) VARDATA_ANY(p),
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
			return acc_bytes_hash((const unsigned char *) DatumGetPointer(v),
								  ac->typlen, s->seed);
		case ACC_HASH_TYPE:
			return DatumGetUInt64(FunctionCall2Coll(&ac->hash, ac->collid, v,
													UInt64GetDatum(s->seed)));
		default:
			{
				char	   *t = OutputFunctionCall(&ac->out, v);

				return acc_bytes_hash((const unsigned char *) t, strlen(t), s->seed);
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
 * acc_key1_le
 *		key <= bound for one-column keys: int4 and int8 keys (whose sort
 *		support is the plain signed comparison in their default order)
 *		compared inline, others through the sort comparator.
 */
static inline bool
acc_key1_le(SortSupport ssup, Datum key, Datum bound)
{
	if (ssup->comparator == ssup_datum_int32_cmp && !ssup->ssup_reverse)
		return DatumGetInt32(key) <= DatumGetInt32(bound);
#if SIZEOF_DATUM >= 8
	if (ssup->comparator == ssup_datum_signed_cmp && !ssup->ssup_reverse)
		return DatumGetInt64(key) <= DatumGetInt64(bound);
#endif
	return ApplySortComparator(key, false, bound, false, ssup) <= 0;
}

/*
 * acc_chunk_of
 *		The chunk of a non-null key: the first i with key <= b[i], or nb.
 *		Rows mostly come in key order (tables are often written in it), so
 *		the previous row's chunk (s->last_chunk) is tried first; then a
 *		binary search.
 */
static int
acc_chunk_of(AccSetup *s, const Datum *key)
{
	int			lo = 0;
	int			hi = s->nb;
	int			g = s->last_chunk;

	if (s->nkeys == 1)
	{
		/* the common case, without the per-column loop */
		SortSupport ssup = &s->cols[0].ssup;

		if (g >= 0 && g <= s->nb &&
			(g == s->nb || acc_key1_le(ssup, key[0], s->bounds[g])) &&
			(g == 0 || !acc_key1_le(ssup, key[0], s->bounds[g - 1])))
			return g;
		while (lo < hi)
		{
			int			mid = (lo + hi) / 2;

			if (acc_key1_le(ssup, key[0], s->bounds[mid]))
				hi = mid;
			else
				lo = mid + 1;
		}
		s->last_chunk = lo;
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
 * parity_acc_row
 *		Digest one row (keys then fields) into state st.  The primary hash
 *		(hash_combine64 chain) and the guard hash (rotate-xor-multiply chain,
 *		finalized by mix64) combine the same per-value hashes in unrelated
 *		ways; sums make the digest independent of row order.  *hit says
 *		where the row went, for the (segment, chunk) table.
 */
void
parity_acc_row(AccSetup *s, uint64 *st, const Datum *v, const bool *isnull, AccHit *hit)
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
		uint64		fh = (isnull[i] ? UINT64CONST(0x6e756c6c6e756c6c) :
						  acc_value_hash(s, &s->cols[i], v[i]));

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
 * parity_acc_state_size
 *		Bytes of a digest state bytea with nchunks chunks and cap slots.
 */
Size
parity_acc_state_size(uint64 nchunks, uint64 cap)
{
	return ACC_PAD + sizeof(uint64) * (ACC_HDR + ACC_PER * nchunks + ACC_SLOT * cap);
}

/*
 * parity_sparse_add
 *		Add (n, a, b) to the digests of pair key (PC_ENT_KEY) in the state's
 *		(segment, chunk) table, growing it (a copy in cxt, returned; the old
 *		state is left to its owner) when it is half full.  Past
 *		SPARSE_MAX_CAP slots the table is given up (ACC_H_OVERFLOW): the
 *		digests stay exact, only the cache cannot be stored.
 */
bytea *
parity_sparse_add(bytea *state, uint64 key, uint64 n, uint64 a, uint64 b, MemoryContext cxt)
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
		grown = (bytea *) MemoryContextAllocZero(cxt, parity_acc_state_size(st[ACC_H_NCHUNKS], cap));
		SET_VARSIZE(grown, parity_acc_state_size(st[ACC_H_NCHUNKS], cap));
		gst = ACC_STATE(grown);
		memcpy(gst, st, sizeof(uint64) * (ACC_HDR + ACC_PER * st[ACC_H_NCHUNKS]));
		gst[ACC_H_CAP] = cap;
		gst[ACC_H_USED] = 0;
		gst[ACC_H_LAST] = 0;
		old = acc_slots(st);
		for (uint64 i = 0; i < st[ACC_H_CAP]; i++)
			if (old[ACC_SLOT * i] != 0)
				grown = parity_sparse_add(grown, old[ACC_SLOT * i], old[ACC_SLOT * i + 1],
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
 * parity_key_cmp
 *		acc_key_cmp with the comparison's own setup.
 */
int
parity_key_cmp(ParityCtx *c, const Datum *a, const Datum *b)
{
	return acc_key_cmp(&c->acc, a, b);
}

/*
 * parity_is_quarantined
 *		acc_quarantined with the comparison's own setup.
 */
bool
parity_is_quarantined(ParityCtx *c, const Datum *key)
{
	return acc_quarantined(&c->acc, key);
}

/*
 * parity_value_text
 *		A non-null value of a column as text (its output function).
 */
char *
parity_value_text(PCol *pc, Datum v)
{
	return OutputFunctionCall(&pc->out, v);
}

/*
 * parity_values_equal
 *		Are two non-null values of a column equal?  The type's equality
 *		operator with the column's collation; the text forms for types
 *		without one.
 */
bool
parity_values_equal(PCol *pc, Datum a, Datum b)
{
	if (pc->has_eq)
		return DatumGetBool(FunctionCall2Coll(&pc->eq, pc->collid, a, b));
	return strcmp(parity_value_text(pc, a), parity_value_text(pc, b)) == 0;
}

/*
 * parity_qkey_cmp
 *		qsort_arg comparator over quarantined keys (nkeys datums each).
 */
int
parity_qkey_cmp(const void *a, const void *b, void *arg)
{
	return parity_key_cmp((ParityCtx *) arg, (const Datum *) a, (const Datum *) b);
}

/*
 * parity_is_quarantined_json
 *		Is this legacy-key jsonb a quarantined entity?  Used for rows whose
 *		key has NULLs (no target key to search by).
 */
bool
parity_is_quarantined_json(ParityCtx *c, Datum key)
{
	for (int i = 0; i < c->nqjson; i++)
		if (DatumGetBool(DirectFunctionCall2(jsonb_eq, key, JsonbPGetDatum(c->qjson[i]))))
			return true;
	return false;
}
