//! `berth-bench`: runs one of berth's benchmarks (see the library docs and
//! docs/performance.md). `cargo xtask bench` builds and runs it.

use std::{path::PathBuf, process::ExitCode};

use berth_bench::{
    apply, control, e2e, packet, pods,
    report::{Outcome, RunInfo, Sink},
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "berth-bench", about = "berth's side-by-side benchmarks", version)]
struct Cli {
    /// Where results go (`runs/` for every run, the baseline files for full runs).
    #[arg(long, env = "BERTH_BENCH_RESULTS", default_value = "bench/results", global = true)]
    results: PathBuf,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Per-packet cost through BPF_PROG_TEST_RUN against floor programs.
    Packet(packet::Options),
    /// wrk through namespaces: berth vs direct, iptables, nftables, HAProxy.
    E2e(e2e::Options),
    /// Programming time: berth's reconciler vs iptables-restore and nft.
    Apply(apply::Options),
    /// Pod start latency and agent memory: berth-agent node vs runc.
    Pods(pods::Options),
    /// Control plane: scheduler throughput, API apply (memory, redb, etcd, against TLS and store floors), watch fan-out.
    Control(control::Options),
    /// Every benchmark in quick mode (what CI runs): checks that every peer
    /// produced a figure, not a speed.
    Quick,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = berth_bench::require_root() {
        eprintln!("berth-bench: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.bench {
        Bench::Packet(o) => run_one("packet", o.quick, &cli.results, |s| packet::run(&o, s)),
        Bench::E2e(o) => run_one("e2e", o.quick, &cli.results, |s| e2e::run(&o, s)),
        Bench::Apply(o) => run_one("apply", o.quick, &cli.results, |s| apply::run(&o, s)),
        Bench::Pods(o) => run_one("pods", o.quick, &cli.results, |s| pods::run(&o, s)),
        Bench::Control(o) => run_one("control", o.quick, &cli.results, |s| control::run(&o, s)),
        Bench::Quick => run_one("packet", true, &cli.results, |s| packet::run(&packet::Options::quick(), s))
            .and_then(|()| run_one("apply", true, &cli.results, |s| apply::run(&apply::Options::quick(), s)))
            .and_then(|()| run_one("e2e", true, &cli.results, |s| e2e::run(&e2e::Options::quick(), s)))
            .and_then(|()| run_one("pods", true, &cli.results, |s| pods::run(&pods::Options::quick(), s)))
            .and_then(|()| run_one("control", true, &cli.results, |s| control::run(&control::Options::quick(), s))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one benchmark into a fresh sink; fails if it produced no rows or a
/// row whose peer could not be measured (the harness is broken, not slow).
fn run_one(
    bench: &str,
    quick: bool,
    results: &std::path::Path,
    f: impl FnOnce(&mut Sink) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut sink = Sink::create(results, RunInfo::collect(bench, quick))?;
    let outcome = f(&mut sink);
    let failed: Vec<String> = sink
        .records()
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(why) => Some(format!("{} / {} / {}: {why}", r.table, r.case, r.peer)),
            _ => None,
        })
        .collect();
    let empty = sink.records().is_empty();
    // Only a complete run with the default options may replace the checked-in
    // baseline: not a failed one, not one narrowed by options (`--peers`,
    // `--services`, …), which would leave a partial table behind.
    let narrowed = std::env::args().skip_while(|a| a != bench).nth(1).is_some();
    sink.finish(outcome.is_ok() && !empty && failed.is_empty() && !narrowed)?;
    outcome?;
    if empty {
        anyhow::bail!("{bench}: no result was recorded");
    }
    if !failed.is_empty() {
        anyhow::bail!("{bench}: {} peer(s) produced no figure:\n  {}", failed.len(), failed.join("\n  "));
    }
    Ok(())
}
