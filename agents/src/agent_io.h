/*
 * Small I/O helpers shared by the sample agents.
 *
 * Agent ABI: input on stdin, result on stdout, diagnostics on stderr,
 * exit code 0 on success. read() and write() may transfer fewer bytes than
 * asked for, so both directions loop.
 */
#ifndef AGENT_IO_H
#define AGENT_IO_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read up to `cap` bytes; returns bytes read (0 at end of input), -1 on error. */
static inline ssize_t agent_read(void *buf, size_t cap) {
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, cap);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n;
    }
}

/* Write all `len` bytes to fd; returns 0 on success, -1 on error. */
static inline int agent_write_all(int fd, const void *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            return -1;
        }
        p += (size_t)n;
        len -= (size_t)n;
    }
    return 0;
}

/* Print "<name>: <message>\n" on stderr and exit with `code`. */
static inline void agent_fail(int code, const char *name, const char *fmt, ...) {
    char msg[512];
    int off = snprintf(msg, sizeof msg, "%s: ", name);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg + off, sizeof msg - (size_t)off - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)off + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof msg - 2) {
        len = sizeof msg - 2;
    }
    msg[len++] = '\n';
    (void)agent_write_all(STDERR_FILENO, msg, len);
    exit(code);
}

/* Write a finished result to stdout, or fail with exit code 1. */
static inline void agent_emit(const char *name, const char *text, size_t len) {
    if (agent_write_all(STDOUT_FILENO, text, len) != 0) {
        agent_fail(1, name, "cannot write output");
    }
}

#endif
