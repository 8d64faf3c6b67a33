//! TCP connection and HTTP payload tracing, from syscall tracepoints, plus one hook of user
//! space's choosing for TCP statistics at close:
//!
//! - [`connections`]: `accept`/`accept4`/`connect` exits start tracking a connection, `close`
//!   stops it.
//! - [`payload`]: the `read`/`write` family copies the first bytes of what tracked
//!   connections carry, when they look like HTTP/1.x (receives at their exit only, sends at
//!   both ends).
//! - [`socket_hooks`]: the same copies from socket tracepoints (`sock:sock_recv_length`,
//!   `sock:sock_send_length`, Linux 6.3), with a send's start from `tcp:tcp_sendmsg_locked`
//!   (6.13) or fentry or a kprobe on `tcp_sendmsg`: they run only for socket I/O, where the
//!   syscall tracepoints run for every read and write of every file, and through a cheaper
//!   path. User space chooses one set or the other.
//! - [`serving`]: which HTTP request each server thread is serving, for the CPU sampler to
//!   link its samples to.
//! - [`regs`]: a syscall's number and arguments, from the thread's saved registers.
//! - [`tcp_state`]: fentry or kprobe on `tcp_set_state`, or the `sock:inet_sock_set_state`
//!   tracepoint, whichever the kernel has, reports a tracked connection's TCP statistics when
//!   it closes.
//! - [`socket`]: reading a `struct sock` (found through the task's file table).
//!
//! # Minimum kernel version
//!
//! 4.16 (`sock:inet_sock_set_state`, the TCP-state hook every kernel has); 5.8 for the ring
//! buffer. Syscall tracepoints need `CONFIG_FTRACE_SYSCALLS`.

pub mod connections;
pub mod payload;
pub mod regs;
pub mod serving;
pub mod socket;
pub mod socket_hooks;
pub mod tcp_state;

use agent_common::{
    counters::Counter,
    net::{Connection, NetConfig, PayloadRecord, PendingIo, SendStart, ServingRequest, SocketOwner},
};
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};

use crate::{maps::count, read_only::ReadOnly};

/// Set by user space at load time (read-only, so the verifier prunes disabled paths).
#[unsafe(no_mangle)]
pub static NET_CONFIG: ReadOnly<NetConfig> = ReadOnly::new(NetConfig::DISABLED);

/// Connection opens and closes, and HTTP payloads, in the order the kernel produced them.
///
/// - Records: [`agent_common::net::TcpOpenEvent`], [`agent_common::net::TcpCloseEvent`] and
///   [`agent_common::net::PayloadHeader`] + data, told apart by their first `u32`.
/// - Written by: every network program. Read by: the agent's network tracker.
/// - Size: set by user space at load time (see `agent/src/bpf/sizing.rs`); this default is
///   overridden.
#[map]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Connections being tracked.
///
/// - Key: `(tgid << 32) | fd`. Value: [`Connection`] (64 bytes).
/// - Written by: `connections` (insert on accept/connect, remove on close) and `payload`
///   (the protocol, learnt from the first payload). Read by: `payload`.
/// - Size: `--max-connections` at load time. LRU: connections of processes that exit without
///   closing them age out instead of filling the map.
#[map]
pub static CONNECTIONS: LruHashMap<u64, Connection> = LruHashMap::with_max_entries(1, 0);

/// Descriptors known not to be TCP sockets, so the read/write family does not walk the file
/// table for them on every call (see `connections::discover`).
///
/// - Key: `(tgid << 32) | fd`. Value: unused.
/// - Written by: `payload` (after a descriptor turns out not to be a TCP socket). Removed by
///   `connections` on close, accept and connect of that descriptor.
/// - Size: 32,768 at load time (one entry when network tracing is off; see
///   `agent/src/bpf/sizing.rs`); LRU, so descriptors of exited processes age out.
#[map]
pub static NOT_SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(32_768, 0);

/// Who owns each tracked socket, for its close report.
///
/// - Key: `struct sock` address. Value: [`SocketOwner`] (72 bytes).
/// - Written by: `connections`; removed by `tcp_state` at `TCP_CLOSE`.
/// - Size: as [`CONNECTIONS`]; LRU for the same reason.
#[map]
pub static SOCKETS: LruHashMap<u64, SocketOwner> = LruHashMap::with_max_entries(1, 0);

/// Syscalls on tracked sockets between their entry and their exit.
///
/// - Key: `pid_tgid` of the calling thread. Value: [`PendingIo`] (40 bytes).
/// - Written by the entry programs of sends, read and removed by their exits (receives and
///   `connect` need no entry: their exits read the arguments from the saved registers).
/// - Size: 16,384 threads in such a syscall at once, set at load time (one entry when network
///   tracing is off; see `agent/src/bpf/sizing.rs`). A plain hash (cheaper than LRU on this hot
///   path): a thread's next syscall overwrites its entry, and one killed inside a syscall leaves
///   one 40-byte entry behind. A full map fails the insert, counted as
///   [`Counter::NetMapUpdateFailed`].
#[map]
pub static PENDING_IO: HashMap<u64, PendingIo> = HashMap::with_max_entries(16_384, 0);

