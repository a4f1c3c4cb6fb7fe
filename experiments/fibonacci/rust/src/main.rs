//! WASI command: fib(n) for n in the last argv entry: `30`, `{"n":30}` or `{"arg":"30"}`.
use std::process::exit;

/// A whole number, else the first run of digits after a `:` (a JSON object's value), else the
/// first run of digits anywhere.
fn read_n(s: &str) -> Option<u64> {
    if let Ok(n) = s.trim().parse() {
        return Some(n);
    }
    let digits = |t: &str| -> Option<u64> {
        let t = t.trim_start_matches([' ', '"']);
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        t[..end].parse().ok()
    };
    s.split(':').skip(1).find_map(digits).or_else(|| {
        let start = s.find(|c: char| c.is_ascii_digit())?;
        digits(&s[start..])
    })
}

fn main() {
    let arg = std::env::args().last().unwrap_or_default();
    let Some(n) = read_n(&arg) else {
        eprintln!("fibonacci: expected a number n, e.g. 30 or {{\"n\":30}}");
        exit(1);
    };
    if n > 93 {
        eprintln!("fibonacci: n must be between 0 and 93 (fib(93) is the largest u64), got {n}");
        exit(1);
    }
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    println!("{a}");
}
