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
    cache: HashMap<Frame, Arc<str>>,
}

impl FrameNamer {
    /// A namer for this kernel's symbols (`None` leaves kernel frames as addresses).
    pub fn new(kernel: Option<KernelSymbols>) -> Self {
        FrameNamer { kernel, cache: HashMap::new() }
    }

    /// The frame's function name; for a frame with no symbol, `file+0xOFFSET` or the address.
    pub fn name(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> Arc<str> {
        if let Some(name) = self.cache.get(&frame) {
            return name.clone();
        }
        if self.cache.len() >= MAX_CACHED_NAMES {
            self.cache.clear();
        }
        let name: Arc<str> = match frame {
            Frame::Kernel { address } => match self.kernel.as_ref().and_then(|k| k.lookup(address)) {
                Some(symbol) => demangle(symbol.name).into(),
                None => format!("[kernel] {address:#x}").into(),
            },
            Frame::User { object, file_offset } => {
                let object = objects.ensure_loaded(object);
                match object.symbols().and_then(|s| s.lookup_file_offset(file_offset)) {
                    Some(symbol) => symbol.demangled().into(),
                    None => format!("{}+{file_offset:#x}", object.file_name()).into(),
                }
            }
            Frame::Unknown { .. } => "[unknown]".into(),
        };
        self.cache.insert(frame, name.clone());
        name
    }
}
