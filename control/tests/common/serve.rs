//! A real `berth serve` process for end-to-end tests, in the test's
//! network namespace (call [`super::isolate`] first).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::TEST_IP;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// The bootstrap token every test server accepts (unless the test passes
/// its own `--bootstrap-token`), for agents to join with.
pub const BOOTSTRAP_TOKEN: &str = "berth-test.0123456789abcdef";

/// A running `berth serve`, SIGKILLed (that process only) on drop. Its
/// stderr is echoed with a `[serve <port>]` prefix and kept, so a test can
/// wait for a log line.
pub struct Serve {
    child: Child,
    pub addr: String,
    pub data: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

#[allow(dead_code, reason = "not every test file uses every helper")]
impl Serve {
    /// The embedded store, a 100 ms controller period.
    pub fn start(data: &Path, port: u16) -> Serve {
        Serve::start_with(data, port, &[])
    }

    /// With extra `berth serve` flags; a `--controller-period-ms` or
    /// `--bootstrap-token` among them replaces the default.
    pub fn start_with(data: &Path, port: u16, extra: &[&str]) -> Serve {
        let addr = format!("{TEST_IP}:{port}");
        let mut command = Command::new(BERTH);
        command.args(["serve", "--listen", &addr, "--data-dir"]).arg(data);
        if !extra.contains(&"--controller-period-ms") {
            command.args(["--controller-period-ms", "100"]);
        }
        if !extra.contains(&"--bootstrap-token") {
            command.args(["--bootstrap-token", BOOTSTRAP_TOKEN]);
        }
        let mut child = command.args(extra).stderr(Stdio::piped()).spawn().expect("start berth serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve {port}] {line}");
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("berth serve not listening on {addr} within 20 s");
        }
        Serve { child, addr, data: data.to_owned(), lines }
    }

    /// Whether a stderr line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|l| l.contains(needle))
    }

    /// Waits up to `timeout` for a stderr line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The generated admin token (first start without `--token-file`).
    pub fn admin_token(&self) -> String {
        let tokens = std::fs::read_to_string(self.data.join("tokens.csv")).expect("tokens.csv");
        tokens.split(',').next().expect("a token").to_owned()
    }

    /// A client configuration for this server with `token`.
    pub fn config(&self, token: String) -> berth_control::client::Config {
        berth_control::client::Config {
            server: format!("https://{}", self.addr),
            ca_file: self.data.join("ca.crt").display().to_string(),
            token: Some(token),
            cert_file: None,
            key_file: None,
            namespace: "default".into(),
        }
    }

    /// A client configuration for this server with the admin token.
    pub fn admin_config(&self) -> berth_control::client::Config {
        self.config(self.admin_token())
    }

    /// Where simulated agents join this server: its bootstrap token.
    pub fn join_config(&self) -> berth_control::client::Config {
        self.config(BOOTSTRAP_TOKEN.to_owned())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free on [`TEST_IP`] a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(format!("{TEST_IP}:0")).expect("bind").local_addr().expect("addr").port()
}
