//! One connection of a function server, and the threads that serve it.
//!
//! Requests on streams (`wasmengine_api::invoke`, `HEADER_STREAM`: what the engine sends,
//! many in flight on one connection) are queued and answered whole, each tagged with its
//! stream id, under the connection's write lock, in whatever order they finish. A request
//! without a stream id is answered before anything else is read from the connection (plain
//! HTTP/1.1, as `curl --unix-socket` sends it).
//!
//! Threads are what costs here: on a busy node a wake-up per call (a futex, a context switch,
//! often an interrupt to the other core) costs more than the Wasm call. So the connection is
//! served leader/follower style: a thread reads what has arrived, then runs the calls it
//! read itself, one after the other, and reads again; meanwhile new requests gather in the
//! socket and come in the next read. No thread is woken per call.
//!
//! Work that blocks (a slow call, a WASI sleep) must not hold the rest up. A watchdog on the
//! runtime's epoch tick ([`wasmengine_core::runtime::on_tick`], every few milliseconds while
//! a job runs: each holds [`wasmengine_core::ticker::busy`]) starts
//! or wakes another thread when the queue made no progress in a tick, or when calls run and
//! nothing read the connection for a tick: that thread takes up the reading and the queue.
//! A call waiting for the engine's answer to its call to another function wakes a reader at
//! once (the answer comes on this connection). At most the function's slots of calls run at
//! once, and one thread more, so someone can always read.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Write};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmengine_api::http1;
use wasmengine_api::invoke::{HEADER_CALLEE, HEADER_STREAM, PATH_ANSWER, STATUS_CALL};
use wasmengine_core::Callout;

use crate::busy_poll::{self, Socket};
use crate::link::EngineLink;
use crate::server::{read_request, Request, Service, Slots};

pub struct Streams {
    state: Mutex<State>,
    /// Idle threads wait here.
    work: Condvar,
    /// The read side: held by the one thread reading.
    reader: Mutex<Reader>,
    writer: Mutex<Box<dyn Write + Send>>,
    /// The connection's own link (unix sockets only): calls' calls to other functions, for
    /// requests without a stream id; stream requests get one of their own.
    link: Option<Arc<EngineLink>>,
    service: Arc<dyn Service>,
    slots: Arc<Slots>,
    max_running: usize,
}

struct Reader {
    input: BufReader<Box<dyn Socket>>,
    /// How long to look for input before sleeping.
    window: busy_poll::Window,
    /// Requests the last read found: more than one means the engine sends batches, and
    /// a wake-up is shared by many calls anyway.
    last_batch: usize,
}

struct Job {
    id: u64,
    req: Request,
    arrived: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads serving the connection, and how many of them wait for work.
    threads: usize,
    idle: usize,
    /// Idle threads woken that have not taken up work yet.
    woken: usize,
    /// Calls running.
    running: usize,
    /// Whether a thread is reading (or waiting for input).
    reading: bool,
    closed: bool,
    /// Progress: jobs taken and reads done, and both as the watchdog last saw them.
    taken: u64,
    reads: u64,
    watched: (u64, u64),
    /// Calls waiting for the engine's answer to their `102 Call`, by stream id.
    answers: HashMap<u64, mpsc::Sender<Request>>,
}

enum Next {
    Run(Job),
    Read,
    Leave,
}

impl Streams {
    pub fn new(
        reader: Box<dyn Socket>,
        writer: Box<dyn Write + Send>,
        link: Option<Arc<EngineLink>>,
        service: Arc<dyn Service>,
        slots: Arc<Slots>,
        busy_poll: Duration,
    ) -> Arc<Streams> {
        let max_running = slots.capacity();
        Arc::new(Streams {
            state: Mutex::new(State {
                threads: 1,
                ..State::default()
            }),
            work: Condvar::new(),
            reader: Mutex::new(Reader {
                input: BufReader::new(reader),
                window: busy_poll::Window::up_to(busy_poll),
                last_batch: 0,
            }),
            writer: Mutex::new(writer),
            link,
            service,
            slots,
            max_running,
        })
    }

