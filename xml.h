/* xml.h - streaming XML tokenizer for XMPP streams, stanza trees, arena, serializer. */
#ifndef COUPLET_XML_H
#define COUPLET_XML_H

#include <stddef.h>

#define XML_NS_STREAM  "http://etherx.jabber.org/streams"
#define XML_NS_CLIENT  "jabber:client"
#define XML_NS_XML     "http://www.w3.org/XML/1998/namespace"

/* ---- arena: every tree lives in one; freeing the arena frees the tree ---- */
typedef struct xml_arena xml_arena;

xml_arena *xml_arena_new(void);                 /* NULL on out of memory */
void xml_arena_free(xml_arena *a);
void xml_arena_reset(xml_arena *a);             /* drop everything, keep one chunk for reuse */
void *xml_arena_alloc(xml_arena *a, size_t n);  /* 8-byte aligned; NULL on out of memory */
char *xml_arena_strdup(xml_arena *a, const char *s);
char *xml_arena_strndup(xml_arena *a, const char *s, size_t n);  /* NUL-terminated copy */
size_t xml_arena_used(const xml_arena *a);      /* bytes held by the arena's chunks */

/* ---- trees ---- */
typedef struct xml_attr {
    const char *name;           /* local name */
    const char *ns;             /* namespace of a prefixed attribute (xml:lang -> XML_NS_XML); NULL if unprefixed */
    const char *value;          /* unescaped, NUL-terminated */
    struct xml_attr *next;
} xml_attr;

typedef struct xml_node {
    const char *name;           /* local name; NULL for a text node */
    const char *ns;             /* resolved namespace URI ("" when none); NULL for a text node */
    const char *text;           /* text nodes only: unescaped character data (CDATA merged in) */
    size_t text_len;
    xml_attr *attrs;            /* in document order */
    struct xml_node *parent, *children, *last_child, *next;
} xml_node;

/* Builders copy every string they are given into the arena. They return NULL only on out of memory. */
xml_node *xml_node_new(xml_arena *a, const char *name, const char *ns);
xml_node *xml_add_child(xml_arena *a, xml_node *parent, const char *name, const char *ns); /* ns NULL: parent's */
void xml_append_child(xml_node *parent, xml_node *child);   /* link an existing node (same or longer-lived arena) */
xml_node *xml_add_text(xml_arena *a, xml_node *parent, const char *text, size_t len);
xml_node *xml_add_child_text(xml_arena *a, xml_node *parent, const char *name, const char *ns, const char *text);
int xml_set_attr(xml_arena *a, xml_node *n, const char *name, const char *value); /* replace; value NULL removes */
void xml_remove_child(xml_node *parent, xml_node *child);
xml_node *xml_copy(xml_arena *a, const xml_node *n);        /* deep copy into a */

const char *xml_attr_get(const xml_node *n, const char *name);  /* unprefixed attribute, NULL if absent */
const char *xml_attr_get_ns(const xml_node *n, const char *ns, const char *name);
/* first element child matching name and ns (NULL matches any); xml_next_child continues after `after` */
xml_node *xml_child(const xml_node *n, const char *name, const char *ns);
xml_node *xml_next_child(const xml_node *after, const char *name, const char *ns);
/* the text of an element's first text child ("" when none): the whole text for elements without mixed content */
const char *xml_text(const xml_node *n);

/* ---- growable byte buffer ---- */
typedef struct xml_buf {
    char *data;                 /* always NUL-terminated when len > 0 or after any append */
    size_t len, cap;
    int oom;                    /* set once an allocation failed; later appends are ignored */
} xml_buf;

