//! Numeric export: add_one(i32) -> i32.
#[no_mangle]
pub extern "C" fn add_one(x: i32) -> i32 {
    x.wrapping_add(1)
}
