/* test_badinput.c - hostile and broken input against a running couplet: restricted XML, bad UTF-8,
 * namespaces, limits, malformed JIDs, spoofing, IQ semantics, negotiation out of order (STARTTLS, SASL
 * with a small SCRAM-SHA-1 client, stream restarts), slow and abrupt clients, descriptor leaks and a
 * slowloris crowd. Each case asserts the exact outcome and then that a healthy session is still served. */
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/time.h>

#include "check.h"
#include "xmpp_test.h"

#define NS_STREAMS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_SASL    "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_TLS     "urn:ietf:params:xml:ns:xmpp-tls"

/* the main server: plaintext allowed, connections handed over at once, no per-address limits (every
 * client here is 127.0.0.1), room for many sessions of one account, and a handshake timeout long enough
 * for the slow login */
static const char *CONF_MAIN =
    "require_encryption = false\ndefer_accept = 0\nhandshake_timeout = 60\nmax_connections_per_ip = 0\n"
    "auth_failures_per_ip = 0\nmax_sessions_per_account = 1000\n";
static const char *CONF_SLOWLORIS =
    "require_encryption = false\ndefer_accept = 0\nhandshake_timeout = 3\nmax_connections_per_ip = 0\n"
    "auth_failures_per_ip = 0\nmax_sessions_per_account = 1000\n";

/* a short header: the slow client sends it a byte at a time */
static const char *SHORT_HEADER = "<stream:stream xmlns='jabber:client' "
                                  "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

static client healthy;          /* juliet/healthy, logged in at the start, pinged after every case */
static pid_t slow_child = -1;
static int uniq;                /* for resources and ids */

/* ---- small helpers ---- */

/* the last part of a buffer, printable, for failure messages */
static const char *shown(const char *buf) {
    static char ring[4][420];
    static int k;
    char *o = ring[k++ & 3];
    size_t n = strlen(buf), start = n > 400 ? n - 400 : 0, j = 0;
    for (size_t i = start; i < n && j < sizeof ring[0] - 1; i++) {
        unsigned char ch = (unsigned char)buf[i];
        o[j++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '.';
    }
    o[j] = 0;
    return o;
}

static void healthy_ping(const char *what) {
    static int n;
    char id[32];
    snprintf(id, sizeof id, "hp%d", ++n);
    CHECK(client_ping(&healthy, id), "%s: expected the healthy session to answer a ping afterwards; it did not",
          what);
}

/* The condition of the first stream error in buf ("" when none), with its namespace checked. */
static void stream_error_of(const char *buf, char *cond, size_t cap) {
    const char *p = strstr(buf, "<stream:error>");
    if (!p) {
        snprintf(cond, cap, "(no stream error)");
        return;
    }
    p += strlen("<stream:error>");
    if (*p != '<') {
        snprintf(cond, cap, "(empty stream error)");
        return;
    }
    p++;
    size_t n = strcspn(p, " />");
    if (strncmp(p + n, " xmlns='" NS_STREAMS "'", strlen(NS_STREAMS) + 9) != 0)
        snprintf(cond, cap, "%.*s (not in the streams-error namespace)", (int)n, p);
    else
        snprintf(cond, cap, "%.*s", (int)n, p);
}

/* The stream must end with <stream:error><COND/>, </stream:stream> and a closed connection. */
static void expect_stream_end(client *c, const char *what, const char *cond) {
    char got[128];
    read_until(c->fd, c->buf, sizeof c->buf, &c->len, "</stream:stream>", 5000);
    int closed = wait_closed(c->fd, c->buf, sizeof c->buf, &c->len, 3000);
    stream_error_of(c->buf, got, sizeof got);
    CHECK(!strcmp(got, cond), "%s: expected stream error <%s/>, got %s; received: %s", what, cond, got,
          shown(c->buf));
    CHECK(closed && strstr(c->buf, "</stream:stream>"),
          "%s: expected </stream:stream> and the connection closed, got closed=%d, received: %s", what, closed,
          shown(c->buf));
}

/* A SASL <failure/> with exactly this condition. */
static void expect_sasl_failure(client *c, const char *what, const char *cond) {
    char want[128];
    snprintf(want, sizeof want, "<failure xmlns='" NS_SASL "'><%s/>", cond);
    int seen = read_until(c->fd, c->buf, sizeof c->buf, &c->len, "</failure>", 3000);
    CHECK(seen && strstr(c->buf, want), "%s: expected %s, got: %s", what, want, shown(c->buf));
}

enum { AT_CONNECT, AT_HEADER, AT_BOUND };

static int login_as(client *c, const char *user, char *res_out, size_t n) {
    snprintf(res_out, n, "r%d", ++uniq);
    return client_login(c, user, res_out);
}

/* romeo in a and juliet in b, each on a new resource; their full JIDs in afull and bfull. 0 on success. */
static int login_pair(client *a, client *b, char *afull, char *bfull, size_t n, const char *what) {
    char ra[32], rb[32];
    if (login_as(a, "romeo", ra, sizeof ra) < 0 || login_as(b, "juliet", rb, sizeof rb) < 0) {
        CHECK(0, "romeo and juliet log in for the %s cases", what);
        return -1;
    }
    snprintf(afull, n, "romeo@localhost/%s", ra);
    snprintf(bfull, n, "juliet@localhost/%s", rb);
    return 0;
}

/* A fresh connection brought to `stage`; 0 on success. */
static int open_at(client *c, int stage, const char *what) {
    char res[32];
    int ok;
    if (stage == AT_BOUND) ok = login_as(c, "romeo", res, sizeof res) == 0;
    else if (stage == AT_HEADER) ok = client_open(c) == 0;
    else {
        memset(c, 0, sizeof *c);
        c->fd = tcp_connect();
        ok = c->fd >= 0;
    }
    client_clear(c);
    CHECK(ok, "%s: could not set up the connection", what);
    if (!ok) client_close(c);
    return ok ? 0 : -1;
}

/* Send `data` (len bytes; 0 = strlen) at `stage`, expect the stream error `cond`, then a healthy ping. */
static void raw_case(const char *what, int stage, const char *data, size_t len, const char *cond) {
    client c;
    if (open_at(&c, stage, what) < 0) return;
    send_bytes(c.fd, data, len ? len : strlen(data));
    expect_stream_end(&c, what, cond);
    if (stage == AT_CONNECT)
        CHECK(strstr(c.buf, "<stream:stream") && strstr(c.buf, "<stream:stream") < strstr(c.buf, "<stream:error"),
              "%s: expected the server's stream header before the error (RFC 6120 §4.9.1.1), got: %s", what,
              shown(c.buf));
    client_close(&c);
    healthy_ping(what);
}

/* Send while reading, both bounded: for inputs the server should refuse before it has read them.
 * Returns the bytes sent; stops when everything is sent, the peer closed, a send failed, or time is up.
 * *max_rss_kb (if given) gets the server's largest VmRSS seen meanwhile. */
static size_t blast(client *c, const char *data, size_t len, int timeout_ms, long *max_rss_kb) {
    size_t off = 0;
    long end = now_ms() + timeout_ms;
    int fl = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
    for (;;) {
        if (max_rss_kb) {
            long r = proc_rss_kb(server_pid);
            if (r > *max_rss_kb) *max_rss_kb = r;
        }
        long left = end - now_ms();
        if (left <= 0) break;
        struct pollfd p = {.fd = c->fd, .events = (short)(POLLIN | (off < len ? POLLOUT : 0))};
        if (poll(&p, 1, (int)(left < 100 ? left : 100)) < 0) break;
        if (p.revents & POLLIN) {
            ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1, 0);
            if (n <= 0) break;
            c->len += (size_t)n;
            c->buf[c->len] = 0;
            if (strstr(c->buf, "</stream:stream>")) break;
        }
        if (p.revents & (POLLERR | POLLHUP)) break;
        if (off < len && (p.revents & POLLOUT)) {
            size_t k = len - off < 65536 ? len - off : 65536;
            ssize_t n = send(c->fd, data + off, k, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;
            if (n > 0) off += (size_t)n;
        }
        if (off == len && !(p.revents & POLLIN)) break;
    }
    fcntl(c->fd, F_SETFL, fl);
    return off;
}

/* One big input at `stage` that must end in policy-violation; the server must not have needed it all. */
static void big_case(const char *what, int stage, const char *data, size_t len) {
    client c;
    if (open_at(&c, stage, what) < 0) return;
    blast(&c, data, len, 10000, NULL);
    expect_stream_end(&c, what, "policy-violation");
    client_close(&c);
    healthy_ping(what);
}

/* Copy of the stanza in buf whose start tag carries `attr` (e.g. "id='x'"), or "" when none. */
static void stanza_with(const char *buf, const char *attr, char *out, size_t cap) {
    out[0] = 0;
    const char *at = strstr(buf, attr);
    if (!at) return;
    const char *start = at;
    while (start > buf && *start != '<') start--;
    if (*start != '<') return;
    char name[16];
    size_t nl = strcspn(start + 1, " />");
    if (nl == 0 || nl >= sizeof name) return;
    memcpy(name, start + 1, nl);
    name[nl] = 0;
    const char *gt = strchr(start, '>');
    const char *end;
    if (gt && gt[-1] == '/') end = gt + 1;
    else {
        char close[24];
        snprintf(close, sizeof close, "</%s>", name);
        end = strstr(start, close);
        end = end ? end + strlen(close) : start + strlen(start);
    }
    size_t n = (size_t)(end - start) < cap - 1 ? (size_t)(end - start) : cap - 1;
    memcpy(out, start, n);
    out[n] = 0;
}

/* Send a ping on c and read until its answer: everything the server sent before it ends up in c->buf. */
static int ping_barrier(client *c, const char *id) {
    char xml[200], want[64];
    snprintf(xml, sizeof xml, "<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", id);
    snprintf(want, sizeof want, "id='%s'", id);
    send_str(c->fd, xml);
    return read_until(c->fd, c->buf, sizeof c->buf, &c->len, want, 3000) &&
           read_until(c->fd, c->buf, sizeof c->buf, &c->len, "type='result'", 1000);
}

/* ---- restricted XML ---- */

static void test_restricted_xml(void) {
    raw_case("billion laughs in a DOCTYPE before the stream",
             AT_CONNECT,
             "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
             "<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
             "<!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>"
             "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>"
             "<!ENTITY lol9 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>]>"
             "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams'>&lol9;",
             0, "restricted-xml");
    raw_case("billion laughs DOCTYPE mid-stream", AT_HEADER,
             "<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol1 '&lol;&lol;&lol;'>]><message>&lol1;</message>", 0,
             "restricted-xml");
    raw_case("a lone <!ENTITY mid-stream", AT_HEADER, "<!ENTITY lol 'lol'>", 0, "restricted-xml");
    raw_case("<!ENTITY inside a stanza", AT_BOUND, "<message to='juliet@localhost'><!ENTITY x 'y'></message>", 0,
             "restricted-xml");
    raw_case("comment inside a stanza", AT_BOUND,
             "<message to='juliet@localhost'><body>hi<!-- sneaky --></body></message>", 0, "restricted-xml");
    raw_case("comment between a stanza's children", AT_HEADER, "<message><!----><body/></message>", 0,
             "restricted-xml");
    raw_case("processing instruction inside a stanza", AT_BOUND,
             "<message to='juliet@localhost'><?evil payload?><body>x</body></message>", 0, "restricted-xml");
    raw_case("an XML declaration mid-stream", AT_HEADER, "<?xml version='1.0'?>", 0, "restricted-xml");
}

/* ---- characters: UTF-8 and XML's forbidden code points ---- */

static void test_bad_characters(void) {
    /* bytes that are not UTF-8 are an encoding error (RFC 6120 §4.9.3.22); UTF-8 for a character XML 1.0
     * forbids is not well-formed (§4.9.3.13) */
    static const char ENC[] = "unsupported-encoding", NWF[] = "not-well-formed";
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        const char *cond;
    } bad[] = {
        {"overlong C0 80", "\xc0\x80", 2, ENC},
        {"overlong E0 80 80", "\xe0\x80\x80", 3, ENC},
        {"overlong F0 80 80 80", "\xf0\x80\x80\x80", 4, ENC},
        {"UTF-16 surrogate ED A0 80", "\xed\xa0\x80", 3, ENC},
        {"F8 (five-byte form)", "\xf8\x88\x80\x80\x80", 5, ENC},
        {"FF byte", "\xff", 1, ENC},
        {"above U+10FFFF (F4 90 80 80)", "\xf4\x90\x80\x80", 4, ENC},
        {"lone continuation byte 80", "\x80", 1, ENC},
        {"truncated E2 82 then '<'", "\xe2\x82<", 3, ENC},
        {"NUL byte", "\0", 1, NWF},
        {"control 0x01", "\x01", 1, NWF},
        {"control 0x1B (ESC)", "\x1b", 1, NWF},
        {"U+FFFE (EF BF BE)", "\xef\xbf\xbe", 3, NWF},
        {"character reference &#0;", "&#0;", 4, NWF},
        {"character reference &#x1B;", "&#x1B;", 6, NWF},
        {"character reference to a surrogate &#xD800;", "&#xD800;", 8, NWF},
    };
    char input[256], what[160];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* in text */
        size_t pre = (size_t)snprintf(input, sizeof input, "<message to='juliet@localhost'><body>a");
        memcpy(input + pre, bad[i].bytes, bad[i].len);
        size_t n = pre + bad[i].len;
        n += (size_t)snprintf(input + n, sizeof input - n, "b</body></message>");
        snprintf(what, sizeof what, "%s in text", bad[i].what);
        raw_case(what, i % 2 ? AT_BOUND : AT_HEADER, input, n, bad[i].cond);
        /* in an attribute value */
        pre = (size_t)snprintf(input, sizeof input, "<message to='juliet@localhost' id='a");
        memcpy(input + pre, bad[i].bytes, bad[i].len);
        n = pre + bad[i].len;
        n += (size_t)snprintf(input + n, sizeof input - n, "b'><body>x</body></message>");
        snprintf(what, sizeof what, "%s in an attribute value", bad[i].what);
        raw_case(what, i % 2 ? AT_HEADER : AT_BOUND, input, n, bad[i].cond);
    }
    raw_case("overlong UTF-8 inside the stream header", AT_CONNECT,
             "<?xml version='1.0'?><stream:stream to='local\xc0\xafhost' version='1.0' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams'>", 0, "unsupported-encoding");
    raw_case("a NUL byte before anything", AT_CONNECT, "\0<stream:stream>", 16, "not-well-formed");
    raw_case("0x01 in an element name", AT_HEADER, "<mess\x01" "age/>", 0, "not-well-formed");
}

