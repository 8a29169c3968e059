/*-------------------------------------------------------------------------
 *
 * gate.c
 *	  The ownership gate in front of every function that changes a
 *	  migration.
 *
 *	  A public mutating function such as softmig.advance(...) is declared
 *	  LANGUAGE C with softmig_gate as its symbol.  The gate checks that the
 *	  calling role owns both tables of the migration (or is a superuser),
 *	  raising 42704 for an unknown migration and 42501 otherwise, and then
 *	  runs the implementation softmig._advance(...) (same argument types,
 *	  EXECUTE revoked from PUBLIC) as the owner of the softmig catalog.  This
 *	  keeps the privilege switch in one audited place instead of a SECURITY
 *	  DEFINER on every function, and the identity checked is the real
 *	  caller (GetUserId()), also when called from another function.
 *
 *	  The group functions (create_group, drop_group, advance_group,
 *	  rollback_group) take a group name instead: the caller must own the
 *	  tables of every member (42704 for an unknown group or member).
 *
 *	  The implementation never evaluates user-supplied SQL as the catalog
 *	  owner: mapping expressions are only prepared and run by mapping.c,
 *	  which switches to the owner of the table being written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "softmig.h"

/* The role that passed the gate, while its implementation runs. */
Oid			softmig_gate_actor = InvalidOid;

/* What the first argument of a gated function names */
typedef enum GateKind
{
	GATE_MIGRATION,				/* a migration */
	GATE_CREATE,				/* a new migration: tables in args 1 and 2 */
	GATE_GROUP,					/* a group: every member's tables */
	GATE_CREATE_GROUP			/* a new group: member names in arg 1 */
} GateKind;

typedef struct GateInfo
{
	FmgrInfo	impl;			/* the _name implementation */
	int			nargs;
	GateKind	kind;
	char	   *proname;
} GateInfo;

/*
 * gate_setup
 *		Resolve, once per call site, the implementation function of the
 *		public function being called.  Allocates in fn_mcxt.
 */
static GateInfo *
gate_setup(FunctionCallInfo fcinfo)
{
	Oid			fnoid = fcinfo->flinfo->fn_oid;
	HeapTuple	tup;
	Form_pg_proc proc;
	GateInfo   *gi;
	char	   *implname;
	Oid			impl;
	MemoryContext old;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fnoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fnoid);
	proc = (Form_pg_proc) GETSTRUCT(tup);

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	gi = palloc0(sizeof(GateInfo));
	gi->proname = pstrdup(NameStr(proc->proname));
	gi->nargs = proc->pronargs;
	if (strcmp(gi->proname, "create_migration") == 0)
		gi->kind = GATE_CREATE;
	else if (strcmp(gi->proname, "create_group") == 0)
		gi->kind = GATE_CREATE_GROUP;
	else if (strcmp(gi->proname, "drop_group") == 0 ||
			 strcmp(gi->proname, "advance_group") == 0 ||
			 strcmp(gi->proname, "rollback_group") == 0)
		gi->kind = GATE_GROUP;
	else
		gi->kind = GATE_MIGRATION;
	implname = psprintf("_%s", gi->proname);
	impl = LookupFuncName(list_make2(makeString("softmig"), makeString(implname)),
						  proc->pronargs, proc->proargtypes.values, true);
	if (!OidIsValid(impl))
		elog(ERROR, "softmig implementation function softmig.%s is missing", implname);
	fmgr_info_cxt(impl, &gi->impl, fcinfo->flinfo->fn_mcxt);
	MemoryContextSwitchTo(old);
	ReleaseSysCache(tup);
	return gi;
}

/*
 * describe_rel
 *		Name of a relation for messages, or its OID when it no longer exists.
 */
static char *
describe_rel(Oid relid)
{
	char	   *n = get_rel_name(relid);

	return n ? n : psprintf("%u", relid);
}

/*
 * softmig_require_owner
 *		Raise 42501 unless "role" is a superuser or owns both relations.
 *		Syscache lookups only.
 */
