/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Switching identity, and what may run under a switched identity; who
 *	  owns a table and the catalog.
 *
 *	  softmig runs its statements over the migrated tables (mirroring,
 *	  projection, backfill, hydrate, parity, invariants, transition rules)
 *	  as the owner of a table, and its bookkeeping as the owner of its
 *	  catalog, never as the caller.  softmig_enter_owner_context() switches
 *	  to such a role for a stretch of C code, in a security-restricted
 *	  operation with search_path pinned and row_security off; the gate
 *	  (gate.c) switches to the catalog owner for an implementation
 *	  function.  Each switch pushes an identity frame here.  Every call of
 *	  SetUserIdAndSecContext in softmig is in this file: the framed switches
 *	  above, the read-only variant (user SQL that must not write: parity,
 *	  invariants, transition rules), and a bare switch to the catalog owner
 *	  for softmig's own catalog statements, in which no user code runs.
 *
 *	  A switch is only safe if what runs under it is code that role would
 *	  run anyway.  The trust rule: every function (also the one behind an
 *	  operator, a cast chosen by coercion, an aggregate, a trigger of the
 *	  table written), every domain (its CHECK constraints run when a value
 *	  is coerced to it) and every type's I/O function evaluated under an
 *	  identity must be owned by a role that can already act as that
 *	  identity: the identity itself, a role that is a member of it, or a
 *	  superuser (which covers everything in pg_catalog).  A SECURITY
 *	  DEFINER function runs as its owner, so its owner does not matter.
 *	  Otherwise the owner of one table could make the owner of the other
 *	  (or the catalog owner) run his code: retype his column to his own
 *	  enum with an assignment cast, and the next mirrored write calls his
 *	  cast function as the other owner.
 *
 *	  The rule is enforced by walking query trees, not text: every query
 *	  parsed at the top of an identity frame (post_parse_analyze_hook: what
 *	  create_migration, set_option and the DDL event triggers prepare) and
 *	  every query planned there (planner_hook, on the rewritten tree: each
 *	  time a plan is made or remade, e.g. after a new cast appeared) is
 *	  walked, every FuncExpr, OpExpr, CoerceViaIO, CoerceToDomain, Aggref,
 *	  ... node checked, and every type a coercion produces checked through
 *	  its domains, array elements, composite attributes and range subtypes.
 *	  Queries nested deeper (the body of a trusted function, a trigger that
 *	  fires) are not walked: the code running them passed the rule itself.
 *	  "Top of a frame" is the executor nesting level at which the frame was
 *	  entered (ExecutorRun and ExecutorFinish hooks count the levels).
 *
 *	  Frames are popped by softmig_leave_owner_context, and by
 *	  (sub)transaction abort for frames entered inside the aborted
 *	  (sub)transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_range.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/cost.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rls.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "softmig.h"

/* How statements planned inside a frame may read tables. */
typedef enum PlanAccess
{
	PLAN_ACCESS_DEFAULT,		/* as the session's enable_seqscan says */
	PLAN_ACCESS_INDEX,			/* enable_seqscan off */
	PLAN_ACCESS_ANY				/* enable_seqscan on */
} PlanAccess;

/* One switch of identity that softmig made and has not undone yet. */
typedef struct IdentityFrame
{
	Oid			role;			/* the identity switched to */
	int			exec_level;		/* executor nesting level at the switch */
	SubTransactionId subid;		/* (sub)transaction that made it */
	bool		pinned;			/* an owner frame: search_path and
								 * row_security pinned (by it or an enclosing
								 * owner frame) */
	int			gucnest;		/* GUC nest level it opened, or 0 */
	PlanAccess	access;			/* plans made inside (inherited) */
} IdentityFrame;

static IdentityFrame *frames = NULL;
static int	nframes = 0;
static int	maxframes = 0;

/* ExecutorRun/ExecutorFinish nesting, and planning in progress */
static int	exec_level = 0;
static int	planning = 0;

static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;
static planner_hook_type prev_planner = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorFinish_hook_type prev_ExecutorFinish = NULL;

/*
 * softmig_grow_array
 *		Room for more items in a backend-lifetime array (TopMemoryContext):
 *		allocates or doubles arr, updating *maxitems.  For the small stacks
 *		of identity frames and of migrations being written.
 */
