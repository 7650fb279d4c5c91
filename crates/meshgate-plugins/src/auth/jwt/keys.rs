//! Verification keys, from the config or from a JWKS document.
//!
//! Every key is bound, when it is loaded, to the algorithms its kind can verify: an HMAC secret to
//! `HS*`, an RSA public key to `RS*`/`PS*`, a P-256 key to `ES256` and so on. A token's `alg`
//! only picks among those, so it can never make a public key act as an HMAC secret (algorithm
//! confusion), and a JWKS document can never bring in a symmetric key at all.

use http::HeaderValue;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use meshgate_core::{PluginConfigError, Secret};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

/// Every algorithm the plugin knows, in a fixed order: [`Algs`] is a bit set over it.
pub(super) const ALL: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The position of `alg` in [`ALL`].
pub(super) fn index(alg: Algorithm) -> usize {
    ALL.iter().position(|a| *a == alg).unwrap_or_else(|| unreachable!("ALL lists every algorithm"))
}

/// A set of algorithms, one bit per entry of [`ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Algs(u16);

impl Algs {
    /// `HS256`, `HS384`, `HS512`: what an HMAC secret verifies.
    pub(super) const HMAC: Algs = Algs(0b111);
    /// `RS*` and `PS*`: what an RSA public key verifies.
    pub(super) const RSA: Algs = Algs(0b111_111 << 3);
    /// Every public-key algorithm: the default for keys from a JWKS document.
    pub(super) const PUBLIC: Algs = Algs(0b1_1111_1111 << 3);

    /// The set holding `alg` alone.
    pub(super) fn of(alg: Algorithm) -> Algs {
        Algs(1 << index(alg))
    }

    /// Whether `alg` is in the set.
    pub(super) fn contains(self, alg: Algorithm) -> bool {
        self.0 & Algs::of(alg).0 != 0
    }

    /// Both sets together.
    pub(super) fn union(self, other: Algs) -> Algs {
        Algs(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A key ready to verify tokens, with the algorithms it may verify.
pub(super) struct Key {
    /// The key material.
    pub(super) decoding: DecodingKey,
    /// The algorithms this key may verify; a token with another `alg` is refused.
    pub(super) algs: Algs,
    /// The key's `kid`, precomputed for `X-Credential-Identifier`.
    pub(super) kid: Option<HeaderValue>,
}

/// Keys by `kid`, and keys without one.
#[derive(Default)]
pub(super) struct KeySet {
    by_kid: HashMap<Box<str>, Key>,
    without_kid: Vec<Key>,
}

impl KeySet {
    /// Adds `key`; fails when its `kid` is already taken.
    fn insert(&mut self, kid: Option<&str>, key: Key) -> Result<(), String> {
        match kid {
            None => self.without_kid.push(key),
            Some(kid) => {
                if self.by_kid.insert(kid.into(), key).is_some() {
                    return Err(format!("kid {kid:?} is given twice"));
                }
            }
        }
        Ok(())
    }

    /// The key named `kid`.
    pub(super) fn get(&self, kid: &str) -> Option<&Key> {
        self.by_kid.get(kid)
    }

    /// Keys without a `kid`: they may verify any token of their algorithms.
    pub(super) fn without_kid(&self) -> impl Iterator<Item = &Key> {
        self.without_kid.iter()
    }

    /// Keys with a `kid` (tried for tokens that name none).
    pub(super) fn with_kid(&self) -> impl Iterator<Item = &Key> {
        self.by_kid.values()
    }

    /// How many keys there are.
    pub(super) fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// The algorithms the keys may verify, together.
    pub(super) fn algs(&self) -> Algs {
        self.without_kid().chain(self.with_kid()).fold(Algs::default(), |a, k| a.union(k.algs))
    }
}

/// One entry of the `keys:` setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InlineKey {
    /// Tokens naming this `kid` are verified with this key only; a key without one is tried for
    /// any token of its algorithm.
    #[serde(default)]
    kid: Option<String>,
    /// The one algorithm this key verifies.
    algorithm: Algorithm,
    /// The HMAC secret (`HS*` only).
    #[serde(default)]
    secret: Option<Secret>,
    /// The secret is written in base64 (standard or URL-safe alphabet).
    #[serde(default)]
    secret_base64: bool,
    /// The PEM public key (`RS*`, `PS*`, `ES*`, `EdDSA`): `-----BEGIN PUBLIC KEY-----` (SPKI), or
    /// `-----BEGIN RSA PUBLIC KEY-----` for RSA.
    #[serde(default)]
    public_key: Option<Secret>,
}

/// The keys of the `keys:` setting. Errors name the entry's field (`keys[1].public_key`).
pub(super) fn inline(keys: &[InlineKey], base_dir: &Path) -> Result<KeySet, PluginConfigError> {
    let mut set = KeySet::default();
    for (i, k) in keys.iter().enumerate() {
        let bad = |field: &str, msg: String| PluginConfigError::new(format!("keys[{i}]{field}"), msg);
        let hmac = Algs::HMAC.contains(k.algorithm);
        let decoding = if hmac {
            if k.public_key.is_some() {
                return Err(bad(".public_key", format!("{:?} is an HMAC algorithm: give `secret`", k.algorithm)));
            }
            let secret = k.secret.as_ref().ok_or_else(|| bad(".secret", "required for HMAC algorithms".to_owned()))?;
            let secret = secret.resolve(base_dir).map_err(|m| bad(".secret", m))?;
            if k.secret_base64 {
                decode_base64(&secret).map(|b| DecodingKey::from_secret(&b)).map_err(|m| bad(".secret", m))?
            } else {
                DecodingKey::from_secret(secret.as_bytes())
            }
        } else {
            if k.secret.is_some() || k.secret_base64 {
                return Err(bad(".secret", format!("{:?} is a public-key algorithm: give `public_key`", k.algorithm)));
            }
            let pem =
                k.public_key.as_ref().ok_or_else(|| bad(".public_key", "required for this algorithm".to_owned()))?;
            let pem = pem.resolve(base_dir).map_err(|m| bad(".public_key", m))?;
            let key = match k.algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            };
            key.map_err(|e| bad(".public_key", format!("not a PEM public key for {:?}: {e}", k.algorithm)))?
        };
        let kid = match &k.kid {
            Some(kid) => {
                Some(HeaderValue::from_str(kid).map_err(|_| bad(".kid", "not a valid header value".to_owned()))?)
            }
            None => None,
        };
        let key = Key { decoding, algs: Algs::of(k.algorithm), kid };
        set.insert(k.kid.as_deref(), key).map_err(|m| bad(".kid", m))?;
    }
    Ok(set)
}

/// Standard or URL-safe base64, padded or not (secrets are pasted from many tools).
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let normalized: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let padded = format!("{normalized}{}", "=".repeat((4 - normalized.len() % 4) % 4));
    DecodingKey::from_base64_secret(&padded)
        .map(|k| k.as_bytes().to_vec())
        .map_err(|_| "secret_base64 is set and the secret is not base64".to_owned())
}

