//! Off-CPU profiling (`--off-cpu-threshold P`): when a thread of a profiled process is switched
//! out, oxeye records (with probability P; 1 here, for exact sums) its kernel and user stack
//! (Python frames named by function) and the time until it runs again. Real Python workloads
//! wait in known functions while the real oxeye exports to one in-process OTLP receiver and
//! writes its files. Checked:
//!
//! - a thread sleeping under `outer_wait()` → `middle_wait()` has (nearly) all its off-CPU time
//!   under that chain, and that time matches what the workload measured itself inside its sleep
//!   calls, in OTLP (a second profile per process, of sample type off_cpu/nanoseconds, one value
//!   per timestamp), in `off_cpu.folded`, in `off_cpu.pb.gz` and in `off_cpu.svg`;
//! - the off-CPU time of a Python server's request handler waiting in `wait_in_request()` is
//!   linked to the request's server span, and the linked off-CPU time plus the linked CPU
//!   samples times the sampling period account for the spans' durations;
//! - without the flag, there is no off-CPU profile and no off-CPU file.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use otlp_sink::{DecodedSpan, Sink, SinkConfig};
use oxeye_tests::{
    deadline::{self, spawn, waiting_for},
    links::{send_traced_requests, server_spans, wait_for_server_spans, SpanLink},
    off_cpu::{called_under, profile_types, read_pprof_values, typed_samples, TypedSample, CPU, OFF_CPU, SLEEPER, WAITING_SERVER},
    output_dir,
    servers::{free_port, wait_for_port},
    Folded, Oxeye, Spawned,
};

/// The workload's and oxeye's starts, the warm-up until oxeye names Python frames, 4 s of
/// load, the last exports and the stop, with room for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(150);
/// How long the workloads run their measured loads, in wall time.
const LOAD: Duration = Duration::from_secs(4);
/// How long oxeye may take, once started, to export a first named sample of the workload.
const READY: Duration = Duration::from_secs(40);
/// How long the last events of a load may take to reach the receiver.
const TAIL: Duration = Duration::from_secs(20);
/// One more reporter interval (1 s), and then some, after the last awaited event arrived.
const ONE_MORE_INTERVAL: Duration = Duration::from_millis(1500);
/// The Python server's own end, should the test not stop it: past the test's limit.
const SERVER_LIFETIME_SECS: &str = "180";
/// The share of off-CPU time that must be where the workload waits.
const SHARE: f64 = 0.9;
/// How far totals may be from what they must match.
const TOLERANCE: f64 = 0.1;

// ---------------------------------------------------------------------------------------------
// 1. A sleeping chain.

