//! Hostile functions and images, through the engine on a real containerd: every limit holds
//! against code that tries, configuration is the deploy's and not the image's, only Wasm
//! runs, and a function's container has no privilege. After each, a healthy function still
//! answers.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmengine_api::image::{self, ImageSpec, Layout};
use wasmengine_e2e::{add_layer, app, core_wat, Containerd, Engine, Registry};

fn setup(extra: &[&str]) -> (Containerd, Engine) {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, extra).expect("engine");
    let gcd = "localhost/gcd:hostile";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd)
        .unwrap();
    e.deploy(
        json!({"function_name": "healthy", "function_image": gcd, "wasi_cap": false,
                    "export": "gcd"}),
    );
    (c, e)
}

/// Deploys the WAT command that sleeps in WASI (`sleeps.wat`) as `sleeper`.
fn deploy_sleeper(c: &Containerd, e: &Engine, timeout_ms: u64) {
    let sleeper = "localhost/sleeps:hostile";
    c.import_wasm(
        &core_wat("sleeps"),
        &ImageSpec::classic("sleeps.wasm"),
        sleeper,
    )
    .unwrap();
    e.deploy(
        json!({"function_name": "sleeper", "function_image": sleeper, "wasi_cap": true,
                    "timeout_ms": timeout_ms}),
    );
}

fn healthy(e: &Engine) {
    let (status, v) = e.invoke("healthy", json!([12, 18]));
    assert_eq!((status, v["result"].as_str()), (200, Some("6")), "{v}");
}

/// With every slot of a function taken and its queue full, a call is turned away at once
/// with 429 and `Retry-After`, without reaching the function; the rest answer as usual.
#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let (c, e) = setup(&["--function-concurrency", "1"]);
    deploy_sleeper(&c, &e, 3000);
    std::thread::scope(|s| {
        // One running and eight waiting (eight queue places per slot) fill the function.
        let calls: Vec<_> = (0..9)
            .map(|_| s.spawn(|| e.invoke("sleeper", json!(["r"]))))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        let raw = raw_invoke(&e, r#"{"function_name":"sleeper","args":["s"]}"#);
        assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
        assert!(
            raw.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
            "{raw}"
        );
        assert!(raw.contains("busy"), "{raw}");
        assert!(start.elapsed() < Duration::from_secs(1));
        // Another function is not held up by this one's queue.
        healthy(&e);
        for call in calls {
            let (status, v) = call.join().unwrap();
            assert_eq!(status, 504, "{v}");
        }
    });
    let (status, v) = e.invoke("sleeper", json!(["s"]));
    assert_eq!((status, v["result"].as_str()), (200, Some("1")), "{v}");
}

/// The whole answer, head included, of an invoke with `body`.
fn raw_invoke(e: &Engine, body: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(e.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "POST /function/invoke HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn forty_wasi_sleepers_all_time_out_within_three_seconds() {
    let (c, e) = setup(&[]);
    deploy_sleeper(&c, &e, 1000);
    let start = Instant::now();
    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..40)
            .map(|_| s.spawn(|| e.invoke("sleeper", json!(["r"]))))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let took = start.elapsed();
    for (status, v) in &answers {
        assert_eq!(*status, 504, "{v}");
        assert!(v["message"].as_str().unwrap().contains("timeout"), "{v}");
    }
    assert!(took < Duration::from_secs(3), "40 sleepers took {took:?}");
    // The slots are free again: a short sleep and the healthy function answer.
    let (status, v) = e.invoke("sleeper", json!(["s"]));
    assert_eq!((status, v["result"].as_str()), (200, Some("1")), "{v}");
    healthy(&e);
}

