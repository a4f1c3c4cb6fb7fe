//! A function's calls to other functions, sent back to the engine over the connection the
//! call came on (`wasmengine_api::invoke`: `102 Call`, answered by `PUT /answer`).
//!
//! A call that came without a stream id has its connection to itself while it runs: nothing
//! else is read from or written to it, so the link writes its `102` and reads the engine's
//! answer on the connection directly, and the server reads the next request only after the
//! call's final answer. A wait cut short by the caller's deadline leaves the engine's late
//! answer unread: the link is then broken and the server closes the connection after the call.
//!
//! A call on a stream (`crate::streams`) shares its connection: its `102` carries the stream
//! id, and the connection's reader hands the engine's answer to it. A late answer finds no
//! one waiting and is dropped, so nothing breaks.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmengine_api::http1;
use wasmengine_api::invoke::{HEADER_CALLEE, MAX_CALLEE_NAME, PATH_ANSWER, STATUS_CALL};
use wasmengine_core::callout::{error_answer, Callout};

use crate::server::{read_request, MAX_BODY};
use crate::streams::Streams;

/// Slack past the caller's deadline for the engine's answer (which the engine sends by then).
const ANSWER_SLACK: Duration = Duration::from_millis(500);

/// Where a call's `102 Call` goes and its answer comes from.
enum Route {
    /// The connection itself, the call's alone while it runs.
    Direct(UnixStream),
    /// Stream `id` of a connection that carries many.
    Stream { id: u64, streams: Arc<Streams> },
}

pub struct EngineLink {
    route: Route,
    broken: AtomicBool,
}

impl EngineLink {
    /// A link on the connection `stream` itself.
    pub fn new(stream: UnixStream) -> EngineLink {
        EngineLink {
            route: Route::Direct(stream),
            broken: AtomicBool::new(false),
        }
    }

    /// A link for the call on stream `id` of `streams`.
    pub(crate) fn on_stream(id: u64, streams: Arc<Streams>) -> EngineLink {
        EngineLink {
            route: Route::Stream { id, streams },
            broken: AtomicBool::new(false),
        }
    }

    /// Whether the connection is out of step (an answer may still arrive on it).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    fn exchange(
        &self,
        callee: &str,
        args: &[u8],
        time_left: Option<Duration>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let wait = time_left.map(|t| t + ANSWER_SLACK);
        let stream = match &self.route {
            Route::Stream { id, streams } => return streams.call_out(*id, callee, args, wait),
            Route::Direct(stream) => stream,
        };
        let callee = format!("{HEADER_CALLEE}: {callee}\r\n");
        (&*stream).write_all(&http1::response(STATUS_CALL, &callee, args, false))?;
        stream.set_read_timeout(wait)?;
        let answer = read_request(&mut BufReader::new(stream), MAX_BODY);
        stream.set_read_timeout(None)?;
        match answer {
            Ok(Some(req)) if req.method == "PUT" && req.path == PATH_ANSWER => {
                Ok((req.answer_status.unwrap_or(500), req.body))
            }
            Ok(_) => Err(std::io::Error::other("the engine did not answer the call")),
            Err(e) => {
                let kind = e
                    .downcast_ref::<std::io::Error>()
                    .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
                Err(std::io::Error::new(kind, format!("{e:#}")))
            }
        }
    }
}

impl Callout for EngineLink {
    fn call(&self, callee: &str, args: &[u8], time_left: Option<Duration>) -> (u16, Vec<u8>) {
        if self.is_broken() {
            return error_answer(503, "unavailable", "the link to the engine is broken");
        }
        let valid = !callee.is_empty()
            && callee.len() <= MAX_CALLEE_NAME
            && callee
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            return error_answer(
                400,
                "bad_args",
                &format!("{callee:?} is not a function name"),
            );
        }
        match self.exchange(callee, args, time_left) {
            Ok(answer) => answer,
            Err(e) => {
                // A late answer on a stream is dropped by the reader; on the connection
                // itself it would be read as the next request.
                if matches!(self.route, Route::Direct(_)) {
                    self.broken.store(true, Ordering::Relaxed);
                }
                let timed_out = matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
                if timed_out {
                    error_answer(
                        504,
                        "timeout",
                        "no answer from the callee within the deadline",
                    )
                } else {
                    error_answer(503, "unavailable", &format!("call to {callee} failed: {e}"))
                }
            }
        }
    }
}
