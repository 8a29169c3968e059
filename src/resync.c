/*-------------------------------------------------------------------------
 *
 * resync.c
 *	  Re-sync from the authoritative table: one entity (release of a
 *	  quarantine, softmig._resync_key) or every row (shadow_enable,
 *	  softmig._resync_all) is written again on the authoritative side by a
 *	  no-op UPDATE, so the write triggers project it afresh, and an entity
 *	  the authority no longer holds is deleted on the other side; and the
 *	  typing of an entity key given as jsonb (softmig._key_typed).  Each
 *	  statement runs as the owner of the table it writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "softmig.h"
#include "backfillint.h"
#include "onetomany.h"

/*
 * touch_forced
 *		Run the no-op UPDATE touch with softmig_resync_forcing raised, so
 *		every member of a split or a merge re-projects the touched rows.
 *		Returns the rows touched.
 */
static uint64
touch_forced(const char *touch, int n, Oid *argtypes, Datum *values, char *nulls)
{
	softmig_resync_forcing = true;
	PG_TRY();
	{
		softmig_spi_expect(SPI_execute_with_args(touch, n, argtypes, values, nulls, false, 0),
						   SPI_OK_UPDATE, "touch the authoritative row");
	}
	PG_FINALLY();
	{
		softmig_resync_forcing = false;
	}
	PG_END_TRY();
	return SPI_processed;
}

/*
 * touch_or_delete
 *		Helper of resync: run "touch" (a no-op UPDATE of the authoritative
 *		row, which makes the write triggers re-project it) as the owner of
 *		the table it touches; if it changed no row, run "remove" (delete the
 *		other side's row, or clear an attribute member's columns of it:
 *		remove_rc is its SPI result code) as the owner of that table with
 *		the loop guard raised.  Both take the key as one jsonb parameter.
 */
static uint64
touch_or_delete(int32 id, const char *touch, Oid touch_owner, const char *remove, Oid remove_owner,
				int remove_rc, int n, Datum *values, char *nulls)
{
	Oid			argtypes[64];
	uint64		done;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	for (int i = 0; i < n; i++)
		argtypes[i] = JSONBOID;
	softmig_enter_owner_context(touch_owner, &save_nest, &save_user, &save_sec);
	done = touch_forced(touch, n, argtypes, values, nulls);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	if (done > 0)
		return done;
	softmig_enter_owner_context(remove_owner, &save_nest, &save_user, &save_sec);
	softmig_mirror_enter(id);
	PG_TRY();
	{
		softmig_spi_expect(SPI_execute_with_args(remove, n, argtypes, values, nulls, false, 0),
						   remove_rc, "delete or clear the other side's row");
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	done = SPI_processed;
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	return done;
}

/*
 * touch_column
 *		A column of relid that an UPDATE may set to itself, to make the
 *		write path re-project a row: preferred (a key column) unless it is
 *		GENERATED ALWAYS AS IDENTITY, which no UPDATE may set; then the
 *		first column that is neither that nor generated.
 */
static char *
touch_column(Oid relid, char *preferred)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *result = NULL;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (strcmp(NameStr(att->attname), preferred) == 0 &&
			att->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
			result = preferred;
	}
	for (int i = 0; result == NULL && i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && !att->attgenerated &&
			att->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
			result = pstrdup(NameStr(att->attname));
	}
	table_close(rel, NoLock);
	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table %s has no column an UPDATE may set", get_rel_name(relid)),
				 errdetail("Every column is generated or GENERATED ALWAYS AS IDENTITY.")));
	return result;
}

/*
 * append_clear_list
 *		"c1 = DEFAULT, c2 = DEFAULT" for the non-key columns d maps: what an
 *		attribute member's row carried in the shared table goes back to NULL
 *		or the column's default (as mapping.c's append_attribute_clear).
 */
static void
append_clear_list(StringInfo buf, SoftmigDest *d)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, d->cols)
	{
		if (softmig_str_member(d->keycols, lfirst(lc)))
			continue;
		appendStringInfo(buf, "%s%s = DEFAULT", n++ ? ", " : "", quote_identifier(lfirst(lc)));
	}
}

PG_FUNCTION_INFO_V1(softmig_resync_key);
/*
 * softmig_resync_key
 *		softmig._resync_key(migration_id, key): make the other side of one
 *		entity (legacy key jsonb) equal to the authoritative side again, as
 *		the tables' owners: the authoritative row is touched so the ordinary write
 *		path re-projects it (a member of a split or a merge too, though the
 *		touch changes none of its columns: softmig_resync_forcing), or, when
 *		it no longer exists, the other side's row is deleted; for an
 *		attribute member whose other side is the table the members share
 *		(a split in new_write or new_read, a merge in mirrored) its columns
 *		of that row are cleared instead, as its live delete does, for the
 *		owner decides whether the entity exists.  Used by release().
 *		Returns rows affected.
 */
