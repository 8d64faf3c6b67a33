//! Names for frames: kernel frames from `/proc/kallsyms`, user frames from their file's
//! symbols. Names are cached per frame, so a hot frame is looked up once.

use std::{collections::HashMap, sync::Arc};

use symbolizer::{demangle::demangle, kallsyms::KernelSymbols};

use crate::{objects::ObjectRegistry, profile::Frame};

/// Entries kept in the name cache before it is cleared (bounds memory on long runs).
const MAX_CACHED_NAMES: usize = 1 << 20;

/// Names frames and remembers the answers.
#[derive(Debug)]
pub struct FrameNamer {
    kernel: Option<KernelSymbols>,
    cache: HashMap<Frame, Named>,
}

/// A cached answer: the name, and whether it came from a symbol (not a fallback).
#[derive(Debug, Clone)]
struct Named {
    name: Arc<str>,
    from_symbol: bool,
}

impl FrameNamer {
    /// A namer for this kernel's symbols (`None` leaves kernel frames as addresses).
    pub fn new(kernel: Option<KernelSymbols>) -> Self {
        FrameNamer { kernel, cache: HashMap::new() }
    }

    /// The frame's function name; for a frame with no symbol, `file+0xOFFSET` or the address.
    pub fn name(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> Arc<str> {
        self.lookup(frame, objects).name.clone()
    }

    /// The frame's function name if a symbol names it (no fallback).
    pub fn symbol(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> Option<Arc<str>> {
        let named = self.lookup(frame, objects);
        named.from_symbol.then(|| named.name.clone())
    }

    fn lookup(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> &Named {
        if self.cache.len() >= MAX_CACHED_NAMES && !self.cache.contains_key(&frame) {
            self.cache.clear();
        }
        let kernel = self.kernel.as_ref();
        self.cache.entry(frame).or_insert_with(|| {
            let (name, from_symbol): (Arc<str>, bool) = match frame {
                Frame::Kernel { address } => match kernel.and_then(|k| k.lookup(address)) {
                    Some(symbol) => (demangle(symbol.name).into(), true),
                    None => (format!("[kernel] {address:#x}").into(), false),
                },
                Frame::User { object, file_offset } => {
                    let object = objects.ensure_loaded(object);
                    match object.symbols().and_then(|s| s.lookup_file_offset(file_offset)) {
                        Some(symbol) => (symbol.demangled().into(), true),
                        None => (format!("{}+{file_offset:#x}", object.file_name()).into(), false),
                    }
                }
                Frame::Unknown { .. } => ("[unknown]".into(), false),
                Frame::UnwindError { reason } => (format!("[unwind error: {}]", reason.describe()).into(), false),
            };
            Named { name, from_symbol }
        })
    }
}
