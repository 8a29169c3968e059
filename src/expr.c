/*-------------------------------------------------------------------------
 *
 * expr.c
 *	  Mapping expressions: checking them and reading them.
 *
 *	  Every piece of user SQL softmig splices (a mapping, a key mapping,
 *	  the option representable) is first checked to be exactly one scalar
 *	  expression (softmig_check_expression: a raw parse, no catalog access),
 *	  and the columns it reads are taken from its parse tree
 *	  (softmig_expr_columns), never from its text.
 *
 *	  Refusing migration definitions that cannot work:
 *	  A mapping expression (and the option representable) is spliced into
 *	  statements softmig builds around transition tables, batch relations
 *	  and derived tables with internal names, evaluated once per row.  Some
 *	  expressions parse and even prepare there, yet cannot mean what their
 *	  author wants: a reference to one of softmig's internal names (the
 *	  transition table softmig_new read as a whole row, an alias of a
 *	  derived table), an aggregate, window or set-returning function over
 *	  the row, a constant NULL for a NOT NULL column.  They are refused
 *	  here, at create_migration (and again whenever the definition is
 *	  re-validated after DDL), with an error that names the mapping, never
 *	  at a later write, backfill or parity check.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/syscache.h"

#include "softmig.h"

/* Names beginning with this are softmig's own (aliases, ENRs, columns). */
#define SM_RESERVED_PREFIX "softmig"

/* The alias the source table gets while an expression is analysed. */
#define SM_CHECK_ALIAS "softmig_src"

/* What one walk over a raw expression needs and finds. */
typedef struct ReservedWalk
{
	Oid			srcrel;			/* the table the expression reads */
	const char *what;			/* for messages */
} ReservedWalk;

/*
 * softmig_check_expression
 *		Raise 42601 unless expr is exactly one scalar SQL expression (what may
 *		stand after SELECT with nothing else: no FROM, alias, second column,
 *		second statement or clause).  Parses only; takes no locks.
 */
void
softmig_check_expression(const char *expr, const char *what)
{
	List	   *raw;
	RawStmt    *rs;
	SelectStmt *sel;
	ResTarget  *rt;
	char	   *sql;

	if (expr == NULL || expr[strspn(expr, " \t\r\n")] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("%s must be a non-empty SQL expression", what)));

	sql = psprintf("SELECT %s\n", expr);
	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		goto bad;
	rs = linitial_node(RawStmt, raw);
	if (!IsA(rs->stmt, SelectStmt))
		goto bad;
	sel = (SelectStmt *) rs->stmt;
	if (sel->op != SETOP_NONE || sel->fromClause || sel->whereClause ||
		sel->groupClause || sel->havingClause || sel->windowClause ||
		sel->sortClause || sel->limitCount || sel->limitOffset ||
		sel->lockingClause || sel->withClause || sel->intoClause ||
		sel->distinctClause || sel->valuesLists ||
		list_length(sel->targetList) != 1)
		goto bad;
	rt = linitial_node(ResTarget, sel->targetList);
	if (rt->name != NULL || (IsA(rt->val, ColumnRef) &&
							 IsA(llast(((ColumnRef *) rt->val)->fields), A_Star)))
		goto bad;
	return;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("%s is not a single SQL expression: %s", what, expr),
			 errhint("Give one scalar expression over the other table's columns, such as upper(name) or amount * 100.")));
}

PG_FUNCTION_INFO_V1(softmig_check_expression_sql);
/*
 * softmig_check_expression_sql
 *		softmig._check_expression(expr, what): SQL access to the check above.
 */
Datum
softmig_check_expression_sql(PG_FUNCTION_ARGS)
{
	softmig_check_expression(text_to_cstring(PG_GETARG_TEXT_PP(0)),
							 text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}

/* Walker state: column names referenced by an expression. */
typedef struct ColumnRefs
{
	List	   *names;
} ColumnRefs;

/*
 * collect_column_refs
 *		raw_expression_tree_walker callback collecting the last name of
 *		every ColumnRef.
 */
static bool
collect_column_refs(Node *node, ColumnRefs *refs)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		ColumnRef  *cref = (ColumnRef *) node;
		Node	   *last = llast(cref->fields);

		if (IsA(last, String))
			refs->names = lappend(refs->names, pstrdup(strVal(last)));
		return false;
	}
	return raw_expression_tree_walker(node, collect_column_refs, (void *) refs);
}

/*
 * softmig_expr_columns
 *		The column names a mapping expression refers to (raw parse, no
 *		catalog access).  The expression must already have passed
 *		softmig_check_expression.
 */
