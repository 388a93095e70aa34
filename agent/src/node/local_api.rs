//! The agent's local admin API: HTTP/1.1 + JSON over a unix socket (root
//! only, mode 0600), used by `berth-agent run-pod|list|status|logs|stop`.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | /v1/pods | run a Pod (body: Kubernetes YAML or JSON) → 201 + status; 422 with the field path; 409 if it exists |
//! | GET | /v1/pods | every pod with its status |
//! | GET | /v1/pods/{ns}/{name} | one pod: spec and status |
//! | GET | /v1/pods/{ns}/{name}/logs?container=&previous=&tail= | a container's log |
//! | POST | /v1/pods/{ns}/{name}/exec?container=&timeout_seconds= | body: JSON argv → exit code and output |
//! | DELETE | /v1/pods/{ns}/{name}?grace_seconds=&wait= | graceful stop, then removal |
//!
//! Errors are JSON `{"error": …, "field": …}`, produced in one place
//! ([`ApiError`]).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use crate::{
    node::{
        state::{ContainerRecord, PodRecord},
        supervisor::{self, Shared, lock, now_ms},
    },
    pod::{
        manifest::{ManifestError, PodSpec, parse_pod},
        status::PodStatus,
    },
};

/// Largest accepted manifest, like the API server's request limit (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct LocalApi {
    listener: tokio::net::UnixListener,
    router: Router,
}

/// Binds the socket (replacing a stale one) with mode 0600.
///
/// # Errors
/// The directory or socket cannot be created.
pub fn bind(path: &Path, shared: Arc<Shared>) -> std::io::Result<LocalApi> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(LocalApi { listener, router: router(shared) })
}

impl LocalApi {
    pub async fn serve(self) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).await
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/pods", post(create).get(list))
        .route("/v1/pods/{ns}/{name}", get(show).delete(stop))
        .route("/v1/pods/{ns}/{name}/logs", get(logs))
        .route("/v1/pods/{ns}/{name}/exec", post(exec))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// Every error the API returns, mapped to a status in one place.
#[derive(Debug)]
pub enum ApiError {
    Invalid(ManifestError),
    Exists(String),
    NotFound(String),
    BadRequest(String),
    Internal(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Invalid(e) => {
                let field = match &e {
                    ManifestError::Invalid { problems } => problems.first().map(|p| p.path.clone()),
                    ManifestError::WrongKind { .. } => Some("kind".to_owned()),
                    _ => None,
                };
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorBody { error: e.to_string(), field })
            }
            ApiError::Exists(m) => (StatusCode::CONFLICT, ErrorBody { error: m, field: None }),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, ErrorBody { error: m, field: None }),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, ErrorBody { error: m, field: None }),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorBody { error: m, field: None }),
        };
        (status, Json(body)).into_response()
    }
}

/// One pod as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub status: PodStatus,
}

fn view(shared: &Shared, pod: &supervisor::PodHandle) -> PodView {
    let spec = pod.spec();
    PodView {
        namespace: spec.namespace,
        name: spec.name,
        uid: spec.uid,
        node: shared.config.node_name.clone(),
        status: pod.status(),
    }
}

async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<(StatusCode, Json<PodView>), ApiError> {
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::BadRequest(format!("body is not UTF-8: {e}")))?;
    // Validation before anything is stored or started.
    let spec: PodSpec = parse_pod(text).map_err(ApiError::Invalid)?;
    let key = format!("{}/{}", spec.namespace, spec.name);
    let record = PodRecord {
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerRecord { name: c.name.clone(), ..Default::default() })
            .collect(),
        spec,
        created_at_unix_ms: now_ms(),
        net: None,
        stopping: false,
    };
    let handle = {
        let mut pods = lock(&shared.pods);
        if pods.contains_key(&key) {
            return Err(ApiError::Exists(format!("pod {key} already exists")));
        }
        if pods.values().any(|p| p.spec().uid == record.spec.uid) {
            return Err(ApiError::Exists(format!("a pod with uid {} already exists", record.spec.uid)));
        }
        let handle = supervisor::handle_for(record.clone());
        pods.insert(key.clone(), handle.clone());
        handle
    };
    let (saver, saving) = (shared.clone(), handle.clone());
    let saved = tokio::task::spawn_blocking(move || saving.persist(&saver.state)).await;
    if let Err(message) = match saved {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    } {
        lock(&shared.pods).remove(&key);
        return Err(ApiError::Internal(format!("storing pod {key}: {message}")));
    }
    tracing::info!(pod = %key, "pod accepted");
    tokio::spawn(supervisor::run_pod(shared.clone(), handle.clone()));
    Ok((StatusCode::CREATED, Json(view(&shared, &handle))))
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<PodView>> {
    Json(shared.all_pods().iter().map(|p| view(&shared, p)).collect())
}

