//! WASI command: gcd of `{"a":12,"b":18}` (last argv entry) or of the last two argv entries.
use serde_json::Value;

fn gcd(a: i64, b: i64) -> u64 {
    let (mut x, mut y) = (a.unsigned_abs(), b.unsigned_abs());
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pair = match args.as_slice() {
        [.., a, b] if a.trim().parse::<i64>().is_ok() && b.trim().parse::<i64>().is_ok() => {
            Some((a.trim().parse().unwrap(), b.trim().parse().unwrap()))
        }
        [.., last] => serde_json::from_str::<Value>(last)
            .ok()
            .and_then(|v| Some((int(v.get("a")?)?, int(v.get("b")?)?))),
        [] => None,
    };
    match pair {
        Some((a, b)) => println!("{}", gcd(a, b)),
        None => {
            eprintln!("gcd: expected {{\"a\":12,\"b\":18}} or two integers");
            std::process::exit(1);
        }
    }
}
