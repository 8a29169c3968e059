/*-------------------------------------------------------------------------
 *
 * keygen.c
 *	  Handing the key generators over when the write authority moves.
 *
 *	  While one table is the write authority, the other one receives its
 *	  rows with the keys the authority's sequence or identity drew; its own
 *	  generator does not move.  When the authority switches (mirrored ->
 *	  new_write, and back), the table that takes keyless inserts from now on
 *	  would draw keys the other side already holds, and the first such
 *	  INSERT would fail with a unique violation.  So the state change moves
 *	  the generator behind every column of the new authority that the other
 *	  side feeds through the mapping (a serial's owned sequence, an identity
 *	  BY DEFAULT or ALWAYS) past every value either table holds for it: its
 *	  own column, which holds every mapped key of the other side while the
 *	  migration is consistent, and, when the column maps from a plain column
 *	  of the other table, that column (an index probe where it is indexed)
 *	  and the last value that column's own generator gave out (a session
 *	  that drew a key before the switch may insert it after, through a
 *	  shape view).
 *
 *	  The caller (softmig._set_state) holds both tables locked against
 *	  writers, so no row can arrive meanwhile.  setval is not transactional:
 *	  if the state change rolls back later the generator stays moved, which
 *	  only skips keys.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "softmig.h"

/*
 * column_sequence
 *		The sequence behind column col of relation relid (an identity's, or
 *		the one a serial owns), or InvalidOid.  Runs pg_get_serial_sequence
 *		through SPI (no privilege is needed for it); the caller is connected.
 */
static Oid
column_sequence(Oid relid, const char *col)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	bool		isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(softmig_qualified_relname(relid));
	values[1] = CStringGetTextDatum(col);	/* taken literally */
	softmig_spi_expect(SPI_execute_with_args("SELECT pg_catalog.pg_get_serial_sequence($1, $2)"
											 "::pg_catalog.regclass::pg_catalog.oid",
											 2, argtypes, values, NULL, true, 1),
					   SPI_OK_SELECT, "find the sequence of a key column");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? InvalidOid : DatumGetObjectId(d);
}

/*
 * plain_column
 *		The column of relid that expr names, when the mapping expression is
 *		nothing but a column reference (plain or quoted), else NULL.  Only
 *		then is the other table read: max() of a column is an index probe
 *		when the column is indexed, where an expression would need a scan
 *		of the whole table under the switch's locks.
 */
static char *
plain_column(Oid relid, const char *expr)
{
	Relation	rel = relation_open(relid, NoLock);
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *result = NULL;

	for (int i = 0; i < desc->natts && result == NULL; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped &&
			(strcmp(expr, NameStr(att->attname)) == 0 ||
			 strcmp(expr, quote_identifier(NameStr(att->attname))) == 0))
			result = pstrdup(NameStr(att->attname));
	}
	relation_close(rel, NoLock);
	return result;
}

/*
 * column_identity
 *		attidentity of column col of relid ('' for none), from the syscache.
 */
static char
column_identity(Oid relid, const char *col)
{
	HeapTuple	tup = SearchSysCacheAttName(relid, col);
	char		identity;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for column \"%s\" of relation %u", col, relid);
	identity = ((Form_pg_attribute) GETSTRUCT(tup))->attidentity;
	ReleaseSysCache(tup);
	return identity;
}

/*
 * int8_or_null
 *		Column n (1-based) of the first SPI result row as int8, and whether
 *		it was NULL.
 */
