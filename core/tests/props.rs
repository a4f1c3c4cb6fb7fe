//! Property tests (bounded case counts, run by `make test`) of the mapping from invoke args to
//! each ABI: whatever JSON a caller sends, a call answers or fails with a clear error, and
//! never panics or mixes up values.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use wasmengine_core::CallError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn gcd_u32(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

proptest! {
    #![proptest_config(config())]

    /// Numeric args, as JSON numbers or strings, in an array or an object, reach the export
    /// as the same i32 values.
    #[test]
    fn numeric_args_reach_the_export_unchanged(a in any::<i32>(), b in any::<i32>(), form in 0..4u8) {
        let rt = runtime();
        let f = load(&rt, &wat("numbers"), "gcd", Some(false));
        let args = match form {
            0 => json!([a, b]),
            1 => json!([a.to_string(), b.to_string()]),
            2 => json!({"a": a, "b": b}),
            _ => json!([(a as u32), (b as u32).to_string()]),
        };
        let expected = gcd_u32(a as u32, b as u32) as i32;
        prop_assert_eq!(f.call(&args).unwrap(), expected.to_string());
    }

    /// Any other JSON given to a numeric export is a bad-args error naming the export.
    #[test]
    fn any_json_to_a_numeric_export_answers_or_is_bad_args(args in any_json()) {
        let rt = runtime();
        let f = load(&rt, &wat("numbers"), "gcd", Some(false));
        match f.call(&args) {
            Ok(out) => prop_assert!(out.parse::<i32>().is_ok(), "{}", out),
            Err(CallError::BadArgs(m)) => prop_assert!(m.contains("gcd"), "{}", m),
            Err(e) => prop_assert!(false, "{:?}", e),
        }
    }

    /// A string-ABI function receives exactly the args' JSON text.
    #[test]
    fn string_abi_receives_the_args_json(args in any_json()) {
        let rt = runtime();
        let f = load(&rt, &wat("strings"), "echo", Some(false));
        let expected = if args.is_null() { "{}".to_string() } else { args.to_string() };
        prop_assert_eq!(f.call(&args).unwrap(), expected);
    }

    /// A WASI command's argv is the array's values (strings as they are), or one entry with
    /// an object's JSON text.
    #[test]
    fn wasi_argv_follows_the_args(items in prop::collection::vec("[^\u{0}\n]{0,16}", 0..5)) {
        let rt = runtime();
        let f = load(&rt, &app("echo-string-wasi"), "echo-string-wasi", Some(true));
        let out = f.call(&json!(items)).unwrap();
        // The sample prints its last argument.
        prop_assert_eq!(out, items.last().cloned().unwrap_or_default());
        let object = json!({"items": items});
        prop_assert_eq!(f.call(&object).unwrap(), object.to_string());
    }
}
