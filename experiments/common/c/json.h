/* Just enough JSON for the samples: read fields of a top-level object. No libc calls. */
#ifndef EXPERIMENTS_JSON_H
#define EXPERIMENTS_JSON_H

#define JSON_MISSING (-1)   /* no such key (or the input is not an object) */
#define JSON_WRONG_TYPE (-2) /* the value is not of the type asked for */
#define JSON_TOO_LONG (-3)  /* the decoded string does not fit in `cap` */

/* Offset of the value of `key` in the top-level object `js`, or JSON_MISSING. */
int json_find(const char *js, int len, const char *key);

/* Decodes the string value of `key` into out (NUL-terminated; cap >= decoded length + 1;
 * a decoded string is never longer than its JSON text). Returns its length, or an error above. */
int json_get_string(const char *js, int len, const char *key, char *out, int cap);

/* An integer value of `key`: a JSON number, or a string holding one ("30").
 * Returns 0, or JSON_MISSING / JSON_WRONG_TYPE. */
int json_get_int(const char *js, int len, const char *key, long long *out);

/* Parses s[0..len) as a whole integer, surrounding blanks allowed. Returns 0 or -1. */
int parse_int(const char *s, int len, long long *out);

#endif
