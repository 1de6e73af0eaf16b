/* net_epoll.c - the event loop: one epoll instance (level-triggered), listeners, per-connection write
 * queues flushed once per loop turn, STARTTLS and direct TLS with OpenSSL, one timer per connection in
 * a min-heap, and signals through a signalfd.
 *
 * Level-triggered on purpose: a connection may stop reading after a few reads per turn (fairness) or
 * stop writing when its queue is empty, and the kernel keeps reporting what is left, so no connection
 * ever has to be remembered on a "still has input" list and a missed edge can never stall a session.
 *
 * A connection dies in exactly one place, conn_kill(): it closes the socket, calls on_close once and
 * puts the net_conn on the end-of-turn list, which frees it after every event of the turn has been
 * dispatched. conn_kill() is only reached from loop code, never from a call a handler made, so a handler
 * never sees its session freed under it.
 *
 * Input limits. A peer address may hold at most max_per_ip connections: live connections are counted in
 * a small hash table keyed by the 16-byte address (IPv4 in its IPv4-mapped IPv6 form, so a dual-stack
 * listener counts a v4 peer once), with a secret random hash key so a peer choosing IPv6 addresses cannot
 * aim at one chain. Each connection also has a token bucket of read_rate bytes per second: it is refilled
 * from the elapsed time whenever it is used, a read never asks the socket for more than the tokens, and a
 * connection out of tokens loses its EPOLLIN interest and waits on the throttled queue. The peer is then
 * slowed by TCP itself (its data stays in the kernel's receive buffer, the window closes), never by
 * buffering it here. All throttled connections refill at the same rate, so each is revisited a fixed time
 * after it was queued and the queue is in deadline order. With TLS the bucket is charged the ciphertext
 * taken from the socket (the socket BIO's byte counter around each OpenSSL call); a read is started only
 * with tokens left, and as OpenSSL completes a record once it starts one, the bucket can go into debt by at
 * most one record, which is paid back before the next read. */
#include "net_epoll.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define NET_READ_BUF        16384       /* one TLS record of plaintext fits: SSL_pending stays 0 */
#define NET_READS_PER_TURN  4
#define NET_ACCEPTS_PER_TURN 128
#define NET_MAX_EVENTS      256
#define NET_MAX_LISTENERS   16
#define NET_OUT_MIN         1024        /* first allocation of an output queue */
#define NET_OVERFLOW_SLACK  4096        /* room for on_overflow's final error past max_output */
#define NET_MAX_OUTPUT_CAP  (1u << 30)  /* queue offsets are 32-bit */
#define NET_CLOSE_GRACE     5           /* seconds a closing connection may take to flush */
#define NET_CONNECT_TIMEOUT 30          /* seconds, when net_connect is given none */
#define NET_STOP_GRACE_MS   2000
#define NET_RATE_MAX        (1u << 30)  /* bytes per second; more is as good as unlimited */
#define NET_BURST_MAX       (1 << 30)   /* tokens are a signed 32-bit count that may go into debt */
#define NET_RESUME_BYTES    4096        /* a throttled connection is read again with this much refilled */
#define NET_IP_BUCKETS_MIN  64
#define NET_TRIM_DELAY_MS   1000        /* heap trimmed this long after the first handshake since the last */

enum {
    F_DEAD          = 1 << 0,   /* on_close done; freed at the end of the turn */
    F_CLOSING       = 1 << 1,   /* net_conn_close: flush, then close; input ignored */
    F_TODO          = 1 << 2,   /* on the end-of-turn list */
    F_OVERFLOW      = 1 << 3,   /* queue passed max_output; on_overflow pending */
    F_IN_OVERFLOW   = 1 << 4,   /* inside on_overflow: a final short write is allowed */
    F_NOMEM         = 1 << 5,   /* could not grow the queue */
    F_STARTTLS      = 1 << 6,   /* TLS starts once plain_left bytes are out; input discarded */
    F_HANDSHAKE     = 1 << 7,   /* TLS handshake in progress; output waits */
    F_OUT_BLOCKED   = 1 << 8,   /* the queue waits for EPOLLOUT */
    F_OUT_WANTS_READ = 1 << 9,  /* SSL_write wants input first */
    F_IN_WANTS_WRITE = 1 << 10, /* SSL_read or the handshake wants EPOLLOUT first */
    F_POLLOUT       = 1 << 11,  /* EPOLLOUT is in the registered interest */
    F_POLLIN_OFF    = 1 << 12,  /* EPOLLIN is not in the registered interest (throttled) */
    F_PER_IP        = 1 << 13,  /* counted in the per-address table */
    F_CONNECTING    = 1 << 14,  /* net_connect: waiting for the kernel; the timer is the connect timeout */
    F_OUTBOUND      = 1 << 15,  /* made by net_connect: never counted per address */
};

/* Longest peer text: inet_ntop writes at most 39 characters for a peer (8 groups of 4 hex digits and 7
 * colons; the dotted IPv4 tail appears only in the short ::a.b.c.d forms, and a v4-mapped peer is shown
 * as plain IPv4), so 40 bytes, not INET6_ADDRSTRLEN's 46: the 6 bytes pay for 32-bit flags. */
#define NET_PEER_TEXT 40

/* How a connection's bytes move: the loop reads, writes, closes and upgrades through c->tr and never asks
 * which transport it is. Plain TCP and a Unix socket share their functions (the Unix one cannot become
 * TLS); STARTTLS swaps c->tr from the TCP table to the TLS one. The tables are static: a connection pays
 * one pointer for its transport, and a transport's per-connection state (TLS: the SSL object) stays in the
 * connection only when it has some. A framing layer stacks above these (see net_epoll.h). */
typedef struct net_transport {
    const char *name;       /* for logs */
    int stream_reads;       /* a read shorter than asked emptied the socket: skip the EAGAIN call */
    /* Input into buf (room for NET_READ_BUF bytes); len > 0 is what the read bucket allows, and a stream
     * read takes no more (TLS finishes a record once it starts one: the bucket goes into debt). Charges
     * the bucket what it took from the socket. > 0 bytes, 0 nothing now (its wait is noted), -1 dead. */
    ssize_t (*read)(net_conn *c, char *buf, size_t len);
    /* Output from buf: > 0 bytes taken (F_OUT_BLOCKED set if the socket is full), 0 must wait (noted),
     * -1 dead. */
    ssize_t (*write)(net_conn *c, const char *buf, size_t len);
    /* bytes taken from the socket and not yet read: no epoll event will announce them */
    size_t (*pending)(const net_conn *c);
    /* the polite end just before the socket closes (TLS close_notify); best effort, never waits */
    void (*shutdown)(net_conn *c);
    /* become TLS now that the plaintext before the switch is out: 0, or -1 (dead); NULL = cannot */
    int (*upgrade)(net_conn *c);
} net_transport;

/* Per connection, so sized on purpose: 136 bytes, which glibc's malloc still serves from a 144-byte chunk
 * (request + 8, rounded up to 16), the chunk the 128-byte struct had before the transport pointer came.
 * The peer address is kept as text because callers log it (and the per-address count is found again from
 * it at close). Seconds and the bucket's milliseconds are 32-bit: last_input holds the epoch seconds
 * until 2106, and the bucket's stamp wraps after 49 days, which at worst makes a connection idle that long
 * wait one refill period. */
struct net_conn {
    net_loop *loop;
    void *ud;
    const net_transport *tr;
    SSL *ssl;               /* NULL until TLS is set up (a client's before the switch, see tls_begin) */
    char *out;              /* output queue; NULL when empty, so idle connections hold none */
    net_conn *todo_next;    /* end-of-turn list: flush, finish closing, free */
    uint32_t last_input;    /* epoch seconds */
    uint32_t out_off, out_len, out_cap;     /* unsent bytes are out[out_off, out_len) */
    uint32_t plain_left;    /* STARTTLS: queued bytes that still go out in plaintext */
    uint32_t timer_pos;     /* index + 1 in the timer heap; 0 = disarmed */
    int32_t tokens;         /* read bucket in bytes; negative = debt (TLS finished a record) */
    uint32_t tokens_ms;     /* monotonic ms (mod 2^32) the tokens were last refilled up to */
    uint32_t thr_pos;       /* index + 1 in the throttled queue; 0 = not throttled */
    int fd;
    uint32_t flags;
    char peer[NET_PEER_TEXT];
};
_Static_assert(sizeof(struct net_conn) <= 136, "struct net_conn is per connection: keep it small");

typedef struct net_timer {
    time_t when;
    net_conn *c;
} net_timer;

/* a throttled connection and when to look at it again (NULL: it died while waiting) */
typedef struct net_throttled {
    net_conn *c;
    long long due_ms;       /* monotonic */
} net_throttled;

/* live connections from one peer address */
typedef struct net_ip {
    struct net_ip *next;
    uint32_t count;
    unsigned char addr[16];
} net_ip;

typedef struct net_listener {
    int fd;                 /* -1 once closed */
    int tls;
    int tag;
} net_listener;

