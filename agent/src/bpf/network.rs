//! Loading and attaching the network tracing programs: kernel structure offsets from BTF and
//! the syscall tracepoints.
//!
//! Connections and payloads come from syscall tracepoints, which have no better alternative
//! (a kernel without them, `CONFIG_FTRACE_SYSCALLS=n`, runs without network tracing and says
//! so). TCP statistics at close come from the best of fentry, kprobe and the
//! `sock:inet_sock_set_state` tracepoint this kernel offers: [`super::hooks`] chooses, and
//! logs the choice with the other hooks.

use agent_common::{
    names::programs,
    net::{KernelOffsets, NetConfig},
};
use anyhow::{bail, Context, Result};
use aya::{programs::TracePoint, Ebpf};
use symbolizer::btf::Btf;
use tracing::{debug, warn};

use super::{
    hooks::{self, Hooks, Link},
    program_mut,
    tracefs::{check_syscall_format, tracepoint_exists},
};

/// Syscall tracepoints: (program, tracepoint category, tracepoint name, required). Without a
/// required one there is no network tracing; a missing optional one only loses the payloads of
/// that syscall.
pub(super) const HOOKS: &[(&str, &str, &str, bool)] = &[
    (programs::ACCEPT_EXIT, "syscalls", "sys_exit_accept4", true),
    (programs::ACCEPT_EXIT, "syscalls", "sys_exit_accept", false),
    (programs::CONNECT_ENTER, "syscalls", "sys_enter_connect", true),
    (programs::CONNECT_EXIT, "syscalls", "sys_exit_connect", true),
    (programs::CLOSE_ENTER, "syscalls", "sys_enter_close", true),
    (programs::RECV_EXIT, "syscalls", "sys_exit_read", false),
    (programs::RECV_EXIT, "syscalls", "sys_exit_recvfrom", false),
    (programs::SEND_ENTER, "syscalls", "sys_enter_write", false),
    (programs::SEND_ENTER, "syscalls", "sys_enter_sendto", false),
    (programs::READV_EXIT, "syscalls", "sys_exit_readv", false),
    (programs::WRITEV_ENTER, "syscalls", "sys_enter_writev", false),
    (programs::RECVMSG_EXIT, "syscalls", "sys_exit_recvmsg", false),
    (programs::SENDMSG_ENTER, "syscalls", "sys_enter_sendmsg", false),
    (programs::SEND_EXIT, "syscalls", "sys_exit_write", false),
    (programs::SEND_EXIT, "syscalls", "sys_exit_sendto", false),
    (programs::SEND_EXIT, "syscalls", "sys_exit_writev", false),
    (programs::SEND_EXIT, "syscalls", "sys_exit_sendmsg", false),
];

/// The network configuration for the BPF programs, or why network tracing cannot run here.
pub fn config(target_pid: Option<u32>) -> Result<NetConfig> {
    let btf = Btf::from_sys_fs().context("network tracing needs kernel BTF (/sys/kernel/btf/vmlinux)")?;
    let offsets = kernel_offsets(&btf)?;
    let regs_args = crate::unwind::registers::syscall_args(&btf).context("network tracing runs on x86-64 and arm64 only")?;
    let missing: Vec<_> = HOOKS.iter().filter(|(_, _, _, required)| *required).filter(|(_, c, n, _)| !tracepoint_exists(c, n)).collect();
    if let Some((_, category, name, _)) = missing.first() {
        bail!("this kernel has no tracepoint {category}:{name}");
    }
    for (_, _, name, _) in HOOKS.iter().filter(|(_, c, n, _)| tracepoint_exists(c, n)) {
        check_syscall_format(name)?;
    }
    Ok(NetConfig { enabled: 1, target_pid: target_pid.unwrap_or(0), self_pid: std::process::id(), wake_bytes: 0, regs_args, reserved: 0, offsets })
}

/// The network programs' attachments. Dropping them detaches them all at once: each syscall
/// tracepoint's detach waits for an RCU grace period (about 70 ms here), so 22 of them one
/// after the other would hold up oxeye's exit by more than a second.
pub struct NetLinks(Vec<Link>);

