//! Request lines: the method, the target (reduced to a path and an authority) and the version.

use agent_common::net::HTTP_METHODS;

use super::syntax::{parse_version, split_at_space};

/// An HTTP request method: one of [`HTTP_METHODS`], which the BPF filter reads too, in its
/// order. Extension methods (WebDAV's `PROPFIND`, …) are not recognised, so such requests are
/// not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
}

impl Method {
    /// Every method, in [`HTTP_METHODS`]'s order: a method's discriminant indexes its token.
    const ALL: [Method; HTTP_METHODS.len()] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    /// The method's token as it appears on the request line, e.g. `"GET"`.
    pub fn as_str(self) -> &'static str {
        HTTP_METHODS[self as usize]
    }

    /// The method whose token is exactly `token`; methods are case-sensitive (RFC 9110 §9.1).
    fn from_token(token: &[u8]) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.as_str().as_bytes() == token)
    }
}

/// What a valid request line says.
pub(super) struct RequestLine<'a> {
    pub(super) method: Method,
    pub(super) path: &'a str,
    pub(super) authority: Option<&'a str>,
    pub(super) version_minor: u8,
}

/// Parses `METHOD SP target SP HTTP/1.x`, with exactly one space between the parts (RFC 9112
/// §3 allows servers to be more lenient, but we would rather miss a span than invent one).
pub(super) fn parse_request_line(line: &[u8]) -> Option<RequestLine<'_>> {
    let (method, rest) = split_at_space(line)?;
    let (target, version) = split_at_space(rest)?;
    let method = Method::from_token(method)?;
    let version_minor = parse_version(version)?;
    if target.is_empty() || !target.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let (path, authority) = split_target(method, std::str::from_utf8(target).ok()?)?;
    Some(RequestLine { method, path, authority, version_minor })
}

/// The path and authority of a request target in any of RFC 9112 §3.2's four forms; `None` if
/// the target has none of them or one the method does not allow.
fn split_target(method: Method, target: &str) -> Option<(&str, Option<&str>)> {
    if target.starts_with('/') {
        return Some((strip_query(target), None));
    }
    if target == "*" {
        return (method == Method::Options).then_some(("*", None));
    }
    if method == Method::Connect {
        // Authority form, `host:port`: the only thing that names where the tunnel goes.
        return (!target.contains(['/', '?', '#', '@'])).then_some((target, Some(target)));
    }
    let rest = strip_scheme(target)?;
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    // Userinfo is a credential, not an address, and must not end up in a span.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return None;
    }
    let path = strip_query(path);
    Some((if path.is_empty() { "/" } else { path }, Some(authority)))
}

/// `target` up to its query string or fragment.
fn strip_query(target: &str) -> &str {
    target.find(['?', '#']).map_or(target, |end| &target[..end])
}

/// What follows an absolute-form target's `http://` or `https://` (in any case).
fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix.eq_ignore_ascii_case(scheme).then(|| target.get(scheme.len()..)).flatten()
    })
}

/// Whether `prefix` starts like a request: a known method and a space, then a target byte if
/// there is one. A cheap filter; [`super::parse_requests`] decides.
pub(super) fn looks_like_request(prefix: &[u8]) -> bool {
    Method::ALL.into_iter().any(|method| {
        let name = method.as_str().as_bytes();
        prefix.starts_with(name)
            && prefix.get(name.len()) == Some(&b' ')
            && prefix.get(name.len() + 1).is_none_or(u8::is_ascii_graphic)
    })
}

