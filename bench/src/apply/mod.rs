//! Programming time: how long a Service change takes to reach the data
//! plane, berth's reconciler against what kube-proxy's modes run.
//!
//! # Design
//! Three parts, one module each, run in this order; one failing is recorded
//! as a failed row and does not stop the others:
//! - [`berth`]: full load and one change through the agent's own reconciler
//!   into real pinned maps, map memory from the kernel;
//! - [`peers`]: iptables-restore (full and `--noflush`) and nft, the same
//!   Services;
//! - [`churn`]: changes while traffic flows.
//!
//! # Limitations
//! Quick mode (1k Services, few changes) checks that every figure is
//! produced, not the speed.

pub mod berth;
pub mod churn;
pub mod peers;

use crate::report::{Outcome, Record, Sink};

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

/// One part of the benchmark: records its rows, fails as a whole.
type Part = fn(&Options, &mut Sink) -> anyhow::Result<()>;

/// Runs berth, the peers and churn; each part's failure becomes a failed
/// row (so the run reports it) without stopping the parts after it.
///
/// # Errors
/// Only if a failure cannot be recorded.
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    let parts: [(&str, Part); 3] = [("berth", berth::run), ("peers", peers::run), ("churn", churn::run)];
    for (name, part) in parts {
        if let Err(e) = part(opts, sink) {
            eprintln!("[bench] apply/{name} failed: {e:#}");
            sink.record(Record::new("apply", name, name).outcome(Outcome::Failed(format!("{e:#}"))))?;
        }
    }
    Ok(())
}
