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
#include "router.h"
#include "stanza.h"
#include "store.h"
#include "xml.h"

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

typedef struct stream stream;
typedef struct session session;
typedef struct account account;

/* What kind of peer a stream serves: it decides the framing, what the peer must negotiate, and what the
 * stream stamps as the sender of what it receives. Only clients today; WebSocket, servers and components
 * are later kinds. */
enum stream_kind { STREAM_C2S };

/* One connection's protocol state: transport, parser, negotiation (TLS, SASL, bind). Freed with its
 * connection. */
struct stream {
    server *srv;
    net_conn *conn;
    xml_parser *parser;
    auth_sasl *sasl;
    session *sess;              /* the resource it bound, once bound */
    char *user;                 /* local part, set once authenticated */
    stream *prev, *next;        /* every stream, for shutdown and the admin socket */
    unsigned id;                /* for logs: numbered in order of connection */
    unsigned char kind, state, sasl_failures;
    unsigned tls : 1, authed : 1, header_sent : 1, dead : 1;
    unsigned starttls_now : 1;  /* STARTTLS just accepted: the rest of this read is not the new stream */
    time_t since;               /* accepted at */
};

/* Stanzas held for a session detached from its stream: the bytes that would have been written. */
typedef struct held {
    struct held *next;
    size_t len;
    char data[];
} held;

/* A bound resource: what the network knows as a full JID. It points at the stream that carries it and
 * outlives it when detached (the stream gone, the session kept for resumption): stanzas to it are then
 * held, up to a bound, until it is attached again or ends. */
struct session {
    server *srv;
    stream *st;                 /* NULL while detached */
    account *acct;
    char *full_jid;             /* local@domain/resource */
    directed *directed;
    session *acct_next;         /* the account's other sessions */
    char *presence;             /* roster = shared: the last broadcast presence, serialized without 'to' */
    unsigned presence_len, presence_split;  /* where " to='...'" goes into it */
    held *held, **held_tail;    /* while detached */
    unsigned held_count;
    unsigned available : 1, roster_requested : 1, ended : 1;
    signed char priority;
};

/* An account with at least one session, attached or detached, found by its local part: the home of
 * per-account state that must outlive each session (account_idle says when it may go). */
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
    router *router;             /* the domains: ours, the rooms' */
    stream *streams;            /* every stream */
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

static account *account_find(server *srv, const char *local) {
    if (!srv->nbuckets) return NULL;
    account *a = srv->buckets[str_hash(local) & (srv->nbuckets - 1)];
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
            size_t k = str_hash(a->local) & (n - 1);
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
    size_t k = str_hash(local) & (srv->nbuckets - 1);
    a->hnext = srv->buckets[k];
    srv->buckets[k] = a;
    srv->naccounts++;
    return a;
}

/* The one place that says when an account's entry may go: per-account state that later features keep
 * (resumable sessions' counters, offline messages) is added here so it is not freed with the last session. */
static int account_idle(const account *a) {
    return a->sessions == NULL;
}

