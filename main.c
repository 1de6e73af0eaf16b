/* main.c - the command line: run the server, manage accounts, check a configuration, and `ctl`, the client
 * of the running server's admin socket. Results go to stdout, diagnostics to stderr. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "config.h"
#include "jid.h"
#include "server.h"
#include "store.h"

#define CTL_TIMEOUT_MS 60000    /* a server that does not answer within this is as good as unreachable */

static void usage(void) {
    fprintf(stderr,
            "usage: couplet [-c FILE]                          run the server\n"
            "       couplet [-c FILE] adduser JID              add an account (password from stdin)\n"
            "       couplet [-c FILE] passwd [--logout] JID    change a password (--logout: end its sessions)\n"
            "       couplet [-c FILE] deluser JID              delete an account\n"
            "       couplet [-c FILE] import                   add 'jid password' lines from stdin, in one write\n"
            "       couplet [-c FILE] check                    validate the configuration\n"
            "       couplet [-c FILE] ctl [--json] COMMAND [ARGS]\n"
            "                                                  ask the running server (ctl help: the commands)\n");
}

/* ---- passwords ---- */

/* One line from the terminal without echo; -1 at end of input. The prompt comes after the echo is off (which
 * flushes pending input), so whatever is typed once it shows is kept. */
static int tty_read(const char *prompt, char *buf, size_t n) {
    struct termios old, quiet;
    int restore = 0;
    if (tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
    }
    fputs(prompt, stderr);
    char *r = fgets(buf, (int)n, stdin);
    if (restore) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fputc('\n', stderr);
    if (!r) return -1;
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

/* A new password: asked twice on a terminal (a typo there would lock the account out), or the first line of
 * stdin when it is a pipe. 0, or -1 after saying why. */
static int read_password(char *buf, size_t n) {
    char again[1024];
    if (!isatty(STDIN_FILENO)) {
        if (!fgets(buf, (int)n, stdin)) buf[0] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
    } else if (tty_read("Password: ", buf, n) < 0) {
        buf[0] = 0;
    } else if (buf[0] && (tty_read("Password again: ", again, sizeof again) < 0 || strcmp(buf, again) != 0)) {
        memset(again, 0, sizeof again);
        memset(buf, 0, n);
        fprintf(stderr, "couplet: the passwords do not match; nothing changed\n");
        return -1;
    }
    memset(again, 0, sizeof again);
    if (!buf[0]) {
        fprintf(stderr, "couplet: no password given\n");
        return -1;
    }
    return 0;
}

/* ---- accounts ---- */

/* Why arg is not an account of our domain (NULL if it is one; its local part goes to local). */
static const char *account_problem(const config *cfg, const char *arg, char *local, size_t n) {
    jid *j = malloc(sizeof *j);
    const char *why = NULL;
    if (!j) return "out of memory";
    if (jid_parse(arg, j) < 0 || !j->local[0] || j->resource[0]) why = "is not a bare JID like user@DOMAIN";
    else if (strcmp(j->domain, cfg->domain) != 0) why = "is not on this server's domain DOMAIN";
    else snprintf(local, n, "%s", j->local);
    free(j);
    return why;
}

/* says what is wrong, the domain filled in; always -1 */
static int account_refused(const config *cfg, const char *where, const char *arg, const char *why) {
    const char *d = strstr(why, "DOMAIN");
    fprintf(stderr, "couplet: %s'%s' %.*s%s%s\n", where, arg, d ? (int)(d - why) : (int)strlen(why), why,
            d ? cfg->domain : "", d ? d + 6 : "");
    return -1;
}

static int account_local(const config *cfg, const char *arg, char *local, size_t n) {
    const char *why = account_problem(cfg, arg, local, n);
    return why ? account_refused(cfg, "", arg, why) : 0;
}

/* The account store of the configured data directory (made if missing), or NULL after saying why. */
static auth_store *open_store(const config *cfg) {
    char err[512];
    if (store_mkdir(cfg->data_dir) < 0) {
        fprintf(stderr, "couplet: cannot use data directory %s: %s\n", cfg->data_dir, strerror(errno));
        return NULL;
    }
    auth_store *st = auth_store_open(cfg->data_dir, cfg->scram_iterations, err, sizeof err);
    if (!st) fprintf(stderr, "couplet: %s\n", err);
    return st;
}

/* ---- the admin socket's client ---- */

/* A connection to the running server, or -1 after saying why on stderr. */
static int ctl_connect(const config *cfg, char *path, size_t n) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (config_admin_socket_path(cfg, path, n) < 0 || strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "couplet: the admin socket path is too long\n");
        return -1;
    }
    if (!path[0]) {
        fprintf(stderr, "couplet: cannot reach the server: the admin socket is off (admin_socket = \"\")\n");
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "couplet: cannot reach the server at %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

/* The answer as it arrives, a line at a time; bounded by CTL_TIMEOUT_MS of silence. */
typedef struct ctl_reader {
    int fd;
    char *buf;
    size_t len, cap;
} ctl_reader;

/* the next line without its newline (NUL-terminated in the reader's buffer), or NULL at EOF or timeout */
static char *ctl_line(ctl_reader *r, size_t *consumed) {
    if (*consumed) {
        r->len -= *consumed;
        memmove(r->buf, r->buf + *consumed, r->len);
        *consumed = 0;
    }
    for (;;) {
        char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl) {
            *nl = 0;
            *consumed = (size_t)(nl - r->buf) + 1;
            return r->buf;
        }
        if (r->cap - r->len < 4096) {
            size_t cap = r->cap ? 2 * r->cap : 65536;
            char *b = realloc(r->buf, cap);
            if (!b) return NULL;
            r->buf = b;
            r->cap = cap;
        }
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (poll(&p, 1, CTL_TIMEOUT_MS) <= 0) return NULL;
        ssize_t got = recv(r->fd, r->buf + r->len, r->cap - r->len - 1, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return NULL;
        r->len += (size_t)got;
    }
}

/* Send one command line and read its answer: data lines to out (the extra '.' of a stuffed line taken
 * off), the error text into err. 0: ok; 1: an error answer; 2: no complete answer. */
static int ctl_exchange(int fd, const char *line, FILE *out, char *err, size_t errlen) {
    size_t len = strlen(line), off = 0;
    while (off < len) {
        ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(err, errlen, "sending the command: %s", strerror(errno));
            return 2;
        }
        off += (size_t)n;
    }
    ctl_reader r = {.fd = fd};
    size_t used = 0;
    int rc = 2;
    char *l = ctl_line(&r, &used);
    if (l && !strcmp(l, "ok")) rc = 0;
    else if (l && !strncmp(l, "error: ", 7)) {
        rc = 1;
        snprintf(err, errlen, "%s", l + 7);
    } else {
        snprintf(err, errlen, "no answer from the server");
    }
    while (rc != 2 && (l = ctl_line(&r, &used)) != NULL && strcmp(l, ".") != 0)
        fprintf(out, "%s\n", l[0] == '.' ? l + 1 : l);
    if (rc != 2 && !l) {
        snprintf(err, errlen, "the answer was cut off");
        rc = 2;
    }
    free(r.buf);
    return rc;
}

