/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Shims over differences between the PostgreSQL major versions softmig
 *	  supports (14 to 17).  Everything version-dependent goes here so the
 *	  rest of the code reads as if written for one release.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_COMPAT_H
#define SOFTMIG_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 140000
#error "softmig requires PostgreSQL 14 or later"
#endif

#include "utils/acl.h"

/*
 * Ownership checks: pg_class_ownercheck() was folded into
 * object_ownercheck() in PostgreSQL 16.
 */
#if PG_VERSION_NUM >= 160000
#define softmig_rel_ownercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#define softmig_rel_ownercheck(relid, roleid) \
	pg_class_ownercheck((relid), (roleid))
#endif

/*
 * Can role "member" act as role "role" (SET ROLE to it)?  PostgreSQL 16 made
 * that a property of the membership (the SET option).
 */
#if PG_VERSION_NUM >= 160000
#define softmig_member_can_act_as(member, role) member_can_set_role((member), (role))
#else
#define softmig_member_can_act_as(member, role) is_member_of_role((member), (role))
#endif

/* MarkGUCPrefixReserved() is the PostgreSQL 15 name. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

#endif							/* SOFTMIG_COMPAT_H */
