//! Function groups (`--group-size`): functions share group containers, one shim server per
//! group; a group whose shim is killed takes only its own functions down, and they answer
//! again on their next call; an engine restart loses nothing; idle functions are unloaded
//! from their group and come back on their next call; deleting every function leaves no
//! group, shim or process behind.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, eventually, Containerd, Engine};

fn gcd(e: &Engine, name: &str) -> (u16, String) {
    let (code, v) = e.invoke(name, json!([12, 18]));
    (
        code,
        v["result"].as_str().unwrap_or(&v.to_string()).to_string(),
    )
}

fn fib(e: &Engine, name: &str) -> (u16, String) {
    let (code, v) = e.invoke(name, json!(["10"]));
    (
        code,
        v["result"].as_str().unwrap_or(&v.to_string()).to_string(),
    )
}

fn status(e: &Engine, name: &str) -> String {
    let (code, v) = e.post_json("/function/query", &json!({"function_name": name}));
    assert_eq!(code, 200, "{v}");
    v["function"]["status"].as_str().unwrap_or_default().into()
}

fn listed(e: &Engine) -> usize {
    let (_, text) = e
        .request(
            "GET",
            "/function/list",
            &[("accept", "application/json")],
            b"",
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["functions"].as_array().map_or(0, Vec::len)
}

fn metric(e: &Engine, series: &str) -> u64 {
    let (_, text) = e.get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The shim servers whose command line serves container `id`.
fn shims_of(c: &Containerd, id: &str) -> Vec<u32> {
    let needle = format!(" -id {id} ");
    c.shim_servers()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Processes in container `id`'s cgroup.
fn task_of(c: &Containerd, id: &str) -> Vec<u32> {
    let needle = format!(":/{}/{id}\n", c.namespace);
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
            cgroup.contains(&needle).then_some(pid)
        })
        .collect()
}

#[test]
fn functions_share_groups_and_survive_their_faults() {
    let c = Containerd::start().expect("containerd");
    let mut e = Engine::start(&c, &["--group-size", "3"]).expect("engine");
    let gcd_img = "localhost/gcd:groups";
    let fib_img = "localhost/fibonacci:groups";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd_img)
        .unwrap();
    c.import_wasm(&app("fibonacci"), &ImageSpec::artifact("fib.wasm"), fib_img)
        .unwrap();

    // Five functions (string-ABI exports and WASI commands, classic and artifact images):
    // groups of three, so two group containers.
    for i in 0..3 {
        e.deploy(
            json!({"function_name": format!("g{i}"), "function_image": gcd_img,
                        "wasi_cap": false, "export": "gcd"}),
        );
    }
    for i in 3..5 {
        e.deploy(
            json!({"function_name": format!("f{i}"), "function_image": fib_img,
                        "wasi_cap": true}),
        );
    }
    let all = |e: &Engine| {
        for i in 0..3 {
            assert_eq!(gcd(e, &format!("g{i}")), (200, "6".into()), "{}", e.log());
        }
        for i in 3..5 {
            assert_eq!(fib(e, &format!("f{i}")), (200, "55".into()), "{}", e.log());
        }
    };
    all(&e);
    assert_eq!(c.shim_servers().len(), 2, "five functions, two group shims");
    assert_eq!(status(&e, "f4"), "running");
    assert_eq!(listed(&e), 5);

    // A fuel-limited function needs fuel metering, which a group's engine lacks: it gets a
    // container of its own, and its limit holds.
    e.deploy(
        json!({"function_name": "fueled", "function_image": gcd_img, "wasi_cap": false,
                    "export": "gcd", "fuel": 1_000_000}),
    );
    assert_eq!(gcd(&e, "fueled"), (200, "6".into()));
    assert_eq!(c.shim_servers().len(), 3);

    // A name that is not deployed is still 404, not a load attempt.
    assert_eq!(e.invoke("nope", json!([1, 2])).0, 404);

    // SIGKILL of group.1's shim: group.0's functions never notice. The killed shim's
    // container process lives on (still serving) until containerd's cleanup of the dead shim
    // kills it; then the next call of a group.1 function starts the group again (a new shim)
    // and loads the function into it.
    let victim = shims_of(&c, "group.1");
    assert_eq!(victim.len(), 1);
    unsafe { libc::kill(victim[0] as i32, libc::SIGKILL) };
    assert_eq!(gcd(&e, "g0"), (200, "6".into()));
    assert!(
        eventually(Duration::from_secs(30), || task_of(&c, "group.1")
            .is_empty()),
        "the dead shim's task was not cleaned up"
    );
    // A call may still find a kept-alive connection to the dying process: it gets 503 (it
    // may have reached the function, so it is not sent again) and the group is restarted;
    // the next call is served by the new task.
    let mut answers = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            answers.push(fib(&e, "f3"));
            answers.last() == Some(&(200, "55".into()))
        }),
        "{answers:?}\n{}",
        e.log()
    );
    assert!(answers.len() <= 2, "{answers:?}");
    let restarts = |f: &str| {
        metric(
            &e,
            &format!("wasmengine_task_restarts_total{{function=\"{f}\"}}"),
        )
    };
    assert_eq!(restarts("f3"), 1);
    let again = shims_of(&c, "group.1");
    assert!(again.len() == 1 && again != victim, "{again:?}");
    all(&e);
    assert_eq!(c.shim_servers().len(), 3, "group.1 has one shim again");

    // An engine killed and started again: every function is listed and answers.
    e.restart().expect("engine restarts");
    assert_eq!(listed(&e), 6);
    all(&e);
    assert_eq!(c.shim_servers().len(), 3, "the restart started no shim");

    // Delete of a grouped function: the others of its group keep answering; the last one
    // out removes the group.
    for name in ["f3", "f4"] {
        let (code, body) = e.post("/function/delete", &json!({"function_name": name}));
        assert_eq!(code, 200, "{body}");
    }
    assert!(eventually(Duration::from_secs(10), || c
        .shim_servers()
        .len()
        == 2));
    let (code, _) = e.post("/function/delete", &json!({"function_name": "g1"}));
    assert_eq!(code, 200);
    assert_eq!(gcd(&e, "g0"), (200, "6".into()));
    assert_eq!(gcd(&e, "g2"), (200, "6".into()));

    for name in ["g0", "g2", "fueled"] {
        let (code, body) = e.post("/function/delete", &json!({"function_name": name}));
        assert_eq!(code, 200, "{body}");
    }
    assert!(
        eventually(Duration::from_secs(10), || c.shim_servers().is_empty()),
        "shims left: {:?}",
        c.shim_servers()
    );
    assert!(c.task_processes().is_empty());
    let containers = c.ctr_ok(&["containers", "list", "-q"]).unwrap();
    assert!(containers.trim().is_empty(), "left: {containers}");
}

