/* fuzz_xml.c - libFuzzer harness for the streaming tokenizer and the serializer (xml.c).
 *
 * Input layout: byte 0 = flags (low 3 bits: number of split points, bit 3: stop after every stanza in
 * the split run, bit 4: default limits instead of small ones, bit 5: WebSocket framing, where every
 * top-level element is a stanza), then one byte per split point (an offset
 * into the rest, scaled), then the XML stream itself.
 *
 * Checks, each an abort() because each is a real bug:
 *  - every stanza, serialized, re-parses as exactly one stanza with XML_OK, and serializing that again
 *    gives the same bytes (the serializer loses nothing the parser keeps);
 *  - a deep copy (xml_copy) serializes to the same bytes as the original;
 *  - feeding the input whole and feeding it split (optionally stopping the parser after each stanza and
 *    resuming from *consumed, as server.c does) give the same status and the same events. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml.h"

#define WRAP_OPEN "<stream:stream xmlns='" XML_NS_CLIENT "' xmlns:stream='" XML_NS_STREAM "'>"

typedef struct run {
    xml_buf log;                /* every event, serialized, in order */
    xml_buf tmp;
    xml_arena *copy_arena;
    const xml_limits *lim;
    int stop_each;              /* return 1 from the stanza callback */
    int fragments;              /* xml_parser_set_stanza_depth(p, 1) */
} run;

typedef struct reparse {
    int stanzas;
    xml_buf ser;
} reparse;

static int rp_open(void *ud, xml_node *root) {
    (void)ud;
    (void)root;
    return 0;
}

static int rp_stanza(void *ud, xml_node *n) {
    reparse *r = ud;
    r->stanzas++;
    if (r->stanzas == 1) xml_serialize(&r->ser, n, XML_NS_CLIENT);
    return 0;
}

static int rp_close(void *ud) {
    (void)ud;
    return 0;
}

static const xml_events rp_events = {rp_open, rp_stanza, rp_close};

static void fail(const char *what, const char *a, size_t alen, const char *b, size_t blen) {
    fprintf(stderr, "fuzz_xml: %s\n  first:  %.*s\n  second: %.*s\n", what, (int)alen, a ? a : "",
            (int)blen, b ? b : "");
    abort();
}

/* The serialization of one stanza must parse back to a stanza that serializes identically. */
static void check_round_trip(const run *r, const char *ser, size_t len) {
    xml_limits lim = *r->lim;
    /* escaping and the xmlns declarations the serializer adds may make the text longer than the input was */
    lim.max_stanza = len + sizeof WRAP_OPEN + 64;    /* the wrapper header counts against it too */
    lim.max_attrs = r->lim->max_attrs * 2 + 2;
    lim.max_name = r->lim->max_name + 32;
    lim.max_depth = r->lim->max_depth + 1;
    reparse rp = {0};
    xml_buf_init(&rp.ser);
    xml_parser *p = xml_parser_new(&lim, &rp_events, &rp);
    if (!p) abort();
    size_t used = 0;
    int st = xml_parser_feed(p, WRAP_OPEN, strlen(WRAP_OPEN), &used);
    if (st == XML_OK) st = xml_parser_feed(p, ser, len, &used);
    if (st != XML_OK || rp.stanzas != 1) {
        fprintf(stderr, "fuzz_xml: serialized stanza does not re-parse (%s, %d stanzas)\n", xml_status_str(st),
                rp.stanzas);
        fail("re-parse", ser, len, NULL, 0);
    }
    if (rp.ser.oom) abort();
    if (rp.ser.len != len || memcmp(rp.ser.data, ser, len) != 0)
        fail("serialize(parse(serialize(x))) != serialize(x)", ser, len, rp.ser.data, rp.ser.len);
    xml_parser_free(p);
    xml_buf_free(&rp.ser);
}

static int on_open(void *ud, xml_node *root) {
    run *r = ud;
    xml_buf_puts(&r->log, "OPEN ");
    xml_serialize(&r->log, root, "");
    xml_buf_puts(&r->log, "\n");
    return 0;
}

