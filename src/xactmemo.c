/*-------------------------------------------------------------------------
 *
 * xactmemo.c
 *	  Transaction memos: backend-local hash tables that remember something
 *	  a transaction did (an operation key it claimed, a row it deleted) for
 *	  the rest of that transaction only.  The table lives in
 *	  TopTransactionContext and is forgotten at the end of the top-level
 *	  transaction.  Each entry records the (sub)transaction that made it:
 *	  when that subtransaction aborts, its entries go (what it did was
 *	  undone); when it commits, they pass to its parent.  opkey.c and
 *	  authority.c keep one memo each.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "softmig.h"

/*
 * xact_memo_xact_callback
 *		Forget the memo at the end of the top-level transaction (commit,
 *		abort or PREPARE).  The memory belongs to TopTransactionContext,
 *		which PostgreSQL frees right after.  No locks, no allocation.
 */
static void
xact_memo_xact_callback(XactEvent event, void *arg)
{
	SoftmigXactMemo *memo = (SoftmigXactMemo *) arg;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			memo->table = NULL;
			break;
		default:
			break;
	}
}

/*
 * xact_memo_subxact_callback
 *		Entries of a subtransaction that aborts are removed; those of one
 *		that commits now belong to its parent.  An entry's hash key is at
 *		its start (dynahash requires it), so the entry itself is the key to
 *		remove it by.  No locks, no allocation.
 */
static void
xact_memo_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	SoftmigXactMemo *memo = (SoftmigXactMemo *) arg;
	HASH_SEQ_STATUS seq;
	char	   *e;

	if (memo->table == NULL ||
		(event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB))
		return;
	hash_seq_init(&seq, memo->table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		SubTransactionId *subid = (SubTransactionId *) (e + memo->subid_offset);

		if (*subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			*subid = parentSubid;
		else
			(void) hash_search(memo->table, e, HASH_REMOVE, NULL);
	}
}

/*
 * softmig_xact_memo_table
 *		The memo's hash table for the current transaction, created (in
 *		TopTransactionContext) on first use.  The first call of a backend
 *		registers the memo's transaction callbacks.  The caller owns the
 *		entries' contents and sets each new entry's subtransaction ID.
 */
HTAB *
softmig_xact_memo_table(SoftmigXactMemo *memo)
{
	if (!memo->registered)
	{
		RegisterXactCallback(xact_memo_xact_callback, memo);
		RegisterSubXactCallback(xact_memo_subxact_callback, memo);
		memo->registered = true;
	}
	if (memo->table == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = memo->keysize;
		ctl.entrysize = memo->entrysize;
		ctl.hcxt = TopTransactionContext;
		memo->table = hash_create(memo->name, memo->nelem, &ctl,
								  HASH_ELEM | HASH_CONTEXT |
								  (memo->string_keys ? HASH_STRINGS : HASH_BLOBS));
	}
	return memo->table;
}