static int64
int8_or_null(int n, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, n, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

/*
 * hand_over_one
 *		Move sequence seq of column col of relation auth past every value
 *		auth holds in col and, when the mapping expr is a plain column of
 *		the other table, every value that column holds (if auth's owner may
 *		read it) and the last value that column's own generator gave out
 *		(if auth's owner may read that sequence: a key drawn before the
 *		switch may be inserted after it).  (auth holds every mapped key of
 *		the other side while the migration is consistent; the other side is
 *		read only where that is cheap.)  Runs as auth's owner, who owns the
 *		sequence.  Appends one JSON object to out.
 */
static void
hand_over_one(StringInfo out, Oid auth, Oid other, const char *col, const char *expr,
			  Oid seq, char identity)
{
	Oid			owner = softmig_rel_owner(auth);
	char	   *srccol = OidIsValid(other) ? plain_column(other, expr) : NULL;
	bool		read_other = (srccol != NULL &&
							  pg_class_aclcheck(other, owner, ACL_SELECT) == ACLCHECK_OK);
	char	   *seqname = softmig_qualified_relname(seq);
	char	   *coltype = format_type_be_qualified(get_atttype(auth, get_attnum(auth, col)));
	StringInfoData buf;
	int64		hi,
				lo,
				inc,
				seqmax,
				seqmin,
				last,
				next;
	bool		hi_null,
				lo_null,
				isnull,
				called,
				moved = false;
	int64		to = 0;
	int64		edge;
	int64		limit;
	bool		up;
	SPIPlanPtr	plan;
	Oid			otherseq;
	char	   *other_generator = NULL;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	softmig_enter_owner_context(owner, &save_nest, &save_user, &save_sec);

	/* the highest and lowest value either side holds for the column */
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "SELECT pg_catalog.max(softmig_v)::pg_catalog.int8, pg_catalog.min(softmig_v)::pg_catalog.int8 "
					 "FROM (SELECT pg_catalog.max(%s) AS softmig_v FROM %s UNION ALL "
					 "SELECT pg_catalog.min(%s) FROM %s",
					 quote_identifier(col), softmig_qualified_relname(auth),
					 quote_identifier(col), softmig_qualified_relname(auth));
	if (read_other)
		appendStringInfo(&buf,
						 " UNION ALL SELECT pg_catalog.max(%s)::%s FROM %s"
						 " UNION ALL SELECT pg_catalog.min(%s)::%s FROM %s",
						 quote_identifier(srccol), coltype, softmig_qualified_relname(other),
						 quote_identifier(srccol), coltype, softmig_qualified_relname(other));
	appendStringInfoString(&buf, ") AS softmig_s");
	/* the latest snapshot: under the switch's locks it holds every key */
	plan = SPI_prepare(buf.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	softmig_spi_expect(SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(),
											InvalidSnapshot, true, false, 1),
					   SPI_OK_SELECT, "read the keys both tables hold");
	hi = int8_or_null(1, &hi_null);
	lo = int8_or_null(2, &lo_null);

	/*
	 * The other side's own generator: a session may have drawn a key from it
	 * before the switch and insert it afterwards (through a shape view, or
	 * after a rollback), so its last value counts as held.
	 */
	otherseq = srccol != NULL ? column_sequence(other, srccol) : InvalidOid;
	if (OidIsValid(otherseq) && pg_class_aclcheck(otherseq, owner, ACL_SELECT) == ACLCHECK_OK)
	{
		int64		drawn;

		resetStringInfo(&buf);
		appendStringInfo(&buf, "SELECT l.last_value, l.is_called FROM %s l",
						 softmig_qualified_relname(otherseq));
		softmig_spi_expect(SPI_execute(buf.data, true, 1), SPI_OK_SELECT,
						   "read the other table's key sequence");
		drawn = int8_or_null(1, &isnull);
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		{
			hi = hi_null ? drawn : Max(hi, drawn);
			lo = lo_null ? drawn : Min(lo, drawn);
			hi_null = lo_null = false;
		}
		other_generator = softmig_qualified_relname(otherseq);
	}

	/* where the generator stands */
	resetStringInfo(&buf);
	appendStringInfo(&buf,
					 "SELECT s.seqincrement, s.seqmax, s.seqmin, l.last_value, l.is_called "
					 "FROM pg_catalog.pg_sequence s, %s l WHERE s.seqrelid OPERATOR(pg_catalog.=) %u",
					 seqname, seq);
	softmig_spi_expect(SPI_execute(buf.data, true, 1), SPI_OK_SELECT,
					   "read a key column's sequence");
	inc = int8_or_null(1, &isnull);
	seqmax = int8_or_null(2, &isnull);
	seqmin = int8_or_null(3, &isnull);
	last = int8_or_null(4, &isnull);
	called = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	next = called ? last + inc : last;

	/*
	 * Past every key: upwards for a positive increment (edge is the largest
	 * key), downwards otherwise (the smallest).
	 */
	up = inc > 0;
	edge = up ? hi : lo;
	limit = up ? seqmax : seqmin;
	if (!(up ? hi_null : lo_null) && (up ? next <= edge : next >= edge))
	{
		if (up ? edge >= limit : edge <= limit)
			ereport(ERROR,
					(errcode(ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED),
					 errmsg("cannot move sequence %s of column \"%s\" of table %s past the keys the tables hold",
							seqname, col, softmig_qualified_relname(auth)),
					 errdetail("The tables hold %s %s " INT64_FORMAT "; the sequence's %s is " INT64_FORMAT ".",
							   quote_identifier(col), up ? "up to" : "down to", edge,
							   up ? "maximum" : "minimum", limit),
					 errhint("%s the sequence's %s (ALTER SEQUENCE) and retry the state change.",
							 up ? "Raise" : "Lower", up ? "MAXVALUE" : "MINVALUE")));
		to = edge;
		moved = true;
	}
	if (moved)
	{
		Oid			argtypes[2] = {OIDOID, INT8OID};
		Datum		values[2];

		values[0] = ObjectIdGetDatum(seq);
		values[1] = Int64GetDatum(to);
		softmig_spi_expect(SPI_execute_with_args("SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, true)",
												 2, argtypes, values, NULL, false, 1),
						   SPI_OK_SELECT, "move a key column's sequence");
	}
	softmig_leave_owner_context(save_nest, save_user, save_sec);

	appendStringInfoString(out, out->len > 1 ? ", {\"column\": " : "{\"column\": ");
	escape_json(out, col);
	appendStringInfoString(out, ", \"sequence\": ");
	escape_json(out, seqname);
	appendStringInfo(out, ", \"generator\": \"%s\", "
					 "\"next_before\": " INT64_FORMAT ", \"next\": " INT64_FORMAT ", \"moved\": %s, "
					 "\"other_side_read\": %s, \"other_generator\": ",
					 identity == ATTRIBUTE_IDENTITY_ALWAYS ? "identity always" :
					 identity == ATTRIBUTE_IDENTITY_BY_DEFAULT ? "identity by default" : "serial",
					 next, moved ? to + inc : next, moved ? "true" : "false",
					 read_other ? "true" : "false");
	if (other_generator != NULL)
		escape_json(out, other_generator);
	else
		appendStringInfoString(out, "null");
	appendStringInfoChar(out, '}');
}

