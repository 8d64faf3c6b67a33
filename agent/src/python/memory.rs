//! Reading a live process's memory through `/proc/PID/mem`.
//!
//! One file per process, opened once: every read is a single `pread`, with no ptrace stop
//! and no copy of the process's mappings. The caller bounds every read (a code object's
//! window, a string of at most so many characters): nothing here follows a length found in
//! the process's memory.

use std::{fs::File, io, os::unix::fs::FileExt};

/// The most bytes one [`ProcessMemory::read`] takes: a guard against a length gone wrong, not
/// a limit any caller is meant to reach.
pub const MAX_READ: usize = 1 << 20;

/// A process's memory, open for reading.
#[derive(Debug)]
pub struct ProcessMemory {
    file: File,
}

impl ProcessMemory {
    /// Opens `/proc/PID/mem` read-only. Needs ptrace access to the process (the same user
    /// and no Yama restriction, or `CAP_SYS_PTRACE`).
    pub fn open(pid: u32) -> io::Result<Self> {
        let file = File::open(format!("/proc/{pid}/mem"))?;
        Ok(Self { file })
    }

    /// Fills `buf` from `address`. A read that stops short (an unmapped page inside the
    /// range) is an error: a partial object is never used.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > MAX_READ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("read of {} bytes is over the limit", buf.len())));
        }
        if buf.is_empty() {
            return Ok(());
        }
        // The file offset is the address; the kernel takes it as a signed 64-bit value.
        if address > i64::MAX as u64 || address.checked_add(buf.len() as u64).is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("address {address:#x} is not a user address")));
        }
        let read = self.file.read_at(buf, address)?;
        if read != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {read} of {} bytes at {address:#x}", buf.len()),
            ));
        }
        Ok(())
    }

    /// The little-endian `u64` at `address`.
    pub fn read_u64(&self, address: u64) -> io::Result<u64> {
        let mut bytes = [0; 8];
        self.read(address, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let value: u64 = 0x0123_4567_89ab_cdef;
        let memory = ProcessMemory::open(std::process::id()).expect("open own /proc/self/mem");
        let address = &value as *const u64 as u64;
        assert_eq!(memory.read_u64(address).expect("read a live u64"), value);
        let mut buf = [0u8; 3];
        memory.read(address + 1, &mut buf).expect("read an unaligned range");
        assert_eq!(buf, [0xcd, 0xab, 0x89]);
    }

    #[test]
    fn unmapped_and_oversized_reads_fail() {
        let memory = ProcessMemory::open(std::process::id()).expect("open own /proc/self/mem");
        // Page zero is never mapped; the top of the address space is not a user address.
        assert!(memory.read_u64(8).is_err());
        assert!(memory.read_u64(u64::MAX - 3).is_err());
        assert!(memory.read_u64(0xffff_8000_0000_0000).is_err());
        let value = 7u8;
        let mut big = vec![0; MAX_READ + 1];
        assert_eq!(memory.read(&value as *const u8 as u64, &mut big).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_range_running_into_unmapped_memory_is_an_error() {
        // A mapping followed by a hole: a read across its end stops short.
        // SAFETY: plain anonymous mappings, unmapped before the test ends.
        unsafe {
            let page = 4096;
            let base = libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            assert_ne!(base, libc::MAP_FAILED);
            assert_eq!(libc::munmap(base.cast::<u8>().add(page).cast(), page), 0);
            let memory = ProcessMemory::open(std::process::id()).expect("open own /proc/self/mem");
            let mut buf = [0u8; 16];
            memory.read(base as u64 + page as u64 - 16, &mut buf).expect("the end of the mapping reads");
            assert!(memory.read(base as u64 + page as u64 - 8, &mut buf).is_err());
            libc::munmap(base, page);
        }
    }
}
