//! Booting a kernel and an initramfs under qemu's full-system emulation, with the serial
//! console captured to a file.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::arch::Arch;

/// The longest a guest may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(900);

/// What a boot produced.
pub struct Boot {
    /// Everything the guest printed on its console.
    pub console: String,
}

/// Boots `kernel` with `initramfs` on `cpus` CPUs (2 GiB, and 16 MiB more per CPU past two),
/// with `environment` in `/init`'s environment (the kernel passes it `KEY=VALUE` words of its
/// command line it does not know), waits for the guest to power off (at most [`TIMEOUT`]), and returns its console, also kept
/// in `console_log`.
pub fn boot(arch: Arch, kernel: &Path, initramfs: &Path, console_log: &Path, cpus: u32, environment: &[(&str, &str)]) -> Result<Boot> {
    let (emulator, machine, console) = arch.qemu();
    let log = fs::File::create(console_log).with_context(|| format!("cannot create {}", console_log.display()))?;
    let started = Instant::now();
    let mut qemu = Command::new(emulator)
        .args(machine)
        .args(["-smp", &cpus.to_string(), "-m", &(2048 + 16 * cpus.saturating_sub(2)).to_string()])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!("console={console} rdinit=/init panic=-1 quiet{}", environment.iter().map(|(key, value)| format!(" {key}={value}")).collect::<String>()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {emulator} (apt-get install qemu-system-arm qemu-system-x86)"))?;
    let status = loop {
        if let Some(status) = qemu.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            bail!("the guest did not power off within {TIMEOUT:?}; its console is in {}", console_log.display());
        }
        thread::sleep(Duration::from_millis(200));
    };
    let console = String::from_utf8_lossy(&fs::read(console_log)?).replace('\r', "");
    if !status.success() {
        bail!("{emulator} exited with {status}; the console is in {}", console_log.display());
    }
    Ok(Boot { console })
}
