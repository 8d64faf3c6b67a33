//! Plaintext HTTP/1.x message heads from captured socket data.
//!
//! The BPF side copies at most the first 1 KiB of each buffer passed to read/write/send/recv on a
//! TCP socket, so what reaches us is one syscall's worth of bytes, possibly truncated: several
//! pipelined requests (or responses), a request whose headers were cut off, or the middle of a
//! body. These parsers pull out only what tracing needs — method, path, `Host`, `traceparent`,
//! status — and skip bodies by their framing to find the next message in the same buffer.
//!
//! They are strict about start lines, since a false positive would invent a span, lenient about
//! everything after them, since a span without a `traceparent` is still a span, and never panic:
//! the input is whatever a traced process happened to send.
//!
//! This module walks a buffer message by message; the parts it calls each read one piece of a
//! message: `request` and `status` the start lines, `headers` the header section, `body` the
//! framing that says where the next message starts, and `syntax` the lines and tokens all of
//! them share.

mod body;
mod headers;
mod request;
mod status;
mod syntax;
#[cfg(test)]
mod test_support;

use body::{next_message, request_body, response_body, skip_blank_lines, Body};
use headers::{scan_headers, HeadEnd};
pub use request::Method;
use request::{may_start_request, parse_request_line};
pub use status::ResponseHead;
use status::parse_status_line;
use syntax::line_at;

/// Most message heads reported from one buffer: an 8 KiB capture (plus a carried head) holds a
/// few hundred of the shortest real requests; this bounds the work on anything longer.
const MAX_HEADS: usize = 512;

/// What a request's head says that tracing needs. Borrows from the captured buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: Method,
    /// The target's path without query string or fragment: `/a/b` for both `/a/b?x=1#f` and
    /// `http://host/a/b`, `/` for `http://host`, `*` for `OPTIONS *`, and the `host:port`
    /// authority for `CONNECT`. Never empty.
    pub path: &'a str,
    /// Where the request is addressed, for client spans' `server.address`: the authority of an
    /// absolute-form target (which RFC 9112 §3.2.2 says overrides `Host`, minus any userinfo),
    /// else the `Host` header's value. `None` if neither is present or `Host` is not UTF-8.
    pub host: Option<&'a str>,
    /// The `traceparent` header's value, trimmed but not validated (see
    /// [`super::traceparent::parse`]); the first one if the request repeats it. `None` if
    /// absent or cut off by the capture limit.
    pub traceparent: Option<&'a str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
}

/// The requests found in one buffer, see [`parse_requests`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests<'a> {
    /// The heads of the requests that start in the buffer, in order; at most 512.
    pub heads: Vec<RequestHead<'a>>,
    /// Whether the bytes that follow this buffer on the connection probably continue a message
    /// started in it (a head or body cut off by the buffer's end, a body whose end could not be
    /// found, a `CONNECT` tunnel, more than 512 requests) rather than start a new request.
    pub continues: bool,
    /// Where the next bytes of the stream fit, for a caller that sees the stream piece by piece.
    pub resume: Resume,
}

/// How the bytes after a buffer relate to it (see [`Requests::resume`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resume {
    /// The buffer ended at a message boundary: the next bytes start a request.
    #[default]
    Boundary,
    /// The buffer ended inside the request line or head of the request starting at `offset`:
    /// prepend `buf[offset..]` to the next bytes and parse again. When `reported`, that
    /// request (its line was complete) is already the last of `heads`.
    Head {
        /// Where the unfinished request starts.
        offset: usize,
        /// Whether it is in `heads`.
        reported: bool,
    },
    /// The buffer ended inside a body of which this many bytes are still to come.
    Body(u64),
    /// Where the stream goes on is unknown (a chunked or unframed body, a tunnel, garbage):
    /// only a buffer that starts with a request line can be parsed again.
    Lost,
}