Datum
softmig_resync_key(PG_FUNCTION_ARGS)
{
	SoftmigMigration *m = softmig_require_migration(PG_GETARG_INT32(0));
	Jsonb	   *key = PG_GETARG_JSONB_P(1);
	BfContext  *c;
	StringInfoData touch;
	StringInfoData remove;
	StringInfoData match;
	Datum		values[64];
	char		nulls[64];
	int			n = 0;
	int			param = 1;
	uint64		done = 0;
	bool		clear;
	int			rc;
	ListCell   *e;
	ListCell   *t;

	if (m->state == SM_LEGACY || m->state == SM_CUTOVER)
		PG_RETURN_INT64(0);		/* nothing is projected in these states */
	if (m->one_to_many)			/* the entity's set (onetomany.c) */
		PG_RETURN_INT64(softmig_otm_resync_keys(m, JsonbPGetDatum(key)));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	c = softmig_bf_context(m);
	softmig_bf_bound_values(c, key, values, nulls, &n);

	/* legacy rows of this key: "ROW(k...) = ROW(<the key in $1>)" */
	initStringInfo(&match);
	softmig_bf_append_row_bound(&match, c, "=", &param);

	initStringInfo(&touch);
	initStringInfo(&remove);
	/* an attribute member's other side is the shared table: clear, not delete */
	clear = m->split_owner != 0 && (m->state == SM_MIRRORED) == m->split_merge;
	if (m->state == SM_MIRRORED)
	{
		char	   *col = touch_column(m->legacy, linitial(c->lkeys));

		appendStringInfo(&touch, "UPDATE %s SET %s = %s WHERE %s", c->legacy,
						 quote_identifier(col), quote_identifier(col), match.data);
		if (clear)
		{
			appendStringInfo(&remove, "UPDATE %s AS softmig_t SET ", c->target);
			append_clear_list(&remove, c->fwd);
			appendStringInfoString(&remove, " WHERE ROW(");
		}
		else
			appendStringInfo(&remove, "DELETE FROM %s AS softmig_t WHERE ROW(", c->target);
	}
	else
	{
		char	   *col = touch_column(m->target, linitial(c->fwd->keycols));

		appendStringInfo(&touch, "UPDATE %s AS softmig_t SET %s = softmig_t.%s WHERE ROW(", c->target,
						 quote_identifier(col), quote_identifier(col));
		if (clear)
		{
			appendStringInfo(&remove, "UPDATE %s SET ", c->legacy);
			append_clear_list(&remove, c->bwd);
			appendStringInfo(&remove, " WHERE %s", match.data);
		}
		else
			appendStringInfo(&remove, "DELETE FROM %s WHERE %s", c->legacy, match.data);
	}
	/* target rows of this key: the backward key mapping over target columns */
	{
		StringInfo	tgt = (m->state == SM_MIRRORED) ? &remove : &touch;
		int			i = 0;

		forboth(e, c->bwd->keyexprs, t, c->bwd->keytypes)
		{
			appendStringInfo(tgt, "%s(%s\n)::%s", i++ ? ", " : "", (char *) lfirst(e), (char *) lfirst(t));
		}
		appendStringInfoString(tgt, ") = ROW(");
		softmig_bf_append_key_values(tgt, c, 1);
		appendStringInfoChar(tgt, ')');
	}

	rc = clear ? SPI_OK_UPDATE : SPI_OK_DELETE;
	if (m->state == SM_MIRRORED)
		done = touch_or_delete(m->id, touch.data, softmig_rel_owner(m->legacy),
							   remove.data, softmig_rel_owner(m->target), rc, n, values, nulls);
	else
		done = touch_or_delete(m->id, touch.data, softmig_rel_owner(m->target),
							   remove.data, softmig_rel_owner(m->legacy), rc, n, values, nulls);
	SPI_finish();
	PG_RETURN_INT64((int64) done);
}

/*
 * bwd_keyjson
 *		The legacy-key jsonb of a target row: backward key expressions.
 */
static char *
bwd_keyjson(BfContext *c)
{
	return softmig_json_object_sql(c->bwd->keycols, c->bwd->keyexprs);
}

PG_FUNCTION_INFO_V1(softmig_resync_all);
/*
 * softmig_resync_all
 *		softmig._resync_all(migration_id): make legacy equal to the target's
 *		projection again (new_write/new_read), as legacy's owner: upsert every
 *		target row through the backward mapping, delete legacy rows the
 *		target lacks.  The caller holds both tables locked against writers.
 *		Used by shadow_enable().  Returns rows written.
 */
