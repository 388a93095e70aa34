//! OCI images: resolving references in local image layouts, verifying every
//! blob, unpacking layers into a digest-keyed cache of read-only root
//! filesystems shared by pods.
//!
//! # Design
//! [`ImageStore::pull`] resolves `name[:tag]` (or `name@sha256:…`) in a
//! list of image directories, each holding layouts as `<dir>/<name>/` or
//! tarballs as `<dir>/<name>.tar`; an absolute path names a layout or
//! tarball directly. The tag is matched against the index's
//! `org.opencontainers.image.ref.name` annotation (default `latest`; an index
//! with a single untagged manifest answers to `latest`). Nested indexes are
//! followed to this host's `linux/<arch>` manifest. OCI and Docker v2
//! manifest, index and config media types are understood; anything else is
//! rejected by name.
//!
//! Only `index.json` (and nested indexes) are read to find the manifest
//! digest, which keys the cache: `<cache>/images/<hex>/` holds `rootfs/` and
//! `image.json` (the config berth uses). A hit costs no blob reads.
//!
//! A miss reads the manifest and config, then applies the layers in order
//! into `<cache>/tmp/<hex>.<pid>.<n>/rootfs`, renamed into place only when
//! complete (after a `syncfs`), so a reader never sees half an image. Two
//! concurrent imports of one image both unpack; the loser of the rename
//! discards its copy. Every blob is hashed while streamed (never held whole
//! in memory) and checked against its descriptor's size and sha256 before
//! it is used; a layer's uncompressed tar is checked against the config's
//! `diff_ids` as well.
//!
//! Each layer is read twice. The first pass verifies the blob, checks every
//! entry (no `..`, no device nodes or FIFOs, sane whiteouts and hard-link
//! names) and collects whiteouts; the whiteouts are then applied to the
//! layers below (`.wh.name` removes `name`, `.wh..wh..opq` empties its
//! directory) and only then does the second pass extract — hashing again,
//! so a blob changed between the passes is caught. Extraction never follows
//! a symlink: every parent of an entry is checked with `lstat` to be a real
//! directory (an entry below a symlink is rejected, naming the layer and
//! the entry), files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` after
//! removing what was there, metadata is set through the file descriptor
//! (or `lchown`/`lutimes` for symlinks), and hard-link targets must be
//! existing non-directories reached through real directories. Absolute
//! entry names are taken relative to the rootfs, as containerd does.
//! Directory modes and times are applied last, deepest first, so a
//! read-only directory does not block its own contents. Any failure drops
//! the temporary directory, so a rejected image leaves nothing behind.
//!
//! Tests build layouts in memory (tar + gzip + sha256, see `tests.rs`);
//! `cargo xtask test-image` builds the real test image the same way.
//!
//! # Limitations
//! - Local layouts only: no registry client. Tarballs must be uncompressed
//!   (`.tar`). Only sha256 digests.
//! - Modes, owners (only when running as root; otherwise files belong to the
//!   caller), symlinks, hard links and whole-second mtimes are preserved;
//!   extended attributes (file capabilities, SELinux labels) and pax
//!   sub-second times are not.
//! - An entry whose parent is a symlink is rejected even when the symlink
//!   points inside the rootfs (layer diffs never contain such entries).
//! - Absolute-path references let whoever writes Pod manifests import any
//!   valid layout on the node, by design.
//! - No garbage collection of unused images; a temporary directory left by
//!   a crash is removed by the next [`ImageStore::open`] once its process is
//!   gone (a reused pid keeps it until the next open).
//! - zstd layers, foreign-layer URLs, and nested indexes deeper than four
//!   are rejected.

mod layout;
#[cfg(test)]
mod tests;
mod unpack;

