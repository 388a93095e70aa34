//! `cargo xtask test-image`: the reproducible OCI image berth's runtime
//! tests run, built from busybox-static and a static `berth-test-server`.
//!
//! # Design
//! No registry, no container tool: the image is two tar layers written
//! here. Layer 1 is Debian's statically linked `/bin/busybox` with applet
//! symlinks, `/etc/passwd` and `/etc/group` (root, nobody 65534) and the
//! usual mount points; layer 2 is `/bin/berth-test-server`, the
//! `berth-test-server` package built with `-C target-feature=+crt-static`
//! into `target/static` (its own target directory, so the flags do not
//! invalidate the main build). The config runs `berth-test-server serve`.
//!
//! Same inputs, same bytes: entries sorted by path, mtime 0 (or
//! `SOURCE_DATE_EPOCH`), owner 0:0 with no user or group names, gzip with
//! mtime 0, no file name, OS byte 255 and level 9, JSON from structs (field
//! order fixed in code), and the binary built with `--remap-path-prefix` so
//! the checkout's location is not in it. The result is
//! `target/berth-test-image/berth-test/` (a layout directory) and
//! `target/berth-test-image/berth-test.tar` (the same as a tarball); the
//! index tags the manifest `latest`, so `berth-test:latest` resolves with
//! `target/berth-test-image` as the image directory. Files already holding
//! the right bytes are left alone.
//!
//! # Limitations
//! The digest is stable for one toolchain, one `Cargo.lock` and one
//! busybox-static version; changing any of them changes it. x86_64 and
//! aarch64 hosts only (the image is for the host's architecture).

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail, ensure};
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::process::{cargo, run};

/// The package, the binary cargo builds, and its path in the image.
const SERVER_PACKAGE: &str = "berth-test-server";
const SERVER_BIN: &str = "berth-pod-server";
const SERVER_IN_IMAGE: &str = "bin/berth-test-server";
const BUSYBOX: &str = "/bin/busybox";
/// Name and tag: `berth-test:latest`.
const IMAGE_NAME: &str = "berth-test";
const IMAGE_TAG: &str = "latest";
/// Applets linked in /bin (all in Debian 12's busybox-static; checked
/// against `busybox --list` at build time).
const APPLETS: &[&str] = &[
    "[", "ash", "awk", "cat", "chmod", "cp", "cut", "date", "dd", "df", "du", "echo", "env", "false", "find", "free",
    "grep", "head", "hostname", "id", "ifconfig", "ip", "kill", "killall", "ln", "ls", "mkdir", "mount", "mv", "nc",
    "netstat", "nproc", "nslookup", "pidof", "ping", "printf", "ps", "pwd", "readlink", "rm", "sed", "seq", "setsid",
    "sh", "sleep", "sort", "stat", "tail", "tee", "test", "timeout", "top", "touch", "tr", "true", "umount", "uname",
    "uniq", "wc", "wget", "which", "whoami", "xargs", "yes",
];
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What `build` made (it prints the digest).
pub struct TestImage {
    /// The image directory: pass it as `image_dirs` (or
    /// `BERTH_TEST_IMAGE_DIR`) and reference `berth-test:latest`.
    pub dir: PathBuf,
}

