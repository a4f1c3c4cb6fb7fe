//! The epoch tickers sleep when no call runs, and a call wakes them: its deadline still holds.
//! One test in its own binary, since the tickers' state is the process's.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wasmengine_core::{ticker, CallError, Limits};

fn wait_until_asleep() -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if ticker::sleeping() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn idle_tickers_sleep_and_a_call_wakes_them_for_its_deadline() {
    let rt = runtime();
    let timeout = Duration::from_millis(200);
    let spin = load_with(
        &rt,
        &wat("numbers"),
        "spin",
        None,
        Some(Limits {
            timeout,
            ..Limits::default()
        }),
    );
    let gcd = load(&rt, &wat("numbers"), "gcd", None);
    assert_eq!(gcd.call(&json!([12, 18])).unwrap(), "6");
    assert!(wait_until_asleep(), "the ticker kept running with no call");

    // From asleep, the spinning call must still be stopped at its deadline: the call woke
    // the ticker.
    let start = Instant::now();
    let err = spin.call(&json!([])).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    assert!(took < timeout + Duration::from_secs(2), "{took:?}");

    // After calls it sleeps again.
    assert_eq!(gcd.call(&json!([12, 18])).unwrap(), "6");
    assert!(wait_until_asleep(), "the ticker did not sleep again");
}
