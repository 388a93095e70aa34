//! `berth`: the control plane's command line. Parses arguments, loads the
//! client configuration, calls the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use berth_control::{
    cli,
    client::{ApiClient, ClientError, Config, load_config},
    describe,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "berth control plane: apply Kubernetes YAML, inspect and roll out")]
struct Cli {
    /// The client configuration (server, CA, token).
    #[arg(long, env = "BERTH_CLIENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The namespace (default: the configuration's, else `default`).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (HTTPS) over the embedded store or etcd.
    Serve(Box<ServeArgs>),
    /// Create or update objects from YAML (multi-document; a directory; `-`).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// List or show objects.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum)]
        output: Option<cli::Output>,
    },
    /// Show an object in detail, with what relates to it (kubectl describe).
    Describe { kind: String, name: String },
    /// Delete an object (a running pod terminates gracefully first).
    Delete {
        kind: String,
        name: String,
        /// Seconds a pod gets to stop; 0 removes it at once.
        #[arg(long)]
        grace_period: Option<i64>,
    },
    /// Set a Deployment's replicas.
    Scale {
        kind: String,
        name: String,
        #[arg(long)]
        replicas: u32,
    },
    /// Deployment rollouts.
    Rollout {
        #[command(subcommand)]
        action: Rollout,
    },
    /// Write the client configuration.
    Config {
        /// `https://HOST:PORT`.
        #[arg(long)]
        server: String,
        /// The CA certificate (PEM) that signed the server's certificate.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        token: Option<String>,
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// The store file, the CA, the server certificate, the first token.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth-control")]
    data_dir: PathBuf,
    /// etcd endpoints (comma-separated); the embedded store when absent.
    #[arg(long, env = "BERTH_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// The key prefix in etcd (several clusters may share one etcd).
    #[arg(long, default_value = "/berth")]
    etcd_root: String,
    /// Bearer tokens, kube-apiserver's CSV format (`token,user,uid,"groups"`);
    /// generated on first start when absent.
    #[arg(long, env = "BERTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Tokens nodes present to join (repeatable).
    #[arg(long = "bootstrap-token", env = "BERTH_BOOTSTRAP_TOKENS", value_delimiter = ',')]
    bootstrap_tokens: Vec<String>,
    /// Extra names/addresses for the server certificate (repeatable).
    #[arg(long = "san")]
    sans: Vec<String>,
    #[arg(long, default_value = "198.19.0.0/16")]
    service_cidr: String,
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// How often the leader runs the controller passes.
    #[arg(long, default_value_t = 1000)]
    controller_period_ms: u64,
    /// A node whose heartbeat is older than this becomes NotReady.
    #[arg(long, default_value_t = 40)]
    node_grace_seconds: u64,
    /// A NotReady node's pods are evicted (and replaced) after this long.
    #[arg(long, default_value_t = 300)]
    pod_eviction_seconds: u64,
    /// Over etcd: a leader that stops renewing loses the controllers after
    /// this long (kube-controller-manager's --leader-elect-lease-duration).
    #[arg(long, default_value_t = 15)]
    leader_lease_seconds: u64,
}

