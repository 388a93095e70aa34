//! `berth-bench-server`: the static HTTP/1.1 responder behind every e2e
//! peer. The same binary and settings for every peer, so the backends are
//! never what differs between two rows.
//!
//! ```text
//! berth-bench-server [--listen 0.0.0.0:8080] [--threads N] [--name b0] [--netns PATH]...
//! ```
//!
//! # Design
//! One listener per thread on the same port (`SO_REUSEPORT`), each driven by
//! its own current-thread tokio runtime: the kernel spreads connections over
//! the threads and no task ever migrates. `--threads` defaults to the number
//! of CPUs, so one backend alone (the `direct` peer) can use the whole
//! machine, as four can. Every request gets the same small `200 OK`;
//! requests on one connection are answered in order, a pipelined batch with
//! one write. `Connection: close` (or HTTP/1.0 without `keep-alive`) gets
//! `Connection: close` back and the server closes after the response, so the
//! server side holds TIME_WAIT, as a real server would.
//!
//! With `--netns` (repeatable) one process serves several backends: it
//! binds the listen address inside each namespace and the same worker
//! threads serve them all. The e2e bench runs it that way, so whether a
//! load balancer spreads 32 connections over 4 backends or `direct` sends
//! them all to one, the same 2 threads serve the same 32 connections with
//! the same batching per wake-up; only the path in between differs.
//!
//! Prints `ready` on stdout once every listener is bound.
//!
//! # Limitations
//! Request bodies are skipped by `Content-Length` only (no chunked bodies);
//! a request head over 64 KiB closes the connection. Plain HTTP, IPv4/IPv6.

use std::{
    fs::File,
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request head (or pipelined batch of heads) buffered.
const MAX_HEAD: usize = 64 * 1024;
const BODY: &str = "ok\n";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    threads: usize,
    name: String,
    /// Listen inside each of these network namespaces (bind mounts such as
    /// `/var/run/netns/NAME`); empty = the process's own.
    netns: Vec<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        threads: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        name: "backend".to_owned(),
        netns: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => args.listen = value.parse().with_context(|| format!("--listen {value}"))?,
            "--threads" => args.threads = value.parse().with_context(|| format!("--threads {value}"))?,
            "--name" => args.name = value,
            "--netns" => args.netns.push(PathBuf::from(value)),
            other => {
                bail!("unknown flag {other} (expected --listen ADDR:PORT, --threads N, --name NAME, --netns PATH)")
            }
        }
    }
    if args.threads == 0 || args.threads > 64 {
        bail!("--threads {} out of range (1-64)", args.threads);
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Bind every listener before announcing readiness, so a client that
    // connects after `ready` always finds one.
    let listeners = bind_all(&args)?;
    let response_keep = response(false);
    let response_close = response(true);
    let mut workers = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (keep, close) = (response_keep.clone(), response_close.clone());
        let worker = std::thread::Builder::new()
            .name(format!("{}-{i}", args.name))
            .spawn(move || serve(listener, keep, close))
            .context("spawning a server thread")?;
        workers.push(worker);
    }
    println!("ready");
    for w in workers {
        match w.join() {
            Ok(r) => r?,
            Err(_) => bail!("a server thread panicked"),
        }
    }
    Ok(())
}

