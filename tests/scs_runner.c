/* scs_runner.c - runs scansion-format scenario scripts (.scs, see ../shared/SPEC-FORMAT.md) against Couplet
 * (started fresh per script) or against any running XMPP server: parses the scripts, drives one client stream
 * per [Client] (STARTTLS, SASL SCRAM-SHA-1/SCRAM-SHA-256/PLAIN, bind) and matches what the clients receive.
 * `--self-test` checks the matcher. Couplet extension to the format: `NAME sends raw:` followed by indented
 * text sends that text as bytes, unparsed (for malformed-XML scenarios). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "xml.h"

#define NS_SCANSION "https://matthewwild.co.uk/projects/scansion"
#define NS_XMLNS    "http://www.w3.org/2000/xmlns/"
#define NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"

#define MAX_CLIENTS   32
#define MAX_SNIPPET   64        /* stanzas in one sends/receives block */
#define NOTHING_MS    1000      /* the short wait of `receives: nothing` */
#define DRAIN_MS      100       /* strict model: how long to look for stray stanzas */
#define SEND_PAUSE_MS 20
#define CLOSE_WAIT_MS 2000

static int opt_strict;
static int opt_timeout = 5000;
static int opt_trace;           /* SCS_TRACE set in the environment: raw traffic to stderr */
static SSL_CTX *tls_ctx;

/* ------------------------------------------------------------------------------------------------ */
/* small helpers */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void trim_span(const char **s, size_t *n)
{
    while (*n && is_ws(**s)) { (*s)++; (*n)--; }
    while (*n && is_ws((*s)[*n - 1])) (*n)--;
}

static const char *ltrim(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

static void copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int ns_eq(const char *a, const char *b)
{
    if (!a) a = "";
    if (!b) b = "";
    return strcmp(a, b) == 0;
}

static void buf_vprintf(xml_buf *b, const char *fmt, va_list ap)
{
    char tmp[2048];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    xml_buf_puts(b, tmp);
}

static const char *buf_str(const xml_buf *b)
{
    return b->len ? b->data : "";
}

/* Writes each line of text prefixed by indent. */
static void put_indented(xml_buf *out, const char *indent, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        xml_buf_puts(out, indent);
        xml_buf_append(out, p, n);
        xml_buf_puts(out, "\n");
        p += n;
        if (*p == '\n') p++;
    }
}

static void serialize_node(xml_buf *b, const xml_node *n)
{
    xml_serialize(b, n, XML_NS_CLIENT);
}

/* ------------------------------------------------------------------------------------------------ */
/* base64 (RFC 4648), our own so that the runner checks the server's auth.c rather than sharing it */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(xml_buf *out, const unsigned char *in, size_t n)
{
    size_t i;
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        char q[4] = { b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63], b64_alphabet[(v >> 6) & 63],
                      b64_alphabet[v & 63] };
        xml_buf_append(out, q, 4);
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        char q[4] = { b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63], '=', '=' };
        xml_buf_append(out, q, 4);
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        char q[4] = { b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63], b64_alphabet[(v >> 6) & 63], '=' };
        xml_buf_append(out, q, 4);
    }
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64_alphabet, c) : NULL;
    return p ? (int)(p - b64_alphabet) : -1;
}

/* Decodes trimmed base64 text into out (a NUL is appended); -1 when malformed. */
static int b64_decode(xml_buf *out, const char *in, size_t n)
{
    trim_span(&in, &n);
    if (n == 1 && in[0] == '=') n = 0;          /* XMPP's "empty" marker */
    if (n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == n && k >= 2) { v[k] = 0; pad++; continue; }
            if (pad) return -1;
            v[k] = b64_value(in[i + k]);
            if (v[k] < 0) return -1;
        }
        unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        char bytes[3] = { (char)(w >> 16), (char)(w >> 8), (char)w };
        xml_buf_append(out, bytes, (size_t)(3 - pad));
    }
    xml_buf_append(out, "", 0);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* The matcher (SPEC-FORMAT.md, "Matching a received stanza against the expected one") */

/* Strict or non-strict for this expected element: namespace rule, overridden by scansion:strict. */
static int scs_elem_strict(const xml_node *exp)
{
    for (const xml_attr *a = exp->attrs; a; a = a->next) {
        if (a->ns && strcmp(a->ns, NS_SCANSION) == 0 && strcmp(a->name, "strict") == 0) {
            if (strcmp(a->value, "true") == 0 || strcmp(a->value, "1") == 0) return 1;
            if (strcmp(a->value, "false") == 0 || strcmp(a->value, "0") == 0) return 0;
        }
    }
    return !ns_eq(exp->ns, XML_NS_CLIENT);
}

static int attr_is_nsdecl(const xml_attr *a)
{
    return (!a->ns && strcmp(a->name, "xmlns") == 0) || (a->ns && strcmp(a->ns, NS_XMLNS) == 0);
}

static int attr_is_directive(const xml_attr *a)
{
    return a->ns && strcmp(a->ns, NS_SCANSION) == 0;
}

static const xml_attr *find_attr(const xml_node *n, const char *ns, const char *name)
{
    for (const xml_attr *a = n->attrs; a; a = a->next)
        if (strcmp(a->name, name) == 0 && ns_eq(a->ns, ns) && !attr_is_nsdecl(a)) return a;
    return NULL;
}

static int scs_match_attrs(const xml_node *exp, const xml_node *got, int strict)
{
    size_t nexp = 0, ngot = 0;
    for (const xml_attr *a = exp->attrs; a; a = a->next) {
        if (attr_is_nsdecl(a) || attr_is_directive(a)) continue;
        nexp++;
        const xml_attr *g = find_attr(got, a->ns, a->name);
        if (!g) return 0;
        if (strcmp(a->value, "{scansion:any}") != 0 && strcmp(a->value, g->value) != 0) return 0;
    }
    if (!strict) return 1;
    for (const xml_attr *g = got->attrs; g; g = g->next)
        if (!attr_is_nsdecl(g) && !attr_is_directive(g)) ngot++;
    return ngot == nexp;
}

static void collect_text(const xml_node *n, xml_buf *b)
{
    for (const xml_node *c = n->children; c; c = c->next)
        if (!c->name && c->text) xml_buf_append(b, c->text, c->text_len);
}

static int scs_match_text(const xml_node *exp, const xml_node *got)
{
    xml_buf e, g;
    xml_buf_init(&e);
    xml_buf_init(&g);
    collect_text(exp, &e);
    collect_text(got, &g);
    const char *es = e.data ? e.data : "", *gs = g.data ? g.data : "";
    size_t en = e.len, gn = g.len;
    trim_span(&es, &en);
    trim_span(&gs, &gn);
    int ok = en == 0 || (en == gn && memcmp(es, gs, en) == 0);
    xml_buf_free(&e);
    xml_buf_free(&g);
    return ok;
}

static size_t element_children(const xml_node *n, const xml_node **out)
{
    size_t k = 0;
    for (const xml_node *c = n->children; c; c = c->next)
        if (c->name) {
            if (out) out[k] = c;
            k++;
        }
    return k;
}

static int scs_match(const xml_node *exp, const xml_node *got);

/* Kuhn's augmenting paths: can expected child i take a received child, possibly moving earlier ones? */
static int assign_child(size_t i, size_t m, const unsigned char *ok, long *owner, unsigned char *seen)
{
    for (size_t j = 0; j < m; j++) {
        if (!ok[i * m + j] || seen[j]) continue;
        seen[j] = 1;
        if (owner[j] < 0 || assign_child((size_t)owner[j], m, ok, owner, seen)) {
            owner[j] = (long)i;
            return 1;
        }
    }
    return 0;
}

static int scs_match_children(const xml_node *exp, const xml_node *got, int strict)
{
    size_t n = element_children(exp, NULL), m = element_children(got, NULL);
    if (strict && n != m) return 0;
    if (n == 0) return 1;
    if (n > m) return 0;
    const xml_node **e = calloc(n, sizeof *e), **g = calloc(m, sizeof *g);
    unsigned char *ok = calloc(n * m, 1), *seen = calloc(m, 1);
    long *owner = calloc(m, sizeof *owner);
    int result = 0;
    if (!e || !g || !ok || !seen || !owner) goto out;
    element_children(exp, e);
    element_children(got, g);
    if (strict) {
        result = 1;
        for (size_t i = 0; i < n && result; i++) result = scs_match(e[i], g[i]);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++) ok[i * m + j] = (unsigned char)scs_match(e[i], g[j]);
    for (size_t j = 0; j < m; j++) owner[j] = -1;
    result = 1;
    for (size_t i = 0; i < n && result; i++) {
        memset(seen, 0, m);
        result = assign_child(i, m, ok, owner, seen);
    }
out:
    free(e);
    free(g);
    free(ok);
    free(seen);
    free(owner);
    return result;
}

/* 1 when the received element got matches the expected element exp. */
static int scs_match(const xml_node *exp, const xml_node *got)
{
    if (!exp->name || !got->name) return 0;
    if (strcmp(exp->name, got->name) != 0 || !ns_eq(exp->ns, got->ns)) return 0;
    int strict = scs_elem_strict(exp);
    return scs_match_attrs(exp, got, strict) && scs_match_text(exp, got) && scs_match_children(exp, got, strict);
}

/* ------------------------------------------------------------------------------------------------ */
/* XML snippets of a script, parsed by wrapping them in a root element */

typedef struct snippet {
    xml_arena *arena;
    const xml_node *nodes[MAX_SNIPPET];
    size_t count;
    int too_many, oom, closed;
} snippet;

