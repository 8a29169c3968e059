/*-------------------------------------------------------------------------
 *
 * onetomany.c
 *	  One-to-many migrations: one legacy row implies a set of target rows.
 *
 *	  A migration created with options cardinality "one_to_many" and entity
 *	  {legacy key column: target column} gathers, per legacy row (an
 *	  entity), the set of target rows whose entity columns equal its key.
 *	  The target's own key (grant_id) identifies a member of the set and is
 *	  never derived from legacy.
 *
 *	  mirrored (legacy is the authority): the write trigger on legacy
 *	  rewrites exactly the set each written legacy row implies.  The
 *	  expansion of a legacy row is one target row, the forward mapping of
 *	  it; target rows the expansion still yields stay as they are (matched
 *	  on all mapped columns, as multisets); of the rest, as many as the
 *	  expansion yields new rows are updated in place (keeping their
 *	  identity), the others deleted, and the expansion's remaining rows
 *	  inserted.  A change of the legacy key first moves
 *	  the set to the new key (the set keeps its identities), then the set
 *	  is reconciled.  A deleted legacy row deletes its set.  All of it is
 *	  one or two set-based statements per application statement, with kept
 *	  plans.
 *
 *	  new_write and new_read (the target is the authority): at the end of
 *	  each statement on the target, the entities it touched (entity
 *	  columns of its old and new rows) are locked (transaction advisory
 *	  locks, see lock_entities), then re-aggregated once with a fresh
 *	  snapshot: the backward mapping holds aggregates over the set, the
 *	  option representable an aggregate predicate.  The aggregated rows are
 *	  upserted into legacy; an empty set deletes the legacy row.  The
 *	  advisory lock serialises the statements of concurrent transactions
 *	  that write the same entity, so neither aggregate misses the other's
 *	  rows (READ COMMITTED takes the fresh snapshot after the wait;
 *	  REPEATABLE READ and SERIALIZABLE fail with 40001 instead of losing a
 *	  write).  A set whose representable predicate is false, or that
 *	  legacy's constraints refuse, closes the rollback envelope (or, with
 *	  on_new_only = reject while it is open, the statement fails with
 *	  SM004).
 *
 *	  The set is read as the target's owner (the backward aggregates and
 *	  representable are evaluated there), legacy is written as legacy's
 *	  owner, through an ephemeral named relation holding the aggregated
 *	  rows.
 *
 *	  Backfill (softmig_otm_bf_step) rewrites the sets entity by entity
 *	  under the same entity locks as the mirror, so a batch and a live
 *	  writer of one entity serialise and the later one sees the other's
 *	  commit.  Parity and inspect compare per entity: while legacy is the
 *	  authority, a legacy row's expansion with its target set; from
 *	  new_write on, the legacy row with the aggregate of its set; both as
 *	  multisets (EXCEPT ALL), so neither the order of a set nor the
 *	  target's own key can make a difference.  Row-at-a-time tools
 *	  (hydrate, inspect_group, transition rules, shape views, per-field
 *	  authority) refuse a one-to-many migration (softmig_otm_refuse).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "softmig.h"
#include "sqlstate.h"

/* The ephemeral relation holding one statement's aggregated entities. */
#define OTM_AGG "softmig_agg"

/* Which statement of the write path: its SQL text is built per kind. */
typedef enum OtmStmt
{
	OTM_MIRROR_UPSERT,			/* legacy INSERT/UPDATE -> reconcile sets */
	OTM_MIRROR_MOVE,			/* legacy UPDATE -> move sets of changed keys */
	OTM_MIRROR_DELETE,			/* legacy DELETE -> delete sets */
	OTM_LOCK,					/* target write -> lock touched entities */
	OTM_LOCK_LEGACY,			/* legacy write -> lock touched entities */
	OTM_AGGREGATE,				/* target write -> aggregate touched sets */
	OTM_PROJECT,				/* the aggregated rows -> legacy */
	OTM_BAD_KEYS,				/* keys of the unrepresentable entities */
	OTM_BF_FIRST,				/* backfill: the first legacy rows */
	OTM_BF_NEXT,				/* backfill: legacy rows after a key */
	OTM_BF_FRESH,				/* backfill: current versions of those rows */
	OTM_BF_MISSING,				/* backfill: count legacy rows without a set */
	OTM_BF_SWEEP,				/* backfill: legacy rows without a set */
	OTM_BF_ORPHANS,				/* backfill: entities legacy lacks */
	OTM_BF_DELETE,				/* backfill: their sets */
	OTM_PARITY,					/* parity: every entity whose sets differ */
	OTM_PARITY_AGG,				/* parity: legacy rows unlike their set's
								 * aggregate ($1 NULL), or one entity's */
	OTM_INSPECT					/* inspect: one entity, $1 its legacy key */
} OtmStmt;

/*
 * otm_enabled
 *		Is migration m one-to-many?  (Option cardinality.)
 */
bool
softmig_otm_enabled(SoftmigMigration *m)
{
	char	   *c = softmig_option_text(m, "cardinality");

	return c != NULL && strcmp(c, "one_to_many") == 0;
}

/*
 * softmig_otm_refuse
 *		Raise 0A000 when m is one-to-many: what (a row-at-a-time tool) does
 *		not work on sets.
 */
void
softmig_otm_refuse(SoftmigMigration *m, const char *what)
{
	if (m->one_to_many)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s are not supported for migration \"%s\": it is one_to_many", what, m->name),
				 errdetail("A one_to_many migration maps one legacy row to a set of target rows; its write path, backfill, parity and inspect work per entity."),
				 errhint("See doc/shapes.md, \"One-to-many\".")));
}

/*
 * col_type
 *		The qualified type name (no typmod) of column col of relid.
 */
static char *
col_type(Oid relid, const char *col)
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
 * append_idents
 *		Append the quoted names of cols, each preceded by alias.
 */
static void
append_idents(StringInfo buf, const char *alias, List *cols)
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
 * aggregated_cols
 *		The backward-mapped legacy columns that are not key columns (their
 *		expressions are the aggregates), and their expressions.
 */
static void
aggregated_cols(SoftmigMigration *m, List **cols, List **exprs)
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
								 quote_identifier(lfirst(c)), col_type(m->target, lfirst(e)),
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
						 col_type(other, lfirst(e)));
	appendStringInfoChar(buf, ')');
}

/*
 * otm_sql
 *		The SQL text of statement kind for a statement firing on relid (the
 *		relation id is part of the text, so the kept plan of a partition's
 *		transition tables is not shared with the root's).  has_new/has_old:
 *		which transition tables the statement has.
 */
