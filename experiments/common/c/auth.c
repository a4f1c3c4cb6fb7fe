/* md5(arg_uri "#" arg_body "#" arg_func) must equal arg_secret. */
#include "auth.h"
#include "json.h"
#include "md5.h"

static const char *const FIELDS[] = {"arg_uri", "arg_body", "arg_secret"};

typedef struct {
    char *buf;
    int n;
} out_t;

static void put(out_t *o, const char *s) {
    while (*s && o->n < AUTH_OUT_CAP - 1)
        o->buf[o->n++] = *s++;
    o->buf[o->n] = 0;
}

static int respond(char *out, const char *status, const char *body1, const char *body2,
                   const char *body3) {
    out_t o = {out, 0};
    put(&o, "{\"status\":\"");
    put(&o, status);
    put(&o, "\",\"body\":\"");
    put(&o, body1);
    put(&o, body2);
    put(&o, body3);
    put(&o, "\"}");
    return o.n;
}

/* Feeds the string field `key` (decoded) to the hash; 0, or a JSON_* error. */
static int hash_field(md5_ctx *c, const char *js, int len, const char *key, const char *fallback,
                      char *scratch) {
    int n = json_get_string(js, len, key, scratch, len + 1);
    if (n == JSON_MISSING && fallback) {
        const char *p = fallback;
        while (*p)
            md5_update(c, p++, 1);
        return 0;
    }
    if (n < 0)
        return n;
    md5_update(c, scratch, (unsigned)n);
    return 0;
}

int auth_respond(const char *js, int len, char *scratch, char *out) {
    int i = 0;
    while (i < len && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r'))
        i++;
    if (i >= len || js[i] != '{')
        return respond(out, "400", "expected a JSON object with arg_uri, arg_body, arg_secret", "", "");
    for (int f = 0; f < 3; f++)
        if (json_find(js, len, FIELDS[f]) < 0)
            return respond(out, "400", "missing ", FIELDS[f], "");

    char secret[33];
    int n = json_get_string(js, len, "arg_secret", scratch, len + 1);
    if (n < 0)
        return respond(out, "400", "arg_secret", " must be a string", "");
    int secret_ok = n == 32;
    for (int k = 0; k < 32 && secret_ok; k++)
        secret[k] = scratch[k];
    secret[32] = 0;

    md5_ctx c;
    md5_init(&c);
    if (hash_field(&c, js, len, "arg_uri", 0, scratch) < 0)
        return respond(out, "400", "arg_uri", " must be a string", "");
    md5_update(&c, "#", 1);
    if (hash_field(&c, js, len, "arg_body", 0, scratch) < 0)
        return respond(out, "400", "arg_body", " must be a string", "");
    md5_update(&c, "#", 1);
    if (hash_field(&c, js, len, "arg_func", "argfunc", scratch) < 0)
        return respond(out, "400", "arg_func", " must be a string", "");
    char hex[33];
    md5_final_hex(&c, hex);

    for (int k = 0; k < 32 && secret_ok; k++)
        secret_ok = secret[k] == hex[k];
    if (secret_ok)
        return respond(out, "200",
                       "<html><body><h1>Welcome</h1><p>welcome, you are authenticated</p></body></html>",
                       "", "");
    return respond(out, "403",
                   "<html><body><h1>403 Forbidden</h1><p>forbidden: wrong secret, expected hash ", hex,
                   "</p></body></html>");
}
