/* router.c - the domain table: which handler takes a stanza, decided by the domain of its 'to'. A few
 * domains at most (local, rooms, a handful of components), so a short list is the whole table; remote
 * servers, when they come, are one handler for every domain not listed here. */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include "stanza.h"

typedef struct route {
    struct route *next;
    route_handler fn;
    void *ud;
    char domain[];
} route;

struct router {
    route *routes;
    xml_arena *arena;
    unsigned count;
};

router *router_new(xml_arena *arena) {
    router *r = calloc(1, sizeof *r);
    if (r) r->arena = arena;
    return r;
}

void router_free(router *r) {
    if (!r) return;
    while (r->routes) {
        route *e = r->routes;
        r->routes = e->next;
        free(e);
    }
    free(r);
}

static route *route_find(const router *r, const char *domain) {
    for (route *e = r->routes; e; e = e->next)
        if (!strcmp(e->domain, domain)) return e;
    return NULL;
}

int router_add(router *r, const char *domain, route_handler fn, void *ud) {
    if (route_find(r, domain)) return -1;
    size_t len = strlen(domain);
    route *e = malloc(sizeof *e + len + 1);
    if (!e) return -1;
    memcpy(e->domain, domain, len + 1);
    e->fn = fn;
    e->ud = ud;
    e->next = r->routes;
    r->routes = e;
    r->count++;
    return 0;
}

int router_remove(router *r, const char *domain) {
    for (route **pp = &r->routes; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->domain, domain)) {
            route *e = *pp;
            *pp = e->next;
            free(e);
            r->count--;
            return 0;
        }
    return -1;
}

unsigned router_count(const router *r) {
    return r->count;
}

int router_serves(const router *r, const char *domain) {
    return route_find(r, domain) != NULL;
}

int router_route(router *r, xml_node *st) {
    const char *to_text = xml_attr_get(st, "to");
    const char *key = to_text ? to_text : xml_attr_get(st, "from");
    jid to;
    if (!key) return -1;    /* neither address: nobody to take it, nobody to tell */
    if (jid_parse(key, &to) < 0) {
        /* a 'from' is stamped by our own streams, so only a 'to' can be malformed */
        router_bounce(r, st, "modify", "jid-malformed", NULL);
        return -1;
    }
    route *e = route_find(r, to.domain);
    if (!e) {
        router_bounce(r, st, "cancel", "remote-server-not-found", NULL);
        return -1;
    }
    e->fn(e->ud, st, to_text ? &to : NULL);
    return 0;
}

void router_bounce(router *r, const xml_node *st, const char *type, const char *condition, const char *text) {
    if (!xml_attr_get(st, "from")) return;
    xml_node *e = stanza_error_new(r->arena, st, type, condition, text, NULL);
    if (e) router_route(r, e);
}
