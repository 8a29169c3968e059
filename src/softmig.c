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
#include "opkey.h"
#include "observe.h"
#include "readpath.h"

PG_MODULE_MAGIC;

/* SET LOCAL softmig.override = 'reason': manual write to the other side. */
char	   *softmig_override = NULL;

/* SET LOCAL softmig.operation_key = '...': idempotency key (opkey.c). */
char	   *softmig_operation_key = NULL;

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

	DefineCustomIntVariable("softmig.backfill_pause_lock",
							"Test hook: advisory lock a backfill batch waits for between reading and writing.",
							"0 disables it.  For isolation tests only.",
							&softmig_backfill_pause_lock,
							0, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	/* NULL boot value: "not set" differs from an (invalid) empty key. */
	DefineCustomStringVariable("softmig.operation_key",
							   "Key of the domain operation the current transaction applies.",
							   "The first write of the transaction to a table of a managed migration claims the key in softmig.operations; a later transaction with the same key fails with SQLSTATE 23505.",
							   &softmig_operation_key,
							   NULL,
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	/* read paths: routing cache; discovery GUCs, hooks and shared memory */
	softmig_readpath_init();
	softmig_route_init();

	/* observability: parity test hooks and digest cache; transition rules */
	softmig_observe_init();
	softmig_rules_init();

	/* write triggers: softmig.mirror_work_mem, the ExecutorStart hook */
	softmig_trigger_init();

	/* identity frames and the trust rule: parse, plan and executor hooks */
	softmig_identity_init();

	/* backfill progress messages: softmig.backfill_progress_interval */
	softmig_progress_init();

	MarkGUCPrefixReserved("softmig");

	softmig_cache_init();
	softmig_opkey_init();
}
