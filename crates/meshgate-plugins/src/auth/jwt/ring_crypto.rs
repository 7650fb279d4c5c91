//! Token signatures checked with ring, which meshgate already links for TLS. jsonwebtoken's
//! pure-Rust backend spends ~0.2 ms of CPU on one RSA-2048 check; ring does it several times
//! faster, which matters for every token not yet in the cache of verified tokens. Signing
//! (tests only) and the JWK helpers stay with the pure-Rust backend.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{Error, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{hmac, signature as sig};

/// Makes ring the process's verifier. The first provider installed stays: call this before
/// jsonwebtoken is used (the plugin registry does).
pub fn install() {
    let _ = PROVIDER.install_default();
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    jwk_utils: JwkUtils { extract_rsa_public_key_components, extract_ec_public_key_coordinates, compute_digest },
};

fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key)
}

fn extract_rsa_public_key_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    (rust_crypto::DEFAULT_PROVIDER.jwk_utils.extract_rsa_public_key_components)(der)
}

fn extract_ec_public_key_coordinates(der: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    (rust_crypto::DEFAULT_PROVIDER.jwk_utils.extract_ec_public_key_coordinates)(der, alg)
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    (rust_crypto::DEFAULT_PROVIDER.jwk_utils.compute_digest)(data, hash)
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    // A key only ever checks its own family: an RSA public key is never an HMAC secret.
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier { alg: *alg, key: key.clone() }))
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl RingVerifier {
    fn check(&self, msg: &[u8], signature: &[u8]) -> bool {
        let hmac = |a| match self.key.try_get_hmac_secret() {
            Ok(secret) => hmac::verify(&hmac::Key::new(a, secret), msg, signature).is_ok(),
            Err(_) => false,
        };
        let rsa = |params: &'static sig::RsaParameters| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(der) => {
                sig::UnparsedPublicKey::new(params, der).verify(msg, signature).is_ok()
            }
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature).is_ok()
            }
        };
        let public = |a: &'static dyn sig::VerificationAlgorithm| {
            sig::UnparsedPublicKey::new(a, self.key.as_bytes()).verify(msg, signature).is_ok()
        };
        match self.alg {
            Algorithm::HS256 => hmac(hmac::HMAC_SHA256),
            Algorithm::HS384 => hmac(hmac::HMAC_SHA384),
            Algorithm::HS512 => hmac(hmac::HMAC_SHA512),
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
            Algorithm::ES256 => public(&sig::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => public(&sig::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => public(&sig::ED25519),
        }
    }
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), Error> {
        if self.check(msg, signature) { Ok(()) } else { Err(Error::new()) }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::tests::{keypair, rsa_pems, sign};
    use jsonwebtoken::EncodingKey;

    /// `(message, signature)` of a token.
    fn parts(token: &str) -> (&[u8], Vec<u8>) {
        use base64::Engine;
        let (message, signature) = token.rsplit_once('.').unwrap();
        (message.as_bytes(), base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap())
    }

    fn checks(alg: Algorithm, signing: &EncodingKey, key: &DecodingKey) {
        let token = sign(alg, signing, None, serde_json::json!({"sub": "x"}));
        let (message, signature) = parts(&token);
        let v = verifier(&alg, key).unwrap();
        assert!(v.verify(message, &signature).is_ok(), "{alg:?} verifies");
        let mut tampered = message.to_vec();
        tampered[3] ^= 1;
        assert!(v.verify(&tampered, &signature).is_err(), "{alg:?} refuses a changed message");
    }

    #[test]
    fn every_family_verifies_with_ring() {
        let (private, public) = rsa_pems();
        let rsa = EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();
        let rsa_public = DecodingKey::from_rsa_pem(public.as_bytes()).unwrap();
        checks(Algorithm::RS256, &rsa, &rsa_public);
        checks(Algorithm::PS384, &rsa, &rsa_public);
        let (es, es_public, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
        checks(Algorithm::ES256, &es, &DecodingKey::from_ec_pem(es_public.as_bytes()).unwrap());
        let (ed, ed_public, _) = keypair(&rcgen::PKCS_ED25519);
        checks(Algorithm::EdDSA, &ed, &DecodingKey::from_ed_pem(ed_public.as_bytes()).unwrap());
        checks(Algorithm::HS256, &EncodingKey::from_secret(b"s3cret"), &DecodingKey::from_secret(b"s3cret"));
        // A public key is never taken as an HMAC secret.
        assert!(verifier(&Algorithm::HS256, &rsa_public).is_err());
    }
}
