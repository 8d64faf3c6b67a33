//! Bounded-cardinality routes from URL paths, for metric labels and span names.
//!
//! `/users/12345/orders` and `/users/67890/orders` are the same route; as metric labels the raw
//! paths would make one time series per user. Without the server's routing table we guess:
//! [`route`] replaces path segments that look like identifiers with `*`, and [`RouteLimiter`]
//! caps how many distinct routes survive, for the identifiers the guess misses.

use std::collections::HashSet;

/// Segments kept from the start of a path; deeper ones are replaced by a single `*`.
const MAX_SEGMENTS: usize = 8;

/// Segments longer than this are taken for identifiers (tokens, hashes, base64) whatever they
/// contain: route names are words, rarely this long.
const MAX_WORD_LEN: usize = 32;

/// Hex strings at least this long are taken for identifiers (hashes, object ids); shorter ones
/// are too often words (`cafe`, `add`, `feed`).
const MIN_HEX_ID_LEN: usize = 8;

/// Letter-and-digit mixes at least this long, with at least a third digits, are taken for
/// identifiers (`user1234`, `a1b2c3d4`); shorter ones are too often names (`v2`, `ipv6`, `x86_64`).
const MIN_MIXED_ID_LEN: usize = 8;

/// Longest file extension kept on a segment whose stem is an identifier (`*.json`).
const MAX_EXTENSION_LEN: usize = 5;

/// The route a URL path belongs to: the path with identifier-like segments replaced by `*`
/// and everything past the 8th segment by a single `*`, e.g. `/users/*/orders` for
/// `/users/12345/orders`.
///
/// A segment is an identifier if it is longer than 32 bytes, has digits but no letters
/// (`12345`, `2024-01-31`, `1.2.3`), is hex of 8 digits or more with at least one decimal digit
/// (a hash or object id), is a UUID, or mixes letters and digits over 8 bytes or more with at
/// least a third digits. A file name whose stem is an identifier, or has one among its
/// dot-separated parts, keeps a short alphanumeric extension: `app.3f2a9c1b.js` → `*.js`.
/// Percent-encoded bytes are not decoded. Empty segments stay, so `/a//b/` keeps its shape.
///
/// A query string or fragment left on `path` is dropped; an empty path is `/`; `*` (from
/// `OPTIONS *`) stays `*`, and other paths not starting with `/` (`CONNECT`'s `host:port`)
/// become `/*`.
pub fn route(path: &str) -> String {
    let path = path.find(['?', '#']).map_or(path, |end| &path[..end]);
    if path.is_empty() {
        return "/".to_owned();
    }
    if path == "*" {
        return "*".to_owned();
    }
    let Some(segments) = path.strip_prefix('/') else { return "/*".to_owned() };
    let mut route = String::with_capacity(path.len());
    let mut rest = segments;
    for _ in 0..MAX_SEGMENTS {
        let (segment, next) = rest.split_once('/').unwrap_or((rest, ""));
        route.push('/');
        push_segment(&mut route, segment);
        if !rest.contains('/') {
            return route;
        }
        rest = next;
    }
    // A trailing slash after the last kept segment is not a deeper level.
    route.push_str(if rest.is_empty() { "/" } else { "/*" });
    route
}

/// Appends `segment`, or what replaces it if it is an identifier.
fn push_segment(route: &mut String, segment: &str) {
    if let Some((stem, extension)) = split_extension(segment) {
        if is_id(stem) || stem.split('.').any(is_id) {
            route.push('*');
            route.push('.');
            route.push_str(extension);
            return;
        }
    }
    route.push_str(if is_id(segment) { "*" } else { segment });
}

/// A file name's stem and extension, if the extension is short, alphanumeric and has a letter:
/// then there are few enough of them that keeping it costs little cardinality and tells apart
/// `/static/*.js` from `/static/*.css`.
fn split_extension(segment: &str) -> Option<(&str, &str)> {
    let (stem, extension) = segment.rsplit_once('.')?;
    let plausible = !stem.is_empty()
        && (1..=MAX_EXTENSION_LEN).contains(&extension.len())
        && extension.bytes().all(|byte| byte.is_ascii_alphanumeric())
        && extension.bytes().any(|byte| byte.is_ascii_alphabetic());
    plausible.then_some((stem, extension))
}

/// Whether a path segment looks like an identifier rather than a fixed part of a route.
fn is_id(segment: &str) -> bool {
    let len = segment.len();
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    let letters = segment.bytes().filter(u8::is_ascii_alphabetic).count();
    len > MAX_WORD_LEN
        || (digits > 0 && letters == 0)
        || (len >= MIN_HEX_ID_LEN && digits > 0 && segment.bytes().all(|byte| byte.is_ascii_hexdigit()))
        || is_uuid(segment)
        || (len >= MIN_MIXED_ID_LEN && digits > 0 && letters > 0 && digits * 3 >= len)
}

