//! WASI preview 2 command components: run like WASI commands, with the same limits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use wasmengine_core::{
    CallError, EngineConfig, FunctionSpec, Kind, Limits, LoadError, LoadSource, Runtime,
};

#[test]
fn a_component_is_a_wasi_command() {
    let rt = runtime();
    let f = load(&rt, &component(&wat("argv_env")), "argv_env", Some(true));
    assert!(f.is_component());
    assert_eq!(f.kind(), Kind::Command);
    assert_eq!(f.call(&json!({"a": 1})).unwrap(), r#"{"a":1}"#);
    assert_eq!(f.call(&json!(["30", "x"])).unwrap(), "30\nx");
    // Decided from the component when the deploy does not say.
    let f = load(&rt, &component(&wat("argv_env")), "argv_env", None);
    assert!(f.is_component());
}

#[test]
fn a_component_sees_its_environment() {
    let rt = runtime();
    let f = rt
        .load(
            &component(&wat("argv_env")),
            &FunctionSpec {
                name: "argv_env".into(),
                env: vec![("GREETING".into(), "hi".into())],
                ..FunctionSpec::default()
            },
        )
        .unwrap();
    assert_eq!(f.call(&json!(["x"])).unwrap(), "x\nGREETING=hi");
}

#[test]
fn a_component_cannot_be_called_as_an_export() {
    let rt = runtime();
    let err = rt
        .load(
            &component(&wat("argv_env")),
            &FunctionSpec {
                name: "argv_env".into(),
                wasi: Some(false),
                ..FunctionSpec::default()
            },
        )
        .err()
        .expect("wasi_cap false on a component");
    assert!(matches!(err, LoadError::Kind(_)), "{err}");
    assert!(err.to_string().contains("wasi_cap true"), "{err}");
    let err = rt
        .load(
            &component(&wat("argv_env")),
            &FunctionSpec {
                name: "argv_env".into(),
                export: Some("main".into()),
                ..FunctionSpec::default()
            },
        )
        .err()
        .expect("an export of a component");
    assert!(matches!(err, LoadError::Kind(_)), "{err}");
}

#[test]
fn a_component_too_big_for_the_pool_is_refused_at_load() {
    let mut text = String::from("(component (core module $m)");
    for _ in 0..17 {
        text.push_str(" (core instance (instantiate $m))");
    }
    text.push(')');
    let bytes = wat::parse_str(&text).unwrap();
    let rt = runtime();
    assert!(rt.is_pooled());
    let err = rt
        .load(&bytes, &FunctionSpec::default())
        .err()
        .expect("17 core instances");
    assert!(err.to_string().contains("instances"), "{err}");
}

#[test]
fn component_failures_and_limits() {
    let rt = runtime();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let f = load_with(
        &rt,
        &component(&wat("commands")),
        "commands",
        None,
        Some(limits),
    );
    // Preview 2 exit carries success or failure only: proc_exit(7) becomes status 1.
    match f.call(&json!(["exit"])) {
        Err(CallError::Exit { status, stderr }) => {
            assert_eq!(status, 1);
            assert_eq!(stderr, "going away");
        }
        other => panic!("expected a failing exit, got {other:?}"),
    }
    assert!(matches!(f.call(&json!(["trap"])), Err(CallError::Trap(_))));
    let started = std::time::Instant::now();
    assert!(matches!(
        f.call(&json!(["spin"])),
        Err(CallError::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The function is still usable after each failure.
    assert!(matches!(
        f.call(&json!(["exit"])),
        Err(CallError::Exit { .. })
    ));
}

#[test]
fn component_memory_and_fuel_limits() {
    let rt = Runtime::new(EngineConfig {
        pool_instances: 64,
        fuel: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let commands = |limits: Limits| {
        load_with(
            &rt,
            &component(&wat("commands")),
            "commands",
            None,
            Some(limits),
        )
    };
    let f = commands(Limits {
        fuel: Some(100_000),
        ..Limits::default()
    });
    assert!(matches!(
        f.call(&json!(["spin"])),
        Err(CallError::FuelExhausted(100_000))
    ));
    let f = commands(Limits {
        max_output_bytes: 1000,
        ..Limits::default()
    });
    assert!(matches!(
        f.call(&json!(["big"])),
        Err(CallError::OutputTooLarge { limit: 1000 })
    ));
    let grower = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start")
               (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#,
    )
    .unwrap();
    let limits = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    let f = load_with(&rt, &component(&grower), "grower", None, Some(limits));
    assert!(matches!(
        f.call(&json!([])),
        Err(CallError::MemoryLimit { limit, .. }) if limit == 4 << 20
    ));
}

#[test]
fn components_are_cached_and_precompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = || EngineConfig {
        pool_instances: 16,
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let bytes = component(&wat("argv_env"));
    let first = Runtime::new(config()).unwrap();
    let f = load(&first, &bytes, "argv_env", None);
    assert_eq!(f.load_source(), LoadSource::Compiled);
    let second = Runtime::new(config()).unwrap();
    let f = load(&second, &bytes, "argv_env", None);
    assert_eq!(f.load_source(), LoadSource::Disk);
    assert_eq!(f.call(&json!(["cached"])).unwrap(), "cached");
    let artifact = second.precompile_artifact(&bytes).unwrap();
    let spec = FunctionSpec {
        name: "argv_env".into(),
        ..FunctionSpec::default()
    };
    // SAFETY: made just above by a runtime with the same configuration.
    let f = unsafe { second.load_precompiled(&artifact, &spec) }.unwrap();
    assert!(f.is_component());
    assert_eq!(f.call(&json!(["pre"])).unwrap(), "pre");
}

#[test]
fn a_c_sample_runs_as_a_component() {
    let rt = runtime();
    let f = load(&rt, &component(&app("fibonacci")), "fibonacci", Some(true));
    assert!(f.is_component());
    assert_eq!(f.call(&json!(["30"])).unwrap(), "832040");
}
