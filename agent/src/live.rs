//! What oxeye shows while it runs: a live top-functions view on a terminal, one-line
//! summaries otherwise.

use std::{collections::HashMap, fmt::Write as _, io::Write, sync::Arc, time::Duration};

use agent_common::counters::Counter;

use crate::{bpf::Counters, collector::Collector, export::{Exporter, Profiles}};

/// Each refresh keeps this share of the previous counts, so the view follows the last few
/// seconds, like `perf top`.
const DECAY: f64 = 0.75;
/// Rows in the live view.
const ROWS: usize = 25;

/// Samples per leaf function, decaying over time.
#[derive(Debug, Default)]
pub struct TopFunctions {
    counts: HashMap<Arc<str>, f64>,
}

impl TopFunctions {
    /// Counts one sample whose innermost frame is `function`.
    pub fn add(&mut self, function: Arc<str>) {
        *self.counts.entry(function).or_default() += 1.0;
    }

    /// Ages the counts; tiny ones are forgotten so the map stays small.
    pub fn decay(&mut self) {
        self.counts.retain(|_, count| {
            *count *= DECAY;
            *count >= 0.05
        });
    }

    /// The `n` hottest functions with their share of the (decayed) samples.
    pub fn top(&self, n: usize) -> Vec<(Arc<str>, f64)> {
        let total: f64 = self.counts.values().sum();
        let mut rows: Vec<_> = self.counts.iter().map(|(f, &c)| (f.clone(), if total > 0.0 { c / total } else { 0.0 })).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(n);
        rows
    }
}

/// One line with the counts a user checks first.
pub fn summary_line(collector: &Collector, counters: &Counters, exporter: Option<&Exporter<Profiles>>, elapsed: Duration) -> String {
    let mut line = format!(
        "{:.0}s: {} samples ({} lost in kernel, {} dropped when full), {} processes, {} stacks",
        elapsed.as_secs_f64(),
        collector.samples_received,
        counters.lost(),
        collector.profile.dropped_full,
        collector.processes.len(),
        collector.profile.stack_count(),
    );
    if let Some(exporter) = exporter {
        let stats = &exporter.stats;
        let _ = write!(
            line,
            "; export: {} samples sent, {} dropped, {} refused, {} failed attempts, queue {} KiB, last call {} ms",
            stats.exported(),
            stats.dropped(),
            stats.rejected(),
            stats.failed_attempts(),
            exporter.queued_bytes() / 1024,
            stats.last_latency_us() / 1000,
        );
    }
    if let Some((function, share)) = collector.top.top(1).first() {
        let _ = write!(line, ", top: {function} {:.1}%", share * 100.0);
    }
    line
}

/// Redraws the live view on the terminal.
pub fn draw(out: &mut impl Write, collector: &Collector, counters: &Counters, elapsed: Duration, rate: u64) -> std::io::Result<()> {
    let mut screen = String::with_capacity(4096);
    // Home the cursor and clear the screen.
    screen.push_str("\x1b[H\x1b[2J");
    let _ = writeln!(
        screen,
        "oxeye {:.0}s  {} Hz  samples {}  lost {}  idle skipped {}  processes {}  (Ctrl-C to stop and write the profile)\n",
        elapsed.as_secs_f64(),
        rate,
        collector.samples_received,
        counters.lost() + collector.profile.dropped_full,
        counters.get(Counter::IdleSkipped),
        collector.processes.len(),
    );
    let _ = writeln!(screen, "  {:>6}  function", "self");
    for (function, share) in collector.top.top(ROWS) {
        let _ = writeln!(screen, "  {:>5.1}%  {function}", share * 100.0);
    }
    out.write_all(screen.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_orders_by_share_and_decays() {
        let mut top = TopFunctions::default();
        for _ in 0..3 {
            top.add("hot".into());
        }
        top.add("cold".into());
        let rows = top.top(10);
        assert_eq!(&*rows[0].0, "hot");
        assert!((rows[0].1 - 0.75).abs() < 1e-9);
        for _ in 0..20 {
            top.decay();
        }
        assert!(top.top(10).is_empty(), "old counts fade away");
    }
}
