//! `make bench-cri`: Kubernetes-style pods through containerd's CRI plugin, side by side in one
//! run. Prints, with N (default 10) samples each:
//! - a pod with the `wasmengine` handler plus one WASI container, run pod → container exited;
//! - in a running pod, a Wasm container's create → exit (the module as a Wasm OCI artifact,
//!   and as a classic image's file) beside a runc busybox container's in a runc pod (medians,
//!   their ratios, and where the time goes);
//! - memory (PSS of the pod's shim processes) per extra running Wasm container;
//! - invocations per second at 64 connections (wrk) through the shim's TCP function server in
//!   a pod, beside the same function through the engine's REST API.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::cri::{ContainerSpec, Cri, Pod, HANDLER, SANDBOX_IMAGE};
use wasmengine_e2e::{app, eventually, fixture, free_port, http_tcp, Containerd, Engine};

const PROBE: &str = "localhost/probe:bench";
/// The same module as a Wasm OCI artifact (a Wasm layer, precompiled by the shim's compiler
/// when the first container of the image is created).
const PROBE_ARTIFACT: &str = "localhost/probe:artifact";
const AUTH: &str = "localhost/authentication:bench";
const AUTH_ARGS: &str = r#"{"arg_uri":"yes","arg_body":"yes","arg_secret":"12345"}"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Create → start → exited, for one container in `pod`.
fn create_to_exit(cri: &Cri, pod: &Pod, spec: ContainerSpec) -> Result<Duration> {
    Ok(create_to_exit_stages(cri, pod, spec)?[3])
}

/// Create → start → exited: the CreateContainer call, the StartContainer call, start →
/// finished as the runtime reports it, and the whole.
fn create_to_exit_stages(cri: &Cri, pod: &Pod, spec: ContainerSpec) -> Result<[Duration; 4]> {
    let start = Instant::now();
    let id = cri.create(pod, spec)?;
    let created = start.elapsed();
    cri.start_container(&id)?;
    let started = start.elapsed();
    let status = cri.wait_exited(&id, Duration::from_secs(30))?;
    let took = start.elapsed();
    anyhow::ensure!(status.exit_code == 0, "{id} exited {}", status.exit_code);
    let ran = Duration::from_nanos((status.finished_at - status.started_at).max(0) as u64);
    cri.remove_container(&id)?;
    Ok([created, started - created, ran, took])
}

fn stages(v: &[[Duration; 4]]) -> String {
    let m = |i: usize| ms(median(v.iter().map(|s| s[i]).collect()));
    format!(
        "create {}, start {}, started → finished {}",
        m(0),
        m(1),
        m(2)
    )
}

fn probe(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: PROBE.into(),
        ..ContainerSpec::default()
    }
}

