/* archive.c - the message archive of one room: an append-only file of checksummed records that survives
 * the server being killed at any instant (and a power loss under ARCHIVE_SYNC_ALWAYS), and an index of
 * 32 bytes per record in memory so that time ranges and RSM pages are found by binary search and only the
 * records of a page are read (pread).
 *
 * The file is records and nothing else (an empty file is an empty archive). A record, integers little-endian:
 *   offset  size
 *   0       4    magic C7 41 52 01 ("\xC7" "AR", then the format version 1)
 *   4       4    CRC-32 (IEEE 802.3, the one zlib computes) of bytes 8 .. the end of the record
 *   8       4    B: the length of the rest of the record (the record is 12 + B bytes)
 *   12      8    sequence number: 1, 2, ... strictly increasing through the file
 *   20      8    time, seconds since the epoch (signed), never less than the previous record's
 *   28      2    W: length of the "with" string
 *   30      W    with (no NUL inside), then one NUL
 *   31 + W       payload (B - 19 - W bytes, opaque)
 * The CRC covers the length field too, so a damaged length is caught even when the bytes it points at
 * happen to hold a plausible record. There is no sub-second time: callers give whole seconds, and records
 * of one second are in sequence order anyway because the file is kept in time order.
 *
 * Every record goes to the O_APPEND descriptor in one write(). Opening scans the whole file; from the
 * first record that is cut short or fails a check (magic, length bounds, CRC, sequence order, the with
 * string's NUL) everything is a torn tail: it is logged and cut off. With a bound of max records the file
 * may hold max + max/4 (at least max + 16) before the newest max are copied to path.tmp, synced and renamed
 * over path, so that a crash leaves the old or the new file whole and appends are not slowed by copying. */
#include "archive.h"
#include "store.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR        12                   /* magic, CRC, length */
#define BODY_FIXED 19                   /* sequence, time, with length, the with string's NUL */
#define REC_MIN    (HDR + BODY_FIXED)
#define OFF_SEQ    12
#define OFF_WHEN   20
#define OFF_WLEN   28
#define OFF_WITH   30
#define SCAN_BUF   (2 * ARCHIVE_RECORD_MAX) /* the open scan's read buffer: holds any whole record */
#define COPY_BUF   (64 * 1024)

static const unsigned char magic[4] = { 0xC7, 'A', 'R', 0x01 };

/* what is kept in memory per record */
typedef struct ix_entry {
    uint64_t off;               /* in the file */
    uint64_t seq;
    int64_t when;
    uint32_t len;               /* the whole record */
    uint32_t whash;             /* of the with string: most records are told apart without reading them */
} ix_entry;
_Static_assert(sizeof(ix_entry) == 32, "the index costs 32 bytes per record");

struct archive {
    char *path, *tmp_path;
    int fd;                     /* -1 until the file exists */
    int sync;
    int dir_unsynced;           /* the file was created but its directory entry is not yet known durable */
    int tail_dirty;             /* a failed append could not be cut off again: no append until it is */
    unsigned max;
    ix_entry *ix;               /* the kept records are ix[head .. head + n), oldest first */
    size_t head, n, cap;
    uint64_t end;               /* file size: where the next record goes */
    uint64_t file_records;      /* records in the file: the kept ones and dropped ones not yet compacted away */
    uint64_t compact_retry;     /* after a failed compaction, the next try waits until the file holds this many */
    uint64_t last_seq;
    int64_t last_when;
    unsigned char *buf;         /* one record being written or read */
    size_t bufcap;
};

/* ------------------------------------------------------------------ encoding */

