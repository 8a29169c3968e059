/*-------------------------------------------------------------------------
 *
 * readpath.c
 *	  Read routing: softmig.read_source and softmig.group_source.
 *
 *	  A reader is a name that applications present as application_name.
 *	  softmig.reader_registry puts each registered reader in a switch
 *	  group; softmig.read_switches holds the explicit position of the
 *	  groups that were switched (to new) or pinned (to legacy).  The source
 *	  of a group is:
 *
 *	    state legacy   legacy (the target is not kept in step)
 *	    state cutover  new
 *	    otherwise      the group's explicit position if it has one, else
 *	                   new from new_read on and legacy before.
 *
 *	  A reader that is not registered follows the group "default".
 *
 *	  Routed views call read_source once per branch and query (as a
 *	  one-time filter), so it must be cheap: each backend keeps the routing
 *	  of every migration it asked about in a small cache, loaded with the
 *	  latest snapshot and marked stale by relcache invalidation of either
 *	  table of the migration (every state change sends one) or of the
 *	  catalog table softmig.migrations (register_reader, switch_reads and
 *	  the trigger on softmig.migrations send one).  A call processes pending
 *	  invalidations first, so a switch committed by another session is seen
 *	  from the next statement on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "softmig.h"
#include "readpath.h"

/* The group a reader that nobody registered follows. */
#define RP_DEFAULT_GROUP "default"

/* A registered reader (key: the reader name, at most NAMEDATALEN-1 bytes). */
typedef struct RpReader
{
	char		reader[NAMEDATALEN];
	char	   *group;
} RpReader;

/* The explicit position of one switch group. */
typedef struct RpSwitch
{
	char	   *group;
	bool		to_new;
} RpSwitch;

/* The routing of one migration, as far as this backend knows it. */
typedef struct RpEntry
{
	struct RpEntry *next;
	char	   *name;			/* migration name (in cxt) */
	int32		id;
	Oid			legacy;
	Oid			target;
	SoftmigState state;
	bool		valid;			/* false: reload before use */
	HTAB	   *readers;		/* RpReader by name */
	int			nswitches;
	RpSwitch   *switches;
	MemoryContext cxt;			/* owns everything above but the struct */
} RpEntry;

/* Per call site: the OIDs of the two labels of softmig.side. */
typedef struct RpSideOids
{
	Oid			side_type;
	Oid			legacy_label;
	Oid			new_label;
} RpSideOids;

static RpEntry *rp_entries = NULL;

/* see softmig_read_source_authority */
static int32 rp_authority_for = 0;

/* OID of softmig.migrations, learnt on the first load (invalidation key). */
static Oid	rp_catalog_relid = InvalidOid;

/* Bumped by every invalidation that can change routing (see rp_load). */
static uint64 rp_inval_generation = 0;

/*
 * rp_relcache_callback
 *		Mark routing entries stale when either table of their migration, the
 *		catalog table softmig.migrations or everything (InvalidOid) is
 *		invalidated, and tell discovery (its watched set).  No allocation,
 *		no catalog access.
 */
static void
rp_relcache_callback(Datum arg, Oid relid)
{
	softmig_discovery_invalidate(relid);
	if (!OidIsValid(relid) || relid == rp_catalog_relid)
		rp_inval_generation++;
	for (RpEntry *e = rp_entries; e; e = e->next)
	{
		if (!OidIsValid(relid) || relid == rp_catalog_relid ||
			relid == e->legacy || relid == e->target)
		{
			e->valid = false;
			rp_inval_generation++;
		}
	}
}

/*
 * softmig_readpath_init
 *		Called once from _PG_init: register the routing cache's invalidation
 *		callback, then set up reader discovery (GUCs; hooks and shared
 *		memory only under shared_preload_libraries).
 */
void
softmig_readpath_init(void)
{
	CacheRegisterRelcacheCallback(rp_relcache_callback, (Datum) 0);
	softmig_discovery_init();
}

/*
 * softmig_readpath_catalog_oid
 *		OID of softmig.migrations (syscache lookups only), or InvalidOid.
 *		Its relcache invalidation stands for any change of read routing
 *		(also for route.c's routed plans).
 */
Oid
softmig_readpath_catalog_oid(void)
{
	Oid			nsp = get_namespace_oid("softmig", true);

	if (!OidIsValid(nsp))
		return InvalidOid;
	return get_relname_relid("migrations", nsp);
}

/*
 * rp_snapshot
 *		The snapshot routing is loaded with: the latest one, so a committed
 *		switch is seen even inside an older REPEATABLE READ transaction; the
 *		active one in parallel mode, where the latest cannot be taken.
 */
static Snapshot
rp_snapshot(void)
{
	if (IsInParallelMode())
		return GetActiveSnapshot();
	return GetLatestSnapshot();
}

