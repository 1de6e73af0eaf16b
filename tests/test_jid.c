/* test_jid.c - JID parsing, normalisation, serialisation and nick validation. */
#include "check.h"
#include "jid.h"

#include <stdlib.h>

static jid J;

static int parses(const char *s) { return jid_parse(s, &J) == 0; }

/* a string of n copies of ch, wrapped in prefix and suffix; caller frees */
static char *repeat(const char *prefix, char ch, size_t n, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);
    if (!s) { fprintf(stderr, "out of memory\n"); exit(2); }
    memcpy(s, prefix, pl);
    memset(s + pl, ch, n);
    memcpy(s + pl + n, suffix, sl + 1);
    return s;
}

static void test_valid_forms(void)
{
    CHECK(parses("example.com"), "domain only");
    CHECK_STR("", J.local);
    CHECK_STR("example.com", J.domain);
    CHECK_STR("", J.resource);

    CHECK(parses("juliet@example.com"), "bare");
    CHECK_STR("juliet", J.local);
    CHECK_STR("example.com", J.domain);

    CHECK(parses("juliet@example.com/balcony"), "full");
    CHECK_STR("balcony", J.resource);

    CHECK(parses("example.com/res"), "domain with resource");
    CHECK_STR("", J.local);
    CHECK_STR("res", J.resource);

    CHECK(parses("a/b@c/d"), "the first slash starts the resource");
    CHECK_STR("", J.local);
    CHECK_STR("a", J.domain);
    CHECK_STR("b@c/d", J.resource);

    CHECK(parses("romeo@[::1]"), "IPv6 literal");
    CHECK_STR("[::1]", J.domain);
    CHECK(parses("romeo@[2001:DB8::A]/x"), "IPv6 literal, uppercase hex");
    CHECK_STR("[2001:db8::a]", J.domain);
    CHECK(parses("127.0.0.1"), "IPv4 address");
    CHECK_STR("127.0.0.1", J.domain);

    CHECK(parses("fran\xC3\xA7ois@example.com"), "non-ASCII local");
    CHECK_STR("fran\xC3\xA7ois", J.local);
    CHECK(parses("\xC3\x89LISE@example.com"), "non-ASCII uppercase kept as is");
    CHECK_STR("\xC3\x89lise", J.local);
    CHECK(parses("user@m\xC3\xBCnchen.example"), "IDN domain");

    CHECK(parses("juliet@example.com/ r\xC3\xA9s with spaces "), "resource may have spaces");
    CHECK_STR(" r\xC3\xA9s with spaces ", J.resource);
    CHECK(parses("juliet@example.com/\xF0\x9F\x8E\xAD"), "emoji resource");
    CHECK(parses("x@example.com/\xEF\xBF\xBF"), "jid_parse is lenient on non-control resource code points");

    CHECK(parses("my-host_1.example"), "hyphen and underscore in domain");
}

static void test_normalisation(void)
{
    CHECK(parses("User@LocalHost/Res"), "mixed case");
    CHECK_STR("user", J.local);
    CHECK_STR("localhost", J.domain);
    CHECK_STR("Res", J.resource);

    CHECK(parses("juliet@example.com."), "trailing dot");
    CHECK_STR("example.com", J.domain);
    CHECK(parses("example.com./r"), "trailing dot before resource");
    CHECK_STR("example.com", J.domain);
    CHECK_STR("r", J.resource);
    CHECK(!parses("example.com.."), "only one trailing dot is dropped");

    jid a, b;
    CHECK_INT(0, jid_parse("ROMEO@Example.COM", &a));
    CHECK_INT(0, jid_parse("romeo@example.com.", &b));
    CHECK_STR(a.local, b.local);
    CHECK_STR(a.domain, b.domain);
}

