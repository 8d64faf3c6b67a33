//! The aggregated profile: how many samples each distinct (process, thread, stack) got.
//!
//! Samples are aggregated in user space as they arrive: each stack is interned once, and a
//! sample costs one hash-map increment. The number of distinct entries is bounded; samples that
//! would need a new entry past the bound are counted as dropped, never silently lost.

use std::collections::HashMap;

use agent_common::unwind::StackEnd;

use crate::{jit::functions::JitFunctionId, links::SpanRef, objects::ObjectId, python::functions::FunctionId};

/// One frame of a stack, as precise as the sample allows; named later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Frame {
    /// A kernel address.
    Kernel {
        /// Address in the kernel (return addresses already moved back into the call).
        address: u64,
    },
    /// An address inside a file-backed mapping.
    User {
        /// The file.
        object: ObjectId,
        /// Offset into the file (return addresses already moved back into the call).
        file_offset: u64,
    },
    /// A user address outside any file or the vDSO: JIT code, or a bad frame pointer.
    Unknown {
        /// The virtual address.
        address: u64,
    },
    /// One source-level frame at an address whose file tells them (`.gopclntab`, DWARF):
    /// `index` 0 is the innermost function inlined there, the last the function whose code
    /// it is.
    Source {
        /// The file.
        object: ObjectId,
        /// Offset into the file (return addresses already moved back into the call).
        file_offset: u64,
        /// Which of the frames at that address.
        index: u16,
    },
    /// JIT-compiled code named by its process's perf map.
    Jit {
        /// The function (in the namer's JIT function table).
        function: JitFunctionId,
    },
    /// A Python function, at a line: one frame of a CPython interpreter's own stack.
    Python {
        /// The function (in the namer's Python function table).
        function: FunctionId,
        /// The line it is at.
        line: u32,
    },
    /// The user stack could not be walked further: the outermost frame says why.
    UnwindError {
        /// Why the walk stopped.
        reason: StackEnd,
    },
}

impl Frame {
    /// Whether the frame is in the kernel.
    pub fn is_kernel(&self) -> bool {
        matches!(self, Frame::Kernel { .. })
    }

    /// The file the frame's code is in, for frames named from a file.
    pub fn object(&self) -> Option<ObjectId> {
        match self {
            Frame::User { object, .. } | Frame::Source { object, .. } => Some(*object),
            _ => None,
        }
    }
}

/// Splits a stack (innermost first) into the frames of each machine address: the run of
/// [`Frame::Source`] frames at one address (innermost inlined first, the function whose code
/// it is last) is one group, any other frame a group of its own. Encoders that can say
/// "these functions are inlined at one address" (OTLP and pprof lines) use it.
pub fn frames_by_address(stack: &[Frame]) -> impl Iterator<Item = &[Frame]> {
    stack.chunk_by(|outer, inner| match (outer, inner) {
        (Frame::Source { object, file_offset, index }, Frame::Source { object: o, file_offset: f, index: i }) => {
            object == o && file_offset == f && *i == index + 1
        }
        _ => false,
    })
}

/// Index of an interned stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(u32);

/// Index of an interned process or thread name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(u32);

/// What one count is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process name.
    pub process: NameId,
    /// Thread name.
    pub thread: NameId,
    /// The stack, innermost frame first.
    pub stack: StackId,
}

/// Samples counted by (process, thread, stack).
#[derive(Debug)]
pub struct Profile {
    stacks: Vec<Box<[Frame]>>,
    stack_ids: HashMap<Box<[Frame]>, StackId>,
    names: Vec<Box<str>>,
    name_ids: HashMap<Box<str>, NameId>,
    counts: HashMap<SampleKey, u64>,
    /// Of those counts, the samples linked to a span (see [`crate::links`]).
    linked: HashMap<(SampleKey, SpanRef), u64>,
    /// Nanoseconds off CPU, by the stack the thread was switched out in.
    off_cpu: HashMap<SampleKey, u64>,
    max_entries: usize,
    /// Samples counted in.
    pub samples: u64,
    /// Samples dropped because the profile reached `max_entries`.
    pub dropped_full: u64,
}

impl Profile {
    /// An empty profile holding at most `max_entries` distinct stacks and sample keys.
    pub fn new(max_entries: usize) -> Self {
        Profile {
            stacks: Vec::new(),
            stack_ids: HashMap::new(),
            names: Vec::new(),
            name_ids: HashMap::new(),
            counts: HashMap::new(),
            linked: HashMap::new(),
            off_cpu: HashMap::new(),
            max_entries,
            samples: 0,
            dropped_full: 0,
        }
    }