/// Builds the test server statically, then writes the layout and tarball.
pub fn build(root: &Path, target_dir: &Path) -> anyhow::Result<TestImage> {
    let server = build_server(root, target_dir)?;
    let server_bytes = fs::read(&server).with_context(|| format!("reading {}", server.display()))?;
    ensure!(is_static_elf(&server_bytes)?, "{} is dynamically linked (crt-static did not take)", server.display());
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX}: install Debian's busybox-static (`cargo xtask setup`)"))?;
    ensure!(is_static_elf(&busybox)?, "{BUSYBOX} is dynamically linked: install busybox-static, not busybox");
    check_applets()?;
    let mtime = source_date_epoch()?;

    let mut blobs = Blobs::default();
    let layers = [base_layer(busybox), server_layer(server_bytes)];
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for entries in layers {
        let tar = tar_bytes(entries, mtime)?;
        diff_ids.push(sha256(&tar));
        layer_descs.push(blobs.add(OCI_LAYER_GZIP, gzip(&tar)?, None));
    }
    let config = Config {
        architecture: goarch()?,
        os: "linux",
        config: ContainerConfig {
            entrypoint: vec![format!("/{SERVER_IN_IMAGE}")],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin:/usr/bin".into()],
            working_dir: "/".into(),
            exposed_ports: BTreeMap::from([("8080/tcp".to_owned(), Empty {}), ("8080/udp".to_owned(), Empty {})]),
        },
        rootfs: RootFs { kind: "layers", diff_ids },
        history: vec![
            History { created_by: "berth xtask test-image: busybox-static, /etc, mount points".into() },
            History { created_by: format!("berth xtask test-image: /{SERVER_IN_IMAGE}") },
        ],
    };
    let config_desc = blobs.add(OCI_CONFIG, serde_json::to_vec(&config)?, None);
    let manifest = Manifest { schema_version: 2, media_type: OCI_MANIFEST, config: config_desc, layers: layer_descs };
    let annotations = BTreeMap::from([(REF_NAME.to_owned(), IMAGE_TAG.to_owned())]);
    let manifest_desc = blobs.add(OCI_MANIFEST, serde_json::to_vec(&manifest)?, Some(annotations));
    let digest = manifest_desc.digest.clone();
    let index = Index { schema_version: 2, media_type: OCI_INDEX, manifests: vec![manifest_desc] };
    let files = Layout {
        index: serde_json::to_vec(&index)?,
        oci_layout: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        blobs: blobs.0,
    };

    let dir = target_dir.join("berth-test-image");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    files.write_dir(&dir.join(IMAGE_NAME))?;
    write_if_changed(&dir.join(format!("{IMAGE_NAME}.tar")), &files.tarball(mtime)?)?;
    let dir = fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    println!("{IMAGE_NAME}:{IMAGE_TAG} {digest}");
    eprintln!(
        "[xtask] test image {IMAGE_NAME}:{IMAGE_TAG} {digest}: {}/{IMAGE_NAME}/ and {IMAGE_NAME}.tar",
        dir.display()
    );
    Ok(TestImage { dir })
}

/// `cargo build --release -p berth-test-server --target <host>` with
/// crt-static, in `<target>/static`.
fn build_server(root: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    let triple = host_triple()?;
    let static_dir = target_dir.join("static");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    // CARGO_ENCODED_RUSTFLAGS (0x1f-separated) rather than RUSTFLAGS, so a
    // path with a space survives; it also wins over any RUSTFLAGS inherited.
    let mut flags =
        vec!["-Ctarget-feature=+crt-static".to_owned(), format!("--remap-path-prefix={}=/berth", root.display())];
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    run(cargo()
        .args(["build", "--release", "--locked", "-p", SERVER_PACKAGE, "--target", &triple])
        .env("CARGO_TARGET_DIR", &static_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env_remove("RUSTFLAGS")
        // Smaller and path-free: no debug info in the image's binary.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo"))?;
    Ok(static_dir.join(triple).join("release").join(SERVER_BIN))
}

fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc).arg("-vV").output().context("running rustc -vV")?;
    ensure!(out.status.success(), "rustc -vV failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no `host:` line")
}

/// The architecture as image configs spell it (Go's GOARCH).
fn goarch() -> anyhow::Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => bail!("no test image for {other}: x86_64 and aarch64 only"),
    }
}

fn check_applets() -> anyhow::Result<()> {
    let out = Command::new(BUSYBOX).arg("--list").output().with_context(|| format!("running {BUSYBOX} --list"))?;
    ensure!(out.status.success(), "{BUSYBOX} --list failed");
    let list = String::from_utf8_lossy(&out.stdout);
    let have: Vec<&str> = list.lines().collect();
    let missing: Vec<&str> = APPLETS.iter().copied().filter(|a| !have.contains(a)).collect();
    ensure!(missing.is_empty(), "{BUSYBOX} lacks applets {missing:?}");
    Ok(())
}

fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

/// Whether a 64-bit little-endian ELF has no program interpreter (static,
/// including static-pie).
fn is_static_elf(bytes: &[u8]) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    ensure!(bytes.len() >= 64 && bytes.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(bytes[4] == 2 && bytes[5] == 1, "not a 64-bit little-endian ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let phoff = usize::try_from(u64::from_le_bytes(bytes[0x20..0x28].try_into()?))?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = bytes.get(at..at + 4).context("program header outside the file")?;
        if u32::from_le_bytes(p_type.try_into()?) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A tar entry to write.
#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    mode: u32,
    kind: Kind,
}

fn dir(path: &str, mode: u32) -> Entry {
    Entry { path: path.into(), mode, kind: Kind::Dir }
}

fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
    Entry { path: path.into(), mode, kind: Kind::File(data.into()) }
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry { path: path.into(), mode: 0o777, kind: Kind::Symlink(target.into()) }
}

fn base_layer(busybox: Vec<u8>) -> Vec<Entry> {
    let mut entries = vec![
        dir("bin", 0o755),
        file("bin/busybox", 0o755, busybox),
        dir("dev", 0o755),
        dir("etc", 0o755),
        file("etc/group", 0o644, GROUP),
        file("etc/hosts", 0o644, HOSTS),
        file("etc/passwd", 0o644, PASSWD),
        file("etc/resolv.conf", 0o644, ""),
        dir("proc", 0o555),
        dir("root", 0o700),
        dir("sys", 0o555),
        dir("tmp", 0o1777),
        dir("usr", 0o755),
        dir("usr/bin", 0o755),
        symlink("usr/bin/env", "/bin/busybox"),
    ];
    entries.extend(APPLETS.iter().map(|a| symlink(&format!("bin/{a}"), "busybox")));
    entries
}

fn server_layer(server: Vec<u8>) -> Vec<Entry> {
    vec![dir("bin", 0o755), file(SERVER_IN_IMAGE, 0o755, server)]
}

/// A tar of `entries` sorted by path (component-wise, so a directory comes
/// before its contents), owner 0:0, every mtime `mtime`.
fn tar_bytes(mut entries: Vec<Entry>, mtime: u64) -> anyhow::Result<Vec<u8>> {
    entries.sort_by(|a, b| Path::new(&a.path).cmp(Path::new(&b.path)));
    if let Some(w) = entries.windows(2).find(|w| Path::new(&w[0].path) == Path::new(&w[1].path)) {
        bail!("{} twice in one layer", w[0].path);
    }
    let mut builder = tar::Builder::new(Vec::new());
    for e in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        let data: &[u8] = match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_path(format!("{}/", e.path))?;
                &[]
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_path(&e.path)?;
                data
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_path(&e.path)?;
                h.set_link_name(target)?;
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data)?;
    }
    Ok(builder.into_inner()?)
}

/// gzip with a fixed header (mtime 0, no name, OS unknown) and level.
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::new(9));
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct Config {
    architecture: &'static str,
    os: &'static str,
    config: ContainerConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    exposed_ports: BTreeMap<String, Empty>,
}

/// `{}`.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created_by: String,
}

/// Blobs by hex digest.
#[derive(Default)]
struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    fn add(
        &mut self,
        media_type: &'static str,
        bytes: Vec<u8>,
        annotations: Option<BTreeMap<String, String>>,
    ) -> Descriptor {
        let digest = sha256(&bytes);
        let desc = Descriptor { media_type, digest: digest.clone(), size: bytes.len() as u64, annotations };
        self.0.insert(digest["sha256:".len()..].to_owned(), bytes);
        desc
    }
}

