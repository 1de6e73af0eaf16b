/* config.h - the configuration file (key = value). */
#ifndef COUPLET_CONFIG_H
#define COUPLET_CONFIG_H

#include <stddef.h>

#include "log.h"

typedef struct config {
    char domain[256];
    char muc_domain[256];
    char bind[64];
    int c2s_port;               /* STARTTLS port, 0 = off */
    int c2s_tls_port;           /* direct TLS port (XEP-0368), 0 = off */
    char data_dir[512];
    char tls_cert[512];         /* "" = generated self-signed in data_dir */
    char tls_key[512];
    int require_encryption;
    int defer_accept;           /* seconds, 0 = off */
    size_t max_stanza_size;
    unsigned max_depth;
    unsigned max_attrs;
    size_t max_name_len;
    size_t max_output;          /* bytes queued for one peer before it is cut off */
    int handshake_timeout;      /* seconds to authenticate and bind */
    int idle_timeout;           /* seconds of silence before a whitespace keepalive */
    int scram_iterations;
    int sasl_max_attempts;
    int max_connections;
    int max_connections_per_ip;
    size_t max_read_rate;       /* bytes per second per connection, 0 = unlimited */
    size_t max_read_burst;
    int auth_failures_per_ip;   /* failed SASL attempts from one address before it is locked out */
    int auth_lockout;           /* seconds that lockout lasts */
    int max_sessions_per_account;
    int log_level;              /* 0 error, 1 warn, 2 info, 3 debug */
    int roster_shared;          /* roster = shared: every account is in every roster; 0 = empty rosters */
    char admin_socket[512];     /* the admin socket; relative = under data_dir, "" = off */
    char user[64];              /* started as root: become this user once the sockets are bound; "" = stay */
    /* multi-user chat */
    int muc_create;             /* 1 = any local user may create rooms, 0 = admins only */
    char admins[1024];          /* space separated bare JIDs */
    int muc_max_rooms;
    int muc_max_occupants;
    int muc_max_rooms_per_user; /* rooms one account may be in at once */
    int muc_max_history;        /* upper bound for a room's history length */
    int muc_archive_max;        /* messages a persistent room keeps in its archive (0 = no bound) */
    int muc_archive_fsync;      /* fdatasync each archived message before it is sent on */
    int muc_lock_timeout;       /* seconds a new room waits for its configuration; 0: rooms open at once */
    int muc_default_history;    /* history length of a new room */
    int muc_default_persistent;
    int muc_default_public;
} config;



void config_defaults(config *c);
/* Read path over the defaults. Unknown keys and bad values are refused: returns -1 and writes
 * "path:LINE: what is wrong" into err. */
int config_load(config *c, const char *path, char *err, size_t errlen);
/* The admin socket's path into out: admin_socket itself when absolute, else data_dir/admin_socket; "" when
 * the socket is off. -1 when it does not fit out or a Unix socket address (CONFIG_SOCKET_PATH_MAX). */
#define CONFIG_SOCKET_PATH_MAX 108      /* sizeof sun_path on Linux, the NUL included */
int config_admin_socket_path(const config *c, char *out, size_t n);
/* parse "true"/"false"/"yes"/"no"/"on"/"off"/"1"/"0"; -1 if none */
int config_parse_bool(const char *s);


#endif
