//! String ABI: `authentication(ptr, len) -> (ptr, len)`, the args JSON in, a JSON response out.
//!
//! Not built or tested here (see experiments/README.md): stable Rust lowers an `extern "C"`
//! function returning a two-field struct to an out-pointer, not to a multi-value `(i32, i32)`
//! result, so the module needs a multi-value transform before the engine sees the string ABI.

#[path = "../../../common/rust/auth.rs"]
mod auth;

#[repr(C)]
pub struct Span {
    pub ptr: *const u8,
    pub len: usize,
}

/// # Safety
/// `ptr..ptr+len` must be readable (the engine writes the input there, at `__heap_base`).
#[export_name = "authentication"]
pub unsafe extern "C" fn authentication(ptr: *const u8, len: usize) -> Span {
    let input = std::slice::from_raw_parts(ptr, len);
    let out = auth::respond(input).into_bytes().into_boxed_slice();
    // Leaked on purpose: the engine reads it after the call; every call gets a fresh instance.
    let out = Box::leak(out);
    Span {
        ptr: out.as_ptr(),
        len: out.len(),
    }
}
