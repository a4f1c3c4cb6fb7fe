//! The engine's end of streams (`wasmengine_api::invoke`, `HEADER_STREAM`): one connection to
//! a function's socket carries every call in flight to it, each request tagged with a stream
//! id that its answer (and each `102 Call` it makes) carries back.
//!
//! Callers write their requests into the connection's outbox, and a writer task sends what
//! gathered there since its last write in one write; a reader task hands each answer to the
//! call waiting for it. Under load, one write and one read then carry many calls, and the
//! function server wakes once per batch instead of once per call: on a small node the
//! wake-ups, not the bytes, are what a call's hop costs. A call's place in the connection is
//! an entry of its pending map (its messages and its waker), so a call allocates no channel.
//!
//! A call may carry a deadline: a sweep task, awake only while calls are in flight, fails
//! the calls past theirs ([`Message::Expired`]) every [`SWEEP`]. It is the engine's bound on
//! a function that stopped answering (the function enforces its own timeout); one timer for
//! the connection instead of one per call.
//!
//! The function is untrusted: its answers' heads and bodies are read within bounds (a body
//! within its call's bound, or dropped unread into the void when no call waits for it),
//! never into a buffer sized by what it announces. A connection that breaks fails every call
//! in flight on it; a request that went out is never sent again.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::Notify;
use wasmengine_api::http1::{self, Head, HeadReader, Kind};
use wasmengine_api::invoke::{HEADER_CALLEE, HEADER_STREAM, STATUS_CALL};

/// Largest args of a function's call to another function.
pub const MAX_CALL_ARGS: usize = 16 << 20;
/// Largest answer dropped unread (for a call no longer waiting); a larger one ends the
/// connection.
const MAX_DROPPED: usize = 1 << 30;
/// A writer's buffer larger than this is not kept for the next batch.
const KEEP_BATCH: usize = 1 << 20;
/// A request this large that finds the outbox empty becomes the outbox (no copy).
const MOVE_ALONE: usize = 64 << 10;
/// How often calls in flight are checked against their deadlines: how late, at most, a call
/// past its deadline is failed.
pub const SWEEP: Duration = Duration::from_millis(50);

/// What a call in flight hears from the function.
pub enum Message {
    /// The function calls another (`102 Call`).
    Call { callee: String, args: Vec<u8> },
    /// The call's final answer.
    Answer { status: u16, body: Vec<u8> },
    /// The answer could not be read, or the connection ended.
    Failed(io::Error),
    /// The call's deadline passed with no answer.
    Expired,
}

/// A call in flight: what it has not taken yet, and who to wake when more comes.
struct Waiter {
    /// The next message (nearly always the only one), then any after it.
    first: Option<Message>,
    rest: VecDeque<Message>,
    waker: Option<Waker>,
    max_body: usize,
    deadline: Option<Instant>,
    /// Its last message is given (it failed, or its deadline passed): nothing more for it.
    done: bool,
}

impl Waiter {
    /// Queues `message`, the last one if `last`; the waker to wake.
    fn push(&mut self, message: Message, last: bool) -> Option<Waker> {
        if self.done {
            return None;
        }
        self.done = last;
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(message);
        } else {
            self.rest.push_back(message);
        }
        self.waker.take()
    }

    fn pop(&mut self) -> Option<Message> {
        self.first.take().or_else(|| self.rest.pop_front())
    }
}

/// Requests gathered for the writer's next write.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// Set when the writer stopped (a failed write, or the connection dropped).
    closed: bool,
}

/// One connection and the calls in flight on it.
pub struct Conn {
    outbox: Mutex<Outbox>,
    /// Wakes the writer when the outbox gets its first bytes (or closes).
    to_write: Arc<Notify>,
    /// By stream id: ids are the engine's own (a function's answer only looks one up), so a
    /// plain fast hash.
    pending: Mutex<FxHashMap<u64, Waiter>>,
    /// Wakes the sweep when a call with a deadline goes in flight (or the connection ends).
    to_sweep: Arc<Notify>,
    next: AtomicU64,
    /// Cleared when the connection ends or announced its end: no new call goes on it.
    open: AtomicBool,
}

/// A call's place on a connection: its messages, and its removal from the connection when
/// it ends (answered, failed, or dropped by its caller).
pub struct Stream {
    conn: Arc<Conn>,
    id: u64,
}

