//! Decoding records from the `NET_EVENTS` ring buffer.

use agent_common::{
    net::{PayloadHeader, TcpCloseEvent, TcpOpenEvent, CAPTURE_BYTES},
    records::RecordKind,
};

use crate::events::read;

/// A record from `NET_EVENTS`.
pub enum NetRecord<'a> {
    /// A connection was accepted or connected.
    Open(TcpOpenEvent),
    /// A tracked connection closed.
    Close(TcpCloseEvent),
    /// The first bytes of an HTTP-looking payload.
    Payload(PayloadHeader, &'a [u8]),
}

/// Decodes one record; `None` for an unknown kind or a record too short for its kind.
pub fn decode(bytes: &[u8]) -> Option<NetRecord<'_>> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match RecordKind::from_u32(kind)? {
        RecordKind::TcpOpen => Some(NetRecord::Open(read(bytes)?)),
        RecordKind::TcpClose => Some(NetRecord::Close(read(bytes)?)),
        RecordKind::Payload => {
            let header: PayloadHeader = read(bytes)?;
            let data = &bytes[size_of::<PayloadHeader>()..];
            // Never trust the count further than the record goes.
            let captured = (header.captured as usize).min(CAPTURE_BYTES).min(data.len());
            Some(NetRecord::Payload(header, &data[..captured]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::net::SocketAddrs;

    #[test]
    fn payload_length_is_bounded_by_the_record() {
        let header = PayloadHeader {
            kind: RecordKind::Payload as u32,
            pid: 1,
            fd: 3,
            direction: 0,
            sock: 9,
            timestamp_ns: 5,
            size: 100,
            captured: 4000,
            role: 1,
            addrs: SocketAddrs::default(),
            flags: 0,
            cpu_samples: 0,
            comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: plain data.
        let mut bytes = unsafe { std::slice::from_raw_parts((&header as *const PayloadHeader).cast::<u8>(), size_of::<PayloadHeader>()) }.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let Some(NetRecord::Payload(decoded, data)) = decode(&bytes) else { panic!("not a payload") };
        assert_eq!((decoded.pid, data), (1, &b"GET / HTTP/1.1\r\n"[..]));
        assert!(decode(&bytes[..20]).is_none());
        assert!(decode(&[1, 0, 0, 0]).is_none());
    }
}
