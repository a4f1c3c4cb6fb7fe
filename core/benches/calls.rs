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
    let rows: [(&str, Function, Value, &str); 12] = [
        (
            "gcd_nomem",
            function(&rt, "gcd-nomem", "gcd", false),
            json!([1071, 462]),
            "21",
        ),
        (
            "gcd",
            function(&rt, "gcd", "gcd", false),
            json!([1071, 462]),
            "21",
        ),
        (
            "gcd_wasi",
            function(&rt, "gcd-wasi", "gcd-wasi", true),
            json!({"a": 1071, "b": 462}),
            "21",
        ),
        (
            "echo_string",
            function(&rt, "echo-string", "echo_string", false),
            json!({"text": "hello, WasmEngine"}),
            r#"{"text":"hello, WasmEngine"}"#,
        ),
        (
            "echo_string_wasi",
            function(&rt, "echo-string-wasi", "echo-string-wasi", true),
            json!({"text": "hello, WasmEngine"}),
            r#"{"text":"hello, WasmEngine"}"#,
        ),
        (
            "authentication",
            function(&rt, "authentication", "authentication", false),
            auth_args(),
            "",
        ),
        (
            "authentication_wasi",
            function(&rt, "authentication-wasi", "authentication-wasi", true),
            auth_args(),
            "",
        ),
        (
            "echo_string_rl",
            function(&rt, "echo-string-rl", "echo_string", false),
            json!({"text": "hello, WasmEngine"}),
            r#"{"text":"hello, WasmEngine"}"#,
        ),
        (
            "echo_string_wasi_rl",
            function(&rt, "echo-string-wasi-rl", "echo-string-wasi", true),
            json!({"text": "hello, WasmEngine"}),
            r#"{"text":"hello, WasmEngine"}"#,
        ),
        (
            "authentication_rl",
            function(&rt, "authentication-rl", "authentication", false),
            auth_args(),
            "",
        ),
        (
            "authentication_wasi_rl",
            function(&rt, "authentication-wasi-rl", "authentication-wasi", true),
            auth_args(),
            "",
        ),
        (
            "authentication_wasi_component",
            auth_component,
            auth_args(),
            "",
        ),
    ];
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
        let rows = [
            (
                "authentication_rl",
                function(&rt, "authentication-rl", "authentication", false),
                auth_args(),
                "",
            ),
            (
                "authentication_wasi_rl",
                function(&rt, "authentication-wasi-rl", "authentication-wasi", true),
                auth_args(),
                "",
            ),
            (
                "echo_string",
                function(&rt, "echo-string", "echo_string", false),
                json!({"text": "hello, WasmEngine"}),
                r#"{"text":"hello, WasmEngine"}"#,
            ),
        ];
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
