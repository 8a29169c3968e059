/*-------------------------------------------------------------------------
 *
 * softmig.h
 *	  Shared declarations for the softmig extension: the migration state
 *	  type, the per-backend migration cache and the write-path entry points.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_H
#define SOFTMIG_H

#include "postgres.h"

#include "compat.h"
#include "sqlstate.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/parsenodes.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

/* Migration states, stored as one byte; order is meaningful. */
typedef enum SoftmigState
{
	SM_LEGACY = 0,
	SM_MIRRORED = 1,
	SM_NEW_WRITE = 2,
	SM_NEW_READ = 3,
	SM_CUTOVER = 4
} SoftmigState;

#define SM_NSTATES 5

/* Which table of a migration a relation belongs to. */
typedef enum SoftmigSide
{
	SIDE_NONE = 0,
	SIDE_LEGACY,
	SIDE_TARGET
} SoftmigSide;


/* Names of the transition tables our AFTER triggers declare. */
#define SM_OLD_TABLE "softmig_old"
#define SM_NEW_TABLE "softmig_new"

/* The search_path every piece of user-visible SQL runs under. */
#define SM_PINNED_SEARCH_PATH "pg_catalog, pg_temp"

/* state.c */
extern const char *softmig_state_name(SoftmigState s);
extern SoftmigState softmig_state_by_name(const char *name);
extern bool softmig_transition_is_legal(SoftmigState from, SoftmigState to);

/*
 * One direction of data flow: rows of "src" written to "dst" through the
 * mapping expressions.  Plans are prepared against the transition tables of
 * one particular firing relation (the root or a partition), because Vars in a
 * plan refer to that relation's attribute numbers.
 */
typedef struct SoftmigRelPlans
{
	Oid			relid;			/* firing relation */
	SoftmigSide side;			/* which side it belongs to */
	Oid			dst_owner;		/* owner of the table written */
	Oid			src_owner;		/* owner of relid */
	int			nkeys;			/* number of source key columns */
	AttrNumber *keyattnos;		/* source key attnos in relid's tupdesc */
	SPIPlanPtr	upsert;			/* INSERT .. SELECT .. ON CONFLICT over new */
	char	   *upsert_sql;		/* its text, planned afresh for big statements */
	char	   *delete_sql;
	char	   *insert_sql;		/* big INSERT: plain insert, upsert on
								 * conflict */
	char	   *update_sql;		/* big UPDATE: update in place, then upsert
								 * the rest */
	SPIPlanPtr	delete;			/* DELETE .. USING old */
	SPIPlanPtr	update;			/* a one-row UPDATE: the other side's row
								 * updated in place by key, params = the row
								 * (the upsert if it lacks the row) */
	struct SoftmigDirect *update_direct;	/* its generic plan run directly
											 * (directwrite.c), NULL at first */
	SPIPlanPtr	delete_row;		/* a one-row DELETE: the other side's row
								 * deleted by key, params = the old row */
	struct SoftmigDirect *delete_direct;	/* its generic plan run directly
											 * (directwrite.c), NULL at first */
	SPIPlanPtr	move;			/* per-row key change, params old+new row;
								 * NULL: a destination key column is GENERATED
								 * ALWAYS AS IDENTITY */
	char	   *move_refused;	/* then: that column's name */
	int			move_nargs;
	SPIPlanPtr	keyjson_new;	/* jsonb_agg of keys over new table */
	SPIPlanPtr	keyjson_old;	/* jsonb_agg of keys over old table */
	SPIPlanPtr	newonly;		/* projection only: count/first key of
								 * new-only rows */
	SPIPlanPtr	upsert_row;		/* projection, group mirror, a mirrored
								 * one-row INSERT: one row, params = the row */
	struct SoftmigDirect *insert_direct;	/* upsert_row of a mirrored
											 * one-row INSERT run directly
											 * (directwrite.c) */
	SPIPlanPtr	field_project;	/* target side in mirrored: owned fields ->
								 * legacy */
	SPIPlanPtr	keyjson_row;	/* projection, group mirror: legacy key of one
								 * row (params) */
	int			row_nargs;
	int			upsert_rc;		/* what upsert and upsert_row report:
								 * SPI_OK_INSERT, or SPI_OK_UPDATE for an
								 * attribute member's projection (split) */
	int			delete_rc;		/* what delete and delete_row report:
								 * SPI_OK_DELETE, or SPI_OK_UPDATE (split) */
	SPIPlanPtr	split_lock[2];	/* split, target side: lock the entities of
								 * the OLD [0] or NEW [1] rows (trigger.c) */
	SPIPlanPtr	split_check[2]; /* split or merge, projection into the shared
								 * table: what it depends on of the entities
								 * of the OLD [0] or NEW [1] rows, compared
								 * across snapshots under REPEATABLE READ */
	int			nwatch;			/* split: source columns the mapping to the
								 * other side reads (0: not a split member) */
	AttrNumber *watch_attnos;
	struct SoftmigRelPlans *next;
} SoftmigRelPlans;

