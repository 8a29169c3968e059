/*-------------------------------------------------------------------------
 *
 * discovery.c
 *	  Reader discovery: who reads and writes each migration's tables.
 *
 *	  With shared_preload_libraries = 'softmig', an ExecutorEnd hook records,
 *	  for every statement that touched the legacy or the target table of a
 *	  migration (or one of their partitions), one observation per
 *	  (database, migration, side, application_name, role) in a fixed-size
 *	  shared hash table: read and write counts (statements, not rows), first
 *	  and last seen.  softmig.readers() and softmig.observed_readers() show
 *	  them; the new_read -> cutover guard refuses while a reader nobody
 *	  registered touched legacy recently.
 *
 *	  Cost.  The hook never reads the catalog and never writes a table.  It
 *	  compares the relation OIDs of the statement's range table with a small
 *	  sorted per-backend array (the watched set: every table and partition
 *	  of every migration of the current database), which is empty in a
 *	  database without softmig.  Only on a hit does it walk the plan state
 *	  tree and take the shared LWLock (shared mode; exclusive only to add a
 *	  new observation).
 *
 *	  What counts.  A statement writes a side when one of its result
 *	  relations is on that side; it reads a side when a scan node on that
 *	  side sits below no one-time filter that failed, so a routed view's
 *	  branch not taken (Result with a One-Time Filter evaluated false, or
 *	  never evaluated) is not counted as a read.  COPY of a table, which
 *	  does not run the executor, is recorded by a ProcessUtility hook.
 *	  Statements that fail record nothing.  Statements softmig runs itself
 *	  are skipped: everything behind the ownership gate (backfill, state
 *	  changes, ...), the mirroring and projection writes of the triggers, and
 *	  whatever raises softmig_discovery_suppress.  Parallel workers record
 *	  nothing; their leader records the statement.
 *
 *	  The watched set.  A relcache invalidation of a watched relation, of
 *	  softmig.migrations or of everything marks it stale (the callback lives
 *	  in readpath.c).  A stale set keeps being used by the hook and is
 *	  rebuilt, outside the executor, at the next parse analysis of a
 *	  statement that has a snapshot, after a COPY, or when a softmig
 *	  function runs: a scan of softmig.migrations under a conditional lock
 *	  (never waits; stays stale and retries if the lock is not free) plus
 *	  pg_inherits for partitioned tables.
 *
 *	  Limits.  At most softmig.discovery_max_entries observations; when full
 *	  the least recently seen one is evicted, and the newest last_seen of
 *	  everything evicted is kept so the cutover guard knows when it may have
 *	  lost evidence.  Observations live in shared memory only: a restart
 *	  forgets them (softmig.discovery() says since when it observes).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "parser/analyze.h"
#include "parser/parse_relation.h"
#include "parser/parsetree.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "softmig.h"
#include "readpath.h"

#define DISC_SIDE_LEGACY 0
#define DISC_SIDE_TARGET 1

/* Key of one observation; memset to zero before filling (hashed as bytes). */
typedef struct DiscKey
{
	Oid			dbid;
	int32		migration_id;
	Oid			roleid;
	int32		side;			/* DISC_SIDE_* */
	char		appname[NAMEDATALEN];
} DiscKey;

typedef struct DiscEntry
{
	DiscKey		key;
	slock_t		mutex;			/* protects the counters below */
	int64		reads;
	int64		writes;
	TimestampTz first_seen;
	TimestampTz last_seen;
} DiscEntry;

typedef struct DiscShared
{
	LWLock	   *lock;			/* protects the hash table and the fields
								 * below */
	int			max_entries;
	TimestampTz since;			/* when observation started (server start) */
	int64		evicted;
	TimestampTz evicted_last_seen;	/* newest last_seen of an evicted entry */
} DiscShared;

/* One relation of the watched set. */
typedef struct DiscWatch
{
	Oid			relid;
	int32		migration_id;
	int32		side;
} DiscWatch;

/* What one statement did to one side of one migration. */
typedef struct DiscMark
{
	int32		migration_id;
	int32		side;
	bool		read;
	bool		write;
} DiscMark;

#define DISC_MAX_MARKS 16

typedef struct DiscWalkCtx
{
	List	   *rtable;
	int			gather_depth;
	int			nmarks;
	DiscMark	marks[DISC_MAX_MARKS];
} DiscWalkCtx;

/* GUCs */
static bool disc_recording = true;
static int	disc_max_entries = 1000;

int			softmig_discovery_suppress = 0;