static void test_invalid_forms(void)
{
    CHECK(!parses(""), "empty");
    CHECK(!parses("a@"), "empty domain after @");
    CHECK(!parses("@b"), "empty local");
    CHECK(!parses("a/"), "empty resource");
    CHECK(!parses("a@b/"), "empty resource after bare");
    CHECK(!parses("/r"), "no domain");
    CHECK(!parses("@"), "only @");
    CHECK(!parses("."), "only a dot");
    CHECK(!parses("a@b@c"), "two @");
    CHECK(!parses(".example.com"), "leading dot");
    CHECK(!parses("a..b"), "empty label");
    CHECK_INT(-1, jid_parse(NULL, &J));

    /* the RFC 7622 excluded characters in the localpart, plus space and controls */
    const char *bad_local[] = { "a\"b@x", "a&b@x", "a'b@x", "a:b@x", "a<b@x", "a>b@x", "a b@x",
                                "a\x01" "b@x", "a\x7F" "b@x", "a\tb@x", "a\xC2\x85" "b@x",
                                "a\xE2\x80\x8B" "b@x" };
    for (size_t i = 0; i < sizeof bad_local / sizeof bad_local[0]; i++)
        CHECK(!parses(bad_local[i]), "forbidden localpart character in case %zu", i);

    const char *bad_domain[] = { "exa mple.com", "exa\x01mple", "a@exa\x7Fmple", "exa<mple", "ex:5222",
                                 "[::1", "[zz::1]", "[]", "a]b", "[::1]." };
    for (size_t i = 0; i < sizeof bad_domain / sizeof bad_domain[0]; i++)
        CHECK(!parses(bad_domain[i]), "bad domain in case %zu", i);

    CHECK(!parses("a@b/x\x01y"), "C0 control in resource");
    CHECK(!parses("a@b/x\x7Fy"), "DEL in resource");
    CHECK(!parses("a@b/x\xC2\x9Fy"), "C1 control in resource");
    CHECK(!parses("a@b/x\ty"), "tab in resource");

    /* invalid UTF-8 anywhere */
    CHECK(!parses("\xC0\xAF@example.com"), "overlong '/'");
    CHECK(!parses("\xE0\x80\xAF@example.com"), "overlong 3-byte");
    CHECK(!parses("a@b/\xED\xA0\x80"), "surrogate");
    CHECK(!parses("a@b/\xF5\x80\x80\x80"), "F5 lead byte");
    CHECK(!parses("a@b/\xF4\x90\x80\x80"), "above U+10FFFF");
    CHECK(!parses("a@b/\x80"), "lone continuation");
    CHECK(!parses("a@b/\xC3"), "truncated sequence");
    CHECK(!parses("\xC3(@example.com"), "bad continuation");
    CHECK(!parses("a@\xFF.com"), "FF in domain");
}

static void test_lengths(void)
{
    char *s;

    s = repeat("", 'a', JID_PART_MAX, "@example.com");
    CHECK(parses(s), "1023-byte local");
    free(s);
    s = repeat("", 'a', JID_PART_MAX + 1, "@example.com");
    CHECK(!parses(s), "1024-byte local");
    free(s);

    s = repeat("u@", 'd', JID_PART_MAX, "/r");
    CHECK(parses(s), "1023-byte domain");
    free(s);
    s = repeat("u@", 'd', JID_PART_MAX, "./r");
    CHECK(parses(s), "1023-byte domain plus trailing dot");
    free(s);
    s = repeat("u@", 'd', JID_PART_MAX + 1, "/r");
    CHECK(!parses(s), "1024-byte domain");
    free(s);

    s = repeat("u@example.com/", 'r', JID_PART_MAX, "");
    CHECK(parses(s), "1023-byte resource");
    CHECK_INT(JID_PART_MAX, strlen(J.resource));
    free(s);
    s = repeat("u@example.com/", 'r', JID_PART_MAX + 1, "");
    CHECK(!parses(s), "1024-byte resource");
    free(s);

    s = repeat("", 'x', 100000, "");
    CHECK(!parses(s), "very long input");
    free(s);
}

static void test_serialise(void)
{
    char buf[64];

    CHECK_INT(0, jid_parse("Romeo@Example.com/Orchard", &J));
    CHECK_INT(17, jid_bare(&J, buf, sizeof buf));
    CHECK_STR("romeo@example.com", buf);
    CHECK_INT(25, jid_full(&J, buf, sizeof buf));
    CHECK_STR("romeo@example.com/Orchard", buf);

    CHECK_INT(17, jid_bare(&J, buf, 18));
    CHECK_INT(-1, jid_bare(&J, buf, 17));
    CHECK_INT(25, jid_full(&J, buf, 26));
    CHECK_INT(-1, jid_full(&J, buf, 25));
    CHECK_INT(-1, jid_full(&J, buf, 1));
    CHECK_INT(-1, jid_bare(&J, buf, 0));

    CHECK_INT(0, jid_parse("example.com", &J));
    CHECK_INT(11, jid_bare(&J, buf, sizeof buf));
    CHECK_STR("example.com", buf);
    CHECK_INT(11, jid_full(&J, buf, sizeof buf));
    CHECK_STR("example.com", buf);

    CHECK_INT(0, jid_parse("example.com/r", &J));
    CHECK_INT(13, jid_full(&J, buf, sizeof buf));
    CHECK_STR("example.com/r", buf);
}

static void test_bare_equal(void)
{
    CHECK_INT(1, jid_bare_equal("a@b/c", "a@b/d"));
    CHECK_INT(1, jid_bare_equal("a@b", "a@b/d"));
    CHECK_INT(1, jid_bare_equal("b", "b/x"));
    CHECK_INT(0, jid_bare_equal("a@b", "a@bc"));
    CHECK_INT(0, jid_bare_equal("a@b", "b"));
    CHECK_INT(0, jid_bare_equal("a@b/c", "a@c/c"));
    CHECK_INT(0, jid_bare_equal(NULL, "a@b"));
}

