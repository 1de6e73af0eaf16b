/* interop_strophe.c - a small XMPP client on libstrophe (Debian's libstrophe-dev) for the interoperability
 * matrix (tests/interop.sh, INTEROP.md). It logs in, then obeys one command per line and reports what
 * happens as one event per line on stdout, so a shell script can drive it through a FIFO. It speaks the
 * same line protocol as tests/interop_peer.py (slixmpp), so either can be the client under test or the
 * other side of a conversation.
 *
 * usage: interop_strophe [--tls] [--cafile PEM] [--timeout SECONDS] [--trace FILE] JID PASSWORD HOST PORT
 *                        [COMMAND ...]
 *   --tls       direct TLS (XEP-0368) instead of STARTTLS
 *   --cafile    trust this certificate (the server's self-signed one); without it any certificate is accepted
 *   --timeout   the whole run ends after this many seconds (default 30); the last event is then "timeout"
 *   --trace     libstrophe's debug log (every stanza sent and received) goes to FILE
 * Commands come from the arguments after PORT if there are any, else from stdin, one per line:
 *   msg JID TEXT            a chat message            gc ROOM TEXT        a groupchat message
 *   join ROOM NICK [PW]     join (or create) a room   secret ROOM PW      set a room password (owner)
 *   roster                  ask for the roster        sleep SECONDS       pause the script
 *   quit                    close the stream (</stream:stream>) and wait for the server's close
 * Events: "online FULLJID mech=MECH tls=yes|no", "loginfail WHY", "roster JID...", "presence FROM TYPE",
 * "msg FROM TEXT", "msgerror FROM CONDITION", "gc FROM TEXT", "joined ROOM", "joinerror ROOM CONDITION",
 * "configured ROOM", "configerror ROOM CONDITION", "closed clean|abrupt", "timeout".
 * Exit status: 0 after a clean close, 1 otherwise. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>
#include <time.h>
#include <unistd.h>

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_MUC_OWNER "http://jabber.org/protocol/muc#owner"
#define NS_DATA "jabber:x:data"
#define NS_ROSTER "jabber:iq:roster"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

typedef struct client {
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    FILE *trace;
    char mech[64];          /* from the <auth mechanism='...'> libstrophe sends */
    int online, done, clean_close, seen_close;
    int quitting;
    char **script;          /* commands from argv, or NULL for stdin */
    int script_len, script_pos;
    double sleep_until;
    char inbuf[8192];
    size_t inlen;
    int stdin_open;
    unsigned next_id;
} client;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void event(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* one line of text in an event: newlines would break the line protocol */
static void flatten(char *s) {
    for (; s && *s; s++)
        if (*s == '\n' || *s == '\r') *s = ' ';
}

/* libstrophe's log: to the trace file, and the SASL mechanism it chose picked out of the <auth/> it sent */
static void on_log(void *ud, xmpp_log_level_t level, const char *area, const char *msg) {
    client *cl = ud;
    if (cl->trace && level >= XMPP_LEVEL_DEBUG) {
        fprintf(cl->trace, "%s %s\n", area, msg);
        fflush(cl->trace);
    }
    const char *auth = strstr(msg, "SENT: <auth ");
    if (auth) {
        const char *m = strstr(auth, "mechanism=\"");
        if (m) {
            m += strlen("mechanism=\"");
            size_t n = strcspn(m, "\"");
            if (n >= sizeof cl->mech) n = sizeof cl->mech - 1;
            memcpy(cl->mech, m, n);
            cl->mech[n] = 0;
        }
    }
    if (strstr(msg, "RECV: </stream:stream>")) cl->seen_close = 1;
}

static const char *error_condition(xmpp_stanza_t *st) {
    xmpp_stanza_t *err = xmpp_stanza_get_child_by_name(st, "error");
    for (xmpp_stanza_t *c = err ? xmpp_stanza_get_children(err) : NULL; c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_get_name(c), *ns = xmpp_stanza_get_ns(c);
        if (name && ns && !strcmp(ns, NS_STANZAS)) return name;
    }
    return "unknown";
}

static xmpp_stanza_t *child_ns(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name, const char *ns) {
    xmpp_stanza_t *c = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(c, name);
    if (ns) xmpp_stanza_set_ns(c, ns);
    xmpp_stanza_add_child(parent, c);
    xmpp_stanza_release(c);     /* the parent holds it now */
    return c;
}

static void child_text(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name, const char *text) {
    xmpp_stanza_t *c = child_ns(ctx, parent, name, NULL);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx);
    xmpp_stanza_set_text(t, text);
    xmpp_stanza_add_child(c, t);
    xmpp_stanza_release(t);
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
    client *cl = ud;
    const char *type = xmpp_stanza_get_type(st), *from = xmpp_stanza_get_from(st);
    if (!from) from = "-";
    if (type && !strcmp(type, "error")) {
        event("msgerror %s %s", from, error_condition(st));
        return 1;
    }
    char *body = xmpp_message_get_body(st);
    if (body) {
        flatten(body);
        event("%s %s %s", type && !strcmp(type, "groupchat") ? "gc" : "msg", from, body);
        xmpp_free(cl->ctx, body);
    }
    return 1;
}

