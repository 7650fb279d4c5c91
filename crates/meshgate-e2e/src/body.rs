//! Body types shared by the test clients and servers: empty, whole, and streamed through a
//! channel (so a test controls exactly when each chunk goes out).

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response made by this crate.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// A body with all of `data` in one frame (and its length known up front).
pub fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into()).map_err(|never| match never {}).boxed()
}

/// A body whose chunks are sent through the returned sender; it ends when the sender is dropped.
/// Its length is not known up front, so HTTP/1.1 sends it chunked.
pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}

/// A body fed by an `mpsc` channel.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Reads a body to its end, counting bytes without keeping them.
pub async fn count<B>(mut body: B) -> Result<u64, B::Error>
where
    B: HttpBody + Unpin,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += bytes::Buf::remaining(data) as u64;
        }
    }
    Ok(n)
}
