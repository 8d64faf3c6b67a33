//! The reporting pipeline: the live view on a terminal, else a summary line in the log.

use std::{io::IsTerminal, time::Duration};

use tracing::info;

use crate::live::{self, LiveStats};

/// How often the live view is redrawn.
const LIVE_REFRESH: Duration = Duration::from_secs(1);

/// Shows progress.
pub struct Reporter {
    live_view: bool,
    interval: Duration,
}

impl Reporter {
    /// The live view if stdout is a terminal (and `--no-live` is not given), else a summary
    /// every `summary_interval`.
    pub fn new(no_live: bool, summary_interval: Duration) -> Self {
        let live_view = !no_live && std::io::stdout().is_terminal();
        Reporter { live_view, interval: if live_view { LIVE_REFRESH } else { summary_interval } }
    }

    /// Time between two reports.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Redraws the view, or logs the summary.
    pub fn report(&self, stats: &LiveStats<'_>) {
        // A closed terminal must not stop profiling; the summary goes to the log then.
        if !self.live_view || live::draw(&mut std::io::stdout().lock(), stats).is_err() {
            info!("{}", live::summary_line(stats));
        }
    }

    /// Leaves the terminal ready for the closing lines.
    pub fn finish(&self) {
        if self.live_view {
            println!();
        }
    }
}