/* Which side a partition belongs to, cached per migration. */
typedef struct SoftmigPartSide
{
	Oid			relid;
	SoftmigSide side;
} SoftmigPartSide;

/* Per-backend cached view of one migration. */
typedef struct SoftmigMigration
{
	int32		id;				/* hash key */
	bool		valid;
	char	   *name;
	Oid			legacy;
	Oid			target;
	SoftmigState state;
	List	   *legacy_key;		/* of char *: legacy key columns */
	List	   *target_key;		/* of char *: target correlation key */
	List	   *fwd_cols;		/* of char *: target columns fed forward */
	List	   *fwd_exprs;		/* of char *: their expressions */
	List	   *bwd_cols;		/* of char *: legacy columns fed backward */
	List	   *bwd_exprs;		/* of char *: their expressions */
	Jsonb	   *options;		/* softmig.migrations.options */
	List	   *part_sides;		/* SoftmigPartSide: partitions seen so far */
	List	   *triggers_ok;	/* of Oid: tables whose write triggers were
								 * found in place (check_write_triggers) */
	bool		require_opkey;	/* option require_operation_key */
	List	   *new_only;		/* of char *: target columns legacy cannot
								 * hold */
	char	   *representable;	/* option: boolean SQL over target columns */
	bool		reject_new_only;	/* option on_new_only = reject */
	bool		envelope_open;
	bool		shadow_disabled;
	int64		n_quarantined;
	List	   *new_fields;		/* of char *: target fields handed to the
								 * target */
	List	   *new_legacy_cols;	/* of char *: legacy columns carrying them */
	int32		group_id;		/* softmig.groups.id, 0 when in no group */
	int32		split_owner;	/* option attribute_of: the migration that
								 * owns the entity, 0 if none */
	List	   *split_attrs;	/* of int: this owner's attribute members */
	List	   *split_rels;		/* of Oid: their tables, which the owner's
								 * projection reads (relcache callback) */
	bool		one_to_many;	/* option cardinality one_to_many */
	List	   *otm_sql;		/* onetomany.c: its statements' texts */
	bool		split_merge;	/* the members share their target table (a
								 * merge), not their legacy table (a split) */
	MemoryContext cxt;			/* owns everything above and the plans */
	SoftmigRelPlans *plans;		/* per firing relation */
} SoftmigMigration;

/* groups.c: children projected before their parents */
extern void softmig_group_pend(SoftmigMigration *m, Oid relid, TupleDesc desc, Datum *values,
							   char *nulls, int nargs, Jsonb *key, const char *message);
extern bool softmig_group_pending(int32 id);
extern void softmig_group_supersede(int32 id, Jsonb *keys);
extern void softmig_group_retry(int32 group_id, int32 projected_id);
extern void softmig_groups_init(void);

/* onetomany.c: one legacy row, a set of target rows */
extern void softmig_otm_refuse(SoftmigMigration *m, const char *what);
extern void softmig_otm_write(TriggerData *td, SoftmigMigration *m, SoftmigSide side);
extern void softmig_otm_validate(SoftmigMigration *m);
extern Datum softmig_otm_bf_step(SoftmigMigration *m, const char *op, int batch, Jsonb *lo);
extern void softmig_otm_parity_rows(SoftmigMigration *m, Tuplestorestate *ts, TupleDesc desc);
extern Datum softmig_otm_parity_summary(SoftmigMigration *m, int sample);
extern Datum softmig_otm_inspect(SoftmigMigration *m, Jsonb *key);
extern int64 softmig_otm_resync_all(SoftmigMigration *m);
extern int64 softmig_otm_resync_keys(SoftmigMigration *m, Datum keys);

/* envelope.c: the write path's side of the rollback envelope and of quarantine */
extern void softmig_refuse_quarantined(SoftmigMigration *m, Relation rel, Datum keys);
extern void softmig_note_new_only(SoftmigMigration *m, int64 n, Datum keys, bool keys_null,
								  const char *reason);
extern void softmig_refuse_new_only(SoftmigMigration *m, Relation rel, const char *what);
extern bool softmig_unrepresentable(int sqlerrcode);

