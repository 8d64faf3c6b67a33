//! Helpers for oxeye's end-to-end tests: build the C workloads, run the real `oxeye` binary
//! (which loads the real BPF programs), stop it the way a user does, and read what it wrote.
//!
//! Tests panic with a message rather than return errors, and need root: they load BPF.

pub mod checks;
pub mod deadline;
pub mod debug_files;
pub mod folded;
pub mod links;
pub mod off_cpu;
pub mod podman;
pub mod pprof;
pub mod servers;

pub use deadline::{deadline, output, run_ok, spawn, waiting_for, Exited, Spawned};
pub use folded::{Folded, Stack};

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

/// The oxeye binary under test: `$OXEYE_BIN` (set by `cargo xtask test`) or target/release/oxeye.
pub fn oxeye_bin() -> PathBuf {
    let binary = std::env::var_os("OXEYE_BIN").map_or_else(|| root().join("target/release/oxeye"), PathBuf::from);
    assert!(binary.exists(), "{} is missing: run the tests with `cargo xtask test`", binary.display());
    binary
}

/// Panics unless we are root: these tests load BPF programs.
pub fn require_root() {
    // SAFETY: no arguments, cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "end-to-end tests load BPF programs and must run as root (cargo xtask test)");
}

/// Compiles `tests/workloads/NAME.c` with frame pointers in every function (when the source
/// is newer than the binary) and returns the executable's path.
pub fn workload(name: &str) -> PathBuf {
    // -O0: GCC 12 drops the frame pointer of leaf functions at -O1 and above, even with
    // -mno-omit-leaf-frame-pointer.
    build_workload(&format!("{name}.c"), &["-O0", "-fno-omit-frame-pointer", "-fno-inline"])
}

/// Compiles `tests/workloads/SOURCE` with `flags` (gcc for `.c`, g++ for `.cpp`, rustc for
/// `.rs`) when the source is newer than the binary, and returns the executable's path. The
/// directory names the flags, so changing them rebuilds.
pub fn build_workload(source: &str, flags: &[&str]) -> PathBuf {
    let path = root().join("tests/workloads").join(source);
    let (name, extension) = source.rsplit_once('.').expect("workload sources have an extension");
    let compiler = match extension {
        "c" => "gcc".to_owned(),
        "cpp" => "g++".to_owned(),
        "rs" => std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()),
        other => panic!("no compiler for .{other} workloads"),
    };
    let dir = root().join("target/workloads").join(flags.concat().replace(['/', ' '], "_"));
    fs::create_dir_all(&dir).expect("create target/workloads");
    // C workloads keep their plain name (the process name tests look for); others are
    // suffixed so chain.c, chain.cpp and chain.rs never collide.
    let binary = dir.join(if extension == "c" { name.to_owned() } else { format!("{name}-{extension}") });
    let fresh = fs::metadata(&binary)
        .and_then(|b| Ok(b.modified()? >= fs::metadata(&path)?.modified()?))
        .unwrap_or(false);
    if !fresh {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let status = Command::new(&compiler)
            .args(flags)
            .arg("-o")
            .arg(&tmp)
            .arg(&path)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
        assert!(status.success(), "{compiler} failed on {}", path.display());
        fs::rename(&tmp, &binary).expect("move workload into place");
    }
    binary
}

/// A fresh, empty directory for one test's outputs.
pub fn output_dir(test: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = root().join(format!("target/e2e/{test}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst)));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create output dir");
    dir
}

/// A running oxeye.
pub struct Oxeye {
    child: Spawned,
    /// Where it writes its outputs.
    pub out_dir: PathBuf,
    stderr_path: PathBuf,
}

/// An oxeye that has exited.
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Where it wrote its outputs.
    pub out_dir: PathBuf,
}

impl Oxeye {
    /// Starts oxeye with `args` (plus `--no-live` and `--output-dir`) and waits until it
    /// samples.
    pub fn start(test: &str, args: &[&str]) -> Oxeye {
        Oxeye::start_with_env(test, args, &[])
    }

    /// Like [`Oxeye::start`], with extra environment variables.
    pub fn start_with_env(test: &str, args: &[&str], env: &[(&str, &str)]) -> Oxeye {
        Oxeye::launch(test, Command::new(oxeye_bin()), args, env, |_| {})
    }