List *
softmig_expr_columns(const char *expr)
{
	List	   *raw = raw_parser(psprintf("SELECT %s\n", expr), RAW_PARSE_DEFAULT);
	SelectStmt *sel = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	ResTarget  *rt = linitial_node(ResTarget, sel->targetList);
	ColumnRefs	refs = {NIL};

	(void) collect_column_refs(rt->val, &refs);
	return refs.names;
}

PG_FUNCTION_INFO_V1(softmig_expr_columns_sql);
/*
 * softmig_expr_columns_sql
 *		softmig._expr_columns(expr) -> text[]: SQL face of the above.
 */
Datum
softmig_expr_columns_sql(PG_FUNCTION_ARGS)
{
	char	   *expr = text_to_cstring(PG_GETARG_TEXT_PP(0));
	List	   *names;
	Datum	   *elems;
	ListCell   *lc;
	int			i = 0;

	softmig_check_expression(expr, "expression");
	names = softmig_expr_columns(expr);
	elems = palloc(sizeof(Datum) * (list_length(names) + 1));
	foreach(lc, names)
		elems[i++] = CStringGetTextDatum(lfirst(lc));
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * is_reserved
 *		Does name begin with softmig's reserved prefix?
 */
static bool
is_reserved(const char *name)
{
	return strncmp(name, SM_RESERVED_PREFIX, strlen(SM_RESERVED_PREFIX)) == 0;
}

/*
 * refuse_reserved
 *		Raise 42939 for a reference to an internal name.
 */
static void
refuse_reserved(const char *what, const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_RESERVED_NAME),
			 errmsg("%s refers to \"%s\", a name softmig reserves for its own statements", what, name),
			 errdetail("Names beginning with \"%s\" stand for softmig's transition tables, batches and aliases where the expression is evaluated.",
					   SM_RESERVED_PREFIX),
			 errhint("Refer to the other table's columns by their bare names.")));
}

/*
 * reserved_walker
 *		raw_expression_tree_walker callback: refuse column references whose
 *		first name is reserved (unless it is a column of the source table
 *		referred to by its bare name) and unqualified relation names that
 *		are reserved (in a subquery they would find softmig's transition
 *		tables).  No catalog access beyond the attribute syscache.
 */
static bool
reserved_walker(Node *node, ReservedWalk *w)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		ColumnRef  *cref = (ColumnRef *) node;
		Node	   *first = linitial(cref->fields);

		if (IsA(first, String) && is_reserved(strVal(first)) &&
			(list_length(cref->fields) > 1 ||
			 get_attnum(w->srcrel, strVal(first)) == InvalidAttrNumber))
			refuse_reserved(w->what, strVal(first));
		return false;
	}
	if (IsA(node, RangeVar))
	{
		RangeVar   *rv = (RangeVar *) node;

		if (rv->schemaname == NULL && rv->relname && is_reserved(rv->relname))
			refuse_reserved(w->what, rv->relname);
		return false;
	}
	return raw_expression_tree_walker(node, reserved_walker, (void *) w);
}

/*
 * strip_coercions
 *		The expression under any casts and domain coercions.
 */
static Node *
strip_coercions(Node *node)
{
	for (;;)
	{
		if (node == NULL)
			return NULL;
		if (IsA(node, RelabelType))
			node = (Node *) ((RelabelType *) node)->arg;
		else if (IsA(node, CoerceToDomain))
			node = (Node *) ((CoerceToDomain *) node)->arg;
		else if (IsA(node, CoerceViaIO))
			node = (Node *) ((CoerceViaIO *) node)->arg;
		else if (IsA(node, FuncExpr) &&
				 ((FuncExpr *) node)->funcformat != COERCE_EXPLICIT_CALL &&
				 list_length(((FuncExpr *) node)->args) >= 1)
			node = (Node *) linitial(((FuncExpr *) node)->args);
		else
			return node;
	}
}

/*
 * softmig_expect_boolean
 *		Raise 22023 unless the single column of q (the analysed "SELECT
 *		(expr) ..." of an expression named what) is boolean.
 */
void
softmig_expect_boolean(Query *q, const char *expr, const char *what)
{
	Oid			type = exprType((Node *) linitial_node(TargetEntry, q->targetList)->expr);

	if (type != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a boolean SQL expression, not one of type %s",
						what, format_type_be(type)),
				 errdetail("Expression: %s", expr)));
}

