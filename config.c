/* config.c - the configuration file (key = value lines over built-in defaults).
 * A file is parsed into a copy and only committed when every line and every cross-check is good, so a
 * refused file never leaves a half-applied configuration behind. */
#include "config.h"
#include "jid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>


void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->domain, "localhost");
    strcpy(c->muc_domain, "conference.localhost");
    strcpy(c->bind, "127.0.0.1");
    c->c2s_port = 5222;
    c->c2s_tls_port = 5223;
    strcpy(c->data_dir, "./data");
    c->require_encryption = 1;
    c->defer_accept = 10;
    c->max_stanza_size = 262144;
    c->max_depth = 64;
    c->max_attrs = 64;
    c->max_name_len = 256;
    c->max_output = 1048576;
    c->handshake_timeout = 60;
    c->idle_timeout = 300;
    c->scram_iterations = 4096;
    c->sasl_max_attempts = 3;
    c->max_connections = 100000;
    c->max_connections_per_ip = 100;
    c->max_read_rate = 65536;
    c->max_read_burst = 262144;
    c->auth_failures_per_ip = 10;
    c->auth_lockout = 60;
    c->max_sessions_per_account = 10;
    c->log_level = LOG_INFO;
    strcpy(c->admin_socket, "admin.sock");
    c->muc_create = 1;
    c->muc_max_rooms = 10000;
    c->muc_max_occupants = 1000;
    c->muc_max_rooms_per_user = 100;
    c->muc_max_history = 100;
    c->muc_default_history = 20;
    c->muc_default_persistent = 0;
    c->muc_default_public = 1;
    c->muc_lock_timeout = 300;
    c->muc_archive_max = 10000;
    c->muc_archive_fsync = 1;
}

int config_parse_bool(const char *s)
{
    static const char *const yes[] = { "true", "yes", "on", "1" }, *const no[] = { "false", "no", "off", "0" };

    if (!s) return -1;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) return 1;
        if (strcasecmp(s, no[i]) == 0) return 0;
    }
    return -1;
}

/* ---- the keys ---- */

enum key_kind {
    K_STRING,   /* any text without control characters */
    K_PATH,     /* like K_STRING, but not empty */
    K_DOMAIN,   /* a bare domain, stored normalised */
    K_ADDR,     /* a numeric IPv4 or IPv6 address */
    K_ADMINS,   /* space separated bare JIDs with a localpart, stored normalised */
    K_INT,
    K_UINT,
    K_SIZE,
    K_BOOL,
    K_LOGLEVEL,
    K_ROSTER,   /* empty or shared */
    K_USER      /* a system user name, or empty */
};

typedef struct key_def {
    const char *name;
    enum key_kind kind;
    size_t off, size;
    long long min, max;
} key_def;

#define FIELD(f) offsetof(config, f), sizeof(((config *)0)->f)
#define DAY 86400

