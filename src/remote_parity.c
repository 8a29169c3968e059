/*-------------------------------------------------------------------------
 *
 * remote_parity.c
 *	  Parity across databases: the legacy table in one database against the
 *	  landing copy the other one holds, without shipping rows, at one
 *	  logical point of the replication; then, at the same point, the landing
 *	  copy against the target through the mapping (softmig.parity).
 *
 *	  The point.  The comparison runs in the database downstream of the
 *	  replication (the target database while legacy is the write
 *	  authority, the legacy database from new_write on), which holds, in
 *	  its own session, the advisory lock of a fresh parity marker.  In the
 *	  upstream database one session locks the replicated table against
 *	  writers (SHARE ROW EXCLUSIVE: writers in flight finish first, new
 *	  ones wait, as for a state change), exports its snapshot, which a
 *	  second session imports, and inserts the marker and commits, which
 *	  lets the writers go.  So the upstream snapshot holds exactly the
 *	  changes committed before the marker.  Downstream, the apply worker
 *	  applies in commit order and, at the marker, its trigger
 *	  (remote_trigger.c) waits for the lock; this session sees it waiting
 *	  (pg_locks), takes its snapshot (everything applied before the marker,
 *	  nothing after), and lets it go.  Both sides are then read at the same
 *	  logical point however far the replication lags: no false positives.
 *
 *	  The comparison.  Chunk bounds come from a block sample of the local
 *	  table's keys.  Each side digests its table in one statement with
 *	  softmig.parity_digest (per-chunk row counts and two 64-bit digests,
 *	  the aggregate parity.c uses; parallel-safe), the upstream one over
 *	  libpq while this one computes its own.  Only chunks whose count or
 *	  digests differ are read again, both sides in key order, and merged
 *	  row by row: a key on one side only is missing on the other, values
 *	  of a key on both are compared with the type's equality (the other
 *	  database's text parsed by this one's input functions).  Every
 *	  reported difference is thereby confirmed; a difference is missed only
 *	  if counts and both digests of its chunk collide.  The digests hash
 *	  the values' bytes or the types' hash functions: both databases must
 *	  run the same PostgreSQL major version on the same platform (checked
 *	  at definition); where they differ (an enum's OIDs), chunks differ
 *	  and the row comparison clears them.
 *
 *	  Runs as the catalog owner (behind the gate, or in the other database
 *	  as a superuser); reads only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"
#include "utils/wait_event.h"

#include "softmig.h"
#include "observe.h"
#include "remote.h"

/* Chunks at most (the digest state is 24 bytes per chunk). */
#define RP_MAX_CHUNKS 100000

/* One column of the replicated table (keys first). */
typedef struct RCol
{
	char	   *name;
	Oid			typid;
	Oid			collid;
	char	   *basetype;		/* qualified base type, for bound arrays */
	Oid			ioparam;
	FmgrInfo	in;
	FmgrInfo	out;
	bool		has_eq;
	FmgrInfo	eq;
	FmgrInfo	cmp;			/* keys: default btree comparison */
} RCol;

/* One row of one side of a chunk: values as this database's Datums. */
typedef struct RRow
{
	Datum	   *v;
	bool	   *isnull;
	char	  **text;			/* as the side printed them (for reports) */
} RRow;

typedef struct RParity
{
	char	   *name;
	int			chunk_rows;
	Oid			rel;			/* the local table */
	char	   *qual;			/* its qualified name, the same in both */
	bool		local_is_legacy;	/* this is the legacy database */
	bool		target_here;	/* this database holds the target */
	int			nkeys;
	int			ncols;
	RCol	   *cols;
	char	   *collist;		/* "k1, ..., c1, ..." */
	char	   *keylist;		/* "k1, ..." */
	PGconn	   *lockconn;		/* upstream: locks, exports, marks */
	PGconn	   *readconn;		/* upstream: reads in the exported snapshot */
	char	   *what;
	Snapshot	snap;			/* this side's point */
	int64		marker;
	int			nb;				/* bounds */
	char	  **bound_row;		/* per bound: "ROW(lit, ...)" */
	char	  **bound_arr;		/* per key column: "'{...}'::type[]" */
	StringInfoData out;			/* JSON array of differences */
	int			ndiff;
	uint64		rows[2];		/* 0: this database, 1: the other */
	int			descended;
	double		ms_wait;
	double		ms_digest[2];
	double		ms_descent;
	double		ms_mapping;
} RParity;

/*
 * elapsed_ms
 *		Milliseconds since start.
 */
static double
elapsed_ms(instr_time start)
{
	instr_time	now;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	return INSTR_TIME_GET_MILLISEC(now);
}

/*
 * load_side
 *		This database's side of migration name: which side it is, its table,
 *		key, and whether it is downstream of the running replication.  55000
 *		unless a replication runs (mirrored to new_read) with no switch in
 *		progress.  The caller is connected to SPI.
 */
