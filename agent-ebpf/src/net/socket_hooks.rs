//! Payload copies from socket tracepoints, on kernels that have `sock:sock_recv_length` and
//! `sock:sock_send_length` (Linux 6.3): BTF tracepoints that run only for socket I/O, with the
//! socket in hand. A send's start is stamped where it reaches TCP: the `tcp:tcp_sendmsg_locked`
//! tracepoint (6.13), else fentry or a kprobe on `tcp_sendmsg` (user space picks the best this
//! kernel accepts; all three run the same body).
//!
//! The copy itself is the syscall programs' (`payload`): a receive or send is known by the
//! number the thread made its syscall with, and its descriptor and buffer are read from the
//! thread's saved registers. I/O that is not one of those syscalls (io_uring, `sendfile`,
//! `splice`, kernel sockets) is not copied, as with the syscall tracepoints.

use agent_common::net::{direction, syscall_slot, SendStart};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};

use super::{
    check_insert, config,
    payload::{copy_from_regs, Buffer, Transfer},
    regs::SavedRegs,
    traced, SEND_STARTS,
};

/// `MSG_PEEK`: the data stays queued and will be received again.
const MSG_PEEK: i32 = 2;

/// `sock_recv_length(sk, ret, flags)`: a receive's end.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn oxeye_sock_recv(ctx: BtfTracePointContext) -> u32 {
    let moved: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if moved <= 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let config = config();
    if !traced(&config, tgid) {
        return 0;
    }
    let regs = SavedRegs::current();
    let buffer = match regs.syscall_slot(&config) {
        Some(syscall_slot::READ | syscall_slot::RECVFROM) => Buffer::Plain,
        Some(syscall_slot::READV) => Buffer::Vector,
        Some(syscall_slot::RECVMSG) => Buffer::Message,
        _ => return 0,
    };
    copy_from_regs(&config, regs, tgid, Transfer { sock: socket(&ctx), moved: moved as i64, direction: direction::INGRESS, buffer, entered_ns: 0 });
    0
}

/// `tcp_sendmsg_locked(sk, msg, skb, size_goal)`: fires for each buffer a send fills, so only
/// the first of a send records its start.
#[btf_tracepoint(function = "tcp_sendmsg_locked")]
pub fn oxeye_send_tp(ctx: BtfTracePointContext) -> u32 {
    send_started(socket(&ctx));
    0
}

/// fentry on `tcp_sendmsg(sk, msg, size)`, for kernels without `tcp_sendmsg_locked`'s
/// tracepoint: once per send, before the socket is locked.
#[fentry(function = "tcp_sendmsg")]
pub fn oxeye_send_fent(ctx: FEntryContext) -> u32 {
    send_started(ctx.arg(0));
    0
}

/// kprobe on `tcp_sendmsg(sk, msg, size)`, for kernels without BPF trampolines.
#[kprobe(function = "tcp_sendmsg")]
pub fn oxeye_send_kprb(ctx: ProbeContext) -> u32 {
    if let Some(sock) = ctx.arg::<u64>(0) {
        send_started(sock);
    }
    0
}

/// A send on `sock` reached TCP: its start, unless this thread's send on it already has one.
#[inline(always)]
fn send_started(sock: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced(&config(), (pid_tgid >> 32) as u32) {
        return;
    }
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    match SEND_STARTS.get_ptr_mut(&pid_tgid) {
        // SAFETY: a valid map value pointer, this thread's alone.
        Some(start) => unsafe {
            if (*start).sock != sock || (*start).entered_ns == 0 {
                *start = SendStart { sock, entered_ns: now };
            }
        },
        None => check_insert(SEND_STARTS.insert(&pid_tgid, &SendStart { sock, entered_ns: now }, 0)),
    }
}

/// `sock_send_length(sk, ret, flags)`: a send's end.
#[btf_tracepoint(function = "sock_send_length")]
pub fn oxeye_sock_send(ctx: BtfTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let config = config();
    if !traced(&config, tgid) {
        return 0;
    }
    let sock = socket(&ctx);
    // Taken even when the send failed, so the next one starts afresh.
    let started = match SEND_STARTS.get_ptr_mut(&pid_tgid) {
        // SAFETY: a valid map value pointer, this thread's alone.
        Some(start) if unsafe { (*start).sock } == sock => unsafe { core::mem::replace(&mut (*start).entered_ns, 0) },
        _ => 0,
    };
    let moved: i32 = ctx.arg(1);
    if moved <= 0 {
        return 0;
    }
    let regs = SavedRegs::current();
    let buffer = match regs.syscall_slot(&config) {
        Some(syscall_slot::WRITE | syscall_slot::SENDTO) => Buffer::Plain,
        Some(syscall_slot::WRITEV) => Buffer::Vector,
        Some(syscall_slot::SENDMSG) => Buffer::Message,
        _ => return 0,
    };
    // A send that never reached TCP's send (not TCP) is stamped at its end.
    // SAFETY: a helper with no arguments and no memory access.
    let entered_ns = if started != 0 { started } else { unsafe { bpf_ktime_get_ns() } };
    copy_from_regs(&config, regs, tgid, Transfer { sock, moved: moved as i64, direction: direction::EGRESS, buffer, entered_ns });
    0
}

/// The tracepoint's first argument, the `struct sock`, as a number (an identity, not read).
#[inline(always)]
fn socket(ctx: &BtfTracePointContext) -> u64 {
    let sock: *const u8 = ctx.arg(0);
    sock as u64
}
