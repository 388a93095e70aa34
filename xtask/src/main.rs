//! `cargo xtask`: berth's developer and CI tasks.
//!
//! # Design
//! One binary, one subcommand per task, each a plain function that runs the
//! same steps a developer would type. `cargo xtask test` is the single test
//! command: `.ci/run` and the README call exactly that, so CI and developers
//! can never drift apart. See `docs/development.md`.
//!
//! # Limitations
//! `setup` knows only Debian/Ubuntu (apt-get, dpkg-query) on x86_64 or
//! aarch64.

mod codegen;
mod image;
mod process;
mod setup;
mod up;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::process::{Steps, cargo, is_root, run};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "berth's developer and CI tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the system packages berth needs (apt-get) and check the kernel
    /// prerequisites (bpffs, cgroup2). Needs root unless nothing is missing.
    Setup,
    /// Regenerate ebpf/src/abi/generated.rs from ebpf/bpf/include/berth/abi.h.
    Codegen {
        /// Do not write: fail if the checked-in file differs from a fresh run.
        #[arg(long)]
        check: bool,
    },
    /// cargo fmt --check, clippy -D warnings, codegen --check.
    Lint,
    /// The one test command (CI and README): setup, codegen --check, build
    /// every target, run every test. Needs root (privileged tests).
    ///
    /// Arguments after `--` go to `cargo test` as if typed there, e.g.
    /// `cargo xtask test -- -p berth-agent datapath -- --nocapture`.
    Test {
        /// libtest threads; the privileged tests share one kernel, so keep
        /// this small.
        #[arg(long, env = "BERTH_TEST_THREADS", default_value_t = 2)]
        test_threads: usize,
        /// Extra `cargo test` arguments (after `--`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build the reproducible OCI test image (busybox-static and a static
    /// berth-test-server) into target/berth-test-image; prints its digest.
    TestImage,
    /// setup, then a release build of the workspace.
    Build,
    /// setup, release build, then `berth-bench BENCH ARGS` (results under
    /// bench/results/; a full run replaces the checked-in baseline there).
    /// See docs/performance.md.
    Bench {
        /// Which benchmark; `quick` runs every one in quick mode, as CI does.
        #[arg(value_parser = ["packet", "e2e", "apply", "pods", "control", "quick"])]
        bench: String,
        /// Arguments for `berth-bench BENCH` (after `--`), e.g. `-- --quick`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// setup, release build, then run `berth-agent demo` (a single-node
    /// cluster on this machine). Arguments after `--` go to `demo`.
    Up {
        /// Requests to send through the VIP.
        #[arg(long, default_value_t = 400)]
        requests: u64,
        /// Remove everything after the demo instead of waiting for Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
}

/// The workspace root: xtask lives one level below it.
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // CARGO_MANIFEST_DIR is `<root>/xtask`, which always has a parent.
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn main() -> anyhow::Result<()> {
    // Before anything else, while the process is still single-threaded (see
    // the SAFETY comment inside).
    codegen::default_libclang_path();
    let cli = Cli::parse();
    let root = repo_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match cli.task {
        Task::Setup => setup::run(),
        Task::Codegen { check } => codegen::run(&root, check),
        Task::Lint => lint(&root),
        Task::Test { test_threads, args } => test(&root, test_threads, &args),
        Task::TestImage => image::build(&root, &target_dir(&root)).map(|_| ()),
        Task::Build => build(),
        Task::Bench { bench, args } => run_bench(&root, &bench, &args),
        Task::Up { requests, exit } => up(&root, requests, exit),
    }
}

fn lint(root: &Path) -> anyhow::Result<()> {
    let mut steps = Steps::new();
    steps.step("cargo fmt --check", || run(cargo().args(["fmt", "--all", "--check"])))?;
    steps.step("cargo clippy", || {
        run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
    })?;
    steps.step("codegen --check", || codegen::run(root, true))?;
    steps.done();
    Ok(())
}

fn test(root: &Path, test_threads: usize, extra: &[OsString]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask test needs root: the privileged tests create network namespaces, \
             cgroups and BPF programs, and are never skipped silently. Run it as root"
        );
    }
    if test_threads == 0 {
        bail!("BERTH_TEST_THREADS / --test-threads must be at least 1");
    }
    let mut steps = Steps::new();
    steps.step("setup", setup::run)?;
    steps.step("codegen --check", || codegen::run(root, true))?;
    steps.step("cargo build --workspace --all-targets", || {
        run(cargo().args(["build", "--workspace", "--all-targets"]))
    })?;
    // Split like cargo itself: before a second `--` are cargo's arguments,
    // after it libtest's.
    let (cargo_args, libtest_args) = match extra.iter().position(|a| a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[][..]),
    };
    // `-p` narrows the run; cargo would otherwise still test everything.
    let picks_package = cargo_args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && a.len() > 2)
    });
    let test_image = steps.step("test image", || image::build(root, &target_dir(root)))?;
    steps.step("cargo test", || {
        let mut cmd = cargo();
        cmd.arg("test").env("BERTH_TEST_IMAGE_DIR", &test_image.dir);
        if !picks_package {
            cmd.arg("--workspace");
        }
        cmd.args(cargo_args).arg("--").arg(format!("--test-threads={test_threads}")).args(libtest_args);
        run(&mut cmd)
    })?;
    // The benchmarks' quick mode, so their harness cannot rot: it checks that
    // every peer produced a figure, not a speed. Skipped when the run was
    // narrowed to some tests (extra arguments), like cargo would.
    if extra.is_empty() {
        let bin = target_dir(root).join("debug").join("berth-bench");
        steps.step("berth-bench quick", || {
            run(std::process::Command::new(&bin).arg("--results").arg(root.join("bench").join("results")).arg("quick"))
        })?;
    }
    steps.done();
    Ok(())
}

/// Where cargo puts build output (honours CARGO_TARGET_DIR).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn run_bench(root: &Path, bench: &str, args: &[OsString]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("cargo xtask bench needs root: the benchmarks create network namespaces and load BPF programs");
    }
    let mut steps = Steps::new();
    steps.step("setup", setup::run)?;
    steps.step("cargo build --workspace --release --bins", || {
        run(cargo().args(["build", "--workspace", "--release", "--bins"]))
    })?;
    // The pods benchmark runs the test image.
    steps.step("test image", || image::build(root, &target_dir(root)).map(|_| ()))?;
    let bin = target_dir(root).join("release").join("berth-bench");
    steps.step(&format!("berth-bench {bench}"), || {
        run(std::process::Command::new(&bin)
            .arg("--results")
            .arg(root.join("bench").join("results"))
            .arg(bench)
            .args(args))
    })?;
    steps.done();
    Ok(())
}

fn build() -> anyhow::Result<()> {
    let mut steps = Steps::new();
    steps.step("setup", setup::run)?;
    steps.step("cargo build --workspace --release", || run(cargo().args(["build", "--workspace", "--release"])))?;
    steps.done();
    Ok(())
}

/// `cargo xtask up`: a single-node berth on this machine.
///
/// For now: setup, release build, then replace this process with
/// `berth-agent demo <args>` (the agent owns what "demo" starts; exec so that
/// signals such as Ctrl-C reach the agent directly, not a parent that would
/// have to forward them).
fn up(root: &Path, requests: u64, exit: bool) -> anyhow::Result<()> {
    up::run_demo(root, requests, exit)
}
