//! Function logs (`POST /function/logs`): a WASI call's stderr and every failed call's error,
//! each line with the call's id (also in the invoke's `x-wasmengine-call-id` header), newest
//! last, bounded, kept across an engine restart; for grouped functions also across an idle
//! unload, and forgotten with the function.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{eventually, fixture, Containerd, Engine};

/// An invoke over a raw connection: status, the call id header, the JSON body.
fn invoke(e: &Engine, name: &str, args: Value) -> (u16, String, Value) {
    let body = json!({"function_name": name, "args": args}).to_string();
    let mut conn = std::net::TcpStream::connect(e.addr).unwrap();
    write!(
        conn,
        "POST /function/invoke HTTP/1.1\r\nhost: e\r\naccept: application/json\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let id = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-wasmengine-call-id")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (
        status,
        id,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn logs(e: &Engine, name: &str, tail: Option<usize>) -> Vec<Value> {
    let (code, v) = e.post_json(
        "/function/logs",
        &json!({"function_name": name, "tail": tail}),
    );
    assert_eq!(code, 200, "{v}");
    v["logs"].as_array().cloned().unwrap_or_default()
}

fn texts_of(lines: &[Value], id: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["call_id"] == id)
        .map(|l| l["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn deploy_probe(c: &Containerd, e: &Engine, name: &str, idle_secs: u64) {
    let image = "localhost/probe:logs";
    c.import_wasm(&fixture("probe"), &ImageSpec::classic("probe.wasm"), image)
        .unwrap();
    e.deploy(
        json!({"function_name": name, "function_image": image, "wasi_cap": true,
                    "idle_timeout_secs": idle_secs}),
    );
}

fn status(e: &Engine, name: &str) -> String {
    let (code, v) = e.post_json("/function/query", &json!({"function_name": name}));
    assert_eq!(code, 200, "{v}");
    v["function"]["status"].as_str().unwrap_or_default().into()
}

#[test]
fn a_functions_log_keeps_stderr_and_errors_by_call_and_outlives_an_engine_restart() {
    let c = Containerd::start().expect("containerd");
    let mut e = Engine::start(&c, &["--function-log-lines", "4"]).expect("engine");
    deploy_probe(&c, &e, "probe", 0);

    // The probe with no command lists the rootfs root, which a function cannot open: perror's
    // line on stderr, then exit 1 (500, kind `exit`). Two lines per call.
    let (status, first, v) = invoke(&e, "probe", json!([]));
    assert_eq!(status, 500, "{v}");
    assert!(!first.is_empty());
    let (status, second, _) = invoke(&e, "probe", json!([]));
    assert_eq!(status, 500);
    assert!(!second.is_empty() && second != first, "{first} {second}");

    let all = logs(&e, "probe", None);
    assert_eq!(all.len(), 4, "{all:?}");
    for id in [&first, &second] {
        let texts = texts_of(&all, id);
        assert!(texts.iter().any(|t| t.starts_with("opendir /")), "{all:?}");
        assert!(
            texts.iter().any(|t| t.starts_with("error: exit")),
            "{all:?}"
        );
    }
    assert!(all
        .iter()
        .all(|l| l["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
    // Newest last; tail picks the newest.
    let last = logs(&e, "probe", Some(1));
    assert_eq!(last.len(), 1);
    assert_eq!(last[0], *all.last().unwrap());
    assert_eq!(last[0]["call_id"], second.as_str());

    // The ring keeps 4 lines: a third call pushes the first call's out.
    let (_, third, _) = invoke(&e, "probe", json!([]));
    let all = logs(&e, "probe", None);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(texts_of(&all, &first).is_empty(), "{all:?}");
    assert_eq!(texts_of(&all, &third).len(), 2, "{all:?}");

    // The log is the task's: an engine killed and started again still reads it.
    e.restart().expect("engine restarts");
    assert_eq!(logs(&e, "probe", None), all);
    // The text form: one line per entry, with the call id.
    let (code, text) = e.post("/function/logs", &json!({"function_name": "probe"}));
    assert_eq!(code, 200);
    assert!(text.contains("error: exit"), "{text}");

    let (code, _) = e.post_json("/function/logs", &json!({"function_name": "nope"}));
    assert_eq!(code, 404);
}

#[test]
fn a_grouped_functions_log_outlives_its_idle_unload_and_goes_with_it() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &["--group-size", "4"]).expect("engine");
    // Two functions in one group: `keeper` keeps the group running, `probe` idles after 1 s.
    deploy_probe(&c, &e, "keeper", 0);
    deploy_probe(&c, &e, "probe", 1);
    let (code, failed, _) = invoke(&e, "probe", json!([]));
    assert_eq!(code, 500);
    let has_line = |e: &Engine| {
        texts_of(&logs(e, "probe", None), &failed)
            .iter()
            .any(|t| t.starts_with("opendir /"))
    };
    assert!(has_line(&e));
    // Unloaded for being idle: its log is the group's, and stays.
    assert!(eventually(Duration::from_secs(10), || status(&e, "probe") == "idle"));
    assert!(has_line(&e), "{:?}", logs(&e, "probe", None));
    // Deleted and deployed again: a new, empty log.
    let (code, _) = e.post("/function/delete", &json!({"function_name": "probe"}));
    assert_eq!(code, 200);
    deploy_probe(&c, &e, "probe", 0);
    assert!(logs(&e, "probe", None).is_empty());
}
