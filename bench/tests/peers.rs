//! The kube-proxy-style e2e peers (`iptables-legacy`, `iptables-nft`,
//! `nftables`) really forward: each installs N = 3 Services on a test
//! topology's node, and new connections to the target VIP reach every one
//! of the 4 backends; after the peer is dropped nothing of it is left.
//!
//! Privileged: needs root (panics otherwise, never skips).

#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use berth_bench::e2e::{
    peer::{BACKEND_PORT, Scene},
    peers,
};
use berth_tests::{Netns, Topology};
use nix::sched::{CloneFlags, setns};

/// New connections made per peer: the chance that one of 4 equally likely
/// backends never answers is 4 * (3/4)^64 < 1e-7.
const CONNECTIONS: usize = 64;

/// Runs `f` on a short-lived thread inside `ns` (setns changes only that
/// thread); sockets made there stay in `ns`.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(ns.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// One tiny server per backend: answers every connection with its name.
struct Backends {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    fn start(topo: &Topology) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = topo
            .backends
            .iter()
            .map(|b| {
                let listener = in_netns(&b.ns, || TcpListener::bind((b.addr, BACKEND_PORT)).unwrap());
                listener.set_nonblocking(true).unwrap();
                let (stop, name) = (Arc::clone(&stop), b.name.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((mut conn, _)) => {
                                conn.set_nonblocking(false).unwrap();
                                let _ = conn.write_all(format!("{name}\n").as_bytes());
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Err(e) => panic!("{name}: accept: {e}"),
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Which backend answered one new connection to `target`, from the client.
fn ask(topo: &Topology, target: SocketAddrV4, count: usize) -> Vec<Result<String, String>> {
    in_netns(&topo.client, || {
        (0..count)
            .map(|_| {
                let mut conn = TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_secs(1))
                    .map_err(|e| e.to_string())?;
                conn.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
                let mut name = String::new();
                conn.read_to_string(&mut name).map_err(|e| e.to_string())?;
                Ok(name.trim().to_owned())
            })
            .collect()
    })
}

fn check_peer(name: &str) {
    berth_tests::require_root();
    let topo = Topology::build("bipt", 4).unwrap();
    let _servers = Backends::start(&topo);
    let work = tempfile::tempdir().unwrap();
    let peer = peers::all().into_iter().find(|p| p.name() == name).unwrap();
    let scene = Scene {
        topo: &topo,
        services: 3,
        backends: topo.backends.iter().map(|b| SocketAddrV4::new(b.addr, BACKEND_PORT)).collect(),
        work_dir: work.path(),
    };
    let started = Instant::now();
    let installed = peer.install(&scene, Duration::from_secs(60)).unwrap();
    assert!(installed.install_time <= started.elapsed());
    assert_eq!(installed.target, scene.target());

    let answers = ask(&topo, installed.target, CONNECTIONS);
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "{name}: {} of {CONNECTIONS} connections failed: {failed:?}", failed.len());
    let mut seen: Vec<&str> = answers.iter().filter_map(|a| a.as_deref().ok()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, ["b0", "b1", "b2", "b3"], "{name}: connections did not spread over every backend");
    // The first Service works as well as the last.
    let first = SocketAddrV4::new(berth_bench::e2e::peer::service_vip(0), berth_bench::e2e::peer::SERVICE_PORT);
    assert!(ask(&topo, first, 4).iter().all(Result::is_ok), "{name}: Service 0 unreachable");

    drop(installed);
    let legacy = topo.node.exec(&["iptables-legacy-save"]).unwrap();
    let nft = topo.node.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(!legacy.contains("KUBE-"), "{name} left legacy rules:\n{legacy}");
    assert!(!nft.contains("KUBE-") && !nft.contains("kube-proxy"), "{name} left nf_tables rules:\n{nft}");
    assert!(ask(&topo, scene.target(), 1)[0].is_err(), "{name}: VIP still answers after teardown");
}

#[test]
fn iptables_legacy_forwards_and_spreads() {
    check_peer("iptables-legacy");
}

#[test]
fn iptables_nft_forwards_and_spreads() {
    check_peer("iptables-nft");
}

#[test]
fn nftables_forwards_and_spreads() {
    check_peer("nftables");
}
