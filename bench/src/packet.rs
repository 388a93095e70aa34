//! Per-packet cost (BPF_PROG_TEST_RUN). Being written.

use crate::report::Sink;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// N = 1 and 1k only, few calls: checks the harness, not the speed.
    #[arg(long)]
    pub quick: bool,
}

impl Options {
    pub fn quick() -> Self {
        Self { quick: true }
    }
}

/// # Errors
/// Not written yet.
pub fn run(_opts: &Options, _sink: &mut Sink) -> anyhow::Result<()> {
    anyhow::bail!("packet benchmark not written yet")
}
