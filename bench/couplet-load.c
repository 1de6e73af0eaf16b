/* couplet-load.c - an XMPP load generator for loopback benchmarks of Couplet (or any XMPP server).
 *
 * One process, one epoll loop. It opens N client sessions at a controlled rate from several loopback
 * source addresses, negotiates each stream (optional STARTTLS, SASL PLAIN or SCRAM-SHA-1, resource
 * binding, initial presence) and then runs one workload: idle, login, chat, muc, mixed, silent or presence.
 * Every message carries its send time (monotonic ns) in its body, so latency is measured end to end.
 * It reads the server's CPU time and resident memory from /proc/PID when given --server-pid, so the
 * server's cost per stanza is known even when this generator is the bottleneck.
 * It refuses targets outside loopback: it is a benchmark tool, not a flooding tool. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#define READ_CHUNK   65536
#define MAX_SOURCES  250
#define PORTS_PER_SOURCE 25000      /* sessions per source address before the next one is used */
#define HARD_CAP_EXTRA 120          /* seconds beyond the planned run before we give up */
#define TICK_NS      1000000        /* pacing timer: 1 ms */

/* ---------------------------------------------------------------------------------------------- */
/* options                                                                                        */

enum workload { W_IDLE, W_LOGIN, W_CHAT, W_MUC, W_MIXED, W_SILENT, W_PRESENCE };
static const char *const workload_names[] = {"idle", "login", "chat", "muc", "mixed", "silent", "presence"};
#define W_LAST W_PRESENCE

static struct {
    const char *host, *domain, *muc_domain, *password, *mech;
    int port, sessions, tls, server_pid, sources, concurrency, window, rooms, occupants, senders;
    double rate, msg_rate, duration, settle, drain;
    enum workload workload;
    int hard_cap;
    int quiet;
    int no_coalesce;
    int stop_at;
    const char *key_cache;      /* file that keeps derived SCRAM keys between runs, as a client would */
    int roster_shared;          /* presence: the server runs roster = shared (fan-out to every other session) */                /* idle: hold sessions at this negotiation stage (memory breakdown) */
} opt = {
    .host = "127.0.0.1", .domain = "localhost", .password = "password", .mech = "PLAIN",
    .port = 5222, .sessions = 100, .concurrency = 500, .window = 0, .rooms = 1, .occupants = 10,
    .senders = 1, .rate = 0, .msg_rate = 0, .duration = 10, .settle = 1.0, .drain = 2.0,
    .workload = W_IDLE, .roster_shared = 1,
};

static void usage(void)
{
    fprintf(stderr,
        "usage: couplet-load [options]\n"
        "  --host ADDR         server address, loopback only (127.0.0.1)\n"
        "  --port N            client port (5222)\n"
        "  --domain D          XMPP domain (localhost); accounts are userN@D, N from 0\n"
        "  --muc-domain D      MUC service (conference.DOMAIN)\n"
        "  --password P        every account's password (password)\n"
        "  --mech M            PLAIN or SCRAM-SHA-1 (PLAIN)\n"
        "  --tls               STARTTLS before authenticating\n"
        "  --sessions N        client sessions (100)\n"
        "  --rate R            new sessions per second, 0 = as fast as --concurrency allows (0)\n"
        "  --concurrency C     most logins in progress at once (500)\n"
        "  --sources S         loopback source addresses 127.0.0.2.. (enough for N)\n"
        "  --workload W        idle | login | chat | muc | mixed | silent | presence (idle)\n"
        "  --duration S        seconds of the measured phase (10)\n"
        "  --msg-rate R        offered messages/s in total (chat, muc, mixed), presence changes/s (presence)\n"
        "  --window W          flat out instead: W messages in flight per sender (presence: W changes, at\n"
        "                      most 16, each in flight until every contact and the sender itself have it)\n"
        "  --rooms R           rooms room0..room{R-1} (1)\n"
        "  --occupants M       occupants in all (muc; default 10), the first N sessions\n"
        "  --senders K         occupants that send groupchat, or sessions that change presence (1)\n"
        "  --roster MODE       presence: the server's roster setting, shared (each change goes to every\n"
        "                      other session) or empty (only reflected to the sender) (shared)\n"
        "  --server-pid PID    read the server's CPU and memory from /proc/PID\n"
        "  --settle S          seconds to wait before measuring memory (1)\n"
        "  --drain S           seconds to wait for in-flight messages at the end (2)\n"
        "  --hard-cap S        give up after S seconds whatever happens (planned + 120)\n"
        "  --quiet             no progress lines\n"
        "  --no-coalesce       one send() per stanza (default: what a session sends in one loop turn goes out\n"
        "                      in one send(), as an event-driven client does)\n"
        "  --key-cache FILE    load and save the derived SCRAM keys (salt, iterations, password hash)\n"
        "  --stop-at STAGE     idle only: hold sessions at header (features received), auth (SASL done,\n"
        "                      stream restarted), bind (resource bound, no presence) or full (default)\n"
        "  --free-port         print a free loopback TCP port and exit\n");
}

/* ---------------------------------------------------------------------------------------------- */
/* time, histograms, /proc                                                                        */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Log-linear histogram of nanoseconds: exact below 128, then 64 sub-buckets per power of two (<1.6%). */
#define H_SUB 64
#define H_BUCKETS (128 + 58 * H_SUB)
typedef struct { uint64_t n[H_BUCKETS]; uint64_t count, max; } hist;

static int hist_index(uint64_t v)
{
    if (v < 128) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    int idx = 128 + (shift - 1) * H_SUB + (int)((v >> shift) - 64);
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static uint64_t hist_value(int idx)
{
    if (idx < 128) return (uint64_t)idx;
    int shift = (idx - 128) / H_SUB + 1;
    uint64_t m = (uint64_t)((idx - 128) % H_SUB) + 64;
    return (m << shift) + ((1ull << shift) >> 1);
}

static void hist_add(hist *h, uint64_t v)
{
    h->n[hist_index(v)]++;
    h->count++;
    if (v > h->max) h->max = v;
}

static uint64_t hist_pct(const hist *h, double p)
{
    if (!h->count) return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->count + 0.5), seen = 0;
    if (want < 1) want = 1;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= want) return hist_value(i) < h->max ? hist_value(i) : h->max;
    }
    return h->max;
}

typedef struct { double cpu_s, sys_s; long rss_kb; int ok; } proc_sample;

static proc_sample proc_read(int pid)
{
    proc_sample s = {0, 0, 0, 0};
    if (pid <= 0) return s;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return s;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return s;
    /* after ") ": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return s;
    s.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    s.sys_s = (double)st / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f) return s;
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "VmRSS:", 6)) s.rss_kb = strtol(buf + 6, NULL, 10);
    fclose(f);
    s.ok = 1;
    return s;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------------------------------------- */
/* small helpers: base64, fast random                                                             */

static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decoded length, or -1. EVP_DecodeBlock counts padding as zero bytes; we take them off. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    while (n && isspace((unsigned char)in[n - 1])) n--;
    while (n && isspace((unsigned char)*in)) { in++; n--; }
    if (n % 4 || n / 4 * 3 > cap) return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (len < 0) return -1;
    if (n && in[n - 1] == '=') len--;
    if (n > 1 && in[n - 2] == '=') len--;
    return len;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return rng_state = x;
}

/* ---------------------------------------------------------------------------------------------- */
/* SCRAM-SHA-1 salted-password cache, keyed by (salt, iterations, password) as a real client keeps it */

typedef struct scram_keys {
    struct scram_keys *next;
    const char *password;
    int iterations, saltlen;
    unsigned char salt[64];
    unsigned char client_key[SHA_DIGEST_LENGTH], stored_key[SHA_DIGEST_LENGTH], server_key[SHA_DIGEST_LENGTH];
} scram_keys;

#define SCRAM_BUCKETS 65536
static scram_keys *scram_cache[SCRAM_BUCKETS];
static uint64_t scram_derived, scram_hits;

static const scram_keys *scram_lookup(const unsigned char *salt, int saltlen, int iterations, const char *pw)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)iterations;
    for (int i = 0; i < saltlen; i++) h = (h ^ salt[i]) * 1099511628211ull;
    for (const char *p = pw; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    scram_keys **b = &scram_cache[h & (SCRAM_BUCKETS - 1)];
    for (scram_keys *k = *b; k; k = k->next)
        if (k->iterations == iterations && k->saltlen == saltlen && !memcmp(k->salt, salt, (size_t)saltlen) &&
            !strcmp(k->password, pw)) {
            scram_hits++;
            return k;
        }
    if (saltlen > (int)sizeof((scram_keys *)0)->salt) return NULL;
    scram_keys *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    unsigned char salted[SHA_DIGEST_LENGTH];
    unsigned int len = 0;
    if (!PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, saltlen, iterations, EVP_sha1(), sizeof salted, salted) ||
        !HMAC(EVP_sha1(), salted, sizeof salted, (const unsigned char *)"Client Key", 10, k->client_key, &len) ||
        !HMAC(EVP_sha1(), salted, sizeof salted, (const unsigned char *)"Server Key", 10, k->server_key, &len)) {
        free(k);
        return NULL;
    }
    SHA1(k->client_key, sizeof k->client_key, k->stored_key);
    k->password = pw;
    k->iterations = iterations;
    k->saltlen = saltlen;
    memcpy(k->salt, salt, (size_t)saltlen);
    k->next = *b;
    *b = k;
    scram_derived++;
    return k;
}

/* The cache on disk: "iterations salt pwhash clientkey storedkey serverkey", all hex but iterations.
 * The password itself is not written, only a SHA-256 of it to tell which password a key belongs to. */
static uint64_t scram_loaded;

static void hex_put(FILE *f, const unsigned char *p, int n)
{
    for (int i = 0; i < n; i++) fprintf(f, "%02x", p[i]);
}