impl Drop for NetLinks {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.0);
        std::thread::scope(|scope| {
            for link in links {
                // A thread that cannot start drops its link here, one after the other.
                if let Err(error) = std::thread::Builder::new().spawn_scoped(scope, move || drop(link)) {
                    tracing::debug!("detaching on the calling thread: {error}");
                }
            }
        });
    }
}

/// Loads the network programs and attaches them: the best TCP-state hook first, then each
/// syscall program to its tracepoints. Records the choice in `hooks` (the reasons for passing
/// over better TCP-state hooks even when this fails).
pub fn attach(ebpf: &mut Ebpf, hooks: &mut Hooks) -> Result<NetLinks> {
    let mut links = NetLinks(Vec::new());
    let (tcp_state, link) = hooks::attach_tcp_state(ebpf, hooks)?;
    links.0.push(link);
    let mut loaded: Vec<&str> = Vec::new();
    let mut missing = Vec::new();
    for &(program, category, name, required) in HOOKS {
        if !tracepoint_exists(category, name) {
            missing.push(name);
            continue;
        }
        let tracepoint: &mut TracePoint = program_mut(ebpf, program)?.try_into()?;
        if !loaded.contains(&program) {
            tracepoint.load().with_context(|| format!("the kernel rejected BPF program {program}"))?;
            loaded.push(program);
        }
        match tracepoint.attach(category, name) {
            Ok(id) => links.0.push(Box::new(tracepoint.take_link(id)?)),
            Err(error) if !required => {
                warn!("cannot attach to tracepoint {category}:{name}, its payloads are not traced: {error}");
            }
            Err(error) => return Err(error).with_context(|| format!("cannot attach to tracepoint {category}:{name}")),
        }
    }
    if !missing.is_empty() {
        // Optional ones only: a kernel without a required one has no network tracing.
        debug!(?missing, "syscall tracepoints this kernel lacks");
    }
    hooks.tcp_state = Some(tcp_state);
    hooks.syscalls = true;
    Ok(links)
}

/// Offsets of every kernel structure member the network programs read.
fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets> {
    let get = |structure: &str, member: &str| {
        btf.member_offset(structure, member).with_context(|| format!("kernel BTF has no {structure}.{member}: network tracing is off"))
    };
    let sk = |member: &str| get("sock", &format!("__sk_common.{member}"));
    // Kernels without IPv6 lack these; zero tells the BPF side to leave IPv6 addresses empty.
    let sk_v6 = |member: &str| btf.member_offset("sock", &format!("__sk_common.{member}")).unwrap_or(0);
    Ok(KernelOffsets {
        task_files: get("task_struct", "files")?,
        files_fdt: get("files_struct", "fdt")?,
        fdtable_fd: get("fdtable", "fd")?,
        fdtable_max_fds: get("fdtable", "max_fds")?,
        file_private_data: get("file", "private_data")?,
        socket_type: get("socket", "type")?,
        socket_sk: get("socket", "sk")?,
        sk_family: sk("skc_family")?,
        sk_num: sk("skc_num")?,
        sk_dport: sk("skc_dport")?,
        sk_rcv_saddr: sk("skc_rcv_saddr")?,
        sk_daddr: sk("skc_daddr")?,
        sk_v6_rcv_saddr: sk_v6("skc_v6_rcv_saddr"),
        sk_v6_daddr: sk_v6("skc_v6_daddr"),
        tcp_bytes_received: get("tcp_sock", "bytes_received")?,
        tcp_bytes_sent: get("tcp_sock", "bytes_sent")?,
        tcp_bytes_retrans: get("tcp_sock", "bytes_retrans")?,
        tcp_total_retrans: get("tcp_sock", "total_retrans")?,
        tcp_srtt_us: get("tcp_sock", "srtt_us")?,
        sk_flags: sk("skc_flags")?,
        reserved: 0,
    })
}
