//! Image store tests against layouts built in memory.
//!
//! [`LayerTar`] writes tar entries with raw names (so `..` and absolute
//! names can be tested; `tar::Builder`'s own path checks would refuse
//! them), [`LayoutBuilder`] adds blobs with their sha256 and writes an OCI
//! layout as a directory or a tarball. Tests tamper with `blobs` to get
//! bad digests, sizes and missing blobs.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use flate2::{Compression as Level, write::GzEncoder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::{
    DEFAULT_TAG, ImageConfig, ImageError, ImageStore, Location, Rejection, Selector, layout::host_arch, parse_reference,
};

const MTIME: u64 = 1_000_000;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A layer tar with raw entry names.
struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerTar {
    fn new() -> Self {
        Self { builder: tar::Builder::new(Vec::new()) }
    }

    fn entry(mut self, path: &str, kind: EntryType, mode: u32, link: Option<&str>, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            assert!(path.len() < old.name.len() && link.is_none_or(|l| l.len() < old.linkname.len()));
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    fn file(self, path: &str, mode: u32, data: &str) -> Self {
        self.entry(path, EntryType::Regular, mode, None, data.as_bytes())
    }

    fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(path, EntryType::Directory, mode, None, b"")
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Symlink, 0o777, Some(target), b"")
    }

    fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Link, 0o644, Some(target), b"")
    }

    fn owned_file(mut self, path: &str, uid: u64, gid: u64) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o640);
        h.set_size(0);
        h.set_mtime(MTIME);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.builder.append(&h, &b""[..]).unwrap();
        self
    }

    fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Level::new(6));
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A layer as stored: its blob, media type, and uncompressed digest.
struct Layer {
    blob: Vec<u8>,
    media_type: &'static str,
    diff_id: String,
}

fn gz_layer(tar: LayerTar) -> Layer {
    let tar = tar.tar();
    Layer { diff_id: sha256(&tar), blob: gzip(&tar), media_type: LAYER_GZIP }
}

fn plain_layer(tar: LayerTar) -> Layer {
    let tar = tar.tar();
    Layer { diff_id: sha256(&tar), blob: tar, media_type: LAYER_TAR }
}

/// Digests of one image in a [`LayoutBuilder`].
#[derive(Debug, Clone)]
struct Built {
    manifest: String,
    layers: Vec<String>,
}

#[derive(Default)]
struct LayoutBuilder {
    /// hex → bytes.
    blobs: BTreeMap<String, Vec<u8>>,
    /// index.json's `manifests`.
    manifests: Vec<Value>,
}

impl LayoutBuilder {
    fn blob(&mut self, media_type: &str, bytes: Vec<u8>) -> Value {
        let digest = sha256(&bytes);
        let desc = json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() });
        self.blobs.insert(digest["sha256:".len()..].to_owned(), bytes);
        desc
    }

    fn hex_of(digest: &str) -> &str {
        &digest["sha256:".len()..]
    }

    fn image(&mut self, layers: Vec<Layer>, config: Value, tag: Option<&str>) -> Built {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        self.image_with_config(layers, config, tag)
    }

    fn image_with_config(&mut self, layers: Vec<Layer>, config: Value, tag: Option<&str>) -> Built {
        let config_desc = self.blob(OCI_CONFIG, serde_json::to_vec(&config).unwrap());
        let layer_descs: Vec<Value> = layers.into_iter().map(|l| self.blob(l.media_type, l.blob)).collect();
        let layer_digests = layer_descs.iter().map(|d| d["digest"].as_str().unwrap().to_owned()).collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": layer_descs,
        });
        let mut desc = self.blob(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap());
        if let Some(tag) = tag {
            desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        }
        let digest = desc["digest"].as_str().unwrap().to_owned();
        self.manifests.push(desc);
        Built { manifest: digest, layers: layer_digests }
    }

    fn index(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.manifests })).unwrap()
    }

    fn write_dir(&self, dir: &Path) -> PathBuf {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(dir.join("index.json"), self.index()).unwrap();
        for (hex, bytes) in &self.blobs {
            fs::write(dir.join("blobs/sha256").join(hex), bytes).unwrap();
        }
        dir.to_owned()
    }

    fn write_tar(&self, path: &Path) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, bytes).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("./index.json", &self.index());
        for (hex, bytes) in &self.blobs {
            add(&format!("blobs/sha256/{hex}"), bytes);
        }
        fs::write(path, b.into_inner().unwrap()).unwrap();
        path.to_owned()
    }
}

