//! `berth-test-server client ...`: bounded load generators that print one
//! JSON [`Summary`] line.
//!
//! # Design
//! Each mode is a plain struct ([`HttpLoad`], [`UdpLoad`], [`HoldLoad`])
//! that both sides share: a test builds it and [`ClientSpec::args`] turns it
//! into the command line, the binary parses it back and calls `run`. So the
//! flags cannot drift between the harness and the binary.
//!
//! Every network operation has a timeout and every loop a count or a
//! deadline; [`ClientSpec::deadline`] is the resulting upper bound on a run,
//! which the harness enforces again from outside.
//!
//! # Limitations
//! HTTP/1.1 with `Content-Length` only (what our server speaks); `http://`
//! URLs with a literal IP. With one shared UDP socket, a reply that arrives
//! after its timeout is taken as the answer to the next datagram.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::flags::Flags;
use crate::summary::Summary;

/// Default per-operation timeout (connect, read, write).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on HTTP worker threads.
pub const MAX_CONCURRENCY: u64 = 1024;
/// Bound on a response body; ours are a line.
const MAX_BODY: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Slack added to computed deadlines for process start-up and exit.
const DEADLINE_SLACK: Duration = Duration::from_secs(10);

/// A client mode the harness can run.
pub trait ClientSpec {
    /// The arguments after the binary name (`client MODE --flag ...`).
    fn args(&self) -> Vec<String>;
    /// How long a run can take at most, given its counts and timeouts.
    fn deadline(&self) -> Duration;
}

/// Whether HTTP requests reuse their connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keepalive {
    /// One connection per request (`Connection: close`): every request is
    /// a new flow, so the load balancer picks a backend each time.
    Off,
    /// Each worker keeps one connection open across requests.
    On,
}

/// `client http`: N GET requests, C at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLoad {
    /// `http://IP:PORT/PATH`.
    pub url: String,
    pub requests: u64,
    pub concurrency: u64,
    pub keepalive: Keepalive,
    /// Per connect/read/write.
    pub timeout: Duration,
}

impl HttpLoad {
    /// `requests` sequential requests, one connection each, 2 s timeout.
    pub fn new(url: impl Into<String>, requests: u64) -> Self {
        Self { url: url.into(), requests, concurrency: 1, keepalive: Keepalive::Off, timeout: DEFAULT_TIMEOUT }
    }

    /// Parses the flags after `client http`.
    ///
    /// # Errors
    /// On unknown, missing or malformed flags.
    pub fn parse(args: &[String]) -> Result<Self> {
        let f = Flags::parse(args, &["url", "requests", "concurrency", "timeout-ms"], &["keepalive"])?;
        Ok(Self {
            url: f.require("url")?,
            requests: f.require("requests")?,
            concurrency: f.get("concurrency")?.unwrap_or(1),
            keepalive: if f.has("keepalive") { Keepalive::On } else { Keepalive::Off },
            timeout: timeout_flag(&f)?,
        })
    }

    fn workers(&self) -> u64 {
        self.concurrency.clamp(1, MAX_CONCURRENCY).min(self.requests.max(1))
    }

    /// Runs the load.
    ///
    /// # Errors
    /// Only for a malformed URL; network failures are counted in the
    /// summary.
    pub fn run(&self) -> Result<Summary> {
        let target = Target::parse(&self.url)?;
        let started = Instant::now();
        let next = AtomicU64::new(0);
        let mut total = Summary::default();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..self.workers()).map(|_| s.spawn(|| http_worker(self, &target, &next))).collect();
            for worker in workers {
                match worker.join() {
                    Ok(part) => total.merge(part),
                    Err(_) => total.record_err("client worker panicked"),
                }
            }
        });
        total.elapsed_ms = millis(started.elapsed());
        Ok(total)
    }
}

