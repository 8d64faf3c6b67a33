//! Names for frames: kernel frames from `/proc/kallsyms`, user frames from their file's
//! symbols. Names are cached per frame, so a hot frame is looked up once.

use std::{collections::HashMap, sync::Arc};

use symbolizer::{demangle::demangle, kallsyms::KernelSymbols};

use crate::{
    jit::functions::{JitFunctions, Runtime},
    objects::{ObjectId, ObjectRegistry},
    profile::Frame,
    python::functions::FunctionTable,
    source_frames::{DwarfFigures, SourceFrames},
};

/// The kernel's pseudo-file, as `perf` and the OpenTelemetry eBPF profiler name it.
pub const KERNEL_FILE: &str = "[kernel.kallsyms]";

/// Entries kept in the name cache before it is cleared (bounds memory on long runs).
const MAX_CACHED_NAMES: usize = 1 << 20;

/// Names frames and remembers the answers.
#[derive(Debug)]
pub struct FrameNamer {
    kernel: Option<KernelSymbols>,
    cache: HashMap<Frame, Named>,
    python: FunctionTable,
    jit: JitFunctions,
    /// Inlined calls, files and lines, from `.gopclntab` and DWARF.
    source: SourceFrames,
}

/// Where a frame's code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The kernel ([`KERNEL_FILE`]).
    Kernel,
    /// A file (or the vDSO image) in the registry.
    File(ObjectId),
    /// No file: JIT code, a bad frame pointer, or the marker of an unfinished walk.
    Anonymous,
    /// Code an interpreter runs (a Python function) or a JIT compiled (named by its perf
    /// map): named by the runtime, with no file mapping.
    Interpreted,
}

/// What a frame is, by the OpenTelemetry eBPF profiler's `profile.frame.type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Kernel code.
    Kernel,
    /// Native user code (or unknown user code).
    Native,
    /// A Python function run by CPython.
    Python,
    /// Go code, named from the binary's `.gopclntab`.
    Go,
    /// JavaScript compiled by V8 (Node.js).
    V8js,
    /// Java compiled by a JVM.
    Jvm,
    /// .NET code.
    Dotnet,
    /// The stack could not be walked further.
    AbortMarker,
}

impl FrameKind {
    /// The `profile.frame.type` value.
    pub fn otel_name(self) -> &'static str {
        match self {
            FrameKind::Kernel => "kernel",
            FrameKind::Native => "native",
            FrameKind::Python => "cpython",
            FrameKind::Go => "go",
            FrameKind::V8js => "v8js",
            FrameKind::Jvm => "jvm",
            FrameKind::Dotnet => "dotnet",
            FrameKind::AbortMarker => "abort-marker",
        }
    }
}

/// A frame resolved for encoding.
#[derive(Debug, Clone)]
pub struct ResolvedFrame {
    /// Where its code is.
    pub code: Code,
    /// The kernel address, the offset into the file, or the virtual address (no file).
    pub address: u64,
    /// As `address`, but the file's own virtual address for a file (what devfiler expects).
    pub file_address: u64,
    /// What it is.
    pub kind: FrameKind,
    /// Its name: the function, or a fallback such as `file+0xOFFSET`.
    pub name: Arc<str>,
    /// Whether `name` came from a symbol.
    pub from_symbol: bool,
    /// The source file and line, where the runtime or the binary tells them (Python, Go
    /// and V8 frames).
    pub source: Option<SourceLine>,
}

/// Where in the source a frame is.
#[derive(Debug, Clone)]
pub struct SourceLine {
    /// The source file, as the runtime names it.
    pub file: Arc<str>,
    /// The line executing.
    pub line: u32,
    /// The function's first line.
    pub first_line: u32,
}

impl ResolvedFrame {
    /// The function's name if a symbol gave it.
    pub fn symbol(&self) -> Option<&Arc<str>> {
        self.from_symbol.then_some(&self.name)
    }

    /// The path of the code's file (`""` without one).
    pub fn path<'a>(&'a self, objects: &'a ObjectRegistry) -> &'a str {
        match self.code {
            Code::Kernel => KERNEL_FILE,
            Code::File(_) if self.source.is_some() => self.source.as_ref().map_or("", |source| &source.file),
            Code::File(id) => &objects.get(id).path,
            Code::Anonymous => "",
            Code::Interpreted => self.source.as_ref().map_or("", |source| &source.file),
        }
    }
}

/// A cached answer: the name, whether it came from a symbol (not a fallback), and the source
/// line where the binary tells it (Go, DWARF).
#[derive(Debug, Clone)]
pub struct Named {
    pub name: Arc<str>,
    pub from_symbol: bool,
    pub source: Option<SourceLine>,
}

impl FrameNamer {
    /// A namer for this kernel's symbols (`None` leaves kernel frames as addresses).
    pub fn new(kernel: Option<KernelSymbols>) -> Self {
        FrameNamer { kernel, cache: HashMap::new(), python: FunctionTable::default(), jit: JitFunctions::default(), source: SourceFrames::default() }
    }

