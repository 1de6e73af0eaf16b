/* test_admin.c - the admin socket: admin.c's parser and formatter fed lines directly (a stub host), then a
 * real server driven through `couplet ctl` and raw Unix sockets, the command-line account tools around it
 * (import checks, passwd asked twice on a terminal, passwd --logout), and the switch to `user`. */
#include "check.h"
#include "xmpp_test.h"

#include "admin.h"

#include <grp.h>
#include <pwd.h>
#include <sys/un.h>

/* ==== unit: admin.c with a stub host ==== */

/* tests/run.sh --valgrind starts the server through a wrapper script named valgrind-couplet */
static int under_valgrind(void) {
    const char *bin = getenv("COUPLET_BIN");
    return bin && strstr(bin, "valgrind") != NULL;
}

static struct {
    const char *text;               /* what every string the host reports says */
    unsigned long nsessions;
    char kicked[256], reason[256];
    int kicks, stops, reloads, destroyed;
} stub;

static void s_status(void *ud, admin_status *st) {
    st->version = stub.text;
    st->started = 1000;
    st->now = 1000 + 86400 + 3600 + 60 + 1;
    st->connections = 3;
    st->negotiating = 1;
    st->sessions = 2;
    st->rss_bytes = 4 * 1024 * 1024;
}

static void s_sessions(void *ud, int (*each)(void *, const admin_session *), void *ctx) {
    for (unsigned long i = 0; i < stub.nsessions; i++) {
        admin_session s = {stub.text, "127.0.0.1", i ? NULL : "TLSv1.3", 0};
        if (each(ctx, &s)) return;
    }
}

static long s_kick(void *ud, const char *jid, const char *reason, char *err, size_t errlen) {
    snprintf(stub.kicked, sizeof stub.kicked, "%s", jid);
    snprintf(stub.reason, sizeof stub.reason, "%s", reason ? reason : "(none)");
    stub.kicks++;
    if (strchr(jid, '/')) return 1;
    snprintf(err, errlen, "no such thing");
    return strchr(jid, '@') ? 2 : -1;
}

static void s_rooms(void *ud, int (*each)(void *, const admin_room *), void *ctx) {
    admin_room r = {"lobby@conference.localhost", stub.text, "", "", 2, 100, 20, 1, 1, 0, 0, 0, 0};
    each(ctx, &r);
}

static int s_room_info(void *ud, const char *name, admin_room *out) {
    if (strcmp(name, "lobby")) return -1;
    *out = (admin_room){"lobby@conference.localhost", "Lobby", "a place", stub.text, 1, 100, 20, 0, 0, 1, 0, 1, 0};
    return 0;
}

static void s_room_occupants(void *ud, const char *name, int (*each)(void *, const admin_occupant *), void *ctx) {
    admin_occupant o = {"Romeo", "romeo@localhost", "moderator", "owner", 2};
    each(ctx, &o);
}

static int s_destroy(void *ud, const char *name, const char *reason, char *err, size_t errlen) {
    stub.destroyed++;
    snprintf(stub.reason, sizeof stub.reason, "%s", reason ? reason : "(none)");
    return 0;
}

static int s_reload(void *ud, char *msg, size_t msglen) {
    stub.reloads++;
    snprintf(msg, msglen, "reloaded");
    return 0;
}

static void s_stop(void *ud) {
    stub.stops++;
}

static const admin_host stub_host = {NULL, s_status, s_sessions, s_kick, s_rooms, s_room_info, s_room_occupants,
                                     s_destroy, s_reload, s_stop};

/* feeds text (len bytes) to a, returns the output as a string (static buffer) and the close flag */
static const char *feed(admin_conn *a, const char *text, size_t len, int *closed) {
    static char out[1 << 20];
    size_t n;
    int r = admin_conn_feed(a, text, len);
    const char *o = admin_conn_output(a, &n);
    if (closed) *closed = r == ADMIN_CLOSE;
    snprintf(out, sizeof out, "%.*s", (int)n, o);
    return out;
}

/* a fresh connection, one line in, its output out */
static const char *one(const char *line, int *closed) {
    static char copy[1 << 20];
    admin_conn *a = admin_conn_new(&stub_host);
    if (!a) return "";
    snprintf(copy, sizeof copy, "%s", feed(a, line, strlen(line), closed));
    admin_conn_free(a);
    return copy;
}

static void test_parser(void) {
    int closed = -1;
    stub.text = "0.1";
    CHECK_STR("error: unknown command 'frob' (try help)\n.\n", one("frob\n", &closed));
    CHECK_INT(0, closed);
    CHECK_STR("error: no command (try help)\n.\n", one("\n", NULL));
    CHECK_STR("error: no command (try help)\n.\n", one("  \t \n", NULL));
    CHECK_STR("error: no command (try help)\n{\"ok\":false,\"error\":\"no command (try help)\"}\n.\n", one("json\n", NULL));
    /* argument counts from the table */
    static const char *const bad[] = {"status now\n", "kick\n", "room\n", "room a b\n", "destroy\n", "rooms x\n",
                                      "stop please\n", "reload x\n", "sessions all\n", "help me\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *o = one(bad[i], &closed);
        CHECK(!strncmp(o, "error: usage: ", 14) && !closed, "%s-> %s", bad[i], o);
    }
    CHECK_STR("error: usage: kick JID [REASON]\n.\n", one("kick\n", NULL));
    /* the reason is the rest of the line, inner spaces kept, outer ones not */
    stub.kicks = 0;
    CHECK_STR("ok\n1 session ended: romeo@localhost/x\n.\n", one("kick  romeo@localhost/x \t too many  messages \t\r\n", NULL));
    CHECK_STR("romeo@localhost/x", stub.kicked);
    CHECK_STR("too many  messages", stub.reason);
    CHECK_STR("ok\n2 sessions ended: romeo@localhost\n.\n", one("kick romeo@localhost\n", NULL));
    CHECK_STR("(none)", stub.reason);
    CHECK_STR("error: no such thing\n.\n", one("kick nobody\n", NULL));
    CHECK_STR("ok\n{\"ok\":true,\"jid\":\"romeo@localhost\",\"ended\":2}\n.\n", one("json kick romeo@localhost\n", NULL));
    CHECK_INT(4, stub.kicks);
    /* commands are case-sensitive words; "json" only counts first */
    CHECK(!strncmp(one("STATUS\n", NULL), "error: unknown command", 22), "upper case");
    CHECK(!strncmp(one("status json\n", NULL), "error: usage", 12), "json after the command");
    CHECK_STR("ok\ndestroyed lobby\n.\n", one("destroy lobby\n", NULL));
    CHECK_STR("(none)", stub.reason);
    CHECK_STR("ok\n{\"ok\":true,\"destroyed\":\"lobby\"}\n.\n", one("json destroy lobby moving out\n", NULL));
    CHECK_STR("moving out", stub.reason);
    CHECK_STR("ok\nreloaded\n.\n", one("reload\n", NULL));
    CHECK_STR("ok\n{\"ok\":true,\"stopping\":true}\n.\n", one("json stop\n", NULL));
    CHECK_INT(1, stub.stops);
    CHECK_STR("error: no room kitchen\n.\n", one("room kitchen\n", NULL));
}

