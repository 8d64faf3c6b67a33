//! A BPF array map mapped into oxeye's memory (`BPF_F_MMAPABLE`): unwind rows and mappings are
//! written with plain stores, with no syscall per entry.

use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};

/// A memory-mapped BPF array of `T`.
pub struct MappedArray<T> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
    /// Keeps the map's file descriptor open for as long as the mapping is used (none for the
    /// anonymous memory of unit tests).
    _map: Option<MapData>,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is owned by this value; it is plain memory shared only with the kernel.
unsafe impl<T: Send> Send for MappedArray<T> {}

impl<T: aya::Pod> MappedArray<T> {
    /// Maps the array `map`, which has `len` entries of `T`.
    pub fn new(map: Map, len: u32) -> Result<Self> {
        let Map::Array(map) = map else { bail!("not a BPF array map") };
        if !size_of::<T>().is_multiple_of(8) {
            bail!("array values must be a multiple of 8 bytes to be memory-mapped");
        }
        let page = page_size();
        let bytes = (len as usize * size_of::<T>()).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array of at least `bytes` bytes, shared and writable.
        let address = unsafe { libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("cannot memory-map an unwind table map");
        }
        let base = NonNull::new(address.cast::<T>()).context("mmap returned null")?;
        Ok(MappedArray { base, len: len as usize, bytes, _map: Some(map), _values: PhantomData })
    }

    /// Plain anonymous memory of `len` entries, standing in for a map in unit tests.
    #[cfg(test)]
    pub fn anonymous(len: u32) -> Self {
        let bytes = (len as usize * size_of::<T>()).div_ceil(page_size()) * page_size();
        // SAFETY: a private anonymous mapping, owned by the returned value.
        let address = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(address, libc::MAP_FAILED);
        let base = NonNull::new(address.cast::<T>()).expect("mmap returned null");
        MappedArray { base, len: len as usize, bytes, _map: None, _values: PhantomData }
    }

    /// Reads entry `index`.
    #[cfg(test)]
    pub fn get(&self, index: usize) -> T {
        assert!(index < self.len);
        // SAFETY: in bounds of a live mapping; `T` is plain data.
        unsafe { self.base.as_ptr().add(index).read() }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes `values` at index `start`. Panics if they do not fit (a bug in the allocator).
    pub fn write(&mut self, start: usize, values: &[T]) {
        assert!(start.checked_add(values.len()).is_some_and(|end| end <= self.len), "write past the end of a BPF array");
        // SAFETY: in bounds (checked above) of a live, writable mapping; `T` is plain data.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.base.as_ptr().add(start), values.len()) };
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: plain sysconf call.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}
