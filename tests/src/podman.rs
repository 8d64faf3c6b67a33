//! podman as `../shared/TOOLCHAIN.md` runs it here: runc, and no ulimits to raise (the sandbox
//! refuses them), with a configuration file of the test's own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// A podman whose every command uses the test's configuration.
pub struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// Writes the configuration into `dir`.
    pub fn new(dir: &Path) -> Podman {
        let conf = dir.join("containers.conf");
        fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        Podman { conf }
    }

    /// `podman --runtime runc ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command.env("CONTAINERS_CONF", &self.conf).args(["--runtime", "runc"]).args(args);
        command
    }
}
