//! `sock:inet_sock_set_state`: when a tracked connection reaches `TCP_CLOSE`, its TCP
//! statistics are final; read them from the `tcp_sock` and report the connection.

use agent_common::{
    net::TcpCloseEvent,
    records::RecordKind,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};

use super::{config, field, send, SOCKETS};

/// Offsets in the tracepoint record (stable since 4.16; user space checks them against the
/// tracepoint's format file before attaching).
pub const SKADDR: usize = 8;
/// `newstate` field.
pub const NEWSTATE: usize = 20;
/// `protocol` field.
pub const PROTOCOL: usize = 30;

const TCP_CLOSE: i32 = 7;
/// `SOCK_DONE` in `sock.sk_flags`: set by `tcp_fin` when the peer's FIN is processed.
const SOCK_DONE: u64 = 1 << 1;
const IPPROTO_TCP: u16 = 6;

/// Reports a tracked connection that reached `TCP_CLOSE`.
#[tracepoint]
pub fn oxeye_tcp_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of the inet_sock_set_state record, checked by user space.
    let (new_state, protocol, sock): (i32, u16, u64) = unsafe { (field(&ctx, NEWSTATE), field(&ctx, PROTOCOL), field(&ctx, SKADDR)) };
    if new_state != TCP_CLOSE || protocol != IPPROTO_TCP {
        return 0;
    }
    let Some(owner) = SOCKETS.get_ptr(sock) else { return 0 };
    // SAFETY: a valid map value pointer; copied before the entry is removed.
    let owner = unsafe { *owner };
    let _ = SOCKETS.remove(sock);
    let config = config();
    let offsets = &config.offsets;
    let read_u64 = |offset: u32| unsafe { bpf_probe_read_kernel((sock + offset as u64) as *const u64) }.unwrap_or(0);
    let read_u32 = |offset: u32| unsafe { bpf_probe_read_kernel((sock + offset as u64) as *const u32) }.unwrap_or(0);
    // The FIN takes a sequence number, which `bytes_received` counts.
    // (`sk_shutdown` will not do: closing the socket sets it whole, FIN or not.)
    let fin_received = read_u64(offsets.sk_flags) & SOCK_DONE != 0;
    let bytes_received = read_u64(offsets.tcp_bytes_received).saturating_sub(u64::from(fin_received));
    send(&TcpCloseEvent {
        kind: RecordKind::TcpClose as u32,
        pid: owner.pid,
        opened_ns: owner.opened_ns,
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
    0
}
