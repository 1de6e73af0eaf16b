/* test_auth.c - base64, SCRAM primitives against the RFC vectors, full SASL exchanges driven by a small
 * client written here, and the account store (file format, durability rules, import, corrupt files). */
#include "auth.h"
#include "store.h"
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_ITER 64

static char root[64];

/* ---- small helpers ---- */

static void rm_rf(const char *d)
{
    DIR *dp = opendir(d);
    struct dirent *e;
    char p[512];
    if (!dp)
        return;
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(dp);
    rmdir(d);
}

static void make_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", root, name);
    rm_rf(out);
    mkdir(out, 0700);
}

static void b64_text(const void *data, size_t n, char *out)
{
    auth_b64_encode(data, n, out);
}

/* Decode base64 text into a NUL-terminated string; returns the length or -1. */
static long unb64_text(const char *in, char *out)
{
    long n = auth_b64_decode(in, strlen(in), (unsigned char *)out);
    if (n >= 0)
        out[n] = '\0';
    return n;
}

/* Send raw message bytes through one SASL step; the reply is decoded into reply (may be NULL). */
static int step_raw(auth_sasl *x, const void *msg, size_t n, char *reply)
{
    char in[8192], out[2048];
    if (auth_b64_encoded_len(n) > sizeof in)
        return -99;
    b64_text(msg, n, in);
    int rc = auth_sasl_step(x, in, out, sizeof out);
    if (reply && unb64_text(out, reply) < 0)
        reply[0] = '\0';
    return rc;
}

static int step_text(auth_sasl *x, const char *msg, char *reply)
{
    return step_raw(x, msg, strlen(msg), reply);
}

static int file_contains(const char *path, const char *needle)
{
    char *s = store_read_file(path, NULL);
    int found = s && strstr(s, needle) != NULL;
    free(s);
    return found;
}

/* ---- base64 ---- */

static void test_base64(void)
{
    static const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    for (int i = 0; i < 7; i++) {
        char out[32];
        unsigned char dec[32];
        size_t n = strlen(plain[i]);
        CHECK_INT(strlen(enc[i]) + 1, auth_b64_encoded_len(n));
        CHECK_INT(strlen(enc[i]), auth_b64_encode((const unsigned char *)plain[i], n, out));
        CHECK_STR(enc[i], out);
        long d = auth_b64_decode(enc[i], strlen(enc[i]), dec);
        CHECK_INT((long)n, d);
        CHECK(d >= 0 && memcmp(dec, plain[i], n) == 0, "decode of %s", enc[i]);
    }
    /* all byte values round-trip */
    unsigned char all[256], back[258];
    char text[400];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    auth_b64_encode(all, 256, text);
    CHECK_INT(256, auth_b64_decode(text, strlen(text), back));
    CHECK(memcmp(all, back, 256) == 0, "binary round trip");

    static const char *bad[] = {
        "Zg=", "Zg", "Z", "Z===", "====", "Zm9v YmFy", "Zm9v\n", " Zm9v", "Zm9v\r\n",
        "Zh==", "Zm9=", "=Zm8", "Zm=v", "Zm9!", "Zg==Zg==", "Zm8==", "Zg=a", "Zm9-", "Zm9_",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unsigned char dec[32];
        CHECK(auth_b64_decode(bad[i], strlen(bad[i]), dec) == -1, "accepted malformed \"%s\"", bad[i]);
    }
    /* a NUL inside the given length is not base64 either */
    unsigned char dec[8];
    CHECK_INT(-1, auth_b64_decode("Zm\0v", 4, dec));
}

/* ---- SCRAM primitives against RFC 5802 §5 and RFC 7677 §3 ---- */

static void rfc_vector(const char *md, int dlen, const char *salt_b64, const char *bare, const char *server_first,
                       const char *final_wo_proof, const char *want_proof, const char *want_v)
{
    unsigned char salt[64], salted[32], ck[32], stk[32], svk[32], sig[32], proof[32];
    char am[512], out[64];
    long sl = auth_b64_decode(salt_b64, strlen(salt_b64), salt);
    CHECK(sl > 0, "salt decodes");
    CHECK_INT(dlen, auth_scram_salted(md, "pencil", salt, (size_t)sl, 4096, salted));
    CHECK_INT(0, auth_scram_keys(md, salted, ck, stk, svk));
    snprintf(am, sizeof am, "%s,%s,%s", bare, server_first, final_wo_proof);
    CHECK_INT(dlen, auth_hmac(md, stk, (size_t)dlen, am, strlen(am), sig));
    for (int i = 0; i < dlen; i++)
        proof[i] = ck[i] ^ sig[i];
    b64_text(proof, (size_t)dlen, out);
    CHECK_STR(want_proof, out);
    CHECK_INT(dlen, auth_hmac(md, svk, (size_t)dlen, am, strlen(am), sig));
    b64_text(sig, (size_t)dlen, out);
    CHECK_STR(want_v, out);
}

