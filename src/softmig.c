/*-------------------------------------------------------------------------
 *
 * softmig.c
 *	  Module entry point: PG_MODULE_MAGIC, the custom GUCs and the
 *	  registration of the per-backend cache invalidation callbacks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "softmig.h"

PG_MODULE_MAGIC;

/* SET LOCAL softmig.override = 'reason': manual write to the other side. */
char	   *softmig_override = NULL;

void		_PG_init(void);

/*
 * _PG_init
 *		Define GUCs and hook the relcache invalidation callback.  Runs once
 *		per backend (or in the postmaster under shared_preload_libraries).
 */
void
_PG_init(void)
{
	DefineCustomStringVariable("softmig.override",
							   "Reason for a manual write to the non-authoritative table of a migration.",
							   "Only owners of both tables may use it; every row written under it is recorded in the migration's history.",
							   &softmig_override,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("softmig");

	softmig_cache_init();
}
