//! Reading sockets from kernel memory, at offsets user space resolved from kernel BTF.

use agent_common::{
    counters::Counter,
    net::{family, KernelOffsets, SocketAddrs},
};

use crate::{
    fd_table::{self, ReadFailed},
    maps::count,
};

/// `SOCK_STREAM` in `struct socket.type`.
const SOCK_STREAM: u16 = 1;

/// Reads a `T` at `base + offset` in kernel memory; a failure is counted.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    fd_table::read(base, offset).map_err(|ReadFailed| count(Counter::NetKernelReadFailed)).ok()
}

/// The `struct sock` behind file descriptor `fd` of the current process, if it is a TCP
/// socket: `current->files->fdt->fd[fd]->private_data->sk`.
#[inline(always)]
pub fn tcp_sock_of_fd(offsets: &KernelOffsets, fd: u32) -> Option<u64> {
    let file = match fd_table::file_of_fd(fd, &offsets.fd_table) {
        Ok(Some(file)) => file,
        Ok(None) => return None, // not an open descriptor: nothing failed
        Err(ReadFailed) => {
            count(Counter::NetKernelReadFailed);
            return None;
        }
    };
    let socket: u64 = read(file, offsets.file_private_data)?;
    if socket == 0 {
        return None; // a file with no private data (most regular files): not a socket
    }
    let kind: u16 = read(socket, offsets.socket_type)?;
    if kind != SOCK_STREAM {
        return None;
    }
    let sock: u64 = read(socket, offsets.socket_sk)?;
    if sock == 0 {
        return None;
    }
    Some(sock)
}

/// The addresses of `sock`, if it is IPv4 or IPv6.
#[inline(always)]
pub fn addrs(offsets: &KernelOffsets, sock: u64) -> Option<SocketAddrs> {
    let sock_family: u16 = read(sock, offsets.sk_family)?;
    let local_port: u16 = read(sock, offsets.sk_num)?;
    let remote_port: u16 = read(sock, offsets.sk_dport)?;
    let mut addrs = SocketAddrs { family: sock_family, local_port, remote_port: u16::from_be(remote_port), ..SocketAddrs::default() };
    if sock_family == family::INET {
        let local: [u8; 4] = read(sock, offsets.sk_rcv_saddr)?;
        let remote: [u8; 4] = read(sock, offsets.sk_daddr)?;
        addrs.local[..4].copy_from_slice(&local);
        addrs.remote[..4].copy_from_slice(&remote);
    } else if sock_family == family::INET6 {
        // Zero offsets: the kernel has no IPv6 (the fields are left zero).
        if offsets.sk_v6_daddr != 0 {
            addrs.local = read(sock, offsets.sk_v6_rcv_saddr)?;
            addrs.remote = read(sock, offsets.sk_v6_daddr)?;
        }
    } else {
        return None;
    }
    Some(addrs)
}
