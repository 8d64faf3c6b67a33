//! What a user checks in oxeye's outputs, as functions: the host's end-to-end tests and the
//! scenarios `cargo xtask vm-test` runs inside VMs share them, so a kernel under qemu passes
//! the same assertions as the host.
//!
//! Each check returns `Ok(summary)` (the figures it saw, for reports) or `Err(why)` with the
//! hottest stacks for context. Only the standard library: xtask compiles this file too.

use std::collections::BTreeMap;

use super::folded::{Folded, Stack};

/// The outcome of one check: the figures seen, or why it failed.
pub type Check = Result<String, String>;

/// The known call chain of `chain.c` above its leaves.
pub const CHAIN: [&str; 3] = ["main", "outer", "middle"];

/// Samples per second the chain scenarios run oxeye at.
pub const SAMPLES_PER_SECOND: f64 = 99.0;

/// At least `share` of the samples that `cpu_seconds` of CPU time give at 99 Hz (samples follow
/// the CPU time a workload gets, not wall time: on a slow or busy machine it gets less).
pub fn enough_samples(total: u64, cpu_seconds: f64, share: f64) -> Check {
    let expected = SAMPLES_PER_SECOND * cpu_seconds;
    ensure(total as f64 >= expected * share, || format!("only {total} samples for {cpu_seconds:.2} CPU seconds at 99 Hz (expected {expected:.0}, at least {:.0})", expected * share))?;
    Ok(format!("{total} samples (expected {expected:.0})"))
}

/// Share of `process`'s samples whose user stack ends in `main → outer → middle → leaf_*`,
/// leaf_a's share of those, and the process's samples.
pub fn chain_shares(folded: &Folded, process: &str) -> (f64, f64, u64) {
    let (mut whole, mut leaf_a) = (0, 0);
    for stack in folded.process(process) {
        for leaf in ["leaf_a", "leaf_b"] {
            if stack.user_ends_with(&[&CHAIN[..], &[leaf]].concat()) {
                whole += stack.count;
                if leaf == "leaf_a" {
                    leaf_a += stack.count;
                }
            }
        }
    }
    let total = folded.samples(process);
    (whole as f64 / total.max(1) as f64, leaf_a as f64 / whole.max(1) as f64, total)
}

/// `chain.c` built with frame pointers, sampled at 99 Hz while it used `cpu_seconds` of CPU:
/// enough samples, at least 90% carry `main → outer → middle → leaf`, and leaf_a has 75% ± 10%
/// of those.
pub fn known_chain(folded: &Folded, process: &str, cpu_seconds: f64) -> Check {
    let (whole, leaf_a, total) = chain_shares(folded, process);
    let dump = folded.dump(process);
    let counted = enough_samples(total, cpu_seconds, 0.505).map_err(|why| format!("{process}: {why}:\n{dump}"))?;
    let summary = format!("{counted}, {:.1}% whole chain, leaf_a {:.1}%", whole * 100.0, leaf_a * 100.0);
    ensure(whole >= 0.90, || format!("{:.1}% of {total} samples carry main→outer→middle→leaf:\n{dump}", whole * 100.0))?;
    ensure((leaf_a - 0.75).abs() <= 0.10, || format!("leaf_a has {:.1}% of the chain samples, expected 75%:\n{dump}", leaf_a * 100.0))?;
    Ok(summary)
}

/// `chain.c` started with a pause of `seconds` (a `nanosleep` in `main`), profiled off CPU at
/// `--off-cpu-threshold 1` (`off_cpu`: `off_cpu.folded`, nanoseconds): the time off CPU under
/// a kernel `nanosleep` frame is the pause, within 10%. How much of it shows `main` is only
/// reported: the pause starts a millisecond after the exec, before oxeye may have the unwind
/// table of the libc the process just mapped, and the stack is then cut at `clock_nanosleep`
/// (the host's end-to-end tests check the user chain of a thread that sleeps later).
pub fn off_cpu_pause(off_cpu: &Folded, process: &str, seconds: f64) -> Check {
    let dump = off_cpu.dump(process);
    let (mut asleep, mut under_main) = (0, 0);
    for stack in off_cpu.process(process).filter(|stack| stack.kernel_frames().iter().any(|frame| frame.contains("nanosleep"))) {
        asleep += stack.count;
        if stack.user_frames().contains(&"main") {
            under_main += stack.count;
        }
    }
    let (asleep, under_main) = (asleep as f64 / 1e9, under_main as f64 / 1e9);
    ensure((asleep - seconds).abs() <= seconds * 0.10, || format!("{process}: {asleep:.3} s off CPU in nanosleep, expected {seconds:.3} s ± 10%:\n{dump}"))?;
    Ok(format!("{asleep:.3} s off CPU in nanosleep (slept {seconds:.3} s; {under_main:.3} s of it under main), {:.3} s in all", off_cpu.samples(process) as f64 / 1e9))
}

