//! The engine side of the invocation protocol (`wasmengine_api::invoke`): HTTP/1.1 over a
//! function's unix socket, every call on a stream of one kept-alive connection
//! (`crate::streams`).
//!
//! The function on the other end is untrusted: its answer's head and body are read within
//! bounds (the body within the function's output cap plus room for an error), never into a
//! buffer sized by what it announces. A call is delivered at most once: a connection is
//! checked before a request goes out on it, and a request that went out is never sent again.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use wasmengine_api::http1;
use wasmengine_api::invoke::{
    ErrorCode, InvokeError, HEADER_CALL_ID, HEADER_STATUS, HEADER_TIME_LEFT, PATH_ANSWER,
    PATH_INVOKE, PATH_READY,
};

use crate::streams::{self, Conn, Message};

/// Room in an answer beyond the result cap: an error's JSON, a command's stderr tail.
pub const ANSWER_MARGIN: usize = 64 << 10;

/// Runs the calls a function makes to other functions (`102 Call`) during one of its calls.
pub trait Nested: Sync {
    /// The answer to a call of `callee` with `args`: status and body.
    fn call<'a>(
        &'a self,
        callee: String,
        args: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = (u16, Vec<u8>)> + Send + 'a>>;
}

/// What a call carries beyond its args.
#[derive(Default, Clone, Copy)]
pub struct CallContext<'a> {
    /// Names the call in the function's log ([`HEADER_CALL_ID`]); empty: unnamed.
    pub call_id: &'a str,
    /// A bound below the function's own timeout (its caller's time left).
    pub time_left: Option<Duration>,
    /// Where the function's calls to other functions go (none: refused).
    pub nested: Option<&'a dyn Nested>,
    /// When the engine stops waiting for the answer ([`CallFailure::TimedOut`]), up to
    /// [`streams::SWEEP`] later: the bound on a function that stopped answering.
    pub deadline: Option<Instant>,
}

/// The connection to one socket, shared by every function served behind it (one function's,
/// or a group's): every call to them is a stream on it.
pub struct Pool {
    socket: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Pool {
    pub fn new(socket: &Path) -> Arc<Pool> {
        Arc::new(Pool {
            socket: socket.to_path_buf(),
            conn: Mutex::new(None),
        })
    }

    /// Lets the connection go (after the task behind it was replaced): calls still on it
    /// finish there, new ones open a new one.
    pub fn reset(&self) {
        self.conn.lock().unwrap().take();
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, CallFailure> {
        if let Some(conn) = self.conn.lock().unwrap().as_ref().filter(|c| c.is_open()) {
            return Ok(conn.clone());
        }
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(CallFailure::NotListening)?;
        let mut slot = self.conn.lock().unwrap();
        match slot.as_ref().filter(|c| c.is_open()) {
            // Another call connected meanwhile: use its connection (ours is dropped).
            Some(conn) => Ok(conn.clone()),
            None => Ok(slot.insert(Conn::start(stream)).clone()),
        }
    }
}

pub struct Invoker {
    pool: Arc<Pool>,
    /// Where calls go: `/invoke`, or `/invoke/NAME` in a group.
    path: String,
    /// Largest answer body accepted.
    max_body: usize,
    /// One permit per call the function runs at once: no more requests are in flight to it
    /// than it has slots, so its server never parks a thread per waiting caller.
    slots: Semaphore,
    /// Calls waiting for a slot, and how many may wait before a call is turned away.
    waiting: AtomicUsize,
    max_waiting: usize,
    concurrency: usize,
}

/// Calls that may wait for a slot, per slot of the function.
const WAITING_PER_SLOT: usize = 8;

/// Why a call did not get an answer.
#[derive(Debug)]
pub enum CallFailure {
    /// Nothing listens on the socket (the task is not running, or not ready yet).
    NotListening(io::Error),
    /// The group behind the socket does not hold the function: nothing ran.
    NotLoaded,
    /// Every slot is taken and the queue for them is full: the call was not sent.
    Busy { running: usize, waiting: usize },
    /// No slot came free within the call's own timeout: the call was not sent.
    NoSlot(Duration),
    /// The connection broke or the answer was malformed.
    Broken(io::Error),
    /// No answer by the call's deadline ([`CallContext::deadline`]).
    TimedOut,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::NotListening(e) => write!(f, "function socket not answering: {e}"),
            CallFailure::NotLoaded => write!(f, "function not loaded in its group"),
            CallFailure::Broken(e) => write!(f, "function connection failed: {e}"),
            CallFailure::NoSlot(t) => write!(f, "no free slot within the call's timeout ({t:?})"),
            CallFailure::TimedOut => write!(f, "no answer by the call's deadline"),
            CallFailure::Busy { running, waiting } => write!(
                f,
                "function is busy: {running} calls running and {waiting} waiting"
            ),
        }
    }
}

