/* jid.c - JID parsing, validation and normalisation: a pragmatic subset of RFC 7622 / PRECIS.
 * There is no Unicode library, so case mapping is ASCII-only (non-ASCII letters are kept as given) and
 * "unassigned or non-printable" is a short list of code points that are invisible, reorder text or are
 * never meant for interchange - the ones that let one name pass for another. */
#include "jid.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

/* longest input that can still hold three maximal parts, the two separators and a trailing dot */
#define JID_INPUT_MAX (3 * JID_PART_MAX + 3)

/* Decode one UTF-8 sequence at s[*i] (n bytes in all), strictly per RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF. Advances *i; -1 on a bad or truncated sequence. */
static int utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp)
{
    size_t k = *i;
    unsigned char b = s[k];
    uint32_t c, min;
    int more;

    if (b < 0x80) { *cp = b; *i = k + 1; return 0; }
    if (b >= 0xC2 && b <= 0xDF) { c = b & 0x1F; more = 1; min = 0x80; }
    else if (b >= 0xE0 && b <= 0xEF) { c = b & 0x0F; more = 2; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { c = b & 0x07; more = 3; min = 0x10000; }
    else return -1;                  /* continuation byte, C0/C1 (always overlong) or F5..FF */
    if (n - k - 1 < (size_t)more) return -1;
    for (int m = 1; m <= more; m++) {
        unsigned char t = s[k + m];
        if ((t & 0xC0) != 0x80) return -1;
        c = (c << 6) | (t & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
    *cp = c;
    *i = k + 1 + more;
    return 0;
}

static int is_control(uint32_t c)
{
    return c < 0x20 || (c >= 0x7F && c <= 0x9F);
}

static int is_space(uint32_t c)
{
    return c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_noncharacter(uint32_t c)
{
    return (c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE;
}

/* Code points that render as nothing, reorder the text around them, or sit in ranges with nothing
 * assigned: a name containing one can look exactly like another name. */
static int is_invisible_or_unassigned(uint32_t c)
{
    return c == 0x00AD ||                        /* soft hyphen */
           c == 0x061C ||                        /* Arabic letter mark */
           c == 0x115F || c == 0x1160 ||         /* Hangul fillers */
           c == 0x180E ||                        /* Mongolian vowel separator */
           (c >= 0x200B && c <= 0x200F) ||       /* zero-width space/joiners, LRM, RLM */
           c == 0x2028 || c == 0x2029 ||         /* line and paragraph separators */
           (c >= 0x202A && c <= 0x202E) ||       /* bidi embeddings and overrides */
           (c >= 0x2060 && c <= 0x206F) ||       /* word joiner, invisible operators, bidi isolates */
           c == 0x3164 || c == 0xFFA0 ||         /* Hangul fillers */
           c == 0xFEFF ||                        /* zero-width no-break space / BOM */
           (c >= 0xFFF0 && c <= 0xFFFB) ||       /* unassigned, interlinear annotation */
           (c >= 0x1BCA0 && c <= 0x1BCA3) ||     /* shorthand format controls */
           (c >= 0x1D173 && c <= 0x1D17A) ||     /* musical format controls */
           (c >= 0x40000 && c <= 0xDFFFF) ||     /* planes 4-13: nothing assigned */
           (c >= 0xE0000 && c <= 0xE007F) ||     /* tags */
           (c >= 0xE01F0 && c <= 0xEFFFF);       /* rest of plane 14: nothing assigned */
}

static int lower_ascii(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* n bytes of s, ASCII lowercased, NUL-terminated (lowercasing leaves UTF-8 sequences intact) */
static void copy_lower(char *out, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = (char)lower_ascii(s[i]);
    out[n] = '\0';
}

/* An ASCII byte allowed in a localpart: printable, not a space, not one of RFC 7622's exclusions. Checked
 * first, so that the common all-ASCII localpart never goes through the UTF-8 decoder and the code point
 * lists below (which hold nothing ASCII beyond controls and space). */
static int local_ascii_ok(unsigned char c)
{
    switch (c) {
    case '"': case '&': case '\'': case '/': case ':': case '<': case '>': case '@': return 0;
    }
    return c > 0x20 && c < 0x7F;
}

/* localpart: the RFC 7622 exclusions, no spaces, controls or invisible code points */
static int check_local(const unsigned char *s, size_t n)
{
    if (n == 0 || n > JID_PART_MAX) return -1;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        if (s[i] < 0x80) {
            if (!local_ascii_ok(s[i++])) return -1;
            continue;
        }
        if (utf8_next(s, n, &i, &c) < 0) return -1;
        if (is_control(c) || is_space(c) || is_noncharacter(c) || is_invisible_or_unassigned(c)) return -1;
    }
    return 0;
}

/* "[IPv6 address]", kept with its brackets (the caller lowercases the hex digits) */
static int check_ip_literal(const unsigned char *s, size_t n)
{
    char inner[64];
    unsigned char addr[16];

    if (n < 3 || s[n - 1] != ']' || n - 2 >= sizeof inner) return -1;
    for (size_t i = 1; i < n - 1; i++) {
        unsigned char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
              c == '.'))
            return -1;
        inner[i - 1] = (char)c;
    }
    inner[n - 2] = '\0';
    return inet_pton(AF_INET6, inner, addr) == 1 ? 0 : -1;
}

/* domainpart: an IPv6 literal, or dot-separated non-empty labels of ASCII letters, digits, '-', '_'
 * and non-ASCII (IDN) code points; one trailing dot is dropped (*kept says how many bytes remain) */
static int check_domain(const unsigned char *s, size_t n, size_t *kept)
{
    *kept = n;
    if (n > 0 && s[0] == '[') return n <= JID_PART_MAX ? check_ip_literal(s, n) : -1;
    if (n > 0 && s[n - 1] == '.') n--;
    if (n == 0 || n > JID_PART_MAX) return -1;
    *kept = n;
    size_t label = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        if (s[i] < 0x80) c = s[i++];    /* ASCII: no decoding needed */
        else if (utf8_next(s, n, &i, &c) < 0) return -1;
        if (c == '.') {
            if (label == 0) return -1;
            label = 0;
        } else if (c < 0x80) {
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_'))
                return -1;
            label++;
        } else {
            if (is_control(c) || is_space(c) || is_noncharacter(c) || is_invisible_or_unassigned(c)) return -1;
            label++;
        }
    }
    if (label == 0) return -1;       /* ".." at the end, e.g. "example.." */
    return 0;
}

/* resourcepart as found in addresses: any UTF-8 but controls, kept as given */
static int check_resource(const unsigned char *s, size_t n)
{
    if (n == 0 || n > JID_PART_MAX) return -1;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        if (s[i] >= 0x20 && s[i] < 0x7F) {    /* printable ASCII: no decoding needed */
            i++;
            continue;
        }
        if (utf8_next(s, n, &i, &c) < 0 || is_control(c)) return -1;
    }
    return 0;
}

/* Every part is checked before anything is written, so *out is untouched on failure without parsing into
 * a 3 KiB copy first; only the bytes of each part (and its NUL) are written. */
int jid_parse(const char *s, jid *out)
{
    if (!s || !out) return -1;
    size_t len = strnlen(s, JID_INPUT_MAX + 1);
    if (len > JID_INPUT_MAX) return -1;
    const unsigned char *u = (const unsigned char *)s;
    const char *slash = memchr(s, '/', len);
    size_t bare_len = slash ? (size_t)(slash - s) : len;
    const char *at = memchr(s, '@', bare_len);
    size_t llen = at ? (size_t)(at - s) : 0, dstart = at ? llen + 1 : 0, dlen;
    const unsigned char *res = slash ? u + bare_len + 1 : u + len;    /* "" when there is no resource */
    size_t rlen = (size_t)(u + len - res);

    if (at && check_local(u, llen) < 0) return -1;
    if (check_domain(u + dstart, bare_len - dstart, &dlen) < 0) return -1;
    if (slash && check_resource(res, rlen) < 0) return -1;
    copy_lower(out->local, u, llen);
    copy_lower(out->domain, u + dstart, dlen);
    memcpy(out->resource, res, rlen);
    out->resource[rlen] = '\0';
    return 0;
}

/* copies the pieces (NULL ends the list) into out; the length, or -1 (out "") if it does not fit */
static int join(char *out, size_t n, const char *const *pieces)
{
    size_t len = 0;

    if (!out || n == 0) return -1;
    for (int p = 0; pieces[p]; p++) {
        size_t l = strlen(pieces[p]);
        if (l >= n - len) { out[0] = '\0'; return -1; }
        memcpy(out + len, pieces[p], l);
        len += l;
    }
    out[len] = '\0';
    return (int)len;
}

int jid_bare(const jid *j, char *out, size_t n)
{
    if (!j) return -1;
    const char *with_local[] = { j->local, "@", j->domain, NULL };
    const char *domain_only[] = { j->domain, NULL };
    return join(out, n, j->local[0] ? with_local : domain_only);
}

int jid_full(const jid *j, char *out, size_t n)
{
    if (!j) return -1;
    const char *pieces[6];
    int p = 0;
    if (j->local[0]) { pieces[p++] = j->local; pieces[p++] = "@"; }
    pieces[p++] = j->domain;
    if (j->resource[0]) { pieces[p++] = "/"; pieces[p++] = j->resource; }
    pieces[p] = NULL;
    return join(out, n, pieces);
}

int jid_resource_valid(const char *s)
{
    if (!s) return 0;
    size_t n = strnlen(s, JID_PART_MAX + 1);
    if (n == 0 || n > JID_PART_MAX) return 0;
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c = 0, first = 0;
    for (size_t i = 0; i < n;) {
        if (utf8_next(u, n, &i, &c) < 0) return 0;
        if (is_control(c) || is_noncharacter(c) || is_invisible_or_unassigned(c)) return 0;
        if (first == 0) first = c;     /* never NUL: strnlen stopped before any */
    }
    /* " romeo" and "romeo " would pass for "romeo", and an all-space nick for no nick at all */
    if (is_space(first) || is_space(c)) return 0;
    return 1;
}

int jid_bare_equal(const char *a, const char *b)
{
    if (!a || !b) return 0;
    size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
    return la == lb && memcmp(a, b, la) == 0;
}
