/* server.h - XMPP streams, sessions, routing and the server's own IQs (RFC 6120, RFC 6121 without rosters). */
#ifndef COUPLET_SERVER_H
#define COUPLET_SERVER_H

#include <stddef.h>
#include "config.h"

typedef struct server server;

/* Opens the account store and the rooms, sets up TLS and the listeners. NULL with err filled on failure.
 * The configuration is copied; config_path (or NULL) is read again on SIGHUP. */
server *server_new(const config *cfg, const char *config_path, char *err, size_t errlen);
/* Serve until SIGTERM or SIGINT; then every stream is closed and state flushed. Returns 0 on a clean stop. */
int server_run(server *s);
void server_free(server *s);

/* ---- for the layers that build on the core (stream management, components) and for their tests ---- */
struct router;
/* The domain table: a component or a test registers its domain here (router.h). */
struct router *server_router(server *s);
/* Detach the session with this full JID from its stream, as a resumable session is when its link drops:
 * the stream is closed without presence, the session stays bound. Stanzas to it are held, at most 64 and
 * 64 KiB; beyond that a message or IQ to it is bounced service-unavailable and a room drops the occupant.
 * 0, or -1 when there is no such attached session. */
int server_session_detach(server *s, const char *full_jid);
/* End a session as its client's logout would (unavailable presence out, the stream closed). What a detached
 * session held is settled then: chat and normal messages go on to the account's other sessions, IQ
 * requests are answered service-unavailable, the rest is dropped. 0, or -1 when there is no such session. */
int server_session_end(server *s, const char *full_jid);
/* How many stanzas a detached session holds (0 for an attached one or none). */
unsigned server_session_held(server *s, const char *full_jid);

#endif
