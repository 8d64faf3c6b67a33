//! TCP connection and HTTP payload tracing: the records the network programs send through the
//! `NET_EVENTS` ring buffer, the per-connection state they keep, and their configuration.
//!
//! Connections are tracked from the `accept`/`accept4`/`connect` syscalls that create them
//! (keyed by process and file descriptor) until `close`; their TCP statistics are read from
//! the kernel's `tcp_sock` when `tcp_set_state` moves them to `TCP_CLOSE` (seen by fentry, a
//! kprobe, or the `sock:inet_sock_set_state` tracepoint, whichever the kernel has).

/// Most payload bytes copied per `read`/`write`-like syscall that starts with a request: room
/// for a pipelined burst of short requests. A power of two, so a length can be masked into
/// range for the verifier. Only the bytes the syscall moved are copied and sent.
pub const CAPTURE_BYTES: usize = 8192;
const _: () = assert!(CAPTURE_BYTES.is_power_of_two());

/// Most bytes copied of a payload that starts with a response: status lines and headers
/// (the body is not needed, and often follows in the same buffer).
pub const RESPONSE_CAPTURE_BYTES: usize = 1024;

/// Bytes looked at to decide whether a payload is HTTP before copying it.
pub const PREFIX_BYTES: usize = 8;

/// Who opened a connection.
pub mod role {
    /// Not known: the connection was open before oxeye started, and was found on its first
    /// payload.
    pub const UNKNOWN: u32 = 0;
    /// Accepted from a listening socket.
    pub const SERVER: u32 = 1;
    /// Opened with `connect`.
    pub const CLIENT: u32 = 2;
}

/// What the first payload of a connection said it carries.
pub mod protocol {
    /// No payload seen yet.
    pub const UNKNOWN: u32 = 0;
    /// The first payload was an HTTP/1.x request or response.
    pub const HTTP: u32 = 1;
    /// Something else: later payloads are not copied.
    pub const OTHER: u32 = 2;
}

/// Which way a payload went, seen from the process.
pub mod direction {
    /// Received: `read`, `recvfrom`, `readv`, `recvmsg`.
    pub const INGRESS: u32 = 0;
    /// Sent: `write`, `sendto`, `writev`, `sendmsg`.
    pub const EGRESS: u32 = 1;
}

/// Address families, as in `<sys/socket.h>`.
pub mod family {
    /// IPv4.
    pub const INET: u16 = 2;
    /// IPv6.
    pub const INET6: u16 = 10;
}

/// The two ends of a TCP connection, seen from the process that owns it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketAddrs {
    /// [`family::INET`] or [`family::INET6`].
    pub family: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// Padding.
    pub reserved: u16,
    /// Local address: IPv4 in the first 4 bytes, or IPv6 (network byte order).
    pub local: [u8; 16],
    /// Remote address, as `local`.
    pub remote: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SocketAddrs>() == 40);

/// A tracked connection, in `CONNECTIONS` under `(tgid << 32) | fd`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// The kernel's `struct sock` address: identifies the connection to user space.
    pub sock: u64,
    /// Its addresses.
    pub addrs: SocketAddrs,
    /// A [`role`].
    pub role: u32,
    /// A [`protocol`], learnt from the first payload.
    pub protocol: u32,
    /// 1 when the last receive filled the process's buffer and was HTTP: the next receive
    /// continues it (a server reading a pipelined burst 1 KiB at a time), so it is copied
    /// whatever it starts with.
    pub continues: u32,
    /// For a connection found mid-stream ([`role::UNKNOWN`]): payloads seen that were not
    /// HTTP. Its first payload may be the middle of a body, so it is only given up on after
    /// [`Connection::DISCOVERED_TRIES`] of them.
    pub misses: u32,
}

impl Connection {
    /// Non-HTTP payloads after which a connection found mid-stream is marked not HTTP.
    pub const DISCOVERED_TRIES: u32 = 16;
}
const _: () = assert!(core::mem::size_of::<Connection>() == 64);

