/* fake_net.h - the harness's side of fake_net.c, an in-memory net_epoll.h with no sockets, for fuzz_stream.
 * The harness plays the event loop: it accepts connections, delivers bytes, fires timers and ends each
 * "turn" with fake_settle(), which does what net_epoll does at the end of a loop turn (overflow, close). */
#ifndef COUPLET_FAKE_NET_H
#define COUPLET_FAKE_NET_H

#include <stddef.h>
#include <time.h>

#include "net_epoll.h"

/* Behaviour knobs, read when the server asks. */
extern int fake_tls_available;      /* net_tls_available's answer (when net_tls_setup was called) */
extern int fake_starttls_result;    /* net_conn_starttls's answer: 0 or -1 */
extern int fake_tls_setup_result;   /* net_tls_setup's answer: 0 or -1 */

/* Accept a connection on the n-th listener (modulo their number). Returns the connection's id (never
 * reused), or 0 if it was refused. Connections are freed by fake_settle(), so the harness keeps ids, not
 * pointers, across turns. */
unsigned fake_accept(unsigned listener);
/* The live (not yet closed) connection with this id, or NULL. */
net_conn *fake_conn(unsigned id);
/* Deliver bytes to the connection's on_data (ignored, as by net_epoll, once it is closing or dead). */
void fake_deliver(net_conn *c, const char *data, size_t len);
/* If the connection's timer is armed, advance the clock to it and call on_timer. */
void fake_fire_timer(net_conn *c);
/* If the loop's alarm is armed, advance the clock to it and call on_alarm; 0 when it was not armed. */
int fake_fire_alarm(void);
/* The peer stopped (0) or resumed (1) reading: unread output accumulates toward max_output. */
void fake_set_reading(net_conn *c, int reading);
/* The peer hung up: on_close now. */
void fake_peer_close(net_conn *c);
/* End of a loop turn: overflowed and closing connections are closed (on_close) and freed. */
void fake_settle(void);
/* Close every connection (on_close) and free them: the end of one fuzz input. */
void fake_close_all(void);
/* A signal arrived (delivered from the loop, as net_epoll does). */
void fake_signal(int signo);
size_t fake_bytes_written(void);    /* total bytes the server queued, for the curious */

/* What the server wrote to each connection is kept for the harness: every byte net_conn_write accepted
 * (refused writes, after close or past max_output, are not there), at most fake_capture_limit bytes since
 * the last fake_output_clear (default 4 MiB; 0 keeps nothing). The memory goes with the connection, at the
 * fake_settle() that frees it, so read a closing connection's last words before that. */
extern size_t fake_capture_limit;
/* The captured bytes, NUL-terminated ("" when none); *len (if len) gets their count. Valid until the next
 * write to c, fake_output_clear(c) or c is freed. */
const char *fake_output(const net_conn *c, size_t *len);
void fake_output_clear(net_conn *c);
/* Bytes accepted but not kept since the last clear, because the capture was full. */
size_t fake_output_dropped(const net_conn *c);
/* 1 once the server called net_conn_close on c (or it is gone), 0 while it is open. */
int fake_conn_closing(const net_conn *c);

#endif
