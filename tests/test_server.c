/* test_server.c - the server as a client sees it: a real couplet process on a loopback port, raw XML over
 * sockets, and the exact stream or SASL outcome of each bad input, with a healthy session checked after. */
#include "check.h"
#include "xmpp_test.h"

/* ---- the cases ---- */

/* Open a raw connection, send `input`, expect `want` (a stream error condition) and a closed stream. */
static void expect_stream_error(const char *what, const char *input, const char *want, int with_header) {
    client c = {.fd = tcp_connect()};
    if (c.fd < 0) {
        CHECK(0, "%s: could not connect", what);
        return;
    }
    if (with_header) {
        send_str(c.fd, HEADER);
        client_expect(&c, "</stream:features>");
    }
    send_str(c.fd, input);
    int seen = client_expect(&c, want);
    CHECK(seen, "%s: expected %s, got: %s", what, want, c.buf);
    int closed = wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000);
    CHECK(closed && strstr(c.buf, "</stream:stream>"), "%s: expected the stream closed, got: %s", what, c.buf);
    client_close(&c);
}

static void test_bad_streams(client *healthy) {
    expect_stream_error("wrong domain", "<?xml version='1.0'?><stream:stream to='example.org' version='1.0' "
                        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
                        "<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 0);
    expect_stream_error("no version", "<stream:stream to='localhost' xmlns='jabber:client' "
                        "xmlns:stream='http://etherx.jabber.org/streams'>",
                        "<unsupported-version xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 0);
    expect_stream_error("wrong root", "<stream to='localhost' version='1.0' xmlns='jabber:client'>",
                        "<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 0);
    expect_stream_error("comment", "<!-- hello -->", "<restricted-xml", 1);
    expect_stream_error("doctype", "<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]><stream:stream>",
                        "<restricted-xml", 0);
    expect_stream_error("processing instruction", "<?evil data?>", "<restricted-xml", 1);
    expect_stream_error("mismatched tags", "<message><body></message>", "<not-well-formed", 1);
    expect_stream_error("undefined entity", "<message><body>&lol;</body></message>", "<not-well-formed", 1);
    expect_stream_error("overlong UTF-8", "<message><body>\xc0\xaf</body></message>", "<unsupported-encoding", 1);
    expect_stream_error("unbound prefix", "<foo:bar/>", "<not-well-formed", 1);
    expect_stream_error("stanza before auth", "<message to='juliet@localhost'><body>hi</body></message>",
                        "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 1);
    /* one attribute bigger than the stanza limit */
    size_t big = 300 * 1024;
    char *huge = malloc(big + 64);
    if (huge) {
        strcpy(huge, "<message to='");
        memset(huge + 13, 'a', big);
        strcpy(huge + 13 + big, "'/>");
        expect_stream_error("oversized stanza", huge, "<policy-violation", 1);
        free(huge);
    }
    CHECK(client_ping(healthy, "after-bad-streams"), "the healthy session still answers a ping after bad input");
}

static void test_sasl(client *healthy) {
    client c;
    CHECK(client_open(&c) == 0, "stream opens: %s", c.buf);
    CHECK(strstr(c.buf, "<mechanism>SCRAM-SHA-1</mechanism>") && strstr(c.buf, "<mechanism>PLAIN</mechanism>"),
          "features offer SCRAM-SHA-1 and PLAIN: %s", c.buf);
    client_clear(&c);
    send_str(c.fd, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'/>");
    CHECK(client_expect(&c, "<invalid-mechanism/>"), "unknown mechanism -> invalid-mechanism, got: %s", c.buf);
    client_clear(&c);
    client_auth_plain(&c, "romeo", "wrong");
    CHECK(client_expect(&c, "<not-authorized/>"), "wrong password -> not-authorized, got: %s", c.buf);
    client_clear(&c);
    client_auth_plain(&c, "nobody", "password");
    CHECK(client_expect(&c, "<not-authorized/>"), "unknown user -> the same not-authorized, got: %s", c.buf);
    CHECK(client_expect(&c, "<policy-violation"), "third failure closes the stream: %s", c.buf);
    CHECK(wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000), "connection closed after too many failures");
    client_close(&c);

    CHECK(client_open(&c) == 0, "stream opens");
    client_clear(&c);
    send_str(c.fd, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!notbase64</auth>");
    CHECK(client_expect(&c, "<failure"), "malformed base64 fails: %s", c.buf);
    CHECK(strstr(c.buf, "<malformed-request/>") || strstr(c.buf, "<incorrect-encoding/>"),
          "malformed base64 -> malformed-request or incorrect-encoding, got: %s", c.buf);
    client_close(&c);
    CHECK(client_ping(healthy, "after-sasl"), "the healthy session still answers after SASL failures");
}

static void test_routing(void) {
    client a, b, b2;
    CHECK(client_login(&a, "romeo", "orchard") == 0, "romeo logs in: %s", a.buf);
    CHECK(client_login(&b, "juliet", "balcony") == 0, "juliet logs in: %s", b.buf);
    /* a spoofed 'from' is replaced by the sender's full JID */
    send_str(a.fd, "<message to='juliet@localhost/balcony' from='juliet@localhost/fake' type='chat' id='m1'>"
                   "<body>hello</body></message>");
    CHECK(client_expect(&b, "</message>"), "juliet gets the message: %s", b.buf);
    CHECK(strstr(b.buf, "from='romeo@localhost/orchard'") != NULL, "from is stamped with romeo's full JID: %s", b.buf);
    client_clear(&b);
    /* bare JID with no available session: service-unavailable back to the sender */
    send_str(a.fd, "<message to='juliet@localhost' type='chat' id='m2'><body>anyone?</body></message>");
    CHECK(client_expect(&a, "<service-unavailable"), "bare JID without available sessions bounces: %s", a.buf);
    client_clear(&a);
    /* after initial presence, a message to the bare JID arrives */
    send_str(b.fd, "<presence/>");
    CHECK(client_expect(&b, "</presence>") || strstr(b.buf, "<presence"), "presence reflected to juliet: %s", b.buf);
    client_clear(&b);
    send_str(a.fd, "<message to='juliet@localhost' type='chat' id='m3'><body>now?</body></message>");
    CHECK(client_expect(&b, "now?"), "bare JID message delivered to the available session: %s", b.buf);
    client_clear(&b);
    /* resource conflict: a second login with the same resource replaces the first */
    CHECK(client_login(&b2, "juliet", "balcony") == 0, "second juliet session binds the same resource");
    CHECK(client_expect(&b, "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
          "the first session gets a conflict stream error: %s", b.buf);
    /* unknown IQ namespace to the server */
    client_clear(&a);
    send_str(a.fd, "<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>");
    CHECK(client_expect(&a, "</iq>") && strstr(a.buf, "<service-unavailable"), "unknown IQ -> service-unavailable: %s",
          a.buf);
    client_clear(&a);
    /* IQ result nobody asked for: no answer at all, the session goes on */
    send_str(a.fd, "<iq type='result' id='r1' to='localhost'/>");
    CHECK(client_ping(&a, "after-result"), "an unsolicited IQ result is ignored and the session goes on");
    client_close(&a);
    client_close(&b);
    client_close(&b2);
}

static void test_encryption_required(void) {
    client c;
    CHECK(client_open(&c) == 0, "stream opens");
    CHECK(strstr(c.buf, "<required/>") && !strstr(c.buf, "<mechanisms"),
          "with require_encryption, STARTTLS is required and no SASL is offered before it: %s", c.buf);
    client_clear(&c);
    client_auth_plain(&c, "romeo", "password");
    CHECK(client_expect(&c, "<encryption-required/>"), "SASL before TLS -> encryption-required: %s", c.buf);
    client_close(&c);
}

static void test_shutdown(void) {
    client c;
    CHECK(client_login(&c, "romeo", "down") == 0, "romeo logs in before shutdown");
    kill(server_pid, SIGTERM);
    CHECK(client_expect(&c, "</stream:stream>") && strstr(c.buf, "<system-shutdown"),
          "SIGTERM closes the stream with system-shutdown: %s", c.buf);
    client_close(&c);
    int st = 0;
    pid_t r = 0;
    for (int i = 0; i < 100 && r == 0; i++) {
        r = waitpid(server_pid, &st, WNOHANG);
        if (r == 0) usleep(50000);
    }
    CHECK(r == server_pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the server exits 0 after SIGTERM");
    if (r == server_pid) server_pid = -1;
}

static void test_handshake_timeout(void) {
    client c;
    CHECK(client_open(&c) == 0, "stream opens");
    client_clear(&c);
    CHECK(read_until(c.fd, c.buf, sizeof c.buf, &c.len, "<connection-timeout", 5000),
          "a stream that never authenticates gets connection-timeout: %s", c.buf);
    client_close(&c);
}

/* ---- limits that change at run time ---- */

/* After auth_failures_per_ip failed logins, the address gets temporary-auth-failure even with the right
 * password, without the server saying anything about the account. */
static void test_auth_lockout(void) {
    client c;
    for (int i = 0; i < 3; i++) {
        CHECK(client_open(&c) == 0, "stream opens");
        client_clear(&c);
        client_auth_plain(&c, "romeo", "wrong");
        CHECK(client_expect(&c, "<not-authorized/>"), "failed login %d -> not-authorized: %s", i, c.buf);
        client_close(&c);
    }
    CHECK(client_open(&c) == 0, "stream opens");
    client_clear(&c);
    client_auth_plain(&c, "romeo", "password");
    CHECK(client_expect(&c, "<temporary-auth-failure/>"),
          "a locked-out address gets temporary-auth-failure even with the right password: %s", c.buf);
    client_close(&c);
}

/* SIGHUP re-reads the file: a good file changes limits for what comes next without dropping sessions; a
 * bad one changes nothing. */
static void test_reload(void) {
    client keep, c;
    CHECK(client_login(&keep, "juliet", "steady") == 0, "a session logs in before the reloads");
    /* a broken file: refused, the old limits stay (three attempts per connection) */
    write_server_config("require_encryption = false\nno_such_key = 1\n");
    kill(server_pid, SIGHUP);
    usleep(200000);
    CHECK(client_ping(&keep, "after-bad-reload"), "a bad configuration on SIGHUP drops no session");
    CHECK(client_open(&c) == 0, "stream opens after a refused reload");
    client_clear(&c);
    client_auth_plain(&c, "romeo", "wrong");
    CHECK(client_expect(&c, "<not-authorized/>"), "first failure: %s", c.buf);
    usleep(100000);
    CHECK(!strstr(c.buf, "policy-violation"), "the old sasl_max_attempts (3) still holds: %s", c.buf);
    client_close(&c);
    /* a good file: one failed attempt per connection from now on */
    write_server_config("require_encryption = false\nsasl_max_attempts = 1\n");
    kill(server_pid, SIGHUP);
    usleep(200000);
    CHECK(client_ping(&keep, "after-reload"), "a reload drops no session");
    CHECK(client_open(&c) == 0, "stream opens after the reload");
    client_clear(&c);
    client_auth_plain(&c, "romeo", "wrong");
    CHECK(client_expect(&c, "<policy-violation"), "after the reload one failure closes the stream: %s", c.buf);
    client_close(&c);
    /* the rooms' settings reload too: with muc_create = false nobody but an admin creates a room */
    client_clear(&keep);
    send_str(keep.fd, "<presence to='before@conference.localhost/J'><x xmlns='http://jabber.org/protocol/muc'/>"
                      "</presence>");
    CHECK(client_expect(&keep, "</message>"), "a room can be created before the reload: %s", keep.buf);
    write_server_config("require_encryption = false\nmuc_create = false\n");
    kill(server_pid, SIGHUP);
    usleep(200000);
    client_clear(&keep);
    send_str(keep.fd, "<presence to='after@conference.localhost/J'><x xmlns='http://jabber.org/protocol/muc'/>"
                      "</presence>");
    CHECK(client_expect(&keep, "</presence>") && strstr(keep.buf, "<not-allowed"),
          "after SIGHUP with muc_create = false, creating a room is not allowed: %s", keep.buf);
    client_close(&keep);
}

/* A session that stops reading is cut off once max_output bytes wait for it; the server's memory does not
 * follow what is sent to it, and the sender goes on being served. */
static void test_stalled_reader(void) {
    client victim, sender;
    CHECK(client_login(&victim, "juliet", "stalled") == 0, "the victim logs in");
    CHECK(client_login(&sender, "romeo", "flood") == 0, "the sender logs in");
    int small = 4096;
    setsockopt(victim.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    long rss_before = proc_rss_kb(server_pid);
    char body[1200], msg[1400];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = 0;
    /* headlines: once the victim is gone they are dropped without an error to the sender (RFC 6121 §8.5.3.2.1) */
    snprintf(msg, sizeof msg, "<message to='juliet@localhost/stalled' type='headline'><body>%s</body></message>", body);
    /* 8 MB offered to a peer that reads nothing, with max_output = 64 KiB */
    for (int i = 0; i < 7000; i++) {
        send_str(sender.fd, msg);
        if (i % 500 == 499) client_ping(&sender, "flood-ping");
    }
    CHECK(client_ping(&sender, "after-flood"), "the sender is still served after flooding a stalled peer");
    long rss_after = proc_rss_kb(server_pid);
    CHECK(rss_after - rss_before < 4096, "server memory did not follow the flood: RSS %ld kB -> %ld kB", rss_before,
          rss_after);
    /* the victim's connection was closed: draining it ends in EOF after a policy-violation */
    char *buf = malloc(1 << 24);
    size_t len = 0;
    int closed = buf ? wait_closed(victim.fd, buf, 1 << 24, &len, 5000) : 0;
    CHECK(closed, "the stalled session was disconnected");
    CHECK(buf && strstr(buf, "<policy-violation"), "it was told why (policy-violation) before the close");
    free(buf);
    client_close(&victim);
    client_close(&sender);
}

/* max_sessions_per_account: one session too many gets resource-constraint at bind */
static void test_sessions_per_account(void) {
    client a, b, c;
    CHECK(client_login(&a, "romeo", "one") == 0, "first session binds");
    CHECK(client_login(&b, "romeo", "two") == 0, "second session binds");
    CHECK(client_login(&c, "romeo", "three") < 0, "a third session is refused");
    CHECK(strstr(c.buf, "<resource-constraint") != NULL, "with resource-constraint: %s", c.buf);
    client_close(&a);
    client_close(&b);
    client_close(&c);
}

/* ---- crash safety: kill -9 at random moments loses nothing that was acknowledged ---- */

static unsigned rnd_state = 12345;
static unsigned rnd(unsigned n) {
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

/* `couplet adduser` killed at random instants: the account file always loads, and every account whose
 * command exited 0 is in it. */
static void test_adduser_kill9(void) {
    char conf[PATH_MAX], text[PATH_MAX + 1024], dir[PATH_MAX + 16], err[256];
    snprintf(dir, sizeof dir, "%s/crash-accounts", tmpdir);
    snprintf(conf, sizeof conf, "%s/crash.conf", tmpdir);
    snprintf(text, sizeof text, "data_dir = %s\nscram_iterations = 64\nlog_level = error\n", dir);
    if (write_file(conf, text) < 0) {
        CHECK(0, "write %s", conf);
        return;
    }
    enum { ROUNDS = 60 };
    int acked[ROUNDS] = {0}, killed = 0;
    /* how long one adduser takes here (a sanitized build is slower): the kills are spread over twice that */
    long t0 = now_ms();
    if (run_adduser(conf, "probe@localhost") < 0) CHECK(0, "an adduser that is not killed succeeds");
    unsigned span_us = (unsigned)(now_ms() - t0 + 1) * 1000u;
    for (int i = 0; i < ROUNDS; i++) {
        int in[2];
        if (pipe(in) < 0) break;
        pid_t pid = fork();
        if (pid == 0) {
            char jid[64];
            snprintf(jid, sizeof jid, "user%d@localhost", i);
            dup2(in[0], 0);
            close(in[1]);
            int devnull = open("/dev/null", O_WRONLY);
            if (devnull >= 0) dup2(devnull, 2);
            execl(couplet_bin, couplet_bin, "-c", conf, "adduser", jid, (char *)NULL);
            _exit(127);
        }
        close(in[0]);
        if (write(in[1], "password\n", 9) != 9) { /* the child may already be gone */ }
        close(in[1]);
        usleep(rnd(2 * span_us));  /* kills land before, during and after the write */
        kill(pid, SIGKILL);
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) acked[i] = 1;
        else killed++;
    }
    auth_store *store = auth_store_open(dir, 64, err, sizeof err);
    CHECK(store != NULL, "the account file loads after %d kill -9s: %s", killed, err);
    if (!store) return;
    int missing = 0, acked_n = 0;
    for (int i = 0; i < ROUNDS; i++) {
        char user[32];
        snprintf(user, sizeof user, "user%d", i);
        acked_n += acked[i];
        if (acked[i] && !auth_user_exists(store, user)) missing++;
    }
    CHECK_INT(0, missing);
    CHECK(killed > 0 && acked_n > 0, "the kills landed both before and after acknowledgement (killed %d, acked %d)",
          killed, acked_n);
    auth_store_free(store);
}

static void send_room_config(client *c, const char *id, const char *field, const char *value) {
    char xml[1024];
    snprintf(xml, sizeof xml,
             "<iq type='set' id='%s' to='keep@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#owner'>"
             "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
             "http://jabber.org/protocol/muc#roomconfig</value></field><field var='muc#roomconfig_%s'><value>%s"
             "</value></field></x></query></iq>", id, field, value);
    send_str(c->fd, xml);
}

/* The server killed right after a persistent room change was acknowledged, or in the middle of the next
 * one: after a restart the room is there with at least the acknowledged change. */
static void test_room_kill9(void) {
    int rounds = 8, lost = 0, restarted = 0;
    if (start_server_in("require_encryption = false\n", 0) < 0) {
        CHECK(0, "server started for the room crash test");
        return;
    }
    for (int round = 0; round < rounds; round++) {
        client c;
        char want[64], desc[32], id[32];
        if (round > 0 && start_server_in("require_encryption = false\n", 1) < 0) break;
        restarted += round > 0;
        if (client_login(&c, "romeo", "keeper") < 0) {
            CHECK(0, "romeo logs in after restart %d: %s", round, c.buf);
            break;
        }
        send_str(c.fd, "<presence to='keep@conference.localhost/Romeo'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
        client_expect(&c, "<subject");
        if (round == 0) {
            client_clear(&c);
            send_room_config(&c, "p0", "persistentroom", "1");
            client_expect(&c, "id='p0'");
        } else {
            /* the description acknowledged before the last kill must have survived it */
            client_clear(&c);
            send_str(c.fd, "<iq type='get' id='g' to='keep@conference.localhost'>"
                           "<query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
            snprintf(want, sizeof want, "<value>round%d</value>", round - 1);
            if (!client_expect(&c, want)) {
                lost++;
                fprintf(stderr, "after restart %d expected %s in the config form, got: %.400s\n", round, want, c.buf);
            }
        }
        snprintf(desc, sizeof desc, "round%d", round);
        snprintf(id, sizeof id, "d%d", round);
        client_clear(&c);
        send_room_config(&c, id, "roomdesc", desc);
        snprintf(want, sizeof want, "id='%s'", id);
        CHECK(client_expect(&c, want), "room change %d acknowledged: %s", round, c.buf);
        /* the next change is in flight when the kill comes */
        send_room_config(&c, "next", "roomname", "in-flight");
        usleep(rnd(3000));
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
        client_close(&c);
    }
    CHECK_INT(rounds - 1, restarted);
    CHECK_INT(0, lost);
    if (server_pid > 0) stop_server();
}

/* ---- what independent clients showed: stream restarts, headers, errors on the account's behalf ---- */

/* go-xmpp ends each element with a newline and restarts with "\n<?xml ...?>\n<stream:stream ...>" */
static void test_restart_with_whitespace(void) {
    client c;
    CHECK(client_open(&c) == 0, "stream opens: %s", c.buf);
    client_clear(&c);
    client_auth_plain(&c, "romeo", "password");
    send_str(c.fd, "\n");
    CHECK(client_expect(&c, "<success"), "PLAIN succeeds: %s", c.buf);
    client_clear(&c);
    send_str(c.fd, "\n<?xml version='1.0'?>");
    usleep(50000);      /* the declaration and the header in separate reads */
    send_str(c.fd, "\n<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
                   "xmlns:stream='http://etherx.jabber.org/streams'>\n");
    CHECK(client_expect(&c, "</stream:features>") && strstr(c.buf, "urn:ietf:params:xml:ns:xmpp-bind"),
          "after SASL, a restart preceded by newlines gets the bind feature, got: %s", c.buf);
    client_clear(&c);
    send_str(c.fd, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>\n"
                   "<?xml version='1.0'?>");
    CHECK(client_expect(&c, "<restricted-xml"), "a declaration inside the stream is still refused: %s", c.buf);
    client_close(&c);
}

static void test_stream_headers(void) {
    expect_stream_error("jabber:server on the client port",
                        "<stream:stream to='localhost' version='1.0' xmlns='jabber:server' "
                        "xmlns:stream='http://etherx.jabber.org/streams'>",
                        "<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 0);
    expect_stream_error("no default namespace", "<stream:stream to='localhost' version='1.0' "
                        "xmlns:stream='http://etherx.jabber.org/streams'>",
                        "<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 0);
    expect_stream_error("XML 1.1", "<?xml version='1.1'?><stream:stream to='localhost' version='1.0' "
                        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
                        "<not-well-formed", 0);
    expect_stream_error("another encoding declared", "<?xml version='1.0' encoding='ISO-8859-1'?>"
                        "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
                        "xmlns:stream='http://etherx.jabber.org/streams'>", "<unsupported-encoding", 0);
    expect_stream_error("the streams namespace, another element", "<stream:flow to='localhost' version='1.0' "
                        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", "<bad-format", 0);
    expect_stream_error("a top-level element of another namespace", "<enable xmlns='urn:xmpp:sm:3'/>",
                        "<unsupported-stanza-type", 1);
    expect_stream_error("stream features from the client", "<stream:features/>", "<unsupported-stanza-type", 1);

    /* a peer's stream error ends the stream: answered by our closing tag, never by another error */
    client c;
    CHECK(client_open(&c) == 0, "stream opens: %s", c.buf);
    client_clear(&c);
    send_str(c.fd, "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                   "</stream:error>");
    CHECK(wait_closed(c.fd, c.buf, sizeof c.buf, &c.len, 3000) && strstr(c.buf, "</stream:stream>") &&
          !strstr(c.buf, "<stream:error"), "a client's stream error gets </stream:stream> and nothing else: %s",
          c.buf);
    client_close(&c);
}

/* the opening tag of the first stanza in buf that carries id='ID', or "" */
static const char *tag_with_id(const char *buf, const char *id, char *out, size_t n) {
    char want[80];
    snprintf(want, sizeof want, "id='%s'", id);
    const char *p = strstr(buf, want);
    out[0] = 0;
    if (!p) return out;
    const char *start = p;
    while (start > buf && *start != '<') start--;
    const char *end = strchr(p, '>');
    size_t len = end ? (size_t)(end - start + 1) : strlen(start);
    snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), start);
    return out;
}

static void test_account_answers(void) {
    /* what clients ask at login, answered for the account: an error, never silence, never from the domain */
    static const struct { const char *id, *payload, *type, *what; } asks[] = {
        {"vc", "<vCard xmlns='vcard-temp'/>", "get", "vcard-temp (XEP-0054)"},
        {"bm", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>", "get",
         "private XML storage bookmarks (XEP-0049, XEP-0048)"},
        {"bl", "<blocklist xmlns='urn:xmpp:blocking'/>", "get", "blocking (XEP-0191)"},
        {"cb", "<enable xmlns='urn:xmpp:carbons:2'/>", "set", "carbons (XEP-0280)"},
        {"pep", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub>",
         "get", "PEP (XEP-0163)"},
        {"mam", "<query xmlns='urn:xmpp:mam:2'/>", "set", "MAM (XEP-0313)"},
    };
    client c;
    char xml[512], tag[512];
    CHECK(client_login(&c, "romeo", "errors") == 0, "romeo logs in: %s", c.buf);
    for (size_t i = 0; i < sizeof asks / sizeof *asks; i++) {
        snprintf(xml, sizeof xml, "<iq type='%s' id='%s'>%s</iq>", asks[i].type, asks[i].id, asks[i].payload);
        client_clear(&c);
        send_str(c.fd, xml);
        CHECK(client_expect(&c, "</iq>") && strstr(c.buf, "<service-unavailable"),
              "%s: expected service-unavailable, got: %s", asks[i].what, c.buf);
        tag_with_id(c.buf, asks[i].id, tag, sizeof tag);
        CHECK(strstr(tag, "type='error'") && !strstr(tag, "from="),
              "%s: expected an error with no 'from' (answered for the account), got: %s", asks[i].what, tag);
    }
    /* the account's disco#info lists exactly what is answered for it */
    client_clear(&c);
    send_str(c.fd, "<iq type='get' id='di'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    CHECK(client_expect(&c, "</iq>") && strstr(c.buf, "var='urn:xmpp:ping'") &&
          strstr(c.buf, "category='account'") && !strstr(c.buf, "vcard-temp") && !strstr(c.buf, "urn:xmpp:mam"),
          "account disco#info: identity account, ping advertised, nothing unanswered: %s", c.buf);
    /* a presence type RFC 6121 does not define */
    client_clear(&c);
    send_str(c.fd, "<presence to='juliet@localhost' type='away' id='pt'/>");
    CHECK(client_expect(&c, "</presence>") && strstr(c.buf, "type='error'") && strstr(c.buf, "<bad-request"),
          "presence type='away' -> bad-request, got: %s", c.buf);
    /* no rosters: a subscription request is refused in words a client can show */
    client_clear(&c);
    send_str(c.fd, "<presence to='juliet@localhost' type='subscribe' id='sub'/>");
    CHECK(client_expect(&c, "</presence>") && strstr(c.buf, "<feature-not-implemented") &&
          strstr(c.buf, "no rosters"), "subscribe with roster = empty -> feature-not-implemented and a text: %s",
          c.buf);
    client_clear(&c);
    send_str(c.fd, "<iq type='get' id='jr' to='juliet@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    CHECK(client_expect(&c, "</iq>") && strstr(c.buf, "<forbidden"), "another account's roster -> forbidden: %s",
          c.buf);
    client_clear(&c);
    send_str(c.fd, "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'><item jid='juliet@localhost'/>"
                   "</query></iq>");
    CHECK(client_expect(&c, "</iq>") && strstr(c.buf, "<not-allowed") && strstr(c.buf, "no rosters"),
          "roster set with roster = empty -> not-allowed with a text: %s", c.buf);
    client_close(&c);
}

static int run_account_cmd(const char *cmd, const char *jid, const char *password) {
    char line[PATH_MAX * 2 + 256];
    snprintf(line, sizeof line, "'%s' -c '%s/couplet.conf' %s '%s' >/dev/null 2>&1", couplet_bin, tmpdir, cmd, jid);
    FILE *p = popen(line, "w");
    if (!p) return -1;
    if (password) fprintf(p, "%s\n", password);
    return pclose(p) == 0 ? 0 : -1;
}

static void test_output_bounds(void) {
    test_stalled_reader();
    test_sessions_per_account();
}

/* roster = shared: every account is everyone's contact, online state flows without adding anyone */
static void test_shared_roster(void) {
    client r, j;
    char conf[PATH_MAX + 16];
    snprintf(conf, sizeof conf, "%s/couplet.conf", tmpdir);
    CHECK(run_adduser(conf, "nurse@localhost") == 0, "a third account for the shared roster");
    CHECK(client_login(&r, "romeo", "hall") == 0, "romeo logs in: %s", r.buf);
    send_str(r.fd, "<iq type='get' id='ro'><query xmlns='jabber:iq:roster'/></iq>");
    CHECK(client_expect(&r, "</iq>") && strstr(r.buf, "jid='juliet@localhost'") &&
          strstr(r.buf, "jid='nurse@localhost'") && strstr(r.buf, "subscription='both'") &&
          !strstr(r.buf, "jid='romeo@localhost'"), "romeo's roster: every other account, both: %s", r.buf);
    client_clear(&r);
    send_str(r.fd, "<presence><show>chat</show></presence>");
    CHECK(client_expect(&r, "</presence>"), "romeo's presence reflected: %s", r.buf);
    client_clear(&r);
    CHECK(client_login(&j, "juliet", "tomb") == 0, "juliet logs in: %s", j.buf);
    send_str(j.fd, "<presence/>");
    CHECK(client_expect(&j, "from='romeo@localhost/hall'") && strstr(j.buf, "<show>chat</show>"),
          "juliet coming online learns romeo is online: %s", j.buf);
    CHECK(client_expect(&r, "from='juliet@localhost/tomb'"), "romeo learns juliet came online: %s", r.buf);
    client_clear(&j);
    send_str(j.fd, "<presence to='romeo@localhost' type='probe'/>");
    CHECK(client_expect(&j, "<show>chat</show>"), "a probe is answered with romeo's presence: %s", j.buf);
    client_clear(&j);
    send_str(j.fd, "<presence to='nurse@localhost' type='subscribe'/>");
    CHECK(client_expect(&j, "type='unavailable'") && strstr(j.buf, "type='subscribed'") &&
          strstr(j.buf, "from='nurse@localhost'"), "subscribe is approved for the contact, who is offline: %s",
          j.buf);
    client_clear(&j);
    send_str(j.fd, "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'><item jid='friar@example.org'/>"
                   "</query></iq>");
    CHECK(client_expect(&j, "</iq>") && strstr(j.buf, "<not-allowed"), "a foreign contact cannot be added: %s",
          j.buf);
    client_clear(&r);
    client_close(&j);
    CHECK(client_expect(&r, "type='unavailable'") && strstr(r.buf, "from='juliet@localhost/tomb'"),
          "romeo learns juliet left: %s", r.buf);
    /* accounts added and deleted by another process reach the roster of a resource that asked for it */
    client_clear(&r);
    CHECK(run_account_cmd("adduser", "friar@localhost", "cell") == 0, "adduser friar while romeo is online");
    CHECK(client_expect(&r, "jid='friar@localhost'") && read_until(r.fd, r.buf, sizeof r.buf, &r.len, "</iq>", 3000) &&
          strstr(r.buf, "type='set'") && strstr(r.buf, "subscription='both'"),
          "a roster push adds friar: %s", r.buf);
    client_clear(&r);
    CHECK(run_account_cmd("deluser", "nurse@localhost", NULL) == 0, "deluser nurse while romeo is online");
    CHECK(client_expect(&r, "jid='nurse@localhost'") && read_until(r.fd, r.buf, sizeof r.buf, &r.len, "</iq>", 3000) &&
          strstr(r.buf, "subscription='remove'"), "a roster push removes nurse: %s", r.buf);
    client_close(&r);
}

/* ---- account changes made by another process reach the running server ---- */

static void test_accounts_live(void) {
    CHECK(!client_login_works("alice", "first"), "alice does not exist yet");
    CHECK(run_account_cmd("adduser", "alice@localhost", "first") == 0, "adduser while the server runs");
    CHECK(client_login_works("alice", "first"), "alice logs in at once, without a restart or SIGHUP");
    CHECK(run_account_cmd("passwd", "alice@localhost", "second") == 0, "passwd while the server runs");
    CHECK(!client_login_works("alice", "first"), "the old password no longer works");
    CHECK(client_login_works("alice", "second"), "the new password works");

    client live;
    memset(&live, 0, sizeof live);
    live.fd = -1;
    CHECK(client_open(&live) == 0, "alice opens a stream");
    client_clear(&live);
    client_auth_plain(&live, "alice", "second");
    CHECK(client_expect(&live, "<success"), "alice authenticates: %s", live.buf);
    client_clear(&live);
    send_str(live.fd, HEADER);
    CHECK(client_expect(&live, "</stream:features>"), "alice's stream restarts");
    client_clear(&live);
    send_str(live.fd, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    CHECK(client_expect(&live, "</iq>"), "alice binds");
    client_clear(&live);
    CHECK(run_account_cmd("deluser", "alice@localhost", NULL) == 0, "deluser while the server runs");
    long t0 = now_ms();     /* from the moment the file is replaced: the command may run under valgrind */
    CHECK(client_expect(&live, "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>") &&
          strstr(live.buf, "deleted"), "the deleted account's live session ends with not-authorized: %s", live.buf);
    CHECK(now_ms() - t0 < 2000, "within a second or so of deluser (took %ld ms)", now_ms() - t0);
    client_close(&live);
    CHECK(!client_login_works("alice", "second"), "the deleted account cannot log in");

    /* a corrupt file written while running: refused, the accounts before stay */
    char path[PATH_MAX + 32], tmp[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/accounts", data_dir);
    snprintf(tmp, sizeof tmp, "%s/accounts.broken", data_dir);
    CHECK(write_file(tmp, "# couplet accounts v1\nthis is not an account line\n") == 0 && rename(tmp, path) == 0,
          "a corrupt account file replaces the good one");
    usleep(200000);
    CHECK(client_login_works("romeo", "password"), "romeo still logs in: the old accounts stay in use");
}

/* log_level = debug shows every stanza both ways, and never a password or a SASL payload */
static void test_stanza_log(void) {
    client r, j;
    CHECK(client_login(&r, "romeo", "logbook") == 0, "romeo logs in: %s", r.buf);
    send_str(r.fd, "<presence to='vault@conference.localhost/Romeo'><x xmlns='http://jabber.org/protocol/muc'/>"
                   "</presence>");
    CHECK(client_expect(&r, "</message>"), "romeo creates the room: %s", r.buf);
    client_clear(&r);
    send_str(r.fd, "<iq id='cfg' to='vault@conference.localhost' type='set'><query "
                   "xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
                   "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                   "<field var='muc#roomconfig_roomsecret'><value>Cauldron5ecret</value></field></x></query></iq>");
    CHECK(client_expect(&r, "id='cfg'"), "the room gets a password: %s", r.buf);
    client_clear(&r);
    send_str(r.fd, "<iq id='cfg2' to='vault@conference.localhost' type='get'><query "
                   "xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    CHECK(client_expect(&r, "Cauldron5ecret"), "the owner's form shows the secret to the owner: %s", r.buf);
    CHECK(client_login(&j, "juliet", "logbook") == 0, "juliet logs in: %s", j.buf);
    send_str(j.fd, "<presence to='vault@conference.localhost/Juliet'><x xmlns='http://jabber.org/protocol/muc'>"
                   "<password>Cauldron5ecret</password></x></presence>");
    CHECK(client_expect(&j, "</message>"), "juliet joins with the password: %s", j.buf);
    client_close(&j);
    client_close(&r);
    usleep(200000);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/server.log", tmpdir);
    size_t len = 0;
    FILE *f = fopen(path, "r");
    char *log = f ? calloc(1, 4 << 20) : NULL;
    if (log) len = fread(log, 1, (4 << 20) - 1, f);
    if (f) fclose(f);
    CHECK(log && len > 0, "the server log can be read");
    if (!log) return;
    /* base64 of "\0romeo\0password": romeo's PLAIN payload */
    CHECK(!strstr(log, "AHJvbWVvAHBhc3N3b3Jk"), "no SASL payload in the log");
    CHECK(!strstr(log, "Cauldron5ecret"), "no room password in the log (form, join, owner's form)");
    CHECK(strstr(log, "<- #") && strstr(log, "<auth ") && strstr(log, "<message") && strstr(log, "<presence") &&
          strstr(log, "-> #") && strstr(log, "<success"), "the stanzas both ways are in the log");
    CHECK(strstr(log, "127.0.0.1 juliet@localhost/logbook"), "log lines name the connection and its JID");
    free(log);
}

static void test_interop_fixes(void) {
    test_restart_with_whitespace();
    test_stream_headers();
    test_account_answers();
    test_accounts_live();
}

int main(int argc, char **argv) {
    (void)argc;
    if (xmpp_test_init(argv[0]) < 0) {
        CHECK(0, "test set-up");
        return check_summary("server");
    }
    alarm(300);   /* a hard bound on the whole suite (valgrind runs the server too) */

    if (start_server("require_encryption = false\nhandshake_timeout = 2\n") == 0) {
        client healthy;
        CHECK(client_login(&healthy, "juliet", "healthy") == 0, "a healthy session logs in: %s", healthy.buf);
        test_bad_streams(&healthy);
        test_sasl(&healthy);
        test_routing();
        test_handshake_timeout();
        client_close(&healthy);
        test_shutdown();
    } else {
        CHECK(0, "server started (plaintext configuration)");
    }
    if (server_pid > 0) stop_server();

    /* each round: a fresh server with this configuration, its tests, then a clean SIGTERM exit */
    static const struct {
        const char *what, *config;
        void (*run)(void);
    } rounds[] = {
        {"encryption required", "require_encryption = true\n", test_encryption_required},
        {"lockout", "require_encryption = false\nauth_failures_per_ip = 3\nauth_lockout = 60\n", test_auth_lockout},
        {"what real clients showed", "require_encryption = false\n", test_interop_fixes},
        {"debug log", "require_encryption = false\nlog_level = debug\n", test_stanza_log},
        {"roster = shared", "require_encryption = false\nroster = shared\n", test_shared_roster},
        {"reload", "require_encryption = false\n", test_reload},
        {"output bound", "require_encryption = false\nmax_output = 65536\nmax_sessions_per_account = 2\n"
                         "max_read_rate = 0\n", test_output_bounds},
    };
    for (size_t i = 0; i < sizeof rounds / sizeof *rounds; i++) {
        if (start_server(rounds[i].config) < 0) {
            CHECK(0, "server started (%s)", rounds[i].what);
            if (server_pid > 0) stop_server();
            continue;
        }
        rounds[i].run();
        CHECK(stop_server() == 0, "the server exits 0 after SIGTERM (%s)", rounds[i].what);
    }
    test_adduser_kill9();
    test_room_kill9();
    xmpp_test_cleanup();
    return check_summary("server");
}
