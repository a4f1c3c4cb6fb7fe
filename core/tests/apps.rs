//! The sample functions in `experiments/`, built from C by `make apps`, run by the core.

mod common;

use common::*;
use serde_json::{json, Value};
use wasmengine_core::{CallError, Kind};

const YES_HASH: &str = "c5187dd86a648a819f527c7a8a4f7bf4"; // md5("yes#yes#argfunc")

fn call(name: &str, export: &str, wasi: Option<bool>, args: &Value) -> Result<String, CallError> {
    let rt = runtime();
    load(&rt, &app(name), export, wasi).call(args)
}

fn auth_response(out: &str) -> (String, String) {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{out}: {e}"));
    (
        v["status"].as_str().unwrap().to_string(),
        v["body"].as_str().unwrap().to_string(),
    )
}

#[test]
fn hello_greets() {
    let rt = runtime();
    let f = load(&rt, &app("hello"), "hello", None);
    assert_eq!(f.kind(), Kind::Command);
    assert_eq!(f.call(&json!({})).unwrap().trim_end(), "Hello, world!");
}

#[test]
fn fibonacci_takes_plain_and_json_input() {
    for args in [
        json!(["30"]),
        json!([30]),
        json!({"n": 30}),
        json!({"arg": "30"}),
    ] {
        let out = call("fibonacci", "fibonacci", Some(true), &args).unwrap();
        assert_eq!(out.trim_end(), "832040", "{args}");
    }
    let out = call("fibonacci", "fibonacci", None, &json!([93])).unwrap();
    assert_eq!(out.trim_end(), "12200160415121876738");
}

#[test]
fn fibonacci_bad_input_exits_1() {
    for args in [json!(["abc"]), json!([94])] {
        match call("fibonacci", "fibonacci", None, &args) {
            Err(CallError::Exit { status, stderr }) => {
                assert_eq!(status, 1);
                assert!(stderr.contains("fibonacci"), "{stderr}");
            }
            other => panic!("{args}: expected exit 1, got {other:?}"),
        }
    }
}

#[test]
fn authentication_wrong_secret_is_403_with_the_hash() {
    let rt = runtime();
    let f = load(&rt, &app("authentication"), "authentication", None);
    assert_eq!(f.kind(), Kind::StringAbi);
    let out = f
        .call(&json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "12345"}))
        .unwrap();
    let (status, body) = auth_response(&out);
    assert_eq!(status, "403");
    assert!(body.contains(YES_HASH), "{body}");
}

#[test]
fn authentication_right_secret_is_200() {
    let out = call(
        "authentication",
        "authentication",
        Some(false),
        &json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": YES_HASH}),
    )
    .unwrap();
    let (status, body) = auth_response(&out);
    assert_eq!(status, "200");
    assert!(body.contains("welcome"), "{body}");
    // arg_func takes part in the hash: md5("yes#yes#other").
    let out = call(
        "authentication",
        "authentication",
        None,
        &json!({"arg_uri": "yes", "arg_body": "yes", "arg_func": "other", "arg_secret": YES_HASH}),
    )
    .unwrap();
    assert_eq!(auth_response(&out).0, "403");
}

#[test]
fn authentication_bad_input_is_400() {
    let out = call(
        "authentication",
        "authentication",
        None,
        &json!({"arg_uri": "yes", "arg_secret": "1"}),
    )
    .unwrap();
    assert_eq!(
        auth_response(&out),
        ("400".to_string(), "missing arg_body".to_string())
    );
    let out = call("authentication", "authentication", None, &json!(["yes"])).unwrap();
    assert_eq!(auth_response(&out).0, "400");
    let out = call(
        "authentication",
        "authentication",
        None,
        &json!({"arg_uri": 1, "arg_body": "yes", "arg_secret": "1"}),
    )
    .unwrap();
    let (status, body) = auth_response(&out);
    assert_eq!(status, "400");
    assert!(body.contains("arg_uri"), "{body}");
}

#[test]
fn authentication_large_input_grows_memory() {
    let body = "z".repeat(300_000);
    let out = call(
        "authentication",
        "authentication",
        None,
        &json!({"arg_uri": "u", "arg_body": body, "arg_secret": "s"}),
    )
    .unwrap();
    let (status, text) = auth_response(&out);
    assert_eq!(status, "403");
    // md5("u#" + 300000 × "z" + "#argfunc"), from md5sum.
    assert!(text.contains("3bfc7dcb2d9306eb7ec69c75fde5fea9"), "{text}");
}

#[test]
fn authentication_wasi_matches_the_string_abi_build() {
    let rt = runtime();
    let f = load(
        &rt,
        &app("authentication-wasi"),
        "authentication-wasi",
        None,
    );
    assert_eq!(f.kind(), Kind::Command);
    for secret in ["12345", YES_HASH] {
        let args = json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": secret});
        let wasi = f.call(&args).unwrap();
        let abi = call("authentication", "authentication", None, &args).unwrap();
        assert_eq!(wasi.trim_end(), abi);
    }
    let (status, body) = auth_response(
        f.call(&json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "12345"}))
            .unwrap()
            .trim_end(),
    );
    assert_eq!(status, "403");
    assert!(body.contains(YES_HASH), "{body}");
}

#[test]
fn add_one_adds_one() {
    let rt = runtime();
    let f = load(&rt, &app("add_one"), "add_one", None);
    assert_eq!(f.kind(), Kind::Numeric);
    assert_eq!(f.call(&json!([41])).unwrap(), "42");
    assert_eq!(f.call(&json!({"x": "-1"})).unwrap(), "0");
}