static int on_instant(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
    const char *type = xmpp_stanza_get_type(st), *from = xmpp_stanza_get_from(st);
    if (type && !strcmp(type, "result"))
        event("joined %s", from ? from : "-");
    else
        event("joinerror %s %s", from ? from : "-", error_condition(st));
    return 0;
}

/* the muc#owner form submitted empty: the room's defaults are accepted (XEP-0045 §10.1.2) */
static void send_instant(client *cl, const char *room) {
    char id[32];
    snprintf(id, sizeof id, "instant%u", cl->next_id++);
    xmpp_stanza_t *iq = xmpp_iq_new(cl->ctx, "set", id);
    xmpp_stanza_set_to(iq, room);
    xmpp_stanza_t *q = child_ns(cl->ctx, iq, "query", NS_MUC_OWNER);
    xmpp_stanza_t *x = child_ns(cl->ctx, q, "x", NS_DATA);
    xmpp_stanza_set_type(x, "submit");
    xmpp_id_handler_add(cl->conn, on_instant, id, cl);
    xmpp_send(cl->conn, iq);
    xmpp_stanza_release(iq);
}

static int on_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
    const char *type = xmpp_stanza_get_type(st), *from = xmpp_stanza_get_from(st);
    if (!from) return 1;
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x", NS_MUC_USER);
    if (type && !strcmp(type, "error")) {
        char *room = xmpp_jid_bare(xmpp_conn_get_context(conn), from);
        event("joinerror %s %s", room ? room : from, error_condition(st));
        xmpp_free(xmpp_conn_get_context(conn), room);
        return 1;
    }
    if (x && !(type && !strcmp(type, "unavailable"))) {
        int self = 0, created = 0;
        for (xmpp_stanza_t *s = xmpp_stanza_get_children(x); s; s = xmpp_stanza_get_next(s)) {
            const char *name = xmpp_stanza_get_name(s), *code = xmpp_stanza_get_attribute(s, "code");
            if (!name || !code || strcmp(name, "status")) continue;
            self |= !strcmp(code, "110");
            created |= !strcmp(code, "201");
        }
        if (self) {
            char *room = xmpp_jid_bare(xmpp_conn_get_context(conn), from);
            /* a new room is locked until its owner configures it: take the defaults (an instant room) */
            if (created) send_instant(ud, room ? room : from);
            else event("joined %s", room ? room : from);
            xmpp_free(xmpp_conn_get_context(conn), room);
            return 1;
        }
    }
    event("presence %s %s", from, type ? type : "available");
    return 1;
}

