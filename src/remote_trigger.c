/*-------------------------------------------------------------------------
 *
 * remote_trigger.c
 *	  The triggers of a cross-database migration (doc/cross-database.md).
 *
 *	  The legacy database (A) holds the legacy table; the target database
 *	  (B) holds a landing copy of it (same schema-qualified name, kept by
 *	  logical replication) and the target, with an ordinary softmig
 *	  migration landing -> target.  Only one replication direction runs at
 *	  a time: A -> B while legacy is the write authority, B -> A from
 *	  new_write on.  The triggers here make that safe:
 *
 *	  A, legacy (softmig_x_guard, BEFORE statement, fires for local
 *	  sessions only): refuses writes while A is not the write authority or
 *	  a switch is in progress, refuses TRUNCATE, and claims the operation
 *	  key of a write it lets through (opkey.c, under a negative endpoint id).
 *	  Changes applied by the B -> A subscription run with
 *	  session_replication_role = replica and pass.
 *
 *	  B, landing copy:
 *	    softmig_<id>_copy   BEFORE statement, local sessions: refuses every
 *	                        write but softmig's own (the projection in
 *	                        new_write): the copy takes replicated changes only;
 *	    softmig_<id>_apply  AFTER ROW, ENABLE REPLICA: fires for the apply
 *	                        worker (and the initial table synchronization),
 *	                        which fires row triggers only, never statement
 *	                        triggers (worker.c, execReplication.c).  It hands
 *	                        each row to the migration's ordinary write
 *	                        trigger as a one-row transition table, so the
 *	                        mirror into the target is the same code as for a
 *	                        local write: same mapping, upsert, key moves,
 *	                        delete fence, quarantine, in the apply
 *	                        transaction, in commit order.  Replication origins
 *	                        make the apply exactly-once across restarts.
 *	  B, target (softmig_<id>_fence, BEFORE statement): refuses writes while
 *	  a switch back to legacy is fencing B.
 *
 *	  Both: softmig.remote_markers (ALWAYS): a parity marker arriving
 *	  through replication waits for the parity session of this database
 *	  (remote_parity.c), which holds the marker's lock while it takes its
 *	  snapshot; softmig.operations: a claim of a cross-database migration
 *	  on its write authority is copied into softmig.remote_operations,
 *	  which travels with the data, and refused (23505) when the key was
 *	  applied on the other side; softmig.remote_operations (REPLICA): a
 *	  replicated key that is already known is skipped rather than stopping
 *	  the apply.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "softmig.h"
#include "opkey.h"
#include "remote.h"

/* the statement trigger that mirrors a write (trigger.c) */
extern Datum softmig_write_trigger(PG_FUNCTION_ARGS);

/* advisory lock sub-key of parity markers (1..3 are taken: see backfill.c) */
#define SM_MARKER_SUBKEY 5

/* softmig.remote_stop_after: test hook, see softmig_remote_stop_after() */
static char *remote_stop_after = NULL;

/* softmig.remote_timeout (ms): how long a switch waits for the other side */
int			softmig_remote_timeout = 60000;

/* softmig is running a step of a cross-database switch right now */
static bool stepping = false;
static bool xact_callback_registered = false;

/* One cross-database endpoint as the guards see it. */
typedef struct Endpoint
{
	char	   *name;
	char		side;			/* 'l': legacy database, 't': target database */
	int32		migration_id;
	SoftmigState state;
	bool		fenced;
	char	   *remote_table;
	Jsonb	   *options;
} Endpoint;

/*
 * load_endpoint
 *		Read the endpoint called name from softmig.remote_migrations with
 *		the latest snapshot (a state change committed while this statement
 *		waited for its table lock is seen, also in an older REPEATABLE READ
 *		transaction).  NULL if there is none.  Opens its own SPI connection;
 *		the result is palloc'd in the caller's context.  Catalog readable
 *		by everyone: runs as the writing role.
 */