/// `syscalls.c` (frame pointers, reads of /dev/zero): kernel frames only ever under user
/// frames, and at least half of the samples show `main → do_reads → … → vfs_read` with every
/// kernel frame named.
pub fn kernel_frames_named(folded: &Folded, process: &str, cpu_seconds: f64) -> Check {
    let total = folded.samples(process);
    let dump = folded.dump(process);
    let counted = enough_samples(total, cpu_seconds, 0.3367).map_err(|why| format!("{process}: {why}:\n{dump}"))?;
    let mut in_kernel_under_user = 0;
    for stack in folded.process(process) {
        if let Some(first) = stack.frames.iter().position(|f| f.ends_with("_[k]")) {
            ensure(stack.frames[first..].iter().all(|f| f.ends_with("_[k]")), || format!("user frame under a kernel frame: {stack:?}"))?;
        }
        let kernel = stack.kernel_frames();
        if stack.user_frames().ends_with(&["main", "do_reads"]) && kernel.contains(&"vfs_read") {
            ensure(kernel.iter().all(|f| !f.starts_with("[kernel]")), || format!("unnamed kernel frame in {stack:?}"))?;
            in_kernel_under_user += stack.count;
        }
    }
    let share = in_kernel_under_user as f64 / total as f64;
    ensure(share >= 0.5, || format!("{:.1}% of samples show main→do_reads→…→vfs_read:\n{dump}", share * 100.0))?;
    Ok(format!("{counted}, {:.1}% main→do_reads→…→vfs_read with named kernel frames", share * 100.0))
}

/// The share of `process`'s kernel frames that have names (not `[kernel] 0x…`), and how many
/// kernel frames it has, each stack's counted once per sample: distinct stacks alone would
/// depend on how varied the kernel's paths are (a kernel running no program on the syscall has
/// fewer of them), not on how much was sampled.
pub fn named_kernel_share(folded: &Folded, process: &str) -> (f64, usize) {
    let (mut frames, mut named) = (0, 0);
    for stack in folded.process(process) {
        let kernel = stack.kernel_frames();
        frames += kernel.len() * stack.count as usize;
        named += kernel.iter().filter(|frame| !frame.starts_with("[kernel] 0x")).count() * stack.count as usize;
    }
    (named as f64 / frames.max(1) as f64, frames)
}

/// Whether the user stack goes all the way from the ELF entry point (`_start`) to `chain`.
pub fn complete_to(stack: &Stack, chain: &[&str]) -> bool {
    let user = stack.user_frames();
    user.first() == Some(&"_start") && user.ends_with(chain) && user.iter().all(|f| !f.starts_with("[unwind error"))
}

/// Share of `process`'s samples whose stack is complete from `_start` down to `prefix`
/// followed by one of `leaves`, and the process's samples.
pub fn complete_share(folded: &Folded, process: &str, prefix: &[&str], leaves: &[&str]) -> (f64, u64) {
    let total = folded.samples(process);
    let complete: u64 = folded
        .process(process)
        .filter(|stack| leaves.iter().any(|leaf| complete_to(stack, &[prefix, &[*leaf]].concat())))
        .map(|stack| stack.count)
        .sum();
    (complete as f64 / total.max(1) as f64, total)
}

/// `chain.c` built at -O2 without frame pointers: at least 95% of the samples go from
/// `_start` to `main → outer → middle → leaf`.
pub fn c_without_frame_pointers(folded: &Folded, process: &str, cpu_seconds: f64) -> Check {
    let (share, total) = complete_share(folded, process, &CHAIN, &["leaf_a", "leaf_b"]);
    whole_stacks(folded, process, cpu_seconds, share, total, "go from _start to main→outer→middle→leaf")
}

