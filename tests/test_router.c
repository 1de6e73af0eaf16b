/* test_router.c - the router (router.h) inside a whole server: clients log in over fuzz/fake_net.c, an
 * in-memory net_epoll with no sockets, and every check reads what a client would see, the bytes the server
 * wrote to its connection. Local full and bare JIDs, the MUC domain, unknown domains, a domain this test
 * registers, bounces of each stanza kind, malformed addresses, detached sessions (held stanzas, their
 * bounds, what happens to them when the session ends) and shutdown with a detached session present.
 * Every loop is bounded; the data directory is a fresh one under /tmp, removed at the end. */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#include "auth.h"
#include "config.h"
#include "fuzz/fake_net.h"
#include "jid.h"
#include "router.h"
#include "server.h"
#include "stanza.h"
#include "xml.h"

static char dir[] = "/tmp/couplet-router-XXXXXX";
static config cfg;
static server *srv;

/* ---- checks that say where they were made ---- */

static void expect(int line, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect(int line, int ok, const char *fmt, ...) {
    if (ok) {
        check_passed++;
        return;
    }
    check_failed++;
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define EXPECT(cond, ...) expect(__LINE__, (cond) ? 1 : 0, __VA_ARGS__)

/* an int-returning call gave want */
#define EXPECT_RC(call, want) do { \
    int r_ = (call); \
    expect(__LINE__, r_ == (want), "%s: expected %d, got %d", #call, (int)(want), r_); \
} while (0)

/* server_session_held(jid) is n */
#define EXPECT_HELD(full, n, what) do { \
    unsigned h_ = server_session_held(srv, full); \
    expect(__LINE__, h_ == (unsigned)(n), "server_session_held(%s), %s: expected %u, got %u", full, what, \
           (unsigned)(n), h_); \
} while (0)

static const char *nz(const char *s) {
    return s ? s : "(none)";
}

static int same(const char *a, const char *b) {
    return a && b && !strcmp(a, b);
}

/* ---- what a client saw: the stanzas written to its connection since the last look ---- */

#define GOT_MAX 256
typedef struct got {
    xml_node *st[GOT_MAX];
    unsigned n;
    int closed;         /* </stream:stream> came */
    int gone;           /* no such connection any more */
    int bad;            /* what came did not parse: the xml status */
    int over;           /* more than GOT_MAX stanzas */
    int empty_ns;       /* xmlns='' somewhere: an element out of jabber:client */
    char raw[2048];     /* the first bytes, for messages */
} got;

static xml_arena *ga;   /* the stanzas' copies; reset by each scenario */

static int got_open(void *ud, xml_node *root) {
    return 0;
}

static int got_stanza(void *ud, xml_node *n) {
    got *g = ud;
    xml_node *c = g->n < GOT_MAX ? xml_copy(ga, n) : NULL;
    if (c) g->st[g->n++] = c;
    else g->over = 1;
    return 0;
}

static int got_close(void *ud) {
    ((got *)ud)->closed = 1;
    return 0;
}

/* A client's view of what came since the last take: parsed as the inside of a stream, then forgotten. */
static void take(unsigned id, got *g) {
    static const xml_events ev = {got_open, got_stanza, got_close};
    static const char hdr[] = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    memset(g, 0, sizeof *g);
    net_conn *c = fake_conn(id);
    if (!c) {
        g->gone = 1;
        return;
    }
    size_t len;
    const char *data = fake_output(c, &len);
    snprintf(g->raw, sizeof g->raw, "%s", data);
    g->empty_ns = strstr(data, "xmlns=''") != NULL;
    xml_parser *p = xml_parser_new(NULL, &ev, g);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    int r = xml_parser_feed(p, hdr, sizeof hdr - 1, NULL);
    if (r == XML_OK && len) r = xml_parser_feed(p, data, len, NULL);
    if (r != XML_OK) g->bad = r;
    xml_parser_free(p);
    fake_output_clear(c);
}

/* What came, serialized, for failure messages. */
static const char *dump(const got *g) {
    static char text[4096];
    xml_buf b;
    xml_buf_init(&b);
    if (g->gone) xml_buf_puts(&b, "(connection gone)");
    if (!g->n) xml_buf_puts(&b, "(nothing)");
    for (unsigned i = 0; i < g->n && b.len < sizeof text; i++) {
        xml_serialize(&b, g->st[i], XML_NS_CLIENT);
        xml_buf_puts(&b, "\n    ");
    }
    if (g->closed) xml_buf_puts(&b, "</stream:stream>");
    if (g->bad) xml_buf_printf(&b, " (did not parse: %s; raw: %.300s)", xml_status_str(g->bad), g->raw);
    snprintf(text, sizeof text, "%s", b.data ? b.data : "");
    xml_buf_free(&b);
    return text;
}

static const char *ser(const xml_node *n) {
    static char text[2048];
    xml_buf b;
    xml_buf_init(&b);
    if (n) xml_serialize(&b, n, XML_NS_CLIENT);
    snprintf(text, sizeof text, "%s", n && b.data ? b.data : "(none)");
    xml_buf_free(&b);
    return text;
}

/* the first stanza named name with this id (id NULL: any) */
static xml_node *find(const got *g, const char *name, const char *id) {
    for (unsigned i = 0; i < g->n; i++)
        if (!strcmp(g->st[i]->name, name) && (!id || same(xml_attr_get(g->st[i], "id"), id))) return g->st[i];
    return NULL;
}

static unsigned count(const got *g, const char *name, const char *type) {
    unsigned n = 0;
    for (unsigned i = 0; i < g->n; i++)
        if (!strcmp(g->st[i]->name, name) && (!type || !strcmp(stanza_type(g->st[i]), type))) n++;
    return n;
}

/* the error's type and its defined condition (the child in the stanzas namespace) */
static const char *err_type(const xml_node *st) {
    return xml_attr_get(xml_child(st, "error", XML_NS_CLIENT), "type");
}

static const char *err_cond(const xml_node *st) {
    const xml_node *c = xml_child(xml_child(st, "error", XML_NS_CLIENT), NULL, NS_STANZAS);
    return c ? c->name : NULL;
}

/* An error reply came for the stanza named name with this id: type, condition, from and to as given. */
static void expect_error(int line, const got *g, const char *name, const char *id, const char *type,
                         const char *cond, const char *from, const char *to) {
    const xml_node *e = find(g, name, id);
    expect(line, e != NULL, "expected an error <%s id='%s'>, got:\n    %s", name, id, dump(g));
    if (!e) return;
    int ok = same(stanza_type(e), "error") && same(err_type(e), type) && same(err_cond(e), cond) &&
             (!from || same(xml_attr_get(e, "from"), from)) && same(xml_attr_get(e, "to"), to);
    expect(line, ok,
           "expected <%s type='error' id='%s' from='%s' to='%s'><error type='%s'><%s/>, got:\n    %s", name, id,
           nz(from), to, type, cond, ser(e));
}

/* The client saw exactly n stanzas. */
static void expect_count(int line, const got *g, unsigned n, const char *what) {
    expect(line, g->n == n && !g->bad && !g->over && !g->gone, "%s: expected %u stanzas, got %u:\n    %s", what, n,
           g->n, dump(g));
}

#define EXPECT_ERROR(g, name, id, type, cond, from, to) expect_error(__LINE__, g, name, id, type, cond, from, to)
#define EXPECT_COUNT(g, n, what) expect_count(__LINE__, g, n, what)

/* ---- a client over fake_net ---- */

#define HDR "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' " \
            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"

/* Deliver bytes, without ending the turn. */
static void push(unsigned id, const char *s) {
    net_conn *c = fake_conn(id);
    EXPECT(c != NULL, "connection %u is gone: cannot send %.80s", id, s);
    if (c) fake_deliver(c, s, strlen(s));
}

/* Deliver bytes and end the loop turn. */
static void sendx(unsigned id, const char *s) {
    push(id, s);
    fake_settle();
}

static void base64(const unsigned char *in, size_t n, char *out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = 0;
}

/* Whatever the connection has, as text (the raw bytes since the last clear), then clear it. */
static const char *raw_take(unsigned id) {
    static char text[8192];
    net_conn *c = fake_conn(id);
    snprintf(text, sizeof text, "%s", c ? fake_output(c, NULL) : "(connection gone)");
    if (c) fake_output_clear(c);
    return text;
}

/* Log in as user with password pass, bind resource res and, if available, send initial presence. Returns
 * the connection's id (0 when it failed; every step is checked). What the login wrote is cleared. */
static unsigned login_at(int line, const char *user, const char *pass, const char *res, int available) {
    unsigned id = fake_accept(0);
    expect(line, id != 0, "login %s/%s: the connection was refused", user, res);
    if (!id) return 0;
    const char *out;
    sendx(id, HDR);
    out = raw_take(id);
    expect(line, strstr(out, "<stream:stream") && strstr(out, "<mechanism>PLAIN</mechanism>"),
           "login %s/%s: expected a stream header and PLAIN offered, got: %s", user, res, out);

    unsigned char creds[256];
    size_t ul = strlen(user), pl = strlen(pass);
    creds[0] = 0;
    memcpy(creds + 1, user, ul);
    creds[1 + ul] = 0;
    memcpy(creds + 2 + ul, pass, pl);
    char b64[400], buf[1024];
    base64(creds, ul + pl + 2, b64);
    snprintf(buf, sizeof buf, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    sendx(id, buf);
    out = raw_take(id);
    expect(line, strstr(out, "<success") != NULL, "login %s/%s: expected <success/>, got: %s", user, res, out);

    sendx(id, HDR);
    out = raw_take(id);
    expect(line, strstr(out, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>") != NULL,
           "login %s/%s: expected the bind feature after the restart, got: %s", user, res, out);

    snprintf(buf, sizeof buf,
             "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
             "</bind></iq>", res);
    sendx(id, buf);
    char want[300];
    snprintf(want, sizeof want, "<jid>%s@localhost/%s</jid>", user, res);
    out = raw_take(id);
    expect(line, strstr(out, "type='result'") && strstr(out, want), "login %s/%s: expected the bind result with %s, got: %s",
           user, res, want, out);
    if (available) sendx(id, "<presence/>");
    if (fake_conn(id)) fake_output_clear(fake_conn(id));
    return fake_conn(id) ? id : 0;
}

#define login(user, pass, res, available) login_at(__LINE__, user, pass, res, available)

/* ---- the scenarios ---- */

#define A_FULL "alice@localhost/pc"
#define B_FULL "bob@localhost/phone"
#define B_BARE "bob@localhost"
#define NOWHERE "someone@nowhere.example"

static unsigned A, B;

static void scene(const char *name) {
    xml_arena_reset(ga);
    (void)name;
}

/* 1. two clients log in: header, SASL PLAIN, restart, bind, initial presence */
static void test_login(void) {
    scene("login");
    A = login("alice", "wonderland", "pc", 1);
    B = login("bob", "builder", "phone", 1);
    EXPECT(A && B, "both clients logged in (A %u, B %u)", A, B);
    EXPECT(router_count(server_router(srv)) == 2, "the local and the rooms' domain are registered: %u routes",
           router_count(server_router(srv)));
    EXPECT(router_serves(server_router(srv), "localhost") && router_serves(server_router(srv), "conference.localhost"),
           "localhost and conference.localhost are served");
    EXPECT(!router_serves(server_router(srv), "nowhere.example"), "nowhere.example is not served");
}

/* 2. a local full JID: the stanza arrives from the sender's full JID, whatever 'from' the sender wrote */
static void test_local_full(void) {
    scene("local full");
    got g;
    sendx(A, "<message to='" B_FULL "' from='mallory@evil.example/x' type='chat' id='f1'><body>hi</body></message>");
    take(B, &g);
    EXPECT_COUNT(&g, 1, "B, a message to its full JID");
    xml_node *m = find(&g, "message", "f1");
    EXPECT(m && same(xml_attr_get(m, "from"), A_FULL) && same(xml_attr_get(m, "to"), B_FULL) &&
               same(stanza_type(m), "chat") && same(xml_text(xml_child(m, "body", NULL)), "hi"),
           "expected <message from='" A_FULL "' to='" B_FULL "' type='chat' id='f1'><body>hi</body>, got: %s", ser(m));
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, after a message delivered");

    /* an IQ to a full JID goes to that session, and its result comes back the same way */
    sendx(A, "<iq to='" B_FULL "' from='" B_FULL "' type='get' id='f2'><query xmlns='jabber:iq:version'/></iq>");
    take(B, &g);
    xml_node *iq = find(&g, "iq", "f2");
    EXPECT(iq && same(xml_attr_get(iq, "from"), A_FULL) && same(stanza_type(iq), "get") &&
               xml_child(iq, "query", "jabber:iq:version"),
           "expected B to get <iq type='get' from='" A_FULL "' id='f2'><query/>, got:\n    %s", dump(&g));
    sendx(B, "<iq to='" A_FULL "' type='result' id='f2'/>");
    take(A, &g);
    iq = find(&g, "iq", "f2");
    EXPECT(g.n == 1 && iq && same(xml_attr_get(iq, "from"), B_FULL) && same(stanza_type(iq), "result"),
           "expected A to get <iq type='result' from='" B_FULL "' id='f2'/>, got:\n    %s", dump(&g));
}

/* 3. a local bare JID: the account's available session gets it */
static void test_local_bare(void) {
    scene("local bare");
    got g;
    sendx(A, "<message to='" B_BARE "' type='chat' id='b1'><body>bare</body></message>");
    take(B, &g);
    EXPECT_COUNT(&g, 1, "B, a message to its bare JID");
    xml_node *m = find(&g, "message", "b1");
    EXPECT(m && same(xml_attr_get(m, "from"), A_FULL) && same(xml_attr_get(m, "to"), B_BARE) &&
               same(xml_text(xml_child(m, "body", NULL)), "bare"),
           "expected <message from='" A_FULL "' to='" B_BARE "' id='b1'><body>bare</body>, got: %s", ser(m));
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, after a message to a bare JID delivered");

    /* XEP-0249: a direct invitation is an ordinary message, delivered with its payload untouched */
    sendx(A, "<message to='" B_BARE "' id='inv1'><x xmlns='jabber:x:conference' jid='room@conference.localhost' "
             "password='pw' reason='join us'/></message>");
    take(B, &g);
    m = find(&g, "message", "inv1");
    const xml_node *x = m ? xml_child(m, "x", "jabber:x:conference") : NULL;
    EXPECT(x && same(xml_attr_get(x, "jid"), "room@conference.localhost") && same(xml_attr_get(x, "password"), "pw") &&
               same(xml_attr_get(x, "reason"), "join us") && same(xml_attr_get(m, "from"), A_FULL),
           "expected the invitation <x xmlns='jabber:x:conference' jid password reason/> from " A_FULL ", got: %s",
           ser(m));

    /* a presence subscription to the server's own domain is addressed to nobody: no answer at all (and never
     * one "from" the invalid '@localhost') */
    sendx(A, "<presence type='subscribe' to='localhost' id='ps1'/>");
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, after a subscription request to the server's domain");

    /* a local account that does not exist: service-unavailable from the local domain */
    sendx(A, "<message to='nobody@localhost' type='chat' id='b2'><body>?</body></message>");
    take(A, &g);
    EXPECT_ERROR(&g, "message", "b2", "cancel", "service-unavailable", "nobody@localhost", A_FULL);
}

/* 4. the MUC domain: joining a room answers with the room's self-presence */
static void test_muc_domain(void) {
    scene("muc");
    got g;
    sendx(A, "<presence to='room@conference.localhost/alice' id='j1'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    take(A, &g);
    int self = 0;
    for (unsigned i = 0; i < g.n; i++) {
        const xml_node *p = g.st[i];
        if (strcmp(p->name, "presence") != 0 || !same(xml_attr_get(p, "from"), "room@conference.localhost/alice"))
            continue;
        const xml_node *x = xml_child(p, "x", "http://jabber.org/protocol/muc#user");
        for (const xml_node *s = xml_child(x, "status", NULL); s; s = xml_next_child(s, "status", NULL))
            if (same(xml_attr_get(s, "code"), "110") || same(xml_attr_get(s, "code"), "201")) self = 1;
    }
    EXPECT(self, "expected the room's self-presence (status 110 or 201) from room@conference.localhost/alice, got:\n    %s",
           dump(&g));
    EXPECT(count(&g, "presence", "error") == 0, "no presence error from the room, got:\n    %s", dump(&g));
}

/* 5. a domain nobody serves: remote-server-not-found, from the address, to the sender, same id */
static void test_unknown_domain(void) {
    scene("unknown domain");
    got g;
    sendx(A, "<message to='" NOWHERE "' type='chat' id='u1'><body>x</body></message>");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, a message to an unknown domain");
    EXPECT_ERROR(&g, "message", "u1", "cancel", "remote-server-not-found", NOWHERE, A_FULL);

    sendx(A, "<iq to='" NOWHERE "' type='get' id='u2'><ping xmlns='urn:xmpp:ping'/></iq>");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, an iq get to an unknown domain");
    EXPECT_ERROR(&g, "iq", "u2", "cancel", "remote-server-not-found", NOWHERE, A_FULL);

    sendx(A, "<presence to='" NOWHERE "' type='subscribe' id='u3'/>");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, a subscription request to an unknown domain");
    EXPECT_ERROR(&g, "presence", "u3", "cancel", "remote-server-not-found", NOWHERE, A_FULL);

    /* an error is never answered with an error */
    sendx(A, "<message to='" NOWHERE "' type='error' id='u4'><error type='cancel'>"
             "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, an error message to an unknown domain");

    /* the domain part is compared normalised: case and a trailing dot change nothing */
    sendx(A, "<message to='Someone@NOWHERE.Example.' type='chat' id='u5'><body>x</body></message>");
    take(A, &g);
    EXPECT_ERROR(&g, "message", "u5", "cancel", "remote-server-not-found", "Someone@NOWHERE.Example.", A_FULL);
    take(B, &g);
    EXPECT_COUNT(&g, 0, "B, while A talks to an unknown domain");
}

/* 6. a domain the test registers */
typedef struct rec {
    router *r;
    unsigned n;             /* stanzas taken */
    int bounce;             /* bounce each with item-not-found */
    char name[16], type[16], id[32], from[128];
    char to_local[JID_PART_MAX + 1], to_domain[JID_PART_MAX + 1], to_res[JID_PART_MAX + 1];
    int had_to;
    char xml[2048];         /* the stanza as the handler got it */
} rec;

static void rec_handler(void *ud, xml_node *st, const jid *to) {
    rec *r = ud;
    r->n++;
    snprintf(r->name, sizeof r->name, "%s", st->name);
    snprintf(r->type, sizeof r->type, "%s", stanza_type(st));
    snprintf(r->id, sizeof r->id, "%s", nz(xml_attr_get(st, "id")));
    snprintf(r->from, sizeof r->from, "%s", nz(xml_attr_get(st, "from")));
    r->had_to = to != NULL;
    snprintf(r->to_local, sizeof r->to_local, "%s", to ? to->local : "");
    snprintf(r->to_domain, sizeof r->to_domain, "%s", to ? to->domain : "");
    snprintf(r->to_res, sizeof r->to_res, "%s", to ? to->resource : "");
    xml_buf b;
    xml_buf_init(&b);
    xml_serialize(&b, st, XML_NS_CLIENT);
    snprintf(r->xml, sizeof r->xml, "%s", b.data ? b.data : "");
    xml_buf_free(&b);
    if (r->bounce) router_bounce(r->r, st, "cancel", "item-not-found", NULL);
}

static rec R;

/* The handler took one more stanza: name, type, id, from A, to x@test.example/r. */
static void expect_taken(int line, unsigned n_before, const char *name, const char *type, const char *id) {
    expect(line, R.n == n_before + 1, "the test domain's handler: expected %u stanzas, got %u", n_before + 1, R.n);
    expect(line,
           same(R.name, name) && same(R.type, type) && same(R.id, id) && same(R.from, A_FULL) && R.had_to &&
               same(R.to_local, "x") && same(R.to_domain, "test.example") && same(R.to_res, "r"),
           "the handler expected <%s type='%s' id='%s' from='" A_FULL "'> to x@test.example/r, got <%s type='%s' "
           "id='%s' from='%s'> to %s@%s/%s: %s",
           name, type, id, R.name, R.type, R.id, R.from, R.to_local, R.to_domain, R.to_res, R.xml);
}

#define EXPECT_TAKEN(n_before, name, type, id) expect_taken(__LINE__, n_before, name, type, id)

static void test_registered_domain(void) {
    scene("registered domain");
    got g;
    router *r = server_router(srv);
    memset(&R, 0, sizeof R);
    R.r = r;
    EXPECT_RC(router_add(r, "test.example", rec_handler, &R), 0);
    EXPECT_RC(router_add(r, "test.example", rec_handler, &R), -1);
    EXPECT_RC(router_add(r, "localhost", rec_handler, &R), -1);
    EXPECT(router_count(r) == 3 && router_serves(r, "test.example"), "3 routes, test.example served: %u", router_count(r));

    unsigned n = R.n;
    sendx(A, "<message to='x@test.example/r' from='eve@localhost/forged' type='chat' id='t1'><body>t</body></message>");
    EXPECT_TAKEN(n, "message", "chat", "t1");
    EXPECT(strstr(R.xml, "<body>t</body>") != NULL, "the message's body reached the handler: %s", R.xml);

    n = R.n;
    sendx(A, "<iq to='x@test.example/r' type='get' id='t2'><ping xmlns='urn:xmpp:ping'/></iq>");
    EXPECT_TAKEN(n, "iq", "get", "t2");
    EXPECT(strstr(R.xml, "urn:xmpp:ping") != NULL, "the iq's payload reached the handler: %s", R.xml);

    n = R.n;
    sendx(A, "<presence to='x@test.example/r' id='t3'/>");
    EXPECT_TAKEN(n, "presence", "", "t3");
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, while the handler takes and answers nothing");

    /* the domain is matched normalised */
    n = R.n;
    sendx(A, "<message to='X@Test.Example/r' type='chat' id='t3b'><body>t</body></message>");
    EXPECT_TAKEN(n, "message", "chat", "t3b");

    /* the handler bounces: the error travels back to A through the router */
    R.bounce = 1;
    n = R.n;
    sendx(A, "<message to='x@test.example/r' type='chat' id='t4'><body>t</body></message>");
    EXPECT_TAKEN(n, "message", "chat", "t4");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, after the handler bounced a message");
    EXPECT_ERROR(&g, "message", "t4", "cancel", "item-not-found", "x@test.example/r", A_FULL);

    n = R.n;
    sendx(A, "<iq to='x@test.example/r' type='set' id='t5'><query xmlns='jabber:iq:private'/></iq>");
    EXPECT_TAKEN(n, "iq", "set", "t5");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, after the handler bounced an iq");
    EXPECT_ERROR(&g, "iq", "t5", "cancel", "item-not-found", "x@test.example/r", A_FULL);
    R.bounce = 0;

    /* the directed presence was remembered: A going unavailable tells the handler's domain */
    n = R.n;
    sendx(A, "<presence type='unavailable'/>");
    EXPECT(R.n == n + 1 && same(R.name, "presence") && same(R.type, "unavailable") && same(R.from, A_FULL) &&
               same(R.to_local, "x") && same(R.to_res, "r"),
           "expected the handler to get <presence type='unavailable' from='" A_FULL "'> to x@test.example/r "
           "(%u stanzas before, %u now), got: %s", n, R.n, R.xml);
    sendx(A, "<presence/>");
    take(A, &g);

    /* removed: the domain is unknown again */
    EXPECT_RC(router_remove(r, "test.example"), 0);
    EXPECT_RC(router_remove(r, "test.example"), -1);
    EXPECT(router_count(r) == 2 && !router_serves(r, "test.example"), "2 routes left: %u", router_count(r));
    n = R.n;
    sendx(A, "<message to='x@test.example/r' type='chat' id='t6'><body>t</body></message>");
    EXPECT(R.n == n, "the removed handler took nothing: %u stanzas, had %u", R.n, n);
    take(A, &g);
    EXPECT_ERROR(&g, "message", "t6", "cancel", "remote-server-not-found", "x@test.example/r", A_FULL);
}

/* 7. bounces of every kind of stanza: requests are answered with an error, errors and results never */
static void test_bounce_kinds(void) {
    scene("bounce kinds");
    got g;
    static const struct {
        const char *xml, *name, *id;
        int answered;
    } cases[] = {
        {"<message to='" NOWHERE "/r' type='chat' id='k1'><body>x</body></message>", "message", "k1", 1},
        {"<message to='" NOWHERE "/r' id='k2'><body>normal</body></message>", "message", "k2", 1},
        {"<iq to='" NOWHERE "/r' type='get' id='k3'><ping xmlns='urn:xmpp:ping'/></iq>", "iq", "k3", 1},
        {"<iq to='" NOWHERE "/r' type='set' id='k4'><query xmlns='jabber:iq:private'/></iq>", "iq", "k4", 1},
        {"<presence to='" NOWHERE "/r' id='k5'/>", "presence", "k5", 1},
        {"<iq to='" NOWHERE "/r' type='result' id='k6'/>", "iq", "k6", 0},
        {"<iq to='" NOWHERE "/r' type='error' id='k7'><error type='cancel'>"
         "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", "iq", "k7", 0},
        {"<message to='" NOWHERE "/r' type='error' id='k8'><error type='cancel'>"
         "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>", "message", "k8", 0},
        {"<presence to='" NOWHERE "/r' type='error' id='k9'><error type='cancel'>"
         "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>", "presence", "k9", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sendx(A, cases[i].xml);
        take(A, &g);
        if (cases[i].answered) {
            EXPECT_COUNT(&g, 1, cases[i].id);
            EXPECT_ERROR(&g, cases[i].name, cases[i].id, "cancel", "remote-server-not-found", NOWHERE "/r", A_FULL);
        } else {
            EXPECT_COUNT(&g, 0, cases[i].id);
        }
    }
    take(B, &g);
    EXPECT_COUNT(&g, 0, "B, while A's stanzas bounce");
    /* A's stream survived all of it */
    sendx(A, "<iq type='get' id='k10'><ping xmlns='urn:xmpp:ping'/></iq>");
    take(A, &g);
    xml_node *iq = find(&g, "iq", "k10");
    EXPECT(iq && same(stanza_type(iq), "result"), "A's ping after the bounces: expected a result, got:\n    %s", dump(&g));
}

/* 8. a malformed 'to': jid-malformed, modify */
static void test_malformed_to(void) {
    scene("malformed");
    got g;
    jid j;
    EXPECT(jid_parse("a@b@c", &j) < 0 && jid_parse("bad\"q@localhost", &j) < 0 && jid_parse("@localhost", &j) < 0,
           "the addresses below are malformed JIDs");

    sendx(A, "<message to='a@b@c' type='chat' id='x1'><body>x</body></message>");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, a message to a@b@c");
    EXPECT_ERROR(&g, "message", "x1", "modify", "jid-malformed", NULL, A_FULL);

    sendx(A, "<message to='bad&quot;q@localhost' type='chat' id='x2'><body>x</body></message>");
    take(A, &g);
    EXPECT_ERROR(&g, "message", "x2", "modify", "jid-malformed", NULL, A_FULL);

    sendx(A, "<iq to='@localhost' type='get' id='x3'><ping xmlns='urn:xmpp:ping'/></iq>");
    take(A, &g);
    EXPECT_ERROR(&g, "iq", "x3", "modify", "jid-malformed", NULL, A_FULL);

    sendx(A, "<presence to='x@y@z' id='x4'/>");
    take(A, &g);
    EXPECT_ERROR(&g, "presence", "x4", "modify", "jid-malformed", NULL, A_FULL);

    /* and an error to a malformed address is dropped, like any error */
    sendx(A, "<message to='a@b@c' type='error' id='x5'/>");
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, an error message to a malformed address");
    take(B, &g);
    EXPECT_COUNT(&g, 0, "B, while A sends to malformed addresses");
}

/* A sends n chat messages to `to`, ids prefix<first>..prefix<first+n-1>, each with body (NULL: "m"). */
static void send_messages(const char *to, const char *prefix, unsigned first, unsigned n, const char *body) {
    char *buf = malloc(strlen(body ? body : "m") + 512);
    if (!buf) exit(2);
    for (unsigned i = 0; i < n; i++) {
        sprintf(buf, "<message to='%s' type='chat' id='%s%u'><body>%s</body></message>", to, prefix, first + i,
                body ? body : "m");
        push(A, buf);
    }
    fake_settle();
    free(buf);
}

/* 9. a detached session holds, within bounds; ending it settles what it held */
static void test_detached(void) {
    scene("detached");
    got g;
    EXPECT_HELD(B_FULL, 0, "an attached session");
    EXPECT_RC(server_session_detach(srv, B_FULL), 0);
    net_conn *bc = fake_conn(B);
    EXPECT(bc && fake_conn_closing(bc), "B's connection is closing after the detach");
    take(B, &g);
    EXPECT(g.closed && count(&g, "presence", NULL) == 0,
           "B's stream: expected </stream:stream> and no presence, got:\n    %s", dump(&g));
    fake_settle();
    EXPECT(fake_conn(B) == NULL, "B's connection is gone at the end of the turn");
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, when B detached (no presence for a detached session)");
    EXPECT_RC(server_session_detach(srv, B_FULL), -1);

    /* held: three messages and an iq get */
    send_messages(B_FULL, "h", 1, 3, NULL);
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, three messages to a detached session");
    EXPECT_HELD(B_FULL, 3, "after 3 messages");
    sendx(A, "<iq to='" B_FULL "' type='get' id='hq1'><query xmlns='jabber:iq:version'/></iq>");
    take(A, &g);
    EXPECT_COUNT(&g, 0, "A, an iq get to a detached session");
    EXPECT_HELD(B_FULL, 4, "after 3 messages and an iq");

    /* 70 more: 60 fit (64 in all), 10 bounce */
    send_messages(B_FULL, "h", 4, 70, NULL);
    EXPECT_HELD(B_FULL, 64, "after 74 stanzas (the bound is 64)");
    take(A, &g);
    EXPECT_COUNT(&g, 10, "A, the stanzas beyond the bound");
    for (unsigned i = 64; i <= 73; i++) {
        char id[16];
        snprintf(id, sizeof id, "h%u", i);
        EXPECT_ERROR(&g, "message", id, "cancel", "service-unavailable", B_FULL, A_FULL);
    }
    /* an iq beyond the bound bounces at once */
    sendx(A, "<iq to='" B_FULL "' type='get' id='hq2'><query xmlns='jabber:iq:version'/></iq>");
    take(A, &g);
    EXPECT_COUNT(&g, 1, "A, an iq get to a full detached session");
    EXPECT_ERROR(&g, "iq", "hq2", "cancel", "service-unavailable", B_FULL, A_FULL);
    EXPECT_HELD(B_FULL, 64, "after an iq beyond the bound");

    /* another session of B's account, then the detached one ends */
    unsigned B2 = login("bob", "builder", "tablet", 1);
    take(A, &g);
    EXPECT_RC(server_session_end(srv, "nobody@localhost/x"), -1);
    EXPECT_RC(server_session_end(srv, "not@a@jid"), -1);
    EXPECT_HELD("nobody@localhost/x", 0, "an unknown JID");
    EXPECT_RC(server_session_end(srv, B_FULL), 0);
    EXPECT_HELD(B_FULL, 0, "once ended");
    EXPECT_RC(server_session_end(srv, B_FULL), -1);

    take(B2, &g);
    /* the 63 held messages, in order, to the bare JID; the ended session's unavailable presence */
    unsigned msgs = count(&g, "message", NULL), order_ok = 1, k = 0;
    for (unsigned i = 0; i < g.n; i++) {
        const xml_node *m = g.st[i];
        if (strcmp(m->name, "message") != 0) continue;
        char id[16];
        k++;
        snprintf(id, sizeof id, "h%u", k);
        if (!same(xml_attr_get(m, "id"), id) || !same(xml_attr_get(m, "to"), B_BARE) ||
            !same(xml_attr_get(m, "from"), A_FULL) || !same(stanza_type(m), "chat")) {
            if (order_ok)
                fprintf(stderr, "  message %u: expected id %s to " B_BARE " from " A_FULL ", got: %s\n", k, id, ser(m));
            order_ok = 0;
        }
    }
    EXPECT(msgs == 63 && order_ok, "B2: expected the 63 held messages h1..h63 re-addressed to " B_BARE
           ", got %u (order and addresses %s):\n    %s", msgs, order_ok ? "right" : "wrong", dump(&g));
    EXPECT(!g.bad, "B2's output parses: %s", dump(&g));
    /* what a session held is re-parsed when it ends; it must come out in jabber:client like anything else */
    unsigned foreign = 0;
    for (unsigned i = 0; i < g.n; i++)
        if (strcmp(g.st[i]->ns, XML_NS_CLIENT) != 0) foreign++;
    EXPECT(!g.empty_ns && !foreign, "B2: %u of %u stanzas came out of the jabber:client namespace: %.300s", foreign,
           g.n, g.raw);
    const xml_node *un = find(&g, "presence", NULL);
    EXPECT(un && same(stanza_type(un), "unavailable") && same(xml_attr_get(un, "from"), B_FULL),
           "B2 is told " B_FULL " went unavailable, got:\n    %s", dump(&g));

    take(A, &g);
    EXPECT_ERROR(&g, "iq", "hq1", "cancel", "service-unavailable", B_FULL, A_FULL);
    EXPECT(count(&g, "iq", NULL) == 1 && count(&g, "message", NULL) == 0,
           "A: only the held iq is answered, no message bounces, got:\n    %s", dump(&g));

    /* B2 is an ordinary session: it still gets what A sends */
    sendx(A, "<message to='bob@localhost/tablet' type='chat' id='h99'><body>m</body></message>");
    take(B2, &g);
    EXPECT(find(&g, "message", "h99") != NULL, "B2 gets a message after the settlement, got:\n    %s", dump(&g));
    B = B2;
}

/* 10. a detached session that is its account's only one: held stanzas bounce when it ends, the account goes */
static void test_detached_only(void) {
    scene("detached only");
    got g;
    unsigned C = login("carol", "c4r0l", "r", 1);
    EXPECT(C != 0, "carol logged in");
    EXPECT_RC(server_session_detach(srv, "carol@localhost/r"), 0);
    fake_settle();
    EXPECT(fake_conn(C) == NULL, "carol's connection is gone");

    send_messages("carol@localhost/r", "c", 1, 2, NULL);
    sendx(A, "<iq to='carol@localhost/r' type='set' id='cq'><query xmlns='jabber:iq:private'/></iq>");
    EXPECT_HELD("carol@localhost/r", 3, "after 2 messages and an iq");
    /* the byte bound: messages of about 5000 bytes, 64 KiB in all */
    char *body = malloc(5001);
    if (!body) exit(2);
    memset(body, 'z', 5000);
    body[5000] = 0;
    send_messages("carol@localhost/r", "c", 3, 20, body);
    free(body);
    unsigned held = server_session_held(srv, "carol@localhost/r");
    take(A, &g);
    EXPECT(held >= 3 + 11 && held <= 3 + 13, "held with 5000-byte messages: %u (64 KiB allow 12 besides the 3 small)",
           held);
    EXPECT(g.n == 23 - held && count(&g, "message", "error") == g.n,
           "A: the %u big messages that did not fit bounce, got %u:\n    %s", 23 - held, g.n, dump(&g));
    for (unsigned i = 0; i < g.n; i++)
        EXPECT(same(err_cond(g.st[i]), "service-unavailable"), "a big message's bounce: %s", ser(g.st[i]));

    EXPECT_RC(server_session_end(srv, "carol@localhost/r"), 0);
    take(A, &g);
    /* the held messages find no other session: each bounces; the iq is answered */
    EXPECT_ERROR(&g, "iq", "cq", "cancel", "service-unavailable", "carol@localhost/r", A_FULL);
    EXPECT_ERROR(&g, "message", "c1", "cancel", "service-unavailable", NULL, A_FULL);
    EXPECT(count(&g, "message", "error") == held - 1 && count(&g, "iq", "error") == 1,
           "A: expected %u message errors and 1 iq error once carol's only session ended, got:\n    %s", held - 1,
           dump(&g));
    EXPECT_RC(server_session_end(srv, "carol@localhost/r"), -1);
    EXPECT_HELD("carol@localhost/r", 0, "once ended");
    /* a new login of the same account works (the account entry was freed and is made again) */
    C = login("carol", "c4r0l", "r", 1);
    EXPECT(C != 0, "carol logs in again");
    sendx(A, "<message to='carol@localhost' type='chat' id='c99'><body>again</body></message>");
    take(C, &g);
    EXPECT(find(&g, "message", "c99") != NULL, "carol gets a message after logging in again, got:\n    %s", dump(&g));
    sendx(C, "</stream:stream>");
}

/* Binding the resource of a detached session replaces it: the old one ends (and settles) first. */
static void test_detached_replaced(void) {
    scene("detached replaced");
    got g;
    unsigned D = login("dave", "d4v3", "r", 1);
    EXPECT_RC(server_session_detach(srv, "dave@localhost/r"), 0);
    fake_settle();
    send_messages("dave@localhost/r", "d", 1, 2, NULL);
    EXPECT_HELD("dave@localhost/r", 2, "after 2 messages");
    take(A, &g);
    D = login("dave", "d4v3", "r", 1);
    EXPECT(D != 0, "dave binds the same resource again");
    EXPECT_HELD("dave@localhost/r", 0, "the new, attached session");
    take(A, &g);
    /* Today the old session ends before the new one is made, so it has nobody to hand its messages to and
     * they bounce (from the bare JID). Stream resumption may change this: then they could go to the new one. */
    EXPECT(count(&g, "message", "error") == 2, "A: the held messages bounce when their session is replaced, got:\n    %s",
           dump(&g));
    sendx(A, "<message to='dave@localhost/r' type='chat' id='d9'><body>m</body></message>");
    take(D, &g);
    EXPECT(find(&g, "message", "d9") != NULL, "the new session gets messages, got:\n    %s", dump(&g));
    sendx(D, "</stream:stream>");
}

/* 11. shutdown (SIGTERM) with a detached session present */
static void test_shutdown_signal(void) {
    scene("shutdown");
    got g;
    unsigned E = login("erin", "3r1n", "r", 1);
    EXPECT_RC(server_session_detach(srv, "erin@localhost/r"), 0);
    fake_settle();
    EXPECT(fake_conn(E) == NULL, "erin's connection is gone");
    send_messages("erin@localhost/r", "e", 1, 3, NULL);
    sendx(A, "<iq to='erin@localhost/r' type='get' id='eq'><query xmlns='jabber:iq:version'/></iq>");
    EXPECT_HELD("erin@localhost/r", 4, "after 3 messages and an iq");
    take(A, &g);
    fake_signal(SIGTERM);
    take(A, &g);
    const xml_node *e = find(&g, "error", NULL);
    EXPECT(e && strcmp(e->ns, "http://etherx.jabber.org/streams") == 0 && xml_child(e, "system-shutdown", NULL) &&
               g.closed,
           "A at shutdown: expected <stream:error><system-shutdown/></stream:error></stream:stream>, got:\n    %s",
           dump(&g));
    EXPECT_HELD("erin@localhost/r", 0, "after SIGTERM");
    EXPECT_RC(server_session_end(srv, "erin@localhost/r"), -1);
    fake_settle();
    EXPECT(fake_conn(A) == NULL && fake_conn(B) == NULL, "every connection is closed after the shutdown turn");
    fake_close_all();
    server_free(srv);
    srv = NULL;
}

/* 11b. server_free with a detached session holding stanzas, no signal, connections still open */
static void test_free_with_detached(void) {
    scene("free with detached");
    char err[256];
    srv = server_new(&cfg, NULL, err, sizeof err);
    EXPECT(srv != NULL, "a second server starts: %s", srv ? "" : err);
    if (!srv) return;
    A = login("alice", "wonderland", "pc", 1);
    B = login("bob", "builder", "phone", 1);
    unsigned B2 = login("bob", "builder", "tablet", 0);
    EXPECT(A && B && B2, "logged in again");
    EXPECT_RC(server_session_detach(srv, B_FULL), 0);
    fake_settle();
    send_messages(B_FULL, "z", 1, 5, NULL);
    sendx(A, "<iq to='" B_FULL "' type='get' id='zq'><query xmlns='jabber:iq:version'/></iq>");
    EXPECT_HELD(B_FULL, 6, "after 5 messages and an iq");
    server_free(srv);      /* the loop and its connections go first, then the streams, then the sessions */
    srv = NULL;
}

/* ---- setup ---- */

static void remove_tree(const char *path, int depth) {
    DIR *d = depth < 3 ? opendir(path) : NULL;
    if (d) {
        struct dirent *de;
        char p[1024];
        unsigned n = 0;
        while ((de = readdir(d)) && n++ < 10000) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", path, de->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p, depth + 1);
            else unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

int main(void) {
    char err[256];
    log_level = -1;
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    auth_store *st = auth_store_open(dir, 64, err, sizeof err);
    static const char *const users[][2] = {{"alice", "wonderland"}, {"bob", "builder"}, {"carol", "c4r0l"},
                                           {"dave", "d4v3"},        {"erin", "3r1n"}};
    int ok = st != NULL;
    for (size_t i = 0; ok && i < sizeof users / sizeof users[0]; i++) ok = auth_user_add(st, users[i][0], users[i][1]) == 0;
    auth_store_free(st);
    if (!ok) {
        fprintf(stderr, "cannot make the accounts in %s: %s\n", dir, st ? "auth_user_add failed" : err);
        remove_tree(dir, 0);
        return 2;
    }

    config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.c2s_port = 5222;            /* never bound: fake_net only records the listener */
    cfg.c2s_tls_port = 0;
    cfg.require_encryption = 0;
    cfg.scram_iterations = 64;
    cfg.admin_socket[0] = 0;
    cfg.log_level = -1;
    fake_tls_available = 0;         /* no STARTTLS offered: PLAIN in the clear, on a fake connection */

    ga = xml_arena_new();
    srv = ga ? server_new(&cfg, NULL, err, sizeof err) : NULL;
    if (!srv) {
        fprintf(stderr, "server_new: %s\n", ga ? err : "out of memory");
        xml_arena_free(ga);
        remove_tree(dir, 0);
        return 2;
    }
    (void)server_run(srv);          /* the fake loop returns at once */

    test_login();
    if (A && B) {
        test_local_full();
        test_local_bare();
        test_muc_domain();
        test_unknown_domain();
        test_registered_domain();
        test_bounce_kinds();
        test_malformed_to();
        test_detached();
        test_detached_only();
        test_detached_replaced();
    }
    test_shutdown_signal();
    test_free_with_detached();

    if (srv) {
        fake_close_all();
        server_free(srv);
    }
    xml_arena_free(ga);
    remove_tree(dir, 0);
    return check_summary("test_router");
}
