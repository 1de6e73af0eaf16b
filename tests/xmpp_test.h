/* xmpp_test.h - what the integration tests share: a couplet process on a free loopback port with a fresh
 * data directory, and a raw XMPP client over a plain socket (PLAIN auth, bind, ping). Header-only: each test
 * binary is one file linked with the core objects. Every wait is bounded. */
#ifndef COUPLET_XMPP_TEST_H
#define COUPLET_XMPP_TEST_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"

static char couplet_bin[PATH_MAX];
static char tmpdir[] = "/tmp/couplet-test-XXXXXX";
static int port;
static pid_t server_pid = -1;

static inline long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static inline int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static inline int tcp_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* send exactly len bytes (input with NUL bytes in it); stops quietly if the peer is gone */
static inline void send_bytes(int fd, const void *data, size_t len) {
    const char *s = data;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += (size_t)n;
    }
}

static inline void send_str(int fd, const char *s) {
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += (size_t)n;
    }
}

/* Read into buf until `want` appears, the peer closes, or timeout_ms passes. Returns 1 if want was seen. */
static inline int read_until(int fd, char *buf, size_t cap, size_t *len, const char *want, int timeout_ms) {
    long end = now_ms() + timeout_ms;
    while (!strstr(buf, want)) {
        long left = end - now_ms();
        if (left <= 0 || *len + 1 >= cap) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0) return 0;
        ssize_t n = recv(fd, buf + *len, cap - *len - 1, 0);
        if (n <= 0) return strstr(buf, want) != NULL;
        *len += (size_t)n;
        buf[*len] = 0;
    }
    return 1;
}

/* 1 if the server closed the connection (EOF) within timeout_ms; data before EOF is appended to buf */
static inline int wait_closed(int fd, char *buf, size_t cap, size_t *len, int timeout_ms) {
    long end = now_ms() + timeout_ms;
    for (;;) {
        long left = end - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0) return 0;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) return 1;
        size_t k = (size_t)n < cap - *len - 1 ? (size_t)n : cap - *len - 1;
        memcpy(buf + *len, tmp, k);
        *len += k;
        buf[*len] = 0;
    }
}

typedef struct client {
    int fd;
    char buf[65536];
    size_t len;
} client;

static const char *HEADER = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

static inline int client_open(client *c) {
    memset(c, 0, sizeof *c);
    c->fd = tcp_connect();
    if (c->fd < 0) return -1;
    send_str(c->fd, HEADER);
    return read_until(c->fd, c->buf, sizeof c->buf, &c->len, "</stream:features>", 3000) ? 0 : -1;
}

static inline int client_expect(client *c, const char *want) {
    return read_until(c->fd, c->buf, sizeof c->buf, &c->len, want, 3000);
}

static inline void client_clear(client *c) {
    c->len = 0;
    c->buf[0] = 0;
}