/// When each thread's current send on a TCP socket started (socket-tracepoint programs only;
/// the syscall programs use `PENDING_IO`).
///
/// - Key: `pid_tgid`. Value: [`SendStart`] (16 bytes).
/// - Written by `socket_hooks` at a send's first `tcp_sendmsg_locked` (or `tcp_sendmsg`); its `sock_send_length`
///   reads it and zeroes the start in place, so a thread's steady state is two lookups and no
///   insert or delete.
/// - Size: as `PENDING_IO`, at load time. LRU: the entries of threads that have exited age out.
#[map]
pub static SEND_STARTS: LruHashMap<u64, SendStart> = LruHashMap::with_max_entries(16_384, 0);

/// The HTTP request each thread is serving (see [`serving`]).
///
/// - Key: `pid_tgid`. Value: [`ServingRequest`] (24 bytes).
/// - Written by `payload` (a server's request receive sets it, its response send empties it
///   in place, so a thread's steady state is two lookups and no insert or delete) and by the
///   samplers (the CPU sampler counts its samples, the off-CPU sampler marks its events).
///   Read by both.
/// - Size: as `PENDING_IO`, at load time (one entry when network tracing is off). LRU: the
///   entries of threads that have exited age out.
#[map]
pub static SERVING_REQUESTS: LruHashMap<u64, ServingRequest> = LruHashMap::with_max_entries(16_384, 0);

/// Bytes this CPU has written to `NET_EVENTS` since it last woke the reader (see
/// [`wake_flags`]).
///
/// - Key: 0. Value: bytes. One entry per CPU.
/// - Written by every program that writes `NET_EVENTS`.
#[map]
pub static WAKE_PENDING: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The payload record being built on this CPU (too big for the BPF stack).
///
/// - Key: 0. Value: [`PayloadRecord`] (112 + 8,192 bytes). One entry per CPU.
/// - Written and read by `payload`'s exit program only, a tracepoint program: the kernel's
///   per-CPU `bpf_prog_active` guard keeps any other tracepoint, kprobe or perf_event program
///   from starting on this CPU while it runs, so the record cannot be overwritten midway.
#[map]
pub static PAYLOAD_SCRATCH: PerCpuArray<PayloadRecord> = PerCpuArray::with_max_entries(1, 0);

/// A field of the tracepoint record at `offset`, read straight from the context (tracepoint
/// programs may; it saves a helper call on every syscall).
///
/// # Safety
///
/// `offset` must be a field of the record, aligned for `T`.
#[inline(always)]
pub unsafe fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the caller names a field inside the record the context points to.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().add(offset).cast::<T>()) }
}

/// The configuration, its fields read where they are used.
#[inline(always)]
pub fn config() -> &'static NetConfig {
    NET_CONFIG.get()
}

/// Whether the process `tgid` is traced at all.
#[inline(always)]
pub fn traced(config: &NetConfig, tgid: u32) -> bool {
    config.enabled != 0 && tgid != config.self_pid && (config.target_pid == 0 || config.target_pid == tgid)
}

/// The `CONNECTIONS` key of a file descriptor of process `tgid`.
#[inline(always)]
pub fn connection_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Counts a failed insert into a network map (the connection or syscall is then not traced).
#[inline(always)]
pub fn check_insert<E>(result: Result<(), E>) {
    if result.is_err() {
        count(Counter::NetMapUpdateFailed);
    }
}

/// The ring-buffer flags for a record of `len` bytes: no wake-up (user space drains on a
/// timer), except for the record that takes the bytes this CPU has written since it last woke
/// the reader past `wake_bytes`, so a burst is read before the ring fills: all CPUs together
/// leave at most their number times `wake_bytes` unread without a wake-up pending.
///
/// Counted per CPU rather than asked of the ring (`bpf_ringbuf_query`): the query reads the
/// ring's positions, cache lines every producing CPU and the reader write, and cost about a
/// tenth of each payload program (measured with `perf` under nginx load).
#[inline(always)]
pub fn wake_flags(len: usize) -> u64 {
    let Some(unwoken) = WAKE_PENDING.get_ptr_mut(0) else { return BPF_RB_NO_WAKEUP as u64 };
    // SAFETY: this CPU's slot; a program that interrupts this one between the read and the
    // write only makes one wake-up come a record early or late.
    unsafe {
        let after = *unwoken + len as u64;
        if after >= config().wake_bytes as u64 {
            *unwoken = 0;
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            *unwoken = after;
            BPF_RB_NO_WAKEUP as u64
        }
    }
}

/// Sends a fixed-size record.
#[inline(always)]
pub fn send<T>(record: &T) {
    if NET_EVENTS.output::<T>(record, wake_flags(core::mem::size_of::<T>())).is_err() {
        count(Counter::NetRingFull);
    }
}
