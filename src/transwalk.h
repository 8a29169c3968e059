/*-------------------------------------------------------------------------
 *
 * transwalk.h
 *	  Walking the transition tables of one statement, OLD and NEW in step:
 *	  the write trigger (trigger.c) and per-field authority (authority.c)
 *	  read a statement's rows this way.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_TRANSWALK_H
#define SOFTMIG_TRANSWALK_H

#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "utils/datum.h"

/*
 * A walk over the transition tables of one statement: OLD and NEW in step
 * (an UPDATE), or one of them.  One table leads: the walk ends with its
 * rows, and the other, if read, must have a row for each of them.  The
 * rows are read into os and ns, not deformed: callers deform what they
 * need.
 */
typedef struct TransWalk
{
	TriggerData *td;
	bool		lead_old;		/* OLD leads (else NEW) */
	TupleTableSlot *os;			/* OLD row, or NULL when OLD is not read */
	TupleTableSlot *ns;			/* NEW row, or NULL when NEW is not read */
} TransWalk;

extern void softmig_trans_walk_begin(TransWalk *w, TriggerData *td, bool lead_old, bool also);
extern bool softmig_trans_walk_next(TransWalk *w);
extern void softmig_trans_walk_end(TransWalk *w);

/*
 * softmig_attr_unchanged
 *		Does attribute i (0-based) hold the same bytes in both deformed rows?
 */
static inline bool
softmig_attr_unchanged(TupleTableSlot *os, TupleTableSlot *ns, int i, Form_pg_attribute att)
{
	return os->tts_isnull[i] == ns->tts_isnull[i] &&
		(os->tts_isnull[i] ||
		 datumIsEqual(os->tts_values[i], ns->tts_values[i], att->attbyval, att->attlen));
}

#endif							/* SOFTMIG_TRANSWALK_H */
