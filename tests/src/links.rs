//! Samples linked to spans: a Python server whose requests compute (and a thread that computes
//! outside any request), nginx worker processes that gzip each response, wrk to load them, and
//! readers for what oxeye links: each OTLP sample with the trace and span of its `link_index`,
//! and each pprof sample with its labels.
//!
//! The pprof reader decodes, with the minimal protobuf reader of [`crate::pprof`], the fields
//! these tests read (samples, their labels and locations, functions, strings): it shares no code
//! with oxeye's writer.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use otlp_sink::proto::collector::profiles::v1development::ExportProfilesServiceRequest;

use otlp_sink::{DecodedSpan, Sink};

use crate::{
    deadline, output_dir,
    pprof::{gunzip, Fields, Wire},
    servers::{free_port, wait_for_port, Connection},
    spawn, waiting_for, Spawned,
};

/// A Python HTTP server (`python3 -c LINKED_SERVER PORT LIFETIME_SECS`) on 127.0.0.1: a
/// `ThreadingHTTPServer` (a thread per connection) whose `do_GET` runs `compute_in_request()`, a
/// busy loop of 40 ms of wall time, then answers 200 with a small body (HTTP/1.0: the connection
/// closes after it). A daemon thread runs `background_spin()` for the whole run: 10 ms busy
/// loops with 5 ms pauses, outside any request. It ends by itself after LIFETIME_SECS.
pub const LINKED_SERVER: &str = r#"
import http.server, sys, threading, time