/*
 * rp_load
 *		(Re)load the routing of migration "name" into e through SPI, as the
 *		current user (the catalog tables are readable by everyone).  Returns
 *		false when there is no such migration.  Takes AccessShareLock on the
 *		three catalog tables it reads.
 */
static bool
rp_load(RpEntry *e, const char *name)
{
	Oid			argtypes[1];
	Datum		values[1];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;
	MemoryContext old;
	HASHCTL		ctl;
	bool		read_only = IsInParallelMode();
	uint64		generation = rp_inval_generation;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	argtypes[0] = TEXTOID;
	values[0] = CStringGetTextDatum(name);
	(void) softmig_spi_read("SELECT id, legacy, target, state::pg_catalog.text "
							"FROM softmig.migrations WHERE name OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, rp_snapshot(), read_only, 1);
	if (SPI_processed == 0)
	{
		SPI_finish();
		return false;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	if (e->cxt)
	{
		MemoryContextDelete(e->cxt);
		e->cxt = NULL;
		e->name = "";			/* it pointed into the deleted context */
	}
	e->cxt = AllocSetContextCreate(CacheMemoryContext, "softmig read routing",
								   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(e->cxt);
	e->name = pstrdup(name);
	e->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	e->legacy = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	e->target = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	e->state = softmig_state_by_name(TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull)));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(RpReader);
	ctl.hcxt = e->cxt;
	e->readers = hash_create("softmig readers", 16, &ctl,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	e->nswitches = 0;
	e->switches = NULL;
	MemoryContextSwitchTo(old);

	argtypes[0] = INT4OID;
	values[0] = Int32GetDatum(e->id);

	/* registered readers and their groups */
	(void) softmig_spi_read("SELECT reader, switch_group FROM softmig.reader_registry "
							"WHERE migration_id OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, rp_snapshot(), read_only, 0);
	old = MemoryContextSwitchTo(e->cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *reader = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull));
		char	   *group = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i],
															  SPI_tuptable->tupdesc, 2, &isnull));
		RpReader   *r;

		/* register_reader keeps names below NAMEDATALEN; be safe anyway */
		if (strlen(reader) >= NAMEDATALEN)
			continue;
		r = hash_search(e->readers, reader, HASH_ENTER, NULL);
		r->group = group;
	}
	MemoryContextSwitchTo(old);

	/* explicit group positions */
	(void) softmig_spi_read("SELECT switch_group, side::pg_catalog.text FROM softmig.read_switches "
							"WHERE migration_id OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, rp_snapshot(), read_only, 0);
	old = MemoryContextSwitchTo(e->cxt);
	if (SPI_processed > 0)
		e->switches = palloc(sizeof(RpSwitch) * SPI_processed);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *side = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i],
															 SPI_tuptable->tupdesc, 2, &isnull));

		e->switches[i].group = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 1, &isnull));
		e->switches[i].to_new = (strcmp(side, "new") == 0);
		e->nswitches++;
	}
	MemoryContextSwitchTo(old);
	SPI_finish();

	/*
	 * The three reads take locks, which process invalidations; if one that
	 * can change routing arrived meanwhile (every routing change sends one on
	 * softmig.migrations), what was read first may be older than what was
	 * read last: use it for this call, reload on the next.
	 */
	e->valid = (generation == rp_inval_generation);
	return true;
}

/*
 * rp_get
 *		The routing of migration "name", loaded if missing or stale; raises
 *		42704 for an unknown migration.  The result is valid until the next
 *		invalidation is processed.
 */
static RpEntry *
rp_get(const char *name)
{
	RpEntry    *e;
	RpEntry   **link;
	bool		isnew = false;

	/* a switch committed elsewhere is seen from the next statement on */
	AcceptInvalidationMessages();

	for (e = rp_entries; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (e != NULL && e->valid)
		return e;

	/* the invalidation key; looked up again in case softmig was recreated */
	rp_catalog_relid = softmig_readpath_catalog_oid();

	if (e == NULL)
	{
		/* linked only once loaded, so an error leaves no half-made entry */
		e = MemoryContextAllocZero(CacheMemoryContext, sizeof(RpEntry));
		e->name = "";
		isnew = true;
	}
	e->valid = false;
	if (!rp_load(e, name))
	{
		if (!isnew)
		{
			for (link = &rp_entries; *link; link = &(*link)->next)
				if (*link == e)
				{
					*link = e->next;
					break;
				}
		}
		if (e->cxt)
			MemoryContextDelete(e->cxt);
		pfree(e);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("migration \"%s\" does not exist", name),
				 errhint("softmig.migrations lists the migrations of this database.")));
	}
	if (isnew)
	{
		e->next = rp_entries;
		rp_entries = e;
	}
	return e;
}

/*
 * rp_group_is_new
 *		Does switch group "group" of migration e read from the target?
 */
