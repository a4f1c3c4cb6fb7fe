//! Bodies of the REST API, with the original WasmEngine's field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::function::FunctionLimits;

/// `POST /function/deploy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployRequest {
    /// 1 to 63 characters of `[a-z0-9_-]`, starting with a letter or digit.
    pub function_name: String,
    /// An OCI image reference.
    pub function_image: String,
    /// `true` for a WASI command, `false` for an export.
    pub wasi_cap: bool,
    /// The export to call (default: the function's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[serde(flatten)]
    pub limits: FunctionLimits,
    /// Environment of a WASI command; names starting with `WASMENGINE_` are reserved.
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

/// `POST /function/query` and `POST /function/delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionNameRequest {
    pub function_name: String,
}

/// `POST /function/logs`: the function's last `tail` log lines (all it keeps when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogsRequest {
    pub function_name: String,
    #[serde(default)]
    pub tail: Option<usize>,
}

/// `POST /function/invoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvokeRequest {
    pub function_name: String,
    /// The args as the client wrote them (an object, an array, or null): the engine checks
    /// their kind and passes the text on to the function unparsed.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = args_schema))]
    pub args: Option<Box<serde_json::value::RawValue>>,
}

/// An object (named args), an array (positional) or null.
#[cfg(feature = "openapi")]
fn args_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::Object,
            Type::Array,
            Type::Null,
        ]))
        .description(Some(
            "An object (named args) or an array (positional args), passed to the function as \
             JSON text.",
        ))
        .build()
}

impl InvokeRequest {
    /// The args' JSON text (`null` when absent).
    pub fn args_json(&self) -> &str {
        self.args.as_deref().map_or("null", |a| a.get())
    }
}

/// `{"status": N, "message": …}`, or with `result` for a successful invoke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Response {
    /// The HTTP status, repeated.
    pub status: u16,
    /// What happened; an invoke's result; the original engine's text.
    pub message: String,
    /// `POST /function/invoke`: the function's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// `GET /function/list`: the deployed functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<FunctionSummary>>))]
    pub functions: Option<Value>,
    /// `POST /function/query`: the function's details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<FunctionDetail>))]
    pub function: Option<Value>,
    /// `POST /function/logs`: the log lines, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<LogEntry>>))]
    pub logs: Option<Value>,
}

/// A deployed function in `GET /function/list` (the original engine's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionSummary {
    pub func_name: String,
    pub func_image_name: String,
    pub wasi_cap: bool,
}

/// A function in `POST /function/query`: the list fields and what containerd knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionDetail {
    pub func_name: String,
    pub func_image_name: String,
    pub wasi_cap: bool,
    /// The image's manifest digest at deploy.
    pub image_digest: String,
    pub export: Option<String>,
    pub limits: FunctionLimits,
    /// `running`, `idle` (scaled to zero), `created`, `stopped`, `no task` or `unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// The functions it may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
    /// A stopped task's exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u32>,
    /// When its container was created (RFC 3339).
    pub created: Option<String>,
}

/// A line of `POST /function/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// When the call ended (RFC 3339, milliseconds).
    pub time: String,
    /// The call's id (the invoke's `x-wasmengine-call-id`).
    pub call_id: String,
    pub text: String,
}

impl Response {
    /// The original engine's text form: `status code: N, message: …`.
    pub fn to_text(&self) -> String {
        // Built by hand: every text-form answer, invokes included, goes through here.
        let mut text = String::with_capacity(32 + self.message.len());
        text.push_str("status code: ");
        let mut status = Vec::with_capacity(5);
        crate::http1::push_decimal(&mut status, self.status.into());
        text.push_str(std::str::from_utf8(&status).expect("digits"));
        text.push_str(", message: ");
        text.push_str(&self.message);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_the_original_one() {
        let r = Response {
            status: 404,
            message: "function f is not deployed".into(),
            result: None,
            functions: None,
            function: None,
            logs: None,
        };
        assert_eq!(
            r.to_text(),
            "status code: 404, message: function f is not deployed"
        );
    }

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
