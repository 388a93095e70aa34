//! Reading an OCI image layout (a directory or an uncompressed tarball of
//! one): index → manifest → config, every blob verified against its
//! descriptor.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{ImageConfig, ImageError};

/// The annotation that names a manifest's tag in `index.json`.
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Upper bound on `index.json`, a manifest, an index or a config: the
/// distribution spec caps manifests at 4 MiB; configs with long histories
/// are bigger, but not this big. Guards memory against a hostile layout.
const MAX_JSON: u64 = 16 * 1024 * 1024;
/// Upper bound on members of a layout tarball (the index of members is kept
/// in memory).
const MAX_TAR_MEMBERS: usize = 1 << 20;
/// Nested indexes followed before giving up (a loop of indexes would
/// otherwise never end).
const MAX_INDEX_DEPTH: usize = 4;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// `None` for a media type that is not a layer we can apply (zstd,
    /// foreign formats, artifacts).
    fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            // containerd's name for an uncompressed Docker layer.
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            _ => None,
        }
    }
}

/// An OCI content descriptor (the fields berth reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    fn ref_name(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The parts of an image config berth uses. Docker writes `null` for empty
/// lists, hence the `Option`s.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ContainerConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One layer to apply: its descriptor, compression and (when the config
/// lists it) the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub descriptor: Descriptor,
    pub compression: Compression,
    pub diff_id: Option<String>,
}

/// A verified manifest with its config.
#[derive(Debug)]
pub(super) struct Resolved {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
}

/// Which manifest of an index to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Selector {
    /// By the `org.opencontainers.image.ref.name` annotation.
    Tag(String),
    /// By manifest digest (`sha256:…`).
    Digest(String),
}

#[derive(Debug)]
enum Source {
    Dir,
    /// Member name (without `./`) → (offset of its data, length).
    Tar(HashMap<String, (u64, u64)>),
}

/// An opened member of a layout and its length.
type Member = (Box<dyn Read>, u64);

/// An opened layout: a directory, or a tarball whose members were indexed.
#[derive(Debug)]
pub(super) struct Layout {
    pub path: PathBuf,
    source: Source,
}