static int hex_get(const char *s, unsigned char *out, int cap)
{
    int n = 0;
    while (s[0] && s[1] && isxdigit((unsigned char)s[0]) && isxdigit((unsigned char)s[1])) {
        if (n == cap) return -1;
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) return -1;
        out[n++] = (unsigned char)v;
        s += 2;
    }
    return n;
}

static void scram_cache_load(const char *path, const char *pw)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    unsigned char pwh[SHA256_DIGEST_LENGTH], h[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)pw, strlen(pw), pwh);
    char line[512], salt_hex[160], pwh_hex[80], ck[80], sk[80], vk[80];
    int iters;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%d %159s %79s %79s %79s %79s", &iters, salt_hex, pwh_hex, ck, sk, vk) != 6) continue;
        if (hex_get(pwh_hex, h, sizeof h) != SHA256_DIGEST_LENGTH || memcmp(h, pwh, sizeof h) != 0) continue;
        scram_keys *k = calloc(1, sizeof *k);
        if (!k) break;
        k->saltlen = hex_get(salt_hex, k->salt, sizeof k->salt);
        if (k->saltlen <= 0 || hex_get(ck, k->client_key, SHA_DIGEST_LENGTH) != SHA_DIGEST_LENGTH ||
            hex_get(sk, k->stored_key, SHA_DIGEST_LENGTH) != SHA_DIGEST_LENGTH ||
            hex_get(vk, k->server_key, SHA_DIGEST_LENGTH) != SHA_DIGEST_LENGTH) {
            free(k);
            continue;
        }
        k->iterations = iters;
        k->password = pw;
        uint64_t hh = 1469598103934665603ull ^ (uint64_t)iters;
        for (int i = 0; i < k->saltlen; i++) hh = (hh ^ k->salt[i]) * 1099511628211ull;
        for (const char *p = pw; *p; p++) hh = (hh ^ (unsigned char)*p) * 1099511628211ull;
        scram_keys **b = &scram_cache[hh & (SCRAM_BUCKETS - 1)];
        k->next = *b;
        *b = k;
        scram_loaded++;
    }
    fclose(f);
}

static void scram_cache_save(const char *path, const char *pw)
{
    if (!scram_derived) return;
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    unsigned char pwh[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)pw, strlen(pw), pwh);
    for (int b = 0; b < SCRAM_BUCKETS; b++)
        for (const scram_keys *k = scram_cache[b]; k; k = k->next) {
            fprintf(f, "%d ", k->iterations);
            hex_put(f, k->salt, k->saltlen);
            fputc(' ', f);
            hex_put(f, pwh, sizeof pwh);
            fputc(' ', f);
            hex_put(f, k->client_key, SHA_DIGEST_LENGTH);
            fputc(' ', f);
            hex_put(f, k->stored_key, SHA_DIGEST_LENGTH);
            fputc(' ', f);
            hex_put(f, k->server_key, SHA_DIGEST_LENGTH);
            fputc('\n', f);
        }
    if (fclose(f) == 0) rename(tmp, path);
    else unlink(tmp);
}

/* ---------------------------------------------------------------------------------------------- */
/* connections                                                                                    */

enum cstate {
    C_FREE, C_CONNECTING, C_FEATURES, C_PROCEED, C_TLS_HANDSHAKE, C_AUTH, C_BIND, C_ACTIVE, C_SILENT, C_DEAD
};

typedef struct scram_state {
    char cnonce[24];
    unsigned char server_sig[SHA_DIGEST_LENGTH];
} scram_state;

typedef struct conn {
    int fd;
    unsigned char state, stream_open, tls_done, authed, want_out, in_room, logged_in, closed_by_us;
    unsigned char queued;                   /* on the list of sockets to write at the end of this turn */
    SSL *ssl;
    scram_state *scram;
    char *rbuf; size_t rlen, rcap;          /* unconsumed input: at most one partial stanza */
    char *wbuf; size_t wlen, wcap;          /* output the socket did not take yet */
    uint64_t t_start;
    int peer;                               /* chat partner, or -1 */
    int room;                               /* room index, or -1 */
    int sender;                             /* sends groupchat */
    uint32_t inflight;
    uint64_t seq;
    uint32_t pres_seen;                     /* presence: contacts' initial presences received (login storm) */
    unsigned char pres_self;                /* presence: own initial presence reflected */
} conn;

static conn *conns;
static int epfd, timer_fd;
static SSL_CTX *ssl_ctx;
static struct sockaddr_storage target;
static socklen_t target_len;
static int target_v6;
static char scratch[READ_CHUNK];

static struct {
    uint64_t opened, connected, logged_in, failed, dropped, in_progress;
    uint64_t joined, join_failed;
    uint64_t sent, delivered, errors, muc_sent, muc_expected, muc_delivered, chat_sent, chat_delivered;
    uint64_t bytes_in, bytes_out;
    uint64_t stream_errors;
    /* presence workload: the login storm, then the measured changes */
    uint64_t storm_seen, storm_self, pres_expected, pres_delivered, pres_reflected, pres_completed, pres_stray;
    char first_error[200];
} st;

static hist lat_login, lat_msg, lat_fanout;
static int measuring;          /* latencies count only during the measured phase */
static int sending;            /* the send phase is on: windows refill */
static int *room_size;

static void note_error(const char *fmt, ...)
{
    if (st.first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st.first_error, sizeof st.first_error, fmt, ap);
    va_end(ap);
    for (char *p = st.first_error; *p; p++)
        if (*p == ' ' || *p == '\n' || *p == '\t') *p = '_';
}

static void conn_update_events(conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.u32 = (uint32_t)(c - conns)};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_fail(conn *c, const char *why)
{
    if (c->state == C_FREE || c->state == C_DEAD) return;
    if (!c->logged_in && c->state != C_SILENT) {
        st.failed++;
        if (st.in_progress) st.in_progress--;
        note_error("session %d: %s", (int)(c - conns), why);
    } else if (!c->closed_by_us) {
        st.dropped++;
        note_error("session %d dropped: %s", (int)(c - conns), why);
    }
    if (c->in_room && c->room >= 0) room_size[c->room]--;
    c->in_room = 0;
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->rbuf); c->rbuf = NULL; c->rlen = c->rcap = 0;
    free(c->wbuf); c->wbuf = NULL; c->wlen = c->wcap = 0;
    free(c->scram); c->scram = NULL;
    c->state = C_DEAD;
}

/* Raw write of what the socket takes now. Returns bytes written, or -1 on a fatal error. */
static ssize_t conn_raw_write(conn *c, const char *p, size_t n)
{
    if (c->ssl) {
        int r = SSL_write(c->ssl, p, (int)n);
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) return 0;
        ERR_clear_error();
        return -1;
    }
    ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    return -1;
}

static int conn_flush(conn *c)
{
    while (c->wlen) {
        ssize_t r = conn_raw_write(c, c->wbuf, c->wlen);
        if (r < 0) { conn_fail(c, "write failed"); return -1; }
        if (r == 0) break;
        st.bytes_out += (uint64_t)r;
        memmove(c->wbuf, c->wbuf + r, c->wlen - (size_t)r);
        c->wlen -= (size_t)r;
    }
    int want = c->wlen > 0;
    if (want != c->want_out) {
        c->want_out = (unsigned char)want;
        conn_update_events(c);
    }
    return 0;
}

/* Output is appended to the session's buffer and written once at the end of the loop turn (flush_queued),
 * as an event-driven client library does: a turn that sends several stanzas on one socket costs one send().
 * --no-coalesce writes every stanza with its own send() instead. */
static int *queued_list, nqueued;

static int conn_send(conn *c, const char *p, size_t n)
{
    if (c->fd < 0) return -1;
    if (opt.no_coalesce && !c->wlen) {
        ssize_t r = conn_raw_write(c, p, n);
        if (r < 0) { conn_fail(c, "write failed"); return -1; }
        st.bytes_out += (uint64_t)r;
        p += r;
        n -= (size_t)r;
        if (!n) return 0;
    }
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 1024;
        while (cap < c->wlen + n) cap *= 2;
        char *b = realloc(c->wbuf, cap);
        if (!b) { conn_fail(c, "out of memory"); return -1; }
        c->wbuf = b;
        c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
    if (opt.no_coalesce) {
        if (!c->want_out) {
            c->want_out = 1;
            conn_update_events(c);
        }
    } else if (!c->queued && !c->want_out) {
        c->queued = 1;
        queued_list[nqueued++] = (int)(c - conns);
    }
    return 0;
}

/* Write what this turn queued; sockets that do not take it all wait for EPOLLOUT. */
static void flush_queued(void)
{
    for (int i = 0; i < nqueued; i++) {
        conn *c = &conns[queued_list[i]];
        c->queued = 0;
        if (c->fd >= 0 && c->wlen) conn_flush(c);
    }
    nqueued = 0;
}

static int conn_sendf(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_sendf(conn *c, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) { conn_fail(c, "stanza too long"); return -1; }
    return conn_send(c, buf, (size_t)n);
}

