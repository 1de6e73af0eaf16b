/* router.h - where a stanza goes (RFC 6120 §10): a table of domains, each served by a handler: the local
 * users, the MUC service, and later a component or a remote server. The stream that received a stanza has
 * already stamped its 'from' (the sender is who the stream says, §8.1.2.1); the router reads only 'to'.
 * Bounces are built here and travel back through the same table, so an error reaches the sender whatever
 * kind of stream it came from. */
#ifndef COUPLET_ROUTER_H
#define COUPLET_ROUTER_H

#include "jid.h"
#include "xml.h"

typedef struct router router;

/* Takes one stanza for the domain. to is the parsed 'to', or NULL when the stanza has none: it is then
 * addressed to the sender's own account and routed to the sender's domain (§10.3). The tree is only valid
 * during the call, and the handler may change it (it is the router's caller's). */
typedef void (*route_handler)(void *ud, xml_node *stanza, const jid *to);

/* arena: where bounces are built; the caller resets it between stanzas. NULL on out of memory. */
router *router_new(xml_arena *arena);
void router_free(router *r);
/* The domain (a normalised domainpart) is served by fn from now on. 0, or -1 when it already has a
 * handler or memory ran out. */
int router_add(router *r, const char *domain, route_handler fn, void *ud);
/* 0, or -1 when the domain had no handler. */
int router_remove(router *r, const char *domain);
unsigned router_count(const router *r);
/* 1 when the domain has a handler */
int router_serves(const router *r, const char *domain);

/* Hand the stanza to the handler of its destination's domain. A malformed 'to' is bounced with
 * jid-malformed, a domain nobody serves with remote-server-not-found. Returns 0 when a handler took it,
 * -1 when it was bounced (or dropped: an error or result, which never bounces). */
int router_route(router *r, xml_node *stanza);
/* The error reply to stanza (stanza_error_new), routed to its sender. Errors and IQ results are not
 * answered (RFC 6120 §8.3.1, §8.2.3), so two routers can never bounce a stanza between them forever. */
void router_bounce(router *r, const xml_node *stanza, const char *type, const char *condition, const char *text);

#endif
