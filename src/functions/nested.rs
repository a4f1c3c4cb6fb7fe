//! Functions calling functions: the engine's side of the `wasmengine.call` import.
//!
//! A function's call to another arrives on the connection of its own call (a `102 Call`,
//! `wasmengine_api::invoke`), so the engine knows the caller without a token. It is checked
//! here: the callee must be in the caller's `calls` list (else 403 `call_refused`), the nesting
//! within `--max-call-depth` (else 508 `call_depth`: a cycle ends there, it does not hang),
//! and the caller's deadline not passed (else 504). Then it is an invoke like a REST one: the
//! same slots, restart, limits and metrics, with the caller's time left as a bound on the
//! callee's timeout. Its call id is the caller's with a sequence number appended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::invoker::Nested;

/// Where a call sits: its id, how deep it is, and the time its caller left it.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    pub id: &'a str,
    /// 0 for a REST invoke, n for a call made by a call of depth n - 1.
    pub depth: u32,
    /// `None` for a REST invoke (the function's own timeout bounds it).
    pub time_left: Option<Duration>,
}

/// The calls one running call of `caller` may make.
pub(super) struct Calls<'a> {
    functions: &'a Functions,
    caller: &'a str,
    allowed: &'a [String],
    call: Call<'a>,
    /// When the caller's call ends, as the engine counts it (`None`: too far to name).
    deadline: Option<Instant>,
    made: AtomicU32,
}

impl<'a> Calls<'a> {
    pub(super) fn new(
        functions: &'a Functions,
        caller: &'a str,
        allowed: &'a [String],
        call: Call<'a>,
        deadline: Option<Instant>,
    ) -> Calls<'a> {
        Calls {
            functions,
            caller,
            allowed,
            call,
            deadline,
            made: AtomicU32::new(0),
        }
    }

    async fn run(&self, callee: String, args: Vec<u8>) -> (u16, Vec<u8>) {
        let caller = self.caller;
        if !self.allowed.contains(&callee) {
            return answer(
                403,
                "call_refused",
                &format!(
                    "function {caller} may not call {callee}: its deploy's calls do not list it"
                ),
            );
        }
        let max = self.functions.defaults.max_call_depth;
        if self.call.depth >= max {
            return answer(
                508,
                "call_depth",
                &format!("call depth limit ({max}) reached: {caller} calling {callee}"),
            );
        }
        let first = args.iter().find(|b| !b.is_ascii_whitespace());
        if !matches!(first, Some(b'{' | b'['))
            || serde_json::from_slice::<&serde_json::value::RawValue>(&args).is_err()
        {
            return answer(
                400,
                "bad_args",
                &format!("{caller} called {callee} with args that are not a JSON object or array"),
            );
        }
        let left = self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return answer(
                504,
                "timeout",
                &format!("{caller}'s deadline passed before it called {callee}"),
            );
        }
        let n = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}.{n}", self.call.id);
        let call = Call {
            id: &id,
            depth: self.call.depth + 1,
            time_left: Some(left),
        };
        match self.functions.invoke_at(&callee, &args, call).await {
            Ok(result) => (200, result.into_bytes()),
            Err((e, kind)) => answer(e.status, &kind, &e.message),
        }
    }
}

impl Nested for Calls<'_> {
    fn call<'b>(
        &'b self,
        callee: String,
        args: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = (u16, Vec<u8>)> + Send + 'b>> {
        Box::pin(self.run(callee, args))
    }
}

/// An error answer to the calling function: `{"code", "message"}`.
fn answer(status: u16, code: &str, message: &str) -> (u16, Vec<u8>) {
    let body = json!({ "code": code, "message": message });
    (status, body.to_string().into_bytes())
}

/// The `calls` of a function's deploy, from its container's labels.
pub(super) fn calls_of(labels: &HashMap<String, String>) -> Vec<String> {
    labels
        .get(LABEL_CALLS)
        .map(|l| {
            l.split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
