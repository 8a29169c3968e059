/*-------------------------------------------------------------------------
 *
 * hydrate.c
 *	  softmig.hydrate(name, rows, as_of): merge target-shaped rows computed
 *	  elsewhere from a snapshot into the target, without letting history
 *	  beat reality.
 *
 *	  Each incoming row is merged with softmig.merge() (merge.c): a field
 *	  takes the hydrated value only if the target owns it (in mirrored the
 *	  mapped fields belong to legacy unless handed over; unmapped fields,
 *	  new_only ones included, belong to the target; from new_write on all
 *	  fields belong to the target) and no live write the snapshot did not
 *	  see touched it.  Freshness is decided by visibility, never by a
 *	  clock.  In mirrored the only fields a hydrate may take belong to the
 *	  target, and only target-side writes (per-field authority, overrides)
 *	  change them; those writes are logged per field with their xid in
 *	  softmig.field_writes, so freshness is exact per field.  From new_write
 *	  on every application write lands on the target, and freshness is per
 *	  row: a row whose xmin is not visible in as_of was written after the
 *	  snapshot and keeps all its live fields.  A key missing from the
 *	  target is inserted only in mirrored and only while legacy still has
 *	  the entity; otherwise it was deleted (or never existed) and stays
 *	  deleted.  For a member of a split or a merge a missing key is not
 *	  inserted from the hydrated row: the entity is re-synced from legacy in
 *	  every member (resync_missing), which creates the member's row only if
 *	  the entity exists, and the hydrated fields then merge into it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "softmig.h"

/*
 * carry_to_legacy
 *		Run the UPDATE that carries hydrated fields to legacy (one jsonb
 *		parameter) with the loop guard of migration id up.  The caller is
 *		connected to SPI and runs as legacy's owner.
 */
