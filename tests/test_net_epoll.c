/* test_net_epoll.c - the event loop against real loopback sockets: the loop runs in this process, each
 * scenario's client is a forked child doing plain blocking I/O (or blocking OpenSSL) and reporting
 * through its exit status. Every child has an alarm; the whole suite has one too. */
#include "net_epoll.h"
#include "config.h"
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* ---- what the handlers saw ---- */

static struct {
    net_loop *l;
    int opens, closes, signo, overflows, timers, refuse, want_closes;
    int tag;
    size_t data_bytes, plain_bytes, tls_bytes;
    size_t mem_open, mem_busy, mem_close, mem_max;
    char reason[200], peer[64];
    net_conn *conn, *conns[32];
    int pipe_fd, marker_seen;                   /* defer_accept: the child's "sent" marker */
    int closes_inside_close, write_after_close; /* net_conn_close must not call on_close */
    int starttls_rc, final_write, writes, writes_failed;
    time_t base, fired_at[64];
    int fired[64], nfired, want_fires;
    net_options opts;                           /* as given to the loop; changed at run time */
    char peers[8][64];
    int phase, reload_rc[3];
    size_t phase_bytes, chunk_limited, chunk_free;
    double t_open, t_done, t_limit, t_lift;
} T;

static void reset(void)
{
    memset(&T, 0, sizeof T);
    T.pipe_fd = -1;
    T.want_closes = 1;
    T.write_after_close = 99;
    T.starttls_rc = 99;
    T.final_write = 99;
}

static void *h_open(void *ud, net_conn *c, int tag)
{
    T.opens++;
    T.tag = tag;
    T.conn = c;
    if (T.opens <= 32)
        T.conns[T.opens - 1] = c;
    T.mem_open = net_conn_memory(c);
    snprintf(T.peer, sizeof T.peer, "%s", net_conn_peer(c));
    if (T.opens <= 8)
        snprintf(T.peers[T.opens - 1], sizeof T.peers[0], "%s", net_conn_peer(c));
    if (T.pipe_fd >= 0) {
        char b;
        T.marker_seen = read(T.pipe_fd, &b, 1) == 1;
    }
    if (T.refuse) {
        net_loop_stop(T.l);
        return NULL;
    }
    return &T;
}

static void h_close(void *ud, net_conn *c, const char *reason)
{
    CHECK(ud == &T, "on_close gets the connection's ud");
    T.closes++;
    snprintf(T.reason, sizeof T.reason, "%s", reason);
    T.mem_close = net_conn_memory(c);
    if (T.closes >= T.want_closes)
        net_loop_stop(T.l);
}

static void h_echo(void *ud, net_conn *c, const char *d, size_t n)
{
    T.data_bytes += n;
    if (net_conn_last_input(c) != net_now(T.l))
        T.writes_failed++;
    if (net_conn_is_tls(c))
        T.tls_bytes += n;
    else
        T.plain_bytes += n;
    if (net_conn_write(c, d, n) != 0)
        T.writes_failed++;
    size_t m = net_conn_memory(c);
    if (m > T.mem_busy)
        T.mem_busy = m;
}

static net_loop *loop_new(net_handlers *h, size_t max_output, int max_conns)
{
    h->ud = &T;
    T.opts.max_output = max_output;
    T.opts.max_connections = max_conns;
    T.l = net_loop_new(h, &T.opts);
    CHECK(T.l != NULL, "net_loop_new");
    return T.l;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- client side (children) ---- */

static int free_port(int family)
{
    int fd = socket(family, SOCK_STREAM, 0), port = -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (sa_family_t)family;
    if (family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&ss, family == AF_INET ? sizeof(struct sockaddr_in)
                                                  : sizeof(struct sockaddr_in6)) == 0 &&
        getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                       : ((struct sockaddr_in6 *)&ss)->sin6_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int connect_to(int family, int port, int rcvbuf)
{
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)port);
        s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)port);
        s->sin6_addr = in6addr_loopback;
        len = sizeof *s;
    }
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_exact(int fd, void *p, size_t n)
{
    char *s = p;
    while (n > 0) {
        ssize_t r = recv(fd, s, n, 0);
        if (r <= 0)
            return -1;
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

static void pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static pid_t spawn(int (*fn)(int port, int arg), int port, int arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        _exit(fn(port, arg));
    }
    CHECK(pid > 0, "fork");
    return pid;
}

static int child_status(pid_t pid)
{
    int st;
    if (pid <= 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ---- plain scenarios ---- */

static int child_echo(int port, int family)
{
    char buf[16];
    int fd = connect_to(family, port, 0);
    if (fd < 0)
        return 2;
    if (send_all(fd, "hello", 5) || recv_exact(fd, buf, 5) || memcmp(buf, "hello", 5))
        return 3;
    if (send_all(fd, "world!!", 7) || recv_exact(fd, buf, 7) || memcmp(buf, "world!!", 7))
        return 4;
    close(fd);
    return 0;
}

static void test_echo(int family, const char *addr)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(family);
    CHECK_INT(0, net_listen(l, addr, port, 0, 0, 7));
    pid_t pid = spawn(child_echo, port, family);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.opens);
    CHECK_INT(1, T.closes);
    CHECK_INT(7, T.tag);
    CHECK_INT(12, T.data_bytes);
    CHECK_INT(0, T.writes_failed);
    CHECK_STR("peer closed", T.reason);
    CHECK_STR(family == AF_INET ? "127.0.0.1" : "::1", T.peer);
    CHECK(T.mem_open < 256, "idle connection holds %zu bytes", T.mem_open);
    CHECK(T.mem_busy > T.mem_open, "queued output counted (%zu > %zu)", T.mem_busy, T.mem_open);
    CHECK_INT(T.mem_open, T.mem_close);     /* the flushed queue was freed */
    net_loop_free(l);
}

static void test_listen_errors(void)
{
    reset();
    net_handlers h = { .on_open = h_open };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(-1, net_listen(l, "not-an-address", 5222, 0, 0, 0));
    CHECK_INT(-1, net_listen(l, "127.0.0.1", 70000, 0, 0, 0));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    CHECK_INT(0, net_tls_available(l));
    net_loop_free(l);
}

#define COALESCE_LINES 2000

static void h_coalesce(void *ud, net_conn *c, const char *d, size_t n)
{
    char line[24];
    for (int i = 0; i < COALESCE_LINES; i++) {
        snprintf(line, sizeof line, "line %04d\n", i);
        if (net_conn_write(c, line, 10) == 0)
            T.writes++;
    }
    T.mem_busy = net_conn_memory(c);
}

static int child_coalesce(int port, int arg)
{
    static char buf[COALESCE_LINES * 10];
    char want[24];
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0 || send_all(fd, "go", 2) || recv_exact(fd, buf, sizeof buf))
        return 2;
    for (int i = 0; i < COALESCE_LINES; i++) {
        snprintf(want, sizeof want, "line %04d\n", i);
        if (memcmp(buf + i * 10, want, 10) != 0)
            return 3;
    }
    close(fd);
    return 0;
}

static void test_coalesce(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_coalesce, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_coalesce, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(COALESCE_LINES, T.writes);
    /* all of them sat in the queue together: one flush at the end of the turn */
    CHECK(T.mem_busy >= COALESCE_LINES * 10, "queue held %zu bytes", T.mem_busy);
    CHECK_INT(1, T.closes);
    net_loop_free(l);
}

static int defer_pipe[2];

static int child_defer(int port, int arg)
{
    char buf[4];
    close(defer_pipe[0]);
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0)
        return 2;
    pause_ms(300);                          /* connected, silent: the server must not see it */
    if (write(defer_pipe[1], "s", 1) != 1)
        return 3;
    if (send_all(fd, "ping", 4) || recv_exact(fd, buf, 4) || memcmp(buf, "ping", 4))
        return 4;
    close(fd);
    return 0;
}

static void test_defer_accept(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 1, 0));
    CHECK_INT(0, pipe(defer_pipe));
    pid_t pid = spawn(child_defer, port, 0);
    close(defer_pipe[1]);
    T.pipe_fd = defer_pipe[0];
    fcntl(T.pipe_fd, F_SETFL, O_NONBLOCK);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.opens);
    CHECK(T.marker_seen, "on_open came only after the client sent its first bytes");
    CHECK_INT(4, T.data_bytes);
    CHECK_INT(1, T.closes);
    close(defer_pipe[0]);
    net_loop_free(l);
}

static int child_reset(int port, int arg)
{
    char b;
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0 || send_all(fd, "x", 1) || recv_exact(fd, &b, 1))
        return 2;
    struct linger lg = { 1, 0 };            /* close with RST */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return 0;
}

static void test_peer_reset(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_reset, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.closes);
    CHECK(T.reason[0] != '\0', "a reason is given");
    net_loop_free(l);
}

#define CLOSE_BYTES (4 << 20)    /* past loopback's socket buffers: EPOLLOUT is needed */

static void h_close_after_write(void *ud, net_conn *c, const char *d, size_t n)
{
    char chunk[1024];
    int failed = 0;
    for (size_t off = 0; off < CLOSE_BYTES; off += sizeof chunk) {
        for (size_t i = 0; i < sizeof chunk; i++)
            chunk[i] = (char)((off + i) % 251);
        failed += net_conn_write(c, chunk, sizeof chunk) != 0;
    }
    CHECK_INT(0, failed);
    net_conn_close(c);
    net_conn_close(c);                      /* twice is harmless */
    T.closes_inside_close = T.closes;
    T.write_after_close = net_conn_write(c, "x", 1);
    net_conn_set_timer(c, 0);               /* ignored: a closing connection keeps its grace timer */
}

