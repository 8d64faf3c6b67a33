//! The files the symbol endpoint may serve: exactly those a profiled process mapped
//! executable, published by the object registry when it first computes a file's ID.
//!
//! The registry lives on the main loop; this is the thread-safe view the server reads. Each
//! file keeps an open descriptor (up to [`MAX_OPEN_FILES`], and a quarter of the process's
//! descriptor limit), so it can be served after the process that mapped it has exited or the
//! file was replaced on disk; past that bound only its paths are kept, and a file found there is
//! served only if its ID still matches.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use symbolizer::file_id::FileId;

/// Files kept open for serving.
pub const MAX_OPEN_FILES: usize = 1024;
/// Files known at most; more are not served (an entry is a path and a descriptor).
pub const MAX_FILES: usize = 65_536;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A descriptor opened when the file was seen.
    Open(Arc<File>),
    /// Paths to try, best first; the file found must still have the ID.
    Paths(Vec<PathBuf>),
    /// The kernel's vDSO, from oxeye's own copy.
    Vdso,
}

/// One servable file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path the process saw, for logs.
    pub path: String,
    /// Where to read it.
    pub source: Source,
    /// A separate debug file of it, whose DWARF and symbols are served instead.
    pub debug_file: Option<PathBuf>,
}

/// The servable files by ID.
#[derive(Debug)]
pub struct Catalog {
    inner: Mutex<Inner>,
    /// Descriptors it may keep open.
    max_open: usize,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<FileId, Entry>,
    open: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog { inner: Mutex::default(), max_open: descriptor_budget() }
    }
}

/// How many descriptors the catalog may keep: a quarter of the limit, raised first to the hard
/// limit (distributions start root at a soft 1024), and at most [`MAX_OPEN_FILES`].
fn descriptor_budget() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let wanted = limit.rlim_max.min(65_536);
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = wanted;
            }
        }
    }
    (limit.rlim_cur as usize / 4).min(MAX_OPEN_FILES)
}

impl Catalog {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the file with ID `id`, open as `file` (read at `opened_at`, a path that worked
    /// just now), with `fallbacks` to try if the descriptor cannot be kept, and the separate
    /// debug file found for it.
    pub fn add_file(&self, id: FileId, path: &str, file: File, opened_at: &Path, fallbacks: &[PathBuf], debug_file: Option<PathBuf>) {
        let mut inner = self.lock();
        if inner.files.contains_key(&id) || inner.files.len() >= MAX_FILES {
            return;
        }
        let source = if inner.open < self.max_open {
            inner.open += 1;
            Source::Open(Arc::new(file))
        } else {
            Source::Paths(std::iter::once(opened_at.to_owned()).chain(fallbacks.iter().cloned()).collect())
        };
        inner.files.insert(id, Entry { path: path.to_owned(), source, debug_file });
    }

    /// Records the debug file fetched for `id` since it was published.
    pub fn set_debug_file(&self, id: FileId, debug_file: PathBuf) {
        if let Some(entry) = self.lock().files.get_mut(&id) {
            entry.debug_file = Some(debug_file);
        }
    }

    /// Publishes the vDSO.
    pub fn add_vdso(&self, id: FileId) {
        self.lock().files.entry(id).or_insert(Entry { path: "[vdso]".to_owned(), source: Source::Vdso, debug_file: None });
    }

    /// The entry for `id`, if a profiled process mapped such a file.
    pub fn get(&self, id: FileId) -> Option<Entry> {
        self.lock().files.get(&id).cloned()
    }

    /// As if every descriptor it may keep were open already.
    #[cfg(test)]
    pub fn use_up_descriptors(&self) {
        self.lock().open = self.max_open;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_descriptors_up_to_the_bound_then_paths() {
        let catalog = Catalog::default();
        let exe = std::env::current_exe().unwrap();
        catalog.add_file(FileId(1), "/first", File::open(&exe).unwrap(), &exe, &[], None);
        assert!(matches!(catalog.get(FileId(1)).unwrap().source, Source::Open(_)));
        catalog.use_up_descriptors();
        catalog.add_file(FileId(2), "/second", File::open(&exe).unwrap(), &exe, &[PathBuf::from("/elsewhere")], None);
        match catalog.get(FileId(2)).unwrap().source {
            Source::Paths(paths) => assert_eq!(paths, vec![exe.clone(), PathBuf::from("/elsewhere")]),
            other => panic!("{other:?}"),
        }
        assert!(catalog.get(FileId(3)).is_none());
        catalog.add_vdso(FileId(4));
        assert!(matches!(catalog.get(FileId(4)).unwrap().source, Source::Vdso));
    }
}