/* shared state (NULL without shared_preload_libraries) */
static DiscShared *disc_shared = NULL;
static HTAB *disc_hash = NULL;

/* the watched set of this backend */
static DiscWatch *watch = NULL;
static int	nwatch = 0;
static int	watch_alloc = 0;
static bool watch_valid = false;
static bool watch_building = false;
static Oid	watch_catalog_relid = InvalidOid;

/* saved hook values */
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/*
 * disc_shmem_size
 *		Shared memory needed for the observation table.
 */
static Size
disc_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(DiscShared)),
					hash_estimate_size(disc_max_entries, sizeof(DiscEntry)));
}

/*
 * disc_shmem_request
 *		shmem_request_hook: reserve shared memory and the LWLock tranche.
 *		Postmaster only.
 */
static void
disc_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(disc_shmem_size());
	RequestNamedLWLockTranche("softmig discovery", 1);
}

/*
 * disc_shmem_startup
 *		Create or attach the shared state and hash table, under
 *		AddinShmemInitLock.
 */
static void
disc_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	disc_shared = ShmemInitStruct("softmig discovery", sizeof(DiscShared), &found);
	if (!found)
	{
		disc_shared->lock = &(GetNamedLWLockTranche("softmig discovery"))->lock;
		disc_shared->max_entries = disc_max_entries;
		disc_shared->since = GetCurrentTimestamp();
		disc_shared->evicted = 0;
		disc_shared->evicted_last_seen = 0;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(DiscKey);
	info.entrysize = sizeof(DiscEntry);
	disc_hash = softmig_shmem_init_hash("softmig discovery observations",
										disc_max_entries, &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * softmig_discovery_available
 *		Is reader discovery running (softmig preloaded)?
 */
bool
softmig_discovery_available(void)
{
	return disc_shared != NULL && disc_hash != NULL;
}

/*
 * softmig_discovery_invalidate
 *		Relcache invalidation of relid (InvalidOid: all): mark the watched
 *		set stale if it could be affected.  Called from readpath.c's
 *		callback; no allocation, no catalog access.
 */
void
softmig_discovery_invalidate(Oid relid)
{
	if (!watch_valid)
		return;
	if (!OidIsValid(relid) || !OidIsValid(watch_catalog_relid) ||
		relid == watch_catalog_relid)
	{
		watch_valid = false;
		return;
	}
	for (int i = 0; i < nwatch; i++)
		if (watch[i].relid == relid)
		{
			watch_valid = false;
			return;
		}
}

/*
 * watch_add
 *		Append one relation to the watched set being built.
 */
static void
watch_add(Oid relid, int32 mid, int32 side)
{
	if (nwatch >= watch_alloc)
	{
		int			n = watch_alloc ? watch_alloc * 2 : 16;

		if (watch == NULL)
			watch = MemoryContextAlloc(TopMemoryContext, n * sizeof(DiscWatch));
		else
			watch = repalloc(watch, n * sizeof(DiscWatch));
		watch_alloc = n;
	}
	watch[nwatch].relid = relid;
	watch[nwatch].migration_id = mid;
	watch[nwatch].side = side;
	nwatch++;
}

/*
 * watch_cmp
 *		qsort comparator: by relation OID.
 */
static int
watch_cmp(const void *a, const void *b)
{
	Oid			x = ((const DiscWatch *) a)->relid;
	Oid			y = ((const DiscWatch *) b)->relid;

	return (x > y) - (x < y);
}

/*
 * watch_find
 *		The watched-set entry of relid, or NULL.  Binary search; no
 *		allocation, usable from the executor hook.
 */
static DiscWatch *
watch_find(Oid relid)
{
	int			lo = 0;
	int			hi = nwatch - 1;

	if (nwatch == 0 || relid < watch[0].relid || relid > watch[nwatch - 1].relid)
		return NULL;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (watch[mid].relid == relid)
			return &watch[mid];
		if (watch[mid].relid < relid)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/*
 * watch_add_tree
 *		Add a migration table and, when partitioned, all its partitions
 *		(pg_inherits, no locks taken).
 */
static void
watch_add_tree(Oid relid, int32 mid, int32 side)
{
	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
	{
		List	   *all = find_all_inheritors(relid, NoLock, NULL);
		ListCell   *lc;

		foreach(lc, all)
			watch_add(lfirst_oid(lc), mid, side);
		list_free(all);
	}
	else
		watch_add(relid, mid, side);
}

/*
 * watch_rebuild
 *		Rebuild the watched set from softmig.migrations, read with the latest
 *		snapshot.  Never waits: when softmig.migrations cannot be locked at
 *		once the set stays stale and the next opportunity retries.  The set
 *		is marked valid before reading, so an invalidation that arrives
 *		meanwhile leaves it stale.
 */
static void
watch_rebuild(void)
{
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	att_id;
	AttrNumber	att_legacy;
	AttrNumber	att_target;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;

	watch_valid = true;
	nwatch = 0;
	nsp = get_namespace_oid("softmig", true);
	relid = OidIsValid(nsp) ? get_relname_relid("migrations", nsp) : InvalidOid;
	watch_catalog_relid = relid;
	if (!OidIsValid(relid))
		return;					/* no softmig here; any invalidation re-checks */

	if (!ConditionalLockRelationOid(relid, AccessShareLock))
	{
		watch_valid = false;
		return;
	}
	rel = table_open(relid, NoLock);
	desc = RelationGetDescr(rel);
	att_id = attnameAttNum(rel, "id", false);
	att_legacy = attnameAttNum(rel, "legacy", false);
	att_target = attnameAttNum(rel, "target", false);
	if (att_id <= 0 || att_legacy <= 0 || att_target <= 0 ||
		TupleDescAttr(desc, att_id - 1)->atttypid != INT4OID)
	{
		table_close(rel, NoLock);
		return;
	}

	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = softmig_table_beginscan(rel, snap);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		n1,
					n2,
					n3;
		int32		mid = DatumGetInt32(slot_getattr(slot, att_id, &n1));
		Oid			legacy = DatumGetObjectId(slot_getattr(slot, att_legacy, &n2));
		Oid			target = DatumGetObjectId(slot_getattr(slot, att_target, &n3));

		if (n1 || n2 || n3)
			continue;
		watch_add_tree(legacy, mid, DISC_SIDE_LEGACY);
		watch_add_tree(target, mid, DISC_SIDE_TARGET);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);	/* keep the lock to the end of the transaction */

	if (nwatch > 1)
		qsort(watch, nwatch, sizeof(DiscWatch), watch_cmp);
}

/*
 * softmig_discovery_refresh
 *		Rebuild the watched set if it is stale and this is a safe place:
 *		discovery running, a valid transaction with a snapshot, not parallel
 *		mode, not already rebuilding.  Cheap when the set is valid.
 */
void
softmig_discovery_refresh(void)
{
	if (watch_valid || watch_building || !softmig_discovery_available())
		return;
	if (!IsTransactionState() || !FirstSnapshotSet || IsInParallelMode() ||
		IsParallelWorker())
		return;
	watch_building = true;
	PG_TRY();
	{
		watch_rebuild();
	}
	PG_CATCH();
	{
		watch_building = false;
		watch_valid = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
	watch_building = false;
}

/*
 * disc_should_record
 *		Is this backend recording right now?  Cheap checks only.
 */
static inline bool
disc_should_record(void)
{
	return nwatch > 0 && disc_recording && disc_hash != NULL &&
		softmig_discovery_suppress == 0 && softmig_mirror_depth == 0 &&
		!OidIsValid(softmig_gate_actor) && !IsParallelWorker();
}

/*
 * disc_evict_oldest
 *		Remove the least recently seen observation.  Caller holds the lock
 *		exclusively.
 */
static void
disc_evict_oldest(void)
{
	HASH_SEQ_STATUS seq;
	DiscEntry  *e;
	DiscEntry  *victim = NULL;

	hash_seq_init(&seq, disc_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (victim == NULL || e->last_seen < victim->last_seen)
			victim = e;
	if (victim == NULL)
		return;
	disc_shared->evicted++;
	if (victim->last_seen > disc_shared->evicted_last_seen)
		disc_shared->evicted_last_seen = victim->last_seen;
	hash_search(disc_hash, &victim->key, HASH_REMOVE, NULL);
}

/*
 * disc_store
 *		Count one statement's read and/or write of one side of a migration
 *		for this session's application_name and role.  Takes the shared
 *		LWLock (exclusively only to add an observation) and the entry's
 *		spinlock.
 */
static void
disc_store(int32 mid, int32 side, bool read, bool write)
{
	DiscKey		key;
	DiscEntry  *e;
	uint32		hash;
	TimestampTz now = GetCurrentTimestamp();

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	key.migration_id = mid;
	key.roleid = GetOuterUserId();
	key.side = side;
	if (application_name)
		strlcpy(key.appname, application_name, NAMEDATALEN);
	hash = get_hash_value(disc_hash, &key);

	LWLockAcquire(disc_shared->lock, LW_SHARED);
	e = hash_search_with_hash_value(disc_hash, &key, hash, HASH_FIND, NULL);
	if (e == NULL)
	{
		bool		found;

		LWLockRelease(disc_shared->lock);
		LWLockAcquire(disc_shared->lock, LW_EXCLUSIVE);
		e = hash_search_with_hash_value(disc_hash, &key, hash, HASH_FIND, NULL);
		if (e == NULL)
		{
			if (hash_get_num_entries(disc_hash) >= disc_shared->max_entries)
				disc_evict_oldest();
			e = hash_search_with_hash_value(disc_hash, &key, hash, HASH_ENTER_NULL, &found);
			if (e == NULL)
			{
				LWLockRelease(disc_shared->lock);
				return;
			}
			SpinLockInit(&e->mutex);
			e->reads = 0;
			e->writes = 0;
			e->first_seen = now;
			e->last_seen = now;
		}
	}
	SpinLockAcquire(&e->mutex);
	if (read)
		e->reads++;
	if (write)
		e->writes++;
	if (now > e->last_seen)
		e->last_seen = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(disc_shared->lock);
}

/*
 * disc_mark
 *		Note that the statement read or wrote relid, if it is watched.
 */
static void
disc_mark(DiscWalkCtx *cx, Oid relid, bool write)
{
	DiscWatch  *w = watch_find(relid);
	int			i;

	if (w == NULL)
		return;
	for (i = 0; i < cx->nmarks; i++)
		if (cx->marks[i].migration_id == w->migration_id && cx->marks[i].side == w->side)
			break;
	if (i == cx->nmarks)
	{
		if (cx->nmarks >= DISC_MAX_MARKS)
			return;
		cx->marks[i].migration_id = w->migration_id;
		cx->marks[i].side = w->side;
		cx->marks[i].read = false;
		cx->marks[i].write = false;
		cx->nmarks++;
	}
	if (write)
		cx->marks[i].write = true;
	else
		cx->marks[i].read = true;
}

/*
 * disc_walker
 *		planstate_tree_walker callback: mark the scans that ran.  A subtree
 *		below a Result whose one-time filter failed, or (outside parallel
 *		plans, where the leader may not have run it) was never evaluated,
 *		did not read anything.
 */
static bool
disc_walker(PlanState *ps, void *context)
{
	DiscWalkCtx *cx = (DiscWalkCtx *) context;
	bool		r;

	if (ps == NULL)
		return false;
	switch (nodeTag(ps->plan))
	{
		case T_Result:
			{
				ResultState *rs = (ResultState *) ps;

				if (rs->resconstantqual != NULL)
				{
					bool		failed = (!rs->rs_checkqual && rs->rs_done &&
										  outerPlanState(ps) != NULL);

					if (failed || (rs->rs_checkqual && cx->gather_depth == 0))
						return false;
				}
				break;
			}
		case T_Gather:
		case T_GatherMerge:
			cx->gather_depth++;
			r = planstate_tree_walker(ps, disc_walker, cx);
			cx->gather_depth--;
			return r;
		case T_SeqScan:
		case T_SampleScan:
		case T_IndexScan:
		case T_IndexOnlyScan:
		case T_BitmapHeapScan:
		case T_TidScan:
		case T_TidRangeScan:
		case T_CustomScan:
			{
				Index		scanrelid = ((Scan *) ps->plan)->scanrelid;

				if (scanrelid > 0 && scanrelid <= list_length(cx->rtable))
				{
					RangeTblEntry *rte = rt_fetch(scanrelid, cx->rtable);

					if (rte->rtekind == RTE_RELATION)
						disc_mark(cx, rte->relid, false);
				}
				break;
			}
		default:
			break;
	}
	return planstate_tree_walker(ps, disc_walker, cx);
}

/*
 * disc_record_query
 *		Record what a finished statement did to watched relations.  Only
 *		walks the plan when its range table names a watched relation.
 */
static void
disc_record_query(QueryDesc *qd)
{
	PlannedStmt *ps = qd->plannedstmt;
	ListCell   *lc;
	bool		hit = false;
	DiscWalkCtx cx;

	foreach(lc, ps->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		if (rte->rtekind == RTE_RELATION && watch_find(rte->relid) != NULL)
		{
			hit = true;
			break;
		}
	}
	if (!hit)
		return;

	cx.rtable = ps->rtable;
	cx.gather_depth = 0;
	cx.nmarks = 0;
	{
		Bitmapset  *results = softmig_result_relids(ps);
		int			rti = -1;

		while ((rti = bms_next_member(results, rti)) >= 0)
			if (rti > 0 && rti <= list_length(ps->rtable))
				disc_mark(&cx, rt_fetch(rti, ps->rtable)->relid, true);
	}
	disc_walker(qd->planstate, &cx);

	for (int i = 0; i < cx.nmarks; i++)
		disc_store(cx.marks[i].migration_id, cx.marks[i].side,
				   cx.marks[i].read && !cx.marks[i].write, cx.marks[i].write);
}

/*
 * disc_ExecutorEnd
 *		ExecutorEnd hook: record the statement (see file header), then end
 *		it.  No catalog access.
 */
static void
disc_ExecutorEnd(QueryDesc *queryDesc)
{
	if (disc_should_record() && queryDesc->planstate != NULL &&
		queryDesc->estate != NULL &&
		!(queryDesc->estate->es_top_eflags & EXEC_FLAG_EXPLAIN_ONLY))
		disc_record_query(queryDesc);

	softmig_chain_hook(prev_ExecutorEnd, standard_ExecutorEnd, queryDesc);
}

/*
 * disc_post_parse_analyze
 *		post_parse_analyze hook: rebuild a stale watched set before the
 *		statement reaches the executor.
 */
static void
disc_post_parse_analyze(ParseState *pstate, Query *query, SOFTMIG_JUMBLESTATE *jstate)
{
	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	if (!watch_valid)
		softmig_discovery_refresh();
}

/*
 * disc_ProcessUtility
 *		ProcessUtility hook: COPY of a table does not run the executor, so
 *		record it here (COPY TO reads, COPY FROM writes) once it succeeded.
 *		The relation name is resolved after the COPY, which holds its lock.
 */
static void
disc_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	softmig_chain_hook(prev_ProcessUtility, standard_ProcessUtility,
					   pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);

	if (IsA(parsetree, CopyStmt) && ((CopyStmt *) parsetree)->relation != NULL)
	{
		CopyStmt   *cs = (CopyStmt *) parsetree;
		Oid			relid;
		DiscWalkCtx cx;

		softmig_discovery_refresh();
		if (!disc_should_record())
			return;
		relid = RangeVarGetRelid(cs->relation, NoLock, true);
		if (!OidIsValid(relid))
			return;
		cx.rtable = NIL;
		cx.gather_depth = 0;
		cx.nmarks = 0;
		disc_mark(&cx, relid, cs->is_from);
		for (int i = 0; i < cx.nmarks; i++)
			disc_store(cx.marks[i].migration_id, cx.marks[i].side,
					   cx.marks[i].read, cx.marks[i].write);
	}
}

/*
 * disc_xact_callback
 *		At abort, forget any suppression a failed softmig call left raised
 *		(callers lower it in PG_FINALLY; this is the safety net).
 */
static void
disc_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		softmig_discovery_suppress = 0;
}

/*
 * softmig_discovery_init
 *		Define the discovery GUCs; under shared_preload_libraries also
 *		request shared memory and install the hooks.  Called from
 *		softmig_readpath_init (_PG_init), before MarkGUCPrefixReserved.
 */
void
softmig_discovery_init(void)
{
	DefineCustomBoolVariable("softmig.discovery",
							 "Record this session's reads and writes of migration tables for reader discovery.",
							 "Needs shared_preload_libraries = 'softmig'.  Turning it off hides the session from softmig.readers and from the cutover guard.",
							 &disc_recording,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	/* can't define a PGC_POSTMASTER variable after startup */
	DefineCustomIntVariable("softmig.discovery_max_entries",
							"Maximum number of reader observations kept in shared memory.",
							"One observation per database, migration, side, application_name and role.  When full, the least recently seen is evicted.",
							&disc_max_entries,
							1000, 64, 1000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = disc_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = disc_shmem_startup;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = disc_ExecutorEnd;
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = disc_post_parse_analyze;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = disc_ProcessUtility;
	RegisterXactCallback(disc_xact_callback, NULL);
}

/*
 * disc_migration_id
 *		Id of the migration named by argument 0 (22004 if NULL, 42704 if
 *		unknown).  SPI as the caller.
 */
static int32
disc_migration_id(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name must not be null")));
	return softmig_migration_by_name(PG_GETARG_TEXT_PP(0), NULL, NULL);
}

PG_FUNCTION_INFO_V1(softmig_observed_readers);
/*
 * softmig_observed_readers
 *		softmig.observed_readers(name) -> SETOF (reader, role, side, reads,
 *		writes, first_seen, last_seen): the raw observations of a migration
 *		in this database.  Copies them under the shared LWLock, then builds
 *		the result without it.  Empty when discovery is not running.
 */
Datum
softmig_observed_readers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		mid = disc_migration_id(fcinfo);
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	MemoryContext old;
	DiscEntry  *copy = NULL;
	int			n = 0;
	Oid			side_type;
	Oid			labels[2];

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	side_type = TupleDescAttr(tupdesc, 2)->atttypid;
	labels[DISC_SIDE_LEGACY] = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
											   ObjectIdGetDatum(side_type),
											   CStringGetDatum("legacy"));
	labels[DISC_SIDE_TARGET] = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
											   ObjectIdGetDatum(side_type),
											   CStringGetDatum("new"));

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTupleDescCopy(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(old);

	if (softmig_discovery_available())
	{
		HASH_SEQ_STATUS seq;
		DiscEntry  *e;
		int			alloc = 16;

		copy = palloc(alloc * sizeof(DiscEntry));
		LWLockAcquire(disc_shared->lock, LW_SHARED);
		hash_seq_init(&seq, disc_hash);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			if (e->key.dbid != MyDatabaseId || e->key.migration_id != mid)
				continue;
			if (n >= alloc)
			{
				alloc *= 2;
				copy = repalloc(copy, alloc * sizeof(DiscEntry));
			}
			SpinLockAcquire(&e->mutex);
			copy[n] = *e;
			SpinLockRelease(&e->mutex);
			n++;
		}
		LWLockRelease(disc_shared->lock);
	}

	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {false};
		char	   *role = GetUserNameFromId(copy[i].key.roleid, true);
		NameData	rolename;

		values[0] = CStringGetTextDatum(copy[i].key.appname);
		if (role)
			namestrcpy(&rolename, role);
		else
			snprintf(NameStr(rolename), NAMEDATALEN, "%u", copy[i].key.roleid);
		values[1] = NameGetDatum(&rolename);
		values[2] = ObjectIdGetDatum(labels[copy[i].key.side]);
		values[3] = Int64GetDatum(copy[i].reads);
		values[4] = Int64GetDatum(copy[i].writes);
		values[5] = TimestampTzGetDatum(copy[i].first_seen);
		values[6] = TimestampTzGetDatum(copy[i].last_seen);
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(softmig_discovery_info);
/*
 * softmig_discovery_info
 *		softmig.discovery() -> (available, recording, max_entries, entries,
 *		evicted, evicted_last_seen, since): the state of reader discovery.
 *		Shared LWLock only.
 */
Datum
softmig_discovery_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[7];
	bool		nulls[7] = {false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = BoolGetDatum(softmig_discovery_available());
	values[1] = BoolGetDatum(disc_recording);
	if (softmig_discovery_available())
	{
		LWLockAcquire(disc_shared->lock, LW_SHARED);
		values[2] = Int32GetDatum(disc_shared->max_entries);
		values[3] = Int32GetDatum((int32) hash_get_num_entries(disc_hash));
		values[4] = Int64GetDatum(disc_shared->evicted);
		values[5] = TimestampTzGetDatum(disc_shared->evicted_last_seen);
		nulls[5] = (disc_shared->evicted_last_seen == 0);
		values[6] = TimestampTzGetDatum(disc_shared->since);
		LWLockRelease(disc_shared->lock);
	}
	else
	{
		for (int i = 2; i < 7; i++)
			nulls[i] = true;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(softmig_discovery_forget);
/*
 * softmig_discovery_forget
 *		softmig._discovery_forget(migration_id) -> bigint: remove every
 *		observation of a migration in this database; returns how many.
 *		Exclusive LWLock.  Called behind the ownership gate.
 */
Datum
softmig_discovery_forget(PG_FUNCTION_ARGS)
{
	int32		mid = PG_GETARG_INT32(0);
	HASH_SEQ_STATUS seq;
	DiscEntry  *e;
	int64		n = 0;

	if (!softmig_discovery_available())
		PG_RETURN_INT64(0);
	LWLockAcquire(disc_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, disc_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dbid == MyDatabaseId && e->key.migration_id == mid)
		{
			hash_search(disc_hash, &e->key, HASH_REMOVE, NULL);
			n++;
		}
	}
	LWLockRelease(disc_shared->lock);
	PG_RETURN_INT64(n);
}
