/*-------------------------------------------------------------------------
 *
 * onetomany_sql.c
 *	  The text of every statement a one-to-many migration runs
 *	  (onetomany.c): one builder per statement kind, over the migration's
 *	  entity, mappings and aggregates.  Pure string building from the
 *	  cache entry and the catalog's column types; the caller keeps the
 *	  text per cache entry and plans it once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "softmig.h"
#include "onetomany.h"

/*
 * softmig_otm_col_type
 *		The qualified type name (no typmod) of column col of relid.
 */
char *
softmig_otm_col_type(Oid relid, const char *col)
{
	AttrNumber	att = get_attnum(relid, col);
	Oid			typid;
	int32		typmod;
	Oid			collid;

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table %s does not exist", col,
						softmig_qualified_relname(relid))));
	get_atttypetypmodcoll(relid, att, &typid, &typmod, &collid);
	return format_type_be_qualified(typid);
}

/*
 * str_index
 *		Position (from 0) of string s in list l of C strings, -1 if absent.
 */
static int
str_index(List *l, const char *s)
{
	ListCell   *lc;

	foreach(lc, l)
		if (strcmp(lfirst(lc), s) == 0)
		return foreach_current_index(lc);
	return -1;
}

/*
 * append_list
 *		Append "prefix<i>" for i in 1..n, separated by ", ", each preceded
 *		by alias when given.
 */
static void
append_list(StringInfo buf, const char *alias, const char *prefix, int n)
{
	for (int i = 1; i <= n; i++)
		appendStringInfo(buf, "%s%s%s%d", i > 1 ? ", " : "",
						 alias ? alias : "", prefix, i);
}

/*
 * softmig_otm_append_idents
 *		Append the quoted names of cols, each preceded by alias.
 */
void
softmig_otm_append_idents(StringInfo buf, const char *alias, List *cols)
{
	ListCell   *lc;

	foreach(lc, cols)
		appendStringInfo(buf, "%s%s%s", foreach_current_index(lc) > 0 ? ", " : "",
						 alias ? alias : "", quote_identifier(lfirst(lc)));
}

/*
 * append_entity
 *		Append the entity columns of a row of the mirror's expansion
 *		(softmig_c<i> of the forward-mapped columns), preceded by alias.
 */
static void
append_entity(StringInfo buf, SoftmigMigration *m, const char *alias)
{
	ListCell   *lc;

	foreach(lc, m->target_key)
		appendStringInfo(buf, "%s%ssoftmig_c%d", foreach_current_index(lc) > 0 ? ", " : "",
						 alias, str_index(m->fwd_cols, lfirst(lc)) + 1);
}

/*
 * append_entity_eq
 *		Append "a.e = b.e AND " for every entity column e of the mirror's
 *		expansion rows (softmig_c<i>) of aliases a and b.
 */
static void
append_entity_eq(StringInfo buf, SoftmigMigration *m, const char *a, const char *b)
{
	ListCell   *lc;

	foreach(lc, m->target_key)
	{
		int			i = str_index(m->fwd_cols, lfirst(lc)) + 1;

		appendStringInfo(buf, "%ssoftmig_c%d = %ssoftmig_c%d AND ", a, i, b, i);
	}
}

/*
 * append_same_row
 *		Append "w and h are equal rows, the same one of equal rows" (the
 *		entity columns compared with "=" first, so the planner can hash).
 */
static void
append_same_row(StringInfo buf, SoftmigMigration *m, int nfwd)
{
	/* the entity columns are never NULL here: "=" lets the planner hash */
	append_entity_eq(buf, m, "w.", "h.");
	appendStringInfoString(buf, "ROW(");
	append_list(buf, "w.", "softmig_c", nfwd);
	appendStringInfoString(buf, ") IS NOT DISTINCT FROM ROW(");
	append_list(buf, "h.", "softmig_c", nfwd);
	appendStringInfoString(buf, ") AND w.softmig_n OPERATOR(pg_catalog.=) h.softmig_n");
}

/*
 * append_pair
 *		Append "h and x are the r-th unmatched rows of the same entity"
 *		(entity columns are never NULL in either).
 */
static void
append_pair(StringInfo buf, SoftmigMigration *m)
{
	append_entity_eq(buf, m, "h.", "x.");
	appendStringInfoString(buf, "h.softmig_r OPERATOR(pg_catalog.=) x.softmig_r");
}

/*
 * softmig_otm_aggregated_cols
 *		The backward-mapped legacy columns that are not key columns (their
 *		expressions are the aggregates), and their expressions.
 */
void
softmig_otm_aggregated_cols(SoftmigMigration *m, List **cols, List **exprs)
{
	ListCell   *c;
	ListCell   *e;

	*cols = *exprs = NIL;
	forboth(c, m->bwd_cols, e, m->bwd_exprs)
	{
		if (softmig_str_member(m->legacy_key, lfirst(c)))
			continue;
		*cols = lappend(*cols, lfirst(c));
		*exprs = lappend(*exprs, lfirst(e));
	}
}

/*
 * append_touched
 *		Append the SELECT of the entities a statement wrote, as columns
 *		softmig_e1..n of the target's entity types: the entity columns of
 *		its new rows, its old rows or both (target side), or the legacy key
 *		columns cast to those types (legacy side).
 */
