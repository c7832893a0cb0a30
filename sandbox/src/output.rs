//! The guest's stdout and stderr: kept in memory up to a cap per call, the rest dropped and
//! counted. wasmtime-wasi's `MemoryOutputPipe` traps when full (killing the interpreter) and
//! cannot be drained between calls; this stream does neither.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much of a live stderr is also kept: the end of a program's error (its traceback's last
/// lines), for the caller to explain it.
pub(crate) const LIVE_STDERR_TAIL: usize = 4096;

/// Which host stream a live capture writes through to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Live {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Buffer {
    data: Vec<u8>,
    cap: usize,
    dropped: u64,
    live: Option<Live>,
}

/// One output stream of one interpreter. Clones share the buffer.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Buffer>>,
}

impl Capture {
    pub(crate) fn new(live: Option<Live>) -> Self {
        let capture = Self::default();
        capture.lock().live = live;
        capture
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A poisoned lock only means a panic elsewhere mid-write; the bytes are still usable.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Empties the buffer and sets the cap for the next call.
    pub(crate) fn start(&self, cap: usize) {
        let mut buffer = self.lock();
        buffer.data = Vec::new();
        buffer.cap = cap;
        buffer.dropped = 0;
    }

    /// The bytes kept since `start`, and how many were dropped past the cap.
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut buffer = self.lock();
        (
            std::mem::take(&mut buffer.data),
            std::mem::take(&mut buffer.dropped),
        )
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        match buffer.live {
            Some(Live::Stdout) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes).and_then(|()| out.flush());
            }
            Some(Live::Stderr) => {
                let _ = std::io::stderr().lock().write_all(bytes);
                let tail = &bytes[bytes.len().saturating_sub(LIVE_STDERR_TAIL)..];
                buffer.data.extend_from_slice(tail);
                let over = buffer.data.len().saturating_sub(LIVE_STDERR_TAIL);
                buffer.data.drain(..over);
            }
            None => {
                let room = buffer.cap.saturating_sub(buffer.data.len());
                let kept = room.min(bytes.len());
                buffer.data.extend_from_slice(&bytes[..kept]);
                buffer.dropped += (bytes.len() - kept) as u64;
            }
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: bytes past the cap are accepted and dropped, so the guest's write
        // succeeds and is not retried in a loop.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Text of captured bytes, with the truncation marker when bytes were dropped. A cut through a
/// UTF-8 sequence at the cap is trimmed rather than shown as a replacement character.
pub(crate) fn text(mut bytes: Vec<u8>, dropped: u64, stream: &str, cap: usize) -> String {
    if dropped > 0
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if dropped > 0 {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[output truncated: {stream} passed the {} limit; {dropped} more bytes were dropped]\n",
            human_bytes(cap)
        ));
    }
    text
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_up_to_the_cap_and_counts_the_rest() {
        let mut capture = Capture::new(None);
        capture.start(10);
        capture.write(Bytes::from_static(b"hello ")).unwrap();
        capture
            .write(Bytes::from_static(b"world, and more"))
            .unwrap();
        let (data, dropped) = capture.take();
        assert_eq!(data, b"hello worl");
        assert_eq!(dropped, 11);
        capture.start(10);
        assert_eq!(capture.take(), (Vec::new(), 0));
    }

    #[test]
    fn a_live_stderr_keeps_only_its_tail() {
        let mut capture = Capture::new(Some(Live::Stderr));
        capture.start(1 << 20);
        capture.write(Bytes::from(vec![b'a'; 3000])).unwrap();
        capture.write(Bytes::from(vec![b'b'; 3000])).unwrap();
        capture.write(Bytes::from_static(b"end\n")).unwrap();
        let (data, dropped) = capture.take();
        assert_eq!(data.len(), LIVE_STDERR_TAIL);
        assert!(data.ends_with(b"bbend\n"));
        assert_eq!(data.iter().filter(|b| **b == b'b').count(), 3000);
        // Shown live in full, so nothing counts as dropped.
        assert_eq!(dropped, 0);
        // One write larger than the tail keeps its end.
        capture.start(1 << 20);
        capture.write(Bytes::from(vec![b'c'; 10_000])).unwrap();
        assert_eq!(capture.take().0, vec![b'c'; LIVE_STDERR_TAIL]);
    }

    #[test]
    fn truncated_text_ends_on_a_character_and_carries_the_marker() {
        // "é" is two bytes; a cap through its middle must not leave half of it.
        let text = text(b"ab\xc3".to_vec(), 7, "stdout", 3);
        assert_eq!(
            text,
            "ab\n[output truncated: stdout passed the 3 bytes limit; 7 more bytes were dropped]\n"
        );
    }

    #[test]
    fn untruncated_text_is_unchanged() {
        assert_eq!(
            text("ünïcode ✓\n".as_bytes().to_vec(), 0, "stdout", 100),
            "ünïcode ✓\n"
        );
    }
}