static void test_rfc_vectors(void)
{
    rfc_vector("SHA1", 20, "QSXCR+Q6sek8bf92", "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
               "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
               "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
               "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    rfc_vector("SHA256", 32, "W22ZaJ0SNY7soEsUEjb6gQ==", "n=user,r=rOprNGfwEbeRWgbNEkqO",
               "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
               "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
               "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
               "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    unsigned char out[32];
    CHECK_INT(-1, auth_scram_salted("MD-NOPE", "x", (const unsigned char *)"s", 1, 1, out));
    CHECK_INT(-1, auth_scram_salted("SHA1", "x", (const unsigned char *)"s", 1, 0, out));
    CHECK_INT(-1, auth_hmac("MD-NOPE", out, 1, "x", 1, out));
}

/* ---- a SCRAM client ---- */

enum tamper {
    T_NONE, T_WRONG_PASSWORD_PROOF, T_WRONG_NONCE, T_GS2_MISMATCH, T_NO_PROOF, T_PROOF_SHORT,
    T_ORDER, T_C_BAD_B64, T_EMPTY_FINAL, T_BAD_EXTENSION, T_EXTENSION_OK,
};

struct exchange {
    int rc;                 /* final result */
    char cond[64];
    char server_first[2048];
    int v_ok;               /* server signature verified */
    char user[128];
};

/* Run a full SCRAM exchange: gs2 header as given, then "n=<saslname>,r=<cnonce>". */
static struct exchange scram_run(auth_store *st, const char *mech, const char *gs2, const char *saslname,
                                 const char *password, const char *cnonce, enum tamper t)
{
    struct exchange r;
    memset(&r, 0, sizeof r);
    const char *md = strcmp(mech, "SCRAM-SHA-1") == 0 ? "SHA1" : "SHA256";
    int dlen = strcmp(md, "SHA1") == 0 ? 20 : 32;
    auth_sasl *x = auth_sasl_start(st, mech);
    if (!x) {
        r.rc = -1;
        return r;
    }
    char bare[512], first[600], reply[2048];
    snprintf(bare, sizeof bare, "n=%s,r=%s", saslname, cnonce);
    snprintf(first, sizeof first, "%s%s", gs2, bare);
    r.rc = step_text(x, first, reply);
    if (r.rc != AUTH_CONTINUE)
        goto done;
    snprintf(r.server_first, sizeof r.server_first, "%s", reply);

    /* parse r=,s=,i= */
    char nonce[256] = "", salt_b64[128] = "";
    int iter = 0;
    if (sscanf(reply, "r=%255[^,],s=%127[^,],i=%d", nonce, salt_b64, &iter) != 3) {
        r.rc = -2;
        goto done;
    }
    unsigned char salt[96], salted[32], ck[32], stk[32], svk[32], sig[32], proof[32];
    long sl = auth_b64_decode(salt_b64, strlen(salt_b64), salt);
    if (sl <= 0 || auth_scram_salted(md, password, salt, (size_t)sl, iter, salted) != dlen ||
        auth_scram_keys(md, salted, ck, stk, svk) < 0) {
        r.rc = -3;
        goto done;
    }
    char cb[128], wo_proof[1024], am[4096], final[1200], proof_b64[64];
    if (t == T_GS2_MISMATCH)
        b64_text("y,,", 3, cb);             /* the client "remembers" a different header */
    else
        b64_text(gs2, strlen(gs2), cb);
    if (t == T_WRONG_NONCE)
        nonce[strlen(nonce) - 1] ^= 1;
    snprintf(wo_proof, sizeof wo_proof, "c=%s,r=%s%s", t == T_C_BAD_B64 ? "bi ws" : cb, nonce,
             t == T_EXTENSION_OK ? ",x=future" : t == T_BAD_EXTENSION ? ",,x" : "");
    snprintf(am, sizeof am, "%s,%s,%s", bare, reply, wo_proof);
    auth_hmac(md, stk, (size_t)dlen, am, strlen(am), sig);
    for (int i = 0; i < dlen; i++)
        proof[i] = ck[i] ^ sig[i];
    if (t == T_WRONG_PASSWORD_PROOF)
        proof[0] ^= 0x80;
    b64_text(proof, t == T_PROOF_SHORT ? (size_t)dlen - 1 : (size_t)dlen, proof_b64);
    if (t == T_NO_PROOF)
        snprintf(final, sizeof final, "%s", wo_proof);
    else if (t == T_ORDER)
        snprintf(final, sizeof final, "r=%s,c=%s,p=%s", nonce, cb, proof_b64);
    else if (t == T_EMPTY_FINAL)
        final[0] = '\0';
    else
        snprintf(final, sizeof final, "%s,p=%s", wo_proof, proof_b64);
    r.rc = t == T_EMPTY_FINAL ? step_raw(x, "", 0, reply) : step_text(x, final, reply);
    if (r.rc == AUTH_SUCCESS) {
        char want[128], sigb[64];
        auth_hmac(md, svk, (size_t)dlen, am, strlen(am), sig);
        b64_text(sig, (size_t)dlen, sigb);
        snprintf(want, sizeof want, "v=%s", sigb);
        r.v_ok = strcmp(want, reply) == 0;
        snprintf(r.user, sizeof r.user, "%s", auth_sasl_user(x) ? auth_sasl_user(x) : "(null)");
        /* a further step after success is refused */
        CHECK_INT(AUTH_FAILURE, step_text(x, "n,,n=a,r=b", NULL));
        CHECK(auth_sasl_user(x) == NULL, "user still reported after a failed extra step");
    }
done:
    snprintf(r.cond, sizeof r.cond, "%s", auth_sasl_condition(x));
    if (r.rc == AUTH_FAILURE) {
        /* the exchange stays failed */
        CHECK_INT(AUTH_FAILURE, step_text(x, "n,,n=user,r=abc", NULL));
        CHECK_STR(r.cond, auth_sasl_condition(x));
    }
    auth_sasl_free(x);
    return r;
}

/* One client-first message that must be refused with `cond`. */
static void scram_first_fails(auth_store *st, const char *mech, const void *msg, size_t n, const char *cond)
{
    auth_sasl *x = auth_sasl_start(st, mech);
    CHECK(x != NULL, "start %s", mech);
    if (!x)
        return;
    char reply[2048];
    CHECK_INT(AUTH_FAILURE, step_raw(x, msg, n, reply));
    CHECK_STR(cond, auth_sasl_condition(x));
    CHECK(auth_sasl_user(x) == NULL, "user after failure");
    auth_sasl_free(x);
}

static void scram_first_fails_s(auth_store *st, const char *mech, const char *msg, const char *cond)
{
    scram_first_fails(st, mech, msg, strlen(msg), cond);
}

/* the server-first message with the random nonce part replaced by '*', and the salt length */
static void server_first_shape(const char *sf, const char *cnonce, char *shape, size_t n)
{
    char nonce[256] = "", salt[128] = "";
    int iter = 0;
    if (sscanf(sf, "r=%255[^,],s=%127[^,],i=%d", nonce, salt, &iter) != 3) {
        snprintf(shape, n, "unparsable: %s", sf);
        return;
    }
    size_t cl = strlen(cnonce);
    snprintf(shape, n, "prefix=%d noncelen=%zu saltlen=%zu i=%d", strncmp(nonce, cnonce, cl) == 0,
             strlen(nonce) - cl, strlen(salt), iter);
}

static void test_scram_mech(auth_store *st, const char *mech)
{
    struct exchange r;
    r = scram_run(st, mech, "n,,", "alice", "wonder land", "abcdefghijkl", T_NONE);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    CHECK(r.v_ok, "%s: server signature verifies", mech);
    CHECK_STR("alice", r.user);
    char shape_known[128], shape_unknown[128];
    server_first_shape(r.server_first, "abcdefghijkl", shape_known, sizeof shape_known);
    CHECK_STR("prefix=1 noncelen=32 saltlen=24 i=64", shape_known);

    /* case-folded username, "y" flag, authzid naming the user, extensions */
    r = scram_run(st, mech, "y,,", "ALICE", "wonder land", "xyz", T_NONE);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    CHECK_STR("alice", r.user);
    r = scram_run(st, mech, "n,a=alice@example.org,", "alice", "wonder land", "xyz", T_NONE);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    r = scram_run(st, mech, "n,a=alice,", "alice", "wonder land", "xyz", T_EXTENSION_OK);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    CHECK(r.v_ok, "v with extension");
    /* saslname escapes */
    r = scram_run(st, mech, "n,,", "we=2Cird=3Dname", "pw", "n1", T_NONE);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    CHECK_STR("we,ird=name", r.user);

    /* wrong password */
    r = scram_run(st, mech, "n,,", "alice", "wonderland", "abc", T_NONE);
    CHECK_INT(AUTH_FAILURE, r.rc);
    CHECK_STR("not-authorized", r.cond);
    r = scram_run(st, mech, "n,,", "alice", "wonder land", "abc", T_WRONG_PASSWORD_PROOF);
    CHECK_INT(AUTH_FAILURE, r.rc);
    CHECK_STR("not-authorized", r.cond);

    /* unknown user: same shape, same end */
    r = scram_run(st, mech, "n,,", "mallory", "whatever", "abcdefghijkl", T_NONE);
    CHECK_INT(AUTH_FAILURE, r.rc);
    CHECK_STR("not-authorized", r.cond);
    server_first_shape(r.server_first, "abcdefghijkl", shape_unknown, sizeof shape_unknown);
    CHECK_STR(shape_known, shape_unknown);
    char salt1[128] = "", salt2[128] = "";
    sscanf(r.server_first, "r=%*[^,],s=%127[^,]", salt1);
    r = scram_run(st, mech, "n,,", "mallory", "other", "zz", T_NONE);
    sscanf(r.server_first, "r=%*[^,],s=%127[^,]", salt2);
    CHECK_STR(salt1, salt2);            /* a fake salt is stable, like a real one */
    r = scram_run(st, mech, "n,,", "eve", "other", "zz", T_NONE);
    sscanf(r.server_first, "r=%*[^,],s=%127[^,]", salt2);
    CHECK(strcmp(salt1, salt2) != 0, "fake salts differ per user");

    /* nonce / channel binding tampering */
    r = scram_run(st, mech, "n,,", "alice", "wonder land", "abc", T_WRONG_NONCE);
    CHECK_INT(AUTH_FAILURE, r.rc);
    CHECK_STR("not-authorized", r.cond);
    r = scram_run(st, mech, "n,,", "alice", "wonder land", "abc", T_GS2_MISMATCH);
    CHECK_INT(AUTH_FAILURE, r.rc);
    CHECK_STR("not-authorized", r.cond);

    /* malformed client-final messages */
    static const enum tamper bad_final[] = { T_NO_PROOF, T_PROOF_SHORT, T_ORDER, T_C_BAD_B64, T_EMPTY_FINAL,
                                             T_BAD_EXTENSION };
    for (size_t i = 0; i < sizeof bad_final / sizeof *bad_final; i++) {
        r = scram_run(st, mech, "n,,", "alice", "wonder land", "abc", bad_final[i]);
        CHECK_INT(AUTH_FAILURE, r.rc);
        CHECK(strcmp(r.cond, "malformed-request") == 0, "%s tamper %d: condition %s", mech, (int)bad_final[i],
              r.cond);
    }

    /* authzid naming someone else */
    scram_first_fails_s(st, mech, "n,a=bob,n=alice,r=abc", "invalid-authzid");
    scram_first_fails_s(st, mech, "n,a=bob@example.org,n=alice,r=abc", "invalid-authzid");
    scram_first_fails_s(st, mech, "n,a=alice@example.org/res,n=alice,r=abc", "invalid-authzid");

    /* malformed client-first messages */
    static const char *bad_first[] = {
        "x,,n=alice,r=abc",             /* bad cbind flag */
        "p=tls-unique,,n=alice,r=abc",  /* channel binding we never offered */
        "n,,m=ext,n=alice,r=abc",       /* mandatory extension */
        "n,,n=alice",                   /* no nonce */
        "n,,r=abc,n=alice",             /* wrong order */
        "n,,n=alice,r=",                /* empty nonce */
        "n,,n=alice,r=ab c",            /* nonce with a space */
        "n,,n=alice,r=ab\x7f",          /* non-printable nonce */
        "n,,n=al=41ice,r=abc",          /* unknown escape */
        "n,,n=alice=2,r=abc",           /* truncated escape */
        "n,,n=,r=abc",                  /* empty username */
        "n,n=alice,r=abc",              /* gs2 header cut short */
        "n,,n=alice,r=abc,1=x",         /* bad extension name */
        "n,,n=alice,r=abc,",            /* trailing comma */
        "n,,n=alice,r=abc,x=",          /* empty extension value */
        "n,a=,n=alice,r=abc",           /* empty authzid */
        "n",
        "y",
        ",,n=alice,r=abc",
    };
    for (size_t i = 0; i < sizeof bad_first / sizeof *bad_first; i++)
        scram_first_fails_s(st, mech, bad_first[i], "malformed-request");
    scram_first_fails(st, mech, "n,,n=alice,r=a\0c", 15, "malformed-request");

    /* not base64, and oversize */
    auth_sasl *x = auth_sasl_start(st, mech);
    char out[256];
    CHECK_INT(AUTH_FAILURE, auth_sasl_step(x, "biws bj1hbGljZQ==", out, sizeof out));
    CHECK_STR("incorrect-encoding", auth_sasl_condition(x));
    auth_sasl_free(x);
    size_t big = 6000;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    huge[big] = '\0';
    x = auth_sasl_start(st, mech);
    CHECK_INT(AUTH_FAILURE, auth_sasl_step(x, huge, out, sizeof out));
    CHECK_STR("malformed-request", auth_sasl_condition(x));
    auth_sasl_free(x);
    free(huge);
    char longmsg[4200];
    memset(longmsg, 'a', sizeof longmsg);
    memcpy(longmsg, "n,,n=alice,r=", 13);
    scram_first_fails(st, mech, longmsg, sizeof longmsg, "malformed-request");

    /* no initial response: an empty challenge first, then the exchange; a second empty is malformed */
    x = auth_sasl_start(st, mech);
    CHECK_INT(AUTH_CONTINUE, auth_sasl_step(x, "", out, sizeof out));
    CHECK_STR("", out);
    CHECK_INT(AUTH_FAILURE, auth_sasl_step(x, "=", out, sizeof out));
    CHECK_STR("malformed-request", auth_sasl_condition(x));
    auth_sasl_free(x);
    x = auth_sasl_start(st, mech);
    CHECK_INT(AUTH_CONTINUE, auth_sasl_step(x, "=", out, sizeof out));
    char reply[512];
    CHECK_INT(AUTH_CONTINUE, step_text(x, "n,,n=alice,r=abc", reply));
    CHECK(strncmp(reply, "r=abc", 5) == 0, "server-first after empty challenge: %s", reply);
    auth_sasl_free(x);          /* abandoned mid-exchange: must not leak */

    /* an output buffer too small is an internal failure, not a crash */
    x = auth_sasl_start(st, mech);
    char b64[64], tiny[8];
    b64_text("n,,n=alice,r=abc", 16, b64);
    CHECK_INT(AUTH_FAILURE, auth_sasl_step(x, b64, tiny, sizeof tiny));
    CHECK_STR("temporary-auth-failure", auth_sasl_condition(x));
    auth_sasl_free(x);
}

/* PLAIN message "authzid\0authcid\0password" */
static int plain_try(auth_store *st, const char *authzid, const char *authcid, const char *pw, char *cond,
                     char *user)
{
    char msg[4200];
    size_t n = 0;
    n += (size_t)sprintf(msg + n, "%s", authzid) + 1;
    n += (size_t)sprintf(msg + n, "%s", authcid) + 1;
    n += (size_t)sprintf(msg + n, "%s", pw);
    auth_sasl *x = auth_sasl_start(st, "PLAIN");
    char reply[256];
    int rc = step_raw(x, msg, n, reply);
    strcpy(cond, auth_sasl_condition(x));
    strcpy(user, auth_sasl_user(x) ? auth_sasl_user(x) : "");
    if (rc == AUTH_SUCCESS)
        CHECK_STR("", reply);
    auth_sasl_free(x);
    return rc;
}

static void test_plain(auth_store *st)
{
    char cond[64], user[128];
    CHECK_INT(AUTH_SUCCESS, plain_try(st, "", "alice", "wonder land", cond, user));
    CHECK_STR("alice", user);
    CHECK_INT(AUTH_SUCCESS, plain_try(st, "alice@example.org", "Alice", "wonder land", cond, user));
    CHECK_STR("alice", user);
    CHECK_INT(AUTH_SUCCESS, plain_try(st, "alice", "alice", "wonder land", cond, user));
    CHECK_INT(AUTH_FAILURE, plain_try(st, "", "alice", "wonder lan", cond, user));
    CHECK_STR("not-authorized", cond);
    CHECK_STR("", user);
    CHECK_INT(AUTH_FAILURE, plain_try(st, "", "mallory", "wonder land", cond, user));
    CHECK_STR("not-authorized", cond);
    CHECK_INT(AUTH_FAILURE, plain_try(st, "", "alice", "", cond, user));
    CHECK_STR("not-authorized", cond);
    CHECK_INT(AUTH_FAILURE, plain_try(st, "", "", "wonder land", cond, user));
    CHECK_STR("not-authorized", cond);
    CHECK_INT(AUTH_FAILURE, plain_try(st, "bob@example.org", "alice", "wonder land", cond, user));
    CHECK_STR("invalid-authzid", cond);

    /* malformed: no NUL, one NUL, three NULs, bad base64 */
    static const struct { const char *m; size_t n; } bad[] = {
        { "alice", 5 }, { "alice\0pw", 8 }, { "\0alice\0pw\0", 10 }, { "", 0 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        auth_sasl *x = auth_sasl_start(st, "PLAIN");
        if (bad[i].n == 0)      /* the empty challenge round first */
            CHECK_INT(AUTH_CONTINUE, step_raw(x, "", 0, NULL));
        CHECK_INT(AUTH_FAILURE, step_raw(x, bad[i].m, bad[i].n, NULL));
        CHECK_STR("malformed-request", auth_sasl_condition(x));
        auth_sasl_free(x);
    }
    auth_sasl *x = auth_sasl_start(st, "PLAIN");
    char out[64];
    CHECK_INT(AUTH_FAILURE, auth_sasl_step(x, "AGFsaWNlAHB3=", out, sizeof out));
    CHECK_STR("incorrect-encoding", auth_sasl_condition(x));
    auth_sasl_free(x);

    /* no initial response, then the credentials */
    x = auth_sasl_start(st, "PLAIN");
    CHECK_INT(AUTH_CONTINUE, auth_sasl_step(x, "", out, sizeof out));
    CHECK_STR("", out);
    CHECK_INT(AUTH_SUCCESS, step_raw(x, "\0alice\0wonder land", 18, NULL));
    CHECK_STR("alice", auth_sasl_user(x));
    CHECK_INT(AUTH_FAILURE, step_raw(x, "\0alice\0wonder land", 18, NULL));
    auth_sasl_free(x);
}

static void test_sasl(void)
{
    char dir[128], err[256];
    make_dir(dir, sizeof dir, "sasl");
    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "open: %s", err);
    if (!st)
        return;
    CHECK_INT(0, auth_user_add(st, "alice", "wonder land"));
    CHECK_INT(0, auth_user_add(st, "we,ird=name", "pw"));

    const char *const *m = auth_mechanisms();
    CHECK_STR("SCRAM-SHA-256", m[0]);
    CHECK_STR("SCRAM-SHA-1", m[1]);
    CHECK_STR("PLAIN", m[2]);
    CHECK(m[3] == NULL, "three mechanisms");
    CHECK(auth_sasl_start(st, "DIGEST-MD5") == NULL, "unknown mechanism refused");
    CHECK(auth_sasl_start(st, "SCRAM-SHA-1-PLUS") == NULL, "no -PLUS");
    CHECK(auth_sasl_start(st, "scram-sha-1") == NULL, "mechanism names are case-sensitive");

    test_scram_mech(st, "SCRAM-SHA-1");
    test_scram_mech(st, "SCRAM-SHA-256");
    test_plain(st);
    auth_store_free(st);
    rm_rf(dir);
}

/* The RFC salts and iteration count put into an accounts file: the server must hand them out as is. */
static void test_rfc_account(void)
{
    char dir[128], path[160], err[256], line[512];
    make_dir(dir, sizeof dir, "rfc");
    snprintf(path, sizeof path, "%s/accounts", dir);
    const char *salts[2] = { "QSXCR+Q6sek8bf92", "W22ZaJ0SNY7soEsUEjb6gQ==" };
    const char *mds[2] = { "SHA1", "SHA256" };
    int n = snprintf(line, sizeof line, "# couplet accounts v1\nuser");
    for (int k = 0; k < 2; k++) {
        unsigned char salt[32], salted[32], stk[32], svk[32];
        char a[64], b[64];
        long sl = auth_b64_decode(salts[k], strlen(salts[k]), salt);
        int dl = auth_scram_salted(mds[k], "pencil", salt, (size_t)sl, 4096, salted);
        auth_scram_keys(mds[k], salted, NULL, stk, svk);
        b64_text(stk, (size_t)dl, a);
        b64_text(svk, (size_t)dl, b);
        n += snprintf(line + n, sizeof line - (size_t)n, " SCRAM-SHA-%s:4096:%s:%s:%s", k ? "256" : "1", salts[k],
                      a, b);
    }
    snprintf(line + n, sizeof line - (size_t)n, "\n");
    CHECK_INT(0, store_write_atomic(path, line, strlen(line)));
    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "open: %s", err);
    if (!st)
        return;
    struct exchange r = scram_run(st, "SCRAM-SHA-1", "n,,", "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL", T_NONE);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    CHECK(r.v_ok, "v");
    CHECK(strncmp(r.server_first, "r=fyko+d2lbbFgONRv9qkxdawL", 26) == 0, "%s", r.server_first);
    CHECK(strstr(r.server_first, ",s=QSXCR+Q6sek8bf92,i=4096") != NULL, "%s", r.server_first);
    r = scram_run(st, "SCRAM-SHA-256", "n,,", "user", "pencil", "rOprNGfwEbeRWgbNEkqO", T_NONE);
    CHECK_INT(AUTH_SUCCESS, r.rc);
    CHECK(r.v_ok, "v");
    CHECK(strstr(r.server_first, ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") != NULL, "%s", r.server_first);
    char cond[64], user[64];
    CHECK_INT(AUTH_SUCCESS, plain_try(st, "", "user", "pencil", cond, user));
    /* the rewritten file keeps these keys byte for byte */
    CHECK_INT(0, auth_user_add(st, "other", "x"));
    CHECK(file_contains(path, "user SCRAM-SHA-1:4096:QSXCR+Q6sek8bf92:"), "key kept on rewrite");
    auth_store_free(st);
    rm_rf(dir);
}

/* ---- account store ---- */

static int plain_ok(auth_store *st, const char *user, const char *pw)
{
    char cond[64], u[1100];
    return plain_try(st, "", user, pw, cond, u) == AUTH_SUCCESS;
}

static int scram_ok(auth_store *st, const char *mech, const char *user, const char *pw)
{
    struct exchange r = scram_run(st, mech, "n,,", user, pw, "nonce", T_NONE);
    return r.rc == AUTH_SUCCESS && r.v_ok;
}

static void test_accounts(void)
{
    char dir[128], path[160], tmpdir[200], err[256];
    make_dir(dir, sizeof dir, "acc");
    snprintf(path, sizeof path, "%s/accounts", dir);
    const char *pw = "CorrectHorse-Battery9";

    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "open empty: %s", err);
    if (!st)
        return;
    CHECK_INT(0, auth_store_count(st));
    CHECK(access(path, F_OK) != 0, "opening must not create the file");
    CHECK_INT(0, auth_user_add(st, "alice", pw));
    CHECK_INT(-2, auth_user_add(st, "alice", "other"));
    CHECK_INT(0, auth_user_add(st, "bob", "bob's password"));
    CHECK_INT(2, auth_store_count(st));
    CHECK(auth_user_exists(st, "alice"), "alice exists");
    CHECK(!auth_user_exists(st, "carol"), "carol does not");
    CHECK(!auth_user_exists(st, "Alice"), "lookup is exact (callers normalise)");
    CHECK_INT(-2, auth_user_passwd(st, "carol", "x"));
    CHECK_INT(-2, auth_user_del(st, "carol"));

    /* invalid names and passwords */
    static const char *bad[] = { "", "a b", "a\tb", "a@b", "a/b", "a:b", "a\nb" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        errno = 0;
        CHECK_INT(-1, auth_user_add(st, bad[i], "pw"));
        CHECK_INT(EINVAL, errno);
        CHECK_INT(-1, auth_user_passwd(st, bad[i], "pw"));
        CHECK_INT(-1, auth_user_del(st, bad[i]));
    }
    char longname[1030];
    memset(longname, 'l', 1024);
    longname[1024] = '\0';
    errno = 0;
    CHECK_INT(-1, auth_user_add(st, longname, "pw"));
    CHECK_INT(EINVAL, errno);
    longname[1023] = '\0';
    CHECK_INT(0, auth_user_add(st, longname, "pw"));
    CHECK(plain_ok(st, longname, "pw"), "1023-byte localpart logs in");
    CHECK_INT(0, auth_user_del(st, longname));
    CHECK_INT(-1, auth_user_add(st, "dave", ""));
    CHECK_INT(-1, auth_user_add(st, "dave", NULL));

    /* the file holds keys only */
    struct stat sb;
    CHECK_INT(0, stat(path, &sb));
    CHECK_INT(0600, sb.st_mode & 0777);
    CHECK(!file_contains(path, pw), "password text in the accounts file");
    CHECK(!file_contains(path, "bob's password"), "password text in the accounts file");
    CHECK(file_contains(path, "# couplet accounts v1\n"), "format header");
    CHECK(file_contains(path, "\nalice SCRAM-SHA-1:64:"), "alice line");
    CHECK(file_contains(path, "SCRAM-SHA-256:64:"), "sha-256 keys");
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp", path);
    CHECK(access(tmpdir, F_OK) != 0, "no tmp left");

    CHECK(plain_ok(st, "alice", pw), "alice PLAIN");
    CHECK(scram_ok(st, "SCRAM-SHA-1", "alice", pw), "alice SCRAM-SHA-1");

    /* passwd */
    CHECK_INT(0, auth_user_passwd(st, "alice", "new secret"));
    CHECK(!plain_ok(st, "alice", pw), "old password refused");
    CHECK(plain_ok(st, "alice", "new secret"), "new password accepted");
    CHECK(scram_ok(st, "SCRAM-SHA-256", "alice", "new secret"), "new password via SCRAM");

    /* reopen: same accounts, logins still work */
    auth_store_free(st);
    st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "reopen: %s", err);
    if (!st)
        return;
    CHECK_INT(2, auth_store_count(st));
    CHECK(plain_ok(st, "alice", "new secret"), "alice after reopen");
    CHECK(scram_ok(st, "SCRAM-SHA-1", "bob", "bob's password"), "bob SCRAM-SHA-1 after reopen");
    CHECK(scram_ok(st, "SCRAM-SHA-256", "bob", "bob's password"), "bob SCRAM-SHA-256 after reopen");

    /* del */
    CHECK_INT(0, auth_user_del(st, "bob"));
    CHECK(!auth_user_exists(st, "bob"), "bob deleted");
    CHECK(!plain_ok(st, "bob", "bob's password"), "deleted user cannot log in");
    CHECK_INT(1, auth_store_count(st));

    /* a write that fails leaves memory as it was: a directory where the tmp file must go */
    char *before = store_read_file(path, NULL);
    CHECK_INT(0, mkdir(tmpdir, 0700));
    errno = 0;
    CHECK_INT(-1, auth_user_add(st, "carol", "pw"));
    CHECK(errno != 0, "errno set");
    CHECK(!auth_user_exists(st, "carol"), "carol not added in memory");
    CHECK_INT(-1, auth_user_passwd(st, "alice", "third"));
    CHECK(plain_ok(st, "alice", "new secret"), "password unchanged after a failed passwd");
    CHECK_INT(-1, auth_user_del(st, "alice"));
    CHECK(auth_user_exists(st, "alice"), "alice kept after a failed del");
    FILE *f = fmemopen((void *)"x1 a\nx2 b\n", 10, "r");
    CHECK_INT(-1, auth_import(st, f, err, sizeof err));
    CHECK(strstr(err, "accounts") != NULL, "import write error: %s", err);
    fclose(f);
    CHECK(!auth_user_exists(st, "x1"), "failed import adds nothing");
    CHECK_INT(1, auth_store_count(st));
    char *after = store_read_file(path, NULL);
    CHECK(before && after && strcmp(before, after) == 0, "file unchanged by failed writes");
    free(before);
    free(after);
    rmdir(tmpdir);
    CHECK_INT(0, auth_user_add(st, "carol", "pw"));
    auth_store_free(st);

    /* a data directory that does not exist yet is created on the first write */
    char fresh[200];
    snprintf(fresh, sizeof fresh, "%s/newdir", dir);
    st = auth_store_open(fresh, 0, err, sizeof err);
    CHECK(st != NULL, "open missing dir: %s", err);
    if (st) {
        CHECK_INT(0, auth_user_add(st, "zed", "pw"));
        auth_store_free(st);
    }
    snprintf(fresh, sizeof fresh, "%s/newdir/accounts", dir);
    CHECK(file_contains(fresh, "zed SCRAM-SHA-1:4096:"), "default 4096 iterations");
    rm_rf(dir);
}

