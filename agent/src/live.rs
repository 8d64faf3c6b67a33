//! What oxeye shows while it runs: a live top-functions view on a terminal, one-line
//! summaries otherwise. It reads a [`LiveStats`] snapshot and nothing else.

use std::{fmt::Write as _, io::Write, time::Duration};

use crate::{export::ExportStats, top::TopFunctions};

/// Rows in the live view.
const ROWS: usize = 25;

/// What the live view and the summaries show, gathered by each pipeline.
pub struct LiveStats<'a> {
    /// Since sampling started.
    pub elapsed: Duration,
    /// Samples per second per CPU.
    pub rate: u64,
    /// Samples received from the kernel.
    pub samples: u64,
    /// Samples the kernel could not deliver (ring buffer full).
    pub lost_in_kernel: u64,
    /// Samples dropped because the profile was full.
    pub dropped_full: u64,
    /// Samples of the idle task skipped.
    pub idle_skipped: u64,
    /// Processes cached.
    pub processes: usize,
    /// Distinct stacks.
    pub stacks: usize,
    /// The profile exporter's figures, when exporting.
    pub export: Option<ExportFigures>,
    /// The hottest functions.
    pub top: &'a TopFunctions,
}

/// An exporter's figures at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ExportFigures {
    /// Items the collector accepted.
    pub exported: u64,
    /// Items dropped before sending (queue full).
    pub dropped: u64,
    /// Items the collector refused.
    pub refused: u64,
    /// Send attempts that failed.
    pub failed_attempts: u64,
    /// Bytes waiting in the queue.
    pub queued_bytes: u64,
    /// Latency of the last call, microseconds.
    pub last_latency_us: u64,
}

impl ExportFigures {
    /// The figures of `stats` now, with `queued_bytes` waiting.
    pub fn of(stats: &ExportStats, queued_bytes: u64) -> Self {
        ExportFigures {
            exported: stats.exported(),
            dropped: stats.dropped(),
            refused: stats.rejected(),
            failed_attempts: stats.failed_attempts(),
            queued_bytes,
            last_latency_us: stats.last_latency_us(),
        }
    }
}

/// One line with the counts a user checks first.
pub fn summary_line(stats: &LiveStats<'_>) -> String {
    let mut line = format!(
        "{:.0}s: {} samples ({} lost in kernel, {} dropped when full), {} processes, {} stacks",
        stats.elapsed.as_secs_f64(),
        stats.samples,
        stats.lost_in_kernel,
        stats.dropped_full,
        stats.processes,
        stats.stacks,
    );
    if let Some(export) = &stats.export {
        let _ = write!(
            line,
            "; export: {} samples sent, {} dropped, {} refused, {} failed attempts, queue {} KiB, last call {} ms",
            export.exported,
            export.dropped,
            export.refused,
            export.failed_attempts,
            export.queued_bytes / 1024,
            export.last_latency_us / 1000,
        );
    }
    if let Some((function, share)) = stats.top.top(1).first() {
        let _ = write!(line, ", top: {function} {:.1}%", share * 100.0);
    }
    line
}

/// Redraws the live view on the terminal.
pub fn draw(out: &mut impl Write, stats: &LiveStats<'_>) -> std::io::Result<()> {
    let mut screen = String::with_capacity(4096);
    // Home the cursor and clear the screen.
    screen.push_str("\x1b[H\x1b[2J");
    let _ = writeln!(
        screen,
        "oxeye {:.0}s  {} Hz  samples {}  lost {}  idle skipped {}  processes {}  (Ctrl-C to stop and write the profile)\n",
        stats.elapsed.as_secs_f64(),
        stats.rate,
        stats.samples,
        stats.lost_in_kernel + stats.dropped_full,
        stats.idle_skipped,
        stats.processes,
    );
    let _ = writeln!(screen, "  {:>6}  function", "self");
    for (function, share) in stats.top.top(ROWS) {
        let _ = writeln!(screen, "  {:>5.1}%  {function}", share * 100.0);
    }
    out.write_all(screen.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_counts_and_the_top_function() {
        let mut top = TopFunctions::default();
        top.add("hot".into());
        let stats = LiveStats {
            elapsed: Duration::from_secs(3),
            rate: 99,
            samples: 10,
            lost_in_kernel: 1,
            dropped_full: 2,
            idle_skipped: 0,
            processes: 4,
            stacks: 5,
            export: None,
            top: &top,
        };
        assert_eq!(summary_line(&stats), "3s: 10 samples (1 lost in kernel, 2 dropped when full), 4 processes, 5 stacks, top: hot 100.0%");
        let mut screen = Vec::new();
        draw(&mut screen, &stats).unwrap();
        assert!(String::from_utf8(screen).unwrap().contains("100.0%  hot"));
    }
}
