//! The symbol endpoint's cost (`--symbols-only`): oxeye profiles `rustc` and Debian's `llc`
//! compiling (so rustup's 200 MB libLLVM and 150 MB librustc_driver, Debian's 150 MB libLLVM, and
//! libc, are sampled and catalogued), then each
//! file is fetched the way devfiler fetches it (`metadata.json`, then `ranges`). Per file: the
//! wall time to the last byte, oxeye's CPU for it, the compressed size, and `nm -C -S`'s time
//! on the same file's symbol table as the reference; then oxeye's memory before and after, and samples
//! lost while it served. Saturation: 16 clients (devfiler's parallelism) fetching for 3 s.
//! A fresh oxeye per round, so every round builds from scratch; medians over rounds.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use symbolizer::file_id::FileId;

use super::{median, task_cpu_ns, wait_for_text, Stopped};
use crate::shell::root;

/// How long `rustc` runs under oxeye each round, so its libraries are sampled.
const WORKLOAD_SECONDS: u64 = 4;
/// Clients and duration of the saturation run.
const CLIENTS: usize = 16;
const SATURATION: Duration = Duration::from_secs(3);

/// One file's figures in one round.
struct Served {
    wall_ms: f64,
    cpu_ms: f64,
    bytes: usize,
    nm_ms: f64,
}

/// Runs the symbol endpoint benchmark and prints its table.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    let files = files()?;
    let port = free_port()?;
    let mut served: Vec<Vec<Served>> = files.iter().map(|_| Vec::new()).collect();
    let (mut rss_growth, mut per_second, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let log = work_dir.join("oxeye-symbols.stderr");
        let mut child = Stopped(
            Command::new(oxeye)
                .args(["-F", "99", "--no-live", "--no-network", "--summary-interval", "3600", "--symbols-listen", &port.to_string(), "--output-dir"])
                .arg(work_dir)
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log)?)
                .spawn()
                .context("cannot start oxeye")?,
        );
        wait_for_text(&log, "sampling")?;
        compile_for(Duration::from_secs(WORKLOAD_SECONDS), work_dir)?;
        let rss_before = status_kib(child.id(), "VmRSS:");
        for (index, (label, path, id)) in files.iter().enumerate() {
            let cpu_before = task_cpu_ns(child.id());
            let started = Instant::now();
            let (status, _) = get(port, &url_path(id, "metadata.json"))?;
            if status != 200 {
                bail!("{label}: metadata.json answered {status}; was it sampled? (see {})", log.display());
            }
            let (status, body) = get(port, &url_path(id, "ranges"))?;
            if status != 200 {
                bail!("{label}: ranges answered {status}");
            }
            let wall_ms = started.elapsed().as_secs_f64() * 1e3;
            let cpu_ms = (task_cpu_ns(child.id()) - cpu_before) as f64 / 1e6;
            let nm_ms = nm_time(path)?;
            eprintln!("    round {}: {label:<28} {wall_ms:>8.0} ms  oxeye CPU {cpu_ms:>7.0} ms  {:>7.2} MB  nm {nm_ms:>6.0} ms", round + 1, body.len() as f64 / 1e6);
            served[index].push(Served { wall_ms, cpu_ms, bytes: body.len(), nm_ms });
        }
        rss_growth.push((status_kib(child.id(), "VmHWM:") as f64 - rss_before as f64) / 1024.0);
        let ids: Vec<String> = files.iter().map(|(_, _, id)| id.clone()).collect();
        per_second.push(saturate(port, &ids)?);
        child.stop();
        lost.push(lost_in_kernel(&fs::read_to_string(&log).unwrap_or_default()) as f64);
    }

    println!("\nsymbol endpoint: files sampled while rustc compiled, fetched as devfiler does (metadata.json, then ranges), a fresh oxeye each round, medians of {rounds} rounds");
    println!("{:<30} {:>10} {:>12} {:>12} {:>14} {:>14}", "file", "size", "served in", "oxeye CPU", "ranges (zstd)", "served / nm");
    for ((label, path, _), results) in files.iter().zip(&served) {
        let size = fs::metadata(path).map_or(0, |m| m.len()) as f64 / 1e6;
        let wall = median(results.iter().map(|s| s.wall_ms).collect());
        let cpu = median(results.iter().map(|s| s.cpu_ms).collect());
        let bytes = median(results.iter().map(|s| s.bytes as f64).collect());
        let ratio = median(results.iter().map(|s| s.wall_ms / s.nm_ms.max(0.001)).collect());
        println!("{label:<30} {size:>7.1} MB {wall:>9.0} ms {cpu:>9.0} ms {:>11.2} MB {ratio:>13.2}x", bytes / 1e6);
    }
    println!(
        "oxeye's peak RSS grew {:.1} MB while serving; {:.0} samples lost in the kernel per round; saturation ({CLIENTS} clients, cached): {:.0} requests/s",
        median(rss_growth),
        median(lost),
        median(per_second)
    );
    println!("targets: a 150 MB library served in <= 1 s with bounded memory; no samples lost while serving");
    Ok(())
}