static int snippet_stanza(void *ud, xml_node *st)
{
    snippet *sn = ud;
    if (sn->count == MAX_SNIPPET) { sn->too_many = 1; return 1; }
    xml_node *cp = xml_copy(sn->arena, st);
    if (!cp) { sn->oom = 1; return 1; }
    sn->nodes[sn->count++] = cp;
    return 0;
}

static int snippet_close(void *ud)
{
    ((snippet *)ud)->closed = 1;
    return 0;
}

/* Parses text into sn->nodes (copies in arena a). 0 on success, -1 with err filled. */
static int parse_snippet(xml_arena *a, const char *text, snippet *sn, xml_buf *err)
{
    static const char head[] = "<scansion-wrap xmlns='jabber:client' xmlns:scansion='" NS_SCANSION
                               "' xmlns:stream='" XML_NS_STREAM "'>";
    static const char tail[] = "</scansion-wrap>";
    memset(sn, 0, sizeof *sn);
    sn->arena = a;
    xml_events ev = { NULL, snippet_stanza, snippet_close };
    xml_limits lim;
    xml_limits_default(&lim);
    xml_parser *p = xml_parser_new(&lim, &ev, sn);
    if (!p) { xml_buf_puts(err, "out of memory"); return -1; }
    xml_buf doc;
    xml_buf_init(&doc);
    xml_buf_puts(&doc, head);
    xml_buf_puts(&doc, text);
    xml_buf_puts(&doc, tail);
    int st = doc.oom ? XML_ERR_NOMEM : xml_parser_feed(p, doc.data, doc.len, NULL);
    xml_parser_free(p);
    xml_buf_free(&doc);
    if (sn->too_many) { xml_buf_printf(err, "more than %d stanzas in one block", MAX_SNIPPET); return -1; }
    if (sn->oom) { xml_buf_puts(err, "out of memory"); return -1; }
    if (st != XML_OK) { xml_buf_printf(err, "bad XML: %s", xml_status_str(st)); return -1; }
    if (!sn->closed) { xml_buf_puts(err, "bad XML: unclosed element"); return -1; }
    if (sn->count == 0) { xml_buf_puts(err, "no XML element"); return -1; }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Scripts */

enum act_kind { ACT_CONNECT, ACT_DISCONNECT, ACT_SEND, ACT_SEND_RAW, ACT_RECEIVE, ACT_RECEIVE_NOTHING };

typedef struct client_def {
    char name[128];
    char jid[512];
    char password[256];
    char resource[256];
    int line;
} client_def;

typedef struct action {
    int kind, client, line;
    xml_buf text;               /* XML (or raw bytes) of sends/receives */
} action;

typedef struct script {
    char name[256];
    client_def cl[MAX_CLIENTS];
    int ncl;
    action *acts;
    int nacts, cap;
    char err[512];
    int err_line;
} script;

static void script_free(script *s)
{
    for (int i = 0; i < s->nacts; i++) xml_buf_free(&s->acts[i].text);
    free(s->acts);
    s->acts = NULL;
    s->nacts = s->cap = 0;
}

static int script_error(script *s, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int script_error(script *s, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    s->err_line = line;
    return -1;
}

static int is_dash_line(const char *l)
{
    size_t n = 0;
    while (l[n] == '-') n++;
    return n >= 3 && *ltrim(l + n) == '\0';
}

/* Which client an action line starts with; the longest name wins, so "Juliet's phone" beats "Juliet". */
static int match_client_name(const script *s, const char *line, const char **rest)
{
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < s->ncl; i++) {
        size_t n = strlen(s->cl[i].name);
        if (n > best_len && strncmp(line, s->cl[i].name, n) == 0 && (line[n] == ' ' || line[n] == '\t')) {
            best = i;
            best_len = n;
        }
    }
    if (best >= 0) *rest = ltrim(line + best_len);
    return best;
}

/* If s starts with word (followed by end, ':' or blank), returns what follows the optional colon. */
static const char *verb(const char *s, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(s, word, n) != 0) return NULL;
    s += n;
    if (*s && *s != ':' && *s != ' ' && *s != '\t') return NULL;
    s = ltrim(s);
    if (*s == ':') s = ltrim(s + 1);
    return s;
}

static int add_action(script *s, int kind, int client, int line)
{
    if (s->nacts == s->cap) {
        int ncap = s->cap ? s->cap * 2 : 32;
        action *na = realloc(s->acts, (size_t)ncap * sizeof *na);
        if (!na) return script_error(s, line, "out of memory");
        s->acts = na;
        s->cap = ncap;
    }
    action *a = &s->acts[s->nacts++];
    a->kind = kind;
    a->client = client;
    a->line = line;
    xml_buf_init(&a->text);
    return 0;
}

static int parse_action_line(script *s, const char *line, int lineno)
{
    const char *rest, *t;
    int ci = match_client_name(s, line, &rest);
    if (ci < 0) return script_error(s, lineno, "no known client starts this line: %s", line);
    int kind;
    const char *inl = "";
    if ((t = verb(rest, "connects")) && !*t) kind = ACT_CONNECT;
    else if ((t = verb(rest, "disconnects")) && !*t) kind = ACT_DISCONNECT;
    else if ((t = verb(rest, "sends raw"))) { kind = ACT_SEND_RAW; inl = t; }
    else if ((t = verb(rest, "sends"))) { kind = ACT_SEND; inl = t; }
    else if ((t = verb(rest, "receives"))) {
        if (strcmp(t, "nothing") == 0) kind = ACT_RECEIVE_NOTHING;
        else { kind = ACT_RECEIVE; inl = t; }
    } else return script_error(s, lineno, "unknown action: %s", rest);
    if (add_action(s, kind, ci, lineno) < 0) return -1;
    if (*inl) xml_buf_puts(&s->acts[s->nacts - 1].text, inl);
    return 0;
}

static int parse_header_line(script *s, const char *line, int lineno, int *cur)
{
    const char *t = ltrim(line);
    if (strncmp(t, "[Client]", 8) == 0) {
        if (s->ncl == MAX_CLIENTS) return script_error(s, lineno, "more than %d clients", MAX_CLIENTS);
        const char *nm = ltrim(t + 8);
        size_t n = strlen(nm);
        if (!n) return script_error(s, lineno, "[Client] without a name");
        client_def *d = &s->cl[s->ncl];
        memset(d, 0, sizeof *d);
        copy_str(d->name, sizeof d->name, nm, n);
        d->line = lineno;
        *cur = s->ncl++;
        return 0;
    }
    if (t != line && *cur >= 0) {
        const char *colon = strchr(t, ':');
        if (!colon) return script_error(s, lineno, "expected 'key: value'");
        size_t kn = (size_t)(colon - t);
        const char *v = ltrim(colon + 1);
        client_def *d = &s->cl[*cur];
        if (kn == 3 && strncmp(t, "jid", 3) == 0) copy_str(d->jid, sizeof d->jid, v, strlen(v));
        else if (kn == 8 && strncmp(t, "password", 8) == 0) copy_str(d->password, sizeof d->password, v, strlen(v));
        else if (kn == 8 && strncmp(t, "resource", 8) == 0) copy_str(d->resource, sizeof d->resource, v, strlen(v));
        return 0;               /* unknown keys are ignored */
    }
    return script_error(s, lineno, "unexpected line in the header: %s", line);
}

/* Parses the text of a script. 0, or -1 with s->err and s->err_line. */
static int script_parse(script *s, char *text)
{
    int in_header = 1, cur = -1, lineno = 0;
    char *p = text;
    while (*p) {
        char *line = p, *e = strchr(p, '\n');
        if (e) { *e = '\0'; p = e + 1; } else p += strlen(p);
        lineno++;
        size_t n = strlen(line);
        while (n && is_ws(line[n - 1])) line[--n] = '\0';
        const char *t = ltrim(line);
        int indented = t != line;
        if (in_header) {
            if (!*t || *t == '#') continue;
            if (is_dash_line(line)) { in_header = 0; continue; }
            if (parse_header_line(s, line, lineno, &cur) < 0) return -1;
            continue;
        }
        if (!*t) continue;
        action *last = s->nacts ? &s->acts[s->nacts - 1] : NULL;
        int takes_text = last && (last->kind == ACT_SEND || last->kind == ACT_SEND_RAW || last->kind == ACT_RECEIVE);
        if (takes_text && last->kind == ACT_SEND_RAW && indented) {
            if (last->text.len) xml_buf_puts(&last->text, "\n");
            xml_buf_puts(&last->text, t);
            continue;
        }
        if (*t == '#') continue;
        if (indented || *t == '<') {
            if (!takes_text) return script_error(s, lineno, "XML outside of a sends/receives block");
            if (last->text.len) xml_buf_puts(&last->text, "\n");
            xml_buf_puts(&last->text, t);
            continue;
        }
        if (parse_action_line(s, line, lineno) < 0) return -1;
    }
    if (in_header) return script_error(s, lineno, "no '-----' line ends the header");
    for (int i = 0; i < s->nacts; i++) {
        action *a = &s->acts[i];
        if ((a->kind == ACT_SEND || a->kind == ACT_SEND_RAW || a->kind == ACT_RECEIVE) && !a->text.len)
            return script_error(s, a->line, "no XML after the action");
        if (a->text.oom) return script_error(s, a->line, "out of memory");
    }
    for (int i = 0; i < s->ncl; i++)
        if (!s->cl[i].jid[0]) return script_error(s, s->cl[i].line, "client '%s' has no jid", s->cl[i].name);
    return 0;
}

static int script_load(script *s, const char *path)
{
    memset(s, 0, sizeof *s);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".scs") == 0) n -= 4;
    copy_str(s->name, sizeof s->name, base, n);
    FILE *f = fopen(path, "rb");
    if (!f) return script_error(s, 0, "cannot open %s: %s", path, strerror(errno));
    xml_buf text;
    xml_buf_init(&text);
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) xml_buf_append(&text, chunk, got);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || text.oom) {
        xml_buf_free(&text);
        return script_error(s, 0, "cannot read %s", path);
    }
    xml_buf_append(&text, "", 0);
    int r = script_parse(s, text.data);
    xml_buf_free(&text);
    return r;
}