static const key_def keys[] = {
    { "domain", K_DOMAIN, FIELD(domain), 0, 0 },
    { "muc_domain", K_DOMAIN, FIELD(muc_domain), 0, 0 },
    { "bind", K_ADDR, FIELD(bind), 0, 0 },
    { "c2s_port", K_INT, FIELD(c2s_port), 0, 65535 },
    { "c2s_tls_port", K_INT, FIELD(c2s_tls_port), 0, 65535 },
    { "data_dir", K_PATH, FIELD(data_dir), 0, 0 },
    { "tls_cert", K_STRING, FIELD(tls_cert), 0, 0 },
    { "tls_key", K_STRING, FIELD(tls_key), 0, 0 },
    { "require_encryption", K_BOOL, FIELD(require_encryption), 0, 1 },
    { "defer_accept", K_INT, FIELD(defer_accept), 0, 3600 },
    { "max_stanza_size", K_SIZE, FIELD(max_stanza_size), 1, 1LL << 30 },
    { "max_depth", K_UINT, FIELD(max_depth), 1, 100000 },
    { "max_attrs", K_UINT, FIELD(max_attrs), 1, 100000 },
    { "max_name_len", K_SIZE, FIELD(max_name_len), 1, 1LL << 20 },
    { "max_output", K_SIZE, FIELD(max_output), 1, 1LL << 40 },
    /* timeouts stay small enough to be turned into milliseconds in an int */
    { "handshake_timeout", K_INT, FIELD(handshake_timeout), 1, DAY },
    { "idle_timeout", K_INT, FIELD(idle_timeout), 1, DAY },
    { "scram_iterations", K_INT, FIELD(scram_iterations), 1, 10000000 },
    { "sasl_max_attempts", K_INT, FIELD(sasl_max_attempts), 1, 1000 },
    { "max_connections", K_INT, FIELD(max_connections), 1, 100000000 },
    { "max_connections_per_ip", K_INT, FIELD(max_connections_per_ip), 0, 100000000 },
    { "max_read_rate", K_SIZE, FIELD(max_read_rate), 0, 1LL << 40 },
    { "max_read_burst", K_SIZE, FIELD(max_read_burst), 0, 1LL << 40 },
    { "auth_failures_per_ip", K_INT, FIELD(auth_failures_per_ip), 0, 1000000 },
    { "auth_lockout", K_INT, FIELD(auth_lockout), 1, DAY },
    { "max_sessions_per_account", K_INT, FIELD(max_sessions_per_account), 1, 1000000 },
    { "log_level", K_LOGLEVEL, FIELD(log_level), LOG_ERR, LOG_DEBUG },
    { "roster", K_ROSTER, FIELD(roster_shared), 0, 1 },
    { "admin_socket", K_STRING, FIELD(admin_socket), 0, 0 },
    { "user", K_USER, FIELD(user), 0, 0 },
    { "muc_create", K_BOOL, FIELD(muc_create), 0, 1 },
    { "admins", K_ADMINS, FIELD(admins), 0, 0 },
    { "muc_max_rooms", K_INT, FIELD(muc_max_rooms), 1, 100000000 },
    { "muc_max_occupants", K_INT, FIELD(muc_max_occupants), 1, 100000000 },
    { "muc_max_rooms_per_user", K_INT, FIELD(muc_max_rooms_per_user), 1, 100000000 },
    { "muc_max_history", K_INT, FIELD(muc_max_history), 0, 1000000 },
    { "muc_default_history", K_INT, FIELD(muc_default_history), 0, 1000000 },
    { "muc_default_persistent", K_BOOL, FIELD(muc_default_persistent), 0, 1 },
    { "muc_default_public", K_BOOL, FIELD(muc_default_public), 0, 1 },
    { "muc_lock_timeout", K_INT, FIELD(muc_lock_timeout), 0, 86400 },
    { "muc_archive_max", K_INT, FIELD(muc_archive_max), 0, 100000000 },
    { "muc_archive_fsync", K_BOOL, FIELD(muc_archive_fsync), 0, 1 },
};
#define NKEYS (sizeof keys / sizeof keys[0])

static const key_def *find_key(const char *name, size_t *index)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0) { *index = i; return &keys[i]; }
    return NULL;
}

/* ---- errors ---- */

typedef struct load_ctx {
    const char *path;
    char *err;
    size_t errlen;
} load_ctx;