/// Finds the heads of the requests in `buf`, which must start at a request line: a buffer that
/// does not (a body's continuation, another protocol, a request line cut short) yields none.
///
/// After each head the body is skipped by its `Content-Length` or its chunks, and scanning goes
/// on with the next pipelined request. A request whose line is complete counts even if its
/// headers are cut off. Scanning stops at anything that is not a request line, at a body whose
/// end is unknown, after `CONNECT` (the connection becomes a tunnel) and after 512 requests.
pub fn parse_requests(buf: &[u8]) -> Requests<'_> {
    let mut requests = Requests::default();
    let mut pos = 0;
    while pos < buf.len() {
        if requests.heads.len() == MAX_HEADS {
            requests.continues = true;
            requests.resume = Resume::Head { offset: pos, reported: false };
            break;
        }
        let Some((line, after_line)) = line_at(buf, pos) else {
            requests.continues = may_start_request(&buf[pos..]);
            requests.resume = if requests.continues { Resume::Head { offset: pos, reported: false } } else { Resume::Lost };
            break;
        };
        let Some(start) = parse_request_line(line) else {
            requests.resume = Resume::Lost;
            break;
        };
        let (fields, end) = scan_headers(buf, after_line);
        requests.heads.push(RequestHead {
            method: start.method,
            path: start.path,
            host: start.authority.or(fields.host),
            traceparent: fields.traceparent,
            version_minor: start.version_minor,
        });
        let body = request_body(&fields);
        requests.resume = match (&end, &body) {
            (HeadEnd::Cut, _) => Resume::Head { offset: pos, reported: true },
            (HeadEnd::Body(at), Body::Length(length)) => {
                Resume::Body(length.saturating_sub((buf.len() - (*at).min(buf.len())) as u64))
            }
            _ => Resume::Lost,
        };
        let next = match start.method {
            Method::Connect => None,
            _ => next_message(buf, end, body),
        };
        let Some(next) = next else {
            requests.continues = true;
            if start.method == Method::Connect {
                requests.resume = Resume::Lost;
            }
            break;
        };
        requests.resume = Resume::Boundary;
        pos = skip_blank_lines(buf, next);
    }
    requests
}

/// Finds the heads of the responses in `buf`, which must start at a status line; the same rules
/// as [`parse_requests`] apply, except that a response without `Content-Length` or chunked
/// framing runs until the connection closes, and so ends the scan, as does `101 Switching
/// Protocols`. 1xx, 204 and 304 responses have no body.
///
/// Responses to `HEAD` (and 2xx responses to `CONNECT`) have no body either, whatever their
/// headers say, but the parser cannot know which request a response answers: after such a
/// response, the ones reported behind it in the same buffer may be wrong or missing.
#[cfg(test)]
pub fn parse_responses(buf: &[u8]) -> Vec<ResponseHead> {
    parse_responses_extent(buf).0
}

/// Where the bytes of the responses found by [`parse_responses_extent`] end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The last response ends at this offset, inside the buffer.
    Ends(usize),
    /// The last response's body goes on past the buffer and ends at this offset.
    Beyond(u64),
    /// Not known (a cut head, a chunked or unframed body, garbage).
    Unknown,
}

