//! Header sections: where a head ends, and the few fields oxeye reads (`Host` and `traceparent`
//! for spans, `Content-Length` and `Transfer-Encoding` to find the end of the body).

use super::syntax::{line_at, trim};

/// The header fields we read, gathered from one message head.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) host: Option<&'a str>,
    pub(super) traceparent: Option<&'a str>,
    pub(super) content_length: Option<u64>,
    /// A `Content-Length` that is not a number, or differs from an earlier one.
    pub(super) bad_content_length: bool,
    pub(super) transfer_encoding: bool,
    /// Whether the last transfer coding is `chunked`, which makes the body's end findable.
    pub(super) chunked: bool,
}

impl<'a> Fields<'a> {
    /// Takes note of one header field if it is one we read.
    fn add(&mut self, name: &[u8], value: &'a [u8]) {
        // Most headers are none of these: their length alone says so.
        if !matches!(name.len(), 4 | 11 | 14 | 17) {
            return;
        }
        let value = trim(value);
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
pub(super) enum HeadEnd {
    /// At a blank line; the body starts at this position.
    Body(usize),
    /// At the end of the buffer.
    Cut,
    /// At a line that is not a header field.
    Malformed,
}

/// Reads header lines from `pos` up to the blank line that ends the head.
///
/// One pass per line: the name is checked byte by byte up to its colon, then the line's end is
/// searched for from there (every header of every traced message comes through here).
pub(super) fn scan_headers(buf: &[u8], mut pos: usize) -> (Fields<'_>, HeadEnd) {
    let mut fields = Fields::default();
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        match rest {
            [b'\r', b'\n', ..] => return (fields, HeadEnd::Body(pos + 2)),
            [b'\n', ..] => return (fields, HeadEnd::Body(pos + 1)),
            // An obsolete folded continuation of the previous field: none we read may be folded.
            [b' ' | b'\t', ..] => {
                let Some((_, next)) = line_at(buf, pos) else { return (fields, HeadEnd::Cut) };
                pos = next;
                continue;
            }
            _ => {}
        }
        let name_end = pos + rest.iter().position(|&byte| !TCHAR[usize::from(byte)]).unwrap_or(rest.len());
        // The name must be a non-empty token that the colon follows directly (RFC 9112 §5.1
        // forbids whitespace there); a line that breaks this is malformed once it is whole.
        if name_end == pos || buf.get(name_end) != Some(&b':') {
            return (fields, if line_at(buf, pos).is_some() { HeadEnd::Malformed } else { HeadEnd::Cut });
        }
        let Some((value, next)) = line_at(buf, name_end + 1) else { return (fields, HeadEnd::Cut) };
        fields.add(&buf[pos..name_end], value);
        pos = next;
    }
}

/// Whether `byte` may appear in a token such as a field name (RFC 9110 §5.6.2).
/// Whether each byte is a `tchar` (RFC 9110, 5.6.2), the characters of a field name: a table,
/// as every byte of every header name of every traced message goes through it.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        byte += 1;
    }
    table
};

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

#[cfg(test)]
mod tests {
    use super::{scan_headers, HeadEnd};
    use crate::net::http::{parse_requests, test_support::{only, CURL}, Method, RequestHead};

    /// How a head ends, as a short word and the body's start.
    fn end(buf: &[u8]) -> (&'static str, usize) {
        match scan_headers(buf, 0).1 {
            HeadEnd::Body(at) => ("body", at),
            HeadEnd::Cut => ("cut", 0),
            HeadEnd::Malformed => ("malformed", 0),
        }
    }

    #[test]
    fn head_ends_line_by_line() {
        assert_eq!(end(b"Host: a\r\nX-A:b\n\r\nbody"), ("body", 17));
        assert_eq!(end(b"\n"), ("body", 1));
        assert_eq!(end(b"Host: a\r\n folded\r\n\r\n"), ("body", 20));
        // Not whole yet: cut, whatever the partial line holds.
        for cut in [&b""[..], b"Host", b"Host:", b"Host: a\r", b"Na me: x", b"\r", b" folded", b"Host: a\r\n\r"] {
            assert_eq!(end(cut), ("cut", 0), "{:?}", String::from_utf8_lossy(cut));
        }
        // Whole lines that are not fields.
        for bad in [&b":x\r\n\r\n"[..], b"Na me: x\r\n\r\n", b"Host : a\r\n\r\n", b"no colon\r\n\r\n", b"\rX: y\r\n\r\n"] {
            assert_eq!(end(bad), ("malformed", 0), "{:?}", String::from_utf8_lossy(bad));
        }
        let (fields, _) = scan_headers(b"host:  example.com \r\nContent-Length: 12\r\n\r\n", 0);
        assert_eq!((fields.host, fields.content_length), (Some("example.com"), Some(12)));
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
    fn headers_cut_off() {
        let requests = parse_requests(b"GET /cut HTTP/1.1\r\nHost: h\r\nAccept: */*\r\ntraceparent: 00-4bf92f35");
        assert_eq!(requests.heads.len(), 1);
        assert_eq!((requests.heads[0].host, requests.heads[0].traceparent), (Some("h"), None));
        assert!(requests.continues);
        let line_only = parse_requests(b"GET /cut HTTP/1.1\r\n");
        assert_eq!((line_only.heads.len(), line_only.continues), (1, true));
    }

    #[test]
    fn malformed_header_keeps_request_but_ends_scan() {
        let requests = parse_requests(b"GET /a HTTP/1.1\r\nHost : h\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert_eq!((requests.heads.len(), requests.heads[0].host, requests.continues), (1, None, true));
    }
}
