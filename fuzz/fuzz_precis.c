/* fuzz_precis.c - libFuzzer harness for the PRECIS Nickname profile (precis.c).
 *
 * Input: byte 0 picks the output buffer size (bit 7 set: 1024, as muc.c passes; clear: bits 0-6, 0..127
 * bytes, to exercise the bounds); the rest is the nick, handed over unterminated in a buffer of exactly its
 * size. Checks (abort() on failure), for precis_nick_enforce and precis_nick_key alike:
 *  - the output buffer is exactly outsz bytes (ASan checks the bounds); success returns strlen(out) < outsz,
 *    refusal returns -1 with a reason and leaves out empty (outsz 0: untouched);
 *  - the output is valid UTF-8 and a fixed point: enforcing it again gives it back, and so does keying a key;
 *  - the key of the enforced form is the key of the input, and an enforced nick always has a key;
 *  - the answer does not depend on the buffer size except through "too long". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "precis.h"

#define BIG 8192

typedef int (*profile_fn)(const char *, size_t, char *, size_t, const char **);

static void die(const char *what, const char *s, size_t n)
{
    fprintf(stderr, "fuzz_precis: %s: ", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%02x", (unsigned char)s[i]);
    fputc('\n', stderr);
    abort();
}

/* strict UTF-8 (RFC 3629), written independently of precis.c's decoder */
static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || n - i < len) return 0;
        uint32_t cp = len == 1 ? b : (uint32_t)(b & (0x7F >> len));
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* run fn on in[0..n) with an exactly outsz-byte buffer; checks the return convention; returns the result
 * (caller frees) or NULL on refusal, with the reason in *why */
static char *run(profile_fn fn, const char *in, size_t n, size_t outsz, int *len, const char **why)
{
    char *out = malloc(outsz ? outsz : 1);
    if (!out) abort();
    out[0] = 'Z';
    *why = NULL;
    *len = fn(in, n, out, outsz, why);
    if (*len >= 0) {
        if ((size_t)*len >= outsz || strlen(out) != (size_t)*len) die("length does not match the output", in, n);
        if (!valid_utf8((const unsigned char *)out, (size_t)*len)) die("output is not UTF-8", in, n);
        return out;
    }
    if (*len != -1 || !*why || !**why) die("refusal without -1 and a reason", in, n);
    if (outsz ? out[0] != '\0' : out[0] != 'Z') die("refusal left output behind", in, n);
    free(out);
    return NULL;
}

static void check_profile(profile_fn fn, profile_fn key, const char *in, size_t n, size_t outsz)
{
    int len, blen, again_len;
    const char *why, *bwhy, *awhy;
    char *res = run(fn, in, n, outsz, &len, &why);
    char *big = run(fn, in, n, BIG, &blen, &bwhy);

    /* the buffer size matters only when the result does not fit (or the input is far too long for it) */
    if (res && (!big || blen != len || memcmp(res, big, (size_t)len))) die("a bigger buffer changes the result", in, n);
    if (!res && big && strcmp(why, "nickname is too long")) die("refused for a reason a bigger buffer lacks", in, n);
    if (!res && strcmp(why, "nickname is too long") && (big || strcmp(why, bwhy)))
        die("the reason depends on the buffer size", in, n);
    if (!big) { free(res); return; }

    char *again = run(fn, big, (size_t)blen, BIG, &again_len, &awhy);
    if (!again || again_len != blen || memcmp(again, big, (size_t)blen)) die("not idempotent", in, n);
    free(again);

    if (fn != key) {
        /* the enforced form is the same nick as the input */
        int k1, k2;
        const char *w1, *w2;
        char *key_in = run(key, in, n, 2 * BIG, &k1, &w1);        /* a key can be 1.5 times the nick */
        char *key_enf = run(key, big, (size_t)blen, 2 * BIG, &k2, &w2);
        if (!key_in || !key_enf) die("an enforced nick has no key", in, n);
        if (k1 != k2 || memcmp(key_in, key_enf, (size_t)k1)) die("key(enforce(x)) != key(x)", in, n);
        free(key_in);
        free(key_enf);
    }
    free(res);
    free(big);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t outsz = data[0] & 0x80 ? 1024 : data[0];
    size_t n = size - 1;
    char *in = malloc(n ? n : 1);           /* exact size, unterminated */
    if (!in) return 0;
    if (n) memcpy(in, data + 1, n);
    check_profile(precis_nick_enforce, precis_nick_key, in, n, outsz);
    check_profile(precis_nick_key, precis_nick_key, in, n, outsz);
    free(in);
    return 0;
}