fn default_config() -> Value {
    json!({
        "Entrypoint": ["/bin/server"],
        "Cmd": ["serve", "--port", "80"],
        "Env": ["PATH=/bin", "A=b"],
        "WorkingDir": "/srv",
        "User": "65534:65534",
        "StopSignal": "SIGQUIT",
    })
}

/// A temp dir with `cache/`, `images/` and `outside/` (the place escapes
/// would write to).
struct Env {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("images")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        let store = ImageStore::open(&dir.path().join("cache")).unwrap();
        Self { dir, store }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Asserts the cache holds no image and no temporary directory, and
    /// nothing was written outside.
    fn assert_clean(&self) {
        for sub in ["cache/images", "cache/tmp", "outside"] {
            let left: Vec<_> = fs::read_dir(self.path(sub)).unwrap().map(|e| e.unwrap().path()).collect();
            assert!(left.is_empty(), "{sub} should be empty: {left:?}");
        }
    }

    /// Writes a one-image layout from `layers` and imports it.
    fn import_layers(&self, layers: Vec<Layer>) -> (Built, Result<super::Image, ImageError>) {
        let mut b = LayoutBuilder::default();
        let built = b.image(layers, default_config(), Some("latest"));
        let layout = b.write_dir(&self.path("images/test"));
        let result = self.store.import(&layout, None);
        (built, result)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Unprivileged, tempfile cannot remove the images' read-only
        // directories.
        let _ = super::unpack::remove_tree(self.dir.path());
    }
}

fn rejection(result: Result<super::Image, ImageError>) -> (Rejection, String, String) {
    match result {
        Err(ImageError::UnsafeEntry { layer, entry, reason, .. }) => (reason, layer, entry),
        other => panic!("expected an unsafe-entry rejection, got {other:?}"),
    }
}