/* ---- namespaces and well-formedness ---- */

static void test_namespaces(void) {
    /* an unbound prefix makes the document not namespace-well-formed: not-well-formed (RFC 6120 §4.9.3.13,
     * which covers XML-NAMES), the condition expat-based servers (Prosody, ejabberd) send too */
    raw_case("unbound prefix on a child element", AT_BOUND,
             "<message to='juliet@localhost'><x:body>hi</x:body></message>", 0, "not-well-formed");
    raw_case("unbound prefix on an attribute", AT_BOUND, "<message to='juliet@localhost' x:foo='1'/>", 0,
             "not-well-formed");
    raw_case("unbound prefix on a stanza attribute before auth", AT_HEADER, "<iq q:type='get'/>", 0,
             "not-well-formed");
    raw_case("duplicate attribute", AT_BOUND,
             "<message to='juliet@localhost' to='romeo@localhost'><body>x</body></message>", 0, "not-well-formed");
    raw_case("duplicate attribute via two prefixes bound to one namespace", AT_BOUND,
             "<message to='juliet@localhost' xmlns:a='urn:x' xmlns:b='urn:x' a:z='1' b:z='2'/>", 0,
             "not-well-formed");
    raw_case("duplicate namespace declaration", AT_HEADER, "<message xmlns:a='urn:x' xmlns:a='urn:y'/>", 0,
             "not-well-formed");
    raw_case("mismatched end tag, same namespace other qname", AT_BOUND,
             "<message to='juliet@localhost'><a:x xmlns:a='urn:a'></x></message>", 0, "not-well-formed");
    raw_case("crossed tags", AT_BOUND, "<message to='juliet@localhost'><body><b></body></b></message>", 0,
             "not-well-formed");
    raw_case("unclosed stanza, then </stream:stream>", AT_BOUND,
             "<message to='juliet@localhost'><body>hi</body></stream:stream>", 0, "not-well-formed");
    raw_case("end tag with nothing open inside the stream", AT_HEADER, "</message>", 0, "not-well-formed");
    raw_case("attribute without quotes", AT_HEADER, "<message to=juliet/>", 0, "not-well-formed");
    raw_case("'<' in an attribute value", AT_BOUND, "<message to='juliet@localhost' id='a<b'/>", 0,
             "not-well-formed");

    /* a second root element after the stream closed: the server closes, and reads nothing more */
    client c;
    if (open_at(&c, AT_HEADER, "second root") == 0) {
        send_str(c.fd, "</stream:stream><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams'>");
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:stream>", 3000);
        int closed = wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000);
        CHECK(closed && strstr(c.buf, "</stream:stream>") && !strstr(c.buf, "<stream:features"),
              "second root after </stream:stream>: expected </stream:stream> and a close, no new stream; "
              "closed=%d received: %s", closed, shown(c.buf));
        client_close(&c);
        healthy_ping("second root");
    }
}

/* ---- limits ---- */

