//! Bodies of the REST API, with the original WasmEngine's field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::function::FunctionLimits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub function_name: String,
    pub function_image: String,
    pub wasi_cap: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[serde(flatten)]
    pub limits: FunctionLimits,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds without calls after which the function's task is stopped (scaled to zero)
    /// until its next call; 0 never. Absent: the engine's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// The deployed functions this one may call through the `wasmengine.call` import; a
    /// call to any other is refused (403 `call_refused`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionNameRequest {
    pub function_name: String,
}

/// `POST /function/logs`: the function's last `tail` log lines (all it keeps when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub function_name: String,
    #[serde(default)]
    pub tail: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeRequest {
    pub function_name: String,
    /// The args as the client wrote them (an object, an array, or null): the engine checks
    /// their kind and passes the text on to the function unparsed.
    #[serde(default)]
    pub args: Option<Box<serde_json::value::RawValue>>,
}

impl InvokeRequest {
    /// The args' JSON text (`null` when absent).
    pub fn args_json(&self) -> &str {
        self.args.as_deref().map_or("null", |a| a.get())
    }
}

/// `{"status": N, "message": …}`, or with `result` for a successful invoke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// `GET /function/list`: the deployed functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Value>,
    /// `POST /function/query`: the function's details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Value>,
    /// `POST /function/logs`: the log lines, oldest first (`time`, `call_id`, `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Value>,
}

impl Response {
    /// The original engine's text form: `status code: N, message: …`.
    pub fn to_text(&self) -> String {
        format!("status code: {}, message: {}", self.status, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_request_accepts_the_original_body() {
        let r: DeployRequest = serde_json::from_str(
            r#"{"function_name":"gcd","function_image":"localhost:5000/gcd:latest","wasi_cap":false}"#,
        )
        .unwrap();
        assert_eq!(r.function_name, "gcd");
        assert_eq!(r.limits, FunctionLimits::default());
        let r: DeployRequest = serde_json::from_str(
            r#"{"function_name":"f","function_image":"i","wasi_cap":true,"timeout_ms":50,"env":{"A":"1"}}"#,
        )
        .unwrap();
        assert_eq!(r.limits.timeout_ms, Some(50));
        assert_eq!(r.env["A"], "1");
    }
}