static void
load_side(RParity *p, List **keycols)
{
	HeapTuple	t;
	TupleDesc	d;
	bool		isnull;
	char	   *side;
	char	   *state;
	bool		fenced;
	bool		switching;
	Datum		keyarr;
	Datum	   *elems;
	int			nelems;

	if (softmig_spi_select_arg("SELECT side, local_table, key, state::pg_catalog.text, fenced, switch IS NOT NULL "
							   "FROM softmig.remote_migrations WHERE name OPERATOR(pg_catalog.=) $1",
							   TEXTOID, CStringGetTextDatum(p->name), 1,
							   "reading softmig.remote_migrations") != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cross-database migration \"%s\" does not exist in this database", p->name)));
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	side = SPI_getvalue(t, d, 1);
	p->rel = DatumGetObjectId(SPI_getbinval(t, d, 2, &isnull));
	keyarr = SPI_getbinval(t, d, 3, &isnull);
	state = SPI_getvalue(t, d, 4);
	fenced = DatumGetBool(SPI_getbinval(t, d, 5, &isnull));
	switching = DatumGetBool(SPI_getbinval(t, d, 6, &isnull));
	p->local_is_legacy = strcmp(side, "legacy") == 0;
	p->target_here = !p->local_is_legacy;

	if (fenced || switching)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot compare migration \"%s\" across databases while it changes state", p->name),
				 errhint("Finish the state change first (softmig.remote_resume or softmig.remote_abort).")));
	if (strcmp(state, "mirrored") != 0 && strcmp(state, "new_write") != 0 &&
		strcmp(state, "new_read") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot compare migration \"%s\" across databases in state %s", p->name, state),
				 errdetail("Cross-database parity compares the legacy table with its landing copy while replication runs, from mirrored to new_read.")));
	if (p->local_is_legacy != (strcmp(state, "mirrored") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cross-database parity of migration \"%s\" runs in the database the replication flows to", p->name),
				 errhint("softmig.remote_parity in the target database takes care of it.")));

	deconstruct_array(DatumGetArrayTypeP(keyarr), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &nelems);
	*keycols = NIL;
	for (int i = 0; i < nelems; i++)
		*keycols = lappend(*keycols, TextDatumGetCString(elems[i]));
}

/*
 * setup_columns
 *		The columns of the local table, keys first (in key order), then the
 *		others in column order, with their I/O, equality and (keys) btree
 *		comparison.  Takes AccessShareLock on the table.
 */
static void
setup_columns(RParity *p, List *keycols)
{
	Relation	rel = table_open(p->rel, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData cl;
	StringInfoData kl;
	int			n = 0;

	p->qual = softmig_qualified_relname(p->rel);
	p->cols = palloc0(sizeof(RCol) * desc->natts);
	p->nkeys = list_length(keycols);
	initStringInfo(&cl);
	initStringInfo(&kl);
	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);
			bool		iskey = softmig_str_member(keycols, NameStr(att->attname));
			RCol	   *c;
			Oid			base;
			Oid			infn;
			Oid			outfn;
			bool		isvarlena;
			TypeCacheEntry *tc;

			if (att->attisdropped || (pass == 0) != iskey)
				continue;
			if (pass == 0)
			{
				/* keys in the order of the key */
				int			k = 0;
				ListCell   *lc;

				foreach(lc, keycols)
				{
					if (strcmp(lfirst(lc), NameStr(att->attname)) == 0)
						break;
					k++;
				}
				c = &p->cols[k];
			}
			else
				c = &p->cols[n];
			n++;
			c->name = pstrdup(NameStr(att->attname));
			c->typid = att->atttypid;
			c->collid = att->attcollation;
			base = getBaseType(att->atttypid);
			c->basetype = format_type_be_qualified(base);
			getTypeInputInfo(att->atttypid, &infn, &c->ioparam);
			fmgr_info(infn, &c->in);
			getTypeOutputInfo(att->atttypid, &outfn, &isvarlena);
			fmgr_info(outfn, &c->out);
			tc = lookup_type_cache(base, TYPECACHE_EQ_OPR_FINFO | (iskey ? TYPECACHE_CMP_PROC_FINFO : 0));
			c->has_eq = OidIsValid(tc->eq_opr_finfo.fn_oid);
			if (c->has_eq)
				fmgr_info(tc->eq_opr_finfo.fn_oid, &c->eq);
			if (iskey)
			{
				if (!OidIsValid(tc->cmp_proc_finfo.fn_oid))
					ereport(ERROR,
							(errcode(ERRCODE_UNDEFINED_FUNCTION),
							 errmsg("parity cannot order key column \"%s\" of type %s",
									c->name, format_type_be(att->atttypid))));
				fmgr_info(tc->cmp_proc_finfo.fn_oid, &c->cmp);
			}
		}
	}
	table_close(rel, NoLock);
	p->ncols = n;
	if (p->nkeys < 1)
		elog(ERROR, "softmig: migration \"%s\" has no key", p->name);
	for (int i = 0; i < p->ncols; i++)
	{
		appendStringInfo(&cl, "%s%s", i ? ", " : "", quote_identifier(p->cols[i].name));
		if (i < p->nkeys)
			appendStringInfo(&kl, "%s%s", i ? ", " : "", quote_identifier(p->cols[i].name));
	}
	p->collist = cl.data;
	p->keylist = kl.data;
}

