/*-------------------------------------------------------------------------
 *
 * stmtcache.c
 *	  Kept plans of statements built per call (the backfill's batches,
 *	  bounds and cursors), keyed by everything they depend on: the
 *	  migration, its two tables, the parameter types and the SQL text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/inval.h"
#include "utils/memutils.h"

#include "softmig.h"

/*
 * The cache of prepared statements.  An entry is keyed by everything
 * its plan depends on: the migration, its two tables, the parameter types
 * and the SQL text.  The text alone is not enough: last_key()'s statement
 * is the same for two migrations whose key columns share a name but not a
 * type, and the batch relation (softmig_batch) that copy_rows() reads has
 * legacy's row type, which the plan cache does not track.  Entries are
 * invalidated by a relcache invalidation of either table (DDL on them,
 * every state or definition change of the migration, which sends one, or
 * a full reset) and freed at the start of the next outermost backfill
 * step, when no plan of ours can be executing.
 */
typedef struct CachedStmt
{
	int32		migration_id;
	Oid			relids[2];		/* legacy and target */
	int			nargs;
	Oid		   *argtypes;
	char	   *sql;
	SPIPlanPtr	plan;
	bool		valid;
	struct CachedStmt *next;
} CachedStmt;

static CachedStmt *stmt_cache = NULL;
static bool stmt_cache_callback = false;

/*
 * stmt_cache_relcache_callback
 *		Mark the statements of the invalidated relation (or all, for a full
 *		reset) stale.  No allocation, no catalog access.
 */
static void
stmt_cache_relcache_callback(Datum arg, Oid relid)
{
	for (CachedStmt *c = stmt_cache; c; c = c->next)
		if (!OidIsValid(relid) || c->relids[0] == relid || c->relids[1] == relid)
			c->valid = false;
}

/*
 * softmig_cached_plan_prune
 *		Free the stale statements.  The caller makes sure none of their
 *		plans can be in use (the backfill: no step of its is running).
 */
void
softmig_cached_plan_prune(void)
{
	CachedStmt **pp = &stmt_cache;

	while (*pp)
	{
		CachedStmt *c = *pp;

		if (c->valid)
		{
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		SPI_freeplan(c->plan);
		pfree(c->sql);
		if (c->argtypes)
			pfree(c->argtypes);
		pfree(c);
	}
}

/*
 * softmig_cached_plan
 *		Prepare sql (with nargs parameters of argtypes) for the backfill of
 *		migration m once per backend and keep it until DDL on, or a state
 *		or definition change of, either table of m.  The plan cache itself
 *		revalidates plans after DDL on other objects they use.
 */
SPIPlanPtr
softmig_cached_plan(SoftmigMigration *m, const char *sql, int nargs, Oid *argtypes)
{
	CachedStmt *c;

	if (!stmt_cache_callback)
	{
		CacheRegisterRelcacheCallback(stmt_cache_relcache_callback, (Datum) 0);
		stmt_cache_callback = true;
	}
	for (c = stmt_cache; c; c = c->next)
		if (c->valid && c->migration_id == m->id &&
			c->relids[0] == m->legacy && c->relids[1] == m->target &&
			c->nargs == nargs &&
			(nargs == 0 || memcmp(c->argtypes, argtypes, sizeof(Oid) * nargs) == 0) &&
			strcmp(c->sql, sql) == 0)
			return c->plan;
	c = MemoryContextAllocZero(TopMemoryContext, sizeof(CachedStmt));
	c->plan = softmig_prepare_kept(sql, nargs, argtypes);
	c->migration_id = m->id;
	c->relids[0] = m->legacy;
	c->relids[1] = m->target;
	c->nargs = nargs;
	if (nargs > 0)
	{
		c->argtypes = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * nargs);
		memcpy(c->argtypes, argtypes, sizeof(Oid) * nargs);
	}
	c->sql = MemoryContextStrdup(TopMemoryContext, sql);
	c->valid = true;
	c->next = stmt_cache;
	stmt_cache = c;
	return c->plan;
}
