/* fuzz_admin.c - libFuzzer harness for the admin socket's line protocol (admin.c).
 *
 * Input: byte 0 picks a split step (1-64) and which canned host data to answer with; the rest is what a
 * client sends. The harness host answers every command with fixed data full of awkward text (quotes,
 * backslashes, control characters, bytes that are not UTF-8, lines that start with '.').
 * Checks (abort() on failure):
 *  - the input fed whole and fed in pieces of the step's size give the same output and the same close;
 *  - the output is a sequence of whole answers: "ok" or "error: ..." first, data lines, then "." alone;
 *    in JSON mode the data is one line that is a valid JSON object; a data line never holds a control
 *    character, and every line is UTF-8;
 *  - an answer comes for every complete line up to a close, and only a close stops the answers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

static void die(const char *what, const char *text, size_t len) {
    fprintf(stderr, "fuzz_admin: %s: '%.*s'\n", what, (int)(len > 400 ? 400 : len), text);
    abort();
}

/* ---- a host with awkward data ---- */

static int variant;
static const char *const texts[] = {"plain", "quote\" back\\slash", "tab\there\nnewline\r", "\xff\xfe not utf-8 \xc0\xaf",
                                    ".dot first", "caf\xc3\xa9 \xf0\x9f\x98\x80", ""};
#define NTEXTS (sizeof texts / sizeof *texts)

static const char *text(int i) {
    return texts[(unsigned)(i + variant) % NTEXTS];
}

static void h_status(void *ud, admin_status *st) {
    st->version = text(0);
    st->started = 1700000000;
    st->now = variant & 1 ? 1700000000 + 93784 : 1600000000;  /* a clock that went back, too */
    st->connections = 3;
    st->rss_bytes = variant & 2 ? 0 : 123456789;
}

static void h_sessions(void *ud, int (*each)(void *, const admin_session *), void *ctx) {
    for (int i = 0; i < 3 + variant % 3; i++) {
        admin_session s = {text(i), text(i + 1), i & 1 ? NULL : text(i + 2), (time_t)i * 1000};
        if (each(ctx, &s)) return;
    }
}

static long h_kick(void *ud, const char *jid, const char *reason, char *err, size_t errlen) {
    if (variant & 1) {
        snprintf(err, errlen, "%s %s", text(1), text(3));
        return -1;
    }
    return (long)strlen(jid);
}

static admin_room a_room(int i) {
    admin_room r = {text(i), text(i + 1), text(i + 2), text(i + 3), (unsigned)i, 100, 20,
                    i & 1, i & 2, i & 4, 0, 1, 0};
    return r;
}

static void h_rooms(void *ud, int (*each)(void *, const admin_room *), void *ctx) {
    for (int i = 0; i < variant % 4; i++) {
        admin_room r = a_room(i);
        if (each(ctx, &r)) return;
    }
}

static int h_room_info(void *ud, const char *name, admin_room *out) {
    if (name[0] == 'x') return -1;
    *out = a_room(variant);
    return 0;
}

static void h_room_occupants(void *ud, const char *name, int (*each)(void *, const admin_occupant *), void *ctx) {
    for (int i = 0; i < 4; i++) {
        admin_occupant o = {text(i), text(i + 2), "moderator", "owner", (unsigned)i};
        if (each(ctx, &o)) return;
    }
}

static int h_destroy(void *ud, const char *name, const char *reason, char *err, size_t errlen) {
    if (!(variant & 2)) return 0;
    snprintf(err, errlen, "%s", text(2));
    return -1;
}

static int h_reload(void *ud, char *msg, size_t msglen) {
    snprintf(msg, msglen, "%s", text(3));
    return variant & 1 ? -1 : 0;
}

static void h_stop(void *ud) {}

static const admin_host host = {NULL, h_status, h_sessions, h_kick, h_rooms, h_room_info, h_room_occupants,
                                h_destroy, h_reload, h_stop};

/* ---- a small JSON checker: one value, RFC 8259 syntax ---- */

static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static const char *json_string(const char *p) {
    if (*p++ != '"') return NULL;
    while (*p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) return NULL;
                p += 5;
                continue;
            }
            if (!*p || !strchr("\"\\/bfnrt", *p)) return NULL;
        }
        p++;
    }
    return p + 1;
}

