/* auth.c - base64, the account store and the SASL server mechanisms (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256,
 * RFC 4616 / 5802 / 7677) built directly on OpenSSL's digest, HMAC and PBKDF2 primitives.
 * The accounts file keeps only salted SCRAM keys, never a password, so a stolen file cannot be replayed
 * against other services; it is rewritten whole through store_write_atomic on every change, and memory
 * is updated only after the write succeeded, so disk and memory never disagree. */
#include "auth.h"
#include "stanza.h"
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define ACCOUNTS_HEADER   "# couplet accounts v1"
#define LOCALPART_MAX     1023
#define SALT_LEN          16        /* salt of new keys */
#define SALT_MAX          32        /* longest salt accepted from the file */
#define KEY_MAX           32        /* SHA-256 output, the longest digest we use */
#define ITER_DEFAULT      4096
#define ITER_MAX          10000000  /* a bound so a bad file or config cannot stall the event loop */
#define SNONCE_LEN        24
#define SASL_MAX_MSG      4096      /* decoded size of one SASL message */
#define B64_LEN(n)        (((n) + 2) / 3 * 4 + 1)   /* auth_b64_encoded_len as a constant */

/* ------------------------------------------------------------------------------------------------ */
/* base64                                                                                            */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t auth_b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4 + 1;
}

size_t auth_b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict, so that every byte string has exactly one accepted encoding (no whitespace, exact padding,
 * zero trailing bits): peers cannot smuggle variants past comparisons of encoded text. */
long auth_b64_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 != 0 || len / 4 > (size_t)LONG_MAX / 3)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int v[4] = { 0 };
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            if (c == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad)                    /* data after padding */
                return -1;
            v[k] = b64_value(c);
            if (v[k] < 0)
                return -1;
        }
        unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        if (pad == 2 && (w & 0xffff) != 0)
            return -1;
        if (pad == 1 && (w & 0xff) != 0)
            return -1;
        out[o++] = (unsigned char)(w >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(w >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)w;
    }
    return (long)o;
}

/* ------------------------------------------------------------------------------------------------ */
/* digest helpers                                                                                    */

/* OpenSSL 3 looks an algorithm up by name inside every one-shot HMAC() and every EVP_Digest() given a
 * built-in EVP_sha1(); that lookup cost more than the hashing in a SCRAM login. So each digest is fetched
 * once, with one reusable HMAC context and one digest context (the process is single-threaded), and
 * freed at exit. */
typedef struct digest_cache {
    const char *name;
    EVP_MD *md;
    EVP_MAC_CTX *mac;
    EVP_MD_CTX *ctx;
} digest_cache;

static digest_cache digests[] = { { "SHA1", NULL, NULL, NULL }, { "SHA256", NULL, NULL, NULL } };

static void digest_clear(digest_cache *d)
{
    EVP_MAC_CTX_free(d->mac);
    EVP_MD_CTX_free(d->ctx);
    EVP_MD_free(d->md);
    d->mac = NULL;
    d->ctx = NULL;
    d->md = NULL;
}

static void digests_free(void)
{
    for (size_t i = 0; i < sizeof digests / sizeof digests[0]; i++)
        digest_clear(&digests[i]);
}

