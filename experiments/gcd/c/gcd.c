/* Numeric export: gcd(i32, i32) -> i32, Euclid on absolute values. */
__attribute__((export_name("gcd"))) int gcd(int a, int b) {
    unsigned x = a < 0 ? 0u - (unsigned)a : (unsigned)a;
    unsigned y = b < 0 ? 0u - (unsigned)b : (unsigned)b;
    while (y != 0) {
        unsigned t = x % y;
        x = y;
        y = t;
    }
    return (int)x; /* gcd(INT_MIN, 0) does not fit and wraps */
}