/* cache.c */
extern SoftmigMigration *softmig_get_migration(int32 id);
extern SoftmigMigration *softmig_require_migration(int32 id);
extern void softmig_cache_init(void);
extern SoftmigSide softmig_side_of(SoftmigMigration *m, Oid relid);
extern SoftmigSide softmig_side_of_cached(SoftmigMigration *m, Oid relid);
extern char *softmig_option_text(SoftmigMigration *m, const char *key);
extern bool softmig_option_bool(SoftmigMigration *m, const char *key, bool dflt);

/* Everything needed to write one destination table (mapping.c). */
typedef struct SoftmigDest
{
	Oid			relid;
	char	   *qualname;
	List	   *cols;			/* mapped destination columns */
	List	   *exprs;			/* their expressions over the source */
	List	   *keycols;		/* destination key columns */
	List	   *keyexprs;		/* their expressions */
	List	   *keytypes;		/* qualified type names */
	List	   *keyops;			/* "OPERATOR(nsp.=)" strings */
	List	   *always_cols;	/* of cols: GENERATED ALWAYS AS IDENTITY */
	List	   *gather_cols;	/* split owner, to legacy: the attribute
								 * members' columns, inserted too */
	List	   *gather_exprs;	/* their values, from gather_joins */
	char	   *gather_joins;	/* LEFT JOINs of the attribute targets */
} SoftmigDest;

/*
 * xactmemo.c: a transaction memo, a hash table of what this transaction did
 * that forgets the entries of aborted subtransactions.  Entries start with
 * the hash key and hold a SubTransactionId at subid_offset.
 */
typedef struct SoftmigXactMemo
{
	const char *name;			/* hash table name */
	Size		keysize;
	Size		entrysize;
	Size		subid_offset;	/* offsetof(entry, its SubTransactionId) */
	bool		string_keys;	/* HASH_STRINGS, else HASH_BLOBS */
	long		nelem;			/* initial size */
	HTAB	   *table;			/* this transaction's, or NULL */
	bool		registered;		/* callbacks registered in this backend */
} SoftmigXactMemo;

extern HTAB *softmig_xact_memo_table(SoftmigXactMemo *memo);

/* spiutil.c: plans, subtransactions, migration lookup, list helpers */
extern SPIPlanPtr softmig_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern uint64 softmig_spi_read(const char *sql, int nargs, Oid *argtypes,
							   Datum *values, Snapshot snapshot, bool read_only,
							   long count);
extern uint64 softmig_spi_select_arg(const char *sql, Oid argtype, Datum value,
									 long count, const char *what);
extern ErrorData *softmig_subxact_try(void (*fn) (void *arg), void *arg,
									  bool (*tolerated) (int sqlerrcode));
extern ErrorData *softmig_spi_try(SPIPlanPtr plan, const char *sql, Datum *values,
								  const char *nulls, bool read_only, int expect,
								  bool (*tolerated) (int sqlerrcode));
extern bool softmig_unique_violation(int sqlerrcode);
extern void softmig_spi_expect(int rc, int expect, const char *what);
extern void softmig_pause_point(int key, bool read_only, const char *what);
extern void softmig_spi_register_rows(const char *name, Oid relid, TupleDesc desc,
									  Tuplestorestate *rows, int64 n);
extern bool softmig_str_member(List *l, const char *s);
extern List *softmig_text_array_list(Datum d);
extern char *softmig_qualified_relname(Oid relid);
extern int32 softmig_migration_by_name(text *name, Oid *legacy, Oid *target);

/* stmtcache.c: kept plans of per-call statements, per migration */
extern SPIPlanPtr softmig_cached_plan(SoftmigMigration *m, const char *sql, int nargs,
									  Oid *argtypes);
extern void softmig_cached_plan_prune(void);

/* sqltext.c: SQL text the layers share */
extern void softmig_append_key_not_null(StringInfo buf, List *keycols, const char *prefix);
extern char *softmig_json_object_sql(List *names, List *exprs);
extern List *softmig_quoted_idents(List *names, const char *prefix);
extern void softmig_append_key_list(StringInfo buf, List *keyexprs, List *keytypes);
extern void softmig_append_mapped_insert(StringInfo buf, const char *dst, const char *alias,
										 List *cols, List *exprs);
extern int	softmig_append_conflict_update(StringInfo buf, List *cols, List *keycols,
										   List *keep);
extern void softmig_append_key_match(StringInfo buf, const char *lalias, List *keycols,
									 List *keyops, const char *ralias);

/* mapping.c */
extern SoftmigDest *softmig_build_dest(SoftmigMigration *m, SoftmigSide side);
extern void softmig_merge_backfill_prepare(SoftmigMigration *m, SoftmigDest *fwd, const char *from,
										   char **lock_sql, char **refresh_sql);
