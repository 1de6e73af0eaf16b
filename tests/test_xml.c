/* test_xml.c - tests for xml.c: arena, trees, xml_buf, serializer, and the stream parser (split at every
 * byte, refusals of restricted or malformed XML, limits, memory while idle, stream restarts). */
#include "xml.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

#define STREAM_HDR "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

/* ------------------------------------------------------------------ recording events */

typedef struct rec {
    xml_buf log;                /* one line per event */
    int opens, stanzas, closes;
    int stop_at_open;           /* return non-zero from stream_open */
    int stop_at_stanza;         /* return non-zero from the Nth stanza (1-based), 0 never */
    void (*inspect)(struct rec *r, xml_node *n);   /* extra checks on each stanza */
    xml_parser *reset_on_success;   /* reset this parser from inside the <success/> callback */
    int stop_after_reset;
} rec;

static void describe_attrs(xml_buf *b, const xml_attr *a) {
    for (; a; a = a->next) {
        if (a->ns) xml_buf_printf(b, " {%s}%s='%s'", a->ns, a->name, a->value);
        else xml_buf_printf(b, " %s='%s'", a->name, a->value);
    }
}

static int on_open(void *ud, xml_node *root) {
    rec *r = ud;
    r->opens++;
    xml_buf_printf(&r->log, "open {%s}%s", root->ns, root->name);
    describe_attrs(&r->log, root->attrs);
    xml_buf_puts(&r->log, root->children ? " children!\n" : "\n");
    return r->stop_at_open;
}

static int on_stanza(void *ud, xml_node *n) {
    rec *r = ud;
    r->stanzas++;
    xml_serialize(&r->log, n, XML_NS_CLIENT);
    xml_buf_puts(&r->log, "\n");
    if (r->inspect) r->inspect(r, n);
    if (r->reset_on_success && strcmp(n->name, "success") == 0) {
        xml_parser_reset(r->reset_on_success);
        return r->stop_after_reset;
    }
    return r->stop_at_stanza == r->stanzas;
}

static int on_close(void *ud) {
    rec *r = ud;
    r->closes++;
    xml_buf_puts(&r->log, "close\n");
    return 0;
}

static const xml_events events = { on_open, on_stanza, on_close };

static void rec_init(rec *r) {
    memset(r, 0, sizeof *r);
    xml_buf_init(&r->log);
}

static const char *rec_log(rec *r) {
    return r->log.data ? r->log.data : "";
}

/* Feeds data in pieces of `step` bytes (0: all at once); returns the first non-OK status. */
static int feed_steps(xml_parser *p, const char *data, size_t len, size_t step) {
    size_t off = 0;
    if (step == 0) step = len ? len : 1;
    while (off < len) {
        size_t n = len - off < step ? len - off : step, used = 0;
        int rc = xml_parser_feed(p, data + off, n, &used);
        if (rc != XML_OK) return rc;
        if (used != n) return -1;
        off += n;
    }
    return XML_OK;
}

static int parse_with(rec *r, const xml_limits *lim, const char *data, size_t len, size_t step) {
    xml_parser *p = xml_parser_new(lim, &events, r);
    if (!p) return XML_ERR_NOMEM;
    int rc = feed_steps(p, data, len, step);
    xml_parser_free(p);
    return rc;
}

/* ------------------------------------------------------------------ arena, trees, buffer */

static void test_arena(void) {
    xml_arena *a = xml_arena_new();
    CHECK(a != NULL, "arena_new failed");
    CHECK_INT(0, xml_arena_used(a));
    char *p1 = xml_arena_alloc(a, 3), *p2 = xml_arena_alloc(a, 5);
    CHECK(((size_t)p1 & 7) == 0 && ((size_t)p2 & 7) == 0, "allocations not 8-byte aligned: %p %p",
          (void *)p1, (void *)p2);
    CHECK(p2 >= p1 + 8, "allocations overlap");
    size_t small = xml_arena_used(a);
    CHECK(small > 0 && small <= 4096, "one chunk expected, got %zu bytes", small);
    char *big = xml_arena_alloc(a, 100000);
    CHECK(big != NULL, "big allocation failed");
    memset(big, 'x', 100000);
    CHECK(xml_arena_used(a) >= small + 100000, "big allocation not counted: %zu", xml_arena_used(a));
    /* the head chunk keeps serving small allocations after a big one */
    char *p3 = xml_arena_alloc(a, 8);
    CHECK(p3 == p2 + 8, "small allocation after a big one left the current chunk");
    for (int i = 0; i < 1000; i++) xml_arena_alloc(a, 40);
    xml_arena_reset(a);
    CHECK(xml_arena_used(a) <= 4096, "reset keeps at most one chunk, holds %zu", xml_arena_used(a));
    CHECK_STR("hello", xml_arena_strdup(a, "hello"));
    CHECK_STR("hel", xml_arena_strndup(a, "hello", 3));
    xml_arena_free(a);
    xml_arena_free(NULL);
}

static void test_tree_builders(void) {
    xml_arena *a = xml_arena_new();
    xml_node *m = xml_node_new(a, "message", XML_NS_CLIENT);
    CHECK_STR("message", m->name);
    CHECK_STR(XML_NS_CLIENT, m->ns);
    xml_node *body = xml_add_child_text(a, m, "body", NULL, "hi");
    CHECK_STR(XML_NS_CLIENT, body->ns);
    CHECK(body->parent == m, "child's parent not set");
    CHECK_STR("hi", xml_text(body));
    CHECK_STR("", xml_text(m));
    xml_node *x = xml_add_child(a, m, "x", "urn:x");
    xml_add_child(a, m, "body", "urn:other");
    xml_node *b2 = xml_add_child(a, m, "body", NULL);
    CHECK(xml_child(m, "body", NULL) == body, "xml_child by name");
    CHECK(xml_child(m, "x", "urn:x") == x, "xml_child by name and ns");
    CHECK(xml_child(m, "x", XML_NS_CLIENT) == NULL, "xml_child must check the namespace");
    CHECK(xml_child(m, NULL, "urn:x") == x, "xml_child by ns only");
    CHECK(xml_next_child(body, "body", XML_NS_CLIENT) == b2, "xml_next_child skips other namespaces");
    CHECK(xml_next_child(b2, "body", NULL) == NULL, "xml_next_child past the end");
    CHECK_STR("", xml_text(xml_child(m, "nothere", NULL)));
    CHECK(xml_attr_get(xml_child(m, "nothere", NULL), "a") == NULL, "accessors must accept NULL");

    /* adjacent text is merged so xml_text sees all of it */
    xml_node *t = xml_add_child(a, m, "t", NULL);
    xml_add_text(a, t, "ab", 2);
    xml_add_text(a, t, "cd", 2);
    CHECK_STR("abcd", xml_text(t));
    CHECK(t->children == t->last_child, "merged text must be one node");
    CHECK_INT(4, t->children->text_len);

    /* attributes: set, replace, remove, prefixed ones untouched */
    CHECK_INT(0, xml_set_attr(a, m, "to", "a@b"));
    CHECK_INT(0, xml_set_attr(a, m, "type", "chat"));
    CHECK_INT(0, xml_set_attr(a, m, "to", "c@d"));
    CHECK_STR("c@d", xml_attr_get(m, "to"));
    CHECK(xml_attr_get(m, "from") == NULL, "absent attribute must be NULL");
    xml_attr *lang = xml_arena_alloc(a, sizeof *lang);
    lang->name = "lang";
    lang->ns = XML_NS_XML;
    lang->value = "en";
    lang->next = NULL;
    m->attrs->next->next = lang;
    CHECK_STR("en", xml_attr_get_ns(m, XML_NS_XML, "lang"));
    CHECK(xml_attr_get(m, "lang") == NULL, "prefixed attribute must not match xml_attr_get");
    CHECK_INT(0, xml_set_attr(a, m, "lang", "fr"));
    CHECK_STR("en", xml_attr_get_ns(m, XML_NS_XML, "lang"));
    CHECK_STR("fr", xml_attr_get(m, "lang"));
    CHECK_INT(0, xml_set_attr(a, m, "to", NULL));
    CHECK(xml_attr_get(m, "to") == NULL, "NULL value must remove");
    CHECK_STR("chat", m->attrs->name[0] == 't' ? m->attrs->value : "?");
    CHECK_INT(0, xml_set_attr(a, m, "nothere", NULL));

    xml_buf b;
    xml_buf_init(&b);
    xml_serialize(&b, m, XML_NS_CLIENT);
    CHECK_STR("<message type='chat' xml:lang='en' lang='fr'><body>hi</body><x xmlns='urn:x'/>"
              "<body xmlns='urn:other'/><body/><t>abcd</t></message>", b.data);

    /* deep copy into another arena survives the original */
    xml_arena *a2 = xml_arena_new();
    xml_node *copy = xml_copy(a2, m);
    xml_buf c;
    xml_buf_init(&c);
    xml_serialize(&c, copy, XML_NS_CLIENT);
    CHECK_STR(b.data, c.data);
    CHECK(copy->parent == NULL, "copy has no parent");
    xml_remove_child(m, body);
    xml_remove_child(m, t);
    CHECK(m->last_child != t && body->parent == NULL, "remove_child must unlink");
    xml_buf_reset(&b);
    xml_serialize(&b, m, XML_NS_CLIENT);
    CHECK_STR("<message type='chat' xml:lang='en' lang='fr'><x xmlns='urn:x'/><body xmlns='urn:other'/><body/>"
              "</message>", b.data);
    xml_append_child(m, t);
    CHECK(m->last_child == t && t->parent == m, "append_child links at the end");
    xml_arena_free(a);
    xml_buf_reset(&c);
    xml_serialize(&c, copy, XML_NS_CLIENT);
    CHECK(strstr(c.data, "<body>hi</body>") != NULL, "copy changed with its original: %s", c.data);
    xml_arena_free(a2);
    xml_buf_free(&b);
    xml_buf_free(&c);
}