/*
 * check_shape
 *		Raise 42804 unless the upstream table has the local table's columns
 *		(names, types, collations, in order) and primary key.
 */
static void
check_shape(RParity *p)
{
	const char *params[1] = {p->qual};
	PGresult   *res;
	char	   *theirs;
	char	   *ours;
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		values[1];

	res = softmig_remote_exec(p->lockconn, p->what,
							  "SELECT (softmig._remote_table_shape($1::pg_catalog.regclass) "
							  "OPERATOR(pg_catalog.-) 'persistence')::pg_catalog.text", 1, params);
	theirs = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	values[0] = ObjectIdGetDatum(p->rel);
	if (SPI_execute_with_args("SELECT (softmig._remote_table_shape($1) OPERATOR(pg_catalog.-) 'persistence')::pg_catalog.text",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: describing table %s failed", p->qual);
	ours = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(ours, theirs) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("table %s differs between the two databases of migration \"%s\"", p->qual, p->name),
				 errdetail("Here: %s. There: %s.", ours, theirs),
				 errhint("Change both tables the same way (logical replication does not carry DDL).")));
}

/*
 * remote_setup
 *		Settings of the upstream sessions that make their text output
 *		unambiguous for this database's input functions.
 */
static void
remote_setup(RParity *p, PGconn *conn)
{
	PQclear(softmig_remote_exec(conn, p->what,
								"SELECT pg_catalog.set_config('DateStyle', 'ISO, YMD', false), "
								"pg_catalog.set_config('IntervalStyle', 'postgres', false), "
								"pg_catalog.set_config('extra_float_digits', '3', false), "
								"pg_catalog.set_config('bytea_output', 'hex', false)", 0, NULL));
}

/*
 * applier_waits
 *		Is a backend of this database waiting for the lock of parity marker
 *		p->marker (the apply worker, at the marker)?  Reads pg_locks.
 */
static bool
applier_waits(RParity *p)
{
	Oid			argtypes[2] = {OIDOID, OIDOID};
	Datum		values[2];

	values[0] = ObjectIdGetDatum((Oid) ((uint64) p->marker >> 32));
	values[1] = ObjectIdGetDatum((Oid) (uint32) p->marker);
	if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_locks l "
							  "WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' "
							  "AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d "
							  "    WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) "
							  "AND l.classid OPERATOR(pg_catalog.=) $1 AND l.objid OPERATOR(pg_catalog.=) $2 "
							  "AND l.objsubid OPERATOR(pg_catalog.=) 5 AND NOT l.granted",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading pg_locks failed");
	return SPI_processed > 0;
}

/*
 * take_point
 *		Reach the common point (see the file header): hold the marker's lock
 *		here, lock, export, import and mark upstream, wait for the apply
 *		worker at the marker, take this side's snapshot, let it go.  Waits
 *		at most softmig.remote_timeout for the apply; the lock is released
 *		on every exit.
 */