static Endpoint *
load_endpoint(const char *name)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	Endpoint   *e = NULL;

	values[0] = CStringGetTextDatum(name);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
		plan = softmig_prepare_kept("SELECT side, migration_id, state::pg_catalog.text, fenced, "
									"remote_table, options "
									"FROM softmig.remote_migrations WHERE name OPERATOR(pg_catalog.=) $1",
									1, argtypes);
	if (SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.remote_migrations failed");
	if (SPI_processed == 1)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);

		e = palloc0(sizeof(Endpoint));
		e->name = pstrdup(name);
		e->side = SPI_getvalue(t, d, 1)[0];
		e->migration_id = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		e->state = softmig_state_by_name(SPI_getvalue(t, d, 3));
		e->fenced = DatumGetBool(SPI_getbinval(t, d, 4, &isnull));
		e->remote_table = SPI_getvalue(t, d, 5);
		e->options = DatumGetJsonbPCopy(SPI_getbinval(t, d, 6, &isnull));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return e;
}

/*
 * trigger_arg
 *		Argument i of a softmig cross-database trigger.
 */
static const char *
trigger_arg(TriggerData *td, int i)
{
	if (td->tg_trigger->tgnargs <= i)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig trigger \"%s\" lacks its arguments", td->tg_trigger->tgname)));
	return td->tg_trigger->tgargs[i];
}

/*
 * require_statement_trigger
 *		39P01 unless called as a BEFORE statement trigger.
 */
static void
require_statement_trigger(FunctionCallInfo fcinfo, const char *fn)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) ||
		!TRIGGER_FIRED_BEFORE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be a BEFORE statement trigger", fn)));
}

/*
 * operation_name
 *		INSERT, UPDATE, DELETE or TRUNCATE, for messages.
 */
static const char *
operation_name(TriggerData *td)
{
	return TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" :
		TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" :
		TRIGGER_FIRED_BY_DELETE(td->tg_event) ? "DELETE" : "TRUNCATE";
}

static void ledger_error(const char *name, const char *key, Datum *values);

/*
 * refuse_if_applied
 *		Before a write is refused for want of write authority (a switch in
 *		progress, or this database is the projection): when its operation
 *		key is already in softmig.remote_operations, the operation was
 *		applied, here or in the other database, so refuse it as already
 *		applied (23505), as the write authority would.  A retry then gets
 *		the same answer whichever database it reaches.  A key not (yet) in
 *		this database's ledger falls through to the caller's refusal.
 *		Connects to SPI for the lookup.
 */
static void
refuse_if_applied(Endpoint *e)
{
	Datum		values[2];
	bool		found;

	if (softmig_operation_key == NULL || softmig_operation_key[0] == '\0')
		return;
	values[0] = CStringGetTextDatum(e->name);
	values[1] = CStringGetTextDatum(softmig_operation_key);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT 1 FROM softmig.remote_operations WHERE migration OPERATOR(pg_catalog.=) $1 "
							  "AND key OPERATOR(pg_catalog.=) ($2 COLLATE pg_catalog.\"C\")",
							  2, (Oid[]) {TEXTOID, TEXTOID}, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.remote_operations failed");
	found = SPI_processed > 0;
	if (found)
		ledger_error(e->name, softmig_operation_key, values);
	SPI_finish();
}

/*
 * refuse_fenced
 *		SM001 for a write that meets a switch of write authority in progress.
 */
static void
refuse_fenced(TriggerData *td, Endpoint *e)
{
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
			 errmsg("%s on table \"%s\" refused: cross-database migration \"%s\" is switching its write authority",
					operation_name(td), RelationGetRelationName(td->tg_relation), e->name),
			 errdetail("Writes stop on both databases until the other one has applied every change up to the switch (state %s).",
					   softmig_state_name(e->state)),
			 errhint("Retry shortly, with the same operation key; softmig.status on the target database shows the switch.")));
}

PG_FUNCTION_INFO_V1(softmig_remote_legacy_guard);
/*
 * softmig_remote_legacy_guard
 *		BEFORE statement trigger on the legacy table in the legacy database
 *		(argument: the migration's name).  Lets a write through only while
 *		this database is the write authority (state mirrored, no switch in
 *		progress) and claims its operation key then; refuses TRUNCATE.
 *		Fires for local sessions only (ENABLE ORIGIN): the apply worker of
 *		the B -> A subscription writes with session_replication_role =
 *		replica.  Reads the endpoint with the latest snapshot after the
 *		statement's table lock, which a switch holds while it fences.
 */
