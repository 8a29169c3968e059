/*-------------------------------------------------------------------------
 *
 * remote.c
 *	  Talking to the other database of a cross-database migration (libpq).
 *
 *	  A cross-database migration (doc/cross-database.md) has its legacy
 *	  table in one database and its target in another.  The data flows
 *	  through PostgreSQL's logical replication; what this module carries is
 *	  the coordination: the database that holds the target (where the DBA
 *	  runs softmig.remote_advance and friends) calls a handful of fixed
 *	  softmig functions in the legacy database, and, for cross-database
 *	  parity, reads there in a snapshot of its choosing.
 *
 *	  Connections are made with the connection string a superuser gave
 *	  create_remote_migration (stored in softmig.remote_conninfo, which
 *	  only the catalog owner can read; a libpq service name or a passfile
 *	  keeps passwords out of it), used for one call or one parity run and
 *	  closed again.  Every wait on the socket goes through the latch, so a
 *	  cancel, statement_timeout or postmaster death interrupts it; a
 *	  connection left open by an error is cancelled and closed at the end
 *	  of the transaction (remote_xact_callback), so the other database
 *	  never keeps a transaction of ours open.
 *
 *	  Errors raised by the other database are raised here again with their
 *	  SQLSTATE, message, detail and hint, and a context line naming the
 *	  other database, so a lock timeout there is a lock timeout here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq-fe.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "softmig.h"
#include "remote.h"

/* Connections opened and not closed yet, closed at transaction end. */
typedef struct OpenConn
{
	PGconn	   *conn;
	struct OpenConn *next;
} OpenConn;

static OpenConn *open_conns = NULL;
static bool callback_registered = false;

/*
 * forget_conn
 *		Remove conn from the list of open connections (it is being closed).
 */
static void
forget_conn(PGconn *conn)
{
	for (OpenConn **p = &open_conns; *p; p = &(*p)->next)
	{
		if ((*p)->conn == conn)
		{
			OpenConn   *dead = *p;

			*p = dead->next;
			pfree(dead);
			return;
		}
	}
}

/*
 * cancel_and_close
 *		Ask the other server to cancel whatever this connection is running
 *		(a query interrupted here would otherwise run on), then close it.
 *		Never raises: it runs during abort.
 */
static void
cancel_and_close(PGconn *conn)
{
	if (PQtransactionStatus(conn) == PQTRANS_ACTIVE)
	{
		PGcancel   *cancel = PQgetCancel(conn);
		char		errbuf[256];

		if (cancel)
		{
			(void) PQcancel(cancel, errbuf, sizeof(errbuf));
			PQfreeCancel(cancel);
		}
	}
	PQfinish(conn);
}

/*
 * remote_xact_callback
 *		At the end of every transaction, cancel and close the connections
 *		still open (an error skipped softmig_remote_finish).  The list lives
 *		in TopMemoryContext.
 */
static void
remote_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_ABORT && event != XACT_EVENT_COMMIT &&
		event != XACT_EVENT_PARALLEL_ABORT && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_PREPARE)
		return;
	while (open_conns)
	{
		OpenConn   *c = open_conns;

		open_conns = c->next;
		cancel_and_close(c->conn);
		pfree(c);
	}
}

/*
 * wait_socket
 *		Wait until conn's socket is ready for what libpq wants (reading or
 *		writing), or the latch is set; handles interrupts.  Takes no locks.
 */
static void
wait_socket(PGconn *conn, bool for_write)
{
	int			rc;

	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
						   (for_write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE),
						   PQsocket(conn), -1L, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * softmig_remote_connect
 *		Open a connection with conninfo to the database described by "what"
 *		(for messages), interruptibly.  Raises 08001 when it cannot connect,
 *		with libpq's reason.  The connection is registered for closing at
 *		transaction end; close it earlier with softmig_remote_finish.  Its
 *		search_path is pinned: softmig only sends qualified SQL, but the
 *		functions it calls should not depend on the role's settings.
 */
PGconn *
softmig_remote_connect(const char *conninfo, const char *what)
{
	const char *keys[4] = {"dbname", "fallback_application_name", "client_encoding", NULL};
	const char *vals[4] = {conninfo, "softmig", GetDatabaseEncodingName(), NULL};
	PGconn	   *conn;
	PostgresPollingStatusType st;
	OpenConn   *oc;

	if (!callback_registered)
	{
		RegisterXactCallback(remote_xact_callback, NULL);
		callback_registered = true;
	}

	conn = PQconnectStartParams(keys, vals, true);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory connecting to %s", what)));
	oc = MemoryContextAlloc(TopMemoryContext, sizeof(OpenConn));
	oc->conn = conn;
	oc->next = open_conns;
	open_conns = oc;

	st = PGRES_POLLING_WRITING;
	while (PQstatus(conn) != CONNECTION_BAD &&
		   st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED)
	{
		wait_socket(conn, st == PGRES_POLLING_WRITING);
		st = PQconnectPoll(conn);
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = pchomp(PQerrorMessage(conn));

		forget_conn(conn);
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to %s", what),
				 errdetail_internal("%s", msg),
				 errhint("Check the connection string given to softmig.create_remote_migration, and that the other server is up and accepts the connection (pg_hba.conf, a passfile or a service file for the server's operating system user).")));
	}
	PQclear(softmig_remote_exec(conn, what,
								"SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)",
								0, NULL));
	return conn;
}

/*
 * softmig_remote_finish
 *		Close a connection opened by softmig_remote_connect.
 */
void
softmig_remote_finish(PGconn *conn)
{
	forget_conn(conn);
	cancel_and_close(conn);
}

