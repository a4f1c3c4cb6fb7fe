/* String ABI, no WASI: `authentication(ptr, len) -> (ptr, len)`. The host writes the args JSON
 * at __heap_base; scratch space and the result go after it, growing memory when needed. */
#include <stddef.h>

#include "auth.h"

extern unsigned char __heap_base;

typedef struct {
    const char *ptr;
    int len;
} str_t;

static char *bump;

static char *alloc(size_t n) {
    size_t at = ((size_t)bump + 15) & ~(size_t)15;
    size_t end = at + n;
    size_t have = __builtin_wasm_memory_size(0) * 65536;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (size_t)-1)
        return 0;
    bump = (char *)end;
    return (char *)at;
}

__attribute__((export_name("authentication"))) str_t authentication(const char *in, int len) {
    static const char oom[] = "{\"status\":\"500\",\"body\":\"out of memory\"}";
    char *after = (char *)in + len;
    bump = after > (char *)&__heap_base ? after : (char *)&__heap_base;
    char *scratch = alloc((size_t)len + 1);
    char *out = alloc(AUTH_OUT_CAP);
    if (!scratch || !out)
        return (str_t){oom, sizeof oom - 1};
    int n = auth_respond(in, len, scratch, out);
    return (str_t){out, n};
}