impl Invoker {
    /// An invoker for the function at `socket` whose results are at most `max_output`
    /// bytes, and which runs `concurrency` calls at once.
    pub fn new(socket: &Path, max_output: usize, concurrency: usize) -> Invoker {
        Invoker::in_pool(Pool::new(socket), PATH_INVOKE, max_output, concurrency)
    }

    /// An invoker whose calls go to `path` over the connections of `pool`.
    pub fn in_pool(pool: Arc<Pool>, path: &str, max_output: usize, concurrency: usize) -> Invoker {
        let concurrency = concurrency.max(1);
        Invoker {
            pool,
            path: path.to_string(),
            max_body: max_output.saturating_add(ANSWER_MARGIN),
            slots: Semaphore::new(concurrency),
            waiting: AtomicUsize::new(0),
            max_waiting: concurrency * WAITING_PER_SLOT,
            concurrency,
        }
    }

    /// Every slot, if no call is running or waiting: while held, new calls wait for a slot
    /// (as when the function is full) and none is sent.
    pub fn hold_all(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            return None;
        }
        self.slots.try_acquire_many(self.concurrency as u32).ok()
    }

    pub fn socket(&self) -> &Path {
        &self.pool.socket
    }

    /// Drops the idle connections (after the task behind them was replaced).
    pub fn reset(&self) {
        self.pool.reset();
    }

    /// `POST /invoke` with `args`: the status and body of the answer. Waits at most
    /// `patience` (the call's timeout: waiting counts against it) for a free slot; with the
    /// queue full, answers [`CallFailure::Busy`] at once.
    pub async fn invoke(
        &self,
        args: &[u8],
        patience: Duration,
    ) -> Result<(u16, Vec<u8>), CallFailure> {
        self.invoke_as(args, patience, "").await
    }

    /// [`Invoker::invoke`] of the call named `call_id` (sent in
    /// [`HEADER_CALL_ID`]: the function's log lines of the call carry it).
    pub async fn invoke_as(
        &self,
        args: &[u8],
        patience: Duration,
        call_id: &str,
    ) -> Result<(u16, Vec<u8>), CallFailure> {
        let cx = CallContext {
            call_id,
            ..CallContext::default()
        };
        self.invoke_in(args, patience, cx).await
    }

    /// [`Invoker::invoke`] with everything a call may carry ([`CallContext`]).
    pub async fn invoke_in(
        &self,
        args: &[u8],
        patience: Duration,
        cx: CallContext<'_>,
    ) -> Result<(u16, Vec<u8>), CallFailure> {
        let _permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
                struct Waiting<'a>(&'a AtomicUsize);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                let _waiting = Waiting(&self.waiting);
                if waiting >= self.max_waiting {
                    return Err(CallFailure::Busy {
                        running: self.max_waiting / WAITING_PER_SLOT,
                        waiting,
                    });
                }
                match tokio::time::timeout(patience, self.slots.acquire()).await {
                    Ok(permit) => permit.expect("the semaphore is never closed"),
                    Err(_) => return Err(CallFailure::NoSlot(patience)),
                }
            }
        };
        let mut header = String::with_capacity(64);
        if !cx.call_id.is_empty() {
            header.push_str(HEADER_CALL_ID);
            header.push_str(": ");
            header.push_str(cx.call_id);
            header.push_str("\r\n");
        }
        if let Some(left) = cx.time_left {
            header += &format!("{HEADER_TIME_LEFT}: {}\r\n", left.as_millis());
        }
        let (status, body) = self
            .request("POST", &self.path, &header, args, cx.nested, cx.deadline)
            .await?;
        if status == 404 && is_not_loaded(&body) {
            return Err(CallFailure::NotLoaded);
        }
        Ok((status, body))
    }

    /// One request outside the call slots (a group's load or unload).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), CallFailure> {
        self.request(method, path, "", body, None, None).await
    }

    /// Whether the function answers `GET /ready` (on a fresh connection).
    pub async fn ready(&self) -> bool {
        match UnixStream::connect(&self.pool.socket).await {
            Ok(s) => {
                let mut conn = BufReader::new(s);
                let asked = async {
                    let ask = http1::request("GET", PATH_READY, "", b"", true);
                    conn.get_mut().write_all(&ask).await?;
                    let head = streams::read_head(&mut conn).await?;
                    streams::read_body(&mut conn, head.content_length, 64).await?;
                    std::io::Result::Ok(head.status)
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), asked).await,
                    Ok(Ok(200))
                )
            }
            Err(_) => false,
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
        nested: Option<&dyn Nested>,
        deadline: Option<Instant>,
    ) -> Result<(u16, Vec<u8>), CallFailure> {
        let conn = self.pool.connection().await?;
        // From here on the request may have reached the function: a failure is final.
        let mut stream = conn
            .open(method, path, headers, body, self.max_body, deadline)
            .map_err(CallFailure::Broken)?;
        loop {
            match stream.next().await {
                Message::Answer { status, body } => return Ok((status, body)),
                Message::Failed(e) => return Err(CallFailure::Broken(e)),
                Message::Expired => return Err(CallFailure::TimedOut),
                Message::Call { callee, args } => {
                    let (status, answer) = match nested {
                        Some(n) => n.call(callee, args).await,
                        None => (
                            501,
                            serde_json::json!({"code": "unsupported",
                                "message": "calls to other functions are not available here"})
                            .to_string()
                            .into_bytes(),
                        ),
                    };
                    let head = format!("{}{HEADER_STATUS}: {status}\r\n", stream.header());
                    stream
                        .send(http1::request("PUT", PATH_ANSWER, &head, &answer, false))
                        .map_err(CallFailure::Broken)?;
                }
            }
        }
    }
}

