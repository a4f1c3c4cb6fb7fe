/* WASI command `relay CALLEE [ARG…]`: calls the deployed function CALLEE with the remaining
 * argv as a JSON array of strings, and prints `relay>` and its result. When the callee fails,
 * says so on stderr (the function's log) and exits 1. Deploy it with "calls": ["CALLEE"]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasmengine.h"

/* Appends `s` as a JSON string. */
static char *put_string(char *at, const char *s) {
    *at++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *at++ = '\\';
            *at++ = (char)c;
        } else if (c < 0x20) {
            at += sprintf(at, "\\u%04x", c);
        } else {
            *at++ = (char)c;
        }
    }
    *at++ = '"';
    return at;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: relay CALLEE [ARG...]\n");
        return 2;
    }
    size_t room = 3;
    for (int i = 2; i < argc; i++) room += 6 * strlen(argv[i]) + 3;
    char *args = malloc(room), *at = args;
    *at++ = '[';
    for (int i = 2; i < argc; i++) {
        if (i > 2) *at++ = ',';
        at = put_string(at, argv[i]);
    }
    *at++ = ']';

    int32_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    int32_t status = wasmengine_call(argv[1], (int32_t)strlen(argv[1]), args,
                                     (int32_t)(at - args), out, cap, &len);
    if (len > cap) len = cap;
    if (status != 200) {
        fprintf(stderr, "relay: %s answered %d: %.*s\n", argv[1], (int)status, (int)len, out);
        return 1;
    }
    printf("relay>%.*s\n", (int)len, out);
    return 0;
}
