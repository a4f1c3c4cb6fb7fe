//! String ABI: returns its input unchanged, exported as `echo-string` and `echo_string`.
//!
//! Not built or tested here; see the note on multi-value returns in experiments/README.md.

#[repr(C)]
pub struct Span {
    pub ptr: *const u8,
    pub len: usize,
}

#[export_name = "echo-string"]
pub extern "C" fn echo_string(ptr: *const u8, len: usize) -> Span {
    Span { ptr, len }
}

#[export_name = "echo_string"]
pub extern "C" fn echo_string_alias(ptr: *const u8, len: usize) -> Span {
    Span { ptr, len }
}