static void test_framing(void) {
    int closed = -1;
    admin_conn *a = admin_conn_new(&stub_host);
    if (!a) return;
    /* a line in pieces, then two lines in one read */
    CHECK_STR("", feed(a, "sta", 3, &closed));
    CHECK_INT(1, admin_conn_partial(a));
    const char *o = feed(a, "tus\nrooms\nsess", 14, &closed);
    CHECK(!strncmp(o, "ok\nversion", 10) && strstr(o, ".\nok\nlobby@conference.localhost  2 occupants") &&
          !strcmp(o + strlen(o) - 2, ".\n"), "two answers: %s", o);
    CHECK_INT(1, admin_conn_partial(a));
    CHECK_INT(0, closed);
    admin_conn_free(a);

    /* 1023 bytes before the newline is the longest line; one more and the connection ends */
    char line[ADMIN_LINE_MAX + 2];
    memset(line, 'x', sizeof line);
    line[ADMIN_LINE_MAX - 1] = '\n';
    line[ADMIN_LINE_MAX] = 0;
    o = one(line, &closed);
    CHECK(!strncmp(o, "error: unknown command 'xxx", 27) && !closed, "1023 bytes: %.60s", o);
    line[ADMIN_LINE_MAX - 1] = 'x';
    line[ADMIN_LINE_MAX] = '\n';
    line[ADMIN_LINE_MAX + 1] = 0;
    CHECK_STR("error: line too long (at most 1023 bytes before the newline)\n.\n", one(line, &closed));
    CHECK_INT(1, closed);
    /* cut off without a newline too: no need to wait for one */
    a = admin_conn_new(&stub_host);
    if (!a) return;
    for (int i = 0; i < 3; i++) o = feed(a, line, 400, &closed);
    CHECK(!strncmp(o, "error: line too long", 20) && closed, "a line that never ends: %s", o);
    CHECK_STR("", feed(a, "status\n", 7, &closed));     /* nothing more once closing */
    CHECK_INT(1, closed);
    admin_conn_free(a);

    /* garbage: an error, then the end of the connection; the command before it is answered */
    static const struct { const char *in; size_t len; const char *why; } garbage[] = {
        {"status\nsta\0tus\n", 15, "NUL byte in the line"},
        {"status\xff\n", 8, "the line is not UTF-8"},
        {"status \xc0\xaf\n", 10, "the line is not UTF-8"},          /* overlong '/' */
        {"status \xed\xa0\x80\n", 11, "the line is not UTF-8"},      /* a surrogate */
        {"status \xf4\x90\x80\x80\n", 12, "the line is not UTF-8"},  /* past U+10FFFF */
        {"sta\x1btus\n", 8, "control character in the line"},
        {"\x7f\n", 2, "control character in the line"},
    };
    for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) {
        a = admin_conn_new(&stub_host);
        if (!a) return;
        char want[128];
        snprintf(want, sizeof want, "error: %s\n.\n", garbage[i].why);
        o = feed(a, garbage[i].in, garbage[i].len, &closed);
        CHECK(closed && strlen(o) >= strlen(want) && !strcmp(o + strlen(o) - strlen(want), want),
              "garbage %zu: expected the answer to end with %s, got %s", i, want, o);
        CHECK(i != 0 || !strncmp(o, "ok\n", 3), "the good line before the garbage is answered: %s", o);
        admin_conn_free(a);
    }
    /* valid UTF-8 is fine anywhere: it is just an unknown command here */
    CHECK(!strncmp(one("caf\xc3\xa9 \xf0\x9f\x98\x80\n", &closed), "error: unknown command 'caf\xc3\xa9'", 30) &&
          !closed, "UTF-8 command");

    a = admin_conn_new(&stub_host);
    if (!a) return;
    admin_conn_refuse(a, "permission denied");
    CHECK_STR("error: permission denied\n.\n", admin_conn_output(a, &(size_t){0}));
    CHECK_STR("", feed(a, "status\n", 7, &closed));
    CHECK_INT(1, closed);
    admin_conn_free(a);
}

