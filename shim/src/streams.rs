//! Streams: many calls in flight on one connection (`wasmengine_api::invoke`,
//! `HEADER_STREAM`). The engine sends every request on a stream, so under load one read
//! brings many requests and one connection serves them all.
//!
//! The connection's reader (the thread `crate::server` gave the connection) parses requests
//! and queues them; workers take them from the queue, run them, and write each answer whole
//! under the connection's write lock, tagged with its stream id. The reader hands the engine's
//! answers to calls' calls (`PUT /answer`) to the worker waiting for them, so a worker blocked
//! on another function never stops the connection.
//!
//! Threads are what costs here: on a busy node a wake-up per call (a futex, a context switch,
//! often an IPI to the other core) costs more than the Wasm call. So a worker is woken only
//! when no worker is running; a running worker drains the queue on its own. Work that blocks
//! (a slow call, a WASI sleep, a call to another function) must not hold the rest up: while
//! jobs are queued the reader waits for input at most [`STALL`] at a time, and when no worker
//! took a job in that time another worker starts, up to the function's slots.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmengine_api::http1;
use wasmengine_api::invoke::{HEADER_CALLEE, HEADER_STREAM, PATH_ANSWER, STATUS_CALL};
use wasmengine_core::Callout;

use crate::link::EngineLink;
use crate::server::{Request, Service, Slots};

/// How long queued jobs may wait with no worker taking one before another worker starts.
pub const STALL: Duration = Duration::from_millis(1);

/// The write side of a connection, shared by its reader and its workers.
pub type Writer = Arc<Mutex<Box<dyn Write + Send>>>;

pub struct Streams {
    state: Mutex<State>,
    /// Idle workers wait here.
    work: Condvar,
    writer: Writer,
    service: Arc<dyn Service>,
    slots: Arc<Slots>,
    /// Whether calls may call other functions (the engine's socket: the answers come back on
    /// this connection).
    callouts: bool,
    max_workers: usize,
}

struct Job {
    id: u64,
    req: Request,
    arrived: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    workers: usize,
    idle: usize,
    /// Idle workers woken that have not taken up work yet.
    woken: usize,
    /// Jobs taken by workers so far: the queue's progress.
    taken: u64,
    /// `taken` when last looked at, and since when it has not moved.
    watched: (u64, Option<Instant>),
    closed: bool,
    /// Calls waiting for the engine's answer to their `102 Call`, by stream id.
    answers: HashMap<u64, mpsc::Sender<Request>>,
}

impl Streams {
    pub fn new(
        service: Arc<dyn Service>,
        slots: Arc<Slots>,
        writer: Writer,
        callouts: bool,
    ) -> Arc<Streams> {
        let max_workers = slots.capacity();
        Arc::new(Streams {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            writer,
            service,
            slots,
            callouts,
            max_workers,
        })
    }

    /// A request on stream `id`: the engine's answer to a call's call goes to the call
    /// waiting for it (dropped if none waits any more); anything else is queued. Nobody is
    /// woken yet: see [`Streams::flush`].
    pub fn submit(&self, id: u64, req: Request) {
        let mut st = self.state.lock().unwrap();
        if req.method == "PUT" && req.path == PATH_ANSWER {
            if let Some(waiting) = st.answers.remove(&id) {
                let _ = waiting.send(req);
            }
            return;
        }
        st.queue.push_back(Job {
            id,
            req,
            arrived: Instant::now(),
        });
    }

    /// The reader has read all it has: makes sure a worker runs if jobs are queued.
    pub fn flush(self: &Arc<Self>) {
        let mut st = self.state.lock().unwrap();
        if !st.queue.is_empty() && st.workers == st.idle {
            self.wake(&mut st);
        }
    }

    /// Waits until `fd` has input (or an error) while jobs are queued, starting another
    /// worker whenever the queue made no progress in [`STALL`]; returns at once with nothing
    /// queued.
    pub fn wait_readable(self: &Arc<Self>, fd: RawFd) {
        loop {
            {
                let mut st = self.state.lock().unwrap();
                if st.queue.is_empty() {
                    return;
                }
                let now = Instant::now();
                match st.watched {
                    (taken, Some(since)) if taken == st.taken => {
                        if now.duration_since(since) >= STALL {
                            self.wake(&mut st);
                            st.watched.1 = Some(now);
                        }
                    }
                    _ => st.watched = (st.taken, Some(now)),
                }
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let wait_ms = STALL.as_millis() as libc::c_int;
            // SAFETY: one valid pollfd, for the duration of the call.
            if unsafe { libc::poll(&mut pfd, 1, wait_ms) } != 0 {
                return;
            }
        }
    }

    /// The connection ended: workers finish what they run and leave; calls waiting for an
    /// answer from the engine get none.
    pub fn close(&self) {
        let mut st = self.state.lock().unwrap();
        st.closed = true;
        st.answers.clear();
        self.work.notify_all();
    }

    /// Wakes an idle worker, or starts one if the slots allow.
    fn wake(self: &Arc<Self>, st: &mut State) {
        if st.idle > st.woken {
            st.woken += 1;
            self.work.notify_one();
        } else if st.workers < self.max_workers {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name("fn-worker".into())
                .spawn(move || me.work());
            match started {
                Ok(_) => st.workers += 1,
                Err(e) => log::warn!("cannot start a worker: {e}"),
            }
        }
    }

    fn work(self: Arc<Self>) {
        loop {
            let job = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if let Some(job) = st.queue.pop_front() {
                        st.taken += 1;
                        break job;
                    }
                    if st.closed {
                        st.workers -= 1;
                        return;
                    }
                    st.idle += 1;
                    st = self.work.wait(st).unwrap();
                    st.idle -= 1;
                    st.woken = st.woken.saturating_sub(1);
                }
            };
            self.run(job);
        }
    }

    fn run(self: &Arc<Self>, job: Job) {
        let Job {
            id,
            mut req,
            arrived,
        } = job;
        req.queued = arrived.elapsed();
        let link = self
            .callouts
            .then(|| Arc::new(EngineLink::on_stream(id, self.clone())) as Arc<dyn Callout>);
        let (status, content_type, body) = self.service.respond(&req, &self.slots, link);
        let head = format!("{HEADER_STREAM}: {id}\r\ncontent-type: {content_type}\r\n");
        let answer = http1::response(status, &head, &body, false);
        // A failed write means the engine is gone: the reader sees the end too.
        let _ = self.writer.lock().unwrap().write_all(&answer);
    }

    /// A call's call to `callee` from stream `id`: writes the `102 Call` and waits at most
    /// `wait` for the engine's answer.
    pub fn call_out(
        &self,
        id: u64,
        callee: &str,
        args: &[u8],
        wait: Option<Duration>,
    ) -> io::Result<(u16, Vec<u8>)> {
        let (tx, rx) = mpsc::channel();
        {
            let mut st = self.state.lock().unwrap();
            if st.closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the engine closed the connection",
                ));
            }
            st.answers.insert(id, tx);
        }
        let head = format!("{HEADER_STREAM}: {id}\r\n{HEADER_CALLEE}: {callee}\r\n");
        let call = http1::response(STATUS_CALL, &head, args, false);
        if let Err(e) = self.writer.lock().unwrap().write_all(&call) {
            self.state.lock().unwrap().answers.remove(&id);
            return Err(e);
        }
        let answer = match wait {
            Some(wait) => rx.recv_timeout(wait),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(req) => Ok((req.answer_status.unwrap_or(500), req.body)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.state.lock().unwrap().answers.remove(&id);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer within the deadline",
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine closed the connection",
            )),
        }
    }
}
