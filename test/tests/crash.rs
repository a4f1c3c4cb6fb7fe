//! A node crash: the engine, containerd and every shim killed with SIGKILL at once (a power
//! cut, an OOM kill), optionally with the runtime state under `/run` gone and the tasks'
//! processes and mounts with it (a reboot). containerd must start again at once (it runs our
//! shim's `delete` for every dead shim), and every function must answer again through a new
//! engine, with nothing of the dead generation left behind.
//!
//! Each crash is tried with a container per function and with functions in groups of two
//! (`--group-size 2`). `WASMENGINE_CRASH_FUNCTIONS=N` deploys N functions instead of 3 (for
//! the figures in the README).

use std::time::{Duration, Instant};

use serde_json::json;
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, Containerd, Engine};

/// What a crash takes with it.
#[derive(Clone, Copy, PartialEq)]
enum Crash {
    /// Every engine, containerd and shim process; the tasks' own processes live on.
    Processes,
    /// As after a reboot: every process, the rootfs mounts and the runtime state under /run.
    Reboot,
}

fn functions() -> usize {
    std::env::var("WASMENGINE_CRASH_FUNCTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

fn kill9(pids: &[u32]) {
    for pid in pids {
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
}

fn alive(pid: u32) -> bool {
    // A zombie counts as dead: it runs nothing, and init reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next());
            state != Some(Some('Z'))
        })
        .unwrap_or(false)
}

/// With `group_size` > 0, the functions share group containers that many at a time.
fn crash_and_recover(crash: Crash, group_size: usize) {
    let mut c = Containerd::start().expect("containerd");
    let size = group_size.to_string();
    let mut e = Engine::start(&c, &["--group-size", &size]).expect("engine");
    let gcd = "localhost/gcd:crash";
    let fib = "localhost/fibonacci:crash";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd)
        .unwrap();
    c.import_wasm(&app("fibonacci"), &ImageSpec::artifact("fib.wasm"), fib)
        .unwrap();
    let n = functions();
    let names: Vec<String> = (0..n).map(|i| format!("fn{i}")).collect();
    let call = |e: &Engine, i: usize| -> (u16, serde_json::Value) {
        if i.is_multiple_of(2) {
            e.invoke(&names[i], json!([12 * (i + 1), 18 * (i + 1)]))
        } else {
            e.invoke(&names[i], json!(["10"]))
        }
    };
    let expected = |i: usize| -> String {
        if i.is_multiple_of(2) {
            (6 * (i + 1)).to_string()
        } else {
            "55".to_string()
        }
    };
    for (i, name) in names.iter().enumerate() {
        let (image, wasi) = if i.is_multiple_of(2) {
            (gcd, false)
        } else {
            (fib, true)
        };
        let export = (!wasi).then_some("gcd");
        e.deploy(
            json!({"function_name": name, "function_image": image, "wasi_cap": wasi,
                        "export": export}),
        );
        let (status, v) = call(&e, i);
        assert_eq!(status, 200, "{v}");
    }

    // One shim (and task) per function, or per group.
    let containers = if group_size == 0 {
        n
    } else {
        n.div_ceil(group_size)
    };

    // The crash: everything at once.
    let shims = c.shim_pids();
    let tasks = c.task_processes();
    assert!(
        !shims.is_empty() && tasks.len() >= containers,
        "{shims:?} {tasks:?}"
    );
    // The tasks' processes are forked from the shim and share its command line.
    let mut doomed: Vec<u32> = shims
        .iter()
        .copied()
        .filter(|p| !tasks.contains(p))
        .collect();
    let sockets = c.shim_sockets();
    assert_eq!(sockets.len(), containers, "{sockets:?}");
    doomed.extend(e.pid());
    if crash == Crash::Reboot {
        doomed.extend(&tasks);
    }
    kill9(&doomed);
    c.kill9();
    e.kill9();
    if crash == Crash::Reboot {
        // What a reboot also clears: the mounts and the runtime state under /run.
        assert!(wasmengine_e2e::eventually(Duration::from_secs(10), || {
            tasks.iter().all(|p| !alive(*p))
        }));
        for m in c.mounts().iter().rev() {
            if let Some(point) = m.split(' ').nth(4) {
                let p = std::ffi::CString::new(point).unwrap();
                unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
            }
        }
        for dir in c.runtime_state_dirs() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    // containerd cleans up after every dead shim at start, and must not wait on any.
    let start = Instant::now();
    c.resume().expect("containerd starts again");
    let first_answer = start.elapsed();
    assert!(
        first_answer < Duration::from_secs(2),
        "containerd answered after {first_answer:?}\n{}",
        c.log()
    );
    // Nothing of the dead generation is left: no shim, no task process.
    let survivors: Vec<u32> = shims
        .iter()
        .chain(&tasks)
        .copied()
        .filter(|p| alive(*p))
        .collect();
    assert!(
        wasmengine_e2e::eventually(Duration::from_secs(10), || {
            survivors.iter().all(|p| !alive(*p))
        }),
        "still alive: {survivors:?}"
    );
    assert!(c.mounts().is_empty(), "{:?}", c.mounts());
    // Nor the dead shims' sockets, which would make each function's next shim wait for them.
    let left: Vec<_> = sockets.iter().filter(|s| s.exists()).collect();
    assert!(left.is_empty(), "dead shim sockets left: {left:?}");

    // A new engine finds every function and each answers (its task started again).
    e.restart().expect("engine starts again");
    for (i, name) in names.iter().enumerate() {
        let (status, v) = call(&e, i);
        assert_eq!(status, 200, "{name}: {v}\n{}", e.log());
        assert_eq!(v["result"], expected(i));
    }
    let all_answering = start.elapsed();
    if std::env::var_os("WASMENGINE_CRASH_LOG").is_some() {
        eprintln!("{}", e.log());
    }
    eprintln!(
        "{n} functions: containerd answered {first_answer:?} after its restart, every \
         function {all_answering:?}"
    );
    // One generation of tasks: one process tree per function, nothing stacked.
    let (status, list) = e.get("/function/list");
    assert_eq!(status, 200);
    for name in &names {
        assert!(list.contains(&format!(r#""func_name":"{name}""#)), "{list}");
    }
    let mounts = c.mounts();
    let mut points: Vec<&str> = mounts.iter().filter_map(|m| m.split(' ').nth(4)).collect();
    let before = points.len();
    points.sort_unstable();
    points.dedup();
    assert_eq!(before, points.len(), "stacked mounts: {mounts:?}");
}

#[test]
fn sigkill_of_engine_containerd_and_every_shim() {
    crash_and_recover(Crash::Processes, 0);
}

#[test]
fn reboot_with_runtime_state_gone() {
    crash_and_recover(Crash::Reboot, 0);
}

#[test]
fn sigkill_of_everything_with_functions_in_groups() {
    crash_and_recover(Crash::Processes, 2);
}

#[test]
fn reboot_with_functions_in_groups() {
    crash_and_recover(Crash::Reboot, 2);
}
