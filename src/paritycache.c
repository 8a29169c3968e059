/*-------------------------------------------------------------------------
 *
 * paritycache.c
 *	  Building blocks of the parity digest cache: what a table's pages look
 *	  like now (one entry per segment of PC_SEG_BLOCKS blocks), whether a
 *	  comparison may be cached at all, and the packed form of one side's
 *	  cached state.  How parity uses them is described at the top of
 *	  paritywarm.c.
 *
 *	  The facts the cache rests on.  (1) Every change of a WAL-logged heap
 *	  page's contents (insert, update, delete, lock, pruning, freezing)
 *	  sets its LSN to the end of a WAL record written after the change;
 *	  hint bits and the all-visible flag may be set without one, but
 *	  neither changes which tuples any snapshot sees.  (2) Which tuples of
 *	  a page a snapshot sees then depends on the snapshot only through the
 *	  transactions named in the tuples' xmin and xmax.  A page is "settled"
 *	  for a snapshot S when that dependence is gone:
 *
 *	  - it is all-visible (PD_ALL_VISIBLE: every tuple on it is visible to
 *	    every snapshot), or
 *	  - every transaction that inserted or deleted a tuple on it precedes
 *	    S's xmin and is not the current transaction (or one of its
 *	    subtransactions), and no tuple carries a multixact updater or an
 *	    old VACUUM FULL move.  A transaction that precedes S's xmin was not
 *	    running when S was taken, so it had committed or aborted for good,
 *	    and the MVCC test gives S exactly the tuples whose inserter
 *	    committed and whose deleter (if any) did not; lock-only xmax never
 *	    hides a tuple.
 *
 *	  Either way S sees C(P), the tuples of P whose inserter committed and
 *	  whose deleter did not: a function of the page's contents alone, the
 *	  same for every snapshot for which the page is settled.  And what S
 *	  sees of a page does not change while S is in use: later changes are
 *	  made by transactions S does not see, pruning removes only tuples no
 *	  snapshot in use sees, freezing and hint bits change nothing S sees.
 *
 *	  So let a digest pass run under snapshot S, then (or, for the
 *	  segments a warm run reads again, before it) read an LSN H and every
 *	  page's state, and find every page of a segment settled for S with an
 *	  LSN of at most H: the pass saw C(P) of the contents read.  A later
 *	  run whose snapshot finds every page of the segment settled with the
 *	  same highest LSN sees C(P) of the same contents (a change after the
 *	  read would have set its page's LSN beyond H, so above that highest
 *	  LSN): the same rows.  This is what lets the cache work on pages that
 *	  are not all-visible: right after a backfill, or after a vacuum under
 *	  synchronous_commit = off, whose hint bits (and so the all-visible
 *	  flag) wait for the commits' WAL to be flushed.  A page written by a
 *	  transaction the snapshot cannot call finished makes its segment
 *	  stale.  Tables whose changes are not WAL-logged (unlogged, temporary,
 *	  or created in the current transaction under wal_level = minimal) are
 *	  never cached.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/multixact.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "compat.h"
#include "paritycache.h"

bool		softmig_parity_cache = true;

/* first four bytes of a packed side state, then its layout version */
#define PC_MAGIC 0x43504d53		/* "SMPC" */
#define PC_VERSION 2

/* advisory lock (two int4 keys) taken while a run writes the cache */
#define PC_LOCK_CLASS 0x736d7063

typedef struct PcHeader
{
	uint32		magic;
	uint32		version;
	Oid			relfilenode;
	uint32		nblocks;
	uint32		nseg;
	uint32		nents;
	uint64		seed;
} PcHeader;

/*
 * softmig_paritycache_init
 *		Define softmig.parity_cache.  Called once per backend from
 *		softmig_observe_init; no locks.
 */
