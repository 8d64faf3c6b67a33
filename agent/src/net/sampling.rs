//! Head sampling of spans (`--trace-sample-ratio`), parent-based as OpenTelemetry's
//! `parentbased_traceidratio` sampler: a request that arrives with a `traceparent` follows
//! its `sampled` flag (a client span, the flag of the header the process sent); any other keeps
//! a share of traces decided by the trace ID alone, so every host and agent that sees the same
//! trace makes the same choice and kept traces stay whole. Metrics are counted before this,
//! from every request.

use super::traceparent::TraceContext;

/// Bit 0 of the W3C trace flags.
const SAMPLED: u8 = 1;

/// Which spans to keep.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Trace IDs whose last 8 bytes, shifted right by one, are below this are kept (as the
    /// OpenTelemetry SDKs' `TraceIdRatioBased`); `None`: keep every span.
    threshold: Option<u64>,
}

impl Sampler {
    /// Keeps `ratio` (in [0, 1]) of the traces that start here; 1 keeps every span, whatever
    /// the incoming flags say (oxeye's behaviour without the flag).
    pub fn new(ratio: f64) -> Self {
        let threshold = (ratio < 1.0).then(|| (ratio.max(0.0) * (1u64 << 63) as f64) as u64);
        Sampler { threshold }
    }

    /// Whether the span with `trace_id`, whose request carried `context` (if any), is kept.
    pub fn keep(&self, context: Option<&TraceContext>, trace_id: &[u8; 16]) -> bool {
        let Some(threshold) = self.threshold else { return true };
        match context {
            Some(context) => context.flags & SAMPLED != 0,
            None => {
                let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
                (low >> 1) < threshold
            }
        }
    }
}

/// Parses `--trace-sample-ratio`.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("`{text}` is not a ratio between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::traceparent::{parse, IdGenerator};

    #[test]
    fn ratio_keeps_its_share_of_root_traces() {
        let mut ids = IdGenerator::new();
        for ratio in [0.0, 0.1, 0.5, 0.9] {
            let sampler = Sampler::new(ratio);
            let kept = (0..100_000).filter(|_| sampler.keep(None, &ids.trace_id())).count();
            assert!((kept as f64 / 100_000.0 - ratio).abs() < 0.01, "ratio {ratio}: kept {kept}");
        }
    }

    #[test]
    fn the_same_trace_gets_the_same_answer() {
        let sampler = Sampler::new(0.5);
        let mut ids = IdGenerator::new();
        for _ in 0..1_000 {
            let id = ids.trace_id();
            assert_eq!(sampler.keep(None, &id), sampler.keep(None, &id));
        }
    }

    #[test]
    fn incoming_flags_decide_and_ratio_1_keeps_all() {
        let sampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        let none = Sampler::new(0.0);
        assert!(none.keep(Some(&sampled), &sampled.trace_id));
        assert!(!none.keep(Some(&unsampled), &unsampled.trace_id));
        let all = Sampler::new(1.0);
        assert!(all.keep(Some(&unsampled), &unsampled.trace_id));
        assert!(all.keep(None, &[0xff; 16]));
    }

    #[test]
    fn ratios_outside_0_to_1_are_refused() {
        assert_eq!(parse_ratio("0.1"), Ok(0.1));
        assert!(parse_ratio("1.5").is_err() && parse_ratio("-0.1").is_err() && parse_ratio("x").is_err());
    }
}