static int child_read_all(int port, int arg)
{
    static char buf[CLOSE_BYTES + 16];
    size_t got = 0;
    int fd = connect_to(AF_INET, port, 8192);
    if (fd < 0 || send_all(fd, "bye", 3))
        return 2;
    pause_ms(100);                          /* let the server's first flush hit a full socket */
    for (;;) {
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r < 0)
            return 3;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got != CLOSE_BYTES)
        return 4;
    for (size_t i = 0; i < got; i++)
        if (buf[i] != (char)(i % 251))
            return 5;
    close(fd);
    return 0;
}

static void test_close_flushes(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_close_after_write, .on_close = h_close };
    net_loop *l = loop_new(&h, 2 * CLOSE_BYTES, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_read_all, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));        /* every byte arrived, then EOF */
    CHECK_INT(1, T.closes);
    CHECK_INT(0, T.closes_inside_close);
    CHECK_INT(-1, T.write_after_close);
    CHECK_STR("closed", T.reason);
    net_loop_free(l);
}

#define OVERFLOW_MAX 65536

static int hold_pipe[2];

static void h_overflow_start(void *ud, net_conn *c, const char *d, size_t n)
{
    net_conn_set_timer(c, 0);
}

static void h_overflow_timer(void *ud, net_conn *c, time_t now)
{
    static char chunk[16384];
    memset(chunk, 'o', sizeof chunk);
    T.timers++;
    if (net_conn_write(c, chunk, sizeof chunk) == 0) {
        T.writes++;
        net_conn_set_timer(c, 0);           /* one chunk per loop turn until the peer is cut off */
    }
    size_t m = net_conn_memory(c);
    if (m > T.mem_max)
        T.mem_max = m;
}

static void h_overflow(void *ud, net_conn *c)
{
    T.overflows++;
    T.final_write = net_conn_write(c, "<stream:error/>", 15);
    size_t m = net_conn_memory(c);
    if (m > T.mem_max)
        T.mem_max = m;
}

static int child_never_reads(int port, int arg)
{
    char b;
    close(hold_pipe[1]);
    int fd = connect_to(AF_INET, port, 4096);
    if (fd < 0 || send_all(fd, "go", 2))
        return 2;
    while (read(hold_pipe[0], &b, 1) > 0)   /* until the parent is done */
        ;
    close(fd);
    return 0;
}

static void test_overflow(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_overflow_start, .on_close = h_close,
                       .on_timer = h_overflow_timer, .on_overflow = h_overflow };
    net_loop *l = loop_new(&h, OVERFLOW_MAX, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    CHECK_INT(0, pipe(hold_pipe));
    pid_t pid = spawn(child_never_reads, port, 0);
    close(hold_pipe[0]);
    CHECK_INT(0, net_loop_run(l));
    close(hold_pipe[1]);
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.overflows);
    CHECK_INT(1, T.closes);
    CHECK_STR("output overflow", T.reason);
    CHECK_INT(0, T.final_write);
    CHECK(T.writes >= OVERFLOW_MAX / 16384, "%d chunks were queued", T.writes);
    CHECK(T.mem_max <= OVERFLOW_MAX + 4096 + 256, "memory stayed bounded: %zu", T.mem_max);
    net_loop_free(l);
}

static void h_close_stuck(void *ud, net_conn *c, const char *d, size_t n)
{
    static char chunk[1 << 16];
    int failed = 0;
    for (int i = 0; i < 128; i++)           /* 8 MiB: more than the kernel will take */
        failed += net_conn_write(c, chunk, sizeof chunk) != 0;
    CHECK_INT(0, failed);
    net_conn_close(c);
}

static void test_close_timeout(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_close_stuck, .on_close = h_close };
    net_loop *l = loop_new(&h, 16 << 20, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    CHECK_INT(0, pipe(hold_pipe));
    pid_t pid = spawn(child_never_reads, port, 0);
    close(hold_pipe[0]);
    CHECK_INT(0, net_loop_run(l));          /* a peer that never reads cannot hold a close open */
    close(hold_pipe[1]);
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.closes);
    CHECK_STR("close timeout", T.reason);
    net_loop_free(l);
}

static struct rlimit saved_nofile;

static void *h_emfile_open(void *ud, net_conn *c, int tag)
{
    void *r = h_open(ud, c, tag);
    if (T.opens == 1) {
        int lowest_free = dup(STDERR_FILENO);   /* from now on accept4 gets EMFILE */
        close(lowest_free);
        struct rlimit rl = saved_nofile;
        rl.rlim_cur = (rlim_t)lowest_free;
        CHECK_INT(0, setrlimit(RLIMIT_NOFILE, &rl));
        net_conn_set_timer(c, 1);
    }
    return r;
}

static void h_emfile_timer(void *ud, net_conn *c, time_t now)
{
    T.timers++;
    CHECK_INT(0, setrlimit(RLIMIT_NOFILE, &saved_nofile));
}

/* exit 0: the second connection waited in the backlog and was served; 10 + n: it needed n retries
 * (only valgrind does that: it emulates the fd limit by closing the accepted socket) */
static int child_second_waits(int port, int arg)
{
    char b;
    int a = connect_to(AF_INET, port, 0);
    if (a < 0 || send_all(a, "a", 1) || recv_exact(a, &b, 1) || b != 'a')
        return 2;
    for (int tries = 0; tries < 20; tries++) {
        int c = connect_to(AF_INET, port, 0);   /* queued in the backlog while fds run out */
        if (c < 0 || send_all(c, "b", 1))
            return 3;
        if (recv_exact(c, &b, 1) == 0 && b == 'b') {
            close(c);
            close(a);
            return tries ? 10 + tries : 0;
        }
        close(c);
        pause_ms(200);
    }
    return 4;
}

static int under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

static void test_emfile(void)
{
    reset();
    T.want_closes = 2;
    CHECK_INT(0, getrlimit(RLIMIT_NOFILE, &saved_nofile));
    net_handlers h = { .on_open = h_emfile_open, .on_data = h_echo, .on_close = h_close,
                       .on_timer = h_emfile_timer };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_second_waits, port, 0);
    CHECK_INT(0, net_loop_run(l));
    setrlimit(RLIMIT_NOFILE, &saved_nofile);
    int st = child_status(pid);
    CHECK(st == 0 || (under_valgrind() && st > 10 && st < 30), "client status %d", st);
    CHECK_INT(1, T.timers);
    CHECK_INT(2, T.opens);                  /* the second one once fds were available again */
    CHECK_INT(2, T.closes);
    CHECK_INT(0, T.writes_failed);
    net_loop_free(l);
}

/* ---- timers ---- */

#define TIMER_CONNS 12

static int timer_plan(int i)        /* seconds, or -1 when disarmed again */
{
    if (i % 4 == 3)
        return -1;
    if (i % 5 == 1)
        return (i + 1) % 3;         /* re-armed */
    return i % 3;
}

static void *h_timer_open(void *ud, net_conn *c, int tag)
{
    void *r = h_open(ud, c, tag);
    if (T.opens < TIMER_CONNS)
        return r;
    T.base = net_now(T.l);
    for (int i = 0; i < TIMER_CONNS; i++)
        net_conn_set_timer(T.conns[i], i % 3);
    for (int i = 0; i < TIMER_CONNS; i++)
        if (timer_plan(i) >= 0 && timer_plan(i) != i % 3)
            net_conn_set_timer(T.conns[i], timer_plan(i));
    for (int i = 0; i < TIMER_CONNS; i++)
        if (timer_plan(i) < 0)
            net_conn_set_timer(T.conns[i], -1);
    T.want_fires = 1;               /* conn 0 re-arms itself once */
    for (int i = 0; i < TIMER_CONNS; i++)
        T.want_fires += timer_plan(i) >= 0;
    return r;
}

static void h_timer(void *ud, net_conn *c, time_t now)
{
    int i = 0;
    while (i < TIMER_CONNS && T.conns[i] != c)
        i++;
    CHECK(i < TIMER_CONNS, "on_timer for a known connection");
    CHECK_INT(net_now(T.l), now);
    if (T.nfired < 64) {
        T.fired[T.nfired] = i;
        T.fired_at[T.nfired] = now;
    }
    T.nfired++;
    if (i == 0 && T.timers++ == 0)
        net_conn_set_timer(c, 1);           /* re-arm from inside its own handler */
    if (T.nfired == T.want_fires)
        net_loop_stop(T.l);
}

static int child_many(int port, int n)
{
    char b;
    int fds[TIMER_CONNS];
    close(hold_pipe[1]);
    for (int i = 0; i < n; i++)
        if ((fds[i] = connect_to(AF_INET, port, 0)) < 0)
            return 2;
    while (read(hold_pipe[0], &b, 1) > 0)
        ;
    return 0;
}

