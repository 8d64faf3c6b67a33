//! The agent under test: started against the OTLP receiver, stopped like Ctrl-C does, and what
//! it said it traced.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::process::{process_cpu_ns, tail, Guard};
use crate::bench::{bpf_listing, number_before, sink, wait_for_text};

/// A running oxeye that exports to the receiver.
pub(super) struct Oxeye {
    guard: Guard,
    log: PathBuf,
}

/// Where oxeye stood when the measured run began.
#[derive(Default, Clone, Copy)]
pub(super) struct Settled {
    /// Its CPU since it started (start-up and warm-up), ns.
    pub(super) cpu_ns: u64,
    /// Requests the warm-up completed (oxeye traced them too).
    pub(super) requests: u64,
    /// Run time of its tracing programs so far, ns.
    pub(super) bpf_ns: f64,
}

/// What oxeye said about the network when it stopped.
#[derive(Default, Clone, Copy)]
pub(super) struct Traced {
    pub(super) server: u64,
    pub(super) client: u64,
    /// Network records the kernel could not hand over (ring buffer full).
    pub(super) lost: u64,
    pub(super) spans_exported: u64,
    pub(super) spans_dropped: u64,
}

impl Oxeye {
    pub(super) fn start(binary: &Path, work_dir: &Path, sink: &sink::SinkProcess) -> Result<Self> {
        Self::start_with(binary, work_dir, Some(sink), &[])
    }

    /// Starts it exporting to `sink` (or to local files only, without one), with `extra` flags.
    pub(super) fn start_with(binary: &Path, work_dir: &Path, sink: Option<&sink::SinkProcess>, extra: &[&str]) -> Result<Self> {
        let log = work_dir.join("oxeye-http.stderr");
        let mut command = Command::new(binary);
        if let Some(sink) = sink {
            command.args(["--collection-agent", sink.address(), "--disable-tls"]);
        }
        let child = command
            .args(extra)
            .args(["--no-live", "--summary-interval", "3600", "--output-dir"])
            .arg(work_dir.join("http-oxeye"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("cannot start oxeye")?;
        let oxeye = Oxeye { guard: Guard { child, stop_signal: Some(libc::SIGINT) }, log };
        wait_for_text(&oxeye.log, "sampling;")?;
        Ok(oxeye)
    }

    pub(super) fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Runs `warm_up` (load like the measured run's, so oxeye meets the programs it will
    /// trace; it returns the requests it completed), then waits until oxeye's CPU falls below a
    /// tenth of a core: the measured run then sees its steady state, not the one-time work of
    /// naming new files (indexing a large binary's DWARF takes most of a second of CPU).
    pub(super) fn settle(&self, warm_up: impl FnOnce() -> Result<u64>) -> Result<Settled> {
        const WINDOW: Duration = Duration::from_millis(300);
        const DEADLINE: Duration = Duration::from_secs(20);
        let requests = warm_up()?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let before = process_cpu_ns(self.pid());
            thread::sleep(WINDOW);
            let used = process_cpu_ns(self.pid()) - before;
            let settled = used < WINDOW.as_nanos() as u64 / 10;
            if !settled && Instant::now() > deadline {
                eprintln!("    warning: oxeye still used {} ms of CPU per {} ms {} s after the warm-up; measuring anyway", used / 1_000_000, WINDOW.as_millis(), DEADLINE.as_secs());
            }
            if settled || Instant::now() > deadline {
                let bpf_ns = bpf_listing::tracing_ns(&bpf_listing::programs()?);
                return Ok(Settled { cpu_ns: process_cpu_ns(self.pid()), requests, bpf_ns });
            }
        }
    }

    /// Stops it like Ctrl-C does and reads its final counts.
    pub(super) fn stop(mut self) -> Result<Traced> {
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.guard.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("oxeye did not stop within 60 s of SIGINT");
            }
            thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            bail!("oxeye failed ({status}): {}", tail(&self.log));
        }
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("oxeye: traced")) else {
            bail!("oxeye printed no 'traced' line: {}", tail(&self.log));
        };
        let mut traced = Traced {
            server: number_before(line, " as server").context("no server count in oxeye's 'traced' line")?,
            client: number_before(line, " as client").context("no client count in oxeye's 'traced' line")?,
            lost: number_before(line, " network records lost").unwrap_or(0),
            ..Traced::default()
        };
        if let Some(line) = text.lines().find(|l| l.starts_with("oxeye: exported") && l.contains(" spans ")) {
            traced.spans_exported = number_before(line, " spans").unwrap_or(0);
            traced.spans_dropped = number_before(line, " dropped").unwrap_or(0);
        }
        Ok(traced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oxeye_counts() {
        let line = "oxeye: traced 20 TCP connections (18 closed) and 12345 HTTP requests (12000 as server, 345 as client); 0 responses without a request";
        assert_eq!(number_before(line, " as server"), Some(12000));
        assert_eq!(number_before(line, " as client"), Some(345));
        let line = "oxeye: traced 21 TCP connections (18 closed) and 10 HTTP requests (5 as server, 5 as client); 0 responses without a request, 6 requests without a response; 77 network records lost in kernel; 0 metric";
        assert_eq!(number_before(line, " network records lost"), Some(77));
    }
}
