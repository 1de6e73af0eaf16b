/* admin.c - the admin socket's line protocol (see admin.h): line framing and its checks, the command table,
 * arguments, and answers as text or JSON. It keeps no server state: the server answers through admin_host. */
#include "admin.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_OUTPUT_MAX (1u << 20)     /* answers queued by one read; a client piping more is cut off */
#define ADMIN_MAX_ARGS 2

/* ---- a growable buffer; out of memory is remembered and reported once, never a crash ---- */

typedef struct obuf {
    char *data;
    size_t len, cap;
    int oom;
} obuf;

static int ob_reserve(obuf *b, size_t more) {
    if (b->oom) return -1;
    if (b->cap - b->len > more) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= more) {
        if (cap > ((size_t)-1) / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static void ob_append(obuf *b, const char *s, size_t n) {
    if (ob_reserve(b, n) < 0) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void ob_puts(obuf *b, const char *s) {
    ob_append(b, s, strlen(s));
}

static void ob_printf(obuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ob_printf(obuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        ob_append(b, small, (size_t)n);
        return;
    }
    if (ob_reserve(b, (size_t)n) < 0) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* ---- UTF-8 ---- */

/* Length of the well-formed UTF-8 sequence at s (n bytes available): no overlong forms, no surrogates,
 * nothing past U+10FFFF. 0 when the bytes there are not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0], cp, min;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Why a command line cannot be read, or NULL when it can. */
static const char *line_problem(const char *line, size_t n) {
    const unsigned char *s = (const unsigned char *)line;
    for (size_t i = 0; i < n;) {
        if (s[i] == 0) return "NUL byte in the line";
        if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7F) return "control character in the line";
        size_t k = utf8_seq(s + i, n - i);
        if (!k) return "the line is not UTF-8";
        i += k;
    }
    return NULL;
}

/* ---- one answer: text lines for people, or the fields of one JSON object ---- */

typedef struct reply {
    obuf body;
    int json;
    int comma;              /* JSON: a value came before, the next one needs a comma */
    size_t line_start;      /* text: where the line being written began */
    char err[512];          /* the error of an answer that failed */
} reply;

/* "error: ..." for the answer; always -1, the handlers' failure value */
static int fail(reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(reply *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* Text from the server or the client (names, subjects, reasons): control characters and bytes that are not
 * UTF-8 become '?', so a value can never end a line or forge the terminator. */
static void t_str(reply *r, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x20 || p[i] == 0x7F ? 0 : utf8_seq(p + i, n - i);
        if (!k) {
            ob_append(&r->body, "?", 1);
            i++;
        } else {
            ob_append(&r->body, (const char *)p + i, k);
            i += k;
        }
    }
}

/* a line begins with a label padded to one column */
static void t_label(reply *r, const char *label) {
    ob_printf(&r->body, "%-12s ", label);
}

/* ends the line; one starting with '.' gets another in front of it */
static void t_eol(reply *r) {
    obuf *b = &r->body;
    if (!b->oom && b->len > r->line_start && b->data[r->line_start] == '.' && ob_reserve(b, 1) == 0) {
        memmove(b->data + r->line_start + 1, b->data + r->line_start, b->len - r->line_start);
        b->data[r->line_start] = '.';
        b->len++;
    }
    ob_append(b, "\n", 1);
    r->line_start = b->len;
}

static void j_escape(obuf *b, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    ob_append(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t k = c < 0x20 ? 1 : utf8_seq(p + i, n - i);
        if (c == '"' || c == '\\') ob_printf(b, "\\%c", c);
        else if (c < 0x20) ob_printf(b, "\\u%04x", c);
        else if (!k) ob_puts(b, "\\ufffd");     /* not UTF-8: JSON text must be */
        else ob_append(b, (const char *)p + i, k);
        i += k ? k : 1;
    }
    ob_append(b, "\"", 1);
}

/* the comma and "key": before a value (key NULL inside an array) */
static void j_key(reply *r, const char *key) {
    if (r->comma) ob_append(&r->body, ",", 1);
    if (key) {
        j_escape(&r->body, key);
        ob_append(&r->body, ":", 1);
    }
    r->comma = 1;
}

static void j_str(reply *r, const char *key, const char *v) {
    j_key(r, key);
    if (v) j_escape(&r->body, v);
    else ob_puts(&r->body, "null");
}

static void j_num(reply *r, const char *key, unsigned long long v) {
    j_key(r, key);
    ob_printf(&r->body, "%llu", v);
}

static void j_bool(reply *r, const char *key, int v) {
    j_key(r, key);
    ob_puts(&r->body, v ? "true" : "false");
}

static void j_open(reply *r, const char *key, char bracket) {
    j_key(r, key);
    ob_append(&r->body, &bracket, 1);
    r->comma = 0;
}

static void j_close(reply *r, char bracket) {
    ob_append(&r->body, &bracket, 1);
    r->comma = 1;
}

static void iso_time(time_t t, char out[32]) {
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(out, 32, "?");
}

/* ---- the commands ---- */

struct admin_conn {
    admin_host host;
    int closing;            /* answered with a fatal error: the rest of the input is ignored */
    int taken;              /* the output was handed out: the next call starts a new one */
    size_t len;             /* bytes of the unfinished line */
    obuf out;
    char line[ADMIN_LINE_MAX];
};

typedef int (*command_fn)(admin_conn *a, reply *r, char **arg, int nargs);

typedef struct command {
    const char *name;
    int min_args, max_args;
    int rest;               /* the last argument is the rest of the line (a reason, spaces and all) */
    command_fn run;
    const char *usage, *help;
} command;

static const command *command_table(size_t *n);

static int cmd_help(admin_conn *a, reply *r, char **arg, int nargs) {
    size_t n;
    const command *table = command_table(&n);
    if (r->json) j_open(r, "commands", '[');
    for (size_t i = 0; i < n; i++) {
        const command *c = &table[i];
        if (r->json) {
            j_open(r, NULL, '{');
            j_str(r, "name", c->name);
            j_str(r, "usage", c->usage);
            j_str(r, "help", c->help);
            j_close(r, '}');
        } else {
            ob_printf(&r->body, "%-24s %s", c->usage, c->help);
            t_eol(r);
        }
    }
    if (r->json) j_close(r, ']');
    else {
        t_str(r, "Put \"json\" before a command for a JSON answer.");
        t_eol(r);
    }
    return 0;
}

static int cmd_status(admin_conn *a, reply *r, char **arg, int nargs) {
    admin_status st;
    char started[32];
    memset(&st, 0, sizeof st);
    a->host.status(a->host.ud, &st);
    iso_time(st.started, started);
    unsigned long long up = st.now > st.started ? (unsigned long long)(st.now - st.started) : 0;
    if (r->json) {
        j_str(r, "version", st.version);
        j_str(r, "started", started);
        j_num(r, "uptime", up);
        j_open(r, "connections", '{');
        j_num(r, "xmpp", st.connections);
        j_num(r, "negotiating", st.negotiating);
        j_num(r, "encrypted", st.encrypted);
        j_num(r, "admin", st.admin_connections);
        j_close(r, '}');
        j_num(r, "sessions", st.sessions);
        j_num(r, "accounts", st.accounts);
        j_num(r, "rooms", st.rooms);
        if (st.rss_bytes) j_num(r, "rss_bytes", st.rss_bytes);
        else j_str(r, "rss_bytes", NULL);
        return 0;
    }
    t_label(r, "version");
    t_str(r, st.version);
    t_eol(r);
    t_label(r, "started");
    ob_printf(&r->body, "%s (up %llud %lluh %llum %llus)", started, up / 86400, up / 3600 % 24, up / 60 % 60,
              up % 60);
    t_eol(r);
    t_label(r, "connections");
    ob_printf(&r->body, "%lu XMPP (%lu negotiating, %lu with TLS), %lu admin", st.connections, st.negotiating,
              st.encrypted, st.admin_connections);
    t_eol(r);
    t_label(r, "sessions");
    ob_printf(&r->body, "%lu (%lu accounts)", st.sessions, st.accounts);
    t_eol(r);
    t_label(r, "rooms");
    ob_printf(&r->body, "%lu", st.rooms);
    t_eol(r);
    t_label(r, "memory");
    if (st.rss_bytes) ob_printf(&r->body, "%.1f MiB resident", (double)st.rss_bytes / (1024.0 * 1024.0));
    else ob_puts(&r->body, "unknown");
    t_eol(r);
    return 0;
}

/* a list being written: entries past ADMIN_LIST_MAX are only counted */
typedef struct list_ctx {
    reply *r;
    unsigned long n;
} list_ctx;

static void list_end(reply *r, unsigned long n, const char *what) {
    unsigned long more = n > ADMIN_LIST_MAX ? n - ADMIN_LIST_MAX : 0;
    if (r->json) {
        j_close(r, ']');
        j_num(r, "count", n);
        j_bool(r, "truncated", more > 0);
        return;
    }
    if (more) ob_printf(&r->body, "and %lu more, not listed", more);
    else ob_printf(&r->body, "%lu %s", n, what);
    t_eol(r);
}

static int each_session(void *ud, const admin_session *s) {
    list_ctx *x = ud;
    reply *r = x->r;
    char since[32];
    if (x->n++ >= ADMIN_LIST_MAX) return 0;
    iso_time(s->since, since);
    if (r->json) {
        j_open(r, NULL, '{');
        j_str(r, "jid", s->jid);
        j_str(r, "peer", s->peer);
        j_str(r, "since", since);
        j_str(r, "tls", s->tls);
        j_close(r, '}');
    } else {
        t_str(r, s->jid);
        ob_puts(&r->body, "  ");
        t_str(r, s->peer);
        ob_printf(&r->body, "  since %s  ", since);
        t_str(r, s->tls ? s->tls : "no TLS");
        t_eol(r);
    }
    return 0;
}

static int cmd_sessions(admin_conn *a, reply *r, char **arg, int nargs) {
    list_ctx x = {r, 0};
    if (r->json) j_open(r, "sessions", '[');
    a->host.sessions(a->host.ud, each_session, &x);
    list_end(r, x.n, "sessions");
    return 0;
}

static int cmd_kick(admin_conn *a, reply *r, char **arg, int nargs) {
    char err[256] = "";
    long n = a->host.kick(a->host.ud, arg[0], nargs > 1 ? arg[1] : NULL, err, sizeof err);
    if (n < 0) return fail(r, "%s", err[0] ? err : "cannot kick");
    if (r->json) {
        j_str(r, "jid", arg[0]);
        j_num(r, "ended", (unsigned long long)n);
    } else {
        ob_printf(&r->body, "%ld session%s ended: ", n, n == 1 ? "" : "s");
        t_str(r, arg[0]);
        t_eol(r);
    }
    return 0;
}

/* the settings that are on, as words (text mode) */
static void t_settings(reply *r, const admin_room *m) {
    static const char *const names[] = {"persistent", "public", "password", "members-only", "moderated",
                                        "public JIDs"};
    const int on[] = {m->persistent, m->public_room, m->password, m->members_only, m->moderated, m->jids_public};
    int any = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (on[i]) ob_printf(&r->body, "%s%s", any++ ? ", " : "", names[i]);
    if (!any) ob_puts(&r->body, "temporary, hidden");
}

static void j_settings(reply *r, const admin_room *m) {
    j_bool(r, "persistent", m->persistent);
    j_bool(r, "public", m->public_room);
    j_bool(r, "password", m->password);
    j_bool(r, "members_only", m->members_only);
    j_bool(r, "moderated", m->moderated);
    j_bool(r, "public_jids", m->jids_public);
}

static int each_room(void *ud, const admin_room *m) {
    list_ctx *x = ud;
    reply *r = x->r;
    if (x->n++ >= ADMIN_LIST_MAX) return 0;
    if (r->json) {
        j_open(r, NULL, '{');
        j_str(r, "jid", m->jid);
        j_str(r, "name", m->name);
        j_num(r, "occupants", m->occupants);
        j_settings(r, m);
        j_close(r, '}');
    } else {
        t_str(r, m->jid);
        ob_printf(&r->body, "  %u occupant%s  ", m->occupants, m->occupants == 1 ? "" : "s");
        t_settings(r, m);
        t_eol(r);
    }
    return 0;
}

static int cmd_rooms(admin_conn *a, reply *r, char **arg, int nargs) {
    list_ctx x = {r, 0};
    if (r->json) j_open(r, "rooms", '[');
    a->host.rooms(a->host.ud, each_room, &x);
    list_end(r, x.n, "rooms");
    return 0;
}

static int each_occupant(void *ud, const admin_occupant *o) {
    list_ctx *x = ud;
    reply *r = x->r;
    if (x->n++ >= ADMIN_LIST_MAX) return 0;
    if (r->json) {
        j_open(r, NULL, '{');
        j_str(r, "nick", o->nick);
        j_str(r, "jid", o->jid);
        j_str(r, "role", o->role);
        j_str(r, "affiliation", o->affiliation);
        j_num(r, "sessions", o->sessions);
        j_close(r, '}');
    } else {
        t_label(r, "occupant");
        t_str(r, o->nick);
        ob_puts(&r->body, "  ");
        t_str(r, o->jid);
        ob_puts(&r->body, "  ");
        t_str(r, o->role);
        ob_puts(&r->body, "  ");
        t_str(r, o->affiliation);
        if (o->sessions > 1) ob_printf(&r->body, "  (%u sessions)", o->sessions);
        t_eol(r);
    }
    return 0;
}

static void t_field(reply *r, const char *label, const char *value) {
    t_label(r, label);
    t_str(r, value);
    t_eol(r);
}

static int cmd_room(admin_conn *a, reply *r, char **arg, int nargs) {
    admin_room m;
    memset(&m, 0, sizeof m);
    if (a->host.room_info(a->host.ud, arg[0], &m) < 0) return fail(r, "no room %.300s", arg[0]);
    if (r->json) {
        j_open(r, "room", '{');
        j_str(r, "jid", m.jid);
        j_str(r, "name", m.name);
        j_str(r, "description", m.description);
        j_str(r, "subject", m.subject);
        j_num(r, "max_users", m.max_users);
        j_num(r, "history", m.history);
        j_settings(r, &m);
        j_close(r, '}');
        j_open(r, "occupants", '[');
    } else {
        t_field(r, "room", m.jid);
        t_field(r, "name", m.name);
        t_field(r, "description", m.description);
        t_field(r, "subject", m.subject);
        t_label(r, "settings");
        t_settings(r, &m);
        t_eol(r);
        t_label(r, "limits");
        ob_printf(&r->body, "%u occupants at most, %u messages of history", m.max_users, m.history);
        t_eol(r);
    }
    list_ctx x = {r, 0};
    a->host.room_occupants(a->host.ud, arg[0], each_occupant, &x);
    list_end(r, x.n, "occupants");
    return 0;
}

static int cmd_destroy(admin_conn *a, reply *r, char **arg, int nargs) {
    char err[256] = "";
    if (a->host.destroy(a->host.ud, arg[0], nargs > 1 ? arg[1] : NULL, err, sizeof err) < 0)
        return fail(r, "%s", err[0] ? err : "cannot destroy the room");
    if (r->json) j_str(r, "destroyed", arg[0]);
    else {
        t_str(r, "destroyed ");
        t_str(r, arg[0]);
        t_eol(r);
    }
    return 0;
}

static int cmd_reload(admin_conn *a, reply *r, char **arg, int nargs) {
    char msg[512] = "";
    if (a->host.reload(a->host.ud, msg, sizeof msg) < 0) return fail(r, "%s", msg[0] ? msg : "reload refused");
    if (r->json) j_str(r, "message", msg);
    else {
        t_str(r, msg);
        t_eol(r);
    }
    return 0;
}

static int cmd_stop(admin_conn *a, reply *r, char **arg, int nargs) {
    a->host.stop(a->host.ud);
    if (r->json) j_bool(r, "stopping", 1);
    else {
        t_str(r, "stopping: every stream is being closed");
        t_eol(r);
    }
    return 0;
}

static const command commands[] = {
    {"help", 0, 0, 0, cmd_help, "help", "this list"},
    {"status", 0, 0, 0, cmd_status, "status", "version, uptime, connections, sessions, rooms, memory"},
    {"sessions", 0, 0, 0, cmd_sessions, "sessions", "every session: full JID, address, since when, TLS"},
    {"kick", 1, 2, 1, cmd_kick, "kick JID [REASON]",
     "end a session (full JID) or all of an account's (bare JID): stream error policy-violation, REASON as text"},
    {"rooms", 0, 0, 0, cmd_rooms, "rooms", "every room: occupants and settings"},
    {"room", 1, 1, 0, cmd_room, "room NAME", "one room: settings and occupants (nick, JID, role, affiliation)"},
    {"destroy", 1, 2, 1, cmd_destroy, "destroy ROOM [REASON]", "destroy a room; the occupants are told REASON"},
    {"reload", 0, 0, 0, cmd_reload, "reload", "what SIGHUP does: read the configuration file again"},
    {"stop", 0, 0, 0, cmd_stop, "stop", "what SIGTERM does: close every stream, then exit"},
};

static const command *command_table(size_t *n) {
    *n = sizeof commands / sizeof *commands;
    return commands;
}

/* ---- lines ---- */

static int is_space(char c) {
    return c == ' ' || c == '\t';
}

/* the next word of *p (NUL-terminated in place), or NULL at the end */
static char *next_word(char **p) {
    char *s = *p;
    while (is_space(*s)) s++;
    if (!*s) {
        *p = s;
        return NULL;
    }
    char *w = s;
    while (*s && !is_space(*s)) s++;
    if (*s) *s++ = '\0';
    *p = s;
    return w;
}

static const command *find_command(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

/* Split into the command's arguments; -1 when there are too few or too many. */
static int split_args(const command *c, char *p, char **arg, int *nargs) {
    int n = 0;
    while (n < c->max_args) {
        while (is_space(*p)) p++;
        if (!*p) break;
        if (c->rest && n == c->max_args - 1) {
            size_t len = strlen(p);
            while (len > 0 && is_space(p[len - 1])) p[--len] = '\0';
            arg[n++] = p;
            p += len;
            break;
        }
        arg[n++] = next_word(&p);
    }
    while (is_space(*p)) p++;
    *nargs = n;
    return n < c->min_args || *p ? -1 : 0;
}

/* the status line, the body (text lines, or the JSON object), the terminator */
static void answer(admin_conn *a, reply *r, int rc) {
    obuf *o = &a->out;
    if (rc == 0 && r->body.oom) rc = fail(r, "out of memory");
    if (rc == 0) {
        ob_puts(o, "ok\n");
        if (r->json) ob_puts(o, "{\"ok\":true");
        if (r->body.len) ob_append(o, r->body.data, r->body.len);
        if (r->json) ob_puts(o, "}\n");
    } else {
        reply e;
        memset(&e, 0, sizeof e);
        t_str(&e, "error: ");
        t_str(&e, r->err);
        t_eol(&e);
        if (r->json) {
            ob_puts(&e.body, "{\"ok\":false,\"error\":");
            j_escape(&e.body, r->err);
            ob_puts(&e.body, "}\n");
        }
        if (!e.body.oom) ob_append(o, e.body.data, e.body.len);
        else ob_puts(o, "error: out of memory\n");
        free(e.body.data);
    }
    ob_puts(o, ".\n");
}

static void run_line(admin_conn *a, char *line) {
    reply r;
    memset(&r, 0, sizeof r);
    r.comma = 1;            /* "ok":true comes first */
    char *p = line, *name = next_word(&p), *arg[ADMIN_MAX_ARGS];
    int rc, nargs = 0;
    if (name && !strcmp(name, "json")) {
        r.json = 1;
        name = next_word(&p);
    }
    const command *c = name ? find_command(name) : NULL;
    if (!name) rc = fail(&r, "no command (try help)");
    else if (!c) rc = fail(&r, "unknown command '%.64s' (try help)", name);
    else if (split_args(c, p, arg, &nargs) < 0) rc = fail(&r, "usage: %s", c->usage);
    else rc = c->run(a, &r, arg, nargs);
    answer(a, &r, rc);
    free(r.body.data);
}

static void output_restart(admin_conn *a) {
    if (a->taken) {
        a->out.len = 0;
        a->taken = 0;
    }
}

/* ---- the connection ---- */

admin_conn *admin_conn_new(const admin_host *host) {
    admin_conn *a = calloc(1, sizeof *a);
    if (a) a->host = *host;
    return a;
}

void admin_conn_free(admin_conn *a) {
    if (!a) return;
    free(a->out.data);
    free(a);
}

void admin_conn_refuse(admin_conn *a, const char *why) {
    reply r;
    output_restart(a);
    if (a->closing) return;
    memset(&r, 0, sizeof r);
    fail(&r, "%s", why);
    answer(a, &r, -1);
    a->closing = 1;
    a->len = 0;
}

int admin_conn_feed(admin_conn *a, const char *data, size_t len) {
    output_restart(a);
    while (len > 0 && !a->closing) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (take > ADMIN_LINE_MAX - 1 - a->len) {
            admin_conn_refuse(a, "line too long (at most 1023 bytes before the newline)");
            break;
        }
        memcpy(a->line + a->len, data, take);
        a->len += take;
        if (!nl) break;
        data += take + 1;
        len -= take + 1;
        size_t n = a->len;
        a->len = 0;
        if (n > 0 && a->line[n - 1] == '\r') n--;
        const char *why = line_problem(a->line, n);
        if (why) {
            admin_conn_refuse(a, why);
            break;
        }
        a->line[n] = '\0';
        run_line(a, a->line);
        if (a->out.len > ADMIN_OUTPUT_MAX) admin_conn_refuse(a, "too much output at once: one command at a time");
        else if (a->out.oom) admin_conn_refuse(a, "out of memory");
    }
    return a->closing ? ADMIN_CLOSE : ADMIN_OPEN;
}

const char *admin_conn_output(admin_conn *a, size_t *len) {
    *len = a->out.oom ? 0 : a->out.len;
    a->taken = 1;
    return a->out.data ? a->out.data : "";
}

int admin_conn_partial(const admin_conn *a) {
    return a->len > 0;
}
