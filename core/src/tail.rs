//! [`TailPipe`]: a WASI output stream that never refuses a write and keeps only its last
//! bytes. A command's stderr goes here: a module may log as much as it likes (a bounded buffer
//! that fills up would fail its writes and change its behaviour), and when it exits non-zero
//! the error carries the end of what it wrote, which is where the reason usually is.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Keeps the last `keep` bytes written; clones share the buffer.
#[derive(Debug, Clone)]
pub struct TailPipe {
    keep: usize,
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    pub fn new(keep: usize) -> TailPipe {
        TailPipe {
            keep,
            buffer: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// The last bytes written (at most `keep`).
    pub fn contents(&self) -> Vec<u8> {
        self.lock().iter().copied().collect()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.lock();
        let bytes = &bytes[bytes.len().saturating_sub(self.keep)..];
        let over = (buf.len() + bytes.len()).saturating_sub(self.keep);
        buf.drain(..over);
        buf.extend(bytes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u8>> {
        // A panic while holding the lock cannot leave the buffer inconsistent.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes() {
        let p = TailPipe::new(8);
        p.push(b"hello ");
        p.push(b"world");
        assert_eq!(p.contents(), b"lo world");
        p.push(b"0123456789abc");
        assert_eq!(p.contents(), b"56789abc");
    }
}
