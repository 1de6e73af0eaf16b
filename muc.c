/* muc.c - the multi-user chat service (XEP-0045): rooms, occupants and their sessions, affiliations and
 * roles, history, room configuration, and the persistence of rooms as text files in data_dir/rooms/. */
#include "muc.h"
#include "archive.h"
#include "jid.h"
#include "mam.h"
#include "precis.h"
#include "stanza.h"
#include "store.h"
#include "config.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FORM_CONFIG    NS_MUC "#roomconfig"
#define FORM_INFO      NS_MUC "#roominfo"
#define FORM_REGISTER  NS_MUC "#register"
#define FORM_REQUEST   NS_MUC "#request"
#define CONFIG_VAR     "muc#roomconfig_"
#define NODE_ROOMUSER  "x-roomuser-item"
#define NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define OID_SECRET 32                   /* bytes of a room's occupant-id key */
#define OID_LEN 22                      /* base64 of 16 bytes of HMAC-SHA-256, unpadded */
#define MAM_PAGE_DEFAULT 50             /* messages in a MAM page when the query does not say */
#define MAM_PAGE_MAX 250                /* a larger RSM max is lowered to this */

#define JID_MAX (3 * JID_PART_MAX + 8)
#define NICK_MAX (JID_PART_MAX + 1)         /* an enforced nick is a resourcepart */
#define NICK_KEY_MAX (NICK_MAX * 3 / 2)     /* lowercasing can grow it (U+0130: 2 bytes to 3) */
#define FWD_SLOTS 8
/* a status that must not be dropped: the compiler checks every caller (-Wunused-result) */
#define MUST_USE __attribute__((warn_unused_result))

enum { AFF_OUTCAST, AFF_NONE, AFF_MEMBER, AFF_ADMIN, AFF_OWNER, AFF_INVALID };
static const char *const aff_names[] = { "outcast", "none", "member", "admin", "owner" };
enum { ROLE_NONE, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR, ROLE_INVALID };
static const char *const role_names[] = { "none", "visitor", "participant", "moderator" };
enum { PM_NONE, PM_MODERATORS, PM_PARTICIPANTS, PM_ANYONE };
static const char *const pm_names[] = { "none", "moderators", "participants", "anyone" };
static const char *const whois_names[] = { "moderators", "anyone" };    /* whois_anyone 0 and 1 */

/* one connected resource of an occupant; several when a user joins with one nick from several clients */
typedef struct session {
    struct session *next;       /* the occupant's next session (the first one is its primary) */
    struct session *hnext;      /* room hash chain by full JID */
    struct occupant *occ;
    unsigned char dead;         /* deliver failed: removed after the current stanza */
    char jid[];
} session;

typedef struct occupant {
    struct occupant *prev, *next;   /* join order */
    struct occupant *hnext;         /* room hash chain by nick */
    session *sessions;
    char *bare;
    char *payload;                  /* children of the last presence (show, status, caps), serialized */
    unsigned char role, aff;
    char oid[OID_LEN + 1];          /* XEP-0421 occupant-id: the same for this bare JID in this room, always */
    char nick[];                    /* the nick as shown, then its comparison key (nick_key_of) */
} occupant;

typedef struct aff_entry { char *jid, *nick; unsigned char aff; } aff_entry;
typedef struct hist_entry { char *data; unsigned len, split; time_t when; } hist_entry;
typedef struct fwd_iq { char *id, *orig_id, *orig_from, *target; } fwd_iq;

typedef struct room {
    struct room *next, *hnext;
    char *jid;                      /* name@domain */
    char *title, *desc, *lang, *password, *subject, *subject_nick;
    unsigned char persistent, public_room, changesubject, allowinvites, allowpm, membersonly,
                  moderated, whois_anyone, memberlist_roles, destroyed,
                  locked;           /* created by a join, not configured yet (XEP-0045 §10.1) */
    int maxusers, histlen, defhist;
    time_t lock_until;              /* a locked room is destroyed then */
    time_t subject_when;            /* when the subject was set (0: not known) */
    unsigned char oid_secret[OID_SECRET];   /* kept in the room file: occupant-ids survive restarts */
    archive *arc;                   /* a persistent room's messages (XEP-0313), opened when first needed */
    unsigned char hist_primed;      /* the history ring holds the archive's newest messages already */
    aff_entry *affs;
    size_t naffs, caffs;
    hist_entry *hist;               /* ring of histlen slots, allocated on the first message */
    unsigned hist_head, hist_count, hist_cap;
    occupant *first, *last;
    occupant **nicks;
    session **sess;
    unsigned nick_nb, sess_nb, noccupants, nsessions, dead;
    fwd_iq *fwd;
    unsigned fwd_next;
} room;

/* one encoded stanza: head (start tag open) + tail, spliced with " to='...'" per recipient */
typedef struct enc { xml_buf b; size_t split; } enc;

struct muc_service {
    muc_config cfg;                 /* limits as of muc_service_new or the last muc_service_set_config */
    muc_host host;
    char *domain, *server_domain, *data_dir;
    room *rooms, **rtab;
    unsigned rnb;
    size_t nrooms;
    xml_arena *arena;               /* trees of the current stanza, reset after it */
    unsigned char tree_oom;         /* an arena allocation failed in a tree not yet sent: it must not go */
    enc e[3], tmp, hist;
    room *touched;                  /* room whose dead sessions or emptiness must be handled */
    struct user_rooms **utab;       /* rooms each bare JID is in, for max_rooms_per_user */
    unsigned nlocked;               /* rooms awaiting their first configuration */
    unsigned long fwd_counter;
};

/* what one stanza is and who sent it: on muc_handle_stanza's stack, passed down, gone with the stanza */
typedef struct muc_ctx {
    const xml_node *st;
    jid from, to;                   /* to.local names the room, to.resource the nick */
    char full[JID_MAX], bare[JID_MAX];  /* the sender */
} muc_ctx;

/* how many rooms one bare JID is in; entries exist only while that is at least one */
typedef struct user_rooms { struct user_rooms *next; unsigned n; char bare[]; } user_rooms;
#define UTAB_SIZE 4096

/* ------------------------------------------------------------------ room settings: one row each */

/* How a setting is stored in the room, shown in the form, parsed from it and kept in the room file. */
enum setting_kind {
    SK_TEXT,        /* char *, NULL when empty */
    SK_SECRET,      /* the password: text, shown as text-private */
    SK_PROTECTED,   /* passwordprotectedroom: no storage, derived from the secret (see password_rule) */
    SK_BOOL,        /* unsigned char 0 or 1 */
    SK_CHOICE,      /* unsigned char: an index into the row's names */
    SK_ROLES,       /* unsigned char: a set of roles, bit 1 << role */
    SK_COUNT,       /* int, 0 up to the configured bound */
    SK_LIMIT,       /* int, 0 for none; 1 up to the configured bound when that is set */
};

typedef struct form_opt { const char *label, *value; } form_opt;

typedef struct setting {
    const char *key;            /* room file key; NULL: not in the file (see the rows) */
    const char *var;            /* form var after CONFIG_VAR */
    const char *type, *label;   /* form field */
    unsigned char kind;
    unsigned char clamp;        /* counts: a loaded value over the bound is lowered to it */
    size_t off;                 /* offsetof(room, field) */
    size_t bound;               /* counts: offsetof(muc_config, the bound) */
    const char *const *names;   /* choices: value i is shown as names[i] */
    int nnames;
    const form_opt *opts;       /* options the form offers, ended by a NULL label */
} setting;

static const form_opt pm_opts[] = {
    { "Anyone", "anyone" }, { "Participants", "participants" }, { "Moderators", "moderators" }, { "Nobody", "none" },
    { NULL, NULL } };
static const form_opt whois_opts[] = { { "Moderators", "moderators" }, { "Anyone", "anyone" }, { NULL, NULL } };
static const form_opt role_opts[] = {
    { "moderator", "moderator" }, { "participant", "participant" }, { "visitor", "visitor" }, { NULL, NULL } };

#define RF(f) offsetof(room, f)
#define CF(f) offsetof(muc_config, f)
/* in the order of the configuration form */
static const setting settings[] = {
    { .key = "title", .var = "roomname", .type = "text-single", .label = "Title", .kind = SK_TEXT, .off = RF(title) },
    { .key = "desc", .var = "roomdesc", .type = "text-single", .label = "Description", .kind = SK_TEXT,
      .off = RF(desc) },
    { .key = "lang", .var = "lang", .type = "text-single", .label = "Language", .kind = SK_TEXT, .off = RF(lang) },
    /* no file key: only persistent rooms have a file, so loading one makes the room persistent */
    { .key = NULL, .var = "persistentroom", .type = "boolean", .label = "Persistent", .kind = SK_BOOL,
      .off = RF(persistent) },
    { .key = "public", .var = "publicroom", .type = "boolean", .label = "Listed in the directory", .kind = SK_BOOL,
      .off = RF(public_room) },
    { .key = "changesubject", .var = "changesubject", .type = "boolean", .label = "Occupants may change the subject",
      .kind = SK_BOOL, .off = RF(changesubject) },
    { .key = "allowinvites", .var = "allowinvites", .type = "boolean", .label = "Occupants may invite",
      .kind = SK_BOOL, .off = RF(allowinvites) },
    { .key = "allowpm", .var = "allowpm", .type = "list-single", .label = "Who may send private messages",
      .kind = SK_CHOICE, .off = RF(allowpm), .names = pm_names, .nnames = 4, .opts = pm_opts },
    /* no file key and no storage: shown from the secret; submitting 0 clears the secret */
    { .key = NULL, .var = "passwordprotectedroom", .type = "boolean", .label = "Password protected",
      .kind = SK_PROTECTED, .off = RF(password) },
    { .key = "password", .var = "roomsecret", .type = "text-private", .label = "Password", .kind = SK_SECRET,
      .off = RF(password) },
    { .key = "membersonly", .var = "membersonly", .type = "boolean", .label = "Members only", .kind = SK_BOOL,
      .off = RF(membersonly) },
    { .key = "moderated", .var = "moderatedroom", .type = "boolean", .label = "Moderated", .kind = SK_BOOL,
      .off = RF(moderated) },
    { .key = "whois_anyone", .var = "whois", .type = "list-single", .label = "Who may see real JIDs",
      .kind = SK_CHOICE, .off = RF(whois_anyone), .names = whois_names, .nnames = 2, .opts = whois_opts },
    { .key = "memberlist", .var = "getmemberlist", .type = "list-multi", .label = "Roles that may see the member list",
      .kind = SK_ROLES, .off = RF(memberlist_roles), .opts = role_opts },
    { .key = "maxusers", .var = "maxusers", .type = "text-single", .label = "Maximum occupants", .kind = SK_LIMIT,
      .clamp = 1, .off = RF(maxusers), .bound = CF(max_occupants) },
    { .key = "histlen", .var = "historylength", .type = "text-single", .label = "Messages kept in history",
      .kind = SK_COUNT, .clamp = 1, .off = RF(histlen), .bound = CF(max_history) },
    /* not lowered on load: it only caps what a joiner is sent */
    { .key = "defhist", .var = "defaulthistorymessages", .type = "text-single", .label = "Messages sent on joining",
      .kind = SK_COUNT, .off = RF(defhist), .bound = CF(max_history) },
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

/* one submitted form field, before it is applied */
typedef struct setting_value { unsigned char given; int num; const char *str; } setting_value;

/* a room's persistent state as it was before a change, to put back if the change cannot be stored */
typedef union setting_slot { char *str; int num; } setting_slot;
typedef struct room_snapshot {
    unsigned char taken;            /* 0: nothing to store or undo (a temporary room staying so) */
    unsigned char persistent;       /* was persistent: a room made temporary loses its file */
    setting_slot v[NSETTINGS];
    char *subject, *subject_nick;
    aff_entry *affs;
    size_t naffs;
} room_snapshot;

/* ------------------------------------------------------------------ small helpers */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s ? s : "", n);
    return p;
}

static MUST_USE int set_str(char **field, const char *v)
{
    char *p = xstrdup(v);
    if (!p) return -1;
    free(*field);
    *field = p;
    return 0;
}

/* text settings keep "" as NULL */
static MUST_USE int set_text(char **field, const char *v)
{
    if (v && *v) return set_str(field, v);
    free(*field);
    *field = NULL;
    return 0;
}

/* the chain of a name in a hash table of nb chains, nb a power of two */
static unsigned bucket(const char *s, unsigned nb)
{
    return (unsigned)(str_hash(s) & (nb - 1));
}

static int str_in(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++) if (s && strcmp(s, names[i]) == 0) return i;
    return -1;
}

static int parse_bool(const char *s)
{
    if (!strcmp(s, "1") || !strcmp(s, "true")) return 1;
    if (!strcmp(s, "0") || !strcmp(s, "false")) return 0;
    return -1;
}

/* a non-negative decimal integer, or -1 */
static long parse_uint(const char *s)
{
    if (!*s || strlen(s) > 9) return -1;
    long v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}


/* ------------------------------------------------------------------ stanza trees in the arena */

/* Every builder is safe on a NULL parent and marks the tree on a failed allocation (like xml_buf's oom),
 * so a tree is checked once, where it is encoded, and never goes out with a part missing. */
static xml_node *t_node(muc_service *m, const char *name, const char *ns)
{
    xml_node *n = xml_node_new(m->arena, name, ns);
    if (!n) m->tree_oom = 1;
    return n;
}

static xml_node *t_child(muc_service *m, xml_node *parent, const char *name, const char *ns)
{
    xml_node *n = parent ? xml_add_child(m->arena, parent, name, ns) : NULL;
    if (!n) m->tree_oom = 1;
    return n;
}

static xml_node *t_text(muc_service *m, xml_node *parent, const char *name, const char *ns, const char *text)
{
    xml_node *n = parent ? xml_add_child_text(m->arena, parent, name, ns, text) : NULL;
    if (!n) m->tree_oom = 1;
    return n;
}

static void t_attr(muc_service *m, xml_node *n, const char *name, const char *value)
{
    if (!n || xml_set_attr(m->arena, n, name, value) < 0) m->tree_oom = 1;
}

static xml_node *t_copy(muc_service *m, const xml_node *n)
{
    xml_node *c = xml_copy(m->arena, n);
    if (!c) m->tree_oom = 1;
    return c;
}

static void t_append(muc_service *m, xml_node *parent, xml_node *child)
{
    if (parent && child) xml_append_child(parent, child);
    else m->tree_oom = 1;
}

/* ------------------------------------------------------------------ encoding and delivery */

/* -1 (logged, the mark cleared for the next tree) when the tree or its encoding lost a part */
static MUST_USE int enc_tree(muc_service *m, enc *e, const xml_node *n)
{
    int bad = !n || m->tree_oom;
    m->tree_oom = 0;
    if (!bad) {
        xml_buf_reset(&e->b);
        xml_serialize_split(&e->b, n, XML_NS_CLIENT, &e->split);
        bad = e->b.oom;
    }
    if (bad) log_err("muc: out of memory building a stanza; it is not sent");
    return bad ? -1 : 0;
}

static int enc_send(muc_service *m, const enc *e, const char *to)
{
    if (e->b.oom || !e->b.data) {
        log_err("muc: out of memory encoding a stanza to %s; it is not sent", to);
        return 0;
    }
    return m->host.deliver(m->host.ud, to, e->b.data, e->split, e->b.data + e->split, e->b.len - e->split);
}

/* a reply or notice to any JID: one that is gone is no concern of the room's (occupants are sent to with
 * send_session, which drops them) */
static void enc_send_any(muc_service *m, const enc *e, const char *to)
{
    (void)enc_send(m, e, to);
}

static void mark_dead(muc_service *m, room *r, session *s)
{
    if (!s->dead) { s->dead = 1; r->dead++; m->touched = r; }
}

static void send_session(muc_service *m, room *r, session *s, const enc *e)
{
    if (!s->dead && enc_send(m, e, s->jid) < 0) mark_dead(m, r, s);
}

static void send_occupant(muc_service *m, room *r, occupant *o, const enc *e)
{
    for (session *s = o->sessions; s; s = s->next) send_session(m, r, s, e);
}

static void send_tree(muc_service *m, const xml_node *n, const char *to)
{
    if (enc_tree(m, &m->tmp, n) == 0) enc_send_any(m, &m->tmp, to);
}

/* a new stanza of the original's kind addressed back to its sender */
static xml_node *reply_node(muc_service *m, const xml_node *st, const char *type)
{
    xml_node *n = t_node(m, st->name, XML_NS_CLIENT);
    const char *to = xml_attr_get(st, "to"), *id = xml_attr_get(st, "id");
    if (to) t_attr(m, n, "from", to);
    if (id) t_attr(m, n, "id", id);
    if (type) t_attr(m, n, "type", type);
    return n;
}

/* Not stanza_error_new: clients have always had reply_node's attribute order with 'to' spliced in last, the
 * join element echoed before <error/>, and no error for an IQ whose type is there but neither get nor set
 * (stanza_may_bounce lets those have one: bad-request). */
static void send_error_text(muc_service *m, const muc_ctx *cx, const char *etype, const char *cond, const char *by,
                            const char *text);

static void send_error(muc_service *m, const muc_ctx *cx, const char *etype, const char *cond, const char *by)
{
    send_error_text(m, cx, etype, cond, by, NULL);
}

static void send_error_text(muc_service *m, const muc_ctx *cx, const char *etype, const char *cond, const char *by,
                            const char *text)
{
    const xml_node *st = cx->st;
    const char *type = xml_attr_get(st, "type");
    if (type && !strcmp(type, "error")) return;
    if (!strcmp(st->name, "iq") && type && strcmp(type, "get") && strcmp(type, "set")) return;
    xml_node *n = reply_node(m, st, "error");
    /* echo the join element (never its password): clients match a join error by it (XEP-0045 §7.2) */
    if (!strcmp(st->name, "presence") && xml_child(st, "x", NS_MUC)) t_child(m, n, "x", NS_MUC);
    xml_node *e = t_child(m, n, "error", NULL);
    t_attr(m, e, "type", etype);
    if (by) t_attr(m, e, "by", by);
    t_child(m, e, cond, NS_STANZAS);
    if (text) t_text(m, e, "text", NS_STANZAS, text);
    send_tree(m, n, cx->full);
}