/// The response heads in `buf` (by the rules above), and where the last response ends: a
/// caller that knows how many bytes followed can tell whether responses it did not see came
/// after it.
pub fn parse_responses_extent(buf: &[u8]) -> (Vec<ResponseHead>, Extent) {
    let mut responses = Vec::new();
    let mut extent = Extent::Unknown;
    let mut pos = 0;
    while pos < buf.len() && responses.len() < MAX_HEADS {
        let Some((line, after_line)) = line_at(buf, pos) else { break };
        let Some(head) = parse_status_line(line) else { break };
        responses.push(head);
        extent = Extent::Unknown;
        if head.status == 101 {
            break; // The bytes that follow belong to the upgraded protocol.
        }
        let (fields, end) = scan_headers(buf, after_line);
        let body = response_body(&fields, head.status);
        if let (HeadEnd::Body(at), Body::Length(length)) = (&end, &body) {
            extent = Extent::Beyond((*at as u64).saturating_add(*length));
        }
        let Some(next) = next_message(buf, end, body) else { break };
        extent = Extent::Ends(next);
        pos = skip_blank_lines(buf, next);
    }
    (responses, extent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::net::{is_http_prefix, PREFIX_BYTES};

    use super::{request::looks_like_request, status::looks_like_response, test_support::CURL};

    /// A tiny xorshift64 generator, so that the fuzz-like tests are reproducible without crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound.max(1) as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn results_are_capped() {
        let buf = b"GET / HTTP/1.1\r\n\r\n".repeat(MAX_HEADS + 10);
        let requests = parse_requests(&buf);
        assert_eq!((requests.heads.len(), requests.continues), (MAX_HEADS, true));
        assert_eq!(requests.resume, Resume::Head { offset: MAX_HEADS * 18, reported: false });
        assert_eq!(parse_responses(&b"HTTP/1.1 204 No Content\r\n\r\n".repeat(MAX_HEADS + 10)).len(), MAX_HEADS);
    }

    #[test]
    fn random_bytes_yield_nothing() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            let len = rng.below(1100);
            let buf = rng.bytes(len);
            assert!(parse_requests(&buf).heads.is_empty(), "{buf:?}");
            assert!(parse_responses(&buf).is_empty(), "{buf:?}");
            let _ = (looks_like_request(&buf), looks_like_response(&buf));
        }
    }

    /// Checks what every reported head must satisfy, however garbled its buffer.
    fn check_invariants(buf: &[u8]) {
        let requests = parse_requests(buf);
        assert!(requests.heads.len() <= MAX_HEADS);
        for head in &requests.heads {
            assert!(!head.path.is_empty());
            assert!(!head.path.contains(['?', '#']), "{head:?}");
            assert!(head.path.bytes().all(|byte| byte.is_ascii_graphic()), "{head:?}");
            assert!(head.version_minor <= 1);
        }
        if let Some(first) = requests.heads.first() {
            assert!(looks_like_request(buf), "{first:?} from {buf:?}");
            // What the parser reads, the BPF filter must have let through.
            if let Some(prefix) = buf.first_chunk::<PREFIX_BYTES>() {
                assert!(is_http_prefix(prefix), "{first:?} from {buf:?}");
            }
        }
        for head in parse_responses(buf) {
            assert!((100..=599).contains(&head.status) && head.version_minor <= 1);
        }
    }

    #[test]
    fn mutated_messages_never_panic() {
        let samples: [&[u8]; 5] = [
            CURL,
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET http://h/b?c HTTP/1.0\r\nHost: x\r\n\r\n",
            b"PATCH /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x\r\na\r\n0\r\nT:1\r\n\r\nHTTP/1.0 304 NM\r\n\r\n",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..100_000 {
            let mut buf = samples[rng.below(samples.len())].to_vec();
            for _ in 0..1 + rng.below(6) {
                mutate(&mut rng, &mut buf);
            }
            check_invariants(&buf);
        }
    }

    /// Applies one random edit: overwrite, insert, delete, truncate or duplicate a range.
    fn mutate(rng: &mut Rng, buf: &mut Vec<u8>) {
        const INTERESTING: &[u8] = b" \r\n:;/?#*0123456789abcdefGET HTTP/1.1";
        let at = rng.below(buf.len() + 1);
        let byte = if rng.below(2) == 0 { INTERESTING[rng.below(INTERESTING.len())] } else { rng.next() as u8 };
        match rng.below(5) {
            0 if at < buf.len() => buf[at] = byte,
            1 => buf.insert(at, byte),
            2 if at < buf.len() => drop(buf.remove(at)),
            3 => buf.truncate(at),
            _ => {
                let end = (at + rng.below(40)).min(buf.len());
                let copy = buf[at..end].to_vec();
                let to = rng.below(buf.len() + 1);
                buf.splice(to..to, copy);
            }
        }
    }

    #[test]
    fn token_soup_never_panics() {
        // Sequences of HTTP-ish pieces reach deeper into the parsers than uniform random bytes.
        #[rustfmt::skip]
        const PIECES: &[&[u8]] = &[
            b"GET ", b"HEAD ", b"POST ", b"CONNECT ", b"OPTIONS ", b"/", b"*", b"http://", b"h", b"?q", b" ",
            b"HTTP/1.1", b"HTTP/1.0 ", b"200", b" OK", b"100", b"101", b"\r\n", b"\n", b"\r", b":",
            b"Content-Length: ", b"Transfer-Encoding: chunked", b"Host: ", b"traceparent: ", b"0", b"5",
            b"ff", b";", b",", b"\t", b"\xff",
        ];
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..100_000 {
            let mut buf = Vec::new();
            for _ in 0..rng.below(40) {
                buf.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
            check_invariants(&buf);
        }
    }
}
