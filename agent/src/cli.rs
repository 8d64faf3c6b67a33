//! Command-line flags.

use std::path::PathBuf;

use clap::Parser;

/// oxeye: a whole-system CPU profiler and TCP/HTTP tracer built on eBPF.
///
/// Samples the kernel and user stacks of every process on every CPU, names the frames on the
/// host (no debug packages needed), and on exit writes profile.pb.gz (pprof), flamegraph.svg
/// and stacks.folded. Traces every TCP connection and plaintext HTTP/1.x request into OTLP
/// spans and metrics (and Prometheus metrics with --prometheus-listen). Needs root (or
/// CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE).
#[derive(Debug, Parser)]
#[command(name = "oxeye", version)]
pub struct Args {
    /// Samples per second on each CPU.
    #[arg(short = 'F', long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub samples_per_second: u64,

    /// Profile only this process (all of its threads).
    #[arg(short, long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<f64>,

    /// Directory to write profile.pb.gz, flamegraph.svg and stacks.folded into.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,

    /// Keep samples of idle CPUs (the idle task, pid 0).
    #[arg(long)]
    pub include_idle: bool,

    /// Print periodic one-line summaries instead of the live view, even on a terminal.
    #[arg(long)]
    pub no_live: bool,

    /// Seconds between one-line summaries when not showing the live view.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub summary_interval: u64,

    /// Most distinct stacks kept; samples needing more are counted as dropped.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_stacks: usize,

    /// Send profiles over OTLP/gRPC to this collector or viewer (HOST:PORT or a URL). Also
    /// read from OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, value_name = "HOST:PORT")]
    pub collection_agent: Option<String>,

    /// Talk to the collector in plaintext instead of TLS.
    #[arg(long)]
    pub disable_tls: bool,

    /// A PEM CA certificate to trust for the collector, besides the system's roots.
    #[arg(long, value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,

    /// Seconds between two exports to the collector.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_seconds)]
    pub reporter_interval: f64,

    /// Most bytes of profiles held while the collector cannot be reached; the oldest go first.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub max_export_queue_bytes: usize,

    /// Kernel memory for unwind tables, in MiB (8 bytes per row). When full, the tables of
    /// files no process maps any more are evicted first; files that still do not fit are
    /// walked with frame pointers.
    #[arg(long, value_name = "MIB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub unwind_table_memory_mb: u64,

    /// Walk user stacks with frame pointers only (no `.eh_frame` tables): cheaper, but stacks
    /// through code built without frame pointers come out short.
    #[arg(long)]
    pub frame_pointers_only: bool,

    /// Off-CPU profiling: the probability, from 0 to 1, that a thread's switch-out is
    /// recorded, with its stack and the time until it runs again (as the OpenTelemetry eBPF
    /// profiler's flag). Writes off_cpu.folded, off_cpu.svg and off_cpu.pb.gz, and exports an
    /// `off_cpu`/`nanoseconds` profile. 0 (the default) is off
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = crate::net::sampling::parse_ratio)]
    pub off_cpu_threshold: f64,

    /// Do not trace TCP connections and HTTP requests (profile only).
    #[arg(long)]
    pub no_network: bool,

    /// Share of traces to export spans for, from 0 to 1, parent-based: a request whose
    /// `traceparent` says sampled is kept, one that says not sampled is not, and the others
    /// are kept by trace ID at this ratio. HTTP metrics still count every request; the final
    /// line and `oxeye.spans.sampled_out` count the spans left out. 1 keeps every span.
    #[arg(long, value_name = "RATIO", default_value_t = 1.0, value_parser = crate::net::sampling::parse_ratio)]
    pub trace_sample_ratio: f64,

    /// Serve metrics in the Prometheus text format at http://ADDR/metrics. A bare PORT binds
    /// 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub prometheus_listen: Option<String>,

    /// Serve devfiler's symbol protocol at http://ADDR for every executable file a profiled
    /// process mapped (start devfiler with `--symb-endpoint http://ADDR`). A bare PORT binds
    /// 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub symbols_listen: Option<String>,

    /// Ask HotSpot JVMs for a perf map of their JIT code (what `jcmd PID Compiler.perfmap`
    /// does, through the attach protocol) when their samples land in JIT code without a name:
    /// 1 s apart at first, then less and less often, down to every 30 s per JVM. This starts
    /// the JVM's Attach Listener thread (with a SIGQUIT, sent only to processes that map
    /// libjvm.so) and has it write /tmp/perf-PID.map; see the README.
    #[arg(long)]
    pub java_perf_map: bool,

    /// Where separate debug files are looked for, by build ID (`DIR/.build-id/xx/rest.debug`)
    /// and by `.gnu_debuglink`; repeat for several, in order.
    #[arg(long, value_name = "DIR", default_value = symbolizer::debug_file::DEFAULT_DIRECTORY)]
    pub debug_file_directory: Vec<std::path::PathBuf>,

    /// Where HTTP payloads are copied: `auto` takes the socket tracepoints where the kernel has
    /// them (Linux 6.13+) and the syscall tracepoints elsewhere; `syscalls` takes the syscall
    /// tracepoints everywhere (to compare the two).
    #[arg(long, value_name = "HOOKS", value_enum, default_value_t = crate::bpf::PayloadHookChoice::Auto)]
    pub payload_hooks: crate::bpf::PayloadHookChoice,

    /// Most TCP connections tracked at once (kernel maps; least recently used go first).
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub max_connections: u32,

    /// The container runtime to ask for each container's pod, namespace and container name
    /// (the labels the kubelet gives it), as the kubelet's own flag: a `unix://` socket.
    /// Default: containerd's socket, then CRI-O's. `none` turns the lookups off.
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,

    /// Log filter (tracing's EnvFilter syntax), e.g. `debug` or `oxeye=debug`.
    #[arg(long, value_name = "FILTER", env = "OXEYE_LOG", default_value = "info")]
    pub log: String,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}
