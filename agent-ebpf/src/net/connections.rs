//! Starting and stopping connection tracking: `accept`/`accept4` and `connect` exits add a
//! connection, `close` removes it.

use agent_common::{
    counters::Counter,
    net::{protocol, role, Connection, NetConfig, SocketOwner, TcpOpenEvent},
    records::RecordKind,
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use agent_common::tracepoints::SYSCALL_ARG0 as ARG0;

use super::{check_insert, config, connection_key, field, regs::SavedRegs, send, socket, traced, CONNECTIONS, NOT_SOCKETS, SOCKETS};
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

/// `syscalls:sys_exit_connect`: a connect that succeeded or is under way is a new
/// client-side connection. Its descriptor is still in the thread's saved registers, so the
/// entry needs no program and no map entry of its own.
#[tracepoint]
pub fn oxeye_connect_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let ret: i64 = unsafe { field(&ctx, ARG0) };
    if ret == 0 || ret == -EINPROGRESS {
        let [fd, _, _] = SavedRegs::current().syscall_args();
        track(fd as u32, role::CLIENT);
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
    // Looked up first: a lookup takes no lock, a delete does, and most closes are of
    // descriptors in neither map (files, pipes, untracked sockets).
    if CONNECTIONS.get_ptr(key).is_some() {
        let _ = CONNECTIONS.remove(key);
    }
    forget_not_socket(key);
    0
}

/// Removes `key` from `NOT_SOCKETS` if it is there (its descriptor was closed or is a socket
/// now).
#[inline(always)]
fn forget_not_socket(key: u64) {
    // SAFETY: only presence is checked.
    if unsafe { NOT_SOCKETS.get(key) }.is_some() {
        let _ = NOT_SOCKETS.remove(key);
    }
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
    let key = connection_key(tgid, fd);
    // A non-blocking connect called again returns 0 once the handshake is done: the same
    // connection, already tracked and counted.
    if let Some(tracked) = CONNECTIONS.get_ptr(key) {
        // SAFETY: a valid map value pointer.
        if unsafe { (*tracked).sock } == sock {
            return;
        }
    }
    let Some(addrs) = socket::addrs(&config.offsets, sock) else {
        count(Counter::SocketReadFailed);
        return;
    };
    let connection = Connection { sock, addrs, role, protocol: protocol::UNKNOWN, continues: 0, misses: 0 };
    check_insert(CONNECTIONS.insert(key, connection, 0));
    forget_not_socket(key);
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    check_insert(SOCKETS.insert(sock, SocketOwner { pid: tgid, role, opened_ns: now, comm, addrs }, 0));
    send(&TcpOpenEvent { kind: RecordKind::TcpOpen as u32, pid: tgid, timestamp_ns: now, sock, addrs, role, fd, comm });
}