static bool
rp_group_is_new(RpEntry *e, const char *group)
{
	if (e->state == SM_LEGACY)
		return false;
	if (e->state == SM_CUTOVER)
		return true;
	for (int i = 0; i < e->nswitches; i++)
		if (strcmp(e->switches[i].group, group) == 0)
			return e->switches[i].to_new;
	return e->state >= SM_NEW_READ;
}

/*
 * rp_side_oids
 *		The enum label OIDs of softmig.side, resolved once per call site
 *		(fn_extra) from the function's declared result type.
 */
static RpSideOids *
rp_side_oids(FunctionCallInfo fcinfo)
{
	RpSideOids *so = (RpSideOids *) fcinfo->flinfo->fn_extra;
	Oid			typ;

	if (so != NULL)
		return so;
	typ = get_func_rettype(fcinfo->flinfo->fn_oid);
	so = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RpSideOids));
	so->side_type = typ;
	so->legacy_label = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
									   ObjectIdGetDatum(typ), CStringGetDatum("legacy"));
	so->new_label = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
									ObjectIdGetDatum(typ), CStringGetDatum("new"));
	if (!OidIsValid(so->legacy_label) || !OidIsValid(so->new_label))
		elog(ERROR, "type %s is not softmig.side", format_type_be(typ));
	fcinfo->flinfo->fn_extra = so;
	return so;
}

/*
 * rp_name_arg
 *		The migration name argument as a C string; 22004 when NULL.
 */
static char *
rp_name_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name must not be null")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/*
 * softmig_read_source_authority
 *		While route.c routes the plan of an UPDATE or DELETE through a shape
 *		view of migration id (0: none), read_source answers for that
 *		migration with the side of its write authority (legacy up to
 *		mirrored, the target from new_write on), whoever reads: the rows
 *		such a statement changes are found where it writes them.  Returns
 *		the previous setting, for the caller to restore.
 */
int32
softmig_read_source_authority(int32 id)
{
	int32		prev = rp_authority_for;

	rp_authority_for = id;
	return prev;
}

PG_FUNCTION_INFO_V1(softmig_read_source);
/*
 * softmig_read_source
 *		softmig.read_source(name, reader DEFAULT NULL) -> softmig.side: where
 *		the reader (NULL: the session's application_name) reads migration
 *		"name" from.  A reader nobody registered follows group "default".
 *		Stable; no locks beyond the catalog reads of a cache reload.
 */
Datum
softmig_read_source(PG_FUNCTION_ARGS)
{
	char	   *name = rp_name_arg(fcinfo);
	RpSideOids *so = rp_side_oids(fcinfo);
	const char *reader;
	const char *group = RP_DEFAULT_GROUP;
	RpEntry    *e;

	if (PG_ARGISNULL(1))
		reader = application_name ? application_name : "";
	else
		reader = text_to_cstring(PG_GETARG_TEXT_PP(1));

	e = rp_get(name);
	softmig_discovery_refresh();

	/* routing the plan of a write through a shape view: the authority */
	if (rp_authority_for != 0 && e->id == rp_authority_for)
		PG_RETURN_OID(e->state >= SM_NEW_WRITE ? so->new_label : so->legacy_label);

	if (strlen(reader) < NAMEDATALEN)
	{
		RpReader   *r = hash_search(e->readers, reader, HASH_FIND, NULL);

		if (r != NULL)
			group = r->group;
	}
	PG_RETURN_OID(rp_group_is_new(e, group) ? so->new_label : so->legacy_label);
}

PG_FUNCTION_INFO_V1(softmig_group_source);
/*
 * softmig_group_source
 *		softmig.group_source(name, switch_group) -> softmig.side: where the
 *		readers of a switch group read from (for "default": every reader
 *		nobody registered).  Stable, strict on the group.
 */
Datum
softmig_group_source(PG_FUNCTION_ARGS)
{
	char	   *name = rp_name_arg(fcinfo);
	RpSideOids *so = rp_side_oids(fcinfo);
	RpEntry    *e;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("switch group must not be null")));
	e = rp_get(name);
	PG_RETURN_OID(rp_group_is_new(e, text_to_cstring(PG_GETARG_TEXT_PP(1)))
				  ? so->new_label : so->legacy_label);
}

PG_FUNCTION_INFO_V1(softmig_readpath_invalidate);
/*
 * softmig_readpath_invalidate
 *		softmig._readpath_invalidate(): queue a relcache invalidation of
 *		softmig.migrations, which makes every backend reload its read
 *		routing and rebuild its discovery set at its next statement.  Sent
 *		on commit; the current backend processes it at the next command.
 */
Datum
softmig_readpath_invalidate(PG_FUNCTION_ARGS)
{
	Oid			relid = softmig_readpath_catalog_oid();

	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}
