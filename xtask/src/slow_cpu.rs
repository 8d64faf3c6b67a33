//! A machine with a slower CPU, made from this one: a cgroup whose CPU quota is this machine's
//! CPUs divided by a factor (`cargo xtask test --slow-cpu 3`), that the end-to-end tests, oxeye
//! and every workload run in. Samples follow the CPU time a workload gets, so the tests' checks
//! hold there as on a slow CPU; what must not happen is a hang or a deadline too tight.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

/// A cgroup with a CPU quota, removed on drop.
pub struct SlowCpu {
    dir: PathBuf,
}

impl SlowCpu {
    /// Creates the cgroup with `cpus / factor` CPUs of quota (cgroup v2's `cpu.max`, or v1's
    /// `cpu.cfs_quota_us`).
    pub fn new(factor: f64) -> Result<Self> {
        if !(factor >= 1.0 && factor.is_finite()) {
            bail!("--slow-cpu takes a factor of 1 or more");
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let period: u64 = 100_000;
        let quota = (period as f64 * cpus / factor).round() as u64;
        let name = format!("oxeye-slow-cpu-{}", std::process::id());
        let v2 = PathBuf::from("/sys/fs/cgroup");
        if fs::read_to_string(v2.join("cgroup.controllers")).is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu")) {
            let dir = v2.join(name);
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::write(dir.join("cpu.max"), format!("{quota} {period}")).context("cannot set cpu.max")?;
            return Ok(SlowCpu { dir });
        }
        let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
        if !v1.join("cpu.cfs_quota_us").exists() {
            bail!("neither cgroup v2's cpu controller nor cgroup v1's cpu hierarchy is mounted");
        }
        let dir = v1.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(dir.join("cpu.cfs_period_us"), period.to_string()).context("cannot set cpu.cfs_period_us")?;
        fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()).context("cannot set cpu.cfs_quota_us")?;
        Ok(SlowCpu { dir })
    }

    /// `command`, run inside the cgroup (it joins it before exec, so all it starts is in it).
    pub fn wrap(&self, command: &Command) -> Command {
        let procs = self.dir.join("cgroup.procs");
        let mut wrapped = Command::new("sh");
        wrapped.arg("-c").arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display())).arg("sh").arg(command.get_program()).args(command.get_args());
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }
}

impl Drop for SlowCpu {
    fn drop(&mut self) {
        // Empty by now: every process in it has exited.
        let _ = fs::remove_dir(&self.dir);
    }
}