impl Layout {
    /// Opens a layout directory or indexes a layout tarball (one pass over
    /// its headers, seeking past the data).
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound {
                    reference: path.display().to_string(),
                    searched: vec![path.to_owned()],
                });
            }
            Err(e) => return Err(super::io_err("reading", path)(e)),
        };
        let source = if meta.is_dir() {
            Source::Dir
        } else if meta.is_file() {
            Source::Tar(index_tar(path)?)
        } else {
            return Err(ImageError::BadLayout {
                layout: path.to_owned(),
                what: "layout".into(),
                reason: "neither a directory nor a tarball".into(),
            });
        };
        let layout = Self { path: path.to_owned(), source };
        layout.check_version()?;
        Ok(layout)
    }

    fn bad(&self, what: impl Into<String>, reason: impl Into<String>) -> ImageError {
        ImageError::BadLayout { layout: self.path.clone(), what: what.into(), reason: reason.into() }
    }

    /// `oci-layout`, when present, must say version 1.0.0.
    fn check_version(&self) -> Result<(), ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct OciLayout {
            image_layout_version: String,
        }
        let Some((reader, len)) = self.open_member("oci-layout")? else { return Ok(()) };
        let bytes = self.read_capped("oci-layout", reader, len)?;
        let parsed: OciLayout = serde_json::from_slice(&bytes).map_err(|cause| ImageError::BadJson {
            layout: self.path.clone(),
            what: "oci-layout".into(),
            cause,
        })?;
        if parsed.image_layout_version != "1.0.0" {
            return Err(
                self.bad("oci-layout", format!("unsupported imageLayoutVersion {:?}", parsed.image_layout_version))
            );
        }
        Ok(())
    }

    /// A member of the layout: `(reader, length)`, `None` if absent.
    fn open_member(&self, name: &str) -> Result<Option<Member>, ImageError> {
        match &self.source {
            Source::Dir => {
                let path = self.path.join(name);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(super::io_err("opening", &path)(e)),
                };
                let len = file.metadata().map_err(super::io_err("reading", &path))?.len();
                Ok(Some((Box::new(file), len)))
            }
            Source::Tar(members) => {
                let Some(&(offset, len)) = members.get(name) else { return Ok(None) };
                let mut file = File::open(&self.path).map_err(super::io_err("opening", &self.path))?;
                file.seek(SeekFrom::Start(offset)).map_err(super::io_err("seeking in", &self.path))?;
                Ok(Some((Box::new(file.take(len)), len)))
            }
        }
    }

    fn read_capped(&self, what: &str, reader: Box<dyn Read>, len: u64) -> Result<Vec<u8>, ImageError> {
        if len > MAX_JSON {
            return Err(self.bad(what, format!("{len} bytes is more than the {MAX_JSON} a JSON document may have")));
        }
        let mut bytes = Vec::new();
        reader.take(MAX_JSON).read_to_end(&mut bytes).map_err(super::io_err("reading", &self.path))?;
        Ok(bytes)
    }

    /// Opens a blob for streaming; [`BlobReader::finish`] verifies it.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, ImageError> {
        let hex = digest_hex(&desc.digest)
            .ok_or_else(|| ImageError::UnsupportedDigest { layout: self.path.clone(), digest: desc.digest.clone() })?;
        let (reader, _) = self
            .open_member(&format!("blobs/sha256/{hex}"))?
            .ok_or_else(|| ImageError::MissingBlob { layout: self.path.clone(), digest: desc.digest.clone() })?;
        // One byte more than the descriptor allows, so an oversized blob is
        // noticed without reading all of it.
        Ok(BlobReader {
            inner: reader.take(desc.size.saturating_add(1)),
            hasher: Sha256::new(),
            count: 0,
            layout: self.path.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
        })
    }

    /// Reads a whole small blob and verifies it before returning it.
    fn read_json_blob(&self, what: &str, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_JSON {
            return Err(
                self.bad(what, format!("{} bytes is more than the {MAX_JSON} a JSON document may have", desc.size))
            );
        }
        let mut blob = self.open_blob(desc)?;
        let mut bytes = Vec::new();
        let read = blob.read_to_end(&mut bytes);
        // A size or digest mismatch explains a read error better than the
        // read error itself.
        blob.finish()?;
        read.map_err(super::io_err("reading", &self.path))?;
        Ok(bytes)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|cause| ImageError::BadJson {
            layout: self.path.clone(),
            what: what.into(),
            cause,
        })
    }

    /// The manifest `selector` picks, following nested indexes to this
    /// host's platform. Reads only `index.json` and indexes, so a cache
    /// lookup is cheap.
    pub fn resolve(&self, selector: &Selector) -> Result<Descriptor, ImageError> {
        let (reader, len) = self.open_member("index.json")?.ok_or_else(|| self.bad("index.json", "missing"))?;
        let bytes = self.read_capped("index.json", reader, len)?;
        let index: Index = self.parse("index.json", &bytes)?;
        self.check_index("index.json", &index)?;
        let mut desc = self.select(&index, selector)?;
        for _ in 0..MAX_INDEX_DEPTH {
            match desc.media_type.as_str() {
                OCI_MANIFEST | DOCKER_MANIFEST => return Ok(desc),
                OCI_INDEX | DOCKER_LIST => {
                    let what = format!("index {}", desc.digest);
                    let bytes = self.read_json_blob(&what, &desc)?;
                    let nested: Index = self.parse(&what, &bytes)?;
                    self.check_index(&what, &nested)?;
                    check_embedded_media_type(self, &what, &desc, nested.media_type.as_deref())?;
                    desc = self.select_platform(&what, &nested)?;
                }
                other => return Err(self.unsupported(format!("manifest {}", desc.digest), other)),
            }
        }
        Err(self.bad("index.json", format!("indexes nested deeper than {MAX_INDEX_DEPTH}")))
    }

    fn unsupported(&self, what: String, media_type: &str) -> ImageError {
        ImageError::UnsupportedMediaType { layout: self.path.clone(), what, media_type: media_type.to_owned() }
    }

    fn check_index(&self, what: &str, index: &Index) -> Result<(), ImageError> {
        if index.schema_version != 2 {
            return Err(self.bad(what, format!("schemaVersion {} (only 2 is supported)", index.schema_version)));
        }
        if let Some(mt) = index.media_type.as_deref()
            && mt != OCI_INDEX
            && mt != DOCKER_LIST
        {
            return Err(self.unsupported(what.to_owned(), mt));
        }
        if index.manifests.is_empty() {
            return Err(self.bad(what, "lists no manifests"));
        }
        Ok(())
    }

    fn select(&self, index: &Index, selector: &Selector) -> Result<Descriptor, ImageError> {
        let found: Vec<&Descriptor> = match selector {
            Selector::Digest(d) => index.manifests.iter().filter(|m| &m.digest == d).collect(),
            Selector::Tag(t) => {
                let tagged: Vec<&Descriptor> =
                    index.manifests.iter().filter(|m| m.ref_name() == Some(t.as_str())).collect();
                // An index with one untagged manifest is what most tools
                // write for a single image; it answers to the default tag.
                if tagged.is_empty()
                    && t == super::DEFAULT_TAG
                    && index.manifests.len() == 1
                    && index.manifests[0].ref_name().is_none()
                {
                    index.manifests.iter().collect()
                } else {
                    tagged
                }
            }
        };
        match found.as_slice() {
            [] => Err(ImageError::TagNotFound {
                layout: self.path.clone(),
                wanted: match selector {
                    Selector::Tag(t) => t.clone(),
                    Selector::Digest(d) => d.clone(),
                },
                available: index.manifests.iter().filter_map(|m| m.ref_name().map(str::to_owned)).collect(),
            }),
            [first, rest @ ..] => {
                if rest.iter().any(|d| d.digest != first.digest) {
                    return Err(self.bad("index.json", format!("{selector:?} names more than one manifest")));
                }
                Ok((*first).clone())
            }
        }
    }

    /// The manifest for this host in a multi-platform index.
    fn select_platform(&self, what: &str, index: &Index) -> Result<Descriptor, ImageError> {
        let arch = host_arch();
        let matches: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
            .collect();
        match matches.first() {
            Some(d) => Ok((*d).clone()),
            None if index.manifests.len() == 1 && index.manifests[0].platform.is_none() => {
                Ok(index.manifests[0].clone())
            }
            None => Err(self.bad(what, format!("no manifest for linux/{arch}"))),
        }
    }

    /// Reads and verifies the manifest and config `manifest` points to.
    pub fn load(&self, manifest: &Descriptor) -> Result<Resolved, ImageError> {
        let what = format!("manifest {}", manifest.digest);
        let bytes = self.read_json_blob(&what, manifest)?;
        let parsed: Manifest = self.parse(&what, &bytes)?;
        if parsed.schema_version != 2 {
            return Err(self.bad(what, format!("schemaVersion {} (only 2 is supported)", parsed.schema_version)));
        }
        check_embedded_media_type(self, &what, manifest, parsed.media_type.as_deref())?;
        let config_what = format!("config {}", parsed.config.digest);
        if parsed.config.media_type != OCI_CONFIG && parsed.config.media_type != DOCKER_CONFIG {
            return Err(self.unsupported(config_what, &parsed.config.media_type));
        }
        let bytes = self.read_json_blob(&config_what, &parsed.config)?;
        let config: ConfigFile = self.parse(&config_what, &bytes)?;
        if !config.os.is_empty() && config.os != "linux" {
            return Err(self.bad(config_what, format!("os {:?}, not linux", config.os)));
        }
        if !config.architecture.is_empty() && config.architecture != host_arch() {
            return Err(self
                .bad(config_what, format!("architecture {:?}, this host is {:?}", config.architecture, host_arch())));
        }
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        // diff_ids are checked only when they line up with the layers; a
        // config that lists another number is wrong, and says so.
        if !diff_ids.is_empty() && diff_ids.len() != parsed.layers.len() {
            return Err(
                self.bad(config_what, format!("{} diff_ids for {} layers", diff_ids.len(), parsed.layers.len()))
            );
        }
        let mut layers = Vec::with_capacity(parsed.layers.len());
        for (i, descriptor) in parsed.layers.into_iter().enumerate() {
            let compression = Compression::from_media_type(&descriptor.media_type)
                .ok_or_else(|| self.unsupported(format!("layer {}", descriptor.digest), &descriptor.media_type))?;
            layers.push(Layer { descriptor, compression, diff_id: diff_ids.get(i).cloned() });
        }
        let c = config.config.unwrap_or_default();
        Ok(Resolved {
            config: ImageConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
                stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            },
            layers,
        })
    }
}