/// `chain.rs` built in release mode without frame pointers: at least 95% of the samples go
/// from `_start` through `main`, `chain::main`, `chain::outer` and `chain::middle` (in that
/// order, the standard library's start-up frames between) to a leaf.
pub fn rust_without_frame_pointers(folded: &Folded, process: &str, cpu_seconds: f64) -> Check {
    let chain = ["main", "chain::main", "chain::outer", "chain::middle"];
    let total = folded.samples(process);
    let complete: u64 = folded
        .process(process)
        .filter(|stack| {
            let user = stack.user_frames();
            let in_order = chain.iter().try_fold(0, |from, want| user[from..].iter().position(|f| f == want).map(|i| from + i + 1));
            complete_to(stack, &[])
                && in_order.is_some()
                && matches!(user.last(), Some(&"chain::leaf_a" | &"chain::leaf_b"))
                && user[user.len() - 2] == "chain::middle"
        })
        .map(|stack| stack.count)
        .sum();
    let share = complete as f64 / total.max(1) as f64;
    whole_stacks(folded, process, cpu_seconds, share, total, "go from _start through main, chain::main, outer and middle to a leaf")
}

fn whole_stacks(folded: &Folded, process: &str, cpu_seconds: f64, share: f64, total: u64, what: &str) -> Check {
    let dump = folded.dump(process);
    let counted = enough_samples(total, cpu_seconds, 0.63).map_err(|why| format!("{process}: {why}:\n{dump}"))?;
    ensure(share >= 0.95, || format!("{:.1}% of {total} samples {what}:\n{dump}", share * 100.0))?;
    Ok(format!("{counted}, {:.1}% complete", share * 100.0))
}

/// The value of `key=` in oxeye's `hooks chosen` log line.
pub fn chosen_hook(stderr: &str, key: &str) -> Option<String> {
    let line = stderr.lines().find(|line| line.contains("hooks chosen"))?;
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let value = &line[start..];
    let value = if let Some(quoted) = value.strip_prefix('"') { &quoted[..quoted.find('"')?] } else { value.split(' ').next()? };
    Some(value.to_owned())
}

/// oxeye logged that it chose `expected` for `key` (e.g. `tcp_state`).
pub fn hook_choice(stderr: &str, key: &str, expected: &str) -> Check {
    match chosen_hook(stderr, key) {
        Some(chosen) if chosen == expected => {
            // The payload hooks' reasons are `payload_fallbacks`, the others' `{key}_fallbacks`.
            let fallbacks_key = if key == "payloads" { "payload_fallbacks".to_owned() } else { format!("{key}_fallbacks") };
            let fallbacks = chosen_hook(stderr, &fallbacks_key).unwrap_or_default();
            Ok(format!("{key}={chosen} (fallbacks: {fallbacks})"))
        }
        Some(chosen) => Err(format!("oxeye chose {key}={chosen}, expected {expected}:\n{}", hooks_line(stderr))),
        None => Err(format!("no `hooks chosen` line with {key}= in oxeye's log:\n{stderr}")),
    }
}

fn hooks_line(stderr: &str) -> &str {
    stderr.lines().find(|line| line.contains("hooks chosen")).unwrap_or("")
}

/// oxeye exited 0 after SIGINT, wrote its three outputs, and `bpftool prog show` taken after
/// it exited lists none of its programs.
pub fn clean_exit(exit_code: Option<i32>, outputs: &[(&str, bool)], bpftool_programs: &str) -> Check {
    ensure(exit_code == Some(0), || format!("oxeye exited with {exit_code:?} after SIGINT"))?;
    for (name, present) in outputs {
        ensure(*present, || format!("{name} was not written"))?;
    }
    let left: Vec<&str> = bpftool_programs.split_whitespace().filter(|word| word.starts_with("oxeye_")).collect();
    ensure(left.is_empty(), || format!("BPF programs left in the kernel after exit: {left:?}"))?;
    Ok(format!("exit 0, {} outputs written, no oxeye_ program left", outputs.len()))
}

/// One span as `otlp-sink --spans-out` writes it: a tab-separated line `kind service name`
/// then `key=value` attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanLine {
    /// `SERVER`, `CLIENT`, …
    pub kind: String,
    /// The resource's `service.name`.
    pub service: String,
    /// The span name.
    pub name: String,
    /// The span's attributes.
    pub attributes: BTreeMap<String, String>,
}