static char *
otm_sql(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old)
{
	StringInfoData buf;
	char	   *target = softmig_qualified_relname(m->target);
	char	   *legacy = softmig_qualified_relname(m->legacy);
	int			nkey = list_length(m->legacy_key);
	int			nfwd = list_length(m->fwd_cols);
	ListCell   *c;
	ListCell   *e;
	List	   *acols;
	List	   *aexprs;

	initStringInfo(&buf);
	appendStringInfo(&buf, "/* softmig one_to_many %d rel %u */ ", (int) kind, relid);
	switch (kind)
	{
		case OTM_MIRROR_UPSERT:

			/*
			 * The expansion of each written legacy row, typed as the target
			 * (softmig_w), and the sets it replaces (softmig_h).  Both are
			 * numbered within equal rows, so they match as multisets: a row
			 * in both stays as it is.  Of the rest (softmig_hx, softmig_wx),
			 * numbered per entity, pairs are updated in place (the set
			 * member keeps its identity), what the target has beyond is
			 * deleted, what the expansion has beyond is inserted.
			 */
			appendStringInfoString(&buf, "WITH softmig_w AS (SELECT ");
			forboth(c, m->fwd_cols, e, m->fwd_exprs)
				appendStringInfo(&buf, "%s(%s\n)::%s AS softmig_c%d",
								 foreach_current_index(c) > 0 ? ", " : "",
								 (char *) lfirst(e), col_type(m->target, lfirst(c)),
								 foreach_current_index(c) + 1);
			appendStringInfoString(&buf, " FROM softmig_new), softmig_wn AS (SELECT w.*, "
								   "pg_catalog.row_number() OVER (PARTITION BY ");
			append_list(&buf, "w.", "softmig_c", nfwd);
			appendStringInfoString(&buf, ") AS softmig_n FROM softmig_w w), softmig_h AS ("
								   "SELECT t.tableoid AS softmig_tab, t.ctid AS softmig_tid, ");
			foreach(c, m->fwd_cols)
				appendStringInfo(&buf, "t.%s AS softmig_c%d, ", quote_identifier(lfirst(c)),
								 foreach_current_index(c) + 1);
			appendStringInfoString(&buf, "pg_catalog.row_number() OVER (PARTITION BY ");
			append_idents(&buf, "t.", m->fwd_cols);
			appendStringInfo(&buf, " ORDER BY t.ctid) AS softmig_n FROM %s t WHERE (", target);
			append_idents(&buf, "t.", m->target_key);
			appendStringInfoString(&buf, ") IN (SELECT ");
			append_entity(&buf, m, "w.");
			appendStringInfoString(&buf, " FROM softmig_w w)), softmig_hx AS (SELECT h.*, "
								   "pg_catalog.row_number() OVER (PARTITION BY ");
			append_entity(&buf, m, "h.");
			appendStringInfoString(&buf, " ORDER BY h.softmig_tid) AS softmig_r FROM softmig_h h WHERE NOT EXISTS ("
								   "SELECT 1 FROM softmig_wn w WHERE ");
			append_same_row(&buf, m, nfwd);
			appendStringInfoString(&buf, ")), softmig_wx AS (SELECT w.*, pg_catalog.row_number() OVER (PARTITION BY ");
			append_entity(&buf, m, "w.");
			appendStringInfoString(&buf, ") AS softmig_r FROM softmig_wn w WHERE NOT EXISTS ("
								   "SELECT 1 FROM softmig_h h WHERE ");
			append_same_row(&buf, m, nfwd);
			appendStringInfo(&buf, ")), softmig_u AS (UPDATE %s t SET ", target);
			foreach(c, m->fwd_cols)
				appendStringInfo(&buf, "%s%s = x.softmig_c%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
			appendStringInfoString(&buf, " FROM softmig_hx h JOIN softmig_wx x ON ");
			append_pair(&buf, m);
			appendStringInfoString(&buf, " WHERE t.tableoid OPERATOR(pg_catalog.=) h.softmig_tab "
								   "AND t.ctid OPERATOR(pg_catalog.=) h.softmig_tid), ");
			appendStringInfo(&buf, "softmig_d AS (DELETE FROM %s t USING softmig_hx h "
							 "WHERE t.tableoid OPERATOR(pg_catalog.=) h.softmig_tab "
							 "AND t.ctid OPERATOR(pg_catalog.=) h.softmig_tid "
							 "AND NOT EXISTS (SELECT 1 FROM softmig_wx x WHERE ", target);
			append_pair(&buf, m);
			appendStringInfo(&buf, ")) INSERT INTO %s (", target);
			append_idents(&buf, NULL, m->fwd_cols);
			appendStringInfoString(&buf, ") SELECT ");
			append_list(&buf, "x.", "softmig_c", nfwd);
			appendStringInfoString(&buf, " FROM softmig_wx x WHERE NOT EXISTS (SELECT 1 FROM softmig_hx h WHERE ");
			append_pair(&buf, m);
			appendStringInfoChar(&buf, ')');
			break;

		case OTM_MIRROR_MOVE:
			/* old and new rows in step: the sets of changed keys move */
			appendStringInfoString(&buf, "WITH softmig_o AS (SELECT pg_catalog.row_number() OVER () AS softmig_n, ");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%s(%s)::%s AS softmig_k%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(c)), col_type(m->target, lfirst(e)),
								 foreach_current_index(c) + 1);
			appendStringInfoString(&buf, " FROM softmig_old), softmig_nw AS (SELECT pg_catalog.row_number() OVER () AS softmig_n, ");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%s(%s)::%s AS softmig_k%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(c)), col_type(m->target, lfirst(e)),
								 foreach_current_index(c) + 1);
			appendStringInfoString(&buf, " FROM softmig_new), softmig_mv AS (SELECT ");
			for (int i = 1; i <= nkey; i++)
				appendStringInfo(&buf, "%so.softmig_k%d AS softmig_o%d, n.softmig_k%d AS softmig_k%d",
								 i > 1 ? ", " : "", i, i, i, i);
			appendStringInfoString(&buf, " FROM softmig_o o JOIN softmig_nw n USING (softmig_n) WHERE ROW(");
			append_list(&buf, "o.", "softmig_k", nkey);
			appendStringInfoString(&buf, ") IS DISTINCT FROM ROW(");
			append_list(&buf, "n.", "softmig_k", nkey);
			appendStringInfo(&buf, ")) UPDATE %s t SET ", target);
			foreach(c, m->target_key)
				appendStringInfo(&buf, "%s%s = mv.softmig_k%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
			appendStringInfoString(&buf, " FROM softmig_mv mv WHERE ");
			foreach(c, m->target_key)
				appendStringInfo(&buf, "%st.%s = mv.softmig_o%d", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
			break;

		case OTM_MIRROR_DELETE:
			appendStringInfo(&buf, "DELETE FROM %s t USING softmig_old o WHERE ", target);
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%st.%s = (o.%s)::%s", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(e)), quote_identifier(lfirst(c)),
								 col_type(m->target, lfirst(e)));
			break;

		case OTM_LOCK:
		case OTM_LOCK_LEGACY:
			/* the hashes of the touched entities, in one order (lock_entities) */
			appendStringInfoString(&buf, "SELECT DISTINCT pg_catalog.hashtext(ROW(");
			append_list(&buf, "x.", "softmig_e", nkey);
			appendStringInfoString(&buf, ")::pg_catalog.text) AS softmig_h FROM (");
			append_touched(&buf, m, kind == OTM_LOCK_LEGACY, has_new, has_old);
			appendStringInfoString(&buf, ") x ORDER BY 1");
			break;

		case OTM_AGGREGATE:
			aggregated_cols(m, &acols, &aexprs);
			appendStringInfoString(&buf, "WITH softmig_x(");
			append_list(&buf, NULL, "softmig_e", nkey);
			appendStringInfoString(&buf, ") AS (");
			append_touched(&buf, m, false, has_new, has_old);
			appendStringInfoString(&buf, ") SELECT ");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "(softmig_x.softmig_e%d)::%s AS softmig_k%d, ",
								 foreach_current_index(c) + 1, col_type(m->legacy, lfirst(c)),
								 foreach_current_index(c) + 1);
			appendStringInfo(&buf, "pg_catalog.count(t.%s) AS softmig_n, ",
							 quote_identifier(linitial(m->target_key)));
			forboth(c, acols, e, aexprs)
				appendStringInfo(&buf, "(%s\n)::%s AS softmig_b%d, ", (char *) lfirst(e),
								 col_type(m->legacy, lfirst(c)), foreach_current_index(c) + 1);
			appendStringInfo(&buf, "COALESCE((%s\n), true) AS softmig_ok, pg_catalog.jsonb_build_object(",
							 m->representable ? m->representable : "true");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%s%s, softmig_x.softmig_e%d", foreach_current_index(c) > 0 ? ", " : "",
								 quote_literal_cstr(lfirst(c)), foreach_current_index(c) + 1);
			appendStringInfo(&buf, ") AS softmig_key FROM softmig_x LEFT JOIN %s t ON ", target);
			foreach(c, m->target_key)
				appendStringInfo(&buf, "%st.%s = softmig_x.softmig_e%d", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(c)), foreach_current_index(c) + 1);
			appendStringInfoString(&buf, " GROUP BY ");
			append_list(&buf, "softmig_x.", "softmig_e", nkey);
			break;

		case OTM_PROJECT:
			aggregated_cols(m, &acols, &aexprs);
			appendStringInfo(&buf, "WITH softmig_d AS (DELETE FROM %s l USING " OTM_AGG " a "
							 "WHERE a.softmig_n OPERATOR(pg_catalog.=) 0", legacy);
			foreach(c, m->legacy_key)
				appendStringInfo(&buf, " AND l.%s = a.softmig_k%d", quote_identifier(lfirst(c)),
								 foreach_current_index(c) + 1);
			appendStringInfo(&buf, ") INSERT INTO %s AS l (", legacy);
			append_idents(&buf, NULL, m->legacy_key);
			foreach(c, acols)
				appendStringInfo(&buf, ", %s", quote_identifier(lfirst(c)));
			appendStringInfoString(&buf, ") SELECT ");
			append_list(&buf, "a.", "softmig_k", nkey);
			for (int i = 1; i <= list_length(acols); i++)
				appendStringInfo(&buf, ", a.softmig_b%d", i);
			appendStringInfoString(&buf, " FROM " OTM_AGG " a WHERE a.softmig_n OPERATOR(pg_catalog.>) 0 ON CONFLICT (");
			append_idents(&buf, NULL, m->legacy_key);
			if (acols == NIL)
				appendStringInfoString(&buf, ") DO NOTHING");
			else
			{
				appendStringInfoString(&buf, ") DO UPDATE SET ");
				foreach(c, acols)
					appendStringInfo(&buf, "%s%s = EXCLUDED.%s", foreach_current_index(c) > 0 ? ", " : "",
									 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
				appendStringInfoString(&buf, " WHERE ROW(");
				append_idents(&buf, "l.", acols);
				appendStringInfoString(&buf, ") IS DISTINCT FROM ROW(");
				append_idents(&buf, "EXCLUDED.", acols);
				appendStringInfoChar(&buf, ')');
			}
			break;

		case OTM_BAD_KEYS:
			appendStringInfoString(&buf, "SELECT pg_catalog.count(*), pg_catalog.jsonb_agg(a.softmig_key) FROM "
								   OTM_AGG " a WHERE a.softmig_n OPERATOR(pg_catalog.>) 0 AND NOT a.softmig_ok");
			break;

		case OTM_BF_FIRST:
		case OTM_BF_NEXT:
		case OTM_BF_SWEEP:
			/* $1: the last key of the previous batch (jsonb), $2: batch size */
			appendStringInfoString(&buf, "SELECT l.*, ");
			append_key_json(&buf, m, "l.");
			appendStringInfo(&buf, " AS softmig_key FROM %s l", legacy);
			if (kind == OTM_BF_NEXT)
			{
				appendStringInfo(&buf, ", pg_catalog.jsonb_populate_record(NULL::%s, $1) c WHERE ROW(", legacy);
				append_idents(&buf, "l.", m->legacy_key);
				appendStringInfoString(&buf, ") > ROW(");
				append_idents(&buf, "c.", m->legacy_key);
				appendStringInfoChar(&buf, ')');
			}
			else if (kind == OTM_BF_SWEEP)
			{
				appendStringInfoString(&buf, " WHERE $1 IS NULL AND ");
				append_none_on(&buf, m, true, "l.");
			}
			else
				appendStringInfoString(&buf, " WHERE $1 IS NULL");
			appendStringInfoString(&buf, " ORDER BY ");
			append_idents(&buf, "l.", m->legacy_key);
			appendStringInfoString(&buf, " LIMIT $2");
			break;

		case OTM_BF_FRESH:
			/* the batch's rows as they are now (after the entity locks) */
			appendStringInfoString(&buf, "SELECT l.*, ");
			append_key_json(&buf, m, "l.");
			appendStringInfo(&buf, " AS softmig_key FROM %s l WHERE (", legacy);
			append_idents(&buf, "l.", m->legacy_key);
			appendStringInfoString(&buf, ") IN (SELECT ");
			append_idents(&buf, "b.", m->legacy_key);
			appendStringInfoString(&buf, " FROM softmig_new b)");
			break;

		case OTM_BF_MISSING:
			appendStringInfo(&buf, "SELECT pg_catalog.count(*) FROM %s l WHERE ", legacy);
			append_none_on(&buf, m, true, "l.");
			break;

		case OTM_BF_ORPHANS:
			appendStringInfoString(&buf, "SELECT DISTINCT ");
			append_idents(&buf, "t.", m->target_key);
			appendStringInfo(&buf, " FROM %s t WHERE ", target);
			foreach(c, m->target_key)
				appendStringInfo(&buf, "t.%s IS NOT NULL AND ", quote_identifier(lfirst(c)));
			append_none_on(&buf, m, false, "t.");
			appendStringInfoString(&buf, " LIMIT $2");
			break;

		case OTM_PARITY:
		case OTM_INSPECT:

			/*
			 * Per entity, the expansion of its legacy row and its target set
			 * as multisets of the forward-mapped columns (EXCEPT ALL: order
			 * and the target's own key play no part).  OTM_PARITY yields the
			 * entities that differ, OTM_INSPECT the one entity $1 names.
			 */
			appendStringInfoString(&buf, "WITH softmig_w AS (SELECT ");
			forboth(c, m->fwd_cols, e, m->fwd_exprs)
				appendStringInfo(&buf, "%s(%s\n)::%s AS %s", foreach_current_index(c) > 0 ? ", " : "",
								 (char *) lfirst(e), col_type(m->target, lfirst(c)),
								 quote_identifier(lfirst(c)));
			appendStringInfo(&buf, " FROM %s l", legacy);
			if (kind == OTM_INSPECT)
			{
				appendStringInfoString(&buf, " WHERE (");
				append_idents(&buf, "l.", m->legacy_key);
				appendStringInfoString(&buf, ") IN (SELECT ");
				append_idents(&buf, "c.", m->legacy_key);
				appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c)", legacy);
			}
			appendStringInfoString(&buf, "), softmig_h AS (SELECT ");
			append_idents(&buf, "t.", m->fwd_cols);
			appendStringInfo(&buf, " FROM %s t WHERE ", target);
			foreach(c, m->target_key)
				appendStringInfo(&buf, "%st.%s IS NOT NULL", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(c)));
			if (kind == OTM_INSPECT)
			{
				appendStringInfo(&buf, " AND (");
				append_idents(&buf, "t.", m->target_key);
				appendStringInfo(&buf, ") IN (SELECT ");
				forboth(c, m->legacy_key, e, m->target_key)
					appendStringInfo(&buf, "%s(c.%s)::%s", foreach_current_index(c) > 0 ? ", " : "",
									 quote_identifier(lfirst(c)), col_type(m->target, lfirst(e)));
				appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c)", legacy);
			}
			appendStringInfoString(&buf, "), softmig_x AS (SELECT DISTINCT ");
			append_idents(&buf, "d.", m->target_key);
			if (kind == OTM_PARITY)
				appendStringInfoString(&buf, " FROM ((SELECT * FROM softmig_w EXCEPT ALL SELECT * FROM softmig_h) "
									   "UNION ALL (SELECT * FROM softmig_h EXCEPT ALL SELECT * FROM softmig_w)) d");
			else
				appendStringInfoString(&buf, " FROM (SELECT * FROM softmig_w UNION ALL SELECT * FROM softmig_h) d");
			appendStringInfoString(&buf, "), softmig_s AS (SELECT pg_catalog.jsonb_build_object(");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%s%s, (x.%s)::%s", foreach_current_index(c) > 0 ? ", " : "",
								 quote_literal_cstr(lfirst(c)), quote_identifier(lfirst(e)),
								 col_type(m->legacy, lfirst(c)));
			appendStringInfoString(&buf, ") AS softmig_key, EXISTS ((SELECT * FROM softmig_w w WHERE ");
			append_match(&buf, m, "w.", "x.");
			appendStringInfoString(&buf, " EXCEPT ALL SELECT * FROM softmig_h h WHERE ");
			append_match(&buf, m, "h.", "x.");
			appendStringInfoString(&buf, ") UNION ALL (SELECT * FROM softmig_h h WHERE ");
			append_match(&buf, m, "h.", "x.");
			appendStringInfoString(&buf, " EXCEPT ALL SELECT * FROM softmig_w w WHERE ");
			append_match(&buf, m, "w.", "x.");
			appendStringInfoString(&buf, ")) AS softmig_diff, (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w) "
								   "ORDER BY pg_catalog.to_jsonb(w)::pg_catalog.text) FROM softmig_w w WHERE ");
			append_match(&buf, m, "w.", "x.");
			appendStringInfoString(&buf, ") AS softmig_ls, (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(h) "
								   "ORDER BY pg_catalog.to_jsonb(h)::pg_catalog.text) FROM softmig_h h WHERE ");
			append_match(&buf, m, "h.", "x.");
			appendStringInfoString(&buf, ") AS softmig_ts FROM softmig_x x) SELECT CASE "
								   "WHEN s.softmig_ls IS NULL THEN 'missing_in_legacy' "
								   "WHEN s.softmig_ts IS NULL THEN 'missing_in_target' "
								   "WHEN NOT s.softmig_diff THEN 'equal' "
								   "ELSE 'mismatch' END AS kind, s.softmig_key, s.softmig_ls, s.softmig_ts "
								   "FROM softmig_s s ORDER BY s.softmig_key");
			break;

		case OTM_PARITY_AGG:

			/*
			 * Per entity, legacy's row and the aggregate of its target set
			 * (the backward mapping, as the projection computes it), over
			 * the legacy key and the aggregated columns; EXCEPT ALL finds the
			 * entities that differ (all of them when $1 is NULL, else the
			 * one $1 names).
			 */
			aggregated_cols(m, &acols, &aexprs);
			appendStringInfoString(&buf, "WITH softmig_a AS (SELECT ");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%s(t.%s)::%s AS %s", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(e)), col_type(m->legacy, lfirst(c)),
								 quote_identifier(lfirst(c)));
			forboth(c, acols, e, aexprs)
				appendStringInfo(&buf, ", (%s\n)::%s AS %s", (char *) lfirst(e),
								 col_type(m->legacy, lfirst(c)), quote_identifier(lfirst(c)));
			appendStringInfo(&buf, " FROM %s t WHERE ", target);
			foreach(c, m->target_key)
				appendStringInfo(&buf, "t.%s IS NOT NULL AND ", quote_identifier(lfirst(c)));
			appendStringInfoString(&buf, "($1 IS NULL OR (");
			append_idents(&buf, "t.", m->target_key);
			appendStringInfoString(&buf, ") IN (SELECT ");
			forboth(c, m->legacy_key, e, m->target_key)
				appendStringInfo(&buf, "%s(c.%s)::%s", foreach_current_index(c) > 0 ? ", " : "",
								 quote_identifier(lfirst(c)), col_type(m->target, lfirst(e)));
			appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c)) GROUP BY ", legacy);
			append_idents(&buf, "t.", m->target_key);
			appendStringInfoString(&buf, "), softmig_l AS (SELECT ");
			append_idents(&buf, "l.", m->legacy_key);
			foreach(c, acols)
				appendStringInfo(&buf, ", l.%s", quote_identifier(lfirst(c)));
			appendStringInfo(&buf, " FROM %s l WHERE $1 IS NULL OR (", legacy);
			append_idents(&buf, "l.", m->legacy_key);
			appendStringInfoString(&buf, ") IN (SELECT ");
			append_idents(&buf, "c.", m->legacy_key);
			appendStringInfo(&buf, " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) c)), softmig_d AS ("
							 "(SELECT * FROM softmig_l EXCEPT ALL SELECT * FROM softmig_a) "
							 "UNION ALL (SELECT * FROM softmig_a EXCEPT ALL SELECT * FROM softmig_l)), "
							 "softmig_x AS (SELECT ", legacy);
			append_idents(&buf, NULL, m->legacy_key);
			appendStringInfoString(&buf, " FROM softmig_d UNION SELECT ");
			append_idents(&buf, NULL, m->legacy_key);
			appendStringInfoString(&buf, " FROM softmig_l WHERE $1 IS NOT NULL UNION SELECT ");
			append_idents(&buf, NULL, m->legacy_key);
			appendStringInfoString(&buf, " FROM softmig_a WHERE $1 IS NOT NULL), softmig_s AS (SELECT ");
			append_key_json(&buf, m, "x.");
			appendStringInfoString(&buf, " AS softmig_key, EXISTS (SELECT 1 FROM softmig_d d WHERE ");
			foreach(c, m->legacy_key)
				appendStringInfo(&buf, "%sd.%s = x.%s", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
			appendStringInfoString(&buf, ") AS softmig_diff, (SELECT pg_catalog.to_jsonb(l) FROM softmig_l l WHERE ");
			foreach(c, m->legacy_key)
				appendStringInfo(&buf, "%sl.%s = x.%s", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
			appendStringInfoString(&buf, ") AS softmig_ls, (SELECT pg_catalog.to_jsonb(a) FROM softmig_a a WHERE ");
			foreach(c, m->legacy_key)
				appendStringInfo(&buf, "%sa.%s = x.%s", foreach_current_index(c) > 0 ? " AND " : "",
								 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
			appendStringInfoString(&buf, ") AS softmig_ts FROM softmig_x x) SELECT CASE "
								   "WHEN s.softmig_ls IS NULL THEN 'missing_in_legacy' "
								   "WHEN s.softmig_ts IS NULL THEN 'missing_in_target' "
								   "WHEN NOT s.softmig_diff THEN 'equal' "
								   "ELSE 'mismatch' END AS kind, s.softmig_key, s.softmig_ls, s.softmig_ts "
								   "FROM softmig_s s ORDER BY s.softmig_key");
			break;

		case OTM_BF_DELETE:
			appendStringInfo(&buf, "DELETE FROM %s t USING (SELECT DISTINCT * FROM softmig_old) o WHERE ", target);
			foreach(c, m->target_key)
				appendStringInfo(&buf, "t.%s = o.%s AND ", quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
			append_none_on(&buf, m, false, "t.");
			break;
	}
	return buf.data;
}

/* One statement text, kept in the migration's cache entry (m->otm_sql). */
typedef struct OtmSqlText
{
	OtmStmt		kind;
	Oid			relid;
	bool		has_new;
	bool		has_old;
	char	   *sql;
} OtmSqlText;

/*
 * otm_text
 *		otm_sql's text for these arguments, built once per cache entry of m
 *		(in m->cxt, so it goes when the definition or a table changes).
 */
static const char *
otm_text(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old)
{
	ListCell   *lc;
	OtmSqlText *t;
	char	   *sql;
	MemoryContext old;

	foreach(lc, m->otm_sql)
	{
		t = lfirst(lc);
		if (t->kind == kind && t->relid == relid && t->has_new == has_new && t->has_old == has_old)
			return t->sql;
	}
	sql = otm_sql(m, kind, relid, has_new, has_old);
	old = MemoryContextSwitchTo(m->cxt);
	t = palloc(sizeof(OtmSqlText));
	t->kind = kind;
	t->relid = relid;
	t->has_new = has_new;
	t->has_old = has_old;
	t->sql = pstrdup(sql);
	m->otm_sql = lappend(m->otm_sql, t);
	MemoryContextSwitchTo(old);
	return t->sql;
}

/*
 * register_store
 *		Register rows (a tuplestore with desc) as the ephemeral relation
 *		name in the current SPI connection.
 */
static void
register_store(const char *name, TupleDesc desc, Tuplestorestate *rows, int64 n)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));
	int			rc;

	enr->md.name = pstrdup(name);
	enr->md.reliddesc = InvalidOid;
	enr->md.tupdesc = desc;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = n;
	enr->reldata = rows;
	rc = SPI_register_relation(enr);
	if (rc != SPI_OK_REL_REGISTER)
		elog(ERROR, "SPI_register_relation failed: %s", SPI_result_code_string(rc));
}

