/* test_stanza.c - tests for stanza.c: error and result replies (their exact bytes), which stanzas may be
 * answered, IQ payloads, the lookup in IQ handler tables, disco#info from a table, and the string hash. */
#include "stanza.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

#define STREAM_HDR "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

static xml_arena *A;            /* every tree of the tests: parsed stanzas and the replies built to them */
static xml_node *parsed;

static int on_stanza(void *ud, xml_node *n) {
    parsed = xml_copy(A, n);
    return 0;
}

/* the one stanza in xml, parsed as a client stream carries it; exits when the test itself is wrong */
static xml_node *stanza(const char *xml) {
    xml_events ev = {NULL, on_stanza, NULL};
    xml_parser *p = xml_parser_new(NULL, &ev, NULL);
    parsed = NULL;
    if (!p || xml_parser_feed(p, STREAM_HDR, strlen(STREAM_HDR), NULL) != XML_OK ||
        xml_parser_feed(p, xml, strlen(xml), NULL) != XML_OK || !parsed) {
        fprintf(stderr, "test_stanza: cannot parse %s\n", xml);
        exit(2);
    }
    xml_parser_free(p);
    return parsed;
}

static xml_buf out;              /* text()'s answer, valid until its next call */

/* n as a client stream would carry it; "(null)" for no node */
static const char *text(const xml_node *n) {
    xml_buf *b = &out;
    if (!n) return "(null)";
    xml_buf_reset(b);
    xml_serialize(b, n, XML_NS_CLIENT);
    return b->oom ? "(out of memory)" : b->data;
}

#define ERR(cond) "<error type='cancel'><" cond " xmlns='" NS_STANZAS "'/></error>"

static void test_error_replies(void) {
    xml_node *st = stanza("<iq id='q1' type='get' from='romeo@localhost/r' to='juliet@localhost'>"
                          "<query xmlns='jabber:iq:version'/></iq>");
    CHECK_STR("<iq id='q1' type='error' from='juliet@localhost' to='romeo@localhost/r'>" ERR("service-unavailable")
              "</iq>",
              text(stanza_error_new(A, st, "cancel", "service-unavailable", NULL, NULL)));

    st = stanza("<message from='romeo@localhost/r'><body>hi</body></message>");
    CHECK_STR("<message type='error' to='romeo@localhost/r'>" ERR("item-not-found") "</message>",
              text(stanza_error_new(A, st, "cancel", "item-not-found", NULL, NULL)));

    st = stanza("<presence to='room@conference.localhost/nick'/>");
    CHECK_STR("<presence type='error' from='room@conference.localhost/nick'>" ERR("not-allowed") "</presence>",
              text(stanza_error_new(A, st, "cancel", "not-allowed", NULL, NULL)));

    st = stanza("<message id='m1' type='chat'/>");
    CHECK_STR("<message id='m1' type='error'>" ERR("not-acceptable") "</message>",
              text(stanza_error_new(A, st, "cancel", "not-acceptable", NULL, NULL)));

    st = stanza("<iq id='q2' type='set' from='a@localhost/x' to='room@conference.localhost'><query/></iq>");
    CHECK_STR("<iq id='q2' type='error' from='room@conference.localhost' to='a@localhost/x'>"
              "<error type='modify' by='room@conference.localhost'><bad-request xmlns='" NS_STANZAS "'/>"
              "<text xmlns='" NS_STANZAS "'>no &lt;item/&gt; &amp; no form</text></error></iq>",
              text(stanza_error_new(A, st, "modify", "bad-request", "no <item/> & no form",
                                    "room@conference.localhost")));

    /* the payload is not echoed: the reply says why, not what was asked */
    st = stanza("<message from='a@localhost/x' to='b@localhost' type='chat'><body>secret</body></message>");
    const char *got = text(stanza_error_new(A, st, "wait", "resource-constraint", NULL, NULL));
    CHECK(!strstr(got, "secret"), "error reply to a message: expected no copy of its body, got %s", got);
}