/// The signing keys of a JWKS document (`{"keys": [...]}`). Keys that cannot be used are skipped
/// (and logged): encryption keys, symmetric (`oct`) keys, unknown key types or curves, and keys
/// whose `alg` does not fit their type.
pub(super) fn from_jwks(doc: &[u8]) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(doc).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut set = KeySet::default();
    for (i, value) in doc.keys.into_iter().enumerate() {
        let key = serde_json::from_value::<Jwk>(value)
            .map_err(|_| "not a supported JWK")
            .and_then(|jwk| jwk_key(&jwk).map(|key| (jwk.common.key_id, key)));
        match key {
            Ok((kid, key)) => {
                if let Err(m) = set.insert(kid.as_deref(), key) {
                    tracing::warn!(key = i, "JWKS: {m}; the first is used");
                }
            }
            Err(why) => tracing::debug!(key = i, why, "JWKS: key skipped"),
        }
    }
    Ok(set)
}

/// One JWK as a verification key bound to the algorithms of its type (narrowed to its `alg`).
fn jwk_key(jwk: &Jwk) -> Result<Key, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    let algs = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algs::RSA,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algs::of(Algorithm::ES256),
            EllipticCurve::P384 => Algs::of(Algorithm::ES384),
            _ => return Err("an unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algs::of(Algorithm::EdDSA),
        AlgorithmParameters::OctetKeyPair(_) => return Err("an unsupported curve"),
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key (never taken from a JWKS)"),
    };
    let algs = match jwk.common.key_algorithm {
        None => algs,
        Some(named) => {
            let alg = Algorithm::from_str(&named.to_string()).map_err(|_| "not a signing algorithm")?;
            if !algs.contains(alg) {
                return Err("its alg does not fit its key type");
            }
            Algs::of(alg)
        }
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|_| "invalid key parameters")?;
    let kid = jwk.common.key_id.as_deref().and_then(|k| HeaderValue::from_str(k).ok());
    Ok(Key { decoding, algs, kid })
}
