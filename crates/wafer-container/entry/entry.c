/*
 * wafer's entry program for job containers: the first process of every job container.
 *
 * A job container is created before its request is known (that is what lets a warm one wait, created
 * and not started), so the request's variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_*, ...)
 * cannot be in its runtime spec. They arrive framed at the start of stdin instead:
 *
 *     "WENV" | length (4 bytes, big-endian) | length bytes of NUL-terminated NAME=value entries
 *
 * and the request body follows. This program reads exactly the frame, adds the variables to its
 * environment and executes the function's program (its arguments), which inherits stdin positioned at
 * the first byte of the body: it sees what it would have seen had it been started with them.
 *
 * It is built statically (it runs in any image, with or without a C library) by build.rs.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The largest frame accepted: wafer caps request heads far below this. */
#define MAX_FRAME (1u << 20)

static int read_exact(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t got = read(fd, buf, n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("wafer-entry: no program to run\n", stderr);
        return 127;
    }
    unsigned char head[8];
    if (read_exact(0, (char *)head, sizeof head) != 0 || memcmp(head, "WENV", 4) != 0) {
        fputs("wafer-entry: stdin does not start with the request's variables\n", stderr);
        return 126;
    }
    uint32_t len = ((uint32_t)head[4] << 24) | ((uint32_t)head[5] << 16) | ((uint32_t)head[6] << 8) | head[7];
    if (len > MAX_FRAME) {
        fputs("wafer-entry: the request's variables are too large\n", stderr);
        return 126;
    }
    /* Never freed: putenv keeps pointers into it. */
    char *block = malloc((size_t)len + 1);
    if (block == NULL || read_exact(0, block, len) != 0) {
        fputs("wafer-entry: cannot read the request's variables\n", stderr);
        return 126;
    }
    block[len] = '\0';
    for (char *entry = block; entry < block + len; entry += strlen(entry) + 1) {
        if (strchr(entry, '=') != NULL && entry[0] != '=')
            putenv(entry);
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "wafer-entry: cannot run %s: %s\n", argv[1], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