static void test_import(void)
{
    char dir[128], path[160], err[256];
    make_dir(dir, sizeof dir, "imp");
    snprintf(path, sizeof path, "%s/accounts", dir);
    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    if (!st) {
        CHECK(0, "open: %s", err);
        return;
    }
    CHECK_INT(0, auth_user_add(st, "existing", "pw"));

    /* 1,000 accounts in both forms with comments and blank lines */
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, "# exported accounts\n\n");
    for (int i = 0; i < 1000; i++) {
        if (i % 2)
            len += (size_t)snprintf(text + len, cap - len, "User%d@Example.org pass %d word\n", i, i);
        else
            len += (size_t)snprintf(text + len, cap - len, "user%d pass %d word\n", i, i);
        if (i % 100 == 0)
            len += (size_t)snprintf(text + len, cap - len, "   \n# note\n");
    }
    char *clean = malloc(len + 1);
    memcpy(clean, text, len + 1);

    /* a bad line at the end refuses the whole import */
    char *before = store_read_file(path, NULL);
    static const char *badlines[] = { "nopassword\n", "bad/name secret\n", "a:b secret\n", "@example.org pw\n",
                                      "user5 duplicate\n", "existing pw\n", "trailing \n" };
    for (size_t k = 0; k < sizeof badlines / sizeof *badlines; k++) {
        size_t l2 = len;
        memcpy(text, clean, len + 1);
        l2 += (size_t)snprintf(text + l2, cap - l2, "%s", badlines[k]);
        FILE *f = fmemopen(text, l2, "r");
        err[0] = '\0';
        CHECK_INT(-1, auth_import(st, f, err, sizeof err));
        fclose(f);
        CHECK(strstr(err, "line 1023") != NULL, "bad line %zu: err \"%s\"", k, err);
        CHECK_INT(1, auth_store_count(st));
    }
    char *after = store_read_file(path, NULL);
    CHECK(before && after && strcmp(before, after) == 0, "file untouched by refused imports");
    free(before);
    free(after);
    CHECK(!auth_user_exists(st, "user0"), "nothing imported");

    FILE *f = fmemopen(clean, len, "r");
    CHECK_INT(1000, auth_import(st, f, err, sizeof err));
    fclose(f);
    CHECK_INT(1001, auth_store_count(st));
    CHECK(auth_user_exists(st, "user0") && auth_user_exists(st, "user999") && auth_user_exists(st, "user501"),
          "imported accounts exist (lowercased)");
    CHECK(plain_ok(st, "user501", "pass 501 word"), "password keeps its spaces");
    CHECK(scram_ok(st, "SCRAM-SHA-256", "user998", "pass 998 word"), "imported account SCRAM");
    CHECK(!file_contains(path, "pass 501 word"), "no password in the file");
    auth_store_free(st);

    st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "reopen: %s", err);
    if (st) {
        CHECK_INT(1001, auth_store_count(st));
        CHECK(plain_ok(st, "user7", "pass 7 word"), "imported account after reopen");
        /* an import of only comments adds nothing and succeeds */
        f = fmemopen((void *)"# nothing\n\n", 11, "r");
        CHECK_INT(0, auth_import(st, f, err, sizeof err));
        fclose(f);
        /* CRLF line ends and a last line without newline */
        f = fmemopen((void *)"crlf pw1\r\nlast pw2", 18, "r");
        CHECK_INT(2, auth_import(st, f, err, sizeof err));
        fclose(f);
        CHECK(plain_ok(st, "crlf", "pw1") && plain_ok(st, "last", "pw2"), "crlf import");
        auth_store_free(st);
    }
    free(text);
    free(clean);
    rm_rf(dir);
}

