//! Decoding records from the `EVENTS` ring buffer.

use agent_common::{
    records::{ProcessEvent, RecordKind},
    sampler::{SampleRecord, MAX_KERNEL_FRAMES, MAX_USER_FRAMES},
};

/// A record read from the ring buffer.
pub enum Record {
    /// A CPU sample.
    Sample(Box<SampleRecord>),
    /// A process called `execve`.
    Exec(ProcessEvent),
    /// A process exited.
    Exit(ProcessEvent),
}

/// Decodes one ring-buffer record; `None` for a record of unknown kind or wrong size.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match RecordKind::from_u32(kind)? {
        RecordKind::Sample => {
            let mut sample: Box<SampleRecord> = Box::new(read(bytes)?);
            // Never trust counts from the other side further than the arrays go.
            sample.header.kernel_frame_count = sample.header.kernel_frame_count.min(MAX_KERNEL_FRAMES as u32);
            sample.header.user_frame_count = sample.header.user_frame_count.min(MAX_USER_FRAMES as u32);
            Some(Record::Sample(sample))
        }
        RecordKind::Exec => Some(Record::Exec(read(bytes)?)),
        RecordKind::Exit => Some(Record::Exit(read(bytes)?)),
    }
}

/// Copies a plain-data `T` out of `bytes` if they are big enough.
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: `T: Pod` accepts any bit pattern; the length was checked; no alignment needed.
        .then(|| unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// The `comm` bytes as a string, up to the first NUL.
pub fn comm_str(comm: &[u8; 16]) -> std::borrow::Cow<'_, str> {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_unknown() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[1, 0, 0, 0, 5]).is_none(), "truncated sample");
        assert!(decode(&[9, 0, 0, 0, 0, 0, 0, 0]).is_none(), "unknown kind");
    }

    #[test]
    fn clamps_frame_counts() {
        let mut bytes = vec![0u8; size_of::<SampleRecord>()];
        bytes[..4].copy_from_slice(&(RecordKind::Sample as u32).to_ne_bytes());
        bytes[24..28].copy_from_slice(&u32::MAX.to_ne_bytes());
        let Some(Record::Sample(sample)) = decode(&bytes) else { panic!("not a sample") };
        assert_eq!(sample.header.kernel_frame_count as usize, MAX_KERNEL_FRAMES);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_str(b"spin\0\0\0\0\0\0\0\0\0\0\0\0"), "spin");
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}