static int cmd_ctl(const config *cfg, int argc, char **argv) {
    char line[ADMIN_LINE_MAX + 1], path[CONFIG_SOCKET_PATH_MAX], err[1024] = "";
    int json = argc > 0 && !strcmp(argv[0], "--json");
    size_t len = (size_t)snprintf(line, sizeof line, "%s", json ? "json" : "");
    if (argc - json < 1) {
        usage();
        return 2;
    }
    for (int i = json; i < argc && len < sizeof line; i++) {
        if (strchr(argv[i], '\n')) {
            fprintf(stderr, "couplet: ctl: an argument holds a newline\n");
            return 2;
        }
        len += (size_t)snprintf(line + len, sizeof line - len, "%s%s", len ? " " : "", argv[i]);
    }
    if (len + 1 >= sizeof line) {
        fprintf(stderr, "couplet: ctl: the command is longer than %d bytes\n", ADMIN_LINE_MAX - 1);
        return 2;
    }
    line[len++] = '\n';
    line[len] = 0;
    int fd = ctl_connect(cfg, path, sizeof path);
    if (fd < 0) return 2;
    int rc = ctl_exchange(fd, line, stdout, err, sizeof err);
    close(fd);
    if (rc == 1) fprintf(stderr, "couplet: %s\n", err);
    if (rc == 2) fprintf(stderr, "couplet: cannot reach the server at %s: %s\n", path, err);
    return rc;
}

/* passwd --logout: the account's sessions end through the admin socket, after the password changed */
static int logout_account(const config *cfg, const char *local) {
    char line[2 * JID_PART_MAX + 64], path[CONFIG_SOCKET_PATH_MAX], err[1024] = "";
    int fd = ctl_connect(cfg, path, sizeof path);
    if (fd < 0) {
        fprintf(stderr, "couplet: the password was changed, but the account's sessions were not ended\n");
        return 1;
    }
    snprintf(line, sizeof line, "kick %s@%s password changed\n", local, cfg->domain);
    int rc = ctl_exchange(fd, line, stdout, err, sizeof err);
    close(fd);
    if (rc != 0) {
        fprintf(stderr, "couplet: %s\ncouplet: the password was changed, but the account's sessions were not ended\n",
                err);
        return 1;
    }
    return 0;
}

/* ---- the commands ---- */

