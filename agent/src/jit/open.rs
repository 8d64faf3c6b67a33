//! Opening a process's perf map safely. `/tmp` is world-writable, so the file at
//! `/tmp/perf-PID.map` may be anyone's: a symbolic link to a file oxeye should not read, a FIFO
//! that blocks, a file another user planted, or a file too big to hold. Each of those is refused.

use std::{
    ffi::CString,
    fmt,
    fs::File,
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
};

/// Largest perf map oxeye reads, in bytes (Node's grows by about 50 bytes per compiled function).
pub const MAX_PERF_MAP_BYTES: u64 = 64 << 20;

/// Why a process's perf map is not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// There is none (the usual case; never logged).
    Absent,
    /// The path, or a directory on it, is a symbolic link.
    SymbolicLink,
    /// Not a regular file (a FIFO, a device, a directory).
    NotRegular,
    /// Owned by someone other than the process's owner.
    WrongOwner { file_uid: u32, process_uid: u32 },
    /// Bigger than [`MAX_PERF_MAP_BYTES`].
    TooBig { bytes: u64 },
    /// Last written before the process started: a previous process's with the same pid
    /// (runtimes do not remove their maps at exit). Tried again later, never logged.
    Stale,
    /// The process is gone or could not be inspected.
    ProcessGone,
    /// Another error opening it.
    Io(io::ErrorKind),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Absent => write!(f, "there is none"),
            Refusal::SymbolicLink => write!(f, "it is a symbolic link (or reached through one)"),
            Refusal::NotRegular => write!(f, "it is not a regular file"),
            Refusal::WrongOwner { file_uid, process_uid } => write!(f, "it is owned by uid {file_uid}, not by the process's uid {process_uid}"),
            Refusal::TooBig { bytes } => write!(f, "it is {bytes} bytes, over the {MAX_PERF_MAP_BYTES}-byte limit"),
            Refusal::Stale => write!(f, "it was last written before the process started"),
            Refusal::ProcessGone => write!(f, "the process is gone"),
            Refusal::Io(kind) => write!(f, "{kind}"),
        }
    }
}

/// An open perf map and who it belongs to.
#[derive(Debug)]
pub struct OpenedMap {
    pub file: File,
    /// The path inside the process's mount namespace (for logs).
    pub path: String,
    /// Its size when opened.
    pub bytes: u64,
}

/// Opens `pid`'s perf map: `/tmp/perf-N.map` in the process's own root, where N is its pid in
/// its own pid namespace, without following any symbolic link, owned by the process's owner,
/// regular and within [`MAX_PERF_MAP_BYTES`].
pub fn open_perf_map(pid: u32) -> Result<OpenedMap, Refusal> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| Refusal::ProcessGone)?;
    let (namespace_pid, process_uid, _) = status_ids(&status).ok_or(Refusal::ProcessGone)?;
    let path = format!("/tmp/perf-{namespace_pid}.map");
    let file = open_in_root(pid, &path[1..])?;
    let metadata = file.metadata().map_err(|error| Refusal::Io(error.kind()))?;
    if !metadata.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    if metadata.uid() != process_uid {
        return Err(Refusal::WrongOwner { file_uid: metadata.uid(), process_uid });
    }
    if metadata.len() > MAX_PERF_MAP_BYTES {
        return Err(Refusal::TooBig { bytes: metadata.len() });
    }
    // With a second of slack for clock granularity.
    if process_start_unix(pid).is_some_and(|start| metadata.mtime() + 1 < start) {
        return Err(Refusal::Stale);
    }
    Ok(OpenedMap { file, path, bytes: metadata.len() })
}

/// When `pid` started, in seconds since the epoch: its start in clock ticks after boot
/// (`/proc/PID/stat`), plus the boot time (`/proc/stat`).
fn process_start_unix(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let ticks: i64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz)
}

/// From `/proc/PID/status`: the last pid of `NSpid` (the process's pid in its own namespace),
/// and the effective uid and gid.
pub(super) fn status_ids(status: &str) -> Option<(u32, u32, u32)> {
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)).map(str::split_whitespace);
    let namespace_pid = field("NSpid:")?.next_back()?.parse().ok()?;
    let effective_uid = field("Uid:")?.nth(1)?.parse().ok()?;
    let effective_gid = field("Gid:")?.nth(1)?.parse().ok()?;
    Some((namespace_pid, effective_uid, effective_gid))
}

/// Opens `relative` under `/proc/PID/root` with `openat2`, resolving inside that root and
/// refusing symbolic links on the whole path; `O_NONBLOCK` so a FIFO cannot block. Kernels
/// before 5.6 lack `openat2`: there only the last component is checked (`O_NOFOLLOW`).
fn open_in_root(pid: u32, relative: &str) -> Result<File, Refusal> {
    let root = c_path(&format!("/proc/{pid}/root"))?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let root_fd = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if root_fd < 0 {
        return Err(Refusal::ProcessGone);
    }
    // SAFETY: `root_fd` was just opened and is owned here alone.
    let root_fd = unsafe { OwnedFd::from_raw_fd(root_fd) };
    let relative = c_path(relative)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: `open_how` is plain integers; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    use std::os::fd::AsRawFd;
    // SAFETY: valid descriptor, path and `open_how` of the size passed; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, root_fd.as_raw_fd(), relative.as_ptr(), &how as *const libc::open_how, size_of::<libc::open_how>()) } as i32;
    let fd = if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: as above.
        unsafe { libc::openat(root_fd.as_raw_fd(), relative.as_ptr(), flags) }
    } else {
        fd
    };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Refusal::Absent,
            Some(libc::ELOOP) | Some(libc::EXDEV) => Refusal::SymbolicLink,
            _ => Refusal::Io(error.kind()),
        });
    }
    // SAFETY: `fd` was just opened and is owned by the `File` alone.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn c_path(path: &str) -> Result<CString, Refusal> {
    CString::new(path).map_err(|_| Refusal::Io(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_namespace_pid_and_effective_uid() {
        let status = "Name:\tnode\nUid:\t1000\t1001\t1000\t1000\nGid:\t50\t51\t50\t50\nNSpid:\t4242\t17\n";
        assert_eq!(status_ids(status), Some((17, 1001, 51)));
        assert_eq!(status_ids("Name:\tx\n"), None);
    }

    #[test]
    fn own_perf_map_is_read_and_a_symlink_is_refused() {
        let pid = std::process::id();
        let path = format!("/tmp/perf-{pid}.map");
        let _ = std::fs::remove_file(&path);
        assert_eq!(open_perf_map(pid).unwrap_err(), Refusal::Absent);
        std::fs::write(&path, "1000 10 f\n").unwrap();
        assert_eq!(open_perf_map(pid).unwrap().bytes, 10);
        // A map left by a previous process with this pid.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
        assert_eq!(open_perf_map(pid).unwrap_err(), Refusal::Stale);
        std::fs::remove_file(&path).unwrap();
        let target = format!("/tmp/perf-{pid}.target");
        std::fs::write(&target, "1000 10 f\n").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert_eq!(open_perf_map(pid).unwrap_err(), Refusal::SymbolicLink);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&target).unwrap();
    }
}
