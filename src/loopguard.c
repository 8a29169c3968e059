/*-------------------------------------------------------------------------
 *
 * loopguard.c
 *	  The loop guard: while softmig itself writes a migration's table
 *	  (mirroring, projecting, backfilling, hydrating, re-syncing), that
 *	  migration's own triggers step aside, so a write is carried to the
 *	  other table once and never back.  Backend-local; no locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "softmig.h"

/* how many migrations softmig is writing for right now (all of them) */
int			softmig_mirror_depth = 0;

/*
 * Set while softmig._resync_key touches an entity's authoritative row: a
 * member of a split or a merge re-projects it even though the no-op UPDATE
 * changed none of the columns its mapping reads (trigger.c).
 */
bool		softmig_resync_forcing = false;

/*
 * The loop guard: ids of the migrations softmig is writing for right now
 * (mirroring, projecting, backfilling, hydrating, re-syncing), innermost
 * last.  softmig_mirror_depth counts them all.
 */
static int32 *mirroring = NULL;
static int	nmirroring = 0;
static int	maxmirroring = 0;

/*
 * softmig_mirror_enter
 *		Mark migration id as being written by softmig: its own triggers step
 *		aside until the matching softmig_mirror_leave.  Callers pair the two
 *		with PG_TRY/PG_FINALLY.
 */
void
softmig_mirror_enter(int32 id)
{
	if (nmirroring >= maxmirroring)
		mirroring = softmig_grow_array(mirroring, &maxmirroring, sizeof(int32));
	mirroring[nmirroring++] = id;
	softmig_mirror_depth++;
}

/*
 * softmig_mirror_leave
 *		Undo the innermost softmig_mirror_enter.
 */
void
softmig_mirror_leave(void)
{
	if (nmirroring <= 0)
		elog(ERROR, "softmig: loop guard underflow");
	nmirroring--;
	softmig_mirror_depth--;
}

/*
 * softmig_mirroring
 *		Is softmig writing for migration id right now (so its triggers must
 *		let the write through)?
 */
bool
softmig_mirroring(int32 id)
{
	for (int i = 0; i < nmirroring; i++)
		if (mirroring[i] == id)
			return true;
	return false;
}

/*
 * softmig_mirroring_group_sibling
 *		Is softmig writing, right now, for another member of m's group?
 *		Projecting one member writes its projection table, whose foreign key
 *		actions (ON DELETE CASCADE, SET NULL, ...) may write another
 *		member's projection table: that write is part of the projection and
 *		is neither refused nor carried back.  Group members share one state,
 *		so such a write is always on m's non-authoritative side.  Only
 *		called on the refusing path; reads the migration cache.
 */
bool
softmig_mirroring_group_sibling(SoftmigMigration *m)
{
	int32		group_id = m->group_id;
	int32		self = m->id;

	if (group_id == 0)
		return false;
	for (int i = nmirroring - 1; i >= 0; i--)
	{
		SoftmigMigration *o;

		if (mirroring[i] == self)
			continue;
		o = softmig_get_migration(mirroring[i]);
		if (o != NULL && o->group_id == group_id)
			return true;
	}
	return false;
}
