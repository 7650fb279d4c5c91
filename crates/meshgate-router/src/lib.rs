//! Precompiled HTTP route matching for meshgate's data plane.
//!
//! [`Router::build`] compiles a list of [`RouteSpec`]s into indexes once per config load;
//! [`Router::find`] then picks a request's route by looking only at the routes those indexes
//! return for its host and path, so 10,000 routes cost about what 10 do.
//!
//! # The path routes see
//!
//! Routes match the request's path in one normal form ([`normalize`]), which is also the path
//! plugins see and the upstream receives, so that no other spelling of a protected path can
//! reach it through another route:
//!
//! * escapes of unreserved characters are decoded (`/%61dmin` is `/admin`), other escapes are
//!   written in upper case (`%3f` is `%3F`), and bytes a path may not hold as they are (outside
//!   ASCII, `"`, `{`, …) are escaped (`/café` is `/caf%C3%A9`), RFC 3986 §6.2.2 and §2.1;
//! * `.` and `..` segments are resolved (`/public/../admin` is `/admin`; `..` stops at the root),
//!   RFC 3986 §5.2.4; a path ending in one ends with `/`;
//! * `//` is `/` (`http.merge_slashes`, on by default);
//! * refused with 400: a malformed escape, `%00`, a dot-segment with parameters (`/..;/`, which
//!   servers that strip `;` parameters read as `..`), and by default `%2F`, `%5C` and `\`
//!   (`http.escaped_slashes`: `reject`; `keep` leaves them encoded and not a separator, `decode`
//!   makes them `/` before `..` is resolved).
//!
//! Paths are case-sensitive, as RFC 3986 says; the query string is left as it is.
//!
//! # Matching
//!
//! A route matches a request when every kind of condition it has matches:
//!
//! * **hosts** — any of them. Comparison ignores ASCII case; the request's port is removed
//!   first (`example.com:8080`, `[::1]:80`), as are IPv6 brackets and one trailing dot.
//!   `*.example.com` matches `a.example.com` and `a.b.example.com`, never `example.com`.
//!   Without hosts, a route matches any host, and requests without one.
//! * **paths** — any of them, compared with the path only (a query string is ignored):
//!   * `=/x` (exact): the path is exactly `/x`;
//!   * `~re` (regex): `re` matches at the start of the path (it is compiled as `^(?:re)`; add
//!     `$` to require the whole path);
//!   * `/x` (prefix): the path starts with `/x`, byte for byte. Like Kong and nginx, this is not
//!     segment-aware: `/api` matches `/api`, `/api/users` *and* `/apix`. Write `/api/` or add
//!     `=/api` to stop at a segment boundary.
//! * **methods** — any of them.
//! * **headers** — every condition; a condition holds when some occurrence of the header has a
//!   value accepted by any of its values. A value written `~re` is a regex searched anywhere in
//!   the header value (unanchored, `regex` crate semantics: `~droid` accepts `Android 14`; use
//!   `^…$` to require the whole value); any other value must equal the header value exactly,
//!   case included.
//!
//! # Precedence
//!
//! When several routes match, the first rule that tells them apart decides:
//!
//! 1. higher `priority` wins;
//! 2. host specificity: an exact host beats a wildcard host, a longer wildcard suffix beats a
//!    shorter one (`*.api.example.com` over `*.example.com`), and any host beats no host;
//! 3. path specificity: exact beats regex, regex beats prefix, a longer prefix beats a shorter
//!    one, and any path beats no path;
//! 4. more header conditions win; then having methods beats having none;
//! 5. declaration order: the earlier route wins.
//!
//! Rules 2 and 3 judge the host and path pattern *that matched*: a route listing both
//! `api.example.com` and `*.example.com` ranks as an exact-host route for `api.example.com`
//! and as a wildcard route for `b.example.com`. [`RouteMatch::matched_path_len`] likewise comes
//! from the winning pattern.
//!
//! Because rule 5 leaves no ties, the result never depends on hashing or build order.
//!
//! # Analysis
//!
//! [`Router::analyze`] reports routes that can never be chosen ([`Finding`]); it is
//! conservative and reports only what it can prove.

mod analyze;
mod host;
mod index;
pub mod normalize;
mod router;
mod spec;

pub use analyze::Finding;
pub use index::{FastMap, FoldHasher};
pub use normalize::{PathError, PathRules, normalize};
pub use router::{BuildError, RouteMatch, Router};
pub use spec::{HeaderMatch, RequestView, RouteSpec, ValueMatch};

#[cfg(test)]
mod tests;
