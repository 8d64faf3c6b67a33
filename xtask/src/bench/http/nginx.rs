//! nginx (one worker, a ~600-byte static page) under wrk, without and with oxeye.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{
    oxeye::{Oxeye, Settled, Traced},
    process::{per_1k, process_cpu_ns, Guard},
    server::{free_port, http_status, wait_ready},
    wrk::{wrk, Wrk, WARM_UP_SECONDS, WRK_SECONDS},
};
use crate::{
    bench::{bpf_listing, median, sink},
    shell::say,
};

/// Throughput ratio with/without oxeye that nginx must keep, and oxeye's own CPU per request
/// (µs) it may use (issue 17's targets).
const TARGET_RATIO: f64 = 0.90;
const TARGET_OXEYE_US: f64 = 2.0;

/// Writes the nginx prefix directory: config, a ~600-byte page; `/missing` answers 404.
fn nginx_prefix(work_dir: &Path, port: u16) -> Result<PathBuf> {
    let dir = work_dir.join("http-nginx");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("html"))?;
    fs::create_dir_all(dir.join("tmp"))?;
    let mut page = String::from("<!DOCTYPE html>\n<html><head><title>oxeye bench</title></head><body>\n");
    while page.len() < 560 {
        page.push_str("<p>A small static page served by nginx for the tracing benchmark.</p>\n");
    }
    page.push_str("</body></html>\n");
    fs::write(dir.join("html/index.html"), page)?;
    let d = dir.display();
    // Run the worker as root: the page sits under the workspace, which `nobody` may not read.
    let config = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n    keepalive_requests 1000000;\n    default_type text/html;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n    fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n    scgi_temp_path {d}/tmp/scgi;\n\
         \x20   server {{\n        listen 127.0.0.1:{port};\n        root {d}/html;\n\
         \x20       location = /missing {{ return 404; }}\n    }}\n}}\n"
    );
    fs::write(dir.join("nginx.conf"), config)?;
    Ok(dir)
}

/// A run of wrk against nginx, with or without oxeye.
struct NginxRun {
    wrk: Wrk,
    /// CPU of nginx's worker during wrk, ns.
    nginx_cpu: u64,
    /// CPU of oxeye during wrk, ns, and what it traced (with oxeye only).
    oxeye: Option<(u64, Traced)>,
    /// Run time of oxeye's tracing programs over its life, ns (with oxeye only).
    bpf_ns: f64,
    /// Where oxeye stood when wrk began (with oxeye only).
    settled: Settled,
    /// CPU of the OTLP receiver during wrk, ns.
    receiver_ns: u64,
}

/// Starts nginx and measures it under wrk for `rounds` rounds, alternating which of the runs
/// without and with oxeye comes first, then prints the summary.
pub(super) fn overhead(oxeye: &Path, nginx: &Path, wrk_bin: &Path, ab_bin: &Path, work_dir: &Path, sink: &sink::SinkProcess, rounds: usize) -> Result<()> {
    let port = free_port()?;
    let prefix = nginx_prefix(work_dir, port)?;
    let log = prefix.join("error.log");
    let child = Command::new(nginx)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(fs::File::create(prefix.join("nginx.stderr"))?)
        .spawn()
        .context("cannot start nginx")?;
    // SIGTERM: nginx's fast shutdown, which stops the worker too.
    let mut server = Guard { child, stop_signal: Some(libc::SIGTERM) };
    wait_ready(&mut server, "nginx", &prefix.join("nginx.stderr"), port, Duration::from_secs(10))?;
    let missing = http_status(port, "/missing")?;
    if missing != 404 {
        bail!("nginx answered {missing} to /missing, not 404");
    }
    let worker = fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.pid()))
        .ok()
        .and_then(|children| children.split_whitespace().next()?.parse::<u32>().ok())
        .context("cannot find nginx's worker process")?;
    let url = format!("http://127.0.0.1:{port}/");
    say(format!("HTTP benchmark: nginx on port {port} under wrk -t1 -c16 -d{WRK_SECONDS}s, {rounds} rounds without and with oxeye"));
    wrk(wrk_bin, &url, 16, 2)?; // warm-up

    let mut runs: [Vec<NginxRun>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for step in 0..2 {
            let with_oxeye = (round + step) % 2 == 1;
            server.check_alive("nginx", &log)?;
            let agent = if with_oxeye { Some(Oxeye::start(oxeye, work_dir, sink)?) } else { None };
            let settled = match &agent {
                Some(agent) => agent.settle(|| Ok(wrk(wrk_bin, &url, 16, WARM_UP_SECONDS)?.requests))?,
                None => Settled::default(),
            };
            let (nginx_before, receiver_before) = (process_cpu_ns(worker), process_cpu_ns(sink.pid()));
            let result = wrk(wrk_bin, &url, 16, WRK_SECONDS)?;
            let nginx_cpu = process_cpu_ns(worker) - nginx_before;
            let receiver_ns = process_cpu_ns(sink.pid()) - receiver_before;
            let mut bpf_ns = 0.0;
            let oxeye_run = match agent {
                Some(agent) => {
                    let cpu = process_cpu_ns(agent.pid()) - settled.cpu_ns;
                    bpf_ns = bpf_listing::tracing_ns(&bpf_listing::programs()?) - settled.bpf_ns;
                    Some((cpu, agent.stop()?))
                }
                None => None,
            };
            let traced = oxeye_run.map_or(String::new(), |(cpu, t)| {
                format!(
                    "  oxeye CPU {:.3} ms/1k req, BPF {:.0} ns/req, traced {} as server ({:.1}% of {} with the warm-up's)",
                    per_1k(cpu, result.requests),
                    bpf_ns / result.requests.max(1) as f64,
                    t.server,
                    t.server as f64 * 100.0 / (result.requests + settled.requests).max(1) as f64,
                    result.requests + settled.requests
                )
            });
            eprintln!(
                "    round {}: {:<13} {:>9.0} req/s  p99 {:>8.0} µs  nginx CPU {:.3} ms/1k req{traced}",
                round + 1,
                if with_oxeye { "with oxeye" } else { "without oxeye" },
                result.requests_per_second,
                result.p99_us,
                per_1k(nginx_cpu, result.requests),
            );
            if result.bad > 0 {
                eprintln!("    warning: {} non-2xx responses or socket errors", result.bad);
            }
            runs[usize::from(with_oxeye)].push(NginxRun { wrk: result, nginx_cpu, oxeye: oxeye_run, bpf_ns, settled, receiver_ns });
        }
    }
    print_summary(&runs, rounds, work_dir);
    super::hooks::compare(oxeye, wrk_bin, &url, work_dir, sink, rounds.min(3))?;
    super::connections::overhead(oxeye, ab_bin, &url, work_dir, sink, rounds.min(3))?;
    drop(server);
    Ok(())
}

