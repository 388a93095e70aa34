//! The JSON summary every `berth-test-server client` mode prints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How many error strings a summary keeps (the first ones).
pub const MAX_ERRORS: usize = 10;

/// Outcome of a client run: one JSON line on the client's stdout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Requests answered (HTTP 200, or a UDP reply).
    pub ok: u64,
    /// Requests that failed (connect, timeout, bad response...).
    pub failed: u64,
    /// Answers per backend name (the response body).
    pub by_backend: BTreeMap<String, u64>,
    /// The first [`MAX_ERRORS`] error messages.
    pub errors: Vec<String>,
    /// Where answers came from as the client saw it: UDP reply source
    /// addresses (the VIP under reverse NAT), or the `getpeername` of each
    /// TCP connection.
    pub peer_addrs: BTreeSet<String>,
    /// The client addresses backends saw (`X-Client-Addr` header, IP only),
    /// e.g. to check source-IP preservation. HTTP only.
    pub client_ips: BTreeSet<String>,
    /// Wall-clock run time.
    pub elapsed_ms: u64,
}

impl Summary {
    /// Records an answer from `backend`.
    pub fn record_ok(&mut self, backend: &str) {
        self.ok += 1;
        *self.by_backend.entry(backend.to_owned()).or_default() += 1;
    }

    /// Records a failure, keeping the first [`MAX_ERRORS`] messages.
    pub fn record_err(&mut self, err: impl std::fmt::Display) {
        self.failed += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(err.to_string());
        }
    }

    /// Adds `other`'s counts and sets into `self`.
    pub fn merge(&mut self, other: Summary) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (backend, n) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += n;
        }
        let room = MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        self.peer_addrs.extend(other.peer_addrs);
        self.client_ips.extend(other.client_ips);
    }

    /// The backend names that answered.
    pub fn backends(&self) -> BTreeSet<&str> {
        self.by_backend.keys().map(String::as_str).collect()
    }
}
