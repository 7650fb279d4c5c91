//! A span's URL: the path and query copied out of the request, and the query as spans show it,
//! with the values of sensitive parameters replaced by `REDACTED`.
//!
//! OpenTelemetry's HTTP conventions want the query on spans (`url.query`, `url.full`) and ask
//! that sensitive values be scrubbed, by default those of the signature parameters of signed
//! URLs (AWS, Azure, Google, CloudFront): a signed URL is a credential for as long as it is
//! valid. A query can carry other secrets (tokens, API keys), so `redact_query` names more
//! parameters, or `all`. Keys stay, so a trace still shows which parameters came. Redaction
//! happens on the exporter's thread, when the span is written; the request only copies the bytes.

use meshgate_core::PluginConfigError;
use smallvec::SmallVec;

/// A span's path and query (`/v1/items?id=7`), copied out of the request (on the heap only past
/// 64 bytes). Holding a clone of the request's URI instead kept the connection's whole read
/// buffer alive until the exporter dropped the span: the connection had to take a new buffer
/// for every request, and the exporter's thread freed the old ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathQuery {
    bytes: SmallVec<[u8; 64]>,
    /// Where the path ends (and `?` is, when there is a query).
    path_len: usize,
}

impl PathQuery {
    /// The path and query of `uri`.
    pub fn of(uri: &http::Uri) -> PathQuery {
        let s = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        PathQuery { bytes: SmallVec::from_slice(s.as_bytes()), path_len: uri.path().len() }
    }

    /// The path's bytes, UTF-8 (a URI's are ASCII).
    pub fn path(&self) -> &[u8] {
        &self.bytes[..self.path_len]
    }

    /// The query without its `?`, when there is one and it is not empty.
    pub fn query(&self) -> Option<&[u8]> {
        self.bytes.get(self.path_len + 1..).filter(|q| !q.is_empty())
    }
}

/// Which query values spans show as `REDACTED` (`redact_query:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redact {
    /// Those of [`Redact::SIGNATURES`] and of these parameters (matched as written, case
    /// sensitive, as OpenTelemetry asks).
    Listed(Box<[Box<str>]>),
    /// Every value.
    All,
}

impl Default for Redact {
    fn default() -> Redact {
        Redact::Listed(Box::default())
    }
}

impl Redact {
    /// The parameters OpenTelemetry's HTTP conventions list as always redacted: the signatures
    /// and credentials of signed URLs.
    pub const SIGNATURES: [&'static str; 7] = [
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
        "X-Goog-Signature",
    ];

    /// `redact_query:` from the config: `all`, or a list of more parameter names.
    pub fn from_config(v: &serde_json::Value) -> Result<Redact, PluginConfigError> {
        const FIELD: &str = "redact_query";
        let items = match v {
            serde_json::Value::Null => return Ok(Redact::default()),
            serde_json::Value::String(s) if s == "all" => return Ok(Redact::All),
            serde_json::Value::Array(items) => items,
            _ => return Err(PluginConfigError::new(FIELD, "`all`, or a list of query parameter names")),
        };
        let mut names = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let name = item.as_str().unwrap_or_default();
            if name.is_empty() || name.bytes().any(|b| matches!(b, b'&' | b'=' | b'#' | b'?') || b <= b' ') {
                return Err(PluginConfigError::new(
                    format!("{FIELD}[{i}]"),
                    "not a query parameter name (a non-empty string without `&`, `=`, `?`, `#` or spaces)",
                ));
            }
            names.push(name.into());
        }
        Ok(Redact::Listed(names.into()))
    }

    /// Whether the value of parameter `key` is hidden.
    fn hides(&self, key: &[u8]) -> bool {
        match self {
            Redact::All => true,
            Redact::Listed(more) => {
                Redact::SIGNATURES.iter().any(|s| s.as_bytes() == key) || more.iter().any(|s| s.as_bytes() == key)
            }
        }
    }

    /// Appends `query` to `out` with the values it hides replaced by `REDACTED`; a parameter
    /// without `=` has no value to hide.
    pub fn query(&self, query: &[u8], out: &mut Vec<u8>) {
        for (i, param) in query.split(|&b| b == b'&').enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            match param.iter().position(|&b| b == b'=') {
                Some(eq) if self.hides(&param[..eq]) => {
                    out.extend_from_slice(&param[..=eq]);
                    out.extend_from_slice(b"REDACTED");
                }
                _ => out.extend_from_slice(param),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_and_query() {
        let pq = |s: &str| PathQuery::of(&s.parse().unwrap());
        let a = pq("/v1/items?id=7&x");
        assert_eq!((a.path(), a.query()), (&b"/v1/items"[..], Some(&b"id=7&x"[..])));
        assert_eq!(pq("/v1/items").query(), None);
        assert_eq!(pq("/v1/items?").query(), None, "an empty query is none");
        let long = pq(&format!("/{}?q=1", "a".repeat(100)));
        assert_eq!((long.path().len(), long.query()), (101, Some(&b"q=1"[..])));
    }

    #[test]
    fn redaction() {
        let shown = |r: &Redact, q: &str| {
            let mut out = Vec::new();
            r.query(q.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        let signed = "color=blue&X-Amz-Signature=abc&x-amz-signature=def&sig=1&sig&Signature=";
        assert_eq!(
            shown(&Redact::default(), signed),
            "color=blue&X-Amz-Signature=REDACTED&x-amz-signature=def&sig=REDACTED&sig&Signature=REDACTED",
            "the signatures by default, matched case-sensitively; keys stay"
        );
        let more = Redact::from_config(&json!(["token", "color"])).unwrap();
        assert_eq!(shown(&more, "color=blue&token=t&sig=s&a=b=c"), "color=REDACTED&token=REDACTED&sig=REDACTED&a=b=c");
        assert_eq!(shown(&Redact::All, "a=1&b=&c&=d"), "a=REDACTED&b=REDACTED&c&=REDACTED");
        assert_eq!(Redact::from_config(&json!("all")).unwrap(), Redact::All);
        assert_eq!(Redact::from_config(&serde_json::Value::Null).unwrap(), Redact::default());
    }

    #[test]
    fn config_errors() {
        let err = |v| Redact::from_config(&v).unwrap_err().to_string();
        assert_eq!(err(json!("none")), "redact_query: `all`, or a list of query parameter names");
        assert_eq!(err(json!({"a": 1})), "redact_query: `all`, or a list of query parameter names");
        for (bad, at) in [(json!(["ok", ""]), 1), (json!(["a=b"]), 0), (json!(["a b"]), 0), (json!([7]), 0)] {
            assert!(err(bad.clone()).starts_with(&format!("redact_query[{at}]: not a query parameter name")), "{bad}");
        }
    }
}
