//! Samples and shorthands the parsers' tests share.

use super::{parse_requests, parse_responses, RequestHead};

pub(super) const CURL: &[u8] = b"GET /api/v1/users?id=7 HTTP/1.1\r\n\
    Host: example.com:8080\r\n\
    User-Agent: curl/8.5.0\r\n\
    Accept: */*\r\n\
    traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
    \r\n";

/// The one request in `buf`.
pub(super) fn only(buf: &[u8]) -> RequestHead<'_> {
    let requests = parse_requests(buf);
    assert_eq!(requests.heads.len(), 1, "{requests:?}");
    requests.heads[0].clone()
}

/// The status codes of the responses in `buf`.
pub(super) fn statuses(buf: &[u8]) -> Vec<u16> {
    parse_responses(buf).iter().map(|head| head.status).collect()
}
