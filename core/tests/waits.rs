//! A module that sleeps in WASI (`poll_oneoff` on clocks) is held to its limits like one that
//! spins: the wait ends at the call's deadline or at the runtime's interrupt. The same module
//! wrapped as a WASI preview 2 component waits through `wasi:io/poll` instead, with the same
//! bounds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wasmengine_core::{CallError, Function, Limits, Runtime};

fn sleeper(rt: &Runtime, timeout: Duration) -> Function {
    sleeper_from(rt, &wat("sleeps"), timeout)
}

/// The sleeper as a preview 2 command component.
fn component_sleeper(rt: &Runtime, timeout: Duration) -> Function {
    let f = sleeper_from(rt, &component(&wat("sleeps")), timeout);
    assert!(f.is_component());
    f
}

fn sleeper_from(rt: &Runtime, code: &[u8], timeout: Duration) -> Function {
    load_with(
        rt,
        code,
        "sleeps",
        Some(true),
        Some(Limits {
            timeout,
            ..Limits::default()
        }),
    )
}

#[test]
fn every_kind_of_long_sleep_ends_at_the_deadline() {
    let rt = runtime();
    let timeout = Duration::from_millis(300);
    // relative, absolute monotonic, absolute realtime.
    long_sleeps_end_at(&sleeper(&rt, timeout), timeout);
}

#[test]
fn a_component_s_long_sleeps_end_at_the_deadline() {
    let rt = runtime();
    let timeout = Duration::from_millis(300);
    long_sleeps_end_at(&component_sleeper(&rt, timeout), timeout);
}

fn long_sleeps_end_at(f: &Function, timeout: Duration) {
    for op in ["r", "a", "w"] {
        let start = Instant::now();
        let err = f.call(&json!([op])).unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(err, CallError::Timeout(t) if t == timeout),
            "{op}: {err:?}"
        );
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(2),
            "{op}: {took:?}"
        );
    }
}

#[test]
fn short_sleeps_wake_with_their_events() {
    let rt = runtime();
    let f = sleeper(&rt, Duration::from_secs(5));
    let start = Instant::now();
    assert_eq!(f.call(&json!(["s"])).unwrap(), "1");
    assert!(start.elapsed() >= Duration::from_millis(30));
    // Two clocks: only the one that came due is reported.
    assert_eq!(f.call(&json!(["m"])).unwrap(), "1");
    // A ready stdout beside a long clock: answered at once, one event.
    let start = Instant::now();
    assert_eq!(f.call(&json!(["f"])).unwrap(), "1");
    assert!(start.elapsed() < Duration::from_secs(4));
    // No subscriptions: EINVAL (28), as wasmtime-wasi answers.
    match f.call(&json!(["z"])).unwrap_err() {
        CallError::Exit { status, .. } => assert_eq!(status, 28),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_component_s_short_sleep_wakes() {
    let rt = runtime();
    let f = component_sleeper(&rt, Duration::from_secs(5));
    let start = Instant::now();
    assert_eq!(f.call(&json!(["s"])).unwrap(), "1");
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(f.call(&json!(["m"])).unwrap(), "1");
}

#[test]
fn many_sleepers_all_end_at_their_deadline() {
    let rt = runtime();
    let timeout = Duration::from_millis(500);
    many_end_at(&sleeper(&rt, timeout));
}

#[test]
fn many_sleeping_components_all_end_at_their_deadline() {
    let rt = runtime();
    let timeout = Duration::from_millis(500);
    many_end_at(&component_sleeper(&rt, timeout));
}

fn many_end_at(f: &Function) {
    let start = Instant::now();
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..40).map(|_| s.spawn(|| f.call(&json!(["r"])))).collect();
        for c in calls {
            let err = c.join().unwrap().unwrap_err();
            assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
        }
    });
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn interrupt_wakes_a_sleeping_call() {
    let rt = runtime();
    interrupt_wakes(&rt, &sleeper(&rt, Duration::from_secs(60)));
}

#[test]
fn interrupt_wakes_a_sleeping_component() {
    let rt = runtime();
    interrupt_wakes(&rt, &component_sleeper(&rt, Duration::from_secs(60)));
}

fn interrupt_wakes(rt: &Runtime, f: &Function) {
    let handle = rt.interrupt_handle();
    std::thread::scope(|s| {
        let call = s.spawn(|| f.call(&json!(["r"])));
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        handle.interrupt();
        let err = call.join().unwrap().unwrap_err();
        assert!(matches!(err, CallError::Interrupted), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    });
}