PG_FUNCTION_INFO_V1(softmig_hand_over_keys);
/*
 * softmig_hand_over_keys
 *		softmig._hand_over_keys(migration_id, to_target): the write authority
 *		moves to the target (to_target) or back to legacy.  For every column
 *		of the new authority that a mapping feeds from the other table and
 *		that draws its value from a sequence (serial, identity), move the
 *		sequence past every value both tables hold for it.  Returns a jsonb
 *		array with one object per such column (empty when there is none).
 *		The caller holds both tables locked against writers; each read and
 *		setval runs as the new authority's owner.
 */
Datum
softmig_hand_over_keys(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	bool		to_target = PG_GETARG_BOOL(1);
	SoftmigMigration *m = softmig_require_migration(id);
	Oid			auth = to_target ? m->target : m->legacy;
	Oid			other = to_target ? m->legacy : m->target;
	List	   *cols = to_target ? m->fwd_cols : m->bwd_cols;
	List	   *exprs = to_target ? m->fwd_exprs : m->bwd_exprs;
	StringInfoData out;
	ListCell   *c;
	ListCell   *e;
	Datum		result;
	List	   *colcopy = NIL;
	List	   *exprcopy = NIL;

	/* copies: the cache entry may be rebuilt while we run statements */
	forboth(c, cols, e, exprs)
	{
		colcopy = lappend(colcopy, pstrdup(lfirst(c)));
		exprcopy = lappend(exprcopy, pstrdup(lfirst(e)));
	}
	initStringInfo(&out);
	appendStringInfoChar(&out, '[');
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	forboth(c, colcopy, e, exprcopy)
	{
		const char *col = lfirst(c);
		Oid			seq = column_sequence(auth, col);

		if (!OidIsValid(seq))
			continue;
		hand_over_one(&out, auth, other, col, lfirst(e), seq,
					  column_identity(auth, col));
	}
	SPI_finish();
	appendStringInfoChar(&out, ']');
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));
	PG_RETURN_DATUM(result);
}

PG_FUNCTION_INFO_V1(softmig_hand_over_table_keys);
/*
 * softmig_hand_over_table_keys
 *		softmig._hand_over_table_keys(rel): the legacy side of a migration
 *		across databases becomes the write authority again (a rollback to
 *		mirrored).  The target database is elsewhere, but every key it gave
 *		out reached this table through the reverse replication, caught up at
 *		the fence: move the sequence behind every column of rel that has one
 *		past every value rel holds for it.  Returns a jsonb array like
 *		softmig_hand_over_keys.  Runs as rel's owner; the caller's state
 *		change refuses local writes to rel until it commits.
 */
Datum
softmig_hand_over_table_keys(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel = try_relation_open(relid, AccessShareLock);
	TupleDesc	desc;
	List	   *cols = NIL;
	StringInfoData out;
	ListCell   *lc;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && !att->attgenerated)
			cols = lappend(cols, pstrdup(NameStr(att->attname)));
	}
	relation_close(rel, NoLock);

	initStringInfo(&out);
	appendStringInfoChar(&out, '[');
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	foreach(lc, cols)
	{
		Oid			seq = column_sequence(relid, lfirst(lc));

		if (OidIsValid(seq))
			hand_over_one(&out, relid, InvalidOid, lfirst(lc), NULL, seq,
						  column_identity(relid, lfirst(lc)));
	}
	SPI_finish();
	appendStringInfoChar(&out, ']');
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