#[test]
fn sleeping_chain_off_cpu_time_is_under_its_chain() {
    let _deadline = deadline::deadline(LIMIT);
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let mut sleeper = Sleeper::start(LOAD);
    let pid = sleeper.pid();
    let addr = sink.addr().to_string();
    let oxeye = Oxeye::start(
        "off_cpu",
        &["--off-cpu-threshold", "1", "-F", "100", "--pid", &pid, "--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"],
    );
    // Ready once oxeye exports the warm-up thread's waits with their Python frames.
    let ready = wait_for_sample(&sink, "an off-CPU sample of the Python workload in warm_up", READY, |s| s.sample.pid == pid && s.is_off_cpu() && s.sample.has_function("warm_up"));
    assert!(
        ready,
        "oxeye exported no off-CPU sample of pid {pid} in warm_up within {READY:?} (the warm-up thread sleeps 9 ms then computes 1 ms in a loop)\n{}\n{}\n{}",
        describe(&sink, &pid),
        log(&oxeye.out_dir),
        sleeper.log()
    );
    sleeper.go();
    let result = sleeper.result(LOAD * 3 + Duration::from_secs(30));
    // The last waits: an off-CPU event of the sleeper from the last 100 ms of its loop.
    let tid = result.tid.to_string();
    let tail_seen = wait_for_sample(&sink, "the off-CPU events of the sleeper's last waits", TAIL, |s| {
        s.is_off_cpu() && s.sample.pid == pid && s.sample.tid == tid && s.sample.timestamps.iter().any(|&t| t + 100_000_000 >= result.end_unix_nano)
    });
    {
        let _waiting = waiting_for("letting oxeye export the last events (one more reporter interval)");
        thread::sleep(ONE_MORE_INTERVAL);
    }
    let finished = oxeye.stop();
    finished.assert_success();
    sleeper.stop();
    let out_dir = finished.out_dir.clone();
    let log = || format!("(oxeye's outputs and log: {})", out_dir.display());

    // OTLP.
    let requests = sink.requests();
    for (i, request) in requests.iter().enumerate() {
        if let Err(why) = otlp_sink::check::all(request) {
            panic!("profiles request {i} of {} is invalid: {why}", requests.len());
        }
    }
    let samples: Vec<TypedSample> = requests.iter().flat_map(typed_samples).filter(|s| s.sample.pid == pid).collect();
    let off: Vec<&TypedSample> = samples.iter().filter(|s| s.is_off_cpu()).collect();
    let wrong_unit: Vec<String> = off.iter().filter(|s| !s.is(OFF_CPU)).map(|s| format!("{}/{}", s.sample_type.0, s.sample_type.1)).collect();
    let misshapen: Vec<String> = off.iter().filter_map(|s| s.off_cpu_shape_problem().map(|p| format!("{p} (thread {}, stack {})", s.sample.tid, innermost(&s.sample.frames)))).collect();
    let worker: Vec<&&TypedSample> = off.iter().filter(|s| s.sample.tid == tid).collect();
    let worker_ns: i64 = worker.iter().map(|s| s.total()).sum();
    let worker_events: usize = worker.iter().map(|s| s.values.len()).sum();
    let in_chain = |s: &TypedSample| called_under(&s.sample.frames, "middle_wait", "outer_wait");
    let chain_ns: i64 = worker.iter().filter(|s| in_chain(s)).map(|s| s.total()).sum();
    let chain_events: usize = worker.iter().filter(|s| in_chain(s)).map(|s| s.values.len()).sum();
    // Elsewhere than the chain, for messages: the heaviest stacks.
    let mut elsewhere: HashMap<String, i64> = HashMap::new();
    for s in worker.iter().filter(|s| !in_chain(s)) {
        *elsewhere.entry(innermost(&s.sample.frames)).or_default() += s.total();
    }
    let mut elsewhere: Vec<(String, i64)> = elsewhere.into_iter().collect();
    elsewhere.sort_by_key(|(_, ns)| -ns);
    let elsewhere: String = elsewhere.iter().take(5).map(|(stack, ns)| format!("\n  {:.1} ms: {stack}", *ns as f64 / 1e6)).collect();

    // off_cpu.folded: root first.
    let folded_path = out_dir.join("off_cpu.folded");
    assert!(folded_path.is_file(), "oxeye wrote no {} {}", folded_path.display(), log());
    let folded = Folded::read(&folded_path);
    let folded_in_chain = |frames: &[String]| {
        let innermost_first: Vec<String> = frames.iter().rev().cloned().collect();
        called_under(&innermost_first, "middle_wait", "outer_wait")
    };
    let folded_chain_ns: u64 = folded.stacks.iter().filter(|s| folded_in_chain(&s.frames)).map(|s| s.count).sum();
    let folded_total_ns = folded.total();

    // off_cpu.pb.gz: the off_cpu/nanoseconds values, leaf first.
    let pprof_path = out_dir.join("off_cpu.pb.gz");
    assert!(pprof_path.is_file(), "oxeye wrote no {} {}", pprof_path.display(), log());
    let pprof = read_pprof_values(&pprof_path);
    let pprof_index = pprof.value_index(OFF_CPU);
    let pprof_chain_ns: i64 = pprof_index.map_or(0, |i| {
        pprof.samples.iter().filter(|(s, _)| called_under(&s.frames, "middle_wait", "outer_wait")).map(|(_, values)| values.get(i).copied().unwrap_or(0)).sum()
    });

    // off_cpu.svg.
    let svg_path = out_dir.join("off_cpu.svg");
    let svg = fs::read_to_string(&svg_path).unwrap_or_default();

    let slept = result.slept_ns as i64;
    let ms = |ns: i64| ns as f64 / 1e6;
    let off_by = |ns: i64| 100.0 * (ns - slept) as f64 / slept as f64;
    eprintln!(
        "off_cpu sleeping chain: the sleeper (tid {tid}) slept {:.1} ms in {} sleeps (its own measure); OTLP: {:.1} ms off CPU in {worker_events} events, \
         {:.1} ms in {chain_events} events under outer_wait → middle_wait ({:.1}% of its off-CPU time, {:+.1}% from its measure); \
         off_cpu.folded: {:.1} ms under the chain ({:+.1}%), {:.1} ms in all; off_cpu.pb.gz: {:.1} ms under the chain ({:+.1}%), sample types {:?}; \
         off-CPU samples of the process: {} ({} misshapen); the last waits {}",
        ms(slept),
        result.iterations,
        ms(worker_ns),
        ms(chain_ns),
        percent(chain_ns as f64, worker_ns as f64),
        off_by(chain_ns),
        ms(folded_chain_ns as i64),
        off_by(folded_chain_ns as i64),
        ms(folded_total_ns as i64),
        ms(pprof_chain_ns),
        off_by(pprof_chain_ns),
        pprof.sample_types,
        off.len(),
        misshapen.len(),
        if tail_seen { "arrived" } else { "did not arrive within the wait" },
    );

    // The profile's shape.
    assert!(wrong_unit.is_empty(), "off-CPU profiles of sample type {} (want {}/{}) {}", wrong_unit[0], OFF_CPU.0, OFF_CPU.1, log());
    assert!(misshapen.is_empty(), "{} of {} off-CPU samples of pid {pid} are misshapen (want one value per timestamp, none negative), first: {} {}", misshapen.len(), off.len(), misshapen[0], log());
    // Enough waits to judge: about 400 in 4 s.
    assert!(
        result.iterations >= 100 && chain_events as u64 >= result.iterations / 2,
        "the sleeper slept {} times, and oxeye recorded {chain_events} events under its chain ({worker_events} events of its thread {tid}): too few to judge\n{}\n{} {}",
        result.iterations,
        describe(&sink, &pid),
        elsewhere,
        log()
    );
    // a. The sleeper's off-CPU time is under its chain.
    assert!(
        chain_ns as f64 >= SHARE * worker_ns as f64,
        "a: {:.1} ms of the {:.1} ms the sleeper (thread {tid}) spent off CPU are under outer_wait → middle_wait ({:.1}%, want {}% or more); the rest, heaviest first (innermost frames first):{elsewhere}\n{}",
        ms(chain_ns),
        ms(worker_ns),
        percent(chain_ns as f64, worker_ns as f64),
        SHARE * 100.0,
        log()
    );
    // b. And it is the time the sleeper measured.
    assert!(
        (chain_ns - slept).abs() as f64 <= TOLERANCE * slept as f64,
        "b: oxeye recorded {:.1} ms off CPU under outer_wait → middle_wait, the sleeper measured {:.1} ms inside its sleep calls ({:+.1}%, want within {}%) {}",
        ms(chain_ns),
        ms(slept),
        off_by(chain_ns),
        TOLERANCE * 100.0,
        log()
    );
    // The files agree.
    assert!(
        (folded_chain_ns as i64 - slept).abs() as f64 <= TOLERANCE * slept as f64,
        "off_cpu.folded: {:.1} ms under outer_wait → middle_wait, the sleeper measured {:.1} ms ({:+.1}%, want within {}%); its heaviest lines:\n{} {}",
        ms(folded_chain_ns as i64),
        ms(slept),
        off_by(folded_chain_ns as i64),
        TOLERANCE * 100.0,
        heaviest(&folded),
        log()
    );
    assert!(pprof_index.is_some(), "off_cpu.pb.gz has no {}/{} values: its sample types are {:?} {}", OFF_CPU.0, OFF_CPU.1, pprof.sample_types, log());
    assert!(
        (pprof_chain_ns - slept).abs() as f64 <= TOLERANCE * slept as f64,
        "off_cpu.pb.gz: {:.1} ms under outer_wait → middle_wait, the sleeper measured {:.1} ms ({:+.1}%, want within {}%) {}",
        ms(pprof_chain_ns),
        ms(slept),
        off_by(pprof_chain_ns),
        TOLERANCE * 100.0,
        log()
    );
    assert!(svg.contains("middle_wait") && svg.contains("outer_wait"), "{} is missing or does not show middle_wait and outer_wait ({} bytes) {}", svg_path.display(), svg.len(), log());
}