static int on_iq(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
    client *cl = ud;
    const char *type = xmpp_stanza_get_type(st);
    if (!type || (strcmp(type, "get") && strcmp(type, "set"))) return 1;
    xmpp_stanza_t *query = xmpp_stanza_get_child_by_ns(st, NS_ROSTER);
    if (query && !strcmp(type, "set")) {
        /* a roster push: acknowledge it and report the items */
        xmpp_stanza_t *r = xmpp_stanza_reply(st);
        xmpp_stanza_del_attribute(r, "to");
        xmpp_send(conn, r);
        xmpp_stanza_release(r);
        return 1;
    }
    /* a minimal client: ping is answered, anything else is not implemented */
    xmpp_stanza_t *r = xmpp_stanza_get_child_by_ns(st, "urn:xmpp:ping")
                           ? xmpp_stanza_reply(st)
                           : xmpp_stanza_reply_error(st, "cancel", "service-unavailable", NULL);
    xmpp_send(conn, r);
    xmpp_stanza_release(r);
    (void)cl;
    return 1;
}

static int on_roster(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
    char line[4096] = "roster";
    size_t len = strlen(line);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(st, NS_ROSTER);
    for (xmpp_stanza_t *it = q ? xmpp_stanza_get_children(q) : NULL; it; it = xmpp_stanza_get_next(it)) {
        const char *jid = xmpp_stanza_get_attribute(it, "jid");
        if (jid && len + strlen(jid) + 2 < sizeof line) len += (size_t)snprintf(line + len, sizeof line - len, " %s", jid);
    }
    const char *type = xmpp_stanza_get_type(st);
    if (type && !strcmp(type, "error"))
        event("rostererror %s", error_condition(st));
    else
        event("%s", line);
    return 0;   /* a one-shot id handler */
}

static int on_config(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
    const char *type = xmpp_stanza_get_type(st), *from = xmpp_stanza_get_from(st);
    if (type && !strcmp(type, "result"))
        event("configured %s", from ? from : "-");
    else
        event("configerror %s %s", from ? from : "-", error_condition(st));
    return 0;
}

static void send_roster_get(client *cl) {
    char id[32];
    snprintf(id, sizeof id, "roster%u", cl->next_id++);
    xmpp_stanza_t *iq = xmpp_iq_new(cl->ctx, "get", id);
    child_ns(cl->ctx, iq, "query", NS_ROSTER);
    xmpp_id_handler_add(cl->conn, on_roster, id, cl);
    xmpp_send(cl->conn, iq);
    xmpp_stanza_release(iq);
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error, xmpp_stream_error_t *stream_error,
                    void *ud) {
    client *cl = ud;
    if (status == XMPP_CONN_CONNECT) {
        cl->online = 1;
        xmpp_handler_add(conn, on_message, NULL, "message", NULL, cl);
        xmpp_handler_add(conn, on_presence, NULL, "presence", NULL, cl);
        xmpp_handler_add(conn, on_iq, NULL, "iq", NULL, cl);
        event("online %s mech=%s tls=%s", xmpp_conn_get_bound_jid(conn), cl->mech[0] ? cl->mech : "unknown",
              xmpp_conn_is_secured(conn) ? "yes" : "no");
        /* what a small client does at login: ask for the roster, then say it is available */
        send_roster_get(cl);
        xmpp_stanza_t *p = xmpp_presence_new(cl->ctx);
        xmpp_send(conn, p);
        xmpp_stanza_release(p);
        return;
    }
    if (!cl->online) {
        event("loginfail %s", stream_error ? "stream-error" : error ? strerror(error) : "refused or auth failed");
    } else {
        cl->clean_close = cl->quitting && cl->seen_close;
        event("closed %s", cl->clean_close ? "clean" : "abrupt");
    }
    cl->done = 1;
    xmpp_stop(cl->ctx);
}

