//! A function's calls to other functions, sent back to the engine over the connection the
//! call came on (`wasmengine_api::invoke`: `102 Call`, answered by `PUT /answer`).
//!
//! A connection carries one call at a time, so while a function runs, nothing else is read
//! from or written to its connection: the link writes its `102` and reads the engine's answer
//! on the same stream, and the server reads the next request only after the call's final
//! answer. A wait cut short by the caller's deadline leaves the engine's late answer unread:
//! the link is then broken and the server closes the connection after the call.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmengine_api::http1;
use wasmengine_api::invoke::{HEADER_CALLEE, MAX_CALLEE_NAME, PATH_ANSWER, STATUS_CALL};
use wasmengine_core::callout::{error_answer, Callout};

use crate::server::{read_request, MAX_BODY};

/// Slack past the caller's deadline for the engine's answer (which the engine sends by then).
const ANSWER_SLACK: Duration = Duration::from_millis(500);

pub struct EngineLink {
    stream: UnixStream,
    broken: AtomicBool,
}

impl EngineLink {
    pub fn new(stream: UnixStream) -> EngineLink {
        EngineLink {
            stream,
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
        let callee = format!("{HEADER_CALLEE}: {callee}\r\n");
        (&self.stream).write_all(&http1::response(STATUS_CALL, &callee, args, false))?;
        self.stream
            .set_read_timeout(time_left.map(|t| t + ANSWER_SLACK))?;
        let answer = read_request(&mut BufReader::new(&self.stream), MAX_BODY);
        self.stream.set_read_timeout(None)?;
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
                self.broken.store(true, Ordering::Relaxed);
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
