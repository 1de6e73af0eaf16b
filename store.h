/* store.h - durable files: whole-file atomic replacement that survives a crash at any instant. */
#ifndef COUPLET_STORE_H
#define COUPLET_STORE_H

#include <stddef.h>

/* Write data to path atomically: path.tmp, fsync, rename over path, fsync the directory.
 * After return 0 the new content is durable; on -1 (errno set) the old file is untouched. */
int store_write_atomic(const char *path, const char *data, size_t len);
/* Read a whole file into a malloc'd, NUL-terminated buffer. Returns NULL (errno ENOENT) if absent. */
char *store_read_file(const char *path, size_t *len);
/* mkdir -p for one level (the directory itself); 0 if it exists or was made */
int store_mkdir(const char *path);

#endif