/*
 * run
 *		Execute statement kind (kept plan) and check its SPI result code.
 */
static void
run(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old, int expect)
{
	SPIPlanPtr	plan = softmig_cached_plan(m, otm_text(m, kind, relid, has_new, has_old), 0, NULL);

	softmig_spi_expect(SPI_execute_plan(plan, NULL, NULL, false, 0), expect,
					   "write the other side of a one_to_many migration");
}

/*
 * The entity locks.  A statement that touches few entities takes, per
 * entity, a shared lock on its stripe (one of OTM_STRIPES, by the key's
 * hash) and an exclusive lock on the entity itself; one that touches more
 * than OTM_FEW_ENTITIES (a big statement, a backfill batch) takes its
 * stripes exclusively instead, so the lock table never holds more than
 * OTM_STRIPES of its locks.  Either way two writers of one entity
 * conflict.  Entity locks are transaction advisory locks with the legacy
 * table's oid in the high 32 bits of the key and the hash in the low 32;
 * stripe locks use the two-key form (oid, stripe).
 */
#define OTM_FEW_ENTITIES	64
#define OTM_STRIPES			256

/*
 * lock_entities
 *		Take the entity locks of the entities in the transition tables
 *		(kind OTM_LOCK: entity columns of target rows; OTM_LOCK_LEGACY:
 *		key columns of legacy rows), in one order: stripes ascending, then
 *		entities ascending.  Held to the end of the transaction.  The
 *		caller is connected to SPI with the transition tables registered.
 */