static void corrupt_case(const char *dir, const char *path, const char *content, const char *want)
{
    char err[256] = "";
    CHECK_INT(0, store_write_atomic(path, content, strlen(content)));
    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st == NULL, "corrupt file accepted: %s", content);
    auth_store_free(st);
    CHECK(strncmp(err, want, strlen(want)) == 0, "err \"%s\", wanted prefix \"%s\"", err, want);
}

static void test_corrupt(void)
{
    char dir[128], path[160], err[256];
    make_dir(dir, sizeof dir, "bad");
    snprintf(path, sizeof path, "%s/accounts", dir);
    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK_INT(0, auth_user_add(st, "alice", "pw"));
    CHECK_INT(0, auth_user_add(st, "bob", "pw"));
    auth_store_free(st);
    char *good = store_read_file(path, NULL);
    /* take alice's or bob's line as a template */
    char *l = strstr(good, "\nalice ");
    CHECK(l != NULL, "alice line");
    if (!l) {
        free(good);
        return;
    }
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(l + 1, "\n"), l + 1);
    const char *keys = strchr(line, ' ') + 1;
    char text[2048];

    snprintf(text, sizeof text, "# c\n%s\n%s\n", line, line);
    corrupt_case(dir, path, text, "accounts:3: duplicate");
    snprintf(text, sizeof text, "# c\n\ncarol %s\nnokeys\n", keys);
    corrupt_case(dir, path, text, "accounts:4: ");
    snprintf(text, sizeof text, "carol SCRAM-MD5:64:QUJD:QUJD:QUJD\n");
    corrupt_case(dir, path, text, "accounts:1: ");
    snprintf(text, sizeof text, "x\nbad@name %s\n", keys);
    corrupt_case(dir, path, text, "accounts:1: ");
    snprintf(text, sizeof text, "# c\nbad@name %s\n", keys);
    corrupt_case(dir, path, text, "accounts:2: ");
    snprintf(text, sizeof text, "# couplet accounts v9\ncarol %s\n", keys);
    corrupt_case(dir, path, text, "accounts:1: ");
    snprintf(text, sizeof text, "carol SCRAM-SHA-1:0:QUJD:QUJD:QUJD\n");
    corrupt_case(dir, path, text, "accounts:1: ");
    snprintf(text, sizeof text, "carol SCRAM-SHA-1:64:QUJD:QUJD:QUJD\n");    /* key of the wrong size */
    corrupt_case(dir, path, text, "accounts:1: ");
    snprintf(text, sizeof text, "carol SCRAM-SHA-1:64:Q!JD:QUJD:QUJD\n");
    corrupt_case(dir, path, text, "accounts:1: ");
    snprintf(text, sizeof text, "# ok\n%s \n", line);                         /* trailing space */
    corrupt_case(dir, path, text, "accounts:2: ");
    snprintf(text, sizeof text, "%s\ncarol %.*s\n", line, (int)(strlen(keys) - 3), keys); /* truncated */
    corrupt_case(dir, path, text, "accounts:2: ");

    /* a line with only one mechanism is fine: that mechanism works, the other fails as for strangers */
    char sha1only[512];
    snprintf(sha1only, sizeof sha1only, "%.*s", (int)strcspn(line, " ") + 1 + (int)strcspn(keys, " "), line);
    snprintf(text, sizeof text, "%s\n", sha1only);
    CHECK_INT(0, store_write_atomic(path, text, strlen(text)));
    st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "sha1-only line: %s", err);
    if (st) {
        CHECK(scram_ok(st, "SCRAM-SHA-1", "alice", "pw"), "SHA-1 works");
        CHECK(!scram_ok(st, "SCRAM-SHA-256", "alice", "pw"), "SHA-256 absent");
        CHECK(plain_ok(st, "alice", "pw"), "PLAIN falls back to SHA-1 keys");
        auth_store_free(st);
    }
    free(good);

    /* unreadable: the path is a directory */
    rm_rf(dir);
    mkdir(dir, 0700);
    mkdir(path, 0700);
    st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st == NULL, "directory as accounts file");
    CHECK(strncmp(err, "accounts: ", 10) == 0, "err \"%s\"", err);
    auth_store_free(st);
    CHECK(auth_store_open(dir, -1, err, sizeof err) == NULL, "negative iterations refused");
    rm_rf(dir);
}