Datum
softmig_remote_legacy_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Endpoint   *e;

	require_statement_trigger(fcinfo, "softmig._remote_legacy_guard");
	e = load_endpoint(trigger_arg(td, 0));
	if (e == NULL || e->state == SM_LEGACY)
		return PointerGetDatum(NULL);	/* not (or no longer) managed */

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
				 errmsg("TRUNCATE on table \"%s\" refused: cross-database migration \"%s\" is in state %s",
						RelationGetRelationName(td->tg_relation), e->name, softmig_state_name(e->state)),
				 errdetail("The table is replicated to the target database row by row."),
				 errhint("Delete the rows with DELETE while this table is the write authority.")));
	if (e->fenced || e->state != SM_MIRRORED)
		refuse_if_applied(e);
	if (e->fenced)
		refuse_fenced(td, e);
	if (e->state == SM_MIRRORED)
	{
		SoftmigMigration m;

		memset(&m, 0, sizeof(m));
		m.id = e->migration_id;
		m.name = e->name;
		m.state = e->state;
		m.options = e->options;
		softmig_opkey_claim(&m, td->tg_relation, SIDE_LEGACY);
		return PointerGetDatum(NULL);
	}
	if (e->state == SM_CUTOVER)
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
				 errmsg("%s on table \"%s\" refused: cross-database migration \"%s\" is in state cutover and the legacy table is frozen",
						operation_name(td), RelationGetRelationName(td->tg_relation), e->name),
				 errhint("Write to the target table in the target database.")));
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
			 errmsg("%s on table \"%s\" refused: cross-database migration \"%s\" is in state %s",
					operation_name(td), RelationGetRelationName(td->tg_relation), e->name,
					softmig_state_name(e->state)),
			 errdetail("In state %s the write authority is the target table in the target database; this table is its projection, kept by logical replication.",
					   softmig_state_name(e->state)),
			 errhint("Write to the target table in the target database instead, with the same operation key.")));
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(softmig_remote_copy_guard);
/*
 * softmig_remote_copy_guard
 *		BEFORE statement trigger on the landing copy in the target database
 *		(arguments: local migration id, migration name).  The copy takes
 *		replicated changes (which do not fire it) and softmig's own
 *		projection (which writes under the loop guard); every other write,
 *		and TRUNCATE, is refused: it would be in one database only.
 */
Datum
softmig_remote_copy_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	int32		id;

	require_statement_trigger(fcinfo, "softmig._remote_copy_guard");
	id = pg_strtoint32(trigger_arg(td, 0));
	if (softmig_mirroring(id) && !TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		return PointerGetDatum(NULL);
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_WRITE_REFUSED),
			 errmsg("%s on table \"%s\" refused: it is the landing copy of the legacy table of cross-database migration \"%s\"",
					operation_name(td), RelationGetRelationName(td->tg_relation), trigger_arg(td, 1)),
			 errdetail("The copy takes the changes replicated from the legacy database, and in new_write the projection of the target; a write made here would exist in this database only."),
			 errhint("Write to the write authority: the legacy table in the legacy database up to mirrored, the target table from new_write on.")));
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(softmig_remote_target_guard);
/*
 * softmig_remote_target_guard
 *		BEFORE statement trigger on the target in the target database
 *		(argument: the migration's name): refuses writes while a switch of
 *		write authority fences this database, and, while this database is
 *		not the write authority, a write whose operation key was already
 *		applied (23505, refuse_if_applied).  Everything else is the
 *		business of the migration's own guard, which fires after it.
 */
Datum
softmig_remote_target_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Endpoint   *e;

	require_statement_trigger(fcinfo, "softmig._remote_target_guard");
	e = load_endpoint(trigger_arg(td, 0));
	if (e == NULL)
		return PointerGetDatum(NULL);
	/* this database is not the write authority: a replay is refused as one */
	if ((e->fenced || e->state < SM_NEW_WRITE) && !softmig_mirroring(e->migration_id))
		refuse_if_applied(e);
	if (e->fenced)
		refuse_fenced(td, e);
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(softmig_remote_apply);
/*
 * softmig_remote_apply
 *		AFTER ROW trigger on the landing copy, ENABLE REPLICA (argument: the
 *		local migration id): the apply worker fires row triggers only, so
 *		each replicated row is handed to softmig_write_trigger as a
 *		statement with a one-row transition table (OLD and NEW for an
 *		UPDATE), and mirrored into the target in the apply transaction by
 *		exactly the code that mirrors local writes.  The row's tuples are
 *		the firing relation's (the landing copy or its partition), as the
 *		plans prepared for that relation expect.  Errors stop the apply,
 *		which retries the transaction (nothing is applied half).
 */
