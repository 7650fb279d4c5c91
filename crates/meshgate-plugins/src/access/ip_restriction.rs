//! `ip-restriction`: allow and deny lists of IPv4/IPv6 CIDR blocks, each with optional `except`
//! ranges (like Kubernetes network policy's `ipBlock`), judged on the client's address.
//!
//! Behind other proxies the TCP peer is the nearest proxy, not the client. `trusted_hops: N`
//! says N proxies in front of meshgate append to `X-Forwarded-For`; the client is then the Nth
//! address from the right of that header. Addresses further left were written by the client
//! itself and are never trusted.

use ipnet::IpNet;
use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, async_trait, json_error,
    parse_config,
};
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

/// Registers `ip-restriction`.
pub struct Factory;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// When not empty, only these blocks may call.
    allow: Vec<BlockConfig>,
    /// These blocks may not call, even when allowed.
    deny: Vec<BlockConfig>,
    /// Proxies in front of meshgate that append to `X-Forwarded-For` (0: use the TCP peer).
    trusted_hops: usize,
}

/// `"10.0.0.0/8"` or `{cidr: "10.0.0.0/8", except: ["10.1.0.0/16"]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum BlockConfig {
    Cidr(String),
    WithExcept {
        cidr: String,
        #[serde(default)]
        except: Vec<String>,
    },
}

/// A CIDR block minus its exceptions.
#[derive(Debug)]
struct Block {
    net: IpNet,
    except: Vec<IpNet>,
}

impl Block {
    fn contains(&self, ip: &IpAddr) -> bool {
        self.net.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a block of one). The address is read by
/// the standard library, which refuses IPv4 octets with leading zeros: `10.010.0.0/16` is
/// 10.8.0.0/16 to tools that read them as octal (inet_aton) and 10.10.0.0/16 to others, and an
/// access list must not mean two things. (`IpNet`'s own parser takes them.)
fn parse_net(field: String, s: &str) -> Result<IpNet, PluginConfigError> {
    let (addr, len) = match s.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (s, None),
    };
    let net = addr.parse::<IpAddr>().ok().and_then(|addr| match len {
        None => Some(IpNet::from(addr)),
        Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
            IpNet::new(addr, len.parse().ok()?).ok()
        }
        Some(_) => None,
    });
    net.ok_or_else(|| {
        let octets: Vec<&str> = addr.split('.').collect();
        let zeros = octets.len() == 4
            && octets.iter().all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
            && octets.iter().any(|o| o.len() > 1 && o.starts_with('0'));
        let hint = if zeros {
            "write IPv4 octets without leading zeros (some tools read them as octal)"
        } else {
            "use e.g. 10.0.0.0/8 or 2001:db8::/32"
        };
        PluginConfigError::new(field, format!("invalid CIDR {s:?}: {hint}"))
    })
}

fn blocks(list: &[BlockConfig], field: &str) -> Result<Vec<Block>, PluginConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, b)| {
            let at = format!("{field}[{i}]");
            let (cidr, except): (&str, &[String]) = match b {
                BlockConfig::Cidr(c) => (c, &[]),
                BlockConfig::WithExcept { cidr, except } => (cidr, except),
            };
            let net = parse_net(at.clone(), cidr)?;
            let except = except
                .iter()
                .enumerate()
                .map(|(j, e)| {
                    let ex = parse_net(format!("{at}.except[{j}]"), e)?;
                    if !net.contains(&ex) {
                        return Err(PluginConfigError::new(
                            format!("{at}.except[{j}]"),
                            format!("{e} is not inside {cidr}"),
                        ));
                    }
                    Ok(ex)
                })
                .collect::<Result<_, _>>()?;
            Ok(Block { net, except })
        })
        .collect()
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }
    fn priority(&self) -> i32 {
        // Before authentication: refusing by address is the cheapest check, and a denied network
        // should not get to probe credentials.
        3000
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if c.allow.is_empty() && c.deny.is_empty() {
            return Err(PluginConfigError::new("", "set allow, deny or both"));
        }
        Ok(Built::Plugin(Arc::new(IpRestriction {
            allow: blocks(&c.allow, "allow")?,
            deny: blocks(&c.deny, "deny")?,
            trusted_hops: c.trusted_hops,
        })))
    }
}

struct IpRestriction {
    allow: Vec<Block>,
    deny: Vec<Block>,
    trusted_hops: usize,
}

impl IpRestriction {
    /// The client's address: the TCP peer, or the `trusted_hops`-th address from the right of
    /// `X-Forwarded-For`. `None` when the header cannot say (missing, too short, malformed): such
    /// a request cannot be judged and is refused.
    fn client_ip(&self, cx: &RequestCtx) -> Option<IpAddr> {
        if self.trusted_hops == 0 {
            return Some(cx.client_addr.ip());
        }
        // From the right: the last entry was appended by the nearest proxy. No allocation.
        let entry = cx
            .request
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .nth(self.trusted_hops - 1)?;
        entry.parse().ok()
    }

