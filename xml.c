/* xml.c - the arena, stanza trees, xml_buf, the serializer, and the push parser for one XMPP stream
 * (RFC 6120 section 11: UTF-8 only, no DTD, no comments, no PIs but the XML declaration). */
#include "xml.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Byte classes, so the hot loops test a byte with one load. A_NAME_RUN, A_TEXT, A_APOS and A_QUOT mark the
 * bytes that need no per-byte state in a name, in text, and in '...' and "..." attribute values: ASCII name
 * characters; printable ASCII other than '<' and '&' (and ']' '>' in text, the quote in a value). CR, LF
 * and tab are not among them (they are normalized), nor is anything from 0x80 on (the UTF-8 decoder sees
 * those one by one). A_ESC_TEXT and A_ESC_ATTR mark what the serializer escapes (A_ESC_ATTR also marks the
 * NUL that ends a value). */
enum {
    A_NAME_START = 1, A_NAME = 2, A_NAME_RUN = 4, A_TEXT = 8, A_APOS = 16, A_QUOT = 32,
    A_ESC_TEXT = 64, A_ESC_ATTR = 128,
};
static const unsigned char byte_class[256] = {
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x80, 0x00, 0x00, 0xc0, 0x00, 0x00,  /* 0_ */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  /* 1_ */
    0x38, 0x38, 0xd8, 0x38, 0x38, 0x38, 0xc0, 0xe8, 0x38, 0x38, 0x38, 0x38, 0x38, 0x3e, 0x3e, 0x38,  /* 2_ */
    0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3f, 0x38, 0xc0, 0x38, 0xf0, 0x38,  /* 3_ */
    0x38, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f,  /* 4_ */
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x38, 0x38, 0x30, 0x38, 0x3f,  /* 5_ */
    0x38, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f,  /* 6_ */
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x38, 0x38, 0x38, 0x38, 0x38,  /* 7_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* 8_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* 9_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* A_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* B_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* C_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* D_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* E_ */
    0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,  /* F_ */
};

/* ======================================================================== arena */

typedef struct chunk {
    struct chunk *next;
    size_t size, used;          /* usable bytes after the header, bytes handed out */
} chunk;

struct xml_arena {
    chunk *head;                /* the chunk small allocations come from */
    size_t held;                /* bytes of all chunks, headers included */
};

#define ALIGN8(n)      (((n) + 7) & ~(size_t)7)
#define CHUNK_HDR      ALIGN8(sizeof(chunk))
/* An arena's first chunk is small: it holds an ordinary stanza's tree, the parser frees its arena after
 * every feed that ends between stanzas, and malloc recycles blocks this small from a per-thread cache
 * (glibc's tcache stops at about 1 KiB), where a 4 KiB one went through the general bins every time.
 * Chunks after the first are 4 KiB, and reset keeps the largest, so a run of bigger stanzas in one feed
 * reuses one chunk instead of allocating for each. */
#define CHUNK_FIRST    (1024 - CHUNK_HDR)
#define CHUNK_SIZE     (4096 - CHUNK_HDR)

xml_arena *xml_arena_new(void) {
    return calloc(1, sizeof(xml_arena));
}

static void arena_free_chunks(xml_arena *a) {
    chunk *c = a->head;
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->held = 0;
}

void xml_arena_free(xml_arena *a) {
    if (!a) return;
    arena_free_chunks(a);
    free(a);
}

void xml_arena_reset(xml_arena *a) {
    chunk *keep = NULL, *c;
    for (c = a->head; c; c = c->next)
        if ((c->size == CHUNK_SIZE || c->size == CHUNK_FIRST) && (!keep || c->size > keep->size)) keep = c;
    for (c = a->head; c;) {
        chunk *next = c->next;
        if (c != keep) {
            a->held -= CHUNK_HDR + c->size;
            free(c);
        }
        c = next;
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
    }
    a->head = keep;
}

static chunk *chunk_new(xml_arena *a, size_t size) {
    if (size > SIZE_MAX - CHUNK_HDR) return NULL;
    chunk *c = malloc(CHUNK_HDR + size);
    if (!c) return NULL;
    c->size = size;
    c->used = 0;
    a->held += CHUNK_HDR + size;
    return c;
}

/* n is aligned and does not fit in the head chunk */
static void *arena_alloc_slow(xml_arena *a, size_t n) {
    chunk *c;
    if (n > CHUNK_SIZE / 2) {
        /* a big block gets a chunk of its own behind the head, so the head's free space is not lost */
        c = chunk_new(a, n);
        if (!c) return NULL;
        c->used = n;
        if (a->head) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = NULL;
            a->head = c;
        }
        return (char *)c + CHUNK_HDR;
    }
    c = chunk_new(a, !a->head && n <= CHUNK_FIRST ? CHUNK_FIRST : CHUNK_SIZE);
    if (!c) return NULL;
    c->next = a->head;
    a->head = c;
    c->used = n;
    return (char *)c + CHUNK_HDR;
}

/* A stanza's tree is a dozen small allocations: the common case stays inline. */
static inline void *arena_alloc(xml_arena *a, size_t n) {
    if (n > SIZE_MAX - 8) return NULL;
    n = ALIGN8(n ? n : 1);
    chunk *c = a->head;
    if (c && c->size - c->used >= n) {
        c->used += n;
        return (char *)c + CHUNK_HDR + c->used - n;
    }
    return arena_alloc_slow(a, n);
}

void *xml_arena_alloc(xml_arena *a, size_t n) {
    return arena_alloc(a, n);
}

