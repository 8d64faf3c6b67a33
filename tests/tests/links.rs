//! Samples linked to spans: CPU samples taken on a thread while it serves an HTTP request (from
//! the server's receive of the request to its send of the response) carry the request's server
//! span, so that a backend can show the code a slow request ran. A real Python
//! `ThreadingHTTPServer` computes in each request (`compute_in_request`) while another of its
//! threads computes outside any request (`background_spin`); the real oxeye profiles it at
//! 200 Hz and exports profiles and spans to one in-process OTLP receiver. Checked there:
//!
//! - a profile sample's `link_index` names a `link_table` entry equal to (trace_id, span_id) of
//!   the server span oxeye exported for the request, and its timestamps lie within the span;
//! - samples in `compute_in_request` are (nearly) all linked, those in `background_spin` never;
//! - each server span counts its samples in `oxeye.cpu.samples`;
//! - `profile.pb.gz` labels linked samples with `trace_id` and `span_id` in hex.
//!
//! And with worker processes: nginx with two workers gzips a page at level 9 in each request
//! while wrk loads it and oxeye profiles the whole host at 997 Hz. The workers' samples are
//! linked to their own server spans, within them; wrk's (a client's) never.

use std::{
    collections::{BTreeMap, HashMap},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use otlp_sink::{DecodedSpan, Sink, SinkConfig};
use oxeye_tests::{
    deadline::{self, spawn, waiting_for},
    links::{
        hex, linked_samples, read_pprof, send_traced_requests, server_spans, unhex, wait_for_server_spans, wrk_with_header, GzipNginx, LinkedSample, SpanLink,
        LINKED_SERVER,
    },
    output,
    servers::{free_port, wait_for_port},
    Oxeye,
};

/// The server's and oxeye's starts, 4 s of requests, the last exports and the stop, with room
/// for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(150);
/// `SpanKind::Server`.
const SERVER: i32 = 2;
/// How long the client sends requests, one after the other.
const LOAD: Duration = Duration::from_secs(4);
/// The server's own end, should the test not stop it: past the test's limit.
const SERVER_LIFETIME_SECS: &str = "180";
/// Sampling rate: 40 ms of computing per request is about 8 samples.
const RATE: &str = "200";
/// Slack at a span's end for a sample's timestamp.
const END_SLACK_NS: u64 = 1_000_000;
/// The span attribute counting a request's samples.
const CPU_SAMPLES: &str = "oxeye.cpu.samples";

#[test]
fn python_request_samples_link_to_their_spans() {
    let _deadline = deadline::deadline(LIMIT);
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let port = free_port();
    let mut python = Command::new("python3");
    python.args(["-c", LINKED_SERVER, &port.to_string(), SERVER_LIFETIME_SECS]).stdin(Stdio::null()).stdout(Stdio::null());
    for variable in ["PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONOPTIMIZE", "PYTHONINSPECT"] {
        python.env_remove(variable);
    }
    let mut server = spawn(&mut python, "python3 ThreadingHTTPServer");
    wait_for_port(port, Duration::from_secs(20));
    let pid = server.id().to_string();

    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start("links", &["-F", RATE, "--pid", &pid, "--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"]);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));

    let sent = send_traced_requests(port, "/work", LOAD);
    wait_for_server_spans(&sink, &pid, &sent, Duration::from_secs(20));
    // The profiles of the last requests: a reporter interval and then some.
    {
        let _waiting = waiting_for("letting oxeye export the last samples (2 s)");
        thread::sleep(Duration::from_secs(2));
    }
    let finished = oxeye.stop();
    finished.assert_success();
    server.stop();

    // The spans: one per request the client sent.
    let spans = server_spans(&sink, &pid);
    let mut per_trace: HashMap<&[u8], usize> = HashMap::new();
    for span in &spans {
        *per_trace.entry(span.trace_id.as_slice()).or_default() += 1;
    }
    let missing = sent.iter().filter(|t| !per_trace.contains_key(t.as_slice())).count();
    let repeated = sent.iter().filter(|t| per_trace.get(t.as_slice()).is_some_and(|&n| n > 1)).count();
    let foreign = spans.iter().filter(|s| !sent.contains(&s.trace_id)).count();
    assert!(
        missing == 0 && repeated == 0,
        "server spans of the Python server (pid {pid}): {missing} of the {} requests sent have none, {repeated} have several ({} spans, {foreign} of traces not sent)\n{}",
        sent.len(),
        spans.len(),
        finished.stderr
    );
    let by_link: HashMap<SpanLink, &DecodedSpan> = spans.iter().map(|s| (SpanLink { trace_id: s.trace_id.clone(), span_id: s.span_id.clone() }, s)).collect();

    // The profile samples of the server, with their links.
    let requests = sink.requests();
    for (i, request) in requests.iter().enumerate() {
        if let Err(why) = otlp_sink::check::all(request) {
            panic!("profiles request {i} of {} is invalid: {why}", requests.len());
        }
    }
    let samples: Vec<LinkedSample> = requests.iter().flat_map(linked_samples).filter(|s| s.pid == pid).collect();
    let events = |selected: &dyn Fn(&LinkedSample) -> bool| -> (usize, usize) {
        let chosen = samples.iter().filter(|s| selected(s));
        chosen.fold((0, 0), |(linked, all), s| (linked + if s.link_index != 0 { s.timestamps.len() } else { 0 }, all + s.timestamps.len()))
    };
    let (in_request_linked, in_request) = events(&|s| s.has_function("compute_in_request"));
    let (background_linked, background) = events(&|s| s.has_function("background_spin") && !s.has_function("compute_in_request"));
    let (linked, all) = events(&|_| true);

    // Every linked sample names a server span of the process, and lies within it.
    let mut unmatched: Vec<String> = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    let mut linked_per_span: HashMap<&[u8], usize> = HashMap::new();
    for sample in samples.iter().filter(|s| s.link_index != 0) {
        let span = sample.link.as_ref().and_then(|link| by_link.get(link));
        let Some(span) = span else {
            let what = sample.link.as_ref().map_or_else(|| format!("link_index {} (no entry)", sample.link_index), SpanLink::to_string);
            unmatched.push(format!("{} timestamps of thread {} linked to {what}, stack {}", sample.timestamps.len(), sample.tid, innermost(&sample.frames)));
            continue;
        };
        *linked_per_span.entry(span.span_id.as_slice()).or_default() += sample.timestamps.len();
        for &time in &sample.timestamps {
            if time < span.start_unix_nano || time > span.end_unix_nano + END_SLACK_NS {
                let (from_start, from_end) = (time as i128 - span.start_unix_nano as i128, time as i128 - span.end_unix_nano as i128);
                outside.push(format!("a sample {from_start} ns from the start and {from_end} ns from the end of span {} ({} ns long)", hex(&span.span_id), span.end_unix_nano.saturating_sub(span.start_unix_nano)));
            }
        }
    }

    // oxeye.cpu.samples on every span.
    let counted: Vec<Option<u64>> = spans.iter().map(|s| s.attributes.get(CPU_SAMPLES).and_then(|v| v.parse().ok())).collect();
    let without = counted.iter().filter(|c| c.is_none()).count();
    let counted_sum: u64 = counted.iter().flatten().sum();
    let with_samples = counted.iter().filter(|c| c.is_some_and(|n| n >= 1)).count();
    let exact = spans.iter().zip(&counted).filter(|(s, c)| c.is_some_and(|n| n as usize == linked_per_span.get(s.span_id.as_slice()).copied().unwrap_or(0))).count();

    // pprof: the same links as labels.
    let pprof = Pprof::read(&finished.out_dir.join("profile.pb.gz"), &pid, &by_link);

    eprintln!(
        "links: {} requests, {} server spans; compute_in_request: {in_request_linked} of {in_request} sample timestamps linked ({:.1}%); \
         background_spin: {background_linked} of {background} linked; the process: {linked} of {all} linked, {} samples to no span, {} timestamps outside their span; \
         {CPU_SAMPLES}: sum {counted_sum} over {} spans ({with_samples} at 1 or more, {without} without it, {exact} equal to their linked timestamps); \
         pprof: compute_in_request {} of {} labelled, background_spin {} of {}, {} labelled in all",
        sent.len(),
        spans.len(),
        percent(in_request_linked as f64, in_request as f64),
        unmatched.len(),
        outside.len(),
        spans.len(),
        pprof.in_request_labelled,
        pprof.in_request,
        pprof.background_labelled,
        pprof.background,
        pprof.labelled,
    );
    let log = || format!("(oxeye's outputs and log: {})", finished.out_dir.display());

    // Enough of each kind of sample for the shares below to mean something.
    assert!(in_request >= 50, "only {in_request} samples of pid {pid} in compute_in_request ({all} in all): too few to judge {}", log());
    assert!(background >= 50, "only {background} samples of pid {pid} in background_spin ({all} in all): too few to judge {}", log());
    // a. Computing in a request is linked.
    assert!(
        in_request_linked as f64 >= 0.9 * in_request as f64,
        "a: {in_request_linked} of {in_request} sample timestamps in compute_in_request are linked ({:.1}%, want 90% or more) {}",
        percent(in_request_linked as f64, in_request as f64),
        log()
    );
    // b. To the span of the request, while it lasted.
    assert!(unmatched.is_empty(), "b: {} of the linked samples name no server span of pid {pid} ({} spans), first: {} {}", unmatched.len(), spans.len(), unmatched[0], log());
    assert!(outside.is_empty(), "b: {} of {linked} linked sample timestamps lie outside their span (1 ms slack at the end), first: {} {}", outside.len(), outside[0], log());
    // c. Computing outside any request is not.
    assert_eq!(background_linked, 0, "c: {background_linked} of {background} sample timestamps in background_spin (outside any request) are linked {}", log());
    // d. Each span counts its samples.
    assert_eq!(without, 0, "d: {without} of {} server spans lack an integer {CPU_SAMPLES} attribute {}", spans.len(), log());
    assert!(
        counted_sum.abs_diff(linked as u64) as f64 <= 0.2 * linked as f64,
        "d: {CPU_SAMPLES} sums to {counted_sum} over {} spans, but {linked} sample timestamps are linked (want within 20%) {}",
        spans.len(),
        log()
    );
    assert!(
        with_samples as f64 >= 0.9 * spans.len() as f64,
        "d: only {with_samples} of {} server spans (40 ms of computing each, about 8 samples at {RATE} Hz) have {CPU_SAMPLES} of 1 or more {}",
        spans.len(),
        log()
    );
    // pprof.
    assert!(pprof.in_request >= 50, "pprof: only {} samples of pid {pid} in compute_in_request {}", pprof.in_request, log());
    assert!(
        pprof.in_request_labelled as f64 >= 0.9 * pprof.in_request as f64,
        "pprof: {} of {} samples in compute_in_request have trace_id and span_id labels ({:.1}%, want 90% or more) {}",
        pprof.in_request_labelled,
        pprof.in_request,
        percent(pprof.in_request_labelled as f64, pprof.in_request as f64),
        log()
    );
    assert!(pprof.wrong.is_empty(), "pprof: {} labelled samples are wrong, first: {} {}", pprof.wrong.len(), pprof.wrong[0], log());
    assert_eq!(pprof.background_labelled, 0, "pprof: {} of {} samples in background_spin are labelled with a trace {}", pprof.background_labelled, pprof.background, log());
}

