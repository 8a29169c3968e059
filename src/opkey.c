/*-------------------------------------------------------------------------
 *
 * opkey.c
 *	  Operation keys: retries never duplicate, on either path.
 *
 *	  An application names each domain operation with a stable key,
 *
 *	      SET LOCAL softmig.operation_key = 'invoice:42:ref-9';
 *
 *	  and the first write of the transaction that touches a migration's
 *	  table (either side, any managed state mirrored .. cutover) claims the
 *	  key for that migration in the ledger softmig.operations, in the same
 *	  transaction.  The claim is made by the BEFORE STATEMENT guard trigger
 *	  (trigger.c calls softmig_opkey_claim once the write is allowed), so a
 *	  duplicate fails before a single row is written.
 *
 *	  The ledger's primary key (migration_id, key) does all the
 *	  concurrency work: the claim is
 *
 *	      INSERT ... ON CONFLICT (migration_id, key) DO NOTHING
 *
 *	  which waits for an in-progress transaction holding the same key and
 *	  then inserts (that transaction aborted) or does nothing (it
 *	  committed).  Doing nothing means the key was already applied: we
 *	  look up the winner and raise 23505 naming the key, when and on which
 *	  side it was applied.  No subtransaction is needed.
 *
 *	  One ledger row per (migration, key) serves both sides, so a key
 *	  applied on legacy under mirrored is still a duplicate when replayed
 *	  on the target under new_write.  A transaction touching several
 *	  migrations claims the key in each.
 *
 *	  The claim is one index probe/insert per transaction, migration and
 *	  key, not per row or statement: successful claims are remembered in a
 *	  backend-local hash table (the memo) that lives in TopTransactionContext
 *	  and is forgotten at transaction end.  Each memo entry carries the
 *	  subtransaction that made the claim; when that subtransaction aborts
 *	  (ROLLBACK TO SAVEPOINT, a PL/pgSQL exception block) PostgreSQL removes
 *	  the ledger row and we remove the entry, so the next write claims the
 *	  key again; when it commits, the entry moves to the parent.  The memo
 *	  is keyed by (migration, key) because SET LOCAL can change the key
 *	  within a transaction.
 *
 *	  Writes made by softmig itself (mirroring, projection: the guard
 *	  returns early while softmig_mirror_depth > 0) never claim, so a
 *	  mirrored write does not claim twice.
 *
 *	  The ledger belongs to the catalog owner and application roles cannot
 *	  write it, so the claim runs as the catalog owner (security-restricted,
 *	  pinned search_path) with a saved plan.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "opkey.h"

/* "<migration id>:<key>": an int32, a separator, the key and a NUL. */
#define MEMO_KEYSIZE (12 + 1 + SM_OPKEY_MAX_BYTES + 1)

/* One claim made by this transaction. */
typedef struct OpkeyMemoEntry
{
	char		memokey[MEMO_KEYSIZE];	/* hash key, "<id>:<key>" */
	SubTransactionId subid;		/* (sub)transaction that owns the claim */
} OpkeyMemoEntry;

/* SET LOCAL softmig.operation_key = '...': the idempotency key. */
char	   *softmig_operation_key = NULL;

/* Claims of the current transaction (its table is NULL when none). */
static SoftmigXactMemo claims_memo = {
	"softmig operation key claims", MEMO_KEYSIZE, sizeof(OpkeyMemoEntry),
	offsetof(OpkeyMemoEntry, subid), true, 8, NULL, false
};

/* Saved plans (kept for the life of the backend). */
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr lookup_plan = NULL;

/* What the ledger says about a key claimed by someone else. */
typedef struct OpkeyWinner
{
	char	   *side;
	char	   *relation;
	char	   *state;
	char	   *claimed_at;
	char	   *xid;
	char	   *claimed_by;
} OpkeyWinner;

/*
 * softmig_opkey_init
 *		Define softmig.operation_key.  Called once per backend from
 *		_PG_init; the memo registers its transaction callbacks on first use.
 */
void
softmig_opkey_init(void)
{
	/* NULL boot value: "not set" differs from an (invalid) empty key. */
	DefineCustomStringVariable("softmig.operation_key",
							   "Key of the domain operation the current transaction applies.",
							   "The first write of the transaction to a table of a managed migration claims the key in softmig.operations; a later transaction with the same key fails with SQLSTATE 23505.",
							   &softmig_operation_key,
							   NULL,
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);
}