/* the result, or resource-constraint when the payload (or the reply) lost a part to a failed allocation */
static void send_result(muc_service *m, const muc_ctx *cx, xml_node *payload)
{
    xml_node *n = reply_node(m, cx->st, "result");
    if (payload) t_append(m, n, payload);
    if (!m->tree_oom) { send_tree(m, n, cx->full); return; }
    m->tree_oom = 0;
    send_error(m, cx, "wait", "resource-constraint", NULL);
}

/* ------------------------------------------------------------------ rooms, occupants, sessions */

static int can_see_jids(const room *r, const occupant *q)
{
    return r->whois_anyone || q->role == ROLE_MODERATOR;
}

static int room_aff(const room *r, const char *bare)
{
    for (size_t i = 0; i < r->naffs; i++)
        if (!strcmp(r->affs[i].jid, bare)) return r->affs[i].aff;
    return AFF_NONE;
}

static aff_entry *room_aff_entry(const room *r, const char *bare)
{
    for (size_t i = 0; i < r->naffs; i++)
        if (!strcmp(r->affs[i].jid, bare)) return &r->affs[i];
    return NULL;
}

static int is_server_admin(muc_service *m, const char *bare)
{
    return m->host.is_admin && m->host.is_admin(m->host.ud, bare);
}

static int effective_aff(muc_service *m, const room *r, const char *bare)
{
    return is_server_admin(m, bare) ? AFF_OWNER : room_aff(r, bare);
}

/* two nicks are the same nick when their PRECIS comparison keys are (RFC 8266 §2.4): "Romeo", "ROMEO" and
 * fullwidth "ｒｏｍｅｏ" are one nick */
static int nick_key(const char *nick, char key[NICK_KEY_MAX])
{
    const char *why;
    return precis_nick_key(nick, strlen(nick), key, NICK_KEY_MAX, &why) < 0 ? -1 : 0;
}

static int same_nick(const char *a, const char *key_b)
{
    char ka[NICK_KEY_MAX];
    return nick_key(a, ka) == 0 && !strcmp(ka, key_b);
}

static const char *reserved_nick_owner(const room *r, const char *nick)
{
    char key[NICK_KEY_MAX];
    if (nick_key(nick, key) < 0) return NULL;
    for (size_t i = 0; i < r->naffs; i++)
        if (r->affs[i].nick && same_nick(r->affs[i].nick, key)) return r->affs[i].jid;
    return NULL;
}

static void aff_free(aff_entry *a, size_t n)
{
    for (size_t i = 0; i < n; i++) { free(a[i].jid); free(a[i].nick); }
    free(a);
}

/* a new entry for bare with no affiliation yet; NULL on out of memory */
static aff_entry *aff_append(room *r, const char *bare)
{
    if (r->naffs == r->caffs) {
        size_t nc = r->caffs ? r->caffs * 2 : 4;
        aff_entry *na = realloc(r->affs, nc * sizeof *na);
        if (!na) return NULL;
        r->affs = na;
        r->caffs = nc;
    }
    aff_entry *e = &r->affs[r->naffs];
    e->jid = xstrdup(bare);
    e->nick = NULL;
    e->aff = AFF_NONE;
    if (!e->jid) return NULL;
    r->naffs++;
    return e;
}

/* nick: NULL keeps a reserved nick, "" drops it. Nothing changes when it fails (out of memory). */
static MUST_USE int set_aff(room *r, const char *bare, int aff, const char *nick)
{
    aff_entry *e = room_aff_entry(r, bare);
    if (aff == AFF_NONE) {
        if (e) {
            free(e->jid);
            free(e->nick);
            *e = r->affs[--r->naffs];
        }
        return 0;
    }
    char *nn = NULL;
    if (nick && *nick && !(nn = xstrdup(nick))) return -1;
    if (!e && !(e = aff_append(r, bare))) { free(nn); return -1; }
    e->aff = (unsigned char)aff;
    /* an outcast has no reserved nick unless one is given with it */
    if (aff == AFF_OUTCAST || nick) { free(e->nick); e->nick = nn; }
    return 0;
}

static int role_for(const room *r, int aff)
{
    if (aff >= AFF_ADMIN) return ROLE_MODERATOR;
    if (aff == AFF_MEMBER || !r->moderated) return ROLE_PARTICIPANT;
    return ROLE_VISITOR;
}

static MUST_USE int table_grow(void ***tab, unsigned *nb, unsigned count, size_t next_off, const char *(*key)(void *))
{
    if (*tab && count <= *nb) return 0;
    unsigned nn = *nb ? *nb * 2 : 8;
    void **t = calloc(nn, sizeof *t);
    if (!t) return *tab ? 0 : -1;   /* keep the old table, just longer chains */
    for (unsigned i = 0; i < *nb; i++) {
        void *e = (*tab)[i];
        while (e) {
            void *nx = *(void **)((char *)e + next_off);
            unsigned h = bucket(key(e), nn);
            *(void **)((char *)e + next_off) = t[h];
            t[h] = e;
            e = nx;
        }
    }
    free(*tab);
    *tab = t;
    *nb = nn;
    return 0;
}

static const char *nick_key_of(const occupant *o) { return o->nick + strlen(o->nick) + 1; }
static const char *occ_key(void *e) { return nick_key_of(e); }
static const char *sess_key(void *e) { return ((session *)e)->jid; }

static occupant *find_nick(const room *r, const char *nick)
{
    char key[NICK_KEY_MAX];
    if (!r->nicks || nick_key(nick, key) < 0) return NULL;
    for (occupant *o = r->nicks[bucket(key, r->nick_nb)]; o; o = o->hnext)
        if (!strcmp(nick_key_of(o), key)) return o;
    return NULL;
}

static session *find_session(const room *r, const char *full)
{
    if (!r->sess) return NULL;
    for (session *s = r->sess[bucket(full, r->sess_nb)]; s; s = s->hnext)
        if (!strcmp(s->jid, full)) return s;
    return NULL;
}

static void nick_unhash(room *r, occupant *o)
{
    occupant **pp = &r->nicks[bucket(nick_key_of(o), r->nick_nb)];
    while (*pp && *pp != o) pp = &(*pp)->hnext;
    if (*pp) *pp = o->hnext;
}

static void nick_hash(room *r, occupant *o)
{
    unsigned h = bucket(nick_key_of(o), r->nick_nb);
    o->hnext = r->nicks[h];
    r->nicks[h] = o;
}

static MUST_USE session *session_add(room *r, occupant *o, const char *full)
{
    if (table_grow((void ***)&r->sess, &r->sess_nb, r->nsessions + 1, offsetof(session, hnext), sess_key) < 0)
        return NULL;
    size_t n = strlen(full) + 1;
    session *s = calloc(1, sizeof *s + n);
    if (!s) return NULL;
    memcpy(s->jid, full, n);
    s->occ = o;
    session **tail = &o->sessions;
    while (*tail) tail = &(*tail)->next;
    *tail = s;
    unsigned h = bucket(full, r->sess_nb);
    s->hnext = r->sess[h];
    r->sess[h] = s;
    r->nsessions++;
    return s;
}

static void session_remove(room *r, session *s)
{
    session **pp = &r->sess[bucket(s->jid, r->sess_nb)];
    while (*pp && *pp != s) pp = &(*pp)->hnext;
    if (*pp) *pp = s->hnext;
    for (pp = &s->occ->sessions; *pp && *pp != s; pp = &(*pp)->next) {}
    if (*pp) *pp = s->next;
    if (s->dead) r->dead--;
    r->nsessions--;
    free(s);
}

/* XEP-0421: base64 of 16 bytes of HMAC-SHA-256 over "room JID NUL bare JID" with the room's secret: stable for
 * one person in one room, across sessions and restarts, and says nothing of who it is. "" if HMAC fails. */
static void occupant_id(const room *r, const char *bare, char out[OID_LEN + 1])
{
    unsigned char msg[2 * JID_MAX + 2], mac[EVP_MAX_MD_SIZE], b64[32];
    unsigned int ml = 0;
    size_t rl = strlen(r->jid), bl = strlen(bare);
    out[0] = 0;
    if (rl + bl + 1 > sizeof msg) return;
    memcpy(msg, r->jid, rl + 1);
    memcpy(msg + rl + 1, bare, bl);
    if (!HMAC(EVP_sha256(), r->oid_secret, OID_SECRET, msg, rl + 1 + bl, mac, &ml) || ml < 16) return;
    EVP_EncodeBlock(b64, mac, 16);
    memcpy(out, b64, OID_LEN);
    out[OID_LEN] = 0;
}

/* an occupant's memory with its nick and the nick's key inside; also taken for a rename before anyone hears
 * of it. nick is enforced already: its key cannot be refused. */
static MUST_USE occupant *occupant_alloc_named(const char *nick)
{
    char key[NICK_KEY_MAX];
    if (nick_key(nick, key) < 0) return NULL;
    size_t n = strlen(nick) + 1, kn = strlen(key) + 1;
    occupant *o = calloc(1, sizeof *o + n + kn);
    if (!o) return NULL;
    memcpy(o->nick, nick, n);
    memcpy(o->nick + n, key, kn);
    return o;
}

static MUST_USE occupant *occupant_add(room *r, const char *nick, const char *bare, const char *full)
{
    if (table_grow((void ***)&r->nicks, &r->nick_nb, r->noccupants + 1, offsetof(occupant, hnext), occ_key) < 0)
        return NULL;
    occupant *o = occupant_alloc_named(nick);
    if (!o) return NULL;
    occupant_id(r, bare, o->oid);
    o->bare = xstrdup(bare);
    if (!o->bare || !session_add(r, o, full)) { free(o->bare); free(o); return NULL; }
    nick_hash(r, o);
    o->prev = r->last;
    if (r->last) r->last->next = o; else r->first = o;
    r->last = o;
    r->noccupants++;
    return o;
}

static void occupant_free(room *r, occupant *o)
{
    while (o->sessions) session_remove(r, o->sessions);
    nick_unhash(r, o);
    if (o->prev) o->prev->next = o->next; else r->first = o->next;
    if (o->next) o->next->prev = o->prev; else r->last = o->prev;
    r->noccupants--;
    free(o->bare);
    free(o->payload);
    free(o);
}


/* o moves into no (occupant_alloc_named with its new nick), keeping its place and sessions; o is freed */
static occupant *occupant_rename(room *r, occupant *o, occupant *no)
{
    nick_unhash(r, o);
    /* the header only: sizeof *o may reach into nick[] (padding), and no's nick and key must stay */
    memcpy(no, o, offsetof(occupant, nick));
    if (no->prev) no->prev->next = no; else r->first = no;
    if (no->next) no->next->prev = no; else r->last = no;
    for (session *s = no->sessions; s; s = s->next) s->occ = no;
    nick_hash(r, no);
    free(o);
    return no;
}

static void fwd_clear(fwd_iq *f)
{
    free(f->id); free(f->orig_id); free(f->orig_from); free(f->target);
    memset(f, 0, sizeof *f);
}

static user_rooms **user_rooms_slot(muc_service *m, const char *bare);

static unsigned user_rooms_count(muc_service *m, const char *bare)
{
    user_rooms **pp = user_rooms_slot(m, bare);
    return pp && *pp ? (*pp)->n : 0;
}

/* the user enters a room as a new occupant */
static MUST_USE int user_rooms_enter(muc_service *m, const char *bare)
{
    user_rooms **pp = user_rooms_slot(m, bare);
    if (!pp) return -1;
    if (!*pp) {
        size_t n = strlen(bare) + 1;
        user_rooms *u = calloc(1, sizeof *u + n);
        if (!u) return -1;
        memcpy(u->bare, bare, n);
        *pp = u;
    }
    (*pp)->n++;
    return 0;
}

/* that occupant is gone */
static void user_rooms_leave(muc_service *m, const char *bare)
{
    user_rooms **pp = user_rooms_slot(m, bare);
    if (!pp || !*pp) return;    /* never counted: there is no table to count in */
    user_rooms *u = *pp;
    if (u->n > 1) { u->n--; return; }
    *pp = u->next;
    free(u);
}

/* an occupant leaves the room for good */
static void occupant_drop(muc_service *m, room *r, occupant *o)
{
    user_rooms_leave(m, o->bare);
    occupant_free(r, o);
}

static void room_free(room *r)
{
    while (r->first) occupant_free(r, r->first);
    aff_free(r->affs, r->naffs);
    for (unsigned i = 0; i < r->hist_cap && r->hist; i++) free(r->hist[i].data);
    free(r->hist);
    if (r->fwd) for (unsigned i = 0; i < FWD_SLOTS; i++) fwd_clear(&r->fwd[i]);
    free(r->fwd);
    archive_close(r->arc);
    free(r->nicks);
    free(r->sess);
    free(r->jid); free(r->title); free(r->desc); free(r->lang); free(r->password);
    free(r->subject); free(r->subject_nick);
    free(r);
}

static room *find_room(const muc_service *m, const char *name)
{
    if (!m->rtab) return NULL;
    size_t n = strlen(name);
    for (room *r = m->rtab[bucket(name, m->rnb)]; r; r = r->hnext)
        if (!strncmp(r->jid, name, n) && r->jid[n] == '@') return r;
    return NULL;
}

/* a room is hashed by its name, the local part of its JID, as find_room looks it up */
static unsigned room_bucket(const room *r, unsigned nb)
{
    char name[JID_PART_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(strchr(r->jid, '@') - r->jid), r->jid);
    return bucket(name, nb);
}

static MUST_USE int rooms_grow(muc_service *m)
{
    if (m->rtab && m->nrooms < m->rnb) return 0;
    unsigned nn = m->rnb ? m->rnb * 2 : 16;
    room **t = calloc(nn, sizeof *t);
    if (!t) return m->rtab ? 0 : -1;
    for (room *r = m->rooms; r; r = r->next) {
        unsigned h = room_bucket(r, nn);
        r->hnext = t[h];
        t[h] = r;
    }
    free(m->rtab);
    m->rtab = t;
    m->rnb = nn;
    return 0;
}

static MUST_USE room *room_new(muc_service *m, const char *name)
{
    if (rooms_grow(m) < 0) return NULL;
    room *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    size_t n = strlen(name) + strlen(m->domain) + 2;
    r->jid = malloc(n);
    if (!r->jid) { free(r); return NULL; }
    snprintf(r->jid, n, "%s@%s", name, m->domain);
    if (RAND_bytes(r->oid_secret, OID_SECRET) != 1) { free(r->jid); free(r); return NULL; }
    r->hist_primed = 1;     /* a loaded room is not: rooms_load clears it */
    r->persistent = m->cfg.default_persistent != 0;
    r->public_room = m->cfg.default_public != 0;
    r->allowpm = PM_ANYONE;
    r->memberlist_roles = 1u << ROLE_MODERATOR;
    r->maxusers = m->cfg.max_occupants;
    r->histlen = m->cfg.default_history;
    if (r->histlen > m->cfg.max_history) r->histlen = m->cfg.max_history;
    if (r->histlen < 0) r->histlen = 0;
    r->defhist = r->histlen;
    r->next = m->rooms;
    m->rooms = r;
    unsigned h = room_bucket(r, m->rnb);
    r->hnext = m->rtab[h];
    m->rtab[h] = r;
    m->nrooms++;
    return r;
}

static void room_unlink(muc_service *m, room *r)
{
    room **pp = &m->rtab[room_bucket(r, m->rnb)];
    while (*pp && *pp != r) pp = &(*pp)->hnext;
    if (*pp) *pp = r->hnext;
    for (pp = &m->rooms; *pp && *pp != r; pp = &(*pp)->next) {}
    if (*pp) *pp = r->next;
    m->nrooms--;
    if (r->locked) m->nlocked--;
    while (r->first) occupant_drop(m, r, r->first);
    room_free(r);
}

static user_rooms **user_rooms_slot(muc_service *m, const char *bare)
{
    if (!m->utab && !(m->utab = calloc(UTAB_SIZE, sizeof *m->utab))) return NULL;
    user_rooms **pp = &m->utab[bucket(bare, UTAB_SIZE)];
    while (*pp && strcmp((*pp)->bare, bare)) pp = &(*pp)->next;
    return pp;
}

/* ------------------------------------------------------------------ room settings: access */

static int setting_is_text(const setting *s) { return s->kind == SK_TEXT || s->kind == SK_SECRET; }
static int setting_is_count(const setting *s) { return s->kind == SK_COUNT || s->kind == SK_LIMIT; }

static char **setting_str(room *r, const setting *s) { return (char **)((char *)r + s->off); }
static const char *setting_cstr(const room *r, const setting *s) { return *(char *const *)((const char *)r + s->off); }

static int setting_num(const room *r, const setting *s)
{
    const char *p = (const char *)r + s->off;
    return setting_is_count(s) ? *(const int *)p : *(const unsigned char *)p;
}

static void setting_set_num(room *r, const setting *s, int v)
{
    char *p = (char *)r + s->off;
    if (setting_is_count(s)) *(int *)p = v;
    else *(unsigned char *)p = (unsigned char)v;
}

static int setting_bound(const muc_service *m, const setting *s)
{
    return *(const int *)((const char *)&m->cfg + s->bound);
}

/* the largest value a room file may hold */
static int setting_file_max(const setting *s)
{
    switch (s->kind) {
    case SK_CHOICE: return s->nnames - 1;
    case SK_ROLES: return (1 << ROLE_INVALID) - 1;
    case SK_COUNT: case SK_LIMIT: return 1000000;
    default: return 1;
    }
}

static const setting *setting_by_key(const char *key)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].key && !strcmp(settings[i].key, key)) return &settings[i];
    return NULL;
}

