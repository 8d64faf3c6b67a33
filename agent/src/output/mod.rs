//! Local output written when oxeye stops: `stacks.folded`, `flamegraph.svg`, `profile.pb.gz`.

mod flamegraph;
mod folded;
mod pprof;
mod pprof_proto;

use std::{
    fs,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use tracing::info;

use crate::{objects::ObjectRegistry, profile::Profile, symbolize::FrameNamer};

/// Facts about the run that the outputs record.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo {
    /// When sampling started.
    pub start: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// Nanoseconds of CPU time one sample stands for.
    pub period_ns: u64,
    /// Off-CPU sampling ran: its files are written too.
    pub off_cpu: bool,
}

/// Writes all outputs into `dir` (created if missing). Returns the paths written.
pub fn write_all(dir: &Path, profile: &Profile, namer: &mut FrameNamer, objects: &mut ObjectRegistry, run: RunInfo) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let mut written = write_kind(dir, Kind::Cpu, profile, namer, objects, run)?;
    if run.off_cpu {
        written.extend(write_kind(dir, Kind::OffCpu, profile, namer, objects, run)?);
    }
    Ok(written)
}

/// Which of the profile's measures a set of files shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CPU samples: `stacks.folded`, `flamegraph.svg`, `profile.pb.gz`.
    Cpu,
    /// Nanoseconds off CPU: `off_cpu.folded`, `off_cpu.svg`, `off_cpu.pb.gz`.
    OffCpu,
}

fn write_kind(dir: &Path, kind: Kind, profile: &Profile, namer: &mut FrameNamer, objects: &mut ObjectRegistry, run: RunInfo) -> Result<Vec<PathBuf>> {
    let (lines, names) = match kind {
        Kind::Cpu => (folded::fold(profile, profile.counts(), namer, objects), ["stacks.folded", "flamegraph.svg", "profile.pb.gz"]),
        Kind::OffCpu => (folded::fold(profile, profile.off_cpu(), namer, objects), ["off_cpu.folded", "off_cpu.svg", "off_cpu.pb.gz"]),
    };
    let folded_path = write_atomically(dir, names[0], |w| folded::write(&lines, w))?;
    let svg_path = write_atomically(dir, names[1], |w| flamegraph::write(&lines, kind, w))?;
    let pprof_path = write_atomically(dir, names[2], |w| pprof::write(profile, kind, namer, objects, run, w))?;
    info!(samples = profile.samples, stacks = lines.len(), dir = %dir.display(), "wrote {}", names.join(", "));
    Ok(vec![folded_path, svg_path, pprof_path])
}

/// Writes `name` through a temporary file and a rename, so readers never see half a file.
fn write_atomically(dir: &Path, name: &str, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let result: Result<()> = (|| {
        let file = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = BufWriter::new(file);
        write(&mut writer)?;
        writer.flush()?;
        fs::rename(&tmp, &path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
