//! Real servers and clients for the network tracing tests: nginx and Prometheus from Debian,
//! each in its own temporary directory on a free loopback port, stopped when dropped; and a
//! minimal HTTP/1.1 client on std's `TcpStream`.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{output_dir, spawn, waiting_for, Spawned};

/// A Python HTTP server (`python3 -c COMPUTING_SERVER PORT`) on 127.0.0.1 whose handler
/// computes for 20 ms of wall time, so that its thread is sampled while serving. It ends by
/// itself after 60 s, so it outlives no test (nor a container it runs in).
pub const COMPUTING_SERVER: &str = r#"
import http.server, sys, threading, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        end = time.monotonic() + 0.02
        n = 0
        while time.monotonic() < end:
            n += 1
        body = b"ok %d\n" % n
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
threading.Timer(60, server.shutdown).start()
server.serve_forever()
"#;


/// A free TCP port on 127.0.0.1 (bound and released: good enough for tests run one at a time).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let _waiting = waiting_for(format!("waiting for a server on port {port}"));
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port} after {timeout:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// nginx serving `/` (200, a small page), `/a/b.txt` (200) and 404 for anything else.
pub struct Nginx {
    _process: Spawned,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The body of `/`.
    pub index: String,
}

impl Nginx {
    /// Starts nginx (one worker, no access log) and waits until it listens.
    pub fn start(test: &str) -> Nginx {
        let dir = output_dir(&format!("{test}-nginx"));
        let html = dir.join("html");
        fs::create_dir_all(html.join("a")).expect("create nginx root");
        let index = "<html><body>oxeye test page</body></html>\n".to_owned();
        fs::write(html.join("index.html"), &index).expect("write index");
        fs::write(html.join("a/b.txt"), "bbb\n").expect("write a/b.txt");
        fs::create_dir_all(dir.join("logs")).expect("create logs");
        let port = free_port();
        let config = format!(
            "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             keepalive_requests 100000;\n  server {{\n    listen 127.0.0.1:{port};\n    root {dir}/html;\n  }}\n}}\n",
            dir = dir.display()
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).expect("write nginx.conf");
        // Stopped when dropped: SIGTERM to its group first (the master then stops its workers).
        let process = spawn(Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(&dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()), "nginx");
        let nginx = Nginx { _process: process, port, index };
        wait_for_port(port, Duration::from_secs(10));
        nginx
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A Prometheus server scraping one target every second.
pub struct Prometheus {
    _process: Spawned,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) every second.
    pub fn start(test: &str, target: &str) -> Prometheus {
        let dir = output_dir(&format!("{test}-prometheus"));
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: oxeye\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let conf = dir.join("prometheus.yml");
        fs::write(&conf, config).expect("write prometheus.yml");
        let port = free_port();
        let process = spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("prometheus.log")).expect("create prometheus.log")),
            "prometheus",
        );
        let prometheus = Prometheus { _process: process, port, dir };
        wait_for_port(port, Duration::from_secs(30));
        prometheus
    }

    /// Runs an instant PromQL query; returns each series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let response = get(self.port, &path);
        assert_eq!(response.status, 200, "Prometheus query {promql:?} failed: {}", response.body);
        let json: serde_json::Value = serde_json::from_str(&response.body).expect("Prometheus answers JSON");
        let results = json["data"]["result"].as_array().cloned().unwrap_or_default();
        results
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
                    .unwrap_or_default();
                let value = series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// Prometheus' own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// An HTTP response read by [`Connection`].
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (as text).
    pub body: String,
    /// Body (as sent).
    pub bytes: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Connects to 127.0.0.1:`port`.
    pub fn open(port: u16) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
        stream.set_nodelay(true).expect("set nodelay");
        Connection { stream, buffer: Vec::new() }
    }

    /// Sends `GET path` requests, all in one write (pipelined when more than one).
    pub fn send(&mut self, paths: &[&str], extra_headers: &str) {
        let requests: String = paths.iter().map(|path| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n")).collect();
        // The server may close first (it refuses what it was sent): that shows in the reply.
        let _ = self.stream.write_all(requests.as_bytes());
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        // The server may close first (it refuses what it was sent): that shows in the reply.
        let _ = self.stream.write_all(bytes);
    }

    /// Reads one response (framed by `Content-Length`).
    pub fn receive(&mut self) -> Response {
        self.try_receive().expect("connection closed before a whole response")
    }

    /// Reads one response, or `None` if the connection closes (or times out) first.
    pub fn try_receive(&mut self) -> Option<Response> {
        loop {
            if let Some((response, used)) = parse_response(&self.buffer) {
                self.buffer.drain(..used);
                return Some(response);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// One request and its response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(&[path], "");
        self.receive()
    }
}

/// `GET path` on a new connection.
pub fn get(port: u16, path: &str) -> Response {
    Connection::open(port).get(path)
}

fn parse_response(bytes: &[u8]) -> Option<(Response, usize)> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).expect("ASCII head");
    let status = head.split_whitespace().nth(1)?.parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().expect("content length")))
        .unwrap_or(0);
    if bytes.len() < head_end + length {
        return None;
    }
    let raw = bytes[head_end..head_end + length].to_vec();
    let body = String::from_utf8_lossy(&raw).into_owned();
    Some((Response { status, body, bytes: raw }, head_end + length))
}