/*
 * report_remote_error
 *		Raise the error a command failed with on the other database, with
 *		its SQLSTATE, message, detail and hint.  Frees res.
 */
static void
report_remote_error(PGconn *conn, PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
	int			code = ERRCODE_CONNECTION_FAILURE;
	char	   *msg;
	char	   *det = detail ? pstrdup(detail) : NULL;
	char	   *hnt = hint ? pstrdup(hint) : NULL;

	if (state && strlen(state) == 5)
		code = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	msg = pchomp(primary ? primary : PQerrorMessage(conn));
	if (res)
		PQclear(res);
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", msg),
			 det ? errdetail_internal("%s", det) : 0,
			 hnt ? errhint("%s", hnt) : 0,
			 errcontext("in %s", what)));
}

/*
 * softmig_remote_send
 *		Send one command (with text parameters, NULL for SQL NULL) on conn
 *		without waiting for its result; softmig_remote_result collects it.
 *		Lets a digest run in the other database while this one computes its
 *		own.
 */
void
softmig_remote_send(PGconn *conn, const char *what, const char *sql,
					int nparams, const char *const *values)
{
	if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
		report_remote_error(conn, NULL, what);
}

/*
 * softmig_remote_result
 *		Wait (interruptibly) for the result of the command sent on conn and
 *		return it (PGRES_TUPLES_OK or PGRES_COMMAND_OK; the caller PQclears
 *		it); an error of the other database is raised here.
 */
PGresult *
softmig_remote_result(PGconn *conn, const char *what)
{
	PGresult   *res = NULL;
	PGresult   *last = NULL;

	for (;;)
	{
		while (PQisBusy(conn))
		{
			wait_socket(conn, false);
			if (!PQconsumeInput(conn))
				report_remote_error(conn, NULL, what);
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		if (last)
			PQclear(last);
		last = res;
	}
	if (last == NULL)
		report_remote_error(conn, NULL, what);
	if (PQresultStatus(last) != PGRES_TUPLES_OK &&
		PQresultStatus(last) != PGRES_COMMAND_OK)
		report_remote_error(conn, last, what);
	return last;
}

/*
 * softmig_remote_exec
 *		Run one command on conn and return its result (see
 *		softmig_remote_send and softmig_remote_result).
 */
PGresult *
softmig_remote_exec(PGconn *conn, const char *what, const char *sql,
					int nparams, const char *const *values)
{
	softmig_remote_send(conn, what, sql, nparams, values);
	return softmig_remote_result(conn, what);
}

/*
 * peer_conninfo
 *		The connection string by which this database reaches the other one
 *		of migration "name" (softmig.remote_conninfo.peer), read through
 *		SPI.  42704 when there is none.  The caller is connected to SPI;
 *		the result is palloc'd in the caller's context.
 */
static char *
peer_conninfo(const char *name, MemoryContext cxt)
{
	bool		isnull;
	Datum		d;

	if (softmig_spi_select_arg("SELECT peer FROM softmig.remote_conninfo "
							   "WHERE migration OPERATOR(pg_catalog.=) $1",
							   TEXTOID, CStringGetTextDatum(name), 1,
							   "reading softmig.remote_conninfo") != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cross-database migration \"%s\" has no connection to the other database here", name),
				 errhint("softmig.remote_migrations lists the cross-database migrations of this database.")));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return MemoryContextStrdup(cxt, TextDatumGetCString(d));
}

/*
 * softmig_remote_connect_peer
 *		Connect to the other database of migration "name" with its stored
 *		connection string.  Opens its own SPI connection to read it.
 */
PGconn *
softmig_remote_connect_peer(const char *name)
{
	char	   *conninfo;
	MemoryContext cxt = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	conninfo = peer_conninfo(name, cxt);
	SPI_finish();
	return softmig_remote_connect(conninfo,
								  psprintf("the other database of migration \"%s\"", name));
}

PG_FUNCTION_INFO_V1(softmig_remote_call);
/*
 * softmig_remote_call
 *		softmig._remote_call(name, op, arg jsonb) -> jsonb: run
 *		softmig._remote_peer(name, op, arg) in the other database of the
 *		cross-database migration and return its result.  One connection
 *		per call, closed before returning.  EXECUTE is revoked from PUBLIC:
 *		the stored connection string is the catalog owner's to use.
 */
Datum
softmig_remote_call(PG_FUNCTION_ARGS)
{
	char	   *name;
	const char *params[3];
	PGconn	   *conn;
	PGresult   *res;
	Datum		result;
	char	   *what;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("migration name and operation must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	params[0] = name;
	params[1] = text_to_cstring(PG_GETARG_TEXT_PP(1));
	params[2] = PG_ARGISNULL(2) ? "{}" :
		JsonbToCString(NULL, &PG_GETARG_JSONB_P(2)->root, VARSIZE(PG_GETARG_JSONB_P(2)));
	what = psprintf("the other database of migration \"%s\"", name);

	conn = softmig_remote_connect_peer(name);
	res = softmig_remote_exec(conn, what,
							  "SELECT softmig._remote_peer($1, $2, $3::pg_catalog.jsonb)::pg_catalog.text",
							  3, params);
	if (PQntuples(res) != 1 || PQnfields(res) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected answer from %s", what)));
	if (PQgetisnull(res, 0, 0))
	{
		PQclear(res);
		softmig_remote_finish(conn);
		PG_RETURN_NULL();
	}
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(PQgetvalue(res, 0, 0))));
	PQclear(res);
	softmig_remote_finish(conn);
	PG_RETURN_DATUM(result);
}
