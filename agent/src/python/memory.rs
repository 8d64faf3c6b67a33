//! STUB (replaced by the real reader).
use std::{fs::File, io, os::unix::fs::FileExt};
/// A process's memory.
#[derive(Debug)]
pub struct ProcessMemory { file: File }
impl ProcessMemory {
    /// Opens `/proc/PID/mem`.
    pub fn open(pid: u32) -> io::Result<Self> { Ok(ProcessMemory { file: File::open(format!("/proc/{pid}/mem"))? }) }
    /// Reads exactly `buf.len()` bytes.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> io::Result<()> { self.file.read_exact_at(buf, address) }
    /// Reads a u64.
    pub fn read_u64(&self, address: u64) -> io::Result<u64> { let mut b = [0u8; 8]; self.read(address, &mut b)?; Ok(u64::from_ne_bytes(b)) }
}