// ---------------------------------------------------------------------------------------------
// 2. Waiting in a request.

#[test]
fn request_off_cpu_time_links_to_its_span() {
    /// Sampling rate; 10 ms of computing per request is about 2 samples.
    const RATE: u64 = 200;
    let _deadline = deadline::deadline(LIMIT);
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let port = free_port();
    let python_dir = output_dir("off_cpu-server");
    let python_log = python_dir.join("python.stderr");
    let mut python = python3();
    python
        .args(["-c", WAITING_SERVER, &port.to_string(), SERVER_LIFETIME_SECS])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&python_log).expect("create the Python server's stderr file"));
    let mut server = spawn(&mut python, "python3 ThreadingHTTPServer");
    wait_for_port(port, Duration::from_secs(20));
    let pid = server.id().to_string();

    let addr = sink.addr().to_string();
    let rate = RATE.to_string();
    let mut oxeye = Oxeye::start(
        "off_cpu-links",
        &["-F", &rate, "--off-cpu-threshold", "1", "--pid", &pid, "--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"],
    );
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));

    let sent = send_traced_requests(port, "/wait", LOAD);
    wait_for_server_spans(&sink, &pid, &sent, Duration::from_secs(20));
    // The last request's wait: an off-CPU event in wait_in_request after its span started.
    let last_start = server_spans(&sink, &pid).iter().map(|s| s.start_unix_nano).max().unwrap_or(0);
    let tail_seen = wait_for_sample(&sink, "the off-CPU events of the last request's wait", TAIL, |s| {
        s.is_off_cpu() && s.sample.pid == pid && s.sample.has_function("wait_in_request") && s.sample.timestamps.iter().any(|&t| t >= last_start)
    });
    {
        let _waiting = waiting_for("letting oxeye export the last events (one more reporter interval)");
        thread::sleep(ONE_MORE_INTERVAL);
    }
    let finished = oxeye.stop();
    finished.assert_success();
    server.stop();
    let out_dir = finished.out_dir.clone();
    let log = || format!("(oxeye's outputs and log: {}; the server's stderr: {})", out_dir.display(), python_log.display());

    let spans = server_spans(&sink, &pid);
    let by_link: HashMap<SpanLink, &DecodedSpan> = spans.iter().map(|s| (SpanLink { trace_id: s.trace_id.clone(), span_id: s.span_id.clone() }, s)).collect();
    let span_ns: u64 = spans.iter().map(|s| s.end_unix_nano.saturating_sub(s.start_unix_nano)).sum();

    let requests = sink.requests();
    for (i, request) in requests.iter().enumerate() {
        if let Err(why) = otlp_sink::check::all(request) {
            panic!("profiles request {i} of {} is invalid: {why}", requests.len());
        }
    }
    let samples: Vec<TypedSample> = requests.iter().flat_map(typed_samples).filter(|s| s.sample.pid == pid).collect();
    let span_of = |s: &TypedSample| s.sample.link.as_ref().and_then(|link| by_link.get(link)).copied();
    let within = |span: &DecodedSpan, t: u64| span.start_unix_nano <= t && t <= span.end_unix_nano;

    // Off CPU: waits in wait_in_request, and every linked event.
    let (mut wait_ns, mut wait_linked_ns, mut wait_events) = (0i64, 0i64, 0usize);
    let (mut linked_off_ns, mut linked_off_events) = (0i64, 0usize);
    let (mut unknown_ns, mut unknown_events) = (0i64, 0usize);
    let (mut outside_ns, mut outside_events) = (0i64, 0usize);
    let mut misshapen: Vec<String> = Vec::new();
    let mut wait_unlinked: HashMap<String, i64> = HashMap::new();
    for s in samples.iter().filter(|s| s.is_off_cpu()) {
        if let Some(problem) = s.off_cpu_shape_problem() {
            misshapen.push(format!("{problem} (thread {}, stack {})", s.sample.tid, innermost(&s.sample.frames)));
            continue;
        }
        let span = span_of(s);
        let waiting = s.sample.has_function("wait_in_request");
        for (time, ns) in s.events() {
            let ns = ns.unwrap_or(0);
            if waiting {
                wait_ns += ns;
                wait_events += 1;
                if span.is_some_and(|span| within(span, time)) {
                    wait_linked_ns += ns;
                } else {
                    let why = match (s.sample.link_index, span) {
                        (0, _) => match spans.iter().find(|span| within(span, time)) {
                            Some(_) => "not linked, though within a server span of the process".to_owned(),
                            None => "not linked, and within no server span of the process".to_owned(),
                        },
                        (_, None) => format!("linked to no server span of the process ({})", s.sample.link.as_ref().map_or_else(|| format!("link_index {}", s.sample.link_index), SpanLink::to_string)),
                        (_, Some(span)) => format!(
                            "linked to a span it is outside of ({} ns from its start, {} ns from its end)",
                            time as i128 - span.start_unix_nano as i128,
                            time as i128 - span.end_unix_nano as i128
                        ),
                    };
                    *wait_unlinked.entry(why).or_default() += ns;
                }
            }
            match span {
                Some(span) => {
                    linked_off_ns += ns;
                    linked_off_events += 1;
                    if !within(span, time) {
                        outside_ns += ns;
                        outside_events += 1;
                    }
                }
                None if s.sample.link_index != 0 => {
                    unknown_ns += ns;
                    unknown_events += 1;
                }
                None => {}
            }
        }
    }
    let mut wait_unlinked: Vec<(String, i64)> = wait_unlinked.into_iter().collect();
    wait_unlinked.sort_by_key(|(_, ns)| -ns);
    let wait_unlinked: String = wait_unlinked.iter().take(5).map(|(why, ns)| format!("\n  {:.1} ms: {why}", *ns as f64 / 1e6)).collect();

    // On CPU: linked samples, each a period of CPU time.
    let cpu: Vec<&TypedSample> = samples.iter().filter(|s| s.is(CPU)).collect();
    let period_ns = cpu.iter().map(|s| s.period).find(|&p| p > 0).unwrap_or(1_000_000_000 / RATE as i64);
    let linked_cpu: usize = cpu.iter().filter(|s| span_of(s).is_some()).map(|s| s.sample.timestamps.len()).sum();
    let all_cpu: usize = cpu.iter().map(|s| s.sample.timestamps.len()).sum();
    let accounted = linked_off_ns + linked_cpu as i64 * period_ns;
    // Spans nothing is linked to, for messages.
    let mut linked_spans: HashSet<&[u8]> = HashSet::new();
    for s in &samples {
        if let Some(span) = span_of(s) {
            linked_spans.insert(span.span_id.as_slice());
        }
    }
    let bare_spans = spans.iter().filter(|s| !linked_spans.contains(s.span_id.as_slice())).count();

    let ms = |ns: i64| ns as f64 / 1e6;
    eprintln!(
        "off_cpu links: {} requests, {} server spans lasting {:.1} ms in all; wait_in_request: {:.1} ms off CPU in {wait_events} events, {:.1} ms linked to a span holding them ({:.1}%); \
         linked to a span: {:.1} ms off CPU in {linked_off_events} events ({outside_events} events, {:.1} ms, outside it) + {linked_cpu} CPU samples (of {all_cpu}) × {period_ns} ns = {:.1} ms, \
         {:+.1}% from the spans' durations ({bare_spans} spans with nothing linked); {unknown_events} off-CPU events ({:.1} ms) linked to no exported span; {} misshapen off-CPU samples; the last wait {}",
        sent.len(),
        spans.len(),
        ms(span_ns as i64),
        ms(wait_ns),
        ms(wait_linked_ns),
        percent(wait_linked_ns as f64, wait_ns as f64),
        ms(linked_off_ns),
        ms(outside_ns),
        ms(accounted),
        100.0 * (accounted - span_ns as i64) as f64 / span_ns.max(1) as f64,
        ms(unknown_ns),
        misshapen.len(),
        if tail_seen { "arrived" } else { "did not arrive within the wait" },
    );

    assert!(misshapen.is_empty(), "{} off-CPU samples of pid {pid} are misshapen (want one value per timestamp, none negative), first: {} {}", misshapen.len(), misshapen[0], log());
    // Enough to judge: about 90 requests of 30 ms of waiting each.
    assert!(spans.len() >= 30, "only {} server spans of pid {pid} for {} requests sent: too few to judge {}", spans.len(), sent.len(), log());
    assert!(
        wait_ns >= 1_000_000_000,
        "only {:.1} ms off CPU in wait_in_request ({wait_events} events) for {} spans of 30 ms of waiting each: too few to judge\n{} {}",
        ms(wait_ns),
        spans.len(),
        describe(&sink, &pid),
        log()
    );
    // a. A request's wait is linked to its span.
    assert!(
        wait_linked_ns as f64 >= SHARE * wait_ns as f64,
        "a: {:.1} ms of the {:.1} ms off CPU in wait_in_request are linked to a server span of pid {pid} holding their switch-out ({:.1}%, want {}% or more); the rest:{wait_unlinked}\n{}",
        ms(wait_linked_ns),
        ms(wait_ns),
        percent(wait_linked_ns as f64, wait_ns as f64),
        SHARE * 100.0,
        log()
    );
    // b. The linked time off and on CPU is the requests' time.
    assert!(
        (accounted - span_ns as i64).abs() as f64 <= TOLERANCE * span_ns as f64,
        "b: linked off-CPU time {:.1} ms + {linked_cpu} linked CPU samples × {period_ns} ns = {:.1} ms, but the {} server spans last {:.1} ms in all ({:+.1}%, want within {}%) {}",
        ms(linked_off_ns),
        ms(accounted),
        spans.len(),
        ms(span_ns as i64),
        100.0 * (accounted - span_ns as i64) as f64 / span_ns.max(1) as f64,
        TOLERANCE * 100.0,
        log()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Off by default.

#[test]
fn off_cpu_is_off_by_default() {
    let _deadline = deadline::deadline(LIMIT);
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let mut sleeper = Sleeper::start(LOAD);
    let pid = sleeper.pid();
    let addr = sink.addr().to_string();
    let oxeye = Oxeye::start("off_cpu-default", &["-F", "100", "--pid", &pid, "--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"]);
    // oxeye profiles the warm-up thread (9 ms asleep, 1 ms computing, over and over) ...
    let ready = wait_for_sample(&sink, "a CPU sample of the Python workload in warm_up", READY, |s| s.sample.pid == pid && s.is(CPU) && s.sample.has_function("warm_up"));
    assert!(ready, "oxeye exported no CPU sample of pid {pid} in warm_up within {READY:?}\n{}\n{}\n{}", describe(&sink, &pid), log(&oxeye.out_dir), sleeper.log());
    // ... for another reporter interval: a hundred switch-outs it must not record.
    {
        let _waiting = waiting_for("letting the warm-up thread sleep under oxeye (one more reporter interval)");
        thread::sleep(ONE_MORE_INTERVAL);
    }
    let finished = oxeye.stop();
    finished.assert_success();
    sleeper.stop();
    let out_dir = finished.out_dir.clone();

    let requests = sink.requests();
    let mut types: HashMap<(String, String), usize> = HashMap::new();
    for request in &requests {
        for kind in profile_types(request) {
            *types.entry(kind).or_default() += 1;
        }
    }
    let folded_path = out_dir.join("off_cpu.folded");
    let folded_lines = fs::read_to_string(&folded_path).map_or(0, |text| text.lines().filter(|l| !l.trim().is_empty()).count());
    let pprof_path = out_dir.join("off_cpu.pb.gz");
    let pprof_samples = if pprof_path.is_file() && fs::metadata(&pprof_path).is_ok_and(|m| m.len() > 0) { read_pprof_values(&pprof_path).samples.len() } else { 0 };
    let svg_path = out_dir.join("off_cpu.svg");
    let svg_shows = fs::read_to_string(&svg_path).is_ok_and(|svg| svg.contains("warm_up"));
    eprintln!(
        "off_cpu off by default: profile types exported {types:?}; off_cpu.folded: {folded_lines} lines; off_cpu.pb.gz: {pprof_samples} samples; off_cpu.svg shows warm_up: {svg_shows}"
    );
    let log = format!("(oxeye's outputs and log: {})", out_dir.display());
    assert!(types.keys().all(|(kind, unit)| (kind.as_str(), unit.as_str()) == CPU), "without --off-cpu-threshold, oxeye exported profiles of types {types:?} (want only {}/{}) {log}", CPU.0, CPU.1);
    assert_eq!(folded_lines, 0, "without --off-cpu-threshold, {} has {folded_lines} lines {log}", folded_path.display());
    assert_eq!(pprof_samples, 0, "without --off-cpu-threshold, {} has {pprof_samples} samples {log}", pprof_path.display());
    assert!(!svg_shows, "without --off-cpu-threshold, {} shows the warm-up thread {log}", svg_path.display());
}

// ---------------------------------------------------------------------------------------------
// The sleeping workload.

/// A running [`SLEEPER`].
struct Sleeper {
    process: Spawned,
    result: PathBuf,
    stderr: PathBuf,
}

/// What the sleeper measured.
#[derive(Debug, Clone, Copy)]
struct SleeperResult {
    /// Its native thread id.
    tid: u64,
    /// When its loop ended.
    end_unix_nano: u64,
    /// Its time inside `time.sleep`.
    slept_ns: u64,
    /// Its sleeps.
    iterations: u64,
}

impl Sleeper {
    /// Starts it warming up; its measured loop will last `load`.
    fn start(load: Duration) -> Sleeper {
        let dir = output_dir("off_cpu-sleeper");
        let (result, stderr) = (dir.join("result.json"), dir.join("python.stderr"));
        let mut python = python3();
        python
            .arg("-c")
            .arg(SLEEPER)
            .arg(&result)
            .arg(load.as_secs_f64().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("create the sleeper's stderr file"));
        let process = spawn(&mut python, "python3 sleeper");
        Sleeper { process, result, stderr }
    }

    fn pid(&self) -> String {
        self.process.id().to_string()
    }

    /// Ends the warm-up and starts the measured loop.
    fn go(&mut self) {
        let stdin = self.process.child_mut().stdin.as_mut().expect("the sleeper's stdin is a pipe");
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("cannot tell the sleeper to go: {e}\n{}", self.log()));
    }

    /// Waits (at most `timeout`) for what it measured.
    fn result(&mut self, timeout: Duration) -> SleeperResult {
        let _waiting = waiting_for(format!("waiting for the sleeper's loop ({LOAD:?}) and its result"));
        let until = Instant::now() + timeout;
        let text = loop {
            if let Ok(text) = fs::read_to_string(&self.result) {
                break text;
            }
            if let Some(exited) = self.process.try_wait() {
                panic!("the sleeper exited with {} before writing its result:\n{}", exited.status, self.log());
            }
            deadline::check();
            assert!(Instant::now() < until, "the sleeper wrote no result within {timeout:?}:\n{}", self.log());
            thread::sleep(Duration::from_millis(50));
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the sleeper's result {text:?} is not JSON: {e}"));
        let field = |name: &str| json.get(name).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("the sleeper's result {text:?} has no integer {name:?}"));
        SleeperResult { tid: field("tid"), end_unix_nano: field("end_unix_nano"), slept_ns: field("slept_ns"), iterations: field("iterations") }
    }

    /// Its stderr, for messages.
    fn log(&self) -> String {
        format!("the sleeper's stderr ({}):\n{}", self.stderr.display(), fs::read_to_string(&self.stderr).unwrap_or_default())
    }

    fn stop(&mut self) {
        self.process.stop();
    }
}

