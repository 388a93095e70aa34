//! `serve`: HTTP/1.1 and UDP echo on one port, with switches for health and
//! readiness.
//!
//! # Design
//! One thread per TCP connection (at most [`MAX_CONNECTIONS`]), one for
//! UDP. Routes, all `GET` (or `HEAD`):
//! - `/` → `200 <POD_NAME or hostname> <local address of the socket>\n`
//! - `/healthz` → `200 ok` or, after `/fail`, `500 failing` (`/recover`
//!   undoes); `/fail` also deletes `/tmp/healthy`, created at start and by
//!   `/recover`, so `cat /tmp/healthy` works as an exec probe
//! - `/readyz` → `200 ready` or, after `/unready`, `503 not ready`
//!   (`/ready` undoes)
//!
//! One line on stdout at start (`listening on ...`) and one per request, so
//! log tests have something to read. Keep-alive as HTTP/1.1 says
//! (`Connection: close` honoured; HTTP/1.0 closes).
//!
//! # Limitations
//! Request bodies are skipped (by `Content-Length`, capped), never read;
//! no chunked encoding. Idle connections close after 60 s.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 512;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_PORT: u16 = 8080;
/// Exists while healthy, for exec probes.
const HEALTH_FILE: &str = "/tmp/healthy";

struct State {
    name: String,
    failing: AtomicBool,
    unready: AtomicBool,
    connections: AtomicUsize,
}

/// Binds, prints `listening on ...`, serves until killed.
pub fn run(port: Option<u16>) -> Result<(), String> {
    let port = match port {
        Some(p) => p,
        None => match std::env::var("PORT") {
            Ok(p) => p.parse().map_err(|_| format!("PORT={p:?} is not a port number"))?,
            Err(_) => DEFAULT_PORT,
        },
    };
    let name = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(hostname);
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind tcp {addr}: {e}"))?;
    let udp = UdpSocket::bind(addr).map_err(|e| format!("bind udp {addr}: {e}"))?;
    let state = Arc::new(State {
        name,
        failing: AtomicBool::new(false),
        unready: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
    });
    set_health_file(true);
    std::thread::spawn(move || udp_echo(&udp));
    println!("listening on {addr} (tcp, udp) as {}", state.name);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if state.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            state.connections.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let conn_state = state.clone();
        let spawned = std::thread::Builder::new().spawn(move || {
            // Errors end the connection; the client sees that.
            let _ = serve_connection(&conn_state, stream);
            conn_state.connections.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            // Out of threads (a pids limit): drop this connection, keep
            // serving the others.
            state.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
    Ok(())
}

fn set_health_file(healthy: bool) {
    let result = if healthy { std::fs::write(HEALTH_FILE, "ok\n") } else { std::fs::remove_file(HEALTH_FILE) };
    if let Err(e) = result {
        eprintln!("{}: {HEALTH_FILE}: {e}", crate::NAME);
    }
}

fn udp_echo(socket: &UdpSocket) {
    let mut buf = [0u8; 65_536];
    loop {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    }
}

fn serve_connection(state: &State, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some(request) = read_request(&mut reader)? else { return Ok(()) };
        let (status, body) = route(state, &request, local);
        println!("{peer} {} {} -> {status}", request.method, request.path);
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            _ => "Service Unavailable",
        };
        let connection = if request.keep_alive { "keep-alive" } else { "close" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            body.len()
        );
        writer.write_all(head.as_bytes())?;
        if request.method != "HEAD" {
            writer.write_all(body.as_bytes())?;
        }
        writer.flush()?;
        if !request.keep_alive {
            return Ok(());
        }
    }
}

struct Request {
    method: String,
    path: String,
    keep_alive: bool,
}

/// One request head (body skipped); `None` at a clean end of stream.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let Some(line) = read_line(reader)? else { return Ok(None) };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut body = 0u64;
    for _ in 0..=MAX_HEADERS {
        let Some(header) = read_line(reader)? else { return Ok(None) };
        if header.is_empty() {
            io::copy(&mut reader.by_ref().take(body.min(MAX_BODY)), &mut io::sink())?;
            let path = target.split('?').next().unwrap_or(target).to_owned();
            return Ok(Some(Request { method: method.to_owned(), path, keep_alive }));
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            keep_alive = if value.eq_ignore_ascii_case("close") {
                false
            } else {
                keep_alive || value.eq_ignore_ascii_case("keep-alive")
            };
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().unwrap_or(0);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "too many headers"))
}

/// A line without its CRLF, at most [`MAX_LINE`] bytes; `None` at end of
/// stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long or cut short"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn route(state: &State, request: &Request, local: SocketAddr) -> (u16, String) {
    if request.method != "GET" && request.method != "HEAD" {
        return (405, "GET only\n".into());
    }
    let flag = |flag: &AtomicBool, on: bool| flag.store(on, Ordering::Release);
    match request.path.as_str() {
        "/" => (200, format!("{} {local}\n", state.name)),
        "/healthz" if state.failing.load(Ordering::Acquire) => (500, "failing\n".into()),
        "/healthz" => (200, "ok\n".into()),
        "/fail" => {
            flag(&state.failing, true);
            set_health_file(false);
            (200, "failing\n".into())
        }
        "/recover" => {
            flag(&state.failing, false);
            set_health_file(true);
            (200, "ok\n".into())
        }
        "/readyz" if state.unready.load(Ordering::Acquire) => (503, "not ready\n".into()),
        "/readyz" => (200, "ready\n".into()),
        "/unready" => {
            flag(&state.unready, true);
            (200, "not ready\n".into())
        }
        "/ready" => {
            flag(&state.unready, false);
            (200, "ready\n".into())
        }
        _ => (404, "not found\n".into()),
    }
}

/// The UTS hostname (the pod name in a pod's UTS namespace).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes
    // at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}
