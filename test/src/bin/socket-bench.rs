//! Measures function-server round trips: N invocations, one after another, on one kept-alive
//! connection to a function's unix socket; prints p50/p99/mean.
//!
//! usage: socket-bench SOCKET [CALLS] [ARGS_JSON]

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use wasmengine_api::http1::{self, Kind};

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
    let request = http1::request("POST", "/invoke", "", body.as_bytes(), false);
    let mut times = Vec::with_capacity(calls);
    let mut last = Vec::new();
    for i in 0..calls + calls / 10 {
        let start = Instant::now();
        writer.write_all(&request)?;
        let head = http1::read_head(&mut reader, Kind::Response)?
            .ok_or_else(|| std::io::Error::other("the function closed the connection"))?;
        last = http1::read_body(&mut reader, head.content_length, 64 << 20)?;
        let status = head.status;
        // The first tenth warms up and is not counted.
        if i >= calls / 10 {
            times.push(start.elapsed());
        }
        assert_eq!(status, 200, "call {i}");
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