    fn allows(&self, ip: IpAddr) -> bool {
        // `::ffff:10.0.0.1` is 10.0.0.1 arriving on a dual-stack socket.
        let ip = ip.to_canonical();
        if self.deny.iter().any(|b| b.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|b| b.contains(&ip))
    }
}

#[async_trait]
impl Plugin for IpRestriction {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        match self.client_ip(cx) {
            Some(ip) if self.allows(ip) => Flow::Continue,
            _ => Flow::Respond(json_error(
                http::StatusCode::FORBIDDEN,
                "ip_forbidden",
                "your IP address is not allowed to call this API",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: serde_json::Value) -> IpRestriction {
        let c: Config = parse_config(&config).unwrap();
        IpRestriction {
            allow: blocks(&c.allow, "allow").unwrap(),
            deny: blocks(&c.deny, "deny").unwrap(),
            trusted_hops: c.trusted_hops,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_tables_with_except_ranges() {
        let p = plugin(serde_json::json!({
            "allow": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}, "2001:db8::/32", "192.0.2.7"],
            "deny": [{"cidr": "10.2.0.0/16", "except": ["10.2.3.0/24"]}],
        }));
        let cases = [
            ("10.0.0.1", true),
            ("10.1.2.3", false), // allow's except
            ("10.2.9.9", false), // denied
            ("10.2.3.4", true),  // deny's except, still inside allow
            ("11.0.0.1", false), // outside allow
            ("192.0.2.7", true), // a bare address
            ("192.0.2.8", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::ffff:10.0.0.1", true), // IPv4-mapped IPv6 is the IPv4 address
            ("::ffff:10.1.0.1", false),
        ];
        for (addr, allowed) in cases {
            assert_eq!(p.allows(ip(addr)), allowed, "{addr}");
        }
    }

    fn ctx(xff: &[&str]) -> RequestCtx {
        let mut req = http::Request::builder().uri("/");
        for v in xff {
            req = req.header("x-forwarded-for", *v);
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        RequestCtx::new(parts, "127.0.0.1:5000".parse().unwrap(), false)
    }

    #[test]
    fn trusted_hops_pick_the_address_the_nearest_trusted_proxy_saw() {
        let hops = |n| IpRestriction { allow: Vec::new(), deny: Vec::new(), trusted_hops: n };
        // The client may put anything at the left; only what trusted proxies appended counts.
        let cx = ctx(&["6.6.6.6, 10.0.0.5", "192.0.2.1"]);
        assert_eq!(hops(0).client_ip(&cx), Some(ip("127.0.0.1")));
        assert_eq!(hops(1).client_ip(&cx), Some(ip("192.0.2.1")));
        assert_eq!(hops(2).client_ip(&cx), Some(ip("10.0.0.5")));
        assert_eq!(hops(4).client_ip(&cx), None, "fewer entries than trusted hops cannot be judged");
        assert_eq!(hops(1).client_ip(&ctx(&["not-an-ip"])), None);
        assert_eq!(hops(1).client_ip(&ctx(&[])), None);
    }

    #[test]
    fn deny_only_allows_the_rest() {
        let p = plugin(serde_json::json!({"deny": ["203.0.113.0/24"]}));
        assert!(!p.allows(ip("203.0.113.9")));
        assert!(p.allows(ip("198.51.100.1")));
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = |v: serde_json::Value| match crate::testing::plugin(&Factory, v.clone()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {v}"),
        };
        assert_eq!(
            err(serde_json::json!({"allow": ["10.0.0.0/33"]})),
            "allow[0]: invalid CIDR \"10.0.0.0/33\": use e.g. 10.0.0.0/8 or 2001:db8::/32"
        );
        assert_eq!(
            err(serde_json::json!({"deny": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}]})),
            "deny[0].except[0]: 11.0.0.0/16 is not inside 10.0.0.0/8"
        );
        assert_eq!(err(serde_json::json!({})), "set allow, deny or both");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/ip_restriction.rs): `IpNet` took `10.00.0.0/8`.
    #[test]
    fn octets_with_leading_zeros_are_refused() {
        let err = |cidr: &str| blocks(&[BlockConfig::Cidr(cidr.into())], "allow").err().map(|e| e.to_string());
        for bad in ["10.010.0.0/16", "10.00.0.0/8", "010.0.0.1"] {
            assert!(err(bad).is_some_and(|e| e.contains("without leading zeros")), "{bad}: {:?}", err(bad));
        }
        for bad in ["10.0.0.0/+8", "10.0.0.0/", "10.0.0.0/08x", "10.0.0/8"] {
            assert!(err(bad).is_some_and(|e| e.contains("use e.g. 10.0.0.0/8")), "{bad}: {:?}", err(bad));
        }
        let p = plugin(serde_json::json!({"allow": ["10.10.0.0/016", "2001:0db8::/32"]}));
        assert!(p.allows(ip("10.10.1.1")) && p.allows(ip("2001:db8::1")) && !p.allows(ip("10.11.0.1")));
    }
}