static int digest_setup(digest_cache *d)
{
    static int registered;
    if (!registered && atexit(digests_free) == 0)
        registered = 1;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    d->md = EVP_MD_fetch(NULL, d->name, NULL);
    d->ctx = EVP_MD_CTX_new();
    d->mac = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);      /* the context holds its own reference */
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)d->name, 0),
                            OSSL_PARAM_construct_end() };
    if (!d->md || !d->ctx || !d->mac || !EVP_MAC_CTX_set_params(d->mac, params)) {
        digest_clear(d);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* "SHA1"/"SHA-1" or "SHA256"/"SHA-256", fetched on first use; NULL if unknown or unavailable */
static digest_cache *digest_get(const char *md)
{
    digest_cache *d;
    if (!md)
        return NULL;
    if (strcmp(md, "SHA1") == 0 || strcmp(md, "SHA-1") == 0)
        d = &digests[0];
    else if (strcmp(md, "SHA256") == 0 || strcmp(md, "SHA-256") == 0)
        d = &digests[1];
    else
        return NULL;
    if (!d->md && digest_setup(d) < 0)
        return NULL;
    return d;
}

/* out = md(data); returns the digest length or -1 */
static int digest_once(digest_cache *d, const void *data, size_t n, unsigned char *out)
{
    unsigned int len = 0;
    if (!d)
        return -1;
    if (!EVP_DigestInit_ex(d->ctx, d->md, NULL) || !EVP_DigestUpdate(d->ctx, data, n) ||
        !EVP_DigestFinal_ex(d->ctx, out, &len)) {
        ERR_clear_error();
        return -1;
    }
    return (int)len;
}

int auth_hmac(const char *md, const unsigned char *key, size_t keylen, const void *data, size_t n,
              unsigned char *out)
{
    digest_cache *d = digest_get(md);
    size_t len = 0;
    if (!d || !EVP_MAC_init(d->mac, key, keylen, NULL) || !EVP_MAC_update(d->mac, data, n) ||
        !EVP_MAC_final(d->mac, out, &len, KEY_MAX)) {
        ERR_clear_error();
        return -1;
    }
    return (int)len;
}

/* Random bytes for nonces and stream ids. One RAND_bytes() call takes the DRBG's lock and sets up its
 * cipher each time, which cost more than the rest of SCRAM's server side; a small pool refilled in one
 * call makes that once per ten logins. Bytes handed out are wiped from the pool. */
int auth_random(void *out, size_t n)
{
    static unsigned char pool[256];
    static size_t left;
    if (n > sizeof pool)
        return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
    if (left < n) {
        if (RAND_bytes(pool, sizeof pool) != 1) {
            left = 0;
            return -1;
        }
        left = sizeof pool;
    }
    left -= n;
    memcpy(out, pool + left, n);
    OPENSSL_cleanse(pool + left, n);
    return 0;
}

int auth_scram_salted(const char *md, const char *password, const unsigned char *salt, size_t saltlen,
                      int iterations, unsigned char *out)
{
    digest_cache *d = digest_get(md);
    const EVP_MD *m = d ? d->md : NULL;
    if (!m || !password || !salt || iterations < 1 || saltlen > INT_MAX)
        return -1;
    size_t plen = strlen(password);
    int dlen = EVP_MD_get_size(m);
    if (plen > INT_MAX || dlen <= 0)
        return -1;
    if (!PKCS5_PBKDF2_HMAC(password, (int)plen, salt, (int)saltlen, iterations, m, dlen, out))
        return -1;
    return dlen;
}

int auth_scram_keys(const char *md, const unsigned char *salted, unsigned char *client_key,
                    unsigned char *stored_key, unsigned char *server_key)
{
    digest_cache *d = digest_get(md);
    if (!d)
        return -1;
    int dlen = EVP_MD_get_size(d->md);
    if (dlen <= 0 || dlen > KEY_MAX)
        return -1;
    unsigned char ck[KEY_MAX], sk[KEY_MAX], st[KEY_MAX];
    int rc = -1;
    if (auth_hmac(md, salted, (size_t)dlen, "Client Key", 10, ck) != dlen)
        goto out;
    if (auth_hmac(md, salted, (size_t)dlen, "Server Key", 10, sk) != dlen)
        goto out;
    if (digest_once(d, ck, (size_t)dlen, st) != dlen)
        goto out;
    if (client_key) memcpy(client_key, ck, (size_t)dlen);
    if (stored_key) memcpy(stored_key, st, (size_t)dlen);
    if (server_key) memcpy(server_key, sk, (size_t)dlen);
    rc = 0;
out:
    OPENSSL_cleanse(ck, sizeof ck);
    OPENSSL_cleanse(sk, sizeof sk);
    return rc;
}

/* ------------------------------------------------------------------------------------------------ */
/* accounts                                                                                          */

enum { MECH_SHA1 = 0, MECH_SHA256 = 1, MECH_COUNT = 2 };

static const struct {
    const char *name;       /* in the file and on the wire */
    const char *md;
    int dlen;
} mechs[MECH_COUNT] = {
    { "SCRAM-SHA-1", "SHA1", 20 },
    { "SCRAM-SHA-256", "SHA256", 32 },
};

struct scram_entry {
    uint32_t iter;          /* 0: no key for this mechanism */
    uint8_t saltlen;
    uint8_t salt[SALT_MAX];
    uint8_t stored[KEY_MAX];
    uint8_t server[KEY_MAX];
};

struct account {
    struct account *next;   /* hash chain */
    uint64_t hash;
    struct scram_entry e[MECH_COUNT];
    char localpart[];
};

struct acc_table {
    struct account **buckets;
    size_t nbuckets;        /* power of two, or 0 before the first insert */
    size_t count;
};

/* What the account file was when we last read or wrote it: a rename (every change is one) gives a new
 * inode, an edit in place a new mtime or size. */
struct file_id {
    dev_t dev;
    ino_t ino;
    struct timespec mtim;
    off_t size;
    int exists;
};

struct auth_store {
    struct acc_table t;
    struct file_id id;
    char *data_dir;
    char *path;
    int iterations;
    unsigned char fake_secret[32];   /* keys the fake salts of unknown users */
};

static void file_id_read(const char *path, struct file_id *id)
{
    struct stat st;
    memset(id, 0, sizeof *id);
    if (stat(path, &st) < 0)
        return;
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    id->mtim = st.st_mtim;
    id->size = st.st_size;
    id->exists = 1;
}

static int file_id_same(const struct file_id *a, const struct file_id *b)
{
    if (a->exists != b->exists)
        return 0;
    return !a->exists || (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
                          a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec);
}

static struct account *table_find(const struct acc_table *t, const char *lp)
{
    if (!t->nbuckets || !lp)
        return NULL;
    uint64_t h = str_hash(lp);
    for (struct account *a = t->buckets[h & (t->nbuckets - 1)]; a; a = a->next)
        if (a->hash == h && strcmp(a->localpart, lp) == 0)
            return a;
    return NULL;
}

static int table_grow(struct acc_table *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    struct account **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct account *a = t->buckets[i];
        while (a) {
            struct account *next = a->next;
            size_t k = a->hash & (n - 1);
            a->next = b[k];
            b[k] = a;
            a = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

/* Call table_reserve first when the insert must not fail. */
static int table_reserve(struct acc_table *t, size_t extra)
{
    while (t->count + extra > t->nbuckets)
        if (table_grow(t) < 0)
            return -1;
    return 0;
}

static int table_insert(struct acc_table *t, struct account *a)
{
    if (table_reserve(t, 1) < 0)
        return -1;
    size_t k = a->hash & (t->nbuckets - 1);
    a->next = t->buckets[k];
    t->buckets[k] = a;
    t->count++;
    return 0;
}

static void table_remove(struct acc_table *t, struct account *a)
{
    struct account **pp = &t->buckets[a->hash & (t->nbuckets - 1)];
    while (*pp && *pp != a)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = a->next;
        t->count--;
    }
}

static void account_free(struct account *a)
{
    if (a) {
        OPENSSL_cleanse(a->e, sizeof a->e);
        free(a);
    }
}

static void table_clear(struct acc_table *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct account *a = t->buckets[i];
        while (a) {
            struct account *next = a->next;
            account_free(a);
            a = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

static struct account *account_new(const char *lp)
{
    size_t n = strlen(lp);
    struct account *a = calloc(1, sizeof *a + n + 1);
    if (!a)
        return NULL;
    memcpy(a->localpart, lp, n + 1);
    a->hash = str_hash(lp);
    return a;
}

static int localpart_valid(const char *lp)
{
    if (!lp)
        return 0;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)lp; *p; p++, n++) {
        /* whitespace and controls would break the line format; '@', '/', ':' are JID or file syntax */
        if (*p <= 0x20 || *p == 0x7f || *p == '@' || *p == '/' || *p == ':')
            return 0;
        if (n >= LOCALPART_MAX)
            return 0;
    }
    return n > 0;
}

static void ascii_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static int scram_entry_make(int mech, const char *password, int iterations, struct scram_entry *e)
{
    unsigned char salted[KEY_MAX];
    int rc = -1;
    e->saltlen = SALT_LEN;
    e->iter = (uint32_t)iterations;
    if (RAND_bytes(e->salt, SALT_LEN) != 1)
        goto out;
    if (auth_scram_salted(mechs[mech].md, password, e->salt, SALT_LEN, iterations, salted) !=
        mechs[mech].dlen)
        goto out;
    if (auth_scram_keys(mechs[mech].md, salted, NULL, e->stored, e->server) < 0)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof salted);
    if (rc < 0)
        errno = EIO;
    return rc;
}

static int account_set_password(struct account *a, const char *password, int iterations)
{
    for (int m = 0; m < MECH_COUNT; m++)
        if (scram_entry_make(m, password, iterations, &a->e[m]) < 0)
            return -1;
    return 0;
}

/* ---- serialisation ---- */

struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_b64(struct sbuf *b, const unsigned char *d, size_t n)
{
    char tmp[B64_LEN(KEY_MAX)];
    if (n > KEY_MAX) {
        b->failed = 1;
        return;
    }
    sb_add(b, tmp, auth_b64_encode(d, n, tmp));
}

static void sb_account(struct sbuf *b, const struct account *a)
{
    sb_str(b, a->localpart);
    for (int m = 0; m < MECH_COUNT; m++) {
        const struct scram_entry *e = &a->e[m];
        char num[16];
        if (!e->iter)
            continue;
        snprintf(num, sizeof num, ":%u:", (unsigned)e->iter);
        sb_str(b, " ");
        sb_str(b, mechs[m].name);
        sb_str(b, num);
        sb_b64(b, e->salt, e->saltlen);
        sb_str(b, ":");
        sb_b64(b, e->stored, (size_t)mechs[m].dlen);
        sb_str(b, ":");
        sb_b64(b, e->server, (size_t)mechs[m].dlen);
    }
    sb_str(b, "\n");
}

/* Write the store as it would be with `old` replaced by `repl` (or dropped when repl is NULL) and the
 * accounts of `extra` added; memory is not touched, so a failed write changes nothing. */
static int store_save(auth_store *s, const struct account *old, const struct account *repl,
                      const struct acc_table *extra)
{
    struct sbuf b = { 0 };
    sb_str(&b, ACCOUNTS_HEADER "\n# localpart SCRAM-SHA-1:iterations:salt:StoredKey:ServerKey "
                               "SCRAM-SHA-256:iterations:salt:StoredKey:ServerKey\n");
    for (size_t i = 0; i < s->t.nbuckets; i++)
        for (const struct account *a = s->t.buckets[i]; a; a = a->next)
            if (a != old)
                sb_account(&b, a);
            else if (repl)
                sb_account(&b, repl);
    if (extra)
        for (size_t i = 0; i < extra->nbuckets; i++)
            for (const struct account *a = extra->buckets[i]; a; a = a->next)
                sb_account(&b, a);
    int rc = -1;
    if (b.failed) {
        errno = ENOMEM;
    } else if (store_mkdir(s->data_dir) == 0) {
        rc = store_write_atomic(s->path, b.p, b.len);
        if (rc == 0)
            file_id_read(s->path, &s->id);   /* our own write is not a change to reload */
    }
    int saved = errno;
    free(b.p);
    errno = saved;
    return rc;
}

/* ---- loading ---- */

/* Decode base64 field [p, p+n) into out (capacity cap); returns length or -1. */
static long b64_field(const char *p, size_t n, unsigned char *out, size_t cap)
{
    unsigned char tmp[(SALT_MAX > KEY_MAX ? SALT_MAX : KEY_MAX) + 3];
    if (n % 4 || n / 4 * 3 > sizeof tmp)
        return -1;
    long len = auth_b64_decode(p, n, tmp);
    if (len < 0 || (size_t)len > cap)
        return -1;
    memcpy(out, tmp, (size_t)len);
    return len;
}

/* "SCRAM-SHA-x:iter:salt:stored:server" of length n; returns the mechanism or -1 with *why set */
static int parse_key_field(const char *p, size_t n, struct scram_entry *out, const char **why)
{
    const char *f[5];
    size_t fl[5];
    int nf = 0;
    const char *end = p + n, *start = p;
    for (const char *q = p; ; q++) {
        if (q == end || *q == ':') {
            if (nf == 5) {
                *why = "too many fields in key";
                return -1;
            }
            f[nf] = start;
            fl[nf++] = (size_t)(q - start);
            start = q + 1;
            if (q == end)
                break;
        }
    }
    if (nf != 5) {
        *why = "key needs mechanism:iterations:salt:storedkey:serverkey";
        return -1;
    }
    int mech = -1;
    for (int m = 0; m < MECH_COUNT; m++)
        if (fl[0] == strlen(mechs[m].name) && memcmp(f[0], mechs[m].name, fl[0]) == 0)
            mech = m;
    if (mech < 0) {
        *why = "unknown mechanism";
        return -1;
    }
    unsigned long iter = 0;
    if (fl[1] == 0 || fl[1] > 8 || f[1][0] == '0') {
        *why = "bad iteration count";
        return -1;
    }
    for (size_t i = 0; i < fl[1]; i++) {
        if (f[1][i] < '0' || f[1][i] > '9') {
            *why = "bad iteration count";
            return -1;
        }
        iter = iter * 10 + (unsigned long)(f[1][i] - '0');
    }
    if (iter > ITER_MAX) {
        *why = "iteration count too large";
        return -1;
    }
    out->iter = (uint32_t)iter;
    long sl = b64_field(f[2], fl[2], out->salt, SALT_MAX);
    if (sl < 1) {
        *why = "bad salt";
        return -1;
    }
    out->saltlen = (uint8_t)sl;
    if (b64_field(f[3], fl[3], out->stored, KEY_MAX) != mechs[mech].dlen ||
        b64_field(f[4], fl[4], out->server, KEY_MAX) != mechs[mech].dlen) {
        *why = "bad key";
        return -1;
    }
    return mech;
}

/* One account line (NUL-terminated, no newline). Returns the account or NULL with *why set. */
static struct account *parse_account_line(char *line, const char **why)
{
    char *sp = strchr(line, ' ');
    if (!sp) {
        *why = "no keys";
        return NULL;
    }
    *sp = '\0';
    if (!localpart_valid(line)) {
        *why = "invalid localpart";
        return NULL;
    }
    struct account *a = account_new(line);
    if (!a) {
        *why = "out of memory";
        return NULL;
    }
    char *p = sp + 1;
    for (;;) {
        char *next = strchr(p, ' ');
        size_t n = next ? (size_t)(next - p) : strlen(p);
        struct scram_entry e;
        int mech = parse_key_field(p, n, &e, why);
        if (mech < 0)
            goto bad;
        if (a->e[mech].iter) {
            *why = "mechanism given twice";
            goto bad;
        }
        a->e[mech] = e;
        if (!next)
            break;
        p = next + 1;
    }
    return a;
bad:
    account_free(a);
    return NULL;
}

/* Reads s->path into t (empty on entry). The file's identity is taken before it is read, so a change
 * that lands during the read is seen by the next refresh. */
static int load_accounts(auth_store *s, struct acc_table *t, struct file_id *id, char *err, size_t errlen)
{
    size_t len = 0;
    file_id_read(s->path, id);
    char *buf = store_read_file(s->path, &len);
    if (!buf) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "accounts: %s", strerror(errno));
        return -1;
    }
    if (strlen(buf) != len) {
        snprintf(err, errlen, "accounts: NUL byte in file");
        free(buf);
        return -1;
    }
    long lineno = 0;
    char *p = buf;
    int rc = 0;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        const char *why = NULL;
        if (lineno == 1 && strncmp(p, "# couplet accounts v", 20) == 0 && strcmp(p, ACCOUNTS_HEADER) != 0) {
            why = "unsupported format version";
        } else if (*p && *p != '#') {
            struct account *a = parse_account_line(p, &why);
            if (a && table_find(t, a->localpart)) {
                why = "duplicate account";
                account_free(a);
            } else if (a && table_insert(t, a) < 0) {
                why = "out of memory";
                account_free(a);
            }
        }
        if (why) {
            snprintf(err, errlen, "accounts:%ld: %s", lineno, why);
            rc = -1;
            break;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    free(buf);
    return rc;
}

