/* net_epoll.h - the event loop: listeners, outbound connections, TLS, write queues, timers, signals.
 * Bytes in go up through the handlers; bytes out come down through net_conn_write.
 *
 * Transports. Each connection moves its bytes through a small table of functions (read, write, pending,
 * shutdown, upgrade) inside net_epoll.c: plain TCP, a Unix socket, or TLS, which STARTTLS or
 * net_conn_start_tls_client swaps in for TCP. A framing layer (WebSocket, RFC 7395) stacks above the
 * transport, not beside it: it will be a second table (decode: the transport's bytes -> whole messages
 * for on_data; encode: net_conn_write's messages -> frames for the write queue) that the layer above hangs
 * on a connection, with its per-connection state, by a call such as net_conn_set_framing(c, &ws, state).
 * The loop then hands what the transport read to decode instead of on_data, and the queue is flushed
 * through whatever transport is below, so WebSocket over TLS needs no third transport. */
#ifndef COUPLET_NET_EPOLL_H
#define COUPLET_NET_EPOLL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

typedef struct net_loop net_loop;
typedef struct net_conn net_conn;

typedef struct net_handlers {
    void *ud;                   /* passed to on_open, on_signal and on_alarm */
    /* A connection was accepted on a listener (tag as given to net_listen). Return the connection's
     * user data, or NULL to refuse it (it is closed at once, on_close is not called). */
    void *(*on_open)(void *ud, net_conn *c, int tag);
    /* Plaintext bytes from the peer (decrypted when TLS is on). data is only valid during the call. */
    void (*on_data)(void *conn_ud, net_conn *c, const char *data, size_t len);
    /* The connection is gone (peer closed, error, output bound passed, or after net_conn_close has
     * flushed). The net_conn is freed right after this returns. reason is a short text for logs. */
    void (*on_close)(void *conn_ud, net_conn *c, const char *reason);
    /* The timer set with net_conn_set_timer fired. */
    void (*on_timer)(void *conn_ud, net_conn *c, time_t now);
    /* SIGTERM, SIGINT or SIGHUP arrived (delivered from the loop, not from the signal handler). */
    void (*on_signal)(void *ud, int signo);
    /* The peer stopped reading and its queued output passed max_output; the connection is closed right
     * after this returns. The handler may still queue a final short error (it is sent if it fits). */
    void (*on_overflow)(void *conn_ud, net_conn *c);
    /* A net_connect has its answer (conn_ud is the ud given to it). ok = 1 (why = "connected"): from now
     * on the connection is like an accepted one, and on_close ends it. ok = 0: it failed, why says how
     * ("Connection refused", "connect timeout", "closed before connecting", ...), the net_conn is freed
     * right after this returns, and on_close is not called. A handler of its own, not on_open with a
     * flag: on_open is asked for a ud and may refuse, whereas here the ud is the caller's from the
     * start, and a failure needs a reason. */
    void (*on_connect)(void *conn_ud, net_conn *c, int ok, const char *why);
    /* The loop's one alarm (net_loop_alarm) is due. */
    void (*on_alarm)(void *ud, time_t now);
} net_handlers;

typedef struct net_options {
    size_t max_output;          /* bytes queued per connection before on_overflow (default 1 MiB) */
    int max_connections;        /* connections at once, outbound ones included; more are closed at accept
                                 * (0 = no limit) */
    int max_per_ip;             /* accepted connections at once from one peer address (0 = no limit) */
    size_t read_rate;           /* bytes per second each connection may send, a token bucket (0 = no limit);
                                 * a connection out of tokens is simply not read until it has some again */
    size_t read_burst;          /* the bucket's size in bytes (0 = one second's worth) */
} net_options;

net_loop *net_loop_new(const net_handlers *h, const net_options *o);
void net_loop_free(net_loop *l);    /* closes every connection without calling handlers */

/* Listen on addr:port. tls = 1 for direct TLS (XEP-0368). defer_accept = seconds for TCP_DEFER_ACCEPT
 * (0 = off; a refusal by the kernel is logged and ignored). Returns 0 or -1 (logged). */
int net_listen(net_loop *l, const char *addr, int port, int tls, int defer_accept, int tag);
/* Listen on a Unix-domain stream socket at path (the admin socket): a stale socket file left by a dead
 * process is replaced, anything else at path is refused; the file gets mode 0600. Its connections reach the
 * same handlers with this tag, never use TLS and have no per-address or max_connections limit. The caller
 * removes the file when done. Returns 0 or -1 (logged). */
int net_listen_unix(net_loop *l, const char *path, int tag);
/* Load cert and key (PEM). If both are "" or NULL, use data_dir/cert.pem and data_dir/key.pem, creating a
 * self-signed ECDSA P-256 certificate for the given names (NULL-terminated, first is the subject CN) when
 * they do not exist. TLS 1.2 minimum. Returns 0 or -1 (logged). */
