/*-------------------------------------------------------------------------
 *
 * backfillint.h
 *	  What the backfill (backfill.c) shares with the re-sync of entities
 *	  from the authoritative table (resync.c): the migration's key and
 *	  mappings as SQL text, gathered once per call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_BACKFILLINT_H
#define SOFTMIG_BACKFILLINT_H

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#include "softmig.h"

/* Everything a step needs to know about the migration's legacy key. */
typedef struct BfContext
{
	SoftmigMigration *m;
	char	   *legacy;			/* qualified legacy name */
	char	   *target;			/* qualified target name */
	List	   *lkeys;			/* legacy key columns */
	List	   *ltypes;			/* their qualified types */
	char	   *cols;			/* all legacy columns, quoted, comma-separated */
	char	   *keylist;		/* "k1", "k2" */
	char	   *keyjson;		/* jsonb_build_object('k1', "k1", ...) */
	char	   *keypos;			/* key columns' positions in cols: "1, 3" */
	SoftmigDest *fwd;			/* target side: columns, key, exprs */
	SoftmigDest *bwd;			/* legacy side: key exprs over target */
	char	   *merge_lock;		/* a merge: lock the batch's entities */
	char	   *merge_refresh;	/* a merge's attribute member: its copy */
} BfContext;

extern BfContext *softmig_bf_context(SoftmigMigration *m);
extern void softmig_bf_append_key_values(StringInfo buf, BfContext *c, int param);
extern void softmig_bf_append_row_bound(StringInfo buf, BfContext *c, const char *op, int *param);
extern void softmig_bf_bound_values(BfContext *c, Jsonb *key, Datum *values, char *nulls, int *n);

/* mergeclear.c: the attribute clear of a merge's backfill */
extern bool softmig_merge_clear_sql(BfContext *c, char **lock_sql, char **clear_sql);

#endif							/* SOFTMIG_BACKFILLINT_H */