static void test_timers(void)
{
    reset();
    net_handlers h = { .on_open = h_timer_open, .on_close = h_close, .on_timer = h_timer };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    CHECK_INT(0, pipe(hold_pipe));
    pid_t pid = spawn(child_many, port, TIMER_CONNS);
    close(hold_pipe[0]);
    CHECK_INT(0, net_loop_run(l));
    close(hold_pipe[1]);
    CHECK_INT(0, child_status(pid));
    CHECK_INT(TIMER_CONNS, T.opens);
    CHECK_INT(T.want_fires, T.nfired);
    int count[TIMER_CONNS] = { 0 }, prev_due = 0;
    for (int k = 0; k < T.nfired && k < 64; k++) {
        int i = T.fired[k];
        count[i]++;
        /* conn 0 re-armed itself for one second when it first fired */
        int due = timer_plan(i);
        if (i == 0 && count[i] == 2)
            for (int j = 0; j < k; j++)
                if (T.fired[j] == 0)
                    due = (int)(T.fired_at[j] - T.base) + 1;
        CHECK(due >= 0, "conn %d was disarmed but fired", i);
        CHECK(T.fired_at[k] >= T.base + due, "conn %d fired at +%ld, due +%d", i,
              (long)(T.fired_at[k] - T.base), due);
        CHECK(prev_due <= due, "deadline order: +%d before conn %d (+%d)", prev_due, i, due);
        prev_due = due;
    }
    for (int i = 0; i < TIMER_CONNS; i++)
        CHECK_INT(timer_plan(i) < 0 ? 0 : (i == 0 ? 2 : 1), count[i]);
    CHECK_INT(0, T.closes);
    net_loop_free(l);               /* closes the child's connections without handlers */
}

/* ---- stop, signals, limits ---- */

#define STOP_BYTES (4 << 20)

static void h_stop_after_write(void *ud, net_conn *c, const char *d, size_t n)
{
    char chunk[1024];
    int failed = 0;
    memset(chunk, 's', sizeof chunk);
    for (int i = 0; i < STOP_BYTES / 1024; i++)
        failed += net_conn_write(c, chunk, sizeof chunk) != 0;
    CHECK_INT(0, failed);
    net_loop_stop(T.l);
    net_loop_stop(T.l);
}

static int child_slow_reader(int port, int arg)
{
    static char buf[STOP_BYTES];
    int fd = connect_to(AF_INET, port, 8192);
    if (fd < 0 || send_all(fd, "x", 1))
        return 2;
    pause_ms(200);
    if (recv_exact(fd, buf, sizeof buf))
        return 3;
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != 's')
            return 4;
    close(fd);
    return 0;
}

static void test_stop_flushes(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_stop_after_write, .on_close = h_close };
    net_loop *l = loop_new(&h, 2 * STOP_BYTES, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_slow_reader, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK(T.conn != NULL && net_conn_memory(T.conn) == T.mem_open, "queue empty when run returned");
    CHECK_INT(0, child_status(pid));
    CHECK_INT(0, T.closes);
    net_loop_free(l);
}

static void h_signal(void *ud, int signo)
{
    CHECK(ud == &T, "on_signal gets the loop's ud");
    T.signo = signo;
    net_loop_stop(T.l);
}

static void test_signal(int signo)
{
    reset();
    net_handlers h = { .on_signal = h_signal };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(0, kill(getpid(), signo));
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(signo, T.signo);
    net_loop_free(l);
}

static int child_two(int port, int arg)
{
    char b;
    int a = connect_to(AF_INET, port, 0);
    if (a < 0 || send_all(a, "a", 1) || recv_exact(a, &b, 1) || b != 'a')
        return 2;
    int c = connect_to(AF_INET, port, 0);
    if (c < 0)
        return 3;
    send(c, "b", 1, MSG_NOSIGNAL);
    if (recv(c, &b, 1, 0) > 0)              /* refused: EOF or reset, never an echo */
        return 4;
    if (send_all(a, "c", 1) || recv_exact(a, &b, 1) || b != 'c')
        return 5;
    close(c);
    close(a);
    return 0;
}

static void test_max_connections(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 1);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_two, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.opens);
    CHECK_INT(1, T.closes);
    CHECK_INT(2, T.data_bytes);
    net_loop_free(l);
}

static int child_refused(int port, int arg)
{
    char b;
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0)
        return 2;
    send(fd, "x", 1, MSG_NOSIGNAL);
    return recv(fd, &b, 1, 0) > 0 ? 3 : 0;
}

static void test_refuse(void)
{
    reset();
    T.refuse = 1;
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_refused, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.opens);
    CHECK_INT(0, T.closes);
    CHECK_INT(0, T.data_bytes);
    net_loop_free(l);
}

/* ---- per-address limit ---- */

static int perip_ports[3];      /* 127.0.0.1, ::ffff:127.0.0.1 (IPv4 peers seen as mapped), ::1 */

