//! WASI command: prints the last argv entry unchanged.
use std::io::Write;

fn main() {
    let arg = std::env::args().last().unwrap_or_default();
    std::io::stdout().write_all(arg.as_bytes()).unwrap();
}
