/* store.h - durable files: whole-file atomic replacement that survives a crash at any instant. */
#ifndef COUPLET_STORE_H
#define COUPLET_STORE_H

#include <stddef.h>

/* Write data to path atomically: path.tmp, fsync, rename over path, fsync the directory.
 * After return 0 the new content is durable; on -1 (errno set) the old file is untouched. */
int store_write_atomic(const char *path, const char *data, size_t len);
/* Read a whole file into a malloc'd, NUL-terminated buffer. Returns NULL (errno ENOENT) if absent. */
char *store_read_file(const char *path, size_t *len);
/* write() all of len bytes, through EINTR and short writes; 0, or -1 with errno (EIO for a write of 0). */
int store_write_all(int fd, const void *data, size_t len);
/* fsync the directory holding path, so that a new or renamed entry in it is durable; 0, or -1 with errno
 * (a filesystem that cannot sync directories counts as done). */
int store_fsync_dir(const char *path);
/* mkdir -p for one level (the directory itself); 0 if it exists or was made */
int store_mkdir(const char *path);

#endif