static void
append_touched(StringInfo buf, SoftmigMigration *m, bool legacy_side, bool has_new, bool has_old)
{
	for (int t = 0; t < 2; t++)
	{
		ListCell   *c;
		ListCell   *e;

		if (!(t == 0 ? has_new : has_old))
			continue;
		if (t == 1 && has_new)
			appendStringInfoString(buf, " UNION ");
		appendStringInfoString(buf, "SELECT ");
		forboth(c, m->legacy_key, e, m->target_key)
		{
			if (legacy_side)
				appendStringInfo(buf, "%s(%s)::%s AS softmig_e%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(c)), softmig_otm_col_type(m->target, lfirst(e)),
								 foreach_current_index(c) + 1);
			else
				appendStringInfo(buf, "%s%s AS softmig_e%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(e)), foreach_current_index(c) + 1);
		}
		appendStringInfoString(buf, t == 0 ? " FROM softmig_new" : " FROM softmig_old");
	}
}

/*
 * append_key_json
 *		Append jsonb_build_object('k1', alias.k1, ...) over the legacy key.
 */
static void
append_key_json(StringInfo buf, SoftmigMigration *m, const char *alias)
{
	ListCell   *c;

	appendStringInfoString(buf, "pg_catalog.jsonb_build_object(");
	foreach(c, m->legacy_key)
		appendStringInfo(buf, "%s%s, %s%s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(c)), alias, quote_identifier(lfirst(c)));
	appendStringInfoChar(buf, ')');
}

/*
 * append_match
 *		Append "the entity columns of a equal those of b".
 */
static void
append_match(StringInfo buf, SoftmigMigration *m, const char *a, const char *b)
{
	ListCell   *c;

	foreach(c, m->target_key)
		appendStringInfo(buf, "%s%s%s = %s%s", foreach_current_index(c) > 0 ? " AND " : "",
						 a, quote_identifier(lfirst(c)), b, quote_identifier(lfirst(c)));
}

/*
 * append_none_on
 *		Append "the other side holds no row of the entity of row alias"
 *		(NOT EXISTS): of_legacy, alias is a legacy row and the target is
 *		searched for its set; otherwise alias is a target row and legacy is
 *		searched for its entity's row.
 */
static void
append_none_on(StringInfo buf, SoftmigMigration *m, bool of_legacy, const char *alias)
{
	Oid			other = of_legacy ? m->target : m->legacy;
	List	   *mine = of_legacy ? m->legacy_key : m->target_key;
	List	   *theirs = of_legacy ? m->target_key : m->legacy_key;
	ListCell   *c;
	ListCell   *e;

	appendStringInfo(buf, "NOT EXISTS (SELECT 1 FROM %s o WHERE ", softmig_qualified_relname(other));
	forboth(c, mine, e, theirs)
		appendStringInfo(buf, "%so.%s = (%s%s)::%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(e)), alias, quote_identifier(lfirst(c)),
						 softmig_otm_col_type(other, lfirst(e)));
	appendStringInfoChar(buf, ')');
}

/*
 * sql_mirror_upsert
 *		OTM_MIRROR_UPSERT.
 *		The expansion of each written legacy row, typed as the target
 *		(softmig_w), and the sets it replaces (softmig_h).  Both are
 *		numbered within equal rows, so they match as multisets: a row
 *		in both stays as it is.  Of the rest (softmig_hx, softmig_wx),
 *		numbered per entity, pairs are updated in place (the set
 *		member keeps its identity), what the target has beyond is
 *		deleted, what the expansion has beyond is inserted.
 */
static void
sql_mirror_upsert(StringInfo buf, SoftmigMigration *m)
{
	char	   *target = softmig_qualified_relname(m->target);
	int			nfwd = list_length(m->fwd_cols);
	ListCell   *c;
	ListCell   *e;

	appendStringInfoString(buf, "WITH softmig_w AS (SELECT ");
	forboth(c, m->fwd_cols, e, m->fwd_exprs)
		appendStringInfo(buf, "%s(%s\n)::%s AS softmig_c%d",
						 foreach_current_index(c) > 0 ? ", " : "",
						 (char *) lfirst(e), softmig_otm_col_type(m->target, lfirst(c)),
						 foreach_current_index(c) + 1);
	appendStringInfoString(buf, " FROM softmig_new), softmig_wn AS (SELECT w.*, "
						   "pg_catalog.row_number() OVER (PARTITION BY ");
	append_list(buf, "w.", "softmig_c", nfwd);
	appendStringInfoString(buf, ") AS softmig_n FROM softmig_w w), softmig_h AS ("
						   "SELECT t.tableoid AS softmig_tab, t.ctid AS softmig_tid, ");
	foreach(c, m->fwd_cols)
		appendStringInfo(buf, "t.%s AS softmig_c%d, ", quote_identifier(lfirst(c)),
						 foreach_current_index(c) + 1);
	appendStringInfoString(buf, "pg_catalog.row_number() OVER (PARTITION BY ");
	softmig_otm_append_idents(buf, "t.", m->fwd_cols);
	appendStringInfo(buf, " ORDER BY t.ctid) AS softmig_n FROM %s t WHERE (", target);
	softmig_otm_append_idents(buf, "t.", m->target_key);
	appendStringInfoString(buf, ") IN (SELECT ");
	append_entity(buf, m, "w.");
	appendStringInfoString(buf, " FROM softmig_w w)), softmig_hx AS (SELECT h.*, "
						   "pg_catalog.row_number() OVER (PARTITION BY ");
	append_entity(buf, m, "h.");
	appendStringInfoString(buf, " ORDER BY h.softmig_tid) AS softmig_r FROM softmig_h h WHERE NOT EXISTS ("
						   "SELECT 1 FROM softmig_wn w WHERE ");
	append_same_row(buf, m, nfwd);
	appendStringInfoString(buf, ")), softmig_wx AS (SELECT w.*, pg_catalog.row_number() OVER (PARTITION BY ");
	append_entity(buf, m, "w.");
	appendStringInfoString(buf, ") AS softmig_r FROM softmig_wn w WHERE NOT EXISTS ("
						   "SELECT 1 FROM softmig_h h WHERE ");
	append_same_row(buf, m, nfwd);
	appendStringInfo(buf, ")), softmig_u AS (UPDATE %s t SET ", target);
	foreach(c, m->fwd_cols)
		appendStringInfo(buf, "%s%s = x.softmig_c%d", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
	appendStringInfoString(buf, " FROM softmig_hx h JOIN softmig_wx x ON ");
	append_pair(buf, m);
	appendStringInfoString(buf, " WHERE t.tableoid OPERATOR(pg_catalog.=) h.softmig_tab "
						   "AND t.ctid OPERATOR(pg_catalog.=) h.softmig_tid), ");
	appendStringInfo(buf, "softmig_d AS (DELETE FROM %s t USING softmig_hx h "
					 "WHERE t.tableoid OPERATOR(pg_catalog.=) h.softmig_tab "
					 "AND t.ctid OPERATOR(pg_catalog.=) h.softmig_tid "
					 "AND NOT EXISTS (SELECT 1 FROM softmig_wx x WHERE ", target);
	append_pair(buf, m);
	appendStringInfo(buf, ")) INSERT INTO %s (", target);
	softmig_otm_append_idents(buf, NULL, m->fwd_cols);
	appendStringInfoString(buf, ") SELECT ");
	append_list(buf, "x.", "softmig_c", nfwd);
	appendStringInfoString(buf, " FROM softmig_wx x WHERE NOT EXISTS (SELECT 1 FROM softmig_hx h WHERE ");
	append_pair(buf, m);
	appendStringInfoChar(buf, ')');
}

/*
 * append_numbered_keys
 *		Append the CTE "cte AS (...)": the legacy key of each row of the
 *		transition table "transition", typed as the target key
 *		(softmig_k1..n), numbered in scan order (softmig_n), so the old and
 *		new rows of one UPDATE pair up by number.
 */
static void
append_numbered_keys(StringInfo buf, SoftmigMigration *m, const char *cte, const char *transition)
{
	ListCell   *c;
	ListCell   *e;

	appendStringInfo(buf, "%s AS (SELECT pg_catalog.row_number() OVER () AS softmig_n, ", cte);
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%s(%s)::%s AS softmig_k%d", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(c)), softmig_otm_col_type(m->target, lfirst(e)),
						 foreach_current_index(c) + 1);
	appendStringInfo(buf, " FROM %s)", transition);
}

/*
 * sql_mirror_move
 *		OTM_MIRROR_MOVE: a legacy UPDATE's old and new rows in step; the
 *		sets of the keys it changed move to the new keys (their members
 *		keep their identity).
 */
static void
sql_mirror_move(StringInfo buf, SoftmigMigration *m)
{
	char	   *target = softmig_qualified_relname(m->target);
	int			nkey = list_length(m->legacy_key);
	ListCell   *c;

	appendStringInfoString(buf, "WITH ");
	append_numbered_keys(buf, m, "softmig_o", "softmig_old");
	appendStringInfoString(buf, ", ");
	append_numbered_keys(buf, m, "softmig_nw", "softmig_new");
	appendStringInfoString(buf, ", softmig_mv AS (SELECT ");
	for (int i = 1; i <= nkey; i++)
		appendStringInfo(buf, "%so.softmig_k%d AS softmig_o%d, n.softmig_k%d AS softmig_k%d",
						 i > 1 ? ", " : "", i, i, i, i);
	appendStringInfoString(buf, " FROM softmig_o o JOIN softmig_nw n USING (softmig_n) WHERE ROW(");
	append_list(buf, "o.", "softmig_k", nkey);
	appendStringInfoString(buf, ") IS DISTINCT FROM ROW(");
	append_list(buf, "n.", "softmig_k", nkey);
	appendStringInfo(buf, ")) UPDATE %s t SET ", target);
	foreach(c, m->target_key)
		appendStringInfo(buf, "%s%s = mv.softmig_k%d", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
	appendStringInfoString(buf, " FROM softmig_mv mv WHERE ");
	foreach(c, m->target_key)
		appendStringInfo(buf, "%st.%s = mv.softmig_o%d", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
}

/*
 * sql_mirror_delete
 *		OTM_MIRROR_DELETE: a legacy DELETE deletes the sets of its rows.
 */
static void
sql_mirror_delete(StringInfo buf, SoftmigMigration *m)
{
	char	   *target = softmig_qualified_relname(m->target);
	ListCell   *c;
	ListCell   *e;

	appendStringInfo(buf, "DELETE FROM %s t USING softmig_old o WHERE ", target);
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%st.%s = (o.%s)::%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(e)), quote_identifier(lfirst(c)),
						 softmig_otm_col_type(m->target, lfirst(e)));
}

/*
 * sql_lock
 *		OTM_LOCK, OTM_LOCK_LEGACY.
 *		The hashes of the touched entities, in one order (lock_entities).
 */
static void
sql_lock(StringInfo buf, SoftmigMigration *m, OtmStmt kind, bool has_new, bool has_old)
{
	int			nkey = list_length(m->legacy_key);

	appendStringInfoString(buf, "SELECT DISTINCT pg_catalog.hashtext(ROW(");
	append_list(buf, "x.", "softmig_e", nkey);
	appendStringInfoString(buf, ")::pg_catalog.text) AS softmig_h FROM (");
	append_touched(buf, m, kind == OTM_LOCK_LEGACY, has_new, has_old);
	appendStringInfoString(buf, ") x ORDER BY 1");
}

/*
 * sql_aggregate
 *		OTM_AGGREGATE: a target write's touched entities, each set
 *		aggregated once through the backward mapping, with its row count,
 *		whether representable holds and the entity's key as jsonb.
 */
static void
sql_aggregate(StringInfo buf, SoftmigMigration *m, bool has_new, bool has_old)
{
	char	   *target = softmig_qualified_relname(m->target);
	int			nkey = list_length(m->legacy_key);
	ListCell   *c;
	ListCell   *e;
	List	   *acols;
	List	   *aexprs;

	softmig_otm_aggregated_cols(m, &acols, &aexprs);
	appendStringInfoString(buf, "WITH softmig_x(");
	append_list(buf, NULL, "softmig_e", nkey);
	appendStringInfoString(buf, ") AS (");
	append_touched(buf, m, false, has_new, has_old);
	appendStringInfoString(buf, ") SELECT ");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "(softmig_x.softmig_e%d)::%s AS softmig_k%d, ",
						 foreach_current_index(c) + 1, softmig_otm_col_type(m->legacy, lfirst(c)),
						 foreach_current_index(c) + 1);
	appendStringInfo(buf, "pg_catalog.count(t.%s) AS softmig_n, ",
					 quote_identifier(linitial(m->target_key)));
	forboth(c, acols, e, aexprs)
		appendStringInfo(buf, "(%s\n)::%s AS softmig_b%d, ", (char *) lfirst(e),
						 softmig_otm_col_type(m->legacy, lfirst(c)), foreach_current_index(c) + 1);
	appendStringInfo(buf, "COALESCE((%s\n), true) AS softmig_ok, pg_catalog.jsonb_build_object(",
					 m->representable ? m->representable : "true");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%s%s, softmig_x.softmig_e%d", foreach_current_index(c) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(c)), foreach_current_index(c) + 1);
	appendStringInfo(buf, ") AS softmig_key FROM softmig_x LEFT JOIN %s t ON ", target);
	foreach(c, m->target_key)
		appendStringInfo(buf, "%st.%s = softmig_x.softmig_e%d", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
	appendStringInfoString(buf, " GROUP BY ");
	append_list(buf, "softmig_x.", "softmig_e", nkey);
}

/*
 * sql_project
 *		OTM_PROJECT: the aggregated rows (ephemeral relation softmig_agg)
 *		upserted into legacy; an empty set deletes its legacy row.
 */
static void
sql_project(StringInfo buf, SoftmigMigration *m)
{
	char	   *legacy = softmig_qualified_relname(m->legacy);
	int			nkey = list_length(m->legacy_key);
	ListCell   *c;
	List	   *acols;
	List	   *aexprs;

	softmig_otm_aggregated_cols(m, &acols, &aexprs);
	appendStringInfo(buf, "WITH softmig_d AS (DELETE FROM %s l USING " OTM_AGG " a "
					 "WHERE a.softmig_n OPERATOR(pg_catalog.=) 0", legacy);
	foreach(c, m->legacy_key)
		appendStringInfo(buf, " AND l.%s = a.softmig_k%d", quote_identifier(lfirst(c)),
						 foreach_current_index(c) + 1);
	appendStringInfo(buf, ") INSERT INTO %s AS l (", legacy);
	softmig_otm_append_idents(buf, NULL, m->legacy_key);
	foreach(c, acols)
		appendStringInfo(buf, ", %s", quote_identifier(lfirst(c)));
	appendStringInfoString(buf, ") SELECT ");
	append_list(buf, "a.", "softmig_k", nkey);
	for (int i = 1; i <= list_length(acols); i++)
		appendStringInfo(buf, ", a.softmig_b%d", i);
	appendStringInfoString(buf, " FROM " OTM_AGG " a WHERE a.softmig_n OPERATOR(pg_catalog.>) 0 ON CONFLICT (");
	softmig_otm_append_idents(buf, NULL, m->legacy_key);
	if (acols == NIL)
		appendStringInfoString(buf, ") DO NOTHING");
	else
	{
		appendStringInfoString(buf, ") DO UPDATE SET ");
		foreach(c, acols)
			appendStringInfo(buf, "%s%s = EXCLUDED.%s", foreach_current_index(c) > 0 ? ", " : "",
							 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
		appendStringInfoString(buf, " WHERE ROW(");
		softmig_otm_append_idents(buf, "l.", acols);
		appendStringInfoString(buf, ") IS DISTINCT FROM ROW(");
		softmig_otm_append_idents(buf, "EXCLUDED.", acols);
		appendStringInfoChar(buf, ')');
	}
}

/*
 * sql_bad_keys
 *		OTM_BAD_KEYS: how many aggregated entities are not representable,
 *		and their keys.
 */
static void
sql_bad_keys(StringInfo buf)
{
	appendStringInfoString(buf, "SELECT pg_catalog.count(*), pg_catalog.jsonb_agg(a.softmig_key) FROM "
						   OTM_AGG " a WHERE a.softmig_n OPERATOR(pg_catalog.>) 0 AND NOT a.softmig_ok");
}

/*
 * sql_bf_batch
 *		OTM_BF_FIRST, OTM_BF_NEXT, OTM_BF_SWEEP: a backfill batch of legacy
 *		rows in key order ($1 the last key of the previous batch as jsonb,
 *		$2 the batch size); the sweep takes the rows without a set.
 */
static void
sql_bf_batch(StringInfo buf, SoftmigMigration *m, OtmStmt kind)
{
	char	   *legacy = softmig_qualified_relname(m->legacy);

	appendStringInfoString(buf, "SELECT l.*, ");
	append_key_json(buf, m, "l.");
	appendStringInfo(buf, " AS softmig_key FROM %s l", legacy);
	if (kind == OTM_BF_NEXT)
	{
		appendStringInfo(buf, ", pg_catalog.jsonb_populate_record(NULL::%s, $1) c WHERE ROW(", legacy);
		softmig_otm_append_idents(buf, "l.", m->legacy_key);
		appendStringInfoString(buf, ") > ROW(");
		softmig_otm_append_idents(buf, "c.", m->legacy_key);
		appendStringInfoChar(buf, ')');
	}
	else if (kind == OTM_BF_SWEEP)
	{
		appendStringInfoString(buf, " WHERE $1 IS NULL AND ");
		append_none_on(buf, m, true, "l.");
	}
	else
		appendStringInfoString(buf, " WHERE $1 IS NULL");
	appendStringInfoString(buf, " ORDER BY ");
	softmig_otm_append_idents(buf, "l.", m->legacy_key);
	appendStringInfoString(buf, " LIMIT $2");
}

/*
 * sql_bf_fresh
 *		OTM_BF_FRESH: the batch's legacy rows as they are now, after the
 *		entity locks.
 */
static void
sql_bf_fresh(StringInfo buf, SoftmigMigration *m)
{
	char	   *legacy = softmig_qualified_relname(m->legacy);

	appendStringInfoString(buf, "SELECT l.*, ");
	append_key_json(buf, m, "l.");
	appendStringInfo(buf, " AS softmig_key FROM %s l WHERE (", legacy);
	softmig_otm_append_idents(buf, "l.", m->legacy_key);
	appendStringInfoString(buf, ") IN (SELECT ");
	softmig_otm_append_idents(buf, "b.", m->legacy_key);
	appendStringInfoString(buf, " FROM softmig_new b)");
}

/*
 * sql_bf_missing
 *		OTM_BF_MISSING: how many legacy rows have no set.
 */
static void
sql_bf_missing(StringInfo buf, SoftmigMigration *m)
{
	char	   *legacy = softmig_qualified_relname(m->legacy);

	appendStringInfo(buf, "SELECT pg_catalog.count(*) FROM %s l WHERE ", legacy);
	append_none_on(buf, m, true, "l.");
}

/*
 * sql_bf_orphans
 *		OTM_BF_ORPHANS: entities the target holds and legacy does not ($2
 *		the batch size).
 */
static void
sql_bf_orphans(StringInfo buf, SoftmigMigration *m)
{
	char	   *target = softmig_qualified_relname(m->target);
	ListCell   *c;

	appendStringInfoString(buf, "SELECT DISTINCT ");
	softmig_otm_append_idents(buf, "t.", m->target_key);
	appendStringInfo(buf, " FROM %s t WHERE ", target);
	foreach(c, m->target_key)
		appendStringInfo(buf, "t.%s IS NOT NULL AND ", quote_identifier(lfirst(c)));
	append_none_on(buf, m, false, "t.");
	appendStringInfoString(buf, " LIMIT $2");
}

/*
 * append_key_of_param
 *		Append "SELECT <legacy key of $1, typed as the target key> FROM
 *		jsonb_populate_record(NULL::legacy, $1) c": the one entity a jsonb
 *		legacy key in $1 names, to compare with a target row's key.
 */
static void
append_key_of_param(StringInfo buf, SoftmigMigration *m, const char *legacy)
{
	ListCell   *c;
	ListCell   *e;

	appendStringInfoString(buf, "SELECT ");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%s(c.%s)::%s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(c)), softmig_otm_col_type(m->target, lfirst(e)));
	appendStringInfo(buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c", legacy);
}

/*
 * append_parity_verdict
 *		Append the final SELECT of a parity statement: per entity of the
 *		CTE softmig_s (softmig_key, softmig_ls, softmig_ts, softmig_diff),
 *		its kind (missing_in_legacy, missing_in_target, equal, mismatch),
 *		key and both sides, in key order.
 */
static void
append_parity_verdict(StringInfo buf)
{
	appendStringInfoString(buf, "SELECT CASE "
						   "WHEN s.softmig_ls IS NULL THEN 'missing_in_legacy' "
						   "WHEN s.softmig_ts IS NULL THEN 'missing_in_target' "
						   "WHEN NOT s.softmig_diff THEN 'equal' "
						   "ELSE 'mismatch' END AS kind, s.softmig_key, s.softmig_ls, s.softmig_ts "
						   "FROM softmig_s s ORDER BY s.softmig_key");
}

/*
 * sql_parity_sets
 *		OTM_PARITY, OTM_INSPECT.
 *		Per entity, the expansion of its legacy row and its target set
 *		as multisets of the forward-mapped columns (EXCEPT ALL: order
 *		and the target's own key play no part).  OTM_PARITY yields the
 *		entities that differ, OTM_INSPECT the one entity $1 names.
 */
static void
sql_parity_sets(StringInfo buf, SoftmigMigration *m, OtmStmt kind)
{
	char	   *target = softmig_qualified_relname(m->target);
	char	   *legacy = softmig_qualified_relname(m->legacy);
	ListCell   *c;
	ListCell   *e;

	appendStringInfoString(buf, "WITH softmig_w AS (SELECT ");
	forboth(c, m->fwd_cols, e, m->fwd_exprs)
		appendStringInfo(buf, "%s(%s\n)::%s AS %s", foreach_current_index(c) > 0 ? ", " : "",
						 (char *) lfirst(e), softmig_otm_col_type(m->target, lfirst(c)),
						 quote_identifier(lfirst(c)));
	appendStringInfo(buf, " FROM %s l", legacy);
	if (kind == OTM_INSPECT)
	{
		appendStringInfoString(buf, " WHERE (");
		softmig_otm_append_idents(buf, "l.", m->legacy_key);
		appendStringInfoString(buf, ") IN (SELECT ");
		softmig_otm_append_idents(buf, "c.", m->legacy_key);
		appendStringInfo(buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c)", legacy);
	}
	appendStringInfoString(buf, "), softmig_h AS (SELECT ");
	softmig_otm_append_idents(buf, "t.", m->fwd_cols);
	appendStringInfo(buf, " FROM %s t WHERE ", target);
	foreach(c, m->target_key)
		appendStringInfo(buf, "%st.%s IS NOT NULL", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)));
	if (kind == OTM_INSPECT)
	{
		appendStringInfo(buf, " AND (");
		softmig_otm_append_idents(buf, "t.", m->target_key);
		appendStringInfoString(buf, ") IN (");
		append_key_of_param(buf, m, legacy);
		appendStringInfoChar(buf, ')');
	}
	appendStringInfoString(buf, "), softmig_x AS (SELECT DISTINCT ");
	softmig_otm_append_idents(buf, "d.", m->target_key);
	if (kind == OTM_PARITY)
		appendStringInfoString(buf, " FROM ((SELECT * FROM softmig_w EXCEPT ALL SELECT * FROM softmig_h) "
							   "UNION ALL (SELECT * FROM softmig_h EXCEPT ALL SELECT * FROM softmig_w)) d");
	else
		appendStringInfoString(buf, " FROM (SELECT * FROM softmig_w UNION ALL SELECT * FROM softmig_h) d");
	appendStringInfoString(buf, "), softmig_s AS (SELECT pg_catalog.jsonb_build_object(");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%s%s, (x.%s)::%s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(c)), quote_identifier(lfirst(e)),
						 softmig_otm_col_type(m->legacy, lfirst(c)));
	appendStringInfoString(buf, ") AS softmig_key, EXISTS ((SELECT * FROM softmig_w w WHERE ");
	append_match(buf, m, "w.", "x.");
	appendStringInfoString(buf, " EXCEPT ALL SELECT * FROM softmig_h h WHERE ");
	append_match(buf, m, "h.", "x.");
	appendStringInfoString(buf, ") UNION ALL (SELECT * FROM softmig_h h WHERE ");
	append_match(buf, m, "h.", "x.");
	appendStringInfoString(buf, " EXCEPT ALL SELECT * FROM softmig_w w WHERE ");
	append_match(buf, m, "w.", "x.");
	appendStringInfoString(buf, ")) AS softmig_diff, (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w) "
						   "ORDER BY pg_catalog.to_jsonb(w)::pg_catalog.text) FROM softmig_w w WHERE ");
	append_match(buf, m, "w.", "x.");
	appendStringInfoString(buf, ") AS softmig_ls, (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(h) "
						   "ORDER BY pg_catalog.to_jsonb(h)::pg_catalog.text) FROM softmig_h h WHERE ");
	append_match(buf, m, "h.", "x.");
	appendStringInfoString(buf, ") AS softmig_ts FROM softmig_x x) ");
	append_parity_verdict(buf);
}

