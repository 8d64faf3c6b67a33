//! Status lines: the version and status code that start a response.

use super::syntax::{parse_version, split_at_space};

/// What a response's status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 100–599. Callers pairing responses with requests must skip 1xx
    /// (informational) responses: they precede the final response to the same request.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
}

/// Parses `HTTP/1.x SP 3DIGIT [SP reason]` with a status of 100–599. The reason phrase may be
/// missing, with or without its space, as RFC 9112 §4 allows.
pub(super) fn parse_status_line(line: &[u8]) -> Option<ResponseHead> {
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

/// Whether `prefix` starts like a response: `HTTP/1.0 ` or `HTTP/1.1 `, then a status code's
/// first digit (1–5) if there is one. A cheap filter; [`super::parse_responses`] decides.
#[cfg(test)]
pub(super) fn looks_like_response(prefix: &[u8]) -> bool {
    let version = prefix.get(..9);
    (version == Some(b"HTTP/1.0 ") || version == Some(b"HTTP/1.1 "))
        && prefix.get(9).is_none_or(|digit| (b'1'..=b'5').contains(digit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::http::{parse_responses, test_support::statuses};

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
        assert!(looks_like_response(b"HTTP/1.1 200 OK"));
        assert!(looks_like_response(b"HTTP/1.0 "));
        assert!(!looks_like_response(b"HTTP/1.1"));
        assert!(!looks_like_response(b"HTTP/1.1 999"));
        assert!(!looks_like_response(b"HTTP/2 200"));
    }
}