impl ClientSpec for HttpLoad {
    fn args(&self) -> Vec<String> {
        let mut args = strings(&["client", "http", "--url", &self.url]);
        args.extend(strings(&["--requests", &self.requests.to_string()]));
        args.extend(strings(&["--concurrency", &self.concurrency.to_string()]));
        args.extend(strings(&["--timeout-ms", &millis(self.timeout).to_string()]));
        if self.keepalive == Keepalive::On {
            args.push("--keepalive".into());
        }
        args
    }

    fn deadline(&self) -> Duration {
        // Per request at most connect + write + read, each bounded.
        let rounds = self.requests.div_ceil(self.workers());
        saturating_mul(self.timeout, rounds.saturating_mul(3)).saturating_add(DEADLINE_SLACK)
    }
}

fn http_worker(load: &HttpLoad, target: &Target, next: &AtomicU64) -> Summary {
    let mut summary = Summary::default();
    let mut conn: Option<Conn> = None;
    while next.fetch_add(1, Ordering::Relaxed) < load.requests {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(target, load.timeout) {
                Ok(c) => {
                    summary.peer_addrs.insert(c.peer.to_string());
                    c
                }
                Err(e) => {
                    summary.record_err(format!("{e:#}"));
                    continue;
                }
            },
        };
        match c.get(target, load.keepalive) {
            Ok(answer) => {
                summary.record_ok(&answer.backend);
                summary.client_ips.extend(answer.client_ip);
                if load.keepalive == Keepalive::On && answer.reusable {
                    conn = Some(c);
                }
            }
            Err(e) => summary.record_err(format!("{e:#}")),
        }
    }
    summary
}

/// How UDP datagrams share sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpSockets {
    /// A new socket (new source port, so a new flow) per datagram.
    PerRequest,
    /// One socket for the whole run: one flow.
    Shared,
}

/// How a UDP socket addresses the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpAddressing {
    /// Unconnected `sendto`/`recvfrom`: replies from any source are taken
    /// and their source recorded, so a missing reverse NAT shows up in
    /// `peer_addrs` instead of as a timeout.
    SendTo,
    /// `connect` then `send`/`recv` (what socket-LB's connect hook sees);
    /// the kernel drops replies from other sources.
    Connected,
}

/// `client udp`: N datagrams, each expecting one reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpLoad {
    pub addr: SocketAddr,
    pub requests: u64,
    pub sockets: UdpSockets,
    pub addressing: UdpAddressing,
    /// Per reply.
    pub timeout: Duration,
}