/*
 * sql_parity_aggregate
 *		OTM_PARITY_AGG.
 *		Per entity, legacy's row and the aggregate of its target set
 *		(the backward mapping, as the projection computes it), over
 *		the legacy key and the aggregated columns; EXCEPT ALL finds the
 *		entities that differ (all of them when $1 is NULL, else the
 *		one $1 names).
 */
static void
sql_parity_aggregate(StringInfo buf, SoftmigMigration *m)
{
	char	   *target = softmig_qualified_relname(m->target);
	char	   *legacy = softmig_qualified_relname(m->legacy);
	ListCell   *c;
	ListCell   *e;
	List	   *acols;
	List	   *aexprs;

	softmig_otm_aggregated_cols(m, &acols, &aexprs);
	appendStringInfoString(buf, "WITH softmig_a AS (SELECT ");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%s(t.%s)::%s AS %s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(e)), softmig_otm_col_type(m->legacy, lfirst(c)),
						 quote_identifier(lfirst(c)));
	forboth(c, acols, e, aexprs)
		appendStringInfo(buf, ", (%s\n)::%s AS %s", (char *) lfirst(e),
						 softmig_otm_col_type(m->legacy, lfirst(c)), quote_identifier(lfirst(c)));
	appendStringInfo(buf, " FROM %s t WHERE ", target);
	foreach(c, m->target_key)
		appendStringInfo(buf, "t.%s IS NOT NULL AND ", quote_identifier(lfirst(c)));
	appendStringInfoString(buf, "($1 IS NULL OR (");
	softmig_otm_append_idents(buf, "t.", m->target_key);
	appendStringInfoString(buf, ") IN (");
	append_key_of_param(buf, m, legacy);
	appendStringInfoString(buf, ")) GROUP BY ");
	softmig_otm_append_idents(buf, "t.", m->target_key);
	appendStringInfoString(buf, "), softmig_l AS (SELECT ");
	softmig_otm_append_idents(buf, "l.", m->legacy_key);
	foreach(c, acols)
		appendStringInfo(buf, ", l.%s", quote_identifier(lfirst(c)));
	appendStringInfo(buf, " FROM %s l WHERE $1 IS NULL OR (", legacy);
	softmig_otm_append_idents(buf, "l.", m->legacy_key);
	appendStringInfoString(buf, ") IN (SELECT ");
	softmig_otm_append_idents(buf, "c.", m->legacy_key);
	appendStringInfo(buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c)), softmig_d AS ("
					 "(SELECT * FROM softmig_l EXCEPT ALL SELECT * FROM softmig_a) "
					 "UNION ALL (SELECT * FROM softmig_a EXCEPT ALL SELECT * FROM softmig_l)), "
					 "softmig_x AS (SELECT ", legacy);
	softmig_otm_append_idents(buf, NULL, m->legacy_key);
	appendStringInfoString(buf, " FROM softmig_d UNION SELECT ");
	softmig_otm_append_idents(buf, NULL, m->legacy_key);
	appendStringInfoString(buf, " FROM softmig_l WHERE $1 IS NOT NULL UNION SELECT ");
	softmig_otm_append_idents(buf, NULL, m->legacy_key);
	appendStringInfoString(buf, " FROM softmig_a WHERE $1 IS NOT NULL), softmig_s AS (SELECT ");
	append_key_json(buf, m, "x.");
	appendStringInfoString(buf, " AS softmig_key, EXISTS (SELECT 1 FROM softmig_d d WHERE ");
	foreach(c, m->legacy_key)
		appendStringInfo(buf, "%sd.%s = x.%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	appendStringInfoString(buf, ") AS softmig_diff, (SELECT pg_catalog.to_jsonb(l) FROM softmig_l l WHERE ");
	foreach(c, m->legacy_key)
		appendStringInfo(buf, "%sl.%s = x.%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	appendStringInfoString(buf, ") AS softmig_ls, (SELECT pg_catalog.to_jsonb(a) FROM softmig_a a WHERE ");
	foreach(c, m->legacy_key)
		appendStringInfo(buf, "%sa.%s = x.%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	appendStringInfoString(buf, ") AS softmig_ts FROM softmig_x x) ");
	append_parity_verdict(buf);
}

