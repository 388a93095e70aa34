//! Container probes: one probe run ([`run_once`]) and kubelet's per-probe
//! state machine ([`run_worker`]).
//!
//! # Design
//! [`run_once`] performs one check, as `pkg/probe/{http,tcp,exec}` do:
//! - **httpGet**: a plain HTTP/1.1 `GET` to `pod_ip:port` over a tokio
//!   `TcpStream`, with kubelet's headers (`Host: ip:port`,
//!   `User-Agent: kube-probe/1.34`, `Accept: */*`, `Connection: close`;
//!   the manifest's headers override the first three). Status 200..=399
//!   succeeds. Like kubelet's client, redirects (301, 302, 303, 307, 308)
//!   to the same host are followed, at most 10 requests in all; a redirect
//!   to another host is not followed and counts as success (kubelet's
//!   "Probe terminated redirects" warning). At most 10 KiB of body is read,
//!   for the failure message only. One `timeout` bounds the whole probe.
//! - **tcpSocket**: connect within `timeout`, then close.
//! - **exec**: through [`ExecProbe`]; exit code 0 succeeds, a timeout fails.
//!
//! [`run_worker`] is kubelet's `prober/worker.go` for one container run:
//! it publishes a [`ProbeState`] on a `watch` channel, starting at kubelet's
//! initial value (readiness `Failure`, liveness `Success`, startup
//! `Unknown`), probes first at `started_at + initial_delay` and then every
//! `period`, and flips the result only after `success_threshold`
//! consecutive successes or `failure_threshold` consecutive failures.
//! Liveness and readiness are gated on the startup probe's `Success`; the
//! readiness worker probes at once when the gate opens (kubelet's manual
//! trigger). A startup success ends the startup worker; a liveness or
//! startup failure ends its worker with [`WorkerExit::Failed`], since the
//! container is then restarted and the next run gets new workers (kubelet
//! puts the worker "on hold" until a new container id appears).
//!
//! Time is tokio's, so tests drive the state machine with paused time.
//!
//! # Limitations
//! - HTTP only: `scheme: HTTPS` and gRPC probes are rejected by the
//!   manifest parser; a same-host redirect to `https://` is treated like a
//!   redirect to another host (success) instead of being followed over TLS.
//! - Responses are parsed just enough for probing: status line, headers,
//!   `Content-Length` or chunked framing; no keep-alive, no compression.
//! - kubelet waits for the first tick of its own ticker after the initial
//!   delay, and starts its ticker at a random offset after a kubelet
//!   restart; berth probes exactly at `started_at + initial_delay`.
//! - Like kubelet, a probe that *errors* (the exec machinery itself fails,
//!   or the HTTP body cannot be read) is retried up to 3 times and then
//!   discarded: it counts neither as a success nor as a failure.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

#[cfg(test)]
mod tests;

/// kubelet's default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// kubelet's default `periodSeconds`.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// kubelet's default `successThreshold`.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// kubelet's default `failureThreshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The `User-Agent` kubelet 1.34 sends.
pub const USER_AGENT: &str = "kube-probe/1.34";
/// kubelet reads at most this much of a response body or exec output.
pub const MAX_OUTPUT: usize = 10 * 1024;
/// kubelet's client gives up after this many requests of one redirect chain.
const MAX_REQUESTS: usize = 10;
/// kubelet's `maxProbeRetries`: an errored probe is retried this often.
const MAX_PROBE_RETRIES: usize = 3;
/// Response heads larger than this are refused.
const MAX_HEAD: usize = 64 * 1024;

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// The result before the first probe, as kubelet sets it.
    pub fn initial_result(self) -> ProbeResult {
        match self {
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }
}

impl fmt::Display for ProbeKind {
    /// `Liveness`, as kubelet's events say ("Liveness probe failed: …").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        })
    }
}

/// A validated probe with kubelet's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub timeout: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe-level `terminationGracePeriodSeconds` (liveness and
    /// startup only): the grace used when this probe's failure kills the
    /// container, instead of the pod's.
    pub termination_grace: Option<Duration>,
}

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeAction {
    /// `GET http://<pod ip>:<port><path>`. `path` is the request target as
    /// sent (starts with `/`, percent-encoded, may carry a query).
    HttpGet {
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// The check failed; the message is what kubelet would report.
    Failure(String),
    /// The probe could not be run at all. kubelet discards such results
    /// after retrying; so does [`run_worker`].
    Error(String),
}

/// What an exec probe's command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    /// Combined stdout and stderr; [`run_once`] keeps the first 10 KiB.
    pub output: String,
}