impl UdpLoad {
    /// `requests` datagrams, a new unconnected socket each, 2 s timeout.
    pub fn new(addr: SocketAddr, requests: u64) -> Self {
        Self {
            addr,
            requests,
            sockets: UdpSockets::PerRequest,
            addressing: UdpAddressing::SendTo,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Parses the flags after `client udp`.
    ///
    /// # Errors
    /// On unknown, missing or malformed flags.
    pub fn parse(args: &[String]) -> Result<Self> {
        let f = Flags::parse(args, &["addr", "requests", "timeout-ms"], &["same-socket", "connect"])?;
        Ok(Self {
            addr: f.require("addr")?,
            requests: f.require("requests")?,
            sockets: if f.has("same-socket") { UdpSockets::Shared } else { UdpSockets::PerRequest },
            addressing: if f.has("connect") { UdpAddressing::Connected } else { UdpAddressing::SendTo },
            timeout: timeout_flag(&f)?,
        })
    }

    /// Runs the load.
    ///
    /// # Errors
    /// Never for network failures (counted in the summary); kept fallible
    /// for symmetry with the other modes.
    pub fn run(&self) -> Result<Summary> {
        let started = Instant::now();
        let mut summary = Summary::default();
        let mut shared: Option<UdpSocket> = None;
        for i in 0..self.requests {
            let socket = match (self.sockets, shared.take()) {
                (UdpSockets::Shared, Some(s)) => Ok(s),
                _ => self.open(),
            };
            match socket.and_then(|s| self.exchange(&s, i).map(|r| (s, r))) {
                Ok((socket, (backend, from))) => {
                    summary.record_ok(&backend);
                    summary.peer_addrs.insert(from.to_string());
                    if self.sockets == UdpSockets::Shared {
                        shared = Some(socket);
                    }
                }
                Err(e) => summary.record_err(format!("{e:#}")),
            }
        }
        summary.elapsed_ms = millis(started.elapsed());
        Ok(summary)
    }

    fn open(&self) -> Result<UdpSocket> {
        let any: SocketAddr =
            if self.addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(any).context("bind udp")?;
        socket.set_read_timeout(Some(self.timeout.max(Duration::from_millis(1)))).context("set timeout")?;
        if self.addressing == UdpAddressing::Connected {
            socket.connect(self.addr).with_context(|| format!("connect udp {}", self.addr))?;
        }
        Ok(socket)
    }

    /// Sends datagram `i`, returns (backend, reply source).
    fn exchange(&self, socket: &UdpSocket, i: u64) -> Result<(String, SocketAddr)> {
        let payload = format!("ping {i}\n");
        let mut buf = [0u8; 2048];
        let (n, from) = match self.addressing {
            UdpAddressing::SendTo => {
                socket.send_to(payload.as_bytes(), self.addr).with_context(|| format!("send to {}", self.addr))?;
                socket.recv_from(&mut buf).with_context(|| format!("reply from {}", self.addr))?
            }
            UdpAddressing::Connected => {
                socket.send(payload.as_bytes()).with_context(|| format!("send to {}", self.addr))?;
                let n = socket.recv(&mut buf).with_context(|| format!("reply from {}", self.addr))?;
                (n, socket.peer_addr().context("getpeername")?)
            }
        };
        let backend = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        Ok((backend, from))
    }
}

impl ClientSpec for UdpLoad {
    fn args(&self) -> Vec<String> {
        let mut args = strings(&["client", "udp", "--addr", &self.addr.to_string()]);
        args.extend(strings(&["--requests", &self.requests.to_string()]));
        args.extend(strings(&["--timeout-ms", &millis(self.timeout).to_string()]));
        if self.sockets == UdpSockets::Shared {
            args.push("--same-socket".into());
        }
        if self.addressing == UdpAddressing::Connected {
            args.push("--connect".into());
        }
        args
    }

    fn deadline(&self) -> Duration {
        saturating_mul(self.timeout, self.requests).saturating_add(DEADLINE_SLACK)
    }
}

/// `client hold`: one keep-alive connection, a request every `interval`
/// for `duration`. It never reconnects: the first failure ends the run, so
/// a broken or re-balanced connection shows up as `failed` or as a second
/// name in `by_backend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldLoad {
    pub url: String,
    pub duration: Duration,
    pub interval: Duration,
    /// Per connect/read/write.
    pub timeout: Duration,
}

impl HoldLoad {
    /// Hold for `duration`, a request every 100 ms, 2 s timeout.
    pub fn new(url: impl Into<String>, duration: Duration) -> Self {
        Self { url: url.into(), duration, interval: Duration::from_millis(100), timeout: DEFAULT_TIMEOUT }
    }

    /// Parses the flags after `client hold`.
    ///
    /// # Errors
    /// On unknown, missing or malformed flags.
    pub fn parse(args: &[String]) -> Result<Self> {
        let f = Flags::parse(args, &["url", "ms", "interval-ms", "timeout-ms"], &[])?;
        Ok(Self {
            url: f.require("url")?,
            duration: Duration::from_millis(f.require("ms")?),
            interval: Duration::from_millis(f.get("interval-ms")?.unwrap_or(100)),
            timeout: timeout_flag(&f)?,
        })
    }

