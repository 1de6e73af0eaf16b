/* muc.h - multi-user chat service (XEP-0045) at one domain. The server hands it every stanza addressed
 * to the service, a room or an occupant; it answers through the host's deliver callback. */
#ifndef COUPLET_MUC_H
#define COUPLET_MUC_H

#include <stddef.h>
#include <time.h>
#include "xml.h"

typedef struct muc_host {
    void *ud;
    /* Deliver one serialized stanza to a full JID (or a bare JID for a local user). The stanza is
     * head + " to='" + escaped to + "'" + tail, so a broadcast is encoded once and the recipient spliced
     * in. Returns 0, or -1 when there is no such session (the occupant should be dropped). */
    int (*deliver)(void *ud, const char *to, const char *head, size_t headlen, const char *tail, size_t taillen);
    /* 1 if this bare JID is a server admin (may create rooms when creation is restricted, owns all rooms) */
    int (*is_admin)(void *ud, const char *bare_jid);
    /* Call muc_service_tick about secs seconds from now (a locked room's deadline). May be NULL: then
     * rooms nobody configures stay locked until their owner leaves. */
    void (*wake)(void *ud, int secs);
} muc_host;

typedef struct muc_config {
    const char *domain;         /* e.g. conference.localhost */
    const char *server_domain;  /* the users' domain, e.g. localhost (for who counts as a local user) */
    const char *data_dir;       /* persistent rooms live in data_dir/rooms/ */
    int create_rooms;           /* 1 = any local user may create rooms, 0 = admins only */
    int max_rooms;
    int max_occupants;          /* per room, upper bound for maxusers */
    int max_rooms_per_user;     /* rooms one bare JID may be in at once (0 = no limit) */
    int max_history;            /* upper bound for historylength */
    int default_history;
    int default_persistent;
    int default_public;
    int lock_timeout;           /* seconds a room created by a join stays locked unconfigured; 0: no locking */
    int archive_max;            /* messages a persistent room's archive keeps (the oldest go); 0: no bound */
    int archive_fsync;          /* 1: each archived message is fdatasync'ed before the room sends it on */
} muc_config;

typedef struct muc_service muc_service;

/* Loads persistent rooms from data_dir/rooms/. NULL with err filled on failure. */
muc_service *muc_service_new(const muc_config *cfg, const muc_host *host, char *err, size_t errlen);
void muc_service_free(muc_service *m);
/* A reloaded configuration (SIGHUP). The limits and defaults apply from now on: create_rooms, max_rooms and
 * default_* when a room is created, max_rooms_per_user when someone joins, max_occupants and max_history when
 * an owner submits the configuration form. Rooms that exist keep their settings and occupants. domain,
 * server_domain and data_dir cannot change at run time: they are ignored here. */
void muc_service_set_config(muc_service *m, const muc_config *cfg);
/* A stanza whose 'to' is the service domain (or a JID at it). 'from' has already been stamped by the
 * server with the sender's full JID. The tree is only valid during the call. */
void muc_handle_stanza(muc_service *m, const xml_node *stanza);
/* Time passed: locked rooms nobody configured by now are destroyed. */
void muc_service_tick(muc_service *m, time_t now);
/* Persist every persistent room now (shutdown). */
int muc_service_flush(muc_service *m);
size_t muc_room_count(const muc_service *m);

/* ---- read-only views of the rooms, and destruction by name, for the admin socket ---- */
typedef struct muc_room_view {
    const char *jid, *name, *description, *subject;     /* "" when unset; valid until the next change */
    unsigned occupants, max_users, history;
    int persistent, public_room, password, members_only, moderated, jids_public;
} muc_room_view;

typedef struct muc_occupant_view {
    const char *nick, *bare_jid, *role, *affiliation;
    unsigned sessions;
} muc_occupant_view;

/* every room, in no set order, until each returns nonzero */
void muc_rooms_foreach(const muc_service *m, int (*each)(void *ud, const muc_room_view *v), void *ud);
/* name: a room's local part, or its bare JID at this service. -1 when there is no such room. */
int muc_room_view_get(const muc_service *m, const char *name, muc_room_view *out);
/* the room's occupants in join order, until each returns nonzero; -1 when there is no such room */
int muc_room_occupants_foreach(const muc_service *m, const char *name,
                               int (*each)(void *ud, const muc_occupant_view *o), void *ud);
/* Destroy the room as its owner would: each occupant gets unavailable presence with <destroy/> and the reason
 * (none when NULL), a persistent room's file is removed. 0, or -1 when there is no such room. */
int muc_room_destroy_by_name(muc_service *m, const char *name, const char *reason);

#endif