/// nginx's worker processes.
const NGINX_WORKERS: usize = 2;
/// The page nginx gzips in each request: 256 KiB of text, some 50 ms of level 9 compression.
const PAGE_BYTES: usize = 256 * 1024;
/// Host-wide sampling rate for the nginx test.
const NGINX_RATE: &str = "997";
/// wrk's connections and wall-clock seconds.
const WRK_CONNECTIONS: u64 = 4;
const WRK_SECONDS: u64 = 3;
/// Fewest linked sample timestamps of the workers the nginx test wants.
const LEAST_LINKED: usize = 20;

#[test]
fn nginx_worker_samples_link_to_their_requests() {
    let _deadline = deadline::deadline(LIMIT);
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let nginx = GzipNginx::start("links-nginx", NGINX_WORKERS, PAGE_BYTES);
    let workers: Vec<String> = nginx.workers(NGINX_WORKERS, Duration::from_secs(10)).iter().map(u32::to_string).collect();
    // The page comes gzipped: the compression is the work in the request.
    let head = output(
        Command::new("curl").args(["-s", "--max-time", "10", "-H", "Accept-Encoding: gzip", "-o", "/dev/null", "-D", "-"]).arg(nginx.page_url()),
        "curl (gzip check)",
    );
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "nginx did not gzip {}: response head {:?}", nginx.page_url(), head.replace("\r\n", " | "));

    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start("links-nginx", &["-F", NGINX_RATE, "--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"]);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));

    let wrk = wrk_with_header(&nginx.page_url(), WRK_CONNECTIONS, WRK_SECONDS, "Accept-Encoding: gzip", 10);
    let wrk_pid = wrk.pid.to_string();
    // A span for every request wrk completed (nginx may have served up to a connection's
    // worth more).
    {
        let _waiting = waiting_for(format!("waiting for the server spans of the {} requests wrk completed", wrk.completed));
        let until = Instant::now() + Duration::from_secs(20);
        while (server_spans_of(&sink, &workers).len() as u64) < wrk.completed && Instant::now() < until {
            deadline::check();
            thread::sleep(Duration::from_millis(200));
        }
    }
    {
        let _waiting = waiting_for("letting oxeye export the last samples (2 s)");
        thread::sleep(Duration::from_secs(2));
    }
    let finished = oxeye.stop();
    finished.assert_success();
    drop(nginx);
    let log = || format!("(oxeye's outputs and log: {})", finished.out_dir.display());

    // Every server span of every process (a linked sample of any process must name one), and
    // the nginx workers'.
    let all_spans: Vec<DecodedSpan> = sink.all_spans().into_iter().filter(|s| s.kind == SERVER).collect();
    let by_link: HashMap<SpanLink, &DecodedSpan> = all_spans.iter().map(|s| (SpanLink { trace_id: s.trace_id.clone(), span_id: s.span_id.clone() }, s)).collect();
    let span_pid = |s: &DecodedSpan| s.resource.get("process.pid").cloned().unwrap_or_default();
    let worker_spans: Vec<&DecodedSpan> = all_spans.iter().filter(|s| workers.contains(&span_pid(s))).collect();
    assert!(
        worker_spans.len() as u64 >= wrk.completed,
        "only {} server spans of the nginx workers ({}) for the {} requests wrk completed {}",
        worker_spans.len(),
        workers.join(", "),
        wrk.completed,
        log()
    );

    let requests = sink.requests();
    for (i, request) in requests.iter().enumerate() {
        if let Err(why) = otlp_sink::check::all(request) {
            panic!("profiles request {i} of {} is invalid: {why}", requests.len());
        }
    }
    let samples: Vec<LinkedSample> = requests.iter().flat_map(linked_samples).collect();

    // b. Every linked sample names a server span of its own process, and lies within it.
    let mut unmatched: Vec<String> = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    let mut linked_all = 0usize;
    for sample in samples.iter().filter(|s| s.link_index != 0) {
        linked_all += sample.timestamps.len();
        let span = sample.link.as_ref().and_then(|link| by_link.get(link));
        let Some(span) = span.filter(|span| span_pid(span) == sample.pid) else {
            let what = match (&sample.link, span) {
                (None, _) => format!("link_index {} (no entry)", sample.link_index),
                (Some(link), None) => format!("{link}, no server span"),
                (Some(link), Some(span)) => format!("{link}, a server span of pid {}", span_pid(span)),
            };
            unmatched.push(format!("{} timestamps of pid {} thread {} linked to {what}, stack {}", sample.timestamps.len(), sample.pid, sample.tid, innermost(&sample.frames)));
            continue;
        };
        for &time in &sample.timestamps {
            if time < span.start_unix_nano || time > span.end_unix_nano + END_SLACK_NS {
                let (from_start, from_end) = (time as i128 - span.start_unix_nano as i128, time as i128 - span.end_unix_nano as i128);
                outside.push(format!(
                    "a sample of pid {} {from_start} ns from the start and {from_end} ns from the end of span {} ({} ns long)",
                    sample.pid,
                    hex(&span.span_id),
                    span.end_unix_nano.saturating_sub(span.start_unix_nano)
                ));
            }
        }
    }

    // Per worker: linked and all sample timestamps, spans, and the spans' oxeye.cpu.samples.
    struct Worker {
        pid: String,
        linked: usize,
        all: usize,
        spans: usize,
        counted: u64,
    }
    let per_worker: Vec<Worker> = workers
        .iter()
        .map(|pid| {
            let (linked, all) = samples.iter().filter(|s| &s.pid == pid).fold((0, 0), |(linked, all), s| {
                (linked + if s.link_index != 0 { s.timestamps.len() } else { 0 }, all + s.timestamps.len())
            });
            let spans: Vec<&&DecodedSpan> = worker_spans.iter().filter(|s| &span_pid(s) == pid).collect();
            let counted = spans.iter().filter_map(|s| s.attributes.get(CPU_SAMPLES)?.parse::<u64>().ok()).sum();
            Worker { pid: pid.clone(), linked, all, spans: spans.len(), counted }
        })
        .collect();
    let linked: usize = per_worker.iter().map(|w| w.linked).sum();
    let all: usize = per_worker.iter().map(|w| w.all).sum();
    let counted: u64 = per_worker.iter().map(|w| w.counted).sum();
    let without = worker_spans.iter().filter(|s| s.attributes.get(CPU_SAMPLES).and_then(|v| v.parse::<u64>().ok()).is_none()).count();
    // c. wrk is a client: none of its samples is linked.
    let (wrk_linked, wrk_all) = samples.iter().filter(|s| s.pid == wrk_pid).fold((0usize, 0usize), |(linked, all), s| {
        (linked + if s.link_index != 0 { s.timestamps.len() } else { 0 }, all + s.timestamps.len())
    });

    eprintln!(
        "links-nginx: wrk completed {} requests ({PAGE_BYTES} B page gzipped, {WRK_CONNECTIONS} connections, {WRK_SECONDS} s); workers {}; \
         the workers: {linked} of {all} sample timestamps linked ({:.1}%), {} server spans, {CPU_SAMPLES} sum {counted} ({without} spans without it); \
         per worker: {}; wrk (pid {wrk_pid}): {wrk_linked} of {wrk_all} linked; all processes: {linked_all} linked, {} to no span of their process, {} outside their span",
        wrk.completed,
        workers.join(", "),
        percent(linked as f64, all as f64),
        worker_spans.len(),
        per_worker
            .iter()
            .map(|w| format!("pid {} {} of {} linked, {} spans, {CPU_SAMPLES} {}", w.pid, w.linked, w.all, w.spans, w.counted))
            .collect::<Vec<_>>()
            .join("; "),
        unmatched.len(),
        outside.len(),
    );

    // a. The workers' compressing is linked.
    assert!(linked >= LEAST_LINKED, "a: only {linked} of the nginx workers' {all} sample timestamps are linked, want {LEAST_LINKED} or more {}", log());
    // b. To a server span of the same process, while it lasted.
    assert!(unmatched.is_empty(), "b: {} linked samples name no server span of their own process ({} server spans), first: {} {}", unmatched.len(), all_spans.len(), unmatched[0], log());
    assert!(outside.is_empty(), "b: {} of {linked_all} linked sample timestamps lie outside their span (1 ms slack at the end), first: {} {}", outside.len(), outside[0], log());
    // c. Never a client's.
    assert_eq!(wrk_linked, 0, "c: {wrk_linked} of {wrk_all} sample timestamps of wrk (pid {wrk_pid}, a client) are linked {}", log());
    // d. Both workers, when both served requests.
    for worker in &per_worker {
        if worker.spans >= 3 {
            assert!(worker.linked > 0, "d: nginx worker {} served {} requests ({} sample timestamps) but none of its samples is linked {}", worker.pid, worker.spans, worker.all, log());
        } else {
            eprintln!("links-nginx: worker {} served {} requests: the kernel gave the connections to the other worker", worker.pid, worker.spans);
        }
    }
    // e. The spans count (at least about) the samples linked to them.
    assert!(
        counted as f64 >= 0.8 * linked as f64,
        "e: {CPU_SAMPLES} sums to {counted} over the {} server spans of the nginx workers, but {linked} of their sample timestamps are linked (want 80% of that or more) {}",
        worker_spans.len(),
        log()
    );
}

