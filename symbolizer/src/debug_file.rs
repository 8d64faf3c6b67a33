//! Separate debug files: where distributions keep the symbols they strip from binaries.
//!
//! - By build ID: `DIR/.build-id/xx/rest.debug` (Debian's `-dbgsym` packages, `libc6-dbg`,
//!   Fedora's `debuginfo` packages), checked to carry the same build ID.
//! - By `.gnu_debuglink`: the file name the binary names, in the binary's own directory, its
//!   `.debug/` subdirectory, and `DIR/` + the binary's directory, as GDB looks; checked by
//!   build ID when both files have one, else by the link's CRC32 of the whole file.
//! - MiniDebugInfo (`.gnu_debugdata`, Fedora and RHEL): an xz-compressed ELF inside the binary
//!   itself with the function symbols `.dynsym` lacks, read by [`mini_debug_info`].
//!
//! `DIR` is `/usr/lib/debug` unless the caller says otherwise (oxeye's
//! `--debug-file-directory`).

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection};

use crate::build_id::BuildId;

/// Where distributions install debug files.
pub const DEFAULT_DIRECTORY: &str = "/usr/lib/debug";
/// A `.gnu_debugdata` section larger than this is not decompressed.
const MAX_MINI_DEBUG_INFO_COMPRESSED: u64 = 16 << 20;
/// Nor is its content allowed to grow past this (a bound against xz bombs).
const MAX_MINI_DEBUG_INFO_BYTES: usize = 128 << 20;
/// Debug files larger than this are not read.
const MAX_DEBUG_FILE_BYTES: u64 = 4 << 30;

/// A binary's `.gnu_debuglink`: the debug file's name and the CRC32 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugLink {
    /// A bare file name (a link with a directory in it is ignored).
    pub name: String,
    /// CRC32 (the gzip polynomial) of the whole debug file.
    pub crc: u32,
}

impl DebugLink {
    /// The link of a parsed ELF file, if it has a usable one.
    pub fn of(file: &object::File<'_>) -> Option<Self> {
        let (name, crc) = file.gnu_debuglink().ok().flatten()?;
        let name = std::str::from_utf8(name).ok()?;
        // A name with a path in it could point anywhere; the format only ever holds a name.
        (!name.is_empty() && !name.contains('/') && name != "." && name != "..").then(|| DebugLink { name: name.to_owned(), crc })
    }
}

/// A debug file found for a binary, open.
#[derive(Debug)]
pub struct DebugFile {
    /// Where it was found.
    pub path: PathBuf,
    /// The open file.
    pub file: File,
}

/// The directories debug files are looked for in, in order.
#[derive(Debug, Clone)]
pub struct DebugDirectories {
    directories: Vec<PathBuf>,
}

impl Default for DebugDirectories {
    fn default() -> Self {
        DebugDirectories { directories: vec![PathBuf::from(DEFAULT_DIRECTORY)] }
    }
}

impl DebugDirectories {
    /// These directories, in order.
    pub fn new(directories: Vec<PathBuf>) -> Self {
        DebugDirectories { directories }
    }

    /// The directories.
    pub fn directories(&self) -> &[PathBuf] {
        &self.directories
    }

    /// The debug file of a binary with build ID `build_id` and debug link `link`, which the
    /// process saw at `seen_path` and which opens at `root` + `seen_path` (`root` is
    /// `/proc/PID/root` for a process in a container, or empty).
    pub fn find(&self, build_id: Option<&BuildId>, link: Option<&DebugLink>, seen_path: &str, root: &Path) -> Option<DebugFile> {
        if let Some(build_id) = build_id {
            let found = self.directories.iter().find_map(|dir| open_checked(&build_id_path(dir, build_id)?, |f| matches_build_id(f, build_id)));
            if found.is_some() {
                return found;
            }
        }
        let link = link?;
        let seen_dir = Path::new(seen_path).parent()?;
        let relative_dir = seen_dir.strip_prefix("/").ok()?;
        let in_root = root.join(relative_dir);
        let mut candidates = vec![in_root.join(&link.name), in_root.join(".debug").join(&link.name)];
        candidates.extend(self.directories.iter().map(|dir| dir.join(relative_dir).join(&link.name)));
        candidates.into_iter().find_map(|path| {
            open_checked(&path, |file| match (build_id, read_build_id(file)) {
                (Some(wanted), Ok(Some(found))) => &found == wanted,
                _ => crc32_of(file).is_ok_and(|crc| crc == link.crc),
            })
        })
    }
}

