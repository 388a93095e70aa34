//! Applying layers to a rootfs: entry checks and whiteouts in a first pass,
//! extraction that never follows a symlink in a second (see the module doc
//! of [`super`]).

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs::{self, File, FileTimes, Permissions},
    io::{self, Read},
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use super::{
    ImageError, io_err,
    layout::{Compression, HashingReader, Layer, Layout},
};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Why a layer entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the path has a `..` component")]
    ParentComponent,
    #[error("its parent {} is a symlink (extraction never follows symlinks)", .0.display())]
    ThroughSymlink(PathBuf),
    #[error("its parent {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("device nodes are not allowed in images")]
    Device,
    #[error("FIFOs are not allowed in images")]
    Fifo,
    #[error("unsupported tar entry type {0:?}")]
    UnsupportedType(char),
    #[error("the root directory can only be a directory")]
    RootNotDirectory,
    #[error("hard link to {}: {reason}", .target.display())]
    HardLink { target: PathBuf, reason: &'static str },
    #[error("whiteout for `.` or `..`")]
    BadWhiteout,
    #[error("uid or gid {0} does not fit in 32 bits")]
    BadOwner(u64),
}

/// Whether to give files the owners the layer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ownership {
    /// As root: `chown` to the layer's uid/gid.
    Preserve,
    /// Unprivileged (tests): files belong to the caller.
    Caller,
}

/// Metadata applied to a directory once every layer is in.
#[derive(Debug, Clone, Copy)]
struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

#[derive(Debug)]
enum Whiteout {
    /// Remove this path from the layers below.
    Remove(PathBuf),
    /// Remove every child of this directory from the layers below.
    Opaque(PathBuf),
}

/// What walking a path inside the rootfs (without following symlinks)
/// found.
enum Walk {
    Found(fs::Metadata),
    Missing,
    /// A parent is a symlink, or not a directory.
    Blocked {
        symlink: bool,
    },
}

/// Applies layers, in order, to one rootfs.
pub(super) struct Unpacker<'a> {
    layout: &'a Layout,
    rootfs: &'a Path,
    ownership: Ownership,
    /// Relative path → metadata, applied by [`Unpacker::finish`].
    dirs: BTreeMap<PathBuf, DirMeta>,
}

/// The layer and entry an error is about.
struct Ctx<'a> {
    layout: &'a Path,
    layer: &'a str,
    entry: String,
}

impl Ctx<'_> {
    fn reject(&self, reason: Rejection) -> ImageError {
        ImageError::UnsafeEntry {
            layout: self.layout.to_owned(),
            layer: self.layer.to_owned(),
            entry: self.entry.clone(),
            reason,
        }
    }
}

impl<'a> Unpacker<'a> {
    pub fn new(layout: &'a Layout, rootfs: &'a Path, ownership: Ownership) -> Self {
        Self { layout, rootfs, ownership, dirs: BTreeMap::new() }
    }

    /// Verifies and checks `layer`, applies its whiteouts, extracts it.
    pub fn apply(&mut self, layer: &Layer) -> Result<(), ImageError> {
        let layout = self.layout;
        let mut whiteouts = Vec::new();
        for_each_entry(layout, layer, |ctx, entry| {
            if let Some(w) = check(ctx, entry)? {
                whiteouts.push(w);
            }
            Ok(())
        })?;
        for w in &whiteouts {
            self.apply_whiteout(w)?;
        }
        for_each_entry(layout, layer, |ctx, entry| self.extract(ctx, entry))
    }

    fn apply_whiteout(&mut self, whiteout: &Whiteout) -> Result<(), ImageError> {
        match whiteout {
            Whiteout::Remove(rel) => {
                // A target below a symlink or a file does not exist in the
                // layers below as a path of real directories: nothing to do.
                if let Walk::Found(meta) = self.walk(rel)? {
                    let full = self.rootfs.join(rel);
                    remove(&full, &meta).map_err(io_err("removing", &full))?;
                    self.forget_dirs(rel, true);
                }
            }
            Whiteout::Opaque(rel) => {
                if let Walk::Found(meta) = self.walk(rel)?
                    && meta.is_dir()
                {
                    let full = self.rootfs.join(rel);
                    for child in fs::read_dir(&full).map_err(io_err("listing", &full))? {
                        let child = child.map_err(io_err("listing", &full))?;
                        let path = child.path();
                        let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
                        remove(&path, &meta).map_err(io_err("removing", &path))?;
                    }
                    self.forget_dirs(rel, false);
                }
            }
        }
        Ok(())
    }

