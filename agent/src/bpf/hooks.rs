//! Choosing the best hook this kernel has where there is a choice, and the one log line that
//! says which hooks oxeye uses.
//!
//! HTTP payloads come from the socket tracepoints where the kernel has them ([`SOCKET_HOOKS`],
//! Linux 6.3), with a send's start stamped by the best [`SendStartHook`] it accepts; else from
//! syscall tracepoints: `payloads` and `payload_fallbacks` say which, and why. TCP statistics at
//! close have three alternatives, tried best first:
//!
//! 1. fentry on `tcp_set_state`: cheapest, but needs BPF trampolines (x86_64 since 5.5; arm64
//!    kernels without `DYNAMIC_FTRACE_WITH_DIRECT_CALLS` load it and refuse to attach it, and
//!    some kernels refuse to load tracing programs at all).
//! 2. kprobe on `tcp_set_state`: needs `CONFIG_KPROBES`.
//! 3. tracepoint `sock:inet_sock_set_state` (Linux 4.16), read at offsets checked against its
//!    format file.
//!
//! An attempt that fails unloads what it loaded and leaves a short reason, logged with the
//! choice (`tcp_state_fallbacks`).

use std::{error::Error, fmt, io};

use anyhow::{bail, Result};
use aya::{
    programs::{BtfTracePoint, FEntry, KProbe, Program, ProgramError, TracePoint},
    Ebpf,
};
use tracing::info;

use agent_common::{names::programs, tracepoints::inet_sock_set_state};

use super::{program_mut, tracefs};

/// Socket tracepoints that copy payloads at a receive's and a send's end (Linux 6.3):
/// (program, tracepoint category, tracepoint name). See `agent-ebpf/src/net/socket_hooks.rs`.
pub(super) const SOCKET_HOOKS: &[(&str, &str, &str)] = &[(programs::SOCK_RECV, "sock", "sock_recv_length"), (programs::SOCK_SEND, "sock", "sock_send_length")];

/// The kernel functions the fentry and kprobe programs hook.
const TCP_SET_STATE: &str = "tcp_set_state";
const TCP_SENDMSG: &str = "tcp_sendmsg";

/// Where a send on a socket is stamped when it reaches TCP (a request leaves when the call
/// starts), alongside the socket tracepoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStartHook {
    /// tp_btf `tcp:tcp_sendmsg_locked` (Linux 6.13).
    TracePoint,
    /// fentry on `tcp_sendmsg`: needs BPF trampolines.
    FEntry,
    /// kprobe on `tcp_sendmsg`: needs `CONFIG_KPROBES`.
    KProbe,
}

impl SendStartHook {
    /// Best first.
    pub(super) const ALL: [SendStartHook; 3] = [SendStartHook::TracePoint, SendStartHook::FEntry, SendStartHook::KProbe];

    pub(super) fn program(self) -> &'static str {
        match self {
            SendStartHook::TracePoint => programs::SOCK_SEND_START,
            SendStartHook::FEntry => programs::SOCK_SEND_START_FENTRY,
            SendStartHook::KProbe => programs::SOCK_SEND_START_KPROBE,
        }
    }

    /// How it attaches.
    fn attach_point(self) -> AttachPoint {
        match self {
            SendStartHook::TracePoint => AttachPoint::BtfTracePoint { category: "tcp", name: "tcp_sendmsg_locked" },
            SendStartHook::FEntry => AttachPoint::FEntry(TCP_SENDMSG),
            SendStartHook::KProbe => AttachPoint::KProbe(TCP_SENDMSG),
        }
    }
}

/// Where HTTP payloads are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadHooks {
    /// `sock:sock_recv_length` and `sock:sock_send_length` (BTF tracepoints), which run only for
    /// socket I/O, and a send-start hook.
    Sockets(SendStartHook),
    /// The read/write family's `syscalls:sys_{enter,exit}_*` tracepoints.
    Syscalls,
}