static void
lock_entities(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old)
{
	uint64		n;
	int32	   *hashes;
	bool		stripe[OTM_STRIPES] = {false};
	bool		few;

	run(m, kind, relid, has_new, has_old, SPI_OK_SELECT);
	n = SPI_processed;
	few = (n <= OTM_FEW_ENTITIES);
	hashes = palloc(sizeof(int32) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		hashes[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		stripe[(uint32) hashes[i] % OTM_STRIPES] = true;
	}
	SPI_freetuptable(SPI_tuptable);
	for (int s = 0; s < OTM_STRIPES; s++)
	{
		if (!stripe[s])
			continue;
		if (few)
			(void) DirectFunctionCall2(pg_advisory_xact_lock_shared_int4,
									   Int32GetDatum((int32) m->legacy), Int32GetDatum(s));
		else
			(void) DirectFunctionCall2(pg_advisory_xact_lock_int4,
									   Int32GetDatum((int32) m->legacy), Int32GetDatum(s));
	}
	if (few)
	{
		/* in the order of the hashes (the query's), the same for everyone */
		for (uint64 i = 0; i < n; i++)
			(void) DirectFunctionCall1(pg_advisory_xact_lock_int8,
									   Int64GetDatum((int64) (((uint64) m->legacy << 32) | (uint32) hashes[i])));
	}
	pfree(hashes);
}

/*
 * run_args
 *		Execute statement kind (kept plan, parameters $1 jsonb and $2
 *		integer) and check its SPI result code.
 */
static void
run_args(SoftmigMigration *m, OtmStmt kind, Datum lo, bool lo_null, int batch, int expect)
{
	Oid			argtypes[2] = {JSONBOID, INT4OID};
	Datum		values[2] = {lo, Int32GetDatum(batch)};
	char		nulls[2] = {lo_null ? 'n' : ' ', ' '};
	SPIPlanPtr	plan = softmig_cached_plan(m, otm_text(m, kind, InvalidOid, true, true), 2, argtypes);

	softmig_spi_expect(SPI_execute_plan(plan, values, nulls, false, 0), expect,
					   "backfill a one_to_many migration");
}

/*
 * store_result
 *		Register the rows of the last SPI query as ephemeral relation name
 *		(unregistering an earlier one of that name); returns how many.
 */
static uint64
store_result(const char *name)
{
	uint64		n = SPI_processed;
	TupleDesc	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	Tuplestorestate *store = tuplestore_begin_heap(false, false, work_mem);

	for (uint64 i = 0; i < n; i++)
		tuplestore_puttuple(store, SPI_tuptable->vals[i]);
	SPI_freetuptable(SPI_tuptable);
	(void) SPI_unregister_relation(name);
	register_store(name, desc, store, (int64) n);
	return n;
}

/*
 * bf_rewrite
 *		Rewrite the sets of the legacy rows the last SPI query returned
 *		(legacy's columns and softmig_key): lock their entities as a
 *		mirrored writer does, read their current versions (a fresh
 *		snapshot, after any writer that held an entity committed) and
 *		reconcile the sets.  Returns the number of rows read first and sets
 *		*last_key to the last one's key (NULL when none).
 */
static uint64
bf_rewrite(SoftmigMigration *m, char **last_key)
{
	uint64		n;
	bool		isnull;

	*last_key = NULL;
	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		k = SPI_getbinval(SPI_tuptable->vals[SPI_processed - 1], desc, desc->natts, &isnull);

		*last_key = JsonbToCString(NULL, &DatumGetJsonbP(k)->root, 0);
	}
	n = store_result("softmig_new");
	if (n == 0)
		return 0;
	lock_entities(m, OTM_LOCK_LEGACY, InvalidOid, true, false);
	run(m, OTM_BF_FRESH, InvalidOid, true, false, SPI_OK_SELECT);
	(void) store_result("softmig_new");
	run(m, OTM_MIRROR_UPSERT, InvalidOid, true, false, SPI_OK_INSERT);
	return n;
}

