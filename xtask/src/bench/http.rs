//! HTTP tracing overhead, measured side by side in one run:
//! - nginx (one worker, a ~600-byte static page) under `wrk -t1 -c16 -d8s` on loopback, without
//!   oxeye and with oxeye tracing every request and exporting spans, metrics and profiles to the
//!   local OTLP receiver: throughput, p99 latency, oxeye's CPU per 1,000 requests, and how many
//!   of the requests wrk sent oxeye traced;
//! - a Flask app (served by waitress, 4 threads) under `wrk -t1 -c8 -d8s`, as in the Beyla talk:
//!   uninstrumented, under the OpenTelemetry Python SDK's auto-instrumentation (exporting to the
//!   same receiver), and uninstrumented with oxeye running.
//!
//! Configurations alternate within a round and medians over rounds are printed (this machine
//! is small and noisy). CPU times come from utime + stime in /proc/PID/stat, which include
//! threads that have exited; the BPF programs run in the traced processes' context, so their
//! cost shows up in the servers' CPU, not in oxeye's.

use std::{
    env, fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, sink, wait_for_text};
use crate::shell::{root, say};

/// Seconds wrk runs in each measured run.
const WRK_SECONDS: u32 = 8;
/// Throughput ratio with/without oxeye that nginx must keep.
const TARGET_RATIO: f64 = 0.97;
/// What the Python comparison installs into its venv.
const PY_PACKAGES: &[&str] = &["flask", "waitress", "opentelemetry-distro", "opentelemetry-exporter-otlp-proto-grpc", "opentelemetry-instrumentation-flask"];

/// The Flask app: one route with a short JSON body, served by waitress (keep-alive; Werkzeug's
/// development server closes every connection).
const FLASK_APP: &str = r#"import logging
import sys

from flask import Flask
from waitress import serve

app = Flask(__name__)


@app.route("/")
def index():
    return {"status": "ok", "service": "bench-py"}


if __name__ == "__main__":
    logging.getLogger("waitress").setLevel(logging.ERROR)
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=4)
"#;