impl PayloadHooks {
    /// How the `hooks chosen` line names it.
    pub fn name(self) -> &'static str {
        match self {
            PayloadHooks::Sockets(SendStartHook::TracePoint) => "tp_btf:sock_recv_length,tcp_sendmsg_locked,sock_send_length",
            PayloadHooks::Sockets(SendStartHook::FEntry) => "tp_btf:sock_recv_length,sock_send_length+fentry:tcp_sendmsg",
            PayloadHooks::Sockets(SendStartHook::KProbe) => "tp_btf:sock_recv_length,sock_send_length+kprobe:tcp_sendmsg",
            PayloadHooks::Syscalls => "tracepoint:syscalls",
        }
    }
}

/// Which payload hooks oxeye may use (`--payload-hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PayloadHookChoice {
    /// The socket tracepoints where the kernel has them, else the syscall tracepoints.
    #[default]
    Auto,
    /// The syscall tracepoints, even where the socket tracepoints exist (to compare them).
    Syscalls,
}

/// Where TCP statistics at close are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpStateHook {
    /// `oxeye_tcp_fent` on the entry of `tcp_set_state`.
    FEntry,
    /// `oxeye_tcp_kprb` on the entry of `tcp_set_state`.
    KProbe,
    /// `oxeye_tcp_state` on `sock:inet_sock_set_state`.
    TracePoint,
}

impl TcpStateHook {
    /// Best first.
    pub(super) const ALL: [TcpStateHook; 3] = [TcpStateHook::FEntry, TcpStateHook::KProbe, TcpStateHook::TracePoint];

    pub(super) fn program(self) -> &'static str {
        match self {
            TcpStateHook::FEntry => programs::TCP_STATE_FENTRY,
            TcpStateHook::KProbe => programs::TCP_STATE_KPROBE,
            TcpStateHook::TracePoint => programs::TCP_STATE_TRACEPOINT,
        }
    }

    /// The kind of hook, as the fallback reasons name it.
    fn kind(self) -> &'static str {
        match self {
            TcpStateHook::FEntry => "fentry",
            TcpStateHook::KProbe => "kprobe",
            TcpStateHook::TracePoint => "tracepoint",
        }
    }
}

/// The kernel's BTF, parsed on first use and kept for the next attachment: parsing vmlinux's
/// takes real time at start-up, and a hook choice may load several programs that need it.
#[derive(Default)]
struct KernelBtf(Option<Result<aya::Btf, String>>);

impl KernelBtf {
    fn get(&mut self) -> Result<&aya::Btf, String> {
        self.0.get_or_insert_with(|| aya::Btf::from_sys_fs().map_err(|error| format!("no kernel BTF: {}", short(&error)))).as_ref().map_err(Clone::clone)
    }
}

/// How a program attaches, for the hooks that have alternatives.
#[derive(Debug, Clone, Copy)]
enum AttachPoint {
    /// A BTF tracepoint (`tp_btf`), which must exist in tracefs.
    BtfTracePoint { category: &'static str, name: &'static str },
    /// fentry on a kernel function.
    FEntry(&'static str),
    /// kprobe on a kernel function.
    KProbe(&'static str),
}

impl AttachPoint {
    /// The kind, as fallback reasons name it.
    fn kind(self) -> &'static str {
        match self {
            AttachPoint::BtfTracePoint { .. } => "tp_btf",
            AttachPoint::FEntry(_) => "fentry",
            AttachPoint::KProbe(_) => "kprobe",
        }
    }
}

impl fmt::Display for TcpStateHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpStateHook::FEntry => "fentry:tcp_set_state",
            TcpStateHook::KProbe => "kprobe:tcp_set_state",
            TcpStateHook::TracePoint => "tracepoint:sock/inet_sock_set_state",
        })
    }
}

/// An attachment of any kind; dropping it detaches it.
pub type Link = Box<dyn Send>;

/// The hooks oxeye runs on, for the `hooks chosen` line.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Where TCP statistics at close come from; `None` when network tracing is off.
    pub tcp_state: Option<TcpStateHook>,
    /// Where HTTP payloads are copied; `None` when network tracing is off.
    pub payloads: Option<PayloadHooks>,
    /// Why the socket tracepoints were not used for payloads.
    pub payload_fallbacks: Vec<String>,
    /// Why each better TCP-state hook was not used.
    pub tcp_state_fallbacks: Vec<String>,
}

