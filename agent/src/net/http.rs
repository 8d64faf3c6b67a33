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

/// Most message heads reported from one buffer: an 8 KiB capture (plus a carried head) holds a
/// few hundred of the shortest real requests; this bounds the work on anything longer.
const MAX_HEADS: usize = 512;

/// Most blank lines skipped between pipelined messages; RFC 9112 §2.2 asks servers to tolerate
/// some after a body (clients used to send a stray CRLF after POST data), but not unboundedly.
const MAX_BLANK_LINES: usize = 2;

/// An HTTP request method: the nine that RFC 9110 and RFC 5789 define. Extension methods
/// (WebDAV's `PROPFIND`, …) are not recognised, so such requests are not reported.
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
    const ALL: [Method; 9] = [
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
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }

    /// The method whose token is exactly `token`; methods are case-sensitive (RFC 9110 §9.1).
    fn from_token(token: &[u8]) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.as_str().as_bytes() == token)
    }
}

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

/// What a response's status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 100–599. Callers pairing responses with requests must skip 1xx
    /// (informational) responses: they precede the final response to the same request.
    pub status: u16,
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

/// Whether `prefix` starts like a request: a known method and a space, then a target byte if
/// there is one. A cheap filter; [`parse_requests`] decides.
pub fn looks_like_request(prefix: &[u8]) -> bool {
    Method::ALL.into_iter().any(|method| {
        let name = method.as_str().as_bytes();
        prefix.starts_with(name)
            && prefix.get(name.len()) == Some(&b' ')
            && prefix.get(name.len() + 1).is_none_or(u8::is_ascii_graphic)
    })
}

/// Whether `prefix` starts like a response: `HTTP/1.0 ` or `HTTP/1.1 `, then a status code's
/// first digit (1–5) if there is one. A cheap filter; [`parse_responses`] decides.
#[cfg(test)]
pub fn looks_like_response(prefix: &[u8]) -> bool {
    let version = prefix.get(..9);
    (version == Some(b"HTTP/1.0 ") || version == Some(b"HTTP/1.1 "))
        && prefix.get(9).is_none_or(|digit| (b'1'..=b'5').contains(digit))
}

/// The line starting at `pos` without its line ending, and the position just past its LF;
/// `None` if the buffer ends first. A CR right before the LF is dropped, so that both CRLF and
/// the bare LF some implementations send end a line.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let len = rest.iter().position(|&byte| byte == b'\n')?;
    let line = &rest[..len];
    Some((line.strip_suffix(b"\r").unwrap_or(line), pos + len + 1))
}

/// The position after up to [`MAX_BLANK_LINES`] blank lines starting at `pos`.
fn skip_blank_lines(buf: &[u8], mut pos: usize) -> usize {
    for _ in 0..MAX_BLANK_LINES {
        match line_at(buf, pos) {
            Some((&[], next)) => pos = next,
            _ => break,
        }
    }
    pos
}

/// Whether `rest`, a request line cut off before its LF, starts like one, so that the next
/// buffer would continue it.
fn may_start_request(rest: &[u8]) -> bool {
    looks_like_request(rest)
        || Method::ALL.into_iter().any(|method| {
            let name = method.as_str().as_bytes();
            name.starts_with(rest) || rest.strip_prefix(name) == Some(b" ")
        })
}

/// `bytes` split at its first space, which is dropped.
fn split_at_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&byte| byte == b' ')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The minor version from an HTTP/1.x version token; HTTP/0.9 and 2 don't use this syntax.
fn parse_version(token: &[u8]) -> Option<u8> {
    match token {
        b"HTTP/1.0" => Some(0),
        b"HTTP/1.1" => Some(1),
        _ => None,
    }
}

/// What a valid request line says.
struct RequestLine<'a> {
    method: Method,
    path: &'a str,
    authority: Option<&'a str>,
    version_minor: u8,
}