static void test_never_answered(void) {
    static const struct {
        const char *xml;
        int may;
    } cases[] = {
        {"<message type='error' from='a@localhost/x'/>", 0},
        {"<presence type='error' from='a@localhost/x'/>", 0},
        {"<iq type='error' id='1' from='a@localhost/x'/>", 0},
        {"<iq type='result' id='1' from='a@localhost/x'/>", 0},
        {"<iq type='get' id='1' from='a@localhost/x'><ping xmlns='urn:xmpp:ping'/></iq>", 1},
        {"<iq type='set' id='1' from='a@localhost/x'><query/></iq>", 1},
        /* a broken IQ is answered: bad-request (RFC 6120 §8.2.3) */
        {"<iq type='bogus' id='1' from='a@localhost/x'/>", 1},
        {"<iq id='1' from='a@localhost/x'/>", 1},
        /* 'result' is an IQ type only: a message of that type is answered like any other */
        {"<message type='result' from='a@localhost/x'/>", 1},
        {"<message from='a@localhost/x'/>", 1},
        {"<presence type='unavailable' from='a@localhost/x'/>", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xml_node *st = stanza(cases[i].xml);
        int may = stanza_may_bounce(st);
        CHECK(may == cases[i].may, "stanza_may_bounce(%s): expected %d, got %d", cases[i].xml, cases[i].may, may);
        xml_node *r = stanza_error_new(A, st, "cancel", "service-unavailable", NULL, NULL);
        CHECK((r != NULL) == cases[i].may, "stanza_error_new(%s): expected %s, got %s", cases[i].xml,
              cases[i].may ? "a reply" : "NULL", text(r));
    }
}

static void test_results(void) {
    xml_node *iq = stanza("<iq id='p1' type='get' from='romeo@localhost/r' to='localhost'>"
                          "<ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK_STR("<iq id='p1' type='result' from='localhost' to='romeo@localhost/r'/>", text(iq_result_new(A, iq)));
    iq = stanza("<iq id='p2' type='get' from='romeo@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK_STR("<iq id='p2' type='result' to='romeo@localhost/r'/>", text(iq_result_new(A, iq)));
    iq = stanza("<iq type='set'><session xmlns='" NS_SESSION "'/></iq>");
    CHECK_STR("<iq type='result'/>", text(iq_result_new(A, iq)));
}

static void test_stanza_basics(void) {
    CHECK(stanza_is(stanza("<message/>")), "<message/> in jabber:client: expected a stanza, got none");
    CHECK(stanza_is(stanza("<presence/>")), "<presence/> in jabber:client: expected a stanza, got none");
    CHECK(stanza_is(stanza("<iq/>")), "<iq/> in jabber:client: expected a stanza, got none");
    CHECK(!stanza_is(stanza("<starttls xmlns='" NS_TLS "'/>")), "<starttls/>: expected no stanza, got one");
    CHECK(!stanza_is(stanza("<message xmlns='jabber:server'/>")),
          "<message/> in jabber:server on a client stream: expected no stanza, got one");
    CHECK_STR("chat", stanza_type(stanza("<message type='chat'/>")));
    CHECK_STR("", stanza_type(stanza("<message/>")));
}

static void test_payloads(void) {
    static const struct {
        const char *xml, *want;     /* want: the payload's name, NULL for none */
    } cases[] = {
        {"<iq type='get' id='1'/>", NULL},
        {"<iq type='get' id='1'>only text</iq>", NULL},
        {"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", "ping"},
        {"<iq type='get' id='1'> <ping xmlns='urn:xmpp:ping'/> </iq>", "ping"},
        {"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/></iq>", NULL},
        {"<iq type='get' id='1'><a/>text<b/></iq>", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const xml_node *q = iq_payload(stanza(cases[i].xml));
        const char *got = q ? q->name : NULL;
        CHECK(cases[i].want ? got && !strcmp(got, cases[i].want) : !got, "iq_payload(%s): expected %s, got %s",
              cases[i].xml, cases[i].want ? cases[i].want : "NULL", got ? got : "NULL");
    }
}

/* a layer's row: the key first, then what that layer needs */
typedef struct test_row {
    iq_key key;
    int handler;
    const char *extra;
} test_row;

static const test_row rows[] = {
    {{NS_DISCO_INFO, "query", IQ_GET, NS_DISCO_INFO}, 1, "info"},
    {{NS_ROSTER, "query", IQ_GET | IQ_SET, NS_ROSTER}, 2, "roster"},
    {{NS_SESSION, "session", IQ_SET, NULL}, 3, "session"},
    {{NS_PING, "ping", IQ_GET, NS_PING}, 4, "ping"},
    {{NS_MUC_ADMIN, "query", IQ_GET, NS_MUC_ADMIN}, 5, "admin get"},
    {{NS_MUC_ADMIN, "query", IQ_SET, NS_MUC_ADMIN}, 6, "admin set"},
    {{NS_REGISTER, "query", IQ_GET | IQ_SET, NULL}, 7, "register"},
    {{NS_DISCO_INFO, "query", IQ_SET, NS_DISCO_INFO}, 8, "info set"},
    {{NULL, NULL, 0, NULL}, 0, NULL},
};

static void test_table_find(void) {
    static const struct {
        const char *xml;
        int want;   /* the row's handler, 0 for none */
    } cases[] = {
        {"<iq type='get' id='1'><query xmlns='" NS_DISCO_INFO "'/></iq>", 1},
        {"<iq type='set' id='1'><query xmlns='" NS_DISCO_INFO "'/></iq>", 8},
        {"<iq type='get' id='1'><query xmlns='" NS_ROSTER "'/></iq>", 2},
        {"<iq type='set' id='1'><query xmlns='" NS_ROSTER "'/></iq>", 2},
        {"<iq type='set' id='1'><session xmlns='" NS_SESSION "'/></iq>", 3},
        {"<iq type='get' id='1'><session xmlns='" NS_SESSION "'/></iq>", 0},
        {"<iq type='get' id='1'><ping xmlns='" NS_PING "'/></iq>", 4},
        {"<iq type='set' id='1'><ping xmlns='" NS_PING "'/></iq>", 0},
        {"<iq type='get' id='1'><query xmlns='" NS_MUC_ADMIN "'/></iq>", 5},
        {"<iq type='set' id='1'><query xmlns='" NS_MUC_ADMIN "'/></iq>", 6},
        {"<iq type='set' id='1'><query xmlns='" NS_REGISTER "'/></iq>", 7},
        /* the name matters as much as the namespace */
        {"<iq type='get' id='1'><query xmlns='" NS_PING "'/></iq>", 0},
        {"<iq type='get' id='1'><ping xmlns='" NS_DISCO_INFO "'/></iq>", 0},
        {"<iq type='get' id='1'><query xmlns='jabber:iq:version'/></iq>", 0},
        {"<iq type='get' id='1'><query/></iq>", 0},
        /* only requests are looked up */
        {"<iq type='result' id='1'><query xmlns='" NS_DISCO_INFO "'/></iq>", 0},
        {"<iq type='error' id='1'><query xmlns='" NS_DISCO_INFO "'/></iq>", 0},
        {"<iq id='1'><query xmlns='" NS_DISCO_INFO "'/></iq>", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xml_node *iq = stanza(cases[i].xml);
        const test_row *r = iq_table_find(rows, sizeof *rows, iq, xml_child(iq, NULL, NULL));
        int got = r ? r->handler : 0;
        CHECK(got == cases[i].want, "iq_table_find(%s): expected row %d (0: none), got %d", cases[i].xml,
              cases[i].want, got);
    }
    xml_node *iq = stanza("<iq type='get' id='1'/>");
    CHECK(!iq_table_find(rows, sizeof *rows, iq, NULL), "iq_table_find without a payload: expected NULL, got a row");
    static const iq_key empty[] = {{NULL, NULL, 0, NULL}};
    iq = stanza("<iq type='get' id='1'><query xmlns='" NS_DISCO_INFO "'/></iq>");
    CHECK(!iq_table_find(empty, sizeof *empty, iq, iq->children), "an empty table: expected no row, got one");
}

static void test_table_features(void) {
    xml_node *q = xml_node_new(A, "query", NS_DISCO_INFO);
    CHECK_INT(0, disco_add_identity(A, q, "server", "im", "Couplet"));
    CHECK_INT(0, disco_add_table_features(A, q, rows, sizeof *rows));
    CHECK_INT(0, disco_add_feature(A, q, NS_MUC));
    /* each feature once, in the order of its first row; rows without one add nothing */
    CHECK_STR("<query xmlns='" NS_DISCO_INFO "'><identity category='server' type='im' name='Couplet'/>"
              "<feature var='" NS_DISCO_INFO "'/><feature var='" NS_ROSTER "'/><feature var='" NS_PING "'/>"
              "<feature var='" NS_MUC_ADMIN "'/><feature var='" NS_MUC "'/></query>",
              text(q));

    q = xml_node_new(A, "query", NS_DISCO_INFO);
    CHECK_INT(0, disco_add_identity(A, q, "account", "registered", NULL));
    CHECK_STR("<query xmlns='" NS_DISCO_INFO "'><identity category='account' type='registered'/></query>", text(q));

    static const iq_key unadvertised[] = {
        {NS_SESSION, "session", IQ_SET, NULL}, {NS_PING, "ping", IQ_GET, NULL}, {NULL, NULL, 0, NULL}};
    q = xml_node_new(A, "query", NS_DISCO_INFO);
    CHECK_INT(0, disco_add_table_features(A, q, unadvertised, sizeof *unadvertised));
    CHECK_STR("<query xmlns='" NS_DISCO_INFO "'/>", text(q));

    /* a query that could not be built is reported, not written to */
    CHECK_INT(-1, disco_add_feature(A, NULL, NS_PING));
    CHECK_INT(-1, disco_add_identity(A, NULL, "server", "im", NULL));
    CHECK_INT(-1, disco_add_table_features(A, NULL, rows, sizeof *rows));
}

static void test_hash(void) {
    static const struct {
        const char *s;
        uint64_t want;  /* FNV-1a 64 */
    } cases[] = {
        {"", 14695981039346656037ULL},
        {"a", 0xaf63dc4c8601ec8cULL},
        {"foobar", 0x85944171f73967e8ULL},
        {"romeo", 0x6031394628704041ULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = str_hash(cases[i].s);
        CHECK(got == cases[i].want, "str_hash(\"%s\"): expected %llu, got %llu", cases[i].s,
              (unsigned long long)cases[i].want, (unsigned long long)got);
    }
    /* bytes over 0x7f are hashed as unsigned: a signed char would give another value */
    uint64_t got = str_hash("\xc3\xa9"), want = 14695981039346656037ULL;
    want = (want ^ 0xc3) * 1099511628211ULL;
    want = (want ^ 0xa9) * 1099511628211ULL;
    CHECK(got == want, "str_hash(\"\\xc3\\xa9\"): expected %llu, got %llu", (unsigned long long)want,
          (unsigned long long)got);
}

int main(void) {
    A = xml_arena_new();
    if (!A) {
        fprintf(stderr, "test_stanza: out of memory\n");
        return 2;
    }
    test_error_replies();
    test_never_answered();
    test_results();
    test_stanza_basics();
    test_payloads();
    test_table_find();
    test_table_features();
    test_hash();
    xml_buf_free(&out);
    xml_arena_free(A);
    return check_summary("stanza");
}
