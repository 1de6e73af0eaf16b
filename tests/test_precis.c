/* test_precis.c - the PRECIS Nickname profile (RFC 8266): enforcement, comparison keys, the FreeformClass
 * rules, NFKC, UTF-8 strictness, output bounds and idempotence. */
#include "check.h"
#include "precis.h"

#include <stdlib.h>

static char out[1024];
static const char *why;

static int enforce_n(const char *s, size_t n) { why = NULL; return precis_nick_enforce(s, n, out, sizeof out, &why); }
static int key_n(const char *s, size_t n) { why = NULL; return precis_nick_key(s, n, out, sizeof out, &why); }

/* s with printable ASCII as is and anything else as <U+XXXX> (bytes that are not UTF-8 as <xNN>), so that a
 * failure involving combining marks or look-alikes is legible */
static const char *shown(const char *s, char *buf, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    buf[0] = '\0';
    while (*u && o + 16 < n) {
        unsigned long cp = *u;
        int len = *u < 0x80 ? 1 : (*u & 0xE0) == 0xC0 ? 2 : (*u & 0xF0) == 0xE0 ? 3 : (*u & 0xF8) == 0xF0 ? 4 : 0;
        int ok = len > 0;
        if (len > 1) cp = *u & (0x7F >> len);
        for (int k = 1; ok && k < len; k++) {
            if ((u[k] & 0xC0) != 0x80) ok = 0;
            else cp = cp << 6 | (u[k] & 0x3F);
        }
        if (!ok) { o += (size_t)snprintf(buf + o, n - o, "<x%02X>", *u); u++; continue; }
        if (cp >= 0x20 && cp < 0x7F) buf[o++] = (char)cp, buf[o] = '\0';
        else o += (size_t)snprintf(buf + o, n - o, "<U+%04lX>", cp);
        u += len;
    }
    if (*u) snprintf(buf + o, n - o, "...");
    return buf;
}

#define SAME_TEXT(expected, got) do { \
    const char *e_ = (expected), *g_ = (got); \
    char eb_[2048], gb_[2048]; \
    CHECK(strcmp(e_, g_) == 0, "\n  expected: \"%s\"\n  got:      \"%s\"", \
          shown(e_, eb_, sizeof eb_), shown(g_, gb_, sizeof gb_)); \
} while (0)

/* enforcement of s gives expected (kept as given, case included) */
#define ENFORCES_TO(s, expected) do { \
    char sb_[2048]; \
    int r_ = enforce_n((s), strlen(s)); \
    CHECK(r_ >= 0, "enforce(\"%s\") was refused: %s", shown((s), sb_, sizeof sb_), why ? why : "(no reason)"); \
    if (r_ >= 0) { SAME_TEXT((expected), out); CHECK_INT(strlen(expected), r_); } \
} while (0)

/* the comparison key of s is expected */
#define KEY_IS(s, expected) do { \
    char sb_[2048]; \
    int r_ = key_n((s), strlen(s)); \
    CHECK(r_ >= 0, "key(\"%s\") was refused: %s", shown((s), sb_, sizeof sb_), why ? why : "(no reason)"); \
    if (r_ >= 0) { SAME_TEXT((expected), out); CHECK_INT(strlen(expected), r_); } \
} while (0)

/* both enforcement and the key refuse s (n bytes) with reason, and leave out empty */
#define REFUSED_N(s, n, reason) do { \
    char sb_[2048], ob_[2048]; \
    int r_ = enforce_n((s), (n)); \
    CHECK(r_ == -1, "enforce(\"%s\") should be refused (%s), got \"%s\"", shown((s), sb_, sizeof sb_), (reason), \
          shown(out, ob_, sizeof ob_)); \
    CHECK_STR((reason), r_ < 0 ? why : "(accepted)"); \
    CHECK_STR("", out); \
    r_ = key_n((s), (n)); \
    CHECK(r_ == -1, "key(\"%s\") should be refused (%s), got \"%s\"", shown((s), sb_, sizeof sb_), (reason), \
          shown(out, ob_, sizeof ob_)); \
    CHECK_STR((reason), r_ < 0 ? why : "(accepted)"); \
} while (0)
#define REFUSED(s, reason) REFUSED_N((s), strlen(s), (reason))

