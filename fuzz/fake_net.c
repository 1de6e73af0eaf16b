/* fake_net.c - every function of net_epoll.h, in memory: no sockets, no epoll, no TLS. The fuzz harness
 * drives it through fake_net.h. It keeps net_epoll's promises that server.c relies on: on_close is never
 * called from inside a call the server made, writes after net_conn_close are refused, a closing
 * connection gets no more input, output past max_output leads to on_overflow and then on_close, and a
 * net_conn stays valid until the end of the turn in which it was closed. Output is counted, and the bytes
 * each connection accepted are kept (up to fake_capture_limit) for fake_output(). */
#include <stdlib.h>
#include <string.h>

#include "fake_net.h"

#define FAKE_MAX_CONNS      16
#define FAKE_MAX_LISTENERS  4
#define FAKE_OVERFLOW_SLACK 4096
#define FAKE_EPOCH          1700000000
#define FAKE_CAPTURE_DEFAULT (4u << 20)

int fake_tls_available = 1;
int fake_starttls_result = 0;
int fake_tls_setup_result = 0;
size_t fake_capture_limit = FAKE_CAPTURE_DEFAULT;

struct net_conn {
    net_loop *loop;
    void *ud;
    int dead, closing, overflow, in_overflow, tls, reading;
    int timer_armed;
    time_t timer_at, last_input;
    size_t queued;              /* unread output */
    unsigned id;
    char *out;                  /* captured output since the last fake_output_clear, NUL-terminated */
    size_t out_len, out_cap, out_dropped;
};

struct net_loop {
    net_handlers h;
    net_options o;
    time_t now;
    time_t alarm_at;            /* net_loop_alarm (0: not armed) */
    int tls_ready, stopped;
    int listener_tls[FAKE_MAX_LISTENERS], nlisteners, listener_tag[FAKE_MAX_LISTENERS];
    net_conn *conns[FAKE_MAX_CONNS];
    size_t written;
    unsigned next_id;
};

static net_loop *the_loop;     /* the harness drives one loop at a time */

static void conn_free(net_conn *c) {
    if (!c) return;
    free(c->out);
    free(c);
}

/* Keep what the server wrote, up to fake_capture_limit bytes since the last clear; the rest is counted in
 * out_dropped. Memory grows by doubling, so a connection holds at most about twice the limit. */
static void capture(net_conn *c, const char *data, size_t len) {
    size_t room = c->out_len < fake_capture_limit ? fake_capture_limit - c->out_len : 0;
    size_t take = len < room ? len : room;
    if (take && c->out_len + take + 1 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + take + 1) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) take = 0;
        else {
            c->out = p;
            c->out_cap = cap;
        }
    }
    if (take) {
        memcpy(c->out + c->out_len, data, take);
        c->out_len += take;
        c->out[c->out_len] = 0;
    }
    c->out_dropped += len - take;
}

net_loop *net_loop_new(const net_handlers *h, const net_options *o) {
    net_loop *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->h = *h;
    if (o) l->o = *o;
    if (!l->o.max_output) l->o.max_output = 1u << 20;
    l->now = FAKE_EPOCH;
    the_loop = l;
    return l;
}

void net_loop_free(net_loop *l) {
    if (!l) return;
    for (int i = 0; i < FAKE_MAX_CONNS; i++) conn_free(l->conns[i]);
    if (the_loop == l) the_loop = NULL;
    free(l);
}

int net_listen(net_loop *l, const char *addr, int port, int tls, int defer_accept, int tag) {
    if (!addr || port <= 0 || port > 65535 || l->nlisteners == FAKE_MAX_LISTENERS) return -1;
    l->listener_tls[l->nlisteners] = tls;
    l->listener_tag[l->nlisteners] = tag;
    l->nlisteners++;
    return 0;
}

int net_tls_setup(net_loop *l, const char *cert, const char *key, const char *data_dir, const char *const *names) {
    if (fake_tls_setup_result < 0) return -1;
    l->tls_ready = 1;
    return 0;
}

int net_tls_reload(net_loop *l, const char *cert, const char *key, const char *data_dir, const char *const *names) {
    return net_tls_setup(l, cert, key, data_dir, names);
}