/* CRC-32 (reflected, polynomial 0xEDB88320), byte at a time; the table is the CRC of each byte value */
static const uint32_t crc_table[256] = {
    0x00000000, 0x77073096, 0xEE0E612C, 0x990951BA, 0x076DC419, 0x706AF48F, 0xE963A535, 0x9E6495A3,
    0x0EDB8832, 0x79DCB8A4, 0xE0D5E91E, 0x97D2D988, 0x09B64C2B, 0x7EB17CBD, 0xE7B82D07, 0x90BF1D91,
    0x1DB71064, 0x6AB020F2, 0xF3B97148, 0x84BE41DE, 0x1ADAD47D, 0x6DDDE4EB, 0xF4D4B551, 0x83D385C7,
    0x136C9856, 0x646BA8C0, 0xFD62F97A, 0x8A65C9EC, 0x14015C4F, 0x63066CD9, 0xFA0F3D63, 0x8D080DF5,
    0x3B6E20C8, 0x4C69105E, 0xD56041E4, 0xA2677172, 0x3C03E4D1, 0x4B04D447, 0xD20D85FD, 0xA50AB56B,
    0x35B5A8FA, 0x42B2986C, 0xDBBBC9D6, 0xACBCF940, 0x32D86CE3, 0x45DF5C75, 0xDCD60DCF, 0xABD13D59,
    0x26D930AC, 0x51DE003A, 0xC8D75180, 0xBFD06116, 0x21B4F4B5, 0x56B3C423, 0xCFBA9599, 0xB8BDA50F,
    0x2802B89E, 0x5F058808, 0xC60CD9B2, 0xB10BE924, 0x2F6F7C87, 0x58684C11, 0xC1611DAB, 0xB6662D3D,
    0x76DC4190, 0x01DB7106, 0x98D220BC, 0xEFD5102A, 0x71B18589, 0x06B6B51F, 0x9FBFE4A5, 0xE8B8D433,
    0x7807C9A2, 0x0F00F934, 0x9609A88E, 0xE10E9818, 0x7F6A0DBB, 0x086D3D2D, 0x91646C97, 0xE6635C01,
    0x6B6B51F4, 0x1C6C6162, 0x856530D8, 0xF262004E, 0x6C0695ED, 0x1B01A57B, 0x8208F4C1, 0xF50FC457,
    0x65B0D9C6, 0x12B7E950, 0x8BBEB8EA, 0xFCB9887C, 0x62DD1DDF, 0x15DA2D49, 0x8CD37CF3, 0xFBD44C65,
    0x4DB26158, 0x3AB551CE, 0xA3BC0074, 0xD4BB30E2, 0x4ADFA541, 0x3DD895D7, 0xA4D1C46D, 0xD3D6F4FB,
    0x4369E96A, 0x346ED9FC, 0xAD678846, 0xDA60B8D0, 0x44042D73, 0x33031DE5, 0xAA0A4C5F, 0xDD0D7CC9,
    0x5005713C, 0x270241AA, 0xBE0B1010, 0xC90C2086, 0x5768B525, 0x206F85B3, 0xB966D409, 0xCE61E49F,
    0x5EDEF90E, 0x29D9C998, 0xB0D09822, 0xC7D7A8B4, 0x59B33D17, 0x2EB40D81, 0xB7BD5C3B, 0xC0BA6CAD,
    0xEDB88320, 0x9ABFB3B6, 0x03B6E20C, 0x74B1D29A, 0xEAD54739, 0x9DD277AF, 0x04DB2615, 0x73DC1683,
    0xE3630B12, 0x94643B84, 0x0D6D6A3E, 0x7A6A5AA8, 0xE40ECF0B, 0x9309FF9D, 0x0A00AE27, 0x7D079EB1,
    0xF00F9344, 0x8708A3D2, 0x1E01F268, 0x6906C2FE, 0xF762575D, 0x806567CB, 0x196C3671, 0x6E6B06E7,
    0xFED41B76, 0x89D32BE0, 0x10DA7A5A, 0x67DD4ACC, 0xF9B9DF6F, 0x8EBEEFF9, 0x17B7BE43, 0x60B08ED5,
    0xD6D6A3E8, 0xA1D1937E, 0x38D8C2C4, 0x4FDFF252, 0xD1BB67F1, 0xA6BC5767, 0x3FB506DD, 0x48B2364B,
    0xD80D2BDA, 0xAF0A1B4C, 0x36034AF6, 0x41047A60, 0xDF60EFC3, 0xA867DF55, 0x316E8EEF, 0x4669BE79,
    0xCB61B38C, 0xBC66831A, 0x256FD2A0, 0x5268E236, 0xCC0C7795, 0xBB0B4703, 0x220216B9, 0x5505262F,
    0xC5BA3BBE, 0xB2BD0B28, 0x2BB45A92, 0x5CB36A04, 0xC2D7FFA7, 0xB5D0CF31, 0x2CD99E8B, 0x5BDEAE1D,
    0x9B64C2B0, 0xEC63F226, 0x756AA39C, 0x026D930A, 0x9C0906A9, 0xEB0E363F, 0x72076785, 0x05005713,
    0x95BF4A82, 0xE2B87A14, 0x7BB12BAE, 0x0CB61B38, 0x92D28E9B, 0xE5D5BE0D, 0x7CDCEFB7, 0x0BDBDF21,
    0x86D3D2D4, 0xF1D4E242, 0x68DDB3F8, 0x1FDA836E, 0x81BE16CD, 0xF6B9265B, 0x6FB077E1, 0x18B74777,
    0x88085AE6, 0xFF0F6A70, 0x66063BCA, 0x11010B5C, 0x8F659EFF, 0xF862AE69, 0x616BFFD3, 0x166CCF45,
    0xA00AE278, 0xD70DD2EE, 0x4E048354, 0x3903B3C2, 0xA7672661, 0xD06016F7, 0x4969474D, 0x3E6E77DB,
    0xAED16A4A, 0xD9D65ADC, 0x40DF0B66, 0x37D83BF0, 0xA9BCAE53, 0xDEBB9EC5, 0x47B2CF7F, 0x30B5FFE9,
    0xBDBDF21C, 0xCABAC28A, 0x53B39330, 0x24B4A3A6, 0xBAD03605, 0xCDD70693, 0x54DE5729, 0x23D967BF,
    0xB3667A2E, 0xC4614AB8, 0x5D681B02, 0x2A6F2B94, 0xB40BBE37, 0xC30C8EA1, 0x5A05DF1B, 0x2D02EF8D,
};

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = (crc >> 8) ^ crc_table[(crc ^ p[i]) & 255];
    return ~crc;
}

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, v); put16(p + 2, v >> 16); }
static void put64(unsigned char *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t get32(const unsigned char *p) { return get16(p) | get16(p + 2) << 16; }
static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

/* FNV-1a */
static uint32_t with_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* a parsed record, pointing into the bytes it came from */
typedef struct rec_view {
    uint64_t seq;
    int64_t when;
    const char *with, *data;
    size_t wlen, dlen, total;
} rec_view;

/* Checks the record at p, of which avail bytes are at hand. Returns its total length, or 0 when it is
 * cut short or fails a check (the two are the same thing to the caller: the end of the good records). */
static size_t record_parse(const unsigned char *p, size_t avail, rec_view *v)
{
    if (avail < HDR || memcmp(p, magic, 4) != 0)
        return 0;
    uint32_t body = get32(p + 8);
    if (body < BODY_FIXED || body > ARCHIVE_RECORD_MAX - HDR || avail < HDR + (size_t)body)
        return 0;
    if (crc32_update(0, p + 8, 4 + (size_t)body) != get32(p + 4))
        return 0;
    size_t wlen = get16(p + OFF_WLEN);
    if (wlen > body - BODY_FIXED)
        return 0;
    const char *with = (const char *)p + OFF_WITH;
    if (with[wlen] != '\0' || memchr(with, '\0', wlen))
        return 0;
    v->seq = get64(p + OFF_SEQ);
    v->when = (int64_t)get64(p + OFF_WHEN);
    v->with = with;
    v->wlen = wlen;
    v->data = with + wlen + 1;
    v->dlen = body - BODY_FIXED - wlen;
    v->total = HDR + (size_t)body;
    return v->total;
}

static void record_encode(unsigned char *p, uint64_t seq, int64_t when, const char *with, size_t wlen,
                          const char *data, size_t len)
{
    size_t total = REC_MIN + wlen + len;
    memcpy(p, magic, 4);
    put32(p + 8, (uint32_t)(total - HDR));
    put64(p + OFF_SEQ, seq);
    put64(p + OFF_WHEN, (uint64_t)when);
    put16(p + OFF_WLEN, (uint32_t)wlen);
    memcpy(p + OFF_WITH, with, wlen);
    p[OFF_WITH + wlen] = '\0';
    if (len)
        memcpy(p + OFF_WITH + wlen + 1, data, len);
    put32(p + 4, crc32_update(0, p + 8, total - 8));
}

/* ------------------------------------------------------------------ files */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t k = pread(fd, p, len, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO;    /* the file is shorter than the index says: changed behind our back */
            return -1;
        }
        p += k;
        len -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}


