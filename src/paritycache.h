/*-------------------------------------------------------------------------
 *
 * paritycache.h
 *	  The parity digest cache (src/paritycache.c): per-segment page state of
 *	  a table, the rules deciding whether a comparison may be cached, and
 *	  the stored cache row.  parity.c decides what the cached digests mean;
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

/* A segment is this many consecutive heap blocks (256 kB). */
#define PC_SEG_BLOCKS 32

/* Segment state: "not reusable" (a page not all-visible, new, or changed). */
#define PC_SEG_NONE UINT64CONST(0xFFFFFFFFFFFFFFFF)

/* The page state of one table, one entry per segment. */
typedef struct PcPages
{
	Oid			relfilenode;
	uint32		nblocks;
	uint32		nseg;
	uint64	   *seg;			/* max page LSN, or PC_SEG_NONE */
} PcPages;

/* GUC softmig.parity_cache */
extern bool softmig_parity_cache;

extern void softmig_paritycache_init(void);
extern void softmig_pc_read_pages(Relation rel, XLogRecPtr horizon,
								  PcPages *out);
extern const char *softmig_pc_rel_refusal(Relation rel);
extern void softmig_pc_attribute_versions(Relation rel, StringInfo fp);
extern const char *softmig_pc_plan_refusal(SPIPlanPtr plan, StringInfo fp,
										   List **colls);
extern void softmig_pc_collation_versions(StringInfo fp, List *colls);
extern bool softmig_pc_try_lock(int32 id);
extern bytea *softmig_pc_pack(const PcPages *pages, const uint64 *st,
							  int nst, const uint8 *flags, int nchunks);
extern bool softmig_pc_unpack(bytea *b, PcPages *pages, uint64 **st,
							  int *nst, uint8 **flags, int *nchunks);

#endif							/* SOFTMIG_PARITYCACHE_H */
