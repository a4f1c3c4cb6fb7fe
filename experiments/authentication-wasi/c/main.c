/* WASI command: the authentication sample with the args JSON as the last argv entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

int main(int argc, char **argv) {
    const char *in = argc >= 1 ? argv[argc - 1] : "{}";
    int len = (int)strlen(in);
    char *scratch = malloc((size_t)len + 1);
    char out[AUTH_OUT_CAP];
    if (!scratch) {
        fprintf(stderr, "authentication: out of memory\n");
        return 1;
    }
    auth_respond(in, len, scratch, out);
    printf("%s\n", out);
    free(scratch);
    return 0;
}
