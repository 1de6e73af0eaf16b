/* fuzz_stream.c - libFuzzer harness for whole client streams through server.c (and so xml.c, auth.c, muc.c,
 * jid.c), over fake_net.c instead of sockets.
 *
 * A fresh server per input (so every input starts from the same state and libFuzzer's per-input leak check
 * sees everything the input allocated), over one data directory made once with accounts romeo/secret and
 * juliet/r0m30 (64 iterations).
 *
 * Input layout:
 *   byte 0: bit 0 TLS available, bit 1 STARTTLS fails, bit 2 TLS setup fails, bits 3-4 connections - 1
 *           (1..3), bit 5 connections arrive on the direct-TLS listener, bit 6 SIGHUP after the login
 *           prefixes, bit 7 SIGTERM at the end (the shutdown path: system-shutdown, rooms flushed)
 *   byte 1: two bits per connection, its login prefix: 0 nothing, 1 stream header, 2 header + PLAIN
 *           auth + restart, 3 all that + bind + initial presence; bit 6: every connection binds resource
 *           "phone" (connection 2 is a second romeo session, so this replaces connection 0)
 *   then records: ctl, len, len bytes. ctl bits 0-1: connection (modulo the count); bits 2-4: 0-3 deliver,
 *           4 deliver then fire its timer, 5 the peer hangs up, 6 deliver then toggle whether the peer
 *           reads its output (not reading leads to output overflow), 7 (re)connect that slot, then deliver.
 * Each record is one loop turn: fake_settle() runs after it. At the end every connection is closed with
 * on_close, the server is freed, and rooms it persisted are loaded once by a second server before the
 * room files are removed. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "fake_net.h"
#include "server.h"

#define NCONN_MAX 3

static config cfg;
static char dir[64];
static char rooms_dir[96];

/* Durability is not under test here and fsync makes every persistent-room change cost milliseconds:
 * this definition takes the place of libc's for the whole harness binary. */
int fsync(int fd) {
    (void)fd;
    return 0;
}

int fdatasync(int fd) {     /* the room archives' */
    (void)fd;
    return 0;
}

static void remove_dir_files(const char *path) {
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        unlink(p);
    }
    closedir(d);
}

