/* test_archive.c - the message archive (archive.c) in a scratch directory: appends and reopening, the
 * sequence, time and with filters, RSM paging in both directions against a brute-force model, the bound
 * and compaction, torn tails of every length, corruption in the middle, failed appends, and ids. The file
 * format is checked with a CRC-32 and a parser of the test's own. */
#include "archive.h"
#include "log.h"
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define REC_OVERHEAD 31         /* header 12, sequence 8, time 8, with length 2, the with string's NUL 1 */

static char dir[64];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static long long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

static int count_entries(const char *d)
{
    DIR *dp = opendir(d);
    int n = 0;
    struct dirent *e;
    if (!dp)
        return -1;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dp);
    return n;
}

/* ------------------------------------------------------------------ the test's own view of the format */

static uint32_t crc32_bitwise(const unsigned char *p, size_t len)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Walks the file as the format says; returns the number of records, -1 if anything is off. offs gets
 * each record's offset (up to noffs). */
static long file_records(const char *p, long long *offs, size_t noffs)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    static unsigned char buf[ARCHIVE_RECORD_MAX];
    long n = 0;
    long long off = 0;
    uint64_t prev = 0;
    for (;;) {
        size_t got = fread(buf, 1, 12, f);
        if (got == 0)
            break;
        if (got != 12 || memcmp(buf, "\xC7" "AR\x01", 4) != 0)
            goto bad;
        size_t body = (size_t)le(buf + 8, 4);
        if (body < 19 || body > sizeof buf - 12 || fread(buf + 12, 1, body, f) != body)
            goto bad;
        if (crc32_bitwise(buf + 8, body + 4) != le(buf + 4, 4))
            goto bad;
        uint64_t seq = le(buf + 12, 8);
        size_t wl = (size_t)le(buf + 28, 2);
        if (seq <= prev || wl + 19 > body || buf[30 + wl] != 0)
            goto bad;
        prev = seq;
        if ((size_t)n < noffs)
            offs[n] = off;
        n++;
        off += 12 + (long long)body;
    }
    fclose(f);
    return n;
bad:
    fclose(f);
    return -1;
}

/* ------------------------------------------------------------------ collecting what a query gives */

typedef struct got_rec { uint64_t seq; int64_t when; char *with, *data; size_t len; } got_rec;
typedef struct got { got_rec r[4096]; unsigned n; unsigned stop_after; int bad_nul; } got;

static int collect(void *ud, const archive_rec *r)
{
    got *g = ud;
    if (g->n < sizeof g->r / sizeof g->r[0]) {
        got_rec *o = &g->r[g->n];
        o->seq = r->seq;
        o->when = r->when;
        o->with = strndup(r->with, r->with_len);
        o->data = malloc(r->len + 1);
        memcpy(o->data, r->data, r->len + 1);
        o->len = r->len;
        if (r->with[r->with_len] != '\0' || r->data[r->len] != '\0')
            g->bad_nul = 1;
    }
    g->n++;
    return g->stop_after && g->n >= g->stop_after;
}

static void got_reset(got *g)
{
    unsigned n = g->n < sizeof g->r / sizeof g->r[0] ? g->n : sizeof g->r / sizeof g->r[0];
    for (unsigned i = 0; i < n; i++) {
        free(g->r[i].with);
        free(g->r[i].data);
    }
    g->n = 0;
    g->stop_after = 0;
    g->bad_nul = 0;
}

static got G;

static archive *open_ok(const char *p, unsigned max, int sync)
{
    char err[256] = "";
    archive *a = archive_open(p, max, sync, err, sizeof err);
    CHECK(a != NULL, "archive_open(%s): %s", p, err);
    return a;
}

/* appends n records: time base + i / per_second, with one of nwith occupants, a payload naming the index */
static void fill(archive *a, int n, int64_t base, int per_second, int nwith)
{
    for (int i = 0; i < n; i++) {
        char with[64], data[128];
        uint64_t seq = 0;
        snprintf(with, sizeof with, "room@muc.example/occupant%d", i % nwith);
        int len = snprintf(data, sizeof data, "<message type='groupchat'><body>%d</body></message>", i);
        int rc = archive_append(a, base + i / per_second, with, data, (size_t)len, &seq);
        if (rc != 0) {
            CHECK_INT(0, rc);
            return;
        }
    }
}

/* ------------------------------------------------------------------ tests */

static void test_crc_oracle(void)
{
    CHECK_INT(0xCBF43926u, crc32_bitwise((const unsigned char *)"123456789", 9));
}

