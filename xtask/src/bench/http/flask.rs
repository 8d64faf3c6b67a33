//! A Flask app under wrk: uninstrumented, under the OpenTelemetry Python SDK, and with oxeye.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{
    oxeye::{Oxeye, Settled, Traced},
    process::{per_1k, process_cpu_ns, Guard},
    server::{free_port, wait_ready},
    wrk::{wrk, Wrk, WARM_UP_SECONDS, WRK_SECONDS},
};
use crate::{
    bench::{median, sink},
    shell::{root, say},
};

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
    /// Requests of the warm-up before `wrk` (oxeye traced them too).
    warm_requests: u64,
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

pub(super) fn comparison(oxeye: &Path, wrk_bin: &Path, work_dir: &Path, sink: &sink::SinkProcess, rounds: usize) -> Result<()> {
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
    let sent: u64 = runs[2].iter().map(|r| r.wrk.requests + r.warm_requests).sum();
    let exported: u64 = runs[2].iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_exported).sum();
    let dropped: u64 = runs[2].iter().filter_map(|r| r.oxeye).map(|(_, t)| t.spans_dropped).sum();
    println!(
        "  oxeye traced {traced} of the {sent} requests wrk completed in (c), warm-ups included, as server ({:.2}%); {exported} spans exported, {dropped} dropped",
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
    let agent = if config == PyConfig::Oxeye { Some(Oxeye::start(oxeye, work_dir, sink)?) } else { None };
    let warm_up = || Ok(wrk(wrk_bin, &url, 8, WARM_UP_SECONDS)?.requests);
    let settled = match &agent {
        Some(agent) => agent.settle(warm_up)?,
        None => Settled { requests: warm_up()?, ..Settled::default() },
    };
    let server_before = process_cpu_ns(server.pid());
    let result = wrk(wrk_bin, &url, 8, WRK_SECONDS)?;
    let server_cpu = process_cpu_ns(server.pid()) - server_before;
    server.check_alive("the Flask app", &stderr)?;
    let oxeye_run = match agent {
        Some(agent) => {
            let cpu = process_cpu_ns(agent.pid()) - settled.cpu_ns;
            Some((cpu, agent.stop()?))
        }
        None => None,
    };
    drop(server);
    Ok(PyRun { wrk: result, warm_requests: settled.requests, server_cpu, oxeye: oxeye_run })
}