static int send_header(conn *c)
{
    c->stream_open = 0;
    c->state = C_FEATURES;
    return conn_sendf(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>", opt.domain);
}

/* ---------------------------------------------------------------------------------------------- */
/* the tiny XML scanner: splits the stream into top-level elements; we only look inside by substring */

/* Length of the element starting at p[0]=='<' (which must be a start tag), 0 if incomplete, -1 if broken. */
static long element_length(const char *p, size_t n)
{
    size_t i = 0;
    int depth = 0;
    while (i < n) {
        if (p[i] != '<') {
            const char *lt = memchr(p + i, '<', n - i);
            if (!lt) return 0;
            i = (size_t)(lt - p);
            continue;
        }
        if (i + 1 >= n) return 0;
        char k = p[i + 1];
        if (k == '!' || k == '?') {                 /* comment, CDATA or PI: not expected, skipped whole */
            const char *gt = memchr(p + i, '>', n - i);
            if (!gt) return 0;
            i = (size_t)(gt - p) + 1;
            continue;
        }
        /* a tag: find its '>' outside quotes */
        size_t j = i + 1;
        char q = 0;
        for (; j < n; j++) {
            if (q) { if (p[j] == q) q = 0; }
            else if (p[j] == '\'' || p[j] == '"') q = p[j];
            else if (p[j] == '>') break;
        }
        if (j >= n) return 0;
        if (k == '/') depth--;
        else if (p[j - 1] != '/') depth++;
        i = j + 1;
        if (depth == 0) return (long)i;
        if (depth < 0) return -1;
    }
    return 0;
}

/* The value of attribute name in the start tag at p (up to its '>'), copied to out; 0 if absent. */
static int attr_get(const char *p, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *end = memchr(p, '>', n);
    if (!end) end = p + n;
    for (const char *s = p; s + nl + 2 < end; s++) {
        if ((s[-1] == ' ' || s[-1] == '\t' || s[-1] == '\n') && !memcmp(s, name, nl) && s[nl] == '=' &&
            (s[nl + 1] == '\'' || s[nl + 1] == '"')) {
            char q = s[nl + 1];
            const char *v = s + nl + 2, *e = memchr(v, q, (size_t)(end - v));
            if (!e) return 0;
            size_t l = (size_t)(e - v);
            if (l >= cap) l = cap - 1;
            memcpy(out, v, l);
            out[l] = 0;
            return 1;
        }
    }
    return 0;
}

/* Does the element's name (after an optional prefix) equal name? */
static int elem_is(const char *p, size_t n, const char *name)
{
    size_t i = 1, nl = strlen(name);
    size_t e = i;
    while (e < n && p[e] != ' ' && p[e] != '>' && p[e] != '/' && p[e] != '\t' && p[e] != '\n') e++;
    const char *colon = memchr(p + 1, ':', e - 1);
    if (colon) i = (size_t)(colon - p) + 1;
    return e - i == nl && !memcmp(p + i, name, nl);
}

static const char *find_in(const char *p, size_t n, const char *needle)
{
    return memmem(p, n, needle, strlen(needle));
}

/* Text content of the first <tag>...</tag> inside p, as a pointer and length. */
static const char *child_text(const char *p, size_t n, const char *tag, size_t *len)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *s = find_in(p, n, open);
    if (!s) return NULL;
    const char *gt = memchr(s, '>', (size_t)(p + n - s));
    if (!gt) return NULL;
    if (gt[-1] == '/') { *len = 0; return gt; }
    const char *e = find_in(gt + 1, (size_t)(p + n - gt - 1), close);
    if (!e) return NULL;
    *len = (size_t)(e - gt - 1);
    return gt + 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* negotiation                                                                                    */

static int start_tls(conn *c)
{
    c->ssl = SSL_new(ssl_ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) { conn_fail(c, "SSL_new failed"); return -1; }
    SSL_set_connect_state(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, opt.domain);
    c->state = C_TLS_HANDSHAKE;
    return 0;
}

static int tls_handshake_step(conn *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_done = 1;
        if (c->want_out) { c->want_out = 0; conn_update_events(c); }
        return send_header(c);
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        if (c->want_out) { c->want_out = 0; conn_update_events(c); }
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        if (!c->want_out) { c->want_out = 1; conn_update_events(c); }
        return 0;
    }
    ERR_clear_error();
    conn_fail(c, "TLS handshake failed");
    return -1;
}

static int send_auth(conn *c)
{
    int idx = (int)(c - conns);
    char user[32], raw[512], b64[1024];
    snprintf(user, sizeof user, "user%d", idx);
    c->state = C_AUTH;
    if (!strcmp(opt.mech, "PLAIN")) {
        int n = snprintf(raw, sizeof raw, "%c%s%c%s", 0, user, 0, opt.password);
        b64_encode((unsigned char *)raw, (size_t)n, b64);
        return conn_sendf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    }
    c->scram = calloc(1, sizeof *c->scram);
    if (!c->scram) { conn_fail(c, "out of memory"); return -1; }
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < 20; i++) c->scram->cnonce[i] = alphabet[rng_next() % 62];
    c->scram->cnonce[20] = 0;
    int n = snprintf(raw, sizeof raw, "n,,n=%s,r=%s", user, c->scram->cnonce);
    b64_encode((unsigned char *)raw, (size_t)n, b64);
    return conn_sendf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>%s</auth>", b64);
}

/* server-first-message "r=NONCE,s=SALT,i=ITER" -> client-final-message with the proof */
static int scram_challenge(conn *c, const char *text, size_t tlen)
{
    if (!c->scram) { conn_fail(c, "unexpected SASL challenge"); return -1; }
    char sfirst[512], user[32], cfinal_bare[512], authmsg[1600], raw[768], b64[1100];
    int n = b64_decode(text, tlen, (unsigned char *)sfirst, sizeof sfirst - 1);
    if (n <= 0) { conn_fail(c, "bad SCRAM challenge"); return -1; }
    sfirst[n] = 0;
    const char *r = NULL, *s = NULL, *i = NULL;
    size_t rl = 0, sl = 0;
    for (char *p = sfirst; p && *p;) {
        char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        if (!strncmp(p, "r=", 2)) { r = p + 2; rl = l - 2; }
        else if (!strncmp(p, "s=", 2)) { s = p + 2; sl = l - 2; }
        else if (!strncmp(p, "i=", 2)) i = p + 2;
        p = comma ? comma + 1 : NULL;
    }
    size_t cl = strlen(c->scram->cnonce);
    if (!r || !s || !i || rl <= cl || memcmp(r, c->scram->cnonce, cl) != 0) {
        conn_fail(c, "bad SCRAM server-first-message");
        return -1;
    }
    unsigned char salt[64];
    int saltlen = b64_decode(s, sl, salt, sizeof salt);
    int iters = atoi(i);
    if (saltlen <= 0 || iters < 1) { conn_fail(c, "bad SCRAM salt or iterations"); return -1; }
    const scram_keys *k = scram_lookup(salt, saltlen, iters, opt.password);
    if (!k) { conn_fail(c, "SCRAM key derivation failed"); return -1; }
    snprintf(user, sizeof user, "user%d", (int)(c - conns));
    snprintf(cfinal_bare, sizeof cfinal_bare, "c=biws,r=%.*s", (int)rl, r);
    int al = snprintf(authmsg, sizeof authmsg, "n=%s,r=%s,%s,%s", user, c->scram->cnonce, sfirst, cfinal_bare);
    unsigned char sig[SHA_DIGEST_LENGTH], proof[SHA_DIGEST_LENGTH];
    unsigned int len = 0;
    HMAC(EVP_sha1(), k->stored_key, SHA_DIGEST_LENGTH, (unsigned char *)authmsg, (size_t)al, sig, &len);
    for (int j = 0; j < SHA_DIGEST_LENGTH; j++) proof[j] = k->client_key[j] ^ sig[j];
    HMAC(EVP_sha1(), k->server_key, SHA_DIGEST_LENGTH, (unsigned char *)authmsg, (size_t)al,
         c->scram->server_sig, &len);
    char pb64[64];
    b64_encode(proof, sizeof proof, pb64);
    int m = snprintf(raw, sizeof raw, "%s,p=%s", cfinal_bare, pb64);
    b64_encode((unsigned char *)raw, (size_t)m, b64);
    return conn_sendf(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", b64);
}

static int scram_verify(conn *c, const char *text, size_t tlen)
{
    char sfinal[256];
    int n = b64_decode(text, tlen, (unsigned char *)sfinal, sizeof sfinal - 1);
    if (n <= 2 || strncmp(sfinal, "v=", 2) != 0) return -1;
    sfinal[n] = 0;
    unsigned char v[64];
    int vl = b64_decode(sfinal + 2, (size_t)n - 2, v, sizeof v);
    return vl == SHA_DIGEST_LENGTH && !memcmp(v, c->scram->server_sig, SHA_DIGEST_LENGTH) ? 0 : -1;
}

static void room_join(conn *c);

enum { STOP_HEADER = 1, STOP_AUTH, STOP_BIND, STOP_FULL };

/* The session counts as logged in; at a --stop-at stage it is held there and says nothing more. */
static void login_done(conn *c)
{
    uint64_t t = now_ns();
    c->state = C_ACTIVE;
    c->logged_in = 1;
    st.logged_in++;
    if (st.in_progress) st.in_progress--;
    hist_add(&lat_login, t - c->t_start);
    if (!opt.stop_at || opt.stop_at == STOP_FULL) conn_sendf(c, "<presence/>");
}

/* ---------------------------------------------------------------------------------------------- */
/* workload traffic                                                                                */

static void send_chat(conn *c, uint64_t ts)
{
    if (c->state != C_ACTIVE || c->peer < 0) return;
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "<message to='user%d@%s/r' type='chat' id='m%" PRIu64 "'><body>%" PRIu64 " %d</body></message>",
                     c->peer, opt.domain, c->seq++, ts, (int)(c - conns));
    if (conn_send(c, buf, (size_t)n) == 0) {
        c->inflight++;
        st.sent++;
        st.chat_sent++;
    }
}

static void send_groupchat(conn *c, uint64_t ts)
{
    if (c->state != C_ACTIVE || !c->in_room) return;
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "<message to='room%d@%s' type='groupchat' id='g%" PRIu64 "'><body>%" PRIu64 " %d</body></message>",
                     c->room, opt.muc_domain, c->seq++, ts, (int)(c - conns));
    int members = room_size[c->room];
    if (conn_send(c, buf, (size_t)n) == 0) {
        c->inflight++;
        st.sent++;
        st.muc_sent++;
        st.muc_expected += (uint64_t)members;
    }
}

static void room_join(conn *c)
{
    conn_sendf(c, "<presence to='room%d@%s/u%d'><x xmlns='http://jabber.org/protocol/muc'>"
                  "<history maxstanzas='0'/></x></presence>", c->room, opt.muc_domain, (int)(c - conns));
}