Datum
softmig_remote_apply(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerData stmt;
	Trigger		tg;
	Tuplestorestate *oldrows = NULL;
	Tuplestorestate *newrows = NULL;
	LOCAL_FCINFO(inner, 0);

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._remote_apply must be an AFTER ROW trigger for INSERT, UPDATE or DELETE")));
	(void) trigger_arg(td, 0);

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		newrows = tuplestore_begin_heap(false, false, work_mem);
		tuplestore_puttupleslot(newrows, TRIGGER_FIRED_BY_INSERT(td->tg_event) ?
								td->tg_trigslot : td->tg_newslot);
	}
	if (TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		oldrows = tuplestore_begin_heap(false, false, work_mem);
		tuplestore_puttupleslot(oldrows, td->tg_trigslot);
	}

	tg = *td->tg_trigger;
	tg.tgnewtable = newrows ? SM_NEW_TABLE : NULL;
	tg.tgoldtable = oldrows ? SM_OLD_TABLE : NULL;
	memset(&stmt, 0, sizeof(stmt));
	stmt.type = T_TriggerData;
	stmt.tg_event = (td->tg_event & TRIGGER_EVENT_OPMASK) | TRIGGER_EVENT_AFTER;
	stmt.tg_relation = td->tg_relation;
	stmt.tg_trigger = &tg;
	stmt.tg_newtable = newrows;
	stmt.tg_oldtable = oldrows;

	InitFunctionCallInfoData(*inner, NULL, 0, InvalidOid, (Node *) &stmt, NULL);
	(void) softmig_write_trigger(inner);

	if (newrows)
		tuplestore_end(newrows);
	if (oldrows)
		tuplestore_end(oldrows);
	return PointerGetDatum(NULL);
}

/*
 * softmig_remote_marker_tag
 *		The advisory lock of parity marker id (locktype advisory in
 *		pg_locks, classid and objid the two halves of the id, objsubid 5).
 */
void
softmig_remote_marker_tag(LOCKTAG *tag, int64 id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) ((uint64) id >> 32),
						 (uint32) id, SM_MARKER_SUBKEY);
}

PG_FUNCTION_INFO_V1(softmig_remote_marker);
/*
 * softmig_remote_marker
 *		AFTER INSERT ROW trigger on softmig.remote_markers, ENABLE ALWAYS:
 *		a parity marker waits (SHARE) for its advisory lock and lets it go
 *		at once.  In the database downstream of the replication the parity
 *		session holds that lock while it takes its snapshot, so the apply
 *		worker stops right here, with every change committed before the
 *		marker applied and none after; elsewhere nobody holds it.
 */
Datum
softmig_remote_marker(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	bool		isnull;
	Datum		kind;
	Datum		id;
	LOCKTAG		tag;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._remote_marker must be a ROW trigger for INSERT")));
	desc = RelationGetDescr(td->tg_relation);
	kind = heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "kind"), desc, &isnull);
	if (isnull || strcmp(TextDatumGetCString(kind), "parity") != 0)
		return PointerGetDatum(NULL);
	id = heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "id"), desc, &isnull);
	softmig_remote_marker_tag(&tag, DatumGetInt64(id));
	(void) LockAcquire(&tag, ShareLock, false, false);
	LockRelease(&tag, ShareLock, false);
	return PointerGetDatum(NULL);
}

/*
 * ledger_error
 *		Raise 23505 for an operation key that the other database of
 *		cross-database migration name applied first (already in
 *		softmig.remote_operations).  Reads the winner's row; the caller is
 *		connected to SPI.
 */
static void
ledger_error(const char *name, const char *key, Datum *values)
{
	char	   *when = "?";
	char	   *side = "?";
	char	   *where = "?";
	char	   *who = "?";

	if (SPI_execute_with_args("SELECT pg_catalog.to_char(claimed_at, 'YYYY-MM-DD HH24:MI:SS.USOF'), "
							  "side::pg_catalog.text, claimed_in, claimed_by::pg_catalog.text "
							  "FROM softmig.remote_operations WHERE migration OPERATOR(pg_catalog.=) $1 "
							  "AND key OPERATOR(pg_catalog.=) ($2 COLLATE pg_catalog.\"C\")",
							  2, (Oid[]) {TEXTOID, TEXTOID}, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		when = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		side = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		where = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		who = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("operation key \"%s\" of migration \"%s\" was already applied at %s on the %s side",
					key, name, when, side),
			 errdetail("It was claimed by role \"%s\" in database %s and reached this database with the replicated data. This transaction writes nothing: the key is checked before the first row.",
					   who, where),
			 errhint("A retry of an operation that was already applied must not apply it again: treat this as success. A new operation needs a new key.")));
}

