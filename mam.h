/* mam.h - the Message Archive Management protocol (XEP-0313, urn:xmpp:mam:2) with Result Set Management
 * paging (XEP-0059): a query read into an archive_query, the results and the closing <fin/> written out.
 * The storage is archive.c's; who may ask is the caller's business. */
#ifndef COUPLET_MAM_H
#define COUPLET_MAM_H

#include <stddef.h>

#include "archive.h"
#include "xml.h"

typedef struct mam_request {
    archive_query q;
    const char *queryid;        /* the query's queryid, NULL when none (points into the query's tree) */
    const char *with;           /* the 'with' field's value, NULL when none */
} mam_request;

/* Reads <query xmlns='urn:xmpp:mam:2'> of an IQ set: its data form (FORM_TYPE, start, end, with) and its
 * RSM <set/> (max, after, before). A page has def_max records when max is not given, at most max_max when it
 * is (a larger max is lowered, not refused). 0, or -1 with *cond set to the RFC 6120 condition
 * ("bad-request", "item-not-found") and *text to a short reason. */
int mam_parse(const xml_node *query, unsigned def_max, unsigned max_max, mam_request *out, const char **cond,
              const char **text);

/* One result: <message from='from'[ to spliced at *split]><result xmlns='urn:xmpp:mam:2' [queryid] id>
 * <forwarded xmlns='urn:xmpp:forward:0'><delay stamp/>the stored stanza</forwarded></result></message>.
 * The stored stanza is a serialized <message ...> in jabber:client; it is given that namespace explicitly. */
void mam_put_result(xml_buf *b, size_t *split, const char *from, const mam_request *rq, const archive_rec *rec);

/* The IQ result's payload: <fin xmlns='urn:xmpp:mam:2' [complete='true']><set xmlns=RSM>first (with its
 * index), last, count</set></fin>. NULL when memory ran out. */
xml_node *mam_fin_node(xml_arena *a, const archive_page *pg);

/* The search form answered to an IQ get (XEP-0313 §5.1): FORM_TYPE, with, start, end. NULL on no memory. */
xml_node *mam_form_node(xml_arena *a);

#endif
