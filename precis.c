/* precis.c - the PRECIS Nickname profile (RFC 8266) of the FreeformClass (RFC 8264): enforcement (the nick
 * as shown) and the comparison key (the nick as matched): strict UTF-8, the FreeformClass code point rules
 * with their contextual rules, the space mapping, per-code-point toLowerCase and NFKC, on the Unicode data
 * in precis_tables.h. */
#include "precis.h"
#include "precis_tables.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Applying the rules is not idempotent for every input (RFC 8264 §7, RFC 8266 §4): they are applied until the
 * result no longer changes, at most 1 + 3 times, and a string still changing after that is refused. */
#define MAX_APPLICATIONS 4
/* Input longer than this many times the output buffer is refused unread: no nick that fits the buffer takes
 * that much more room before mapping (the most NFKC composition saves is under 3x, e.g. four code points of
 * an omega with three marks in 8 bytes becoming one in 3), save for runs of spaces, which need not be sent. */
#define MAX_INPUT_FACTOR 4

/* the working form: code points, with the canonical combining class in the top byte during NFKC */
#define CP_MASK 0x1FFFFFu
#define CCC_SHIFT 24

typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static int buf_reserve(cpbuf *b, size_t need)
{
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 32;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(uint32_t)) return -1;
        cap *= 2;
    }
    uint32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v) return -1;
    b->v = v;
    b->cap = cap;
    return 0;
}

static int buf_push(cpbuf *b, uint32_t x)
{
    if (b->n == b->cap && buf_reserve(b, b->n + 1) < 0) return -1;
    b->v[b->n++] = x;
    return 0;
}

/* ---- table lookups ---------------------------------------------------------------------------------- */

/* the value of a step table [lo << bits | value] at cp (the first entry's lo is 0) */
static uint32_t step_value(const uint32_t *t, size_t n, unsigned bits, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((t[mid] >> bits) <= cp) lo = mid;
        else hi = mid;
    }
    return t[lo] & ((1u << bits) - 1);
}

static unsigned prop_of(uint32_t cp) { return step_value(precis_prop, NELEM(precis_prop), PRECIS_PROP_BITS, cp); }
static unsigned class_of(uint32_t cp) { return prop_of(cp) & 15; }
static unsigned joining_type(uint32_t cp) { return (prop_of(cp) >> 4) & 7; }
static unsigned script_of(uint32_t cp) { return (prop_of(cp) >> 7) & 3; }

static unsigned ccc_of(uint32_t cp)
{
    if (cp < 0x300) return 0;
    return step_value(precis_ccc, NELEM(precis_ccc), 8, cp);
}

