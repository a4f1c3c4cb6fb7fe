/* MD5 (RFC 1321), self-contained: no libc needed. */
#ifndef EXPERIMENTS_MD5_H
#define EXPERIMENTS_MD5_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[4];
    uint64_t bytes;          /* total length so far */
    unsigned char block[64]; /* pending input */
    size_t used;             /* bytes pending in block */
} md5_ctx;

void md5_init(md5_ctx *c);
void md5_update(md5_ctx *c, const void *data, size_t len);
void md5_final(md5_ctx *c, unsigned char digest[16]);
/* Writes 32 lowercase hex digits and a NUL into hex[33]. */
void md5_final_hex(md5_ctx *c, char hex[33]);

#endif