    /// Runs the hold.
    ///
    /// # Errors
    /// Only for a malformed URL.
    pub fn run(&self) -> Result<Summary> {
        let target = Target::parse(&self.url)?;
        let started = Instant::now();
        let mut summary = Summary::default();
        let interval = self.interval.max(Duration::from_millis(1));
        match Conn::open(&target, self.timeout) {
            Err(e) => summary.record_err(format!("{e:#}")),
            Ok(mut conn) => {
                summary.peer_addrs.insert(conn.peer.to_string());
                let mut tick = started;
                loop {
                    match conn.get(&target, Keepalive::On) {
                        Ok(answer) => {
                            summary.record_ok(&answer.backend);
                            summary.client_ips.extend(answer.client_ip);
                            if !answer.reusable {
                                summary.record_err("server closed the held connection");
                                break;
                            }
                        }
                        Err(e) => {
                            summary.record_err(format!("{e:#}"));
                            break;
                        }
                    }
                    tick += interval;
                    if tick.duration_since(started) >= self.duration {
                        break;
                    }
                    std::thread::sleep(tick.saturating_duration_since(Instant::now()));
                }
            }
        }
        summary.elapsed_ms = millis(started.elapsed());
        Ok(summary)
    }
}

impl ClientSpec for HoldLoad {
    fn args(&self) -> Vec<String> {
        let mut args = strings(&["client", "hold", "--url", &self.url]);
        args.extend(strings(&["--ms", &millis(self.duration).to_string()]));
        args.extend(strings(&["--interval-ms", &millis(self.interval).to_string()]));
        args.extend(strings(&["--timeout-ms", &millis(self.timeout).to_string()]));
        args
    }

    fn deadline(&self) -> Duration {
        self.duration.saturating_add(saturating_mul(self.timeout, 3)).saturating_add(DEADLINE_SLACK)
    }
}

/// Parses and runs a client command line (the arguments after `client`).
///
/// # Errors
/// On bad arguments.
pub fn run_args(args: &[String]) -> Result<Summary> {
    let Some((mode, rest)) = args.split_first() else {
        bail!("client needs a mode: http, udp or hold");
    };
    match mode.as_str() {
        "http" => HttpLoad::parse(rest)?.run(),
        "udp" => UdpLoad::parse(rest)?.run(),
        "hold" => HoldLoad::parse(rest)?.run(),
        other => bail!("unknown client mode {other:?} (want http, udp or hold)"),
    }
}

/// A parsed `http://IP[:PORT][/PATH]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    addr: SocketAddr,
    /// For the `Host` header.
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("{url:?}: only http:// URLs"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = match authority.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                let ip = authority.trim_start_matches('[').trim_end_matches(']');
                let ip = ip.parse().with_context(|| format!("{url:?}: host must be an IP literal"))?;
                SocketAddr::new(ip, 80)
            }
        };
        Ok(Self { addr, authority: authority.to_owned(), path: path.to_owned() })
    }
}

/// One client TCP connection.
struct Conn {
    reader: BufReader<TcpStream>,
    /// `getpeername`: what the socket thinks it is connected to.
    peer: SocketAddr,
}

/// What one response said.
struct Answer {
    backend: String,
    client_ip: Option<String>,
    /// False when the server said `Connection: close`.
    reusable: bool,
}