struct net_loop {
    net_handlers h;
    size_t max_output;
    int max_connections;
    int max_per_ip;
    uint32_t read_rate;     /* bytes per second, 0 = unlimited */
    int32_t read_burst;
    int epfd, sigfd;
    struct { int fd; void (*ready)(void *); void *ud; } watches[NET_MAX_WATCHES];
    int nwatches;
    int nconns;             /* live connections */
    int stopping;
    time_t now;             /* wall clock seconds of this turn */
    long long now_ms;       /* same clock in ms, for the epoll timeout */
    long long mono_ms;      /* monotonic, for the stop grace */
    long long stop_at_ms;
    time_t accept_paused_until;     /* fd exhaustion: listeners muted until then */
    time_t alarm_at;        /* net_loop_alarm: on_alarm is due then (0: not armed) */
    time_t last_full_log, last_emfile_log, last_per_ip_log;
    net_listener listeners[NET_MAX_LISTENERS];
    int nlisteners;
    net_conn **fds;         /* live connections by fd, for net_loop_free */
    size_t nfds;
    net_timer *heap;
    uint32_t heap_len, heap_cap;
    net_conn *todo_head, *todo_tail;
    net_throttled *thr;     /* ring in deadline order: [thr_head, thr_head + thr_len) mod thr_cap */
    uint32_t thr_head, thr_len, thr_cap;
    net_ip **ip_buckets;    /* per-address counts, only while max_per_ip > 0 */
    uint32_t ip_nbuckets, ip_count;
    uint64_t ip_key[2];     /* hash key, random per loop */
    SSL_CTX *ssl_ctx;
    SSL_CTX *client_ctx;            /* made by the first net_conn_start_tls_client */
    int trim_pending;               /* a TLS handshake ended since the last heap trim */
    long long trim_due_ms;          /* monotonic */
    char rbuf[NET_READ_BUF];        /* every read lands here; on_data's callee copies what it keeps */
};

/* epoll data: a net_conn pointer (even), or (index << 1) | 1 for listeners, the signalfd and watches */
#define EV_SIGNAL_INDEX NET_MAX_LISTENERS
#define EV_WATCH_INDEX (NET_MAX_LISTENERS + 1)

static void conn_kill(net_conn *c, const char *reason);
static void conn_on_readable(net_conn *c);
static void conn_update_events(net_conn *c);
static const net_transport tcp_transport, unix_transport, tls_transport;

/* ---- clock ---- */

static void clock_update(net_loop *l)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0) {
        l->now = ts.tv_sec;
        l->now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
        l->mono_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* once a second at most, for logs a flood could otherwise repeat per accept */
static int log_allowed(time_t *last, time_t now)
{
    if (*last == now)
        return 0;
    *last = now;
    return 1;
}

/* ---- timer heap: (deadline, conn), the conn remembers its slot ---- */

static void heap_put(net_loop *l, uint32_t i, net_timer t)
{
    l->heap[i] = t;
    t.c->timer_pos = i + 1;
}

static void heap_up(net_loop *l, uint32_t i)
{
    net_timer t = l->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (l->heap[parent].when <= t.when)
            break;
        heap_put(l, i, l->heap[parent]);
        i = parent;
    }
    heap_put(l, i, t);
}

static void heap_down(net_loop *l, uint32_t i)
{
    net_timer t = l->heap[i];
    for (;;) {
        uint32_t k = 2 * i + 1;
        if (k >= l->heap_len)
            break;
        if (k + 1 < l->heap_len && l->heap[k + 1].when < l->heap[k].when)
            k++;
        if (t.when <= l->heap[k].when)
            break;
        heap_put(l, i, l->heap[k]);
        i = k;
    }
    heap_put(l, i, t);
}

static void heap_fix(net_loop *l, uint32_t i)
{
    if (i > 0 && l->heap[i].when < l->heap[(i - 1) / 2].when)
        heap_up(l, i);
    else
        heap_down(l, i);
}

static void timer_remove(net_conn *c)
{
    net_loop *l = c->loop;
    if (!c->timer_pos)
        return;
    uint32_t i = c->timer_pos - 1;
    c->timer_pos = 0;
    l->heap_len--;
    if (i < l->heap_len) {
        heap_put(l, i, l->heap[l->heap_len]);
        heap_fix(l, i);
    }
}

static int timer_arm(net_conn *c, time_t when)
{
    net_loop *l = c->loop;
    if (c->timer_pos) {
        l->heap[c->timer_pos - 1].when = when;
        heap_fix(l, c->timer_pos - 1);
        return 0;
    }
    if (l->heap_len == l->heap_cap) {
        uint32_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        net_timer *h = realloc(l->heap, cap * sizeof *h);
        if (!h) {
            log_err("net: out of memory for timers");
            return -1;
        }
        l->heap = h;
        l->heap_cap = cap;
    }
    l->heap[l->heap_len] = (net_timer){ when, c };
    heap_up(l, l->heap_len++);
    return 0;
}

static void timers_fire(net_loop *l)
{
    /* bounded, so a handler re-arming with 0 seconds runs once per turn, not forever */
    uint32_t budget = l->heap_len;
    while (budget-- > 0 && l->heap_len > 0 && l->heap[0].when <= l->now) {
        net_conn *c = l->heap[0].c;
        timer_remove(c);
        if (c->flags & F_CLOSING)
            conn_kill(c, "close timeout");
        else if (c->flags & F_CONNECTING)
            conn_kill(c, "connect timeout");
        else if (l->h.on_timer)
            l->h.on_timer(c->ud, c, l->now);
    }
}

/* ---- end-of-turn list ---- */

static void todo_add(net_conn *c)
{
    net_loop *l = c->loop;
    if (c->flags & F_TODO)
        return;
    c->flags |= F_TODO;
    c->todo_next = NULL;
    if (l->todo_tail)
        l->todo_tail->todo_next = c;
    else
        l->todo_head = c;
    l->todo_tail = c;
}

/* ---- per-address connection counts ---- */

static uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1]; v[1] = rotl64(v[1], 13); v[1] ^= v[0]; v[0] = rotl64(v[0], 32);
    v[2] += v[3]; v[3] = rotl64(v[3], 16); v[3] ^= v[2];
    v[0] += v[3]; v[3] = rotl64(v[3], 21); v[3] ^= v[0];
    v[2] += v[1]; v[1] = rotl64(v[1], 17); v[1] ^= v[2]; v[2] = rotl64(v[2], 32);
}