fn two_layers() -> Vec<Layer> {
    let lower = LayerTar::new()
        .dir("bin/", 0o755)
        .file("bin/busybox", 0o755, "#!busybox")
        .symlink("bin/sh", "busybox")
        .symlink("bin/abs", "/bin/busybox")
        .hardlink("bin/hl", "bin/busybox")
        .dir("etc/", 0o755)
        .file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n")
        .file("etc/suid", 0o4755, "s")
        .dir("data/", 0o750)
        .file("data/a", 0o600, "a")
        .file("data/b", 0o600, "b")
        .dir("opq/", 0o755)
        .file("opq/old1", 0o644, "1")
        .dir("opq/sub/", 0o755)
        .file("opq/sub/old2", 0o644, "2")
        .file("gone", 0o644, "gone")
        .dir("gonedir/", 0o755)
        .file("gonedir/f", 0o644, "f")
        .dir("ro/", 0o555)
        .file("ro/inside", 0o444, "ro")
        .file("/abs/file", 0o644, "rooted")
        .dir("tmp/", 0o1777)
        .file("replaced", 0o644, "was a file");
    let upper = LayerTar::new()
        .file(".wh.gone", 0o644, "")
        .file(".wh.gonedir", 0o644, "")
        .dir("opq/", 0o700)
        .file("opq/.wh..wh..opq", 0o644, "")
        .file("opq/new", 0o644, "new")
        .file("data/.wh.a", 0o644, "")
        .file("data/c", 0o644, "c")
        .file(".wh..wh.plnk", 0o644, "")
        .file("etc/passwd", 0o600, "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        .file("ro/added", 0o444, "added later")
        .dir("replaced/", 0o755)
        .file("replaced/now", 0o644, "a dir now");
    vec![gz_layer(lower), plain_layer(upper)]
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap()
}

fn exists(root: &Path, rel: &str) -> bool {
    fs::symlink_metadata(root.join(rel)).is_ok()
}

fn mode(root: &Path, rel: &str) -> u32 {
    fs::symlink_metadata(root.join(rel)).unwrap().permissions().mode() & 0o7777
}

#[test]
fn two_layers_with_whiteouts_and_opaque_dir() {
    let env = Env::new();
    let (built, result) = env.import_layers(two_layers());
    let image = result.unwrap();
    assert_eq!(image.digest, built.manifest);
    assert!(image.rootfs.starts_with(env.path("cache/images")));
    assert_eq!(
        image.config,
        ImageConfig {
            entrypoint: vec!["/bin/server".into()],
            cmd: vec!["serve".into(), "--port".into(), "80".into()],
            env: vec!["PATH=/bin".into(), "A=b".into()],
            working_dir: "/srv".into(),
            user: "65534:65534".into(),
            stop_signal: Some("SIGQUIT".into()),
        }
    );
    let root = image.rootfs.as_path();
    // Layer 1, untouched by layer 2.
    assert_eq!(read(root, "bin/busybox"), "#!busybox");
    assert_eq!(mode(root, "bin/busybox"), 0o755);
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(fs::read_link(root.join("bin/abs")).unwrap(), Path::new("/bin/busybox"));
    let (a, b) = (fs::metadata(root.join("bin/busybox")).unwrap(), fs::metadata(root.join("bin/hl")).unwrap());
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "bin/hl is a hard link to bin/busybox");
    assert_eq!(mode(root, "etc/suid"), 0o4755);
    assert_eq!(read(root, "abs/file"), "rooted");
    assert_eq!(mode(root, "tmp"), 0o1777);
    // Layer 2 replaced, removed, emptied.
    assert_eq!(read(root, "etc/passwd").lines().count(), 2);
    assert_eq!(mode(root, "etc/passwd"), 0o600);
    assert!(!exists(root, "gone") && !exists(root, "gonedir"));
    assert!(!exists(root, "data/a"));
    assert_eq!(read(root, "data/b"), "b");
    assert_eq!(read(root, "data/c"), "c");
    assert_eq!(mode(root, "data"), 0o750);
    let mut opq: Vec<_> = fs::read_dir(root.join("opq")).unwrap().map(|e| e.unwrap().file_name()).collect();
    opq.sort();
    assert_eq!(opq, ["new"], "the opaque directory keeps only layer 2's entries");
    assert_eq!(mode(root, "opq"), 0o700);
    assert_eq!(read(root, "replaced/now"), "a dir now");
    // The read-only directory got files from both layers, then its mode.
    assert_eq!(read(root, "ro/added"), "added later");
    assert_eq!(mode(root, "ro"), 0o555);
    // No whiteout file is ever extracted.
    assert!(!exists(root, ".wh.gone") && !exists(root, "opq/.wh..wh..opq") && !exists(root, ".wh..wh.plnk"));
    // Times: files, symlinks and directories alike.
    for rel in ["bin/busybox", "bin/sh", "etc/passwd", "opq", "ro", "data", "bin"] {
        assert_eq!(fs::symlink_metadata(root.join(rel)).unwrap().mtime(), MTIME as i64, "{rel}");
    }
    assert_eq!(mode(root, ""), 0o755);
    // Nothing in tmp once in place.
    assert_eq!(fs::read_dir(env.path("cache/tmp")).unwrap().count(), 0);
}

#[test]
fn owners_are_preserved_as_root() {
    let env = Env::new();
    let layer = LayerTar::new().owned_file("owned", 1234, 5678);
    let (_, result) = env.import_layers(vec![gz_layer(layer)]);
    let meta = fs::metadata(result.unwrap().rootfs.join("owned")).unwrap();
    // Unprivileged, files belong to the caller by design.
    if nix::unistd::geteuid().is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    } else {
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    }
}

#[test]
fn owner_beyond_32_bits_is_rejected() {
    let env = Env::new();
    let layer = LayerTar::new().owned_file("owned", 1 << 33, 0);
    let (reason, _, entry) = rejection(env.import_layers(vec![plain_layer(layer)]).1);
    assert_eq!((reason, entry.as_str()), (Rejection::BadOwner(1 << 33), "owned"));
    env.assert_clean();
}

#[test]
fn bad_digest_is_rejected_and_leaves_nothing() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let built = b.image(two_layers(), default_config(), None);
    // Same size, one byte different.
    let blob = b.blobs.get_mut(LayoutBuilder::hex_of(&built.layers[1])).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let layout = b.write_dir(&env.path("images/test"));
    match env.store.import(&layout, None) {
        Err(ImageError::DigestMismatch { digest, .. }) => assert_eq!(digest, built.layers[1]),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    env.assert_clean();
}