use std::{
    ffi::OsStr,
    fs, io,
    os::unix::fs::DirBuilderExt,
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use layout::{Layout, Selector, digest_hex};
pub use unpack::Rejection;
use unpack::{Ownership, Unpacker, remove_tree};

/// The tag a reference without one means.
pub const DEFAULT_TAG: &str = "latest";

/// Cache entries and temporary directories under the cache root.
const IMAGES_DIR: &str = "images";
const TMP_DIR: &str = "tmp";
const ROOTFS_DIR: &str = "rootfs";
const RECORD_FILE: &str = "image.json";

/// An unpacked image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:…` of the manifest: the image's identity.
    pub digest: String,
    /// The unpacked root filesystem: a read-only lower directory shared by
    /// every container of this image. Never write into it.
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

/// What berth uses of an image's config (`config` in the OCI image
/// config). Empty strings and lists where the image sets nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image says.
    pub user: String,
    /// `SIGQUIT`, `QUIT` or `3`, as the image says.
    pub stop_signal: Option<String>,
}

/// What `image.json` in a cache entry holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    digest: String,
    config: ImageConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {reference:?} is invalid: {reason}")]
    BadReference { reference: String, reason: &'static str },
    #[error("image {reference:?} not found: looked for {}", display_paths(.searched))]
    NotFound { reference: String, searched: Vec<PathBuf> },
    #[error("{}: no manifest for {wanted:?} in index.json (tags: {available:?})", .layout.display())]
    TagNotFound { layout: PathBuf, wanted: String, available: Vec<String> },
    #[error("{}: {what}: unsupported media type {media_type:?}", .layout.display())]
    UnsupportedMediaType { layout: PathBuf, what: String, media_type: String },
    #[error("{}: unsupported digest {digest:?} (only sha256:<64 hex>)", .layout.display())]
    UnsupportedDigest { layout: PathBuf, digest: String },
    #[error("{}: blob {digest} is missing", .layout.display())]
    MissingBlob { layout: PathBuf, digest: String },
    #[error(
        "{}: blob {digest} is {} bytes, its descriptor says {expected}",
        .layout.display(),
        .actual.map_or_else(|| "more than that".to_owned(), |n| n.to_string())
    )]
    SizeMismatch { layout: PathBuf, digest: String, expected: u64, actual: Option<u64> },
    #[error("{}: blob {digest} has digest {actual}", .layout.display())]
    DigestMismatch { layout: PathBuf, digest: String, actual: String },
    #[error("{}: layer {layer}: uncompressed tar has digest {actual}, the config's diff_id is {expected}", .layout.display())]
    DiffIdMismatch { layout: PathBuf, layer: String, expected: String, actual: String },
    #[error("{}: {what} is not valid: {cause}", .layout.display())]
    BadJson { layout: PathBuf, what: String, cause: serde_json::Error },
    #[error("{}: {what}: {reason}", .layout.display())]
    BadLayout { layout: PathBuf, what: String, reason: String },
    #[error("{}: layer {layer}: not a valid tar{}: {cause}", .layout.display(), if *.gzip { " (gzip)" } else { "" })]
    CorruptLayer { layout: PathBuf, layer: String, gzip: bool, cause: io::Error },
    #[error("{}: layer {layer}: entry {entry:?} rejected: {reason}", .layout.display())]
    UnsafeEntry { layout: PathBuf, layer: String, entry: String, reason: Rejection },
    #[error("{op} {}: {cause}", .path.display())]
    Io { op: &'static str, path: PathBuf, cause: io::Error },
    #[error("cache entry {} is unreadable: {cause}", .path.display())]
    BadCacheEntry { path: PathBuf, cause: serde_json::Error },
}