static void on_message(conn *c, const char *p, size_t n)
{
    char type[32] = "";
    attr_get(p, n, "type", type, sizeof type);
    if (!strcmp(type, "error")) {
        st.errors++;
        note_error("message error: %.*s", (int)(n > 150 ? 150 : n), p);
        return;
    }
    size_t bl;
    const char *body = child_text(p, n, "body", &bl);
    if (!body || !bl) return;                       /* the room subject, or something not ours */
    char tmp[64];
    if (bl >= sizeof tmp) return;
    memcpy(tmp, body, bl);
    tmp[bl] = 0;
    char *e;
    uint64_t ts = strtoull(tmp, &e, 10);
    if (e == tmp) return;
    long from = strtol(e, NULL, 10);
    uint64_t t = now_ns();
    if (measuring && t >= ts) hist_add(&lat_msg, t - ts);
    st.delivered++;
    int group = !strcmp(type, "groupchat");
    if (group) st.muc_delivered++;
    else st.chat_delivered++;
    if (from < 0 || from >= opt.sessions) return;
    conn *s = &conns[from];
    /* the window closes on the partner's receipt (1:1) or on the sender's own echo (room) */
    if (group && s != c) return;
    if (s->inflight) s->inflight--;
    if (sending && opt.window > 0 && s->state == C_ACTIVE && s->inflight < (uint32_t)opt.window) {
        if (group) send_groupchat(s, now_ns());
        else send_chat(s, now_ns());
    }
}

/* presence workload: a session's broadcast presence changes, alternately away and available, each carrying
 * "SENDTIME SENDER SEQ" in <status>. A change is complete when every contact (roster = shared: every other
 * session) and the sender itself (the server reflects it) have it; --window counts incomplete changes. */
#define PRES_SLOTS 16
typedef struct { uint64_t seq, ts; uint32_t remain; unsigned char reflected, busy; } pres_slot;
static pres_slot *pslots;       /* PRES_SLOTS per session, indexed by seq % PRES_SLOTS */
static uint32_t pres_fanout;    /* contacts each change goes to */

static void send_presence_change(conn *c, uint64_t ts)
{
    if (c->state != C_ACTIVE) return;
    uint64_t seq = c->seq;
    pres_slot *sl = &pslots[(size_t)(c - conns) * PRES_SLOTS + seq % PRES_SLOTS];
    if (sl->busy) return;           /* the change PRES_SLOTS back is still out: skip rather than lose count */
    char buf[256];
    int n = snprintf(buf, sizeof buf, "<presence>%s<status>%" PRIu64 " %d %" PRIu64 "</status></presence>",
                     seq & 1 ? "" : "<show>away</show>", ts, (int)(c - conns), seq);
    if (conn_send(c, buf, (size_t)n) != 0) return;
    c->seq++;
    *sl = (pres_slot){.seq = seq, .ts = ts, .remain = pres_fanout, .busy = 1};
    c->inflight++;
    st.sent++;
    st.pres_expected += pres_fanout;
}

static void pres_progress(int who, uint64_t seq, int reflected)
{
    pres_slot *sl = &pslots[(size_t)who * PRES_SLOTS + seq % PRES_SLOTS];
    if (!sl->busy || sl->seq != seq) return;
    if (reflected) sl->reflected = 1;
    else if (sl->remain) sl->remain--;
    if (sl->remain || !sl->reflected) return;
    uint64_t t = now_ns();
    if (measuring && t >= sl->ts) hist_add(&lat_fanout, t - sl->ts);
    sl->busy = 0;
    st.pres_completed++;
    conn *s = &conns[who];
    if (s->inflight) s->inflight--;
    if (sending && opt.window > 0 && s->inflight < (uint32_t)opt.window) send_presence_change(s, t);
}

static void on_roster_presence(conn *c, const char *p, size_t n)
{
    char from[300] = "", type[32] = "";
    attr_get(p, n, "from", from, sizeof from);
    attr_get(p, n, "type", type, sizeof type);
    int me = (int)(c - conns), who = -1;
    if (sscanf(from, "user%d@", &who) != 1 || who < 0 || who >= opt.sessions) { st.pres_stray++; return; }
    if (type[0]) {                  /* unavailable (a session went away), error: not part of the plan */
        st.errors++;
        note_error("presence type %s from %s to session %d", type, from, me);
        return;
    }
    size_t sl;
    const char *status = child_text(p, n, "status", &sl);
    if (!status) {                  /* an initial <presence/>: the login storm */
        if (who == me) { if (!c->pres_self) { c->pres_self = 1; st.storm_self++; } }
        else { c->pres_seen++; st.storm_seen++; }
        return;
    }
    char tmp[96];
    if (sl >= sizeof tmp) { st.pres_stray++; return; }
    memcpy(tmp, status, sl);
    tmp[sl] = 0;
    uint64_t ts, seq;
    int idx;
    if (sscanf(tmp, "%" SCNu64 " %d %" SCNu64, &ts, &idx, &seq) != 3 || idx != who) { st.pres_stray++; return; }
    if (who == me) {
        st.pres_reflected++;
        pres_progress(who, seq, 1);
        return;
    }
    uint64_t t = now_ns();
    if (measuring && t >= ts) hist_add(&lat_msg, t - ts);
    st.pres_delivered++;
    st.delivered++;
    pres_progress(who, seq, 0);
}

static void room_entered(conn *c);