#[test]
fn idle_grouped_functions_are_unloaded_and_wake_on_their_next_call() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &["--group-size", "8"]).expect("engine");
    let gcd_img = "localhost/gcd:groups-idle";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd_img)
        .unwrap();
    e.deploy(
        json!({"function_name": "sleepy", "function_image": gcd_img, "wasi_cap": false,
                    "export": "gcd", "idle_timeout_secs": 1}),
    );
    e.deploy(
        json!({"function_name": "awake", "function_image": gcd_img, "wasi_cap": false,
                    "export": "gcd"}),
    );
    assert_eq!(gcd(&e, "sleepy"), (200, "6".into()));
    assert!(
        eventually(Duration::from_secs(5), || status(&e, "sleepy") == "idle"),
        "{}",
        e.log()
    );
    // Counted when it shows as idle (another of the engine's threads may count it a moment
    // later than the status request reads the marker).
    assert!(eventually(Duration::from_secs(2), || metric(
        &e,
        r#"wasmengine_idle_stops_total{function="sleepy"}"#
    ) == 1));
    // The group keeps serving its other function.
    assert_eq!(status(&e, "awake"), "running");
    assert_eq!(gcd(&e, "awake"), (200, "6".into()));
    assert_eq!(c.shim_servers().len(), 1);

    let cold = metric(&e, r#"wasmengine_cold_starts_total{function="sleepy"}"#);
    let start = Instant::now();
    assert_eq!(gcd(&e, "sleepy"), (200, "6".into()), "{}", e.log());
    eprintln!(
        "call of an idle grouped function answered in {:?}",
        start.elapsed()
    );
    assert_eq!(status(&e, "sleepy"), "running");
    assert_eq!(
        metric(&e, r#"wasmengine_cold_starts_total{function="sleepy"}"#),
        cold + 1
    );
    for name in ["sleepy", "awake"] {
        let (code, body) = e.post("/function/delete", &json!({"function_name": name}));
        assert_eq!(code, 200, "{body}");
    }
    assert!(eventually(Duration::from_secs(10), || c
        .shim_servers()
        .is_empty()));
}

#[test]
fn a_group_whose_functions_are_all_idle_stops_and_starts_on_the_next_call() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &["--group-size", "8", "--idle-timeout-secs", "1"]).expect("engine");
    let gcd_img = "localhost/gcd:groups-all-idle";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd_img)
        .unwrap();
    for name in ["a", "b"] {
        e.deploy(
            json!({"function_name": name, "function_image": gcd_img, "wasi_cap": false,
                        "export": "gcd"}),
        );
        assert_eq!(gcd(&e, name), (200, "6".into()));
    }
    assert!(
        eventually(Duration::from_secs(10), || c.shim_servers().is_empty()
            && c.task_processes().is_empty()),
        "{}",
        e.log()
    );
    assert_eq!(status(&e, "a"), "idle");
    assert_eq!(gcd(&e, "b"), (200, "6".into()), "{}", e.log());
    assert_eq!(status(&e, "b"), "running");
    assert_eq!(status(&e, "a"), "idle");
    assert_eq!(gcd(&e, "a"), (200, "6".into()));
    assert_eq!(c.shim_servers().len(), 1);
    for name in ["a", "b"] {
        let (code, body) = e.post("/function/delete", &json!({"function_name": name}));
        assert_eq!(code, 200, "{body}");
    }
    assert!(eventually(Duration::from_secs(10), || c
        .shim_servers()
        .is_empty()));
}

