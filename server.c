/* server.c - the XMPP layer: stream state per connection (RFC 6120 §4), STARTTLS and SASL negotiation,
 * resource binding, routing of messages, presence and IQs between sessions (RFC 6121 without rosters),
 * the server's own IQs, and the hand-off of everything addressed to the MUC service. */
#include "server.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/inotify.h>
#include <sys/stat.h>


#include "admin.h"
#include "auth.h"
#include "jid.h"
#include "muc.h"
#include "net_epoll.h"
#include "store.h"
#include "xml.h"

#define NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STREAMS  "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_PING     "urn:xmpp:ping"
#define NS_VERSION  "jabber:iq:version"
#define NS_TIME     "urn:xmpp:time"
#define NS_LAST     "jabber:iq:last"
#define NS_ROSTER   "jabber:iq:roster"

#define COUPLET_VERSION "0.1"

enum { TAG_STARTTLS = 1, TAG_DIRECT_TLS = 2, TAG_ADMIN = 3 };

/* Where a connection is in the negotiation of RFC 6120: each stream restart returns to HEADER. */
enum stream_state {
    ST_HEADER,          /* waiting for the client's stream header */
    ST_NEGOTIATE,       /* features sent: STARTTLS, SASL or bind expected */
    ST_ACTIVE,          /* resource bound: stanzas are routed */
    ST_CLOSED,          /* our closing tag is out; waiting for the connection to go */
};

typedef struct directed {
    struct directed *next;
    char jid[];         /* a JID we sent available presence to, owed 'unavailable' at the end */
} directed;

typedef struct session session;
typedef struct account account;

struct session {
    server *srv;
    net_conn *conn;
    xml_parser *parser;
    auth_sasl *sasl;
    account *acct;              /* set once bound */
    char *full_jid;             /* set once bound: local@domain/resource */
    char *user;                 /* local part, set once authenticated */
    directed *directed;
    session *acct_next;         /* the account's other sessions */
    session *prev, *next;       /* every session, for shutdown */
    unsigned id;                /* for logs: numbered in order of connection */
    unsigned char state;
    unsigned char sasl_failures;
    unsigned tls : 1, authed : 1, available : 1, header_sent : 1, dead : 1;
    unsigned starttls_now : 1;  /* STARTTLS just accepted: the rest of this read is not the new stream */
    unsigned roster_requested : 1;  /* an interested resource (RFC 6121 §2.1.6): gets roster pushes */
    signed char priority;
    char *presence;             /* roster = shared: the last broadcast presence, serialized without 'to' */
    unsigned presence_len, presence_split;  /* where " to='...'" goes into it */
    time_t since;               /* accepted at; fits the malloc chunk the struct had already */
};

/* An account with at least one bound session, found by its local part. */
struct account {
    account *hnext;
    session *sessions;
    char local[];
};

/* Failed authentications per peer address, direct-mapped: bounded memory whatever the number of
 * addresses, and a collision can only forget a count, never lock out the wrong address for long. */
#define AUTH_FAIL_SLOTS 1024
typedef struct auth_fail {
    char ip[46];
    unsigned short failures;
    time_t last, locked_until;
} auth_fail;

struct server {
    const config *cfg;          /* points at conf */
    config conf;                /* our own copy: SIGHUP reloads it in place */
    char *config_path;          /* NULL when running on the embedded defaults */
    auth_fail *auth_fails;      /* AUTH_FAIL_SLOTS entries, allocated on the first failure */
    net_loop *loop;
    auth_store *store;
    muc_service *muc;
    session *sessions;          /* list of all sessions */
    account **buckets;          /* open hash of bound accounts */
    size_t nbuckets, naccounts;
    xml_arena *arena;           /* replies built while handling one stanza */
    xml_buf out;                /* serialization scratch, reused */
    time_t started;
    unsigned last_id;           /* the last connection's number */
    int stopping;
    int accounts_watch;         /* inotify on data_dir: the account file replaced by another process */
    struct admin_link *admins;  /* the admin socket's connections */
    unsigned nadmins;
    char *admin_path;           /* the admin socket we made, removed at the end if it is still ours */
    dev_t admin_dev;
    ino_t admin_ino;
};

/* ---------------------------------------------------------------------------------------------------- */
/* accounts table                                                                                       */

static size_t hash_str(const char *s) {
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static account *account_find(server *srv, const char *local) {
    if (!srv->nbuckets) return NULL;
    account *a = srv->buckets[hash_str(local) & (srv->nbuckets - 1)];
    while (a && strcmp(a->local, local) != 0) a = a->hnext;
    return a;
}

static int accounts_grow(server *srv) {
    size_t n = srv->nbuckets ? srv->nbuckets * 2 : 256;
    account **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < srv->nbuckets; i++) {
        account *a = srv->buckets[i];
        while (a) {
            account *next = a->hnext;
            size_t k = hash_str(a->local) & (n - 1);
            a->hnext = b[k];
            b[k] = a;
            a = next;
        }
    }
    free(srv->buckets);
    srv->buckets = b;
    srv->nbuckets = n;
    return 0;
}

static account *account_get(server *srv, const char *local) {
    account *a = account_find(srv, local);
    if (a) return a;
    if (srv->naccounts >= srv->nbuckets && accounts_grow(srv) < 0) return NULL;
    size_t len = strlen(local);
    a = malloc(sizeof *a + len + 1);
    if (!a) return NULL;
    memcpy(a->local, local, len + 1);
    a->sessions = NULL;
    size_t k = hash_str(local) & (srv->nbuckets - 1);
    a->hnext = srv->buckets[k];
    srv->buckets[k] = a;
    srv->naccounts++;
    return a;
}

static void account_drop_if_empty(server *srv, account *a) {
    if (a->sessions) return;
    account **pp = &srv->buckets[hash_str(a->local) & (srv->nbuckets - 1)];
    while (*pp != a) pp = &(*pp)->hnext;
    *pp = a->hnext;
    srv->naccounts--;
    free(a);
}

static const char *session_resource(const session *s) {
    return strchr(s->full_jid, '/') + 1;
}

static session *account_session(account *a, const char *resource) {
    for (session *s = a ? a->sessions : NULL; s; s = s->acct_next)
        if (strcmp(session_resource(s), resource) == 0) return s;
    return NULL;
}

static unsigned account_session_count(const account *a) {
    unsigned n = 0;
    for (const session *s = a->sessions; s; s = s->acct_next) n++;
    return n;
}

/* ---------------------------------------------------------------------------------------------------- */
/* logs: each line names its connection; at debug level every stanza in and out, secrets blanked         */

/* "#12 127.0.0.1 romeo@localhost/x" (or the user, or "-", before binding): the number tells apart two
 * connections from one address (struct net_conn has no room left for the port) */
static const char *session_name(const session *s) {
    static char buf[3 * (JID_PART_MAX + 1) + 80];
    snprintf(buf, sizeof buf, "#%u %s %s", s->id, net_conn_peer(s->conn),
             s->full_jid ? s->full_jid : s->user ? s->user : "-");
    return buf;
}

/* What a stanza log must never show: SASL payloads (a PLAIN one is the password), passwords of rooms and
 * registrations, and a room secret in a configuration form. Each rule blanks what lies between `open`
 * (searched after `marker`) and `close`. */
static const struct redaction {
    const char *marker, *open, *close;
} redactions[] = {
    {"<auth ", ">", "</auth>"},
    {"<response ", ">", "</response>"},
    {"<challenge ", ">", "</challenge>"},
    {"<success ", ">", "</success>"},
    {"<password", ">", "</password>"},
    {"muc#roomconfig_roomsecret", "<value>", "</value>"},
    {"var='password'", "<value>", "</value>"},
    {"var=\"password\"", "<value>", "</value>"},
};

static void redact(xml_buf *b) {
    for (size_t r = 0; r < sizeof redactions / sizeof *redactions; r++) {
        const struct redaction *x = &redactions[r];
        for (char *p = b->data; p && (p = strstr(p, x->marker));) {
            char *open = strstr(p + strlen(x->marker), x->open);
            if (!open || (open > b->data && open[-1] == '/')) break;    /* an empty element: nothing in it */
            char *start = open + strlen(x->open), *end = strstr(start, x->close);
            if (!end) break;
            if (end > start) {
                memset(start, '*', (size_t)(end - start) < 3 ? (size_t)(end - start) : 3);
                if (end - start > 3) memmove(start + 3, end, strlen(end) + 1);
                end = start + ((size_t)(end - start) < 3 ? (size_t)(end - start) : 3);
            }
            p = end;
        }
    }
}

#define LOG_STANZA_MAX 8192
static void log_stanza(const session *s, const char *dir, const char *data, size_t len) {
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_append(&b, data, len < LOG_STANZA_MAX ? len : LOG_STANZA_MAX);
    if (b.oom) return;
    redact(&b);
    log_debug("%s %s %s%s", dir, session_name(s), b.data, len > LOG_STANZA_MAX ? " [...]" : "");
    xml_buf_free(&b);
}

static void log_stanza_in(const session *s, const xml_node *n) {
    xml_buf b;
    xml_buf_init(&b);
    xml_serialize(&b, n, XML_NS_CLIENT);
    if (!b.oom) log_stanza(s, "<-", b.data, b.len);
    xml_buf_free(&b);
}

/* ---------------------------------------------------------------------------------------------------- */
/* output                                                                                               */

/* Once our </stream:stream> is out (state ST_CLOSED), nothing more may follow it (RFC 6120 §4.4). */
static void session_write(session *s, const char *data, size_t len) {
    if (s->dead || s->state == ST_CLOSED) return;
    if (log_level >= LOG_DEBUG) log_stanza(s, "->", data, len);
    net_conn_write(s->conn, data, len);
}

static void session_puts(session *s, const char *text) {
    session_write(s, text, strlen(text));
}

static void session_send_node(session *s, const xml_node *n) {
    server *srv = s->srv;
    xml_buf_reset(&srv->out);
    xml_serialize(&srv->out, n, XML_NS_CLIENT);
    if (!srv->out.oom) session_write(s, srv->out.data, srv->out.len);
}

/* head + " to='JID'" + tail: a stanza encoded once for many recipients */
/* One write, so that an output bound can never cut a stanza in the middle. */
static void session_write_spliced(session *s, const char *to, const char *head, size_t hl,
                                  const char *tail, size_t tl) {
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_append(b, head, hl);
    xml_buf_puts(b, " to='");
    xml_buf_escape(b, to, strlen(to));
    xml_buf_puts(b, "'");
    xml_buf_append(b, tail, tl);
    if (!b->oom) session_write(s, b->data, b->len);
}

/* lower-case hex of n random bytes into out[2n+1] */
static void random_hex(char *out, size_t n) {
    static const char digits[] = "0123456789abcdef";
    unsigned char rnd[16];
    if (n > sizeof rnd) n = sizeof rnd;
    if (auth_random(rnd, n) < 0) memset(rnd, 0x5a, n);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[rnd[i] >> 4];
        out[2 * i + 1] = digits[rnd[i] & 15];
    }
    out[2 * n] = 0;
}

