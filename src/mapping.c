/*-------------------------------------------------------------------------
 *
 * mapping.c
 *	  Turning a migration's field mappings into prepared, cached SQL.
 *
 *	  For every relation a write trigger fires on (the legacy or target root,
 *	  or one of their partitions) we prepare, once per backend and cache
 *	  generation, set-based statements over the statement's transition
 *	  tables:
 *
 *	    upsert:  INSERT INTO dst (...) SELECT <mapping> FROM softmig_new
 *	             ON CONFLICT (<dst key>) DO UPDATE SET <mapped> = EXCLUDED...
 *	    delete:  DELETE FROM dst USING (SELECT <key mapping> FROM softmig_old)
 *	    move:    one row's key change, UPDATE dst SET <key> = new WHERE old
 *
 *	  Mapping expressions are user SQL.  They are checked to be a single
 *	  scalar expression before they are ever spliced, are always wrapped in
 *	  parentheses followed by a newline (so a trailing comment cannot eat
 *	  SQL), and are prepared and executed only as the owner of the table
 *	  being written, in a security-restricted context with the search_path
 *	  pinned to pg_catalog, pg_temp and row_security off (so row-level
 *	  security can make a mirror fail but never silently filter it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_opclass.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/queryenvironment.h"
#include "utils/relcache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "softmig.h"

typedef SoftmigDest DestInfo;

static List *update_set_cols(DestInfo *d, List *not_taken);

/*
 * equality_operator_sql
 *		"OPERATOR(schema.name)" for an operator OID, immune to search_path.
 */
static char *
equality_operator_sql(Oid opno)
{
	HeapTuple	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	Form_pg_operator op;
	char	   *result;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	op = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

/*
 * find_key_operators
 *		Find a plain, valid unique index on exactly the key columns of dst and
 *		return, per key column (in keycols order), its btree equality
 *		operator.  Raises 42P10 if there is none.  Takes AccessShareLock on
 *		dst (held to end of transaction, as usual).
 */
static void
find_key_operators(DestInfo *d, const char *migname)
{
	Relation	rel = table_open(d->relid, AccessShareLock);
	List	   *indexes = RelationGetIndexList(rel);
	int			nkeys = list_length(d->keycols);
	AttrNumber *attnos = palloc(sizeof(AttrNumber) * nkeys);
	ListCell   *lc;
	int			i = 0;

	foreach(lc, d->keycols)
	{
		attnos[i] = attnameAttNum(rel, (char *) lfirst(lc), false);
		if (attnos[i] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of table \"%s\" does not exist",
							(char *) lfirst(lc), RelationGetRelationName(rel)),
					 errdetail("Migration \"%s\" correlates rows on it.", migname)));
		d->keytypes = lappend(d->keytypes,
							  format_type_be_qualified(TupleDescAttr(RelationGetDescr(rel), attnos[i] - 1)->atttypid));
		i++;
	}

	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
		Form_pg_index idx;
		bool		match = true;
		Datum		d_indclass;
		bool		isnull;
		oidvector  *indclass;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for index %u", indexoid);
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (!idx->indisunique || !idx->indisvalid || idx->indnkeyatts != nkeys ||
			!heap_attisnull(tup, Anum_pg_index_indexprs, NULL) ||
			!heap_attisnull(tup, Anum_pg_index_indpred, NULL))
			match = false;
		for (i = 0; match && i < nkeys; i++)
		{
			bool		present = false;

			for (int j = 0; j < nkeys; j++)
				if (idx->indkey.values[j] == attnos[i])
					present = true;
			match = present;
		}
		if (!match)
		{
			ReleaseSysCache(tup);
			continue;
		}
		d_indclass = SysCacheGetAttr(INDEXRELID, tup, Anum_pg_index_indclass, &isnull);
		indclass = (oidvector *) DatumGetPointer(d_indclass);
		for (i = 0; i < nkeys; i++)
		{
			for (int j = 0; j < nkeys; j++)
			{
				Oid			opclass;
				Oid			opfamily;
				Oid			intype;
				Oid			opno;

				if (idx->indkey.values[j] != attnos[i])
					continue;
				opclass = indclass->values[j];
				opfamily = get_opclass_family(opclass);
				intype = get_opclass_input_type(opclass);
				opno = get_opfamily_member(opfamily, intype, intype, BTEqualStrategyNumber);
				if (!OidIsValid(opno))
					elog(ERROR, "no equality operator in operator family %u", opfamily);
				d->keyops = lappend(d->keyops, equality_operator_sql(opno));
			}
		}
		ReleaseSysCache(tup);
		table_close(rel, NoLock);
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
			 errmsg("table \"%s\" has no unique index on the key columns of migration \"%s\"",
					RelationGetRelationName(rel), migname),
			 errhint("Create a plain unique index (no expressions, no predicate) on exactly the correlation key columns.")));
}

/*
 * softmig_build_dest
 *		Describe the destination for writes that fire on side "side": the
 *		other table, its mapped columns and expressions, and its key with
 *		types and equality operators.  Takes AccessShareLock on the
 *		destination.  Result palloc'd in the current context.
 */
SoftmigDest *
softmig_build_dest(SoftmigMigration *m, SoftmigSide side)
{
	DestInfo   *d = palloc0(sizeof(DestInfo));
	ListCell   *lc;

	softmig_otm_refuse(m, "row-by-row operations (inspect_group)");
	if (side == SIDE_LEGACY)
	{
		d->relid = m->target;
		d->cols = m->fwd_cols;
		d->exprs = m->fwd_exprs;
		d->keycols = m->target_key;
	}
	else
	{
		d->relid = m->legacy;
		d->cols = m->bwd_cols;
		d->exprs = m->bwd_exprs;
		d->keycols = m->legacy_key;
	}
	d->qualname = softmig_qualified_relname(d->relid);
	foreach(lc, d->keycols)
	{
		char	   *kc = lfirst(lc);
		ListCell   *c2;
		ListCell   *e2;
		char	   *expr = NULL;

		forboth(c2, d->cols, e2, d->exprs)
		{
			if (strcmp(kc, (char *) lfirst(c2)) == 0)
				expr = lfirst(e2);
		}
		if (expr == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("key column \"%s\" of table \"%s\" has no mapping in migration \"%s\"",
							kc, get_rel_name(d->relid), m->name)));
		d->keyexprs = lappend(d->keyexprs, expr);
	}

	/*
	 * identity ALWAYS: written on INSERT (OVERRIDING SYSTEM VALUE), never
	 * updated
	 */
	foreach(lc, d->cols)
	{
		HeapTuple	tup = SearchSysCacheAttName(d->relid, lfirst(lc));

		if (!HeapTupleIsValid(tup))
			continue;			/* a missing column fails below, clearly */
		if (((Form_pg_attribute) GETSTRUCT(tup))->attidentity == ATTRIBUTE_IDENTITY_ALWAYS)
			d->always_cols = lappend(d->always_cols, lfirst(lc));
		ReleaseSysCache(tup);
	}
	find_key_operators(d, m->name);
	return d;
}

