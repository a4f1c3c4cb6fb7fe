//! The engine↔shim invocation protocol: HTTP/1.1 over the function's unix socket, one
//! kept-alive connection per concurrent caller.
//!
//! - `GET /ready` → `200 ready` once the module is loaded: the readiness signal.
//! - `POST /invoke` with the args JSON (object or array) as body → `200` with the result
//!   bytes as body, or an error status with an [`InvokeError`] JSON body.

use serde::{Deserialize, Serialize};

pub const PATH_READY: &str = "/ready";
pub const PATH_INVOKE: &str = "/invoke";

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
}
