//! `berth serve` and the `berth` CLI end to end, as a user runs them: the
//! real binaries, in the test's own network namespace, with TLS and the
//! generated admin token.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic so failures carry a backtrace")]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::objects::text;
use common::serve::{Serve, free_port};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth(config: &Path, args: &[&str]) -> Output {
    Command::new(BERTH).env("BERTH_CLIENT_CONFIG", config).args(args).output().expect("run berth")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

#[test]
fn apply_get_scale_and_durability_through_the_binaries() {
    common::isolate();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let serve = Serve::start(&data, port);
    // The first start generated an admin token.
    let tokens = std::fs::read_to_string(data.join("tokens.csv")).unwrap();
    let token = tokens.split(',').next().unwrap().to_owned();
    let config = dir.path().join("config.yaml");
    let out = berth(
        &config,
        &[
            "config",
            "--server",
            &format!("https://{}", serve.addr),
            "--ca",
            data.join("ca.crt").to_str().unwrap(),
            "--token",
            &token,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // The seed manifests: created, then unchanged.
    let web = example("web.yaml");
    let out = berth(&config, &["apply", "-f", web.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deployment.apps/web created\nservice/web created\n");
    let out = berth(&config, &["apply", "-f", web.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deployment.apps/web unchanged\nservice/web unchanged\n",
        "{}",
        text(&out)
    );

    // The leader's controllers made the Deployment's pods; with no node
    // they stay Pending with the scheduler's reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pods = loop {
        let out = berth(&config, &["get", "pods", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let reasons =
            items.iter().filter(|p| p["status"]["conditions"].to_string().contains("0/0 nodes are available")).count();
        if items.len() == 3 && reasons == 3 {
            break items;
        }
        assert!(Instant::now() < deadline, "3 pending pods with the scheduler's reason: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(pods.iter().all(|p| p["metadata"]["name"].as_str().unwrap().starts_with("web-")));
    let out = berth(&config, &["get", "pods"]);
    assert!(text(&out).contains("Pending") && text(&out).contains("0/1"), "{}", text(&out));

    // describe: kubectl's layout, with the owned pods and the scheduler's
    // reason.
    let out = berth(&config, &["describe", "deployment", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    let described = text(&out);
    assert!(described.contains("Replicas:               3 desired | 3 updated | 3 total | 0 available"), "{described}");
    assert!(described.contains("RollingUpdateStrategy:  0 max unavailable, 1 max surge"), "{described}");
    let pod = pods[0]["metadata"]["name"].as_str().unwrap();
    assert!(described.contains(pod), "{described}");
    let out = berth(&config, &["describe", "pod", pod]);
    assert!(text(&out).contains("Controlled By:  Deployment/web"), "{}", text(&out));
    let out = berth(&config, &["describe", "nosuchkind", "x"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // The endpoints pass gave the Service its (still empty) EndpointSlice.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = berth(&config, &["get", "endpointslices"]);
        if text(&out).contains("web") && text(&out).contains("<none>") {
            break;
        }
        assert!(Instant::now() < deadline, "an EndpointSlice for web: {}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }

    // The Service got a ClusterIP from the range.
    let out = berth(&config, &["get", "svc", "web", "-o", "json"]);
    let svc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("198.19."), "{ip}");
    let out = berth(&config, &["get", "svc"]);
    assert!(text(&out).contains("CLUSTER-IP") && text(&out).contains(&ip), "{}", text(&out));

    // scale → configured replicas.
    let out = berth(&config, &["scale", "deployment", "web", "--replicas", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = berth(&config, &["get", "deploy", "web", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(d["spec"]["replicas"], 5);

    // An invalid manifest: exit 64, the field path, nothing stored.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {selector: {app: x}, ports: [{port: 0}]}\n",
    )
    .unwrap();
    let out = berth(&config, &["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("spec.ports[0].port"), "{}", text(&out));
    let out = berth(&config, &["get", "svc", "bad"]);
    assert!(!out.status.success() && text(&out).contains("not found"), "{}", text(&out));

    // kill -9 the server; everything acknowledged is there after a restart,
    // and the ClusterIP is not handed out again.
    serve.kill();
    let serve = Serve::start(&data, port);
    let out = berth(&config, &["get", "deploy", "web", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(d["spec"]["replicas"], 5, "the acknowledged scale survived kill -9");
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec: {selector: {app: y}, ports: [{port: 80}]}\n",
    )
    .unwrap();
    assert!(berth(&config, &["apply", "-f", other.to_str().unwrap()]).status.success());
    let out = berth(&config, &["get", "svc", "other", "-o", "json"]);
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_ne!(o["spec"]["clusterIP"].as_str().unwrap(), ip, "no ClusterIP handed out twice across restarts");

    // Without a token: 401.
    let anon = dir.path().join("anon.yaml");
    assert!(
        berth(
            &anon,
            &["config", "--server", &format!("https://{}", serve.addr), "--ca", data.join("ca.crt").to_str().unwrap()]
        )
        .status
        .success()
    );
    let out = berth(&anon, &["get", "pods"]);
    assert!(!out.status.success() && text(&out).to_lowercase().contains("unauthorized"), "{}", text(&out));
    let started = Instant::now();
    drop(serve);
    assert!(started.elapsed() < Duration::from_secs(5));
}