/*
 * memo_has
 *		Has this transaction (in a subtransaction that is still alive)
 *		already claimed the memo key?  No locks, no allocation.
 */
static bool
memo_has(const char *memokey)
{
	return claims_memo.table != NULL && hash_search(claims_memo.table, memokey, HASH_FIND, NULL) != NULL;
}

/*
 * memo_remember
 *		Record a claim made by the current subtransaction.  The table is
 *		created on the first claim of a transaction, in
 *		TopTransactionContext.
 */
static void
memo_remember(const char *memokey)
{
	OpkeyMemoEntry *e;
	bool		found;

	e = hash_search(softmig_xact_memo_table(&claims_memo), memokey, HASH_ENTER, &found);
	if (!found)
		e->subid = GetCurrentSubTransactionId();
}

/*
 * prepare_plans
 *		Prepare and keep the claim and lookup statements.  Must be called
 *		inside an SPI connection, as the catalog owner.  The statements are
 *		fully qualified; key comparisons use the ledger's "C" collation so
 *		the primary key index serves them.
 */
static void
prepare_plans(void)
{
	if (claim_plan == NULL)
	{
		Oid			argtypes[6] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, NAMEOID};

		claim_plan = softmig_prepare_kept("INSERT INTO softmig.operations "
										  "(migration_id, key, side, relation, state, claimed_by) "
										  "VALUES ($1, $2, $3::softmig.side, $4, $5::softmig.state, $6) "
										  "ON CONFLICT (migration_id, key) DO NOTHING",
										  6, argtypes);
	}
	if (lookup_plan == NULL)
	{
		Oid			argtypes[2] = {INT4OID, TEXTOID};

		lookup_plan = softmig_prepare_kept("SELECT side::pg_catalog.text, relation, state::pg_catalog.text, "
										   "pg_catalog.to_char(claimed_at, 'YYYY-MM-DD HH24:MI:SS.USOF'), "
										   "xid::pg_catalog.text, "
										   "claimed_by::pg_catalog.text, "
										   "COALESCE(xid OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id_if_assigned(), false) "
										   "FROM softmig.operations "
										   "WHERE migration_id OPERATOR(pg_catalog.=) $1 "
										   "AND key OPERATOR(pg_catalog.=) ($2 COLLATE pg_catalog.\"C\")",
										   2, argtypes);
	}
}

/*
 * claim_in_ledger
 *		Claim (m, key) in softmig.operations for the current transaction.
 *		Returns normally when the claim is ours; raises 23505 (after leaving
 *		the owner context and SPI) when another committed transaction
 *		already applied the key.
 *
 *		Runs its own SPI connection, as the catalog owner.  The INSERT takes
 *		RowExclusiveLock on the ledger and, through its primary key, waits
 *		for any in-progress transaction that holds the same key.  Under
 *		REPEATABLE READ or SERIALIZABLE a waiting transaction whose winner
 *		committed gets PostgreSQL's serialization failure (40001) instead;
 *		its retry then gets 23505.
 *
 *		The caller owns m, rel and key; nothing allocated here outlives the
 *		call except the error report.
 */
