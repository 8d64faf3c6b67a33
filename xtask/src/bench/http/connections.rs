//! The connection-heavy case: `ab -c 32` without keep-alive, a new TCP connection per request
//! (accept, read, write, close: every connection hook and the payload hooks per request),
//! against the same nginx, without and with oxeye, alternating within a round.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{oxeye::{Oxeye, Settled}, process::{per_1k, process_cpu_ns}, wrk::WARM_UP_SECONDS};
use crate::bench::{bpf_listing, median, sink};

/// Seconds ab runs (`-t`; its request count is only a ceiling).
const AB_SECONDS: u32 = 5;
const AB_CONCURRENCY: u32 = 32;

/// One ab run: requests per second and requests completed.
fn ab(program: &Path, url: &str, seconds: u32) -> Result<(f64, u64)> {
    let output = Command::new(program)
        .args(["-q", "-t", &seconds.to_string(), "-n", "10000000", "-c", &AB_CONCURRENCY.to_string(), url])
        .stdin(Stdio::null())
        .output()
        .context("cannot run ab")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("ab failed ({}): {text}", output.status);
    }
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok());
    match (value("Requests per second:"), value("Complete requests:")) {
        (Some(rate), Some(done)) => Ok((rate, done as u64)),
        _ => bail!("cannot read ab's output: {text}"),
    }
}

/// Runs `rounds` rounds and prints the medians.
pub(super) fn overhead(oxeye: &Path, ab_bin: &Path, url: &str, work_dir: &Path, sink: &sink::SinkProcess, rounds: usize) -> Result<()> {
    let (mut ratios, mut rates) = (Vec::new(), [Vec::new(), Vec::new()]);
    let (mut oxeye_us, mut bpf_ns, mut lost, mut traced, mut sent) = (Vec::new(), Vec::new(), 0, 0, 0);
    for round in 0..rounds {
        let mut rate = [0.0; 2];
        for step in 0..2 {
            let with_oxeye = (round + step) % 2 == 1;
            let agent = if with_oxeye { Some(Oxeye::start(oxeye, work_dir, sink)?) } else { None };
            let settled = match &agent {
                Some(agent) => agent.settle(|| Ok(ab(ab_bin, url, WARM_UP_SECONDS)?.1))?,
                None => Settled::default(),
            };
            let (requests_per_second, requests) = ab(ab_bin, url, AB_SECONDS)?;
            rate[usize::from(with_oxeye)] = requests_per_second;
            if let Some(agent) = agent {
                oxeye_us.push(per_1k(process_cpu_ns(agent.pid()) - settled.cpu_ns, requests));
                bpf_ns.push((bpf_listing::tracing_ns(&bpf_listing::programs()?) - settled.bpf_ns) / requests.max(1) as f64);
                let counts = agent.stop()?;
                // oxeye traced the warm-up's requests too.
                (lost, traced, sent) = (lost + counts.lost, traced + counts.server, sent + requests + settled.requests);
            }
            eprintln!("    round {}: {:<13} {requests_per_second:>9.0} req/s (ab -c{AB_CONCURRENCY}, a connection per request)", round + 1, if with_oxeye { "with oxeye" } else { "without oxeye" });
        }
        ratios.push(rate[1] / rate[0]);
        rates[0].push(rate[0]);
        rates[1].push(rate[1]);
    }
    println!("\nConnection-heavy: nginx under ab -c{AB_CONCURRENCY} -t{AB_SECONDS} without keep-alive (a new TCP connection per request), medians of {rounds} rounds");
    println!(
        "  {:.0} req/s without oxeye, {:.0} with (ratio {:.4}); oxeye's CPU {:.3} µs and its BPF programs {:.0} ns per request",
        median(rates[0].clone()),
        median(rates[1].clone()),
        median(ratios),
        median(oxeye_us),
        median(bpf_ns)
    );
    println!("  traced {traced} requests as server of {sent} that ab completed, warm-ups included; {lost} network records lost in the kernel");
    Ok(())
}
