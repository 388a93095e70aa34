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
    /// Run pods on this node: containers through namespaces and cgroups,
    /// kubelet's lifecycle, cAdvisor metrics, the local admin socket.
    Node(Box<NodeArgs>),
    /// Run a Pod (Kubernetes YAML; `-` reads stdin) on the local agent.
    RunPod {
        file: PathBuf,
        /// Wait until every container is ready.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// List the agent's pods.
    List {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// One pod's status (JSON).
    Status {
        /// `name` or `namespace/name`.
        pod: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// A container's log.
    Logs {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        /// The previous instance's log (after a restart).
        #[arg(short, long)]
        previous: bool,
        #[arg(long)]
        tail: Option<usize>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Run a command inside a running container (its namespaces and cgroup).
    Exec {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(long, default_value_t = 30)]
        timeout_seconds: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Stop a pod gracefully and remove it.
    Stop {
        pod: String,
        /// Override the pod's terminationGracePeriodSeconds.
        #[arg(long)]
        grace_seconds: Option<u64>,
        /// Return at once instead of waiting until the pod is gone.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// A container's shim (started by the agent; not for direct use).
    #[command(hide = true)]
    Shim(berth_agent::runtime::ShimArgs),
    /// Joins a running container's namespaces and cgroup and runs a
    /// command (started by the agent for exec probes and `exec`).
    #[command(hide = true, name = "exec-helper")]
    ExecHelper(berth_agent::runtime::ExecArgs),
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
        Command::ExecHelper(args) => return berth_agent::runtime::exec_main(args),
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let command = match command {
        Command::Node(args) => return exit(node(*args)),
        Command::RunPod { file, wait, timeout_seconds, socket } => {
            return exit(client::run_pod(&socket.socket, &file, wait.then(|| Duration::from_secs(timeout_seconds))));
        }
        Command::List { socket } => return exit(client::list(&socket.socket)),
        Command::Status { pod, socket } => return exit(client::status(&socket.socket, &pod)),
        Command::Logs { pod, container, previous, tail, socket } => {
            return exit(client::logs(&socket.socket, &pod, container.as_deref(), previous, tail));
        }
        Command::Exec { pod, container, timeout_seconds, command, socket } => {
            return exit(client::exec(
                &socket.socket,
                &pod,
                container.as_deref(),
                &command,
                Duration::from_secs(timeout_seconds),
            ));
        }
        Command::Stop { pod, grace_seconds, no_wait, socket } => {
            return exit(client::stop(&socket.socket, &pod, grace_seconds.map(Duration::from_secs), !no_wait));
        }
        other => other,
    };
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
        // Dispatched above.
        _ => Ok(()),
    };
    exit(result)
}

/// Anything with an exit code for its failures.
trait Failure: std::error::Error {
    fn code(&self) -> i32;
}

impl Failure for standalone::StandaloneError {
    fn code(&self) -> i32 {
        self.exit_code()
    }
}

impl Failure for berth_agent::node::NodeError {
    fn code(&self) -> i32 {
        self.exit_code()
    }
}

impl Failure for berth_agent::node::client::ClientError {
    fn code(&self) -> i32 {
        self.exit_code()
    }
}

fn exit<E: Failure>(result: Result<(), E>) -> ExitCode {
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
            ExitCode::from(e.code() as u8)
        }
    }
}

#[derive(clap::Args)]
struct SocketArg {
    /// The agent's admin socket.
    #[arg(long, env = "BERTH_AGENT_SOCKET", default_value = "/run/berth/agent.sock")]
    socket: PathBuf,
}

#[derive(clap::Args)]
struct NodeArgs {
    /// This node's name.
    #[arg(long, env = "BERTH_NODE_NAME", default_value = "node")]
    name: String,
    /// Pod records, container bundles and IPAM state.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = "/var/lib/berth")]
    state_dir: PathBuf,
    /// The admin socket (agent.sock) and pod network namespaces.
    #[arg(long, env = "BERTH_RUN_DIR", default_value = "/run/berth")]
    run_dir: PathBuf,
    /// Container logs.
    #[arg(long, env = "BERTH_LOG_DIR", default_value = "/var/log/berth/pods")]
    log_dir: PathBuf,
    /// Where image references (`name:tag`) are looked up: OCI layouts
    /// `DIR/name/` or tarballs `DIR/name.tar`. Repeatable.
    #[arg(long = "image-dir", env = "BERTH_IMAGE_DIRS", value_delimiter = ',', default_value = "/var/lib/berth/oci")]
    image_dirs: Vec<PathBuf>,
    /// Unpacked images, shared by pods.
    #[arg(long, env = "BERTH_IMAGE_CACHE", default_value = "/var/lib/berth/images")]
    image_cache: PathBuf,
    /// The node's pod CIDR (IPv4).
    #[arg(long, env = "BERTH_POD_CIDR", default_value = "198.18.0.0/24")]
    pod_cidr: String,
    /// The directory berth owns under every cgroup hierarchy.
    #[arg(long, env = "BERTH_CGROUP_ROOT", default_value = berth_agent::cgroups::DEFAULT_ROOT_NAME)]
    cgroup_root: String,
    /// Prometheus /metrics address; `off` disables it.
    #[arg(long, env = "BERTH_METRICS_ADDR", default_value = "127.0.0.1:10255")]
    metrics_addr: String,
    /// CrashLoopBackOff: first delay (kubelet: 10 s).
    #[arg(long, default_value_t = 10_000)]
    backoff_initial_ms: u64,
    /// CrashLoopBackOff: cap (kubelet: 300 s).
    #[arg(long, default_value_t = 300_000)]
    backoff_max_ms: u64,
    /// CrashLoopBackOff: reset after running this long (kubelet: 10 min).
    #[arg(long, default_value_t = 600_000)]
    backoff_reset_ms: u64,
    /// Rotate a container log when it exceeds this size (kubelet: 10 MiB).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    log_max_bytes: u64,
    /// Log files kept per container, the live one included (kubelet: 5).
    #[arg(long, default_value_t = 5)]
    log_max_files: u32,
}

fn node(args: NodeArgs) -> Result<(), berth_agent::node::NodeError> {
    use berth_agent::node::{Node, NodeConfig, NodeError};
    let metrics_addr = match args.metrics_addr.as_str() {
        "off" => None,
        a => Some(a.parse().map_err(|e| NodeError::Config(format!("--metrics-addr {a:?}: {e}")))?),
    };
    let agent_exe =
        std::env::current_exe().map_err(|source| NodeError::Io { what: "finding the agent binary".into(), source })?;
    let config = NodeConfig {
        node_name: args.name,
        state_dir: args.state_dir,
        run_dir: args.run_dir,
        log_dir: args.log_dir,
        image_dirs: args.image_dirs,
        image_cache: args.image_cache,
        pod_cidr: args.pod_cidr,
        cgroup_root: args.cgroup_root,
        backoff: berth_agent::pod::backoff::BackoffConfig {
            initial: Duration::from_millis(args.backoff_initial_ms),
            max: Duration::from_millis(args.backoff_max_ms.max(args.backoff_initial_ms)),
            reset_after: Duration::from_millis(args.backoff_reset_ms),
        },
        log_max_bytes: args.log_max_bytes,
        log_max_files: args.log_max_files,
        metrics_addr,
        agent_exe,
    };
    // Build (blocking: netlink, cgroupfs) before the runtime starts.
    let node = Node::build(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .map_err(|source| NodeError::Io { what: "starting the tokio runtime".into(), source })?;
    runtime.block_on(node.run())
}

/// The operator commands: talk to the agent's admin socket.
mod client {
    use std::{path::Path, time::Duration};

    use berth_agent::node::client::{Client, ClientError, read_manifest, split_name};

    pub fn run_pod(socket: &Path, file: &Path, wait: Option<Duration>) -> Result<(), ClientError> {
        let client = Client::new(socket);
        let view = client.run_pod(&read_manifest(file)?)?;
        println!("pod/{} created (uid {})", view.name, view.uid);
        if let Some(timeout) = wait {
            client.wait_ready(&view.namespace, &view.name, timeout)?;
            println!("pod/{} ready", view.name);
        }
        Ok(())
    }

    pub fn list(socket: &Path) -> Result<(), ClientError> {
        let pods = Client::new(socket).list()?;
        println!("{:<12} {:<28} {:<7} {:<10} {:<9} {:<16}", "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "IP");
        for p in pods {
            let s = &p.status;
            let ready = s.container_statuses.iter().filter(|c| c.ready).count();
            let restarts: u32 = s.container_statuses.iter().map(|c| c.restart_count).sum();
            println!(
                "{:<12} {:<28} {:<7} {:<10} {:<9} {:<16}",
                p.namespace,
                p.name,
                format!("{ready}/{}", s.container_statuses.len()),
                s.display_status(),
                restarts,
                s.pod_ip.map_or_else(|| "<none>".to_owned(), |ip| ip.to_string())
            );
        }
        Ok(())
    }

    pub fn status(socket: &Path, pod: &str) -> Result<(), ClientError> {
        let (ns, name) = split_name(pod, "default");
        let detail = Client::new(socket).status(&ns, &name)?;
        println!("{}", serde_json::to_string_pretty(&detail).unwrap_or_default());
        Ok(())
    }

    pub fn logs(
        socket: &Path,
        pod: &str,
        container: Option<&str>,
        previous: bool,
        tail: Option<usize>,
    ) -> Result<(), ClientError> {
        let (ns, name) = split_name(pod, "default");
        print!("{}", Client::new(socket).logs(&ns, &name, container, previous, tail)?);
        Ok(())
    }

    pub fn exec(
        socket: &Path,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let (ns, name) = split_name(pod, "default");
        let out = Client::new(socket).exec(&ns, &name, container, argv, timeout)?;
        print!("{}", out.stdout);
        eprint!("{}", out.stderr);
        match (out.timed_out, out.exit_code) {
            (false, Some(0)) => Ok(()),
            (true, _) => Err(ClientError::Timeout(format!("command still running after {timeout:?}; killed"))),
            (false, code) => Err(ClientError::Refused {
                status: 0,
                message: format!("command exited with {}", code.map_or("a signal".to_owned(), |c| c.to_string())),
            }),
        }
    }

    pub fn stop(socket: &Path, pod: &str, grace: Option<Duration>, wait: bool) -> Result<(), ClientError> {
        let (ns, name) = split_name(pod, "default");
        Client::new(socket).stop(&ns, &name, grace, wait)?;
        println!("pod/{name} {}", if wait { "stopped" } else { "stopping" });
        Ok(())
    }
}