/*
 * nullable_target_key
 *		The target's correlation key columns that allow NULL: a row with a
 *		NULL there is an entity the target created on its own, which no
 *		legacy row correlates with (a new-only entity for the envelope).
 */
static List *
nullable_target_key(SoftmigMigration *m)
{
	List	   *r = NIL;
	ListCell   *lc;

	foreach(lc, m->target_key)
	{
		HeapTuple	tup = SearchSysCacheAttName(m->target, lfirst(lc));

		if (!HeapTupleIsValid(tup))
			continue;			/* a missing column fails elsewhere, clearly */
		if (!((Form_pg_attribute) GETSTRUCT(tup))->attnotnull)
			r = lappend(r, lfirst(lc));
		ReleaseSysCache(tup);
	}
	return r;
}

/*
 * correlated_rows
 *		from, or, when the target key may be NULL, "(SELECT * FROM <from>
 *		WHERE k IS NOT NULL ...) AS alias": the rows a projection to legacy
 *		can carry (alias unquoted).
 */
static char *
correlated_rows(const char *from, const char *alias, List *nullable)
{
	StringInfoData buf;
	ListCell   *lc;
	int			i = 0;

	if (nullable == NIL)
		return pstrdup(from);
	initStringInfo(&buf);
	appendStringInfo(&buf, "(SELECT * FROM %s WHERE ", from);
	foreach(lc, nullable)
		appendStringInfo(&buf, "%s%s IS NOT NULL", i++ ? " AND " : "", quote_identifier(lfirst(lc)));
	appendStringInfo(&buf, ") AS %s", alias);
	return buf.data;
}

/*
 * append_key_select
 *		"(SELECT (e1)::t1 AS softmig_k1, ... FROM <from>)"
 */
static void
append_key_select(StringInfo buf, DestInfo *d, const char *from)
{
	appendStringInfoString(buf, "(SELECT ");
	softmig_append_key_list(buf, d->keyexprs, d->keytypes);
	appendStringInfo(buf, " FROM %s)", from);
}

/*
 * append_key_match
 *		"t.k1 OPERATOR(..) alias.softmig_k1 AND ..."
 */
static void
append_key_match(StringInfo buf, DestInfo *d, const char *alias)
{
	softmig_append_key_match(buf, "softmig_t", d->keycols, d->keyops, alias);
}

/*
 * append_keyed_update
 *		"UPDATE dst AS softmig_t SET c = softmig_s.softmig_vN, ... FROM
 *		(SELECT <mapping of c> AS softmig_vN, ..., <keys> FROM <from>) AS
 *		softmig_s WHERE <key match>" for the destination columns named in
 *		set_cols, but for identity ALWAYS columns (no UPDATE may set them).
 *		Returns false, with a partial statement in buf, when set_cols names
 *		no other destination column.
 */
static bool
append_keyed_update(StringInfo buf, DestInfo *d, const char *from, List *set_cols)
{
	ListCell   *c;
	ListCell   *e;
	int			v = 0;

	appendStringInfo(buf, "UPDATE %s AS softmig_t SET ", d->qualname);
	forboth(c, d->cols, e, d->exprs)
	{
		if (!softmig_str_member(set_cols, lfirst(c)) ||
			softmig_str_member(d->always_cols, lfirst(c)))
			continue;
		v++;
		appendStringInfo(buf, "%s%s = softmig_s.softmig_v%d", v > 1 ? ", " : "",
						 quote_identifier(lfirst(c)), v);
	}
	if (v == 0)
		return false;
	appendStringInfoString(buf, " FROM (SELECT ");
	v = 0;
	forboth(c, d->cols, e, d->exprs)
	{
		if (!softmig_str_member(set_cols, lfirst(c)) ||
			softmig_str_member(d->always_cols, lfirst(c)))
			continue;
		v++;
		appendStringInfo(buf, "(%s\n) AS softmig_v%d, ", (char *) lfirst(e), v);
	}
	softmig_append_key_list(buf, d->keyexprs, d->keytypes);
	appendStringInfo(buf, " FROM %s) AS softmig_s WHERE ", from);
	append_key_match(buf, d, "softmig_s");
	return true;
}

/*
 * append_upsert
 *		"INSERT INTO dst (...) SELECT <mapping> FROM <from> ON CONFLICT (<key>)
 *		DO UPDATE SET <mapped non-key columns> = EXCLUDED..." (or DO NOTHING
 *		when only key columns are mapped).  Columns in not_taken keep their
 *		value on conflict: the merge rule says the other side owns them; so
 *		do identity ALWAYS columns, which PostgreSQL lets no UPDATE set.
 *		For the owner of a split, the row inserted also takes the attribute
 *		members' columns (d->gather_*: split_gather); on conflict only the
 *		owner's own columns change.
 */
