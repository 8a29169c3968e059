/*-------------------------------------------------------------------------
 *
 * sqlstate.h
 *	  Every SQLSTATE of softmig's own class SM, in one place (documented in
 *	  doc/reference.md).  Included through softmig.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_SQLSTATE_H
#define SOFTMIG_SQLSTATE_H

/* A write to the table that is not the write authority of the state. */
#define ERRCODE_SOFTMIG_WRITE_REFUSED	MAKE_SQLSTATE('S','M','0','0','1')

/* A table of a migration lacks (or tampered with) softmig's triggers. */
#define ERRCODE_SOFTMIG_TRIGGER_MISSING MAKE_SQLSTATE('S','M','0','0','2')

/*
 * A write without softmig.operation_key to a migration whose option
 * require_operation_key is true.
 */
#define ERRCODE_SOFTMIG_OPKEY_REQUIRED	MAKE_SQLSTATE('S','M','0','0','3')

/* A target row legacy cannot represent, refused (on_new_only = reject). */
#define ERRCODE_SOFTMIG_NEW_ONLY		MAKE_SQLSTATE('S','M','0','0','4')

/* A write to a quarantined entity. */
#define ERRCODE_SOFTMIG_QUARANTINED		MAKE_SQLSTATE('S','M','0','0','5')

/*
 * A write refused by a transition rule: the edge is not allowed, or the
 * rule's requires expression is not true.
 */
#define ERRCODE_SOFTMIG_RULE_VIOLATION	MAKE_SQLSTATE('S','M','0','0','8')

/*
 * A statement a shape view cannot carry to the write authority (INSERT ...
 * ON CONFLICT).
 */
#define ERRCODE_SOFTMIG_SHAPE_VIEW_UNSUPPORTED MAKE_SQLSTATE('S','M','0','0','9')

#endif							/* SOFTMIG_SQLSTATE_H */
