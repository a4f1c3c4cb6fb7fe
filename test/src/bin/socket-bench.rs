//! Measures function-server round trips: N invocations, one after another, on one kept-alive
//! connection to a function's unix socket; prints p50/p99/mean.
//!
//! usage: socket-bench SOCKET [CALLS] [ARGS_JSON]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut argv = std::env::args().skip(1);
    let socket = argv
        .next()
        .expect("usage: socket-bench SOCKET [CALLS] [ARGS_JSON]");
    let calls: usize = argv
        .next()
        .map(|n| n.parse().expect("CALLS"))
        .unwrap_or(10_000);
    let body = argv.next().unwrap_or_else(|| "[12,18]".into());
    let conn = UnixStream::connect(&socket)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let request = format!(
        "POST /invoke HTTP/1.1\r\nhost: fn\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut times = Vec::with_capacity(calls);
    let mut line = String::new();
    let mut last = Vec::new();
    for i in 0..calls + calls / 10 {
        let start = Instant::now();
        writer.write_all(request.as_bytes())?;
        let mut length = 0usize;
        let mut status = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if status.is_empty() {
                status = line.clone();
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        last.resize(length, 0);
        reader.read_exact(&mut last)?;
        // The first tenth warms up and is not counted.
        if i >= calls / 10 {
            times.push(start.elapsed());
        }
        assert!(status.contains(" 200 "), "call {i}: {status}");
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<std::time::Duration>() / times.len() as u32;
    println!(
        "function-server round trip over {} calls on one connection: p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs (result {:?})",
        times.len(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        String::from_utf8_lossy(&last)
    );
    Ok(())
}
