//! Parsing `/proc/PID/maps`.

/// One line of `/proc/PID/maps`, for executable mappings only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset into the file of `start`.
    pub file_offset: u64,
    /// Device of the file (`major << 32 | minor`); 0 for anonymous memory.
    pub dev: u64,
    /// Inode of the file; 0 for anonymous memory.
    pub inode: u64,
    /// The path as the process sees it, or a pseudo-path like `[vdso]`; empty for anonymous.
    pub path: String,
}

impl MapsEntry {
    /// Whether the mapping is backed by a regular file (not anonymous memory or `[vdso]`).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Identity of a file on the host, from `stat`: an unchanged file has the same identity in
/// every process, for the symbol registry and for the unwind tables alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub inode: u64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i64,
    /// Size in bytes.
    pub size: u64,
}

impl FileIdentity {
    /// The identity of the file `metadata` describes.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileIdentity { dev: metadata.dev(), inode: metadata.ino(), mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(), size: metadata.len() }
    }

    /// The (device, inode) pair the kernel's BPF side reports for this file: `s_dev` encodes
    /// the device as major << 20 | minor, `stat` as glibc's `makedev`.
    pub fn kernel_file(&self) -> agent_common::files::KernelFile {
        let (major, minor) = (libc::major(self.dev) as u64, libc::minor(self.dev) as u64);
        agent_common::files::KernelFile { dev: major << 20 | minor, inode: self.inode }
    }

    /// The identity of the file behind mapping `entry` of `pid` (see [`mapped_file_metadata`]);
    /// `None` if it cannot be reached.
    pub fn of_mapping(pid: u32, entry: &MapsEntry) -> Option<Self> {
        mapped_file_metadata(pid, entry.start, entry.end, entry.dev, entry.inode, &entry.path).map(|metadata| FileIdentity::of(&metadata))
    }
}

/// `stat` of the file behind the mapping at `start..end` of `pid`, which `maps` shows as device
/// `maps_dev` (major << 32 | minor), `inode` and `path`: through `map_files`, which reaches
/// deleted files and other mount namespaces but needs CAP_CHECKPOINT_RESTORE (or
/// CAP_SYS_ADMIN); else through the path inside the process's root, if the file there is still
/// the one mapped.
pub fn mapped_file_metadata(pid: u32, start: u64, end: u64, maps_dev: u64, inode: u64, path: &str) -> Option<std::fs::Metadata> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(metadata) = std::fs::metadata(map_files_path(pid, start, end)) {
        return Some(metadata);
    }
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let metadata = std::fs::metadata(format!("/proc/{pid}/root{path}")).ok()?;
    let (major, minor) = (u64::from(libc::major(metadata.dev())), u64::from(libc::minor(metadata.dev())));
    (metadata.ino() == inode && major == maps_dev >> 32 && minor == maps_dev & 0xffff_ffff).then_some(metadata)
}

/// `/proc/PID/map_files/START-END`: the file behind one mapping.
pub fn map_files_path(pid: u32, start: u64, end: u64) -> String {
    format!("/proc/{pid}/map_files/{start:x}-{end:x}")
}

/// Opens the file behind mapping `entry` of `pid`, through `map_files` (works across mount
/// namespaces and for deleted files), falling back to the path inside the process's root.
pub fn open_mapped_file(pid: u32, entry: &MapsEntry) -> std::io::Result<std::fs::File> {
    let path = entry.path.strip_suffix(" (deleted)").unwrap_or(&entry.path);
    std::fs::File::open(map_files_path(pid, entry.start, entry.end)).or_else(|_| std::fs::File::open(format!("/proc/{pid}/root{path}")))
}

/// Reads `pid`'s executable mappings: the one place oxeye reads `/proc/PID/maps`. Paths need
/// not be UTF-8; one odd file name must not hide the whole process.
pub fn read_executable(pid: u32) -> std::io::Result<Vec<MapsEntry>> {
    let bytes = std::fs::read(format!("/proc/{pid}/maps"))?;
    Ok(parse_executable(&String::from_utf8_lossy(&bytes)))
}

/// Parses the executable mappings out of the text of `/proc/PID/maps`. Malformed lines are
/// skipped.
pub fn parse_executable(text: &str) -> Vec<MapsEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapsEntry> {
    // 7f2c…-7f2c… r-xp 00028000 fe:01 1835027    /usr/lib/x86_64-linux-gnu/libc.so.6
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let file_offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start().to_owned();
    let (start, end) = range.split_once('-')?;
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        file_offset,
        dev,
        inode,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 393240                     /usr/bin/spin
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 393240                     /usr/bin/spin
7f2c1a228000-7f2c1a3bd000 r-xp 00028000 fe:01 1835027                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f2c1a400000-7f2c1a401000 rwxp 00000000 00:00 0 
7ffd7b3f2000-7ffd7b3f4000 r-xp 00000000 00:00 0                          [vdso]
7f2c1a500000-7f2c1a501000 r-xp 00000000 fe:01 777                        /tmp/my lib (deleted)
garbage line
";

    #[test]
    fn keeps_executable_mappings() {
        let entries = parse_executable(MAPS);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].path, "/usr/bin/spin");
        assert_eq!(entries[0].file_offset, 0x1000);
        assert_eq!(entries[1].dev, (0xfe << 32) | 1);
        assert_eq!(entries[1].inode, 1835027);
        assert!(entries[1].is_file());
        assert!(!entries[2].is_file(), "anonymous memory");
        assert_eq!(entries[3].path, "[vdso]");
        assert_eq!(entries[4].path, "/tmp/my lib (deleted)");
    }
}