static const setting *setting_by_var(const char *var)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (!strcmp(settings[i].var, var)) return &settings[i];
    return NULL;
}

static size_t setting_index_of_kind(int kind)
{
    size_t i = 0;
    while (i < NSETTINGS - 1 && settings[i].kind != kind) i++;
    return i;
}

/* ------------------------------------------------------------------ snapshots: a change undone */

static void snapshot_drop(room_snapshot *s)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (setting_is_text(&settings[i])) free(s->v[i].str);
    free(s->subject);
    free(s->subject_nick);
    aff_free(s->affs, s->naffs);
    memset(s, 0, sizeof *s);
}

static MUST_USE int snapshot_affs(const room *r, room_snapshot *s)
{
    if (!r->naffs) return 0;
    if (!(s->affs = calloc(r->naffs, sizeof *s->affs))) return -1;
    for (; s->naffs < r->naffs; s->naffs++) {
        const aff_entry *from = &r->affs[s->naffs];
        aff_entry *to = &s->affs[s->naffs];
        to->aff = from->aff;
        to->jid = xstrdup(from->jid);
        to->nick = from->nick ? xstrdup(from->nick) : NULL;
        if (!to->jid || (from->nick && !to->nick)) { s->naffs++; return -1; }
    }
    return 0;
}

/* copies what room_save writes (and the persistent flag) when a change could need undoing: always, or
 * only for a persistent room. -1 on out of memory, with nothing taken. */
static MUST_USE int snapshot_begin(const room *r, room_snapshot *s, int always)
{
    memset(s, 0, sizeof *s);
    if (!always && !r->persistent) return 0;
    s->taken = 1;
    s->persistent = r->persistent;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *d = &settings[i];
        const char *v = setting_is_text(d) ? setting_cstr(r, d) : NULL;
        if (d->kind == SK_PROTECTED) continue;      /* no storage of its own */
        if (v && !(s->v[i].str = xstrdup(v))) goto oom;
        if (!setting_is_text(d)) s->v[i].num = setting_num(r, d);
    }
    if (r->subject && !(s->subject = xstrdup(r->subject))) goto oom;
    if (r->subject_nick && !(s->subject_nick = xstrdup(r->subject_nick))) goto oom;
    if (snapshot_affs(r, s) < 0) goto oom;
    return 0;
oom:
    snapshot_drop(s);
    return -1;
}

/* the room as it was at snapshot_begin; cannot fail (the snapshot's memory moves into the room) */
static void snapshot_restore(room *r, room_snapshot *s)
{
    if (!s->taken) return;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *d = &settings[i];
        if (d->kind == SK_PROTECTED) continue;      /* no storage of its own */
        if (setting_is_text(d)) {
            free(*setting_str(r, d));
            *setting_str(r, d) = s->v[i].str;
            s->v[i].str = NULL;
        } else setting_set_num(r, d, s->v[i].num);
    }
    free(r->subject);
    free(r->subject_nick);
    r->subject = s->subject;
    r->subject_nick = s->subject_nick;
    aff_free(r->affs, r->naffs);
    r->affs = s->affs;
    r->naffs = r->caffs = s->naffs;
    s->subject = s->subject_nick = NULL;
    s->affs = NULL;
    s->naffs = 0;
}

/* ------------------------------------------------------------------ persistence */

/* values are one token each: '-' is the empty string; '%XX' escapes '%', blanks and control bytes */
static void put_token(xml_buf *b, const char *s)
{
    xml_buf_puts(b, " ");
    if (!s || !*s) { xml_buf_puts(b, "-"); return; }
    if (!strcmp(s, "-")) { xml_buf_puts(b, "%2D"); return; }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '%' || c == 0x7f) xml_buf_printf(b, "%%%02X", c);
        else xml_buf_append(b, (const char *)&c, 1);
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* decodes one token in place; -1 on a bad escape */
static MUST_USE int decode_token(char *t)
{
    if (!strcmp(t, "-")) { *t = 0; return 0; }
    char *w = t;
    for (char *s = t; *s; s++) {
        if (*s == '%') {
            int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
            *w++ = (char)(hi * 16 + lo);
            s += 2;
        } else *w++ = *s;
    }
    *w = 0;
    return 0;
}

static void room_file(const muc_service *m, const room *r, const char *suffix, char *out, size_t n);

static void room_path(const muc_service *m, const room *r, char *out, size_t n)
{
    room_file(m, r, ".room", out, n);
}

/* data_dir/rooms/NAME.archive: the room's messages */
static void archive_path(const muc_service *m, const room *r, char *out, size_t n)
{
    room_file(m, r, ".archive", out, n);
}

static void room_file(const muc_service *m, const room *r, const char *suffix, char *out, size_t n)
{
    int len = snprintf(out, n, "%s/rooms/", m->data_dir);
    for (const char *s = r->jid; *s && *s != '@' && len + 4 < (int)n; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '_' || c == '-' || (c == '.' && s != r->jid)) out[len++] = (char)c;
        else len += snprintf(out + len, n - len, "%%%02X", c);
    }
    snprintf(out + len, n - len, "%s", suffix);
}

static void setting_write(xml_buf *b, const room *r, const setting *s)
{
    if (!s->key) return;
    xml_buf_printf(b, "\n%s", s->key);
    if (setting_is_text(s)) put_token(b, setting_cstr(r, s));
    else xml_buf_printf(b, " %d", setting_num(r, s));
}

/* the room file: its name, each setting with a file key, the subject, the affiliations */
static void room_write(xml_buf *b, const room *r)
{
    char name[JID_PART_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(strchr(r->jid, '@') - r->jid), r->jid);
    xml_buf_puts(b, "couplet-room 1\nname");
    put_token(b, name);
    for (size_t i = 0; i < NSETTINGS; i++) setting_write(b, r, &settings[i]);
    xml_buf_puts(b, "\noidkey ");
    for (int i = 0; i < OID_SECRET; i++) xml_buf_printf(b, "%02x", r->oid_secret[i]);
    xml_buf_puts(b, "\nsubject");
    put_token(b, r->subject_nick);
    put_token(b, r->subject);
    xml_buf_printf(b, " %lld", (long long)r->subject_when);
    xml_buf_puts(b, "\n");
    for (size_t i = 0; i < r->naffs; i++) {
        xml_buf_printf(b, "aff %s", aff_names[r->affs[i].aff]);
        put_token(b, r->affs[i].jid);
        put_token(b, r->affs[i].nick);
        xml_buf_puts(b, "\n");
    }
    xml_buf_puts(b, "end\n");
}

static MUST_USE int room_save(muc_service *m, room *r)
{
    /* a locked room is not kept: it exists once its owner has configured it */
    if (!r->persistent || r->destroyed || r->locked) return 0;
    xml_buf b;
    char path[4096];
    xml_buf_init(&b);
    room_write(&b, r);
    room_path(m, r, path, sizeof path);
    int rc = b.oom ? -1 : store_write_atomic(path, b.data, b.len);
    if (rc < 0) log_err("muc: cannot write %s: %s", path, b.oom ? "out of memory" : strerror(errno));
    xml_buf_free(&b);
    return rc;
}

static MUST_USE int room_unsave(muc_service *m, room *r)
{
    char path[4096];
    /* a temporary room keeps no archive: its messages go with the file */
    archive_close(r->arc);
    r->arc = NULL;
    archive_path(m, r, path, sizeof path);
    if (archive_remove(path) < 0) log_err("muc: cannot remove %s: %s", path, strerror(errno));
    room_path(m, r, path, sizeof path);
    if (unlink(path) == 0 || errno == ENOENT) return 0;
    log_err("muc: cannot remove %s: %s", path, strerror(errno));
    return -1;
}

/* the room's archive, opened on first use; NULL (logged) when it cannot be */
static archive *room_archive(muc_service *m, room *r)
{
    if (r->arc || !r->persistent) return r->arc;
    char path[4096], err[256];
    archive_path(m, r, path, sizeof path);
    r->arc = archive_open(path, (unsigned)m->cfg.archive_max,
                          m->cfg.archive_fsync ? ARCHIVE_SYNC_ALWAYS : ARCHIVE_SYNC_NONE, err, sizeof err);
    if (!r->arc) log_err("muc: %s", err);
    return r->arc;
}

/* makes a change durable (a room made temporary loses its file), or puts the room back as the snapshot
 * has it; 0, or -1 when the room is as it was. The snapshot is used up either way. */
static MUST_USE int room_commit(muc_service *m, room *r, room_snapshot *s)
{
    int rc = 0;
    if (s->taken) rc = r->persistent ? room_save(m, r) : s->persistent ? room_unsave(m, r) : 0;
    if (rc < 0) snapshot_restore(r, s);
    snapshot_drop(s);
    return rc;
}

/* a change to the room could not be made (out of memory): the room is put back, the requester told */
static int change_fail(muc_service *m, const muc_ctx *cx, room *r, room_snapshot *s)
{
    snapshot_restore(r, s);
    snapshot_drop(s);
    send_error(m, cx, "wait", "resource-constraint", r->jid);
    return -1;
}

/* the change is stored, or undone and the requester told; 0 when it stands and may be announced */
static MUST_USE int change_commit(muc_service *m, const muc_ctx *cx, room *r, room_snapshot *s)
{
    if (room_commit(m, r, s) == 0) return 0;
    send_error(m, cx, "wait", "internal-server-error", r->jid);
    return -1;
}

static MUST_USE int load_int(const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

/* a loaded count over the configured bound is lowered to it, as the form would have refused it */
static int setting_clamp(const muc_service *m, const setting *s, int v)
{
    int bound = setting_bound(m, s);
    if (!s->clamp) return v;
    if (s->kind == SK_LIMIT) return bound > 0 && (v == 0 || v > bound) ? bound : v;
    return v > bound ? bound : v;
}

/* "KEY VALUE" of a setting; NULL, or why the line is wrong */
static const char *load_setting(const muc_service *m, room *r, const setting *s, char **tok, int nt)
{
    int v;
    if (setting_is_text(s)) {
        if (nt != 2) return "bad line";
        return set_text(setting_str(r, s), tok[1]) < 0 ? "out of memory" : NULL;
    }
    if (nt != 2 || load_int(tok[1], 0, setting_file_max(s), &v) < 0) return "bad value";
    setting_set_num(r, s, setting_clamp(m, s, v));
    return NULL;
}

static const char *load_subject(room *r, char **tok, int nt)
{
    /* the time came later: a file without it has a subject of unknown age */
    if (nt != 3 && nt != 4) return "bad line";
    long long when = 0;
    char *end;
    if (nt == 4 && ((when = strtoll(tok[3], &end, 10)) < 0 || *end)) return "bad subject time";
    r->subject_when = (time_t)when;
    if (set_text(&r->subject_nick, tok[1]) < 0 || set_text(&r->subject, tok[2]) < 0) return "out of memory";
    return NULL;
}

static const char *load_aff(room *r, char **tok, int nt)
{
    jid j;
    int a = nt == 4 ? str_in(tok[1], aff_names, 5) : -1;
    if (a < 0 || a == AFF_NONE) return "bad affiliation";
    if (jid_parse(tok[2], &j) < 0 || j.resource[0]) return "bad affiliation JID";
    if (*tok[3] && !jid_resource_valid(tok[3])) return "bad nick";
    if (set_aff(r, tok[2], a, tok[3]) < 0) return "out of memory";
    return NULL;
}

static const char *load_oidkey(room *r, char **tok, int nt)
{
    if (nt != 2 || strlen(tok[1]) != 2 * OID_SECRET) return "bad occupant-id key";
    for (int i = 0; i < OID_SECRET; i++) {
        int hi = hexval(tok[1][2 * i]), lo = hexval(tok[1][2 * i + 1]);
        if (hi < 0 || lo < 0) return "bad occupant-id key";
        r->oid_secret[i] = (unsigned char)(hi * 16 + lo);
    }
    return NULL;
}

/* one line after the name; NULL, or why it is wrong */
static const char *load_line(const muc_service *m, room *r, char **tok, int nt, int *ended)
{
    const char *k = tok[0];
    if (!strcmp(k, "subject")) return load_subject(r, tok, nt);
    if (!strcmp(k, "aff")) return load_aff(r, tok, nt);
    if (!strcmp(k, "oidkey")) return load_oidkey(r, tok, nt);
    if (!strcmp(k, "end")) {
        *ended = 1;
        return nt == 1 ? NULL : "bad line";
    }
    const setting *s = setting_by_key(k);
    return s ? load_setting(m, r, s, tok, nt) : "unknown key";
}

/* the "name" line: a new persistent room; NULL with *why */
static room *load_name(muc_service *m, char **tok, int nt, const char **why)
{
    jid j;
    char buf[JID_MAX];
    *why = "bad room name";
    if (strcmp(tok[0], "name") || nt != 2) { *why = "expected name"; return NULL; }
    if (!*tok[1] || strlen(tok[1]) > JID_PART_MAX) return NULL;
    snprintf(buf, sizeof buf, "%s@%s", tok[1], m->domain);
    if (jid_parse(buf, &j) < 0 || strcmp(j.local, tok[1]) || j.resource[0]) return NULL;
    if (find_room(m, tok[1])) { *why = "duplicate room"; return NULL; }
    room *r = room_new(m, tok[1]);
    if (!r) { *why = "out of memory"; return NULL; }
    *why = NULL;
    r->persistent = 1;
    r->hist_primed = 0;     /* its history is in its archive, read at the first join or message */
    return r;
}

/* a line's blank-separated tokens, at most five (more make the line's count wrong for every key) */
static int split_line(char *ln, char **tok)
{
    char *ts = NULL;
    int nt = 0;
    for (char *t = strtok_r(ln, " ", &ts); t && nt < 5; t = strtok_r(NULL, " ", &ts)) tok[nt++] = t;
    return nt;
}

static MUST_USE int decode_tokens(char **tok, int nt)
{
    for (int i = 1; i < nt; i++) if (decode_token(tok[i]) < 0) return -1;
    return 0;
}

/* parses one room file; 0, or -1 with err "path:LINE: why" */
static MUST_USE int room_load(muc_service *m, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *data = store_read_file(path, &len);
    if (!data) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    room *r = NULL;
    int line = 0, ended = 0, had_key = 0;
    const char *why = NULL;
    char *save = NULL;
    for (char *ln = strtok_r(data, "\n", &save); ln && !why; ln = strtok_r(NULL, "\n", &save)) {
        char *tok[5];
        int nt = split_line(ln, tok);
        line++;
        if (nt == 0 || ended) why = "bad line";
        else if (line == 1) {
            if (nt != 2 || strcmp(tok[0], "couplet-room") || strcmp(tok[1], "1")) why = "not a room file";
        } else if (decode_tokens(tok, nt) < 0) why = "bad escape";
        else if (!r) r = load_name(m, tok, nt, &why);
        else {
            why = load_line(m, r, tok, nt, &ended);
            had_key |= !strcmp(tok[0], "oidkey");
        }
    }
    if (!why && !ended) { line++; why = "unexpected end of file"; }
    free(data);
    /* a file from before occupant-ids keeps the key just made for it, so that ids are stable from now on */
    if (!why && !had_key && room_save(m, r) < 0) log_warn("muc: %s: occupant-ids change at the next start", path);
    if (!why) return 0;
    snprintf(err, errlen, "%s:%d: %s", path, line, why);
    if (r) room_unlink(m, r);
    return -1;
}

static MUST_USE int rooms_load(muc_service *m, char *err, size_t errlen)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/rooms", m->data_dir);
    if (store_mkdir(m->data_dir) < 0 || store_mkdir(dir) < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d) { snprintf(err, errlen, "%s: %s", dir, strerror(errno)); return -1; }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n <= 5 || strcmp(de->d_name + n - 5, ".room")) continue;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (room_load(m, path, err, errlen) < 0) { rc = -1; break; }
    }
    closedir(d);
    return rc;
}

/* ------------------------------------------------------------------ presence encoding */

/* who made a change, copied: the actor may be removed by the very change (an owner outcasting their own JID) */
typedef struct actor_ref { char nick[NICK_MAX], jid[JID_MAX]; } actor_ref;

/* the actor for an occupant (nick and bare JID) or a non-occupant (bare JID only) acting from bare */
static const actor_ref *actor_of(const occupant *o, const char *bare, actor_ref *a)
{
    snprintf(a->nick, sizeof a->nick, "%s", o ? o->nick : "");
    snprintf(a->jid, sizeof a->jid, "%s", bare);
    return a;
}

typedef struct pres_spec {
    const char *type;               /* NULL or "unavailable" */
    const char *payload;
    int aff, role;
    unsigned char created, join;    /* 201 (self), 100 (self, non-anonymous room) */
    unsigned char renamed;          /* 210 (self): the room shows another nick than the one asked for */
    const char *new_nick;           /* 303 */
    const struct actor_ref *actor;  /* who did it (kick, ban, role or affiliation change) */
    const char *reason;
    int codes[3], ncodes;           /* after the item, for everyone */
    int destroy;
    const char *destroy_jid, *destroy_reason;
} pres_spec;

static void put_room_nick(xml_buf *b, const room *r, const char *nick)
{
    xml_buf_escape(b, r->jid, strlen(r->jid));
    if (nick) { xml_buf_puts(b, "/"); xml_buf_escape(b, nick, strlen(nick)); }
}

static void put_attr(xml_buf *b, const char *name, const char *v)
{
    xml_buf_printf(b, " %s='", name);
    xml_buf_escape(b, v, strlen(v));
    xml_buf_puts(b, "'");
}

static void put_elem_text(xml_buf *b, const char *name, const char *text)
{
    xml_buf_printf(b, "<%s>", name);
    xml_buf_escape(b, text, strlen(text));
    xml_buf_printf(b, "</%s>", name);
}

static void put_status(xml_buf *b, int code) { xml_buf_printf(b, "<status code='%d'/>", code); }