static void account_drop_if_idle(server *srv, account *a) {
    if (!account_idle(a)) return;
    account **pp = &srv->buckets[str_hash(a->local) & (srv->nbuckets - 1)];
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

/* the session with this full JID (already normalised by jid_parse), attached or detached */
static session *session_find(server *srv, const jid *j) {
    return j->local[0] && j->resource[0] ? account_session(account_find(srv, j->local), j->resource) : NULL;
}

/* the same for a JID as text (NULL or malformed: none) */
static session *session_named(server *srv, const char *full_jid) {
    jid j;
    return jid_parse(full_jid, &j) == 0 ? session_find(srv, &j) : NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* logs: each line names its connection; at debug level every stanza in and out, secrets blanked         */

/* "#12 127.0.0.1 romeo@localhost/x" (or the user, or "-", before binding): the number tells apart two
 * connections from one address (struct net_conn has no room left for the port) */
static const char *stream_name(const stream *s) {
    static char buf[3 * (JID_PART_MAX + 1) + 80];
    snprintf(buf, sizeof buf, "#%u %s %s", s->id, net_conn_peer(s->conn),
             s->sess ? s->sess->full_jid : s->user ? s->user : "-");
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
static void log_stanza(const stream *s, const char *dir, const char *data, size_t len) {
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_append(&b, data, len < LOG_STANZA_MAX ? len : LOG_STANZA_MAX);
    if (b.oom) return;
    redact(&b);
    log_debug("%s %s %s%s", dir, stream_name(s), b.data, len > LOG_STANZA_MAX ? " [...]" : "");
    xml_buf_free(&b);
}

static void log_stanza_in(const stream *s, const xml_node *n) {
    xml_buf b;
    xml_buf_init(&b);
    xml_serialize(&b, n, XML_NS_CLIENT);
    if (!b.oom) log_stanza(s, "<-", b.data, b.len);
    xml_buf_free(&b);
}

/* ---------------------------------------------------------------------------------------------------- */
/* output: a stream writes to its connection; a session writes to its stream, or holds while detached    */

/* Once our </stream:stream> is out (state ST_CLOSED), nothing more may follow it (RFC 6120 §4.4). */
static void stream_write(stream *s, const char *data, size_t len) {
    if (s->dead || s->state == ST_CLOSED) return;
    if (log_level >= LOG_DEBUG) log_stanza(s, "->", data, len);
    net_conn_write(s->conn, data, len);
}

static void stream_puts(stream *s, const char *text) {
    stream_write(s, text, strlen(text));
}

/* A detached session holds at most this many stanzas, and this many bytes of them: beyond, a stanza is
 * refused, and what refused means is the sender's business (a bounce, or the room dropping the occupant). */
#define HELD_MAX 64
#define HELD_MAX_BYTES (64 * 1024)

static size_t held_bytes(const session *s) {
    size_t n = 0;
    for (const held *h = s->held; h; h = h->next) n += h->len;
    return n;
}

static int session_hold(session *s, const char *data, size_t len) {
    if (s->held_count >= HELD_MAX || held_bytes(s) + len > HELD_MAX_BYTES) return -1;
    held *h = malloc(sizeof *h + len);
    if (!h) return -1;
    h->next = NULL;
    h->len = len;
    memcpy(h->data, data, len);
    if (!s->held) s->held_tail = &s->held;
    *s->held_tail = h;
    s->held_tail = &h->next;
    s->held_count++;
    return 0;
}

/* 0 when written (or held), -1 when the session cannot take it: ended, closing, or its hold is full */
static int session_write(session *s, const char *data, size_t len) {
    if (s->ended) return -1;
    if (!s->st) return session_hold(s, data, len);
    if (s->st->dead || s->st->state == ST_CLOSED) return -1;
    stream_write(s->st, data, len);
    return 0;
}

/* n serialized into the server's reused output buffer; NULL when memory ran out */
static const xml_buf *serialize_out(server *srv, const xml_node *n) {
    xml_buf_reset(&srv->out);
    xml_serialize(&srv->out, n, XML_NS_CLIENT);
    return srv->out.oom ? NULL : &srv->out;
}

static int session_send_node(session *s, const xml_node *n) {
    const xml_buf *b = serialize_out(s->srv, n);
    return b ? session_write(s, b->data, b->len) : -1;
}

/* head + " to='JID'" + tail: a stanza encoded once for many recipients */
/* One write, so that an output bound can never cut a stanza in the middle. */
static int session_write_spliced(session *s, const char *to, const char *head, size_t hl,
                                 const char *tail, size_t tl) {
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_append(b, head, hl);
    xml_buf_puts(b, " to='");
    xml_buf_escape(b, to, strlen(to));
    xml_buf_puts(b, "'");
    xml_buf_append(b, tail, tl);
    return b->oom ? -1 : session_write(s, b->data, b->len);
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

/* The stream's own header and footer: a TCP client stream is wrapped in <stream:stream>; a stream kind
 * framed by its transport (WebSocket's <open/> and <close/>) gets rows of its own. */
static const struct stream_framing {
    const char *header_open;    /* followed by the stream id, then header_close */
    const char *header_close;   /* followed by our domain, then "'" and header_end */
    const char *header_end;
    const char *footer;
} framings[] = {
    [STREAM_C2S] = {"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams' id='",
                    "' from='", " version='1.0' xml:lang='en'>", "</stream:stream>"},
};

static void stream_send_header(stream *s) {
    const struct stream_framing *f = &framings[s->kind];
    char id[17];
    random_hex(id, 8);
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_puts(b, f->header_open);
    xml_buf_puts(b, id);
    xml_buf_puts(b, f->header_close);
    xml_buf_escape(b, s->srv->cfg->domain, strlen(s->srv->cfg->domain));
    xml_buf_puts(b, "'");
    xml_buf_puts(b, f->header_end);
    if (!b->oom) stream_write(s, b->data, b->len);
    s->header_sent = 1;
}

static void stream_gone(stream *s);

/* A stream error ends the stream (RFC 6120 §4.9): header first if we never sent one. */
static void stream_error(stream *s, const char *condition, const char *text) {
    if (s->state == ST_CLOSED || s->dead) return;
    if (!s->header_sent) stream_send_header(s);
    log_info("%s stream error %s%s%s", stream_name(s), condition, text ? ": " : "", text ? text : "");
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_printf(b, "<stream:error><%s xmlns='" NS_STREAMS "'/>", condition);
    if (text) {
        xml_buf_puts(b, "<text xmlns='" NS_STREAMS "'>");
        xml_buf_escape(b, text, strlen(text));
        xml_buf_puts(b, "</text>");
    }
    xml_buf_puts(b, "</stream:error>");
    xml_buf_puts(b, framings[s->kind].footer);
    if (!b->oom) stream_write(s, b->data, b->len);
    s->state = ST_CLOSED;
    stream_gone(s);
    net_conn_close(s->conn);
}

static void stream_close(stream *s) {
    if (s->state == ST_CLOSED || s->dead) return;
    if (!s->header_sent) stream_send_header(s);
    stream_puts(s, framings[s->kind].footer);
    s->state = ST_CLOSED;
    stream_gone(s);
    net_conn_close(s->conn);
}

/* ---------------------------------------------------------------------------------------------------- */
/* features and negotiation (RFC 6120 §§4-7)                                                            */

static int sasl_allowed(const stream *s) {
    return s->tls || !s->srv->cfg->require_encryption || !net_tls_available(s->srv->loop);
}

static void stream_send_features(stream *s) {
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
    if (!b->oom) stream_write(s, b->data, b->len);
}

static int on_stream_open(void *ud, xml_node *root) {
    stream *s = ud;
    const config *cfg = s->srv->cfg;
    s->header_sent = 0;
    if (log_level >= LOG_DEBUG) log_stanza_in(s, root);
    if (strcmp(root->ns, XML_NS_STREAM) != 0) {
        stream_error(s, "invalid-namespace", NULL);
        return 1;
    }
    if (strcmp(root->name, "stream") != 0) {     /* the right namespace, the wrong element */
        stream_error(s, "bad-format", NULL);
        return 1;
    }
    /* RFC 6120 §4.8.2: the content namespace says what kind of stream this is; this port serves clients */
    if (strcmp(xml_parser_default_ns(s->parser), XML_NS_CLIENT) != 0) {
        stream_error(s, "invalid-namespace", "this port serves clients: the default namespace must be "
                                                     XML_NS_CLIENT);
        return 1;
    }
    const char *to = xml_attr_get(root, "to");
    jid j;
    if (to && (jid_parse(to, &j) < 0 || j.local[0] || j.resource[0] || strcmp(j.domain, cfg->domain) != 0)) {
        stream_error(s, "host-unknown", NULL);
        return 1;
    }
    const char *version = xml_attr_get(root, "version");
    if (!version || strncmp(version, "1.", 2) != 0 || !version[2] || strspn(version + 2, "0123456789") != strlen(version + 2)) {
        /* We speak XMPP 1.x streams (RFC 6120 §4.7.5: a higher minor version is answered with ours);
         * an absent version (pre-XMPP) or another major version is refused. */
        stream_error(s, "unsupported-version", NULL);
        return 1;
    }
    stream_send_header(s);
    stream_send_features(s);
    s->state = ST_NEGOTIATE;
    return 0;
}

static int on_stream_close(void *ud) {
    stream_close(ud);
    return 1;
}

/* A stream restart (after STARTTLS or SASL success): the parser forgets the old stream. */
static int stream_restart(stream *s) {
    xml_parser_reset(s->parser);
    s->state = ST_HEADER;
    s->header_sent = 0;     /* an error before the new header needs a header of its own */
    return 1;
}

static int handle_starttls(stream *s) {
    if (s->tls || s->authed || !net_tls_available(s->srv->loop)) {
        /* RFC 6120 §5.4.2.2: a failure element, then the stream is closed */
        stream_puts(s, "<failure xmlns='" NS_TLS "'/>");
        stream_close(s);
        return 1;
    }
    stream_puts(s, "<proceed xmlns='" NS_TLS "'/>");
    if (net_conn_starttls(s->conn) < 0) {
        stream_close(s);
        return 1;
    }
    s->tls = 1;
    s->starttls_now = 1;
    return stream_restart(s);
}

static auth_fail *auth_fail_slot(server *srv, const char *ip) {
    if (!srv->auth_fails && !(srv->auth_fails = calloc(AUTH_FAIL_SLOTS, sizeof *srv->auth_fails))) return NULL;
    auth_fail *f = &srv->auth_fails[str_hash(ip) & (AUTH_FAIL_SLOTS - 1)];
    if (strcmp(f->ip, ip) != 0) {
        memset(f, 0, sizeof *f);
        snprintf(f->ip, sizeof f->ip, "%s", ip);
    }
    return f;
}

/* 1 while this address is locked out after too many failed authentications */
static int auth_locked_out(server *srv, const char *ip) {
    if (!srv->auth_fails || !srv->cfg->auth_failures_per_ip) return 0;
    const auth_fail *f = &srv->auth_fails[str_hash(ip) & (AUTH_FAIL_SLOTS - 1)];
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

static void roster_push_one(server *srv, session *s, const char *bare, const char *subscription);

static void roster_push(server *srv, const char *local, const char *subscription) {
    char bare[2 * (JID_PART_MAX + 1)];
    snprintf(bare, sizeof bare, "%s@%s", local, srv->cfg->domain);
    for (size_t i = 0; i < srv->nbuckets; i++)
        for (account *a = srv->buckets[i]; a; a = a->hnext)
            for (session *s = a->sessions; s; s = s->acct_next)
                if (s->roster_requested && strcmp(a->local, local) != 0) roster_push_one(srv, s, bare, subscription);
}

static void roster_push_one(server *srv, session *s, const char *bare, const char *subscription) {
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

static long sessions_end_detached(server *srv, const char *local, const char *resource);

/* detached sessions of deleted accounts: they have no stream for a stream error to end them */
static void sessions_end_deleted(server *srv) {
    name_list gone = {0};
    for (size_t i = 0; i < srv->nbuckets; i++)
        for (account *a = srv->buckets[i]; a; a = a->hnext)
            if (!auth_user_exists(srv->store, a->local)) name_list_add(&gone, a->local);
    for (size_t i = 0; i < gone.n; i++) sessions_end_detached(srv, gone.v[i], NULL);
    name_list_free(&gone);
}

/* ---- accounts changed by another process (adduser, passwd, deluser, import) ----
 * The file is read again when it changed: before each login, and as soon as inotify says it was replaced,
 * so that a deleted account's sessions end at once. A file that does not load keeps the old accounts. */

static void accounts_refresh(server *srv) {
    char err[256];
    name_list before = {0}, after = {0};
    if (!auth_store_changed(srv->store)) return;    /* a stat: the common case at every login */
    int pushes = srv->cfg->roster_shared && srv->naccounts;
    if (pushes) name_list_sorted(srv, &before);
    int r = auth_store_refresh(srv->store, err, sizeof err);
    if (r < 0) log_err("%s: the accounts loaded before stay in use", err);
    if (r > 0) {
        log_info("accounts reloaded: %zu accounts", auth_store_count(srv->store));
        for (stream *s = srv->streams; s; s = s->next)
            if (s->user && !auth_user_exists(srv->store, s->user))
                stream_error(s, "not-authorized", "the account was deleted");
        sessions_end_deleted(srv);
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

static void sasl_failure(stream *s, const char *condition) {
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    xml_buf_printf(b, "<failure xmlns='" NS_SASL "'><%s/></failure>", condition);
    if (!b->oom) stream_write(s, b->data, b->len);
    auth_sasl_free(s->sasl);
    s->sasl = NULL;
    log_info("%s authentication failed: %s", stream_name(s), condition);
    if (!strcmp(condition, "not-authorized")) auth_note_failure(s->srv, net_conn_peer(s->conn));
    if (++s->sasl_failures >= s->srv->cfg->sasl_max_attempts)
        stream_error(s, "policy-violation", "too many failed authentication attempts");
}

static int sasl_step(stream *s, const char *data) {
    char out[1024];
    int r = auth_sasl_step(s->sasl, data, out, sizeof out);
    if (r == AUTH_CONTINUE) {
        xml_buf *b = &s->srv->out;
        xml_buf_reset(b);
        xml_buf_printf(b, "<challenge xmlns='" NS_SASL "'>%s</challenge>", out);
        if (!b->oom) stream_write(s, b->data, b->len);
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
        stream_error(s, "internal-server-error", NULL);
        return 1;
    }
    s->authed = 1;
    xml_buf *b = &s->srv->out;
    xml_buf_reset(b);
    if (out[0]) xml_buf_printf(b, "<success xmlns='" NS_SASL "'>%s</success>", out);
    else xml_buf_puts(b, "<success xmlns='" NS_SASL "'/>");
    if (!b->oom) stream_write(s, b->data, b->len);
    log_info("%s logged in", stream_name(s));
    return stream_restart(s);
}

static int handle_sasl(stream *s, const xml_node *n) {
    if (s->authed) {
        stream_error(s, "policy-violation", "already authenticated");
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
    stream_error(s, "unsupported-stanza-type", NULL);
    return 1;
}

static void random_resource(char *out, size_t n) {
    char hex[13];
    random_hex(hex, 6);
    snprintf(out, n, "couplet-%s", hex);
}

/* An answer on a stream before it has a session (binding): written to the stream itself, to nobody. */
static void stream_send_error(stream *s, const xml_node *st, const char *type, const char *condition) {
    xml_node *r = stanza_error_new(s->srv->arena, st, type, condition, NULL, NULL);
    if (!r) return;
    xml_set_attr(s->srv->arena, r, "to", NULL);
    const xml_buf *b = serialize_out(s->srv, r);
    if (b) stream_write(s, b->data, b->len);
}

static void session_end(session *ss);

/* the session that had this resource goes: an attached one with its stream (conflict), a detached one alone */
static void session_replace(session *old) {
    if (old->st) stream_error(old->st, "conflict", "replaced by a new session");
    else session_end(old);
}

static session *session_new(stream *s, account *a, const char *res) {
    server *srv = s->srv;
    session *ss = calloc(1, sizeof *ss);
    size_t len = strlen(s->user) + strlen(srv->cfg->domain) + strlen(res) + 3;
    char *full = malloc(len);
    if (!ss || !full) {
        free(ss);
        free(full);
        return NULL;
    }
    snprintf(full, len, "%s@%s/%s", s->user, srv->cfg->domain, res);
    ss->srv = srv;
    ss->full_jid = full;
    ss->st = s;
    ss->acct = a;
    ss->acct_next = a->sessions;
    a->sessions = ss;
    s->sess = ss;
    return ss;
}

/* Resource binding (RFC 6120 §7). A second session with the same full JID replaces the first. */
static int handle_bind(stream *s, const xml_node *iq, const xml_node *bind) {
    server *srv = s->srv;
    char res[JID_PART_MAX + 1];
    const xml_node *rn = xml_child(bind, "resource", NS_BIND);
    const char *want = rn ? xml_text(rn) : "";
    if (want[0]) {
        if (!jid_resource_valid(want) || strlen(want) > JID_PART_MAX) {
            stream_send_error(s, iq, "modify", "bad-request");
            return 0;
        }
        snprintf(res, sizeof res, "%s", want);
    } else {
        random_resource(res, sizeof res);
    }
    /* the replaced session leaves first: its going may free the account entry */
    session *old = account_session(account_find(srv, s->user), res);
    if (old) session_replace(old);
    account *a = account_get(srv, s->user);
    if (!a) {
        stream_send_error(s, iq, "wait", "resource-constraint");
        return 0;
    }
    if ((int)account_session_count(a) >= srv->cfg->max_sessions_per_account) {
        stream_send_error(s, iq, "wait", "resource-constraint");
        account_drop_if_idle(srv, a);
        return 0;
    }
    if (!session_new(s, a, res)) {
        account_drop_if_idle(srv, a);
        stream_error(s, "internal-server-error", NULL);
        return 1;
    }
    s->state = ST_ACTIVE;
    xml_node *r = iq_result_new(srv->arena, iq);
    if (r) {
        xml_node *b = xml_add_child(srv->arena, r, "bind", NS_BIND);
        if (b) xml_add_child_text(srv->arena, b, "jid", NS_BIND, s->sess->full_jid);
        xml_set_attr(srv->arena, r, "from", NULL);
        xml_set_attr(srv->arena, r, "to", s->sess->full_jid);
        session_send_node(s->sess, r);
    }
    /* the handshake is over: from now on the timer watches for idleness */
    net_conn_set_timer(s->conn, srv->cfg->idle_timeout);
    log_info("%s bound", stream_name(s));
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* the local domain: delivery to accounts and sessions (RFC 6121 §8, §4 without stored rosters)         */

static void bounce_text(server *srv, const xml_node *st, const char *type, const char *condition,
                        const char *text) {
    router_bounce(srv->router, st, type, condition, text);
}

static void bounce(server *srv, const xml_node *st, const char *type, const char *condition) {
    router_bounce(srv->router, st, type, condition, NULL);
}

/* Available sessions with the highest non-negative priority (RFC 6121 §8.5.2.1.1). */
static int account_best_priority(const account *a) {
    int best = -1;
    for (const session *t = a ? a->sessions : NULL; t; t = t->acct_next)
        if (t->available && t->priority >= 0 && t->priority > best) best = t->priority;
    return best;
}

/* chat and normal go to the best sessions; headline to every available one (RFC 6121 §8.5.2.1) */
static int deliver_to_bare(account *a, const xml_node *st) {
    int best = account_best_priority(a), n = 0, all = !strcmp(stanza_type(st), "headline");
    if (best < 0) return 0;
    for (session *t = a->sessions; t; t = t->acct_next)
        if (t->available && t->priority >= 0 && (all || t->priority == best) && session_send_node(t, st) == 0)
            n++;
    return n;
}

static void local_message_to_user(server *srv, xml_node *st, const jid *to) {
    const char *type = stanza_type(st);
    account *a = account_find(srv, to->local);
    if (to->resource[0]) {
        session *t = account_session(a, to->resource);
        if (t) {
            /* a detached session that holds no more: as if the resource were gone */
            if (session_send_node(t, st) < 0 && strcmp(type, "error") != 0)
                bounce(srv, st, "cancel", "service-unavailable");
            return;
        }
        /* RFC 6121 §8.5.3.2.1: no such resource; groupchat bounces, headline is dropped,
         * chat and normal fall back to the bare JID. */
        if (!strcmp(type, "groupchat")) {
            bounce(srv, st, "cancel", "service-unavailable");
            return;
        }
        if (!strcmp(type, "headline") || !strcmp(type, "error")) return;
    }
    if (!strcmp(type, "error")) return;
    if (!strcmp(type, "groupchat")) {
        bounce(srv, st, "cancel", "service-unavailable");
        return;
    }
    if (deliver_to_bare(a, st) > 0 || !strcmp(type, "headline")) return;
    /* no offline storage: the sender learns the message was not delivered */
    bounce(srv, st, "cancel", "service-unavailable");
}

static void local_message(server *srv, xml_node *st, const jid *to) {
    if (!to) {
        /* RFC 6121 §8.1.1.1: no 'to' means the sender's own bare JID */
        jid from;
        if (jid_parse(xml_attr_get(st, "from"), &from) == 0) deliver_to_bare(account_find(srv, from.local), st);
        return;
    }
    if (!to->local[0]) return;      /* a message to the server itself: nothing to do */
    if (!auth_user_exists(srv->store, to->local)) {
        bounce(srv, st, "cancel", "service-unavailable");
        return;
    }
    local_message_to_user(srv, st, to);
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
 * rosters nothing can be subscribed to. This is the sender's server's outbound processing (§3.1.2). */
static void presence_subscription(session *s, xml_node *st, const jid *to, const char *type) {
    server *srv = s->srv;
    if (!srv->cfg->roster_shared) {
        if (!strcmp(type, "subscribe"))
            bounce_text(srv, st, "cancel", "feature-not-implemented",
                        "this server keeps no rosters (roster = empty): presence subscriptions are not available");
        return;
    }
    int known = auth_user_exists(srv->store, to->local) && strcmp(to->local, s->acct->local) != 0;
    if (!strcmp(type, "probe")) {
        if (known) presence_answer_probe(s, to);
        else presence_from_contact(s, to->local, "unsubscribed");
    } else if (!strcmp(type, "subscribe")) {
        presence_from_contact(s, to->local, known ? "subscribed" : "unsubscribed");
        if (known) presence_answer_probe(s, to);
    }
    /* subscribed, unsubscribe, unsubscribed: the shared roster does not change, nothing to do */
}

/* Presence that reached the local domain with a 'to': delivered to the addressee's sessions. */
static void local_presence_to_user(server *srv, xml_node *st, const jid *to) {
    if (!to->local[0]) return;     /* presence to the server itself has nothing to do */
    if (!auth_user_exists(srv->store, to->local)) return;  /* nobody there to tell */
    account *a = account_find(srv, to->local);
    if (to->resource[0]) {
        session *t = account_session(a, to->resource);
        if (t) session_send_node(t, st);
        return;
    }
    for (session *t = a ? a->sessions : NULL; t; t = t->acct_next)
        if (t->available) session_send_node(t, st);
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
            router_route(srv->router, p);
        }
        free(d);
    }
}

/* Presence without 'to': the session's availability, told to its account and its contacts (RFC 6121 §4.2). */
static void presence_broadcast(session *s, xml_node *st) {
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

static void local_presence(server *srv, xml_node *st, const jid *to) {
    if (to) {
        local_presence_to_user(srv, st, to);
        return;
    }
    session *s = session_named(srv, xml_attr_get(st, "from"));
    if (s) presence_broadcast(s, st);
}

/* ---- the server's own IQs, and those it answers for an account: one table each ----
 * disco#info is generated from the same table that dispatches, so nothing is answered without being
 * advertised, or advertised without being answered. */

typedef struct iq_ctx {
    server *srv;
    const xml_node *iq, *q;
    const jid *to;              /* the account or the server asked */
    const jid *from;            /* the requester */
} iq_ctx;

typedef struct iq_route {
    iq_key key;
    unsigned char own_only;     /* only for the account itself, not for other users asking about it */
    void (*handle)(const iq_ctx *c);
} iq_route;

/* a reply goes to the requester the way any stanza does: through the router */
static void iq_reply(const iq_ctx *c, xml_node *child_or_iq) {
    xml_node *root = child_or_iq;
    while (root && root->parent) root = root->parent;
    if (root) router_route(c->srv->router, root);
}

static xml_node *iq_result_query(const iq_ctx *c, const char *name, const char *ns) {
    xml_node *r = iq_result_new(c->srv->arena, c->iq);
    return r ? xml_add_child(c->srv->arena, r, name, ns) : NULL;
}

/* disco#info from a table: the identity, then each row's feature once, in table order */
static void disco_info_from(const iq_ctx *c, const iq_route *table, const char *category, const char *type,
                            const char *name) {
    xml_node *r = iq_result_query(c, "query", NS_DISCO_INFO);
    if (!r) return;
    disco_add_identity(c->srv->arena, r, category, type, name);
    disco_add_table_features(c->srv->arena, r, table, sizeof *table);
    iq_reply(c, r);
}

static void iq_ping(const iq_ctx *c) {
    iq_reply(c, iq_result_new(c->srv->arena, c->iq));
}

/* we publish no nodes, so a query naming one is item-not-found (XEP-0030 §3.1) */
static int disco_node_refused(const iq_ctx *c) {
    if (!xml_attr_get(c->q, "node")) return 0;
    bounce(c->srv, c->iq, "cancel", "item-not-found");
    return 1;
}

static const iq_route server_iqs[];
static const iq_route account_iqs[];

static void iq_server_disco_info(const iq_ctx *c) {
    if (!disco_node_refused(c)) disco_info_from(c, server_iqs, "server", "im", "Couplet");
}

static void iq_server_disco_items(const iq_ctx *c) {
    server *srv = c->srv;
    if (disco_node_refused(c)) return;
    xml_node *r = iq_result_query(c, "query", NS_DISCO_ITEMS);
    if (!r) return;
    xml_node *item = xml_add_child(srv->arena, r, "item", NULL);
    if (item) {
        xml_set_attr(srv->arena, item, "jid", srv->cfg->muc_domain);
        xml_set_attr(srv->arena, item, "name", "Chatrooms");
    }
    iq_reply(c, r);
}

static void iq_server_version(const iq_ctx *c) {
    xml_node *r = iq_result_query(c, "query", NS_VERSION);
    if (!r) return;
    xml_add_child_text(c->srv->arena, r, "name", NULL, "Couplet");
    xml_add_child_text(c->srv->arena, r, "version", NULL, COUPLET_VERSION);
    iq_reply(c, r);
}

static void iq_server_time(const iq_ctx *c) {
    char utc[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(utc, sizeof utc, "%Y-%m-%dT%H:%M:%SZ", &tm);
    xml_node *r = iq_result_query(c, "time", NS_TIME);
    if (!r) return;
    xml_add_child_text(c->srv->arena, r, "tzo", NULL, "+00:00");
    xml_add_child_text(c->srv->arena, r, "utc", NULL, utc);
    iq_reply(c, r);
}

static void iq_server_uptime(const iq_ctx *c) {
    char secs[32];
    snprintf(secs, sizeof secs, "%lld", (long long)(time(NULL) - c->srv->started));
    xml_node *r = iq_result_query(c, "query", NS_LAST);
    if (!r) return;
    xml_set_attr(c->srv->arena, r, "seconds", secs);
    iq_reply(c, r);
}

/* ---- the roster (RFC 6121 §2) without storage: empty, or every account of the domain ---- */

typedef struct roster_walk {
    const iq_ctx *c;
    xml_node *q;
} roster_walk;

static void roster_add_item(void *ud, const char *local) {
    roster_walk *w = ud;
    server *srv = w->c->srv;
    if (!strcmp(local, w->c->from->local)) return;
    char bare[2 * (JID_PART_MAX + 1)];
    snprintf(bare, sizeof bare, "%s@%s", local, srv->cfg->domain);
    xml_node *item = xml_add_child(srv->arena, w->q, "item", NULL);
    if (!item) return;
    xml_set_attr(srv->arena, item, "jid", bare);
    xml_set_attr(srv->arena, item, "subscription", "both");
}

static void roster_get(const iq_ctx *c) {
    xml_node *q = iq_result_query(c, "query", NS_ROSTER);
    if (!q) return;
    if (c->srv->cfg->roster_shared) {
        roster_walk w = {c, q};
        auth_user_foreach(c->srv->store, roster_add_item, &w);
    }
    session *s = session_find(c->srv, c->from);
    if (s) s->roster_requested = 1;
    iq_reply(c, q);
}

/* A roster set can only agree with what the server computes: nothing is stored per user. */
static void roster_set(const iq_ctx *c) {
    server *srv = c->srv;
    const xml_node *item = xml_child(c->q, "item", NS_ROSTER);
    if (!item || xml_next_child(item, "item", NS_ROSTER) || !xml_attr_get(item, "jid")) {
        bounce(srv, c->iq, "modify", "bad-request");   /* RFC 6121 §2.3.3: exactly one item */
        return;
    }
    if (!srv->cfg->roster_shared) {
        bounce_text(srv, c->iq, "cancel", "not-allowed",
                    "this server keeps no rosters (roster = empty): contacts cannot be added");
        return;
    }
    jid contact;
    const char *sub = xml_attr_get(item, "subscription");
    int known = jid_parse(xml_attr_get(item, "jid"), &contact) == 0 && !contact.resource[0] &&
                !strcmp(contact.domain, srv->cfg->domain) && strcmp(contact.local, c->from->local) != 0 &&
                auth_user_exists(srv->store, contact.local);
    if (sub && !strcmp(sub, "remove"))
        bounce_text(srv, c->iq, "cancel", "not-allowed",
                    "contacts are shared by the server (roster = shared) and cannot be removed");
    else if (!known)
        bounce_text(srv, c->iq, "cancel", "not-allowed",
                    "with roster = shared every account of this server is a contact, and only they");
    else
        iq_reply(c, iq_result_new(srv->arena, c->iq));   /* already there, as both: nothing changes */
}

static void iq_roster(const iq_ctx *c) {
    if (!strcmp(stanza_type(c->iq), "get")) roster_get(c);
    else roster_set(c);
}

static void iq_session(const iq_ctx *c) {
    iq_reply(c, iq_result_new(c->srv->arena, c->iq));   /* legacy session establishment (RFC 6121 §C) */
}

static void iq_account_disco_info(const iq_ctx *c) {
    if (!disco_node_refused(c)) disco_info_from(c, account_iqs, "account", "registered", NULL);
}

static void iq_account_disco_items(const iq_ctx *c) {
    if (!disco_node_refused(c)) iq_reply(c, iq_result_query(c, "query", NS_DISCO_ITEMS));
}

/* IQs to the server's domain */
static const iq_route server_iqs[] = {
    {{NS_DISCO_INFO, "query", IQ_GET, NS_DISCO_INFO}, 0, iq_server_disco_info},
    {{NS_DISCO_ITEMS, "query", IQ_GET, NS_DISCO_ITEMS}, 0, iq_server_disco_items},
    {{NS_PING, "ping", IQ_GET, NS_PING}, 0, iq_ping},
    {{NS_VERSION, "query", IQ_GET, NS_VERSION}, 0, iq_server_version},
    {{NS_TIME, "time", IQ_GET, NS_TIME}, 0, iq_server_time},
    {{NS_LAST, "query", IQ_GET, NS_LAST}, 0, iq_server_uptime},
    {{NS_ROSTER, "query", IQ_GET | IQ_SET, NS_ROSTER}, 0, iq_roster},
    {{NS_SESSION, "session", IQ_GET | IQ_SET, NULL}, 0, iq_session},
    {{NULL, NULL, 0, NULL}, 0, NULL},
};

/* IQs to an account's bare JID (or without 'to': the sender's own), answered by the server on the
 * account's behalf (RFC 6120 §10.5.4). Everything else a client asks at login (vcard-temp, private
 * storage, bookmarks, blocking, carbons, PEP, MAM) is a service this server does not offer:
 * service-unavailable, the answer each of those XEPs gives for a server without it. */
static const iq_route account_iqs[] = {
    {{NS_ROSTER, "query", IQ_GET | IQ_SET, NULL}, 1, iq_roster},
    {{NS_SESSION, "session", IQ_GET | IQ_SET, NULL}, 1, iq_session},
    {{NS_DISCO_INFO, "query", IQ_GET, NS_DISCO_INFO}, 0, iq_account_disco_info},
    {{NS_DISCO_ITEMS, "query", IQ_GET, NS_DISCO_ITEMS}, 0, iq_account_disco_items},
    {{NS_PING, "ping", IQ_GET, NS_PING}, 0, iq_ping},
    {{NULL, NULL, 0, NULL}, 0, NULL},
};

/* own_only rows answer only a local account asking about itself */
static int iq_asks_about_self(const iq_ctx *c) {
    return !strcmp(c->from->domain, c->srv->cfg->domain) && c->to->local[0] &&
           !strcmp(c->to->local, c->from->local);
}

static void iq_dispatch(const iq_ctx *c, const iq_route *table) {
    const iq_route *r = iq_table_find(table, sizeof *table, c->iq, c->q);
    if (r && r->own_only && !iq_asks_about_self(c))
        bounce(c->srv, c->iq, "auth", "forbidden");     /* another account's roster (RFC 6121 §2.1.5) */
    else if (r) r->handle(c);
    else bounce(c->srv, c->iq, "cancel", "service-unavailable");
}

static void local_iq(server *srv, xml_node *st, const jid *to) {
    const char *type = stanza_type(st);
    int request = !strcmp(type, "get") || !strcmp(type, "set");
    int response = !strcmp(type, "result") || !strcmp(type, "error");
    if (!request && !response) {
        bounce(srv, st, "modify", "bad-request");
        return;
    }
    xml_node *q = request ? iq_payload(st) : NULL;
    if (request && !q) {
        bounce(srv, st, "modify", "bad-request");
        return;
    }
    if (to && to->local[0] && to->resource[0]) {
        session *t = session_find(srv, to);
        if ((!t || session_send_node(t, st) < 0) && request) bounce(srv, st, "cancel", "service-unavailable");
        return;
    }
    if (!request) return;   /* results and errors to the server or a bare JID end here */
    jid from, self;
    const char *from_text = xml_attr_get(st, "from");
    if (!from_text || jid_parse(from_text, &from) < 0) return;     /* nobody to answer */
    iq_ctx c = {srv, st, q, to, &from};
    if (!to) {
        /* no 'to': the account's own bare JID (RFC 6120 §10.3.3) */
        self = from;
        self.resource[0] = 0;
        c.to = &self;
        iq_dispatch(&c, account_iqs);
    } else if (!to->local[0]) {
        if (to->resource[0]) bounce(srv, st, "cancel", "service-unavailable");
        else iq_dispatch(&c, server_iqs);
    } else if (!auth_user_exists(srv->store, to->local)) {
        bounce(srv, st, "cancel", "service-unavailable");
    } else {
        iq_dispatch(&c, account_iqs);
    }
}

/* The router's handler for the local domain. */
static void local_route(void *ud, xml_node *st, const jid *to) {
    server *srv = ud;
    if (!strcmp(st->name, "iq")) local_iq(srv, st, to);
    else if (!strcmp(st->name, "presence")) local_presence(srv, st, to);
    else local_message(srv, st, to);
}

/* The router's handler for the rooms' domain. */
static void muc_route(void *ud, xml_node *st, const jid *to) {
    server *srv = ud;
    muc_handle_stanza(srv->muc, st);
}

/* ---------------------------------------------------------------------------------------------------- */
/* a client session's outbound side: what the sender's own server does before a stanza is routed         */

/* Directed presence (RFC 6121 §4.6) is remembered, so that its addressee is told 'unavailable' when the
 * session ends; subscription requests are answered on the contact's behalf. Then it goes like any stanza. */
static void session_outbound_presence(session *s, xml_node *st) {
    server *srv = s->srv;
    const char *type = stanza_type(st), *to_text = xml_attr_get(st, "to");
    jid to;
    if (!to_text || jid_parse(to_text, &to) < 0) {
        router_route(srv->router, st);      /* a broadcast, or a malformed 'to' the router bounces */
        return;
    }
    int avail = !type[0], unavail = !strcmp(type, "unavailable");
    int local = !strcmp(to.domain, srv->cfg->domain);
    if (local && to.local[0] && !avail && !unavail && strcmp(type, "error") != 0) {
        presence_subscription(s, st, &to, type);
        return;
    }
    /* only what can be told 'unavailable' later: a local user who exists, or a domain we route to */
    int owed = local ? to.local[0] && auth_user_exists(srv->store, to.local) : router_serves(srv->router, to.domain);
    char norm[3 * (JID_PART_MAX + 1)];
    if (owed && jid_full(&to, norm, sizeof norm) >= 0) {
        if (avail && directed_remember(s, norm) < 0) {
            bounce(srv, st, "wait", "resource-constraint");
            return;
        }
        if (unavail) directed_forget(s, norm);
    }
    router_route(srv->router, st);
}

/* A stanza from a bound client: the sender is who the stream says it is, whatever 'from' the client wrote
 * (RFC 6120 §8.1.2.1). */
static void session_outbound(session *s, xml_node *st) {
    server *srv = s->srv;
    xml_set_attr(srv->arena, st, "from", s->full_jid);
    if (!strcmp(st->name, "presence")) {
        if (!presence_type_known(stanza_type(st))) bounce_text(srv, st, "modify", "bad-request", "unknown presence type");
        else session_outbound_presence(s, st);
        return;
    }
    if (!strcmp(st->name, "iq") && !xml_attr_get(st, "id")) {
        /* RFC 6120 §8.2.3: an IQ needs an id to be answered; a request without one is refused, a
         * response without one answers nothing and is dropped. (Our own error to such a request has no
         * id either: it is built here, after this check.) */
        const char *type = stanza_type(st);
        if (!strcmp(type, "get") || !strcmp(type, "set")) bounce(srv, st, "modify", "bad-request");
        return;
    }
    router_route(srv->router, st);
}

/* ---------------------------------------------------------------------------------------------------- */
/* the parser's stanza callback: what a stanza means depends on the stream's state                      */

static int on_stanza(void *ud, xml_node *n) {
    stream *s = ud;
    server *srv = s->srv;
    int stop = 0;
    xml_arena_reset(srv->arena);
    if (s->state == ST_CLOSED) return 1;
    if (log_level >= LOG_DEBUG) log_stanza_in(s, n);
    if (!strcmp(n->ns, XML_NS_STREAM) && !strcmp(n->name, "error")) {
        /* the peer is ending the stream: close ours, never answer an error with an error (RFC 6120 §4.9) */
        const xml_node *cond = xml_child(n, NULL, NS_STREAMS);
        log_info("%s sent stream error %s", stream_name(s), cond ? cond->name : "(none)");
        stream_close(s);
        return 1;
    }
    if (!strcmp(n->ns, NS_TLS) && !strcmp(n->name, "starttls"))
        return handle_starttls(s);
    if (!strcmp(n->ns, NS_SASL))
        return handle_sasl(s, n);
    if (!stanza_is(n)) {
        stream_error(s, "unsupported-stanza-type", NULL);   /* RFC 6120 §4.9.3.24, any namespace */
        return 1;
    }
    if (!s->authed) {
        stream_error(s, "not-authorized", NULL);
        return 1;
    }
    if (s->state != ST_ACTIVE) {
        const xml_node *b = !strcmp(n->name, "iq") && !strcmp(stanza_type(n), "set") ? iq_payload(n) : NULL;
        if (b && !strcmp(b->name, "bind") && !strcmp(b->ns, NS_BIND) && xml_attr_get(n, "id"))
            stop = handle_bind(s, n, b);
        else stream_error(s, "not-authorized", "bind a resource first");
        return stop || s->state == ST_CLOSED;
    }
    session_outbound(s->sess, n);
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
    stream *s = calloc(1, sizeof *s);
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
    s->kind = STREAM_C2S;
    s->id = ++srv->last_id;
    s->since = net_now(srv->loop);
    s->tls = tag == TAG_DIRECT_TLS;
    s->next = srv->streams;
    if (srv->streams) srv->streams->prev = s;
    srv->streams = s;
    net_conn_set_timer(c, srv->cfg->handshake_timeout);
    log_info("%s connected%s", stream_name(s), tag == TAG_DIRECT_TLS ? " (direct TLS)" : "");
    return s;
}

static void on_data(void *ud, net_conn *c, const char *data, size_t len) {
    if (net_conn_is_local(c)) {
        admin_link_data(ud, data, len);
        return;
    }
    stream *s = ud;
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
        stream_error(s, parser_error_condition(r), xml_status_str(r));
        break;
    }
}

/* ---- a session's life: bound, detached, ended ---- */

static void session_unbind(session *s) {
    account *a = s->acct;
    if (!a) return;
    for (session **pp = &a->sessions; *pp; pp = &(*pp)->acct_next)
        if (*pp == s) {
            *pp = s->acct_next;
            break;
        }
    s->acct = NULL;
    account_drop_if_idle(s->srv, a);
}

/* What a session held when it ended is settled as if its resource had gone before they came (RFC 6121
 * §8.5.3.2.1, §8.5.4): a chat or normal message goes on to the account's other sessions (the bare JID), an
 * IQ request is answered service-unavailable, presence and everything else is dropped. The held bytes are
 * what the client's stream would have carried, so they are read back inside a client stream header. */
static int settle_one(void *ud, xml_node *st) {
    server *srv = ud;
    const char *name = st->name, *type = stanza_type(st), *to = xml_attr_get(st, "to");
    jid j;
    if (!strcmp(name, "message") && (!type[0] || !strcmp(type, "chat") || !strcmp(type, "normal")) && to &&
        jid_parse(to, &j) == 0 && j.resource[0]) {
        char bare[2 * (JID_PART_MAX + 1)];
        j.resource[0] = 0;
        if (account_best_priority(account_find(srv, j.local)) < 0)
            bounce(srv, st, "cancel", "service-unavailable");   /* from the resource it was sent to */
        else if (jid_bare(&j, bare, sizeof bare) >= 0 && !xml_set_attr(srv->arena, st, "to", bare))
            router_route(srv->router, st);
    } else if (!strcmp(name, "iq") && (!strcmp(type, "get") || !strcmp(type, "set"))) {
        bounce(srv, st, "cancel", "service-unavailable");
    }
    return 0;
}

static int settle_open(void *ud, xml_node *root) { return 0; }
static int settle_close(void *ud) { return 0; }

static void session_settle_held(session *s) {
    static const xml_events settle_events = {settle_open, settle_one, settle_close};
    static const char header[] = "<stream:stream xmlns='jabber:client' xmlns:stream='" XML_NS_STREAM "'>";
    xml_parser *p = s->held ? xml_parser_new(NULL, &settle_events, s->srv) : NULL;
    if (p && xml_parser_feed(p, header, sizeof header - 1, NULL) != XML_OK) {
        xml_parser_free(p);
        p = NULL;
    }
    while (s->held) {
        held *h = s->held;
        s->held = h->next;
        if (p) xml_parser_feed(p, h->data, h->len, NULL);
        free(h);
    }
    s->held_count = 0;
    xml_parser_free(p);
}

/* Leave the network: presence goes out as if the client had sent 'unavailable', held stanzas are settled,
 * the account forgets the session, and it is freed. */
static void session_end(session *s) {
    server *srv = s->srv;
    if (s->ended) return;
    s->ended = 1;                   /* nothing more is written to it, not even what its going causes */
    if (s->st) s->st->sess = NULL;
    if (s->available || s->directed) {
        xml_node *p = xml_node_new(srv->arena, "presence", XML_NS_CLIENT);
        if (p) {
            xml_set_attr(srv->arena, p, "type", "unavailable");
            xml_set_attr(srv->arena, p, "from", s->full_jid);
            for (session *t = s->acct->sessions; t; t = t->acct_next)
                if (t != s && t->available) session_send_node(t, p);
        }
        if (s->available) presence_unavailable_to_contacts(s);
        s->available = 0;
        send_unavailable_to_directed(s);
    }
    session_unbind(s);
    session_settle_held(s);
    free(s->presence);
    free(s->full_jid);
    free(s);
}

/* The stream goes, the session stays: what stream management's resumption will do when a link drops. The
 * stream is closed without a word of presence; the session holds what arrives for it. */
static void session_detach(session *s) {
    stream *st = s->st;
    if (!st) return;
    s->st = NULL;
    st->sess = NULL;
    log_info("%s detached from its stream", s->full_jid);
    stream_close(st);
}

/* Ends the detached sessions of an account (local), of one of its resources, or all (local NULL).
 * Returns how many. */
static long sessions_end_detached(server *srv, const char *local, const char *resource) {
    long n = 0;
    for (size_t i = 0; i < srv->nbuckets; i++)
        for (account *a = srv->buckets[i], *next; a; a = next) {
            next = a->hnext;
            if (local && strcmp(a->local, local) != 0) continue;
            for (session *t = a->sessions, *tn; t; t = tn) {
                tn = t->acct_next;
                if (t->st || (resource && strcmp(session_resource(t), resource) != 0)) continue;
                int last = !tn && a->sessions == t;
                session_end(t);     /* the account's last session frees the account */
                n++;
                if (last) break;
            }
        }
    return n;
}

/* server_free: no presence, no settling, the process is going */
static void session_free_quietly_all(account *a) {
    while (a->sessions) {
        session *t = a->sessions;
        a->sessions = t->acct_next;
        while (t->directed) {
            directed *d = t->directed;
            t->directed = d->next;
            free(d);
        }
        while (t->held) {
            held *h = t->held;
            t->held = h->next;
            free(h);
        }
        free(t->presence);
        free(t->full_jid);
        free(t);
    }
}

/* The stream is over (closed by either side, or an error): its session, if any, ends with it. */
static void stream_gone(stream *s) {
    if (s->dead) return;
    if (s->sess) session_end(s->sess);
    s->sess = NULL;
    s->dead = 1;
}

static void stream_free(stream *s) {
    server *srv = s->srv;
    if (s->prev) s->prev->next = s->next;
    else srv->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    xml_parser_free(s->parser);
    auth_sasl_free(s->sasl);
    free(s->user);
    free(s);
}

static void on_close(void *ud, net_conn *c, const char *reason) {
    if (net_conn_is_local(c)) {
        admin_link_close(ud, reason);
        return;
    }
    stream *s = ud;
    log_info("%s %s: %s", stream_name(s), s->sess ? "logged out" : "disconnected", reason);
    xml_arena_reset(s->srv->arena);
    stream_gone(s);
    stream_free(s);
}

/* May run in the middle of a broadcast, so it only writes the error: on_close does the rest. */
static void on_overflow(void *ud, net_conn *c) {
    if (net_conn_is_local(c)) {
        log_warn("admin socket: a client stopped reading; closing it");
        return;
    }
    stream *s = ud;
    log_warn("%s stopped reading: output bound passed", stream_name(s));
    if (!s->dead && s->state != ST_CLOSED)
        stream_puts(s, "<stream:error><policy-violation xmlns='" NS_STREAMS "'/></stream:error></stream:stream>");
    s->state = ST_CLOSED;
}

static void on_timer(void *ud, net_conn *c, time_t now) {
    if (net_conn_is_local(c)) {
        admin_link_timer(ud);
        return;
    }
    stream *s = ud;
    server *srv = s->srv;
    if (s->state == ST_CLOSED || s->dead) return;
    if (s->state != ST_ACTIVE) {
        stream_error(s, "connection-timeout", "no session was established in time");
        return;
    }
    time_t idle = now - net_conn_last_input(c);
    if (idle >= srv->cfg->idle_timeout) {
        /* a whitespace keepalive (RFC 6120 §4.6.1): lets TCP find a dead peer */
        stream_puts(s, " ");
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
        .default_public = cfg->muc_default_public, .lock_timeout = cfg->muc_lock_timeout,
        .archive_max = cfg->muc_archive_max, .archive_fsync = cfg->muc_archive_fsync,
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

static void on_alarm(void *ud, time_t now) {
    server *srv = ud;
    muc_service_tick(srv->muc, now);
}

static void on_signal(void *ud, int signo) {
    server *srv = ud;
    if (signo == SIGHUP) {
        server_reload(srv);
        return;
    }
    log_info("signal %d: closing every stream", signo);
    srv->stopping = 1;
    for (stream *s = srv->streams; s; s = s->next)
        stream_error(s, "system-shutdown", NULL);
    sessions_end_detached(srv, NULL, NULL);
    if (muc_service_flush(srv->muc) < 0) log_err("could not persist rooms at shutdown");
    net_loop_stop(srv->loop);
}

/* ---------------------------------------------------------------------------------------------------- */
/* the MUC service's way out                                                                            */

/* Rooms deliver to full JIDs (occupants) and, for invitations and the like, to bare JIDs. Only local users
 * are occupants today; -1 tells the room the occupant is gone (or its detached session holds no more). */
static int muc_deliver(void *ud, const char *to, const char *head, size_t hl, const char *tail, size_t tl) {
    server *srv = ud;
    jid j;
    if (jid_parse(to, &j) < 0 || strcmp(j.domain, srv->cfg->domain) != 0) return -1;
    account *a = account_find(srv, j.local);
    if (j.resource[0]) {
        session *t = account_session(a, j.resource);
        return t ? session_write_spliced(t, to, head, hl, tail, tl) : -1;
    }
    int best = account_best_priority(a), n = 0;
    for (session *t = a ? a->sessions : NULL; best >= 0 && t; t = t->acct_next)
        if (t->available && t->priority == best && session_write_spliced(t, to, head, hl, tail, tl) == 0) n++;
    return n ? 0 : -1;
}

/* the MUC service wants muc_service_tick later; muc_service_new may ask before the loop exists */
static void muc_wake(void *ud, int secs) {
    server *srv = ud;
    if (srv->loop) net_loop_alarm(srv->loop, secs);
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
    for (stream *s = srv->streams; s; s = s->next) {
        if (s->dead) continue;
        st->connections++;
        if (!s->sess) st->negotiating++;
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
    for (stream *s = srv->streams; s; s = s->next) {
        if (s->dead || !s->sess) continue;
        admin_session v = {s->sess->full_jid, net_conn_peer(s->conn), net_conn_tls_version(s->conn), s->since};
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
    for (stream *s = srv->streams; s; s = s->next) {  /* an ended stream stays listed until on_close */
        if (s->dead || s->state == ST_CLOSED || !s->user || strcmp(s->user, j->local)) continue;
        if (j->resource[0] && (!s->sess || strcmp(session_resource(s->sess), j->resource))) continue;
        log_info("%s kicked through the admin socket", stream_name(s));
        stream_error(s, "policy-violation", reason);
        n++;
    }
    n += sessions_end_detached(srv, j->local, j->resource[0] ? j->resource : NULL);
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
    muc_host mh = {.ud = srv, .deliver = muc_deliver, .is_admin = muc_is_admin, .wake = muc_wake};
    srv->muc = muc_service_new(&mc, &mh, err, errlen);
    if (!srv->muc) {
        server_free(srv);
        return NULL;
    }
    srv->router = router_new(srv->arena);
    if (!srv->router || router_add(srv->router, cfg->domain, local_route, srv) < 0 ||
        router_add(srv->router, cfg->muc_domain, muc_route, srv) < 0) {
        snprintf(err, errlen, "out of memory");
        server_free(srv);
        return NULL;
    }
    net_handlers h = {.ud = srv, .on_open = on_open, .on_data = on_data, .on_close = on_close,
                      .on_timer = on_timer, .on_signal = on_signal, .on_overflow = on_overflow,
                      .on_alarm = on_alarm};
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

router *server_router(server *srv) {
    return srv->router;
}

int server_session_detach(server *srv, const char *full_jid) {
    session *s = session_named(srv, full_jid);
    if (!s || !s->st) return -1;
    session_detach(s);
    return 0;
}

int server_session_end(server *srv, const char *full_jid) {
    session *s = session_named(srv, full_jid);
    if (!s) return -1;
    if (s->st) stream_close(s->st);
    else session_end(s);
    return 0;
}

unsigned server_session_held(server *srv, const char *full_jid) {
    session *s = session_named(srv, full_jid);
    return s ? s->held_count : 0;
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
    while (srv->streams) {
        stream *s = srv->streams;
        if (s->sess) s->sess->st = NULL;    /* detached: freed with the accounts below */
        s->dead = 1;
        stream_free(s);
    }
    if (srv->muc) muc_service_free(srv->muc);
    if (srv->store) auth_store_free(srv->store);
    for (size_t i = 0; i < srv->nbuckets; i++)
        while (srv->buckets[i]) {
            account *a = srv->buckets[i];
            srv->buckets[i] = a->hnext;
            session_free_quietly_all(a);
            free(a);
        }
    router_free(srv->router);
    free(srv->buckets);
    xml_arena_free(srv->arena);
    xml_buf_free(&srv->out);
    free(srv->auth_fails);
    free(srv->config_path);
    free(srv);
}