/// Whether `segment` is a UUID in its 8-4-4-4-12 hex form, in either case.
fn is_uuid(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|group| group.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The literal route that replaces new routes once a [`RouteLimiter`] is full.
pub const OVERFLOW_ROUTE: &str = "/*";

/// Caps the number of distinct routes, since [`route`]'s guesses miss some identifiers (words,
/// slugs, letter-only tokens): the first `max` distinct routes are kept, later new ones become
/// [`OVERFLOW_ROUTE`].
#[derive(Debug, Clone)]
pub struct RouteLimiter {
    max: usize,
    /// foldhash: one lookup per exchange, where SipHash was 1% of oxeye's CPU under load
    /// (the set is bounded by `max`, so a hostile spread of paths cannot grow it).
    seen: HashSet<String, foldhash::fast::RandomState>,
}

impl RouteLimiter {
    /// A limiter that keeps at most `max` distinct routes.
    pub fn new(max: usize) -> Self {
        RouteLimiter { max, seen: HashSet::default() }
    }

    /// `route` if it is already known or there is room to remember it, else [`OVERFLOW_ROUTE`].
    pub fn limit(&mut self, route: String) -> String {
        if route == OVERFLOW_ROUTE || self.seen.contains(&route) {
            return route;
        }
        if self.seen.len() >= self.max {
            return OVERFLOW_ROUTE.to_owned();
        }
        self.seen.insert(route.clone());
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_stars() {
        for (path, expected) in [
            ("/users/12345/orders", "/users/*/orders"),
            ("/api/v1/items", "/api/v1/items"),
            ("/orders/550e8400-e29b-41d4-a716-446655440000", "/orders/*"),
            ("/blobs/3f2a9c1b7e", "/blobs/*"),
            ("/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709/files", "/commits/*/files"),
            ("/words/deadbeef/cafe/facade", "/words/deadbeef/cafe/facade"),
            ("/u/user1234/a1b2c3d4", "/u/*/*"),
            ("/oauth2/ipv6/x86_64/h264/covid19", "/oauth2/ipv6/x86_64/h264/covid19"),
            ("/days/2024-01-31/v/1.2.3", "/days/*/v/*"),
            ("/t/eyJhbGciOiJIUzI1NiJ9eyJzdWIiOiIxMjM0NTY3ODkwIn0", "/t/*"),
            ("/search/hello%20world", "/search/hello%20world"),
            ("/a/-1", "/a/*"),
        ] {
            assert_eq!(route(path), expected, "{path}");
        }
    }

    #[test]
    fn file_names_keep_their_extension() {
        for (path, expected) in [
            ("/static/app.3f2a9c1b.js", "/static/*.js"),
            ("/static/app.css", "/static/app.css"),
            ("/invoices/12345.pdf", "/invoices/*.pdf"),
            ("/img/550e8400-e29b-41d4-a716-446655440000.png", "/img/*.png"),
            ("/index.html", "/index.html"),
            ("/api.v2/x", "/api.v2/x"),
            ("/lib/jquery-3.6.0.min.js", "/lib/*.js"),
            ("/weird/12345.", "/weird/*"),
            ("/weird/.12345", "/weird/*"),
        ] {
            assert_eq!(route(path), expected, "{path}");
        }
    }

    #[test]
    fn shape_is_kept() {
        assert_eq!(route(""), "/");
        assert_eq!(route("/"), "/");
        assert_eq!(route("/a//b/"), "/a//b/");
        assert_eq!(route("/a/1/2"), "/a/*/*");
        assert_eq!(route("/x?id=5#top"), "/x");
        assert_eq!(route("*"), "*");
        assert_eq!(route("db.example:5432"), "/*");
    }

    #[test]
    fn depth_is_limited() {
        assert_eq!(route("/1/2/3/4/5/6/7/8"), "/*/*/*/*/*/*/*/*");
        assert_eq!(route("/a/b/c/d/e/f/g/h/"), "/a/b/c/d/e/f/g/h/");
        assert_eq!(route("/a/b/c/d/e/f/g/h/i"), "/a/b/c/d/e/f/g/h/*");
        assert_eq!(route("/a/b/c/d/e/f/g/h/i/j/k"), "/a/b/c/d/e/f/g/h/*");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: Vec<char> = "/a0f.-?#%é*".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let path: String = (0..state % 40).map(|i| alphabet[((state >> (i % 60)) % 11) as usize]).collect();
            let route = route(&path);
            assert!(route.starts_with('/') || route == "*", "{path:?} → {route:?}");
            assert!(route.split('/').count() <= MAX_SEGMENTS + 2, "{path:?} → {route:?}");
        }
    }

    #[test]
    fn limiter_overflows_new_routes_only() {
        let mut limiter = RouteLimiter::new(2);
        assert_eq!(limiter.limit("/a".into()), "/a");
        assert_eq!(limiter.limit("/b".into()), "/b");
        assert_eq!(limiter.limit("/c".into()), OVERFLOW_ROUTE);
        assert_eq!(limiter.limit("/a".into()), "/a");
        assert_eq!(limiter.limit("/b".into()), "/b");
        assert_eq!(limiter.limit(OVERFLOW_ROUTE.into()), OVERFLOW_ROUTE);
        assert_eq!(RouteLimiter::new(0).limit("/a".into()), OVERFLOW_ROUTE);
    }
}
