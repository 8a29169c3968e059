/*-------------------------------------------------------------------------
 *
 * paritywarm.c
 *	  Structural parity, the digest cache as a run uses it: whether a run
 *	  may use it (cache_prepare), reusing stored digests and reading only
 *	  stale segments (cache_try_warm), and storing a full pass
 *	  (cache_store).  The page state and storage format are paritycache.c.
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
 * Digest cache
 *
 * With the cache on, the digest aggregate also receives each row's ctid and
 * keeps, besides the chunk digests, the digests of every (segment, chunk)
 * pair: the rows of one chunk found in one segment of PC_SEG_BLOCKS heap
 * blocks.  A full pass stores, in softmig.parity_cache, the chunk bounds,
 * the run's seed, and per side those pairs and the page state of every
 * segment, read after the pass (paritycache.c: its highest page LSN if all
 * its pages were settled for the pass's snapshot: all-visible, or written
 * only by transactions that had finished before it).  A later run with the
 * same fingerprint (mapping, compared columns and their types, functions,
 * column definitions, collation versions, quarantine, chunk size, both
 * tables' storage) reads the page state again instead of the rows:
 *
 *  - a segment is stale unless it was stored and still has all pages
 *    settled (for this run's snapshot) with the same highest LSN;
 *  - the stored pairs of the other segments are summed into the chunks
 *    (their rows are exactly the rows the pairs were computed from, for
 *    any snapshot);
 *  - the stale segments are digested again, with the stored seed, through
 *    TID range scans, and added; their page state is read once more after
 *    that (pages the scans pruned keep their place in the cache).
 *
 * The chunk digests are then exactly what a full pass with that seed would
 * compute, and the run goes on as a full one: differing chunks are
 * descended and compared row by row.  When more than a quarter of either
 * table's segments are stale a full pass is cheaper (it runs in parallel
 * workers) and rebuilds the cache; the stale counts of both sides are
 * reported with it.  Runs in read-only transactions (no
 * write), on a standby, with the cache off or the digest test hook set, and
 * the other cases parity_cache_prepare lists never use it.
 * --------------------------------------------------------------------- */

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
 * parity_cache_prepare
 *		Decide whether this run may use the cache and compute the
 *		comparison's fingerprint.  Runs in the read-only context after
 *		parity_load_quarantine; prepares (without running) one statement per side
 *		as that side's owner to inspect the mapping.  The tables are already
 *		locked (parity_build).  Never with old_snapshot_threshold set: its
 *		early pruning may mark pages all-visible that an old snapshot cannot
 *		fully see (reading them raises "snapshot too old", a stored digest
 *		would not); nor in a serializable transaction, whose reads must take
 *		predicate locks on the rows a stored digest stands for.
 */
void
parity_cache_prepare(ParityCtx *c)
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
	else if (!parity_digest_fits_aggregate(c))
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
		parity_append_select_list(&q, c, side);
		parity_append_from(&q, c, side);
		appendStringInfo(&fp, " %s", q.data);
		parity_as_role(c, side == PSIDE_LEGACY ? c->lowner : c->towner);
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
						 OidOutputFunctionCall(outfn, parity_key_array(c, k, c->acc.q, c->acc.nq)));
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
 * warm_bounds
 *		The chunk bounds of a cache row (one array of the key column's
 *		type per key column, in binary form): into c->acc.bounds, allocated
 *		in the current memory context.  Returns the number of chunks, or -1
 *		if the stored bounds do not fit this comparison.
 */
static int
warm_bounds(ParityCtx *c, Datum *barr)
{
	int			nchunks;

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
			return -1;
		}
		deconstruct_array(arr, base, typlen, typbyval, typalign, &elems, NULL, &n);
		if (k == 0)
		{
			if (n + 1 > PARITY_MAX_CHUNKS)
			{
				return -1;
			}
			nchunks = n + 1;
			c->acc.nb = n;
			c->acc.bounds = palloc(sizeof(Datum) * Max(n, 1) * c->nkeys);
		}
		else if (n + 1 != nchunks)
		{
			return -1;
		}
		for (int i = 0; i < n; i++)
			c->acc.bounds[i * c->nkeys + k] = datumCopy(elems[i], typbyval, typlen);
	}
	return nchunks;
}

/*
 * parity_cache_try_warm
 *		Use the stored digests if the cache row matches this comparison and
 *		not too much changed since: the chunks get their bounds, the stored
 *		(segment, chunk) digests of unchanged segments and the digests of
 *		the stale segments, read again now (TID range scans, with the
 *		stored seed).  Returns true if so; false leaves the run to a full
 *		pass (nothing has been reported yet; the caller resets what was
 *		accumulated).  Reads the cache row as the catalog owner and both
 *		tables' pages; runs the stale segments' digests as each side's owner.
 */