#[test]
fn echo_string_round_trips_under_both_names() {
    let rt = runtime();
    let bytes = app("echo-string");
    let args = json!({"msg": "héllo", "n": [1, 2]});
    for name in ["echo-string", "echo_string"] {
        let f = load(&rt, &bytes, name, None);
        assert_eq!(f.kind(), Kind::StringAbi);
        assert_eq!(f.call(&args).unwrap(), args.to_string());
    }
}

#[test]
fn a_string_abi_export_gets_json_text_as_it_came() {
    let rt = runtime();
    let f = load(&rt, &app("echo-string"), "echo-string", None);
    let opts = wasmengine_core::CallOptions::default();
    // Spacing, number forms and escapes stay as sent (a parsed value would rebuild them).
    let text = br#"{ "b": 1e2,  "a": ["\u00e9", 1.50] }"#;
    assert_eq!(
        f.call_json(text, &opts).0.unwrap().as_bytes(),
        text.as_slice()
    );
    for none in [&b""[..], b"  \n", b"null", b" null "] {
        assert_eq!(f.call_json(none, &opts).0.unwrap(), "{}");
    }
    for bad in [&b"{"[..], b"{} {}", b"nope", b"[1,]"] {
        match f.call_json(bad, &opts).0 {
            Err(CallError::BadArgs(m)) => assert!(m.starts_with("args are not JSON"), "{m}"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
    // The other kinds still get the parsed value.
    let gcd = load(&rt, &app("gcd"), "gcd", None);
    assert_eq!(gcd.call_json(b"[12, 18]", &opts).0.unwrap(), "6");
    assert!(matches!(
        gcd.call_json(b"[12,", &opts).0,
        Err(CallError::BadArgs(_))
    ));
}

#[test]
fn echo_string_wasi_prints_its_argument() {
    let out = call(
        "echo-string-wasi",
        "echo-string-wasi",
        None,
        &json!(["héllo world"]),
    )
    .unwrap();
    assert_eq!(out, "héllo world");
    let args = json!({"a": 1});
    let out = call("echo-string-wasi", "echo-string-wasi", None, &args).unwrap();
    assert_eq!(out, args.to_string());
}

#[test]
fn gcd_numeric() {
    let rt = runtime();
    let f = load(&rt, &app("gcd"), "gcd", None);
    assert_eq!(f.kind(), Kind::Numeric);
    assert_eq!(f.call(&json!([12, 18])).unwrap(), "6");
    assert_eq!(f.call(&json!({"a": "1071", "b": 462})).unwrap(), "21");
    assert_eq!(f.call(&json!([-12, 18])).unwrap(), "6");
    assert_eq!(f.call(&json!([0, 5])).unwrap(), "5");
}

#[test]
fn gcd_non_numeric_is_bad_args() {
    let err = call("gcd", "gcd", None, &json!([12, "eighteen"])).unwrap_err();
    assert!(
        matches!(err, CallError::BadArgs(ref m) if m.contains("argument 2") && m.contains("must be i32")),
        "{err:?}"
    );
}

#[test]
fn gcd_wasi_takes_an_object_or_two_values() {
    for args in [
        json!(["12", "18"]),
        json!([12, 18]),
        json!({"a": 12, "b": 18}),
        json!({"a": "-12", "b": 18}),
    ] {
        let out = call("gcd-wasi", "gcd-wasi", None, &args).unwrap();
        assert_eq!(out.trim_end(), "6", "{args}");
    }
    match call("gcd-wasi", "gcd-wasi", None, &json!({"a": "x"})) {
        Err(CallError::Exit { status, stderr }) => {
            assert_eq!(status, 1);
            assert!(stderr.contains("gcd"), "{stderr}");
        }
        other => panic!("expected exit 1, got {other:?}"),
    }
}

/// The builds with rustc's memory layout answer exactly as the small ones do, large input
/// included (it lands above the 1 MiB stack and grows the memory).
#[test]
fn real_layout_builds_match_the_small_ones() {
    let rt = runtime();
    let big = "z".repeat(300_000);
    let auth_args = [
        json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "12345"}),
        json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": YES_HASH}),
        json!({"arg_uri": "u", "arg_body": big, "arg_secret": "s"}),
        json!({"arg_uri": "yes"}),
    ];
    let echo_args = [json!({"msg": "héllo", "n": [1, 2]}), json!([big])];
    let pairs: [(&str, &str, &[Value]); 4] = [
        ("authentication", "authentication", &auth_args),
        ("authentication-wasi", "authentication-wasi", &auth_args),
        ("echo-string", "echo_string", &echo_args),
        ("echo-string-wasi", "echo-string-wasi", &echo_args),
    ];
    for (name, export, cases) in pairs {
        let small = load(&rt, &app(name), export, None);
        let real = load(&rt, &app(&format!("{name}-rl")), export, None);
        assert_eq!(small.kind(), real.kind(), "{name}");
        for args in cases {
            assert_eq!(
                real.call(args).unwrap(),
                small.call(args).unwrap(),
                "{name} {args:.60}"
            );
        }
    }
    let gcd = load(&rt, &app("gcd-nomem"), "gcd", None);
    assert_eq!(gcd.kind(), Kind::Numeric);
    assert_eq!(gcd.call(&json!([1071, 462])).unwrap(), "21");
    assert_eq!(gcd.call(&json!([-12, 18])).unwrap(), "6");
}