void
softmig_paritycache_init(void)
{
	DefineCustomBoolVariable("softmig.parity_cache",
							 "Let parity reuse the chunk digests of unchanged table segments.",
							 "Off: every comparison reads and maps both tables in full and neither reads nor writes softmig.parity_cache.",
							 &softmig_parity_cache,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}

/*
 * pc_xid_settled
 *		Has xid (a tuple's xmin or updating xmax) finished for every
 *		snapshot whose xmin is at least snap_xmin: it precedes snap_xmin
 *		(permanent XIDs always do) and is not this transaction's?  No locks.
 */
static inline bool
pc_xid_settled(TransactionId xid, TransactionId snap_xmin)
{
	if (!TransactionIdIsValid(xid))
		return true;			/* never inserted (a super-deleted tuple) */
	return TransactionIdPrecedes(xid, snap_xmin) &&
		!TransactionIdIsCurrentTransactionId(xid);
}

/*
 * pc_page_settled
 *		Is every tuple of page settled for a snapshot with xmin snap_xmin
 *		(see the top of this file)?  The caller holds at least a share lock
 *		on the page's buffer.
 */
static bool
pc_page_settled(Page page, TransactionId snap_xmin)
{
	OffsetNumber maxoff = PageGetMaxOffsetNumber(page);

	for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off = OffsetNumberNext(off))
	{
		ItemId		lp = PageGetItemId(page, off);
		HeapTupleHeader tup;
		uint16		infomask;

		if (!ItemIdIsNormal(lp))
			continue;			/* unused, dead or a redirect: no tuple */
		tup = (HeapTupleHeader) PageGetItem(page, lp);
		infomask = tup->t_infomask;
		if (infomask & HEAP_MOVED)
			return false;
		if (!HeapTupleHeaderXminFrozen(tup) &&
			!pc_xid_settled(HeapTupleHeaderGetRawXmin(tup), snap_xmin))
			return false;
		if ((infomask & HEAP_XMAX_INVALID) || HEAP_XMAX_IS_LOCKED_ONLY(infomask))
			continue;
		if (infomask & HEAP_XMAX_IS_MULTI)
			return false;		/* its updater is not worth looking up */
		if (!pc_xid_settled(HeapTupleHeaderGetRawXmax(tup), snap_xmin))
			return false;
	}
	return true;
}

/*
 * pc_segment_state
 *		The state of segment g of rel, whose first nblocks blocks are
 *		looked at: the highest page LSN when every page is initialized,
 *		settled (all-visible, or, when by_xid, pc_page_settled for
 *		snap_xmin) and has an LSN of at most horizon, else PC_SEG_NONE.
 *		Each block is read through bstrategy under a share content lock
 *		held only while its header (and, when it is not all-visible, its
 *		tuple headers) are read.  The caller holds a lock on rel.
 */
static uint64
pc_segment_state(Relation rel, uint32 g, BlockNumber nblocks, XLogRecPtr horizon,
				 bool by_xid, TransactionId snap_xmin, BufferAccessStrategy bstrategy)
{
	uint64		state = 0;
	BlockNumber end = Min(nblocks, (BlockNumber) (g + 1) * PC_SEG_BLOCKS);

	CHECK_FOR_INTERRUPTS();
	for (BlockNumber blk = (BlockNumber) g * PC_SEG_BLOCKS; blk < end; blk++)
	{
		Buffer		buf;
		Page		page;
		XLogRecPtr	lsn = InvalidXLogRecPtr;
		bool		ok;

		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, bstrategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		ok = !PageIsNew(page);
		if (ok)
			lsn = PageGetLSN(page);
		ok = ok && lsn <= horizon &&
			(PageIsAllVisible(page) || (by_xid && pc_page_settled(page, snap_xmin)));
		UnlockReleaseBuffer(buf);
		if (!ok)
			return PC_SEG_NONE;
		if ((uint64) lsn > state)
			state = (uint64) lsn;
	}
	return state;
}

/*
 * softmig_pc_read_pages
 *		The page state of rel now, one pc_segment_state per segment.  snap
 *		is the snapshot the segments' digests are (or were just) computed
 *		with: a page that is not all-visible counts when it is settled for
 *		it (with snap NULL, only all-visible pages count).  horizon must be
 *		an LSN read after the digests' snapshot was taken and before this
 *		call.  Reads every block once at most, through a bulk-read ring.
 *		The caller holds a lock on rel (at least AccessShareLock); out->seg
 *		is palloc'd in the current context.
 */
