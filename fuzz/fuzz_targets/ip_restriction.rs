//! `ip-restriction`: CIDR lists (`allow`, `deny`, each block with `except` ranges) parsed at
//! config load, and the client address taken from the TCP peer or, with `trusted_hops`, from
//! `X-Forwarded-For`. The first line of the input is the plugin's `config:` (JSON), the second
//! the peer address, the rest a request head. Invariant: the plugin's answer is the one a plain
//! reading of its documentation gives, computed here with prefix arithmetic of our own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_core::{Built, Consumers, Flow};
use meshgate_fuzz::{block_on, build, build_context, parse_head, request_ctx};
use meshgate_plugins::access::ip_restriction::Factory;
use std::net::{IpAddr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(3, '\n');
    let (config, peer, head) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let Ok(config) = serde_json::from_str::<serde_json::Value>(config) else { return };
    let Some(Built::Plugin(plugin)) = build(&Factory, &config, &build_context(Consumers::default())) else { return };
    let mut cx = request_ctx(parse_head(head));
    if let Ok(peer) = peer.trim().parse::<IpAddr>() {
        cx.client_addr = SocketAddr::new(peer, 40000);
    }
    // serde also reads a struct from a list of its fields in order (`[["10.0.0.0/8"]]` is an
    // allow list); the plugin runs on such a config, but the oracle reads objects only.
    let want = config.is_object().then(|| expected(&config, &cx.request.headers, cx.client_addr.ip()));
    let allowed = matches!(block_on(plugin.on_request(&mut cx)), Flow::Continue);
    if let Some(want) = want {
        assert_eq!(allowed, want, "config {config} peer {} headers {:?}", cx.client_addr, cx.request.headers);
    }
});

/// The documented decision: the client is the peer, or the `trusted_hops`-th address from the
/// right of `X-Forwarded-For` (a request without one is refused); denied when a `deny` block
/// holds it, else allowed when `allow` is empty or one of its blocks holds it. A block holds an
/// address when its prefix does and none of its `except` prefixes does; an IPv4 address arriving
/// as `::ffff:a.b.c.d` is that IPv4 address.
fn expected(config: &serde_json::Value, headers: &http::HeaderMap, peer: IpAddr) -> bool {
    let hops = config.get("trusted_hops").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize;
    let client = if hops == 0 {
        Some(peer)
    } else {
        let mut entries: Vec<&str> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            entries.extend(v.to_str().unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        entries.len().checked_sub(hops).and_then(|i| entries[i].parse().ok())
    };
    let Some(client) = client.map(|ip| ip.to_canonical()) else { return false };
    let list = |name: &str| config.get(name).and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
    let holds = |block: &serde_json::Value| match block {
        serde_json::Value::String(cidr) => within(cidr, client),
        b => {
            let except = b.get("except").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
            within(b["cidr"].as_str().unwrap_or(""), client)
                && !except.iter().any(|e| within(e.as_str().unwrap_or(""), client))
        }
    };
    let allow = list("allow");
    !list("deny").iter().any(holds) && (allow.is_empty() || allow.iter().any(holds))
}

/// Whether `cidr` (`a.b.c.d/n`, `x::/n` or a bare address) holds `ip`: same family, and the first
/// `n` bits equal.
fn within(cidr: &str, ip: IpAddr) -> bool {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    let Ok(net) = addr.parse::<IpAddr>() else { return false };
    let (net, ip, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(n.to_bits()) << 96, u128::from(i.to_bits()) << 96, 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
        _ => return false,
    };
    let len = if len.is_empty() { bits } else { len.parse::<u32>().unwrap_or(u32::MAX) };
    assert!(len <= bits, "the plugin accepted {cidr:?}");
    len == 0 || (net ^ ip) >> (128 - len) == 0
}
