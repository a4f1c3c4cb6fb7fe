//! Function-server mode: answers invocations on a unix socket (the engine's) or a TCP address
//! (a Kubernetes pod's, behind a Service) until the task is killed.
//!
//! The protocol is `wasmengine_api::invoke` (HTTP/1.1, kept-alive connections). Each
//! connection gets a thread that reads it. A request without a stream id runs on that thread,
//! answered before the next is read; requests on streams (what the engine sends, many in
//! flight on one connection) go to the connection's workers (`crate::streams`). Each call
//! runs in a fresh instance, and at most `concurrency` calls run at once (the rest wait their
//! turn). Plain threads rather than an async runtime: synchronous WASI must not be called from
//! inside a tokio runtime, and a blocking socket costs nothing here.

use std::io::{BufRead, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmengine_api::http1::{self, Kind};
use wasmengine_api::invoke::{
    ErrorCode, InvokeError, HEADER_CALL_ID, HEADER_STATUS, HEADER_STREAM, HEADER_TIME_LEFT,
    PATH_INVOKE, PATH_LOGS, PATH_READY,
};
use wasmengine_core::{CallError, CallOptions, Callout, Function};

use crate::busy_poll::Socket;
use crate::link::EngineLink;
use crate::logs::Logs;
use crate::streams::Streams;

/// Largest request body the server reads.
pub const MAX_BODY: usize = 64 << 20;

/// Where a function server accepts connections.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    /// Binds a unix socket at `path`, replacing a stale one.
    pub fn unix(path: &Path) -> anyhow::Result<Listener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
        Ok(Listener::Unix(l))
    }

    /// Binds a TCP address (`host:port`).
    pub fn tcp(addr: &str) -> anyhow::Result<Listener> {
        let l = TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
        Ok(Listener::Tcp(l))
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "a unix socket".into()),
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp {a}"))
                .unwrap_or_else(|_| "tcp".into()),
        }
    }

    /// The next connection: a reader and a writer of one stream, its descriptor, and on the
    /// engine's socket the link its calls' calls to other functions go back on.
    fn accept(&self) -> std::io::Result<Connection> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                let link = Arc::new(EngineLink::new(s.try_clone()?));
                Ok(Connection {
                    reader: Box::new(s.try_clone()?),
                    writer: Box::new(s),
                    link: Some(link),
                })
            }
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                // Answers are written whole, in one write: no reason to wait for more.
                s.set_nodelay(true)?;
                let r: TcpStream = s.try_clone()?;
                Ok(Connection {
                    reader: Box::new(r),
                    writer: Box::new(s),
                    link: None,
                })
            }
        }
    }
}

struct Connection {
    reader: Box<dyn Socket>,
    writer: Box<dyn Write + Send>,
    link: Option<Arc<EngineLink>>,
}

/// What a server answers: one function, or a group of them (see `crate::group`).
pub trait Service: Send + Sync + 'static {
    /// For the log.
    fn describe(&self) -> String;
    /// The answer to one request: status, content type, body. A call's calls to other
    /// functions go to `link` (none: they are refused).
    fn respond(
        &self,
        req: &Request,
        slots: &Slots,
        link: Option<Arc<dyn Callout>>,
    ) -> (u16, &'static str, Vec<u8>);
    /// Largest request body read.
    fn max_body(&self) -> usize {
        MAX_BODY
    }
}

/// One function's server: `POST /invoke` calls it, `GET /logs` reads its log.
pub struct Single {
    pub function: Function,
    pub logs: Logs,
}

impl Service for Single {
    fn describe(&self) -> String {
        format!(
            "function {} ({})",
            self.function.name(),
            self.function.kind()
        )
    }

    fn respond(
        &self,
        req: &Request,
        slots: &Slots,
        link: Option<Arc<dyn Callout>>,
    ) -> (u16, &'static str, Vec<u8>) {
        let path = req.path.split('?').next().unwrap_or_default();
        match (req.method.as_str(), path) {
            ("GET", PATH_READY) => (200, "text/plain", b"ready".to_vec()),
            ("POST", PATH_INVOKE) => call(&self.function, req, slots, &self.logs, link),
            ("GET", PATH_LOGS) => self.logs.answer(&req.path),
            (_, PATH_READY | PATH_INVOKE | PATH_LOGS) => {
                (405, "text/plain", b"method not allowed".to_vec())
            }
            _ => (404, "text/plain", b"not found".to_vec()),
        }
    }
}

