/* WASI command: fib(n) for n in the last argv entry: `30`, `{"n":30}` or `{"arg":"30"}`. */
#include <stdio.h>
#include <string.h>

#include "json.h"

/* n from the text: a whole integer, else the first value of a JSON object that is a number (or
 * a string of digits), else the first run of digits anywhere. Returns 0 or -1. */
static int read_n(const char *s, long long *n) {
    int len = (int)strlen(s);
    if (parse_int(s, len, n) == 0)
        return 0;
    int in_str = 0;
    for (int i = 0; i < len; i++) {
        if (in_str) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_str = 0;
        } else if (s[i] == '"') {
            in_str = 1;
        } else if (s[i] == ':') {
            int j = i + 1;
            while (j < len && (s[j] == ' ' || s[j] == '"'))
                j++;
            int k = j;
            while (k < len && s[k] >= '0' && s[k] <= '9')
                k++;
            if (k > j && parse_int(s + j, k - j, n) == 0)
                return 0;
        }
    }
    for (int i = 0; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            int k = i;
            while (k < len && s[k] >= '0' && s[k] <= '9')
                k++;
            return parse_int(s + i, k - i, n);
        }
    }
    return -1;
}

int main(int argc, char **argv) {
    long long n;
    if (argc < 1 || read_n(argv[argc - 1], &n) != 0) {
        fprintf(stderr, "fibonacci: expected a number n, e.g. 30 or {\"n\":30}\n");
        return 1;
    }
    if (n < 0 || n > 93) {
        fprintf(stderr, "fibonacci: n must be between 0 and 93 (fib(93) is the largest u64), got %lld\n", n);
        return 1;
    }
    unsigned long long a = 0, b = 1;
    for (long long i = 0; i < n; i++) {
        unsigned long long t = a + b;
        a = b;
        b = t;
    }
    printf("%llu\n", a);
    return 0;
}