static void test_limits(void) {
    /* 10 MB in one attribute, sent in 64 KiB chunks while reading */
    size_t big = 10u << 20;
    char *data = malloc(big + 64);
    if (!data) {
        CHECK(0, "memory for the 10 MB attribute");
        return;
    }
    client c;
    if (open_at(&c, AT_BOUND, "10 MB attribute") == 0) {
        strcpy(data, "<message to='juliet@localhost' id='");
        size_t pre = strlen(data);
        memset(data + pre, 'a', big - pre - 3);
        memcpy(data + big - 3, "'/>", 3);
        long before = proc_rss_kb(server_pid), peak = before;
        size_t sent = blast(&c, data, big, 15000, &peak);
        long after = proc_rss_kb(server_pid);
        if (after > peak) peak = after;
        expect_stream_end(&c, "10 MB attribute", "policy-violation");
        printf("10 MB attribute: %zu bytes accepted by the socket before the close; server RSS %ld kB -> peak %ld kB\n",
               sent, before, peak);
        CHECK(sent < big, "10 MB attribute: expected the server to stop reading well before the end, but all %zu "
              "bytes were accepted", sent);
        CHECK(before > 0 && peak - before < 5 * 1024,
              "10 MB attribute: expected the server's RSS to grow by less than 5 MB, it went from %ld kB to %ld kB",
              before, peak);
        client_close(&c);
        healthy_ping("10 MB attribute");
    }

    /* 100,000 nested elements */
    size_t n = 0;
    n += (size_t)sprintf(data, "<message to='juliet@localhost'>");
    for (int i = 0; i < 100000; i++) {
        memcpy(data + n, "<a>", 3);
        n += 3;
    }
    big_case("100,000 nested elements", AT_BOUND, data, n);

    /* 100 attributes on one element */
    n = (size_t)sprintf(data, "<message to='juliet@localhost'");
    for (int i = 0; i < 100; i++) n += (size_t)sprintf(data + n, " a%d='%d'", i, i);
    n += (size_t)sprintf(data + n, "/>");
    big_case("100 attributes on one element", AT_BOUND, data, n);

    /* 100 attributes on a child element */
    n = (size_t)sprintf(data, "<message to='juliet@localhost'><x xmlns='urn:x'");
    for (int i = 0; i < 100; i++) n += (size_t)sprintf(data + n, " a%d='%d'", i, i);
    n += (size_t)sprintf(data + n, "/></message>");
    big_case("100 attributes on a child element", AT_BOUND, data, n);

    /* a 1,000-byte element name, at the top level and inside a stanza */
    n = (size_t)sprintf(data, "<");
    memset(data + n, 'e', 1000);
    n += 1000;
    n += (size_t)sprintf(data + n, "/>");
    big_case("1,000-byte element name", AT_HEADER, data, n);
    n = (size_t)sprintf(data, "<message to='juliet@localhost'><");
    memset(data + n, 'e', 1000);
    n += 1000;
    n += (size_t)sprintf(data + n, "/></message>");
    big_case("1,000-byte child element name", AT_BOUND, data, n);
    /* and a 1,000-byte attribute name */
    n = (size_t)sprintf(data, "<message to='juliet@localhost' ");
    memset(data + n, 'n', 1000);
    n += 1000;
    n += (size_t)sprintf(data + n, "='1'/>");
    big_case("1,000-byte attribute name", AT_BOUND, data, n);

    /* a 300 KiB stanza made of many small children (the single huge attribute is in test_server) */
    n = (size_t)sprintf(data, "<message to='juliet@localhost'>");
    while (n < 300 * 1024) n += (size_t)sprintf(data + n, "<body>0123456789abcdef</body>");
    n += (size_t)sprintf(data + n, "</message>");
    big_case("300 KiB stanza of small children", AT_BOUND, data, n);
    /* a 300 KiB text body */
    n = (size_t)sprintf(data, "<message to='juliet@localhost'><body>");
    memset(data + n, 't', 300 * 1024);
    n += 300 * 1024;
    n += (size_t)sprintf(data + n, "</body></message>");
    big_case("300 KiB text body", AT_BOUND, data, n);
    /* a 300 KiB stream header (the limit applies to it too) */
    n = (size_t)sprintf(data, "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams' x='");
    memset(data + n, 'h', 300 * 1024);
    n += 300 * 1024;
    n += (size_t)sprintf(data + n, "'>");
    big_case("300 KiB stream header", AT_CONNECT, data, n);
    free(data);
}

/* ---- JIDs ---- */

/* romeo sends `stanza` (with id) and must get back a modify/jid-malformed error with that id, to his
 * full JID; the stream stays open. */
static void expect_jid_malformed(client *c, const char *full, const char *what, const char *stanza,
                                 const char *id) {
    char attr[64], st[8192], barrier[32], want_to[128];
    client_clear(c);
    send_str(c->fd, stanza);
    snprintf(barrier, sizeof barrier, "jb%d", ++uniq);
    int alive = ping_barrier(c, barrier);
    snprintf(attr, sizeof attr, "id='%s'", id);
    stanza_with(c->buf, attr, st, sizeof st);
    snprintf(want_to, sizeof want_to, "to='%s'", full);
    CHECK(st[0] && strstr(st, "type='error'") && strstr(st, "<error type='modify'>") &&
              strstr(st, "<jid-malformed xmlns='" NS_STANZAS "'/>") && strstr(st, want_to),
          "%s: expected a modify/jid-malformed error with id '%s' addressed to %s, got: %s", what, id, full,
          shown(st[0] ? st : c->buf));
    CHECK(alive, "%s: expected the stream to stay open (ping answered), received: %s", what, shown(c->buf));
    client_clear(c);
}

static void test_jids(void) {
    client c;
    char res[32], full[64];
    if (login_as(&c, "romeo", res, sizeof res) < 0) {
        CHECK(0, "romeo logs in for the JID cases: %s", shown(c.buf));
        return;
    }
    snprintf(full, sizeof full, "romeo@localhost/%s", res);
    char longpart[1025];
    memset(longpart, 'x', 1024);
    longpart[1024] = 0;
    static char to[1200], stanza[2048], id[32];
    const char *tos[16];
    int k = 0;
    static char t_local[1100], t_domain[1100], t_res[1100];
    snprintf(t_local, sizeof t_local, "%s@localhost", longpart);
    snprintf(t_domain, sizeof t_domain, "romeo@%s", longpart);
    snprintf(t_res, sizeof t_res, "juliet@localhost/%s", longpart);
    tos[k++] = t_local;
    tos[k++] = t_domain;
    tos[k++] = t_res;
    tos[k++] = "@localhost";
    tos[k++] = "romeo@";
    tos[k++] = "romeo@localhost/";
    tos[k++] = "";
    tos[k++] = "ro&lt;meo@localhost";
    tos[k++] = "ro meo@localhost";
    tos[k++] = "ro&quot;meo@localhost";
    tos[k++] = "ro&amp;meo@localhost";
    tos[k++] = "ro&gt;meo@localhost";
    tos[k++] = "ro:meo@localhost";
    tos[k++] = "ro'meo@localhost";    /* inside a "-quoted attribute below */
    const char *kinds[] = {"message", "iq", "presence"};
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < 3; j++) {
            if (j > 0 && i > 7) continue;   /* every kind for the structural cases and one character */
            snprintf(id, sizeof id, "jid%d", ++uniq);
            snprintf(to, sizeof to, "%s", tos[i]);
            if (j == 0)
                snprintf(stanza, sizeof stanza, "<message to=\"%s\" id='%s' type='chat'><body>x</body></message>", to,
                         id);
            else if (j == 1)
                snprintf(stanza, sizeof stanza, "<iq to=\"%s\" id='%s' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
                         to, id);
            else
                snprintf(stanza, sizeof stanza, "<presence to=\"%s\" id='%s'/>", to, id);
            char what[160];
            snprintf(what, sizeof what, "%s to '%.40s%s' (%zu bytes)", kinds[j], to, strlen(to) > 40 ? "..." : "",
                     strlen(to));
            expect_jid_malformed(&c, full, what, stanza, id);
        }
    }
    client_close(&c);
    healthy_ping("malformed JIDs");
}

/* ---- spoofed 'from' ---- */

static void test_spoofing(void) {
    client a, b;
    char afull[64], bfull[64], want[96], xml[512];
    if (login_pair(&a, &b, afull, bfull, sizeof afull, "spoofing") < 0) return;
    snprintf(want, sizeof want, "from='%s'", afull);
    static const char *froms[] = {"juliet@localhost/healthy", "localhost", "admin@localhost",
                                  "someone@example.org/x", "not a jid &lt;"};
    for (int i = 0; i < 5; i++) {
        char st[4096], attr[32], spoof[96];
        snprintf(spoof, sizeof spoof, "from='%s'", froms[i]);
        /* message */
        snprintf(attr, sizeof attr, "id='sm%d'", i);
        snprintf(xml, sizeof xml, "<message to='%s' from='%s' id='sm%d' type='chat'><body>s%d</body></message>", bfull,
                 froms[i], i, i);
        client_clear(&b);
        send_str(a.fd, xml);
        client_expect(&b, "</message>");
        stanza_with(b.buf, attr, st, sizeof st);
        CHECK(strstr(st, want) && !strstr(st, spoof),
              "message with from='%s': expected the recipient to see %s only, got: %s", froms[i], want, shown(b.buf));
        /* directed presence */
        snprintf(attr, sizeof attr, "id='sp%d'", i);
        snprintf(xml, sizeof xml, "<presence to='%s' from='%s' id='sp%d'/>", bfull, froms[i], i);
        client_clear(&b);
        send_str(a.fd, xml);
        read_until(b.fd, b.buf, sizeof b.buf, &b.len, attr, 3000);
        stanza_with(b.buf, attr, st, sizeof st);
        CHECK(strstr(st, want) && !strstr(st, spoof),
              "presence with from='%s': expected the recipient to see %s only, got: %s", froms[i], want,
              shown(b.buf));
        /* iq, forwarded to the full JID */
        snprintf(attr, sizeof attr, "id='sq%d'", i);
        snprintf(xml, sizeof xml, "<iq to='%s' from='%s' id='sq%d' type='get'><query xmlns='jabber:iq:version'/></iq>",
                 bfull, froms[i], i);
        client_clear(&b);
        send_str(a.fd, xml);
        client_expect(&b, "</iq>");
        stanza_with(b.buf, attr, st, sizeof st);
        CHECK(strstr(st, want) && !strstr(st, spoof),
              "iq with from='%s': expected the recipient to see %s only, got: %s", froms[i], want, shown(b.buf));
    }
    /* nothing came back to the sender for any of this */
    client_clear(&a);
    CHECK(ping_barrier(&a, "spoof-done") && !strstr(a.buf, "type='error'"),
          "spoofing: expected no error back to the sender, got: %s", shown(a.buf));
    client_close(&a);
    client_close(&b);
    healthy_ping("spoofed from");
}

