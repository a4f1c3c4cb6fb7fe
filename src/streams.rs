//! The engine's end of streams (`wasmengine_api::invoke`, `HEADER_STREAM`): one connection to
//! a function's socket carries every call in flight to it, each request tagged with a stream
//! id that its answer (and each `102 Call` it makes) carries back.
//!
//! A writer task sends what callers queued since its last write in one write, and a reader
//! task hands each answer to the call waiting for it. Under load, one write and one read
//! then carry many calls, and the function server wakes once per batch instead of once per
//! call: on a small node the wake-ups, not the bytes, are what a call's hop costs.
//!
//! The function is untrusted: its answers' heads and bodies are read within bounds (a body
//! within its call's bound, or dropped unread into the void when no call waits for it),
//! never into a buffer sized by what it announces. A connection that breaks fails every call
//! in flight on it; a request that went out is never sent again.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use wasmengine_api::http1::{self, Head, HeadReader, Kind};
use wasmengine_api::invoke::{HEADER_CALLEE, HEADER_STREAM, STATUS_CALL};

/// Largest args of a function's call to another function.
pub const MAX_CALL_ARGS: usize = 16 << 20;
/// Largest answer dropped unread (for a call no longer waiting); a larger one ends the
/// connection.
const MAX_DROPPED: usize = 1 << 30;
/// Bytes gathered into one write at most (more waits for the next).
const MAX_BATCH: usize = 1 << 20;

/// What a call in flight hears from the function.
pub enum Message {
    /// The function calls another (`102 Call`).
    Call { callee: String, args: Vec<u8> },
    /// The call's final answer.
    Answer { status: u16, body: Vec<u8> },
    /// The answer could not be read, or the connection ended.
    Failed(io::Error),
}

struct Waiter {
    tx: mpsc::UnboundedSender<Message>,
    max_body: usize,
}

/// One connection and the calls in flight on it.
pub struct Conn {
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// By stream id: ids are the engine's own (a function's answer only looks one up), so a
    /// plain fast hash.
    pending: Mutex<FxHashMap<u64, Waiter>>,
    next: AtomicU64,
    /// Cleared when the connection ends or announced its end: no new call goes on it.
    open: AtomicBool,
}

/// A call's place on a connection: its messages, and its removal from the connection when
/// it ends (answered, failed, or dropped by its caller).
pub struct Stream {
    conn: Arc<Conn>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Conn {
    /// Starts the reader and writer tasks of `stream`.
    pub fn start(stream: UnixStream) -> Arc<Conn> {
        let (read, write) = stream.into_split();
        let (out, queued) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            out,
            pending: Mutex::new(FxHashMap::default()),
            next: AtomicU64::new(1),
            open: AtomicBool::new(true),
        });
        tokio::spawn(write_loop(write, queued, Arc::downgrade(&conn)));
        tokio::spawn(read_loop(read, Arc::downgrade(&conn)));
        conn
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Sends a request on a new stream: `headers` as in [`http1::request`]; its answer's body
    /// may be at most `max_body` bytes.
    pub fn open(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
        max_body: usize,
    ) -> io::Result<Stream> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap()
            .insert(id, Waiter { tx, max_body });
        let stream = Stream {
            conn: self.clone(),
            id,
            rx,
        };
        let mut request = http1::Message::request(method, path, headers.len() + body.len());
        request.header_number(HEADER_STREAM, id).lines(headers);
        stream.send(request.finish(body, false))?;
        Ok(stream)
    }

    /// Ends the connection for every call on it with `error`.
    fn fail(&self, error: &io::Error) {
        self.open.store(false, Ordering::Release);
        for (_, w) in self.pending.lock().unwrap().drain() {
            let _ = w.tx.send(Message::Failed(io::Error::new(
                error.kind(),
                error.to_string(),
            )));
        }
    }
}

impl Stream {
    /// The next message for this call; a closed connection is [`Message::Failed`].
    pub async fn next(&mut self) -> Message {
        self.rx.recv().await.unwrap_or_else(|| {
            Message::Failed(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "function closed the connection",
            ))
        })
    }

    /// Writes `request` (head and body whole) on the call's connection.
    pub fn send(&self, request: Vec<u8>) -> io::Result<()> {
        self.conn
            .out
            .send(request)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "function connection is closed"))
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

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
    conn: Weak<Conn>,
) {
    let mut batch = Vec::new();
    while let Some(first) = queued.recv().await {
        // Let the callers that are ready to run queue their requests too: one write for all.
        tokio::task::yield_now().await;
        let mut one = Some(first);
        while batch.len() < MAX_BATCH {
            let Ok(more) = queued.try_recv() else { break };
            if let Some(first) = one.take() {
                batch.extend_from_slice(&first);
            }
            batch.extend_from_slice(&more);
        }
        let result = match &one {
            Some(only) => write.write_all(only).await,
            None => write.write_all(&batch).await,
        };
        batch.clear();
        if let Err(e) = result {
            if let Some(conn) = conn.upgrade() {
                conn.fail(&e);
            }
            return;
        }
    }
    // Every sender is gone (the connection was dropped): the write half's drop ends it.
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
    let waiter = conn
        .pending
        .lock()
        .unwrap()
        .get(&id)
        .map(|w| (w.tx.clone(), w.max_body));
    if head.close {
        conn.open.store(false, Ordering::Release);
    }
    let max = if head.status == STATUS_CALL {
        MAX_CALL_ARGS
    } else {
        waiter.as_ref().map_or(MAX_DROPPED, |w| w.1)
    };
    let Some((tx, _)) = waiter.filter(|_| head.content_length <= max) else {
        // Nobody waits for it, or it is over its bound: tell the call, drop the body.
        http1::check_length(head.content_length, MAX_DROPPED)?;
        if let Some(w) = conn.pending.lock().unwrap().remove(&id) {
            let e = http1::check_length(head.content_length, max).unwrap_err();
            let _ = w.tx.send(Message::Failed(e));
        }
        let mut rest = (&mut *read).take(head.content_length as u64);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
        return Ok(true);
    };
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
    let _ = tx.send(message);
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