#[test]
fn bad_size_is_rejected() {
    for extra in [1usize, 0] {
        let env = Env::new();
        let mut b = LayoutBuilder::default();
        let built = b.image(two_layers(), default_config(), None);
        let blob = b.blobs.get_mut(LayoutBuilder::hex_of(&built.layers[0])).unwrap();
        if extra == 1 {
            blob.push(0);
        } else {
            blob.pop();
        }
        let layout = b.write_dir(&env.path("images/test"));
        match env.store.import(&layout, None) {
            Err(e @ ImageError::SizeMismatch { .. }) => {
                let ImageError::SizeMismatch { digest, actual, .. } = &e else { unreachable!() };
                assert_eq!(digest, &built.layers[0]);
                assert_eq!(actual.is_none(), extra == 1, "{e}");
            }
            other => panic!("expected a size mismatch, got {other:?}"),
        }
        env.assert_clean();
    }
}

#[test]
fn corrupt_config_blob_is_caught_before_use() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    b.image(two_layers(), default_config(), None);
    // The config is the first blob added; corrupt every JSON blob but the
    // manifest by swapping a byte that keeps it valid JSON would be
    // fiddly: flip the first byte of every blob that parses as a config.
    let hex = b
        .blobs
        .iter()
        .find(|(_, v)| serde_json::from_slice::<Value>(v).is_ok_and(|j| j.get("rootfs").is_some()))
        .map(|(k, _)| k.clone())
        .unwrap();
    b.blobs.get_mut(&hex).unwrap()[0] = b' ';
    let layout = b.write_dir(&env.path("images/test"));
    assert!(matches!(env.store.import(&layout, None), Err(ImageError::DigestMismatch { .. })));
    env.assert_clean();
}

#[test]
fn missing_blob_is_rejected() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let built = b.image(two_layers(), default_config(), None);
    b.blobs.remove(LayoutBuilder::hex_of(&built.layers[1]));
    let layout = b.write_dir(&env.path("images/test"));
    match env.store.import(&layout, None) {
        Err(e @ ImageError::MissingBlob { .. }) => assert!(e.to_string().contains(&built.layers[1]), "{e}"),
        other => panic!("expected a missing blob, got {other:?}"),
    }
    env.assert_clean();
}

#[test]
fn diff_id_mismatch_is_rejected() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let layer = gz_layer(LayerTar::new().file("f", 0o644, "x"));
    let config = json!({
        "architecture": host_arch(), "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256(b"something else")] },
    });
    b.image_with_config(vec![layer], config, None);
    let layout = b.write_dir(&env.path("images/test"));
    assert!(matches!(env.store.import(&layout, None), Err(ImageError::DiffIdMismatch { .. })));
    env.assert_clean();
}

#[test]
fn dot_dot_is_rejected() {
    for name in ["../evil", "a/../../outside/evil", "./../outside/evil"] {
        let env = Env::new();
        let layer = LayerTar::new().file("ok", 0o644, "fine").file(name, 0o644, "evil");
        let (built, result) = env.import_layers(vec![gz_layer(layer)]);
        let (reason, layer, entry) = rejection(result);
        assert_eq!(reason, Rejection::ParentComponent);
        assert_eq!((layer.as_str(), entry.as_str()), (built.layers[0].as_str(), name));
        env.assert_clean();
    }
}

#[test]
fn writing_through_a_symlink_is_rejected() {
    let env = Env::new();
    let outside = env.path("outside");
    let layer = LayerTar::new().symlink("link", outside.to_str().unwrap()).file("link/evil", 0o644, "evil");
    let (built, result) = env.import_layers(vec![gz_layer(layer)]);
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&built.layers[0]) && message.contains("link/evil"), "{message}");
    assert_eq!(err.rejection(), Some(&Rejection::ThroughSymlink("link".into())));
    env.assert_clean();
}

#[test]
fn writing_through_a_symlink_to_tmp_is_rejected() {
    let env = Env::new();
    let name = format!("berth-image-test-evil-{}", std::process::id());
    let layer = LayerTar::new().symlink("link", "/tmp").file(&format!("link/{name}"), 0o644, "evil");
    let (_, result) = env.import_layers(vec![gz_layer(layer)]);
    assert_eq!(rejection(result).0, Rejection::ThroughSymlink("link".into()));
    assert!(!Path::new("/tmp").join(&name).exists(), "nothing may be written to /tmp");
    env.assert_clean();
}

