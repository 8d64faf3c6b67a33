//! The on-disk cache: `{dir}/{hex}.debug`, written through `O_EXCL` temporary files and
//! renamed into place only once verified, kept under a byte budget by evicting the oldest.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::SystemTime,
};

use anyhow::{bail, Context};
use symbolizer::{build_id::BuildId, elf::ElfSymbols};

/// Temporary files carry this in their names, so a crashed run's leftovers can be found.
const TMP_MARK: &str = ".tmp";
const SUFFIX: &str = ".debug";

/// Why a download did not end up in the cache.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a usable ELF file: {0}")]
    NotElf(String),
    #[error("build ID {got} instead of the one asked for")]
    Mismatch { got: String },
}

/// The cache directory and what it holds.
pub struct Cache {
    dir: PathBuf,
    max_file_bytes: u64,
    max_cache_bytes: u64,
    /// Serializes store + evict, so two workers never evict each other's fresh file.
    store_lock: Mutex<()>,
    bytes: AtomicU64,
    files: AtomicU64,
    tmp_counter: AtomicU64,
}

/// A temporary download; removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        // Nothing left to remove once renamed; any other error can only be logged.
        if let Err(error) = fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::debug!("cannot remove {}: {error}", self.path.display());
            }
        }
    }
}

impl Cache {
    /// Opens (creating it if needed) the cache directory, removes stale temporary files and
    /// counts what is there.
    pub fn open(dir: PathBuf, max_file_bytes: u64, max_cache_bytes: u64) -> anyhow::Result<Self> {
        ensure_private_dir(&dir)?;
        let cache = Cache {
            dir,
            max_file_bytes,
            max_cache_bytes,
            store_lock: Mutex::new(()),
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
        };
        cache.remove_stale_temps()?;
        cache.evict(None);
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, id: &BuildId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// The cached file of `id`, if a regular file (a planted symlink is not followed).
    pub fn cached(&self, id: &BuildId) -> Option<PathBuf> {
        let path = self.path_for(id);
        let metadata = fs::symlink_metadata(&path).ok()?;
        metadata.file_type().is_file().then_some(path)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// Streams `body` into a temporary file, verifies it is the ELF file of `id`, renames it
    /// to its cache path and evicts old files. Returns the path and the build IDs evicted.
    pub fn store(
        &self,
        id: &BuildId,
        body: &mut dyn Read,
        declared_len: Option<u64>,
    ) -> Result<(PathBuf, Vec<BuildId>), StoreError> {
        // A declared length past the limit needs no download to be refused.
        if declared_len.is_some_and(|len| len > self.max_file_bytes) {
            return Err(StoreError::TooLarge { limit: self.max_file_bytes });
        }
        let mut temp = self.create_temp(id)?;
        let file = temp.file.as_mut().ok_or_else(|| io::Error::other("temporary file closed"))?;
        // One byte past the limit tells a body of exactly the limit from a larger one.
        let copied = io::copy(&mut body.take(self.max_file_bytes.saturating_add(1)), file)?;
        if copied > self.max_file_bytes {
            return Err(StoreError::TooLarge { limit: self.max_file_bytes });
        }
        file.flush()?;
        file.sync_data()?;
        temp.file.take();
        verify(&temp.path, id)?;

        let _guard = self.store_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = self.path_for(id);
        // rename replaces a planted symlink itself, never what it points to.
        fs::rename(&temp.path, &path)?;
        let evicted = self.evict(Some(&path));
        Ok((path, evicted))
    }

    fn create_temp(&self, id: &BuildId) -> io::Result<TempFile> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{id}{SUFFIX}{TMP_MARK}{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        Ok(TempFile { path, file: Some(file) })
    }

    fn remove_stale_temps(&self) -> anyhow::Result<()> {
        let entries = fs::read_dir(&self.dir).with_context(|| format!("cannot list {}", self.dir.display()))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(TMP_MARK) {
                if let Err(error) = fs::remove_file(entry.path()) {
                    tracing::debug!("cannot remove stale {}: {error}", entry.path().display());
                }
            }
        }
        Ok(())
    }

    /// Removes the oldest cached files until the cache fits its budget, sparing `keep`, and
    /// recounts what remains. Returns the build IDs removed.
    fn evict(&self, keep: Option<&Path>) -> Vec<BuildId> {
        let mut files = self.list();
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        let mut evicted = Vec::new();
        files.sort_by_key(|f| f.mtime);
        let mut remaining = files.len() as u64;
        for file in &files {
            if total <= self.max_cache_bytes {
                break;
            }
            if Some(file.path.as_path()) == keep {
                continue;
            }
            match fs::remove_file(&file.path) {
                Ok(()) => {
                    total -= file.size;
                    remaining -= 1;
                    evicted.push(file.id.clone());
                }
                Err(error) => tracing::debug!("cannot evict {}: {error}", file.path.display()),
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
        self.files.store(remaining, Ordering::Relaxed);
        evicted
    }

    /// The cached files: regular files named `{hex}.debug`.
    fn list(&self) -> Vec<CachedFile> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let id = parse_hex(name.to_str()?.strip_suffix(SUFFIX)?)?;
                let metadata = entry.metadata().ok()?;
                if !metadata.file_type().is_file() {
                    return None;
                }
                let mtime = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                Some(CachedFile { path: entry.path(), id, size: metadata.len(), mtime })
            })
            .collect()
    }
}

struct CachedFile {
    path: PathBuf,
    id: BuildId,
    size: u64,
    mtime: SystemTime,
}

/// Checks that `path` is an ELF file whose GNU build ID is `id`.
fn verify(path: &Path, id: &BuildId) -> Result<(), StoreError> {
    let elf = ElfSymbols::open(path).map_err(|error| StoreError::NotElf(error.to_string()))?;
    match elf.build_id() {
        Some(got) if got == id => Ok(()),
        Some(got) => Err(StoreError::Mismatch { got: got.to_hex() }),
        None => Err(StoreError::Mismatch { got: "none".into() }),
    }
}

/// Creates `dir` (mode 0700) or checks that an existing one is a real directory of ours, so
/// that nobody else can plant or read files in it.
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error).with_context(|| format!("cannot create {}", dir.display())),
    }
    let metadata = fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    if metadata.file_type().is_symlink() {
        bail!("debuginfod cache {} is a symlink; refusing it", dir.display());
    }
    if !metadata.is_dir() {
        bail!("debuginfod cache {} is not a directory", dir.display());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if metadata.uid() != euid {
        let owner = metadata.uid();
        bail!("debuginfod cache {} is owned by uid {owner}, not by us (uid {euid}); refusing it", dir.display());
    }
    if metadata.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}

/// Parses lower- or upper-case hex into a build ID.
pub fn parse_hex(hex: &str) -> Option<BuildId> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    BuildId::new(&bytes?)
}
