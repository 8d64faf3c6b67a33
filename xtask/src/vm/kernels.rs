//! The kernel matrix: every kernel `cargo xtask vm-test` proves oxeye on, in one table.
//! Adding a kernel is one line in [`KERNELS`].

use std::path::Path;

use super::arch::Arch;

/// Where a kernel comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A Debian package, named by its metapackage (`linux-image-arm64` resolves to the
    /// current `linux-image-6.1.0-NN-arm64` of this Debian release), downloaded and cached.
    Debian { metapackage: &'static str, version_prefix: &'static str },
    /// The running kernel: the scenarios run directly on this machine, as the normal tests do.
    Host,
}

/// The hook oxeye must choose for TCP state changes on a kernel.
#[derive(Debug, Clone, Copy)]
pub enum TcpStateHook {
    /// Exactly this one (the value of `tcp_state=` in the `hooks chosen` log line).
    Exactly(&'static str),
    /// Whatever the running kernel's own configuration says (the host row; see [`host_tcp_state_hook`]).
    FromRunningKernel,
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// Short name, used for reports and the results directory.
    pub name: &'static str,
    /// The CPU architecture it runs on.
    pub arch: Arch,
    /// Where it comes from.
    pub source: Source,
    /// The hook oxeye must pick for TCP state changes there.
    pub tcp_state_hook: TcpStateHook,
    /// The payload hooks oxeye must pick there (`payloads=`); `None` on the host, whose
    /// choice the `payload_iovec` test checks.
    pub payload_hooks: Option<&'static str>,
    /// Whether user return addresses come out signed there (arm64 with pointer
    /// authentication), so the signed-chain scenarios must pass rather than be skipped.
    pub signs_return_addresses: bool,
}

/// fentry on `tcp_set_state`: kernels with BPF trampolines.
pub const FENTRY: &str = "fentry:tcp_set_state";
/// kprobe on `tcp_set_state`: kernels with kprobes but no trampolines (arm64 before 6.4).
pub const KPROBE: &str = "kprobe:tcp_set_state";
/// The `sock:inet_sock_set_state` tracepoint: kernels with neither.
pub const TRACEPOINT: &str = "tracepoint:sock/inet_sock_set_state";

/// Payloads from the syscall tracepoints: kernels before 6.3 (no `sock:sock_recv_length`).
pub const SYSCALL_PAYLOADS: &str = "tracepoint:syscalls";
/// Payloads from the socket tracepoints, sends stamped by fentry on `tcp_sendmsg`: 6.3 to
/// 6.12 with BPF trampolines (no `tcp:tcp_sendmsg_locked` before 6.13).
pub const SOCKET_PAYLOADS_FENTRY: &str = "tp_btf:sock_recv_length,sock_send_length+fentry:tcp_sendmsg";

/// The matrix.
///
/// - Debian 6.1 arm64: fentry programs load but cannot attach (no
///   `DYNAMIC_FTRACE_WITH_DIRECT_CALLS` on arm64 before 6.4: ENOTSUPP); kprobes exist.
/// - Debian 6.12 arm64 (Debian 12's newer kernel): BPF trampolines on arm64 (since 6.4), so
///   fentry attaches. Also with 16 KiB pages, as on some arm64 servers: mappings, biases and
///   the unwind tables' page arithmetic differ.
/// - Debian 6.1 x86_64: fentry and kprobes exist.
/// - Payloads: 6.1 has no socket tracepoints (syscall tracepoints); 6.12 has them but not
///   `tcp:tcp_sendmsg_locked`, so sends are stamped by fentry on `tcp_sendmsg`.
/// - The host: this project's machines have neither (`CONFIG_KPROBES` unset, fentry EPERM).
pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "debian-6.1-arm64",
        arch: Arch::Aarch64,
        source: Source::Debian { metapackage: "linux-image-arm64", version_prefix: "6.1." },
        tcp_state_hook: TcpStateHook::Exactly(KPROBE),
        payload_hooks: Some(SYSCALL_PAYLOADS),
        signs_return_addresses: true,
    },
    Kernel {
        name: "debian-6.12-arm64",
        arch: Arch::Aarch64,
        source: Source::Debian { metapackage: "linux-image-6.12-arm64", version_prefix: "6.12." },
        tcp_state_hook: TcpStateHook::Exactly(FENTRY),
        payload_hooks: Some(SOCKET_PAYLOADS_FENTRY),
        signs_return_addresses: true,
    },
    Kernel {
        name: "debian-6.12-arm64-16k",
        arch: Arch::Aarch64,
        source: Source::Debian { metapackage: "linux-image-6.12-arm64-16k", version_prefix: "6.12." },
        tcp_state_hook: TcpStateHook::Exactly(FENTRY),
        payload_hooks: Some(SOCKET_PAYLOADS_FENTRY),
        signs_return_addresses: true,
    },
    Kernel {
        name: "debian-6.1-x86_64",
        arch: Arch::X86_64,
        source: Source::Debian { metapackage: "linux-image-amd64", version_prefix: "6.1." },
        tcp_state_hook: TcpStateHook::Exactly(FENTRY),
        payload_hooks: Some(SYSCALL_PAYLOADS),
        signs_return_addresses: false,
    },
    Kernel {
        name: "host",
        arch: Arch::HOST,
        source: Source::Host,
        tcp_state_hook: TcpStateHook::FromRunningKernel,
        payload_hooks: None,
        signs_return_addresses: false,
    },
];

/// The hook the running kernel's configuration calls for, read independently of oxeye: fentry
/// where x86-64 has BPF trampolines, else kprobe where kprobe events exist, else the tracepoint.
pub fn host_tcp_state_hook() -> &'static str {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let config = std::fs::read_to_string(Path::new("/boot").join(format!("config-{}", release.trim()))).unwrap_or_default();
    let kprobes = Path::new("/sys/kernel/tracing/kprobe_events").exists() || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists();
    if cfg!(target_arch = "x86_64") && config.contains("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y") && config.contains("CONFIG_BPF_JIT=y") {
        FENTRY
    } else if kprobes {
        KPROBE
    } else {
        TRACEPOINT
    }
}