static void test_ids(void)
{
    char id[ARCHIVE_ID_MAX];
    uint64_t v = 0;
    archive_id_format(1, id);
    CHECK_STR("0000000000000001", id);
    archive_id_format(UINT64_MAX, id);
    CHECK_STR("ffffffffffffffff", id);
    archive_id_format(0x0123456789abcdefull, id);
    CHECK_STR("0123456789abcdef", id);
    const uint64_t samples[] = { 0, 1, 9, 10, 255, 4096, 1234567890123ull, UINT64_MAX - 1, UINT64_MAX };
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        archive_id_format(samples[i], id);
        CHECK_INT(16, strlen(id));
        v = 12345;
        CHECK_INT(0, archive_id_parse(id, &v));
        CHECK(v == samples[i], "round trip of %" PRIu64 " gave %" PRIu64, samples[i], v);
    }
    const char *bad[] = { "", "1", "000000000000001", "00000000000000001", "000000000000000A", "000000000000000g",
                          " 000000000000001", "000000000000001 ", "+00000000000001a", "-00000000000001a",
                          "0x0000000000001a", ("00000000\0" "00000001"), "0000000000000001\n" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(archive_id_parse(bad[i], &v) == -1, "bad id '%s' was accepted", bad[i]);
    CHECK_INT(-1, archive_id_parse(NULL, &v));
}

static void test_append_reopen(void)
{
    char p[128];
    path_in(p, sizeof p, "basic.archive");
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_ALWAYS);
    if (!a)
        return;
    CHECK_INT(0, archive_count(a));
    CHECK_INT(1, archive_next_seq(a));
    CHECK(access(p, F_OK) != 0, "opening a missing archive created the file");
    CHECK_INT(0, archive_last(a, 10, collect, &G));

    uint64_t seq = 0;
    CHECK_INT(0, archive_append(a, 1000, "r@m/a", "<m>1</m>", 8, &seq));
    CHECK_INT(1, seq);
    CHECK_INT(0, archive_append(a, 1001, NULL, "", 0, &seq));   /* no with, empty payload */
    CHECK_INT(2, seq);
    CHECK_INT(0, archive_append(a, 1002, "r@m/\xc3\xa9", "bin\x01\xff", 5, NULL));
    CHECK_INT(3, archive_count(a));
    struct stat st;
    CHECK_INT(0, stat(p, &st));
    CHECK_INT(0600, st.st_mode & 0777);
    CHECK_INT(3 * REC_OVERHEAD + 5 + 8 + 0 + 0 + 6 + 5, st.st_size);
    archive_close(a);
    CHECK_INT(3, file_records(p, NULL, 0));

    a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    CHECK_INT(3, archive_count(a));
    CHECK_INT(4, archive_next_seq(a));
    CHECK_INT(3, archive_last(a, 10, collect, &G));
    CHECK_INT(3, G.n);
    CHECK_INT(1, G.r[0].seq);
    CHECK_INT(1000, G.r[0].when);
    CHECK_STR("r@m/a", G.r[0].with);
    CHECK_STR("<m>1</m>", G.r[0].data);
    CHECK_STR("", G.r[1].with);
    CHECK_INT(0, G.r[1].len);
    CHECK_STR("r@m/\xc3\xa9", G.r[2].with);
    CHECK(G.r[2].len == 5 && memcmp(G.r[2].data, "bin\x01\xff", 5) == 0, "binary payload differs");
    CHECK(!G.bad_nul, "with or data not NUL-terminated");
    got_reset(&G);
    CHECK_INT(2, archive_last(a, 2, collect, &G));
    CHECK_INT(2, G.r[0].seq);
    CHECK_INT(3, G.r[1].seq);
    got_reset(&G);
    CHECK_INT(0, archive_append(a, 1003, "x", "y", 1, &seq));
    CHECK_INT(4, seq);
    archive_close(a);
    a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (a)
        CHECK_INT(5, archive_next_seq(a));
    archive_close(a);
    CHECK_INT(0, archive_remove(p));
    CHECK_INT(0, archive_remove(p));            /* absent: fine */
    CHECK(access(p, F_OK) != 0, "archive_remove left the file");
}

static void test_clock_back_and_two_open(void)
{
    char p[128], q[128];
    path_in(p, sizeof p, "clock.archive");
    path_in(q, sizeof q, "other.archive");
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_NONE), *b = open_ok(q, 0, ARCHIVE_SYNC_NONE);
    if (!a || !b)
        return;
    uint64_t s1 = 0, s2 = 0;
    CHECK_INT(0, archive_append(a, 100, "w", "a", 1, &s1));
    CHECK_INT(0, archive_append(b, 500, "w", "b", 1, &s2));
    CHECK_INT(0, archive_append(a, 50, "w", "c", 1, &s1));      /* the clock went back */
    CHECK_INT(2, s1);
    CHECK_INT(1, s2);
    archive_page pg;
    archive_query qa = { 100, 100, NULL, 0, 0, 0, 0, 10 };
    CHECK_INT(2, archive_query_run(a, &qa, collect, &G, &pg));
    CHECK_INT(2, pg.count);
    CHECK_INT(100, G.r[1].when);
    got_reset(&G);
    CHECK_INT(1, archive_count(b));
    archive_close(a);
    archive_close(b);
    archive_remove(p);
    archive_remove(q);
}

