//! `wasm_engine fn …` against a running engine: deploy → invoke → list → query → logs → delete, with
//! readable output and `--json`, an error status as a non-zero exit, and the bearer token.

use std::process::{Command, Output};

use serde_json::{json, Value};
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, release_dir, Containerd, Engine};

fn cli(e: &Engine, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(release_dir().join("wasm_engine"));
    cmd.arg("fn")
        .args(args)
        .env("WASMENGINE_URL", format!("http://{}", e.addr))
        .env_remove("WASMENGINE_AUTH_TOKEN");
    if let Some(t) = token {
        cmd.env("WASMENGINE_AUTH_TOKEN", t);
    }
    cmd.output().expect("run wasm_engine fn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{:?}: {}{}",
        o.status,
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[test]
fn the_cli_deploys_invokes_lists_queries_and_deletes() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &["--auth-token", "s3cret"]).expect("engine");
    let gcd = "localhost/gcd:cli";
    c.import_wasm(&app("gcd"), &ImageSpec::classic("gcd.wasm"), gcd)
        .unwrap();
    let t = Some("s3cret");

    let out = ok(cli(
        &e,
        t,
        &[
            "deploy",
            "gcd",
            gcd,
            "--export",
            "gcd",
            "--timeout-ms",
            "500",
        ],
    ));
    assert!(out.contains("deploy function gcd successfully"), "{out}");
    // invoke prints the result only.
    assert_eq!(
        ok(cli(&e, t, &["invoke", "gcd", "--args", "[12, 18]"])),
        "6\n"
    );
    let v: Value = serde_json::from_str(&ok(cli(
        &e,
        t,
        &["invoke", "gcd", "--args", "[12, 18]", "--json"],
    )))
    .unwrap();
    assert_eq!(v["result"], "6");

    let list = ok(cli(&e, t, &["list"]));
    let mut lines = list.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{list}");
    assert!(lines.next().unwrap().starts_with("gcd "), "{list}");
    let v: Value = serde_json::from_str(&ok(cli(&e, t, &["list", "--json"]))).unwrap();
    assert_eq!(
        v,
        json!([{"func_name": "gcd", "func_image_name": gcd, "wasi_cap": false}])
    );

    let q = ok(cli(&e, t, &["query", "gcd"]));
    assert!(q.lines().any(|l| l == "status: running"), "{q}");
    let v: Value = serde_json::from_str(&ok(cli(&e, t, &["query", "gcd", "--json"]))).unwrap();
    assert_eq!(v["limits"]["timeout_ms"], 500);

    // Errors: the engine's status and message, and a non-zero exit.
    let o = cli(&e, t, &["invoke", "gcd", "--args", "\"twelve\""]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error (400)"),
        "{o:?}"
    );
    let o = cli(&e, t, &["invoke", "nope", "--args", "[1, 2]"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error (404)"),
        "{o:?}"
    );
    let o = cli(&e, None, &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error (401)"),
        "{o:?}"
    );
    let o = cli(&e, t, &["invoke", "gcd", "--args", "not json"]);
    assert_eq!(o.status.code(), Some(2));

    // A failed call is in the function's log, with its error.
    let o = cli(&e, t, &["invoke", "gcd", "--args", "[1]"]);
    assert_eq!(o.status.code(), Some(1));
    let log = ok(cli(&e, t, &["logs", "gcd", "--tail", "5"]));
    assert!(log.contains("error: bad_args"), "{log}");
    let v: Value = serde_json::from_str(&ok(cli(&e, t, &["logs", "gcd", "--json"]))).unwrap();
    assert!(
        v[0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("error: bad_args"),
        "{v}"
    );

    let out = ok(cli(&e, t, &["delete", "gcd"]));
    assert!(out.contains("delete function gcd successfully"), "{out}");
    assert_eq!(cli(&e, t, &["query", "gcd"]).status.code(), Some(1));

    // Every command's help shows an example.
    for cmd in ["deploy", "invoke", "list", "query", "delete", "logs"] {
        let help = ok(cli(&e, None, &[cmd, "--help"]));
        assert!(help.contains("Example:"), "{cmd}: {help}");
    }
}
