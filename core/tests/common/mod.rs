//! Shared by the core's integration tests: fixtures and runtimes.
#![allow(dead_code)]

use std::path::PathBuf;

use wasmengine_core::{EngineConfig, Function, FunctionSpec, Limits, Runtime};

/// A WAT fixture from `tests/wat/`, assembled.
pub fn wat(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/wat/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A sample function built from C by `make apps` (into `build/apps/`, or `$WASMENGINE_APPS`).
pub fn app(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("WASMENGINE_APPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/apps"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make apps` first)", path.display()))
}

/// A WASI preview 1 command module wrapped as a preview 2 command component (the way
/// `wasm-tools component new --adapt` does it).
pub fn component(module: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| {
            e.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .and_then(|e| e.validate(true).encode())
        .unwrap_or_else(|e| panic!("componentize: {e:#}"))
}

pub fn runtime() -> Runtime {
    Runtime::new(EngineConfig {
        pool_instances: 64,
        ..EngineConfig::default()
    })
    .unwrap()
}

pub fn load(rt: &Runtime, bytes: &[u8], name: &str, wasi: Option<bool>) -> Function {
    load_with(rt, bytes, name, wasi, None)
}

pub fn load_with(
    rt: &Runtime,
    bytes: &[u8],
    name: &str,
    wasi: Option<bool>,
    limits: Option<Limits>,
) -> Function {
    rt.load(
        bytes,
        &FunctionSpec {
            name: name.into(),
            wasi,
            limits,
            ..FunctionSpec::default()
        },
    )
    .unwrap_or_else(|e| panic!("load {name}: {e}"))
}
