/* The authentication sample's logic, shared by its string-ABI and WASI builds. No libc calls. */
#ifndef EXPERIMENTS_AUTH_H
#define EXPERIMENTS_AUTH_H

/* Big enough for every response auth_respond writes. */
#define AUTH_OUT_CAP 1024

/* Answers the args JSON `js` (len bytes): writes a JSON object {"status":..,"body":..} into out
 * (AUTH_OUT_CAP bytes, NUL-terminated) and returns its length. scratch must hold len + 1 bytes. */
int auth_respond(const char *js, int len, char *scratch, char *out);

#endif
