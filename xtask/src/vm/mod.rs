//! `cargo xtask vm-test`: oxeye on other kernels and on arm64. Builds oxeye, the OTLP receiver
//! and the workloads for each kernel's architecture, packs them with busybox into an
//! initramfs, boots the kernel under qemu (software emulation), runs the scenarios inside
//! (`scenarios.sh`), and checks what they wrote on the host with the same checks as the host
//! tests. The host's own kernel runs the same scenarios directly.
//!
//! - [`kernels`] is the matrix, one line per kernel.
//! - [`debian`] fetches kernels, busybox and bpftool from Debian's packages, and caches them.
//! - [`guest`] builds the programs a guest runs for its architecture.
//! - [`initramfs`] packs them with `/init`.
//! - [`qemu`] boots a kernel with it.
//! - [`results`] reads the console protocol and runs the checks.

mod arch;
mod debian;
mod guest;
mod initramfs;
mod kernels;
mod privileges;
mod qemu;
mod results;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use self::{
    arch::Arch,
    kernels::{Source, TcpStateHook, KERNELS},
    results::{Expected, Outcome, Transcript, GUEST_HTTP_PORT},
};
use crate::shell::{self, root, root_command, say};

/// Ports the scenarios use when they run directly on the host (the guests use their own
/// loopback, see `init.sh`).
const HOST_HTTP_PORT: u16 = 18080;
const HOST_OTLP_PORT: &str = "14317";
const HOST_METRICS_PORT: &str = "19464";
/// The longest the scenarios may take on the host (they take about 30 s).
const HOST_SCENARIOS_TIMEOUT: Duration = Duration::from_secs(300);

/// Flags of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Only the kernels of this architecture (default: every kernel of the matrix).
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Boot this kernel image (a vmlinuz) instead of the matrix's, for --arch (default: this
    /// machine's architecture).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// CPUs of each guest (oxeye sizes its per-CPU maps and rings by them; the report shows
    /// its memory).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=288))]
    pub cpus: u32,
    /// Also run oxeye without each capability of the README's table in turn, and check that
    /// what it loses is what the table says (six more sessions per kernel).
    #[arg(long)]
    pub capability_matrix: bool,
}

impl Default for VmTestArgs {
    fn default() -> Self {
        VmTestArgs { arch: None, kernel: None, cpus: 2, capability_matrix: false }
    }
}

/// One kernel to run the scenarios on.
struct Run {
    name: String,
    arch: Arch,
    /// The image to boot, or `None` for the running kernel.
    image: Option<PathBuf>,
    /// A description: the package, path or release.
    what: String,
    expected: Expected,
}

/// `cargo xtask vm-test`.
pub fn run(args: &VmTestArgs) -> Result<()> {
    let runs = plan(args)?;
    let mut prepared: BTreeMap<&str, guest::GuestFiles> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut flaky = Vec::new();
    let mut report = Vec::new();
    for run in &runs {
        if !prepared.contains_key(run.arch.name()) {
            guest::ensure_tools(run.arch)?;
            prepared.insert(run.arch.name(), guest::prepare(run.arch)?);
        }
        let files = &prepared[run.arch.name()];
        let dir = root().join("target/vm/results").join(&run.name);
        let mut failures = attempt(run, files, &dir, args, &mut report)?;
        if !failures.is_empty() {
            // One more boot tells a rare failure from a broken kernel; the first attempt's
            // outputs stay for a look, and the summary says it happened.
            let first = dir.with_file_name(format!("{}.attempt1", run.name));
            let _ = fs::remove_dir_all(&first);
            fs::rename(&dir, &first)?;
            say(format!("{}: {} scenario(s) failed; booting once more (first attempt kept in {})", run.name, failures.len(), first.display()));
            let first_failures = failures;
            failures = attempt(run, files, &dir, args, &mut report)?;
            if failures.is_empty() {
                let line = format!("  FLAKY {}: failed on the first attempt, passed on the second: {}", run.name, first_failures.join(", "));
                println!("{line}");
                report.push(line);
                flaky.push(run.name.clone());
            }
        }
        failed.extend(failures.into_iter().map(|scenario| format!("{}: {scenario}", run.name)));
    }
    let summary = root().join("target/vm/results/summary.txt");
    fs::write(&summary, report.join("\n") + "\n").with_context(|| format!("cannot write {}", summary.display()))?;
    if !failed.is_empty() {
        bail!("{} scenario(s) failed: {}", failed.len(), failed.join(", "));
    }
    if !flaky.is_empty() {
        say(format!("passed, but only on a second boot: {} (see FLAKY in {})", flaky.join(", "), summary.display()));
    }
    say(format!("every scenario passed on {} kernel(s); summary in {}", runs.len(), summary.display()));
    Ok(())
}

