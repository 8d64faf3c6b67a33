//! TCP statistics at close: when a tracked connection reaches `TCP_CLOSE`, its statistics are
//! final; read them from the `tcp_sock` and report the connection.
//!
//! Three programs feed the same [`on_state_change`]; user space attaches the best one this
//! kernel has (see `agent/src/bpf/hooks.rs`):
//!
//! - [`oxeye_tcp_fent`]: fentry on `tcp_set_state` (cheapest; needs BPF trampolines).
//! - [`oxeye_tcp_kprb`]: kprobe on `tcp_set_state`.
//! - [`oxeye_tcp_state`]: tracepoint `sock:inet_sock_set_state` (every kernel since 4.16).
//!
//! The first two run at the *entry* of `tcp_set_state`, the tracepoint at its end (in
//! `inet_sk_state_store`). In between the kernel only unhashes the socket, releases its port
//! (zeroing `inet_num`) and stores the new `sk_state`; the body reads none of those (it takes
//! the new state from the arguments and the addresses from [`SOCKETS`]), and the statistics it
//! reads do not change there, so all three report the same.

use agent_common::{
    counters::Counter,
    net::TcpCloseEvent,
    records::RecordKind,
    tracepoints::inet_sock_set_state::{NEWSTATE, PROTOCOL, SKADDR},
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, kprobe, tracepoint},
    programs::{FEntryContext, ProbeContext, TracePointContext},
};

use super::{config, field, send, SOCKETS};
use crate::maps::count;

const TCP_CLOSE: i32 = 7;
/// `SOCK_DONE` in `sock.sk_flags`: set by `tcp_fin` when the peer's FIN is processed.
const SOCK_DONE: u64 = 1 << 1;
const IPPROTO_TCP: u16 = 6;

/// `fentry/tcp_set_state(struct sock *sk, int state)`: at entry, before the state changes.
#[fentry(function = "tcp_set_state")]
pub fn oxeye_tcp_fent(ctx: FEntryContext) -> i32 {
    let sock: u64 = ctx.arg(0);
    let new_state: i32 = ctx.arg(1);
    on_state_change(sock, new_state);
    0
}

/// `kprobe/tcp_set_state(struct sock *sk, int state)`: at entry, before the state changes.
#[kprobe(function = "tcp_set_state")]
pub fn oxeye_tcp_kprb(ctx: ProbeContext) -> u32 {
    if let (Some(sock), Some(new_state)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) {
        on_state_change(sock, new_state);
    }
    0
}

/// `sock:inet_sock_set_state`, for every protocol: only TCP's are of interest.
#[tracepoint]
pub fn oxeye_tcp_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of the inet_sock_set_state record, checked by user space.
    let (new_state, protocol, sock): (i32, u16, u64) = unsafe { (field(&ctx, NEWSTATE), field(&ctx, PROTOCOL), field(&ctx, SKADDR)) };
    if protocol == IPPROTO_TCP {
        on_state_change(sock, new_state);
    }
    0
}

/// Reports a tracked TCP socket `sock` that is moving to `new_state`, if that is `TCP_CLOSE`.
/// Reads nothing that `tcp_set_state` changes (so it may run at its entry or its end).
#[inline(always)]
fn on_state_change(sock: u64, new_state: i32) {
    if new_state != TCP_CLOSE {
        return;
    }
    let Some(owner) = SOCKETS.get_ptr(sock) else { return };
    // SAFETY: a valid map value pointer; copied before the entry is removed.
    let owner = unsafe { *owner };
    let _ = SOCKETS.remove(sock);
    let config = config();
    let offsets = &config.offsets;
    let read_u64 = |offset: u32| read_or_zero::<u64>(sock, offset);
    let read_u32 = |offset: u32| read_or_zero::<u32>(sock, offset);
    // The FIN takes a sequence number, which `bytes_received` counts.
    // (`sk_shutdown` will not do: closing the socket sets it whole, FIN or not.)
    let fin_received = read_u64(offsets.sk_flags) & SOCK_DONE != 0;
    let bytes_received = read_u64(offsets.tcp_bytes_received).saturating_sub(u64::from(fin_received));
    send(&TcpCloseEvent {
        kind: RecordKind::TcpClose as u32,
        pid: owner.pid,
        opened_ns: owner.opened_ns,
        // SAFETY: a helper with no arguments and no memory access.
        closed_ns: unsafe { bpf_ktime_get_ns() },
        sock,
        addrs: owner.addrs,
        role: owner.role,
        retransmits: read_u32(offsets.tcp_total_retrans),
        bytes_sent: read_u64(offsets.tcp_bytes_sent).saturating_sub(read_u64(offsets.tcp_bytes_retrans)),
        bytes_received,
        // The kernel keeps eight times the smoothed RTT.
        srtt_us: read_u32(offsets.tcp_srtt_us) >> 3,
        reserved: 0,
        comm: owner.comm,
    });
}

/// The `T` at `sock + offset`, or 0 (counted) when it cannot be read.
#[inline(always)]
fn read_or_zero<T: Default>(sock: u64, offset: u32) -> T {
    // SAFETY: the helper checks the address; a bad one is an error, not a fault.
    match unsafe { bpf_probe_read_kernel((sock + offset as u64) as *const T) } {
        Ok(value) => value,
        Err(_) => {
            count(Counter::NetKernelReadFailed);
            T::default()
        }
    }
}