static void
take_point(RParity *p, const char *lock_timeout)
{
	LOCKTAG		tag;
	PGresult   *res;
	char	   *snapname;
	char		markerbuf[32];
	const char *params[3];
	instr_time	start;

	if (!pg_strong_random(&p->marker, sizeof(p->marker)))
		p->marker = (int64) GetCurrentTimestamp();
	p->marker &= INT64CONST(0x7fffffffffffffff);
	snprintf(markerbuf, sizeof(markerbuf), INT64_FORMAT, p->marker);
	softmig_remote_marker_tag(&tag, p->marker);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	PG_TRY();
	{
		/* upstream: no writer in flight, the snapshot, the marker */
		PQclear(softmig_remote_exec(p->lockconn, p->what,
									"BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL));
		/*
		 * Utility statements only before the export: a query would take the
		 * transaction's snapshot before the lock, and writers committing
		 * between it and the lock would precede the marker upstream but lie
		 * outside the snapshot.
		 */
		PQclear(softmig_remote_exec(p->lockconn, p->what,
									psprintf("SET LOCAL lock_timeout = %s", quote_literal_cstr(lock_timeout)),
									0, NULL));
		PQclear(softmig_remote_exec(p->lockconn, p->what,
									psprintf("LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE", p->qual), 0, NULL));
		res = softmig_remote_exec(p->lockconn, p->what, "SELECT pg_catalog.pg_export_snapshot()", 0, NULL);
		snapname = pstrdup(PQgetvalue(res, 0, 0));
		PQclear(res);
		PQclear(softmig_remote_exec(p->readconn, p->what,
									"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL));
		PQclear(softmig_remote_exec(p->readconn, p->what,
									psprintf("SET TRANSACTION SNAPSHOT %s", quote_literal_cstr(snapname)), 0, NULL));
		params[0] = p->name;
		params[1] = markerbuf;
		PQclear(softmig_remote_exec(p->lockconn, p->what,
									"INSERT INTO softmig.remote_markers (migration, id, kind, lsn) "
									"VALUES ($1, $2::pg_catalog.int8, 'parity', pg_catalog.pg_current_wal_lsn())",
									2, params));
		PQclear(softmig_remote_exec(p->lockconn, p->what, "COMMIT", 0, NULL));

		/* here: the apply worker reaches the marker and waits */
		INSTR_TIME_SET_CURRENT(start);
		while (!applier_waits(p))
		{
			if (elapsed_ms(start) > softmig_remote_timeout)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("cross-database parity of migration \"%s\": the replication did not reach the parity marker within softmig.remote_timeout",
								p->name),
						 errhint("softmig.status shows the replication; a lagging or stopped subscription delays parity.")));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 5L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		p->ms_wait = elapsed_ms(start);
		p->snap = RegisterSnapshot(GetLatestSnapshot());
	}
	PG_FINALLY();
	{
		LockRelease(&tag, ExclusiveLock, true);
	}
	PG_END_TRY();
}

/*
 * choose_bounds
 *		Increasing chunk bounds from a repeatable block sample of the local
 *		table's keys (any increasing bounds give a correct answer; the
 *		sample makes chunks even): per bound a row literal for range
 *		statements, per key column an array literal for the digest.
 */
static void
choose_bounds(RParity *p)
{
	StringInfoData sql;
	double		est;
	int			nchunks;
	double		pct;
	uint64		nrows;

	if (SPI_execute_snapshot(SPI_prepare(psprintf("SELECT GREATEST(c.reltuples, 0)::pg_catalog.float8 "
												  "FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) %u",
												  p->rel), 0, NULL),
							 NULL, NULL, p->snap, InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading the size of %s failed", p->qual);
	est = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){false}));
	if (est < 1)
	{
		/* never analyzed: count */
		if (SPI_execute_snapshot(SPI_prepare(psprintf("SELECT pg_catalog.count(*)::pg_catalog.float8 FROM %s", p->qual),
											 0, NULL),
								 NULL, NULL, p->snap, InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "softmig: counting the rows of %s failed", p->qual);
		est = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){false}));
	}
	nchunks = (int) Min((double) RP_MAX_CHUNKS, ceil(est / p->chunk_rows));
	p->nb = 0;
	if (nchunks <= 1)
		return;
	pct = Min(100.0, 100.0 * 20.0 * nchunks / Max(est, 1.0));
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT %s FROM (SELECT %s, pg_catalog.row_number() OVER (ORDER BY %s) AS softmig_rn, "
					 "pg_catalog.count(*) OVER () AS softmig_n FROM %s TABLESAMPLE SYSTEM (%g) REPEATABLE (7)) s "
					 "WHERE softmig_rn OPERATOR(pg_catalog.%%) GREATEST(softmig_n OPERATOR(pg_catalog./) %d, 1) "
					 "OPERATOR(pg_catalog.=) 0 AND softmig_rn OPERATOR(pg_catalog.<) softmig_n ORDER BY %s",
					 p->keylist, p->keylist, p->keylist, p->qual, pct, nchunks, p->keylist);
	if (SPI_execute_snapshot(SPI_prepare(sql.data, 0, NULL), NULL, NULL, p->snap, InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: sampling the keys of %s failed", p->qual);
	nrows = SPI_processed;
	p->nb = (int) nrows;
	p->bound_row = palloc(sizeof(char *) * Max(nrows, 1));
	p->bound_arr = palloc(sizeof(char *) * p->nkeys);
	for (int k = 0; k < p->nkeys; k++)
	{
		StringInfoData arr;

		initStringInfo(&arr);
		appendStringInfoChar(&arr, '{');
		for (uint64 r = 0; r < nrows; r++)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, k + 1);
			StringInfoData el;

			/* an array element, double-quoted with backslash escapes */
			initStringInfo(&el);
			appendStringInfoChar(&el, '"');
			for (char *c = v; *c; c++)
			{
				if (*c == '"' || *c == '\\')
					appendStringInfoChar(&el, '\\');
				appendStringInfoChar(&el, *c);
			}
			appendStringInfoChar(&el, '"');
			appendStringInfo(&arr, "%s%s", r ? "," : "", el.data);
		}
		appendStringInfoChar(&arr, '}');
		p->bound_arr[k] = psprintf("%s::%s[]", quote_literal_cstr(arr.data), p->cols[k].basetype);
	}
	for (uint64 r = 0; r < nrows; r++)
	{
		StringInfoData row;

		initStringInfo(&row);
		appendStringInfoString(&row, "ROW(");
		for (int k = 0; k < p->nkeys; k++)
			appendStringInfo(&row, "%s%s::%s", k ? ", " : "",
							 quote_literal_cstr(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, k + 1)),
							 format_type_be_qualified(p->cols[k].typid));
		appendStringInfoChar(&row, ')');
		p->bound_row[r] = row.data;
	}
}

