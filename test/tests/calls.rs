//! Functions that call functions (the `wasmengine.call` import): a chain of samples
//! (`relay` → `chain` → `echo-string`) with each step's metrics, a callee the caller's deploy
//! does not list refused, a cycle stopped by the depth limit, and callees' timeouts inside
//! their caller's deadline. Each way functions can be served: a container per function, and
//! in a group.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, fixture, Containerd, Engine};

fn import(c: &Containerd, name: &str, wasm: &[u8]) -> String {
    let image = format!("localhost/{name}:calls");
    c.import_wasm(wasm, &ImageSpec::classic(&format!("{name}.wasm")), &image)
        .unwrap();
    image
}

fn logs(e: &Engine, name: &str) -> Vec<Value> {
    let (code, v) = e.post_json("/function/logs", &json!({"function_name": name}));
    assert_eq!(code, 200, "{v}");
    v["logs"].as_array().cloned().unwrap_or_default()
}

fn invocations(e: &Engine, name: &str) -> u64 {
    let (_, text) = e.get("/metrics");
    let series = format!("wasmengine_invocations_total{{function=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_string()
}

fn chain_and_refusal(extra: &[&str]) {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, extra).expect("engine");
    let echo = import(&c, "echo-string", &app("echo-string"));
    let chain = import(&c, "chain", &app("chain"));
    let relay = import(&c, "relay", &app("relay"));
    e.deploy(json!({"function_name": "echo-string", "function_image": echo, "wasi_cap": false}));
    e.deploy(
        json!({"function_name": "chain", "function_image": chain, "wasi_cap": false,
                    "calls": ["echo-string"]}),
    );
    e.deploy(
        json!({"function_name": "relay", "function_image": relay, "wasi_cap": true,
                    "calls": ["chain"]}),
    );
    let (code, v) = e.post_json("/function/query", &json!({"function_name": "relay"}));
    assert_eq!(code, 200);
    assert_eq!(v["function"]["calls"], json!(["chain"]), "{v}");

    // Two steps: relay → chain (WAT, string ABI) → echo-string (C, string ABI).
    let (code, v) = e.invoke("relay", json!(["relay", "chain", "hi \"there\""]));
    assert_eq!(code, 200, "{v}\n{}", e.log());
    assert_eq!(v["result"], r#"relay>chain>["hi \"there\""]"#);
    // Each step went through the engine as an invoke of its own.
    for name in ["relay", "chain", "echo-string"] {
        assert_eq!(invocations(&e, name), 1, "{name}");
    }

    // A callee the deploy does not list is refused, and nothing runs: relay may call chain
    // only. The refusal reaches the caller (which exits 1, saying why).
    let (code, v) = e.invoke("relay", json!(["relay", "echo-string", "x"]));
    assert_eq!(code, 500, "{v}");
    assert!(message(&v).contains("403"), "{v}");
    assert!(message(&v).contains("call_refused"), "{v}");
    assert_eq!(invocations(&e, "echo-string"), 1);
    // A function deployed without calls may call nothing: chain's WAT returns the refusal.
    e.deploy(
        json!({"function_name": "lonely", "function_image": chain, "wasi_cap": false,
                    "export": "chain"}),
    );
    let (code, v) = e.invoke("lonely", json!({"a": 1}));
    assert_eq!(code, 200, "{v}");
    let result = v["result"].as_str().unwrap_or_default();
    assert!(result.starts_with("chain!403 "), "{result}");
    let error: Value = serde_json::from_str(&result[10..]).unwrap();
    assert_eq!(error["code"], "call_refused");
    // Listing a callee that is not deployed: 404 to the caller.
    e.deploy(
        json!({"function_name": "dangling", "function_image": relay, "wasi_cap": true,
                    "calls": ["nobody"]}),
    );
    let (code, v) = e.invoke("dangling", json!(["relay", "nobody"]));
    assert_eq!(code, 500);
    assert!(message(&v).contains("404"), "{v}");

    // A caller whose timeout is too far away to be an instant still calls (no deadline).
    e.deploy(
        json!({"function_name": "patient-relay", "function_image": relay, "wasi_cap": true,
                    "calls": ["chain"], "timeout_ms": u64::MAX}),
    );
    let (code, v) = e.invoke("patient-relay", json!(["relay", "chain", "x"]));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["result"], r#"relay>chain>["x"]"#);

    // calls must name functions.
    let (code, v) = e.post_json(
        "/function/deploy",
        &json!({"function_name": "bad", "function_image": relay, "wasi_cap": true,
                "calls": ["Not A Name"]}),
    );
    assert_eq!(code, 400, "{v}");
    assert!(message(&v).contains("calls"), "{v}");
}

#[test]
fn a_chain_of_two_calls_runs_and_an_unlisted_callee_is_refused() {
    chain_and_refusal(&[]);
}

#[test]
fn grouped_functions_call_each_other_the_same_way() {
    chain_and_refusal(&["--group-size", "8"]);
}

#[test]
fn a_cycle_ends_at_the_depth_limit_and_callees_end_by_their_callers_deadline() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &[]).expect("engine");
    let probe = import(&c, "probe", &fixture("probe-calls"));
    let deploy = |name: &str, timeout_ms: u64, calls: &[&str]| {
        e.deploy(
            json!({"function_name": name, "function_image": probe, "wasi_cap": true,
                        "timeout_ms": timeout_ms, "calls": calls}),
        );
    };

    // A function that calls itself: depth 0 (the REST invoke) to 8 run, the ninth call is
    // refused with 508, and every level fails in turn. No hang, no runaway.
    deploy("loopy", 10_000, &["loopy"]);
    let start = Instant::now();
    let (code, v) = e.invoke("loopy", json!(["probe", "loop", "loopy"]));
    assert_eq!(code, 500, "{v}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    let lines = logs(&e, "loopy");
    let deepest = lines
        .iter()
        .find(|l| l["text"].as_str().is_some_and(|t| t.contains("call_depth")))
        .unwrap_or_else(|| panic!("no call_depth line: {lines:?}"));
    // The deepest call's id is the REST call's with one `.1` per level.
    let id = deepest["call_id"].as_str().unwrap();
    assert_eq!(id.matches(".1").count(), 8, "{id}");
    assert_eq!(invocations(&e, "loopy"), 9);

    // A callee whose own timeout is long ends by its caller's deadline: the spinner (30 s)
    // called by a 1.5 s caller is stopped at 1.5 s, and so is its caller.
    deploy("spinner", 30_000, &[]);
    deploy("waiter", 1_500, &["spinner"]);
    let start = Instant::now();
    let (code, v) = e.invoke(
        "waiter",
        json!(["probe", "call", "spinner", r#"["probe","spin"]"#]),
    );
    let took = start.elapsed();
    // The caller sees its callee's 504 just before its own deadline, or its deadline first.
    assert!(
        code == 504 || (code == 500 && message(&v).contains("call spinner: 504")),
        "{code} {v}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    let spun = logs(&e, "spinner");
    assert!(
        spun.iter().any(|l| l["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("error: timeout"))),
        "{spun:?}"
    );

    // A callee's own short timeout, inside its caller's deadline: the caller gets the 504 and
    // goes on (here it reports it and exits 1).
    deploy("quick", 300, &[]);
    deploy("patient", 20_000, &["quick"]);
    let start = Instant::now();
    let (code, v) = e.invoke(
        "patient",
        json!(["probe", "call", "quick", r#"["probe","spin"]"#]),
    );
    assert_eq!(code, 500, "{v}");
    assert!(message(&v).contains("call quick: 504"), "{v}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // The callee's args must be a JSON object or array.
    let (code, v) = e.invoke("patient", json!(["probe", "call", "quick", "42"]));
    assert_eq!(code, 500, "{v}");
    assert!(message(&v).contains("call quick: 400"), "{v}");
}