pub use crate::checks::parse_exposition;

/// Runs `wrk -t1 -cCONNECTIONS -dSECONDS` against `url` (a load set by wall-clock time) and
/// returns the requests it completed, asserting it ran and completed at least `at_least`.
pub fn wrk(url: &str, connections: u64, seconds: u64, at_least: u64) -> u64 {
    let wrk = crate::output(Command::new("wrk").args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")]).arg(url), "wrk");
    let report = String::from_utf8_lossy(&wrk.stdout);
    assert!(wrk.status.success(), "wrk failed:\n{report}");
    let completed = report
        .lines()
        .find_map(|line| line.trim().split_once(" requests in ")?.0.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("wrk printed no request count:\n{report}"));
    assert!(completed >= at_least, "wrk completed only {completed} requests:\n{report}");
    completed
}

/// The sum of the Prometheus series `name` whose `http_route` label is `route`.
pub fn route_count(exposition: &str, name: &str, route: &str) -> u64 {
    parse_exposition(exposition)
        .into_iter()
        .filter(|(series, labels, _)| series == name && labels.get("http_route").map(String::as_str) == Some(route))
        .map(|(_, _, value)| value)
        .sum::<f64>() as u64
}

/// elfutils' debuginfod from Debian, serving the debug files found under one directory.
pub struct DebuginfodServer {
    _process: Spawned,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl DebuginfodServer {
    /// Starts debuginfod on `serve_dir` and waits until it serves the debug file of
    /// `build_id` (its first scan takes a moment).
    pub fn start(test: &str, serve_dir: &std::path::Path, build_id: &str) -> DebuginfodServer {
        let dir = output_dir(&format!("{test}-debuginfod"));
        let port = free_port();
        let log = fs::File::create(dir.join("debuginfod.log")).expect("create debuginfod.log");
        let process = spawn(
            Command::new("debuginfod")
                .arg("-F")
                .arg(serve_dir)
                .args(["-p", &port.to_string(), "-t0", "-g0", "-c1", "-d"])
                .arg(dir.join("debuginfod.sqlite"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log"))
                .stderr(log),
            "debuginfod",
        );
        let server = DebuginfodServer { _process: process, port };
        let url = format!("{}/buildid/{build_id}/debuginfo", server.url());
        let _waiting = waiting_for(format!("waiting for debuginfod to serve {url}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let fetched = Command::new("curl").args(["-sf", "-o", "/dev/null", "--max-time", "2", &url]).status().is_ok_and(|s| s.success());
            if fetched {
                return server;
            }
            assert!(Instant::now() < deadline, "debuginfod did not serve {url} within 30 s (log: {})", dir.join("debuginfod.log").display());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