/*
 * digest_sql
 *		The statement digesting the table, the same text in both databases
 *		(the collations are looked up in each).
 */
static char *
digest_sql(RParity *p, uint64 seed)
{
	StringInfoData sql;
	StringInfoData names;

	initStringInfo(&names);
	for (int i = 0; i < p->ncols; i++)
		appendStringInfo(&names, "%s%s", i ? "," : "", quote_literal_cstr(p->cols[i].name));
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT softmig.parity_digest(" INT64_FORMAT "::pg_catalog.int8, %d, "
					 "ARRAY(SELECT a.attcollation FROM pg_catalog.unnest(ARRAY[%s]::pg_catalog.text[]) "
					 "WITH ORDINALITY AS x(n, o) JOIN pg_catalog.pg_attribute a "
					 "ON a.attrelid OPERATOR(pg_catalog.=) %s::pg_catalog.regclass "
					 "AND a.attname OPERATOR(pg_catalog.=) x.n ORDER BY x.o), ",
					 (int64) seed, p->nkeys, names.data, quote_literal_cstr(p->qual));
	for (int k = 0; k < p->nkeys; k++)
		appendStringInfo(&sql, "%s, ", p->nb > 0 ? p->bound_arr[k] :
						 psprintf("'{}'::%s[]", p->cols[k].basetype));
	for (int k = 0; k < p->nkeys; k++)
		appendStringInfo(&sql, "'{}'::%s[], ", p->cols[k].basetype);
	appendStringInfo(&sql, "NULL::pg_catalog.tid, %s) FROM %s", p->collist, p->qual);
	return sql.data;
}

/*
 * state_chunks
 *		A digest state as 3 words per chunk (zeros for an empty table).
 */
static uint64 *
state_chunks(RParity *p, bytea *st, uint64 *nullkeys)
{
	int			nchunks = p->nb + 1;
	uint64	   *out = palloc0(sizeof(uint64) * 3 * nchunks);

	*nullkeys = 0;
	if (st != NULL && !softmig_parity_state_chunks(st, nchunks, out, nullkeys))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("the two databases of migration \"%s\" digest rows differently", p->name),
				 errdetail("A digest state does not have the expected %d chunks.", nchunks),
				 errhint("Both databases must run the same PostgreSQL major version and softmig version on the same platform.")));
	return out;
}

/*
 * emit
 *		Append one difference to the JSON array of the result.
 */
static void
emit(RParity *p, const char *layer, const char *kind, const char *keyjson,
	 const char *field, const char *lval, const char *tval)
{
	appendStringInfoString(&p->out, p->ndiff++ ? ", {\"layer\": " : "{\"layer\": ");
	escape_json(&p->out, layer);
	appendStringInfoString(&p->out, ", \"kind\": ");
	escape_json(&p->out, kind);
	appendStringInfo(&p->out, ", \"key\": %s, \"field\": ", keyjson ? keyjson : "null");
	if (field)
		escape_json(&p->out, field);
	else
		appendStringInfoString(&p->out, "null");
	appendStringInfoString(&p->out, ", \"legacy_value\": ");
	if (lval)
		escape_json(&p->out, lval);
	else
		appendStringInfoString(&p->out, "null");
	appendStringInfoString(&p->out, ", \"target_value\": ");
	if (tval)
		escape_json(&p->out, tval);
	else
		appendStringInfoString(&p->out, "null");
	appendStringInfoChar(&p->out, '}');
}

/*
 * key_json
 *		The legacy key of a row as a jsonb object (legacy key columns, as
 *		softmig shows keys everywhere).
 */