/* ---- IQ semantics ---- */

static void test_iq_semantics(void) {
    client a, b;
    char afull[64], bfull[64], xml[512], st[4096];
    if (login_pair(&a, &b, afull, bfull, sizeof afull, "IQ") < 0) return;

    /* responses nobody asked for: never answered with an error (RFC 6120 §8.3.1, §8.2.3) */
    const char *targets[] = {"localhost", "juliet@localhost", bfull, "romeo@localhost", NULL};
    const char *types[] = {"result", "error"};
    client_clear(&a);
    int n = 0;
    for (int t = 0; targets[t]; t++)
        for (int y = 0; y < 2; y++) {
            if (y == 0)
                snprintf(xml, sizeof xml, "<iq type='result' id='unasked%d' to='%s'/>", n++, targets[t]);
            else
                snprintf(xml, sizeof xml, "<iq type='error' id='unasked%d' to='%s'><error type='cancel'>"
                         "<service-unavailable xmlns='" NS_STANZAS "'/></error></iq>", n++, targets[t]);
            send_str(a.fd, xml);
        }
    /* without a 'to' at all */
    send_str(a.fd, "<iq type='result' id='unasked-noto'/>");
    send_str(a.fd, "<iq type='error' id='unasked-noto2'/>");
    /* a result with no id: nothing to answer to */
    send_str(a.fd, "<iq type='result' to='localhost'/>");
    int alive = ping_barrier(&a, "barrier-u");
    CHECK(alive && !strstr(a.buf, "unasked") && !strstr(a.buf, "type='error'"),
          "unsolicited IQ results and errors: expected no reply at all before the ping result, got: %s",
          shown(a.buf));
    (void)types;
    client_clear(&a);

    /* requests that break §8.2.3: bad-request (modify) */
    static const struct {
        const char *what, *fmt;
    } bad[] = {
        {"iq get with two payload children", "<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
                                             "<query xmlns='jabber:iq:version'/></iq>"},
        {"iq set with two payload children", "<iq type='set' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
                                             "<ping xmlns='urn:xmpp:ping'/></iq>"},
        {"iq get with no payload", "<iq type='get' id='%s' to='localhost'/>"},
        {"iq set with no payload, to a bare JID", "<iq type='set' id='%s' to='juliet@localhost'></iq>"},
        {"iq get with only text", "<iq type='get' id='%s' to='localhost'>hello</iq>"},
        {"iq type='bogus'", "<iq type='bogus' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"},
        {"iq without a type", "<iq id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"},
        {"iq get with two payloads to a full JID", "<iq type='get' id='%s' to='JUL'><ping xmlns='urn:xmpp:ping'/>"
                                                   "<ping xmlns='urn:xmpp:ping'/></iq>"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char id[32], attr[48], fmt[512], want_to[96];
        snprintf(id, sizeof id, "bad%zu", i);
        snprintf(attr, sizeof attr, "id='%s'", id);
        snprintf(fmt, sizeof fmt, "%s", bad[i].fmt);
        char *jul = strstr(fmt, "JUL");
        if (jul) {
            char rest[512];
            snprintf(rest, sizeof rest, "%s", jul + 3);
            snprintf(jul, sizeof fmt - (size_t)(jul - fmt), "%s%s", bfull, rest);
        }
        snprintf(xml, sizeof xml, fmt, id);
        client_clear(&a);
        send_str(a.fd, xml);
        alive = ping_barrier(&a, "bad-barrier");
        stanza_with(a.buf, attr, st, sizeof st);
        snprintf(want_to, sizeof want_to, "to='%s'", afull);
        CHECK(st[0] && strstr(st, "type='error'") && strstr(st, "<error type='modify'>") &&
                  strstr(st, "<bad-request xmlns='" NS_STANZAS "'/>") && strstr(st, want_to),
              "%s: expected a modify/bad-request error with id %s back to the sender, got: %s", bad[i].what, id,
              shown(a.buf));
        CHECK(alive, "%s: expected the stream to stay open", bad[i].what);
    }
    /* the full-JID recipient must not have got the broken request */
    client_clear(&b);
    CHECK(ping_barrier(&b, "b-barrier") && !strstr(b.buf, "bad7"),
          "an iq get with two payloads to a full JID: expected it not forwarded, the recipient got: %s",
          shown(b.buf));

    /* iq get without id: RFC 6120 §8.1.3 makes 'id' REQUIRED for IQs and §8.2.3 expects the error to
     * come back; a server cannot echo an id that is missing, so a bad-request without id is the answer */
    client_clear(&a);
    send_str(a.fd, "<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    alive = ping_barrier(&a, "noid-barrier");
    stanza_with(a.buf, "type='error'", st, sizeof st);
    CHECK(st[0] && strstr(st, "<bad-request xmlns='" NS_STANZAS "'/>") && strstr(st, "<error type='modify'>"),
          "iq get without id: expected a modify/bad-request error, got: %s", shown(a.buf));
    CHECK(alive, "iq get without id: expected the stream to stay open");
    client_close(&a);
    client_close(&b);
    healthy_ping("IQ semantics");
}

/* ---- out of order: stanzas before authentication or binding ---- */

static void test_out_of_order(void) {
    raw_case("presence before auth", AT_HEADER, "<presence/>", 0, "not-authorized");
    raw_case("iq before auth", AT_HEADER, "<iq type='get' id='x' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
             0, "not-authorized");
    raw_case("bind before auth", AT_HEADER,
             "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>", 0, "not-authorized");
    raw_case("message with 'to' the server before auth", AT_HEADER, "<message to='localhost'><body>x</body></message>",
             0, "not-authorized");
    /* authenticated, restarted, but no resource bound */
    static const char *after_sasl[] = {
        "<message to='juliet@localhost/healthy'><body>unbound</body></message>",
        "<presence/>",
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    };
    for (int i = 0; i < 3; i++) {
        client c;
        char what[96];
        snprintf(what, sizeof what, "stanza %d after SASL before bind", i);
        if (client_open(&c) < 0) {
            CHECK(0, "%s: stream opens", what);
            continue;
        }
        client_clear(&c);
        client_auth_plain(&c, "romeo", "password");
        int ok = client_expect(&c, "<success");
        client_clear(&c);
        send_str(c.fd, HEADER);
        ok = ok && client_expect(&c, "</stream:features>");
        CHECK(ok, "%s: login up to the bind feature: %s", what, shown(c.buf));
        client_clear(&c);
        send_str(c.fd, after_sasl[i]);
        expect_stream_end(&c, what, "not-authorized");
        client_close(&c);
        healthy_ping(what);
    }
    /* after success, before the restart: a stanza on the old stream */
    client c;
    if (client_open(&c) == 0) {
        client_clear(&c);
        client_auth_plain(&c, "romeo", "password");
        client_expect(&c, "<success");
        client_clear(&c);
        send_str(c.fd, "<message to='juliet@localhost'><body>no restart</body></message>");
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:stream>", 3000);
        int closed = wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000);
        char got[128];
        stream_error_of(c.buf, got, sizeof got);
        /* after <success/> the old stream is gone (RFC 6120 §6.4.6): anything but a header is a stream error */
        CHECK(closed && strstr(c.buf, "<stream:error>"),
              "stanza after <success/> without a restart: expected a stream error and a close, got %s, closed=%d: %s",
              got, closed, shown(c.buf));
        client_close(&c);
        healthy_ping("stanza instead of the restart");
    }
}

/* ---- TLS ---- */

static SSL_CTX *tls_ctx;

static SSL *tls_client(int fd) {
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL *s = SSL_new(tls_ctx);
    if (!s) return NULL;
    SSL_set_fd(s, fd);
    ERR_clear_error();
    if (SSL_connect(s) != 1) {
        ERR_clear_error();
        SSL_free(s);
        return NULL;
    }
    return s;
}

static void tls_send(SSL *s, const char *text) {
    ERR_clear_error();
    if (SSL_write(s, text, (int)strlen(text)) <= 0) ERR_clear_error();
}

/* read over TLS until want appears or the peer closes (*closed = 1) or time runs out */
static int tls_read_until(SSL *s, client *c, const char *want, int timeout_ms, int *closed) {
    long end = now_ms() + timeout_ms;
    if (closed) *closed = 0;
    while (!want || !strstr(c->buf, want)) {
        if (now_ms() > end || c->len + 1 >= sizeof c->buf) return 0;
        ERR_clear_error();
        int n = SSL_read(s, c->buf + c->len, (int)(sizeof c->buf - c->len - 1));
        if (n <= 0) {
            int e = SSL_get_error(s, n);
            ERR_clear_error();
            if ((e == SSL_ERROR_SYSCALL || e == SSL_ERROR_WANT_READ) && (errno == EAGAIN || errno == EWOULDBLOCK))
                continue;   /* the 3 s socket timeout: keep going until our own bound */
            if (closed) *closed = 1;
            return want && strstr(c->buf, want) != NULL;
        }
        c->len += (size_t)n;
        c->buf[c->len] = 0;
    }
    return 1;
}

static void test_starttls(void) {
    /* STARTTLS twice: the second, inside TLS, fails and the stream closes */
    client c;
    if (open_at(&c, AT_HEADER, "STARTTLS twice") == 0) {
        send_str(c.fd, "<starttls xmlns='" NS_TLS "'/>");
        CHECK(client_expect(&c, "<proceed xmlns='" NS_TLS "'/>"), "STARTTLS: expected <proceed/>, got: %s",
              shown(c.buf));
        SSL *s = tls_client(c.fd);
        CHECK(s != NULL, "STARTTLS: expected the TLS handshake to complete");
        if (s) {
            client_clear(&c);
            tls_send(s, HEADER);
            int ok = tls_read_until(s, &c, "</stream:features>", 3000, NULL);
            CHECK(ok && !strstr(c.buf, "<starttls"), "STARTTLS: expected features without starttls inside TLS, got: %s",
                  shown(c.buf));
            client_clear(&c);
            tls_send(s, "<starttls xmlns='" NS_TLS "'/>");
            int closed = 0;
            tls_read_until(s, &c, "</stream:stream>", 3000, &closed);
            if (!closed) tls_read_until(s, &c, NULL, 3000, &closed);
            CHECK(strstr(c.buf, "<failure xmlns='" NS_TLS "'/>") && strstr(c.buf, "</stream:stream>") && closed,
                  "STARTTLS inside TLS: expected <failure xmlns='" NS_TLS "'/>, </stream:stream> and a close; "
                  "closed=%d got: %s", closed, shown(c.buf));
            SSL_free(s);
        }
        client_close(&c);
        healthy_ping("STARTTLS twice");
    }

    /* STARTTLS after SASL success (and the restart): failure and close */
    if (client_open(&c) == 0) {
        client_clear(&c);
        client_auth_plain(&c, "romeo", "password");
        client_expect(&c, "<success");
        client_clear(&c);
        send_str(c.fd, HEADER);
        client_expect(&c, "</stream:features>");
        client_clear(&c);
        send_str(c.fd, "<starttls xmlns='" NS_TLS "'/>");
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:stream>", 3000);
        int closed = wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000);
        CHECK(strstr(c.buf, "<failure xmlns='" NS_TLS "'/>") && strstr(c.buf, "</stream:stream>") && closed &&
                  !strstr(c.buf, "<proceed"),
              "STARTTLS after SASL: expected <failure xmlns='" NS_TLS "'/>, </stream:stream> and a close; closed=%d "
              "got: %s", closed, shown(c.buf));
        client_close(&c);
        healthy_ping("STARTTLS after SASL");
    }

    /* STARTTLS after bind too */
    if (open_at(&c, AT_BOUND, "STARTTLS after bind") == 0) {
        send_str(c.fd, "<starttls xmlns='" NS_TLS "'/>");
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:stream>", 3000);
        int closed = wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000);
        CHECK(strstr(c.buf, "<failure xmlns='" NS_TLS "'/>") && strstr(c.buf, "</stream:stream>") && closed,
              "STARTTLS after bind: expected <failure/>, </stream:stream> and a close; closed=%d got: %s", closed,
              shown(c.buf));
        client_close(&c);
        healthy_ping("STARTTLS after bind");
    }

    /* bytes pipelined after <starttls/> are never read as plaintext (the STARTTLS command injection) */
    static const char *pipelined[] = {
        "<starttls xmlns='" NS_TLS "'/><auth xmlns='" NS_SASL "' mechanism='PLAIN'>AHJvbWVvAHBhc3N3b3Jk</auth>",
        "<starttls xmlns='" NS_TLS "'/><iq type='get' id='inj' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<starttls xmlns='" NS_TLS "'/><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>",
    };
    for (int i = 0; i < 3; i++) {
        char what[64];
        snprintf(what, sizeof what, "bytes pipelined after <starttls/> (%d)", i);
        if (open_at(&c, AT_HEADER, what) < 0) continue;
        send_str(c.fd, pipelined[i]);
        CHECK(client_expect(&c, "<proceed xmlns='" NS_TLS "'/>"), "%s: expected <proceed/>, got: %s", what,
              shown(c.buf));
        /* no plaintext may follow <proceed/>: the server speaks next only in TLS, after our ClientHello */
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "\x01\x02never", 300);
        const char *after = strstr(c.buf, "<proceed xmlns='" NS_TLS "'/>");
        after = after ? after + strlen("<proceed xmlns='" NS_TLS "'/>") : "";
        CHECK(!*after, "%s: expected nothing in plaintext after <proceed/>, got: %s", what, shown(after));
        SSL *s = tls_client(c.fd);
        if (s) {
            /* the handshake worked: the stream inside TLS starts from scratch, unauthenticated */
            client_clear(&c);
            tls_send(s, HEADER);
            int ok = tls_read_until(s, &c, "</stream:features>", 3000, NULL);
            CHECK(ok && strstr(c.buf, "<mechanisms") && !strstr(c.buf, "<bind") && !strstr(c.buf, "<success") &&
                      !strstr(c.buf, "id='inj'"),
                  "%s: expected a fresh unauthenticated stream inside TLS, got: %s", what, shown(c.buf));
            SSL_free(s);
        }
        client_close(&c);
        healthy_ping(what);
    }
}