auth_store *auth_store_open(const char *data_dir, int scram_iterations, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!data_dir || scram_iterations < 0 || scram_iterations > ITER_MAX) {
        snprintf(err, errlen, "accounts: invalid data directory or iteration count");
        return NULL;
    }
    auth_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "accounts: out of memory");
        return NULL;
    }
    s->iterations = scram_iterations ? scram_iterations : ITER_DEFAULT;
    size_t dl = strlen(data_dir);
    s->data_dir = strdup(data_dir);
    s->path = malloc(dl + sizeof "/accounts");
    if (!s->data_dir || !s->path) {
        snprintf(err, errlen, "accounts: out of memory");
        goto fail;
    }
    memcpy(s->path, data_dir, dl);
    memcpy(s->path + dl, "/accounts", sizeof "/accounts");
    if (RAND_bytes(s->fake_secret, sizeof s->fake_secret) != 1) {
        snprintf(err, errlen, "accounts: no randomness available");
        goto fail;
    }
    if (load_accounts(s, &s->t, &s->id, err, errlen) < 0)
        goto fail;
    return s;
fail:
    auth_store_free(s);
    return NULL;
}

void auth_store_free(auth_store *s)
{
    if (!s)
        return;
    table_clear(&s->t);
    OPENSSL_cleanse(s->fake_secret, sizeof s->fake_secret);
    free(s->data_dir);
    free(s->path);
    free(s);
}