/* the query as a brute-force model over everything the archive holds, compared with archive_query_run */
static int model_compare(archive *a, const archive_query *q, const got *all, const char *what)
{
    unsigned m[4096], nm = 0, r[4096], nr = 0, count = 0;
    int found_after = !q->has_after, found_before = !(q->has_before && q->before);
    for (unsigned i = 0; i < all->n; i++) {
        const got_rec *x = &all->r[i];
        if (q->has_after && x->seq == q->after)
            found_after = 1;
        if (q->has_before && q->before && x->seq == q->before)
            found_before = 1;
        if (x->when < q->start || x->when > q->end || (q->with && strcmp(q->with, x->with)))
            continue;
        m[nm++] = i;
        count++;
        if ((q->has_after && x->seq <= q->after) || (q->has_before && q->before && x->seq >= q->before))
            continue;
        r[nr++] = i;
    }
    archive_page pg;
    int rc = archive_query_run(a, q, collect, &G, &pg);
    int ok = 1;
    if (!found_after || !found_before) {
        ok = rc == -2 && G.n == 0;
        CHECK(ok, "%s: an unknown after/before gave %d", what, rc);
        got_reset(&G);
        return ok;
    }
    unsigned k = nr < q->max ? nr : q->max, first = q->has_before ? nr - k : 0;
    unsigned first_index = 0;
    for (unsigned i = 0; k && i < nm; i++)
        if (m[i] == r[first])
            first_index = i;
    ok = rc == (int)k && G.n == k && pg.count == count && pg.complete == (k == nr) &&
         pg.first == (k ? all->r[r[first]].seq : 0) && pg.last == (k ? all->r[r[first + k - 1]].seq : 0) &&
         (!k || pg.first_index == first_index);
    for (unsigned i = 0; ok && i < k; i++) {
        const got_rec *e = &all->r[r[first + i]], *g = &G.r[i];
        ok = e->seq == g->seq && e->when == g->when && !strcmp(e->with, g->with) && e->len == g->len &&
             !memcmp(e->data, g->data, e->len);
    }
    CHECK(ok, "%s: expected %u records (count %u, first_index %u, complete %d), got rc %d count %u "
          "first_index %u first %" PRIu64 " last %" PRIu64 " complete %d", what, k, count, first_index, k == nr, rc,
          pg.count, pg.first_index, pg.first, pg.last, pg.complete);
    got_reset(&G);
    return ok;
}

