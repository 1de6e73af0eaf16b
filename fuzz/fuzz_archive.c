/* fuzz_archive.c - libFuzzer harness for the message archive (archive.c): whatever a file holds, opening
 * it must not crash and must keep exactly the good records.
 *
 * Input: byte 0 picks the bound (bits 0-1: max 0, 1, 3 or 20), bit 2 has the harness put the right CRC into
 * every record it can frame (so that the checks behind the CRC are reached), and seeds the queries; the rest
 * is written as the archive file. The harness parses the file itself (its own CRC-32 and reading of the format at the
 * top of archive.c) to know the longest run of good records, then checks (abort() on failure):
 *  - archive_open succeeds; the file is cut to exactly the good records (or, when the bound makes the open
 *    compact it, holds exactly the newest max of them, byte for byte);
 *  - archive_count and archive_next_seq agree, and archive_last gives every kept record as the harness
 *    parsed it (sequence, time made non-decreasing, with, payload, both NUL-terminated);
 *  - 24 queries (time bounds, with filters that match, do not match or collide, RSM after/before with
 *    known and unknown sequences, max 0..6) give what a brute-force model over the kept records gives;
 *  - an append then works (or fails with EOVERFLOW after sequence 2^64 - 1) and survives a reopen.
 * fsync and fdatasync are no-ops here: durability is not under test and they would cost milliseconds.
 *
 * Seeds (fuzz/corpus/archive/) are archives written by archive_append, each behind a flags byte:
 *   seed-empty: nothing; seed-1, seed-3, seed-8: 1, 3, 8 records of tests/archive_crashdrv.c ("run PATH 0
 *   none N"); seed-small: 24 short records with 3 withs and repeated times, written by hand-run code;
 *   seed-torn: seed-small with its last record cut short; seed-small-fixcrc: seed-small with bit 2 set. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive.h"
#include "log.h"

int fsync(int fd) {
    (void)fd;
    return 0;
}
int fdatasync(int fd) {
    (void)fd;
    return 0;
}

static char dir[64], path[128];

static void die(const char *what) {
    fprintf(stderr, "fuzz_archive: %s\n", what);
    abort();
}

static void cleanup(void) {
    archive_remove(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    strcpy(dir, "/tmp/fuzz-archive-XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp");
    snprintf(path, sizeof path, "%s/a.archive", dir);
    atexit(cleanup);
    log_level = -1;     /* every torn input would log a line */
    return 0;
}

/* ---- the harness's own reading of the format ---- */

static uint32_t crc32_bitwise(const uint8_t *p, size_t len) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

typedef struct rec { size_t off, total; uint64_t seq; int64_t when; const char *with, *data; size_t wlen, dlen; } rec;

/* the good records at the start of the file; returns how many, *good the bytes they take */
static size_t parse(const uint8_t *f, size_t size, rec *out, size_t cap, size_t *good) {
    size_t n = 0, off = 0;
    uint64_t prev = 0;
    int64_t when = INT64_MIN;
    while (n < cap && size - off >= 12 && !memcmp(f + off, "\xC7" "AR\x01", 4)) {
        const uint8_t *p = f + off;
        uint64_t body = le(p + 8, 4);
        if (body < 19 || body > ARCHIVE_RECORD_MAX - 12 || size - off - 12 < body) break;
        if (crc32_bitwise(p + 8, (size_t)body + 4) != le(p + 4, 4)) break;
        uint64_t seq = le(p + 12, 8);
        size_t wlen = (size_t)le(p + 28, 2);
        if (seq <= prev || wlen > body - 19 || p[30 + wlen] != 0 || memchr(p + 30, 0, wlen)) break;
        int64_t t = (int64_t)le(p + 20, 8);
        when = t > when ? t : when;
        out[n] = (rec){ off, 12 + (size_t)body, seq, when, (const char *)p + 30, (const char *)p + 31 + wlen, wlen,
                        (size_t)body - 19 - wlen };
        prev = seq;
        off += 12 + (size_t)body;
        n++;
    }
    *good = off;
    return n;
}

