/* mam.c - the Message Archive Management protocol (XEP-0313) and its RSM paging (XEP-0059): what a query
 * asks for, and how results and the <fin/> look. Storage is archive.c's. */
#include "mam.h"
#include "jid.h"
#include "stanza.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>


static int fail(const char **cond, const char **text, const char *c, const char *t)
{
    *cond = c;
    *text = t;
    return -1;
}

/* the data form: FORM_TYPE, start, end, with (XEP-0313 §4.1.1); anything else is refused rather than ignored,
 * so that a client never takes an unfiltered page for a filtered one */
static int parse_form(const xml_node *x, mam_request *out, const char **cond, const char **text)
{
    const char *type = xml_attr_get(x, "type");
    if (type && strcmp(type, "submit")) return fail(cond, text, "bad-request", "the form must be submitted");
    for (const xml_node *f = xml_child(x, "field", NS_XDATA); f; f = xml_next_child(f, "field", NS_XDATA)) {
        const char *var = xml_attr_get(f, "var"), *v = xdata_value(f);
        jid j;
        if (!var) return fail(cond, text, "bad-request", "a field without var");
        if (!strcmp(var, "FORM_TYPE")) {
            if (strcmp(v, NS_MAM)) return fail(cond, text, "bad-request", "FORM_TYPE is not urn:xmpp:mam:2");
        } else if (!strcmp(var, "start")) {
            if (stanza_stamp_parse(v, &out->q.start) < 0) return fail(cond, text, "bad-request", "start is not a date-time");
        } else if (!strcmp(var, "end")) {
            if (stanza_stamp_parse(v, &out->q.end) < 0) return fail(cond, text, "bad-request", "end is not a date-time");
        } else if (!strcmp(var, "with")) {
            if (jid_parse(v, &j) < 0) return fail(cond, text, "bad-request", "with is not a JID");
            out->with = out->q.with = v;
        } else return fail(cond, text, "bad-request", "unsupported field");
    }
    return 0;
}

/* a whole unsigned decimal number, saturated at 2^31 - 1 (any larger max is simply large); -1 when not one */
static long parse_count(const char *s)
{
    long v = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > INT32_MAX) v = INT32_MAX;
    }
    return v;
}

/* RSM <set/>: max, after, before (XEP-0059 §2) */
static int parse_set(const xml_node *set, unsigned max_max, mam_request *out, const char **cond, const char **text)
{
    const xml_node *n;
    if ((n = xml_child(set, "max", NS_RSM))) {
        long v = parse_count(xml_text(n));
        if (v < 0) return fail(cond, text, "bad-request", "max is not a number");
        out->q.max = v > (long)max_max ? max_max : (unsigned)v;
    }
    if (xml_child(set, "index", NS_RSM)) return fail(cond, text, "feature-not-implemented", "paging by index");
    if ((n = xml_child(set, "after", NS_RSM))) {
        if (archive_id_parse(xml_text(n), &out->q.after) < 0)
            return fail(cond, text, "item-not-found", "no such message in the archive");
        out->q.has_after = 1;
    }
    if ((n = xml_child(set, "before", NS_RSM))) {
        /* empty: the last page */
        if (*xml_text(n) && archive_id_parse(xml_text(n), &out->q.before) < 0)
            return fail(cond, text, "item-not-found", "no such message in the archive");
        out->q.has_before = 1;
    }
    if (out->q.has_after && out->q.has_before)
        return fail(cond, text, "bad-request", "after and before together");
    return 0;
}

int mam_parse(const xml_node *query, unsigned def_max, unsigned max_max, mam_request *out, const char **cond,
              const char **text)
{
    memset(out, 0, sizeof *out);
    out->q.start = INT64_MIN;
    out->q.end = INT64_MAX;
    out->q.max = def_max < max_max ? def_max : max_max;
    out->queryid = xml_attr_get(query, "queryid");
    const xml_node *x = xml_child(query, "x", NS_XDATA), *set = xml_child(query, "set", NS_RSM);
    if (x && parse_form(x, out, cond, text) < 0) return -1;
    if (set && parse_set(set, max_max, out, cond, text) < 0) return -1;
    return 0;
}

void mam_put_result(xml_buf *b, size_t *split, const char *from, const mam_request *rq, const archive_rec *rec)
{
    char id[ARCHIVE_ID_MAX], stamp[21];
    archive_id_format(rec->seq, id);
    stanza_stamp_format(stamp, rec->when);
    xml_buf_reset(b);
    xml_buf_puts(b, "<message from='");
    xml_buf_escape(b, from, strlen(from));
    xml_buf_puts(b, "'");
    *split = b->len;
    xml_buf_puts(b, "><result xmlns='" NS_MAM "'");
    if (rq->queryid) {
        xml_buf_puts(b, " queryid='");
        xml_buf_escape(b, rq->queryid, strlen(rq->queryid));
        xml_buf_puts(b, "'");
    }
    xml_buf_printf(b, " id='%s'><forwarded xmlns='" NS_FORWARD "'><delay xmlns='" NS_DELAY "' stamp='%s'/>", id, stamp);
    /* stored as serialized in jabber:client, where the namespace went without saying; here it must be said */
    static const char tag[] = "<message";
    if (rec->len >= sizeof tag - 1 && !memcmp(rec->data, tag, sizeof tag - 1)) {
        xml_buf_puts(b, "<message xmlns='" XML_NS_CLIENT "'");
        xml_buf_append(b, rec->data + sizeof tag - 1, rec->len - (sizeof tag - 1));
    } else xml_buf_append(b, rec->data, rec->len);
    xml_buf_puts(b, "</forwarded></result></message>");
}

xml_node *mam_fin_node(xml_arena *a, const archive_page *pg)
{
    char id[ARCHIVE_ID_MAX], num[16];
    xml_node *fin = xml_node_new(a, "fin", NS_MAM);
    xml_node *set = fin ? xml_add_child(a, fin, "set", NS_RSM) : NULL;
    if (!set || (pg->complete && xml_set_attr(a, fin, "complete", "true") < 0)) return NULL;
    if (pg->first) {
        archive_id_format(pg->first, id);
        xml_node *f = xml_add_child_text(a, set, "first", NULL, id);
        snprintf(num, sizeof num, "%u", pg->first_index);
        archive_id_format(pg->last, id);
        if (!f || xml_set_attr(a, f, "index", num) < 0 || !xml_add_child_text(a, set, "last", NULL, id)) return NULL;
    }
    snprintf(num, sizeof num, "%u", pg->count);
    return xml_add_child_text(a, set, "count", NULL, num) ? fin : NULL;
}

xml_node *mam_form_node(xml_arena *a)
{
    static const char *const fields[][2] = {
        { "FORM_TYPE", "hidden" }, { "with", "jid-single" }, { "start", "text-single" }, { "end", "text-single" },
    };
    xml_node *q = xml_node_new(a, "query", NS_MAM);
    xml_node *x = q ? xml_add_child(a, q, "x", NS_XDATA) : NULL;
    if (!x || xml_set_attr(a, x, "type", "form") < 0) return NULL;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        xml_node *f = xml_add_child(a, x, "field", NULL);
        if (!f || xml_set_attr(a, f, "var", fields[i][0]) < 0 || xml_set_attr(a, f, "type", fields[i][1]) < 0) return NULL;
        if (i == 0 && !xml_add_child_text(a, f, "value", NULL, NS_MAM)) return NULL;
    }
    return q;
}
