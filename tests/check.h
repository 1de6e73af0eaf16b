/* check.h - the tiny assertion kit shared by the unit tests: each failure says what was expected and
 * what came; main() ends with check_summary(), which prints "N passed, M failed". */
#ifndef COUPLET_CHECK_H
#define COUPLET_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...) do { \
    if (cond) check_passed++; \
    else { check_failed++; fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
           fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
} while (0)

#define CHECK_INT(expected, got) do { \
    long long e_ = (long long)(expected), g_ = (long long)(got); \
    if (e_ == g_) check_passed++; \
    else { check_failed++; fprintf(stderr, "FAIL %s:%d: %s: expected %lld, got %lld\n", \
                                   __FILE__, __LINE__, #got, e_, g_); } \
} while (0)

#define CHECK_STR(expected, got) do { \
    const char *e_ = (expected), *g_ = (got); \
    if (e_ && g_ && strcmp(e_, g_) == 0) check_passed++; \
    else { check_failed++; fprintf(stderr, "FAIL %s:%d: %s:\n  expected: %s\n  got:      %s\n", \
                                   __FILE__, __LINE__, #got, e_ ? e_ : "(null)", g_ ? g_ : "(null)"); } \
} while (0)

static inline int check_summary(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
