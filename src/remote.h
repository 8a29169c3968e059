/*-------------------------------------------------------------------------
 *
 * remote.h
 *	  Cross-database migrations: the connection to the other database
 *	  (remote.c), the triggers of each side (remote_trigger.c) and
 *	  cross-database parity (remote_parity.c).  doc/cross-database.md
 *	  explains the design.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SOFTMIG_REMOTE_H
#define SOFTMIG_REMOTE_H

#include "libpq-fe.h"
#include "storage/lock.h"

#include "softmig.h"

/* remote.c */
extern PGconn *softmig_remote_connect(const char *conninfo, const char *what);
extern PGconn *softmig_remote_connect_peer(const char *name);
extern void softmig_remote_finish(PGconn *conn);
extern PGresult *softmig_remote_exec(PGconn *conn, const char *what, const char *sql,
									 int nparams, const char *const *values);
extern void softmig_remote_send(PGconn *conn, const char *what, const char *sql,
								int nparams, const char *const *values);
extern PGresult *softmig_remote_result(PGconn *conn, const char *what);

/* remote_trigger.c */
extern void softmig_remote_init(void);
extern int	softmig_remote_timeout;
extern void softmig_remote_marker_tag(LOCKTAG *tag, int64 id);

#endif							/* SOFTMIG_REMOTE_H */
