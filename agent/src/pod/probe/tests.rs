#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::{net::TcpListener, task::JoinHandle};

use super::*;

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

// ---- run_once against real sockets ------------------------------------------

/// A local HTTP server answering by path; records every request head.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server() -> Server {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8(buf).unwrap();
                seen.lock().unwrap().push(head.clone());
                let target = head.split(' ').nth(1).unwrap_or_default();
                let path = target.split('?').next().unwrap_or_default().to_owned();
                let reply = |status: &str, extra: &str, body: &str| {
                    format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
                };
                let response = match path.as_str() {
                    "/ok" | "/healthz" => reply("200 OK", "", "fine"),
                    "/created" => reply("201 Created", "", ""),
                    "/fail" => reply("500 Internal Server Error", "", "broken"),
                    "/missing" => reply("404 Not Found", "", "no"),
                    "/redirect" => reply("302 Found", "Location: /ok\r\n", ""),
                    "/redirect-fail" => reply("302 Found", "Location: /fail\r\n", ""),
                    "/redirect-abs" => reply("301 Moved", &format!("Location: http://127.0.0.1:{port}/ok\r\n"), ""),
                    "/redirect-away" => reply("302 Found", "Location: http://example.invalid/ok\r\n", ""),
                    "/redirect-https" => reply("307 Temporary Redirect", "Location: https://127.0.0.1/ok\r\n", ""),
                    "/redirect-loop" => reply("302 Found", "Location: /redirect-loop\r\n", ""),
                    "/not-modified" => "HTTP/1.1 304 Not Modified\r\n\r\n".to_owned(),
                    "/multiple" => reply("300 Multiple Choices", "", ""),
                    "/continue" => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_owned(),
                    "/chunked" => {
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfine\r\n0\r\n\r\n".to_owned()
                    }
                    "/chunked-fail" => {
                        "HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n".to_owned()
                    }
                    "/big" => reply("200 OK", "", &"x".repeat(1 << 20)),
                    "/until-close" => "HTTP/1.1 200 OK\r\n\r\nbody until the connection closes".to_owned(),
                    "/garbage" => "hello there\r\n\r\n".to_owned(),
                    "/bad-length" => "HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n".to_owned(),
                    "/hang" => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    "/body-hang" => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial").await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    _ => reply("404 Not Found", "", ""),
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Server { port, requests, task }
}

struct NoExec;

impl ExecProbe for NoExec {
    fn exec<'a>(&'a self, _: &'a [String], _: Duration) -> BoxFuture<'a, Result<ExecResult, String>> {
        Box::pin(async { Err("no exec in this test".to_owned()) })
    }
}

fn get(port: u16, path: &str) -> ProbeAction {
    ProbeAction::HttpGet { port, path: path.to_owned(), headers: Vec::new() }
}

async fn http(server: &Server, path: &str) -> ProbeOutcome {
    run_once(&get(server.port, path), LOCAL, Duration::from_millis(500), &NoExec).await
}

#[tokio::test]
async fn http_status_codes() {
    let s = server().await;
    assert_eq!(http(&s, "/ok").await, ProbeOutcome::Success);
    assert_eq!(http(&s, "/created").await, ProbeOutcome::Success);
    assert_eq!(http(&s, "/continue").await, ProbeOutcome::Success, "1xx is skipped; 204 succeeds");
    assert_eq!(http(&s, "/not-modified").await, ProbeOutcome::Success);
    assert_eq!(http(&s, "/multiple").await, ProbeOutcome::Success, "3xx without a followed redirect succeeds");
    assert_eq!(http(&s, "/missing").await, ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into()));
    assert_eq!(http(&s, "/fail").await, ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into()));
    assert_eq!(http(&s, "/chunked").await, ProbeOutcome::Success);
    assert_eq!(http(&s, "/chunked-fail").await, ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into()));
    assert_eq!(http(&s, "/big").await, ProbeOutcome::Success, "the body is read only up to 10 KiB");
    assert_eq!(http(&s, "/until-close").await, ProbeOutcome::Success);
    assert!(matches!(http(&s, "/garbage").await, ProbeOutcome::Failure(m) if m.contains("malformed HTTP response")));
    assert!(matches!(http(&s, "/bad-length").await, ProbeOutcome::Failure(m) if m.contains("Content-Length")));
}