static void do_join(client *cl, const char *room, const char *nick, const char *pw) {
    char to[1024];
    snprintf(to, sizeof to, "%s/%s", room, nick);
    xmpp_stanza_t *p = xmpp_presence_new(cl->ctx);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_t *x = child_ns(cl->ctx, p, "x", NS_MUC);
    if (pw && *pw) child_text(cl->ctx, x, "password", pw);
    xmpp_send(cl->conn, p);
    xmpp_stanza_release(p);
}

/* the muc#owner form with only the password field: a non-empty roomsecret makes the room protected */
static void do_secret(client *cl, const char *room, const char *pw) {
    char id[32];
    snprintf(id, sizeof id, "config%u", cl->next_id++);
    xmpp_stanza_t *iq = xmpp_iq_new(cl->ctx, "set", id);
    xmpp_stanza_set_to(iq, room);
    xmpp_stanza_t *q = child_ns(cl->ctx, iq, "query", NS_MUC_OWNER);
    xmpp_stanza_t *x = child_ns(cl->ctx, q, "x", NS_DATA);
    xmpp_stanza_set_type(x, "submit");
    xmpp_stanza_t *f = child_ns(cl->ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "FORM_TYPE");
    child_text(cl->ctx, f, "value", "http://jabber.org/protocol/muc#roomconfig");
    f = child_ns(cl->ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "muc#roomconfig_roomsecret");
    child_text(cl->ctx, f, "value", pw);
    f = child_ns(cl->ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "muc#roomconfig_passwordprotectedroom");
    child_text(cl->ctx, f, "value", "1");
    xmpp_id_handler_add(cl->conn, on_config, id, cl);
    xmpp_send(cl->conn, iq);
    xmpp_stanza_release(iq);
}

static void send_message(client *cl, const char *type, const char *to, const char *text) {
    char id[32];
    snprintf(id, sizeof id, "m%u", cl->next_id++);
    xmpp_stanza_t *m = xmpp_message_new(cl->ctx, type, to, id);
    xmpp_message_set_body(m, text);
    xmpp_send(cl->conn, m);
    xmpp_stanza_release(m);
}

/* "word rest": splits off the first word; returns the rest (possibly empty) */
static char *split(char *s) {
    while (*s == ' ') s++;
    char *sp = strchr(s, ' ');
    if (!sp) return s + strlen(s);
    *sp++ = 0;
    while (*sp == ' ') sp++;
    return sp;
}

static void run_command(client *cl, char *line) {
    line[strcspn(line, "\r\n")] = 0;
    char *cmd = line, *rest = split(line);
    if (!*cmd || *cmd == '#') return;
    if (!strcmp(cmd, "msg") || !strcmp(cmd, "gc")) {
        char *to = rest, *text = split(rest);
        send_message(cl, !strcmp(cmd, "gc") ? "groupchat" : "chat", to, text);
    } else if (!strcmp(cmd, "join")) {
        char *room = rest, *nick = split(rest), *pw = split(nick);
        split(pw);
        do_join(cl, room, nick, pw);
    } else if (!strcmp(cmd, "secret")) {
        char *room = rest, *pw = split(rest);
        do_secret(cl, room, pw);
    } else if (!strcmp(cmd, "roster")) {
        send_roster_get(cl);
    } else if (!strcmp(cmd, "sleep")) {
        cl->sleep_until = now_s() + atof(rest);
    } else if (!strcmp(cmd, "quit")) {
        cl->quitting = 1;
        xmpp_disconnect(cl->conn);
    } else {
        event("badcommand %s", cmd);
    }
}

