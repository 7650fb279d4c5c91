//! The plugin trait and its phases.

use crate::body::ProxyBody;
use crate::context::RequestCtx;
use async_trait::async_trait;
use bytes::Bytes;

/// What a phase decided.
pub enum Flow {
    /// Go on to the next plugin and phase.
    Continue,
    /// Stop here and send this response to the client (e.g. 401, 429). Later `on_request`
    /// plugins and the upstream are skipped; `on_response` and `on_log` still run.
    Respond(http::Response<ProxyBody>),
}

/// The set of phases a plugin implements. The proxy calls only these, so a plugin that needs one
/// phase costs nothing in the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Phases(u8);

impl Phases {
    /// After routing, before an upstream target is chosen: authentication, limits, rewrites.
    pub const ON_REQUEST: Phases = Phases(1);
    /// After a target is chosen and the upstream request is built: last-moment header changes.
    pub const BEFORE_UPSTREAM: Phases = Phases(2);
    /// When the response head is known (from the upstream or the gateway itself).
    pub const ON_RESPONSE: Phases = Phases(4);
    /// After the response body has been sent or the exchange aborted: logs, metrics.
    pub const ON_LOG: Phases = Phases(8);
    /// After `on_request`, with the whole request body read (see [`Plugin::request_body_limit`]).
    pub const REQUEST_BODY: Phases = Phases(16);
    /// With the whole body of an upstream's answer read, before `on_response` (see
    /// [`Plugin::response_body_limit`]).
    pub const RESPONSE_BODY: Phases = Phases(32);

    /// True when every phase of `other` is in `self`.
    pub const fn contains(self, other: Phases) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    pub const fn union(self, other: Phases) -> Phases {
        Phases(self.0 | other.0)
    }
}

impl std::ops::BitOr for Phases {
    type Output = Phases;
    fn bitor(self, rhs: Phases) -> Phases {
        self.union(rhs)
    }
}

/// One plugin instance, configured for a scope (global, service or route). Instances are shared
/// by all worker threads and live as long as the config snapshot that built them.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The phases this plugin implements; the others are never called.
    fn phases(&self) -> Phases;

    /// Inspect or change the client's request, or answer it directly.
    async fn on_request(&self, _cx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }

    /// Change the request about to be sent upstream (`cx.upstream()` names the target), or answer
    /// it directly.
    async fn before_upstream(&self, _cx: &mut RequestCtx, _upstream: &mut http::request::Parts) -> Flow {
        Flow::Continue
    }

    /// Change the response head before it goes to the client.
    async fn on_response(&self, _cx: &mut RequestCtx, _response: &mut http::response::Parts) {}

    /// For a request that has a body, after every `on_request`: how many bytes of it this plugin
    /// wants to see whole in [`Plugin::on_request_body`], or `None` to leave this body alone.
    /// Only plugins with [`Phases::REQUEST_BODY`] are asked, and only when the request has a
    /// body; the proxy then reads it up to the largest limit asked for (and at most
    /// `limits.max_body_bytes`) before anything goes upstream. Routes without such plugins stream
    /// bodies as they come. Called once per request; keep it to a look at the head.
    fn request_body_limit(&self, _cx: &RequestCtx) -> Option<u64> {
        None
    }

    /// The whole request body, when [`Plugin::request_body_limit`] asked for it: `Some` to read or
    /// replace (the proxy then sets `Content-Length`), `None` when the body is larger than the
    /// plugin's limit. A body over the limit goes upstream untouched (what was read and the rest,
    /// streamed) unless some plugin answers instead, e.g. 413. Bodies with trailers are never
    /// held and reach no plugin.
    async fn on_request_body(&self, _cx: &mut RequestCtx, _body: Option<&mut Bytes>) -> Flow {
        Flow::Continue
    }

    /// For an upstream's answer with a body (never a HEAD's, a 1xx, 204 or 304, nor the gateway's
    /// own answers): how many bytes of it this plugin wants whole in
    /// [`Plugin::on_response_body`], or `None`. The read is bounded by the largest limit asked
    /// for, `limits.max_body_bytes`, and the service's read timeout between two reads.
    fn response_body_limit(&self, _cx: &RequestCtx, _response: &http::response::Parts) -> Option<u64> {
        None
    }

    /// The whole body of the upstream's answer, as for [`Plugin::on_request_body`]. Runs before
    /// `on_response`, on the head as the upstream sent it (hop-by-hop headers removed); the proxy
    /// sets `Content-Length` after it. `Flow::Respond` replaces the upstream's answer (which then
    /// goes through `on_response` like any other).
    async fn on_response_body(
        &self,
        _cx: &mut RequestCtx,
        _response: &mut http::response::Parts,
        _body: Option<&mut Bytes>,
    ) -> Flow {
        Flow::Continue
    }

    /// Record the finished exchange. Runs on the request's thread after the body is done: keep it
    /// short and hand slow work (disk, network) to a background task.
    fn on_log(&self, _cx: &RequestCtx) {}
}