static int same_key(const char *a, const char *b)
{
    char ka[1024], kb[1024];
    const char *w;
    int ra = precis_nick_key(a, strlen(a), ka, sizeof ka, &w);
    int rb = precis_nick_key(b, strlen(b), kb, sizeof kb, &w);
    return ra >= 0 && rb >= 0 && strcmp(ka, kb) == 0;
}

static void test_ascii(void)
{
    ENFORCES_TO("Romeo", "Romeo");
    KEY_IS("Romeo", "romeo");
    KEY_IS("ROMEO", "romeo");
    KEY_IS("romeo", "romeo");
    ENFORCES_TO("Juliet Capulet", "Juliet Capulet");
    KEY_IS("Juliet Capulet", "juliet capulet");
    ENFORCES_TO("~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./");
    ENFORCES_TO("x", "x");
    /* the slow path's answers for what the fast path does not take */
    ENFORCES_TO(" Romeo", "Romeo");
    ENFORCES_TO("Romeo ", "Romeo");
    ENFORCES_TO("Romeo  Montague", "Romeo Montague");
    KEY_IS("  ROMEO   MONTAGUE  ", "romeo montague");
    REFUSED("Romeo\tMontague", "nickname contains a control character");
    REFUSED("Romeo\x7F", "nickname contains a control character");
    REFUSED_N("Rom\0eo", 6, "nickname contains a control character");
    REFUSED("\n", "nickname contains a control character");
}

static void test_spaces(void)
{
    /* every Zs maps to U+0020 (OGHAM SPACE MARK has no NFKC mapping: only the additional rule maps it) */
    ENFORCES_TO("St\xC2\xA0Peter", "St Peter");                    /* NO-BREAK SPACE */
    ENFORCES_TO("St\xC2\xA0\xC2\xA0Peter", "St Peter");            /* the RFC's own example */
    ENFORCES_TO("St\xE1\x9A\x80Peter", "St Peter");                /* OGHAM SPACE MARK */
    ENFORCES_TO("St\xE3\x80\x80Peter", "St Peter");                /* IDEOGRAPHIC SPACE */
    ENFORCES_TO("St\xE2\x80\x82\xE2\x80\xAF\xE2\x81\x9F Peter", "St Peter");   /* EN, NARROW NBSP, MEDIUM MATH */
    ENFORCES_TO("stpeter\xC2\xA0", "stpeter");
    ENFORCES_TO("\xE3\x80\x80 \xE1\x9A\x80stpeter", "stpeter");
    ENFORCES_TO("  a   b  ", "a b");
    KEY_IS("\xE3\x80\x80" "Foo\xC2\xA0\xC2\xA0" "Bar ", "foo bar");
    CHECK(same_key("foo bar", "Foo\xE2\x80\x83\xE2\x80\x83" "BAR"), "spaces and case do not make another nick");
    /* not spaces: other separators are disallowed, not mapped */
    REFUSED("a\xE2\x80\xA8" "b", "nickname contains a disallowed code point");   /* LINE SEPARATOR */
    REFUSED("a\xE2\x80\x8B" "b", "nickname contains an ignorable code point");    /* ZERO WIDTH SPACE */
}

static void test_empty(void)
{
    REFUSED("", "empty nickname");
    REFUSED(" ", "empty nickname");
    REFUSED("     ", "empty nickname");
    REFUSED("\xC2\xA0\xE3\x80\x80\xE1\x9A\x80", "empty nickname");
    REFUSED("\xE2\x80\x82 \xE2\x80\x83", "empty nickname");
    why = NULL;
    CHECK_INT(-1, precis_nick_enforce(NULL, 0, out, sizeof out, &why));
    CHECK_STR("empty nickname", why);
}