/// A child process, stopped and reaped on drop (also when the benchmark fails half-way).
struct Guard {
    child: Child,
    /// Signal that stops it with its children (nginx's workers outlive a SIGKILLed master);
    /// SIGKILL follows if it has not exited within 5 s.
    stop_signal: Option<i32>,
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with `what` and the tail of `log` if the process has exited.
    fn check_alive(&mut self, what: &str, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{what} exited ({status}): {}", tail(log));
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let (Some(signal), Ok(None)) = (self.stop_signal, self.child.try_wait()) {
            // SAFETY: signalling our own child, not reaped yet.
            unsafe { libc::kill(self.child.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running oxeye that exports to the receiver.
struct Oxeye {
    guard: Guard,
    log: PathBuf,
}

/// What oxeye said about the network when it stopped.
#[derive(Default, Clone, Copy)]
struct Traced {
    server: u64,
    client: u64,
    /// Network records the kernel could not hand over (ring buffer full).
    lost: u64,
    spans_exported: u64,
    spans_dropped: u64,
}

impl Oxeye {
    fn start(binary: &Path, work_dir: &Path, sink: &sink::SinkProcess) -> Result<Self> {
        let log = work_dir.join("oxeye-http.stderr");
        let child = Command::new(binary)
            .args(["--collection-agent", sink.address(), "--disable-tls", "--no-live", "--summary-interval", "3600", "--output-dir"])
            .arg(work_dir.join("http-oxeye"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("cannot start oxeye")?;
        let oxeye = Oxeye { guard: Guard { child, stop_signal: Some(libc::SIGINT) }, log };
        wait_for_text(&oxeye.log, "sampling;")?;
        Ok(oxeye)
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops it like Ctrl-C does and reads its final counts.
    fn stop(mut self) -> Result<Traced> {
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

/// The number just before `marker` in `line` ("... (12 as server" → 12).
fn number_before(line: &str, marker: &str) -> Option<u64> {
    let head = &line[..line.find(marker)?];
    head.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// CPU time (user + system) of process `pid` so far, threads that exited included, in ns.
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: no arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (ticks(11) + ticks(12)) * 1_000_000_000 / hz
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Status code of `GET path` on the loopback port (HTTP/1.0, so the server closes).
fn http_status(port: u16, path: &str) -> Result<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("not an HTTP response")
}

/// Waits until `GET /` on `port` answers 200.
fn wait_ready(server: &mut Guard, what: &str, log: &Path, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        server.check_alive(what, log)?;
        if http_status(port, "/").is_ok_and(|code| code == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer on port {port} within {} s: {}", timeout.as_secs(), tail(log));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `name` on PATH or in the sbin directories (nginx lives in /usr/sbin).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// One wrk run.
#[derive(Clone, Copy)]
struct Wrk {
    requests_per_second: f64,
    /// 99th-percentile latency, microseconds.
    p99_us: f64,
    /// Requests completed.
    requests: u64,
    /// Responses other than 2xx/3xx, and socket errors.
    bad: u64,
}

fn wrk(program: &Path, url: &str, connections: u32, seconds: u32) -> Result<Wrk> {
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

/// Runs both HTTP comparisons and prints their figures.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    let missing = || anyhow::anyhow!("the HTTP benchmark needs nginx and wrk: run `cargo xtask setup --bench`");
    let nginx = find_program("nginx").ok_or_else(missing)?;
    let wrk = find_program("wrk").ok_or_else(missing)?;
    let sink = sink::SinkProcess::start(&sink::build()?, work_dir)?;
    nginx_overhead(oxeye, &nginx, &wrk, work_dir, &sink, rounds.max(5))?;
    python_comparison(oxeye, &wrk, work_dir, &sink, (rounds * 3 / 5).max(3))
}

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
}

fn nginx_overhead(oxeye: &Path, nginx: &Path, wrk_bin: &Path, work_dir: &Path, sink: &sink::SinkProcess, rounds: usize) -> Result<()> {
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
            let agent_before = agent.as_ref().map_or(0, |a| process_cpu_ns(a.pid()));
            let nginx_before = process_cpu_ns(worker);
            let result = wrk(wrk_bin, &url, 16, WRK_SECONDS)?;
            let nginx_cpu = process_cpu_ns(worker) - nginx_before;
            let oxeye_run = match agent {
                Some(agent) => {
                    let cpu = process_cpu_ns(agent.pid()) - agent_before;
                    Some((cpu, agent.stop()?))
                }
                None => None,
            };
            let traced = oxeye_run.map_or(String::new(), |(cpu, t)| {
                format!(
                    "  oxeye CPU {:.3} ms/1k req, traced {} as server ({:.1}%)",
                    per_1k(cpu, result.requests),
                    t.server,
                    t.server as f64 * 100.0 / result.requests.max(1) as f64
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
            runs[usize::from(with_oxeye)].push(NginxRun { wrk: result, nginx_cpu, oxeye: oxeye_run });
        }
    }
    drop(server);

    let [without, with] = &runs;
    let med = |runs: &[NginxRun], f: &dyn Fn(&NginxRun) -> f64| median(runs.iter().map(f).collect());
    let rps = |r: &NginxRun| r.wrk.requests_per_second;
    let p99 = |r: &NginxRun| r.wrk.p99_us;
    let ratio = median(without.iter().zip(with).map(|(a, b)| b.wrk.requests_per_second / a.wrk.requests_per_second).collect());
    let p99_diff = median(without.iter().zip(with).map(|(a, b)| b.wrk.p99_us - a.wrk.p99_us).collect());
    let nginx_cpu = |r: &NginxRun| per_1k(r.nginx_cpu, r.wrk.requests);
    let oxeye_cpu = |r: &NginxRun| r.oxeye.map_or(f64::NAN, |(cpu, _)| per_1k(cpu, r.wrk.requests));
    let oxeye_share = |r: &NginxRun| r.oxeye.map_or(f64::NAN, |(cpu, _)| cpu as f64 / 1e9 / f64::from(WRK_SECONDS) * 100.0);
    let sent: u64 = with.iter().map(|r| r.wrk.requests).sum();
    let traced: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.server).sum();
    let client: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.client).sum();
    let lost: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.lost).sum();
    let exported: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_exported).sum();
    let dropped: u64 = with.iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_dropped).sum();
    let min_share = with.iter().filter_map(|r| Some(r.oxeye?.1.server as f64 / r.wrk.requests.max(1) as f64)).fold(f64::INFINITY, f64::min);

    println!("\nHTTP tracing overhead: nginx (1 worker, static ~600-byte page) under wrk -t1 -c16 -d{WRK_SECONDS}s on loopback, oxeye exporting OTLP to a local receiver, medians of {rounds} rounds");
    println!("  {:<34} {:>14} {:>14} {:>16}", "", "without oxeye", "with oxeye", "with / without");
    println!("  {:<34} {:>14.0} {:>14.0} {:>16.4}", "throughput (req/s)", med(without, &rps), med(with, &rps), ratio);
    println!("  {:<34} {:>14.0} {:>14.0} {:>+15.0}µs", "p99 latency (µs)", med(without, &p99), med(with, &p99), p99_diff);
    println!("  {:<34} {:>14.3} {:>14.3} {:>16}", "nginx worker CPU (ms / 1k req)", med(without, &nginx_cpu), med(with, &nginx_cpu), "");
    println!(
        "  oxeye's own CPU: {:.3} ms per 1,000 requests ({:.1}% of one core while wrk ran); the BPF programs' time is in nginx's and wrk's CPU",
        med(with, &oxeye_cpu),
        med(with, &oxeye_share)
    );
    println!(
        "  traced: {traced} requests as server of {sent} that wrk completed ({:.2}%; lowest run {:.2}%), {client} as client; {lost} network records lost in the kernel; {exported} spans exported, {dropped} dropped",
        traced as f64 * 100.0 / sent.max(1) as f64,
        min_share * 100.0
    );
    if dropped > 0 {
        println!("  warning: oxeye dropped {dropped} spans instead of exporting them (see {})", work_dir.join("oxeye-http.stderr").display());
    }
    if min_share < 0.95 {
        println!("  warning: in some run oxeye traced fewer than 95% of the requests wrk sent");
    }
    println!("  target: throughput ratio >= {TARGET_RATIO} ({})", if ratio >= TARGET_RATIO { "met" } else { "missed" });
    Ok(())
}

/// Milliseconds of CPU per 1,000 requests.
fn per_1k(cpu_ns: u64, requests: u64) -> f64 {
    cpu_ns as f64 / 1e6 / (requests.max(1) as f64 / 1000.0)
}

/// The venv with Flask and the OpenTelemetry SDK, made once in target/bench-venv; the reason
/// if it cannot be had.
fn python_venv() -> std::result::Result<PathBuf, String> {
    let venv = root().join("target/bench-venv");
    let python = venv.join("bin/python");
    let ready = || {
        venv.join("bin/opentelemetry-instrument").exists()
            && Command::new(&python)
                .args(["-c", "import flask, waitress, opentelemetry.distro, opentelemetry.instrumentation.flask, opentelemetry.exporter.otlp.proto.grpc"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(venv);
    }
    say(format!("installing Flask and the OpenTelemetry Python SDK into {}", venv.display()));
    let base = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    if !python.exists() {
        let output = Command::new(base).args(["-m", "venv"]).arg(&venv).output().map_err(|e| format!("cannot run {base}: {e}"))?;
        if !output.status.success() {
            return Err(format!("`{base} -m venv` failed (`cargo xtask setup --bench` installs python3-venv): {}", last_line(&output.stderr)));
        }
    }
    let output = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "--timeout", "20", "--retries", "1"])
        .args(PY_PACKAGES)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !output.status.success() {
        return Err(format!("pip install {} failed: {}", PY_PACKAGES.join(" "), last_line(&output.stderr)));
    }
    if !ready() {
        return Err("the venv still cannot import flask and the OpenTelemetry packages after pip install".into());
    }
    Ok(venv)
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned()
}

#[derive(Clone, Copy, PartialEq)]
enum PyConfig {
    Plain,
    Sdk,
    Oxeye,
}

impl PyConfig {
    const ALL: [PyConfig; 3] = [PyConfig::Plain, PyConfig::Sdk, PyConfig::Oxeye];

    fn label(self) -> &'static str {
        match self {
            PyConfig::Plain => "(a) uninstrumented",
            PyConfig::Sdk => "(b) OpenTelemetry SDK",
            PyConfig::Oxeye => "(c) uninstrumented + oxeye",
        }
    }
}

struct PyRun {
    wrk: Wrk,
    server_cpu: u64,
    oxeye: Option<(u64, Traced)>,
}

impl PyRun {
    fn server_per_1k(&self) -> f64 {
        per_1k(self.server_cpu, self.wrk.requests)
    }

    fn oxeye_per_1k(&self) -> f64 {
        self.oxeye.map_or(0.0, |(cpu, _)| per_1k(cpu, self.wrk.requests))
    }
}

fn python_comparison(oxeye: &Path, wrk_bin: &Path, work_dir: &Path, sink: &sink::SinkProcess, rounds: usize) -> Result<()> {
    let venv = match python_venv() {
        Ok(venv) => venv,
        Err(reason) => {
            println!("\nPython comparison (Flask: uninstrumented / OpenTelemetry SDK / oxeye) skipped: {reason}");
            return Ok(());
        }
    };
    let dir = work_dir.join("http-python");
    fs::create_dir_all(&dir)?;
    let app = dir.join("app.py");
    fs::write(&app, FLASK_APP)?;
    say(format!("HTTP benchmark: Flask under wrk -t1 -c8 -d{WRK_SECONDS}s, {rounds} rounds of uninstrumented / OpenTelemetry SDK / oxeye"));
    let mut runs: Vec<Vec<PyRun>> = PyConfig::ALL.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for offset in 0..PyConfig::ALL.len() {
            let index = (round + offset) % PyConfig::ALL.len();
            let config = PyConfig::ALL[index];
            let run = python_run(config, &venv, &app, &dir, oxeye, wrk_bin, work_dir, sink)?;
            let traced = run.oxeye.map_or(String::new(), |(_, t)| format!(", traced {} as server", t.server));
            eprintln!(
                "    round {}: {:<27} {:>7.0} req/s  server CPU {:>6.2} ms/1k req  oxeye CPU {:>5.2} ms/1k req{traced}",
                round + 1,
                config.label(),
                run.wrk.requests_per_second,
                run.server_per_1k(),
                run.oxeye_per_1k(),
            );
            if run.wrk.bad > 0 {
                eprintln!("    warning: {} non-2xx responses or socket errors", run.wrk.bad);
            }
            runs[index].push(run);
        }
    }

    let plain = &runs[0];
    println!("\nPython comparison (as in the Beyla talk): Flask (waitress, 4 threads) under wrk -t1 -c8 -d{WRK_SECONDS}s, medians of {rounds} rounds");
    println!("  {:<28} {:>9} {:>10} {:>24}   extra CPU (ms/1k req)", "configuration", "req/s", "vs (a)", "server CPU (ms/1k req)");
    let mut extra = [0.0; 3];
    for (index, config) in PyConfig::ALL.iter().enumerate() {
        let these = &runs[index];
        let rps = median(these.iter().map(|r| r.wrk.requests_per_second).collect());
        let ratio = median(these.iter().zip(plain).map(|(r, a)| r.wrk.requests_per_second / a.wrk.requests_per_second).collect());
        let server = median(these.iter().map(PyRun::server_per_1k).collect());
        // Within a round: the server's CPU beyond (a)'s, plus oxeye's own.
        extra[index] = median(these.iter().zip(plain).map(|(r, a)| r.server_per_1k() - a.server_per_1k() + r.oxeye_per_1k()).collect());
        let extra_text = match config {
            PyConfig::Plain => "-".to_owned(),
            PyConfig::Sdk => format!("{:+.3} (in the server)", extra[index]),
            PyConfig::Oxeye => {
                let own = median(these.iter().map(PyRun::oxeye_per_1k).collect());
                let delta = median(these.iter().zip(plain).map(|(r, a)| r.server_per_1k() - a.server_per_1k()).collect());
                format!("{:+.3} (oxeye {own:.3}, server {delta:+.3})", extra[index])
            }
        };
        println!("  {:<28} {:>9.0} {:>10.4} {:>24.3}   {}", config.label(), rps, ratio, server, extra_text);
    }
    let traced: u64 = runs[2].iter().filter_map(|r| r.oxeye).map(|(_, t)| t.server).sum();
    let sent: u64 = runs[2].iter().map(|r| r.wrk.requests).sum();
    let exported: u64 = runs[2].iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_exported).sum();
    let dropped: u64 = runs[2].iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_dropped).sum();
    println!(
        "  oxeye traced {traced} of the {sent} requests wrk completed in (c) as server ({:.2}%); {exported} spans exported, {dropped} dropped",
        traced as f64 * 100.0 / sent.max(1) as f64
    );
    if dropped > 0 {
        println!("  warning: oxeye dropped {dropped} spans instead of exporting them (see {})", work_dir.join("oxeye-http.stderr").display());
    }
    println!(
        "  target: oxeye's extra CPU per request below the SDK's ({:.3} vs {:.3} ms/1k req): {}",
        extra[2],
        extra[1],
        if extra[2] < extra[1] { "met" } else { "missed" }
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn python_run(config: PyConfig, venv: &Path, app: &Path, dir: &Path, oxeye: &Path, wrk_bin: &Path, work_dir: &Path, sink: &sink::SinkProcess) -> Result<PyRun> {
    let port = free_port()?;
    let log = dir.join("server.log");
    let python = venv.join("bin/python");
    let mut command = if config == PyConfig::Sdk {
        let mut command = Command::new(venv.join("bin/opentelemetry-instrument"));
        command
            .arg(&python)
            .env("OTEL_SERVICE_NAME", "bench-py")
            .env("OTEL_TRACES_EXPORTER", "otlp")
            .env("OTEL_METRICS_EXPORTER", "otlp")
            .env("OTEL_LOGS_EXPORTER", "none")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", sink.address()))
            .env("OTEL_EXPORTER_OTLP_INSECURE", "true")
            // Metrics every 5 s, like oxeye's reporter interval.
            .env("OTEL_METRIC_EXPORT_INTERVAL", "5000");
        command
    } else {
        Command::new(&python)
    };
    let child = command
        .arg(app)
        .arg(port.to_string())
        .env("PATH", venv.join("bin").into_os_string().into_string().unwrap_or_default() + ":" + &env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(dir.join("server.stderr"))?)
        .spawn()
        .with_context(|| format!("cannot start the Flask app ({})", config.label()))?;
    let mut server = Guard { child, stop_signal: None };
    let stderr = dir.join("server.stderr");
    wait_ready(&mut server, "the Flask app", &stderr, port, Duration::from_secs(30))?;
    let url = format!("http://127.0.0.1:{port}/");
    wrk(wrk_bin, &url, 8, 1)?; // warm-up
    let agent = if config == PyConfig::Oxeye { Some(Oxeye::start(oxeye, work_dir, sink)?) } else { None };
    let agent_before = agent.as_ref().map_or(0, |a| process_cpu_ns(a.pid()));
    let server_before = process_cpu_ns(server.pid());
    let result = wrk(wrk_bin, &url, 8, WRK_SECONDS)?;
    let server_cpu = process_cpu_ns(server.pid()) - server_before;
    server.check_alive("the Flask app", &stderr)?;
    let oxeye_run = match agent {
        Some(agent) => {
            let cpu = process_cpu_ns(agent.pid()) - agent_before;
            Some((cpu, agent.stop()?))
        }
        None => None,
    };
    drop(server);
    Ok(PyRun { wrk: result, server_cpu, oxeye: oxeye_run })
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

    #[test]
    fn reads_oxeye_counts() {
        let line = "oxeye: traced 20 TCP connections (18 closed) and 12345 HTTP requests (12000 as server, 345 as client); 0 responses without a request";
        assert_eq!(number_before(line, " as server"), Some(12000));
        assert_eq!(number_before(line, " as client"), Some(345));
        let line = "oxeye: traced 21 TCP connections (18 closed) and 10 HTTP requests (5 as server, 5 as client); 0 responses without a request, 6 requests without a response; 77 network records lost in kernel; 0 metric";
        assert_eq!(number_before(line, " network records lost"), Some(77));
    }
}
