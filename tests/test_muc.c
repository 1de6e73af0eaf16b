/* test_muc.c - the multi-user chat service driven through a fake host that records every delivery. */
#include "muc.h"
#include "xml.h"
#include "store.h"
#include "check.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define R "room@conference.localhost"
#define ROMEO "romeo@localhost/r1"
#define JULIET "juliet@localhost/j1"
#define NURSE "nurse@localhost/n1"
#define ADMIN "admin@localhost/a1"
#define MUCU "http://jabber.org/protocol/muc#user"
#define XUSER "<x xmlns='" MUCU "'>"
#define XMUC "<x xmlns='http://jabber.org/protocol/muc'/>"
#define STZ "urn:ietf:params:xml:ns:xmpp-stanzas"

/* ---- the fake host: deliveries are recorded as "TO|XML" ---- */
#define MAX_RECS 512
static char *recs[MAX_RECS];
static int nrecs, rpos;
static const char *dead_jid;     /* deliveries to it fail */
static int verbose;
static int keep_oid;             /* 0: occupant-ids (random per room) are cut from what is recorded */

/* removes every <occupant-id .../> from a recorded delivery: the tests that are not about XEP-0421 compare
 * whole stanzas, and the ids come from a random room secret */
static void cut_occupant_ids(char *s)
{
    static const char tag[] = "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='";
    char *p;
    while ((p = strstr(s, tag))) {
        char *end = strstr(p, "'/>");
        if (!end) return;
        memmove(p, end + 3, strlen(end + 3) + 1);
    }
}

static int fake_deliver(void *ud, const char *to, const char *head, size_t hl, const char *tail, size_t tl)
{
    (void)ud;
    if (dead_jid && !strcmp(to, dead_jid)) return -1;
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_puts(&b, to);
    xml_buf_puts(&b, "|");
    xml_buf_append(&b, head, hl);
    xml_buf_puts(&b, " to='");
    xml_buf_escape(&b, to, strlen(to));
    xml_buf_puts(&b, "'");
    xml_buf_append(&b, tail, tl);
    if (!keep_oid && b.data) cut_occupant_ids(b.data);
    if (verbose) fprintf(stderr, "  >> %s\n", b.data);
    if (nrecs < MAX_RECS) recs[nrecs++] = b.data;
    else xml_buf_free(&b);
    return 0;
}

static int fake_is_admin(void *ud, const char *bare)
{
    (void)ud;
    return !strcmp(bare, "admin@localhost");
}

static void clear_recs(void)
{
    for (int i = 0; i < nrecs; i++) free(recs[i]);
    nrecs = rpos = 0;
}

/* ---- feeding stanzas through the real parser ---- */
static muc_service *cur;
static const char *cur_from;
static xml_arena *in_arena;

static int on_stanza(void *ud, xml_node *st)
{
    (void)ud;
    xml_node *c = xml_copy(in_arena, st);
    if (c) {
        xml_set_attr(in_arena, c, "from", cur_from);
        muc_handle_stanza(cur, c);
    }
    xml_arena_reset(in_arena);
    return 0;
}

static void feed(muc_service *m, const char *from, const char *stanza)
{
    static const char head[] = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    xml_events ev = { NULL, on_stanza, NULL };
    xml_parser *p = xml_parser_new(NULL, &ev, NULL);
    cur = m;
    cur_from = from;
    clear_recs();
    if (verbose) fprintf(stderr, "<< %s: %s\n", from, stanza);
    int rc = xml_parser_feed(p, head, strlen(head), NULL);
    if (rc == XML_OK) rc = xml_parser_feed(p, stanza, strlen(stanza), NULL);
    CHECK(rc == XML_OK, "parse %s: %s", stanza, xml_status_str(rc));
    xml_parser_free(p);
}

/* the next delivery must be exactly this */
#define EXPECT(to, xml) expect_(__LINE__, to, xml)
static void expect_(int line, const char *to, const char *xml)
{
    char want[8192];
    snprintf(want, sizeof want, "%s|%s", to, xml);
    if (rpos >= nrecs) {
        check_failed++;
        fprintf(stderr, "FAIL line %d: expected %s\n  got nothing\n", line, want);
        return;
    }
    if (strcmp(want, recs[rpos])) {
        check_failed++;
        fprintf(stderr, "FAIL line %d:\n  expected %s\n  got      %s\n", line, want, recs[rpos]);
    } else check_passed++;
    rpos++;
}

/* the next delivery goes to `to` and contains every fragment given */
#define EXPECT_HAS(to, ...) expect_has_(__LINE__, to, (const char *[]){ __VA_ARGS__, NULL })
static void expect_has_(int line, const char *to, const char **frags)
{
    if (rpos >= nrecs) {
        check_failed++;
        fprintf(stderr, "FAIL line %d: expected a delivery to %s, got nothing\n", line, to);
        return;
    }
    const char *got = recs[rpos++];
    size_t tl = strlen(to);
    int ok = !strncmp(got, to, tl) && got[tl] == '|';
    for (int i = 0; ok && frags[i]; i++) if (!strstr(got, frags[i])) ok = 0;
    if (ok) { check_passed++; return; }
    check_failed++;
    fprintf(stderr, "FAIL line %d: delivery to %s with", line, to);
    for (int i = 0; frags[i]; i++) fprintf(stderr, " [%s]", frags[i]);
    fprintf(stderr, "\n  got %s\n", got);
}

#define EXPECT_END() expect_end_(__LINE__)
static void expect_end_(int line)
{
    if (rpos == nrecs) { check_passed++; return; }
    check_failed++;
    fprintf(stderr, "FAIL line %d: %d unexpected deliveries, first: %s\n", line, nrecs - rpos, recs[rpos]);
    rpos = nrecs;
}

/* ---- service set-up ---- */
static char data_dir[64];

static muc_config test_config(int create_rooms)
{
    muc_config cfg = {
        .domain = "conference.localhost", .server_domain = "localhost", .data_dir = data_dir,
        .create_rooms = create_rooms, .max_rooms = 5, .max_occupants = 4, .max_history = 20,
        .max_rooms_per_user = 3,
        .default_history = 10, .default_persistent = 0, .default_public = 1,
    };
    return cfg;
}

static muc_service *service_from(const muc_config *cfg)
{
    static muc_host host = { .ud = NULL, .deliver = fake_deliver, .is_admin = fake_is_admin };
    char err[512] = "";
    muc_service *m = muc_service_new(cfg, &host, err, sizeof err);
    CHECK(m != NULL, "muc_service_new: %s", err);
    return m;
}

static muc_service *service(int create_rooms)
{
    muc_config cfg = test_config(create_rooms);
    return service_from(&cfg);
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            rm_rf(p);
        }
        closedir(d);
        rmdir(path);
    } else unlink(path);
}

#define JOIN(who, nick) "<presence to='" R "/" nick "'>" XMUC "</presence>"

/* the founding flow: romeo creates the room, juliet joins */
static __attribute__((unused)) void create_room_with_juliet(muc_service *m)
{
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
}

/* ================================================================ tests */

static void test_create_and_join(void)
{
    muc_service *m = service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    EXPECT(ROMEO, "<presence from='" R "/Romeo' to='" ROMEO "'>" XUSER "<status code='201'/>"
                  "<item jid='" ROMEO "' affiliation='owner' role='moderator'/><status code='110'/></x></presence>");
    EXPECT(ROMEO, "<message type='groupchat' from='" R "' to='" ROMEO "'><subject/></message>");
    EXPECT_END();
    CHECK_INT(1, muc_room_count(m));

    feed(m, JULIET, "<presence to='" R "/Juliet'><show>away</show>" XMUC "</presence>");
    EXPECT(JULIET, "<presence from='" R "/Romeo' to='" JULIET "'>" XUSER
                   "<item affiliation='owner' role='moderator'/></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Juliet' to='" JULIET "'><show>away</show>" XUSER
                   "<item jid='" JULIET "' affiliation='none' role='participant'/><status code='110'/></x></presence>");
    EXPECT(JULIET, "<message type='groupchat' from='" R "' to='" JULIET "'><subject/></message>");
    EXPECT(ROMEO, "<presence from='" R "/Juliet' to='" ROMEO "'><show>away</show>" XUSER
                  "<item jid='" JULIET "' affiliation='none' role='participant'/></x></presence>");
    EXPECT_END();

    /* groupchat echo with the id kept, then history with delay for a later joiner */
    feed(m, JULIET, "<message to='" R "' type='groupchat' id='m1'><body>hi &amp; all</body></message>");
    EXPECT(ROMEO, "<message type='groupchat' id='m1' from='" R "/Juliet' to='" ROMEO "'><body>hi &amp; all</body></message>");
    EXPECT(JULIET, "<message type='groupchat' id='m1' from='" R "/Juliet' to='" JULIET "'><body>hi &amp; all</body></message>");
    EXPECT_END();

    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    EXPECT(NURSE, "<presence from='" R "/Romeo' to='" NURSE "'>" XUSER "<item affiliation='owner' role='moderator'/></x></presence>");
    EXPECT(NURSE, "<presence from='" R "/Juliet' to='" NURSE "'><show>away</show>" XUSER "<item affiliation='none' role='participant'/></x></presence>");
    EXPECT(NURSE, "<presence from='" R "/Nurse' to='" NURSE "'>" XUSER
                  "<item jid='" NURSE "' affiliation='none' role='participant'/><status code='110'/></x></presence>");
    EXPECT_HAS(NURSE, "<message type='groupchat' id='m1' from='" R "/Juliet' to='" NURSE "'><body>hi &amp; all</body>"
                      "<delay xmlns='urn:xmpp:delay' from='" R "' stamp='");
    EXPECT(NURSE, "<message type='groupchat' from='" R "' to='" NURSE "'><subject/></message>");
    EXPECT(ROMEO, "<presence from='" R "/Nurse' to='" ROMEO "'>" XUSER "<item jid='" NURSE "' affiliation='none' role='participant'/></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Nurse' to='" JULIET "'>" XUSER "<item affiliation='none' role='participant'/></x></presence>");
    EXPECT_END();

    /* leave with a status text: everyone hears it, the leaver with 110 */
    feed(m, NURSE, "<presence type='unavailable' to='" R "/Nurse'><status>bye</status></presence>");
    EXPECT(ROMEO, "<presence from='" R "/Nurse' type='unavailable' to='" ROMEO "'><status>bye</status>" XUSER
                  "<item jid='" NURSE "' affiliation='none' role='none'/></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Nurse' type='unavailable' to='" JULIET "'><status>bye</status>" XUSER
                   "<item affiliation='none' role='none'/></x></presence>");
    EXPECT(NURSE, "<presence from='" R "/Nurse' type='unavailable' to='" NURSE "'><status>bye</status>" XUSER
                  "<item jid='" NURSE "' affiliation='none' role='none'/><status code='110'/></x></presence>");
    EXPECT_END();

    /* last occupants leave: the temporary room vanishes */
    feed(m, JULIET, "<presence type='unavailable' to='" R "'/>");
    feed(m, ROMEO, "<presence type='unavailable' to='" R "/Romeo'/>");
    EXPECT_HAS(ROMEO, "type='unavailable'", "<status code='110'/>");
    EXPECT_END();
    CHECK_INT(0, muc_room_count(m));
    muc_service_free(m);
}


#define CONFIG_SET(id, fields) "<iq id='" id "' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>" \
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>" \
    fields "</x></query></iq>"
#define MSG104 XUSER "<status code='104'/></x></message>"

