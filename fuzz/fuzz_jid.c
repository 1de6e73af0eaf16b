/* fuzz_jid.c - libFuzzer harness for JID parsing (jid.c).
 *
 * Input: byte 0 picks the size of the output buffer handed to jid_full/jid_bare in the short-buffer check;
 * the rest is the JID text (cut at the first NUL, as C strings are).
 * Checks (abort() on failure):
 *  - a parsed JID re-serialized with jid_full parses again to the same three parts; jid_bare parses to the
 *    same local and domain parts and no resource; both are idempotent (normalised form is a fixed point);
 *  - jid_bare_equal agrees on the full and bare forms;
 *  - with a buffer too small, jid_full/jid_bare return -1 and stay inside it (ASan checks the bounds). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"

#define FULL_MAX (3 * (JID_PART_MAX + 1) + 4)

static void die(const char *what, const char *s) {
    fprintf(stderr, "fuzz_jid: %s: '%s'\n", what, s);
    abort();
}

static int same_jid(const jid *a, const jid *b) {
    return !strcmp(a->local, b->local) && !strcmp(a->domain, b->domain) && !strcmp(a->resource, b->resource);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t small = data[0];
    char *s = malloc(size);                 /* exact size: the text plus its NUL */
    if (!s) return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';

    (void)jid_resource_valid(s);
    jid *j = malloc(sizeof *j), *k = malloc(sizeof *k);
    char *full = malloc(FULL_MAX), *bare = malloc(FULL_MAX), *again = malloc(FULL_MAX);
    if (!j || !k || !full || !bare || !again) abort();

    if (jid_parse(s, j) == 0) {
        if (!j->domain[0]) die("parsed with an empty domain", s);
        int fl = jid_full(j, full, FULL_MAX);
        if (fl < 0 || (size_t)fl != strlen(full)) die("jid_full failed on a parsed JID", s);
        if (jid_parse(full, k) != 0) die("jid_full output does not parse", full);
        if (!same_jid(j, k)) die("jid_full output parses to different parts", full);
        if (jid_full(k, again, FULL_MAX) != fl || strcmp(full, again)) die("jid_full is not idempotent", full);

        int bl = jid_bare(j, bare, FULL_MAX);
        if (bl < 0 || (size_t)bl != strlen(bare)) die("jid_bare failed on a parsed JID", s);
        if (jid_parse(bare, k) != 0) die("jid_bare output does not parse", bare);
        if (strcmp(k->local, j->local) || strcmp(k->domain, j->domain) || k->resource[0])
            die("jid_bare output parses to different parts", bare);
        if (!jid_bare_equal(full, bare)) die("jid_bare_equal(full, bare) is 0", full);
        if (strncmp(full, bare, (size_t)bl) != 0) die("bare JID is not a prefix of the full JID", full);

        /* a buffer of exactly the needed size works; one byte less fails cleanly */
        char *exact = malloc((size_t)fl + 1);
        if (!exact) abort();
        if (jid_full(j, exact, (size_t)fl + 1) != fl) die("jid_full fails with an exact buffer", full);
        free(exact);
        if (small <= (size_t)fl) {
            char *tiny = malloc(small ? small : 1);
            if (!tiny) abort();
            if (jid_full(j, tiny, small) != -1) die("jid_full did not report a short buffer", full);
            if (small <= (size_t)bl && jid_bare(j, tiny, small) != -1) die("jid_bare did not report a short buffer", bare);
            free(tiny);
        }
        if (j->resource[0]) (void)jid_resource_valid(j->resource);
    }
    free(s);
    free(j);
    free(k);
    free(full);
    free(bare);
    free(again);
    return 0;
}
