//! Source-level frames of one address in a file: the calls the compiler inlined there,
//! innermost first, then the function whose code it is, each with file and line.
//!
//! Go binaries say it in `.gopclntab` (frame type `go`); other native code in DWARF, where
//! the file or its separate debug file has it (frame type `native`). The outermost frame keeps
//! the symbol table's name where there is one (as `perf report --inline` does), so a file
//! whose DWARF turns up later does not rename its functions; the inlined ones are DWARF's.
//!
//! A file's DWARF is indexed on a thread of its own (libc's takes 0.1 s, a large Rust
//! binary's seconds), never on the loop that drains samples: until its index is ready, a
//! file's frames are named by symbol alone.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        mpsc::{self, Receiver, Sender},
        Arc,
    },
};

use symbolizer::dwarf_frames::{DwarfFrames, SourceFrame};
use tracing::{debug, warn};

use crate::{
    objects::{ObjectId, ObjectRegistry},
    symbolize::{Named, SourceLine},
};

/// Addresses whose frame count is remembered before the cache is cleared.
const MAX_CACHED_ADDRESSES: usize = 1 << 20;
/// Memory all DWARF indexes may hold; files indexed past it are not kept (and counted).
const MAX_DWARF_BYTES: usize = 128 << 20;
/// Memory one file's index may hold: a large C library's fits in a few MiB; a large Rust or
/// C++ binary's (tens of MiB) is not built, and its frames are named by symbol alone.
const MAX_FILE_DWARF_BYTES: usize = 8 << 20;

/// A file's DWARF index.
#[derive(Debug)]
enum Dwarf {
    /// Being built.
    Pending,
    /// Built (`None`: no DWARF, unreadable, or over the memory budget).
    Ready(Option<Arc<DwarfFrames>>),
}

/// Frame counts and DWARF indexes, per file.
#[derive(Debug, Default)]
pub struct SourceFrames {
    /// How many source-level frames each address is (0: none known, name it by symbol).
    depths: HashMap<(ObjectId, u64), u16>,
    dwarf: HashMap<ObjectId, Dwarf>,
    indexer: Option<Indexer>,
    /// Indexes asked for and not yet taken.
    pending: usize,
    figures: DwarfFigures,
}

/// What the DWARF indexes hold, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct DwarfFigures {
    /// Files whose DWARF is indexed.
    pub files: usize,
    /// Bytes the indexes hold.
    pub bytes: usize,
    /// Files not indexed for lack of memory budget.
    pub over_budget: usize,
}

/// A file's index would not fit its budget.
#[derive(Debug)]
struct TooLarge;

/// The thread that builds indexes, and its answers.
#[derive(Debug)]
struct Indexer {
    requests: Sender<(ObjectId, Vec<PathBuf>)>,
    built: Receiver<(ObjectId, Result<Option<DwarfFrames>, TooLarge>)>,
}

impl Indexer {
    fn start() -> Option<Indexer> {
        let (requests, jobs) = mpsc::channel::<(ObjectId, Vec<PathBuf>)>();
        let (done, built) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("oxeye-dwarf".into()).spawn(move || {
            for (object, paths) in jobs {
                let index = paths.iter().find_map(|path| match DwarfFrames::open(path, MAX_FILE_DWARF_BYTES) {
                    Ok(index) => Some(Ok(index)),
                    Err(symbolizer::Error::TooLarge { path, size }) => {
                        debug!(path = %path.display(), size, "DWARF index over its budget: named by symbol alone");
                        Some(Err(TooLarge))
                    }
                    Err(error) => {
                        debug!(%error, "no DWARF index");
                        None
                    }
                });
                if done.send((object, index.unwrap_or(Ok(None)))).is_err() {
                    return;
                }
                // Building can take several times the index's size (sections decompressed,
                // an index given up past its budget): give this thread's arena back.
                // SAFETY: malloc_trim only releases free memory.
                unsafe { libc::malloc_trim(0) };
            }
        });
        match spawned {
            Ok(_) => Some(Indexer { requests, built }),
            Err(error) => {
                warn!("cannot start the DWARF thread, inlined frames are off: {error}");
                None
            }
        }
    }
}

impl SourceFrames {
    /// How many source-level frames the code at `file_offset` of `object` is, if its file says.
    pub fn depth(&mut self, object: ObjectId, file_offset: u64, objects: &mut ObjectRegistry) -> Option<u16> {
        if self.pending > 0 {
            self.take_built();
        }
        if self.depths.len() >= MAX_CACHED_ADDRESSES && !self.depths.contains_key(&(object, file_offset)) {
            self.depths.clear();
        }
        if let Some(&depth) = self.depths.get(&(object, file_offset)) {
            return (depth > 0).then_some(depth);
        }
        let depth = self.count(object, file_offset, objects).min(u16::MAX as usize) as u16;
        self.depths.insert((object, file_offset), depth);
        (depth > 0).then_some(depth)
    }