static void test_width_and_compat(void)
{
    ENFORCES_TO("\xEF\xBC\xB2\xEF\xBC\xAF\xEF\xBC\xAD\xEF\xBC\xA5\xEF\xBC\xAF", "ROMEO");   /* fullwidth */
    KEY_IS("\xEF\xBC\xB2\xEF\xBC\xAF\xEF\xBC\xAD\xEF\xBC\xA5\xEF\xBC\xAF", "romeo");
    KEY_IS("\xEF\xBD\x92\xEF\xBD\x8F\xEF\xBD\x8D\xEF\xBD\x85\xEF\xBD\x8F", "romeo");
    CHECK(same_key("Romeo", "ROMEO") && same_key("ROMEO", "\xEF\xBD\x92\xEF\xBD\x8F\xEF\xBD\x8D\xEF\xBD\x85\xEF\xBD\x8F"),
          "Romeo, ROMEO and fullwidth romeo are one nick");
    /* halfwidth katakana to fullwidth, the voiced sound mark composed in */
    ENFORCES_TO("\xEF\xBD\xB6\xEF\xBE\x80\xEF\xBD\xB6\xEF\xBE\x85", "\xE3\x82\xAB\xE3\x82\xBF\xE3\x82\xAB\xE3\x83\x8A");
    ENFORCES_TO("\xEF\xBD\xB6\xEF\xBE\x9E", "\xE3\x82\xAC");
    ENFORCES_TO("\xEF\xAC\x81" "sh", "fish");                                 /* fi ligature */
    ENFORCES_TO("Richard \xE2\x85\xA3", "Richard IV");                        /* ROMAN NUMERAL FOUR */
    KEY_IS("Richard \xE2\x85\xA3", "richard iv");
    ENFORCES_TO("\xE2\x84\xA6", "\xCE\xA9");                                  /* OHM SIGN -> OMEGA */
    ENFORCES_TO("\xE2\x84\xAB", "\xC3\x85");                                  /* ANGSTROM SIGN -> A RING */
    ENFORCES_TO("\xC7\x85", "D\xC5\xBE");                                     /* titlecase Dz caron */
    ENFORCES_TO("\xF0\x9D\x90\x80\xF0\x9D\x90\x9B", "Ab");                    /* mathematical bold */
    ENFORCES_TO("x\xC2\xB2", "x2");                                           /* superscript two */
    /* the longest decomposition: ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM, 18 code points */
    ENFORCES_TO("\xEF\xB7\xBA", "\xD8\xB5\xD9\x84\xD9\x89 \xD8\xA7\xD9\x84\xD9\x84\xD9\x87 \xD8\xB9\xD9\x84\xD9\x8A"
                                "\xD9\x87 \xD9\x88\xD8\xB3\xD9\x84\xD9\x85");
}

static void test_normalization(void)
{
    ENFORCES_TO("e\xCC\x81", "\xC3\xA9");                             /* e + acute composes */
    ENFORCES_TO("\xC3\xA9", "\xC3\xA9");
    CHECK(same_key("caf\xC3\xA9", "CAFE\xCC\x81"), "precomposed and decomposed are one nick");
    /* canonical ordering: dot below (220) goes before circumflex (230), either way round */
    ENFORCES_TO("a\xCC\xA3\xCC\x82", "\xE1\xBA\xAD");
    ENFORCES_TO("a\xCC\x82\xCC\xA3", "\xE1\xBA\xAD");
    ENFORCES_TO("s\xCC\x87\xCC\xA3", "\xE1\xB9\xA9");
    ENFORCES_TO("q\xCC\x87\xCC\xA3", "q\xCC\xA3\xCC\x87");            /* no precomposed q: reordered only */
    ENFORCES_TO("\xE1\xBA\x9B\xCC\xA3", "\xE1\xB9\xA9");              /* long s with dot above + dot below */
    /* blocked: the second acute cannot reach the a past the first */
    ENFORCES_TO("a\xCC\x81\xCC\x81", "\xC3\xA1\xCC\x81");
    /* composition exclusions stay decomposed: DEVANAGARI QA */
    ENFORCES_TO("\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC");
    /* a non-starter decomposition: COMBINING GREEK DIALYTIKA TONOS is diaeresis + acute, and the diaeresis
     * then composes with the x */
    ENFORCES_TO("x\xCD\x84", "\xE1\xBA\x8D\xCC\x81");
    /* more than 16 marks in one run: 20 x (acute, dot below) sort into 20 dots below then 20 acutes, and the
     * first dot below composes with the a */
    {
        char in[128], exp[128];
        size_t n = 0, m = 0;
        in[n++] = 'a';
        for (int i = 0; i < 20; i++) { memcpy(in + n, "\xCC\x81\xCC\xA3", 4); n += 4; }
        in[n] = '\0';
        memcpy(exp, "\xE1\xBA\xA1", 3); m = 3;
        for (int i = 0; i < 19; i++) { memcpy(exp + m, "\xCC\xA3", 2); m += 2; }
        for (int i = 0; i < 20; i++) { memcpy(exp + m, "\xCC\x81", 2); m += 2; }
        exp[m] = '\0';
        ENFORCES_TO(in, exp);
    }
    /* Hangul: syllables stay, compatibility jamo compose into a syllable */
    ENFORCES_TO("\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4", "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4");
    ENFORCES_TO("\xE3\x84\xB1\xE3\x85\x8F", "\xEA\xB0\x80");            /* compat KIYEOK + A */
    ENFORCES_TO("\xEA\xB0\x80\xEA\xB0\x81", "\xEA\xB0\x80\xEA\xB0\x81"); /* GA, GAG */
    /* a spacing diaeresis is SPACE + COMBINING DIAERESIS under NFKC; the space then goes at the start */
    ENFORCES_TO("\xC2\xA8", "\xCC\x88");
    ENFORCES_TO("a\xC2\xA8", "a \xCC\x88");
}