static void on_presence(conn *c, const char *p, size_t n)
{
    if (opt.workload == W_PRESENCE) { on_roster_presence(c, p, n); return; }
    if (c->in_room || c->room < 0) return;
    char from[300] = "", type[32] = "";
    attr_get(p, n, "from", from, sizeof from);
    if (strncmp(from, "room", 4) != 0) return;
    attr_get(p, n, "type", type, sizeof type);
    if (!strcmp(type, "error")) {
        st.join_failed++;
        note_error("room join error: %.*s", (int)(n > 150 ? 150 : n), p);
        return;
    }
    if (find_in(p, n, "code='110'") || find_in(p, n, "code=\"110\"")) {
        /* a new room is locked until its owner configures it (XEP-0045 §10.1): accept the defaults first */
        if (find_in(p, n, "code='201'") || find_in(p, n, "code=\"201\"")) {
            conn_sendf(c, "<iq type='set' id='instant' to='room%d@%s'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                          "<x xmlns='jabber:x:data' type='submit'/></query></iq>", c->room, opt.muc_domain);
            return;
        }
        room_entered(c);
    }
}

static void room_entered(conn *c)
{
    c->in_room = 1;
    room_size[c->room]++;
    st.joined++;
}

/* One complete top-level element. Returns -1 if the connection is gone. */
static int on_element(conn *c, const char *p, size_t n)
{
    if (elem_is(p, n, "error") && !memcmp(p, "<stream:", 8)) {
        st.stream_errors++;
        char what[200];
        snprintf(what, sizeof what, "stream error %.*s", (int)(n > 160 ? 160 : n), p);
        conn_fail(c, what);
        return -1;
    }
    switch (c->state) {
    case C_FEATURES:
        if (!elem_is(p, n, "features")) return 0;
        if ((opt.stop_at == STOP_HEADER && !c->authed) || (opt.stop_at == STOP_AUTH && c->authed)) {
            login_done(c);
            return 0;
        }
        if (!c->authed) {
            if (opt.tls && !c->tls_done) {
                if (!find_in(p, n, "<starttls")) { conn_fail(c, "no STARTTLS offered"); return -1; }
                c->state = C_PROCEED;
                return conn_sendf(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            }
            char want[64];
            snprintf(want, sizeof want, ">%s<", opt.mech);
            if (!find_in(p, n, want)) { conn_fail(c, "mechanism not offered"); return -1; }
            return send_auth(c);
        }
        c->state = C_BIND;
        return conn_sendf(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                             "<resource>r</resource></bind></iq>");
    case C_PROCEED:
        if (!elem_is(p, n, "proceed")) { conn_fail(c, "STARTTLS refused"); return -1; }
        if (start_tls(c) < 0) return -1;
        return tls_handshake_step(c) < 0 ? -1 : 1;      /* 1: stop scanning, the rest is TLS */
    case C_AUTH: {
        size_t tl;
        const char *text;
        if (elem_is(p, n, "challenge")) {
            text = child_text(p, n, "challenge", &tl);
            if (!text) { conn_fail(c, "bad challenge"); return -1; }
            return scram_challenge(c, text, tl);
        }
        if (elem_is(p, n, "success")) {
            if (c->scram) {
                text = child_text(p, n, "success", &tl);
                if (!text || scram_verify(c, text, tl) < 0) { conn_fail(c, "bad SCRAM server signature"); return -1; }
                free(c->scram);
                c->scram = NULL;
            }
            c->authed = 1;
            if (send_header(c) < 0) return -1;
            return 1;                                   /* stream restart: forget anything after */
        }
        char what[200];
        snprintf(what, sizeof what, "SASL failed: %.*s", (int)(n > 150 ? 150 : n), p);
        conn_fail(c, what);
        return -1;
    }
    case C_BIND:
        if (elem_is(p, n, "iq")) {
            char id[16] = "", type[16] = "";
            attr_get(p, n, "id", id, sizeof id);
            attr_get(p, n, "type", type, sizeof type);
            if (!strcmp(id, "b1")) {
                if (strcmp(type, "result") != 0) { conn_fail(c, "bind failed"); return -1; }
                login_done(c);
            }
        }
        return 0;
    case C_ACTIVE:
        if (elem_is(p, n, "message")) on_message(c, p, n);
        else if (elem_is(p, n, "presence")) on_presence(c, p, n);
        else if (elem_is(p, n, "iq")) {
            /* answer pings so that other servers do not drop us; ignore the rest */
            char type[16] = "", id[64] = "", from[300] = "";
            attr_get(p, n, "type", type, sizeof type);
            if (!c->in_room && c->room >= 0 && attr_get(p, n, "id", id, sizeof id) && !strcmp(id, "instant")) {
                if (!strcmp(type, "result")) room_entered(c);
                else {
                    st.join_failed++;
                    note_error("instant room refused: %.*s", (int)(n > 150 ? 150 : n), p);
                }
                return 0;
            }
            if ((!strcmp(type, "get") || !strcmp(type, "set")) && attr_get(p, n, "id", id, sizeof id)) {
                if (attr_get(p, n, "from", from, sizeof from))
                    return conn_sendf(c, "<iq type='result' id='%s' to='%s'/>", id, from);
                return conn_sendf(c, "<iq type='result' id='%s'/>", id);
            }
        }
        return 0;
    default:
        return 0;
    }
}

/* Scan p[0..n): the stream header, then whole elements. Returns bytes consumed, or -1 if gone. */
static long scan_input(conn *c, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
        if (i >= n) break;
        if (p[i] != '<') { conn_fail(c, "text at the top level"); return -1; }
        if (i + 1 < n && (p[i + 1] == '?' || p[i + 1] == '!')) {
            const char *gt = memchr(p + i, '>', n - i);
            if (!gt) break;
            i = (size_t)(gt - p) + 1;
            continue;
        }
        if (i + 1 < n && p[i + 1] == '/') {             /* </stream:stream> */
            conn_fail(c, "stream closed by the server");
            return -1;
        }
        if (!c->stream_open) {
            const char *gt = memchr(p + i, '>', n - i);
            if (!gt) break;
            if (!elem_is(p + i, (size_t)(gt - p - i) + 1, "stream")) { conn_fail(c, "no stream header"); return -1; }
            c->stream_open = 1;
            i = (size_t)(gt - p) + 1;
            continue;
        }
        long len = element_length(p + i, n - i);
        if (len < 0) { conn_fail(c, "bad XML from the server"); return -1; }
        if (len == 0) break;
        int r = on_element(c, p + i, (size_t)len);
        if (r < 0 || c->state == C_DEAD) return -1;
        i += (size_t)len;
        if (r == 1) {                                   /* stream restart or TLS: nothing more expected */
            if (i < n) { conn_fail(c, "data after a stream restart point"); return -1; }
            break;
        }
    }
    return (long)i;
}

static int feed(conn *c, const char *p, size_t n)
{
    st.bytes_in += n;
    if (c->rlen) {
        if (c->rlen + n > c->rcap) {
            size_t cap = c->rcap ? c->rcap : 4096;
            while (cap < c->rlen + n) cap *= 2;
            if (cap > 16u << 20) { conn_fail(c, "element too large"); return -1; }
            char *b = realloc(c->rbuf, cap);
            if (!b) { conn_fail(c, "out of memory"); return -1; }
            c->rbuf = b;
            c->rcap = cap;
        }
        memcpy(c->rbuf + c->rlen, p, n);
        c->rlen += n;
        long used = scan_input(c, c->rbuf, c->rlen);
        if (used < 0) return -1;
        memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
        c->rlen -= (size_t)used;
        return 0;
    }
    long used = scan_input(c, p, n);
    if (used < 0) return -1;
    size_t rest = n - (size_t)used;
    if (rest) {
        if (rest > c->rcap) {
            size_t cap = 4096;
            while (cap < rest) cap *= 2;
            char *b = realloc(c->rbuf, cap);
            if (!b) { conn_fail(c, "out of memory"); return -1; }
            c->rbuf = b;
            c->rcap = cap;
        }
        memcpy(c->rbuf, p + used, rest);
        c->rlen = rest;
    } else if (c->rcap > 65536) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    return 0;
}

static void on_readable(conn *c)
{
    for (int rounds = 0; rounds < 8 && c->state != C_DEAD; rounds++) {
        if (c->state == C_TLS_HANDSHAKE) {
            if (tls_handshake_step(c) < 0 || c->state == C_TLS_HANDSHAKE) return;
            continue;
        }
        ssize_t r;
        if (c->ssl) {
            int k = SSL_read(c->ssl, scratch, sizeof scratch);
            if (k <= 0) {
                int e = SSL_get_error(c->ssl, k);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
                ERR_clear_error();
                conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "TLS closed by the server" : "TLS read failed");
                return;
            }
            r = k;
        } else {
            r = recv(c->fd, scratch, sizeof scratch, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
                conn_fail(c, "read failed");
                return;
            }
            if (r == 0) { conn_fail(c, "connection closed by the server"); return; }
        }
        if (c->state == C_SILENT) continue;
        if (feed(c, scratch, (size_t)r) < 0) return;
        if ((size_t)r < sizeof scratch && !(c->ssl && SSL_pending(c->ssl))) return;
    }
}

static void on_connected(conn *c)
{
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
        char what[100];
        snprintf(what, sizeof what, "connect: %s", strerror(err ? err : errno));
        conn_fail(c, what);
        return;
    }
    st.connected++;
    c->want_out = 0;
    conn_update_events(c);
    if (opt.workload == W_SILENT) {
        c->state = C_SILENT;
        if (st.in_progress) st.in_progress--;
        return;
    }
    send_header(c);
}

static void on_event(conn *c, uint32_t ev)
{
    if (c->state == C_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    if (c->state == C_TLS_HANDSHAKE) {
        tls_handshake_step(c);
        if (c->state != C_TLS_HANDSHAKE) on_readable(c);
        return;
    }
    if ((ev & EPOLLOUT) && conn_flush(c) < 0) return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* opening sessions                                                                                */

static int conn_open(int idx)
{
    conn *c = &conns[idx];
    int fd = socket(target_v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        st.failed++;
        note_error("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!target_v6) {
        /* spread the sessions over 127.0.0.2, .3, ...: each source has its own ephemeral port range */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(idx % opt.sources));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            close(fd);
            st.failed++;
            note_error("bind source: %s", strerror(errno));
            return -1;
        }
    }
    c->fd = fd;
    c->t_start = now_ns();
    c->state = C_CONNECTING;
    st.opened++;
    st.in_progress++;
    if (connect(fd, (struct sockaddr *)&target, target_len) < 0 && errno != EINPROGRESS) {
        char what[100];
        snprintf(what, sizeof what, "connect: %s", strerror(errno));
        c->want_out = 0;
        conn_fail(c, what);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)idx};
    c->want_out = 1;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        conn_fail(c, "epoll_ctl");
        return -1;
    }
    return 0;
}

static void conn_close_all(void)
{
    for (int i = 0; i < opt.sessions; i++) {
        conn *c = &conns[i];
        if (c->state == C_FREE || c->state == C_DEAD) continue;
        c->closed_by_us = 1;
        if (c->state == C_ACTIVE && conn_send(c, "</stream:stream>", 16) == 0) conn_flush(c);
        if (c->state != C_DEAD) conn_fail(c, "closed");
    }
}

static void conns_reset(void)
{
    nqueued = 0;
    for (int i = 0; i < opt.sessions; i++) {
        conn *c = &conns[i];
        int peer = c->peer, room = c->room, sender = c->sender;
        memset(c, 0, sizeof *c);
        c->fd = -1;
        c->peer = peer;
        c->room = room;
        c->sender = sender;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* the loop                                                                                        */

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static uint64_t t_origin, t_deadline;
static int over_time(void) { return interrupted || now_ns() > t_deadline; }

/* Run the loop once: up to 1 ms of waiting. Calls tick() on every timer expiry. */
static void loop_once(void (*tick)(void))
{
    struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, 5);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 == UINT32_MAX) {
            uint64_t exp;
            if (read(timer_fd, &exp, sizeof exp) < 0) { /* nothing to do */ }
            if (tick) tick();
            continue;
        }
        on_event(&conns[evs[i].data.u32], evs[i].events);
    }
    flush_queued();
}

static uint64_t open_t0;
static int next_to_open, open_limit;
static void open_tick(void)
{
    double el = (double)(now_ns() - open_t0) / 1e9;
    int due = open_limit;
    if (opt.rate > 0) {
        double d = opt.rate * el + 1;
        if (d < due) due = (int)d;
    }
    while (next_to_open < due && st.in_progress < (uint64_t)opt.concurrency) conn_open(next_to_open++);
}

static void progress(const char *what)
{
    if (opt.quiet) return;
    fprintf(stderr, "[%6.1fs] %s: opened %" PRIu64 " logged in %" PRIu64 " failed %" PRIu64 " joined %" PRIu64
            " sent %" PRIu64 " delivered %" PRIu64 "\n",
            (double)(now_ns() - t_origin) / 1e9, what, st.opened, st.logged_in, st.failed, st.joined, st.sent,
            st.delivered);
}

/* Open sessions [0, count) at the configured rate; wait until each is logged in (or connected, for
 * silent) or failed. Returns the seconds it took. */
static double open_sessions(int count)
{
    open_t0 = now_ns();
    next_to_open = 0;
    open_limit = count;
    uint64_t base_done = st.logged_in + st.failed + (opt.workload == W_SILENT ? st.connected : 0);
    uint64_t last_progress = open_t0;
    uint64_t last_done_t = open_t0;
    while (!over_time()) {
        open_tick();
        loop_once(open_tick);
        uint64_t done = st.logged_in + st.failed + (opt.workload == W_SILENT ? st.connected : 0);
        if (next_to_open >= count && done - base_done >= (uint64_t)count) {
            last_done_t = now_ns();
            break;
        }
        if (now_ns() - last_progress > 2000000000ull) {
            progress("login");
            last_progress = now_ns();
        }
        last_done_t = now_ns();
    }
    return (double)(last_done_t - open_t0) / 1e9;
}

static void run_for(double seconds, void (*tick)(void))
{
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9), last = now_ns();
    while (!over_time() && now_ns() < end) {
        loop_once(tick);
        if (now_ns() - last > 2000000000ull) {
            progress("run");
            last = now_ns();
        }
    }
}