/// `python3`, without the environment variables that would change what it runs.
fn python3() -> Command {
    let mut python = Command::new("python3");
    for variable in ["PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONOPTIMIZE", "PYTHONINSPECT"] {
        python.env_remove(variable);
    }
    python
}

// ---------------------------------------------------------------------------------------------
// The receiver.

/// Waits (at most `timeout`) until the receiver holds a sample that is `wanted`; whether it
/// came.
fn wait_for_sample(sink: &Sink, what: &str, timeout: Duration, wanted: impl Fn(&TypedSample) -> bool) -> bool {
    let _waiting = waiting_for(format!("waiting for {what}"));
    let until = Instant::now() + timeout;
    loop {
        if sink.requests().iter().flat_map(typed_samples).any(|s| wanted(&s)) {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        deadline::check();
        thread::sleep(Duration::from_millis(250));
    }
}

/// What the receiver holds of process `pid`, for messages.
fn describe(sink: &Sink, pid: &str) -> String {
    let requests = sink.requests();
    let samples: Vec<TypedSample> = requests.iter().flat_map(typed_samples).filter(|s| s.sample.pid == pid).collect();
    let mut by_type: HashMap<String, (usize, usize)> = HashMap::new();
    for s in &samples {
        let entry = by_type.entry(format!("{}/{}", s.sample_type.0, s.sample_type.1)).or_default();
        entry.0 += 1;
        entry.1 += s.sample.timestamps.len();
    }
    let mut off: Vec<&TypedSample> = samples.iter().filter(|s| s.is_off_cpu()).collect();
    off.sort_by_key(|s| -s.total());
    let heaviest: String = off.iter().take(5).map(|s| format!("\n  {:.1} ms, thread {}: {}", s.total() as f64 / 1e6, s.sample.tid, innermost(&s.sample.frames))).collect();
    format!("the receiver got {} requests; samples of pid {pid} by type (samples, timestamps): {by_type:?}; the heaviest off-CPU samples:{heaviest}", requests.len())
}

/// oxeye's stderr so far.
fn log(out_dir: &std::path::Path) -> String {
    format!("oxeye's stderr:\n{}", fs::read_to_string(out_dir.join("oxeye.stderr")).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Requests and spans (as in links.rs).

// ---------------------------------------------------------------------------------------------
// Messages.

/// The innermost frames of a stack (innermost first), for messages.
fn innermost(frames: &[String]) -> String {
    let shown: Vec<&str> = frames.iter().take(8).map(String::as_str).collect();
    format!("{}{}", shown.join(" <- "), if frames.len() > shown.len() { " <- …" } else { "" })
}

/// The heaviest lines of a folded file, for messages.
fn heaviest(folded: &Folded) -> String {
    let mut lines: Vec<_> = folded.stacks.iter().collect();
    lines.sort_by_key(|s| std::cmp::Reverse(s.count));
    lines.iter().take(8).map(|s| format!("  {:.1} ms {};{}\n", s.count as f64 / 1e6, s.process, s.frames.join(";"))).collect()
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
}

