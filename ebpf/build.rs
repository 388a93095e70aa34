//! Compiles the kernel programs in `bpf/` with clang and leaves the objects in
//! OUT_DIR, where `src/lib.rs` embeds them. Nodes never compile BPF: the agent
//! binary carries the objects.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// One object per attach point (DESIGN.md: one `.c` per attach point).
const PROGRAMS: &[&str] = &["xdp_lb", "tc_rev_nat", "sock_lb"];

fn find_clang() -> anyhow::Result<String> {
    if let Ok(clang) = env::var("BERTH_CLANG") {
        return Ok(clang);
    }
    // Debian's clang-19 first (preferred), then older ones that still work.
    for candidate in ["clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang"] {
        if Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Ok(candidate.to_owned());
        }
    }
    bail!(
        "no clang found to compile the BPF programs: run `cargo xtask setup` (installs clang-19 and libbpf-dev) or set BERTH_CLANG"
    )
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let bpf_dir = manifest.join("bpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=BERTH_CLANG");
    for entry in walk(&bpf_dir)? {
        println!("cargo:rerun-if-changed={}", entry.display());
    }

    let clang = find_clang()?;
    for program in PROGRAMS {
        let src = bpf_dir.join(format!("{program}.c"));
        let obj = out_dir.join(format!("{program}.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror"])
            // asm/types.h lives under the multiarch include dir on Debian.
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg(format!("-I{}", bpf_dir.join("include").display()))
            .arg(format!("-I{}", bpf_dir.display()))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .with_context(|| format!("running {clang} for {}", src.display()))?;
        if !output.status.success() {
            bail!(
                "{clang} failed on {}:\n{}\n(missing headers? run `cargo xtask setup`)",
                src.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}