#[derive(Subcommand)]
enum Rollout {
    /// Wait until the rollout finishes, showing progress.
    Status {
        /// `deployment/NAME` or `NAME`.
        name: String,
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// List a Deployment's revisions, or show one.
    History {
        name: String,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Roll back to the previous revision, or to `--to-revision`.
    Undo {
        name: String,
        #[arg(long)]
        to_revision: Option<i64>,
    },
}

/// `deployment/web`, `deploy/web`, `deployment.apps/web` or `web`.
fn deployment_name(name: &str) -> Result<String, ClientError> {
    match name.split_once('/') {
        None => Ok(name.to_owned()),
        Some(("deployment" | "deploy" | "deployments" | "deployment.apps", n)) if !n.is_empty() => Ok(n.to_owned()),
        Some(_) => Err(ClientError::Config(format!("{name:?}: only deployments have rollouts"))),
    }
}

fn config_path(cli: &Option<PathBuf>) -> PathBuf {
    cli.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".config").join("berth").join("config.yaml")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = config_path(&cli.config);
    if let Command::Serve(args) = cli.command {
        let args = *args;
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()))
            .with_writer(std::io::stderr)
            .init();
        let store = if args.etcd_endpoints.is_empty() {
            berth_control::serve::StoreChoice::Redb
        } else {
            berth_control::serve::StoreChoice::Etcd { endpoints: args.etcd_endpoints, root: args.etcd_root }
        };
        let result = berth_control::serve::run(berth_control::serve::ServeOptions {
            listen: args.listen,
            data_dir: args.data_dir,
            store,
            token_file: args.token_file,
            bootstrap_tokens: args.bootstrap_tokens,
            sans: args.sans,
            service_cidr: args.service_cidr,
            node_port_range: args.node_port_range,
            controller_period: Duration::from_millis(args.controller_period_ms.max(10)),
            lifecycle: berth_control::controllers::node_lifecycle::LifecycleConfig {
                grace: Duration::from_secs(args.node_grace_seconds),
                toleration: Duration::from_secs(args.pod_eviction_seconds),
            },
            leader_lease: Duration::from_secs(args.leader_lease_seconds),
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth serve: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        };
    }
    if let Command::Config { server, ca, token, cert, key } = &cli.command {
        let config = Config {
            server: server.clone(),
            ca_file: ca.display().to_string(),
            token: token.clone(),
            cert_file: cert.as_ref().map(|p| p.display().to_string()),
            key_file: key.as_ref().map(|p| p.display().to_string()),
            namespace: cli.namespace.clone().unwrap_or_else(|| "default".into()),
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, serde_yaml::to_string(&config).unwrap_or_default()));
        return match written {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&ClientError::Config(format!("writing {}: {e}", path.display()))),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&ClientError::Config(format!("starting the runtime: {e}"))),
    };
    match runtime.block_on(run(cli, &path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli, path: &std::path::Path) -> Result<(), ClientError> {
    let client = ApiClient::new(load_config(path)?)?;
    let ns = cli.namespace.as_deref();
    match cli.command {
        Command::Apply { file } => {
            for line in cli::apply(&client, &file, ns).await? {
                println!("{line}");
            }
        }
        Command::Get { kind, name, all_namespaces, output } => {
            print!("{}", cli::get(&client, &kind, name.as_deref(), ns, all_namespaces, output).await?);
        }
        Command::Describe { kind, name } => print!("{}", describe::describe(&client, &kind, &name, ns).await?),
        Command::Delete { kind, name, grace_period } => {
            println!("{}", cli::delete(&client, &kind, &name, ns, grace_period).await?)
        }
        Command::Scale { kind, name, replicas } => {
            println!("{}", cli::scale(&client, &kind, &name, replicas, ns).await?)
        }
        Command::Rollout { action: Rollout::History { name, revision } } => {
            print!("{}", cli::rollout_history(&client, &deployment_name(&name)?, ns, revision).await?);
        }
        Command::Rollout { action: Rollout::Undo { name, to_revision } } => {
            println!("{}", cli::rollout_undo(&client, &deployment_name(&name)?, ns, to_revision).await?);
        }
        Command::Rollout { action: Rollout::Status { name, timeout_seconds } } => {
            let name = deployment_name(&name)?;
            let done = cli::rollout_status(&client, &name, ns, Duration::from_secs(timeout_seconds), |m| print!("{m}"))
                .await?;
            print!("{done}");
        }
        Command::Config { .. } | Command::Serve(_) => {}
    }
    Ok(())
}

/// Prints the error with its field causes, like kubectl, and picks the exit
/// code.
fn fail(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    if let ClientError::Status { causes, .. } = e {
        for (field, message) in causes {
            if !e.to_string().contains(message.as_str()) {
                eprintln!("  {field}: {message}");
            }
        }
    }
    ExitCode::from(e.exit_code() as u8)
}
