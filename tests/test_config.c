/* test_config.c - defaults, the file format, every key, error reporting with line numbers, the log. */
#include "check.h"
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

static char tmp_path[64];
static char err[512];

/* writes text to a fresh temp file, returns its path (removed by drop_file) */
static const char *write_file(const char *text)
{
    strcpy(tmp_path, "/tmp/couplet_test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    if (fd < 0) { perror("mkstemp"); exit(2); }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w <= 0) { perror("write"); exit(2); }
        off += (size_t)w;
    }
    close(fd);
    return tmp_path;
}

static void drop_file(void) { unlink(tmp_path); }

/* loads text over the defaults into *c; returns config_load's result */
static int load_text(config *c, const char *text)
{
    config_defaults(c);
    err[0] = '\0';
    int r = config_load(c, write_file(text), err, sizeof err);
    drop_file();
    return r;
}

/* 1 if loading text fails and err contains the tmp path, want and (if given) the key */
static int fails_with(const char *text, const char *want, const char *key)
{
    config c;
    if (load_text(&c, text) == 0) { fprintf(stderr, "  accepted: %s\n", text); return 0; }
    char quoted[128] = "";
    if (key) snprintf(quoted, sizeof quoted, "(key '%s')", key);
    int ok = strstr(err, tmp_path) == err && strstr(err, want) && strstr(err, quoted);
    if (!ok) fprintf(stderr, "  err was: %s\n", err);
    return ok;
}

static void test_defaults(void)
{
    config c;
    config_defaults(&c);
    CHECK_STR("localhost", c.domain);
    CHECK_STR("conference.localhost", c.muc_domain);
    CHECK_STR("127.0.0.1", c.bind);
    CHECK_INT(5222, c.c2s_port);
    CHECK_INT(5223, c.c2s_tls_port);
    CHECK_STR("./data", c.data_dir);
    CHECK_STR("", c.tls_cert);
    CHECK_STR("", c.tls_key);
    CHECK_INT(1, c.require_encryption);
    CHECK_INT(10, c.defer_accept);
    CHECK_INT(262144, c.max_stanza_size);
    CHECK_INT(64, c.max_depth);
    CHECK_INT(64, c.max_attrs);
    CHECK_INT(256, c.max_name_len);
    CHECK_INT(1048576, c.max_output);
    CHECK_INT(60, c.handshake_timeout);
    CHECK_INT(300, c.idle_timeout);
    CHECK_INT(4096, c.scram_iterations);
    CHECK_INT(3, c.sasl_max_attempts);
    CHECK_INT(100000, c.max_connections);
    CHECK_INT(10, c.max_sessions_per_account);
    CHECK_INT(LOG_INFO, c.log_level);
    CHECK_INT(0, c.roster_shared);
    CHECK_STR("admin.sock", c.admin_socket);
    CHECK_STR("", c.user);
    CHECK_INT(1, c.muc_create);
    CHECK_STR("", c.admins);
    CHECK_INT(10000, c.muc_max_rooms);
    CHECK_INT(1000, c.muc_max_occupants);
    CHECK_INT(100, c.muc_max_history);
    CHECK_INT(20, c.muc_default_history);
    CHECK_INT(0, c.muc_default_persistent);
    CHECK_INT(1, c.muc_default_public);
}