#[tokio::test]
async fn http_redirects_like_kubelet() {
    let s = server().await;
    assert_eq!(http(&s, "/redirect").await, ProbeOutcome::Success);
    assert_eq!(http(&s, "/redirect-abs").await, ProbeOutcome::Success);
    assert_eq!(
        http(&s, "/redirect-fail").await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into()),
        "a same-host redirect is followed, and the target decides"
    );
    assert_eq!(http(&s, "/redirect-away").await, ProbeOutcome::Success, "another host: not followed, success");
    assert_eq!(http(&s, "/redirect-https").await, ProbeOutcome::Success);
    let loop_outcome = http(&s, "/redirect-loop").await;
    assert!(
        matches!(&loop_outcome, ProbeOutcome::Failure(m) if m.ends_with("stopped after 10 redirects")),
        "{loop_outcome:?}"
    );
    let loops = s.requests.lock().unwrap().iter().filter(|r| r.starts_with("GET /redirect-loop ")).count();
    assert_eq!(loops, 10, "Go's client sends 10 requests, then gives up");
}

#[tokio::test]
async fn http_timeouts() {
    let s = server().await;
    let started = std::time::Instant::now();
    let outcome = run_once(&get(s.port, "/hang"), LOCAL, Duration::from_millis(200), &NoExec).await;
    assert!(matches!(&outcome, ProbeOutcome::Failure(m) if m.contains("awaiting headers")), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // kubelet discards a probe whose body cannot be read.
    let outcome = run_once(&get(s.port, "/body-hang"), LOCAL, Duration::from_millis(200), &NoExec).await;
    assert!(matches!(&outcome, ProbeOutcome::Error(m) if m.contains("reading body")), "{outcome:?}");
}

#[tokio::test]
async fn http_request_headers() {
    let s = server().await;
    assert_eq!(http(&s, "/healthz").await, ProbeOutcome::Success);
    let custom = ProbeAction::HttpGet {
        port: s.port,
        path: "/ok?x=1".into(),
        headers: vec![
            ("Host".into(), "app.example".into()),
            ("User-Agent".into(), "mine".into()),
            ("x-probe".into(), "1".into()),
            ("Accept".into(), String::new()),
        ],
    };
    assert_eq!(run_once(&custom, LOCAL, Duration::from_millis(500), &NoExec).await, ProbeOutcome::Success);
    let requests = s.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0],
        format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            s.port
        )
    );
    assert_eq!(
        requests[1],
        "GET /ok?x=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: mine\r\nX-Probe: 1\r\nConnection: close\r\n\r\n",
        "user headers replace Host and User-Agent, names are canonical, an empty Accept removes it"
    );
}

#[tokio::test]
async fn tcp_probes() {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let action = ProbeAction::TcpSocket { port: open };
    assert_eq!(run_once(&action, LOCAL, Duration::from_secs(1), &NoExec).await, ProbeOutcome::Success);

    let closed = {
        let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
        l.local_addr().unwrap().port()
    };
    let outcome = run_once(&ProbeAction::TcpSocket { port: closed }, LOCAL, Duration::from_secs(1), &NoExec).await;
    assert!(matches!(&outcome, ProbeOutcome::Failure(m) if m.contains("refused")), "{outcome:?}");
    let outcome = run_once(&get(closed, "/"), LOCAL, Duration::from_secs(1), &NoExec).await;
    assert!(matches!(&outcome, ProbeOutcome::Failure(m) if m.contains("refused")), "{outcome:?}");
}

/// Exec that answers from the command's first word.
struct ScriptedExec;

