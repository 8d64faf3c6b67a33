//! What the endpoint serves for one file: its symbfile (see [`symbolizer::symbfile`]),
//! compressed with zstd, built on the blocking pool (never on the loop that drains samples),
//! a few at a time, and kept briefly: devfiler asks for `metadata.json`, then `ranges`.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Seek},
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use symbolizer::{file_id::FileId, symbfile};
use tokio::sync::Semaphore;
use tracing::debug;

use super::catalog::{Catalog, Entry, Source};

/// Files built at once (each can take a second of CPU for a large library).
const CONCURRENT_BUILDS: usize = 2;
/// Recent results kept, by count and by bytes.
const CACHED_FILES: usize = 16;
const CACHED_BYTES: usize = 64 << 20;
/// zstd's level: fast, and a symbfile compresses about tenfold even so.
const ZSTD_LEVEL: i32 = 3;
/// Files larger than this are not read (no real executable comes close).
const MAX_FILE_BYTES: u64 = 4 << 30;

/// A file's compressed symbfile.
#[derive(Debug)]
pub struct Built {
    /// zstd-compressed symbfile.
    pub bytes: Bytes,
    /// Ranges in it.
    pub ranges: u64,
}

/// Why a file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No profiled process mapped a file with this ID.
    #[error("unknown file ID")]
    Unknown,
    /// The file cannot be read any more, or what is at its path now is another file.
    #[error("{path} is gone: {why}")]
    Gone {
        /// The file.
        path: String,
        /// What happened.
        why: String,
    },
    /// The file is not an ELF file oxeye can read.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// What the parser said.
        #[source]
        source: symbfile::SymbfileError,
    },
}

/// Builds and caches symbfiles of catalogued files.
#[derive(Debug)]
pub struct RangesBuilder {
    catalog: Arc<Catalog>,
    slots: Semaphore,
    cache: Mutex<VecDeque<(FileId, Arc<Built>)>>,
}

impl RangesBuilder {
    /// A builder for the files of `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        RangesBuilder { catalog, slots: Semaphore::new(CONCURRENT_BUILDS), cache: Mutex::new(VecDeque::new()) }
    }

    /// The file's compressed symbfile, from the cache or built now.
    pub async fn get(&self, id: FileId) -> Result<Arc<Built>, BuildError> {
        if let Some(built) = self.cached(id) {
            return Ok(built);
        }
        let entry = self.catalog.get(id).ok_or(BuildError::Unknown)?;
        let _slot = self.slots.acquire().await.map_err(|_| BuildError::Unknown)?;
        if let Some(built) = self.cached(id) {
            return Ok(built);
        }
        let path = entry.path.clone();
        let started = Instant::now();
        let built = tokio::task::spawn_blocking(move || build(id, &entry))
            .await
            .map_err(|e| BuildError::Gone { path: path.clone(), why: format!("building its ranges failed: {e}") })??;
        debug!(%path, ranges = built.ranges, bytes = built.bytes.len(), ms = started.elapsed().as_millis() as u64, "built symbol ranges");
        let built = Arc::new(built);
        self.remember(id, built.clone());
        Ok(built)
    }

    fn cached(&self, id: FileId) -> Option<Arc<Built>> {
        let cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.iter().find(|(cached, _)| *cached == id).map(|(_, built)| built.clone())
    }

    fn remember(&self, id: FileId, built: Arc<Built>) {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.push_back((id, built));
        while cache.len() > CACHED_FILES || (cache.len() > 1 && cache.iter().map(|(_, b)| b.bytes.len()).sum::<usize>() > CACHED_BYTES) {
            cache.pop_front();
        }
    }
}

/// Reads the file (or its separate debug file, which has the DWARF and symbols a stripped
/// binary lacks, at the same addresses) and writes its compressed symbfile.
fn build(id: FileId, entry: &Entry) -> Result<Built, BuildError> {
    let path = entry.path.as_str();
    let gone = |why: String| BuildError::Gone { path: path.to_owned(), why };
    let encoder = zstd::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(|e| gone(e.to_string()))?;
    let debug_file = entry.debug_file.as_ref().and_then(|p| File::open(p).ok()).and_then(|f| map(&f).ok());
    let written = match (&entry.source, debug_file) {
        (_, Some(debug)) => symbfile::write(&debug, encoder),
        (Source::Vdso, None) => {
            let image = crate::vdso::image().ok_or_else(|| gone("oxeye has no vDSO of its own".into()))?;
            symbfile::write(image, encoder)
        }
        (Source::Open(file), None) => symbfile::write(&map(file).map_err(|e| gone(e.to_string()))?, encoder),
        (Source::Paths(paths), None) => {
            let file = paths.iter().find_map(|p| File::open(p).ok().filter(|f| same_file(f, id))).ok_or_else(|| gone("no path reaches it any more".into()))?;
            symbfile::write(&map(&file).map_err(|e| gone(e.to_string()))?, encoder)
        }
    };
    let (encoder, summary) = written.map_err(|source| BuildError::Invalid { path: path.to_owned(), source })?;
    let bytes = encoder.finish().map_err(|e| gone(e.to_string()))?;
    Ok(Built { bytes: Bytes::from(bytes), ranges: summary.ranges })
}

/// Whether `file` (read from its start) has ID `id`.
fn same_file(mut file: &File, id: FileId) -> bool {
    let matches = FileId::from_reader(&mut file).is_ok_and(|found| found == id);
    let _ = file.rewind();
    matches
}

fn map(file: &File) -> io::Result<memmap2::Mmap> {
    let size = file.metadata()?.len();
    if size > MAX_FILE_BYTES {
        return Err(io::Error::other(format!("{size} bytes is too large")));
    }
    // SAFETY: a read-only map of an executable file; the kernel refuses writes to files that
    // are being executed (ETXTBSY), and a file truncated meanwhile would fault, not corrupt.
    unsafe { memmap2::Mmap::map(file) }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decompress(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        zstd::Decoder::new(bytes).and_then(|mut d| d.read_to_end(&mut out)).expect("valid zstd");
        out
    }

    #[tokio::test]
    async fn builds_a_catalogued_file_and_refuses_others() {
        let catalog = Arc::new(Catalog::default());
        let exe = std::env::current_exe().unwrap();
        let id = FileId::from_path(&exe).unwrap();
        catalog.add_file(id, &exe.display().to_string(), File::open(&exe).unwrap(), &exe, &[], None);
        let builder = RangesBuilder::new(catalog.clone());
        let built = builder.get(id).await.unwrap();
        assert!(built.ranges > 100, "{} ranges", built.ranges);
        assert!(decompress(&built.bytes).starts_with(b"symbfile\x00\x01"));
        assert!(Arc::ptr_eq(&built, &builder.get(id).await.unwrap()), "the second ask is served from the cache");
        assert!(matches!(builder.get(FileId(7)).await, Err(BuildError::Unknown)));
    }

    #[tokio::test]
    async fn a_path_holding_another_file_is_not_served() {
        let catalog = Arc::new(Catalog::default());
        catalog.use_up_descriptors();
        let exe = std::env::current_exe().unwrap();
        catalog.add_file(FileId(42), "/was/here", File::open(&exe).unwrap(), &exe, &[], None);
        let error = RangesBuilder::new(catalog).get(FileId(42)).await.unwrap_err();
        assert!(matches!(error, BuildError::Gone { .. }), "{error}");
    }
}
