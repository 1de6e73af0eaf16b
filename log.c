/* log.c - the log: one line per event on stderr, each a single write() so lines never interleave. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level = LOG_INFO;

void log_msg(int level, const char *fmt, ...)
{
    static const char *const names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
    if (level > log_level) return;
    int saved_errno = errno;

    char line[2048];
    time_t now = time(NULL);
    struct tm tm;
    size_t n = 0;
    if (gmtime_r(&now, &tm)) n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    const char *name = level >= LOG_ERR && level <= LOG_DEBUG ? names[level] : "LOG";
    n += (size_t)snprintf(line + n, sizeof line - n, "%s ", name);

    /* one byte is kept for the newline; an overlong message is cut and marked */
    size_t room = sizeof line - n - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, room, fmt, ap);
    va_end(ap);
    size_t body = m < 0 ? 0 : (size_t)m;
    if (body >= room) {
        body = room - 1;
        memcpy(line + n + body - 3, "...", 3);
    }
    /* peer data in a message must not forge extra log lines */
    for (size_t i = n; i < n + body; i++) {
        unsigned char ch = (unsigned char)line[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7F) line[i] = '?';
    }
    line[n + body] = '\n';

    /* a single write per line, so concurrent writers to stderr do not interleave inside a line */
    size_t len = n + body + 1, off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    errno = saved_errno;
}