    fn count(&mut self, object: ObjectId, file_offset: u64, objects: &mut ObjectRegistry) -> usize {
        let loaded = objects.ensure_loaded(object);
        let Some((symbols, address)) = loaded.symbols().and_then(|s| Some((s, s.file_offset_to_address(file_offset)?))) else { return 0 };
        if let Some(table) = symbols.go() {
            let mut frames = Vec::new();
            return if table.lookup(address, &mut frames) { frames.len() } else { 0 };
        }
        let Some(dwarf) = self.dwarf_of(object, objects) else { return 0 };
        let mut frames = Vec::new();
        dwarf.frames(address, &mut frames);
        frames.len()
    }

    /// The name and source line of frame `index` (0 innermost) at `file_offset` of `object`.
    pub fn named(&mut self, object: ObjectId, file_offset: u64, index: u16, objects: &mut ObjectRegistry) -> Named {
        let loaded = objects.ensure_loaded(object);
        let fallback = Named { name: format!("{}+{file_offset:#x}", loaded.file_name()).into(), from_symbol: false, source: None };
        let Some((symbols, address)) = loaded.symbols().and_then(|s| Some((s, s.file_offset_to_address(file_offset)?))) else { return fallback };
        if let Some(table) = symbols.go() {
            let mut frames = Vec::new();
            let Some(frame) = table.lookup(address, &mut frames).then(|| frames.get(index as usize)).flatten() else { return fallback };
            let source = (!frame.file.is_empty()).then(|| SourceLine { file: frame.file.into(), line: frame.line, first_line: 0 });
            return Named { name: frame.function.into(), from_symbol: true, source };
        }
        let symbol: Option<Arc<str>> = symbols.symbols().lookup(address).map(|s| s.demangled().into());
        let Some(dwarf) = self.dwarf_of(object, objects) else { return fallback };
        let mut frames: Vec<SourceFrame<'_>> = Vec::new();
        dwarf.frames(address, &mut frames);
        let outermost = index as usize + 1 == frames.len();
        let Some(frame) = frames.get(index as usize) else { return fallback };
        let source = frame.file.map(|file| SourceLine { file: file.into(), line: frame.line, first_line: 0 });
        let name = match (outermost, symbol) {
            (true, Some(symbol)) => symbol,
            _ => frame.function.into(),
        };
        Named { name, from_symbol: true, source }
    }

    /// Forgets what is known of `objects`, whose symbols have changed.
    pub fn forget(&mut self, objects: &[ObjectId]) {
        self.depths.retain(|(object, _), _| !objects.contains(object));
        // A pending index of the old file is dropped when it arrives, and asked for again.
        self.dwarf.retain(|object, _| !objects.contains(object));
    }

    /// What the DWARF indexes hold.
    pub fn figures(&self) -> DwarfFigures {
        self.figures
    }

    /// The DWARF index of `object`: asked for on first use, `None` until it is built.
    fn dwarf_of(&mut self, object: ObjectId, objects: &ObjectRegistry) -> Option<Arc<DwarfFrames>> {
        self.take_built();
        match self.dwarf.get(&object) {
            Some(Dwarf::Ready(index)) => return index.clone(),
            Some(Dwarf::Pending) => return None,
            None => {}
        }
        let paths = objects.get(object).dwarf_paths();
        if paths.is_empty() {
            self.dwarf.insert(object, Dwarf::Ready(None));
            return None;
        }
        if self.indexer.is_none() {
            self.indexer = Indexer::start();
        }
        let sent = self.indexer.as_ref().is_some_and(|indexer| indexer.requests.send((object, paths)).is_ok());
        self.pending += usize::from(sent);
        self.dwarf.insert(object, if sent { Dwarf::Pending } else { Dwarf::Ready(None) });
        None
    }

    /// Takes the indexes built since the last call.
    fn take_built(&mut self) {
        let Some(indexer) = &self.indexer else { return };
        while let Ok((object, index)) = indexer.built.try_recv() {
            self.pending = self.pending.saturating_sub(1);
            let index = match index {
                Ok(index) => index.filter(|index| {
                    let fits = self.figures.bytes + index.heap_bytes() <= MAX_DWARF_BYTES;
                    self.figures.over_budget += usize::from(!fits);
                    fits
                }),
                Err(TooLarge) => {
                    self.figures.over_budget += 1;
                    None
                }
            };
            if let Some(index) = &index {
                self.figures.files += 1;
                self.figures.bytes += index.heap_bytes();
            }
            // A file forgotten meanwhile (its debug file arrived) is asked for again.
            if matches!(self.dwarf.get(&object), Some(Dwarf::Pending)) {
                self.dwarf.insert(object, Dwarf::Ready(index.map(Arc::new)));
            }
            // Addresses counted while the index was being built stay counted as plain frames.
            self.depths.retain(|(o, _), depth| *o != object || *depth != 0);
        }
    }
}