static void enc_presence(enc *e, const room *r, const occupant *o, const pres_spec *p, int show_jid, int self)
{
    xml_buf *b = &e->b;
    xml_buf_reset(b);
    xml_buf_puts(b, "<presence from='");
    put_room_nick(b, r, o->nick);
    xml_buf_puts(b, "'");
    if (p->type) put_attr(b, "type", p->type);
    e->split = b->len;
    xml_buf_puts(b, ">");
    if (p->payload) xml_buf_puts(b, p->payload);
    xml_buf_puts(b, "<x xmlns='" NS_MUC_USER "'>");
    if (self && p->created) put_status(b, 201);
    xml_buf_puts(b, "<item");
    if (show_jid && o->sessions) put_attr(b, "jid", o->sessions->jid);
    put_attr(b, "affiliation", aff_names[p->aff]);
    put_attr(b, "role", role_names[p->role]);
    if (p->new_nick) put_attr(b, "nick", p->new_nick);
    if (p->actor || p->reason) {
        xml_buf_puts(b, ">");
        if (p->actor) {
            /* the actor's real JID only to whom real JIDs are shown (XEP-0045 §8.2, §9.1) */
            xml_buf_puts(b, "<actor");
            if (p->actor->nick[0]) put_attr(b, "nick", p->actor->nick);
            if (show_jid && (!self || can_see_jids(r, o))) put_attr(b, "jid", p->actor->jid);
            xml_buf_puts(b, "/>");
        }
        if (p->reason) put_elem_text(b, "reason", p->reason);
        xml_buf_puts(b, "</item>");
    } else xml_buf_puts(b, "/>");
    if (p->new_nick) put_status(b, 303);
    for (int i = 0; i < p->ncodes; i++) put_status(b, p->codes[i]);
    if (self && p->join && r->whois_anyone) put_status(b, 100);
    if (self) put_status(b, 110);
    if (self && p->renamed) put_status(b, 210);
    if (p->destroy) {
        xml_buf_puts(b, "<destroy");
        if (p->destroy_jid) put_attr(b, "jid", p->destroy_jid);
        if (p->destroy_reason) { xml_buf_puts(b, ">"); put_elem_text(b, "reason", p->destroy_reason); xml_buf_puts(b, "</destroy>"); }
        else xml_buf_puts(b, "/>");
    }
    xml_buf_puts(b, "</x>");
    if (o->oid[0]) xml_buf_printf(b, "<occupant-id xmlns='" NS_OCCUPANT_ID "' id='%s'/>", o->oid);
    xml_buf_puts(b, "</presence>");
}

static pres_spec current_spec(const occupant *o)
{
    pres_spec p;
    memset(&p, 0, sizeof p);
    p.payload = o->payload;
    p.aff = o->aff;
    p.role = o->role;
    return p;
}

/* one walk; at most three encodings: the occupant itself, those who see real JIDs, the others */
static void broadcast_presence(muc_service *m, room *r, occupant *o, const pres_spec *p, int include_self)
{
    int built[3] = { 0, 0, 0 };
    for (occupant *q = r->first; q; q = q->next) {
        int v = q == o ? 0 : can_see_jids(r, q) ? 1 : 2;
        if (v == 0 && !include_self) continue;
        if (!built[v]) { enc_presence(&m->e[v], r, o, p, v != 2, v == 0); built[v] = 1; }
        send_occupant(m, r, q, &m->e[v]);
    }
}

/* the occupant leaves: unavailable to everyone (110 to itself), then it is freed */
static void occupant_leave(muc_service *m, room *r, occupant *o, const pres_spec *p)
{
    broadcast_presence(m, r, o, p, 1);
    occupant_drop(m, r, o);
    m->touched = r;
}

static void occupant_remove(muc_service *m, room *r, occupant *o, int code, const actor_ref *actor,
                            const char *reason)
{
    pres_spec p;
    memset(&p, 0, sizeof p);
    p.type = "unavailable";
    p.aff = o->aff;
    p.role = ROLE_NONE;
    p.actor = actor;
    p.reason = reason;
    p.codes[0] = code;
    p.ncodes = 1;
    occupant_leave(m, r, o, &p);
}

/* An occupant whose client is gone leaves with status 333 (removed because of an error), the error as its
 * status text. Its last session is still there, so that those who may see real JIDs see whose it was; it is
 * not told itself: it is what bounced. */
static void occupant_bounced_out(muc_service *m, room *r, occupant *o, const char *cond, const char *text)
{
    xml_buf b;      /* its own: broadcast_presence encodes into every m->e[] */
    xml_buf_init(&b);
    xml_buf_puts(&b, "<status>");
    xml_buf_escape(&b, cond, strlen(cond));
    if (text && *text) {
        xml_buf_puts(&b, ": ");
        xml_buf_escape(&b, text, strlen(text));
    }
    xml_buf_puts(&b, "</status>");
    pres_spec p;
    memset(&p, 0, sizeof p);
    p.type = "unavailable";
    p.payload = b.oom ? NULL : b.data;
    p.aff = o->aff;
    p.role = ROLE_NONE;
    p.codes[0] = 333;
    p.ncodes = 1;
    broadcast_presence(m, r, o, &p, 0);
    occupant_drop(m, r, o);
    m->touched = r;
    xml_buf_free(&b);
}

/* sessions whose delivery failed are dropped as if they had bounced */
static void room_reap(muc_service *m, room *r)
{
    for (int guard = 0; r->dead && guard < 100000; guard++) {
        occupant *o = r->first;
        session *s = NULL;
        for (; o; o = o->next) {
            for (s = o->sessions; s && !s->dead; s = s->next) {}
            if (s) break;
        }
        if (!o) { r->dead = 0; break; }
        /* the session is gone: what the router would have bounced, service-unavailable */
        if (s == o->sessions && !s->next) occupant_bounced_out(m, r, o, "service-unavailable", NULL);
        else session_remove(r, s);
    }
}

/* ------------------------------------------------------------------ history and subject */

static void history_keep(room *r, const char *data, size_t len, size_t split, time_t when);
static void history_prime(muc_service *m, room *r);

static void history_add(muc_service *m, room *r, const enc *e)
{
    if (e->b.oom || !e->b.data) return;
    history_prime(m, r);
    history_keep(r, e->b.data, e->b.len, e->split, time(NULL));
}

/* <delay from='room' stamp/> (XEP-0203): how the room dates what it sends late, history and subject */
static void put_delay(xml_buf *b, const room *r, time_t when)
{
    char stamp[21];
    stanza_stamp_format(stamp, when);
    xml_buf_puts(b, "<delay xmlns='" NS_DELAY "' from='");
    xml_buf_escape(b, r->jid, strlen(r->jid));
    xml_buf_printf(b, "' stamp='%s'/>", stamp);
}

/* one archived message into the ring, with the delay a history message carries (XEP-0045 §7.2.15) */
static int prime_one(void *ud, const archive_rec *rec)
{
    room *r = ud;
    static const char close_tag[] = "</message>";
    size_t cl = sizeof close_tag - 1;
    const char *gt = memchr(rec->data, '>', rec->len);
    if (!gt || rec->len < cl || memcmp(rec->data + rec->len - cl, close_tag, cl)) return 0;
    xml_buf b;
    xml_buf_init(&b);
    xml_buf_append(&b, rec->data, rec->len - cl);
    put_delay(&b, r, (time_t)rec->when);
    xml_buf_puts(&b, "</message>");
    if (!b.oom) history_keep(r, b.data, b.len, (size_t)(gt - rec->data), (time_t)rec->when);
    xml_buf_free(&b);
    return 0;
}

/* a room loaded from disk gets its history from its archive, once, before it is first needed */
static void history_prime(muc_service *m, room *r)
{
    if (r->hist_primed) return;
    r->hist_primed = 1;
    archive *a = r->histlen > 0 ? room_archive(m, r) : NULL;
    if (a && archive_last(a, (unsigned)r->histlen, prime_one, r) < 0)
        log_err("muc: %s: the history could not be read from its archive", r->jid);
}

static void history_keep(room *r, const char *data, size_t len, size_t split, time_t when)
{
    if (r->histlen <= 0) return;
    if (!r->hist || r->hist_cap != (unsigned)r->histlen) {
        /* (re)size the ring, keeping the newest entries */
        unsigned cap = (unsigned)r->histlen;
        hist_entry *nh = calloc(cap, sizeof *nh);
        if (!nh) { log_err("muc: out of memory: a message to %s is not kept in its history", r->jid); return; }
        unsigned keep = r->hist_count < cap ? r->hist_count : cap;
        for (unsigned i = 0; i < r->hist_count; i++) {
            hist_entry *he = &r->hist[(r->hist_head + i) % r->hist_cap];
            if (i >= r->hist_count - keep) nh[i - (r->hist_count - keep)] = *he;
            else free(he->data);
        }
        free(r->hist);
        r->hist = nh;
        r->hist_cap = cap;
        r->hist_head = 0;
        r->hist_count = keep;
    }
    char *d = malloc(len + 1);
    if (!d) { log_err("muc: out of memory: a message to %s is not kept in its history", r->jid); return; }
    memcpy(d, data, len);
    d[len] = 0;
    hist_entry *slot;
    if (r->hist_count == r->hist_cap) {
        slot = &r->hist[r->hist_head];
        free(slot->data);
        r->hist_head = (r->hist_head + 1) % r->hist_cap;
    } else slot = &r->hist[(r->hist_head + r->hist_count++) % r->hist_cap];
    slot->data = d;
    slot->len = (unsigned)len;
    slot->split = (unsigned)split;
    slot->when = when;
}

static void history_send(muc_service *m, room *r, session *s, const xml_node *req)
{
    history_prime(m, r);
    if (!r->hist || !r->hist_count) return;
    long maxstanzas = r->defhist, maxchars = -1;
    time_t since = 0;
    if (req) {
        const char *v;
        long x;
        if ((v = xml_attr_get(req, "maxstanzas")) && (x = parse_uint(v)) >= 0) maxstanzas = x;
        if ((v = xml_attr_get(req, "maxchars")) && (x = parse_uint(v)) >= 0) maxchars = x;
        if ((v = xml_attr_get(req, "seconds")) && (x = parse_uint(v)) >= 0) since = time(NULL) - x;
        if ((v = xml_attr_get(req, "since"))) {
            int64_t t;
            if (stanza_stamp_parse(v, &t) == 0 && t > since) since = (time_t)t;
        }
    }
    unsigned n = 0;
    long chars = 0;
    while (n < r->hist_count && (long)n < maxstanzas) {
        hist_entry *he = &r->hist[(r->hist_head + r->hist_count - 1 - n) % r->hist_cap];
        if (he->when < since) break;
        if (maxchars >= 0 && chars + (long)he->len > maxchars) break;
        chars += he->len;
        n++;
    }
    for (unsigned i = r->hist_count - n; i < r->hist_count && !s->dead; i++) {
        hist_entry *he = &r->hist[(r->hist_head + i) % r->hist_cap];
        if (m->host.deliver(m->host.ud, s->jid, he->data, he->split, he->data + he->split, he->len - he->split) < 0)
            mark_dead(m, r, s);
    }
}

static void enc_subject(enc *e, const room *r)
{
    xml_buf *b = &e->b;
    xml_buf_reset(b);
    xml_buf_puts(b, "<message type='groupchat' from='");
    put_room_nick(b, r, r->subject && *r->subject ? r->subject_nick : NULL);
    xml_buf_puts(b, "'");
    e->split = b->len;
    if (r->subject && *r->subject) {
        xml_buf_puts(b, ">");
        put_elem_text(b, "subject", r->subject);
        /* when it was set (§7.2.15, as Prosody) */
        if (r->subject_when) put_delay(b, r, r->subject_when);
        xml_buf_puts(b, "</message>");
    } else xml_buf_puts(b, "><subject/></message>");
}


/* ------------------------------------------------------------------ presence handling */

/* keeps the presence's children (show, status, caps) to repeat them; -1 (the old ones kept) on out of memory */
static int is_occupant_id(const xml_node *c)
{
    return c->name && c->ns && !strcmp(c->name, "occupant-id") && !strcmp(c->ns, NS_OCCUPANT_ID);
}

static MUST_USE int store_payload(muc_service *m, occupant *o, const xml_node *st)
{
    xml_buf *b = &m->tmp.b;
    char *p = NULL;
    xml_buf_reset(b);
    for (const xml_node *c = st->children; c; c = c->next) {
        if (!c->name) continue;
        if (!strcmp(c->name, "x") && (!strcmp(c->ns, NS_MUC) || !strcmp(c->ns, NS_MUC_USER))) continue;
        if (is_occupant_id(c)) continue;    /* only the room says who is who (XEP-0421 §4) */
        xml_serialize(b, c, XML_NS_CLIENT);
    }
    if (b->oom || (b->len && !(p = xstrdup(b->data)))) return -1;
    free(o->payload);
    o->payload = p;
    return 0;
}

/* where the presence goes out anyway (leaving, a nick change under way): the old payload stands in */
static void store_payload_or_log(muc_service *m, occupant *o, const xml_node *st)
{
    if (store_payload(m, o, st) < 0) log_err("muc: out of memory: %s's presence goes out with its old status", o->nick);
}

static void join_output(muc_service *m, const muc_ctx *cx, room *r, occupant *o, session *s, int created,
                        const xml_node *mucx)
{
    int see = can_see_jids(r, o);
    for (occupant *q = r->first; q && !s->dead; q = q->next) {
        if (q == o) continue;
        pres_spec p = current_spec(q);
        enc_presence(&m->tmp, r, q, &p, see, 0);
        send_session(m, r, s, &m->tmp);
    }
    pres_spec p = current_spec(o);
    p.created = (unsigned char)created;
    p.join = 1;
    p.renamed = strcmp(cx->to.resource, o->nick) != 0;
    enc_presence(&m->tmp, r, o, &p, 1, 1);
    send_session(m, r, s, &m->tmp);
    history_send(m, r, s, mucx ? xml_child(mucx, "history", NS_MUC) : NULL);
    enc_subject(&m->tmp, r);
    send_session(m, r, s, &m->tmp);
}

/* XEP-0045's entry rules for a newcomer; NULL, or the error as "type condition" */
static const char *join_check(muc_service *m, const muc_ctx *cx, room *r, const char *nick, int aff,
                              const xml_node *mucx)
{
    /* nobody but an owner enters before the owner has configured the room (as Prosody: item-not-found) */
    if (r->locked && aff < AFF_OWNER) return "cancel item-not-found";
    if (aff == AFF_OUTCAST) return "auth forbidden";
    if (r->membersonly && aff < AFF_MEMBER) return "auth registration-required";
    const char *holder = reserved_nick_owner(r, nick);
    if (holder && strcmp(holder, cx->bare)) return "cancel conflict";
    if (r->password && *r->password && aff < AFF_OWNER) {
        const xml_node *pw = mucx ? xml_child(mucx, "password", NS_MUC) : NULL;
        if (!pw || strcmp(xml_text(pw), r->password)) return "auth not-authorized";
    }
    if (r->maxusers > 0 && (int)r->noccupants >= r->maxusers && aff < AFF_ADMIN) return "wait service-unavailable";
    if (m->cfg.max_rooms_per_user > 0 && user_rooms_count(m, cx->bare) >= (unsigned)m->cfg.max_rooms_per_user)
        return "cancel policy-violation";
    return NULL;
}

/* err is "type condition" */
static void send_error_pair(muc_service *m, const muc_ctx *cx, const char *err, const char *by)
{
    char et[16];
    const char *sp = strchr(err, ' ');
    snprintf(et, sizeof et, "%.*s", (int)(sp - err), err);
    send_error(m, cx, et, sp + 1, by);
}

static void presence_join(muc_service *m, const muc_ctx *cx, room *r, const char *nick, int created)
{
    const xml_node *mucx = xml_child(cx->st, "x", NS_MUC);
    int aff = effective_aff(m, r, cx->bare);
    occupant *o = find_nick(r, nick);
    if (o && strcmp(o->bare, cx->bare)) { send_error(m, cx, "cancel", "conflict", r->jid); return; }
    if (!o) {
        const char *err = join_check(m, cx, r, nick, aff, mucx);
        if (err) { send_error_pair(m, cx, err, r->jid); return; }
        o = occupant_add(r, nick, cx->bare, cx->full);
        if (o && user_rooms_enter(m, cx->bare) < 0) {
            occupant_free(r, o);
            o = NULL;
        }
        if (o && store_payload(m, o, cx->st) < 0) {
            occupant_drop(m, r, o);
            o = NULL;
        }
        if (!o) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
        o->aff = (unsigned char)aff;
        o->role = (unsigned char)role_for(r, aff);
        join_output(m, cx, r, o, o->sessions, created, mucx);
        if (o->sessions->dead) {
            /* gone before anyone else heard of it: leave without a word */
            occupant_drop(m, r, o);
            return;
        }
        pres_spec p = current_spec(o);
        broadcast_presence(m, r, o, &p, 0);
        return;
    }
    /* another session of the same user under the same nick: only that session hears about it */
    session *s = session_add(r, o, cx->full);
    if (!s) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
    join_output(m, cx, r, o, s, 0, mucx);
}

static void presence_nick_change(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const char *nick)
{
    occupant *other = find_nick(r, nick);
    const char *holder = reserved_nick_owner(r, nick);
    /* the same nick in other letters ("romeo" for "Romeo") is the occupant's own */
    if ((other && other != o) || (holder && strcmp(holder, o->bare))) {
        send_error(m, cx, "cancel", "conflict", r->jid);
        return;
    }
    occupant *no = occupant_alloc_named(nick);
    if (!no) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
    pres_spec p = current_spec(o);
    p.type = "unavailable";
    p.new_nick = nick;
    broadcast_presence(m, r, o, &p, 1);
    no = occupant_rename(r, o, no);
    store_payload_or_log(m, no, cx->st);
    p = current_spec(no);
    p.renamed = strcmp(cx->to.resource, no->nick) != 0;     /* the room shows it otherwise (§7.6) */
    broadcast_presence(m, r, no, &p, 1);
}