/* connect to dst:port, from src when given (any address of the same family) */
static int connect_addr(const char *src, const char *dst, int port)
{
    struct sockaddr_storage ss, from;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    memset(&from, 0, sizeof from);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss, *f4 = (struct sockaddr_in *)&from;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss, *f6 = (struct sockaddr_in6 *)&from;
    if (inet_pton(AF_INET, dst, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        len = sizeof *s4;
        if (src && inet_pton(AF_INET, src, &f4->sin_addr) != 1)
            return -1;
    } else if (inet_pton(AF_INET6, dst, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        len = sizeof *s6;
        if (src && inet_pton(AF_INET6, src, &f6->sin6_addr) != 1)
            return -1;
    } else {
        return -1;
    }
    from.ss_family = ss.ss_family;
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if ((src && bind(fd, (struct sockaddr *)&from, len) < 0) ||
        connect(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int echo_byte(int fd, char ch)
{
    char b;
    return fd >= 0 && send_all(fd, &ch, 1) == 0 && recv_exact(fd, &b, 1) == 0 && b == ch ? 0 : -1;
}

/* closed by the server without a word: EOF or a reset, never an echo */
static int is_refused(int fd)
{
    char b;
    if (fd < 0)
        return 0;
    send(fd, "x", 1, MSG_NOSIGNAL);
    int refused = recv(fd, &b, 1, 0) <= 0;
    close(fd);
    return refused;
}

/* a new connection from 127.0.0.1 once the server has seen a close: retried while that is on its way */
static int connect_after_close(int port, char ch)
{
    for (int tries = 0; tries < 30; tries++) {
        int fd = connect_addr(NULL, "127.0.0.1", port);
        if (echo_byte(fd, ch) == 0)
            return fd;
        if (fd >= 0)
            close(fd);
        pause_ms(100);
    }
    return -1;
}

/* limit 2: IPv4 and IPv4-mapped peers from 127.0.0.1 share one count, 127.0.0.2 and ::1 have their own */
static int child_per_ip(int port, int arg)
{
    int a1 = connect_addr(NULL, "127.0.0.1", perip_ports[0]);
    if (echo_byte(a1, 'a'))
        return 2;
    int a2 = connect_addr(NULL, "127.0.0.1", perip_ports[1]);
    if (echo_byte(a2, 'b'))
        return 3;
    if (!is_refused(connect_addr(NULL, "127.0.0.1", perip_ports[0])))
        return 4;
    if (!is_refused(connect_addr(NULL, "127.0.0.1", perip_ports[1])))
        return 5;
    int b = connect_addr("127.0.0.2", "127.0.0.1", perip_ports[0]);
    if (echo_byte(b, 'c'))
        return 6;
    int v6 = connect_addr(NULL, "::1", perip_ports[2]);
    if (echo_byte(v6, 'd'))
        return 7;
    close(a1);
    int a4 = connect_after_close(perip_ports[0], 'e');
    if (a4 < 0)
        return 8;
    if (echo_byte(a2, 'f') || echo_byte(b, 'g') || echo_byte(a4, 'h'))
        return 9;
    if (!is_refused(connect_addr(NULL, "127.0.0.1", perip_ports[1])))
        return 10;
    close(a2);
    close(a4);
    close(b);
    close(v6);
    return 0;
}

static void test_per_ip(void)
{
    reset();
    T.want_closes = 5;
    T.opts.max_per_ip = 2;
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    perip_ports[0] = free_port(AF_INET);
    perip_ports[1] = free_port(AF_INET);
    perip_ports[2] = free_port(AF_INET6);
    CHECK_INT(0, net_listen(l, "127.0.0.1", perip_ports[0], 0, 0, 0));
    CHECK_INT(0, net_listen(l, "::ffff:127.0.0.1", perip_ports[1], 0, 0, 0));
    CHECK_INT(0, net_listen(l, "::1", perip_ports[2], 0, 0, 0));
    pid_t pid = spawn(child_per_ip, 0, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(5, T.opens);                  /* a1, a2, 127.0.0.2, ::1, and a1's successor */
    CHECK_INT(5, T.closes);
    CHECK_INT(8, T.data_bytes);
    CHECK_STR("127.0.0.1", T.peers[1]);     /* the mapped peer, shown and counted as IPv4 */
    CHECK_STR("127.0.0.2", T.peers[2]);
    CHECK_STR("::1", T.peers[3]);
    net_loop_free(l);
}

/* 'L' sets a limit of 1, 'U' removes it; the byte is echoed after the change */
static void h_per_ip_switch(void *ud, net_conn *c, const char *d, size_t n)
{
    if (n == 1 && (d[0] == 'L' || d[0] == 'U')) {
        T.opts.max_per_ip = d[0] == 'L' ? 1 : 0;
        net_set_options(T.l, &T.opts);
    }
    h_echo(ud, c, d, n);
}

static int child_per_ip_switch(int port, int arg)
{
    int a1 = connect_addr(NULL, "127.0.0.1", port), a2 = connect_addr(NULL, "127.0.0.1", port);
    if (echo_byte(a1, 'a') || echo_byte(a2, 'b'))
        return 2;
    if (echo_byte(a1, 'L'))                 /* limit 1 while two are open: both stay */
        return 3;
    if (!is_refused(connect_addr(NULL, "127.0.0.1", port)))
        return 4;
    if (echo_byte(a1, 'c') || echo_byte(a2, 'd'))
        return 5;
    close(a2);                              /* still one open: the limit is still reached */
    pause_ms(100);
    if (!is_refused(connect_addr(NULL, "127.0.0.1", port)))
        return 6;
    if (echo_byte(a1, 'U'))
        return 7;
    int a3 = connect_addr(NULL, "127.0.0.1", port), a4 = connect_addr(NULL, "127.0.0.1", port);
    if (echo_byte(a3, 'e') || echo_byte(a4, 'f'))
        return 8;
    close(a1);
    close(a3);
    close(a4);
    return 0;
}

static void test_per_ip_switch(void)
{
    reset();
    T.want_closes = 4;
    net_handlers h = { .on_open = h_open, .on_data = h_per_ip_switch, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_per_ip_switch, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(4, T.opens);
    CHECK_INT(4, T.closes);
    net_loop_free(l);
}

/* ---- read rate ---- */

#define RATE_BYTES (64 << 10)
#define RATE_LIMIT (16 << 10)

static void *h_rate_open(void *ud, net_conn *c, int tag)
{
    T.t_open = mono_now();
    net_conn_set_timer(c, 1);
    return h_open(ud, c, tag);
}

static void rate_note_memory(net_conn *c)
{
    size_t m = net_conn_memory(c);
    if (m > T.mem_max)
        T.mem_max = m;
}

/* while the peer is being held back: what does the connection hold? */
static void h_rate_timer(void *ud, net_conn *c, time_t now)
{
    T.timers++;
    rate_note_memory(c);
    net_conn_set_timer(c, 1);
}

static void h_rate_count(void *ud, net_conn *c, const char *d, size_t n)
{
    T.data_bytes += n;
    rate_note_memory(c);
    if (T.data_bytes == RATE_BYTES) {
        T.t_done = mono_now();
        CHECK_INT(0, net_conn_write(c, "k", 1));
    }
}

/* flat out, then wait for the server's word that everything arrived */
static int child_flood(int port, int bytes)
{
    static char buf[1 << 20];
    char b;
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0 || bytes > (int)sizeof buf)
        return 2;
    memset(buf, 'r', (size_t)bytes);
    if (send_all(fd, buf, (size_t)bytes) || recv_exact(fd, &b, 1) || b != 'k')
        return 3;
    close(fd);
    return 0;
}

static void test_read_rate(void)
{
    reset();
    T.opts.read_rate = RATE_LIMIT;
    T.opts.read_burst = RATE_LIMIT;
    net_handlers h = { .on_open = h_rate_open, .on_data = h_rate_count, .on_close = h_close,
                       .on_timer = h_rate_timer };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_flood, port, RATE_BYTES);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(RATE_BYTES, T.data_bytes);
    /* one burst at once, the other 48 KiB at 16 KiB/s: 3 s, whatever the machine's speed */
    CHECK(T.t_done - T.t_open >= 2.5, "64 KiB at 16 KiB/s took %.2f s", T.t_done - T.t_open);
    CHECK(T.timers >= 2, "timers fired while throttled: %d", T.timers);
    CHECK(T.mem_max <= 256, "the flood stayed in the kernel: the connection held %zu bytes", T.mem_max);
    net_loop_free(l);
}

#define CHANGE_FIRST (16 << 10)
#define CHANGE_REST  (256 << 10)    /* 32 s at the limited rate: past the child's alarm */
#define CHANGE_RATE  8192
#define CHANGE_BURST 2048

/* unlimited first; then limited from inside on_data; then unlimited again from a timer, which finds
 * the connection held back */
static void h_rate_change(void *ud, net_conn *c, const char *d, size_t n)
{
    T.data_bytes += n;
    rate_note_memory(c);
    if (T.phase == 0 && T.data_bytes == CHANGE_FIRST) {
        T.opts.read_rate = CHANGE_RATE;
        T.opts.read_burst = CHANGE_BURST;
        net_set_options(T.l, &T.opts);
        T.t_limit = mono_now();
        T.phase = 1;
        net_conn_set_timer(c, 2);
        CHECK_INT(0, net_conn_write(c, "1", 1));
    } else if (T.phase == 1) {
        T.phase_bytes += n;
        if (n > T.chunk_limited)
            T.chunk_limited = n;
    } else if (T.phase == 2 && n > T.chunk_free) {
        T.chunk_free = n;
    }
    if (T.data_bytes == CHANGE_FIRST + CHANGE_REST)
        CHECK_INT(0, net_conn_write(c, "2", 1));
}

static void h_rate_lift(void *ud, net_conn *c, time_t now)
{
    T.t_lift = mono_now();
    T.phase = 2;
    T.opts.read_rate = 0;
    net_set_options(T.l, &T.opts);
}

static int child_flood_twice(int port, int arg)
{
    static char buf[CHANGE_REST];
    char b;
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0)
        return 2;
    memset(buf, 'c', sizeof buf);
    if (send_all(fd, buf, CHANGE_FIRST) || recv_exact(fd, &b, 1) || b != '1')
        return 3;
    if (send_all(fd, buf, CHANGE_REST) || recv_exact(fd, &b, 1) || b != '2')
        return 4;
    close(fd);
    return 0;
}

static void test_rate_change(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_rate_change, .on_close = h_close,
                       .on_timer = h_rate_lift };
    net_loop *l = loop_new(&h, 0, 0);
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 0, 0, 0));
    pid_t pid = spawn(child_flood_twice, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));        /* all of it came through once the limit was lifted */
    CHECK_INT(2, T.phase);
    CHECK_INT(CHANGE_FIRST + CHANGE_REST, T.data_bytes);
    /* limited: no read larger than the bucket, no more than burst + rate * time */
    CHECK(T.chunk_limited > 0 && T.chunk_limited <= CHANGE_BURST, "largest limited read %zu",
          T.chunk_limited);
    double secs = T.t_lift - T.t_limit;
    CHECK(T.phase_bytes <= CHANGE_BURST + CHANGE_RATE * (secs + 0.1), "%zu bytes in %.2f s at %d/s",
          T.phase_bytes, secs, CHANGE_RATE);
    CHECK(T.chunk_free > CHANGE_BURST, "unlimited again: reads of %zu bytes", T.chunk_free);
    CHECK(T.mem_max <= 256, "the connection held %zu bytes", T.mem_max);
    net_loop_free(l);
}

/* ---- TLS ---- */

static char tls_dir[64];
static const char *const tls_names[] = { "example.test", "conference.example.test", NULL };

static int read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (int)n;
}

static void check_generated_cert(const char *cert_path)
{
    FILE *f = fopen(cert_path, "r");
    CHECK(f != NULL, "%s exists", cert_path);
    if (!f)
        return;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    CHECK(x != NULL, "certificate parses");
    if (!x)
        return;
    char buf[128] = "";
    EVP_PKEY *pk = X509_get0_pubkey(x);
    CHECK_INT(EVP_PKEY_EC, EVP_PKEY_get_base_id(pk));
    size_t glen = 0;
    CHECK_INT(1, EVP_PKEY_get_group_name(pk, buf, sizeof buf, &glen));
    CHECK_STR("prime256v1", buf);
    CHECK_INT(1, X509_verify(x, pk));
    CHECK_INT(NID_ecdsa_with_SHA256, X509_get_signature_nid(x));
    CHECK_INT(2, X509_get_version(x));
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof buf);
    CHECK_STR("example.test", buf);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    CHECK_INT(2, gens ? sk_GENERAL_NAME_num(gens) : -1);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && i < 2; i++) {
        int type;
        ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, i), &type);
        CHECK_INT(GEN_DNS, type);
        CHECK_STR(tls_names[i], (const char *)ASN1_STRING_get0_data(s));
    }
    GENERAL_NAMES_free(gens);
    CHECK_INT(1, X509_check_host(x, "conference.example.test", 0, 0, NULL));
    CHECK_INT(0, X509_get_extension_flags(x) & EXFLAG_CA);
    CHECK(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE, "keyUsage digitalSignature");
    CHECK(X509_get_extended_key_usage(x) & XKU_SSL_SERVER, "extendedKeyUsage serverAuth");
    int days = 0, secs = 0;
    CHECK_INT(1, ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)));
    CHECK(days >= 3649, "valid for about ten years (%d days)", days);
    X509_free(x);
}

