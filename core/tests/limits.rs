//! Per-call limits: each stops the call that hits it with an error naming the limit, and
//! nothing else.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wasmengine_core::{CallError, EngineConfig, FunctionSpec, Limits, LoadError, Runtime};

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn looping_export_is_stopped_near_its_timeout() {
    let rt = runtime();
    let timeout = Duration::from_millis(200);
    let spin = load_with(
        &rt,
        &wat("numbers"),
        "spin",
        None,
        Some(Limits {
            timeout,
            ..limits()
        }),
    );
    let start = Instant::now();
    let err = spin.call(&json!([])).unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, CallError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "timeout: the call ran longer than 200ms");
    // Not a speed test: only that it stopped at the deadline and not long after.
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn looping_command_is_stopped_and_others_keep_running() {
    let rt = runtime();
    let timeout = Duration::from_millis(300);
    let spin = load_with(
        &rt,
        &wat("commands"),
        "commands",
        Some(true),
        Some(Limits {
            timeout,
            ..limits()
        }),
    );
    let gcd = load(&rt, &wat("numbers"), "gcd", None);
    std::thread::scope(|s| {
        let looping = s.spawn(|| spin.call(&json!(["spin"])));
        for i in 1..50 {
            assert_eq!(
                gcd.call(&json!([6 * i, 4 * i])).unwrap(),
                (2 * i).to_string()
            );
        }
        let err = looping.join().unwrap().unwrap_err();
        assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    });
}

#[test]
fn growing_memory_is_stopped_at_its_cap() {
    let rt = runtime();
    let cap = 16 << 20;
    let grow = load_with(
        &rt,
        &wat("numbers"),
        "grow",
        None,
        Some(Limits {
            memory_bytes: cap,
            ..limits()
        }),
    );
    match grow.call(&json!([])) {
        Err(CallError::MemoryLimit { limit, requested }) => {
            assert_eq!(limit, cap);
            assert!(requested > cap);
        }
        other => panic!("expected memory limit, got {other:?}"),
    }
}

#[test]
fn string_input_over_the_memory_cap_is_refused() {
    let rt = runtime();
    let f = load_with(
        &rt,
        &wat("strings"),
        "echo",
        None,
        Some(Limits {
            memory_bytes: 1 << 20,
            ..limits()
        }),
    );
    assert!(f.call(&json!(["small"])).is_ok());
    let err = f.call(&json!(["x".repeat(2 << 20)])).unwrap_err();
    assert!(
        matches!(err, CallError::MemoryLimit { limit, .. } if limit == 1 << 20),
        "{err:?}"
    );
}

#[test]
fn output_over_the_cap_is_refused() {
    let rt = runtime();
    let cmd = load(&rt, &wat("commands"), "commands", Some(true));
    let err = cmd.call(&json!(["big"])).unwrap_err();
    assert!(
        matches!(err, CallError::OutputTooLarge { limit } if limit == 1 << 20),
        "{err:?}"
    );
    let huge = load(&rt, &wat("strings"), "huge", None);
    let err = huge.call(&json!({})).unwrap_err();
    assert!(matches!(err, CallError::OutputTooLarge { .. }), "{err:?}");
    let small = load_with(
        &rt,
        &wat("strings"),
        "echo",
        None,
        Some(Limits {
            max_output_bytes: 10,
            ..limits()
        }),
    );
    assert_eq!(small.call(&json!([1, 2, 3])).unwrap(), "[1,2,3]");
    let err = small.call(&json!(["eleven bytes"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "result size limit: the result is over the 10-byte cap"
    );
}

#[test]
fn fuel_stops_a_call_that_burns_too_much() {
    let rt = Runtime::new(EngineConfig {
        fuel: true,
        pool_instances: 8,
        ..EngineConfig::default()
    })
    .unwrap();
    let starved = load_with(
        &rt,
        &wat("numbers"),
        "burn",
        None,
        Some(Limits {
            fuel: Some(10_000),
            ..limits()
        }),
    );
    let err = starved.call(&json!([])).unwrap_err();
    assert!(matches!(err, CallError::FuelExhausted(10_000)), "{err:?}");
    let fed = load_with(
        &rt,
        &wat("numbers"),
        "burn",
        None,
        Some(Limits {
            fuel: Some(1_000_000_000),
            ..limits()
        }),
    );
    assert_eq!(fed.call(&json!([])).unwrap(), "10000000");
}

#[test]
fn limits_the_engine_cannot_honour_are_load_errors() {
    let rt = runtime();
    let spec = |limits| FunctionSpec {
        name: "gcd".into(),
        limits: Some(limits),
        ..FunctionSpec::default()
    };
    let err = rt
        .load(
            &wat("numbers"),
            &spec(Limits {
                fuel: Some(5),
                ..limits()
            }),
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Config(ref m) if m.contains("fuel metering")),
        "{err}"
    );
    let err = rt
        .load(
            &wat("numbers"),
            &spec(Limits {
                memory_bytes: 8 << 30,
                ..limits()
            }),
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Config(ref m) if m.contains("maximum")),
        "{err}"
    );
}

