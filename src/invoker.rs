//! The engine side of the invocation protocol (`wasmengine_api::invoke`): HTTP/1.1 over a
//! function's unix socket, with kept-alive connections reused across calls.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use wasmengine_api::invoke::{PATH_INVOKE, PATH_READY};

/// Idle connections kept per function (more callers than this open short-lived ones).
const MAX_IDLE: usize = 128;
const MAX_HEAD: usize = 16 << 10;

pub struct Invoker {
    socket: PathBuf,
    idle: Mutex<Vec<BufReader<UnixStream>>>,
}

/// Why a call did not get an answer.
#[derive(Debug)]
pub enum CallFailure {
    /// Nothing listens on the socket (the task is not running, or not ready yet).
    NotListening(io::Error),
    /// The connection broke or the answer was malformed.
    Broken(io::Error),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::NotListening(e) => write!(f, "function socket not answering: {e}"),
            CallFailure::Broken(e) => write!(f, "function connection failed: {e}"),
        }
    }
}

impl Invoker {
    pub fn new(socket: &Path) -> Invoker {
        Invoker {
            socket: socket.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Drops the idle connections (after the task behind them was replaced).
    pub fn reset(&self) {
        self.idle.lock().unwrap().clear();
    }

    /// `POST /invoke` with `args`: the status and body of the answer.
    pub async fn invoke(&self, args: &[u8]) -> Result<(u16, Vec<u8>), CallFailure> {
        self.request("POST", PATH_INVOKE, args).await
    }

    /// Whether the function answers `GET /ready` (on a fresh connection).
    pub async fn ready(&self) -> bool {
        match UnixStream::connect(&self.socket).await {
            Ok(s) => {
                let mut conn = BufReader::new(s);
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        exchange(&mut conn, "GET", PATH_READY, b"")
                    )
                    .await,
                    Ok(Ok((200, _, _)))
                )
            }
            Err(_) => false,
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), CallFailure> {
        // A reused connection may have been closed by the server since: one retry on a
        // fresh one, which is safe because nothing was answered on the stale one.
        let reused = self.idle.lock().unwrap().pop();
        if let Some(mut conn) = reused {
            if let Ok((status, body, keep)) = exchange(&mut conn, method, path, body).await {
                if keep {
                    self.put_back(conn);
                }
                return Ok((status, body));
            }
        }
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(CallFailure::NotListening)?;
        let mut conn = BufReader::new(stream);
        let (status, body, keep) = exchange(&mut conn, method, path, body)
            .await
            .map_err(CallFailure::Broken)?;
        if keep {
            self.put_back(conn);
        }
        Ok((status, body))
    }

    fn put_back(&self, conn: BufReader<UnixStream>) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// One request/response on `conn`: status, body, and whether the connection stays open.
async fn exchange(
    conn: &mut BufReader<UnixStream>,
    method: &str,
    path: &str,
    body: &[u8],
) -> io::Result<(u16, Vec<u8>, bool)> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: function\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    conn.get_mut().write_all(&out).await?;

    let mut head = Vec::with_capacity(256);
    loop {
        let n = conn.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "function closed the connection",
            ));
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("response head too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let status = resp.code.unwrap_or(0);
    let mut length = 0usize;
    let mut keep = true;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok((status, body, keep))
}
