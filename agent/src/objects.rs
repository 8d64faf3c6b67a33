//! Executable files seen in sampled processes, and their symbols, loaded once per file.
//!
//! A file is identified by its [`FileIdentity`] (device, inode, modification time, size: the
//! unwind tables' key too); once its ELF is read, files with the same build ID share one
//! symbol table. Symbols are read the first time a sample
//! lands in the file, through `/proc/PID/map_files` (which works across mount namespaces and
//! for deleted files) while the process is alive, falling back to the path. The vDSO is one
//! more object, named `[vdso]`, whose symbols come from oxeye's own copy.

use std::{collections::HashMap, fs::File, io::Cursor, os::unix::fs::MetadataExt, path::PathBuf, sync::Arc};

use agent_common::files::KernelFile;
use symbolizer::{build_id::BuildId, debug_file::DebugFile, elf::ElfSymbols, file_id::FileId};
use tracing::debug;

use crate::{
    debug_sources::{self, DebugSources},
    process::maps::{map_files_path, mapped_file_metadata, FileIdentity},
    symbols::Catalog,
};

/// Index of an object in the [`ObjectRegistry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u32);

/// What an object is keyed by: a file's identity (the same key the unwind tables use), or
/// the vDSO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileKey {
    File(FileIdentity),
    Vdso,
}

/// Symbols of one file, loaded on first use.
#[derive(Debug)]
enum Symbols {
    NotLoaded,
    Loaded(Arc<ElfSymbols>),
    /// Loading failed; the reason is logged once and frames keep file + offset.
    Failed,
}

/// One executable file.
#[derive(Debug)]
pub struct Object {
    /// Path as the process that mapped it sees it.
    pub path: String,
    /// File size in bytes, when known.
    pub size: u64,
    /// Where to read it from, best first.
    open_paths: Vec<PathBuf>,
    symbols: Symbols,
    file_id: Option<FileId>,
    /// The path its symbols were read from.
    read_from: Option<PathBuf>,
    /// The root the process that mapped it sees (`/proc/PID/root`), where a debug link's
    /// neighbours are looked for.
    root: PathBuf,
}

impl Object {
    /// The file name without directories.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The loaded symbols, if loading has happened and worked.
    pub fn symbols(&self) -> Option<&ElfSymbols> {
        match &self.symbols {
            Symbols::Loaded(symbols) => Some(symbols),
            _ => None,
        }
    }