/*
 * softmig_check_mapping_expression
 *		Refuse an expression over the columns of table srcrel that softmig
 *		could not evaluate per row as intended: internal names (42939), an
 *		aggregate (42803), window (42P20) or set-returning function (0A000)
 *		at its top level, a result that is not boolean when want_bool
 *		(22023), or a constant NULL when not_null (22023).  what names the
 *		expression in messages ("forward mapping of column \"x\"").  The
 *		expression is analysed (never run; only constant folding evaluates
 *		immutable functions of constants) as role owner, with the pinned
 *		search_path, as it will be in the statements that use it.  The caller
 *		is connected to SPI and has checked it is one scalar expression.
 */
void
softmig_check_mapping_expression(const char *expr, const char *what, Oid srcrel,
								 Oid owner, bool want_bool, bool not_null)
{
	ReservedWalk w = {srcrel, what};
	List	   *raw;
	SelectStmt *sel;
	SPIPlanPtr	plan;
	CachedPlanSource *ps;
	Query	   *q;
	TargetEntry *te;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	raw = raw_parser(psprintf("SELECT %s\n", expr), RAW_PARSE_DEFAULT);
	sel = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	(void) reserved_walker((Node *) sel->targetList, &w);

	softmig_enter_owner_context(owner, &save_nest, &save_user, &save_sec);
	plan = SPI_prepare(psprintf("SELECT (%s\n) FROM ONLY %s AS " SM_CHECK_ALIAS,
								expr, softmig_qualified_relname(srcrel)),
					   0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	ps = linitial(SPI_plan_get_plan_sources(plan));
	q = linitial_node(Query, ps->query_list);
	if (q->hasAggs)
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("%s must not use an aggregate function", what),
				 errdetail("Expression: %s", expr),
				 errhint("A mapping computes one row from one row; aggregate inside a subquery if you need one.")));
	if (q->hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_WINDOWING_ERROR),
				 errmsg("%s must not use a window function", what),
				 errdetail("Expression: %s", expr),
				 errhint("A mapping computes one row from one row, whatever else the statement writes.")));
	if (q->hasTargetSRFs)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s must not use a set-returning function", what),
				 errdetail("Expression: %s", expr),
				 errhint("A mapping yields exactly one value per row.")));
	if (want_bool)
		softmig_expect_boolean(q, expr, what);
	te = linitial_node(TargetEntry, q->targetList);
	if (not_null)
	{
		Node	   *folded = strip_coercions(eval_const_expressions(NULL, (Node *) te->expr));

		if (folded && IsA(folded, Const) && ((Const *) folded)->constisnull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is always NULL, but the column is NOT NULL", what),
					 errdetail("Expression: %s", expr),
					 errhint("Map an expression that can be non-NULL, or allow NULL in the column.")));
	}
	SPI_freeplan(plan);
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * column_not_null
 *		Is column attname of relid declared NOT NULL?
 */
static bool
column_not_null(Oid relid, const char *attname)
{
	HeapTuple	tup = SearchSysCacheAttName(relid, attname);
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		result = ((Form_pg_attribute) GETSTRUCT(tup))->attnotnull;
		ReleaseSysCache(tup);
	}
	return result;
}

/*
 * softmig_check_definition
 *		Check every mapping expression of migration m and its option
 *		representable with softmig_check_mapping_expression: forward
 *		mappings over legacy, evaluated as the target's owner; backward
 *		mappings over the target, as legacy's owner; representable over the
 *		target, as the target's owner, boolean.  Connects to SPI itself.
 */
void
softmig_check_definition(SoftmigMigration *m)
{
	Oid			lowner = softmig_rel_owner(m->legacy);
	Oid			towner = softmig_rel_owner(m->target);
	ListCell   *c;
	ListCell   *e;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	forboth(c, m->fwd_cols, e, m->fwd_exprs)
		softmig_check_mapping_expression(lfirst(e),
										 psprintf("forward mapping of column \"%s\"", (char *) lfirst(c)),
										 m->legacy, towner, false,
										 column_not_null(m->target, lfirst(c)));
	forboth(c, m->bwd_cols, e, m->bwd_exprs)
		softmig_check_mapping_expression(lfirst(e),
										 psprintf("backward mapping of column \"%s\"", (char *) lfirst(c)),
										 m->target, lowner, false,
										 column_not_null(m->legacy, lfirst(c)));
	if (m->representable)
		softmig_check_mapping_expression(m->representable, "option representable",
										 m->target, towner, true, false);
	SPI_finish();
}
