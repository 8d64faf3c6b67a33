//! The OTLP receiver the benchmark exports to: the workspace's `otlp-sink`, which counts the
//! bytes it reads from the socket (compressed, as on the wire).

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    setup,
    shell::{self, root},
};

/// Builds `target/release/otlp-sink`.
pub fn build() -> Result<PathBuf> {
    shell::run(Command::new(setup::cargo()).current_dir(root()).args(["build", "--release", "--quiet", "--package", "otlp-sink"]))?;
    Ok(root().join("target/release/otlp-sink"))
}

/// What the receiver has counted so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkStats {
    /// Samples in accepted requests.
    pub samples: u64,
    /// Bytes read from its sockets.
    pub wire_bytes: u64,
}

/// A running `otlp-sink`, stopped on drop.
pub struct SinkProcess {
    child: Child,
    address: String,
    stats_file: PathBuf,
}

impl SinkProcess {
    /// Starts the receiver on a free loopback port.
    pub fn start(binary: &Path, work_dir: &Path) -> Result<Self> {
        let stats_file = work_dir.join("otlp-sink.out");
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--stats-interval", "0.2"])
            .stdout(fs::File::create(&stats_file)?)
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start otlp-sink")?;
        let stderr = child.stderr.take().context("otlp-sink has no stderr")?;
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line)?;
        let Some(address) = line.trim().strip_prefix("otlp-sink: listening on ") else {
            bail!("otlp-sink did not start: {line}");
        };
        Ok(SinkProcess { address: address.to_owned(), child, stats_file })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` it listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its latest `requests=N samples=N wire_bytes=N` line.
    pub fn stats(&self) -> SinkStats {
        let text = fs::read_to_string(&self.stats_file).unwrap_or_default();
        let Some(line) = text.lines().last() else { return SinkStats::default() };
        let field = |name: &str| {
            line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
        };
        SinkStats { samples: field("samples"), wire_bytes: field("wire_bytes") }
    }

    /// Waits until the counts have settled (the last export has been read and printed).
    pub fn wait_for_quiet(&self) {
        let mut last = self.stats().wire_bytes;
        for _ in 0..20 {
            thread::sleep(Duration::from_millis(500));
            let now = self.stats().wire_bytes;
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
