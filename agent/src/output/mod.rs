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
}

/// Writes all outputs into `dir` (created if missing). Returns the paths written.
pub fn write_all(dir: &Path, profile: &Profile, namer: &mut FrameNamer, objects: &mut ObjectRegistry, run: RunInfo) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let lines = folded::fold(profile, namer, objects);
    let folded_path = write_atomically(dir, "stacks.folded", |w| folded::write(&lines, w))?;
    let svg_path = write_atomically(dir, "flamegraph.svg", |w| flamegraph::write(&lines, w))?;
    let pprof_path = write_atomically(dir, "profile.pb.gz", |w| pprof::write(profile, namer, objects, run, w))?;
    info!(samples = profile.samples, stacks = lines.len(), dir = %dir.display(), "wrote stacks.folded, flamegraph.svg, profile.pb.gz");
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
