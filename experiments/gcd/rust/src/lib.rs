//! Numeric export: gcd(i32, i32) -> i32, Euclid on absolute values.
#[no_mangle]
pub extern "C" fn gcd(a: i32, b: i32) -> i32 {
    let (mut x, mut y) = (a.unsigned_abs(), b.unsigned_abs());
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x as i32 // gcd(i32::MIN, 0) does not fit and wraps
}
