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
