/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  Live row estimates for backfill progress and monitoring, and the
 *	  GUC that paces the backfill's progress messages.
 *
 *	  softmig._rows_estimate(regclass) answers "about how many rows does
 *	  this table hold right now?" without scanning it: the table's current
 *	  size in blocks times a row density, as the planner estimates a
 *	  table's size.  The density comes from the statistics VACUUM and
 *	  ANALYZE keep (pg_class.reltuples / relpages) and, for a table never
 *	  vacuumed or analysed, from the rows on three of its pages.  Unlike
 *	  pg_class.reltuples alone it follows a table that grows between two
 *	  ANALYZE runs, which is what a target table does during a backfill.
 *	  Unlike the planner it does not pretend an empty, never-vacuumed table
 *	  has ten pages.  A partitioned table is the sum of its partitions.
 *
 *	  A monitoring scrape must never queue behind DDL, so a table whose
 *	  AccessShareLock is not immediately available is answered from its
 *	  statistics alone.  Nothing here goes through the executor, so an
 *	  exporter calling it is never seen by reader discovery as a reader of
 *	  the migrated tables.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "fmgr.h"
#include "optimizer/plancat.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/itemid.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "softmig.h"

/* softmig.backfill_progress_interval: ms between progress NOTICEs */
int			softmig_backfill_progress_interval = 10000;

/*
 * softmig_progress_init
 *		Define the GUCs of this module.  Called from _PG_init.
 */
void
softmig_progress_init(void)
{
	DefineCustomIntVariable("softmig.backfill_progress_interval",
							"Time between the progress messages of CALL softmig.backfill.",
							"The procedure raises a NOTICE with rows copied, rows per second, percent done and the estimated time left whenever this much time has passed since the last one; 0 reports after every batch.  client_min_messages = warning silences them.",
							&softmig_backfill_progress_interval,
							10000, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * page_rows
 *		Line pointers holding a row version on one heap page.  The page is
 *		pinned and share-locked only while they are counted.
 */
static double
page_rows(Relation rel, BlockNumber blkno)
{
	Buffer		buf;
	Page		page;
	double		rows = 0;

	buf = ReadBufferExtended(rel, MAIN_FORKNUM, blkno, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (!PageIsNew(page))
	{
		OffsetNumber maxoff = PageGetMaxOffsetNumber(page);

		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off = OffsetNumberNext(off))
			if (ItemIdIsNormal(PageGetItemId(page, off)))
				rows++;
	}
	UnlockReleaseBuffer(buf);
	return rows;
}

/*
 * sampled_rows
 *		Rows of a heap that has no statistics yet (declared column widths
 *		are far off for short text values, and a backfill target is such a
 *		table): the last page, which an append-only table is still filling,
 *		is counted; the others are taken to be as full as the first and the
 *		middle page.  At most three pages are read.  The caller holds a lock
 *		on rel; curpages > 0.
 */
static double
sampled_rows(Relation rel, BlockNumber curpages)
{
	double		last = page_rows(rel, curpages - 1);
	double		full;

	if (curpages == 1)
		return last;
	full = page_rows(rel, 0);
	if (curpages > 2)
		full = (full + page_rows(rel, (curpages - 1) / 2)) / 2;
	return full * (curpages - 1) + last;
}

/*
 * leaf_rows_estimate
 *		Estimated live rows of one relation with storage.  Reads its
 *		pg_class row from the syscache; takes AccessShareLock on the
 *		relation only if it is free right now (released before returning),
 *		and otherwise answers from pg_class alone.  Relations without
 *		storage, and temporary tables of other sessions (whose pages live
 *		in that session's local buffers), count their statistics only.
 */
static double
leaf_rows_estimate(Oid relid)
{
	HeapTuple	tup;
	Form_pg_class form;
	char		relkind;
	char		persistence;
	double		reltuples;
	BlockNumber relpages;
	Relation	rel;
	BlockNumber curpages;
	double		density;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return 0;				/* dropped meanwhile */
	form = (Form_pg_class) GETSTRUCT(tup);
	relkind = form->relkind;
	persistence = form->relpersistence;
	reltuples = form->reltuples;
	relpages = form->relpages;
	ReleaseSysCache(tup);

	if (relkind != RELKIND_RELATION && relkind != RELKIND_MATVIEW)
		return 0;
	if (persistence == RELPERSISTENCE_TEMP ||
		!ConditionalLockRelationOid(relid, AccessShareLock))
		return Max(reltuples, 0);

	rel = try_relation_open(relid, NoLock);
	if (rel == NULL)
	{
		UnlockRelationOid(relid, AccessShareLock);
		return 0;
	}
	curpages = RelationGetNumberOfBlocks(rel);
	if (curpages == 0)
		density = 0;
	else if (relpages > 0 && reltuples >= 0)
		density = reltuples / (double) relpages;
	else if (rel->rd_rel->relam == HEAP_TABLE_AM_OID)
	{
		double		rows = sampled_rows(rel, curpages);

		relation_close(rel, AccessShareLock);
		return rint(rows);
	}
	else
	{
		/* never vacuumed or analysed, not heap: rows of the declared width */
		int32		width = get_relation_data_width(relid, NULL);

		width += MAXALIGN(SizeofHeapTupleHeader) + sizeof(ItemIdData);
		density = (BLCKSZ - SizeOfPageHeaderData) / (double) width;
	}
	relation_close(rel, AccessShareLock);
	return rint(density * (double) curpages);
}

PG_FUNCTION_INFO_V1(softmig_rows_estimate);
/*
 * softmig_rows_estimate
 *		softmig._rows_estimate(rel regclass) RETURNS double precision: the
 *		estimated number of live rows of rel now, summed over its
 *		partitions and inheritance children.  NULL for an OID that is no
 *		relation.  Locks: see leaf_rows_estimate; the inheritance tree is
 *		read without locks (a partition dropped meanwhile counts 0).
 */
Datum
softmig_rows_estimate(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	List	   *rels;
	ListCell   *lc;
	double		total = 0;

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		PG_RETURN_NULL();
	rels = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, rels)
		total += leaf_rows_estimate(lfirst_oid(lc));
	list_free(rels);
	PG_RETURN_FLOAT8(total);
}
