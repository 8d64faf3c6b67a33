//! The image's only layer: its files, the shared libraries the binary needs, and a
//! reproducible tar of them.

use std::{collections::BTreeMap, fs, io::Write, path::Path};

use anyhow::{bail, Context, Result};
use flate2::{write::GzEncoder, Compression};
use object::{elf, read::elf::ElfFile64, read::elf::ProgramHeader, Endianness, Object};
use sha2::{Digest, Sha256};

use super::Platform;

/// Users of the image: root, and nobody to run unprivileged with file capabilities.
const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
/// The CA certificates oxeye trusts for TLS to a collector (rustls-native-certs reads them),
/// copied from this machine when it has them.
const CA_CERTIFICATES: &str = "etc/ssl/certs/ca-certificates.crt";

/// One entry of a tar archive.
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// The files of an image or archive by path (relative, without a leading `/`): sorted, so
/// that parents come before their children and every build writes them in the same order.
pub type Tree = BTreeMap<String, Entry>;

/// The image's files: `oxeye` (the binary's bytes) as `/usr/bin/oxeye` with its libraries,
/// and the few files and directories a program expects.
pub fn rootfs(oxeye: Vec<u8>, platform: &Platform) -> Result<Tree> {
    let mut tree = Tree::new();
    let interpreter = add_libraries(&mut tree, &oxeye, platform)?;
    add(&mut tree, "usr/bin/oxeye", Entry::File { mode: 0o755, data: oxeye });
    add(&mut tree, "etc/passwd", Entry::File { mode: 0o644, data: PASSWD.into() });
    add(&mut tree, "etc/group", Entry::File { mode: 0o644, data: GROUP.into() });
    match fs::read(Path::new("/").join(CA_CERTIFICATES)) {
        Ok(data) => add(&mut tree, CA_CERTIFICATES, Entry::File { mode: 0o644, data }),
        Err(error) => crate::shell::say(format!("no CA certificates in the image (/{CA_CERTIFICATES}: {error}): TLS needs --tls-ca-file")),
    }
    add(&mut tree, "tmp", Entry::Dir { mode: 0o1777 });
    add(&mut tree, "var/lib/oxeye", Entry::Dir { mode: 0o755 });
    // The interpreter the binary names, as on Debian: a link to the library directory's copy,
    // relative so that it also resolves in an unpacked copy (`qemu-aarch64 -L rootfs`).
    let (path, target) = interpreter;
    if path != target {
        let up = "../".repeat(Path::new(&path).components().count() - 1);
        add(&mut tree, &path, Entry::Symlink { target: format!("{up}{target}") });
    }
    Ok(tree)
}

/// Adds `entry` at `path`, and the directories above it (mode 755) that are not there yet.
fn add(tree: &mut Tree, path: &str, entry: Entry) {
    let mut parent = Path::new(path).parent();
    while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
        tree.entry(dir.to_string_lossy().into_owned()).or_insert(Entry::Dir { mode: 0o755 });
        parent = dir.parent();
    }
    tree.insert(path.to_owned(), entry);
}

/// What an ELF file asks of the dynamic loader.
struct Needs {
    /// Its `DT_NEEDED` entries.
    libraries: Vec<String>,
    /// Its `PT_INTERP`, for an executable.
    interpreter: Option<String>,
}

/// Reads `data`'s needs, checking it is built for `platform`.
fn needs(data: &[u8], what: &str, platform: &Platform) -> Result<Needs> {
    let file = ElfFile64::<Endianness>::parse(data).with_context(|| format!("{what} is not a 64-bit ELF file"))?;
    if file.architecture() != platform.elf_arch {
        bail!("{what} is built for {:?}, not {:?}", file.architecture(), platform.elf_arch);
    }
    let dynamic = file.elf_dynamic_table().with_context(|| format!("cannot read {what}'s dynamic section"))?;
    let mut libraries = Vec::new();
    for entry in dynamic.iter().filter(|entry| entry.tag == elf::DT_NEEDED) {
        let name = dynamic.string(entry).with_context(|| format!("bad DT_NEEDED entry in {what}"))?;
        libraries.push(String::from_utf8_lossy(name).into_owned());
    }
    let mut interpreter = None;
    for header in file.elf_program_headers() {
        if let Some(path) = header.interpreter(file.endian(), data).with_context(|| format!("bad PT_INTERP in {what}"))? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    Ok(Needs { libraries, interpreter })
}

/// Adds the libraries `oxeye` needs (and those they need) to `/lib/<triplet>/`, found in the
/// platform's library directories on this machine. Returns the interpreter's path in the
/// image and the path of the library it is.
fn add_libraries(tree: &mut Tree, oxeye: &[u8], platform: &Platform) -> Result<(String, String)> {
    let Needs { libraries, interpreter } = needs(oxeye, "oxeye", platform)?;
    let interpreter = interpreter.context("oxeye has no PT_INTERP: a static binary needs no image layer of libraries, and is not what cargo builds here")?;
    let interpreter_name = Path::new(&interpreter).file_name().context("PT_INTERP names no file")?.to_string_lossy().into_owned();
    let mut wanted = libraries;
    wanted.push(interpreter_name.clone());
    let lib_dir = format!("lib/{}", platform.triplet);
    while let Some(name) = wanted.pop() {
        let path = format!("{lib_dir}/{name}");
        if tree.contains_key(&path) {
            continue;
        }
        let (found, data) = find_library(&name, platform)?;
        wanted.extend(needs(&data, &found, platform)?.libraries);
        add(tree, &path, Entry::File { mode: 0o755, data });
    }
    Ok((interpreter.trim_start_matches('/').to_owned(), format!("{lib_dir}/{interpreter_name}")))
}

/// The first of the platform's library directories holding `name`: its path and bytes
/// (through symbolic links).
fn find_library(name: &str, platform: &Platform) -> Result<(String, Vec<u8>)> {
    for dir in platform.host_lib_dirs {
        let path = Path::new(dir).join(name);
        if path.exists() {
            let data = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok((path.display().to_string(), data));
        }
    }
    bail!("oxeye needs {name}, which is in none of {} (is the target's libc installed?)", platform.host_lib_dirs.join(", "))
}

/// The layer as the image holds it.
pub struct Layer {
    /// The gzip-compressed tar: the blob.
    pub gzip: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed tar: the config's diff_id.
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub tar_len: usize,
}

impl Layer {
    /// Packs `tree` into a tar dated `epoch`, and compresses it.
    pub fn pack(tree: &Tree, epoch: u64) -> Result<Layer> {
        let tar = tar(tree, epoch)?;
        // GzEncoder's header has no name and a zero date: the same input gives the same bytes.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&tar).context("cannot compress the layer")?;
        let gzip = encoder.finish().context("cannot compress the layer")?;
        Ok(Layer { gzip, diff_id: sha256(&tar), tar_len: tar.len() })
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A tar of `tree` in its order, every entry owned by 0:0 and dated `epoch`.
pub fn tar(tree: &Tree, epoch: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in tree {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch);
        let appended = match entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())
            }
            Entry::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())
            }
            Entry::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)
            }
        };
        appended.with_context(|| format!("cannot add {path} to the tar"))?;
    }
    builder.into_inner().context("cannot finish the tar")
}
