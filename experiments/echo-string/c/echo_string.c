/* String ABI: returns its input unchanged, exported as both `echo-string` and `echo_string`. */
typedef struct {
    const char *ptr;
    int len;
} str_t;

__attribute__((export_name("echo-string"))) str_t echo_string(const char *in, int len) {
    return (str_t){in, len};
}

__attribute__((export_name("echo_string"))) str_t echo_string_alias(const char *in, int len) {
    return echo_string(in, len);
}