static int dir_has_files(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void cleanup(void) {
    remove_dir_files(rooms_dir);
    rmdir(rooms_dir);
    remove_dir_files(dir);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[256];
    snprintf(dir, sizeof dir, "/tmp/couplet-fuzz-stream-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(rooms_dir, sizeof rooms_dir, "%s/rooms", dir);
    auth_store *st = auth_store_open(dir, 64, err, sizeof err);
    if (!st || auth_user_add(st, "romeo", "secret") != 0 || auth_user_add(st, "juliet", "r0m30") != 0) {
        fprintf(stderr, "fuzz_stream: cannot make accounts in %s: %s\n", dir, st ? "" : err);
        abort();
    }
    auth_store_free(st);
    atexit(cleanup);

    config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.c2s_port = 5222;            /* never bound: fake_net only records the listeners */
    cfg.c2s_tls_port = 5223;
    cfg.require_encryption = 0;
    cfg.scram_iterations = 64;
    cfg.log_level = -1;
    log_level = -1;                 /* silence: log formatting still runs, output does not */
    /* small limits, so the fuzzer reaches them */
    cfg.max_stanza_size = 8192;
    cfg.max_depth = 12;
    cfg.max_attrs = 12;
    cfg.max_name_len = 64;
    cfg.max_output = 16384;
    cfg.handshake_timeout = 30;
    cfg.idle_timeout = 60;
    cfg.sasl_max_attempts = 3;
    cfg.max_sessions_per_account = 2;
    cfg.muc_max_rooms = 6;
    cfg.muc_max_occupants = 5;
    cfg.muc_max_history = 6;
    cfg.muc_default_history = 3;
    snprintf(cfg.admins, sizeof cfg.admins, "juliet@localhost");
    return 0;
}

#define HDR "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' " \
            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
#define SASL_NS "urn:ietf:params:xml:ns:xmpp-sasl"

static void send_str(unsigned id, const char *s) {
    net_conn *c = fake_conn(id);
    if (c) fake_deliver(c, s, strlen(s));
    fake_settle();
}

static void login(unsigned c, int level, int idx, int same_resource) {
    /* "\0romeo\0secret" and "\0juliet\0r0m30" */
    static const char *const plain[] = {"AHJvbWVvAHNlY3JldA==", "AGp1bGlldAByMG0zMA==", "AHJvbWVvAHNlY3JldA=="};
    char buf[512];
    if (level >= 1) send_str(c, HDR);
    if (level >= 2) {
        snprintf(buf, sizeof buf, "<auth xmlns='" SASL_NS "' mechanism='PLAIN'>%s</auth>", plain[idx]);
        send_str(c, buf);
        send_str(c, HDR);
    }
    if (level >= 3) {
        snprintf(buf, sizeof buf,
                 "<iq type='set' id='bind%d'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                 "<resource>%s%d</resource></bind></iq><presence/>",
                 idx, same_resource ? "phone" : "r", same_resource ? 0 : idx);
        send_str(c, buf);
    }
}

static void purge_rooms(void) {
    if (!dir_has_files(rooms_dir)) return;
    /* rooms this input persisted: a second server must load them back (or refuse them cleanly) */
    char err[256];
    server *again = server_new(&cfg, NULL, err, sizeof err);
    if (again) server_free(again);
    remove_dir_files(rooms_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    unsigned f0 = data[0], f1 = data[1];
    fake_tls_available = f0 & 1;
    fake_starttls_result = (f0 & 2) ? -1 : 0;
    fake_tls_setup_result = (f0 & 4) ? -1 : 0;
    int nconn = (int)((f0 >> 3) & 3) % NCONN_MAX + 1;
    unsigned listener = (f0 >> 5) & 1;
    int same_resource = (f1 >> 6) & 1;

    char err[256];
    server *srv = server_new(&cfg, NULL, err, sizeof err);
    if (!srv) {
        /* only a refused TLS setup with a direct-TLS port may stop the server from starting */
        if (!(f0 & 4)) {
            fprintf(stderr, "fuzz_stream: server_new: %s\n", err);
            abort();
        }
        purge_rooms();
        return 0;
    }
    (void)server_run(srv);          /* fake net_loop_run returns at once */

    unsigned conns[NCONN_MAX] = {0};
    for (int i = 0; i < nconn; i++) {
        conns[i] = fake_accept(listener);
        if (conns[i]) login(conns[i], (int)(f1 >> (2 * i)) & 3, i, same_resource);
    }
    if (f0 & 0x40) {
        fake_signal(SIGHUP);
        fake_settle();
    }

    size_t pos = 2;
    while (pos + 2 <= size) {
        unsigned ctl = data[pos], len = data[pos + 1];
        pos += 2;
        if (len > size - pos) len = (unsigned)(size - pos);
        const char *chunk = (const char *)data + pos;
        pos += len;
        int i = (int)(ctl & 3) % nconn;
        unsigned op = (ctl >> 2) & 7;
        if (op == 7) {
            if (!fake_conn(conns[i])) conns[i] = fake_accept(listener);
            op = 0;
        }
        net_conn *c = fake_conn(conns[i]);
        if (!c) continue;
        switch (op) {
        case 5:
            fake_peer_close(c);
            break;
        case 6:
            fake_deliver(c, chunk, len);
            fake_settle();
            if ((c = fake_conn(conns[i]))) fake_set_reading(c, !(ctl & 0x80));
            break;
        case 4:
            fake_deliver(c, chunk, len);
            fake_settle();
            if ((c = fake_conn(conns[i]))) fake_fire_timer(c);
            break;
        default:
            fake_deliver(c, chunk, len);
            break;
        }
        fake_settle();
    }

    if (f0 & 0x80) {
        fake_signal(SIGTERM);
        fake_settle();
    }
    fake_close_all();
    server_free(srv);
    purge_rooms();
    return 0;
}