static void
append_upsert(StringInfo buf, DestInfo *d, const char *from, List *not_taken)
{
	ListCell   *lc;
	int			i;

	softmig_append_mapped_insert(buf, d->qualname, "softmig_t",
								 list_concat_copy(d->cols, d->gather_cols),
								 list_concat_copy(d->exprs, d->gather_exprs));
	appendStringInfo(buf, " FROM %s%s ON CONFLICT (", from,
					 d->gather_joins ? d->gather_joins : "");
	i = 0;
	foreach(lc, d->keycols)
		appendStringInfo(buf, "%s%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
	appendStringInfoString(buf, ") DO ");
	(void) softmig_append_conflict_update(buf, d->cols, d->keycols,
										  list_concat_copy(not_taken, d->always_cols));
}

/*
 * keyjson_expr
 *		SQL building the legacy-key jsonb object of a row of side "side":
 *		legacy columns as they are, or the backward key mapping over target
 *		columns.
 */
static char *
keyjson_expr(SoftmigMigration *m, SoftmigSide side)
{
	List	   *exprs = NIL;
	ListCell   *lc;
	ListCell   *c;
	ListCell   *e;

	if (side == SIDE_LEGACY)
		return softmig_json_object_sql(m->legacy_key,
									   softmig_quoted_idents(m->legacy_key, ""));
	foreach(lc, m->legacy_key)
	{
		char	   *kexpr = NULL;

		forboth(c, m->bwd_cols, e, m->bwd_exprs)
		{
			if (strcmp(lfirst(c), lfirst(lc)) == 0)
				kexpr = lfirst(e);
		}
		exprs = lappend(exprs, kexpr);
	}
	return softmig_json_object_sql(m->legacy_key, exprs);
}

/*
 * split_shared_source
 *		For a member of a split or a merge: the side whose projection writes
 *		the table the members share, SIDE_TARGET for a split (the projection
 *		into the shared legacy table) and SIDE_LEGACY for a merge (the
 *		projection into the shared target table).
 */
static SoftmigSide
split_shared_source(SoftmigMigration *m)
{
	return m->split_merge ? SIDE_LEGACY : SIDE_TARGET;
}

/*
 * shared_keyjson_expr
 *		SQL over a row of the source side of the projection into the shared
 *		table (split_shared_source) giving the entity's key in that table as
 *		jsonb: the legacy key (keyjson_expr) for a split, the target key
 *		through the forward key mapping for a merge.  Every member computes
 *		the same value for one entity, whatever its own key columns are.
 */
static char *
shared_keyjson_expr(SoftmigMigration *m)
{
	List	   *exprs = NIL;
	ListCell   *lc;
	ListCell   *c;
	ListCell   *e;

	if (!m->split_merge)
		return keyjson_expr(m, SIDE_TARGET);
	foreach(lc, m->target_key)
	{
		char	   *kexpr = "NULL";

		forboth(c, m->fwd_cols, e, m->fwd_exprs)
		{
			if (strcmp(lfirst(c), lfirst(lc)) == 0)
				kexpr = lfirst(e);
		}
		exprs = lappend(exprs, kexpr);
	}
	return softmig_json_object_sql(m->target_key, exprs);
}

/*
 * split_lock_sql
 *		"SELECT pg_advisory_xact_lock(...) FROM <from>": one transaction-level
 *		advisory lock per entity of the rows of <from> (rows of the source
 *		side of the projection into the shared table), keyed by the shared
 *		table's oid and a hash of the entity's key there, taken in hash
 *		order.  Every member of one split or merge computes the same locks
 *		for one entity.
 */
static char *
split_lock_sql(SoftmigMigration *m, const char *from)
{
	return psprintf("SELECT pg_catalog.pg_advisory_xact_lock((%u::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32) "
					"OPERATOR(pg_catalog.|) (softmig_h::pg_catalog.int8 OPERATOR(pg_catalog.&) 4294967295)) "
					"FROM (SELECT DISTINCT pg_catalog.hashtext((%s)::pg_catalog.text) AS softmig_h FROM %s) AS softmig_s "
					"ORDER BY softmig_h",
					m->split_merge ? m->target : m->legacy, shared_keyjson_expr(m), from);
}

/*
 * split_gather
 *		For the projection of the owner of a split into legacy (of a merge
 *		into the target): what the row it creates in the shared table takes
 *		from the attribute members' other tables, as d->gather_cols (columns
 *		of the shared table), d->gather_exprs (their values) and
 *		d->gather_joins, one "LEFT JOIN (SELECT <mapping> ... FROM
 *		<attribute member's table>) AS softmig_gN ON <its key> = <the owner
 *		row's key>" per attribute member, each member's mapping into the
 *		shared table (backward for a split, forward for a merge) evaluated
 *		over its own table only.  An absent attribute row leaves its columns
 *		NULL.  Loads the members' cache entries; takes no locks but
 *		AccessShareLock on their tables (at plan time).
 */
static void
split_gather(SoftmigMigration *m, DestInfo *d)
{
	StringInfoData joins;
	ListCell   *lc;
	int			g = 0;

	initStringInfo(&joins);
	foreach(lc, m->split_attrs)
	{
		SoftmigMigration *a = softmig_require_migration(lfirst_int(lc));
		List	   *acols = m->split_merge ? a->fwd_cols : a->bwd_cols;
		List	   *aexprs = m->split_merge ? a->fwd_exprs : a->bwd_exprs;
		ListCell   *c;
		ListCell   *e;
		ListCell   *k;
		int			v = 0;
		int			i = 0;

		g++;
		appendStringInfoString(&joins, " LEFT JOIN (SELECT ");
		forboth(c, acols, e, aexprs)
		{
			if (softmig_str_member(d->keycols, lfirst(c)))
				continue;
			v++;
			appendStringInfo(&joins, "(%s\n) AS softmig_a%d, ", (char *) lfirst(e), v);
			d->gather_cols = lappend(d->gather_cols, lfirst(c));
			d->gather_exprs = lappend(d->gather_exprs, psprintf("softmig_g%d.softmig_a%d", g, v));
		}
		/* the attribute member's legacy key, typed as the owner's */
		foreach(k, d->keycols)
		{
			ListCell   *c2;
			ListCell   *e2;
			char	   *kexpr = NULL;

			forboth(c2, acols, e2, aexprs)
			{
				if (strcmp(lfirst(c2), lfirst(k)) == 0)
					kexpr = lfirst(e2);
			}
			if (kexpr == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
						 errmsg("key column \"%s\" of table \"%s\" has no mapping in migration \"%s\"",
								(char *) lfirst(k), get_rel_name(d->relid), a->name)));
			i++;
			appendStringInfo(&joins, "%s(%s\n)::%s AS softmig_ak%d", i > 1 ? ", " : "", kexpr,
							 (char *) list_nth(d->keytypes, i - 1), i);
		}
		appendStringInfo(&joins, " FROM %s) AS softmig_g%d ON ",
						 softmig_qualified_relname(m->split_merge ? a->legacy : a->target), g);
		i = 0;
		forboth(k, d->keyexprs, c, d->keyops)
		{
			i++;
			appendStringInfo(&joins, "%ssoftmig_g%d.softmig_ak%d %s (%s\n)::%s", i > 1 ? " AND " : "",
							 g, i, (char *) lfirst(c), (char *) lfirst(k),
							 (char *) list_nth(d->keytypes, i - 1));
		}
	}
	d->gather_joins = joins.data;
}

/*
 * prepare_split_checks
 *		p->split_check: for the projection of a member of a split or a merge
 *		into the shared table, one SELECT per transition table returning,
 *		as text, what the projection depends on of the statement's
 *		entities that another transaction may have written: for an
 *		attribute member, how many of its entities have a row in the shared
 *		table (it updates rows there, never creates one); for the owner, the
 *		attribute values it gathers when it creates a row (NEW rows only).
 *		trigger.c runs it under the latest and the transaction snapshot: a
 *		REPEATABLE READ or SERIALIZABLE writer whose snapshot misses what a
 *		concurrent transaction committed for the same entity fails with
 *		40001 instead of projecting without it.  The caller is in the
 *		destination owner's context (the gather reads the attribute
 *		members' tables as that role, as the projection does).
 */