#[test]
fn writing_through_a_symlink_from_a_lower_layer_is_rejected() {
    let env = Env::new();
    let outside = env.path("outside");
    let lower = LayerTar::new().dir("etc/", 0o755).symlink("etc/conf", outside.to_str().unwrap());
    let upper = LayerTar::new().dir("etc/conf/", 0o755).file("etc/conf/evil", 0o644, "evil");
    // The directory entry for etc/conf replaces the symlink (a directory
    // replaces whatever was there), so that one is fine...
    let (_, result) = env.import_layers(vec![gz_layer(lower), gz_layer(upper)]);
    let image = result.unwrap();
    assert!(image.rootfs.join("etc/conf").is_dir());
    assert_eq!(fs::read_dir(env.path("outside")).unwrap().count(), 0);
    // ...but a file below it with no directory entry is not.
    let env = Env::new();
    let lower = LayerTar::new().symlink("conf", env.path("outside").to_str().unwrap());
    let upper = LayerTar::new().file("conf/evil", 0o644, "evil");
    let (built, result) = env.import_layers(vec![gz_layer(lower), plain_layer(upper)]);
    let (reason, layer, _) = rejection(result);
    assert_eq!((reason, layer), (Rejection::ThroughSymlink("conf".into()), built.layers[1].clone()));
    env.assert_clean();
}

#[test]
fn whiteouts_never_delete_through_a_symlink() {
    let env = Env::new();
    let victim = env.path("outside/victim");
    fs::write(&victim, "keep").unwrap();
    let lower = LayerTar::new().symlink("link", env.path("outside").to_str().unwrap());
    let upper = LayerTar::new().file("link/.wh.victim", 0o644, "").file("link/.wh..wh..opq", 0o644, "");
    let (_, result) = env.import_layers(vec![gz_layer(lower), gz_layer(upper)]);
    result.unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
}

#[test]
fn hard_link_escapes_are_rejected() {
    let env = Env::new();
    let layer = LayerTar::new().hardlink("passwd", "../../../../etc/passwd");
    assert_eq!(rejection(env.import_layers(vec![gz_layer(layer)]).1).0, Rejection::ParentComponent);
    env.assert_clean();

    // Through a symlink to a directory outside.
    let env = Env::new();
    fs::write(env.path("outside/secret"), "secret").unwrap();
    let layer = LayerTar::new().symlink("out", env.path("outside").to_str().unwrap()).hardlink("stolen", "out/secret");
    match rejection(env.import_layers(vec![gz_layer(layer)]).1).0 {
        Rejection::HardLink { target, .. } => assert_eq!(target, Path::new("out/secret")),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::metadata(env.path("outside/secret")).unwrap().nlink(), 1);

    // An absolute target is rooted in the rootfs: /etc/passwd of the host
    // is never reached.
    let env = Env::new();
    let layer = LayerTar::new().hardlink("passwd", "/etc/passwd");
    match rejection(env.import_layers(vec![gz_layer(layer)]).1).0 {
        Rejection::HardLink { reason, .. } => assert!(reason.contains("does not exist"), "{reason}"),
        other => panic!("{other:?}"),
    }
    env.assert_clean();
}

#[test]
fn device_nodes_and_fifos_are_rejected() {
    for (kind, expected) in [
        (EntryType::Char, Rejection::Device),
        (EntryType::Block, Rejection::Device),
        (EntryType::Fifo, Rejection::Fifo),
    ] {
        let env = Env::new();
        let layer = LayerTar::new().file("ok", 0o644, "").entry("dev/node", kind, 0o600, None, b"");
        let (reason, _, entry) = rejection(env.import_layers(vec![gz_layer(layer)]).1);
        assert_eq!((reason, entry.as_str()), (expected, "dev/node"));
        env.assert_clean();
    }
}

#[test]
fn a_file_is_not_a_directory() {
    let env = Env::new();
    let layer = LayerTar::new().file("f", 0o644, "").file("f/g", 0o644, "");
    assert_eq!(rejection(env.import_layers(vec![gz_layer(layer)]).1).0, Rejection::NotADirectory("f".into()));
    env.assert_clean();
}

#[test]
fn unknown_media_types_are_rejected() {
    let env = Env::new();
    let mut zstd = gz_layer(LayerTar::new().file("f", 0o644, ""));
    zstd.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
    let (_, result) = env.import_layers(vec![zstd]);
    match result {
        Err(ImageError::UnsupportedMediaType { media_type, .. }) => assert!(media_type.ends_with("+zstd")),
        other => panic!("{other:?}"),
    }
    env.assert_clean();

    let env = Env::new();
    let mut b = LayoutBuilder::default();
    b.image(vec![], json!({}), None);
    b.manifests[0]["mediaType"] = json!("application/vnd.example.artifact+json");
    let layout = b.write_dir(&env.path("images/test"));
    assert!(matches!(env.store.import(&layout, None), Err(ImageError::UnsupportedMediaType { .. })));
}

