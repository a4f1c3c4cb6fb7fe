//! The engine (`wasm_engine`) end to end: a real containerd, a real registry, our shim, and
//! the sample functions, through the REST API.

use std::time::Duration;

use serde_json::{json, Value};
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, component, core_wat, eventually, Containerd, Engine, Registry};

fn setup() -> (Containerd, Engine) {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &[]).expect("engine");
    (c, e)
}

fn import(c: &Containerd, name: &str, spec: &ImageSpec) -> String {
    let reference = format!("localhost/{name}:test");
    c.import_wasm(&app(name), spec, &reference).expect("import");
    reference
}

/// Imports the core's WAT test module `name` as `localhost/{name}:{tag}`.
fn import_wat(c: &Containerd, name: &str, spec: &ImageSpec, tag: &str) -> String {
    let reference = format!("localhost/{name}:{tag}");
    c.import_wasm(&core_wat(name), spec, &reference)
        .expect("import");
    reference
}

/// Runs `wasm_engine ARGS --data-dir DATA_DIR`, with `DOCKER_CONFIG` if given.
fn image_cmd(
    data_dir: &std::path::Path,
    args: &[&str],
    docker_config: Option<&std::path::Path>,
) -> std::process::Output {
    let mut cmd = std::process::Command::new(wasmengine_e2e::release_dir().join("wasm_engine"));
    cmd.args(args).arg("--data-dir").arg(data_dir);
    if let Some(dir) = docker_config {
        cmd.env("DOCKER_CONFIG", dir);
    }
    cmd.output().unwrap()
}

fn deploy(e: &Engine, name: &str, image: &str, wasi: bool) {
    e.deploy(json!({"function_name": name, "function_image": image, "wasi_cap": wasi}));
}

fn result(e: &Engine, name: &str, args: Value) -> String {
    let (status, v) = e.invoke(name, args.clone());
    assert_eq!(status, 200, "invoke {name} {args}: {v}\n{}", e.log());
    v["result"].as_str().unwrap().to_string()
}

fn task_pid(c: &Containerd, id: &str) -> Option<String> {
    let out = c.ctr_ok(&["task", "ls"]).ok()?;
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(2) == Some(&"RUNNING")).then(|| cols[1].to_string())
        })
}