int auth_store_changed(const auth_store *s)
{
    struct file_id now;
    file_id_read(s->path, &now);
    return !file_id_same(&now, &s->id);
}

int auth_store_refresh(auth_store *s, char *err, size_t errlen)
{
    struct file_id now;
    file_id_read(s->path, &now);
    if (file_id_same(&now, &s->id))
        return 0;
    struct acc_table t = { 0 };
    struct file_id id;
    if (load_accounts(s, &t, &id, err, errlen) < 0) {
        table_clear(&t);
        s->id = now;        /* refused once: not read again until it changes again */
        return -1;
    }
    table_clear(&s->t);
    s->t = t;
    s->id = id;
    return 1;
}

void auth_user_foreach(const auth_store *s, void (*fn)(void *ud, const char *localpart), void *ud)
{
    for (size_t i = 0; s && i < s->t.nbuckets; i++)
        for (const struct account *a = s->t.buckets[i]; a; a = a->next)
            fn(ud, a->localpart);
}

size_t auth_store_count(const auth_store *s)
{
    return s ? s->t.count : 0;
}

int auth_user_exists(const auth_store *s, const char *localpart)
{
    return s && table_find(&s->t, localpart) != NULL;
}

int auth_user_add(auth_store *s, const char *localpart, const char *password)
{
    if (!s || !localpart_valid(localpart) || !password || !*password) {
        errno = EINVAL;
        return -1;
    }
    if (table_find(&s->t, localpart))
        return -2;
    struct account *a = account_new(localpart);
    if (!a || table_reserve(&s->t, 1) < 0) {
        account_free(a);
        errno = ENOMEM;
        return -1;
    }
    struct acc_table extra = { &a, 1, 1 };
    a->next = NULL;
    if (account_set_password(a, password, s->iterations) < 0 || store_save(s, NULL, NULL, &extra) < 0) {
        int saved = errno;
        account_free(a);
        errno = saved;
        return -1;
    }
    table_insert(&s->t, a);     /* cannot fail: reserved above */
    return 0;
}