/*
 * softmig_otm_bf_step
 *		softmig._bf_step for a one-to-many migration (backfill.c hands it
 *		over), one unit of backfill work per entity, in the caller's
 *		transaction, as the target's owner:
 *		  next    rewrite the sets of up to batch legacy rows with key > lo
 *		  sweep   rewrite the sets of up to batch legacy rows without one
 *		  verify  count the legacy rows without a set
 *		  orphans delete the sets of up to batch entities legacy lacks
 *		Every entity is locked as a mirrored writer locks it (a transaction
 *		advisory lock, held to the batch's commit) and read again after the
 *		lock, so a batch never writes an older version of an entity than a
 *		live writer does.  Returns the jsonb summary _backfill_batch reads.
 */
Datum
softmig_otm_bf_step(SoftmigMigration *m, const char *op, int batch, Jsonb *lo)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	StringInfoData res;
	char	   *last_key = NULL;
	uint64		n;
	Datum		result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	initStringInfo(&res);
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		if (strcmp(op, "next") == 0 || strcmp(op, "range") == 0 || strcmp(op, "sweep") == 0)
		{
			OtmStmt		kind = strcmp(op, "sweep") == 0 ? OTM_BF_SWEEP :
				lo != NULL ? OTM_BF_NEXT : OTM_BF_FIRST;

			run_args(m, kind, lo ? JsonbPGetDatum(lo) : (Datum) 0, lo == NULL, batch, SPI_OK_SELECT);
			n = bf_rewrite(m, &last_key);
			appendStringInfo(&res, "{\"locked\": " UINT64_FORMAT ", \"copied\": " UINT64_FORMAT
							 ", \"skipped\": 0, \"tail_skipped\": 0, \"last_key\": %s}",
							 n, n, last_key ? last_key : "null");
		}
		else if (strcmp(op, "verify") == 0)
		{
			bool		isnull;

			run(m, OTM_BF_MISSING, InvalidOid, false, false, SPI_OK_SELECT);
			appendStringInfo(&res, "{\"missing\": " INT64_FORMAT "}",
							 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
		}
		else if (strcmp(op, "orphans") == 0)
		{
			run_args(m, OTM_BF_ORPHANS, (Datum) 0, true, batch, SPI_OK_SELECT);
			n = store_result("softmig_old");
			if (n > 0)
			{
				lock_entities(m, OTM_LOCK, InvalidOid, false, true);
				run(m, OTM_BF_DELETE, InvalidOid, false, true, SPI_OK_DELETE);
				n = SPI_processed;
			}
			appendStringInfo(&res, "{\"deleted\": " UINT64_FORMAT "}", n);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown backfill step \"%s\"", op)));
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(res.data)), false, -1);
	SPI_finish();
	return result;
}