static void
prepare_split_checks(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int r = 0; r < 2; r++)
	{
		const char *from = r == 0 ? SM_OLD_TABLE : SM_NEW_TABLE;

		resetStringInfo(&buf);
		if (m->split_owner != 0)
		{
			appendStringInfo(&buf, "SELECT pg_catalog.count(*)::pg_catalog.text FROM %s AS softmig_t, ",
							 d->qualname);
			append_key_select(&buf, d, from);
			appendStringInfoString(&buf, " AS softmig_o WHERE ");
			append_key_match(&buf, d, "softmig_o");
		}
		else if (r == 1 && d->gather_cols != NIL)
		{
			ListCell   *lc;

			appendStringInfoString(&buf, "SELECT pg_catalog.string_agg(softmig_v, ',' ORDER BY softmig_v) "
								   "FROM (SELECT ROW(");
			foreach(lc, d->gather_exprs)
				appendStringInfo(&buf, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
								 (char *) lfirst(lc));
			appendStringInfo(&buf, ")::pg_catalog.text AS softmig_v FROM %s%s) AS softmig_s",
							 from, d->gather_joins);
		}
		else
			continue;
		p->split_check[r] = softmig_prepare_kept(buf.data, 0, NULL);
	}
}

/*
 * append_attribute_clear
 *		An attribute member of a split, its target rows deleted: "UPDATE
 *		legacy AS softmig_t SET <its columns> = DEFAULT FROM (SELECT <key
 *		mapping> FROM <from>) AS softmig_o WHERE <key match>".  The legacy
 *		row stays (the owner's member decides whether the entity exists);
 *		what the attribute row carried goes back to NULL or the column's
 *		default.
 */
static void
append_attribute_clear(StringInfo buf, DestInfo *d, const char *from)
{
	ListCell   *lc;
	int			n = 0;

	appendStringInfo(buf, "UPDATE %s AS softmig_t SET ", d->qualname);
	foreach(lc, d->cols)
	{
		if (softmig_str_member(d->keycols, lfirst(lc)))
			continue;
		appendStringInfo(buf, "%s%s = DEFAULT", n++ ? ", " : "", quote_identifier(lfirst(lc)));
	}
	appendStringInfoString(buf, " FROM ");
	append_key_select(buf, d, from);
	appendStringInfoString(buf, " AS softmig_o WHERE ");
	append_key_match(buf, d, "softmig_o");
}

/*
 * split_watch
 *		For a member of a split: the attribute numbers in rel of the source
 *		columns its mapping to the other side reads (d->exprs), into
 *		p->watch_attnos (m->cxt).  An UPDATE that changes none of them
 *		writes nothing for this member (trigger.c).
 */
static void
split_watch(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d, Relation rel)
{
	List	   *cols = NIL;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, d->exprs)
	{
		ListCell   *c;

		foreach(c, softmig_expr_columns(lfirst(lc)))
		{
			if (!softmig_str_member(cols, lfirst(c)))
				cols = lappend(cols, lfirst(c));
		}
	}
	p->watch_attnos = MemoryContextAlloc(m->cxt, sizeof(AttrNumber) * Max(list_length(cols), 1));
	foreach(lc, cols)
	{
		AttrNumber	a = attnameAttNum(rel, (char *) lfirst(lc), true);

		if (a > 0)
			p->watch_attnos[i++] = a;
	}
	p->nwatch = i;
}

/*
 * attribute_rows
 *		For an attribute member of a merge projecting into its legacy table:
 *		"(SELECT softmig_new.* FROM <from> CROSS JOIN LATERAL (SELECT <key
 *		list>) AS softmig_kx WHERE <a mapped non-key column IS DISTINCT FROM
 *		NULL> OR ... OR EXISTS (<the legacy row of the key>)) AS
 *		softmig_new": the rows of <from> (named SM_NEW_TABLE) that carry an
 *		attribute, or whose legacy row exists already (whose columns they
 *		then set, to NULL too).  A target row whose attribute columns are
 *		all NULL creates no legacy row: an absent attribute row is what
 *		NULL means (doc/shapes.md "Merge").  Returns from unchanged when
 *		the member maps no non-key column (append_projection_write's
 *		callers refuse that).
 */
static char *
attribute_rows(DestInfo *d, const char *from)
{
	StringInfoData buf;
	ListCell   *c;
	ListCell   *e;
	int			n = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "(SELECT %s.* FROM %s CROSS JOIN LATERAL (SELECT ",
					 SM_NEW_TABLE, from);
	softmig_append_key_list(&buf, d->keyexprs, d->keytypes);
	appendStringInfoString(&buf, ") AS softmig_kx WHERE ");
	forboth(c, d->cols, e, d->exprs)
	{
		if (softmig_str_member(d->keycols, lfirst(c)))
			continue;
		appendStringInfo(&buf, "%s(%s\n) IS DISTINCT FROM NULL", n++ ? " OR " : "",
						 (char *) lfirst(e));
	}
	if (n == 0)
		return pstrdup(from);
	appendStringInfo(&buf, " OR EXISTS (SELECT FROM %s AS softmig_t WHERE ", d->qualname);
	append_key_match(&buf, d, "softmig_kx");
	appendStringInfo(&buf, ")) AS %s", SM_NEW_TABLE);
	return buf.data;
}

/*
 * append_projection_write
 *		The statement that carries rows of <from> into the destination
 *		(the set-based upsert and its one-row form): the upsert
 *		(append_upsert), but for an attribute member of a split projecting
 *		into legacy, an UPDATE of the existing legacy row by key of the
 *		member's own columns (a row legacy does not hold yet is the
 *		owner's to create: it gathers them then), and for an attribute
 *		member of a merge projecting into its legacy table, the upsert of
 *		the rows that carry an attribute or have a legacy row
 *		(attribute_rows).  Sets p->upsert_rc.
 */
static void
append_projection_write(StringInfo buf, SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d,
						SoftmigSide side, const char *from, List *not_taken)
{
	if (m->split_owner != 0 && m->split_merge && side == SIDE_TARGET)
		from = attribute_rows(d, from);
	if (m->split_owner != 0 && side == split_shared_source(m))
	{
		if (!append_keyed_update(buf, d, from, update_set_cols(d, not_taken)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("attribute member \"%s\" maps no legacy column but its key", m->name)));
		p->upsert_rc = SPI_OK_UPDATE;
		return;
	}
	append_upsert(buf, d, from, not_taken);
}

typedef struct PrepareContext
{
	const char *migname;
	const char *src;
	const char *dst;
} PrepareContext;

/*
 * prepare_error_context
 *		errcontext line naming the migration and the direction being prepared.
 */
static void
prepare_error_context(void *arg)
{
	PrepareContext *pc = (PrepareContext *) arg;

	errcontext("preparing the mapping of migration \"%s\" from table %s to table %s",
			   pc->migname, pc->src, pc->dst);
}

/*
 * row_params_select
 *		"(SELECT $first AS col1, $first+1 AS col2, ...) AS alias": one row of
 *		srcdesc's live columns given as parameters.  Their types go to
 *		argtypes[first - 1 ...]; returns the number of parameters.
 */
