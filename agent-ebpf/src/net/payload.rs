//! Copying the first bytes of what tracked connections carry, when they look like HTTP/1.x.
//!
//! A receive (`read`, `recvfrom`, `readv`, `recvmsg`) is seen once, at its exit: its
//! descriptor and buffer are still in the thread's saved registers (`struct pt_regs`), and
//! the bytes it moved are there to copy. A send is seen twice: its entry remembers the
//! descriptor, buffer and start time (only for tracked connections) in `PENDING_IO`, since a
//! request leaves when the call starts (a server can answer before the client's `write`
//! returns); its exit copies what was actually sent, so a send that failed sends nothing. Up
//! to [`CAPTURE_BYTES`] are copied. A connection whose first payload is not HTTP is marked and
//! skipped from then on, so TLS or database traffic costs one map lookup per syscall.

use agent_common::{
    counters::Counter,
    net::{direction, is_http_prefix, is_response_prefix, protocol, role, Connection, NetConfig, PayloadHeader, PendingIo, CAPTURE_BYTES, PREFIX_BYTES, RESPONSE_CAPTURE_BYTES},
    records::RecordKind,
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};

use agent_common::tracepoints::{SYSCALL_ARG0 as ARG0, SYSCALL_ARG_BYTES};

use super::{check_insert, config, serving, connection_key, connections, field, regs::SavedRegs, traced, wake_flags, CONNECTIONS, NET_EVENTS, PAYLOAD_SCRATCH, PENDING_IO};
use crate::maps::count;

/// Where a syscall's data is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Buffer {
    /// Second argument is the buffer (`read`, `write`, `recvfrom`, `sendto`).
    Plain,
    /// Second argument is a `struct iovec` array (`readv`, `writev`).
    Vector,
    /// Second argument is a `struct msghdr` (`recvmsg`, `sendmsg`).
    Message,
}

/// Offset of `msg_iov` in `struct msghdr`, followed by `msg_iovlen` (user ABI, same on x86-64
/// and arm64).
const MSGHDR_IOV: u64 = 16;
/// Bytes of a `struct iovec` (base, length).
const IOVEC_BYTES: u64 = 16;
/// Iovecs looked at for the first one with room: a process may lead with empty ones (a
/// zero-length header buffer), which the kernel skips and so must the copy.
const MAX_IOVECS: u32 = 4;

/// `read`, `recvfrom` exit.
#[tracepoint]
pub fn oxeye_recv_exit(ctx: TracePointContext) -> u32 {
    receive(&ctx, Buffer::Plain);
    0
}

/// `write`, `sendto` entry.
#[tracepoint]
pub fn oxeye_send_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, direction::EGRESS, Buffer::Plain);
    0
}

/// `readv` exit.
#[tracepoint]
pub fn oxeye_readv_exit(ctx: TracePointContext) -> u32 {
    receive(&ctx, Buffer::Vector);
    0
}

/// `writev` entry.
#[tracepoint]
pub fn oxeye_writev_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, direction::EGRESS, Buffer::Vector);
    0
}

/// `recvmsg` exit.
#[tracepoint]
pub fn oxeye_recvmsg_exit(ctx: TracePointContext) -> u32 {
    receive(&ctx, Buffer::Message);
    0
}

/// `sendmsg` entry.
#[tracepoint]
pub fn oxeye_sendmsg_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, direction::EGRESS, Buffer::Message);
    0
}

/// The exit of every send above.
#[tracepoint]
pub fn oxeye_send_exit(ctx: TracePointContext) -> u32 {
    send_exit(&ctx);
    0
}

/// A send's entry: remembers its buffer and start time, if the descriptor is a tracked
/// connection that may carry HTTP.
#[inline(always)]
fn enter(ctx: &TracePointContext, direction: u32, buffer: Buffer) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let config = config();
    if !traced(&config, tgid) {
        return;
    }
    // SAFETY: every syscall here takes the descriptor first, the buffer second, and (plain
    // ones) its length third.
    let (fd, arg1, arg2): (u64, u64, u64) =
        unsafe { (field(ctx, ARG0), field(ctx, ARG0 + SYSCALL_ARG_BYTES), field(ctx, ARG0 + 2 * SYSCALL_ARG_BYTES)) };
    if !may_carry_http(&config, tgid, fd as u32) {
        return;
    }
    let Some(mut pending) = pending_io(fd as u32, direction, buffer, arg1, arg2) else { return };
    // SAFETY: a helper with no arguments and no memory access.
    pending.entered_ns = unsafe { bpf_ktime_get_ns() };
    check_insert(PENDING_IO.insert(pid_tgid, pending, 0));
}

