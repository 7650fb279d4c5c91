//! Whole bodies for the body phases (`Phases::REQUEST_BODY`, `Phases::RESPONSE_BODY`).
//!
//! Only routes whose chain has a body plugin come here, and only for messages that have a body
//! and that one of those plugins asks for ([`Plugin::request_body_limit`],
//! [`Plugin::response_body_limit`]); everything else streams as before. A body is read up to the
//! largest limit asked for, capped by `limits.max_body_bytes` (for requests also by a route's
//! `request-size-limiting`). A body that fits goes to the plugins whole and on as one frame with
//! its `Content-Length` set; one that does not goes on untouched, the frames already read first
//! and the rest streamed, unless a plugin answers instead. The read is bounded in time too:
//! `client_body_timeout` between two frames of a request body, the service's read timeout
//! (enforced by the upstream body itself) for a response.

use crate::client::ReadTimedOut;
use crate::limits::ClientFault;
use crate::snapshot::Limits;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use meshgate_core::{BodyLimit, BoxError, ErrorKind, Flow, Plugin, ProxyBody, RequestCtx};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Runs the request body phase. `Ok` carries the body to forward (the same stream when no plugin
/// wanted it); `Err` is an answer for the client (a plugin's, or 413/408/400 from reading).
pub(crate) async fn request(
    cx: &mut RequestCtx,
    plugins: &[Arc<dyn Plugin>],
    body: ProxyBody,
    limits: &Limits,
) -> Result<ProxyBody, Response<ProxyBody>> {
    if body.is_end_stream() {
        return Ok(body);
    }
    let wants: Vec<(&Arc<dyn Plugin>, u64)> =
        plugins.iter().filter_map(|p| p.request_body_limit(cx).map(|l| (p, l))).collect();
    let Some(asked) = wants.iter().map(|(_, l)| *l).max() else { return Ok(body) };
    // What the gateway accepts at all: past it, the request is refused whatever plugins want.
    let accepted = cx.vars.get::<BodyLimit>().map_or(u64::MAX, |l| l.0).min(limits.max_body_bytes);
    let limit = asked.min(accepted);
    if content_length(&cx.request.headers).is_some_and(|n| n > limit) {
        // Declared too large for every plugin: nothing is read.
        for (p, _) in &wants {
            if let Flow::Respond(resp) = p.on_request_body(cx, None).await {
                return Err(resp);
            }
        }
        return Ok(body);
    }
    match read(body, limit, Some(limits.client_body_timeout)).await {
        Read::Whole(mut bytes) => {
            for (p, l) in &wants {
                let seen = (bytes.len() as u64 <= *l).then_some(&mut bytes);
                if let Flow::Respond(resp) = p.on_request_body(cx, seen).await {
                    return Err(resp);
                }
            }
            set_length(&mut cx.request.headers, bytes.len());
            Ok(ProxyBody::full(bytes))
        }
        Read::Over(rest) => {
            if limit == accepted {
                let msg = format!("request body is larger than {accepted} bytes");
                return Err(ErrorKind::BodyTooLarge.response(&msg));
            }
            for (p, _) in &wants {
                if let Flow::Respond(resp) = p.on_request_body(cx, None).await {
                    return Err(resp);
                }
            }
            Ok(rest)
        }
        Read::Trailers(rest) => Ok(rest),
        Read::IdleTimeout => Err(ClientFault::Stalled.response()),
        Read::Failed(e) => Err(ClientFault::of(&*e).response()),
    }
}

/// Runs the response body phase on an upstream's answer: the answer to send on, the upstream's
/// (its body whole or as it came) or one a plugin gave instead. `max` caps what is held.
pub(crate) async fn response(
    cx: &mut RequestCtx,
    plugins: &[Arc<dyn Plugin>],
    resp: Response<ProxyBody>,
    max: u64,
) -> Response<ProxyBody> {
    let status = resp.status();
    let bodiless = cx.request.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless || resp.body().is_end_stream() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let wants: Vec<(&Arc<dyn Plugin>, u64)> =
        plugins.iter().filter_map(|p| p.response_body_limit(cx, &parts).map(|l| (p, l))).collect();
    let Some(asked) = wants.iter().map(|(_, l)| *l).max() else { return Response::from_parts(parts, body) };
    let limit = asked.min(max);
    let read = if content_length(&parts.headers).is_some_and(|n| n > limit) {
        Read::Over(body)
    } else {
        self::read(body, limit, None).await
    };
    match read {
        Read::Whole(mut bytes) => {
            for (p, l) in &wants {
                let seen = (bytes.len() as u64 <= *l).then_some(&mut bytes);
                if let Flow::Respond(resp) = p.on_response_body(cx, &mut parts, seen).await {
                    return resp;
                }
            }
            set_length(&mut parts.headers, bytes.len());
            Response::from_parts(parts, ProxyBody::full(bytes))
        }
        Read::Over(rest) => {
            for (p, _) in &wants {
                if let Flow::Respond(resp) = p.on_response_body(cx, &mut parts, None).await {
                    return resp;
                }
            }
            Response::from_parts(parts, rest)
        }
        Read::Trailers(rest) => Response::from_parts(parts, rest),
        Read::Failed(e) => {
            let target = cx.upstream().map_or("upstream", |t| &**t);
            tracing::warn!(%target, error = %e, "upstream response body failed while read for the body phase");
            let kind = if e.is::<ReadTimedOut>() { ErrorKind::UpstreamTimeout } else { ErrorKind::UpstreamUnavailable };
            crate::handler::gateway_error(kind, cx)
        }
        Read::IdleTimeout => crate::handler::gateway_error(ErrorKind::UpstreamTimeout, cx),
    }
}

/// What reading a body up to a limit gave.
enum Read {
    /// All of it, within the limit.
    Whole(Bytes),
    /// More than the limit: the frames read and the rest of the stream, to send on as they are.
    Over(ProxyBody),
    /// Trailers came (gRPC-style): the body is not held but sent on as it came.
    Trailers(ProxyBody),
    /// No frame for the idle bound.
    IdleTimeout,
    /// The stream failed.
    Failed(BoxError),
}

/// Reads frames until the end, more than `limit` bytes, trailers, an error, or `idle` without a
/// frame.
async fn read(mut body: ProxyBody, limit: u64, idle: Option<Duration>) -> Read {
    let mut frames: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0u64;
    loop {
        let next = match idle {
            Some(d) => match tokio::time::timeout(d, body.frame()).await {
                Ok(f) => f,
                Err(_) => return Read::IdleTimeout,
            },
            None => body.frame().await,
        };
        let frame = match next {
            None => return Read::Whole(concat(frames, len)),
            Some(Err(e)) => return Read::Failed(e),
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                len += data.len() as u64;
                if !data.is_empty() {
                    frames.push_back(data);
                }
                if len > limit {
                    return Read::Over(ProxyBody::boxed(Prefixed { frames, trailers: None, rest: body }));
                }
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                return Read::Trailers(ProxyBody::boxed(Prefixed { frames, trailers, rest: body }));
            }
        }
    }
}