static int
row_params_select(StringInfo buf, TupleDesc srcdesc, int first, const char *alias,
				  Oid *argtypes)
{
	int			k = 0;

	appendStringInfoString(buf, "(SELECT ");
	for (int i = 0; i < srcdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(srcdesc, i);

		if (att->attisdropped)
			continue;
		argtypes[first - 1 + k] = att->atttypid;
		appendStringInfo(buf, "%s$%d AS %s", k ? ", " : "", first + k,
						 quote_identifier(NameStr(att->attname)));
		k++;
	}
	appendStringInfo(buf, ") AS %s", alias);
	return k;
}

/*
 * update_set_cols
 *		The columns an UPDATE of the destination's row by key sets: the
 *		mapped columns but the key and those in not_taken, i.e. what the
 *		upsert's DO UPDATE sets (append_keyed_update also leaves out identity
 *		ALWAYS columns, as the upsert does).
 */
static List *
update_set_cols(DestInfo *d, List *not_taken)
{
	List	   *set_cols = NIL;
	ListCell   *lc;

	foreach(lc, d->cols)
	{
		if (!softmig_str_member(d->keycols, lfirst(lc)) &&
			!softmig_str_member(not_taken, lfirst(lc)))
			set_cols = lappend(set_cols, lfirst(lc));
	}
	return set_cols;
}

/*
 * prepare_big_statements
 *		Big statements skip speculative insertion where they can: a plain
 *		INSERT (falling back to the upsert if any key exists), and an UPDATE
 *		joined on the key (followed by the upsert only if rows were missing).
 *		Only kept as text in p (m->cxt); they are planned when used.
 */
static void
prepare_big_statements(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d,
					   List *not_taken)
{
	StringInfoData buf;

	initStringInfo(&buf);
	/* (the owner of a merge gathers its attribute members: the upsert) */
	if (d->gather_cols == NIL)
	{
		softmig_append_mapped_insert(&buf, d->qualname, NULL, d->cols, d->exprs);
		appendStringInfo(&buf, " FROM %s", SM_NEW_TABLE);
		p->insert_sql = MemoryContextStrdup(m->cxt, buf.data);
	}

	resetStringInfo(&buf);
	if (append_keyed_update(&buf, d, SM_NEW_TABLE, update_set_cols(d, not_taken)))
		p->update_sql = MemoryContextStrdup(m->cxt, buf.data);
}

/*
 * row_source
 *		The source of the one-row plans: the row of srcdesc given as
 *		parameters ($1, ...), in *rowsel (initialized here), with their types
 *		in *argtypes (palloc'd) and their number in p->row_nargs.  Returns
 *		what the plan reads: *rowsel itself, or for a projection to legacy
 *		(side target) only a row with a target key.
 */
static char *
row_source(SoftmigMigration *m, SoftmigRelPlans *p, TupleDesc srcdesc,
		   SoftmigSide side, StringInfo rowsel, Oid **argtypes)
{
	*argtypes = palloc(sizeof(Oid) * Max(srcdesc->natts, 1));
	initStringInfo(rowsel);
	p->row_nargs = row_params_select(rowsel, srcdesc, 1, SM_NEW_TABLE, *argtypes);
	return side == SIDE_TARGET ?
		correlated_rows(rowsel->data, SM_NEW_TABLE, nullable_target_key(m)) :
		rowsel->data;
}

/*
 * append_keyed_delete
 *		"DELETE FROM dst AS softmig_t USING (SELECT <key mapping> FROM
 *		<from>) AS softmig_o WHERE <key match>"
 */
static void
append_keyed_delete(StringInfo buf, DestInfo *d, const char *from)
{
	appendStringInfo(buf, "DELETE FROM %s AS softmig_t USING ", d->qualname);
	append_key_select(buf, d, from);
	appendStringInfoString(buf, " AS softmig_o WHERE ");
	append_key_match(buf, d, "softmig_o");
}

/*
 * fk_needs_first
 *		Does a foreign key of table relid reference table refid with an
 *		ON DELETE action other than CASCADE?  NO ACTION and RESTRICT refuse
 *		the delete of a referenced row while a referencing row remains, SET
 *		NULL and SET DEFAULT would leave the referencing row without its
 *		entity's key.  Takes AccessShareLock on relid (kept).
 */
static bool
fk_needs_first(Oid relid, Oid refid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	ListCell   *lc;
	bool		result = false;

	foreach(lc, RelationGetFKeyList(rel))
	{
		ForeignKeyCacheInfo *fk = lfirst_node(ForeignKeyCacheInfo, lc);
		HeapTuple	tup;

		if (fk->confrelid != refid)
			continue;
		tup = SearchSysCache1(CONSTROID, ObjectIdGetDatum(fk->conoid));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for constraint %u", fk->conoid);
		if (((Form_pg_constraint) GETSTRUCT(tup))->confdeltype != FKCONSTR_ACTION_CASCADE)
			result = true;
		ReleaseSysCache(tup);
	}
	table_close(rel, NoLock);
	return result;
}

/*
 * append_attribute_deletes
 *		For the owner of a split or a merge writing from the table the
 *		members share (a split in mirrored, a merge in new_write and
 *		new_read): "WITH softmig_a1 AS (DELETE ...), ... " deleting, in the
 *		owner's delete statement, the rows of the same entities (keys from
 *		<from>) in each attribute member's own table d references with a
 *		foreign key that does not cascade.  The attribute member's own
 *		trigger would delete them too, but after the owner's delete, which
 *		its key refuses; in one statement the key is checked once both are
 *		gone.  Nothing is appended for other members, sides or keys.
 *		Loads the attribute members' cache entries; the caller is in the
 *		destination owner's context, which then deletes from their tables.
 */
static void
append_attribute_deletes(StringInfo buf, SoftmigMigration *m, SoftmigSide side,
						 DestInfo *d, const char *from)
{
	ListCell   *lc;
	int			n = 0;

	if (m->split_attrs == NIL || side == split_shared_source(m))
		return;
	foreach(lc, m->split_attrs)
	{
		SoftmigMigration *a = softmig_require_migration(lfirst_int(lc));
		DestInfo   *ad = softmig_build_dest(a, side);

		if (!fk_needs_first(ad->relid, d->relid))
			continue;
		n++;
		appendStringInfo(buf, "%s softmig_a%d AS (", n > 1 ? "," : "WITH", n);
		append_keyed_delete(buf, ad, from);
		appendStringInfoChar(buf, ')');
	}
	if (n > 0)
		appendStringInfoChar(buf, ' ');
}

/*
 * prepare_row_delete
 *		p->delete_row: the delete of the destination's row by key for a
 *		one-row DELETE, the old row of srcdesc given as parameters (the same
 *		parameters as p->update and p->upsert_row), so the plan is an index
 *		probe of the destination and no scan of the transition table.  A
 *		NULL key matches no row, as in p->delete.  For an attribute member
 *		of a split projecting into legacy, the clear of its columns instead
 *		(append_attribute_clear).  Caller is in the destination owner's
 *		context.
 */