static void test_case(void)
{
    ENFORCES_TO("StPeter", "StPeter");
    KEY_IS("StPeter", "stpeter");
    CHECK(same_key("stpeter", "StPeter"), "case does not make another nick");
    /* RFC 8266 table 1 */
    KEY_IS("Foo", "foo");
    KEY_IS("foo", "foo");
    KEY_IS("Foo Bar", "foo bar");
    KEY_IS("foo bar", "foo bar");
    KEY_IS("\xCE\xA3", "\xCF\x83");                                    /* SIGMA -> sigma */
    KEY_IS("\xCF\x83", "\xCF\x83");
    KEY_IS("\xCF\x82", "\xCF\x82");                                    /* final sigma stays */
    KEY_IS("\xCF\x94", "\xCF\x8B");                                    /* the RFC's non-idempotent example */
    KEY_IS("\xE2\x99\x9A", "\xE2\x99\x9A");                            /* BLACK CHESS KING */
    KEY_IS("Richard \xE2\x85\xA3", "richard iv");
    CHECK(same_key("\xCE\xA3", "\xCF\x83"), "capital and small sigma are one nick");
    CHECK(!same_key("\xCE\xA3", "\xCF\x82"), "sigma and final sigma are different nicks (toLowerCase, not case folding)");
    CHECK(!same_key("\xCF\x83", "\xCF\x82"), "sigma and final sigma are different nicks");
    /* enforcement keeps case */
    ENFORCES_TO("\xCE\xA3", "\xCE\xA3");
    ENFORCES_TO("\xCF\x94", "\xCE\xAB");                               /* NFKC only: UPSILON WITH DIALYTIKA */
    /* toLowerCase of a code point can be two: CAPITAL I WITH DOT ABOVE -> i + COMBINING DOT ABOVE */
    KEY_IS("\xC4\xB0", "i\xCC\x87");
    ENFORCES_TO("\xC4\xB0", "\xC4\xB0");
    KEY_IS("\xC3\x9F", "\xC3\x9F");                                    /* sharp s is lowercase already */
    KEY_IS("\xE1\xBA\x9E", "\xC3\x9F");                                /* capital sharp s */
    KEY_IS("\xC7\x85", "d\xC5\xBE");                                   /* titlecase Dz caron */
    KEY_IS("\xE1\xBE\xAF", "\xE1\xBE\xA7");                            /* omega with marks and prosgegrammeni */
    KEY_IS("\xF0\x90\x90\x80", "\xF0\x90\x90\xA8");                    /* DESERET CAPITAL LONG I */
    KEY_IS("\xD0\x9F\xD0\xA0\xD0\x98\xD0\x92\xD0\x95\xD0\xA2", "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82");
    KEY_IS("\xC4\x80\xC4\x82\xC4\x84", "\xC4\x81\xC4\x83\xC4\x85");    /* alternating upper/lower block */
    KEY_IS("\xE2\x92\xB6", "a");                                       /* CIRCLED A -> circled a -> a */
    /* the key is taken from the enforced form: GREEK CAPITAL LUNATE SIGMA SYMBOL shows as SIGMA, so it must
     * be the same nick as SIGMA (lowercasing it first would give small lunate sigma, NFKC final sigma) */
    ENFORCES_TO("\xCF\xB9", "\xCE\xA3");
    KEY_IS("\xCF\xB9", "\xCF\x83");
    CHECK(same_key("\xCF\xB9", "\xCE\xA3"), "lunate sigma and sigma show alike, so they are one nick");
    /* lowercasing can move a mark between a virama and a joiner: the contexts are the enforced form's */
    ENFORCES_TO("\xC4\xB0\xE0\xA5\x8D\xE2\x80\x8D", "\xC4\xB0\xE0\xA5\x8D\xE2\x80\x8D");
    KEY_IS("\xC4\xB0\xE0\xA5\x8D\xE2\x80\x8D", "i\xE0\xA5\x8D\xCC\x87\xE2\x80\x8D");
    KEY_IS("\xF0\x9F\x84\xB0", "a");                                   /* SQUARED A: NFKC A, lowered next round */
}