void xml_buf_init(xml_buf *b);
void xml_buf_free(xml_buf *b);
void xml_buf_reset(xml_buf *b);                 /* len = 0, keep memory */
void xml_buf_append(xml_buf *b, const char *data, size_t len);
void xml_buf_puts(xml_buf *b, const char *s);
void xml_buf_printf(xml_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void xml_buf_escape(xml_buf *b, const char *s, size_t len);  /* escapes & < > ' " */

/* ---- serializer ----
 * Writes n as XML. An xmlns declaration is written only where an element's namespace differs from its
 * parent's (parent_ns for the root), so a stanza serialized with parent_ns XML_NS_CLIENT carries no xmlns.
 * Prefixed attributes: xml:lang is written as xml:lang; other namespaced attributes get a declared prefix. */
void xml_serialize(xml_buf *b, const xml_node *n, const char *parent_ns);
/* Same, but the root's start tag is left open before its final '>' (or "/>"); *split is set to that offset.
 * Used to encode a broadcast once and splice a per-recipient " to='...'" in at the split. */
void xml_serialize_split(xml_buf *b, const xml_node *n, const char *parent_ns, size_t *split);

/* ---- streaming parser ----
 * Push parser for one XMPP stream: the root element (<stream:stream>) is reported when its start tag
 * ends; each complete child of the root (a stanza) is reported as a tree. Input may be split at any
 * byte; bytes already consumed are never rescanned. Between stanzas the parser holds no scratch memory. */
typedef struct xml_limits {
    size_t max_stanza;          /* bytes of one stanza, and of the stream header (default 262144) */
    unsigned max_depth;         /* element nesting inside a stanza (default 64) */
    unsigned max_attrs;         /* attributes per element, namespace declarations included (default 64) */
    size_t max_name;            /* bytes in a qualified element or attribute name (default 256) */
} xml_limits;

void xml_limits_default(xml_limits *l);

enum xml_status {
    XML_OK = 0,
    XML_STOPPED,                /* a callback returned non-zero; *consumed says how far we got */
    XML_ERR_NOT_WELL_FORMED,    /* -> stream error not-well-formed (bad syntax, bad UTF-8, forbidden chars) */
    XML_ERR_RESTRICTED,         /* -> restricted-xml: comment, PI (other than the XML declaration), DTD, entity decl */
    XML_ERR_LIMIT,              /* -> policy-violation: a limit above was passed */
    XML_ERR_BAD_NAMESPACE,      /* -> invalid-namespace: unbound prefix */
    XML_ERR_NOMEM,              /* -> internal-server-error */
    XML_ERR_CLOSED,             /* data after the root element closed */
    XML_ERR_NESTED_STREAM,      /* -> unsupported-stanza-type: a stream header where a stanza belongs */
    XML_ERR_ENCODING,           /* -> unsupported-encoding: bytes that are not UTF-8, or another encoding declared */
};

typedef struct xml_events {
    /* root start tag; node has name, ns and attrs (namespace declarations not listed as attrs) */
    int (*stream_open)(void *ud, xml_node *root);
    /* a complete stanza; the tree lives in the parser's arena until this callback returns */
    int (*stanza)(void *ud, xml_node *stanza);
    /* the root's end tag */
    int (*stream_close)(void *ud);
} xml_events;

typedef struct xml_parser xml_parser;

xml_parser *xml_parser_new(const xml_limits *lim, const xml_events *ev, void *ud);
void xml_parser_free(xml_parser *p);
/* Feed bytes. Returns XML_OK when all were consumed, XML_STOPPED when a callback asked to stop
 * (consumed < len possibly), or an error (the parser is then dead until reset). consumed may be NULL. */
int xml_parser_feed(xml_parser *p, const char *data, size_t len, size_t *consumed);
void xml_parser_reset(xml_parser *p);           /* new stream: forget all state (stream restart) */
/* Where stanzas are: 2 (the default) for children of a <stream:stream> root, reported through stream_open,
 * stanza and stream_close; 1 when the transport frames the stream itself (WebSocket, RFC 7395): there is
 * no root, every top-level element (<open/>, stanzas, <close/>) is reported through the stanza callback, and
 * an end tag without its start is not-well-formed. Set before the first feed; a reset keeps it. 0 or -1. */
int xml_parser_set_stanza_depth(xml_parser *p, unsigned depth);
const char *xml_status_str(int status);         /* short human text for logs and tests */
size_t xml_parser_memory(const xml_parser *p);
/* The default namespace in scope at the root ("" when none): the stream's content namespace, which
 * decides what kind of stream it is (jabber:client, jabber:server, ...). Valid from stream_open on. */
const char *xml_parser_default_ns(const xml_parser *p);  /* heap bytes held right now, struct included */

#endif