void *
softmig_grow_array(void *arr, int *maxitems, Size itemsize)
{
	int			n = *maxitems ? *maxitems * 2 : 16;

	*maxitems = n;
	if (arr == NULL)
		return MemoryContextAlloc(TopMemoryContext, itemsize * n);
	return repalloc(arr, itemsize * n);
}

/*
 * push_frame
 *		Remember that softmig now runs as role, from the current executor
 *		level and (sub)transaction; pinned and gucnest as for IdentityFrame.
 *		Plans made inside read tables the way the enclosing frame's do until
 *		softmig_prefer_index_plans says otherwise.
 */
static void
push_frame(Oid role, bool pinned, int gucnest)
{
	if (nframes >= maxframes)
		frames = softmig_grow_array(frames, &maxframes, sizeof(IdentityFrame));
	frames[nframes].role = role;
	frames[nframes].exec_level = exec_level;
	frames[nframes].subid = GetCurrentSubTransactionId();
	frames[nframes].pinned = pinned;
	frames[nframes].gucnest = gucnest;
	frames[nframes].access = nframes > 0 ? frames[nframes - 1].access : PLAN_ACCESS_DEFAULT;
	nframes++;
}

/*
 * pop_frame
 *		Undo the innermost push_frame; returns the GUC nest level it opened
 *		(0 if none), for the caller to close.
 */
static int
pop_frame(void)
{
	if (nframes <= 0)
		elog(ERROR, "softmig: identity frame stack underflow");
	nframes--;
	return frames[nframes].gucnest;
}

/*
 * settings_pinned
 *		Are search_path and row_security still what an owner frame pins,
 *		inside an owner frame that pinned them (so that its end restores
 *		whatever code inside it changes)?  Then a nested owner frame need
 *		not pin them again.  A function's SET clause or a SET inside a
 *		trusted function may have changed them meanwhile: the values are
 *		compared, not assumed.
 */
static bool
settings_pinned(void)
{
	return nframes > 0 && frames[nframes - 1].pinned &&
		!row_security && namespace_search_path != NULL &&
		strcmp(namespace_search_path, SM_PINNED_SEARCH_PATH) == 0;
}

/*
 * softmig_enter_owner_context
 *		Become "owner" in a security-restricted operation with the pinned
 *		search_path and row_security off, and push an identity frame (what
 *		runs from here on is checked against the trust rule).  The two
 *		settings are pinned at a GUC nest level of the frame's own, unless
 *		an enclosing owner frame pinned them and they still hold
 *		(settings_pinned: a write through a shape view, whose projection
 *		enters a second frame, pins once).  *save_nestlevel receives that
 *		level, or 0.  The caller must call softmig_leave_owner_context with
 *		the saved values on success; on error, (sub)transaction abort
 *		restores the user, the GUCs and the frame stack.
 */
