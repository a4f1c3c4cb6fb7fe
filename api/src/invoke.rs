//! The engine↔shim invocation protocol: HTTP/1.1 over the function's unix socket, one
//! kept-alive connection per concurrent caller.
//!
//! - `GET /ready` → `200 ready` once the module is loaded: the readiness signal.
//! - `POST /invoke` with the args JSON (object or array) as body → `200` with the result
//!   bytes as body, or an error status with an [`InvokeError`] JSON body. The engine names
//!   the call in [`HEADER_CALL_ID`]; the function's log lines of the call carry that id.
//! - `GET /logs?tail=N` → the function's last N log lines (a JSON array of [`LogLine`],
//!   oldest first): what WASI calls wrote to stderr, and every failed call's error.
//!
//! A call to another function (the `wasmengine.call` import, see `wasmengine_core::callout`)
//! goes back over the connection its own invoke came on: while the invoke is in flight, the
//! function server writes an interim answer `HTTP/1.1 102 Call` with the callee's name in
//! [`HEADER_CALLEE`] and the args as its body; the engine runs the callee (its `calls` list,
//! the depth limit, the caller's deadline) and writes the callee's answer back as a request
//! `PUT /answer` with the status in [`HEADER_STATUS`] and the result (or an error JSON) as its
//! body; then it reads on, for another `102` or the invoke's final answer. The connection
//! belongs to the call, so the engine knows who calls without any token.
//!
//! Streams: a request that carries [`HEADER_STREAM`] (a number the sender picks, unique among
//! its requests in flight on the connection) may be answered out of order, while other
//! requests of the connection run: its answer, each `102 Call` it makes and the engine's
//! `PUT /answer` to those carry the same stream id. The engine sends every request this way,
//! many in flight on one connection per function, so that under load one read or write
//! carries many calls and the function server wakes once per batch rather than once per call.
//! A request without a stream id is answered in order, before anything else is read from its
//! connection: plain HTTP/1.1, as `curl --unix-socket` sends it.

use serde::{Deserialize, Serialize};

pub const PATH_READY: &str = "/ready";
pub const PATH_INVOKE: &str = "/invoke";
pub const PATH_LOGS: &str = "/logs";
/// The engine's answer to a `102 Call` (see the module's doc).
pub const PATH_ANSWER: &str = "/answer";
/// The interim status of a call to another function.
pub const STATUS_CALL: u16 = 102;
/// The function a `102 Call` calls.
pub const HEADER_CALLEE: &str = "x-wasmengine-callee";
/// The stream a request belongs to, echoed in its answer (see the module's doc).
pub const HEADER_STREAM: &str = "x-wasmengine-stream";
/// The callee's status in a `PUT /answer`.
pub const HEADER_STATUS: &str = "x-wasmengine-status";
/// Milliseconds the call may still run: sent with the invoke of a callee, whose own timeout
/// then ends no later than its caller's deadline.
pub const HEADER_TIME_LEFT: &str = "x-wasmengine-time-left-ms";
/// How deep calls may nest by default (a REST invoke is depth 0).
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 8;
/// Longest callee name a function may ask for.
pub const MAX_CALLEE_NAME: usize = 128;
/// A call's id: sent with each invoke to the function, and returned to the REST client.
pub const HEADER_CALL_ID: &str = "x-wasmengine-call-id";
/// Log lines a function keeps when its container's env does not say
/// ([`crate::function::ENV_LOG_LINES`]).
pub const DEFAULT_LOG_LINES: usize = 1000;
/// Longest log line kept (longer ones are cut).
pub const MAX_LOG_LINE: usize = 4096;

/// One line of a function's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the call that wrote it ended, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The call's id ([`HEADER_CALL_ID`]), empty if the call came without one.
    pub call_id: String,
    pub text: String,
}

/// `?tail=N` of a logs request (all lines when absent or unreadable).
pub fn tail_param(path: &str) -> Option<usize> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("tail="))
        .and_then(|n| n.parse().ok())
}

/// Why an invocation failed, as a stable code (the core's `CallError::code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The args do not fit the function (count, types, malformed JSON).
    BadArgs,
    Timeout,
    MemoryLimit,
    FuelExhausted,
    OutputTooLarge,
    Trap,
    /// A WASI command exited non-zero.
    Exit,
    /// The function returned something unreadable (span outside memory, not UTF-8).
    BadOutput,
    /// The function server is shutting down.
    Interrupted,
    /// No instance could be made (pool exhausted, module needs more than allowed).
    Instantiate,
    /// A group does not hold the function (not loaded yet, or unloaded): nothing ran.
    NotLoaded,
}

impl ErrorCode {
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(code.into())).ok()
    }

    /// The HTTP status for this failure, both on the socket and at the REST API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadArgs => 400,
            ErrorCode::Timeout => 504,
            ErrorCode::Interrupted | ErrorCode::Instantiate => 503,
            ErrorCode::NotLoaded => 404,
            ErrorCode::MemoryLimit
            | ErrorCode::FuelExhausted
            | ErrorCode::OutputTooLarge
            | ErrorCode::Trap
            | ErrorCode::Exit
            | ErrorCode::BadOutput => 500,
        }
    }
}

/// The body of a failed invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeError {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_core_names() {
        for name in [
            "bad_args",
            "timeout",
            "memory_limit",
            "fuel_exhausted",
            "output_too_large",
            "trap",
            "exit",
            "bad_output",
            "interrupted",
            "instantiate",
        ] {
            assert!(ErrorCode::from_code(name).is_some(), "{name}");
        }
        assert_eq!(ErrorCode::from_code("timeout").unwrap().http_status(), 504);
    }

    #[test]
    fn tail_is_read_from_the_query() {
        assert_eq!(tail_param("/logs?tail=5"), Some(5));
        assert_eq!(tail_param("/logs/f?x=1&tail=2"), Some(2));
        assert_eq!(tail_param("/logs"), None);
        assert_eq!(tail_param("/logs?tail=many"), None);
    }
}