/* 100,000 accounts load and answer lookups (timing is the benchmark's job; this checks it works). */
static void test_many(void)
{
    char dir[128], path[160], err[256];
    make_dir(dir, sizeof dir, "many");
    snprintf(path, sizeof path, "%s/accounts", dir);
    auth_store *st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK_INT(0, auth_user_add(st, "template", "pw"));
    auth_store_free(st);
    char *good = store_read_file(path, NULL);
    char *l = strstr(good, "\ntemplate ");
    const char *keys = l ? l + 10 : "";
    size_t kl = strcspn(keys, "\n");
    size_t n = 100000, cap = n * (kl + 16) + 64, len = 0;
    char *text = malloc(cap);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "u%zu %.*s\n", i, (int)kl, keys);
    CHECK_INT(0, store_write_atomic(path, text, len));
    free(text);
    free(good);
    st = auth_store_open(dir, TEST_ITER, err, sizeof err);
    CHECK(st != NULL, "open 100k: %s", err);
    if (st) {
        CHECK_INT(n, auth_store_count(st));
        int all = 1;
        for (size_t i = 0; i < n; i += 7) {
            char name[32];
            snprintf(name, sizeof name, "u%zu", i);
            all &= auth_user_exists(st, name);
        }
        CHECK(all, "every account found");
        CHECK(!auth_user_exists(st, "u100000"), "no extra account");
        CHECK(plain_ok(st, "u99999", "pw"), "login among 100k");
        CHECK_INT(0, auth_user_del(st, "u5"));
        CHECK_INT(n - 1, auth_store_count(st));
        auth_store_free(st);
    }
    rm_rf(dir);
}

