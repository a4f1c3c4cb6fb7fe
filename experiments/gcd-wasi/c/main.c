/* WASI command: gcd of `{"a":12,"b":18}` (last argv entry) or of the last two argv entries. */
#include <stdio.h>
#include <string.h>

#include "json.h"

static long long gcd(long long a, long long b) {
    unsigned long long x = a < 0 ? 0ull - (unsigned long long)a : (unsigned long long)a;
    unsigned long long y = b < 0 ? 0ull - (unsigned long long)b : (unsigned long long)b;
    while (y) {
        unsigned long long t = x % y;
        x = y;
        y = t;
    }
    return (long long)x;
}

int main(int argc, char **argv) {
    long long a, b;
    if (argc >= 2 && parse_int(argv[argc - 2], (int)strlen(argv[argc - 2]), &a) == 0 &&
        parse_int(argv[argc - 1], (int)strlen(argv[argc - 1]), &b) == 0) {
        printf("%lld\n", gcd(a, b));
        return 0;
    }
    if (argc >= 1) {
        const char *js = argv[argc - 1];
        int len = (int)strlen(js);
        if (json_get_int(js, len, "a", &a) == 0 && json_get_int(js, len, "b", &b) == 0) {
            printf("%lld\n", gcd(a, b));
            return 0;
        }
    }
    fprintf(stderr, "gcd: expected {\"a\":12,\"b\":18} or two integers\n");
    return 1;
}