int auth_user_passwd(auth_store *s, const char *localpart, const char *password)
{
    if (!s || !localpart_valid(localpart) || !password || !*password) {
        errno = EINVAL;
        return -1;
    }
    struct account *old = table_find(&s->t, localpart);
    if (!old)
        return -2;
    struct account *repl = account_new(localpart);
    if (!repl) {
        errno = ENOMEM;
        return -1;
    }
    int rc = -1;
    if (account_set_password(repl, password, s->iterations) == 0 && store_save(s, old, repl, NULL) == 0) {
        memcpy(old->e, repl->e, sizeof old->e);
        rc = 0;
    }
    int saved = errno;
    account_free(repl);
    errno = saved;
    return rc;
}

int auth_user_del(auth_store *s, const char *localpart)
{
    if (!s || !localpart_valid(localpart)) {
        errno = EINVAL;
        return -1;
    }
    struct account *old = table_find(&s->t, localpart);
    if (!old)
        return -2;
    if (store_save(s, old, NULL, NULL) < 0)
        return -1;
    table_remove(&s->t, old);
    account_free(old);
    return 0;
}

/* ---- import ---- */

struct pending {
    struct account *a;
    char *password;
};

static void pending_free(struct pending *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i].password) {
            OPENSSL_cleanse(v[i].password, strlen(v[i].password));
            free(v[i].password);
        }
    }
    free(v);
}

/* One import line (no newline). Returns 1 for an account, 0 for a blank or comment line, -1 on error. */
static int parse_import_line(char *line, char **lp_out, char **pw_out, const char **why)
{
    while (*line == ' ' || *line == '\t')
        line++;
    if (!*line || *line == '#')
        return 0;
    char *sep = line + strcspn(line, " \t");
    if (!*sep) {
        *why = "expected \"jid password\"";
        return -1;
    }
    *sep = '\0';
    char *pw = sep + 1;
    if (!*pw) {
        *why = "empty password";
        return -1;
    }
    char *at = strchr(line, '@');
    if (at)
        *at = '\0';
    ascii_lower(line);
    if (!localpart_valid(line)) {
        *why = "invalid localpart";
        return -1;
    }
    *lp_out = line;
    *pw_out = pw;
    return 1;
}