/* Nonces come from a pool refilled every 256 bytes: across refills no two are equal, none is all zero
 * (the pool wipes what it hands out), and a request larger than the pool still gets fresh bytes. */
static void test_random(void)
{
    enum { N = 200, LEN = 24 };
    static unsigned char got[N][LEN];
    for (int i = 0; i < N; i++)
        CHECK_INT(0, auth_random(got[i], LEN));
    int zero = 0, dup = 0;
    static const unsigned char zeros[LEN];
    for (int i = 0; i < N; i++) {
        zero += memcmp(got[i], zeros, LEN) == 0;
        for (int j = 0; j < i; j++)
            dup += memcmp(got[i], got[j], LEN) == 0;
    }
    CHECK_INT(0, zero);
    CHECK_INT(0, dup);
    unsigned char big[1000], big2[1000];
    CHECK_INT(0, auth_random(big, sizeof big));
    CHECK_INT(0, auth_random(big2, sizeof big2));
    CHECK(memcmp(big, big2, sizeof big) != 0, "two 1000-byte draws are equal");
}

int main(void)
{
    strcpy(root, "/tmp/couplet-auth-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_base64();
    test_random();
    test_rfc_vectors();
    test_sasl();
    test_rfc_account();
    test_accounts();
    test_import();
    test_corrupt();
    test_many();
    rm_rf(root);
    CHECK(access(root, F_OK) != 0, "scratch directory removed");
    return check_summary("auth");
}
