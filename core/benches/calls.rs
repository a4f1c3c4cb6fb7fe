//! The original WasmEngine's benchmark table, measured on the execution core: each row is a
//! whole call (fresh instance, arguments in, call, result out, teardown) of a sample function
//! built by `make apps`, and one more row for the WASI version as a preview 2 component (the
//! module wrapped with wasmtime's adapter). Plus what a first call costs with a cold precompile cache (compile)
//! and a warm one (load the artifact from disk).
//!
//! Rows ending in `_rl` are the same C sources linked the way rustc lays out a module (stack
//! first, 1 MiB of stack, 17 pages of initial memory), and `gcd_nomem` is a numeric export
//! with no memory at all: what users deploy, beside our small samples. The `reset` group runs
//! the real-layout modules under each way of resetting a pooled memory between calls.
//!
//! `make bench` (or `cargo bench -p wasmengine-core`, after `make apps`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{app, component};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Value};
use wasmengine_core::{EngineConfig, Function, FunctionSpec, Runtime};

fn function(rt: &Runtime, file: &str, name: &str, wasi: bool) -> Function {
    rt.load(
        &app(file),
        &FunctionSpec {
            name: name.into(),
            wasi: Some(wasi),
            ..FunctionSpec::default()
        },
    )
    .unwrap()
}

fn auth_args() -> Value {
    json!({"arg_uri": "yes", "arg_body": "yes", "arg_secret": "12345"})
}

/// A row: its label, the sample file, the export (or function name), whether it is WASI, and
/// the args and the expected result (empty: the authentication sample's 403 page).
type Spec = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    fn() -> Value,
    &'static str,
);

fn gcd_args() -> Value {
    json!([1071, 462])
}

fn gcd_wasi_args() -> Value {
    json!({"a": 1071, "b": 462})
}

fn echo_args() -> Value {
    json!({"text": "hello, WasmEngine"})
}

const ECHOED: &str = r#"{"text":"hello, WasmEngine"}"#;

const ROWS: &[Spec] = &[
    ("gcd_nomem", "gcd-nomem", "gcd", false, gcd_args, "21"),
    ("gcd", "gcd", "gcd", false, gcd_args, "21"),
    (
        "gcd_wasi",
        "gcd-wasi",
        "gcd-wasi",
        true,
        gcd_wasi_args,
        "21",
    ),
    (
        "echo_string",
        "echo-string",
        "echo_string",
        false,
        echo_args,
        ECHOED,
    ),
    (
        "echo_string_wasi",
        "echo-string-wasi",
        "echo-string-wasi",
        true,
        echo_args,
        ECHOED,
    ),
    (
        "authentication",
        "authentication",
        "authentication",
        false,
        auth_args,
        "",
    ),
    (
        "authentication_wasi",
        "authentication-wasi",
        "authentication-wasi",
        true,
        auth_args,
        "",
    ),
    (
        "echo_string_rl",
        "echo-string-rl",
        "echo_string",
        false,
        echo_args,
        ECHOED,
    ),
    (
        "echo_string_wasi_rl",
        "echo-string-wasi-rl",
        "echo-string-wasi",
        true,
        echo_args,
        ECHOED,
    ),
    (
        "authentication_rl",
        "authentication-rl",
        "authentication",
        false,
        auth_args,
        "",
    ),
    (
        "authentication_wasi_rl",
        "authentication-wasi-rl",
        "authentication-wasi",
        true,
        auth_args,
        "",
    ),
];

/// Loads the rows named `labels` (all of them if empty) into `rt`.
fn rows(rt: &Runtime, labels: &[&str]) -> Vec<(&'static str, Function, Value, &'static str)> {
    ROWS.iter()
        .filter(|r| labels.is_empty() || labels.contains(&r.0))
        .map(|&(label, file, export, wasi, args, expect)| {
            (label, function(rt, file, export, wasi), args(), expect)
        })
        .collect()
}

fn calls(c: &mut Criterion) {
    let rt = Runtime::new(EngineConfig::default()).unwrap();
    let auth_component = rt
        .load(
            &component(&app("authentication-wasi")),
            &FunctionSpec {
                name: "authentication-wasi".into(),
                wasi: Some(true),
                ..FunctionSpec::default()
            },
        )
        .unwrap();
    let mut rows = rows(&rt, &[]);
    rows.push((
        "authentication_wasi_component",
        auth_component,
        auth_args(),
        "",
    ));
    let mut group = c.benchmark_group("call");
    for (label, f, args, expect) in &rows {
        check(label, f, args, expect);
        group.bench_function(*label, |b| b.iter(|| f.call(args).unwrap()));
    }
    group.finish();
}

fn check(label: &str, f: &Function, args: &Value, expect: &str) {
    let out = f.call(args).unwrap();
    if expect.is_empty() {
        assert!(
            out.contains("\"403\"") && out.contains("c5187dd86a648a819f527c7a8a4f7bf4"),
            "{out}"
        );
    } else {
        assert_eq!(out, expect, "{label}");
    }
}

/// The real-layout modules under each reset strategy: dirty-page scan (where the kernel has
/// `PAGEMAP_SCAN`) or `memset` of what is kept resident, with 1 MiB or 16 MiB kept resident.
fn reset(c: &mut Criterion) {
    let mut group = c.benchmark_group("reset");
    for (scan, keep) in [
        (true, 1usize << 20),
        (true, 16 << 20),
        (false, 1 << 20),
        (false, 16 << 20),
    ] {
        let rt = Runtime::new(EngineConfig {
            pagemap_scan: scan,
            keep_resident_bytes: keep,
            pool_instances: 16,
            ..EngineConfig::default()
        })
        .unwrap();
        let mode = format!(
            "{}_keep{}m",
            if scan { "scan" } else { "memset" },
            keep >> 20
        );
        let rows = rows(
            &rt,
            &["authentication_rl", "authentication_wasi_rl", "echo_string"],
        );
        for (label, f, args, expect) in &rows {
            check(label, f, args, expect);
            group.bench_function(format!("{label}/{mode}"), |b| {
                b.iter(|| f.call(args).unwrap())
            });
        }
    }
    group.finish();
}

fn first_call(c: &mut Criterion) {
    let wasm = app("authentication-wasi");
    let spec = FunctionSpec {
        name: "authentication-wasi".into(),
        wasi: Some(true),
        ..FunctionSpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        pool_instances: 8,
        ..EngineConfig::default()
    };
    let clear = || {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    };
    let mut group = c.benchmark_group("first_call");
    group.sample_size(20);
    group.bench_function("cold_cache", |b| {
        b.iter_batched(
            || {
                clear();
                Runtime::new(config.clone()).unwrap()
            },
            |rt| rt.load(&wasm, &spec).unwrap().call(&auth_args()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    Runtime::new(config.clone())
        .unwrap()
        .precompile(&wasm)
        .unwrap();
    group.bench_function("warm_cache", |b| {
        b.iter_batched(
            || Runtime::new(config.clone()).unwrap(),
            |rt| rt.load(&wasm, &spec).unwrap().call(&auth_args()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, calls, reset, first_call);
criterion_main!(benches);