static void
carry_to_legacy(int32 id, const char *sql, Oid *argtypes, Datum *values)
{
	softmig_mirror_enter(id);
	PG_TRY();
	{
		softmig_spi_expect(SPI_execute_with_args(sql, 1, argtypes, values, NULL, false, 0),
						   SPI_OK_UPDATE, "carry hydrated fields to legacy");
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
}

/*
 * carry_sql
 *		Mirrored with fields handed to the target: the UPDATE that carries
 *		those fields of the hydrated target rows to the legacy columns that
 *		hold them, as for any target-side write.  Only rows whose carried
 *		columns now differ are written.  $1 is the hydrate's rows.
 */
static char *
carry_sql(SoftmigMigration *m, SoftmigDest *bwd, const char *target, const char *keymatch)
{
	StringInfoData buf;
	const char *legacy = bwd->qualname;
	ListCell   *c2;
	ListCell   *e2;
	int			v = 1;

	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE %s AS \"softmig.l\" SET ", legacy);
	forboth(c2, bwd->cols, e2, bwd->exprs)
	{
		if (!softmig_str_member(m->new_legacy_cols, lfirst(c2)))
			continue;
		appendStringInfo(&buf, "%s%s = \"softmig.s\".softmig_v%d", v > 1 ? ", " : "",
						 quote_identifier(lfirst(c2)), v);
		v++;
	}
	appendStringInfoString(&buf, " FROM (SELECT ");
	v = 1;
	forboth(c2, bwd->cols, e2, bwd->exprs)
	{
		if (!softmig_str_member(m->new_legacy_cols, lfirst(c2)))
			continue;
		appendStringInfo(&buf, "(%s\n) AS softmig_v%d, ", (char *) lfirst(e2), v);
		v++;
	}
	softmig_append_key_list(&buf, bwd->keyexprs, bwd->keytypes);
	appendStringInfo(&buf, " FROM %s AS \"softmig.t\" WHERE EXISTS (SELECT 1 FROM "
					 "pg_catalog.jsonb_array_elements($1) AS \"softmig.i\"(img), "
					 "LATERAL pg_catalog.jsonb_populate_record(NULL::%s, \"softmig.i\".img) AS \"softmig.r\" WHERE %s)) AS \"softmig.s\" WHERE ",
					 target, target, keymatch);
	softmig_append_key_match(&buf, "\"softmig.l\"", bwd->keycols, bwd->keyops,
							 "\"softmig.s\"");

	/*
	 * Only rows whose carried columns now differ (compared as text, the one
	 * comparison every type has): the others keep their exact value.
	 */
	appendStringInfoString(&buf, " AND ROW(");
	v = 1;
	forboth(c2, bwd->cols, e2, bwd->exprs)
	{
		if (!softmig_str_member(m->new_legacy_cols, lfirst(c2)))
			continue;
		appendStringInfo(&buf, "%s\"softmig.l\".%s::pg_catalog.text COLLATE pg_catalog.\"C\"", v > 1 ? ", " : "",
						 quote_identifier(lfirst(c2)));
		v++;
	}
	appendStringInfoString(&buf, ") IS DISTINCT FROM ROW(");
	for (int j = 1; j < v; j++)
		appendStringInfo(&buf, "%s\"softmig.s\".softmig_v%d::pg_catalog.text COLLATE pg_catalog.\"C\"", j > 1 ? ", " : "", j);
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/* the hydrated rows ($1), numbered, each as a row of the target (%s) */
#define HYDRATED_ROWS "FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS \"softmig.i\"(img, n), " \
	"LATERAL pg_catalog.jsonb_populate_record(NULL::%s, \"softmig.i\".img) AS \"softmig.r\" "

/*
 * resync_missing
 *		Mirrored, a member of a split or a merge: the entities of the
 *		hydrated rows (rows) that the target lacks are re-synced from legacy
 *		in every member, owner first (softmig._hydrate_resync, as release
 *		does): the owner decides whether the entity exists and creates its
 *		rows, gathering the attribute members' columns.  A hydrated row is
 *		never inserted as it is, for it would create an entity without its
 *		owner or lack the other members' columns.  Returns an int8[] of the
 *		ordinals (from 1) of the rows whose target row the re-sync created,
 *		or (Datum) 0 when there is none; *ncreated is their number.  The
 *		caller is connected to SPI and runs in the catalog context; the reads
 *		of the target run as its owner.  Locks: those of the re-sync's
 *		writes (the entity locks of the write path).
 */
static Datum
resync_missing(SoftmigMigration *m, const char *target, const char *keymatch,
			   const char *keyjson, Datum rows, int64 *ncreated)
{
	StringInfoData buf;
	Oid			argtypes[2];
	Datum		values[2];
	Datum		keys;
	Datum		ords;
	bool		isnull;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	*ncreated = 0;
	argtypes[0] = JSONBOID;
	values[0] = rows;

	/* the rows the target lacks, and their entities' legacy keys */
	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT pg_catalog.array_agg(s.n ORDER BY s.n), "
					 "pg_catalog.jsonb_agg(DISTINCT s.k ORDER BY s.k) FROM (SELECT \"softmig.i\".n, "
					 "(SELECT %s FROM (SELECT \"softmig.r\".*) AS \"softmig.x\") AS k ", keyjson);
	appendStringInfo(&buf, HYDRATED_ROWS, target);
	appendStringInfo(&buf, "WHERE NOT EXISTS (SELECT 1 FROM %s AS \"softmig.t\" WHERE %s)) AS s",
					 target, keymatch);
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	softmig_spi_expect(SPI_execute_with_args(buf.data, 1, argtypes, values, NULL, true, 0),
					   SPI_OK_SELECT, "find the hydrated rows the target lacks");
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	ords = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return (Datum) 0;
	keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

	/* the re-sync: softmig's own function, in the catalog context */
	argtypes[0] = INT4OID;
	argtypes[1] = JSONBOID;
	values[0] = Int32GetDatum(m->id);
	values[1] = keys;
	softmig_spi_expect(SPI_execute_with_args("SELECT softmig._hydrate_resync($1, $2)", 2,
											 argtypes, values, NULL, false, 0),
					   SPI_OK_SELECT, "re-sync the entities the target lacks");

	/* which of those rows the target holds now */
	argtypes[0] = JSONBOID;
	argtypes[1] = INT8ARRAYOID;
	values[0] = rows;
	values[1] = ords;
	resetStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT pg_catalog.array_agg(\"softmig.i\".n), pg_catalog.count(*) ");
	appendStringInfo(&buf, HYDRATED_ROWS, target);
	appendStringInfo(&buf, ", pg_catalog.unnest($2) AS \"softmig.c\"(n) WHERE \"softmig.c\".n OPERATOR(pg_catalog.=) \"softmig.i\".n "
					 "AND EXISTS (SELECT 1 FROM %s AS \"softmig.t\" WHERE %s)", target, keymatch);
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	softmig_spi_expect(SPI_execute_with_args(buf.data, 2, argtypes, values, NULL, false, 0),
					   SPI_OK_SELECT, "find the rows the re-sync created");
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	*ncreated = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (*ncreated == 0)
		return (Datum) 0;
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/*
 * merge_update_sql
 *		The UPDATE that merges the hydrated rows ($1, snapshot $2, authority
 *		$3, default owner $4) into the target's existing rows, field by
 *		field.  A field is fresh (kept) when a live write the snapshot did
 *		not see changed it: in mirrored the fields a hydrate may take belong
 *		to the target and only target-side writes change them, logged per
 *		field in softmig.field_writes; from new_write on per row, by xmin.
 *		Each column takes the merged value only if the merge took it and its
 *		value changed; every other column is assigned its own value, so it
 *		keeps exactly what it holds (a json column its spacing and duplicate
 *		keys, an array its bounds), which a round trip through jsonb would
 *		not.  With count_created, a SELECT counting the rows it changed that
 *		are not among the ordinals $5 (rows a re-sync just created, counted
 *		by the caller).
 */
static char *
merge_update_sql(SoftmigMigration *m, const char *target, const char *setcols, List *colnames,
				 const char *allfields, const char *keyjson, const char *keymatch,
				 bool count_created)
{
	StringInfoData fresh;
	StringInfoData buf;
	ListCell   *k;
	int			i = 0;

	initStringInfo(&fresh);
	if (m->state == SM_MIRRORED)
		appendStringInfo(&fresh,
						 "ARRAY(SELECT fw.field FROM softmig.field_writes fw "
						 "WHERE fw.migration_id OPERATOR(pg_catalog.=) %d "
						 "AND fw.key OPERATOR(pg_catalog.=) (SELECT %s FROM (SELECT \"softmig.t\".*) AS \"softmig.x\") "
						 "AND NOT pg_catalog.pg_visible_in_snapshot(fw.xid, $2))",
						 m->id, keyjson);
	else
		appendStringInfo(&fresh,
						 "CASE WHEN softmig._written_before(\"softmig.t\".xmin, $2) THEN '{}'::text[] "
						 "ELSE ARRAY[%s]::text[] END", allfields);

	initStringInfo(&buf);
	if (count_created)
		appendStringInfoString(&buf, "WITH softmig_u AS (");
	appendStringInfo(&buf, "UPDATE %s AS \"softmig.t\" SET (%s) = (SELECT ", target, setcols);
	foreach(k, colnames)
	{
		appendStringInfo(&buf, "%sCASE WHEN \"softmig.h\".changed OPERATOR(pg_catalog.@>) ARRAY[%s]::pg_catalog.text[] "
						 "THEN (\"softmig.h\".merged_row).%s ELSE \"softmig.t\".%s END",
						 i++ ? ", " : "", quote_literal_cstr(lfirst(k)),
						 quote_identifier(lfirst(k)), quote_identifier(lfirst(k)));
	}
	appendStringInfo(&buf,
					 " FROM (SELECT ARRAY(SELECT f FROM pg_catalog.unnest(softmig_m.taken) AS f "
					 "WHERE (pg_catalog.to_jsonb(\"softmig.t\") OPERATOR(pg_catalog.->) f) IS DISTINCT FROM "
					 "(softmig_m.merged OPERATOR(pg_catalog.->) f)) AS changed, "
					 "pg_catalog.jsonb_populate_record(\"softmig.t\", softmig_m.merged) AS merged_row "
					 "FROM softmig.merge(pg_catalog.to_jsonb(\"softmig.t\"), \"softmig.i\".img, 'new', $3, $4, %s) AS softmig_m"
					 ") AS \"softmig.h\") "
					 HYDRATED_ROWS
					 "WHERE %s AND pg_catalog.to_jsonb(\"softmig.t\") IS DISTINCT FROM "
					 "(softmig.merge(pg_catalog.to_jsonb(\"softmig.t\"), \"softmig.i\".img, 'new', $3, $4, %s)).merged",
					 fresh.data, target, keymatch, fresh.data);
	if (count_created)
		appendStringInfoString(&buf, " RETURNING \"softmig.i\".n) SELECT pg_catalog.count(*) FROM softmig_u "
							   "WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.unnest($5) AS \"softmig.c\"(n) "
							   "WHERE \"softmig.c\".n OPERATOR(pg_catalog.=) softmig_u.n)");
	return buf.data;
}

/*
 * missing_insert_sql
 *		Mirrored, one table pair: the INSERT of the hydrated rows ($1) whose
 *		key the target lacks, only while legacy (bwd: legacy, its key from
 *		target columns) still has the entity; otherwise it was deleted after
 *		the snapshot, or never existed, and stays absent.
 */
static char *
missing_insert_sql(const char *target, const char *cols, const char *keymatch,
				   SoftmigDest *bwd)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "INSERT INTO %s AS \"softmig.t\" (%s) OVERRIDING SYSTEM VALUE "
					 "SELECT %s FROM (SELECT (pg_catalog.jsonb_populate_record(NULL::%s, \"softmig.i\".img)).* "
					 "FROM pg_catalog.jsonb_array_elements($1) AS \"softmig.i\"(img)) AS \"softmig.r\" "
					 "WHERE NOT EXISTS (SELECT 1 FROM %s AS \"softmig.t\" WHERE %s) "
					 "AND EXISTS (SELECT 1 FROM (SELECT ",
					 target, cols, cols, target, target, keymatch);
	softmig_append_key_list(&buf, bwd->keyexprs, bwd->keytypes);
	appendStringInfo(&buf, " FROM (SELECT \"softmig.r\".*) AS \"softmig.x\") AS \"softmig.s\", %s AS \"softmig.l\" WHERE ",
					 bwd->qualname);
	softmig_append_key_match(&buf, "\"softmig.l\"", bwd->keycols, bwd->keyops,
							 "\"softmig.s\"");
	appendStringInfoString(&buf, ") ON CONFLICT DO NOTHING");
	return buf.data;
}