impl Hooks {
    /// Logs the choice: one line, once, at start.
    pub fn log(&self) {
        let off = |on: bool, what: &'static str| if on { what } else { "off" };
        info!(
            cpu_samples = %"perf_event:cpu-clock",
            process_events = %"tracepoint:sched",
            tcp_state = %self.tcp_state.map_or_else(|| "off".to_owned(), |hook| hook.to_string()),
            connections = %off(self.payloads.is_some(), "tracepoint:syscalls"),
            payloads = %self.payloads.map_or("off", PayloadHooks::name),
            payload_fallbacks = %Quoted(&self.payload_fallbacks),
            tcp_state_fallbacks = %Quoted(&self.tcp_state_fallbacks),
            "hooks chosen"
        );
    }
}

/// Reasons joined with `; ` (or `none`), in double quotes so the field reads as one value.
struct Quoted<'a>(&'a [String]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = if self.0.is_empty() { "none".to_owned() } else { self.0.join("; ") };
        write!(f, "\"{}\"", joined.replace('"', "'"))
    }
}

/// Attaches the best TCP-state hook this kernel has, recording in `hooks` why each better one
/// was passed over. Fails (with every reason) when none works.
pub fn attach_tcp_state(ebpf: &mut Ebpf, hooks: &mut Hooks) -> Result<(TcpStateHook, Link)> {
    let mut btf = KernelBtf::default();
    for hook in TcpStateHook::ALL {
        match try_attach(ebpf, hook, &mut btf) {
            Ok(link) => return Ok((hook, link)),
            Err(reason) => hooks.tcp_state_fallbacks.push(format!("{}: {reason}", hook.kind())),
        }
    }
    bail!("no hook for TCP statistics at close: {}", hooks.tcp_state_fallbacks.join("; "))
}

/// Loads and attaches `hook`'s program; on failure, a short reason, with the program unloaded.
fn try_attach(ebpf: &mut Ebpf, hook: TcpStateHook, btf: &mut KernelBtf) -> Result<Link, String> {
    match hook {
        TcpStateHook::FEntry => attach_at(ebpf, hook.program(), AttachPoint::FEntry(TCP_SET_STATE), btf),
        TcpStateHook::KProbe => attach_at(ebpf, hook.program(), AttachPoint::KProbe(TCP_SET_STATE), btf),
        TcpStateHook::TracePoint => {
            let (category, name) = (inet_sock_set_state::CATEGORY, inet_sock_set_state::NAME);
            if !tracefs::tracepoint_exists(category, name) {
                return Err(format!("this kernel has no {category}:{name}"));
            }
            tracefs::check_state_format().map_err(|error| format!("{error:#}"))?;
            let program = program_mut(ebpf, hook.program()).map_err(|error| format!("{error:#}"))?;
            let tracepoint: &mut TracePoint = program.try_into().map_err(|error: ProgramError| short(&error))?;
            tracepoint.load().map_err(|error| format!("load failed: {}", short(&error)))?;
            attach_or_unload(tracepoint, |tracepoint| Ok(Box::new(tracepoint.attach(category, name).and_then(|id| tracepoint.take_link(id))?)), TracePoint::unload)
        }
    }
}

/// Loads `program` and attaches it at `point`; on failure, a short reason, with the program
/// unloaded.
fn attach_at(ebpf: &mut Ebpf, program: &str, point: AttachPoint, btf: &mut KernelBtf) -> Result<Link, String> {
    let program = program_mut(ebpf, program).map_err(|error| format!("{error:#}"))?;
    match point {
        AttachPoint::BtfTracePoint { category, name } => {
            if !tracefs::tracepoint_exists(category, name) {
                return Err(format!("this kernel has no {category}:{name}"));
            }
            let tracepoint: &mut BtfTracePoint = program.try_into().map_err(|error: ProgramError| short(&error))?;
            tracepoint.load(name, btf.get()?).map_err(|error| format!("load failed: {}", short(&error)))?;
            attach_or_unload(tracepoint, |tracepoint| Ok(Box::new(tracepoint.attach().and_then(|id| tracepoint.take_link(id))?)), BtfTracePoint::unload)
        }
        AttachPoint::FEntry(function) => {
            let fentry: &mut FEntry = program.try_into().map_err(|error: ProgramError| short(&error))?;
            fentry.load(function, btf.get()?).map_err(|error| format!("load failed: {}", short(&error)))?;
            attach_or_unload(fentry, |fentry| Ok(Box::new(fentry.attach().and_then(|id| fentry.take_link(id))?)), FEntry::unload)
        }
        AttachPoint::KProbe(function) => {
            let kprobe: &mut KProbe = program.try_into().map_err(|error: ProgramError| short(&error))?;
            kprobe.load().map_err(|error| format!("load failed: {}", short(&error)))?;
            attach_or_unload(kprobe, |kprobe| Ok(Box::new(kprobe.attach(function, 0).and_then(|id| kprobe.take_link(id))?)), KProbe::unload)
        }
    }
}