/// Prints the medians of the runs without and with oxeye (`runs[0]` and `runs[1]`), what oxeye
/// traced, and whether the throughput target is met.
fn print_summary(runs: &[Vec<NginxRun>; 2], rounds: usize, work_dir: &Path) {
    let [without, with] = runs;
    let med = |runs: &[NginxRun], f: &dyn Fn(&NginxRun) -> f64| median(runs.iter().map(f).collect());
    let rps = |r: &NginxRun| r.wrk.requests_per_second;
    let p99 = |r: &NginxRun| r.wrk.p99_us;
    let ratio = median(without.iter().zip(with).map(|(a, b)| b.wrk.requests_per_second / a.wrk.requests_per_second).collect());
    let p99_diff = median(without.iter().zip(with).map(|(a, b)| b.wrk.p99_us - a.wrk.p99_us).collect());
    let nginx_cpu = |r: &NginxRun| per_1k(r.nginx_cpu, r.wrk.requests);
    let oxeye_cpu = |r: &NginxRun| r.oxeye.map_or(f64::NAN, |(cpu, _)| per_1k(cpu, r.wrk.requests));
    let oxeye_share = |r: &NginxRun| r.oxeye.map_or(f64::NAN, |(cpu, _)| cpu as f64 / 1e9 / f64::from(WRK_SECONDS) * 100.0);
    // oxeye traced the warm-up's requests too.
    let sent: u64 = with.iter().map(|r| r.wrk.requests + r.settled.requests).sum();
    let traced: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.server).sum();
    let client: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.client).sum();
    let lost: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.lost).sum();
    let exported: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_exported).sum();
    let dropped: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_dropped).sum();
    let min_share = with.iter().filter_map(|r| Some(r.oxeye?.1.server as f64 / (r.wrk.requests + r.settled.requests).max(1) as f64)).fold(f64::INFINITY, f64::min);

    println!("\nHTTP tracing overhead: nginx (1 worker, static ~600-byte page) under wrk -t1 -c16 -d{WRK_SECONDS}s on loopback, oxeye exporting OTLP to a local receiver, medians of {rounds} rounds");
    println!("  {:<34} {:>14} {:>14} {:>16}", "", "without oxeye", "with oxeye", "with / without");
    println!("  {:<34} {:>14.0} {:>14.0} {:>16.4}", "throughput (req/s)", med(without, &rps), med(with, &rps), ratio);
    println!("  {:<34} {:>14.0} {:>14.0} {:>+15.0}µs", "p99 latency (µs)", med(without, &p99), med(with, &p99), p99_diff);
    println!("  {:<34} {:>14.3} {:>14.3} {:>16}", "nginx worker CPU (ms / 1k req)", med(without, &nginx_cpu), med(with, &nginx_cpu), "");
    println!(
        "  oxeye's own CPU: {:.3} µs per request ({:.1}% of one core while wrk ran); its BPF programs: {:.0} ns per request (kernel statistics, all its tracing programs, nginx's and wrk's syscalls together), in nginx's and wrk's CPU",
        med(with, &oxeye_cpu),
        med(with, &oxeye_share),
        med(with, &|r: &NginxRun| r.bpf_ns / r.wrk.requests.max(1) as f64),
    );
    println!(
        "  measured in oxeye's steady state: it first ran {WARM_UP_SECONDS} s of the same load and settled, using {:.0} ms of CPU from its start (naming and indexing the files it met); the OTLP receiver on this host used {:.3} µs per request while wrk ran (a collector's cost, not oxeye's)",
        med(with, &|r: &NginxRun| r.settled.cpu_ns as f64 / 1e6),
        med(with, &|r: &NginxRun| per_1k(r.receiver_ns, r.wrk.requests)),
    );
    println!(
        "  traced: {traced} requests as server of {sent} that wrk completed, warm-ups included ({:.2}%; lowest run {:.2}%), {client} as client; {lost} network records lost in the kernel; {exported} spans exported, {dropped} dropped",
        traced as f64 * 100.0 / sent.max(1) as f64,
        min_share * 100.0
    );
    if dropped > 0 {
        println!("  warning: oxeye dropped {dropped} spans instead of exporting them (see {})", work_dir.join("oxeye-http.stderr").display());
    }
    if min_share < 0.95 {
        println!("  warning: in some run oxeye traced fewer than 95% of the requests wrk sent");
    }
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let oxeye_us = med(with, &oxeye_cpu);
    println!("  targets: throughput ratio >= {TARGET_RATIO} ({}), oxeye's CPU <= {TARGET_OXEYE_US} µs per request ({})", met(ratio >= TARGET_RATIO), met(oxeye_us <= TARGET_OXEYE_US));
}
