/* fuzz_sasl.c - libFuzzer harness for the server side of SASL and for base64 (auth.c).
 *
 * One account store, made once in a temporary directory: romeo/secret and juliet/r0m30, 64 iterations.
 * Input: byte 0 = flags, byte 1 = separator, rest = up to 3 messages split at the separator.
 *   flags bits 0-1: mechanism (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, an unknown name)
 *   bit 2: hand the messages over as they are (not base64-encoded), to reach the decoder's error paths
 *   bit 3: SCRAM with a correct proof: the harness answers the server-first message itself as a client
 *          knowing the password "secret" would (message 2, if any, is spliced in as an extension)
 *   bits 4-5: size of the output buffer (1024, 8, 25, 200): small ones reach the too-small paths
 * The whole input is also given to auth_b64_decode; an accepted encoding must be the only one
 * (re-encoding the result gives the input back), and decode(encode(x)) == x. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"

static auth_store *store;
static char dir[64];

static void cleanup(void) {
    char path[128];
    if (store) auth_store_free(store);
    store = NULL;
    snprintf(path, sizeof path, "%s/accounts", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/accounts.tmp", dir);
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[256];
    snprintf(dir, sizeof dir, "/tmp/couplet-fuzz-sasl-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    store = auth_store_open(dir, 64, err, sizeof err);
    if (!store || auth_user_add(store, "romeo", "secret") != 0 || auth_user_add(store, "juliet", "r0m30") != 0) {
        fprintf(stderr, "fuzz_sasl: cannot make the account store in %s: %s\n", dir, store ? "" : err);
        abort();
    }
    atexit(cleanup);
    return 0;
}

static char *b64(const unsigned char *p, size_t n) {
    char *o = malloc(auth_b64_encoded_len(n));
    if (!o) abort();
    auth_b64_encode(p, n, o);
    return o;
}

static void check_b64(const uint8_t *data, size_t size) {
    unsigned char *out = malloc(size / 4 * 3 + 1);
    if (!out) abort();
    long n = auth_b64_decode((const char *)data, size, out);
    if (n >= 0) {
        if ((size_t)n > size / 4 * 3) abort();
        char *again = b64(out, (size_t)n);
        if (strlen(again) != size || memcmp(again, data, size) != 0) {
            fprintf(stderr, "fuzz_b64: '%.*s' decodes but re-encodes as '%s'\n", (int)size, (const char *)data, again);
            abort();
        }
        free(again);
    }
    free(out);
    char *enc = b64(data, size);
    size_t el = strlen(enc);
    unsigned char *dec = malloc(el / 4 * 3 + 1);
    if (!dec) abort();
    n = auth_b64_decode(enc, el, dec);
    if (n < 0 || (size_t)n != size || (size && memcmp(dec, data, size) != 0)) {
        fprintf(stderr, "fuzz_b64: decode(encode(x)) != x\n");
        abort();
    }
    free(dec);
    free(enc);
}

/* value of attribute k ("r", "s", "i") in a SCRAM message, copied into v */
static int scram_attr(const char *msg, char k, char *v, size_t vn) {
    for (const char *p = msg; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (p[0] == k && p[1] == '=') {
            size_t l = strcspn(p + 2, ",");
            if (l >= vn) return -1;
            memcpy(v, p + 2, l);
            v[l] = '\0';
            return 0;
        }
    }
    return -1;
}