/// Unloads `program` whatever its kind (after its links are dropped); a program never loaded
/// is left alone.
fn unload(ebpf: &mut Ebpf, program: &str) {
    let _ = match program_mut(ebpf, program) {
        Ok(Program::BtfTracePoint(program)) => program.unload(),
        Ok(Program::FEntry(program)) => program.unload(),
        Ok(Program::KProbe(program)) => program.unload(),
        _ => Ok(()),
    };
}

/// Attaches a loaded program with `attach`; if that fails, unloads it and gives a short reason.
fn attach_or_unload<P>(program: &mut P, attach: impl FnOnce(&mut P) -> Result<Link, ProgramError>, unload: fn(&mut P) -> Result<(), ProgramError>) -> Result<Link, String> {
    attach(program).map_err(|error| {
        let _ = unload(program);
        format!("attach failed: {}", short(&error))
    })
}

/// Chooses where HTTP payloads are copied: the socket tracepoints and a send-start hook if
/// `choice` allows and the kernel has and accepts them (their links returned), else the
/// syscall tracepoints, which the caller attaches. Why each better hook was passed over goes
/// in `hooks`.
pub(super) fn choose_payload_hooks(ebpf: &mut Ebpf, hooks: &mut Hooks, choice: PayloadHookChoice) -> (PayloadHooks, Vec<Link>) {
    if choice == PayloadHookChoice::Syscalls {
        hooks.payload_fallbacks.push("socket tracepoints: not chosen (--payload-hooks syscalls)".to_owned());
        return (PayloadHooks::Syscalls, Vec::new());
    }
    match attach_socket_hooks(ebpf, &mut hooks.payload_fallbacks) {
        Ok((send_start, links)) => (PayloadHooks::Sockets(send_start), links),
        Err(reason) => {
            hooks.payload_fallbacks.push(format!("socket tracepoints: {reason}"));
            (PayloadHooks::Syscalls, Vec::new())
        }
    }
}

/// Loads and attaches the socket-tracepoint programs and the best send-start hook, all or
/// none (`passed_over` gets why each better send-start hook was not used); on failure, a
/// short reason, with whatever was loaded unloaded.
fn attach_socket_hooks(ebpf: &mut Ebpf, passed_over: &mut Vec<String>) -> Result<(SendStartHook, Vec<Link>), String> {
    if let Some((_, category, name)) = SOCKET_HOOKS.iter().find(|(_, category, name)| !tracefs::tracepoint_exists(category, name)) {
        return Err(format!("this kernel has no {category}:{name}"));
    }
    let mut btf = KernelBtf::default();
    let mut reasons = Vec::new();
    let mut start = None;
    for hook in SendStartHook::ALL {
        match attach_at(ebpf, hook.program(), hook.attach_point(), &mut btf) {
            Ok(link) => {
                start = Some((hook, link));
                break;
            }
            Err(reason) => reasons.push(format!("send start {}: {reason}", hook.attach_point().kind())),
        }
    }
    let Some((send_start, link)) = start else { return Err(reasons.join("; ")) };
    let mut links = vec![link];
    for &(program, category, name) in SOCKET_HOOKS {
        match attach_at(ebpf, program, AttachPoint::BtfTracePoint { category, name }, &mut btf) {
            Ok(link) => links.push(link),
            Err(reason) => {
                // Detach before unloading what loaded before the failure.
                drop(links);
                for program in SOCKET_HOOKS.iter().map(|&(program, _, _)| program).chain([send_start.program()]) {
                    unload(ebpf, program);
                }
                return Err(format!("{program} {reason}"));
            }
        }
    }
    passed_over.extend(reasons);
    Ok((send_start, links))
}

