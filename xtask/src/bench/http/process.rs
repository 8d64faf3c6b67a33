//! The processes the benchmark starts: stopped when dropped, their CPU time, their logs.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Child,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

/// A child process, stopped and reaped on drop (also when the benchmark fails half-way).
pub(super) struct Guard {
    pub(super) child: Child,
    /// Signal that stops it with its children (nginx's workers outlive a SIGKILLed master);
    /// SIGKILL follows if it has not exited within 5 s.
    pub(super) stop_signal: Option<i32>,
}

impl Guard {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with `what` and the tail of `log` if the process has exited.
    pub(super) fn check_alive(&mut self, what: &str, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{what} exited ({status}): {}", tail(log));
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let (Some(signal), Ok(None)) = (self.stop_signal, self.child.try_wait()) {
            // SAFETY: signalling our own child, not reaped yet.
            unsafe { libc::kill(self.child.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log, for error messages.
pub(super) fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// CPU time (user + system) of process `pid` so far, threads that exited included, in ns.
pub(super) fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: no arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (ticks(11) + ticks(12)) * 1_000_000_000 / hz
}

/// Milliseconds of CPU per 1,000 requests.
pub(super) fn per_1k(cpu_ns: u64, requests: u64) -> f64 {
    cpu_ns as f64 / 1e6 / (requests.max(1) as f64 / 1000.0)
}

/// `name` on PATH or in the sbin directories (nginx lives in /usr/sbin).
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