/*
 * sql_bf_delete
 *		OTM_BF_DELETE: the sets of those orphan entities.
 */
static void
sql_bf_delete(StringInfo buf, SoftmigMigration *m)
{
	char	   *target = softmig_qualified_relname(m->target);
	ListCell   *c;

	appendStringInfo(buf, "DELETE FROM %s t USING (SELECT DISTINCT * FROM softmig_old) o WHERE ", target);
	foreach(c, m->target_key)
		appendStringInfo(buf, "t.%s = o.%s AND ", quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	append_none_on(buf, m, false, "t.");
}

/*
 * sql_keys
 *		OTM_KEYS: the legacy keys (jsonb, typed like legacy's key columns)
 *		of the entities a statement touched, as one jsonb array (NULL when
 *		none), for the quarantine check.
 */
static void
sql_keys(StringInfo buf, SoftmigMigration *m, bool legacy_side, bool has_new, bool has_old)
{
	ListCell   *c;

	appendStringInfoString(buf, "SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(");
	foreach(c, m->legacy_key)
		appendStringInfo(buf, "%s%s, (x.softmig_e%d)::%s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(c)), foreach_current_index(c) + 1,
						 softmig_otm_col_type(m->legacy, lfirst(c)));
	appendStringInfoString(buf, ")) FROM (");
	append_touched(buf, m, legacy_side, has_new, has_old);
	appendStringInfoString(buf, ") x");
}

/*
 * sql_entities
 *		OTM_ENTITIES: the entities $1 names (a legacy key as jsonb, or a
 *		jsonb array of them) as rows of the table whose write stands for them: legacy's row type
 *		while legacy is the authority (relid = legacy), else the target's,
 *		with the entity columns set (relid = target).  The statements of
 *		the write path then read them as a transition table.
 */
static void
sql_entities(StringInfo buf, SoftmigMigration *m, Oid relid)
{
	const char *keys = "CASE pg_catalog.jsonb_typeof($1) WHEN 'array' THEN $1 ELSE pg_catalog.jsonb_build_array($1) END";
	ListCell   *c;
	ListCell   *e;

	if (relid == m->legacy)
	{
		appendStringInfo(buf, "SELECT r.* FROM pg_catalog.jsonb_populate_recordset(NULL::%s, %s) r",
						 softmig_qualified_relname(m->legacy), keys);
		return;
	}
	appendStringInfo(buf, "SELECT r.* FROM pg_catalog.jsonb_array_elements(%s) AS k(v), "
					 "LATERAL pg_catalog.jsonb_populate_record(NULL::%s, pg_catalog.jsonb_build_object(",
					 keys, softmig_qualified_relname(m->target));
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(buf, "%s%s, k.v OPERATOR(pg_catalog.->) %s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(e)), quote_literal_cstr(lfirst(c)));
	appendStringInfoString(buf, ")) r");
}

/*
 * sql_gone
 *		OTM_GONE: of the entities in softmig_new (legacy-shaped rows), those
 *		legacy holds no row for (their sets are to be deleted).
 */
static void
sql_gone(StringInfo buf, SoftmigMigration *m)
{
	char	   *legacy = softmig_qualified_relname(m->legacy);

	appendStringInfoString(buf, "SELECT n.* FROM softmig_new n WHERE NOT EXISTS (SELECT 1 FROM ");
	appendStringInfo(buf, "%s l WHERE ", legacy);
	{
		ListCell   *c;

		foreach(c, m->legacy_key)
			appendStringInfo(buf, "%sl.%s = n.%s", foreach_current_index(c) > 0 ? " AND " : "",
							 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	}
	appendStringInfoChar(buf, ')');
}

/*
 * softmig_otm_sql
 *		The SQL text of statement kind for a statement firing on relid (the
 *		relation id is part of the text, so the kept plan of a partition's
 *		transition tables is not shared with the root's).  has_new/has_old:
 *		which transition tables the statement has.
 */
char *
softmig_otm_sql(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "/* softmig one_to_many %d rel %u */ ", (int) kind, relid);
	switch (kind)
	{
		case OTM_MIRROR_UPSERT:
			sql_mirror_upsert(&buf, m);
			break;
		case OTM_MIRROR_MOVE:
			sql_mirror_move(&buf, m);
			break;
		case OTM_MIRROR_DELETE:
			sql_mirror_delete(&buf, m);
			break;
		case OTM_LOCK:
		case OTM_LOCK_LEGACY:
			sql_lock(&buf, m, kind, has_new, has_old);
			break;
		case OTM_AGGREGATE:
			sql_aggregate(&buf, m, has_new, has_old);
			break;
		case OTM_PROJECT:
			sql_project(&buf, m);
			break;
		case OTM_BAD_KEYS:
			sql_bad_keys(&buf);
			break;
		case OTM_BF_FIRST:
		case OTM_BF_NEXT:
		case OTM_BF_SWEEP:
			sql_bf_batch(&buf, m, kind);
			break;
		case OTM_BF_FRESH:
			sql_bf_fresh(&buf, m);
			break;
		case OTM_BF_MISSING:
			sql_bf_missing(&buf, m);
			break;
		case OTM_BF_ORPHANS:
			sql_bf_orphans(&buf, m);
			break;
		case OTM_PARITY:
		case OTM_INSPECT:
			sql_parity_sets(&buf, m, kind);
			break;
		case OTM_PARITY_AGG:
			sql_parity_aggregate(&buf, m);
			break;
		case OTM_BF_DELETE:
			sql_bf_delete(&buf, m);
			break;
		case OTM_KEYS:
			sql_keys(&buf, m, relid == m->legacy, has_new, has_old);
			break;
		case OTM_ENTITIES:
			sql_entities(&buf, m, relid);
			break;
		case OTM_GONE:
			sql_gone(&buf, m);
			break;
	}
	return buf.data;
}