fn concat(mut frames: VecDeque<Bytes>, len: u64) -> Bytes {
    if frames.len() <= 1 {
        return frames.pop_front().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(len as usize);
    for f in frames {
        out.extend_from_slice(&f);
    }
    out.freeze()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The head of a message whose body is now `len` bytes in one piece.
fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// A body already partly read: the frames read so far, then the rest as it streams.
struct Prefixed {
    frames: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: ProxyBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.trailers.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.frames.iter().map(|f| f.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        ProxyBody::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn text(body: ProxyBody) -> String {
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn whole_within_the_limit_else_everything_read_goes_on_first() {
        match read(chunks(&["ab", "cd"]), 4, None).await {
            Read::Whole(b) => assert_eq!(b, "abcd"),
            _ => panic!("4 bytes fit a 4-byte limit"),
        }
        match read(chunks(&["ab", "cd", "ef"]), 3, None).await {
            Read::Over(rest) => assert_eq!(text(rest).await, "abcdef"),
            _ => panic!("6 bytes do not fit 3"),
        }
    }

    #[tokio::test]
    async fn trailers_end_the_read_and_are_kept() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"x"))), Ok(Frame::trailers(t))];
        let body = ProxyBody::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let Read::Trailers(rest) = read(body, 100, None).await else { panic!("trailers") };
        let collected = rest.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "x");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let body = ProxyBody::boxed(http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >()));
        assert!(matches!(read(body, 10, Some(Duration::from_millis(20))).await, Read::IdleTimeout));
    }
}
