//! wrk, the load generator: one run, and what its report says.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Seconds wrk runs in each measured run.
pub(super) const WRK_SECONDS: u32 = 8;

/// Seconds of load before a measured run with oxeye (see [`super::oxeye::Oxeye::settle`]).
pub(super) const WARM_UP_SECONDS: u32 = 2;

/// One wrk run.
#[derive(Clone, Copy)]
pub(super) struct Wrk {
    pub(super) requests_per_second: f64,
    /// 99th-percentile latency, microseconds.
    pub(super) p99_us: f64,
    /// Requests completed.
    pub(super) requests: u64,
    /// Responses other than 2xx/3xx, and socket errors.
    pub(super) bad: u64,
}

pub(super) fn wrk(program: &Path, url: &str, connections: u32, seconds: u32) -> Result<Wrk> {
    let output = Command::new(program)
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", url])
        .stdin(Stdio::null())
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed ({}): {text} {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output: {text}"))
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let line_after = |key: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(key)).map(str::trim);
    let requests_per_second = line_after("Requests/sec:")?.parse().ok()?;
    let p99_us = duration_us(line_after("99%")?)?;
    let requests = text.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()?;
    let non_2xx: u64 = line_after("Non-2xx or 3xx responses:").and_then(|n| n.parse().ok()).unwrap_or(0);
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors: u64 = line_after("Socket errors:")
        .map(|l| l.split(',').filter_map(|kv| kv.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Some(Wrk { requests_per_second, p99_us, requests, bad: non_2xx + socket_errors })
}

/// wrk's "1.23ms" / "456.00us" / "1.01s" / "1.00m" in microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number.trim().parse::<f64>().ok()? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 8s test @ http://127.0.0.1:8080/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   310.39us  120.00us   5.00ms   90.00%\n    Req/Sec    40.12k     2.00k   45.00k    70.00%\n  Latency Distribution\n     50%  290.00us\n     75%  330.00us\n     90%  400.00us\n     99%    1.20ms\n  319284 requests in 8.00s, 250.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  39910.50\nTransfer/sec:     31.25MB\n";
        let wrk = parse_wrk(text).unwrap();
        assert_eq!(wrk.requests, 319_284);
        assert_eq!(wrk.bad, 3);
        assert!((wrk.requests_per_second - 39910.5).abs() < 1e-6);
        assert!((wrk.p99_us - 1200.0).abs() < 1e-6);
        assert_eq!(duration_us("1.01s"), Some(1_010_000.0));
        assert_eq!(duration_us("456.00us"), Some(456.0));
    }
}