impl ImageError {
    /// The entry rejection, if this is one (tests and callers that want to
    /// tell "bad image" from "bad disk").
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::UnsafeEntry { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |cause| ImageError::Io { op, path: path.to_owned(), cause }
}

/// The image cache. Cheap to share (`&self` everywhere) and safe to use
/// from several threads or processes at once.
#[derive(Debug)]
pub struct ImageStore {
    images: PathBuf,
    tmp: PathBuf,
    ownership: Ownership,
}

/// Distinguishes temporary directories of one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl ImageStore {
    /// Opens (creating) the cache at `cache_root` and removes temporary
    /// directories left by processes that are gone.
    ///
    /// # Errors
    /// [`ImageError::Io`] if the directories cannot be created or listed.
    pub fn open(cache_root: &Path) -> Result<Self, ImageError> {
        let root = std::path::absolute(cache_root).map_err(io_err("resolving", cache_root))?;
        let images = root.join(IMAGES_DIR);
        let tmp = root.join(TMP_DIR);
        for dir in [&images, &tmp] {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("creating", dir))?;
        }
        let ownership = if nix::unistd::geteuid().is_root() { Ownership::Preserve } else { Ownership::Caller };
        let store = Self { images, tmp, ownership };
        store.remove_stale_temporaries()?;
        Ok(store)
    }

    fn remove_stale_temporaries(&self) -> Result<(), ImageError> {
        for entry in fs::read_dir(&self.tmp).map_err(io_err("listing", &self.tmp))? {
            let entry = entry.map_err(io_err("listing", &self.tmp))?;
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.split('.').nth(1)).and_then(|p| p.parse::<i32>().ok());
            let gone = match pid {
                Some(pid) if pid > 0 => {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
                }
                // Not a name we write: ours to clean all the same.
                _ => true,
            };
            if gone {
                let path = entry.path();
                remove_tree(&path).map_err(io_err("removing", &path))?;
            }
        }
        Ok(())
    }

    /// Resolves `reference` and imports the image unless it is cached.
    ///
    /// `reference` is `name[:tag]` or `name@sha256:<hex>`, looked up in each
    /// of `image_dirs` in order as the layout directory `<dir>/<name>/` or
    /// the tarball `<dir>/<name>.tar`; or an absolute path to a layout or
    /// tarball with an optional `:tag` or `@digest`.
    ///
    /// # Errors
    /// [`ImageError::BadReference`] for a malformed reference,
    /// [`ImageError::NotFound`] naming every place looked at, and whatever
    /// [`ImageStore::import`] returns.
    pub fn pull(&self, reference: &str, image_dirs: &[PathBuf]) -> Result<Image, ImageError> {
        let (location, selector) = parse_reference(reference)?;
        let path = match location {
            Location::Path(path) => path,
            Location::Name(name) => find(reference, &name, image_dirs)?,
        };
        let layout = Layout::open(&path)?;
        self.import_layout(&layout, &selector)
    }

    /// Imports the layout directory or tarball at `layout` (the manifest
    /// tagged `tag`, default `latest`) unless it is cached.
    ///
    /// # Errors
    /// Any [`ImageError`]: a missing or malformed layout, an unsupported
    /// media type, a blob whose size or digest does not match, an unsafe
    /// layer entry ([`ImageError::UnsafeEntry`]), or I/O. Nothing is left in
    /// the cache on error.
    pub fn import(&self, layout: &Path, tag: Option<&str>) -> Result<Image, ImageError> {
        let selector = Selector::Tag(tag.unwrap_or(DEFAULT_TAG).to_owned());
        self.import_layout(&Layout::open(layout)?, &selector)
    }

    fn import_layout(&self, layout: &Layout, selector: &Selector) -> Result<Image, ImageError> {
        let manifest = layout.resolve(selector)?;
        let hex = digest_hex(&manifest.digest)
            .ok_or_else(|| ImageError::UnsupportedDigest {
                layout: layout.path.clone(),
                digest: manifest.digest.clone(),
            })?
            .to_owned();
        if let Some(image) = self.cached(&hex)? {
            return Ok(image);
        }
        let resolved = layout.load(&manifest)?;
        let tmp = TempDir::create(&self.tmp, &hex)?;
        let rootfs = tmp.path.join(ROOTFS_DIR);
        fs::DirBuilder::new().mode(0o755).create(&rootfs).map_err(io_err("creating", &rootfs))?;
        let mut unpacker = Unpacker::new(layout, &rootfs, self.ownership);
        for layer in &resolved.layers {
            unpacker.apply(layer)?;
        }
        unpacker.finish()?;
        let record = Record { digest: manifest.digest.clone(), config: resolved.config };
        let record_path = tmp.path.join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|cause| ImageError::BadCacheEntry { path: record_path.clone(), cause })?;
        fs::write(&record_path, json).map_err(io_err("writing", &record_path))?;
        // Everything durable before the rename makes the entry visible: after
        // a crash, an entry is either complete or absent.
        let dir = fs::File::open(&tmp.path).map_err(io_err("opening", &tmp.path))?;
        nix::unistd::syncfs(&dir).map_err(|e| io_err("syncing", &tmp.path)(e.into()))?;
        let dest = self.images.join(&hex);
        match fs::rename(&tmp.path, &dest) {
            Ok(()) => tmp.keep(),
            // Another import of the same image won the race; its entry is
            // the same bytes. Ours is dropped with `tmp`.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {}
            Err(e) => return Err(io_err("renaming into", &dest)(e)),
        }
        Ok(Image { digest: record.digest, rootfs: dest.join(ROOTFS_DIR), config: record.config })
    }

    /// The cached image with manifest digest `sha256:<hex>`, if any.
    fn cached(&self, hex: &str) -> Result<Option<Image>, ImageError> {
        let dir = self.images.join(hex);
        let record_path = dir.join(RECORD_FILE);
        let bytes = match fs::read(&record_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &record_path)(e)),
        };
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|cause| ImageError::BadCacheEntry { path: record_path.clone(), cause })?;
        Ok(Some(Image { digest: record.digest, rootfs: dir.join(ROOTFS_DIR), config: record.config }))
    }
}

