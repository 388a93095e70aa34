//! `berth-test-server serve`: a small HTTP/1.1 + UDP backend that names
//! itself in every answer.
//!
//! # Design
//! std only, one thread per TCP connection (capped), keep-alive by default
//! as HTTP/1.1 says. Routes: `GET /` answers `NAME\n`; `GET /slow?ms=N`
//! sleeps N ms (capped at 60 s) first, for long-lived connection tests;
//! `GET /healthz` answers `ok\n`. Every response carries `X-Backend: NAME`
//! and `X-Client-Addr: IP:PORT` (the peer the server saw, to check
//! source-IP preservation). UDP replies `NAME\n` to each datagram from the
//! bound socket. `ready` is printed on stdout once every socket is bound.
//!
//! # Limitations
//! No request bodies beyond skipping `Content-Length` bytes, no chunked
//! encoding, GET only. Idle keep-alive connections close after 120 s.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::flags::Flags;

/// Concurrent TCP connections served; more are closed at once.
const MAX_CONNECTIONS: usize = 4096;
/// Idle time after which a keep-alive connection is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for `/slow?ms=N`.
const MAX_SLOW: Duration = Duration::from_secs(60);
/// Bounds on a request head, so a broken client cannot grow memory.
const MAX_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 100;
/// Bound on a request body we skip.
const MAX_BODY: u64 = 1024 * 1024;

/// Arguments of `serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeArgs {
    /// Named in every answer; tests count answers per name.
    pub name: String,
    pub http: SocketAddr,
    pub udp: Option<SocketAddr>,
}

impl ServeArgs {
    /// Parses `--name NAME --http ADDR:PORT [--udp ADDR:PORT]`.
    ///
    /// # Errors
    /// On unknown, missing or malformed flags.
    pub fn parse(args: &[String]) -> Result<Self> {
        let f = Flags::parse(args, &["name", "http", "udp"], &[])?;
        let name: String = f.require("name")?;
        if name.is_empty() || name.contains(['\r', '\n']) {
            bail!("--name must be non-empty and on one line");
        }
        Ok(Self { name, http: f.require("http")?, udp: f.get("udp")? })
    }

    /// The arguments after `serve`, inverse of [`ServeArgs::parse`].
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--name".into(), self.name.clone(), "--http".into(), self.http.to_string()];
        if let Some(udp) = self.udp {
            args.extend(["--udp".into(), udp.to_string()]);
        }
        args
    }
}

/// Binds, prints `ready`, and serves until killed.
///
/// # Errors
/// If a socket cannot be bound; never returns otherwise.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let name: Arc<str> = Arc::from(args.name.as_str());
    let listener = TcpListener::bind(args.http).with_context(|| format!("bind tcp {}", args.http))?;
    let udp = args.udp.map(|addr| UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))).transpose()?;
    if let Some(socket) = udp {
        let name = Arc::clone(&name);
        std::thread::Builder::new().name("udp".into()).spawn(move || serve_udp(&socket, &name)).context("spawn")?;
    }
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ready").and_then(|()| out.flush()).context("print ready")?;
    }
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let name = Arc::clone(&name);
        let active = Arc::clone(&active);
        let spawned = std::thread::Builder::new().spawn(move || {
            // Errors here are the client's business (resets, timeouts).
            let _ = serve_connection(stream, &name);
            active.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            eprintln!("spawn connection thread: {e}");
        }
    }
    Ok(())
}

fn serve_udp(socket: &UdpSocket, name: &str) {
    let reply = format!("{name}\n");
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                if let Err(e) = socket.send_to(reply.as_bytes(), peer) {
                    eprintln!("udp reply to {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("udp recv: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One parsed request head.
struct Request {
    method: String,
    target: String,
    keep_alive: bool,
}

fn serve_connection(stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(req) = read_request(&mut reader)? {
        let (status, body) = respond(&req, name);
        let connection = if req.keep_alive { "keep-alive" } else { "close" };
        // One write per response: with Nagle off this is one segment.
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\
             X-Client-Addr: {peer}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
        if !req.keep_alive {
            break;
        }
    }
    Ok(())
}

fn respond(req: &Request, name: &str) -> (&'static str, String) {
    if req.method != "GET" {
        return ("405 Method Not Allowed", "GET only\n".into());
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    match path {
        "/" => ("200 OK", format!("{name}\n")),
        "/healthz" => ("200 OK", "ok\n".into()),
        "/slow" => {
            let ms = query.split('&').find_map(|kv| kv.strip_prefix("ms=")).and_then(|v| v.parse::<u64>().ok());
            match ms {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms).min(MAX_SLOW));
                    ("200 OK", format!("{name}\n"))
                }
                None => ("400 Bad Request", "want /slow?ms=N\n".into()),
            }
        }
        _ => ("404 Not Found", "not found\n".into()),
    }
}

/// Reads one request head and skips its body. `None` on a clean EOF
/// between requests.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if read_line(reader, &mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut keep_alive = version == "HTTP/1.1";
    let mut body_len = 0u64;
    for _ in 0..=MAX_HEADERS {
        line.clear();
        if read_line(reader, &mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            io::copy(&mut reader.by_ref().take(body_len.min(MAX_BODY)), &mut io::sink())?;
            return Ok(Some(Request { method, target, keep_alive }));
        }
        let Some((key, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if key.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if key.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "too many headers"))
}

/// `read_line` bounded to [`MAX_LINE`] bytes.
fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<usize> {
    let n = reader.by_ref().take(MAX_LINE).read_line(line)?;
    if n as u64 == MAX_LINE && !line.ends_with('\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    #[test]
    fn serve_args_round_trip() {
        let args = ServeArgs { name: "b0".into(), http: "198.18.1.2:8080".parse().unwrap(), udp: None };
        assert_eq!(ServeArgs::parse(&args.to_args()).unwrap(), args);
        let args = ServeArgs { udp: Some("198.18.1.2:9090".parse().unwrap()), ..args };
        assert_eq!(ServeArgs::parse(&args.to_args()).unwrap(), args);
    }
}