/* SipHash-2-4 of the 16 address bytes under the loop's random key: peers cannot predict the chains */
static uint64_t ip_hash(const net_loop *l, const unsigned char addr[16])
{
    uint64_t m[3];
    memcpy(m, addr, 16);
    m[2] = (uint64_t)16 << 56;
    uint64_t v[4] = { l->ip_key[0] ^ 0x736f6d6570736575ULL, l->ip_key[1] ^ 0x646f72616e646f6dULL,
                      l->ip_key[0] ^ 0x6c7967656e657261ULL, l->ip_key[1] ^ 0x7465646279746573ULL };
    for (int i = 0; i < 3; i++) {
        v[3] ^= m[i];
        sip_round(v);
        sip_round(v);
        v[0] ^= m[i];
    }
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static void ip_map_v4(const void *v4, unsigned char out[16])
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

/* the table's key for a peer: IPv6 bytes, IPv4 as IPv4-mapped IPv6. 0, or -1 for another family */
static int ip_key_of_sockaddr(const struct sockaddr_storage *sa, unsigned char out[16])
{
    if (sa->ss_family == AF_INET)
        ip_map_v4(&((const struct sockaddr_in *)sa)->sin_addr, out);
    else if (sa->ss_family == AF_INET6)
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    else
        return -1;
    return 0;
}

/* the same key from the text peer_text() made: the connection keeps no second copy of its address */
static int ip_key_of_text(const char *text, unsigned char out[16])
{
    struct in_addr v4;
    if (strchr(text, ':'))
        return inet_pton(AF_INET6, text, out) == 1 ? 0 : -1;
    if (inet_pton(AF_INET, text, &v4) != 1)
        return -1;
    ip_map_v4(&v4, out);
    return 0;
}

static net_ip **ip_slot(net_loop *l, const unsigned char addr[16])
{
    net_ip **p = &l->ip_buckets[ip_hash(l, addr) & (l->ip_nbuckets - 1)];
    while (*p && memcmp((*p)->addr, addr, 16) != 0)
        p = &(*p)->next;
    return p;
}

static uint32_t ip_connections(net_loop *l, const unsigned char addr[16])
{
    if (!l->ip_nbuckets)
        return 0;
    net_ip *e = *ip_slot(l, addr);
    return e ? e->count : 0;
}

/* twice the buckets when there are as many addresses as buckets; if that fails, chains just get longer */
static void ip_grow(net_loop *l)
{
    uint32_t n = l->ip_nbuckets ? l->ip_nbuckets * 2 : NET_IP_BUCKETS_MIN;
    net_ip **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (uint32_t i = 0; i < l->ip_nbuckets; i++) {
        net_ip *e, *next;
        for (e = l->ip_buckets[i]; e; e = next) {
            next = e->next;
            net_ip **head = &b[ip_hash(l, e->addr) & (n - 1)];
            e->next = *head;
            *head = e;
        }
    }
    free(l->ip_buckets);
    l->ip_buckets = b;
    l->ip_nbuckets = n;
}

static int ip_add(net_loop *l, const unsigned char addr[16])
{
    if (l->ip_count >= l->ip_nbuckets)
        ip_grow(l);
    if (!l->ip_nbuckets)
        return -1;
    net_ip **p = ip_slot(l, addr);
    if (!*p) {
        net_ip *e = calloc(1, sizeof *e);
        if (!e)
            return -1;
        memcpy(e->addr, addr, 16);
        *p = e;
        l->ip_count++;
    }
    (*p)->count++;
    return 0;
}

static void ip_release(net_conn *c)
{
    net_loop *l = c->loop;
    unsigned char addr[16];
    if (!(c->flags & F_PER_IP))
        return;
    c->flags &= ~F_PER_IP;
    if (!l->ip_nbuckets || ip_key_of_text(c->peer, addr) < 0)
        return;
    net_ip **p = ip_slot(l, addr);
    net_ip *e = *p;
    if (e && --e->count == 0) {
        *p = e->next;
        free(e);
        l->ip_count--;
    }
}

static void ip_table_free(net_loop *l)
{
    for (uint32_t i = 0; i < l->ip_nbuckets; i++) {
        net_ip *e, *next;
        for (e = l->ip_buckets[i]; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(l->ip_buckets);
    l->ip_buckets = NULL;
    l->ip_nbuckets = l->ip_count = 0;
}

/* the limit was switched on or off: the table holds counts only while there is a limit */
static void ip_table_rebuild(net_loop *l)
{
    unsigned char addr[16];
    ip_table_free(l);
    for (size_t i = 0; i < l->nfds; i++) {
        net_conn *c = l->fds[i];
        if (!c)
            continue;
        c->flags &= ~F_PER_IP;
        if (c->flags & F_OUTBOUND)
            continue;           /* the limit is on what peers open, not on what we open */
        if (l->max_per_ip > 0 && ip_key_of_text(c->peer, addr) == 0 && ip_add(l, addr) == 0)
            c->flags |= F_PER_IP;
    }
}

/* ---- read bucket and the throttled queue ---- */

/* add the tokens earned since tokens_ms, up to the burst */
static void bucket_refill(net_conn *c)
{
    const net_loop *l = c->loop;
    uint32_t now = (uint32_t)l->mono_ms;
    uint32_t elapsed = now - c->tokens_ms;
    if (c->tokens >= l->read_burst) {
        c->tokens = l->read_burst;
        c->tokens_ms = now;
        return;
    }
    uint64_t missing = (uint64_t)((int64_t)l->read_burst - c->tokens);
    if (elapsed >= missing * 1000 / l->read_rate + 1) {
        c->tokens = l->read_burst;
        c->tokens_ms = now;
        return;
    }
    uint64_t add = (uint64_t)elapsed * l->read_rate / 1000;    /* < missing + rate: no overflow */
    if (add == 0)
        return;             /* keep the stamp, or slow rates would never earn a token */
    c->tokens = (int32_t)((int64_t)c->tokens + (int64_t)add);
    if (c->tokens > l->read_burst)
        c->tokens = l->read_burst;
    /* the time those tokens took, rounded up (never more than elapsed): a refill can never grant more
     * than the rate, and one that earned nothing (add == 0) left the stamp alone above */
    c->tokens_ms += (uint32_t)((add * 1000 + l->read_rate - 1) / l->read_rate);
}

/* bytes the connection may take from its socket now; 0 = it must wait */
static size_t bucket_allowance(net_conn *c)
{
    if (!c->loop->read_rate)
        return SIZE_MAX;
    bucket_refill(c);
    return c->tokens > 0 ? (size_t)c->tokens : 0;
}

static void bucket_charge(net_conn *c, size_t n)
{
    if (!c->loop->read_rate || n == 0)
        return;
    int64_t t = (int64_t)c->tokens - (int64_t)(n > NET_BURST_MAX ? NET_BURST_MAX : n);
    c->tokens = (int32_t)(t < -NET_BURST_MAX ? -NET_BURST_MAX : t);
}

/* how long an empty bucket takes to earn NET_RESUME_BYTES (or the burst, if smaller) */
static long long throttle_period_ms(const net_loop *l)
{
    uint64_t want = l->read_burst < NET_RESUME_BYTES ? (uint64_t)l->read_burst : NET_RESUME_BYTES;
    uint64_t ms = (want * 1000 + l->read_rate - 1) / l->read_rate;
    return ms ? (long long)ms : 1;
}

/* Queue the connection to be looked at one period from now. Every entry gets the same period, so the
 * queue stays in deadline order and its head is the next one due. */
static int throttled_push(net_loop *l, net_conn *c, long long due_ms)
{
    if (l->thr_len == l->thr_cap) {
        uint32_t cap = l->thr_cap ? l->thr_cap * 2 : 16;
        net_throttled *t = malloc(cap * sizeof *t);
        if (!t)
            return -1;
        for (uint32_t i = 0; i < l->thr_len; i++) {     /* unwrap the ring; slots move */
            t[i] = l->thr[(l->thr_head + i) & (l->thr_cap - 1)];
            if (t[i].c)
                t[i].c->thr_pos = i + 1;
        }
        free(l->thr);
        l->thr = t;
        l->thr_cap = cap;
        l->thr_head = 0;
    }
    uint32_t i = (l->thr_head + l->thr_len++) & (l->thr_cap - 1);
    l->thr[i] = (net_throttled){ c, due_ms };
    c->thr_pos = i + 1;
    return 0;
}

/* out of tokens: stop reading the socket until the bucket has refilled a little */
static void conn_throttle(net_conn *c)
{
    net_loop *l = c->loop;
    if (c->thr_pos)
        return;
    if (throttled_push(l, c, l->mono_ms + throttle_period_ms(l)) < 0) {
        log_err("net: out of memory throttling %s", c->peer);
        c->flags |= F_NOMEM;
        todo_add(c);
    }
}

/* a dead connection leaves a hole, skipped when it reaches the head */
static void throttled_drop(net_conn *c)
{
    if (!c->thr_pos)
        return;
    c->loop->thr[c->thr_pos - 1].c = NULL;
    c->thr_pos = 0;
}

static void throttled_revisit(net_loop *l)
{
    while (l->thr_len > 0) {
        net_throttled t = l->thr[l->thr_head];
        if (t.c && l->read_rate && t.due_ms > l->mono_ms)
            break;
        l->thr_head = (l->thr_head + 1) & (l->thr_cap - 1);
        l->thr_len--;
        net_conn *c = t.c;
        if (!c)
            continue;
        c->thr_pos = 0;
        if (l->read_rate && bucket_allowance(c) == 0) {
            conn_throttle(c);       /* still in debt (a TLS record) or the rate fell: another period */
            continue;
        }
        conn_update_events(c);      /* EPOLLIN again: the kernel reports what waits */
        if (c->tr->pending(c) > 0)
            conn_on_readable(c);    /* plaintext OpenSSL holds: no event would announce it */
    }
}

/* ---- connections ---- */

static void conn_update_events(net_conn *c)
{
    /* a connect in progress is reported as writable */
    uint32_t want = (c->flags & (F_OUT_BLOCKED | F_IN_WANTS_WRITE | F_CONNECTING) ? F_POLLOUT : 0) |
                    (c->thr_pos ? F_POLLIN_OFF : 0);
    if (want == (c->flags & (F_POLLOUT | F_POLLIN_OFF)))
        return;
    struct epoll_event ev = { .events = (want & F_POLLIN_OFF ? 0 : EPOLLIN) |
                                        (want & F_POLLOUT ? EPOLLOUT : 0), .data.ptr = c };
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        log_err("net: epoll_ctl(MOD) for %s: %s", c->peer, strerror(errno));
        return;
    }
    c->flags = (c->flags & ~(uint32_t)(F_POLLOUT | F_POLLIN_OFF)) | want;
}

static void conn_free(net_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    SSL_free(c->ssl);
    free(c->out);
    free(c);
}

static void conn_kill(net_conn *c, const char *reason)
{
    net_loop *l = c->loop;
    if (c->flags & F_DEAD)
        return;
    c->flags |= F_DEAD;
    timer_remove(c);
    throttled_drop(c);
    ip_release(c);
    /* close() takes the socket out of the epoll set (it is never dup()ed), so no EPOLL_CTL_DEL */
    l->fds[c->fd] = NULL;
    close(c->fd);
    c->fd = -1;
    l->nconns--;
    todo_add(c);
    if (!c->ud)
        return;
    log_debug("net: %s closed: %s", c->peer, reason);
    /* an outbound connection that never connected ends with its failed on_connect instead */
    if (c->flags & F_CONNECTING) {
        if (l->h.on_connect)
            l->h.on_connect(c->ud, c, 0, reason);
    } else if (l->h.on_close) {
        l->h.on_close(c->ud, c, reason);
    }
}

/* the reason a failed SSL call gives on_close; a client names what its check of the peer's certificate
 * found, in X509's words (hostname mismatch, self-signed certificate, unable to get local issuer ...) */
static void tls_error_text(const net_conn *c, int e, int r, int err_no, char *why, size_t len)
{
    unsigned long code = ERR_get_error();
    long verify = SSL_get_verify_result(c->ssl);
    if (e == SSL_ERROR_ZERO_RETURN)
        snprintf(why, len, "peer closed");
    else if (!SSL_is_server(c->ssl) && verify != X509_V_OK)
        snprintf(why, len, "TLS certificate verify failed: %s", X509_verify_cert_error_string(verify));
    else if (code)
        ERR_error_string_n(code, why, len);
    else if (e == SSL_ERROR_SYSCALL && r < 0 && err_no)
        snprintf(why, len, "%s", strerror(err_no));
    else if (e == SSL_ERROR_SYSCALL)
        snprintf(why, len, "peer closed");
    else
        snprintf(why, len, "TLS error %d", e);
}

/* After an SSL call returned r <= 0: 0 if it only has to wait for the socket (interest noted),
 * -1 if the connection is dead. */
static int tls_wait_or_fail(net_conn *c, int r, int writing)
{
    int err_no = errno;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        if (writing)
            c->flags |= F_OUT_WANTS_READ;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->flags |= writing ? F_OUT_BLOCKED : F_IN_WANTS_WRITE;
        return 0;
    }
    char why[160];
    tls_error_text(c, e, r, err_no, why, sizeof why);
    ERR_clear_error();
    conn_kill(c, why);
    return -1;
}

/* A handshake allocates some 40 KiB of short-lived state (record buffers, transcript, key exchange,
 * certificate messages) between the few KiB each session keeps, so a burst of handshakes leaves the heap
 * full of holes that glibc reuses but never hands back: idle TLS sessions then cost several KiB of RSS
 * each above what is live. malloc_trim() returns the whole free pages inside those holes to the kernel
 * (MADV_DONTNEED); it runs a while after handshakes, at most once per NET_TRIM_DELAY_MS. */
static void heap_trim_later(net_loop *l)
{
    if (!l->trim_pending) {
        l->trim_pending = 1;
        l->trim_due_ms = l->mono_ms + NET_TRIM_DELAY_MS;
    }
}

static void heap_trim_if_due(net_loop *l)
{
    if (!l->trim_pending || l->mono_ms < l->trim_due_ms)
        return;
    l->trim_pending = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* 1 done, 0 waiting, -1 dead */
static int tls_handshake(net_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r != 1)
        return tls_wait_or_fail(c, r, 0);
    c->flags &= ~F_HANDSHAKE;
    heap_trim_later(c->loop);
    log_debug("net: %s TLS established (%s, %s)", c->peer, SSL_get_version(c->ssl),
              SSL_get_cipher_name(c->ssl));
    todo_add(c);            /* output that waited for the handshake */
    return 1;
}

/* Switch the connection to TLS. A server's SSL object is made only now, from the certificate in use now;
 * a client's was made by net_conn_start_tls_client (it carries the name to verify). 0, or -1 (dead). */
static int tls_begin(net_conn *c)
{
    if (!c->ssl && (c->ssl = SSL_new(c->loop->ssl_ctx)) != NULL)
        SSL_set_accept_state(c->ssl);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        ERR_clear_error();
        conn_kill(c, "TLS setup failed");
        return -1;
    }
    c->tr = &tls_transport;
    c->flags |= F_HANDSHAKE;
    /* a client speaks first: no input will come to drive its handshake until its hello is out */
    if (!SSL_is_server(c->ssl) && tls_handshake(c) < 0)
        return -1;
    return 0;
}

