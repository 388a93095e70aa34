//! `berth-agent`: parse arguments, install logging, call the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use berth_agent::standalone::{self, StandaloneArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-agent", version, about = "berth node agent: eBPF Service load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the data plane from a services file (no control plane).
    Standalone {
        /// The services file (YAML); see examples/standalone.yaml.
        #[arg(long, env = "BERTH_CONFIG")]
        config: PathBuf,
        /// Validate the file against this machine and exit; changes nothing.
        #[arg(long)]
        check: bool,
        /// Parent directory of the per-instance pin directories.
        #[arg(long, env = "BERTH_BPFFS_ROOT", default_value = berth_agent::datapath::loader::DEFAULT_BPFFS_ROOT)]
        bpffs_root: PathBuf,
        /// How often the file is checked for changes (SIGHUP forces a check).
        #[arg(long, env = "BERTH_POLL_INTERVAL_MS", default_value_t = 1000)]
        poll_interval_ms: u64,
    },
    /// A container's shim (started by the agent; not for direct use).
    #[command(hide = true)]
    Shim(berth_agent::runtime::ShimArgs),
    /// Run a command inside a running container (started by the agent for
    /// exec probes; operators may use it too).
    #[command(hide = true)]
    Exec(berth_agent::runtime::ExecArgs),
    /// Detach and unpin everything berth attached and pinned for an instance.
    Cleanup {
        #[arg(long, default_value = "default")]
        instance: String,
        #[arg(long, env = "BERTH_BPFFS_ROOT", default_value = berth_agent::datapath::loader::DEFAULT_BPFFS_ROOT)]
        bpffs_root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The shim and the exec helper enter namespaces: they run before any
    // thread or tokio runtime exists, and log nothing to the agent's
    // stderr (the shim's stderr is its own log file).
    let command = match cli.command {
        Command::Shim(args) => return berth_agent::runtime::shim_main(args),
        Command::Exec(args) => return berth_agent::runtime::exec_main(args),
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match command {
        Command::Standalone { config, check: true, .. } => standalone::check(&config)
            .map(|c| {
                println!("{}: ok ({} services)", config.display(), c.services.len());
            })
            .map_err(standalone::StandaloneError::from),
        Command::Standalone { config, check: false, bpffs_root, poll_interval_ms } => standalone::run(StandaloneArgs {
            config,
            bpffs_root,
            poll_interval: Duration::from_millis(poll_interval_ms.max(10)),
        }),
        Command::Cleanup { instance, bpffs_root } => standalone::cleanup(&bpffs_root, &instance).map(|removed| {
            for path in &removed {
                println!("removed {}", path.display());
            }
            println!("instance {instance}: {} pins removed", removed.len());
        }),
        // Dispatched above, before logging was installed.
        Command::Shim(_) | Command::Exec(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Display the whole chain once: each layer adds its context.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("berth-agent: {msg}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
