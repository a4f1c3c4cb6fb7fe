//! Calls from a function to another function: the `wasmengine.call` import.
//!
//! ```text
//! (import "wasmengine" "call"
//!   (func (param $name i32) (param $name_len i32)   ;; the callee's name (UTF-8)
//!         (param $args i32) (param $args_len i32)   ;; its args: a JSON array or object
//!         (param $out i32) (param $out_cap i32)     ;; where the answer goes, and its room
//!         (param $out_len i32)                      ;; an i32 set to the answer's full length
//!         (result i32)))                            ;; the answer's status: 200 or an error
//! ```
//!
//! On 200 the answer is the callee's result; otherwise a JSON object `{"code", "message"}`
//! (the same codes as a REST invoke's failures, plus `call_refused`, `call_depth` and
//! `unsupported`). An answer longer than `out_cap` is cut there, and `out_len` says how long
//! it was. A pointer outside the caller's memory traps.
//!
//! The core does not route the call: whoever calls the function passes a [`Callout`] (the
//! shim's link back to the engine) in [`CallOptions`]. The wait for the answer is bounded
//! by the calling function's deadline and ends at once on the runtime's interrupt checks
//! before and after; while it waits, the caller's instance does not run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker};

use crate::function::{CallState, InterruptHit, TimeoutHit};

pub const MODULE: &str = "wasmengine";
pub const NAME: &str = "call";
/// Longest args a function may pass to a callee.
pub const MAX_ARGS: usize = 16 << 20;
const MAX_NAME: usize = 128;

/// Routes a function's calls to other functions.
pub trait Callout: Send + Sync {
    /// Calls `callee` with `args` (JSON text), waiting at most `time_left` (`None`: no
    /// deadline). The answer's status and body.
    fn call(&self, callee: &str, args: &[u8], time_left: Option<Duration>) -> (u16, Vec<u8>);
}

/// What one call of a function may carry beyond its args.
#[derive(Clone, Default)]
pub struct CallOptions {
    /// A bound below the function's own timeout (its caller's time left).
    pub timeout: Option<Duration>,
    /// Where its calls to other functions go; without one they answer 501 `unsupported`.
    pub callout: Option<Arc<dyn Callout>>,
}

/// An error answer of the import, as the caller's code reads it.
pub fn error_answer(status: u16, code: &str, message: &str) -> (u16, Vec<u8>) {
    let body = serde_json::json!({ "code": code, "message": message });
    (status, body.to_string().into_bytes())
}

/// Adds `wasmengine.call` to a module linker.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> anyhow::Result<()> {
    linker.func_wrap(
        MODULE,
        NAME,
        |mut caller: Caller<'_, CallState>,
         name: i32,
         name_len: i32,
         args: i32,
         args_len: i32,
         out: i32,
         out_cap: i32,
         out_len: i32|
         -> wasmtime::Result<i32> {
            let memory = caller
                .get_export("memory")
                .and_then(|e| e.into_memory())
                .ok_or_else(|| wasmtime::Error::msg("wasmengine.call needs an exported memory"))?;
            let span = |ptr: i32, len: i32, max: usize, what: &str| {
                let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
                if len > max {
                    return Err(wasmtime::Error::msg(format!(
                        "wasmengine.call: {what} is {len} bytes, over {max}"
                    )));
                }
                Ok(ptr..ptr + len)
            };
            let read = |caller: &Caller<'_, CallState>, range: std::ops::Range<usize>| {
                memory
                    .data(caller)
                    .get(range)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| wasmtime::Error::msg("wasmengine.call: span outside memory"))
            };
            let callee = read(
                &caller,
                span(name, name_len, MAX_NAME, "the callee's name")?,
            )?;
            let args = read(&caller, span(args, args_len, MAX_ARGS, "the args")?)?;
            let out_range = span(out, out_cap, usize::MAX, "the answer's room")?;
            let len_at = out_len as u32 as usize;
            if memory.data(&caller).get(len_at..len_at + 4).is_none()
                || memory.data(&caller).get(out_range.clone()).is_none()
            {
                return Err(wasmtime::Error::msg(
                    "wasmengine.call: answer span outside memory",
                ));
            }
            let (status, body) = {
                let state = caller.data();
                let guard = state.guard();
                if guard.is_interrupted() {
                    return Err(InterruptHit.into());
                }
                let time_left = guard
                    .deadline
                    .map(|d| d.saturating_duration_since(Instant::now()));
                if time_left == Some(Duration::ZERO) {
                    return Err(TimeoutHit.into());
                }
                match (std::str::from_utf8(&callee), state.callout()) {
                    (Err(_), _) => error_answer(400, "bad_args", "the callee's name is not UTF-8"),
                    (Ok(_), None) => error_answer(
                        501,
                        "unsupported",
                        "calls to other functions need the engine (this function runs without one)",
                    ),
                    (Ok(callee), Some(callout)) => callout.call(callee, &args, time_left),
                }
            };
            let guard = caller.data().guard();
            if guard.is_interrupted() {
                return Err(InterruptHit.into());
            }
            if guard.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TimeoutHit.into());
            }
            let data = memory.data_mut(&mut caller);
            let n = body.len().min(out_range.len());
            data[out_range.start..out_range.start + n].copy_from_slice(&body[..n]);
            let full = i32::try_from(body.len()).unwrap_or(i32::MAX);
            data[len_at..len_at + 4].copy_from_slice(&full.to_le_bytes());
            Ok(status as i32)
        },
    )?;
    Ok(())
}