static void test_buf(void) {
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_append(&b, "", 0);
    CHECK(b.data && b.data[0] == '\0' && b.len == 0, "empty append must NUL-terminate");
    xml_buf_puts(&b, "ab");
    xml_buf_printf(&b, "%d-%s", 42, "x");
    CHECK_STR("ab42-x", b.data);
    char big[300];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    xml_buf_printf(&b, "[%s]", big);
    CHECK_INT(6 + 2 + 299, b.len);
    CHECK(b.data[b.len - 1] == ']' && b.data[b.len] == '\0', "printf growth lost the tail");
    xml_buf_reset(&b);
    CHECK_INT(0, b.len);
    xml_buf_escape(&b, "a&b<c>d'e\"f", 11);
    CHECK_STR("a&amp;b&lt;c&gt;d&apos;e&quot;f", b.data);
    CHECK_INT(0, b.oom);
    xml_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0, "free must clear");
}

/* ------------------------------------------------------------------ serializer */

static void test_serializer(void) {
    xml_arena *a = xml_arena_new();
    xml_buf b;
    xml_buf_init(&b);
    xml_node *m = xml_node_new(a, "message", XML_NS_CLIENT);
    xml_set_attr(a, m, "to", "a'b\"c<d>e&f");
    xml_attr *ext = xml_arena_alloc(a, sizeof *ext);
    *ext = (xml_attr){ "attr", "urn:ext", "v", NULL };
    xml_attr *lang = xml_arena_alloc(a, sizeof *lang);
    *lang = (xml_attr){ "lang", XML_NS_XML, "en", ext };
    m->attrs->next = lang;
    xml_add_child_text(a, m, "body", NULL, "1 < 2 & 3 > 2 'q' \"d\"\r\n");
    xml_node *x = xml_add_child(a, m, "x", "jabber:x:data");
    xml_node *f = xml_add_child(a, x, "field", NULL);
    xml_set_attr(a, f, "var", "tab\there\nnl");
    xml_add_child(a, f, "value", XML_NS_CLIENT);

    xml_serialize(&b, m, XML_NS_CLIENT);
    const char *want = "<message to='a&apos;b&quot;c&lt;d&gt;e&amp;f' xml:lang='en' xmlns:ns1='urn:ext' ns1:attr='v'>"
                       "<body>1 &lt; 2 &amp; 3 &gt; 2 &apos;q&apos; &quot;d&quot;&#13;\n</body>"
                       "<x xmlns='jabber:x:data'><field var='tab&#9;here&#10;nl'><value xmlns='jabber:client'/>"
                       "</field></x></message>";
    CHECK_STR(want, b.data);

    xml_buf_reset(&b);
    xml_serialize(&b, m, NULL);
    CHECK(strncmp(b.data, "<message xmlns='jabber:client' to=", 34) == 0,
          "root with parent_ns NULL must declare its ns, got %s", b.data);
    xml_buf_reset(&b);
    xml_serialize(&b, m, "jabber:server");
    CHECK(strncmp(b.data, "<message xmlns='jabber:client' ", 31) == 0, "ns differing from parent_ns: %s", b.data);

    /* round trip: parse what we wrote, serialize again, same bytes */
    xml_buf doc;
    xml_buf_init(&doc);
    xml_buf_puts(&doc, STREAM_HDR);
    xml_serialize(&doc, m, XML_NS_CLIENT);
    rec r;
    rec_init(&r);
    CHECK_INT(XML_OK, parse_with(&r, NULL, doc.data, doc.len, 0));
    char expect[1024];
    snprintf(expect, sizeof expect, "open {%s}stream\n%s\n", XML_NS_STREAM, want);
    CHECK_STR(expect, rec_log(&r));

    /* streams namespace elements use the stream: prefix the stream header binds */
    xml_node *feat = xml_node_new(a, "features", XML_NS_STREAM);
    xml_add_child(a, xml_add_child(a, feat, "bind", "urn:ietf:params:xml:ns:xmpp-bind"), "required", NULL);
    xml_buf_reset(&b);
    xml_serialize(&b, feat, XML_NS_CLIENT);
    CHECK_STR("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind>"
              "</stream:features>", b.data);
    xml_buf_reset(&doc);
    xml_buf_puts(&doc, STREAM_HDR);
    xml_buf_append(&doc, b.data, b.len);
    xml_buf_free(&r.log);
    rec_init(&r);
    CHECK_INT(XML_OK, parse_with(&r, NULL, doc.data, doc.len, 0));
    CHECK(strstr(rec_log(&r), b.data) != NULL, "stream:features round trip, got %s", rec_log(&r));

    /* split: head ends before the root's '>' or '/>' */
    size_t split = 0;
    xml_node *pres = xml_node_new(a, "presence", XML_NS_CLIENT);
    xml_set_attr(a, pres, "from", "r@x/y");
    xml_buf_reset(&b);
    xml_buf_puts(&b, "XX");
    xml_serialize_split(&b, pres, XML_NS_CLIENT, &split);
    CHECK_INT(2 + strlen("<presence from='r@x/y'"), split);
    CHECK_STR("/>", b.data + split);
    xml_add_child_text(a, pres, "show", NULL, "away");
    xml_buf_reset(&b);
    xml_serialize_split(&b, pres, XML_NS_CLIENT, &split);
    CHECK_STR("><show>away</show></presence>", b.data + split);
    CHECK(split == strlen("<presence from='r@x/y'") && memcmp(b.data, "<presence from='r@x/y'", split) == 0,
          "head wrong: %.*s", (int)split, b.data);
    xml_buf_reset(&doc);
    xml_buf_append(&doc, b.data, split);
    xml_buf_puts(&doc, " to='j@x'");
    xml_buf_puts(&doc, b.data + split);
    CHECK_STR("<presence from='r@x/y' to='j@x'><show>away</show></presence>", doc.data);

    xml_buf_free(&doc);
    xml_buf_free(&b);
    xml_buf_free(&r.log);
    xml_arena_free(a);
}

/* ------------------------------------------------------------------ a real client stream */