/// Serves on `listener` until the process ends; a connection's reader looks for its next
/// request for up to `busy_poll` before it sleeps (`crate::busy_poll`).
pub fn serve(
    service: Arc<dyn Service>,
    listener: Listener,
    concurrency: usize,
    busy_poll: Duration,
) -> anyhow::Result<()> {
    log::info!(
        "serving {} on {} with {concurrency} concurrent calls",
        service.describe(),
        listener.describe()
    );
    let slots = Arc::new(Slots::new(concurrency.max(1)));
    // The connections' watchdog runs on the epoch ticks (see `crate::streams`).
    let watched: Arc<Mutex<Vec<std::sync::Weak<Streams>>>> = Arc::default();
    let on_tick = watched.clone();
    wasmengine_core::runtime::on_tick(move || {
        on_tick.lock().unwrap().retain(|conn| match conn.upgrade() {
            Some(conn) if !conn.is_closed() => {
                conn.tick();
                true
            }
            _ => false,
        });
    });
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("accept: {e}");
                continue;
            }
        };
        let conn = Streams::new(
            conn.reader,
            conn.writer,
            conn.link,
            service.clone(),
            slots.clone(),
            busy_poll,
        );
        watched.lock().unwrap().push(Arc::downgrade(&conn));
        std::thread::Builder::new()
            .name("fn-conn".into())
            .spawn(move || {
                if let Err(e) = conn.serve() {
                    log::debug!("connection closed: {e:#}");
                }
            })
            .context("spawn connection thread")?;
    }
}

/// A counting semaphore: the bound on calls running at once.
pub struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
    capacity: usize,
}

struct SlotState {
    free: usize,
    /// Callers waiting for a slot: a release wakes one only if there is one (a condvar's
    /// notify is a syscall even with nobody waiting, and this runs on every call).
    waiting: usize,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            state: Mutex::new(SlotState {
                free: n,
                waiting: 0,
            }),
            freed: Condvar::new(),
            capacity: n,
        }
    }

    /// How many calls run at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs `f` in a free slot, waiting for one at most `patience`; `None` if none came free
    /// in time.
    fn run<T>(&self, patience: Duration, f: impl FnOnce() -> T) -> Option<T> {
        {
            let give_up = Instant::now().checked_add(patience);
            let mut st = self.state.lock().unwrap();
            while st.free == 0 {
                let left = give_up.map(|g| g.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    return None;
                }
                st.waiting += 1;
                st = match left {
                    Some(left) => self.freed.wait_timeout(st, left).unwrap().0,
                    None => self.freed.wait(st).unwrap(),
                };
                st.waiting -= 1;
            }
            st.free -= 1;
        }
        struct Release<'a>(&'a Slots);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut st = self.0.state.lock().unwrap();
                st.free += 1;
                if st.waiting > 0 {
                    self.0.freed.notify_one();
                }
            }
        }
        let _release = Release(self);
        Some(f())
    }
}

#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The engine's id for this call ([`HEADER_CALL_ID`]), empty if none.
    pub call_id: String,
    /// A bound below the function's timeout ([`HEADER_TIME_LEFT`]).
    pub time_left: Option<Duration>,
    /// The callee's status, in the engine's answer to a call ([`HEADER_STATUS`]).
    pub answer_status: Option<u16>,
    /// The stream the request is on ([`HEADER_STREAM`]); none: answered in order.
    pub stream: Option<u64>,
    /// How long the request waited for a worker (it counts against the call's timeout).
    pub queued: Duration,
    pub close: bool,
}

/// Calls `function` with the JSON args of `req`, in a free slot; what the call wrote to
/// stderr and its error, if it failed, go to `logs`.
pub fn call(
    function: &Function,
    req: &Request,
    slots: &Slots,
    logs: &Logs,
    link: Option<Arc<dyn Callout>>,
) -> (u16, &'static str, Vec<u8>) {
    // The call's timeout counts from its arrival: a call still waiting for a slot when it
    // runs out answers its timeout without running.
    let timeout = match req.time_left {
        Some(left) => left.min(function.limits().timeout),
        None => function.limits().timeout,
    };
    let opts = CallOptions {
        timeout: req.time_left,
        callout: link,
    };
    // The args go to the function as JSON text: a string-ABI export gets them unparsed.
    let (result, stderr) = slots
        .run(timeout.saturating_sub(req.queued), || {
            function.call_json(&req.body, &opts)
        })
        .unwrap_or((Err(CallError::Timeout(timeout)), Vec::new()));
    if !stderr.is_empty() {
        logs.push(&req.call_id, &String::from_utf8_lossy(&stderr));
    }
    match result {
        Ok(text) => (200, "text/plain; charset=utf-8", text.into_bytes()),
        Err(e) => {
            let code = ErrorCode::from_code(e.code()).unwrap_or(ErrorCode::Trap);
            log::info!("{}: {}", function.name(), e);
            logs.push(&req.call_id, &format!("error: {}: {e}", e.code()));
            error(code, e.to_string())
        }
    }
}