/// Runs a command inside the container (the runtime's exec).
pub trait ExecProbe: Send + Sync {
    /// Runs `argv` in the container and waits at most `timeout`.
    /// [`run_once`] also drops the future at `timeout`, so an
    /// implementation must kill the command when dropped.
    ///
    /// # Errors
    /// A message when the command could not be run at all (not for a
    /// non-zero exit).
    fn exec<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<ExecResult, String>>;
}

/// Runs one probe once against `pod_ip`.
pub async fn run_once(action: &ProbeAction, pod_ip: Ipv4Addr, timeout: Duration, exec: &dyn ExecProbe) -> ProbeOutcome {
    match action {
        ProbeAction::HttpGet { port, path, headers } => http_get(pod_ip, *port, path, headers, timeout).await,
        ProbeAction::TcpSocket { port } => tcp_connect(pod_ip, *port, timeout).await,
        ProbeAction::Exec { command } => match tokio::time::timeout(timeout, exec.exec(command, timeout)).await {
            Ok(Ok(result)) if result.exit_code == 0 => ProbeOutcome::Success,
            Ok(Ok(result)) => ProbeOutcome::Failure(truncate(result.output)),
            Ok(Err(message)) => ProbeOutcome::Error(message),
            Err(_) => ProbeOutcome::Failure(format!("command {:?} timed out", command.join(" "))),
        },
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

async fn tcp_connect(ip: Ipv4Addr, port: u16, timeout: Duration) -> ProbeOutcome {
    let addr = SocketAddrV4::new(ip, port);
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => ProbeOutcome::Success,
        Ok(Err(e)) => ProbeOutcome::Failure(format!("dial tcp {addr}: {e}")),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

// ---- HTTP ------------------------------------------------------------------

/// Where one request of a redirect chain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    port: u16,
    /// Request target: `/path?query`.
    path: String,
    /// An explicit `Host` header, kept across relative redirects only (as
    /// Go's client does).
    host: Option<String>,
}

/// What a `Location` header leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Redirect {
    /// Same host, plain HTTP: followed.
    Local(Target),
    /// Another host, or a scheme berth does not speak: not followed.
    Elsewhere,
}

async fn http_get(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    // Go's `Header.Get`: the first value.
    let host = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")).map(|(_, v)| v.clone());
    let first = Target { port, path: path.to_owned(), host };
    follow(ip, first, headers, Instant::now() + timeout).await
}

async fn follow(ip: Ipv4Addr, mut target: Target, headers: &[(String, String)], deadline: Instant) -> ProbeOutcome {
    let mut requests = 0;
    loop {
        requests += 1;
        let url = format!("http://{ip}:{}{}", target.port, target.path);
        let response = match exchange(ip, &target, headers, deadline).await {
            Ok(r) => r,
            Err(Exchange::Failed(e)) => return ProbeOutcome::Failure(format!("Get \"{url}\": {e}")),
            Err(Exchange::Body(e)) => return ProbeOutcome::Error(format!("Get \"{url}\": reading body: {e}")),
        };
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 => response.location.as_deref(),
            _ => None,
        };
        if let Some(location) = location {
            match resolve_redirect(location, &target, ip) {
                Redirect::Elsewhere => return ProbeOutcome::Success,
                Redirect::Local(_) if requests >= MAX_REQUESTS => {
                    return ProbeOutcome::Failure(format!("Get \"{location}\": stopped after 10 redirects"));
                }
                Redirect::Local(next) => {
                    target = next;
                    continue;
                }
            }
        }
        return if (200..400).contains(&response.status) {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {}", response.status))
        };
    }
}

/// A parsed response: what probing needs of it.
/// The body is read (bounded) as kubelet does, then dropped: only the
/// status decides.
#[derive(Debug)]
struct Response {
    status: u16,
    location: Option<String>,
}