/// `DIR/.build-id/xx/rest.debug`, for a build ID long enough to split.
fn build_id_path(dir: &Path, build_id: &BuildId) -> Option<PathBuf> {
    let hex = build_id.to_hex();
    (hex.len() > 2).then(|| dir.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..])))
}

/// Opens `path` if it is a regular file (after symlinks: the build-id tree is made of them)
/// for which `accept` holds.
fn open_checked(path: &Path, accept: impl FnOnce(&File) -> bool) -> Option<DebugFile> {
    let file = File::open(path).ok()?;
    let metadata = file.metadata().ok()?;
    (metadata.is_file() && metadata.len() <= MAX_DEBUG_FILE_BYTES && accept(&file)).then(|| DebugFile { path: path.to_owned(), file })
}

fn matches_build_id(file: &File, wanted: &BuildId) -> bool {
    read_build_id(file).is_ok_and(|found| found.as_ref() == Some(wanted))
}

/// The build ID of an open ELF file.
pub fn read_build_id(file: &File) -> io::Result<Option<BuildId>> {
    let data = map(file)?;
    let parsed = object::File::parse(&*data).map_err(io::Error::other)?;
    Ok(parsed.build_id().ok().flatten().and_then(BuildId::new))
}

/// CRC32 of the whole file, as `.gnu_debuglink` records it.
fn crc32_of(file: &File) -> io::Result<u32> {
    let data = map(file)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&data);
    Ok(hasher.finalize())
}

pub(crate) fn map(file: &File) -> io::Result<memmap2::Mmap> {
    // SAFETY: a read-only map, dropped before the caller returns; a file truncated meanwhile
    // would fault the reader, not corrupt memory it keeps.
    unsafe { memmap2::Mmap::map(file) }
}

/// The ELF image inside a binary's `.gnu_debugdata` section (MiniDebugInfo), decompressed;
/// `None` when there is none or it does not decompress within bounds.
pub fn mini_debug_info(file: &object::File<'_>) -> Option<Vec<u8>> {
    let section = file.section_by_name(".gnu_debugdata")?;
    if section.size() > MAX_MINI_DEBUG_INFO_COMPRESSED {
        return None;
    }
    let compressed = section.data().ok()?;
    let mut out = BoundedWriter { bytes: Vec::new(), limit: MAX_MINI_DEBUG_INFO_BYTES };
    lzma_rs::xz_decompress(&mut io::BufReader::new(compressed), &mut out).ok()?;
    out.bytes.starts_with(b"\x7fELF").then_some(out.bytes)
}

/// A `Vec` that refuses to grow past `limit`.
struct BoundedWriter {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(io::Error::other("decompressed data is too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_paths_split_after_two_digits() {
        let id = BuildId::new(&[0x93, 0xac, 0x61]).unwrap();
        assert_eq!(build_id_path(Path::new("/usr/lib/debug"), &id).unwrap(), Path::new("/usr/lib/debug/.build-id/93/ac61.debug"));
        assert!(build_id_path(Path::new("/d"), &BuildId::new(&[1]).unwrap()).is_none());
    }

    #[test]
    fn bounded_writer_stops_at_its_limit() {
        let mut out = BoundedWriter { bytes: Vec::new(), limit: 4 };
        assert!(out.write_all(b"abcd").is_ok());
        assert!(out.write_all(b"e").is_err());
    }

    #[test]
    fn crc_is_the_gzip_polynomial() {
        let dir = std::env::temp_dir().join(format!("oxeye-crc-{}", std::process::id()));
        std::fs::write(&dir, b"123456789").unwrap();
        assert_eq!(crc32_of(&File::open(&dir).unwrap()).unwrap(), 0xcbf4_3926);
        std::fs::remove_file(&dir).unwrap();
    }
}
