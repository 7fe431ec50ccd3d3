/*
 * A command (job) function in C: counts the lines, words and bytes of its stdin.
 *
 * It prints the counts on stdout and a note on stderr. Empty input is an error: it says so on stderr and
 * exits with code 2, so callers can see how a job's exit code comes back.
 */
#include <ctype.h>
#include <stdio.h>

int main(int argc, char **argv) {
    long lines = 0, words = 0, bytes = 0;
    int c, in_word = 0;
    while ((c = getchar()) != EOF) {
        bytes++;
        if (c == '\n') lines++;
        if (isspace(c)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    if (bytes == 0) {
        fprintf(stderr, "%s: no input\n", argc > 0 ? argv[0] : "wordcount");
        return 2;
    }
    printf("%ld %ld %ld\n", lines, words, bytes);
    fprintf(stderr, "counted %ld bytes\n", bytes);
    return 0;
}
