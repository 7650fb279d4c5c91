//! The plugin trait and its phases.

use crate::body::ProxyBody;
use crate::context::RequestCtx;
use async_trait::async_trait;

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

    /// Change the request about to be sent upstream (`cx.upstream` names the target), or answer
    /// it directly.
    async fn before_upstream(&self, _cx: &mut RequestCtx, _upstream: &mut http::request::Parts) -> Flow {
        Flow::Continue
    }

    /// Change the response head before it goes to the client.
    async fn on_response(&self, _cx: &mut RequestCtx, _response: &mut http::response::Parts) {}

    /// Record the finished exchange. Runs on the request's thread after the body is done: keep it
    /// short and hand slow work (disk, network) to a background task.
    fn on_log(&self, _cx: &RequestCtx) {}
}
