//! The hottest leaf functions of the last few seconds, for the live view and summaries.

use std::{collections::HashMap, sync::Arc};

/// Each refresh keeps this share of the previous counts, so the view follows the last few
/// seconds, like `perf top`.
const DECAY: f64 = 0.75;

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
