//! First-fit allocation of index ranges in a fixed-size array, with coalescing on free.

use std::collections::BTreeMap;

/// A range of array indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First index.
    pub start: u32,
    /// Number of entries.
    pub len: u32,
}

/// The free ranges of an array of `capacity` entries.
#[derive(Debug)]
pub struct Extents {
    /// Free ranges: start → length; never adjacent (they are merged).
    free: BTreeMap<u32, u32>,
    capacity: u32,
    used: u32,
}

impl Extents {
    /// All of `capacity` entries free.
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Extents { free, capacity, used: 0 }
    }

    /// Entries in use.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Total entries.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes `len` contiguous entries (the lowest free range that fits), if there are.
    pub fn allocate(&mut self, len: u32) -> Option<Extent> {
        if len == 0 {
            return Some(Extent { start: 0, len: 0 });
        }
        let (&start, &free_len) = self.free.iter().find(|&(_, &free_len)| free_len >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        self.used += len;
        Some(Extent { start, len })
    }

    /// Gives back an extent from [`Extents::allocate`].
    pub fn release(&mut self, extent: Extent) {
        if extent.len == 0 {
            return;
        }
        self.used -= extent.len;
        let (mut start, mut len) = (extent.start, extent.len);
        if let Some((&before, &before_len)) = self.free.range(..start).next_back() {
            if before + before_len == start {
                self.free.remove(&before);
                start = before;
                len += before_len;
            }
        }
        if let Some(after_len) = self.free.remove(&(start + len)) {
            len += after_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_first_fit_and_coalesces() {
        let mut extents = Extents::new(100);
        let a = extents.allocate(30).unwrap();
        let b = extents.allocate(30).unwrap();
        let c = extents.allocate(30).unwrap();
        assert_eq!((a.start, b.start, c.start), (0, 30, 60));
        assert!(extents.allocate(11).is_none(), "only 10 left");
        extents.release(a);
        extents.release(c);
        assert_eq!(extents.allocate(41), None, "30 + 40 free but not contiguous");
        extents.release(b);
        assert_eq!(extents.used(), 0);
        assert_eq!(extents.allocate(100), Some(Extent { start: 0, len: 100 }), "all merged back");
    }
}