/// PSS (KiB) of every process of this containerd's shims (servers, zygotes, containers).
fn shim_pss_kib(c: &Containerd) -> u64 {
    c.shim_pids()
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// wrk at 64 connections posting `body` to `url`; requests per second.
fn wrk(url: &str, body: &str, duration: &str) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d", duration, "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .context("wrk (scripts/install-deps.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let non2xx = text.contains("Non-2xx");
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .with_context(|| format!("wrk said: {text}"))?;
    anyhow::ensure!(!non2xx, "wrk saw errors: {text}");
    Ok(rps)
}

fn main() -> Result<()> {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let duration = std::env::var("DURATION").unwrap_or_else(|_| "5s".into());
    let cri = Cri::start()?;
    let c = &cri.containerd;
    c.import_wasm(&fixture("probe"), &ImageSpec::classic("probe.wasm"), PROBE)?;
    c.import_wasm(
        &fixture("probe"),
        &ImageSpec::artifact("probe.wasm"),
        PROBE_ARTIFACT,
    )?;
    c.import_wasm(
        &app("authentication"),
        &ImageSpec::classic("authentication.wasm"),
        AUTH,
    )?;

    // A pod and its one Wasm container, from nothing to exited (and the pod removed after).
    let mut whole = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        let pod = cri.run_pod(&format!("whole-{i}"), HANDLER)?;
        create_to_exit(&cri, &pod, probe("hello"))?;
        whole.push(start.elapsed());
        cri.remove_pod(&pod)?;
    }
    println!(
        "pod + Wasm container, run pod → exited: median {} of {n}",
        ms(median(whole))
    );

    // In running pods: a Wasm container vs a runc busybox container, interleaved.
    let wasm_pod = cri.run_pod("wasm", HANDLER)?;
    let runc_pod = cri.run_pod("runc", "runc")?;
    let (mut art, mut wasm, mut runc) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        art.push(create_to_exit_stages(
            &cri,
            &wasm_pod,
            ContainerSpec {
                image: PROBE_ARTIFACT.into(),
                command: vec!["/probe.wasm".into()],
                ..probe(&format!("a{i}"))
            },
        )?);
        wasm.push(create_to_exit_stages(
            &cri,
            &wasm_pod,
            probe(&format!("w{i}")),
        )?);
        runc.push(create_to_exit_stages(
            &cri,
            &runc_pod,
            ContainerSpec {
                name: format!("r{i}"),
                image: SANDBOX_IMAGE.into(),
                command: vec!["/bin/busybox".into(), "true".into()],
                ..ContainerSpec::default()
            },
        )?);
    }
    let total = |v: &[[Duration; 4]]| median(v.iter().map(|s| s[3]).collect());
    let (a, w, r) = (total(&art), total(&wasm), total(&runc));
    println!(
        "container create → exited in a running pod, medians of {n}: Wasm artifact {} (/runc {:.2}), classic Wasm image {} (/runc {:.2}), runc busybox {}",
        ms(a),
        a.as_secs_f64() / r.as_secs_f64(),
        ms(w),
        w.as_secs_f64() / r.as_secs_f64(),
        ms(r)
    );
    println!("  artifact: {}", stages(&art));
    println!("  classic:  {}", stages(&wasm));
    println!("  runc:     {}", stages(&runc));
    cri.remove_pod(&runc_pod)?;
    // Memory per extra running Wasm container in one pod (one shim).
    let spin = |name: String| -> Result<String> {
        let id = cri.create(
            &wasm_pod,
            ContainerSpec {
                args: vec!["spin".into()],
                ..probe(&name)
            },
        )?;
        cri.start_container(&id)?;
        Ok(id)
    };
    let mut ids = vec![spin("spin-0".into())?];
    std::thread::sleep(Duration::from_millis(500));
    let one = shim_pss_kib(c);
    let extra = 5;
    for i in 1..=extra {
        ids.push(spin(format!("spin-{i}"))?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let more = shim_pss_kib(c);
    println!(
        "memory: shim PSS {:.1} MiB with 1 running Wasm container, {:.1} MiB with {}: {:.2} MiB per extra container ({} shim server(s))",
        one as f64 / 1024.0,
        more as f64 / 1024.0,
        extra + 1,
        (more.saturating_sub(one)) as f64 / 1024.0 / extra as f64,
        c.shim_servers().len()
    );
    for id in &ids {
        cri.stop_container(id, 2)?;
    }
    cri.remove_pod(&wasm_pod)?;

    // The same function: shim TCP server in a pod vs the engine's REST API.
    let pod = cri.run_pod("auth", HANDLER)?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let id = cri.create(
        &pod,
        ContainerSpec {
            name: "auth".into(),
            image: AUTH.into(),
            env: [
                ("WASMENGINE_MODE", "serve"),
                ("WASMENGINE_FUNCTION", "authentication"),
                ("WASMENGINE_WASI", "false"),
                ("WASMENGINE_LISTEN", &addr.to_string()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..ContainerSpec::default()
        },
    )?;
    cri.start_container(&id)?;
    anyhow::ensure!(
        eventually(Duration::from_secs(20), || {
            http_tcp(addr, "GET", "/ready", &[], b"").is_ok_and(|(s, _)| s == 200)
        }),
        "the TCP function server did not come up"
    );
    let tcp = wrk(&format!("http://{addr}/invoke"), AUTH_ARGS, &duration)?;
    cri.remove_pod(&pod)?;

    let plain = Containerd::start()?;
    plain.import_wasm(
        &app("authentication"),
        &ImageSpec::classic("authentication.wasm"),
        AUTH,
    )?;
    let engine = Engine::start(&plain, &[])?;
    engine.deploy(
        json!({"function_name": "authentication", "function_image": AUTH, "wasi_cap": false}),
    );
    let body = json!({"function_name": "authentication", "args": serde_json::from_str::<serde_json::Value>(AUTH_ARGS)?});
    let rest = wrk(
        &format!("http://{}/function/invoke", engine.addr),
        &body.to_string(),
        &duration,
    )?;
    println!(
        "authentication at 64 connections (wrk {duration}): shim TCP server in a pod {tcp:.0} req/s, engine REST {rest:.0} req/s (TCP/REST {:.2})",
        tcp / rest
    );
    Ok(())
}
