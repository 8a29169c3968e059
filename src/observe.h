/*-------------------------------------------------------------------------
 *
 * observe.h
 *	  Semantic observability: structural parity (parity*.c) and the
 *	  behavioural layer, transition rules (rules.c) and invariants
 *	  (invariants.c).  The SQL
 *	  side (check, report, metrics, pgTAP helpers) is src/install/75_observe.sql;
 *	  doc/observability.md explains the layers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_OBSERVE_H
#define SOFTMIG_OBSERVE_H

#include "softmig.h"

/* GUCs (test hooks, superuser only), defined by softmig_observe_init. */
extern int	softmig_parity_digest_bits;
extern int	softmig_parity_pause_lock;

/* structural parity (parity*.c) */
extern void softmig_observe_init(void);
extern bool softmig_parity_state_chunks(bytea *state, int nchunks, uint64 *out,
										uint64 *nullkeys);

/* rules.c */
extern void softmig_rules_init(void);

#endif							/* SOFTMIG_OBSERVE_H */