static void test_resource_valid(void)
{
    CHECK_INT(1, jid_resource_valid("Romeo"));
    CHECK_INT(1, jid_resource_valid("Juliet's phone"));
    CHECK_INT(1, jid_resource_valid("\xC3\xA7"));                    /* ç */
    CHECK_INT(1, jid_resource_valid("\xF0\x9F\x98\x80"));            /* U+1F600 */
    CHECK_INT(1, jid_resource_valid("\xE2\x9D\xA4\xEF\xB8\x8F"));    /* heart + VS16 */
    CHECK_INT(1, jid_resource_valid("\xEE\x80\x80"));                /* private use U+E000 */
    CHECK_INT(1, jid_resource_valid("a b"));
    CHECK_INT(1, jid_resource_valid("x@y/z"));

    CHECK_INT(0, jid_resource_valid(""));
    CHECK_INT(0, jid_resource_valid(NULL));
    CHECK_INT(0, jid_resource_valid("ro\x01meo"));
    CHECK_INT(0, jid_resource_valid("ro\tmeo"));
    CHECK_INT(0, jid_resource_valid("ro\x7Fmeo"));
    CHECK_INT(0, jid_resource_valid("ro\xC2\x80meo"));               /* C1 */
    CHECK_INT(0, jid_resource_valid("ro\xE2\x80\x8Bmeo"));           /* U+200B */
    CHECK_INT(0, jid_resource_valid("\xEF\xBB\xBFromeo"));           /* U+FEFF */
    CHECK_INT(0, jid_resource_valid("romeo\xEF\xBF\xBE"));           /* U+FFFE */
    CHECK_INT(0, jid_resource_valid("romeo\xF0\x9F\xBF\xBF"));       /* U+1FFFF */
    CHECK_INT(0, jid_resource_valid("\xEF\xB7\x90"));                /* U+FDD0 */
    CHECK_INT(0, jid_resource_valid("a\xE2\x80\xAE" "b"));           /* U+202E */
    CHECK_INT(0, jid_resource_valid("a\xE2\x81\xA6" "b"));           /* U+2066 */
    CHECK_INT(0, jid_resource_valid("a\xE2\x80\xA8" "b"));           /* U+2028 */
    CHECK_INT(0, jid_resource_valid("a\xF3\xA0\x80\x81"));           /* U+E0001 tag */
    CHECK_INT(0, jid_resource_valid("   "));
    CHECK_INT(0, jid_resource_valid("\xE3\x80\x80"));                /* ideographic space only */
    CHECK_INT(0, jid_resource_valid(" romeo"));
    CHECK_INT(0, jid_resource_valid("romeo "));
    CHECK_INT(0, jid_resource_valid("\xC0\xAF"));
    CHECK_INT(0, jid_resource_valid("\xED\xA0\x80"));

    char *s = repeat("", 'n', JID_PART_MAX, "");
    CHECK_INT(1, jid_resource_valid(s));
    free(s);
    s = repeat("", 'n', JID_PART_MAX + 1, "");
    CHECK_INT(0, jid_resource_valid(s));
    free(s);
}

/* Parts are checked before anything is written: a refused JID leaves *out as it was. Mixed ASCII and
 * UTF-8 in one part goes through both the ASCII fast path and the decoder. */
static void test_fast_paths(void)
{
    jid before;
    CHECK(parses("keep@example.com/this"), "setup");
    before = J;
    CHECK(!parses("good@example.com/\x01"), "control in the resource");
    CHECK(memcmp(&before, &J, sizeof J) == 0, "a refused JID must leave the output untouched");
    CHECK(!parses("good@bad..example"), "empty label");
    CHECK(memcmp(&before, &J, sizeof J) == 0, "a refused JID must leave the output untouched");

    CHECK(parses("J\xC3\x9CLiet@\xC3\x84Xample.COM/R\xC3\xA9S"), "mixed UTF-8 and ASCII");
    CHECK_STR("j\xC3\x9Cliet", J.local);            /* only ASCII letters are folded */
    CHECK_STR("\xC3\x84xample.com", J.domain);
    CHECK_STR("R\xC3\xA9S", J.resource);
    CHECK(!parses("a\xC2\xA0" "b@example.com"), "no-break space in the localpart");
    CHECK(!parses("a\xE2\x80\x8B" "b@example.com"), "zero-width space in the localpart");
    CHECK(!parses("ab@exa\xE2\x80\x8Bmple.com"), "zero-width space in the domain");
    CHECK(!parses("a\x7F@example.com"), "DEL in the localpart");
    CHECK(!parses("a@example.com/r\x7F"), "DEL in the resource");

    CHECK(parses("x@[2001:DB8::A]/R"), "IPv6 literal");
    CHECK_STR("[2001:db8::a]", J.domain);
    CHECK_STR("R", J.resource);
    CHECK(parses("Example.COM"), "domain only, no resource");
    CHECK_STR("", J.local);
    CHECK_STR("example.com", J.domain);
    CHECK_STR("", J.resource);
}

int main(void)
{
    test_valid_forms();
    test_fast_paths();
    test_normalisation();
    test_invalid_forms();
    test_lengths();
    test_serialise();
    test_bare_equal();
    test_resource_valid();
    return check_summary("jid");
}
