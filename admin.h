/* admin.h - the admin socket's line protocol: commands in, answers out, as text for people or as JSON.
 * admin.c parses and formats only; what it reports and what it does come from the server through admin_host.
 *
 * One command per line: "[json ]NAME [ARGS]", at most ADMIN_LINE_MAX bytes with its newline, UTF-8, no
 * control character but tab. Every line gets exactly one answer:
 *
 *     ok                  or   error: WHY
 *     data lines ...           (text mode: none; JSON mode: the error document)
 *     .
 *
 * A data line that starts with '.' is sent with one more '.' in front (as in SMTP), so a line "." only ever
 * ends an answer. With "json" first, the data is one JSON object on one line, {"ok":true,...} or
 * {"ok":false,"error":"..."}. A line that is too long, holds a NUL byte, a control character or bytes that are
 * not UTF-8 is answered with an error and the connection is closed after it. */
#ifndef COUPLET_ADMIN_H
#define COUPLET_ADMIN_H

#include <stddef.h>
#include <time.h>

#define ADMIN_LINE_MAX 1024     /* bytes of one command line, its newline included */
#define ADMIN_LIST_MAX 5000     /* entries listed in one answer; the rest are only counted */

typedef struct admin_status {
    const char *version;
    time_t started, now;
    unsigned long connections;  /* XMPP client connections, in a session or not */
    unsigned long negotiating;  /* of which are not (yet) a session */
    unsigned long encrypted;    /* of which use TLS */
    unsigned long sessions;     /* bound resources */
    unsigned long accounts;     /* accounts with at least one session */
    unsigned long admin_connections;
    unsigned long rooms;
    unsigned long long rss_bytes;   /* resident memory; 0 = unknown */
} admin_status;

typedef struct admin_session {
    const char *jid, *peer;
    const char *tls;            /* "TLSv1.3", or NULL for a plaintext stream */
    time_t since;               /* when the connection was accepted */
} admin_session;

typedef struct admin_room {
    const char *jid, *name, *description, *subject;     /* "" when unset */
    unsigned occupants, max_users, history;
    int persistent, public_room, password, members_only, moderated, jids_public;
} admin_room;

typedef struct admin_occupant {
    const char *nick, *jid, *role, *affiliation;        /* jid: the bare JID */
    unsigned sessions;
} admin_occupant;

/* What the server does for the commands. Strings handed to admin.c are only read during the call (for
 * room_info: until the next call). A list callback returns 0 to go on, 1 to stop. */
typedef struct admin_host {
    void *ud;
    void (*status)(void *ud, admin_status *out);
    void (*sessions)(void *ud, int (*each)(void *ctx, const admin_session *s), void *ctx);
    /* End the session of a full JID, or every session of a bare JID's account, with a policy-violation
     * stream error whose text is reason (none when NULL). How many ended, or -1 with err filled. */
    long (*kick)(void *ud, const char *jid, const char *reason, char *err, size_t errlen);
    void (*rooms)(void *ud, int (*each)(void *ctx, const admin_room *r), void *ctx);
    /* name is a room's local part or bare JID; -1 if there is no such room */
    int (*room_info)(void *ud, const char *name, admin_room *out);
    void (*room_occupants)(void *ud, const char *name, int (*each)(void *ctx, const admin_occupant *o), void *ctx);
    /* Destroy a room as its owner can: occupants get <destroy/> with reason. 0, or -1 with err filled. */
    int (*destroy)(void *ud, const char *name, const char *reason, char *err, size_t errlen);
    /* What SIGHUP does. msg says what happened; -1 if the configuration file was refused. */
    int (*reload)(void *ud, char *msg, size_t msglen);
    /* What SIGTERM does; the answer to "stop" is queued after this returns and flushed before the exit. */
    void (*stop)(void *ud);
} admin_host;

typedef struct admin_conn admin_conn;

enum { ADMIN_OPEN = 0, ADMIN_CLOSE = 1 };

/* One client of the admin socket; host is copied. NULL when out of memory. */
admin_conn *admin_conn_new(const admin_host *host);
void admin_conn_free(admin_conn *a);
/* Bytes from the client: each complete line runs its command at once and appends its answer to the
 * output. ADMIN_CLOSE: close the connection once the output is sent (later bytes are ignored). */
int admin_conn_feed(admin_conn *a, const char *data, size_t len);
/* The answers produced since the last call; the caller sends them. Valid until the next call on a. */
const char *admin_conn_output(admin_conn *a, size_t *len);
/* 1 while part of a line waits for its newline (the caller bounds how long with a timer) */
int admin_conn_partial(const admin_conn *a);
/* Ends the connection with an error answer (a client refused, or a line not finished in time): the
 * answer goes to the output, and the connection must be closed after it. */
void admin_conn_refuse(admin_conn *a, const char *why);

#endif
