//! A function's configuration as the shim sees it. The engine writes it into the container's
//! process environment ([`FunctionConfig::to_env`]); the shim reads it back
//! ([`FunctionConfig::from_env`]). A container without [`ENV_MODE`]` = serve` is a plain command
//! container (what `ctr run` makes).

use serde::{Deserialize, Serialize};

/// `serve`: the task answers invocations on [`ENV_SOCKET`] instead of running `_start` once.
pub const ENV_MODE: &str = "WASMENGINE_MODE";
pub const MODE_SERVE: &str = "serve";
/// Path of the unix socket, inside the container (a directory bind-mounted from the host):
/// how the engine reaches its functions.
pub const ENV_SOCKET: &str = "WASMENGINE_SOCKET";
/// A TCP address (`0.0.0.0:8080`) to serve on instead of a unix socket: how a Kubernetes
/// Service reaches a function container of a pod.
pub const ENV_LISTEN: &str = "WASMENGINE_LISTEN";
pub const ENV_FUNCTION: &str = "WASMENGINE_FUNCTION";
/// `true` (WASI command), `false` (an export) or absent (decide from the module).
pub const ENV_WASI: &str = "WASMENGINE_WASI";
pub const ENV_EXPORT: &str = "WASMENGINE_EXPORT";
pub const ENV_TIMEOUT_MS: &str = "WASMENGINE_TIMEOUT_MS";
pub const ENV_MEMORY_LIMIT_MB: &str = "WASMENGINE_MEMORY_LIMIT_MB";
pub const ENV_FUEL: &str = "WASMENGINE_FUEL";
pub const ENV_MAX_OUTPUT_BYTES: &str = "WASMENGINE_MAX_OUTPUT_BYTES";
/// Calls served at once; more wait.
pub const ENV_CONCURRENCY: &str = "WASMENGINE_CONCURRENCY";
/// A directory (inside the container) of precompiled modules shared by functions: a module
/// compiled once starts from its `.cwasm` in every later container.
pub const ENV_CACHE_DIR: &str = "WASMENGINE_CACHE_DIR";
/// Log lines a serving function (or each function of a group) keeps.
pub const ENV_LOG_LINES: &str = "WASMENGINE_LOG_LINES";
/// Longest a serving function's connection looks for its next request before it sleeps, in
/// microseconds (`0`: it always sleeps). The shim bounds it.
pub const ENV_BUSY_POLL_US: &str = "WASMENGINE_BUSY_POLL_US";
/// [`IMAGE_LAYERS_NONE`] when the container's module is not in a Wasm layer of its image (a
/// file of its rootfs, or a group's): the shim then does not ask containerd for the image's
/// layers when the container is created.
pub const ENV_IMAGE_LAYERS: &str = "WASMENGINE_IMAGE_LAYERS";
pub const IMAGE_LAYERS_NONE: &str = "none";
/// Where the engine mounts its module cache in function containers.
pub const CACHE_DIR_IN_CONTAINER: &str = "/run/wasmengine-cache";

/// Where the engine mounts a function's socket directory inside its container.
pub const SOCKET_DIR_IN_CONTAINER: &str = "/run/wasmengine";
pub const SOCKET_NAME: &str = "fn.sock";
/// A serving function that cannot start writes why into this file next to its socket.
pub const ERROR_FILE_NAME: &str = "error";

