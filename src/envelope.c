/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  The write path's side of the rollback envelope: recording rows the
 *	  legacy table cannot represent (which closes the envelope), refusing
 *	  them under on_new_only = reject, and telling which errors of a
 *	  projection mean "legacy cannot hold this"; and the write path's side
 *	  of quarantine, refusing writes to a quarantined entity.  The SQL side
 *	  (closing, quarantine and release, shadow mode) is
 *	  src/install/65_envelope.sql.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "softmig.h"
#include "sqlstate.h"

/*
 * softmig_note_new_only
 *		Record rows legacy cannot represent: close the rollback envelope on
 *		the first one, count them, remember their keys (keys may be NULL when
 *		the backward mapping itself failed).  Runs softmig._note_new_only as
 *		the catalog owner; the caller stays in whatever context it was and
 *		holds an SPI connection.
 */
void
softmig_note_new_only(SoftmigMigration *m, int64 n, Datum keys, bool keys_null, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[5] = {INT4OID, INT8OID, JSONBOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = Int32GetDatum(m->id);
	values[1] = Int64GetDatum(n);
	values[2] = keys;
	nulls[2] = keys_null ? 'n' : ' ';
	values[3] = CStringGetTextDatum(reason);
	values[4] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	softmig_catalog_exec(&plan, "SELECT softmig._note_new_only($1, $2, $3, $4, $5)",
						 5, argtypes, values, nulls, SPI_OK_SELECT, "recording new-only state");
}

/*
 * softmig_refuse_new_only
 *		on_new_only = reject and the envelope still open: the write fails.
 */
void
softmig_refuse_new_only(SoftmigMigration *m, Relation rel, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_SOFTMIG_NEW_ONLY),
			 errmsg("write to table \"%s\" refused: it creates state the legacy table of migration \"%s\" cannot represent",
					RelationGetRelationName(rel), m->name),
			 errdetail("%s", what),
			 errhint("Option on_new_only is reject: a DBA approves new-only state with softmig.close_envelope(%s, '<reason>'), which ends the rollback envelope.",
					 quote_literal_cstr(m->name))));
}

/*
 * softmig_unrepresentable
 *		Errors that mean "legacy cannot hold this value": data exceptions
 *		(class 22) and integrity violations (class 23) raised by the
 *		backward mapping or by legacy's constraints.
 */
bool
softmig_unrepresentable(int sqlerrcode)
{
	int			cls = ERRCODE_TO_CATEGORY(sqlerrcode);

	return cls == ERRCODE_DATA_EXCEPTION || cls == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION;
}

/*
 * softmig_refuse_quarantined
 *		Refuse the statement writing rel (SM005) if one of keys (a jsonb
 *		array of legacy keys, typed like legacy's key columns) is a
 *		quarantined entity of m.  The lookup runs as the catalog owner with
 *		the latest snapshot (a quarantine committed while we waited counts).
 *		The caller is connected to SPI.
 */
void
softmig_refuse_quarantined(SoftmigMigration *m, Relation rel, Datum keys)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {INT4OID, JSONBOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	values[0] = Int32GetDatum(m->id);
	values[1] = keys;
	softmig_enter_owner_context(softmig_catalog_owner(), &save_nest, &save_user, &save_sec);
	if (plan == NULL)
	{
		plan = softmig_prepare_kept("SELECT q.key::pg_catalog.text, q.reason FROM softmig.quarantine q "
									"WHERE q.migration_id OPERATOR(pg_catalog.=) $1 AND q.key OPERATOR(pg_catalog.=) ANY "
									"(SELECT k FROM pg_catalog.jsonb_array_elements($2) AS k) LIMIT 1",
									2, argtypes);
	}
	if (SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: quarantine check failed");
	if (SPI_processed > 0)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *why = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_QUARANTINED),
				 errmsg("write to table \"%s\" refused: entity %s of migration \"%s\" is quarantined",
						RelationGetRelationName(rel), key, m->name),
				 errdetail("Quarantined because: %s", why),
				 errhint("Fix it forward, then softmig.release(%s, %s) re-syncs it and allows writes again.",
						 quote_literal_cstr(m->name), quote_literal_cstr(key))));
	}
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}