static void test_tls_setup(void)
{
    char cert[128], key[128], cert2[128], key2[128], dir2[64], before[4096], after[4096];
    reset();
    net_handlers h = { 0 };
    net_loop *l = loop_new(&h, 0, 0);
    snprintf(tls_dir, sizeof tls_dir, "/tmp/couplet-net-XXXXXX");
    CHECK(mkdtemp(tls_dir) != NULL, "mkdtemp");
    CHECK_INT(0, net_tls_setup(l, "", "", tls_dir, tls_names));
    CHECK_INT(1, net_tls_available(l));
    snprintf(cert, sizeof cert, "%s/cert.pem", tls_dir);
    snprintf(key, sizeof key, "%s/key.pem", tls_dir);
    struct stat st;
    CHECK_INT(0, stat(key, &st));
    CHECK_INT(0600, st.st_mode & 0777);
    check_generated_cert(cert);
    net_loop_free(l);

    /* existing files are loaded, not regenerated */
    l = loop_new(&h, 0, 0);
    CHECK(read_file(cert, before, sizeof before) > 0, "read cert");
    CHECK_INT(0, net_tls_setup(l, NULL, NULL, tls_dir, tls_names));
    CHECK(read_file(cert, after, sizeof after) > 0, "read cert");
    CHECK_STR(before, after);
    CHECK_INT(0, net_tls_setup(l, cert, key, NULL, NULL));

    /* a key that does not belong to the certificate, and missing files, are refused */
    snprintf(dir2, sizeof dir2, "/tmp/couplet-net-XXXXXX");
    CHECK(mkdtemp(dir2) != NULL, "mkdtemp");
    net_loop *l2 = loop_new(&h, 0, 0);
    CHECK_INT(0, net_tls_setup(l2, "", "", dir2, NULL));
    net_loop_free(l2);
    T.l = l;
    snprintf(cert2, sizeof cert2, "%s/cert.pem", dir2);
    snprintf(key2, sizeof key2, "%s/key.pem", dir2);
    CHECK_INT(-1, net_tls_setup(l, cert, key2, NULL, NULL));
    CHECK_INT(-1, net_tls_setup(l, "/nonexistent/cert.pem", key, NULL, NULL));
    CHECK_INT(-1, net_tls_setup(l, cert, "", NULL, NULL));
    CHECK_INT(1, net_tls_available(l));     /* the good context stays */
    unlink(cert2);
    unlink(key2);
    rmdir(dir2);
    net_loop_free(l);
}

#define TLS_BULK 100000

static int ssl_read_exact(SSL *s, char *buf, size_t n)
{
    while (n > 0) {
        int r = SSL_read(s, buf, n > 16384 ? 16384 : (int)n);
        if (r <= 0)
            return -1;
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

/* arg: 1 = STARTTLS first */
static int child_tls(int port, int starttls)
{
    static char bulk[TLS_BULK], back[TLS_BULK];
    char buf[16];
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0)
        return 2;
    if (starttls && (send_all(fd, "<starttls/>", 11) || recv_exact(fd, buf, 10) ||
                     memcmp(buf, "<proceed/>", 10)))
        return 3;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *s = ctx ? SSL_new(ctx) : NULL;
    if (!s || !SSL_set_fd(s, fd) || !SSL_set_tlsext_host_name(s, "example.test"))
        return 4;
    if (SSL_connect(s) != 1)
        return 5;
    if (SSL_write(s, "hello tls", 9) != 9 || ssl_read_exact(s, buf, 9) || memcmp(buf, "hello tls", 9))
        return 6;
    for (size_t i = 0; i < sizeof bulk; i++)
        bulk[i] = (char)('a' + i % 26);
    if (SSL_write(s, bulk, sizeof bulk) != (int)sizeof bulk || ssl_read_exact(s, back, sizeof back) ||
        memcmp(bulk, back, sizeof bulk))
        return 7;
    SSL_shutdown(s);
    SSL_free(s);
    SSL_CTX_free(ctx);
    close(fd);
    return 0;
}

static void h_starttls_echo(void *ud, net_conn *c, const char *d, size_t n)
{
    if (!net_conn_is_tls(c) && n == 11 && memcmp(d, "<starttls/>", 11) == 0) {
        T.plain_bytes += n;
        CHECK_INT(0, net_conn_write(c, "<proceed/>", 10));
        T.starttls_rc = net_conn_starttls(c);
        CHECK_INT(-1, net_conn_starttls(c));        /* once only */
        return;
    }
    h_echo(ud, c, d, n);
}

static void test_tls_echo(int starttls)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_starttls_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(0, net_tls_setup(l, "", "", tls_dir, tls_names));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, !starttls, 1, 0));
    pid_t pid = spawn(child_tls, port, starttls);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.opens);
    CHECK_INT(1, T.closes);
    CHECK_STR("peer closed", T.reason);
    CHECK_INT(starttls ? 11 : 0, T.plain_bytes);
    CHECK_INT(9 + TLS_BULK, T.tls_bytes);
    CHECK_INT(0, T.writes_failed);
    if (starttls)
        CHECK_INT(0, T.starttls_rc);
    net_loop_free(l);
}

static int child_tls_garbage(int port, int arg)
{
    char buf[256];
    int fd = connect_to(AF_INET, port, 0);
    if (fd < 0 || send_all(fd, "GET / HTTP/1.0\r\n\r\n", 18))
        return 2;
    while (recv(fd, buf, sizeof buf, 0) > 0)    /* an alert at most, then EOF */
        ;
    close(fd);
    return 0;
}

static void test_tls_garbage(void)
{
    reset();
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(0, net_tls_setup(l, "", "", tls_dir, tls_names));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 1, 0, 0));
    pid_t pid = spawn(child_tls_garbage, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(1, T.closes);
    CHECK_INT(0, T.data_bytes);
    CHECK(strstr(T.reason, "SSL") || strstr(T.reason, "ssl") || strstr(T.reason, "TLS"),
          "a TLS error reason: %s", T.reason);
    net_loop_free(l);
}

/* ---- certificate reload ---- */

static char reload_cert[128], reload_key[128], first_cert[128], first_key[128];

/* a self-signed P-256 certificate for cn, written as PEM */
static int make_cert(const char *cn, const char *cert_path, const char *key_path)
{
    int ok = 0;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *fc = NULL, *fk = NULL;
    if (k && x && X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 2) &&
        X509_gmtime_adj(X509_getm_notBefore(x), 0) && X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
        X509_set_pubkey(x, k) &&
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)cn, -1, -1, 0) &&
        X509_set_issuer_name(x, X509_get_subject_name(x)) && X509_sign(x, k, EVP_sha256()) &&
        (fc = fopen(cert_path, "w")) && (fk = fopen(key_path, "w")) &&
        PEM_write_X509(fc, x) && PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL))
        ok = 1;
    if (fc && fclose(fc) != 0)
        ok = 0;
    if (fk && fclose(fk) != 0)
        ok = 0;
    X509_free(x);
    EVP_PKEY_free(k);
    return ok ? 0 : -1;
}

/* "R": reload with the second certificate; "B": two reloads that must fail; the answer is "ok" or "no" */
static void h_reload(void *ud, net_conn *c, const char *d, size_t n)
{
    if (n == 1 && d[0] == 'R') {
        T.reload_rc[0] = net_tls_reload(T.l, reload_cert, reload_key, NULL, NULL);
        CHECK_INT(0, net_conn_write(c, T.reload_rc[0] == 0 ? "ok" : "no", 2));
        return;
    }
    if (n == 1 && d[0] == 'B') {
        T.reload_rc[1] = net_tls_reload(T.l, "/nonexistent/cert.pem", reload_key, NULL, NULL);
        T.reload_rc[2] = net_tls_reload(T.l, first_cert, reload_key, NULL, NULL);  /* wrong key */
        CHECK_INT(0, net_conn_write(c, T.reload_rc[1] < 0 && T.reload_rc[2] < 0 ? "no" : "ok", 2));
        return;
    }
    h_echo(ud, c, d, n);
}

static SSL *tls_connect(SSL_CTX *ctx, int port)
{
    int fd = connect_to(AF_INET, port, 0);
    SSL *s = fd >= 0 ? SSL_new(ctx) : NULL;
    if (!s || !SSL_set_fd(s, fd) || SSL_connect(s) != 1) {
        SSL_free(s);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    return s;
}

static void tls_disconnect(SSL *s)
{
    if (!s)
        return;
    int fd = SSL_get_fd(s);
    SSL_shutdown(s);
    SSL_free(s);
    close(fd);
}

/* the subject CN the server presented is cn */
static int tls_cn_is(SSL *s, const char *cn)
{
    char buf[128] = "";
    X509 *x = s ? SSL_get1_peer_certificate(s) : NULL;
    if (!x)
        return 0;
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof buf);
    X509_free(x);
    return strcmp(buf, cn) == 0;
}

static int tls_ask(SSL *s, const char *msg, const char *want)
{
    char buf[64];
    size_t n = strlen(want);
    return s && SSL_write(s, msg, (int)strlen(msg)) == (int)strlen(msg) && n < sizeof buf &&
           ssl_read_exact(s, buf, n) == 0 && memcmp(buf, want, n) == 0 ? 0 : -1;
}