static void
prepare_row_delete(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d, TupleDesc srcdesc)
{
	StringInfoData rowsel;
	StringInfoData buf;
	Oid		   *argtypes = palloc(sizeof(Oid) * Max(srcdesc->natts, 1));
	int			nargs;

	initStringInfo(&rowsel);
	nargs = row_params_select(&rowsel, srcdesc, 1, SM_OLD_TABLE, argtypes);
	initStringInfo(&buf);
	if (m->split_owner != 0 && p->side == split_shared_source(m))
		append_attribute_clear(&buf, d, rowsel.data);
	else
	{
		append_attribute_deletes(&buf, m, p->side, d, rowsel.data);
		append_keyed_delete(&buf, d, rowsel.data);
	}
	p->delete_row = softmig_prepare_kept(buf.data, nargs, argtypes);
}

/*
 * prepare_move
 *		p->move: one row's key change, the old then the new row of srcdesc
 *		as parameters; none (p->move_refused names the column) when a
 *		destination key column is GENERATED ALWAYS AS IDENTITY.  Caller is
 *		in the destination owner's context, p->move_refused is allocated
 *		there and copied by the caller.
 */
static void
prepare_move(SoftmigRelPlans *p, DestInfo *d, TupleDesc srcdesc)
{
	StringInfoData rowsel[2];
	StringInfoData buf;
	Oid		   *argtypes = palloc(sizeof(Oid) * 2 * Max(srcdesc->natts, 1));
	int			nargs = 0;
	int			i = 1;
	ListCell   *lc;

	/*
	 * No UPDATE may set an identity ALWAYS column: a key change cannot be
	 * carried to such a key (mirror_key_moves refuses it clearly).
	 */
	foreach(lc, d->keycols)
	{
		if (softmig_str_member(d->always_cols, lfirst(lc)))
		{
			p->move = NULL;
			p->move_refused = pstrdup(lfirst(lc));
			return;
		}
	}

	for (int r = 0; r < 2; r++)
	{
		initStringInfo(&rowsel[r]);
		nargs += row_params_select(&rowsel[r], srcdesc, nargs + 1,
								   r == 0 ? SM_OLD_TABLE : SM_NEW_TABLE, argtypes);
	}
	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE %s AS softmig_t SET ", d->qualname);
	foreach(lc, d->keycols)
	{
		appendStringInfo(&buf, "%s%s = softmig_n.softmig_k%d", i > 1 ? ", " : "",
						 quote_identifier(lfirst(lc)), i);
		i++;
	}
	appendStringInfoString(&buf, " FROM ");
	append_key_select(&buf, d, rowsel[0].data);
	appendStringInfoString(&buf, " AS softmig_o, ");
	append_key_select(&buf, d, rowsel[1].data);
	appendStringInfoString(&buf, " AS softmig_n WHERE ");
	append_key_match(&buf, d, "softmig_o");
	p->move_nargs = nargs;
	p->move = softmig_prepare_kept(buf.data, nargs, argtypes);
}

static void prepare_row_plans(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d,
							  TupleDesc srcdesc, SoftmigSide side, List *not_taken,
							  bool upsert);

/*
 * prepare_projection
 *		Target side only: the field projection of mirrored (target-owned
 *		fields to legacy), and the upsert of one row and its legacy key,
 *		the row given as parameters.  Caller is in the destination owner's
 *		context.
 */
static void
prepare_projection(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d,
				   TupleDesc srcdesc)
{
	StringInfoData buf;

	initStringInfo(&buf);
	/* per-field authority (mirrored): target-owned fields flow to legacy */
	if (m->new_legacy_cols != NIL)
	{
		if (!append_keyed_update(&buf, d, SM_NEW_TABLE, m->new_legacy_cols))
			elog(ERROR, "softmig: no legacy column to project for migration \"%s\"", m->name);
		p->field_project = softmig_prepare_kept(buf.data, 0, NULL);
	}

	/* projection: the same upsert for one row given as parameters */
	prepare_row_plans(m, p, d, srcdesc, SIDE_TARGET, NIL, true);
}

/*
 * prepare_row_plans
 *		The plans of one row of srcdesc (side's table) given as parameters,
 *		so a plan is an index probe of the destination and no scan of a
 *		transition table; to legacy only a row with a target key.  Sets
 *		p->row_nargs.  Caller is in the destination owner's context.
 *		- upsert false: p->update, the UPDATE of the destination's row in
 *		  place by key for a one-row UPDATE (mirror_one_update); none when
 *		  only key columns are mapped.
 *		- upsert true: p->upsert_row and p->keyjson_row, the upsert of the
 *		  row and its legacy key.  The projection needs them (target side);
 *		  so does the mirror of a group member (legacy side), whose children
 *		  may come before their parents (groups.c), and a mirrored one-row
 *		  INSERT, whose upsert_row runs without a second executor where its
 *		  plan allows (directwrite.c; through SPI it cost as much as the
 *		  upsert over the transition table, which runs then instead).
 *		not_taken as for p->upsert.
 */
static void
prepare_row_plans(SoftmigMigration *m, SoftmigRelPlans *p, DestInfo *d,
				  TupleDesc srcdesc, SoftmigSide side, List *not_taken, bool upsert)
{
	StringInfoData rowsel;
	StringInfoData buf;
	Oid		   *argtypes;
	char	   *source = row_source(m, p, srcdesc, side, &rowsel, &argtypes);

	initStringInfo(&buf);
	if (!upsert)
	{
		if (append_keyed_update(&buf, d, source, update_set_cols(d, not_taken)))
			p->update = softmig_prepare_kept(buf.data, p->row_nargs, argtypes);
		return;
	}
	append_projection_write(&buf, m, p, d, side, source, not_taken);
	p->upsert_row = softmig_prepare_kept(buf.data, p->row_nargs, argtypes);
	resetStringInfo(&buf);
	appendStringInfo(&buf, "SELECT %s FROM %s", keyjson_expr(m, side), rowsel.data);
	p->keyjson_row = softmig_prepare_kept(buf.data, p->row_nargs, argtypes);
}

/*
 * prepare_source_reads
 *		The statements over the transition tables that run as the source
 *		table's owner (the caller is in that context): the written rows'
 *		keys as legacy-key jsonb (for audit), and, projecting target ->
 *		legacy, the rows legacy cannot represent (a new_only column set, or
 *		the representable predicate false: user SQL over target columns; or
 *		a NULL correlation key, counted apart too); for a split, the
 *		entity locks of the projection.
 */