    /// Drops recorded directory metadata below `rel` (and `rel` itself if
    /// `inclusive`): those directories are gone.
    fn forget_dirs(&mut self, rel: &Path, inclusive: bool) {
        // Path order is by component, so a directory's descendants follow it
        // contiguously.
        let gone: Vec<PathBuf> = self
            .dirs
            .range(rel.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(rel))
            .filter(|p| inclusive || p.as_path() != rel)
            .cloned()
            .collect();
        for p in gone {
            self.dirs.remove(&p);
        }
    }

    /// Looks `rel` up without following any symlink.
    fn walk(&self, rel: &Path) -> Result<Walk, ImageError> {
        let mut full = self.rootfs.to_path_buf();
        let mut components = rel.components().peekable();
        while let Some(c) = components.next() {
            full.push(c);
            let meta = match fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Walk::Missing),
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Walk::Missing),
                Err(e) => return Err(io_err("inspecting", &full)(e)),
            };
            if components.peek().is_none() {
                return Ok(Walk::Found(meta));
            }
            if meta.file_type().is_symlink() {
                return Ok(Walk::Blocked { symlink: true });
            }
            if !meta.is_dir() {
                return Ok(Walk::Blocked { symlink: false });
            }
        }
        let meta = fs::symlink_metadata(&full).map_err(io_err("inspecting", &full))?;
        Ok(Walk::Found(meta))
    }

    /// Makes every parent of `rel` a real directory, creating missing ones;
    /// refuses to go through a symlink or a file.
    fn ensure_parents(&self, ctx: &Ctx<'_>, rel: &Path) -> Result<(), ImageError> {
        let Some(parent) = rel.parent() else { return Ok(()) };
        let mut full = self.rootfs.to_path_buf();
        let mut so_far = PathBuf::new();
        for c in parent.components() {
            full.push(c);
            so_far.push(c);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => return Err(ctx.reject(Rejection::ThroughSymlink(so_far))),
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ctx.reject(Rejection::NotADirectory(so_far))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A parent the layer does not list, as tar itself would.
                    fs::DirBuilder::new().mode(0o755).create(&full).map_err(io_err("creating", &full))?;
                }
                Err(e) => return Err(io_err("inspecting", &full)(e)),
            }
        }
        Ok(())
    }

    /// Second pass: writes one entry.
    fn extract(&mut self, ctx: &Ctx<'_>, entry: &mut tar::Entry<'_, &mut dyn Read>) -> Result<(), ImageError> {
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        // The first pass accepted every entry, so these cannot fail here.
        let rel = normalize(&entry.path_bytes()).map_err(|r| ctx.reject(r))?;
        if rel.as_os_str().is_empty() || is_whiteout(&rel) {
            // The rootfs directory keeps its own 0755; whiteouts were applied.
            return Ok(());
        }
        self.ensure_parents(ctx, &rel)?;
        let full = self.rootfs.join(&rel);
        let existing = match fs::symlink_metadata(&full) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("inspecting", &full)(e)),
        };
        let header = entry.header();
        let mode = header.mode().map_err(|e| ctx_corrupt(ctx, e))? & 0o7777;
        let uid = owner(ctx, header.uid())?;
        let gid = owner(ctx, header.gid())?;
        let mtime = header.mtime().map_err(|e| ctx_corrupt(ctx, e))?;
        if kind == tar::EntryType::Directory {
            match &existing {
                Some(m) if m.is_dir() => {}
                Some(m) => remove(&full, m).map_err(io_err("replacing", &full))?,
                None => {}
            }
            if !existing.as_ref().is_some_and(fs::Metadata::is_dir) {
                fs::DirBuilder::new().mode(0o755).create(&full).map_err(io_err("creating", &full))?;
            }
            self.dirs.insert(rel, DirMeta { mode, uid, gid, mtime });
            return Ok(());
        }
        if kind == tar::EntryType::Link {
            return self.hard_link(ctx, entry, &full, existing.as_ref(), &rel);
        }
        if let Some(m) = &existing {
            remove(&full, m).map_err(io_err("replacing", &full))?;
            if m.is_dir() {
                self.forget_dirs(&rel, true);
            }
        }
        match kind {
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full)
                    .map_err(io_err("creating symlink", &full))?;
                if self.ownership == Ownership::Preserve {
                    std::os::unix::fs::lchown(&full, Some(uid), Some(gid)).map_err(io_err("chown", &full))?;
                }
                let t = nix::sys::time::TimeVal::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
                nix::sys::stat::lutimes(&full, &t, &t).map_err(|e| io_err("setting times of", &full)(e.into()))?;
            }
            _ => {
                // Regular, contiguous or sparse: `check` allowed nothing else.
                // O_EXCL|O_NOFOLLOW: whatever was here was removed; if
                // something appeared since, fail rather than write through it.
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&full)
                    .map_err(io_err("creating", &full))?;
                io::copy(entry, &mut file).map_err(|e| ctx_corrupt(ctx, e))?;
                self.set_metadata(&file, &full, DirMeta { mode, uid, gid, mtime })?;
            }
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        ctx: &Ctx<'_>,
        entry: &tar::Entry<'_, &mut dyn Read>,
        full: &Path,
        existing: Option<&fs::Metadata>,
        rel: &Path,
    ) -> Result<(), ImageError> {
        let raw = entry.link_name_bytes().unwrap_or_default();
        let target = normalize(&raw).map_err(|r| ctx.reject(r))?;
        let refuse = |reason| ctx.reject(Rejection::HardLink { target: target.clone(), reason });
        if target == rel {
            return Err(refuse("it links to itself"));
        }
        match self.walk(&target)? {
            Walk::Found(m) if m.is_dir() => return Err(refuse("the target is a directory")),
            Walk::Found(_) => {}
            Walk::Missing => return Err(refuse("the target does not exist in this or a lower layer")),
            Walk::Blocked { symlink: true } => return Err(refuse("the target's path goes through a symlink")),
            Walk::Blocked { symlink: false } => return Err(refuse("the target's path goes through a file")),
        }
        if let Some(m) = existing {
            remove(full, m).map_err(io_err("replacing", full))?;
            if m.is_dir() {
                self.forget_dirs(rel, true);
            }
        }
        // link(2) does not follow a symlink target: a link to a symlink is a
        // second name for the symlink itself, inside the rootfs.
        let source = self.rootfs.join(&target);
        fs::hard_link(&source, full).map_err(io_err("hard-linking", full))
    }

    /// chown (before chmod: chown clears set-id bits), chmod, times, all
    /// through the open descriptor.
    fn set_metadata(&self, file: &File, path: &Path, meta: DirMeta) -> Result<(), ImageError> {
        if self.ownership == Ownership::Preserve {
            std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid)).map_err(io_err("chown", path))?;
        }
        file.set_permissions(Permissions::from_mode(meta.mode)).map_err(io_err("chmod", path))?;
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime);
        file.set_times(FileTimes::new().set_accessed(t).set_modified(t)).map_err(io_err("setting times of", path))
    }

    /// Applies directory metadata, deepest first, so that setting a
    /// directory's mode or time comes after everything written into it.
    pub fn finish(self) -> Result<(), ImageError> {
        for (rel, meta) in self.dirs.iter().rev() {
            // Still a real directory reached through real directories (a
            // later layer may have replaced it).
            match self.walk(rel)? {
                Walk::Found(m) if m.is_dir() => {}
                _ => continue,
            }
            let full = self.rootfs.join(rel);
            let dir = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&full)
                .map_err(io_err("opening", &full))?;
            self.set_metadata(&dir, &full, *meta)?;
        }
        Ok(())
    }
}