/* offered-rate sending: the k-th message is due at t0 + k/rate and carries that time, so a stall of
 * the generator shows up as latency instead of silently lowering the load (no coordinated omission) */
static uint64_t send_t0, send_k;
static int *senders_list, nsenders, sender_rr;
static int nchat_senders, chat_rr, room_rr;    /* mixed: senders_list holds the 1:1 senders first */
static int send_group;          /* 0: 1:1 only; 1: groupchat only; 2: alternate */
static void send_tick(void)
{
    if (!sending || opt.window > 0 || opt.msg_rate <= 0 || !nsenders) return;
    uint64_t t = now_ns();
    double per = 1e9 / opt.msg_rate;
    uint64_t due = (uint64_t)((double)(t - send_t0) / per) + 1;
    for (int guard = 0; send_k < due && guard < 100000; guard++) {
        uint64_t ts = send_t0 + (uint64_t)((double)send_k * per);
        send_k++;
        if (send_group == 2 && nchat_senders > 0 && nchat_senders < nsenders) {
            /* mixed: every other message is groupchat, from the room senders in turn */
            if (send_k & 1)
                send_groupchat(&conns[senders_list[nchat_senders + room_rr++ % (nsenders - nchat_senders)]], ts);
            else
                send_chat(&conns[senders_list[chat_rr++ % nchat_senders]], ts);
            continue;
        }
        conn *c = &conns[senders_list[sender_rr++ % nsenders]];
        if (opt.workload == W_PRESENCE) send_presence_change(c, ts);
        else if (c->in_room && c->peer < 0) send_groupchat(c, ts);
        else send_chat(c, ts);
    }
    /* wake exactly when the next message is due, not on the next 1 ms tick: a late send is latency */
    uint64_t next = send_t0 + (uint64_t)((double)send_k * per);
    struct itimerspec its = {.it_value = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)}};
    timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void start_sending(void)
{
    sending = 1;
    measuring = 1;
    send_t0 = now_ns();
    send_k = 0;
    if (opt.window > 0) {
        for (int i = 0; i < nsenders; i++) {
            conn *c = &conns[senders_list[i]];
            for (int w = 0; w < opt.window; w++) {
                if (opt.workload == W_PRESENCE) send_presence_change(c, now_ns());
                else if (c->in_room && (send_group == 1 || (send_group == 2 && c->peer < 0))) send_groupchat(c, now_ns());
                else if (c->peer >= 0) send_chat(c, now_ns());
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* setup                                                                                            */

static int parse_target(void)
{
    memset(&target, 0, sizeof target);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&target;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&target;
    if (inet_pton(AF_INET, opt.host, &s4->sin_addr) == 1) {
        if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127) return -1;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)opt.port);
        target_len = sizeof *s4;
        return 0;
    }
    if (inet_pton(AF_INET6, opt.host, &s6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) return -1;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)opt.port);
        target_len = sizeof *s6;
        target_v6 = 1;
        return 0;
    }
    return -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        perror("couplet-load: free port");
        return 1;
    }
    printf("%d\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "couplet-load: %s needs a value\n", a); return -1; } i++; } while (0)
        if (!strcmp(a, "--host")) { NEEDV(); opt.host = v; }
        else if (!strcmp(a, "--port")) { NEEDV(); opt.port = atoi(v); }
        else if (!strcmp(a, "--domain")) { NEEDV(); opt.domain = v; }
        else if (!strcmp(a, "--muc-domain")) { NEEDV(); opt.muc_domain = v; }
        else if (!strcmp(a, "--password")) { NEEDV(); opt.password = v; }
        else if (!strcmp(a, "--mech")) { NEEDV(); opt.mech = v; }
        else if (!strcmp(a, "--tls")) opt.tls = 1;
        else if (!strcmp(a, "--sessions")) { NEEDV(); opt.sessions = atoi(v); }
        else if (!strcmp(a, "--rate")) { NEEDV(); opt.rate = atof(v); }
        else if (!strcmp(a, "--concurrency")) { NEEDV(); opt.concurrency = atoi(v); }
        else if (!strcmp(a, "--sources")) { NEEDV(); opt.sources = atoi(v); }
        else if (!strcmp(a, "--duration")) { NEEDV(); opt.duration = atof(v); }
        else if (!strcmp(a, "--msg-rate")) { NEEDV(); opt.msg_rate = atof(v); }
        else if (!strcmp(a, "--window")) { NEEDV(); opt.window = atoi(v); }
        else if (!strcmp(a, "--rooms")) { NEEDV(); opt.rooms = atoi(v); }
        else if (!strcmp(a, "--occupants")) { NEEDV(); opt.occupants = atoi(v); }
        else if (!strcmp(a, "--senders")) { NEEDV(); opt.senders = atoi(v); }
        else if (!strcmp(a, "--server-pid")) { NEEDV(); opt.server_pid = atoi(v); }
        else if (!strcmp(a, "--settle")) { NEEDV(); opt.settle = atof(v); }
        else if (!strcmp(a, "--drain")) { NEEDV(); opt.drain = atof(v); }
        else if (!strcmp(a, "--hard-cap")) { NEEDV(); opt.hard_cap = atoi(v); }
        else if (!strcmp(a, "--quiet")) opt.quiet = 1;
        else if (!strcmp(a, "--no-coalesce")) opt.no_coalesce = 1;
        else if (!strcmp(a, "--key-cache")) { NEEDV(); opt.key_cache = v; }
        else if (!strcmp(a, "--roster")) {
            NEEDV();
            if (!strcmp(v, "shared")) opt.roster_shared = 1;
            else if (!strcmp(v, "empty")) opt.roster_shared = 0;
            else { fprintf(stderr, "couplet-load: --roster shared|empty\n"); return -1; }
        }
        else if (!strcmp(a, "--stop-at")) {
            NEEDV();
            static const char *const stages[] = {"", "header", "auth", "bind", "full"};
            for (int k = 1; k <= STOP_FULL; k++)
                if (!strcmp(v, stages[k])) opt.stop_at = k;
            if (!opt.stop_at) { fprintf(stderr, "couplet-load: --stop-at header|auth|bind|full\n"); return -1; }
        }
        else if (!strcmp(a, "--workload")) {
            NEEDV();
            int found = 0;
            for (int w = 0; w <= W_LAST; w++)
                if (!strcmp(v, workload_names[w])) { opt.workload = (enum workload)w; found = 1; }
            if (!found) { fprintf(stderr, "couplet-load: unknown workload %s\n", v); return -1; }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); exit(0); }
        else { fprintf(stderr, "couplet-load: unknown option %s\n", a); usage(); return -1; }
#undef NEEDV
    }
    if (strcmp(opt.mech, "PLAIN") != 0 && strcmp(opt.mech, "SCRAM-SHA-1") != 0) {
        fprintf(stderr, "couplet-load: --mech must be PLAIN or SCRAM-SHA-1\n");
        return -1;
    }
    if (opt.sessions < 1 || opt.sessions > 1000000 || opt.port < 1 || opt.port > 65535 || opt.concurrency < 1 ||
        opt.rooms < 1 || opt.senders < 0 || opt.window < 0 || opt.duration < 0 || opt.duration > 3600) {
        fprintf(stderr, "couplet-load: an option is out of range\n");
        return -1;
    }
    if (opt.workload == W_MUC) {
        if (opt.occupants > opt.sessions) opt.sessions = opt.occupants;
        if (opt.occupants < opt.sessions) opt.sessions = opt.occupants;
        if (opt.senders > opt.occupants) opt.senders = opt.occupants;
    }
    if (opt.workload == W_PRESENCE) {
        if (opt.senders > opt.sessions) opt.senders = opt.sessions;
        if (opt.window > PRES_SLOTS) opt.window = PRES_SLOTS;
    }
    if (!opt.sources) opt.sources = opt.sessions / PORTS_PER_SOURCE + 1;
    if (opt.sources > MAX_SOURCES) opt.sources = MAX_SOURCES;
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)opt.sessions + 64 > rl.rlim_cur)
        fprintf(stderr, "couplet-load: warning: %d sessions but the file limit is %llu\n", opt.sessions,
                (unsigned long long)rl.rlim_cur);
}

