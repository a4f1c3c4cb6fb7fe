//! Kubernetes through containerd's real CRI plugin: pods with the `wasmengine` runtime handler,
//! driven as kubelet drives them (a CRI v1 client on containerd's socket). The pod's sandbox
//! is a native busybox, run by our shim like runwasi runs `pause`.

use std::time::Duration;

use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::cri::{ContainerSpec, Cri, Pod, HANDLER};
use wasmengine_e2e::{core_wat, eventually, fixture, free_port, http_tcp};

const PROBE: &str = "localhost/probe:cri";

fn cri_with_probe() -> Cri {
    let cri = Cri::start().unwrap();
    cri.containerd
        .import_wasm(&fixture("probe"), &ImageSpec::classic("probe.wasm"), PROBE)
        .unwrap();
    cri
}

fn probe(name: &str, attempt: u32, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        attempt,
        image: PROBE.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..ContainerSpec::default()
    }
}

/// Creates, starts and waits for a container; gives its exit code and its CRI log lines.
fn run_to_exit(cri: &Cri, pod: &Pod, spec: ContainerSpec) -> (i32, Vec<String>) {
    let id = cri.create(pod, spec).unwrap();
    cri.start_container(&id).unwrap();
    let status = cri.wait_exited(&id, Duration::from_secs(20)).unwrap();
    let log = std::fs::read_to_string(&status.log_path).unwrap_or_default();
    (status.exit_code, log.lines().map(str::to_string).collect())
}

/// The text of a CRI log line (`<RFC 3339 time> <stream> <F|P> <text>`), checking its form.
fn log_text(line: &str) -> (&str, &str) {
    let mut parts = line.splitn(4, ' ');
    let (time, stream, tag) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T',
        "not a timestamp: {line}"
    );
    assert!(matches!(stream, "stdout" | "stderr"), "{line}");
    assert!(matches!(tag, "F" | "P"), "{line}");
    (stream, parts.next().unwrap_or(""))
}

/// The pod is gone with every trace of it: no shim, no mount, no runtime or sandbox state.
fn assert_pod_gone(cri: &Cri, pod: &Pod) {
    let c = &cri.containerd;
    assert!(
        eventually(Duration::from_secs(10), || c.shim_pids().is_empty()),
        "shim left behind: {:?}",
        c.shim_pids()
    );
    let mounts = c.mounts();
    assert!(mounts.is_empty(), "{mounts:#?}");
    for dir in c.runtime_state_dirs() {
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert!(
            left.is_empty(),
            "runtime state left in {}: {left:?}",
            dir.display()
        );
    }
    let sandbox_state = c
        .dir
        .path()
        .join("state/io.containerd.grpc.v1.cri/sandboxes")
        .join(&pod.id);
    assert!(!sandbox_state.exists(), "{}", sandbox_state.display());
}

#[test]
fn a_wasi_command_runs_in_a_pod_with_its_log_argv_env_and_exit_code() {
    let cri = cri_with_probe();
    let pod = cri.run_pod("hello", HANDLER).unwrap();
    // CRI's args follow the image's entrypoint (`/probe.wasm`).
    let mut spec = probe("hello", 0, &["one", "two words"]);
    spec.env = vec![("GREETING".into(), "hello there".into())];
    let (code, log) = run_to_exit(&cri, &pod, spec);
    assert_eq!(code, 0, "{log:#?}\n{}", cri.containerd.log());
    let texts: Vec<_> = log.iter().map(|l| log_text(l)).collect();
    for want in [
        "argc=3",
        "argv[0]=/probe.wasm",
        "argv[1]=one",
        "argv[2]=two words",
        "env:GREETING=hello there",
    ] {
        assert!(texts.contains(&("stdout", want)), "{want}: {log:#?}");
    }
    // The exit status is the module's own.
    let (code, log) = run_to_exit(&cri, &pod, probe("seven", 0, &["exit", "7"]));
    assert_eq!(code, 7, "{log:#?}");
    assert!(log.iter().any(|l| log_text(l) == ("stdout", "exiting 7")));
    cri.remove_pod(&pod).unwrap();
    assert_pod_gone(&cri, &pod);
}

