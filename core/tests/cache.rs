//! The precompiled-module cache, within a process and across processes.

mod common;

use std::process::Command;

use common::*;
use wasmengine_core::{EngineConfig, LoadSource, Runtime};

fn cached_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(EngineConfig {
        cache_dir: Some(dir.to_path_buf()),
        pool_instances: 8,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
fn second_load_in_a_process_is_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let rt = cached_runtime(dir.path());
    assert_eq!(
        load(&rt, &wat("numbers"), "gcd", None).load_source(),
        LoadSource::Compiled
    );
    assert_eq!(
        load(&rt, &wat("numbers"), "mul_add", None).load_source(),
        LoadSource::Memory
    );
}

#[test]
fn precompiled_module_survives_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("numbers.wasm");
    std::fs::write(&module, wat("numbers")).unwrap();
    let cache = dir.path().join("cache");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmengine-run"))
            .args(["--show-load", "--name", "gcd", "--cache-dir"])
            .arg(&cache)
            .arg(&module)
            .arg(r#"{"a": 12, "b": 18}"#)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, first_log) = run();
    assert_eq!(first.trim(), "6");
    assert!(first_log.contains("load: Compiled"), "{first_log}");
    let artifacts: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(artifacts.len(), 1, "one artifact written");
    let (second, second_log) = run();
    assert_eq!(second.trim(), "6");
    assert!(second_log.contains("load: Disk"), "{second_log}");
}

#[test]
fn a_corrupt_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = cached_runtime(dir.path());
    load(&rt, &wat("numbers"), "gcd", None);
    let artifact = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&artifact, b"not a module").unwrap();
    let rt = cached_runtime(dir.path());
    let f = load(&rt, &wat("numbers"), "gcd", None);
    assert_eq!(f.load_source(), LoadSource::Compiled);
    assert_eq!(f.call(&serde_json::json!([4, 6])).unwrap(), "2");
    let rt = cached_runtime(dir.path());
    assert_eq!(
        load(&rt, &wat("numbers"), "gcd", None).load_source(),
        LoadSource::Disk
    );
}

#[test]
fn precompiled_artifacts_load_across_allocation_strategies() {
    // The shim compiles with a small on-demand engine and runs with a pooled one: their
    // artifacts must be interchangeable.
    let pooled = runtime();
    let on_demand = Runtime::new(EngineConfig {
        pooling: false,
        ..EngineConfig::default()
    })
    .unwrap();
    assert_eq!(pooled.compatibility_key(), on_demand.compatibility_key());
    let artifact = on_demand.precompile_artifact(&wat("numbers")).unwrap();
    let spec = wasmengine_core::FunctionSpec {
        name: "gcd".into(),
        ..Default::default()
    };
    let f = unsafe { pooled.load_precompiled(&artifact, &spec) }.unwrap();
    assert_eq!(f.call(&serde_json::json!([12, 18])).unwrap(), "6");
    let fueled = Runtime::new(EngineConfig {
        fuel: true,
        ..EngineConfig::default()
    })
    .unwrap();
    assert_ne!(fueled.compatibility_key(), pooled.compatibility_key());
    assert!(unsafe { fueled.load_precompiled(&artifact, &spec) }.is_err());
}