static int on_stanza(void *ud, xml_node *n) {
    run *r = ud;
    xml_buf_reset(&r->tmp);
    xml_serialize(&r->tmp, n, XML_NS_CLIENT);
    if (r->tmp.oom) abort();
    check_round_trip(r, r->tmp.data, r->tmp.len);

    xml_arena_reset(r->copy_arena);
    xml_node *c = xml_copy(r->copy_arena, n);
    if (c) {
        xml_buf cb;
        xml_buf_init(&cb);
        xml_serialize(&cb, c, XML_NS_CLIENT);
        if (cb.len != r->tmp.len || memcmp(cb.data, r->tmp.data, cb.len) != 0)
            fail("xml_copy serializes differently", r->tmp.data, r->tmp.len, cb.data, cb.len);
        xml_buf_free(&cb);
    }
    /* accessors must cope with whatever the parser built */
    (void)xml_text(n);
    (void)xml_attr_get(n, "to");
    (void)xml_attr_get_ns(n, XML_NS_XML, "lang");
    for (xml_node *k = xml_child(n, NULL, NULL); k; k = xml_next_child(k, NULL, NULL)) (void)xml_text(k);

    xml_buf_puts(&r->log, "STANZA ");
    xml_buf_append(&r->log, r->tmp.data, r->tmp.len);
    xml_buf_puts(&r->log, "\n");
    return r->stop_each;
}

static int on_close(void *ud) {
    run *r = ud;
    xml_buf_puts(&r->log, "CLOSE\n");
    return 0;
}

static const xml_events events = {on_open, on_stanza, on_close};

/* Feed every piece; on XML_STOPPED resume after the consumed bytes. Returns the final status. */
static int feed_pieces(run *r, const char *data, size_t len, const size_t *cuts, size_t ncuts) {
    xml_parser *p = xml_parser_new(r->lim, &events, r);
    if (!p || (r->fragments && xml_parser_set_stanza_depth(p, 1) < 0)) abort();
    int st = XML_OK;
    size_t start = 0;
    for (size_t k = 0; k <= ncuts && st == XML_OK; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        const char *d = data + start;
        size_t n = end - start;
        for (;;) {
            size_t used = 0;
            st = xml_parser_feed(p, d, n, &used);
            if (used > n) abort();
            if (st != XML_STOPPED) break;
            d += used;
            n -= used;
            st = XML_OK;
            if (n == 0) break;
        }
        (void)xml_parser_memory(p);
        start = end;
    }
    xml_parser_free(p);
    return st;
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned flags = data[0];
    size_t ncuts = flags & 7;
    if (size < 1 + ncuts) return 0;
    const uint8_t *cutb = data + 1;
    const char *xml = (const char *)data + 1 + ncuts;
    size_t len = size - 1 - ncuts;

    size_t cuts[8];
    for (size_t k = 0; k < ncuts; k++) cuts[k] = len ? (size_t)cutb[k] * len / 255 : 0;
    qsort(cuts, ncuts, sizeof cuts[0], cmp_size);

    xml_limits lim;
    xml_limits_default(&lim);
    if (!(flags & 16)) {
        lim.max_stanza = 2048;
        lim.max_depth = 8;
        lim.max_attrs = 6;
        lim.max_name = 24;
    }

    run whole = {0}, split = {0};
    xml_buf_init(&whole.log);
    xml_buf_init(&whole.tmp);
    xml_buf_init(&split.log);
    xml_buf_init(&split.tmp);
    whole.lim = split.lim = &lim;
    whole.copy_arena = xml_arena_new();
    split.copy_arena = xml_arena_new();
    if (!whole.copy_arena || !split.copy_arena) abort();
    split.stop_each = (flags & 8) != 0;
    whole.fragments = split.fragments = (flags & 32) != 0;

    int st_whole = feed_pieces(&whole, xml, len, NULL, 0);
    int st_split = feed_pieces(&split, xml, len, cuts, ncuts);
    if (whole.log.oom || split.log.oom) abort();
    if (st_whole != st_split) {
        fprintf(stderr, "fuzz_xml: whole input gives %s, split input gives %s\n", xml_status_str(st_whole),
                xml_status_str(st_split));
        fail("status differs", whole.log.data, whole.log.len, split.log.data, split.log.len);
    }
    if (whole.log.len != split.log.len || (whole.log.len && memcmp(whole.log.data, split.log.data, whole.log.len)))
        fail("events differ between whole and split input", whole.log.data, whole.log.len, split.log.data,
             split.log.len);

    xml_arena_free(whole.copy_arena);
    xml_arena_free(split.copy_arena);
    xml_buf_free(&whole.log);
    xml_buf_free(&whole.tmp);
    xml_buf_free(&split.log);
    xml_buf_free(&split.tmp);
    return 0;
}