/* ---- transports ---- */

static ssize_t stream_read(net_conn *c, char *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, len);
        if (n > 0) {
            bucket_charge(c, (size_t)n);
            return n;
        }
        if (n == 0) {
            conn_kill(c, "peer closed");
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        conn_kill(c, strerror(errno));
        return -1;
    }
}

static ssize_t stream_write(net_conn *c, const char *buf, size_t len)
{
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) {
            if ((size_t)n < len)
                c->flags |= F_OUT_BLOCKED;      /* the socket buffer is full */
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->flags |= F_OUT_BLOCKED;
            return 0;
        }
        conn_kill(c, strerror(errno));
        return -1;
    }
}

static size_t stream_pending(const net_conn *c)
{
    return 0;
}

static void stream_shutdown(net_conn *c)
{
}

/* bytes OpenSSL has taken from the socket so far (for the read bucket) */
static uint64_t tls_bytes_in(const net_conn *c)
{
    BIO *b = SSL_get_rbio(c->ssl);
    return b ? BIO_number_read(b) : 0;
}

/* One TLS step (handshake, then a read of up to a whole record whatever len allows). The ciphertext it
 * took from the socket is charged to the bucket. */
static ssize_t tls_read(net_conn *c, char *buf, size_t len)
{
    uint64_t before = tls_bytes_in(c);
    ssize_t n = 0;
    if (!(c->flags & F_HANDSHAKE) || tls_handshake(c) > 0) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, NET_READ_BUF);
        if (r <= 0)
            tls_wait_or_fail(c, r, 0);
        else
            n = r;
    }
    if (c->flags & F_DEAD)
        return -1;
    bucket_charge(c, (size_t)(tls_bytes_in(c) - before));
    return n;
}

static ssize_t tls_write(net_conn *c, const char *buf, size_t len)
{
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    return n > 0 ? n : tls_wait_or_fail(c, n, 1);
}

static size_t tls_pending(const net_conn *c)
{
    int n = SSL_pending(c->ssl);
    return n > 0 ? (size_t)n : 0;
}

static void tls_shutdown(net_conn *c)
{
    if (c->flags & F_HANDSHAKE)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl);     /* best effort close_notify, never waited for */
    ERR_clear_error();
}

static const net_transport tcp_transport = {
    "tcp", 1, stream_read, stream_write, stream_pending, stream_shutdown, tls_begin,
};
/* the admin socket: never TLS (net_listen_unix) */
static const net_transport unix_transport = {
    "unix", 1, stream_read, stream_write, stream_pending, stream_shutdown, NULL,
};
static const net_transport tls_transport = {
    "tls", 0, tls_read, tls_write, tls_pending, tls_shutdown, NULL,
};

/* ---- reading and writing through the transport ---- */

static void conn_on_readable(net_conn *c)
{
    net_loop *l = c->loop;
    c->flags &= ~F_IN_WANTS_WRITE;
    for (int i = 0; i < NET_READS_PER_TURN || c->tr->pending(c) > 0; i++) {
        size_t want = sizeof l->rbuf;
        /* plaintext OpenSSL already holds was charged as ciphertext: only the socket needs tokens */
        if (c->tr->pending(c) == 0) {
            size_t allowed = c->thr_pos ? 0 : bucket_allowance(c);
            if (allowed == 0) {
                conn_throttle(c);
                break;
            }
            if (allowed < want)
                want = allowed;
        }
        ssize_t n = c->tr->read(c, l->rbuf, want);
        if (n <= 0)
            break;
        c->last_input = (uint32_t)l->now;
        /* closing: input ignored; STARTTLS: plaintext after the command is discarded */
        if (!(c->flags & (F_CLOSING | F_STARTTLS)) && l->h.on_data)
            l->h.on_data(c->ud, c, l->rbuf, (size_t)n);
        if (c->flags & F_DEAD)
            break;
        if (c->tr->stream_reads && (size_t)n < want)
            break;          /* a short read drained the socket: skip the EAGAIN syscall */
    }
    if (!(c->flags & F_DEAD))
        conn_update_events(c);
}

/* Write queued output. Returns 1 when the queue is empty, 0 when it waits, -1 when the conn died. */
static int conn_flush(net_conn *c)
{
    c->flags &= ~(F_OUT_BLOCKED | F_OUT_WANTS_READ);
    while (c->out_off < c->out_len || (c->flags & F_STARTTLS)) {
        if (c->flags & (F_HANDSHAKE | F_CONNECTING))
            break;          /* resumed by tls_handshake() or conn_connected() */
        if ((c->flags & F_STARTTLS) && c->plain_left == 0) {
            c->flags &= ~F_STARTTLS;
            if (c->tr->upgrade(c) < 0)
                return -1;
            continue;
        }
        size_t len = c->out_len - c->out_off;
        if ((c->flags & F_STARTTLS) && len > c->plain_left)
            len = c->plain_left;
        ssize_t n = c->tr->write(c, c->out + c->out_off, len);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        c->out_off += (uint32_t)n;
        if (c->flags & F_STARTTLS)
            c->plain_left -= (uint32_t)n;
        if (c->flags & F_OUT_BLOCKED)
            break;
    }
    if (c->out_off == c->out_len && c->out) {
        free(c->out);
        c->out = NULL;
        c->out_off = c->out_len = c->out_cap = 0;
    }
    conn_update_events(c);
    return c->out_off == c->out_len;
}

static void conn_finish_close(net_conn *c)
{
    c->tr->shutdown(c);
    /* unread input would turn our FIN into a RST, which can destroy the output just sent */
    for (int i = 0; i < NET_READS_PER_TURN; i++)
        if (recv(c->fd, c->loop->rbuf, sizeof c->loop->rbuf, MSG_DONTWAIT) <= 0)
            break;
    conn_kill(c, "closed");
}

static void conn_overflow(net_conn *c)
{
    net_loop *l = c->loop;
    log_info("net: %s stopped reading: more than %zu bytes queued", c->peer, l->max_output);
    c->flags |= F_IN_OVERFLOW;
    if (l->h.on_overflow)
        l->h.on_overflow(c->ud, c);
    c->flags &= ~F_IN_OVERFLOW;
    if (conn_flush(c) >= 0)             /* one try for the final error */
        conn_kill(c, "output overflow");
}

/* end-of-turn work for one live connection */
static void conn_settle(net_conn *c)
{
    if (c->flags & F_NOMEM)
        conn_kill(c, "out of memory");
    else if ((c->flags & (F_CONNECTING | F_CLOSING)) == (F_CONNECTING | F_CLOSING))
        conn_kill(c, "closed before connecting");   /* nobody wants the connection any more */
    else if (c->flags & F_OVERFLOW)
        conn_overflow(c);
    else if (conn_flush(c) == 1 && (c->flags & F_CLOSING))
        conn_finish_close(c);
}