/// Limits of one function; `None` means the runtime default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionLimits {
    /// A call's wall-clock limit (default 10,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A call's linear memory limit (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
    /// Fuel units per call (default: unmetered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Largest result (default 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// A serving function's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionConfig {
    pub name: String,
    pub wasi: Option<bool>,
    pub export: Option<String>,
    /// Where the function serves: exactly one of `socket` and `listen` is set.
    pub socket: Option<String>,
    pub listen: Option<String>,
    pub limits: FunctionLimits,
    pub concurrency: Option<u32>,
    pub cache_dir: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is required in serve mode")]
    Missing(&'static str),
    #[error("{name}={value:?} is not valid: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The value of `key` in `K=V` entries (the last one wins, as in a process environment).
pub fn get_env<S: AsRef<str>>(env: &[S], key: &str) -> Option<String> {
    env.iter().rev().find_map(|e| {
        let (k, v) = e.as_ref().split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn num<T: std::str::FromStr>(
    name: &'static str,
    v: Option<String>,
) -> Result<Option<T>, ConfigError> {
    v.map(|v| {
        v.parse().map_err(|_| ConfigError::Invalid {
            name,
            value: v.clone(),
            why: "expected a whole number",
        })
    })
    .transpose()
}

impl FunctionLimits {
    /// Limits set in `K=V` entries (in any mode); absent ones stay `None`.
    pub fn from_env<S: AsRef<str>>(env: &[S]) -> Result<FunctionLimits, ConfigError> {
        let get = |key: &'static str| num(key, get_env(env, key));
        Ok(FunctionLimits {
            timeout_ms: get(ENV_TIMEOUT_MS)?,
            memory_limit_mb: get(ENV_MEMORY_LIMIT_MB)?,
            fuel: get(ENV_FUEL)?,
            max_output_bytes: get(ENV_MAX_OUTPUT_BYTES)?,
        })
    }
}

impl FunctionConfig {
    /// The environment entries (`K=V`) that carry this configuration, serve mode included.
    pub fn to_env(&self) -> Vec<String> {
        let mut env = vec![
            format!("{ENV_MODE}={MODE_SERVE}"),
            format!("{ENV_FUNCTION}={}", self.name),
        ];
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                env.push(format!("{k}={v}"));
            }
        };
        put(ENV_SOCKET, self.socket.clone());
        put(ENV_LISTEN, self.listen.clone());
        put(ENV_WASI, self.wasi.map(|w| w.to_string()));
        put(ENV_EXPORT, self.export.clone());
        put(
            ENV_TIMEOUT_MS,
            self.limits.timeout_ms.map(|v| v.to_string()),
        );
        put(
            ENV_MEMORY_LIMIT_MB,
            self.limits.memory_limit_mb.map(|v| v.to_string()),
        );
        put(ENV_FUEL, self.limits.fuel.map(|v| v.to_string()));
        put(
            ENV_MAX_OUTPUT_BYTES,
            self.limits.max_output_bytes.map(|v| v.to_string()),
        );
        put(ENV_CONCURRENCY, self.concurrency.map(|v| v.to_string()));
        put(ENV_CACHE_DIR, self.cache_dir.clone());
        env
    }

    /// Reads a serve-mode configuration from `K=V` entries; `Ok(None)` when the entries do not
    /// ask for serve mode.
    pub fn from_env<S: AsRef<str>>(env: &[S]) -> Result<Option<FunctionConfig>, ConfigError> {
        let get = |key: &str| get_env(env, key);
        if get(ENV_MODE).as_deref() != Some(MODE_SERVE) {
            return Ok(None);
        }
        let wasi = match get(ENV_WASI).as_deref() {
            None | Some("") | Some("auto") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: ENV_WASI,
                    value: other.into(),
                    why: "expected true, false or auto",
                })
            }
        };
        let name = get(ENV_FUNCTION).ok_or(ConfigError::Missing(ENV_FUNCTION))?;
        let socket = get(ENV_SOCKET).filter(|s| !s.is_empty());
        let listen = get(ENV_LISTEN).filter(|s| !s.is_empty());
        match (&socket, &listen) {
            (None, None) => return Err(ConfigError::Missing(ENV_SOCKET)),
            (Some(_), Some(l)) => {
                return Err(ConfigError::Invalid {
                    name: ENV_LISTEN,
                    value: l.clone(),
                    why: "a function serves on a unix socket or a TCP address, not both",
                })
            }
            _ => {}
        }
        Ok(Some(FunctionConfig {
            name,
            wasi,
            export: get(ENV_EXPORT).filter(|e| !e.is_empty()),
            socket,
            listen,
            limits: FunctionLimits::from_env(env)?,
            concurrency: num(ENV_CONCURRENCY, get_env(env, ENV_CONCURRENCY))?,
            cache_dir: get(ENV_CACHE_DIR).filter(|d| !d.is_empty()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_env() {
        let config = FunctionConfig {
            name: "gcd".into(),
            wasi: Some(false),
            export: Some("gcd".into()),
            socket: Some("/run/wasmengine/fn.sock".into()),
            listen: None,
            limits: FunctionLimits {
                timeout_ms: Some(500),
                memory_limit_mb: Some(64),
                fuel: None,
                max_output_bytes: Some(4096),
            },
            concurrency: Some(8),
            cache_dir: Some("/run/wasmengine-cache".into()),
        };
        let mut env = vec!["PATH=/bin".to_string()];
        env.extend(config.to_env());
        assert_eq!(FunctionConfig::from_env(&env).unwrap(), Some(config));
    }

    #[test]
    fn command_containers_have_no_config() {
        assert_eq!(FunctionConfig::from_env(&["A=1"]).unwrap(), None);
    }

    #[test]
    fn bad_values_are_named() {
        let env = [
            "WASMENGINE_MODE=serve",
            "WASMENGINE_FUNCTION=f",
            "WASMENGINE_SOCKET=/s",
            "WASMENGINE_TIMEOUT_MS=soon",
        ];
        let err = FunctionConfig::from_env(&env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "WASMENGINE_TIMEOUT_MS=\"soon\" is not valid: expected a whole number"
        );
        let err = FunctionConfig::from_env(&["WASMENGINE_MODE=serve"]).unwrap_err();
        assert_eq!(err, ConfigError::Missing(ENV_FUNCTION));
        let err = FunctionConfig::from_env(&["WASMENGINE_MODE=serve", "WASMENGINE_FUNCTION=f"])
            .unwrap_err();
        assert_eq!(err, ConfigError::Missing(ENV_SOCKET));
        let both = [
            "WASMENGINE_MODE=serve",
            "WASMENGINE_FUNCTION=f",
            "WASMENGINE_SOCKET=/s",
            "WASMENGINE_LISTEN=0.0.0.0:8080",
        ];
        assert!(matches!(
            FunctionConfig::from_env(&both).unwrap_err(),
            ConfigError::Invalid {
                name: ENV_LISTEN,
                ..
            }
        ));
    }

    #[test]
    fn a_tcp_function_round_trips_through_env() {
        let config = FunctionConfig {
            name: "gcd".into(),
            listen: Some("0.0.0.0:8080".into()),
            ..FunctionConfig::default()
        };
        assert_eq!(
            FunctionConfig::from_env(&config.to_env()).unwrap(),
            Some(config)
        );
    }
}