    /// How many source-level frames (inlined calls, then the function) the code at
    /// `file_offset` of `object` is, if its file says (`.gopclntab` or DWARF).
    pub fn source_depth(&mut self, object: ObjectId, file_offset: u64, objects: &mut ObjectRegistry) -> Option<u16> {
        self.source.depth(object, file_offset, objects)
    }

    /// What the DWARF indexes hold.
    pub fn dwarf_figures(&self) -> DwarfFigures {
        self.source.figures()
    }

    /// Forgets the names of frames in `objects`, whose symbols have changed.
    pub fn forget_objects(&mut self, objects: &[ObjectId]) {
        self.source.forget(objects);
        self.cache.retain(|frame, _| frame.object().is_none_or(|object| !objects.contains(&object)));
    }

    /// The JIT functions frames refer to (perf maps add to it as samples arrive).
    pub fn jit_functions(&mut self) -> &mut JitFunctions {
        &mut self.jit
    }

    /// The Python functions frames refer to (samples add to it as they arrive).
    pub fn python_functions(&mut self) -> &mut FunctionTable {
        &mut self.python
    }

    /// The frame's display name: the function (a Python one with its file and line, as
    /// `Class.method (file.py:12)`); for a frame with no symbol, `file+0xOFFSET` or the
    /// address.
    pub fn name(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> Arc<str> {
        self.lookup(frame, objects).name.clone()
    }

    /// Everything an encoder needs about one frame, worked out in one place so that every
    /// output (OTLP, pprof, folded) names, places and types frames alike.
    pub fn resolve(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> ResolvedFrame {
        if let Frame::Python { function, line } = frame {
            let function = self.python.get(function);
            let source = SourceLine { file: Arc::clone(&function.filename), line, first_line: function.first_line };
            let name = Arc::clone(&function.name);
            return ResolvedFrame { code: Code::Interpreted, address: 0, file_address: 0, kind: FrameKind::Python, name, from_symbol: true, source: Some(source) };
        }
        if let Frame::Jit { function } = frame {
            let function = self.jit.get(function);
            let kind = match function.runtime {
                Runtime::V8 => FrameKind::V8js,
                Runtime::Jvm => FrameKind::Jvm,
                Runtime::Dotnet => FrameKind::Dotnet,
                Runtime::Other => FrameKind::Native,
            };
            let source = (!function.file.is_empty()).then(|| SourceLine { file: Arc::clone(&function.file), line: function.line, first_line: function.line });
            let name = Arc::clone(&function.name);
            return ResolvedFrame { code: Code::Interpreted, address: 0, file_address: 0, kind, name, from_symbol: true, source };
        }
        let named = self.lookup(frame, objects).clone();
        let (code, address, file_address, kind) = match frame {
            Frame::Kernel { address } => (Code::Kernel, address, address, FrameKind::Kernel),
            Frame::User { object, file_offset } => {
                let loaded = objects.ensure_loaded(object);
                let file_address = loaded.symbols().and_then(|s| s.file_offset_to_address(file_offset)).unwrap_or(file_offset);
                (Code::File(object), file_offset, file_address, FrameKind::Native)
            }
            Frame::Unknown { address } => (Code::Anonymous, address, address, FrameKind::Native),
            Frame::UnwindError { .. } => (Code::Anonymous, 0, 0, FrameKind::AbortMarker),
            Frame::Python { .. } => (Code::Interpreted, 0, 0, FrameKind::Python),
            Frame::Source { object, file_offset, .. } => {
                let loaded = objects.ensure_loaded(object);
                let file_address = loaded.symbols().and_then(|s| s.file_offset_to_address(file_offset)).unwrap_or(file_offset);
                let kind = if loaded.symbols().is_some_and(|s| s.go().is_some()) { FrameKind::Go } else { FrameKind::Native };
                (Code::File(object), file_offset, file_address, kind)
            }
            Frame::Jit { .. } => (Code::Interpreted, 0, 0, FrameKind::Native),
        };
        ResolvedFrame { code, address, file_address, kind, name: named.name, from_symbol: named.from_symbol, source: named.source }
    }

    fn lookup(&mut self, frame: Frame, objects: &mut ObjectRegistry) -> &Named {
        if self.cache.len() >= MAX_CACHED_NAMES && !self.cache.contains_key(&frame) {
            self.cache.clear();
        }
        let kernel = self.kernel.as_ref();
        let (python, jit, source) = (&self.python, &self.jit, &mut self.source);
        self.cache.entry(frame).or_insert_with(|| {
            if let Frame::Source { object, file_offset, index } = frame {
                return source.named(object, file_offset, index, objects);
            }
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
                Frame::Python { function, line } => {
                    let function = python.get(function);
                    (format!("{} ({}:{line})", function.name, function.short_filename()).into(), true)
                }
                Frame::Jit { function } => {
                    let function = jit.get(function);
                    match function.line {
                        0 => (Arc::clone(&function.name), true),
                        line => (format!("{} ({}:{line})", function.name, function.short_file()).into(), true),
                    }
                }
                Frame::UnwindError { reason } => (format!("[unwind error: {}]", reason.describe()).into(), false),
                Frame::Source { .. } => unreachable!("named above"),
            };
            Named { name, from_symbol, source: None }
        })
    }
}