/* ---- SASL, with a small SCRAM-SHA-1 client ---- */

typedef struct scram {
    char first_bare[256];
    char server_first[512];
    char nonce[256];
    unsigned char salt[128];
    long saltlen;
    int iter;
} scram;

static void sasl_send(client *c, const char *elem, const char *raw, size_t n) {
    char b64[2048], xml[2300];
    auth_b64_encode((const unsigned char *)raw, n, b64);
    if (!strcmp(elem, "auth"))
        snprintf(xml, sizeof xml, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>%s</auth>", b64);
    else
        snprintf(xml, sizeof xml, "<response xmlns='" NS_SASL "'>%s</response>", b64);
    send_str(c->fd, xml);
}

/* client-first with the given gs2 header and bare part */
static void scram_first_raw(client *c, scram *x, const char *gs2, const char *bare) {
    char msg[512];
    memset(x, 0, sizeof *x);
    snprintf(x->first_bare, sizeof x->first_bare, "%s", bare);
    snprintf(msg, sizeof msg, "%s%s", gs2, bare);
    sasl_send(c, "auth", msg, strlen(msg));
}

static void scram_first(client *c, scram *x, const char *user, const char *cnonce) {
    char bare[256];
    snprintf(bare, sizeof bare, "n=%s,r=%s", user, cnonce);
    scram_first_raw(c, x, "n,,", bare);
}

/* read the server-first challenge; 0 on success */
static int scram_challenge(client *c, scram *x) {
    if (!read_until(c->fd, c->buf, sizeof c->buf, &c->len, "</challenge>", 3000)) return -1;
    const char *p = strstr(c->buf, "<challenge xmlns='" NS_SASL "'>");
    if (!p) return -1;
    p = strchr(p, '>') + 1;
    const char *e = strstr(p, "</challenge>");
    unsigned char dec[600];
    if ((size_t)(e - p) > 700) return -1;
    long n = auth_b64_decode(p, (size_t)(e - p), dec);
    if (n <= 0 || n >= (long)sizeof x->server_first) return -1;
    memcpy(x->server_first, dec, (size_t)n);
    x->server_first[n] = 0;
    char salt_b64[256] = "";
    if (sscanf(x->server_first, "r=%255[^,],s=%255[^,],i=%d", x->nonce, salt_b64, &x->iter) != 3) return -1;
    x->saltlen = auth_b64_decode(salt_b64, strlen(salt_b64), x->salt);
    client_clear(c);
    return x->saltlen > 0 && x->iter > 0 ? 0 : -1;
}

/* the client-final message (raw text) for this exchange; cbind_b64 and nonce may override the right ones */
static void scram_final_text(const scram *x, const char *password, const char *cbind_b64, const char *nonce,
                             char *out, size_t cap) {
    char without[600], am[1600], proof_b64[64];
    unsigned char salted[64], ck[64], sk[64], srvk[64], sig[64], proof[20];
    snprintf(without, sizeof without, "c=%s,r=%s", cbind_b64 ? cbind_b64 : "biws", nonce ? nonce : x->nonce);
    snprintf(am, sizeof am, "%s,%s,%s", x->first_bare, x->server_first, without);
    auth_scram_salted("SHA1", password, x->salt, (size_t)x->saltlen, x->iter, salted);
    auth_scram_keys("SHA1", salted, ck, sk, srvk);
    auth_hmac("SHA1", sk, 20, am, strlen(am), sig);
    for (int i = 0; i < 20; i++) proof[i] = ck[i] ^ sig[i];
    auth_b64_encode(proof, 20, proof_b64);
    snprintf(out, cap, "%s,p=%s", without, proof_b64);
}

static void scram_final(client *c, const scram *x, const char *password, const char *cbind_b64, const char *nonce,
                        char *saved, size_t cap) {
    char fin[800];
    scram_final_text(x, password, cbind_b64, nonce, fin, sizeof fin);
    if (saved) snprintf(saved, cap, "%s", fin);
    sasl_send(c, "response", fin, strlen(fin));
}

/* a fresh stream for one SASL case */
static int sasl_open(client *c, const char *what) {
    return open_at(c, AT_HEADER, what);
}

static void sasl_case_end(client *c, const char *what) {
    client_close(c);
    healthy_ping(what);
}

static void test_sasl(void) {
    client c;
    scram x;
    const char *what;

    /* a whole SCRAM-SHA-1 exchange works: the client itself is right */
    char replay[800] = "";
    what = "SCRAM-SHA-1 login";
    if (sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "fixedclientnonce");
        int ok = scram_challenge(&c, &x) == 0 && strncmp(x.nonce, "fixedclientnonce", 16) == 0;
        CHECK(ok, "%s: expected a server-first challenge extending our nonce, got: %s", what, shown(c.buf));
        scram_final(&c, &x, "password", NULL, NULL, replay, sizeof replay);
        CHECK(client_expect(&c, "<success xmlns='" NS_SASL "'>"), "%s: expected <success/> with v=, got: %s", what,
              shown(c.buf));
        sasl_case_end(&c, what);
    }
    /* the same client-final replayed on a new connection (same client nonce, new server nonce) */
    what = "replayed SCRAM client-final";
    if (replay[0] && sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "fixedclientnonce");
        CHECK(scram_challenge(&c, &x) == 0, "%s: expected a challenge, got: %s", what, shown(c.buf));
        sasl_send(&c, "response", replay, strlen(replay));
        expect_sasl_failure(&c, what, "not-authorized");
        CHECK(!strstr(c.buf, "<success"), "%s: expected no success, got: %s", what, shown(c.buf));
        sasl_case_end(&c, what);
    }

    /* malformed base64: RFC 6120 §6.5.2 names this condition incorrect-encoding */
    static const char *bad_b64[] = {"!!notbase64!!", "bj0=cm9tZW8", "bixuPXJvbWVvLHI9YWJj=", "b i x u"};
    for (int i = 0; i < 4; i++) {
        char w[96], xml[256];
        snprintf(w, sizeof w, "malformed base64 in <auth> ('%s')", bad_b64[i]);
        if (sasl_open(&c, w) < 0) continue;
        snprintf(xml, sizeof xml, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>%s</auth>", bad_b64[i]);
        send_str(c.fd, xml);
        expect_sasl_failure(&c, w, "incorrect-encoding");
        sasl_case_end(&c, w);
    }
    what = "malformed base64 in <response>";
    if (sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "cnonce-b64");
        scram_challenge(&c, &x);
        send_str(c.fd, "<response xmlns='" NS_SASL "'>Yz1iaXdz!LHI9</response>");
        expect_sasl_failure(&c, what, "incorrect-encoding");
        sasl_case_end(&c, what);
    }

    /* broken client-first messages */
    static const struct {
        const char *what, *gs2, *bare, *cond;
    } firsts[] = {
        {"SCRAM client-first without n=", "n,,", "r=abcdef", "malformed-request"},
        {"SCRAM client-first without r=", "n,,", "n=romeo", "malformed-request"},
        {"SCRAM client-first with an empty nonce", "n,,", "n=romeo,r=", "malformed-request"},
        {"SCRAM client-first with a mandatory extension m=", "n,,", "m=ext,n=romeo,r=abcdef", "malformed-request"},
        {"SCRAM client-first asking for channel binding p=", "p=tls-unique,,", "n=romeo,r=abcdef",
         "malformed-request"},
        {"SCRAM client-first without a gs2 header", "", "n=romeo,r=abcdef", "malformed-request"},
        {"SCRAM client-first with a bad saslname escape", "n,,", "n=ro=meo,r=abcdef", "malformed-request"},
    };
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++) {
        if (sasl_open(&c, firsts[i].what) < 0) continue;
        scram_first_raw(&c, &x, firsts[i].gs2, firsts[i].bare);
        expect_sasl_failure(&c, firsts[i].what, firsts[i].cond);
        sasl_case_end(&c, firsts[i].what);
    }

    /* broken client-final messages */
    what = "SCRAM client-final with the wrong nonce";
    if (sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "cnonce-wrong");
        scram_challenge(&c, &x);
        char wrong[300];
        snprintf(wrong, sizeof wrong, "%sX", x.nonce);
        scram_final(&c, &x, "password", NULL, wrong, NULL, 0);
        expect_sasl_failure(&c, what, "not-authorized");
        sasl_case_end(&c, what);
    }
    /* client-final messages built from a real exchange, each with one thing wrong */
    static const struct {
        const char *what, *cnonce, *password, *cbind, *nonce, *cond;
    } finals[] = {
        {"SCRAM client-final with only the client's part of the nonce", "cnonce-short", "password", NULL,
         "cnonce-short", "not-authorized"},
        {"SCRAM client-final with a tampered c= (claims y,,)", "cnonce-cbind", "password", "eSws", NULL,
         "not-authorized"},
        {"SCRAM client-final with c= that is not base64", "cnonce-cb64", "password", "b!ws", NULL,
         "malformed-request"},
        {"SCRAM client-final with the wrong password", "cnonce-pw", "wrong", NULL, NULL, "not-authorized"},
    };
    for (size_t i = 0; i < sizeof finals / sizeof finals[0]; i++) {
        if (sasl_open(&c, finals[i].what) < 0) continue;
        scram_first(&c, &x, "romeo", finals[i].cnonce);
        scram_challenge(&c, &x);
        scram_final(&c, &x, finals[i].password, finals[i].cbind, finals[i].nonce, NULL, 0);
        expect_sasl_failure(&c, finals[i].what, finals[i].cond);
        sasl_case_end(&c, finals[i].what);
    }
    what = "SCRAM client-final without a proof";
    if (sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "cnonce-noproof");
        scram_challenge(&c, &x);
        char fin[400];
        snprintf(fin, sizeof fin, "c=biws,r=%s", x.nonce);
        sasl_send(&c, "response", fin, strlen(fin));
        expect_sasl_failure(&c, what, "malformed-request");
        sasl_case_end(&c, what);
    }

    /* <response/> with no exchange in progress */
    what = "<response/> without an exchange";
    if (sasl_open(&c, what) == 0) {
        send_str(c.fd, "<response xmlns='" NS_SASL "'>biws</response>");
        expect_sasl_failure(&c, what, "malformed-request");
        sasl_case_end(&c, what);
    }
    /* <abort/> in the middle of an exchange, then a normal login on the same stream still works */
    what = "<abort/> mid-exchange";
    if (sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "cnonce-abort");
        scram_challenge(&c, &x);
        send_str(c.fd, "<abort xmlns='" NS_SASL "'/>");
        expect_sasl_failure(&c, what, "aborted");
        client_clear(&c);
        scram_first(&c, &x, "romeo", "cnonce-after-abort");
        int ok = scram_challenge(&c, &x) == 0;
        if (ok) scram_final(&c, &x, "password", NULL, NULL, NULL, 0);
        CHECK(ok && client_expect(&c, "<success"), "%s: expected a fresh exchange to succeed afterwards, got: %s",
              what, shown(c.buf));
        sasl_case_end(&c, what);
    }
    /* a response after the abort: the exchange is gone */
    what = "<response/> after <abort/>";
    if (sasl_open(&c, what) == 0) {
        scram_first(&c, &x, "romeo", "cnonce-abort2");
        scram_challenge(&c, &x);
        send_str(c.fd, "<abort xmlns='" NS_SASL "'/>");
        expect_sasl_failure(&c, what, "aborted");
        client_clear(&c);
        scram_final(&c, &x, "password", NULL, NULL, NULL, 0);
        expect_sasl_failure(&c, what, "malformed-request");
        CHECK(!strstr(c.buf, "<success"), "%s: expected no success, got: %s", what, shown(c.buf));
        sasl_case_end(&c, what);
    }
    /* sasl_max_attempts (3) failed SCRAM exchanges: the third ends the stream with policy-violation */
    what = "three failed SCRAM exchanges";
    if (sasl_open(&c, what) == 0) {
        for (int i = 0; i < 3; i++) {
            char cn[32];
            snprintf(cn, sizeof cn, "cnonce-fail%d", i);
            scram_first(&c, &x, "romeo", cn);
            if (scram_challenge(&c, &x) < 0) break;
            scram_final(&c, &x, "wrong", NULL, NULL, NULL, 0);
            expect_sasl_failure(&c, what, "not-authorized");
            if (i < 2) client_clear(&c);
        }
        expect_stream_end(&c, what, "policy-violation");
        sasl_case_end(&c, what);
    }
    /* <auth/> after success (on the restarted stream) */
    what = "<auth/> again after authenticating";
    if (client_open(&c) == 0) {
        client_clear(&c);
        client_auth_plain(&c, "romeo", "password");
        client_expect(&c, "<success");
        client_clear(&c);
        send_str(c.fd, HEADER);
        client_expect(&c, "</stream:features>");
        client_clear(&c);
        client_auth_plain(&c, "juliet", "password");
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:stream>", 3000);
        CHECK(!strstr(c.buf, "<success"), "%s: expected no second success, got: %s", what, shown(c.buf));
        client_close(&c);
        healthy_ping(what);
    }
}

