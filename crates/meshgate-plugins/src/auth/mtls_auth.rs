//! `mtls-auth`: the client certificate of the TLS connection (mutual TLS) names the consumer.
//!
//! The certificate itself comes from the listener (`tls.client_auth`); this method decides what
//! it proves. Either the listener verified the chain against its CA during the handshake, or
//! the route gives its own `ca` and the chain is verified here, so one listener can serve routes
//! trusting different CAs. The identity (common name, a subject alternative name, or the whole
//! subject) is looked up among the consumers by username or custom id.
//!
//! A connection's chain cannot change after the handshake, so the whole check (signatures,
//! parsing, lookup) runs once per connection and route method, and is remembered in the
//! connection's [`ClientCert`] for its later requests. The check happens at the connection's
//! first request here, so like a handshake check it is not repeated if the certificate expires
//! while the connection stays open.
//!
//! There is no registered HTTP authentication scheme for TLS client certificates (`Mutual` is
//! RFC 8120's password scheme), so the 401 challenge is `ClientCert realm="meshgate"`: it tells a
//! reader what is missing and no client mistakes it for a scheme it could answer.

use super::{anonymous, cache};
use http::HeaderValue;
use meshgate_core::{
    AuthOutcome, Authenticated, Authenticator, BuildContext, Built, ClientCert, Consumer, Consumers, PluginConfigError,
    PluginFactory, RequestCtx, Verdict, async_trait, parse_config,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Registers `mtls-auth`.
pub struct Factory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// PEM bundle (a path, relative to the config file, or the PEM text itself) of the CAs this
    /// route trusts. Unset: the listener must have verified the chain.
    ca: Option<String>,
    /// Which part of the certificate names the consumer.
    identity: Identity,
    /// Refuse certificates whose identity is not a declared consumer.
    require_consumer: bool,
    /// Consumer to let in when no credential is valid.
    anonymous: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { ca: None, identity: Identity::Cn, require_consumer: false, anonymous: None }
    }
}

/// The part of the leaf certificate that names the consumer.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Identity {
    /// The subject's (first) common name.
    Cn,
    /// The first DNS name among the subject alternative names.
    SanDns,
    /// The first e-mail address among the subject alternative names.
    SanEmail,
    /// The first URI among the subject alternative names (e.g. a SPIFFE id).
    SanUri,
    /// The whole subject as a string, e.g. `CN=alice, O=Example`.
    Subject,
}

impl Identity {
    fn describe(self) -> &'static str {
        match self {
            Identity::Cn => "certificate has no common name",
            Identity::SanDns => "certificate has no DNS subject alternative name",
            Identity::SanEmail => "certificate has no e-mail subject alternative name",
            Identity::SanUri => "certificate has no URI subject alternative name",
            Identity::Subject => "certificate has no subject",
        }
    }

    /// The identity in `cert`, if it has one.
    fn extract(self, cert: &X509Certificate<'_>) -> Option<String> {
        let san = |pick: fn(&GeneralName<'_>) -> Option<String>| {
            cert.subject_alternative_name().ok().flatten()?.value.general_names.iter().find_map(pick)
        };
        let found = match self {
            Identity::Cn => cert.subject().iter_common_name().next()?.as_str().ok().map(str::to_owned),
            Identity::SanDns => san(|n| if let GeneralName::DNSName(s) = n { Some((*s).to_owned()) } else { None }),
            Identity::SanEmail => {
                san(|n| if let GeneralName::RFC822Name(s) = n { Some((*s).to_owned()) } else { None })
            }
            Identity::SanUri => san(|n| if let GeneralName::URI(s) = n { Some((*s).to_owned()) } else { None }),
            Identity::Subject => Some(cert.subject().to_string()),
        };
        found.filter(|s| !s.is_empty())
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "mtls-auth"
    }
    fn priority(&self) -> i32 {
        1300
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let verifier = match &c.ca {
            Some(ca) => Some(verifier(ca, &cx.consumers.base_dir).map_err(|m| PluginConfigError::new("ca", m))?),
            None => None,
        };
        Ok(Built::Authenticator(Arc::new(MtlsAuth {
            // The key of this instance's verdicts in a [`ClientCert`]. A reload builds new
            // instances, so a changed `ca` applies to open connections too.
            id: cache::instance_id(),
            verifier,
            identity: c.identity,
            require_consumer: c.require_consumer,
            consumers: cx.consumers.clone(),
            anonymous: anonymous(&cx.consumers, c.anonymous.as_deref())?,
            challenge: HeaderValue::from_static("ClientCert realm=\"meshgate\""),
        })))
    }
}

