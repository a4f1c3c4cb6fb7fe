//! The `wasmengine.call` import (a function calling another): the callout the caller gives
//! gets the callee's name, the args and the time the call has left; its answer lands in the
//! function's memory; without one the call answers 501; a callout that outlives the
//! deadline ends the call with a timeout; a pointer outside memory traps.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use wasmengine_core::{CallError, CallOptions, Callout, Limits};

/// One call a callout saw: callee, args, time left.
type Seen = (String, Vec<u8>, Option<Duration>);

/// Answers `answer` after `delay`, remembering each call.
struct Recorder {
    answer: (u16, Vec<u8>),
    delay: Duration,
    seen: Mutex<Vec<Seen>>,
}

impl Callout for Recorder {
    fn call(&self, callee: &str, args: &[u8], time_left: Option<Duration>) -> (u16, Vec<u8>) {
        self.seen
            .lock()
            .unwrap()
            .push((callee.into(), args.into(), time_left));
        std::thread::sleep(self.delay);
        self.answer.clone()
    }
}

fn recorder(status: u16, body: &[u8], delay: Duration) -> Arc<Recorder> {
    Arc::new(Recorder {
        answer: (status, body.to_vec()),
        delay,
        seen: Mutex::new(Vec::new()),
    })
}

fn limits(timeout_ms: u64) -> Option<Limits> {
    Some(Limits {
        timeout: Duration::from_millis(timeout_ms),
        ..Limits::default()
    })
}

#[test]
fn the_callout_gets_the_call_and_its_answer_comes_back() {
    let rt = runtime();
    let f = load_with(&rt, &app("chain"), "chain", Some(false), limits(2000));
    let callout = recorder(200, b"{\"ok\":true}", Duration::ZERO);
    let opts = CallOptions {
        timeout: None,
        callout: Some(callout.clone()),
    };
    let (result, _) = f.call_with(&json!({"who": "me"}), &opts);
    assert_eq!(result.unwrap(), r#"chain>{"ok":true}"#);
    let seen = callout.seen.lock().unwrap();
    let (callee, args, left) = &seen[0];
    assert_eq!(callee, "echo-string");
    assert_eq!(args, br#"{"who":"me"}"#);
    let left = left.expect("a deadline");
    assert!(left <= Duration::from_millis(2000) && left > Duration::from_millis(1000));
    drop(seen);

    // A shorter bound from the caller's caller is what the callout is told.
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        callout: Some(callout.clone()),
    };
    f.call_with(&json!({}), &opts).0.unwrap();
    assert!(callout.seen.lock().unwrap()[1].2.unwrap() <= Duration::from_millis(300));

    // An error answer reaches the function as it is (the sample returns it after `chain!`).
    let refused = recorder(
        403,
        br#"{"code":"call_refused","message":"no"}"#,
        Duration::ZERO,
    );
    let opts = CallOptions {
        timeout: None,
        callout: Some(refused),
    };
    let (result, _) = f.call_with(&json!({}), &opts);
    assert_eq!(
        result.unwrap(),
        r#"chain!403 {"code":"call_refused","message":"no"}"#
    );
}

#[test]
fn without_a_callout_the_call_answers_unsupported() {
    let rt = runtime();
    let f = load(&rt, &app("chain"), "chain", Some(false));
    let out = f.call(&json!({})).unwrap();
    assert!(out.starts_with("chain!501 "), "{out}");
    assert!(out.contains("unsupported"), "{out}");
}

#[test]
fn a_callout_past_the_deadline_ends_the_call_with_its_timeout() {
    let rt = runtime();
    let f = load_with(&rt, &app("chain"), "chain", Some(false), limits(5000));
    let slow = recorder(200, b"late", Duration::from_millis(400));
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(200)),
        callout: Some(slow),
    };
    match f.call_with(&json!({}), &opts).0 {
        // The shorter bound is the one the error names.
        Err(CallError::Timeout(t)) => assert_eq!(t, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pointer_outside_memory_traps() {
    let wasm = wat::parse_str(
        r#"(module
            (import "wasmengine" "call" (func $call (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (global (export "__heap_base") i32 (i32.const 1024))
            (func (export "bad") (param i32 i32) (result i32 i32)
              (drop (call $call (i32.const 0) (i32.const 4) (i32.const 70000) (i32.const 8)
                                (i32.const 0) (i32.const 16) (i32.const 32)))
              (i32.const 0) (i32.const 0)))"#,
    )
    .unwrap();
    let rt = runtime();
    let f = load(&rt, &wasm, "bad", Some(false));
    let opts = CallOptions {
        timeout: None,
        callout: Some(recorder(200, b"", Duration::ZERO)),
    };
    match f.call_with(&json!({}), &opts).0 {
        Err(CallError::Trap(msg)) => assert!(msg.contains("outside memory"), "{msg}"),
        other => panic!("{other:?}"),
    }
}