/* locked until its owner submits the configuration form; a room nobody configures goes (muc_service_tick) */
static void room_lock(muc_service *m, room *r)
{
    r->locked = 1;
    r->lock_until = time(NULL) + m->cfg.lock_timeout;
    m->nlocked++;
    if (m->host.wake) m->host.wake(m->host.ud, m->cfg.lock_timeout);
}

/* a configuration that could not be stored: the room stays as it was, locked, with its deadline */
static void room_lock_again(muc_service *m, room *r)
{
    r->locked = 1;
    m->nlocked++;
}

static void room_unlock(muc_service *m, room *r)
{
    if (!r->locked) return;
    r->locked = 0;
    m->nlocked--;
}

/* a join to an unknown room creates it, owned by the joiner; NULL (answered) when that is refused */
static room *room_create(muc_service *m, const muc_ctx *cx)
{
    char roomjid[JID_MAX];
    snprintf(roomjid, sizeof roomjid, "%s@%s", cx->to.local, m->domain);
    if (!is_server_admin(m, cx->bare) && !m->cfg.create_rooms) {
        send_error(m, cx, "cancel", "not-allowed", roomjid);
        return NULL;
    }
    if (m->cfg.max_rooms > 0 && m->nrooms >= (size_t)m->cfg.max_rooms) {
        send_error(m, cx, "wait", "resource-constraint", roomjid);
        return NULL;
    }
    room *r = room_new(m, cx->to.local);
    if (!r || set_aff(r, cx->bare, AFF_OWNER, NULL) < 0) {
        if (r) room_unlink(m, r);
        send_error(m, cx, "wait", "resource-constraint", roomjid);
        return NULL;
    }
    if (m->cfg.lock_timeout > 0) room_lock(m, r);
    /* a room persistent from the start (and not locked) is on disk before its creator is in it */
    if (room_save(m, r) < 0) {
        room_unlink(m, r);
        send_error(m, cx, "wait", "internal-server-error", roomjid);
        return NULL;
    }
    return r;
}

/* one session of several leaves: only it is told */
static void session_leave(muc_service *m, room *r, occupant *o, session *s)
{
    pres_spec p = current_spec(o);
    p.type = "unavailable";
    p.role = ROLE_NONE;
    enc_presence(&m->tmp, r, o, &p, 1, 1);
    send_session(m, r, s, &m->tmp);
    session_remove(r, s);
}

static void presence_probe(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const char *nick)
{
    occupant *t = r && *nick ? find_nick(r, nick) : NULL;
    if (!t) { send_error(m, cx, "cancel", "item-not-found", r ? r->jid : NULL); return; }
    pres_spec p = current_spec(t);
    enc_presence(&m->tmp, r, t, &p, t == o || (o && can_see_jids(r, o)), t == o);
    enc_send_any(m, &m->tmp, cx->full);
}

/* Errors that mean the occupant's client is not there any more (as Prosody's list): the session is removed.
 * Any other error (a client refusing one message, say) changes nothing. */
static const char *const gone_conditions[] = {
    "gone", "internal-server-error", "item-not-found", "jid-malformed", "recipient-unavailable", "redirect",
    "remote-server-not-found", "remote-server-timeout", "service-unavailable",
};

/* the defined condition of an error stanza, "" when it has none that RFC 6120 §8.3.3 names */
static const char *error_condition(const xml_node *st, const char **text)
{
    const xml_node *e = xml_child(st, "error", NULL);
    const xml_node *t = e ? xml_child(e, "text", NS_STANZAS) : NULL;
    *text = t ? xml_text(t) : NULL;
    for (const xml_node *c = e ? e->children : NULL; c; c = c->next)
        if (c->name && c->ns && !strcmp(c->ns, NS_STANZAS) && strcmp(c->name, "text")) return c->name;
    return "";
}

/* an error from an occupant's client, in answer to what the room relayed to it */
static void session_bounced(muc_service *m, const muc_ctx *cx, room *r)
{
    session *s = r ? find_session(r, cx->full) : NULL;
    if (!s) return;
    const char *text, *cond = error_condition(cx->st, &text);
    /* no condition at all is a broken error: the client is not one to keep relaying to (as Prosody) */
    if (*cond && str_in(cond, gone_conditions, (int)(sizeof gone_conditions / sizeof *gone_conditions)) < 0) return;
    occupant *o = s->occ;
    if (s == o->sessions && !s->next) occupant_bounced_out(m, r, o, *cond ? cond : "undefined-condition", text);
    else session_remove(r, s);
    m->touched = r;
}

static void room_destroy(muc_service *m, room *r, const char *alt, const char *reason);

/* NULL when nick is acceptable, with its enforced form (RFC 8266 §2.3) in enforced; else why it is not */
static const char *nick_refused(const char *nick, char enforced[NICK_MAX])
{
    const char *why = NULL;
    if (!*nick) return "no nickname";
    if (precis_nick_enforce(nick, strlen(nick), enforced, NICK_MAX, &why) < 0) return why ? why : "bad nickname";
    if (!jid_resource_valid(enforced)) return "the nickname is not a valid resourcepart";
    return NULL;
}

static void handle_presence(muc_service *m, const muc_ctx *cx, room *r)
{
    const char *type = xml_attr_get(cx->st, "type"), *nick = cx->to.resource;
    session *s = r ? find_session(r, cx->full) : NULL;
    occupant *o = s ? s->occ : NULL;

    if (type && !strcmp(type, "probe")) { presence_probe(m, cx, r, o, nick); return; }
    if (type && !strcmp(type, "error")) { session_bounced(m, cx, r); return; }
    if (type && !strcmp(type, "unavailable")) {
        if (!o) return;
        /* the owner leaving a room never configured takes it along (§10.1.3) */
        if (r->locked && !o->sessions->next && r->noccupants == 1) { room_destroy(m, r, NULL, NULL); return; }
        if (o->sessions->next) { session_leave(m, r, o, s); return; }
        store_payload_or_log(m, o, cx->st);
        pres_spec p = current_spec(o);
        p.type = "unavailable";
        p.role = ROLE_NONE;
        occupant_leave(m, r, o, &p);
        return;
    }
    if (type) return;   /* subscriptions are not for rooms */
    char enforced[NICK_MAX];
    const char *why = nick_refused(nick, enforced);
    if (why) {
        send_error_text(m, cx, "modify", "jid-malformed", r ? r->jid : NULL, why);
        return;
    }
    nick = enforced;    /* the nick as the room shows it (RFC 8266 enforcement); 210 tells its owner */
    if (o) {
        if (strcmp(o->nick, nick)) { presence_nick_change(m, cx, r, o, nick); return; }
        /* a status update that cannot be kept is refused, not broadcast stale */
        if (store_payload(m, o, cx->st) < 0) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
        pres_spec p = current_spec(o);
        const xml_node *mucx = xml_child(cx->st, "x", NS_MUC);
        if (mucx) {
            /* a join from a session already in: its client lost track of the room (a reconnect), so it gets
             * the room's state again as on a first join (§7.2.1, as Prosody); the others its presence */
            join_output(m, cx, r, o, s, 0, mucx);
            broadcast_presence(m, r, o, &p, 0);
            return;
        }
        broadcast_presence(m, r, o, &p, 1);
        return;
    }
    int created = !r;
    if (!r && !(r = room_create(m, cx))) return;
    m->touched = r;
    presence_join(m, cx, r, nick, created);
    m->touched = r;
}

/* ------------------------------------------------------------------ messages */

static void broadcast_enc(muc_service *m, room *r, const enc *e)
{
    for (occupant *q = r->first; q; q = q->next) send_occupant(m, r, q, e);
}

/* sends a message built from room-level text to every occupant; jid_only: only those who see JIDs */
static void send_room_message(muc_service *m, room *r, const xml_node *msg, int jid_only)
{
    if (enc_tree(m, &m->e[0], msg) < 0) return;
    for (occupant *q = r->first; q; q = q->next)
        if (!jid_only || can_see_jids(r, q)) send_occupant(m, r, q, &m->e[0]);
}

/* a copy of the stanza from the occupant's room JID, to be addressed per recipient */
static xml_node *copy_from_occupant(muc_service *m, const room *r, const occupant *o, const xml_node *st)
{
    char from[JID_MAX * 2];
    xml_node *copy = t_copy(m, st);
    snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
    /* checked where it is encoded: a copy still from the real JID must never go out */
    t_attr(m, copy, "from", from);
    t_attr(m, copy, "to", NULL);
    if (!copy) return NULL;
    /* a sender's own occupant-id would be a forgery: the room's replaces it (XEP-0421 §4) */
    for (xml_node *c = copy->children, *nx; c; c = nx) {
        nx = c->next;
        /* and a stanza-id in the room's name can only be the room's (XEP-0359 §3.1) */
        const char *by = c->name && c->ns && !strcmp(c->name, "stanza-id") && !strcmp(c->ns, NS_SID) ?
                         xml_attr_get(c, "by") : NULL;
        if (is_occupant_id(c) || (by && !strcmp(by, r->jid))) xml_remove_child(copy, c);
    }
    if (o->oid[0]) t_attr(m, t_child(m, copy, "occupant-id", NS_OCCUPANT_ID), "id", o->oid);
    return copy;
}

/* an invitation into a members-only room makes the invitee a member, stored before the invitation goes */
static MUST_USE int invite_member(muc_service *m, const muc_ctx *cx, room *r, const char *bare)
{
    room_snapshot s;
    if (snapshot_begin(r, &s, 0) < 0 || set_aff(r, bare, AFF_MEMBER, NULL) < 0) return change_fail(m, cx, r, &s);
    return change_commit(m, cx, r, &s);
}

static void send_invites(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const xml_node *inv)
{
    if (!o) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    int may = r->membersonly ? (o->aff >= AFF_ADMIN || r->allowinvites) : 1;
    if (!may) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    for (; inv; inv = xml_next_child(inv, "invite", NS_MUC_USER)) {
        const char *to = xml_attr_get(inv, "to"), *id = xml_attr_get(cx->st, "id");
        jid j;
        char ibare[JID_MAX], ifull[JID_MAX];
        if (!to || jid_parse(to, &j) < 0 || jid_bare(&j, ibare, sizeof ibare) < 0 ||
            jid_full(&j, ifull, sizeof ifull) < 0) {
            send_error(m, cx, "modify", "jid-malformed", r->jid);
            return;
        }
        if (r->membersonly && room_aff(r, ibare) == AFF_NONE && invite_member(m, cx, r, ibare) < 0) return;
        xml_node *msg = t_node(m, "message", XML_NS_CLIENT);
        t_attr(m, msg, "from", r->jid);
        if (id) t_attr(m, msg, "id", id);
        xml_node *ux = t_child(m, msg, "x", NS_MUC_USER);
        xml_node *in = t_child(m, ux, "invite", NULL);
        t_attr(m, in, "from", cx->bare);
        const xml_node *reason = xml_child(inv, "reason", NS_MUC_USER);
        if (reason) t_text(m, in, "reason", NULL, xml_text(reason));
        /* a one-to-one chat carried on in the room (§7.9): its thread goes with the invitation */
        const xml_node *cont = xml_child(inv, "continue", NS_MUC_USER);
        if (cont) {
            xml_node *c = t_child(m, in, "continue", NULL);
            const char *thread = xml_attr_get(cont, "thread");
            if (thread) t_attr(m, c, "thread", thread);
        }
        if (r->password && *r->password) t_text(m, ux, "password", NULL, r->password);
        send_tree(m, msg, ifull);
    }
}

static void send_decline(muc_service *m, const muc_ctx *cx, room *r, const xml_node *dec)
{
    const char *to = xml_attr_get(dec, "to");
    jid j;
    char dfull[JID_MAX];
    if (!to || jid_parse(to, &j) < 0 || jid_full(&j, dfull, sizeof dfull) < 0) {
        send_error(m, cx, "modify", "jid-malformed", r->jid);
        return;
    }
    xml_node *msg = t_node(m, "message", XML_NS_CLIENT);
    t_attr(m, msg, "from", r->jid);
    xml_node *ux = t_child(m, msg, "x", NS_MUC_USER);
    xml_node *d = t_child(m, ux, "decline", NULL);
    t_attr(m, d, "from", cx->bare);
    const xml_node *reason = xml_child(dec, "reason", NS_MUC_USER);
    if (reason) t_text(m, d, "reason", NULL, xml_text(reason));
    send_tree(m, msg, dfull);
}

static void handle_invites(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const xml_node *x)
{
    const xml_node *inv = xml_child(x, "invite", NS_MUC_USER), *dec;
    if (inv) send_invites(m, cx, r, o, inv);
    else if ((dec = xml_child(x, "decline", NS_MUC_USER))) send_decline(m, cx, r, dec);
    else send_error(m, cx, "modify", "bad-request", r->jid);
}

/* a subject-only message: the new subject is stored before anyone sees it; -1 when answered instead */
static MUST_USE int set_subject(muc_service *m, const muc_ctx *cx, room *r, const occupant *o, const xml_node *subj)
{
    if (!r->changesubject && o->role != ROLE_MODERATOR) { send_error(m, cx, "auth", "forbidden", r->jid); return -1; }
    const char *t = xml_text(subj);
    char *ns = *t ? xstrdup(t) : NULL, *nn = xstrdup(o->nick);
    room_snapshot s;
    /* both copies first: a temporary room has no snapshot to go back to */
    if ((*t && !ns) || !nn || snapshot_begin(r, &s, 0) < 0) {
        free(ns);
        free(nn);
        send_error(m, cx, "wait", "resource-constraint", r->jid);
        return -1;
    }
    free(r->subject);
    free(r->subject_nick);
    r->subject = ns;
    r->subject_nick = nn;
    time_t was = r->subject_when;
    r->subject_when = time(NULL);
    if (change_commit(m, cx, r, &s) == 0) return 0;
    r->subject_when = was;
    return -1;
}

/* A persistent room's message is on disk, with its XEP-0359 stanza-id, before anyone gets it: whatever the
 * sender sees reflected is in the archive. The archive to use, or NULL (the sender told) when there is none. */
static archive *archive_for_message(muc_service *m, const muc_ctx *cx, room *r, xml_node *copy)
{
    archive *a = room_archive(m, r);
    if (!a) { send_error(m, cx, "wait", "internal-server-error", r->jid); return NULL; }
    char id[ARCHIVE_ID_MAX];
    archive_id_format(archive_next_seq(a), id);
    xml_node *sid = t_child(m, copy, "stanza-id", NS_SID);
    t_attr(m, sid, "id", id);
    t_attr(m, sid, "by", r->jid);
    return a;
}

/* the message as encoded for the occupants is the record; -1 (the sender told) when it cannot be stored: then
 * it is not sent */
static int archive_message(muc_service *m, const muc_ctx *cx, room *r, const occupant *o, archive *a, const enc *e)
{
    char with[JID_MAX * 2];
    snprintf(with, sizeof with, "%s/%s", r->jid, o->nick);
    uint64_t seq;
    if (archive_append(a, (int64_t)time(NULL), with, e->b.data, e->b.len, &seq) < 0) {
        log_err("muc: %s: a message could not be archived: %s", r->jid, strerror(errno));
        send_error(m, cx, "wait", "internal-server-error", r->jid);
        return -1;
    }
    return 0;
}

static void handle_groupchat(muc_service *m, const muc_ctx *cx, room *r, occupant *o)
{
    const xml_node *st = cx->st;
    if (!o) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    if (o->role < ROLE_PARTICIPANT) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    const xml_node *body = xml_child(st, "body", XML_NS_CLIENT);
    const xml_node *subj = xml_child(st, "subject", XML_NS_CLIENT);
    /* XEP-0045 §8.1: only a subject alone changes the subject; with a body or a thread it is a message */
    int subject_change = subj && !body && !xml_child(st, "thread", XML_NS_CLIENT);
    if (subject_change && set_subject(m, cx, r, o, subj) < 0) return;
    xml_node *copy = copy_from_occupant(m, r, o, st);
    archive *a = NULL;
    if (body && r->persistent && !(a = archive_for_message(m, cx, r, copy))) return;
    if (enc_tree(m, &m->e[0], copy) < 0) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
    if (a && archive_message(m, cx, r, o, a, &m->e[0]) < 0) return;
    if (body) {
        char stamp[32];
        stanza_stamp_format(stamp, time(NULL));
        xml_node *d = t_child(m, copy, "delay", NS_DELAY);
        t_attr(m, d, "from", r->jid);
        t_attr(m, d, "stamp", stamp);
        if (enc_tree(m, &m->hist, copy) == 0) history_add(m, r, &m->hist);
    }
    broadcast_enc(m, r, &m->e[0]);
}

static void handle_private(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const char *nick)
{
    if (!o) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    int allowed = r->allowpm == PM_ANYONE || (r->allowpm == PM_PARTICIPANTS && o->role >= ROLE_PARTICIPANT) ||
                  (r->allowpm == PM_MODERATORS && o->role == ROLE_MODERATOR);
    if (!allowed) { send_error(m, cx, "cancel", "not-allowed", r->jid); return; }
    occupant *t = find_nick(r, nick);
    if (!t) { send_error(m, cx, "cancel", "item-not-found", r->jid); return; }
    xml_node *copy = copy_from_occupant(m, r, o, cx->st);
    if (copy && !xml_child(copy, "x", NS_MUC_USER)) t_child(m, copy, "x", NS_MUC_USER);
    if (enc_tree(m, &m->e[0], copy) < 0) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
    send_occupant(m, r, t, &m->e[0]);
}

/* ---- voice requests (§8.6): a visitor asks, every moderator gets the form, one approves ---- */

/* the first value of the field var in a data form, "" when the field or its value is missing */
static const char *form_field_value(const xml_node *x, const char *var)
{
    for (const xml_node *f = xml_child(x, "field", NS_XDATA); f; f = xml_next_child(f, "field", NS_XDATA)) {
        const char *v = xml_attr_get(f, "var");
        if (v && !strcmp(v, var)) return xdata_value(f);
    }
    return "";
}

