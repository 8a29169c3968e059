/*-------------------------------------------------------------------------
 *
 * spiutil.c
 *	  The common layer under every module that runs SQL: keeping plans,
 *	  running a statement in a subtransaction and telling which errors it
 *	  tolerates, checking what a statement returned, finding a migration by
 *	  name, and the small list and name helpers the SQL builders share.
 *	  Nothing here switches identity (identity.c does) or builds SQL text
 *	  (sqltext.c does).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "softmig.h"

/*
 * softmig_str_member
 *		Is the C string s in the List of C strings l?
 */
bool
softmig_str_member(List *l, const char *s)
{
	ListCell   *lc;

	foreach(lc, l)
	{
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	}
	return false;
}

/*
 * softmig_qualified_relname
 *		schema.table, both quoted as needed.
 */
char *
softmig_qualified_relname(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * softmig_prepare_kept
 *		SPI_prepare + SPI_keepplan: a plan kept for the life of the backend
 *		(the caller owns it and frees it with SPI_freeplan).  Caller is
 *		connected to SPI.
 */
SPIPlanPtr
softmig_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * softmig_spi_read
 *		Read softmig's own catalog: prepare sql (for this one run: the
 *		callers fill caches, so the plan is not kept), run it read-only as
 *		told under snapshot and return the number of rows (at most count,
 *		0 for all), which SPI_tuptable holds.  The caller is connected to
 *		SPI; the statement takes the locks it takes (AccessShareLock on the
 *		tables it reads).
 */
uint64
softmig_spi_read(const char *sql, int nargs, Oid *argtypes, Datum *values,
				 Snapshot snapshot, bool read_only, long count)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);
	int			ret;

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	ret = SPI_execute_snapshot(plan, values, NULL, snapshot, InvalidSnapshot,
							   read_only, false, count);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_snapshot failed: %d", ret);
	return SPI_processed;
}

/*
 * softmig_spi_select_arg
 *		Run a read-only SELECT with one argument ($1, of type argtype) under
 *		the current snapshot and return the number of rows (at most count,
 *		0 for all), which SPI_tuptable holds; an internal error naming what
 *		was being done ("softmig: <what> failed") if it does not run as a
 *		SELECT.  The caller is connected to SPI; the statement takes the
 *		locks it takes.
 */
uint64
softmig_spi_select_arg(const char *sql, Oid argtype, Datum value, long count, const char *what)
{
	if (SPI_execute_with_args(sql, 1, &argtype, &value, NULL, true, count) != SPI_OK_SELECT)
		elog(ERROR, "softmig: %s failed", what);
	return SPI_processed;
}

/*
 * softmig_subxact_try
 *		Run fn(arg) in a subtransaction.  Returns NULL when it returned (the
 *		subtransaction committed, so what it wrote is kept).  When it raised
 *		an error that tolerated accepts (NULL: any error), the subtransaction
 *		is rolled back, nothing fn wrote is left (GUCs it set at a new nest
 *		level are restored too), and the error comes back, copied into the
 *		caller's memory context.  Other errors propagate.
 */
ErrorData *
softmig_subxact_try(void (*fn) (void *arg), void *arg, bool (*tolerated) (int sqlerrcode))
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (tolerated != NULL && !tolerated(edata->sqlerrcode))
			ReThrowError(edata);
	}
	PG_END_TRY();
	return edata;
}

/*
 * softmig_spi_expect
 *		Check that a statement softmig ran on a migrated table returned SPI
 *		code expect.  Anything else means PostgreSQL ran something else in
 *		its place: a rule (CREATE RULE ... DO INSTEAD) on the table rewrote
 *		it (the DDL guard refuses such rules, but event triggers do not fire
 *		under session_replication_role = replica).  Raises SM002, as the
 *		mirror does for the same tampering, naming what was being done.
 */
void
softmig_spi_expect(int rc, int expect, const char *what)
{
	if (rc == expect)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
			 errmsg("softmig could not %s: the statement was rewritten", what),
			 errdetail("It returned SPI code %s instead of %s; a rule (CREATE RULE) on a table of the migration replaced it.",
					   SPI_result_code_string(rc), SPI_result_code_string(expect)),
			 errhint("Drop the rule: softmig writes the tables of a migration with plain statements.")));
}