static void test_formats(void) {
    /* text: control characters and bytes that are not UTF-8 become '?'; a line starting with '.' is stuffed */
    stub.text = "a\nb\x01\xff\"\\\xc3\xa9";
    stub.nsessions = 2;
    CHECK_STR("ok\na?b??\"\\\xc3\xa9  127.0.0.1  since 1970-01-01T00:00:00Z  TLSv1.3\n"
              "a?b??\"\\\xc3\xa9  127.0.0.1  since 1970-01-01T00:00:00Z  no TLS\n2 sessions\n.\n",
              one("sessions\n", NULL));
    /* JSON: quotes, backslashes and control characters escaped, not-UTF-8 as U+FFFD, UTF-8 kept */
    CHECK_STR("ok\n{\"ok\":true,\"sessions\":[{\"jid\":\"a\\u000ab\\u0001\\ufffd\\\"\\\\\xc3\xa9\",\"peer\":\"127.0.0.1\","
              "\"since\":\"1970-01-01T00:00:00Z\",\"tls\":\"TLSv1.3\"},{\"jid\":\"a\\u000ab\\u0001\\ufffd\\\"\\\\\xc3\xa9\","
              "\"peer\":\"127.0.0.1\",\"since\":\"1970-01-01T00:00:00Z\",\"tls\":null}],\"count\":2,\"truncated\":false}\n.\n",
              one("json sessions\n", NULL));
    stub.text = ".hidden";
    stub.nsessions = 1;
    CHECK_STR("ok\n..hidden  127.0.0.1  since 1970-01-01T00:00:00Z  TLSv1.3\n1 sessions\n.\n", one("sessions\n", NULL));
    stub.text = "\n.\n";     /* a value cannot forge the terminator */
    CHECK_STR("ok\n?.?  127.0.0.1  since 1970-01-01T00:00:00Z  TLSv1.3\n1 sessions\n.\n", one("sessions\n", NULL));
    /* long lists stop at ADMIN_LIST_MAX and say how many more there are */
    stub.text = "x";
    stub.nsessions = ADMIN_LIST_MAX + 3;
    const char *o = one("sessions\n", NULL);
    CHECK(strstr(o, "\nand 3 more, not listed\n.\n") != NULL, "truncated list: %s", o + strlen(o) - 60);
    size_t lines = 0;
    for (const char *p = o; *p; p++) lines += *p == '\n';
    CHECK_INT(ADMIN_LIST_MAX + 3, lines);     /* ok, the listed ones, the count line, the terminator */
    o = one("json sessions\n", NULL);
    CHECK(strstr(o, "\"count\":5003,\"truncated\":true}") != NULL, "truncated JSON list: %s", o + strlen(o) - 60);
    stub.nsessions = 0;
    stub.text = "0.1";
    CHECK_STR("ok\nversion      0.1\nstarted      1970-01-01T00:16:40Z (up 1d 1h 1m 1s)\n"
              "connections  3 XMPP (1 negotiating, 0 with TLS), 0 admin\nsessions     2 (0 accounts)\n"
              "rooms        0\nmemory       4.0 MiB resident\n.\n", one("status\n", NULL));
    CHECK_STR("ok\n{\"ok\":true,\"version\":\"0.1\",\"started\":\"1970-01-01T00:16:40Z\",\"uptime\":90061,"
              "\"connections\":{\"xmpp\":3,\"negotiating\":1,\"encrypted\":0,\"admin\":0},\"sessions\":2,\"accounts\":0,"
              "\"rooms\":0,\"rss_bytes\":4194304}\n.\n", one("json status\n", NULL));
    CHECK_STR("ok\nroom         lobby@conference.localhost\nname         Lobby\ndescription  a place\nsubject      0.1\n"
              "settings     password, moderated\nlimits       100 occupants at most, 20 messages of history\n"
              "occupant     Romeo  romeo@localhost  moderator  owner  (2 sessions)\n1 occupants\n.\n",
              one("room lobby\n", NULL));
    CHECK_STR("ok\n{\"ok\":true,\"room\":{\"jid\":\"lobby@conference.localhost\",\"name\":\"Lobby\",\"description\":"
              "\"a place\",\"subject\":\"0.1\",\"max_users\":100,\"history\":20,\"persistent\":false,\"public\":false,"
              "\"password\":true,\"members_only\":false,\"moderated\":true,\"public_jids\":false},\"occupants\":[{\"nick\":"
              "\"Romeo\",\"jid\":\"romeo@localhost\",\"role\":\"moderator\",\"affiliation\":\"owner\",\"sessions\":2}],"
              "\"count\":1,\"truncated\":false}\n.\n", one("json room lobby\n", NULL));
    CHECK_STR("ok\nlobby@conference.localhost  2 occupants  persistent, public\n1 rooms\n.\n", one("rooms\n", NULL));
    o = one("help\n", NULL);
    CHECK(strstr(o, "\nkick JID [REASON] ") && strstr(o, "\nstop ") && !strcmp(o + strlen(o) - 2, ".\n"), "help: %s", o);
    o = one("json help\n", NULL);
    CHECK(strstr(o, "{\"name\":\"destroy\",\"usage\":\"destroy ROOM [REASON]\"") != NULL, "json help: %s", o);
}

/* ==== integration: a real server ==== */

static char conf_path[PATH_MAX + 32], sock_path[PATH_MAX + 32], out_path[PATH_MAX + 32], err_path[PATH_MAX + 32];
static char out_text[1 << 17], err_text[1 << 16];

static void slurp(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

/* `couplet -c CONF ARGS` (ARGS already shell-quoted), stdin from input ("" = none); stdout and stderr into
 * out_text and err_text. The exit status, or -1. */
static int couplet(const char *input, const char *args) {
    char cmd[PATH_MAX * 6 + 2048], in_path[PATH_MAX + 32];
    snprintf(in_path, sizeof in_path, "%s/stdin", tmpdir);
    if (write_file(in_path, input) < 0) return -1;
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' %s <'%s' >'%s' 2>'%s'", couplet_bin, conf_path, args, in_path, out_path,
             err_path);
    int st = system(cmd);
    slurp(out_path, out_text, sizeof out_text);
    slurp(err_path, err_text, sizeof err_text);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- a small JSON reader for the checks: syntax of one object, then values by key ---- */

static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    return p;
}

static const char *json_string(const char *p) {
    if (*p++ != '"') return NULL;
    for (; *p != '"'; p++) {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\' && !*++p) return NULL;
    }
    return p + 1;
}

static const char *json_list(const char *p, char close, int object, int depth) {
    p = json_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
        if (object && (!(p = json_string(json_ws(p))) || *(p = json_ws(p)) != ':')) return NULL;
        if (object) p++;
        if (!(p = json_value(p, depth + 1))) return NULL;
        p = json_ws(p);
        if (*p == close) return p + 1;
        if (*p++ != ',') return NULL;
    }
}

