/* store.c - durable whole-file replacement and whole-file reads. Every file Couplet keeps is written
 * through store_write_atomic so that a crash at any instant leaves either the old or the new file whole,
 * never a torn mix: the new content goes to path.tmp, is fsynced, renamed over path, and the directory
 * is fsynced so the rename itself survives a power cut. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int store_write_all(int fd, const void *buf, size_t len)
{
    const char *data = buf;
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {           /* should not happen for regular files; avoid spinning */
            errno = EIO;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The rename is only durable once the directory entry is on disk. */
int store_fsync_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    /* Some filesystems cannot fsync a directory at all (EINVAL); there is nothing more we can do. */
    if (rc < 0 && errno == EINVAL)
        rc = 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int store_write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX];
    if (!path || (!data && len > 0)) {
        errno = EINVAL;
        return -1;
    }
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (store_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    /* close can report a deferred write error (e.g. on NFS): the data would not be safe. */
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    /* The new file is in place; a failure here means only that its durability is not confirmed. */
    return store_fsync_dir(path);
}

char *store_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    size_t cap = 4096;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1;   /* +1 so the EOF read needs no growth */
    char *buf = malloc(cap + 1);
    size_t used = 0;
    if (!buf)
        goto fail;
    for (;;) {
        if (used == cap) {
            size_t ncap = cap * 2;
            char *nb = ncap > cap ? realloc(buf, ncap + 1) : NULL;
            if (!nb) {
                errno = ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    if (len)
        *len = used;
    return buf;
fail:;
    int saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return NULL;
}

int store_mkdir(const char *path)
{
    if (mkdir(path, 0700) == 0)
        return 0;
    if (errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        errno = ENOTDIR;
    }
    return -1;
}