static int child_tls_reload(int port, int arg)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return 2;
    SSL *a = tls_connect(ctx, port);
    if (!tls_cn_is(a, "example.test") || tls_ask(a, "one", "one"))
        return 3;
    if (tls_ask(a, "R", "ok"))
        return 4;
    SSL *b = tls_connect(ctx, port);
    if (!tls_cn_is(b, "reloaded.test") || tls_ask(b, "two", "two"))
        return 5;
    tls_disconnect(b);
    if (tls_ask(a, "three", "three"))       /* the session from before the reload goes on */
        return 6;
    if (tls_ask(a, "B", "no"))
        return 7;
    SSL *c = tls_connect(ctx, port);
    if (!tls_cn_is(c, "reloaded.test") || tls_ask(c, "four", "four"))
        return 8;
    tls_disconnect(c);
    if (tls_ask(a, "five", "five"))
        return 9;
    tls_disconnect(a);
    SSL_CTX_free(ctx);
    return 0;
}

static void test_tls_reload(void)
{
    reset();
    T.want_closes = 3;
    T.reload_rc[0] = T.reload_rc[1] = T.reload_rc[2] = 99;
    snprintf(first_cert, sizeof first_cert, "%s/cert.pem", tls_dir);
    snprintf(first_key, sizeof first_key, "%s/key.pem", tls_dir);
    snprintf(reload_cert, sizeof reload_cert, "%s/cert2.pem", tls_dir);
    snprintf(reload_key, sizeof reload_key, "%s/key2.pem", tls_dir);
    CHECK_INT(0, make_cert("reloaded.test", reload_cert, reload_key));
    net_handlers h = { .on_open = h_open, .on_data = h_reload, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(0, net_tls_setup(l, "", "", tls_dir, tls_names));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 1, 0, 0));
    pid_t pid = spawn(child_tls_reload, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(0, T.reload_rc[0]);
    CHECK_INT(-1, T.reload_rc[1]);
    CHECK_INT(-1, T.reload_rc[2]);
    CHECK_INT(3, T.opens);
    CHECK_INT(3, T.closes);
    CHECK_INT(1, net_tls_available(l));
    net_loop_free(l);
    unlink(reload_cert);
    unlink(reload_key);
}

/* TLS: the bucket is charged the ciphertext, and a read started with tokens left may finish a 16 KiB
 * record on credit: 64 KiB at 32 KiB/s after an 8 KiB burst take at least (64 - 8 - 16) / 32 = 1.25 s */
static int child_tls_flood(int port, int arg)
{
    static char buf[RATE_BYTES];
    char b;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *s = ctx ? tls_connect(ctx, port) : NULL;
    if (!s)
        return 2;
    memset(buf, 't', sizeof buf);
    for (size_t off = 0; off < sizeof buf; ) {
        int w = SSL_write(s, buf + off, (int)(sizeof buf - off));
        if (w <= 0)
            return 3;
        off += (size_t)w;
    }
    if (ssl_read_exact(s, &b, 1) || b != 'k')
        return 4;
    tls_disconnect(s);
    SSL_CTX_free(ctx);
    return 0;
}

static void test_tls_read_rate(void)
{
    reset();
    T.opts.read_rate = 32 << 10;
    T.opts.read_burst = 8 << 10;
    net_handlers h = { .on_open = h_rate_open, .on_data = h_rate_count, .on_close = h_close,
                       .on_timer = h_rate_timer };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(0, net_tls_setup(l, "", "", tls_dir, tls_names));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 1, 0, 0));
    pid_t pid = spawn(child_tls_flood, port, 0);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(RATE_BYTES, T.data_bytes);
    CHECK(T.t_done - T.t_open >= 1.0, "64 KiB over TLS at 32 KiB/s took %.2f s", T.t_done - T.t_open);
    net_loop_free(l);
}

/* ---- TLS profile (TLS 1.2+, AEAD with ECDHE only), ALPN and SNI ---- */

/* One client handshake: what the client offers and what it must end up with. want is "ok VERSION CIPHER
 * alpn=PROTO|- cn=CN" after an echo round trip, or "fail REASON" with OpenSSL's reason for the client's
 * failure: "... alert ..." reasons prove the server refused what the client really sent. */
struct tls_probe {
    int min, max;               /* client protocol versions (0 = OpenSSL's default) */
    const char *ciphers;        /* TLS 1.2 and older cipher list, NULL = default */
    const char *alpn;           /* ALPN wire format (length-prefixed names), NULL = no extension */
    unsigned alpn_len;
    const char *sni;            /* server_name, NULL = none */
    const char *want;
};

/* weak clients need security level 0 to offer what they offer at all */
static const struct tls_probe tls_probes[] = {
    /* CBC, SHA-1 and SHA-256 MACs, over TLS 1.2: no shared cipher */
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0", NULL, 0, NULL,
      "fail sslv3 alert handshake failure" },
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0",
      NULL, 0, NULL, "fail sslv3 alert handshake failure" },
    /* TLS 1.1 and 1.0, with every cipher the client has */
    { TLS1_1_VERSION, TLS1_1_VERSION, "ALL:@SECLEVEL=0", NULL, 0, NULL, "fail tlsv1 alert protocol version" },
    { TLS1_VERSION, TLS1_VERSION, "ALL:@SECLEVEL=0", NULL, 0, NULL, "fail tlsv1 alert protocol version" },
    /* TLS 1.2 AEAD suites with ECDHE */
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL, 0, NULL,
      "ok TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 alpn=- cn=example.test" },
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", NULL, 0, NULL,
      "ok TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305 alpn=- cn=example.test" },
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384", NULL, 0, NULL,
      "ok TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384 alpn=- cn=example.test" },
    /* a TLS 1.2 client offering everything, CBC first: the server's order picks ChaCha20 */
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:ALL:@SECLEVEL=0", NULL, 0, NULL,
      "ok TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305 alpn=- cn=example.test" },
    /* ALPN (XEP-0368): xmpp-client is chosen wherever it stands; no ALPN or only others: none, accepted */
    { 0, 0, NULL, "\x0bxmpp-client", 12, "localhost",
      "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=xmpp-client cn=example.test" },
    { 0, 0, NULL, "\x02h2\x08http/1.1\x0bxmpp-client", 24, NULL,
      "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=xmpp-client cn=example.test" },
    { TLS1_2_VERSION, TLS1_2_VERSION, NULL, "\x0bxmpp-client", 12, NULL,
      "ok TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305 alpn=xmpp-client cn=example.test" },
    { 0, 0, NULL, NULL, 0, NULL, "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=- cn=example.test" },
    { 0, 0, NULL, "\x02h2", 3, NULL, "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=- cn=example.test" },
    { 0, 0, NULL, "\x02h2\x08http/1.1\x0axmpp-clien", 23, NULL,
      "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=- cn=example.test" },
    /* SNI: our name, another name; no name was tried above */
    { 0, 0, NULL, NULL, 0, "localhost", "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=- cn=example.test" },
    { 0, 0, NULL, NULL, 0, "other.example", "ok TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 alpn=- cn=example.test" },
    { TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL, 0, "other.example",
      "ok TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305 alpn=- cn=example.test" },
};
#define TLS_NPROBES ((int)(sizeof tls_probes / sizeof tls_probes[0]))
#define TLS_PROBE_LINE 160

static int probe_pipe[2];

/* the outcome of one probe against port, written into out (TLS_PROBE_LINE bytes) */
static void tls_probe_do(int port, const struct tls_probe *p, char *out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *s = ctx ? SSL_new(ctx) : NULL;
    int fd = connect_to(AF_INET, port, 0);
    snprintf(out, TLS_PROBE_LINE, "client setup failed");
    if (!s || fd < 0 || (p->min && !SSL_set_min_proto_version(s, p->min)) ||
        (p->max && !SSL_set_max_proto_version(s, p->max)) ||
        (p->ciphers && !SSL_set_cipher_list(s, p->ciphers)) ||
        (p->alpn && SSL_set_alpn_protos(s, (const unsigned char *)p->alpn, p->alpn_len) != 0) ||
        (p->sni && !SSL_set_tlsext_host_name(s, p->sni)) || !SSL_set_fd(s, fd))
        goto out;
    ERR_clear_error();
    if (SSL_connect(s) != 1) {
        const char *why = ERR_reason_error_string(ERR_peek_last_error());
        snprintf(out, TLS_PROBE_LINE, "fail %s", why ? why : "(no reason)");
        goto out;
    }
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    char cn[64] = "", buf[4];
    SSL_get0_alpn_selected(s, &proto, &plen);
    X509 *x = SSL_get1_peer_certificate(s);
    if (x)
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    X509_free(x);
    if (SSL_write(s, "ping", 4) != 4 || ssl_read_exact(s, buf, 4) || memcmp(buf, "ping", 4)) {
        snprintf(out, TLS_PROBE_LINE, "no echo after the handshake");
        goto out;
    }
    snprintf(out, TLS_PROBE_LINE, "ok %s %s alpn=%.*s cn=%s", SSL_get_version(s), SSL_get_cipher_name(s),
             plen ? (int)plen : 1, plen ? (const char *)proto : "-", cn);
    SSL_shutdown(s);
out:
    SSL_free(s);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
}

static int child_tls_probes(int port, int arg)
{
    char line[TLS_PROBE_LINE];
    close(probe_pipe[0]);
    for (int i = 0; i < TLS_NPROBES; i++) {
        memset(line, 0, sizeof line);
        tls_probe_do(port, &tls_probes[i], line);
        if (write(probe_pipe[1], line, sizeof line) != (ssize_t)sizeof line)
            return 2;
    }
    return 0;
}

