//! The three function kinds, with good and bad input.

mod common;

use common::*;
use serde_json::json;
use wasmengine_core::{CallError, FunctionSpec, Kind, LoadError};

#[test]
fn command_gets_an_object_as_one_argv_entry() {
    let rt = runtime();
    let f = load(&rt, &wat("argv_env"), "argv_env", Some(true));
    assert_eq!(f.kind(), Kind::Command);
    let out = f.call(&json!({"b": 1, "a": "x y"})).unwrap();
    assert_eq!(out, r#"{"b":1,"a":"x y"}"#);
}

#[test]
fn command_gets_an_array_as_positional_argv() {
    let rt = runtime();
    let f = load(&rt, &wat("argv_env"), "argv_env", None);
    assert_eq!(
        f.call(&json!(["30", 7, "two words"])).unwrap(),
        "30\n7\ntwo words"
    );
}

#[test]
fn command_sees_its_environment() {
    let rt = runtime();
    let f = rt
        .load(
            &wat("argv_env"),
            &FunctionSpec {
                name: "argv_env".into(),
                env: vec![("GREETING".into(), "hi".into())],
                ..FunctionSpec::default()
            },
        )
        .unwrap();
    assert_eq!(f.call(&json!(["x"])).unwrap(), "x\nGREETING=hi");
}

#[test]
fn command_nonzero_exit_carries_status_and_stderr() {
    let rt = runtime();
    let f = load(&rt, &wat("commands"), "commands", Some(true));
    match f.call(&json!(["exit"])) {
        Err(CallError::Exit { status, stderr }) => {
            assert_eq!(status, 7);
            assert_eq!(stderr, "going away");
        }
        other => panic!("expected exit 7, got {other:?}"),
    }
}

#[test]
fn command_stderr_is_never_refused_and_the_error_keeps_its_end() {
    let rt = runtime();
    let f = load(&rt, &wat("commands"), "commands", Some(true));
    // 1.25 MiB of stderr, then the last words: every write succeeds (else exit 9).
    match f.call(&json!(["log"])) {
        Err(CallError::Exit { status, stderr }) => {
            assert_eq!(status, 7);
            assert!(stderr.ends_with("going away"), "{stderr:?}");
            assert!(stderr.starts_with('…'), "{stderr:?}");
        }
        other => panic!("expected exit 7, got {other:?}"),
    }
}

#[test]
fn command_trap_is_reported() {
    let rt = runtime();
    let f = load(&rt, &wat("commands"), "commands", Some(true));
    let err = f.call(&json!(["trap"])).unwrap_err();
    assert!(
        matches!(err, CallError::Trap(ref m) if m.contains("unreachable")),
        "{err:?}"
    );
}

#[test]
fn string_abi_round_trips_input() {
    let rt = runtime();
    let f = load(&rt, &wat("strings"), "echo", Some(false));
    assert_eq!(f.kind(), Kind::StringAbi);
    let args = json!({"msg": "héllo", "n": [1, 2]});
    assert_eq!(f.call(&args).unwrap(), args.to_string());
    let upper = load(&rt, &wat("strings"), "upper", None);
    assert_eq!(upper.call(&json!(["abc"])).unwrap(), r#"["ABC"]"#);
}

#[test]
fn string_abi_input_larger_than_memory_grows_it() {
    let rt = runtime();
    let f = load(&rt, &wat("strings"), "upper", Some(false));
    let big = "x".repeat(300_000);
    let out = f.call(&json!([big])).unwrap();
    assert_eq!(out.len(), 300_004);
    assert!(out.starts_with("[\"XXX") && out.ends_with("XX\"]"));
}

/// A real-layout module's writes (globals, stack, data, last page, grown pages) are never seen
/// by the next call, under every way the pool may reset a memory.
#[test]
fn no_call_sees_an_earlier_calls_writes_under_any_reset() {
    for (scan, keep) in [
        (true, 1usize << 20),
        (true, 16 << 20),
        (false, 0),
        (false, 1 << 20),
        (false, 16 << 20),
    ] {
        let rt = wasmengine_core::Runtime::new(wasmengine_core::EngineConfig {
            pool_instances: 4,
            pagemap_scan: scan,
            keep_resident_bytes: keep,
            ..wasmengine_core::EngineConfig::default()
        })
        .unwrap();
        let f = load(&rt, &wat("fresh"), "touch", Some(false));
        for call in 0..5 {
            assert_eq!(
                f.call(&json!([])).unwrap(),
                "0",
                "call {call}, scan {scan}, keep {keep}"
            );
        }
    }
}

/// A numeric export whose module holds state (a mutable global) gets a fresh instance per
/// call, as every stateful module does; only modules with no state keep their instances.
#[test]
fn numeric_exports_with_state_get_a_fresh_instance() {
    let counter = wat::parse_str(
        r#"(module (global $n (mut i32) (i32.const 0))
             (func (export "count") (result i32)
               (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#,
    )
    .unwrap();
    let rt = runtime();
    let f = load(&rt, &counter, "count", None);
    for _ in 0..3 {
        assert_eq!(f.call(&json!([])).unwrap(), "1");
    }
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let rt = runtime();
    let f = load(&rt, &wat("strings"), "count", Some(false));
    for _ in 0..3 {
        assert_eq!(f.call(&json!({})).unwrap(), "1");
    }
}

#[test]
fn string_abi_bad_results_are_errors() {
    let rt = runtime();
    let err = load(&rt, &wat("strings"), "bad_span", None)
        .call(&json!({}))
        .unwrap_err();
    assert!(
        matches!(err, CallError::BadOutput(ref m) if m.contains("outside linear memory")),
        "{err:?}"
    );
    let err = load(&rt, &wat("strings"), "not_utf8", None)
        .call(&json!({}))
        .unwrap_err();
    assert!(
        matches!(err, CallError::BadOutput(ref m) if m.contains("UTF-8")),
        "{err:?}"
    );
}

#[test]
fn numeric_exports_take_values_in_order() {
    let rt = runtime();
    let gcd = load(&rt, &wat("numbers"), "gcd", Some(false));
    assert_eq!(gcd.kind(), Kind::Numeric);
    assert_eq!(gcd.call(&json!({"a": 12, "b": 18})).unwrap(), "6");
    assert_eq!(gcd.call(&json!(["1071", 462])).unwrap(), "21");
    let mul_add = load(&rt, &wat("numbers"), "mul_add", None);
    assert_eq!(
        mul_add.call(&json!([4_000_000_000i64, 3, -1])).unwrap(),
        "11999999999"
    );
    let half = load(&rt, &wat("numbers"), "half", None);
    assert_eq!(half.call(&json!([2.5])).unwrap(), "1.25");
    let divmod = load(&rt, &wat("numbers"), "divmod", None);
    assert_eq!(divmod.call(&json!([7, 2])).unwrap(), "[3,1]");
}

#[test]
fn numeric_bad_arguments_name_what_was_expected() {
    let rt = runtime();
    let gcd = load(&rt, &wat("numbers"), "gcd", None);
    let err = gcd.call(&json!([12])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad arguments: `gcd` (i32, i32) -> i32 takes 2 arguments, got 1"
    );
    let err = gcd.call(&json!({"a": "twelve", "b": 3})).unwrap_err();
    assert!(
        matches!(err, CallError::BadArgs(ref m) if m.contains("argument 1") && m.contains("must be i32")),
        "{err:?}"
    );
}

#[test]
fn numeric_trap_is_reported_and_the_function_stays_usable() {
    let rt = runtime();
    let divmod = load(&rt, &wat("numbers"), "divmod", None);
    let err = divmod.call(&json!([1, 0])).unwrap_err();
    assert!(
        matches!(err, CallError::Trap(ref m) if m.contains("divide by zero")),
        "{err:?}"
    );
    assert_eq!(divmod.call(&json!([9, 4])).unwrap(), "[2,1]");
}

#[test]
fn kind_mismatches_are_load_errors() {
    let rt = runtime();
    let spec = |name: &str, wasi| FunctionSpec {
        name: name.into(),
        wasi,
        ..FunctionSpec::default()
    };
    let err = rt
        .load(&wat("numbers"), &spec("takes_ref", None))
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Kind(ref m) if m.contains("extern") && m.contains("-> i32") && m.contains("expected")),
        "{err}"
    );
    let err = rt.load(&wat("numbers"), &spec("nope", None)).err().unwrap();
    assert!(
        matches!(err, LoadError::Kind(ref m) if m.contains("no function export `nope`") && m.contains("`gcd`")),
        "{err}"
    );
    let err = rt
        .load(&wat("numbers"), &spec("gcd", Some(true)))
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Kind(ref m) if m.contains("_start")),
        "{err}"
    );
    let err = rt
        .load(&wat("argv_env"), &spec("argv_env", Some(false)))
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Kind(ref m) if m.contains("wasi_cap true")),
        "{err}"
    );
    let err = rt.load(b"\0asm garbage", &spec("x", None)).err().unwrap();
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
}