/* ------------------------------------------------------------------------------------------------ */
/* Client streams */

typedef struct client {
    int fd;
    SSL *ssl;
    xml_parser *parser;
    xml_arena *arena;           /* copies of every stanza received on this connection */
    xml_node **q;
    size_t qhead, qlen, qcap;
    xml_buf bad;                /* the input the parser refused, for the report */
    char *in;                   /* bytes read but not yet given to the parser */
    size_t in_pos, in_len, in_cap;
    int negotiating, stopped, oom, perr, stream_opened, bad_header, stream_closed, eof;
    int bound;
    const char *name;
    char user[256], domain[256], resource[256], bare[600], full[1600];
} client;

typedef struct run {
    script *s;
    client cl[MAX_CLIENTS];
    const char *host, *port, *domain;
    xml_arena *tmp;             /* expected stanzas of the current action */
    int failed, why_line;
    xml_buf why, expected, received, notes;
} run;

static void fail(run *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(run *r, int line, const char *fmt, ...)
{
    if (r->failed) return;
    r->failed = 1;
    r->why_line = line;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&r->why, fmt, ap);
    va_end(ap);
}

static void note_received(run *r, const xml_node *n)
{
    serialize_node(&r->received, n);
    xml_buf_puts(&r->received, "\n");
}

static int cl_stream_open(void *ud, xml_node *root)
{
    client *c = ud;
    c->stream_opened = 1;
    c->bad_header = !root->name || strcmp(root->name, "stream") != 0 || !ns_eq(root->ns, XML_NS_STREAM);
    return 0;
}

static int cl_stanza(void *ud, xml_node *st)
{
    client *c = ud;
    if (c->qlen == c->qcap) {
        size_t ncap = c->qcap ? c->qcap * 2 : 16;
        xml_node **nq = realloc(c->q, ncap * sizeof *nq);
        if (!nq) { c->oom = 1; return 1; }
        c->q = nq;
        c->qcap = ncap;
    }
    xml_node *cp = xml_copy(c->arena, st);
    if (!cp) { c->oom = 1; return 1; }
    c->q[c->qlen++] = cp;
    /* After <proceed/> and <success/> the stream restarts: stop so that later bytes meet a fresh parser. */
    if (c->negotiating && ((strcmp(st->name, "proceed") == 0 && ns_eq(st->ns, NS_TLS)) ||
                           (strcmp(st->name, "success") == 0 && ns_eq(st->ns, NS_SASL)))) {
        c->stopped = 1;
        return 1;
    }
    return 0;
}

static int cl_stream_close(void *ud)
{
    ((client *)ud)->stream_closed = 1;
    return 0;
}

static const xml_events client_events = { cl_stream_open, cl_stanza, cl_stream_close };

static void client_close(client *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);   /* best effort: the socket is non-blocking */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->parser) xml_parser_free(c->parser);
    c->parser = NULL;
    if (c->arena) xml_arena_free(c->arena);
    c->arena = NULL;
    free(c->q);
    c->q = NULL;
    c->qhead = c->qlen = c->qcap = 0;
    free(c->in);
    c->in = NULL;
    xml_buf_free(&c->bad);
    c->in_pos = c->in_len = c->in_cap = 0;
    c->negotiating = c->stopped = c->oom = c->perr = c->stream_opened = c->bad_header = 0;
    c->stream_closed = c->eof = 0;
    c->bound = 0;               /* full[] is kept: scripts may name a JID after its client left */
}

/* 1 ready, 0 timeout, -1 error */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left < 0) left = 0;
        struct pollfd pfd = { fd, events, 0 };
        int k = poll(&pfd, 1, (int)left);
        if (k > 0) return 1;
        if (k == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static void trace(const client *c, const char *dir, const char *data, size_t n)
{
    if (opt_trace) fprintf(stderr, "%s %s %.*s\n", c->name ? c->name : "?", dir, (int)n, data);
}

static int in_append(client *c, const char *data, size_t n)
{
    trace(c, "<<", data, n);
    if (c->in_len + n > c->in_cap) {
        size_t ncap = c->in_cap ? c->in_cap : 16384;
        while (ncap < c->in_len + n) ncap *= 2;
        char *nb = realloc(c->in, ncap);
        if (!nb) return -1;
        c->in = nb;
        c->in_cap = ncap;
    }
    memcpy(c->in + c->in_len, data, n);
    c->in_len += n;
    return 0;
}

/* Reads once: 1 data, 0 end of stream, -1 error, -2 timeout. */
static int conn_read(client *c, long long deadline)
{
    char buf[16384];
    for (;;) {
        if (c->ssl) {
            ERR_clear_error();
            int k = SSL_read(c->ssl, buf, sizeof buf);
            if (k > 0) return in_append(c, buf, (size_t)k) < 0 ? -1 : 1;
            int e = SSL_get_error(c->ssl, k);
            short ev;
            if (e == SSL_ERROR_WANT_READ) ev = POLLIN;
            else if (e == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
            else if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) return 0;
            else return -1;
            int w = wait_fd(c->fd, ev, deadline);
            if (w == 0) return -2;
            if (w < 0) return -1;
        } else {
            int w = wait_fd(c->fd, POLLIN, deadline);
            if (w == 0) return -2;
            if (w < 0) return -1;
            ssize_t n = recv(c->fd, buf, sizeof buf, 0);
            if (n > 0) return in_append(c, buf, (size_t)n) < 0 ? -1 : 1;
            if (n == 0) return 0;
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        }
    }
}

static int conn_write(client *c, const char *data, size_t len)
{
    long long deadline = now_ms() + opt_timeout;
    trace(c, ">>", data, len);
    while (len) {
        if (c->fd < 0) return -1;
        if (c->ssl) {
            ERR_clear_error();
            int k = SSL_write(c->ssl, data, len > 65536 ? 65536 : (int)len);
            if (k > 0) { data += k; len -= (size_t)k; continue; }
            int e = SSL_get_error(c->ssl, k);
            short ev;
            if (e == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
            else if (e == SSL_ERROR_WANT_READ) ev = POLLIN;
            else return -1;
            if (wait_fd(c->fd, ev, deadline) <= 0) return -1;
        } else {
            ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
            if (n > 0) { data += n; len -= (size_t)n; continue; }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (wait_fd(c->fd, POLLOUT, deadline) <= 0) return -1;
                continue;
            }
            return -1;
        }
    }
    return 0;
}

static int conn_puts(client *c, const char *s)
{
    return conn_write(c, s, strlen(s));
}

static void client_feed(client *c)
{
    while (c->in_pos < c->in_len && !c->stopped && !c->perr && !c->stream_closed) {
        size_t used = 0;
        int st = xml_parser_feed(c->parser, c->in + c->in_pos, c->in_len - c->in_pos, &used);
        if (st == XML_OK) { c->in_pos = c->in_len; break; }
        if (st == XML_STOPPED) {
            c->in_pos += used;
            if (c->oom) c->perr = XML_ERR_NOMEM;
            break;
        }
        if (st != XML_ERR_CLOSED) {
            size_t n = c->in_len - c->in_pos;
            c->perr = st;
            xml_buf_reset(&c->bad);
            xml_buf_append(&c->bad, c->in + c->in_pos, n > 2000 ? 2000 : n);
        }
        c->in_pos = c->in_len;
    }
    if (c->in_pos == c->in_len) c->in_pos = c->in_len = 0;
}

enum { GOT_STANZA, GOT_TIMEOUT, GOT_CLOSED };

/* The next stanza of c (consumed or only peeked at), waiting until deadline. */
static int client_wait(client *c, long long deadline, xml_node **out, int consume)
{
    for (;;) {
        if (c->qhead < c->qlen) {
            *out = c->q[c->qhead];
            if (consume && ++c->qhead == c->qlen) c->qhead = c->qlen = 0;
            return GOT_STANZA;
        }
        if (c->in_pos < c->in_len && !c->stopped && !c->perr && !c->stream_closed) {
            client_feed(c);
            continue;
        }
        if (c->fd < 0 || c->perr || c->stream_closed || c->eof) return GOT_CLOSED;
        if (deadline <= now_ms()) return GOT_TIMEOUT;
        int k = conn_read(c, deadline);
        if (k == -2) return GOT_TIMEOUT;
        if (k <= 0) c->eof = 1;
    }
}

static const char *client_closed_why(const client *c)
{
    static char msg[160];
    if (c->fd < 0) return "client is not connected";
    if (c->perr) {
        snprintf(msg, sizeof msg, "server sent bad XML (%s)", xml_status_str(c->perr));
        return msg;
    }
    if (c->stream_closed) return "server closed the stream";
    return "server closed the connection";
}

/* The stream ended: say why, and show the bytes the parser refused, if that was the cause. */
static void fail_closed(run *r, const client *c, int line, const char *context)
{
    fail(r, line, "%s%s", client_closed_why(c), context);
    if (c->perr && c->bad.len) {
        xml_buf_puts(&r->received, "(raw) ");
        xml_buf_append(&r->received, c->bad.data, c->bad.len);
        xml_buf_puts(&r->received, "\n");
    }
}

static int tcp_connect(const char *host, const char *port, long long deadline, xml_buf *why)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        xml_buf_printf(why, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { err = errno; continue; }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        err = errno;
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 1) {
            socklen_t sl = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0) break;
        } else if (errno == EINPROGRESS) err = ETIMEDOUT;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        xml_buf_printf(why, "cannot connect to %s port %s: %s", host, port, strerror(err));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int tls_handshake(client *c, long long deadline, xml_buf *why)
{
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_set_tlsext_host_name(c->ssl, c->domain) != 1) {
        xml_buf_puts(why, "cannot set up TLS");
        return -1;
    }
    for (;;) {
        ERR_clear_error();
        int k = SSL_connect(c->ssl);
        if (k == 1) return 0;
        int e = SSL_get_error(c->ssl, k);
        short ev;
        if (e == SSL_ERROR_WANT_READ) ev = POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
        else {
            char ebuf[256];
            ERR_error_string_n(ERR_get_error(), ebuf, sizeof ebuf);
            xml_buf_printf(why, "TLS handshake failed: %s", ebuf);
            return -1;
        }
        int w = wait_fd(c->fd, ev, deadline);
        if (w <= 0) {
            xml_buf_puts(why, w ? "TLS handshake failed (poll)" : "TLS handshake timed out");
            return -1;
        }
    }
}