fn find(shared: &Shared, ns: &str, name: &str) -> Result<Arc<supervisor::PodHandle>, ApiError> {
    shared.pod(&format!("{ns}/{name}")).ok_or_else(|| ApiError::NotFound(format!("pod {ns}/{name} not found")))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PodDetail {
    pub spec: PodSpec,
    #[serde(flatten)]
    pub view: PodView,
}

async fn show(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Result<Json<PodDetail>, ApiError> {
    let pod = find(&shared, &ns, &name)?;
    Ok(Json(PodDetail { spec: pod.spec(), view: view(&shared, &pod) }))
}

#[derive(Debug, Deserialize)]
struct StopQuery {
    grace_seconds: Option<u64>,
    #[serde(default)]
    wait: bool,
}

async fn stop(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<StopQuery>,
) -> Result<(StatusCode, Json<PodView>), ApiError> {
    let pod = find(&shared, &ns, &name)?;
    let grace = q.grace_seconds.map_or_else(|| pod.spec().termination_grace, Duration::from_secs);
    {
        let mut record = lock(&pod.record);
        record.stopping = true;
    }
    let (saver, saving) = (shared.clone(), pod.clone());
    let _ = tokio::task::spawn_blocking(move || saving.persist(&saver.state)).await;
    // A second stop may shorten the grace period, never lengthen it.
    pod.stop.send_modify(|g| *g = Some(g.map_or(grace, |old| old.min(grace))));
    tracing::info!(pod = %format!("{ns}/{name}"), grace_s = grace.as_secs(), "pod stopping");
    let view = view(&shared, &pod);
    if q.wait {
        let mut gone = pod.gone.subscribe();
        while !*gone.borrow_and_update() {
            if gone.changed().await.is_err() {
                break;
            }
        }
        return Ok((StatusCode::OK, Json(view)));
    }
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    container: Option<String>,
    #[serde(default)]
    previous: bool,
    tail: Option<usize>,
}

fn pick_container(spec: &PodSpec, container: Option<&str>) -> Result<usize, ApiError> {
    match container {
        Some(c) => {
            spec.containers.iter().position(|d| d.name == c).ok_or_else(|| {
                ApiError::NotFound(format!("container {c} is not in pod {}/{}", spec.namespace, spec.name))
            })
        }
        None if spec.containers.len() == 1 => Ok(0),
        None => Err(ApiError::BadRequest(format!(
            "pod {}/{} has {} containers: name one of {}",
            spec.namespace,
            spec.name,
            spec.containers.len(),
            spec.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

async fn logs(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<String, ApiError> {
    let pod = find(&shared, &ns, &name)?;
    let spec = pod.spec();
    let index = pick_container(&spec, q.container.as_deref())?;
    let restarts = lock(&pod.record).containers[index].restart_count;
    let instance = match (q.previous, restarts) {
        (false, n) => n,
        (true, 0) => return Err(ApiError::BadRequest("the container has not been restarted".to_owned())),
        (true, n) => n - 1,
    };
    let path = supervisor::log_path(&shared.config.log_dir, &spec, &spec.containers[index].name, instance);
    let text = tokio::task::spawn_blocking(move || read_log(&path, q.tail))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    text.map_err(ApiError::Internal)
}

/// The rotated files (`.N` … `.1`) then the live one, optionally the last
/// `tail` lines only.
fn read_log(path: &Path, tail: Option<usize>) -> Result<String, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    for n in (1..=64).rev() {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_owned());
    let mut text = String::new();
    for f in files {
        match std::fs::read(&f) {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", f.display())),
        }
    }
    if let Some(n) = tail {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        let mut out = lines[start..].join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        return Ok(out);
    }
    Ok(text)
}

#[derive(Debug, Deserialize)]
struct ExecQuery {
    container: Option<String>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExecReply {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

async fn exec(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<ExecQuery>,
    Json(argv): Json<Vec<String>>,
) -> Result<Json<ExecReply>, ApiError> {
    if argv.is_empty() {
        return Err(ApiError::BadRequest("exec needs a command".to_owned()));
    }
    let pod = find(&shared, &ns, &name)?;
    let spec = pod.spec();
    let index = pick_container(&spec, q.container.as_deref())?;
    let instance = lock(&pod.record).containers[index].instance.clone();
    let Some(instance) = instance.filter(|i| i.shim_pid != 0) else {
        return Err(ApiError::BadRequest(format!("container {} is not running", spec.containers[index].name)));
    };
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(30).clamp(1, 3600));
    let rt = shared.runtime.clone();
    let out = tokio::task::spawn_blocking(move || rt.exec(&instance.bundle, &argv, timeout))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(ExecReply {
        exit_code: out.exit_code,
        timed_out: out.timed_out,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }))
}