static void
softmig_require_owner(Oid role, Oid legacy, Oid target, const char *what)
{
	bool		legacy_ok;
	bool		target_ok;

	if (superuser_arg(role))
		return;

	/*
	 * a table dropped by hand: its remaining table decides (both gone:
	 * superuser)
	 */
	legacy_ok = get_rel_name(legacy) ? softmig_rel_ownercheck(legacy, role) : get_rel_name(target) != NULL;
	target_ok = get_rel_name(target) ? softmig_rel_ownercheck(target, role) : get_rel_name(legacy) != NULL;
	if (!legacy_ok || !target_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s", what),
				 errdetail("Only owners of both table \"%s\" and table \"%s\" may manage this migration.",
						   describe_rel(legacy), describe_rel(target))));
}

/*
 * require_pairs_owner
 *		Run sql (one text parameter, arg; rows of legacy and target oids)
 *		through SPI and raise 42501 unless "role" owns the tables of every
 *		row (see softmig_require_owner); rows with a NULL legacy are skipped.
 *		Returns the number of rows.  Takes no lock.
 */
static uint64
require_pairs_owner(Oid role, const char *sql, text *arg, const char *what)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	uint64		nrows;
	Oid		   *rels;
	uint64		i;
	bool		isnull;

	values[0] = PointerGetDatum(arg);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, 1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "softmig: reading softmig.migrations failed");
	nrows = SPI_processed;
	rels = SPI_palloc(sizeof(Oid) * 2 * Max(nrows, 1));	/* outlives SPI_finish */
	for (i = 0; i < nrows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		rels[2 * i] = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		rels[2 * i + 1] = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	}
	SPI_finish();
	for (i = 0; i < nrows; i++)
		if (OidIsValid(rels[2 * i]))
			softmig_require_owner(role, rels[2 * i], rels[2 * i + 1], what);
	pfree(rels);
	return nrows;
}

/*
 * require_group_owner
 *		Raise 42704 for an unknown group, and 42501 unless "role" owns the
 *		tables of every member of it (see softmig_require_owner).  Reads the
 *		catalog through SPI; takes no lock, the implementation locks the
 *		group and its members.
 */
static void
require_group_owner(Oid role, text *group, const char *what)
{
	if (require_pairs_owner(role,
							"SELECT m.legacy, m.target FROM softmig.groups g "
							"LEFT JOIN softmig.group_members gm ON gm.group_id OPERATOR(pg_catalog.=) g.id "
							"LEFT JOIN softmig.migrations m ON m.id OPERATOR(pg_catalog.=) gm.migration_id "
							"WHERE g.name OPERATOR(pg_catalog.=) $1",
							group, what) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("group \"%s\" does not exist", text_to_cstring(group)),
				 errhint("softmig.groups lists the groups of this database.")));
}

/*
 * require_entity_owner
 *		For quarantine, release and hydrate, which act on an entity in every
 *		member of a split or a merge: raise 42501 unless "role" owns the tables of
 *		every other member of the split or merge migration "name" takes part
 *		in (none when it takes part in none).  Takes no lock.
 */
static void
require_entity_owner(Oid role, text *name, const char *what)
{
	(void) require_pairs_owner(role,
							   "SELECT x.legacy, x.target FROM softmig.migrations m, softmig.migrations x "
							   "WHERE m.name OPERATOR(pg_catalog.=) $1 AND x.id OPERATOR(pg_catalog.<>) m.id "
							   "AND COALESCE(m.options OPERATOR(pg_catalog.->>) 'attribute_of', m.name) "
							   "OPERATOR(pg_catalog.=) ANY (ARRAY[x.name, x.options OPERATOR(pg_catalog.->>) 'attribute_of'])",
							   name, what);
}

/*
 * require_members_owner
 *		For create_group: raise 22004 for a NULL member list or member,
 *		42704 for an unknown migration, and 42501 unless "role" owns the
 *		tables of every migration named.
 */
static void
require_members_owner(Oid role, FunctionCallInfo fcinfo, const char *what)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("members must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		Oid			legacy;
		Oid			target;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("members must not contain null")));
		(void) softmig_migration_by_name(DatumGetTextPP(elems[i]), &legacy, &target);
		softmig_require_owner(role, legacy, target, what);
	}
}

PG_FUNCTION_INFO_V1(softmig_gate);
/*
 * softmig_gate
 *		Entry point of every mutating public function (see file header).
 *		Checks ownership as the caller, then runs the implementation with
 *		the catalog owner's rights.  The caller keeps ownership of the
 *		result; the user switch is undone on return, and by transaction or
 *		subtransaction abort on error.
 */