static void test_freeform_class(void)
{
    REFUSED("a\x01", "nickname contains a control character");
    REFUSED("a\xC2\x85", "nickname contains a control character");              /* NEL */
    REFUSED("a\xCD\xB8", "nickname contains an unassigned code point");         /* U+0378 */
    REFUSED("\xF3\xA0\x82\x80", "nickname contains an unassigned code point");   /* U+E0080 */
    REFUSED("a\xEF\xB7\x90", "nickname contains a noncharacter");               /* U+FDD0 */
    REFUSED("a\xEF\xBF\xBE", "nickname contains a noncharacter");               /* U+FFFE */
    REFUSED("\xF4\x8F\xBF\xBF", "nickname contains a noncharacter");            /* U+10FFFF */
    REFUSED("\xEE\x80\x80", "nickname contains a private-use code point");      /* U+E000 */
    REFUSED("\xF3\xB0\x80\x80", "nickname contains a private-use code point");  /* U+F0000 */
    REFUSED("soft\xC2\xADhyphen", "nickname contains an ignorable code point");
    REFUSED("\xEF\xBB\xBF" "bom", "nickname contains an ignorable code point");
    REFUSED("\xE2\x9D\xA4\xEF\xB8\x8F", "nickname contains an ignorable code point");   /* VS16 */
    REFUSED("\xF3\xA0\x80\x81" "tag", "nickname contains an ignorable code point");     /* LANGUAGE TAG */
    REFUSED("\xE3\x85\xA4", "nickname contains an ignorable code point");               /* HANGUL FILLER */
    REFUSED("\xE1\x84\x80", "nickname contains a conjoining Hangul jamo");              /* CHOSEONG KIYEOK */
    REFUSED("\xE1\x84\x80\xE1\x85\xA1", "nickname contains a conjoining Hangul jamo");  /* even if they'd compose */
    REFUSED("\xE3\x85\x8B\xE3\x85\x8B", "nickname contains a conjoining Hangul jamo");  /* compat jamo, NFKC */
    REFUSED("a\xD9\x80" "b", "nickname contains a disallowed code point");              /* TATWEEL */
    REFUSED("\xD8\x80" "1", "nickname contains a disallowed code point");               /* ARABIC NUMBER SIGN */
    REFUSED("a\xE2\x80\xA9", "nickname contains a disallowed code point");              /* PARAGRAPH SEPARATOR */
    /* valid: symbols, punctuation, letters of any script, other letters and digits, emoji */
    ENFORCES_TO("\xE2\x99\x9A", "\xE2\x99\x9A");
    ENFORCES_TO("\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80");
    ENFORCES_TO("\xE2\x82\xAC\xC2\xA7\xC2\xBF", "\xE2\x82\xAC\xC2\xA7\xC2\xBF");
    ENFORCES_TO("\xE5\x90\x8D\xE5\x89\x8D", "\xE5\x90\x8D\xE5\x89\x8D");
    ENFORCES_TO("\xD7\xA8\xD7\x95\xD7\x9E\xD7\x99\xD7\x90\xD7\x95", "\xD7\xA8\xD7\x95\xD7\x9E\xD7\x99\xD7\x90\xD7\x95");
    ENFORCES_TO("\xC3\x9F\xC3\x9F", "\xC3\x9F\xC3\x9F");
    ENFORCES_TO("\xE3\x80\x87", "\xE3\x80\x87");                    /* IDEOGRAPHIC NUMBER ZERO, an exception */
    ENFORCES_TO("a\xD2\x88", "a\xD2\x88");                          /* enclosing mark (Me) */
}