/// An error answer: the code's status, an [`InvokeError`] body.
pub fn error(code: ErrorCode, message: String) -> (u16, &'static str, Vec<u8>) {
    let body = InvokeError { code, message };
    (
        code.http_status(),
        "application/json",
        serde_json::to_vec(&body).expect("serialises"),
    )
}

/// Reads one request; `None` when the peer closed the connection between requests.
pub(crate) fn read_request(
    reader: &mut impl BufRead,
    max_body: usize,
) -> anyhow::Result<Option<Request>> {
    let Some(head) = http1::read_head(reader, Kind::Request)? else {
        return Ok(None);
    };
    let number = |name: &str| head.header(name).and_then(|v| v.parse::<u64>().ok());
    let call_id = head
        .header(HEADER_CALL_ID)
        .map(|id| id.chars().take(64).collect())
        .unwrap_or_default();
    let body = http1::read_body(reader, head.content_length, max_body)?;
    Ok(Some(Request {
        time_left: number(HEADER_TIME_LEFT).map(Duration::from_millis),
        answer_status: number(HEADER_STATUS).and_then(|s| u16::try_from(s).ok()),
        stream: number(HEADER_STREAM),
        queued: Duration::ZERO,
        close: head.close,
        method: head.method,
        path: head.path,
        body,
        call_id,
    }))
}

#[cfg(test)]
mod framing_props {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> (Vec<Request>, Option<String>) {
        let mut reader = std::io::BufReader::new(bytes);
        let mut got = Vec::new();
        loop {
            match read_request(&mut reader, MAX_BODY) {
                Ok(Some(r)) => got.push(r),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(format!("{e:#}"))),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any bytes a peer sends end in requests or an error, never a panic, and a body is
        /// never larger than the bytes that came.
        #[test]
        fn any_bytes_frame_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let (got, _) = parse_all(&bytes);
            let bodies: usize = got.iter().map(|r| r.body.len()).sum();
            prop_assert!(bodies <= bytes.len());
        }

        /// Pipelined requests with any bodies come out as they went in.
        #[test]
        fn requests_round_trip(
            reqs in prop::collection::vec(
                (prop_oneof![Just("GET"), Just("POST")], "/[a-z]{0,8}", prop::collection::vec(any::<u8>(), 0..300), any::<bool>()),
                1..5,
            ),
        ) {
            let mut wire = Vec::new();
            for (method, path, body, close) in &reqs {
                wire.extend_from_slice(format!(
                    "{method} {path} HTTP/1.1\r\nhost: fn\r\ncontent-length: {}\r\n{}\r\n",
                    body.len(),
                    if *close { "connection: close\r\n" } else { "" }
                ).as_bytes());
                wire.extend_from_slice(body);
            }
            let (got, err) = parse_all(&wire);
            prop_assert!(err.is_none(), "{:?}", err);
            let want: Vec<Request> = reqs.into_iter().map(|(m, p, body, close)| Request {
                method: m.to_string(), path: p, body, call_id: String::new(), time_left: None,
                answer_status: None, stream: None, queued: Duration::ZERO, close,
            }).collect();
            prop_assert_eq!(got, want);
        }

        /// A claimed length larger than what came is an error, not a wait or a big buffer.
        #[test]
        fn short_bodies_fail(claimed in 1usize..(64 << 20), sent in 0usize..64) {
            prop_assume!(sent < claimed);
            let mut wire = format!("POST /invoke HTTP/1.1\r\ncontent-length: {claimed}\r\n\r\n").into_bytes();
            wire.extend(std::iter::repeat_n(b'x', sent));
            let (got, err) = parse_all(&wire);
            prop_assert!(got.is_empty());
            prop_assert!(err.is_some());
        }
    }
}
