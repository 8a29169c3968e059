/*-------------------------------------------------------------------------
 *
 * onetomany.h
 *	  What the write path of one-to-many migrations (onetomany.c) shares
 *	  with the builder of its statements' text (onetomany_sql.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_ONETOMANY_H
#define SOFTMIG_ONETOMANY_H

#include "lib/stringinfo.h"

#include "softmig.h"

/* The ephemeral relation holding one statement's aggregated entities. */
#define OTM_AGG "softmig_agg"

/* Which statement of the write path: its SQL text is built per kind. */
typedef enum OtmStmt
{
	OTM_MIRROR_UPSERT,			/* legacy INSERT/UPDATE -> reconcile sets */
	OTM_MIRROR_MOVE,			/* legacy UPDATE -> move sets of changed keys */
	OTM_MIRROR_DELETE,			/* legacy DELETE -> delete sets */
	OTM_LOCK,					/* target write -> lock touched entities */
	OTM_LOCK_LEGACY,			/* legacy write -> lock touched entities */
	OTM_AGGREGATE,				/* target write -> aggregate touched sets */
	OTM_PROJECT,				/* the aggregated rows -> legacy */
	OTM_BAD_KEYS,				/* keys of the unrepresentable entities */
	OTM_BF_FIRST,				/* backfill: the first legacy rows */
	OTM_BF_NEXT,				/* backfill: legacy rows after a key */
	OTM_BF_FRESH,				/* backfill: current versions of those rows */
	OTM_BF_MISSING,				/* backfill: count legacy rows without a set */
	OTM_BF_SWEEP,				/* backfill: legacy rows without a set */
	OTM_BF_ORPHANS,				/* backfill: entities legacy lacks */
	OTM_BF_DELETE,				/* backfill: their sets */
	OTM_PARITY,					/* parity: every entity whose sets differ */
	OTM_PARITY_AGG,				/* parity: legacy rows unlike their set's
								 * aggregate ($1 NULL), or one entity's */
	OTM_INSPECT,				/* inspect: one entity, $1 its legacy key */
	OTM_KEYS,					/* the touched entities' legacy keys (jsonb) */
	OTM_ENTITIES,				/* hydrate: the rows that stand for the
								 * entities $1 (array of legacy keys) */
	OTM_GONE					/* hydrate: those of them legacy lacks */
} OtmStmt;

extern char *softmig_otm_sql(SoftmigMigration *m, OtmStmt kind, Oid relid, bool has_new, bool has_old);
extern char *softmig_otm_col_type(Oid relid, const char *col);
extern void softmig_otm_append_idents(StringInfo buf, const char *alias, List *cols);
extern void softmig_otm_aggregated_cols(SoftmigMigration *m, List **cols, List **exprs);

#endif							/* SOFTMIG_ONETOMANY_H */
