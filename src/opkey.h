/*-------------------------------------------------------------------------
 *
 * opkey.h
 *	  Operation keys: the idempotency ledger shared by both sides of a
 *	  migration (see opkey.c and doc/operation-keys.md).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_OPKEY_H
#define SOFTMIG_OPKEY_H

#include "softmig.h"

/* Longest operation key accepted, in bytes (documented). */
#define SM_OPKEY_MAX_BYTES 512

/* SET LOCAL softmig.operation_key = '...' (NULL when never set). */
extern char *softmig_operation_key;

extern void softmig_opkey_init(void);
extern void softmig_opkey_claim(SoftmigMigration *m, Relation rel, SoftmigSide side);

#endif							/* SOFTMIG_OPKEY_H */