static void todo_run(net_loop *l)
{
    net_conn *c;
    while ((c = l->todo_head) != NULL) {
        l->todo_head = c->todo_next;
        if (!l->todo_head)
            l->todo_tail = NULL;
        c->todo_next = NULL;
        c->flags &= ~F_TODO;
        if (c->flags & F_DEAD)
            conn_free(c);
        else
            conn_settle(c);     /* if this kills c, c is queued again and freed when reached */
    }
}

static void peer_text(const struct sockaddr_storage *sa, char *out, size_t outlen)
{
    const void *addr = NULL;
    int family = sa->ss_family;
    struct in_addr v4;
    if (family == AF_UNIX) {
        snprintf(out, outlen, "unix");
        return;
    }
    if (family == AF_INET) {
        addr = &((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {     /* a dual-stack listener: show plain IPv4 */
            memcpy(&v4, &a6->s6_addr[12], 4);
            addr = &v4;
            family = AF_INET;
        } else {
            addr = a6;
        }
    }
    if (!addr || !inet_ntop(family, addr, out, (socklen_t)outlen))
        snprintf(out, outlen, "?");
}

static int fds_reserve(net_loop *l, int fd)
{
    if ((size_t)fd < l->nfds)
        return 0;
    size_t n = l->nfds ? l->nfds : 256;
    while (n <= (size_t)fd)
        n *= 2;
    net_conn **t = realloc(l->fds, n * sizeof *t);
    if (!t)
        return -1;
    memset(t + l->nfds, 0, (n - l->nfds) * sizeof *t);
    l->fds = t;
    l->nfds = n;
    return 0;
}

/* A connection on fd (peer sa), in the epoll set with these events and counted as live. NULL when that
 * fails (logged, fd closed). */
static net_conn *conn_new(net_loop *l, int fd, const struct sockaddr_storage *sa, uint32_t events)
{
    net_conn *c = calloc(1, sizeof *c);
    if (!c || fds_reserve(l, fd) < 0) {
        log_err("net: out of memory for a connection");
        free(c);
        close(fd);
        return NULL;
    }
    c->loop = l;
    c->fd = fd;
    c->tr = sa->ss_family == AF_UNIX ? &unix_transport : &tcp_transport;
    c->last_input = (uint32_t)l->now;
    c->tokens = l->read_rate ? l->read_burst : NET_BURST_MAX;    /* clipped to the burst when used */
    c->tokens_ms = (uint32_t)l->mono_ms;
    peer_text(sa, c->peer, sizeof c->peer);
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_err("net: epoll_ctl(ADD): %s", strerror(errno));
        free(c);
        close(fd);
        return NULL;
    }
    l->fds[fd] = c;
    l->nconns++;
    return c;
}

static void conn_open(net_loop *l, int fd, const struct sockaddr_storage *sa, const net_listener *ls)
{
    net_conn *c = conn_new(l, fd, sa, EPOLLIN);
    if (!c)
        return;
    /* no ud yet: the conn_kill()s below do not call on_close */
    if (ls->tls && !l->ssl_ctx) {
        log_err("net: TLS listener without a certificate; connection from %s dropped", c->peer);
        conn_kill(c, "no certificate");
        return;
    }
    if (ls->tls && tls_begin(c) < 0) {
        log_err("net: SSL_new failed for %s", c->peer);
        return;
    }
    if (l->max_per_ip > 0) {
        unsigned char addr[16];
        if (ip_key_of_sockaddr(sa, addr) == 0) {
            if (ip_add(l, addr) < 0) {
                log_err("net: out of memory counting connections from %s", c->peer);
                conn_kill(c, "out of memory");
                return;
            }
            c->flags |= F_PER_IP;
        }
    }
    void *ud = l->h.on_open ? l->h.on_open(l->h.ud, c, ls->tag) : NULL;
    if (!ud) {
        conn_kill(c, "refused");    /* no ud: on_close is not called */
        return;
    }
    c->ud = ud;
    /* with TCP_DEFER_ACCEPT the first bytes are already here: often answered in this very turn */
    conn_on_readable(c);
}

/* ---- listeners ---- */

static void listeners_interest(net_loop *l, uint32_t events)
{
    for (int i = 0; i < l->nlisteners; i++) {
        if (l->listeners[i].fd < 0)
            continue;
        struct epoll_event ev = { .events = events, .data.u64 = ((uint64_t)i << 1) | 1 };
        if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->listeners[i].fd, &ev) < 0)
            log_err("net: epoll_ctl(MOD) for a listener: %s", strerror(errno));
    }
}

/* is this peer address already at max_per_ip? (logged) */
static int per_ip_full(net_loop *l, const struct sockaddr_storage *sa)
{
    unsigned char addr[16];
    char text[INET6_ADDRSTRLEN];
    if (l->max_per_ip <= 0 || ip_key_of_sockaddr(sa, addr) < 0 ||
        ip_connections(l, addr) < (uint32_t)l->max_per_ip)
        return 0;
    peer_text(sa, text, sizeof text);
    log_debug("net: %s already has %d connections, the per-address limit: refused", text, l->max_per_ip);
    if (log_allowed(&l->last_per_ip_log, l->now))
        log_warn("net: %s reached the limit of %d connections per address: refusing more", text,
                 l->max_per_ip);
    return 1;
}

static void listener_accept(net_loop *l, const net_listener *ls)
{
    for (int i = 0; i < NET_ACCEPTS_PER_TURN && ls->fd >= 0; i++) {     /* on_open may stop the loop */
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(ls->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
                return;
            case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
            case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
            case EPERM:
                continue;   /* that one connection failed; the next may not */
            case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
                /* level-triggered would spin on the waiting connection: mute listeners a second */
                if (log_allowed(&l->last_emfile_log, l->now))
                    log_warn("net: accept: %s; not accepting for a second", strerror(errno));
                l->accept_paused_until = l->now + 1;
                listeners_interest(l, 0);
                return;
            default:
                log_err("net: accept: %s", strerror(errno));
                return;
            }
        }
        /* the admin socket stays usable on a full server: its users are few, and the layer above bounds them */
        if (sa.ss_family != AF_UNIX && l->max_connections > 0 && l->nconns >= l->max_connections) {
            if (log_allowed(&l->last_full_log, l->now))
                log_warn("net: %d connections, the limit: refusing new ones", l->nconns);
            close(fd);
            continue;
        }
        if (per_ip_full(l, &sa)) {
            close(fd);
            continue;
        }
        conn_open(l, fd, &sa, ls);
    }
}

static void listeners_close(net_loop *l)
{
    for (int i = 0; i < l->nlisteners; i++) {
        if (l->listeners[i].fd < 0)
            continue;
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->listeners[i].fd, NULL);
        close(l->listeners[i].fd);
        l->listeners[i].fd = -1;
    }
}

/* fd becomes listener number nlisteners: into epoll (muted while accepting is paused). Closes fd on error. */
static int listener_add(net_loop *l, int fd, int tls, int tag)
{
    int i = l->nlisteners;
    struct epoll_event ev = { .events = l->accept_paused_until ? 0 : EPOLLIN,
                              .data.u64 = ((uint64_t)i << 1) | 1 };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_err("net: epoll_ctl(ADD) for a listener: %s", strerror(errno));
        close(fd);
        return -1;
    }
    l->listeners[i] = (net_listener){ fd, tls, tag };
    l->nlisteners++;
    return 0;
}

/* addr:port as a socket address. 0, or -1 (logged) when addr is not a numeric IPv4 or IPv6 address */
static int sockaddr_of(const char *addr, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof *s4;
    } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
    } else {
        log_err("net: '%s' is not an IPv4 or IPv6 address", addr);
        return -1;
    }
    return 0;
}