#[test]
fn three_kinds_both_layouts_list_query_delete() {
    let (c, e) = setup();
    let gcd = import(&c, "gcd", &ImageSpec::classic("gcd.wasm"));
    let auth = import(
        &c,
        "authentication",
        &ImageSpec::artifact("authentication.wasm"),
    );
    let auth_wasi = import(&c, "authentication-wasi", &ImageSpec::classic("auth.wasm"));
    let fib = import(&c, "fibonacci", &ImageSpec::artifact("fibonacci.wasm"));
    deploy(&e, "gcd", &gcd, false);
    deploy(&e, "authentication", &auth, false);
    deploy(&e, "authentication-wasi", &auth_wasi, true);
    deploy(&e, "fibonacci", &fib, true);

    // Numeric: array and object args, in order.
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    assert_eq!(result(&e, "gcd", json!({"a": 35, "b": 21})), "7");
    // String ABI and WASI command: the original example.
    let original = json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "12345"});
    for f in ["authentication", "authentication-wasi"] {
        let out: Value = serde_json::from_str(&result(&e, f, original.clone())).unwrap();
        assert_eq!(out["status"], "403", "{f}: {out}");
        assert!(out["body"]
            .as_str()
            .unwrap()
            .contains("c5187dd86a648a819f527c7a8a4f7bf4"));
    }
    let ok = json!({"arg_uri": "yes", "arg_body": "yes",
                    "arg_secret": "c5187dd86a648a819f527c7a8a4f7bf4"});
    let out: Value = serde_json::from_str(&result(&e, "authentication", ok)).unwrap();
    assert_eq!(out["status"], "200");
    // Positional ("keyless") args for a WASI command.
    assert_eq!(result(&e, "fibonacci", json!(["30"])), "832040");

    // The original text form by default.
    let (status, text) = e.post(
        "/function/invoke",
        &json!({"function_name": "gcd", "args": [8, 12]}),
    );
    assert_eq!(
        (status, text.as_str()),
        (200, "status code: 200, message: 4")
    );

    // list: the original fields, from containerd.
    let (status, list) = e.get("/function/list");
    assert_eq!(status, 200, "{list}");
    let (_, list) = e
        .request(
            "GET",
            "/function/list",
            &[("accept", "application/json")],
            b"",
        )
        .unwrap();
    let list: Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["func_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["authentication", "authentication-wasi", "fibonacci", "gcd"]
    );
    let gcd_entry = &list["functions"][3];
    assert_eq!(gcd_entry["func_image_name"], gcd);
    assert_eq!(gcd_entry["wasi_cap"], false);

    // query: the original fields and containerd's.
    let (status, q) = e.post_json("/function/query", &json!({"function_name": "fibonacci"}));
    assert_eq!(status, 200, "{q}");
    let f = &q["function"];
    assert_eq!(f["wasi_cap"], true);
    assert_eq!(f["status"], "running");
    assert!(f["image_digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(f["created"].as_str().unwrap().ends_with('Z'));

    // Functions are containers of our runtime in containerd.
    let containers = c.ctr_ok(&["container", "ls"]).unwrap();
    assert!(
        containers.contains("io.containerd.wasmengine.v1"),
        "{containers}"
    );

    // delete: task, container and snapshot go.
    let info = c.ctr_ok(&["container", "info", "gcd"]).unwrap();
    let info: Value = serde_json::from_str(&info).unwrap();
    let snapshot = info["SnapshotKey"].as_str().unwrap().to_string();
    let (status, text) = e.post("/function/delete", &json!({"function_name": "gcd"}));
    assert_eq!(
        (status, text.as_str()),
        (
            200,
            "status code: 200, message: delete function gcd successfully!"
        )
    );
    let containers = c.ctr_ok(&["container", "ls", "-q"]).unwrap();
    assert!(!containers.lines().any(|l| l == "gcd"), "{containers}");
    assert!(task_pid(&c, "gcd").is_none());
    let snapshots = c.ctr_ok(&["snapshot", "ls"]).unwrap();
    assert!(!snapshots.contains(&snapshot), "{snapshots}");
    let (status, _) = e.invoke("gcd", json!([1, 2]));
    assert_eq!(status, 404);
    // The name is free again.
    deploy(&e, "gcd", &gcd, false);
    assert_eq!(result(&e, "gcd", json!([9, 6])), "3");
    // Both containers ran the module's precompiled form from the shim's own cache, which the
    // shim compiled once from the module file: no function container wrote code it loads.
    let log = c.log();
    let loads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("loaded gcd from"))
        .collect();
    assert_eq!(loads.len(), 2, "{loads:#?}");
    assert!(
        loads.iter().all(|l| l.contains("(precompiled)")),
        "{loads:#?}"
    );
    assert_eq!(log.matches("precompiled /gcd.wasm").count(), 1, "{log}");
}

#[test]
fn wasi_preview2_components_deploy_and_invoke() {
    let (c, e) = setup();
    // An artifact (component layer, os wasip2) and a classic image.
    let fib = "localhost/fibonacci-p2:test";
    c.import_wasm(
        &component(&app("fibonacci")),
        &ImageSpec::artifact("fibonacci.wasm"),
        fib,
    )
    .unwrap();
    let auth = "localhost/authentication-wasi-p2:test";
    c.import_wasm(
        &component(&app("authentication-wasi")),
        &ImageSpec::classic("authentication-wasi.wasm"),
        auth,
    )
    .unwrap();
    deploy(&e, "fib", fib, true);
    deploy(&e, "auth", auth, true);
    assert_eq!(result(&e, "fib", json!(["30"])), "832040");
    let out = result(
        &e,
        "auth",
        json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "c5187dd86a648a819f527c7a8a4f7bf4"}),
    );
    assert!(out.contains(r#""status":"200""#), "{out}");
    // Only the classic image's container tells the shim not to look for Wasm layers.
    let env_of = |id: &str| {
        let info: Value =
            serde_json::from_str(&c.ctr_ok(&["container", "info", id]).unwrap()).unwrap();
        info["Spec"]["process"]["env"].clone()
    };
    let none = json!("WASMENGINE_IMAGE_LAYERS=none");
    assert!(!env_of("fib").as_array().unwrap().contains(&none));
    assert!(env_of("auth").as_array().unwrap().contains(&none));
    // A second container of the artifact starts from the shim's precompiled component.
    deploy(&e, "fib-again", fib, true);
    assert_eq!(result(&e, "fib-again", json!(["20"])), "6765");
    let log = c.log();
    assert!(
        log.lines().any(|l| l.contains("instance=\"fib-again\"")
            && l.contains("wasi-command component (precompiled)")),
        "{log}"
    );
    // A component runs as a WASI command only.
    let (s, v) = e.post_json(
        "/function/deploy",
        &json!({"function_name": "fib-export", "function_image": fib, "wasi_cap": false}),
    );
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("wasi_cap true"),
        "{v}"
    );
    let (_, list) = e.get("/function/list");
    assert!(!list.contains("fib-export"), "{list}");
}