/// Parses `METHOD SP target SP HTTP/1.x`, with exactly one space between the parts (RFC 9112
/// §3 allows servers to be more lenient, but we would rather miss a span than invent one).
fn parse_request_line(line: &[u8]) -> Option<RequestLine<'_>> {
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

/// Parses `HTTP/1.x SP 3DIGIT [SP reason]` with a status of 100–599. The reason phrase may be
/// missing, with or without its space, as RFC 9112 §4 allows.
fn parse_status_line(line: &[u8]) -> Option<ResponseHead> {
    let (version, rest) = split_at_space(line)?;
    let version_minor = parse_version(version)?;
    let (code, reason) = match split_at_space(rest) {
        Some((code, reason)) => (code, reason),
        None => (rest, &b""[..]),
    };
    let status = match code {
        [hundreds @ b'1'..=b'5', tens @ b'0'..=b'9', ones @ b'0'..=b'9'] => {
            u16::from(hundreds - b'0') * 100 + u16::from(tens - b'0') * 10 + u16::from(ones - b'0')
        }
        _ => return None,
    };
    // Reason: HTAB, SP, VCHAR and obs-text; other control bytes mean this is not a status line.
    if !reason.iter().all(|&byte| byte == b'\t' || byte >= b' ' && byte != 0x7f) {
        return None;
    }
    Some(ResponseHead { status, version_minor })
}

/// The header fields we read, gathered from one message head.
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a str>,
    traceparent: Option<&'a str>,
    content_length: Option<u64>,
    /// A `Content-Length` that is not a number, or differs from an earlier one.
    bad_content_length: bool,
    transfer_encoding: bool,
    /// Whether the last transfer coding is `chunked`, which makes the body's end findable.
    chunked: bool,
}

impl<'a> Fields<'a> {
    /// Takes note of one header field if it is one we read.
    fn add(&mut self, name: &[u8], value: &'a [u8]) {
        if name.eq_ignore_ascii_case(b"host") {
            self.host = self.host.or_else(|| text(value));
        } else if name.eq_ignore_ascii_case(b"traceparent") {
            self.traceparent = self.traceparent.or_else(|| text(value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match (self.content_length, parse_content_length(value)) {
                (Some(old), Some(new)) if old != new => self.bad_content_length = true,
                (_, Some(new)) => self.content_length = Some(new),
                (_, None) => self.bad_content_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            let last = value.rsplit(|&byte| byte == b',').next().unwrap_or_default();
            self.chunked = trim(last).eq_ignore_ascii_case(b"chunked");
        }
    }
}

/// How a head ended.
enum HeadEnd {
    /// At a blank line; the body starts at this position.
    Body(usize),
    /// At the end of the buffer.
    Cut,
    /// At a line that is not a header field.
    Malformed,
}

/// Reads header lines from `pos` up to the blank line that ends the head.
fn scan_headers(buf: &[u8], mut pos: usize) -> (Fields<'_>, HeadEnd) {
    let mut fields = Fields::default();
    loop {
        let Some((line, next)) = line_at(buf, pos) else { return (fields, HeadEnd::Cut) };
        pos = next;
        if line.is_empty() {
            return (fields, HeadEnd::Body(pos));
        }
        // An obsolete folded continuation of the previous field: none we read may be folded.
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let Some((name, value)) = split_field(line) else { return (fields, HeadEnd::Malformed) };
        fields.add(name, value);
    }
}

/// A header line's name and trimmed value; `None` unless the name is a non-empty token that
/// the colon follows directly (RFC 9112 §5.1 forbids whitespace there).
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let name = &line[..colon];
    let is_token = !name.is_empty() && name.iter().all(|&byte| is_tchar(byte));
    is_token.then(|| (name, trim(&line[colon + 1..])))
}

/// Whether `byte` may appear in a token such as a field name (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_blank = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes.iter().position(|byte| !is_blank(byte)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|byte| !is_blank(byte)).map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// A field value as text, if it is non-empty UTF-8.
fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok().filter(|value| !value.is_empty())
}

/// A `Content-Length` value: a number, or a list of equal numbers (RFC 9110 §8.6 allows
/// recipients to accept the list a proxy made of duplicated headers).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut numbers = value.split(|&byte| byte == b',').map(|number| parse_decimal(trim(number)));
    let first = numbers.next()??;
    numbers.all(|number| number == Some(first)).then_some(first)
}