static xml_node *form_field(muc_service *m, xml_node *x, const char *var, const char *type, const char *label,
                            const char *value);

static void voice_request(muc_service *m, const muc_ctx *cx, room *r, occupant *o)
{
    if (!r->moderated || o->role != ROLE_VISITOR) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    xml_node *msg = t_node(m, "message", XML_NS_CLIENT);
    t_attr(m, msg, "from", r->jid);
    xml_node *x = t_child(m, msg, "x", NS_XDATA);
    t_attr(m, x, "type", "form");
    t_text(m, x, "title", NULL, "Voice request");
    t_text(m, x, "instructions", NULL, "Grant this occupant voice in the room?");
    form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_REQUEST);
    form_field(m, x, "muc#role", "list-single", "Requested role", "participant");
    form_field(m, x, "muc#jid", "jid-single", "User ID", cx->full);
    form_field(m, x, "muc#roomnick", "text-single", "Room nickname", o->nick);
    form_field(m, x, "muc#request_allow", "boolean", "Grant voice to this person?", "false");
    if (enc_tree(m, &m->e[0], msg) < 0) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
    for (occupant *q = r->first; q; q = q->next)
        if (q->role == ROLE_MODERATOR) send_occupant(m, r, q, &m->e[0]);
}

static void voice_approval(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const xml_node *form)
{
    if (!o || o->role != ROLE_MODERATOR) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    int allow = parse_bool(form_field_value(form, "muc#request_allow"));
    if (allow < 0) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    if (!allow) return;     /* declined: the visitor is not told (as Prosody) */
    occupant *t = find_nick(r, form_field_value(form, "muc#roomnick"));
    if (!t) { send_error(m, cx, "cancel", "item-not-found", r->jid); return; }
    if (t->role != ROLE_VISITOR) return;    /* another moderator was quicker */
    actor_ref an;
    t->role = ROLE_PARTICIPANT;
    pres_spec p = current_spec(t);
    p.actor = actor_of(o, cx->bare, &an);
    broadcast_presence(m, r, t, &p, 1);
}

/* a muc#request form: submitted by a visitor it is a request, with muc#request_allow an answer */
static void handle_voice_form(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const xml_node *form)
{
    const char *type = xml_attr_get(form, "type");
    if (!type || strcmp(type, "submit") || strcmp(form_field_value(form, "muc#role"), "participant")) {
        send_error(m, cx, "modify", "bad-request", r->jid);
        return;
    }
    if (!o) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    if (*form_field_value(form, "muc#request_allow")) voice_approval(m, cx, r, o, form);
    else voice_request(m, cx, r, o);
}

static void handle_message(muc_service *m, const muc_ctx *cx, room *r)
{
    const char *type = stanza_type(cx->st), *nick = cx->to.resource;
    if (!strcmp(type, "error")) { session_bounced(m, cx, r); return; }
    if (!r) { send_error(m, cx, "cancel", "item-not-found", NULL); return; }
    session *s = find_session(r, cx->full);
    occupant *o = s ? s->occ : NULL;
    if (*nick) {
        if (!strcmp(type, "groupchat")) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
        handle_private(m, cx, r, o, nick);
        return;
    }
    if (!strcmp(type, "groupchat")) { handle_groupchat(m, cx, r, o); return; }
    const xml_node *form = xml_child(cx->st, "x", NS_XDATA);
    if (form && !strcmp(form_field_value(form, "FORM_TYPE"), FORM_REQUEST)) { handle_voice_form(m, cx, r, o, form); return; }
    const xml_node *x = xml_child(cx->st, "x", NS_MUC_USER);
    if (x) { handle_invites(m, cx, r, o, x); return; }
    send_error(m, cx, "modify", "bad-request", r->jid);
}

/* ------------------------------------------------------------------ data forms */

static xml_node *form_field(muc_service *m, xml_node *x, const char *var, const char *type, const char *label,
                            const char *value)
{
    xml_node *f = t_child(m, x, "field", NULL);
    t_attr(m, f, "var", var);
    if (type) t_attr(m, f, "type", type);
    if (label) t_attr(m, f, "label", label);
    if (value) t_text(m, f, "value", NULL, value);
    return f;
}

static void form_option(muc_service *m, xml_node *f, const char *label, const char *value)
{
    xml_node *o = t_child(m, f, "option", NULL);
    t_attr(m, o, "label", label);
    t_text(m, o, "value", NULL, value);
}

static const char *bstr(int b) { return b ? "1" : "0"; }

/* the field's single value as the form shows it; NULL for a role set (one value per role) */
static const char *setting_form_value(const room *r, const setting *s, char *num, size_t n)
{
    const char *str = setting_is_text(s) || s->kind == SK_PROTECTED ? setting_cstr(r, s) : NULL;
    if (setting_is_text(s)) return str ? str : "";
    if (s->kind == SK_PROTECTED) return bstr(str && *str);
    int v = setting_num(r, s);
    switch (s->kind) {
    case SK_BOOL: return bstr(v);
    case SK_CHOICE: return v < s->nnames ? s->names[v] : "";
    case SK_ROLES: return NULL;
    default: snprintf(num, n, "%d", v); return num;
    }
}

static void form_setting(muc_service *m, xml_node *x, const room *r, const setting *s)
{
    char var[64], num[16];
    snprintf(var, sizeof var, CONFIG_VAR "%s", s->var);
    xml_node *f = form_field(m, x, var, s->type, s->label, setting_form_value(r, s, num, sizeof num));
    if (s->kind == SK_ROLES)
        for (int i = ROLE_VISITOR; i <= ROLE_MODERATOR; i++)
            if (setting_num(r, s) & (1 << i)) t_text(m, f, "value", NULL, role_names[i]);
    for (const form_opt *o = s->opts; o && o->label; o++) form_option(m, f, o->label, o->value);
}

static xml_node *config_form(muc_service *m, const room *r)
{
    xml_node *x = t_node(m, "x", NS_XDATA);
    t_attr(m, x, "type", "form");
    t_text(m, x, "title", NULL, "Room configuration");
    form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_CONFIG);
    for (size_t i = 0; i < NSETTINGS; i++) form_setting(m, x, r, &settings[i]);
    return x;
}


static const char *parse_roles(const xml_node *f, int *out)
{
    *out = 0;
    for (const xml_node *v = xml_child(f, "value", NS_XDATA); v; v = xml_next_child(v, "value", NS_XDATA)) {
        int ro = str_in(xml_text(v), role_names, 4);
        if (ro <= ROLE_NONE) return "bad-request";
        *out |= 1 << ro;
    }
    return NULL;
}

static const char *parse_count(const muc_service *m, const setting *s, const char *v, int *out)
{
    int bound = setting_bound(m, s);
    /* a limit left empty is as high as allowed */
    long n = s->kind == SK_LIMIT && !*v ? (bound > 0 ? bound : 0) : parse_uint(v);
    if (n < 0) return "bad-request";
    if (s->kind == SK_LIMIT ? bound > 0 && (n == 0 || n > bound) : n > bound) return "not-acceptable";
    *out = (int)n;
    return NULL;
}

/* one submitted field; NULL, or the error condition */
static const char *setting_parse(const muc_service *m, const setting *s, const xml_node *f, setting_value *out)
{
    const char *v = xdata_value(f), *err = NULL;
    switch (s->kind) {
    case SK_TEXT: case SK_SECRET: out->str = v; break;
    case SK_BOOL: case SK_PROTECTED: if ((out->num = parse_bool(v)) < 0) err = "bad-request"; break;
    case SK_CHOICE: if ((out->num = str_in(v, s->names, s->nnames)) < 0) err = "bad-request"; break;
    case SK_ROLES: err = parse_roles(f, &out->num); break;
    default: err = parse_count(m, s, v, &out->num); break;
    }
    out->given = !err;
    return err;
}

/* The password as clients submit it: the whole form comes back with every field's current value, so the
 * protection box is often sent unchanged while the user typed a secret. Turning protection off clears the
 * secret; otherwise a non-empty secret protects the room and an empty one does not, and protection asked
 * for with no secret is refused. NULL or the error condition. */
static const char *password_rule(const room *r, setting_value *vals)
{
    setting_value *p = &vals[setting_index_of_kind(SK_PROTECTED)], *sec = &vals[setting_index_of_kind(SK_SECRET)];
    int was = r->password && *r->password;
    const char *secret = sec->given ? sec->str : was ? r->password : "";
    if (!p->given) return NULL;
    if (p->num && !*secret) return "not-acceptable";
    if (!p->num && was) { sec->given = 1; sec->str = ""; }
    return NULL;
}

/* validates a submitted form into vals (one per setting; fields not given stay not given); NULL or the
 * error condition */
static const char *config_parse(const muc_service *m, const room *r, const xml_node *x, setting_value *vals)
{
    memset(vals, 0, NSETTINGS * sizeof *vals);
    for (const xml_node *f = xml_child(x, "field", NS_XDATA); f; f = xml_next_child(f, "field", NS_XDATA)) {
        const char *var = xml_attr_get(f, "var"), *err;
        if (!var) return "bad-request";
        if (!strcmp(var, "FORM_TYPE")) {
            const char *v = xdata_value(f);
            if (*v && strcmp(v, FORM_CONFIG)) return "bad-request";
            continue;
        }
        size_t pl = strlen(CONFIG_VAR);
        const setting *s = strncmp(var, CONFIG_VAR, pl) ? NULL : setting_by_var(var + pl);
        if (s && (err = setting_parse(m, s, f, &vals[s - settings]))) return err;
    }
    return password_rule(r, vals);
}

/* 1 when the room's value changed, 0 when it was the same, -1 on out of memory */
static MUST_USE int setting_apply(room *r, const setting *s, const setting_value *v)
{
    if (!v->given || s->kind == SK_PROTECTED) return 0;
    if (setting_is_text(s)) {
        const char *cur = setting_cstr(r, s);
        if (!strcmp(v->str, cur ? cur : "")) return 0;
        return set_text(setting_str(r, s), v->str) < 0 ? -1 : 1;
    }
    if (v->num == setting_num(r, s)) return 0;
    setting_set_num(r, s, v->num);
    return 1;
}

/* 1 when anything changed, 0 when nothing did, -1 on out of memory (the room half changed) */
static MUST_USE int settings_apply(room *r, const setting_value *vals)
{
    int changed = 0;
    for (size_t i = 0; i < NSETTINGS; i++) {
        int rc = setting_apply(r, &settings[i], &vals[i]);
        if (rc < 0) return -1;
        changed |= rc;
    }
    return changed;
}

/* ------------------------------------------------------------------ owner: configuration, destruction */

static void room_destroy(muc_service *m, room *r, const char *alt, const char *reason)
{
    pres_spec p;
    memset(&p, 0, sizeof p);
    p.type = "unavailable";
    p.aff = AFF_NONE;
    p.role = ROLE_NONE;
    p.destroy = 1;
    p.destroy_jid = alt;
    p.destroy_reason = reason;
    /* each occupant hears of its own going only, as itself: status 110 (XEP-0045 §10.9, as Prosody does) */
    for (occupant *q = r->first; q; q = q->next) {
        enc_presence(&m->tmp, r, q, &p, 0, 1);
        send_occupant(m, r, q, &m->tmp);
    }
    /* the occupants are gone already; a file left behind brings the room back at the next start */
    if (r->persistent && room_unsave(m, r) < 0) log_err("muc: %s was destroyed but its file stays", r->jid);
    r->destroyed = 1;
    m->touched = r;
}

/* 104 to the room, with 172/173 when who sees real JIDs changed */
static void announce_config(muc_service *m, room *r, int was_anyone)
{
    xml_buf *b = &m->e[0].b;
    xml_buf_reset(b);
    xml_buf_puts(b, "<message type='groupchat' from='");
    put_room_nick(b, r, NULL);
    xml_buf_puts(b, "'");
    m->e[0].split = b->len;
    xml_buf_puts(b, "><x xmlns='" NS_MUC_USER "'><status code='104'/>");
    if (r->whois_anyone != was_anyone) put_status(b, r->whois_anyone ? 172 : 173);
    xml_buf_puts(b, "</x></message>");
    broadcast_enc(m, r, &m->e[0]);
}

/* a room just made members-only loses those who are not members (322) */
static void remove_nonmembers(muc_service *m, room *r)
{
    occupant *q = r->first;
    while (q) {
        occupant *nx = q->next;
        if (q->aff < AFF_MEMBER) occupant_remove(m, r, q, 322, NULL, NULL);
        q = nx;
    }
}

static void config_apply(muc_service *m, const muc_ctx *cx, room *r, const setting_value *vals)
{
    int was_anyone = r->whois_anyone, was_members = r->membersonly, was_locked = r->locked, changed = 0;
    room_snapshot s;
    /* always a snapshot: the form may make a temporary room persistent, and may fail half-applied */
    if (snapshot_begin(r, &s, 1) < 0 || (changed = settings_apply(r, vals)) < 0) {
        change_fail(m, cx, r, &s);
        return;
    }
    /* any submitted form, the empty one of an instant room too, unlocks (§10.1.2, §10.1.3); unlocked first,
     * so that a persistent room is written now */
    room_unlock(m, r);
    if (change_commit(m, cx, r, &s) < 0) {
        if (was_locked) room_lock_again(m, r);
        return;
    }
    send_result(m, cx, NULL);
    if (changed) announce_config(m, r, was_anyone);
    if (r->membersonly && !was_members) remove_nonmembers(m, r);
    m->touched = r;
}

static void handle_owner(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    if (aff != AFF_OWNER) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    if (!strcmp(stanza_type(cx->st), "get")) {
        xml_node *rq = t_node(m, "query", NS_MUC_OWNER);
        t_append(m, rq, config_form(m, r));
        send_result(m, cx, rq);
        return;
    }
    const xml_node *d = xml_child(q, "destroy", NS_MUC_OWNER);
    if (d) {
        const xml_node *reason = xml_child(d, "reason", NS_MUC_OWNER);
        room_destroy(m, r, xml_attr_get(d, "jid"), reason ? xml_text(reason) : NULL);
        send_result(m, cx, NULL);
        return;
    }
    const xml_node *x = xml_child(q, "x", NS_XDATA);
    if (!x) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    const char *ftype = xml_attr_get(x, "type");
    if (ftype && !strcmp(ftype, "cancel")) {
        /* the creator who cancels the initial configuration does not want the room (§10.1.3) */
        if (r->locked) room_destroy(m, r, NULL, NULL);
        send_result(m, cx, NULL);
        return;
    }
    if (!ftype || strcmp(ftype, "submit")) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    setting_value vals[NSETTINGS];
    const char *cond = config_parse(m, r, x, vals);
    if (cond) { send_error(m, cx, "modify", cond, r->jid); return; }
    config_apply(m, cx, r, vals);
}

/* ------------------------------------------------------------------ admin: affiliations and roles */

static void announce_affiliation(muc_service *m, room *r, const char *bare, int aff, const char *reason)
{
    xml_node *msg = t_node(m, "message", XML_NS_CLIENT);
    t_attr(m, msg, "from", r->jid);
    xml_node *x = t_child(m, msg, "x", NS_MUC_USER);
    xml_node *it = t_child(m, x, "item", NULL);
    t_attr(m, it, "jid", bare);
    t_attr(m, it, "affiliation", aff_names[aff]);
    if (reason) t_text(m, it, "reason", NULL, reason);
    send_room_message(m, r, msg, 1);
}

static int count_owners(const room *r)
{
    int n = 0;
    for (size_t i = 0; i < r->naffs; i++) n += r->affs[i].aff == AFF_OWNER;
    return n;
}

typedef struct admin_change {
    const xml_node *item;
    occupant *target;               /* role changes */
    char bare[JID_MAX];             /* affiliation changes */
    char nick[NICK_MAX];            /* a nick reserved with the affiliation (§9.3), "" when none */
    int aff, role;
    const char *reason;
} admin_change;

/* what an affiliation change (already stored) does to the occupants of that JID, or else an announcement */
static void affiliation_effects(muc_service *m, room *r, const actor_ref *an, admin_change *c)
{
    int found = 0;
    /* as effective_aff saw it right after this item, also when a later item changes the same JID again */
    int eff = is_server_admin(m, c->bare) ? AFF_OWNER : c->aff;
    occupant *q = r->first;
    while (q) {
        occupant *nx = q->next;
        if (!strcmp(q->bare, c->bare)) {
            found = 1;
            if (eff == AFF_OUTCAST) { q->aff = AFF_OUTCAST; occupant_remove(m, r, q, 301, an, c->reason); }
            else if (eff < AFF_MEMBER && r->membersonly) { q->aff = (unsigned char)eff; occupant_remove(m, r, q, 321, an, c->reason); }
            else {
                q->aff = (unsigned char)eff;
                int nr = role_for(r, eff);
                if (eff < AFF_ADMIN && q->role == ROLE_VISITOR && nr == ROLE_VISITOR) nr = ROLE_VISITOR;
                q->role = (unsigned char)nr;
                pres_spec p = current_spec(q);
                p.actor = an;
                p.reason = c->reason;
                broadcast_presence(m, r, q, &p, 1);
            }
        }
        q = nx;
    }
    if (!found) announce_affiliation(m, r, c->bare, c->aff, c->reason);
}

static void apply_role(muc_service *m, room *r, const actor_ref *an, admin_change *c)
{
    occupant *q = c->target;
    if (c->role == ROLE_NONE) { occupant_remove(m, r, q, 307, an, c->reason); return; }
    q->role = (unsigned char)c->role;
    pres_spec p = current_spec(q);
    p.actor = an;
    p.reason = c->reason;
    broadcast_presence(m, r, q, &p, 1);
}

