//! The etcd server of the apply case over `EtcdStore`: Debian's etcd-server
//! (`/usr/bin/etcd`, which `cargo xtask setup` installs; [`ETCD_ENV`] names
//! another binary) on two free ports of [`BENCH_IP`], in the bench's network
//! namespace, with a temporary data directory. Dropping [`EtcdServer`] kills
//! that one process and removes the directory. The logic is that of the
//! control plane's test harness (`control/tests/common/etcd.rs`).

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::BENCH_IP;

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCD_ENV: &str = "BERTH_BENCH_ETCD";
/// How long a fresh etcd may take to elect itself and answer `/health`.
const HEALTHY: Duration = Duration::from_secs(20);
/// Lines of etcd's log quoted when it does not start.
const LOG_TAIL: usize = 5;

/// An etcd process of this bench, killed on drop.
pub struct EtcdServer {
    child: Child,
    client_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until it is healthy. Blocks (polls and sleeps):
    /// call it off the async workers.
    ///
    /// # Errors
    /// A missing binary, or an etcd that exits or stays unhealthy three
    /// times (the free ports are picked by binding and releasing them, so
    /// another process can take one in between).
    pub fn start() -> anyhow::Result<Self> {
        let binary = std::env::var_os(ETCD_ENV).map_or_else(|| PathBuf::from(ETCD), PathBuf::from);
        if !binary.is_file() {
            bail!(
                "etcd not found at {}: run `cargo xtask setup` (installs Debian's etcd-server) or point {ETCD_ENV} at \
                 an etcd binary",
                binary.display()
            );
        }
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&binary) {
                Ok(server) => return Ok(server),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!("etcd did not start: {}", failures.join(" | "))
    }

    fn try_start(binary: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-bench-etcd-").tempdir().context("creating a temp dir")?;
        let (client_port, peer_port) = free_ports()?;
        let client = format!("http://{BENCH_IP}:{client_port}");
        let peer = format!("http://{BENCH_IP}:{peer_port}");
        let log = dir.path().join("etcd.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicating the log file")?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        // From here on, `Drop` kills the child on every early return.
        let mut server = Self { child, client_port, log, _dir: dir };
        let started = Instant::now();
        while started.elapsed() < HEALTHY {
            if let Some(status) = server.child.try_wait().context("polling etcd")? {
                bail!("etcd exited with {status}: {}", server.log_tail());
            }
            if healthy(client_port) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("etcd at {client} not healthy after {HEALTHY:?}: {}", server.log_tail())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{BENCH_IP}:{}", self.client_port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        if lines.is_empty() {
            return "(its log is empty)".to_owned();
        }
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL to the one process this bench started, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two ports that were free on [`BENCH_IP`] a moment ago.
fn free_ports() -> anyhow::Result<(u16, u16)> {
    let a = TcpListener::bind((BENCH_IP, 0)).context("picking a free port")?;
    let b = TcpListener::bind((BENCH_IP, 0)).context("picking a free port")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// etcd's `/health` on the client port says `"health":"true"` once it has a
/// leader and serves requests.
fn healthy(port: u16) -> bool {
    let Ok(ip) = BENCH_IP.parse() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