    /// Counts one sample and returns its key (the interned stack and names, which the export
    /// batch refers to), or `None` if it was dropped because the profile is full.
    pub fn add(&mut self, pid: u32, tid: u32, process: &str, thread: &str, frames: &[Frame]) -> Option<SampleKey> {
        let key = self.key(pid, tid, process, thread, frames)?;
        if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
        } else if self.counts.len() < self.max_entries {
            self.counts.insert(key, 1);
        } else {
            self.dropped_full += 1;
            return None;
        }
        self.samples += 1;
        Some(key)
    }

    /// The key of a sample, its stack and names interned (`None`, counted as dropped, if the
    /// profile has no room for a new stack).
    pub fn key(&mut self, pid: u32, tid: u32, process: &str, thread: &str, frames: &[Frame]) -> Option<SampleKey> {
        let Some(stack) = self.intern_stack(frames) else {
            self.dropped_full += 1;
            return None;
        };
        Some(SampleKey { pid, tid, process: self.intern_name(process), thread: self.intern_name(thread), stack })
    }

    /// Counts `nanoseconds` off CPU under `key`; `false` (counted as dropped) if the profile
    /// is full.
    pub fn add_off_cpu(&mut self, key: SampleKey, nanoseconds: u64) -> bool {
        if let Some(total) = self.off_cpu.get_mut(&key) {
            *total += nanoseconds;
        } else if self.off_cpu.len() < self.max_entries {
            self.off_cpu.insert(key, nanoseconds);
        } else {
            self.dropped_full += 1;
            return false;
        }
        true
    }

    /// Every (key, nanoseconds off CPU), in no particular order.
    pub fn off_cpu(&self) -> impl Iterator<Item = (&SampleKey, u64)> {
        self.off_cpu.iter().map(|(key, &nanoseconds)| (key, nanoseconds))
    }

    fn intern_stack(&mut self, frames: &[Frame]) -> Option<StackId> {
        if let Some(&id) = self.stack_ids.get(frames) {
            return Some(id);
        }
        if self.stacks.len() >= self.max_entries {
            return None;
        }
        let id = StackId(self.stacks.len() as u32);
        self.stacks.push(frames.into());
        self.stack_ids.insert(frames.into(), id);
        Some(id)
    }

    fn intern_name(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        id
    }

    /// One of the samples counted under `key` was taken in the request of `span`. Bounded
    /// as the counts are: past `max_entries` links, samples stay counted, unlinked.
    pub fn link(&mut self, key: SampleKey, span: SpanRef) {
        if !self.counts.contains_key(&key) {
            return;
        }
        if let Some(count) = self.linked.get_mut(&(key, span)) {
            *count += 1;
        } else if self.linked.len() < self.max_entries {
            self.linked.insert((key, span), 1);
        }
    }

    /// The linked samples: (key, span, count), in no particular order. Their counts are
    /// part of [`Self::counts`].
    pub fn linked(&self) -> impl Iterator<Item = (&SampleKey, &SpanRef, u64)> {
        self.linked.iter().map(|((key, span), &count)| (key, span, count))
    }

    /// Every (key, count), in no particular order.
    pub fn counts(&self) -> impl Iterator<Item = (&SampleKey, u64)> {
        self.counts.iter().map(|(key, &count)| (key, count))
    }

    /// The frames of a stack, innermost first.
    pub fn stack(&self, id: StackId) -> &[Frame] {
        &self.stacks[id.0 as usize]
    }

    /// An interned name.
    pub fn name(&self, id: NameId) -> &str {
        &self.names[id.0 as usize]
    }

    /// Number of distinct stacks.
    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [Frame; 2] = [Frame::Kernel { address: 1 }, Frame::Unknown { address: 2 }];
    const B: [Frame; 1] = [Frame::Unknown { address: 3 }];

    #[test]
    fn counts_and_interns() {
        let mut profile = Profile::new(10);
        assert!(profile.add(1, 1, "p", "t", &A).is_some());
        assert!(profile.add(1, 1, "p", "t", &A).is_some());
        assert!(profile.add(1, 2, "p", "u", &A).is_some());
        assert_eq!(profile.stack_count(), 1);
        let mut counts: Vec<u64> = profile.counts().map(|(_, c)| c).collect();
        counts.sort();
        assert_eq!(counts, [1, 2]);
        assert_eq!(profile.samples, 3);
    }

    /// Recursion through one inlined call site repeats an address: each repetition is its own
    /// group, and a lone frame between them is too.
    #[test]
    fn frames_by_address_groups_one_address_at_a_time() {
        let object = crate::objects::ObjectId(1);
        let at = |file_offset, index| Frame::Source { object, file_offset, index };
        let stack = [Frame::Kernel { address: 1 }, at(0x10, 0), at(0x10, 1), at(0x10, 0), at(0x10, 1), at(0x20, 0), Frame::Unknown { address: 2 }];
        let lengths: Vec<usize> = frames_by_address(&stack).map(<[Frame]>::len).collect();
        assert_eq!(lengths, [1, 2, 2, 1, 1]);
    }

    #[test]
    fn bounded_and_counts_drops() {
        let mut profile = Profile::new(1);
        assert!(profile.add(1, 1, "p", "t", &A).is_some());
        assert!(profile.add(1, 1, "p", "t", &B).is_none(), "a second stack does not fit");
        assert!(profile.add(2, 2, "q", "t", &A).is_none(), "a second key does not fit");
        assert!(profile.add(1, 1, "p", "t", &A).is_some(), "existing entries still count");
        assert_eq!((profile.samples, profile.dropped_full), (2, 2));
    }
}