/// The files of an OCI image layout.
struct Layout {
    index: Vec<u8>,
    oci_layout: Vec<u8>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    fn files(&self) -> Vec<(String, &[u8])> {
        let mut files =
            vec![("index.json".to_owned(), self.index.as_slice()), ("oci-layout".to_owned(), &self.oci_layout)];
        files.extend(self.blobs.iter().map(|(hex, bytes)| (format!("blobs/sha256/{hex}"), bytes.as_slice())));
        files
    }

    /// Writes the layout at `dest` unless it already holds these bytes;
    /// otherwise builds it next to `dest` and swaps it in.
    fn write_dir(&self, dest: &Path) -> anyhow::Result<()> {
        let current = self.files().iter().all(|(name, bytes)| fs::read(dest.join(name)).is_ok_and(|b| b == *bytes));
        if current {
            return Ok(());
        }
        let parent = dest.parent().context("layout directory has no parent")?;
        let tmp = parent.join(format!(".{IMAGE_NAME}.tmp.{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        fs::create_dir_all(tmp.join("blobs/sha256")).with_context(|| format!("creating {}", tmp.display()))?;
        for (name, bytes) in self.files() {
            let path = tmp.join(&name);
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        if dest.exists() {
            fs::remove_dir_all(dest).with_context(|| format!("removing the old {}", dest.display()))?;
        }
        fs::rename(&tmp, dest).with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    }

    /// The layout as one tarball, deterministic like the layers.
    fn tarball(&self, mtime: u64) -> anyhow::Result<Vec<u8>> {
        let mut entries = vec![dir("blobs", 0o755), dir("blobs/sha256", 0o755)];
        entries.extend(self.files().into_iter().map(|(name, bytes)| file(&name, 0o644, bytes)));
        tar_bytes(entries, mtime)
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if fs::read(path).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            file("b/z", 0o644, "z"),
            dir("b", 0o755),
            symlink("a", "b/z"),
            file("b/a", 0o600, vec![0u8; 70_000]),
            dir("tmp", 0o1777),
        ]
    }

    #[test]
    fn layers_are_deterministic_whatever_the_entry_order() {
        let one = tar_bytes(sample(), 0).unwrap();
        let mut reversed = sample();
        reversed.reverse();
        let two = tar_bytes(reversed, 0).unwrap();
        assert_eq!(one, two);
        assert_eq!(gzip(&one).unwrap(), gzip(&two).unwrap());
        // And SOURCE_DATE_EPOCH changes them.
        assert_ne!(tar_bytes(sample(), 1).unwrap(), one);
    }

    #[test]
    fn layers_sort_directories_first_and_carry_no_owner_or_time() {
        let bytes = tar_bytes(sample(), 0).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 0));
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            seen.push((String::from_utf8_lossy(&entry.path_bytes()).into_owned(), h.mode().unwrap()));
        }
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b/", "b/a", "b/z", "tmp/"]);
        assert_eq!(seen[4].1, 0o1777);
    }

    #[test]
    fn duplicate_paths_are_refused() {
        assert!(tar_bytes(vec![dir("a", 0o755), file("a/", 0o644, "")], 0).is_err());
    }

    #[test]
    fn gzip_header_is_fixed() {
        let gz = gzip(b"hello").unwrap();
        // Magic, deflate, no flags (no name), mtime 0, OS 255.
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0]);
        assert_eq!(gz[9], 255);
    }

    #[test]
    fn static_elf_detection() {
        // A minimal ELF64 header with one program header of the given type.
        let elf = |p_type: u32| {
            let mut b = vec![0u8; 64 + 56];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2;
            b[5] = 1;
            b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
            b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            b[64..68].copy_from_slice(&p_type.to_le_bytes());
            b
        };
        assert!(is_static_elf(&elf(1)).unwrap());
        assert!(!is_static_elf(&elf(3)).unwrap());
        assert!(is_static_elf(b"#!/bin/sh\n").is_err());
    }
}