/* ---- stream restarts at the wrong time ---- */

/* RFC 6120 §4.9.3 */
static int is_stream_condition(const char *cond) {
    static const char *const all[] = {
        "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone", "host-unknown",
        "improper-addressing", "internal-server-error", "invalid-from", "invalid-namespace", "invalid-xml",
        "not-authorized", "not-well-formed", "policy-violation", "remote-connection-failed", "reset",
        "resource-constraint", "restricted-xml", "see-other-host", "system-shutdown", "undefined-condition",
        "unsupported-encoding", "unsupported-feature", "unsupported-stanza-type", "unsupported-version", NULL};
    for (int i = 0; all[i]; i++)
        if (!strcmp(all[i], cond)) return 1;
    return 0;
}

static void expect_some_stream_error(client *c, const char *what) {
    char got[128];
    read_until(c->fd, c->buf, sizeof c->buf, &c->len, "</stream:stream>", 3000);
    int closed = wait_closed(c->fd, c->buf, sizeof c->buf, &c->len, 3000);
    stream_error_of(c->buf, got, sizeof got);
    CHECK(is_stream_condition(got) && closed,
          "%s: expected an RFC 6120 §4.9.3 stream error and a close within 3 s, got %s, closed=%d: %s", what, got,
          closed, shown(c->buf));
}