#[test]
fn interrupt_stops_running_calls_promptly() {
    let rt = runtime();
    let spin = load(&rt, &wat("numbers"), "spin", None);
    let handle = rt.interrupt_handle();
    std::thread::scope(|s| {
        let running = s.spawn(|| {
            let start = Instant::now();
            (spin.call(&json!([])), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        handle.interrupt();
        let (result, took) = running.join().unwrap();
        assert!(matches!(result, Err(CallError::Interrupted)), "{result:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    });
    assert!(matches!(spin.call(&json!([])), Err(CallError::Interrupted)));
}

/// A module with no state keeps its instances between calls: each call still gets its own
/// deadline and fuel, a call that hit a limit does not spoil the next, and the runtime's
/// interrupt stops it.
#[test]
fn stateless_modules_reused_instances_keep_every_limit() {
    let pure = wat::parse_str(
        r#"(module (func (export "run") (param $n i32) (result i32) (local $i i32)
             (if (i32.eq (local.get $n) (i32.const -1)) (then (loop $l (br $l))))
             (loop $l
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
             (local.get $i)))"#,
    )
    .unwrap();
    let rt = Runtime::new(EngineConfig {
        pool_instances: 8,
        fuel: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let timeout = Duration::from_millis(150);
    let f = load_with(
        &rt,
        &pure,
        "run",
        None,
        Some(Limits {
            timeout,
            fuel: Some(100_000),
            ..limits()
        }),
    );
    for round in 0..3 {
        assert_eq!(f.call(&json!([10])).unwrap(), "10", "round {round}");
        let start = Instant::now();
        let err = f.call(&json!([-1])).unwrap_err();
        assert!(
            matches!(err, CallError::Timeout(_) | CallError::FuelExhausted(_)),
            "{err:?}"
        );
        assert!(start.elapsed() < timeout + Duration::from_secs(2));
        // Fuel is per call: many calls just under the limit all pass.
        for _ in 0..5 {
            assert_eq!(f.call(&json!([5_000])).unwrap(), "5000");
        }
        let err = f.call(&json!([10_000_000])).unwrap_err();
        assert!(matches!(err, CallError::FuelExhausted(_)), "{err:?}");
    }
    // A spinning call on a reused instance ends at its deadline when fuel allows.
    let f = load_with(
        &rt,
        &pure,
        "run",
        None,
        Some(Limits {
            timeout,
            ..limits()
        }),
    );
    assert_eq!(f.call(&json!([3])).unwrap(), "3");
    let start = Instant::now();
    let err = f.call(&json!([-1])).unwrap_err();
    assert!(
        matches!(err, CallError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert!(start.elapsed() >= timeout);
    assert_eq!(f.call(&json!([4])).unwrap(), "4");
    // The runtime's interrupt stops reused instances too.
    rt.interrupt_handle().interrupt();
    assert!(matches!(
        f.call(&json!([4])).unwrap_err(),
        CallError::Interrupted
    ));
}