static inline void client_auth_plain(client *c, const char *user, const char *password) {
    unsigned char raw[512];
    char b64[1024], xml[1200];
    size_t ul = strlen(user), pl = strlen(password);
    raw[0] = 0;
    memcpy(raw + 1, user, ul);
    raw[1 + ul] = 0;
    memcpy(raw + 2 + ul, password, pl);
    auth_b64_encode(raw, 2 + ul + pl, b64);
    snprintf(xml, sizeof xml, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    send_str(c->fd, xml);
}

/* A whole login: PLAIN, restart, bind with the given resource. 0 on success. */
static inline int client_login(client *c, const char *user, const char *resource) {
    char xml[512];
    if (client_open(c) < 0) return -1;
    client_clear(c);
    client_auth_plain(c, user, "password");
    if (!client_expect(c, "<success")) return -1;
    client_clear(c);
    send_str(c->fd, HEADER);
    if (!client_expect(c, "</stream:features>")) return -1;
    client_clear(c);
    snprintf(xml, sizeof xml, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                              "<resource>%s</resource></bind></iq>", resource);
    send_str(c->fd, xml);
    if (!client_expect(c, "</iq>")) return -1;
    if (!strstr(c->buf, "type='result'")) return -1;   /* what came stays in c->buf for the caller */
    client_clear(c);
    return 0;
}

static inline int client_ping(client *c, const char *id) {
    char xml[256], want[64];
    snprintf(xml, sizeof xml, "<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", id);
    snprintf(want, sizeof want, "id='%s'", id);
    client_clear(c);
    send_str(c->fd, xml);
    /* an empty result is <iq .../>: wait for the id, then for the type the server gave it */
    int ok = client_expect(c, want) && read_until(c->fd, c->buf, sizeof c->buf, &c->len, "type='result'", 1000);
    client_clear(c);
    return ok;
}

static inline void client_close(client *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* 1 if user/password is accepted (SASL PLAIN success), 0 if refused; the connection is closed after */
static inline int client_login_works(const char *user, const char *password) {
    client c;
    if (client_open(&c) < 0) return 0;
    client_clear(&c);
    client_auth_plain(&c, user, password);
    read_until(c.fd, c.buf, sizeof c.buf, &c.len, "</", 3000);
    int ok = strstr(c.buf, "<success") != NULL;
    client_close(&c);
    return ok;
}

/* ---- the server process ---- */

static inline int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

static inline int run_adduser(const char *conf, const char *jid) {
    char cmd[PATH_MAX * 2 + 256];
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' adduser '%s'", couplet_bin, conf, jid);
    FILE *p = popen(cmd, "w");
    if (!p) return -1;
    fputs("password\n", p);
    return pclose(p) == 0 ? 0 : -1;
}

static char data_dir[PATH_MAX];

/* (Re)write the running test server's configuration file: the fixed part plus extra_config. */
static inline int write_server_config(const char *extra_config) {
    char conf[PATH_MAX], text[PATH_MAX + 4096];
    snprintf(conf, sizeof conf, "%s/couplet.conf", tmpdir);
    snprintf(text, sizeof text,
             "domain = localhost\nmuc_domain = conference.localhost\nbind = 127.0.0.1\nc2s_port = %d\n"
             "c2s_tls_port = 0\ndata_dir = %s\nlog_level = warn\nscram_iterations = 64\n%s",
             port, data_dir, extra_config);
    return write_file(conf, text);
}

/* Start couplet on a free port. A fresh data directory unless keep_data (a restart after a crash). */
static inline int start_server_in(const char *extra_config, int keep_data) {
    char conf[PATH_MAX], log[PATH_MAX];
    port = free_port();
    if (!keep_data) snprintf(data_dir, sizeof data_dir, "%s/data-%d", tmpdir, port);
    snprintf(conf, sizeof conf, "%s/couplet.conf", tmpdir);
    snprintf(log, sizeof log, "%s/server.log", tmpdir);
    if (write_server_config(extra_config) < 0) return -1;
    if (!keep_data && (run_adduser(conf, "romeo@localhost") < 0 || run_adduser(conf, "juliet@localhost") < 0))
        return -1;
    server_pid = fork();
    if (server_pid < 0) return -1;
    if (server_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) dup2(fd, 2);
        execl(couplet_bin, couplet_bin, "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        int fd = tcp_connect();
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(50000);
    }
    return -1;
}

static inline int start_server(const char *extra_config) {
    return start_server_in(extra_config, 0);
}

/* SIGTERM, then wait; returns the exit status, or -1 if it had to be killed or died of a signal */
static inline int stop_server(void) {
    if (server_pid <= 0) return -1;
    kill(server_pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 100; i++) {
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            server_pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(50000);
    }
    kill(server_pid, SIGKILL);
    waitpid(server_pid, &st, 0);
    server_pid = -1;
    return -1;
}


/* entries in /proc/PID/fd (the process's open descriptors), or -1 */
static inline int proc_fd_count(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* VmRSS of a process in kB, or -1 */
static inline long proc_rss_kb(pid_t pid) {
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* Find build/.../couplet beside the test binary and make the temporary directory. 0 on success. */
static inline int xmpp_test_init(const char *argv0) {
    char self[PATH_MAX];
    signal(SIGPIPE, SIG_IGN);
    snprintf(self, sizeof self, "%s", argv0);
    /* COUPLET_BIN runs another binary, such as a wrapper that starts couplet under valgrind */
    const char *bin = getenv("COUPLET_BIN");
    if (bin && *bin) snprintf(couplet_bin, sizeof couplet_bin, "%s", bin);
    else snprintf(couplet_bin, sizeof couplet_bin, "%s/couplet", dirname(self));
    if (access(couplet_bin, X_OK) < 0 || !mkdtemp(tmpdir)) {
        fprintf(stderr, "FAIL: need %s and a temporary directory\n", couplet_bin);
        return -1;
    }
    return 0;
}

static inline void xmpp_test_cleanup(void) {
    char cmd[PATH_MAX + 32];
    if (server_pid > 0) stop_server();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

#endif
