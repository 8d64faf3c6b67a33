//! Asks HotSpot JVMs for a perf map (`--java-perf-map`), the way `jcmd PID Compiler.perfmap`
//! does, through the HotSpot attach protocol:
//!
//! 1. If the JVM's attach socket (`/tmp/.java_pidN` in its root, N its pid in its namespace)
//!    is not there, create the trigger file `/tmp/.attach_pidN` owned by the JVM's user and
//!    send the JVM `SIGQUIT`: HotSpot sees the file and starts its Attach Listener thread,
//!    which creates the socket. The trigger is removed afterwards.
//! 2. Connect, send `1\0jcmd\0Compiler.perfmap\0\0\0`, read the result code (`0`).
//!
//! What this does to the JVM: one more thread (the Attach Listener, which stays), and for each
//! request a walk of the code cache under its lock, writing `/tmp/perf-N.map` (a full snapshot)
//! in the JVM's own `/tmp`, as its user. Requests for one JVM are only made while its samples
//! land in JIT code the map lacks, 1 s apart at first, doubling up to [`REQUEST_INTERVAL`].
//!
//! The signal goes only to a process that maps `libjvm.so`, through a pidfd opened before that
//! check (so a recycled pid never gets it), and never to a JVM started with
//! `-XX:+DisableAttachMechanism` or `-Xrs`/`-XX:+ReduceSignalUsage` (where `SIGQUIT` would
//! print a thread dump, or end the JVM). A JVM that does not answer is not asked again.
//! Everything runs on one thread of its own: a slow JVM never stalls sampling.

use std::{
    collections::HashSet,
    ffi::CString,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{fs::FileTypeExt, fs::MetadataExt, net::UnixStream},
    },
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tracing::{debug, warn};

use super::open::status_ids;

/// Least time between the first two perf maps asked of one JVM; it doubles after each.
pub const FIRST_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Most time between two perf maps asked of one JVM whose samples miss its map.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(30);
/// How long the JVM has to start its Attach Listener after `SIGQUIT`.
const LISTENER_WAIT: Duration = Duration::from_secs(5);
/// How long one command may take (the code cache walk of a large JVM takes well under this).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting for the attach thread; more are dropped (and asked again later).
const QUEUE: usize = 64;
/// Most reply bytes read.
const MAX_REPLY: u64 = 64 << 10;

/// What the attach thread did, for the summary.
#[derive(Debug, Default)]
pub struct AttachCounters {
    /// Perf maps the JVMs wrote when asked.
    pub written: AtomicU64,
    /// JVMs that could not be asked (not HotSpot, attach disabled, no answer, an error).
    pub failed: AtomicU64,
}

/// The sending side: cheap, never blocks.
#[derive(Debug)]
pub struct HotspotAttach {
    requests: SyncSender<u32>,
    pub counters: Arc<AttachCounters>,
}

impl HotspotAttach {
    /// Starts the attach thread.
    pub fn start() -> Result<Self> {
        let (requests, receiver) = sync_channel(QUEUE);
        let counters = Arc::new(AttachCounters::default());
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("oxeye-jvm-attach".into())
            .spawn(move || serve(receiver, &thread_counters))
            .context("cannot start the JVM attach thread")?;
        Ok(HotspotAttach { requests, counters })
    }

    /// Perf maps written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Asks for a perf map of `pid`, unless the queue is full.
    pub fn request(&self, pid: u32) {
        match self.requests.try_send(pid) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => debug!("jit: the JVM attach thread has stopped"),
        }
    }
}

fn serve(receiver: Receiver<u32>, counters: &AttachCounters) {
    // JVMs that failed once: asking again would only signal them again.
    let mut given_up: HashSet<u32> = HashSet::new();
    while let Ok(pid) = receiver.recv() {
        if given_up.contains(&pid) {
            continue;
        }
        match request_perf_map(pid) {
            Ok(()) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
                debug!(pid, "jit: the JVM wrote its perf map");
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if given_up.len() < 4096 {
                    given_up.insert(pid);
                }
                warn!("jit: cannot ask JVM PID {pid} for a perf map (--java-perf-map): {error:#}");
            }
        }
    }
}