/// A receive's exit: its arguments from the thread's saved registers, then the copy.
#[inline(always)]
fn receive(ctx: &TracePointContext, buffer: Buffer) {
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let moved: i64 = unsafe { field(ctx, ARG0) };
    if moved <= 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let config = config();
    if !traced(&config, tgid) {
        return;
    }
    copy_from_regs(&config, SavedRegs::current(), tgid, Transfer { sock: 0, moved, direction: direction::INGRESS, buffer, entered_ns: 0 });
}

/// What a syscall seen at its end moved, for [`copy_from_regs`].
pub(super) struct Transfer {
    /// The `struct sock` it moved data on (0: any).
    pub(super) sock: u64,
    /// Bytes moved (more than 0).
    pub(super) moved: i64,
    /// A [`direction`].
    pub(super) direction: u32,
    /// Where its data is.
    pub(super) buffer: Buffer,
    /// A send's start (unused for receives, which are stamped when copied).
    pub(super) entered_ns: u64,
}

/// The copy of what the current syscall moved, found from its arguments in the thread's
/// saved registers.
#[inline(always)]
pub(super) fn copy_from_regs(config: &NetConfig, regs: SavedRegs, tgid: u32, transfer: Transfer) {
    let [fd, arg1, arg2] = regs.syscall_args();
    let Some(connection) = http_connection(config, tgid, fd as u32) else { return };
    let Some(mut pending) = pending_io(fd as u32, transfer.direction, transfer.buffer, arg1, arg2) else { return };
    pending.entered_ns = transfer.entered_ns;
    // SAFETY: a valid map value pointer; racing writers only store the same values.
    capture(&pending, tgid, transfer.sock, transfer.moved, unsafe { &mut *connection });
}

/// Whether descriptor `fd` of process `tgid` is a tracked connection (found now if it is a
/// TCP socket not seen yet) not known to carry something other than HTTP.
#[inline(always)]
fn may_carry_http(config: &NetConfig, tgid: u32, fd: u32) -> bool {
    http_connection(config, tgid, fd).is_some()
}

/// The tracked connection of descriptor `fd` of process `tgid` (found now if it is a TCP
/// socket not seen yet), unless it is known to carry something other than HTTP: one lookup
/// serves the check and the copy.
#[inline(always)]
fn http_connection(config: &NetConfig, tgid: u32, fd: u32) -> Option<*mut Connection> {
    let key = connection_key(tgid, fd);
    let connection = match CONNECTIONS.get_ptr_mut(key) {
        Some(connection) => connection,
        None if connections::discover(config, tgid, fd) => CONNECTIONS.get_ptr_mut(key)?,
        None => return None,
    };
    // SAFETY: a valid map value pointer.
    (unsafe { (*connection).protocol } != protocol::OTHER).then_some(connection)
}

/// Where a syscall's data is, from its second and third arguments (no start time yet).
#[inline(always)]
fn pending_io(fd: u32, direction: u32, buffer: Buffer, arg1: u64, arg2: u64) -> Option<PendingIo> {
    let capped = |n: u64| n.min(u32::MAX as u64) as u32;
    let (buf, vectored, requested, iovecs) = match buffer {
        Buffer::Plain => (arg1, 0, capped(arg2), 0),
        Buffer::Vector => (arg1, 1, 0, capped(arg2)),
        // SAFETY: a user pointer; a bad one is an error, not a fault.
        Buffer::Message => match unsafe { bpf_probe_read_user((arg1 + MSGHDR_IOV) as *const [u64; 2]) } {
            Ok([iov, iovlen]) => (iov, 1, 0, capped(iovlen)),
            Err(_) => {
                count(Counter::NetUserReadFailed);
                return None;
            }
        },
    };
    Some(PendingIo { fd, direction, buf, vectored, requested, entered_ns: 0, iovecs, reserved: 0 })
}