static void test_filters_and_paging(void)
{
    char p[128];
    path_in(p, sizeof p, "paging.archive");
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    fill(a, 100, 1000, 10, 3);          /* times 1000..1009, ten per second; occupants 0, 1, 2 in turn */
    archive_page pg;
    archive_query q = { INT64_MIN, INT64_MAX, NULL, 0, 0, 0, 0, 1000 };
    CHECK_INT(100, archive_query_run(a, &q, collect, &G, &pg));
    CHECK_INT(100, pg.count);
    CHECK_INT(1, pg.complete);
    got_reset(&G);

    /* time bounds are inclusive */
    q.start = 1002;
    q.end = 1004;
    CHECK_INT(30, archive_query_run(a, &q, collect, &G, &pg));
    CHECK_INT(30, pg.count);
    CHECK_INT(21, G.r[0].seq);
    CHECK_INT(50, G.r[29].seq);
    got_reset(&G);
    q.start = 1004;
    q.end = 1002;
    CHECK_INT(0, archive_query_run(a, &q, collect, &G, &pg));
    CHECK_INT(0, pg.count);
    q.start = 2000;
    q.end = INT64_MAX;
    CHECK_INT(0, archive_query_run(a, &q, collect, &G, &pg));

    /* with */
    q.start = INT64_MIN;
    q.with = "room@muc.example/occupant1";
    CHECK_INT(33, archive_query_run(a, &q, collect, &G, &pg));
    CHECK_INT(33, pg.count);
    CHECK_INT(2, G.r[0].seq);
    CHECK_STR("room@muc.example/occupant1", G.r[0].with);
    got_reset(&G);
    q.with = "room@muc.example/occupant";       /* a prefix is not a match */
    CHECK_INT(0, archive_query_run(a, &q, collect, &G, &pg));
    q.with = "room@muc.example/occupant2";
    q.start = 1003;
    q.end = 1003;
    CHECK_INT(3, archive_query_run(a, &q, collect, &G, &pg));   /* 30..39: occupant 2 at 33, 36, 39 */
    CHECK_INT(33, G.r[0].seq);
    got_reset(&G);

    /* forward paging, 10 at a time */
    archive_query f = { INT64_MIN, INT64_MAX, NULL, 0, 0, 0, 0, 10 };
    unsigned pages = 0, seen = 0;
    for (;;) {
        int rc = archive_query_run(a, &f, collect, &G, &pg);
        CHECK_INT(10, rc);
        CHECK_INT(100, pg.count);
        CHECK_INT(seen, pg.first_index);
        CHECK_INT(seen + 1, pg.first);
        CHECK_INT(seen + 10, pg.last);
        seen += G.n;
        pages++;
        got_reset(&G);
        if (pg.complete || pages > 20)
            break;
        CHECK_INT(0, pg.complete);
        f.has_after = 1;
        f.after = pg.last;
    }
    CHECK_INT(10, pages);
    CHECK_INT(100, seen);
    f.after = 100;                              /* after the last: an empty, complete page */
    CHECK_INT(0, archive_query_run(a, &f, collect, &G, &pg));
    CHECK_INT(1, pg.complete);
    CHECK_INT(0, pg.first);
    CHECK_INT(100, pg.count);

    /* backward paging from the end (<before/>) */
    archive_query b = { INT64_MIN, INT64_MAX, NULL, 0, 1, 0, 0, 30 };
    unsigned expect_first[] = { 71, 41, 11, 1 }, expect_n[] = { 30, 30, 30, 10 };
    for (int i = 0; i < 4; i++) {
        CHECK_INT(expect_n[i], archive_query_run(a, &b, collect, &G, &pg));
        CHECK_INT(expect_first[i], pg.first);
        CHECK_INT(expect_first[i] - 1, pg.first_index);
        CHECK_INT(expect_first[i] + expect_n[i] - 1, pg.last);
        CHECK_INT(i == 3, pg.complete);
        CHECK_INT(expect_first[i], G.n ? G.r[0].seq : 0);     /* chronological within the page */
        got_reset(&G);
        b.before = pg.first;
    }

    /* unknown ids */
    f.after = 101;
    CHECK_INT(-2, archive_query_run(a, &f, collect, &G, &pg));
    b.before = 555;
    CHECK_INT(-2, archive_query_run(a, &b, collect, &G, &pg));
    CHECK_INT(0, G.n);

    /* max 0: the count alone */
    archive_query c = { INT64_MIN, INT64_MAX, "room@muc.example/occupant0", 0, 0, 0, 0, 0 };
    CHECK_INT(0, archive_query_run(a, &c, collect, &G, &pg));
    CHECK_INT(34, pg.count);
    CHECK_INT(0, pg.complete);

    /* a callback that stops early */
    G.stop_after = 3;
    c.max = 10;
    CHECK_INT(3, archive_query_run(a, &c, collect, &G, &pg));
    got_reset(&G);

    /* everything against the model: random bounds, with, after/before, max */
    got all = { .n = 0 };
    CHECK_INT(100, archive_last(a, 1000, collect, &all));
    srand(7);
    const char *withs[] = { NULL, "room@muc.example/occupant0", "room@muc.example/occupant1",
                            "room@muc.example/occupant2", "nobody" };
    int fails = 0;
    for (int i = 0; i < 3000 && fails < 5; i++) {
        archive_query r = { INT64_MIN, INT64_MAX, withs[rand() % 5], 0, 0, 0, 0, (unsigned)(rand() % 15) };
        if (rand() % 2)
            r.start = 999 + rand() % 12;
        if (rand() % 2)
            r.end = 999 + rand() % 12;
        int dir_pick = rand() % 4;
        if (dir_pick == 1 || dir_pick == 3) {
            r.has_after = 1;
            r.after = (uint64_t)(rand() % 104);
        }
        if (dir_pick == 2 || dir_pick == 3) {
            r.has_before = 1;
            r.before = (uint64_t)(rand() % 104);
        }
        char what[64];
        snprintf(what, sizeof what, "random query %d", i);
        if (!model_compare(a, &r, &all, what))
            fails++;
    }
    got_reset(&all);
    archive_close(a);
    archive_remove(p);
}

/* paging with a with filter, both ways, all the way */
static void test_with_paging(void)
{
    char p[128];
    path_in(p, sizeof p, "withpage.archive");
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    fill(a, 200, 5000, 3, 4);                   /* 50 records for each occupant */
    const char *w = "room@muc.example/occupant3";
    archive_page pg;
    archive_query f = { INT64_MIN, INT64_MAX, w, 0, 0, 0, 0, 7 };
    unsigned seen = 0, pages = 0;
    uint64_t prev = 0;
    do {
        int rc = archive_query_run(a, &f, collect, &G, &pg);
        CHECK(rc >= 0 && rc <= 7, "page of %d", rc);
        CHECK_INT(50, pg.count);
        CHECK_INT(seen, pg.first_index);
        for (unsigned i = 0; i < G.n; i++) {
            CHECK(G.r[i].seq > prev && G.r[i].seq % 4 == 0, "seq %" PRIu64 " after %" PRIu64, G.r[i].seq, prev);
            prev = G.r[i].seq;
        }
        seen += G.n;
        got_reset(&G);
        f.has_after = 1;
        f.after = pg.last;
    } while (!pg.complete && ++pages < 20);
    CHECK_INT(50, seen);
    CHECK_INT(200, prev);

    archive_query b = { INT64_MIN, INT64_MAX, w, 0, 1, 0, 0, 7 };
    seen = 0;
    pages = 0;
    do {
        int rc = archive_query_run(a, &b, collect, &G, &pg);
        CHECK(rc >= 0 && rc <= 7, "page of %d", rc);
        CHECK_INT(50 - seen - G.n, pg.first_index);
        seen += G.n;
        got_reset(&G);
        b.before = pg.first;
    } while (!pg.complete && ++pages < 20);
    CHECK_INT(50, seen);
    CHECK_INT(4, pg.first);
    archive_close(a);
    archive_remove(p);
}

