/*-------------------------------------------------------------------------
 *
 * sqltext.c
 *	  Building SQL text that every layer shares.  One rule holds for all of
 *	  it: a spliced expression (user SQL: a mapping, a key mapping) is
 *	  wrapped in parentheses and followed by a newline, so that a trailing
 *	  comment cannot eat what follows; names are quoted with
 *	  quote_identifier / quote_literal_cstr.
 *
 *	  The key of a row as JSON is built here and only here: a jsonb object
 *	  from column names and expressions, in groups that respect
 *	  jsonb_build_object's limit of 100 arguments.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "softmig.h"

/*
 * jsonb_build_object takes at most 100 arguments (FUNC_MAX_ARGS), that is
 * 50 pairs: build in groups of this many pairs, joined with ||.
 */
#define JSON_PAIRS_PER_CALL 40

/*
 * softmig_json_object_sql
 *		SQL building a jsonb object from names and expressions, in groups
 *		of JSON_PAIRS_PER_CALL pairs joined with || (jsonb_build_object
 *		takes at most 100 arguments).  Expressions are parenthesized and
 *		followed by a newline, like every spliced user expression.
 */
char *
softmig_json_object_sql(List *names, List *exprs)
{
	StringInfoData buf;
	ListCell   *n;
	ListCell   *e;
	int			i = 0;

	initStringInfo(&buf);
	if (names == NIL)
		return pstrdup("'{}'::pg_catalog.jsonb");
	forboth(n, names, e, exprs)
	{
		if (i % JSON_PAIRS_PER_CALL == 0)
			appendStringInfo(&buf, "%spg_catalog.jsonb_build_object(",
							 i ? ") OPERATOR(pg_catalog.||) " : "");
		else
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, "%s, (%s\n)", quote_literal_cstr(lfirst(n)), (char *) lfirst(e));
		i++;
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * softmig_quoted_idents
 *		The C strings of names as a List of quoted identifiers, each after
 *		prefix (an alias and a dot, or "").  Allocates in the current
 *		memory context.
 */
List *
softmig_quoted_idents(List *names, const char *prefix)
{
	List	   *r = NIL;
	ListCell   *lc;

	foreach(lc, names)
		r = lappend(r, psprintf("%s%s", prefix, quote_identifier(lfirst(lc))));
	return r;
}

/*
 * softmig_append_key_list
 *		"(e1\n)::t1 AS softmig_k1, (e2\n)::t2 AS softmig_k2, ...": key
 *		expressions (over the source row) cast to the key types, named by
 *		position for softmig_append_key_match.
 */
void
softmig_append_key_list(StringInfo buf, List *keyexprs, List *keytypes)
{
	ListCell   *e;
	ListCell   *t;
	int			i = 1;

	forboth(e, keyexprs, t, keytypes)
	{
		appendStringInfo(buf, "%s(%s\n)::%s AS softmig_k%d",
						 i > 1 ? ", " : "", (char *) lfirst(e), (char *) lfirst(t), i);
		i++;
	}
}

/*
 * softmig_append_key_not_null
 *		" AND prefix.k1 IS NOT NULL AND ..." over the target's correlation
 *		key columns keycols.
 */
void
softmig_append_key_not_null(StringInfo buf, List *keycols, const char *prefix)
{
	ListCell   *lc;

	foreach(lc, keycols)
		appendStringInfo(buf, " AND %s%s IS NOT NULL", prefix, quote_identifier(lfirst(lc)));
}

/*
 * softmig_append_key_match
 *		"lalias.k1 op1 ralias.softmig_k1 AND ...": the key columns of the
 *		table called lalias equal, by their operators, the keys a
 *		softmig_append_key_list in ralias computed.  Aliases are given as
 *		they stand in the SQL (quoted where they need it).
 */
void
softmig_append_key_match(StringInfo buf, const char *lalias, List *keycols, List *keyops,
						 const char *ralias)
{
	ListCell   *k;
	ListCell   *o;
	int			i = 1;

	forboth(k, keycols, o, keyops)
	{
		appendStringInfo(buf, "%s%s.%s %s %s.softmig_k%d",
						 i > 1 ? " AND " : "", lalias, quote_identifier(lfirst(k)),
						 (char *) lfirst(o), ralias, i);
		i++;
	}
}

/*
 * softmig_append_mapped_insert
 *		"INSERT INTO dst AS alias (c1, c2, ...) OVERRIDING SYSTEM VALUE
 *		SELECT (e1\n), (e2\n), ...": the start of an INSERT of mapped rows,
 *		the caller appends FROM and what follows.  alias may be NULL.
 */
void
softmig_append_mapped_insert(StringInfo buf, const char *dst, const char *alias,
							 List *cols, List *exprs)
{
	ListCell   *lc;
	int			i = 0;

	appendStringInfo(buf, "INSERT INTO %s%s%s (", dst, alias ? " AS " : "", alias ? alias : "");
	foreach(lc, cols)
		appendStringInfo(buf, "%s%s", i++ ? ", " : "", quote_identifier(lfirst(lc)));
	appendStringInfoString(buf, ") OVERRIDING SYSTEM VALUE SELECT ");
	i = 0;
	foreach(lc, exprs)
		appendStringInfo(buf, "%s(%s\n)", i++ ? ", " : "", (char *) lfirst(lc));
}

/*
 * softmig_append_conflict_update
 *		What follows "ON CONFLICT (...) DO " for an upsert of cols:
 *		"UPDATE SET c = EXCLUDED.c, ..." over the columns that are neither
 *		key columns (keycols) nor kept as they are (keep: also every identity
 *		ALWAYS column, which no UPDATE may set), or "NOTHING" when
 *		there is none.  Returns the number of columns set.
 */
int
softmig_append_conflict_update(StringInfo buf, List *cols, List *keycols, List *keep)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, cols)
	{
		if (softmig_str_member(keycols, lfirst(lc)) || softmig_str_member(keep, lfirst(lc)))
			continue;
		appendStringInfo(buf, "%s%s = EXCLUDED.%s", n++ ? ", " : "UPDATE SET ",
						 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
	}
	if (n == 0)
		appendStringInfoString(buf, "NOTHING");
	return n;
}
