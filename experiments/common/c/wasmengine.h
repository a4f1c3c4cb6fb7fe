/* The `wasmengine.call` import: calls another deployed function (one the caller's deploy lists
 * in "calls") with JSON args. Returns the answer's status: 200 with the callee's result in
 * `out`, or an error status with a JSON {"code", "message"} there. At most `out_cap` bytes
 * are written; `*out_len` is set to the answer's full length. */
#ifndef WASMENGINE_H
#define WASMENGINE_H
#include <stdint.h>

__attribute__((import_module("wasmengine"), import_name("call"))) int32_t
wasmengine_call(const char *name, int32_t name_len, const char *args, int32_t args_len,
                char *out, int32_t out_cap, int32_t *out_len);

#endif
