/*-------------------------------------------------------------------------
 *
 * groups.c
 *	  Children carried over before their parents, for the members of a
 *	  group.
 *
 *	  softmig carries every statement to the other side at its end.  An
 *	  application that defers the foreign key of the side it writes may
 *	  write a child before its parent; the other side's key (checked per
 *	  statement: a deferred check cannot be queued by softmig's write, which
 *	  runs as the table's owner in a security-restricted operation) then
 *	  refuses the child.  For a member of a group such a row is remembered
 *	  as pending (its values as the write path received them), and carried
 *	  over again after every later write of another member of the same
 *	  group in the transaction (the parent's, typically), and once more at
 *	  commit (the parent may come from another transaction).  A later UPDATE
 *	  or DELETE of the row supersedes it.  A row the other side still
 *	  refuses then fails the commit in mirrored (the target must hold every
 *	  legacy row), and in new_write and new_read is state legacy cannot
 *	  represent: the member's rollback envelope closes, as it would have at
 *	  once without a group.
 *
 *	  The pending rows live in TopTransactionContext.  A row re-projected
 *	  is marked resolved by the subtransaction that did it, not dropped: a
 *	  subtransaction that aborts forgets the rows it added and makes those
 *	  it resolved pending again (its projection was rolled back too).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "softmig.h"

typedef struct PendingRow
{
	int32		migration_id;
	int32		group_id;
	Oid			relid;			/* the target table (or partition) written */
	int			nargs;
	Datum	   *values;			/* the projection's parameters */
	char	   *nulls;
	char	   *key;			/* legacy key, jsonb text */
	char	   *message;		/* legacy's refusal, for the envelope */
	SubTransactionId subid;		/* the subtransaction that added it */
	SubTransactionId resolved;	/* the one that re-projected it, or invalid */
} PendingRow;

static List *pending = NIL;		/* of PendingRow *, in TopTransactionContext */
static bool retrying = false;	/* softmig_group_retry is running */

/*
 * same_row
 *		Is r the row of migration id with legacy key key (jsonb text)?
 */
static bool
same_row(PendingRow *r, int32 id, const char *key)
{
	return r->migration_id == id && strcmp(r->key, key) == 0;
}

/*
 * softmig_group_pend
 *		Remember a row of group member m that legacy refused with a foreign
 *		key violation while it was projected from relation relid: the
 *		projection's parameters (values/nulls of the non-dropped columns of
 *		desc), its legacy key and legacy's message.  Copies everything into
 *		TopTransactionContext.  No catalog access.
 */
void
softmig_group_pend(SoftmigMigration *m, Oid relid, TupleDesc desc, Datum *values, char *nulls,
				   int nargs, Jsonb *key, const char *message)
{
	MemoryContext old;
	PendingRow *r;
	char	   *keytext = JsonbToCString(NULL, &key->root, VARSIZE(key));
	int			k = 0;

	old = MemoryContextSwitchTo(TopTransactionContext);
	r = palloc(sizeof(PendingRow));
	r->migration_id = m->id;
	r->group_id = m->group_id;
	r->relid = relid;
	r->nargs = nargs;
	r->values = palloc(sizeof(Datum) * nargs);
	r->nulls = palloc(sizeof(char) * nargs);
	for (int i = 0; i < desc->natts && k < nargs; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		r->nulls[k] = nulls[k];
		r->values[k] = nulls[k] == 'n' ? (Datum) 0 :
			datumCopy(values[k], att->attbyval, att->attlen);
		k++;
	}
	r->key = pstrdup(keytext);
	r->message = pstrdup(message);
	r->subid = GetCurrentSubTransactionId();
	r->resolved = InvalidSubTransactionId;
	pending = lappend(pending, r);
	MemoryContextSwitchTo(old);
}

/*
 * softmig_group_pending
 *		Does migration id have a row waiting for its parent?
 */
bool
softmig_group_pending(int32 id)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingRow *r = (PendingRow *) lfirst(lc);

		if (r->migration_id == id && r->resolved == InvalidSubTransactionId)
			return true;
	}
	return false;
}

/*
 * softmig_group_supersede
 *		The target rows with these legacy keys (a jsonb array, as
 *		keyjson_old computes it) were updated or deleted: a pending earlier
 *		version of them is no longer to be projected.  Marked resolved by
 *		the current subtransaction, so a rollback of it brings them back.
 */
void
softmig_group_supersede(int32 id, Jsonb *keys)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (keys == NULL || !JB_ROOT_IS_ARRAY(keys))
		return;
	it = JsonbIteratorInit(&keys->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *keytext;
		ListCell   *lc;

		if (tok != WJB_ELEM)
			continue;
		keytext = JsonbToCString(NULL, &JsonbValueToJsonb(&v)->root, -1);
		foreach(lc, pending)
		{
			PendingRow *r = (PendingRow *) lfirst(lc);

			if (r->resolved == InvalidSubTransactionId && same_row(r, id, keytext))
				r->resolved = GetCurrentSubTransactionId();
		}
	}
}

/*
 * reproject_row
 *		Carry one row of migration id to the other side again (project a
 *		target row into legacy, or mirror a legacy row into the target),
 *		from the parameters its first attempt received (groups.c): as the
 *		write path does it, as the destination's owner with the loop guard
 *		raised.
 *		Returns false if legacy refuses it again (a data exception or an
 *		integrity violation, as project_upsert tells them; other errors are
 *		raised): it stays pending, and closes the envelope at commit.
 *		Reopens relation relid, which the transaction already holds.
 */