static void
claim_in_ledger(SoftmigMigration *m, Relation rel, SoftmigSide side, const char *key)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	char	   *migname = pstrdup(m->name);
	Datum		values[6];
	Datum		lvalues[2];
	OpkeyWinner winner;
	bool		duplicate = false;
	int			save_nest;
	Oid			save_user;
	int			save_sec;
	int			ret;

	values[0] = Int32GetDatum(m->id);
	values[1] = CStringGetTextDatum(key);
	values[2] = CStringGetTextDatum(side == SIDE_LEGACY ? "legacy" : "new");
	values[3] = CStringGetTextDatum(RelationGetRelationName(rel));
	values[4] = CStringGetTextDatum(softmig_state_name(m->state));
	values[5] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(GetUserId(), false)));
	lvalues[0] = values[0];
	lvalues[1] = values[1];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	softmig_enter_owner_context(softmig_catalog_owner(), &save_nest, &save_user, &save_sec);
	prepare_plans();

	/*
	 * Insert, or learn who holds the key.  The winner can vanish between the
	 * two statements (forget_operations deleted it): then try again.
	 */
	for (int attempt = 0;; attempt++)
	{
		HeapTuple	tup;
		TupleDesc	desc;
		bool		isnull;
		bool		mine;

		ret = SPI_execute_plan(claim_plan, values, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "softmig: claiming operation key failed: %s",
				 SPI_result_code_string(ret));
		if (SPI_processed == 1)
			break;				/* the key is ours */

		ret = SPI_execute_plan(lookup_plan, lvalues, NULL, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "softmig: looking up operation key failed: %s",
				 SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			tup = SPI_tuptable->vals[0];
			desc = SPI_tuptable->tupdesc;
			mine = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
			if (mine)
				break;			/* claimed earlier by this very transaction */
			duplicate = true;
			winner.side = MemoryContextStrdup(caller_cxt, SPI_getvalue(tup, desc, 1));
			winner.relation = MemoryContextStrdup(caller_cxt, SPI_getvalue(tup, desc, 2));
			winner.state = MemoryContextStrdup(caller_cxt, SPI_getvalue(tup, desc, 3));
			winner.claimed_at = MemoryContextStrdup(caller_cxt, SPI_getvalue(tup, desc, 4));
			winner.xid = MemoryContextStrdup(caller_cxt, SPI_getvalue(tup, desc, 5));
			winner.claimed_by = MemoryContextStrdup(caller_cxt, SPI_getvalue(tup, desc, 6));
			break;
		}
		if (attempt >= 10)
			elog(ERROR, "softmig: operation key \"%s\" of migration \"%s\" keeps appearing and vanishing in the ledger",
				 key, migname);
	}

	softmig_leave_owner_context(save_nest, save_user, save_sec);
	SPI_finish();

	if (duplicate)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("operation key \"%s\" of migration \"%s\" was already applied at %s on the %s side",
						key, migname, winner.claimed_at, winner.side),
				 errdetail("It was claimed by transaction %s of role \"%s\" writing table \"%s\" in state %s. This transaction writes nothing: the key is checked before the first row.",
						   winner.xid, winner.claimed_by, winner.relation, winner.state),
				 errhint("A retry of an operation that was already applied must not apply it again: treat this as success. A new operation needs a new key.")));
}

/*
 * softmig_opkey_claim
 *		Called by the guard trigger (BEFORE STATEMENT) once a write to rel,
 *		on side "side" of migration m, is allowed: on the authoritative side,
 *		or on the other side under an owner's softmig.override; never for
 *		TRUNCATE or for softmig's own mirrored writes.
 *
 *		Without softmig.operation_key: refuses the write (SM003) if the
 *		migration's option require_operation_key is true, else does
 *		nothing.  With a key: validates it (22023 for an empty key or one
 *		longer than SM_OPKEY_MAX_BYTES) and claims (m, key) in the ledger
 *		unless this transaction already holds that claim.  Locks: those of
 *		claim_in_ledger, only on the first claim.  The caller owns m and
 *		rel; m must be valid for the duration of the call.
 */
void
softmig_opkey_claim(SoftmigMigration *m, Relation rel, SoftmigSide side)
{
	const char *key = softmig_operation_key;
	char		memokey[MEMO_KEYSIZE];
	size_t		len;

	if (key == NULL)
	{
		if (m->require_opkey)
			ereport(ERROR,
					(errcode(ERRCODE_SOFTMIG_OPKEY_REQUIRED),
					 errmsg("write to table \"%s\" refused: migration \"%s\" requires an operation key",
							RelationGetRelationName(rel), m->name),
					 errdetail("Option require_operation_key of the migration is true and softmig.operation_key is not set."),
					 errhint("Run SET LOCAL softmig.operation_key = '<key of this operation>' before the first write of the transaction, and reuse the same key when retrying the operation.")));
		return;
	}

	len = strlen(key);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("softmig.operation_key must not be empty"),
				 errdetail("An empty key cannot identify an operation; nothing was written."),
				 errhint("Set a key that identifies the operation, or RESET softmig.operation_key to write without one.")));
	if (len > SM_OPKEY_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("softmig.operation_key is too long"),
				 errdetail("The key has %zu bytes; the limit is %d bytes. Nothing was written.",
						   len, SM_OPKEY_MAX_BYTES),
				 errhint("Use a shorter key, for example a UUID or a hash of the operation's identity.")));

	snprintf(memokey, sizeof(memokey), "%d:%s", m->id, key);
	if (memo_has(memokey))
		return;
	claim_in_ledger(m, rel, side, key);
	memo_remember(memokey);
}