/*
 * key_updated
 *		May an UPDATE on legacy have changed a key column: is one of them
 *		among the statement's updated columns (a BEFORE trigger may change
 *		any column, so then every column counts)?
 */
static bool
key_updated(TriggerData *td, SoftmigMigration *m)
{
	Relation	rel = td->tg_relation;
	ListCell   *lc;

	if (td->tg_updatedcols == NULL || (rel->trigdesc && rel->trigdesc->trig_update_before_row))
		return true;
	foreach(lc, m->legacy_key)
	{
		AttrNumber	att = get_attnum(RelationGetRelid(rel), lfirst(lc));

		if (att == InvalidAttrNumber ||
			bms_is_member(att - FirstLowInvalidHeapAttributeNumber, td->tg_updatedcols))
			return true;
	}
	return false;
}

/*
 * mirror_legacy
 *		mirrored: lock the entities of the legacy rows a statement wrote
 *		(their old and new keys) and rewrite their target sets.  Runs as the target's owner with the migration marked as
 *		mirroring; the caller holds an SPI connection with the trigger's
 *		transition tables registered.
 */
static void
mirror_legacy(TriggerData *td, SoftmigMigration *m)
{
	Oid			relid = RelationGetRelid(td->tg_relation);
	bool		has_new = !TRIGGER_FIRED_BY_DELETE(td->tg_event);
	bool		has_old = !TRIGGER_FIRED_BY_INSERT(td->tg_event);

	/* the entities' locks: a backfill batch rewriting them waits, or we do */
	lock_entities(m, OTM_LOCK_LEGACY, relid, has_new, has_old);
	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		run(m, OTM_MIRROR_DELETE, relid, false, true, SPI_OK_DELETE);
		return;
	}
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && key_updated(td, m))
		run(m, OTM_MIRROR_MOVE, relid, true, true, SPI_OK_UPDATE);
	run(m, OTM_MIRROR_UPSERT, relid, true, false, SPI_OK_INSERT);
}

/*
 * project_sets
 *		new_write, new_read: lock the entities in the transition tables
 *		(unless rel is NULL: the caller holds both tables against writers),
 *		aggregate their sets (as the target's owner, fresh snapshot), refuse
 *		(rel given, on_new_only = reject, envelope open) or record sets legacy
 *		cannot represent, and upsert or delete their legacy rows (as legacy's
 *		owner).  The caller holds an SPI connection with softmig_new and/or
 *		softmig_old registered (the entity columns by their target names)
 *		and has marked the migration as mirroring.  Returns the number of
 *		entities.
 */
static uint64
project_sets(SoftmigMigration *m, Oid relid, bool has_new, bool has_old, Relation rel)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	TupleDesc	desc;
	Tuplestorestate *store;
	uint64		n;
	int64		bad = 0;
	int			okcol;
	int			ncol;
	SPIPlanPtr	plan;
	ErrorData  *edata;
	bool		reject = (rel != NULL && m->reject_new_only && m->envelope_open);

	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	if (rel != NULL)
		lock_entities(m, OTM_LOCK, relid, has_new, has_old);
	run(m, OTM_AGGREGATE, relid, has_new, has_old, SPI_OK_SELECT);
	softmig_leave_owner_context(save_nest, save_user, save_sec);

	n = SPI_processed;
	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	ncol = desc->natts;
	okcol = ncol - 1;			/* softmig_ok, then softmig_key */
	store = tuplestore_begin_heap(false, false, work_mem);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		cnt = DatumGetInt64(SPI_getbinval(tup, desc, list_length(m->legacy_key) + 1, &isnull));

		if (cnt > 0 && !DatumGetBool(SPI_getbinval(tup, desc, okcol, &isnull)))
			bad++;
		tuplestore_puttuple(store, tup);
	}
	SPI_freetuptable(SPI_tuptable);
	(void) SPI_unregister_relation(OTM_AGG);
	register_store(OTM_AGG, desc, store, (int64) n);

	if (bad > 0)
	{
		Datum		keys;
		bool		isnull;

		if (reject)
			softmig_refuse_new_only(m, rel,
									psprintf("%lld entit%s of this statement make%s the representable predicate false.",
											 (long long) bad, bad == 1 ? "y" : "ies", bad == 1 ? "s" : ""));
		run(m, OTM_BAD_KEYS, relid, false, false, SPI_OK_SELECT);
		keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		softmig_note_new_only(m, bad, keys, isnull,
							  "the target set of an entity makes the representable predicate false");
	}

	softmig_enter_owner_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec);
	plan = softmig_cached_plan(m, otm_text(m, OTM_PROJECT, relid, has_new, has_old), 0, NULL);
	edata = softmig_spi_try(plan, NULL, NULL, NULL, false, SPI_OK_INSERT, softmig_unrepresentable);
	softmig_leave_owner_context(save_nest, save_user, save_sec);

	/* (a set already recorded as unrepresentable is not counted twice) */
	if (edata != NULL && bad == 0)
	{
		Datum		keys;
		bool		isnull;

		if (reject)
			softmig_refuse_new_only(m, rel,
									psprintf("Legacy refused the aggregated row: %s", edata->message));
		run(m, OTM_BAD_KEYS, relid, false, false, SPI_OK_SELECT);
		keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		softmig_note_new_only(m, (int64) n, keys, isnull,
							  psprintf("legacy refused the aggregated row of an entity: %s", edata->message));
	}
	return n;
}

/*
 * softmig_otm_resync_all
 *		softmig._resync_all for a one-to-many migration (shadow_enable in
 *		new_write or new_read): every entity either side holds is
 *		aggregated and projected onto legacy again.  The caller holds both
 *		tables locked against writers.  Returns the number of entities.
 */
int64
softmig_otm_resync_all(SoftmigMigration *m)
{
	StringInfoData sql;
	ListCell   *c;
	ListCell   *e;
	volatile uint64 n = 0;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT DISTINCT ");
	append_idents(&sql, "t.", m->target_key);
	appendStringInfo(&sql, " FROM %s t WHERE ", softmig_qualified_relname(m->target));
	foreach(c, m->target_key)
		appendStringInfo(&sql, "%st.%s IS NOT NULL", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)));
	appendStringInfoString(&sql, " UNION SELECT ");
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(&sql, "%s(l.%s)::%s AS %s", foreach_current_index(c) > 0 ? ", " : "",
						 quote_identifier(lfirst(c)), col_type(m->target, lfirst(e)),
						 quote_identifier(lfirst(e)));
	appendStringInfo(&sql, " FROM %s l", softmig_qualified_relname(m->legacy));
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	softmig_spi_expect(SPI_execute(sql.data, true, 0), SPI_OK_SELECT, "list the entities of a one_to_many migration");
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	(void) store_result("softmig_new");
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		n = project_sets(m, InvalidOid, true, false, NULL);
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	SPI_finish();
	return (int64) n;
}

/*
 * softmig_otm_write
 *		The AFTER statement trigger's work for a one-to-many migration on
 *		the authoritative side (the caller checked side == authority and
 *		holds an SPI connection): mirrored rewrites sets from legacy rows,
 *		new_write and new_read project sets onto legacy rows.
 */
