//! Where a stripped file's symbols come from besides the file itself: a separate debug file
//! on the host (`--debug-file-directory`, see [`symbolizer::debug_file`]) or, failing that, a
//! debuginfod server (`DEBUGINFOD_URLS`, see [`crate::debuginfod`]).
//!
//! A debuginfod fetch takes longer than a sample: the file is named without it meanwhile, and
//! the registry re-reads it when the fetch is done ([`DebugSources::take_fetched`]).

use std::{collections::HashMap, fs::File, path::Path};

use symbolizer::{
    build_id::BuildId,
    debug_file::{DebugDirectories, DebugFile},
    elf::ElfSymbols,
};
use tracing::debug;

use crate::{
    debuginfod::{Debuginfod, DebuginfodStats, Lookup},
    objects::ObjectId,
};

/// How the files' debug files were found, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct DebugFigures {
    /// Files completed from a debug file on the host.
    pub local: u64,
    /// Files completed from a debug file fetched from debuginfod.
    pub fetched: u64,
    /// Files still waiting for debuginfod.
    pub waiting: usize,
}

/// The debug file sources, and the files waiting for a fetch.
#[derive(Debug, Default)]
pub struct DebugSources {
    directories: DebugDirectories,
    debuginfod: Option<Debuginfod>,
    /// Files whose build ID debuginfod is fetching.
    waiting: HashMap<BuildId, Vec<ObjectId>>,
    figures: DebugFigures,
}

impl DebugSources {
    /// Looks in `directories`, then asks `debuginfod` if given.
    pub fn new(directories: DebugDirectories, debuginfod: Option<Debuginfod>) -> Self {
        DebugSources { directories, debuginfod, ..Default::default() }
    }

    /// Completes `symbols` (of object `id`, which the process saw at `seen_path` under `root`)
    /// from a debug file if one is at hand; otherwise asks debuginfod, once per build ID.
    pub fn complete(&mut self, id: ObjectId, symbols: &mut ElfSymbols, seen_path: &str, root: &Path) {
        if let Some(found) = self.directories.find(symbols.build_id(), symbols.debug_link(), seen_path, root) {
            if merge(symbols, &found, seen_path) {
                self.figures.local += 1;
            }
            return;
        }
        let (Some(debuginfod), Some(build_id)) = (&self.debuginfod, symbols.build_id()) else { return };
        match debuginfod.lookup(build_id) {
            Lookup::Ready(path) => {
                if let Some(found) = open(&path) {
                    if merge(symbols, &found, seen_path) {
                        self.figures.fetched += 1;
                    }
                }
            }
            Lookup::Pending => self.waiting.entry(build_id.clone()).or_default().push(id),
            Lookup::Unavailable => {}
        }
    }

    /// Object `id` shares the symbols already read for `build_id`: if those wait for a
    /// fetch, it does too.
    pub fn shares(&mut self, id: ObjectId, build_id: &BuildId) {
        if let Some(waiting) = self.waiting.get_mut(build_id) {
            waiting.push(id);
        }
    }

    /// The objects whose debug file has been fetched since the last call, with that file.
    pub fn take_fetched(&mut self) -> Vec<(Vec<ObjectId>, DebugFile)> {
        let Some(debuginfod) = &self.debuginfod else { return Vec::new() };
        // What no server has (or could give) is not waited for any more.
        self.waiting.retain(|build_id, _| !matches!(debuginfod.lookup(build_id), Lookup::Unavailable));
        let mut fetched = Vec::new();
        for build_id in debuginfod.take_ready() {
            let Some(ids) = self.waiting.remove(&build_id) else { continue };
            if let Lookup::Ready(path) = debuginfod.lookup(&build_id) {
                if let Some(found) = open(&path) {
                    self.figures.fetched += 1;
                    fetched.push((ids, found));
                }
            }
        }
        fetched
    }

    /// How debug files were found so far.
    pub fn figures(&self) -> DebugFigures {
        DebugFigures { waiting: self.waiting.values().map(Vec::len).sum(), ..self.figures }
    }

    /// What the debuginfod client did, if one runs.
    pub fn debuginfod_stats(&self) -> Option<DebuginfodStats> {
        self.debuginfod.as_ref().map(Debuginfod::stats)
    }
}

/// Adds the debug file's symbols; says whether that worked.
pub fn merge(symbols: &mut ElfSymbols, found: &DebugFile, seen_path: &str) -> bool {
    match symbols.merge_debug_file(found) {
        Ok(count) => {
            debug!(path = seen_path, debug_file = %found.path.display(), symbols = count, "symbols from a debug file");
            true
        }
        Err(error) => {
            debug!(path = seen_path, %error, "cannot read the debug file");
            false
        }
    }
}

fn open(path: &Path) -> Option<DebugFile> {
    File::open(path).ok().map(|file| DebugFile { path: path.to_owned(), file })
}