int net_listen(net_loop *l, const char *addr, int port, int tls, int defer_accept, int tag)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (!addr || !*addr)
        addr = "0.0.0.0";
    if (port < 0 || port > 65535) {
        log_err("net: bad port %d", port);
        return -1;
    }
    if (l->nlisteners == NET_MAX_LISTENERS) {
        log_err("net: too many listeners");
        return -1;
    }
    if (sockaddr_of(addr, port, &ss, &sslen) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_err("net: socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        log_warn("net: SO_REUSEADDR: %s", strerror(errno));
    /* accepted sockets inherit TCP_NODELAY from the listener: one setsockopt() fewer per connection.
     * Output is already coalesced per loop turn, so Nagle would only add delay. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        log_warn("net: TCP_NODELAY on port %d: %s", port, strerror(errno));
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, SOMAXCONN) < 0) {
        log_err("net: listen on [%s]:%d: %s", addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    if (defer_accept > 0 &&
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_accept, sizeof defer_accept) < 0)
        log_warn("net: TCP_DEFER_ACCEPT on port %d: %s", port, strerror(errno));
    if (listener_add(l, fd, tls, tag) < 0)
        return -1;
    log_info("net: listening on [%s]:%d%s", addr, port, tls ? " (direct TLS)" : "");
    return 0;
}

/* A socket file left by a server that is gone is removed; one that still accepts belongs to a running
 * server and stays, and anything that is not a socket is never touched. 0 when path is free now. */
static int unix_path_free(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        log_err("net: %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        log_err("net: %s exists and is not a socket: not touching it", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_err("net: socket: %s", strerror(errno));
        return -1;
    }
    int r = connect(fd, (const struct sockaddr *)sa, sizeof *sa), e = errno;
    close(fd);
    if (r == 0 || e == EAGAIN) {    /* EAGAIN: a listener with a full backlog, alive all the same */
        log_err("net: %s is in use by a running process", path);
        return -1;
    }
    if (e != ECONNREFUSED && e != ENOENT) {
        log_err("net: %s: %s", path, strerror(e));
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        log_err("net: cannot remove the stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int net_listen_unix(net_loop *l, const char *path, int tag)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!path || !*path || strlen(path) >= sizeof sa.sun_path) {
        log_err("net: Unix socket path '%.200s' is empty or too long", path ? path : "");
        return -1;
    }
    if (l->nlisteners == NET_MAX_LISTENERS) {
        log_err("net: too many listeners");
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (unix_path_free(path, &sa) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_err("net: socket: %s", strerror(errno));
        return -1;
    }
    /* the umask keeps the file private from the instant it exists; chmod whatever the umask was */
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof sa), e = errno;
    umask(old);
    if (r < 0) {
        log_err("net: bind %s: %s", path, strerror(e));
        close(fd);
        return -1;
    }
    if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
        log_err("net: %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (listener_add(l, fd, 0, tag) < 0) {
        unlink(path);
        return -1;
    }
    log_info("net: listening on %s (Unix socket)", path);
    return 0;
}

/* ---- outbound connections ---- */

/* The kernel has an answer for a connect in progress (any event on the socket): on_connect either way. */
static void conn_connected(net_conn *c)
{
    net_loop *l = c->loop;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        conn_kill(c, strerror(err));
        return;
    }
    c->flags &= ~F_CONNECTING;
    timer_remove(c);                /* the connect timeout: the timer is the caller's from now on */
    c->last_input = (uint32_t)l->now;
    log_debug("net: connected to %s", c->peer);
    if (l->h.on_connect)
        l->h.on_connect(c->ud, c, 1, "connected");
    if (!(c->flags & F_DEAD))
        todo_add(c);                /* output queued before the connect, and EPOLLOUT off */
}

net_conn *net_connect(net_loop *l, const char *addr, int port, int timeout_secs, void *ud)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (!ud || !addr || port <= 0 || port > 65535) {
        log_err("net: connect to [%s]:%d: no address, a bad port or no user data", addr ? addr : "", port);
        return NULL;
    }
    if (sockaddr_of(addr, port, &ss, &sslen) < 0)
        return NULL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
        log_err("net: socket: %s", strerror(errno));
        return NULL;
    }
    /* as on the listeners: output is coalesced per loop turn already, Nagle would only add delay */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        log_warn("net: TCP_NODELAY to [%s]:%d: %s", addr, port, strerror(errno));
    if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS) {
        log_err("net: connect to [%s]:%d: %s", addr, port, strerror(errno));
        close(fd);
        return NULL;
    }
    net_conn *c = conn_new(l, fd, &ss, EPOLLIN | EPOLLOUT);
    if (!c)
        return NULL;
    c->ud = ud;
    c->flags |= F_OUTBOUND | F_CONNECTING | F_POLLOUT;
    /* one second more: the heap counts whole seconds, so the wait is never shorter than asked; and the
     * clock read now, not at the start of the turn (or the loop's creation), for the same reason */
    clock_update(l);
    if (timer_arm(c, l->now + (timeout_secs > 0 ? timeout_secs : NET_CONNECT_TIMEOUT) + 1) < 0) {
        c->flags |= F_NOMEM;        /* reported from the loop, as every outcome is */
        todo_add(c);
    }
    return c;
}

/* ---- TLS context and the self-signed certificate ---- */

static int tls_log_error(const char *what)
{
    unsigned long code = ERR_get_error();
    char buf[160];
    if (code)
        ERR_error_string_n(code, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "unknown error");
    log_err("tls: %s: %s", what, buf);
    ERR_clear_error();
    return -1;
}