extern SoftmigRelPlans *softmig_get_plans(SoftmigMigration *m, Relation rel);

/* authority.c */
extern void softmig_authority_note_deletes(TriggerData *td, SoftmigMigration *m);
extern void softmig_authority_check_inserts(TriggerData *td, SoftmigMigration *m);
extern void softmig_authority_check_columns(TriggerData *td, SoftmigMigration *m, SoftmigSide side);
extern void softmig_authority_log_field_writes(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p);
extern void softmig_authority_project_fields(TriggerData *td, SoftmigMigration *m, SoftmigRelPlans *p);

/* expr.c: checking and reading mapping expressions */
extern void softmig_check_expression(const char *expr, const char *what);
extern List *softmig_expr_columns(const char *expr);
extern void softmig_expect_boolean(Query *q, const char *expr, const char *what);
extern void softmig_check_mapping_expression(const char *expr, const char *what, Oid srcrel,
											 Oid owner, bool want_bool, bool not_null);
extern void softmig_check_definition(SoftmigMigration *m);

/* merge.c */
extern bool softmig_field_takes_incoming(SoftmigSide owner, SoftmigSide incoming, bool fresh);

/*
 * identity.c: every switch of identity or security context, the ownership
 * lookups they rest on, identity frames and the trust rule
 */
extern Oid	softmig_rel_owner(Oid relid);
extern Oid	softmig_catalog_owner(void);
extern void softmig_catalog_exec(SPIPlanPtr *plan, const char *sql, int nargs,
								 Oid *argtypes, Datum *values, const char *nulls,
								 int expect, const char *what);
extern void softmig_enter_owner_context(Oid owner, int *save_nestlevel,
										Oid *save_userid, int *save_sec);
extern void softmig_leave_owner_context(int save_nestlevel, Oid save_userid,
										int save_sec);
extern void softmig_frame_set_guc(const char *name, const char *value);
extern void softmig_prefer_index_plans(bool on);
extern void softmig_enter_readonly_context(Oid role, int *save_nestlevel,
										   Oid *save_userid, int *save_sec,
										   bool *save_readonly);
extern void softmig_leave_readonly_context(int save_nestlevel, Oid save_userid,
										   int save_sec, bool save_readonly);
extern void softmig_become_catalog_owner(Oid *save_userid, int *save_sec);
extern void softmig_set_user(Oid role, int sec);
extern void softmig_check_read_access(Oid legacy, Oid target, Oid role,
									  const char *what);
extern void softmig_enter_catalog_context(Oid *save_userid, int *save_sec);
extern void softmig_leave_catalog_context(Oid save_userid, int save_sec);
extern bool softmig_role_can_act_as(Oid member, Oid role);
extern void softmig_check_trusted_query(Query *q, Oid identity);
extern void softmig_identity_init(void);
extern void *softmig_grow_array(void *arr, int *maxitems, Size itemsize);

/* gate.c */
extern Oid	softmig_gate_actor;


/* trigger.c */
extern char *softmig_override;
extern void softmig_trigger_init(void);
extern Datum softmig_write_trigger(PG_FUNCTION_ARGS);
extern Datum softmig_guard_trigger(PG_FUNCTION_ARGS);

/* directwrite.c: a one-row UPDATE, DELETE or INSERT of the other table without a second executor */
struct SoftmigDirect;
extern int	softmig_direct_write(SPIPlanPtr plan, struct SoftmigDirect **cache,
								 MemoryContext parent, Datum *values, const char *nulls);
extern void softmig_directwrite_init(void);

/* capture.c: what the executor captures for softmig's triggers */
extern void softmig_capture_init(void);

/* loopguard.c: softmig's own writes are not carried back */
extern int	softmig_mirror_depth;
extern void softmig_mirror_enter(int32 id);
extern void softmig_mirror_leave(void);
extern bool softmig_mirroring(int32 id);
extern bool softmig_mirroring_group_sibling(SoftmigMigration *m);
extern bool softmig_resync_forcing;

/* shapeview.c */
extern void softmig_shapeview_init(void);
extern int32 softmig_shape_view_migration(Oid relid);
extern Datum softmig_shape_write_trigger(PG_FUNCTION_ARGS);

/* backfill.c */
extern int	softmig_backfill_pause_lock;
extern void softmig_backfill_init(void);

/* fence.c: the delete fence between live deletes and backfill batches */
extern void softmig_fence_live_write(int32 migration_id);
extern bool softmig_fence_try_batch(int32 migration_id);
extern bool softmig_fence_has_waiters(int32 migration_id);

/* progress.c */
extern int	softmig_backfill_progress_interval;
extern void softmig_progress_init(void);

#endif							/* SOFTMIG_H */
