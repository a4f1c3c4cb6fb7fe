//! WASI command: prints a greeting.
fn main() {
    println!("Hello, world!");
}
