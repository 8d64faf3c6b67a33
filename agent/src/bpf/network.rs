//! Loading and attaching the network tracing programs: kernel structure offsets from BTF and
//! the syscall tracepoints.
//!
//! Connections come from syscall tracepoints (a kernel without them, `CONFIG_FTRACE_SYSCALLS=n`,
//! runs without network tracing and says so). Payloads come from socket tracepoints where the
//! kernel has them (Linux 6.13+), else from the read/write family's syscall tracepoints. TCP
//! statistics at close come from the best of fentry, kprobe and the
//! `sock:inet_sock_set_state` tracepoint this kernel offers: [`super::hooks`] chooses, and
//! logs the choice with the other hooks.

use agent_common::{
    names::programs,
    net::{syscall_regs, syscall_slot, KernelOffsets, NetConfig},
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use aya::{programs::TracePoint, Ebpf};
use symbolizer::btf::Btf;
use tracing::{debug, warn};

use super::{
    hooks::{self, Hooks, Link, PayloadHookChoice, PayloadHooks},
    program_mut,
    tracefs::{check_syscall_format, tracepoint_exists},
};

/// Syscall tracepoints that start and stop connection tracking: (program, tracepoint
/// category, tracepoint name, required). Without a required one there is no network tracing.
pub(super) const CONNECTION_HOOKS: &[(&str, &str, &str, bool)] = &[
    (programs::ACCEPT_EXIT, "syscalls", "sys_exit_accept4", true),
    (programs::ACCEPT_EXIT, "syscalls", "sys_exit_accept", false),
    (programs::CONNECT_EXIT, "syscalls", "sys_exit_connect", true),
    (programs::CLOSE_ENTER, "syscalls", "sys_enter_close", true),
];

/// Syscall tracepoints that copy payloads where the socket tracepoints cannot: a missing one
/// only loses the payloads of that syscall.
pub(super) const PAYLOAD_SYSCALL_HOOKS: &[(&str, &str, &str, bool)] = &[
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
    check_syscall_layout(&btf)?;
    let missing: Vec<_> = CONNECTION_HOOKS.iter().filter(|(_, _, _, required)| *required).filter(|(_, c, n, _)| !tracepoint_exists(c, n)).collect();
    if let Some((_, category, name, _)) = missing.first() {
        bail!("this kernel has no tracepoint {category}:{name}");
    }
    for (_, _, name, _) in CONNECTION_HOOKS.iter().chain(PAYLOAD_SYSCALL_HOOKS).filter(|(_, c, n, _)| tracepoint_exists(c, n)) {
        check_syscall_format(name)?;
    }
    Ok(NetConfig {
        enabled: 1,
        target_pid: target_pid.unwrap_or(0),
        self_pid: std::process::id(),
        wake_bytes: 0,
        syscalls: syscall_numbers(),
        offsets,
    })
}

/// Checks the offsets the network programs were built with
/// ([`agent_common::net::syscall_regs::LAYOUT`]) against the kernel's BTF: an error names the
/// first member that is elsewhere. Members BTF does not have are taken on trust.
fn check_syscall_layout(btf: &Btf) -> Result<()> {
    let Some(layout) = syscall_regs::LAYOUT else { bail!("network tracing runs on x86-64 and arm64 only") };
    let offsets = layout.args.iter().chain([&layout.number]);
    for (&(member, extra), &expected) in layout.members.iter().zip(offsets) {
        if let Some(offset) = btf.member_offset("pt_regs", member) {
            let found = offset as usize + extra;
            ensure!(found == expected, "this kernel's struct pt_regs has {member} at byte {found}, not {expected} where oxeye's network programs read it");
        }
    }
    Ok(())
}

/// This architecture's numbers of the syscalls in [`syscall_slot`] order.
fn syscall_numbers() -> [u32; syscall_slot::COUNT] {
    let mut numbers = [u32::MAX; syscall_slot::COUNT];
    for (slot, number) in [
        (syscall_slot::READ, libc::SYS_read),
        (syscall_slot::RECVFROM, libc::SYS_recvfrom),
        (syscall_slot::READV, libc::SYS_readv),
        (syscall_slot::RECVMSG, libc::SYS_recvmsg),
        (syscall_slot::WRITE, libc::SYS_write),
        (syscall_slot::SENDTO, libc::SYS_sendto),
        (syscall_slot::WRITEV, libc::SYS_writev),
        (syscall_slot::SENDMSG, libc::SYS_sendmsg),
    ] {
        numbers[slot] = number as u32;
    }
    numbers
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

/// Loads the network programs and attaches them: the best TCP-state hook first, then the
/// connection syscall tracepoints, then the payload hooks: the socket tracepoints where the
/// kernel has them and `payloads` allows, else the syscall tracepoints. Records the choices
/// in `hooks`, with the reasons for passing over better hooks even when this fails.
pub fn attach(ebpf: &mut Ebpf, hooks: &mut Hooks, payloads: PayloadHookChoice) -> Result<NetLinks> {
    let mut links = NetLinks(Vec::new());
    let (tcp_state, link) = hooks::attach_tcp_state(ebpf, hooks)?;
    links.0.push(link);
    let mut loaded: Vec<&str> = Vec::new();
    attach_syscalls(ebpf, CONNECTION_HOOKS, &mut loaded, &mut links)?;
    let (chosen, socket_links) = hooks::choose_payload_hooks(ebpf, hooks, payloads);
    links.0.extend(socket_links);
    if chosen == PayloadHooks::Syscalls {
        attach_syscalls(ebpf, PAYLOAD_SYSCALL_HOOKS, &mut loaded, &mut links)?;
    }
    hooks.tcp_state = Some(tcp_state);
    hooks.payloads = Some(chosen);
    Ok(links)
}

/// Loads and attaches each program of `table` to its syscall tracepoints (`loaded`: the
/// programs loaded so far, as one may serve several tracepoints).
fn attach_syscalls<'a>(ebpf: &mut Ebpf, table: &[(&'a str, &str, &str, bool)], loaded: &mut Vec<&'a str>, links: &mut NetLinks) -> Result<()> {
    let mut missing = Vec::new();
    for &(program, category, name, required) in table {
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
    Ok(())
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
        fd_table: super::files::fd_table_offsets(btf).map_err(|missing| anyhow!("kernel BTF has no {missing}: network tracing is off"))?,
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