/* Build the client-final message with the right proof for password "secret"; NULL if server_first is odd. */
static char *scram_client_final(int sha1, const char *client_first, const char *server_first, const char *ext,
                                size_t extlen) {
    const char *md = sha1 ? "SHA1" : "SHA256";
    int dlen = sha1 ? 20 : 32;
    char nonce[512], salt_b64[128], iter[16];
    unsigned char salt[96];
    if (scram_attr(server_first, 'r', nonce, sizeof nonce) || scram_attr(server_first, 's', salt_b64, sizeof salt_b64) ||
        scram_attr(server_first, 'i', iter, sizeof iter))
        return NULL;
    long saltlen = auth_b64_decode(salt_b64, strlen(salt_b64), salt);
    int it = atoi(iter);
    if (saltlen < 0 || it <= 0) return NULL;
    /* the gs2 header is everything up to the second comma */
    const char *c1 = strchr(client_first, ',');
    const char *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
    if (!c2) return NULL;
    size_t gl = (size_t)(c2 + 1 - client_first);
    char *cb = b64((const unsigned char *)client_first, gl);
    size_t cap = strlen(cb) + strlen(nonce) + extlen + 128;
    char *final = malloc(cap);
    if (!final) abort();
    int n = snprintf(final, cap, "c=%s,r=%s", cb, nonce);
    if (extlen) {
        final[n++] = ',';
        memcpy(final + n, ext, extlen);
        n += (int)extlen;
        final[n] = '\0';
    }
    free(cb);
    size_t aml = strlen(c2 + 1) + strlen(server_first) + (size_t)n + 2;
    char *am = malloc(aml + 1);
    if (!am) abort();
    snprintf(am, aml + 1, "%s,%s,%s", c2 + 1, server_first, final);
    unsigned char salted[64], ck[64], stored[64], sk[64], sig[64], proof[64];
    if (auth_scram_salted(md, "secret", salt, (size_t)saltlen, it, salted) != dlen ||
        auth_scram_keys(md, salted, ck, stored, sk) != 0 || auth_hmac(md, stored, (size_t)dlen, am, aml, sig) != dlen)
        abort();
    for (int i = 0; i < dlen; i++) proof[i] = ck[i] ^ sig[i];
    char *pb = b64(proof, (size_t)dlen);
    snprintf(final + n, cap - (size_t)n, ",p=%s", pb);
    free(pb);
    free(am);
    return final;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_b64(data, size);
    if (size < 2) return 0;
    static const char *const mechs[] = {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "DIGEST-MD5"};
    static const size_t outlens[] = {1024, 8, 25, 200};
    unsigned flags = data[0];
    int sep = data[1];
    int raw = (flags & 4) != 0, complete = (flags & 8) != 0;
    size_t outlen = outlens[(flags >> 4) & 3];
    const char *msg[3];
    size_t mlen[3];
    int nmsg = 0;
    const uint8_t *p = data + 2, *end = data + size;
    while (nmsg < 3) {
        const uint8_t *q = nmsg < 2 ? memchr(p, sep, (size_t)(end - p)) : NULL;
        msg[nmsg] = (const char *)p;
        mlen[nmsg] = (size_t)((q ? q : end) - p);
        nmsg++;
        if (!q) break;
        p = q + 1;
    }

    auth_sasl *x = auth_sasl_start(store, mechs[flags & 3]);
    if (!x) {
        if ((flags & 3) != 3) abort();
        return 0;
    }
    char *out = malloc(outlen);
    if (!out) abort();
    int r = AUTH_CONTINUE;
    char *first_text = NULL;
    for (int i = 0; i < nmsg && r == AUTH_CONTINUE; i++) {
        char *in;
        if (raw) {
            in = malloc(mlen[i] + 1);
            if (!in) abort();
            memcpy(in, msg[i], mlen[i]);
            in[mlen[i]] = '\0';
        } else if (complete && i == 1 && first_text && (flags & 3) < 2) {
            /* answer server-first with the right proof; message 2 becomes an extension */
            unsigned char sf[2048];
            long sn = auth_b64_decode(out, strlen(out), sf);
            char *fin = NULL;
            if (sn > 0 && (size_t)sn < sizeof sf) {
                sf[sn] = '\0';
                fin = scram_client_final((flags & 3) == 1, first_text, (const char *)sf, msg[i], mlen[i]);
            }
            if (!fin) break;
            in = b64((const unsigned char *)fin, strlen(fin));
            free(fin);
        } else {
            in = b64((const unsigned char *)msg[i], mlen[i]);
        }
        r = auth_sasl_step(x, in, out, outlen);
        if (strlen(out) >= outlen) abort();
        if (i == 0) {
            first_text = malloc(mlen[0] + 1);
            if (!first_text) abort();
            memcpy(first_text, msg[0], mlen[0]);
            first_text[mlen[0]] = '\0';
        }
        free(in);
        if (r == AUTH_FAILURE && !*auth_sasl_condition(x)) {
            fprintf(stderr, "fuzz_sasl: failure without a condition\n");
            abort();
        }
    }
    if (r == AUTH_SUCCESS) {
        const char *u = auth_sasl_user(x);
        if (!u || !auth_user_exists(store, u)) {
            fprintf(stderr, "fuzz_sasl: success for '%s', not an account\n", u ? u : "(null)");
            abort();
        }
        /* a step after success must not succeed again */
        if (auth_sasl_step(x, "", out, outlen) != AUTH_FAILURE) abort();
    } else if (r == AUTH_FAILURE) {
        if (auth_sasl_user(x)) abort();
        if (auth_sasl_step(x, "=", out, outlen) != AUTH_FAILURE) abort();
    }
    free(first_text);
    free(out);
    auth_sasl_free(x);
    return 0;
}