/// A send's exit.
#[inline(always)]
fn send_exit(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_IO.get_ptr(pid_tgid) else { return };
    // SAFETY: a valid map value pointer; copied before the entry is removed.
    let pending = unsafe { *pending };
    let _ = PENDING_IO.remove(pid_tgid);
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let moved: i64 = unsafe { field(ctx, ARG0) };
    if moved <= 0 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some(connection) = CONNECTIONS.get_ptr_mut(connection_key(tgid, pending.fd)) else { return };
    // SAFETY: a valid map value pointer; racing writers only store the same values.
    capture(&pending, tgid, 0, moved, unsafe { &mut *connection });
}

/// Copies the first bytes a syscall moved on a tracked connection into a payload record, if
/// they look like HTTP (or continue a request that did). A `sock` other than 0 must be the
/// connection's: a descriptor whose close was missed may name another socket by now.
#[inline(always)]
fn capture(pending: &PendingIo, tgid: u32, sock: u64, moved: i64, connection: &mut Connection) {
    let (data, available, filled) = if pending.vectored != 0 {
        // Only the first iovec with room is looked at: it holds the request or status line.
        let Some(iov) = first_iovec_with_room(pending.buf, pending.iovecs) else { return };
        (iov[0], iov[1].min(moved as u64), moved as u64 >= iov[1])
    } else {
        (pending.buf, moved as u64, moved as u64 >= pending.requested as u64)
    };
    if connection.protocol == protocol::OTHER || (sock != 0 && connection.sock != sock) {
        return;
    }
    let ingress = pending.direction == direction::INGRESS;
    let continuation = ingress && connection.continues != 0;
    // Shorter pieces cannot be told apart: only a continuation is worth copying.
    if available < PREFIX_BYTES as u64 && !continuation {
        return;
    }
    let Some(record) = PAYLOAD_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's scratch slot, which nothing else writes while this program runs (see
    // `PAYLOAD_SCRATCH`).
    let record = unsafe { &mut *record };
    // The first bytes are copied at once, up to a response's limit, and told apart in the
    // copy: one read of user memory where a separate look at the prefix made two.
    let Some(mut captured) = copy_user(record, data, available, RESPONSE_CAPTURE_BYTES) else { return };
    let prefix = if captured as usize >= PREFIX_BYTES {
        let mut prefix = [0; PREFIX_BYTES];
        prefix.copy_from_slice(&record.data[..PREFIX_BYTES]);
        prefix
    } else {
        [0; PREFIX_BYTES]
    };
    let http = is_http_prefix(&prefix);
    let first = connection.protocol == protocol::UNKNOWN;
    if first {
        if http {
            connection.protocol = protocol::HTTP;
        } else if connection.role != role::UNKNOWN || connection.misses >= Connection::DISCOVERED_TRIES {
            connection.protocol = protocol::OTHER;
        } else {
            connection.misses += 1;
        }
    }
    if connection.protocol != protocol::HTTP {
        return;
    }
    if ingress {
        connection.continues = u32::from((http || continuation) && filled);
    }
    if !http && !continuation {
        return;
    }
    let response = is_response_prefix(&prefix);
    // A request (or a piece of one) longer than a response's limit is copied again, up to
    // its own.
    if !response && available > RESPONSE_CAPTURE_BYTES as u64 {
        let Some(longer) = copy_user(record, data, available, CAPTURE_BYTES) else { return };
        captured = longer;
    }
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut sampled = serving::Sampled::default();
    if connection.role == role::SERVER {
        if ingress && http && !response {
            serving::request_received(connection.sock, now);
        } else if !ingress && response {
            sampled = serving::response_sent(connection.sock);
        }
    }
    let off_cpu = if sampled.off_cpu { PayloadHeader::OFF_CPU_EVENTS } else { 0 };
    record.header = PayloadHeader {
        kind: RecordKind::Payload as u32,
        pid: tgid,
        fd: pending.fd,
        direction: pending.direction,
        sock: connection.sock,
        // A send's request or response leaves when the call starts; a receive's data is the
        // process's when the call returns.
        timestamp_ns: if pending.direction == direction::EGRESS { pending.entered_ns } else { now },
        size: moved as u64,
        captured,
        role: connection.role,
        addrs: connection.addrs,
        flags: (if continuation { PayloadHeader::CONTINUATION } else { 0 }) | off_cpu,
        cpu_samples: sampled.cpu_samples,
        // Once per connection: user space keeps the name (the helper cost a twentieth of
        // each payload program).
        comm: if first { bpf_get_current_comm().unwrap_or([0; 16]) } else { [0; 16] },
    };
    let len = core::mem::size_of::<PayloadHeader>() + bounded_capture(captured) as usize;
    // SAFETY: `len` is within the record, which is plain data.
    let bytes = unsafe { core::slice::from_raw_parts((record as *const agent_common::net::PayloadRecord).cast::<u8>(), len) };
    if NET_EVENTS.output::<[u8]>(bytes, wake_flags(len)).is_err() {
        count(Counter::NetRingFull);
    } else {
        count(Counter::PayloadsSent);
    }
}