static const char *json_value(const char *p, int depth) {
    p = json_ws(p);
    if (depth > 16) return NULL;
    if (*p == '{') return json_list(p, '}', 1, depth);
    if (*p == '[') return json_list(p, ']', 0, depth);
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    const char *q = p + (*p == '-');
    while (*q >= '0' && *q <= '9') q++;
    return q > p ? q : NULL;
}

/* 1 if text is exactly one JSON object and a newline */
static int json_ok(const char *text) {
    const char *end = text[0] == '{' ? json_value(text, 0) : NULL;
    return end && !strcmp(end, "\n");
}

/* the number after "key": (the first such key in the document), or -1 */
static long json_num(const char *doc, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(doc, k);
    return p && p[strlen(k)] >= '0' && p[strlen(k)] <= '9' ? strtol(p + strlen(k), NULL, 10) : -1;
}

/* the string after "key": (first such key) into out, "" if none */
static const char *json_str(const char *doc, const char *key, char *out, size_t n) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":\"", key);
    const char *p = strstr(doc, k);
    out[0] = 0;
    if (p) {
        p += strlen(k);
        size_t len = strcspn(p, "\"");
        snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), p);
    }
    return out;
}

/* ---- raw admin connections ---- */

static int unix_connect(const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* sends bytes on a fresh admin connection, expects `want` in the answer and the connection closed */
static void raw_garbage(const char *what, const char *data, size_t len, const char *want) {
    char buf[4096] = "";
    size_t got = 0;
    int fd = unix_connect(sock_path);
    CHECK(fd >= 0, "%s: connect to %s: %s", what, sock_path, strerror(errno));
    if (fd < 0) return;
    send_bytes(fd, data, len);
    int closed = wait_closed(fd, buf, sizeof buf, &got, 5000);
    CHECK(closed && strstr(buf, want), "%s: expected %s and the end of the connection, got (%s) %s", what, want,
          closed ? "closed" : "open", buf);
    close(fd);
}

static int starts(const char *s, const char *prefix) {
    return !strncmp(s, prefix, strlen(prefix));
}

static int join_room(client *c, const char *room, const char *nick) {
    char xml[512];
    snprintf(xml, sizeof xml, "<presence to='%s@conference.localhost/%s'><x xmlns='http://jabber.org/protocol/muc'/>"
                              "</presence>", room, nick);
    send_str(c->fd, xml);
    if (!client_expect(c, "<subject")) return 0;
    if (!strstr(c->buf, "code='201'")) return 1;
    /* a room just created is locked until its owner accepts the defaults (an instant room, XEP-0045 §10.1.2) */
    snprintf(xml, sizeof xml, "<iq type='set' id='instant' to='%s@conference.localhost'><query "
                              "xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/>"
                              "</query></iq>", room);
    send_str(c->fd, xml);
    return client_expect(c, "id='instant' type='result'");
}

static void test_commands(void) {
    client r1, r2, j;
    char s[256];
    CHECK(client_login(&r1, "romeo", "orchard") == 0, "romeo logs in: %s", r1.buf);
    CHECK(client_login(&r2, "romeo", "balcony") == 0, "romeo logs in twice: %s", r2.buf);
    CHECK(client_login(&j, "juliet", "tomb") == 0, "juliet logs in: %s", j.buf);

    CHECK_INT(0, couplet("", "ctl status"));
    CHECK(strstr(out_text, "version      0.1\n") && strstr(out_text, "sessions     3 (2 accounts)\n") &&
          strstr(out_text, "2 admin") && strstr(out_text, "MiB resident"), "status: %s", out_text);
    CHECK_INT(0, couplet("", "ctl --json status"));
    CHECK(json_ok(out_text), "status --json is one JSON object: %s", out_text);
    CHECK_INT(3, json_num(out_text, "sessions"));
    CHECK_INT(2, json_num(out_text, "accounts"));
    CHECK_INT(3, json_num(out_text, "xmpp"));
    CHECK(json_num(out_text, "uptime") >= 0 && json_num(out_text, "rss_bytes") > 1000000, "uptime, rss: %s",
          out_text);
    CHECK_STR("0.1", json_str(out_text, "version", s, sizeof s));

    CHECK_INT(0, couplet("", "ctl sessions"));
    CHECK(strstr(out_text, "romeo@localhost/orchard  127.0.0.1  since 20") && strstr(out_text, "  no TLS\n") &&
          strstr(out_text, "juliet@localhost/tomb  ") && strstr(out_text, "\n3 sessions\n"), "sessions: %s",
          out_text);
    CHECK_INT(0, couplet("", "ctl --json sessions"));
    CHECK(json_ok(out_text) && strstr(out_text, "\"jid\":\"romeo@localhost/balcony\"") &&
          strstr(out_text, "\"peer\":\"127.0.0.1\"") && strstr(out_text, "\"tls\":null"), "sessions --json: %s",
          out_text);
    CHECK_INT(3, json_num(out_text, "count"));

    /* rooms */
    CHECK(join_room(&r1, "Lobby", "Romeo"), "romeo creates a room: %s", r1.buf);
    CHECK(join_room(&j, "lobby", "Juliet"), "juliet joins it: %s", j.buf);
    CHECK_INT(0, couplet("", "ctl rooms"));
    CHECK(strstr(out_text, "lobby@conference.localhost  2 occupants  public\n1 rooms\n") != NULL, "rooms: %s",
          out_text);
    CHECK_INT(0, couplet("", "ctl --json rooms"));
    CHECK(json_ok(out_text) && json_num(out_text, "occupants") == 2 && json_num(out_text, "count") == 1,
          "rooms --json: %s", out_text);
    CHECK_INT(0, couplet("", "ctl room Lobby@Conference.localhost"));
    CHECK(strstr(out_text, "occupant     Romeo  romeo@localhost  moderator  owner\n") &&
          strstr(out_text, "occupant     Juliet  juliet@localhost  participant  none\n"), "room: %s", out_text);
    CHECK_INT(0, couplet("", "ctl --json room lobby"));
    CHECK(json_ok(out_text) && strstr(out_text, "{\"nick\":\"Romeo\",\"jid\":\"romeo@localhost\",\"role\":\"moderator\","
                                                "\"affiliation\":\"owner\""), "room --json: %s", out_text);
    CHECK_STR("lobby@conference.localhost", json_str(out_text, "jid", s, sizeof s));
    CHECK_INT(1, couplet("", "ctl room kitchen"));
    CHECK_STR("couplet: no room kitchen\n", err_text);
    client_clear(&j);
    CHECK_INT(0, couplet("", "ctl destroy lobby 'moving to the garden'"));
    CHECK_STR("destroyed lobby\n", out_text);
    CHECK(client_expect(&j, "</presence>") && strstr(j.buf, "<destroy") &&
          strstr(j.buf, "<reason>moving to the garden</reason>"), "juliet is told the room is gone: %s", j.buf);
    CHECK_INT(0, couplet("", "ctl --json rooms"));
    CHECK_INT(0, json_num(out_text, "count"));
    CHECK_INT(1, couplet("", "ctl destroy lobby"));

    /* a room whose name starts with '.': stuffed on the socket, plain again on ctl's stdout */
    CHECK(join_room(&j, ".hidden", "Juliet"), "juliet makes a room '.hidden': %s", j.buf);
    CHECK_INT(0, couplet("", "ctl rooms"));
    CHECK(starts(out_text, ".hidden@conference.localhost  1 occupant  public\n"), "ctl unstuffs: %s", out_text);
    char buf[1024] = "";
    size_t got = 0;
    int fd = unix_connect(sock_path);
    send_str(fd, "rooms\n");
    CHECK(read_until(fd, buf, sizeof buf, &got, "\n.\n", 3000) &&
          starts(buf, "ok\n..hidden@conference.localhost  1 occupant  public\n"), "the socket stuffs: %s", buf);
    if (fd >= 0) close(fd);
    CHECK_INT(0, couplet("", "ctl destroy .hidden"));
    /* kick one session, then every session of an account */
    client_clear(&r2);
    CHECK_INT(0, couplet("", "ctl --json kick romeo@localhost/balcony 'go home'"));
    CHECK(json_ok(out_text) && json_num(out_text, "ended") == 1, "kick --json: %s", out_text);
    CHECK(client_expect(&r2, "</stream:stream>") &&
          strstr(r2.buf, "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                         "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>go home</text></stream:error>"),
          "the kicked session gets policy-violation with the reason: %s", r2.buf);
    CHECK(wait_closed(r2.fd, r2.buf, sizeof r2.buf, &r2.len, 3000), "and its connection is closed");
    CHECK(client_ping(&r1, "still-here"), "romeo's other session goes on");
    CHECK_INT(1, couplet("", "ctl kick romeo@localhost/balcony"));
    CHECK_STR("couplet: no session romeo@localhost/balcony\n", err_text);
    CHECK_INT(1, couplet("", "ctl kick romeo@example.org"));
    CHECK(strstr(err_text, "not a JID of this server's domain localhost") != NULL, "foreign kick: %s", err_text);
    client_clear(&r1);
    CHECK_INT(0, couplet("", "ctl kick Romeo@localhost"));
    CHECK_STR("1 session ended: Romeo@localhost\n", out_text);
    CHECK(client_expect(&r1, "</stream:stream>") && strstr(r1.buf, "<policy-violation") && !strstr(r1.buf, "<text"),
          "a bare-JID kick ends romeo's last session, no reason given: %s", r1.buf);
    CHECK_INT(0, couplet("", "ctl kick romeo@localhost"));
    CHECK_STR("0 sessions ended: romeo@localhost\n", out_text);
    /* authenticated but not bound yet: a bare-JID kick ends it too (passwd --logout relies on it) */
    client half;
    CHECK(client_open(&half) == 0, "a stream opens");
    client_clear(&half);
    client_auth_plain(&half, "romeo", "password");
    CHECK(client_expect(&half, "<success"), "romeo authenticates without binding: %s", half.buf);
    client_clear(&half);
    CHECK_INT(0, couplet("", "ctl kick romeo@localhost"));
    CHECK_STR("1 session ended: romeo@localhost\n", out_text);
    CHECK(client_expect(&half, "<policy-violation"), "the unbound stream ends too: %s", half.buf);
    client_close(&half);

    /* errors keep the connection and the server */
    CHECK_INT(1, couplet("", "ctl frobnicate"));
    CHECK_STR("couplet: unknown command 'frobnicate' (try help)\n", err_text);
    CHECK_INT(1, couplet("", "ctl --json status now"));
    CHECK(json_ok(out_text) && strstr(out_text, "\"ok\":false") && strstr(err_text, "usage: status"),
          "a usage error in JSON: %s / %s", out_text, err_text);
    CHECK_INT(2, couplet("", "ctl"));
    CHECK(client_ping(&j, "after-admin"), "juliet's session went through all of it");
    client_close(&r1);
    client_close(&r2);
    client_close(&j);
}

static void test_reload(void) {
    CHECK_INT(0, couplet("", "ctl reload"));
    CHECK(strstr(out_text, "configuration read again from") != NULL, "reload: %s", out_text);
    char text[PATH_MAX + 4096];
    slurp(conf_path, text, sizeof text);
    write_server_config("require_encryption = false\nmax_depth = lots\n");
    /* ctl reads the file too, and says what is wrong with it before asking */
    CHECK_INT(1, couplet("", "ctl reload"));
    CHECK(strstr(err_text, "couplet.conf:10: 'lots' is not a number (key 'max_depth')") != NULL,
          "ctl refuses a bad file itself: %s", err_text);
    char buf[2048] = "";
    size_t got = 0;
    int fd = unix_connect(sock_path);
    send_str(fd, "reload\n");
    CHECK(read_until(fd, buf, sizeof buf, &got, "\n.\n", 3000) && !strncmp(buf, "error: ", 7) &&
          strstr(buf, "couplet.conf:10: 'lots' is not a number (key 'max_depth'); the running configuration stays"),
          "the server reports the bad file with its line: %s", buf);
    if (fd >= 0) close(fd);
    write_file(conf_path, text);
    client c;
    CHECK(client_login(&c, "juliet", "after-reload") == 0, "XMPP after the reloads: %s", c.buf);
    client_close(&c);
}

static void test_garbage(void) {
    char longline[2100];
    memset(longline, 'a', sizeof longline);
    raw_garbage("over-long line", longline, sizeof longline, "error: line too long");
    raw_garbage("NUL byte", "status\0x\n", 9, "error: NUL byte in the line\n.\n");
    raw_garbage("not UTF-8", "status\n\xfe\xff\n", 10, "error: the line is not UTF-8\n.\n");
    raw_garbage("control character", "\x1b[2J\n", 5, "error: control character in the line\n.\n");
    /* a raw client sees the protocol: status line, data, terminator; pipelined commands in order */
    char buf[8192] = "";
    size_t got = 0;
    int fd = unix_connect(sock_path);
    CHECK(fd >= 0, "raw connect");
    if (fd >= 0) {
        send_str(fd, "help\r\njson status\nnope\n");
        CHECK(read_until(fd, buf, sizeof buf, &got, "error: unknown command 'nope' (try help)\n.\n", 3000) &&
              !strncmp(buf, "ok\nhelp ", 8) && strstr(buf, ".\nok\n{\"ok\":true,\"version\":\"0.1\""),
              "three answers in order: %s", buf);
        close(fd);
    }
    client c;
    CHECK(client_login(&c, "juliet", "after-garbage") == 0, "XMPP is served after the garbage: %s", c.buf);
    CHECK(client_ping(&c, "after-garbage"), "and answers");
    client_close(&c);
    CHECK_INT(0, couplet("", "ctl status"));
}

/* a child that became uid 65534 connects: the file mode stops it, and with the mode opened the server does */
static void test_other_user(void) {
    if (geteuid() != 0) {
        printf("note: not root: the refusal of another user's connection is not run\n");
        return;
    }
    /* the directories on the way are opened to it, so that only the socket's mode or the server decide */
    chmod(tmpdir, 0711);
    chmod(data_dir, 0711);
    for (int open_mode = 0; open_mode < 2; open_mode++) {
        if (open_mode && chmod(sock_path, 0666) < 0) CHECK(0, "chmod %s", sock_path);
        int p[2];
        if (pipe(p) < 0) return;
        pid_t pid = fork();
        if (pid == 0) {
            char buf[512] = "";
            size_t got = 0;
            close(p[0]);
            if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0) _exit(3);
            int fd = unix_connect(sock_path);
            if (fd < 0) {
                snprintf(buf, sizeof buf, "connect: %s", strerror(errno));
            } else if (!wait_closed(fd, buf, sizeof buf, &got, 3000)) {
                strcat(buf, "[not closed]");
            }
            if (write(p[1], buf, strlen(buf)) < 0) _exit(4);
            _exit(0);
        }
        close(p[1]);
        char res[512] = "";
        ssize_t n = read(p[0], res, sizeof res - 1);
        res[n > 0 ? n : 0] = 0;
        close(p[0]);
        waitpid(pid, NULL, 0);
        if (!open_mode)
            CHECK(strstr(res, "connect: Permission denied") != NULL, "mode 0600 keeps uid 65534 out: %s", res);
        else
            CHECK(!strcmp(res, "error: permission denied: only root and the server's user may use this socket\n.\n"),
                  "with mode 0666 the server refuses uid 65534 itself: %s", res);
    }
    char log[PATH_MAX + 32], text[1 << 16];
    snprintf(log, sizeof log, "%s/server.log", tmpdir);
    usleep(100000);
    slurp(log, text, sizeof text);
    CHECK(strstr(text, "admin socket: uid 65534 refused") != NULL, "the refusal is logged");
    chmod(sock_path, 0600);
    chmod(data_dir, 0700);
    chmod(tmpdir, 0700);
    CHECK_INT(0, couplet("", "ctl status"));
}

/* whether the account is in the file, as the server reads it */
static int account_exists(const char *user) {
    char err[256];
    auth_store *st = auth_store_open(data_dir, 64, err, sizeof err);
    int r = st && auth_user_exists(st, user);
    auth_store_free(st);
    return r;
}

/* the account tools: what they print, import's checks, passwd --logout */
static void test_account_tools(void) {
    CHECK_INT(0, couplet("pw\n", "adduser Alice@localhost"));
    CHECK_STR("added alice@localhost\n", out_text);
    CHECK_STR("", err_text);
    CHECK_INT(1, couplet("pw\n", "adduser alice@localhost"));
    CHECK_STR("couplet: alice@localhost already exists\n", err_text);
    CHECK_INT(1, couplet("", "adduser bob@localhost"));
    CHECK_STR("couplet: no password given\n", err_text);
    CHECK_INT(1, couplet("pw\n", "adduser bob@example.org"));
    CHECK_STR("couplet: 'bob@example.org' is not on this server's domain localhost\n", err_text);
    CHECK_INT(0, couplet("", "deluser alice@localhost"));
    CHECK_STR("deleted alice@localhost\n", out_text);

    /* import: every line checked as adduser checks, nothing written on a bad one */
    static const struct { const char *in, *err; } bad[] = {
        {"ann@localhost pw\n# c\n\nbob@example.org pw\n", "couplet: import: line 4: 'bob@example.org' is not on this "
                                                          "server's domain localhost\n"},
        {"ann@localhost pw\nbob@localhost/phone pw\n", "couplet: import: line 2: 'bob@localhost/phone' is not a bare "
                                                       "JID like user@localhost\n"},
        {"ann@localhost pw\nbob pw\n", "couplet: import: line 2: 'bob' is not a bare JID like user@localhost\n"},
        {"ann@localhost pw\n  bob@localhost\n", "couplet: import: line 2: no password after 'bob@localhost'\n"},
        {"ann@localhost pw\nbob@localhost \n", "couplet: import: line 2: no password after 'bob@localhost'\n"},
        {"ann@localhost pw\nAnn@localhost pw2\n", "couplet: import: line 2: account ann already exists\n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_INT(1, couplet(bad[i].in, "import"));
        CHECK_STR(bad[i].err, err_text);
        CHECK_STR("", out_text);
    }
    CHECK(!account_exists("ann"), "nothing was written by the refused imports");
    CHECK_INT(0, couplet("# accounts\nann@localhost pw one\n\r\n\tbob@LOCALHOST pw\n", "import"));
    CHECK_STR("imported 2 accounts\n", out_text);
    CHECK_INT(0, couplet("", "import"));
    CHECK_STR("imported 0 accounts\n", out_text);

    /* passwd --logout: the password changes, then the sessions end through the admin socket */
    client a;
    CHECK(client_login(&a, "juliet", "window") == 0, "juliet logs in: %s", a.buf);
    client_clear(&a);
    CHECK_INT(0, couplet("password\n", "passwd --logout juliet@localhost"));
    CHECK_STR("password changed for juliet@localhost\n1 session ended: juliet@localhost\n", out_text);
    CHECK(client_expect(&a, "</stream:stream>") && strstr(a.buf, "<policy-violation") &&
          strstr(a.buf, ">password changed</text>"), "juliet's session ends with the reason: %s", a.buf);
    client_close(&a);
    CHECK_INT(0, couplet("password\n", "passwd juliet@localhost"));
    CHECK_STR("password changed for juliet@localhost\n", out_text);
}

/* read from a terminal's master side until want shows (or EOF, or timeout_ms) */
static int pty_read_until(int fd, char *buf, size_t cap, size_t *len, const char *want, int timeout_ms) {
    long end = now_ms() + timeout_ms;
    while (!strstr(buf, want)) {
        long left = end - now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || *len + 1 >= cap || poll(&p, 1, (int)left) <= 0) return 0;
        ssize_t n = read(fd, buf + *len, cap - *len - 1);
        if (n <= 0) return 0;
        *len += (size_t)n;
        buf[*len] = 0;
    }
    return 1;
}

/* passwd on a terminal: asked twice, a mismatch changes nothing */
static int passwd_on_tty(const char *first, const char *second, char *said, size_t n) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0) return -1;
    const char *slave = ptsname(m);
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        int s = open(slave, O_RDWR);
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (s < 0 || o < 0) _exit(126);
        dup2(s, 0);
        dup2(s, 2);
        dup2(o, 1);
        execl(couplet_bin, couplet_bin, "-c", conf_path, "passwd", "romeo@localhost", (char *)NULL);
        _exit(127);
    }
    size_t got = 0;
    said[0] = 0;
    char line[128];
    if (pty_read_until(m, said, n, &got, "Password: ", 5000)) {
        snprintf(line, sizeof line, "%s\n", first);
        if (write(m, line, strlen(line)) < 0) CHECK(0, "write to the terminal");
        if (pty_read_until(m, said, n, &got, "again: ", 5000)) {
            snprintf(line, sizeof line, "%s\n", second);
            if (write(m, line, strlen(line)) < 0) CHECK(0, "write to the terminal");
        }
    }
    pty_read_until(m, said, n, &got, "\n\n", 2000);  /* the rest, until the child is gone */
    int st = 0;
    waitpid(pid, &st, 0);
    close(m);
    slurp(out_path, out_text, sizeof out_text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_passwd_tty(void) {
    char said[4096];
    CHECK_INT(1, passwd_on_tty("secret1", "secret2", said, sizeof said));
    CHECK(strstr(said, "Password: ") && strstr(said, "Password again: ") && strstr(said, "do not match") &&
          !strstr(said, "secret"), "a mismatch is refused, nothing echoed: %s", said);
    CHECK_STR("", out_text);
    CHECK(client_login_works("romeo", "password"), "romeo's password is unchanged");
    CHECK_INT(0, passwd_on_tty("secret3", "secret3", said, sizeof said));
    CHECK_STR("password changed for romeo@localhost\n", out_text);
    CHECK(client_login_works("romeo", "secret3"), "the new password works");
}

/* the socket file: a second server on it is refused, stop removes it, a stale one is replaced */
static void test_socket_life(void) {
    char cmd[PATH_MAX * 6 + 256], log[PATH_MAX + 32], text[8192];
    int other = free_port();
    snprintf(log, sizeof log, "%s/second.log", tmpdir);
    snprintf(cmd, sizeof cmd, "sed 's/^c2s_port = .*/c2s_port = %d/' '%s' >'%s.2' && '%s' -c '%s.2' 2>'%s'", other,
             conf_path, conf_path, couplet_bin, conf_path, log);
    int st = system(cmd);
    slurp(log, text, sizeof text);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(text, "in use by a running process"),
          "a second server on the same socket is refused: %s", text);
    CHECK_INT(0, couplet("", "ctl status"));

    client c;
    CHECK(client_login(&c, "juliet", "last") == 0, "juliet logs in: %s", c.buf);
    CHECK_INT(0, couplet("", "ctl stop"));
    CHECK_STR("stopping: every stream is being closed\n", out_text);
    CHECK(client_expect(&c, "<system-shutdown"), "stop closes the streams as SIGTERM does: %s", c.buf);
    client_close(&c);
    int status = 0;
    pid_t r = 0;
    for (int i = 0; i < 100 && r == 0; i++) {
        r = waitpid(server_pid, &status, WNOHANG);
        if (r == 0) usleep(50000);
    }
    CHECK(r == server_pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server exits 0 after ctl stop");
    if (r == server_pid) server_pid = -1;
    CHECK(access(sock_path, F_OK) < 0, "the socket file is removed at the end");

    CHECK_INT(2, couplet("", "ctl status"));
    CHECK(strncmp(err_text, "couplet: cannot reach the server at ", 36) == 0 && strstr(err_text, sock_path),
          "not running: %s", err_text);
    CHECK_INT(1, couplet("password\n", "passwd --logout juliet@localhost"));
    CHECK(strstr(out_text, "password changed for juliet@localhost") &&
          strstr(err_text, "cannot reach the server at") && strstr(err_text, "sessions were not ended"),
          "passwd --logout without a server: %s / %s", out_text, err_text);

    /* a socket left by a killed server is replaced at the next start (under valgrind the process killed is
     * valgrind's, which removes nothing either, but its start is too slow to race reliably: not run there) */
    if (under_valgrind()) {
        printf("note: under valgrind: the stale-socket restart is not run\n");
        return;
    }
    if (start_server_in("require_encryption = false\n", 1) < 0) {
        CHECK(0, "restart");
        return;
    }
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
    CHECK(access(sock_path, F_OK) == 0, "kill -9 leaves the socket file behind");
    CHECK(start_server_in("require_encryption = false\n", 1) == 0, "a restart replaces the stale socket");
    CHECK_INT(0, couplet("", "ctl status"));
    CHECK(stop_server() == 0, "the server exits 0 after SIGTERM");
}

/* user = nobody, started as root: after binding, the process is uid/gid 65534 for good and still serves */
static void test_user_switch(void) {
    if (under_valgrind()) {
        /* /proc/PID/status then describes valgrind's tool process, not the server's identity */
        printf("note: under valgrind: the switch to `user` is not run\n");
        return;
    }
    if (geteuid() != 0) {
        printf("note: not root: the switch to `user` is not run\n");
        return;
    }
    struct passwd *pw = getpwnam("nobody");
    if (!pw) {
        printf("note: no user 'nobody': the switch to `user` is not run\n");
        return;
    }
    unsigned uid = pw->pw_uid, gid = pw->pw_gid;
    char status_path[64], text[4096], want[128], cmd[PATH_MAX + 64];
    /* fresh accounts and certificate, made as root; then the data directory is given to the user */
    if (start_server("require_encryption = false\n") < 0 || stop_server() != 0) {
        CHECK(0, "a first server for the data directory");
        return;
    }
    snprintf(sock_path, sizeof sock_path, "%s/admin.sock", data_dir);
    write_server_config("require_encryption = false\nuser = no-such-user-here\n");
    CHECK_INT(1, couplet("", ""));
    CHECK(strstr(err_text, "user = no-such-user-here: no such user") != NULL, "an unknown user: %s", err_text);
    snprintf(cmd, sizeof cmd, "chown -R %u:%u '%s'", uid, gid, data_dir);
    CHECK(system(cmd) == 0, "%s", cmd);
    chmod(tmpdir, 0711);    /* the user must reach its data directory */
    /* a process that dropped root cannot be traced by LeakSanitizer's helper: no leak check for this one */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    int ok = start_server_in("require_encryption = false\nuser = nobody\n", 1) == 0;
    unsetenv("ASAN_OPTIONS");
    CHECK(ok, "server started with user = nobody");
    if (!ok) return;
    snprintf(status_path, sizeof status_path, "/proc/%d/status", (int)server_pid);
    slurp(status_path, text, sizeof text);
    snprintf(want, sizeof want, "\nUid:\t%u\t%u\t%u\t%u\n", uid, uid, uid, uid);
    CHECK(strstr(text, want) != NULL, "real, effective, saved and fs uid are %u: %s", uid, text);
    snprintf(want, sizeof want, "\nGid:\t%u\t%u\t%u\t%u\n", gid, gid, gid, gid);
    CHECK(strstr(text, want) != NULL, "and the gids %u", gid);
    CHECK(strstr(text, "\nCapEff:\t0000000000000000\n") != NULL, "no capability left");
    struct stat st;
    CHECK(stat(sock_path, &st) == 0 && st.st_uid == uid && (st.st_mode & 0777) == 0600,
          "the socket belongs to the user, mode 0600");
    client c;
    CHECK(client_login(&c, "romeo", "dropped") == 0, "XMPP is served after the switch: %s", c.buf);
    CHECK_INT(0, couplet("", "ctl --json status"));
    CHECK_INT(1, json_num(out_text, "sessions"));
    client_close(&c);
    CHECK(stop_server() == 0, "the server exits 0 after SIGTERM");
    CHECK(access(sock_path, F_OK) < 0, "the socket file is removed by the switched process");
    chmod(tmpdir, 0700);
}

int main(int argc, char **argv) {
    test_parser();
    test_framing();
    test_formats();
    (void)argc;
    if (xmpp_test_init(argv[0]) < 0) {
        CHECK(0, "test set-up");
        return check_summary("admin");
    }
    alarm(120);
    snprintf(conf_path, sizeof conf_path, "%s/couplet.conf", tmpdir);
    snprintf(out_path, sizeof out_path, "%s/stdout", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    if (start_server("require_encryption = false\n") == 0) {
        snprintf(sock_path, sizeof sock_path, "%s/admin.sock", data_dir);
        /* a line left unfinished: dropped by the line timer while the rest runs */
        int slow = unix_connect(sock_path);
        CHECK(slow >= 0, "connect to %s", sock_path);
        send_str(slow, "stat");
        long t0 = now_ms();
        test_commands();
        test_reload();
        test_garbage();
        test_other_user();
        test_account_tools();
        test_passwd_tty();
        char buf[512] = "";
        size_t got = 0;
        CHECK(wait_closed(slow, buf, sizeof buf, &got, 15000) &&
              !strcmp(buf, "error: the line was not finished in time\n.\n"),
              "an unfinished line is dropped after the line timeout: %s", buf);
        CHECK(now_ms() - t0 >= 9000, "not before about 10 s (%ld ms)", now_ms() - t0);
        close(slow);
        test_socket_life();
    } else {
        CHECK(0, "server started");
    }
    if (server_pid > 0) stop_server();
    test_user_switch();
    xmpp_test_cleanup();
    return check_summary("admin");
}
