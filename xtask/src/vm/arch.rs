//! The CPU architectures the VM tests run: what each needs to build for it and boot it.

use std::path::PathBuf;

/// A CPU architecture oxeye supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86-64.
    #[value(name = "x86_64")]
    X86_64,
    /// arm64.
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    /// The machine's own architecture.
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") { Arch::Aarch64 } else { Arch::X86_64 };

    /// Debian's name for it (`dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The Rust target triple.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Prefix of the GNU tools for it (`aarch64-linux-gnu-gcc`), empty for the host's own.
    pub fn tool_prefix(self) -> &'static str {
        match (self == Arch::HOST, self) {
            (true, _) => "",
            (false, Arch::X86_64) => "x86_64-linux-gnu-",
            (false, Arch::Aarch64) => "aarch64-linux-gnu-",
        }
    }

    /// The GNU triple (`aarch64-linux-gnu`).
    fn gnu_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// Where its glibc lives on this machine: the system's own, or Debian's cross packages
    /// (`libc6-arm64-cross`).
    pub fn lib_dirs(self) -> Vec<PathBuf> {
        let triple = self.gnu_triple();
        if self == Arch::HOST {
            vec![PathBuf::from(format!("/lib/{triple}")), PathBuf::from(format!("/usr/lib/{triple}"))]
        } else {
            vec![PathBuf::from(format!("/usr/{triple}/lib"))]
        }
    }

    /// The qemu system emulator, machine and CPU (software emulation: this machine's
    /// /dev/kvm cannot be used), and the kernel's console device.
    pub fn qemu(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            // `max` has pointer authentication; with qemu's own cheap signing algorithm
            // (`pauth-impdef`) it runs as fast as a cortex-a57, where the architected QARMA
            // algorithm made it 2.7 times slower.
            Arch::Aarch64 => ("qemu-system-aarch64", &["-M", "virt", "-cpu", "max,pauth-impdef=on"], "ttyAMA0"),
            Arch::X86_64 => ("qemu-system-x86_64", &["-M", "q35", "-cpu", "max"], "ttyS0"),
        }
    }

    /// The name of the architecture as `uname -m` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}