    /// Starts `binary` (a copy of oxeye with file capabilities) as user `nobody`, with `args`;
    /// its output directory is `nobody`'s.
    pub fn start_as_nobody(test: &str, binary: &Path, args: &[&str]) -> Oxeye {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(binary);
        Oxeye::launch(test, command, args, &[], |dir| {
            // SAFETY: a path we own, a valid C string.
            let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in the path");
            assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0, "chown {} to nobody", dir.display());
        })
    }

    fn launch(test: &str, mut command: Command, args: &[&str], env: &[(&str, &str)], prepare_dir: impl FnOnce(&Path)) -> Oxeye {
        require_root();
        let out_dir = output_dir(test);
        prepare_dir(&out_dir);
        let stderr_path = out_dir.join("oxeye.stderr");
        let child = spawn(
            command
                // Debian's elfutils sets it for login shells: no test reaches out unless it says so.
                .env_remove("DEBUGINFOD_URLS")
                .envs(env.iter().copied())
                .args(args)
                .arg("--no-live")
                .arg("--output-dir")
                .arg(&out_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&stderr_path).expect("create stderr file")),
            "oxeye",
        );
        let mut oxeye = Oxeye { child, out_dir, stderr_path };
        oxeye.wait_for_stderr("sampling", Duration::from_secs(30));
        oxeye
    }

    /// Waits until oxeye's stderr contains `text`, and returns the first line that does;
    /// panics with the log if it exits first.
    pub fn wait_for_stderr(&mut self, text: &str, timeout: Duration) -> String {
        let _waiting = waiting_for(format!("waiting for oxeye to log {text:?}"));
        let until = Instant::now() + timeout;
        loop {
            let stderr = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            if let Some(line) = stderr.lines().find(|line| line.contains(text)) {
                return line.to_owned();
            }
            if let Some(exited) = self.child.try_wait() {
                panic!("oxeye exited with {} before printing {text:?}:\n{stderr}", exited.status);
            }
            deadline::check();
            assert!(Instant::now() < until, "oxeye did not print {text:?} within {timeout:?}:\n{stderr}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` and waits for oxeye to write its outputs and exit.
    pub fn stop_with(mut self, signal: i32) -> Finished {
        self.child.signal(signal);
        self.finish()
    }

    /// Stops oxeye like Ctrl-C does.
    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for oxeye to exit on its own (`--duration`).
    pub fn wait(mut self) -> Finished {
        self.finish()
    }

    /// Waits for the exit: 60 s at most, as writing the outputs takes a few seconds at worst.
    fn finish(&mut self) -> Finished {
        let status = self.child.wait_at_most(Duration::from_secs(60)).status;
        let stderr = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        Finished { status, stderr, out_dir: self.out_dir.clone() }
    }
}

impl Finished {
    /// Panics unless oxeye exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "oxeye exited with {}:\n{}", self.status, self.stderr);
        self
    }

    /// The number oxeye's last line containing `line_start` reports before `label`, e.g. 12
    /// for "12 dropped" in "oxeye: exported 345 samples (12 dropped, …)".
    pub fn reported(&self, line_start: &str, label: &str) -> u64 {
        let stderr = &self.stderr;
        let line = stderr.lines().rev().find(|l| l.contains(line_start)).unwrap_or_else(|| panic!("no line with {line_start:?}:\n{stderr}"));
        let before = line.split(label).next().unwrap_or_default();
        before
            .split_whitespace()
            .last()
            .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .unwrap_or_else(|| panic!("no number before {label:?} in {line:?}"))
    }

    /// The folded stacks it wrote.
    pub fn folded(&self) -> Folded {
        Folded::read(&self.out_dir.join("stacks.folded"))
    }
}

/// Starts a workload; `wait` on it gives its exit status and CPU time.
pub fn start_workload(binary: &Path, args: &[&str]) -> Spawned {
    let name = binary.file_name().map_or_else(|| binary.display().to_string(), |n| n.to_string_lossy().into_owned());
    spawn(Command::new(binary).args(args), &format!("workload {name}"))
}

/// Profiles one run of `binary` with `args` at 99 Hz, only that process (oxeye also gets
/// `extra`); returns what oxeye wrote and the CPU seconds the workload used.
pub fn profile_workload(test: &str, binary: &Path, args: &[&str], extra: &[&str]) -> (Finished, f64) {
    profile_workload_with_env(test, binary, args, extra, &[])
}

/// [`profile_workload`], with oxeye's environment extended by `env`.
pub fn profile_workload_with_env(test: &str, binary: &Path, args: &[&str], extra: &[&str], env: &[(&str, &str)]) -> (Finished, f64) {
    let mut child = start_workload(binary, args);
    let pid = child.id().to_string();
    let mut oxeye_args = vec!["--samples-per-second", "99", "--pid", &pid];
    oxeye_args.extend_from_slice(extra);
    let oxeye = Oxeye::start_with_env(test, &oxeye_args, env);
    let exited = child.wait();
    assert!(exited.status.success(), "{} failed: {}", binary.display(), exited.status);
    let finished = oxeye.wait();
    finished.assert_success();
    (finished, exited.cpu_seconds())
}

/// A workload that ran to completion.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// Its process id.
    pub pid: u32,
    /// User plus system CPU seconds it used: what its sample count follows.
    pub cpu_seconds: f64,
}

/// Runs a workload to completion; panics unless it succeeds.
pub fn run_workload(binary: &Path, args: &[&str]) -> Ran {
    let mut child = start_workload(binary, args);
    let exited = child.wait();
    assert!(exited.status.success(), "{} failed: {}", binary.display(), exited.status);
    Ran { pid: child.id(), cpu_seconds: exited.cpu_seconds() }
}

/// The number written right before the first `marker` in `text` (`"3 spans"`, `" spans"` → 3).
pub fn number_before(text: &str, marker: &str) -> Option<u64> {
    let before = &text[..text.find(marker)?];
    let digits = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    before[before.len() - digits..].parse().ok()
}