/// Asks `pid` for a perf map: attaches if needed, then runs `Compiler.perfmap`.
fn request_perf_map(pid: u32) -> Result<()> {
    let pidfd = Pidfd::open(pid)?;
    check_hotspot(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("the process is gone")?;
    let (namespace_pid, uid, gid) = status_ids(&status).context("unreadable /proc/PID/status")?;
    let socket = format!("/proc/{pid}/root/tmp/.java_pid{namespace_pid}");
    if !is_jvm_socket(&socket, uid) {
        start_listener(pid, &pidfd, namespace_pid, uid, gid, &socket)?;
    }
    let mut stream = UnixStream::connect(&socket).with_context(|| format!("cannot connect to /tmp/.java_pid{namespace_pid}"))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    stream.write_all(b"1\0jcmd\0Compiler.perfmap\0\0\0").context("cannot send the command")?;
    let mut reply = String::new();
    stream.take(MAX_REPLY).read_to_string(&mut reply).context("no reply")?;
    match reply.lines().next().map(str::trim) {
        Some("0") if !reply.contains("Unknown diagnostic command") => Ok(()),
        _ => bail!("the JVM answered {:?}", reply.lines().take(2).collect::<Vec<_>>().join(" ")),
    }
}

/// Refuses a process that is not a HotSpot JVM, or one whose attach mechanism or `SIGQUIT`
/// handler is off.
fn check_hotspot(pid: u32) -> Result<()> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).context("the process is gone")?;
    if !maps.lines().any(|line| line.ends_with("/libjvm.so")) {
        bail!("not a HotSpot JVM (no libjvm.so mapped)");
    }
    let mut options = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // JAVA_TOOL_OPTIONS and JDK_JAVA_OPTIONS carry options too.
    options.extend(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
    let options = String::from_utf8_lossy(&options);
    for refused in ["-XX:+DisableAttachMechanism", "-Xrs", "-XX:+ReduceSignalUsage"] {
        if options.split(['\0', ' ']).any(|option| option == refused) {
            bail!("it runs with {refused}");
        }
    }
    Ok(())
}

/// Whether `path` is a socket owned by the JVM's user (not one planted in `/tmp` by another).
fn is_jvm_socket(path: &str, uid: u32) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid)
}

/// Creates the trigger file, signals the JVM, and waits for its socket.
fn start_listener(pid: u32, pidfd: &Pidfd, namespace_pid: u32, uid: u32, gid: u32, socket: &str) -> Result<()> {
    let tmp = open_tmp(pid)?;
    let name = CString::new(format!(".attach_pid{namespace_pid}")).context("trigger name")?;
    // SAFETY: a valid directory descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe { libc::openat(tmp.as_raw_fd(), name.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        bail!("cannot create /tmp/.attach_pid{namespace_pid}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned here.
    let trigger = unsafe { OwnedFd::from_raw_fd(fd) };
    // HotSpot only accepts a trigger owned by its own user.
    // SAFETY: a valid descriptor.
    let owned = unsafe { libc::fchown(trigger.as_raw_fd(), uid, gid) } == 0;
    drop(trigger);
    let result = if owned { pidfd.signal(libc::SIGQUIT).and_then(|()| wait_for_socket(socket, uid)) } else { Err(std::io::Error::last_os_error()).context("cannot give the trigger to the JVM's user") };
    // SAFETY: as above; removing what was created here.
    unsafe { libc::unlinkat(tmp.as_raw_fd(), name.as_ptr(), 0) };
    result
}

fn wait_for_socket(socket: &str, uid: u32) -> Result<()> {
    let deadline = Instant::now() + LISTENER_WAIT;
    while Instant::now() < deadline {
        if is_jvm_socket(socket, uid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("its Attach Listener did not start within {} s", LISTENER_WAIT.as_secs())
}

/// `/tmp` in `pid`'s root, opened without following symbolic links.
fn open_tmp(pid: u32) -> Result<OwnedFd> {
    let root = CString::new(format!("/proc/{pid}/root")).context("root path")?;
    // SAFETY: valid path; checked.
    let root_fd = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if root_fd < 0 {
        bail!("the process is gone");
    }
    // SAFETY: just opened, owned here.
    let root_fd = unsafe { OwnedFd::from_raw_fd(root_fd) };
    let tmp = c"tmp";
    // SAFETY: valid descriptor and path; checked.
    let fd = unsafe { libc::openat(root_fd.as_raw_fd(), tmp.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        bail!("cannot open the JVM's /tmp: {}", std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd: signals through it reach the process it was opened for, or none.
struct Pidfd(OwnedFd);

impl Pidfd {
    fn open(pid: u32) -> Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            bail!("cannot open a pidfd: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, owned here.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: a valid pidfd, no siginfo, no flags.
        let sent = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0) };
        if sent < 0 {
            bail!("cannot signal it: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_without_libjvm_is_never_signalled() {
        let error = request_perf_map(std::process::id()).expect_err("oxeye's tests are not a JVM");
        assert!(format!("{error:#}").contains("not a HotSpot JVM"), "{error:#}");
    }
}