impl Conn {
    /// Starts the reader and writer tasks of `stream`.
    pub fn start(stream: UnixStream) -> Arc<Conn> {
        let (read, write) = stream.into_split();
        let conn = Arc::new(Conn {
            outbox: Mutex::default(),
            to_write: Arc::new(Notify::new()),
            pending: Mutex::new(FxHashMap::default()),
            to_sweep: Arc::new(Notify::new()),
            next: AtomicU64::new(1),
            open: AtomicBool::new(true),
        });
        let weak = Arc::downgrade(&conn);
        tokio::spawn(write_loop(write, weak.clone(), conn.to_write.clone()));
        tokio::spawn(read_loop(read, weak.clone()));
        tokio::spawn(sweep_loop(weak, conn.to_sweep.clone()));
        conn
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Sends a request on a new stream: `headers` as in [`http1::request`]; its answer's body
    /// may be at most `max_body` bytes. Past `deadline` the call gets [`Message::Expired`].
    pub fn open(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
        max_body: usize,
        deadline: Option<Instant>,
    ) -> io::Result<Stream> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let waiter = Waiter {
            first: None,
            rest: VecDeque::new(),
            waker: None,
            max_body,
            deadline,
            done: false,
        };
        self.pending.lock().unwrap().insert(id, waiter);
        // The sweep sleeps while nothing is in flight (a stored permit if it is not waiting).
        if deadline.is_some() {
            self.to_sweep.notify_one();
        }
        let stream = Stream {
            conn: self.clone(),
            id,
        };
        let mut request = http1::Message::request(method, path, headers.len() + body.len());
        request.header_number(HEADER_STREAM, id).lines(headers);
        stream.send(request.finish(body, false))?;
        Ok(stream)
    }

    /// Hands `message` to the call on stream `id`, if it still waits, as its last if `last`.
    fn deliver(&self, id: u64, message: Message, last: bool) {
        let waker = self
            .pending
            .lock()
            .unwrap()
            .get_mut(&id)
            .and_then(|w| w.push(message, last));
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the connection for every call on it with `error`.
    fn fail(&self, error: &io::Error) {
        self.open.store(false, Ordering::Release);
        let wakers: Vec<Waker> = self
            .pending
            .lock()
            .unwrap()
            .values_mut()
            .filter_map(|w| {
                let e = io::Error::new(error.kind(), error.to_string());
                w.push(Message::Failed(e), true)
            })
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Fails the calls whose deadline is not after `now`.
    fn expire(&self, now: Instant) {
        let wakers: Vec<Waker> = self
            .pending
            .lock()
            .unwrap()
            .values_mut()
            .filter(|w| w.deadline.is_some_and(|d| d <= now))
            .filter_map(|w| w.push(Message::Expired, true))
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer ends, and with it the write half: the function sees the end.
        self.outbox.lock().unwrap().closed = true;
        self.to_write.notify_one();
        self.to_sweep.notify_one();
    }
}

impl Stream {
    /// The next message for this call.
    pub async fn next(&mut self) -> Message {
        poll_fn(|cx| {
            let mut pending = self.conn.pending.lock().unwrap();
            // The entry lives as long as the stream (its drop removes it).
            let Some(w) = pending.get_mut(&self.id) else {
                return Poll::Ready(Message::Failed(io::Error::other(
                    "call not on its connection",
                )));
            };
            if let Some(m) = w.pop() {
                return Poll::Ready(m);
            }
            if w.done {
                // Its last message was taken already: asked again, the answer is the same.
                return Poll::Ready(Message::Failed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "function closed the connection",
                )));
            }
            match &mut w.waker {
                Some(old) if old.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `request` (head and body whole) on the call's connection.
    pub fn send(&self, request: Vec<u8>) -> io::Result<()> {
        let first = {
            let mut outbox = self.conn.outbox.lock().unwrap();
            if outbox.closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "function connection is closed",
                ));
            }
            let first = outbox.bytes.is_empty();
            if first && request.len() >= MOVE_ALONE {
                // A large request alone in the outbox is written as it is, not copied.
                outbox.bytes = request;
            } else {
                outbox.bytes.extend_from_slice(&request);
            }
            first
        };
        if first {
            self.conn.to_write.notify_one();
        }
        Ok(())
    }

    /// Headers naming this call's stream, for a request that belongs to it.
    pub fn header(&self) -> String {
        format!("{HEADER_STREAM}: {}\r\n", self.id)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.pending.lock().unwrap().remove(&self.id);
    }
}

async fn write_loop(mut write: OwnedWriteHalf, conn: Weak<Conn>, wake: Arc<Notify>) {
    let mut batch = Vec::new();
    loop {
        wake.notified().await;
        // Let the callers that are ready to run queue their requests too: one write for all.
        tokio::task::yield_now().await;
        {
            // Not held across the write: the connection's drop must be able to end this task.
            let Some(c) = conn.upgrade() else { return };
            let mut outbox = c.outbox.lock().unwrap();
            if outbox.closed {
                return;
            }
            std::mem::swap(&mut outbox.bytes, &mut batch);
        }
        if batch.is_empty() {
            continue;
        }
        let result = write.write_all(&batch).await;
        batch.clear();
        if batch.capacity() > KEEP_BATCH {
            batch = Vec::new();
        }
        if let Err(e) = result {
            if let Some(c) = conn.upgrade() {
                c.outbox.lock().unwrap().closed = true;
                c.fail(&e);
            }
            return;
        }
    }
}

/// Fails the calls past their deadline, every [`SWEEP`] while any is in flight; asleep
/// while none is.
async fn sweep_loop(conn: Weak<Conn>, wake: Arc<Notify>) {
    loop {
        let idle = match conn.upgrade() {
            Some(c) => c.pending.lock().unwrap().is_empty(),
            None => return,
        };
        if idle {
            wake.notified().await;
            continue;
        }
        tokio::time::sleep(SWEEP).await;
        let Some(c) = conn.upgrade() else { return };
        c.expire(Instant::now());
    }
}

async fn read_loop(read: OwnedReadHalf, conn: Weak<Conn>) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let error = loop {
        match read_message(&mut read, &conn).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => break e,
        }
    };
    if let Some(conn) = conn.upgrade() {
        conn.fail(&error);
    }
}