static void
prepare_source_reads(SoftmigMigration *m, SoftmigRelPlans *p, SoftmigSide side)
{
	StringInfoData buf;
	ListCell   *lc;
	List	   *nullable = side == SIDE_TARGET ? nullable_target_key(m) : NIL;

	initStringInfo(&buf);
	for (int r = 0; r < 2; r++)
	{
		resetStringInfo(&buf);
		appendStringInfo(&buf, "SELECT pg_catalog.jsonb_agg(%s) FROM %s",
						 keyjson_expr(m, side), r == 0 ? SM_OLD_TABLE : SM_NEW_TABLE);
		if (r == 0)
			p->keyjson_old = softmig_prepare_kept(buf.data, 0, NULL);
		else
			p->keyjson_new = softmig_prepare_kept(buf.data, 0, NULL);
	}

	/*
	 * a split projecting into legacy: one transaction-level advisory lock per
	 * entity written, in a fixed order (legacy table, hash of the legacy
	 * key), serializes the owner's creation of a legacy row with the
	 * attribute members' writes of the same entity (trigger.c)
	 */
	if ((m->split_owner != 0 || m->split_attrs != NIL) && side == split_shared_source(m))
	{
		for (int r = 0; r < 2; r++)
			p->split_lock[r] = softmig_prepare_kept(split_lock_sql(m, r == 0 ? SM_OLD_TABLE : SM_NEW_TABLE),
													0, NULL);
	}

	if (side == SIDE_TARGET &&
		(m->new_only != NIL || m->representable != NULL || nullable != NIL))
	{
		resetStringInfo(&buf);
		appendStringInfoString(&buf, "SELECT pg_catalog.count(*) FILTER (WHERE softmig_f OR softmig_n), "
							   "(pg_catalog.array_agg(softmig_k) FILTER (WHERE softmig_f OR softmig_n))[1], "
							   "pg_catalog.count(*) FILTER (WHERE softmig_n AND NOT softmig_f) "
							   "FROM (SELECT (false");
		foreach(lc, m->new_only)
			appendStringInfo(&buf, " OR %s IS NOT NULL", quote_identifier(lfirst(lc)));
		if (m->representable)
			appendStringInfo(&buf, " OR NOT COALESCE((%s\n), true)", m->representable);
		appendStringInfoString(&buf, ") AS softmig_f, (false");
		foreach(lc, nullable)
			appendStringInfo(&buf, " OR %s IS NULL", quote_identifier(lfirst(lc)));
		appendStringInfo(&buf, ") AS softmig_n, %s AS softmig_k FROM %s) AS softmig_s",
						 keyjson_expr(m, side), SM_NEW_TABLE);
		p->newonly = softmig_prepare_kept(buf.data, 0, NULL);
	}
}

/*
 * new_rel_plans
 *		A SoftmigRelPlans for firing relation rel of side side, in m->cxt,
 *		with its owners and source key attribute numbers; no plans yet.
 */
static SoftmigRelPlans *
new_rel_plans(SoftmigMigration *m, Relation rel, SoftmigSide side, DestInfo *d)
{
	List	   *srckey = (side == SIDE_LEGACY) ? m->legacy_key : m->target_key;
	SoftmigRelPlans *p = MemoryContextAllocZero(m->cxt, sizeof(SoftmigRelPlans));
	ListCell   *lc;
	int			i = 0;

	p->relid = RelationGetRelid(rel);
	p->side = side;
	p->upsert_rc = SPI_OK_INSERT;
	p->delete_rc = SPI_OK_DELETE;
	p->dst_owner = softmig_rel_owner(d->relid);
	p->src_owner = rel->rd_rel->relowner;
	p->nkeys = list_length(srckey);
	p->keyattnos = MemoryContextAlloc(m->cxt, sizeof(AttrNumber) * p->nkeys);
	foreach(lc, srckey)
	{
		p->keyattnos[i] = attnameAttNum(rel, (char *) lfirst(lc), false);
		if (p->keyattnos[i] <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of table \"%s\" does not exist",
							(char *) lfirst(lc), RelationGetRelationName(rel))));
		i++;
	}
	return p;
}

/*
 * softmig_get_plans
 *		Return (building on first use) the prepared statements for writes
 *		firing on relation rel.  Builds inside its own SPI connection, as
 *		the destination's owner for the statements that write it and as
 *		rel's owner for those that only read the transition tables; the
 *		plans are kept (SPI_keepplan) and the texts live in m->cxt until the
 *		migration entry is invalidated.
 */
SoftmigRelPlans *
softmig_get_plans(SoftmigMigration *m, Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	SoftmigRelPlans *p;
	SoftmigSide side;
	DestInfo   *d;
	StringInfoData buf;
	ListCell   *lc;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	MemoryContext old;
	ErrorContextCallback errcb;
	PrepareContext pc;
	List	   *not_taken = NIL;

	for (p = m->plans; p; p = p->next)
		if (p->relid == relid)
			return p;

	side = softmig_side_of(m, relid);
	if (side == SIDE_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_SOFTMIG_TRIGGER_MISSING),
				 errmsg("table \"%s\" carries a trigger of migration \"%s\" but is not one of its tables",
						RelationGetRelationName(rel), m->name),
				 errhint("Drop the softmig_* triggers of this table; it was probably detached from a partitioned table.")));

	d = softmig_build_dest(m, side);
	p = new_rel_plans(m, rel, side, d);
	if (m->split_owner != 0 || m->split_attrs != NIL)
		split_watch(m, p, d, rel);
	if (m->split_attrs != NIL && side == split_shared_source(m))
		split_gather(m, d);

	pc.migname = m->name;
	pc.src = softmig_qualified_relname(relid);
	pc.dst = d->qualname;
	errcb.callback = prepare_error_context;
	errcb.arg = &pc;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_spi_register_rows(SM_NEW_TABLE, relid, NULL, NULL, 0);
	softmig_spi_register_rows(SM_OLD_TABLE, relid, NULL, NULL, 0);

	softmig_enter_owner_context(p->dst_owner, &save_nest,
								&save_user, &save_sec);
	softmig_prefer_index_plans(true);

	/*
	 * The merge rule: on conflict only fields the writing side owns change.
	 * not_taken lists the others, for the upsert and the big-statement
	 * UPDATE.
	 */
	foreach(lc, d->cols)
	{
		SoftmigSide owner = ((side == SIDE_LEGACY && softmig_str_member(m->new_fields, lfirst(lc)))
							 ? SIDE_TARGET : (side == SIDE_LEGACY ? SIDE_LEGACY : SIDE_TARGET));

		if (!softmig_field_takes_incoming(owner, side, false))
			not_taken = lappend(not_taken, lfirst(lc));
	}

	/* upsert (to legacy: only the rows whose correlation key is not NULL) */
	initStringInfo(&buf);
	append_projection_write(&buf, m, p, d, side,
							side == SIDE_TARGET ?
							correlated_rows(SM_NEW_TABLE, SM_NEW_TABLE, nullable_target_key(m)) :
							SM_NEW_TABLE,
							not_taken);
	p->upsert = softmig_prepare_kept(buf.data, 0, NULL);
	p->upsert_sql = MemoryContextStrdup(m->cxt, buf.data);

	if (side == SIDE_LEGACY)
		prepare_big_statements(m, p, d, not_taken);
	prepare_row_plans(m, p, d, RelationGetDescr(rel), side, not_taken, false);
	if ((m->split_owner != 0 || m->split_attrs != NIL) && side == split_shared_source(m))
		prepare_split_checks(m, p, d);

	/* delete (an attribute member's, into legacy: clear its columns) */
	resetStringInfo(&buf);
	if (m->split_owner != 0 && side == split_shared_source(m))
	{
		append_attribute_clear(&buf, d, SM_OLD_TABLE);
		p->delete_rc = SPI_OK_UPDATE;
	}
	else
	{
		append_attribute_deletes(&buf, m, side, d, SM_OLD_TABLE);
		append_keyed_delete(&buf, d, SM_OLD_TABLE);
	}
	p->delete = softmig_prepare_kept(buf.data, 0, NULL);
	p->delete_sql = MemoryContextStrdup(m->cxt, buf.data);
	prepare_row_delete(m, p, d, RelationGetDescr(rel));

	if (m->split_owner != 0 || m->split_attrs != NIL)
		p->move = NULL;			/* a split entity's key change: refused
								 * (trigger.c) */
	else
		prepare_move(p, d, RelationGetDescr(rel));
	if (p->move_refused)
		p->move_refused = MemoryContextStrdup(m->cxt, p->move_refused);
	if (side == SIDE_TARGET)
		prepare_projection(m, p, d, RelationGetDescr(rel));
	else
		prepare_row_plans(m, p, d, RelationGetDescr(rel), side, not_taken, true);

	softmig_leave_owner_context(save_nest, save_user, save_sec);

	softmig_enter_owner_context(p->src_owner, &save_nest, &save_user, &save_sec);
	softmig_prefer_index_plans(true);
	prepare_source_reads(m, p, side);
	softmig_leave_owner_context(save_nest, save_user, save_sec);

	SPI_finish();
	error_context_stack = errcb.previous;

	old = MemoryContextSwitchTo(m->cxt);
	p->next = m->plans;
	m->plans = p;
	MemoryContextSwitchTo(old);
	return p;
}