/// A verifier for client chains issued by the CAs in `ca` (PEM text, or a path to it).
fn verifier(ca: &str, base_dir: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let (pem, what) = if ca.trim_start().starts_with("-----BEGIN") {
        (ca.as_bytes().to_vec(), "inline PEM".to_owned())
    } else {
        let path = base_dir.join(ca);
        let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        (pem, path.display().to_string())
    };
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: invalid PEM: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{what}: no usable CA certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| format!("{what}: {e}"))
}

struct MtlsAuth {
    /// Key of this instance's verdicts in a connection's [`ClientCert`].
    id: u64,
    /// Verifies chains against the route's `ca`; `None` trusts the listener's verification.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    identity: Identity,
    require_consumer: bool,
    consumers: Arc<Consumers>,
    anonymous: Option<Arc<Consumer>>,
    challenge: HeaderValue,
}

impl MtlsAuth {
    /// The full check of a chain, run once per connection.
    fn check(&self, cert: &ClientCert) -> Verdict {
        let leaf = &cert.chain[0];
        match &self.verifier {
            Some(v) => {
                v.verify_client_cert(leaf, &cert.chain[1..], UnixTime::now()).map_err(refusal)?;
            }
            None if !cert.verified => return Err("certificate not verified by the listener and no ca on the route"),
            None => {}
        }
        self.identify(leaf)
    }

    /// The consumer a verified leaf certificate names.
    fn identify(&self, leaf: &CertificateDer<'_>) -> Verdict {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|_| "certificate cannot be parsed")?;
        let name = self.identity.extract(&parsed).ok_or(self.identity.describe())?;
        let consumer = match self.consumers.find(&name) {
            Some(c) => c.clone(),
            None if self.require_consumer => return Err("certificate identity is not a consumer"),
            None => Arc::new(Consumer::new(&name, None, vec![])),
        };
        Ok(Authenticated { consumer, credential: Some(fingerprint(leaf)), anonymous: false })
    }
}

/// The SHA-256 fingerprint of a certificate in lower-case hex, its `X-Credential-Identifier`:
/// unlike the serial number it is unique whatever CA issued the certificate.
fn fingerprint(cert: &CertificateDer<'_>) -> HeaderValue {
    let digest = Sha256::digest(cert.as_ref());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::try_from(hex).expect("hex digits are a valid header value")
}

/// A short reason for logs: why the route's CA did not accept a chain.
fn refusal(e: rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate not yet valid",
            CertificateError::UnknownIssuer => "certificate not issued by the route's ca",
            CertificateError::Revoked => "certificate revoked",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate not for client authentication"
            }
            _ => "certificate not valid",
        },
        _ => "certificate not valid",
    }
}