/* writes the right CRC into every frame with the magic and a length that fits, up to the first that has not */
static void fix_crcs(uint8_t *f, size_t size) {
    size_t off = 0;
    while (size - off >= 12 && !memcmp(f + off, "\xC7" "AR\x01", 4)) {
        uint64_t body = le(f + off + 8, 4);
        if (body > size - off - 12) break;
        uint32_t c = crc32_bitwise(f + off + 8, (size_t)body + 4);
        for (int i = 0; i < 4; i++) f[off + 4 + i] = (uint8_t)(c >> (8 * i));
        off += 12 + (size_t)body;
    }
}

/* ---- what the archive gives ---- */

typedef struct given { const rec *expect; size_t n, cap; int bad; uint64_t seqs[64]; } given;

static int same(const rec *e, const archive_rec *r) {
    return e->seq == r->seq && e->when == r->when && e->wlen == r->with_len && e->dlen == r->len &&
           !memcmp(e->with, r->with, e->wlen) && !memcmp(e->data, r->data, e->dlen) && r->with[r->with_len] == 0 &&
           r->data[r->len] == 0;
}

/* archive_last: the kept records in order */
static int each_last(void *ud, const archive_rec *r) {
    given *g = ud;
    if (g->n >= g->cap || !same(&g->expect[g->n], r)) g->bad = 1;
    g->n++;
    return 0;
}

/* queries: the sequences given, each checked against the kept record of that sequence */
static const rec *kept;
static size_t nkept;

static const rec *find(uint64_t seq) {
    for (size_t i = 0; i < nkept; i++)
        if (kept[i].seq == seq) return &kept[i];
    return NULL;
}

static int each_query(void *ud, const archive_rec *r) {
    given *g = ud;
    const rec *e = find(r->seq);
    if (!e || !same(e, r) || g->n >= 64) g->bad = 1;
    else g->seqs[g->n] = r->seq;
    g->n++;
    return 0;
}

static void model_check(archive *a, const archive_query *q) {
    size_t *m = malloc((nkept + 1) * sizeof *m), *rr = malloc((nkept + 1) * sizeof *rr), nm = 0, nr = 0;
    if (!m || !rr) die("malloc");
    int found_after = !q->has_after, found_before = !(q->has_before && q->before);
    size_t wl = q->with ? strlen(q->with) : 0;
    for (size_t i = 0; i < nkept; i++) {
        const rec *x = &kept[i];
        if (q->has_after && x->seq == q->after) found_after = 1;
        if (q->has_before && q->before && x->seq == q->before) found_before = 1;
        if (x->when < q->start || x->when > q->end) continue;
        if (q->with && (x->wlen != wl || memcmp(x->with, q->with, wl))) continue;
        m[nm++] = i;
        if ((q->has_after && x->seq <= q->after) || (q->has_before && q->before && x->seq >= q->before)) continue;
        rr[nr++] = i;
    }
    given g = { 0 };
    archive_page pg;
    int rc = archive_query_run(a, q, each_query, &g, &pg);
    if (g.bad) die("a query gave a record that is not the kept one");
    if (!found_after || !found_before) {
        if (rc != -2 || g.n) die("an unknown after/before was not -2");
        free(m);
        free(rr);
        return;
    }
    size_t k = nr < q->max ? nr : q->max, first = q->has_before ? nr - k : 0;
    if (rc != (int)k || g.n != k || pg.count != nm || pg.complete != (k == nr)) die("query page differs from the model");
    for (size_t i = 0; i < k; i++)
        if (g.seqs[i] != kept[rr[first + i]].seq) die("query records differ from the model");
    if (k) {
        size_t idx = 0;
        while (m[idx] != rr[first]) idx++;
        if (pg.first_index != idx || pg.first != kept[rr[first]].seq || pg.last != kept[rr[first + k - 1]].seq)
            die("query first/last/first_index differ from the model");
    } else if (pg.first || pg.last) {
        die("an empty page names a first or last record");
    }
    free(m);
    free(rr);
}