/* Next stanza during negotiation; NULL with a failure recorded. */
static xml_node *neg_next(run *r, client *c, long long deadline, const char *what, int line)
{
    xml_node *n = NULL;
    int st = client_wait(c, deadline, &n, 1);
    if (st == GOT_STANZA) {
        if (ns_eq(n->ns, XML_NS_STREAM) && strcmp(n->name, "error") == 0) {
            fail(r, line, "stream error while waiting for %s", what);
            note_received(r, n);
            return NULL;
        }
        return n;
    }
    if (st == GOT_TIMEOUT) fail(r, line, "timed out waiting for %s", what);
    else {
        char ctx[160];
        snprintf(ctx, sizeof ctx, " while waiting for %s", what);
        fail_closed(r, c, line, ctx);
    }
    return NULL;
}

static int send_stream_header(client *c)
{
    char hdr[1024];
    snprintf(hdr, sizeof hdr,
             "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' "
             "xmlns:stream='" XML_NS_STREAM "'>", c->domain);
    return conn_puts(c, hdr);
}

static void restart_parser(client *c)
{
    xml_parser_reset(c->parser);
    c->stopped = 0;
    c->stream_opened = 0;
    c->stream_closed = 0;
    c->bad_header = 0;
}

/* saslname: ',' and '=' escaped (RFC 5802 5.1) */
static void sasl_name(xml_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == ',') xml_buf_puts(b, "=2C");
        else if (*s == '=') xml_buf_puts(b, "=3D");
        else xml_buf_append(b, s, 1);
    }
}

/* Value of attribute key ("r", "s", ...) in a SCRAM message; NULL if absent. */
static const char *scram_attr(const char *msg, char key, size_t *len)
{
    const char *p = msg;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n >= 2 && p[0] == key && p[1] == '=') {
            *len = n - 2;
            return p + 2;
        }
        p += n;
        if (*p == ',') p++;
    }
    return NULL;
}

static int send_sasl(client *c, const char *elem, const char *mech, const xml_buf *payload)
{
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_printf(&b, "<%s xmlns='" NS_SASL "'", elem);
    if (mech) xml_buf_printf(&b, " mechanism='%s'", mech);
    xml_buf_puts(&b, ">");
    if (payload->len) b64_encode(&b, (const unsigned char *)payload->data, payload->len);
    else xml_buf_puts(&b, "=");
    xml_buf_printf(&b, "</%s>", elem);
    int k = b.oom ? -1 : conn_write(c, b.data, b.len);
    xml_buf_free(&b);
    return k;
}

static int sasl_is(const xml_node *n, const char *name)
{
    return strcmp(n->name, name) == 0 && ns_eq(n->ns, NS_SASL);
}

static void sasl_failed(run *r, const xml_node *n, int line)
{
    const xml_node *cond = NULL;
    for (const xml_node *k = n->children; k; k = k->next)
        if (k->name && strcmp(k->name, "text") != 0) { cond = k; break; }
    fail(r, line, "authentication failed (%s)", cond ? cond->name : "no condition");
    note_received(r, n);
}

static int sasl_plain(run *r, client *c, const client_def *d, long long deadline, int line)
{
    xml_buf msg;
    xml_buf_init(&msg);
    xml_buf_append(&msg, "", 1);
    xml_buf_puts(&msg, c->user);
    xml_buf_append(&msg, "", 1);
    xml_buf_puts(&msg, d->password);
    int k = send_sasl(c, "auth", "PLAIN", &msg);
    xml_buf_free(&msg);
    if (k < 0) { fail(r, line, "cannot send <auth/>"); return -1; }
    xml_node *n = neg_next(r, c, deadline, "the SASL result", line);
    if (!n) return -1;
    if (sasl_is(n, "success")) return 0;
    if (sasl_is(n, "failure")) sasl_failed(r, n, line);
    else { fail(r, line, "unexpected answer to <auth/>"); note_received(r, n); }
    return -1;
}

/* The client side of SCRAM (RFC 5802) without channel binding. */
static int sasl_scram(run *r, client *c, const client_def *d, const char *mech, long long deadline, int line)
{
    const EVP_MD *md = strcmp(mech, "SCRAM-SHA-256") == 0 ? EVP_sha256() : EVP_sha1();
    int hlen = EVP_MD_get_size(md);
    unsigned char rnd[18], salted[EVP_MAX_MD_SIZE], ckey[EVP_MAX_MD_SIZE], skey[EVP_MAX_MD_SIZE];
    unsigned char stored[EVP_MAX_MD_SIZE], csig[EVP_MAX_MD_SIZE], ssig[EVP_MAX_MD_SIZE];
    unsigned int ulen;
    xml_buf cnonce, first_bare, msg, server_first, auth_msg, final_wo, dec;
    xml_buf_init(&cnonce); xml_buf_init(&first_bare); xml_buf_init(&msg); xml_buf_init(&server_first);
    xml_buf_init(&auth_msg); xml_buf_init(&final_wo); xml_buf_init(&dec);
    int rc = -1;
    xml_node *n;
    const char *v;
    size_t vlen;

    if (RAND_bytes(rnd, sizeof rnd) != 1) { fail(r, line, "no random bytes"); goto out; }
    b64_encode(&cnonce, rnd, sizeof rnd);
    xml_buf_puts(&first_bare, "n=");
    sasl_name(&first_bare, c->user);
    xml_buf_printf(&first_bare, ",r=%s", buf_str(&cnonce));
    xml_buf_printf(&msg, "n,,%s", buf_str(&first_bare));
    if (send_sasl(c, "auth", mech, &msg) < 0) { fail(r, line, "cannot send <auth/>"); goto out; }

    if (!(n = neg_next(r, c, deadline, "the SCRAM challenge", line))) goto out;
    if (sasl_is(n, "failure")) { sasl_failed(r, n, line); goto out; }
    if (!sasl_is(n, "challenge") || b64_decode(&server_first, xml_text(n), strlen(xml_text(n))) < 0 ||
        strlen(buf_str(&server_first)) != server_first.len) {
        fail(r, line, "bad SCRAM server-first message");
        note_received(r, n);
        goto out;
    }
    size_t rlen, slen, ilen;
    const char *rv = scram_attr(server_first.data, 'r', &rlen);
    const char *sv = scram_attr(server_first.data, 's', &slen);
    const char *iv = scram_attr(server_first.data, 'i', &ilen);
    if (!rv || !sv || !iv || rlen <= cnonce.len || memcmp(rv, cnonce.data, cnonce.len) != 0) {
        fail(r, line, "bad SCRAM server-first message: %s", server_first.data);
        goto out;
    }
    char itbuf[16];
    copy_str(itbuf, sizeof itbuf, iv, ilen);
    long iters = strtol(itbuf, NULL, 10);
    if (iters < 1 || iters > 10000000 || b64_decode(&dec, sv, slen) < 0 || dec.len == 0) {
        fail(r, line, "bad salt or iteration count in SCRAM server-first message: %s", server_first.data);
        goto out;
    }
    if (PKCS5_PBKDF2_HMAC(d->password, (int)strlen(d->password), (const unsigned char *)dec.data, (int)dec.len,
                          (int)iters, md, hlen, salted) != 1 ||
        !HMAC(md, salted, hlen, (const unsigned char *)"Client Key", 10, ckey, &ulen) ||
        !HMAC(md, salted, hlen, (const unsigned char *)"Server Key", 10, skey, &ulen) ||
        EVP_Digest(ckey, (size_t)hlen, stored, &ulen, md, NULL) != 1) {
        fail(r, line, "SCRAM key derivation failed");
        goto out;
    }
    xml_buf_puts(&final_wo, "c=biws,r=");
    xml_buf_append(&final_wo, rv, rlen);
    xml_buf_printf(&auth_msg, "%s,%s,%s", buf_str(&first_bare), server_first.data, buf_str(&final_wo));
    if (auth_msg.oom || !HMAC(md, stored, hlen, (const unsigned char *)auth_msg.data, auth_msg.len, csig, &ulen) ||
        !HMAC(md, skey, hlen, (const unsigned char *)auth_msg.data, auth_msg.len, ssig, &ulen)) {
        fail(r, line, "SCRAM signature failed");
        goto out;
    }
    for (int i = 0; i < hlen; i++) csig[i] ^= ckey[i];    /* ClientProof */
    xml_buf_reset(&msg);
    xml_buf_append(&msg, final_wo.data, final_wo.len);
    xml_buf_puts(&msg, ",p=");
    b64_encode(&msg, csig, (size_t)hlen);
    if (send_sasl(c, "response", NULL, &msg) < 0) { fail(r, line, "cannot send <response/>"); goto out; }

    if (!(n = neg_next(r, c, deadline, "the SCRAM result", line))) goto out;
    if (sasl_is(n, "failure")) { sasl_failed(r, n, line); goto out; }
    if (!sasl_is(n, "success") && !sasl_is(n, "challenge")) {
        fail(r, line, "unexpected answer to the SCRAM response");
        note_received(r, n);
        goto out;
    }
    xml_buf_reset(&dec);
    if (b64_decode(&dec, xml_text(n), strlen(xml_text(n))) < 0 || !dec.len ||
        !(v = scram_attr(dec.data, 'v', &vlen))) {
        fail(r, line, "SCRAM server-final message without a server signature");
        note_received(r, n);
        goto out;
    }
    xml_buf expect_v;
    xml_buf_init(&expect_v);
    b64_encode(&expect_v, ssig, (size_t)hlen);
    int good = expect_v.len == vlen && memcmp(expect_v.data, v, vlen) == 0;
    xml_buf_free(&expect_v);
    if (!good) {
        fail(r, line, "wrong SCRAM server signature: %s", dec.data);
        goto out;
    }
    if (sasl_is(n, "challenge")) {          /* server-final sent as a challenge: answer empty, await success */
        xml_buf empty;
        xml_buf_init(&empty);
        if (send_sasl(c, "response", NULL, &empty) < 0) { fail(r, line, "cannot send <response/>"); goto out; }
        if (!(n = neg_next(r, c, deadline, "SASL success", line))) goto out;
        if (!sasl_is(n, "success")) {
            if (sasl_is(n, "failure")) sasl_failed(r, n, line);
            else { fail(r, line, "unexpected answer after the SCRAM server-final"); note_received(r, n); }
            goto out;
        }
    }
    rc = 0;
out:
    xml_buf_free(&cnonce); xml_buf_free(&first_bare); xml_buf_free(&msg); xml_buf_free(&server_first);
    xml_buf_free(&auth_msg); xml_buf_free(&final_wo); xml_buf_free(&dec);
    return rc;
}