/// Copies the first `available.min(limit)` bytes at user address `data` into `record`;
/// the count copied (in [1, `CAPTURE_BYTES`]), or `None` (a failed read counted).
#[inline(always)]
fn copy_user(record: &mut agent_common::net::PayloadRecord, data: u64, available: u64, limit: usize) -> Option<u32> {
    // `available` is not 0 here (a syscall that moved nothing returned earlier, and empty
    // iovecs are skipped), but should it be, nothing is copied: `- 1` must not wrap to 8 KiB.
    let last = (available.min(limit as u64) as u32).checked_sub(1)?;
    // In [1, CAPTURE_BYTES], in a form the verifier can bound.
    let captured = (last & (CAPTURE_BYTES as u32 - 1)) + 1;
    // SAFETY: `captured` bytes fit in `data`; the source is a user pointer checked by the helper.
    if unsafe { read_user_bounded(record.data.as_mut_ptr(), captured, data) } != 0 {
        count(Counter::NetUserReadFailed);
        return None;
    }
    Some(captured)
}

/// `len` (in [1, `CAPTURE_BYTES`]) bounded again where it is used: a bound computed earlier
/// may be spilled to the stack and read back, and Linux 6.1's verifier loses it on the way
/// ("R2 min value is negative"). The volatile read keeps the masking next to its use.
#[inline(always)]
fn bounded_capture(len: u32) -> u32 {
    // SAFETY: a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    (len.wrapping_sub(1) & (CAPTURE_BYTES as u32 - 1)) + 1
}

/// `bpf_probe_read_user` of `len` bytes (in [1, `CAPTURE_BYTES`]) into `dst`.
///
/// # Safety
///
/// `dst` must have room for `CAPTURE_BYTES`.
#[inline(always)]
unsafe fn read_user_bounded(dst: *mut u8, len: u32, src: u64) -> i64 {
    // SAFETY: as the caller promises; the source is a user pointer checked by the helper.
    unsafe { generated::bpf_probe_read_user(dst.cast(), bounded_capture(len), src as *const _) }
}

/// The first of the `len` iovecs at `iovecs` that has room (base, length): empty ones take
/// no bytes, so the syscall's data starts there. `None` if the first [`MAX_IOVECS`] are all
/// empty, or cannot be read (counted).
///
/// Unrolled by hand: a loop bounded by a count from user space is more than Linux 6.1's
/// verifier can follow ("the sequence of 8193 jumps is too complex").
#[inline(always)]
fn first_iovec_with_room(iovecs: u64, len: u32) -> Option<[u64; 2]> {
    // One step per iovec, each stopping the search or going on to the next.
    macro_rules! look_at {
        ($index:expr) => {
            match iovec_if_room(iovecs, len, $index) {
                Iovec::Room(iov) => return Some(iov),
                Iovec::None => return None,
                Iovec::Empty => {}
            }
        };
    }
    const _: () = assert!(MAX_IOVECS == 4, "one look_at! per iovec");
    look_at!(0);
    look_at!(1);
    look_at!(2);
    look_at!(3);
    None
}

/// What iovec `index` of an array of `len` is.
enum Iovec {
    /// It has room: (base, length).
    Room([u64; 2]),
    /// It is empty: look at the next.
    Empty,
    /// There is none, or it cannot be read (counted).
    None,
}

#[inline(always)]
fn iovec_if_room(iovecs: u64, len: u32, index: u32) -> Iovec {
    if index >= len {
        return Iovec::None;
    }
    // SAFETY: a user pointer; a bad one is an error, not a fault.
    match unsafe { bpf_probe_read_user((iovecs + IOVEC_BYTES * index as u64) as *const [u64; 2]) } {
        Ok(iov) if iov[1] != 0 => Iovec::Room(iov),
        Ok(_) => Iovec::Empty,
        Err(_) => {
            count(Counter::NetUserReadFailed);
            Iovec::None
        }
    }
}