static int buf_reserve(archive *a, size_t need)
{
    if (need <= a->bufcap)
        return 0;
    size_t cap = a->bufcap ? a->bufcap : 1024;
    while (cap < need)
        cap *= 2;
    unsigned char *b = realloc(a->buf, cap);
    if (!b) {
        errno = ENOMEM;
        return -1;
    }
    a->buf = b;
    a->bufcap = cap;
    return 0;
}

/* ------------------------------------------------------------------ the index */

/* dropped records the file may hold beyond max before it is compacted */
static uint64_t slack(unsigned max)
{
    return max / 4 < 16 ? 16 : max / 4;
}

static ix_entry *entry(const archive *a, size_t i)
{
    return &a->ix[a->head + i];
}

/* Makes sure ix[head + n] exists. With a bound the array never grows past max + slack: the dropped
 * oldest entries in front are reclaimed by one move every slack appends. */
static int ix_make_room(archive *a)
{
    if (a->head + a->n < a->cap)
        return 0;
    size_t limit = a->max ? (size_t)a->max + (size_t)slack(a->max) : SIZE_MAX / sizeof(ix_entry);
    if (a->cap >= limit && a->head > 0) {
        memmove(a->ix, a->ix + a->head, a->n * sizeof *a->ix);
        a->head = 0;
        return 0;
    }
    if (a->cap >= limit) {
        errno = ENOMEM;
        return -1;
    }
    size_t cap = a->cap < 16 ? 16 : a->cap * 2;
    if (cap > limit || cap < a->cap)
        cap = limit;
    ix_entry *ix = realloc(a->ix, cap * sizeof *ix);
    if (!ix) {
        errno = ENOMEM;
        return -1;
    }
    a->ix = ix;
    a->cap = cap;
    return 0;
}