/* the founding scenario, muc_password.scs */
static void test_password(void)
{
    muc_service *m = service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    feed(m, ROMEO, CONFIG_SET("config1", "<field var='muc#roomconfig_roomsecret'><value>cauldronburn</value></field>"));
    EXPECT(ROMEO, "<iq from='" R "' id='config1' type='result' to='" ROMEO "'/>");
    EXPECT(ROMEO, "<message type='groupchat' from='" R "' to='" ROMEO "'>" MSG104);
    EXPECT_END();

    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT(JULIET, "<presence from='" R "/Juliet' type='error' to='" JULIET "'>" XMUC "<error type='auth' by='" R "'>"
                   "<not-authorized xmlns='" STZ "'/></error></presence>");
    EXPECT_END();
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><password>wrong</password></x></presence>");
    EXPECT_HAS(JULIET, "type='error'", "<not-authorized");
    EXPECT_END();
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><password>cauldronburn</password></x></presence>");
    EXPECT_HAS(JULIET, "from='" R "/Romeo'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "<status code='110'/>");
    EXPECT_HAS(JULIET, "<subject/>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'");
    EXPECT_END();

    feed(m, JULIET, "<presence type='unavailable' to='" R "'/>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet' type='unavailable'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet' type='unavailable'", "<status code='110'/>");
    EXPECT_END();

    feed(m, ROMEO, CONFIG_SET("config2", "<field var='muc#roomconfig_roomsecret'></field>"));
    EXPECT(ROMEO, "<iq from='" R "' id='config2' type='result' to='" ROMEO "'/>");
    EXPECT(ROMEO, "<message type='groupchat' from='" R "' to='" ROMEO "'>" MSG104);
    EXPECT_END();

    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT_HAS(JULIET, "from='" R "/Romeo'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "<status code='110'/>");
    EXPECT_HAS(JULIET, "<subject/>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'");
    EXPECT_END();
    muc_service_free(m);
}

/* the password as a client submits it: the whole form back, the protection box unchanged */
#define PW_FIELDS(prot, secret) "<field var='muc#roomconfig_passwordprotectedroom'><value>" prot "</value></field>" \
    "<field var='muc#roomconfig_roomsecret'><value>" secret "</value></field>"
#define DISCO_INFO(id) "<iq id='" id "' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
static void test_password_form(void)
{
    muc_service *m = service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    /* a secret typed, the box left as it was (0): the room is protected */
    feed(m, ROMEO, CONFIG_SET("f1", "<field var='muc#roomconfig_roomname'><value>Vault</value></field>" PW_FIELDS("0", "sesame")));
    EXPECT(ROMEO, "<iq from='" R "' id='f1' type='result' to='" ROMEO "'/>");
    EXPECT_HAS(ROMEO, "<status code='104'/>");
    EXPECT_END();
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT_HAS(JULIET, "type='error'", "<not-authorized");
    EXPECT_END();
    feed(m, NURSE, DISCO_INFO("d1"));
    EXPECT_HAS(NURSE, "<feature var='muc_passwordprotected'/>");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='g' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    EXPECT_HAS(ROMEO, "<field var='muc#roomconfig_passwordprotectedroom' type='boolean' label='Password protected'><value>1</value>",
               "<field var='muc#roomconfig_roomsecret' type='text-private' label='Password'><value>sesame</value>");
    EXPECT_END();
    /* protection asked for with an empty secret: refused, nothing changes */
    feed(m, ROMEO, CONFIG_SET("f2", PW_FIELDS("1", "")));
    EXPECT(ROMEO, "<iq from='" R "' id='f2' type='error' to='" ROMEO "'><error type='modify' by='" R "'>"
                  "<not-acceptable xmlns='" STZ "'/></error></iq>");
    EXPECT_END();
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><password>sesame</password></x></presence>");
    EXPECT_HAS(JULIET, "from='" R "/Romeo'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "<status code='110'/>");
    feed(m, JULIET, "<presence type='unavailable' to='" R "'/>");
    /* the box unticked, the old secret still in the form: unprotected */
    feed(m, ROMEO, CONFIG_SET("f3", PW_FIELDS("0", "sesame")));
    EXPECT(ROMEO, "<iq from='" R "' id='f3' type='result' to='" ROMEO "'/>");
    feed(m, NURSE, DISCO_INFO("d2"));
    EXPECT_HAS(NURSE, "<feature var='muc_unsecured'/>");
    EXPECT_END();
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT_HAS(JULIET, "from='" R "/Romeo'");
    feed(m, JULIET, "<presence type='unavailable' to='" R "'/>");
    /* ticked with a new secret: protected by it */
    feed(m, ROMEO, CONFIG_SET("f4", PW_FIELDS("1", "open")));
    EXPECT(ROMEO, "<iq from='" R "' id='f4' type='result' to='" ROMEO "'/>");
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><password>sesame</password></x></presence>");
    EXPECT_HAS(JULIET, "type='error'", "<not-authorized");
    EXPECT_END();
    /* the secret cleared, the box left ticked: refused too (protection with no secret) */
    feed(m, ROMEO, CONFIG_SET("f5", PW_FIELDS("1", "")));
    EXPECT_HAS(ROMEO, "type='error'", "<not-acceptable");
    EXPECT_END();
    /* the secret alone cleared (no box in the form): unprotected, as the founding scenario does */
    feed(m, ROMEO, CONFIG_SET("f6", "<field var='muc#roomconfig_roomsecret'/>"));
    EXPECT(ROMEO, "<iq from='" R "' id='f6' type='result' to='" ROMEO "'/>");
    feed(m, NURSE, DISCO_INFO("d3"));
    EXPECT_HAS(NURSE, "<feature var='muc_unsecured'/>");
    EXPECT_END();
    muc_service_free(m);
}

/* an occupant whose client bounces what the room relays is removed with 333 (as Prosody); other errors are not */
#define BOUNCE(kind, to, cond) "<" kind " type='error' to='" to "'><error type='cancel'>" cond "</error></" kind ">"
static void test_bounces(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    /* a refusal of one message keeps the occupant */
    feed(m, JULIET, BOUNCE("message", R "/Romeo", "<not-acceptable xmlns='" STZ "'/>"));
    EXPECT_END();
    /* an error from someone who is not in the room changes nothing */
    feed(m, NURSE, BOUNCE("message", R "/Romeo", "<service-unavailable xmlns='" STZ "'/>"));
    EXPECT_END();
    /* a second session of Juliet's bounces: only that session goes, nobody is told */
    feed(m, "juliet@localhost/j2", JOIN(JULIET, "Juliet"));
    clear_recs();
    feed(m, "juliet@localhost/j2", BOUNCE("message", R "/Romeo", "<recipient-unavailable xmlns='" STZ "'/>"));
    EXPECT_END();
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><body>still there?</body></message>");
    EXPECT_HAS(ROMEO, "<body>still there?</body>");
    EXPECT_HAS(JULIET, "<body>still there?</body>");
    EXPECT_END();
    /* her last session bounces a private message: she leaves with 333 and the error as her status */
    feed(m, JULIET, BOUNCE("message", R "/Romeo", "<service-unavailable xmlns='" STZ "'/><text xmlns='" STZ "'>gone &amp; away</text>"));
    EXPECT(ROMEO, "<presence from='" R "/Juliet' type='unavailable' to='" ROMEO "'><status>service-unavailable: gone &amp; away</status>"
                  XUSER "<item jid='" JULIET "' affiliation='none' role='none'/><status code='333'/></x></presence>");
    EXPECT_END();
    /* a presence error counts the same */
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
    feed(m, JULIET, BOUNCE("presence", R "/Romeo", "<remote-server-not-found xmlns='" STZ "'/>"));
    EXPECT_HAS(ROMEO, "from='" R "/Juliet' type='unavailable'", "<status>remote-server-not-found</status>", "<status code='333'/>");
    EXPECT_END();
    CHECK_INT(1, muc_room_count(m));
    muc_service_free(m);
}

/* nicks are PRECIS nicknames (RFC 8266): shown as enforced, compared by their key */
static void test_nick_precis(void)
{
    muc_service *m = service(1);
    /* extra spaces are dropped; the room says so with 210 */
    feed(m, ROMEO, "<presence to='" R "/Romeo  Montague'>" XMUC "</presence>");
    EXPECT(ROMEO, "<presence from='" R "/Romeo Montague' to='" ROMEO "'>" XUSER "<status code='201'/>"
                  "<item jid='" ROMEO "' affiliation='owner' role='moderator'/><status code='110'/><status code='210'/></x></presence>");
    EXPECT_HAS(ROMEO, "<subject/>");
    EXPECT_END();
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
    /* fullwidth letters are the same nick, and so is another case: conflict */
    feed(m, NURSE, "<presence to='" R "/\xef\xbc\xaa\xef\xbc\xb5\xef\xbc\xac\xef\xbc\xa9\xef\xbc\xa5\xef\xbc\xb4'>" XMUC "</presence>");
    EXPECT_HAS(NURSE, "type='error'", "<conflict");
    EXPECT_END();
    feed(m, NURSE, "<presence to='" R "/JULIET'>" XMUC "</presence>");
    EXPECT_HAS(NURSE, "type='error'", "<conflict");
    EXPECT_END();
    /* a nick of spaces only, or with an unassigned code point, is refused with a reason */
    feed(m, NURSE, "<presence to='" R "/   '>" XMUC "</presence>");
    EXPECT(NURSE, "<presence from='" R "/   ' type='error' to='" NURSE "'>" XMUC "<error type='modify' by='" R "'>"
                  "<jid-malformed xmlns='" STZ "'/><text xmlns='" STZ "'>empty nickname</text></error></presence>");
    EXPECT_END();
    feed(m, NURSE, "<presence to='" R "/Nurse&#x378;'>" XMUC "</presence>");
    EXPECT_HAS(NURSE, "type='error'", "<jid-malformed", "unassigned");
    EXPECT_END();
    /* a private message to another spelling of the nick reaches its occupant */
    feed(m, ROMEO, "<message to='" R "/juliet' type='chat'><body>hi</body></message>");
    EXPECT_HAS(JULIET, "from='" R "/Romeo Montague'", "<body>hi</body>");
    EXPECT_END();
    /* Juliet may change the case of her own nick: no conflict with herself */
    feed(m, JULIET, "<presence to='" R "/JULIET'/>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet' type='unavailable'", "nick='JULIET'", "<status code='303'/>");
    muc_service_free(m);
    clear_recs();
}

static void test_join_errors(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    /* nick in use by someone else */
    feed(m, NURSE, JOIN(NURSE, "Juliet"));
    EXPECT(NURSE, "<presence from='" R "/Juliet' type='error' to='" NURSE "'>" XMUC "<error type='cancel' by='" R "'>"
                  "<conflict xmlns='" STZ "'/></error></presence>");
    EXPECT_END();
    /* no nick */
    feed(m, NURSE, "<presence to='" R "'>" XMUC "</presence>");
    EXPECT(NURSE, "<presence from='" R "' type='error' to='" NURSE "'>" XMUC "<error type='modify' by='" R "'>"
                  "<jid-malformed xmlns='" STZ "'/><text xmlns='" STZ "'>no nickname</text></error></presence>");
    EXPECT_END();
    /* banned */
    feed(m, ROMEO, "<iq id='b1' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='outcast' jid='nurse@localhost'/></query></iq>");
    EXPECT(ROMEO, "<message from='" R "' to='" ROMEO "'>" XUSER "<item jid='nurse@localhost' affiliation='outcast'/></x></message>");
    EXPECT(ROMEO, "<iq from='" R "' id='b1' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    EXPECT_HAS(NURSE, "type='error'", "<error type='auth' by='" R "'><forbidden xmlns='" STZ "'/>");
    EXPECT_END();
    /* members-only */
    feed(m, ROMEO, CONFIG_SET("c1", "<field var='muc#roomconfig_membersonly'><value>1</value></field>"));
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_HAS(ROMEO, "<status code='104'/>");
    EXPECT_HAS(JULIET, "<status code='104'/>");
    /* juliet is no member: removed with 322 */
    EXPECT(ROMEO, "<presence from='" R "/Juliet' type='unavailable' to='" ROMEO "'>" XUSER
                  "<item jid='" JULIET "' affiliation='none' role='none'/><status code='322'/></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Juliet' type='unavailable' to='" JULIET "'>" XUSER
                   "<item jid='" JULIET "' affiliation='none' role='none'/><status code='322'/><status code='110'/></x></presence>");
    EXPECT_END();
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT_HAS(JULIET, "type='error'", "<error type='auth' by='" R "'><registration-required xmlns='" STZ "'/>");
    EXPECT_END();
    /* bad nick (a control character) */
    feed(m, ROMEO, CONFIG_SET("c2", "<field var='muc#roomconfig_membersonly'><value>0</value></field>"
                                    "<field var='muc#roomconfig_maxusers'><value>2</value></field>"));
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_HAS(ROMEO, "<status code='104'/>");
    EXPECT_END();
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
    /* full (maxusers 2) */
    feed(m, "friar@localhost/f", JOIN("friar@localhost/f", "Friar"));
    EXPECT_HAS("friar@localhost/f", "type='error'", "<error type='wait' by='" R "'><service-unavailable xmlns='" STZ "'/>");
    EXPECT_END();
    /* a server admin is owner everywhere and not limited */
    feed(m, ADMIN, JOIN(ADMIN, "Boss"));
    EXPECT_HAS(ADMIN, "from='" R "/Romeo'");
    EXPECT_HAS(ADMIN, "from='" R "/Juliet'");
    EXPECT_HAS(ADMIN, "from='" R "/Boss'", "affiliation='owner' role='moderator'");
    EXPECT_HAS(ADMIN, "<subject/>");
    EXPECT_HAS(ROMEO, "from='" R "/Boss'");
    EXPECT_HAS(JULIET, "from='" R "/Boss'");
    EXPECT_END();
    muc_service_free(m);

    /* creation restricted to admins */
    m = service(0);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    EXPECT(ROMEO, "<presence from='" R "/Romeo' type='error' to='" ROMEO "'>" XMUC "<error type='cancel' by='" R "'>"
                  "<not-allowed xmlns='" STZ "'/></error></presence>");
    EXPECT_END();
    CHECK_INT(0, muc_room_count(m));
    feed(m, ADMIN, JOIN(ADMIN, "Boss"));
    EXPECT_HAS(ADMIN, "<status code='201'/>");
    EXPECT_HAS(ADMIN, "<subject/>");
    EXPECT_END();
    muc_service_free(m);
}

static void test_messages(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    /* subject-only message from a participant: not allowed by default */
    feed(m, JULIET, "<message to='" R "' type='groupchat'><subject>mine</subject></message>");
    EXPECT(JULIET, "<message from='" R "' type='error' to='" JULIET "'><error type='auth' by='" R "'>"
                   "<forbidden xmlns='" STZ "'/></error></message>");
    EXPECT_END();
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><subject>Verona</subject></message>");
    EXPECT(ROMEO, "<message type='groupchat' from='" R "/Romeo' to='" ROMEO "'><subject>Verona</subject></message>");
    EXPECT(JULIET, "<message type='groupchat' from='" R "/Romeo' to='" JULIET "'><subject>Verona</subject></message>");
    EXPECT_END();
    /* a subject with a thread (or a body) is an ordinary message, not a subject change (XEP-0045 §8.1): a
     * participant may send it, and the room's subject stays (the nurse, joining below, gets "Verona") */
    feed(m, JULIET, "<message to='" R "' type='groupchat'><subject>mine</subject><thread>t1</thread></message>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'", "<thread>t1</thread>");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "<thread>t1</thread>");
    EXPECT_END();
    /* a non-occupant may not speak */
    feed(m, NURSE, "<message to='" R "' type='groupchat'><body>x</body></message>");
    EXPECT_HAS(NURSE, "type='error'", "<error type='modify' by='" R "'><not-acceptable xmlns='" STZ "'/>");
    EXPECT_END();
    /* private messages */
    feed(m, JULIET, "<message to='" R "/Romeo' type='chat' id='p1'><body>psst</body></message>");
    EXPECT(ROMEO, "<message type='chat' id='p1' from='" R "/Juliet' to='" ROMEO "'><body>psst</body><x xmlns='" MUCU "'/></message>");
    EXPECT_END();
    feed(m, JULIET, "<message to='" R "/Nobody' type='chat'><body>psst</body></message>");
    EXPECT_HAS(JULIET, "type='error'", "<error type='cancel' by='" R "'><item-not-found xmlns='" STZ "'/>");
    EXPECT_END();
    feed(m, NURSE, "<message to='" R "/Romeo' type='chat'><body>psst</body></message>");
    EXPECT_HAS(NURSE, "type='error'", "<not-acceptable");
    EXPECT_END();
    feed(m, JULIET, "<message to='" R "/Romeo' type='groupchat'><body>psst</body></message>");
    EXPECT_HAS(JULIET, "type='error'", "<bad-request");
    EXPECT_END();
    /* errors are never answered */
    feed(m, NURSE, "<message to='" R "/Romeo' type='error'><body>psst</body></message>");
    EXPECT_END();
    /* later joiners get the subject from who set it */
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    EXPECT_HAS(NURSE, "from='" R "/Romeo'");
    EXPECT_HAS(NURSE, "from='" R "/Juliet'");
    EXPECT_HAS(NURSE, "from='" R "/Nurse'");
    /* the subject a joiner gets says when it was set (§7.2.15) */
    EXPECT_HAS(NURSE, "<message type='groupchat' from='" R "/Romeo' to='" NURSE "'><subject>Verona</subject>"
                      "<delay xmlns='urn:xmpp:delay' from='" R "' stamp='20");
    EXPECT_HAS(ROMEO, "from='" R "/Nurse'");
    EXPECT_HAS(JULIET, "from='" R "/Nurse'");
    EXPECT_END();
    /* moderated room: a visitor may not speak */
    feed(m, ROMEO, CONFIG_SET("c", "<field var='muc#roomconfig_moderatedroom'><value>true</value></field>"));
    clear_recs();
    feed(m, ROMEO, "<iq id='v' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item nick='Nurse' role='visitor'><reason>hush</reason></item></query></iq>");
    EXPECT(ROMEO, "<presence from='" R "/Nurse' to='" ROMEO "'>" XUSER "<item jid='" NURSE "' affiliation='none' role='visitor'>"
                  "<actor nick='Romeo' jid='romeo@localhost'/><reason>hush</reason></item></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Nurse' to='" JULIET "'>" XUSER "<item affiliation='none' role='visitor'>"
                   "<actor nick='Romeo'/><reason>hush</reason></item></x></presence>");
    EXPECT(NURSE, "<presence from='" R "/Nurse' to='" NURSE "'>" XUSER "<item jid='" NURSE "' affiliation='none' role='visitor'>"
                  "<actor nick='Romeo'/><reason>hush</reason></item><status code='110'/></x></presence>");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    feed(m, NURSE, "<message to='" R "' type='groupchat'><body>x</body></message>");
    EXPECT_HAS(NURSE, "type='error'", "<error type='auth' by='" R "'><forbidden xmlns='" STZ "'/>");
    EXPECT_END();
    /* a participant may not voice/devoice... but may not kick either */
    feed(m, JULIET, "<iq id='k' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                    "<item nick='Nurse' role='none'/></query></iq>");
    EXPECT_HAS(JULIET, "type='error'", "<forbidden");
    EXPECT_END();
    /* role lists for moderators */
    feed(m, ROMEO, "<iq id='l' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#admin'><item role='visitor'/></query></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='l' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                  "<item affiliation='none' jid='" NURSE "' nick='Nurse' role='visitor'/></query></iq>");
    EXPECT_END();
    /* kick: 307 with actor and reason */
    feed(m, ROMEO, "<iq id='k' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item nick='Nurse' role='none'><reason>out</reason></item></query></iq>");
    EXPECT(ROMEO, "<presence from='" R "/Nurse' type='unavailable' to='" ROMEO "'>" XUSER "<item jid='" NURSE "' affiliation='none' role='none'>"
                  "<actor nick='Romeo' jid='romeo@localhost'/><reason>out</reason></item><status code='307'/></x></presence>");
    EXPECT_HAS(JULIET, "type='unavailable'", "<status code='307'/>");
    EXPECT(NURSE, "<presence from='" R "/Nurse' type='unavailable' to='" NURSE "'>" XUSER "<item jid='" NURSE "' affiliation='none' role='none'>"
                  "<actor nick='Romeo'/><reason>out</reason></item><status code='307'/><status code='110'/></x></presence>");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    /* the owner cannot be kicked by anyone */
    feed(m, ROMEO, "<iq id='k2' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='admin' jid='juliet@localhost'/></query></iq>");
    EXPECT(ROMEO, "<presence from='" R "/Juliet' to='" ROMEO "'>" XUSER "<item jid='" JULIET "' affiliation='admin' role='moderator'>"
                  "<actor nick='Romeo' jid='romeo@localhost'/></item></x></presence>");
    EXPECT_HAS(JULIET, "affiliation='admin' role='moderator'", "<status code='110'/>");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    feed(m, JULIET, "<iq id='k3' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                    "<item nick='Romeo' role='none'/></query></iq>");
    EXPECT_HAS(JULIET, "type='error'", "<error type='cancel' by='" R "'><not-allowed");
    EXPECT_END();
    feed(m, JULIET, "<iq id='k4' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                    "<item affiliation='outcast' jid='romeo@localhost'/></query></iq>");
    EXPECT_HAS(JULIET, "type='error'", "<not-allowed");
    EXPECT_END();
    /* the last owner cannot step down */
    feed(m, ROMEO, "<iq id='k5' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='member' jid='romeo@localhost'/></query></iq>");
    EXPECT_HAS(ROMEO, "type='error'", "<error type='cancel' by='" R "'><conflict");
    EXPECT_END();
    /* ban of an occupant: 301 */
    feed(m, ROMEO, "<iq id='k6' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='outcast' jid='juliet@localhost'><reason>traitor</reason></item></query></iq>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet' type='unavailable'", "affiliation='outcast' role='none'", "<reason>traitor</reason>", "<status code='301'/>");
    EXPECT_HAS(JULIET, "from='" R "/Juliet' type='unavailable'", "<status code='301'/><status code='110'/>");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='k7' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='k7' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                  "<item affiliation='outcast' jid='juliet@localhost'/></query></iq>");
    EXPECT_END();
    muc_service_free(m);
}

static void test_nick_and_sessions(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    feed(m, JULIET, "<presence to='" R "/Jules'/>");
    EXPECT(ROMEO, "<presence from='" R "/Juliet' type='unavailable' to='" ROMEO "'>" XUSER
                  "<item jid='" JULIET "' affiliation='none' role='participant' nick='Jules'/><status code='303'/></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Juliet' type='unavailable' to='" JULIET "'>" XUSER
                   "<item jid='" JULIET "' affiliation='none' role='participant' nick='Jules'/><status code='303'/><status code='110'/></x></presence>");
    EXPECT(ROMEO, "<presence from='" R "/Jules' to='" ROMEO "'>" XUSER "<item jid='" JULIET "' affiliation='none' role='participant'/></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Jules' to='" JULIET "'>" XUSER
                   "<item jid='" JULIET "' affiliation='none' role='participant'/><status code='110'/></x></presence>");
    EXPECT_END();
    feed(m, JULIET, "<presence to='" R "/Romeo'/>");
    EXPECT_HAS(JULIET, "type='error'", "<conflict");
    EXPECT_END();
    /* a status update */
    feed(m, JULIET, "<presence to='" R "/Jules'><show>dnd</show></presence>");
    EXPECT_HAS(ROMEO, "<show>dnd</show>");
    EXPECT_HAS(JULIET, "<show>dnd</show>", "<status code='110'/>");
    EXPECT_END();
    /* a second session under the same nick: only it hears the join */
    feed(m, "juliet@localhost/j2", JOIN("juliet@localhost/j2", "Jules"));
    EXPECT_HAS("juliet@localhost/j2", "from='" R "/Romeo'");
    EXPECT_HAS("juliet@localhost/j2", "from='" R "/Jules'", "<status code='110'/>");
    EXPECT_HAS("juliet@localhost/j2", "<subject/>");
    EXPECT_END();
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><body>both</body></message>");
    EXPECT_HAS(ROMEO, "<body>both</body>");
    EXPECT_HAS(JULIET, "<body>both</body>");
    EXPECT_HAS("juliet@localhost/j2", "<body>both</body>");
    EXPECT_END();
    feed(m, ROMEO, "<message to='" R "/Jules' type='chat'><body>pm</body></message>");
    EXPECT_HAS(JULIET, "<body>pm</body>");
    EXPECT_HAS("juliet@localhost/j2", "<body>pm</body>");
    EXPECT_END();
    /* one session leaves: the others see nothing */
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Jules'/>");
    EXPECT_HAS(JULIET, "type='unavailable'", "<status code='110'/>");
    EXPECT_END();
    feed(m, "juliet@localhost/j2", "<presence type='unavailable' to='" R "/Jules'/>");
    EXPECT_HAS(ROMEO, "from='" R "/Jules' type='unavailable'");
    EXPECT_HAS("juliet@localhost/j2", "type='unavailable'", "<status code='110'/>");
    EXPECT_END();
    /* a failed delivery drops the session as if it had left */
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
    dead_jid = JULIET;
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><body>anyone?</body></message>");
    dead_jid = NULL;
    EXPECT_HAS(ROMEO, "<body>anyone?</body>");
    EXPECT(ROMEO, "<presence from='" R "/Juliet' type='unavailable' to='" ROMEO "'><status>service-unavailable</status>"
                  XUSER "<item jid='" JULIET "' affiliation='none' role='none'/><status code='333'/></x></presence>");
    EXPECT_END();
    /* a newcomer whose own delivery fails is never announced */
    dead_jid = "friar@localhost/f";
    feed(m, "friar@localhost/f", JOIN("friar@localhost/f", "Friar"));
    dead_jid = NULL;
    EXPECT_END();
    /* probes */
    feed(m, NURSE, "<presence type='probe' to='" R "/Romeo'/>");
    EXPECT(NURSE, "<presence from='" R "/Romeo' to='" NURSE "'>" XUSER "<item affiliation='owner' role='moderator'/></x></presence>");
    EXPECT_END();
    feed(m, NURSE, "<presence type='probe' to='" R "/Juliet'/>");
    EXPECT_HAS(NURSE, "type='error'", "<item-not-found");
    EXPECT_END();
    muc_service_free(m);
}

static void test_history_params(void)
{
    muc_service *m = service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    for (int i = 0; i < 12; i++) {
        char b[200];
        snprintf(b, sizeof b, "<message to='" R "' type='groupchat'><body>m%d</body></message>", i);
        feed(m, ROMEO, b);
    }
    /* default: the last 10 (historylength 10) */
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    CHECK_INT(1 + 1 + 10 + 1 + 1, nrecs);
    CHECK(strstr(recs[2], "<body>m2</body>") != NULL, "first history %s", recs[2]);
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='3'/></x></presence>");
    CHECK_INT(1 + 1 + 3 + 1 + 1, nrecs);
    CHECK(strstr(recs[2], "<body>m9</body>") != NULL, "first history %s", recs[2]);
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><history maxchars='0'/></x></presence>");
    CHECK_INT(1 + 1 + 0 + 1 + 1, nrecs);
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    /* one message's XML is about 245 characters here (with its occupant-id): 520 allows two */
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><history maxchars='520'/></x></presence>");
    CHECK_INT(1 + 1 + 2 + 1 + 1, nrecs);
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><history since='2999-01-01T00:00:00Z'/></x></presence>");
    CHECK_INT(1 + 1 + 0 + 1 + 1, nrecs);
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><history seconds='60' maxstanzas='5'/></x></presence>");
    CHECK_INT(1 + 1 + 5 + 1 + 1, nrecs);
    /* shrinking the history keeps the newest */
    feed(m, ROMEO, CONFIG_SET("h", "<field var='muc#roomconfig_historylength'><value>2</value></field>"));
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><body>last</body></message>");
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    CHECK_INT(2 + 1 + 2 + 1 + 2, nrecs);
    CHECK(strstr(recs[3], "<body>m11</body>") != NULL, "history %s", recs[3]);
    CHECK(strstr(recs[4], "<body>last</body>") != NULL, "history %s", recs[4]);
    muc_service_free(m);
}

static void test_config_form(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    feed(m, ROMEO, "<iq id='g' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    EXPECT_HAS(ROMEO, "<iq from='" R "' id='g' type='result'", "<x xmlns='jabber:x:data' type='form'>",
               "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roomconfig</value></field>",
               "<field var='muc#roomconfig_whois' type='list-single' label='Who may see real JIDs'><value>moderators</value>",
               "<field var='muc#roomconfig_persistentroom' type='boolean' label='Persistent'><value>0</value></field>",
               "<field var='muc#roomconfig_maxusers' type='text-single' label='Maximum occupants'><value>4</value></field>");
    EXPECT_END();
    feed(m, JULIET, "<iq id='g' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    EXPECT_HAS(JULIET, "type='error'", "<error type='auth' by='" R "'><forbidden");
    EXPECT_END();
    /* empty form and cancel: accepted, nothing changes */
    feed(m, ROMEO, CONFIG_SET("e", ""));
    EXPECT(ROMEO, "<iq from='" R "' id='e' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='c' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='cancel'/></query></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='c' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    /* bad values */
    feed(m, ROMEO, CONFIG_SET("b", "<field var='muc#roomconfig_whois'><value>everyone</value></field>"));
    EXPECT_HAS(ROMEO, "type='error'", "<error type='modify' by='" R "'><bad-request");
    EXPECT_END();
    feed(m, ROMEO, CONFIG_SET("b", "<field var='muc#roomconfig_maxusers'><value>500</value></field>"));
    EXPECT_HAS(ROMEO, "type='error'", "<not-acceptable");
    EXPECT_END();
    feed(m, ROMEO, CONFIG_SET("b", "<field var='muc#roomconfig_publicroom'><value>maybe</value></field>"));
    EXPECT_HAS(ROMEO, "type='error'", "<bad-request");
    EXPECT_END();
    /* partial form: whois anyone -> 104 + 172 */
    feed(m, ROMEO, CONFIG_SET("w", "<field var='muc#roomconfig_whois'><value>anyone</value></field>"
                                   "<field var='muc#roomconfig_roomname'><value>The Balcony</value></field>"));
    EXPECT(ROMEO, "<iq from='" R "' id='w' type='result' to='" ROMEO "'/>");
    EXPECT(ROMEO, "<message type='groupchat' from='" R "' to='" ROMEO "'>" XUSER "<status code='104'/><status code='172'/></x></message>");
    EXPECT(JULIET, "<message type='groupchat' from='" R "' to='" JULIET "'>" XUSER "<status code='104'/><status code='172'/></x></message>");
    EXPECT_END();
    feed(m, ROMEO, CONFIG_SET("w2", "<field var='muc#roomconfig_whois'><value>moderators</value></field>"));
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_HAS(ROMEO, "<status code='104'/><status code='173'/>");
    EXPECT_HAS(JULIET, "<status code='104'/><status code='173'/>");
    EXPECT_END();
    /* disco of the room reflects the configuration */
    feed(m, NURSE, "<iq id='d' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    EXPECT_HAS(NURSE, "<identity category='conference' name='The Balcony' type='text'/>",
               "<feature var='http://jabber.org/protocol/muc'/><feature var='muc_unsecured'/><feature var='muc_open'/>"
               "<feature var='muc_unmoderated'/><feature var='muc_temporary'/><feature var='muc_public'/><feature var='muc_semianonymous'/>",
               "<field var='muc#roominfo_occupants' label='Occupants'><value>2</value></field>");
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    EXPECT(NURSE, "<iq from='" R "' id='d' type='result' to='" NURSE "'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='conference.localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    EXPECT(NURSE, "<iq from='conference.localhost' id='d' type='result' to='" NURSE "'><query xmlns='http://jabber.org/protocol/disco#items'>"
                  "<item jid='" R "' name='The Balcony'/></query></iq>");
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='conference.localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    EXPECT(NURSE, "<iq from='conference.localhost' id='d' type='result' to='" NURSE "'><query xmlns='http://jabber.org/protocol/disco#info'>"
                  "<identity category='conference' name='Chatrooms' type='text'/><feature var='http://jabber.org/protocol/disco#info'/>"
                  "<feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/></query></iq>");
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='conference.localhost' type='get'><query xmlns='jabber:iq:version'/></iq>");
    EXPECT_HAS(NURSE, "type='error'", "<service-unavailable");
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='conference.localhost' type='result'/>");
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='nowhere@conference.localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    EXPECT_HAS(NURSE, "type='error'", "<item-not-found");
    EXPECT_END();
    /* hidden rooms are not listed */
    feed(m, ROMEO, CONFIG_SET("p", "<field var='muc#roomconfig_publicroom'><value>0</value></field>"));
    clear_recs();
    feed(m, NURSE, "<iq id='d' to='conference.localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    EXPECT(NURSE, "<iq from='conference.localhost' id='d' type='result' to='" NURSE "'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    EXPECT_END();
    muc_service_free(m);
}

static void test_invites_and_destroy(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    feed(m, JULIET, "<message to='" R "'><x xmlns='" MUCU "'><invite to='nurse@localhost'><reason>come</reason></invite></x></message>");
    EXPECT("nurse@localhost", "<message from='" R "' to='nurse@localhost'><x xmlns='" MUCU "'>"
                  "<invite from='juliet@localhost'><reason>come</reason></invite></x></message>");
    EXPECT_END();
    feed(m, NURSE, "<message to='" R "'><x xmlns='" MUCU "'><decline to='juliet@localhost'><reason>busy</reason></decline></x></message>");
    EXPECT("juliet@localhost", "<message from='" R "' to='juliet@localhost'><x xmlns='" MUCU "'>"
                  "<decline from='nurse@localhost'><reason>busy</reason></decline></x></message>");
    EXPECT_END();
    /* members-only: only the owner may invite, and the invitee becomes a member */
    feed(m, ROMEO, "<iq id='jm' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='juliet@localhost'/></query></iq>");
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'", "affiliation='member' role='participant'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "affiliation='member' role='participant'", "<status code='110'/>");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    feed(m, ROMEO, CONFIG_SET("mo", "<field var='muc#roomconfig_membersonly'><value>1</value></field>"
                                    "<field var='muc#roomconfig_roomsecret'><value>pw</value></field>"));
    clear_recs();
    feed(m, ROMEO, "<message to='" R "'><x xmlns='" MUCU "'><invite to='nurse@localhost'/></x></message>");
    EXPECT("nurse@localhost", "<message from='" R "' to='nurse@localhost'><x xmlns='" MUCU "'>"
                  "<invite from='romeo@localhost'/><password>pw</password></x></message>");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='ml' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>");
    EXPECT_HAS(ROMEO, "<item affiliation='member' jid='nurse@localhost'/>");
    EXPECT_END();
    feed(m, NURSE, "<presence to='" R "/Nurse'><x xmlns='http://jabber.org/protocol/muc'><password>pw</password></x></presence>");
    EXPECT_HAS(NURSE, "from='" R "/Romeo'");
    EXPECT_HAS(NURSE, "from='" R "/Juliet'");
    EXPECT_HAS(NURSE, "from='" R "/Nurse'", "affiliation='member' role='participant'");
    EXPECT_HAS(NURSE, "<subject/>");
    EXPECT_HAS(ROMEO, "from='" R "/Nurse'");
    EXPECT_HAS(JULIET, "from='" R "/Nurse'");
    EXPECT_END();
    /* a member (no allowinvites) may not invite */
    feed(m, NURSE, "<message to='" R "'><x xmlns='" MUCU "'><invite to='friar@localhost'/></x></message>");
    EXPECT_HAS(NURSE, "type='error'", "<forbidden");
    EXPECT_END();
    /* affiliation none in a members-only room: 321 */
    feed(m, ROMEO, "<iq id='n' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='none' nick='Nurse'/></query></iq>");
    EXPECT_HAS(ROMEO, "from='" R "/Nurse' type='unavailable'", "<item jid='" NURSE "' affiliation='none' role='none'><actor nick='Romeo' jid='romeo@localhost'/></item><status code='321'/>");
    EXPECT_HAS(JULIET, "from='" R "/Nurse' type='unavailable'", "<status code='321'/>");
    EXPECT_HAS(NURSE, "from='" R "/Nurse' type='unavailable'", "<status code='321'/><status code='110'/>");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    /* nick registration */
    feed(m, ROMEO, "<iq id='r' to='" R "' type='get'><query xmlns='jabber:iq:register'/></iq>");
    EXPECT_HAS(ROMEO, "<field var='muc#register_roomnick' type='text-single' label='Nickname'><required/></field>");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='r' to='" R "' type='set'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
                   "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
                   "<field var='muc#register_roomnick'><value>Romeo</value></field></x></query></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='r' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='u' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='u' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'>"
                  "<identity category='conference' name='Romeo' type='text'/></query></iq>");
    EXPECT_END();
    /* iq between occupants is forwarded and the answer routed back */
    feed(m, ROMEO, "<iq id='v1' to='" R "/Juliet' type='get'><query xmlns='jabber:iq:version'/></iq>");
    EXPECT(JULIET, "<iq id='muc1' type='get' from='" R "/Romeo' to='" JULIET "'><query xmlns='jabber:iq:version'/></iq>");
    EXPECT_END();
    feed(m, JULIET, "<iq id='muc1' to='" R "/Romeo' type='result'><query xmlns='jabber:iq:version'><name>x</name></query></iq>");
    EXPECT(ROMEO, "<iq id='v1' type='result' from='" R "/Juliet' to='" ROMEO "'><query xmlns='jabber:iq:version'><name>x</name></query></iq>");
    EXPECT_END();
    /* destroy */
    feed(m, JULIET, "<iq id='x' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>");
    EXPECT_HAS(JULIET, "type='error'", "<forbidden");
    EXPECT_END();
    feed(m, ROMEO, "<iq id='x' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                   "<destroy jid='other@conference.localhost'><reason>moving</reason></destroy></query></iq>");
    EXPECT(ROMEO, "<presence from='" R "/Romeo' type='unavailable' to='" ROMEO "'>" XUSER "<item affiliation='none' role='none'/>"
                  "<status code='110'/><destroy jid='other@conference.localhost'><reason>moving</reason></destroy></x></presence>");
    EXPECT(JULIET, "<presence from='" R "/Juliet' type='unavailable' to='" JULIET "'>" XUSER "<item affiliation='none' role='none'/>"
                   "<status code='110'/><destroy jid='other@conference.localhost'><reason>moving</reason></destroy></x></presence>");
    EXPECT(ROMEO, "<iq from='" R "' id='x' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    CHECK_INT(0, muc_room_count(m));
    muc_service_free(m);
}

static void test_persistence(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    feed(m, ROMEO, CONFIG_SET("p", "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
                                   "<field var='muc#roomconfig_roomdesc'><value>a room with spaces %-\n</value></field>"
                                   "<field var='muc#roomconfig_roomsecret'><value>-</value></field>"
                                   "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>"));
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><subject>Persist me</subject></message>");
    feed(m, ROMEO, "<iq id='a' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='member' jid='juliet@localhost'/><item affiliation='outcast' jid='tybalt@localhost'/></query></iq>");
    char path[256];
    snprintf(path, sizeof path, "%s/rooms/room.room", data_dir);
    CHECK(access(path, F_OK) == 0, "%s missing", path);
    muc_service_free(m);
    clear_recs();

    m = service(1);
    CHECK_INT(1, muc_room_count(m));
    feed(m, ROMEO, "<iq id='g' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    EXPECT_HAS(ROMEO, "<value>a room with spaces %-\n</value>", "<field var='muc#roomconfig_roomsecret' type='text-private' label='Password'><value>-</value>",
               "<field var='muc#roomconfig_persistentroom' type='boolean' label='Persistent'><value>1</value>",
               "<field var='muc#roomconfig_moderatedroom' type='boolean' label='Moderated'><value>1</value>");
    EXPECT_END();
    feed(m, "tybalt@localhost/t", JOIN("tybalt@localhost/t", "Tybalt"));
    EXPECT_HAS("tybalt@localhost/t", "type='error'", "<forbidden");
    EXPECT_END();
    feed(m, JULIET, "<presence to='" R "/Juliet'><x xmlns='http://jabber.org/protocol/muc'><password>-</password></x></presence>");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "affiliation='member' role='participant'");
    /* the subject's time is kept in the room file too */
    EXPECT_HAS(JULIET, "<message type='groupchat' from='" R "/Romeo' to='" JULIET "'><subject>Persist me</subject>"
                       "<delay xmlns='urn:xmpp:delay' from='" R "' stamp='20");
    EXPECT_END();
    /* the persistent room stays when empty, and goes when destroyed */
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    CHECK_INT(1, muc_room_count(m));
    CHECK_INT(0, muc_service_flush(m));
    feed(m, ROMEO, "<iq id='x' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='x' type='result' to='" ROMEO "'/>");
    CHECK_INT(0, muc_room_count(m));
    CHECK(access(path, F_OK) != 0, "%s still there", path);
    muc_service_free(m);

    /* a corrupt file names the file and line */
    store_write_atomic(path, "couplet-room 1\nname room\nbogus 1\nend\n", 38);
    muc_config cfg = { .domain = "conference.localhost", .server_domain = "localhost", .data_dir = data_dir,
                       .max_history = 20 };
    muc_host host = { .ud = NULL, .deliver = fake_deliver, .is_admin = fake_is_admin };
    char err[512] = "";
    m = muc_service_new(&cfg, &host, err, sizeof err);
    CHECK(m == NULL, "corrupt file accepted");
    CHECK(strstr(err, "room.room:3: unknown key") != NULL, "err: %s", err);
    muc_service_free(m);
    unlink(path);
}

/* one account may be in at most max_rooms_per_user rooms at once; leaving one makes room for another */
static void test_rooms_per_user(void)
{
    muc_service *m = service(1);
    static const char *const rooms[] = { "r1", "r2", "r3" };
    char xml[256];
    for (int i = 0; i < 3; i++) {
        snprintf(xml, sizeof xml, "<presence to='%s@conference.localhost/Romeo'>" XMUC "</presence>", rooms[i]);
        feed(m, ROMEO, xml);
        EXPECT_HAS(ROMEO, "status code='201'");
        EXPECT_HAS(ROMEO, "<subject/>");
    }
    EXPECT_END();
    feed(m, ROMEO, "<presence to='r4@conference.localhost/Romeo'>" XMUC "</presence>");
    EXPECT_HAS(ROMEO, "type='error'", "<policy-violation xmlns='" STZ "'/>");
    EXPECT_END();
    feed(m, ROMEO, "<presence to='r1@conference.localhost/Romeo' type='unavailable'/>");
    EXPECT_HAS(ROMEO, "type='unavailable'", "status code='110'");
    EXPECT_END();
    feed(m, ROMEO, "<presence to='r4@conference.localhost/Romeo'>" XMUC "</presence>");
    EXPECT_HAS(ROMEO, "status code='201'");
    EXPECT_HAS(ROMEO, "<subject/>");
    EXPECT_END();
    /* another account is not limited by Romeo's rooms */
    feed(m, JULIET, "<presence to='r2@conference.localhost/Juliet'>" XMUC "</presence>");
    EXPECT_HAS(JULIET, "from='r2@conference.localhost/Romeo'");
    clear_recs();
    muc_service_free(m);
}

/* ---- a data directory that refuses to store one room ---- */

static void room_file(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/rooms/%s.room", data_dir, name);
}

/* store_write_atomic writes NAME.room.tmp first: a directory there makes every save of the room fail, also
 * for root (whom chmod would not stop) */
static void block_saves(const char *name)
{
    char p[256];
    room_file(p, sizeof p, name);
    strcat(p, ".tmp");
    CHECK(mkdir(p, 0700) == 0, "mkdir %s", p);
}

static void unblock_saves(const char *name)
{
    char p[256];
    room_file(p, sizeof p, name);
    strcat(p, ".tmp");
    CHECK(rmdir(p) == 0, "rmdir %s", p);
}

/* the next test starts with no stored rooms */
static void forget_rooms(void)
{
    char p[256];
    snprintf(p, sizeof p, "%s/rooms", data_dir);
    rm_rf(p);
}

#define OWNER_GET(id) "<iq id='" id "' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"
#define ADMIN_SET(id, items) "<iq id='" id "' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>" \
    items "</query></iq>"
#define ADMIN_LIST(id, aff) "<iq id='" id "' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#admin'>" \
    "<item affiliation='" aff "'/></query></iq>"
#define ISE "<error type='wait' by='" R "'><internal-server-error xmlns='" STZ "'/></error>"
#define IQ_ISE(id, to) "<iq from='" R "' id='" id "' type='error' to='" to "'>" ISE "</iq>"
#define REGISTER(id, nick) "<iq id='" id "' to='" R "' type='set'><query xmlns='jabber:iq:register'>" \
    "<x xmlns='jabber:x:data' type='submit'><field var='muc#register_roomnick'><value>" nick "</value></field></x></query></iq>"
#define ROOMUSER(id) "<iq id='" id "' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>"

static void make_persistent(muc_service *m)
{
    feed(m, ROMEO, CONFIG_SET("mp", "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"));
    EXPECT(ROMEO, "<iq from='" R "' id='mp' type='result' to='" ROMEO "'/>");
    clear_recs();
}

/* a configuration that cannot be stored is not made: no 104, no 322 removals, the form as before */
static void test_failed_save_config(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    make_persistent(m);
    block_saves("room");
    feed(m, ROMEO, CONFIG_SET("c", "<field var='muc#roomconfig_roomname'><value>Renamed</value></field>"
                                   "<field var='muc#roomconfig_membersonly'><value>1</value></field>"
                                   "<field var='muc#roomconfig_roomsecret'><value>pw</value></field>"
                                   "<field var='muc#roomconfig_whois'><value>anyone</value></field>"));
    EXPECT(ROMEO, IQ_ISE("c", ROMEO));
    EXPECT_END();
    feed(m, ROMEO, OWNER_GET("g"));
    EXPECT_HAS(ROMEO, "type='result'", "label='Title'><value/></field>", "label='Persistent'><value>1</value>",
               "label='Members only'><value>0</value>", "label='Password'><value/></field>",
               "label='Who may see real JIDs'><value>moderators</value>");
    EXPECT_END();
    /* juliet is still in, and a newcomer needs no password */
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    EXPECT_HAS(NURSE, "from='" R "/Romeo'");
    EXPECT_HAS(NURSE, "from='" R "/Juliet'");
    EXPECT_HAS(NURSE, "from='" R "/Nurse'", "<status code='110'/>");
    clear_recs();
    unblock_saves("room");
    /* the file holds what the room holds */
    muc_service_free(m);
    m = service(1);
    feed(m, ROMEO, OWNER_GET("g"));
    EXPECT_HAS(ROMEO, "type='result'", "label='Title'><value/></field>", "label='Members only'><value>0</value>");
    EXPECT_END();
    muc_service_free(m);
    forget_rooms();
}

/* a room made temporary whose file cannot be removed stays persistent */
static void test_failed_unsave(void)
{
    muc_service *m = service(1);
    char path[256];
    create_room_with_juliet(m);
    make_persistent(m);
    room_file(path, sizeof path, "room");
    CHECK(unlink(path) == 0 && mkdir(path, 0700) == 0, "a directory in place of %s", path);
    feed(m, ROMEO, CONFIG_SET("t", "<field var='muc#roomconfig_persistentroom'><value>0</value></field>"));
    EXPECT(ROMEO, IQ_ISE("t", ROMEO));
    EXPECT_END();
    feed(m, NURSE, "<iq id='d' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    EXPECT_HAS(NURSE, "<feature var='muc_persistent'/>");
    EXPECT_END();
    CHECK(rmdir(path) == 0, "rmdir %s", path);
    muc_service_free(m);
    forget_rooms();
}

/* affiliations (and the roles of the same request) that cannot be stored: an error, nothing else */
static void test_failed_save_affiliations(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    make_persistent(m);
    feed(m, ROMEO, ADMIN_SET("a0", "<item affiliation='member' jid='juliet@localhost'/>"));
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'", "affiliation='member'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "affiliation='member'");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    block_saves("room");
    feed(m, ROMEO, ADMIN_SET("a1", "<item affiliation='none' jid='juliet@localhost'/>"
                                   "<item affiliation='admin' jid='nurse@localhost'/>"
                                   "<item affiliation='outcast' jid='tybalt@localhost'/>"));
    EXPECT(ROMEO, IQ_ISE("a1", ROMEO));
    EXPECT_END();
    feed(m, ROMEO, ADMIN_SET("a2", "<item nick='Juliet' role='visitor'/><item affiliation='outcast' jid='juliet@localhost'/>"));
    EXPECT(ROMEO, IQ_ISE("a2", ROMEO));
    EXPECT_END();
    feed(m, ROMEO, ADMIN_LIST("l1", "member"));
    EXPECT(ROMEO, "<iq from='" R "' id='l1' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                  "<item affiliation='member' jid='juliet@localhost'/></query></iq>");
    EXPECT_END();
    feed(m, ROMEO, ADMIN_LIST("l2", "admin"));
    EXPECT(ROMEO, "<iq from='" R "' id='l2' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'/></iq>");
    EXPECT_END();
    /* juliet was neither banned nor made a visitor */
    feed(m, JULIET, "<message to='" R "' type='groupchat'><body>still here</body></message>");
    EXPECT_HAS(ROMEO, "<body>still here</body>");
    EXPECT_HAS(JULIET, "<body>still here</body>");
    EXPECT_END();
    /* role changes alone store nothing and still work */
    feed(m, ROMEO, ADMIN_SET("a3", "<item nick='Juliet' role='visitor'/>"));
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'", "role='visitor'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "role='visitor'");
    EXPECT_HAS(ROMEO, "type='result'");
    EXPECT_END();
    unblock_saves("room");
    muc_service_free(m);
    m = service(1);
    feed(m, ROMEO, ADMIN_LIST("l3", "member"));
    EXPECT_HAS(ROMEO, "<item affiliation='member' jid='juliet@localhost'/></query>");
    EXPECT_END();
    muc_service_free(m);
    forget_rooms();
}

/* a subject that cannot be stored is not set and not sent */
static void test_failed_save_subject(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    make_persistent(m);
    block_saves("room");
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><subject>Secret plans</subject></message>");
    EXPECT(ROMEO, "<message from='" R "' type='error' to='" ROMEO "'>" ISE "</message>");
    EXPECT_END();
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    EXPECT_HAS(NURSE, "from='" R "/Romeo'");
    EXPECT_HAS(NURSE, "from='" R "/Juliet'");
    EXPECT_HAS(NURSE, "from='" R "/Nurse'");
    EXPECT(NURSE, "<message type='groupchat' from='" R "' to='" NURSE "'><subject/></message>");
    clear_recs();
    unblock_saves("room");
    muc_service_free(m);
    forget_rooms();
}

/* a nick registration (or its removal) that cannot be stored is not made */
static void test_failed_save_register(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    make_persistent(m);
    block_saves("room");
    feed(m, JULIET, REGISTER("r1", "Jules"));
    EXPECT(JULIET, IQ_ISE("r1", JULIET));
    EXPECT_END();
    feed(m, JULIET, ROOMUSER("u1"));
    EXPECT(JULIET, "<iq from='" R "' id='u1' type='result' to='" JULIET "'>"
                   "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>");
    EXPECT_END();
    feed(m, ROMEO, ADMIN_LIST("l", "member"));
    EXPECT(ROMEO, "<iq from='" R "' id='l' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'/></iq>");
    EXPECT_END();
    unblock_saves("room");
    feed(m, ROMEO, REGISTER("r2", "Romeo"));
    EXPECT(ROMEO, "<iq from='" R "' id='r2' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    block_saves("room");
    feed(m, ROMEO, "<iq id='r3' to='" R "' type='set'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    EXPECT(ROMEO, IQ_ISE("r3", ROMEO));
    EXPECT_END();
    feed(m, ROMEO, ROOMUSER("u2"));
    EXPECT_HAS(ROMEO, "<identity category='conference' name='Romeo' type='text'/>");
    EXPECT_END();
    unblock_saves("room");
    muc_service_free(m);
    forget_rooms();
}

/* an invitation into a members-only room whose new member cannot be stored is not sent */
static void test_failed_save_invite(void)
{
    muc_service *m = service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    make_persistent(m);
    feed(m, ROMEO, CONFIG_SET("mo", "<field var='muc#roomconfig_membersonly'><value>1</value></field>"));
    clear_recs();
    block_saves("room");
    feed(m, ROMEO, "<message to='" R "'><x xmlns='" MUCU "'><invite to='nurse@localhost'/></x></message>");
    EXPECT(ROMEO, "<message from='" R "' type='error' to='" ROMEO "'>" ISE "</message>");
    EXPECT_END();
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    EXPECT_HAS(NURSE, "type='error'", "<registration-required");
    EXPECT_END();
    unblock_saves("room");
    muc_service_free(m);
    forget_rooms();
}

/* a room persistent from its creation that cannot be stored is not created */
static void test_failed_save_create(void)
{
    muc_config cfg = test_config(1);
    cfg.default_persistent = 1;
    muc_service *m = service_from(&cfg);
    block_saves("room");
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    EXPECT(ROMEO, "<presence from='" R "/Romeo' type='error' to='" ROMEO "'>" XMUC ISE "</presence>");
    EXPECT_END();
    CHECK_INT(0, muc_room_count(m));
    unblock_saves("room");
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    EXPECT_HAS(ROMEO, "<status code='201'/>");
    EXPECT_HAS(ROMEO, "<subject/>");
    EXPECT_END();
    char path[256];
    room_file(path, sizeof path, "room");
    CHECK(access(path, F_OK) == 0, "%s missing", path);
    muc_service_free(m);
    forget_rooms();
}

static void join_room(muc_service *m, const char *from, const char *room, const char *nick)
{
    char xml[256];
    snprintf(xml, sizeof xml, "<presence to='%s@conference.localhost/%s'>" XMUC "</presence>", room, nick);
    feed(m, from, xml);
}

/* a reloaded configuration reaches the service; its domain and data directory do not change */
static void test_set_config(void)
{
    muc_config cfg = test_config(1);
    muc_service *m = service_from(&cfg);
    join_room(m, ROMEO, "r1", "Romeo");
    join_room(m, ROMEO, "r2", "Romeo");
    CHECK_INT(2, muc_room_count(m));
    cfg.max_rooms = 2;
    muc_service_set_config(m, &cfg);
    join_room(m, JULIET, "r3", "Juliet");
    EXPECT(JULIET, "<presence from='r3@conference.localhost/Juliet' type='error' to='" JULIET "'>" XMUC
                   "<error type='wait' by='r3@conference.localhost'><resource-constraint xmlns='" STZ "'/></error></presence>");
    EXPECT_END();
    cfg.max_rooms = 0;
    cfg.create_rooms = 0;
    muc_service_set_config(m, &cfg);
    join_room(m, JULIET, "r3", "Juliet");
    EXPECT_HAS(JULIET, "type='error'", "<not-allowed xmlns='" STZ "'/>");
    EXPECT_END();
    join_room(m, ADMIN, "r3", "Boss");
    EXPECT_HAS(ADMIN, "<status code='201'/>");
    EXPECT_HAS(ADMIN, "<subject/>");
    EXPECT_END();
    /* a room's form is checked against the new bound; a room's settings stay as they were */
    cfg.max_occupants = 2;
    cfg.max_rooms_per_user = 2;
    cfg.default_history = 5;
    cfg.default_persistent = 1;
    cfg.create_rooms = 1;
    cfg.domain = "elsewhere.localhost";
    cfg.data_dir = "/nonexistent";
    muc_service_set_config(m, &cfg);
    feed(m, ROMEO, "<iq id='m' to='r1@conference.localhost' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                   "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_maxusers'><value>3</value></field></x></query></iq>");
    EXPECT_HAS(ROMEO, "type='error'", "<not-acceptable");
    EXPECT_END();
    join_room(m, ROMEO, "r3", "Romeo");
    EXPECT_HAS(ROMEO, "type='error'", "<policy-violation");
    EXPECT_END();
    /* a new room: the new defaults, at the old domain, stored in the old data directory */
    join_room(m, JULIET, "r4", "Juliet");
    EXPECT_HAS(JULIET, "from='r4@conference.localhost/Juliet'", "<status code='201'/>");
    EXPECT_HAS(JULIET, "<subject/>");
    EXPECT_END();
    feed(m, JULIET, "<iq id='g' to='r4@conference.localhost' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    EXPECT_HAS(JULIET, "label='Persistent'><value>1</value>", "label='Maximum occupants'><value>2</value>",
               "label='Messages kept in history'><value>5</value>");
    EXPECT_END();
    char path[256];
    room_file(path, sizeof path, "r4");
    CHECK(access(path, F_OK) == 0, "%s missing", path);
    muc_service_free(m);
    forget_rooms();
}

/* ---- XEP-0045 §10.1: a room created by a join is locked until its owner configures it ---- */
static int wakes, wake_secs;
static void fake_wake(void *ud, int secs) { (void)ud; wakes++; wake_secs = secs; }

static muc_service *locking_service(int persistent)
{
    static muc_host host = { .ud = NULL, .deliver = fake_deliver, .is_admin = fake_is_admin, .wake = fake_wake };
    muc_config cfg = test_config(1);
    cfg.lock_timeout = 300;
    cfg.default_persistent = persistent;
    char err[512] = "";
    muc_service *m = muc_service_new(&cfg, &host, err, sizeof err);
    CHECK(m != NULL, "muc_service_new: %s", err);
    return m;
}

#define INSTANT(id) "<iq id='" id "' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>" \
                    "<x xmlns='jabber:x:data' type='submit'/></query></iq>"

static void test_room_locking(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/rooms/room.room", data_dir);
    wakes = 0;
    muc_service *m = locking_service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    EXPECT_HAS(ROMEO, "<status code='201'/>", "<status code='110'/>");
    EXPECT_HAS(ROMEO, "<subject/>");
    EXPECT_END();
    CHECK_INT(1, wakes);
    CHECK_INT(300, wake_secs);
    /* not on disk while locked: a restart forgets a room nobody configured */
    CHECK(access(path, F_OK) != 0, "%s written while the room is locked", path);
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT(JULIET, "<presence from='" R "/Juliet' type='error' to='" JULIET "'>" XMUC "<error type='cancel' by='" R "'>"
                   "<item-not-found xmlns='" STZ "'/></error></presence>");
    EXPECT_END();
    /* the owner's other device may come in */
    feed(m, "romeo@localhost/r2", JOIN(ROMEO, "Romeo"));
    EXPECT_HAS("romeo@localhost/r2", "<status code='110'/>");
    EXPECT_HAS("romeo@localhost/r2", "<subject/>");
    EXPECT_END();
    /* the empty form of an instant room unlocks it, and it is written now */
    feed(m, ROMEO, INSTANT("i1"));
    EXPECT(ROMEO, "<iq from='" R "' id='i1' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    CHECK(access(path, F_OK) == 0, "%s missing after the instant-room form", path);
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT_HAS(JULIET, "from='" R "/Romeo'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "<status code='110'/>");
    muc_service_free(m);
    clear_recs();
    rm_rf(path);

    /* cancelling the first configuration destroys the room */
    m = locking_service(0);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    feed(m, ROMEO, "<iq id='c' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                   "<x xmlns='jabber:x:data' type='cancel'/></query></iq>");
    EXPECT_HAS(ROMEO, "type='unavailable'", "<destroy/>", "<status code='110'/>");
    EXPECT(ROMEO, "<iq from='" R "' id='c' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    CHECK_INT(0, muc_room_count(m));
    /* a configured room is not destroyed by a later cancel */
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    feed(m, ROMEO, INSTANT("i2"));
    feed(m, ROMEO, "<iq id='c2' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                   "<x xmlns='jabber:x:data' type='cancel'/></query></iq>");
    EXPECT(ROMEO, "<iq from='" R "' id='c2' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    CHECK_INT(1, muc_room_count(m));
    muc_service_free(m);
    clear_recs();

    /* a room nobody configures goes when its time is up, not before */
    m = locking_service(0);
    wakes = 0;
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    clear_recs();
    time_t t0 = time(NULL);
    muc_service_tick(m, t0 + 290);
    EXPECT_END();
    CHECK_INT(1, muc_room_count(m));
    CHECK_INT(2, wakes);    /* asked again for what is left of its time */
    muc_service_tick(m, t0 + 301);
    EXPECT_HAS(ROMEO, "type='unavailable'", "<destroy><reason>The room was not configured in time</reason></destroy>",
               "<status code='110'/>");
    EXPECT_END();
    CHECK_INT(0, muc_room_count(m));
    muc_service_free(m);
    clear_recs();
}

/* XEP-0421: one stable, anonymous id per person and room, on presence and messages */
static const char *oid_in(const char *rec, char *out, size_t n)
{
    const char *p = strstr(rec, "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='");
    out[0] = 0;
    if (!p) return out;
    p = strchr(p, '\'') + 1;
    p = strchr(p, '\'') + 1;
    p = strchr(p, '\'') + 1;
    snprintf(out, n, "%.*s", (int)(strchr(p, '\'') - p), p);
    return out;
}

static void test_occupant_id(void)
{
    char a[64], b[64], c[64], d[64];
    muc_config cfg = test_config(1);
    cfg.default_persistent = 1;
    muc_service *m = service_from(&cfg);
    keep_oid = 1;
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    oid_in(recs[0], a, sizeof a);
    CHECK(strlen(a) == 22, "romeo's self-presence has a 22-character occupant-id: %s", recs[0]);
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    oid_in(recs[1], b, sizeof b);       /* juliet's self-presence */
    CHECK(strlen(b) == 22 && strcmp(a, b), "juliet's id differs from romeo's: %s / %s", a, b);
    /* a forged id from the client is replaced by the room's */
    feed(m, ROMEO, "<message to='" R "' type='groupchat'><body>hi</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>");
    CHECK(nrecs == 2 && !strstr(recs[0], "forged") && !strcmp(oid_in(recs[0], c, sizeof c), a),
          "the groupchat message carries romeo's id only, got %s", nrecs ? recs[0] : "nothing");
    feed(m, JULIET, "<presence to='" R "/Juliet'><show>away</show><occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></presence>");
    CHECK(nrecs == 2 && !strstr(recs[0], "forged") && !strcmp(oid_in(recs[0], c, sizeof c), b),
          "juliet's presence carries her own id only, got %s", nrecs ? recs[0] : "nothing");
    /* the same person from another device, and under another nick, keeps the id */
    feed(m, JULIET, "<presence to='" R "/Jules'/>");
    CHECK(!strcmp(oid_in(recs[nrecs - 1], c, sizeof c), b), "a new nick keeps the id: %s", recs[nrecs - 1]);
    feed(m, ROMEO, "<message to='" R "/Jules' type='chat'><body>psst</body></message>");
    CHECK(nrecs == 1 && !strcmp(oid_in(recs[0], c, sizeof c), a), "a private message carries the sender's id: %s",
          nrecs ? recs[0] : "nothing");
    feed(m, NURSE, DISCO_INFO("d"));
    EXPECT_HAS(NURSE, "<feature var='urn:xmpp:occupant-id:0'/>");
    /* the room keeps its secret: after a restart the same person has the same id */
    feed(m, ROMEO, CONFIG_SET("s", ""));
    muc_service_free(m);
    m = service_from(&cfg);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    CHECK(!strcmp(oid_in(recs[0], d, sizeof d), a), "romeo's id after a restart: %s, was %s", d, a);
    keep_oid = 0;
    feed(m, ROMEO, "<iq id='x' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>");
    muc_service_free(m);
    clear_recs();
}

/* §9.5 who may see the member list, and §7.10 unregistering */
#define MEMBERS_GET(id) "<iq id='" id "' to='" R "' type='get'><query xmlns='http://jabber.org/protocol/muc#admin'>" \
                        "<item affiliation='member'/></query></iq>"
#define UNREGISTER(id) "<iq id='" id "' to='" R "' type='set'><query xmlns='jabber:iq:register'><remove/></query></iq>"
static void test_memberlist_unregister(void)
{
    muc_service *m = service(1);
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    feed(m, ROMEO, "<iq id='a' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='member' jid='juliet@localhost'/></query></iq>");
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
    /* default: moderators only */
    feed(m, JULIET, MEMBERS_GET("l1"));
    EXPECT(JULIET, "<iq from='" R "' id='l1' type='error' to='" JULIET "'><error type='auth' by='" R "'>"
                   "<forbidden xmlns='" STZ "'/></error></iq>");
    EXPECT_END();
    feed(m, ROMEO, MEMBERS_GET("l2"));
    EXPECT(ROMEO, "<iq from='" R "' id='l2' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                  "<item affiliation='member' jid='juliet@localhost'/></query></iq>");
    EXPECT_END();
    /* real JIDs public: members may see it */
    feed(m, ROMEO, CONFIG_SET("w", "<field var='muc#roomconfig_whois'><value>anyone</value></field>"));
    clear_recs();
    feed(m, JULIET, MEMBERS_GET("l3"));
    EXPECT(JULIET, "<iq from='" R "' id='l3' type='result' to='" JULIET "'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='member' jid='juliet@localhost'/></query></iq>");
    EXPECT_END();
    /* ... but not someone who is neither member nor allowed by role */
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    clear_recs();
    feed(m, NURSE, MEMBERS_GET("l4"));
    EXPECT_HAS(NURSE, "type='error'", "<forbidden");
    EXPECT_END();
    /* getmemberlist naming participants lets the nurse see it */
    feed(m, ROMEO, CONFIG_SET("g", "<field var='muc#roomconfig_getmemberlist'><value>moderator</value><value>participant</value></field>"));
    clear_recs();
    feed(m, NURSE, MEMBERS_GET("l5"));
    EXPECT_HAS(NURSE, "type='result'", "<item affiliation='member' jid='juliet@localhost'/>");
    EXPECT_END();
    feed(m, NURSE, "<presence type='unavailable' to='" R "/Nurse'/>");
    /* members only: Juliet unregisters, is a member no more and leaves with 321 */
    feed(m, ROMEO, CONFIG_SET("mo", "<field var='muc#roomconfig_membersonly'><value>1</value></field>"));
    clear_recs();
    feed(m, JULIET, UNREGISTER("u1"));
    EXPECT_HAS(ROMEO, "from='" R "/Juliet' type='unavailable'", "affiliation='none' role='none'", "<status code='321'/>");
    EXPECT_HAS(JULIET, "from='" R "/Juliet' type='unavailable'", "<status code='321'/>", "<status code='110'/>");
    EXPECT(JULIET, "<iq from='" R "' id='u1' type='result' to='" JULIET "'/>");
    EXPECT_END();
    feed(m, ROMEO, MEMBERS_GET("l6"));
    EXPECT(ROMEO, "<iq from='" R "' id='l6' type='result' to='" ROMEO "'><query xmlns='http://jabber.org/protocol/muc#admin'/></iq>");
    EXPECT_END();
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    EXPECT_HAS(JULIET, "type='error'", "<registration-required");
    EXPECT_END();
    /* an open room: she stays, as affiliation none */
    feed(m, ROMEO, CONFIG_SET("mo2", "<field var='muc#roomconfig_membersonly'><value>0</value></field>"));
    feed(m, ROMEO, "<iq id='a2' to='" R "' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                   "<item affiliation='member' jid='juliet@localhost'/></query></iq>");
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    clear_recs();
    feed(m, JULIET, UNREGISTER("u2"));
    EXPECT_HAS(ROMEO, "from='" R "/Juliet'", "affiliation='none' role='participant'");
    EXPECT_HAS(JULIET, "from='" R "/Juliet'", "affiliation='none' role='participant'", "<status code='110'/>");
    EXPECT_HAS(JULIET, "id='u2' type='result'");
    EXPECT_END();
    /* the owner unregistering keeps ownership */
    feed(m, ROMEO, UNREGISTER("u3"));
    EXPECT(ROMEO, "<iq from='" R "' id='u3' type='result' to='" ROMEO "'/>");
    EXPECT_END();
    feed(m, ROMEO, MEMBERS_GET("l7"));
    EXPECT_HAS(ROMEO, "type='result'");
    muc_service_free(m);
    clear_recs();
}

/* §8.6 voice requests in a moderated room */
#define VOICE_FORM(extra) "<message to='" R "'><x xmlns='jabber:x:data' type='submit'>" \
    "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>" \
    "<field var='muc#role'><value>participant</value></field>" extra "</x></message>"
static void test_voice_request(void)
{
    muc_service *m = service(1);
    create_room_with_juliet(m);
    /* not moderated: nobody is a visitor, a request is out of place */
    feed(m, JULIET, VOICE_FORM(""));
    EXPECT_HAS(JULIET, "type='error'", "<not-acceptable");
    EXPECT_END();
    feed(m, ROMEO, CONFIG_SET("mod", "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>"));
    feed(m, NURSE, JOIN(NURSE, "Nurse"));
    clear_recs();
    /* a visitor asks: each moderator gets the form */
    feed(m, NURSE, VOICE_FORM(""));
    EXPECT(ROMEO, "<message from='" R "' to='" ROMEO "'><x xmlns='jabber:x:data' type='form'><title>Voice request</title>"
                  "<instructions>Grant this occupant voice in the room?</instructions>"
                  "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#request</value></field>"
                  "<field var='muc#role' type='list-single' label='Requested role'><value>participant</value></field>"
                  "<field var='muc#jid' type='jid-single' label='User ID'><value>" NURSE "</value></field>"
                  "<field var='muc#roomnick' type='text-single' label='Room nickname'><value>Nurse</value></field>"
                  "<field var='muc#request_allow' type='boolean' label='Grant voice to this person?'><value>false</value></field>"
                  "</x></message>");
    EXPECT_END();
    /* a malformed form, and a request for another role: bad-request */
    feed(m, NURSE, "<message to='" R "'><x xmlns='jabber:x:data' type='form'>"
                   "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field></x></message>");
    EXPECT_HAS(NURSE, "type='error'", "<bad-request");
    EXPECT_END();
    feed(m, NURSE, "<message to='" R "'><x xmlns='jabber:x:data' type='submit'>"
                   "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
                   "<field var='muc#role'><value>moderator</value></field></x></message>");
    EXPECT_HAS(NURSE, "type='error'", "<bad-request");
    EXPECT_END();
    /* a participant cannot approve */
    feed(m, JULIET, VOICE_FORM("<field var='muc#roomnick'><value>Nurse</value></field>"
                               "<field var='muc#request_allow'><value>true</value></field>"));
    EXPECT_HAS(JULIET, "type='error'", "<forbidden");
    EXPECT_END();
    /* declined: nothing happens */
    feed(m, ROMEO, VOICE_FORM("<field var='muc#roomnick'><value>Nurse</value></field>"
                              "<field var='muc#request_allow'><value>false</value></field>"));
    EXPECT_END();
    /* approved: the nurse is a participant, and everyone hears it */
    feed(m, ROMEO, VOICE_FORM("<field var='muc#roomnick'><value>Nurse</value></field>"
                              "<field var='muc#request_allow'><value>true</value></field>"));
    EXPECT_HAS(ROMEO, "from='" R "/Nurse'", "role='participant'", "<actor nick='Romeo' jid='romeo@localhost'/>");
    EXPECT_HAS(JULIET, "from='" R "/Nurse'", "role='participant'", "<actor nick='Romeo'/>");
    EXPECT_HAS(NURSE, "from='" R "/Nurse'", "role='participant'", "<status code='110'/>");
    EXPECT_END();
    feed(m, NURSE, "<message to='" R "' type='groupchat'><body>thank you</body></message>");
    EXPECT_HAS(ROMEO, "<body>thank you</body>");
    /* asking again as a participant: out of place */
    clear_recs();
    feed(m, NURSE, VOICE_FORM(""));
    EXPECT_HAS(NURSE, "type='error'", "<not-acceptable");
    EXPECT_END();
    /* from outside the room */
    feed(m, "friar@localhost/f", VOICE_FORM(""));
    EXPECT_HAS("friar@localhost/f", "type='error'", "<not-acceptable");
    EXPECT_END();
    muc_service_free(m);
    clear_recs();
}

/* XEP-0313: a persistent room's archive, paged with RSM, kept across restarts */
#define MAM_Q(id, inner) "<iq id='" id "' to='" R "' type='set'><query xmlns='urn:xmpp:mam:2' queryid='q" id "'>" inner "</query></iq>"
#define MAM_FORM(fields) "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>" fields "</x>"
#define RSM(inner) "<set xmlns='http://jabber.org/protocol/rsm'>" inner "</set>"

static int count_results(const char *to)
{
    int n = 0;
    for (int i = 0; i < nrecs; i++)
        n += !strncmp(recs[i], to, strlen(to)) && strstr(recs[i], "<result xmlns='urn:xmpp:mam:2'") != NULL;
    return n;
}

/* the n-th delivery that holds s, or "" */
static const char *rec_with(const char *s)
{
    for (int i = 0; i < nrecs; i++) if (strstr(recs[i], s)) return recs[i];
    return "";
}

/* the text between a and the next b in rec, into out */
static const char *between(const char *rec, const char *a, const char *b, char *out, size_t n)
{
    const char *p = strstr(rec, a), *q = p ? strstr(p + strlen(a), b) : NULL;
    snprintf(out, n, "%.*s", q ? (int)(q - p - strlen(a)) : 0, q ? p + strlen(a) : "");
    return out;
}

static void test_mam(void)
{
    char id1[32], id2[32], last[32];
    muc_config cfg = test_config(1);
    cfg.default_persistent = 1;
    cfg.archive_max = 100;
    muc_service *m = service_from(&cfg);
    create_room_with_juliet(m);
    const char *bodies[] = { "one", "two", "three", "four", "five" };
    for (int i = 0; i < 5; i++) {
        char msg[256];
        snprintf(msg, sizeof msg, "<message to='" R "' type='groupchat'><body>%s</body>"
                 "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='" R "'/></message>", bodies[i]);
        feed(m, i % 2 ? JULIET : ROMEO, msg);
        CHECK(nrecs == 2 && strstr(recs[0], "<stanza-id xmlns='urn:xmpp:sid:0' id='") && strstr(recs[0], " by='" R "'/>")
              && !strstr(recs[0], "forged") && strstr(recs[1], "<stanza-id"), "message %d carries the room's stanza-id only: %s",
              i, nrecs ? recs[0] : "nothing");
        if (i == 0) between(recs[0], "<stanza-id xmlns='urn:xmpp:sid:0' id='", "'", id1, sizeof id1);
    }
    /* the search form */
    feed(m, ROMEO, "<iq id='f' to='" R "' type='get'><query xmlns='urn:xmpp:mam:2'/></iq>");
    EXPECT_HAS(ROMEO, "type='result'", "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>",
               "<field var='with' type='jid-single'/>", "<field var='start' type='text-single'/>");
    EXPECT_END();
    /* everything: five results in order, then the fin */
    feed(m, ROMEO, MAM_Q("1", ""));
    CHECK_INT(5, count_results(ROMEO));
    CHECK(nrecs == 6 && strstr(recs[0], "<result xmlns='urn:xmpp:mam:2' queryid='q1' id='") &&
          strstr(recs[0], "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='") &&
          strstr(recs[0], "<message xmlns='jabber:client' type='groupchat' from='" R "/Romeo'><body>one</body>") &&
          strstr(recs[4], "<body>five</body>"), "results in order: %s", nrecs ? recs[0] : "nothing");
    CHECK(strstr(recs[0], id1) != NULL, "the first result's id is the stanza-id the room gave (%s): %s", id1, recs[0]);
    CHECK(strstr(recs[5], "<fin xmlns='urn:xmpp:mam:2' complete='true'><set xmlns='http://jabber.org/protocol/rsm'><first index='0'>")
          && strstr(recs[5], "<count>5</count>"), "fin: %s", recs[5]);
    /* a page of two, then the next */
    feed(m, ROMEO, MAM_Q("2", RSM("<max>2</max>")));
    CHECK_INT(2, count_results(ROMEO));
    CHECK(strstr(rec_with("<fin"), "complete") == NULL, "a first page of two is not complete: %s", rec_with("<fin"));
    between(rec_with("<fin"), "<last>", "</last>", last, sizeof last);
    char q[512];
    snprintf(q, sizeof q, "<iq id='3' to='" R "' type='set'><query xmlns='urn:xmpp:mam:2'>" RSM("<max>2</max><after>%s</after>") "</query></iq>", last);
    feed(m, ROMEO, q);
    CHECK(count_results(ROMEO) == 2 && strstr(recs[0], "<body>three</body>") && strstr(rec_with("<fin"), "<first index='2'>"),
          "the second page: three and four, from index 2: %s", nrecs ? recs[0] : "nothing");
    /* the last page */
    feed(m, ROMEO, MAM_Q("4", RSM("<max>2</max><before/>")));
    CHECK(count_results(ROMEO) == 2 && strstr(recs[0], "<body>four</body>") && strstr(recs[1], "<body>five</body>") &&
          strstr(rec_with("<fin"), "<first index='3'>"), "the last page: four and five: %s", nrecs ? recs[0] : "nothing");
    /* with: Juliet's messages */
    feed(m, ROMEO, MAM_Q("5", MAM_FORM("<field var='with'><value>" R "/Juliet</value></field>")));
    CHECK(count_results(ROMEO) == 2 && strstr(recs[0], "<body>two</body>") && strstr(rec_with("<fin"), "<count>2</count>"),
          "with Juliet: two and four: %s", nrecs ? recs[0] : "nothing");
    /* start after everything: nothing, complete */
    feed(m, ROMEO, MAM_Q("6", MAM_FORM("<field var='start'><value>2999-01-01T00:00:00Z</value></field>")));
    EXPECT(ROMEO, "<iq from='" R "' id='6' type='result' to='" ROMEO "'><fin xmlns='urn:xmpp:mam:2' complete='true'>"
                  "<set xmlns='http://jabber.org/protocol/rsm'><count>0</count></set></fin></iq>");
    EXPECT_END();
    /* bad input: each gets its error, nothing changes */
    feed(m, ROMEO, MAM_Q("b1", MAM_FORM("<field var='start'><value>2026-13-01T00:00:00Z</value></field>")));
    EXPECT(ROMEO, "<iq from='" R "' id='b1' type='error' to='" ROMEO "'><error type='modify' by='" R "'><bad-request xmlns='" STZ "'/>"
                  "<text xmlns='" STZ "'>start is not a date-time</text></error></iq>");
    feed(m, ROMEO, MAM_Q("b2", MAM_FORM("<field var='end'><value>yesterday</value></field>")));
    EXPECT_HAS(ROMEO, "type='error'", "<bad-request", "end is not a date-time");
    feed(m, ROMEO, MAM_Q("b3", RSM("<max>-1</max>")));
    EXPECT_HAS(ROMEO, "type='error'", "<bad-request", "max is not a number");
    feed(m, ROMEO, MAM_Q("b4", RSM("<after>00000000000000ff</after>")));
    EXPECT_HAS(ROMEO, "type='error'", "<error type='cancel'", "<item-not-found");
    feed(m, ROMEO, MAM_Q("b5", RSM("<before>not-an-id</before>")));
    EXPECT_HAS(ROMEO, "type='error'", "<item-not-found");
    feed(m, ROMEO, MAM_Q("b6", MAM_FORM("<field var='fulltext'><value>x</value></field>")));
    EXPECT_HAS(ROMEO, "type='error'", "<bad-request", "unsupported field");
    feed(m, ROMEO, MAM_Q("b7", "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x>"));
    EXPECT_HAS(ROMEO, "type='error'", "<bad-request");
    feed(m, NURSE, MAM_Q("b8", ""));
    EXPECT_HAS(NURSE, "type='error'", "<forbidden");
    EXPECT_END();
    /* a huge max is lowered, not refused */
    feed(m, ROMEO, MAM_Q("7", RSM("<max>400000000000000000000</max>")));
    CHECK_INT(5, count_results(ROMEO));
    /* after a restart: the history comes from the archive, the archive is whole, ids go on */
    muc_service_free(m);
    clear_recs();
    m = service_from(&cfg);
    feed(m, JULIET, JOIN(JULIET, "Juliet"));
    CHECK(nrecs == 7 && strstr(recs[1], "<body>one</body>") && strstr(recs[5], "<body>five</body>") &&
          strstr(recs[5], "<delay xmlns='urn:xmpp:delay' from='" R "' stamp='") && strstr(recs[5], "<stanza-id"),
          "history after a restart: five messages with delay and stanza-id, got %d: %s", nrecs, nrecs > 1 ? recs[1] : "");
    feed(m, JULIET, "<message to='" R "' type='groupchat'><body>six</body></message>");
    between(recs[0], "<stanza-id xmlns='urn:xmpp:sid:0' id='", "'", id2, sizeof id2);
    CHECK(strcmp(id2, id1) > 0, "ids go on after a restart: %s after %s", id2, id1);
    feed(m, JULIET, MAM_Q("9", ""));
    CHECK(count_results(JULIET) == 6 && strstr(rec_with("<fin"), "<count>6</count>"), "six archived: %s", rec_with("<fin"));
    /* disco says so */
    feed(m, NURSE, DISCO_INFO("d"));
    EXPECT_HAS(NURSE, "<feature var='urn:xmpp:mam:2'/><feature var='urn:xmpp:sid:0'/>");
    /* made temporary, the room keeps no archive */
    feed(m, JULIET, "<presence type='unavailable' to='" R "/Juliet'/>");
    feed(m, ROMEO, JOIN(ROMEO, "Romeo"));
    feed(m, ROMEO, CONFIG_SET("t", "<field var='muc#roomconfig_persistentroom'><value>0</value></field>"));
    char path[256];
    snprintf(path, sizeof path, "%s/rooms/room.archive", data_dir);
    CHECK(access(path, F_OK) != 0, "%s removed with the room's persistence", path);
    feed(m, ROMEO, MAM_Q("10", ""));
    EXPECT_HAS(ROMEO, "type='error'", "<feature-not-implemented");
    EXPECT_END();
    muc_service_free(m);
    clear_recs();
}

int main(int argc, char **argv)
{
    verbose = argc > 1;
    snprintf(data_dir, sizeof data_dir, "/tmp/muctest.XXXXXX");
    if (!mkdtemp(data_dir)) { perror("mkdtemp"); return 1; }
    in_arena = xml_arena_new();
    test_create_and_join();
    test_password();
    test_password_form();
    test_bounces();
    test_nick_precis();
    test_join_errors();
    test_messages();
    test_nick_and_sessions();
    test_history_params();
    test_config_form();
    test_invites_and_destroy();
    test_persistence();
    test_rooms_per_user();
    test_failed_save_config();
    test_failed_unsave();
    test_failed_save_affiliations();
    test_failed_save_subject();
    test_failed_save_register();
    test_failed_save_invite();
    test_failed_save_create();
    test_set_config();
    test_room_locking();
    test_occupant_id();
    test_memberlist_unregister();
    test_voice_request();
    test_mam();
    clear_recs();
    xml_arena_free(in_arena);
    rm_rf(data_dir);
    return check_summary("muc");
}