PG_FUNCTION_INFO_V1(softmig_remote_ledger);
/*
 * softmig_remote_ledger
 *		AFTER INSERT ROW trigger on softmig.operations (a claim just made by
 *		opkey.c, as the catalog owner).  When the claim belongs to a
 *		cross-database migration and this database is its write authority,
 *		copy it into softmig.remote_operations, the ledger that is
 *		replicated with the data; a key already there was applied in the
 *		other database: 23505, and the claim rolls back with the
 *		statement.  Locks: those of the insert (the primary key).
 */
Datum
softmig_remote_ledger(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static const char *const cols[] = {"migration_id", "key", "side", "relation", "state",
	"claimed_at", "xid", "claimed_by"};
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	Datum		values[lengthof(cols)];
	char		nulls[lengthof(cols)];
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event) || !TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._remote_ledger must be an AFTER INSERT ROW trigger")));
	desc = RelationGetDescr(td->tg_relation);
	for (int i = 0; i < lengthof(cols); i++)
	{
		char	   *v = SPI_getvalue(td->tg_trigtuple, desc, SPI_fnumber(desc, cols[i]));

		nulls[i] = v ? ' ' : 'n';
		values[i] = i == 0 ? Int32GetDatum(v ? pg_strtoint32(v) : 0) :
			(v ? CStringGetTextDatum(v) : (Datum) 0);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
	{
		Oid			argtypes[lengthof(cols)] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID};

		/* the authority: legacy database up to mirrored, target database after */
		plan = softmig_prepare_kept(
									"WITH r AS (SELECT name FROM softmig.remote_migrations "
									"  WHERE migration_id OPERATOR(pg_catalog.=) $1 AND NOT fenced "
									"    AND CASE side WHEN 'legacy' THEN state OPERATOR(softmig.=) 'mirrored' "
									"                  ELSE state OPERATOR(softmig.>=) 'new_write' END), "
									"ins AS (INSERT INTO softmig.remote_operations "
									"  (migration, key, side, relation, state, claimed_at, xid, claimed_by, claimed_in) "
									"  SELECT r.name, $2, $3::softmig.side, $4, $5::softmig.state, "
									"         $6::pg_catalog.timestamptz, $7, $8::pg_catalog.name, "
									"         pg_catalog.format('%s (system %s)', pg_catalog.current_database(), "
									"                           (SELECT c.system_identifier FROM pg_catalog.pg_control_system() c)) FROM r "
									"  ON CONFLICT (migration, key) DO NOTHING RETURNING 1) "
									"SELECT (SELECT r.name FROM r), (SELECT pg_catalog.count(*) FROM ins)",
									lengthof(cols), argtypes);
	}
	if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "softmig: copying an operation key claim failed");
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		char	   *name = SPI_getvalue(t, SPI_tuptable->tupdesc, 1);
		int64		inserted = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));

		if (name != NULL && inserted == 0)
		{
			Datum		lv[2];

			lv[0] = CStringGetTextDatum(name);
			lv[1] = values[1];
			ledger_error(name, TextDatumGetCString(values[1]), lv);
		}
	}
	SPI_finish();
	return PointerGetDatum(NULL);
}

/* A kept "is this row there already" plan per table (two tables use it). */
typedef struct OncePlan
{
	Oid			relid;
	SPIPlanPtr	plan;
	struct OncePlan *next;
} OncePlan;

static OncePlan *once_plans = NULL;

PG_FUNCTION_INFO_V1(softmig_remote_replicated_once);
/*
 * softmig_remote_replicated_once
 *		BEFORE INSERT ROW trigger, ENABLE REPLICA, on softmig.remote_operations
 *		and softmig.remote_markers (arguments: the two primary key columns):
 *		a row the apply worker (or the initial synchronization) brings that
 *		this database already holds is skipped (NULL) instead of stopping
 *		the replication with a unique violation; the first one stays.  A
 *		kept plan per table, prepared on first use.
 */