static uint32_t next_rand(uint32_t *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void run_queries(archive *a, uint8_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    const char *withs[4] = { NULL, "nobody", NULL, NULL };
    char w1[ARCHIVE_WITH_MAX + 1], w2[ARCHIVE_WITH_MAX + 1];
    if (nkept) {
        memcpy(w1, kept[0].with, kept[0].wlen + 1);
        memcpy(w2, kept[nkept - 1].with, kept[nkept - 1].wlen + 1);
        withs[2] = w1;
        withs[3] = w2;
    }
    for (int i = 0; i < 24; i++) {
        archive_query q = { INT64_MIN, INT64_MAX, withs[next_rand(&s) % 4], 0, 0, 0, 0, next_rand(&s) % 7 };
        if (nkept && next_rand(&s) % 2) {
            q.start = kept[next_rand(&s) % nkept].when;
            if (next_rand(&s) % 2 && q.start > INT64_MIN) q.start--;
        }
        if (nkept && next_rand(&s) % 2) {
            q.end = kept[next_rand(&s) % nkept].when;
            if (next_rand(&s) % 2 && q.end < INT64_MAX) q.end++;
        }
        uint32_t how = next_rand(&s) % 5;
        uint64_t pick = nkept ? kept[next_rand(&s) % nkept].seq : 1;
        if (next_rand(&s) % 4 == 0) pick += 1;     /* often not in the archive */
        if (how == 1 || how == 3) { q.has_after = 1; q.after = pick; }
        if (how == 2 || how == 3) { q.has_before = 1; q.before = how == 3 ? pick + 2 : pick; }
        if (how == 4) { q.has_before = 1; q.before = 0; }
        model_check(a, &q);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const unsigned maxes[4] = { 0, 1, 3, 20 };
    unsigned max = maxes[data[0] & 3];
    size_t fsize = size - 1;
    uint8_t *file = malloc(fsize + 1);
    if (!file) die("malloc");
    if (fsize) memcpy(file, data + 1, fsize);
    if (data[0] & 4) fix_crcs(file, fsize);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (fsize && write(fd, file, fsize) != (ssize_t)fsize) || close(fd) < 0) die("writing the input file");

    rec *recs = malloc((fsize / 31 + 1) * sizeof *recs);
    if (!recs) die("malloc");
    size_t good, n = parse(file, fsize, recs, fsize / 31 + 1, &good);
    size_t nk = max && n > max ? max : n;
    kept = recs + (n - nk);
    nkept = nk;
    /* the open compacts when the file holds more than max + 16 records (max / 4 < 16 for these bounds) */
    size_t start = max && n > max + 16 ? kept[0].off : 0;

    char err[256];
    archive *a = archive_open(path, max, ARCHIVE_SYNC_NONE, err, sizeof err);
    if (!a) die(err);
    if (archive_count(a) != nk) die("archive_count is not the number of good records kept");
    if (archive_next_seq(a) != (n ? recs[n - 1].seq + 1 : 1)) die("archive_next_seq is not after the last good record");

    /* the file on disk: the good records, or the newest max of them */
    fd = open(path, O_RDONLY);
    uint8_t *back = malloc(good - start + 1);
    if (fd < 0 || !back) die("reading the file back");
    ssize_t k = read(fd, back, good - start + 1);
    close(fd);
    if (k != (ssize_t)(good - start) || memcmp(back, file + start, good - start)) die("the file does not hold exactly the good records");
    free(back);

    given g = { recs + (n - nk), 0, nk, 0, { 0 } };
    if (archive_last(a, UINT_MAX, each_last, &g) != (int)nk || g.n != nk || g.bad) die("archive_last differs from the good records");
    run_queries(a, data[0]);

    /* an append on top, then a reopen */
    uint64_t seq = 0, expect = n ? recs[n - 1].seq + 1 : 1;
    int rc = archive_append(a, 0, "fuzz@muc.example/harness", "<message/>", 10, &seq);
    archive_close(a);
    if (n && recs[n - 1].seq == UINT64_MAX) {
        if (rc != -1 || errno != EOVERFLOW) die("append after sequence 2^64 - 1 did not fail with EOVERFLOW");
    } else if (rc != 0 || seq != expect) {
        die("append failed");
    } else {
        a = archive_open(path, max, ARCHIVE_SYNC_NONE, err, sizeof err);
        if (!a) die(err);
        if (archive_next_seq(a) != expect + 1 || archive_count(a) != (max && nk + 1 > max ? max : nk + 1))
            die("the appended record is not there after a reopen");
        archive_close(a);
    }
    free(recs);
    free(file);
    archive_remove(path);
    return 0;
}