static inline char *arena_strndup(xml_arena *a, const char *s, size_t n) {
    char *d = arena_alloc(a, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *xml_arena_strndup(xml_arena *a, const char *s, size_t n) {
    return arena_strndup(a, s, n);
}

char *xml_arena_strdup(xml_arena *a, const char *s) {
    return xml_arena_strndup(a, s, strlen(s));
}

size_t xml_arena_used(const xml_arena *a) {
    return a ? a->held : 0;
}

/* ======================================================================== trees */

static int same_ns(const char *a, const char *b) {
    if (!a || !*a) return !b || !*b;
    return b && strcmp(a, b) == 0;
}

static int node_matches(const xml_node *n, const char *name, const char *ns) {
    return n->name && (!name || strcmp(n->name, name) == 0) && (!ns || strcmp(n->ns, ns) == 0);
}

xml_node *xml_node_new(xml_arena *a, const char *name, const char *ns) {
    xml_node *n = arena_alloc(a, sizeof *n);
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->name = xml_arena_strdup(a, name);
    n->ns = xml_arena_strdup(a, ns ? ns : "");
    return n->name && n->ns ? n : NULL;
}

void xml_append_child(xml_node *parent, xml_node *child) {
    child->parent = parent;
    child->next = NULL;
    if (parent->last_child) parent->last_child->next = child;
    else parent->children = child;
    parent->last_child = child;
}

xml_node *xml_add_child(xml_arena *a, xml_node *parent, const char *name, const char *ns) {
    xml_node *n = xml_node_new(a, name, ns ? ns : parent ? parent->ns : "");
    if (n && parent) xml_append_child(parent, n);
    return n;
}

xml_node *xml_add_text(xml_arena *a, xml_node *parent, const char *text, size_t len) {
    xml_node *last = parent->last_child;
    if (last && !last->name) {
        /* keep adjacent character data in one node so xml_text sees all of it */
        char *t = arena_alloc(a, last->text_len + len + 1);
        if (!t) return NULL;
        memcpy(t, last->text, last->text_len);
        memcpy(t + last->text_len, text, len);
        t[last->text_len + len] = '\0';
        last->text = t;
        last->text_len += len;
        return last;
    }
    xml_node *n = arena_alloc(a, sizeof *n);
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->text = xml_arena_strndup(a, text, len);
    if (!n->text) return NULL;
    n->text_len = len;
    xml_append_child(parent, n);
    return n;
}

xml_node *xml_add_child_text(xml_arena *a, xml_node *parent, const char *name, const char *ns,
                             const char *text) {
    xml_node *n = xml_add_child(a, parent, name, ns);
    if (n && text && *text && !xml_add_text(a, n, text, strlen(text))) return NULL;
    return n;
}

int xml_set_attr(xml_arena *a, xml_node *n, const char *name, const char *value) {
    xml_attr **pp = &n->attrs;
    while (*pp && ((*pp)->ns || strcmp((*pp)->name, name) != 0)) pp = &(*pp)->next;
    if (!value) {
        if (*pp) *pp = (*pp)->next;
        return 0;
    }
    char *v = xml_arena_strdup(a, value);
    if (!v) return -1;
    if (*pp) {
        (*pp)->value = v;
        return 0;
    }
    xml_attr *at = arena_alloc(a, sizeof *at);
    if (!at || !(at->name = xml_arena_strdup(a, name))) return -1;
    at->ns = NULL;
    at->value = v;
    at->next = NULL;
    *pp = at;
    return 0;
}

void xml_remove_child(xml_node *parent, xml_node *child) {
    xml_node *prev = NULL, *c = parent->children;
    while (c && c != child) {
        prev = c;
        c = c->next;
    }
    if (!c) return;
    if (prev) prev->next = c->next;
    else parent->children = c->next;
    if (parent->last_child == c) parent->last_child = prev;
    c->parent = NULL;
    c->next = NULL;
}

static int copy_attrs(xml_arena *a, xml_node *d, const xml_attr *s) {
    xml_attr **tail = &d->attrs;
    for (; s; s = s->next) {
        xml_attr *at = arena_alloc(a, sizeof *at);
        if (!at) return -1;
        at->name = xml_arena_strdup(a, s->name);
        at->ns = s->ns ? xml_arena_strdup(a, s->ns) : NULL;
        at->value = xml_arena_strdup(a, s->value);
        at->next = NULL;
        if (!at->name || (s->ns && !at->ns) || !at->value) return -1;
        *tail = at;
        tail = &at->next;
    }
    return 0;
}

xml_node *xml_copy(xml_arena *a, const xml_node *n) {
    if (!n->name) {
        xml_node *t = arena_alloc(a, sizeof *t);
        if (!t) return NULL;
        memset(t, 0, sizeof *t);
        t->text = xml_arena_strndup(a, n->text, n->text_len);
        t->text_len = n->text_len;
        return t->text ? t : NULL;
    }
    xml_node *d = xml_node_new(a, n->name, n->ns);
    if (!d || copy_attrs(a, d, n->attrs) < 0) return NULL;
    for (const xml_node *c = n->children; c; c = c->next) {
        xml_node *cc = xml_copy(a, c);
        if (!cc) return NULL;
        xml_append_child(d, cc);
    }
    return d;
}

const char *xml_attr_get(const xml_node *n, const char *name) {
    return xml_attr_get_ns(n, NULL, name);
}

/* The accessors accept NULL so lookups chain: xml_text(xml_child(n, "body", NULL)). */
const char *xml_attr_get_ns(const xml_node *n, const char *ns, const char *name) {
    if (!n) return NULL;
    for (const xml_attr *at = n->attrs; at; at = at->next)
        if (same_ns(at->ns, ns) && strcmp(at->name, name) == 0) return at->value;
    return NULL;
}

xml_node *xml_next_child(const xml_node *after, const char *name, const char *ns) {
    if (!after) return NULL;
    for (xml_node *c = after->next; c; c = c->next)
        if (node_matches(c, name, ns)) return c;
    return NULL;
}

xml_node *xml_child(const xml_node *n, const char *name, const char *ns) {
    xml_node *c = n ? n->children : NULL;
    if (!c) return NULL;
    return node_matches(c, name, ns) ? c : xml_next_child(c, name, ns);
}

const char *xml_text(const xml_node *n) {
    if (!n) return "";
    if (!n->name) return n->text;
    for (const xml_node *c = n->children; c; c = c->next)
        if (!c->name) return c->text;
    return "";
}

/* ======================================================================== xml_buf */

void xml_buf_init(xml_buf *b) {
    memset(b, 0, sizeof *b);
}

void xml_buf_free(xml_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void xml_buf_reset(xml_buf *b) {
    b->len = 0;
    b->oom = 0;
    if (b->data) b->data[0] = '\0';
}

static int buf_reserve(xml_buf *b, size_t extra) {
    if (b->oom) return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return 0;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

/* The serializer appends many short pieces: this is xml_buf_append with the common case (room already
 * there) inline, and with a constant length memcpy becomes a few moves. */
static inline void buf_add(xml_buf *b, const char *data, size_t len) {
    if ((b->oom || b->cap - b->len <= len) && !buf_reserve(b, len)) return;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

#define buf_lit(b, s) buf_add((b), (s), sizeof(s) - 1)

void xml_buf_append(xml_buf *b, const char *data, size_t len) {
    if (!buf_reserve(b, len)) return;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void xml_buf_puts(xml_buf *b, const char *s) {
    buf_add(b, s, strlen(s));
}

void xml_buf_printf(xml_buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    if (!buf_reserve(b, 64)) return;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len && buf_reserve(b, (size_t)n))
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    va_end(ap2);
    if (n < 0 || b->oom) {
        b->data[b->len] = '\0';
        return;
    }
    b->len += (size_t)n;
}

/* In attribute values tab and newlines are escaped too: a parser would normalize them to spaces.
 * CR is escaped everywhere because a parser turns a literal one into LF. */
static void put_escape(xml_buf *b, unsigned char c) {
    switch (c) {
    case '&': buf_lit(b, "&amp;"); break;
    case '<': buf_lit(b, "&lt;"); break;
    case '>': buf_lit(b, "&gt;"); break;
    case '\'': buf_lit(b, "&apos;"); break;
    case '"': buf_lit(b, "&quot;"); break;
    case '\r': buf_lit(b, "&#13;"); break;
    case '\n': buf_lit(b, "&#10;"); break;
    case '\t': buf_lit(b, "&#9;"); break;
    }
}

/* Copies runs of bytes that need no escaping in one piece. */
void xml_buf_escape(xml_buf *b, const char *s, size_t len) {
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(byte_class[c] & A_ESC_TEXT)) continue;
        buf_add(b, s + run, i - run);
        put_escape(b, c);
        run = i + 1;
    }
    buf_add(b, s + run, len - run);
}

/* ======================================================================== serializer */

/* One pass over the NUL-terminated value finds both its end and what needs escaping. */
static void put_attr_value(xml_buf *b, const char *v) {
    const char *run = v;
    buf_lit(b, "='");
    for (;; v++) {
        unsigned char c = (unsigned char)*v;
        if (!(byte_class[c] & A_ESC_ATTR)) continue;
        buf_add(b, run, (size_t)(v - run));
        if (!c) break;
        put_escape(b, c);
        run = v + 1;
    }
    buf_lit(b, "'");
}

static void put_str(xml_buf *b, const char *s) {
    buf_add(b, s, strlen(s));
}

static void put_attrs(xml_buf *b, const xml_attr *at) {
    unsigned gen = 0;
    for (; at; at = at->next) {
        buf_lit(b, " ");
        if (!at->ns || !*at->ns) {
            put_str(b, at->name);
        } else if (strcmp(at->ns, XML_NS_XML) == 0) {
            buf_lit(b, "xml:");
            put_str(b, at->name);
        } else {
            /* one declared prefix per attribute: simple, and always well-formed */
            gen++;
            xml_buf_printf(b, "xmlns:ns%u", gen);
            put_attr_value(b, at->ns);
            xml_buf_printf(b, " ns%u:%s", gen, at->name);
        }
        put_attr_value(b, at->value);
    }
}

/* strcmp costs a call even when the first bytes differ, as the namespaces here mostly do */
static int is_ns(const char *ns, const char *uri) {
    return ns == uri || (ns[0] == uri[0] && strcmp(ns, uri) == 0);
}

/* dflt is the default namespace in scope. Elements of the streams namespace use the "stream:" prefix
 * every XMPP stream header binds, as clients expect <stream:features/> and <stream:error/>. Elements of
 * the XML namespace keep the "xml:" prefix: that namespace may never be declared as a default. */
static void serialize_node(xml_buf *b, const xml_node *n, const char *dflt, size_t *split) {
    if (!n->name) {
        xml_buf_escape(b, n->text, n->text_len);
        return;
    }
    const char *ns = n->ns ? n->ns : "";
    const char *prefix = is_ns(ns, XML_NS_XML) ? "xml:"
                         : is_ns(ns, XML_NS_STREAM) && !is_ns(dflt, XML_NS_STREAM) ? "stream:" : NULL;
    int prefixed = prefix != NULL;
    buf_lit(b, "<");
    if (prefixed) put_str(b, prefix);
    put_str(b, n->name);
    if (!prefixed && !is_ns(ns, dflt)) {
        buf_lit(b, " xmlns");
        put_attr_value(b, ns);
        dflt = ns;
    }
    put_attrs(b, n->attrs);
    if (split) *split = b->len;
    if (!n->children) {
        buf_lit(b, "/>");
        return;
    }
    buf_lit(b, ">");
    for (const xml_node *c = n->children; c; c = c->next) serialize_node(b, c, dflt, NULL);
    buf_lit(b, "</");
    if (prefixed) put_str(b, prefix);
    put_str(b, n->name);
    buf_lit(b, ">");
}

void xml_serialize(xml_buf *b, const xml_node *n, const char *parent_ns) {
    serialize_node(b, n, parent_ns ? parent_ns : "", NULL);
}

void xml_serialize_split(xml_buf *b, const xml_node *n, const char *parent_ns, size_t *split) {
    size_t at = b->len;
    serialize_node(b, n, parent_ns ? parent_ns : "", &at);
    *split = at;
}

/* ======================================================================== parser */

void xml_limits_default(xml_limits *l) {
    l->max_stanza = 262144;
    l->max_depth = 64;
    l->max_attrs = 64;
    l->max_name = 256;
}

const char *xml_status_str(int status) {
    switch (status) {
    case XML_OK: return "ok";
    case XML_STOPPED: return "stopped";
    case XML_ERR_NOT_WELL_FORMED: return "not well-formed";
    case XML_ERR_RESTRICTED: return "restricted XML";
    case XML_ERR_LIMIT: return "limit exceeded";
    case XML_ERR_BAD_NAMESPACE: return "unbound namespace prefix";
    case XML_ERR_NOMEM: return "out of memory";
    case XML_ERR_CLOSED: return "data after stream close";
    case XML_ERR_NESTED_STREAM: return "stream header inside the stream";
    case XML_ERR_ENCODING: return "not UTF-8";
    }
    return "unknown status";
}

/* A namespace binding. The root's live on the heap for the whole stream; a stanza's in its arena. */
typedef struct ns_bind {
    struct ns_bind *next;
    const char *prefix;         /* "" for the default namespace */
    const char *uri;
    size_t plen;
    unsigned depth;             /* depth of the element that declared it (root = 1) */
} ns_bind;

/* An open element inside the current stanza (in the arena). */
typedef struct frame {
    struct frame *up;
    xml_node *node;
    const char *qname;          /* as written, for matching the end tag */
} frame;

enum {
    ST_MISC,                    /* before the root: whitespace and '<' only */
    ST_LT,                      /* after '<' */
    ST_PI_TARGET, ST_PI_BODY, ST_PI_QMARK,  /* the XML declaration */
    ST_BANG, ST_CDATA_OPEN, ST_CDATA,
    ST_STAG_NAME, ST_STAG_WS, ST_ATTR_NAME, ST_ATTR_EQ, ST_ATTR_QUOTE, ST_ATTR_VALUE, ST_AFTER_VALUE,
    ST_EMPTY_GT,                /* after '/' in a start tag */
    ST_ETAG_NAME, ST_ETAG_WS,
    ST_TEXT,                    /* character data inside the root */
    ST_ENTITY, ST_CHARREF,      /* after '&', after "&#" */
    ST_DONE, ST_DONE_LT,        /* the root has closed */
};

struct xml_parser {
    xml_limits lim;
    xml_events ev;
    void *ud;
    int err;                    /* sticky error, 0 while alive */
    unsigned char state, ent_ret, quote;
    unsigned char brackets;     /* consecutive ']' just seen (for "]]>") */
    unsigned char cr;           /* previous char was CR (line-end normalization) */
    unsigned char started;      /* a byte of this stream was seen (kept by ST_MISC: the declaration comes first) */
    unsigned char restarted;    /* reset for a stream restart: whitespace may come before the declaration */
    unsigned char fragments;    /* no root: every top-level element is a stanza (WebSocket framing) */
    unsigned char decl_ok;      /* the current '<' is the stream's first byte */
    unsigned char counting;     /* inside a stanza or a top-level tag: tok_bytes is live */
    unsigned char u8_need, u8_lo, u8_hi;
    unsigned char ent_len, cref_hex, match;
    char ent[5];
    uint32_t u8_cp, cref;
    unsigned cref_digits;
    unsigned depth;             /* open elements, root included */
    unsigned nattrs;
    size_t tok_bytes;
    size_t name_start;          /* scratch offset of the name being read */
    char *scratch;              /* partial tokens: text, or a tag as qname\0(name\0value\0)* */
    size_t slen, scap;
    xml_arena *arena;           /* the current stanza (or the root node while stream_open runs): NULL or &arena_mem */
    xml_arena arena_mem;        /* in here rather than on the heap: one malloc and free less per feed */
    ns_bind *ns;                /* innermost binding in scope */
    ns_bind *root_ns;           /* the root's bindings (heap), bottom of the ns list */
    char *root_qname;
    size_t root_mem;            /* heap bytes of root_ns and root_qname */
    frame *top;                 /* innermost open element of the stanza */
};

static int is_ws(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_name_start(int c) {
    return byte_class[c] & A_NAME_START;
}

static int is_name_char(int c) {
    return byte_class[c] & A_NAME;
}

static void free_root(xml_parser *p) {
    ns_bind *b = p->root_ns;
    while (b) {
        ns_bind *next = b->next;
        free(b);
        b = next;
    }
    free(p->root_qname);
    p->root_ns = NULL;
    p->root_qname = NULL;
    p->root_mem = 0;
}

/* Between stanzas nothing partial is kept, so give the memory back: an idle stream costs ~nothing. */
static void release_tokens(xml_parser *p) {
    free(p->scratch);
    p->scratch = NULL;
    p->slen = p->scap = 0;
    arena_free_chunks(&p->arena_mem);
    p->arena = NULL;
    p->top = NULL;
    p->ns = p->root_ns;
}

xml_parser *xml_parser_new(const xml_limits *lim, const xml_events *ev, void *ud) {
    xml_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    xml_limits_default(&p->lim);
    if (lim) {
        if (lim->max_stanza) p->lim.max_stanza = lim->max_stanza;
        if (lim->max_depth) p->lim.max_depth = lim->max_depth;
        if (lim->max_attrs) p->lim.max_attrs = lim->max_attrs;
        if (lim->max_name) p->lim.max_name = lim->max_name;
    }
    if (ev) p->ev = *ev;
    p->ud = ud;
    p->state = ST_MISC;
    return p;
}

void xml_parser_free(xml_parser *p) {
    if (!p) return;
    release_tokens(p);
    free_root(p);
    free(p);
}

/* Fragments: as if a root without a name or bindings were open, so the stanza machinery runs unchanged;
 * its end tag can never match, and nothing may come before the first element but whitespace. */
static void start_fragments(xml_parser *p) {
    p->fragments = 1;
    p->depth = 1;
    p->started = 1;
    p->state = ST_TEXT;
}

int xml_parser_set_stanza_depth(xml_parser *p, unsigned depth) {
    if (depth != 1 && depth != 2) return -1;
    if (depth == 1) start_fragments(p);
    return 0;
}

void xml_parser_reset(xml_parser *p) {
    xml_limits lim = p->lim;
    xml_events ev = p->ev;
    void *ud = p->ud;
    int fragments = p->fragments;
    release_tokens(p);
    free_root(p);
    memset(p, 0, sizeof *p);
    p->lim = lim;
    p->ev = ev;
    p->ud = ud;
    p->state = ST_MISC;
    p->restarted = 1;
    if (fragments) start_fragments(p);
}

size_t xml_parser_memory(const xml_parser *p) {
    return sizeof *p + p->scap + p->root_mem + p->arena_mem.held;
}

/* ---- scratch ---- */

static int put_bytes(xml_parser *p, const char *s, size_t n) {
    if (p->scap - p->slen < n) {
        size_t cap = p->scap ? p->scap : 256;   /* a whole ordinary start tag, so no regrowth */
        while (cap - p->slen < n) {
            if (cap > SIZE_MAX / 2) return XML_ERR_NOMEM;
            cap *= 2;
        }
        char *d = realloc(p->scratch, cap);
        if (!d) return XML_ERR_NOMEM;
        p->scratch = d;
        p->scap = cap;
    }
    memcpy(p->scratch + p->slen, s, n);
    p->slen += n;
    return XML_OK;
}

static int put(xml_parser *p, int c) {
    char ch = (char)c;
    if (p->slen < p->scap) {     /* one byte is most of the calls: no memcpy for it */
        p->scratch[p->slen++] = ch;
        return XML_OK;
    }
    return put_bytes(p, &ch, 1);
}

static int put_name_char(xml_parser *p, int c) {
    if (p->slen - p->name_start >= p->lim.max_name) return XML_ERR_LIMIT;
    return put(p, c);
}

static int begin_name(xml_parser *p, int c) {
    p->name_start = p->slen;
    return put_name_char(p, c);
}

/* ---- character data ---- */

/* Text between stanzas (depth 1) is checked but not kept: it is whitespace keepalives. */
static int text_char(xml_parser *p, int c) {
    int was_cr = p->cr;
    p->cr = c == '\r';
    if (p->depth < 2) return XML_OK;
    if (c == '\r') c = '\n';
    else if (c == '\n' && was_cr) return XML_OK;
    return put(p, c);
}

/* Attribute-value normalization: literal tab, CR, LF (and CR LF) become one space. */
static int attr_char(xml_parser *p, int c) {
    int was_cr = p->cr;
    p->cr = c == '\r';
    if (c == '\n' && was_cr) return XML_OK;
    if (c == '\r' || c == '\n' || c == '\t') c = ' ';
    return put(p, c);
}

static int flush_text(xml_parser *p) {
    if (p->depth >= 2 && p->slen && !xml_add_text(p->arena, p->top->node, p->scratch, p->slen))
        return XML_ERR_NOMEM;
    p->slen = 0;
    return XML_OK;
}

static int is_xml_char(uint32_t c) {
    if (c < 0x20) return c == '\t' || c == '\n' || c == '\r';
    return (c <= 0xD7FF) || (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

/* An entity or character reference's replacement, stored as is (no normalization). */
static int put_ref(xml_parser *p, uint32_t c) {
    char u[4];
    size_t n;
    if (c < 0x80) {
        u[0] = (char)c;
        n = 1;
    } else if (c < 0x800) {
        u[0] = (char)(0xC0 | c >> 6);
        u[1] = (char)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        u[0] = (char)(0xE0 | c >> 12);
        u[1] = (char)(0x80 | (c >> 6 & 0x3F));
        u[2] = (char)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | c >> 18);
        u[1] = (char)(0x80 | (c >> 12 & 0x3F));
        u[2] = (char)(0x80 | (c >> 6 & 0x3F));
        u[3] = (char)(0x80 | (c & 0x3F));
        n = 4;
    }
    p->state = p->ent_ret;
    p->cr = 0;
    if (p->ent_ret == ST_TEXT && p->depth < 2) return XML_OK;
    return put_bytes(p, u, n);
}

static int end_named_entity(xml_parser *p) {
    static const struct { const char *name; char c; } ents[] = {
        { "lt", '<' }, { "gt", '>' }, { "amp", '&' }, { "quot", '"' }, { "apos", '\'' },
    };
    for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++)
        if (strlen(ents[i].name) == p->ent_len && memcmp(ents[i].name, p->ent, p->ent_len) == 0)
            return put_ref(p, (uint32_t)ents[i].c);
    return XML_ERR_NOT_WELL_FORMED;    /* no DTD, so no other entity can be declared */
}

static int step_entity(xml_parser *p, int c) {
    if (c == '#' && p->ent_len == 0) {
        p->state = ST_CHARREF;
        p->cref = 0;
        p->cref_digits = 0;
        p->cref_hex = 0;
        return XML_OK;
    }
    if (c == ';' && p->ent_len) return end_named_entity(p);
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) || p->ent_len >= sizeof p->ent)
        return XML_ERR_NOT_WELL_FORMED;
    p->ent[p->ent_len++] = (char)c;
    return XML_OK;
}

static int step_charref(xml_parser *p, int c) {
    int d;
    if (c == 'x' && !p->cref_hex && !p->cref_digits) {
        p->cref_hex = 1;
        return XML_OK;
    }
    if (c == ';') {
        if (!p->cref_digits || !is_xml_char(p->cref)) return XML_ERR_NOT_WELL_FORMED;
        return put_ref(p, p->cref);
    }
    if (c >= '0' && c <= '9') d = c - '0';
    else if (p->cref_hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (p->cref_hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return XML_ERR_NOT_WELL_FORMED;
    p->cref = p->cref * (p->cref_hex ? 16 : 10) + (uint32_t)d;
    if (p->cref > 0x10FFFF) p->cref = 0x110000;    /* saturate: stays invalid, never overflows */
    p->cref_digits++;
    return XML_OK;
}

static int begin_entity(xml_parser *p, int ret) {
    p->ent_ret = (unsigned char)ret;
    p->ent_len = 0;
    p->state = ST_ENTITY;
    p->brackets = 0;
    return XML_OK;
}

/* ---- the XML declaration ---- */

static int ascii_ieq(const char *a, size_t alen, const char *b) {
    if (alen != strlen(b)) return 0;
    for (size_t i = 0; i < alen; i++) {
        int x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y) return 0;
    }
    return 1;
}

/* XMPP is XML 1.0 (RFC 6120 §11.1): a 1.1 document may hold characters 1.0 forbids, so nothing else passes */
static int version_ok(const char *v, size_t n) {
    return n == 3 && memcmp(v, "1.0", 3) == 0;
}

/* s: what follows "<?xml", NUL-terminated: version, then optional encoding and standalone. */
static int check_decl(const char *s) {
    static const char *const names[] = { "version", "encoding", "standalone" };
    size_t next = 0;
    for (;;) {
        int ws = 0;
        while (is_ws(*s)) s++, ws = 1;
        if (!*s) break;
        if (!ws) return XML_ERR_NOT_WELL_FORMED;
        size_t n = 0, k;
        while (s[n] && s[n] != '=' && !is_ws(s[n])) n++;
        for (k = next; k < 3; k++)
            if (strlen(names[k]) == n && memcmp(s, names[k], n) == 0) break;
        if (k == 3 || (next == 0 && k != 0)) return XML_ERR_NOT_WELL_FORMED;
        s += n;
        while (is_ws(*s)) s++;
        if (*s++ != '=') return XML_ERR_NOT_WELL_FORMED;
        while (is_ws(*s)) s++;
        char q = *s++;
        if (q != '\'' && q != '"') return XML_ERR_NOT_WELL_FORMED;
        const char *v = s;
        while (*s && *s != q) s++;
        if (!*s) return XML_ERR_NOT_WELL_FORMED;
        size_t vlen = (size_t)(s++ - v);
        if (k == 1 && !ascii_ieq(v, vlen, "UTF-8"))
            return XML_ERR_ENCODING;
        if ((k == 0 && !version_ok(v, vlen)) ||
            (k == 2 && !(vlen == 3 && memcmp(v, "yes", 3) == 0) && !(vlen == 2 && memcmp(v, "no", 2) == 0)))
            return XML_ERR_NOT_WELL_FORMED;
        next = k + 1;
    }
    return next ? XML_OK : XML_ERR_NOT_WELL_FORMED;
}

static int end_decl(xml_parser *p) {
    int rc = put(p, '\0');
    if (rc) return rc;
    rc = check_decl(p->scratch);
    p->slen = 0;
    p->counting = 0;
    p->state = ST_MISC;
    return rc;
}

static int end_pi_target(xml_parser *p) {
    if (p->slen != 3 || memcmp(p->scratch, "xml", 3) != 0) return XML_ERR_RESTRICTED;
    p->slen = 0;
    return XML_OK;
}

/* ---- tags ---- */

/* q is len bytes and NUL-terminated */
static int split_qname(const char *q, size_t len, size_t *plen, const char **local) {
    const char *colon = memchr(q, ':', len);
    *plen = 0;
    *local = q;
    if (!colon) return XML_OK;
    if (colon == q || !is_name_start((unsigned char)colon[1]) || memchr(colon + 1, ':', len - (size_t)(colon - q) - 1))
        return XML_ERR_NOT_WELL_FORMED;
    *plen = (size_t)(colon - q);
    *local = colon + 1;
    return XML_OK;
}

static const char *resolve(const xml_parser *p, const char *prefix, size_t plen) {
    if (plen == 3 && memcmp(prefix, "xml", 3) == 0) return XML_NS_XML;
    for (const ns_bind *b = p->ns; b; b = b->next)
        if (b->plen == plen && memcmp(b->prefix, prefix, plen) == 0) return b->uri;
    return plen ? NULL : "";
}

const char *xml_parser_default_ns(const xml_parser *p) {
    return resolve(p, "", 0);
}

static int bind_ns(xml_parser *p, const char *prefix, const char *uri, unsigned depth) {
    size_t plen = strlen(prefix), ulen = strlen(uri);
    int is_xml = plen == 3 && memcmp(prefix, "xml", 3) == 0;
    for (const ns_bind *b = p->ns; b && b->depth == depth; b = b->next)
        if (b->plen == plen && memcmp(b->prefix, prefix, plen) == 0) return XML_ERR_NOT_WELL_FORMED;
    if ((plen == 5 && memcmp(prefix, "xmlns", 5) == 0) || is_xml != (strcmp(uri, XML_NS_XML) == 0) ||
        (plen && !ulen))
        return XML_ERR_BAD_NAMESPACE;
    size_t size = sizeof(ns_bind) + plen + 1 + ulen + 1;
    ns_bind *b = depth == 1 ? malloc(size) : arena_alloc(p->arena, size);
    if (!b) return XML_ERR_NOMEM;
    char *s = (char *)(b + 1);
    memcpy(s, prefix, plen + 1);
    memcpy(s + plen + 1, uri, ulen + 1);
    b->prefix = s;
    b->uri = s + plen + 1;
    b->plen = plen;
    b->depth = depth;
    b->next = p->ns;
    p->ns = b;
    if (depth == 1) {
        p->root_ns = b;
        p->root_mem += size;
    }
    return XML_OK;
}

static int is_xmlns_attr(const char *name, size_t len) {
    return len >= 5 && memcmp(name, "xmlns", 5) == 0 && (len == 5 || name[5] == ':');
}

/* Turns the tag in scratch into a node: declarations first, since they scope the tag's own names. The
 * tag is qname\0(name\0value\0)*; each string's length is taken once and reused for its copy. *qname is
 * set to the node's name when the tag's name has no prefix (so the caller need not copy it again). */
static int build_element(xml_parser *p, unsigned depth, xml_node **out, const char **qname) {
    const char *q = p->scratch, *end = p->scratch + p->slen, *s, *v, *local;
    size_t qlen = strlen(q), nlen, vlen, plen;
    int rc;
    for (s = q + qlen + 1; s < end; s = v + vlen + 1) {
        nlen = strlen(s);
        v = s + nlen + 1;
        vlen = strlen(v);
        if (!is_xmlns_attr(s, nlen)) continue;
        const char *prefix = s[5] ? s + 6 : "";
        if (s[5] && (!*prefix || strchr(prefix, ':'))) return XML_ERR_NOT_WELL_FORMED;
        if ((rc = bind_ns(p, prefix, v, depth))) return rc;
    }
    if ((rc = split_qname(q, qlen, &plen, &local))) return rc;
    const char *ns = resolve(p, q, plen);
    if (!ns) return XML_ERR_BAD_NAMESPACE;
    xml_node *n = arena_alloc(p->arena, sizeof *n);
    if (!n) return XML_ERR_NOMEM;
    memset(n, 0, sizeof *n);
    n->ns = ns;
    if (!(n->name = arena_strndup(p->arena, local, qlen - (size_t)(local - q)))) return XML_ERR_NOMEM;
    *qname = plen ? NULL : n->name;
    xml_attr **tail = &n->attrs;
    for (s = q + qlen + 1; s < end; s = v + vlen + 1) {
        nlen = strlen(s);
        v = s + nlen + 1;
        vlen = strlen(v);
        if (is_xmlns_attr(s, nlen)) continue;
        if ((rc = split_qname(s, nlen, &plen, &local))) return rc;
        const char *ans = plen ? resolve(p, s, plen) : NULL;
        if (plen && !ans) return XML_ERR_BAD_NAMESPACE;
        for (const xml_attr *x = n->attrs; x; x = x->next)
            if (x->name[0] == local[0] && strcmp(x->name, local) == 0 && same_ns(x->ns, ans))
                return XML_ERR_NOT_WELL_FORMED;
        xml_attr *at = arena_alloc(p->arena, sizeof *at);
        if (!at) return XML_ERR_NOMEM;
        at->name = arena_strndup(p->arena, local, nlen - (size_t)(local - s));
        at->value = arena_strndup(p->arena, v, vlen);
        at->ns = ans;
        at->next = NULL;
        if (!at->name || !at->value) return XML_ERR_NOMEM;
        *tail = at;
        tail = &at->next;
    }
    *out = n;
    return XML_OK;
}

static int call_stanza(xml_parser *p, xml_node *n) {
    int stop = p->ev.stanza ? p->ev.stanza(p->ud, n) : 0;
    if (p->arena) xml_arena_reset(p->arena);
    return stop ? XML_STOPPED : XML_OK;
}

static int call_close(xml_parser *p) {
    return p->ev.stream_close && p->ev.stream_close(p->ud) ? XML_STOPPED : XML_OK;
}

static int end_element(xml_parser *p) {
    frame *f = p->top;
    p->top = f->up;
    p->depth--;
    while (p->ns && p->ns->depth > p->depth) p->ns = p->ns->next;
    if (p->depth > 1) return XML_OK;
    p->counting = 0;
    return call_stanza(p, f->node);
}

static int open_root(xml_parser *p, int empty) {
    xml_node *root;
    const char *qname;
    int rc = build_element(p, 1, &root, &qname);
    if (rc) return rc;
    if (!(p->root_qname = strdup(p->scratch))) return XML_ERR_NOMEM;
    p->root_mem += strlen(p->root_qname) + 1;
    p->depth = empty ? 0 : 1;
    p->slen = 0;
    p->counting = 0;
    p->state = empty ? ST_DONE : ST_TEXT;
    int stop = p->ev.stream_open ? p->ev.stream_open(p->ud, root) : 0;
    if (p->arena) xml_arena_reset(p->arena);
    if (stop) return XML_STOPPED;
    return p->state == ST_DONE ? call_close(p) : XML_OK;   /* not if the callback reset the parser */
}

static int end_start_tag(xml_parser *p, int empty) {
    int rc;
    p->arena = &p->arena_mem;
    if (p->depth == 0) return open_root(p, empty);
    unsigned depth = p->depth + 1;
    if (depth - 1 > p->lim.max_depth) return XML_ERR_LIMIT;
    xml_node *n;
    const char *qname;
    if ((rc = build_element(p, depth, &n, &qname))) return rc;
    /* a stream header where a stanza belongs never ends: say so now rather than wait for it */
    if (depth == 2 && !strcmp(n->name, "stream") && !strcmp(n->ns, XML_NS_STREAM)) return XML_ERR_NESTED_STREAM;
    frame *f = arena_alloc(p->arena, sizeof *f);
    if (!f || !(f->qname = qname ? qname : xml_arena_strdup(p->arena, p->scratch))) return XML_ERR_NOMEM;
    f->node = n;
    f->up = p->top;
    if (p->top) xml_append_child(p->top->node, n);
    p->top = f;
    p->depth = depth;
    p->slen = 0;
    p->state = ST_TEXT;
    p->brackets = 0;
    p->cr = 0;
    return empty ? end_element(p) : XML_OK;
}

static int end_end_tag(xml_parser *p) {
    int rc = put(p, '\0');
    if (rc) return rc;
    p->state = ST_TEXT;
    if (p->depth == 1) {
        if (!p->root_qname || strcmp(p->scratch, p->root_qname) != 0) return XML_ERR_NOT_WELL_FORMED;
        p->depth = 0;
        p->slen = 0;
        p->counting = 0;
        p->state = ST_DONE;
        return call_close(p);
    }
    if (strcmp(p->scratch, p->top->qname) != 0) return XML_ERR_NOT_WELL_FORMED;
    p->slen = 0;
    return end_element(p);
}

static int start_tag_begin(xml_parser *p, int c) {
    int rc = flush_text(p);
    if (rc) return rc;
    p->nattrs = 0;
    p->state = ST_STAG_NAME;
    return begin_name(p, c);
}

static int step_lt(xml_parser *p, int c) {
    int rc, decl_ok = p->decl_ok;
    p->decl_ok = 0;
    if (c == '/' && p->depth > 0) {
        if ((rc = flush_text(p))) return rc;
        p->name_start = 0;
        p->state = ST_ETAG_NAME;
        return XML_OK;
    }
    if (c == '?') {
        if (!decl_ok) return XML_ERR_RESTRICTED;
        p->slen = 0;
        p->name_start = 0;
        p->state = ST_PI_TARGET;
        return XML_OK;
    }
    if (c == '!') {
        if (p->depth == 0) return XML_ERR_RESTRICTED;
        p->state = ST_BANG;
        return XML_OK;
    }
    if (is_name_start(c)) return start_tag_begin(p, c);
    return XML_ERR_NOT_WELL_FORMED;
}

/* '<' at the top level starts a token whose size is limited; inside a stanza it already counts. */
static int open_angle(xml_parser *p) {
    if (!p->counting) {
        p->counting = 1;
        p->tok_bytes = 1;
    }
    p->state = ST_LT;
    p->brackets = 0;
    p->cr = 0;
    return XML_OK;
}

static int step_text(xml_parser *p, int c) {
    switch (c) {
    case '<': return open_angle(p);
    case '&': p->cr = 0; return begin_entity(p, ST_TEXT);
    case ']':
        if (p->brackets < 2) p->brackets++;
        return text_char(p, c);
    default:
        if (c == '>' && p->brackets >= 2) return XML_ERR_NOT_WELL_FORMED;   /* "]]>" outside CDATA */
        p->brackets = 0;
        return text_char(p, c);
    }
}

static int step_cdata(xml_parser *p, int c) {
    int rc;
    if (c == ']') {
        if (p->brackets < 2) {
            p->brackets++;
            return XML_OK;
        }
        return text_char(p, ']');   /* "]]]": the first one is data */
    }
    if (c == '>' && p->brackets == 2) {
        p->brackets = 0;
        p->state = ST_TEXT;
        if (p->depth == 1) p->counting = 0;
        return XML_OK;
    }
    for (; p->brackets; p->brackets--)
        if ((rc = text_char(p, ']'))) return rc;
    return text_char(p, c);
}

static int step_tag(xml_parser *p, int c) {
    switch (p->state) {
    case ST_STAG_NAME:
        if (is_name_char(c)) return put_name_char(p, c);
        if (is_ws(c)) { p->state = ST_STAG_WS; return put(p, '\0'); }
        if (c == '/') { p->state = ST_EMPTY_GT; return put(p, '\0'); }
        if (c == '>') { int rc = put(p, '\0'); return rc ? rc : end_start_tag(p, 0); }
        return XML_ERR_NOT_WELL_FORMED;
    case ST_STAG_WS:
        if (is_ws(c)) return XML_OK;
        if (c == '/') { p->state = ST_EMPTY_GT; return XML_OK; }
        if (c == '>') return end_start_tag(p, 0);
        if (!is_name_start(c)) return XML_ERR_NOT_WELL_FORMED;
        if (++p->nattrs > p->lim.max_attrs) return XML_ERR_LIMIT;
        p->state = ST_ATTR_NAME;
        return begin_name(p, c);
    case ST_ATTR_NAME:
        if (is_name_char(c)) return put_name_char(p, c);
        if (is_ws(c)) { p->state = ST_ATTR_EQ; return put(p, '\0'); }
        if (c == '=') { p->state = ST_ATTR_QUOTE; return put(p, '\0'); }
        return XML_ERR_NOT_WELL_FORMED;
    case ST_ATTR_EQ:
        if (is_ws(c)) return XML_OK;
        if (c == '=') { p->state = ST_ATTR_QUOTE; return XML_OK; }
        return XML_ERR_NOT_WELL_FORMED;
    case ST_ATTR_QUOTE:
        if (is_ws(c)) return XML_OK;
        if (c != '\'' && c != '"') return XML_ERR_NOT_WELL_FORMED;
        p->quote = (unsigned char)c;
        p->cr = 0;
        p->state = ST_ATTR_VALUE;
        return XML_OK;
    case ST_ATTR_VALUE:
        if (c == p->quote) { p->state = ST_AFTER_VALUE; return put(p, '\0'); }
        if (c == '<') return XML_ERR_NOT_WELL_FORMED;
        if (c == '&') return begin_entity(p, ST_ATTR_VALUE);
        return attr_char(p, c);
    case ST_AFTER_VALUE:
        if (is_ws(c)) { p->state = ST_STAG_WS; return XML_OK; }
        if (c == '/') { p->state = ST_EMPTY_GT; return XML_OK; }
        if (c == '>') return end_start_tag(p, 0);
        return XML_ERR_NOT_WELL_FORMED;
    case ST_EMPTY_GT:
        return c == '>' ? end_start_tag(p, 1) : XML_ERR_NOT_WELL_FORMED;
    case ST_ETAG_NAME:
        if (p->slen == 0 ? is_name_start(c) : is_name_char(c)) return put_name_char(p, c);
        if (p->slen && is_ws(c)) { p->state = ST_ETAG_WS; return XML_OK; }
        if (p->slen && c == '>') return end_end_tag(p);
        return XML_ERR_NOT_WELL_FORMED;
    case ST_ETAG_WS:
        if (is_ws(c)) return XML_OK;
        return c == '>' ? end_end_tag(p) : XML_ERR_NOT_WELL_FORMED;
    }
    return XML_ERR_NOT_WELL_FORMED;
}

static int step_prolog(xml_parser *p, int c) {
    int rc;
    switch (p->state) {
    case ST_MISC: {
        int first = !p->started;    /* kept here, not per byte: only this state asks */
        if (is_ws(c)) {
            /* a restart follows the old stream's last element, and clients end that with a newline */
            if (!p->restarted) p->started = 1;
            return XML_OK;
        }
        p->started = 1;
        if (c != '<') return XML_ERR_NOT_WELL_FORMED;   /* text before the root */
        p->decl_ok = first;
        return open_angle(p);
    }
    case ST_PI_TARGET:
        if (is_name_char(c)) return p->slen ? put_name_char(p, c) : begin_name(p, c);
        if ((rc = end_pi_target(p))) return rc;
        if (c == '?') { p->state = ST_PI_QMARK; return XML_OK; }
        if (!is_ws(c)) return XML_ERR_NOT_WELL_FORMED;
        p->state = ST_PI_BODY;
        return put(p, c);
    case ST_PI_BODY:
        if (c == '?') { p->state = ST_PI_QMARK; return XML_OK; }
        return put(p, c);
    case ST_PI_QMARK:
        if (c == '>') return end_decl(p);
        if ((rc = put(p, '?'))) return rc;
        if (c == '?') return XML_OK;
        p->state = ST_PI_BODY;
        return put(p, c);
    case ST_BANG:
        if (c != '[') return XML_ERR_RESTRICTED;    /* comment, DOCTYPE, ENTITY, ... */
        p->match = 0;
        p->state = ST_CDATA_OPEN;
        return XML_OK;
    case ST_CDATA_OPEN:
        if (c != "CDATA["[p->match]) return XML_ERR_NOT_WELL_FORMED;
        if (++p->match == 6) {
            p->brackets = 0;
            p->cr = 0;
            p->state = ST_CDATA;
        }
        return XML_OK;
    case ST_DONE:
        if (c != '<') return XML_ERR_CLOSED;
        p->state = ST_DONE_LT;
        return XML_OK;
    case ST_DONE_LT:
        return is_name_start(c) ? XML_ERR_NOT_WELL_FORMED : XML_ERR_CLOSED;    /* a second root */
    }
    return XML_ERR_NOT_WELL_FORMED;
}

static int step(xml_parser *p, int c) {
    switch (p->state) {
    case ST_TEXT: return step_text(p, c);
    case ST_LT: return step_lt(p, c);
    case ST_CDATA: return step_cdata(p, c);
    case ST_ENTITY: return step_entity(p, c);
    case ST_CHARREF: return step_charref(p, c);
    case ST_MISC: case ST_PI_TARGET: case ST_PI_BODY: case ST_PI_QMARK: case ST_BANG: case ST_CDATA_OPEN:
    case ST_DONE: case ST_DONE_LT:
        return step_prolog(p, c);
    default: return step_tag(p, c);
    }
}

/* Strict UTF-8 (no overlongs, surrogates, or beyond U+10FFFF) and XML 1.0's Char production. The
 * decoder state lives in the parser so a character may be split across feeds. Bytes that are not UTF-8
 * are an encoding error (RFC 6120 §4.9.3.22); UTF-8 for a character XML forbids is not well-formed. */
static int utf8_check(xml_parser *p, int c) {
    if (p->u8_need) {
        if (c < p->u8_lo || c > p->u8_hi) return XML_ERR_ENCODING;
        p->u8_lo = 0x80;
        p->u8_hi = 0xBF;
        p->u8_cp = p->u8_cp << 6 | (uint32_t)(c & 0x3F);
        if (--p->u8_need == 0 && (p->u8_cp == 0xFFFE || p->u8_cp == 0xFFFF)) return XML_ERR_NOT_WELL_FORMED;
        return XML_OK;
    }
    if (c < 0x80) return c >= 0x20 || c == '\t' || c == '\n' || c == '\r' ? XML_OK : XML_ERR_NOT_WELL_FORMED;
    p->u8_lo = 0x80;
    p->u8_hi = 0xBF;
    if (c < 0xC2) return XML_ERR_ENCODING;
    if (c < 0xE0) {
        p->u8_need = 1;
        p->u8_cp = (uint32_t)(c & 0x1F);
    } else if (c < 0xF0) {
        p->u8_need = 2;
        p->u8_cp = (uint32_t)(c & 0x0F);
        if (c == 0xE0) p->u8_lo = 0xA0;        /* overlong */
        if (c == 0xED) p->u8_hi = 0x9F;        /* surrogates */
    } else if (c < 0xF5) {
        p->u8_need = 3;
        p->u8_cp = (uint32_t)(c & 0x07);
        if (c == 0xF0) p->u8_lo = 0x90;        /* overlong */
        if (c == 0xF4) p->u8_hi = 0x8F;        /* beyond U+10FFFF */
    } else {
        return XML_ERR_ENCODING;
    }
    return XML_OK;
}

static int feed_byte(xml_parser *p, int c) {
    int rc = utf8_check(p, c);
    if (rc) return rc;
    if (p->counting && ++p->tok_bytes > p->lim.max_stanza) return XML_ERR_LIMIT;
    return step(p, c);    /* nothing after: a callback in there may have reset the parser */
}

/* Fast path: a run of plain printable ASCII in text or an attribute value, or of ASCII name characters in
 * a name, needs no per-byte state, so it is checked with one table load a byte and copied in one piece.
 * Such bytes are valid UTF-8 and XML Chars by themselves, so the decoder has nothing to do (the caller
 * makes sure no multi-byte sequence is pending). A name's run stops short of max_name and max_stanza, so
 * the byte that passes a limit gets its error from step() at the same offset as before (text and values
 * fail at the run's start, as they always did). Returns how many bytes the run holds (0: use step()). */
static size_t plain_run(const xml_parser *p, const unsigned char *s, size_t n) {
    unsigned char mask;
    switch (p->state) {
    case ST_TEXT: mask = A_TEXT; break;
    case ST_ATTR_VALUE: mask = p->quote == '\'' ? A_APOS : A_QUOT; break;
    case ST_ETAG_NAME:
        if (p->slen == 0 && (s[0] >= 0x80 || !is_name_start(s[0]))) return 0;   /* a name must start so */
        /* fall through */
    case ST_STAG_NAME: case ST_ATTR_NAME: {
        size_t name_room = p->lim.max_name - (p->slen - p->name_start);
        size_t tok_room = p->lim.max_stanza - p->tok_bytes;     /* a tag always counts */
        if (n > name_room) n = name_room;
        if (n > tok_room) n = tok_room;
        mask = A_NAME_RUN;
        break;
    }
    default: return 0;
    }
    size_t i = 0;
    /* four at a time while all four qualify: the loop's own test is much of the cost of a byte */
    while (n - i >= 4 && (byte_class[s[i]] & byte_class[s[i + 1]] & byte_class[s[i + 2]] & byte_class[s[i + 3]]
                          & mask))
        i += 4;
    while (i < n && (byte_class[s[i]] & mask)) i++;
    return i;
}

#define RUN_STATES (1u << ST_TEXT | 1u << ST_ATTR_VALUE | 1u << ST_STAG_NAME | 1u << ST_ATTR_NAME | 1u << ST_ETAG_NAME)

/* A run holds no ']' and no CR, so neither "]]>" nor CR LF can straddle its end. */
static int take_run(xml_parser *p, const char *s, size_t n) {
    if (p->counting) {
        if (n > p->lim.max_stanza - p->tok_bytes) return XML_ERR_LIMIT;
        p->tok_bytes += n;
    }
    p->brackets = 0;
    p->cr = 0;
    if (p->state == ST_TEXT && p->depth < 2) return XML_OK;
    return put_bytes(p, s, n);
}

int xml_parser_feed(xml_parser *p, const char *data, size_t len, size_t *consumed) {
    const unsigned char *s = (const unsigned char *)data;
    size_t i = 0;
    int rc = p->err;
    while (!rc && i < len) {
        if (p->u8_need == 0 && (RUN_STATES >> p->state & 1)) {
            size_t n = plain_run(p, s + i, len - i);
            if (n) {
                rc = take_run(p, data + i, n);
                if (!rc) i += n;
                continue;
            }
        }
        rc = feed_byte(p, s[i]);
        if (rc == XML_OK || rc == XML_STOPPED) i++;
    }
    if (rc > XML_STOPPED) p->err = rc;
    if (!p->counting || p->err) release_tokens(p);
    if (consumed) *consumed = i;
    return rc;
}