static const char client_stream[] =
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' "
    "version=\"1.0\" xml:lang='en'>\n"
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMA==</auth>\n  \t\r\n"
    "<iq type='set' id=\"b1\"><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>"
    " <message to='romeo@example.net' type=\"chat\" xml:lang='en' id='m&amp;1'><body>Art thou &lt;not&gt; Romeo "
    "&amp; a &quot;Montague&apos;? &#x263A;&#9731; caf\xc3\xa9 <![CDATA[<b>bold</b> & ]]]]><![CDATA[>]]>\r\nend</body>"
    "<x:data xmlns:x='urn:x' x:attr='v' plain=\"q&quot;&apos;\tz\"/>"
    "<thread>t1</thread></message>"
    "<presence><show>away</show><status>\xf0\x9f\x98\x80 out</status>"
    "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v+/='/></presence>"
    "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>\n"
    "</stream:stream>";

static const char client_expect[] =
    "open {http://etherx.jabber.org/streams}stream to='example.com' version='1.0' "
    "{http://www.w3.org/XML/1998/namespace}lang='en'\n"
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMA==</auth>\n"
    "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>\n"
    "<message to='romeo@example.net' type='chat' xml:lang='en' id='m&amp;1'><body>Art thou &lt;not&gt; Romeo "
    "&amp; a &quot;Montague&apos;? \xe2\x98\xba\xe2\x98\x83 caf\xc3\xa9 &lt;b&gt;bold&lt;/b&gt; &amp; ]]&gt;\nend</body>"
    "<data xmlns='urn:x' xmlns:ns1='urn:x' ns1:attr='v' plain='q&quot;&apos; z'/>"
    "<thread>t1</thread></message>\n"
    "<presence><show>away</show><status>\xf0\x9f\x98\x80 out</status>"
    "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v+/='/></presence>\n"
    "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>\n"
    "close\n";

static void inspect_client(rec *r, xml_node *n) {
    if (strcmp(n->name, "message") != 0) return;
    CHECK_STR(XML_NS_CLIENT, n->ns);
    CHECK_STR("en", xml_attr_get_ns(n, XML_NS_XML, "lang"));
    CHECK_STR("m&1", xml_attr_get(n, "id"));
    xml_node *body = xml_child(n, "body", XML_NS_CLIENT);
    CHECK(body != NULL, "message has no body");
    if (body) {
        CHECK(body->children && body->children == body->last_child, "body text must be one merged node");
        CHECK_STR("Art thou <not> Romeo & a \"Montague'? \xe2\x98\xba\xe2\x98\x83 caf\xc3\xa9 <b>bold</b> & ]]>\nend",
                  xml_text(body));
    }
    xml_node *data = xml_child(n, "data", "urn:x");
    CHECK(data != NULL, "x:data not found by ns");
    if (data) {
        CHECK_STR("v", xml_attr_get_ns(data, "urn:x", "attr"));
        CHECK(xml_attr_get(data, "attr") == NULL, "prefixed attribute must not be unprefixed");
        CHECK_STR("q\"' z", xml_attr_get(data, "plain"));
        CHECK(data->parent == n, "parent link");
    }
    CHECK_STR("t1", xml_text(xml_child(n, "thread", NULL)));
}

static void test_client_stream(void) {
    size_t len = sizeof client_stream - 1;
    rec r;
    rec_init(&r);
    r.inspect = inspect_client;
    CHECK_INT(XML_OK, parse_with(&r, NULL, client_stream, len, 0));
    CHECK_STR(client_expect, rec_log(&r));
    CHECK_INT(1, r.opens);
    CHECK_INT(5, r.stanzas);
    CHECK_INT(1, r.closes);
    xml_buf_free(&r.log);

    /* one byte at a time */
    rec_init(&r);
    CHECK_INT(XML_OK, parse_with(&r, NULL, client_stream, len, 1));
    CHECK_STR(client_expect, rec_log(&r));
    xml_buf_free(&r.log);

    /* two pieces, split at every offset, and a few odd steps */
    int bad = 0;
    for (size_t k = 0; k <= len; k++) {
        rec_init(&r);
        xml_parser *p = xml_parser_new(NULL, &events, &r);
        size_t u1 = 0, u2 = 0;
        int rc1 = xml_parser_feed(p, client_stream, k, &u1);
        int rc2 = xml_parser_feed(p, client_stream + k, len - k, &u2);
        if (rc1 != XML_OK || rc2 != XML_OK || u1 != k || u2 != len - k || strcmp(client_expect, rec_log(&r)) != 0) {
            if (!bad++)
                CHECK(0, "split at %zu: rc %d/%d used %zu/%zu log:\n%s", k, rc1, rc2, u1, u2, rec_log(&r));
        }
        xml_parser_free(p);
        xml_buf_free(&r.log);
    }
    CHECK_INT(0, bad);
    for (size_t step = 2; step < 40; step += 3) {
        rec_init(&r);
        CHECK_INT(XML_OK, parse_with(&r, NULL, client_stream, len, step));
        CHECK_STR(client_expect, rec_log(&r));
        xml_buf_free(&r.log);
    }
}

/* ------------------------------------------------------------------ stop, restart, idle memory */