void
softmig_otm_write(TriggerData *td, SoftmigMigration *m, SoftmigSide side)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "SPI_register_trigger_data failed");
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		if (side == SIDE_LEGACY)
		{
			softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
			mirror_legacy(td, m);
			softmig_leave_owner_context(save_nest, save_user, save_sec);
		}
		else
			(void) project_sets(m, RelationGetRelid(td->tg_relation),
								!TRIGGER_FIRED_BY_DELETE(td->tg_event),
								!TRIGGER_FIRED_BY_INSERT(td->tg_event), td->tg_relation);
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
}

/*
 * fake_transition
 *		Register empty ephemeral relations softmig_new and softmig_old with
 *		relid's row type (to prepare the trigger's statements outside a
 *		trigger).
 */
static void
fake_transition(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = CreateTupleDescCopy(RelationGetDescr(rel));

	table_close(rel, NoLock);
	register_store("softmig_new", desc, tuplestore_begin_heap(false, false, work_mem), 0);
	register_store("softmig_old", desc, tuplestore_begin_heap(false, false, work_mem), 0);
}

/*
 * prepare_grouping
 *		SPI_prepare sql, turning a grouping error (42803: a column read
 *		outside an aggregate) into one that names expression what of m.
 *		The caught error is re-raised at once, so no subtransaction is
 *		needed.
 */
static SPIPlanPtr
prepare_grouping(SoftmigMigration *m, const char *sql, const char *expr, const char *what)
{
	SPIPlanPtr	plan = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		plan = SPI_prepare(sql, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_GROUPING_ERROR)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("%s of one_to_many migration \"%s\" must aggregate over the entity's target rows",
						what, m->name),
				 errdetail("Expression: %s (%s)", expr, edata->message),
				 errhint("Read the set's columns only inside aggregates, such as max(plan) FILTER (WHERE ends IS NULL) or count(*) <= 1.")));
	}
	PG_END_TRY();
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * check_aggregate
 *		Refuse expr unless it is an aggregate over one entity's target set,
 *		analysed as the target's owner: "SELECT (expr) FROM target" must
 *		aggregate (42803), use no window (42P20) or set-returning function
 *		(0A000) and, when want_bool, be boolean (22023); "... GROUP BY
 *		entity columns" must read no column outside an aggregate (42803).
 *		The caller is connected to SPI.
 */
static void
check_aggregate(SoftmigMigration *m, const char *expr, const char *what, bool want_bool)
{
	StringInfoData buf;
	SPIPlanPtr	plan;
	Query	   *q;
	TargetEntry *te;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT (%s\n) FROM %s", expr, softmig_qualified_relname(m->target));
	softmig_enter_owner_context(softmig_rel_owner(m->target), &save_nest, &save_user, &save_sec);
	plan = prepare_grouping(m, buf.data, expr, what);
	q = linitial_node(Query, ((CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan)))->query_list);
	if (q->hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_WINDOWING_ERROR),
				 errmsg("%s must not use a window function", what),
				 errdetail("Expression: %s", expr)));
	if (q->hasTargetSRFs)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s must not use a set-returning function", what),
				 errdetail("Expression: %s", expr)));
	if (!q->hasAggs)
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("%s of one_to_many migration \"%s\" must aggregate over the entity's target rows",
						what, m->name),
				 errdetail("Expression: %s", expr),
				 errhint("Use an aggregate such as max(plan) FILTER (WHERE ends IS NULL) or count(*) <= 1.")));
	te = linitial_node(TargetEntry, q->targetList);
	if (want_bool && exprType((Node *) te->expr) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a boolean SQL expression, not one of type %s",
						what, format_type_be(exprType((Node *) te->expr))),
				 errdetail("Expression: %s", expr)));
	SPI_freeplan(plan);
	appendStringInfoString(&buf, " GROUP BY ");
	append_idents(&buf, NULL, m->target_key);
	SPI_freeplan(prepare_grouping(m, buf.data, expr, what));
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * prepare_check
 *		Prepare sql (and throw the plan away), as role owner: proves that a
 *		statement of the write path plans before any write needs it.
 */
static void
prepare_check(const char *sql, Oid owner)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	SPIPlanPtr	plan;

	softmig_enter_owner_context(owner, &save_nest, &save_user, &save_sec);
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_freeplan(plan);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * softmig_otm_validate
 *		softmig._validate for a one-to-many migration: the forward mappings
 *		are per-row expressions over legacy (as for every migration), every
 *		backward mapping of a non-key column and representable are
 *		aggregates over the set (representable boolean), and every
 *		statement of the write path prepares, with the tables' row types
 *		standing in for the transition tables.  Takes AccessShareLock on
 *		both tables; connects to SPI itself.
 */
void
softmig_otm_validate(SoftmigMigration *m)
{
	Oid			lowner = softmig_rel_owner(m->legacy);
	Oid			towner = softmig_rel_owner(m->target);
	ListCell   *c;
	ListCell   *e;
	List	   *acols;
	List	   *aexprs;
	SPIPlanPtr	plan;
	TupleDesc	aggdesc;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	forboth(c, m->fwd_cols, e, m->fwd_exprs)
		softmig_check_mapping_expression(lfirst(e),
										 psprintf("forward mapping of column \"%s\"", (char *) lfirst(c)),
										 m->legacy, towner, false, false);
	aggregated_cols(m, &acols, &aexprs);
	forboth(c, acols, e, aexprs)
		check_aggregate(m, lfirst(e), psprintf("backward mapping of column \"%s\"", (char *) lfirst(c)), false);
	if (m->representable)
		check_aggregate(m, m->representable, "option representable", true);

	/* legacy's statements, over legacy's row type */
	fake_transition(m->legacy);
	prepare_check(otm_sql(m, OTM_MIRROR_UPSERT, m->legacy, true, false), towner);
	prepare_check(otm_sql(m, OTM_MIRROR_MOVE, m->legacy, true, true), towner);
	prepare_check(otm_sql(m, OTM_MIRROR_DELETE, m->legacy, false, true), towner);
	SPI_finish();

	/* the target's, over the target's row type */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	fake_transition(m->target);
	prepare_check(otm_sql(m, OTM_LOCK, m->target, true, true), towner);
	softmig_enter_owner_context(towner, &save_nest, &save_user, &save_sec);
	plan = SPI_prepare(otm_sql(m, OTM_AGGREGATE, m->target, true, true), 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	aggdesc = CreateTupleDescCopy(((CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan)))->resultDesc);
	SPI_freeplan(plan);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	register_store(OTM_AGG, aggdesc, tuplestore_begin_heap(false, false, work_mem), 0);
	prepare_check(otm_sql(m, OTM_PROJECT, m->target, true, true), lowner);
	prepare_check(otm_sql(m, OTM_BAD_KEYS, m->target, true, true), towner);
	SPI_finish();
}

/*
 * otm_compare
 *		Run statement kind (OTM_PARITY, or OTM_INSPECT for key) as the
 *		legacy table's owner in the read-only context, after checking that
 *		the caller may read both tables (42501, as parity and inspect do).
 *		The caller is connected to SPI; the rows are in SPI_tuptable:
 *		kind, key, legacy set (expansion), target set.
 */
static void
otm_compare(SoftmigMigration *m, OtmStmt kind, Jsonb *key, const char *what)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	int			nargs = (kind == OTM_PARITY) ? 0 : 1;
	char		nulls[1] = {key ? ' ' : 'n'};

	softmig_check_read_access(m->legacy, m->target, GetUserId(), what);
	softmig_enter_readonly_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec, &save_ro);
	values[0] = key ? JsonbPGetDatum(key) : (Datum) 0;
	softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(m, otm_text(m, kind, InvalidOid, false, false),
															nargs, argtypes),
										values, nulls, true, 0),
					   SPI_OK_SELECT, "compare a one_to_many migration");
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);
}

/*
 * parity_kind
 *		What parity compares in m's state: while legacy is the authority
 *		(legacy, mirrored) each legacy row's expansion with its target set;
 *		once the target is (new_write on) each legacy row with the aggregate
 *		of its set, which is what the projection writes.
 */