/// A document's own `mediaType`, when it has one, must match the
/// descriptor that led to it (a manifest passed off as a config or index is
/// an attack on the reader, not a typo).
fn check_embedded_media_type(
    layout: &Layout,
    what: &str,
    desc: &Descriptor,
    embedded: Option<&str>,
) -> Result<(), ImageError> {
    match embedded {
        Some(mt) if mt != desc.media_type => {
            Err(layout.bad(what, format!("says mediaType {mt:?}, its descriptor {:?}", desc.media_type)))
        }
        _ => Ok(()),
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest, `None` for any
/// other algorithm or a malformed digest (which must never become a path).
pub(super) fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// GOARCH spelling of this host's architecture, as image configs use.
pub(super) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Members of a layout tarball: regular files by normalised name.
fn index_tar(path: &Path) -> Result<HashMap<String, (u64, u64)>, ImageError> {
    let bad = |reason: String| ImageError::BadLayout { layout: path.to_owned(), what: "tarball".into(), reason };
    let file = File::open(path).map_err(super::io_err("opening", path))?;
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    let entries = archive.entries_with_seek().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        if !matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").trim_start_matches('/').to_owned();
        if members.len() >= MAX_TAR_MEMBERS {
            return Err(bad(format!("more than {MAX_TAR_MEMBERS} members")));
        }
        members.insert(name, (entry.raw_file_position(), entry.size()));
    }
    Ok(members)
}

/// Streams a blob while hashing and counting it.
pub(super) struct BlobReader {
    inner: io::Take<Box<dyn Read>>,
    hasher: Sha256,
    count: u64,
    layout: PathBuf,
    digest: String,
    size: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl BlobReader {
    /// Reads what the consumer left and checks size, then digest.
    pub fn finish(mut self) -> Result<(), ImageError> {
        io::copy(&mut self, &mut io::sink()).map_err(super::io_err("reading", &self.layout))?;
        if self.count != self.size {
            return Err(ImageError::SizeMismatch {
                layout: self.layout,
                digest: self.digest,
                expected: self.size,
                // The reader stops one byte past the descriptor's size.
                actual: if self.count > self.size { None } else { Some(self.count) },
            });
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.digest {
            return Err(ImageError::DigestMismatch { layout: self.layout, digest: self.digest, actual });
        }
        Ok(())
    }
}

/// Hashes what passes through (a layer's uncompressed tar, for its
/// diff_id).
pub(super) struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
