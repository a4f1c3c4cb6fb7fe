//! Function groups: one container (one process, one wasmtime engine) that serves many
//! functions on one unix socket. The engine loads a function into its group after deploy, and
//! again whenever the group answers [`ErrorCode::NotLoaded`](crate::invoke::ErrorCode) (the
//! group's task was restarted, or the function was unloaded for being idle).
//!
//! A group container is configured like a function container, through its process env:
//! [`ENV_MODE`](crate::function::ENV_MODE)` = group`, [`ENV_SOCKET`](crate::function::ENV_SOCKET)
//! and [`ENV_CONCURRENCY`](crate::function::ENV_CONCURRENCY) (calls run at once, all functions
//! together). The protocol is the one of [`crate::invoke`], with the function's name in the
//! path:
//!
//! - `GET /ready` → `200` once the group serves.
//! - `PUT /functions/NAME` with a [`load body`](encode_load) → `200` once NAME is loaded (a
//!   load replaces an earlier one), `400` with an [`InvokeError`](crate::invoke::InvokeError)
//!   if the module or its configuration is refused.
//! - `GET /functions/NAME` → `200` if loaded, `404` if not.
//! - `DELETE /functions/NAME` → `200` (loaded or not); with `?forget`, its log goes too.
//! - `POST /invoke/NAME` with the args → as `POST /invoke` of a single function; `404` with
//!   code `not_loaded` when NAME is not loaded (nothing ran).
//! - `GET /logs/NAME?tail=N` → NAME's log, as `GET /logs` of a single function (kept while
//!   the group runs, also while NAME is unloaded for being idle).

use crate::function::{get_env, ConfigError, ENV_CONCURRENCY, ENV_MODE, ENV_SOCKET};

pub const MODE_GROUP: &str = "group";
pub const PATH_FUNCTIONS: &str = "/functions/";
pub const PATH_INVOKE: &str = "/invoke/";
pub const PATH_LOGS: &str = "/logs/";
/// Largest load body a group reads: a module and its configuration.
pub const MAX_LOAD_BYTES: usize = 256 << 20;

/// A group server's configuration, from its container's process env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub socket: String,
    pub concurrency: Option<u32>,
}

impl GroupConfig {
    pub fn to_env(&self) -> Vec<String> {
        let mut env = vec![
            format!("{ENV_MODE}={MODE_GROUP}"),
            format!("{ENV_SOCKET}={}", self.socket),
        ];
        if let Some(c) = self.concurrency {
            env.push(format!("{ENV_CONCURRENCY}={c}"));
        }
        env
    }

    /// `Ok(None)` when the entries do not ask for group mode.
    pub fn from_env<S: AsRef<str>>(env: &[S]) -> Result<Option<GroupConfig>, ConfigError> {
        if get_env(env, ENV_MODE).as_deref() != Some(MODE_GROUP) {
            return Ok(None);
        }
        let socket = get_env(env, ENV_SOCKET)
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::Missing(ENV_SOCKET))?;
        let concurrency = match get_env(env, ENV_CONCURRENCY) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError::Invalid {
                name: ENV_CONCURRENCY,
                value: v.clone(),
                why: "expected a whole number",
            })?),
        };
        Ok(Some(GroupConfig {
            socket,
            concurrency,
        }))
    }
}

pub fn function_path(name: &str) -> String {
    format!("{PATH_FUNCTIONS}{name}")
}

pub fn invoke_path(name: &str) -> String {
    format!("{PATH_INVOKE}{name}")
}

pub fn logs_path(name: &str) -> String {
    format!("{PATH_LOGS}{name}")
}

/// The body of a load: the function container's env entries (its configuration, as
/// [`FunctionConfig::to_env`](crate::function::FunctionConfig::to_env) writes it, and the
/// module's own env) as one JSON line, then the module's bytes. JSON escapes every newline
/// inside the strings, so the first newline ends the line.
pub fn encode_load(env: &[String], wasm: &[u8]) -> Vec<u8> {
    let mut body = serde_json::to_vec(env).expect("strings serialise");
    body.push(b'\n');
    body.extend_from_slice(wasm);
    body
}

/// The env entries and the module of a load body.
pub fn decode_load(body: &[u8]) -> Result<(Vec<String>, &[u8]), String> {
    let end = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("load body has no configuration line")?;
    let env: Vec<String> = serde_json::from_slice(&body[..end])
        .map_err(|e| format!("load configuration is not a JSON array of strings: {e}"))?;
    Ok((env, &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_round_trip() {
        let env = vec!["A=line\nbreak".to_string(), "WASMENGINE_FUNCTION=f".into()];
        let wasm = b"\0asm\x01\0\0\0\n\n";
        let body = encode_load(&env, wasm);
        let (e, w) = decode_load(&body).unwrap();
        assert_eq!(e, env);
        assert_eq!(w, wasm);
        assert!(decode_load(b"no newline").is_err());
        assert!(decode_load(b"{}\n").is_err());
    }

    #[test]
    fn group_config_round_trips_and_is_told_apart() {
        let c = GroupConfig {
            socket: "/run/wasmengine/fn.sock".into(),
            concurrency: Some(16),
        };
        assert_eq!(GroupConfig::from_env(&c.to_env()).unwrap(), Some(c));
        assert_eq!(
            GroupConfig::from_env(&["WASMENGINE_MODE=serve"]).unwrap(),
            None
        );
        assert_eq!(
            GroupConfig::from_env(&["WASMENGINE_MODE=group"]).unwrap_err(),
            ConfigError::Missing(ENV_SOCKET)
        );
    }
}