static const char *json_number(const char *p) {
    const char *start = p;
    if (*p == '-') p++;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (*p >= '0' && *p <= '9') p++;
    else return NULL;
    return p > start ? p : NULL;
}

static const char *json_list(const char *p, char close, int object, int depth) {
    p = json_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
        if (object) {
            p = json_string(json_ws(p));
            if (!p || *(p = json_ws(p)) != ':') return NULL;
            p++;
        }
        if (!(p = json_value(p, depth + 1))) return NULL;
        p = json_ws(p);
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p++;
    }
}

static const char *json_value(const char *p, int depth) {
    if (depth > 32) return NULL;
    p = json_ws(p);
    if (*p == '{') return json_list(p, '}', 1, depth);
    if (*p == '[') return json_list(p, ']', 0, depth);
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "true", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    if (!strncmp(p, "null", 4)) return p + 4;
    return json_number(p);
}

/* ---- the protocol's shape ---- */

static int utf8_ok(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* Checks out (a NUL-terminated copy) answer by answer; returns how many answers it holds. */
static size_t check_answers(char *out, size_t len) {
    size_t answers = 0;
    char *p = out, *end = out + len;
    if (len && end[-1] != '\n') die("output does not end with a newline", out, len);
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        *nl = 0;
        int json = 0;
        if (strcmp(p, "ok") && strncmp(p, "error: ", 7)) die("an answer does not start with ok or error", p, strlen(p));
        for (;;) {
            p = nl + 1;
            if (p >= end) die("an answer without its terminator", out, len);
            nl = memchr(p, '\n', (size_t)(end - p));
            *nl = 0;
            if (!strcmp(p, ".")) break;
            for (const char *q = p; *q; q++)
                if ((unsigned char)*q < 0x20 && *q != '\t') die("control character in a data line", p, strlen(p));
            if (!utf8_ok((const unsigned char *)p, strlen(p))) die("a data line is not UTF-8", p, strlen(p));
            if (p[0] == '{') {
                const char *after = json_value(p, 0);
                if (!after || *json_ws(after)) die("a JSON answer does not parse", p, strlen(p));
                json++;
            }
        }
        if (json > 1) die("more than one JSON document in an answer", out, len);
        answers++;
        p = nl + 1;
    }
    return answers;
}

typedef struct run {
    char *out;
    size_t len;
    int closed;
} run;

static void feed_all(const uint8_t *data, size_t size, size_t step, run *r) {
    admin_conn *a = admin_conn_new(&host);
    if (!a) abort();
    r->out = NULL;
    r->len = 0;
    r->closed = 0;
    for (size_t off = 0; off < size && !r->closed; off += step) {
        size_t n = size - off < step ? size - off : step, got;
        r->closed = admin_conn_feed(a, (const char *)data + off, n) == ADMIN_CLOSE;
        const char *o = admin_conn_output(a, &got);
        char *grown = realloc(r->out, r->len + got + 1);
        if (!grown) abort();
        r->out = grown;
        memcpy(r->out + r->len, o, got);
        r->len += got;
        r->out[r->len] = 0;
    }
    admin_conn_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t step = (data[0] & 63) + 1;
    variant = data[0] >> 6;
    data++;
    size--;
    run whole, pieces;
    feed_all(data, size, size ? size : 1, &whole);
    feed_all(data, size, step, &pieces);
    if (whole.len != pieces.len || (whole.len && memcmp(whole.out, pieces.out, whole.len)) ||
        whole.closed != pieces.closed)
        die("fed in pieces, the output differs", whole.out ? whole.out : "", whole.len);
    size_t answers = whole.len ? check_answers(whole.out, whole.len) : 0;
    /* one answer per complete line before the close (the close's own answer counted among them) */
    size_t lines = 0;
    for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
    if (!whole.closed && answers != lines) die("not one answer per line", (const char *)data, size);
    if (whole.closed && answers == 0) die("closed without an answer", (const char *)data, size);
    free(whole.out);
    free(pieces.out);
    return 0;
}
