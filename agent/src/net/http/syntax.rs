//! The small pieces of HTTP/1.x syntax that the start-line, header and body parsers all read:
//! lines, space-separated parts, blanks, and the version token.

/// The line starting at `pos` without its line ending, and the position just past its LF;
/// `None` if the buffer ends first. A CR right before the LF is dropped, so that both CRLF and
/// the bare LF some implementations send end a line.
pub(super) fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let len = memchr::memchr(b'\n', rest)?;
    let line = &rest[..len];
    Some((line.strip_suffix(b"\r").unwrap_or(line), pos + len + 1))
}

/// `bytes` split at its first space, which is dropped.
pub(super) fn split_at_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(b' ', bytes)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The minor version from an HTTP/1.x version token; HTTP/0.9 and 2 don't use this syntax.
pub(super) fn parse_version(token: &[u8]) -> Option<u8> {
    match token {
        b"HTTP/1.0" => Some(0),
        b"HTTP/1.1" => Some(1),
        _ => None,
    }
}

/// `bytes` without leading and trailing spaces and tabs.
pub(super) fn trim(bytes: &[u8]) -> &[u8] {
    let is_blank = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes.iter().position(|byte| !is_blank(byte)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|byte| !is_blank(byte)).map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}
