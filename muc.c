/* muc.c - the multi-user chat service (XEP-0045): rooms, occupants and their sessions, affiliations and
 * roles, history, room configuration, and the persistence of rooms as text files in data_dir/rooms/. */
#include "muc.h"
#include "jid.h"
#include "store.h"
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_MUC         "http://jabber.org/protocol/muc"
#define NS_MUC_USER    NS_MUC "#user"
#define NS_MUC_ADMIN   NS_MUC "#admin"
#define NS_MUC_OWNER   NS_MUC "#owner"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_XDATA       "jabber:x:data"
#define NS_STANZAS     "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_DELAY       "urn:xmpp:delay"
#define NS_REGISTER    "jabber:iq:register"
#define NS_PING        "urn:xmpp:ping"
#define FORM_CONFIG    NS_MUC "#roomconfig"
#define FORM_INFO      NS_MUC "#roominfo"
#define FORM_REGISTER  NS_MUC "#register"
#define NODE_ROOMUSER  "x-roomuser-item"

#define JID_MAX (3 * JID_PART_MAX + 8)
#define FWD_SLOTS 8

enum { AFF_OUTCAST, AFF_NONE, AFF_MEMBER, AFF_ADMIN, AFF_OWNER, AFF_INVALID };
static const char *const aff_names[] = { "outcast", "none", "member", "admin", "owner" };
enum { ROLE_NONE, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR, ROLE_INVALID };
static const char *const role_names[] = { "none", "visitor", "participant", "moderator" };
enum { PM_NONE, PM_MODERATORS, PM_PARTICIPANTS, PM_ANYONE };
static const char *const pm_names[] = { "none", "moderators", "participants", "anyone" };

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
    char nick[];
} occupant;

typedef struct aff_entry { char *jid, *nick; unsigned char aff; } aff_entry;
typedef struct hist_entry { char *data; unsigned len, split; time_t when; } hist_entry;
typedef struct fwd_iq { char *id, *orig_id, *orig_from, *target; } fwd_iq;

typedef struct room {
    struct room *next, *hnext;
    char *jid;                      /* name@domain */
    char *title, *desc, *lang, *password, *subject, *subject_nick;
    unsigned char persistent, public_room, changesubject, allowinvites, allowpm, membersonly,
                  moderated, whois_anyone, memberlist_roles, destroyed;
    int maxusers, histlen, defhist;
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
    muc_config cfg;
    muc_host host;
    char *domain, *server_domain, *data_dir;
    room *rooms, **rtab;
    unsigned rnb;
    size_t nrooms;
    xml_arena *arena;
    enc e[3], tmp, hist;
    room *touched;                  /* room whose dead sessions or emptiness must be handled */
    struct user_rooms **utab;       /* rooms each bare JID is in, for max_rooms_per_user */
    unsigned long fwd_counter;
    jid fj, tj;                     /* scratch: sender and recipient of the current stanza */
    char from[JID_MAX], bare[JID_MAX];
};

/* how many rooms one bare JID is in; entries exist only while that is at least one */
typedef struct user_rooms { struct user_rooms *next; unsigned n; char bare[]; } user_rooms;
#define UTAB_SIZE 4096

/* ------------------------------------------------------------------ small helpers */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s ? s : "", n);
    return p;
}

static int set_str(char **field, const char *v)
{
    char *p = xstrdup(v);
    if (!p) return -1;
    free(*field);
    *field = p;
    return 0;
}

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    while (*s) { h ^= (unsigned char)*s++; h *= 16777619u; }
    return h;
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

static void fmt_stamp(char *out, size_t n, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* XEP-0082 DateTime -> time_t, or -1 */
static time_t parse_stamp(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6) return -1;
    s += n;
    if (*s == '.') { s++; while (isdigit((unsigned char)*s)) s++; }
    long off = 0;
    if (*s == '+' || *s == '-') {
        int hh, mm;
        if (sscanf(s + 1, "%2d:%2d", &hh, &mm) != 2) return -1;
        off = (hh * 60L + mm) * 60L * (*s == '-' ? -1 : 1);
    } else if (*s != 'Z') return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t == (time_t)-1 ? -1 : t - off;
}

/* ------------------------------------------------------------------ encoding and delivery */

static void enc_tree(enc *e, const xml_node *n)
{
    xml_buf_reset(&e->b);
    xml_serialize_split(&e->b, n, XML_NS_CLIENT, &e->split);
}

static int enc_send(muc_service *m, const enc *e, const char *to)
{
    if (e->b.oom || !e->b.data) return 0;
    return m->host.deliver(m->host.ud, to, e->b.data, e->split, e->b.data + e->split, e->b.len - e->split);
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
    enc_tree(&m->tmp, n);
    enc_send(m, &m->tmp, to);
}

/* a new stanza of the original's kind addressed back to its sender; NULL on out of memory */
static xml_node *reply_node(muc_service *m, const xml_node *st, const char *type)
{
    xml_node *n = xml_node_new(m->arena, st->name, XML_NS_CLIENT);
    const char *to = xml_attr_get(st, "to"), *id = xml_attr_get(st, "id");
    if (!n) return NULL;
    if (to) xml_set_attr(m->arena, n, "from", to);
    if (id) xml_set_attr(m->arena, n, "id", id);
    if (type) xml_set_attr(m->arena, n, "type", type);
    return n;
}

static void send_error(muc_service *m, const xml_node *st, const char *etype, const char *cond, const char *by)
{
    const char *type = xml_attr_get(st, "type");
    if (type && !strcmp(type, "error")) return;
    if (!strcmp(st->name, "iq") && type && strcmp(type, "get") && strcmp(type, "set")) return;
    xml_node *n = reply_node(m, st, "error");
    if (!n) return;
    /* echo the join element (never its password): clients match a join error by it (XEP-0045 §7.2) */
    if (!strcmp(st->name, "presence") && xml_child(st, "x", NS_MUC) && !xml_add_child(m->arena, n, "x", NS_MUC))
        return;
    xml_node *e = xml_add_child(m->arena, n, "error", NULL);
    if (!e) return;
    xml_set_attr(m->arena, e, "type", etype);
    if (by) xml_set_attr(m->arena, e, "by", by);
    xml_add_child(m->arena, e, cond, NS_STANZAS);
    send_tree(m, n, m->from);
}

static void send_result(muc_service *m, const xml_node *st, xml_node *payload)
{
    xml_node *n = reply_node(m, st, "result");
    if (!n) return;
    if (payload) xml_append_child(n, payload);
    send_tree(m, n, m->from);
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

static int effective_aff(muc_service *m, const room *r, const char *bare)
{
    if (m->host.is_admin && m->host.is_admin(m->host.ud, bare)) return AFF_OWNER;
    return room_aff(r, bare);
}

static const char *reserved_nick_owner(const room *r, const char *nick)
{
    for (size_t i = 0; i < r->naffs; i++)
        if (r->affs[i].nick && !strcmp(r->affs[i].nick, nick)) return r->affs[i].jid;
    return NULL;
}

static int set_aff(room *r, const char *bare, int aff, const char *nick)
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
    if (!e) {
        if (r->naffs == r->caffs) {
            size_t nc = r->caffs ? r->caffs * 2 : 4;
            aff_entry *na = realloc(r->affs, nc * sizeof *na);
            if (!na) return -1;
            r->affs = na;
            r->caffs = nc;
        }
        e = &r->affs[r->naffs];
        e->jid = xstrdup(bare);
        e->nick = NULL;
        if (!e->jid) return -1;
        r->naffs++;
    }
    e->aff = (unsigned char)aff;
    if (aff == AFF_OUTCAST) { free(e->nick); e->nick = NULL; }
    if (nick) {
        char *p = *nick ? xstrdup(nick) : NULL;
        free(e->nick);
        e->nick = p;
    }
    return 0;
}

static int role_for(const room *r, int aff)
{
    if (aff >= AFF_ADMIN) return ROLE_MODERATOR;
    if (aff == AFF_MEMBER || !r->moderated) return ROLE_PARTICIPANT;
    return ROLE_VISITOR;
}