static void test_contextual_rules(void)
{
    ENFORCES_TO("l\xC2\xB7l", "l\xC2\xB7l");                                          /* Catalan ela geminada */
    ENFORCES_TO("Col\xC2\xB7legi", "Col\xC2\xB7legi");
    REFUSED("a\xC2\xB7" "b", "nickname contains a code point not allowed in that position");
    REFUSED("l\xC2\xB7", "nickname contains a code point not allowed in that position");
    REFUSED("\xC2\xB7l", "nickname contains a code point not allowed in that position");
    ENFORCES_TO("\xCD\xB5\xCE\xB1", "\xCD\xB5\xCE\xB1");                             /* keraia + alpha */
    REFUSED("\xCD\xB5" "a", "nickname contains a code point not allowed in that position");
    ENFORCES_TO("\xD7\x90\xD7\xB3", "\xD7\x90\xD7\xB3");                             /* alef + geresh */
    ENFORCES_TO("\xD7\x90\xD7\xB4\xD7\x91", "\xD7\x90\xD7\xB4\xD7\x91");             /* gershayim */
    REFUSED("a\xD7\xB3", "nickname contains a code point not allowed in that position");
    ENFORCES_TO("\xE3\x82\xAB\xE3\x83\xBB\xE3\x82\xAB", "\xE3\x82\xAB\xE3\x83\xBB\xE3\x82\xAB");   /* katakana dot */
    ENFORCES_TO("\xE3\x83\xBB\xE6\x9D\xB1\xE3\x83\xBB", "\xE3\x83\xBB\xE6\x9D\xB1\xE3\x83\xBB");   /* with Han */
    REFUSED("a\xE3\x83\xBB" "b", "nickname contains a code point not allowed in that position");
    REFUSED("\xEF\xBD\xA5", "nickname contains a code point not allowed in that position");  /* halfwidth, NFKC */
    ENFORCES_TO("\xD9\xA1\xD9\xA2", "\xD9\xA1\xD9\xA2");                             /* Arabic-Indic 12 */
    ENFORCES_TO("\xDB\xB1\xDB\xB2", "\xDB\xB1\xDB\xB2");                             /* extended 12 */
    REFUSED("\xD9\xA1\xDB\xB2", "nickname contains a code point not allowed in that position");
    /* ZWJ only after a virama */
    ENFORCES_TO("\xE0\xA4\x95\xE0\xA5\x8D\xE2\x80\x8D\xE0\xA4\xB7", "\xE0\xA4\x95\xE0\xA5\x8D\xE2\x80\x8D\xE0\xA4\xB7");
    REFUSED("a\xE2\x80\x8D" "b", "nickname contains a zero-width joiner or non-joiner where it is not allowed");
    REFUSED("\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9",
            "nickname contains a zero-width joiner or non-joiner where it is not allowed");   /* emoji ZWJ sequence */
    /* ZWNJ after a virama, or between joining letters: Persian mi-khaham */
    ENFORCES_TO("\xE0\xA4\x95\xE0\xA5\x8D\xE2\x80\x8C\xE0\xA4\xB7", "\xE0\xA4\x95\xE0\xA5\x8D\xE2\x80\x8C\xE0\xA4\xB7");
    ENFORCES_TO("\xD9\x85\xDB\x8C\xE2\x80\x8C\xD8\xAE\xD9\x88\xD8\xA7\xD9\x87\xD9\x85",
                "\xD9\x85\xDB\x8C\xE2\x80\x8C\xD8\xAE\xD9\x88\xD8\xA7\xD9\x87\xD9\x85");
    ENFORCES_TO("\xD8\xA8\xD9\x8E\xE2\x80\x8C\xD9\x87", "\xD8\xA8\xD9\x8E\xE2\x80\x8C\xD9\x87");   /* fatha between */
    REFUSED("\xD8\xA7\xE2\x80\x8C\xD8\xA8",
            "nickname contains a zero-width joiner or non-joiner where it is not allowed");   /* ALEF joins right only */
    REFUSED("\xD8\xA8\xE2\x80\x8C",
            "nickname contains a zero-width joiner or non-joiner where it is not allowed");
    REFUSED("a\xE2\x80\x8C" "b", "nickname contains a zero-width joiner or non-joiner where it is not allowed");
}

