//! A real etcd server for end-to-end tests, in the test's network namespace
//! (call [`super::isolate`] first): Debian's etcd-server (`/usr/bin/etcd`,
//! which `cargo xtask setup` installs; `BERTH_TEST_ETCD` names another
//! binary). Each test starts its own etcd on free ports of [`TEST_IP`] with a
//! temporary data directory and kills it (that process only) when it ends,
//! also on panic. A missing etcd fails the test: these tests never skip.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use berth_control::store::{EtcdOptions, EtcdStore};

use super::TEST_IP;

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCD_ENV: &str = "BERTH_TEST_ETCD";

/// How long [`healthy`] waits for a connection.
const CONNECT: Duration = Duration::from_secs(10);

/// An etcd process of this test, killed on drop.
pub struct EtcdServer {
    child: Child,
    client_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let binary = std::env::var_os(ETCD_ENV).map_or_else(|| PathBuf::from(ETCD), PathBuf::from);
        assert!(
            binary.is_file(),
            "etcd not found at {}: run `cargo xtask setup` (installs Debian's etcd-server), or point {ETCD_ENV} at an \
             etcd binary. These tests do not skip.",
            binary.display()
        );
        // Free ports are picked by binding and releasing them, so another
        // process can take one in between: try again with new ones.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match EtcdServer::try_start(&binary) {
                Ok(server) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!("etcd did not start:\n{}", failures.join("\n---\n"));
    }

    fn try_start(binary: &Path) -> Result<EtcdServer, String> {
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = free_ports();
        let client = format!("http://{TEST_IP}:{client_port}");
        let peer = format!("http://{TEST_IP}:{peer_port}");
        let log = dir.path().join("etcd.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = EtcdServer { child, client_port, log, _dir: dir };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = server.child.try_wait().unwrap() {
                return Err(format!("etcd exited with {status}:\n{}", server.log()));
            }
            if healthy(client_port) {
                eprintln!("etcd at {client} healthy after {:?}", started.elapsed());
                return Ok(server);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("etcd at {client} not healthy after 20 s:\n{}", server.log()))
    }

    pub fn endpoint(&self) -> String {
        format!("http://{TEST_IP}:{}", self.client_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(TEST_IP.parse().unwrap(), self.client_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn options(&self, root: &str) -> EtcdOptions {
        EtcdOptions { root: root.to_owned(), ..EtcdOptions::new([self.endpoint()]) }
    }

    pub fn store(&self, root: &str) -> EtcdStore {
        EtcdStore::connect(self.options(root)).unwrap()
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.unwrap()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL to the one process this test started, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two ports that were free on [`TEST_IP`] a moment ago.
pub fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind(format!("{TEST_IP}:0")).unwrap();
    let b = TcpListener::bind(format!("{TEST_IP}:0")).unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// etcd's `/health` on the client port says `"health":"true"` once it has a
/// leader and serves requests.
pub fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::new(TEST_IP.parse().unwrap(), port), CONNECT) else {
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