int net_tls_setup(net_loop *l, const char *cert, const char *key, const char *data_dir, const char *const *names);
int net_tls_available(const net_loop *l);
/* Load a new certificate and key (same rules as net_tls_setup) for connections accepted from now on;
 * established TLS sessions keep theirs. On failure the old ones stay in use and -1 is returned (logged). */
int net_tls_reload(net_loop *l, const char *cert, const char *key, const char *data_dir, const char *const *names);
/* Change the limits at run time (SIGHUP); they apply to every connection from the next loop turn. */
void net_set_options(net_loop *l, const net_options *o);

/* Open a TCP connection to addr:port, a numeric IPv4 or IPv6 address (names are resolved by a layer
 * above). The connection comes at once; the answer comes later, through on_connect(ud, ...), never from
 * inside this call: refused, no answer within timeout_secs (at least that many seconds, at most one
 * more; <= 0 means 30) or connected. Until then, writes are queued and sent once connected, the timer is
 * the connect timeout (net_conn_set_timer is ignored), and net_conn_close abandons the attempt. Not
 * counted against max_per_ip. ud must not be NULL. Returns NULL at once (logged, nothing reported later)
 * for a bad address or port, or when the kernel refuses outright (no socket, no route). */
net_conn *net_connect(net_loop *l, const char *addr, int port, int timeout_secs, void *ud);

/* Call ready(ud) from the loop whenever fd is readable (level-triggered: ready must drain it). The fd
 * stays the caller's: close it only after net_loop_free. At most NET_MAX_WATCHES. Returns 0 or -1. */
#define NET_MAX_WATCHES 4
int net_watch(net_loop *l, int fd, void (*ready)(void *ud), void *ud);

/* Run until net_loop_stop; returns 0. */
int net_loop_run(net_loop *l);
/* Stop after queued output is flushed (bounded: at most about 2 s). Safe to call from handlers. */
void net_loop_stop(net_loop *l);
/* Call on_alarm once, `secs` seconds from now (to the second), or earlier if it was already armed for
 * earlier. One alarm for the whole loop: for the few things that time out without a connection of their own
 * (a room nobody configures). */
void net_loop_alarm(net_loop *l, int secs);
time_t net_now(const net_loop *l);  /* cached wall-clock seconds of the current loop turn */

/* Queue bytes for the peer. Writes are coalesced and flushed at the end of the loop turn.
 * Returns 0, or -1 if the connection is closing (data dropped). */
int net_conn_write(net_conn *c, const char *data, size_t len);
/* Start a server-side TLS handshake once the output queued so far has been flushed (STARTTLS).
 * Bytes the peer sent after the command and before the handshake are discarded. Returns 0 or -1. */
int net_conn_starttls(net_conn *c);
/* The client side: start a TLS handshake, as above once the queued output is out (right away on a fresh
 * outbound connection: direct TLS; after <proceed/>: STARTTLS). The peer's certificate must chain to the
 * CAs in ca_file (PEM), or to the system's trust store when ca_file is NULL, and be for verify_name (a
 * host name, also sent as SNI; an address literal is matched against IP entries). A handshake that fails
 * verification closes the connection with on_close's reason "TLS certificate verify failed: " and
 * OpenSSL's words ("hostname mismatch", "self-signed certificate", "unable to get local issuer
 * certificate", ...). The client context is made once per loop, on first use. Returns 0, or -1 (a bad
 * name or CA file, logged; or TLS already on or starting, or a Unix socket). */
int net_conn_start_tls_client(net_conn *c, const char *verify_name, const char *ca_file);
int net_conn_is_tls(const net_conn *c);
/* 1 once a client-side handshake has completed and the peer's certificate verified for the name;
 * 0 otherwise (server-side sessions never verify a peer certificate) */
int net_conn_tls_verified(const net_conn *c);
/* Flush queued output, then close; on_close follows (from the loop, never from inside this call), or
 * on_connect with ok = 0 while the connection was still connecting. */
void net_conn_close(net_conn *c);
/* Arm (or re-arm) the connection's one timer to fire `secs` from now; secs < 0 disarms. Ignored while the
 * connection closes or connects (the timer is then the loop's deadline). */
void net_conn_set_timer(net_conn *c, int secs);
time_t net_conn_last_input(const net_conn *c);
const char *net_conn_peer(const net_conn *c);    /* peer IP address text ("unix" on a Unix socket) */
int net_conn_is_local(const net_conn *c);        /* 1 if accepted on a net_listen_unix socket */
/* The peer process's user id on a Unix socket (SO_PEERCRED, as it was at connect). 0, or -1. */
int net_conn_peer_cred(const net_conn *c, uid_t *uid);
const char *net_conn_tls_version(const net_conn *c);    /* "TLSv1.3", or NULL without TLS */
void *net_conn_ud(const net_conn *c);
size_t net_conn_memory(const net_conn *c);       /* user-space bytes this connection holds right now */

#endif
