//! Starting and stopping connection tracking: `accept`/`accept4` and `connect` exits add a
//! connection, `close` removes it.

use agent_common::{
    counters::Counter,
    net::{protocol, role, Connection, NetConfig, PendingIo, SocketOwner, TcpOpenEvent},
    records::RecordKind,
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use agent_common::tracepoints::SYSCALL_ARG0 as ARG0;

use super::{check_insert, config, connection_key, field, send, socket, traced, CONNECTIONS, NOT_SOCKETS, PENDING_IO, SOCKETS};
use crate::maps::count;

/// `EINPROGRESS`: a non-blocking `connect` that has sent its SYN.
const EINPROGRESS: i64 = 115;

/// `syscalls:sys_exit_accept` and `sys_exit_accept4`: the returned descriptor is a new
/// server-side connection.
#[tracepoint]
pub fn oxeye_accept_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let ret: i64 = unsafe { field(&ctx, ARG0) };
    if ret >= 0 {
        track(ret as u32, role::SERVER);
    }
    0
}

/// `syscalls:sys_enter_connect`: remembers the descriptor for the exit.
#[tracepoint]
pub fn oxeye_connect_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced(&config(), (pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: the first argument of connect(2) is the descriptor.
    let fd: u64 = unsafe { field(&ctx, ARG0) };
    let pending =
        PendingIo { fd: fd as u32, direction: PendingIo::CONNECT, buf: 0, vectored: 0, requested: 0, entered_ns: 0, iovecs: 0, reserved: 0 };
    check_insert(PENDING_IO.insert(pid_tgid, pending, 0));
    0
}

/// `syscalls:sys_exit_connect`: a connect that succeeded or is under way is a new
/// client-side connection.
#[tracepoint]
pub fn oxeye_connect_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_IO.get_ptr(pid_tgid) else { return 0 };
    // SAFETY: a valid map value pointer; copied before the entry is removed.
    let pending = unsafe { *pending };
    let _ = PENDING_IO.remove(pid_tgid);
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let ret: i64 = unsafe { field(&ctx, ARG0) };
    if pending.direction == PendingIo::CONNECT && (ret == 0 || ret == -EINPROGRESS) {
        track(pending.fd, role::CLIENT);
    }
    0
}

/// `syscalls:sys_enter_close`: the descriptor no longer names the connection.
#[tracepoint]
pub fn oxeye_close_enter(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !traced(&config(), tgid) {
        return 0;
    }
    // SAFETY: the first argument of close(2) is the descriptor.
    let fd: u64 = unsafe { field(&ctx, ARG0) };
    let key = connection_key(tgid, fd as u32);
    let _ = CONNECTIONS.remove(key);
    let _ = NOT_SOCKETS.remove(key);
    0
}

/// Starts tracking descriptor `fd` of process `tgid` on its first payload, if it is a TCP
/// socket that was open before oxeye started (or reached the process some other way, such as
/// `SCM_RIGHTS`). Returns whether it is tracked now. Descriptors that are not TCP sockets are
/// remembered in `NOT_SOCKETS`, so the file table is walked once per descriptor.
#[inline(always)]
pub fn discover(config: &NetConfig, tgid: u32, fd: u32) -> bool {
    let key = connection_key(tgid, fd);
    // SAFETY: only presence is checked.
    if unsafe { NOT_SOCKETS.get(key) }.is_some() {
        return false;
    }
    let found = socket::tcp_sock_of_fd(&config.offsets, fd).and_then(|sock| Some((sock, socket::addrs(&config.offsets, sock)?)));
    let Some((sock, addrs)) = found else {
        check_insert(NOT_SOCKETS.insert(key, 0, 0));
        return false;
    };
    // A socket another process opened under oxeye (a server that accepts, then forks a child
    // per connection) keeps its role and open time; one open before oxeye started has neither
    // (open time 0: no duration is reported for it).
    // SAFETY: the value is copied out at once.
    let (role, opened_ns) = unsafe { SOCKETS.get(&sock) }.map_or((role::UNKNOWN, 0), |owner| (owner.role, owner.opened_ns));
    let connection = Connection { sock, addrs, role, protocol: protocol::UNKNOWN, continues: 0, misses: 0 };
    check_insert(CONNECTIONS.insert(key, connection, 0));
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    check_insert(SOCKETS.insert(sock, SocketOwner { pid: tgid, role, opened_ns, comm, addrs }, 0));
    true
}

/// Starts tracking descriptor `fd` of the current process if it is a TCP socket.
#[inline(always)]
fn track(fd: u32, role: u32) {
    let config = config();
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !traced(&config, tgid) {
        return;
    }
    let Some(sock) = socket::tcp_sock_of_fd(&config.offsets, fd) else { return };
    let Some(addrs) = socket::addrs(&config.offsets, sock) else {
        count(Counter::SocketReadFailed);
        return;
    };
    let connection = Connection { sock, addrs, role, protocol: protocol::UNKNOWN, continues: 0, misses: 0 };
    let key = connection_key(tgid, fd);
    check_insert(CONNECTIONS.insert(key, connection, 0));
    let _ = NOT_SOCKETS.remove(key);
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    check_insert(SOCKETS.insert(sock, SocketOwner { pid: tgid, role, opened_ns: now, comm, addrs }, 0));
    send(&TcpOpenEvent { kind: RecordKind::TcpOpen as u32, pid: tgid, timestamp_ns: now, sock, addrs, role, fd, comm });
}