static int client_auth(run *r, client *c, const client_def *d, const xml_node *mechs, long long deadline,
                       int line)
{
    static const char *const pref[] = { "SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN" };
    for (size_t i = 0; i < sizeof pref / sizeof pref[0]; i++)
        for (const xml_node *m = xml_child(mechs, "mechanism", NS_SASL); m; m = xml_next_child(m, "mechanism", NS_SASL)) {
            const char *t = xml_text(m);
            size_t n = strlen(t);
            trim_span(&t, &n);
            if (n != strlen(pref[i]) || memcmp(t, pref[i], n) != 0) continue;
            if (i == 2) return sasl_plain(r, c, d, deadline, line);
            return sasl_scram(r, c, d, pref[i], deadline, line);
        }
    fail(r, line, "no supported SASL mechanism offered");
    note_received(r, mechs);
    return -1;
}

/* user@domain/resource split of a header jid */
static void split_jid(const char *j, char *user, size_t ucap, char *dom, size_t dcap, char *res, size_t rcap)
{
    const char *slash = strchr(j, '/');
    size_t barelen = slash ? (size_t)(slash - j) : strlen(j);
    const char *at = memchr(j, '@', barelen);
    copy_str(user, ucap, j, at ? (size_t)(at - j) : 0);
    const char *ds = at ? at + 1 : j;
    copy_str(dom, dcap, ds, barelen - (size_t)(ds - j));
    copy_str(res, rcap, slash ? slash + 1 : "", slash ? strlen(slash + 1) : 0);
}

static int client_bind(run *r, client *c, const xml_node *features, long long deadline, int line)
{
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_puts(&b, "<iq type='set' id='bind1'><bind xmlns='" NS_BIND "'>");
    if (c->resource[0]) {
        xml_buf_puts(&b, "<resource>");
        xml_buf_escape(&b, c->resource, strlen(c->resource));
        xml_buf_puts(&b, "</resource>");
    }
    xml_buf_puts(&b, "</bind></iq>");
    int k = b.oom ? -1 : conn_write(c, b.data, b.len);
    xml_buf_free(&b);
    if (k < 0) { fail(r, line, "cannot send the bind request"); return -1; }
    xml_node *n;
    for (;;) {
        if (!(n = neg_next(r, c, deadline, "the bind result", line))) return -1;
        const char *id = xml_attr_get(n, "id");
        if (strcmp(n->name, "iq") == 0 && ns_eq(n->ns, XML_NS_CLIENT) && id && strcmp(id, "bind1") == 0) break;
    }
    const char *type = xml_attr_get(n, "type");
    const xml_node *bind = xml_child(n, "bind", NS_BIND);
    const xml_node *jn = bind ? xml_child(bind, "jid", NS_BIND) : NULL;
    if (!type || strcmp(type, "result") != 0 || !jn || !*xml_text(jn)) {
        fail(r, line, "resource binding failed");
        note_received(r, n);
        return -1;
    }
    const char *t = xml_text(jn);
    size_t tn = strlen(t);
    trim_span(&t, &tn);
    copy_str(c->full, sizeof c->full, t, tn);
    c->bound = 1;

    const xml_node *sess = xml_child(features, "session", NS_SESSION);
    if (sess && !xml_child(sess, "optional", NS_SESSION)) {
        if (conn_puts(c, "<iq type='set' id='sess1'><session xmlns='" NS_SESSION "'/></iq>") < 0) {
            fail(r, line, "cannot send the session request");
            return -1;
        }
        for (;;) {
            if (!(n = neg_next(r, c, deadline, "the session result", line))) return -1;
            const char *id = xml_attr_get(n, "id");
            if (strcmp(n->name, "iq") == 0 && id && strcmp(id, "sess1") == 0) break;
        }
        type = xml_attr_get(n, "type");
        if (!type || strcmp(type, "result") != 0) {
            fail(r, line, "session establishment failed");
            note_received(r, n);
            return -1;
        }
    }
    return 0;
}

static int client_connect(run *r, int ci, int line)
{
    client *c = &r->cl[ci];
    const client_def *d = &r->s->cl[ci];
    if (c->fd >= 0) { fail(r, line, "%s is already connected", d->name); return -1; }
    long long deadline = now_ms() + opt_timeout;
    char jres[256];
    split_jid(d->jid, c->user, sizeof c->user, c->domain, sizeof c->domain, jres, sizeof jres);
    if (r->domain) copy_str(c->domain, sizeof c->domain, r->domain, strlen(r->domain));
    const char *res = d->resource[0] ? d->resource : jres;
    copy_str(c->resource, sizeof c->resource, res, strlen(res));
    c->full[0] = '\0';
    c->name = d->name;
    xml_buf why;
    xml_buf_init(&why);
    c->fd = tcp_connect(r->host, r->port, deadline, &why);
    if (c->fd < 0) {
        fail(r, line, "%s", buf_str(&why));
        xml_buf_free(&why);
        return -1;
    }
    xml_limits lim;
    xml_limits_default(&lim);
    c->arena = xml_arena_new();
    c->parser = xml_parser_new(&lim, &client_events, c);
    if (!c->arena || !c->parser) { fail(r, line, "out of memory"); goto bad; }
    c->negotiating = 1;
    int tls = 0, authed = 0;
    for (int round = 0;; round++) {
        if (round == 4) { fail(r, line, "too many stream restarts"); goto bad; }
        restart_parser(c);
        if (send_stream_header(c) < 0) { fail(r, line, "cannot send the stream header"); goto bad; }
        xml_node *f = neg_next(r, c, deadline, "stream features", line);
        if (!f) goto bad;
        if (!c->stream_opened || c->bad_header) { fail(r, line, "bad stream header from the server"); goto bad; }
        if (strcmp(f->name, "features") != 0 || !ns_eq(f->ns, XML_NS_STREAM)) {
            fail(r, line, "expected <stream:features/>");
            note_received(r, f);
            goto bad;
        }
        if (!tls && xml_child(f, "starttls", NS_TLS)) {
            if (conn_puts(c, "<starttls xmlns='" NS_TLS "'/>") < 0) { fail(r, line, "cannot send <starttls/>"); goto bad; }
            xml_node *p = neg_next(r, c, deadline, "<proceed/>", line);
            if (!p) goto bad;
            if (strcmp(p->name, "proceed") != 0 || !ns_eq(p->ns, NS_TLS)) {
                fail(r, line, "STARTTLS refused");
                note_received(r, p);
                goto bad;
            }
            c->in_pos = c->in_len = 0;      /* nothing may follow <proceed/> in the clear */
            xml_buf_reset(&why);
            if (tls_handshake(c, deadline, &why) < 0) { fail(r, line, "%s", buf_str(&why)); goto bad; }
            tls = 1;
            continue;
        }
        if (!authed) {
            const xml_node *mechs = xml_child(f, "mechanisms", NS_SASL);
            if (!mechs) { fail(r, line, "no SASL mechanisms offered"); note_received(r, f); goto bad; }
            if (client_auth(r, c, d, mechs, deadline, line) < 0) goto bad;
            authed = 1;
            continue;
        }
        if (!xml_child(f, "bind", NS_BIND)) { fail(r, line, "resource binding not offered"); note_received(r, f); goto bad; }
        if (client_bind(r, c, f, deadline, line) < 0) goto bad;
        break;
    }
    c->negotiating = 0;
    xml_buf_free(&why);
    return 0;
bad:
    xml_buf_free(&why);
    client_close(c);
    return -1;
}

/* Sends our closing tag and waits (bounded) for the server's, discarding stanzas. */
static void client_shutdown(client *c)
{
    if (c->fd < 0) return;
    if (!c->stream_closed && !c->eof && !c->perr && conn_puts(c, "</stream:stream>") == 0) {
        long long deadline = now_ms() + CLOSE_WAIT_MS;
        xml_node *n;
        while (client_wait(c, deadline, &n, 1) == GOT_STANZA)
            ;
    }
    client_close(c);
}

