//! Message framing: how long a body is (`Content-Length`, chunked, or until the connection
//! closes), so that the next pipelined message in the same buffer can be found.

use super::{
    headers::{Fields, HeadEnd},
    syntax::{line_at, trim},
};

/// Most blank lines skipped between pipelined messages; RFC 9112 §2.2 asks servers to tolerate
/// some after a body (clients used to send a stray CRLF after POST data), but not unboundedly.
const MAX_BLANK_LINES: usize = 2;

/// The position after up to [`MAX_BLANK_LINES`] blank lines starting at `pos`.
pub(super) fn skip_blank_lines(buf: &[u8], mut pos: usize) -> usize {
    for _ in 0..MAX_BLANK_LINES {
        match line_at(buf, pos) {
            Some((&[], next)) => pos = next,
            _ => break,
        }
    }
    pos
}

/// How to find the end of a message body.
pub(super) enum Body {
    /// It is this many bytes long.
    Length(u64),
    /// It is chunked.
    Chunked,
    /// It cannot be found: the body runs until the connection closes, or its framing is invalid.
    Unknown,
}

/// A request's body framing (RFC 9112 §6.3): chunked, `Content-Length`, or none at all.
pub(super) fn request_body(fields: &Fields) -> Body {
    if fields.transfer_encoding {
        // A request whose last coding is not chunked is invalid; the server closes on it.
        if fields.chunked {
            Body::Chunked
        } else {
            Body::Unknown
        }
    } else if fields.bad_content_length {
        Body::Unknown
    } else {
        Body::Length(fields.content_length.unwrap_or(0))
    }
}

/// A response's body framing (RFC 9112 §6.3): like a request's, except that 1xx, 204 and 304
/// responses never have one and a response without framing runs until the connection closes.
pub(super) fn response_body(fields: &Fields, status: u16) -> Body {
    if status < 200 || status == 204 || status == 304 {
        Body::Length(0)
    } else if !fields.transfer_encoding && !fields.bad_content_length && fields.content_length.is_none() {
        Body::Unknown
    } else {
        request_body(fields)
    }
}

/// The position just past the message whose head ended with `end` and whose body is `body`;
/// `None` if that is beyond the buffer or unknown.
pub(super) fn next_message(buf: &[u8], end: HeadEnd, body: Body) -> Option<usize> {
    let HeadEnd::Body(start) = end else { return None };
    match body {
        Body::Length(length) => skip_bytes(buf, start, length),
        Body::Chunked => skip_chunks(buf, start),
        Body::Unknown => None,
    }
}

/// `pos + length` if the buffer holds that many bytes after `pos`.
fn skip_bytes(buf: &[u8], pos: usize, length: u64) -> Option<usize> {
    let length = usize::try_from(length).ok()?;
    pos.checked_add(length).filter(|&end| end <= buf.len())
}

/// The position past a chunked body starting at `pos`: chunks (size line, data, CRLF) up to a
/// zero-size one, then trailer fields up to a blank line. Each loop consumes at least one line,
/// so this is linear in the buffer's length.
fn skip_chunks(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let (line, data) = line_at(buf, pos)?;
        let size = parse_chunk_size(line)?;
        if size == 0 {
            return skip_trailers(buf, data);
        }
        let (line, next) = line_at(buf, skip_bytes(buf, data, size)?)?;
        if !line.is_empty() {
            return None; // The size lied, so the framing is lost.
        }
        pos = next;
    }
}

/// A chunk-size line's size: hex digits, optionally followed by `;` extensions.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&byte| byte == b';').unwrap_or(line.len());
    let digits = trim(&line[..end]);
    if digits.is_empty() || digits.len() > 15 {
        return None; // Not a size, or one no buffer could hold; 15 hex digits fit a u64.
    }
    digits.iter().try_fold(0u64, |size, &byte| Some(size << 4 | u64::from(char::from(byte).to_digit(16)?)))
}

/// The position past the trailer section starting at `pos`, which ends at a blank line.
fn skip_trailers(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let (line, next) = line_at(buf, pos)?;
        if line.is_empty() {
            return Some(next);
        }
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use crate::net::http::{parse_requests, parse_responses, test_support::statuses, Method, ResponseHead};

    #[test]
    fn three_pipelined_gets() {
        let buf = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\n\r\n";
        let requests = parse_requests(buf);
        let paths: Vec<_> = requests.heads.iter().map(|head| head.path).collect();
        assert_eq!(paths, ["/1", "/2", "/3"]);
        assert!(!requests.continues);
    }

    #[test]
    fn post_with_body_then_get() {
        let buf = b"POST /submit HTTP/1.1\r\nContent-Length: 15\r\nContent-Type: text/plain\r\n\r\n\
            GET /x HTTP/1.1GET /next HTTP/1.1\r\ntraceparent: t2\r\n\r\n";
        let requests = parse_requests(buf);
        assert_eq!(requests.heads.len(), 2, "{requests:?}");
        assert_eq!((requests.heads[0].method, requests.heads[0].path), (Method::Post, "/submit"));
        assert_eq!((requests.heads[1].method, requests.heads[1].path), (Method::Get, "/next"));
        assert_eq!(requests.heads[1].traceparent, Some("t2"));
    }

    #[test]
    fn stray_crlf_after_body_is_tolerated() {
        let requests = parse_requests(b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET /b HTTP/1.1\r\n\r\n");
        assert_eq!(requests.heads.len(), 2);
    }

    #[test]
    fn body_cut_off_continues() {
        let requests = parse_requests(b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"partial\":");
        assert_eq!(requests.heads.len(), 1);
        assert!(requests.continues);
    }

    #[test]
    fn chunked_bodies_are_walked() {
        let buf = b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n\
            5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nDELETE /b HTTP/1.1\r\n\r\n";
        let paths: Vec<_> = parse_requests(buf).heads.iter().map(|head| head.path).collect();
        assert_eq!(paths, ["/a", "/b"]);
        let lying = parse_requests(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n");
        assert_eq!((lying.heads.len(), lying.continues), (1, true));
        let not_chunked = parse_requests(b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert_eq!(not_chunked.heads.len(), 1);
    }

    #[test]
    fn conflicting_content_lengths_end_the_scan() {
        let buf = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(parse_requests(buf).heads.len(), 1);
        let list = b"POST /a HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nxGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(parse_requests(list).heads.len(), 2);
        let huge = b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nx";
        assert_eq!(parse_requests(huge).heads.len(), 1);
    }

    #[test]
    fn pipelined_responses_with_bodies() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n\
            HTTP/1.0 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}";
        let responses = parse_responses(buf);
        assert_eq!(
            responses,
            [
                ResponseHead { status: 200, version_minor: 1 },
                ResponseHead { status: 404, version_minor: 1 },
                ResponseHead { status: 500, version_minor: 0 },
            ]
        );
    }

    #[test]
    fn informational_and_bodiless_responses() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(statuses(buf), [100, 201, 304, 204, 200, 200]);
        let upgrade = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(statuses(upgrade), [101]);
    }

    #[test]
    fn response_without_length_ends_the_scan() {
        let buf = b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(statuses(buf), [200]);
        assert_eq!(statuses(b"HTTP/1.1 200 OK\r\nContent-Len"), [200]);
    }
}