/* every probe against a fresh context, then (reload = 1) against one installed by net_tls_reload */
static void test_tls_profile(int reload)
{
    reset();
    T.want_closes = TLS_NPROBES;
    net_handlers h = { .on_open = h_open, .on_data = h_echo, .on_close = h_close };
    net_loop *l = loop_new(&h, 0, 0);
    CHECK_INT(0, net_tls_setup(l, "", "", tls_dir, tls_names));
    if (reload)
        CHECK_INT(0, net_tls_reload(l, "", "", tls_dir, tls_names));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, 1, 0, 0));
    CHECK_INT(0, pipe(probe_pipe));
    pid_t pid = spawn(child_tls_probes, port, 0);
    close(probe_pipe[1]);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, child_status(pid));
    CHECK_INT(TLS_NPROBES, T.opens);
    CHECK_INT(TLS_NPROBES, T.closes);
    for (int i = 0; i < TLS_NPROBES; i++) {
        char line[TLS_PROBE_LINE] = "(no answer from the client)";
        if (read(probe_pipe[0], line, sizeof line) != (ssize_t)sizeof line)
            snprintf(line, sizeof line, "(no answer from the client)");
        line[sizeof line - 1] = '\0';
        CHECK(strcmp(tls_probes[i].want, line) == 0, "%sprobe %d:\n  expected: %s\n  got:      %s",
              reload ? "after reload, " : "", i, tls_probes[i].want, line);
    }
    close(probe_pipe[0]);
    net_loop_free(l);
}

/* ---- outbound connections (net_connect) and client-side TLS: both ends in this process's loop ---- */

/* what the outbound side saw; the accepted side is recorded in T by the usual handlers */
static struct {
    int mode;                       /* O_PLAIN, O_DIRECT_TLS or O_STARTTLS */
    const char *name, *ca;          /* for net_conn_start_tls_client */
    const char *expect;             /* the echo the outbound side waits for, then closes */
    int connects, connect_ok, closes, timers, want_closes, guard_fired;
    int tls_rc, bad_rcs, verified, is_tls, server_verified;
    char why[200], reason[200], peer[64], version[32], got[64];
    size_t got_len;
    double t_start, t_answer;
} O;

enum { O_PLAIN, O_DIRECT_TLS, O_STARTTLS };

static void o_reset(int mode, const char *expect)
{
    reset();
    memset(&O, 0, sizeof O);
    O.mode = mode;
    O.expect = expect;
    O.want_closes = 2;
    O.tls_rc = O.verified = O.is_tls = O.server_verified = 99;
}

/* a test's loop never outlives this: a timerfd watch stops it and says so */
static int guard_fd = -1;

static void guard_ready(void *ud)
{
    uint64_t n;
    if (read(guard_fd, &n, sizeof n) == (ssize_t)sizeof n) {
        O.guard_fired = 1;
        net_loop_stop(T.l);
    }
}

static void guard_start(net_loop *l, int secs)
{
    struct itimerspec it = { .it_value = { secs, 0 } };
    guard_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    CHECK(guard_fd >= 0 && timerfd_settime(guard_fd, 0, &it, NULL) == 0, "timerfd");
    CHECK_INT(0, net_watch(l, guard_fd, guard_ready, NULL));
}

static void guard_stop(void)
{
    if (guard_fd >= 0)
        close(guard_fd);
    guard_fd = -1;
}

/* start TLS as the client, after the calls that must be refused */
static void o_start_tls(net_conn *c)
{
    O.bad_rcs += net_conn_start_tls_client(c, "", O.ca) != -1;
    O.bad_rcs += net_conn_start_tls_client(c, O.name, "/nonexistent/ca.pem") != -1;
    O.tls_rc = net_conn_start_tls_client(c, O.name, O.ca);
    O.bad_rcs += net_conn_start_tls_client(c, O.name, O.ca) != -1;    /* once only */
    O.bad_rcs += net_conn_starttls(c) != -1;                         /* nor the server side */
}

static void o_connect(void *ud, net_conn *c, int ok, const char *why)
{
    CHECK(ud == &O, "on_connect gets net_connect's ud");
    O.connects++;
    O.connect_ok = ok;
    O.t_answer = mono_now();
    snprintf(O.why, sizeof O.why, "%s", why);
    snprintf(O.peer, sizeof O.peer, "%s", net_conn_peer(c));
    if (!ok) {
        net_loop_stop(T.l);
        return;
    }
    if (O.mode == O_PLAIN)
        net_conn_set_timer(c, 0);   /* the timer is ours now: it writes the rest */
    if (O.mode == O_DIRECT_TLS) {
        o_start_tls(c);
        CHECK_INT(0, net_conn_write(c, "hello tls", 9));    /* waits for the handshake */
    }
    if (O.mode == O_STARTTLS)
        CHECK_INT(0, net_conn_write(c, "<starttls/>", 11));
}

static void o_timer(void *ud, net_conn *c, time_t now)
{
    CHECK(ud == &O, "on_timer for the outbound connection");
    O.timers++;
    CHECK_INT(0, net_conn_write(c, " hello", 6));
}

static void o_outbound_data(net_conn *c, const char *d, size_t n)
{
    if (O.got_len + n >= sizeof O.got) {
        net_conn_close(c);
        return;
    }
    memcpy(O.got + O.got_len, d, n);
    O.got_len += n;
    O.got[O.got_len] = '\0';
    if (O.mode == O_STARTTLS && !net_conn_is_tls(c) && strcmp(O.got, "<proceed/>") == 0) {
        O.got_len = 0;
        o_start_tls(c);
        CHECK_INT(0, net_conn_write(c, "hello tls", 9));
        return;
    }
    if (O.got_len < strlen(O.expect))
        return;
    O.verified = net_conn_tls_verified(c);
    O.is_tls = net_conn_is_tls(c);
    const char *v = net_conn_tls_version(c);
    snprintf(O.version, sizeof O.version, "%s", v ? v : "none");
    net_conn_close(c);
}

static void o_data(void *ud, net_conn *c, const char *d, size_t n)
{
    if (ud == &O) {
        o_outbound_data(c, d, n);
        return;
    }
    if (net_conn_is_tls(c))
        O.server_verified = net_conn_tls_verified(c);
    h_starttls_echo(ud, c, d, n);   /* the accepted side: STARTTLS on request, echo the rest */
}

static void o_close(void *ud, net_conn *c, const char *reason)
{
    if (ud == &O) {
        O.closes++;
        snprintf(O.reason, sizeof O.reason, "%s", reason);
    } else {
        T.closes++;
        snprintf(T.reason, sizeof T.reason, "%s", reason);
    }
    if (O.closes + T.closes >= O.want_closes)
        net_loop_stop(T.l);
}

static net_loop *o_loop_new(void)
{
    static net_handlers h = { .on_open = h_open, .on_data = o_data, .on_close = o_close,
                              .on_timer = o_timer, .on_connect = o_connect };
    net_loop *l = loop_new(&h, 0, 0);
    guard_start(l, 10);
    return l;
}

static void o_loop_free(net_loop *l)
{
    net_loop_free(l);
    guard_stop();
}

/* data both ways; bytes written before the connect completes wait for it; the timer works afterwards */
static void test_connect(int family, const char *addr)
{
    o_reset(O_PLAIN, "early hello");
    net_loop *l = o_loop_new();
    int port = free_port(family);
    CHECK_INT(0, net_listen(l, addr, port, 0, 0, 3));
    net_conn *c = net_connect(l, addr, port, 5, &O);
    CHECK(c != NULL, "net_connect to [%s]:%d", addr, port);
    CHECK_INT(0, net_conn_write(c, "early", 5));
    CHECK_INT(0, O.connects);               /* never from inside the call */
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, O.guard_fired);
    CHECK_INT(1, O.connects);
    CHECK_INT(1, O.connect_ok);
    CHECK_STR("connected", O.why);
    CHECK_STR(addr, O.peer);
    CHECK_INT(1, O.timers);
    CHECK_STR("early hello", O.got);
    CHECK_INT(11, T.data_bytes);            /* what the accepted side echoed */
    CHECK_INT(1, T.opens);
    CHECK_INT(3, T.tag);
    CHECK_INT(0, O.is_tls);
    CHECK_INT(0, O.verified);
    CHECK_STR("none", O.version);
    CHECK_INT(1, O.closes);
    CHECK_STR("closed", O.reason);
    CHECK_INT(1, T.closes);
    CHECK_STR("peer closed", T.reason);
    o_loop_free(l);
}

static void test_connect_refused(void)
{
    o_reset(O_PLAIN, "");
    net_loop *l = o_loop_new();
    int port = free_port(AF_INET);          /* nobody listens there */
    CHECK(net_connect(l, "localhost", port, 5, &O) == NULL, "names are not resolved here");
    CHECK(net_connect(l, "127.0.0.1", 0, 5, &O) == NULL, "port 0");
    CHECK(net_connect(l, "127.0.0.1", 70000, 5, &O) == NULL, "port 70000");
    CHECK(net_connect(l, "127.0.0.1", port, 5, NULL) == NULL, "a connection needs its ud");
    CHECK(net_connect(l, "127.0.0.1", port, 5, &O) != NULL, "net_connect");
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, O.guard_fired);
    CHECK_INT(1, O.connects);
    CHECK_INT(0, O.connect_ok);
    CHECK_STR("Connection refused", O.why);
    CHECK_STR("127.0.0.1", O.peer);
    CHECK_INT(0, O.closes);                 /* a failed connect ends with on_connect alone */
    CHECK_INT(0, T.opens);
    o_loop_free(l);
}