/* ------------------------------------------------------------------------------------------------ */
/* Actions */

static int client_by_name(const script *s, const char *name, size_t n)
{
    for (int i = 0; i < s->ncl; i++)
        if (strlen(s->cl[i].name) == n && memcmp(s->cl[i].name, name, n) == 0) return i;
    return -1;
}

/* Replaces ${NAME's full JID} and ${NAME's JID}. */
static int substitute(run *r, const char *in, xml_buf *out, int line)
{
    const char *p = in;
    for (;;) {
        const char *s = strstr(p, "${");
        if (!s) { xml_buf_puts(out, p); break; }
        xml_buf_append(out, p, (size_t)(s - p));
        const char *e = strchr(s, '}');
        if (!e) { fail(r, line, "unterminated ${ in XML"); return -1; }
        const char *name = s + 2;
        size_t n = (size_t)(e - name);
        static const char full_sfx[] = "'s full JID", bare_sfx[] = "'s JID";
        int ci = -1, full = 0;
        if (n > sizeof full_sfx - 1 && memcmp(e - (sizeof full_sfx - 1), full_sfx, sizeof full_sfx - 1) == 0) {
            ci = client_by_name(r->s, name, n - (sizeof full_sfx - 1));
            full = 1;
        } else if (n > sizeof bare_sfx - 1 && memcmp(e - (sizeof bare_sfx - 1), bare_sfx, sizeof bare_sfx - 1) == 0)
            ci = client_by_name(r->s, name, n - (sizeof bare_sfx - 1));
        if (ci < 0) { fail(r, line, "unknown variable ${%.*s}", (int)n, name); return -1; }
        client *c = &r->cl[ci];
        char bare[1100];
        const char *val;
        if (full) {
            if (!c->full[0]) { fail(r, line, "${%.*s} used before that client was bound", (int)n, name); return -1; }
            val = c->full;
        } else {
            const char *src = c->full[0] ? c->full : r->s->cl[ci].jid;
            const char *slash = strchr(src, '/');
            copy_str(bare, sizeof bare, src, slash ? (size_t)(slash - src) : strlen(src));
            val = bare;
        }
        xml_buf_escape(out, val, strlen(val));
        p = e + 1;
    }
    if (out->oom) { fail(r, line, "out of memory"); return -1; }
    return 0;
}

static int action_snippet(run *r, const action *a, snippet *sn)
{
    xml_buf text, err;
    xml_buf_init(&text);
    xml_buf_init(&err);
    int rc = substitute(r, buf_str(&a->text), &text, a->line);
    if (rc == 0 && parse_snippet(r->tmp, buf_str(&text), sn, &err) < 0) {
        fail(r, a->line, "%s", buf_str(&err));
        put_indented(&r->expected, "", buf_str(&text));
        rc = -1;
    }
    xml_buf_free(&text);
    xml_buf_free(&err);
    return rc;
}

static client *connected_client(run *r, const action *a)
{
    client *c = &r->cl[a->client];
    if (c->fd < 0) {
        fail(r, a->line, "%s is not connected", r->s->cl[a->client].name);
        return NULL;
    }
    return c;
}

/* Drops whitespace-only text (the script's indentation) so that what is sent is what the script means. */
static void strip_blank_text(xml_node *n)
{
    xml_node *c = n->children;
    while (c) {
        xml_node *next = c->next;
        if (c->name) strip_blank_text(c);
        else {
            const char *t = c->text ? c->text : "";
            size_t len = c->text_len;
            trim_span(&t, &len);
            if (!len) xml_remove_child(n, c);
        }
        c = next;
    }
}

static int act_send(run *r, const action *a)
{
    client *c = connected_client(r, a);
    if (!c) return -1;
    if (a->kind == ACT_SEND_RAW) {
        if (conn_write(c, a->text.data, a->text.len) < 0) { fail(r, a->line, "cannot send: connection lost"); return -1; }
    } else {
        snippet sn;
        if (action_snippet(r, a, &sn) < 0) return -1;
        for (size_t i = 0; i < sn.count; i++) {
            xml_buf b;
            xml_buf_init(&b);
            strip_blank_text((xml_node *)sn.nodes[i]);
            serialize_node(&b, sn.nodes[i]);
            int k = b.oom ? -1 : conn_write(c, b.data, b.len);
            xml_buf_free(&b);
            if (k < 0) { fail(r, a->line, "cannot send: connection lost"); return -1; }
        }
    }
    sleep_ms(SEND_PAUSE_MS);
    return 0;
}

static int receive_one(run *r, const action *a, client *c, const xml_node *exp)
{
    long long deadline = now_ms() + opt_timeout;
    xml_buf skipped;
    xml_buf_init(&skipped);
    size_t nskipped = 0;
    int rc = -1;
    for (;;) {
        xml_node *got = NULL;
        int st = client_wait(c, deadline, &got, 1);
        if (st == GOT_STANZA) {
            if (scs_match(exp, got)) {
                xml_buf_puts(&r->notes, buf_str(&skipped));
                rc = 0;
                break;
            }
            if (opt_strict) {
                fail(r, a->line, "received stanza does not match");
                note_received(r, got);
                break;
            }
            nskipped++;
            xml_buf_printf(&skipped, "  note: %s skipped (line %d): ", r->s->cl[a->client].name, a->line);
            serialize_node(&skipped, got);
            xml_buf_puts(&skipped, "\n");
            note_received(r, got);      /* shown only if this receive fails */
            continue;
        }
        if (st == GOT_TIMEOUT)
            fail(r, a->line, "%s within %d ms", nskipped ? "no matching stanza" : "no stanza", opt_timeout);
        else
            fail_closed(r, c, a->line, nskipped ? " before a matching stanza came" : "");
        break;
    }
    if (rc == 0) xml_buf_reset(&r->received);
    else {
        serialize_node(&r->expected, exp);
        xml_buf_puts(&r->expected, "\n");
    }
    xml_buf_free(&skipped);
    return rc;
}

static int act_receive(run *r, const action *a)
{
    client *c = connected_client(r, a);
    if (!c) return -1;
    snippet sn;
    if (action_snippet(r, a, &sn) < 0) return -1;
    for (size_t i = 0; i < sn.count; i++)
        if (receive_one(r, a, c, sn.nodes[i]) < 0) return -1;
    return 0;
}

/* Fails if c has (or gets within wait_ms) a stanza; all pending ones are shown. */
static int expect_no_stanza(run *r, client *c, int wait_ms, int line, const char *what)
{
    xml_node *n;
    long long deadline = now_ms() + wait_ms;
    int st = client_wait(c, deadline, &n, 0);
    if (st == GOT_STANZA) {
        fail(r, line, "%s", what);
        while (client_wait(c, now_ms() + DRAIN_MS, &n, 1) == GOT_STANZA) note_received(r, n);
        return -1;
    }
    if (st == GOT_CLOSED && !c->stream_closed) {
        fail_closed(r, c, line, "");
        return -1;
    }
    return 0;
}

static int act_receive_nothing(run *r, const action *a)
{
    client *c = connected_client(r, a);
    if (!c) return -1;
    return expect_no_stanza(r, c, NOTHING_MS, a->line, "expected nothing, received a stanza");
}

static int act_disconnect(run *r, const action *a)
{
    client *c = connected_client(r, a);
    if (!c) return -1;
    if (opt_strict && expect_no_stanza(r, c, DRAIN_MS, a->line, "unconsumed stanza at disconnect") < 0) return -1;
    client_shutdown(c);
    return 0;
}

static int run_action(run *r, const action *a)
{
    xml_arena_reset(r->tmp);
    switch (a->kind) {
    case ACT_CONNECT: return client_connect(r, a->client, a->line);
    case ACT_DISCONNECT: return act_disconnect(r, a);
    case ACT_SEND:
    case ACT_SEND_RAW: return act_send(r, a);
    case ACT_RECEIVE: return act_receive(r, a);
    case ACT_RECEIVE_NOTHING: return act_receive_nothing(r, a);
    }
    return -1;
}

static void run_init(run *r, script *s, const char *host, const char *port, const char *domain)
{
    memset(r, 0, sizeof *r);
    r->s = s;
    r->host = host;
    r->port = port;
    r->domain = domain;
    for (int i = 0; i < MAX_CLIENTS; i++) r->cl[i].fd = -1;
    xml_buf_init(&r->why);
    xml_buf_init(&r->expected);
    xml_buf_init(&r->received);
    xml_buf_init(&r->notes);
}

static void run_free(run *r)
{
    for (int i = 0; i < MAX_CLIENTS; i++) client_close(&r->cl[i]);
    if (r->tmp) xml_arena_free(r->tmp);
    xml_buf_free(&r->why);
    xml_buf_free(&r->expected);
    xml_buf_free(&r->received);
    xml_buf_free(&r->notes);
}