#[test]
fn error_statuses() {
    let (c, e) = setup();
    let gcd = import(&c, "gcd", &ImageSpec::classic("gcd.wasm"));
    let hello = import(&c, "hello", &ImageSpec::artifact("hello.wasm"));
    let fib = import(&c, "fibonacci", &ImageSpec::classic("fibonacci.wasm"));
    deploy(&e, "gcd", &gcd, false);
    deploy(&e, "fibonacci", &fib, true);

    let status = |path: &str, body: &[u8]| e.request("POST", path, &[], body).unwrap();
    // 400: malformed JSON, a missing field, a bad name, a bad reference, bad args.
    assert_eq!(status("/function/deploy", b"{\"function_name\":").0, 400);
    let (s, text) = status(
        "/function/deploy",
        br#"{"function_name":"x","wasi_cap":true}"#,
    );
    assert_eq!(s, 400);
    assert!(text.contains("function_image"), "{text}");
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "Bad.Name", "function_image": gcd, "wasi_cap": false}),
    );
    assert_eq!(s, 400, "{text}");
    let (s, _) = e.post(
        "/function/deploy",
        &json!({"function_name": "x", "function_image": "UPPER/case::", "wasi_cap": false}),
    );
    assert_eq!(s, 400);
    let (s, v) = e.invoke("gcd", json!(["twelve", 18]));
    assert_eq!(s, 400, "{v}");
    let (s, _) = e.invoke("gcd", json!("not an object or array"));
    assert_eq!(s, 400);

    // 404: unknown function for each endpoint; image in no registry.
    for path in ["/function/invoke", "/function/query", "/function/delete"] {
        let (s, text) = e.post(path, &json!({"function_name": "nope", "args": {}}));
        assert_eq!(s, 404, "{path}: {text}");
    }
    let reg = Registry::start().unwrap();
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "x", "function_image": format!("{}/missing:v1", reg.host()),
                "wasi_cap": false}),
    );
    assert_eq!(s, 404, "{text}");

    // 409: the name is taken.
    let (s, _) = e.post(
        "/function/deploy",
        &json!({"function_name": "gcd", "function_image": gcd, "wasi_cap": false}),
    );
    assert_eq!(s, 409);

    // 413: a body over the limit.
    let big = format!(
        r#"{{"function_name":"gcd","args":["{}"]}}"#,
        "x".repeat(2 << 20)
    );
    assert_eq!(status("/function/invoke", big.as_bytes()).0, 413);

    // 422: no runnable module: an entrypoint naming no module; a module of the wrong kind
    // (a WASI command deployed as a string-ABI function).
    let bad_entry = "localhost/bad-entry:test";
    let mut spec = ImageSpec::classic("hello.wasm");
    spec.entrypoint = Some(vec!["/missing.wasm".into()]);
    c.import_wasm(&app("hello"), &spec, bad_entry).unwrap();
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "bad-entry", "function_image": bad_entry, "wasi_cap": true}),
    );
    assert_eq!(s, 422, "{text}");
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "wrong-kind", "function_image": hello, "wasi_cap": false}),
    );
    assert_eq!(s, 422, "{text}");
    assert!(
        text.contains("wrong-kind"),
        "the shim's reason reaches the caller: {text}"
    );
    // A failed deploy leaves nothing behind.
    let containers = c.ctr_ok(&["container", "ls", "-q"]).unwrap();
    assert!(!containers.contains("wrong-kind") && !containers.contains("bad-entry"));
    // (A deploy's lease is ended just after its answer.)
    let no_leases = || c.ctr_ok(&["leases", "ls"]).unwrap().lines().count() == 1;
    assert!(
        eventually(Duration::from_secs(5), no_leases),
        "leases left: {}",
        c.ctr_ok(&["leases", "ls"]).unwrap()
    );

    // 500: a WASI command exiting non-zero (with its status and the end of its stderr), a
    // trap.
    let (s, v) = e.invoke("fibonacci", json!(["abc"]));
    assert_eq!(s, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("exit"), "{v}");
    let commands = import_wat(&c, "commands", &ImageSpec::classic("commands.wasm"), "test");
    deploy(&e, "commands", &commands, true);
    let (s, v) = e.invoke("commands", json!(["exit"]));
    assert_eq!(s, 500, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains('7') && message.contains("going away"),
        "{v}"
    );
    let (s, v) = e.invoke("commands", json!(["trap"]));
    assert_eq!(s, 500, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("unreachable"),
        "{v}"
    );

    // 502: a registry nobody listens on.
    let port = wasmengine_e2e::free_port();
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "x", "function_image": format!("127.0.0.1:{port}/x:v1"),
                "wasi_cap": false}),
    );
    assert_eq!(s, 502, "{text}");

    // The engine still serves, and nothing deployed was lost.
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    assert_eq!(e.get("/healthz").0, 200);
    // 404 for an unknown path, in our form.
    let (s, text) = e.get("/nowhere");
    assert_eq!(s, 404);
    assert!(text.starts_with("status code: 404"), "{text}");
}

