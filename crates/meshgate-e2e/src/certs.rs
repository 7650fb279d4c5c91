//! Certificates made in the test: CAs and the server and client certificates they sign, written
//! as PEM files for the gateway's config, plus rustls configs for test clients and servers.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A throwaway certificate authority with its files in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_path: PathBuf,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    serial: AtomicUsize,
}

/// A leaf certificate signed by a [`TestPki`], with its PEM files.
#[derive(Clone)]
pub struct LeafCert {
    /// PEM file with the certificate (leaf only).
    pub cert_path: PathBuf,
    /// PEM file with the PKCS#8 private key.
    pub key_path: PathBuf,
    /// The certificate, to compare with what a server presented.
    pub der: CertificateDer<'static>,
    /// The private key.
    pub key_der: Arc<Vec<u8>>,
}

impl TestPki {
    /// Makes a new CA named `common_name` and writes its certificate as `ca.pem`.
    pub fn new(common_name: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, cert.pem()).expect("write CA");
        let ca_der = cert.der().clone();
        TestPki { dir, ca_path, ca_der, issuer: Issuer::new(params, key), serial: AtomicUsize::new(0) }
    }

    /// The CA certificate's PEM file.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The directory holding this CA's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a leaf certificate for `names` (DNS names, wildcards like `*.b.test`, or IPs).
    pub fn leaf(&self, names: &[&str]) -> LeafCert {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        self.issue(params)
    }

    /// Issues a client certificate (extended key usage `clientAuth`) with common name `cn` and
    /// the e-mail address `<cn>@example.com` as subject alternative name.
    pub fn client(&self, cn: &str) -> LeafCert {
        self.issue(client_params(cn))
    }

    /// Like [`TestPki::client`], but valid only in 2001: long expired.
    pub fn expired_client(&self, cn: &str) -> LeafCert {
        let mut params = client_params(cn);
        (params.not_before, params.not_after) = (date_time_ymd(2001, 1, 1), date_time_ymd(2002, 1, 1));
        self.issue(params)
    }

    /// Signs a certificate made from `params` and writes it and its key as PEM files.
    pub fn issue(&self, params: CertificateParams) -> LeafCert {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_path = self.dir.path().join(format!("leaf{n}.pem"));
        let key_path = self.dir.path().join(format!("leaf{n}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write leaf cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write leaf key");
        LeafCert { cert_path, key_path, der: cert.der().clone(), key_der: Arc::new(key.serialize_der()) }
    }

    /// A client config that trusts only this CA and offers `alpn` (e.g. `[b"h2"]`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        self.client_config_for(alpn, None)
    }

    /// Like [`TestPki::client_config`], and presents `cert` when the server asks for a client
    /// certificate (mutual TLS). `cert` may come from another CA.
    pub fn client_config_with_cert(&self, alpn: &[&[u8]], cert: &LeafCert) -> Arc<ClientConfig> {
        self.client_config_for(alpn, Some(cert))
    }

    fn client_config_for(&self, alpn: &[&[u8]], cert: Option<&LeafCert>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA is a valid root");
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(c) => builder.with_client_auth_cert(vec![c.der.clone()], c.key()).expect("valid client cert and key"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let email = format!("{cn}@example.com").try_into().expect("an e-mail address is IA5");
    params.subject_alt_names = vec![SanType::Rfc822Name(email)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

impl LeafCert {
    /// The private key, for rustls.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.as_ref().clone()))
    }

    /// A server config presenting this certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let key = self.key();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("valid certificate and key");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