static void test_utf8(void)
{
    const char *bad[] = {
        "\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xE0\x9F\xBF", "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF",  /* overlong */
        "\xED\xA0\x80", "\xED\xBF\xBF", "\xED\xA0\xBD\xED\xB8\x80",                                     /* surrogates */
        "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xF7\xBF\xBF\xBF", "\xF8\x88\x80\x80\x80",              /* > 10FFFF */
        "\xE2\x82", "\xF0\x9F\x98", "\xC3", "a\xE2\x82",                                                /* truncated */
        "\x80", "a\xBFz", "\xFE", "\xFF", "\xC3\x28", "\xE2\x28\xA1", "Rom\xE9o",                     /* stray */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        REFUSED(bad[i], "nickname is not valid UTF-8");
    /* the edges that are valid */
    ENFORCES_TO("\xC2\xA9", "\xC2\xA9");
    ENFORCES_TO("\xE0\xA0\x80", "\xE0\xA0\x80");               /* U+0800 SAMARITAN LETTER ALAF */
    ENFORCES_TO("\xED\x9E\xA3", "\xED\x9E\xA3");               /* U+D7A3, the last Hangul syllable */
    ENFORCES_TO("\xEF\xBF\xBD", "\xEF\xBF\xBD");               /* U+FFFD REPLACEMENT CHARACTER */
    ENFORCES_TO("\xF0\x90\x80\x80", "\xF0\x90\x80\x80");       /* U+10000 */
}

static void test_length(void)
{
    char buf[64];
    const char *w = NULL;
    CHECK_INT(3, precis_nick_enforce("abc", 3, buf, 4, &w));
    CHECK_INT(-1, precis_nick_enforce("abc", 3, buf, 3, &w));
    CHECK_STR("nickname is too long", w);
    CHECK_INT(-1, precis_nick_enforce("abc", 3, buf, 0, &w));
    CHECK_INT(2, precis_nick_enforce("\xC3\xA9", 2, buf, 3, &w));
    CHECK_INT(-1, precis_nick_enforce("\xC3\xA9", 2, buf, 2, &w));
    CHECK_INT(-1, precis_nick_enforce("e\xCC\x81", 3, buf, 2, &w));        /* composes to 2 bytes: needs 3 */
    CHECK_INT(2, precis_nick_enforce("e\xCC\x81", 3, buf, 3, &w));
    CHECK_INT(2, precis_nick_enforce("\xEF\xAC\x81", 3, buf, 3, &w));      /* fi: 3 bytes in, 2 out */
    CHECK_INT(-1, precis_nick_enforce("\xEF\xB7\xBA", 3, buf, 33, &w));    /* 3 bytes in, 33 out */
    CHECK_STR("nickname is too long", w);
    CHECK_INT(33, precis_nick_enforce("\xEF\xB7\xBA", 3, buf, 34, &w));

    /* nothing is written past outsz, whatever the outcome */
    const char *ins[] = { "Romeo", "R\xC3\xB6meo", "\xEF\xB7\xBA", "\xEF\xBC\xB2\xEF\xBC\xAF", "a\x01", "  " };
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
        for (size_t sz = 0; sz < 40; sz++) {
            memset(buf, 0x5A, sizeof buf);
            int r = precis_nick_key(ins[i], strlen(ins[i]), buf, sz, &w);
            size_t k;
            for (k = sz; k < sizeof buf && buf[k] == 0x5A; k++) {}
            char sb[256];
            CHECK(k == sizeof buf, "\"%s\" with outsz %zu wrote at byte %zu", shown(ins[i], sb, sizeof sb), sz, k);
            CHECK(r < 0 || (size_t)r < sz, "\"%s\" with outsz %zu returned %d", shown(ins[i], sb, sizeof sb), sz, r);
        }

    /* muc.c passes 1024: the 1023 bytes of a resourcepart fit, one more does not */
    char *big = malloc(5000);
    if (!big) { fprintf(stderr, "out of memory\n"); exit(2); }
    memset(big, 'n', 1024);
    CHECK_INT(1023, enforce_n(big, 1023));
    CHECK_INT(-1, enforce_n(big, 1024));
    CHECK_STR("nickname is too long", why);
    for (int i = 0; i < 511; i++) memcpy(big + 2 * i, "\xC3\xA9", 2);     /* 1022 bytes of e-acute + 1 'n' */
    CHECK_INT(1023, enforce_n(big, 1023));
    CHECK_INT(-1, enforce_n(big, 1024));                                  /* ends in half an e-acute + n */
    /* a key can be longer than its nick (I WITH DOT ABOVE: 2 bytes, its key 3): 1.5 times at most */
    for (int i = 0; i < 511; i++) memcpy(big + 2 * i, "\xC4\xB0", 2);
    big[1022] = 'n';
    CHECK_INT(1023, enforce_n(big, 1023));
    CHECK_INT(-1, key_n(big, 1023));
    CHECK_STR("nickname is too long", why);
    {
        char *k = malloc(1536);
        if (!k) { fprintf(stderr, "out of memory\n"); exit(2); }
        CHECK_INT(511 * 3 + 1, precis_nick_key(big, 1023, k, 1536, &w));
        free(k);
    }
    /* spaces collapse before the length counts */
    memset(big, ' ', 3000);
    big[0] = 'a';
    big[2999] = 'b';
    CHECK_INT(3, enforce_n(big, 3000));
    CHECK_STR("a b", out);
    /* input over four times the output room is refused unread */
    memset(big, ' ', 5000);
    big[0] = 'a';
    CHECK_INT(-1, enforce_n(big, 5000));
    CHECK_STR("nickname is too long", why);
    free(big);

    /* why may be NULL */
    CHECK_INT(-1, precis_nick_enforce("", 0, buf, sizeof buf, NULL));
    /* in need not be NUL-terminated: only inlen bytes count */
    CHECK_INT(3, precis_nick_enforce("RomeoXYZ", 3, buf, sizeof buf, &w));
    CHECK_STR("Rom", buf);
    CHECK_INT(2, precis_nick_enforce("\xC3\xA9\xC3\xA9", 2, buf, sizeof buf, &w));
    CHECK_INT(-1, precis_nick_enforce("\xC3\xA9\xC3\xA9", 3, buf, sizeof buf, &w));
}

/* enforce(enforce(x)) == enforce(x), key(key(x)) == key(x), key(enforce(x)) == key(x) */
static void test_idempotence(void)
{
    const char *ins[] = {
        "Romeo", "  Romeo  Montague ", "\xEF\xBC\xB2\xEF\xBC\xAF\xEF\xBC\xAD\xEF\xBC\xA5\xEF\xBC\xAF",
        "\xEF\xBD\xB6\xEF\xBE\x9E", "\xEF\xAC\x81", "St\xC2\xA0\xC2\xA0Peter", "\xCF\x94", "\xCE\xA3", "\xCF\x82",
        "\xC4\xB0", "Richard \xE2\x85\xA3", "a\xCC\x82\xCC\xA3", "q\xCC\x87\xCC\xA3", "\xC2\xA8", "a\xC2\xA8",
        "\xC2\xA8\xC2\xA8 x", "\xEF\xB7\xBA", "\xE3\x84\xB1\xE3\x85\x8F", "\xE1\xBE\xAF", "\xC7\x85", "\xE2\x92\xB6",
        "\xF0\x9F\x84\xB0", "\xE3\x8E\x81", "x\xCD\x84", "\xE0\xA5\x98", "l\xC2\xB7l", "\xE1\xBA\x9E",
        "\xD9\x85\xDB\x8C\xE2\x80\x8C\xD8\xAE\xD9\x88\xD8\xA7\xD9\x87\xD9\x85", "\xE2\x80\x82x\xE2\x80\x83",
        "\xCE\x84\xCE\xB1", "\xE1\xBF\x8Dx",
    };
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        const char *s = ins[i];
        char e1[1024], e2[1024], k1[1024], k2[1024], k3[1024];
        const char *w = NULL;
        int re = precis_nick_enforce(s, strlen(s), e1, sizeof e1, &w);
        int rk = precis_nick_key(s, strlen(s), k1, sizeof k1, &w);
        char sb[2048];
        CHECK(re >= 0 && rk >= 0, "\"%s\" was refused: %s", shown(s, sb, sizeof sb), w ? w : "");
        if (re < 0 || rk < 0) continue;
        CHECK_INT(re, precis_nick_enforce(e1, (size_t)re, e2, sizeof e2, &w));
        SAME_TEXT(e1, e2);
        CHECK_INT(rk, precis_nick_key(k1, (size_t)rk, k2, sizeof k2, &w));
        SAME_TEXT(k1, k2);
        CHECK_INT(rk, precis_nick_key(e1, (size_t)re, k3, sizeof k3, &w));
        SAME_TEXT(k1, k3);
    }
}

int main(void)
{
    test_ascii();
    test_spaces();
    test_empty();
    test_width_and_compat();
    test_normalization();
    test_case();
    test_freeform_class();
    test_contextual_rules();
    test_utf8();
    test_length();
    test_idempotence();
    return check_summary("precis");
}