/// Who owns a socket, in `SOCKETS` under the `struct sock` address, for its close report
/// (which may run in softirq context, where the current task is unrelated, and after the
/// kernel has released the local port).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketOwner {
    /// Process id.
    pub pid: u32,
    /// A [`role`].
    pub role: u32,
    /// `bpf_ktime_get_ns()` when accepted or connected.
    pub opened_ns: u64,
    /// The owner's `comm`.
    pub comm: [u8; 16],
    /// The addresses when accepted or connected.
    pub addrs: SocketAddrs,
}
const _: () = assert!(core::mem::size_of::<SocketOwner>() == 72);

/// A syscall in progress on a tracked socket, in `PENDING_IO` under its `pid_tgid`, from its
/// entry to its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingIo {
    /// The file descriptor.
    pub fd: u32,
    /// A [`direction`].
    pub direction: u32,
    /// The user buffer, or the `struct iovec` array when `vectored` is 1.
    pub buf: u64,
    /// 1 when `buf` points to `struct iovec`s (readv/writev/sendmsg/recvmsg).
    pub vectored: u32,
    /// Bytes the process asked for (plain buffers; capped at `u32::MAX`; 0 when unknown).
    pub requested: u32,
    /// `bpf_ktime_get_ns()` at entry.
    pub entered_ns: u64,
    /// Number of iovecs at `buf` when `vectored` is 1 (capped at `u32::MAX`).
    pub iovecs: u32,
    /// Padding.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<PendingIo>() == 40);

/// A connection accepted or connected ([`crate::records::RecordKind::TcpOpen`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpOpenEvent {
    /// [`crate::records::RecordKind::TcpOpen`] as `u32`.
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// `bpf_ktime_get_ns()`.
    pub timestamp_ns: u64,
    /// The `struct sock` address.
    pub sock: u64,
    /// Addresses.
    pub addrs: SocketAddrs,
    /// A [`role`].
    pub role: u32,
    /// The file descriptor.
    pub fd: u32,
    /// The process's `comm`.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<TcpOpenEvent>() == 88);

/// A tracked connection reached `TCP_CLOSE` ([`crate::records::RecordKind::TcpClose`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpCloseEvent {
    /// [`crate::records::RecordKind::TcpClose`] as `u32`.
    pub kind: u32,
    /// Process id of the owner.
    pub pid: u32,
    /// When it was accepted or connected.
    pub opened_ns: u64,
    /// When it closed.
    pub closed_ns: u64,
    /// The `struct sock` address.
    pub sock: u64,
    /// Addresses.
    pub addrs: SocketAddrs,
    /// A [`role`].
    pub role: u32,
    /// Retransmitted segments (`tcp_sock.total_retrans`).
    pub retransmits: u32,
    /// Payload bytes sent, retransmissions not counted (`tcp_sock.bytes_sent -
    /// bytes_retrans`).
    pub bytes_sent: u64,
    /// Payload bytes received (`tcp_sock.bytes_received`, less the peer's FIN, which the
    /// kernel counts as a byte).
    pub bytes_received: u64,
    /// Smoothed round-trip time in microseconds (`tcp_sock.srtt_us >> 3`); 0 if unknown.
    pub srtt_us: u32,
    /// Padding.
    pub reserved: u32,
    /// The owner's `comm`.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<TcpCloseEvent>() == 120);

/// The fixed part of a payload record ([`crate::records::RecordKind::Payload`]); `captured`
/// bytes of data follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadHeader {
    /// [`crate::records::RecordKind::Payload`] as `u32`.
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// The file descriptor.
    pub fd: u32,
    /// A [`direction`].
    pub direction: u32,
    /// The `struct sock` address.
    pub sock: u64,
    /// For a send, when the syscall started; for a receive, when it returned (the data
    /// became the process's).
    pub timestamp_ns: u64,
    /// Bytes the syscall moved.
    pub size: u64,
    /// Bytes copied after this header (at most [`CAPTURE_BYTES`]).
    pub captured: u32,
    /// A [`role`] of the connection.
    pub role: u32,
    /// Addresses.
    pub addrs: SocketAddrs,
    /// [`PayloadHeader::CONTINUATION`], [`PayloadHeader::OFF_CPU_EVENTS`].
    pub flags: u32,
    /// A server's response: CPU samples taken on the sending thread while it served the
    /// request (see [`ServingRequest`]); 0 otherwise, or when that is unknown.
    pub cpu_samples: u32,
    /// The task's `comm`, in a connection's first HTTP record only (zeros after): names a
    /// process that is gone by the time user space looks in `/proc` (a server forking a child
    /// per connection).
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PayloadHeader>() == 112);

