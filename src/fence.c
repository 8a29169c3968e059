/*-------------------------------------------------------------------------
 *
 * fence.c
 *	  The delete fence: a heavyweight lock per migration between live
 *	  statements that delete or re-key legacy rows in state mirrored (ROW
 *	  EXCLUSIVE, which live writers never conflict on) and one backfill
 *	  batch (SHARE, tried without waiting).  Why the backfill needs it and
 *	  what it does without it is explained in backfill.c's header and in
 *	  doc/backfill.md.  The write trigger and the backfill both call down
 *	  into this file; it calls nothing of softmig's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"

#include "softmig.h"

/*
 * The delete fence's lock tag: an advisory-type tag on (SM_FENCE_KEY,
 * migration id) with a fourth field no pg_advisory_* function produces (they
 * use 1 and 2), so it never collides with an application's advisory locks.
 * pg_locks shows it as locktype advisory, classid 1936549486, objid the
 * migration id, objsubid 3.
 */
#define SM_FENCE_KEY 1936549486 /* 'smfn' */
#define SM_FENCE_SUBKEY 3

/*
 * fence_tag
 *		The delete fence's lock tag for a migration.
 */
static void
fence_tag(LOCKTAG *tag, int32 migration_id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, SM_FENCE_KEY, (uint32) migration_id, SM_FENCE_SUBKEY);
}

/*
 * softmig_fence_live_write
 *		Called by the write trigger before it carries a DELETE or a key
 *		change of legacy rows to the target in state mirrored: take the
 *		migration's delete fence in ROW EXCLUSIVE mode, held to the end of
 *		the transaction.  It waits only while a backfill batch holds the
 *		fence (one batch); live writers never conflict with each other.
 */
void
softmig_fence_live_write(int32 migration_id)
{
	LOCKTAG		tag;

	fence_tag(&tag, migration_id);
	(void) LockAcquire(&tag, RowExclusiveLock, false, false);
}

/*
 * softmig_fence_try_batch
 *		Try to take the delete fence for one backfill batch (SHARE mode, held
 *		to the end of the batch's transaction).  Never waits: when a live
 *		transaction that deleted or re-keyed legacy rows is still open, the
 *		batch falls back to row locks, so a backfill never queues in front
 *		of live writers and is never held back by them.  True if taken.
 */
bool
softmig_fence_try_batch(int32 migration_id)
{
	LOCKTAG		tag;

	fence_tag(&tag, migration_id);
	return LockAcquire(&tag, ShareLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * softmig_fence_has_waiters
 *		Is a live delete or key change waiting for the fence this backend
 *		holds in SHARE mode?
 */
bool
softmig_fence_has_waiters(int32 migration_id)
{
	LOCKTAG		tag;

	fence_tag(&tag, migration_id);
	return LockHasWaiters(&tag, ShareLock, false);
}