static void test_restarts(void) {
    client c;
    const char *what = "second stream header mid-stream (with XML declaration)";
    if (open_at(&c, AT_HEADER, what) == 0) {
        send_str(c.fd, HEADER);
        expect_stream_end(&c, what, "restricted-xml");   /* the declaration is a PI mid-stream */
        client_close(&c);
        healthy_ping(what);
    }
    what = "second stream header mid-stream before SASL";
    if (open_at(&c, AT_HEADER, what) == 0) {
        send_str(c.fd, SHORT_HEADER);
        expect_some_stream_error(&c, what);
        client_close(&c);
        healthy_ping(what);
    }
    what = "second stream header mid-stream after bind";
    if (open_at(&c, AT_BOUND, what) == 0) {
        send_str(c.fd, SHORT_HEADER);
        expect_some_stream_error(&c, what);
        client_close(&c);
        healthy_ping(what);
    }
    what = "restart header right after a SCRAM <auth>, before <success/>";
    if (open_at(&c, AT_HEADER, what) == 0) {
        scram x;
        scram_first(&c, &x, "romeo", "cnonce-early");
        send_str(c.fd, SHORT_HEADER);
        expect_some_stream_error(&c, what);
        CHECK(!strstr(c.buf, "<success"), "%s: expected no success, got: %s", what, shown(c.buf));
        client_close(&c);
        healthy_ping(what);
    }
    /* PLAIN succeeds in one step, so a header pipelined with <auth/> lands after <success/>: the server may
     * take it as the restart (the client was only early) or refuse it with a stream error; either way no hang */
    what = "restart header pipelined with a PLAIN <auth>";
    if (open_at(&c, AT_HEADER, what) == 0) {
        send_str(c.fd, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AHJvbWVvAHBhc3N3b3Jk</auth>");
        send_str(c.fd, SHORT_HEADER);
        read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:features>", 3000);
        int restarted = strstr(c.buf, "<success") && strstr(c.buf, "</stream:features>") && strstr(c.buf, "<bind");
        char got[128] = "";
        if (!restarted) {
            read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</stream:stream>", 3000);
            stream_error_of(c.buf, got, sizeof got);
        }
        CHECK(restarted || is_stream_condition(got),
              "%s: expected the restart taken (bind offered) or a stream error, got: %s", what, shown(c.buf));
        client_close(&c);
        healthy_ping(what);
    }
}

/* ---- a slow but valid client ---- */

static int trickle(int fd, const char *s) {
    for (; *s; s++) {
        if (send(fd, s, 1, MSG_NOSIGNAL) != 1) return -1;
        usleep(100000);
    }
    return 0;
}

/* in a child process: a whole login, one byte every 100 ms; exit 0 when bound */
static void slow_login_child(void) {
    static client c;
    alarm(120);
    memset(&c, 0, sizeof c);
    c.fd = tcp_connect();
    const char *step = "connect";
    if (c.fd < 0) goto fail;
    step = "header";
    if (trickle(c.fd, SHORT_HEADER) < 0 || !client_expect(&c, "</stream:features>")) goto fail;
    client_clear(&c);
    step = "auth";
    if (trickle(c.fd, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AHJvbWVvAHBhc3N3b3Jk</auth>") < 0 ||
        !client_expect(&c, "<success"))
        goto fail;
    client_clear(&c);
    step = "restart";
    if (trickle(c.fd, SHORT_HEADER) < 0 || !client_expect(&c, "</stream:features>")) goto fail;
    client_clear(&c);
    step = "bind";
    if (trickle(c.fd, "<iq type='set' id='sb'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>") < 0 ||
        !client_expect(&c, "</iq>") || !strstr(c.buf, "type='result'"))
        goto fail;
    _exit(0);
fail:
    fprintf(stderr, "slow login failed at %s: %s\n", step, shown(c.buf));
    _exit(1);
}

static void slow_login_start(void) {
    slow_child = fork();
    if (slow_child == 0) slow_login_child();
    CHECK(slow_child > 0, "fork for the slow login");
}

static void slow_login_finish(void) {
    if (slow_child <= 0) return;
    int st = 0, pings = 0, ok_pings = 0;
    pid_t r = 0;
    long end = now_ms() + 90000;
    while ((r = waitpid(slow_child, &st, WNOHANG)) == 0 && now_ms() < end) {
        /* the healthy session is served while the slow one dribbles */
        char id[32];
        snprintf(id, sizeof id, "slow%d", pings++);
        ok_pings += client_ping(&healthy, id);
        usleep(500000);
    }
    if (r == 0) {
        kill(slow_child, SIGKILL);
        waitpid(slow_child, &st, 0);
        CHECK(0, "slow login: expected it to finish within 90 s, it did not");
    } else {
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "slow login (one byte per 100 ms): expected a bound session, "
              "the child reported failure (status %d)", st);
    }
    CHECK(pings == ok_pings, "slow login: expected the healthy session to answer all %d pings meanwhile, it answered %d",
          pings, ok_pings);
    slow_child = -1;
}

/* ---- abrupt resets and descriptor leaks ---- */

enum { ST_CONNECT, ST_MIDHEADER, ST_HEADER, ST_MIDSASL, ST_SASL, ST_BOUND, ST_MIDSTANZA, ST_COUNT };
static const char *const stage_names[] = {"after connect", "mid-header",  "after the header", "mid-SASL",
                                          "after SASL",    "after bind", "mid-stanza"};

/* A connection brought to `stage`; returns its fd or -1. */
static int drive_to(int stage) {
    static client c;
    char res[32];
    memset(&c, 0, sizeof c);
    c.fd = -1;
    switch (stage) {
    case ST_CONNECT:
        return tcp_connect();
    case ST_MIDHEADER:
        c.fd = tcp_connect();
        if (c.fd >= 0) send_str(c.fd, "<?xml version='1.0'?><stream:stream to='local");
        return c.fd;
    case ST_HEADER:
        if (client_open(&c) < 0) break;
        return c.fd;
    case ST_MIDSASL: {
        scram x;
        if (client_open(&c) < 0) break;
        client_clear(&c);
        scram_first(&c, &x, "romeo", "cnonce-mid");
        if (scram_challenge(&c, &x) < 0) break;
        return c.fd;
    }
    case ST_SASL:
        if (client_open(&c) < 0) break;
        client_clear(&c);
        client_auth_plain(&c, "romeo", "password");
        if (!client_expect(&c, "<success")) break;
        return c.fd;
    case ST_BOUND:
    case ST_MIDSTANZA:
        snprintf(res, sizeof res, "d%d", ++uniq);
        if (client_login(&c, "romeo", res) < 0) break;
        if (stage == ST_MIDSTANZA) send_str(c.fd, "<message to='juliet@localhost/healthy'><body>half a sta");
        return c.fd;
    }
    if (c.fd >= 0) close(c.fd);
    return -1;
}

static void drop(int fd, int rst) {
    if (rst) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(fd);
}

/* wait (bounded) until the server holds `baseline` descriptors again; returns the last count */
static int fds_settle(int baseline, int timeout_ms) {
    long end = now_ms() + timeout_ms;
    int n = proc_fd_count(server_pid);
    while (n != baseline && now_ms() < end) {
        usleep(20000);
        n = proc_fd_count(server_pid);
    }
    return n;
}

static void test_resets(void) {
    int baseline = proc_fd_count(server_pid);
    CHECK(baseline > 0, "the server's descriptors can be counted in /proc");
    printf("resets: the server holds %d descriptors at the start\n", baseline);
    if (baseline <= 0) return;
    for (int stage = 0; stage < ST_COUNT; stage++)
        for (int rst = 0; rst < 2; rst++) {
            char what[96];
            snprintf(what, sizeof what, "%s at %s", rst ? "RST" : "close", stage_names[stage]);
            int fd = drive_to(stage);
            CHECK(fd >= 0, "%s: could not bring a connection to that stage", what);
            if (fd < 0) continue;
            usleep(20000);   /* let the server take the connection in before it goes */
            drop(fd, rst);
            int n = fds_settle(baseline, 5000);
            CHECK(n == baseline, "%s: expected the server's descriptors back to %d within 5 s, got %d", what,
                  baseline, n);
            healthy_ping(what);
        }

    /* a reset while the server has output queued for the peer */
    for (int rst = 0; rst < 2; rst++) {
        char what[96];
        snprintf(what, sizeof what, "%s with output queued", rst ? "RST" : "close");
        client victim, sender;
        char vres[32], sres[32], vfull[64];
        /* a small receive buffer so that the server has to queue */
        memset(&victim, 0, sizeof victim);
        victim.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int small = 4096;
        setsockopt(victim.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(victim.fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        snprintf(vres, sizeof vres, "victim%d", ++uniq);
        if (ok) {
            char xml[256];
            send_str(victim.fd, HEADER);
            ok = client_expect(&victim, "</stream:features>");
            client_clear(&victim);
            client_auth_plain(&victim, "romeo", "password");
            ok = ok && client_expect(&victim, "<success");
            client_clear(&victim);
            send_str(victim.fd, HEADER);
            ok = ok && client_expect(&victim, "</stream:features>");
            client_clear(&victim);
            snprintf(xml, sizeof xml, "<iq type='set' id='vb'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                                      "<resource>%s</resource></bind></iq>", vres);
            send_str(victim.fd, xml);
            ok = ok && client_expect(&victim, "</iq>") && strstr(victim.buf, "type='result'");
        }
        ok = ok && login_as(&sender, "juliet", sres, sizeof sres) == 0;
        CHECK(ok, "%s: victim and sender log in", what);
        if (!ok) {
            client_close(&victim);
            continue;
        }
        snprintf(vfull, sizeof vfull, "romeo@localhost/%s", vres);
        char body[2048];
        memset(body, 'q', sizeof body - 1);
        body[sizeof body - 1] = 0;
        static char msg[2300];
        snprintf(msg, sizeof msg, "<message to='%s' type='chat'><body>%s</body></message>", vfull, body);
        for (int i = 0; i < 300; i++) send_str(sender.fd, msg);   /* ~650 KB: under max_output */
        ping_barrier(&sender, "flooded");   /* every message has been routed */
        drop(victim.fd, rst);
        victim.fd = -1;
        client_close(&sender);
        int n = fds_settle(baseline, 5000);
        CHECK(n == baseline, "%s: expected the server's descriptors back to %d within 5 s, got %d", what, baseline, n);
        healthy_ping(what);
    }
}

static void test_fd_leak(void) {
    int baseline = proc_fd_count(server_pid);
    if (baseline <= 0) return;
    enum { TOTAL = 2000, BATCH = 400 };
    static int fds[BATCH];
    int opened = 0, failed = 0;
    long end = now_ms() + 60000;
    for (int done = 0; done < TOTAL && now_ms() < end; done += BATCH) {
        int k = 0;
        for (int i = 0; i < BATCH; i++) {
            int fd = drive_to((done + i) % ST_COUNT);
            if (fd < 0) failed++;
            else fds[k++] = fd;
        }
        opened += k;
        for (int i = 0; i < k; i++) drop(fds[i], i & 1);
    }
    CHECK(opened == TOTAL && failed == 0, "fd leak: expected %d connections driven to their stages, got %d (%d failed)",
          TOTAL, opened, failed);
    int n = fds_settle(baseline, 5000);
    CHECK(n == baseline, "fd leak: after %d dropped connections expected the server's descriptors back to %d within "
          "5 s, got %d", opened, baseline, n);
    healthy_ping("2,000 dropped connections");
}

/* ---- slowloris ---- */

static void test_slowloris(void) {
    if (start_server(CONF_SLOWLORIS) < 0) {
        CHECK(0, "slowloris server started");
        return;
    }
    client other;
    if (client_login(&other, "juliet", "other") < 0) {
        CHECK(0, "slowloris: juliet logs in first: %s", shown(other.buf));
        stop_server();
        return;
    }
    int baseline = proc_fd_count(server_pid);
    enum { N = 1000 };
    static int fds[N];
    static char bufs[N][1024];
    static size_t lens[N];
    static char done[N];
    int opened = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = tcp_connect();
        lens[i] = 0;
        bufs[i][0] = 0;
        done[i] = 0;
        if (fds[i] < 0) break;
        send_str(fds[i], "<?xml version='1.0'?><stream:stream to='localhost' ver");
        opened++;
    }
    CHECK_INT(N, opened);
    /* a legitimate client gets through while they hang on: login, a message each way (5 s per step) */
    client legit;
    int ok = client_login(&legit, "romeo", "legit") == 0;
    CHECK(ok, "slowloris: expected a legitimate login while %d connections hang on, got: %s", opened,
          shown(legit.buf));
    if (ok) {
        send_str(legit.fd, "<message to='juliet@localhost/other' type='chat' id='sl1'><body>through</body></message>");
        CHECK(read_until(other.fd, other.buf, sizeof other.buf, &other.len, "through", 5000),
              "slowloris: expected the message delivered within 5 s, got: %s", shown(other.buf));
        send_str(other.fd, "<message to='romeo@localhost/legit' type='chat' id='sl2'><body>back</body></message>");
        CHECK(read_until(legit.fd, legit.buf, sizeof legit.buf, &legit.len, "back", 5000),
              "slowloris: expected the reply delivered within 5 s, got: %s", shown(legit.buf));
    }
    /* every idle one is closed with connection-timeout (handshake_timeout = 3) */
    int closed = 0, timed_out = 0;
    long end = now_ms() + 15000;
    static struct pollfd pf[N];
    while (closed < opened && now_ms() < end) {
        int m = 0;
        static int idx[N];
        for (int i = 0; i < opened; i++)
            if (!done[i]) {
                pf[m].fd = fds[i];
                pf[m].events = POLLIN;
                pf[m].revents = 0;
                idx[m++] = i;
            }
        if (poll(pf, (nfds_t)m, 200) < 0) break;
        for (int j = 0; j < m; j++) {
            if (!pf[j].revents) continue;
            int i = idx[j];
            char tmp[2048];
            ssize_t r = recv(fds[i], tmp, sizeof tmp, 0);
            if (r > 0) {
                size_t k = (size_t)r < sizeof bufs[i] - 1 - lens[i] ? (size_t)r : sizeof bufs[i] - 1 - lens[i];
                memcpy(bufs[i] + lens[i], tmp, k);
                lens[i] += k;
                bufs[i][lens[i]] = 0;
                continue;
            }
            done[i] = 1;
            closed++;
            if (strstr(bufs[i], "<connection-timeout xmlns='" NS_STREAMS "'/>")) timed_out++;
        }
    }
    CHECK(closed == opened && timed_out == opened,
          "slowloris: expected all %d idle connections closed with connection-timeout within 15 s, %d closed, %d with "
          "connection-timeout", opened, closed, timed_out);
    for (int i = 0; i < opened; i++) close(fds[i]);
    client_close(&legit);
    int n = fds_settle(baseline, 5000);
    CHECK(n == baseline, "slowloris: expected the server's descriptors back to %d, got %d", baseline, n);
    CHECK(client_ping(&other, "after-slowloris"), "slowloris: the first session still answers afterwards");
    client_close(&other);
    CHECK_INT(0, stop_server());
}

/* ---- the suite ---- */

static void on_alarm(int sig) {
    static const char msg[] = "FAIL badinput: the suite passed its 300 s bound; killing the server\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */ }
    if (server_pid > 0) kill(server_pid, SIGKILL);
    if (slow_child > 0) kill(slow_child, SIGKILL);
    pid_t p = fork();
    if (p == 0) {
        execl("/bin/rm", "rm", "-rf", tmpdir, (char *)NULL);
        _exit(1);
    }
    if (p > 0) waitpid(p, NULL, 0);
    _exit(2);
}

int main(int argc, char **argv) {
    (void)argc;
    if (xmpp_test_init(argv[0]) < 0) {
        CHECK(0, "test set-up");
        return check_summary("badinput");
    }
    signal(SIGALRM, on_alarm);
    alarm(300);
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx) SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);

    if (start_server(CONF_MAIN) == 0) {
        if (client_login(&healthy, "juliet", "healthy") == 0) {
            slow_login_start();
            test_restricted_xml();
            test_bad_characters();
            test_namespaces();
            test_limits();
            test_jids();
            test_spoofing();
            test_iq_semantics();
            test_out_of_order();
            test_starttls();
            test_sasl();
            test_restarts();
            slow_login_finish();
            test_resets();
            test_fd_leak();
        } else {
            CHECK(0, "a healthy session logs in: %s", shown(healthy.buf));
        }
        client_close(&healthy);
        CHECK_INT(0, stop_server());
    } else {
        CHECK(0, "server started (plaintext configuration)");
    }
    test_slowloris();
    if (slow_child > 0) {
        kill(slow_child, SIGKILL);
        waitpid(slow_child, NULL, 0);
    }
    if (tls_ctx) SSL_CTX_free(tls_ctx);
    xmpp_test_cleanup();
    return check_summary("badinput");
}
