//! Checking, before touching the kernel, that oxeye has the privileges it needs.

use anyhow::{bail, Context, Result};
use tracing::warn;

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_KILL: u32 = 5;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_CHECKPOINT_RESTORE: u32 = 40;
const CAP_CHOWN: u32 = 0;

/// A capability oxeye works without, at a cost.
struct Optional {
    name: &'static str,
    /// Capabilities that do the same, any one of them.
    granted_by: &'static [u32],
    /// What is lost without it.
    cost: &'static str,
    /// Only needed with `--java-perf-map`.
    java_perf_map_only: bool,
}

/// The capabilities oxeye works without, and what each costs (README, "Capabilities").
const OPTIONAL: [Optional; 5] = [
    Optional {
        name: "CAP_SYSLOG",
        granted_by: &[CAP_SYSLOG],
        cost: "kernel frames show addresses only (/proc/kallsyms hides them without it)",
        java_perf_map_only: false,
    },
    Optional {
        name: "CAP_DAC_READ_SEARCH",
        granted_by: &[CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE],
        cost: "executables and libraries oxeye's user cannot read get no unwind tables and no names",
        java_perf_map_only: false,
    },
    Optional {
        name: "CAP_CHECKPOINT_RESTORE",
        granted_by: &[CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN],
        cost: "files are read by path (/proc/PID/root), not through /proc/PID/map_files: deleted or replaced files (and, on some kernels, files in containers' overlay file systems) get no unwind tables and no names",
        java_perf_map_only: false,
    },
    Optional {
        name: "CAP_KILL",
        granted_by: &[CAP_KILL],
        cost: "--java-perf-map cannot start the attach listener of another user's JVM",
        java_perf_map_only: true,
    },
    Optional {
        name: "CAP_CHOWN and CAP_DAC_OVERRIDE",
        granted_by: &[],
        cost: "--java-perf-map cannot hand another user's JVM its attach trigger or reach its socket",
        java_perf_map_only: true,
    },
];

/// Fails with one line naming what is missing and how to run oxeye; warns, one line each,
/// of the optional capabilities missing and what each costs.
pub fn check(java_perf_map: bool) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = effective_capabilities(&status).context("cannot find CapEff in /proc/self/status")?;
    let missing = missing_capabilities(effective);
    if !missing.is_empty() {
        bail!(
            "missing {} (needed to load BPF programs, sample every CPU and read processes' memory maps): run oxeye as root, e.g. `sudo oxeye`",
            missing.join(", ")
        );
    }
    if effective & (1 << CAP_SYS_ADMIN) == 0 {
        check_perf_events_allowed()?;
    }
    for (name, cost) in missing_optional(effective, java_perf_map) {
        warn!("missing {name}: {cost}");
    }
    Ok(())
}

/// Debian's and Ubuntu's kernels add `kernel.perf_event_paranoid` levels above 2, at which
/// every perf_event_open (sampling, and attaching tracepoints and kprobes) needs
/// CAP_SYS_ADMIN, CAP_PERFMON notwithstanding; mainline treats them as 2. Only trying tells
/// the two apart: a software event on oxeye itself, the least any level allows.
fn check_perf_events_allowed() -> Result<()> {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok().and_then(|text| text.trim().parse::<i32>().ok());
    let Some(level @ 3..) = paranoid else { return Ok(()) };
    if open_dummy_perf_event() == Err(libc::EACCES) {
        bail!(
            "kernel.perf_event_paranoid is {level}, at which this kernel (Debian's and Ubuntu's patch) allows perf events only with CAP_SYS_ADMIN: \
             set it to 2, the mainline default (`sysctl -w kernel.perf_event_paranoid=2`, and a file in /etc/sysctl.d to keep it), or grant CAP_SYS_ADMIN"
        );
    }
    Ok(())
}

/// Opens and closes a disabled `PERF_COUNT_SW_DUMMY` event counting oxeye's own user time;
/// the error number if the kernel refuses.
fn open_dummy_perf_event() -> Result<(), i32> {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_DUMMY: u64 = 9;
    /// `disabled`, `exclude_kernel` and `exclude_hv`: bits 0, 5 and 6 of the flags word.
    const FLAGS: u64 = 1 | 1 << 5 | 1 << 6;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
    // perf_event_attr as of PERF_ATTR_SIZE_VER0 (64 bytes): type, size, config, sample period,
    // sample type, read format, flags, and zeros.
    let mut attr = [0u64; 8];
    attr[0] = u64::from(PERF_TYPE_SOFTWARE) | (64u64 << 32);
    attr[1] = PERF_COUNT_SW_DUMMY;
    attr[6] = FLAGS;
    // SAFETY: attr is a valid, fully initialised perf_event_attr of the size it states.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, PERF_FLAG_FD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: a descriptor this function opened and nothing else holds.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Whether the effective set holds CAP_SYSLOG (kernel symbols are readable).
pub fn can_read_kernel_symbols() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    effective_capabilities(&status).is_some_and(|caps| caps & (1 << CAP_SYSLOG) != 0)
}

/// The effective capability set in the text of `/proc/self/status`.
fn effective_capabilities(status: &str) -> Option<u64> {
    status.lines().find_map(|line| line.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !admin && !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !admin && !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    missing
}

/// The optional capabilities missing from `effective`, with their costs.
fn missing_optional(effective: u64, java_perf_map: bool) -> Vec<(&'static str, &'static str)> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    OPTIONAL
        .iter()
        .filter(|o| java_perf_map || !o.java_perf_map_only)
        .filter(|o| match o.granted_by {
            [] => !(has(CAP_CHOWN) && has(CAP_DAC_OVERRIDE)),
            caps => !caps.iter().any(|&cap| has(cap)),
        })
        .map(|o| (o.name, o.cost))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(missing_capabilities(0x1ff_ffff_ffff).is_empty());
    }

    #[test]
    fn unprivileged_misses_all() {
        assert_eq!(missing_capabilities(0), ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]);
    }

    #[test]
    fn optional_capabilities_are_named_with_their_cost() {
        assert!(missing_optional(0x1ff_ffff_ffff, true).is_empty(), "root");
        let documented = [CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_SYSLOG, CAP_CHECKPOINT_RESTORE].iter().fold(0, |set, cap| set | 1 << cap);
        assert!(missing_optional(documented, false).is_empty(), "the documented set");
        let names: Vec<_> = missing_optional(documented, true).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["CAP_KILL", "CAP_CHOWN and CAP_DAC_OVERRIDE"], "--java-perf-map needs more");
        let without_syslog = documented & !(1 << CAP_SYSLOG);
        assert_eq!(missing_optional(without_syslog, false)[0].0, "CAP_SYSLOG");
        let names: Vec<_> = missing_optional(1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_SYS_PTRACE | 1 << CAP_SYS_ADMIN, false).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["CAP_SYSLOG", "CAP_DAC_READ_SEARCH"], "CAP_SYS_ADMIN covers map_files");
    }

    #[test]
    fn a_dummy_perf_event_opens_here() {
        // Root (the tests' user) may always open one: the probe itself must be well formed.
        assert_eq!(open_dummy_perf_event(), Ok(()));
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon() {
        assert_eq!(missing_capabilities(1 << CAP_SYS_ADMIN), ["CAP_SYS_PTRACE"]);
    }
}
