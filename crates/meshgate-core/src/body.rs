//! The one body type the proxy sends: a closed set of variants instead of a boxed trait object,
//! so that passing a body through costs no allocation.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Errors carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Boxed = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// A request or response body flowing through the gateway.
#[derive(Default)]
pub enum ProxyBody {
    /// No body.
    #[default]
    Empty,
    /// A complete body produced by the gateway (errors, plugin answers).
    Full(Option<Bytes>),
    /// A body streamed from a client or upstream, untouched.
    Incoming(Incoming),
    /// A wrapped stream (limits, timeouts, accounting); one allocation per wrapped body.
    Boxed(Boxed),
}

impl ProxyBody {
    /// A complete body from bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        if b.is_empty() { ProxyBody::Empty } else { ProxyBody::Full(Some(b)) }
    }

    /// The body's bytes when it is whole in memory (a gateway answer or a body read whole for
    /// the body phases), so that it can be sent again.
    pub fn whole(&self) -> Option<&Bytes> {
        match self {
            ProxyBody::Full(b) => b.as_ref(),
            _ => None,
        }
    }

    /// Wraps any body.
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        ProxyBody::Boxed(Box::pin(body))
    }
}

impl From<Incoming> for ProxyBody {
    fn from(b: Incoming) -> Self {
        ProxyBody::Incoming(b)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Boxed(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Incoming(b) => b.is_end_stream(),
            ProxyBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Incoming(b) => b.size_hint(),
            ProxyBody::Boxed(b) => b.size_hint(),
        }
    }
}