void
softmig_enter_owner_context(Oid owner, int *save_nestlevel, Oid *save_userid,
							int *save_sec)
{
	GetUserIdAndSecContext(save_userid, save_sec);
	SetUserIdAndSecContext(owner, *save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (settings_pinned())
		*save_nestlevel = 0;
	else
	{
		*save_nestlevel = NewGUCNestLevel();
		(void) set_config_option("search_path", SM_PINNED_SEARCH_PATH,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		(void) set_config_option("row_security", "off",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	}
	push_frame(owner, true, *save_nestlevel);
}

/*
 * softmig_leave_owner_context
 *		Undo softmig_enter_owner_context: close the frame's GUC nest level
 *		(the one it opened, or one softmig_frame_set_guc opened later; this
 *		restores every setting changed inside), then the user.
 *		save_nestlevel is what the enter returned.
 */
void
softmig_leave_owner_context(int save_nestlevel, Oid save_userid, int save_sec)
{
	int			nest = pop_frame();

	Assert(save_nestlevel == 0 || save_nestlevel == nest);
	(void) save_nestlevel;
	if (nest > 0)
		AtEOXact_GUC(true, nest);
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * softmig_frame_set_guc
 *		Set GUC name to value for the rest of the innermost owner frame,
 *		restored when it ends (the frame opens a GUC nest level of its own
 *		first if it has none).  Caller is inside an owner frame.
 */
void
softmig_frame_set_guc(const char *name, const char *value)
{
	if (nframes <= 0 || !frames[nframes - 1].pinned)
		elog(ERROR, "softmig: a frame setting outside an owner context");
	if (frames[nframes - 1].gucnest == 0)
		frames[nframes - 1].gucnest = NewGUCNestLevel();
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * softmig_prefer_index_plans
 *		Inside an owner frame: plan statements for index access (on: as if
 *		enable_seqscan were off) or let the planner choose (off: as if it
 *		were on), for the rest of the frame and the frames inside it.  The
 *		cached, per-statement mirror statements are prepared once, often
 *		while the target is still empty, and reused for single-row writes
 *		when it is large; a plan that seq-scans the target would then stay
 *		for the life of the backend.  (Big statements are planned afresh
 *		with off.)  Applied by the planner hook (identity_planner) around
 *		each plan made inside the frame, so a frame that plans nothing pays
 *		nothing.
 */
void
softmig_prefer_index_plans(bool on)
{
	if (nframes <= 0 || !frames[nframes - 1].pinned)
		elog(ERROR, "softmig: a plan preference outside an owner context");
	frames[nframes - 1].access = on ? PLAN_ACCESS_INDEX : PLAN_ACCESS_ANY;
}

/*
 * softmig_enter_catalog_context
 *		For the gate: become the catalog owner (SECURITY_LOCAL_USERID_CHANGE,
 *		GUCs untouched) and push an identity frame.  Undo with
 *		softmig_leave_catalog_context; abort undoes it too.
 */
void
softmig_enter_catalog_context(Oid *save_userid, int *save_sec)
{
	Oid			owner = softmig_catalog_owner();

	GetUserIdAndSecContext(save_userid, save_sec);
	SetUserIdAndSecContext(owner, *save_sec | SECURITY_LOCAL_USERID_CHANGE);
	push_frame(owner, false, 0);
}

/*
 * softmig_leave_catalog_context
 *		Undo softmig_enter_catalog_context.
 */
void
softmig_leave_catalog_context(Oid save_userid, int save_sec)
{
	(void) pop_frame();
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * softmig_rel_owner
 *		Owner of a relation, from the syscache; 42P01 if there is none.
 */
Oid
softmig_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * softmig_catalog_owner
 *		The role owning softmig.migrations, i.e. the extension's owner.  A
 *		syscache lookup; no locks beyond what the syscache takes.
 */
Oid
softmig_catalog_owner(void)
{
	Oid			nsp = get_namespace_oid("softmig", false);
	Oid			relid = get_relname_relid("migrations", nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "softmig catalog table softmig.migrations is missing");
	return softmig_rel_owner(relid);
}

/*
 * softmig_catalog_exec
 *		Run one of softmig's own statements over its catalog as the catalog
 *		owner (an owner context, so no caller's setting applies): *plan is
 *		the caller's kept plan slot, prepared from sql (nargs argtypes) at
 *		the first call.  Raises unless the statement returns the SPI code
 *		expect; what names the step in that can't-happen error.  The caller
 *		is connected to SPI; locks are whatever the statement takes.
 */
void
softmig_catalog_exec(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
					 Datum *values, const char *nulls, int expect, const char *what)
{
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	int			rc;

	softmig_enter_owner_context(softmig_catalog_owner(), &save_nest, &save_user, &save_sec);
	if (*plan == NULL)
		*plan = softmig_prepare_kept(sql, nargs, argtypes);
	rc = SPI_execute_plan(*plan, values, nulls, false, 0);
	if (rc != expect)
		elog(ERROR, "softmig: %s failed: %s", what, SPI_result_code_string(rc));
	softmig_leave_owner_context(save_nest, save_user, save_sec);
}

/*
 * softmig_become_catalog_owner
 *		The bare switch for softmig's own statements over its catalog, in
 *		which no user code runs (reading the quarantine, the digest cache,
 *		inspect's assembly): become the catalog owner with
 *		SECURITY_LOCAL_USERID_CHANGE added, GUCs untouched, no identity
 *		frame.  *save_userid and *save_sec receive what to restore with
 *		softmig_set_user; an error unwinds it with the (sub)transaction.
 */
void
softmig_become_catalog_owner(Oid *save_userid, int *save_sec)
{
	GetUserIdAndSecContext(save_userid, save_sec);
	SetUserIdAndSecContext(softmig_catalog_owner(),
						   *save_sec | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * softmig_set_user
 *		SetUserIdAndSecContext(role, sec): restore what
 *		softmig_become_catalog_owner saved, or, inside a context entered with
 *		softmig_enter_readonly_context, change the user the next statements
 *		run as (parity reads each table as its owner inside one frame).
 */
void
softmig_set_user(Oid role, int sec)
{
	SetUserIdAndSecContext(role, sec);
}

/*
 * softmig_enter_readonly_context
 *		softmig_enter_owner_context(role), and the transaction read-only
 *		(XactReadOnly, what transaction_read_only shows), so user SQL run
 *		inside (mapping expressions, invariants, requires expressions)
 *		cannot write anything, not even through a volatile or SECURITY
 *		DEFINER function: the executor refuses every write to a non-temporary
 *		table, nextval() and DDL in a read-only transaction, at any depth.
 *		User SQL cannot turn it off again (the check hook of
 *		transaction_read_only refuses read-write after the first query).
 *		*save_readonly receives the previous state.  Undo with
 *		softmig_leave_readonly_context.
 *
 *		Why not SET transaction_read_only with GUC_ACTION_SAVE, undone with
 *		the GUC nest level: PostgreSQL 16 refuses to save transaction_*
 *		settings locally ("cannot be set locally in functions").  Setting
 *		XactReadOnly works on every version and unwinds the same way on
 *		error: a subtransaction's abort restores the read-only state it
 *		began with (PostgreSQL keeps it per subtransaction, prevXactReadOnly)
 *		and a new transaction starts from default_transaction_read_only.
 */
void
softmig_enter_readonly_context(Oid role, int *save_nestlevel, Oid *save_userid,
							   int *save_sec, bool *save_readonly)
{
	softmig_enter_owner_context(role, save_nestlevel, save_userid, save_sec);
	*save_readonly = XactReadOnly;
	XactReadOnly = true;
}

/*
 * softmig_leave_readonly_context
 *		Undo softmig_enter_readonly_context: the read-only state it found,
 *		then the owner context.
 */
void
softmig_leave_readonly_context(int save_nestlevel, Oid save_userid, int save_sec,
							   bool save_readonly)
{
	XactReadOnly = save_readonly;
	softmig_leave_owner_context(save_nestlevel, save_userid, save_sec);
}

/*
 * softmig_check_read_access
 *		Raise 42501 unless role may read both tables of a migration itself:
 *		SELECT on each, and no row-level security policy that would apply to
 *		it (softmig reads them as their owners, which would bypass it).
 *		Syscache lookups only.  what names the caller in messages.
 */
void
softmig_check_read_access(Oid legacy, Oid target, Oid role, const char *what)
{
	Oid			rels[2] = {legacy, target};

	for (int i = 0; i < 2; i++)
	{
		if (pg_class_aclcheck(rels[i], role, ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(rels[i])),
					 errdetail("%s reads both tables of the migration on behalf of role \"%s\", which needs SELECT on them.",
							   what, GetUserNameFromId(role, false))));
		if (check_enable_rls(rels[i], role, true) == RLS_ENABLED)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("row-level security of table %s applies to role \"%s\"",
							get_rel_name(rels[i]), GetUserNameFromId(role, false)),
					 errdetail("%s reads the tables as their owner and would not apply the policies.", what),
					 errhint("Run it as the table owner or as a role with BYPASSRLS.")));
	}
}


/*
 * identity_subxact_callback
 *		Drop the frames an aborted subtransaction left behind (the user and
 *		GUCs were restored by the abort itself).
 */
static void
identity_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (nframes > 0 && frames[nframes - 1].subid >= mySubid)
		nframes--;
}

/*
 * identity_xact_callback
 *		At the end of a transaction no frame is left: forget any an abort
 *		left behind.
 */
static void
identity_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
	{
		nframes = 0;
		planning = 0;
	}
}

/* ---------------------------------------------------------------------
 * The trust rule
 * --------------------------------------------------------------------- */

typedef struct TrustWalk
{
	Oid			identity;		/* the role the code would run as */
	List	   *types_seen;		/* types already checked (or in progress) */
	List	   *funcs_seen;		/* functions already checked */
} TrustWalk;

static bool trust_walker(Node *node, TrustWalk *w);
static void check_query(Query *q, TrustWalk *w);

/*
 * softmig_role_can_act_as
 *		Can role "member" already do what "role" can (so running member's
 *		code as role gives nobody anything new)?  True for the role itself,
 *		a role that is a member of it, and superusers.
 */
bool
softmig_role_can_act_as(Oid member, Oid role)
{
	if (member == role || superuser_arg(member))
		return true;
	return softmig_member_can_act_as(member, role);
}

/*
 * refuse
 *		The trust rule's error: kind and name say what was found, owner who
 *		owns it, w->identity who would have run it.
 */
static void
refuse(TrustWalk *w, const char *kind, const char *name, Oid owner)
{
	const char *who = GetUserNameFromId(w->identity, false);
	const char *whose = GetUserNameFromId(owner, false);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("softmig refuses to run %s %s as role \"%s\": it is owned by role \"%s\"",
					kind, name, who, whose),
			 errdetail("softmig evaluates this statement as role \"%s\"; code run under that identity must be owned by \"%s\", a member of it, or a superuser, or \"%s\" could act with the rights of \"%s\".",
					   who, who, whose, who),
			 errhint("Have role \"%s\" or a superuser own %s, or change the mapping, the column types or the casts so it is not needed.",
					 who, kind)));
}

/*
 * check_function
 *		Apply the rule to one function (and, for an aggregate, its support
 *		functions).  Built-in functions pass at once.
 */
static void
check_function(TrustWalk *w, Oid funcid)
{
	HeapTuple	tup;
	Form_pg_proc proc;

	if (!OidIsValid(funcid) || funcid < FirstNormalObjectId ||
		list_member_oid(w->funcs_seen, funcid))
		return;
	w->funcs_seen = lappend_oid(w->funcs_seen, funcid);
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", funcid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (!proc->prosecdef && !softmig_role_can_act_as(proc->proowner, w->identity))
		refuse(w, proc->prokind == PROKIND_AGGREGATE ? "aggregate" : "function",
			   format_procedure_qualified(funcid), proc->proowner);
	if (proc->prokind == PROKIND_AGGREGATE)
	{
		HeapTuple	atup = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(funcid));

		if (HeapTupleIsValid(atup))
		{
			Form_pg_aggregate agg = (Form_pg_aggregate) GETSTRUCT(atup);
			Oid			support[] = {agg->aggtransfn, agg->aggfinalfn, agg->aggcombinefn,
				agg->aggserialfn, agg->aggdeserialfn, agg->aggmtransfn,
			agg->aggminvtransfn, agg->aggmfinalfn};

			ReleaseSysCache(atup);
			for (int i = 0; i < lengthof(support); i++)
				check_function(w, support[i]);
		}
	}
	ReleaseSysCache(tup);
}