#[test]
fn docker_v2_media_types_are_understood() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let tar = LayerTar::new().file("hello", 0o644, "docker").tar();
    let config = json!({ "architecture": host_arch(), "os": "linux", "config": { "Cmd": null, "Env": null },
                         "rootfs": { "type": "layers", "diff_ids": [sha256(&tar)] } });
    let config_desc = b.blob("application/vnd.docker.container.image.v1+json", serde_json::to_vec(&config).unwrap());
    let layer_desc = b.blob("application/vnd.docker.image.rootfs.diff.tar.gzip", gzip(&tar));
    let mt = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest = json!({ "schemaVersion": 2, "mediaType": mt, "config": config_desc, "layers": [layer_desc] });
    let desc = b.blob(mt, serde_json::to_vec(&manifest).unwrap());
    b.manifests.push(desc);
    let image = env.store.import(&b.write_dir(&env.path("images/test")), None).unwrap();
    assert_eq!(read(&image.rootfs, "hello"), "docker");
    assert_eq!(image.config, ImageConfig::default());
}

#[test]
fn nested_index_is_followed_to_this_platform() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let ours = b.image(vec![gz_layer(LayerTar::new().file("arch", 0o644, "ours"))], json!({}), None);
    let other = b.image(vec![gz_layer(LayerTar::new().file("arch", 0o644, "other"))], json!({}), None);
    let mut ours_desc = b.manifests[0].clone();
    ours_desc["platform"] = json!({ "os": "linux", "architecture": host_arch() });
    let mut other_desc = b.manifests[1].clone();
    other_desc["platform"] = json!({ "os": "linux", "architecture": "s390x" });
    let nested = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [other_desc, ours_desc] });
    let mut nested_desc = b.blob(OCI_INDEX, serde_json::to_vec(&nested).unwrap());
    nested_desc["annotations"] = json!({ "org.opencontainers.image.ref.name": "multi" });
    b.manifests = vec![nested_desc];
    let image = env.store.import(&b.write_dir(&env.path("images/test")), Some("multi")).unwrap();
    assert_eq!(image.digest, ours.manifest);
    assert_ne!(image.digest, other.manifest);
    assert_eq!(read(&image.rootfs, "arch"), "ours");
}

#[test]
fn cache_hit_returns_the_same_rootfs_without_unpacking() {
    let env = Env::new();
    let (_, result) = env.import_layers(two_layers());
    let first = result.unwrap();
    fs::write(first.rootfs.join("marker"), "still here").unwrap();
    let layout = env.path("images/test");
    let second = env.store.import(&layout, None).unwrap();
    assert_eq!(second.rootfs, first.rootfs);
    assert_eq!(second.config, first.config);
    assert_eq!(read(&second.rootfs, "marker"), "still here", "a cache hit must not unpack again");
    // A new store on the same cache (an agent restart) hits too, and a hit
    // reads no blob: removing them all changes nothing.
    fs::remove_dir_all(layout.join("blobs")).unwrap();
    let store = ImageStore::open(&env.path("cache")).unwrap();
    assert_eq!(store.import(&layout, None).unwrap().rootfs, first.rootfs);
}

#[test]
fn tarball_and_directory_give_the_same_image() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let built = b.image(two_layers(), default_config(), Some("latest"));
    let dir = b.write_dir(&env.path("images/dir"));
    let tarball = b.write_tar(&env.path("images/tarball.tar"));
    let other_cache = ImageStore::open(&env.path("cache2")).unwrap();
    let from_dir = env.store.import(&dir, None).unwrap();
    let from_tar = other_cache.import(&tarball, None).unwrap();
    assert_eq!(from_dir.digest, built.manifest);
    assert_eq!(from_tar.digest, built.manifest);
    assert_eq!(from_tar.config, from_dir.config);
    assert_eq!(read(&from_tar.rootfs, "etc/passwd"), read(&from_dir.rootfs, "etc/passwd"));
    assert_eq!(mode(&from_tar.rootfs, "ro"), 0o555);
    // And a tarball's blobs are verified too.
    let mut bad = b;
    let hex = LayoutBuilder::hex_of(&built.layers[0]).to_owned();
    bad.blobs.get_mut(&hex).unwrap()[10] ^= 0xff;
    let tarball = bad.write_tar(&env.path("images/bad.tar"));
    let cache3 = ImageStore::open(&env.path("cache3")).unwrap();
    assert!(matches!(cache3.import(&tarball, None), Err(ImageError::DigestMismatch { .. })));
}

