//! WebSocket (and any other HTTP/1.1 upgrade) pass-through: once the upstream answers 101, the
//! two connections are joined and bytes are copied both ways until either side closes.

use crate::server::ConnSlot;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::rc::Rc;

/// Joins the client's and the upstream's upgraded connections in a background task. `slot`
/// keeps the connection counted (max_connections, draining) until the tunnel closes.
pub fn spawn(client: OnUpgrade, upstream: OnUpgrade, slot: Rc<ConnSlot>) {
    tokio::task::spawn_local(async move {
        let _slot = slot;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
