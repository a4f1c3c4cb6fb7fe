//! Engine configuration and limits for a container, from its process environment (the only
//! part of the OCI spec the library passes on; see `wasmengine_api::function`).

use std::time::Duration;

use wasmengine_api::function::{FunctionConfig, FunctionLimits};

/// Our configuration entries all start with this.
const ENV_PREFIX: &str = "WASMENGINE_";
use wasmengine_core::{EngineConfig, FunctionSpec, Limits};

/// Instances the pool holds in a serving container when no concurrency is configured.
pub const DEFAULT_CONCURRENCY: u32 = 64;

/// The engine that runs a container's module. Precompiled layers from
/// [`compiler_engine_config`] load into it as long as `fuel` is off (fuel changes the code).
pub fn engine_config(fuel: bool, instances: u32) -> EngineConfig {
    EngineConfig {
        fuel,
        pool_instances: instances.max(1),
        // Artifact layers are cached in containerd's content store; a serving container may
        // add a directory for the rest (see `wasmengine_api::function::ENV_CACHE_DIR`).
        cache_dir: None,
        ..EngineConfig::default()
    }
}

/// The engine that precompiles layers in the shim process: compatible with
/// [`engine_config`]`(false, _)`, with no pool to reserve.
pub fn compiler_engine_config() -> EngineConfig {
    EngineConfig {
        pooling: false,
        ..engine_config(false, 1)
    }
}

/// Per-call limits from `limits`; `base` fills what is not set.
pub fn limits(limits: &FunctionLimits, base: Limits) -> Limits {
    Limits {
        timeout: limits
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(base.timeout),
        memory_bytes: limits
            .memory_limit_mb
            .map(|mb| mb << 20)
            .unwrap_or(base.memory_bytes),
        fuel: limits.fuel.or(base.fuel),
        max_output_bytes: limits
            .max_output_bytes
            .map(|b| b as usize)
            .unwrap_or(base.max_output_bytes),
    }
}

/// What a serving function runs as: its name, kind, export, limits (the core's defaults
/// for what `config` leaves unset) and the module's environment from `env`.
pub fn serve_spec(config: &FunctionConfig, env: &[String]) -> FunctionSpec {
    FunctionSpec {
        name: config.name.clone(),
        wasi: config.wasi,
        export: config.export.clone(),
        limits: Some(limits(&config.limits, Limits::default())),
        env: module_env(env),
    }
}

/// Log lines a serving function keeps ([`wasmengine_api::function::ENV_LOG_LINES`]).
pub fn log_lines(env: &[String]) -> usize {
    wasmengine_api::function::get_env(env, wasmengine_api::function::ENV_LOG_LINES)
        .and_then(|n| n.parse().ok())
        .unwrap_or(wasmengine_api::invoke::DEFAULT_LOG_LINES)
}

/// How long a serving function's connection looks for its next request before it sleeps
/// ([`wasmengine_api::function::ENV_BUSY_POLL_US`]; `crate::busy_poll::Window` bounds it).
pub fn busy_poll(env: &[String]) -> Duration {
    wasmengine_api::function::get_env(env, wasmengine_api::function::ENV_BUSY_POLL_US)
        .and_then(|us| us.parse().ok())
        .map_or(crate::busy_poll::MAX_WINDOW, Duration::from_micros)
}

/// A command container runs as long as it runs and uses the memory its cgroup allows,
/// unless the environment sets limits.
pub fn command_base_limits() -> Limits {
    Limits {
        timeout: Duration::MAX,
        memory_bytes: EngineConfig::default().max_memory_bytes,
        fuel: None,
        max_output_bytes: usize::MAX,
    }
}

/// The environment the module sees: the spec's, without our own configuration entries.
pub fn module_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .filter(|e| !e.starts_with(ENV_PREFIX))
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_variables_are_not_passed_to_the_module() {
        let env = vec![
            "PATH=/bin".to_string(),
            "WASMENGINE_TIMEOUT_MS=5".to_string(),
            "EMPTY".to_string(),
        ];
        assert_eq!(
            module_env(&env),
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                ("EMPTY".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn busy_polling_is_read_from_the_environment() {
        let env = |v: &str| vec![format!("WASMENGINE_BUSY_POLL_US={v}")];
        assert_eq!(busy_poll(&[]), crate::busy_poll::MAX_WINDOW);
        assert_eq!(busy_poll(&env("0")), Duration::ZERO);
        assert_eq!(busy_poll(&env("250")), Duration::from_micros(250));
        assert_eq!(busy_poll(&env("lots")), crate::busy_poll::MAX_WINDOW);
    }

    #[test]
    fn unset_limits_fall_back_to_the_base() {
        let l = limits(
            &FunctionLimits {
                timeout_ms: Some(250),
                ..FunctionLimits::default()
            },
            Limits::default(),
        );
        assert_eq!(l.timeout, Duration::from_millis(250));
        assert_eq!(l.memory_bytes, Limits::default().memory_bytes);
    }
}