#[async_trait]
impl Authenticator for MtlsAuth {
    fn name(&self) -> &'static str {
        "mtls-auth"
    }
    fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
    fn anonymous(&self) -> Option<&Arc<Consumer>> {
        self.anonymous.as_ref()
    }
    async fn authenticate(&self, cx: &mut RequestCtx) -> AuthOutcome {
        let Some(cert) = &cx.client_cert else { return AuthOutcome::Missing };
        if cert.chain.is_empty() {
            return AuthOutcome::Missing;
        }
        match cert.verdict(self.id, |c| self.check(c)) {
            Ok(who) => AuthOutcome::Accepted(who),
            Err(reason) => AuthOutcome::Rejected(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{authenticator, context, request};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
        date_time_ymd,
    };
    use serde_json::json;

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { pem, issuer: Issuer::new(params, key) }
    }

    /// A client certificate for `cn` with a DNS, an e-mail and a URI name; `expired` puts its
    /// validity in the past.
    fn client(ca: &Ca, cn: &str, expired: bool) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "Example");
        params.subject_alt_names = vec![
            SanType::DnsName(format!("{cn}.svc.test").try_into().unwrap()),
            SanType::Rfc822Name(format!("{cn}@example.com").try_into().unwrap()),
            SanType::URI(format!("spiffe://example/{cn}").try_into().unwrap()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            (params.not_before, params.not_after) = (date_time_ymd(2001, 1, 1), date_time_ymd(2002, 1, 1));
        }
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn with_cert(cert: CertificateDer<'static>, verified: bool) -> RequestCtx {
        let mut r = request("/", &[]);
        r.client_cert = Some(Arc::new(ClientCert::new(vec![cert], verified)));
        r
    }

    fn consumers() -> Consumers {
        let mut c = Consumers::new(std::env::temp_dir());
        c.add(Consumer::new("alice", Some("u-1"), vec!["ops".into()]), []).unwrap();
        c
    }

    fn username(outcome: AuthOutcome) -> String {
        match outcome {
            AuthOutcome::Accepted(a) => a.consumer.username.to_string(),
            AuthOutcome::Missing => panic!("missing"),
            AuthOutcome::Rejected(r) => panic!("rejected: {r}"),
        }
    }

    fn rejected(outcome: AuthOutcome) -> &'static str {
        match outcome {
            AuthOutcome::Rejected(r) => r,
            AuthOutcome::Accepted(a) => panic!("accepted {}", a.consumer.username),
            AuthOutcome::Missing => panic!("missing"),
        }
    }

    #[test]
    fn identity_extraction() {
        let der = client(&ca("CA"), "alice", false);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let get = |i: Identity| i.extract(&cert);
        assert_eq!(get(Identity::Cn).as_deref(), Some("alice"));
        assert_eq!(get(Identity::SanDns).as_deref(), Some("alice.svc.test"));
        assert_eq!(get(Identity::SanEmail).as_deref(), Some("alice@example.com"));
        assert_eq!(get(Identity::SanUri).as_deref(), Some("spiffe://example/alice"));
        assert_eq!(get(Identity::Subject).as_deref(), Some("CN=alice, O=Example"));
        // A certificate without the part asked for names nobody.
        let bare = {
            let key = KeyPair::generate().unwrap();
            CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&key).unwrap().der().clone()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&bare).unwrap();
        assert_eq!(Identity::SanEmail.extract(&cert), None);
        assert_eq!(Identity::SanUri.extract(&cert), None);
    }

    #[tokio::test]
    async fn route_ca_verifies_the_chain() {
        let (good, other) = (ca("good CA"), ca("other CA"));
        let cx = context(consumers());
        let a = authenticator(&Factory, json!({"ca": good.pem}), &cx).unwrap();
        let mut r = with_cert(client(&good, "alice", false), false);
        let AuthOutcome::Accepted(who) = a.authenticate(&mut r).await else { panic!("not accepted") };
        assert_eq!(who.consumer.custom_id.as_deref(), Some("u-1"), "the declared consumer");
        let fp = who.credential.unwrap();
        assert_eq!(fp.len(), 64, "{fp:?}");
        assert_eq!(fp, fingerprint(&r.client_cert.as_ref().unwrap().chain[0]));
        assert_eq!(username(a.authenticate(&mut with_cert(client(&good, "bob", false), false)).await), "bob");
        let r = rejected(a.authenticate(&mut with_cert(client(&other, "alice", false), true)).await);
        assert_eq!(r, "certificate not issued by the route's ca");
        let r = rejected(a.authenticate(&mut with_cert(client(&good, "alice", true), false)).await);
        assert_eq!(r, "certificate expired");
        assert!(matches!(a.authenticate(&mut request("/", &[])).await, AuthOutcome::Missing));
    }

    #[tokio::test]
    async fn without_ca_the_listener_must_have_verified() {
        let cx = context(consumers());
        let a = authenticator(&Factory, json!({"identity": "san_email"}), &cx).unwrap();
        let der = client(&ca("CA"), "alice", false);
        assert_eq!(username(a.authenticate(&mut with_cert(der.clone(), true)).await), "alice@example.com");
        let r = rejected(a.authenticate(&mut with_cert(der, false)).await);
        assert!(r.contains("not verified"), "{r}");
    }

    #[tokio::test]
    async fn require_consumer() {
        let cx = context(consumers());
        let a = authenticator(&Factory, json!({"require_consumer": true}), &cx).unwrap();
        let ca = ca("CA");
        assert_eq!(username(a.authenticate(&mut with_cert(client(&ca, "alice", false), true)).await), "alice");
        let r = rejected(a.authenticate(&mut with_cert(client(&ca, "mallory", false), true)).await);
        assert_eq!(r, "certificate identity is not a consumer");
    }

    #[test]
    fn config_errors() {
        let dir = tempfile_dir();
        let cx = crate::testing::context(Consumers::new(dir.clone()));
        let err = |config: serde_json::Value| match authenticator(&Factory, config, &cx) {
            Err(e) => format!("{}: {}", e.field, e.message),
            Ok(_) => panic!("accepted"),
        };
        let e = err(json!({"ca": "missing-ca.pem"}));
        assert!(e.starts_with("ca: cannot read ") && e.contains("missing-ca.pem"), "{e}");
        std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
        let e = err(json!({"ca": "empty.pem"}));
        assert!(e.starts_with("ca: ") && e.ends_with("empty.pem: no usable CA certificate"), "{e}");
        let e = err(json!({"identity": "email"}));
        assert!(e.starts_with("identity: unknown variant `email`"), "{e}");
        let e = err(json!({"anonymous": "nobody"}));
        assert_eq!(e, "anonymous: no consumer is named \"nobody\"");
        // A relative path is read from the config's directory.
        std::fs::write(dir.join("ca.pem"), ca("CA").pem).unwrap();
        assert!(authenticator(&Factory, json!({"ca": "ca.pem"}), &cx).is_ok());
    }

    /// A fresh directory for this test's files.
    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mtls-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