/// Whether `rest`, a request line cut off before its LF, starts like one, so that the next
/// buffer would continue it.
pub(super) fn may_start_request(rest: &[u8]) -> bool {
    looks_like_request(rest)
        || Method::ALL.into_iter().any(|method| {
            let name = method.as_str().as_bytes();
            name.starts_with(rest) || rest.strip_prefix(name) == Some(b" ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::net::{is_http_prefix, is_response_prefix, PREFIX_BYTES};

    use crate::net::http::{parse_requests, test_support::only, Resume};

    #[test]
    fn methods_are_the_shared_list_in_order() {
        for (index, method) in Method::ALL.into_iter().enumerate() {
            assert_eq!(method as usize, index);
            assert_eq!(format!("{method:?}").to_ascii_uppercase(), method.as_str(), "the variant names its token");
        }
    }

    #[test]
    fn bpf_filter_passes_every_method_the_parser_reads() {
        for method in Method::ALL {
            let request = format!("{} / HTTP/1.1\r\n\r\n", method.as_str());
            assert_eq!(only(request.as_bytes()).method, method);
            let prefix: [u8; PREFIX_BYTES] = request.as_bytes()[..PREFIX_BYTES].try_into().expect("long enough");
            assert!(is_http_prefix(&prefix) && !is_response_prefix(&prefix), "{request:?}");
        }
    }

    #[test]
    fn query_string_and_fragment_are_stripped() {
        assert_eq!(only(b"GET /a/b?x=1#f HTTP/1.1\r\n\r\n").path, "/a/b");
        assert_eq!(only(b"GET /a/b#f?x HTTP/1.1\r\n\r\n").path, "/a/b");
        assert_eq!(only(b"GET /?x HTTP/1.1\r\n\r\n").path, "/");
    }

    #[test]
    fn absolute_form_is_reduced_to_its_path() {
        let head = only(b"GET http://user:pw@proxy.example:3128/a/b?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!((head.path, head.host), ("/a/b", Some("proxy.example:3128")));
        assert_eq!(only(b"GET HTTPS://h?q HTTP/1.1\r\n\r\n").path, "/");
        assert!(parse_requests(b"GET http:///x HTTP/1.1\r\n\r\n").heads.is_empty());
        assert!(parse_requests(b"GET ftp://h/x HTTP/1.1\r\n\r\n").heads.is_empty());
    }

    #[test]
    fn asterisk_and_authority_forms() {
        assert_eq!(only(b"OPTIONS * HTTP/1.1\r\n\r\n").path, "*");
        assert!(parse_requests(b"GET * HTTP/1.1\r\n\r\n").heads.is_empty());
        let requests = parse_requests(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x16\x03\x01");
        assert_eq!((requests.heads[0].path, requests.heads[0].host), ("db:5432", Some("db:5432")));
        assert!(requests.continues, "a tunnel follows");
        assert!(parse_requests(b"GET example.com:80 HTTP/1.1\r\n\r\n").heads.is_empty());
    }

    #[test]
    fn request_line_cut_off() {
        let requests = parse_requests(b"GET /long/path/that/was/cu");
        assert_eq!((requests.heads.len(), requests.continues), (0, true));
        let second = parse_requests(b"GET /a HTTP/1.1\r\n\r\nPOS");
        assert_eq!((second.heads.len(), second.continues), (1, true));
        let garbage = parse_requests(b"GET /a HTTP/1.1\r\n\r\n\x00\x01");
        assert_eq!((garbage.heads.len(), garbage.continues), (1, false));
    }

    #[test]
    fn invalid_request_lines_are_rejected() {
        for line in [
            &b"get / HTTP/1.1\r\n\r\n"[..],
            b"Get / HTTP/1.1\r\n\r\n",
            b"PROPFIND / HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET /\tx HTTP/1.1\r\n\r\n",
            b"GET /\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"{\"body\":1}\r\nGET / HTTP/1.1\r\n\r\n",
            b"",
        ] {
            let requests = parse_requests(line);
            assert!(requests.heads.is_empty() && !requests.continues, "{:?}", String::from_utf8_lossy(line));
            assert!(matches!(requests.resume, Resume::Lost | Resume::Boundary), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn prefix_checks() {
        assert!(looks_like_request(b"GET /"));
        assert!(looks_like_request(b"DELETE "));
        assert!(!looks_like_request(b"GET"));
        assert!(!looks_like_request(b"get /"));
        assert!(!looks_like_request(b"GET  /"));
        assert!(!looks_like_request(b"GETS /"));
    }
}