/*
 * softmig_pause_point
 *		The isolation tests' interleaving hook: when key (the value of one of
 *		the superuser-only *_pause_lock settings) is not 0, wait for that
 *		advisory lock, transaction-scoped, so another test session decides
 *		when the caller goes on.  read_only as for SPI_execute; the caller
 *		is connected to SPI.  what names the place for the can't-happen
 *		error.
 */
void
softmig_pause_point(int key, bool read_only, const char *what)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];

	if (key == 0)
		return;
	values[0] = Int64GetDatum((int64) key);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock($1)", 1, argtypes,
							  values, NULL, read_only, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: the %s pause point failed", what);
}

/*
 * softmig_spi_register_rows
 *		Register rows as the ephemeral named relation "name" of the current
 *		SPI connection, so statements there can read it like a table: with
 *		relid valid the relation has that table's row type and no rows (a
 *		placeholder for preparing statements over transition tables),
 *		otherwise desc and the tuplestore rows (n of them).  The caller owns
 *		rows and desc for as long as the connection lasts; name is copied.
 */
void
softmig_spi_register_rows(const char *name, Oid relid, TupleDesc desc,
						  Tuplestorestate *rows, int64 n)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));
	int			rc;

	enr->md.name = pstrdup(name);
	enr->md.reliddesc = relid;
	enr->md.tupdesc = OidIsValid(relid) ? NULL : desc;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = (double) n;
	enr->reldata = rows;
	rc = SPI_register_relation(enr);
	if (rc != SPI_OK_REL_REGISTER)
		elog(ERROR, "SPI_register_relation failed: %s", SPI_result_code_string(rc));
}

typedef struct SpiTry
{
	SPIPlanPtr	plan;
	const char *sql;
	Datum	   *values;
	const char *nulls;
	bool		read_only;
	int			expect;
} SpiTry;

/*
 * spi_try_run
 *		softmig_spi_try's body: run the statement, check its SPI code.
 */
static void
spi_try_run(void *arg)
{
	SpiTry	   *t = (SpiTry *) arg;
	int			rc = (t->plan ? SPI_execute_plan(t->plan, t->values, t->nulls, t->read_only, 0)
					  : SPI_execute(t->sql, t->read_only, 0));

	softmig_spi_expect(rc, t->expect, "run one of its statements");
}

/*
 * softmig_spi_try
 *		Run one SPI statement in a subtransaction (softmig_subxact_try): plan
 *		(with values and nulls, which may be NULL without parameters) or else
 *		the text sql, which must return SPI code expect.  On success
 *		SPI_processed and SPI_tuptable are set.  The caller is connected to
 *		SPI; the pattern behind "try the plain INSERT, fall back to the
 *		upsert" and "find the rows legacy cannot hold".
 */
ErrorData *
softmig_spi_try(SPIPlanPtr plan, const char *sql, Datum *values, const char *nulls,
				bool read_only, int expect, bool (*tolerated) (int sqlerrcode))
{
	SpiTry		t = {plan, sql, values, nulls, read_only, expect};

	return softmig_subxact_try(spi_try_run, &t, tolerated);
}

/*
 * softmig_unique_violation
 *		softmig_spi_try's tolerated for "the key is already there".
 */
bool
softmig_unique_violation(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_UNIQUE_VIOLATION;
}

/*
 * softmig_text_array_list
 *		A text[] datum as a List of C strings in the current memory context
 *		(NULL elements skipped).
 */
List *
softmig_text_array_list(Datum d)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			result = lappend(result, TextDatumGetCString(elems[i]));
	return result;
}

/*
 * softmig_migration_by_name
 *		The id of the migration called name (42704 if there is none), and,
 *		where legacy or target are not NULL, its two tables.  Reads
 *		softmig.migrations through its own SPI connection as the current
 *		user; takes no locks beyond the catalog read's.  The caller refuses
 *		a NULL name first.
 */
int32
softmig_migration_by_name(text *name, Oid *legacy, Oid *target)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	int32		id;
	HeapTuple	tup;
	TupleDesc	desc;

	values[0] = PointerGetDatum(name);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT id, legacy, target FROM softmig.migrations "
							  "WHERE name OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.migrations failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("migration \"%s\" does not exist", text_to_cstring(name)),
				 errhint("softmig.migrations lists the migrations of this database.")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	if (legacy)
		*legacy = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	if (target)
		*target = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	SPI_finish();
	return id;
}
