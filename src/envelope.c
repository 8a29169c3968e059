/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  The write path's side of the rollback envelope: recording rows the
 *	  legacy table cannot represent (which closes the envelope), refusing
 *	  them under on_new_only = reject, and telling which errors of a
 *	  projection mean "legacy cannot hold this".  The SQL side (closing,
 *	  releasing, shadow mode) is src/install/65_envelope.sql.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/rel.h"

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
