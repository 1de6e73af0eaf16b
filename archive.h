/* archive.h - an append-only, crash-safe message archive on disk, one file per room: the storage half of
 * XEP-0313 (MAM). Records are stored and found here; the XML side (queries, results) belongs to muc.c. */
#ifndef COUPLET_ARCHIVE_H
#define COUPLET_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#define ARCHIVE_RECORD_MAX (256 * 1024)     /* a whole record on disk; bigger ones are refused (EMSGSIZE) */
#define ARCHIVE_WITH_MAX   65535            /* bytes of the "with" string */
#define ARCHIVE_ID_MAX     17               /* archive_id_format's text: 16 lowercase hex digits and a NUL */

enum { ARCHIVE_SYNC_NONE = 0,   /* write() only: survives the server being killed, not a power loss */
       ARCHIVE_SYNC_ALWAYS };   /* fdatasync before archive_append returns */

typedef struct archive archive;

typedef struct archive_query {
    int64_t start, end;          /* inclusive time bounds in seconds; INT64_MIN / INT64_MAX for none */
    const char *with;            /* exact match on the with string, NULL for any */
    int has_after, has_before;   /* RSM: page after the record with sequence 'after', or before 'before' */
    uint64_t after, before;      /* before == 0 with has_before: the last page (RSM <before/> empty) */
    unsigned max;                /* records per page; the caller clamps it */
} archive_query;

/* One record as given to a callback. with and data are NUL-terminated (the NUL is not counted). */
typedef struct archive_rec {
    uint64_t seq;
    int64_t when;
    const char *with;
    size_t with_len;
    const char *data;
    size_t len;
} archive_rec;

typedef struct archive_page {
    unsigned count;              /* records matching start/end/with in the whole archive (RSM <count/>) */
    unsigned first_index;        /* position of the first returned record among the matching ones (RSM
                                  * <first index=.../>); 0 when none is returned */
    uint64_t first, last;        /* sequences of the first and last returned record (none returned: 0) */
    int complete;                /* 1 when this page reaches the end of the matching records in the paging
                                  * direction (XEP-0313 'complete'); the direction is backwards with has_before */
} archive_page;

/* Opens (scans, validates, repairs) the archive at path; a missing file is an empty archive, created with
 * mode 0600 on the first append. max bounds the records kept (0: no bound); sync is ARCHIVE_SYNC_*.
 * A torn or corrupt tail is logged and cut off. NULL on failure, with a reason in err. */
archive *archive_open(const char *path, unsigned max, int sync, char *err, size_t errlen);
void archive_close(archive *a);
/* Deletes an archive's file (and a leftover compaction file): 0 when done or already absent. */
int archive_remove(const char *path);

/* Appends one record with one write(). with may be NULL (stored as ""). A time before the newest record's
 * is stored as that record's time, so time order is sequence order. Returns 0 with *seq_out set (may be
 * NULL) once the record is written (and synced under ARCHIVE_SYNC_ALWAYS); -1 with errno otherwise, and
 * then nothing of the record stays in the file. EMSGSIZE: the record is over ARCHIVE_RECORD_MAX. */
int archive_append(archive *a, int64_t when, const char *with, const char *data, size_t len, uint64_t *seq_out);
/* Records currently kept (at most max). */
unsigned archive_count(const archive *a);
/* The sequence the next append will get. */
uint64_t archive_next_seq(const archive *a);

/* Calls each() for the page's records in chronological order; each rec is valid only during the call; a
 * non-zero return from each() stops the walk early. each() must not append to or close this archive (an
 * append may compact it under the walk). Returns the number of records given, or -1 on an I/O
 * error, or -2 when after/before names a sequence that is not in the archive (the caller answers
 * item-not-found). page may be NULL. */
int archive_query_run(archive *a, const archive_query *q, int (*each)(void *ud, const archive_rec *r), void *ud,
                      archive_page *page);
/* The newest n records in chronological order (a joining occupant's history); returns the number given or -1. */
int archive_last(archive *a, unsigned n, int (*each)(void *ud, const archive_rec *r), void *ud);

/* A sequence as XEP-0359 stanza-id text: 16 lowercase hex digits. */
void archive_id_format(uint64_t seq, char out[ARCHIVE_ID_MAX]);
/* 0 and *seq set for exactly what archive_id_format writes; -1 for anything else. */
int archive_id_parse(const char *s, uint64_t *seq);

#endif
