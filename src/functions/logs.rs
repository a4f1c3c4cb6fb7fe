//! A function's log (`POST /function/logs`): read from the process that serves it, where
//! each call's stderr lines and errors are kept in a bounded ring (see the shim's `logs`).
//! The log lives as long as the function's task (or its group's): an engine restart keeps
//! it, a task restart or an idle stop of a function of its own does not.

use wasmengine_api::invoke::{LogLine, PATH_LOGS};

use super::*;
use crate::invoker::CallFailure;

impl Functions {
    /// The last `tail` lines of `name`'s log (all it keeps with `None`), oldest first. A
    /// function whose task is not running has none.
    pub async fn logs(&self, name: &str, tail: Option<usize>) -> ApiResult<Vec<LogLine>> {
        let handle = self.handle(name).await?;
        let base = match &handle.group {
            Some(_) => wasmengine_api::group::logs_path(name),
            None => PATH_LOGS.to_string(),
        };
        let path = match tail {
            Some(n) => format!("{base}?tail={n}"),
            None => base,
        };
        match handle.invoker.send("GET", &path, b"").await {
            Ok((200, body)) => serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_gateway(format!("function {name} answered a malformed log: {e}"))
            }),
            Ok((status, body)) => Err(ApiError::bad_gateway(format!(
                "function {name} answered {status} for its log: {}",
                String::from_utf8_lossy(&body)
            ))),
            Err(CallFailure::NotListening(_)) => Ok(Vec::new()),
            Err(e) => Err(ApiError::unavailable(format!("function {name}: {e}"))),
        }
    }
}