void
softmig_pc_read_pages(Relation rel, XLogRecPtr horizon, Snapshot snap, PcPages *out)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(rel);

	out->relfilenode = softmig_rel_filenumber(rel);
	out->nblocks = nblocks;
	out->nseg = (nblocks + PC_SEG_BLOCKS - 1) / PC_SEG_BLOCKS;
	out->seg = palloc0(sizeof(uint64) * Max(out->nseg, 1));
	softmig_pc_reread_pages(rel, horizon, snap, out, NULL);
}

/*
 * softmig_pc_reread_pages
 *		Read the state of the segments of pages (as softmig_pc_read_pages
 *		made it) again, all of them or those whose only[] is true, over the
 *		blocks pages->nblocks counted; a warm run calls it after digesting
 *		its stale segments, so that the pages its reads pruned are stored
 *		as they are now.  Same rules and locks as softmig_pc_read_pages.
 */
void
softmig_pc_reread_pages(Relation rel, XLogRecPtr horizon, Snapshot snap, PcPages *pages,
						const bool *only)
{
	BufferAccessStrategy bstrategy = GetAccessStrategy(BAS_BULKREAD);
	bool		by_xid = (snap != NULL && IsMVCCSnapshot(snap) &&
						  TransactionIdIsNormal(snap->xmin));

	for (uint32 g = 0; g < pages->nseg; g++)
		if (only == NULL || only[g])
			pages->seg[g] = pc_segment_state(rel, g, pages->nblocks, horizon, by_xid,
											 by_xid ? snap->xmin : InvalidTransactionId,
											 bstrategy);
	FreeAccessStrategy(bstrategy);
}

/*
 * softmig_pc_rel_refusal
 *		NULL if rel's pages can back a cache, else why not (a constant
 *		string): only permanent heap tables whose changes are WAL-logged.
 *		No locks beyond the caller's.
 */
const char *
softmig_pc_rel_refusal(Relation rel)
{
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		return "a partitioned table";
	if (rel->rd_rel->relpersistence != RELPERSISTENCE_PERMANENT)
		return "an unlogged or temporary table";
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
		return "a table not stored in heap format";
	if (!RelationNeedsWAL(rel))
		return "a table created or rewritten in this transaction";
	return NULL;
}

/*
 * softmig_pc_attribute_versions
 *		Append the identity of every pg_attribute row of rel (the tuple's
 *		xmin and place), so any ALTER TABLE that changes what a stored row
 *		reads as without touching its page (a column dropped and added
 *		again with a default, a collation changed in place) discards cached
 *		digests.  Syscache lookups; the caller holds a lock on rel.
 */
void
softmig_pc_attribute_versions(Relation rel, StringInfo fp)
{
	int			natts = RelationGetDescr(rel)->natts;

	appendStringInfo(fp, " natts %d", natts);
	for (int a = 1; a <= natts; a++)
	{
		HeapTuple	tup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(RelationGetRelid(rel)),
										  Int16GetDatum(a));

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for attribute %d of relation %u",
				 a, RelationGetRelid(rel));
		appendStringInfo(fp, " a%d:%u:%u:%u", a, HeapTupleHeaderGetRawXmin(tup->t_data),
						 ItemPointerGetBlockNumberNoCheck(&tup->t_self),
						 (unsigned) ItemPointerGetOffsetNumberNoCheck(&tup->t_self));
		ReleaseSysCache(tup);
	}
}

/* State of the walk over a comparison's query tree. */
typedef struct PcWalk
{
	StringInfo	fp;
	const char *refusal;
	List	   *colls;			/* input collations seen (OID list) */
} PcWalk;

/*
 * pc_function_ok
 *		check_functions_in_node callback: note one function in the
 *		fingerprint (its OID and the identity of its pg_proc row version),
 *		and refuse the cache unless it is a built-in immutable function.
 *		Returns true to stop the walk.
 */