static int is_non_ascii_space(uint32_t cp)
{
    if (cp < 0xA0) return 0;
    size_t lo = 0, hi = NELEM(precis_zs);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (precis_zs[mid] == cp) return 1;
        if (precis_zs[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* toLowerCase of one code point: writes one or two code points to low, returns how many */
static int lower_of(uint32_t cp, uint32_t low[2])
{
    low[0] = cp;
    if (cp < 0x80) {
        if (cp >= 'A' && cp <= 'Z') low[0] = cp + 32;
        return 1;
    }
    for (size_t i = 0; i + 2 < NELEM(precis_lower_two); i += 3)
        if (precis_lower_two[i] == cp) {
            low[0] = precis_lower_two[i + 1];
            low[1] = precis_lower_two[i + 2];
            return 2;
        }
    size_t lo = 0, hi = NELEM(precis_lower_run);
    while (lo < hi) {                       /* first run starting after cp */
        size_t mid = lo + (hi - lo) / 2;
        if ((precis_lower_run[mid] >> 11) <= cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return 1;
    uint32_t run = precis_lower_run[lo - 1];
    uint32_t first = run >> 11, stride = ((run >> 10) & 1) + 1, count = run & 0x3FF;
    uint32_t off = cp - first;
    if (off % stride == 0 && off / stride < count) low[0] = (uint32_t)((int32_t)cp + precis_lower_delta[lo - 1]);
    return 1;
}

/* decode one UTF-8 sequence at s[*i] (n bytes in all) strictly per RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF, no truncated sequence. 0, or -1 when not UTF-8. */
static int utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp)
{
    unsigned char b = s[*i];
    uint32_t c, min;
    size_t len;
    if (b < 0x80) { *cp = b; (*i)++; return 0; }
    if (b >= 0xC2 && b <= 0xDF) { len = 2; c = b & 0x1F; min = 0x80; }
    else if (b >= 0xE0 && b <= 0xEF) { len = 3; c = b & 0x0F; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { len = 4; c = b & 0x07; min = 0x10000; }
    else return -1;
    if (n - *i < len) return -1;
    for (size_t k = 1; k < len; k++) {
        unsigned char t = s[*i + k];
        if ((t & 0xC0) != 0x80) return -1;
        c = c << 6 | (t & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
    *cp = c;
    *i += len;
    return 0;
}

static size_t utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

static size_t utf8_put(uint32_t cp, char *o)
{
    unsigned char *u = (unsigned char *)o;
    if (cp < 0x80) { u[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { u[0] = (unsigned char)(0xC0 | cp >> 6); u[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | cp >> 18);
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- NFKC ------------------------------------------------------------------------------------------- */

#define S_BASE 0xAC00u
#define L_BASE 0x1100u
#define V_BASE 0x1161u
#define T_BASE 0x11A7u
#define L_COUNT 19u
#define V_COUNT 21u
#define T_COUNT 28u
#define N_COUNT (V_COUNT * T_COUNT)
#define S_COUNT (L_COUNT * N_COUNT)

static size_t decomp_offset(size_t i)
{
    return precis_decomp_base[i / 64] + (precis_decomp_key[i] & 0x7FF);
}

/* the full compatibility decomposition of cp into d (at most PRECIS_DECOMP_MAX code points); returns how
 * many, 0 when cp decomposes to itself */
static size_t decompose_one(uint32_t cp, uint32_t d[PRECIS_DECOMP_MAX])
{
    if (cp < 0xA0) return 0;
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE, t = s % T_COUNT;
        d[0] = L_BASE + s / N_COUNT;
        d[1] = V_BASE + (s % N_COUNT) / T_COUNT;
        if (!t) return 2;
        d[2] = T_BASE + t;
        return 3;
    }
    size_t lo = 0, hi = NELEM(precis_decomp_key) - 1;      /* the last entry is a sentinel */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t k = precis_decomp_key[mid] >> 11;
        if (k == cp) {
            size_t at = decomp_offset(mid), end = decomp_offset(mid + 1), n = 0;
            while (at < end && n < PRECIS_DECOMP_MAX)
                if (utf8_next(precis_decomp_pool, end, &at, &d[n++]) < 0) return 0;   /* cannot happen */
            return n;
        }
        if (k < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* the primary composite of a and b, or 0 */
static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    uint64_t key = (uint64_t)a << 21 | b;
    size_t lo = 0, hi = NELEM(precis_comp);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t k = precis_comp[mid] >> 21;
        if (k == key) return (uint32_t)(precis_comp[mid] & CP_MASK);
        if (k < key) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* stable sort of v[0..n) by combining class (the top byte): insertion sort for the short runs real text has,
 * counting sort (through scratch) for long ones so that a flood of marks stays linear */
static int sort_marks(uint32_t *v, size_t n, cpbuf *scratch)
{
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            uint32_t x = v[i];
            size_t j = i;
            for (; j > 0 && (v[j - 1] >> CCC_SHIFT) > (x >> CCC_SHIFT); j--) v[j] = v[j - 1];
            v[j] = x;
        }
        return 0;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++) start[(v[i] >> CCC_SHIFT) + 1]++;
    for (size_t c = 1; c < 257; c++) start[c] += start[c - 1];
    if (buf_reserve(scratch, n) < 0) return -1;
    for (size_t i = 0; i < n; i++) scratch->v[start[v[i] >> CCC_SHIFT]++] = v[i];
    memcpy(v, scratch->v, n * sizeof *v);
    return 0;
}

/* NFKC of src into dst: full compatibility decomposition, canonical ordering, canonical composition */
static int nfkc(const cpbuf *src, cpbuf *dst, cpbuf *scratch)
{
    uint32_t d[PRECIS_DECOMP_MAX];
    dst->n = 0;
    if (buf_reserve(dst, src->n) < 0) return -1;
    for (size_t i = 0; i < src->n; i++) {
        uint32_t cp = src->v[i];
        size_t k = decompose_one(cp, d);
        if (!k) { d[0] = cp; k = 1; }
        for (size_t j = 0; j < k; j++)
            if (buf_push(dst, d[j] | (uint32_t)ccc_of(d[j]) << CCC_SHIFT) < 0) return -1;
    }

    uint32_t *v = dst->v;
    size_t n = dst->n;
    for (size_t i = 0; i < n;) {
        if (!(v[i] >> CCC_SHIFT)) { i++; continue; }
        size_t j = i;
        while (j < n && (v[j] >> CCC_SHIFT)) j++;
        if (j - i > 1 && sort_marks(v + i, j - i, scratch) < 0) return -1;
        i = j;
    }

    if (!n) return 0;
    size_t starter = 0, out = 1;
    int have_starter = !(v[0] >> CCC_SHIFT);
    unsigned last_ccc = have_starter ? 0 : 256;
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        unsigned ccc = x >> CCC_SHIFT;
        if (have_starter && (last_ccc < ccc || last_ccc == 0)) {
            uint32_t c = compose_pair(v[starter] & CP_MASK, x & CP_MASK);
            if (c) { v[starter] = c; continue; }       /* composites are starters: class 0 */
        }
        if (!ccc) { starter = out; have_starter = 1; }
        last_ccc = ccc;
        v[out++] = x;
    }
    dst->n = out;
    for (size_t i = 0; i < out; i++) v[i] &= CP_MASK;
    return 0;
}

/* ---- the profile ------------------------------------------------------------------------------------ */

/* additional mapping rule (RFC 8266 §2.1): non-ASCII spaces to U+0020, none at either end, no runs */
static int map_spaces(const cpbuf *src, cpbuf *dst)
{
    dst->n = 0;
    if (buf_reserve(dst, src->n) < 0) return -1;
    int pending = 0;
    for (size_t i = 0; i < src->n; i++) {
        uint32_t cp = src->v[i];
        if (cp == ' ' || is_non_ascii_space(cp)) { pending = dst->n > 0; continue; }
        if (pending) dst->v[dst->n++] = ' ';
        pending = 0;
        dst->v[dst->n++] = cp;
    }
    return 0;
}

/* case mapping rule (RFC 8266 §2.1): toLowerCase, code point by code point */
static int map_lower(const cpbuf *src, cpbuf *dst)
{
    dst->n = 0;
    if (buf_reserve(dst, src->n) < 0) return -1;
    for (size_t i = 0; i < src->n; i++) {
        uint32_t low[2];
        int k = lower_of(src->v[i], low);
        for (int j = 0; j < k; j++)
            if (buf_push(dst, low[j]) < 0) return -1;
    }
    return 0;
}

static const char *class_reason(unsigned cls)
{
    switch (cls) {
    case PRECIS_C_UNASSIGNED: return "nickname contains an unassigned code point";
    case PRECIS_C_CONTROL: return "nickname contains a control character";
    case PRECIS_C_IGNORABLE: return "nickname contains an ignorable code point";
    case PRECIS_C_NONCHARACTER: return "nickname contains a noncharacter";
    case PRECIS_C_HANGUL_JAMO: return "nickname contains a conjoining Hangul jamo";
    case PRECIS_C_PRIVATE_USE: return "nickname contains a private-use code point";
    default: return "nickname contains a disallowed code point";
    }
}

/* ZERO WIDTH NON-JOINER (RFC 5892 A.1): after a virama, or between a left- or dual-joining letter and a
 * right- or dual-joining one, with only transparent code points between */
static int zwnj_ok(const uint32_t *v, size_t n, size_t i)
{
    if (i > 0 && ccc_of(v[i - 1]) == 9) return 1;
    size_t j = i;
    while (j > 0 && joining_type(v[j - 1]) == PRECIS_JT_T) j--;
    if (j == 0) return 0;
    unsigned before = joining_type(v[j - 1]);
    if (before != PRECIS_JT_L && before != PRECIS_JT_D) return 0;
    size_t k = i + 1;
    while (k < n && joining_type(v[k]) == PRECIS_JT_T) k++;
    if (k == n) return 0;
    unsigned after = joining_type(v[k]);
    return after == PRECIS_JT_R || after == PRECIS_JT_D;
}

/* the contextual rules of RFC 5892 appendix A for the CONTEXTO code points */
static int contexto_ok(const uint32_t *v, size_t n, size_t i)
{
    uint32_t cp = v[i];
    if (cp == 0x00B7) return i > 0 && v[i - 1] == 'l' && i + 1 < n && v[i + 1] == 'l';
    if (cp == 0x0375) return i + 1 < n && script_of(v[i + 1]) == PRECIS_SC_GREEK;
    if (cp == 0x05F3 || cp == 0x05F4) return i > 0 && script_of(v[i - 1]) == PRECIS_SC_HEBREW;
    if (cp == 0x30FB) {
        for (size_t k = 0; k < n; k++)
            if (script_of(v[k]) == PRECIS_SC_KANA_HAN) return 1;
        return 0;
    }
    if (cp >= 0x0660 && cp <= 0x0669) {          /* Arabic-Indic digits: not mixed with the extended ones */
        for (size_t k = 0; k < n; k++)
            if (v[k] >= 0x06F0 && v[k] <= 0x06F9) return 0;
        return 1;
    }
    if (cp >= 0x06F0 && cp <= 0x06F9) {
        for (size_t k = 0; k < n; k++)
            if (v[k] >= 0x0660 && v[k] <= 0x0669) return 0;
        return 1;
    }
    return 0;                                    /* a CONTEXTO code point without a rule is refused */
}

/* the FreeformClass behavioural rules (RFC 8264 §4.3, §8) on a whole string; NULL when it conforms. The
 * contextual rules are checked only when with_context: preparation looks at code points alone. */
static const char *check_class(const cpbuf *s, int with_context)
{
    /* the contextual rules are O(n) each for a few code points: do them once per kind */
    int katakana_dot_done = 0, arabic_digits_done = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t cp = s->v[i];
        if (cp >= 0x20 && cp < 0x7F) continue;
        unsigned cls = class_of(cp);
        if (cls == PRECIS_C_VALID) continue;
        if (cls == PRECIS_C_CONTEXTJ) {
            if (!with_context) continue;
            int ok = cp == 0x200D ? (i > 0 && ccc_of(s->v[i - 1]) == 9) : zwnj_ok(s->v, s->n, i);
            if (!ok) return "nickname contains a zero-width joiner or non-joiner where it is not allowed";
            continue;
        }
        if (cls == PRECIS_C_CONTEXTO) {
            if (!with_context) continue;
            int *done = cp == 0x30FB ? &katakana_dot_done
                      : (cp >= 0x0660 && cp <= 0x06F9) ? &arabic_digits_done : NULL;
            if (done && *done) continue;
            if (!contexto_ok(s->v, s->n, i)) return "nickname contains a code point not allowed in that position";
            if (done) *done = 1;
            continue;
        }
        return class_reason(cls);
    }
    return NULL;
}

static int same(const cpbuf *a, const cpbuf *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

/* the nick is plain printable ASCII with single interior spaces: the rules change nothing but case */
static int ascii_simple(const unsigned char *s, size_t n)
{
    if (n == 0 || s[0] == ' ' || s[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] > 0x7E) return 0;
        if (s[i] == ' ' && s[i + 1] == ' ') return 0;     /* s[n - 1] is not a space: i + 1 < n */
    }
    return 1;
}

static int refuse(char *out, size_t outsz, const char **why, const char *reason)
{
    if (out && outsz) out[0] = '\0';
    if (why) *why = reason;
    return -1;
}

/* the working buffers of one call */
typedef struct work {
    cpbuf cur, spaced, lowered, next, scratch;
} work;

/* applies the rules (with the case mapping rule when lowercase) to w->cur until it stops changing (RFC 8264
 * §7): the additional mapping rule, the case mapping rule, NFKC, then the FreeformClass rules, the contextual
 * ones only when with_context. NULL when w->cur now holds a fixed point that conforms, else the reason. */
static const char *settle(work *w, int lowercase, int with_context)
{
    for (int round = 0; round < MAX_APPLICATIONS; round++) {
        if (map_spaces(&w->cur, &w->spaced) < 0) return "out of memory";
        const cpbuf *mapped = &w->spaced;
        if (lowercase) {
            if (map_lower(&w->spaced, &w->lowered) < 0) return "out of memory";
            mapped = &w->lowered;
        }
        if (nfkc(mapped, &w->next, &w->scratch) < 0) return "out of memory";
        const char *reason = check_class(&w->next, with_context);
        if (reason) return reason;
        int stable = same(&w->cur, &w->next);
        cpbuf t = w->cur;
        w->cur = w->next;
        w->next = t;
        if (stable) return NULL;
    }
    return "nickname does not settle under the nickname rules";
}

/* the enforced form of in (RFC 8266 §2.3); with key, the comparison rules (§2.4) applied to that form */
static int apply_profile(const char *in, size_t inlen, char *out, size_t outsz, const char **why, int key)
{
    const unsigned char *s = (const unsigned char *)in;
    if (!in) inlen = 0;
    if (ascii_simple(s, inlen)) {
        if (inlen >= outsz || inlen > INT32_MAX) return refuse(out, outsz, why, "nickname is too long");
        for (size_t i = 0; i < inlen; i++)
            out[i] = (char)(key && s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
        out[inlen] = '\0';
        return (int)inlen;
    }
    if (inlen / MAX_INPUT_FACTOR > outsz) return refuse(out, outsz, why, "nickname is too long");

    work w;
    memset(&w, 0, sizeof w);
    const char *reason = NULL;
    size_t len = 0;
    if (buf_reserve(&w.cur, inlen + 1) < 0) { reason = "out of memory"; goto done; }
    for (size_t i = 0; i < inlen;)
        if (utf8_next(s, inlen, &i, &w.cur.v[w.cur.n++]) < 0) { reason = "nickname is not valid UTF-8"; goto done; }
    /* preparation (RFC 8266 §2.2): the code points must be in the FreeformClass to begin with */
    if ((reason = check_class(&w.cur, 0))) goto done;
    if ((reason = settle(&w, 0, 1))) goto done;
    /* The key is taken from the enforced form, the nick as the room shows it. Keying the raw input instead
     * differs for a few code points where toLowerCase and NFKC do not commute: U+03F9 GREEK CAPITAL LUNATE
     * SIGMA SYMBOL enforces to U+03A3 SIGMA (key U+03C3), but lowercased first it becomes U+03F2, whose NFKC
     * is U+03C2 FINAL SIGMA; two occupants could then both show as SIGMA under different keys. The
     * comparison rules (RFC 8266 §2.4) list no behavioural rules: the contexts were checked on the enforced
     * form, and are not checked again on a key that is never shown (lowercasing can move a mark between a
     * virama and a joiner), so every enforced nick has a key. */
    if (key && (reason = settle(&w, 1, 0))) goto done;
    if (!w.cur.n) { reason = "empty nickname"; goto done; }

    for (size_t i = 0; i < w.cur.n; i++) len += utf8_len(w.cur.v[i]);
    if (len >= outsz || len > INT32_MAX) { reason = "nickname is too long"; goto done; }
    size_t at = 0;
    for (size_t i = 0; i < w.cur.n; i++) at += utf8_put(w.cur.v[i], out + at);
    out[at] = '\0';

done:
    free(w.cur.v);
    free(w.spaced.v);
    free(w.lowered.v);
    free(w.next.v);
    free(w.scratch.v);
    if (reason) return refuse(out, outsz, why, reason);
    return (int)len;
}

int precis_nick_enforce(const char *in, size_t inlen, char *out, size_t outsz, const char **why)
{
    return apply_profile(in, inlen, out, outsz, why, 0);
}

int precis_nick_key(const char *in, size_t inlen, char *out, size_t outsz, const char **why)
{
    return apply_profile(in, inlen, out, outsz, why, 1);
}
