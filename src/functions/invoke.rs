//! Calls: a function's handle (its invoker, cached after the first look-up), and a call
//! through it, with the restart of a dead task, at-most-once delivery and the answer's
//! mapping onto the REST statuses.

use super::nested::{Call, Calls};
use super::*;
use crate::invoker::{CallContext, CallFailure};

/// How much longer than its caller's time left the engine waits for a callee's answer (the
/// callee's own deadline ends it first).
const NESTED_SLACK: Duration = Duration::from_millis(250);

impl Functions {
    pub(super) async fn handle(&self, name: &str) -> ApiResult<Arc<Handle>> {
        if let Some(h) = self.handles.read().unwrap().get(name) {
            return Ok(h.clone());
        }
        // Boxed: the look-up in containerd is a large future, and every call's future would
        // be as large (copied whole each time it moves) if it were inline.
        Box::pin(self.new_handle(name)).await
    }

    /// The handle of a function not called since the engine started: from its container.
    async fn new_handle(&self, name: &str) -> ApiResult<Arc<Handle>> {
        validate_name(name)?;
        let container = match self.ctd.container(name).await? {
            Some(c) if c.labels.contains_key(LABEL_FUNCTION) => c,
            _ => {
                return Err(ApiError::not_found(format!(
                    "function {name} is not deployed"
                )))
            }
        };
        let limits: FunctionLimits = container
            .labels
            .get(LABEL_LIMITS)
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        let socket = container
            .labels
            .get(LABEL_SOCKET)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.socket_dir(name).join(SOCKET_NAME));
        let timeout = limits.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let max_output = limits
            .max_output_bytes
            .unwrap_or(DEFAULT_MAX_OUTPUT_BYTES)
            .try_into()
            .unwrap_or(usize::MAX);
        let group = container.labels.get(groups::LABEL_GROUP).cloned();
        let calls = calls_of(&container.labels);
        let invoker = match &group {
            Some(g) => Invoker::in_pool(
                self.group_pool(g),
                &wasmengine_api::group::invoke_path(name),
                max_output,
                self.defaults.concurrency as usize,
            ),
            None => Invoker::new(&socket, max_output, self.defaults.concurrency as usize),
        };
        let handle = Arc::new(Handle {
            invoker,
            group,
            call_timeout: Duration::from_millis(timeout) + Duration::from_secs(30),
            timeout: Duration::from_millis(timeout),
            restart: tokio::sync::Mutex::new(()),
            calls,
            invocations: self.metrics.invocations_of(name),
            activity: self.clock(name),
        });
        let mut handles = self.handles.write().unwrap();
        Ok(handles.entry(name.to_string()).or_insert(handle).clone())
    }

    /// Calls the function with `args`; the result text. `call_id` names the call in the
    /// function's log.
    pub async fn invoke(&self, name: &str, args: &[u8], call_id: &str) -> ApiResult<String> {
        let call = Call {
            id: call_id,
            depth: 0,
            time_left: None,
        };
        self.invoke_at(name, args, call).await.map_err(|(e, _)| e)
    }

    /// A call at any depth (a REST invoke, or a function's call to another): the result,
    /// or the error and its kind (as the metrics name it). Counted in the metrics.
    pub(super) async fn invoke_at(
        &self,
        name: &str,
        args: &[u8],
        call: Call<'_>,
    ) -> Result<String, (ApiError, String)> {
        let start = Instant::now();
        // A name that is not deployed (or not even valid) gets no series of its own.
        let handle = self
            .handle(name)
            .await
            .map_err(|e| (e, "not_found".to_string()))?;
        let r = self.invoke_inner(name, &handle, args, call).await;
        let end = Instant::now();
        if r.is_ok() {
            handle.activity.set(end);
        }
        let kind = match &r {
            Ok(_) => None,
            Err((_, kind)) => Some(kind.as_str()),
        };
        handle
            .invocations
            .record(&self.metrics, end.saturating_duration_since(start), kind);
        r
    }

    async fn invoke_inner(
        &self,
        name: &str,
        handle: &Arc<Handle>,
        args: &[u8],
        call: Call<'_>,
    ) -> Result<String, (ApiError, String)> {
        // A callee's call ends by its caller's deadline, whatever its own timeout.
        let (patience, bound) = match call.time_left {
            Some(left) => (
                handle.timeout.min(left),
                handle.call_timeout.min(left.saturating_add(NESTED_SLACK)),
            ),
            None => (handle.timeout, handle.call_timeout),
        };
        let mut restarted = false;
        loop {
            let now = Instant::now();
            // A deploy may name a timeout too far away for an instant (no deadline then).
            let deadline = now.checked_add(patience);
            let calls = Calls::new(self, name, &handle.calls, call, deadline);
            let cx = CallContext {
                call_id: call.id,
                time_left: call.time_left.map(|_| patience),
                nested: Some(&calls),
                deadline: now.checked_add(bound),
            };
            let answer = handle.invoker.invoke_in(args, patience, cx).await;
            let failure = match answer {
                Err(CallFailure::TimedOut) => {
                    return Err((
                        ApiError::new(
                            504,
                            format!("function {name} did not answer within {bound:?}"),
                        ),
                        "timeout".into(),
                    ))
                }
                Ok((200, out)) => {
                    return String::from_utf8(out).map_err(|_| {
                        (
                            ApiError::internal(format!(
                                "function {name} returned non-UTF-8 output"
                            )),
                            "bad_output".into(),
                        )
                    })
                }
                Ok((status, out)) => return Err(function_error(name, status, &out)),
                Err(CallFailure::NoSlot(t)) => {
                    return Err((
                        ApiError::new(
                            504,
                            format!(
                                "function {name}: timeout: no free slot within the call's timeout \
                                 ({t:?})"
                            ),
                        ),
                        "timeout".into(),
                    ))
                }
                Err(busy @ CallFailure::Busy { .. }) => {
                    return Err((
                        ApiError::new(429, format!("function {name}: {busy}; retry later")),
                        "busy".into(),
                    ))
                }
                Err(f) => f,
            };
            // A request that reached the function is never sent again: it may have run.
            let delivered = matches!(failure, CallFailure::Broken(_));
            if restarted {
                return Err((
                    ApiError::unavailable(format!(
                        "function {name} is not answering after a restart: {failure}"
                    )),
                    "unavailable".into(),
                ));
            }
            // Boxed, as the look-up above: a rare path that would make every call's future large.
            Box::pin(self.revive(name, handle, &failure))
                .await
                .map_err(|e| (e, "unavailable".to_string()))?;
            if delivered {
                return Err((
                    ApiError::unavailable(format!(
                        "function {name} failed during the call ({failure}); the call was \
                         not repeated"
                    )),
                    "unavailable".into(),
                ));
            }
            restarted = true;
        }
    }
}

