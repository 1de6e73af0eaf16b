/* test_store.c - atomic replacement, reads, and directory creation in a scratch directory. */
#include "store.h"
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int count_entries(const char *d)
{
    DIR *dp = opendir(d);
    int n = 0;
    struct dirent *e;
    if (!dp)
        return -1;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dp);
    return n;
}

static void test_write_and_read(void)
{
    char p[128], tmp[160];
    path_in(p, sizeof p, "file");
    snprintf(tmp, sizeof tmp, "%s.tmp", p);

    CHECK_INT(0, store_write_atomic(p, "first version\n", 14));
    size_t len = 0;
    char *got = store_read_file(p, &len);
    CHECK_STR("first version\n", got);
    CHECK_INT(14, len);
    free(got);

    CHECK_INT(0, store_write_atomic(p, "second", 6));
    got = store_read_file(p, &len);
    CHECK_STR("second", got);
    CHECK_INT(6, len);
    free(got);
    CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);
    CHECK_INT(1, count_entries(dir));

    struct stat st;
    CHECK_INT(0, stat(p, &st));
    CHECK_INT(0600, st.st_mode & 0777);

    /* empty content is a valid file */
    CHECK_INT(0, store_write_atomic(p, "", 0));
    got = store_read_file(p, &len);
    CHECK_STR("", got);
    CHECK_INT(0, len);
    free(got);

    /* binary data with NULs and a size past the initial read buffer */
    size_t big = 300000;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)(i * 7 + 3);
    CHECK_INT(0, store_write_atomic(p, data, big));
    got = store_read_file(p, &len);
    CHECK_INT(big, len);
    CHECK(got && memcmp(got, data, big) == 0, "large content differs");
    CHECK(got && got[big] == '\0', "not NUL-terminated");
    free(got);
    free(data);

    /* NULL len is allowed */
    CHECK_INT(0, store_write_atomic(p, "x", 1));
    got = store_read_file(p, NULL);
    CHECK_STR("x", got);
    free(got);
    unlink(p);
}

static void test_missing(void)
{
    char p[128];
    path_in(p, sizeof p, "absent");
    size_t len = 99;
    errno = 0;
    char *got = store_read_file(p, &len);
    CHECK(got == NULL, "read of a missing file returned data");
    CHECK_INT(ENOENT, errno);
}

static void test_failed_write_keeps_old(void)
{
    char p[128], bad[192];
    path_in(p, sizeof p, "keep");
    CHECK_INT(0, store_write_atomic(p, "old", 3));

    /* into a directory that does not exist */
    path_in(bad, sizeof bad, "no-such-dir/keep");
    errno = 0;
    CHECK_INT(-1, store_write_atomic(bad, "new", 3));
    CHECK_INT(ENOENT, errno);

    /* rename over a non-empty directory fails after the tmp was written: tmp must be removed */
    char sub[160], inner[200], subtmp[200];
    path_in(sub, sizeof sub, "sub");
    CHECK_INT(0, store_mkdir(sub));
    snprintf(inner, sizeof inner, "%s/child", sub);
    CHECK_INT(0, store_write_atomic(inner, "c", 1));
    errno = 0;
    CHECK_INT(-1, store_write_atomic(sub, "new", 3));
    CHECK(errno != 0, "errno not set");
    snprintf(subtmp, sizeof subtmp, "%s.tmp", sub);
    CHECK(access(subtmp, F_OK) != 0, "tmp left after a failed rename");

    char *got = store_read_file(p, NULL);
    CHECK_STR("old", got);
    free(got);
    unlink(inner);
    rmdir(sub);
    unlink(p);
}

static void test_mkdir(void)
{
    char d[128], f[160];
    path_in(d, sizeof d, "made");
    CHECK_INT(0, store_mkdir(d));
    CHECK_INT(0, store_mkdir(d));           /* exists: fine */
    struct stat st;
    CHECK_INT(0, stat(d, &st));
    CHECK(S_ISDIR(st.st_mode), "not a directory");
    CHECK_INT(0700, st.st_mode & 0777);
    snprintf(f, sizeof f, "%s/plain", d);
    CHECK_INT(0, store_write_atomic(f, "x", 1));
    CHECK_INT(-1, store_mkdir(f));          /* a file in the way is not a directory */
    path_in(f, sizeof f, "a/b");
    CHECK_INT(-1, store_mkdir(f));          /* one level only */
    snprintf(f, sizeof f, "%s/plain", d);
    unlink(f);
    rmdir(d);
}

int main(void)
{
    strcpy(dir, "/tmp/couplet-store-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_write_and_read();
    test_missing();
    test_failed_write_keeps_old();
    test_mkdir();
    CHECK_INT(0, count_entries(dir));
    CHECK_INT(0, rmdir(dir));
    return check_summary("store");
}