/// The server spans of processes `pids`.
fn server_spans_of(sink: &Sink, pids: &[String]) -> Vec<DecodedSpan> {
    sink.all_spans().into_iter().filter(|s| s.kind == SERVER && s.resource.get("process.pid").is_some_and(|pid| pids.contains(pid))).collect()
}

/// What `profile.pb.gz` says of the server's samples.
struct Pprof {
    /// Samples in compute_in_request, and those labelled with a trace.
    in_request: i64,
    in_request_labelled: i64,
    /// Samples in background_spin (not in compute_in_request), and those labelled.
    background: i64,
    background_labelled: i64,
    /// Labelled samples of the process.
    labelled: i64,
    /// Labels that are malformed or name no server span of the process.
    wrong: Vec<String>,
}

impl Pprof {
    fn read(path: &std::path::Path, pid: &str, spans: &HashMap<SpanLink, &DecodedSpan>) -> Pprof {
        let pid: i64 = pid.parse().expect("a pid");
        let mut out = Pprof { in_request: 0, in_request_labelled: 0, background: 0, background_labelled: 0, labelled: 0, wrong: Vec::new() };
        let mut wrong_by_label: BTreeMap<String, i64> = BTreeMap::new();
        for sample in read_pprof(path).into_iter().filter(|s| s.num_label("pid") == Some(pid)) {
            let (trace, span) = (sample.str_label("trace_id"), sample.str_label("span_id"));
            let labelled = trace.is_some() || span.is_some();
            if sample.has_function("compute_in_request") {
                out.in_request += sample.count;
                out.in_request_labelled += if labelled { sample.count } else { 0 };
            } else if sample.has_function("background_spin") {
                out.background += sample.count;
                out.background_labelled += if labelled { sample.count } else { 0 };
            }
            if !labelled {
                continue;
            }
            out.labelled += sample.count;
            let link = match (trace, span) {
                (Some(t), Some(s)) if t.len() == 32 && s.len() == 16 => unhex(t).zip(unhex(s)).map(|(trace_id, span_id)| SpanLink { trace_id, span_id }),
                _ => None,
            };
            let problem = match link {
                None => Some(format!("labels trace_id={trace:?} span_id={span:?} (want 32 and 16 hex digits)")),
                Some(link) if !spans.contains_key(&link) => Some(format!("labels name no server span: {link}")),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                *wrong_by_label.entry(format!("{problem}, stack {}", innermost(&sample.frames))).or_default() += sample.count;
            }
        }
        out.wrong = wrong_by_label.into_iter().map(|(what, count)| format!("{count} samples: {what}")).collect();
        out
    }
}

/// The innermost frames of a stack (innermost first), for messages.
fn innermost(frames: &[String]) -> String {
    let shown: Vec<&str> = frames.iter().take(6).map(String::as_str).collect();
    format!("{}{}", shown.join(" <- "), if frames.len() > shown.len() { " <- …" } else { "" })
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
}
