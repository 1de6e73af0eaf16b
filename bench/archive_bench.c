/* archive_bench.c - times the message archive (archive.c) by hand; not a test.
 *
 *   cc -std=c11 -D_GNU_SOURCE -O2 -I. -o /tmp/archive_bench bench/archive_bench.c archive.c store.c log.c
 *   /tmp/archive_bench [DIR] [RECORDS]       (DIR defaults to /tmp, RECORDS to 10000)
 *
 * For each sync policy: appends RECORDS records of about 300 bytes (5 occupants in turn), then reopens the
 * archive and pages through all of it 50 at a time forwards (RSM after) and backwards (RSM before), and
 * forwards with a with filter (a fifth of the records). Prints microseconds per append, bytes on disk per
 * record, and milliseconds for the open scan and each full pass. */
#include "archive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int count_rec(void *ud, const archive_rec *r)
{
    (*(unsigned long *)ud) += r->len ? 1 : 0;
    return 0;
}

/* pages through everything; returns the milliseconds taken, or -1 */
static double page_all(archive *a, const char *with, int backwards, unsigned long *given)
{
    archive_query q = { INT64_MIN, INT64_MAX, with, 0, backwards, 0, 0, 50 };
    archive_page pg;
    double t0 = now_us();
    *given = 0;
    for (;;) {
        if (archive_query_run(a, &q, count_rec, given, &pg) < 0)
            return -1;
        if (pg.complete)
            break;
        if (backwards)
            q.before = pg.first;
        else {
            q.has_after = 1;
            q.after = pg.last;
        }
    }
    return (now_us() - t0) / 1e3;
}

static int run(const char *dir, int sync, unsigned n)
{
    char path[512], err[256], with[64], data[400];
    snprintf(path, sizeof path, "%s/archive-bench-%d.archive", dir, (int)getpid());
    archive_remove(path);
    archive *a = archive_open(path, 0, sync, err, sizeof err);
    if (!a) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double t0 = now_us();
    for (unsigned i = 0; i < n; i++) {
        snprintf(with, sizeof with, "room@conference.example.org/occupant%u", i % 5);
        int len = snprintf(data, sizeof data,
                           "<message from='room@conference.example.org/occupant%u' type='groupchat' id='%08x'>"
                           "<body>%0200u</body></message>", i % 5, i, i);
        if (archive_append(a, 1700000000 + i / 20, with, data, (size_t)len, NULL) < 0) {
            perror("archive_append");
            return 1;
        }
    }
    double append_us = (now_us() - t0) / n;
    archive_close(a);
    struct stat st;
    if (stat(path, &st) < 0)
        return 1;

    t0 = now_us();
    a = archive_open(path, 0, sync, err, sizeof err);
    double open_ms = (now_us() - t0) / 1e3;
    if (!a) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    unsigned long fwd_n, back_n, with_n;
    double fwd = page_all(a, NULL, 0, &fwd_n), back = page_all(a, NULL, 1, &back_n);
    double withf = page_all(a, "room@conference.example.org/occupant3", 0, &with_n);
    printf("%-11s %u records: %.1f us/append, %.1f bytes/record on disk (payload %d + with %zu), "
           "open %.2f ms, page all 50 at a time: forwards %.2f ms (%lu), backwards %.2f ms (%lu), "
           "with filter %.2f ms (%lu)\n",
           sync == ARCHIVE_SYNC_ALWAYS ? "SYNC_ALWAYS" : "SYNC_NONE", n, append_us, (double)st.st_size / n,
           (int)strlen(data), strlen(with), open_ms, fwd, fwd_n, back, back_n, withf, with_n);
    archive_close(a);
    archive_remove(path);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    unsigned n = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 10000;
    if (n == 0)
        n = 10000;
    return run(dir, ARCHIVE_SYNC_NONE, n) || run(dir, ARCHIVE_SYNC_ALWAYS, n);
}