static void test_parse_bool(void)
{
    const char *yes[] = { "true", "yes", "on", "1", "TRUE", "Yes" }, *no[] = { "false", "no", "off", "0", "Off" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) CHECK_INT(1, config_parse_bool(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) CHECK_INT(0, config_parse_bool(no[i]));
    CHECK_INT(-1, config_parse_bool("maybe"));
    CHECK_INT(-1, config_parse_bool(""));
    CHECK_INT(-1, config_parse_bool("2"));
    CHECK_INT(-1, config_parse_bool(NULL));
}

/* a value for every key, each different from its default */
static const char every_key_text[] =
    "domain = Example.ORG\n"
    "muc_domain = rooms.example.org\n"
    "bind = ::\n"
    "c2s_port = 15222\n"
    "c2s_tls_port = 0\n"
    "data_dir = /var/lib/couplet\n"
    "tls_cert = /etc/couplet/cert.pem\n"
    "tls_key = /etc/couplet/key.pem\n"
    "require_encryption = no\n"
    "defer_accept = 0\n"
    "max_stanza_size = 65536\n"
    "max_depth = 32\n"
    "max_attrs = 16\n"
    "max_name_len = 128\n"
    "max_output = 2097152\n"
    "handshake_timeout = 30\n"
    "idle_timeout = 120\n"
    "scram_iterations = 8192\n"
    "sasl_max_attempts = 5\n"
    "max_connections = 500\n"
    "max_sessions_per_account = 4\n"
    "log_level = debug\n"
    "roster = shared\n"
    "admin_socket = /run/couplet/admin.sock\n"
    "user = couplet\n"
    "muc_create = off\n"
    "admins = Admin@Example.org  ops@example.org\n"
    "muc_max_rooms = 50\n"
    "muc_max_occupants = 200\n"
    "muc_max_history = 40\n"
    "muc_default_history = 10\n"
    "muc_default_persistent = true\n"
    "muc_default_public = 0\n";

static void test_every_key(void)
{
    config c;
    int r = load_text(&c, every_key_text);
    CHECK_INT(0, r);
    CHECK_STR("", err);
    CHECK_STR("example.org", c.domain);
    CHECK_STR("rooms.example.org", c.muc_domain);
    CHECK_STR("::", c.bind);
    CHECK_INT(15222, c.c2s_port);
    CHECK_INT(0, c.c2s_tls_port);
    CHECK_STR("/var/lib/couplet", c.data_dir);
    CHECK_STR("/etc/couplet/cert.pem", c.tls_cert);
    CHECK_STR("/etc/couplet/key.pem", c.tls_key);
    CHECK_INT(0, c.require_encryption);
    CHECK_INT(0, c.defer_accept);
    CHECK_INT(65536, c.max_stanza_size);
    CHECK_INT(32, c.max_depth);
    CHECK_INT(16, c.max_attrs);
    CHECK_INT(128, c.max_name_len);
    CHECK_INT(2097152, c.max_output);
    CHECK_INT(30, c.handshake_timeout);
    CHECK_INT(120, c.idle_timeout);
    CHECK_INT(8192, c.scram_iterations);
    CHECK_INT(5, c.sasl_max_attempts);
    CHECK_INT(500, c.max_connections);
    CHECK_INT(4, c.max_sessions_per_account);
    CHECK_INT(LOG_DEBUG, c.log_level);
    CHECK_INT(1, c.roster_shared);
    CHECK_STR("/run/couplet/admin.sock", c.admin_socket);
    CHECK_STR("couplet", c.user);
    CHECK_INT(0, c.muc_create);
    CHECK_STR("admin@example.org ops@example.org", c.admins);
    CHECK_INT(50, c.muc_max_rooms);
    CHECK_INT(200, c.muc_max_occupants);
    CHECK_INT(40, c.muc_max_history);
    CHECK_INT(10, c.muc_default_history);
    CHECK_INT(1, c.muc_default_persistent);
    CHECK_INT(0, c.muc_default_public);

    const char *levels[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++) {
        char text[64];
        snprintf(text, sizeof text, "log_level = %s\n", levels[i]);
        CHECK_INT(0, load_text(&c, text));
        CHECK_INT(i, c.log_level);
        snprintf(text, sizeof text, "log_level = %d\n", i);
        CHECK_INT(0, load_text(&c, text));
        CHECK_INT(i, c.log_level);
    }
}

static void test_syntax(void)
{
    config c;
    int r = load_text(&c,
                      "# a whole-line comment\n"
                      "\n"
                      "   \t\n"
                      "   # an indented comment\n"
                      "  domain\t=\texample.net   # trailing comment\n"
                      "muc_domain=chat.example.net\r\n"
                      "data_dir = \"/srv/x # not a comment\"   # but this is\n"
                      "tls_cert = \"\"\n"
                      "tls_key = \"\"\n"
                      "admins = \"  a@example.net  \"\n"
                      "bind = \" 127.0.0.1\"x\n");
    CHECK_INT(-1, r);   /* the last line is bad: text after the closing quote */
    CHECK(strstr(err, ":11:") != NULL, "err: %s", err);

    r = load_text(&c,
                  "# a whole-line comment\n"
                  "\n"
                  "   \t\n"
                  "   # an indented comment\n"
                  "  domain\t=\texample.net   # trailing comment\n"
                  "muc_domain=chat.example.net\r\n"
                  "data_dir = \"/srv/x # not a comment\"   # but this is\n"
                  "tls_cert = \"\"\n"
                  "tls_key = \"\"\n"
                  "admins = \"  a@example.net  \"\n"
                  "max_depth = 10\n"
                  "max_depth = 12\n"
                  "c2s_port = 5222# not a comment, so not a number\n");
    CHECK_INT(-1, r);
    CHECK(strstr(err, ":13:") && strstr(err, "not a number"), "err: %s", err);

    r = load_text(&c,
                  "\xEF\xBB\xBF# a BOM before the first comment\n"
                  "  domain\t=\texample.net   # trailing comment\n"
                  "muc_domain=chat.example.net\r\n"
                  "data_dir = \"/srv/x # not a comment\"   # but this is\n"
                  "tls_cert = \"\"\n"
                  "tls_key = \"\"\n"
                  "admins = \"  a@example.net  \"\n"
                  "max_depth = 10\n"
                  "max_depth = 12\n"
                  "bind = 10.0.0.1#x\n"        /* no whitespace before '#': part of the value */
                  "c2s_port = 5333");          /* no final newline */
    /* "10.0.0.1#x" is no address, so this must fail on line 10 */
    CHECK_INT(-1, r);
    CHECK(strstr(err, ":10:") && strstr(err, "(key 'bind')"), "err: %s", err);

    r = load_text(&c,
                  "\xEF\xBB\xBF# a BOM before the first comment\n"
                  "  domain\t=\texample.net   # trailing comment\n"
                  "muc_domain=chat.example.net\r\n"
                  "data_dir = \"/srv/x # not a comment\"   # but this is\n"
                  "tls_cert = \"\"\n"
                  "tls_key = \"\"\n"
                  "admins = \"  a@example.net  \"\n"
                  "max_depth = 10\n"
                  "max_depth = 12\n"
                  "c2s_port = 5333");
    CHECK_INT(0, r);
    CHECK_STR("", err);
    CHECK_STR("example.net", c.domain);
    CHECK_STR("chat.example.net", c.muc_domain);
    CHECK_STR("/srv/x # not a comment", c.data_dir);
    CHECK_STR("", c.tls_cert);
    CHECK_STR("a@example.net", c.admins);
    CHECK_INT(12, c.max_depth);
    CHECK_INT(5333, c.c2s_port);

    CHECK_INT(0, load_text(&c, ""));
    CHECK_INT(0, load_text(&c, "# only a comment"));
    CHECK_STR("localhost", c.domain);
}

static void test_errors(void)
{
    CHECK(fails_with("domain = a.example\n\nfrobnicate = 1\n", ":3: unknown key", "frobnicate"), "unknown key");
    CHECK(fails_with("# c\njust some words\n", ":2: ", NULL), "missing '='");
    CHECK(fails_with("= 5\n", ":1: missing key", NULL), "missing key");
    CHECK(fails_with("\n\n\n\nc2s_port = 65536\n", ":5: ", "c2s_port"), "port too big");
    CHECK(fails_with("c2s_tls_port = -1\n", ":1: ", "c2s_tls_port"), "negative port");
    CHECK(fails_with("c2s_port = 99999999999999999999999\n", ":1: ", "c2s_port"), "huge number");
    CHECK(fails_with("c2s_port = 52x2\n", ":1: ", "c2s_port"), "not a number");
    CHECK(fails_with("c2s_port =\n", ":1: ", "c2s_port"), "empty number");
    CHECK(fails_with("c2s_port = +5222\n", ":1: ", "c2s_port"), "sign");
    CHECK(fails_with("c2s_port = 0x10\n", ":1: ", "c2s_port"), "hex");
    CHECK(fails_with("max_stanza_size = 0\n", ":1: ", "max_stanza_size"), "zero size");
    CHECK(fails_with("max_output = -5\n", ":1: ", "max_output"), "negative size");
    CHECK(fails_with("max_depth = 0\n", ":1: ", "max_depth"), "zero depth");
    CHECK(fails_with("idle_timeout = 0\n", ":1: ", "idle_timeout"), "zero timeout");
    CHECK(fails_with("\nrequire_encryption = maybe\n", ":2: ", "require_encryption"), "bad bool");
    CHECK(fails_with("muc_create = 2\n", ":1: ", "muc_create"), "bool 2");
    CHECK(fails_with("log_level = loud\n", ":1: ", "log_level"), "bad log level");
    CHECK(fails_with("log_level = 4\n", ":1: ", "log_level"), "log level 4");
    CHECK(fails_with("domain = bad domain\n", ":1: ", "domain"), "domain with space");
    CHECK(fails_with("domain = user@example.com\n", ":1: ", "domain"), "domain with local");
    CHECK(fails_with("domain = example.com/x\n", ":1: ", "domain"), "domain with resource");
    CHECK(fails_with("muc_domain = \"\"\n", ":1: ", "muc_domain"), "empty domain");
    CHECK(fails_with("bind = localhost\n", ":1: ", "bind"), "bind not numeric");
    CHECK(fails_with("data_dir = \"\"\n", ":1: ", "data_dir"), "empty data_dir");
    CHECK(fails_with("tls_cert = \"abc\n", ":1: ", "tls_cert"), "unterminated quote");
    CHECK(fails_with("admins = romeo\n", ":1: ", "admins"), "admin without localpart");
    CHECK(fails_with("admins = a@b c@d/r\n", ":1: ", "admins"), "admin with resource");

    char longline[700];
    snprintf(longline, sizeof longline, "\ndata_dir = %0600d\n", 0);
    CHECK(fails_with(longline, ":2: value too long", "data_dir"), "too long for the field");
    char longdomain[400];
    memset(longdomain, 'a', sizeof longdomain);
    memcpy(longdomain, "domain = ", 9);
    memcpy(longdomain + sizeof longdomain - 2, "\n", 2);
    CHECK(fails_with(longdomain, ":1: ", "domain"), "domain too long");

    /* rules over two keys name the later line */
    CHECK(fails_with("# x\nmuc_domain = localhost\n", ":2: muc_domain must differ", "muc_domain"),
          "muc_domain == domain");
    CHECK(fails_with("domain = chat.example\nmuc_domain = CHAT.example.\n", ":2: ", "muc_domain"),
          "muc_domain == domain after normalising");
    CHECK(fails_with("domain = conference.localhost\n", ":1: ", "muc_domain"), "domain == default muc_domain");
    CHECK(fails_with("muc_default_history = 101\n", ":1: ", "muc_default_history"), "history over max");
    CHECK(fails_with("tls_cert = /x.pem\n", ":1: ", "tls_key"), "cert without key");
    CHECK(fails_with("c2s_tls_port = 5222\n", ":1: ", "c2s_tls_port"), "same port twice");

    /* a refused file leaves the configuration untouched */
    config c;
    config_defaults(&c);
    int r = config_load(&c, write_file("domain = example.org\nc2s_port = x\n"), err, sizeof err);
    drop_file();
    CHECK_INT(-1, r);
    CHECK_STR("localhost", c.domain);

    /* err is always terminated, even when short */
    char small[8];
    config_defaults(&c);
    r = config_load(&c, write_file("nope = 1\n"), small, sizeof small);
    drop_file();
    CHECK_INT(-1, r);
    CHECK_INT(7, strlen(small));
    CHECK_INT(-1, config_load(&c, "/nonexistent/x", NULL, 0));
}

/* roster, admin_socket and user: their values, their refusals with the line, the socket path rules */
static void test_service_keys(void)
{
    config c;
    char path[CONFIG_SOCKET_PATH_MAX];
    CHECK_INT(0, load_text(&c, "roster = empty\nadmin_socket = \"\"\nuser = _couplet-1.x\n"));
    CHECK_INT(0, c.roster_shared);
    CHECK_STR("", c.admin_socket);
    CHECK_STR("_couplet-1.x", c.user);
    CHECK_INT(0, config_admin_socket_path(&c, path, sizeof path));
    CHECK_STR("", path);    /* off */
    CHECK_INT(0, load_text(&c, "data_dir = /var/lib/couplet\n"));
    CHECK_INT(0, config_admin_socket_path(&c, path, sizeof path));
    CHECK_STR("/var/lib/couplet/admin.sock", path);
    CHECK_INT(0, load_text(&c, "data_dir = /var/lib/couplet\nadmin_socket = ctl/a.sock\n"));
    CHECK_INT(0, config_admin_socket_path(&c, path, sizeof path));
    CHECK_STR("/var/lib/couplet/ctl/a.sock", path);
    CHECK_INT(0, load_text(&c, "data_dir = /var/lib/couplet\nadmin_socket = /run/c.sock\n"));
    CHECK_INT(0, config_admin_socket_path(&c, path, sizeof path));
    CHECK_STR("/run/c.sock", path);
    CHECK_INT(-1, config_admin_socket_path(&c, path, 5));

    CHECK(fails_with("\nroster = Shared\n", ":2: ", "roster"), "roster is case-sensitive");
    CHECK(fails_with("roster = full\n", ":1: 'full' is not a roster mode", "roster"), "unknown roster mode");
    CHECK(fails_with("roster = \"\"\n", ":1: ", "roster"), "empty roster mode");
    CHECK(fails_with("# x\n\nuser = root user\n", ":3: ", "user"), "user name with a space");
    CHECK(fails_with("user = -rf\n", ":1: ", "user"), "user name starting with '-'");
    CHECK(fails_with("user = ../x\n", ":1: ", "user"), "user name with '/'");
    CHECK(fails_with("user = r\xc3\xb6ot\n", ":1: ", "user"), "user name outside the portable set");
    CHECK(fails_with("user = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                     ":1: value too long", "user"), "user name too long");
    CHECK(fails_with("admin_socket = \"a\tb\"\n", ":1: control character", "admin_socket"),
          "control character in the socket path");
    /* 107 bytes fit a socket address, 108 do not; data_dir or admin_socket, whichever comes later */
    char text[400], dir[200];
    memset(dir, 'd', 95);
    dir[0] = '/';
    dir[95] = '\0';
    snprintf(text, sizeof text, "data_dir = %s\nadmin_socket = a.sock\n", dir);   /* 95 + 1 + 6 = 102 */
    CHECK_INT(0, load_text(&c, text));
    snprintf(text, sizeof text, "data_dir = %s\n\nadmin_socket = a-longer-name.sock\n", dir);
    CHECK(fails_with(text, ":3: the socket path", "admin_socket"), "socket path too long, at the later line");
    snprintf(text, sizeof text, "admin_socket = a-longer-name.sock\ndata_dir = %s\n", dir);
    CHECK(fails_with(text, ":2: ", "admin_socket"), "socket path too long because of data_dir");
    snprintf(text, sizeof text, "data_dir = %s\nadmin_socket = \"\"\n", dir);
    CHECK_INT(0, load_text(&c, text));      /* off: no path to check */
}

static void test_missing_file(void)
{
    config c;
    config_defaults(&c);
    CHECK_INT(-1, config_load(&c, "/tmp/couplet-no-such-dir/none.conf", err, sizeof err));
    CHECK_STR("/tmp/couplet-no-such-dir/none.conf: cannot open: No such file or directory", err);
}

static void same_as_defaults(const config *cp)
{
    config d, c = *cp;
    config_defaults(&d);
    /* field by field: struct padding is not guaranteed to survive a struct copy */
#define SAME_STR(f) CHECK_STR(d.f, c.f)
#define SAME_NUM(f) CHECK_INT(d.f, c.f)
    SAME_STR(domain); SAME_STR(muc_domain); SAME_STR(bind); SAME_NUM(c2s_port); SAME_NUM(c2s_tls_port);
    SAME_STR(data_dir); SAME_STR(tls_cert); SAME_STR(tls_key); SAME_NUM(require_encryption);
    SAME_NUM(defer_accept); SAME_NUM(max_stanza_size); SAME_NUM(max_depth); SAME_NUM(max_attrs);
    SAME_NUM(max_name_len); SAME_NUM(max_output); SAME_NUM(handshake_timeout); SAME_NUM(idle_timeout);
    SAME_NUM(scram_iterations); SAME_NUM(sasl_max_attempts); SAME_NUM(max_connections);
    SAME_NUM(max_sessions_per_account); SAME_NUM(log_level); SAME_NUM(muc_create); SAME_STR(admins);
    SAME_NUM(roster_shared); SAME_STR(admin_socket); SAME_STR(user);
    SAME_NUM(muc_max_rooms); SAME_NUM(muc_max_occupants); SAME_NUM(muc_max_history);
    SAME_NUM(muc_default_history); SAME_NUM(muc_default_persistent); SAME_NUM(muc_default_public);
#undef SAME_STR
#undef SAME_NUM
}

/* the shipped example must load and restate exactly the defaults */
static void test_example_file(void)
{
    config c;
    config_defaults(&c);
    const char *path = access("couplet.conf.example", R_OK) == 0 ? "couplet.conf.example" : "../couplet.conf.example";
    if (access(path, R_OK) != 0) { fprintf(stderr, "note: couplet.conf.example not found, not checked\n"); return; }
    int r = config_load(&c, path, err, sizeof err);
    CHECK(r == 0, "couplet.conf.example: %s", err);
    same_as_defaults(&c);
    /* and every key appears in it: load it over a configuration where every value differs */
    CHECK_INT(0, load_text(&c, every_key_text));
    CHECK_INT(0, config_load(&c, path, err, sizeof err));
    same_as_defaults(&c);
}

static void test_log(void)
{
    /* capture stderr in a temp file */
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    const char *path = write_file("");
    FILE *f = fopen(path, "w+");
    CHECK(saved >= 0 && f != NULL, "set up");
    if (saved < 0 || !f) return;
    dup2(fileno(f), STDERR_FILENO);

    int old = log_level;
    log_level = LOG_INFO;
    log_msg(LOG_INFO, "hello %d", 42);
    log_msg(LOG_ERR, "bad\nline");
    log_debug("hidden %s", "debug");
    log_msg(LOG_DEBUG, "hidden too");
    log_warn("warned");
    char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_info("%s", big);
    log_level = old;

    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[8192] = "";
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    drop_file();

    /* 2026-11-24T21:30:00Z INFO hello 42 */
    char *l1 = buf, *l2 = strchr(l1, '\n');
    CHECK(l2 != NULL, "log: %s", buf);
    if (!l2) return;
    *l2++ = '\0';
    CHECK(strlen(l1) == 20 + 14 && l1[4] == '-' && l1[10] == 'T' && l1[19] == 'Z' && l1[20] == ' ', "line 1: %s", l1);
    CHECK_STR("INFO hello 42", l1 + 21);
    char *l3 = strchr(l2, '\n');
    CHECK(l3 != NULL, "log: %s", l2);
    if (!l3) return;
    *l3++ = '\0';
    CHECK_STR("ERROR bad?line", l2 + 21);
    char *l4 = strchr(l3, '\n');
    CHECK(l4 != NULL, "log: %s", l3);
    if (!l4) return;
    *l4++ = '\0';
    CHECK_STR("WARN warned", l3 + 21);
    /* an overlong message stays one line, cut and marked */
    size_t l4len = strlen(l4);
    CHECK(l4len > 1000 && l4len < sizeof big && strncmp(l4 + 21, "INFO zzz", 8) == 0, "line 4 length %zu", l4len);
    CHECK(l4len >= 4 && strcmp(l4 + l4len - 4, "...\n") == 0, "line 4 end: %s", l4 + l4len - 10);
    CHECK(strchr(l4, '\n') == l4 + l4len - 1, "one line");
    CHECK(strstr(buf, "hidden") == NULL && strstr(l4, "hidden") == NULL, "debug lines were written");
}

int main(void)
{
    test_defaults();
    test_parse_bool();
    test_every_key();
    test_syntax();
    test_errors();
    test_service_keys();
    test_missing_file();
    test_example_file();
    test_log();
    return check_summary("config");
}