static void session_send_header(session *s) {
    char id[17];
    random_hex(id, 8);
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_puts(b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams' id='");
    xml_buf_puts(b, id);
    xml_buf_puts(b, "' from='");
    xml_buf_escape(b, s->srv->cfg->domain, strlen(s->srv->cfg->domain));
    xml_buf_puts(b, "' version='1.0' xml:lang='en'>");
    if (!b->oom) session_write(s, b->data, b->len);
    s->header_sent = 1;
}

static void session_end(session *s);

/* A stream error ends the stream (RFC 6120 §4.9): header first if we never sent one. */
static void session_stream_error(session *s, const char *condition, const char *text) {
    if (s->state == ST_CLOSED || s->dead) return;
    if (!s->header_sent) session_send_header(s);
    log_info("%s stream error %s%s%s", session_name(s), condition, text ? ": " : "", text ? text : "");
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_printf(b, "<stream:error><%s xmlns='" NS_STREAMS "'/>", condition);
    if (text) {
        xml_buf_puts(b, "<text xmlns='" NS_STREAMS "'>");
        xml_buf_escape(b, text, strlen(text));
        xml_buf_puts(b, "</text>");
    }
    xml_buf_puts(b, "</stream:error></stream:stream>");
    if (!b->oom) session_write(s, b->data, b->len);
    s->state = ST_CLOSED;
    session_end(s);
    net_conn_close(s->conn);
}

static void session_close_stream(session *s) {
    if (s->state == ST_CLOSED || s->dead) return;
    if (!s->header_sent) session_send_header(s);
    session_puts(s, "</stream:stream>");
    s->state = ST_CLOSED;
    session_end(s);
    net_conn_close(s->conn);
}

/* ---------------------------------------------------------------------------------------------------- */
/* stanza helpers                                                                                       */

static int is_stanza(const xml_node *n) {
    return strcmp(n->ns, XML_NS_CLIENT) == 0 &&
           (!strcmp(n->name, "message") || !strcmp(n->name, "presence") || !strcmp(n->name, "iq"));
}

static const char *stanza_type(const xml_node *n) {
    const char *t = xml_attr_get(n, "type");
    return t ? t : "";
}

/* The one element child of an IQ get/set (RFC 6120 §8.2.3), or NULL if there is not exactly one. */
static xml_node *iq_payload(const xml_node *iq) {
    xml_node *p = xml_child(iq, NULL, NULL);
    if (!p || xml_next_child(p, NULL, NULL)) return NULL;
    return p;
}

/* An error reply to st, from its addressee back to the sender (RFC 6120 §8.3). */
static xml_node *stanza_error_reply(server *srv, const xml_node *st, const char *from, const char *to,
                                    const char *type, const char *condition) {
    xml_arena *a = srv->arena;
    xml_node *r = xml_node_new(a, st->name, XML_NS_CLIENT);
    if (!r) return NULL;
    const char *id = xml_attr_get(st, "id");
    if (id) xml_set_attr(a, r, "id", id);
    xml_set_attr(a, r, "type", "error");
    xml_set_attr(a, r, "from", from);
    xml_set_attr(a, r, "to", to);
    xml_node *e = xml_add_child(a, r, "error", XML_NS_CLIENT);
    if (!e) return NULL;
    xml_set_attr(a, e, "type", type);
    xml_add_child(a, e, condition, NS_STANZAS);
    return r;
}

/* An error reply to st, with a human-readable <text/> saying why when text is not NULL (RFC 6120 §8.3.2).
 * Errors are never answered with errors (§8.3.1), nor IQ results (§8.2.3). A stanza without 'to' was
 * handled for the account itself: the answer comes from nobody else, so it carries no 'from' (§8.1.2.1,
 * §10.3.3); clients match replies by sender. */
static void send_stanza_error_text(session *s, const xml_node *st, const char *type, const char *condition,
                                   const char *text) {
    if (!strcmp(stanza_type(st), "error")) return;
    if (!strcmp(st->name, "iq") && !strcmp(stanza_type(st), "result")) return;
    xml_node *r = stanza_error_reply(s->srv, st, xml_attr_get(st, "to"), s->full_jid, type, condition);
    xml_node *e = r && text ? xml_child(r, "error", NULL) : NULL;
    if (e) xml_add_child_text(s->srv->arena, e, "text", NS_STANZAS, text);
    if (r) session_send_node(s, r);
}

static void send_stanza_error(session *s, const xml_node *st, const char *type, const char *condition) {
    send_stanza_error_text(s, st, type, condition, NULL);
}

static xml_node *iq_result(session *s, const xml_node *iq) {
    xml_arena *a = s->srv->arena;
    xml_node *r = xml_node_new(a, "iq", XML_NS_CLIENT);
    if (!r) return NULL;
    const char *from = xml_attr_get(iq, "to");
    xml_set_attr(a, r, "id", xml_attr_get(iq, "id"));
    xml_set_attr(a, r, "type", "result");
    if (from) xml_set_attr(a, r, "from", from);
    xml_set_attr(a, r, "to", s->full_jid);
    return r;
}

/* ---------------------------------------------------------------------------------------------------- */
/* features and negotiation (RFC 6120 §§4-7)                                                            */

static int sasl_allowed(const session *s) {
    return s->tls || !s->srv->cfg->require_encryption || !net_tls_available(s->srv->loop);
}

static void session_send_features(session *s) {
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_puts(b, "<stream:features>");
    if (!s->authed) {
        if (!s->tls && net_tls_available(s->srv->loop))
            xml_buf_puts(b, s->srv->cfg->require_encryption
                                ? "<starttls xmlns='" NS_TLS "'><required/></starttls>"
                                : "<starttls xmlns='" NS_TLS "'/>");
        if (sasl_allowed(s)) {
            xml_buf_puts(b, "<mechanisms xmlns='" NS_SASL "'>");
            for (const char *const *m = auth_mechanisms(); *m; m++)
                xml_buf_printf(b, "<mechanism>%s</mechanism>", *m);
            xml_buf_puts(b, "</mechanisms>");
        }
    } else {
        xml_buf_puts(b, "<bind xmlns='" NS_BIND "'/>"
                        "<session xmlns='" NS_SESSION "'><optional/></session>");
    }
    xml_buf_puts(b, "</stream:features>");
    if (!b->oom) session_write(s, b->data, b->len);
}

static int on_stream_open(void *ud, xml_node *root) {
    session *s = ud;
    const config *cfg = s->srv->cfg;
    s->header_sent = 0;
    if (log_level >= LOG_DEBUG) log_stanza_in(s, root);
    if (strcmp(root->ns, XML_NS_STREAM) != 0) {
        session_stream_error(s, "invalid-namespace", NULL);
        return 1;
    }
    if (strcmp(root->name, "stream") != 0) {     /* the right namespace, the wrong element */
        session_stream_error(s, "bad-format", NULL);
        return 1;
    }
    /* RFC 6120 §4.8.2: the content namespace says what kind of stream this is; this port serves clients */
    if (strcmp(xml_parser_default_ns(s->parser), XML_NS_CLIENT) != 0) {
        session_stream_error(s, "invalid-namespace", "this port serves clients: the default namespace must be "
                                                     XML_NS_CLIENT);
        return 1;
    }
    const char *to = xml_attr_get(root, "to");
    jid j;
    if (to && (jid_parse(to, &j) < 0 || j.local[0] || j.resource[0] || strcmp(j.domain, cfg->domain) != 0)) {
        session_stream_error(s, "host-unknown", NULL);
        return 1;
    }
    const char *version = xml_attr_get(root, "version");
    if (!version || strncmp(version, "1.", 2) != 0 || !version[2] || strspn(version + 2, "0123456789") != strlen(version + 2)) {
        /* We speak XMPP 1.x streams (RFC 6120 §4.7.5: a higher minor version is answered with ours);
         * an absent version (pre-XMPP) or another major version is refused. */
        session_stream_error(s, "unsupported-version", NULL);
        return 1;
    }
    session_send_header(s);
    session_send_features(s);
    s->state = ST_NEGOTIATE;
    return 0;
}

static int on_stream_close(void *ud) {
    session_close_stream(ud);
    return 1;
}

/* A stream restart (after STARTTLS or SASL success): the parser forgets the old stream. */
static int session_restart(session *s) {
    xml_parser_reset(s->parser);
    s->state = ST_HEADER;
    s->header_sent = 0;     /* an error before the new header needs a header of its own */
    return 1;
}

static int handle_starttls(session *s) {
    if (s->tls || s->authed || !net_tls_available(s->srv->loop)) {
        /* RFC 6120 §5.4.2.2: a failure element, then the stream is closed */
        session_puts(s, "<failure xmlns='" NS_TLS "'/>");
        session_close_stream(s);
        return 1;
    }
    session_puts(s, "<proceed xmlns='" NS_TLS "'/>");
    if (net_conn_starttls(s->conn) < 0) {
        session_close_stream(s);
        return 1;
    }
    s->tls = 1;
    s->starttls_now = 1;
    return session_restart(s);
}

static auth_fail *auth_fail_slot(server *srv, const char *ip) {
    if (!srv->auth_fails && !(srv->auth_fails = calloc(AUTH_FAIL_SLOTS, sizeof *srv->auth_fails))) return NULL;
    auth_fail *f = &srv->auth_fails[hash_str(ip) & (AUTH_FAIL_SLOTS - 1)];
    if (strcmp(f->ip, ip) != 0) {
        memset(f, 0, sizeof *f);
        snprintf(f->ip, sizeof f->ip, "%s", ip);
    }
    return f;
}

/* 1 while this address is locked out after too many failed authentications */
static int auth_locked_out(server *srv, const char *ip) {
    if (!srv->auth_fails || !srv->cfg->auth_failures_per_ip) return 0;
    const auth_fail *f = &srv->auth_fails[hash_str(ip) & (AUTH_FAIL_SLOTS - 1)];
    return !strcmp(f->ip, ip) && f->locked_until > time(NULL);
}

static void auth_note_failure(server *srv, const char *ip) {
    if (!srv->cfg->auth_failures_per_ip) return;
    auth_fail *f = auth_fail_slot(srv, ip);
    if (!f) return;
    time_t now = time(NULL);
    if (now - f->last > srv->cfg->auth_lockout) f->failures = 0;   /* old failures are forgiven */
    f->last = now;
    if (++f->failures >= srv->cfg->auth_failures_per_ip) {
        f->locked_until = now + srv->cfg->auth_lockout;
        f->failures = 0;
        log_warn("%s: too many failed authentications, locked out for %d s", ip, srv->cfg->auth_lockout);
    }
}

/* ---- roster = shared: roster pushes when accounts come and go (RFC 6121 §2.1.6) ---- */

typedef struct name_list {
    char **v;
    size_t n, cap;
    int oom;
} name_list;

static void name_list_add(void *ud, const char *local) {
    name_list *l = ud;
    if (l->oom) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = 1;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(local))) l->oom = 1;
    else l->n++;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void name_list_sorted(server *srv, name_list *l) {
    memset(l, 0, sizeof *l);
    auth_user_foreach(srv->store, name_list_add, l);
    if (l->n) qsort(l->v, l->n, sizeof *l->v, name_cmp);
}