static void test_stop_and_restart(void) {
    static const char in[] =
        STREAM_HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth>"
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x'>"
        "<iq type='get' id='1'/>";
    size_t len = sizeof in - 1;
    rec r;
    rec_init(&r);
    r.stop_at_stanza = 2;
    xml_parser *p = xml_parser_new(NULL, &events, &r);
    size_t used = 0;
    CHECK_INT(XML_STOPPED, xml_parser_feed(p, in, len, &used));
    const char *restart = strstr(in, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to=");
    CHECK_INT(restart - in, used);
    CHECK_INT(2, r.stanzas);
    xml_parser_reset(p);
    xml_buf_reset(&r.log);
    CHECK_INT(XML_OK, xml_parser_feed(p, in + used, len - used, NULL));
    CHECK_STR("open {http://etherx.jabber.org/streams}stream to='x'\n<iq type='get' id='1'/>\n", rec_log(&r));

    /* a stop in stream_open reports the offset just past the header's '>' */
    xml_parser_reset(p);
    xml_buf_reset(&r.log);
    r.stop_at_open = 1;
    r.stanzas = 0;
    r.stop_at_stanza = 0;
    CHECK_INT(XML_STOPPED, xml_parser_feed(p, in, len, &used));
    CHECK_INT(strlen(STREAM_HDR), used);
    /* continuing after a stop is fine: the parser stopped in a consistent state */
    r.stop_at_open = 0;
    /* without a reset, the second <stream:stream> stands where a stanza belongs: refused at its start tag */
    CHECK_INT(XML_ERR_NESTED_STREAM, xml_parser_feed(p, in + used, len - used, NULL));
    CHECK_INT(2, r.stanzas);
    xml_parser_free(p);

    /* stopping byte-at-a-time: consumed is 1 on the '>' */
    xml_buf_free(&r.log);
    rec_init(&r);
    r.stop_at_stanza = 1;
    p = xml_parser_new(NULL, &events, &r);
    const char *s1 = STREAM_HDR "<a/><b/>";
    size_t i, got = 0;
    int rc = XML_OK;
    for (i = 0; i < strlen(s1) && rc == XML_OK; i++) rc = xml_parser_feed(p, s1 + i, 1, &got);
    CHECK_INT(XML_STOPPED, rc);
    CHECK_INT(1, got);
    CHECK_INT(strlen(STREAM_HDR "<a/>"), i);
    xml_parser_free(p);
    xml_buf_free(&r.log);
}

/* A server may reset the parser from inside a callback; the restarted stream may carry an XML declaration. */
static void test_reset_in_callback(void) {
    static const char in[] =
        "<?xml version='1.0'?>" STREAM_HDR "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        "<?xml version='1.0'?>" STREAM_HDR "<iq type='get' id='1'/>";
    size_t len = sizeof in - 1, used = 0;
    for (int stop = 0; stop <= 1; stop++) {
        for (size_t step = 0; step <= 1; step++) {
            rec r;
            rec_init(&r);
            xml_parser *p = xml_parser_new(NULL, &events, &r);
            r.reset_on_success = p;
            r.stop_after_reset = stop;
            size_t off = 0;
            int rc = XML_OK;
            while (off < len && (rc == XML_OK || rc == XML_STOPPED)) {
                size_t n = step ? 1 : len - off;
                rc = xml_parser_feed(p, in + off, n, &used);
                off += used;
            }
            CHECK(rc == XML_OK || rc == XML_STOPPED, "stop %d step %zu: %s", stop, step, xml_status_str(rc));
            CHECK_STR("open {http://etherx.jabber.org/streams}stream\n"
                      "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\n"
                      "open {http://etherx.jabber.org/streams}stream\n<iq type='get' id='1'/>\n", rec_log(&r));
            xml_parser_free(p);
            xml_buf_free(&r.log);
        }
    }
}

/* go-xmpp ends every element with a newline and restarts with "\n<?xml ...?>\n<stream:stream>": the
 * whitespace before the new stream's declaration is accepted, wherever the input is split. */
static int feed_all(xml_parser *p, const char *in, size_t len) {
    size_t off = 0, used = 0;
    int rc = XML_OK;
    for (int turns = 0; off < len && turns < 1000 && (rc == XML_OK || rc == XML_STOPPED); turns++) {
        rc = xml_parser_feed(p, in + off, len - off, &used);
        off += used;
    }
    return rc;
}

static void test_restart_whitespace(void) {
    static const char in[] =
        STREAM_HDR "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\n"
        "\n<?xml version='1.0'?>\n" STREAM_HDR "<iq type='get' id='1'/>\n";
    static const char want[] =
        "open {http://etherx.jabber.org/streams}stream\n"
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\n"
        "open {http://etherx.jabber.org/streams}stream\n<iq type='get' id='1'/>\n";
    size_t len = sizeof in - 1;
    int bad = 0;
    for (int stop = 0; stop <= 1; stop++) {
        for (size_t cut = 0; cut <= len; cut++) {
            rec r;
            rec_init(&r);
            xml_parser *p = xml_parser_new(NULL, &events, &r);
            r.reset_on_success = p;
            r.stop_after_reset = stop;
            int rc = feed_all(p, in, cut);
            if (rc == XML_OK || rc == XML_STOPPED) rc = feed_all(p, in + cut, len - cut);
            if ((rc != XML_OK && rc != XML_STOPPED) || strcmp(rec_log(&r), want) != 0) {
                if (!bad++)
                    CHECK(0, "restart split at %zu (stop %d): expected %s, got %s and\n%s", cut, stop,
                          want, xml_status_str(rc), rec_log(&r));
            }
            xml_parser_free(p);
            xml_buf_free(&r.log);
        }
    }
    CHECK(!bad, "%d split points refused the restart", bad);

    /* nothing else loosens: a declaration inside the restarted stream, text before it, two declarations */
    static const char *const refused[] = {
        "\n" STREAM_HDR "<?xml version='1.0'?>",
        "\n x<?xml version='1.0'?>" STREAM_HDR,
        "\n<?xml version='1.0'?>\n<?xml version='1.0'?>" STREAM_HDR,
        "\n<!-- c -->" STREAM_HDR,
    };
    static const int want_rc[] = { XML_ERR_RESTRICTED, XML_ERR_NOT_WELL_FORMED, XML_ERR_RESTRICTED,
                                   XML_ERR_RESTRICTED };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        rec r;
        rec_init(&r);
        xml_parser *p = xml_parser_new(NULL, &events, &r);
        xml_parser_reset(p);
        int rc = feed_all(p, refused[i], strlen(refused[i]));
        CHECK(rc == want_rc[i], "after a restart, %s: expected %s, got %s", refused[i],
              xml_status_str(want_rc[i]), xml_status_str(rc));
        xml_parser_free(p);
        xml_buf_free(&r.log);
    }
}

/* WebSocket framing (RFC 7395): no root; each top-level element is a stanza, wherever the input is split */
static int parse_fragments(rec *r, const char *in, size_t len, size_t cut, int reset_first) {
    xml_parser *p = xml_parser_new(NULL, &events, r);
    if (!p) return XML_ERR_NOMEM;
    int rc = xml_parser_set_stanza_depth(p, 1);
    if (reset_first) xml_parser_reset(p);
    if (rc == 0) rc = feed_all(p, in, cut);
    if (rc == XML_OK) rc = feed_all(p, in + cut, len - cut);
    xml_parser_free(p);
    return rc;
}

static void test_fragments(void) {
    static const char in[] =
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
        "<message xmlns='jabber:client' to='a@b'><body>hi &amp; bye</body></message> \n"
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
    static const char want[] =
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>\n"
        "<message to='a@b'><body>hi &amp; bye</body></message>\n"    /* jabber:client is the log's default */
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>\n";
    size_t len = sizeof in - 1;
    int bad = 0;
    for (int reset = 0; reset <= 1; reset++)
        for (size_t cut = 0; cut <= len; cut++) {
            rec r;
            rec_init(&r);
            int rc = parse_fragments(&r, in, len, cut, reset);
            if ((rc != XML_OK || strcmp(rec_log(&r), want) || r.opens || r.closes) && !bad++)
                CHECK(0, "fragments split at %zu (reset %d): expected OK and\n%s\ngot %s and\n%s", cut, reset, want,
                      xml_status_str(rc), rec_log(&r));
            xml_buf_free(&r.log);
        }
    CHECK(!bad, "%d split points of a framed stream went wrong", bad);
    xml_parser *p = xml_parser_new(NULL, &events, NULL);
    CHECK_INT(-1, xml_parser_set_stanza_depth(p, 3));
    xml_parser_free(p);

    static const struct { const char *in; int want; } refused[] = {
        {"</message>", XML_ERR_NOT_WELL_FORMED},
        {"<message xmlns='jabber:client'/></open>", XML_ERR_NOT_WELL_FORMED},
        {"<?xml version='1.0'?><open/>", XML_ERR_RESTRICTED},
        {"<!-- hi --><open/>", XML_ERR_RESTRICTED},
        {"<foo:open/>", XML_ERR_BAD_NAMESPACE},
        {"<a><b></a></b>", XML_ERR_NOT_WELL_FORMED},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        rec r;
        rec_init(&r);
        int rc = parse_fragments(&r, refused[i].in, strlen(refused[i].in), 0, 0);
        CHECK(rc == refused[i].want, "fragments %s: expected %s, got %s", refused[i].in,
              xml_status_str(refused[i].want), xml_status_str(rc));
        xml_buf_free(&r.log);
    }
}

static void test_idle_memory(void) {
    rec r;
    rec_init(&r);
    xml_parser *p = xml_parser_new(NULL, &events, &r);
    size_t fresh = xml_parser_memory(p);
    CHECK(fresh < 256, "fresh parser holds %zu bytes", fresh);
    CHECK_INT(XML_OK, xml_parser_feed(p, client_stream, strstr(client_stream, "<auth") - client_stream, NULL));
    size_t idle = xml_parser_memory(p);
    CHECK(idle < 512, "idle after the stream header holds %zu bytes", idle);
    const char *msg = "<message to='a@b'><body>hello there, this is a long enough body to need some room</body>";
    CHECK_INT(XML_OK, xml_parser_feed(p, msg, strlen(msg), NULL));
    size_t busy = xml_parser_memory(p);
    CHECK(busy > idle + 1000, "a partial stanza should hold scratch and arena: %zu vs idle %zu", busy, idle);
    CHECK_INT(XML_OK, xml_parser_feed(p, "</message> \n", 12, NULL));
    CHECK_INT(idle, xml_parser_memory(p));
    /* partial tag at depth 1 holds scratch, whitespace does not */
    CHECK_INT(XML_OK, xml_parser_feed(p, "<pres", 5, NULL));
    CHECK(xml_parser_memory(p) > idle, "partial tag must hold scratch");
    CHECK_INT(XML_OK, xml_parser_feed(p, "ence/>", 6, NULL));
    CHECK_INT(idle, xml_parser_memory(p));
    /* megabytes of whitespace keepalives cost nothing */
    char *ws = malloc(1 << 20);
    memset(ws, ' ', 1 << 20);
    for (int i = 0; i < 10; i++) CHECK_INT(XML_OK, xml_parser_feed(p, ws, 1 << 20, NULL));
    CHECK_INT(idle, xml_parser_memory(p));
    free(ws);
    CHECK_INT(1, r.opens);
    CHECK_INT(2, r.stanzas);
    xml_parser_reset(p);
    CHECK_INT(fresh, xml_parser_memory(p));
    xml_parser_free(p);
    xml_buf_free(&r.log);
}

