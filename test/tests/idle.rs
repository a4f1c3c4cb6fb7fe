//! Functions scaled to zero: a function not called for its idle period has its task stopped
//! (no process left), `query` says `idle`, and its next call starts the task again and
//! answers; an engine started again leaves idle functions idle until called.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, eventually, Containerd, Engine};

fn status(e: &Engine, name: &str) -> String {
    let (code, v) = e.post_json("/function/query", &json!({"function_name": name}));
    assert_eq!(code, 200, "{v}");
    v["function"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn metric(e: &Engine, series: &str) -> u64 {
    let (_, text) = e.get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn idle_functions_scale_to_zero_and_wake_on_their_next_call() {
    let c = Containerd::start().expect("containerd");
    // Engine-wide: never idle; one function asks for 1 s, another keeps the default.
    let mut e = Engine::start(&c, &[]).expect("engine");
    let gcd = "localhost/gcd:idle";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd)
        .unwrap();
    e.deploy(
        json!({"function_name": "sleepy", "function_image": gcd, "wasi_cap": false,
                    "export": "gcd", "idle_timeout_secs": 1}),
    );
    e.deploy(
        json!({"function_name": "awake", "function_image": gcd, "wasi_cap": false,
                    "export": "gcd"}),
    );
    let (code, v) = e.invoke("sleepy", json!([12, 18]));
    assert_eq!((code, v["result"].as_str()), (200, Some("6")), "{v}");
    assert_eq!(status(&e, "sleepy"), "running");
    let tasks_before = c.task_processes().len();
    assert_eq!(tasks_before, 2);

    // Calls keep it up; a second of silence stops it.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(e.invoke("sleepy", json!([4, 6])).0, 200);
        assert_eq!(status(&e, "sleepy"), "running");
    }
    // Generous bounds: under the whole suite's load a task's stop (SIGTERM, then containerd
    // reaping it) has taken over 5 s on this 2-core machine kind.
    assert!(
        eventually(Duration::from_secs(20), || status(&e, "sleepy") == "idle"),
        "{}",
        e.log()
    );
    // The marker goes first, then the task is stopped: wait for the stop to finish.
    assert!(eventually(Duration::from_secs(20), || metric(
        &e,
        r#"wasmengine_idle_stops_total{function="sleepy"}"#
    ) == 1));
    assert_eq!(
        c.task_processes().len(),
        1,
        "the idle task's process is gone"
    );
    assert_eq!(status(&e, "awake"), "running");

    // The next call starts it and answers; it counts as a cold start.
    let cold_before = metric(&e, r#"wasmengine_cold_starts_total{function="sleepy"}"#);
    let start = Instant::now();
    let (code, v) = e.invoke("sleepy", json!([12, 18]));
    eprintln!("call of an idle function answered in {:?}", start.elapsed());
    assert_eq!(
        (code, v["result"].as_str()),
        (200, Some("6")),
        "{v}\n{}",
        e.log()
    );
    assert_eq!(status(&e, "sleepy"), "running");
    assert_eq!(
        metric(&e, r#"wasmengine_cold_starts_total{function="sleepy"}"#),
        cold_before + 1
    );
    assert_eq!(
        metric(&e, r#"wasmengine_task_restarts_total{function="sleepy"}"#),
        0,
        "waking is not a restart after a failure"
    );

    // Idle again (the stop finished), then an engine restart: it stays idle (not started by
    // the engine's recovery) and still answers its next call.
    assert!(eventually(Duration::from_secs(5), || metric(
        &e,
        r#"wasmengine_idle_stops_total{function="sleepy"}"#
    ) == 2));
    assert_eq!(status(&e, "sleepy"), "idle");
    e.restart().expect("engine restarts");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status(&e, "sleepy"), "idle");
    let (code, v) = e.invoke("sleepy", json!([12, 18]));
    assert_eq!((code, v["result"].as_str()), (200, Some("6")), "{v}");
    let (code, v) = e.invoke("awake", json!([12, 18]));
    assert_eq!((code, v["result"].as_str()), (200, Some("6")), "{v}");

    // Delete of an idle function works and leaves nothing.
    assert!(eventually(Duration::from_secs(5), || status(&e, "sleepy") == "idle"));
    let (code, _) = e.post("/function/delete", &json!({"function_name": "sleepy"}));
    assert_eq!(code, 200);
    let (code, _) = e.post_json("/function/query", &json!({"function_name": "sleepy"}));
    assert_eq!(code, 404);
}