/* Runs every action of s; the outcome is in r. */
static void run_script(run *r)
{
    r->tmp = xml_arena_new();
    if (!r->tmp) { fail(r, 0, "out of memory"); return; }
    int last_line = 0;
    for (int i = 0; i < r->s->nacts && !r->failed; i++) {
        run_action(r, &r->s->acts[i]);
        last_line = r->s->acts[i].line;
    }
    for (int i = 0; i < r->s->ncl; i++) {
        client *c = &r->cl[i];
        if (c->fd < 0) continue;
        if (opt_strict && !r->failed)
            expect_no_stanza(r, c, DRAIN_MS, last_line, "unconsumed stanza at the end of the script");
        client_shutdown(c);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* A fresh Couplet per script */

typedef struct server_proc {
    pid_t pid;
    char dir[128], conf[192], log[192], data[192];
    char port[16];
} server_proc;

static int pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void log_tail(const char *path, xml_buf *out, int lines)
{
    FILE *f = fopen(path, "rb");
    if (!f) return;
    xml_buf all;
    xml_buf_init(&all);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) xml_buf_append(&all, chunk, n);
    fclose(f);
    if (all.len) {
        size_t start = all.len;
        int seen = 0;
        if (start && all.data[start - 1] == '\n') start--;
        while (start > 0 && seen < lines) {
            start--;
            if (all.data[start] == '\n') seen++;
        }
        if (all.data[start] == '\n') start++;
        xml_buf_append(out, all.data + start, all.len - start);
        if (all.data[all.len - 1] != '\n') xml_buf_puts(out, "\n");
    }
    xml_buf_free(&all);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* waitpid with a bound; 1 when it exited (status filled), 0 when still running after ms */
static int wait_child(pid_t pid, int ms, int *status)
{
    long long deadline = now_ms() + ms;
    for (;;) {
        pid_t k = waitpid(pid, status, WNOHANG);
        if (k == pid) return 1;
        if (k < 0 && errno != EINTR) { *status = 0; return 1; }
        if (now_ms() >= deadline) return 0;
        sleep_ms(10);
    }
}

static void describe_status(xml_buf *b, int status)
{
    if (WIFEXITED(status)) xml_buf_printf(b, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) xml_buf_printf(b, "killed by signal %d", WTERMSIG(status));
    else xml_buf_puts(b, "unknown status");
}

static pid_t spawn(const char *bin, const char *const argv[], int stdin_fd, const char *logpath)
{
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int nullfd = stdin_fd >= 0 ? stdin_fd : open("/dev/null", O_RDONLY);
        if (nullfd < 0 || dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) _exit(126);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(logfd);
    return pid;
}

static int adduser(const char *bin, server_proc *sp, const client_def *d, xml_buf *why)
{
    char bare[512];
    const char *slash = strchr(d->jid, '/');
    copy_str(bare, sizeof bare, d->jid, slash ? (size_t)(slash - d->jid) : strlen(d->jid));
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) { xml_buf_printf(why, "pipe: %s", strerror(errno)); return -1; }
    const char *argv[] = { bin, "-c", sp->conf, "adduser", bare, NULL };
    pid_t pid = spawn(bin, argv, pfd[0], sp->log);
    close(pfd[0]);
    if (pid < 0) {
        close(pfd[1]);
        xml_buf_printf(why, "cannot start %s: %s", bin, strerror(errno));
        return -1;
    }
    size_t plen = strlen(d->password);
    int werr = write(pfd[1], d->password, plen) != (ssize_t)plen || write(pfd[1], "\n", 1) != 1;
    close(pfd[1]);
    int status = 0;
    if (!wait_child(pid, 10000, &status)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        xml_buf_printf(why, "adduser %s did not finish", bare);
        return -1;
    }
    if (werr || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        xml_buf_printf(why, "adduser %s failed (", bare);
        describe_status(why, status);
        xml_buf_puts(why, ")");
        return -1;
    }
    return 0;
}

static int port_accepts(const char *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)atoi(port));
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Same bare JID (ASCII case-insensitive, as JID local and domain parts compare)? */
static int same_account(const char *a, const char *b)
{
    size_t na = strcspn(a, "/"), nb = strcspn(b, "/");
    return na == nb && strncasecmp(a, b, na) == 0;
}

/* Temp dir, config, accounts, server started and listening. */
static int server_start(const char *bin, const script *s, server_proc *sp, xml_buf *why)
{
    memset(sp, 0, sizeof *sp);
    sp->pid = -1;
    snprintf(sp->dir, sizeof sp->dir, "/tmp/scs-XXXXXX");
    if (!mkdtemp(sp->dir)) { xml_buf_printf(why, "mkdtemp: %s", strerror(errno)); sp->dir[0] = '\0'; return -1; }
    snprintf(sp->conf, sizeof sp->conf, "%s/couplet.conf", sp->dir);
    snprintf(sp->log, sizeof sp->log, "%s/couplet.log", sp->dir);
    snprintf(sp->data, sizeof sp->data, "%s/data", sp->dir);
    if (mkdir(sp->data, 0700) < 0) { xml_buf_printf(why, "mkdir: %s", strerror(errno)); return -1; }
    int port = pick_port();
    if (port <= 0) { xml_buf_puts(why, "no free port"); return -1; }
    snprintf(sp->port, sizeof sp->port, "%d", port);
    FILE *f = fopen(sp->conf, "w");
    if (!f) { xml_buf_printf(why, "cannot write %s: %s", sp->conf, strerror(errno)); return -1; }
    fprintf(f, "domain = localhost\nmuc_domain = conference.localhost\nbind = 127.0.0.1\nc2s_port = %d\n"
               "c2s_tls_port = 0\ndata_dir = %s\nlog_level = warn\nscram_iterations = 4096\n", port, sp->data);
    if (fclose(f) != 0) { xml_buf_printf(why, "cannot write %s", sp->conf); return -1; }
    for (int i = 0; i < s->ncl; i++) {
        int seen = 0;           /* several clients may share one account (one resource each) */
        for (int k = 0; k < i && !seen; k++) seen = same_account(s->cl[k].jid, s->cl[i].jid);
        if (!seen && adduser(bin, sp, &s->cl[i], why) < 0) return -1;
    }
    const char *argv[] = { bin, "-c", sp->conf, NULL };
    sp->pid = spawn(bin, argv, -1, sp->log);
    if (sp->pid < 0) { xml_buf_printf(why, "cannot start %s: %s", bin, strerror(errno)); return -1; }
    long long deadline = now_ms() + 5000;
    for (;;) {
        int status;
        if (port_accepts(sp->port)) return 0;
        if (waitpid(sp->pid, &status, WNOHANG) == sp->pid) {
            sp->pid = -1;
            xml_buf_puts(why, "server exited at start (");
            describe_status(why, status);
            xml_buf_puts(why, ")");
            return -1;
        }
        if (now_ms() >= deadline) { xml_buf_puts(why, "server did not accept connections within 5 s"); return -1; }
        sleep_ms(20);
    }
}