static void admin_list_affs(muc_service *m, const muc_ctx *cx, room *r, const char *as, int aff, occupant *o)
{
    int a = str_in(as, aff_names, 5);
    if (a < 0 || a == AFF_NONE) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    /* the member list: to the roles muc#roomconfig_getmemberlist names, and to every member where real JIDs
     * are public anyway (as Prosody) */
    int may = aff >= AFF_ADMIN || (a == AFF_MEMBER && ((o && (r->memberlist_roles & (1u << o->role))) ||
                                                        (r->whois_anyone && aff >= AFF_MEMBER)));
    /* who the owners and admins are is the owners' to know where real JIDs are not public (§10.5, §10.8) */
    if (a >= AFF_ADMIN && aff < AFF_OWNER && !r->whois_anyone) may = 0;
    if (!may) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    xml_node *rq = t_node(m, "query", NS_MUC_ADMIN);
    for (size_t i = 0; i < r->naffs; i++) {
        if (r->affs[i].aff != a) continue;
        xml_node *it = t_child(m, rq, "item", NULL);
        t_attr(m, it, "affiliation", as);
        t_attr(m, it, "jid", r->affs[i].jid);
        if (r->affs[i].nick) t_attr(m, it, "nick", r->affs[i].nick);
    }
    send_result(m, cx, rq);
}

static void admin_list_roles(muc_service *m, const muc_ctx *cx, room *r, const char *rs, occupant *o)
{
    int ro = str_in(rs, role_names, 4);
    if (ro <= ROLE_NONE) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    if (!o || o->role != ROLE_MODERATOR) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    xml_node *rq = t_node(m, "query", NS_MUC_ADMIN);
    for (occupant *q = r->first; q; q = q->next) {
        if (q->role != ro) continue;
        xml_node *it = t_child(m, rq, "item", NULL);
        t_attr(m, it, "affiliation", aff_names[q->aff]);
        t_attr(m, it, "jid", q->sessions->jid);
        t_attr(m, it, "nick", q->nick);
        t_attr(m, it, "role", rs);
    }
    send_result(m, cx, rq);
}

static void admin_list(muc_service *m, const muc_ctx *cx, room *r, const xml_node *item, int aff, occupant *o)
{
    const char *as = xml_attr_get(item, "affiliation"), *rs = xml_attr_get(item, "role");
    if (as) admin_list_affs(m, cx, r, as, aff, o);
    else if (rs) admin_list_roles(m, cx, r, rs, o);
    else send_error(m, cx, "modify", "bad-request", r->jid);
}

/* checks one change against XEP-0045's permission rules; NULL or "type condition" */
static const char *admin_check(room *r, const xml_node *it, int aff, occupant *o, const char *self, admin_change *c)
{
    const char *as = xml_attr_get(it, "affiliation"), *rs = xml_attr_get(it, "role");
    const char *nick = xml_attr_get(it, "nick"), *j = xml_attr_get(it, "jid");
    const xml_node *reason = xml_child(it, "reason", NS_MUC_ADMIN);
    c->item = it;
    c->reason = reason ? xml_text(reason) : NULL;
    c->aff = c->role = -1;
    c->target = NULL;
    if (as) {
        if ((c->aff = str_in(as, aff_names, 5)) < 0) return "modify bad-request";
        c->nick[0] = 0;
        if (j) {
            jid pj;
            if (jid_parse(j, &pj) < 0 || jid_bare(&pj, c->bare, sizeof c->bare) < 0) return "modify jid-malformed";
            /* with a jid, a nick is the one to reserve for that member (§9.3, as Prosody) */
            if (nick && c->aff >= AFF_MEMBER) {
                if (nick_refused(nick, c->nick)) return "modify jid-malformed";
                const char *holder = reserved_nick_owner(r, c->nick);
                if (holder && strcmp(holder, c->bare)) return "cancel conflict";
            }
        } else if (nick) {
            occupant *t = find_nick(r, nick);
            if (!t) return "cancel item-not-found";
            snprintf(c->bare, sizeof c->bare, "%s", t->bare);
        } else return "modify bad-request";
        if (aff < AFF_ADMIN) return "auth forbidden";
        /* an admin or owner may not ban himself (§9.1) */
        if (c->aff == AFF_OUTCAST && !strcmp(c->bare, self)) return "cancel conflict";
        int cur = room_aff(r, c->bare);
        if (aff == AFF_ADMIN) {
            if (c->aff >= AFF_ADMIN) return "auth forbidden";
            /* banning an admin or owner is not allowed (§9.1); any other change to one is an owner's (§10.7) */
            if (cur >= AFF_ADMIN) return c->aff == AFF_OUTCAST ? "cancel not-allowed" : "auth forbidden";
        }
        return NULL;
    }
    if (!rs || !nick) return "modify bad-request";
    if ((c->role = str_in(rs, role_names, 4)) < 0) return "modify bad-request";
    if (!o || o->role != ROLE_MODERATOR) return "auth forbidden";
    c->target = find_nick(r, nick);
    if (!c->target) return "cancel item-not-found";
    int taff = c->target->aff;
    /* kicking or silencing someone of higher affiliation is not allowed (§8.2, §8.4), before any other rule */
    if (c->role < ROLE_MODERATOR && taff >= AFF_ADMIN && c->target != o) return "cancel not-allowed";
    if (c->role < ROLE_MODERATOR && taff > aff) return "cancel not-allowed";
    if (c->role == ROLE_MODERATOR || c->target->role == ROLE_MODERATOR) {
        if (aff < AFF_ADMIN) return "auth forbidden";
    }
    return NULL;
}

/* the last owner may not go: owners counted as they would be after every change */
static int leaves_no_owner(const room *r, const admin_change *cs, size_t n)
{
    int owners = count_owners(r), touched_owner = 0;
    for (size_t i = 0; i < n; i++) {
        if (cs[i].aff < 0) continue;
        int cur = room_aff(r, cs[i].bare);
        if (cur == AFF_OWNER && cs[i].aff != AFF_OWNER) { owners--; touched_owner = 1; }
        if (cur != AFF_OWNER && cs[i].aff == AFF_OWNER) owners++;
    }
    return touched_owner && owners < 1;
}

/* every affiliation of the request, stored before any occupant hears of one; -1 when answered instead */
static MUST_USE int store_affiliations(muc_service *m, const muc_ctx *cx, room *r, const admin_change *cs, size_t n)
{
    size_t i = 0;
    room_snapshot s;
    while (i < n && cs[i].aff < 0) i++;
    if (i == n) return 0;       /* roles only: nothing to store */
    /* always a snapshot: with several items a temporary room too could be left half changed */
    if (snapshot_begin(r, &s, 1) < 0) return change_fail(m, cx, r, &s);
    for (; i < n; i++)          /* NULL: a reserved nick is kept */
        if (cs[i].aff >= 0 && set_aff(r, cs[i].bare, cs[i].aff, cs[i].nick[0] ? cs[i].nick : NULL) < 0)
            return change_fail(m, cx, r, &s);
    return change_commit(m, cx, r, &s);
}

static void handle_admin(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    const xml_node *first = xml_child(q, "item", NS_MUC_ADMIN);
    if (!first) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    if (!strcmp(stanza_type(cx->st), "get")) { admin_list(m, cx, r, first, aff, o); return; }
    size_t n = 0;
    for (const xml_node *it = first; it; it = xml_next_child(it, "item", NS_MUC_ADMIN)) n++;
    if (n > 256) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    admin_change *cs = xml_arena_alloc(m->arena, n * sizeof *cs);
    if (!cs) { send_error(m, cx, "wait", "resource-constraint", r->jid); return; }
    size_t i = 0;
    for (const xml_node *it = first; it; it = xml_next_child(it, "item", NS_MUC_ADMIN), i++) {
        const char *err = admin_check(r, it, aff, o, cx->bare, &cs[i]);
        if (err) { send_error_pair(m, cx, err, r->jid); return; }
    }
    if (leaves_no_owner(r, cs, n)) { send_error(m, cx, "cancel", "conflict", r->jid); return; }
    if (store_affiliations(m, cx, r, cs, n) < 0) return;
    actor_ref an;
    actor_of(o, cx->bare, &an);
    for (i = 0; i < n; i++) {
        if (cs[i].aff >= 0) affiliation_effects(m, r, &an, &cs[i]);
        /* the target may have been removed by an earlier item */
        else if ((cs[i].target = find_nick(r, xml_attr_get(cs[i].item, "nick")))) apply_role(m, r, &an, &cs[i]);
    }
    send_result(m, cx, NULL);
    m->touched = r;
}

/* ------------------------------------------------------------------ disco, registration, forwarding */

/* the shared disco builders, marking the tree on a failed allocation as the t_ helpers do */
static void t_feature(muc_service *m, xml_node *q, const char *var)
{
    if (disco_add_feature(m->arena, q, var) < 0) m->tree_oom = 1;
}

static void t_table_features(muc_service *m, xml_node *q, const void *table, size_t row_size)
{
    if (disco_add_table_features(m->arena, q, table, row_size) < 0) m->tree_oom = 1;
}

/* Not disco_add_identity: clients have always had these attributes in this order, name before type. */
static void add_identity(muc_service *m, xml_node *q, const char *name)
{
    xml_node *id = t_child(m, q, "identity", NULL);
    t_attr(m, id, "category", "conference");
    if (name) t_attr(m, id, "name", name);
    t_attr(m, id, "type", "text");
}

static const char *room_title(const room *r, char *buf, size_t n)
{
    if (r->title && *r->title) return r->title;
    snprintf(buf, n, "%.*s", (int)(strchr(r->jid, '@') - r->jid), r->jid);
    return buf;
}

/* The IQs a room answers itself (those to an occupant's nick are forwarded to it). The table dispatches and
 * fills disco#info, so nothing is advertised that is not answered; no row is advertised today, as a room's
 * disco#info has always listed only the MUC namespace and the muc_ features, and clients compare it. */
typedef void (*room_iq_fn)(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o);
typedef struct room_iq_row { iq_key key; room_iq_fn fn; } room_iq_row;

static void room_disco_info(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o);
static void room_disco_items(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o);
static void handle_register(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o);

/* ---- the room's archive (XEP-0313): occupants of a persistent room may page through it ---- */

typedef struct mam_walk { muc_service *m; const mam_request *rq; const char *to; const char *from; } mam_walk;

static int mam_send_one(void *ud, const archive_rec *rec)
{
    mam_walk *w = ud;
    mam_put_result(&w->m->tmp.b, &w->m->tmp.split, w->from, w->rq, rec);
    enc_send_any(w->m, &w->m->tmp, w->to);
    return 0;
}

static void room_mam(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    if (!r->persistent) {
        send_error_text(m, cx, "cancel", "feature-not-implemented", r->jid, "a temporary room keeps no archive");
        return;
    }
    if (!o) { send_error(m, cx, "auth", "forbidden", r->jid); return; }
    if (!strcmp(stanza_type(cx->st), "get")) { send_result(m, cx, mam_form_node(m->arena)); return; }
    mam_request rq;
    const char *cond, *text;
    if (mam_parse(q, MAM_PAGE_DEFAULT, MAM_PAGE_MAX, &rq, &cond, &text) < 0) {
        send_error_text(m, cx, !strcmp(cond, "item-not-found") || !strcmp(cond, "feature-not-implemented") ? "cancel" : "modify",
                        cond, r->jid, text);
        return;
    }
    char with[JID_MAX * 2];
    jid wj;
    /* 'with' names an occupant by its room JID, as it was stored */
    if (rq.with && jid_parse(rq.with, &wj) == 0 && jid_full(&wj, with, sizeof with) == 0) rq.q.with = with;
    archive *a = room_archive(m, r);
    if (!a) { send_error(m, cx, "wait", "internal-server-error", r->jid); return; }
    mam_walk w = { m, &rq, cx->full, r->jid };
    archive_page pg;
    int n = archive_query_run(a, &rq.q, mam_send_one, &w, &pg);
    if (n == -2) { send_error_text(m, cx, "cancel", "item-not-found", r->jid, "no such message in the archive"); return; }
    if (n < 0) { send_error(m, cx, "wait", "internal-server-error", r->jid); return; }
    send_result(m, cx, mam_fin_node(m->arena, &pg));
}

static void room_ping(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    send_result(m, cx, NULL);
}

static const room_iq_row room_iqs[] = {
    { { NS_DISCO_INFO, "query", IQ_GET, NULL }, room_disco_info },
    { { NS_DISCO_ITEMS, "query", IQ_GET, NULL }, room_disco_items },
    { { NS_MUC_OWNER, "query", IQ_GET | IQ_SET, NULL }, handle_owner },
    { { NS_MUC_ADMIN, "query", IQ_GET | IQ_SET, NULL }, handle_admin },
    { { NS_REGISTER, "query", IQ_GET | IQ_SET, NULL }, handle_register },
    { { NS_PING, "ping", IQ_GET, NULL }, room_ping },
    /* advertised by room_disco_info, for persistent rooms only */
    { { NS_MAM, "query", IQ_GET | IQ_SET, NULL }, room_mam },
    { { NULL, NULL, 0, NULL }, NULL },
};

static void room_disco_info(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    const char *node = xml_attr_get(q, "node");
    xml_node *rq;
    if (node) {
        if (strcmp(node, NODE_ROOMUSER)) { send_error(m, cx, "cancel", "item-not-found", r->jid); return; }
        rq = t_node(m, "query", NS_DISCO_INFO);
        t_attr(m, rq, "node", node);
        aff_entry *e = room_aff_entry(r, cx->bare);
        if (e && e->nick) add_identity(m, rq, e->nick);
        send_result(m, cx, rq);
        return;
    }
    char tb[JID_PART_MAX + 1], num[16];
    rq = t_node(m, "query", NS_DISCO_INFO);
    add_identity(m, rq, room_title(r, tb, sizeof tb));
    t_feature(m, rq, NS_MUC);
    t_feature(m, rq, r->password && *r->password ? "muc_passwordprotected" : "muc_unsecured");
    t_feature(m, rq, r->membersonly ? "muc_membersonly" : "muc_open");
    t_feature(m, rq, r->moderated ? "muc_moderated" : "muc_unmoderated");
    t_feature(m, rq, r->persistent ? "muc_persistent" : "muc_temporary");
    t_feature(m, rq, r->public_room ? "muc_public" : "muc_hidden");
    t_feature(m, rq, r->whois_anyone ? "muc_nonanonymous" : "muc_semianonymous");
    t_feature(m, rq, NS_OCCUPANT_ID);
    t_feature(m, rq, FORM_REQUEST);
    if (r->persistent) { t_feature(m, rq, NS_MAM); t_feature(m, rq, NS_SID); }
    t_table_features(m, rq, room_iqs, sizeof *room_iqs);
    xml_node *x = t_child(m, rq, "x", NS_XDATA);
    t_attr(m, x, "type", "result");
    form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_INFO);
    form_field(m, x, "muc#roominfo_description", NULL, "Description", r->desc ? r->desc : "");
    form_field(m, x, "muc#roominfo_subject", NULL, "Subject", r->subject ? r->subject : "");
    snprintf(num, sizeof num, "%u", r->noccupants);
    form_field(m, x, "muc#roominfo_occupants", NULL, "Occupants", num);
    if (r->lang) form_field(m, x, "muc#roominfo_lang", NULL, "Language", r->lang);
    send_result(m, cx, rq);
}

static void room_disco_items(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    xml_node *rq = t_node(m, "query", NS_DISCO_ITEMS);
    for (occupant *p = r->whois_anyone ? r->first : NULL; p; p = p->next) {
        char j[JID_MAX * 2];
        xml_node *it = t_child(m, rq, "item", NULL);
        snprintf(j, sizeof j, "%s/%s", r->jid, p->nick);
        t_attr(m, it, "jid", j);
        t_attr(m, it, "name", p->nick);
    }
    send_result(m, cx, rq);
}

static void register_form(muc_service *m, const muc_ctx *cx, const aff_entry *e)
{
    xml_node *rq = t_node(m, "query", NS_REGISTER);
    if (e && e->nick) {
        t_child(m, rq, "registered", NULL);
        t_text(m, rq, "username", NULL, e->nick);
    } else {
        t_text(m, rq, "instructions", NULL, "Choose a nickname to register in this room");
        xml_node *x = t_child(m, rq, "x", NS_XDATA);
        t_attr(m, x, "type", "form");
        form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_REGISTER);
        t_child(m, form_field(m, x, "muc#register_roomnick", "text-single", "Nickname", NULL), "required", NULL);
    }
    send_result(m, cx, rq);
}

/* the sender's reserved nick is dropped (the affiliation stays), stored before the answer */
/* A member who unregisters is a member no more (§7.10, as Prosody): in a members-only room they leave with
 * 321. An admin or owner only gives up the reserved nick: their affiliation is the owners' to change. */
static MUST_USE int unregister(muc_service *m, const muc_ctx *cx, room *r)
{
    room_snapshot s;
    if (snapshot_begin(r, &s, 0) < 0) return change_fail(m, cx, r, &s);
    aff_entry *e = room_aff_entry(r, cx->bare);
    int was_member = e->aff == AFF_MEMBER;
    if (!was_member) { free(e->nick); e->nick = NULL; }
    else if (set_aff(r, cx->bare, AFF_NONE, NULL) < 0) return change_fail(m, cx, r, &s);
    if (change_commit(m, cx, r, &s) < 0) return -1;
    if (!was_member) return 0;
    admin_change c;
    memset(&c, 0, sizeof c);
    snprintf(c.bare, sizeof c.bare, "%s", cx->bare);
    c.aff = AFF_NONE;
    c.role = -1;
    affiliation_effects(m, r, NULL, &c);
    m->touched = r;
    return 0;
}

/* occupants of a JID that just became a member by registering hear of it; or the room is told */
static void announce_new_member(muc_service *m, room *r, const char *bare)
{
    int found = 0;
    for (occupant *q = r->first; q; q = q->next) {
        if (strcmp(q->bare, bare)) continue;
        found = 1;
        q->aff = (unsigned char)effective_aff(m, r, q->bare);
        if (q->role == ROLE_VISITOR) q->role = ROLE_PARTICIPANT;
        pres_spec p = current_spec(q);
        broadcast_presence(m, r, q, &p, 1);
    }
    if (!found) announce_affiliation(m, r, bare, AFF_MEMBER, NULL);
}