impl SpanLine {
    /// Parses the lines of a `--spans-out` file; malformed lines are an error.
    pub fn parse_all(text: &str) -> Result<Vec<SpanLine>, String> {
        text.lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                let mut fields = line.split('\t');
                let (Some(kind), Some(service), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
                    return Err(format!("malformed span line {line:?}"));
                };
                let attributes = fields
                    .map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("malformed attribute {pair:?}")))
                    .collect::<Result<_, _>>()?;
                Ok(SpanLine { kind: kind.to_owned(), service: service.to_owned(), name: name.to_owned(), attributes })
            })
            .collect()
    }

    /// An attribute, or "".
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// An HTTP exchange over loopback traced into spans: for each `(path, status, count)` in
/// `expected`, exactly `count` GET spans of that kind from `service` with that path and
/// status, and no span of that kind from `service` with any other (path, status).
pub fn http_spans(spans: &[SpanLine], kind: &str, service: &str, port: u16, expected: &[(&str, &str, usize)]) -> Check {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for span in spans.iter().filter(|s| s.kind == kind && s.service == service && s.attribute("server.port") == port.to_string()) {
        ensure(span.attribute("http.request.method") == "GET", || format!("{kind} span with method {:?}: {span:?}", span.attribute("http.request.method")))?;
        *seen.entry((span.attribute("url.path").to_owned(), span.attribute("http.response.status_code").to_owned())).or_default() += 1;
    }
    let wanted: BTreeMap<(String, String), usize> = expected.iter().map(|(p, s, n)| ((p.to_string(), s.to_string()), *n)).collect();
    ensure(seen == wanted, || format!("{kind} spans of {service} on port {port} by (path, status): {seen:?}, expected {wanted:?}"))?;
    Ok(format!("{} {kind} spans of {service}, all with the right path and status", seen.values().sum::<usize>()))
}

/// A burst of `completed` requests for `path` on `port` came out whole: as many server and
/// client spans, and as many in `http.server.request.duration`'s and
/// `http.client.request.duration`'s counts for that route in `exposition`.
pub fn burst(spans: &[SpanLine], exposition: &str, port: u16, path: &str, completed: u64) -> Check {
    ensure(completed > 0, || format!("no request of the burst completed on port {port}"))?;
    for kind in ["SERVER", "CLIENT"] {
        let count = spans.iter().filter(|s| s.kind == kind && s.attribute("server.port") == port.to_string() && s.attribute("url.path") == path).count() as u64;
        ensure(count == completed, || format!("{count} {kind} spans of {path} on port {port}, for {completed} requests completed"))?;
    }
    let series = parse_exposition(exposition);
    for metric in ["http_server_request_duration_seconds_count", "http_client_request_duration_seconds_count"] {
        let counted: f64 = series.iter().filter(|(name, labels, _)| name == metric && labels.get("http_route").map(String::as_str) == Some(path)).map(|(_, _, value)| value).sum();
        ensure(counted == completed as f64, || format!("{metric} for {path} is {counted}, for {completed} requests completed:\n{exposition}"))?;
    }
    Ok(format!("{completed} requests completed by 4 clients at once, each a server and a client span and counted in both duration histograms"))
}

/// Samples of a Prometheus text exposition: (name, labels) → value.
pub fn parse_exposition(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value))
        })
        .collect()
}

/// TCP statistics of `connections` HTTP connections to `port`, as oxeye's Prometheus endpoint
/// reports them: that many closed on each side (the TCP-state hook saw every close), and each
/// side received exactly what the other sent, in both directions, counted at two different
/// sockets.
pub fn tcp_statistics(exposition: &str, port: u16, connections: u64) -> Check {
    let series = parse_exposition(exposition);
    let port = port.to_string();
    let value = |name: &str, role: &str, direction: Option<&str>| -> f64 {
        series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && labels.get("server_port") == Some(&port)
                    && labels.get("oxeye_tcp_role").map(String::as_str) == Some(role)
                    && direction.is_none_or(|d| labels.get("network_io_direction").map(String::as_str) == Some(d))
            })
            .map(|(_, _, value)| value)
            .sum()
    };
    for role in ["server", "client"] {
        let closed = value("oxeye_tcp_connections_closed_total", role, None);
        ensure(closed == connections as f64, || format!("{closed} {role} connections on port {port} closed, expected {connections}:\n{exposition}"))?;
    }
    let request_bytes = value("oxeye_tcp_bytes_total", "client", Some("transmit"));
    let response_bytes = value("oxeye_tcp_bytes_total", "server", Some("transmit"));
    ensure(request_bytes > 0.0 && response_bytes > 0.0, || format!("no bytes counted on port {port}:\n{exposition}"))?;
    ensure(value("oxeye_tcp_bytes_total", "server", Some("receive")) == request_bytes, || format!("the server received other than the {request_bytes} bytes the clients sent:\n{exposition}"))?;
    ensure(value("oxeye_tcp_bytes_total", "client", Some("receive")) == response_bytes, || format!("the clients received other than the {response_bytes} bytes the server sent:\n{exposition}"))?;
    Ok(format!("{connections} connections closed on each side, {request_bytes} bytes up and {response_bytes} down, the same at both ends"))
}