void net_set_options(net_loop *l, const net_options *o) {
    if (!o) return;
    l->o = *o;
    if (!l->o.max_output) l->o.max_output = 1u << 20;
}

int net_tls_available(const net_loop *l) {
    return l->tls_ready && fake_tls_available;
}

int net_loop_run(net_loop *l) {
    return 0;
}

void net_loop_stop(net_loop *l) {
    l->stopped = 1;
}

void net_loop_alarm(net_loop *l, int secs) {
    time_t at = l->now + (secs > 0 ? secs : 0);
    if (!l->alarm_at || at < l->alarm_at) l->alarm_at = at;
}

int fake_fire_alarm(void) {
    net_loop *l = the_loop;
    if (!l || !l->alarm_at) return 0;
    if (l->now < l->alarm_at) l->now = l->alarm_at;
    l->alarm_at = 0;
    if (l->h.on_alarm) l->h.on_alarm(l->h.ud, l->now);
    return 1;
}

time_t net_now(const net_loop *l) {
    return l->now;
}

int net_conn_write(net_conn *c, const char *data, size_t len) {
    if (c->dead || c->closing) return -1;
    if (c->overflow && !c->in_overflow) return -1;
    if (len == 0) return 0;
    size_t limit = c->loop->o.max_output + (c->in_overflow ? FAKE_OVERFLOW_SLACK : 0);
    if (len > limit - c->queued) {
        if (!c->in_overflow) c->overflow = 1;
        return -1;
    }
    /* touch every byte, so the sanitizer sees a read of whatever the server hands us */
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < len; i++) sink ^= (unsigned char)data[i];
    (void)sink;
    c->queued += len;
    c->loop->written += len;
    capture(c, data, len);
    return 0;
}

int net_conn_starttls(net_conn *c) {
    if (c->dead || c->closing || c->tls || !c->loop->tls_ready) return -1;
    if (fake_starttls_result < 0) return -1;
    c->tls = 1;
    return 0;
}

int net_conn_is_tls(const net_conn *c) {
    return c->tls;
}

void net_conn_close(net_conn *c) {
    if (c->dead || c->closing) return;
    c->closing = 1;
    /* as net_epoll does: a peer that never reads cannot hold a closing connection open */
    c->timer_armed = 1;
    c->timer_at = c->loop->now + 5;
}

void net_conn_set_timer(net_conn *c, int secs) {
    if (c->dead || c->closing) return;
    if (secs < 0) {
        c->timer_armed = 0;
        return;
    }
    c->timer_armed = 1;
    c->timer_at = c->loop->now + secs;
}

time_t net_conn_last_input(const net_conn *c) {
    return c->last_input;
}

const char *net_conn_peer(const net_conn *c) {
    return "192.0.2.7";
}

void *net_conn_ud(const net_conn *c) {
    return c->ud;
}

size_t net_conn_memory(const net_conn *c) {
    return sizeof *c + c->queued;
}

/* ---- the harness's side ---- */

unsigned fake_accept(unsigned listener) {
    net_loop *l = the_loop;
    if (!l || l->nlisteners == 0) return 0;
    int slot = -1;
    for (int i = 0; i < FAKE_MAX_CONNS; i++)
        if (!l->conns[i]) {
            slot = i;
            break;
        }
    if (slot < 0) return 0;
    unsigned li = listener % (unsigned)l->nlisteners;
    net_conn *c = calloc(1, sizeof *c);
    if (!c) return 0;
    c->id = ++l->next_id;
    c->loop = l;
    c->reading = 1;
    c->tls = l->listener_tls[li];
    c->last_input = l->now;
    l->conns[slot] = c;
    c->ud = l->h.on_open(l->h.ud, c, l->listener_tag[li]);
    if (!c->ud) {
        l->conns[slot] = NULL;
        conn_free(c);
        return 0;
    }
    return c->id;
}

net_conn *fake_conn(unsigned id) {
    net_loop *l = the_loop;
    if (!l || !id) return NULL;
    for (int i = 0; i < FAKE_MAX_CONNS; i++)
        if (l->conns[i] && l->conns[i]->id == id) return l->conns[i]->dead ? NULL : l->conns[i];
    return NULL;
}

