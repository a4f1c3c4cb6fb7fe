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

/// Context switches of every thread of `pids`, summed.
fn switches(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

/// A running function nobody calls costs no wake-ups: its process's epoch ticker sleeps once
/// calls stop, and its shim keeps no connection to containerd that polls. (Before, each
/// function's processes woke about 1,400 times a second.)
#[test]
fn a_running_function_nobody_calls_does_not_wake() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &[]).expect("engine");
    let gcd = "localhost/gcd:quiet";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd)
        .unwrap();
    let auth = "localhost/auth:quiet";
    c.import_wasm(
        &app("authentication-wasi"),
        &ImageSpec::classic("authentication-wasi.wasm"),
        auth,
    )
    .unwrap();
    e.deploy(
        json!({"function_name": "gcd", "function_image": gcd, "wasi_cap": false,
                    "export": "gcd"}),
    );
    e.deploy(json!({"function_name": "auth", "function_image": auth, "wasi_cap": true}));
    for _ in 0..20 {
        assert_eq!(e.invoke("gcd", json!([12, 18])).0, 200);
        let args = json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "12345"});
        assert_eq!(e.invoke("auth", args).0, 200);
    }
    let pids = c.shim_pids();
    // The container processes (where a call's ticker runs) among them.
    let tasks = c.task_processes();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.iter().all(|t| pids.contains(t)), "{tasks:?} {pids:?}");
    // What settles after the calls: the ticker's linger and the event connection's.
    std::thread::sleep(Duration::from_secs(2));
    let before = switches(&pids);
    std::thread::sleep(Duration::from_secs(2));
    let woke = switches(&pids) - before;
    // A few stray wake-ups are allowed (a sleeping ticker checks its engine every 5 s).
    assert!(
        woke <= 40,
        "{} processes of 2 idle functions switched {woke} times in 2 s",
        pids.len()
    );
    // And they still answer.
    assert_eq!(e.invoke("gcd", json!([12, 18])).0, 200);
}

/// `ctr events` of `c`, line by line, on a channel (the process dies with the guard).
struct Events {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Events {
    fn watch(c: &Containerd) -> Events {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&c.address)
            .arg("events")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ctr events");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // `ctr events` subscribes once it runs; give it that moment.
        std::thread::sleep(Duration::from_millis(500));
        Events { child, lines }
    }

    /// The first line with all of `needles` that comes within `within`.
    fn expect(&self, needles: &[&str], within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of a function's task (its container's process), from `ctr task ls`.
fn task_pid(c: &Containerd, id: &str) -> i32 {
    let out = c.ctr_ok(&["task", "ls"]).unwrap();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no task {id}: {out}"))
}

/// A shim publishes its events on a connection it closes when idle and opens again for the
/// next event, also after containerd restarted: a task's exit still reaches containerd after
/// a quiet spell and after a containerd restart (the single connection of before was dead
/// then, and its events were lost).
#[test]
fn a_shims_events_reach_containerd_after_a_quiet_spell_and_a_containerd_restart() {
    let mut c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &[]).expect("engine");
    let gcd = "localhost/gcd:events";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd)
        .unwrap();
    for name in ["first", "second"] {
        e.deploy(
            json!({"function_name": name, "function_image": gcd, "wasi_cap": false,
                        "export": "gcd"}),
        );
        assert_eq!(e.invoke(name, json!([12, 18])).0, 200);
    }
    // Past the event connection's idle close (1 s).
    std::thread::sleep(Duration::from_secs(2));
    kill_and_expect_its_exit_event(&c, "first", "after a quiet spell");

    c.stop();
    c.resume().expect("containerd again");
    kill_and_expect_its_exit_event(&c, "second", "after containerd restarted");
}

/// SIGKILLs the task of `name` and expects the shim's own exit event for it (137), not one
/// containerd makes up for a dead shim.
fn kill_and_expect_its_exit_event(c: &Containerd, name: &str, when: &str) {
    let events = Events::watch(c);
    unsafe { libc::kill(task_pid(c, name), libc::SIGKILL) };
    let quoted = format!("\"{name}\"");
    let line = events.expect(&["/tasks/exit", &quoted], Duration::from_secs(10));
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains(r#""exit_status":137"#)),
        "no exit event for `{name}` {when}: {line:?}\n{}",
        c.log()
    );
}