impl Conn {
    fn open(target: &Target, timeout: Duration) -> Result<Self> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream =
            TcpStream::connect_timeout(&target.addr, timeout).with_context(|| format!("connect {}", target.addr))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream.set_read_timeout(Some(timeout)).context("set read timeout")?;
        stream.set_write_timeout(Some(timeout)).context("set write timeout")?;
        let peer = stream.peer_addr().context("getpeername")?;
        Ok(Self { reader: BufReader::new(stream), peer })
    }

    fn get(&mut self, target: &Target, keepalive: Keepalive) -> Result<Answer> {
        let connection = match keepalive {
            Keepalive::On => "keep-alive",
            Keepalive::Off => "close",
        };
        let request =
            format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\n\r\n", target.path, target.authority);
        self.reader.get_mut().write_all(request.as_bytes()).with_context(|| format!("send to {}", target.addr))?;
        self.read_response().with_context(|| format!("response from {}", target.addr))
    }

    fn read_response(&mut self) -> Result<Answer> {
        let mut line = String::new();
        if self.read_line(&mut line)? == 0 {
            bail!("connection closed before a response");
        }
        let status = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut content_length = None;
        let mut client_ip = None;
        let mut reusable = true;
        let mut headers = 0;
        loop {
            line.clear();
            if self.read_line(&mut line)? == 0 {
                bail!("connection closed inside the response head");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            headers += 1;
            if headers > MAX_HEADERS {
                bail!("too many response headers");
            }
            let Some((key, value)) = header.split_once(':') else { continue };
            let value = value.trim();
            if key.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse::<u64>().context("bad Content-Length")?);
            } else if key.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                reusable = false;
            } else if key.eq_ignore_ascii_case("x-client-addr") {
                client_ip = value.parse::<SocketAddr>().ok().map(|a| a.ip().to_string());
            }
        }
        let len = content_length.ok_or_else(|| anyhow!("response without Content-Length"))?;
        if len > MAX_BODY {
            bail!("response body of {len} bytes is too large");
        }
        let mut body = Vec::new();
        (&mut self.reader).take(len).read_to_end(&mut body).context("read body")?;
        if body.len() as u64 != len {
            bail!("body truncated: {} of {len} bytes", body.len());
        }
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        if status != "200" {
            bail!("HTTP {status}: {body}");
        }
        Ok(Answer { backend: body, client_ip, reusable })
    }

    fn read_line(&mut self, line: &mut String) -> Result<usize> {
        let n = (&mut self.reader).take(8 * 1024).read_line(line).context("read")?;
        Ok(n)
    }
}

fn timeout_flag(f: &Flags) -> Result<Duration> {
    Ok(f.get("timeout-ms")?.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn saturating_mul(d: Duration, n: u64) -> Duration {
    d.checked_mul(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_args() {
        let http = HttpLoad {
            concurrency: 8,
            keepalive: Keepalive::On,
            timeout: Duration::from_millis(500),
            ..HttpLoad::new("http://198.19.0.1:80/slow?ms=5", 100)
        };
        let args = http.args();
        assert_eq!(&args[..2], ["client", "http"]);
        assert_eq!(HttpLoad::parse(&args[2..]).unwrap(), http);

        let udp = UdpLoad {
            sockets: UdpSockets::Shared,
            addressing: UdpAddressing::Connected,
            ..UdpLoad::new("198.19.0.1:53".parse().unwrap(), 7)
        };
        let args = udp.args();
        assert_eq!(UdpLoad::parse(&args[2..]).unwrap(), udp);

        let hold = HoldLoad::new("http://198.19.0.1/", Duration::from_millis(1500));
        let args = hold.args();
        assert_eq!(HoldLoad::parse(&args[2..]).unwrap(), hold);
    }

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://198.19.0.1:8080/slow?ms=3").unwrap();
        assert_eq!(t.addr, "198.19.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/slow?ms=3");
        let t = Target::parse("http://198.19.0.1").unwrap();
        assert_eq!(t.addr, "198.19.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = Target::parse("http://[2001:2::1]:81/").unwrap();
        assert_eq!(t.addr, "[2001:2::1]:81".parse().unwrap());
        assert!(Target::parse("https://198.19.0.1/").is_err());
        assert!(Target::parse("http://example.com/").is_err());
    }

    #[test]
    fn deadlines_are_bounded_and_cover_the_run() {
        let http = HttpLoad { concurrency: 10, ..HttpLoad::new("http://198.19.0.1/", 100) };
        assert_eq!(http.deadline(), DEFAULT_TIMEOUT * 3 * 10 + DEADLINE_SLACK);
        let huge = HttpLoad::new("http://198.19.0.1/", u64::MAX);
        assert!(huge.deadline() > Duration::from_secs(3600));
    }
}