static void conn_kill(net_conn *c, const char *reason) {
    if (c->dead) return;
    c->dead = 1;
    c->timer_armed = 0;
    c->loop->h.on_close(c->ud, c, reason);
}

void fake_deliver(net_conn *c, const char *data, size_t len) {
    if (!c || c->dead || c->closing || c->overflow || len == 0) return;
    c->last_input = c->loop->now;
    c->loop->h.on_data(c->ud, c, data, len);
}

void fake_fire_timer(net_conn *c) {
    if (!c || c->dead || !c->timer_armed) return;
    net_loop *l = c->loop;
    if (c->timer_at > l->now) l->now = c->timer_at;
    c->timer_armed = 0;
    if (c->closing) {
        conn_kill(c, "close timeout");      /* net_epoll's grace timer for a peer that never reads */
        return;
    }
    l->h.on_timer(c->ud, c, l->now);
}

void fake_set_reading(net_conn *c, int reading) {
    if (c && !c->dead) c->reading = reading;
}

void fake_peer_close(net_conn *c) {
    if (c && !c->dead) conn_kill(c, "peer closed");
}

void fake_settle(void) {
    net_loop *l = the_loop;
    if (!l) return;
    for (int i = 0; i < FAKE_MAX_CONNS; i++) {
        net_conn *c = l->conns[i];
        if (!c || c->dead) continue;
        if (c->overflow) {
            c->in_overflow = 1;
            if (l->h.on_overflow) l->h.on_overflow(c->ud, c);
            c->in_overflow = 0;
            conn_kill(c, "output overflow");
        } else {
            if (c->reading) c->queued = 0;  /* the peer read everything */
            if (c->closing && c->queued == 0) conn_kill(c, "closed");
        }
    }
    /* freed only now, after every handler of the turn has run */
    for (int i = 0; i < FAKE_MAX_CONNS; i++)
        if (l->conns[i] && l->conns[i]->dead) {
            conn_free(l->conns[i]);
            l->conns[i] = NULL;
        }
}

void fake_close_all(void) {
    net_loop *l = the_loop;
    if (!l) return;
    fake_settle();
    for (int i = 0; i < FAKE_MAX_CONNS; i++)
        if (l->conns[i]) conn_kill(l->conns[i], "end of input");
    fake_settle();
}

void fake_signal(int signo) {
    net_loop *l = the_loop;
    if (l && l->h.on_signal) l->h.on_signal(l->h.ud, signo);
}

size_t fake_bytes_written(void) {
    return the_loop ? the_loop->written : 0;
}

const char *fake_output(const net_conn *c, size_t *len) {
    if (len) *len = c && c->out ? c->out_len : 0;
    return c && c->out ? c->out : "";
}

void fake_output_clear(net_conn *c) {
    if (!c) return;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_cap = c->out_dropped = 0;
}

size_t fake_output_dropped(const net_conn *c) {
    return c ? c->out_dropped : 0;
}

int fake_conn_closing(const net_conn *c) {
    return c && (c->closing || c->dead);
}

/* ---- the admin socket: not fuzzed through here (fuzz_admin covers its protocol), so no connection is
 * ever local and the listener is only accepted ---- */

int net_listen_unix(net_loop *l, const char *path, int tag) {
    return path && *path ? 0 : -1;
}

int net_conn_is_local(const net_conn *c) {
    return 0;
}

int net_conn_peer_cred(const net_conn *c, uid_t *uid) {
    return -1;
}

const char *net_conn_tls_version(const net_conn *c) {
    return c->tls ? "TLSv1.3" : NULL;
}

/* ---- file watches: nothing changes the account file while a fuzz input runs ---- */

int net_watch(net_loop *l, int fd, void (*ready)(void *ud), void *ud) {
    return 0;
}

/* ---- outbound connections and client-side TLS: the server makes none yet, so none are fuzzed here; the
 * calls exist so that fuzz_stream links against the whole of net_epoll.h ---- */

net_conn *net_connect(net_loop *l, const char *addr, int port, int timeout_secs, void *ud) {
    return NULL;        /* as net_epoll for an address it cannot use: nothing is reported later */
}

int net_conn_start_tls_client(net_conn *c, const char *verify_name, const char *ca_file) {
    return -1;
}

int net_conn_tls_verified(const net_conn *c) {
    return 0;
}