#[test]
fn containers_of_a_pod_share_one_shim_one_after_another_and_at_once() {
    let cri = cri_with_probe();
    let pod = cri.run_pod("many", HANDLER).unwrap();
    // The sandbox alone: one shim.
    assert_eq!(cri.containerd.shim_servers().len(), 1);
    // One after another, in the same pod, in the same shim.
    for name in ["first", "second", "third"] {
        let (code, log) = run_to_exit(&cri, &pod, probe(name, 0, &[]));
        assert_eq!(code, 0, "{name}: {log:#?}\n{}", cri.containerd.log());
        assert_eq!(cri.containerd.shim_servers().len(), 1, "{name}");
    }
    // The module file was compiled once, by the shim, for all three.
    let log = cri.containerd.log();
    assert_eq!(log.matches("precompiled /probe.wasm").count(), 1, "{log}");
    assert_eq!(log.matches("function (precompiled)").count(), 3, "{log}");
    // A restart, as kubelet makes one: the same name, the next attempt.
    let (code, log) = run_to_exit(&cri, &pod, probe("first", 1, &["exit", "3"]));
    assert_eq!(code, 3, "{log:#?}\n{}", cri.containerd.log());
    // Two at once: both running in the one shim, both stopped by SIGTERM.
    let ids: Vec<String> = ["spin-a", "spin-b"]
        .iter()
        .map(|name| {
            let id = cri.create(&pod, probe(name, 0, &["spin"])).unwrap();
            cri.start_container(&id).unwrap();
            id
        })
        .collect();
    for id in &ids {
        let status = cri.container_status(id).unwrap();
        assert_eq!(status.state, 1, "{id} is not running: {status:?}");
    }
    assert_eq!(cri.containerd.shim_servers().len(), 1);
    for id in &ids {
        cri.stop_container(id, 5).unwrap();
        let status = cri.wait_exited(id, Duration::from_secs(10)).unwrap();
        assert_eq!(status.exit_code, 143, "{status:?}");
        cri.remove_container(id).unwrap();
    }
    cri.remove_pod(&pod).unwrap();
    assert_pod_gone(&cri, &pod);
}

#[test]
fn a_function_server_in_a_pod_answers_on_tcp() {
    let cri = Cri::start().unwrap();
    cri.containerd
        .import_wasm(
            &core_wat("strings"),
            &ImageSpec::classic("strings.wasm"),
            "localhost/strings:cri",
        )
        .unwrap();
    let pod = cri.run_pod("upper", HANDLER).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let env = [
        ("WASMENGINE_MODE", "serve"),
        ("WASMENGINE_FUNCTION", "upper"),
        ("WASMENGINE_LISTEN", &addr.to_string()),
        ("WASMENGINE_TIMEOUT_MS", "2000"),
    ];
    let id = cri
        .create(
            &pod,
            ContainerSpec {
                name: "upper".into(),
                image: "localhost/strings:cri".into(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..ContainerSpec::default()
            },
        )
        .unwrap();
    cri.start_container(&id).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            http_tcp(addr, "GET", "/ready", &[], b"")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        }),
        "the function did not listen on {addr}\n{}",
        cri.containerd.log()
    );
    let (status, out) = http_tcp(addr, "POST", "/invoke", &[], br#"["hello pod"]"#).unwrap();
    assert_eq!((status, out.as_str()), (200, r#"["HELLO POD"]"#));
    let (status, out) = http_tcp(addr, "POST", "/invoke", &[], b"{not json").unwrap();
    assert_eq!(status, 400, "{out}");
    // Deleting the pod stops the server.
    cri.remove_pod(&pod).unwrap();
    assert!(http_tcp(addr, "GET", "/ready", &[], b"").is_err());
    assert_pod_gone(&cri, &pod);
}

#[test]
fn containers_sharing_the_pod_s_pid_namespace_run_one_after_another() {
    let cri = cri_with_probe();
    let pod = cri.run_pod("shared", HANDLER).unwrap();
    for name in ["first", "second", "third"] {
        let spec = ContainerSpec {
            share_pid: true,
            ..probe(name, 0, &[])
        };
        let (code, log) = run_to_exit(&cri, &pod, spec);
        assert_eq!(code, 0, "{name}: {log:#?}\n{}", cri.containerd.log());
    }
    cri.remove_pod(&pod).unwrap();
    assert_pod_gone(&cri, &pod);
}