static void test_reset_after_error(void) {
    rec r;
    rec_init(&r);
    xml_parser *p = xml_parser_new(NULL, &events, &r);
    const char *bad = STREAM_HDR "<message><!-- x --></message>";
    size_t used = 99;
    CHECK_INT(XML_ERR_RESTRICTED, xml_parser_feed(p, bad, strlen(bad), &used));
    CHECK(used < strlen(bad), "consumed must stop at the error, got %zu", used);
    CHECK_INT(XML_ERR_RESTRICTED, xml_parser_feed(p, "<presence/>", 11, &used));
    CHECK_INT(0, used);
    CHECK_INT(XML_ERR_RESTRICTED, xml_parser_feed(p, "", 0, NULL));
    CHECK(xml_parser_memory(p) < 512, "dead parser should have released its tokens: %zu", xml_parser_memory(p));
    xml_parser_reset(p);
    xml_buf_reset(&r.log);
    const char *good = STREAM_HDR "<presence/></stream:stream>";
    CHECK_INT(XML_OK, xml_parser_feed(p, good, strlen(good), &used));
    CHECK_STR("open {http://etherx.jabber.org/streams}stream\n<presence/>\nclose\n", rec_log(&r));
    xml_parser_free(p);
    xml_buf_free(&r.log);
}

static void test_misc_stream_forms(void) {
    rec r;
    struct { const char *in; const char *log; } cases[] = {
        /* double quotes, whitespace around '=', and in end tags */
        { "<stream:stream xmlns=\"jabber:client\" xmlns:stream = \"http://etherx.jabber.org/streams\" >"
          "<iq  type = 'get' ><ping xmlns='urn:xmpp:ping'/></iq ></stream:stream >",
          "open {http://etherx.jabber.org/streams}stream\n<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>\nclose\n" },
        /* a prefixed stanza namespace, and a redeclared default */
        { STREAM_HDR "<c:message xmlns:c='jabber:client'><body xmlns=''>x</body></c:message>",
          "open {http://etherx.jabber.org/streams}stream\n<message><body xmlns=''>x</body></message>\n" },
        /* scoping: a prefix declared in one stanza is gone in the next */
        { STREAM_HDR "<m xmlns:p='urn:p'><p:a p:b='1'/></m><n/>",
          "open {http://etherx.jabber.org/streams}stream\n<m><a xmlns='urn:p' xmlns:ns1='urn:p' ns1:b='1'/></m>\n<n/>\n" },
        /* a stream without the XML declaration, header without the stream prefix */
        { "<stream xmlns='http://etherx.jabber.org/streams'><x xmlns='jabber:client'/></stream>",
          "open {http://etherx.jabber.org/streams}stream\n<x/>\nclose\n" },
        /* text and CDATA between stanzas are ignored */
        { STREAM_HDR " junk &amp; <![CDATA[ more ]]> <a/>",
          "open {http://etherx.jabber.org/streams}stream\n<a/>\n" },
        /* character data edge cases: "]]" alone, ']' before '>' apart, &#13; kept as CR */
        { STREAM_HDR "<a>]] ]&gt; ]>&#13;&#xd;x&#x10FFFF;</a>",
          "open {http://etherx.jabber.org/streams}stream\n<a>]] ]&gt; ]&gt;&#13;&#13;x\xf4\x8f\xbf\xbf</a>\n" },
        /* an empty root */
        { "<?xml version=\"1.0\"?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
          "open {http://etherx.jabber.org/streams}stream\nclose\n" },
        /* encoding names are case-insensitive; standalone allowed */
        { "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>" STREAM_HDR,
          "open {http://etherx.jabber.org/streams}stream\n" },
        /* xml: prefix is always bound; xmlns:xml to its own URI is allowed */
        { STREAM_HDR "<a xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='de'/>",
          "open {http://etherx.jabber.org/streams}stream\n<a xml:lang='de'/>\n" },
        /* same local name in different namespaces is not a duplicate */
        { STREAM_HDR "<a xmlns:p='urn:p' a='1' p:a='2'/>",
          "open {http://etherx.jabber.org/streams}stream\n<a a='1' xmlns:ns1='urn:p' ns1:a='2'/>\n" },
        /* non-ASCII names */
        { STREAM_HDR "<caf\xc3\xa9 \xc3\xa9t\xc3\xa9='\xc3\xa9'/>",
          "open {http://etherx.jabber.org/streams}stream\n<caf\xc3\xa9 \xc3\xa9t\xc3\xa9='\xc3\xa9'/>\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t step = 0; step <= 1; step++) {
            rec_init(&r);
            int rc = parse_with(&r, NULL, cases[i].in, strlen(cases[i].in), step);
            CHECK(rc == XML_OK, "case %zu step %zu: expected ok, got %s", i, step, xml_status_str(rc));
            CHECK_STR(cases[i].log, rec_log(&r));
            xml_buf_free(&r.log);
        }
    }
}

/* ------------------------------------------------------------------ refusals */

static void expect_status(int line, const char *in, size_t len, int want) {
    rec r;
    for (size_t step = 0; step <= 1; step++) {
        rec_init(&r);
        xml_parser *p = xml_parser_new(NULL, &events, &r);
        int rc = feed_steps(p, in, len, step);
        if (rc != want)
            CHECK(0, "line %d step %zu: expected %s, got %s for %.*s", line, step, xml_status_str(want),
                  xml_status_str(rc), (int)len, in);
        else
            check_passed++;
        if (rc == want && want > XML_STOPPED) {
            size_t used = 7;
            int again = xml_parser_feed(p, STREAM_HDR, 5, &used);
            CHECK(again == want && used == 0, "line %d: feed after error gave %s used %zu", line,
                  xml_status_str(again), used);
        }
        xml_parser_free(p);
        xml_buf_free(&r.log);
    }
}

#define REFUSE(s, want) expect_status(__LINE__, s, sizeof(s) - 1, want)
#define NWF XML_ERR_NOT_WELL_FORMED
#define RESTRICTED XML_ERR_RESTRICTED
#define BADNS XML_ERR_BAD_NAMESPACE

