//! The operator side of the local admin API: a small blocking HTTP/1.1
//! client over the agent's unix socket, and the `berth-agent run-pod |
//! list | status | logs | exec | stop` commands built on it.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::node::local_api::{ErrorBody, ExecReply, PodDetail, PodView};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the agent at {path}: {source} (is `berth-agent node` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent's answer is malformed: {0}")]
    Protocol(String),
    /// The agent refused: status and its message (with the field path).
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("reading {path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Timeout(String),
}

impl ClientError {
    /// 64 for input the agent rejected as invalid, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Refused { status: 400 | 422, .. } | ClientError::Manifest { .. } => 64,
            _ => 1,
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    fn request(&self, method: &str, path: &str, body: &[u8], content_type: &str) -> Result<Reply, ClientError> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|source| ClientError::Connect { path: self.socket.clone(), source })?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth-agent\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_reply(&raw)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str, body: &[u8]) -> Result<T, ClientError> {
        let reply = self.request(method, path, body, "application/yaml")?;
        if !(200..300).contains(&reply.status) {
            return Err(refused(&reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// # Errors
    /// The manifest was rejected (422 with the field path) or the pod exists.
    pub fn run_pod(&self, manifest: &[u8]) -> Result<PodView, ClientError> {
        self.json("POST", "/v1/pods", manifest)
    }

    /// # Errors
    /// The agent is unreachable.
    pub fn list(&self) -> Result<Vec<PodView>, ClientError> {
        self.json("GET", "/v1/pods", b"")
    }

    /// # Errors
    /// The pod does not exist or the agent is unreachable.
    pub fn status(&self, namespace: &str, name: &str) -> Result<PodDetail, ClientError> {
        self.json("GET", &format!("/v1/pods/{namespace}/{name}"), b"")
    }

    /// # Errors
    /// As [`Client::status`], or an unknown container.
    pub fn logs(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        previous: bool,
        tail: Option<usize>,
    ) -> Result<String, ClientError> {
        let mut q = format!("previous={previous}");
        if let Some(c) = container {
            q.push_str(&format!("&container={c}"));
        }
        if let Some(t) = tail {
            q.push_str(&format!("&tail={t}"));
        }
        let reply = self.request("GET", &format!("/v1/pods/{namespace}/{name}/logs?{q}"), b"", "text/plain")?;
        if reply.status != 200 {
            return Err(refused(&reply));
        }
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// # Errors
    /// As [`Client::status`], or the container is not running.
    pub fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecReply, ClientError> {
        let mut path = format!("/v1/pods/{namespace}/{name}/exec?timeout_seconds={}", timeout.as_secs().max(1));
        if let Some(c) = container {
            path.push_str(&format!("&container={c}"));
        }
        let body = serde_json::to_vec(argv).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = self.request("POST", &path, &body, "application/json")?;
        if reply.status != 200 {
            return Err(refused(&reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Graceful stop; with `wait`, returns once the pod is gone.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn stop(&self, namespace: &str, name: &str, grace: Option<Duration>, wait: bool) -> Result<(), ClientError> {
        let mut path = format!("/v1/pods/{namespace}/{name}?wait={wait}");
        if let Some(g) = grace {
            path.push_str(&format!("&grace_seconds={}", g.as_secs()));
        }
        let _: PodView = self.json("DELETE", &path, b"")?;
        Ok(())
    }

    /// Polls until every container of the pod is ready.
    ///
    /// # Errors
    /// `timeout` passed first (the message has the last status).
    pub fn wait_ready(&self, namespace: &str, name: &str, timeout: Duration) -> Result<PodDetail, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let detail = self.status(namespace, name)?;
            if detail.view.status.is_ready() {
                return Ok(detail);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(format!(
                    "pod {namespace}/{name} not ready after {:?}: {}",
                    timeout,
                    serde_json::to_string(&detail.view.status).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn refused(reply: &Reply) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(ErrorBody { error, field: Some(field) }) if !error.contains(&field) => format!("{field}: {error}"),
        Ok(ErrorBody { error, .. }) => error,
        Err(_) => String::from_utf8_lossy(&reply.body).trim().to_owned(),
    };
    ClientError::Refused { status: reply.status, message }
}

/// Status line, headers, then a body with Content-Length, chunked
/// encoding, or up to the end of the stream.
fn parse_reply(raw: &[u8]) -> Result<Reply, ClientError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no end of headers".to_owned()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad status line in {head:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Reply { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Protocol("truncated chunk".to_owned()))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(ClientError::Protocol("truncated chunk".to_owned()));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

/// `namespace/name` or `name` (namespace `default`).
pub fn split_name(arg: &str, namespace: &str) -> (String, String) {
    match arg.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (namespace.to_owned(), arg.to_owned()),
    }
}

/// Reads a manifest from a file or `-` (stdin).
///
/// # Errors
/// The file cannot be read.
pub fn read_manifest(path: &Path) -> Result<Vec<u8>, ClientError> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|source| ClientError::Manifest { path: path.to_owned(), source })?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|source| ClientError::Manifest { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_replies() {
        let r = parse_reply(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, b"{}".as_slice()));
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn names_default_to_the_given_namespace() {
        assert_eq!(split_name("web", "default"), ("default".to_owned(), "web".to_owned()));
        assert_eq!(split_name("prod/web", "default"), ("prod".to_owned(), "web".to_owned()));
    }
}