/// Streams the layer's entries to `f`, then verifies the blob (size and
/// digest) and the uncompressed tar (diff_id). A verification failure is
/// reported in preference to whatever `f` or the tar reader said, since
/// it explains them.
fn for_each_entry(
    layout: &Layout,
    layer: &Layer,
    mut f: impl FnMut(&Ctx<'_>, &mut tar::Entry<'_, &mut dyn Read>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let digest = layer.descriptor.digest.as_str();
    let corrupt = |cause: io::Error| ImageError::CorruptLayer {
        layout: layout.path.clone(),
        layer: digest.to_owned(),
        gzip: layer.compression == Compression::Gzip,
        cause,
    };
    let mut blob = layout.open_blob(&layer.descriptor)?;
    let outcome = {
        let decompressed: Box<dyn Read + '_> = match layer.compression {
            Compression::Gzip => Box::new(MultiGzDecoder::new(&mut blob)),
            Compression::None => Box::new(&mut blob),
        };
        let mut tar_stream = HashingReader { inner: decompressed, hasher: Sha256::new() };
        let mut run = || -> Result<(), ImageError> {
            {
                let stream: &mut dyn Read = &mut tar_stream;
                let mut archive = tar::Archive::new(stream);
                for entry in archive.entries().map_err(corrupt)? {
                    let mut entry = entry.map_err(corrupt)?;
                    let ctx = Ctx {
                        layout: &layout.path,
                        layer: digest,
                        entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    };
                    f(&ctx, &mut entry)?;
                }
            }
            // The end-of-archive blocks and any padding count for the
            // diff_id too.
            io::copy(&mut tar_stream, &mut io::sink()).map_err(corrupt)?;
            Ok(())
        };
        let outcome = run();
        let tar_digest = format!("sha256:{}", hex::encode(tar_stream.hasher.finalize()));
        outcome.and_then(|()| match &layer.diff_id {
            Some(expected) if *expected != tar_digest => Err(ImageError::DiffIdMismatch {
                layout: layout.path.clone(),
                layer: digest.to_owned(),
                expected: expected.clone(),
                actual: tar_digest,
            }),
            _ => Ok(()),
        })
    };
    blob.finish()?;
    outcome
}