fn is_not_loaded(body: &[u8]) -> bool {
    serde_json::from_slice::<InvokeError>(body).is_ok_and(|e| e.code == ErrorCode::NotLoaded)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    /// What the fake function does with its n-th request (from 0).
    enum Answer {
        /// Writes these bytes and keeps the connection.
        Keep(Vec<u8>),
        /// Writes these bytes, then closes the connection without saying so.
        ThenClose(Vec<u8>),
        /// Closes the connection without an answer (it died mid-call).
        Drop,
        /// Never answers (a call that runs long).
        Hang,
        /// Answers after a while (reading nothing meanwhile).
        Late(Duration, Vec<u8>),
    }

    /// A function server that reads each request head and answers as `answer` says. Counts
    /// the requests it read.
    fn fake(
        dir: &Path,
        answer: impl Fn(usize) -> Answer + Send + Sync + 'static,
    ) -> (PathBuf, Arc<AtomicUsize>) {
        let socket = dir.join("fn.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let (seen, answer) = (count.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (seen, answer) = (seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut conn = BufReader::new(conn);
                    loop {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            if conn.read_until(b'\n', &mut head).await.unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        let stream = String::from_utf8_lossy(&head)
                            .lines()
                            .find_map(|l| l.strip_prefix("x-wasmengine-stream: "))
                            .map(|id| format!("x-wasmengine-stream: {id}\r\n"))
                            .unwrap_or_default();
                        // The answer as given, its stream id after the status line.
                        let tagged = |b: Vec<u8>| match b.windows(2).position(|w| w == b"\r\n") {
                            Some(at) => [&b[..at + 2], stream.as_bytes(), &b[at + 2..]].concat(),
                            None => b,
                        };
                        match answer(seen.fetch_add(1, Ordering::SeqCst)) {
                            Answer::Keep(b) => conn.get_mut().write_all(&tagged(b)).await.unwrap(),
                            Answer::ThenClose(b) => {
                                conn.get_mut().write_all(&tagged(b)).await.unwrap();
                                return;
                            }
                            Answer::Drop => return,
                            // Others on the connection go on meanwhile (streams).
                            Answer::Hang => {}
                            Answer::Late(after, b) => {
                                tokio::time::sleep(after).await;
                                conn.get_mut().write_all(&tagged(b)).await.unwrap();
                            }
                        }
                    }
                });
            }
        });
        (socket, count)
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn an_announced_huge_body_is_refused_without_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _) = fake(dir.path(), |_| {
            Answer::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\nx".to_vec())
        });
        let inv = Invoker::new(&socket, 1024, 4);
        match inv.invoke(b"[]", LONG).await {
            Err(CallFailure::Broken(e)) => assert!(e.to_string().contains("bound"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_endless_head_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _) = fake(dir.path(), |_| {
            let mut b = b"HTTP/1.1 200 OK\r\nx-junk: ".to_vec();
            b.extend(std::iter::repeat_n(b'a', 1 << 20));
            Answer::Keep(b)
        });
        let inv = Invoker::new(&socket, 1024, 4);
        match inv.invoke(b"[]", LONG).await {
            Err(CallFailure::Broken(e)) => assert!(e.to_string().contains("head over"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_that_reached_the_function_is_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, count) = fake(dir.path(), |n| {
            if n == 0 {
                Answer::Keep(ok("6"))
            } else {
                Answer::Drop
            }
        });
        let inv = Invoker::new(&socket, 1024, 4);
        assert_eq!(
            inv.invoke(b"[12,18]", LONG).await.unwrap(),
            (200, b"6".to_vec())
        );
        assert!(matches!(
            inv.invoke(b"[12,18]", LONG).await,
            Err(CallFailure::Broken(_))
        ));
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_function_closed_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, count) = fake(dir.path(), |n| Answer::ThenClose(ok(&n.to_string())));
        let inv = Invoker::new(&socket, 1024, 4);
        assert_eq!(inv.invoke(b"[]", LONG).await.unwrap().1, b"0");
        // Let the close arrive, then call again: a fresh connection, one request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(inv.invoke(b"[]", LONG).await.unwrap().1, b"1");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn calls_beyond_the_slots_wait_and_a_full_queue_is_turned_away() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, count) = fake(dir.path(), |_| Answer::Hang);
        let inv = Arc::new(Invoker::new(&socket, 1024, 2));
        // Two slots, sixteen places in the queue: eighteen calls are taken on.
        let mut calls = Vec::new();
        for _ in 0..18 {
            let inv = inv.clone();
            calls.push(tokio::spawn(async move { inv.invoke(b"[]", LONG).await }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Only as many requests reached the function as it has slots.
        assert_eq!(count.load(Ordering::SeqCst), 2);
        match inv.invoke(b"[]", LONG).await {
            Err(CallFailure::Busy { running, waiting }) => {
                assert_eq!((running, waiting), (2, 16))
            }
            other => panic!("{other:?}"),
        }
        // A waiting call that gives up (its deadline) leaves the queue.
        calls.pop().unwrap().abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let inv2 = inv.clone();
        let queued = tokio::spawn(async move { inv2.invoke(b"[]", LONG).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !queued.is_finished(),
            "a freed place in the queue is taken again"
        );
        for c in calls {
            c.abort();
        }
        queued.abort();
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_ends_and_its_late_answer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, count) = fake(dir.path(), |n| match n {
            0 => Answer::Late(Duration::from_millis(400), ok("late")),
            _ => Answer::Keep(ok("next")),
        });
        let inv = Invoker::new(&socket, 1024, 1);
        let start = std::time::Instant::now();
        let cx = CallContext {
            deadline: Some(start + Duration::from_millis(100)),
            ..CallContext::default()
        };
        assert!(matches!(
            inv.invoke_in(b"[]", LONG, cx).await,
            Err(CallFailure::TimedOut)
        ));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(350), "{took:?}");
        // Its slot is free again, and the next call on the connection gets its own answer.
        assert_eq!(inv.invoke(b"[]", LONG).await.unwrap().1, b"next");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_call_waits_for_a_slot_no_longer_than_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, count) = fake(dir.path(), |_| Answer::Hang);
        let inv = Arc::new(Invoker::new(&socket, 1024, 1));
        let inv2 = inv.clone();
        let running = tokio::spawn(async move { inv2.invoke(b"[]", LONG).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = std::time::Instant::now();
        let patience = Duration::from_millis(100);
        assert!(matches!(
            inv.invoke(b"[]", patience).await,
            Err(CallFailure::NoSlot(p)) if p == patience
        ));
        assert!(start.elapsed() >= patience);
        assert!(start.elapsed() < patience * 4, "{:?}", start.elapsed());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        running.abort();
    }
}