/// A non-empty string of decimal digits that fits a u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        number.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// How to find the end of a message body.
enum Body {
    /// It is this many bytes long.
    Length(u64),
    /// It is chunked.
    Chunked,
    /// It cannot be found: the body runs until the connection closes, or its framing is invalid.
    Unknown,
}

/// A request's body framing (RFC 9112 §6.3): chunked, `Content-Length`, or none at all.
fn request_body(fields: &Fields) -> Body {
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
fn response_body(fields: &Fields, status: u16) -> Body {
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
fn next_message(buf: &[u8], end: HeadEnd, body: Body) -> Option<usize> {
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
    use super::*;

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

    const CURL: &[u8] = b"GET /api/v1/users?id=7 HTTP/1.1\r\n\
        Host: example.com:8080\r\n\
        User-Agent: curl/8.5.0\r\n\
        Accept: */*\r\n\
        traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
        \r\n";

    fn only(buf: &[u8]) -> RequestHead<'_> {
        let requests = parse_requests(buf);
        assert_eq!(requests.heads.len(), 1, "{requests:?}");
        requests.heads[0].clone()
    }

    fn statuses(buf: &[u8]) -> Vec<u16> {
        parse_responses(buf).iter().map(|head| head.status).collect()
    }

    #[test]
    fn curl_request_with_traceparent() {
        let requests = parse_requests(CURL);
        assert!(!requests.continues);
        assert_eq!(
            requests.heads,
            [RequestHead {
                method: Method::Get,
                path: "/api/v1/users",
                host: Some("example.com:8080"),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                version_minor: 1,
            }]
        );
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_trimmed() {
        let head = only(b"PUT /x HTTP/1.0\nHOST:\t h \t\nTraceParent:  tp\n\n");
        assert_eq!(
            (head.method, head.host, head.traceparent, head.version_minor),
            (Method::Put, Some("h"), Some("tp"), 0)
        );
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
    fn headers_cut_off() {
        let requests = parse_requests(b"GET /cut HTTP/1.1\r\nHost: h\r\nAccept: */*\r\ntraceparent: 00-4bf92f35");
        assert_eq!(requests.heads.len(), 1);
        assert_eq!((requests.heads[0].host, requests.heads[0].traceparent), (Some("h"), None));
        assert!(requests.continues);
        let line_only = parse_requests(b"GET /cut HTTP/1.1\r\n");
        assert_eq!((line_only.heads.len(), line_only.continues), (1, true));
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
    fn malformed_header_keeps_request_but_ends_scan() {
        let requests = parse_requests(b"GET /a HTTP/1.1\r\nHost : h\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert_eq!((requests.heads.len(), requests.heads[0].host, requests.continues), (1, None, true));
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

    #[test]
    fn status_line_variants() {
        assert_eq!(statuses(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 \r\n\r\n"), [200, 204]);
        assert_eq!(statuses(b"HTTP/1.1 418 I'm a teapot \t\xff\r\n\r\n"), [418]);
        for bad in [
            &b"HTTP/1.1 999 Weird\r\n\r\n"[..],
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\n\r\n",
            b"HTTP/1.1 200 OK",
        ] {
            assert!(parse_responses(bad).is_empty(), "{:?}", String::from_utf8_lossy(bad));
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
        assert!(looks_like_response(b"HTTP/1.1 200 OK"));
        assert!(looks_like_response(b"HTTP/1.0 "));
        assert!(!looks_like_response(b"HTTP/1.1"));
        assert!(!looks_like_response(b"HTTP/1.1 999"));
        assert!(!looks_like_response(b"HTTP/2 200"));
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