static bool
reproject_row(int32 id, Oid relid, Datum *values, char *nulls)
{
	SoftmigMigration *m = softmig_get_migration(id);
	SoftmigRelPlans *p;
	Relation	rel;
	ErrorData  *err = NULL;
	bool		ok;
	int			save_nest;
	Oid			save_user;
	int			save_sec;

	if (m == NULL || m->state == SM_LEGACY || m->state == SM_CUTOVER)
		return true;			/* nothing is carried over any more */
	rel = table_open(relid, AccessShareLock);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	p = softmig_get_plans(m, rel);
	softmig_enter_owner_context(p->dst_owner, &save_nest, &save_user, &save_sec);
	softmig_mirror_enter(m->id);
	PG_TRY();
	{
		err = softmig_spi_try(p->upsert_row, NULL, values, nulls, false,
							  p->upsert_rc, softmig_unrepresentable);
	}
	PG_FINALLY();
	{
		softmig_mirror_leave();
	}
	PG_END_TRY();
	softmig_leave_owner_context(save_nest, save_user, save_sec);
	ok = (err == NULL);
	if (!ok)
		FreeErrorData(err);		/* allocated in this SPI connection's memory */
	SPI_finish();
	table_close(rel, NoLock);
	return ok;
}

/*
 * softmig_group_retry
 *		After a projection of a member of group group_id: project every
 *		pending row of another member of that group again
 *		(reproject_row); it is resolved unless legacy
 *		refuses it again.  Not reentrant: what the re-projections write does
 *		not retry.
 */
void
softmig_group_retry(int32 group_id, int32 projected_id)
{
	ListCell   *lc;

	if (retrying || pending == NIL || group_id == 0)
		return;
	retrying = true;
	PG_TRY();
	{
		foreach(lc, pending)
		{
			PendingRow *r = (PendingRow *) lfirst(lc);

			if (r->group_id != group_id || r->migration_id == projected_id ||
				r->resolved != InvalidSubTransactionId)
				continue;
			if (reproject_row(r->migration_id, r->relid, r->values, r->nulls))
				r->resolved = GetCurrentSubTransactionId();
		}
	}
	PG_FINALLY();
	{
		retrying = false;
	}
	PG_END_TRY();
}

/*
 * close_pending
 *		At commit: carry the rows still unresolved over once more (a parent
 *		may have been committed by another transaction).  One the target
 *		still refuses (mirrored) fails the commit with 23503; one legacy
 *		still refuses is state it cannot represent: the member's envelope
 *		closes (softmig._note_new_only, run by trigger.c as the catalog
 *		owner).
 */
static void
close_pending(void)
{
	List	   *rows = pending;
	ListCell   *lc;

	pending = NIL;
	/* after the deferred triggers, before commit: no snapshot is active */
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	foreach(lc, rows)
	{
		PendingRow *r = (PendingRow *) lfirst(lc);
		SoftmigMigration *m;

		if (r->resolved != InvalidSubTransactionId)
			continue;
		/* its parent may have come from another transaction meanwhile */
		if (reproject_row(r->migration_id, r->relid, r->values, r->nulls))
			continue;
		m = softmig_get_migration(r->migration_id);
		if (m == NULL)
			continue;
		if (m->state == SM_MIRRORED)
			ereport(ERROR,
					(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
					 errmsg("a row of migration \"%s\" cannot be mirrored: the target's foreign key refuses it", m->name),
					 errdetail("Legacy key %s: %s", r->key, r->message),
					 errhint("Its parent is missing on the target and did not come before commit: backfill the parent's member first, or write the parent in the same transaction.")));
		softmig_note_new_only(m, 1, DirectFunctionCall1(jsonb_in, CStringGetDatum(r->key)), false,
							  psprintf("legacy's foreign key refused the row and its parent was not projected before commit: %s",
									   r->message));
	}
	SPI_finish();
	PopActiveSnapshot();
}

/*
 * groups_xact_callback
 *		Pre-commit (and pre-prepare): settle the pending rows.  Any end of
 *		the transaction: forget them (their memory goes with
 *		TopTransactionContext).
 */
static void
groups_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (pending != NIL)
				close_pending();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			pending = NIL;
			retrying = false;
			break;
		default:
			break;
	}
}

/*
 * groups_subxact_callback
 *		A subtransaction that commits hands its rows to its parent; one that
 *		aborts forgets the rows it added and makes those it resolved pending
 *		again.
 */
static void
groups_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (pending == NIL)
		return;
	foreach(lc, pending)
	{
		PendingRow *r = (PendingRow *) lfirst(lc);

		if (event == SUBXACT_EVENT_COMMIT_SUB)
		{
			if (r->subid == mySubid)
				r->subid = parentSubid;
			if (r->resolved == mySubid)
				r->resolved = parentSubid;
		}
		else if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			if (r->subid == mySubid)
				pending = foreach_delete_current(pending, lc);
			else if (r->resolved == mySubid)
				r->resolved = InvalidSubTransactionId;
		}
	}
}

/*
 * softmig_groups_init
 *		Register the transaction callbacks (from _PG_init).
 */
void
softmig_groups_init(void)
{
	RegisterXactCallback(groups_xact_callback, NULL);
	RegisterSubXactCallback(groups_subxact_callback, NULL);
}