static void name_list_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static void roster_push(server *srv, const char *local, const char *subscription) {
    char bare[2 * (JID_PART_MAX + 1)];
    snprintf(bare, sizeof bare, "%s@%s", local, srv->cfg->domain);
    for (session *s = srv->sessions; s; s = s->next) {
        if (!s->roster_requested || !s->full_jid || s->dead || !strcmp(s->user, local)) continue;
        xml_arena_reset(srv->arena);
        xml_node *iq = xml_node_new(srv->arena, "iq", XML_NS_CLIENT);
        xml_node *q = iq ? xml_add_child(srv->arena, iq, "query", NS_ROSTER) : NULL;
        xml_node *item = q ? xml_add_child(srv->arena, q, "item", NULL) : NULL;
        if (!item) return;
        char id[17];
        random_hex(id, 8);
        xml_set_attr(srv->arena, iq, "type", "set");
        xml_set_attr(srv->arena, iq, "id", id);
        xml_set_attr(srv->arena, iq, "to", s->full_jid);
        xml_set_attr(srv->arena, item, "jid", bare);
        xml_set_attr(srv->arena, item, "subscription", subscription);
        session_send_node(s, iq);
    }
}

/* both lists sorted: what is only in `before` was removed, what is only in `after` was added */
static void roster_push_changes(server *srv, const name_list *before, const name_list *after) {
    size_t i = 0, j = 0;
    while (i < before->n || j < after->n) {
        int c = i == before->n ? 1 : j == after->n ? -1 : strcmp(before->v[i], after->v[j]);
        if (c < 0) roster_push(srv, before->v[i++], "remove");
        else if (c > 0) roster_push(srv, after->v[j++], "both");
        else i++, j++;
    }
}

/* ---- accounts changed by another process (adduser, passwd, deluser, import) ----
 * The file is read again when it changed: before each login, and as soon as inotify says it was replaced,
 * so that a deleted account's sessions end at once. A file that does not load keeps the old accounts. */

static void accounts_refresh(server *srv) {
    char err[256];
    name_list before = {0}, after = {0};
    if (!auth_store_changed(srv->store)) return;    /* a stat: the common case at every login */
    int pushes = srv->cfg->roster_shared && srv->sessions;
    if (pushes) name_list_sorted(srv, &before);
    int r = auth_store_refresh(srv->store, err, sizeof err);
    if (r < 0) log_err("%s: the accounts loaded before stay in use", err);
    if (r > 0) {
        log_info("accounts reloaded: %zu accounts", auth_store_count(srv->store));
        for (session *s = srv->sessions, *next; s; s = next) {
            next = s->next;
            if (s->user && !auth_user_exists(srv->store, s->user))
                session_stream_error(s, "not-authorized", "the account was deleted");
        }
        if (pushes) name_list_sorted(srv, &after);
        if (pushes && !before.oom && !after.oom) roster_push_changes(srv, &before, &after);
    }
    name_list_free(&before);
    name_list_free(&after);
}