/// Boots (or runs) one kernel's scenarios into `dir`, prints and records their outcomes, and
/// returns the names of the scenarios that failed.
fn attempt(run: &Run, files: &guest::GuestFiles, dir: &Path, args: &VmTestArgs, report: &mut Vec<String>) -> Result<Vec<&'static str>> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    say(format!("{}: {} on {}", run.name, run.what, run.arch.name()));
    let started = Instant::now();
    let environment: &[(&str, &str)] = if args.capability_matrix { &[(privileges::MATRIX_VARIABLE, "1")] } else { &[] };
    let (transcript, http_port) = match &run.image {
        Some(image) => {
            let initramfs = initramfs::build(files, dir)?;
            let boot = qemu::boot(run.arch, image, &initramfs, &dir.join("console.log"), args.cpus, environment)?;
            (Transcript::parse(&boot.console)?, GUEST_HTTP_PORT)
        }
        None => (run_on_host(files, dir, environment)?, HOST_HTTP_PORT),
    };
    let wall = started.elapsed().as_secs_f64();
    transcript.save(&dir.join("out"))?;
    let outcomes = results::check(&transcript, run.arch, http_port, &run.expected);
    let timing = timing(&transcript, wall);
    println!("{} ({}, {}): {timing}", run.name, run.arch.name(), run.what);
    report.push(format!("{} ({}): {timing}", run.name, run.arch.name()));
    let mut failures = Vec::new();
    for (scenario, outcome) in &outcomes {
        let line = match outcome {
            Outcome::Pass(summary) => format!("  PASS  {scenario}: {summary}"),
            Outcome::Skip(why) => format!("  SKIP  {scenario}: {why}"),
            Outcome::Fail(why) => {
                failures.push(*scenario);
                format!("  FAIL  {scenario}: {}", why.replace('\n', "\n        "))
            }
        };
        println!("{line}");
        report.push(line);
    }
    if !failures.is_empty() {
        let log = if run.image.is_some() { dir.join("console.log") } else { dir.join("out/oxeye.stderr") };
        println!("  the guest's outputs are in {}, its console in {}", dir.join("out").display(), log.display());
    }
    Ok(failures)
}

/// The kernels to run, from the flags.
fn plan(args: &VmTestArgs) -> Result<Vec<Run>> {
    if let Some(image) = &args.kernel {
        let image = fs::canonicalize(image).with_context(|| format!("no kernel image at {}", image.display()))?;
        let arch = args.arch.unwrap_or(Arch::HOST);
        return Ok(vec![Run { name: "custom".to_owned(), arch, what: image.display().to_string(), image: Some(image), expected: Expected::default() }]);
    }
    let mut runs = Vec::new();
    for kernel in KERNELS.iter().filter(|k| args.arch.is_none_or(|arch| arch == k.arch)) {
        let tcp_state_hook = Some(match kernel.tcp_state_hook {
            TcpStateHook::Exactly(hook) => hook,
            TcpStateHook::FromRunningKernel => kernels::host_tcp_state_hook(),
        });
        let expected = Expected { tcp_state_hook, payload_hooks: kernel.payload_hooks, signed_return_addresses: kernel.signs_return_addresses };
        let run = match kernel.source {
            Source::Debian { metapackage, version_prefix } => {
                let package = debian::resolve_kernel(metapackage, kernel.arch.debian(), version_prefix)?;
                let unpacked = debian::unpacked(&package, kernel.arch.debian())?;
                let image = vmlinuz(&unpacked)?;
                Run { name: kernel.name.to_owned(), arch: kernel.arch, image: Some(image), what: package, expected }
            }
            Source::Host => {
                let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
                Run { name: kernel.name.to_owned(), arch: kernel.arch, image: None, what: format!("running kernel {}", release.trim()), expected }
            }
        };
        runs.push(run);
    }
    Ok(runs)
}

