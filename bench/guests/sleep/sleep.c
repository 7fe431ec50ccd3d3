/*
 * A slow WAGI function for the density benchmark: `?ms=N` waits N milliseconds (default 1000) without
 * using the CPU, then answers. The wait is a WASI clock subscription, so the host parks the invocation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(void) {
    const char *query = getenv("QUERY_STRING");
    long ms = 1000;
    if (query && strncmp(query, "ms=", 3) == 0) ms = strtol(query + 3, NULL, 10);
    if (ms < 0) ms = 0;
    struct timespec wait = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&wait, NULL);
    printf("Content-Type: text/plain\n\nslept %ld ms\n", ms);
    return 0;
}
