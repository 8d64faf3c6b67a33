//! Checking, before touching the kernel, that oxeye has the privileges it needs.

use anyhow::{bail, Context, Result};

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with one line naming what is missing and how to run oxeye.
pub fn check() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .context("cannot find CapEff in /proc/self/status")?;
    let missing = missing_capabilities(effective);
    if !missing.is_empty() {
        bail!(
            "missing {} (needed to load BPF programs, sample every CPU and read processes' memory maps): run oxeye as root, e.g. `sudo oxeye`",
            missing.join(", ")
        );
    }
    Ok(())
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
    fn sys_admin_covers_bpf_and_perfmon() {
        assert_eq!(missing_capabilities(1 << CAP_SYS_ADMIN), ["CAP_SYS_PTRACE"]);
    }
}