    /// Serves the connection on the calling thread (counted in `threads`) until it ended and
    /// this thread has nothing left to do. The first error that ended it, if any.
    pub fn serve(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut result = Ok(());
        loop {
            let next = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if st.running < self.max_running {
                        if let Some(job) = st.queue.pop_front() {
                            st.running += 1;
                            st.taken += 1;
                            break Next::Run(job);
                        }
                    }
                    if st.closed {
                        st.threads -= 1;
                        break Next::Leave;
                    }
                    if !st.reading {
                        st.reading = true;
                        break Next::Read;
                    }
                    st.idle += 1;
                    st = self.work.wait(st).unwrap();
                    st.idle -= 1;
                    st.woken = st.woken.saturating_sub(1);
                }
            };
            match next {
                Next::Leave => return result,
                Next::Run(job) => {
                    self.run(job);
                    self.state.lock().unwrap().running -= 1;
                }
                Next::Read => {
                    let read = self.read();
                    let mut st = self.state.lock().unwrap();
                    st.reading = false;
                    st.reads += 1;
                    match read {
                        Ok(true) => {}
                        ended => {
                            if let Err(e) = ended {
                                result = Err(e);
                            }
                            st.closed = true;
                            st.answers.clear();
                            self.work.notify_all();
                        }
                    }
                }
            }
        }
    }

    /// Reads what has arrived (at least one request, waiting for it): stream requests are
    /// queued, answers to calls' calls handed over, plain requests answered at once. `false`
    /// when the connection ended.
    fn read(self: &Arc<Self>) -> anyhow::Result<bool> {
        let mut guard = self.reader.lock().unwrap();
        let reader = &mut *guard;
        if reader.input.buffer().is_empty() && reader.last_batch <= 1 {
            busy_poll::wait_for_input(reader.input.get_ref().as_raw_fd(), &mut reader.window);
        }
        reader.last_batch = 0;
        loop {
            let Some(req) = read_request(&mut reader.input, self.service.max_body())? else {
                return Ok(false);
            };
            reader.last_batch += 1;
            match req.stream {
                Some(id) => self.submit(id, req),
                None => {
                    if !self.answer_plain(req)? {
                        return Ok(false);
                    }
                }
            }
            if reader.input.buffer().is_empty() {
                return Ok(true);
            }
        }
    }

    /// A request on stream `id`: the engine's answer to a call's call goes to the call
    /// waiting for it (dropped if none waits any more); anything else is queued.
    fn submit(&self, id: u64, req: Request) {
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

    /// Answers a request without a stream id; `false` if the connection ends after it.
    fn answer_plain(&self, mut req: Request) -> anyhow::Result<bool> {
        let _ticking = wasmengine_core::ticker::busy();
        let callout = self.link.clone().map(|l| l as Arc<dyn Callout>);
        let (status, content_type, body) = self.service.respond(&req, &self.slots, callout);
        // A call to another function left an answer unread: nothing more on this connection.
        req.close |= self.link.as_ref().is_some_and(|l| l.is_broken());
        let head = format!("content-type: {content_type}\r\n");
        let answer = http1::response(status, &head, &body, req.close);
        self.writer.lock().unwrap().write_all(&answer)?;
        Ok(!req.close)
    }

    fn run(self: &Arc<Self>, job: Job) {
        // The watchdog must tick while any job runs, a call or not (a group's load compiles
        // on this thread, and the requests behind it wait for a second reader).
        let _ticking = wasmengine_core::ticker::busy();
        let Job {
            id,
            mut req,
            arrived,
        } = job;
        req.queued = arrived.elapsed();
        let link = self
            .link
            .is_some()
            .then(|| Arc::new(EngineLink::on_stream(id, self.clone())) as Arc<dyn Callout>);
        let (status, content_type, body) = self.service.respond(&req, &self.slots, link);
        let mut answer = http1::Message::response(status, body.len() + 64);
        answer
            .header_number(HEADER_STREAM, id)
            .header("content-type", content_type);
        let answer = answer.finish(&body, false);
        // A failed write means the engine is gone: the reader sees the end too.
        let _ = self.writer.lock().unwrap().write_all(&answer);
    }

    /// The watchdog, on each epoch tick: another thread when the queue made no progress
    /// since the last tick, or when calls run and nothing read since the last tick.
    pub fn tick(self: &Arc<Self>) {
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return;
        }
        let (taken, reads) = st.watched;
        let stuck_queue = !st.queue.is_empty() && st.taken == taken;
        let unread = !st.reading && st.running > 0 && st.reads == reads;
        st.watched = (st.taken, st.reads);
        if stuck_queue || unread {
            self.wake(&mut st);
        }
    }

    /// Whether the connection ended (the watchdog forgets it then).
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    /// Wakes an idle thread, or starts one if the bound allows.
    fn wake(self: &Arc<Self>, st: &mut State) {
        if st.idle > st.woken {
            st.woken += 1;
            self.work.notify_one();
        } else if st.threads <= self.max_running {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name("fn-conn".into())
                .spawn(move || {
                    if let Err(e) = me.serve() {
                        log::debug!("connection closed: {e:#}");
                    }
                });
            match started {
                Ok(_) => st.threads += 1,
                Err(e) => log::warn!("cannot start a thread: {e}"),
            }
        }
    }

    /// A call's call to `callee` from stream `id`: writes the `102 Call` and waits at most
    /// `wait` for the engine's answer.
    pub fn call_out(
        self: &Arc<Self>,
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
            // The answer comes on this connection: someone must read it.
            if !st.reading {
                self.wake(&mut st);
            }
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
