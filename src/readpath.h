/*-------------------------------------------------------------------------
 *
 * readpath.h
 *	  Read paths: the per-backend routing cache behind softmig.read_source
 *	  (readpath.c) and reader discovery, the executor hooks that record in
 *	  shared memory who reads and writes each migration's tables
 *	  (discovery.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_READPATH_H
#define SOFTMIG_READPATH_H

#include "postgres.h"

#include "fmgr.h"

/*
 * While >0, the executor hooks record nothing: softmig itself is reading or
 * writing a migration's tables (backfill, parity, inspect, ...).  Callers
 * raise it around such work and lower it in PG_FINALLY.  Writes made while
 * softmig_mirror_depth > 0 and everything run behind the ownership gate are
 * skipped without it.
 */
extern int	softmig_discovery_suppress;

/* readpath.c */
extern void softmig_readpath_init(void);
extern Oid	softmig_readpath_catalog_oid(void);
extern Datum softmig_read_source(PG_FUNCTION_ARGS);
extern int32 softmig_read_source_authority(int32 id);

/* route.c */
extern void softmig_route_init(void);

/* discovery.c */
extern void softmig_discovery_init(void);
extern void softmig_discovery_refresh(void);
extern void softmig_discovery_invalidate(Oid relid);
extern bool softmig_discovery_available(void);

#endif							/* SOFTMIG_READPATH_H */
