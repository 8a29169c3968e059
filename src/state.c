/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The softmig.state base type: a one-byte, pass-by-value ordered enum
 *	  (legacy < mirrored < new_write < new_read < cutover) with text and
 *	  binary I/O, comparison support for btree and hash operator classes,
 *	  and the single definition of which state transitions are legal.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"

#include "softmig.h"

static const char *const state_names[SM_NSTATES] = {
	"legacy", "mirrored", "new_write", "new_read", "cutover"
};

#define DatumGetSoftmigState(d)	((SoftmigState) DatumGetChar(d))
#define SoftmigStateGetDatum(s)	CharGetDatum((char) (s))
#define PG_GETARG_SMSTATE(n)	DatumGetSoftmigState(PG_GETARG_DATUM(n))
#define PG_RETURN_SMSTATE(s)	return SoftmigStateGetDatum(s)

/*
 * softmig_state_name
 *		Return the external name of a state.  Takes no locks.
 */
const char *
softmig_state_name(SoftmigState s)
{
	if ((int) s < 0 || (int) s >= SM_NSTATES)
		elog(ERROR, "invalid softmig state byte %d", (int) s);
	return state_names[s];
}

/*
 * softmig_state_by_name
 *		The state named name (a label of softmig.state), or SM_LEGACY for
 *		an unknown name: the catalog's enum column holds only its labels.
 */
SoftmigState
softmig_state_by_name(const char *name)
{
	for (int i = 0; i < SM_NSTATES; i++)
		if (strcmp(name, state_names[i]) == 0)
			return (SoftmigState) i;
	return SM_LEGACY;
}

/*
 * softmig_transition_is_legal
 *		The transition table (doc/reference.md, "State machine"), written
 *		once: one step forward, or one step back from mirrored, new_write
 *		and new_read; nothing leaves cutover and a state never "moves" to
 *		itself.  Whether a rollback is
 *		also allowed by the rollback envelope is decided by the caller.
 */
bool
softmig_transition_is_legal(SoftmigState from, SoftmigState to)
{
	if (from == SM_CUTOVER)
		return false;
	if ((int) to == (int) from + 1)
		return true;
	if ((int) to == (int) from - 1)
		return true;
	return false;
}

/*
 * parse_state
 *		Map a name to a state, raising 22P02 with the list of valid names for
 *		anything else.  Matching is exact (lower case), like enum input.
 */
static SoftmigState
parse_state(const char *str)
{
	int			i;

	for (i = 0; i < SM_NSTATES; i++)
	{
		if (strcmp(str, state_names[i]) == 0)
			return (SoftmigState) i;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type softmig.state: \"%s\"", str),
			 errhint("Valid states are legacy, mirrored, new_write, new_read and cutover.")));
	pg_unreachable();
}

PG_FUNCTION_INFO_V1(softmig_state_in);
/*
 * softmig_state_in
 *		Text input function of softmig.state.
 */
Datum
softmig_state_in(PG_FUNCTION_ARGS)
{
	PG_RETURN_SMSTATE(parse_state(PG_GETARG_CSTRING(0)));
}

PG_FUNCTION_INFO_V1(softmig_state_out);
/*
 * softmig_state_out
 *		Text output function of softmig.state.
 */
Datum
softmig_state_out(PG_FUNCTION_ARGS)
{
	PG_RETURN_CSTRING(pstrdup(softmig_state_name(PG_GETARG_SMSTATE(0))));
}

PG_FUNCTION_INFO_V1(softmig_state_recv);
/*
 * softmig_state_recv
 *		Binary input: one byte holding the ordinal, validated.
 */
Datum
softmig_state_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			v = pq_getmsgbyte(buf);

	if (v < 0 || v >= SM_NSTATES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary value %d for type softmig.state", v)));
	PG_RETURN_SMSTATE((SoftmigState) v);
}

PG_FUNCTION_INFO_V1(softmig_state_send);
/*
 * softmig_state_send
 *		Binary output: one byte holding the ordinal.
 */
Datum
softmig_state_send(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, (int) PG_GETARG_SMSTATE(0));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* Comparison support: states compare by ordinal. */
#define STATE_CMP_FN(fname, op) \
PG_FUNCTION_INFO_V1(fname); \
Datum \
fname(PG_FUNCTION_ARGS) \
{ \
	PG_RETURN_BOOL((int) PG_GETARG_SMSTATE(0) op (int) PG_GETARG_SMSTATE(1)); \
}

STATE_CMP_FN(softmig_state_eq, ==)
STATE_CMP_FN(softmig_state_ne, !=)
STATE_CMP_FN(softmig_state_lt, <)
STATE_CMP_FN(softmig_state_le, <=)
STATE_CMP_FN(softmig_state_gt, >)
STATE_CMP_FN(softmig_state_ge, >=)

PG_FUNCTION_INFO_V1(softmig_state_cmp);
/*
 * softmig_state_cmp
 *		btree support function 1.
 */
Datum
softmig_state_cmp(PG_FUNCTION_ARGS)
{
	int			a = (int) PG_GETARG_SMSTATE(0);
	int			b = (int) PG_GETARG_SMSTATE(1);

	PG_RETURN_INT32(a < b ? -1 : (a > b ? 1 : 0));
}

PG_FUNCTION_INFO_V1(softmig_state_hash);
/*
 * softmig_state_hash
 *		hash support function 1.
 */
Datum
softmig_state_hash(PG_FUNCTION_ARGS)
{
	return hash_uint32((uint32) PG_GETARG_SMSTATE(0));
}

PG_FUNCTION_INFO_V1(softmig_state_hash_extended);
/*
 * softmig_state_hash_extended
 *		hash support function 2 (seeded 64-bit hash).
 */
Datum
softmig_state_hash_extended(PG_FUNCTION_ARGS)
{
	return hash_uint32_extended((uint32) PG_GETARG_SMSTATE(0),
								PG_GETARG_INT64(1));
}

PG_FUNCTION_INFO_V1(softmig_is_legal_transition);
/*
 * softmig_is_legal_transition
 *		SQL wrapper over softmig_transition_is_legal().
 */
Datum
softmig_is_legal_transition(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(softmig_transition_is_legal(PG_GETARG_SMSTATE(0),
											   PG_GETARG_SMSTATE(1)));
}
