//! The byte stream to an upstream: TCP or TLS over TCP, with the service's write timeout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

/// A connection to an upstream server.
pub type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

/// Whether ALPN settled on HTTP/2.
pub fn is_h2(stream: &Stream) -> bool {
    matches!(stream, Stream::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2"))
}

/// Fails a write that makes no progress for `timeout` (the service's write timeout). The timer is
/// created only when a write actually has to wait, so the common path costs nothing.
pub struct TimedStream {
    inner: Stream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl TimedStream {
    /// Wraps a connected stream.
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        TimedStream { inner, timeout, stalled: None }
    }

    fn on_write<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_pending() {
            if stalled(&mut self.stalled, self.timeout, cx) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "upstream write timed out")));
            }
        } else {
            progressed(&mut self.stalled, self.timeout);
        }
        poll
    }
}

use std::future::Future;

impl AsyncRead for TimedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Shared by the timed body wrappers: polls `sleep` (created lazily) and reports expiry.
pub(crate) fn stalled(sleep: &mut Option<Pin<Box<Sleep>>>, timeout: Duration, cx: &mut Context<'_>) -> bool {
    let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    s.as_mut().poll(cx).is_ready()
}

/// Restarts a lazily created timer after progress.
pub(crate) fn progressed(sleep: &mut Option<Pin<Box<Sleep>>>, timeout: Duration) {
    if let Some(s) = sleep.as_mut() {
        s.as_mut().reset(Instant::now() + timeout);
    }
}