static bool
pc_function_ok(Oid func_id, void *context)
{
	PcWalk	   *w = (PcWalk *) context;
	HeapTuple	tup;
	Form_pg_proc proc;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(func_id));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", func_id);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	appendStringInfo(w->fp, " f%u:%u:%u:%u", func_id,
					 HeapTupleHeaderGetRawXmin(tup->t_data),
					 ItemPointerGetBlockNumberNoCheck(&tup->t_self),
					 (unsigned) ItemPointerGetOffsetNumberNoCheck(&tup->t_self));
	if (func_id >= FirstNormalObjectId)
		w->refusal = "the mapping calls a function that is not built in";
	else if (proc->provolatile != PROVOLATILE_IMMUTABLE)
		w->refusal = "the mapping calls a function that is not immutable";
	ReleaseSysCache(tup);
	return w->refusal != NULL;
}

/*
 * pc_walker
 *		Expression walker applying pc_function_ok to every node; stops at
 *		the first refusal.
 */
static bool
pc_walker(Node *node, void *context)
{
	PcWalk	   *w = (PcWalk *) context;

	if (node == NULL)
		return false;
	if (check_functions_in_node(node, pc_function_ok, context))
		return true;
	if (OidIsValid(exprInputCollation(node)))
		w->colls = list_append_unique_oid(w->colls, exprInputCollation(node));
	if (IsA(node, Query))
		return true;			/* a sub-query: refused by the caller's checks */
	return expression_tree_walker(node, pc_walker, w) || w->refusal != NULL;
}

/*
 * softmig_pc_plan_refusal
 *		NULL if the rows a prepared statement produces depend only on the
 *		contents of the one table it reads (so cached digests stay true
 *		while that table's pages do not change), else why not.  That needs
 *		one plain table in the range table, no sub-queries, and only
 *		built-in immutable functions (operators and casts included): a
 *		user-defined function may call others or read tables, which no
 *		fingerprint could follow.  Appends the functions' identities to fp
 *		and the input collations of its expressions to *colls.  Reads the
 *		plan's analyzed query tree and the syscache; no locks.
 */
const char *
softmig_pc_plan_refusal(SPIPlanPtr plan, StringInfo fp, List **colls)
{
	List	   *sources = SPI_plan_get_plan_sources(plan);
	ListCell   *lc;
	PcWalk		w = {fp, NULL, *colls};

	foreach(lc, sources)
	{
		CachedPlanSource *ps = (CachedPlanSource *) lfirst(lc);
		ListCell   *lq;

		foreach(lq, ps->query_list)
		{
			Query	   *q = lfirst_node(Query, lq);

			if (q->hasSubLinks || q->cteList != NIL || q->hasTargetSRFs ||
				list_length(q->rtable) != 1 ||
				linitial_node(RangeTblEntry, q->rtable)->rtekind != RTE_RELATION)
				return "the mapping reads more than the row itself";
			if (query_tree_walker(q, pc_walker, &w, 0) || w.refusal != NULL)
				return w.refusal ? w.refusal : "the mapping reads more than the row itself";
		}
	}
	*colls = w.colls;
	return NULL;
}

/*
 * softmig_pc_collation_versions
 *		Append the versions the collation providers report now for the
 *		database's default collation and for each collation in colls (OID
 *		list), so an operating-system or ICU upgrade that may change
 *		upper(), ordering or equality discards cached digests.  One SPI
 *		query, inside the caller's SPI connection.
 */
