//! The shim under a real containerd: images of both layouts, stdio, argv, env, exit status,
//! kill, delete, and function-server mode.

use std::path::Path;

use std::time::{Duration, Instant};

use wasmengine_api::image::{ImageSpec, MediaTypes};
use wasmengine_e2e::*;

/// `ctr run --rm` with our runtime; returns (exit code, stdout, stderr).
fn run(
    c: &Containerd,
    image: &str,
    id: &str,
    extra: &[&str],
    args: &[&str],
) -> (i32, String, String) {
    let fifo = c.fifo_dir();
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME, "--fifo-dir", &fifo];
    argv.extend_from_slice(extra);
    argv.push(image);
    argv.push(id);
    argv.extend_from_slice(args);
    let out = c.ctr(&argv).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn probe_image(c: &Containerd, reference: &str) {
    c.import_wasm(
        &fixture("probe"),
        &ImageSpec::classic("probe.wasm"),
        reference,
    )
    .unwrap();
}

#[test]
fn classic_image_runs_with_stdout_env_and_rootfs() {
    let c = Containerd::start().unwrap();
    probe_image(&c, "localhost/probe:v1");
    let (code, out, err) = run(
        &c,
        "localhost/probe:v1",
        "probe1",
        &["--env", "GREETING=hello there"],
        &[],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", c.log());
    assert!(out.contains("argc=1\n"), "{out}");
    assert!(out.contains("argv[0]=/probe.wasm\n"), "{out}");
    assert!(out.contains("env:GREETING=hello there\n"), "{out}");
    assert!(
        out.contains("root:probe.wasm\n"),
        "the rootfs is preopened as /: {out}"
    );
}

#[test]
fn a_wasi_preview2_component_runs_like_a_module() {
    let c = Containerd::start().unwrap();
    c.import_wasm(
        &component(&fixture("probe")),
        &ImageSpec::classic("probe.wasm"),
        "localhost/probe-p2:v1",
    )
    .unwrap();
    let (code, out, err) = run(
        &c,
        "localhost/probe-p2:v1",
        "probe-p2",
        &["--env", "GREETING=hello there"],
        &["/probe.wasm", "x y"],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", c.log());
    for line in [
        "argc=2\n",
        "argv[0]=/probe.wasm\n",
        "argv[1]=x y\n",
        "env:GREETING=hello there\n",
        "root:probe.wasm\n",
    ] {
        assert!(out.contains(line), "{line:?} missing from: {out}");
    }
    assert!(
        c.log()
            .lines()
            .any(|l| l.contains("loaded probe") && l.contains("component")),
        "{}",
        c.log()
    );
}

#[test]
fn image_without_entrypoint_runs_its_one_module_with_the_args() {
    let c = Containerd::start().unwrap();
    let spec = ImageSpec {
        entrypoint: None,
        ..ImageSpec::classic("probe.wasm")
    };
    c.import_wasm(&fixture("probe"), &spec, "localhost/probe:bare")
        .unwrap();
    let (code, out, err) = run(&c, "localhost/probe:bare", "bare", &[], &["hello", "world"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("argc=3\nargv[0]=/probe.wasm\nargv[1]=hello\nargv[2]=world\n"),
        "{out}"
    );
    // No args at all (`ctr run IMG ID`, as the original engine's images were run): the one
    // module runs with itself as argv[0].
    let (code, out, err) = run(&c, "localhost/probe:bare", "noargs", &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("argc=1\nargv[0]=/probe.wasm\n"), "{out}{err}");
    // Two modules and no entrypoint: which one is meant cannot be told.
    let image = wasmengine_api::image::build(&fixture("probe"), &spec).unwrap();
    assert_eq!(image.layers.len(), 1);
}

/// An image whose module is swapped, in a later layer, for a script run by a static busybox.
fn native_image(c: &Containerd, reference: &str) {
    let mut img =
        wasmengine_api::image::build(&fixture("probe"), &ImageSpec::classic("probe.wasm")).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (scripts/install-deps.sh)");
    add_layer(
        &mut img,
        &[
            ("bin/busybox", 0o755, &busybox),
            (
                "probe.wasm",
                0o755,
                b"#!/bin/busybox sh\necho native code ran\nexit 42\n",
            ),
        ],
    )
    .unwrap();
    c.import_image(&img, wasmengine_api::image::Layout::Classic, reference)
        .unwrap();
}

#[test]
fn a_native_entry_runs_for_plain_containers_and_never_for_a_function() {
    let c = Containerd::start().unwrap();
    native_image(&c, "localhost/native:1");
    // Plain `ctr` (and CRI) containers keep the library's rule: native code runs natively.
    let (code, out, err) = run(&c, "localhost/native:1", "plain", &[], &[]);
    assert_eq!(code, 42, "{out}{err}");
    assert!(out.contains("native code ran"), "{out}{err}");
    // A container in the engine's function-server mode runs Wasm or nothing.
    let (code, out, err) = run(
        &c,
        "localhost/native:1",
        "function",
        &[
            "--env",
            "WASMENGINE_MODE=serve",
            "--env",
            "WASMENGINE_FUNCTION=native",
            "--env",
            "WASMENGINE_SOCKET=/run/fn/fn.sock",
        ],
        &[],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(!out.contains("native code ran"), "{out}{err}");
    assert!(
        c.log().contains("refusing a native entry point"),
        "{}",
        c.log()
    );
    let _ = c.ctr(&["container", "rm", "function"]);
    assert_nothing_left(&c);
}

#[test]
fn argv_and_exit_status_come_from_the_container() {
    let c = Containerd::start().unwrap();
    probe_image(&c, "localhost/probe:v1");
    let (code, out, _) = run(
        &c,
        "localhost/probe:v1",
        "args",
        &[],
        &["/probe.wasm", "one", "two words"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("argc=3\nargv[0]=/probe.wasm\nargv[1]=one\nargv[2]=two words\n"),
        "{out}"
    );
    let (code, out, _) = run(
        &c,
        "localhost/probe:v1",
        "exit7",
        &[],
        &["/probe.wasm", "exit", "7"],
    );
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("exiting 7"), "{out}");
    let (code, _, _) = run(
        &c,
        "localhost/probe:v1",
        "trap",
        &[],
        &["/probe.wasm", "trap"],
    );
    assert_eq!(code, 134);
    let (code, _, err) = run(&c, "localhost/probe:v1", "missing", &[], &["/nope.wasm"]);
    assert_ne!(code, 0, "{err}");
}

#[test]
fn files_written_by_the_module_land_in_the_rootfs() {
    let c = Containerd::start().unwrap();
    probe_image(&c, "localhost/probe:v1");
    let (code, out, err) = run(
        &c,
        "localhost/probe:v1",
        "write",
        &[],
        &["/probe.wasm", "write", "/note.txt", "kept"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("read back: kept"), "{out}");
}

#[test]
fn entrypoint_export_is_called_with_the_remaining_args() {
    let c = Containerd::start().unwrap();
    c.import_wasm(
        &core_wat("numbers"),
        &ImageSpec::classic("numbers.wasm"),
        "localhost/numbers:v1",
    )
    .unwrap();
    let (code, out, err) = run(
        &c,
        "localhost/numbers:v1",
        "gcd",
        &[],
        &["/numbers.wasm#gcd", "1071", "462"],
    );
    assert_eq!((code, out.as_str()), (0, "21\n"), "{err}");
    let (code, _, err) = run(
        &c,
        "localhost/numbers:v1",
        "gcd-bad",
        &[],
        &["/numbers.wasm#gcd", "x", "3"],
    );
    assert_eq!(code, 134);
    assert!(err.contains("must be i32"), "{err}");
    c.import_wasm(
        &core_wat("strings"),
        &ImageSpec::classic("strings.wasm"),
        "localhost/strings:v1",
    )
    .unwrap();
    let (code, out, _) = run(
        &c,
        "localhost/strings:v1",
        "upper",
        &[],
        &["/strings.wasm#upper", r#"["abc"]"#],
    );
    assert_eq!((code, out.as_str()), (0, "[\"ABC\"]\n"));
}

#[test]
fn docker_schema2_images_run() {
    let c = Containerd::start().unwrap();
    let spec = ImageSpec {
        media_types: MediaTypes::Docker,
        ..ImageSpec::classic("probe.wasm")
    };
    c.import_wasm(&fixture("probe"), &spec, "localhost/probe:docker")
        .unwrap();
    let (code, out, err) = run(&c, "localhost/probe:docker", "docker", &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("argv[0]=/probe.wasm"), "{out}");
}

/// Starts a spinning module with an attached `ctr run --rm` (whose exit status is the task's);
/// returns once the task is running.
fn start_spinner(c: &Containerd, id: &str) -> std::process::Child {
    let child = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&c.address)
        .args([
            "--namespace",
            &c.namespace,
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--fifo-dir",
            &c.fifo_dir(),
        ])
        .args(["localhost/probe:v1", id, "/probe.wasm", "spin"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        c.ctr_ok(&["task", "ls"])
            .unwrap()
            .lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING"))
    }));
    child
}

/// The attached `ctr run`'s exit status, once the task has exited.
fn exit_status(mut child: std::process::Child) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "task did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// No task, container, shim process or mount of this containerd is left.
fn assert_nothing_left(c: &Containerd) {
    assert!(
        eventually(Duration::from_secs(10), || c.shim_pids().is_empty()),
        "shim left behind"
    );
    assert!(c.ctr_ok(&["task", "ls", "-q"]).unwrap().trim().is_empty());
    assert!(c
        .ctr_ok(&["container", "ls", "-q"])
        .unwrap()
        .trim()
        .is_empty());
    let mounts = c.mounts();
    assert!(mounts.iter().all(|m| !m.contains("/rootfs")), "{mounts:?}");
}

#[test]
fn sigterm_interrupts_a_spinning_module_and_delete_leaves_nothing() {
    let c = Containerd::start().unwrap();
    probe_image(&c, "localhost/probe:v1");
    let child = start_spinner(&c, "spin-term");
    assert!(!c.shim_pids().is_empty(), "a shim serves the task");
    // `ctr task ps` lists the task's process, as for a runc container.
    let ls = c.ctr_ok(&["task", "ls"]).unwrap();
    let pid = ls
        .lines()
        .find(|l| l.starts_with("spin-term"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let ps = c.ctr_ok(&["task", "ps", "spin-term"]).unwrap();
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid)),
        "task ls: {ls}\ntask ps: {ps}"
    );
    let start = Instant::now();
    c.ctr_ok(&["task", "kill", "spin-term"]).unwrap();
    let status = exit_status(child);
    eprintln!("SIGTERM → exit {status} after {:?}", start.elapsed());
    assert_eq!(status, 143, "128 + SIGTERM");
    assert_nothing_left(&c);
}

#[test]
fn sigkill_stops_a_spinning_module() {
    let c = Containerd::start().unwrap();
    probe_image(&c, "localhost/probe:v1");
    let child = start_spinner(&c, "spin-kill");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "spin-kill"])
        .unwrap();
    assert_eq!(exit_status(child), 137, "128 + SIGKILL");
    assert_nothing_left(&c);
}

/// A detached serving container for `module` with its socket directory at `dir`.
fn start_server(
    c: &Containerd,
    image: &str,
    id: &str,
    dir: &Path,
    env: &[&str],
) -> std::path::PathBuf {
    let fifo = c.fifo_dir();
    let mount = format!(
        "type=bind,src={},dst=/run/wasmengine,options=rbind:rw",
        dir.display()
    );
    let mut args = vec![
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--fifo-dir",
        &fifo,
        "--mount",
        &mount,
    ];
    let env_args: Vec<String> = [
        "WASMENGINE_MODE=serve",
        "WASMENGINE_SOCKET=/run/wasmengine/fn.sock",
    ]
    .iter()
    .chain(env)
    .map(|e| e.to_string())
    .collect();
    for e in &env_args {
        args.push("--env");
        args.push(e);
    }
    args.push(image);
    args.push(id);
    c.ctr_ok(&args).unwrap();
    let socket = dir.join("fn.sock");
    assert!(
        eventually(Duration::from_secs(20), || {
            http_unix(&socket, "GET", "/ready", b"")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        }),
        "function server did not become ready\n{}",
        c.log()
    );
    socket
}

#[test]
fn serve_mode_answers_concurrent_invocations_in_fresh_instances() {
    let c = Containerd::start().unwrap();
    c.import_wasm(
        &core_wat("strings"),
        &ImageSpec::classic("strings.wasm"),
        "localhost/strings:v1",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = start_server(
        &c,
        "localhost/strings:v1",
        "upper-fn",
        dir.path(),
        &["WASMENGINE_FUNCTION=upper"],
    );
    std::thread::scope(|s| {
        for t in 0..8 {
            let socket = &socket;
            s.spawn(move || {
                for i in 0..25 {
                    let body = format!("[\"t{t}-{i}\"]");
                    let (status, out) =
                        http_unix(socket, "POST", "/invoke", body.as_bytes()).unwrap();
                    assert_eq!(status, 200);
                    assert_eq!(String::from_utf8(out).unwrap(), body.to_uppercase());
                }
            });
        }
    });
    let (status, body) = http_unix(&socket, "POST", "/invoke", b"{not json").unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let err: wasmengine_api::invoke::InvokeError = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.code, wasmengine_api::invoke::ErrorCode::BadArgs);
}

/// Requests on streams of one connection: a slow call does not hold up the fast ones behind
/// it (their answers come first, tagged with their stream ids), a request without a stream id
/// is answered in order, and a stream request's answer never carries another's id.
#[test]
fn serve_mode_streams_answer_out_of_order_on_one_connection() {
    use std::io::Write;
    use wasmengine_api::http1::{self, Kind};
    let c = Containerd::start().unwrap();
    probe_image(&c, "localhost/probe:v1");
    let dir = tempfile::tempdir().unwrap();
    let socket = start_server(
        &c,
        "localhost/probe:v1",
        "streams-fn",
        dir.path(),
        &[
            "WASMENGINE_FUNCTION=probe",
            "WASMENGINE_TIMEOUT_MS=3000",
            "WASMENGINE_CONCURRENCY=4",
        ],
    );
    let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let stream = |id: u32, args: &str| {
        let head = format!("x-wasmengine-stream: {id}\r\n");
        http1::request("POST", "/invoke", &head, args.as_bytes(), false)
    };
    // One write: the spinner first, then three quick calls.
    let mut batch = stream(7, r#"["probe","spin"]"#);
    for id in [8, 9, 10] {
        batch.extend(stream(id, &format!(r#"["probe","exit","0","{id}"]"#)));
    }
    let start = std::time::Instant::now();
    conn.write_all(&batch).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let answer = |reader: &mut std::io::BufReader<std::os::unix::net::UnixStream>| {
        let head = http1::read_head(reader, Kind::Response).unwrap().unwrap();
        let body = http1::read_body(reader, head.content_length, 1 << 20).unwrap();
        let id: u32 = head.header("x-wasmengine-stream").unwrap().parse().unwrap();
        (id, head.status, String::from_utf8_lossy(&body).into_owned())
    };
    let mut quick: Vec<u32> = Vec::new();
    for _ in 0..3 {
        let (id, status, body) = answer(&mut reader);
        assert_eq!(status, 200, "stream {id}: {body}");
        assert!(body.contains("exiting 0"), "stream {id}: {body}");
        quick.push(id);
    }
    quick.sort();
    assert_eq!(quick, [8, 9, 10]);
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "the quick calls waited for the spinner: {:?}",
        start.elapsed()
    );
    // A plain request meanwhile is answered (in order, untagged) while the spinner runs.
    conn.write_all(&http1::request("GET", "/ready", "", b"", false))
        .unwrap();
    let head = http1::read_head(&mut reader, Kind::Response)
        .unwrap()
        .unwrap();
    http1::read_body(&mut reader, head.content_length, 64).unwrap();
    assert_eq!(
        (head.status, head.header("x-wasmengine-stream")),
        (200, None)
    );
    let (id, status, body) = answer(&mut reader);
    assert_eq!((id, status), (7, 504), "{body}");
    assert!(start.elapsed() >= Duration::from_millis(3000));
}

#[test]
fn serve_mode_applies_per_call_limits() {
    let c = Containerd::start().unwrap();
    c.import_wasm(
        &core_wat("numbers"),
        &ImageSpec::classic("numbers.wasm"),
        "localhost/numbers:v1",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = start_server(
        &c,
        "localhost/numbers:v1",
        "spin-fn",
        dir.path(),
        &["WASMENGINE_FUNCTION=spin", "WASMENGINE_TIMEOUT_MS=200"],
    );
    let (status, body) = http_unix(&socket, "POST", "/invoke", b"[]").unwrap();
    assert_eq!(status, 504);
    let err: wasmengine_api::invoke::InvokeError = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.message, "timeout: the call ran longer than 200ms");
    // The server lives on: a limit stops the call, not the function.
    let (status, _) = http_unix(&socket, "GET", "/ready", b"").unwrap();
    assert_eq!(status, 200);
    let dir2 = tempfile::tempdir().unwrap();
    let grow = start_server(
        &c,
        "localhost/numbers:v1",
        "grow-fn",
        dir2.path(),
        &["WASMENGINE_FUNCTION=grow", "WASMENGINE_MEMORY_LIMIT_MB=8"],
    );
    let (status, body) = http_unix(&grow, "POST", "/invoke", b"[]").unwrap();
    assert_eq!(status, 500);
    let err: wasmengine_api::invoke::InvokeError = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        err.code,
        wasmengine_api::invoke::ErrorCode::MemoryLimit,
        "{}",
        err.message
    );
    c.ctr_ok(&["task", "kill", "spin-fn"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        c.ctr_ok(&["task", "ls"])
            .unwrap()
            .lines()
            .any(|l| l.starts_with("spin-fn") && l.contains("STOPPED"))
    }));
}

#[test]
fn images_pulled_from_a_registry_with_ctr_run() {
    let c = Containerd::start().unwrap();
    let reg = Registry::start().unwrap();
    for (tag, v2s2) in [("oci", false), ("docker", true)] {
        let reference = reg
            .push_wasm(
                &fixture("probe"),
                &ImageSpec::classic("probe.wasm"),
                &format!("probe:{tag}"),
                v2s2,
            )
            .unwrap();
        c.ctr_ok(&["image", "pull", "--plain-http", &reference])
            .unwrap();
        let (code, out, err) = run(
            &c,
            &reference,
            &format!("pulled-{tag}"),
            &[],
            &["exit", "3"],
        );
        assert_eq!(code, 3, "{tag}: {out}{err}\n{}", c.log());
        assert!(out.contains("exiting 3"), "{out}");
    }
}
