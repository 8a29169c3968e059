/*-------------------------------------------------------------------------
 *
 * paritycache.h
 *	  The parity digest cache (src/paritycache.c): per-segment page state of
 *	  a table, the rules deciding whether a comparison may be cached, and
 *	  the stored cache row.  paritywarm.c decides what the cached digests mean;
 *	  doc/observability.md explains the cache to users.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_PARITYCACHE_H
#define SOFTMIG_PARITYCACHE_H

#include "access/xlogdefs.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* A segment is this many consecutive heap blocks (256 kB). */
#define PC_SEG_BLOCKS 32

/* Segment state: "not reusable" (a page not settled, new, or changed). */
#define PC_SEG_NONE UINT64CONST(0xFFFFFFFFFFFFFFFF)

/* The page state of one table, one entry per segment. */
typedef struct PcPages
{
	Oid			relfilenode;
	uint32		nblocks;
	uint32		nseg;
	uint64	   *seg;			/* max page LSN, or PC_SEG_NONE */
} PcPages;

/*
 * The digest of one side's rows of one chunk found in one segment.  key is
 * PC_ENT_KEY(segment, chunk); chunk nchunks stands for rows whose key has a
 * NULL, nchunks + 1 for rows of quarantined entities (counted only).
 */
typedef struct PcEnt
{
	uint64		key;
	uint64		n;
	uint64		d1;
	uint64		d2;
} PcEnt;

#define PC_ENT_KEY(seg, chunk) (((((uint64) (seg)) << 32) | (uint32) (chunk)) + 1)
#define PC_ENT_SEG(key) ((uint32) (((key) - 1) >> 32))
#define PC_ENT_CHUNK(key) ((uint32) ((key) - 1))

/* GUC softmig.parity_cache */
extern bool softmig_parity_cache;

extern void softmig_paritycache_init(void);
extern void softmig_pc_read_pages(Relation rel, XLogRecPtr horizon,
								  Snapshot snap, PcPages *out);
extern void softmig_pc_reread_pages(Relation rel, XLogRecPtr horizon,
									Snapshot snap, PcPages *pages,
									const bool *only);
extern const char *softmig_pc_rel_refusal(Relation rel);
extern void softmig_pc_attribute_versions(Relation rel, StringInfo fp);
extern const char *softmig_pc_plan_refusal(SPIPlanPtr plan, StringInfo fp,
										   List **colls);
extern void softmig_pc_collation_versions(StringInfo fp, List *colls);
extern bool softmig_pc_try_lock(int32 id);
extern bytea *softmig_pc_pack(const PcPages *pages, uint64 seed,
							  const PcEnt *ents, int nents);
extern bool softmig_pc_unpack(bytea *b, PcPages *pages, uint64 *seed,
							  PcEnt **ents, int *nents);

#endif							/* SOFTMIG_PARITYCACHE_H */