Datum
softmig_resync_all(PG_FUNCTION_ARGS)
{
	SoftmigMigration *m = softmig_require_migration(PG_GETARG_INT32(0));
	BfContext  *c;
	StringInfoData buf;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	uint64		done = 0;

	if (m->one_to_many)			/* sets per entity (onetomany.c) */
		PG_RETURN_INT64(softmig_otm_resync_all(m));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	c = softmig_bf_context(m);
	initStringInfo(&buf);

	/* upsert every target row into legacy */
	softmig_append_mapped_insert(&buf, c->legacy, "softmig_t",
								 c->bwd->cols, c->bwd->exprs);
	/* quarantined entities stay as they are on both sides */
	appendStringInfo(&buf, " FROM %s AS softmig_src WHERE NOT (%s OPERATOR(pg_catalog.=) ANY (ARRAY("
					 "SELECT q.key FROM softmig.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) %d)))",
					 c->target, bwd_keyjson(c), m->id);
	/* the target's own entities (NULL correlation key) have no legacy row */
	softmig_append_key_not_null(&buf, c->fwd->keycols, "softmig_src.");
	appendStringInfo(&buf, " ON CONFLICT (%s) DO ", c->keylist);
	(void) softmig_append_conflict_update(&buf, c->bwd->cols, c->lkeys, c->bwd->always_cols);

	/* as legacy's owner: it writes legacy through the backward mapping */
	softmig_enter_owner_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec);
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		softmig_spi_expect(SPI_execute(buf.data, false, 0), SPI_OK_INSERT, "re-project the target into legacy");
		done = SPI_processed;

		/* delete legacy rows the target does not have */
		resetStringInfo(&buf);
		appendStringInfo(&buf, "DELETE FROM %s AS softmig_l WHERE NOT EXISTS (SELECT 1 FROM (SELECT ", c->legacy);
		softmig_append_key_list(&buf, c->bwd->keyexprs, c->bwd->keytypes);
		appendStringInfo(&buf, " FROM %s) AS softmig_s WHERE ", c->target);
		softmig_append_key_match(&buf, "softmig_l", c->bwd->keycols, c->bwd->keyops,
								 "softmig_s");
		appendStringInfo(&buf, ") AND NOT (%s OPERATOR(pg_catalog.=) ANY (ARRAY("
						 "SELECT q.key FROM softmig.quarantine q WHERE q.migration_id OPERATOR(pg_catalog.=) %d)))",
						 c->keyjson, m->id);
		softmig_spi_expect(SPI_execute(buf.data, false, 0), SPI_OK_DELETE, "delete legacy rows the target lacks");
		done += SPI_processed;
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	SPI_finish();
	PG_RETURN_INT64((int64) done);
}

PG_FUNCTION_INFO_V1(softmig_normalize_key);
/*
 * softmig_normalize_key
 *		softmig._key_typed(migration_id, key): the entity key with each value
 *		cast to its legacy key column's type, e.g. {"id": "4"} -> {"id": 4}.
 *		The casts run as the legacy table's owner (a domain's CHECK is that
 *		owner's code, never to be run as the catalog owner).  The caller
 *		validated the key's shape.
 */
Datum
softmig_normalize_key(PG_FUNCTION_ARGS)
{
	SoftmigMigration *m = softmig_require_migration(PG_GETARG_INT32(0));
	Datum		key = PG_GETARG_DATUM(1);
	StringInfoData buf;
	StringInfoData cols;
	ListCell   *k;
	ListCell   *t;
	List	   *keycols = m->legacy_key;
	List	   *keytypes = NIL;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	Datum		result;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (m->one_to_many)
	{
		/* a set per entity: the types of legacy's key columns themselves */
		foreach(k, keycols)
			keytypes = lappend(keytypes, softmig_otm_col_type(m->legacy, lfirst(k)));
	}
	else
	{
		SoftmigDest *bwd = softmig_build_dest(m, SIDE_TARGET);	/* legacy key columns
																 * and types */

		keycols = bwd->keycols;
		keytypes = bwd->keytypes;
	}

	/*
	 * jsonb_to_record reads each value as jsonb_populate_record does, so a
	 * composite or array key given as a JSON object or array works too.
	 */
	initStringInfo(&cols);
	forboth(k, keycols, t, keytypes)
		appendStringInfo(&cols, "%s%s %s", cols.len ? ", " : "",
						 quote_identifier(lfirst(k)), (char *) lfirst(t));
	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT %s FROM pg_catalog.jsonb_to_record($1) AS softmig_b(%s)",
					 softmig_json_object_sql(keycols,
											 softmig_quoted_idents(keycols, "softmig_b.")),
					 cols.data);
	values[0] = key;
	softmig_enter_owner_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec);
	if (SPI_execute_with_args(buf.data, 1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "softmig: typing the key failed");
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}