Datum
softmig_gate(PG_FUNCTION_ARGS)
{
	GateInfo   *gi = (GateInfo *) fcinfo->flinfo->fn_extra;
	Oid			caller = GetUserId();
	Oid			legacy;
	Oid			target;
	Oid			save_userid;
	int			save_sec;
	Oid			save_actor = softmig_gate_actor;

	LOCAL_FCINFO(ifc, FUNC_MAX_ARGS);
	Datum		result;
	int			i;
	char	   *what;

	if (gi == NULL)
	{
		gi = gate_setup(fcinfo);
		fcinfo->flinfo->fn_extra = gi;
	}

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s name must not be null",
						(gi->kind == GATE_GROUP || gi->kind == GATE_CREATE_GROUP) ?
						"group" : "migration")));

	if (gi->kind == GATE_GROUP || gi->kind == GATE_CREATE_GROUP)
	{
		what = psprintf("call softmig.%s on group \"%s\"", gi->proname,
						text_to_cstring(PG_GETARG_TEXT_PP(0)));
		if (gi->kind == GATE_GROUP)
			require_group_owner(caller, PG_GETARG_TEXT_PP(0), what);
		else
			require_members_owner(caller, fcinfo, what);
	}
	else
	{
		if (gi->kind == GATE_CREATE)
		{
			if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("legacy and target tables must not be null")));
			legacy = PG_GETARG_OID(1);
			target = PG_GETARG_OID(2);
			if (get_rel_name(legacy) == NULL || get_rel_name(target) == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_TABLE),
						 errmsg("legacy or target table does not exist")));
		}
		else
			(void) softmig_migration_by_name(PG_GETARG_TEXT_PP(0), &legacy, &target);

		what = psprintf("call softmig.%s on migration \"%s\"", gi->proname,
						text_to_cstring(PG_GETARG_TEXT_PP(0)));
		softmig_require_owner(caller, legacy, target, what);
		if (strcmp(gi->proname, "quarantine") == 0 || strcmp(gi->proname, "release") == 0 ||
			strcmp(gi->proname, "hydrate") == 0)
			require_entity_owner(caller, PG_GETARG_TEXT_PP(0), what);
	}

	InitFunctionCallInfoData(*ifc, &gi->impl, gi->nargs, PG_GET_COLLATION(),
							 NULL, NULL);
	for (i = 0; i < gi->nargs; i++)
	{
		ifc->args[i].value = fcinfo->args[i].value;
		ifc->args[i].isnull = fcinfo->args[i].isnull;
	}

	softmig_enter_catalog_context(&save_userid, &save_sec);
	softmig_gate_actor = caller;
	PG_TRY();
	{
		result = FunctionCallInvoke(ifc);
	}
	PG_FINALLY();
	{
		softmig_gate_actor = save_actor;
	}
	PG_END_TRY();
	softmig_leave_catalog_context(save_userid, save_sec);

	fcinfo->isnull = ifc->isnull;
	return result;
}

PG_FUNCTION_INFO_V1(softmig_actor);
/*
 * softmig_actor
 *		The role to record as actor in history: the caller that passed the
 *		gate, or the current user outside a gated call.
 */
Datum
softmig_actor(PG_FUNCTION_ARGS)
{
	Oid			role = OidIsValid(softmig_gate_actor) ? softmig_gate_actor : GetUserId();
	Name		result = (Name) palloc0(NAMEDATALEN);

	namestrcpy(result, GetUserNameFromId(role, false));
	PG_RETURN_NAME(result);
}

PG_FUNCTION_INFO_V1(softmig_state_of_literal);
/*
 * softmig_state_of_literal
 *		softmig.state(name unknown): the state of a migration named by an
 *		untyped literal.  Without this overload PostgreSQL would read
 *		softmig.state('orders') as a function-style cast of 'orders' to the
 *		type softmig.state (the function and the type share a name), so a
 *		literal argument is resolved here and forwarded to state(text).
 */
Datum
softmig_state_of_literal(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	Datum		result;
	bool		isnull;
	int			ret;

	values[0] = CStringGetTextDatum(PG_GETARG_CSTRING(0));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("SELECT softmig.state($1)", 1, argtypes, values,
								NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute failed: %d", ret);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	return result;
}
