/*-------------------------------------------------------------------------
 *
 * mergeclear.c
 *	  The statements with which the backfill of an attribute member of a
 *	  merge clears what the target kept of attribute rows legacy no longer
 *	  has.
 *
 *	  Before mirroring began the target may have been loaded with an
 *	  attribute (a theme) whose legacy row (the settings row) was deleted
 *	  before or while mirroring began: no live delete carried that over,
 *	  and the member's copy, which reads legacy rows, never meets it.  The
 *	  backfill's orphans step of the attribute member (backfill.c) finds
 *	  such target rows, takes their entity locks as every live write of the
 *	  merge does (mapping.c, split_lock_sql), and then, in a statement with
 *	  a snapshot taken after the locks, clears the member's columns of the
 *	  rows whose legacy row is still absent: a live writer that created the
 *	  attribute row meanwhile has committed (its value is seen and kept) or
 *	  waits for the step's commit (its mirror then writes its value over
 *	  the cleared one).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_attribute.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "softmig.h"
#include "backfillint.h"

/*
 * column_has_default
 *		Does column col of relid have a default?  (A missing column: no;
 *		the mapping's validation reports it.)
 */
static bool
column_has_default(Oid relid, const char *col)
{
	HeapTuple	tup = SearchSysCacheAttName(relid, col);
	bool		r;

	if (!HeapTupleIsValid(tup))
		return false;
	r = ((Form_pg_attribute) GETSTRUCT(tup))->atthasdef;
	ReleaseSysCache(tup);
	return r;
}

/*
 * append_stale_condition
 *		"(softmig_t.c IS DISTINCT FROM NULL OR ...) AND NOT EXISTS (<c's
 *		legacy row of the target row's key>)": a target row (softmig_t)
 *		that carries a value in one of the member's columns without a
 *		default although legacy has no attribute row for it.  Returns false
 *		(buf unchanged) when every column of the member has a default: a
 *		cleared row could not be told from a stale one.
 */
static bool
append_stale_condition(StringInfo buf, BfContext *c)
{
	StringInfoData cond;
	ListCell   *lc;
	int			n = 0;

	initStringInfo(&cond);
	foreach(lc, c->fwd->cols)
	{
		if (softmig_str_member(c->fwd->keycols, lfirst(lc)) ||
			column_has_default(c->fwd->relid, lfirst(lc)))
			continue;
		appendStringInfo(&cond, "%ssoftmig_t.%s IS DISTINCT FROM NULL", n++ ? " OR " : "(",
						 quote_identifier(lfirst(lc)));
	}
	if (n == 0)
		return false;
	appendStringInfo(buf, "%s) AND NOT EXISTS (SELECT 1 FROM (SELECT ", cond.data);
	softmig_append_key_list(buf, c->fwd->keyexprs, c->fwd->keytypes);
	appendStringInfo(buf, " FROM %s) AS softmig_l WHERE ", c->legacy);
	softmig_append_key_match(buf, "softmig_t", c->fwd->keycols, c->fwd->keyops, "softmig_l");
	appendStringInfoChar(buf, ')');
	return true;
}

/*
 * softmig_merge_clear_sql
 *		For the backfill of attribute member c->m of a merge: *lock_sql
 *		takes the entity locks of up to $1 (int4) target rows that are stale
 *		(append_stale_condition), in hash order as split_lock_sql does, and
 *		returns their target keys as one jsonb array (NULL: none); *clear_sql
 *		sets the member's columns of the rows of those keys ($1, that array)
 *		that are still stale back to their default (NULL without one), as a
 *		live delete of the attribute row does.  Returns false when nothing
 *		can be cleared (append_stale_condition).  Pure text building; the
 *		caller plans and runs both (backfill.c).
 */
bool
softmig_merge_clear_sql(BfContext *c, char **lock_sql, char **clear_sql)
{
	StringInfoData cand;
	StringInfoData buf;
	List	   *qkeys = NIL;
	ListCell   *lc;
	int			n = 0;

	initStringInfo(&cand);
	foreach(lc, c->fwd->keycols)
		qkeys = lappend(qkeys, psprintf("softmig_t.%s", quote_identifier(lfirst(lc))));
	appendStringInfo(&cand, "SELECT %s AS softmig_j FROM %s AS softmig_t WHERE ",
					 softmig_json_object_sql(c->fwd->keycols, qkeys), c->target);
	if (!append_stale_condition(&cand, c))
		return false;
	softmig_append_key_not_null(&cand, c->fwd->keycols, "softmig_t.");
	appendStringInfoString(&cand, " LIMIT $1");

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT pg_catalog.jsonb_agg(softmig_j) FROM (SELECT softmig_j, "
					 "pg_catalog.pg_advisory_xact_lock((%u::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32) "
					 "OPERATOR(pg_catalog.|) (softmig_h::pg_catalog.int8 OPERATOR(pg_catalog.&) 4294967295)) "
					 "FROM (SELECT DISTINCT softmig_j, pg_catalog.hashtext(softmig_j::pg_catalog.text) AS softmig_h "
					 "FROM (%s) AS softmig_c) AS softmig_d ORDER BY softmig_h) AS softmig_l",
					 c->m->target, cand.data);
	*lock_sql = buf.data;

	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE %s AS softmig_t SET ", c->target);
	foreach(lc, c->fwd->cols)
	{
		if (softmig_str_member(c->fwd->keycols, lfirst(lc)))
			continue;
		appendStringInfo(&buf, "%s%s = DEFAULT", n++ ? ", " : "", quote_identifier(lfirst(lc)));
	}
	appendStringInfoString(&buf, " FROM (SELECT ");
	softmig_append_key_list(&buf, qkeys, c->fwd->keytypes);
	appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_recordset(NULL::%s, $1) AS softmig_t) AS softmig_o WHERE ",
					 c->target);
	softmig_append_key_match(&buf, "softmig_t", c->fwd->keycols, c->fwd->keyops, "softmig_o");
	appendStringInfoString(&buf, " AND ");
	(void) append_stale_condition(&buf, c);
	*clear_sql = buf.data;
	return true;
}
