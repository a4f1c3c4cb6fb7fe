use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use containerd_shim::event::Event;
use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;
use log::warn;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageDyn;

pub trait EventSender: Clone + Send + Sync + 'static {
    fn send(&self, event: impl Event);
}

// WasmEngine patch: the release keeps one publisher (a ttrpc client to containerd) for the
// shim's whole life, and that client's reader thread polls its socket every 10 ms: an idle
// function's shim woke about 140 times a second for nothing. Events now go through a
// forwarding thread that keeps the connection only while events come (it closes after
// `KEEP_IDLE` without one and connects again for the next). `send` still returns only once
// containerd has the event (or it failed), as before, so events keep their order and none is
// lost when the shim exits right after sending one.
//
// WasmEngine patch, later: only the end of a task's life (`/tasks/exit`, `/tasks/delete`)
// waits for containerd to have it, and with it everything queued before it. The others
// (`/tasks/create`, `/tasks/start`, ...) are queued and the call goes on, as containerd's own
// runc shim forwards its events: waiting for containerd to take `/tasks/create` and
// `/tasks/start` cost each task's creation and start a round trip to containerd, 3-6 ms of
// a deploy on a small VM.
#[derive(Clone)]
pub struct RemoteEventSender {
    inner: Arc<Inner>,
}

struct Inner {
    forward: Mutex<mpsc::Sender<Forward>>,
}

/// An event for the forwarding thread, and where to say it is done.
struct Forward {
    topic: String,
    event: Box<dyn MessageDyn>,
    done: mpsc::SyncSender<()>,
}

/// How long the forwarding thread keeps its connection to containerd without an event.
const KEEP_IDLE: Duration = Duration::from_secs(1);
/// Longest wait for containerd to take one event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl RemoteEventSender {
    pub fn new(namespace: impl AsRef<str>, publisher: RemotePublisher) -> RemoteEventSender {
        let namespace = namespace.as_ref().to_string();
        // The address containerd gave the shim; without it the first publisher is all there is.
        let address = std::env::var("TTRPC_ADDRESS").ok().filter(|a| !a.is_empty());
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || forward_events(namespace, address, publisher, rx))
            .expect("spawn the event forwarding thread");
        RemoteEventSender {
            inner: Arc::new(Inner {
                forward: Mutex::new(tx),
            }),
        }
    }
}

/// Publishes each event that comes on `rx`, connecting when there is none to publish on.
fn forward_events(
    namespace: String,
    address: Option<String>,
    first: RemotePublisher,
    rx: mpsc::Receiver<Forward>,
) {
    let mut publisher = Some(first);
    loop {
        let next = match (&publisher, &address) {
            // Only a publisher that can be made again is closed when idle.
            (Some(_), Some(_)) => match rx.recv_timeout(KEEP_IDLE) {
                Ok(f) => f,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    publisher = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            _ => match rx.recv() {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        // A kept connection may have gone (containerd restarted): then one more try on a new
        // one. A new connection that fails is not tried again (the event may have arrived).
        let kept = publisher.is_some() && address.is_some();
        for attempt in 0..2 {
            if publisher.is_none() {
                publisher = address.as_ref().and_then(|a| match RemotePublisher::new(a) {
                    Ok(p) => Some(p),
                    Err(err) => {
                        warn!("failed to connect to containerd to publish events: {err}");
                        None
                    }
                });
            }
            let Some(p) = &publisher else { break };
            let event = next.event.clone_box();
            // Bounded: a publish that hangs would hold every later event, and the task
            // service's calls that send them.
            let ctx = ttrpc::context::with_timeout(PUBLISH_TIMEOUT.as_nanos() as i64);
            match p.publish(ctx, &next.topic, &namespace, event) {
                Ok(()) => break,
                Err(err) => {
                    warn!("failed to publish event, topic: {}: {}", &next.topic, err);
                    // Only a broken connection is worth another: containerd may have taken
                    // an event it then answered with an error status.
                    let broken = !matches!(
                        err,
                        containerd_shim::Error::Ttrpc(ttrpc::Error::RpcStatus(_))
                    );
                    if address.is_some() && broken {
                        publisher = None;
                    }
                    if !(kept && broken && attempt == 0) {
                        break;
                    }
                }
            }
        }
        let _ = next.done.send(());
    }
}

impl EventSender for RemoteEventSender {
    fn send(&self, event: impl Event) {
        let topic = event.topic();
        let end_of_life = matches!(topic.as_str(), "/tasks/exit" | "/tasks/delete");
        let (done, wait) = mpsc::sync_channel(1);
        let forward = Forward {
            topic,
            event: Box::new(event),
            done,
        };
        if self.inner.forward.lock().unwrap().send(forward).is_ok() && end_of_life {
            let _ = wait.recv();
        }
    }
}

pub(super) trait ToTimestamp {
    fn to_timestamp(self) -> Timestamp;
}

impl<Tz: TimeZone> ToTimestamp for DateTime<Tz> {
    fn to_timestamp(self) -> Timestamp {
        Timestamp {
            seconds: self.timestamp(),
            nanos: self.timestamp_subsec_nanos() as i32,
            ..Default::default()
        }
    }
}