#[test]
fn tags_resolve_through_the_index() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let v1 = b.image(vec![gz_layer(LayerTar::new().file("v", 0o644, "1"))], json!({}), Some("v1"));
    let v2 = b.image(vec![gz_layer(LayerTar::new().file("v", 0o644, "2"))], json!({}), Some("v2"));
    let latest = b.image(vec![gz_layer(LayerTar::new().file("v", 0o644, "latest"))], json!({}), Some("latest"));
    let dirs = [env.path("images")];
    b.write_dir(&env.path("images/app"));
    b.write_tar(&env.path("images/packed.tar"));
    let s = &env.store;
    assert_eq!(s.pull("app:v1", &dirs).unwrap().digest, v1.manifest);
    assert_eq!(s.pull("app:v2", &dirs).unwrap().digest, v2.manifest);
    assert_eq!(s.pull("app", &dirs).unwrap().digest, latest.manifest);
    assert_eq!(s.pull("app:latest", &dirs).unwrap().digest, latest.manifest);
    assert_eq!(s.pull("packed:v2", &dirs).unwrap().digest, v2.manifest);
    assert_eq!(s.pull(&format!("app@{}", v1.manifest), &dirs).unwrap().digest, v1.manifest);
    let abs = env.path("images/packed.tar");
    assert_eq!(s.pull(&format!("{}:v1", abs.display()), &[]).unwrap().digest, v1.manifest);
    assert_eq!(s.pull(abs.to_str().unwrap(), &[]).unwrap().digest, latest.manifest);
    assert_eq!(read(&s.pull("app:v2", &dirs).unwrap().rootfs, "v"), "2");
    match s.pull("app:v3", &dirs) {
        Err(ImageError::TagNotFound { wanted, mut available, .. }) => {
            available.sort();
            assert_eq!((wanted.as_str(), available), ("v3", vec!["latest".into(), "v1".into(), "v2".into()]));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.pull("/does/not/exist.tar", &dirs), Err(ImageError::NotFound { .. })));
    match s.pull("nope", &dirs) {
        Err(e @ ImageError::NotFound { .. }) => {
            assert!(e.to_string().contains("nope.tar"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The first directory that has the name wins.
    let mut other = LayoutBuilder::default();
    let shadow = other.image(vec![], json!({}), None);
    fs::create_dir(env.path("first")).unwrap();
    other.write_dir(&env.path("first/app"));
    assert_eq!(s.pull("app", &[env.path("first"), env.path("images")]).unwrap().digest, shadow.manifest);
}

#[test]
fn a_single_untagged_manifest_answers_to_latest_only() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    let only = b.image(vec![gz_layer(LayerTar::new().file("f", 0o644, ""))], json!({}), None);
    let layout = b.write_dir(&env.path("images/single"));
    assert_eq!(env.store.import(&layout, None).unwrap().digest, only.manifest);
    assert_eq!(env.store.import(&layout, Some(DEFAULT_TAG)).unwrap().digest, only.manifest);
    assert!(matches!(env.store.import(&layout, Some("v9")), Err(ImageError::TagNotFound { .. })));
}

#[test]
fn concurrent_imports_agree() {
    let env = Env::new();
    let mut b = LayoutBuilder::default();
    b.image(two_layers(), default_config(), None);
    let layout = b.write_dir(&env.path("images/test"));
    let stores: Vec<ImageStore> = (0..4).map(|_| ImageStore::open(&env.path("cache")).unwrap()).collect();
    let images: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores.iter().map(|s| scope.spawn(|| s.import(&layout, None).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(images.iter().all(|i| i.rootfs == images[0].rootfs));
    assert_eq!(read(&images[0].rootfs, "data/c"), "c");
    assert_eq!(fs::read_dir(env.path("cache/images")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(env.path("cache/tmp")).unwrap().count(), 0);
}

#[test]
fn open_removes_temporaries_of_dead_processes() {
    let env = Env::new();
    // pid 0x7fff_fff0 is above pid_max (at most 2^22): never alive.
    let dead = env.path("cache/tmp/abc.2147483632.0");
    fs::create_dir_all(dead.join("rootfs/ro")).unwrap();
    fs::set_permissions(dead.join("rootfs/ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let alive = env.path(&format!("cache/tmp/abc.{}.99", std::process::id()));
    fs::create_dir(&alive).unwrap();
    ImageStore::open(&env.path("cache")).unwrap();
    assert!(!dead.exists());
    assert!(alive.exists(), "a live process's import is left alone");
}

#[test]
fn references_parse() {
    let tag = |t: &str| Selector::Tag(t.into());
    let name = |n: &str| Location::Name(n.into());
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases = [
        ("busybox", name("busybox"), tag("latest")),
        ("busybox:1.36", name("busybox"), tag("1.36")),
        ("library/busybox:v1", name("library/busybox"), tag("v1")),
        ("localhost:5000/app:v2", name("localhost:5000/app"), tag("v2")),
        ("localhost:5000/app", name("localhost:5000/app"), tag("latest")),
        ("/srv/img/app.tar:v1", Location::Path("/srv/img/app.tar".into()), tag("v1")),
        ("/srv/img:x/app", Location::Path("/srv/img:x/app".into()), tag("latest")),
    ];
    for (reference, location, selector) in cases {
        assert_eq!(parse_reference(reference).unwrap(), (location, selector), "{reference}");
    }
    assert_eq!(parse_reference(&format!("app:v1@{digest}")).unwrap(), (name("app"), Selector::Digest(digest.clone())));
    for bad in
        ["", ":v1", "app:", "app:-x", "../app", "a/../b", "app@sha256:abc", "/x/../y", "a//b", "app:v1:v2", "a b"]
    {
        assert!(matches!(parse_reference(bad), Err(ImageError::BadReference { .. })), "{bad:?} should be rejected");
    }
}

mod property {
    //! Random layers built from hostile pieces (`..`, symlinks out, hard
    //! links, whiteouts) never write outside the rootfs and never leave a
    //! half-imported image, whatever the import returns.

    use proptest::prelude::*;

    use super::*;

    /// Replaced by the absolute path of the test's `outside` directory.
    const OUT: &str = "@OUT@";

    #[derive(Debug, Clone)]
    enum Piece {
        File(String),
        Dir(String),
        Symlink(String, &'static str),
        HardLink(String, String),
    }

    fn path() -> impl Strategy<Value = String> {
        // `..` is rare: any entry with one rejects the whole image, and the
        // interesting cases are the images that get through.
        let component = prop_oneof![
            30 => prop::sample::select(vec!["a", "b", "link", ".", ".wh.a", ".wh.link", ".wh..wh..opq"]),
            1 => Just(".."),
        ];
        (prop::collection::vec(component, 1..4), any::<bool>()).prop_map(|(parts, rooted)| {
            let joined = parts.join("/");
            if rooted { format!("/{joined}") } else { joined }
        })
    }

    fn piece() -> impl Strategy<Value = Piece> {
        let target = prop::sample::select(vec![OUT, "/tmp", "..", "../..", "/", "a", "b/../..", "/link/a"]);
        prop_oneof![
            path().prop_map(Piece::File),
            path().prop_map(Piece::Dir),
            (path(), target).prop_map(|(p, t)| Piece::Symlink(p, t)),
            (path(), path()).prop_map(|(p, t)| Piece::HardLink(p, t)),
        ]
    }

    fn layer(pieces: &[Piece], outside: &str) -> Layer {
        let mut tar = LayerTar::new();
        for p in pieces {
            tar = match p {
                Piece::File(path) => tar.file(path, 0o644, "x"),
                Piece::Dir(path) => tar.dir(path, 0o755),
                Piece::Symlink(path, target) => tar.symlink(path, &target.replace(OUT, outside)),
                Piece::HardLink(path, target) => tar.hardlink(path, target),
            };
        }
        gz_layer(tar)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn nothing_escapes(layers in prop::collection::vec(prop::collection::vec(piece(), 1..8), 1..3)) {
            let env = Env::new();
            let outside = env.path("outside");
            let outside_str = outside.to_str().unwrap().to_owned();
            let layers = layers.iter().map(|l| layer(l, &outside_str)).collect();
            let (_, result) = env.import_layers(layers);
            let left: Vec<_> = fs::read_dir(&outside).unwrap().collect();
            prop_assert!(left.is_empty(), "wrote outside: {left:?} ({result:?})");
            prop_assert_eq!(fs::read_dir(env.path("cache/tmp")).unwrap().count(), 0);
            let cached = fs::read_dir(env.path("cache/images")).unwrap().count();
            prop_assert_eq!(cached, usize::from(result.is_ok()), "{:?}", result);
        }
    }
}
