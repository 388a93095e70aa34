//! Compiles the benchmark's floor programs (`bpf/floors.c`) with clang into
//! OUT_DIR, where `src/packet/floors.rs` embeds them; the same flags as
//! berth's own programs (ebpf/build.rs), so floor and berth are built alike.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context, bail};

fn find_clang() -> anyhow::Result<String> {
    if let Ok(clang) = env::var("BERTH_CLANG") {
        return Ok(clang);
    }
    for candidate in ["clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang"] {
        if Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Ok(candidate.to_owned());
        }
    }
    bail!("no clang found to compile bench/bpf/floors.c: run `cargo xtask setup` or set BERTH_CLANG")
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let src = manifest.join("bpf").join("floors.c");
    // berth's ABI header: the floors use berth's key and value shapes.
    let abi_include = manifest.join("..").join("ebpf").join("bpf").join("include");
    let obj = PathBuf::from(env::var("OUT_DIR")?).join("floors.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", abi_include.join("berth").join("abi.h").display());
    println!("cargo:rerun-if-env-changed=BERTH_CLANG");

    let clang = find_clang()?;
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror"])
        // asm/types.h lives under the multiarch include dir on Debian.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg(format!("-I{}", abi_include.display()))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .with_context(|| format!("running {clang} for {}", src.display()))?;
    if !output.status.success() {
        bail!("{clang} failed on {}:\n{}", src.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