static void on_accounts_event(void *ud) {
    server *srv = ud;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int changed = 0;
    ssize_t n;
    while ((n = read(srv->accounts_watch, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            if ((ev->mask & IN_Q_OVERFLOW) || (ev->len && !strcmp(ev->name, "accounts"))) changed = 1;
            p += sizeof *ev + ev->len;
        }
    }
    if (changed) accounts_refresh(srv);
}

/* Without inotify the login-time check still applies; only the ending of deleted accounts' sessions
 * waits for their next login attempt, so it is worth a warning. */
static void accounts_watch_start(server *srv) {
    srv->accounts_watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (srv->accounts_watch < 0 ||
        inotify_add_watch(srv->accounts_watch, srv->cfg->data_dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0 ||
        net_watch(srv->loop, srv->accounts_watch, on_accounts_event, srv) < 0) {
        log_warn("cannot watch %s for account changes (%s): deleted accounts are noticed at login only",
                 srv->cfg->data_dir, strerror(errno));
        if (srv->accounts_watch >= 0) close(srv->accounts_watch);
        srv->accounts_watch = -1;
    }
}

static void sasl_failure(session *s, const char *condition) {
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_printf(b, "<failure xmlns='" NS_SASL "'><%s/></failure>", condition);
    if (!b->oom) session_write(s, b->data, b->len);
    auth_sasl_free(s->sasl);
    s->sasl = NULL;
    log_info("%s authentication failed: %s", session_name(s), condition);
    if (!strcmp(condition, "not-authorized")) auth_note_failure(s->srv, net_conn_peer(s->conn));
    if (++s->sasl_failures >= s->srv->cfg->sasl_max_attempts)
        session_stream_error(s, "policy-violation", "too many failed authentication attempts");
}

static int sasl_step(session *s, const char *data) {
    char out[1024];
    int r = auth_sasl_step(s->sasl, data, out, sizeof out);
    if (r == AUTH_CONTINUE) {
        xml_buf *b = &s->srv->out;
        xml_buf_reset(b);
        xml_buf_printf(b, "<challenge xmlns='" NS_SASL "'>%s</challenge>", out);
        if (!b->oom) session_write(s, b->data, b->len);
        return 0;
    }
    if (r == AUTH_FAILURE) {
        sasl_failure(s, auth_sasl_condition(s->sasl));
        return s->state == ST_CLOSED;
    }
    /* the exchange holds a copy of the key: an account deleted meanwhile must not log in with it */
    accounts_refresh(s->srv);
    if (!auth_user_exists(s->srv->store, auth_sasl_user(s->sasl))) {
        sasl_failure(s, "not-authorized");
        return s->state == ST_CLOSED;
    }
    s->user = strdup(auth_sasl_user(s->sasl));
    auth_sasl_free(s->sasl);
    s->sasl = NULL;
    if (!s->user) {
        session_stream_error(s, "internal-server-error", NULL);
        return 1;
    }
    s->authed = 1;
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    if (out[0]) xml_buf_printf(b, "<success xmlns='" NS_SASL "'>%s</success>", out);
    else xml_buf_puts(b, "<success xmlns='" NS_SASL "'/>");
    if (!b->oom) session_write(s, b->data, b->len);
    log_info("%s logged in", session_name(s));
    return session_restart(s);
}

static int handle_sasl(session *s, const xml_node *n) {
    if (s->authed) {
        session_stream_error(s, "policy-violation", "already authenticated");
        return 1;
    }
    if (!strcmp(n->name, "auth")) {
        if (!sasl_allowed(s)) {
            sasl_failure(s, "encryption-required");
            return s->state == ST_CLOSED;
        }
        if (s->sasl) auth_sasl_free(s->sasl);
        s->sasl = NULL;
        if (auth_locked_out(s->srv, net_conn_peer(s->conn))) {
            /* said the same way whatever the account: the address, not the account, is locked out */
            sasl_failure(s, "temporary-auth-failure");
            return s->state == ST_CLOSED;
        }
        const char *mech = xml_attr_get(n, "mechanism");
        accounts_refresh(s->srv);
        s->sasl = mech ? auth_sasl_start(s->srv->store, mech) : NULL;
        if (!s->sasl) {
            sasl_failure(s, "invalid-mechanism");
            return s->state == ST_CLOSED;
        }
        return sasl_step(s, xml_text(n));
    }
    if (!strcmp(n->name, "response")) {
        if (!s->sasl) {
            sasl_failure(s, "malformed-request");
            return s->state == ST_CLOSED;
        }
        return sasl_step(s, xml_text(n));
    }
    if (!strcmp(n->name, "abort")) {
        sasl_failure(s, "aborted");
        return s->state == ST_CLOSED;
    }
    session_stream_error(s, "unsupported-stanza-type", NULL);
    return 1;
}

static void random_resource(char *out, size_t n) {
    char hex[13];
    random_hex(hex, 6);
    snprintf(out, n, "couplet-%s", hex);
}

static void session_unbind(session *s);

/* Resource binding (RFC 6120 §7). A second session with the same full JID replaces the first. */
static int handle_bind(session *s, const xml_node *iq, const xml_node *bind) {
    server *srv = s->srv;
    char res[JID_PART_MAX + 1];
    const xml_node *rn = xml_child(bind, "resource", NS_BIND);
    const char *want = rn ? xml_text(rn) : "";
    if (want[0]) {
        if (!jid_resource_valid(want) || strlen(want) > JID_PART_MAX) {
            send_stanza_error(s, iq, "modify", "bad-request");
            return 0;
        }
        snprintf(res, sizeof res, "%s", want);
    } else {
        random_resource(res, sizeof res);
    }
    /* the replaced session leaves first: its going may free the account entry */
    session *old = account_session(account_find(srv, s->user), res);
    if (old) session_stream_error(old, "conflict", "replaced by a new session");
    account *a = account_get(srv, s->user);
    if (!a) {
        send_stanza_error(s, iq, "wait", "resource-constraint");
        return 0;
    }
    if ((int)account_session_count(a) >= srv->cfg->max_sessions_per_account) {
        send_stanza_error(s, iq, "wait", "resource-constraint");
        account_drop_if_empty(srv, a);
        return 0;
    }
    size_t len = strlen(s->user) + strlen(srv->cfg->domain) + strlen(res) + 3;
    s->full_jid = malloc(len);
    if (!s->full_jid) {
        account_drop_if_empty(srv, a);
        session_stream_error(s, "internal-server-error", NULL);
        return 1;
    }
    snprintf(s->full_jid, len, "%s@%s/%s", s->user, srv->cfg->domain, res);
    s->acct = a;
    s->acct_next = a->sessions;
    a->sessions = s;
    s->state = ST_ACTIVE;
    xml_node *r = iq_result(s, iq);
    if (r) {
        xml_node *b = xml_add_child(srv->arena, r, "bind", NS_BIND);
        if (b) xml_add_child_text(srv->arena, b, "jid", NS_BIND, s->full_jid);
        xml_set_attr(srv->arena, r, "from", NULL);
        session_send_node(s, r);
    }
    /* the handshake is over: from now on the timer watches for idleness */
    net_conn_set_timer(s->conn, srv->cfg->idle_timeout);
    log_info("%s bound", session_name(s));
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* routing (RFC 6121 §§8, 4 without a roster)                                                           */

static void route_stanza(session *s, xml_node *st);

/* Available sessions with the highest non-negative priority (RFC 6121 §8.5.2.1.1). */
static int account_best_priority(const account *a) {
    int best = -1;
    for (const session *t = a ? a->sessions : NULL; t; t = t->acct_next)
        if (t->available && t->priority >= 0 && t->priority > best) best = t->priority;
    return best;
}

/* chat and normal go to the best sessions; headline to every available one (RFC 6121 §8.5.2.1) */
static int deliver_to_bare(server *srv, account *a, const xml_node *st) {
    int best = account_best_priority(a), n = 0, all = !strcmp(stanza_type(st), "headline");
    if (best < 0) return 0;
    for (session *t = a->sessions; t; t = t->acct_next)
        if (t->available && t->priority >= 0 && (all || t->priority == best)) {
            session_send_node(t, st);
            n++;
        }
    return n;
}

static void route_message_to_user(session *s, xml_node *st, const jid *to) {
    server *srv = s->srv;
    const char *type = stanza_type(st);
    account *a = account_find(srv, to->local);
    if (to->resource[0]) {
        session *t = account_session(a, to->resource);
        if (t) {
            session_send_node(t, st);
            return;
        }
        /* RFC 6121 §8.5.3.2.1: no such resource; groupchat bounces, headline is dropped,
         * chat and normal fall back to the bare JID. */
        if (!strcmp(type, "groupchat")) {
            send_stanza_error(s, st, "cancel", "service-unavailable");
            return;
        }
        if (!strcmp(type, "headline") || !strcmp(type, "error")) return;
    }
    if (!strcmp(type, "error")) return;
    if (!strcmp(type, "groupchat")) {
        send_stanza_error(s, st, "cancel", "service-unavailable");
        return;
    }
    if (deliver_to_bare(srv, a, st) > 0 || !strcmp(type, "headline")) return;
    /* no offline storage: the sender learns the message was not delivered */
    send_stanza_error(s, st, "cancel", "service-unavailable");
}

/* RFC 6121 §4.7.1: the types a presence may have; any other is bad-request */
static int presence_type_known(const char *type) {
    static const char *const types[] = {"", "unavailable", "subscribe", "subscribed", "unsubscribe",
                                        "unsubscribed", "probe", "error"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!strcmp(type, types[i])) return 1;
    return 0;
}

/* ---- roster = shared: every account is every account's contact, subscription both ----
 * Nothing is stored: a session keeps the last presence it broadcast (serialized once, without 'to') to
 * greet sessions that come online later and to answer probes; a broadcast walks the bound accounts. */

static void presence_remember(session *s, const xml_node *st) {
    server *srv = s->srv;
    free(s->presence);
    s->presence = NULL;
    if (!srv->cfg->roster_shared) return;
    xml_buf b;
    size_t split = 0;
    xml_buf_init(&b);
    xml_serialize_split(&b, st, XML_NS_CLIENT, &split);
    if (!b.oom) {
        s->presence = b.data;       /* the buffer becomes the session's */
        s->presence_len = (unsigned)b.len;
        s->presence_split = (unsigned)split;
    } else {
        xml_buf_free(&b);
    }
}

static void presence_send_remembered(const session *from, session *to) {
    session_write_spliced(to, to->full_jid, from->presence, from->presence_split,
                          from->presence + from->presence_split, from->presence_len - from->presence_split);
}

/* data is a presence from s serialized without 'to', split where it goes */
static void presence_to_contacts(session *s, const char *data, size_t len, size_t split) {
    server *srv = s->srv;
    for (size_t i = 0; i < srv->nbuckets; i++)
        for (account *a = srv->buckets[i]; a; a = a->hnext) {
            if (a == s->acct) continue;
            for (session *t = a->sessions; t; t = t->acct_next)
                if (t->available) session_write_spliced(t, t->full_jid, data, split, data + split, len - split);
        }
}

/* A session that just came online learns who else is (RFC 6121 §4.2.2, the probes answered at once). */
static void presence_greet(session *s) {
    server *srv = s->srv;
    for (size_t i = 0; i < srv->nbuckets; i++)
        for (account *a = srv->buckets[i]; a; a = a->hnext) {
            if (a == s->acct) continue;
            for (session *t = a->sessions; t; t = t->acct_next)
                if (t->available && t->presence) presence_send_remembered(t, s);
        }
}

static void presence_unavailable_to_contacts(session *s) {
    if (!s->srv->cfg->roster_shared || !s->acct) return;
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_puts(&b, "<presence type='unavailable' from='");
    xml_buf_escape(&b, s->full_jid, strlen(s->full_jid));
    xml_buf_puts(&b, "'");
    size_t split = b.len;
    xml_buf_puts(&b, "/>");
    if (!b.oom) presence_to_contacts(s, b.data, b.len, split);
    xml_buf_free(&b);
    free(s->presence);
    s->presence = NULL;
}

/* A presence the server sends on a contact's behalf: from the contact's bare JID to the user. */
static void presence_from_contact(session *s, const char *contact_local, const char *type) {
    server *srv = s->srv;
    char bare[2 * (JID_PART_MAX + 1)];
    snprintf(bare, sizeof bare, "%s@%s", contact_local, srv->cfg->domain);
    xml_node *p = xml_node_new(srv->arena, "presence", XML_NS_CLIENT);
    if (!p) return;
    if (type) xml_set_attr(srv->arena, p, "type", type);
    xml_set_attr(srv->arena, p, "from", bare);
    xml_set_attr(srv->arena, p, "to", s->full_jid);
    session_send_node(s, p);
}

/* A probe (RFC 6121 §4.3): the contact's available sessions, or 'unavailable' when it has none. */
static void presence_answer_probe(session *s, const jid *to) {
    int n = 0;
    account *a = account_find(s->srv, to->local);
    for (session *t = a ? a->sessions : NULL; t; t = t->acct_next)
        if (t->available && t->presence && (!to->resource[0] || !strcmp(session_resource(t), to->resource))) {
            presence_send_remembered(t, s);
            n++;
        }
    if (!n) presence_from_contact(s, to->local, "unavailable");
}

/* Subscription requests get an answer a client can show (RFC 6121 §3.1.3), never silence: with a shared
 * roster the contact is already subscribed both ways, so the server approves on its behalf; without
 * rosters nothing can be subscribed to. */
static void presence_subscription(session *s, xml_node *st, const jid *to, const char *type) {
    server *srv = s->srv;
    if (!srv->cfg->roster_shared) {
        if (!strcmp(type, "subscribe"))
            send_stanza_error_text(s, st, "cancel", "feature-not-implemented",
                                   "this server keeps no rosters (roster = empty): presence subscriptions "
                                   "are not available");
        return;
    }
    int known = auth_user_exists(srv->store, to->local) && strcmp(to->local, s->user) != 0;
    if (!strcmp(type, "probe")) {
        if (known) presence_answer_probe(s, to);
        else presence_from_contact(s, to->local, "unsubscribed");
    } else if (!strcmp(type, "subscribe")) {
        presence_from_contact(s, to->local, known ? "subscribed" : "unsubscribed");
        if (known) presence_answer_probe(s, to);
    }
    /* subscribed, unsubscribe, unsubscribed: the shared roster does not change, nothing to do */
}

/* Remember a JID we owe 'unavailable' (normalised, so Room@ and room@ are one). The list is bounded: a
 * client cannot make the server hold or walk more than DIRECTED_MAX entries. Returns -1 when full. */
#define DIRECTED_MAX 1000
static int directed_remember(session *s, const char *to) {
    unsigned n = 0;
    for (directed *d = s->directed; d; d = d->next, n++)
        if (!strcmp(d->jid, to)) return 0;
    if (n >= DIRECTED_MAX) return -1;
    size_t len = strlen(to);
    directed *d = malloc(sizeof *d + len + 1);
    if (!d) return -1;
    memcpy(d->jid, to, len + 1);
    d->next = s->directed;
    s->directed = d;
    return 0;
}

static void directed_forget(session *s, const char *to) {
    for (directed **pp = &s->directed; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->jid, to)) {
            directed *d = *pp;
            *pp = d->next;
            free(d);
            return;
        }
}

/* Presence the client addressed to someone: delivered, and remembered so that the recipient is told
 * 'unavailable' when this session ends (RFC 6121 §4.6). */
static void route_presence_directed(session *s, xml_node *st, const jid *to) {
    server *srv = s->srv;
    const char *type = stanza_type(st);
    int avail = !type[0], unavail = !strcmp(type, "unavailable");
    int muc = !strcmp(to->domain, srv->cfg->muc_domain);
    char norm[3 * (JID_PART_MAX + 1)];
    if (jid_full(to, norm, sizeof norm) < 0) return;
    if (!muc && !avail && !unavail && strcmp(type, "error") != 0) {
        presence_subscription(s, st, to, type);
        return;
    }
    if (!muc && !auth_user_exists(srv->store, to->local)) return;  /* nobody there to tell */
    if (avail && directed_remember(s, norm) < 0) {
        send_stanza_error(s, st, "wait", "resource-constraint");
        return;
    }
    if (unavail) directed_forget(s, norm);
    if (muc) {
        muc_handle_stanza(srv->muc, st);
        return;
    }
    account *a = account_find(srv, to->local);
    if (to->resource[0]) {
        session *t = account_session(a, to->resource);
        if (t) session_send_node(t, st);
        return;
    }
    for (session *t = a ? a->sessions : NULL; t; t = t->acct_next)
        if (t->available) session_send_node(t, st);
}

static void presence_reflect(session *s, const xml_node *st) {
    for (session *t = s->acct->sessions; t; t = t->acct_next)
        if (t->available || t == s) session_send_node(t, st);
}

static void send_unavailable_to_directed(session *s) {
    server *srv = s->srv;
    while (s->directed) {
        directed *d = s->directed;
        s->directed = d->next;
        xml_node *p = xml_node_new(srv->arena, "presence", XML_NS_CLIENT);
        if (p) {
            xml_set_attr(srv->arena, p, "type", "unavailable");
            xml_set_attr(srv->arena, p, "from", s->full_jid);
            xml_set_attr(srv->arena, p, "to", d->jid);
            route_stanza(s, p);
        }
        free(d);
    }
}

static void route_presence_broadcast(session *s, xml_node *st) {
    const char *type = stanza_type(st);
    if (!type[0]) {
        const xml_node *pr = xml_child(st, "priority", XML_NS_CLIENT);
        long p = pr ? strtol(xml_text(pr), NULL, 10) : 0;
        int initial = !s->available;
        s->priority = (signed char)(p < -128 ? -128 : p > 127 ? 127 : p);
        s->available = 1;
        presence_reflect(s, st);
        presence_remember(s, st);
        if (s->presence) presence_to_contacts(s, s->presence, s->presence_len, s->presence_split);
        if (initial && s->srv->cfg->roster_shared) presence_greet(s);
    } else if (!strcmp(type, "unavailable")) {
        presence_reflect(s, st);
        s->available = 0;
        presence_unavailable_to_contacts(s);
        send_unavailable_to_directed(s);
    }
    /* other types without 'to' (subscriptions, probes) are addressed to nobody */
}

/* ---- the server's own IQs, and those it answers for an account: one table each ----
 * disco#info is generated from the same table that dispatches, so nothing is answered without being
 * advertised, or advertised without being answered. */

enum { IQ_GET = 1, IQ_SET = 2 };

typedef void (*iq_handler)(session *s, const xml_node *iq, const xml_node *q, const jid *to);

typedef struct iq_route {
    const char *ns, *name;      /* the payload */
    unsigned char types;        /* IQ_GET | IQ_SET */
    unsigned char own_only;     /* only for the account itself, not for other users asking about it */
    iq_handler handle;
    const char *feature;        /* advertised in disco#info (NULL: a stream feature, not a disco one) */
} iq_route;

static void add_feature(server *srv, xml_node *q, const char *var) {
    xml_node *f = xml_add_child(srv->arena, q, "feature", NULL);
    if (f) xml_set_attr(srv->arena, f, "var", var);
}

static void add_identity(server *srv, xml_node *q, const char *category, const char *type, const char *name) {
    xml_node *id = xml_add_child(srv->arena, q, "identity", NULL);
    if (!id) return;
    xml_set_attr(srv->arena, id, "category", category);
    xml_set_attr(srv->arena, id, "type", type);
    if (name) xml_set_attr(srv->arena, id, "name", name);
}

static xml_node *iq_result_query(session *s, const xml_node *iq, const char *name, const char *ns) {
    xml_node *r = iq_result(s, iq);
    return r ? xml_add_child(s->srv->arena, r, name, ns) : NULL;
}

static void send_result(session *s, xml_node *child_or_iq) {
    xml_node *root = child_or_iq;
    while (root && root->parent) root = root->parent;
    if (root) session_send_node(s, root);
}

static const iq_route *iq_route_find(const iq_route *table, const xml_node *iq, const xml_node *q) {
    unsigned type = !strcmp(stanza_type(iq), "get") ? IQ_GET : IQ_SET;
    for (const iq_route *r = table; r->ns; r++)
        if ((r->types & type) && !strcmp(q->ns, r->ns) && !strcmp(q->name, r->name)) return r;
    return NULL;
}

/* disco#info from a table: the identity, then each row's feature once, in table order */
static void disco_info_from(session *s, const xml_node *iq, const iq_route *table, const char *category,
                            const char *type, const char *name) {
    server *srv = s->srv;
    xml_node *r = iq_result_query(s, iq, "query", NS_DISCO_INFO);
    if (!r) return;
    add_identity(srv, r, category, type, name);
    for (const iq_route *row = table; row->ns; row++) {
        int dup = 0;
        for (const iq_route *before = table; before < row && !dup; before++)
            dup = before->feature && row->feature && !strcmp(before->feature, row->feature);
        if (row->feature && !dup) add_feature(srv, r, row->feature);
    }
    send_result(s, r);
}

static void iq_ping(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    send_result(s, iq_result(s, iq));
}

/* we publish no nodes, so a query naming one is item-not-found (XEP-0030 §3.1) */
static int disco_node_refused(session *s, const xml_node *iq, const xml_node *q) {
    if (!xml_attr_get(q, "node")) return 0;
    send_stanza_error(s, iq, "cancel", "item-not-found");
    return 1;
}

static const iq_route server_iqs[];
static const iq_route account_iqs[];

static void iq_server_disco_info(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    if (!disco_node_refused(s, iq, q)) disco_info_from(s, iq, server_iqs, "server", "im", "Couplet");
}

static void iq_server_disco_items(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    server *srv = s->srv;
    if (disco_node_refused(s, iq, q)) return;
    xml_node *r = iq_result_query(s, iq, "query", NS_DISCO_ITEMS);
    if (!r) return;
    xml_node *item = xml_add_child(srv->arena, r, "item", NULL);
    if (item) {
        xml_set_attr(srv->arena, item, "jid", srv->cfg->muc_domain);
        xml_set_attr(srv->arena, item, "name", "Chatrooms");
    }
    send_result(s, r);
}

static void iq_server_version(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    xml_node *r = iq_result_query(s, iq, "query", NS_VERSION);
    if (!r) return;
    xml_add_child_text(s->srv->arena, r, "name", NULL, "Couplet");
    xml_add_child_text(s->srv->arena, r, "version", NULL, COUPLET_VERSION);
    send_result(s, r);
}

static void iq_server_time(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    char utc[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(utc, sizeof utc, "%Y-%m-%dT%H:%M:%SZ", &tm);
    xml_node *r = iq_result_query(s, iq, "time", NS_TIME);
    if (!r) return;
    xml_add_child_text(s->srv->arena, r, "tzo", NULL, "+00:00");
    xml_add_child_text(s->srv->arena, r, "utc", NULL, utc);
    send_result(s, r);
}

static void iq_server_uptime(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    char secs[32];
    snprintf(secs, sizeof secs, "%lld", (long long)(time(NULL) - s->srv->started));
    xml_node *r = iq_result_query(s, iq, "query", NS_LAST);
    if (!r) return;
    xml_set_attr(s->srv->arena, r, "seconds", secs);
    send_result(s, r);
}

/* ---- the roster (RFC 6121 §2) without storage: empty, or every account of the domain ---- */

static void roster_add_item(void *ud, const char *local) {
    session *s = ((void **)ud)[0];
    xml_node *q = ((void **)ud)[1];
    server *srv = s->srv;
    if (!strcmp(local, s->user)) return;
    char bare[2 * (JID_PART_MAX + 1)];
    snprintf(bare, sizeof bare, "%s@%s", local, srv->cfg->domain);
    xml_node *item = xml_add_child(srv->arena, q, "item", NULL);
    if (!item) return;
    xml_set_attr(srv->arena, item, "jid", bare);
    xml_set_attr(srv->arena, item, "subscription", "both");
}

static void roster_get(session *s, const xml_node *iq) {
    xml_node *q = iq_result_query(s, iq, "query", NS_ROSTER);
    if (!q) return;
    if (s->srv->cfg->roster_shared) {
        void *ud[2] = {s, q};
        auth_user_foreach(s->srv->store, roster_add_item, ud);
    }
    s->roster_requested = 1;
    send_result(s, q);
}

/* A roster set can only agree with what the server computes: nothing is stored per user. */
static void roster_set(session *s, const xml_node *iq, const xml_node *q) {
    server *srv = s->srv;
    const xml_node *item = xml_child(q, "item", NS_ROSTER);
    if (!item || xml_next_child(item, "item", NS_ROSTER) || !xml_attr_get(item, "jid")) {
        send_stanza_error(s, iq, "modify", "bad-request");   /* RFC 6121 §2.3.3: exactly one item */
        return;
    }
    if (!srv->cfg->roster_shared) {
        send_stanza_error_text(s, iq, "cancel", "not-allowed",
                               "this server keeps no rosters (roster = empty): contacts cannot be added");
        return;
    }
    jid c;
    const char *sub = xml_attr_get(item, "subscription");
    int known = jid_parse(xml_attr_get(item, "jid"), &c) == 0 && !c.resource[0] &&
                !strcmp(c.domain, srv->cfg->domain) && strcmp(c.local, s->user) != 0 &&
                auth_user_exists(srv->store, c.local);
    if (sub && !strcmp(sub, "remove"))
        send_stanza_error_text(s, iq, "cancel", "not-allowed",
                               "contacts are shared by the server (roster = shared) and cannot be removed");
    else if (!known)
        send_stanza_error_text(s, iq, "cancel", "not-allowed",
                               "with roster = shared every account of this server is a contact, and only they");
    else
        send_result(s, iq_result(s, iq));   /* already there, as both: nothing changes */
}

static void iq_roster(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    if (!strcmp(stanza_type(iq), "get")) roster_get(s, iq);
    else roster_set(s, iq, q);
}

static void iq_session(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    send_result(s, iq_result(s, iq));   /* legacy session establishment: nothing to do (RFC 6121 §C) */
}

static void iq_account_disco_info(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    if (!disco_node_refused(s, iq, q)) disco_info_from(s, iq, account_iqs, "account", "registered", NULL);
}

static void iq_account_disco_items(session *s, const xml_node *iq, const xml_node *q, const jid *to) {
    if (!disco_node_refused(s, iq, q)) send_result(s, iq_result_query(s, iq, "query", NS_DISCO_ITEMS));
}

/* IQs to the server's domain */
static const iq_route server_iqs[] = {
    {NS_DISCO_INFO, "query", IQ_GET, 0, iq_server_disco_info, NS_DISCO_INFO},
    {NS_DISCO_ITEMS, "query", IQ_GET, 0, iq_server_disco_items, NS_DISCO_ITEMS},
    {NS_PING, "ping", IQ_GET, 0, iq_ping, NS_PING},
    {NS_VERSION, "query", IQ_GET, 0, iq_server_version, NS_VERSION},
    {NS_TIME, "time", IQ_GET, 0, iq_server_time, NS_TIME},
    {NS_LAST, "query", IQ_GET, 0, iq_server_uptime, NS_LAST},
    {NS_ROSTER, "query", IQ_GET | IQ_SET, 0, iq_roster, NS_ROSTER},
    {NS_SESSION, "session", IQ_GET | IQ_SET, 0, iq_session, NULL},
    {NULL, NULL, 0, 0, NULL, NULL},
};

/* IQs to an account's bare JID (or without 'to': the sender's own), answered by the server on the
 * account's behalf (RFC 6120 §10.5.4). Everything else a client asks at login (vcard-temp, private
 * storage, bookmarks, blocking, carbons, PEP, MAM) is a service this server does not offer:
 * service-unavailable, the answer each of those XEPs gives for a server without it. */
static const iq_route account_iqs[] = {
    {NS_ROSTER, "query", IQ_GET | IQ_SET, 1, iq_roster, NULL},
    {NS_SESSION, "session", IQ_GET | IQ_SET, 1, iq_session, NULL},
    {NS_DISCO_INFO, "query", IQ_GET, 0, iq_account_disco_info, NS_DISCO_INFO},
    {NS_DISCO_ITEMS, "query", IQ_GET, 0, iq_account_disco_items, NS_DISCO_ITEMS},
    {NS_PING, "ping", IQ_GET, 0, iq_ping, NS_PING},
    {NULL, NULL, 0, 0, NULL, NULL},
};

static void iq_dispatch(session *s, const iq_route *table, const xml_node *iq, const xml_node *q, const jid *to) {
    const iq_route *r = iq_route_find(table, iq, q);
    if (r && r->own_only && (!to->local[0] || strcmp(to->local, s->user) != 0))
        send_stanza_error(s, iq, "auth", "forbidden");     /* another account's roster (RFC 6121 §2.1.5) */
    else if (r) r->handle(s, iq, q, to);
    else send_stanza_error(s, iq, "cancel", "service-unavailable");
}

static void route_iq(session *s, xml_node *st, const jid *to, int has_to) {
    server *srv = s->srv;
    const char *type = stanza_type(st);
    int request = !strcmp(type, "get") || !strcmp(type, "set");
    int response = !strcmp(type, "result") || !strcmp(type, "error");
    if (!request && !response) {
        send_stanza_error(s, st, "modify", "bad-request");
        return;
    }
    if (!xml_attr_get(st, "id")) {
        if (request) send_stanza_error(s, st, "modify", "bad-request");
        return;
    }
    xml_node *q = request ? iq_payload(st) : NULL;
    if (request && !q) {
        send_stanza_error(s, st, "modify", "bad-request");
        return;
    }
    if (has_to && to->local[0] && to->resource[0]) {
        session *t = account_session(account_find(srv, to->local), to->resource);
        if (t) session_send_node(t, st);
        else if (request) send_stanza_error(s, st, "cancel", "service-unavailable");
        return;
    }
    if (!request) return;   /* results and errors to the server or a bare JID end here */
    if (!has_to) {
        /* no 'to': the account's own bare JID (RFC 6120 §10.3.3) */
        jid self;
        self.resource[0] = 0;
        snprintf(self.local, sizeof self.local, "%s", s->user);
        snprintf(self.domain, sizeof self.domain, "%s", srv->cfg->domain);
        iq_dispatch(s, account_iqs, st, q, &self);
        return;
    }
    if (!to->local[0]) {
        if (to->resource[0]) send_stanza_error(s, st, "cancel", "service-unavailable");
        else iq_dispatch(s, server_iqs, st, q, to);
        return;
    }
    if (!auth_user_exists(srv->store, to->local)) {
        send_stanza_error(s, st, "cancel", "service-unavailable");
        return;
    }
    iq_dispatch(s, account_iqs, st, q, to);
}

static void route_to_local(session *s, xml_node *st, const jid *to, int has_to) {
    server *srv = s->srv;
    if (!strcmp(st->name, "iq")) {
        route_iq(s, st, to, has_to);
        return;
    }
    if (!strcmp(st->name, "presence")) {
        if (!has_to) route_presence_broadcast(s, st);
        else if (to->local[0]) route_presence_directed(s, st, to);
        return;     /* presence to the server itself has nothing to do */
    }
    /* message */
    if (!has_to || !to->local[0]) {
        if (!has_to) {   /* RFC 6121 §8.1.1.1: no 'to' means the sender's own bare JID */
            deliver_to_bare(srv, s->acct, st);
        }
        return;
    }
    if (!auth_user_exists(srv->store, to->local)) {
        send_stanza_error(s, st, "cancel", "service-unavailable");
        return;
    }
    route_message_to_user(s, st, to);
}

static void route_stanza(session *s, xml_node *st) {
    server *srv = s->srv;
    const char *to_text = xml_attr_get(st, "to");
    jid to;
    to.local[0] = to.domain[0] = to.resource[0] = 0;
    if (to_text && jid_parse(to_text, &to) < 0) {
        send_stanza_error(s, st, "modify", "jid-malformed");
        return;
    }
    if (!strcmp(st->name, "presence") && !presence_type_known(stanza_type(st))) {
        send_stanza_error_text(s, st, "modify", "bad-request", "unknown presence type");
        return;
    }
    /* the sender is who the stream says it is, whatever 'from' the client wrote (RFC 6120 §8.1.2.1) */
    xml_set_attr(srv->arena, st, "from", s->full_jid);
    if (!to_text || !strcmp(to.domain, srv->cfg->domain)) {
        route_to_local(s, st, &to, to_text != NULL);
        return;
    }
    if (!strcmp(to.domain, srv->cfg->muc_domain)) {
        if (!strcmp(st->name, "presence")) route_presence_directed(s, st, &to);
        else muc_handle_stanza(srv->muc, st);
        return;
    }
    /* no server-to-server links */
    send_stanza_error(s, st, "cancel", "remote-server-not-found");
}

/* ---------------------------------------------------------------------------------------------------- */
/* the parser's stanza callback: what a stanza means depends on the stream's state                      */

static int on_stanza(void *ud, xml_node *n) {
    session *s = ud;
    server *srv = s->srv;
    int stop = 0;
    xml_arena_reset(srv->arena);
    if (s->state == ST_CLOSED) return 1;
    if (log_level >= LOG_DEBUG) log_stanza_in(s, n);
    if (!strcmp(n->ns, XML_NS_STREAM) && !strcmp(n->name, "error")) {
        /* the peer is ending the stream: close ours, never answer an error with an error (RFC 6120 §4.9) */
        const xml_node *cond = xml_child(n, NULL, NS_STREAMS);
        log_info("%s sent stream error %s", session_name(s), cond ? cond->name : "(none)");
        session_close_stream(s);
        return 1;
    }
    if (!strcmp(n->ns, NS_TLS) && !strcmp(n->name, "starttls"))
        return handle_starttls(s);
    if (!strcmp(n->ns, NS_SASL))
        return handle_sasl(s, n);
    if (!is_stanza(n)) {
        session_stream_error(s, "unsupported-stanza-type", NULL);   /* RFC 6120 §4.9.3.24, any namespace */
        return 1;
    }
    if (!s->authed) {
        session_stream_error(s, "not-authorized", NULL);
        return 1;
    }
    if (s->state != ST_ACTIVE) {
        const xml_node *b = !strcmp(n->name, "iq") && !strcmp(stanza_type(n), "set") ? iq_payload(n) : NULL;
        if (b && !strcmp(b->name, "bind") && !strcmp(b->ns, NS_BIND) && xml_attr_get(n, "id"))
            stop = handle_bind(s, n, b);
        else session_stream_error(s, "not-authorized", "bind a resource first");
        return stop || s->state == ST_CLOSED;
    }
    route_stanza(s, n);
    return s->state == ST_CLOSED;
}

/* ---------------------------------------------------------------------------------------------------- */
/* connections                                                                                          */

static const xml_events parser_events = {on_stream_open, on_stanza, on_stream_close};

static const char *parser_error_condition(int status) {
    switch (status) {
    case XML_ERR_RESTRICTED: return "restricted-xml";
    case XML_ERR_LIMIT: return "policy-violation";
    /* an unbound prefix breaks XML-NAMES: not-well-formed (RFC 6120 §4.9.3.13), as expat-based servers say */
    case XML_ERR_BAD_NAMESPACE: return "not-well-formed";
    case XML_ERR_ENCODING: return "unsupported-encoding";
    case XML_ERR_NOMEM: return "internal-server-error";
    case XML_ERR_NESTED_STREAM: return "unsupported-stanza-type";
    default: return "not-well-formed";
    }
}

/* The admin socket's connections (net_conn_is_local) have their own handlers, in the admin block below. */
typedef struct admin_link admin_link;
static void *admin_link_open(server *srv, net_conn *c);
static void admin_link_data(admin_link *l, const char *data, size_t len);
static void admin_link_timer(admin_link *l);
static void admin_link_close(admin_link *l, const char *reason);

static void *on_open(void *ud, net_conn *c, int tag) {
    server *srv = ud;
    if (srv->stopping) return NULL;
    if (tag == TAG_ADMIN) return admin_link_open(srv, c);
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza = srv->cfg->max_stanza_size;
    lim.max_depth = srv->cfg->max_depth;
    lim.max_attrs = srv->cfg->max_attrs;
    lim.max_name = srv->cfg->max_name_len;
    s->parser = xml_parser_new(&lim, &parser_events, s);
    if (!s->parser) {
        free(s);
        return NULL;
    }
    s->srv = srv;
    s->conn = c;
    s->id = ++srv->last_id;
    s->since = net_now(srv->loop);
    s->tls = tag == TAG_DIRECT_TLS;
    s->next = srv->sessions;
    if (srv->sessions) srv->sessions->prev = s;
    srv->sessions = s;
    net_conn_set_timer(c, srv->cfg->handshake_timeout);
    log_info("%s connected%s", session_name(s), tag == TAG_DIRECT_TLS ? " (direct TLS)" : "");
    return s;
}

static void on_data(void *ud, net_conn *c, const char *data, size_t len) {
    if (net_conn_is_local(c)) {
        admin_link_data(ud, data, len);
        return;
    }
    session *s = ud;
    while (len > 0 && s->state != ST_CLOSED && !s->dead) {
        size_t used = 0;
        int r = xml_parser_feed(s->parser, data, len, &used);
        if (r == XML_OK) break;
        if (r == XML_STOPPED) {
            /* plaintext after <starttls/> is an injection attempt, never the new stream */
            if (s->starttls_now) {
                s->starttls_now = 0;
                break;
            }
            data += used;
            len -= used;
            continue;
        }
        session_stream_error(s, parser_error_condition(r), xml_status_str(r));
        break;
    }
}

/* Leave the network: presence goes out as if the client had sent 'unavailable', the account forgets
 * this session. Idempotent; the net_conn may still be flushing. */
static void session_end(session *s) {
    if (s->dead) return;
    if (s->acct) {
        if (s->available || s->directed) {
            xml_node *p = xml_node_new(s->srv->arena, "presence", XML_NS_CLIENT);
            if (p) {
                xml_set_attr(s->srv->arena, p, "type", "unavailable");
                xml_set_attr(s->srv->arena, p, "from", s->full_jid);
                for (session *t = s->acct->sessions; t; t = t->acct_next)
                    if (t != s && t->available) session_send_node(t, p);
            }
            if (s->available) presence_unavailable_to_contacts(s);
            s->available = 0;
            send_unavailable_to_directed(s);
        }
        session_unbind(s);
    }
    s->dead = 1;
}

static void session_unbind(session *s) {
    account *a = s->acct;
    if (!a) return;
    for (session **pp = &a->sessions; *pp; pp = &(*pp)->acct_next)
        if (*pp == s) {
            *pp = s->acct_next;
            break;
        }
    s->acct = NULL;
    account_drop_if_empty(s->srv, a);
}

static void session_free(session *s) {
    server *srv = s->srv;
    if (s->prev) s->prev->next = s->next;
    else srv->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    while (s->directed) {
        directed *d = s->directed;
        s->directed = d->next;
        free(d);
    }
    xml_parser_free(s->parser);
    auth_sasl_free(s->sasl);
    free(s->presence);
    free(s->full_jid);
    free(s->user);
    free(s);
}

static void on_close(void *ud, net_conn *c, const char *reason) {
    if (net_conn_is_local(c)) {
        admin_link_close(ud, reason);
        return;
    }
    session *s = ud;
    log_info("%s %s: %s", session_name(s), s->full_jid ? "logged out" : "disconnected", reason);
    xml_arena_reset(s->srv->arena);
    session_end(s);
    session_free(s);
}

/* May run in the middle of a broadcast, so it only writes the error: on_close does the rest. */
static void on_overflow(void *ud, net_conn *c) {
    if (net_conn_is_local(c)) {
        log_warn("admin socket: a client stopped reading; closing it");
        return;
    }
    session *s = ud;
    log_warn("%s stopped reading: output bound passed", session_name(s));
    if (!s->dead && s->state != ST_CLOSED)
        session_puts(s, "<stream:error><policy-violation xmlns='" NS_STREAMS "'/></stream:error></stream:stream>");
    s->state = ST_CLOSED;
}

static void on_timer(void *ud, net_conn *c, time_t now) {
    if (net_conn_is_local(c)) {
        admin_link_timer(ud);
        return;
    }
    session *s = ud;
    server *srv = s->srv;
    if (s->state == ST_CLOSED || s->dead) return;
    if (s->state != ST_ACTIVE) {
        session_stream_error(s, "connection-timeout", "no session was established in time");
        return;
    }
    time_t idle = now - net_conn_last_input(c);
    if (idle >= srv->cfg->idle_timeout) {
        /* a whitespace keepalive (RFC 6120 §4.6.1): lets TCP find a dead peer */
        session_puts(s, " ");
        net_conn_set_timer(c, srv->cfg->idle_timeout);
    } else {
        net_conn_set_timer(c, (int)(srv->cfg->idle_timeout - idle));
    }
}

static net_options server_net_options(const config *cfg) {
    net_options o = {.max_output = cfg->max_output, .max_connections = cfg->max_connections,
                     .max_per_ip = cfg->max_connections_per_ip, .read_rate = cfg->max_read_rate,
                     .read_burst = cfg->max_read_burst};
    return o;
}

/* SIGHUP: read the configuration file again. A bad file changes nothing. What the running process cannot
 * change (addresses, ports, domains, data directory) keeps its old value until a restart; everything else,
 * the TLS certificate included, applies to what happens from now on, without dropping a session. */
static muc_config muc_config_of(const config *cfg) {
    muc_config mc = {
        .domain = cfg->muc_domain, .server_domain = cfg->domain, .data_dir = cfg->data_dir,
        .create_rooms = cfg->muc_create, .max_rooms = cfg->muc_max_rooms,
        .max_occupants = cfg->muc_max_occupants, .max_history = cfg->muc_max_history,
        .max_rooms_per_user = cfg->muc_max_rooms_per_user,
        .default_history = cfg->muc_default_history, .default_persistent = cfg->muc_default_persistent,
        .default_public = cfg->muc_default_public,
    };
    return mc;
}

static void server_reload(server *srv) {
    config next;
    char err[512];
    if (!srv->config_path) {
        log_info("SIGHUP: running on the embedded defaults, nothing to reload");
        return;
    }
    config_defaults(&next);
    if (config_load(&next, srv->config_path, err, sizeof err) < 0) {
        log_err("SIGHUP: %s; keeping the running configuration", err);
        return;
    }
    config *cur = &srv->conf;
    if (strcmp(next.domain, cur->domain) || strcmp(next.muc_domain, cur->muc_domain) ||
        strcmp(next.bind, cur->bind) || next.c2s_port != cur->c2s_port || next.c2s_tls_port != cur->c2s_tls_port ||
        strcmp(next.data_dir, cur->data_dir) || next.defer_accept != cur->defer_accept)
        log_warn("SIGHUP: domains, addresses, ports and data_dir change only with a restart");
    memcpy(next.domain, cur->domain, sizeof next.domain);
    memcpy(next.muc_domain, cur->muc_domain, sizeof next.muc_domain);
    memcpy(next.bind, cur->bind, sizeof next.bind);
    memcpy(next.data_dir, cur->data_dir, sizeof next.data_dir);
    next.c2s_port = cur->c2s_port;
    next.c2s_tls_port = cur->c2s_tls_port;
    next.defer_accept = cur->defer_accept;
    if (net_tls_available(srv->loop)) {
        const char *names[] = {next.domain, next.muc_domain, NULL};
        if (net_tls_reload(srv->loop, next.tls_cert, next.tls_key, next.data_dir, names) < 0) {
            log_err("SIGHUP: the TLS certificate could not be loaded; keeping the running configuration");
            return;
        }
    }
    *cur = next;
    log_level = cur->log_level;
    net_options o = server_net_options(cur);
    net_set_options(srv->loop, &o);
    muc_config mc = muc_config_of(cur);
    muc_service_set_config(srv->muc, &mc);
    log_info("SIGHUP: configuration reloaded from %s", srv->config_path);
}

static void on_signal(void *ud, int signo) {
    server *srv = ud;
    if (signo == SIGHUP) {
        server_reload(srv);
        return;
    }
    log_info("signal %d: closing every stream", signo);
    srv->stopping = 1;
    for (session *s = srv->sessions; s; s = s->next) {
        if (s->state == ST_CLOSED || s->dead) continue;
        session_stream_error(s, "system-shutdown", NULL);
    }
    if (muc_service_flush(srv->muc) < 0) log_err("could not persist rooms at shutdown");
    net_loop_stop(srv->loop);
}

/* ---------------------------------------------------------------------------------------------------- */
/* the MUC service's way out                                                                            */

static int muc_deliver(void *ud, const char *to, const char *head, size_t hl, const char *tail, size_t tl) {
    server *srv = ud;
    jid j;
    if (jid_parse(to, &j) < 0 || strcmp(j.domain, srv->cfg->domain) != 0) return -1;
    account *a = account_find(srv, j.local);
    if (j.resource[0]) {
        session *t = account_session(a, j.resource);
        if (!t || t->dead || t->state == ST_CLOSED) return -1;
        session_write_spliced(t, to, head, hl, tail, tl);
        return 0;
    }
    int best = account_best_priority(a), n = 0;
    for (session *t = a ? a->sessions : NULL; best >= 0 && t; t = t->acct_next)
        if (t->available && t->priority == best) {
            session_write_spliced(t, to, head, hl, tail, tl);
            n++;
        }
    return n ? 0 : -1;
}

static int muc_is_admin(void *ud, const char *bare) {
    server *srv = ud;
    size_t n = strlen(bare);
    for (const char *p = srv->cfg->admins; (p = strstr(p, bare)) != NULL; p += n)
        if ((p == srv->cfg->admins || p[-1] == ' ' || p[-1] == ',') && (p[n] == 0 || p[n] == ' ' || p[n] == ','))
            return 1;
    return 0;
}

/* ---- admin socket: the admin_host callbacks ----
 * admin.c parses the lines and formats the answers; here are the facts it reports and the actions it asks
 * for. Only root and the server's own user are served (SO_PEERCRED at connect), whatever the file mode. */

#define ADMIN_MAX_LINKS 16      /* admin connections at once */
#define ADMIN_LINE_TIMEOUT 10   /* seconds of silence allowed in the middle of a line */
#define ADMIN_IDLE_TIMEOUT 600  /* seconds an admin connection may wait between commands */

struct admin_link {
    server *srv;
    net_conn *conn;
    admin_conn *a;
    admin_link *prev, *next;
};

static unsigned long long resident_bytes(void) {
    unsigned long long pages = 0, resident = 0;
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    int n = fscanf(f, "%llu %llu", &pages, &resident);
    fclose(f);
    return n == 2 && page > 0 ? resident * (unsigned long long)page : 0;
}

static void admin_status_cb(void *ud, admin_status *st) {
    server *srv = ud;
    st->version = COUPLET_VERSION;
    st->started = srv->started;
    st->now = time(NULL);
    for (session *s = srv->sessions; s; s = s->next) {
        if (s->dead) continue;
        st->connections++;
        if (!s->full_jid) st->negotiating++;
        else st->sessions++;
        if (net_conn_is_tls(s->conn)) st->encrypted++;
    }
    st->accounts = srv->naccounts;
    st->admin_connections = srv->nadmins;
    st->rooms = muc_room_count(srv->muc);
    st->rss_bytes = resident_bytes();
}

static void admin_sessions_cb(void *ud, int (*each)(void *ctx, const admin_session *s), void *ctx) {
    server *srv = ud;
    for (session *s = srv->sessions; s; s = s->next) {
        if (s->dead || !s->full_jid) continue;
        admin_session v = {s->full_jid, net_conn_peer(s->conn), net_conn_tls_version(s->conn), s->since};
        if (each(ctx, &v)) return;
    }
}

/* A full JID ends that session; a bare JID ends every stream its account authenticated, bound or not yet,
 * so that nothing logged in with an old password survives a "passwd --logout". */
static long admin_kick_cb(void *ud, const char *text, const char *reason, char *err, size_t errlen) {
    server *srv = ud;
    jid *j = malloc(sizeof *j);
    long n = 0;
    if (!j) return snprintf(err, errlen, "out of memory"), -1;
    if (jid_parse(text, j) < 0 || !j->local[0] || strcmp(j->domain, srv->cfg->domain)) {
        snprintf(err, errlen, "'%.300s' is not a JID of this server's domain %s", text, srv->cfg->domain);
        free(j);
        return -1;
    }
    for (session *s = srv->sessions, *next; s; s = next) {
        next = s->next;     /* ending a session never frees it: on_close does, from the loop */
        if (s->dead || s->state == ST_CLOSED || !s->user || strcmp(s->user, j->local)) continue;
        if (j->resource[0] && (!s->full_jid || strcmp(session_resource(s), j->resource))) continue;
        log_info("%s kicked through the admin socket", session_name(s));
        session_stream_error(s, "policy-violation", reason);
        n++;
    }
    xml_arena_reset(srv->arena);    /* the unavailable presences built for the ended sessions */
    if (j->resource[0] && n == 0) {
        snprintf(err, errlen, "no session %.300s", text);
        n = -1;
    }
    free(j);
    return n;
}

typedef struct admin_walk {
    int (*each_room)(void *ctx, const admin_room *r);
    int (*each_occupant)(void *ctx, const admin_occupant *o);
    void *ctx;
} admin_walk;

static void admin_room_copy(const muc_room_view *v, admin_room *r) {
    *r = (admin_room){v->jid, v->name, v->description, v->subject, v->occupants, v->max_users, v->history,
                      v->persistent, v->public_room, v->password, v->members_only, v->moderated, v->jids_public};
}

static int admin_room_one(void *ud, const muc_room_view *v) {
    admin_walk *w = ud;
    admin_room r;
    admin_room_copy(v, &r);
    return w->each_room(w->ctx, &r);
}

static int admin_occupant_one(void *ud, const muc_occupant_view *v) {
    admin_walk *w = ud;
    admin_occupant o = {v->nick, v->bare_jid, v->role, v->affiliation, v->sessions};
    return w->each_occupant(w->ctx, &o);
}

static void admin_rooms_cb(void *ud, int (*each)(void *ctx, const admin_room *r), void *ctx) {
    server *srv = ud;
    admin_walk w = {.each_room = each, .ctx = ctx};
    muc_rooms_foreach(srv->muc, admin_room_one, &w);
}

static int admin_room_info_cb(void *ud, const char *name, admin_room *out) {
    server *srv = ud;
    muc_room_view v;
    if (muc_room_view_get(srv->muc, name, &v) < 0) return -1;
    admin_room_copy(&v, out);
    return 0;
}

static void admin_room_occupants_cb(void *ud, const char *name, int (*each)(void *ctx, const admin_occupant *o),
                                    void *ctx) {
    server *srv = ud;
    admin_walk w = {.each_occupant = each, .ctx = ctx};
    muc_room_occupants_foreach(srv->muc, name, admin_occupant_one, &w);
}

static int admin_destroy_cb(void *ud, const char *name, const char *reason, char *err, size_t errlen) {
    server *srv = ud;
    if (muc_room_destroy_by_name(srv->muc, name, reason) < 0) {
        snprintf(err, errlen, "no room %.300s", name);
        return -1;
    }
    log_info("room %s destroyed through the admin socket", name);
    return 0;
}

/* Exactly what SIGHUP does; the file is read once more first only to tell the client what was wrong. */
static int admin_reload_cb(void *ud, char *msg, size_t msglen) {
    server *srv = ud;
    config probe;
    char err[512];
    int rc = 0;
    if (!srv->config_path) {
        snprintf(msg, msglen, "running on the embedded defaults: no configuration file to read again");
    } else {
        config_defaults(&probe);
        if (config_load(&probe, srv->config_path, err, sizeof err) < 0) {
            snprintf(msg, msglen, "%s; the running configuration stays", err);
            rc = -1;
        } else {
            snprintf(msg, msglen, "configuration read again from %s (details in the log)", srv->config_path);
        }
    }
    on_signal(srv, SIGHUP);
    return rc;
}

static void admin_stop_cb(void *ud) {
    server *srv = ud;
    log_info("stop requested through the admin socket");
    on_signal(srv, SIGTERM);
}

static admin_host admin_host_of(server *srv) {
    admin_host h = {.ud = srv, .status = admin_status_cb, .sessions = admin_sessions_cb, .kick = admin_kick_cb,
                    .rooms = admin_rooms_cb, .room_info = admin_room_info_cb,
                    .room_occupants = admin_room_occupants_cb, .destroy = admin_destroy_cb,
                    .reload = admin_reload_cb, .stop = admin_stop_cb};
    return h;
}

/* what admin.c produced goes out; ADMIN_CLOSE closes after it */
static void admin_link_flush(admin_link *l, int close) {
    size_t len;
    const char *out = admin_conn_output(l->a, &len);
    if (len && net_conn_write(l->conn, out, len) < 0) close = ADMIN_CLOSE;
    if (close == ADMIN_CLOSE) net_conn_close(l->conn);
    else net_conn_set_timer(l->conn, admin_conn_partial(l->a) ? ADMIN_LINE_TIMEOUT : ADMIN_IDLE_TIMEOUT);
}

static void *admin_link_open(server *srv, net_conn *c) {
    uid_t uid = (uid_t)-1;
    int known = net_conn_peer_cred(c, &uid) == 0;
    if (srv->nadmins >= ADMIN_MAX_LINKS) {
        log_warn("admin socket: %u connections already, refusing another", srv->nadmins);
        return NULL;
    }
    admin_link *l = calloc(1, sizeof *l);
    admin_host h = admin_host_of(srv);
    if (!l || !(l->a = admin_conn_new(&h))) {
        free(l);
        return NULL;
    }
    l->srv = srv;
    l->conn = c;
    l->next = srv->admins;
    if (srv->admins) srv->admins->prev = l;
    srv->admins = l;
    srv->nadmins++;
    if (!known || (uid != 0 && uid != geteuid())) {
        if (known) log_warn("admin socket: uid %u refused (only root and uid %u)", (unsigned)uid, (unsigned)geteuid());
        else log_warn("admin socket: a client without credentials refused");
        admin_conn_refuse(l->a, "permission denied: only root and the server's user may use this socket");
        admin_link_flush(l, ADMIN_CLOSE);
        return l;
    }
    log_debug("admin socket: connection from uid %u", (unsigned)uid);
    net_conn_set_timer(c, ADMIN_IDLE_TIMEOUT);
    return l;
}

static void admin_link_data(admin_link *l, const char *data, size_t len) {
    admin_link_flush(l, admin_conn_feed(l->a, data, len));
}

static void admin_link_timer(admin_link *l) {
    admin_conn_refuse(l->a, admin_conn_partial(l->a) ? "the line was not finished in time" : "idle for too long");
    admin_link_flush(l, ADMIN_CLOSE);
}

static void admin_link_free(admin_link *l) {
    server *srv = l->srv;
    if (l->prev) l->prev->next = l->next;
    else srv->admins = l->next;
    if (l->next) l->next->prev = l->prev;
    srv->nadmins--;
    admin_conn_free(l->a);
    free(l);
}

static void admin_link_close(admin_link *l, const char *reason) {
    log_debug("admin socket: connection closed: %s", reason);
    admin_link_free(l);
}

static int admin_socket_start(server *srv, char *err, size_t errlen) {
    char path[CONFIG_SOCKET_PATH_MAX];
    struct stat st;
    if (config_admin_socket_path(srv->cfg, path, sizeof path) < 0) {
        snprintf(err, errlen, "the admin socket path is too long");
        return -1;
    }
    if (!path[0]) return 0;
    if (net_listen_unix(srv->loop, path, TAG_ADMIN) < 0) {
        snprintf(err, errlen, "cannot make the admin socket %s (see the log above; admin_socket = \"\" turns it off)",
                 path);
        return -1;
    }
    /* remembered by inode: at the end only this very file is removed, never a newer server's */
    if (lstat(path, &st) == 0) {
        srv->admin_dev = st.st_dev;
        srv->admin_ino = st.st_ino;
        if (!(srv->admin_path = strdup(path))) {
            unlink(path);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

static void admin_socket_remove(server *srv) {
    struct stat st;
    if (srv->admin_path && lstat(srv->admin_path, &st) == 0 && st.st_dev == srv->admin_dev &&
        st.st_ino == srv->admin_ino && unlink(srv->admin_path) < 0)
        log_warn("cannot remove the admin socket %s: %s", srv->admin_path, strerror(errno));
    while (srv->admins) admin_link_free(srv->admins);
    free(srv->admin_path);
    srv->admin_path = NULL;
}

/* user = NAME, started as root: once every socket is bound, become that user with its groups for good. */
static int privileges_drop(server *srv, char *err, size_t errlen) {
    const char *name = srv->cfg->user;
    if (!name[0]) return 0;
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        snprintf(err, errlen, "user = %s: no such user", name);
        return -1;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (geteuid() != 0) {
        if (uid != geteuid())
            log_warn("user = %s: not started as root, so running on as uid %u", name, (unsigned)geteuid());
        return 0;
    }
    if (uid == 0) {
        log_warn("user = %s is root: there are no privileges to drop", name);
        return 0;
    }
    if (gid == 0) {
        snprintf(err, errlen, "user = %s has the root group (gid 0): give it a group of its own", name);
        return -1;
    }
    /* the server's user may use `couplet ctl` too */
    if (srv->admin_path && chown(srv->admin_path, uid, gid) < 0) {
        snprintf(err, errlen, "cannot give the admin socket to %s: %s", name, strerror(errno));
        return -1;
    }
    if (initgroups(name, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, errlen, "cannot become user %s: %s", name, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || setgid(0) == 0 || geteuid() == 0 || getegid() == 0) {
        snprintf(err, errlen, "user = %s: root could be regained after the switch; refusing to run", name);
        return -1;
    }
    if (access(srv->cfg->data_dir, W_OK | X_OK) < 0) {
        snprintf(err, errlen, "data_dir %s is not writable by user %s: %s", srv->cfg->data_dir, name,
                 strerror(errno));
        return -1;
    }
    log_info("running as user %s (uid %u, gid %u)", name, (unsigned)uid, (unsigned)gid);
    return 0;
}

/* ---- end of the admin socket block ---- */

/* ---------------------------------------------------------------------------------------------------- */

server *server_new(const config *conf, const char *config_path, char *err, size_t errlen) {
    server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->conf = *conf;
    srv->cfg = &srv->conf;
    srv->accounts_watch = -1;
    const config *cfg = srv->cfg;
    srv->started = time(NULL);
    if (config_path && !(srv->config_path = strdup(config_path))) {
        snprintf(err, errlen, "out of memory");
        server_free(srv);
        return NULL;
    }
    xml_buf_init(&srv->out);
    srv->arena = xml_arena_new();
    if (!srv->arena || store_mkdir(cfg->data_dir) < 0) {
        snprintf(err, errlen, "cannot use data directory %s: %s", cfg->data_dir, strerror(errno));
        server_free(srv);
        return NULL;
    }
    srv->store = auth_store_open(cfg->data_dir, cfg->scram_iterations, err, errlen);
    if (!srv->store) {
        server_free(srv);
        return NULL;
    }
    muc_config mc = muc_config_of(cfg);
    muc_host mh = {.ud = srv, .deliver = muc_deliver, .is_admin = muc_is_admin};
    srv->muc = muc_service_new(&mc, &mh, err, errlen);
    if (!srv->muc) {
        server_free(srv);
        return NULL;
    }
    net_handlers h = {.ud = srv, .on_open = on_open, .on_data = on_data, .on_close = on_close,
                      .on_timer = on_timer, .on_signal = on_signal, .on_overflow = on_overflow};
    net_options o = server_net_options(cfg);
    srv->loop = net_loop_new(&h, &o);
    if (!srv->loop) {
        snprintf(err, errlen, "cannot create the event loop: %s", strerror(errno));
        server_free(srv);
        return NULL;
    }
    accounts_watch_start(srv);
    if (cfg->c2s_port || cfg->c2s_tls_port) {
        const char *names[] = {cfg->domain, cfg->muc_domain, NULL};
        if (net_tls_setup(srv->loop, cfg->tls_cert, cfg->tls_key, cfg->data_dir, names) < 0) {
            if (cfg->require_encryption || cfg->c2s_tls_port) {
                snprintf(err, errlen, "TLS setup failed (see the log above)");
                server_free(srv);
                return NULL;
            }
            log_warn("TLS unavailable: clients will authenticate in plaintext");
        }
    }
    if ((cfg->c2s_port && net_listen(srv->loop, cfg->bind, cfg->c2s_port, 0, cfg->defer_accept, TAG_STARTTLS) < 0) ||
        (cfg->c2s_tls_port &&
         net_listen(srv->loop, cfg->bind, cfg->c2s_tls_port, 1, cfg->defer_accept, TAG_DIRECT_TLS) < 0)) {
        snprintf(err, errlen, "cannot listen on %s (see the log above)", cfg->bind);
        server_free(srv);
        return NULL;
    }
    if (admin_socket_start(srv, err, errlen) < 0 || privileges_drop(srv, err, errlen) < 0) {
        server_free(srv);
        return NULL;
    }
    return srv;
}

int server_run(server *srv) {
    log_info("Couplet %s serving %s (rooms at %s) on %s port %d (STARTTLS) and %d (direct TLS)", COUPLET_VERSION,
             srv->cfg->domain, srv->cfg->muc_domain, srv->cfg->bind, srv->cfg->c2s_port, srv->cfg->c2s_tls_port);
    int r = net_loop_run(srv->loop);
    log_info("stopped");
    return r;
}

void server_free(server *srv) {
    if (!srv) return;
    if (srv->loop) net_loop_free(srv->loop);
    admin_socket_remove(srv);
    if (srv->accounts_watch >= 0) close(srv->accounts_watch);
    while (srv->sessions) {
        session *s = srv->sessions;
        s->dead = 1;
        session_unbind(s);
        session_free(s);
    }
    if (srv->muc) muc_service_free(srv->muc);
    if (srv->store) auth_store_free(srv->store);
    for (size_t i = 0; i < srv->nbuckets; i++)
        while (srv->buckets[i]) {
            account *a = srv->buckets[i];
            srv->buckets[i] = a->hnext;
            free(a);
        }
    free(srv->buckets);
    xml_arena_free(srv->arena);
    xml_buf_free(&srv->out);
    free(srv->auth_fails);
    free(srv->config_path);
    free(srv);
}
