/* stanza.c - what every layer says the same way about stanzas: error and result replies (RFC 6120 §8),
 * the lookup in IQ handler tables and the disco#info features generated from them (XEP-0030), and the
 * string hash of the name tables, and the date-times of XEP-0082. */
#include "stanza.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t str_hash(const char *s) {
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int stanza_is(const xml_node *n) {
    return n && n->name && strcmp(n->ns, XML_NS_CLIENT) == 0 &&
           (!strcmp(n->name, "message") || !strcmp(n->name, "presence") || !strcmp(n->name, "iq"));
}

const char *stanza_type(const xml_node *n) {
    const char *t = xml_attr_get(n, "type");
    return t ? t : "";
}

xml_node *iq_payload(const xml_node *iq) {
    xml_node *p = xml_child(iq, NULL, NULL);
    if (!p || xml_next_child(p, NULL, NULL)) return NULL;
    return p;
}

/* An IQ without a valid type is still answered (bad-request, §8.2.3): only results are never answered. */
int stanza_may_bounce(const xml_node *st) {
    const char *type = stanza_type(st);
    if (!strcmp(type, "error")) return 0;
    return !(!strcmp(st->name, "iq") && !strcmp(type, "result"));
}

/* A reply of st's kind from its addressee back to its sender: an attribute st lacks is left out, so a
 * stanza handled for the sender's own account is answered from nobody (RFC 6120 §8.1.2.1, §10.3.3). */
static xml_node *reply_new(xml_arena *a, const xml_node *st, const char *type) {
    xml_node *r = xml_node_new(a, st->name, XML_NS_CLIENT);
    if (!r) return NULL;
    const char *id = xml_attr_get(st, "id"), *from = xml_attr_get(st, "to"), *to = xml_attr_get(st, "from");
    if ((id && xml_set_attr(a, r, "id", id) < 0) || xml_set_attr(a, r, "type", type) < 0 ||
        (from && xml_set_attr(a, r, "from", from) < 0) || (to && xml_set_attr(a, r, "to", to) < 0))
        return NULL;
    return r;
}

xml_node *stanza_error_new(xml_arena *a, const xml_node *st, const char *type, const char *condition,
                           const char *text, const char *by) {
    if (!stanza_may_bounce(st)) return NULL;
    xml_node *r = reply_new(a, st, "error");
    xml_node *e = r ? xml_add_child(a, r, "error", XML_NS_CLIENT) : NULL;
    if (!e || xml_set_attr(a, e, "type", type) < 0 || (by && xml_set_attr(a, e, "by", by) < 0) ||
        !xml_add_child(a, e, condition, NS_STANZAS) ||
        (text && !xml_add_child_text(a, e, "text", NS_STANZAS, text)))
        return NULL;
    return r;
}

xml_node *iq_result_new(xml_arena *a, const xml_node *iq) {
    return reply_new(a, iq, "result");
}

/* The key at the start of row i: every layer's row type begins with one. */
static const iq_key *row_key(const void *table, size_t row_size, size_t i) {
    return (const iq_key *)((const char *)table + i * row_size);
}

const void *iq_table_find(const void *table, size_t row_size, const xml_node *iq, const xml_node *q) {
    const char *type = stanza_type(iq);
    unsigned bit = !strcmp(type, "get") ? IQ_GET : !strcmp(type, "set") ? IQ_SET : 0;
    if (!bit || !q) return NULL;
    for (size_t i = 0;; i++) {
        const iq_key *k = row_key(table, row_size, i);
        if (!k->ns) return NULL;
        if ((k->types & bit) && !strcmp(q->ns, k->ns) && !strcmp(q->name, k->name)) return k;
    }
}

/* A feature an earlier row already gave (several rows may answer for one feature, e.g. get and set). */
static int feature_seen(const void *table, size_t row_size, size_t row) {
    const char *f = row_key(table, row_size, row)->feature;
    for (size_t i = 0; i < row; i++) {
        const char *g = row_key(table, row_size, i)->feature;
        if (g && !strcmp(f, g)) return 1;
    }
    return 0;
}

int disco_add_table_features(xml_arena *a, xml_node *query, const void *table, size_t row_size) {
    int rc = query ? 0 : -1;
    for (size_t i = 0; row_key(table, row_size, i)->ns; i++) {
        const char *f = row_key(table, row_size, i)->feature;
        if (f && !feature_seen(table, row_size, i) && disco_add_feature(a, query, f) < 0) rc = -1;
    }
    return rc;
}

int disco_add_feature(xml_arena *a, xml_node *query, const char *var) {
    xml_node *f = query ? xml_add_child(a, query, "feature", NULL) : NULL;
    return f && xml_set_attr(a, f, "var", var) == 0 ? 0 : -1;
}

int disco_add_identity(xml_arena *a, xml_node *query, const char *category, const char *type, const char *name) {
    xml_node *id = query ? xml_add_child(a, query, "identity", NULL) : NULL;
    if (!id || xml_set_attr(a, id, "category", category) < 0 || xml_set_attr(a, id, "type", type) < 0 ||
        (name && xml_set_attr(a, id, "name", name) < 0))
        return -1;
    return 0;
}

const char *xdata_value(const xml_node *field) {
    const xml_node *v = xml_child(field, "value", NS_XDATA);
    return v ? xml_text(v) : "";
}

void stanza_stamp_format(char out[21], int64_t t) {
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || !strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(out, 21, "1970-01-01T00:00:00Z");
}

/* n digits exactly, as a number; -1 when they are not there */
static int digits(const char **s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++, (*s)++) {
        if (**s < '0' || **s > '9') return -1;
        v = v * 10 + (**s - '0');
    }
    return v;
}

static int expect_char(const char **s, char c) {
    if (**s != c) return -1;
    (*s)++;
    return 0;
}

int stanza_stamp_parse(const char *s, int64_t *out) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y = digits(&s, 4), mo, d, h, mi, se;
    if (y < 0 || expect_char(&s, '-') || (mo = digits(&s, 2)) < 1 || mo > 12 || expect_char(&s, '-') ||
        (d = digits(&s, 2)) < 1 || d > 31 || expect_char(&s, 'T') || (h = digits(&s, 2)) < 0 || h > 23 ||
        expect_char(&s, ':') || (mi = digits(&s, 2)) < 0 || mi > 59 || expect_char(&s, ':') ||
        (se = digits(&s, 2)) < 0 || se > 60)
        return -1;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9') return -1;
        while (*s >= '0' && *s <= '9') s++;
    }
    long off = 0;
    if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1, oh, om;
        if ((oh = digits(&s, 2)) < 0 || oh > 23 || expect_char(&s, ':') || (om = digits(&s, 2)) < 0 || om > 59)
            return -1;
        off = sign * (oh * 60L + om) * 60L;
    } else if (expect_char(&s, 'Z')) return -1;
    if (*s) return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != d) return -1;     /* timegm moved it: no such day (Feb 30) */
    *out = (int64_t)t - off;
    return 0;
}