/* after ix_make_room: adds the newest record, dropping the oldest beyond the bound */
static void ix_push(archive *a, const ix_entry *e)
{
    if (a->max && a->n == a->max) {
        a->head++;
        a->n--;
    }
    *entry(a, a->n) = *e;
    a->n++;
    a->file_records++;
    a->last_seq = e->seq;
    a->last_when = e->when;
}

/* first kept index whose time is >= t (n when none) */
static size_t time_lower(const archive *a, int64_t t)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entry(a, mid)->when < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* first kept index whose time is > t */
static size_t time_upper(const archive *a, int64_t t)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entry(a, mid)->when <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int seq_find(const archive *a, uint64_t seq, size_t *pos)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t s = entry(a, mid)->seq;
        if (s == seq) {
            *pos = mid;
            return 1;
        }
        if (s < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* ------------------------------------------------------------------ compaction */

static int copy_range(int from, int to, uint64_t off, uint64_t len)
{
    unsigned char *chunk = malloc(COPY_BUF);
    if (!chunk) {
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    while (len > 0 && rc == 0) {
        size_t k = len < COPY_BUF ? (size_t)len : COPY_BUF;
        rc = read_at(from, chunk, k, off) < 0 || store_write_all(to, chunk, k) < 0 ? -1 : 0;
        off += k;
        len -= k;
    }
    int saved = errno;
    free(chunk);
    errno = saved;
    return rc;
}

/* Replaces the file with its kept records: path.tmp is written and synced, then renamed over path, so a
 * crash leaves one whole file or the other. The descriptor of path.tmp becomes the archive's. */
static int compact(archive *a)
{
    uint64_t start = a->n ? entry(a, 0)->off : a->end;
    int fd = open(a->tmp_path, O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (copy_range(a->fd, fd, start, a->end - start) < 0 || fsync(fd) < 0 || rename(a->tmp_path, a->path) < 0) {
        int saved = errno;
        close(fd);
        unlink(a->tmp_path);
        errno = saved;
        return -1;
    }
    close(a->fd);
    a->fd = fd;
    for (size_t i = 0; i < a->n; i++)
        entry(a, i)->off -= start;
    memmove(a->ix, a->ix + a->head, a->n * sizeof *a->ix);
    a->head = 0;
    a->end -= start;
    a->file_records = a->n;
    if (store_fsync_dir(a->path) < 0)
        log_warn("archive %s: compacted, but syncing its directory failed: %s", a->path, strerror(errno));
    return 0;
}

/* Compacts once the file holds more than max + slack records. A failure costs nothing but disk space
 * (the dropped records stay in the file, unseen), so it is logged and retried slack appends later. */
static void maybe_compact(archive *a)
{
    if (!a->max || a->file_records <= (uint64_t)a->max + slack(a->max) || a->file_records < a->compact_retry)
        return;
    uint64_t before = a->end;
    if (compact(a) < 0) {
        log_warn("archive %s: compaction failed: %s", a->path, strerror(errno));
        a->compact_retry = a->file_records + slack(a->max);
        return;
    }
    log_debug("archive %s: compacted from %" PRIu64 " to %" PRIu64 " bytes", a->path, before, a->end);
}

/* ------------------------------------------------------------------ open and close */

/* the open scan reads the file in big chunks rather than two small reads per record */
typedef struct reader {
    int fd;
    unsigned char *buf;
    size_t size;                /* of buf: SCAN_BUF, or less for a smaller file */
    size_t start, have;         /* unread bytes are buf[start .. have) */
    int eof;
} reader;

/* Makes want bytes available at buf + start if the file has them; returns how many are available (fewer
 * only at the end of the file), or -1 on a read error. */
static ssize_t reader_need(reader *r, size_t want)
{
    if (want > r->size)
        want = r->size;         /* a length beyond a small file's size: the record is cut short */
    if (r->have - r->start >= want || r->eof)
        return (ssize_t)(r->have - r->start);
    memmove(r->buf, r->buf + r->start, r->have - r->start);
    r->have -= r->start;
    r->start = 0;
    while (r->have < want) {
        ssize_t k = read(r->fd, r->buf + r->have, r->size - r->have);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0) {
            r->eof = 1;
            break;
        }
        r->have += (size_t)k;
    }
    return (ssize_t)r->have;
}

/* Reads every record of a file of size bytes into the index; returns the end of the last good one, or -1
 * on a read error. */
static int64_t scan(archive *a, uint64_t size)
{
    reader r = { .fd = a->fd, .size = size < SCAN_BUF ? (size_t)size + 1 : SCAN_BUF };
    r.buf = malloc(r.size);
    if (!r.buf) {
        errno = ENOMEM;
        return -1;
    }
    uint64_t off = 0;
    for (;;) {
        ssize_t avail = reader_need(&r, HDR);
        if (avail >= HDR && memcmp(r.buf + r.start, magic, 4) == 0) {
            uint32_t body = get32(r.buf + r.start + 8);
            if (body <= ARCHIVE_RECORD_MAX - HDR)
                avail = reader_need(&r, HDR + (size_t)body);
        }
        if (avail < 0)
            goto fail;
        rec_view v;
        size_t len = record_parse(r.buf + r.start, (size_t)avail, &v);
        if (len == 0 || v.seq <= a->last_seq)
            break;
        if (ix_make_room(a) < 0)
            goto fail;
        /* times only go up in files this code writes; any other file still gets an ordered index */
        ix_entry e = { off, v.seq, v.when < a->last_when ? a->last_when : v.when, (uint32_t)len,
                       with_hash(v.with, v.wlen) };
        ix_push(a, &e);
        off += len;
        r.start += len;
    }
    free(r.buf);
    return (int64_t)off;
fail:;
    int saved = errno;
    free(r.buf);
    errno = saved;
    return -1;
}

/* Cuts the file after its last good record, so that appends continue from there. */
static int drop_tail(archive *a, uint64_t good, uint64_t size)
{
    log_warn("archive %s: torn or corrupt record at offset %" PRIu64 ": dropping the last %" PRIu64 " bytes",
             a->path, good, size - good);
    if (ftruncate(a->fd, (off_t)good) < 0 || fsync(a->fd) < 0)
        return -1;
    return 0;
}

static archive *archive_new(const char *path, unsigned max, int sync)
{
    archive *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    size_t len = strlen(path);
    a->path = malloc(len + 1);
    a->tmp_path = malloc(len + 5);
    if (!a->path || !a->tmp_path) {
        free(a->path);
        free(a->tmp_path);
        free(a);
        return NULL;
    }
    memcpy(a->path, path, len + 1);
    memcpy(a->tmp_path, path, len);
    memcpy(a->tmp_path + len, ".tmp", 5);
    a->fd = -1;
    a->max = max;
    a->sync = sync == ARCHIVE_SYNC_ALWAYS ? ARCHIVE_SYNC_ALWAYS : ARCHIVE_SYNC_NONE;
    a->last_when = INT64_MIN;
    return a;
}

archive *archive_open(const char *path, unsigned max, int sync, char *err, size_t errlen)
{
    if (!path || !*path) {
        set_err(err, errlen, "no archive path");
        errno = EINVAL;
        return NULL;
    }
    archive *a = archive_new(path, max, sync);
    if (!a) {
        set_err(err, errlen, "%s: out of memory", path);
        errno = ENOMEM;
        return NULL;
    }
    /* a compaction that a crash interrupted before its rename: the file itself is whole */
    if (unlink(a->tmp_path) == 0)
        log_warn("archive %s: removed an unfinished compaction file", path);
    a->fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
    if (a->fd < 0 && errno == ENOENT)
        return a;
    struct stat st;
    const char *what = "open";
    if (a->fd < 0)
        goto fail;
    what = "stat";
    if (fstat(a->fd, &st) < 0)
        goto fail;
    what = "open";
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        goto fail;
    }
    what = "read";
    int64_t good = scan(a, (uint64_t)st.st_size);
    if (good < 0)
        goto fail;
    a->end = (uint64_t)good;
    what = "truncate";
    if ((uint64_t)good != (uint64_t)st.st_size && drop_tail(a, (uint64_t)good, (uint64_t)st.st_size) < 0)
        goto fail;
    maybe_compact(a);
    return a;
fail:
    set_err(err, errlen, "%s %s: %s", what, path, strerror(errno));
    int saved = errno;
    archive_close(a);
    errno = saved;
    return NULL;
}

void archive_close(archive *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    free(a->ix);
    free(a->buf);
    free(a->path);
    free(a->tmp_path);
    free(a);
}

int archive_remove(const char *path)
{
    char tmp[PATH_MAX];
    if (!path) {
        errno = EINVAL;
        return -1;
    }
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) < sizeof tmp)
        unlink(tmp);
    if (unlink(path) < 0 && errno != ENOENT)
        return -1;
    return 0;
}