static int cmd_account(const config *cfg, const char *cmd, const char *arg, int logout) {
    char local[JID_PART_MAX + 1], password[1024];
    if (account_local(cfg, arg, local, sizeof local) < 0) return 1;
    int del = !strcmp(cmd, "deluser"), add = !strcmp(cmd, "adduser");
    if (!del && read_password(password, sizeof password) < 0) return 1;
    auth_store *st = open_store(cfg);
    if (!st) {
        memset(password, 0, sizeof password);
        return 1;
    }
    int r = del ? auth_user_del(st, local) : add ? auth_user_add(st, local, password)
                                                : auth_user_passwd(st, local, password);
    memset(password, 0, sizeof password);
    auth_store_free(st);
    if (r == -2) {
        fprintf(stderr, "couplet: %s@%s %s\n", local, cfg->domain, add ? "already exists" : "does not exist");
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "couplet: %s failed: %s\n", cmd, strerror(errno));
        return 1;
    }
    printf("%s %s@%s\n", del ? "deleted" : add ? "added" : "password changed for", local, cfg->domain);
    fflush(stdout);
    return logout ? logout_account(cfg, local) : 0;
}

/* Every line is checked as adduser checks its JID before anything is written: auth_import then gets
 * "local password" lines, blank where the input had a blank or comment line, so line numbers still match. */
static int import_check(const config *cfg, FILE *in, FILE *out) {
    char *line = NULL, local[JID_PART_MAX + 1], where[64];
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        snprintf(where, sizeof where, "import: line %ld: ", lineno);
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        if (n > 0 && line[n - 1] == '\r') line[--n] = 0;
        char *p = line + strspn(line, " \t");
        if (strlen(line) != (size_t)n) {
            fprintf(stderr, "couplet: %sNUL byte\n", where);
            rc = -1;
        } else if (!*p || *p == '#') {
            fputc('\n', out);
        } else {
            char *sep = p + strcspn(p, " \t");
            const char *why = NULL;
            char *password = *sep ? sep + 1 : sep;
            *sep = 0;
            if (!*password) {
                fprintf(stderr, "couplet: %sno password after '%s'\n", where, p);
                rc = -1;
            } else if ((why = account_problem(cfg, p, local, sizeof local)) != NULL) {
                rc = account_refused(cfg, where, p, why);
            } else {
                fprintf(out, "%s %s\n", local, password);
            }
        }
    }
    if (line) memset(line, 0, cap);
    free(line);
    if (rc == 0 && ferror(in)) {
        fprintf(stderr, "couplet: import: reading stdin: %s\n", strerror(errno));
        rc = -1;
    }
    return rc;
}

static int cmd_import(const config *cfg) {
    char err[512], *text = NULL;
    size_t len = 0;
    FILE *checked = open_memstream(&text, &len);
    if (!checked) {
        fprintf(stderr, "couplet: import: %s\n", strerror(errno));
        return 1;
    }
    int ok = import_check(cfg, stdin, checked) == 0;
    if (fclose(checked) != 0 && ok) {
        fprintf(stderr, "couplet: import: out of memory\n");
        ok = 0;
    }
    auth_store *st = ok ? open_store(cfg) : NULL;
    FILE *in = st && len ? fmemopen(text, len, "r") : NULL;     /* fmemopen refuses size 0 */
    long n = in ? auth_import(st, in, err, sizeof err) : st && !len ? 0 : -1;
    if (st && len && !in) snprintf(err, sizeof err, "%s", strerror(errno));
    if (in) fclose(in);
    auth_store_free(st);
    if (text) memset(text, 0, len);
    free(text);
    if (!ok || !st) return 1;
    if (n < 0) {
        fprintf(stderr, "couplet: import: %s\n", err);
        return 1;
    }
    printf("imported %ld accounts\n", n);
    return 0;
}

static int cmd_run(const config *cfg, const char *path) {
    char err[512];
    server *srv = server_new(cfg, path, err, sizeof err);
    if (!srv) {
        log_err("%s", err);
        return 1;
    }
    int r = server_run(srv);
    server_free(srv);
    return r ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int i = 1;
    if (i + 1 < argc && !strcmp(argv[i], "-c")) {
        path = argv[i + 1];
        i += 2;
    } else if (i < argc && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
        usage();
        return 0;
    }
    config cfg;
    char err[512];
    config_defaults(&cfg);
    if (path && config_load(&cfg, path, err, sizeof err) < 0) {
        fprintf(stderr, "couplet: %s\n", err);
        return 1;
    }
    log_level = cfg.log_level;
    const char *cmd = i < argc ? argv[i] : NULL;
    int nargs = argc - i - 1;
    if (!cmd) return cmd_run(&cfg, path);
    if (!strcmp(cmd, "check") && nargs == 0) {
        printf("%s: configuration is valid\n", path ? path : "(embedded defaults)");
        return 0;
    }
    if ((!strcmp(cmd, "adduser") || !strcmp(cmd, "passwd") || !strcmp(cmd, "deluser")) && nargs == 1)
        return cmd_account(&cfg, cmd, argv[i + 1], 0);
    if (!strcmp(cmd, "passwd") && nargs == 2 && !strcmp(argv[i + 1], "--logout"))
        return cmd_account(&cfg, cmd, argv[i + 2], 1);
    if (!strcmp(cmd, "import") && nargs == 0) return cmd_import(&cfg);
    if (!strcmp(cmd, "ctl")) return cmd_ctl(&cfg, nargs, argv + i + 1);
    usage();
    return 2;
}
