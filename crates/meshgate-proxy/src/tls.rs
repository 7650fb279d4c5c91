//! TLS on both sides: certificates chosen by SNI and client certificates (mutual TLS) for
//! listeners, and client settings (roots, verification, ALPN) for `https` upstreams. Built at config-compile time, so a bad certificate is
//! a config error that points at its line, not a failure on the first handshake.

use meshgate_config::model::{Certificate, ClientAuth, ListenerTls, UpstreamTls};
use meshgate_config::{ConfigError, Source};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Picks a certificate by the client's SNI: exact name, then the longest wildcard, then the
/// listener's first certificate (clients without SNI, or asking for an unknown name).
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else { return Some(self.default.clone()) };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        for (suffix, key) in &self.wildcard {
            if name.len() > suffix.len() && name.ends_with(suffix.as_str()) {
                return Some(key.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// A listener's TLS config, and whether it verifies client certificates against a CA (so that
/// requests can tell a verified chain from one merely presented).
pub struct ListenerTlsRt {
    /// The rustls config for the handshakes.
    pub config: Arc<ServerConfig>,
    /// Client chains are verified against `client_auth.ca` during the handshake.
    pub verifies_clients: bool,
}

/// Builds a listener's TLS config; `field` is the listener's config path (e.g. `listeners[0]`).
pub fn server_config(
    tls: &ListenerTls,
    http2: bool,
    source: &Source,
    field: &str,
) -> Result<ListenerTlsRt, ConfigError> {
    let provider = Arc::new(default_provider());
    let mut exact = HashMap::new();
    let mut wildcard = Vec::new();
    let mut default = None;
    for (i, cert) in tls.certificates.iter().enumerate() {
        let at = format!("{field}.tls.certificates[{i}]");
        let key = load_certified_key(cert, source, &provider)
            .map_err(|(sub, msg)| source.error(format!("{at}.{sub}"), msg))?;
        let key = Arc::new(key);
        let names = if cert.sni.is_empty() { names_in_cert(&key.cert[0]) } else { cert.sni.clone() };
        for name in names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(suffix) => wildcard.push((suffix.to_owned(), key.clone())),
                None => {
                    exact.entry(name).or_insert_with(|| key.clone());
                }
            }
        }
        default.get_or_insert(key);
    }
    let default = default.ok_or_else(|| source.error(format!("{field}.tls.certificates"), "no certificate"))?;
    wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| source.error(format!("{field}.tls"), e.to_string()))?;
    let (builder, verifies_clients) = match &tls.client_auth {
        None => (builder.with_no_client_auth(), false),
        Some(auth) => {
            let at = format!("{field}.tls.client_auth");
            let verifier = client_verifier(auth, source, &at, provider)?;
            (builder.with_client_cert_verifier(verifier), auth.ca.is_some())
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { exact, wildcard, default }));
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(ListenerTlsRt { config: Arc::new(config), verifies_clients })
}

/// The listener's client certificate policy: verified against `ca`, or (without `ca`) asked
/// for and taken as presented, for routes to verify.
fn client_verifier(
    auth: &ClientAuth,
    source: &Source,
    at: &str,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let Some(ca) = &auth.ca else { return Ok(Arc::new(AnyClientCert { provider, required: auth.required })) };
    let roots = load_roots(ca, source).map_err(|m| source.error(format!("{at}.ca"), m))?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if auth.required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| source.error(format!("{at}.ca"), format!("{}: {e}", ca.display())))
}

/// The CA certificates of a PEM bundle; at least one.
fn load_roots(ca: &Path, source: &Source) -> Result<RootCertStore, String> {
    let certs = read_certs(&resolve(source, ca))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", ca.display()));
    }
    Ok(roots)
}

/// Relative paths in a config file are relative to the file, so a config directory can move.
fn resolve(source: &Source, path: &Path) -> PathBuf {
    match source.path().parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

fn load_certified_key(
    cert: &Certificate,
    source: &Source,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, (&'static str, String)> {
    let (cert_path, key_path) = (resolve(source, &cert.cert), resolve(source, &cert.key));
    let chain = read_certs(&cert_path).map_err(|m| ("cert", m))?;
    if chain.is_empty() {
        return Err(("cert", format!("{}: no PEM certificate found", cert_path.display())));
    }
    let key = read_key(&key_path).map_err(|m| ("key", m))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| ("key", format!("{}: {e}", key_path.display())))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key found", path.display()))
}

/// DNS names from a certificate's subject alternative names, for certificates listed without `sni`.
fn names_in_cert(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert).map(|c| c.valid_dns_names().map(str::to_owned).collect()).unwrap_or_default()
}

/// Builds the client TLS config for a service's `https` upstream. ALPN offers h2 and HTTP/1.1 so
/// the upstream decides.
pub fn client_config(tls: &UpstreamTls, source: &Source, field: &str) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = Arc::new(default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| source.error(field, e.to_string()))?;
    let mut config = if !tls.verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
    } else {
        let roots = match &tls.ca {
            Some(ca) => load_roots(ca, source).map_err(|m| source.error(format!("{field}.ca"), m))?,
            None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SNI/verification name for an upstream host.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("invalid TLS server name {name:?}: {e}"))
}

/// Accepts any upstream certificate: `tls.verify: false`, for test setups only. Signatures are
/// still checked so the handshake itself stays sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Asks for a client certificate and takes any chain (`client_auth` without `ca`): the chain is
/// handed to the routes unverified (`ClientCert::verified` is false) for `mtls-auth` to verify
/// against the route's CA. The handshake signature is still checked, so the client holds the
/// key of the certificate it presented.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
    required: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
