/* test_muc.c - the multi-user chat service driven through a fake host that records every delivery. */
#include "muc.h"
#include "xml.h"
#include "store.h"
#include "check.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static muc_service *service(int create_rooms)
{
    muc_config cfg = {
        .domain = "conference.localhost", .server_domain = "localhost", .data_dir = data_dir,
        .create_rooms = create_rooms, .max_rooms = 5, .max_occupants = 4, .max_history = 20,
        .default_history = 10, .default_persistent = 0, .default_public = 1,
    };
    static muc_host host = { NULL, fake_deliver, fake_is_admin };
    char err[512] = "";
    muc_service *m = muc_service_new(&cfg, &host, err, sizeof err);
    CHECK(m != NULL, "muc_service_new: %s", err);
    return m;
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

int main(int argc, char **argv)
{
    verbose = argc > 1;
    snprintf(data_dir, sizeof data_dir, "/tmp/muctest.XXXXXX");
    if (!mkdtemp(data_dir)) { perror("mkdtemp"); return 1; }
    in_arena = xml_arena_new();
    test_create_and_join();
    clear_recs();
    xml_arena_free(in_arena);
    rm_rf(data_dir);
    return check_summary("muc");
}
