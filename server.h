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

#endif