/*
 * check_operator
 *		The rule for the function behind an operator.
 */
static void
check_operator(TrustWalk *w, Oid opno)
{
	if (OidIsValid(opno) && opno >= FirstNormalObjectId)
		check_function(w, get_opcode(opno));
}

/*
 * check_domain_constraints
 *		Walk the CHECK constraints of a domain: they run as the identity
 *		whenever a value is coerced to it.  Reads pg_constraint by its
 *		contypid index (AccessShareLock).
 */
static void
check_domain_constraints(TrustWalk *w, Oid typid)
{
	Relation	rel = table_open(ConstraintRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key, Anum_pg_constraint_contypid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(typid));
	scan = systable_beginscan(rel, ConstraintTypidIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_constraint con = (Form_pg_constraint) GETSTRUCT(tup);
		bool		isnull;
		Datum		bin;

		if (con->contype != CONSTRAINT_CHECK)
			continue;
		bin = heap_getattr(tup, Anum_pg_constraint_conbin, RelationGetDescr(rel), &isnull);
		if (!isnull)
			(void) trust_walker(stringToNode(TextDatumGetCString(bin)), w);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/*
 * check_type
 *		The rule for everything that may run when a value of type typid is
 *		made (by a coercion, an input function, a function returning it):
 *		its I/O functions; for a domain its owner (who may add constraints
 *		at any time) and its CHECK constraints, then its base type; array
 *		elements, composite attributes and range subtypes (and the range's
 *		canonical function) in turn.  Built-in types pass at once.  Merely
 *		reading or printing a value runs no user code (output functions of
 *		domains, arrays and composites are built in, base types' are C), so
 *		the types of columns read are not checked.
 */
static void
check_type(TrustWalk *w, Oid typid)
{
	HeapTuple	tup;
	Form_pg_type typ;
	Oid			io[4];
	char		typtype;
	Oid			typrelid;
	Oid			basetype;
	Oid			elem;
	Oid			subscript;

	if (!OidIsValid(typid) || typid < FirstNormalObjectId ||
		list_member_oid(w->types_seen, typid))
		return;
	w->types_seen = lappend_oid(w->types_seen, typid);
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	typ = (Form_pg_type) GETSTRUCT(tup);
	io[0] = typ->typinput;
	io[1] = typ->typoutput;
	io[2] = typ->typreceive;
	io[3] = typ->typsend;
	typtype = typ->typtype;
	typrelid = typ->typrelid;
	basetype = typ->typbasetype;
	elem = typ->typelem;
	subscript = typ->typsubscript;
	if (typtype == TYPTYPE_DOMAIN && !softmig_role_can_act_as(typ->typowner, w->identity))
		refuse(w, "domain", format_type_be_qualified(typid), typ->typowner);
	ReleaseSysCache(tup);

	for (int i = 0; i < lengthof(io); i++)
		check_function(w, io[i]);
	check_function(w, subscript);
	switch (typtype)
	{
		case TYPTYPE_DOMAIN:
			check_domain_constraints(w, typid);
			check_type(w, basetype);
			break;
		case TYPTYPE_COMPOSITE:
			if (OidIsValid(typrelid))
			{
				Relation	rel = relation_open(typrelid, AccessShareLock);
				TupleDesc	desc = RelationGetDescr(rel);

				for (int i = 0; i < desc->natts; i++)
					if (!TupleDescAttr(desc, i)->attisdropped)
						check_type(w, TupleDescAttr(desc, i)->atttypid);
				relation_close(rel, AccessShareLock);
			}
			break;
		case TYPTYPE_RANGE:
			{
				HeapTuple	rtup = SearchSysCache1(RANGETYPE, ObjectIdGetDatum(typid));

				if (HeapTupleIsValid(rtup))
				{
					Form_pg_range rng = (Form_pg_range) GETSTRUCT(rtup);
					Oid			sub = rng->rngsubtype;
					Oid			canon = rng->rngcanonical;
					Oid			diff = rng->rngsubdiff;

					ReleaseSysCache(rtup);
					check_function(w, canon);
					check_function(w, diff);
					check_type(w, sub);
				}
			}
			break;
		case TYPTYPE_MULTIRANGE:
			check_type(w, get_multirange_range(typid));
			break;
		default:
			if (OidIsValid(elem))
				check_type(w, elem);
			break;
	}
}

/*
 * check_result_triggers
 *		The triggers of the table a statement writes (and of its partitions,
 *		where rows may be routed) run as the identity too.  Reads pg_trigger
 *		and pg_inherits without locking the partitions.
 */
static void
check_result_triggers(TrustWalk *w, Oid relid)
{
	List	   *rels = list_make1_oid(relid);
	ListCell   *lc;
	Relation	trel;

	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
		rels = list_concat(rels, find_all_inheritors(relid, NoLock, NULL));
	trel = table_open(TriggerRelationId, AccessShareLock);
	foreach(lc, rels)
	{
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tup;

		ScanKeyInit(&key, Anum_pg_trigger_tgrelid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(lfirst_oid(lc)));
		scan = systable_beginscan(trel, TriggerRelidNameIndexId, true, NULL, 1, &key);
		while (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			Form_pg_trigger tg = (Form_pg_trigger) GETSTRUCT(tup);

			if (tg->tgenabled != TRIGGER_DISABLED)
				check_function(w, tg->tgfoid);
		}
		systable_endscan(scan);
	}
	table_close(trel, AccessShareLock);
}

/*
 * check_sortgroup
 *		The equality and ordering operators of ORDER BY, GROUP BY, DISTINCT
 *		and set-operation clauses.
 */
static void
check_sortgroup(TrustWalk *w, List *clauses)
{
	ListCell   *lc;

	foreach(lc, clauses)
	{
		SortGroupClause *sgc = lfirst_node(SortGroupClause, lc);

		check_operator(w, sgc->eqop);
		check_operator(w, sgc->sortop);
	}
}

/*
 * check_setop
 *		The grouping clauses of a UNION/INTERSECT/EXCEPT tree.
 */
static void
check_setop(TrustWalk *w, Node *node)
{
	if (node == NULL || !IsA(node, SetOperationStmt))
		return;
	check_sortgroup(w, ((SetOperationStmt *) node)->groupClauses);
	check_setop(w, ((SetOperationStmt *) node)->larg);
	check_setop(w, ((SetOperationStmt *) node)->rarg);
}

/*
 * check_query
 *		Apply the rule to a whole query: its expressions and subqueries, its
 *		sort and grouping operators, and the triggers of the table it writes.
 */
static void
check_query(Query *q, TrustWalk *w)
{
	ListCell   *lc;

	if (q->commandType == CMD_UTILITY)
		return;
	(void) query_tree_walker(q, trust_walker, w, 0);
	check_sortgroup(w, q->sortClause);
	check_sortgroup(w, q->groupClause);
	check_sortgroup(w, q->distinctClause);
	foreach(lc, q->windowClause)
	{
		WindowClause *wc = lfirst_node(WindowClause, lc);

		check_sortgroup(w, wc->partitionClause);
		check_sortgroup(w, wc->orderClause);
	}
	check_setop(w, q->setOperations);
	if (q->resultRelation > 0)
	{
		RangeTblEntry *rte = rt_fetch(q->resultRelation, q->rtable);

		if (rte->rtekind == RTE_RELATION)
			check_result_triggers(w, rte->relid);
	}
}

/*
 * trust_walker
 *		expression_tree_walker callback: check the code behind each node.
 */
static bool
trust_walker(Node *node, TrustWalk *w)
{
	if (node == NULL)
		return false;
	check_stack_depth();
	switch (nodeTag(node))
	{
		case T_Query:
			check_query((Query *) node, w);
			return false;
		case T_FuncExpr:
			check_function(w, ((FuncExpr *) node)->funcid);
			check_type(w, ((FuncExpr *) node)->funcresulttype);
			break;
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			set_opfuncid((OpExpr *) node);
			check_function(w, ((OpExpr *) node)->opfuncid);
			check_type(w, ((OpExpr *) node)->opresulttype);
			break;
		case T_ScalarArrayOpExpr:
			{
				ScalarArrayOpExpr *saop = (ScalarArrayOpExpr *) node;

				set_sa_opfuncid(saop);
				check_function(w, saop->opfuncid);
				check_operator(w, get_negator(saop->opno));
			}
			break;
		case T_RowCompareExpr:
			{
				ListCell   *lc;

				foreach(lc, ((RowCompareExpr *) node)->opnos)
					check_operator(w, lfirst_oid(lc));
			}
			break;
		case T_Aggref:
			check_function(w, ((Aggref *) node)->aggfnoid);
			check_type(w, ((Aggref *) node)->aggtype);
			break;
		case T_WindowFunc:
			check_function(w, ((WindowFunc *) node)->winfnoid);
			check_type(w, ((WindowFunc *) node)->wintype);
			break;
		case T_MinMaxExpr:
			{
				Oid			t = ((MinMaxExpr *) node)->minmaxtype;

				if (t >= FirstNormalObjectId)
					check_function(w, lookup_type_cache(t, TYPECACHE_CMP_PROC)->cmp_proc);
			}
			break;
		case T_CoerceViaIO:
			check_type(w, ((CoerceViaIO *) node)->resulttype);
			break;
		case T_ArrayCoerceExpr:
			check_type(w, ((ArrayCoerceExpr *) node)->resulttype);
			break;
		case T_CoerceToDomain:
			check_type(w, ((CoerceToDomain *) node)->resulttype);
			break;
		case T_SubscriptingRef:
			check_type(w, ((SubscriptingRef *) node)->refcontainertype);
			break;
		default:
			break;
	}
	return expression_tree_walker(node, trust_walker, w);
}

/*
 * softmig_check_trusted_query
 *		Apply the trust rule to query q as if run by identity.  Raises 42501
 *		naming the first function, aggregate or domain that is not trusted.
 *		Reads the catalogs (syscache, pg_constraint, pg_trigger).
 */
void
softmig_check_trusted_query(Query *q, Oid identity)
{
	TrustWalk	w = {identity, NIL, NIL};

	check_query(q, &w);
	list_free(w.types_seen);
	list_free(w.funcs_seen);
}

/*
 * at_frame_top
 *		Is a query parsed or planned right now one that softmig itself runs
 *		under a switched identity (rather than one nested in code that runs
 *		from it, or planned while another query is planned)?
 */
static bool
at_frame_top(void)
{
	return nframes > 0 && planning == 0 &&
		frames[nframes - 1].exec_level == exec_level;
}

/*
 * identity_post_parse_analyze
 *		post_parse_analyze_hook: at the top of an identity frame, check the
 *		analyzed query (statements softmig prepares: mappings, predicates,
 *		invariants) before anything of it runs.
 */
static void
identity_post_parse_analyze(ParseState *pstate, Query *query, SOFTMIG_JUMBLESTATE *jstate)
{
	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	if (at_frame_top())
		softmig_check_trusted_query(query, GetUserId());
}

/*
 * identity_planner
 *		planner_hook: at the top of an identity frame, check the rewritten
 *		query before it is planned (planning may already evaluate immutable
 *		functions), then plan with nested planning marked.
 */
static PlannedStmt *
identity_planner(Query *parse, const char *query_string, int cursorOptions,
				 ParamListInfo boundParams SOFTMIG_PLANNER_EXTRA_PARAM)
{
	PlannedStmt *result;

	PlanAccess	access = nframes > 0 ? frames[nframes - 1].access : PLAN_ACCESS_DEFAULT;
	volatile bool save_seqscan = enable_seqscan;

	if (at_frame_top())
		softmig_check_trusted_query(parse, GetUserId());
	planning++;
	if (access != PLAN_ACCESS_DEFAULT)
		enable_seqscan = (access == PLAN_ACCESS_ANY);
	PG_TRY();
	{
		result = softmig_chain_hook(prev_planner, standard_planner,
									parse, query_string, cursorOptions, boundParams
									SOFTMIG_PLANNER_EXTRA_ARG);
	}
	PG_FINALLY();
	{
		planning--;
		enable_seqscan = save_seqscan;
	}
	PG_END_TRY();
	return result;
}

/*
 * identity_ExecutorRun
 *		Count executor nesting: queries parsed or planned while a statement
 *		runs (function bodies, row triggers) are one level deeper.
 */
static void
identity_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count
					 SOFTMIG_EXECUTOR_RUN_EXTRA_PARAM)
{
	exec_level++;
	PG_TRY();
	{
		softmig_chain_hook(prev_ExecutorRun, standard_ExecutorRun,
						   queryDesc, direction, count SOFTMIG_EXECUTOR_RUN_EXTRA_ARG);
	}
	PG_FINALLY();
	{
		exec_level--;
	}
	PG_END_TRY();
}

/*
 * identity_ExecutorFinish
 *		Likewise for AFTER triggers, which fire in ExecutorFinish.
 */
static void
identity_ExecutorFinish(QueryDesc *queryDesc)
{
	exec_level++;
	PG_TRY();
	{
		softmig_chain_hook(prev_ExecutorFinish, standard_ExecutorFinish, queryDesc);
	}
	PG_FINALLY();
	{
		exec_level--;
	}
	PG_END_TRY();
}

/*
 * softmig_identity_init
 *		Install the hooks and callbacks (from _PG_init).
 */
void
softmig_identity_init(void)
{
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = identity_post_parse_analyze;
	prev_planner = planner_hook;
	planner_hook = identity_planner;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = identity_ExecutorRun;
	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = identity_ExecutorFinish;
	RegisterXactCallback(identity_xact_callback, NULL);
	RegisterSubXactCallback(identity_subxact_callback, NULL);
}