static char *
key_json(RParity *p, RRow *row)
{
	Oid		   *types = palloc(sizeof(Oid) * p->nkeys);
	List	   *names = NIL;
	List	   *params = NIL;
	char	   *sql;

	for (int k = 0; k < p->nkeys; k++)
	{
		types[k] = p->cols[k].typid;
		names = lappend(names, p->cols[k].name);
		params = lappend(params, psprintf("$%d", k + 1));
	}
	sql = psprintf("SELECT (%s)::pg_catalog.text", softmig_json_object_sql(names, params));
	if (SPI_execute_with_args(sql, p->nkeys, types, row->v, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: building a key failed");
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * range_sql
 *		The rows of chunk i, key order, every column as text.
 */
static char *
range_sql(RParity *p, int i)
{
	StringInfoData sql;
	StringInfoData sel;
	StringInfoData key;
	bool		where = false;

	initStringInfo(&sel);
	for (int c = 0; c < p->ncols; c++)
		appendStringInfo(&sel, "%ssoftmig_t.%s::pg_catalog.text", c ? ", " : "", quote_identifier(p->cols[c].name));
	/* (qualified: the text columns of the select list bear the same names) */
	initStringInfo(&key);
	for (int k = 0; k < p->nkeys; k++)
		appendStringInfo(&key, "%ssoftmig_t.%s", k ? ", " : "", quote_identifier(p->cols[k].name));
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT %s FROM %s AS softmig_t", sel.data, p->qual);
	if (i > 0)
	{
		appendStringInfo(&sql, " WHERE ROW(%s) OPERATOR(pg_catalog.>) %s", key.data, p->bound_row[i - 1]);
		where = true;
	}
	if (i < p->nb)
		appendStringInfo(&sql, " %s ROW(%s) OPERATOR(pg_catalog.<=) %s", where ? "AND" : "WHERE",
						 key.data, p->bound_row[i]);
	appendStringInfo(&sql, " ORDER BY %s", key.data);
	return sql.data;
}

/*
 * parse_row
 *		A row of texts (NULL: SQL NULL) as this database's Datums.
 */
static void
parse_row(RParity *p, RRow *row)
{
	row->v = palloc(sizeof(Datum) * p->ncols);
	row->isnull = palloc(sizeof(bool) * p->ncols);
	for (int c = 0; c < p->ncols; c++)
	{
		row->isnull[c] = row->text[c] == NULL;
		row->v[c] = row->isnull[c] ? (Datum) 0 :
			InputFunctionCall(&p->cols[c].in, row->text[c], p->cols[c].ioparam, -1);
	}
}

/*
 * cmp_keys
 *		Compare two rows' keys in the key columns' btree order.
 */
static int
cmp_keys(RParity *p, RRow *a, RRow *b)
{
	for (int k = 0; k < p->nkeys; k++)
	{
		int			r = DatumGetInt32(FunctionCall2Coll(&p->cols[k].cmp, p->cols[k].collid,
														a->v[k], b->v[k]));

		if (r != 0)
			return r;
	}
	return 0;
}

/*
 * values_equal
 *		Are two values of column c equal (the type's equality, or the same
 *		text where the type has none)?
 */
static bool
values_equal(RParity *p, int c, RRow *a, RRow *b)
{
	if (a->isnull[c] || b->isnull[c])
		return a->isnull[c] && b->isnull[c];
	if (p->cols[c].has_eq)
		return DatumGetBool(FunctionCall2Coll(&p->cols[c].eq, p->cols[c].collid, a->v[c], b->v[c]));
	return strcmp(OutputFunctionCall(&p->cols[c].out, a->v[c]),
				  OutputFunctionCall(&p->cols[c].out, b->v[c])) == 0;
}

/*
 * descend
 *		Compare chunk i row by row: this side under its snapshot, the other
 *		through the importing session; report every difference.  [0] is
 *		this database's side, [1] the other's; legacy and target values are
 *		reported from the legacy database's and the landing copy's side.
 */
static void
descend(RParity *p, int i, MemoryContext rowcxt)
{
	char	   *sql = range_sql(p, i);
	PGresult   *res;
	int			n[2];
	RRow	   *rows[2];
	int			a = 0;
	int			b = 0;
	int			leg = p->local_is_legacy ? 0 : 1;
	MemoryContext old = MemoryContextSwitchTo(rowcxt);

	softmig_remote_send(p->readconn, p->what, sql, 0, NULL);
	if (SPI_execute_snapshot(SPI_prepare(sql, 0, NULL), NULL, NULL, p->snap, InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading %s failed", p->qual);
	n[0] = (int) SPI_processed;
	rows[0] = palloc(sizeof(RRow) * Max(n[0], 1));
	for (int r = 0; r < n[0]; r++)
	{
		rows[0][r].text = palloc(sizeof(char *) * p->ncols);
		for (int c = 0; c < p->ncols; c++)
			rows[0][r].text[c] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1);
		parse_row(p, &rows[0][r]);
	}
	res = softmig_remote_result(p->readconn, p->what);
	n[1] = PQntuples(res);
	rows[1] = palloc(sizeof(RRow) * Max(n[1], 1));
	for (int r = 0; r < n[1]; r++)
	{
		rows[1][r].text = palloc(sizeof(char *) * p->ncols);
		for (int c = 0; c < p->ncols; c++)
			rows[1][r].text[c] = PQgetisnull(res, r, c) ? NULL : pstrdup(PQgetvalue(res, r, c));
		parse_row(p, &rows[1][r]);
	}
	PQclear(res);

	/* merge by key: keys of one side only are missing in the other */
	while (a < n[0] || b < n[1])
	{
		int			cmp = a >= n[0] ? 1 : b >= n[1] ? -1 : cmp_keys(p, &rows[0][a], &rows[1][b]);

		if (cmp != 0)
		{
			int			s = cmp < 0 ? 0 : 1;
			RRow	   *r = s == 0 ? &rows[0][a++] : &rows[1][b++];

			emit(p, "replication", s == leg ? "missing_in_target" : "missing_in_legacy",
				 key_json(p, r), NULL, NULL, NULL);
			continue;
		}
		for (int c = p->nkeys; c < p->ncols; c++)
		{
			RRow	   *l = leg == 0 ? &rows[0][a] : &rows[1][b];
			RRow	   *t = leg == 0 ? &rows[1][b] : &rows[0][a];

			if (!values_equal(p, c, l, t))
				emit(p, "replication", "mismatch", key_json(p, l), p->cols[c].name,
					 l->text[c], t->text[c]);
		}
		a++;
		b++;
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(rowcxt);
}

/*
 * mapping_layer
 *		softmig.parity of the landing copy and the target, in the target
 *		database, at the same point: here under this side's snapshot, or
 *		there in the importing session.
 */
static void
mapping_layer(RParity *p)
{
	const char *sql = "SELECT kind, key::pg_catalog.text, field, legacy_value, target_value "
		"FROM softmig.parity($1, $2)";
	char		cr[16];
	instr_time	start;

	INSTR_TIME_SET_CURRENT(start);
	snprintf(cr, sizeof(cr), "%d", p->chunk_rows);
	if (p->target_here)
	{
		Oid			argtypes[2] = {TEXTOID, INT4OID};
		Datum		values[2];
		SPIPlanPtr	plan = SPI_prepare(sql, 2, argtypes);

		values[0] = CStringGetTextDatum(p->name);
		values[1] = Int32GetDatum(p->chunk_rows);
		if (plan == NULL ||
			SPI_execute_snapshot(plan, values, NULL, p->snap, InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "softmig: parity of migration \"%s\" failed", p->name);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	t = SPI_tuptable->vals[r];
			TupleDesc	d = SPI_tuptable->tupdesc;

			emit(p, "mapping", SPI_getvalue(t, d, 1), SPI_getvalue(t, d, 2), SPI_getvalue(t, d, 3),
				 SPI_getvalue(t, d, 4), SPI_getvalue(t, d, 5));
		}
	}
	else
	{
		const char *params[2] = {p->name, cr};
		PGresult   *res = softmig_remote_exec(p->readconn, p->what, sql, 2, params);

		for (int r = 0; r < PQntuples(res); r++)
			emit(p, "mapping", PQgetvalue(res, r, 0),
				 PQgetisnull(res, r, 1) ? NULL : PQgetvalue(res, r, 1),
				 PQgetisnull(res, r, 2) ? NULL : PQgetvalue(res, r, 2),
				 PQgetisnull(res, r, 3) ? NULL : PQgetvalue(res, r, 3),
				 PQgetisnull(res, r, 4) ? NULL : PQgetvalue(res, r, 4));
		PQclear(res);
	}
	p->ms_mapping = elapsed_ms(start);
}

/*
 * run
 *		The whole comparison (see the file header); the caller is connected
 *		to SPI.  Result, in the caller's context: {"differences": [...],
 *		"stats": {...}}.
 */
static char *
run(RParity *p, MemoryContext caller)
{
	List	   *keycols;
	char	   *lock_timeout;
	uint64		seed;
	char	   *sql;
	bytea	   *mine = NULL;
	bytea	   *theirs = NULL;
	uint64	   *cm;
	uint64	   *ct;
	uint64		nk[2];
	PGresult   *res;
	bool		isnull;
	Datum		d;
	instr_time	start;
	MemoryContext rowcxt;
	StringInfoData result;

	load_side(p, &keycols);
	setup_columns(p, keycols);
	if (SPI_execute_with_args("SELECT COALESCE(m.options OPERATOR(pg_catalog.->>) 'lock_timeout', "
							  "r.options OPERATOR(pg_catalog.->>) 'lock_timeout', '5s') "
							  "FROM softmig.remote_migrations r LEFT JOIN softmig.migrations m "
							  "ON m.id OPERATOR(pg_catalog.=) r.migration_id WHERE r.name OPERATOR(pg_catalog.=) $1",
							  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(p->name)}, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "softmig: reading the options of migration \"%s\" failed", p->name);
	lock_timeout = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	p->what = psprintf("the other database of migration \"%s\"", p->name);
	p->lockconn = softmig_remote_connect_peer(p->name);
	p->readconn = softmig_remote_connect_peer(p->name);
	remote_setup(p, p->readconn);
	check_shape(p);
	take_point(p, lock_timeout);
	softmig_remote_finish(p->lockconn);
	p->lockconn = NULL;

	choose_bounds(p);
	if (!pg_strong_random(&seed, sizeof(seed)))
		seed = (uint64) GetCurrentTimestamp();
	sql = digest_sql(p, seed);

	/* both digests at once: theirs over libpq while this side computes */
	INSTR_TIME_SET_CURRENT(start);
	softmig_remote_send(p->readconn, p->what, sql, 0, NULL);
	if (SPI_execute_snapshot(SPI_prepare(sql, 0, NULL), NULL, NULL, p->snap, InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: digesting %s failed", p->qual);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		mine = DatumGetByteaPCopy(d);
	p->ms_digest[0] = elapsed_ms(start);
	res = softmig_remote_result(p->readconn, p->what);
	if (!PQgetisnull(res, 0, 0))
		theirs = DatumGetByteaPCopy(DirectFunctionCall1(byteain, CStringGetDatum(PQgetvalue(res, 0, 0))));
	PQclear(res);
	p->ms_digest[1] = elapsed_ms(start);
	cm = state_chunks(p, mine, &nk[0]);
	ct = state_chunks(p, theirs, &nk[1]);

	/* row by row where a chunk differs */
	INSTR_TIME_SET_CURRENT(start);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "softmig remote parity chunk", ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i <= p->nb; i++)
	{
		p->rows[0] += cm[3 * i];
		p->rows[1] += ct[3 * i];
		if (memcmp(&cm[3 * i], &ct[3 * i], 3 * sizeof(uint64)) == 0)
			continue;
		p->descended++;
		descend(p, i, rowcxt);
	}
	p->ms_descent = elapsed_ms(start);

	mapping_layer(p);
	PQclear(softmig_remote_exec(p->readconn, p->what, "COMMIT", 0, NULL));
	softmig_remote_finish(p->readconn);
	p->readconn = NULL;
	UnregisterSnapshot(p->snap);

	initStringInfo(&result);
	appendStringInfo(&result, "{\"differences\": [%s], \"stats\": {\"marker\": " INT64_FORMAT
					 ", \"chunks\": %d, \"chunks_descended\": %d, \"rows_here\": " UINT64_FORMAT
					 ", \"rows_there\": " UINT64_FORMAT ", \"here\": ",
					 p->out.data, p->marker, p->nb + 1, p->descended, p->rows[0], p->rows[1]);
	escape_json(&result, p->local_is_legacy ? "legacy" : "target");
	appendStringInfo(&result, ", \"ms_wait_for_point\": %.1f, \"ms_digest_here\": %.1f, \"ms_digest_there\": %.1f, "
					 "\"ms_descent\": %.1f, \"ms_mapping\": %.1f}}",
					 p->ms_wait, p->ms_digest[0], p->ms_digest[1], p->ms_descent, p->ms_mapping);
	return MemoryContextStrdup(caller, result.data);
}

PG_FUNCTION_INFO_V1(softmig_remote_parity_here);
/*
 * softmig_remote_parity_here
 *		softmig._remote_parity_here(name, chunk_rows) -> jsonb: compare the
 *		legacy table and its landing copy at one point of the replication,
 *		and the copy and the target at the same point, from this database,
 *		which must be the one the replication flows to.  Two connections to
 *		the other one (closed before returning, and by the transaction's end
 *		on error).  EXECUTE is revoked from PUBLIC: softmig.remote_parity
 *		calls it behind the gate, the other database as a superuser.
 */
Datum
softmig_remote_parity_here(PG_FUNCTION_ARGS)
{
	RParity    *p;
	char	   *json;
	Datum		result;
	int			nest;
	MemoryContext caller = CurrentMemoryContext;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name and chunk_rows must not be null")));
	if (PG_GETARG_INT32(1) < 10 || PG_GETARG_INT32(1) > 100000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("chunk_rows must be between 10 and 100000000, not %d", PG_GETARG_INT32(1))));
	p = palloc0(sizeof(RParity));
	p->name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	p->chunk_rows = PG_GETARG_INT32(1);
	initStringInfo(&p->out);

	/*
	 * Values travel as text between the databases: print them here the
	 * way the other side's sessions do (remote_setup), unambiguously.
	 */
	nest = NewGUCNestLevel();
	(void) set_config_option("DateStyle", "ISO, YMD", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("IntervalStyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "3", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("bytea_output", "hex", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	json = run(p, caller);
	SPI_finish();
	AtEOXact_GUC(true, nest);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
	PG_RETURN_DATUM(result);
}