/// `--spare-group`: a group is started before any deploy and a new one after each deploy
/// fills its group, so each deploy lands in a group whose task was already running (with
/// `--group-size 1`: a process per function, and no deploy waits for a task to be created).
#[test]
fn a_spare_group_is_started_ahead_of_each_deploy() {
    let c = Containerd::start().expect("containerd");
    let mut e = Engine::start(&c, &["--group-size", "1", "--spare-group"]).expect("engine");
    let img = "localhost/gcd:spare";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), img)
        .unwrap();
    let running = |c: &Containerd| -> Vec<String> {
        let mut groups: Vec<String> = c
            .ctr_ok(&["task", "ls"])
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("group.") && l.contains("RUNNING"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        groups.sort();
        groups
    };
    let groups = |n: usize| (0..n).map(|i| format!("group.{i}")).collect::<Vec<_>>();
    assert!(
        eventually(Duration::from_secs(20), || running(&c) == groups(1)),
        "no spare group before the first deploy: {:?}\n{}",
        running(&c),
        e.log()
    );
    for i in 0..3 {
        let name = format!("s{i}");
        assert_eq!(running(&c), groups(i + 1), "{}", e.log());
        e.deploy(json!({"function_name": name, "function_image": img,
                        "wasi_cap": false, "export": "gcd"}));
        let info = c.ctr_ok(&["containers", "info", &name]).unwrap();
        assert!(
            info.contains(&format!("\"io.wasmengine.group\": \"group.{i}\"")),
            "{name} did not land in the spare group.{i}: {info}"
        );
        assert_eq!(gcd(&e, &name), (200, "6".into()), "{}", e.log());
        assert!(
            eventually(Duration::from_secs(20), || running(&c) == groups(i + 2)),
            "no new spare after deploy {i}: {:?}\n{}",
            running(&c),
            e.log()
        );
    }
    // A process per group: three functions and the spare.
    assert_eq!(c.shim_servers().len(), 4);
    // An engine started without the flag removes the spare it left; the functions stay.
    e.restart_without("--spare-group").expect("engine restarts");
    assert!(
        eventually(Duration::from_secs(20), || running(&c) == groups(3)),
        "the spare was not removed: {:?}\n{}",
        running(&c),
        e.log()
    );
    for i in 0..3 {
        assert_eq!(gcd(&e, &format!("s{i}")), (200, "6".into()), "{}", e.log());
    }
}

/// A module with `n` small functions besides a numeric `gcd` export (it answers its first
/// argument): slow to compile, quick to call.
fn big_module(n: usize) -> Vec<u8> {
    let mut text = String::from("(module\n");
    for i in 0..n {
        text.push_str(&format!(
            "(func $f{i} (param i32) (result i32) local.get 0 i32.const {i} i32.add)\n"
        ));
    }
    text.push_str("(func (export \"gcd\") (param i32 i32) (result i32) local.get 0))\n");
    wat::parse_str(&text).unwrap()
}

/// A long compile in a group (a deploy's load, on the group's one connection) does not hold
/// up the calls of the group's other functions, even when the group was idle and its epoch
/// ticker asleep: the load counts as work for the watchdog, which brings in another thread.
#[test]
fn a_long_compile_in_an_idle_group_does_not_hold_up_its_other_functions() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &["--group-size", "4"]).expect("engine");
    let gcd_img = "localhost/gcd:compile";
    let big_img = "localhost/big:compile";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd_img)
        .unwrap();
    c.import_wasm(
        &big_module(40_000),
        &ImageSpec::classic("big.wasm"),
        big_img,
    )
    .unwrap();
    e.deploy(
        json!({"function_name": "quick", "function_image": gcd_img, "wasi_cap": false,
                    "export": "gcd"}),
    );
    assert_eq!(gcd(&e, "quick"), (200, "6".into()));
    // Idle long enough for the group's ticker to sleep.
    std::thread::sleep(Duration::from_millis(500));

    let (worst, took) = std::thread::scope(|s| {
        let deploy = s.spawn(|| {
            let start = Instant::now();
            e.deploy(json!({"function_name": "big", "function_image": big_img,
                            "wasi_cap": false, "export": "gcd"}));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        let mut worst = Duration::ZERO;
        while !deploy.is_finished() {
            let start = Instant::now();
            assert_eq!(gcd(&e, "quick"), (200, "6".into()));
            worst = worst.max(start.elapsed());
        }
        (worst, deploy.join().unwrap())
    });
    let (code, v) = e.invoke("big", json!([7, 1]));
    assert_eq!((code, v["result"].as_str()), (200, Some("7")), "{v}");
    eprintln!("deploy with the compile took {took:?}; the slowest call meanwhile {worst:?}");
    // Not a speed test: only that the calls did not wait for the compile.
    assert!(
        took > Duration::from_millis(400),
        "the compile was too quick to tell ({took:?})"
    );
    assert!(
        worst < took / 2,
        "a call waited {worst:?} for a {took:?} compile"
    );
}