/* A listener with a backlog of 0 holds one connection nobody accepts; with its queue full, the kernel
 * drops further SYNs, so a connect to it waits for a SYN-ACK that never comes. */
static int listener_full(int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 0) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_connect_timeout(void)
{
    o_reset(O_PLAIN, "");
    net_loop *l = o_loop_new();
    int port = 0, fd = listener_full(&port);
    CHECK(fd >= 0, "a listener with backlog 0");
    int filler = connect_to(AF_INET, port, 0);  /* takes the one place in the accept queue */
    CHECK(filler >= 0, "the first connect is queued");
    pause_ms(50);
    O.t_start = mono_now();
    net_conn *c = net_connect(l, "127.0.0.1", port, 1, &O);
    CHECK(c != NULL, "net_connect");
    net_conn_set_timer(c, -1);              /* ignored: the timer is the connect timeout */
    CHECK_INT(0, net_conn_write(c, "never sent", 10));
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, O.guard_fired);
    CHECK_INT(1, O.connects);
    CHECK_INT(0, O.connect_ok);
    CHECK_STR("connect timeout", O.why);
    CHECK(O.t_answer - O.t_start >= 1.0, "waited at least the timeout: %.2f s", O.t_answer - O.t_start);
    CHECK_INT(0, O.closes);
    CHECK_INT(0, O.timers);
    o_loop_free(l);
    close(filler);
    close(fd);
}

/* closing before the connect completes abandons it: on_connect says so, from the loop */
static void test_connect_abandoned(void)
{
    o_reset(O_PLAIN, "");
    net_loop *l = o_loop_new();
    int port = 0, fd = listener_full(&port);
    int filler = connect_to(AF_INET, port, 0);
    CHECK(fd >= 0 && filler >= 0, "a full listener");
    pause_ms(50);
    net_conn *c = net_connect(l, "127.0.0.1", port, 5, &O);
    CHECK(c != NULL, "net_connect");
    net_conn_close(c);
    CHECK_INT(0, O.connects);
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, O.guard_fired);
    CHECK_INT(1, O.connects);
    CHECK_INT(0, O.connect_ok);
    CHECK_STR("closed before connecting", O.why);
    CHECK_INT(0, O.closes);
    o_loop_free(l);
    close(filler);
    close(fd);
}

/* ---- client-side TLS: a test CA, a leaf for "localhost" it signed, and a self-signed "localhost" ---- */

static char ca_cert[128], ca_key[128], leaf_cert[128], leaf_key[128], self_cert[128], self_key[128];

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    int ok = e && X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok;
}

static int pem_write(const char *cert_path, const char *key_path, X509 *x, EVP_PKEY *k)
{
    FILE *fc = fopen(cert_path, "w"), *fk = fopen(key_path, "w");
    int ok = fc && fk && PEM_write_X509(fc, x) && PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL);
    if (fc && fclose(fc) != 0)
        ok = 0;
    if (fk && fclose(fk) != 0)
        ok = 0;
    return ok;
}

/* a P-256 certificate for cn signed by issuer (itself when issuer is NULL): a CA, or a server
 * certificate with cn as its DNS name. Returned (the caller frees) and written as PEM. */
static X509 *issue_cert(const char *cn, int serial, int ca, X509 *issuer, EVP_PKEY *issuer_key,
                        const char *cert_path, const char *key_path, EVP_PKEY **key)
{
    char san[128];
    snprintf(san, sizeof san, "DNS:%s", cn);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int ok = k && x && X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -60) && X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
             X509_set_pubkey(x, k) &&
             X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                        (const unsigned char *)cn, -1, -1, 0) &&
             X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
    if (ok && ca)
        ok = add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    else if (ok)
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, issuer, NID_subject_alt_name, san) &&
             add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
    ok = ok && X509_sign(x, issuer_key ? issuer_key : k, EVP_sha256()) && pem_write(cert_path, key_path, x, k);
    if (!ok || !key) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    if (!ok) {
        X509_free(x);
        x = NULL;
    }
    if (key)
        *key = k;
    return x;
}

static void tls_client_certs(void)
{
    EVP_PKEY *k = NULL;
    snprintf(ca_cert, sizeof ca_cert, "%s/ca.pem", tls_dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca-key.pem", tls_dir);
    snprintf(leaf_cert, sizeof leaf_cert, "%s/leaf.pem", tls_dir);
    snprintf(leaf_key, sizeof leaf_key, "%s/leaf-key.pem", tls_dir);
    snprintf(self_cert, sizeof self_cert, "%s/self.pem", tls_dir);
    snprintf(self_key, sizeof self_key, "%s/self-key.pem", tls_dir);
    X509 *ca = issue_cert("Couplet test CA", 1, 1, NULL, NULL, ca_cert, ca_key, &k);
    CHECK(ca != NULL, "the test CA");
    X509 *leaf = ca ? issue_cert("localhost", 2, 0, ca, k, leaf_cert, leaf_key, NULL) : NULL;
    CHECK(leaf != NULL, "a leaf for localhost signed by the CA");
    CHECK_INT(0, make_cert("localhost", self_cert, self_key));
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(k);
}

/* The outbound side verifies the accepted side's certificate (cert) as name against ca (NULL: the
 * system's store). want_reason NULL: it must verify, and data goes both ways over TLS 1.3; otherwise
 * the outbound side is closed with a reason containing want_reason and nothing reaches on_data. */
static void test_tls_client(int mode, const char *cert, const char *key, const char *name, const char *ca,
                            const char *want_reason)
{
    o_reset(mode, "hello tls");
    O.name = name;
    O.ca = ca;
    net_loop *l = o_loop_new();
    CHECK_INT(0, net_tls_setup(l, cert, key, NULL, NULL));
    int port = free_port(AF_INET);
    CHECK_INT(0, net_listen(l, "127.0.0.1", port, mode == O_DIRECT_TLS, 0, 0));
    CHECK(net_connect(l, "127.0.0.1", port, 5, &O) != NULL, "net_connect");
    CHECK_INT(0, net_loop_run(l));
    CHECK_INT(0, O.guard_fired);
    CHECK_INT(1, O.connect_ok);
    CHECK_INT(0, O.tls_rc);
    CHECK_INT(0, O.bad_rcs);
    CHECK_INT(1, O.closes);
    CHECK_INT(1, T.closes);
    if (!want_reason) {
        CHECK_STR("hello tls", O.got);
        CHECK_INT(1, O.is_tls);
        CHECK_INT(1, O.verified);
        CHECK_INT(0, O.server_verified);    /* the accepted side asked for no certificate */
        CHECK_STR("TLSv1.3", O.version);
        CHECK_INT(9, T.tls_bytes);
        CHECK_STR("closed", O.reason);
    } else {
        CHECK(strstr(O.reason, "TLS certificate verify failed") && strstr(O.reason, want_reason),
              "the outbound side says why: %s", O.reason);
        CHECK_INT(0, O.got_len);
        CHECK_INT(0, T.tls_bytes);
    }
    o_loop_free(l);
}

static void test_tls_clients(void)
{
    tls_client_certs();
    test_tls_client(O_DIRECT_TLS, leaf_cert, leaf_key, "localhost", ca_cert, NULL);
    test_tls_client(O_STARTTLS, leaf_cert, leaf_key, "localhost", ca_cert, NULL);
    test_tls_client(O_DIRECT_TLS, self_cert, self_key, "localhost", ca_cert, "self-signed");
    test_tls_client(O_DIRECT_TLS, leaf_cert, leaf_key, "example.org", ca_cert, "hostname mismatch");
    test_tls_client(O_STARTTLS, leaf_cert, leaf_key, "example.org", ca_cert, "hostname mismatch");
    test_tls_client(O_DIRECT_TLS, leaf_cert, leaf_key, "localhost", NULL, "unable to get local issuer");
    const char *files[] = { ca_cert, ca_key, leaf_cert, leaf_key, self_cert, self_key };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
}

static void tls_cleanup(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/cert.pem", tls_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/key.pem", tls_dir);
    unlink(p);
    rmdir(tls_dir);
}

int main(void)
{
    log_level = LOG_ERR;
    alarm(120);                             /* hard stop for the whole suite */
    test_echo(AF_INET, "127.0.0.1");
    test_echo(AF_INET6, "::1");
    test_listen_errors();
    test_coalesce();
    test_defer_accept();
    test_peer_reset();
    test_close_flushes();
    test_overflow();
    test_close_timeout();
    test_emfile();
    test_timers();
    test_stop_flushes();
    test_signal(SIGTERM);
    test_signal(SIGHUP);
    test_max_connections();
    test_per_ip();
    test_per_ip_switch();
    test_read_rate();
    test_rate_change();
    test_refuse();
    test_tls_setup();
    test_tls_echo(0);
    test_tls_echo(1);
    test_tls_garbage();
    test_tls_reload();
    test_tls_read_rate();
    test_tls_profile(0);
    test_tls_profile(1);
    test_connect(AF_INET, "127.0.0.1");
    test_connect(AF_INET6, "::1");
    test_connect_refused();
    test_connect_timeout();
    test_connect_abandoned();
    test_tls_clients();
    tls_cleanup();
    return check_summary("net_epoll");
}