enum Exchange {
    /// No usable response: kubelet's client error, a probe failure.
    Failed(String),
    /// The head arrived but the body did not: kubelet's read error, which
    /// discards the probe.
    Body(String),
}

/// One request and its response, all before `deadline` (the probe's
/// timeout). Like Go's client, running out of time before the head is a
/// failure, and while reading the body an error.
async fn exchange(
    ip: Ipv4Addr,
    target: &Target,
    headers: &[(String, String)],
    deadline: Instant,
) -> Result<Response, Exchange> {
    let Ok(head) = tokio::time::timeout_at(deadline, request_head(ip, target, headers)).await else {
        return Err(Exchange::Failed(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".to_owned(),
        ));
    };
    let (mut stream, status, fields, buf) = head?;
    let location = field(&fields, "location").map(str::to_owned);
    // Go's transport rejects a malformed length with the head: a failure.
    let content_length = match field(&fields, "content-length") {
        Some(len) => {
            Some(len.trim().parse::<usize>().map_err(|_| Exchange::Failed(format!("bad Content-Length {len:?}")))?)
        }
        None => None,
    };
    let body = async {
        if status == 204 || status == 304 || (100..200).contains(&status) {
            // No body.
            Ok(())
        } else if field(&fields, "transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
            read_chunked(&mut stream, buf).await.map(drop)
        } else if let Some(len) = content_length {
            read_exact_bounded(&mut stream, buf, len).await.map(drop)
        } else {
            read_to_end_bounded(&mut stream, buf).await.map(drop)
        }
    };
    match tokio::time::timeout_at(deadline, body).await {
        Ok(Ok(())) => Ok(Response { status, location }),
        Ok(Err(e)) => Err(Exchange::Body(e)),
        Err(_) => Err(Exchange::Body(
            "context deadline exceeded (Client.Timeout or context cancellation while reading body)".to_owned(),
        )),
    }
}

type Head = (TcpStream, u16, Vec<(String, String)>, Vec<u8>);

/// Connects, sends the request and reads the final response head; returns
/// the stream, the status, the header fields and what was read past them.
async fn request_head(ip: Ipv4Addr, target: &Target, headers: &[(String, String)]) -> Result<Head, Exchange> {
    let addr = SocketAddrV4::new(ip, target.port);
    let mut stream = TcpStream::connect(addr).await.map_err(|e| Exchange::Failed(format!("dial tcp {addr}: {e}")))?;
    let request = request_bytes(ip, target, headers);
    stream.write_all(&request).await.map_err(|e| Exchange::Failed(format!("write: {e}")))?;

    let mut buf = Vec::with_capacity(1024);
    let (status, head) = loop {
        let end = read_head(&mut stream, &mut buf).await?;
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| Exchange::Failed("malformed HTTP response: head is not UTF-8".to_owned()))?
            .to_owned();
        buf.drain(..end);
        let status = parse_status(&head)?;
        // Informational responses precede the real one (101 is final).
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, head);
    };
    Ok((stream, status, parse_fields(&head), buf))
}