/// Reads one answer and hands it on; `false` once the connection is dropped.
async fn read_message(read: &mut BufReader<OwnedReadHalf>, conn: &Weak<Conn>) -> io::Result<bool> {
    let head = read_head(read).await?;
    let Some(conn) = conn.upgrade() else {
        return Ok(false);
    };
    let id = head
        .header(HEADER_STREAM)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "function answered without a stream id",
            )
        })?;
    let max_body = conn
        .pending
        .lock()
        .unwrap()
        .get(&id)
        .filter(|w| !w.done)
        .map(|w| w.max_body);
    if head.close {
        conn.open.store(false, Ordering::Release);
    }
    let max = if head.status == STATUS_CALL {
        MAX_CALL_ARGS
    } else {
        max_body.unwrap_or(MAX_DROPPED)
    };
    if max_body.is_none() || head.content_length > max {
        // Nobody waits for it, or it is over its bound: tell the call, drop the body.
        http1::check_length(head.content_length, MAX_DROPPED)?;
        if max_body.is_some() {
            let e = http1::check_length(head.content_length, max).unwrap_err();
            conn.deliver(id, Message::Failed(e), true);
        }
        let mut rest = (&mut *read).take(head.content_length as u64);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
        return Ok(true);
    }
    let body = read_body(read, head.content_length, max).await?;
    let message = if head.status == STATUS_CALL {
        Message::Call {
            callee: head.header(HEADER_CALLEE).unwrap_or_default().to_string(),
            args: body,
        }
    } else {
        Message::Answer {
            status: head.status,
            body,
        }
    };
    conn.deliver(id, message, false);
    Ok(true)
}

/// An answer's head, read within [`http1::MAX_HEAD`].
pub async fn read_head(conn: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Head> {
    let buffered = conn.fill_buf().await?;
    if let Some(length) = http1::whole_head(buffered) {
        let head = Head::parse(Kind::Response, &buffered[..length]);
        conn.consume(length);
        return head;
    }
    let mut head = HeadReader::default();
    loop {
        let room = head.room();
        let n = (&mut *conn)
            .take(room)
            .read_until(b'\n', head.buffer())
            .await?;
        if n == 0 && head.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "function closed the connection",
            ));
        }
        if head.line_read(n)? {
            return head.finish(Kind::Response);
        }
    }
}

/// A body of `length` bytes, refused when over `max_body` (never allocated up front).
pub async fn read_body(
    conn: &mut (impl AsyncBufRead + Unpin),
    length: usize,
    max_body: usize,
) -> io::Result<Vec<u8>> {
    http1::check_length(length, max_body)?;
    let mut body = Vec::with_capacity(length.min(64 << 10));
    (&mut *conn)
        .take(length as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "function closed the connection mid-answer",
        ));
    }
    Ok(body)
}