long auth_import(auth_store *s, FILE *in, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!s || !in) {
        snprintf(err, errlen, "import: invalid arguments");
        return -1;
    }
    struct acc_table fresh = { 0 };
    struct pending *v = NULL;
    size_t nv = 0, cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    long lineno = 0;
    long result = -1;
    ssize_t n;
    while ((n = getline(&line, &linecap, in)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n > 0 && line[n - 1] == '\r')       /* tolerate files edited on Windows */
            line[--n] = '\0';
        if (memchr(line, '\0', (size_t)n)) {
            snprintf(err, errlen, "line %ld: NUL byte", lineno);
            goto out;
        }
        char *lp = NULL, *pw = NULL;
        const char *why = NULL;
        int r = parse_import_line(line, &lp, &pw, &why);
        if (r == 0)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "line %ld: %s", lineno, why);
            goto out;
        }
        if (table_find(&s->t, lp) || table_find(&fresh, lp)) {
            snprintf(err, errlen, "line %ld: account %s already exists", lineno, lp);
            goto out;
        }
        if (nv == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct pending *nvp = realloc(v, ncap * sizeof *v);
            if (!nvp)
                goto oom;
            v = nvp;
            cap = ncap;
        }
        struct account *a = account_new(lp);
        char *pwc = strdup(pw);
        if (!a || !pwc || table_insert(&fresh, a) < 0) {
            account_free(a);
            free(pwc);
            goto oom;
        }
        v[nv].a = a;
        v[nv].password = pwc;
        nv++;
    }
    if (ferror(in)) {
        snprintf(err, errlen, "import: read error: %s", strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < nv; i++) {
        if (account_set_password(v[i].a, v[i].password, s->iterations) < 0) {
            snprintf(err, errlen, "import: key derivation failed");
            goto out;
        }
    }
    if (table_reserve(&s->t, fresh.count) < 0)
        goto oom;
    if (fresh.count > 0 && store_save(s, NULL, NULL, &fresh) < 0) {
        snprintf(err, errlen, "accounts: write failed: %s", strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < fresh.nbuckets; i++) {
        struct account *a = fresh.buckets[i];
        while (a) {
            struct account *next = a->next;
            table_insert(&s->t, a);     /* cannot fail: reserved above */
            a = next;
        }
        fresh.buckets[i] = NULL;
    }
    fresh.count = 0;
    result = (long)nv;
    goto out;
oom:
    snprintf(err, errlen, "import: out of memory");
out:
    if (line) {
        OPENSSL_cleanse(line, linecap);
        free(line);
    }
    pending_free(v, nv);
    table_clear(&fresh);
    return result;
}

/* ------------------------------------------------------------------------------------------------ */
/* SASL                                                                                              */

enum sasl_mech { SASL_PLAIN, SASL_SCRAM_SHA1, SASL_SCRAM_SHA256 };
enum sasl_state { ST_START, ST_WAIT_FINAL, ST_SUCCESS, ST_FAILED };

struct auth_sasl {
    auth_store *s;
    enum sasl_mech mech;
    enum sasl_state state;
    int empty_challenge_sent;
    const char *condition;
    char *user;                     /* lowercased username (authcid) */
    /* SCRAM state after the client-first message */
    int scram;                      /* index into mechs[] */
    int fake;                       /* unknown user: the exchange runs but cannot succeed */
    struct scram_entry key;         /* copied, so a concurrent del/passwd cannot leave it dangling */
    char *gs2_header;
    char *client_first_bare;
    char *server_first;
    char *nonce;                    /* cnonce + snonce */
};

static const char *const mechanism_list[] = { "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", NULL };

const char *const *auth_mechanisms(void)
{
    return mechanism_list;
}

auth_sasl *auth_sasl_start(auth_store *s, const char *mechanism)
{
    enum sasl_mech m;
    if (!s || !mechanism)
        return NULL;
    if (strcmp(mechanism, "SCRAM-SHA-256") == 0)
        m = SASL_SCRAM_SHA256;
    else if (strcmp(mechanism, "SCRAM-SHA-1") == 0)
        m = SASL_SCRAM_SHA1;
    else if (strcmp(mechanism, "PLAIN") == 0)
        m = SASL_PLAIN;
    else
        return NULL;
    auth_sasl *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->s = s;
    x->mech = m;
    x->scram = m == SASL_SCRAM_SHA1 ? MECH_SHA1 : MECH_SHA256;
    return x;
}

static void free_str(char **p)
{
    if (*p) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

void auth_sasl_free(auth_sasl *x)
{
    if (!x)
        return;
    free_str(&x->user);
    free_str(&x->gs2_header);
    free_str(&x->client_first_bare);
    free_str(&x->server_first);
    free_str(&x->nonce);
    OPENSSL_cleanse(&x->key, sizeof x->key);
    free(x);
}

const char *auth_sasl_condition(const auth_sasl *x)
{
    if (!x || !x->condition)
        return "";
    return x->condition;
}

const char *auth_sasl_user(const auth_sasl *x)
{
    return x && x->state == ST_SUCCESS ? x->user : NULL;
}

static int sasl_fail(auth_sasl *x, const char *condition)
{
    x->state = ST_FAILED;
    x->condition = condition;
    return AUTH_FAILURE;
}

/* Base64-encode msg into out; AUTH_FAILURE (temporary-auth-failure) if out is too small. */
static int sasl_emit(auth_sasl *x, int result, const char *msg, size_t n, char *out, size_t outlen)
{
    if (!out || auth_b64_encoded_len(n) > outlen)
        return sasl_fail(x, "temporary-auth-failure");
    auth_b64_encode((const unsigned char *)msg, n, out);
    if (result == AUTH_SUCCESS)
        x->state = ST_SUCCESS;
    return result;
}

static char *dup_range(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* RFC 5802 saslname: ',' and '=' travel as "=2C" and "=3D"; any other '=' is malformed. Returns a
 * malloc'd decoded string, or NULL (with *oom set when that was the reason). Empty is malformed too. */
static char *saslname_decode(const char *p, size_t n, int *oom)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    *oom = out == NULL;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '=') {
            if (n - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C')
                out[o++] = ',';
            else if (n - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D')
                out[o++] = '=';
            else
                goto bad;
            i += 2;
        } else if (p[i] == ',') {
            goto bad;
        } else {
            out[o++] = p[i];
        }
    }
    if (o == 0)
        goto bad;
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

/* An authzid is acceptable when it names the authenticated user: the bare local part or
 * "localpart@domain". The domain is not ours to check here; identity comes from the password. */
static int authzid_ok(const char *authzid, size_t n, const char *user)
{
    if (n == 0)
        return 1;
    if (memchr(authzid, '/', n))
        return 0;
    const char *at = memchr(authzid, '@', n);
    size_t lpn = at ? (size_t)(at - authzid) : n;
    if (lpn != strlen(user))
        return 0;
    for (size_t i = 0; i < lpn; i++) {
        char c = authzid[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != user[i])
            return 0;
    }
    return 1;
}

/* Salt for an unknown user: stable for the name (within this process) so that repeated probes see the
 * same salt, as they would for a real account. */
static int fake_entry(const auth_store *s, int mech, const char *user, struct scram_entry *e)
{
    unsigned char h[KEY_MAX];
    size_t ul = strlen(user);
    size_t ml = strlen(mechs[mech].name);
    char *data = malloc(ml + 1 + ul);
    if (!data)
        return -1;
    memcpy(data, mechs[mech].name, ml);
    data[ml] = '\0';
    memcpy(data + ml + 1, user, ul);
    int rc = auth_hmac("SHA256", s->fake_secret, sizeof s->fake_secret, data, ml + 1 + ul, h);
    free(data);
    if (rc != 32)
        return -1;
    memset(e, 0, sizeof *e);
    e->iter = (uint32_t)s->iterations;
    e->saltlen = SALT_LEN;
    memcpy(e->salt, h, SALT_LEN);
    if (auth_random(e->stored, KEY_MAX) < 0 || auth_random(e->server, KEY_MAX) < 0)
        return -1;
    return 0;
}

/* Copy the user's key for mechanism `mech`, or a fake one; sets *fake. */
static int lookup_key(const auth_store *s, int mech, const char *user, struct scram_entry *e, int *fake)
{
    const struct account *a = table_find(&s->t, user);
    if (a && a->e[mech].iter) {
        *e = a->e[mech];
        *fake = 0;
        return 0;
    }
    *fake = 1;
    return fake_entry(s, mech, user, e);
}

static int nonce_valid(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return 0;
    return 1;
}

/* extensions: zero or more ",X=value" with X a letter; the position of p is right after a value */
static int extensions_valid(const char *p, const char *end)
{
    while (p < end) {
        if (*p != ',' || end - p < 3)
            return 0;
        char c = p[1];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) || p[2] != '=')
            return 0;
        p += 3;
        if (p == end || *p == ',')          /* a value has at least one character */
            return 0;
        while (p < end && *p != ',')
            p++;
    }
    return 1;
}

static int scram_client_first(auth_sasl *x, const char *msg, size_t n, char *out, size_t outlen)
{
    const char *p = msg, *end = msg + n;
    int oom = 0;
    /* gs2-cbind-flag: we offer no -PLUS mechanism, so "p=" is a client asking for something never
     * advertised. That is a protocol error, not a credentials problem, hence malformed-request rather
     * than not-authorized (which would make a client re-prompt for a password that may be right). */
    if (end - p >= 2 && (p[0] == 'n' || p[0] == 'y') && p[1] == ',')
        p += 2;
    else
        return sasl_fail(x, "malformed-request");
    const char *authzid = NULL;
    char *authz = NULL;
    if (end - p >= 2 && p[0] == 'a' && p[1] == '=') {
        const char *q = memchr(p + 2, ',', (size_t)(end - p - 2));
        if (!q)
            return sasl_fail(x, "malformed-request");
        authz = saslname_decode(p + 2, (size_t)(q - p - 2), &oom);
        if (!authz)
            return sasl_fail(x, oom ? "temporary-auth-failure" : "malformed-request");
        authzid = authz;
        p = q + 1;
    } else if (p < end && *p == ',') {
        p++;
    } else {
        return sasl_fail(x, "malformed-request");
    }
    const char *bare = p;
    const char *cond = "malformed-request";
    /* "m=" would announce a mandatory extension, and we support none */
    if (end - p < 2 || p[0] != 'n' || p[1] != '=')
        goto fail;
    const char *q = memchr(p + 2, ',', (size_t)(end - p - 2));
    if (!q)
        goto fail;
    x->user = saslname_decode(p + 2, (size_t)(q - p - 2), &oom);
    if (!x->user) {
        if (oom)
            cond = "temporary-auth-failure";
        goto fail;
    }
    ascii_lower(x->user);
    p = q + 1;
    if (end - p < 2 || p[0] != 'r' || p[1] != '=')
        goto fail;
    const char *cnonce = p + 2;
    q = memchr(cnonce, ',', (size_t)(end - cnonce));
    if (!q)
        q = end;
    if (!nonce_valid(cnonce, (size_t)(q - cnonce)) || !extensions_valid(q, end))
        goto fail;
    if (authzid && !authzid_ok(authzid, strlen(authzid), x->user)) {
        cond = "invalid-authzid";
        goto fail;
    }

    cond = "temporary-auth-failure";
    if (lookup_key(x->s, x->scram, x->user, &x->key, &x->fake) < 0)
        goto fail;
    unsigned char sn[SNONCE_LEN];
    char snb[B64_LEN(SNONCE_LEN)];
    char saltb[B64_LEN(SALT_MAX)];
    if (auth_random(sn, sizeof sn) < 0)
        goto fail;
    auth_b64_encode(sn, sizeof sn, snb);
    auth_b64_encode(x->key.salt, x->key.saltlen, saltb);
    size_t cnl = (size_t)(q - cnonce);
    size_t sfl = 2 + cnl + strlen(snb) + 3 + strlen(saltb) + 3 + 10 + 1;
    x->gs2_header = dup_range(msg, (size_t)(bare - msg));
    x->client_first_bare = dup_range(bare, (size_t)(end - bare));
    x->nonce = malloc(cnl + strlen(snb) + 1);
    x->server_first = malloc(sfl);
    if (!x->gs2_header || !x->client_first_bare || !x->nonce || !x->server_first)
        goto fail;
    memcpy(x->nonce, cnonce, cnl);
    strcpy(x->nonce + cnl, snb);
    int sl = snprintf(x->server_first, sfl, "r=%s,s=%s,i=%u", x->nonce, saltb, (unsigned)x->key.iter);
    if (sl < 0 || (size_t)sl >= sfl)
        goto fail;
    free(authz);
    x->state = ST_WAIT_FINAL;
    return sasl_emit(x, AUTH_CONTINUE, x->server_first, (size_t)sl, out, outlen);
fail:
    free(authz);
    return sasl_fail(x, cond);
}

static int scram_client_final(auth_sasl *x, const char *msg, size_t n, char *out, size_t outlen)
{
    const char *end = msg + n;
    int dlen = mechs[x->scram].dlen;
    const char *md = mechs[x->scram].md;
    if (n < 2 || msg[0] != 'c' || msg[1] != '=')
        return sasl_fail(x, "malformed-request");
    const char *cb = msg + 2;
    const char *q = memchr(cb, ',', (size_t)(end - cb));
    if (!q || end - q < 3 || q[1] != 'r' || q[2] != '=')
        return sasl_fail(x, "malformed-request");
    size_t cbl = (size_t)(q - cb);
    const char *nonce = q + 3;
    const char *nend = memchr(nonce, ',', (size_t)(end - nonce));
    if (!nend || !nonce_valid(nonce, (size_t)(nend - nonce)))
        return sasl_fail(x, "malformed-request");
    const char *last = nend;                         /* the proof is the last attribute */
    for (const char *r = nend; r < end; r++)
        if (*r == ',')
            last = r;
    if (end - last < 3 || last[1] != 'p' || last[2] != '=' || !extensions_valid(nend, last))
        return sasl_fail(x, "malformed-request");
    const char *proof_b64 = last + 3;
    size_t pl = (size_t)(end - proof_b64);
    unsigned char proof[KEY_MAX + 3];
    unsigned char cbdata[SASL_MAX_MSG];
    if (pl % 4 || pl / 4 * 3 > sizeof proof || auth_b64_decode(proof_b64, pl, proof) != dlen)
        return sasl_fail(x, "malformed-request");
    long cbn = cbl % 4 == 0 && cbl / 4 * 3 <= sizeof cbdata ? auth_b64_decode(cb, cbl, cbdata) : -1;
    if (cbn < 0)
        return sasl_fail(x, "malformed-request");
    /* A c= that differs from the header we saw means a middlebox rewrote the first message (e.g. to
     * downgrade channel binding): a verification failure like a bad proof, so not-authorized. */
    size_t gl = strlen(x->gs2_header);
    if ((size_t)cbn != gl || memcmp(cbdata, x->gs2_header, gl) != 0)
        return sasl_fail(x, "not-authorized");
    if ((size_t)(nend - nonce) != strlen(x->nonce) || memcmp(nonce, x->nonce, (size_t)(nend - nonce)) != 0)
        return sasl_fail(x, "not-authorized");

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t l1 = strlen(x->client_first_bare), l2 = strlen(x->server_first), l3 = (size_t)(last - msg);
    char *am = malloc(l1 + l2 + l3 + 3);
    if (!am)
        return sasl_fail(x, "temporary-auth-failure");
    memcpy(am, x->client_first_bare, l1);
    am[l1] = ',';
    memcpy(am + l1 + 1, x->server_first, l2);
    am[l1 + 1 + l2] = ',';
    memcpy(am + l1 + 2 + l2, msg, l3);
    size_t aml = l1 + l2 + l3 + 2;

    unsigned char sig[KEY_MAX], ck[KEY_MAX], st[KEY_MAX];
    int result;
    if (auth_hmac(md, x->key.stored, (size_t)dlen, am, aml, sig) != dlen) {
        result = sasl_fail(x, "temporary-auth-failure");
        goto out;
    }
    for (int i = 0; i < dlen; i++)
        ck[i] = proof[i] ^ sig[i];
    if (digest_once(digest_get(md), ck, (size_t)dlen, st) != dlen) {
        result = sasl_fail(x, "temporary-auth-failure");
        goto out;
    }
    if (CRYPTO_memcmp(st, x->key.stored, (size_t)dlen) != 0 || x->fake) {
        result = sasl_fail(x, "not-authorized");
        goto out;
    }
    if (auth_hmac(md, x->key.server, (size_t)dlen, am, aml, sig) != dlen) {
        result = sasl_fail(x, "temporary-auth-failure");
        goto out;
    }
    char final[2 + B64_LEN(KEY_MAX)];
    memcpy(final, "v=", 2);
    size_t fl = 2 + auth_b64_encode(sig, (size_t)dlen, final + 2);
    result = sasl_emit(x, AUTH_SUCCESS, final, fl, out, outlen);
out:
    OPENSSL_cleanse(ck, sizeof ck);
    OPENSSL_cleanse(sig, sizeof sig);
    free(am);
    return result;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd */
static int plain_step(auth_sasl *x, const char *msg, size_t n, char *out, size_t outlen)
{
    const char *z1 = memchr(msg, '\0', n);
    if (!z1)
        return sasl_fail(x, "malformed-request");
    const char *authcid = z1 + 1;
    const char *z2 = memchr(authcid, '\0', (size_t)(msg + n - authcid));
    if (!z2)
        return sasl_fail(x, "malformed-request");
    const char *pw = z2 + 1;
    size_t pwl = (size_t)(msg + n - pw);
    if (memchr(pw, '\0', pwl))
        return sasl_fail(x, "malformed-request");
    if (authcid == z2 || pwl == 0)
        return sasl_fail(x, "not-authorized");
    x->user = dup_range(authcid, (size_t)(z2 - authcid));
    if (!x->user)
        return sasl_fail(x, "temporary-auth-failure");
    ascii_lower(x->user);
    if (!authzid_ok(msg, (size_t)(z1 - msg), x->user))
        return sasl_fail(x, "invalid-authzid");

    const struct account *a = table_find(&x->s->t, x->user);
    struct scram_entry e;
    int mech = -1, fake = 0;
    if (a && a->e[MECH_SHA256].iter)
        mech = MECH_SHA256;
    else if (a && a->e[MECH_SHA1].iter)
        mech = MECH_SHA1;
    if (mech >= 0) {
        e = a->e[mech];
    } else {
        /* the same PBKDF2 work as for a real account, so timing does not reveal that it is unknown */
        mech = MECH_SHA256;
        fake = 1;
        if (fake_entry(x->s, mech, x->user, &e) < 0)
            return sasl_fail(x, "temporary-auth-failure");
    }
    unsigned char salted[KEY_MAX], stored[KEY_MAX];
    int dlen = mechs[mech].dlen;
    int ok = auth_scram_salted(mechs[mech].md, pw, e.salt, e.saltlen, (int)e.iter, salted) == dlen &&
             auth_scram_keys(mechs[mech].md, salted, NULL, stored, NULL) == 0;
    int match = ok && CRYPTO_memcmp(stored, e.stored, (size_t)dlen) == 0 && !fake;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(&e, sizeof e);
    if (!ok)
        return sasl_fail(x, "temporary-auth-failure");
    if (!match)
        return sasl_fail(x, "not-authorized");
    return sasl_emit(x, AUTH_SUCCESS, "", 0, out, outlen);
}

int auth_sasl_step(auth_sasl *x, const char *in_b64, char *out, size_t outlen)
{
    if (out && outlen)
        out[0] = '\0';
    if (!x)
        return AUTH_FAILURE;
    if (x->state == ST_SUCCESS || x->state == ST_FAILED) {
        /* the exchange is over; a further step is a protocol error, and success is not repeated */
        if (x->state == ST_SUCCESS)
            x->condition = "malformed-request";
        x->state = ST_FAILED;
        return AUTH_FAILURE;
    }
    size_t bl = in_b64 ? strlen(in_b64) : 0;
    if (bl == 1 && in_b64[0] == '=')
        bl = 0;
    if (bl == 0 && x->state == ST_START && !x->empty_challenge_sent) {
        /* no initial response: ask for the first message with an empty challenge */
        x->empty_challenge_sent = 1;
        return sasl_emit(x, AUTH_CONTINUE, "", 0, out, outlen);
    }
    if (bl > (SASL_MAX_MSG + 2) / 3 * 4)
        return sasl_fail(x, "malformed-request");
    unsigned char buf[SASL_MAX_MSG + 3];
    long n = bl ? auth_b64_decode(in_b64, bl, buf) : 0;
    if (n < 0)
        return sasl_fail(x, "incorrect-encoding");  /* RFC 6120 §6.5.2: bad base64 has its own condition */
    if (n > SASL_MAX_MSG)
        return sasl_fail(x, "malformed-request");
    buf[n] = '\0';
    int rc;
    if (x->mech == SASL_PLAIN) {
        rc = plain_step(x, (const char *)buf, (size_t)n, out, outlen);
    } else if (memchr(buf, '\0', (size_t)n) || n == 0) {
        rc = sasl_fail(x, "malformed-request");     /* SCRAM messages are text */
    } else if (x->state == ST_START) {
        rc = scram_client_first(x, (const char *)buf, (size_t)n, out, outlen);
    } else {
        rc = scram_client_final(x, (const char *)buf, (size_t)n, out, outlen);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}
