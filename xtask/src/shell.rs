//! Running commands and saying what is being run.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_owned()
}

/// Prints `==> what` so a user sees each step.
pub fn say(what: impl std::fmt::Display) {
    eprintln!("==> {what}");
}

/// Runs `command`, failing with its command line if it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let line = format!("{command:?}");
    let status = command.status().with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

/// Runs `command` in its own process group, failing with one line naming `what` if it fails
/// or is still running after `limit` (then it and everything it started are killed).
pub fn run_with_deadline(command: &mut Command, what: &str, limit: Duration) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut child = command.process_group(0).spawn().with_context(|| format!("cannot start {what}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            // SAFETY: plain kill(2) of the group made for this child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            bail!("{what} did not finish within {} s: killed it and what it started", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("{what} failed with {status}");
    }
    Ok(())
}

/// Standard output of a command, if it ran and exited 0.
pub fn output(program: impl AsRef<OsStr>, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as root: directly if we are root, else through sudo.
pub fn root_command(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("--preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME,OXEYE_CAPABILITY_MATRIX").arg(program);
        command
    }
}

/// Replaces this process with `binary args` run as root, so Ctrl-C and the exit code are
/// oxeye's own.
pub fn exec_as_root(binary: &Path, args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let error = root_command(binary).args(args).exec();
    Err(error).with_context(|| format!("cannot start {}", binary.display()))
}
