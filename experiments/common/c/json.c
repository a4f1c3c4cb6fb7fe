/* A small JSON reader for the samples; not a validator. No libc calls. */
#include "json.h"

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int skip_ws(const char *js, int len, int i) {
    while (i < len && is_ws(js[i]))
        i++;
    return i;
}

/* i at an opening quote; returns the index after the closing quote, or -1. */
static int skip_string(const char *js, int len, int i) {
    for (i++; i < len; i++) {
        if (js[i] == '\\')
            i++;
        else if (js[i] == '"')
            return i + 1;
    }
    return -1;
}

/* i at the start of a value; returns the index after it, or -1. */
static int skip_value(const char *js, int len, int i) {
    if (i >= len)
        return -1;
    if (js[i] == '"')
        return skip_string(js, len, i);
    if (js[i] == '{' || js[i] == '[') {
        int depth = 0;
        while (i < len) {
            char c = js[i];
            if (c == '"') {
                i = skip_string(js, len, i);
                if (i < 0)
                    return -1;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return -1;
    }
    while (i < len && js[i] != ',' && js[i] != '}' && js[i] != ']' && !is_ws(js[i]))
        i++;
    return i;
}

int json_find(const char *js, int len, const char *key) {
    int i = skip_ws(js, len, 0);
    if (i >= len || js[i] != '{')
        return JSON_MISSING;
    i++;
    for (;;) {
        i = skip_ws(js, len, i);
        if (i >= len || js[i] != '"')
            return JSON_MISSING; /* '}' or garbage */
        int start = i + 1;
        int end = skip_string(js, len, i);
        if (end < 0)
            return JSON_MISSING;
        /* Compare the raw key text (keys with escapes never match). */
        int k = 0, match = 1;
        for (int j = start; j < end - 1; j++, k++) {
            if (key[k] == 0 || key[k] != js[j]) {
                match = 0;
                break;
            }
        }
        if (match && key[k] != 0)
            match = 0;
        i = skip_ws(js, len, end);
        if (i >= len || js[i] != ':')
            return JSON_MISSING;
        i = skip_ws(js, len, i + 1);
        if (match)
            return i < len ? i : JSON_MISSING;
        i = skip_value(js, len, i);
        if (i < 0)
            return JSON_MISSING;
        i = skip_ws(js, len, i);
        if (i >= len || js[i] != ',')
            return JSON_MISSING;
        i++;
    }
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(const char *js, int len, int i, unsigned *out) {
    if (i + 4 > len)
        return -1;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int d = hex_digit(js[i + k]);
        if (d < 0)
            return -1;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

static int put_utf8(char *out, int n, int cap, unsigned cp) {
    unsigned char b[4];
    int k;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        k = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 4;
    }
    if (n + k >= cap)
        return -1;
    for (int j = 0; j < k; j++)
        out[n + j] = (char)b[j];
    return n + k;
}

int json_get_string(const char *js, int len, const char *key, char *out, int cap) {
    int i = json_find(js, len, key);
    if (i < 0)
        return i;
    if (js[i] != '"')
        return JSON_WRONG_TYPE;
    int n = 0;
    for (i++; i < len; i++) {
        char c = js[i];
        if (c == '"') {
            if (n >= cap)
                return JSON_TOO_LONG;
            out[n] = 0;
            return n;
        }
        if (c == '\\') {
            if (++i >= len)
                return JSON_WRONG_TYPE;
            unsigned cp;
            switch (js[i]) {
            case 'n': cp = '\n'; break;
            case 't': cp = '\t'; break;
            case 'r': cp = '\r'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'u':
                if (read_hex4(js, len, i + 1, &cp) < 0)
                    return JSON_WRONG_TYPE;
                i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && i + 2 < len && js[i + 1] == '\\' && js[i + 2] == 'u') {
                    unsigned lo;
                    if (read_hex4(js, len, i + 3, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                }
                break;
            default: cp = (unsigned char)js[i]; break; /* \" \\ \/ */
            }
            n = put_utf8(out, n, cap, cp);
            if (n < 0)
                return JSON_TOO_LONG;
            continue;
        }
        if (n + 1 >= cap)
            return JSON_TOO_LONG;
        out[n++] = c;
    }
    return JSON_WRONG_TYPE; /* unterminated */
}

int parse_int(const char *s, int len, long long *out) {
    int i = skip_ws(s, len, 0);
    int neg = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    int digits = 0;
    unsigned long long v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (unsigned)(s[i++] - '0');
        if (++digits > 18)
            return -1;
    }
    i = skip_ws(s, len, i);
    if (digits == 0 || i != len)
        return -1;
    *out = neg ? -(long long)v : (long long)v;
    return 0;
}

int json_get_int(const char *js, int len, const char *key, long long *out) {
    int i = json_find(js, len, key);
    if (i < 0)
        return i;
    int end = skip_value(js, len, i);
    if (end < 0)
        return JSON_WRONG_TYPE;
    if (js[i] == '"') /* a quoted number */
        return parse_int(js + i + 1, end - i - 2, out) == 0 ? 0 : JSON_WRONG_TYPE;
    return parse_int(js + i, end - i, out) == 0 ? 0 : JSON_WRONG_TYPE;
}