/// A failed invocation as the REST API reports it: the status from the error code.
fn function_error(name: &str, status: u16, body: &[u8]) -> (ApiError, String) {
    match serde_json::from_slice::<InvokeError>(body) {
        Ok(e) => {
            let what = match e.code {
                ErrorCode::Trap => "trapped",
                ErrorCode::Exit => "exited non-zero",
                ErrorCode::Timeout => "timed out",
                ErrorCode::MemoryLimit => "hit its memory limit",
                ErrorCode::FuelExhausted => "ran out of fuel",
                ErrorCode::OutputTooLarge => "returned too much output",
                ErrorCode::BadArgs => "rejected its args",
                ErrorCode::BadOutput => "returned unreadable output",
                ErrorCode::Interrupted => "was interrupted",
                ErrorCode::Instantiate => "could not be instantiated",
                ErrorCode::NotLoaded => "is not loaded",
            };
            let kind = serde_json::to_value(e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (
                ApiError::new(
                    e.code.http_status(),
                    format!("function {name} {what}: {}", e.message),
                ),
                kind,
            )
        }
        Err(_) => (
            ApiError::new(
                if status >= 500 { status } else { 500 },
                format!(
                    "function {name} failed ({status}): {}",
                    String::from_utf8_lossy(body)
                ),
            ),
            "unknown".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_errors_keep_their_status() {
        let body = serde_json::to_vec(&InvokeError {
            code: ErrorCode::Timeout,
            message: "timeout 50 ms".into(),
        })
        .unwrap();
        let (e, kind) = function_error("f", 504, &body);
        assert_eq!(e.status, 504);
        assert_eq!(kind, "timeout");
        assert!(e.message.contains("timed out"), "{}", e.message);
    }
}
