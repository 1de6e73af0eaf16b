/* main.c - the command line: run the server, manage accounts, check a configuration. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "jid.h"
#include "server.h"
#include "store.h"

static void usage(void) {
    fprintf(stderr,
            "usage: couplet [-c FILE]                 run the server\n"
            "       couplet [-c FILE] adduser JID     add an account (password from stdin)\n"
            "       couplet [-c FILE] passwd JID      change an account's password\n"
            "       couplet [-c FILE] deluser JID     delete an account\n"
            "       couplet [-c FILE] import          add 'jid password' lines from stdin, in one write\n"
            "       couplet [-c FILE] check           validate the configuration\n");
}

/* A password from the terminal without echo, or the first line of stdin when it is a pipe. */
static int read_password(char *buf, size_t n) {
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "Password: ");
        if (tcgetattr(STDIN_FILENO, &old) == 0) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        } else {
            tty = 0;
        }
    }
    char *r = fgets(buf, (int)n, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!r) return -1;
    buf[strcspn(buf, "\r\n")] = 0;
    return buf[0] ? 0 : -1;
}

/* The account's local part, if jid names an account of our domain. */
static int account_local(const config *cfg, const char *arg, char *local, size_t n) {
    jid j;
    if (jid_parse(arg, &j) < 0 || !j.local[0] || j.resource[0]) {
        fprintf(stderr, "couplet: '%s' is not a bare JID like user@%s\n", arg, cfg->domain);
        return -1;
    }
    if (strcmp(j.domain, cfg->domain) != 0) {
        fprintf(stderr, "couplet: '%s' is not on this server's domain %s\n", arg, cfg->domain);
        return -1;
    }
    snprintf(local, n, "%s", j.local);
    return 0;
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

static int cmd_account(const config *cfg, const char *cmd, const char *arg) {
    char local[JID_PART_MAX + 1], password[1024];
    if (account_local(cfg, arg, local, sizeof local) < 0) return 1;
    auth_store *st = open_store(cfg);
    if (!st) return 1;
    int r;
    if (!strcmp(cmd, "deluser")) {
        r = auth_user_del(st, local);
    } else if (read_password(password, sizeof password) < 0) {
        fprintf(stderr, "couplet: no password given\n");
        auth_store_free(st);
        return 1;
    } else {
        r = !strcmp(cmd, "adduser") ? auth_user_add(st, local, password) : auth_user_passwd(st, local, password);
        memset(password, 0, sizeof password);
    }
    auth_store_free(st);
    if (r == -2) {
        fprintf(stderr, "couplet: %s %s\n", arg, !strcmp(cmd, "adduser") ? "already exists" : "does not exist");
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "couplet: %s failed: %s\n", cmd, strerror(errno));
        return 1;
    }
    return 0;
}

static int cmd_import(const config *cfg) {
    char err[512];
    auth_store *st = open_store(cfg);
    if (!st) return 1;
    long n = auth_import(st, stdin, err, sizeof err);
    auth_store_free(st);
    if (n < 0) {
        fprintf(stderr, "couplet: import: %s\n", err);
        return 1;
    }
    fprintf(stderr, "couplet: imported %ld accounts\n", n);
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
        return cmd_account(&cfg, cmd, argv[i + 1]);
    if (!strcmp(cmd, "import") && nargs == 0) return cmd_import(&cfg);
    usage();
    return 2;
}