/// The `boot/vmlinuz-*` of an unpacked kernel package.
fn vmlinuz(unpacked: &Path) -> Result<PathBuf> {
    let boot = unpacked.join("boot");
    for entry in fs::read_dir(&boot).with_context(|| format!("cannot read {}", boot.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-")) {
            return Ok(path);
        }
    }
    bail!("no vmlinuz in {}", boot.display())
}

/// Runs the scenarios directly on this machine, as root.
fn run_on_host(files: &guest::GuestFiles, dir: &Path, environment: &[(&str, &str)]) -> Result<Transcript> {
    let script = dir.join("scenarios.sh");
    fs::write(&script, initramfs::SCENARIOS)?;
    let out = dir.join("out");
    let console = dir.join("console.log");
    let mut scenarios = root_command("sh");
    scenarios
        .arg(&script)
        .arg(&files.bin_dir)
        .arg(&out)
        .arg(HOST_HTTP_PORT.to_string())
        .arg(HOST_OTLP_PORT)
        .arg(HOST_METRICS_PORT)
        .envs(environment.iter().copied())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&console).with_context(|| format!("cannot create {}", console.display()))?)
        .stderr(Stdio::inherit());
    shell::run_with_deadline(&mut scenarios, "the scenarios on this kernel", HOST_SCENARIOS_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&fs::read(&console)?).into_owned();
    let transcript = Transcript::read_dir(&out, &stdout)?;
    // `save` writes the files back where they are: keep them out of the way first.
    fs::rename(&out, dir.join("direct"))?;
    Ok(transcript)
}

/// One line of timings: kernel boot to `/init`, oxeye's start to sampling, and the wall time
/// from starting qemu (or the script) to the result.
fn timing(transcript: &Transcript, wall: f64) -> String {
    let seconds = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |v| format!("{v:.1} s"));
    let started = transcript.at("start");
    let to_sampling = started.zip(transcript.at("sampling")).map(|(a, b)| b - a);
    let exit = transcript.at("stop").zip(transcript.at("exit")).map(|(a, b)| b - a);
    format!(
        "kernel boot to /init {}, oxeye start to sampling {}, stop to exit {}, boot to result {wall:.1} s; {}",
        seconds(transcript.at("booted")),
        seconds(to_sampling),
        seconds(exit),
        memory(transcript),
    )
}

/// oxeye's memory at the end of the session, from `oxeye-memory.txt` (`/proc/PID/status`).
fn memory(transcript: &Transcript) -> String {
    let text = transcript.text("oxeye-memory.txt");
    let kib = |key: &str| text.lines().find_map(|line| line.strip_prefix(key)?.split_whitespace().next()?.parse::<f64>().ok());
    let mb = |kib: Option<f64>| kib.map_or_else(|| "?".to_owned(), |kib| format!("{:.0} MB", kib * 1024.0 / 1e6));
    let mapped = kib("RssFile:").zip(kib("RssShmem:")).map(|(file, shmem)| file + shmem);
    format!(
        "oxeye on {} CPUs: RSS {} (peak {}; anonymous {}, files and mapped BPF maps {})",
        transcript.text("cpus.txt").trim(),
        mb(kib("VmRSS:")),
        mb(kib("VmHWM:")),
        mb(kib("RssAnon:")),
        mb(mapped),
    )
}