/// One listener per thread, or with `--netns` one per thread and
/// namespace: a socket stays in the namespace it was created in, so the
/// main thread enters each namespace in turn, binds, and returns home.
fn bind_all(args: &Args) -> anyhow::Result<Vec<Vec<std::net::TcpListener>>> {
    if args.netns.is_empty() {
        return (0..args.threads).map(|_| Ok(vec![reuseport_listener(args.listen)?])).collect();
    }
    let home = File::open("/proc/thread-self/ns/net").context("open /proc/thread-self/ns/net")?;
    let mut per_thread: Vec<Vec<std::net::TcpListener>> = (0..args.threads).map(|_| Vec::new()).collect();
    let result = (|| -> anyhow::Result<()> {
        for path in &args.netns {
            let ns = File::open(path).with_context(|| format!("open {}", path.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {}", path.display()))?;
            for listeners in &mut per_thread {
                listeners.push(reuseport_listener(args.listen).with_context(|| format!("in {}", path.display()))?);
            }
        }
        Ok(())
    })();
    setns(&home, CloneFlags::CLONE_NEWNET).context("setns back to the original namespace")?;
    result?;
    Ok(per_thread)
}

fn response(close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 200 OK\r\nServer: berth-bench\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// A listening TCP socket with `SO_REUSEPORT` (std cannot set it before
/// `bind`).
fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` outlives the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("setsockopt SO_REUSEADDR/SO_REUSEPORT");
        }
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for `fd`'s family.
    if unsafe { libc::bind(fd, (&raw const storage).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("bind {addr}"));
    }
    // SAFETY: `fd` is a bound stream socket.
    if unsafe { libc::listen(fd, 4096) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("listen {addr}"));
    }
    let listener = std::net::TcpListener::from(owned);
    listener.set_nonblocking(true).context("O_NONBLOCK")?;
    Ok(listener)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // Both sockaddr sizes fit socklen_t.
    (storage, len as libc::socklen_t)
}

fn serve(listeners: Vec<std::net::TcpListener>, keep: Vec<u8>, close: Vec<u8>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let (keep, close): (&'static [u8], &'static [u8]) = (keep.leak(), close.leak());
    rt.block_on(async move {
        let mut accepting = tokio::task::JoinSet::new();
        for listener in listeners {
            let listener = tokio::net::TcpListener::from_std(listener).context("registering the listener")?;
            accepting.spawn(accept_loop(listener, keep, close));
        }
        // The accept loops never end; this waits forever (or until one panics).
        while accepting.join_next().await.is_some() {}
        Ok(())
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, keep: &'static [u8], close: &'static [u8]) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // A client that resets or misbehaves only ends its own connection.
                    let _ = connection(stream, keep, close).await;
                });
            }
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

async fn connection(mut stream: tokio::net::TcpStream, keep: &[u8], close: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let mut out = Vec::with_capacity(keep.len() * 4);
    // Body bytes of the previous request still to skip.
    let mut skip = 0usize;
    loop {
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Ok(());
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut start = 0;
        let mut closing = false;
        loop {
            if skip > 0 {
                let take = skip.min(filled - start);
                start += take;
                skip -= take;
                if skip > 0 {
                    break;
                }
            }
            let Some(end) = find_head_end(&buf[start..filled]) else { break };
            let head = Head::parse(&buf[start..start + end]);
            start += end;
            skip = head.content_length;
            if head.close {
                out.extend_from_slice(close);
                closing = true;
                break;
            }
            out.extend_from_slice(keep);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if closing {
            // Dropping the stream closes it: FIN after the response.
            return Ok(());
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// Length of the head (through the blank line) at the start of `buf`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// What the server needs from a request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    close: bool,
    content_length: usize,
}

impl Head {
    fn parse(head: &[u8]) -> Self {
        let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or_default();
        let http10 = request_line.ends_with(b"HTTP/1.0");
        let mut connection_close = false;
        let mut connection_keep = false;
        let mut content_length = 0;
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"connection") {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    connection_close |= token.eq_ignore_ascii_case(b"close");
                    connection_keep |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        Self { close: connection_close || (http10 && !connection_keep), content_length }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_semantics() {
        let keep = Head::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(keep, Head { close: false, content_length: 0 });
        let close = Head::parse(b"GET / HTTP/1.1\r\nHost: x\r\nconnection:  Close\r\n\r\n");
        assert!(close.close);
        assert!(Head::parse(b"GET / HTTP/1.0\r\n\r\n").close);
        assert!(!Head::parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert_eq!(Head::parse(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n").content_length, 12);
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nGET"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