/* two different with strings with the same 32-bit hash: the filter must still tell them apart */
static void test_hash_collision(void)
{
    char p[128];
    path_in(p, sizeof p, "collide.archive");
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    const char *w1 = "room@muc/n649192", *w2 = "room@muc/n412789";   /* same FNV-1a hash */
    for (int i = 0; i < 10; i++)
        CHECK_INT(0, archive_append(a, 1, i % 3 ? w1 : w2, "x", 1, NULL));
    archive_page pg;
    archive_query q = { INT64_MIN, INT64_MAX, w2, 0, 0, 0, 0, 100 };
    CHECK_INT(4, archive_query_run(a, &q, collect, &G, &pg));
    CHECK_INT(4, pg.count);
    for (unsigned i = 0; i < G.n; i++)
        CHECK_STR(w2, G.r[i].with);
    got_reset(&G);
    q.with = w1;
    CHECK_INT(6, archive_query_run(a, &q, collect, &G, &pg));
    got_reset(&G);
    archive_close(a);
    archive_remove(p);
}

static void test_bound(void)
{
    char p[128], tmp[160];
    path_in(p, sizeof p, "bound.archive");
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    archive *a = open_ok(p, 20, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    long most = 0;
    for (int i = 0; i < 100; i++) {
        fill(a, 1, 100 + i, 1, 2);
        long n = file_records(p, NULL, 0);
        if (n > most)
            most = n;
        CHECK(n >= (i + 1 < 20 ? i + 1 : 20), "after %d appends the file holds %ld records", i + 1, n);
        CHECK_INT(i + 1 < 20 ? i + 1 : 20, archive_count(a));
    }
    CHECK_INT(20 + 16, most);           /* up to max + 16, never more */
    CHECK(access(tmp, F_OK) != 0, "compaction left %s", tmp);
    CHECK_INT(0, archive_last(a, 100, collect, &G) - 20);
    CHECK_INT(81, G.r[0].seq);
    CHECK_INT(100, G.r[19].seq);
    CHECK_INT(180, G.r[0].when);
    got_reset(&G);
    archive_close(a);

    /* across reopening: the same newest 20, the sequence goes on */
    a = open_ok(p, 20, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    CHECK_INT(20, archive_count(a));
    CHECK_INT(101, archive_next_seq(a));
    CHECK_INT(20, archive_last(a, 100, collect, &G));
    CHECK_INT(81, G.r[0].seq);
    got_reset(&G);
    archive_page pg;
    archive_query q = { INT64_MIN, INT64_MAX, NULL, 1, 0, 80, 0, 5 };
    CHECK_INT(-2, archive_query_run(a, &q, collect, &G, &pg));    /* dropped: no longer in the archive */
    q.after = 81;
    CHECK_INT(5, archive_query_run(a, &q, collect, &G, &pg));
    CHECK_INT(20, pg.count);
    CHECK_INT(1, pg.first_index);
    got_reset(&G);
    archive_close(a);

    /* a lower bound at open compacts at once when the file holds too many */
    a = open_ok(p, 3, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    CHECK_INT(3, archive_count(a));
    long n = file_records(p, NULL, 0);
    CHECK(n >= 3 && n <= 3 + 16, "file holds %ld records", n);
    archive_close(a);
    a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (a) {
        CHECK_INT(n, archive_count(a));
        CHECK_INT(101, archive_next_seq(a));
    }
    archive_close(a);

    /* a bigger bound: max/4 of slack */
    archive_remove(p);
    a = open_ok(p, 400, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    most = 0;
    for (int i = 0; i < 1100; i++) {
        fill(a, 1, 100, 1, 2);
        if (i % 50 == 49 || (i >= 490 && i <= 510)) {
            n = file_records(p, NULL, 0);
            if (n > most)
                most = n;
        }
    }
    CHECK_INT(500, most);
    CHECK_INT(400, archive_count(a));
    archive_close(a);
    a = open_ok(p, 400, ARCHIVE_SYNC_NONE);
    if (a) {
        CHECK_INT(400, archive_count(a));
        CHECK_INT(1101, archive_next_seq(a));
    }
    archive_close(a);

    /* a leftover compaction file from a crash is removed at open; the archive itself is whole */
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs("half a compaction", f);
        fclose(f);
    }
    a = open_ok(p, 400, ARCHIVE_SYNC_NONE);
    CHECK(access(tmp, F_OK) != 0, "stale %s not removed", tmp);
    CHECK_INT(400, archive_count(a));
    archive_close(a);
    archive_remove(p);
}

static int copy_file(const char *from, const char *to, long long len)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int rc = -1;
    if (in && out) {
        char buf[4096];
        size_t k;
        long long done = 0;
        while (done < len && (k = fread(buf, 1, (size_t)(len - done < 4096 ? len - done : 4096), in)) > 0) {
            fwrite(buf, 1, k, out);
            done += (long long)k;
        }
        rc = done == len ? 0 : -1;
    }
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}

/* runs fn with stderr going to a file; returns what it wrote (malloc'd) */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char p[128];
    path_in(p, sizeof p, "stderr.txt");
    fflush(stderr);
    int saved = dup(2), fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(p, "r");
    char *text = calloc(1, 4096);
    if (f) {
        size_t k = fread(text, 1, 4095, f);
        text[k] = '\0';
        fclose(f);
    }
    unlink(p);
    return text;
}

static archive *captured;
static void open_captured(void *path)
{
    captured = archive_open(path, 0, ARCHIVE_SYNC_NONE, NULL, 0);
}

static void test_torn_tail(void)
{
    char p[128], src[128];
    path_in(src, sizeof src, "torn-src.archive");
    path_in(p, sizeof p, "torn.archive");
    archive *a = open_ok(src, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    fill(a, 5, 100, 1, 2);
    archive_close(a);
    long long offs[8], size = file_size(src);
    CHECK_INT(5, file_records(src, offs, 8));
    long long last = offs[4];

    /* the drop is logged with the path and the bytes dropped */
    copy_file(src, p, size - 3);
    char *log = capture_stderr(open_captured, p);
    char want[64];
    snprintf(want, sizeof want, "dropping the last %lld bytes", size - 3 - last);
    CHECK(strstr(log, p) && strstr(log, want) && strstr(log, "WARN"), "log was: %s", log);
    free(log);
    CHECK_INT(4, archive_count(captured));
    archive_close(captured);

    /* every cut inside the last record, with and without garbage after it */
    int saved_level = log_level;
    log_level = LOG_ERR;
    for (long long cut = last; cut < size; cut++) {
        for (int garbage = 0; garbage < 2; garbage++) {
            int ok = copy_file(src, p, cut) == 0;
            if (garbage) {
                FILE *f = fopen(p, "ab");
                ok = ok && f && fwrite("\xC7" "AR\x01garbage!\x00\x00", 1, 14, f) == 14;
                if (f)
                    fclose(f);
            }
            archive *t = ok ? archive_open(p, 0, ARCHIVE_SYNC_NONE, NULL, 0) : NULL;
            uint64_t seq = 0;
            ok = t && archive_count(t) == 4 && file_size(p) == last && archive_next_seq(t) == 5 &&
                 archive_append(t, 200, "w", "after the cut", 13, &seq) == 0 && seq == 5;
            archive_close(t);
            t = ok ? archive_open(p, 0, ARCHIVE_SYNC_NONE, NULL, 0) : NULL;
            ok = ok && t && archive_count(t) == 5 && file_records(p, NULL, 0) == 5;
            if (ok) {
                ok = archive_last(t, 1, collect, &G) == 1 && !strcmp(G.r[0].data, "after the cut");
                got_reset(&G);
            }
            archive_close(t);
            CHECK(ok, "cut at %lld of %lld (record at %lld), garbage %d", cut, size, last, garbage);
        }
    }
    log_level = saved_level;
    unlink(p);
    unlink(src);
}

/* a flipped byte anywhere in a middle record drops it and everything after */
static void test_corrupt_middle(void)
{
    char p[128], src[128];
    path_in(src, sizeof src, "mid-src.archive");
    path_in(p, sizeof p, "mid.archive");
    archive *a = open_ok(src, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    fill(a, 10, 100, 1, 2);
    archive_close(a);
    long long offs[16], size = file_size(src);
    CHECK_INT(10, file_records(src, offs, 16));
    int saved_level = log_level;
    log_level = LOG_ERR;
    long long rec_len = offs[5] - offs[4];
    for (long long at = offs[4]; at < offs[4] + rec_len; at++) {
        copy_file(src, p, size);
        int fd = open(p, O_RDWR);
        unsigned char c = 0;
        int ok = fd >= 0 && pread(fd, &c, 1, at) == 1;
        c ^= 0x20;
        ok = ok && pwrite(fd, &c, 1, at) == 1;
        if (fd >= 0)
            close(fd);
        archive *t = ok ? archive_open(p, 0, ARCHIVE_SYNC_NONE, NULL, 0) : NULL;
        ok = t && archive_count(t) == 4 && file_size(p) == offs[4] && archive_next_seq(t) == 5;
        archive_close(t);
        CHECK(ok, "byte %lld flipped (record 5 is at %lld): the file is now %lld bytes", at, offs[4], file_size(p));
    }
    log_level = saved_level;
    unlink(p);
    unlink(src);
}

/* the archive's own descriptor: the one in /proc/self/fd that points at path */
static int find_fd(const char *path)
{
    char real[PATH_MAX], link[PATH_MAX], fdp[64];
    if (!realpath(path, real))
        return -1;
    for (int fd = 3; fd < 1024; fd++) {
        snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(fdp, link, sizeof link - 1);
        if (k < 0)
            continue;
        link[k] = '\0';
        if (!strcmp(link, real))
            return fd;
    }
    return -1;
}

static void test_append_failures(void)
{
    char p[128];
    path_in(p, sizeof p, "fail.archive");
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_ALWAYS);
    if (!a)
        return;
    fill(a, 3, 100, 1, 1);
    long long size = file_size(p);

    /* too big: refused before anything is written */
    size_t big = ARCHIVE_RECORD_MAX;
    char *data = malloc(big + 1);
    memset(data, 'x', big);
    errno = 0;
    CHECK_INT(-1, archive_append(a, 101, "", data, big - REC_OVERHEAD + 1, NULL));
    CHECK_INT(EMSGSIZE, errno);
    CHECK_INT(-1, archive_append(a, 101, "w", data, big - REC_OVERHEAD, NULL));
    CHECK_INT(EMSGSIZE, errno);
    CHECK_INT(-1, archive_append(a, 101, "", data, (size_t)-1 / 2, NULL));
    CHECK_INT(size, file_size(p));
    uint64_t seq = 0;
    CHECK_INT(0, archive_append(a, 101, "", data, big - REC_OVERHEAD, &seq));  /* exactly the bound */
    CHECK_INT(4, seq);
    size = file_size(p);
    CHECK_INT(4, file_records(p, NULL, 0));

    /* a short write (the file size limit) is taken back */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)size + 40;
    int saved_level = log_level;
    log_level = -1;
    CHECK_INT(0, setrlimit(RLIMIT_FSIZE, &lim));
    errno = 0;
    CHECK_INT(-1, archive_append(a, 102, "w", data, 300, NULL));
    CHECK(errno != 0, "errno not set");
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    CHECK_INT(size, file_size(p));
    CHECK_INT(0, archive_append(a, 102, "w", "ok", 2, &seq));
    CHECK_INT(5, seq);
    size = file_size(p);

    /* the descriptor fails: swapped for a read-only one, then the cut-back fails too; once a working
     * descriptor is back the next append cuts the file back first and goes on */
    int fd = find_fd(p);
    CHECK(fd >= 0, "the archive's descriptor not found");
    int ro = open(p, O_RDONLY), saved = dup(fd);
    CHECK(ro >= 0 && saved >= 0 && dup2(ro, fd) == fd, "swap failed");
    errno = 0;
    CHECK_INT(-1, archive_append(a, 103, "w", "lost", 4, NULL));
    CHECK_INT(EBADF, errno);
    CHECK_INT(-1, archive_append(a, 103, "w", "lost", 4, NULL));
    CHECK_INT(size, file_size(p));
    CHECK(dup2(saved, fd) == fd, "restore failed");
    close(saved);
    close(ro);
    log_level = saved_level;
    CHECK_INT(0, archive_append(a, 103, "w", "kept", 4, &seq));
    CHECK_INT(6, seq);
    CHECK_INT(6, archive_count(a));
    archive_close(a);
    CHECK_INT(6, file_records(p, NULL, 0));
    a = open_ok(p, 0, ARCHIVE_SYNC_ALWAYS);
    if (a) {
        CHECK_INT(6, archive_count(a));
        CHECK_INT(7, archive_next_seq(a));
    }
    archive_close(a);
    free(data);
    archive_remove(p);

    /* not a file; a directory that does not exist */
    char err[256] = "";
    CHECK(archive_open(dir, 0, 0, err, sizeof err) == NULL, "a directory opened as an archive");
    CHECK(strstr(err, dir) != NULL, "err does not name the path: %s", err);
    path_in(p, sizeof p, "no-such-dir/x.archive");
    a = open_ok(p, 0, ARCHIVE_SYNC_NONE);       /* missing: empty, until the first append */
    if (a) {
        errno = 0;
        CHECK_INT(-1, archive_append(a, 1, "w", "d", 1, NULL));
        CHECK_INT(ENOENT, errno);
        CHECK_INT(0, archive_count(a));
        CHECK_INT(1, archive_next_seq(a));
    }
    archive_close(a);
    CHECK(archive_open(NULL, 0, 0, err, sizeof err) == NULL, "NULL path opened");
}

/* Writes one record as the format says, with a correct CRC: wl bytes of with, then nul (which should be 0). */
static void raw_record(FILE *f, uint64_t seq, int64_t when, const char *with, size_t wl, unsigned char nul,
                       const char *data)
{
    size_t dl = strlen(data), total = REC_OVERHEAD + wl + dl;
    unsigned char r[512];
    if (total > sizeof r)
        return;
    memcpy(r, "\xC7" "AR\x01", 4);
    for (int i = 0; i < 4; i++)
        r[8 + i] = (unsigned char)((total - 12) >> (8 * i));
    for (int i = 0; i < 8; i++) {
        r[12 + i] = (unsigned char)(seq >> (8 * i));
        r[20 + i] = (unsigned char)((uint64_t)when >> (8 * i));
    }
    r[28] = (unsigned char)wl;
    r[29] = (unsigned char)(wl >> 8);
    memcpy(r + 30, with, wl);
    r[30 + wl] = nul;
    memcpy(r + 31 + wl, data, dl);
    uint32_t c = crc32_bitwise(r + 8, total - 8);
    for (int i = 0; i < 4; i++)
        r[4 + i] = (unsigned char)(c >> (8 * i));
    fwrite(r, 1, total, f);
}

/* records whose CRC is right but whose content breaks a rule: the good ones before them are kept */
static void test_bad_but_checksummed(void)
{
    char p[128];
    path_in(p, sizeof p, "rules.archive");
    const struct { const char *what; uint64_t seq; const char *with; size_t wl; unsigned char nul; } bad[] = {
        { "a sequence that goes back", 2, "w", 1, 0 },
        { "a repeated sequence", 3, "w", 1, 0 },
        { "no NUL after with", 9, "w", 1, 'x' },
        { "a NUL inside with", 9, "w\0x", 3, 0 },
    };
    int saved_level = log_level;
    log_level = LOG_ERR;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *f = fopen(p, "wb");
        if (!f)
            return;
        raw_record(f, 1, 10, "w", 1, 0, "one");
        raw_record(f, 3, 11, "w", 1, 0, "three");
        long long good = ftell(f);
        raw_record(f, bad[i].seq, 12, bad[i].with, bad[i].wl, bad[i].nul, "bad");
        raw_record(f, 20, 13, "w", 1, 0, "after");
        fclose(f);
        archive *a = archive_open(p, 0, ARCHIVE_SYNC_NONE, NULL, 0);
        int ok = a && archive_count(a) == 2 && archive_next_seq(a) == 4 && file_size(p) == good;
        CHECK(ok, "%s: expected 2 records and %lld bytes, got %u and %lld", bad[i].what, good,
              archive_count(a), file_size(p));
        archive_close(a);
        unlink(p);
    }
    /* the same writer's good records are accepted: the checks above fail for the stated reason */
    FILE *f = fopen(p, "wb");
    if (f) {
        raw_record(f, 1, 10, "w", 1, 0, "one");
        raw_record(f, 3, 11, "w", 1, 0, "three");
        raw_record(f, 20, 13, "", 0, 0, "after");
        fclose(f);
    }
    archive *a = archive_open(p, 0, ARCHIVE_SYNC_NONE, NULL, 0);
    CHECK_INT(3, archive_count(a));
    CHECK_INT(21, archive_next_seq(a));
    archive_close(a);
    unlink(p);
    log_level = saved_level;
}