fn ensure(condition: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(why())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOKS: &str = "2026-11-22T00:07:42Z  INFO hooks chosen cpu_samples=perf_event:cpu-clock process_events=tracepoint:sched \
        tcp_state=kprobe:tcp_set_state syscalls=tracepoint:syscalls tcp_state_fallbacks=\"fentry: attach failed: (524 ENOTSUPP)\"";

    #[test]
    fn hook_choice_reads_plain_and_quoted_values() {
        assert_eq!(chosen_hook(HOOKS, "tcp_state").as_deref(), Some("kprobe:tcp_set_state"));
        assert_eq!(chosen_hook(HOOKS, "tcp_state_fallbacks").as_deref(), Some("fentry: attach failed: (524 ENOTSUPP)"));
        assert!(hook_choice(HOOKS, "tcp_state", "kprobe:tcp_set_state").is_ok());
        assert!(hook_choice(HOOKS, "tcp_state", "fentry:tcp_set_state").is_err());
        assert!(hook_choice("no such line", "tcp_state", "kprobe:tcp_set_state").is_err());
    }

    #[test]
    fn span_lines_parse_and_count_by_path_and_status() {
        let text = "SERVER\tnginx\tGET /a\thttp.request.method=GET\turl.path=/a\thttp.response.status_code=200\tserver.port=80\n\
            SERVER\tnginx\tGET /b\thttp.request.method=GET\turl.path=/b\thttp.response.status_code=404\tserver.port=80\n";
        let spans = SpanLine::parse_all(text).unwrap();
        assert_eq!(spans.len(), 2);
        assert!(http_spans(&spans, "SERVER", "nginx", 80, &[("/a", "200", 1), ("/b", "404", 1)]).is_ok());
        assert!(http_spans(&spans, "SERVER", "nginx", 80, &[("/a", "200", 2), ("/b", "404", 1)]).is_err());
        assert!(SpanLine::parse_all("SERVER\tonly two").is_err());
    }

    #[test]
    fn tcp_statistics_need_both_ends_to_agree() {
        let series = |up_received: u32| {
            format!(
                "oxeye_tcp_connections_closed_total{{oxeye_tcp_role=\"client\",server_port=\"80\"}} 2\n\
                 oxeye_tcp_connections_closed_total{{oxeye_tcp_role=\"server\",server_port=\"80\"}} 2\n\
                 oxeye_tcp_bytes_total{{network_io_direction=\"transmit\",oxeye_tcp_role=\"client\",server_port=\"80\"}} 100\n\
                 oxeye_tcp_bytes_total{{network_io_direction=\"receive\",oxeye_tcp_role=\"server\",server_port=\"80\"}} {up_received}\n\
                 oxeye_tcp_bytes_total{{network_io_direction=\"transmit\",oxeye_tcp_role=\"server\",server_port=\"80\"}} 900\n\
                 oxeye_tcp_bytes_total{{network_io_direction=\"receive\",oxeye_tcp_role=\"client\",server_port=\"80\"}} 900\n"
            )
        };
        assert!(tcp_statistics(&series(100), 80, 2).is_ok());
        assert!(tcp_statistics(&series(99), 80, 2).is_err());
        assert!(tcp_statistics(&series(100), 80, 3).is_err());
    }

    #[test]
    fn known_chain_needs_samples_and_the_split() {
        let folded = Folded::read_str("chain;_start;main;outer;middle;leaf_a 300\nchain;_start;main;outer;middle;leaf_b 100\n");
        assert!(known_chain(&folded, "chain", 4.0).is_ok());
        assert!(known_chain(&folded, "chain", 10.0).is_err(), "400 samples are too few for 10 s at 99 Hz");
        let skewed = Folded::read_str("chain;main;outer;middle;leaf_a 400\n");
        assert!(known_chain(&skewed, "chain", 4.0).is_err());
    }
}