unsigned archive_count(const archive *a)
{
    return a ? (unsigned)a->n : 0;
}

uint64_t archive_next_seq(const archive *a)
{
    return a ? a->last_seq + 1 : 0;
}

/* ------------------------------------------------------------------ append */

/* the first append creates the file */
static int ensure_file(archive *a)
{
    if (a->fd < 0) {
        a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (a->fd < 0)
            return -1;
        a->dir_unsynced = 1;
    }
    if (a->dir_unsynced && a->sync == ARCHIVE_SYNC_ALWAYS) {
        if (store_fsync_dir(a->path) < 0)
            return -1;
        a->dir_unsynced = 0;
    }
    return 0;
}

/* Takes a failed append's bytes back off the file. If even that fails, appends stop until it works:
 * a record written after garbage would be cut off with it at the next open. */
static void undo_append(archive *a)
{
    int saved = errno;
    if (ftruncate(a->fd, (off_t)a->end) < 0) {
        log_err("archive %s: cannot cut off a failed append: %s", a->path, strerror(errno));
        a->tail_dirty = 1;
    } else {
        a->tail_dirty = 0;
    }
    errno = saved;
}

int archive_append(archive *a, int64_t when, const char *with, const char *data, size_t len, uint64_t *seq_out)
{
    if (!a || (!data && len)) {
        errno = EINVAL;
        return -1;
    }
    if (!with)
        with = "";
    size_t wlen = strlen(with);
    if (wlen > ARCHIVE_WITH_MAX || len > ARCHIVE_RECORD_MAX || REC_MIN + wlen + len > ARCHIVE_RECORD_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    if (a->last_seq == UINT64_MAX) {
        errno = EOVERFLOW;
        return -1;
    }
    size_t total = REC_MIN + wlen + len;
    if (ensure_file(a) < 0 || ix_make_room(a) < 0 || buf_reserve(a, total) < 0)
        return -1;
    if (a->tail_dirty) {
        undo_append(a);
        if (a->tail_dirty)
            return -1;
    }
    if (when < a->last_when)
        when = a->last_when;    /* the clock went back: keep the file in time order */
    uint64_t seq = a->last_seq + 1;
    record_encode(a->buf, seq, when, with, wlen, data, len);
    ssize_t k;
    do {
        k = write(a->fd, a->buf, total);
    } while (k < 0 && errno == EINTR);
    if (k != (ssize_t)total) {
        if (k >= 0)
            errno = EIO;        /* a short write (disk full, file size limit): the rest is not retried */
        undo_append(a);
        return -1;
    }
    if (a->sync == ARCHIVE_SYNC_ALWAYS && fdatasync(a->fd) < 0) {
        undo_append(a);
        return -1;
    }
    ix_entry e = { a->end, seq, when, (uint32_t)total, with_hash(with, wlen) };
    ix_push(a, &e);
    a->end += total;
    maybe_compact(a);
    if (seq_out)
        *seq_out = seq;
    return 0;
}

/* ------------------------------------------------------------------ queries */

/* 1 when the kept record i has this with string, 0 when not, -1 on a read error */
static int with_matches(archive *a, size_t i, const char *with, size_t wlen, uint32_t h)
{
    const ix_entry *e = entry(a, i);
    if (e->whash != h || e->len < REC_MIN + wlen)
        return 0;
    if (buf_reserve(a, wlen + 2) < 0 || read_at(a->fd, a->buf, wlen + 2, e->off + OFF_WLEN) < 0)
        return -1;
    return get16(a->buf) == wlen && memcmp(a->buf + 2, with, wlen) == 0;
}

/* Reads kept record i, checks it again (the file may have been damaged since it was opened) and gives it. */
static int give(archive *a, size_t i, int (*each)(void *, const archive_rec *), void *ud)
{
    const ix_entry *e = entry(a, i);
    if (buf_reserve(a, (size_t)e->len + 1) < 0 || read_at(a->fd, a->buf, e->len, e->off) < 0)
        return -1;
    rec_view v;
    if (record_parse(a->buf, e->len, &v) != e->len || v.seq != e->seq) {
        log_err("archive %s: the record at offset %" PRIu64 " changed on disk", a->path, e->off);
        errno = EIO;
        return -1;
    }
    a->buf[e->len] = '\0';      /* the payload ends the record: the caller gets a C string */
    archive_rec rec = { v.seq, e->when, v.with, v.wlen, v.data, v.dlen };
    return each(ud, &rec) ? 1 : 0;
}

/* Gives kept records pos[0 .. k) (or lo .. lo + k when pos is NULL); the number given, or -1. */
static int give_all(archive *a, const size_t *pos, size_t lo, size_t k,
                    int (*each)(void *, const archive_rec *), void *ud)
{
    int given = 0;
    if (k > INT_MAX)
        k = INT_MAX;
    for (size_t j = 0; j < k; j++) {
        int rc = give(a, pos ? pos[j] : lo + j, each, ud);
        if (rc < 0)
            return -1;
        given++;
        if (rc)
            break;
    }
    return given;
}

/* the page's bounds among the kept records: matching times in [lo, hi), after/before narrow it to [from, to) */
typedef struct span { size_t lo, hi, from, to; int back; } span;

static int query_span(const archive *a, const archive_query *q, span *s)
{
    s->lo = time_lower(a, q->start);
    s->hi = q->start <= q->end ? time_upper(a, q->end) : s->lo;
    if (s->hi < s->lo)
        s->hi = s->lo;
    s->from = s->lo;
    s->to = s->hi;
    s->back = q->has_before != 0;
    size_t p;
    if (q->has_after) {
        if (!seq_find(a, q->after, &p))
            return -2;
        if (p + 1 > s->from)
            s->from = p + 1;
    }
    if (q->has_before && q->before) {
        if (!seq_find(a, q->before, &p))
            return -2;
        if (p < s->to)
            s->to = p;
    }
    if (s->to < s->from)
        s->to = s->from;
    return 0;
}

/* without a with filter the matching records are a contiguous run of the index */
static int run_plain(archive *a, const archive_query *q, const span *s,
                     int (*each)(void *, const archive_rec *), void *ud, archive_page *pg)
{
    size_t avail = s->to - s->from, k = avail < q->max ? avail : q->max;
    size_t first = s->back ? s->to - k : s->from;
    pg->count = (unsigned)(s->hi - s->lo);
    pg->complete = k == avail;
    if (k) {
        pg->first_index = (unsigned)(first - s->lo);
        pg->first = entry(a, first)->seq;
        pg->last = entry(a, first + k - 1)->seq;
    }
    return give_all(a, NULL, first, k, each, ud);
}

/* With a with filter every candidate in the time range is checked, since RSM wants the count. The page
 * is collected in pos: the first max matches going forwards, a ring of the last max going backwards. */
static int run_with(archive *a, const archive_query *q, const span *s,
                    int (*each)(void *, const archive_rec *), void *ud, archive_page *pg)
{
    size_t cap = s->to - s->from < q->max ? s->to - s->from : q->max;
    size_t *pos = malloc((cap ? cap : 1) * sizeof *pos);
    if (!pos) {
        errno = ENOMEM;
        return -1;
    }
    size_t wlen = strlen(q->with), count = 0, before = 0, inside = 0;
    uint32_t h = with_hash(q->with, wlen);
    for (size_t i = s->lo; i < s->hi; i++) {
        int m = with_matches(a, i, q->with, wlen, h);
        if (m < 0) {
            free(pos);
            return -1;
        }
        if (!m)
            continue;
        count++;
        if (i < s->from)
            before++;
        else if (i < s->to) {
            if (cap && (s->back || inside < cap))
                pos[inside % cap] = i;
            inside++;
        }
    }
    size_t k = inside < cap ? inside : cap;
    if (s->back && inside > cap && cap) {
        /* unroll the ring: the oldest of the last cap matches is at inside % cap */
        size_t *lin = malloc(cap * sizeof *lin);
        if (!lin) {
            free(pos);
            errno = ENOMEM;
            return -1;
        }
        for (size_t j = 0; j < cap; j++)
            lin[j] = pos[(inside + j) % cap];
        free(pos);
        pos = lin;
    }
    pg->count = (unsigned)count;
    pg->complete = k == inside;
    if (k) {
        pg->first_index = (unsigned)(before + (s->back ? inside - k : 0));
        pg->first = entry(a, pos[0])->seq;
        pg->last = entry(a, pos[k - 1])->seq;
    }
    int rc = give_all(a, pos, 0, k, each, ud);
    free(pos);
    return rc;
}

int archive_query_run(archive *a, const archive_query *q, int (*each)(void *ud, const archive_rec *r), void *ud,
                      archive_page *page)
{
    archive_page pg = { 0, 0, 0, 0, 1 };
    if (!a || !q || !each) {
        errno = EINVAL;
        return -1;
    }
    span s;
    int rc = query_span(a, q, &s);
    if (rc == 0)
        rc = q->with ? run_with(a, q, &s, each, ud, &pg) : run_plain(a, q, &s, each, ud, &pg);
    if (page)
        *page = pg;
    return rc;
}

int archive_last(archive *a, unsigned n, int (*each)(void *ud, const archive_rec *r), void *ud)
{
    if (!a || !each) {
        errno = EINVAL;
        return -1;
    }
    size_t k = n < a->n ? n : a->n;
    return give_all(a, NULL, a->n - k, k, each, ud);
}

/* ------------------------------------------------------------------ ids */

void archive_id_format(uint64_t seq, char out[ARCHIVE_ID_MAX])
{
    snprintf(out, ARCHIVE_ID_MAX, "%016" PRIx64, seq);
}

int archive_id_parse(const char *s, uint64_t *seq)
{
    uint64_t v = 0;
    if (!s)
        return -1;
    for (int i = 0; i < ARCHIVE_ID_MAX - 1; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;          /* also the end of a string that is too short */
        v = v << 4 | (uint64_t)d;
    }
    if (s[ARCHIVE_ID_MAX - 1] != '\0')
        return -1;
    if (seq)
        *seq = v;
    return 0;
}