impl ExecProbe for ScriptedExec {
    fn exec<'a>(&'a self, argv: &'a [String], _: Duration) -> BoxFuture<'a, Result<ExecResult, String>> {
        Box::pin(async move {
            match argv[0].as_str() {
                "true" => Ok(ExecResult { exit_code: 0, output: String::new() }),
                "false" => Ok(ExecResult { exit_code: 1, output: "not yet".into() }),
                "chatty" => Ok(ExecResult { exit_code: 2, output: "é".repeat(MAX_OUTPUT) }),
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(ExecResult { exit_code: 0, output: String::new() })
                }
                _ => Err("no such container".into()),
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn exec_probes() {
    let run = |argv: &[&str]| {
        let action = ProbeAction::Exec { command: argv.iter().map(|s| (*s).to_owned()).collect() };
        async move { run_once(&action, LOCAL, Duration::from_secs(1), &ScriptedExec).await }
    };
    assert_eq!(run(&["true"]).await, ProbeOutcome::Success);
    assert_eq!(run(&["false"]).await, ProbeOutcome::Failure("not yet".into()));
    assert_eq!(run(&["sleep", "10"]).await, ProbeOutcome::Failure("command \"sleep 10\" timed out".into()));
    assert_eq!(run(&["gone"]).await, ProbeOutcome::Error("no such container".into()));
    match run(&["chatty"]).await {
        ProbeOutcome::Failure(m) => assert!(m.len() <= MAX_OUTPUT && m.len() > MAX_OUTPUT - 2, "{}", m.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn redirect_resolution() {
    let ip = Ipv4Addr::new(10, 0, 0, 5);
    let at = |path: &str| Target { port: 8080, path: path.into(), host: Some("custom".into()) };
    let local = |port, path: &str, host: Option<&str>| {
        Redirect::Local(Target { port, path: path.into(), host: host.map(str::to_owned) })
    };
    let cur = at("/a/b?q=1");
    assert_eq!(resolve_redirect("/x", &cur, ip), local(8080, "/x", Some("custom")));
    assert_eq!(resolve_redirect("c", &cur, ip), local(8080, "/a/c", Some("custom")));
    assert_eq!(resolve_redirect("?z", &cur, ip), local(8080, "/a/b?z", Some("custom")));
    assert_eq!(resolve_redirect("/x#frag", &cur, ip), local(8080, "/x", Some("custom")));
    assert_eq!(resolve_redirect("http://10.0.0.5:9090/y", &cur, ip), local(9090, "/y", None));
    assert_eq!(resolve_redirect("HTTP://10.0.0.5", &cur, ip), local(80, "/", None));
    assert_eq!(resolve_redirect("//10.0.0.5:81?x", &cur, ip), local(81, "/?x", None));
    assert_eq!(resolve_redirect("http://10.0.0.6/", &cur, ip), Redirect::Elsewhere);
    assert_eq!(resolve_redirect("http://localhost:8080/", &cur, ip), Redirect::Elsewhere);
    assert_eq!(resolve_redirect("https://10.0.0.5/", &cur, ip), Redirect::Elsewhere);
    assert_eq!(resolve_redirect("mailto:x@y", &cur, ip), Redirect::Elsewhere);
}

// ---- The worker, with a fake prober and paused time --------------------------

/// Answers from a script, then `then` forever; records when it was called.
struct Fake {
    script: Mutex<VecDeque<ProbeOutcome>>,
    then: ProbeOutcome,
    calls: Mutex<Vec<Duration>>,
    origin: Instant,
}

impl Fake {
    fn new(origin: Instant, script: &[ProbeOutcome], then: ProbeOutcome) -> Arc<Self> {
        Arc::new(Self { script: Mutex::new(script.iter().cloned().collect()), then, calls: Mutex::default(), origin })
    }

    /// Seconds after `origin` of every call.
    fn calls(&self) -> Vec<u64> {
        self.calls.lock().unwrap().iter().map(Duration::as_secs).collect()
    }
}

impl Prober for Fake {
    fn probe<'a>(&'a self, _: &'a ProbeAction, _: Duration) -> BoxFuture<'a, ProbeOutcome> {
        self.calls.lock().unwrap().push(Instant::now() - self.origin);
        let next = self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.then.clone());
        Box::pin(async move { next })
    }
}

use ProbeOutcome::{Failure as F, Success as S};

fn fail() -> ProbeOutcome {
    F("down".into())
}

fn spec(initial_delay: u64, period: u64, success_threshold: u32, failure_threshold: u32) -> ProbeSpec {
    ProbeSpec {
        action: ProbeAction::TcpSocket { port: 1 },
        initial_delay: Duration::from_secs(initial_delay),
        timeout: Duration::from_secs(1),
        period: Duration::from_secs(period),
        success_threshold,
        failure_threshold,
        termination_grace: None,
    }
}

struct Worker {
    rx: watch::Receiver<ProbeState>,
    task: JoinHandle<WorkerExit>,
}

fn start(
    kind: ProbeKind,
    spec: ProbeSpec,
    prober: Arc<Fake>,
    started_at: Instant,
    startup: Option<watch::Receiver<ProbeState>>,
) -> Worker {
    let (tx, rx) = watch::channel(ProbeState { result: ProbeResult::Unknown, message: Some("unset".into()) });
    let task = tokio::spawn(run_worker(kind, spec, prober, started_at, startup, tx));
    Worker { rx, task }
}

/// The published result at `origin + secs`.
async fn result_at(worker: &Worker, origin: Instant, secs: u64) -> ProbeResult {
    tokio::time::sleep_until(origin + Duration::from_secs(secs)).await;
    worker.rx.borrow().result
}

#[tokio::test(start_paused = true)]
async fn liveness_flips_after_exactly_failure_threshold_failures() {
    let t0 = Instant::now();
    let fake = Fake::new(t0, &[S, fail(), fail()], fail());
    let w = start(ProbeKind::Liveness, spec(5, 10, 1, 3), fake.clone(), t0, None);
    assert_eq!(result_at(&w, t0, 1).await, ProbeResult::Success, "liveness starts as Success");
    assert_eq!(result_at(&w, t0, 34).await, ProbeResult::Success, "two failures are below the threshold");
    assert_eq!(result_at(&w, t0, 36).await, ProbeResult::Failure);
    assert_eq!(w.rx.borrow().message.as_deref(), Some("down"));
    assert_eq!(w.task.await.unwrap(), WorkerExit::Failed { message: "down".into() });
    assert_eq!(fake.calls(), [5, 15, 25, 35], "first at the initial delay, then every period");
}

#[tokio::test(start_paused = true)]
async fn a_success_restarts_the_failure_count() {
    let t0 = Instant::now();
    let fake = Fake::new(t0, &[fail(), fail(), S, fail(), fail()], fail());
    let w = start(ProbeKind::Liveness, spec(0, 10, 1, 3), fake.clone(), t0, None);
    assert_eq!(result_at(&w, t0, 45).await, ProbeResult::Success);
    assert_eq!(result_at(&w, t0, 55).await, ProbeResult::Failure);
    assert_eq!(w.task.await.unwrap(), WorkerExit::Failed { message: "down".into() });
    assert_eq!(fake.calls(), [0, 10, 20, 30, 40, 50]);
}

#[tokio::test(start_paused = true)]
async fn readiness_needs_success_threshold_successes() {
    let t0 = Instant::now();
    let fake = Fake::new(t0, &[S, S, fail(), S, S], S);
    let w = start(ProbeKind::Readiness, spec(0, 10, 2, 1), fake.clone(), t0, None);
    let mut seen = Vec::new();
    for at in [5, 15, 25, 35, 45] {
        seen.push(result_at(&w, t0, at).await);
    }
    use ProbeResult::{Failure as No, Success as Yes};
    assert_eq!(seen, [No, Yes, No, No, Yes], "starts unready; two successes to become ready");
    assert!(!w.task.is_finished(), "readiness keeps probing");
    w.task.abort();
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness() {
    let t0 = Instant::now();
    let startup = Fake::new(t0, &[fail(), fail()], S);
    let liveness = Fake::new(t0, &[], S);
    let readiness = Fake::new(t0, &[], S);
    let s = start(ProbeKind::Startup, spec(0, 10, 1, 30), startup.clone(), t0, None);
    let l = start(ProbeKind::Liveness, spec(0, 7, 1, 3), liveness.clone(), t0, Some(s.rx.clone()));
    let r = start(ProbeKind::Readiness, spec(0, 15, 1, 3), readiness.clone(), t0, Some(s.rx.clone()));

    assert_eq!(result_at(&s, t0, 1).await, ProbeResult::Unknown, "startup starts as Unknown");
    assert_eq!(l.rx.borrow().result, ProbeResult::Success);
    assert_eq!(r.rx.borrow().result, ProbeResult::Failure);
    assert_eq!(result_at(&s, t0, 19).await, ProbeResult::Unknown, "failures below the threshold change nothing");
    assert!(liveness.calls().is_empty() && readiness.calls().is_empty(), "gated until startup succeeds");
    assert_eq!(result_at(&s, t0, 21).await, ProbeResult::Success);
    assert_eq!(s.task.await.unwrap(), WorkerExit::Started, "startup stops after its success");
    assert_eq!(r.rx.borrow().result, ProbeResult::Success, "readiness probes as soon as the gate opens");
    tokio::time::sleep_until(t0 + Duration::from_secs(40)).await;
    assert_eq!(startup.calls(), [0, 10, 20]);
    assert_eq!(readiness.calls(), [20, 35], "probed at the gate, then every period from there");
    assert_eq!(liveness.calls(), [21, 28, 35], "liveness waits for its next tick");
    l.task.abort();
    r.task.abort();
}

#[tokio::test(start_paused = true)]
async fn startup_failure_kills_and_liveness_never_runs() {
    let t0 = Instant::now();
    let startup = Fake::new(t0, &[], fail());
    let liveness = Fake::new(t0, &[], S);
    let s = start(ProbeKind::Startup, spec(0, 1, 1, 3), startup.clone(), t0, None);
    let l = start(ProbeKind::Liveness, spec(0, 1, 1, 3), liveness.clone(), t0, Some(s.rx.clone()));
    assert_eq!(s.task.await.unwrap(), WorkerExit::Failed { message: "down".into() });
    assert_eq!(startup.calls(), [0, 1, 2]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(liveness.calls().is_empty());
    assert!(!l.task.is_finished(), "waits to be cancelled with its container");
    l.task.abort();
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_then_discarded() {
    let t0 = Instant::now();
    let error = || ProbeOutcome::Error("exec broke".into());
    // t=0: three errors, discarded; t=10: error then success (a retry);
    // t=20: one failure reaches the threshold of 1.
    let fake = Fake::new(t0, &[error(), error(), error(), error(), S, fail()], S);
    let w = start(ProbeKind::Liveness, spec(0, 10, 1, 1), fake.clone(), t0, None);
    assert_eq!(result_at(&w, t0, 15).await, ProbeResult::Success);
    assert_eq!(w.task.await.unwrap(), WorkerExit::Failed { message: "down".into() });
    assert_eq!(fake.calls(), [0, 0, 0, 10, 10, 20]);
}

#[tokio::test(start_paused = true)]
async fn a_late_worker_probes_at_once_and_stops_when_nobody_listens() {
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(100)).await;
    let fake = Fake::new(t0, &[], S);
    // The container started 100 s ago with a 5 s delay: no more waiting.
    let w = start(ProbeKind::Readiness, spec(5, 10, 1, 3), fake.clone(), t0, None);
    assert_eq!(result_at(&w, t0, 101).await, ProbeResult::Success);
    assert_eq!(fake.calls(), [100]);
    let Worker { rx, task } = w;
    drop(rx);
    assert_eq!(task.await.unwrap(), WorkerExit::Closed);
}

#[tokio::test]
async fn net_prober_runs_real_probes() {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let prober = NetProber { pod_ip: LOCAL, exec: Arc::new(ScriptedExec) };
    let tcp = ProbeAction::TcpSocket { port };
    assert_eq!(prober.probe(&tcp, Duration::from_secs(1)).await, ProbeOutcome::Success);
    let exec = ProbeAction::Exec { command: vec!["false".into()] };
    assert_eq!(prober.probe(&exec, Duration::from_secs(1)).await, ProbeOutcome::Failure("not yet".into()));
}