#[test]
fn an_image_cannot_set_its_own_limits() {
    let (c, e) = setup(&[]);
    // The image asks for a 1-byte output cap and a ten-minute timeout; the deploy sets
    // neither, so the engine's defaults must hold.
    let mut spec = ImageSpec::classic("fib.wasm");
    spec.env = vec![
        "WASMENGINE_MAX_OUTPUT_BYTES=1".into(),
        "WASMENGINE_TIMEOUT_MS=600000".into(),
        "WASMENGINE_MODE=command".into(),
        "WASMENGINE_BUSY_POLL_US=1000".into(),
        "GREETING=hello".into(),
    ];
    let fib = "localhost/fibonacci:env";
    c.import_wasm(&app("fibonacci"), &spec, fib).unwrap();
    e.deploy(json!({"function_name": "fib", "function_image": fib, "wasi_cap": true}));
    let (status, v) = e.invoke("fib", json!(["20"]));
    assert_eq!((status, v["result"].as_str()), (200, Some("6765")), "{v}");
    let spec_json = c.ctr_ok(&["container", "info", "fib"]).unwrap();
    assert!(
        spec_json.contains("WASMENGINE_TIMEOUT_MS=10000"),
        "{spec_json}"
    );
    assert!(!spec_json.contains("600000"), "{spec_json}");
    // Nor its process's polling: the engine's setting (its default here) is what runs.
    assert!(
        spec_json.contains("\"WASMENGINE_BUSY_POLL_US=100\""),
        "{spec_json}"
    );
    assert!(spec_json.contains("GREETING=hello"), "{spec_json}");
    assert!(e
        .log()
        .contains("ignoring the image's WASMENGINE_TIMEOUT_MS"));
    healthy(&e);
}

#[test]
fn busy_polling_is_the_engines_to_turn_off() {
    let (c, e) = setup(&["--function-busy-poll-us", "0", "--group-size", "4"]);
    // The function runs in its group's process, whose container gets the setting (a
    // function with a container of its own gets it as in `an_image_cannot_set_its_own_limits`).
    let spec_json = c.ctr_ok(&["container", "info", "healthy"]).unwrap();
    let info: serde_json::Value = serde_json::from_str(&spec_json).unwrap();
    let server = info["Labels"]["io.wasmengine.group"]
        .as_str()
        .expect("the function is in a group");
    let server_json = c.ctr_ok(&["container", "info", server]).unwrap();
    assert!(
        server_json.contains("\"WASMENGINE_BUSY_POLL_US=0\""),
        "{server_json}"
    );
    for _ in 0..50 {
        let (status, v) = e.invoke("healthy", json!([12, 18]));
        assert_eq!((status, v["result"].as_str()), (200, Some("6")), "{v}");
    }
}

#[test]
fn a_later_layer_cannot_swap_the_module_for_native_code() {
    let (c, e) = setup(&[]);
    let mut img = image::build(&app("gcd"), &ImageSpec::classic("gcd.wasm")).unwrap();
    add_layer(
        &mut img,
        &[("gcd.wasm", 0o755, b"#!/bin/sh\necho native; exit 42\n")],
    )
    .unwrap();
    c.import_image(&img, Layout::Classic, "localhost/swapped:1")
        .unwrap();
    let (status, body) = e.post_json(
        "/function/deploy",
        &json!({"function_name": "swapped", "function_image": "localhost/swapped:1",
                "wasi_cap": false}),
    );
    assert_eq!(status, 422, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("final rootfs"), "{msg}");
    assert!(c.ctr_ok(&["container", "ls", "-q"]).unwrap().trim() == "healthy");
    healthy(&e);
}