static void test_refusals(void) {
    /* restricted XML */
    REFUSE(STREAM_HDR "<message><!-- hi --></message>", RESTRICTED);
    REFUSE("<!-- hi -->" STREAM_HDR, RESTRICTED);
    REFUSE(STREAM_HDR "<!-- keepalive? -->", RESTRICTED);
    REFUSE(STREAM_HDR "<message><?php echo 1; ?></message>", RESTRICTED);
    REFUSE(STREAM_HDR "<?xml version='1.0'?>", RESTRICTED);
    REFUSE("<?xml-stylesheet href='a'?>" STREAM_HDR, RESTRICTED);
    REFUSE("<?xml version='1.0'?><?xml version='1.0'?>" STREAM_HDR, RESTRICTED);
    REFUSE(" <?xml version='1.0'?>" STREAM_HDR, RESTRICTED);
    REFUSE("<!DOCTYPE stream>" STREAM_HDR, RESTRICTED);
    REFUSE("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]>" STREAM_HDR, RESTRICTED);
    REFUSE(STREAM_HDR "<message><!ENTITY x 'y'></message>", RESTRICTED);
    REFUSE(STREAM_HDR "<!ENTITY x 'y'>", RESTRICTED);
    REFUSE("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>"
           "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;'>]><lolz>&lol3;</lolz>", RESTRICTED);
    /* billion laughs without the DTD: undeclared entity */
    REFUSE(STREAM_HDR "<message><body>&lol9;</body></message>", NWF);

    /* XML declaration */
    REFUSE("<?xml version='1.0' encoding='ISO-8859-1'?>" STREAM_HDR, XML_ERR_ENCODING);
    REFUSE("<?xml encoding='UTF-8'?>" STREAM_HDR, NWF);
    REFUSE("<?xml?>" STREAM_HDR, NWF);
    REFUSE("<?xml version='2.0'?>" STREAM_HDR, NWF);
    REFUSE("<?xml version='1.1'?>" STREAM_HDR, NWF);
    REFUSE("<?xml version='1.00'?>" STREAM_HDR, NWF);
    REFUSE("<?xml version='1.0' standalone='maybe'?>" STREAM_HDR, NWF);

    /* namespaces */
    REFUSE(STREAM_HDR "<foo:message/>", BADNS);
    REFUSE(STREAM_HDR "<message foo:a='1'/>", BADNS);
    REFUSE("<stream:stream xmlns='jabber:client'>", BADNS);
    REFUSE(STREAM_HDR "<m xmlns:p='urn:p'/><p:x/>", BADNS);
    REFUSE(STREAM_HDR "<m><a xmlns:p='urn:p'/><p:b/></m>", BADNS);
    REFUSE(STREAM_HDR "<m xmlns:p=''/>", BADNS);
    REFUSE(STREAM_HDR "<m xmlns:xml='urn:not-xml'/>", BADNS);
    REFUSE(STREAM_HDR "<m xmlns:x='http://www.w3.org/XML/1998/namespace'/>", BADNS);
    REFUSE(STREAM_HDR "<m xmlns:xmlns='urn:x'/>", BADNS);
    REFUSE(STREAM_HDR "<xmlns:m/>", BADNS);

    /* duplicate attributes */
    REFUSE(STREAM_HDR "<message a='1' a='2'/>", NWF);
    REFUSE(STREAM_HDR "<message xmlns:p='urn:u' xmlns:q='urn:u' p:a='1' q:a='2'/>", NWF);
    REFUSE(STREAM_HDR "<message xmlns:p='urn:u' xmlns:p='urn:v'/>", NWF);
    REFUSE(STREAM_HDR "<message xmlns='urn:u' xmlns='urn:v'/>", NWF);
    REFUSE(STREAM_HDR "<message xml:lang='en' xml:lang='de'/>", NWF);

    /* structure */
    REFUSE(STREAM_HDR "<message></presence>", NWF);
    REFUSE(STREAM_HDR "<message><body></message>", NWF);
    REFUSE(STREAM_HDR "<a:x xmlns:a='u' xmlns:b='u'></b:x>", NWF);
    REFUSE(STREAM_HDR "</stream:streamx>", NWF);
    REFUSE(STREAM_HDR "</stream>", NWF);
    REFUSE(STREAM_HDR "</stream:stream><stream:stream>", NWF);
    REFUSE(STREAM_HDR "</stream:stream>x", XML_ERR_CLOSED);
    REFUSE(STREAM_HDR "</stream:stream>\n", XML_ERR_CLOSED);
    REFUSE(STREAM_HDR "</stream:stream></stream:stream>", XML_ERR_CLOSED);
    REFUSE("hello" STREAM_HDR, NWF);
    REFUSE("</x>" STREAM_HDR, NWF);
    REFUSE(STREAM_HDR "<message to=a/>", NWF);
    REFUSE(STREAM_HDR "<message to='a'type='b'/>", NWF);
    REFUSE(STREAM_HDR "<message to='a<b'/>", NWF);
    REFUSE(STREAM_HDR "<message to=\"a<b\"/>", NWF);
    REFUSE(STREAM_HDR "<message to/>", NWF);
    REFUSE(STREAM_HDR "<message / >", NWF);
    REFUSE(STREAM_HDR "<1message/>", NWF);
    REFUSE(STREAM_HDR "< message/>", NWF);
    REFUSE(STREAM_HDR "<:message/>", NWF);
    REFUSE(STREAM_HDR "<a:b:c xmlns:a='u'/>", NWF);
    REFUSE(STREAM_HDR "<m><![CDAT[x]]></m>", NWF);

    /* entities and character references */
    REFUSE(STREAM_HDR "<m>&foo;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&amp</m>", NWF);
    REFUSE(STREAM_HDR "<m>a & b</m>", NWF);
    REFUSE(STREAM_HDR "<m>&;</m>", NWF);
    REFUSE(STREAM_HDR "<m a='&nbsp;'/>", NWF);
    REFUSE(STREAM_HDR "<m>&#0;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#x0;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#xD800;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#xDFFF;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#x110000;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#99999999999999999999999;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#1;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#x1F;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#xFFFE;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#x;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#X41;</m>", NWF);
    REFUSE(STREAM_HDR "<m>&#12a;</m>", NWF);
    REFUSE(STREAM_HDR "<m a='&#0;'/>", NWF);

    /* ]]> outside CDATA, in a stanza and between stanzas */
    REFUSE(STREAM_HDR "<m>a]]>b</m>", NWF);
    REFUSE(STREAM_HDR "<m>a]]]>b</m>", NWF);
    REFUSE(STREAM_HDR " ]]> ", NWF);

    /* forbidden characters and bad UTF-8 */
    REFUSE(STREAM_HDR "<m>a\0b</m>", NWF);
    REFUSE(STREAM_HDR "<m a='\0'/>", NWF);
    REFUSE("\0" STREAM_HDR, NWF);
    REFUSE(STREAM_HDR "<m>\x01</m>", NWF);
    REFUSE(STREAM_HDR "<m>\x08</m>", NWF);
    REFUSE(STREAM_HDR "<m>\x0b</m>", NWF);
    REFUSE(STREAM_HDR "<m>\x0c</m>", NWF);
    REFUSE(STREAM_HDR "<m>\x1f</m>", NWF);
    REFUSE(STREAM_HDR "<m a='\x1b'/>", NWF);
    REFUSE(STREAM_HDR " \x07 ", NWF);
    REFUSE(STREAM_HDR "<m>\xc0\xaf</m>", XML_ERR_ENCODING);             /* overlong '/' */
    REFUSE(STREAM_HDR "<m>\xc1\xbf</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xe0\x80\xaf</m>", XML_ERR_ENCODING);         /* overlong, 3 bytes */
    REFUSE(STREAM_HDR "<m>\xe0\x9f\xbf</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xf0\x80\x80\xaf</m>", XML_ERR_ENCODING);     /* overlong, 4 bytes */
    REFUSE(STREAM_HDR "<m>\xf0\x8f\xbf\xbf</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xed\xa0\x80</m>", XML_ERR_ENCODING);         /* surrogate U+D800 */
    REFUSE(STREAM_HDR "<m>\xed\xbf\xbf</m>", XML_ERR_ENCODING);         /* surrogate U+DFFF */
    REFUSE(STREAM_HDR "<m>\xf4\x90\x80\x80</m>", XML_ERR_ENCODING);     /* U+110000 */
    REFUSE(STREAM_HDR "<m>\xf5\x80\x80\x80</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xff</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xfe</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\x80</m>", XML_ERR_ENCODING);                 /* lone continuation */
    REFUSE(STREAM_HDR "<m>\xe2\x82</m>", XML_ERR_ENCODING);             /* truncated */
    REFUSE(STREAM_HDR "<m>\xf0\x9f\x98</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xc3</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xc3\xc3\xa9</m>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m>\xef\xbf\xbe</m>", NWF);         /* U+FFFE */
    REFUSE(STREAM_HDR "<m>\xef\xbf\xbf</m>", NWF);         /* U+FFFF */
    REFUSE(STREAM_HDR "<m a='\xed\xa0\x80'/>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR "<m\xc0\xaf/>", XML_ERR_ENCODING);
    REFUSE(STREAM_HDR " \xc3 ", XML_ERR_ENCODING);
    /* the valid neighbours of those are accepted */
    REFUSE(STREAM_HDR "<m>\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbd"
           "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f</m>", XML_OK);
}

/* ------------------------------------------------------------------ limits */

static int parse_status(const xml_limits *lim, const char *in, size_t len, size_t step) {
    rec r;
    rec_init(&r);
    int rc = parse_with(&r, lim, in, len, step);
    xml_buf_free(&r.log);
    return rc;
}

static void build_nested(xml_buf *b, unsigned depth) {
    xml_buf_puts(b, STREAM_HDR);
    for (unsigned i = 0; i < depth; i++) xml_buf_puts(b, "<a>");
    for (unsigned i = 0; i < depth; i++) xml_buf_puts(b, "</a>");
}

static void build_attrs(xml_buf *b, unsigned n, int with_xmlns) {
    xml_buf_puts(b, STREAM_HDR "<m");
    if (with_xmlns) xml_buf_puts(b, " xmlns='urn:x'");
    for (unsigned i = 0; i < n; i++) xml_buf_printf(b, " a%u='%u'", i, i);
    xml_buf_puts(b, "/>");
}

static void test_limits(void) {
    xml_limits lim, def;
    xml_limits_default(&def);
    CHECK_INT(262144, def.max_stanza);
    CHECK_INT(64, def.max_depth);
    CHECK_INT(64, def.max_attrs);
    CHECK_INT(256, def.max_name);
    xml_buf b;
    xml_buf_init(&b);

    /* stanza size: counted from its '<' to its final '>' */
    memset(&lim, 0, sizeof lim);
    lim.max_stanza = 100;
    for (size_t size = 99; size <= 101; size++) {
        xml_buf_reset(&b);
        xml_buf_puts(&b, STREAM_HDR "  <m>");
        for (size_t i = 0; i < size - 7; i++) xml_buf_puts(&b, "x");
        xml_buf_puts(&b, "</m>  <m/>");
        int want = size <= 100 ? XML_OK : XML_ERR_LIMIT;
        CHECK(parse_status(&lim, b.data, b.len, 0) == want, "stanza of %zu bytes with max 100: expected %s",
              size, xml_status_str(want));
        CHECK(parse_status(&lim, b.data, b.len, 1) == want, "stanza of %zu bytes byte-wise: expected %s",
              size, xml_status_str(want));
    }
    /* the stream header is limited too */
    lim.max_stanza = 80;
    CHECK_INT(XML_ERR_LIMIT, parse_status(&lim, STREAM_HDR, strlen(STREAM_HDR), 0));
    lim.max_stanza = strlen(STREAM_HDR);
    CHECK_INT(XML_OK, parse_status(&lim, STREAM_HDR, strlen(STREAM_HDR), 0));
    /* default: a 262145-byte stanza is refused */
    xml_buf_reset(&b);
    xml_buf_puts(&b, STREAM_HDR "<m>");
    for (size_t i = 0; i < 262144 - 7; i++) xml_buf_append(&b, "y", 1);
    xml_buf_puts(&b, "</m>");
    CHECK_INT(XML_OK, parse_status(NULL, b.data, b.len, 0));
    xml_buf_reset(&b);
    xml_buf_puts(&b, STREAM_HDR "<m>");
    for (size_t i = 0; i < 262144 - 6; i++) xml_buf_append(&b, "y", 1);
    xml_buf_puts(&b, "</m>");
    CHECK_INT(XML_ERR_LIMIT, parse_status(NULL, b.data, b.len, 0));

    /* depth: 64 nested elements are fine, 65 are not, 100000 do not crash */
    xml_buf_reset(&b);
    build_nested(&b, 64);
    CHECK_INT(XML_OK, parse_status(NULL, b.data, b.len, 0));
    xml_buf_reset(&b);
    build_nested(&b, 65);
    CHECK_INT(XML_ERR_LIMIT, parse_status(NULL, b.data, b.len, 0));
    xml_buf_reset(&b);
    build_nested(&b, 100000);
    memset(&lim, 0, sizeof lim);
    lim.max_stanza = 10u << 20;
    CHECK_INT(XML_ERR_LIMIT, parse_status(&lim, b.data, b.len, 0));
    CHECK_INT(XML_ERR_LIMIT, parse_status(&lim, b.data, b.len, 1));
    lim.max_depth = 3;
    xml_buf_reset(&b);
    build_nested(&b, 3);
    CHECK_INT(XML_OK, parse_status(&lim, b.data, b.len, 0));
    xml_buf_reset(&b);
    build_nested(&b, 4);
    CHECK_INT(XML_ERR_LIMIT, parse_status(&lim, b.data, b.len, 0));

    /* attributes, namespace declarations included */
    xml_buf_reset(&b);
    build_attrs(&b, 64, 0);
    CHECK_INT(XML_OK, parse_status(NULL, b.data, b.len, 0));
    xml_buf_reset(&b);
    build_attrs(&b, 65, 0);
    CHECK_INT(XML_ERR_LIMIT, parse_status(NULL, b.data, b.len, 0));
    xml_buf_reset(&b);
    build_attrs(&b, 63, 1);
    CHECK_INT(XML_OK, parse_status(NULL, b.data, b.len, 0));
    xml_buf_reset(&b);
    build_attrs(&b, 64, 1);
    CHECK_INT(XML_ERR_LIMIT, parse_status(NULL, b.data, b.len, 1));

    /* name length: element, attribute, end tag */
    char name[300];
    memset(name, 'n', sizeof name);
    for (int len = 256; len <= 257; len++) {
        int want = len <= 256 ? XML_OK : XML_ERR_LIMIT;
        xml_buf_reset(&b);
        xml_buf_printf(&b, STREAM_HDR "<%.*s/>", len, name);
        CHECK(parse_status(NULL, b.data, b.len, 0) == want, "element name of %d bytes", len);
        xml_buf_reset(&b);
        xml_buf_printf(&b, STREAM_HDR "<m %.*s='v'/>", len, name);
        CHECK(parse_status(NULL, b.data, b.len, 1) == want, "attribute name of %d bytes", len);
        xml_buf_reset(&b);
        xml_buf_printf(&b, STREAM_HDR "<m></%.*s>", len, name);
        CHECK(parse_status(NULL, b.data, b.len, 0) == (want ? want : NWF), "end tag name of %d bytes", len);
    }
    memset(&lim, 0, sizeof lim);
    lim.max_name = 13;    /* the qualified name counts, prefix included; "stream:stream" is 13 */
    const char *n13 = STREAM_HDR "<abc:defghijkl xmlns:abc='u'/>", *n14 = STREAM_HDR "<abc:defghijklm xmlns:abc='u'/>";
    const char *decl14 = STREAM_HDR "<a xmlns:abcdefgh='u'/>";
    CHECK_INT(XML_OK, parse_status(&lim, n13, strlen(n13), 0));
    CHECK_INT(XML_ERR_LIMIT, parse_status(&lim, n14, strlen(n14), 0));
    CHECK_INT(XML_ERR_LIMIT, parse_status(&lim, decl14, strlen(decl14), 0));

    /* a 10 MB attribute value is refused without being held */
    rec r;
    rec_init(&r);
    xml_parser *p = xml_parser_new(NULL, &events, &r);
    CHECK_INT(XML_OK, xml_parser_feed(p, STREAM_HDR "<message to='", strlen(STREAM_HDR) + 13, NULL));
    char *chunk = malloc(65536);
    memset(chunk, 'a', 65536);
    size_t fed = 0, peak = 0;
    int rc = XML_OK;
    while (rc == XML_OK && fed < (10u << 20)) {
        rc = xml_parser_feed(p, chunk, 65536, NULL);
        fed += 65536;
        if (xml_parser_memory(p) > peak) peak = xml_parser_memory(p);
    }
    CHECK_INT(XML_ERR_LIMIT, rc);
    CHECK(fed <= 262144 + 65536, "limit reached only after %zu bytes", fed);
    CHECK(peak < 1u << 20, "held %zu bytes for a refused attribute", peak);
    /* 10 MB of text in a stanza: same */
    xml_parser_reset(p);
    CHECK_INT(XML_OK, xml_parser_feed(p, STREAM_HDR "<message><body>", strlen(STREAM_HDR) + 15, NULL));
    rc = XML_OK;
    fed = peak = 0;
    while (rc == XML_OK && fed < (10u << 20)) {
        rc = xml_parser_feed(p, chunk, 65536, NULL);
        fed += 65536;
        if (xml_parser_memory(p) > peak) peak = xml_parser_memory(p);
    }
    CHECK_INT(XML_ERR_LIMIT, rc);
    CHECK(peak < 1u << 20, "held %zu bytes for refused text", peak);
    free(chunk);
    xml_parser_free(p);
    xml_buf_free(&r.log);
    xml_buf_free(&b);
}

/* An element in the XML namespace (xml: prefix) is serialized with that prefix, never as a default
 * namespace declaration of the XML namespace, which XML forbids: what we route must re-parse (fuzzer find). */
static void test_xml_prefixed_element(void) {
    static const char in[] = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                             "<message><xml:x a='1'/></message>";
    rec r;
    rec_init(&r);
    CHECK_INT(XML_OK, parse_with(&r, NULL, in, sizeof in - 1, 0));
    const char *log = rec_log(&r);
    const char *want = "<message><xml:x a='1'/></message>\n";
    const char *got = strchr(log, '\n') ? strchr(log, '\n') + 1 : log;
    CHECK_STR(want, got);
    /* and what we wrote parses again to the same thing */
    char again[512];
    snprintf(again, sizeof again, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>%.*s",
             (int)strlen(want) - 1, want);
    rec r2;
    rec_init(&r2);
    CHECK_INT(XML_OK, parse_with(&r2, NULL, again, strlen(again), 0));
    const char *log2 = rec_log(&r2);
    CHECK_STR(want, strchr(log2, '\n') ? strchr(log2, '\n') + 1 : log2);
    xml_buf_free(&r.log);
    xml_buf_free(&r2.log);
}

/* ------------------------------------------------------------------ bulk runs */

/* status and consumed of one whole feed with the given limits */
static int feed_once(const xml_limits *lim, const char *in, size_t *used) {
    rec r;
    rec_init(&r);
    xml_parser *p = xml_parser_new(lim, &events, &r);
    int rc = xml_parser_feed(p, in, strlen(in), used);
    xml_parser_free(p);
    xml_buf_free(&r.log);
    return rc;
}

/* Names, text and values are taken in runs; a limit must still stop the parser at the byte that passes it,
 * and a run must give way to the byte-by-byte path for anything that needs it. */
static void test_bulk_runs(void) {
    xml_limits lim;
    size_t used = 0, hdr = strlen(STREAM_HDR);
    memset(&lim, 0, sizeof lim);
    lim.max_name = 13;
    CHECK_INT(XML_ERR_LIMIT, feed_once(&lim, STREAM_HDR "<abcdefghijklmn/>", &used));
    CHECK_INT(hdr + 14, used);                              /* the 14th name byte */
    CHECK_INT(XML_ERR_LIMIT, feed_once(&lim, STREAM_HDR "<m abcdefghijklmn='1'/>", &used));
    CHECK_INT(hdr + 16, used);
    CHECK_INT(XML_ERR_LIMIT, feed_once(&lim, STREAM_HDR "<m></abcdefghijklmn>", &used));
    CHECK_INT(hdr + 18, used);
    memset(&lim, 0, sizeof lim);
    lim.max_stanza = 100;    /* the header (85 bytes) counts too */
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_puts(&b, STREAM_HDR "<");
    for (int i = 0; i < 120; i++) xml_buf_puts(&b, "n");
    xml_buf_puts(&b, "/>");
    CHECK_INT(XML_ERR_LIMIT, feed_once(&lim, b.data, &used));
    CHECK_INT(hdr + 100, used);                             /* the stanza's 101st byte, inside the name */

    /* UTF-8 split across feeds right after a run, in a name, a value and text */
    const char *mixed = STREAM_HDR "<m\xC3\xA9t a\xC3\xA9='x\xE2\x82\xACy'>ab\xF0\x9F\x98\x80" "cd</m\xC3\xA9t>";
    for (size_t step = 0; step <= 5; step++) {
        rec r;
        rec_init(&r);
        CHECK_INT(XML_OK, parse_with(&r, NULL, mixed, strlen(mixed), step));
        CHECK_STR("open {http://etherx.jabber.org/streams}stream\n"
                  "<m\xC3\xA9t a\xC3\xA9='x\xE2\x82\xACy'>ab\xF0\x9F\x98\x80" "cd</m\xC3\xA9t>\n", rec_log(&r));
        xml_buf_free(&r.log);
    }
    /* what a run must not swallow: CR LF and tab normalization, "]]>", the other quote, bad bytes */
    rec r;
    rec_init(&r);
    const char *norm = STREAM_HDR "<m a='x\r\ny\tz\"w'>p\r\nq]]r</m>";
    CHECK_INT(XML_OK, parse_with(&r, NULL, norm, strlen(norm), 0));
    CHECK_STR("open {http://etherx.jabber.org/streams}stream\n<m a='x y z&quot;w'>p\nq]]r</m>\n", rec_log(&r));
    xml_buf_free(&r.log);
    CHECK_INT(XML_ERR_NOT_WELL_FORMED, feed_once(NULL, STREAM_HDR "<m>ab]]>c</m>", &used));
    CHECK_INT(XML_ERR_NOT_WELL_FORMED, feed_once(NULL, STREAM_HDR "<m a='bc\x01'/>", &used));
    CHECK_INT(hdr + 8, used);
    CHECK_INT(XML_ERR_ENCODING, feed_once(NULL, STREAM_HDR "<m>abc\xC3(</m>", &used));
    CHECK_INT(hdr + 7, used);                               /* the byte that breaks the sequence */

    /* the serializer's escaping, run by run */
    xml_arena *a = xml_arena_new();
    xml_node *n = xml_node_new(a, "m", XML_NS_CLIENT);
    xml_set_attr(a, n, "v", "a&b<c>d'e\"f\rg\nh\ti");
    xml_add_text(a, n, "a&b<c>d'e\"f\rg\nh\ti", 17);
    xml_buf_reset(&b);
    xml_serialize(&b, n, XML_NS_CLIENT);
    CHECK_STR("<m v='a&amp;b&lt;c&gt;d&apos;e&quot;f&#13;g&#10;h&#9;i'>"
              "a&amp;b&lt;c&gt;d&apos;e&quot;f&#13;g\nh\ti</m>", b.data);
    xml_buf_free(&b);
    xml_arena_free(a);

    /* stanza after stanza of the same size, reset in between: the chunk reset keeps serves them all */
    a = xml_arena_new();
    size_t kept = 0;
    for (int i = 0; i < 10; i++) {
        CHECK(xml_arena_alloc(a, 400) != NULL && xml_arena_alloc(a, 1200) != NULL, "arena allocation failed");
        if (i > 0) CHECK(xml_arena_used(a) == kept, "round %d allocated again: %zu bytes, %zu kept", i,
                         xml_arena_used(a), kept);
        xml_arena_reset(a);
        kept = xml_arena_used(a);
    }
    CHECK(kept <= 4096, "reset keeps at most one chunk, holds %zu", kept);
    xml_arena_free(a);
}

int main(void) {
    test_arena();
    test_tree_builders();
    test_buf();
    test_serializer();
    test_client_stream();
    test_stop_and_restart();
    test_reset_in_callback();
    test_restart_whitespace();
    test_fragments();
    test_idle_memory();
    test_reset_after_error();
    test_misc_stream_forms();
    test_refusals();
    test_limits();
    test_xml_prefixed_element();
    test_bulk_runs();
    printf("status strings: %s / %s\n", xml_status_str(XML_ERR_LIMIT), xml_status_str(99));
    return check_summary("xml");
}