PG_FUNCTION_INFO_V1(softmig_validate);
/*
 * softmig_validate
 *		softmig._validate(id): prepare every statement the triggers of
 *		migration "id" will run, in both directions, so a bad mapping, key
 *		or index fails create_migration instead of a later write (after
 *		softmig_check_definition refused what cannot work).  Takes
 *		AccessShareLock on both tables.  The cache entry is marked stale
 *		afterwards because the definition may still roll back.
 */
Datum
softmig_validate(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	SoftmigMigration *m = softmig_require_migration(id);
	Oid			rels[2];

	/* one legacy row, a set of target rows: statements of its own */
	if (m->one_to_many)
	{
		softmig_otm_validate(m);
		m->valid = false;
		PG_RETURN_VOID();
	}
	/* expressions that cannot work are refused first, with clear errors */
	softmig_check_definition(m);
	rels[0] = m->legacy;
	rels[1] = m->target;
	for (int i = 0; i < 2; i++)
	{
		Relation	rel = table_open(rels[i], AccessShareLock);

		(void) softmig_get_plans(m, rel);
		table_close(rel, NoLock);
	}
	m->valid = false;
	PG_RETURN_VOID();
}

/*
 * append_changed_filter
 *		" AND ROW(softmig_t.c, ..., NULL) IS DISTINCT FROM ROW(softmig_s.softmig_v1,
 *		..., NULL)": appended to append_keyed_update's statement (same
 *		set_cols), so that a row whose columns already hold the values gets
 *		no new row version.
 */
static void
append_changed_filter(StringInfo buf, DestInfo *d, List *set_cols)
{
	StringInfoData vals;
	ListCell   *c;
	int			v = 0;

	initStringInfo(&vals);
	appendStringInfoString(buf, " AND ROW(");
	foreach(c, d->cols)
	{
		if (!softmig_str_member(set_cols, lfirst(c)) ||
			softmig_str_member(d->always_cols, lfirst(c)))
			continue;
		v++;
		appendStringInfo(buf, "softmig_t.%s, ", quote_identifier(lfirst(c)));
		appendStringInfo(&vals, "softmig_s.softmig_v%d, ", v);
	}
	appendStringInfo(buf, "NULL) IS DISTINCT FROM ROW(%sNULL)", vals.data);
}

/*
 * softmig_merge_backfill_prepare
 *		For the backfill of a member of a merge: fwd (its target side, from
 *		softmig_build_dest) of the owner gathers the attribute members'
 *		columns into the rows it copies (split_gather), and *lock_sql is set
 *		to the statement that takes the entity locks of the legacy rows in
 *		<from> (split_lock_sql), as the live projection does; for an
 *		attribute member, *refresh_sql is set to the UPDATE that writes its
 *		target columns from the current legacy rows whose keys are in <from>
 *		(the legacy table's rows re-read under the entity locks, so a value
 *		a live writer committed meanwhile is never overwritten with an older
 *		one).  Both stay NULL for a migration in no merge.  Loads the
 *		attribute members' cache entries.
 */
void
softmig_merge_backfill_prepare(SoftmigMigration *m, SoftmigDest *fwd, const char *from,
							   char **lock_sql, char **refresh_sql)
{
	StringInfoData src;
	StringInfoData buf;
	ListCell   *lc;
	int			i = 0;

	*lock_sql = NULL;
	*refresh_sql = NULL;
	if (!m->split_merge)
		return;
	*lock_sql = split_lock_sql(m, from);
	if (m->split_attrs != NIL && fwd->gather_cols == NIL)
		split_gather(m, fwd);
	if (m->split_owner == 0)
		return;
	initStringInfo(&src);
	appendStringInfo(&src, "%s AS softmig_r WHERE ROW(", softmig_qualified_relname(m->legacy));
	foreach(lc, m->legacy_key)
		appendStringInfo(&src, "%ssoftmig_r.%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
	appendStringInfoString(&src, ") IN (SELECT ");
	i = 0;
	foreach(lc, m->legacy_key)
		appendStringInfo(&src, "%ssoftmig_b.%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
	appendStringInfo(&src, " FROM %s AS softmig_b)", from);
	initStringInfo(&buf);
	if (!append_keyed_update(&buf, fwd, src.data, update_set_cols(fwd, NIL)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("attribute member \"%s\" maps no target column but its key", m->name)));
	append_changed_filter(&buf, fwd, update_set_cols(fwd, NIL));
	*refresh_sql = buf.data;
}
