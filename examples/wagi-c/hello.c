/*
 * A WAGI (CGI over WASI) function in C.
 *
 * GET answers with a greeting built from the query string (?name=…) and echoes a few CGI variables;
 * POST echoes the request body back upper-cased. PATH_INFO "/teapot" answers 418 through the CGI
 * `Status:` header, to show how a function sets its status code. PATH_INFO "/files/PATH" reads PATH
 * from the files the function was deployed with (`wafer deploy --files DIR`, read-only at `/`): GET
 * answers with it, PUT tries to overwrite it and says why it cannot.
 */
#include <errno.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *env_or(const char *name, const char *fallback) {
    const char *value = getenv(name);
    return value ? value : fallback;
}

/* Copies the value of `key` from a query string like "a=1&name=x" into out (no decoding). */
static int query_param(const char *query, const char *key, char *out, size_t out_len) {
    size_t key_len = strlen(key);
    const char *p = query;
    while (p && *p) {
        if (strncmp(p, key, key_len) == 0 && p[key_len] == '=') {
            const char *value = p + key_len + 1;
            size_t n = strcspn(value, "&");
            if (n >= out_len) n = out_len - 1;
            memcpy(out, value, n);
            out[n] = '\0';
            return 1;
        }
        p = strchr(p, '&');
        if (p) p++;
    }
    return 0;
}

/* GET or PUT /files/PATH: the file at /PATH of the function's read-only files. */
static int serve_file(const char *method, const char *path) {
    if (strcmp(method, "PUT") == 0) {
        FILE *f = fopen(path, "w");
        if (f) {
            fclose(f);
            printf("Content-Type: text/plain\n\nwrote %s\n", path);
        } else {
            printf("Status: 403 Forbidden\nContent-Type: text/plain\n\ncannot write %s: %s\n", path,
                   strerror(errno));
        }
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("Status: 404 Not Found\nContent-Type: text/plain\n\ncannot read %s: %s\n", path,
               strerror(errno));
        return 0;
    }
    printf("Content-Type: application/octet-stream\n\n");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
}

int main(void) {
    const char *method = env_or("REQUEST_METHOD", "GET");
    const char *path = env_or("PATH_INFO", "/");

    if (strncmp(path, "/files/", 7) == 0) return serve_file(method, path + 6);

    if (strcmp(path, "/teapot") == 0) {
        printf("Status: 418 I'm a teapot\n");
        printf("Content-Type: text/plain\n\n");
        printf("short and stout\n");
        return 0;
    }

    if (strcmp(method, "POST") == 0) {
        printf("Content-Type: text/plain\n\n");
        int c;
        while ((c = getchar()) != EOF) putchar(toupper(c));
        return 0;
    }

    char name[128] = "world";
    query_param(env_or("QUERY_STRING", ""), "name", name, sizeof name);
    fprintf(stderr, "greeting %s\n", name);
    printf("Content-Type: text/plain\n");
    printf("X-Wagi-Example: c\n\n");
    printf("Hello, %s!\n", name);
    printf("method=%s path=%s script=%s greeting=%s\n", method, path, env_or("SCRIPT_NAME", ""),
           env_or("GREETING", "(unset)"));
    return 0;
}