PG_FUNCTION_INFO_V1(softmig_hydrate_exec);
/*
 * softmig_hydrate_exec
 *		softmig._hydrate_exec(migration_id, rows, as_of, authority,
 *		default_owner): the set-based statements of a hydrate, run as the
 *		owners of the tables they write, with the pinned search_path; the caller (SQL) validated
 *		the input shape.  Returns the number of target rows changed.  Locks:
 *		RowExclusiveLock on the target (and on legacy through the
 *		projection in new_write/new_read).
 */
Datum
softmig_hydrate_exec(PG_FUNCTION_ARGS)
{
	SoftmigMigration *m = softmig_require_migration(PG_GETARG_INT32(0));
	Datum		rows = PG_GETARG_DATUM(1);
	Datum		as_of = PG_GETARG_DATUM(2);
	Datum		authority = PG_GETARG_DATUM(3);
	Datum		dflt = PG_GETARG_DATUM(4);
	SoftmigDest *fwd;
	SoftmigDest *bwd;
	Relation	rel;
	TupleDesc	desc;
	StringInfoData cols;
	StringInfoData setcols;
	List	   *colnames = NIL;
	StringInfoData allfields;
	StringInfoData keymatch;
	char	   *keyjson;
	char	   *sql;
	ListCell   *k;
	ListCell   *o;
	Oid			argtypes[5];
	Datum		values[5];
	int			i;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	char	   *target;
	uint64		changed = 0;
	bool		raise_depth;
	bool		shape = (m->split_owner != 0 || m->split_attrs != NIL);
	Datum		created = (Datum) 0;
	int64		ncreated = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	fwd = softmig_build_dest(m, SIDE_LEGACY);	/* the target, its key */
	bwd = softmig_build_dest(m, SIDE_TARGET);	/* legacy, its key from target
												 * columns */
	target = fwd->qualname;

	rel = table_open(m->target, AccessShareLock);
	desc = RelationGetDescr(rel);
	initStringInfo(&cols);
	initStringInfo(&setcols);
	initStringInfo(&allfields);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", quote_identifier(NameStr(att->attname)));
		/* no UPDATE may set an identity ALWAYS column: it keeps its value */
		if (att->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
		{
			appendStringInfo(&setcols, "%s%s", setcols.len ? ", " : "",
							 quote_identifier(NameStr(att->attname)));
			colnames = lappend(colnames, pstrdup(NameStr(att->attname)));
		}
		appendStringInfo(&allfields, "%s%s", allfields.len ? ", " : "",
						 quote_literal_cstr(NameStr(att->attname)));
	}
	table_close(rel, NoLock);

	/* the legacy key of a target row: backward key expressions */
	keyjson = softmig_json_object_sql(bwd->keycols, bwd->keyexprs);

	/* target row <-> incoming row, on the correlation key */
	initStringInfo(&keymatch);
	i = 0;
	forboth(k, fwd->keycols, o, fwd->keyops)
	{
		appendStringInfo(&keymatch, "%s\"softmig.t\".%s %s \"softmig.r\".%s", i++ ? " AND " : "",
						 quote_identifier(lfirst(k)), (char *) lfirst(o), quote_identifier(lfirst(k)));
	}

	argtypes[0] = JSONBOID;
	argtypes[1] = PG_SNAPSHOTOID;
	argtypes[2] = JSONBOID;
	argtypes[3] = get_fn_expr_argtype(fcinfo->flinfo, 4);
	values[0] = rows;
	values[1] = as_of;
	values[2] = authority;
	values[3] = dflt;

	/*
	 * A member of a split or a merge in mirrored: the entities the target
	 * lacks are re-synced from legacy first, then merged into below.
	 */
	if (shape && m->state == SM_MIRRORED)
		created = resync_missing(m, target, keymatch.data, keyjson, rows, &ncreated);
	argtypes[4] = INT8ARRAYOID;
	values[4] = created;

	/*
	 * As the target's owner (it writes the target; in mirrored it also reads
	 * legacy to see which entities still exist), never as the caller.
	 */
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);

	/*
	 * In mirrored the target is legacy's projection: hydrate writes it as
	 * softmig (loop guard up).  From new_write on it is the authority and the
	 * ordinary write path projects the change to legacy.
	 */
	raise_depth = (m->state == SM_MIRRORED);
	if (raise_depth)
		softmig_mirror_enter(m->id);
	PG_TRY();
	{
		/* existing rows: merge field by field */
		sql = merge_update_sql(m, target, setcols.data, colnames, allfields.data,
							   keyjson, keymatch.data, created != (Datum) 0);
		if (created == (Datum) 0)
		{
			softmig_spi_expect(SPI_execute_with_args(sql, 4, argtypes, values, NULL, false, 0),
							   SPI_OK_UPDATE, "hydrate the target's rows");
			changed = SPI_processed;
		}
		else
		{
			bool		isnull;

			softmig_spi_expect(SPI_execute_with_args(sql, 5, argtypes, values, NULL, false, 0),
							   SPI_OK_SELECT, "hydrate the target's rows");
			changed = (uint64) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) +
				(uint64) ncreated;
		}

		/*
		 * missing rows: only in mirrored, only while legacy has the entity
		 * (a member of a split or a merge re-synced them above)
		 */
		if (m->state == SM_MIRRORED && !shape)
		{
			sql = missing_insert_sql(target, cols.data, keymatch.data, bwd);
			softmig_spi_expect(SPI_execute_with_args(sql, 1, argtypes, values, NULL, false, 0),
							   SPI_OK_INSERT, "insert hydrated rows into the target");
			changed += SPI_processed;
		}
	}
	PG_FINALLY();
	{
		if (raise_depth)
			softmig_mirror_leave();
	}
	PG_END_TRY();

	/*
	 * Mirrored with fields handed to the target: those fields flow to the
	 * legacy columns that carry them, as for any target-side write.
	 */
	if (m->state == SM_MIRRORED && m->new_legacy_cols != NIL && changed > 0)
	{
		sql = carry_sql(m, bwd, target, keymatch.data);
		softmig_leave_owner_context(save_nest, save_user, save_sec);
		softmig_enter_owner_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec);
		carry_to_legacy(m->id, sql, argtypes, values);
	}
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	SPI_finish();
	PG_RETURN_INT64((int64) changed);
}
