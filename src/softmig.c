/*-------------------------------------------------------------------------
 *
 * softmig.c
 *	  Module entry point: PG_MODULE_MAGIC and _PG_init, which calls the
 *	  start-up function of each module.  Every module defines its own GUCs,
 *	  hooks and callbacks there.
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
#include "remote.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * _PG_init
 *		Start every module, then reserve the softmig. GUC prefix.  Runs once
 *		per backend (or in the postmaster under shared_preload_libraries).
 */
void
_PG_init(void)
{
	/* read paths: routing cache; discovery GUCs, hooks and shared memory */
	softmig_readpath_init();
	softmig_route_init();

	/* observability: parity test hooks and digest cache; transition rules */
	softmig_observe_init();
	softmig_rules_init();

	/* write path: softmig.override, softmig.mirror_work_mem, ExecutorStart */
	softmig_trigger_init();
	softmig_directwrite_init();
	softmig_capture_init();
	softmig_groups_init();

	/* identity frames and the trust rule: parse, plan and executor hooks */
	softmig_identity_init();

	/*
	 * backfill: softmig.backfill_progress_interval,
	 * softmig.backfill_pause_lock
	 */
	softmig_progress_init();
	softmig_backfill_init();

	/* the migration cache: relcache callback, softmig.cache_pause_lock */
	softmig_cache_init();

	/* operation keys: softmig.operation_key, the ledger's xact callbacks */
	softmig_opkey_init();

	/* cross-database migrations: softmig.remote_timeout, test hook */
	softmig_remote_init();

	/* shape views: INSERT ... ON CONFLICT refused at parse analysis */
	softmig_shapeview_init();

	MarkGUCPrefixReserved("softmig");
}
