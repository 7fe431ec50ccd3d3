/*
 * A command (job) function in C that takes its input from its arguments and environment, as a job
 * in a container does: it greets every argument, or says how to use it and exits with code 3.
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME...\n", argc > 0 ? argv[0] : "greet");
        return 3;
    }
    const char *greeting = getenv("GREETING");
    for (int i = 1; i < argc; i++) {
        printf("%s, %s!\n", greeting ? greeting : "Hello", argv[i]);
    }
    fprintf(stderr, "greeted %d\n", argc - 1);
    return 0;
}