/* write a key (mode 0600) or a certificate next to path, then rename over it */
static int pem_save(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        log_err("tls: path too long: %s", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        log_err("tls: %s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = NULL;
    if (fchmod(fd, mode) < 0 || !(f = fdopen(fd, "w"))) {
        log_err("tls: %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    if (!ok)
        tls_log_error(tmp);
    if (fflush(f) != 0 || fsync(fileno(f)) < 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) < 0) {
        log_err("tls: could not write %s", path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int cert_add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int cert_add_names(X509 *x, const char *const *names)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    int ok = gens != NULL;
    for (size_t i = 0; ok && names[i]; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!g || !s || !ASN1_STRING_set(s, names[i], -1)) {
            GENERAL_NAME_free(g);
            ASN1_IA5STRING_free(s);
            ok = 0;
            break;
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
        if (!sk_GENERAL_NAME_push(gens, g)) {
            GENERAL_NAME_free(g);
            ok = 0;
        }
    }
    if (ok)
        ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(gens);
    return ok ? 0 : -1;
}

static int cert_generate(const char *cert_path, const char *key_path, const char *const *names)
{
    static const char *const fallback[] = { "localhost", NULL };
    if (!names || !names[0])
        names = fallback;
    int rc = -1;
    X509 *x = NULL;
    BIGNUM *serial = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key)
        return tls_log_error("generating a P-256 key");
    if (!(x = X509_new()) || !(serial = BN_new()) ||
        !X509_set_version(x, 2) ||
        !BN_rand(serial, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 3650, 0, NULL) ||
        !X509_set_pubkey(x, key) ||
        !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                                    (const unsigned char *)names[0], -1, -1, 0) ||
        !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
        cert_add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        cert_add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 ||
        cert_add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
        cert_add_names(x, names) < 0 ||
        !X509_sign(x, key, EVP_sha256())) {
        tls_log_error("building the self-signed certificate");
        goto out;
    }
    if (pem_save(key_path, 0600, key, NULL) < 0 || pem_save(cert_path, 0644, NULL, x) < 0)
        goto out;
    log_info("tls: generated a self-signed certificate for %s in %s", names[0], cert_path);
    rc = 0;
out:
    BN_free(serial);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/* ALPN (XEP-0368): pick "xmpp-client" when the client offers it. A client that offers only other protocols
 * is answered without ALPN rather than with RFC 7301's fatal alert, as a server without ALPN would: it is
 * then talking to an XMPP port, and the stream header is where a wrong guess shows (HARDENING.md). */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "xmpp-client";
    const size_t n = sizeof ours - 1;
    for (unsigned int i = 0; i < inlen; ) {
        unsigned int len = in[i++];
        if (len > inlen - i)
            break;                      /* malformed list: OpenSSL checks it first, but stay in bounds */
        if (len == n && memcmp(in + i, ours, n) == 0) {
            *out = in + i;
            *outlen = (unsigned char)len;
            return SSL_TLSEXT_ERR_OK;
        }
        i += len;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Mozilla's "intermediate" server profile: TLS 1.2 and 1.3; for TLS 1.2 only ECDHE key exchange with
 * AEAD ciphers (no CBC, no RSA key exchange, no SHA-1 MAC); groups X25519, P-256, P-384. 0 or -1 (logged).
 * The client context uses it too: what the server side accepts is what the client side offers. */
static int tls_ctx_profile(SSL_CTX *ctx)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return tls_log_error("minimum protocol version");
    /* RELEASE_BUFFERS: idle sessions drop their 16+ KiB record buffers */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* IGNORE_UNEXPECTED_EOF: XMPP ends streams with </stream:stream>, many clients then just close.
     * SERVER_PREFERENCE, unlike Mozilla's "client chooses": every suite here is strong, and ChaCha20 first
     * keeps idle sessions smallest (below), which the client's order would give away. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    /* TLS 1.3 server preference, all AEADs: ChaCha20-Poly1305, then AES-128-GCM, then AES-256-GCM.
     * A session keeps a cipher context each way for its whole life, and the suite sets their size:
     * per idle session ChaCha20-Poly1305 holds about 430 B less than AES-256-GCM/SHA-384 (OpenSSL's
     * default first choice) and AES-128-GCM about 200 B less. ChaCha20 is also the faster suite on the
     * CPUs without AES instructions that small boxes often have; elsewhere stanzas are too small to care. */
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:"
                                      "TLS_AES_256_GCM_SHA384") != 1)
        return tls_log_error("ciphersuites");
    /* TLS 1.2, the same order; ECDSA suites serve the generated P-256 certificate, RSA ones an RSA one */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                                     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384") != 1)
        return tls_log_error("cipher list");
    if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1)
        return tls_log_error("groups");
    return 0;
}

/* A complete server context from cert and key (or data_dir's, generated if missing), or NULL (logged).
 * Setup and reload share it, so a reloaded context has exactly the settings of the first one. */
static SSL_CTX *tls_ctx_build(const char *cert, const char *key, const char *data_dir,
                              const char *const *names)
{
    char cert_path[PATH_MAX], key_path[PATH_MAX];
    if ((!cert || !*cert) && (!key || !*key)) {
        const char *dir = data_dir && *data_dir ? data_dir : ".";
        if (snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir) >= (int)sizeof cert_path ||
            snprintf(key_path, sizeof key_path, "%s/key.pem", dir) >= (int)sizeof key_path) {
            log_err("tls: data_dir path too long");
            return NULL;
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            log_err("tls: %s: %s", dir, strerror(errno));
            return NULL;
        }
        struct stat st;
        if ((stat(cert_path, &st) < 0 || stat(key_path, &st) < 0) &&
            cert_generate(cert_path, key_path, names) < 0)
            return NULL;
        cert = cert_path;
        key = key_path;
    } else if (!cert || !*cert || !key || !*key) {
        log_err("tls: both a certificate and a key are needed");
        return NULL;
    }

    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_log_error("SSL_CTX_new");
        return NULL;
    }
    if (tls_ctx_profile(ctx) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
    /* SNI: any server_name is accepted and the one certificate is served (no callback, no selection) */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        log_err("tls: cannot load certificate %s", cert);
        tls_log_error("certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        log_err("tls: cannot load key %s", key);
        tls_log_error("key");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_err("tls: key %s does not match certificate %s", key, cert);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* SSL objects hold a reference to the context they were made from: the old one lives on until the
 * last of its sessions is freed */
static void tls_ctx_swap(net_loop *l, SSL_CTX *ctx)
{
    SSL_CTX_free(l->ssl_ctx);
    l->ssl_ctx = ctx;
}

int net_tls_setup(net_loop *l, const char *cert, const char *key, const char *data_dir,
                  const char *const *names)
{
    SSL_CTX *ctx = tls_ctx_build(cert, key, data_dir, names);
    if (!ctx)
        return -1;
    tls_ctx_swap(l, ctx);
    return 0;
}

int net_tls_reload(net_loop *l, const char *cert, const char *key, const char *data_dir,
                   const char *const *names)
{
    SSL_CTX *ctx = tls_ctx_build(cert, key, data_dir, names);
    if (!ctx) {
        log_err("tls: reload failed; new connections keep the certificate in use");
        return -1;
    }
    tls_ctx_swap(l, ctx);
    log_info("tls: certificate reloaded; it applies to connections and STARTTLS from now on");
    return 0;
}

int net_tls_available(const net_loop *l)
{
    return l->ssl_ctx != NULL;
}

/* ---- the client side of TLS ---- */

/* One per loop, made on first use: the server's protocol profile, and peers verified, against the
 * system's trust store unless a session names its own CA file. NULL (logged) */
static SSL_CTX *tls_client_ctx(net_loop *l)
{
    if (l->client_ctx)
        return l->client_ctx;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_log_error("SSL_CTX_new (client)");
        return NULL;
    }
    if (tls_ctx_profile(ctx) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* without one, sessions that name a CA file still work; the others fail to verify, as they should */
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        tls_log_error("the system's trust store");
    l->client_ctx = ctx;
    return ctx;
}

/* this session trusts the CAs in ca_file and nothing else. 0 or -1 */
static int tls_trust_only(SSL *s, const char *ca_file)
{
    X509_STORE *store = X509_STORE_new();
    if (!store || X509_STORE_load_file(store, ca_file) != 1 || SSL_set0_verify_cert_store(s, store) != 1) {
        X509_STORE_free(store);
        return -1;
    }
    return 0;
}

/* The peer must present a certificate for name, chained to a trusted CA. A host name also goes out as
 * SNI; an address literal is matched against the certificate's IP entries instead (SNI takes no
 * addresses, RFC 6066). */
static int tls_expect_name(SSL *s, const char *name)
{
    unsigned char ip[16];
    if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), name) == 1 ? 0 : -1;
    SSL_set_hostflags(s, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set_tlsext_host_name(s, name) == 1 && SSL_set1_host(s, name) == 1 ? 0 : -1;
}

/* a client session for name, ready for tls_begin; NULL (logged) */
static SSL *tls_client_new(net_loop *l, const char *name, const char *ca_file)
{
    SSL_CTX *ctx = tls_client_ctx(l);
    SSL *s = ctx ? SSL_new(ctx) : NULL;
    if (!s) {
        tls_log_error("SSL_new (client)");
        return NULL;
    }
    SSL_set_connect_state(s);
    if (tls_expect_name(s, name) < 0 || (ca_file && tls_trust_only(s, ca_file) < 0)) {
        log_err("tls: cannot verify '%.200s'%s%.200s", name, ca_file ? " against " : "", ca_file ? ca_file : "");
        tls_log_error("client session");
        SSL_free(s);
        return NULL;
    }
    return s;
}

/* ---- the loop ---- */

static void options_apply(net_loop *l, const net_options *o)
{
    static const net_options none;
    if (!o)
        o = &none;
    l->max_output = o->max_output ? o->max_output : (size_t)1 << 20;
    if (l->max_output > NET_MAX_OUTPUT_CAP)
        l->max_output = NET_MAX_OUTPUT_CAP;
    l->max_connections = o->max_connections;
    l->max_per_ip = o->max_per_ip > 0 ? o->max_per_ip : 0;
    l->read_rate = (uint32_t)(o->read_rate > NET_RATE_MAX ? NET_RATE_MAX : o->read_rate);
    size_t burst = o->read_burst ? o->read_burst : l->read_rate;
    l->read_burst = (int32_t)(burst > NET_BURST_MAX ? NET_BURST_MAX : burst);
    if (l->read_rate && l->read_burst < 1)
        l->read_burst = 1;
}

net_loop *net_loop_new(const net_handlers *h, const net_options *o)
{
    net_loop *l = calloc(1, sizeof *l);
    if (!l) {
        log_err("net: out of memory");
        return NULL;
    }
    l->h = *h;
    l->sigfd = -1;
    clock_update(l);
    if (RAND_bytes((unsigned char *)l->ip_key, sizeof l->ip_key) != 1) {
        ERR_clear_error();      /* weaker but working: the table stays correct, only guessable */
        l->ip_key[0] = (uint64_t)l->now_ms ^ (uint64_t)(uintptr_t)l;
        l->ip_key[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
    }
    options_apply(l, o);

    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        log_err("net: epoll_create1: %s", strerror(errno));
        free(l);
        return NULL;
    }
    /* signals arrive as readable data in the loop, never in a handler context */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ((uint64_t)EV_SIGNAL_INDEX << 1) | 1 };
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
        (l->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->sigfd, &ev) < 0) {
        log_err("net: signals: %s", strerror(errno));
        net_loop_free(l);
        return NULL;
    }
    signal(SIGPIPE, SIG_IGN);       /* OpenSSL writes with write(), not send(MSG_NOSIGNAL) */
    return l;
}

void net_loop_free(net_loop *l)
{
    if (!l)
        return;
    listeners_close(l);
    /* killed connections waiting for the end of the turn; live ones are in fds[] */
    net_conn *c;
    while ((c = l->todo_head) != NULL) {
        l->todo_head = c->todo_next;
        if (c->flags & F_DEAD)
            conn_free(c);
    }
    for (size_t i = 0; i < l->nfds; i++)
        if (l->fds[i])
            conn_free(l->fds[i]);
    free(l->fds);
    free(l->heap);
    free(l->thr);
    ip_table_free(l);
    SSL_CTX_free(l->ssl_ctx);
    SSL_CTX_free(l->client_ctx);
    if (l->sigfd >= 0)
        close(l->sigfd);
    if (l->epfd >= 0)
        close(l->epfd);
    free(l);
}