Datum
softmig_remote_replicated_once(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	Datum		values[2];
	Oid			types[2];
	bool		isnull;
	bool		known;
	OncePlan   *op;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event) || !TRIGGER_FIRED_BEFORE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("softmig._remote_replicated_once must be a BEFORE INSERT ROW trigger")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	for (int i = 0; i < 2; i++)
	{
		int			att = SPI_fnumber(desc, trigger_arg(td, i));

		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" does not exist",
							trigger_arg(td, i), RelationGetRelationName(rel))));
		values[i] = heap_getattr(td->tg_trigtuple, att, desc, &isnull);
		types[i] = TupleDescAttr(desc, att - 1)->atttypid;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (op = once_plans; op; op = op->next)
		if (op->relid == RelationGetRelid(rel))
			break;
	if (op == NULL)
	{
		char	   *sql = psprintf("SELECT 1 FROM %s WHERE %s OPERATOR(pg_catalog.=) $1 AND %s OPERATOR(pg_catalog.=) $2",
								   softmig_qualified_relname(RelationGetRelid(rel)),
								   quote_identifier(trigger_arg(td, 0)), quote_identifier(trigger_arg(td, 1)));

		op = MemoryContextAllocZero(TopMemoryContext, sizeof(OncePlan));
		op->plan = softmig_prepare_kept(sql, 2, types);
		op->relid = RelationGetRelid(rel);
		op->next = once_plans;
		once_plans = op;
	}
	if (SPI_execute_plan(op->plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading table \"%s\" failed", RelationGetRelationName(rel));
	known = SPI_processed > 0;
	SPI_finish();
	return known ? PointerGetDatum(NULL) : PointerGetDatum(td->tg_trigtuple);
}

/*
 * step_xact_callback
 *		Forget the step mark at the end of every transaction.
 */
static void
step_xact_callback(XactEvent event, void *arg)
{
	stepping = false;
}

/*
 * step_subxact_callback
 *		A subtransaction that aborts takes the mark with it (the
 *		coordinator sets it in the transaction of a step, never in a
 *		subtransaction it expects to roll back).
 */
static void
step_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		stepping = false;
}

PG_FUNCTION_INFO_V1(softmig_remote_step_mark);
/*
 * softmig_remote_step_mark
 *		softmig._remote_step_mark(on boolean) -> boolean: mark (or unmark)
 *		that the cross-database coordinator is changing the local
 *		migration, whose state, triggers and definition it alone may change
 *		(see _set_state); returns the previous mark.  Forgotten at the end
 *		of the transaction.  EXECUTE is revoked from PUBLIC.
 */
Datum
softmig_remote_step_mark(PG_FUNCTION_ARGS)
{
	bool		prev = stepping;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(step_xact_callback, NULL);
		RegisterSubXactCallback(step_subxact_callback, NULL);
		xact_callback_registered = true;
	}
	stepping = PG_GETARG_BOOL(0);
	PG_RETURN_BOOL(prev);
}

PG_FUNCTION_INFO_V1(softmig_remote_stepping);
/*
 * softmig_remote_stepping
 *		softmig._remote_stepping(): is the cross-database coordinator
 *		changing a local migration right now?
 */
Datum
softmig_remote_stepping(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(stepping);
}

PG_FUNCTION_INFO_V1(softmig_remote_stop_after);
/*
 * softmig_remote_stop_after
 *		softmig._remote_stop_after(step text) -> boolean: is the test hook
 *		softmig.remote_stop_after set to this step?  The coordinator then
 *		stops right after committing the step, as if it had crashed there.
 */
Datum
softmig_remote_stop_after(PG_FUNCTION_ARGS)
{
	char	   *step = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_BOOL(remote_stop_after != NULL && remote_stop_after[0] != '\0' &&
				   strcmp(remote_stop_after, step) == 0);
}

/*
 * softmig_remote_init
 *		Define softmig.remote_timeout and the test hook
 *		softmig.remote_stop_after (from _PG_init, before the softmig prefix
 *		is reserved).
 */
void
softmig_remote_init(void)
{
	DefineCustomStringVariable("softmig.remote_stop_after",
							   "Test hook: a cross-database switch stops right after committing this step.",
							   "Empty disables it.  For crash tests only.",
							   &remote_stop_after,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("softmig.remote_timeout",
							"How long a step of a cross-database state change waits for the other database.",
							"Applying up to a fence marker, a subscription's workers stopping, a slot being released.",
							&softmig_remote_timeout,
							60000, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}
