/*-------------------------------------------------------------------------
 *
 * transwalk.c
 *	  Walking the transition tables of one statement (transwalk.h): the
 *	  rows of OLD and NEW in step for an UPDATE, or one of them.  Takes no
 *	  locks; reads only the trigger's tuplestores.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/tuptable.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "transwalk.h"

/*
 * softmig_trans_walk_begin
 *		Start a walk led by OLD (lead_old) or NEW, reading the other table
 *		in step when also is true, from the first rows.  The slots are made
 *		in the current memory context; trans_walk_end drops them.
 */
void
softmig_trans_walk_begin(TransWalk *w, TriggerData *td, bool lead_old, bool also)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	bool		with_old = lead_old || also;
	bool		with_new = !lead_old || also;

	w->td = td;
	w->lead_old = lead_old;
	w->os = with_old ? MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple) : NULL;
	w->ns = with_new ? MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple) : NULL;
	if (with_old)
	{
		tuplestore_select_read_pointer(td->tg_oldtable, 0);
		tuplestore_rescan(td->tg_oldtable);
	}
	if (with_new)
	{
		tuplestore_select_read_pointer(td->tg_newtable, 0);
		tuplestore_rescan(td->tg_newtable);
	}
}

/*
 * softmig_trans_walk_next
 *		The next row of the leading table, and the row in step with it of
 *		the other; false when the leading table has no more rows.
 */
bool
softmig_trans_walk_next(TransWalk *w)
{
	Tuplestorestate *lead = w->lead_old ? w->td->tg_oldtable : w->td->tg_newtable;
	Tuplestorestate *other = w->lead_old ? w->td->tg_newtable : w->td->tg_oldtable;
	TupleTableSlot *lslot = w->lead_old ? w->os : w->ns;
	TupleTableSlot *oslot = w->lead_old ? w->ns : w->os;

	if (!tuplestore_gettupleslot(lead, true, false, lslot))
		return false;
	if (oslot && !tuplestore_gettupleslot(other, true, false, oslot))
		elog(ERROR, "softmig: transition tables of an UPDATE are out of step");
	return true;
}

/*
 * softmig_trans_walk_end
 *		Drop the walk's slots.
 */
void
softmig_trans_walk_end(TransWalk *w)
{
	if (w->os)
		ExecDropSingleTupleTableSlot(w->os);
	if (w->ns)
		ExecDropSingleTupleTableSlot(w->ns);
}