/* "path:line: message (key 'k')"; line 0 leaves out the line, key NULL the key. Always -1. */
static int fail(const load_ctx *x, unsigned line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(const load_ctx *x, unsigned line, const char *key, const char *fmt, ...)
{
    if (!x->err || x->errlen == 0) return -1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[32] = "";
    if (line) snprintf(where, sizeof where, ":%u", line);
    if (key)
        snprintf(x->err, x->errlen, "%s%s: %s (key '%.64s')", x->path, where, msg, key);
    else
        snprintf(x->err, x->errlen, "%s%s: %s", x->path, where, msg);
    return -1;
}

/* ---- values ---- */

/* Decimal digits only; -1 not a number, -2 out of [min, max]. */
static int parse_number(const char *v, long long min, long long max, long long *out)
{
    const char *p = v;
    int negative = 0;
    long long n = 0;

    if (*p == '-') { negative = 1; p++; }
    if (*p < '0' || *p > '9') return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (n > (LLONG_MAX - 9) / 10) n = LLONG_MAX;   /* saturate: out of range anyway */
        else n = n * 10 + (*p - '0');
    }
    if (negative) return min <= 0 && n <= -min ? (*out = -n, 0) : -2;
    if (n < min || n > max) return -2;
    *out = n;
    return 0;
}

static int has_control(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < 0x20 || *p == 0x7F) return 1;
    return 0;
}

static int set_string(const load_ctx *x, unsigned line, const key_def *k, char *field, const char *v)
{
    size_t len = strlen(v);
    if (len >= k->size) return fail(x, line, k->name, "value too long (%zu bytes, at most %zu)", len, k->size - 1);
    if (has_control(v)) return fail(x, line, k->name, "control character in value");
    if (k->kind == K_PATH && len == 0) return fail(x, line, k->name, "empty value");
    memcpy(field, v, len + 1);
    return 0;
}

static int set_domain(const load_ctx *x, unsigned line, const key_def *k, char *field, const char *v)
{
    jid j;
    if (strlen(v) >= k->size) return fail(x, line, k->name, "value too long (at most %zu bytes)", k->size - 1);
    if (jid_parse(v, &j) < 0 || j.local[0] || j.resource[0])
        return fail(x, line, k->name, "'%.300s' is not a valid domain", v);
    strcpy(field, j.domain);   /* normalising never lengthens it */
    return 0;
}

static int set_addr(const load_ctx *x, unsigned line, const key_def *k, char *field, const char *v)
{
    unsigned char buf[16];
    if (strlen(v) >= k->size || (inet_pton(AF_INET, v, buf) != 1 && inet_pton(AF_INET6, v, buf) != 1))
        return fail(x, line, k->name, "'%.100s' is not a numeric IPv4 or IPv6 address", v);
    strcpy(field, v);
    return 0;
}

static int set_admins(const load_ctx *x, unsigned line, const key_def *k, char *field, const char *v)
{
    char out[sizeof(((config *)0)->admins)];
    size_t used = 0;
    const char *p = v;

    for (;;) {
        p += strspn(p, " \t");
        if (!*p) break;
        size_t tl = strcspn(p, " \t");
        char tok[3 * JID_PART_MAX + 4];
        jid j;
        if (tl >= sizeof tok) return fail(x, line, k->name, "JID too long");
        memcpy(tok, p, tl);
        tok[tl] = '\0';
        if (jid_parse(tok, &j) < 0 || !j.local[0] || j.resource[0])
            return fail(x, line, k->name, "'%.300s' is not a bare JID of the form user@domain", tok);
        size_t room = sizeof out - used - (used ? 1 : 0);
        if (used) out[used++] = ' ';
        int n = jid_bare(&j, out + used, room);
        if (n < 0) return fail(x, line, k->name, "value too long (at most %zu bytes)", sizeof out - 1);
        used += (size_t)n;
        p += tl;
    }
    out[used] = '\0';
    memcpy(field, out, used + 1);
    return 0;
}

/* The portable user name characters (POSIX): whether such a user exists is only known where the server
 * starts, so that is checked there. */