static void register_nick(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff)
{
    const xml_node *x = xml_child(q, "x", NS_XDATA);
    const char *nick = NULL;
    for (const xml_node *f = x ? xml_child(x, "field", NS_XDATA) : NULL; f; f = xml_next_child(f, "field", NS_XDATA)) {
        const char *var = xml_attr_get(f, "var");
        if (var && !strcmp(var, "muc#register_roomnick")) nick = xdata_value(f);
    }
    if (!nick) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    if (!jid_resource_valid(nick)) { send_error(m, cx, "modify", "jid-malformed", r->jid); return; }
    if (r->membersonly && aff < AFF_MEMBER) { send_error(m, cx, "cancel", "not-allowed", r->jid); return; }
    const char *holder = reserved_nick_owner(r, nick);
    occupant *t = find_nick(r, nick);
    if ((holder && strcmp(holder, cx->bare)) || (t && strcmp(t->bare, cx->bare))) {
        send_error(m, cx, "cancel", "conflict", r->jid);
        return;
    }
    int cur = room_aff(r, cx->bare);
    room_snapshot s;
    if (snapshot_begin(r, &s, 0) < 0 || set_aff(r, cx->bare, cur < AFF_MEMBER ? AFF_MEMBER : cur, nick) < 0) {
        change_fail(m, cx, r, &s);
        return;
    }
    if (change_commit(m, cx, r, &s) < 0) return;
    send_result(m, cx, NULL);
    if (cur < AFF_MEMBER) announce_new_member(m, r, cx->bare);
}

static void handle_register(muc_service *m, const muc_ctx *cx, room *r, const xml_node *q, int aff, occupant *o)
{
    aff_entry *e = room_aff_entry(r, cx->bare);
    if (aff == AFF_OUTCAST) send_error(m, cx, "auth", "forbidden", r->jid);
    /* who may not register is told so when asking for the form too (§7.10) */
    else if (!strcmp(stanza_type(cx->st), "get") && r->membersonly && aff < AFF_MEMBER)
        send_error(m, cx, "cancel", "not-allowed", r->jid);
    else if (!strcmp(stanza_type(cx->st), "get")) register_form(m, cx, e);
    else if (!xml_child(q, "remove", NS_REGISTER)) register_nick(m, cx, r, q, aff);
    else if (!e || (!e->nick && e->aff != AFF_MEMBER) || unregister(m, cx, r) == 0) send_result(m, cx, NULL);
}

/* the answer to a forwarded IQ goes back to its asker under the original id */
static void forward_iq_answer(muc_service *m, const muc_ctx *cx, room *r, occupant *o)
{
    const char *id = xml_attr_get(cx->st, "id");
    if (!r->fwd || !id || !o) return;
    for (unsigned i = 0; i < FWD_SLOTS; i++) {
        fwd_iq *f = &r->fwd[i];
        if (!f->id || strcmp(f->id, id) || strcmp(f->target, cx->full)) continue;
        xml_node *copy = copy_from_occupant(m, r, o, cx->st);
        t_attr(m, copy, "id", f->orig_id);
        send_tree(m, copy, f->orig_from);
        fwd_clear(f);
        return;
    }
}

/* IQs between occupants: the id is replaced so that the answer can be routed back */
static void forward_iq(muc_service *m, const muc_ctx *cx, room *r, occupant *o, const char *nick)
{
    const char *type = stanza_type(cx->st), *id = xml_attr_get(cx->st, "id");
    if (!strcmp(type, "result") || !strcmp(type, "error")) { forward_iq_answer(m, cx, r, o); return; }
    if (!o) { send_error(m, cx, "modify", "not-acceptable", r->jid); return; }
    occupant *t = find_nick(r, nick);
    if (!t) { send_error(m, cx, "cancel", "item-not-found", r->jid); return; }
    if (t == o && xml_child(cx->st, "ping", NS_PING)) { send_result(m, cx, NULL); return; }   /* XEP-0410 */
    if (!id) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    if (!r->fwd && !(r->fwd = calloc(FWD_SLOTS, sizeof *r->fwd))) {
        send_error(m, cx, "wait", "resource-constraint", r->jid);
        return;
    }
    fwd_iq *f = &r->fwd[r->fwd_next++ % FWD_SLOTS];
    fwd_clear(f);
    char nid[32];
    snprintf(nid, sizeof nid, "muc%lu", ++m->fwd_counter);
    f->id = xstrdup(nid);
    f->orig_id = xstrdup(id);
    f->orig_from = xstrdup(cx->full);
    f->target = xstrdup(t->sessions->jid);
    xml_node *copy = copy_from_occupant(m, r, o, cx->st);
    t_attr(m, copy, "id", nid);
    if (!f->id || !f->orig_id || !f->orig_from || !f->target || enc_tree(m, &m->tmp, copy) < 0) {
        fwd_clear(f);
        send_error(m, cx, "wait", "resource-constraint", r->jid);
        return;
    }
    send_session(m, r, t->sessions, &m->tmp);
}

static void handle_room_iq(muc_service *m, const muc_ctx *cx, room *r)
{
    const char *type = xml_attr_get(cx->st, "type"), *nick = cx->to.resource;
    if (!type) { send_error(m, cx, "modify", "bad-request", NULL); return; }
    int request = !strcmp(type, "get") || !strcmp(type, "set");
    if (!r) { if (request) send_error(m, cx, "cancel", "item-not-found", NULL); return; }
    session *s = find_session(r, cx->full);
    occupant *o = s ? s->occ : NULL;
    if (*nick) { forward_iq(m, cx, r, o, nick); return; }
    if (!request) return;
    /* the first element child, whatever follows it, as rooms have always read it (iq_payload refuses two) */
    const xml_node *q = xml_child(cx->st, NULL, NULL);
    if (!q) { send_error(m, cx, "modify", "bad-request", r->jid); return; }
    const room_iq_row *row = iq_table_find(room_iqs, sizeof *room_iqs, cx->st, q);
    if (row) row->fn(m, cx, r, q, effective_aff(m, r, cx->bare), o);
    else send_error(m, cx, "cancel", "feature-not-implemented", r->jid);
}

/* The IQs to the service's own domain, dispatched and advertised from one table like a room's. Ping is
 * answered but not advertised: the service's disco#info has always listed exactly disco#info, disco#items
 * and the MUC namespace, and clients and tests compare that list. */
typedef void (*service_iq_fn)(muc_service *m, const muc_ctx *cx, const xml_node *q);
typedef struct service_iq_row { iq_key key; service_iq_fn fn; } service_iq_row;

static void service_disco_info(muc_service *m, const muc_ctx *cx, const xml_node *q);
static void service_disco_items(muc_service *m, const muc_ctx *cx, const xml_node *q);

static void service_ping(muc_service *m, const muc_ctx *cx, const xml_node *q)
{
    send_result(m, cx, NULL);
}

static const service_iq_row service_iqs[] = {
    { { NS_DISCO_INFO, "query", IQ_GET, NS_DISCO_INFO }, service_disco_info },
    { { NS_DISCO_ITEMS, "query", IQ_GET, NS_DISCO_ITEMS }, service_disco_items },
    { { NS_PING, "ping", IQ_GET, NULL }, service_ping },
    { { NULL, NULL, 0, NULL }, NULL },
};

/* the service publishes no disco nodes: a query naming one is refused as an unknown IQ is */
static int service_node_refused(muc_service *m, const muc_ctx *cx, const xml_node *q)
{
    if (!xml_attr_get(q, "node")) return 0;
    send_error(m, cx, "cancel", "service-unavailable", NULL);
    return 1;
}

static void service_disco_info(muc_service *m, const muc_ctx *cx, const xml_node *q)
{
    if (service_node_refused(m, cx, q)) return;
    xml_node *rq = t_node(m, "query", NS_DISCO_INFO);
    add_identity(m, rq, "Chatrooms");
    t_table_features(m, rq, service_iqs, sizeof *service_iqs);
    t_feature(m, rq, NS_MUC);   /* rooms are joined by presence, not by an IQ: no row gives it */
    send_result(m, cx, rq);
}

static void service_disco_items(muc_service *m, const muc_ctx *cx, const xml_node *q)
{
    char tb[JID_PART_MAX + 1];
    if (service_node_refused(m, cx, q)) return;
    xml_node *rq = t_node(m, "query", NS_DISCO_ITEMS);
    for (room *r = m->rooms; r; r = r->next) {
        if (!r->public_room || r->destroyed) continue;
        xml_node *it = t_child(m, rq, "item", NULL);
        t_attr(m, it, "jid", r->jid);
        t_attr(m, it, "name", room_title(r, tb, sizeof tb));
    }
    send_result(m, cx, rq);
}

static void handle_service_iq(muc_service *m, const muc_ctx *cx)
{
    const char *type = stanza_type(cx->st);
    if (strcmp(type, "get") && strcmp(type, "set")) return;     /* results and errors end here */
    const xml_node *q = xml_child(cx->st, NULL, NULL);      /* the first element child, as for rooms */
    const service_iq_row *row = q ? iq_table_find(service_iqs, sizeof *service_iqs, cx->st, q) : NULL;
    if (row) row->fn(m, cx, q);
    else send_error(m, cx, "cancel", "service-unavailable", NULL);
}

/* ------------------------------------------------------------------ entry points */

/* the room the stanza touched: dead sessions reaped; gone if destroyed, or temporary and empty */
static void room_settle(muc_service *m)
{
    room *r = m->touched;
    if (r) {
        if (!r->destroyed) room_reap(m, r);
        if (r->destroyed || (!r->noccupants && !r->persistent)) room_unlink(m, r);
    }
    m->touched = NULL;
}

void muc_handle_stanza(muc_service *m, const xml_node *st)
{
    muc_ctx cx;     /* not zeroed: every field is set before it is read (it is large, and this is per stanza) */
    const char *from = xml_attr_get(st, "from"), *to = xml_attr_get(st, "to");
    if (!m || !st || !st->name || !from || !to) return;
    if (jid_parse(from, &cx.from) < 0 || jid_full(&cx.from, cx.full, sizeof cx.full) < 0 ||
        jid_bare(&cx.from, cx.bare, sizeof cx.bare) < 0) return;
    cx.st = st;
    int is_iq = !strcmp(st->name, "iq"), is_msg = !strcmp(st->name, "message"),
        is_pres = !strcmp(st->name, "presence");
    if (!is_iq && !is_msg && !is_pres) return;
    m->touched = NULL;
    m->tree_oom = 0;
    if (jid_parse(to, &cx.to) < 0 || strcmp(cx.to.domain, m->domain)) {
        send_error(m, &cx, "modify", "jid-malformed", NULL);
    } else if (!cx.to.local[0]) {
        if (is_iq) handle_service_iq(m, &cx);
        else if (is_msg) send_error(m, &cx, "cancel", "service-unavailable", NULL);
    } else {
        room *r = find_room(m, cx.to.local);
        if (r) m->touched = r;
        if (is_pres) handle_presence(m, &cx, r);
        else if (is_msg) handle_message(m, &cx, r);
        else handle_room_iq(m, &cx, r);
    }
    room_settle(m);
    m->tree_oom = 0;
    xml_arena_reset(m->arena);
}

/* locked rooms whose time is up are destroyed; asks to be woken for the next one */
void muc_service_tick(muc_service *m, time_t now)
{
    if (!m || !m->nlocked) return;
    time_t next = 0;
    room *nx;
    for (room *r = m->rooms; r; r = nx) {
        nx = r->next;       /* room_settle frees a destroyed room, and only it */
        if (!r->locked) continue;
        if (r->lock_until <= now) {
            room_destroy(m, r, NULL, "The room was not configured in time");
            room_settle(m);
        } else if (!next || r->lock_until < next) next = r->lock_until;
    }
    if (next && m->host.wake) m->host.wake(m->host.ud, (int)(next - now));
    xml_arena_reset(m->arena);
}

/* the limits of cfg; domain, server_domain and data_dir stay those the service was made with */
static void config_adopt(muc_service *m, const muc_config *cfg)
{
    m->cfg = *cfg;
    m->cfg.domain = m->domain;
    m->cfg.server_domain = m->server_domain;
    m->cfg.data_dir = m->data_dir;
    if (m->cfg.max_history < 0) m->cfg.max_history = 0;
}

muc_service *muc_service_new(const muc_config *cfg, const muc_host *host, char *err, size_t errlen)
{
    jid d;
    if (!cfg || !host || !host->deliver || !cfg->domain || !cfg->data_dir) {
        snprintf(err, errlen, "muc: incomplete configuration");
        return NULL;
    }
    if (jid_parse(cfg->domain, &d) < 0 || d.local[0] || d.resource[0]) {
        snprintf(err, errlen, "muc: bad domain '%s'", cfg->domain);
        return NULL;
    }
    muc_service *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "muc: out of memory"); return NULL; }
    m->host = *host;
    m->domain = xstrdup(d.domain);
    m->server_domain = xstrdup(cfg->server_domain ? cfg->server_domain : "");
    m->data_dir = xstrdup(cfg->data_dir);
    m->arena = xml_arena_new();
    for (int i = 0; i < 3; i++) xml_buf_init(&m->e[i].b);
    xml_buf_init(&m->tmp.b);
    xml_buf_init(&m->hist.b);
    config_adopt(m, cfg);
    if (!m->domain || !m->server_domain || !m->data_dir || !m->arena) {
        snprintf(err, errlen, "muc: out of memory");
        muc_service_free(m);
        return NULL;
    }
    if (rooms_load(m, err, errlen) < 0) { muc_service_free(m); return NULL; }
    return m;
}

void muc_service_set_config(muc_service *m, const muc_config *cfg)
{
    if (m && cfg) config_adopt(m, cfg);
}

void muc_service_free(muc_service *m)
{
    if (!m) return;
    while (m->rooms) { room *r = m->rooms; m->rooms = r->next; room_free(r); }
    free(m->rtab);
    for (unsigned i = 0; m->utab && i < UTAB_SIZE; i++)
        while (m->utab[i]) { user_rooms *u = m->utab[i]; m->utab[i] = u->next; free(u); }
    free(m->utab);
    for (int i = 0; i < 3; i++) xml_buf_free(&m->e[i].b);
    xml_buf_free(&m->tmp.b);
    xml_buf_free(&m->hist.b);
    if (m->arena) xml_arena_free(m->arena);
    free(m->domain);
    free(m->server_domain);
    free(m->data_dir);
    free(m);
}

int muc_service_flush(muc_service *m)
{
    int rc = 0;
    for (room *r = m->rooms; r; r = r->next)
        if (r->persistent && room_save(m, r) < 0) rc = -1;
    return rc;
}

size_t muc_room_count(const muc_service *m)
{
    return m ? m->nrooms : 0;
}

/* ------------------------------------------------------------------ the admin socket's views and destroy */

/* the room called name: its local part, or its bare JID at this service, normalised as JIDs are */
static room *room_by_name(const muc_service *m, const char *name)
{
    char text[JID_MAX + JID_PART_MAX];
    jid *j = malloc(sizeof *j);     /* three parts of 1 KiB each: not on the stack of a callback */
    room *r = NULL;
    if (!j) return NULL;
    if (strchr(name, '@')) snprintf(text, sizeof text, "%s", name);
    else snprintf(text, sizeof text, "%s@%s", name, m->domain);
    if (jid_parse(text, j) == 0 && j->local[0] && !j->resource[0] && !strcmp(j->domain, m->domain))
        r = find_room(m, j->local);
    free(j);
    return r;
}

static void room_view(const room *r, muc_room_view *v)
{
    memset(v, 0, sizeof *v);
    v->jid = r->jid;
    v->name = r->title ? r->title : "";
    v->description = r->desc ? r->desc : "";
    v->subject = r->subject ? r->subject : "";
    v->occupants = r->noccupants;
    v->max_users = r->maxusers > 0 ? (unsigned)r->maxusers : 0;
    v->history = r->histlen > 0 ? (unsigned)r->histlen : 0;
    v->persistent = r->persistent;
    v->public_room = r->public_room;
    v->password = r->password && *r->password;
    v->members_only = r->membersonly;
    v->moderated = r->moderated;
    v->jids_public = r->whois_anyone;
}

void muc_rooms_foreach(const muc_service *m, int (*each)(void *ud, const muc_room_view *v), void *ud)
{
    muc_room_view v;
    for (const room *r = m ? m->rooms : NULL; r; r = r->next) {
        room_view(r, &v);
        if (each(ud, &v)) return;
    }
}

int muc_room_view_get(const muc_service *m, const char *name, muc_room_view *out)
{
    const room *r = m && name ? room_by_name(m, name) : NULL;
    if (!r) return -1;
    room_view(r, out);
    return 0;
}

int muc_room_occupants_foreach(const muc_service *m, const char *name,
                               int (*each)(void *ud, const muc_occupant_view *o), void *ud)
{
    const room *r = m && name ? room_by_name(m, name) : NULL;
    if (!r) return -1;
    for (const occupant *o = r->first; o; o = o->next) {
        muc_occupant_view v = { o->nick, o->bare, role_names[o->role < ROLE_INVALID ? o->role : ROLE_NONE],
                                aff_names[o->aff < AFF_INVALID ? o->aff : AFF_NONE], 0 };
        for (const session *s = o->sessions; s; s = s->next) v.sessions++;
        if (each(ud, &v)) break;
    }
    return 0;
}

/* the same path as an owner's <destroy/>, then the room goes as muc_handle_stanza lets destroyed rooms go */
int muc_room_destroy_by_name(muc_service *m, const char *name, const char *reason)
{
    room *r = m && name ? room_by_name(m, name) : NULL;
    if (!r) return -1;
    m->touched = NULL;
    room_destroy(m, r, NULL, reason);
    room_unlink(m, r);
    m->touched = NULL;
    xml_arena_reset(m->arena);
    return 0;
}