impl PayloadHeader {
    /// The data continues the previous receive on the connection (which filled its buffer).
    pub const CONTINUATION: u32 = 1;
    /// A server's response: the off-CPU sampler recorded the thread switched out while it
    /// served the request (its events link to the span, as samples do).
    pub const OFF_CPU_EVENTS: u32 = 2;
}

/// A payload record as the BPF side builds it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PayloadRecord {
    /// The header.
    pub header: PayloadHeader,
    /// The first bytes of the payload.
    pub data: [u8; CAPTURE_BYTES],
}

/// Byte offsets of the kernel structure members the network programs read, from kernel BTF.
///
/// oxeye does not use CO-RE: user space resolves these with its own BTF reader and passes
/// them in as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// The way from a task to its open files.
    pub fd_table: crate::files::FdTableOffsets,
    /// `file.private_data`.
    pub file_private_data: u32,
    /// `socket.type`.
    pub socket_type: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`.
    pub sk_family: u32,
    /// `sock.__sk_common.skc_num` (local port, host order).
    pub sk_num: u32,
    /// `sock.__sk_common.skc_dport` (remote port, network order).
    pub sk_dport: u32,
    /// `sock.__sk_common.skc_rcv_saddr`.
    pub sk_rcv_saddr: u32,
    /// `sock.__sk_common.skc_daddr`.
    pub sk_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr`.
    pub sk_v6_rcv_saddr: u32,
    /// `sock.__sk_common.skc_v6_daddr`.
    pub sk_v6_daddr: u32,
    /// `tcp_sock.bytes_received`.
    pub tcp_bytes_received: u32,
    /// `tcp_sock.bytes_sent`.
    pub tcp_bytes_sent: u32,
    /// `tcp_sock.bytes_retrans`.
    pub tcp_bytes_retrans: u32,
    /// `tcp_sock.total_retrans`.
    pub tcp_total_retrans: u32,
    /// `tcp_sock.srtt_us`.
    pub tcp_srtt_us: u32,
    /// `sock.__sk_common.skc_flags` (`SOCK_DONE`: the peer's FIN was processed).
    pub sk_flags: u32,
    /// Padding.
    pub reserved: u32,
}

/// Configuration of the network programs, a read-only global set at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetConfig {
    /// 1 to trace connections and payloads.
    pub enabled: u32,
    /// Only this process (0: all).
    pub target_pid: u32,
    /// oxeye's own process id: its own connections are not traced.
    pub self_pid: u32,
    /// Bytes a CPU writes to `NET_EVENTS` between two wake-ups of the reader; below it, the
    /// reader drains on its timer (a wake-up per record would cost more than the record).
    pub wake_bytes: u32,
    /// This architecture's numbers of the syscalls the socket-tracepoint programs trace, at
    /// the indexes in [`syscall_slot`] (`u32::MAX` where there is none).
    pub syscalls: [u32; syscall_slot::COUNT],
    /// Kernel structure offsets.
    pub offsets: KernelOffsets,
}