/* Roles: chat pairs (2i, 2i+1); rooms by i % rooms; the first K occupants send. */
static void assign_roles(void)
{
    senders_list = calloc((size_t)opt.sessions, sizeof *senders_list);
    room_size = calloc((size_t)opt.rooms, sizeof *room_size);
    if (!senders_list || !room_size) { perror("couplet-load"); exit(2); }
    for (int i = 0; i < opt.sessions; i++) {
        conn *c = &conns[i];
        c->fd = -1;
        c->peer = -1;
        c->room = -1;
        switch (opt.workload) {
        case W_CHAT:
            if ((i ^ 1) < opt.sessions) { c->peer = i ^ 1; senders_list[nsenders++] = i; }
            break;
        case W_MUC:
            c->room = i % opt.rooms;
            if (i < opt.senders) { c->sender = 1; senders_list[nsenders++] = i; }
            break;
        case W_MIXED: {
            /* first half: 1:1 pairs; second half: rooms, with K senders */
            int half = opt.sessions / 2 & ~1;
            if (i < half) { c->peer = i ^ 1; senders_list[nsenders++] = i; }
            else {
                c->room = (i - half) % opt.rooms;
                if (i - half < opt.senders) { c->sender = 1; senders_list[nsenders++] = i; }
            }
            break;
        }
        case W_PRESENCE:
            if (i < opt.senders) { c->sender = 1; senders_list[nsenders++] = i; }
            break;
        default:
            break;
        }
    }
    send_group = opt.workload == W_MUC ? 1 : opt.workload == W_MIXED ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--free-port")) return free_port();
    if (parse_args(argc, argv) < 0) return 2;
    if (parse_target() < 0) {
        fprintf(stderr, "couplet-load: refusing %s: only loopback targets (127.0.0.0/8, ::1)\n", opt.host);
        return 2;
    }
    static char mucd[300];
    if (!opt.muc_domain) {
        snprintf(mucd, sizeof mucd, "conference.%s", opt.domain);
        opt.muc_domain = mucd;
    }
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    RAND_bytes((unsigned char *)&rng_state, sizeof rng_state);
    rng_state |= 1;

    double planned = opt.duration + opt.settle + opt.drain + (double)opt.sessions / (opt.rate > 0 ? opt.rate : 2000.0);
    if (opt.workload == W_LOGIN && !strcmp(opt.mech, "SCRAM-SHA-1")) planned *= 2;
    if (opt.workload == W_PRESENCE) planned += (double)opt.sessions * (double)opt.sessions / 200000.0;   /* storm */
    int cap = opt.hard_cap > 0 ? opt.hard_cap : (int)planned + HARD_CAP_EXTRA;
    t_origin = now_ns();
    t_deadline = t_origin + (uint64_t)cap * 1000000000ull;
    alarm((unsigned)cap + 15);          /* the last resort if the loop itself hangs */

    if (opt.tls) {
        ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!ssl_ctx) { fprintf(stderr, "couplet-load: SSL_CTX_new failed\n"); return 2; }
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);     /* loopback benchmark, self-signed cert */
        SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    conns = calloc((size_t)opt.sessions, sizeof *conns);
    queued_list = calloc((size_t)opt.sessions, sizeof *queued_list);
    pslots = calloc(opt.workload == W_PRESENCE ? (size_t)opt.sessions * PRES_SLOTS : 1, sizeof *pslots);
    if (!pslots) { perror("couplet-load"); return 2; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!conns || epfd < 0 || timer_fd < 0) { perror("couplet-load"); return 2; }
    struct itimerspec its = {.it_interval = {0, TICK_NS}, .it_value = {0, TICK_NS}};
    timerfd_settime(timer_fd, 0, &its, NULL);
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &tev);
    assign_roles();

    proc_sample s0 = proc_read(opt.server_pid);
    if (opt.server_pid > 0 && !s0.ok) {
        fprintf(stderr, "couplet-load: cannot read /proc/%d\n", opt.server_pid);
        return 2;
    }
    double g0 = self_cpu_s();

    /* SCRAM logins are measured on a second round, after the client has derived and cached each
     * account's salted password on the first, as a real client would have it cached */
    if (opt.key_cache) scram_cache_load(opt.key_cache, opt.password);
    if (opt.workload == W_LOGIN && !strcmp(opt.mech, "SCRAM-SHA-1") && scram_loaded < (uint64_t)opt.sessions) {
        open_sessions(opt.sessions);
        progress("warm-up round (key cache) done");
        conn_close_all();
        run_for(0.5, NULL);
        memset(&st, 0, sizeof st);
        memset(&lat_login, 0, sizeof lat_login);
        conns_reset();
        s0 = proc_read(opt.server_pid);
        g0 = self_cpu_s();
    }

    uint64_t t_open = now_ns();
    double login_s = open_sessions(opt.sessions);
    proc_sample s1 = proc_read(opt.server_pid);
    double g1 = self_cpu_s();
    progress("sessions open");

    double rss_per_session = 0;
    proc_sample s_mem = s1, s2 = s1, s_start = s1;
    double g_start = g1, g2 = g1, phase_s = 0;
    uint64_t delivered0 = 0;
    hist lat_msg_copy;
    /* presence: the login storm (connect .. every session has every other's initial presence) */
    double storm_s = 0;
    int storm_done = 0;
    proc_sample s_storm = s1;

    switch (opt.workload) {
    case W_IDLE:
    case W_SILENT:
        run_for(opt.settle, NULL);
        s_mem = proc_read(opt.server_pid);
        if (st.logged_in + (opt.workload == W_SILENT ? st.connected : 0))
            rss_per_session = (double)(s_mem.rss_kb - s0.rss_kb) * 1024.0 /
                              (double)(opt.workload == W_SILENT ? st.connected : st.logged_in);
        s_start = s_mem;
        g_start = self_cpu_s();
        run_for(opt.duration, NULL);
        s2 = proc_read(opt.server_pid);
        g2 = self_cpu_s();
        phase_s = opt.duration;
        break;
    case W_PRESENCE: {
        /* the storm: each session's initial presence goes to every available session, each newcomer is
         * greeted with every other's; done when every session has its own and (shared) all N-1 others */
        uint64_t n_in = st.logged_in, last_check = 0;
        while (!over_time() && now_ns() - t_open < 300000000000ull) {
            uint64_t t = now_ns();
            if (t - last_check > 1000000ull) {      /* an O(N) check, at most once a millisecond */
                last_check = t;
                uint64_t ok = 0;
                for (int i = 0; i < opt.sessions; i++) {
                    conn *c = &conns[i];
                    ok += c->state == C_ACTIVE && c->pres_self && (!opt.roster_shared || c->pres_seen + 1 >= n_in);
                }
                if (ok >= n_in) { storm_done = 1; break; }
            }
            loop_once(NULL);
        }
        storm_s = (double)(now_ns() - t_open) / 1e9;
        s_storm = proc_read(opt.server_pid);
        progress(storm_done ? "presence storm done" : "presence storm incomplete");
        run_for(opt.settle, NULL);
        s_mem = proc_read(opt.server_pid);
        if (st.logged_in) rss_per_session = (double)(s_mem.rss_kb - s0.rss_kb) * 1024.0 / (double)st.logged_in;
        /* the changes: from the first --senders sessions, flat out (--window) or at --msg-rate */
        uint64_t alive_now = 0;
        nsenders = 0;
        for (int i = 0; i < opt.sessions; i++) {
            alive_now += conns[i].state == C_ACTIVE;
            if (conns[i].state == C_ACTIVE && conns[i].sender) senders_list[nsenders++] = i;
        }
        pres_fanout = opt.roster_shared && alive_now ? (uint32_t)(alive_now - 1) : 0;
        delivered0 = st.delivered;
        uint64_t sent_base = st.sent;
        s_start = proc_read(opt.server_pid);
        g_start = self_cpu_s();
        uint64_t t0 = now_ns();
        start_sending();
        run_for(opt.duration, send_tick);
        sending = 0;
        uint64_t t_stop = now_ns();
        while (!over_time() && now_ns() - t_stop < (uint64_t)(opt.drain * 1e9) &&
               st.pres_completed < st.sent - sent_base)
            loop_once(NULL);
        uint64_t t_end = now_ns();
        s2 = proc_read(opt.server_pid);
        g2 = self_cpu_s();
        measuring = 0;
        phase_s = (double)(t_end - t0) / 1e9;
        st.sent -= sent_base;
        st.delivered -= delivered0;
        break;
    }
    case W_LOGIN:
        s_start = s0;
        g_start = g0;
        s2 = s1;
        g2 = g1;
        phase_s = login_s;
        break;
    case W_CHAT:
    case W_MUC:
    case W_MIXED: {
        if (opt.workload != W_CHAT) {
            /* each room's first occupant creates it and unlocks it, then everyone else comes in */
            int *creator = malloc((size_t)opt.rooms * sizeof *creator);
            if (!creator) { perror("couplet-load"); exit(2); }
            for (int r = 0; r < opt.rooms; r++) creator[r] = -1;
            for (int i = 0; i < opt.sessions; i++)
                if (conns[i].room >= 0 && conns[i].state == C_ACTIVE && creator[conns[i].room] < 0)
                    creator[conns[i].room] = i;
            uint64_t want = 0, t_join = now_ns();
            for (int pass = 0; pass < 2; pass++) {
                for (int i = 0; i < opt.sessions; i++) {
                    conn *c = &conns[i];
                    if (c->room < 0 || c->state != C_ACTIVE || (creator[c->room] == i) != (pass == 0)) continue;
                    room_join(c);
                    want++;
                }
                while (!over_time() && st.joined + st.join_failed < want && now_ns() - t_join < 60000000000ull)
                    loop_once(NULL);
            }
            free(creator);
            progress("rooms joined");
            run_for(0.3, NULL);         /* let the join presence storm drain */
        }
        nsenders = 0;
        for (int i = 0; i < opt.sessions; i++) {
            conn *c = &conns[i];
            if (c->state == C_ACTIVE && c->peer >= 0 && conns[c->peer].state == C_ACTIVE) senders_list[nsenders++] = i;
        }
        nchat_senders = nsenders;
        for (int i = 0; i < opt.sessions; i++) {
            conn *c = &conns[i];
            if (c->state == C_ACTIVE && c->sender && c->in_room) senders_list[nsenders++] = i;
        }
        delivered0 = st.delivered;
        uint64_t sent_base = st.sent, muc_exp_base = st.muc_expected, muc_del_base = st.muc_delivered,
                 chat_del_base = st.chat_delivered;
        s_start = proc_read(opt.server_pid);
        g_start = self_cpu_s();
        uint64_t t0 = now_ns();
        start_sending();
        run_for(opt.duration, send_tick);
        sending = 0;
        uint64_t t_stop = now_ns();
        /* drain: wait for what is in flight, but no longer than --drain */
        while (!over_time() && now_ns() - t_stop < (uint64_t)(opt.drain * 1e9)) {
            uint64_t expect = (st.chat_sent) + st.muc_expected;
            if (st.chat_delivered + st.muc_delivered >= expect) break;
            loop_once(NULL);
        }
        uint64_t t_end = now_ns();
        s2 = proc_read(opt.server_pid);
        g2 = self_cpu_s();
        measuring = 0;
        phase_s = (double)(t_end - t0) / 1e9;
        (void)t_stop;
        st.sent -= sent_base;
        st.muc_expected -= muc_exp_base;
        st.muc_delivered -= muc_del_base;
        st.chat_delivered -= chat_del_base;
        st.delivered -= delivered0;
        break;
    }
    }
    memcpy(&lat_msg_copy, &lat_msg, sizeof lat_msg);
    double server_cpu = s2.cpu_s - s_start.cpu_s, gen_cpu = g2 - g_start;
    uint64_t alive = 0;
    for (int i = 0; i < opt.sessions; i++) alive += conns[i].state == C_ACTIVE || conns[i].state == C_SILENT;

    /* the one machine-readable line */
    printf("RESULT workload=%s sessions=%d mech=%s tls=%d logged_in=%" PRIu64 " connected=%" PRIu64
           " failed=%" PRIu64 " dropped=%" PRIu64 " alive=%" PRIu64,
           workload_names[opt.workload], opt.sessions, opt.mech, opt.tls, st.logged_in, st.connected, st.failed,
           st.dropped, alive);
    static const char *const stage_names[] = {"full", "header", "auth", "bind", "full"};
    printf(" stop_at=%s", stage_names[opt.stop_at]);
    printf(" login_s=%.3f logins_per_s=%.0f login_p50_ms=%.3f login_p99_ms=%.3f", login_s,
           login_s > 0 ? (double)st.logged_in / login_s : 0.0, hist_pct(&lat_login, 50) / 1e6,
           hist_pct(&lat_login, 99) / 1e6);
    if (opt.workload == W_LOGIN && st.logged_in)
        printf(" server_us_per_login=%.1f gen_us_per_login=%.1f scram_derived=%" PRIu64 " scram_from_cache=%" PRIu64,
               server_cpu * 1e6 / (double)st.logged_in, gen_cpu * 1e6 / (double)st.logged_in, scram_derived,
               scram_hits);
    if (opt.server_pid > 0)
        printf(" rss_before_kb=%ld rss_after_kb=%ld rss_end_kb=%ld rss_per_session_b=%.0f", s0.rss_kb, s_mem.rss_kb,
               s2.rss_kb, rss_per_session);
    if (opt.workload == W_CHAT || opt.workload == W_MUC || opt.workload == W_MIXED) {
        uint64_t expected = st.chat_sent + st.muc_expected;
        uint64_t lost = expected > st.delivered ? expected - st.delivered : 0;
        printf(" phase_s=%.3f senders=%d window=%d offered_msg_per_s=%.0f sent=%" PRIu64 " sent_per_s=%.0f"
               " expected=%" PRIu64 " delivered=%" PRIu64 " delivered_per_s=%.0f lost=%" PRIu64 " errors=%" PRIu64,
               phase_s, nsenders, opt.window, opt.window > 0 ? 0.0 : opt.msg_rate, st.sent,
               (double)st.sent / phase_s, expected, st.delivered, (double)st.delivered / phase_s, lost, st.errors);
        if (opt.workload != W_CHAT)
            printf(" rooms=%d occupants_joined=%" PRIu64 " join_failed=%" PRIu64, opt.rooms, st.joined,
                   st.join_failed);
        printf(" lat_p50_us=%.1f lat_p90_us=%.1f lat_p99_us=%.1f lat_max_us=%.1f", hist_pct(&lat_msg_copy, 50) / 1e3,
               hist_pct(&lat_msg_copy, 90) / 1e3, hist_pct(&lat_msg_copy, 99) / 1e3, lat_msg_copy.max / 1e3);
        if (st.delivered)
            printf(" server_us_per_delivery=%.3f gen_us_per_delivery=%.3f",
                   server_cpu * 1e6 / (double)st.delivered, gen_cpu * 1e6 / (double)st.delivered);
        if (st.sent)
            printf(" server_us_per_sent=%.3f", server_cpu * 1e6 / (double)st.sent);
    }
    if (opt.workload == W_PRESENCE) {
        uint64_t storm_stanzas = st.storm_seen + st.storm_self;
        double storm_cpu = s_storm.cpu_s - s0.cpu_s;
        uint64_t lost = st.pres_expected > st.pres_delivered ? st.pres_expected - st.pres_delivered : 0;
        printf(" roster=%s storm_done=%d storm_s=%.3f storm_presence_in=%" PRIu64 " storm_server_cpu_s=%.3f"
               " storm_server_sys_s=%.3f storm_server_us_per_session=%.1f storm_server_us_per_stanza=%.3f",
               opt.roster_shared ? "shared" : "empty", storm_done, storm_s, storm_stanzas, storm_cpu,
               s_storm.sys_s - s0.sys_s, st.logged_in ? storm_cpu * 1e6 / (double)st.logged_in : 0.0,
               storm_stanzas ? storm_cpu * 1e6 / (double)storm_stanzas : 0.0);
        printf(" phase_s=%.3f senders=%d window=%d offered_changes_per_s=%.0f fanout=%u changes=%" PRIu64
               " changes_per_s=%.0f completed=%" PRIu64 " expected=%" PRIu64 " delivered=%" PRIu64
               " delivered_per_s=%.0f lost=%" PRIu64 " reflected=%" PRIu64 " stray=%" PRIu64 " errors=%" PRIu64,
               phase_s, nsenders, opt.window, opt.window > 0 ? 0.0 : opt.msg_rate, pres_fanout, st.sent,
               phase_s > 0 ? (double)st.sent / phase_s : 0.0, st.pres_completed, st.pres_expected,
               st.pres_delivered, phase_s > 0 ? (double)st.pres_delivered / phase_s : 0.0, lost,
               st.pres_reflected, st.pres_stray, st.errors);
        printf(" lat_p50_us=%.1f lat_p99_us=%.1f fanout_p50_us=%.1f fanout_p99_us=%.1f fanout_max_us=%.1f",
               hist_pct(&lat_msg_copy, 50) / 1e3, hist_pct(&lat_msg_copy, 99) / 1e3, hist_pct(&lat_fanout, 50) / 1e3,
               hist_pct(&lat_fanout, 99) / 1e3, lat_fanout.max / 1e3);
        if (st.sent)
            printf(" server_us_per_change=%.3f gen_us_per_change=%.3f", server_cpu * 1e6 / (double)st.sent,
                   gen_cpu * 1e6 / (double)st.sent);
        if (st.pres_delivered)
            printf(" server_us_per_delivery=%.3f", server_cpu * 1e6 / (double)st.pres_delivered);
    }
    printf(" server_cpu_s=%.3f gen_cpu_s=%.3f server_cpu_pct=%.1f gen_cpu_pct=%.1f", server_cpu, gen_cpu,
           phase_s > 0 ? server_cpu * 100 / phase_s : 0.0, phase_s > 0 ? gen_cpu * 100 / phase_s : 0.0);
    printf(" server_sys_s=%.3f coalesce=%d", s2.sys_s - s_start.sys_s, !opt.no_coalesce);
    printf(" server_cpu_total_s=%.3f server_rss_delta_total_kb=%ld", s2.cpu_s - s0.cpu_s, s2.rss_kb - s0.rss_kb);
    printf(" timed_out=%d first_error=%s\n", over_time() && !interrupted ? 1 : 0,
           st.first_error[0] ? st.first_error : "-");

    /* and a short table for people */
    printf("  %-28s %s\n", "workload", workload_names[opt.workload]);
    printf("  %-28s %" PRIu64 " of %d (%" PRIu64 " failed, %" PRIu64 " dropped later)\n", "sessions logged in",
           opt.workload == W_SILENT ? st.connected : st.logged_in, opt.sessions, st.failed, st.dropped);
    printf("  %-28s %.0f/s, p50 %.2f ms, p99 %.2f ms\n", "login", login_s > 0 ? (double)st.logged_in / login_s : 0.0,
           hist_pct(&lat_login, 50) / 1e6, hist_pct(&lat_login, 99) / 1e6);
    if (opt.server_pid > 0)
        printf("  %-28s %ld -> %ld kB (%.0f B per session)\n", "server RSS", s0.rss_kb, s_mem.rss_kb, rss_per_session);
    if (opt.workload == W_PRESENCE) {
        printf("  %-28s %.3f s, server CPU %.3f s (%s)\n", "login storm", storm_s, s_storm.cpu_s - s0.cpu_s,
               storm_done ? "every session has every presence" : "INCOMPLETE");
        printf("  %-28s %.0f/s to %u contacts each; p50 %.1f / p99 %.1f us until all have it\n", "presence changes",
               phase_s > 0 ? (double)st.sent / phase_s : 0.0, pres_fanout, hist_pct(&lat_fanout, 50) / 1e3,
               hist_pct(&lat_fanout, 99) / 1e3);
        if (st.sent)
            printf("  %-28s %.1f us per change\n", "server CPU", server_cpu * 1e6 / (double)st.sent);
    }
    if (st.delivered)
        printf("  %-28s %.0f/s, latency p50 %.1f / p90 %.1f / p99 %.1f / max %.1f us\n", "delivered",
               (double)st.delivered / phase_s, hist_pct(&lat_msg_copy, 50) / 1e3, hist_pct(&lat_msg_copy, 90) / 1e3,
               hist_pct(&lat_msg_copy, 99) / 1e3, lat_msg_copy.max / 1e3);
    printf("  %-28s server %.2f s (%.0f%%), generator %.2f s (%.0f%%)\n", "CPU in measured phase", server_cpu,
           phase_s > 0 ? server_cpu * 100 / phase_s : 0.0, gen_cpu, phase_s > 0 ? gen_cpu * 100 / phase_s : 0.0);
    if (st.first_error[0]) printf("  %-28s %s\n", "first error", st.first_error);
    fflush(stdout);

    conn_close_all();
    if (opt.key_cache) scram_cache_save(opt.key_cache, opt.password);
    int bad = st.failed > 0 || st.dropped > 0;
    if (opt.workload == W_PRESENCE && (!storm_done || st.pres_completed < st.sent || st.errors)) bad = 1;
    return over_time() && !interrupted ? 3 : bad ? 1 : 0;
}