/* a file whose last sequence is the largest there is: no more appends, and no wrap to 0 */
static void test_seq_exhausted(void)
{
    char p[128];
    path_in(p, sizeof p, "max.archive");
    FILE *f = fopen(p, "wb");
    if (!f)
        return;
    raw_record(f, UINT64_MAX, 0, "", 0, 0, "x");
    fclose(f);
    archive *a = open_ok(p, 0, ARCHIVE_SYNC_NONE);
    if (!a)
        return;
    CHECK_INT(1, archive_count(a));
    errno = 0;
    CHECK_INT(-1, archive_append(a, 1, "w", "d", 1, NULL));
    CHECK_INT(EOVERFLOW, errno);
    archive_close(a);
    archive_remove(p);
}

int main(void)
{
    strcpy(dir, "/tmp/couplet-archive-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_crc_oracle();
    test_ids();
    test_append_reopen();
    test_clock_back_and_two_open();
    test_filters_and_paging();
    test_with_paging();
    test_hash_collision();
    test_bound();
    test_torn_tail();
    test_corrupt_middle();
    test_append_failures();
    test_bad_but_checksummed();
    test_seq_exhausted();
    CHECK_INT(0, count_entries(dir));
    CHECK_INT(0, rmdir(dir));
    return check_summary("archive");
}
