/* stanza.h - what every layer says the same way about stanzas: the namespaces, the error and result
 * replies of RFC 6120 §8, the IQ handler tables and the disco#info generated from them (XEP-0030), and
 * the string hash of the lookup tables. */
#ifndef COUPLET_STANZA_H
#define COUPLET_STANZA_H

#include <stddef.h>
#include <stdint.h>

#include "xml.h"

#define NS_TLS         "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL        "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND        "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION     "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STREAMS     "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZAS     "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_PING        "urn:xmpp:ping"
#define NS_VERSION     "jabber:iq:version"
#define NS_TIME        "urn:xmpp:time"
#define NS_LAST        "jabber:iq:last"
#define NS_ROSTER      "jabber:iq:roster"
#define NS_REGISTER    "jabber:iq:register"
#define NS_XDATA       "jabber:x:data"
#define NS_DELAY       "urn:xmpp:delay"
#define NS_MUC         "http://jabber.org/protocol/muc"
#define NS_MUC_USER    NS_MUC "#user"
#define NS_MUC_ADMIN   NS_MUC "#admin"
#define NS_MUC_OWNER   NS_MUC "#owner"
#define NS_MAM         "urn:xmpp:mam:2"
#define NS_RSM         "http://jabber.org/protocol/rsm"
#define NS_FORWARD     "urn:xmpp:forward:0"
#define NS_SID         "urn:xmpp:sid:0"

/* The first <value/> of a data form field (XEP-0004), "" when it has none. */
const char *xdata_value(const xml_node *field);

/* XEP-0082 date-time in UTC, "2026-12-05T08:52:00Z" (21 bytes with the NUL). */
void stanza_stamp_format(char out[21], int64_t t);
/* Reads a whole XEP-0082 date-time (fraction and +hh:mm/-hh:mm offset allowed) into seconds since the epoch.
 * 0, or -1 when it is not one (a field out of range too, such as month 13). */
int stanza_stamp_parse(const char *s, int64_t *out);

/* FNV-1a over a NUL-terminated string: the hash of every name table (accounts, rooms, nicks). */
uint64_t str_hash(const char *s);

/* 1 for <message/>, <presence/> and <iq/> in jabber:client (RFC 6120 §8). */
int stanza_is(const xml_node *n);
/* The 'type' attribute, or "" when there is none. */
const char *stanza_type(const xml_node *n);
/* The one element child of an IQ get/set (RFC 6120 §8.2.3), or NULL if there is not exactly one. */
xml_node *iq_payload(const xml_node *iq);
/* 0 for what must never be answered with an error: an error (§8.3.1) or an IQ result (§8.2.3). */
int stanza_may_bounce(const xml_node *st);

/* An error reply to st (RFC 6120 §8.3): same element and id, type 'error', from st's 'to' and to st's
 * 'from' (each left out when st had none), <error type='type' [by='by']><condition/>[<text/>]</error>.
 * text and by may be NULL. NULL when st must not be answered (stanza_may_bounce) or memory ran out. */
xml_node *stanza_error_new(xml_arena *a, const xml_node *st, const char *type, const char *condition,
                           const char *text, const char *by);
/* An empty IQ result to iq: same id, from its 'to', to its 'from' (each left out when absent). */
xml_node *iq_result_new(xml_arena *a, const xml_node *iq);

/* ---- IQ handler tables: each layer's row begins with an iq_key, the table ends with a zeroed row ---- */
enum { IQ_GET = 1, IQ_SET = 2 };
typedef struct iq_key {
    const char *ns, *name;      /* the payload element */
    unsigned char types;        /* IQ_GET | IQ_SET */
    const char *feature;        /* advertised in disco#info; NULL for none (e.g. a stream feature) */
} iq_key;

/* The row of table (rows of row_size bytes, each beginning with an iq_key) that handles this IQ get/set
 * with payload q, or NULL. */
const void *iq_table_find(const void *table, size_t row_size, const xml_node *iq, const xml_node *q);
/* The disco builders return 0, or -1 when memory ran out (or query is NULL: building it failed) and part
 * of what they add is missing; a caller that must not send a partial tree, like the MUC service, checks. */
/* Adds <feature var/> for each row's feature, once each, in table order. */
int disco_add_table_features(xml_arena *a, xml_node *query, const void *table, size_t row_size);
int disco_add_feature(xml_arena *a, xml_node *query, const char *var);
/* <identity category type [name]/>; name may be NULL. */
int disco_add_identity(xml_arena *a, xml_node *query, const char *category, const char *type, const char *name);

#endif