#[test]
fn function_containers_run_without_privilege() {
    let (c, e) = setup(&[]);
    let info = c.ctr_ok(&["container", "info", "healthy"]).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&info).unwrap();
    let spec = &spec["Spec"];
    assert_eq!(spec["process"]["user"]["uid"], 65532, "{spec}");
    assert_eq!(spec["root"]["readonly"], true);
    assert!(spec["linux"]["seccomp"]["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .contains(&json!("execve")));
    // The running process, as the kernel sees it.
    let pids = c.task_processes();
    assert!(!pids.is_empty());
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l[name.len()..].trim().to_string())
                .unwrap_or_default()
        };
        assert!(field("Uid:").starts_with("65532"), "{status}");
        assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
        assert_eq!(field("Seccomp:"), "2", "{status}");
        assert_eq!(field("NoNewPrivs:"), "1", "{status}");
        // What it can see: its own /proc entries only (no /proc/sys, /proc/kcore, other
        // processes), no /sys, and in /dev the runtime's few devices.
        let root = format!("/proc/{pid}/root");
        let mut procs: Vec<String> = std::fs::read_dir(format!("{root}/proc"))
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        procs.sort();
        assert_eq!(procs, ["1", "self", "thread-self"], "{procs:?}");
        assert!(!std::path::Path::new(&format!("{root}/sys/kernel")).exists());
        assert!(std::path::Path::new(&format!("{root}/dev/null")).exists());
        assert!(!std::path::Path::new(&format!("{root}/dev/shm")).exists());
    }
    // Its socket and cache directories are its own, and nobody else's.
    let fn_dir = e.data_dir.path().join("fn/healthy");
    let cache_dir = e.data_dir.path().join("cache/healthy");
    for d in [&fn_dir, &cache_dir] {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(d).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (65532, 0o700),
            "{}",
            d.display()
        );
    }
    healthy(&e);
}

#[test]
fn images_over_the_size_caps_are_refused() {
    let (c, e) = setup(&["--max-image-unpacked-bytes", "1000000"]);
    let mut img = image::build(&app("gcd"), &ImageSpec::classic("gcd.wasm")).unwrap();
    let zeros = vec![0u8; 4 << 20];
    add_layer(&mut img, &[("zeros", 0o644, &zeros)]).unwrap();
    c.import_image(&img, Layout::Classic, "localhost/zeros:1")
        .unwrap();
    let (status, body) = e.post_json(
        "/function/deploy",
        &json!({"function_name": "zeros", "function_image": "localhost/zeros:1",
                "wasi_cap": false}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("1000000-byte cap"),
        "{body}"
    );
    healthy(&e);
}

/// The compressed cap holds for images pulled from a registry, from the sizes the manifest
/// declares (nothing is downloaded past it).
#[test]
fn pulled_images_over_the_compressed_cap_are_refused() {
    // The healthy gcd image (about 200 bytes) fits; authentication (several KiB) does not.
    let (_c, e) = setup(&["--max-image-bytes", "1000"]);
    let reg = Registry::start().unwrap();
    let reference = reg
        .push_wasm(
            &app("authentication"),
            &ImageSpec::classic("authentication.wasm"),
            "auth:big",
            false,
        )
        .unwrap();
    let (status, body) = e.post_json(
        "/function/deploy",
        &json!({"function_name": "big", "function_image": reference, "wasi_cap": false,
                "export": "authentication"}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("1000-byte cap"),
        "{body}"
    );
    healthy(&e);
}

/// A registry that answers a digest-pinned reference with another document is refused:
/// what is deployed is exactly what the reference names.
#[test]
fn a_manifest_that_does_not_match_its_pinned_digest_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    let (_c, e) = setup(&[]);
    // A fake registry: any manifest request gets the same (valid-looking) manifest.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let pinned = format!("127.0.0.1:{port}/app@sha256:{}", "ab".repeat(32));
    let (status, body) = e.post_json(
        "/function/deploy",
        &json!({"function_name": "pinned", "function_image": pinned, "wasi_cap": false}),
    );
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match the pinned"),
        "{body}"
    );
    healthy(&e);
}

#[test]
fn invalid_names_leave_no_metrics_series_and_bad_namespaces_are_refused() {
    let (_c, e) = setup(&[]);
    let (status, _) = e.invoke("Not/A-Name", json!([]));
    assert_eq!(status, 400);
    let (status, _) = e.invoke("absent", json!([]));
    assert_eq!(status, 404);
    healthy(&e);
    let (_, metrics) = e.get("/metrics");
    assert!(!metrics.contains("Not/A-Name"), "{metrics}");
    assert!(!metrics.contains("absent"), "{metrics}");
    assert!(metrics.contains(r#"function="healthy""#), "{metrics}");

    let out = std::process::Command::new(wasmengine_e2e::release_dir().join("wasm_engine"))
        .args(["--namespace", "bad/namespace", "--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid containerd namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