fn request_bytes(ip: Ipv4Addr, target: &Target, headers: &[(String, String)]) -> Vec<u8> {
    use std::fmt::Write as _;
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let host = target.host.clone().unwrap_or_else(|| format!("{ip}:{}", target.port));
    let mut req = String::new();
    // Writing to a String cannot fail.
    let _ = write!(req, "GET {} HTTP/1.1\r\nHost: {host}\r\n", target.path);
    if !has("user-agent") {
        let _ = write!(req, "User-Agent: {USER_AGENT}\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    let mut close = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        // kubelet drops an Accept header overridden with an empty value,
        // and Go's client sends no empty User-Agent.
        if value.is_empty() && (name.eq_ignore_ascii_case("accept") || name.eq_ignore_ascii_case("user-agent")) {
            continue;
        }
        if name.eq_ignore_ascii_case("connection") && value.to_ascii_lowercase().contains("close") {
            close = true;
        }
        let _ = write!(req, "{}: {value}\r\n", canonical_header(name));
    }
    if !close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Go's `CanonicalMIMEHeaderKey`, which kubelet's headers go through:
/// `x-probe` is sent as `X-Probe`.
fn canonical_header(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// Reads until `buf` holds a complete head; returns its length including
/// the blank line.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, Exchange> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(Exchange::Failed(format!("response head larger than {MAX_HEAD} bytes")));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| Exchange::Failed(format!("read: {e}")))?;
        if n == 0 {
            return Err(Exchange::Failed("EOF before a complete response head".to_owned()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_status(head: &str) -> Result<u16, Exchange> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(Exchange::Failed(format!("malformed HTTP response {line:?}")));
    }
    code.parse().map_err(|_| Exchange::Failed(format!("malformed HTTP status code {code:?}")))
}

fn parse_fields(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

async fn read_exact_bounded(stream: &mut TcpStream, mut body: Vec<u8>, len: usize) -> Result<Vec<u8>, String> {
    let want = len.min(MAX_OUTPUT);
    while body.len() < want {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("unexpected EOF".to_owned());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(want);
    Ok(body)
}

async fn read_to_end_bounded(stream: &mut TcpStream, mut body: Vec<u8>) -> Result<Vec<u8>, String> {
    while body.len() < MAX_OUTPUT {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(MAX_OUTPUT);
    Ok(body)
}

/// Decodes a chunked body until its last chunk or [`MAX_OUTPUT`] bytes.
async fn read_chunked(stream: &mut TcpStream, mut raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        // Size line.
        let line_end = loop {
            if let Some(i) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + i;
            }
            if raw.len() - pos > 1024 {
                return Err("chunk size line too long".to_owned());
            }
            fill(stream, &mut raw).await?;
        };
        let line = std::str::from_utf8(&raw[pos..line_end]).map_err(|_| "bad chunk size".to_owned())?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        pos = line_end + 2;
        if size == 0 {
            return Ok(body);
        }
        let take = size.min(MAX_OUTPUT - body.len());
        while raw.len() - pos < take {
            fill(stream, &mut raw).await?;
        }
        body.extend_from_slice(&raw[pos..pos + take]);
        if body.len() >= MAX_OUTPUT {
            return Ok(body);
        }
        pos += size;
        // Chunk data and its CRLF.
        while raw.len() < pos + 2 {
            fill(stream, &mut raw).await?;
        }
        pos += 2;
    }
}

async fn fill(stream: &mut TcpStream, raw: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("unexpected EOF in chunked body".to_owned());
    }
    raw.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Where `location` leads from `current` (RFC 3986 reference resolution,
/// simplified: dot segments are left to the server).
fn resolve_redirect(location: &str, current: &Target, ip: Ipv4Addr) -> Redirect {
    let location = location.split('#').next().unwrap_or_default();
    let lower = location.to_ascii_lowercase();
    let absolute = if lower.starts_with("http://") {
        Some(&location["http://".len()..])
    } else if lower.starts_with("//") {
        Some(&location["//".len()..])
    } else if lower.split(['/', '?']).next().is_some_and(|first| first.contains(':')) {
        // Another scheme (https, ftp …): not followed.
        return Redirect::Elsewhere;
    } else {
        None
    };
    if let Some(rest) = absolute {
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (hostname, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        };
        // Go's check compares URL.Hostname(): the host without the port.
        if hostname != ip.to_string() {
            return Redirect::Elsewhere;
        }
        let port = match port {
            "" => 80,
            p => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Redirect::Elsewhere,
            },
        };
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        return Redirect::Local(Target { port, path, host: None });
    }
    let base = current.path.split('?').next().unwrap_or("/");
    let path = if location.starts_with('/') {
        location.to_owned()
    } else if location.is_empty() {
        current.path.clone()
    } else if location.starts_with('?') {
        format!("{base}{location}")
    } else {
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        if dir.is_empty() { format!("/{location}") } else { format!("{dir}{location}") }
    };
    // A custom Host survives relative redirects only.
    Redirect::Local(Target { port: current.port, path, host: current.host.clone() })
}

// ---- The worker ------------------------------------------------------------

/// kubelet's probe result (`prober/results`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// What a worker publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeState {
    pub result: ProbeResult,
    /// The output of the probe that set a `Failure`.
    pub message: Option<String>,
}

impl ProbeState {
    pub fn initial(kind: ProbeKind) -> Self {
        Self { result: kind.initial_result(), message: None }
    }
}

/// Why [`run_worker`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerExit {
    /// The startup probe succeeded; it does not run again for this
    /// container.
    Started,
    /// A liveness or startup probe reached its failure threshold: the
    /// container must be killed (and restarted as its policy says).
    Failed { message: String },
    /// Every receiver of the state was dropped.
    Closed,
}

/// One probe run, abstracted so the worker can be tested without a network.
pub trait Prober: Send + Sync {
    fn probe<'a>(&'a self, action: &'a ProbeAction, timeout: Duration) -> BoxFuture<'a, ProbeOutcome>;
}

/// The real prober: [`run_once`] against the pod's IP.
pub struct NetProber {
    pub pod_ip: Ipv4Addr,
    pub exec: Arc<dyn ExecProbe>,
}

impl Prober for NetProber {
    fn probe<'a>(&'a self, action: &'a ProbeAction, timeout: Duration) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(run_once(action, self.pod_ip, timeout, self.exec.as_ref()))
    }
}

/// Runs one probe of one container run, kubelet's way (see the module
/// docs), publishing on `tx`. `started_at` is when the container started;
/// `startup` is the startup worker's state when the container has a
/// startup probe (liveness and readiness wait for its `Success`). Cancel by
/// dropping the future or every receiver.
pub async fn run_worker(
    kind: ProbeKind,
    spec: ProbeSpec,
    prober: Arc<dyn Prober>,
    started_at: Instant,
    startup: Option<watch::Receiver<ProbeState>>,
    tx: watch::Sender<ProbeState>,
) -> WorkerExit {
    tx.send_replace(ProbeState::initial(kind));
    // The startup probe is never gated on itself.
    let mut gate = if kind == ProbeKind::Startup { None } else { startup };
    let open = |gate: &Option<watch::Receiver<ProbeState>>| {
        gate.as_ref().is_none_or(|g| g.borrow().result == ProbeResult::Success)
    };
    let mut gate_alive = gate.is_some();

    // A zero period would spin; the parser never produces one.
    let period = spec.period.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(started_at + spec.initial_delay, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);

    let mut last: Option<ProbeResult> = None;
    let mut run = 0u32;
    loop {
        let waiting_for_gate = gate_alive && !open(&gate);
        tokio::select! {
            _ = ticker.tick() => {
                if !open(&gate) {
                    continue;
                }
            }
            changed = async {
                match gate.as_mut() {
                    Some(g) => g.changed().await,
                    None => std::future::pending().await,
                }
            }, if waiting_for_gate => {
                if changed.is_err() {
                    // The startup worker is gone without success: this run
                    // will be killed; wait to be cancelled.
                    gate_alive = false;
                    continue;
                }
                if !open(&gate) || kind != ProbeKind::Readiness {
                    continue;
                }
                // kubelet triggers a readiness probe as soon as the
                // container counts as started, unless still in the delay.
                if Instant::now() < started_at + spec.initial_delay {
                    continue;
                }
                ticker.reset();
            }
            _ = tx.closed() => return WorkerExit::Closed,
        }

        let mut outcome = ProbeOutcome::Error(String::new());
        for _ in 0..MAX_PROBE_RETRIES {
            outcome = prober.probe(&spec.action, spec.timeout).await;
            if !matches!(outcome, ProbeOutcome::Error(_)) {
                break;
            }
        }
        let (result, message) = match outcome {
            ProbeOutcome::Success => (ProbeResult::Success, None),
            ProbeOutcome::Failure(m) => (ProbeResult::Failure, Some(m)),
            ProbeOutcome::Error(_) => continue,
        };
        if last == Some(result) {
            run = run.saturating_add(1);
        } else {
            last = Some(result);
            run = 1;
        }
        let threshold = match result {
            ProbeResult::Success => spec.success_threshold,
            _ => spec.failure_threshold,
        };
        if run < threshold {
            continue;
        }
        tx.send_if_modified(|state| {
            let changed = state.result != result;
            *state = ProbeState { result, message: message.clone() };
            changed
        });
        match (kind, result) {
            (ProbeKind::Startup, ProbeResult::Success) => return WorkerExit::Started,
            (ProbeKind::Liveness | ProbeKind::Startup, ProbeResult::Failure) => {
                return WorkerExit::Failed { message: message.unwrap_or_default() };
            }
            _ => {}
        }
    }
}