/// Debian's LLVM (`llvm-22-dev`, which the BPF build installs): `llc` and its libLLVM.
const DEBIAN_LLC: &str = "/usr/lib/llvm-22/bin/llc";
const DEBIAN_LIBLLVM: &str = "/usr/lib/llvm-22/lib/libLLVM.so.22.1";

/// The files to fetch: rustup's libLLVM and librustc_driver (what `rustc` runs), Debian's
/// libLLVM (what `llc` runs), and libc.
fn files() -> Result<Vec<(String, PathBuf, String)>> {
    let sysroot = String::from_utf8(Command::new("rustc").args(["--print", "sysroot"]).output()?.stdout)?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let mut files = Vec::new();
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot read {}", lib.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // The real libLLVM, not the linker script beside it.
        if (name.starts_with("libLLVM.so") || name.starts_with("librustc_driver")) && fs::metadata(&path)?.len() > 1 << 20 {
            files.push((name, path));
        }
    }
    files.sort();
    let debian = fs::canonicalize(DEBIAN_LIBLLVM).with_context(|| format!("no {DEBIAN_LIBLLVM} (cargo xtask setup installs llvm-22-dev)"))?;
    files.push((format!("{} (Debian)", debian.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()), debian));
    files.push(("libc.so.6".to_owned(), PathBuf::from(format!("/lib/{}-linux-gnu/libc.so.6", std::env::consts::ARCH))));
    files
        .into_iter()
        .map(|(label, path)| {
            let id = FileId::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok((label, path, id.to_base64url()))
        })
        .collect()
}

/// Runs `rustc -O` on a workload, then Debian's `llc` on its LLVM IR, again and again for
/// `duration` each.
fn compile_for(duration: Duration, work_dir: &Path) -> Result<()> {
    let source = root().join("tests/workloads/chain.rs");
    let ir = work_dir.join("chain-bench.ll");
    let run = |command: &mut Command, what: &str| -> Result<()> {
        let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().with_context(|| format!("cannot run {what}"))?;
        if !status.success() {
            bail!("{what} failed: {status}");
        }
        Ok(())
    };
    let until = Instant::now() + duration;
    while Instant::now() < until {
        run(Command::new("rustc").args(["-C", "opt-level=3", "--emit=link,llvm-ir", "-o"]).arg(work_dir.join("chain-bench")).arg(&source), "rustc")?;
    }
    // rustc names the IR after its output.
    let until = Instant::now() + duration;
    while Instant::now() < until {
        run(Command::new(DEBIAN_LLC).args(["-O3", "-o", "/dev/null"]).arg(&ir), "llc")?;
    }
    Ok(())
}

/// `CLIENTS` threads fetching `ids`' ranges in turn for [`SATURATION`]; requests per second.
fn saturate(port: u16, ids: &[String]) -> Result<f64> {
    let until = Instant::now() + SATURATION;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let ids = ids.to_vec();
            thread::spawn(move || {
                let mut done = 0u64;
                while Instant::now() < until {
                    let id = &ids[(client + done as usize) % ids.len()];
                    if get(port, &url_path(id, "ranges")).is_ok_and(|(status, _)| status == 200) {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    Ok(total as f64 / SATURATION.as_secs_f64())
}

/// `nm -C -S`'s time to list and demangle the file's symbol table (`.symtab`, or `.dynsym` when
/// the file has none), the reference for reading the same symbols.
fn nm_time(path: &Path) -> Result<f64> {
    let started = Instant::now();
    let listed = Command::new("nm").args(["-C", "-S", "--defined-only"]).arg(path).stderr(Stdio::null()).output()?;
    if listed.stdout.is_empty() {
        let started = Instant::now();
        Command::new("nm").args(["-D", "-C", "-S", "--defined-only"]).arg(path).stdout(Stdio::null()).status()?;
        return Ok(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn url_path(id: &str, document: &str) -> String {
    format!("/{}/{}/{id}/{document}", &id[..2], &id[2..4])
}

/// A plain HTTP/1.1 GET on a new connection: status and body.
fn get(port: u16, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").context("no response head")? + 4;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, response[head_end..].to_vec()))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`); 0 if it cannot be read.
pub(super) fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// "N lost in kernel" from oxeye's final line.
fn lost_in_kernel(stderr: &str) -> u64 {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("lost in kernel"))
        .and_then(|l| l.split(" lost in kernel").next()?.rsplit('(').next()?.trim().parse().ok())
        .unwrap_or(0)
}
