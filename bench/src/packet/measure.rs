//! One BPF_PROG_TEST_RUN call, and pinning the benchmark to one CPU.

use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use nix::{sched::CpuSet, unistd::Pid};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// What one call returned.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub verdict: u32,
    /// Kernel-reported duration per run (ns), as BPF_PROG_TEST_RUN measures
    /// it: around the program call, inside the kernel.
    pub ns: u32,
    pub out_len: usize,
}

/// Runs `prog` once on a fresh kernel copy of `input` (repeat = 1: the
/// kernel copies `data_in` for every call, so a rewriting program never sees
/// its own output). `out` receives the packet as the program left it.
///
/// # Errors
/// The syscall failing.
pub fn once(prog: &Xdp, input: &[u8], out: &mut [u8]) -> anyhow::Result<Call> {
    run(prog, input, out, 1)
}

/// Loop mode: the kernel runs the program `repeat` times on the same buffer
/// and reports the mean. A rewriting program sees its own output from the
/// second run on, so this is only meaningful for programs that do not
/// rewrite (the floors, berth's non-Service path).
///
/// # Errors
/// The syscall failing.
pub fn looped(prog: &Xdp, input: &[u8], out: &mut [u8], repeat: u32) -> anyhow::Result<Call> {
    run(prog, input, out, repeat)
}

fn run(prog: &Xdp, input: &[u8], out: &mut [u8], repeat: u32) -> anyhow::Result<Call> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(out);
    opts.repeat = repeat;
    let res = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok(Call {
        verdict: res.return_value,
        ns: u32::try_from(res.duration.as_nanos()).unwrap_or(u32::MAX),
        out_len: res.data_size_out as usize,
    })
}

/// Online CPUs, from the affinity mask the process started with.
///
/// # Errors
/// If the mask cannot be read.
pub fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count()).filter(|c| set.is_set(*c).unwrap_or(false)).collect())
}

/// Moves the calling thread to `cpu`.
///
/// # Errors
/// An invalid or offline CPU.
pub fn pin_to(cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("cpu {cpu}"))?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to cpu {cpu}"))
}

/// Restores the thread's original CPU mask on drop (`berth-bench quick`
/// runs other benchmarks in the same process afterwards).
pub struct AffinityGuard(CpuSet);

impl AffinityGuard {
    /// # Errors
    /// If the mask cannot be read.
    pub fn save() -> anyhow::Result<Self> {
        Ok(Self(nix::sched::sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?))
    }
}

impl Drop for AffinityGuard {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::sched_setaffinity(Pid::from_raw(0), &self.0) {
            eprintln!("[bench] restoring the CPU mask: {e}");
        }
    }
}