static int table_grow(void ***tab, unsigned *nb, unsigned count, size_t next_off, const char *(*key)(void *))
{
    if (*tab && count <= *nb) return 0;
    unsigned nn = *nb ? *nb * 2 : 8;
    void **t = calloc(nn, sizeof *t);
    if (!t) return *tab ? 0 : -1;   /* keep the old table, just longer chains */
    for (unsigned i = 0; i < *nb; i++) {
        void *e = (*tab)[i];
        while (e) {
            void *nx = *(void **)((char *)e + next_off);
            unsigned h = hash_str(key(e)) & (nn - 1);
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

static const char *occ_key(void *e) { return ((occupant *)e)->nick; }
static const char *sess_key(void *e) { return ((session *)e)->jid; }

static occupant *find_nick(const room *r, const char *nick)
{
    if (!r->nicks) return NULL;
    for (occupant *o = r->nicks[hash_str(nick) & (r->nick_nb - 1)]; o; o = o->hnext)
        if (!strcmp(o->nick, nick)) return o;
    return NULL;
}

static session *find_session(const room *r, const char *full)
{
    if (!r->sess) return NULL;
    for (session *s = r->sess[hash_str(full) & (r->sess_nb - 1)]; s; s = s->hnext)
        if (!strcmp(s->jid, full)) return s;
    return NULL;
}

static void nick_unhash(room *r, occupant *o)
{
    occupant **pp = &r->nicks[hash_str(o->nick) & (r->nick_nb - 1)];
    while (*pp && *pp != o) pp = &(*pp)->hnext;
    if (*pp) *pp = o->hnext;
}

static void nick_hash(room *r, occupant *o)
{
    unsigned h = hash_str(o->nick) & (r->nick_nb - 1);
    o->hnext = r->nicks[h];
    r->nicks[h] = o;
}

static session *session_add(room *r, occupant *o, const char *full)
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
    unsigned h = hash_str(full) & (r->sess_nb - 1);
    s->hnext = r->sess[h];
    r->sess[h] = s;
    r->nsessions++;
    return s;
}

static void session_remove(room *r, session *s)
{
    session **pp = &r->sess[hash_str(s->jid) & (r->sess_nb - 1)];
    while (*pp && *pp != s) pp = &(*pp)->hnext;
    if (*pp) *pp = s->hnext;
    for (pp = &s->occ->sessions; *pp && *pp != s; pp = &(*pp)->next) {}
    if (*pp) *pp = s->next;
    if (s->dead) r->dead--;
    r->nsessions--;
    free(s);
}

static occupant *occupant_add(room *r, const char *nick, const char *bare, const char *full)
{
    if (table_grow((void ***)&r->nicks, &r->nick_nb, r->noccupants + 1, offsetof(occupant, hnext), occ_key) < 0)
        return NULL;
    size_t n = strlen(nick) + 1;
    occupant *o = calloc(1, sizeof *o + n);
    if (!o) return NULL;
    memcpy(o->nick, nick, n);
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

/* a renamed occupant is a new allocation (the nick lives inside it); sessions are moved over */
static occupant *occupant_rename(room *r, occupant *o, const char *nick)
{
    size_t n = strlen(nick) + 1;
    occupant *no = calloc(1, sizeof *no + n);
    if (!no) return NULL;
    nick_unhash(r, o);
    *no = *o;
    memcpy(no->nick, nick, n);
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

/* +1 when the user enters a room as a new occupant, -1 when that occupant is gone */
static int user_rooms_add(muc_service *m, const char *bare, int delta)
{
    user_rooms **pp = user_rooms_slot(m, bare);
    if (!pp) return -1;
    if (!*pp) {
        if (delta < 0) return 0;
        size_t n = strlen(bare) + 1;
        user_rooms *u = calloc(1, sizeof *u + n);
        if (!u) return -1;
        memcpy(u->bare, bare, n);
        *pp = u;
    }
    user_rooms *u = *pp;
    if (delta < 0 && u->n <= 1) {
        *pp = u->next;
        free(u);
        return 0;
    }
    u->n = (unsigned)((int)u->n + delta);
    return 0;
}

/* an occupant leaves the room for good */
static void occupant_drop(muc_service *m, room *r, occupant *o)
{
    user_rooms_add(m, o->bare, -1);
    occupant_free(r, o);
}

static void room_free(room *r)
{
    while (r->first) occupant_free(r, r->first);
    for (size_t i = 0; i < r->naffs; i++) { free(r->affs[i].jid); free(r->affs[i].nick); }
    free(r->affs);
    for (unsigned i = 0; i < r->hist_cap && r->hist; i++) free(r->hist[i].data);
    free(r->hist);
    if (r->fwd) for (unsigned i = 0; i < FWD_SLOTS; i++) fwd_clear(&r->fwd[i]);
    free(r->fwd);
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
    for (room *r = m->rtab[hash_str(name) & (m->rnb - 1)]; r; r = r->hnext)
        if (!strncmp(r->jid, name, n) && r->jid[n] == '@') return r;
    return NULL;
}

static unsigned room_name_hash(const room *r)
{
    unsigned h = 2166136261u;
    for (const char *s = r->jid; *s && *s != '@'; s++) { h ^= (unsigned char)*s; h *= 16777619u; }
    return h;
}

static int rooms_grow(muc_service *m)
{
    if (m->rtab && m->nrooms < m->rnb) return 0;
    unsigned nn = m->rnb ? m->rnb * 2 : 16;
    room **t = calloc(nn, sizeof *t);
    if (!t) return m->rtab ? 0 : -1;
    for (room *r = m->rooms; r; r = r->next) {
        unsigned h = room_name_hash(r) & (nn - 1);
        r->hnext = t[h];
        t[h] = r;
    }
    free(m->rtab);
    m->rtab = t;
    m->rnb = nn;
    return 0;
}

static room *room_new(muc_service *m, const char *name)
{
    if (rooms_grow(m) < 0) return NULL;
    room *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    size_t n = strlen(name) + strlen(m->domain) + 2;
    r->jid = malloc(n);
    if (!r->jid) { free(r); return NULL; }
    snprintf(r->jid, n, "%s@%s", name, m->domain);
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
    unsigned h = room_name_hash(r) & (m->rnb - 1);
    r->hnext = m->rtab[h];
    m->rtab[h] = r;
    m->nrooms++;
    return r;
}

static void room_unlink(muc_service *m, room *r)
{
    room **pp = &m->rtab[room_name_hash(r) & (m->rnb - 1)];
    while (*pp && *pp != r) pp = &(*pp)->hnext;
    if (*pp) *pp = r->hnext;
    for (pp = &m->rooms; *pp && *pp != r; pp = &(*pp)->next) {}
    if (*pp) *pp = r->next;
    m->nrooms--;
    while (r->first) occupant_drop(m, r, r->first);
    room_free(r);
}

static user_rooms **user_rooms_slot(muc_service *m, const char *bare)
{
    if (!m->utab && !(m->utab = calloc(UTAB_SIZE, sizeof *m->utab))) return NULL;
    user_rooms **pp = &m->utab[hash_str(bare) & (UTAB_SIZE - 1)];
    while (*pp && strcmp((*pp)->bare, bare)) pp = &(*pp)->next;
    return pp;
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
static int decode_token(char *t)
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

static void room_path(const muc_service *m, const room *r, char *out, size_t n)
{
    int len = snprintf(out, n, "%s/rooms/", m->data_dir);
    for (const char *s = r->jid; *s && *s != '@' && len + 4 < (int)n; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '_' || c == '-' || (c == '.' && s != r->jid)) out[len++] = (char)c;
        else len += snprintf(out + len, n - len, "%%%02X", c);
    }
    snprintf(out + len, n - len, ".room");
}

static int room_save(muc_service *m, room *r)
{
    if (!r->persistent || r->destroyed) return 0;
    xml_buf b;
    xml_buf_init(&b);
    char path[4096];
    xml_buf_puts(&b, "couplet-room 1\nname");
    size_t nl = strchr(r->jid, '@') - r->jid;
    char name[JID_PART_MAX + 1];
    memcpy(name, r->jid, nl);
    name[nl] = 0;
    put_token(&b, name);
    xml_buf_puts(&b, "\ntitle"); put_token(&b, r->title);
    xml_buf_puts(&b, "\ndesc"); put_token(&b, r->desc);
    xml_buf_puts(&b, "\nlang"); put_token(&b, r->lang);
    xml_buf_puts(&b, "\npassword"); put_token(&b, r->password);
    xml_buf_puts(&b, "\nsubject"); put_token(&b, r->subject_nick); put_token(&b, r->subject);
    xml_buf_printf(&b, "\npublic %d\nchangesubject %d\nallowinvites %d\nallowpm %d\nmembersonly %d\n"
                   "moderated %d\nwhois_anyone %d\nmemberlist %d\nmaxusers %d\nhistlen %d\ndefhist %d\n",
                   r->public_room, r->changesubject, r->allowinvites, r->allowpm, r->membersonly,
                   r->moderated, r->whois_anyone, r->memberlist_roles, r->maxusers, r->histlen, r->defhist);
    for (size_t i = 0; i < r->naffs; i++) {
        xml_buf_printf(&b, "aff %s", aff_names[r->affs[i].aff]);
        put_token(&b, r->affs[i].jid);
        put_token(&b, r->affs[i].nick);
        xml_buf_puts(&b, "\n");
    }
    xml_buf_puts(&b, "end\n");
    room_path(m, r, path, sizeof path);
    int rc = b.oom ? -1 : store_write_atomic(path, b.data, b.len);
    if (rc < 0) log_err("muc: cannot write %s: %s", path, strerror(errno));
    xml_buf_free(&b);
    return rc;
}

static void room_unsave(muc_service *m, room *r)
{
    char path[4096];
    room_path(m, r, path, sizeof path);
    if (unlink(path) < 0 && errno != ENOENT) log_err("muc: cannot remove %s: %s", path, strerror(errno));
}

static int load_int(const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

/* parses one room file; 0, or -1 with err "path:LINE: why" */
static int room_load(muc_service *m, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *data = store_read_file(path, &len);
    if (!data) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    room *r = NULL;
    int line = 0, ended = 0, rc = -1;
    const char *why = "unexpected end of file";
    char *save = NULL;
    for (char *ln = strtok_r(data, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        line++;
        char *tok[5];
        int nt = 0;
        char *ts = NULL;
        for (char *t = strtok_r(ln, " ", &ts); t && nt < 5; t = strtok_r(NULL, " ", &ts)) tok[nt++] = t;
        why = "bad line";
        if (nt == 0 || ended) goto fail;
        if (line == 1) {
            if (nt != 2 || strcmp(tok[0], "couplet-room") || strcmp(tok[1], "1")) { why = "not a room file"; goto fail; }
            continue;
        }
        for (int i = 1; i < nt; i++) if (decode_token(tok[i]) < 0) { why = "bad escape"; goto fail; }
        if (!r) {
            if (strcmp(tok[0], "name") || nt != 2) { why = "expected name"; goto fail; }
            if (!*tok[1] || strlen(tok[1]) > JID_PART_MAX) { why = "bad room name"; goto fail; }
            char buf[JID_MAX];
            snprintf(buf, sizeof buf, "%s@%s", tok[1], m->domain);
            if (jid_parse(buf, &m->tj) < 0 || strcmp(m->tj.local, tok[1]) || m->tj.resource[0]) { why = "bad room name"; goto fail; }
            if (find_room(m, tok[1])) { why = "duplicate room"; goto fail; }
            r = room_new(m, tok[1]);
            if (!r) { why = "out of memory"; goto fail; }
            r->persistent = 1;
            continue;
        }
        const char *k = tok[0];
        int v;
        char **sf = !strcmp(k, "title") ? &r->title : !strcmp(k, "desc") ? &r->desc :
                    !strcmp(k, "lang") ? &r->lang : !strcmp(k, "password") ? &r->password : NULL;
        if (sf) {
            if (nt != 2) goto fail;
            if (*tok[1] && set_str(sf, tok[1]) < 0) { why = "out of memory"; goto fail; }
        } else if (!strcmp(k, "subject")) {
            if (nt != 3) goto fail;
            if (*tok[1] && set_str(&r->subject_nick, tok[1]) < 0) goto fail;
            if (*tok[2] && set_str(&r->subject, tok[2]) < 0) goto fail;
        } else if (!strcmp(k, "aff")) {
            int a = str_in(tok[1], aff_names, 5);
            if (nt != 4 || a < 0 || a == AFF_NONE) { why = "bad affiliation"; goto fail; }
            if (jid_parse(tok[2], &m->fj) < 0 || m->fj.resource[0]) { why = "bad affiliation JID"; goto fail; }
            if (*tok[3] && !jid_resource_valid(tok[3])) { why = "bad nick"; goto fail; }
            if (set_aff(r, tok[2], a, tok[3]) < 0) { why = "out of memory"; goto fail; }
        } else if (!strcmp(k, "end")) {
            if (nt != 1) goto fail;
            ended = 1;
        } else {
            static const char *const ik[] = { "public", "changesubject", "allowinvites", "allowpm", "membersonly",
                                              "moderated", "whois_anyone", "memberlist", "maxusers", "histlen", "defhist" };
            int which = str_in(k, ik, 11);
            if (which < 0) { why = "unknown key"; goto fail; }
            int hi = which == 3 ? PM_ANYONE : which == 7 ? 15 : which < 8 ? 1 : 1000000;
            if (nt != 2 || load_int(tok[1], 0, hi, &v) < 0) { why = "bad value"; goto fail; }
            unsigned char *bf[] = { &r->public_room, &r->changesubject, &r->allowinvites, &r->allowpm,
                                    &r->membersonly, &r->moderated, &r->whois_anyone, &r->memberlist_roles };
            if (which < 8) *bf[which] = (unsigned char)v;
            else if (which == 8) r->maxusers = m->cfg.max_occupants > 0 && (v == 0 || v > m->cfg.max_occupants) ? m->cfg.max_occupants : v;
            else if (which == 9) r->histlen = v > m->cfg.max_history ? m->cfg.max_history : v;
            else r->defhist = v;
        }
    }
    if (!ended) { line++; why = "unexpected end of file"; goto fail; }
    rc = 0;
    free(data);
    return rc;
fail:
    snprintf(err, errlen, "%s:%d: %s", path, line, why);
    if (r) room_unlink(m, r);
    free(data);
    return -1;
}

static int rooms_load(muc_service *m, char *err, size_t errlen)
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

typedef struct pres_spec {
    const char *type;               /* NULL or "unavailable" */
    const char *payload;
    int aff, role;
    unsigned char created, join;    /* 201 (self), 100 (self, non-anonymous room) */
    const char *new_nick;           /* 303 */
    const char *actor, *reason;
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
        if (p->actor) { xml_buf_puts(b, "<actor"); put_attr(b, "nick", p->actor); xml_buf_puts(b, "/>"); }
        if (p->reason) put_elem_text(b, "reason", p->reason);
        xml_buf_puts(b, "</item>");
    } else xml_buf_puts(b, "/>");
    if (p->new_nick) put_status(b, 303);
    for (int i = 0; i < p->ncodes; i++) put_status(b, p->codes[i]);
    if (self && p->join && r->whois_anyone) put_status(b, 100);
    if (self) put_status(b, 110);
    if (p->destroy) {
        xml_buf_puts(b, "<destroy");
        if (p->destroy_jid) put_attr(b, "jid", p->destroy_jid);
        if (p->destroy_reason) { xml_buf_puts(b, ">"); put_elem_text(b, "reason", p->destroy_reason); xml_buf_puts(b, "</destroy>"); }
        else xml_buf_puts(b, "/>");
    }
    xml_buf_puts(b, "</x></presence>");
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

static void occupant_remove(muc_service *m, room *r, occupant *o, int code, const char *actor, const char *reason)
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

/* sessions whose delivery failed are dropped as if they had left */
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
        session_remove(r, s);
        if (!o->sessions) {
            pres_spec p;
            memset(&p, 0, sizeof p);
            p.type = "unavailable";
            p.aff = o->aff;
            occupant_leave(m, r, o, &p);
        }
    }
}

/* ------------------------------------------------------------------ history and subject */

static void history_add(muc_service *m, room *r, const enc *e)
{
    if (r->histlen <= 0 || e->b.oom || !e->b.data) return;
    if (!r->hist || r->hist_cap != (unsigned)r->histlen) {
        /* (re)size the ring, keeping the newest entries */
        unsigned cap = (unsigned)r->histlen;
        hist_entry *nh = calloc(cap, sizeof *nh);
        if (!nh) return;
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
    char *d = malloc(e->b.len + 1);
    if (!d) return;
    memcpy(d, e->b.data, e->b.len + 1);
    hist_entry *slot;
    if (r->hist_count == r->hist_cap) {
        slot = &r->hist[r->hist_head];
        free(slot->data);
        r->hist_head = (r->hist_head + 1) % r->hist_cap;
    } else slot = &r->hist[(r->hist_head + r->hist_count++) % r->hist_cap];
    slot->data = d;
    slot->len = (unsigned)e->b.len;
    slot->split = (unsigned)e->split;
    slot->when = time(NULL);
    (void)m;
}

static void history_send(muc_service *m, room *r, session *s, const xml_node *req)
{
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
            time_t t = parse_stamp(v);
            if (t > since) since = t;
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
        xml_buf_puts(b, "</message>");
    } else xml_buf_puts(b, "><subject/></message>");
}

/* ------------------------------------------------------------------ presence handling */

static void store_payload(muc_service *m, occupant *o, const xml_node *st)
{
    xml_buf *b = &m->tmp.b;
    xml_buf_reset(b);
    for (const xml_node *c = st->children; c; c = c->next) {
        if (!c->name) continue;
        if (!strcmp(c->name, "x") && (!strcmp(c->ns, NS_MUC) || !strcmp(c->ns, NS_MUC_USER))) continue;
        xml_serialize(b, c, XML_NS_CLIENT);
    }
    free(o->payload);
    o->payload = (b->len && !b->oom) ? xstrdup(b->data) : NULL;
}

static void join_output(muc_service *m, room *r, occupant *o, session *s, int created, const xml_node *mucx)
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
    enc_presence(&m->tmp, r, o, &p, 1, 1);
    send_session(m, r, s, &m->tmp);
    history_send(m, r, s, mucx ? xml_child(mucx, "history", NS_MUC) : NULL);
    enc_subject(&m->tmp, r);
    send_session(m, r, s, &m->tmp);
}

static void presence_join(muc_service *m, room *r, const xml_node *st, const char *nick, int created)
{
    const xml_node *mucx = xml_child(st, "x", NS_MUC);
    int aff = effective_aff(m, r, m->bare);
    occupant *o = find_nick(r, nick);
    if (o && strcmp(o->bare, m->bare)) { send_error(m, st, "cancel", "conflict", r->jid); return; }
    if (!o) {
        if (aff == AFF_OUTCAST) { send_error(m, st, "auth", "forbidden", r->jid); return; }
        if (r->membersonly && aff < AFF_MEMBER) { send_error(m, st, "auth", "registration-required", r->jid); return; }
        const char *holder = reserved_nick_owner(r, nick);
        if (holder && strcmp(holder, m->bare)) { send_error(m, st, "cancel", "conflict", r->jid); return; }
        if (r->password && *r->password && aff < AFF_OWNER) {
            const xml_node *pw = mucx ? xml_child(mucx, "password", NS_MUC) : NULL;
            if (!pw || strcmp(xml_text(pw), r->password)) { send_error(m, st, "auth", "not-authorized", r->jid); return; }
        }
        if (r->maxusers > 0 && (int)r->noccupants >= r->maxusers && aff < AFF_ADMIN) {
            send_error(m, st, "wait", "service-unavailable", r->jid);
            return;
        }
        if (m->cfg.max_rooms_per_user > 0 && user_rooms_count(m, m->bare) >= (unsigned)m->cfg.max_rooms_per_user) {
            send_error(m, st, "cancel", "policy-violation", r->jid);
            return;
        }
        o = occupant_add(r, nick, m->bare, m->from);
        if (o && user_rooms_add(m, m->bare, +1) < 0) {
            occupant_free(r, o);
            o = NULL;
        }
        if (!o) { send_error(m, st, "wait", "resource-constraint", r->jid); return; }
        o->aff = (unsigned char)aff;
        o->role = (unsigned char)role_for(r, aff);
        store_payload(m, o, st);
        join_output(m, r, o, o->sessions, created, mucx);
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
    session *s = session_add(r, o, m->from);
    if (!s) { send_error(m, st, "wait", "resource-constraint", r->jid); return; }
    join_output(m, r, o, s, 0, mucx);
}

static void presence_nick_change(muc_service *m, room *r, occupant *o, const xml_node *st, const char *nick)
{
    occupant *other = find_nick(r, nick);
    const char *holder = reserved_nick_owner(r, nick);
    if (other || (holder && strcmp(holder, o->bare))) { send_error(m, st, "cancel", "conflict", r->jid); return; }
    pres_spec p = current_spec(o);
    p.type = "unavailable";
    p.new_nick = nick;
    broadcast_presence(m, r, o, &p, 1);
    occupant *no = occupant_rename(r, o, nick);
    if (!no) return;
    store_payload(m, no, st);
    p = current_spec(no);
    broadcast_presence(m, r, no, &p, 1);
}

static void handle_presence(muc_service *m, room *r, const xml_node *st, const char *nick)
{
    const char *type = xml_attr_get(st, "type");
    session *s = r ? find_session(r, m->from) : NULL;
    occupant *o = s ? s->occ : NULL;

    if (type && !strcmp(type, "probe")) {
        occupant *t = r && *nick ? find_nick(r, nick) : NULL;
        if (!t) { send_error(m, st, "cancel", "item-not-found", r ? r->jid : NULL); return; }
        pres_spec p = current_spec(t);
        enc_presence(&m->tmp, r, t, &p, t == o || (o && can_see_jids(r, o)), t == o);
        enc_send(m, &m->tmp, m->from);
        return;
    }
    if (type && (!strcmp(type, "unavailable") || !strcmp(type, "error"))) {
        if (!o) return;
        if (o->sessions->next) {
            /* one of several sessions leaves: only it is told */
            pres_spec p = current_spec(o);
            p.type = "unavailable";
            p.role = ROLE_NONE;
            enc_presence(&m->tmp, r, o, &p, 1, 1);
            send_session(m, r, s, &m->tmp);
            session_remove(r, s);
            return;
        }
        store_payload(m, o, st);
        pres_spec p = current_spec(o);
        p.type = "unavailable";
        p.role = ROLE_NONE;
        occupant_leave(m, r, o, &p);
        return;
    }
    if (type) return;   /* subscriptions are not for rooms */
    if (!*nick) { send_error(m, st, "modify", "jid-malformed", r ? r->jid : NULL); return; }
    if (!jid_resource_valid(nick)) { send_error(m, st, "modify", "jid-malformed", r ? r->jid : NULL); return; }
    if (o) {
        if (strcmp(o->nick, nick)) { presence_nick_change(m, r, o, st, nick); return; }
        store_payload(m, o, st);
        pres_spec p = current_spec(o);
        broadcast_presence(m, r, o, &p, 1);
        return;
    }
    int created = 0;
    if (!r) {
        char roomjid[JID_MAX];
        snprintf(roomjid, sizeof roomjid, "%s@%s", m->tj.local, m->domain);
        int admin = m->host.is_admin && m->host.is_admin(m->host.ud, m->bare);
        if (!admin && !m->cfg.create_rooms) {
            send_error(m, st, "cancel", "not-allowed", roomjid);
            return;
        }
        if (m->cfg.max_rooms > 0 && m->nrooms >= (size_t)m->cfg.max_rooms) {
            send_error(m, st, "wait", "resource-constraint", roomjid);
            return;
        }
        r = room_new(m, m->tj.local);
        if (!r || set_aff(r, m->bare, AFF_OWNER, NULL) < 0) {
            if (r) room_unlink(m, r);
            send_error(m, st, "wait", "resource-constraint", roomjid);
            return;
        }
        created = 1;
        m->touched = r;
        room_save(m, r);
    }
    presence_join(m, r, st, nick, created);
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
    enc_tree(&m->e[0], msg);
    for (occupant *q = r->first; q; q = q->next)
        if (!jid_only || can_see_jids(r, q)) send_occupant(m, r, q, &m->e[0]);
}

static void handle_invites(muc_service *m, room *r, occupant *o, const xml_node *st, const xml_node *x)
{
    const xml_node *inv = xml_child(x, "invite", NS_MUC_USER);
    if (inv) {
        if (!o) { send_error(m, st, "modify", "not-acceptable", r->jid); return; }
        int may = r->membersonly ? (o->aff >= AFF_ADMIN || r->allowinvites) : 1;
        if (!may) { send_error(m, st, "auth", "forbidden", r->jid); return; }
        for (; inv; inv = xml_next_child(inv, "invite", NS_MUC_USER)) {
            const char *to = xml_attr_get(inv, "to");
            if (!to || jid_parse(to, &m->fj) < 0) { send_error(m, st, "modify", "jid-malformed", r->jid); return; }
            char ibare[JID_MAX], ifull[JID_MAX];
            jid_bare(&m->fj, ibare, sizeof ibare);
            jid_full(&m->fj, ifull, sizeof ifull);
            if (r->membersonly && room_aff(r, ibare) == AFF_NONE) {
                set_aff(r, ibare, AFF_MEMBER, NULL);
                room_save(m, r);
            }
            xml_node *msg = xml_node_new(m->arena, "message", XML_NS_CLIENT);
            if (!msg) return;
            xml_set_attr(m->arena, msg, "from", r->jid);
            const char *id = xml_attr_get(st, "id");
            if (id) xml_set_attr(m->arena, msg, "id", id);
            xml_node *ux = xml_add_child(m->arena, msg, "x", NS_MUC_USER);
            xml_node *in = xml_add_child(m->arena, ux, "invite", NULL);
            xml_set_attr(m->arena, in, "from", m->bare);
            const xml_node *reason = xml_child(inv, "reason", NS_MUC_USER);
            if (reason) xml_add_child_text(m->arena, in, "reason", NULL, xml_text(reason));
            if (r->password && *r->password) xml_add_child_text(m->arena, ux, "password", NULL, r->password);
            send_tree(m, msg, ifull);
        }
        return;
    }
    const xml_node *dec = xml_child(x, "decline", NS_MUC_USER);
    if (dec) {
        const char *to = xml_attr_get(dec, "to");
        if (!to || jid_parse(to, &m->fj) < 0) { send_error(m, st, "modify", "jid-malformed", r->jid); return; }
        char dfull[JID_MAX];
        jid_full(&m->fj, dfull, sizeof dfull);
        xml_node *msg = xml_node_new(m->arena, "message", XML_NS_CLIENT);
        if (!msg) return;
        xml_set_attr(m->arena, msg, "from", r->jid);
        xml_node *ux = xml_add_child(m->arena, msg, "x", NS_MUC_USER);
        xml_node *d = xml_add_child(m->arena, ux, "decline", NULL);
        xml_set_attr(m->arena, d, "from", m->bare);
        const xml_node *reason = xml_child(dec, "reason", NS_MUC_USER);
        if (reason) xml_add_child_text(m->arena, d, "reason", NULL, xml_text(reason));
        send_tree(m, msg, dfull);
        return;
    }
    send_error(m, st, "modify", "bad-request", r->jid);
}

static void handle_groupchat(muc_service *m, room *r, occupant *o, const xml_node *st)
{
    if (!o) { send_error(m, st, "modify", "not-acceptable", r->jid); return; }
    if (o->role < ROLE_PARTICIPANT) { send_error(m, st, "auth", "forbidden", r->jid); return; }
    const xml_node *body = xml_child(st, "body", XML_NS_CLIENT);
    const xml_node *subj = xml_child(st, "subject", XML_NS_CLIENT);
    if (subj && !body) {
        if (!r->changesubject && o->role != ROLE_MODERATOR) { send_error(m, st, "auth", "forbidden", r->jid); return; }
        const char *t = xml_text(subj);
        char *ns = *t ? xstrdup(t) : NULL, *nn = xstrdup(o->nick);
        if ((*t && !ns) || !nn) { free(ns); free(nn); send_error(m, st, "wait", "resource-constraint", r->jid); return; }
        free(r->subject); free(r->subject_nick);
        r->subject = ns;
        r->subject_nick = nn;
        room_save(m, r);
    }
    xml_node *copy = xml_copy(m->arena, st);
    if (!copy) return;
    char from[JID_MAX * 2];
    snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
    xml_set_attr(m->arena, copy, "from", from);
    xml_set_attr(m->arena, copy, "to", NULL);
    enc_tree(&m->e[0], copy);
    if (body) {
        char stamp[32];
        fmt_stamp(stamp, sizeof stamp, time(NULL));
        xml_node *d = xml_add_child(m->arena, copy, "delay", NS_DELAY);
        if (d) {
            xml_set_attr(m->arena, d, "from", r->jid);
            xml_set_attr(m->arena, d, "stamp", stamp);
            enc_tree(&m->hist, copy);
            history_add(m, r, &m->hist);
        }
    }
    broadcast_enc(m, r, &m->e[0]);
}

static void handle_private(muc_service *m, room *r, occupant *o, const xml_node *st, const char *nick)
{
    if (!o) { send_error(m, st, "modify", "not-acceptable", r->jid); return; }
    int allowed = r->allowpm == PM_ANYONE || (r->allowpm == PM_PARTICIPANTS && o->role >= ROLE_PARTICIPANT) ||
                  (r->allowpm == PM_MODERATORS && o->role == ROLE_MODERATOR);
    if (!allowed) { send_error(m, st, "cancel", "not-allowed", r->jid); return; }
    occupant *t = find_nick(r, nick);
    if (!t) { send_error(m, st, "cancel", "item-not-found", r->jid); return; }
    xml_node *copy = xml_copy(m->arena, st);
    if (!copy) return;
    char from[JID_MAX * 2];
    snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
    xml_set_attr(m->arena, copy, "from", from);
    xml_set_attr(m->arena, copy, "to", NULL);
    if (!xml_child(copy, "x", NS_MUC_USER)) xml_add_child(m->arena, copy, "x", NS_MUC_USER);
    enc_tree(&m->e[0], copy);
    send_occupant(m, r, t, &m->e[0]);
}

static void handle_message(muc_service *m, room *r, const xml_node *st, const char *nick)
{
    const char *type = xml_attr_get(st, "type");
    if (type && !strcmp(type, "error")) return;
    if (!r) { send_error(m, st, "cancel", "item-not-found", NULL); return; }
    session *s = find_session(r, m->from);
    occupant *o = s ? s->occ : NULL;
    if (*nick) {
        if (type && !strcmp(type, "groupchat")) { send_error(m, st, "modify", "bad-request", r->jid); return; }
        handle_private(m, r, o, st, nick);
        return;
    }
    if (type && !strcmp(type, "groupchat")) { handle_groupchat(m, r, o, st); return; }
    const xml_node *x = xml_child(st, "x", NS_MUC_USER);
    if (x) { handle_invites(m, r, o, st, x); return; }
    send_error(m, st, "modify", "bad-request", r->jid);
}

/* ------------------------------------------------------------------ data forms */

static xml_node *form_field(muc_service *m, xml_node *x, const char *var, const char *type, const char *label,
                            const char *value)
{
    xml_node *f = xml_add_child(m->arena, x, "field", NULL);
    if (!f) return NULL;
    xml_set_attr(m->arena, f, "var", var);
    if (type) xml_set_attr(m->arena, f, "type", type);
    if (label) xml_set_attr(m->arena, f, "label", label);
    if (value) xml_add_child_text(m->arena, f, "value", NULL, value);
    return f;
}

static void form_option(muc_service *m, xml_node *f, const char *label, const char *value)
{
    xml_node *o = xml_add_child(m->arena, f, "option", NULL);
    if (!o) return;
    xml_set_attr(m->arena, o, "label", label);
    xml_add_child_text(m->arena, o, "value", NULL, value);
}

static const char *bstr(int b) { return b ? "1" : "0"; }

static xml_node *config_form(muc_service *m, room *r)
{
    xml_node *x = xml_node_new(m->arena, "x", NS_XDATA);
    char num[3][16];
    if (!x) return NULL;
    xml_set_attr(m->arena, x, "type", "form");
    xml_add_child_text(m->arena, x, "title", NULL, "Room configuration");
    form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_CONFIG);
    form_field(m, x, "muc#roomconfig_roomname", "text-single", "Title", r->title ? r->title : "");
    form_field(m, x, "muc#roomconfig_roomdesc", "text-single", "Description", r->desc ? r->desc : "");
    form_field(m, x, "muc#roomconfig_lang", "text-single", "Language", r->lang ? r->lang : "");
    form_field(m, x, "muc#roomconfig_persistentroom", "boolean", "Persistent", bstr(r->persistent));
    form_field(m, x, "muc#roomconfig_publicroom", "boolean", "Listed in the directory", bstr(r->public_room));
    form_field(m, x, "muc#roomconfig_changesubject", "boolean", "Occupants may change the subject", bstr(r->changesubject));
    form_field(m, x, "muc#roomconfig_allowinvites", "boolean", "Occupants may invite", bstr(r->allowinvites));
    xml_node *f = form_field(m, x, "muc#roomconfig_allowpm", "list-single", "Who may send private messages",
                             pm_names[r->allowpm]);
    if (f) {
        form_option(m, f, "Anyone", "anyone");
        form_option(m, f, "Participants", "participants");
        form_option(m, f, "Moderators", "moderators");
        form_option(m, f, "Nobody", "none");
    }
    form_field(m, x, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected",
               bstr(r->password && *r->password));
    form_field(m, x, "muc#roomconfig_roomsecret", "text-private", "Password", r->password ? r->password : "");
    form_field(m, x, "muc#roomconfig_membersonly", "boolean", "Members only", bstr(r->membersonly));
    form_field(m, x, "muc#roomconfig_moderatedroom", "boolean", "Moderated", bstr(r->moderated));
    f = form_field(m, x, "muc#roomconfig_whois", "list-single", "Who may see real JIDs",
                   r->whois_anyone ? "anyone" : "moderators");
    if (f) { form_option(m, f, "Moderators", "moderators"); form_option(m, f, "Anyone", "anyone"); }
    f = form_field(m, x, "muc#roomconfig_getmemberlist", "list-multi", "Roles that may see the member list", NULL);
    if (f) {
        for (int i = ROLE_VISITOR; i <= ROLE_MODERATOR; i++)
            if (r->memberlist_roles & (1u << i)) xml_add_child_text(m->arena, f, "value", NULL, role_names[i]);
        for (int i = ROLE_MODERATOR; i >= ROLE_VISITOR; i--) form_option(m, f, role_names[i], role_names[i]);
    }
    snprintf(num[0], sizeof num[0], "%d", r->maxusers);
    snprintf(num[1], sizeof num[1], "%d", r->histlen);
    snprintf(num[2], sizeof num[2], "%d", r->defhist);
    form_field(m, x, "muc#roomconfig_maxusers", "text-single", "Maximum occupants", num[0]);
    form_field(m, x, "muc#roomconfig_historylength", "text-single", "Messages kept in history", num[1]);
    form_field(m, x, "muc#roomconfig_defaulthistorymessages", "text-single", "Messages sent on joining", num[2]);
    return x;
}

/* the first <value/> of a field, "" when none */
static const char *field_value(const xml_node *f)
{
    const xml_node *v = xml_child(f, "value", NS_XDATA);
    return v ? xml_text(v) : "";
}

typedef struct room_settings {
    const char *title, *desc, *lang, *secret;
    int persistent, public_room, changesubject, allowinvites, allowpm, pwprotected, membersonly, moderated,
        whois_anyone, memberlist_roles, maxusers, histlen, defhist;
} room_settings;

/* validates a submitted form into s (fields not given stay -1/NULL); NULL or the error condition */
static const char *config_parse(muc_service *m, const room *r, const xml_node *x, room_settings *s)
{
    memset(s, 0, sizeof *s);
    int *ints[] = { &s->persistent, &s->public_room, &s->changesubject, &s->allowinvites, &s->allowpm,
                    &s->pwprotected, &s->membersonly, &s->moderated, &s->whois_anyone, &s->memberlist_roles,
                    &s->maxusers, &s->histlen, &s->defhist };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) *ints[i] = -1;
    static const char *const bools[] = { "persistentroom", "publicroom", "changesubject", "allowinvites", NULL,
                                         "passwordprotectedroom", "membersonly", "moderatedroom" };
    for (const xml_node *f = xml_child(x, "field", NS_XDATA); f; f = xml_next_child(f, "field", NS_XDATA)) {
        const char *var = xml_attr_get(f, "var"), *v = field_value(f);
        if (!var) return "bad-request";
        if (!strcmp(var, "FORM_TYPE")) {
            if (*v && strcmp(v, FORM_CONFIG)) return "bad-request";
            continue;
        }
        if (strncmp(var, "muc#roomconfig_", 15)) continue;
        const char *k = var + 15;
        int bi = -1;
        for (int i = 0; i < 8; i++) if (bools[i] && !strcmp(k, bools[i])) bi = i;
        if (bi >= 0) {
            int b = parse_bool(v);
            if (b < 0) return "bad-request";
            *ints[bi] = b;
        } else if (!strcmp(k, "roomname")) s->title = v;
        else if (!strcmp(k, "roomdesc")) s->desc = v;
        else if (!strcmp(k, "lang")) s->lang = v;
        else if (!strcmp(k, "roomsecret")) s->secret = v;
        else if (!strcmp(k, "allowpm")) {
            if ((s->allowpm = str_in(v, pm_names, 4)) < 0) return "bad-request";
        } else if (!strcmp(k, "whois")) {
            if (!strcmp(v, "anyone")) s->whois_anyone = 1;
            else if (!strcmp(v, "moderators")) s->whois_anyone = 0;
            else return "bad-request";
        } else if (!strcmp(k, "getmemberlist")) {
            s->memberlist_roles = 0;
            for (const xml_node *vv = xml_child(f, "value", NS_XDATA); vv; vv = xml_next_child(vv, "value", NS_XDATA)) {
                int ro = str_in(xml_text(vv), role_names, 4);
                if (ro <= ROLE_NONE) return "bad-request";
                s->memberlist_roles |= 1 << ro;
            }
        } else if (!strcmp(k, "maxusers")) {
            long n = *v ? parse_uint(v) : (m->cfg.max_occupants > 0 ? m->cfg.max_occupants : 0);
            if (n < 0) return "bad-request";
            if ((n == 0 && m->cfg.max_occupants > 0) || (m->cfg.max_occupants > 0 && n > m->cfg.max_occupants))
                return "not-acceptable";
            s->maxusers = (int)n;
        } else if (!strcmp(k, "historylength") || !strcmp(k, "defaulthistorymessages")) {
            long n = parse_uint(v);
            if (n < 0) return "bad-request";
            if (n > m->cfg.max_history) return "not-acceptable";
            if (k[0] == 'h') s->histlen = (int)n; else s->defhist = (int)n;
        }
    }
    (void)r;
    return NULL;
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
    for (occupant *q = r->first; q; q = q->next) {
        enc_presence(&m->tmp, r, q, &p, 0, 0);
        send_occupant(m, r, q, &m->tmp);
    }
    if (r->persistent) room_unsave(m, r);
    r->destroyed = 1;
    m->touched = r;
}

static void config_apply(muc_service *m, room *r, const xml_node *st, const room_settings *s)
{
    int was_anyone = r->whois_anyone, was_members = r->membersonly, was_persistent = r->persistent, changed = 0;
    const char *strs[] = { s->title, s->desc, s->lang };
    char **fields[] = { &r->title, &r->desc, &r->lang };
    for (int i = 0; i < 3; i++) {
        const char *v = strs[i];
        if (!v) continue;
        if (strcmp(v, *fields[i] ? *fields[i] : "")) { changed = 1; if (*v) set_str(fields[i], v); else { free(*fields[i]); *fields[i] = NULL; } }
    }
    const char *secret = s->secret;
    if (s->pwprotected == 0) secret = "";
    if (secret && strcmp(secret, r->password ? r->password : "")) {
        changed = 1;
        if (*secret) set_str(&r->password, secret); else { free(r->password); r->password = NULL; }
    }
    int v;
#define APPLY(field, val) do { if ((v = (val)) >= 0 && v != (int)(field)) { (field) = v; changed = 1; } } while (0)
    APPLY(r->persistent, s->persistent);
    APPLY(r->public_room, s->public_room);
    APPLY(r->changesubject, s->changesubject);
    APPLY(r->allowinvites, s->allowinvites);
    APPLY(r->allowpm, s->allowpm);
    APPLY(r->membersonly, s->membersonly);
    APPLY(r->moderated, s->moderated);
    APPLY(r->whois_anyone, s->whois_anyone);
    APPLY(r->memberlist_roles, s->memberlist_roles);
    APPLY(r->maxusers, s->maxusers);
    APPLY(r->histlen, s->histlen);
    APPLY(r->defhist, s->defhist);
#undef APPLY
    if (r->persistent) room_save(m, r);
    else if (was_persistent) room_unsave(m, r);
    send_result(m, st, NULL);
    if (changed) {
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
    if (r->membersonly && !was_members) {
        occupant *q = r->first;
        while (q) {
            occupant *nx = q->next;
            if (q->aff < AFF_MEMBER) occupant_remove(m, r, q, 322, NULL, NULL);
            q = nx;
        }
    }
    m->touched = r;
}

static void handle_owner(muc_service *m, room *r, const xml_node *st, const xml_node *q, int aff)
{
    const char *type = xml_attr_get(st, "type");
    if (aff != AFF_OWNER) { send_error(m, st, "auth", "forbidden", r->jid); return; }
    if (!strcmp(type, "get")) {
        xml_node *rq = xml_node_new(m->arena, "query", NS_MUC_OWNER);
        xml_node *x = config_form(m, r);
        if (!rq || !x) return;
        xml_append_child(rq, x);
        send_result(m, st, rq);
        return;
    }
    const xml_node *d = xml_child(q, "destroy", NS_MUC_OWNER);
    if (d) {
        const xml_node *reason = xml_child(d, "reason", NS_MUC_OWNER);
        room_destroy(m, r, xml_attr_get(d, "jid"), reason ? xml_text(reason) : NULL);
        send_result(m, st, NULL);
        return;
    }
    const xml_node *x = xml_child(q, "x", NS_XDATA);
    if (!x) { send_error(m, st, "modify", "bad-request", r->jid); return; }
    const char *ftype = xml_attr_get(x, "type");
    if (ftype && !strcmp(ftype, "cancel")) { send_result(m, st, NULL); return; }
    if (!ftype || strcmp(ftype, "submit")) { send_error(m, st, "modify", "bad-request", r->jid); return; }
    room_settings s;
    const char *cond = config_parse(m, r, x, &s);
    if (cond) { send_error(m, st, "modify", cond, r->jid); return; }
    config_apply(m, r, st, &s);
}

/* ------------------------------------------------------------------ admin: affiliations and roles */

static void announce_affiliation(muc_service *m, room *r, const char *bare, int aff, const char *reason)
{
    xml_node *msg = xml_node_new(m->arena, "message", XML_NS_CLIENT);
    if (!msg) return;
    xml_set_attr(m->arena, msg, "from", r->jid);
    xml_node *x = xml_add_child(m->arena, msg, "x", NS_MUC_USER);
    xml_node *it = xml_add_child(m->arena, x, "item", NULL);
    if (!it) return;
    xml_set_attr(m->arena, it, "jid", bare);
    xml_set_attr(m->arena, it, "affiliation", aff_names[aff]);
    if (reason) xml_add_child_text(m->arena, it, "reason", NULL, reason);
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
    int aff, role;
    const char *reason;
} admin_change;

static void apply_affiliation(muc_service *m, room *r, occupant *actor, admin_change *c)
{
    if (set_aff(r, c->bare, c->aff, NULL) < 0) return;   /* NULL: a reserved nick is kept */
    int found = 0;
    /* a copy: the actor may be removed by this very change (an owner outcasting their own JID) */
    char an_buf[JID_PART_MAX + 1];
    const char *an = actor ? (snprintf(an_buf, sizeof an_buf, "%s", actor->nick), an_buf) : NULL;
    occupant *q = r->first;
    while (q) {
        occupant *nx = q->next;
        if (!strcmp(q->bare, c->bare)) {
            int eff = effective_aff(m, r, q->bare);
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

static void apply_role(muc_service *m, room *r, occupant *actor, admin_change *c)
{
    occupant *q = c->target;
    /* a copy: the actor may be removed by this very change (an owner outcasting their own JID) */
    char an_buf[JID_PART_MAX + 1];
    const char *an = actor ? (snprintf(an_buf, sizeof an_buf, "%s", actor->nick), an_buf) : NULL;
    if (c->role == ROLE_NONE) { occupant_remove(m, r, q, 307, an, c->reason); return; }
    q->role = (unsigned char)c->role;
    pres_spec p = current_spec(q);
    p.actor = an;
    p.reason = c->reason;
    broadcast_presence(m, r, q, &p, 1);
}

static void admin_list(muc_service *m, room *r, const xml_node *st, const xml_node *item, int aff, occupant *o)
{
    const char *as = xml_attr_get(item, "affiliation"), *rs = xml_attr_get(item, "role");
    xml_node *rq = xml_node_new(m->arena, "query", NS_MUC_ADMIN);
    if (!rq) return;
    if (as) {
        int a = str_in(as, aff_names, 5);
        if (a < 0 || a == AFF_NONE) { send_error(m, st, "modify", "bad-request", r->jid); return; }
        int may = aff >= AFF_ADMIN || (a == AFF_MEMBER && o && (r->memberlist_roles & (1u << o->role)));
        if (!may) { send_error(m, st, "auth", "forbidden", r->jid); return; }
        for (size_t i = 0; i < r->naffs; i++) {
            if (r->affs[i].aff != a) continue;
            xml_node *it = xml_add_child(m->arena, rq, "item", NULL);
            if (!it) return;
            xml_set_attr(m->arena, it, "affiliation", as);
            xml_set_attr(m->arena, it, "jid", r->affs[i].jid);
            if (r->affs[i].nick) xml_set_attr(m->arena, it, "nick", r->affs[i].nick);
        }
    } else if (rs) {
        int ro = str_in(rs, role_names, 4);
        if (ro <= ROLE_NONE) { send_error(m, st, "modify", "bad-request", r->jid); return; }
        if (!o || o->role != ROLE_MODERATOR) { send_error(m, st, "auth", "forbidden", r->jid); return; }
        for (occupant *q = r->first; q; q = q->next) {
            if (q->role != ro) continue;
            xml_node *it = xml_add_child(m->arena, rq, "item", NULL);
            if (!it) return;
            xml_set_attr(m->arena, it, "affiliation", aff_names[q->aff]);
            xml_set_attr(m->arena, it, "jid", q->sessions->jid);
            xml_set_attr(m->arena, it, "nick", q->nick);
            xml_set_attr(m->arena, it, "role", rs);
        }
    } else { send_error(m, st, "modify", "bad-request", r->jid); return; }
    send_result(m, st, rq);
}

/* checks one change against XEP-0045's permission rules; NULL or "type condition" */
static const char *admin_check(muc_service *m, room *r, const xml_node *it, int aff, occupant *o, admin_change *c)
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
        if (j) {
            if (jid_parse(j, &m->fj) < 0) return "modify jid-malformed";
            jid_bare(&m->fj, c->bare, sizeof c->bare);
        } else if (nick) {
            occupant *t = find_nick(r, nick);
            if (!t) return "cancel item-not-found";
            snprintf(c->bare, sizeof c->bare, "%s", t->bare);
        } else return "modify bad-request";
        if (aff < AFF_ADMIN) return "auth forbidden";
        int cur = room_aff(r, c->bare);
        if (aff == AFF_ADMIN) {
            if (c->aff >= AFF_ADMIN) return "auth forbidden";
            if (cur >= AFF_ADMIN) return "cancel not-allowed";
        }
        return NULL;
    }
    if (!rs || !nick) return "modify bad-request";
    if ((c->role = str_in(rs, role_names, 4)) < 0) return "modify bad-request";
    if (!o || o->role != ROLE_MODERATOR) return "auth forbidden";
    c->target = find_nick(r, nick);
    if (!c->target) return "cancel item-not-found";
    int taff = c->target->aff;
    if (c->role == ROLE_MODERATOR || c->target->role == ROLE_MODERATOR) {
        if (aff < AFF_ADMIN) return "auth forbidden";
    }
    if (c->role < ROLE_MODERATOR && taff >= AFF_ADMIN && c->target != o) return "cancel not-allowed";
    if (c->role < ROLE_MODERATOR && taff > aff) return "cancel not-allowed";
    return NULL;
}

static void handle_admin(muc_service *m, room *r, const xml_node *st, const xml_node *q, int aff, occupant *o)
{
    const char *type = xml_attr_get(st, "type");
    const xml_node *first = xml_child(q, "item", NS_MUC_ADMIN);
    if (!first) { send_error(m, st, "modify", "bad-request", r->jid); return; }
    if (!strcmp(type, "get")) { admin_list(m, r, st, first, aff, o); return; }
    size_t n = 0;
    for (const xml_node *it = first; it; it = xml_next_child(it, "item", NS_MUC_ADMIN)) n++;
    if (n > 256) { send_error(m, st, "modify", "not-acceptable", r->jid); return; }
    admin_change *cs = xml_arena_alloc(m->arena, n * sizeof *cs);
    if (!cs) return;
    size_t i = 0;
    for (const xml_node *it = first; it; it = xml_next_child(it, "item", NS_MUC_ADMIN), i++) {
        const char *err = admin_check(m, r, it, aff, o, &cs[i]);
        if (err) {
            char et[16];
            const char *sp = strchr(err, ' ');
            snprintf(et, sizeof et, "%.*s", (int)(sp - err), err);
            send_error(m, st, et, sp + 1, r->jid);
            return;
        }
    }
    /* the last owner may not go: count owners as they would be after every change */
    int owners = count_owners(r), touched_owner = 0;
    for (i = 0; i < n; i++) {
        if (cs[i].aff < 0) continue;
        int cur = room_aff(r, cs[i].bare);
        if (cur == AFF_OWNER && cs[i].aff != AFF_OWNER) { owners--; touched_owner = 1; }
        if (cur != AFF_OWNER && cs[i].aff == AFF_OWNER) owners++;
    }
    if (touched_owner && owners < 1) { send_error(m, st, "cancel", "conflict", r->jid); return; }
    int aff_changed = 0;
    for (i = 0; i < n; i++) {
        if (cs[i].aff >= 0) { apply_affiliation(m, r, o, &cs[i]); aff_changed = 1; }
        else {
            /* the target may have been removed by an earlier item */
            if (!find_nick(r, xml_attr_get(cs[i].item, "nick"))) continue;
            cs[i].target = find_nick(r, xml_attr_get(cs[i].item, "nick"));
            apply_role(m, r, o, &cs[i]);
        }
        if (o && !find_session(r, m->from)) o = NULL;
    }
    if (aff_changed) room_save(m, r);
    send_result(m, st, NULL);
    m->touched = r;
}

/* ------------------------------------------------------------------ disco, registration, forwarding */

static void add_feature(muc_service *m, xml_node *q, const char *var)
{
    xml_node *f = xml_add_child(m->arena, q, "feature", NULL);
    if (f) xml_set_attr(m->arena, f, "var", var);
}

static xml_node *add_identity(muc_service *m, xml_node *q, const char *name)
{
    xml_node *id = xml_add_child(m->arena, q, "identity", NULL);
    if (!id) return NULL;
    xml_set_attr(m->arena, id, "category", "conference");
    if (name) xml_set_attr(m->arena, id, "name", name);
    xml_set_attr(m->arena, id, "type", "text");
    return id;
}

static const char *room_title(const room *r, char *buf, size_t n)
{
    if (r->title && *r->title) return r->title;
    snprintf(buf, n, "%.*s", (int)(strchr(r->jid, '@') - r->jid), r->jid);
    return buf;
}

static void room_disco_info(muc_service *m, room *r, const xml_node *st, const xml_node *q)
{
    const char *node = xml_attr_get(q, "node");
    xml_node *rq = xml_node_new(m->arena, "query", NS_DISCO_INFO);
    if (!rq) return;
    if (node) {
        if (strcmp(node, NODE_ROOMUSER)) { send_error(m, st, "cancel", "item-not-found", r->jid); return; }
        xml_set_attr(m->arena, rq, "node", node);
        aff_entry *e = room_aff_entry(r, m->bare);
        if (e && e->nick) add_identity(m, rq, e->nick);
        send_result(m, st, rq);
        return;
    }
    char tb[JID_PART_MAX + 1], num[16];
    add_identity(m, rq, room_title(r, tb, sizeof tb));
    add_feature(m, rq, NS_MUC);
    add_feature(m, rq, r->password && *r->password ? "muc_passwordprotected" : "muc_unsecured");
    add_feature(m, rq, r->membersonly ? "muc_membersonly" : "muc_open");
    add_feature(m, rq, r->moderated ? "muc_moderated" : "muc_unmoderated");
    add_feature(m, rq, r->persistent ? "muc_persistent" : "muc_temporary");
    add_feature(m, rq, r->public_room ? "muc_public" : "muc_hidden");
    add_feature(m, rq, r->whois_anyone ? "muc_nonanonymous" : "muc_semianonymous");
    xml_node *x = xml_add_child(m->arena, rq, "x", NS_XDATA);
    if (!x) return;
    xml_set_attr(m->arena, x, "type", "result");
    form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_INFO);
    form_field(m, x, "muc#roominfo_description", NULL, "Description", r->desc ? r->desc : "");
    form_field(m, x, "muc#roominfo_subject", NULL, "Subject", r->subject ? r->subject : "");
    snprintf(num, sizeof num, "%u", r->noccupants);
    form_field(m, x, "muc#roominfo_occupants", NULL, "Occupants", num);
    if (r->lang) form_field(m, x, "muc#roominfo_lang", NULL, "Language", r->lang);
    send_result(m, st, rq);
}

static void room_disco_items(muc_service *m, room *r, const xml_node *st)
{
    xml_node *rq = xml_node_new(m->arena, "query", NS_DISCO_ITEMS);
    if (!rq) return;
    if (r->whois_anyone) {
        for (occupant *q = r->first; q; q = q->next) {
            xml_node *it = xml_add_child(m->arena, rq, "item", NULL);
            char j[JID_MAX * 2];
            if (!it) return;
            snprintf(j, sizeof j, "%s/%s", r->jid, q->nick);
            xml_set_attr(m->arena, it, "jid", j);
            xml_set_attr(m->arena, it, "name", q->nick);
        }
    }
    send_result(m, st, rq);
}

static void handle_register(muc_service *m, room *r, const xml_node *st, const xml_node *q, int aff)
{
    const char *type = xml_attr_get(st, "type");
    aff_entry *e = room_aff_entry(r, m->bare);
    if (aff == AFF_OUTCAST) { send_error(m, st, "auth", "forbidden", r->jid); return; }
    if (!strcmp(type, "get")) {
        xml_node *rq = xml_node_new(m->arena, "query", NS_REGISTER);
        if (!rq) return;
        if (e && e->nick) {
            xml_add_child(m->arena, rq, "registered", NULL);
            xml_add_child_text(m->arena, rq, "username", NULL, e->nick);
        } else {
            xml_add_child_text(m->arena, rq, "instructions", NULL, "Choose a nickname to register in this room");
            xml_node *x = xml_add_child(m->arena, rq, "x", NS_XDATA);
            if (!x) return;
            xml_set_attr(m->arena, x, "type", "form");
            form_field(m, x, "FORM_TYPE", "hidden", NULL, FORM_REGISTER);
            xml_node *f = form_field(m, x, "muc#register_roomnick", "text-single", "Nickname", NULL);
            if (f) xml_add_child(m->arena, f, "required", NULL);
        }
        send_result(m, st, rq);
        return;
    }
    if (xml_child(q, "remove", NS_REGISTER)) {
        if (e && e->nick) { free(e->nick); e->nick = NULL; room_save(m, r); }
        send_result(m, st, NULL);
        return;
    }
    const xml_node *x = xml_child(q, "x", NS_XDATA);
    const char *nick = NULL;
    for (const xml_node *f = x ? xml_child(x, "field", NS_XDATA) : NULL; f; f = xml_next_child(f, "field", NS_XDATA)) {
        const char *var = xml_attr_get(f, "var");
        if (var && !strcmp(var, "muc#register_roomnick")) nick = field_value(f);
    }
    if (!nick) { send_error(m, st, "modify", "bad-request", r->jid); return; }
    if (!jid_resource_valid(nick)) { send_error(m, st, "modify", "jid-malformed", r->jid); return; }
    if (r->membersonly && aff < AFF_MEMBER) { send_error(m, st, "cancel", "not-allowed", r->jid); return; }
    const char *holder = reserved_nick_owner(r, nick);
    occupant *t = find_nick(r, nick);
    if ((holder && strcmp(holder, m->bare)) || (t && strcmp(t->bare, m->bare))) {
        send_error(m, st, "cancel", "conflict", r->jid);
        return;
    }
    int cur = room_aff(r, m->bare);
    if (set_aff(r, m->bare, cur < AFF_MEMBER ? AFF_MEMBER : cur, nick) < 0) {
        send_error(m, st, "wait", "resource-constraint", r->jid);
        return;
    }
    room_save(m, r);
    send_result(m, st, NULL);
    if (cur < AFF_MEMBER) {
        admin_change c;
        memset(&c, 0, sizeof c);
        snprintf(c.bare, sizeof c.bare, "%s", m->bare);
        c.aff = AFF_MEMBER;
        c.role = -1;
        /* already recorded; tell occupants of the user's new affiliation */
        occupant *q2 = r->first;
        int found = 0;
        for (; q2; q2 = q2->next) {
            if (strcmp(q2->bare, m->bare)) continue;
            found = 1;
            q2->aff = (unsigned char)effective_aff(m, r, q2->bare);
            if (q2->role == ROLE_VISITOR) q2->role = ROLE_PARTICIPANT;
            pres_spec p = current_spec(q2);
            broadcast_presence(m, r, q2, &p, 1);
        }
        if (!found) announce_affiliation(m, r, m->bare, AFF_MEMBER, NULL);
    }
}

/* IQs between occupants: the id is replaced so that the answer can be routed back */
static void forward_iq(muc_service *m, room *r, occupant *o, const xml_node *st, const char *nick)
{
    const char *type = xml_attr_get(st, "type"), *id = xml_attr_get(st, "id");
    if (!strcmp(type, "result") || !strcmp(type, "error")) {
        if (!r->fwd || !id || !o) return;
        for (unsigned i = 0; i < FWD_SLOTS; i++) {
            fwd_iq *f = &r->fwd[i];
            if (!f->id || strcmp(f->id, id) || strcmp(f->target, m->from)) continue;
            xml_node *copy = xml_copy(m->arena, st);
            char from[JID_MAX * 2];
            if (!copy) return;
            snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
            xml_set_attr(m->arena, copy, "from", from);
            xml_set_attr(m->arena, copy, "to", NULL);
            xml_set_attr(m->arena, copy, "id", f->orig_id);
            send_tree(m, copy, f->orig_from);
            fwd_clear(f);
            return;
        }
        return;
    }
    if (!o) { send_error(m, st, "modify", "not-acceptable", r->jid); return; }
    occupant *t = find_nick(r, nick);
    if (!t) { send_error(m, st, "cancel", "item-not-found", r->jid); return; }
    if (t == o && xml_child(st, "ping", NS_PING)) { send_result(m, st, NULL); return; }   /* XEP-0410 */
    if (!id) { send_error(m, st, "modify", "bad-request", r->jid); return; }
    if (!r->fwd && !(r->fwd = calloc(FWD_SLOTS, sizeof *r->fwd))) {
        send_error(m, st, "wait", "resource-constraint", r->jid);
        return;
    }
    fwd_iq *f = &r->fwd[r->fwd_next++ % FWD_SLOTS];
    fwd_clear(f);
    char nid[32];
    snprintf(nid, sizeof nid, "muc%lu", ++m->fwd_counter);
    f->id = xstrdup(nid);
    f->orig_id = xstrdup(id);
    f->orig_from = xstrdup(m->from);
    f->target = xstrdup(t->sessions->jid);
    if (!f->id || !f->orig_id || !f->orig_from || !f->target) { fwd_clear(f); return; }
    xml_node *copy = xml_copy(m->arena, st);
    char from[JID_MAX * 2];
    if (!copy) return;
    snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
    xml_set_attr(m->arena, copy, "from", from);
    xml_set_attr(m->arena, copy, "to", NULL);
    xml_set_attr(m->arena, copy, "id", nid);
    enc_tree(&m->tmp, copy);
    send_session(m, r, t->sessions, &m->tmp);
}

static void handle_room_iq(muc_service *m, room *r, const xml_node *st, const char *nick)
{
    const char *type = xml_attr_get(st, "type");
    if (!type) { send_error(m, st, "modify", "bad-request", NULL); return; }
    int request = !strcmp(type, "get") || !strcmp(type, "set");
    if (!r) { if (request) send_error(m, st, "cancel", "item-not-found", NULL); return; }
    session *s = find_session(r, m->from);
    occupant *o = s ? s->occ : NULL;
    if (*nick) { forward_iq(m, r, o, st, nick); return; }
    if (!request) return;
    const xml_node *q = NULL;
    for (const xml_node *c = st->children; c; c = c->next) if (c->name) { q = c; break; }
    if (!q) { send_error(m, st, "modify", "bad-request", r->jid); return; }
    int get = !strcmp(type, "get"), aff = effective_aff(m, r, m->bare);
    if (get && !strcmp(q->name, "query") && !strcmp(q->ns, NS_DISCO_INFO)) room_disco_info(m, r, st, q);
    else if (get && !strcmp(q->name, "query") && !strcmp(q->ns, NS_DISCO_ITEMS)) room_disco_items(m, r, st);
    else if (!strcmp(q->name, "query") && !strcmp(q->ns, NS_MUC_OWNER)) handle_owner(m, r, st, q, aff);
    else if (!strcmp(q->name, "query") && !strcmp(q->ns, NS_MUC_ADMIN)) handle_admin(m, r, st, q, aff, o);
    else if (!strcmp(q->name, "query") && !strcmp(q->ns, NS_REGISTER)) handle_register(m, r, st, q, aff);
    else if (get && !strcmp(q->name, "ping") && !strcmp(q->ns, NS_PING)) send_result(m, st, NULL);
    else send_error(m, st, "cancel", "feature-not-implemented", r->jid);
}

static void handle_service_iq(muc_service *m, const xml_node *st)
{
    const char *type = xml_attr_get(st, "type");
    if (!type || (strcmp(type, "get") && strcmp(type, "set"))) return;
    const xml_node *q = NULL;
    for (const xml_node *c = st->children; c; c = c->next) if (c->name) { q = c; break; }
    if (!q || strcmp(type, "get") || strcmp(q->name, "query") || xml_attr_get(q, "node")) {
        if (q && !strcmp(q->ns, NS_PING) && !strcmp(type, "get")) { send_result(m, st, NULL); return; }
        send_error(m, st, "cancel", "service-unavailable", NULL);
        return;
    }
    if (!strcmp(q->ns, NS_DISCO_INFO)) {
        xml_node *rq = xml_node_new(m->arena, "query", NS_DISCO_INFO);
        if (!rq) return;
        add_identity(m, rq, "Chatrooms");
        add_feature(m, rq, NS_DISCO_INFO);
        add_feature(m, rq, NS_DISCO_ITEMS);
        add_feature(m, rq, NS_MUC);
        send_result(m, st, rq);
    } else if (!strcmp(q->ns, NS_DISCO_ITEMS)) {
        xml_node *rq = xml_node_new(m->arena, "query", NS_DISCO_ITEMS);
        if (!rq) return;
        char tb[JID_PART_MAX + 1];
        for (room *r = m->rooms; r; r = r->next) {
            if (!r->public_room || r->destroyed) continue;
            xml_node *it = xml_add_child(m->arena, rq, "item", NULL);
            if (!it) return;
            xml_set_attr(m->arena, it, "jid", r->jid);
            xml_set_attr(m->arena, it, "name", room_title(r, tb, sizeof tb));
        }
        send_result(m, st, rq);
    } else send_error(m, st, "cancel", "service-unavailable", NULL);
}

/* ------------------------------------------------------------------ entry points */

void muc_handle_stanza(muc_service *m, const xml_node *st)
{
    const char *from = xml_attr_get(st, "from"), *to = xml_attr_get(st, "to");
    if (!m || !st || !st->name || !from || !to) return;
    if (jid_parse(from, &m->fj) < 0 || jid_full(&m->fj, m->from, sizeof m->from) < 0 ||
        jid_bare(&m->fj, m->bare, sizeof m->bare) < 0) return;
    int is_iq = !strcmp(st->name, "iq"), is_msg = !strcmp(st->name, "message"),
        is_pres = !strcmp(st->name, "presence");
    if (!is_iq && !is_msg && !is_pres) return;
    if (jid_parse(to, &m->tj) < 0 || strcmp(m->tj.domain, m->domain)) {
        send_error(m, st, "modify", "jid-malformed", NULL);
        xml_arena_reset(m->arena);
        return;
    }
    m->touched = NULL;
    if (!m->tj.local[0]) {
        if (is_iq) handle_service_iq(m, st);
        else if (is_msg) send_error(m, st, "cancel", "service-unavailable", NULL);
    } else {
        char nick[JID_PART_MAX + 1];
        snprintf(nick, sizeof nick, "%s", m->tj.resource);
        room *r = find_room(m, m->tj.local);
        if (r) m->touched = r;
        if (is_pres) handle_presence(m, r, st, nick);
        else if (is_msg) handle_message(m, r, st, nick);
        else handle_room_iq(m, r, st, nick);
    }
    room *r = m->touched;
    if (r) {
        if (!r->destroyed) room_reap(m, r);
        if (r->destroyed || (!r->noccupants && !r->persistent)) room_unlink(m, r);
    }
    m->touched = NULL;
    xml_arena_reset(m->arena);
}

muc_service *muc_service_new(const muc_config *cfg, const muc_host *host, char *err, size_t errlen)
{
    if (!cfg || !host || !host->deliver || !cfg->domain || !cfg->data_dir) {
        snprintf(err, errlen, "muc: incomplete configuration");
        return NULL;
    }
    muc_service *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "muc: out of memory"); return NULL; }
    m->cfg = *cfg;
    m->host = *host;
    if (jid_parse(cfg->domain, &m->tj) < 0 || m->tj.local[0] || m->tj.resource[0]) {
        snprintf(err, errlen, "muc: bad domain '%s'", cfg->domain);
        free(m);
        return NULL;
    }
    m->domain = xstrdup(m->tj.domain);
    m->server_domain = xstrdup(cfg->server_domain ? cfg->server_domain : "");
    m->data_dir = xstrdup(cfg->data_dir);
    m->arena = xml_arena_new();
    for (int i = 0; i < 3; i++) xml_buf_init(&m->e[i].b);
    xml_buf_init(&m->tmp.b);
    xml_buf_init(&m->hist.b);
    m->cfg.domain = m->domain;
    m->cfg.server_domain = m->server_domain;
    m->cfg.data_dir = m->data_dir;
    if (m->cfg.max_history < 0) m->cfg.max_history = 0;
    if (!m->domain || !m->server_domain || !m->data_dir || !m->arena) {
        snprintf(err, errlen, "muc: out of memory");
        muc_service_free(m);
        return NULL;
    }
    if (rooms_load(m, err, errlen) < 0) { muc_service_free(m); return NULL; }
    return m;
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