    /// Where the file's DWARF can be read, best first: its debug file, or the file itself
    /// where it has DWARF.
    pub fn dwarf_paths(&self) -> Vec<PathBuf> {
        let Some(symbols) = self.symbols() else { return Vec::new() };
        match symbols.debug_file() {
            Some(debug_file) => vec![debug_file.to_owned()],
            None if symbols.has_dwarf() => self.read_from.iter().chain(&self.open_paths).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The GNU build ID, once the file has been read.
    pub fn build_id(&self) -> Option<&BuildId> {
        self.symbols().and_then(ElfSymbols::build_id)
    }

    /// The htlhash file ID, once the file has been read.
    pub fn file_id(&self) -> Option<FileId> {
        self.file_id
    }
}

/// All executable files seen so far.
#[derive(Debug, Default)]
pub struct ObjectRegistry {
    objects: Vec<Object>,
    by_key: HashMap<FileKey, ObjectId>,
    by_build_id: HashMap<BuildId, Arc<ElfSymbols>>,
    /// The same files by the kernel's (device, inode), which the BPF side reports for
    /// processes too brief to read; the newest file wins.
    by_kernel_file: HashMap<KernelFile, ObjectId>,
    /// Where files are published for the symbol endpoint, when it runs.
    catalog: Option<Arc<Catalog>>,
    /// Where separate debug files come from.
    debug: DebugSources,
}

impl ObjectRegistry {
    /// Publishes every file whose ID is known, now and from now on, to `catalog`.
    pub fn publish_to(&mut self, catalog: Arc<Catalog>) {
        self.catalog = Some(catalog);
    }

    /// A registry that completes stripped files' symbols from `debug`.
    pub fn with_debug_sources(debug: DebugSources) -> Self {
        ObjectRegistry { debug, ..Default::default() }
    }

    /// How debug files were found so far.
    pub fn debug_sources(&self) -> &DebugSources {
        &self.debug
    }

    /// Re-reads the files whose debug file debuginfod has fetched since the last call, with
    /// its symbols; returns them, so cached names can be forgotten.
    pub fn refresh_debug_files(&mut self) -> Vec<ObjectId> {
        let mut refreshed = Vec::new();
        for (ids, found) in self.debug.take_fetched() {
            let Some(&first) = ids.first() else { continue };
            let Some(symbols) = self.reread_with(first, &found) else { continue };
            if let Some(build_id) = symbols.build_id() {
                self.by_build_id.insert(build_id.clone(), symbols.clone());
            }
            for &id in &ids {
                let object = &mut self.objects[id.0 as usize];
                object.symbols = Symbols::Loaded(symbols.clone());
                if let (Some(catalog), Some(file_id)) = (&self.catalog, object.file_id) {
                    catalog.set_debug_file(file_id, found.path.clone());
                }
            }
            refreshed.extend(ids);
        }
        refreshed
    }

    /// Object `id`'s symbols read again, completed from `found`.
    fn reread_with(&self, id: ObjectId, found: &DebugFile) -> Option<Arc<ElfSymbols>> {
        let object = &self.objects[id.0 as usize];
        let (mut symbols, _, _) = load_first(&object.open_paths).map_err(|error| debug!(path = %object.path, %error, "cannot read symbols again")).ok()?;
        debug_sources::merge(&mut symbols, found, &object.path).then(|| Arc::new(symbols))
    }

    /// Registers the file behind a mapping of process `pid`, or finds it if known.
    pub fn register(&mut self, pid: u32, start: u64, end: u64, dev: u64, inode: u64, path: &str) -> ObjectId {
        let map_file = PathBuf::from(map_files_path(pid, start, end));
        let metadata = mapped_file_metadata(pid, start, end, dev, inode, path);
        // Without the file (the process is gone), the device and inode `maps` showed.
        let identity = metadata.as_ref().map_or(FileIdentity { dev, inode, mtime_ns: 0, size: 0 }, FileIdentity::of);
        let key = FileKey::File(identity);
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let clean_path = path.strip_suffix(" (deleted)").unwrap_or(path);
        let mut open_paths = vec![map_file, PathBuf::from(format!("/proc/{pid}/root{clean_path}"))];
        // The plain path, for when the process is gone, only if it is the same file here.
        if std::fs::metadata(clean_path).is_ok_and(|m| m.ino() == inode) {
            open_paths.push(PathBuf::from(clean_path));
        }
        let id = self.add_file(key, path, metadata.as_ref().map_or(0, |m| m.len()), open_paths, pid);
        if metadata.is_some() {
            self.by_kernel_file.insert(identity.kernel_file(), id);
        }
        id
    }

    /// The file the kernel calls `file`, if a process mapped it or exec'd it before.
    pub fn find_kernel_file(&self, file: KernelFile) -> Option<ObjectId> {
        self.by_kernel_file.get(&file).copied()
    }

    /// Registers the executable process `pid` exec'd (`path` as given to `execve`), found
    /// through the process while it lives, else by path; only a file with the kernel's
    /// identity `file` is taken. `None` if none is.
    pub fn register_exec(&mut self, pid: u32, file: KernelFile, path: &str) -> Option<ObjectId> {
        if let Some(id) = self.find_kernel_file(file) {
            return Some(id);
        }
        let mut candidates = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
        if path.starts_with('/') {
            candidates.push(PathBuf::from(format!("/proc/{pid}/root{path}")));
            candidates.push(PathBuf::from(path));
        }
        // Only paths that lead to that very file: in another mount namespace the same path
        // may be another file.
        let matching: Vec<(PathBuf, std::fs::Metadata)> = candidates
            .into_iter()
            .filter_map(|candidate| {
                let metadata = std::fs::metadata(&candidate).ok()?;
                (FileIdentity::of(&metadata).kernel_file() == file).then_some((candidate, metadata))
            })
            .collect();
        let (_, metadata) = matching.first()?;
        let key = FileKey::File(FileIdentity::of(metadata));
        let size = metadata.len();
        let only_through_process = matching.iter().all(|(path, _)| path.starts_with("/proc"));
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => self.add_file(key, path, size, matching.into_iter().map(|(p, _)| p).collect(), pid),
        };
        self.by_kernel_file.insert(file, id);
        if only_through_process {
            // Read now: `/proc/PID/exe` goes with the process.
            self.ensure_loaded(id);
        }
        Some(id)
    }

    fn add_file(&mut self, key: FileKey, path: &str, size: u64, open_paths: Vec<PathBuf>, pid: u32) -> ObjectId {
        let id = ObjectId(self.objects.len() as u32);
        self.objects.push(Object {
            path: path.to_owned(),
            size,
            open_paths,
            symbols: Symbols::NotLoaded,
            file_id: None,
            read_from: None,
            root: PathBuf::from(format!("/proc/{pid}/root")),
        });
        self.by_key.insert(key, id);
        id
    }

    /// Registers the vDSO (the same image in every process), or finds it: its symbols are
    /// read from oxeye's own copy.
    pub fn register_vdso(&mut self) -> ObjectId {
        let key = FileKey::Vdso;
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = ObjectId(self.objects.len() as u32);
        let symbols = match crate::vdso::image().map(ElfSymbols::parse) {
            Some(Ok(symbols)) => Symbols::Loaded(Arc::new(symbols)),
            _ => Symbols::Failed,
        };
        let size = crate::vdso::image().map_or(0, |image| image.len() as u64);
        // Its file ID is hashed from the image, as for any file: devfiler refuses a mapping
        // that has attributes but no file ID.
        let file_id = crate::vdso::image().and_then(|image| FileId::from_reader(Cursor::new(image)).ok());
        if let (Some(catalog), Some(file_id)) = (&self.catalog, file_id) {
            catalog.add_vdso(file_id);
        }
        self.objects.push(Object { path: "[vdso]".to_owned(), size, open_paths: Vec::new(), symbols, file_id, read_from: None, root: PathBuf::new() });
        self.by_key.insert(key, id);
        id
    }

    /// The object with id `id`.
    pub fn get(&self, id: ObjectId) -> &Object {
        &self.objects[id.0 as usize]
    }

    /// Makes sure `id`'s symbols have been loaded (or that loading has been tried once).
    pub fn ensure_loaded(&mut self, id: ObjectId) -> &Object {
        let object = &self.objects[id.0 as usize];
        if matches!(object.symbols, Symbols::NotLoaded) && !object.open_paths.is_empty() {
            let symbols = match load_first(&object.open_paths) {
                Ok((symbols, file, path)) => {
                    let path = path.clone();
                    self.objects[id.0 as usize].read_from = Some(path.clone());
                    Symbols::Loaded(self.share_symbols(id, symbols, file, &path))
                }
                Err(error) => {
                    debug!(path = %object.path, %error, "cannot read symbols");
                    Symbols::Failed
                }
            };
            self.objects[id.0 as usize].symbols = symbols;
        }
        &self.objects[id.0 as usize]
    }

    /// Completes freshly read symbols with a debug file's, publishes the file, and shares the
    /// symbols with other files of the same build ID.
    fn share_symbols(&mut self, id: ObjectId, mut symbols: ElfSymbols, file: File, opened_at: &std::path::Path) -> Arc<ElfSymbols> {
        let object = &mut self.objects[id.0 as usize];
        // From the descriptor the symbols came from: the process (and with it its map_files
        // path) may be gone by now.
        object.file_id = FileId::from_reader(&file).ok();
        let known = symbols.build_id().and_then(|build_id| self.by_build_id.get(build_id)).cloned();
        match (&known, symbols.build_id()) {
            (Some(_), Some(build_id)) => self.debug.shares(id, build_id),
            _ => {
                let seen_path = object.path.strip_suffix(" (deleted)").unwrap_or(&object.path);
                self.debug.complete(id, &mut symbols, seen_path, &object.root);
            }
        }
        let debug_file = known.as_ref().map_or_else(|| symbols.debug_file(), |k| k.debug_file()).map(|p| p.to_owned());
        if let (Some(catalog), Some(file_id)) = (&self.catalog, object.file_id) {
            catalog.add_file(file_id, &object.path, file, opened_at, &object.open_paths, debug_file);
        }
        match (known, symbols.build_id().cloned()) {
            (Some(known), _) => known,
            (None, Some(build_id)) => self.by_build_id.entry(build_id).or_insert_with(|| Arc::new(symbols)).clone(),
            (None, None) => Arc::new(symbols),
        }
    }
}

/// Reads the symbols from the first path that works; returns them with the open file and
/// that path.
fn load_first(paths: &[PathBuf]) -> Result<(ElfSymbols, File, &PathBuf), symbolizer::Error> {
    let (first, rest) = paths.split_first().expect("open_paths always holds the map_files path");
    let mut result = load(first);
    for path in rest {
        match result {
            // A file that exists but is not a valid ELF will not get better at another path.
            Ok(_) | Err(symbolizer::Error::Elf { .. } | symbolizer::Error::NotElf { .. }) => break,
            Err(_) => result = load(path),
        }
    }
    result
}

fn load(path: &PathBuf) -> Result<(ElfSymbols, File, &PathBuf), symbolizer::Error> {
    let file = File::open(path).map_err(|source| symbolizer::Error::Io { path: path.clone(), source })?;
    let symbols = ElfSymbols::read(&file, path)?;
    Ok((symbols, file, path))
}
