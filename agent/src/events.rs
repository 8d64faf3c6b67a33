//! Decoding records from the `EVENTS` ring buffer.

use agent_common::{
    files::{ExecFileEvent, FileHintRecord, MAX_FILE_HINTS},
    records::{OffCpuEnd, ProcessEvent, RecordKind},
    python::MAX_PYTHON_FRAMES,
    sampler::{SampleHeader, SampleRecord, MAX_FRAMES, MAX_KERNEL_FRAMES, MAX_USER_FRAMES, SLOTS_PER_PYTHON_FRAME},
};

/// A record read from the ring buffer.
pub enum Record {
    /// A CPU sample.
    Sample(Box<SampleRecord>),
    /// A process called `execve`.
    Exec(ProcessEvent),
    /// A process exited.
    Exit(ProcessEvent),
    /// The mappings the next sample's frames are in (a process not described yet).
    FileHints(Box<FileHintRecord>),
    /// The file a process exec'd.
    ExecFile(Box<ExecFileEvent>),
    /// A thread whose switch-out was recorded runs again.
    OffCpuEnd(OffCpuEnd),
}

/// Decodes one ring-buffer record; `None` for a record of unknown kind or wrong size.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match RecordKind::from_u32(kind)? {
        RecordKind::Sample => {
            let mut header: SampleHeader = read(bytes)?;
            // Only the used frames are sent. Never trust counts further than the arrays, or
            // the record, go.
            let sent = (bytes.len() - size_of::<SampleHeader>()) / 8;
            let kernel = (header.kernel_frame_count as usize).min(MAX_KERNEL_FRAMES).min(sent);
            let user = (header.user_frame_count as usize).min(MAX_USER_FRAMES).min(sent - kernel);
            let python = (header.python_frame_count as usize).min(MAX_PYTHON_FRAMES).min((sent - kernel - user) / SLOTS_PER_PYTHON_FRAME);
            header.kernel_frame_count = kernel as u32;
            header.user_frame_count = user as u32;
            header.python_frame_count = python as u32;
            let used = kernel + user + SLOTS_PER_PYTHON_FRAME * python;
            let mut sample = Box::new(SampleRecord { header, frames: [0; MAX_FRAMES] });
            for (slot, chunk) in sample.frames.iter_mut().zip(bytes[size_of::<SampleHeader>()..].chunks_exact(8)).take(used) {
                *slot = u64::from_ne_bytes(chunk.try_into().ok()?);
            }
            Some(Record::Sample(sample))
        }
        RecordKind::Exec => Some(Record::Exec(read(bytes)?)),
        RecordKind::Exit => Some(Record::Exit(read(bytes)?)),
        RecordKind::FileHints => {
            let mut hints: FileHintRecord = read(bytes)?;
            hints.count = hints.count.min(MAX_FILE_HINTS as u32);
            Some(Record::FileHints(Box::new(hints)))
        }
        RecordKind::ExecFile => Some(Record::ExecFile(Box::new(read(bytes)?))),
        RecordKind::OffCpuEnd => Some(Record::OffCpuEnd(read(bytes)?)),
        // These travel in `NET_EVENTS`, decoded by `net::records`.
        RecordKind::TcpOpen | RecordKind::TcpClose | RecordKind::Payload => None,
    }
}

/// Copies a plain-data `T` out of `bytes` if they are big enough.
pub fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: `T: Pod` accepts any bit pattern; the length was checked; no alignment needed.
        .then(|| unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// The `comm` bytes as a string, up to the first NUL.
pub fn comm_str(comm: &[u8; 16]) -> std::borrow::Cow<'_, str> {
    comm_str_bytes(comm)
}

/// NUL-terminated (or full) bytes as a string, up to the first NUL.
pub fn comm_str_bytes(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len])
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
        bytes[28..32].copy_from_slice(&u32::MAX.to_ne_bytes());
        let Some(Record::Sample(sample)) = decode(&bytes) else { panic!("not a sample") };
        assert_eq!(sample.header.kernel_frame_count as usize, MAX_KERNEL_FRAMES);
        assert_eq!(sample.header.user_frame_count as usize, MAX_USER_FRAMES);
    }

    #[test]
    fn reads_only_the_frames_sent() {
        // Header, two kernel frames and one user frame; the counts claim more.
        let mut bytes = vec![0u8; size_of::<SampleHeader>() + 3 * 8];
        bytes[..4].copy_from_slice(&(RecordKind::Sample as u32).to_ne_bytes());
        bytes[24..28].copy_from_slice(&2u32.to_ne_bytes());
        bytes[28..32].copy_from_slice(&5u32.to_ne_bytes());
        for (i, frame) in [0xa1u64, 0xa2, 0xb1].iter().enumerate() {
            let at = size_of::<SampleHeader>() + 8 * i;
            bytes[at..at + 8].copy_from_slice(&frame.to_ne_bytes());
        }
        let Some(Record::Sample(sample)) = decode(&bytes) else { panic!("not a sample") };
        assert_eq!((sample.header.kernel_frame_count, sample.header.user_frame_count), (2, 1));
        assert_eq!(sample.frames[..3], [0xa1, 0xa2, 0xb1]);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_str(b"spin\0\0\0\0\0\0\0\0\0\0\0\0"), "spin");
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}