/// An error and its causes on one short line: the verifier's log is cut to its last line, and
/// an errno is named (`Unknown error 524 (524 ENOTSUPP)`).
pub(super) fn short(error: &(dyn Error + 'static)) -> String {
    if let Some(ProgramError::LoadError { io_error, verifier_log }) = error.downcast_ref::<ProgramError>() {
        let log = verifier_log.to_string();
        let last = log.lines().rev().map(str::trim).find(|line| !line.is_empty());
        return match last {
            Some(line) => format!("BPF_PROG_LOAD: {} (verifier: {line})", io_text(io_error)),
            None => format!("BPF_PROG_LOAD: {}", io_text(io_error)),
        };
    }
    let mut text = match error.downcast_ref::<io::Error>() {
        Some(io_error) => io_text(io_error),
        None => error.to_string(),
    };
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = match cause.downcast_ref::<io::Error>() {
            Some(io_error) => io_text(io_error),
            None => cause.to_string(),
        };
        // Some errors repeat their cause in their own message.
        if !text.contains(&cause.to_string()) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// `Operation not permitted (1 EPERM)`: the errno's name, which the kernel's reasons are
/// documented by (and which libc has no text for in the case of 524).
fn io_text(error: &io::Error) -> String {
    let Some(code) = error.raw_os_error() else { return error.to_string() };
    let text = error.to_string();
    let description = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text);
    match errno_name(code) {
        Some(name) => format!("{description} ({code} {name})"),
        None => format!("{description} ({code})"),
    }
}

/// Names of the errnos BPF loads and attachments fail with.
fn errno_name(code: i32) -> Option<&'static str> {
    Some(match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        // The kernel's internal ENOTSUPP, which leaks to user space from BPF attachments.
        524 => "ENOTSUPP",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text() {
        assert_eq!(io_text(&io::Error::from_raw_os_error(1)), "Operation not permitted (1 EPERM)");
        assert!(io_text(&io::Error::from_raw_os_error(524)).ends_with("(524 ENOTSUPP)"));
    }

    #[test]
    fn causes_on_one_line() {
        let error = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_raw_tracepoint_open",
            io_error: io::Error::from_raw_os_error(524),
        });
        let text = short(&error);
        assert!(text.starts_with("`bpf_raw_tracepoint_open` failed: "), "{text}");
        assert!(text.ends_with("(524 ENOTSUPP)"), "{text}");
    }

    #[test]
    fn fallbacks_are_quoted() {
        assert_eq!(Quoted(&[]).to_string(), "\"none\"");
        assert_eq!(Quoted(&["fentry: a".to_owned(), "kprobe: \"b\"".to_owned()]).to_string(), "\"fentry: a; kprobe: 'b'\"");
    }

    #[test]
    fn hook_names() {
        let names: Vec<String> = TcpStateHook::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["fentry:tcp_set_state", "kprobe:tcp_set_state", "tracepoint:sock/inet_sock_set_state"]);
        // The kernel truncates program names to 15 characters.
        assert!(TcpStateHook::ALL.iter().all(|hook| hook.program().len() <= 15));
        assert!(SendStartHook::ALL.iter().all(|hook| hook.program().len() <= 15));
        let payloads: Vec<&str> = SendStartHook::ALL.iter().map(|&hook| PayloadHooks::Sockets(hook).name()).collect();
        // Each names every hook it runs on, with no space (the line is read as key=value).
        for (name, start) in payloads.iter().zip(["tcp_sendmsg_locked", "fentry:tcp_sendmsg", "kprobe:tcp_sendmsg"]) {
            assert!(name.contains("sock_recv_length") && name.contains("sock_send_length") && name.contains(start) && !name.contains(' '), "{name}");
        }
    }
}