def compute_in_request(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n

def background_spin():
    n = 0
    while True:
        end = time.monotonic() + 0.01
        while time.monotonic() < end:
            n += 1
        time.sleep(0.005)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = compute_in_request(0.04)
        body = b"ok %d\n" % n
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
threading.Thread(target=background_spin, name="background", daemon=True).start()
threading.Timer(float(sys.argv[2]), server.shutdown).start()
server.serve_forever()
"#;

/// Whether a frame name is Python function `name`: `name` as OTLP and pprof name it, or
/// `name (FILE:LINE)` as the folded stacks do.
pub fn is_function(frame: &str, name: &str) -> bool {
    frame == name || frame.strip_prefix(name).is_some_and(|rest| rest.starts_with(" ("))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bytes of lowercase or uppercase hex `text`; `None` unless it is whole hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// nginx worker processes whose requests compute, and wrk to load them.

/// nginx from Debian with worker processes, serving `/page.txt`, a text page gzipped at level 9
/// for each request (`Accept-Encoding: gzip`): the compression runs in the worker between its
/// receive of the request and its send of the response. Stopped when dropped.
pub struct GzipNginx {
    process: Spawned,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its directory (configuration, page, error log).
    pub dir: PathBuf,
}

impl GzipNginx {
    /// Starts nginx with `workers` worker processes, each listening on its own `reuseport`
    /// socket (so the kernel spreads connections over them), serving a `page_bytes` page; waits
    /// until it listens.
    ///
    /// The gzip output buffers (`gzip_buffers 4 1m`) hold the whole compressed page, so nginx
    /// compresses all of it before it sends the response's first bytes, whatever deflate's
    /// block sizes (with the default 32 × 4 KiB it may send once they are full: some 90% of the
    /// workers' samples were linked then, against 95%).
    pub fn start(test: &str, workers: usize, page_bytes: usize) -> GzipNginx {
        let dir = output_dir(&format!("{test}-nginx"));
        fs::create_dir_all(dir.join("html")).expect("create nginx root");
        fs::create_dir_all(dir.join("logs")).expect("create logs");
        fs::write(dir.join("html/page.txt"), compressible_text(page_bytes)).expect("write page.txt");
        let port = free_port();
        let config = format!(
            "worker_processes {workers};\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             keepalive_requests 100000;\n  default_type text/plain;\n\
             gzip on;\n  gzip_min_length 0;\n  gzip_comp_level 9;\n  gzip_types text/plain;\n  gzip_buffers 4 1m;\n\
             server {{\n    listen 127.0.0.1:{port} reuseport;\n    root {dir}/html;\n  }}\n}}\n",
            dir = dir.display()
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).expect("write nginx.conf");
        // Stopped when dropped: SIGTERM to its group (the master and its workers).
        let process = spawn(Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(&dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()), "nginx (gzip, worker processes)");
        let nginx = GzipNginx { process, port, dir };
        wait_for_port(port, Duration::from_secs(10));
        nginx
    }

    /// The master's process id.
    pub fn master(&self) -> u32 {
        self.process.id()
    }

    /// `http://127.0.0.1:PORT/page.txt`.
    pub fn page_url(&self) -> String {
        format!("http://127.0.0.1:{}/page.txt", self.port)
    }

    /// The worker processes' ids, once there are `count` (waits at most `timeout`).
    pub fn workers(&self, count: usize, timeout: Duration) -> Vec<u32> {
        let _waiting = waiting_for(format!("waiting for {count} nginx worker processes of pid {}", self.master()));
        let until = Instant::now() + timeout;
        loop {
            let workers = children(self.master());
            if workers.len() >= count {
                return workers;
            }
            assert!(Instant::now() < until, "nginx (pid {}) has {} worker processes after {timeout:?}, want {count} (log: {})", self.master(), workers.len(), self.dir.join("logs/error.log").display());
            deadline::check();
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The processes whose parent is `parent`, by pid.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid …`: the fields after the last ')'.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            ppid == Some(parent)
        })
        .collect();
    out.sort_unstable();
    out
}

/// `bytes` of text that gzip compresses about 8 to 1 and that costs level 9 some work: words of
/// a small vocabulary in a pseudo-random (but fixed) order.
pub fn compressible_text(bytes: usize) -> String {
    const WORDS: [&str; 16] =
        ["alpha", "beta", "gamma", "delta", "oxeye", "profile", "span", "sample", "trace", "nginx", "worker", "request", "response", "kernel", "thread", "link"];
    let mut text = String::with_capacity(bytes + 16);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut line = 0;
    while text.len() < bytes {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        line += 1;
        text.push(if line % 12 == 0 { '\n' } else { ' ' });
    }
    text.truncate(bytes);
    text
}

/// What a wrk run did.
#[derive(Debug, Clone)]
pub struct WrkRun {
    /// wrk's process id.
    pub pid: u32,
    /// The requests it completed.
    pub completed: u64,
    /// Its report.
    pub report: String,
}

/// Runs `wrk -t1 -cCONNECTIONS -dSECONDS -H HEADER url` (a load set by wall-clock time) as a
/// process of the test, so that its pid is known; asserts it succeeded and completed at least
/// `at_least` requests.
pub fn wrk_with_header(url: &str, connections: u64, seconds: u64, header: &str, at_least: u64) -> WrkRun {
    let _waiting = waiting_for(format!("running wrk -c{connections} -d{seconds}s on {url}"));
    let mut wrk = spawn(
        Command::new("wrk")
            .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--timeout", "5s", "-H", header])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
        "wrk",
    );
    let pid = wrk.id();
    // Its report is a few hundred bytes: the pipe holds it until wrk exits.
    let exited = wrk.wait_at_most(Duration::from_secs(seconds + 30));
    let mut report = String::new();
    if let Some(mut stdout) = wrk.child_mut().stdout.take() {
        let _ = stdout.read_to_string(&mut report);
    }
    assert!(exited.status.success(), "wrk failed ({}): {}", exited.status, report.replace('\n', " | "));
    let completed = report
        .lines()
        .find_map(|line| line.trim().split_once(" requests in ")?.0.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("wrk printed no request count: {}", report.replace('\n', " | ")));
    assert!(completed >= at_least, "wrk completed only {completed} requests, want {at_least} or more: {}", report.replace('\n', " | "));
    WrkRun { pid, completed, report }
}

// ---------------------------------------------------------------------------------------------
// OTLP: samples with their links.

/// A trace and span a sample is linked to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpanLink {
    /// 16 bytes when valid.
    pub trace_id: Vec<u8>,
    /// 8 bytes when valid.
    pub span_id: Vec<u8>,
}

impl std::fmt::Display for SpanLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trace {} span {}", hex(&self.trace_id), hex(&self.span_id))
    }
}

/// One OTLP sample with its stack named and its link resolved.
#[derive(Debug, Clone)]
pub struct LinkedSample {
    /// The `process.pid` resource attribute (`""` if absent).
    pub pid: String,
    /// The `thread.id` sample attribute (`""` if absent).
    pub tid: String,
    /// Function names, innermost first.
    pub frames: Vec<String>,
    /// One per event.
    pub timestamps: Vec<u64>,
    /// The sample's `link_index`, as sent.
    pub link_index: i32,
    /// The `link_table` entry it names; `None` for index 0 (and for an index out of the table,
    /// which `otlp_sink::check::all` reports).
    pub link: Option<SpanLink>,
}

impl LinkedSample {
    /// Whether a frame of the stack is Python function `name`.
    pub fn has_function(&self, name: &str) -> bool {
        self.frames.iter().any(|f| is_function(f, name))
    }
}

/// Every sample of `request`, in message order, with its link: the raw samples give the link
/// index, [`otlp_sink::stacks`] (which walks them in the same order) the names.
pub fn linked_samples(request: &ExportProfilesServiceRequest) -> Vec<LinkedSample> {
    let decoded = otlp_sink::stacks(request);
    let links = request.dictionary.as_ref().map(|d| d.link_table.as_slice()).unwrap_or_default();
    let raw: Vec<i32> = request
        .resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles)
        .flat_map(|sp| &sp.profiles)
        .flat_map(|p| &p.samples)
        .map(|s| s.link_index)
        .collect();
    assert_eq!(raw.len(), decoded.len(), "otlp_sink::stacks decoded {} samples of a request holding {}", decoded.len(), raw.len());
    raw.into_iter()
        .zip(decoded)
        .map(|(link_index, sample)| {
            let link = usize::try_from(link_index)
                .ok()
                .filter(|&i| i != 0)
                .and_then(|i| links.get(i))
                .map(|l| SpanLink { trace_id: l.trace_id.clone(), span_id: l.span_id.clone() });
            LinkedSample {
                pid: sample.resource.get("process.pid").cloned().unwrap_or_default(),
                tid: sample.attributes.get("thread.id").cloned().unwrap_or_default(),
                frames: sample.frames,
                timestamps: sample.timestamps,
                link_index,
                link,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// pprof: samples with their labels.

/// A pprof label's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// A string label.
    Str(String),
    /// A number label.
    Num(i64),
}

impl Label {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Label::Str(s) => Some(s),
            Label::Num(_) => None,
        }
    }
}

/// One sample of a pprof profile.
#[derive(Debug, Clone)]
pub struct PprofSample {
    /// Function names, leaf first (one per line of each location).
    pub frames: Vec<String>,
    /// Its first value (the sample count in oxeye's profiles).
    pub count: i64,
    /// Its labels by key.
    pub labels: BTreeMap<String, Label>,
}

impl PprofSample {
    /// Whether a frame of the stack is Python function `name`.
    pub fn has_function(&self, name: &str) -> bool {
        self.frames.iter().any(|f| is_function(f, name))
    }

    /// The string label `key`.
    pub fn str_label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).and_then(Label::as_str)
    }

    /// The number label `key`.
    pub fn num_label(&self, key: &str) -> Option<i64> {
        match self.labels.get(key) {
            Some(Label::Num(n)) => Some(*n),
            _ => None,
        }
    }
}

/// Reads a gzipped pprof profile (`profile.pb.gz`).
pub fn read_pprof(path: &Path) -> Vec<PprofSample> {
    let bytes = gunzip(path);
    decode_pprof(&bytes).unwrap_or_else(|e| panic!("{} is not a pprof profile: {e}", path.display()))
}

/// Decodes an uncompressed pprof `Profile`.
pub fn decode_pprof(bytes: &[u8]) -> Result<Vec<PprofSample>, String> {
    struct RawSample {
        locations: Vec<u64>,
        values: Vec<i64>,
        labels: Vec<(i64, i64, i64)>,
    }
    let mut samples = Vec::new();
    let mut locations: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut functions: BTreeMap<u64, i64> = BTreeMap::new();
    let mut strings: Vec<String> = Vec::new();
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        match (number, value) {
            // Profile.sample
            (2, Wire::Bytes(sample)) => {
                let mut raw = RawSample { locations: Vec::new(), values: Vec::new(), labels: Vec::new() };
                for field in Fields::new(sample) {
                    match field? {
                        (1, value) => raw.locations.extend(value.varints()?),
                        (2, value) => raw.values.extend(value.varints()?.into_iter().map(|v| v as i64)),
                        (3, Wire::Bytes(label)) => {
                            let (mut key, mut str, mut num) = (0, 0, 0);
                            for field in Fields::new(label) {
                                match field? {
                                    (1, Wire::Varint(v)) => key = v as i64,
                                    (2, Wire::Varint(v)) => str = v as i64,
                                    (3, Wire::Varint(v)) => num = v as i64,
                                    _ => {}
                                }
                            }
                            raw.labels.push((key, str, num));
                        }
                        _ => {}
                    }
                }
                samples.push(raw);
            }
            // Profile.location: id, and each line's function id.
            (4, Wire::Bytes(location)) => {
                let (mut id, mut lines) = (0, Vec::new());
                for field in Fields::new(location) {
                    match field? {
                        (1, Wire::Varint(v)) => id = v,
                        (4, Wire::Bytes(line)) => {
                            for field in Fields::new(line) {
                                if let (1, Wire::Varint(function)) = field? {
                                    lines.push(function);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                locations.insert(id, lines);
            }
            // Profile.function: id and name.
            (5, Wire::Bytes(function)) => {
                let (mut id, mut name) = (0, 0);
                for field in Fields::new(function) {
                    match field? {
                        (1, Wire::Varint(v)) => id = v,
                        (2, Wire::Varint(v)) => name = v as i64,
                        _ => {}
                    }
                }
                functions.insert(id, name);
            }
            // Profile.string_table
            (6, Wire::Bytes(s)) => strings.push(String::from_utf8(s.to_vec()).map_err(|_| "a string that is not UTF-8".to_owned())?),
            _ => {}
        }
    }
    let string = |index: i64| -> Result<String, String> { usize::try_from(index).ok().and_then(|i| strings.get(i)).cloned().ok_or_else(|| format!("string index {index} out of the table ({})", strings.len())) };
    samples
        .into_iter()
        .map(|raw| {
            let mut frames = Vec::new();
            for location in &raw.locations {
                let lines = locations.get(location).ok_or_else(|| format!("no location {location}"))?;
                for function in lines {
                    let name = functions.get(function).ok_or_else(|| format!("no function {function}"))?;
                    frames.push(string(*name)?);
                }
            }
            let mut labels = BTreeMap::new();
            for (key, str, num) in raw.labels {
                labels.insert(string(key)?, if str != 0 { Label::Str(string(str)?) } else { Label::Num(num) });
            }
            Ok(PprofSample { frames, count: raw.values.first().copied().unwrap_or(0), labels })
        })
        .collect()
}


/// OTLP's `SPAN_KIND_SERVER`.
pub const SPAN_KIND_SERVER: i32 = 2;

/// Sends `GET {path}/N` requests one after the other, each on its own connection with a
/// `traceparent` of a new trace, for `load` of wall time; returns the trace IDs sent.
pub fn send_traced_requests(port: u16, path: &str, load: Duration) -> HashSet<Vec<u8>> {
    let _waiting = waiting_for(format!("sending requests to the Python server on port {port} for {load:?}"));
    // Trace IDs of this run only: the test's pid and the time, then the request's number.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let run = (u64::from(std::process::id()) << 40) ^ now;
    let until = Instant::now() + load;
    let mut sent = HashSet::new();
    for i in 1u64.. {
        if Instant::now() >= until {
            break;
        }
        deadline::check();
        let trace = format!("{run:016x}{i:016x}");
        let header = format!("traceparent: 00-{trace}-{:016x}-01\r\n", 0x00f0_67aa_0000_0000 | i);
        let mut connection = Connection::open(port);
        connection.send(&[&format!("{path}/{i}")], &header);
        let response = connection.try_receive().unwrap_or_else(|| panic!("request {i} to the Python server (port {port}) got no whole response within 10 s"));
        assert_eq!(response.status, 200, "request {i} to the Python server: {}", response.body);
        sent.insert(unhex(&trace).expect("hex"));
    }
    sent
}

/// The server spans of process `pid`.
pub fn server_spans(sink: &Sink, pid: &str) -> Vec<DecodedSpan> {
    sink.all_spans().into_iter().filter(|s| s.kind == SPAN_KIND_SERVER && s.resource.get("process.pid").map(String::as_str) == Some(pid)).collect()
}

/// Waits (at most `timeout`) until every trace in `sent` has a server span of `pid`; the
/// caller checks what came.
pub fn wait_for_server_spans(sink: &Sink, pid: &str, sent: &HashSet<Vec<u8>>, timeout: Duration) {
    let _waiting = waiting_for(format!("waiting for the server spans of {} requests", sent.len()));
    let until = Instant::now() + timeout;
    loop {
        let traces: HashSet<Vec<u8>> = server_spans(sink, pid).into_iter().map(|s| s.trace_id).collect();
        if sent.is_subset(&traces) || Instant::now() > until {
            return;
        }
        deadline::check();
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::encode::{put_field, put_int};

    #[test]
    fn pprof_samples_come_back_with_frames_and_labels() {
        let strings = ["", "compute_in_request", "Handler.do_GET", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736", "pid"];
        let mut profile = Vec::new();
        // One sample: locations 1 (leaf) and 2, packed; values 3 and 3000, unpacked; two labels.
        let mut sample = Vec::new();
        put_field(&mut sample, 1, &[1, 2]);
        put_int(&mut sample, 2, 3);
        put_int(&mut sample, 2, 3000);
        let mut label = Vec::new();
        put_int(&mut label, 1, 3);
        put_int(&mut label, 2, 4);
        put_field(&mut sample, 3, &label);
        let mut label = Vec::new();
        put_int(&mut label, 1, 5);
        put_int(&mut label, 3, 4242);
        put_field(&mut sample, 3, &label);
        put_field(&mut profile, 2, &sample);
        for (id, function) in [(1u64, 10u64), (2, 20)] {
            let mut line = Vec::new();
            put_int(&mut line, 1, function);
            put_int(&mut line, 2, 7);
            let mut location = Vec::new();
            put_int(&mut location, 1, id);
            put_int(&mut location, 3, 0x1234);
            put_field(&mut location, 4, &line);
            put_field(&mut profile, 4, &location);
        }
        for (id, name) in [(10u64, 1u64), (20, 2)] {
            let mut function = Vec::new();
            put_int(&mut function, 1, id);
            put_int(&mut function, 2, name);
            put_field(&mut profile, 5, &function);
        }
        for s in strings {
            put_field(&mut profile, 6, s.as_bytes());
        }
        let samples = decode_pprof(&profile).expect("decodes");
        assert_eq!(samples.len(), 1);
        let sample = &samples[0];
        assert_eq!(sample.frames, ["compute_in_request", "Handler.do_GET"]);
        assert_eq!(sample.count, 3);
        assert_eq!(sample.str_label("trace_id"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(sample.num_label("pid"), Some(4242));
        assert!(sample.has_function("compute_in_request") && !sample.has_function("compute"));
        assert!(decode_pprof(&profile[..profile.len() - 1]).is_err(), "a cut message");
    }

    #[test]
    fn function_names_match_plain_and_folded() {
        assert!(is_function("background_spin", "background_spin"));
        assert!(is_function("background_spin (<string>:12)", "background_spin"));
        assert!(!is_function("background_spinner", "background_spin"));
        assert_eq!(hex(&[0x00, 0xf0, 0x67]), "00f067");
        assert_eq!(unhex("00F067"), Some(vec![0x00, 0xf0, 0x67]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