#[test]
fn limits_give_their_status_and_fail_alone() {
    let (c, e) = setup();
    let numbers = import_wat(&c, "numbers", &ImageSpec::artifact("numbers.wasm"), "test");
    e.deploy(
        json!({"function_name": "spin", "function_image": numbers, "wasi_cap": false,
                     "export": "spin", "timeout_ms": 200}),
    );
    e.deploy(
        json!({"function_name": "grow", "function_image": numbers, "wasi_cap": false,
                     "export": "grow", "memory_limit_mb": 2}),
    );
    e.deploy(json!({"function_name": "gcd", "function_image": numbers, "wasi_cap": false}));
    let start = std::time::Instant::now();
    let (s, v) = e.invoke("spin", json!([]));
    assert_eq!(s, 504, "{v}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let (s, v) = e.invoke("grow", json!([]));
    assert_eq!(s, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("memory"), "{v}");
    // Fuel, on both layouts. The artifact's earlier containers left a precompiled form
    // (without fuel metering) in containerd: the shim compiles the module kept beside it.
    let numbers_classic = import_wat(
        &c,
        "numbers",
        &ImageSpec::classic("numbers.wasm"),
        "classic",
    );
    for (name, image) in [("burn", &numbers_classic), ("burn-artifact", &numbers)] {
        e.deploy(
            json!({"function_name": name, "function_image": image, "wasi_cap": false,
                        "export": "spin", "fuel": 1_000_000}),
        );
        let (s, v) = e.invoke(name, json!([]));
        assert_eq!(s, 500, "{name}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("fuel"),
            "{name}: {v}"
        );
    }
    let log = c.log();
    let load = log.lines().find(|l| l.contains("loaded burn-artifact"));
    assert!(
        load.is_some_and(
            |l| l.contains("with its precompiled form") && !l.contains("function (precompiled)")
        ),
        "{load:?}"
    );
    let commands = import_wat(&c, "commands", &ImageSpec::classic("commands.wasm"), "test");
    e.deploy(
        json!({"function_name": "chatty", "function_image": commands, "wasi_cap": true,
                     "max_output_bytes": 1000}),
    );
    let (s, v) = e.invoke("chatty", json!(["big"]));
    assert_eq!(s, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1000"), "{v}");
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    // The metrics saw them.
    let (_, metrics) = e.get("/metrics");
    assert!(
        metrics.contains(r#"wasmengine_invocation_errors_total{function="spin",kind="timeout"} 1"#),
        "{metrics}"
    );
    for series in [
        r#"wasmengine_invocations_total{function="gcd"} 1"#,
        r#"wasmengine_invocation_errors_total{function="burn",kind="fuel_exhausted"} 1"#,
        r#"wasmengine_invocation_errors_total{function="chatty",kind="output_too_large"} 1"#,
        r#"wasmengine_invocation_seconds_count{function="gcd"} 1"#,
        r#"wasmengine_invocation_seconds_bucket{le="+Inf",function="gcd"} 1"#,
        r#"wasmengine_deploys_total{function="chatty"} 1"#,
        r#"wasmengine_cold_starts_total{function="burn"} 1"#,
        "wasmengine_deploys_failed_total 0",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
}

#[test]
fn pull_from_registry_both_layouts_and_media_types() {
    let c = Containerd::start().unwrap();
    let e = Engine::start(&c, &[]).unwrap();
    let reg = Registry::start().unwrap();
    let classic = reg
        .push_wasm(
            &app("gcd"),
            &ImageSpec::classic("gcd.wasm"),
            "gcd:v1",
            false,
        )
        .unwrap();
    let docker = reg
        .push_wasm(
            &app("gcd"),
            &ImageSpec::classic("gcd.wasm"),
            "gcd-docker:v1",
            true,
        )
        .unwrap();
    let artifact = reg
        .push_wasm(
            &app("hello"),
            &ImageSpec::artifact("hello.wasm"),
            "hello:v1",
            false,
        )
        .unwrap();
    deploy(&e, "gcd", &classic, false);
    e.deploy(
        json!({"function_name": "gcd-docker", "function_image": docker,
                     "wasi_cap": false, "export": "gcd"}),
    );
    deploy(&e, "hello", &artifact, true);
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    assert_eq!(result(&e, "gcd-docker", json!([12, 18])), "6");
    assert_eq!(result(&e, "hello", json!({})), "Hello, world!");
    // A second container of the artifact image starts from the precompiled module the shim
    // left in containerd's content store.
    deploy(&e, "hello-again", &artifact, true);
    assert_eq!(result(&e, "hello-again", json!({})), "Hello, world!");
    let log = c.log();
    let loads: Vec<&str> = log.lines().filter(|l| l.contains("loaded hello")).collect();
    assert!(
        loads
            .iter()
            .any(|l| l.contains("instance=\"hello-again\"")
                && l.contains("function (precompiled)")),
        "second start should load the precompiled module: {loads:#?}"
    );
    // The pulled image is containerd's now.
    let images = c.ctr_ok(&["image", "ls", "-q"]).unwrap();
    assert!(images.contains(&classic), "{images}");

    // `wasm_engine image build` + `push`, then deploy from the registry.
    let store = tempfile::tempdir().unwrap();
    let file = store.path().join("echo.wasm");
    std::fs::write(&file, app("echo-string")).unwrap();
    let reference = format!("{}/echo-string:v1", reg.host());
    for args in [
        vec![
            "image",
            "build",
            file.to_str().unwrap(),
            "-t",
            &reference,
            "--artifact",
        ],
        vec!["image", "push", &reference],
    ] {
        let out = image_cmd(store.path(), &args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    e.deploy(
        json!({"function_name": "echo-string", "function_image": reference,
                     "wasi_cap": false}),
    );
    assert_eq!(result(&e, "echo-string", json!({"k": "v"})), r#"{"k":"v"}"#);
}

#[test]
fn registry_credentials_come_from_docker_config() {
    let c = Containerd::start().unwrap();
    let reg = Registry::start_with_user("fn-user", "fn-pass").unwrap();
    let image = reg
        .push_wasm(
            &app("gcd"),
            &ImageSpec::classic("gcd.wasm"),
            "private/gcd:v1",
            false,
        )
        .unwrap();

    // Without an account the registry refuses, and the caller hears why.
    let nowhere = tempfile::tempdir().unwrap();
    let e = Engine::start_with_env(
        &c,
        &[],
        &[("DOCKER_CONFIG", nowhere.path().to_str().unwrap())],
    )
    .unwrap();
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "gcd", "function_image": image, "wasi_cap": false}),
    );
    assert_eq!(s, 502, "{text}");
    assert!(text.contains("credentials"), "{text}");
    drop(e);

    // With docker's config.json the pull authenticates.
    let config = reg.docker_config().unwrap();
    let e = Engine::start_with_env(
        &c,
        &[],
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    )
    .unwrap();
    deploy(&e, "gcd", &image, false);
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");

    // `wasm_engine image push` authenticates the same way, and fails without an account.
    let store = tempfile::tempdir().unwrap();
    let file = store.path().join("echo.wasm");
    std::fs::write(&file, app("echo-string")).unwrap();
    let reference = format!("{}/private/echo-string:v1", reg.host());
    let out = image_cmd(
        store.path(),
        &["image", "build", file.to_str().unwrap(), "-t", &reference],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let out = image_cmd(
        store.path(),
        &["image", "push", &reference],
        Some(nowhere.path()),
    );
    assert!(!out.status.success(), "push without an account: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("credentials"),
        "{out:?}"
    );
    let out = image_cmd(
        store.path(),
        &["image", "push", &reference],
        Some(config.path()),
    );
    assert!(out.status.success(), "{out:?}");
    e.deploy(
        json!({"function_name": "echo-string", "function_image": reference, "wasi_cap": false}),
    );
    assert_eq!(result(&e, "echo-string", json!({"k": "v"})), r#"{"k":"v"}"#);
    drop(e);

    // A credential helper that docker's config names (`credHelpers`) is asked instead.
    let helpers = tempfile::tempdir().unwrap();
    let helper = helpers.path().join("docker-credential-we-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"fn-user\",\"Secret\":\"fn-pass\"}' \"$server\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        helpers.path().join("config.json"),
        json!({"credHelpers": {reg.host(): "we-test"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let e = Engine::start_with_env(
        &c,
        &[],
        &[
            ("DOCKER_CONFIG", helpers.path().to_str().unwrap()),
            ("PATH", &path),
        ],
    )
    .unwrap();
    // A tag containerd has not seen: the deploy must reach the registry.
    let image = reg
        .push_wasm(
            &app("gcd"),
            &ImageSpec::classic("gcd.wasm"),
            "private/gcd:helped",
            false,
        )
        .unwrap();
    e.deploy(
        json!({"function_name": "gcd-helped", "function_image": image,
                    "wasi_cap": false, "export": "gcd"}),
    );
    assert_eq!(result(&e, "gcd-helped", json!([12, 18])), "6");
    assert!(e.log().contains(&image), "{}", e.log());
}

#[test]
fn containerd_outage_gives_503_and_the_engine_recovers() {
    let mut c = Containerd::start().unwrap();
    let e = Engine::start(&c, &[]).unwrap();
    let gcd = import(&c, "gcd", &ImageSpec::classic("gcd.wasm"));
    let hello = import(&c, "hello", &ImageSpec::classic("hello.wasm"));
    deploy(&e, "gcd", &gcd, false);
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");

    c.stop();
    assert_eq!(e.get("/healthz").0, 503);
    let (s, text) = e.get("/function/list");
    assert_eq!(s, 503, "{text}");
    let (s, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "hello", "function_image": hello, "wasi_cap": true}),
    );
    assert_eq!(s, 503, "{text}");
    // The function's task is the shim's, not containerd's: calls still reach it.
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");

    c.resume().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || e.get("/healthz").0 == 200),
        "{}",
        e.log()
    );
    let (s, list) = e.get("/function/list");
    assert_eq!(s, 200, "{list}");
    assert!(list.contains(r#""func_name":"gcd""#), "{list}");
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    deploy(&e, "hello", &hello, true);
    assert_eq!(result(&e, "hello", json!({})), "Hello, world!");
}

#[test]
fn functions_survive_engine_restart_and_dead_tasks_restart() {
    let (c, mut e) = setup();
    let gcd = import(&c, "gcd", &ImageSpec::classic("gcd.wasm"));
    deploy(&e, "gcd", &gcd, false);
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");

    e.restart().unwrap(); // SIGKILL, then start again
    let (_, list) = e.get("/function/list");
    assert!(list.contains(r#""func_name":"gcd""#), "{list}");
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");

    // A task killed behind the engine's back is restarted on the next invoke.
    let before = task_pid(&c, "gcd").expect("task running");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "gcd"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || task_pid(&c, "gcd").is_none()));
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    let after = task_pid(&c, "gcd").expect("task restarted");
    assert_ne!(before, after);
    // The restarted task loads the precompiled module, compiled once by the shim.
    let log = c.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("loaded gcd from"))
        .unwrap();
    assert!(last.contains("(precompiled)"), "{last}");
    assert_eq!(log.matches("precompiled /gcd.wasm").count(), 1, "{log}");
    assert!(e.log().contains("restarting it"), "{}", e.log());
}

#[test]
fn concurrent_invokes_and_deploys() {
    let (c, e) = setup();
    let gcd = import(&c, "gcd", &ImageSpec::classic("gcd.wasm"));
    let auth = import(
        &c,
        "authentication",
        &ImageSpec::classic("authentication.wasm"),
    );
    deploy(&e, "authentication", &auth, false);

    // Concurrent deploys of one name: exactly one wins, the others get 409.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    e.post(
                        "/function/deploy",
                        &json!({"function_name": "gcd", "function_image": gcd,
                                "wasi_cap": false}),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        3,
        "{statuses:?}"
    );

    // 64 callers in flight, each checking its own answers.
    let failures: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64u32)
            .map(|i| {
                let e = &e;
                s.spawn(move || {
                    let mut bad = 0;
                    for j in 0..10u32 {
                        let (a, b) = (6 * (i + 1), 4 * (j + 1));
                        let want = gcd_of(a, b).to_string();
                        let (status, v) = if j % 2 == 0 {
                            e.invoke("gcd", json!([a, b]))
                        } else {
                            let secret = format!("s{i}-{j}");
                            let (s, v) = e.invoke(
                                "authentication",
                                json!({"arg_uri": "u", "arg_body": "b", "arg_secret": secret}),
                            );
                            let ok = v["result"].as_str().is_some_and(|r| r.contains("403"));
                            (if ok { s } else { 0 }, json!({"result": want.clone()}))
                        };
                        if status != 200 || v["result"] != want.as_str() {
                            bad += 1;
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(failures, 0);
}

fn gcd_of(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[test]
fn auth_token_and_unreachable_containerd() {
    let c = Containerd::start().unwrap();
    let e = Engine::start(&c, &["--auth-token", "s3cret"]).unwrap();
    let (s, _) = e.get("/function/list");
    assert_eq!(s, 401);
    let (s, _) = e
        .request(
            "GET",
            "/function/list",
            &[("authorization", "Bearer wrong")],
            b"",
        )
        .unwrap();
    assert_eq!(s, 401);
    let (s, _) = e
        .request(
            "GET",
            "/function/list",
            &[("authorization", "Bearer s3cret")],
            b"",
        )
        .unwrap();
    assert_eq!(s, 200);

    // No containerd at all: 503, and the engine keeps serving.
    let gone = tempfile::tempdir().unwrap();
    let sock = gone.path().join("nothing.sock");
    let e = Engine::start_with(vec![
        "--containerd-address".into(),
        sock.display().to_string(),
    ])
    .unwrap();
    assert_eq!(e.get("/healthz").0, 503);
    let (s, text) = e.get("/function/list");
    assert_eq!(s, 503, "{text}");
    let (s, _) = e.post(
        "/function/deploy",
        &json!({"function_name": "x", "function_image": "localhost/x:v1", "wasi_cap": true}),
    );
    assert_eq!(s, 503);
    assert_eq!(e.get("/healthz").0, 503);
}

#[test]
fn non_loopback_listen_needs_a_token() {
    let out = std::process::Command::new(wasmengine_e2e::release_dir().join("wasm_engine"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--containerd-address",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-token"));
}

#[test]
fn sigterm_finishes_in_flight_calls_and_leaves_functions_running() {
    let c = Containerd::start().unwrap();
    let mut e = Engine::start(&c, &[]).unwrap();
    let numbers = import_wat(&c, "numbers", &ImageSpec::artifact("numbers.wasm"), "test");
    e.deploy(
        json!({"function_name": "spin", "function_image": numbers, "wasi_cap": false,
                     "export": "spin", "timeout_ms": 1500}),
    );
    let addr = e.addr;
    let in_flight = std::thread::spawn(move || {
        wasmengine_e2e::http_tcp(
            addr,
            "POST",
            "/function/invoke",
            &[],
            br#"{"function_name":"spin","args":[]}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = e.terminate().expect("engine exits");
    assert!(status.success(), "{status:?}\n{}", e.log());
    // The call in flight got its answer (the function's timeout), not a reset connection.
    let (s, text) = in_flight.join().unwrap().expect("in-flight call answered");
    assert_eq!(s, 504, "{text}");
    // The function container is still there for the next engine.
    assert!(task_pid(&c, "spin").is_some(), "task left running");
}

/// The nice value of each thread of `pid`.
fn nices(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): the 19th, nice, is the 17th.
        if let Some(n) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
        {
            out.push(n.parse().unwrap());
        }
    }
    out
}

#[test]
fn embedded_containerd_is_started_reused_and_stopped() {
    let engine_bin = wasmengine_e2e::release_dir().join("wasm_engine");
    let mut e = Engine::start_with(vec![
        "--embedded-containerd".into(),
        "--namespace".into(),
        format!("we-embedded-{}", std::process::id()),
    ])
    .unwrap();
    let (s, text) = e.get("/healthz");
    assert_eq!(s, 200, "{text}\n{}", e.log());
    let data = e.data_dir.path().to_path_buf();
    let sock = data.join("containerd/containerd.sock");
    assert!(sock.exists());
    // Package a sample straight into that containerd, deploy it, call it.
    let wasm = data.join("gcd.wasm");
    std::fs::write(&wasm, app("gcd")).unwrap();
    let out = std::process::Command::new(&engine_bin)
        .args([
            "image",
            "build",
            wasm.to_str().unwrap(),
            "-t",
            "localhost/gcd:embedded",
            "--import",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--containerd-address")
        .arg(&sock)
        .arg("--namespace")
        .arg(format!("we-embedded-{}", std::process::id()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deploy(&e, "gcd", "localhost/gcd:embedded", false);
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    let pid_file = data.join("containerd/containerd.pid");
    let ctd_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The engine's threads run at nice -10 (the default `--nice`); its containerd, the shims
    // and the function's processes at the value the engine started with (this test's).
    let ours = nices(std::process::id())[0];
    let engine_nices = nices(e.pid().unwrap());
    assert!(
        engine_nices.len() > 1 && engine_nices.iter().all(|&n| n == -10),
        "engine threads: {engine_nices:?}"
    );
    let ns = format!("we-embedded-{}", std::process::id());
    let mut others = vec![ctd_pid as u32];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if (cmdline.contains("containerd-shim-wasmengine-v1") && cmdline.contains(&ns))
            || cgroup.contains(&format!(":/{ns}/"))
        {
            others.push(pid);
        }
    }
    assert!(
        others.len() >= 3,
        "containerd, a shim and the task: {others:?}"
    );
    for pid in others {
        let n = nices(pid);
        assert!(n.iter().all(|&n| n == ours), "pid {pid}: {n:?}, not {ours}");
    }
    // The task's creation had the cgroup attach lock kept ready (src/cgroup_warm.rs) from
    // a cgroup file the engine is already in.
    assert!(
        e.log().contains("cgroup-warm: writing to /sys/fs/cgroup/"),
        "{}",
        e.log()
    );
    // A killed engine finds its containerd again, functions included.
    e.restart().unwrap();
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    assert!(
        e.log().contains("private containerd still running"),
        "{}",
        e.log()
    );
    // Clean shutdown: functions deleted by the test, then SIGTERM stops the private containerd.
    let (s, _) = e.post("/function/delete", &json!({"function_name": "gcd"}));
    assert_eq!(s, 200);
    assert!(e.terminate().unwrap().success());
    assert!(
        eventually(Duration::from_secs(10), || unsafe {
            libc::kill(ctd_pid, 0)
        } != 0),
        "private containerd still running after the engine stopped"
    );
    // The shim's runtime state for this namespace: `<namespace>-<hash of containerd's state>`.
    let ns = format!("we-embedded-{}", std::process::id());
    for entry in std::fs::read_dir("/run/containerd/wasmengine")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ns || name.starts_with(&format!("{ns}-")) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[test]
fn without_an_address_the_system_containerd_is_used_else_a_private_one() {
    // A system containerd that answers is used (here: the test's, standing in for
    // /run/containerd/containerd.sock).
    let c = Containerd::start().unwrap();
    let e = Engine::start_with(vec![
        "--system-containerd-address".into(),
        c.address.display().to_string(),
        "--namespace".into(),
        c.namespace.clone(),
    ])
    .unwrap();
    assert_eq!(e.get("/healthz").0, 200, "{}", e.log());
    assert!(
        e.log().contains("using the system containerd"),
        "{}",
        e.log()
    );
    assert!(!e.data_dir.path().join("containerd").exists());
    let gcd = import(&c, "gcd", &ImageSpec::classic("gcd.wasm"));
    deploy(&e, "gcd", &gcd, false);
    assert_eq!(result(&e, "gcd", json!([12, 18])), "6");
    drop(e);

    // None answers: the engine starts its private containerd, and stops it on shutdown.
    let nowhere = tempfile::tempdir().unwrap();
    let mut e = Engine::start_with(vec![
        "--system-containerd-address".into(),
        nowhere.path().join("containerd.sock").display().to_string(),
        "--namespace".into(),
        format!("we-default-{}", std::process::id()),
    ])
    .unwrap();
    assert_eq!(e.get("/healthz").0, 200, "{}", e.log());
    let pid_file = e.data_dir.path().join("containerd/containerd.pid");
    let ctd_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(e.terminate().is_some_and(|s| s.success()), "{}", e.log());
    assert!(
        eventually(Duration::from_secs(10), || unsafe {
            libc::kill(ctd_pid, 0) != 0
        }),
        "private containerd {ctd_pid} still running"
    );
}