/* the next command from the script or stdin, once the client is online and not sleeping */
static void poll_commands(client *cl) {
    if (!cl->online || cl->quitting || now_s() < cl->sleep_until) return;
    if (cl->script) {
        if (cl->script_pos < cl->script_len) {
            char buf[4096];
            snprintf(buf, sizeof buf, "%s", cl->script[cl->script_pos++]);
            run_command(cl, buf);
        }
        return;
    }
    if (!cl->stdin_open) return;
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    if (poll(&pfd, 1, 0) > 0) {
        ssize_t n = read(0, cl->inbuf + cl->inlen, sizeof cl->inbuf - 1 - cl->inlen);
        if (n <= 0) {
            cl->stdin_open = 0;
            return;
        }
        cl->inlen += (size_t)n;
        if (cl->inlen == sizeof cl->inbuf - 1) {   /* an overlong line: dropped */
            cl->inlen = 0;
            return;
        }
    }
    char *nl = memchr(cl->inbuf, '\n', cl->inlen);
    if (nl) {
        *nl = 0;
        char line[sizeof cl->inbuf];
        memcpy(line, cl->inbuf, (size_t)(nl - cl->inbuf) + 1);
        size_t used = (size_t)(nl - cl->inbuf) + 1;
        memmove(cl->inbuf, nl + 1, cl->inlen - used);
        cl->inlen -= used;
        run_command(cl, line);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: interop_strophe [--tls] [--cafile PEM] [--timeout SECONDS] [--trace FILE] "
                    "JID PASSWORD HOST PORT [COMMAND ...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    client cl;
    memset(&cl, 0, sizeof cl);
    cl.stdin_open = 1;
    int direct_tls = 0;
    double timeout = 30;
    const char *cafile = NULL, *trace = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (!strcmp(argv[i], "--tls")) direct_tls = 1;
        else if (!strcmp(argv[i], "--cafile") && i + 1 < argc) cafile = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--trace") && i + 1 < argc) trace = argv[++i];
        else usage();
    }
    if (argc - i < 4) usage();
    const char *jid = argv[i], *pw = argv[i + 1], *host = argv[i + 2];
    int port = atoi(argv[i + 3]);
    if (port <= 0 || port > 65535) usage();
    if (argc - i > 4) {
        cl.script = argv + i + 4;
        cl.script_len = argc - i - 4;
    }
    if (trace && !(cl.trace = fopen(trace, "w"))) {
        fprintf(stderr, "%s: %s\n", trace, strerror(errno));
        return 2;
    }
    xmpp_initialize();
    xmpp_log_t log = {on_log, &cl};
    cl.ctx = xmpp_ctx_new(NULL, &log);
    cl.conn = xmpp_conn_new(cl.ctx);
    long flags = XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_DISABLE_SM;
    if (direct_tls) flags |= XMPP_CONN_FLAG_LEGACY_SSL;
    if (cafile)
        xmpp_conn_set_cafile(cl.conn, cafile);
    else
        flags |= XMPP_CONN_FLAG_TRUST_TLS;
    xmpp_conn_set_flags(cl.conn, flags);
    xmpp_conn_set_jid(cl.conn, jid);
    xmpp_conn_set_pass(cl.conn, pw);
    if (xmpp_connect_client(cl.conn, host, (unsigned short)port, on_conn, &cl) != XMPP_EOK) {
        event("loginfail connect");
        return 1;
    }
    double deadline = now_s() + timeout;
    while (!cl.done) {
        if (now_s() > deadline) {
            event("timeout");
            break;
        }
        xmpp_run_once(cl.ctx, 20);
        if (!cl.done) poll_commands(&cl);
        /* a script that has run out ends the session, as does stdin closing */
        if (cl.online && !cl.quitting && now_s() >= cl.sleep_until &&
            ((cl.script && cl.script_pos >= cl.script_len) || (!cl.script && !cl.stdin_open))) {
            cl.quitting = 1;
            xmpp_disconnect(cl.conn);
        }
    }
    xmpp_conn_release(cl.conn);
    xmpp_ctx_free(cl.ctx);
    xmpp_shutdown();
    if (cl.trace) fclose(cl.trace);
    return cl.clean_close ? 0 : 1;
}