/// Where the BPF programs find a syscall's number and first three arguments in the kernel's
/// `struct pt_regs`, on the architecture they were built for. Constant offsets let them load
/// straight from the `pt_regs` pointer the kernel hands out (a checked load, no helper call);
/// user space checks them against the kernel's BTF before it enables network tracing.
pub mod syscall_regs {
    /// A layout: byte offsets of the arguments as a syscall's exit finds them, and of its
    /// number, `NUMBER_BYTES` wide.
    pub struct Layout {
        /// The first three arguments (`u64` each).
        pub args: [usize; 3],
        /// The number the thread made the syscall with.
        pub number: usize,
        /// Its width: 8 (`orig_ax`) or 4 (`syscallno`).
        pub number_bytes: usize,
        /// The BTF members these are, for the check: (member, bytes into it) per argument,
        /// then the number's.
        pub members: [(&'static str, usize); 4],
    }

    /// x86-64: `di`, `si`, `dx` (never changed on exit), and `orig_ax`.
    #[cfg(any(target_arch = "x86_64", bpf_target_arch = "x86_64"))]
    pub const LAYOUT: Option<Layout> =
        Some(Layout { args: [14 * 8, 13 * 8, 12 * 8], number: 15 * 8, number_bytes: 8, members: [("di", 0), ("si", 0), ("dx", 0), ("orig_ax", 0)] });

    /// arm64: `orig_x0` (at a syscall's exit `x0` holds the return value), `x1`, `x2`, and
    /// `syscallno` (an `int`), after `regs[31] sp pc pstate`.
    #[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
    pub const LAYOUT: Option<Layout> =
        Some(Layout { args: [34 * 8, 8, 2 * 8], number: 35 * 8, number_bytes: 4, members: [("orig_x0", 0), ("regs", 8), ("regs", 16), ("syscallno", 0)] });

    /// Elsewhere there is no network tracing.
    #[cfg(not(any(target_arch = "x86_64", bpf_target_arch = "x86_64", target_arch = "aarch64", bpf_target_arch = "aarch64")))]
    pub const LAYOUT: Option<Layout> = None;
}

/// Indexes into [`NetConfig::syscalls`]: the syscalls whose data the socket-tracepoint
/// programs copy, found by the number the thread made its syscall with (user space fills in
/// this architecture's numbers).
pub mod syscall_slot {
    /// `read`.
    pub const READ: usize = 0;
    /// `recvfrom`.
    pub const RECVFROM: usize = 1;
    /// `readv`.
    pub const READV: usize = 2;
    /// `recvmsg`.
    pub const RECVMSG: usize = 3;
    /// `write`.
    pub const WRITE: usize = 4;
    /// `sendto`.
    pub const SENDTO: usize = 5;
    /// `writev`.
    pub const WRITEV: usize = 6;
    /// `sendmsg`.
    pub const SENDMSG: usize = 7;
    /// Slots.
    pub const COUNT: usize = 8;
}

/// When a thread's send on a TCP socket started, in `SEND_STARTS` under its `pid_tgid`
/// (socket-tracepoint programs only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SendStart {
    /// The `struct sock` being sent on.
    pub sock: u64,
    /// `bpf_ktime_get_ns()` when the send reached TCP; 0 once its end has used it.
    pub entered_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SendStart>() == 16);

/// The request a thread is serving, in `SERVING_REQUESTS` under its `pid_tgid`: from a
/// server's receive of a request's first bytes to its send of the response, on that thread.
/// The CPU sampler copies `(sock, started_ns)` into the samples it takes meanwhile, which user
/// space matches to the request's span.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ServingRequest {
    /// The connection's `struct sock`; 0 when the thread serves none.
    pub sock: u64,
    /// The request record's `timestamp_ns`, which user space keys its exchange by.
    pub started_ns: u64,
    /// CPU samples taken on the thread since.
    pub samples: u32,
    /// [`ServingRequest::AMBIGUOUS`], [`ServingRequest::OFF_CPU_EVENTS`].
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<ServingRequest>() == 24);

impl ServingRequest {
    /// The thread received a second request before answering the first (an event loop
    /// interleaving connections, or pipelining): its samples are linked to neither, until
    /// its next response ends both.
    pub const AMBIGUOUS: u32 = 1;
    /// The off-CPU sampler recorded the thread switched out in the request.
    pub const OFF_CPU_EVENTS: u32 = 2;
}

impl KernelOffsets {
    /// All offsets zero (nothing resolved).
    pub const ZERO: KernelOffsets = KernelOffsets {
        fd_table: crate::files::FdTableOffsets::ZERO,
        file_private_data: 0,
        socket_type: 0,
        socket_sk: 0,
        sk_family: 0,
        sk_num: 0,
        sk_dport: 0,
        sk_rcv_saddr: 0,
        sk_daddr: 0,
        sk_v6_rcv_saddr: 0,
        sk_v6_daddr: 0,
        tcp_bytes_received: 0,
        tcp_bytes_sent: 0,
        tcp_bytes_retrans: 0,
        tcp_total_retrans: 0,
        tcp_srtt_us: 0,
        sk_flags: 0,
        reserved: 0,
    };
}