bool
parity_cache_try_warm(ParityCtx *c)
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
	uint32		nseg[2];
	bool	   *stale[2];

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
	nchunks = warm_bounds(c, barr);
	if (nchunks < 0)
	{
		MemoryContextSwitchTo(old);
		return false;
	}
	c->nchunks = nchunks;
	c->chunks = palloc0(sizeof(PChunk) * nchunks);
	for (int i = 0; i < c->acc.nb; i++)
		c->chunks[i].bound = &c->acc.bounds[i * c->nkeys];
	MemoryContextSwitchTo(old);
	c->seed = c->acc.seed = seed[0];

	/*
	 * Which segments are stale, on both sides before deciding, so that a run
	 * that falls back to a full pass reports the counts that made it.
	 */
	start = GetXLogInsertRecPtr();
	for (int side = 0; side < 2; side++)
	{
		Relation	rel = table_open(side == PSIDE_LEGACY ? c->legacy : c->target, NoLock);
		PcPages    *now = &c->pages[side];

		old = MemoryContextSwitchTo(c->cxt);
		softmig_pc_read_pages(rel, start, GetActiveSnapshot(), now);
		MemoryContextSwitchTo(old);
		table_close(rel, NoLock);
		if (now->relfilenode != cached[side].relfilenode)
		{
			c->stale_segs[PSIDE_LEGACY] = c->stale_segs[PSIDE_TARGET] = 0;
			c->cache_why = "a table was rewritten";
			return false;
		}
		nseg[side] = Max(now->nseg, cached[side].nseg);
		stale[side] = palloc0(sizeof(bool) * Max(nseg[side], 1));
		for (uint32 g = 0; g < nseg[side]; g++)
			stale[side][g] = g >= now->nseg || g >= cached[side].nseg ||
				now->seg[g] == PC_SEG_NONE || cached[side].seg[g] == PC_SEG_NONE ||
				now->seg[g] != cached[side].seg[g];
		/* a segment that lost or gained blocks is stale whatever its LSNs */
		if (now->nblocks != cached[side].nblocks)
			for (uint32 g = Min(now->nblocks, cached[side].nblocks) / PC_SEG_BLOCKS; g < nseg[side]; g++)
				stale[side][g] = true;
		c->stale_segs[side] = 0;
		for (uint32 g = 0; g < nseg[side]; g++)
			c->stale_segs[side] += stale[side][g] ? 1 : 0;
	}
	for (int side = 0; side < 2; side++)
		if (c->stale_segs[side] > 0 && (double) c->stale_segs[side] > 0.25 * nseg[side])
		{
			c->cache_why = "more than a quarter of a table changed";
			return false;
		}

	/*
	 * the stored digests of the fresh segments, then the stale ones read
	 * again
	 */
	for (int side = 0; side < 2; side++)
	{
		for (int i = 0; i < nents[side]; i++)
		{
			PcEnt	   *e = &ents[side][i];
			uint32		g = PC_ENT_SEG(e->key);
			uint32		ch = PC_ENT_CHUNK(e->key);

			if (g >= nseg[side] || ch > (uint32) nchunks + 1)
			{
				c->cache_why = "the stored digests are unreadable";
				return false;
			}
			if (stale[side][g])
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
			parity_keep_ent(c, side, e);
		}
		/* and the stale segments, read again */
		parity_as_role(c, side == PSIDE_LEGACY ? c->lowner : c->towner);
		if (c->stale_segs[side] > 0)
		{
			Relation	rel;

			parity_digest_pass_agg(c, side, stale[side], c->pages[side].nseg);
			/* their state as the reads left it (see paritycache.c) */
			start = GetXLogInsertRecPtr();
			rel = table_open(side == PSIDE_LEGACY ? c->legacy : c->target, NoLock);
			softmig_pc_reread_pages(rel, start, GetActiveSnapshot(), &c->pages[side],
									stale[side]);
			table_close(rel, NoLock);
		}
		if (c->overflow)
		{
			c->cache_why = "too many (segment, chunk) pairs to store";
			return false;
		}
		if (side == PSIDE_LEGACY)
			softmig_pause_point(softmig_parity_pause_lock, true, "parity");
	}
	c->cache_mode = PCM_WARM;
	c->cache_why = NULL;
	return true;
}

/*
 * parity_cache_store
 *		Write this run's cache row (as the catalog owner): after a full
 *		pass the bounds and both sides' page states and (segment, chunk)
 *		digests; after a warm run the refreshed states, or only the row's
 *		counters when nothing was stale.  Skipped in a read-only
 *		transaction, when there were too many pairs to keep, or while
 *		another run holds the migration's cache lock.  Outside the
 *		read-only context, inside the SPI connection.
 */
void
parity_cache_store(ParityCtx *c)
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
			bounds[k] = PointerGetDatum(OidSendFunctionCall(sendfn, parity_key_array(c, k, c->acc.bounds, c->acc.nb)));
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
