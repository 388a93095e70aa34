//! Driving the `berth-test-server` binary from tests.
//!
//! # Design
//! Servers and clients are separate processes started with a [`Launch`]
//! (a namespace, or a namespace plus a cgroup), so they use the kernel path
//! a real workload would: their sockets live in that namespace and their
//! `connect()` calls pass the cgroup's BPF hooks. Clients print one JSON
//! [`Summary`] line that [`RunningClient::finish`] parses; the harness
//! kills a client that outlives [`ClientSpec::deadline`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::client::ClientSpec;
use crate::netns::Launch;
use crate::process::{ChildGuard, Stream};
use crate::server::ServeArgs;
use crate::summary::Summary;
use crate::topology::Topology;

/// How long a server gets to bind and print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `berth-test-server` binary; see [`crate::server_bin!`].
#[derive(Clone, Debug)]
pub struct ServerBin {
    path: PathBuf,
}

impl ServerBin {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts `serve --name NAME --http HTTP [--udp UDP]` at `at` and waits
    /// until it is bound (prints `ready`).
    ///
    /// # Errors
    /// If it cannot start or is not ready within [`READY_TIMEOUT`] (e.g.
    /// the address is not configured there); the error has its stderr.
    pub fn serve(&self, at: &impl Launch, name: &str, http: SocketAddr, udp: Option<SocketAddr>) -> Result<ChildGuard> {
        let args = ServeArgs { name: name.to_owned(), http, udp };
        let mut cmd = at.command(&self.path);
        cmd.arg("serve").args(args.to_args());
        let child = at.spawn_command(cmd, &format!("server {name} on {http}"))?;
        child.wait_for_line(Stream::Stdout, "ready", READY_TIMEOUT)?;
        Ok(child)
    }

    /// Starts server `b<i>` in every backend of `topo`, on the backend's
    /// address with `http_port` (and `udp_port`).
    ///
    /// # Errors
    /// As [`ServerBin::serve`].
    pub fn serve_backends(&self, topo: &Topology, http_port: u16, udp_port: Option<u16>) -> Result<Vec<ChildGuard>> {
        topo.backends
            .iter()
            .map(|b| {
                let udp = udp_port.map(|p| SocketAddr::from((b.addr, p)));
                self.serve(&b.ns, &b.name, (b.addr, http_port).into(), udp)
            })
            .collect()
    }

    /// Runs a client at `at` to completion and returns its summary.
    ///
    /// # Errors
    /// If the client cannot start, fails (bad arguments), overruns its
    /// deadline, or prints no summary. Failed requests are not errors:
    /// they are counted in the summary.
    pub fn run(&self, at: &impl Launch, spec: &impl ClientSpec) -> Result<Summary> {
        self.start(at, spec)?.finish()
    }

    /// Starts a client at `at` in the background, e.g. a [`crate::HoldLoad`]
    /// while the test changes backends.
    ///
    /// # Errors
    /// If it cannot start.
    pub fn start(&self, at: &impl Launch, spec: &impl ClientSpec) -> Result<RunningClient> {
        let args = spec.args();
        let mut cmd = at.command(&self.path);
        cmd.args(&args);
        let label = format!("berth-test-server {}", args.join(" "));
        let child = at.spawn_command(cmd, &label)?;
        Ok(RunningClient { child, deadline: spec.deadline() })
    }
}

/// A client started with [`ServerBin::start`]; killed if dropped.
#[derive(Debug)]
pub struct RunningClient {
    child: ChildGuard,
    deadline: Duration,
}

impl RunningClient {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits for the client to finish (bounded by its deadline) and parses
    /// its summary.
    ///
    /// # Errors
    /// As [`ServerBin::run`].
    pub fn finish(self) -> Result<Summary> {
        let label = self.child.label().to_owned();
        let done = self.child.finish(self.deadline)?;
        if !done.status.success() {
            bail!("`{label}` failed ({}): {}", done.status, done.stderr.trim());
        }
        let line = done
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("`{label}` printed no summary; stderr: {}", done.stderr.trim()))?;
        serde_json::from_str(line).with_context(|| format!("`{label}`: bad summary {line:?}"))
    }
}