/* SIGTERM, bounded wait (SIGKILL after 3 s); 0 on a clean exit, -1 with why filled. */
static int server_stop(server_proc *sp, xml_buf *why)
{
    int rc = 0;
    if (sp->pid > 0) {
        int status = 0;
        kill(sp->pid, SIGTERM);
        const char *sep = why->len ? "; " : "";
        if (!wait_child(sp->pid, 3000, &status)) {
            kill(sp->pid, SIGKILL);
            waitpid(sp->pid, &status, 0);
            xml_buf_printf(why, "%sserver did not stop within 3 s of SIGTERM (killed)", sep);
            rc = -1;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            xml_buf_printf(why, "%sserver did not stop cleanly (", sep);
            describe_status(why, status);
            xml_buf_puts(why, ")");
            rc = -1;
        }
        sp->pid = -1;
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------------ */
/* Reporting */

static void report_failure(xml_buf *out, const char *name, const run *r, const xml_buf *setup, const xml_buf *tail)
{
    if (r->failed) {
        xml_buf_printf(out, "FAIL %s: %s (line %d)\n", name, buf_str(&r->why), r->why_line);
        if (setup->len) xml_buf_printf(out, "  also: %s\n", buf_str(setup));
    } else
        xml_buf_printf(out, "FAIL %s: %s (line 0)\n", name, buf_str(setup));
    if (r->expected.len) {
        xml_buf_puts(out, "  expected:\n");
        put_indented(out, "    ", buf_str(&r->expected));
    }
    if (r->failed && (r->expected.len || r->received.len)) {
        xml_buf_puts(out, "  received:\n");
        if (r->received.len) put_indented(out, "    ", buf_str(&r->received));
        else xml_buf_puts(out, "    (nothing)\n");
    }
    if (tail->len) {
        xml_buf_puts(out, "  server log (tail):\n");
        put_indented(out, "    ", buf_str(tail));
    }
}

/* Runs one script file (with its own server when couplet is set) and prints its result; 0 if it passed. */
static int run_file(const char *path, const char *couplet, const char *host, const char *port, const char *domain)
{
    script s;
    if (script_load(&s, path) < 0) {
        printf("FAIL %s: %s (line %d)\n", s.name, s.err, s.err_line);
        fflush(stdout);
        script_free(&s);
        return -1;
    }
    server_proc sp;
    xml_buf setup, tail, out;
    xml_buf_init(&setup);
    xml_buf_init(&tail);
    xml_buf_init(&out);
    run r;
    int server_bad = 0;
    if (couplet) {
        server_bad = server_start(couplet, &s, &sp, &setup) < 0;
        run_init(&r, &s, "127.0.0.1", sp.port, "localhost");
    } else
        run_init(&r, &s, host, port, domain);
    if (!server_bad) run_script(&r);
    if (couplet) {
        /* after a failed start setup already says why; a failed stop adds its own reason */
        if (server_stop(&sp, &setup) < 0) server_bad = 1;
        if (r.failed || server_bad) log_tail(sp.log, &tail, 20);
        if (sp.dir[0]) remove_tree(sp.dir);
    }
    int ok = !r.failed && !server_bad;
    if (ok) {
        xml_buf_printf(&out, "PASS %s\n", s.name);
        xml_buf_puts(&out, buf_str(&r.notes));
    } else
        report_failure(&out, s.name, &r, &setup, &tail);
    fputs(buf_str(&out), stdout);
    fflush(stdout);
    xml_buf_free(&out);
    run_free(&r);
    xml_buf_free(&setup);
    xml_buf_free(&tail);
    script_free(&s);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------------ */
/* Self-test of the matcher and the script parser */

static int st_pass, st_fail;

static void st_check(int cond, const char *what)
{
    if (cond) st_pass++;
    else {
        st_fail++;
        printf("self-test FAIL: %s\n", what);
    }
}

static void st_match(const char *exp, const char *got, int want, const char *what)
{
    xml_arena *a = xml_arena_new();
    snippet se, sg;
    xml_buf err;
    xml_buf_init(&err);
    if (!a || parse_snippet(a, exp, &se, &err) < 0 || parse_snippet(a, got, &sg, &err) < 0) {
        st_fail++;
        printf("self-test FAIL: %s: cannot parse (%s)\n", what, buf_str(&err));
    } else
        st_check(scs_match(se.nodes[0], sg.nodes[0]) == want, what);
    xml_buf_free(&err);
    if (a) xml_arena_free(a);
}

static void self_test_parser(void)
{
    static const char text[] =
        "# Title\n\n[Client] Juliet\n\tjid: juliet@localhost\n\tpassword: pw\n"
        "[Client] Juliet's phone\n\tjid: juliet@localhost/phone\n\tpassword: pw\n\tcolour: blue\n"
        "\n-----\n\n# comment\nJuliet's phone connects\n\nJuliet sends\n  <message to='a'/>\n"
        "\nJuliet's phone receives:\n\t<message from='${Juliet's JID}'/>\n\nJuliet receives: nothing\n"
        "Juliet sends raw:\n\t<a>\n\t# not a comment\n\nJuliet disconnects\n";
    script s;
    memset(&s, 0, sizeof s);
    char *copy = strdup(text);
    int rc = copy ? script_parse(&s, copy) : -1;
    st_check(rc == 0, "script parses");
    st_check(s.ncl == 2 && strcmp(s.cl[1].name, "Juliet's phone") == 0, "client names with apostrophes");
    st_check(s.nacts == 6, "six actions");
    if (s.nacts == 6) {
        st_check(s.acts[0].kind == ACT_CONNECT && s.acts[0].client == 1, "longest client name wins");
        st_check(s.acts[1].kind == ACT_SEND && s.acts[1].client == 0 && s.acts[1].line == 16, "sends without colon");
        st_check(s.acts[3].kind == ACT_RECEIVE_NOTHING, "receives: nothing");
        st_check(s.acts[4].kind == ACT_SEND_RAW && strcmp(buf_str(&s.acts[4].text), "<a>\n# not a comment") == 0,
                 "sends raw keeps its lines");
    }
    run r;
    run_init(&r, &s, "h", "p", "d");
    xml_buf out;
    xml_buf_init(&out);
    if (s.nacts >= 3) substitute(&r, buf_str(&s.acts[2].text), &out, 1);
    st_check(strcmp(buf_str(&out), "<message from='juliet@localhost'/>") == 0, "${NAME's JID} substitution");
    xml_buf_reset(&out);
    substitute(&r, "${Juliet's full JID}", &out, 1);
    st_check(r.failed, "${NAME's full JID} before bind fails");
    xml_buf_free(&out);
    run_free(&r);
    script_free(&s);
    free(copy);
    memset(&s, 0, sizeof s);
    char bad[] = "[Client] A\n\tjid: a@b\n-----\nB connects\n";
    st_check(script_parse(&s, bad) < 0 && s.err_line == 4, "unknown client reported with its line");
    script_free(&s);
}

static int self_test(void)
{
    st_match("<message to='a'/>", "<message to='a' from='b' id='x'/>", 1, "non-strict: extra attributes allowed");
    st_match("<x xmlns='urn:t' a='1'/>", "<x xmlns='urn:t' a='1' b='2'/>", 0, "strict: extra attribute refused");
    st_match("<x xmlns='urn:t' a='1'/>", "<x xmlns='urn:t' a='2'/>", 0, "attribute value compared");
    st_match("<x xmlns='urn:t'><a/><b/></x>", "<x xmlns='urn:t'><b/><a/></x>", 0, "strict: child order matters");
    st_match("<x xmlns='urn:t'><a/><b/></x>", "<x xmlns='urn:t'><a/><b/></x>", 1, "strict: same children match");
    st_match("<x xmlns='urn:t'><a/></x>", "<x xmlns='urn:t'><a/><b/></x>", 0, "strict: extra child refused");
    st_match("<x xmlns='urn:t'><a/></x>", "<x xmlns='urn:t'/>", 0, "strict: missing child refused");
    st_match("<message><body/><thread/></message>", "<message><thread/><x xmlns='urn:e'/><body/></message>", 1,
             "non-strict: any order, extra children");
    st_match("<message><x xmlns='urn:a'/><x xmlns='urn:a'/></message>", "<message><x xmlns='urn:a'/></message>", 0,
             "non-strict: expected children need distinct received ones");
    st_match("<presence><x xmlns='urn:t' scansion:strict='false'/><x xmlns='urn:t' a='1'/></presence>",
             "<presence><x xmlns='urn:t' a='1'/><x xmlns='urn:t' a='2'/></presence>", 1,
             "non-strict: assignment backtracks past a greedy choice");
    st_match("<iq id='{scansion:any}' type='result'/>", "<iq id='abc' type='result'/>", 1, "{scansion:any} matches");
    st_match("<iq id='{scansion:any}'/>", "<iq type='result'/>", 0, "{scansion:any} needs the attribute");
    st_match("<message><body>hi there</body></message>", "<message><body>\n  hi there \n</body></message>", 1,
             "text trimmed");
    st_match("<message><body>hi</body></message>", "<message><body>hello</body></message>", 0, "text compared");
    st_match("<message><body/></message>", "<message><body>anything</body></message>", 1,
             "empty expected text not compared");
    st_match("<message><body>  </body></message>", "<message><body>x</body></message>", 1,
             "blank expected text not compared");
    st_match("<presence scansion:strict='true' from='a'/>", "<presence from='a' to='b'/>", 0,
             "scansion:strict='true' on jabber:client");
    st_match("<x xmlns='urn:t' scansion:strict='false'/>", "<x xmlns='urn:t' a='1'><y/></x>", 1,
             "scansion:strict='false' on another namespace");
    st_match("<x xmlns='urn:t' scansion:strict='false'><y/></x>", "<x xmlns='urn:t'><z/><y a='1'/></x>", 0,
             "override covers that element only (children strict again)");
    st_match("<x xmlns='urn:t' scansion:strict='true'/>", "<x xmlns='urn:t'/>", 1,
             "scansion: attributes are not compared");
    st_match("<x xmlns='urn:a'/>", "<x xmlns='urn:b'/>", 0, "namespace compared");
    st_match("<presence/>", "<message/>", 0, "name compared");
    st_match("<message xml:lang='en'/>", "<message xml:lang='en' to='a'/>", 1, "prefixed attribute by namespace");
    st_match("<message lang='en'/>", "<message xml:lang='en'/>", 0, "unprefixed is not xml:lang");
    st_match("<presence from='r@c/R'><x xmlns='http://jabber.org/protocol/muc#user'><status code='201'/>"
             "<item affiliation='owner' role='moderator'/><status code='110'/></x></presence>",
             "<presence from='r@c/R' id='7'><c xmlns='urn:caps'/><x xmlns='http://jabber.org/protocol/muc#user'>"
             "<status code='201'/><item affiliation='owner' role='moderator'/><status code='110'/></x></presence>",
             1, "founding scenario's self-presence");
    st_match("<presence from='r@c/R'><x xmlns='http://jabber.org/protocol/muc#user'><status code='201'/>"
             "<item affiliation='owner' role='moderator'/><status code='110'/></x></presence>",
             "<presence from='r@c/R'><x xmlns='http://jabber.org/protocol/muc#user'>"
             "<item affiliation='owner' role='moderator' jid='a@b/c'/><status code='201'/><status code='110'/></x>"
             "</presence>", 0, "muc#user payload is strict");
    st_match("<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
             "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>", 1,
             "stream errors match");
    self_test_parser();
    printf("%d passed, %d failed\n", st_pass, st_fail);
    return st_fail ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: scs_runner [--strict] [--timeout-ms N] (--couplet BINARY | --host H --port P --domain D)"
                    " FILE.scs...\n       scs_runner --self-test\n");
}

int main(int argc, char **argv)
{
    const char *couplet = NULL, *host = NULL, *port = NULL, *domain = NULL;
    int i;
    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0) { i++; break; }
        if (strcmp(o, "--self-test") == 0) return self_test();
        if (strcmp(o, "--strict") == 0) { opt_strict = 1; continue; }
        if (i + 1 >= argc) { usage(); return 2; }
        const char *v = argv[++i];
        if (strcmp(o, "--timeout-ms") == 0) {
            opt_timeout = atoi(v);
            if (opt_timeout <= 0) { usage(); return 2; }
        } else if (strcmp(o, "--couplet") == 0) couplet = v;
        else if (strcmp(o, "--host") == 0) host = v;
        else if (strcmp(o, "--port") == 0) port = v;
        else if (strcmp(o, "--domain") == 0) domain = v;
        else { usage(); return 2; }
    }
    if (i >= argc || (!couplet && (!host || !port || !domain)) || (couplet && (host || port || domain))) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    opt_trace = getenv("SCS_TRACE") != NULL;
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx) { fprintf(stderr, "scs_runner: cannot create a TLS context\n"); return 2; }
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);   /* test servers use self-signed certificates */
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int passed = 0, failed = 0;
    for (; i < argc; i++) {
        if (run_file(argv[i], couplet, host, port, domain) == 0) passed++;
        else failed++;
    }
    SSL_CTX_free(tls_ctx);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
