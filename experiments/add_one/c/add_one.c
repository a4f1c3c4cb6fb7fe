/* Numeric export: add_one(i32) -> i32. */
__attribute__((export_name("add_one"))) int add_one(int x) {
    return (int)((unsigned)x + 1u); /* wraps at INT_MAX instead of being undefined */
}
