/* archive_crashdrv.c - the driver of tests/archive_crash.sh, which builds it; not a test by itself.
 *
 *   archive_crashdrv run PATH MAX SYNC [COUNT]
 *       appends records (forever, or COUNT of them) to the archive at PATH opened with bound MAX and policy
 *       SYNC (none or always); after each archive_append returns 0 it writes the record's sequence to
 *       stdout as one 20-digit line in one write(): the record is then acknowledged.
 *   archive_crashdrv check PATH MAX ACKED
 *       opens the archive and checks that it opened, that the newest record is ACKED or ACKED + 1 (one
 *       append may have been written but not acknowledged), that the sequences are contiguous up to it,
 *       that exactly min(last, MAX) of them are kept (all of them with MAX 0), and that every record is the
 *       one its sequence stands for, byte for byte. Prints "last L count N size S lastoff O" and exits 0,
 *       or prints what is wrong and exits 1.
 * Record i is a function of i alone: a with string among 7, a payload of 10..1609 bytes, a time that
 * advances once every 10 records. */
#include "archive.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_MAX 1700

static void record_of(uint64_t seq, char *with, size_t wcap, char *data, size_t *len, int64_t *when)
{
    snprintf(with, wcap, "room@muc.example/n%" PRIu64, seq % 7);
    size_t n = 10 + (size_t)((seq * 7919) % 1600);
    int head = snprintf(data, DATA_MAX, "<m n='%" PRIu64 "'>", seq);
    for (size_t i = (size_t)head; i < n; i++)
        data[i] = (char)('a' + (seq + i) % 26);
    *len = n;
    *when = 1700000000 + (int64_t)(seq / 10);
}

static int run(const char *path, unsigned max, int sync, unsigned long count)
{
    char err[256], with[64], data[DATA_MAX], line[32];
    archive *a = archive_open(path, max, sync, err, sizeof err);
    if (!a) {
        fprintf(stderr, "crashdrv: %s\n", err);
        return 1;
    }
    for (unsigned long i = 0; count == 0 || i < count; i++) {
        uint64_t seq = archive_next_seq(a), got = 0;
        size_t len;
        int64_t when;
        record_of(seq, with, sizeof with, data, &len, &when);
        if (archive_append(a, when, with, data, len, &got) < 0 || got != seq) {
            fprintf(stderr, "crashdrv: append %" PRIu64 " failed: %s\n", seq, strerror(errno));
            archive_close(a);
            return 1;
        }
        int n = snprintf(line, sizeof line, "%020" PRIu64 "\n", seq);
        if (write(1, line, (size_t)n) != n) {
            archive_close(a);
            return 1;
        }
    }
    archive_close(a);
    return 0;
}

typedef struct checker { uint64_t next; unsigned long bad; char why[200]; } checker;

static int check_one(void *ud, const archive_rec *r)
{
    checker *c = ud;
    char with[64], data[DATA_MAX];
    size_t len;
    int64_t when;
    if (c->bad)
        return 1;
    record_of(r->seq, with, sizeof with, data, &len, &when);
    if (c->next && r->seq != c->next)
        snprintf(c->why, sizeof c->why, "sequence %" PRIu64 " where %" PRIu64 " was expected", r->seq, c->next);
    else if (strcmp(r->with, with) || r->with_len != strlen(with))
        snprintf(c->why, sizeof c->why, "record %" PRIu64 ": with '%s', expected '%s'", r->seq, r->with, with);
    else if (r->len != len || memcmp(r->data, data, len))
        snprintf(c->why, sizeof c->why, "record %" PRIu64 ": payload of %zu bytes differs (expected %zu)",
                 r->seq, r->len, len);
    else if (r->when != when)
        snprintf(c->why, sizeof c->why, "record %" PRIu64 ": time %" PRId64 ", expected %" PRId64, r->seq,
                 r->when, when);
    if (c->why[0]) {
        c->bad = 1;
        return 1;
    }
    c->next = r->seq + 1;
    return 0;
}

static int check(const char *path, unsigned max, uint64_t acked)
{
    char err[256];
    archive *a = archive_open(path, max, ARCHIVE_SYNC_NONE, err, sizeof err);
    if (!a) {
        printf("open failed: %s\n", err);
        return 1;
    }
    uint64_t last = archive_next_seq(a) - 1;
    unsigned count = archive_count(a);
    uint64_t want = max && last > max ? max : last;
    checker c = { 0, 0, "" };
    int given = archive_last(a, count, check_one, &c);
    int ok = 0;
    if (last < acked)
        printf("acknowledged record %" PRIu64 " is missing: the newest is %" PRIu64 "\n", acked, last);
    else if (last > acked + 1)
        printf("newest record %" PRIu64 " but only %" PRIu64 " acknowledged: at most one can be unacknowledged\n",
               last, acked);
    else if (count != want)
        printf("%u records kept, expected %" PRIu64 "\n", count, want);
    else if (given != (int)count || c.bad)
        printf("reading the records: %s (%d given of %u)\n", c.why[0] ? c.why : "read error", given, count);
    else if (count && c.next != last + 1)
        printf("records end at %" PRIu64 ", the newest is %" PRIu64 "\n", c.next - 1, last);
    else
        ok = 1;
    /* where the newest record starts (its length follows from its sequence), so that the script can tear it */
    struct stat st;
    long long size = stat(path, &st) == 0 ? (long long)st.st_size : -1, lastoff = -1;
    if (ok && count) {
        char with[64], data[DATA_MAX];
        size_t len;
        int64_t when;
        record_of(last, with, sizeof with, data, &len, &when);
        lastoff = size - (long long)(31 + strlen(with) + len);
    }
    archive_close(a);
    if (ok)
        printf("last %" PRIu64 " count %u size %lld lastoff %lld\n", last, count, size, lastoff);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "run")) {
        int sync = !strcmp(argv[4], "always") ? ARCHIVE_SYNC_ALWAYS : ARCHIVE_SYNC_NONE;
        return run(argv[2], (unsigned)strtoul(argv[3], NULL, 10), sync, argc > 5 ? strtoul(argv[5], NULL, 10) : 0);
    }
    if (argc == 5 && !strcmp(argv[1], "check"))
        return check(argv[2], (unsigned)strtoul(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    fprintf(stderr, "usage: %s run PATH MAX none|always [COUNT] | check PATH MAX ACKED\n", argv[0]);
    return 2;
}