/// A directory under `<cache>/tmp`, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    kept: bool,
}

impl TempDir {
    fn create(tmp: &Path, hex: &str) -> Result<Self, ImageError> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = tmp.join(format!("{hex}.{}.{seq}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&path).map_err(io_err("creating", &path))?;
        Ok(Self { path, kept: false })
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.kept {
            // Best effort: a leftover is removed by the next `open`.
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "removing a temporary image directory");
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Location {
    Path(PathBuf),
    Name(String),
}

/// Splits a reference into where to look and which manifest to take.
fn parse_reference(reference: &str) -> Result<(Location, Selector), ImageError> {
    let bad = |reason| ImageError::BadReference { reference: reference.to_owned(), reason };
    let (head, digest) = match reference.split_once('@') {
        Some((head, digest)) => {
            if digest_hex(digest).is_none() {
                return Err(bad("the digest after `@` must be sha256:<64 lowercase hex>"));
            }
            (head, Some(digest))
        }
        None => (reference, None),
    };
    // A tag is what follows the last `:` after the last `/` (a registry
    // host may carry a port: `host:5000/name:tag`).
    let last_slash = head.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match head[last_slash..].rfind(':') {
        Some(i) => (&head[..last_slash + i], Some(&head[last_slash + i + 1..])),
        None => (head, None),
    };
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(bad("a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`"));
    }
    let selector = match digest {
        // Like Kubernetes: with both, the digest decides.
        Some(d) => Selector::Digest(d.to_owned()),
        None => Selector::Tag(tag.unwrap_or(DEFAULT_TAG).to_owned()),
    };
    if name.starts_with('/') {
        let path = PathBuf::from(name);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(bad("an image path must not contain `..`"));
        }
        return Ok((Location::Path(path), selector));
    }
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    let components: Vec<&str> = name.split('/').collect();
    for (i, c) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let ok_char = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-') || (!last && ch == ':');
        if c.is_empty() || c.starts_with('.') || !c.chars().all(ok_char) {
            return Err(bad("a name is `/`-separated components of [A-Za-z0-9._-], none empty or starting with `.`"));
        }
    }
    Ok((Location::Name(name.to_owned()), selector))
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The first `<dir>/<name>/` (with an `index.json`) or `<dir>/<name>.tar`.
fn find(reference: &str, name: &str, image_dirs: &[PathBuf]) -> Result<PathBuf, ImageError> {
    let mut searched = Vec::new();
    for dir in image_dirs {
        let layout = dir.join(name);
        if layout.join("index.json").is_file() {
            return Ok(layout);
        }
        let mut tar_name = OsStr::new(name).to_owned();
        tar_name.push(".tar");
        let tarball = dir.join(tar_name);
        if tarball.is_file() {
            return Ok(tarball);
        }
        searched.extend([layout, tarball]);
    }
    Err(ImageError::NotFound { reference: reference.to_owned(), searched })
}
