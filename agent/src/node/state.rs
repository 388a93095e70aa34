//! What the agent writes to disk so that a new agent process can adopt the
//! pods of the old one: one `pod.json` per pod, replaced atomically.
//!
//! The runtime keeps its own per-instance files (`state.json`, `exit.json`
//! in the bundle, written by the shim); this record only says which
//! instance is current, how often it was restarted and what it last did.

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    network::PodNet,
    pod::{manifest::PodSpec, status::ContainerState},
};

/// A pod as the agent last recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub spec: PodSpec,
    pub created_at_unix_ms: u64,
    pub net: Option<PodNet>,
    pub containers: Vec<ContainerRecord>,
    /// Set when a stop was requested: an adopting agent finishes it.
    pub stopping: bool,
}

/// The current instance of one container of a pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub restart_count: u32,
    /// The running (or last) instance, when one was started.
    pub instance: Option<Instance>,
    pub last_state: Option<ContainerState>,
    /// The state after the last instance ended (Terminated) while no new
    /// one runs; `None` while an instance runs.
    pub finished: Option<ContainerState>,
    pub image_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub bundle: PathBuf,
    pub cgroup: PathBuf,
    pub shim_pid: u32,
    pub started_at_unix_ms: u64,
    /// The image's StopSignal, kept so an adopting agent stops it right.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a pod record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io { op, path: path.to_owned(), source }
}

/// `<state_dir>/pods/<uid>/`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// # Errors
    /// The directory cannot be created.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        let pods = root.join("pods");
        fs::create_dir_all(&pods).map_err(io_err("creating", &pods))?;
        Ok(Self { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    /// Writes `pod.json` atomically: tmp file, fsync, rename, fsync dir.
    ///
    /// # Errors
    /// Any step of the write.
    pub fn save(&self, record: &PodRecord) -> Result<(), StateError> {
        let dir = self.pod_dir(&record.spec.uid);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let tmp = dir.join("pod.json.tmp");
        let path = dir.join("pod.json");
        // Serialising plain data structs cannot fail.
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        let mut file = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        file.write_all(&body).map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", &dir))
    }

    /// Every recorded pod. Unreadable records are returned as errors
    /// beside the good ones, so one bad file does not hide the rest.
    pub fn load_all(&self) -> (Vec<PodRecord>, Vec<StateError>) {
        let (mut pods, mut errors) = (Vec::new(), Vec::new());
        let dir = self.root.join("pods");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => return (pods, vec![StateError::Io { op: "reading", path: dir, source: e }]),
        };
        for entry in entries.flatten() {
            let path = entry.path().join("pod.json");
            match fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(record) => pods.push(record),
                    Err(source) => errors.push(StateError::Corrupt { path, source }),
                },
                // A directory without a record: a pod that was being removed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => errors.push(StateError::Io { op: "reading", path, source }),
            }
        }
        (pods, errors)
    }

    /// Pod directories without a record: a pod whose creation was cut
    /// short (the record is written before anything is started, so these
    /// hold at most bundles of containers nobody supervises).
    pub fn orphan_uids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("pods")) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| !e.path().join("pod.json").exists())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect()
    }

    /// Container instance ids with a bundle under the pod.
    pub fn bundle_ids(&self, uid: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.pod_dir(uid).join("containers")) else { return Vec::new() };
        entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect()
    }

    /// Removes the pod's directory (bundles were removed by the runtime).
    ///
    /// # Errors
    /// The removal failed for a reason other than absence.
    pub fn remove(&self, uid: &str) -> Result<(), StateError> {
        let dir = self.pod_dir(uid);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StateError::Io { op: "removing", path: dir, source: e })
            }
            _ => Ok(()),
        }
    }
}