static OtmStmt
parity_kind(SoftmigMigration *m)
{
	return (m->state == SM_LEGACY || m->state == SM_MIRRORED) ? OTM_PARITY : OTM_PARITY_AGG;
}

/*
 * text_or_null
 *		Column col of the current SPI row as a text datum (nulls[i] set).
 */
static Datum
text_or_null(HeapTuple tup, int col, bool *isnull)
{
	char	   *v = SPI_getvalue(tup, SPI_tuptable->tupdesc, col);

	*isnull = (v == NULL);
	return v ? CStringGetTextDatum(v) : (Datum) 0;
}

/*
 * softmig_otm_parity_rows
 *		softmig.parity for a one-to-many migration: one row per entity whose
 *		legacy row's expansion and target set differ as multisets (kind
 *		missing_in_target, missing_in_legacy or mismatch, the legacy key,
 *		field NULL, both sets as jsonb arrays), into ts with desc.
 */
void
softmig_otm_parity_rows(SoftmigMigration *m, Tuplestorestate *ts, TupleDesc desc)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	otm_compare(m, parity_kind(m), NULL, "softmig.parity");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		values[5];
		bool		nulls[5] = {false, false, true, false, false};
		bool		isnull;

		values[0] = text_or_null(tup, 1, &nulls[0]);
		values[1] = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		values[2] = (Datum) 0;
		values[3] = text_or_null(tup, 3, &nulls[3]);
		values[4] = text_or_null(tup, 4, &nulls[4]);
		tuplestore_putvalues(ts, desc, values, nulls);
	}
	SPI_finish();
}

/*
 * softmig_otm_parity_summary
 *		softmig._parity_summary for a one-to-many migration: the counts per
 *		kind (entities), up to sample legacy keys of each, the compared
 *		columns and the row counts of both tables.
 */
Datum
softmig_otm_parity_summary(SoftmigMigration *m, int sample)
{
	static const char *const kinds[] = {"missing_in_target", "missing_in_legacy", "mismatch"};
	StringInfoData samples[3];
	uint64		found[3] = {0, 0, 0};
	StringInfoData out;
	ListCell   *lc;
	Datum		result;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	otm_compare(m, parity_kind(m), NULL, "softmig.parity");
	for (int k = 0; k < 3; k++)
		initStringInfo(&samples[k]);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *kind = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		for (int k = 0; k < 3; k++)
		{
			if (strcmp(kind, kinds[k]) != 0)
				continue;
			if (found[k]++ < (uint64) sample)
				appendStringInfo(&samples[k], "%s%s", found[k] > 1 ? ", " : "",
								 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		}
	}
	initStringInfo(&out);
	appendStringInfo(&out, "{\"cardinality\": \"one_to_many\", \"missing_in_target\": " UINT64_FORMAT
					 ", \"missing_in_legacy\": " UINT64_FORMAT ", \"mismatch\": " UINT64_FORMAT
					 ", \"mismatch_fields\": {}, \"sample\": {",
					 found[0], found[1], found[2]);
	for (int k = 0; k < 3; k++)
		appendStringInfo(&out, "%s\"%s\": [%s]", k ? ", " : "", kinds[k], samples[k].data);
	appendStringInfoString(&out, "}, \"compared_fields\": [");
	foreach(lc, m->fwd_cols)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoString(&out, ", ");
		escape_json(&out, lfirst(lc));
	}
	softmig_spi_expect(SPI_execute(psprintf("SELECT (SELECT pg_catalog.count(*) FROM %s), (SELECT pg_catalog.count(*) FROM %s)",
											softmig_qualified_relname(m->legacy),
											softmig_qualified_relname(m->target)), true, 1),
					   SPI_OK_SELECT, "count the rows of a one_to_many migration");
	appendStringInfo(&out, "], \"rows_legacy\": " INT64_FORMAT ", \"rows_target\": " INT64_FORMAT "}",
					 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
					 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)));
	result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)), false, -1);
	SPI_finish();
	return result;
}

/*
 * softmig_otm_inspect
 *		softmig.inspect for a one-to-many migration: the entity of legacy
 *		key "key" (exactly the legacy key columns, 22023 otherwise): its
 *		legacy row, the row's expansion, the target set (with the target's
 *		own columns) and how they compare.
 */
Datum
softmig_otm_inspect(SoftmigMigration *m, Jsonb *key)
{
	StringInfoData sql;
	StringInfoData out;
	Datum		result;
	ListCell   *c;
	ListCell   *e;
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1] = {JsonbPGetDatum(key)};
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	bool		save_ro;
	char	   *parity = "absent";
	char	   *expansion = "[]";
	char	   *aggregate = "null";

	/* the key names exactly the legacy key columns */
	{
		JsonbIterator *it = JsonbIteratorInit(&key->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		int			n = 0;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				char	   *k = pnstrdup(v.val.string.val, v.val.string.len);

				if (!softmig_str_member(m->legacy_key, k))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("\"%s\" is not a key column of migration \"%s\"", k, m->name)));
				n++;
			}
		}
		if (!JB_ROOT_IS_OBJECT(key) || n != list_length(m->legacy_key))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key must name every key column of migration \"%s\" and nothing else", m->name)));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	otm_compare(m, OTM_INSPECT, key, "softmig.inspect");
	if (SPI_processed > 0)
	{
		parity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		expansion = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		if (expansion == NULL)
			expansion = "[]";
	}
	otm_compare(m, OTM_PARITY_AGG, key, "softmig.inspect");
	if (SPI_processed > 0)
	{
		aggregate = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
		if (aggregate == NULL)
			aggregate = "null";
		if (parity_kind(m) == OTM_PARITY_AGG)
			parity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	}

	/* the legacy row and the target set as they are */
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT (SELECT pg_catalog.to_jsonb(l) FROM %s l, pg_catalog.jsonb_populate_record(NULL::%s, $1) c WHERE ",
					 softmig_qualified_relname(m->legacy), softmig_qualified_relname(m->legacy));
	foreach(c, m->legacy_key)
		appendStringInfo(&sql, "%sl.%s = c.%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(c)), quote_identifier(lfirst(c)));
	appendStringInfo(&sql, "), (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t) ORDER BY t.ctid), '[]') "
					 "FROM %s t, pg_catalog.jsonb_populate_record(NULL::%s, $1) c WHERE ",
					 softmig_qualified_relname(m->target), softmig_qualified_relname(m->legacy));
	forboth(c, m->legacy_key, e, m->target_key)
		appendStringInfo(&sql, "%st.%s = (c.%s)::%s", foreach_current_index(c) > 0 ? " AND " : "",
						 quote_identifier(lfirst(e)), quote_identifier(lfirst(c)),
						 col_type(m->target, lfirst(e)));
	appendStringInfoChar(&sql, ')');
	softmig_enter_readonly_context(softmig_rel_owner(m->legacy), &save_nest, &save_user, &save_sec, &save_ro);
	softmig_spi_expect(SPI_execute_plan(softmig_cached_plan(m, sql.data, 1, argtypes), values, NULL, true, 1),
					   SPI_OK_SELECT, "inspect a one_to_many migration");
	softmig_leave_readonly_context(save_nest, save_user, save_sec, save_ro);

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"migration\": ");
	escape_json(&out, m->name);
	appendStringInfo(&out, ", \"cardinality\": \"one_to_many\", \"key\": %s, \"parity\": \"%s\", "
					 "\"compares\": \"%s\", \"legacy\": %s, \"expansion\": %s, \"target\": %s, \"aggregate\": %s}",
					 JsonbToCString(NULL, &key->root, 0), parity,
					 parity_kind(m) == OTM_PARITY ? "expansion" : "aggregate",
					 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) ?
					 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : "null",
					 expansion,
					 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), aggregate);
	result = SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)), false, -1);
	SPI_finish();
	return result;
}