static int set_user(const load_ctx *x, unsigned line, const key_def *k, char *field, const char *v)
{
    size_t len = strlen(v);
    if (len >= k->size) return fail(x, line, k->name, "value too long (%zu bytes, at most %zu)", len, k->size - 1);
    if (v[0] == '-' || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
        return fail(x, line, k->name, "'%.100s' is not a user name (letters, digits, '.', '_', '-')", v);
    memcpy(field, v, len + 1);
    return 0;
}

static int set_value(const load_ctx *x, unsigned line, const key_def *k, config *c, const char *v)
{
    char *field = (char *)c + k->off;
    long long n = 0;
    int r;

    switch (k->kind) {
    case K_STRING:
    case K_PATH: return set_string(x, line, k, field, v);
    case K_DOMAIN: return set_domain(x, line, k, field, v);
    case K_ADDR: return set_addr(x, line, k, field, v);
    case K_ADMINS: return set_admins(x, line, k, field, v);
    case K_USER: return set_user(x, line, k, field, v);
    case K_BOOL:
        r = config_parse_bool(v);
        if (r < 0) return fail(x, line, k->name, "'%.100s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
        *(int *)(void *)field = r;
        return 0;
    case K_LOGLEVEL: {
        static const char *const names[] = { "error", "warn", "info", "debug" };
        for (int i = 0; i < 4; i++)
            if (strcasecmp(v, names[i]) == 0) { *(int *)(void *)field = i; return 0; }
        if (parse_number(v, k->min, k->max, &n) < 0)
            return fail(x, line, k->name, "'%.100s' is not a log level (error, warn, info, debug or 0-3)", v);
        *(int *)(void *)field = (int)n;
        return 0;
    }
    case K_ROSTER:
        if (strcmp(v, "empty") && strcmp(v, "shared"))
            return fail(x, line, k->name, "'%.100s' is not a roster mode (empty or shared)", v);
        *(int *)(void *)field = strcmp(v, "shared") == 0;
        return 0;
    case K_INT:
    case K_UINT:
    case K_SIZE:
        r = parse_number(v, k->min, k->max, &n);
        if (r == 0 && k->kind == K_SIZE && (unsigned long long)n > SIZE_MAX) r = -2;
        if (r == -1) return fail(x, line, k->name, "'%.100s' is not a number", v);
        if (r == -2) return fail(x, line, k->name, "%.100s is out of range %lld-%lld", v, k->min, k->max);
        if (k->kind == K_INT) *(int *)(void *)field = (int)n;
        else if (k->kind == K_UINT) *(unsigned *)(void *)field = (unsigned)n;
        else *(size_t *)(void *)field = (size_t)n;
        return 0;
    }
    return -1;
}

/* ---- lines ---- */

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

static char *trim(char *s)
{
    while (is_blank(*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && is_blank(s[n - 1])) s[--n] = '\0';
    return s;
}

/* Turns the text after '=' into the bare value in place: a double-quoted value is taken verbatim (no
 * escapes); otherwise a '#' that follows whitespace starts a comment. NULL with *why set on error. */
static char *extract_value(char *rest, const char **why)
{
    char *v = rest;
    while (is_blank(*v)) v++;
    if (*v == '"') {
        char *close = strchr(v + 1, '"');
        if (!close) { *why = "missing closing '\"'"; return NULL; }
        char *after = close + 1;
        while (is_blank(*after)) after++;
        if (*after && !(*after == '#' && is_blank(after[-1]))) {
            *why = "unexpected text after the closing '\"'";
            return NULL;
        }
        *close = '\0';
        return v + 1;
    }
    for (char *p = rest; *p; p++)
        if (*p == '#' && p > rest && is_blank(p[-1])) { *p = '\0'; break; }
    return trim(v);
}

static int load_line(const load_ctx *x, unsigned line, char *text, config *c, unsigned *set_on)
{
    char *s = trim(text);
    if (*s == '\0' || *s == '#') return 0;
    char *eq = strchr(s, '=');
    if (!eq) return fail(x, line, NULL, "expected 'key = value' but found no '='");
    *eq = '\0';
    char *name = trim(s);
    if (*name == '\0') return fail(x, line, NULL, "missing key before '='");
    size_t index = 0;
    const key_def *k = find_key(name, &index);
    if (!k) return fail(x, line, name, "unknown key");
    const char *why = NULL;
    char *v = extract_value(eq + 1, &why);
    if (!v) return fail(x, line, name, "%s", why);
    if (set_value(x, line, k, c, v) < 0) return -1;
    set_on[index] = line;
    return 0;
}

static unsigned line_of(const unsigned *set_on, const char *a, const char *b)
{
    size_t ia = 0, ib = 0;
    find_key(a, &ia);
    find_key(b, &ib);
    return set_on[ia] > set_on[ib] ? set_on[ia] : set_on[ib];
}

/* rules that involve more than one key; reported at the line of the later one */
static int check_whole(const load_ctx *x, const config *c, const unsigned *set_on)
{
    if (strcmp(c->domain, c->muc_domain) == 0)
        return fail(x, line_of(set_on, "domain", "muc_domain"), "muc_domain",
                    "muc_domain must differ from domain ('%s')", c->domain);
    if (c->muc_default_history > c->muc_max_history)
        return fail(x, line_of(set_on, "muc_default_history", "muc_max_history"), "muc_default_history",
                    "%d exceeds muc_max_history (%d)", c->muc_default_history, c->muc_max_history);
    if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0'))
        return fail(x, line_of(set_on, "tls_cert", "tls_key"), c->tls_cert[0] ? "tls_key" : "tls_cert",
                    "tls_cert and tls_key must be given together");
    char sock[CONFIG_SOCKET_PATH_MAX];
    if (config_admin_socket_path(c, sock, sizeof sock) < 0)
        return fail(x, line_of(set_on, "admin_socket", "data_dir"), "admin_socket",
                    "the socket path (under data_dir when relative) is longer than %d bytes",
                    CONFIG_SOCKET_PATH_MAX - 1);
    if (c->c2s_port != 0 && c->c2s_port == c->c2s_tls_port)
        return fail(x, line_of(set_on, "c2s_port", "c2s_tls_port"), "c2s_tls_port",
                    "c2s_port and c2s_tls_port are the same port (%d)", c->c2s_port);
    return 0;
}

int config_admin_socket_path(const config *c, char *out, size_t n)
{
    int len;
    if (!c->admin_socket[0]) len = snprintf(out, n, "%s", "");
    else if (c->admin_socket[0] == '/') len = snprintf(out, n, "%s", c->admin_socket);
    else len = snprintf(out, n, "%s/%s", c->data_dir, c->admin_socket);
    return len < 0 || (size_t)len >= n || len >= CONFIG_SOCKET_PATH_MAX ? -1 : 0;
}

int config_load(config *c, const char *path, char *err, size_t errlen)
{
    load_ctx x = { path ? path : "(null)", err, errlen };
    if (err && errlen) err[0] = '\0';
    if (!c || !path) return fail(&x, 0, NULL, "no configuration or path given");

    FILE *f = fopen(path, "r");
    if (!f) return fail(&x, 0, NULL, "cannot open: %s", strerror(errno));

    config work = *c;
    unsigned set_on[NKEYS] = { 0 };
    char *text = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned line = 0;
    int rc = 0;

    while ((got = getline(&text, &cap, f)) >= 0) {
        line++;
        if (line == UINT_MAX) { rc = fail(&x, line, NULL, "too many lines"); break; }
        char *s = text;
        if (line == 1 && got >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) { s += 3; got -= 3; }
        if (strlen(s) != (size_t)got) { rc = fail(&x, line, NULL, "NUL byte in line"); break; }
        if ((rc = load_line(&x, line, s, &work, set_on)) < 0) break;
    }
    if (rc == 0 && ferror(f)) rc = fail(&x, 0, NULL, "read error: %s", strerror(errno));
    free(text);
    fclose(f);
    if (rc == 0) rc = check_whole(&x, &work, set_on);
    if (rc == 0) *c = work;
    return rc;
}