static void signals_read(net_loop *l)
{
    struct signalfd_siginfo si;
    while (read(l->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        log_debug("net: signal %u", si.ssi_signo);
        if (l->h.on_signal)
            l->h.on_signal(l->h.ud, (int)si.ssi_signo);
    }
}

static int loop_timeout(const net_loop *l)
{
    if (l->todo_head)
        return 0;
    long long ms = l->stopping ? 100 : 1000;
    if (l->heap_len > 0) {
        long long due = (long long)l->heap[0].when * 1000 - l->now_ms;
        if (due < ms)
            ms = due < 0 ? 0 : due;
    }
    if (l->thr_len > 0) {       /* the head is the first due (or a hole, dropped at once) */
        const net_throttled *t = &l->thr[l->thr_head];
        long long due = t->c && l->read_rate ? t->due_ms - l->mono_ms : 0;
        if (due < ms)
            ms = due < 0 ? 0 : due;
    }
    if (l->trim_pending && l->trim_due_ms - l->mono_ms < ms)
        ms = l->trim_due_ms > l->mono_ms ? l->trim_due_ms - l->mono_ms : 0;
    return (int)ms;
}

/* while stopping: is any output still on its way? */
static int output_pending(const net_loop *l)
{
    if (l->todo_head)
        return 1;
    for (size_t i = 0; i < l->nfds; i++) {
        const net_conn *c = l->fds[i];
        if (c && (c->out_off < c->out_len || (c->flags & F_CLOSING)))
            return 1;
    }
    return 0;
}

static void dispatch(net_loop *l, const struct epoll_event *ev)
{
    if (ev->data.u64 & 1) {
        uint64_t i = ev->data.u64 >> 1;
        if (i == EV_SIGNAL_INDEX)
            signals_read(l);
        else if (i >= EV_WATCH_INDEX && i < EV_WATCH_INDEX + (uint64_t)l->nwatches)
            l->watches[i - EV_WATCH_INDEX].ready(l->watches[i - EV_WATCH_INDEX].ud);
        else if (i < (uint64_t)l->nlisteners && l->listeners[i].fd >= 0 && !l->stopping)
            listener_accept(l, &l->listeners[i]);
        return;
    }
    net_conn *c = ev->data.ptr;
    if (c->flags & F_DEAD)
        return;             /* killed earlier this turn; freed at its end */
    if (c->flags & F_CONNECTING) {
        conn_connected(c);  /* input that came with it is still there next turn (level-triggered) */
        return;
    }
    if ((ev->events & EPOLLOUT) || ((ev->events & EPOLLIN) && (c->flags & F_OUT_WANTS_READ)))
        todo_add(c);
    if (c->thr_pos) {
        /* not reading: a reset would be reported every turn (level-triggered), so it ends the
         * connection now; what the peer sent and was not read yet is lost with it, as with any reset */
        if (ev->events & (EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0)
                err = ECONNRESET;
            conn_kill(c, strerror(err));
        }
        return;
    }
    if ((ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
        ((ev->events & EPOLLOUT) && (c->flags & F_IN_WANTS_WRITE)))
        conn_on_readable(c);
}

/* the loop wakes at least once a second (loop_timeout), so a second's resolution needs no timer of its own */
static void alarm_fire(net_loop *l)
{
    if (!l->alarm_at || l->now < l->alarm_at || l->stopping)
        return;
    l->alarm_at = 0;
    if (l->h.on_alarm)
        l->h.on_alarm(l->h.ud, l->now);
}

void net_loop_alarm(net_loop *l, int secs)
{
    time_t at = l->now + (secs > 0 ? secs : 0);
    if (!l->alarm_at || at < l->alarm_at)
        l->alarm_at = at;
}

int net_loop_run(net_loop *l)
{
    struct epoll_event evs[NET_MAX_EVENTS];
    for (;;) {
        clock_update(l);
        if (l->stopping && (!output_pending(l) || l->mono_ms >= l->stop_at_ms))
            break;
        if (l->accept_paused_until && l->now >= l->accept_paused_until) {
            l->accept_paused_until = 0;
            listeners_interest(l, EPOLLIN);
        }
        int n = epoll_wait(l->epfd, evs, NET_MAX_EVENTS, loop_timeout(l));
        if (n < 0 && errno != EINTR) {
            log_err("net: epoll_wait: %s", strerror(errno));
            return -1;
        }
        clock_update(l);
        for (int i = 0; i < n; i++)
            dispatch(l, &evs[i]);
        throttled_revisit(l);
        timers_fire(l);
        alarm_fire(l);
        todo_run(l);
        heap_trim_if_due(l);
    }
    return 0;
}

int net_watch(net_loop *l, int fd, void (*ready)(void *ud), void *ud)
{
    if (l->nwatches >= NET_MAX_WATCHES)
        return -1;
    int i = l->nwatches;
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ((uint64_t)(EV_WATCH_INDEX + i) << 1) | 1 };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_err("net: watch fd %d: %s", fd, strerror(errno));
        return -1;
    }
    l->watches[i].fd = fd;
    l->watches[i].ready = ready;
    l->watches[i].ud = ud;
    l->nwatches++;
    return 0;
}

void net_loop_stop(net_loop *l)
{
    if (l->stopping)
        return;
    clock_update(l);
    l->stopping = 1;
    l->stop_at_ms = l->mono_ms + NET_STOP_GRACE_MS;
    listeners_close(l);
}

time_t net_now(const net_loop *l)
{
    return l->now;
}

void net_set_options(net_loop *l, const net_options *o)
{
    int had_per_ip = l->max_per_ip > 0;
    uint32_t rate = l->read_rate;
    int32_t burst = l->read_burst;
    options_apply(l, o);
    if (had_per_ip != (l->max_per_ip > 0))
        ip_table_rebuild(l);
    if (rate != l->read_rate || burst != l->read_burst)     /* throttled ones: look again next turn */
        for (uint32_t i = 0; i < l->thr_len; i++)
            l->thr[(l->thr_head + i) & (l->thr_cap - 1)].due_ms = l->mono_ms;
    log_info("net: limits now: %zu bytes queued, %d connections, %d per address, %u bytes/s (burst %d)",
             l->max_output, l->max_connections, l->max_per_ip, (unsigned)l->read_rate,
             l->read_rate ? (int)l->read_burst : 0);
}

/* ---- connection calls made by the layers above ---- */

/* room for need unsent bytes; the queue never grows past limit */
static int out_reserve(net_conn *c, size_t need, size_t limit)
{
    if (c->out_cap - c->out_off >= need)
        return 0;
    size_t queued = c->out_len - c->out_off;
    if (c->out_cap >= need) {       /* enough room once the sent part is dropped */
        memmove(c->out, c->out + c->out_off, queued);
    } else {
        size_t cap = c->out_cap ? (size_t)c->out_cap * 2 : NET_OUT_MIN;
        while (cap < need)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        char *out = malloc(cap);
        if (!out)
            return -1;
        if (queued)
            memcpy(out, c->out + c->out_off, queued);
        free(c->out);
        c->out = out;
        c->out_cap = (uint32_t)cap;
    }
    c->out_off = 0;
    c->out_len = (uint32_t)queued;
    return 0;
}

int net_conn_write(net_conn *c, const char *data, size_t len)
{
    net_loop *l = c->loop;
    if (c->flags & (F_DEAD | F_CLOSING | F_NOMEM))
        return -1;
    int final = (c->flags & F_IN_OVERFLOW) != 0;
    if ((c->flags & F_OVERFLOW) && !final)
        return -1;          /* being cut off: nothing more is queued */
    if (len == 0)
        return 0;
    size_t queued = c->out_len - c->out_off;
    size_t limit = l->max_output + (final ? NET_OVERFLOW_SLACK : 0);
    if (queued > limit || len > limit - queued) {   /* max_output may have been lowered since */
        if (!final) {
            c->flags |= F_OVERFLOW;
            todo_add(c);
        }
        return -1;
    }
    if (out_reserve(c, queued + len, limit) < 0) {
        log_err("net: out of memory queueing %zu bytes for %s", len, c->peer);
        c->flags |= F_NOMEM;
        todo_add(c);
        return -1;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += (uint32_t)len;
    todo_add(c);
    return 0;
}

/* TLS begins once what is queued now has gone out in plaintext */
static void tls_after_queue(net_conn *c)
{
    c->plain_left = c->out_len - c->out_off;   /* the <proceed/> and anything before it */
    c->flags |= F_STARTTLS;
    todo_add(c);
}

static int tls_can_start(const net_conn *c)
{
    return !(c->flags & (F_DEAD | F_CLOSING | F_STARTTLS)) && c->tr->upgrade;
}

int net_conn_starttls(net_conn *c)
{
    if (!tls_can_start(c) || !c->loop->ssl_ctx)
        return -1;
    tls_after_queue(c);
    return 0;
}

int net_conn_start_tls_client(net_conn *c, const char *verify_name, const char *ca_file)
{
    if (!tls_can_start(c) || !verify_name || !*verify_name)
        return -1;
    SSL *s = tls_client_new(c->loop, verify_name, ca_file);
    if (!s)
        return -1;
    c->ssl = s;
    tls_after_queue(c);
    return 0;
}

int net_conn_is_tls(const net_conn *c)
{
    return c->tr == &tls_transport;
}

int net_conn_tls_verified(const net_conn *c)
{
    return c->tr == &tls_transport && !(c->flags & F_HANDSHAKE) && !SSL_is_server(c->ssl) &&
           SSL_get0_peer_certificate(c->ssl) && SSL_get_verify_result(c->ssl) == X509_V_OK;
}

void net_conn_close(net_conn *c)
{
    if (c->flags & (F_DEAD | F_CLOSING))
        return;
    c->flags |= F_CLOSING;
    /* a peer that never reads cannot hold the connection open */
    if (timer_arm(c, c->loop->now + NET_CLOSE_GRACE) < 0)
        c->flags |= F_NOMEM;
    todo_add(c);
}

void net_conn_set_timer(net_conn *c, int secs)
{
    if (c->flags & (F_DEAD | F_CLOSING | F_CONNECTING))    /* the slot holds a deadline of ours */
        return;
    if (secs < 0)
        timer_remove(c);
    else if (timer_arm(c, c->loop->now + secs) < 0) {
        c->flags |= F_NOMEM;        /* a session without its timer could linger forever */
        todo_add(c);
    }
}

time_t net_conn_last_input(const net_conn *c)
{
    return (time_t)c->last_input;
}

const char *net_conn_peer(const net_conn *c)
{
    return c->peer;
}

int net_conn_is_local(const net_conn *c)
{
    return c->tr == &unix_transport;
}

int net_conn_peer_cred(const net_conn *c, uid_t *uid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (c->tr != &unix_transport || (c->flags & F_DEAD) ||
        getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof cred)
        return -1;
    *uid = cred.uid;
    return 0;
}

const char *net_conn_tls_version(const net_conn *c)
{
    return c->tr == &tls_transport ? SSL_get_version(c->ssl) : NULL;
}


void *net_conn_ud(const net_conn *c)
{
    return c->ud;
}

/* The struct, the queue's allocation, the timer and throttled-queue slots. The SSL object (several KiB,
 * shrunk by SSL_MODE_RELEASE_BUFFERS when idle) is not counted: OpenSSL offers no per-object figure. */
size_t net_conn_memory(const net_conn *c)
{
    return sizeof *c + c->out_cap + (c->timer_pos ? sizeof(net_timer) : 0) +
           (c->thr_pos ? sizeof(net_throttled) : 0);
}