void
softmig_pc_collation_versions(StringInfo fp, List *colls)
{
	Oid			argtypes[1] = {OIDARRAYOID};
	Datum		values[1];
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(colls), 1));
	ListCell   *lc;
	char	   *v;

	foreach(lc, colls)
		elems[foreach_current_index(lc)] = ObjectIdGetDatum(lfirst_oid(lc));
	values[0] = PointerGetDatum(construct_array(elems, list_length(colls), OIDOID,
												sizeof(Oid), true, TYPALIGN_INT));
	if (SPI_execute_with_args("SELECT COALESCE((SELECT pg_catalog.pg_database_collation_actual_version(d.oid) "
							  "FROM pg_catalog.pg_database d "
							  "WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()), '-') "
							  "OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) "
							  "COALESCE((SELECT pg_catalog.string_agg(c.oid::pg_catalog.text OPERATOR(pg_catalog.||) '=' "
							  "OPERATOR(pg_catalog.||) COALESCE(pg_catalog.pg_collation_actual_version(c.oid), '-'), ',' ORDER BY c.oid) "
							  "FROM pg_catalog.pg_collation c WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1) "
							  "AND c.collprovider OPERATOR(pg_catalog.<>) 'd'), '')",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "softmig: reading collation versions failed");
	v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	appendStringInfo(fp, " coll:%s", v ? v : "-");
	SPI_freetuptable(SPI_tuptable);
}

/*
 * softmig_pc_try_lock
 *		Take the transaction-scoped advisory lock that makes this run the
 *		only writer of migration id's cache row, without waiting: false if
 *		another run holds it (that run writes instead).  Inside the caller's
 *		SPI connection.
 */
bool
softmig_pc_try_lock(int32 id)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		values[2];
	bool		isnull;
	bool		got;

	values[0] = Int32GetDatum((int32) PC_LOCK_CLASS);
	values[1] = Int32GetDatum(id);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
							  2, argtypes, values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "softmig: taking the parity cache lock failed");
	got = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return got && !isnull;
}

/*
 * softmig_pc_pack
 *		One side's cached state as a bytea: header (with the hash seed the
 *		digests were made with), segment states, then the (segment, chunk)
 *		digests.  palloc'd in the current context.
 */
bytea *
softmig_pc_pack(const PcPages *pages, uint64 seed, const PcEnt *ents, int nents)
{
	Size		len = (VARHDRSZ + sizeof(PcHeader) + sizeof(uint64) * pages->nseg +
					   sizeof(PcEnt) * nents);
	bytea	   *b = palloc(len);
	char	   *p = VARDATA(b);
	PcHeader	h;

	SET_VARSIZE(b, len);
	memset(&h, 0, sizeof(h));
	h.magic = PC_MAGIC;
	h.version = PC_VERSION;
	h.relfilenode = pages->relfilenode;
	h.nblocks = pages->nblocks;
	h.nseg = pages->nseg;
	h.nents = nents;
	h.seed = seed;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	memcpy(p, pages->seg, sizeof(uint64) * pages->nseg);
	p += sizeof(uint64) * pages->nseg;
	if (nents > 0)
		memcpy(p, ents, sizeof(PcEnt) * nents);
	return b;
}

/*
 * softmig_pc_unpack
 *		Read a packed side state back (copies, palloc'd in the current
 *		context).  False if it is not one (wrong magic, version or size):
 *		the caller then ignores the cache.
 */
bool
softmig_pc_unpack(bytea *b, PcPages *pages, uint64 *seed, PcEnt **ents, int *nents)
{
	Size		len = VARSIZE_ANY_EXHDR(b);
	const char *p = VARDATA_ANY(b);
	PcHeader	h;

	if (len < sizeof(h))
		return false;
	memcpy(&h, p, sizeof(h));
	if (h.magic != PC_MAGIC || h.version != PC_VERSION ||
		len != sizeof(h) + sizeof(uint64) * (Size) h.nseg + sizeof(PcEnt) * (Size) h.nents)
		return false;
	p += sizeof(h);
	pages->relfilenode = h.relfilenode;
	pages->nblocks = h.nblocks;
	pages->nseg = h.nseg;
	pages->seg = palloc(sizeof(uint64) * Max(h.nseg, 1));
	memcpy(pages->seg, p, sizeof(uint64) * h.nseg);
	p += sizeof(uint64) * h.nseg;
	*seed = h.seed;
	*nents = h.nents;
	*ents = palloc(sizeof(PcEnt) * Max(h.nents, 1));
	if (h.nents > 0)
		memcpy(*ents, p, sizeof(PcEnt) * h.nents);
	return true;
}
