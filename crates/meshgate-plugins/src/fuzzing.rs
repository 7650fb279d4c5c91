//! Parsers the fuzz targets (`fuzz/`) call directly, because reaching them through their plugin
//! would cost a password hash per input. Built only with the `fuzzing` feature.

use http::HeaderValue;

/// basic-auth's decoding of `Authorization: Basic <base64(user:password)>`: `None` for another
/// scheme, `Err` for malformed credentials.
pub fn basic_credentials(header: &HeaderValue) -> Option<Result<(String, Vec<u8>), ()>> {
    crate::auth::basic_auth::basic_credentials(header)
}