impl NetConfig {
    /// Network tracing off.
    pub const DISABLED: NetConfig = NetConfig { enabled: 0, target_pid: 0, self_pid: 0, wake_bytes: 0, syscalls: [u32::MAX; syscall_slot::COUNT], offsets: KernelOffsets::ZERO };
}

crate::impl_pod!(SocketAddrs, Connection, SocketOwner, PendingIo, SendStart, ServingRequest, TcpOpenEvent, TcpCloseEvent, PayloadHeader, KernelOffsets, NetConfig);

/// The request methods oxeye recognises, as they appear on a request line: the nine that
/// RFC 9110 and RFC 5789 define. The BPF filter ([`is_http_prefix`]) and user space's
/// request-line parser both read this list, so they cannot disagree on what a request is.
pub const HTTP_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Each method and the space after it as a little-endian word, with the mask of its bytes: a
/// request prefix is one masked compare per method, which BPF does cheaply.
const REQUEST_WORDS: [(u64, u64); HTTP_METHODS.len()] = request_words();

/// `HTTP/1.` as a word and its mask, for status lines.
const STATUS_WORD: (u64, u64) = (u64::from_le_bytes(*b"HTTP/1.\0"), 0x00ff_ffff_ffff_ffff);

/// [`REQUEST_WORDS`], worked out at compile time.
const fn request_words() -> [(u64, u64); HTTP_METHODS.len()] {
    let mut words = [(0, 0); HTTP_METHODS.len()];
    let mut i = 0;
    while i < HTTP_METHODS.len() {
        let token = HTTP_METHODS[i].as_bytes();
        assert!(token.len() < PREFIX_BYTES, "a method and its space must fit in the prefix");
        let mut word = (b' ' as u64) << (8 * token.len());
        let mut mask = 0xff << (8 * token.len());
        let mut at = 0;
        while at < token.len() {
            word |= (token[at] as u64) << (8 * at);
            mask |= 0xff << (8 * at);
            at += 1;
        }
        words[i] = (word, mask);
        i += 1;
    }
    words
}

/// True when `prefix` starts like an HTTP/1.x status line.
#[inline(always)]
pub fn is_response_prefix(prefix: &[u8; PREFIX_BYTES]) -> bool {
    prefix[0] == b'H' && prefix[1] == b'T' && prefix[2] == b'T' && prefix[3] == b'P' && prefix[4] == b'/'
}

/// True when `prefix` starts like an HTTP/1.x request line (one of [`HTTP_METHODS`] and a
/// space) or a status line (`HTTP/1.`).
#[inline(always)]
pub fn is_http_prefix(prefix: &[u8; PREFIX_BYTES]) -> bool {
    let word = u64::from_le_bytes(*prefix);
    let matches = |(expected, mask): (u64, u64)| word & mask == expected;
    // A fold without early exit, which the compiler unrolls into straight-line compares.
    REQUEST_WORDS.into_iter().fold(matches(STATUS_WORD), |hit, words| hit | matches(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &[u8]) -> [u8; PREFIX_BYTES] {
        let mut p = [0; PREFIX_BYTES];
        p[..s.len().min(PREFIX_BYTES)].copy_from_slice(&s[..s.len().min(PREFIX_BYTES)]);
        p
    }

    #[test]
    fn http_prefixes_are_recognised() {
        for yes in [&b"GET / HTTP/1.1"[..], b"POST /x", b"HEAD / H", b"DELETE /", b"PATCH /a", b"OPTIONS ", b"CONNECT ", b"TRACE / ", b"HTTP/1.1 200", b"HTTP/1.0 404"] {
            assert!(is_http_prefix(&prefix(yes)), "{}", core::str::from_utf8(yes).unwrap_or("?"));
        }
        for no in [&b"\x16\x03\x01\x02\x00\x01"[..], b"GETX / H", b"POSTS /", b"HTTP/2.0", b"get / HT", b"", b"DELETED ", b"OPTIONSX", b"PATCHY /"] {
            assert!(!is_http_prefix(&prefix(no)), "{}", core::str::from_utf8(no).unwrap_or("?"));
        }
    }
}