fn ctx_corrupt(ctx: &Ctx<'_>, cause: io::Error) -> ImageError {
    ImageError::CorruptLayer { layout: ctx.layout.to_owned(), layer: ctx.layer.to_owned(), gzip: false, cause }
}

fn owner(ctx: &Ctx<'_>, id: io::Result<u64>) -> Result<u32, ImageError> {
    let id = id.map_err(|e| ctx_corrupt(ctx, e))?;
    u32::try_from(id).map_err(|_| ctx.reject(Rejection::BadOwner(id)))
}

/// First pass: refuses what may never be extracted and returns the entry's
/// whiteout, if it is one.
fn check(ctx: &Ctx<'_>, entry: &tar::Entry<'_, &mut dyn Read>) -> Result<Option<Whiteout>, ImageError> {
    use tar::EntryType as T;
    let header = entry.header();
    let kind = header.entry_type();
    match kind {
        T::XGlobalHeader => return Ok(None),
        T::Regular | T::Continuous | T::GNUSparse | T::Directory | T::Symlink | T::Link => {}
        T::Char | T::Block => return Err(ctx.reject(Rejection::Device)),
        T::Fifo => return Err(ctx.reject(Rejection::Fifo)),
        other => return Err(ctx.reject(Rejection::UnsupportedType(char::from(other.as_byte())))),
    }
    let rel = normalize(&entry.path_bytes()).map_err(|r| ctx.reject(r))?;
    if rel.as_os_str().is_empty() && kind != T::Directory {
        return Err(ctx.reject(Rejection::RootNotDirectory));
    }
    owner(ctx, header.uid())?;
    owner(ctx, header.gid())?;
    if kind == T::Link {
        let target = normalize(&entry.link_name_bytes().unwrap_or_default()).map_err(|r| ctx.reject(r))?;
        if target.as_os_str().is_empty() {
            return Err(ctx.reject(Rejection::HardLink { target, reason: "the target is the root" }));
        }
    }
    let Some(name) = rel.file_name().and_then(OsStr::to_str) else { return Ok(None) };
    let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE {
        return Ok(Some(Whiteout::Opaque(parent)));
    }
    if name.starts_with(".wh..wh.") {
        // AUFS bookkeeping (`.wh..wh.plnk`, ...): no meaning here.
        return Ok(None);
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty() || target == "." || target == ".." {
            return Err(ctx.reject(Rejection::BadWhiteout));
        }
        return Ok(Some(Whiteout::Remove(parent.join(target))));
    }
    Ok(None)
}

fn is_whiteout(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
}

/// An archive path as a path relative to the rootfs: `.` and empty
/// components dropped, a leading `/` meaning the rootfs, `..` refused.
fn normalize(raw: &[u8]) -> Result<PathBuf, Rejection> {
    let mut out = PathBuf::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Rejection::ParentComponent),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Removes a file, symlink or whole tree, never following a symlink.
fn remove(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_dir() { remove_tree(path) } else { fs::remove_file(path) }
}

/// `remove_dir_all` (which does not follow symlinks), retried after
/// making directories writable: unprivileged, a 0555 directory cannot be
/// emptied.
pub(super) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mut stack = vec![path.to_path_buf()];
            while let Some(dir) = stack.pop() {
                let meta = fs::symlink_metadata(&dir)?;
                if !meta.is_dir() {
                    continue;
                }
                fs::set_permissions(&dir, Permissions::from_mode(meta.permissions().mode() | 0o700))?;
                for child in fs::read_dir(&dir)? {
                    stack.push(child?.path());
                }
            }
            fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}
