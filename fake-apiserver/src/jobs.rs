//! The fake Job controller and the kubelet of Job pods: unlike the workloads
//! of [`super::kubelet`], whose pods are only counted, a Job's pods really run.
//!
//! The Job controller part, every tick, for each unfinished Job:
//! * creates its pods as the real one does for `completionMode: Indexed`:
//!   `<job>-<index>-<suffix>`, labelled `batch.kubernetes.io/job-name`,
//!   `job-name` and `batch.kubernetes.io/job-completion-index`, annotated with
//!   the index, owned by the Job (so they go with it), with the template's
//!   spec, and `JOB_COMPLETION_INDEX` in every container's environment;
//! * writes its status: `active`, `succeeded`, `failed`, `completedIndexes`,
//!   `startTime`, and the final `Complete` (every index succeeded) or `Failed`
//!   (`BackoffLimitExceeded`: more failed pods than `backoffLimit`) condition.
//!
//! The kubelet part runs each pod's first container as a local process, for
//! the images a test registered ([`super::FakeApiServer::run_image`]); a pod
//! of another image stays Pending (`ErrImagePull`). Like a real kubelet it
//! expands `$(VAR)` in the args from the container's env (`value` entries),
//! projects downward-API volumes (`metadata.annotations['…']`,
//! `metadata.name`) into files and keeps them current as the pod's
//! annotations change, keeps stdout and stderr as the pod's log (served at
//! `pods/<name>/log`), reports the pod Running, then Succeeded or Failed with
//! the exit code, and kills the process when the pod is deleted. Two things
//! stand in for what a process on this machine cannot have: a volume's
//! `mountPath` in the args is replaced by the directory the fake projects it
//! into, and `<service>.<namespace>.svc:<port>` by the address a test routed
//! that Service to ([`super::FakeApiServer::route_service`]), as cluster DNS
//! and kube-proxy would.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::Shared;
use super::store::{Part, Propagation, Selector, Store};

/// A running Job pod.
struct Running {
    child: Child,
    /// Downward-API volume directory → the items it projects (path, fieldPath).
    volumes: Vec<(PathBuf, Vec<(String, String)>)>,
}

pub async fn run(shared: Arc<Shared>, period: Duration) {
    let mut running: HashMap<(String, String), Running> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = tick.tick() => step(&shared, &mut running),
        }
    }
    for (_, mut pod) in running {
        let _ = pod.child.start_kill();
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn step(shared: &Arc<Shared>, running: &mut HashMap<(String, String), Running>) {
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(jobs), Some(pods)) = (
        store.resource("batch", "v1", "jobs"),
        store.resource("", "v1", "pods"),
    ) else {
        return;
    };
    // Processes that ended, and pods that are gone.
    let mut ended = Vec::new();
    running.retain(|(ns, name), pod| {
        if store.get(&pods, ns, name).is_err() {
            let _ = pod.child.start_kill();
            return false;
        }
        match pod.child.try_wait() {
            Ok(Some(status)) => {
                ended.push((ns.clone(), name.clone(), status.code().unwrap_or(137)));
                false
            }
            Ok(None) => true,
            Err(_) => {
                ended.push((ns.clone(), name.clone(), 128));
                false
            }
        }
    });
    for (ns, name, code) in ended {
        let _ = store.update(&pods, &ns, &name, Part::Status, |pod| {
            pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {
                "exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "finishedAt": now(),
            }});
            pod["status"]["containerStatuses"][0]["ready"] = json!(false);
            Ok(())
        });
    }
    for ((ns, name), pod) in running.iter() {
        if let Ok(object) = store.get(&pods, ns, name) {
            project(&object, &pod.volumes);
        }
    }
    for job in store.list(&jobs, None, &Selector::default()) {
        if job["metadata"].get("deletionTimestamp").is_some() || finished(&job) {
            continue;
        }
        let ns = job["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let own: Vec<Value> = store
            .list(&pods, Some(&ns), &Selector::default())
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name.as_str())
            .collect();
        let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
        let phase = |p: &Value| {
            p["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string()
        };
        let count = |want: &str| own.iter().filter(|p| phase(p) == want).count() as i64;
        let (succeeded, failed) = (count("Succeeded"), count("Failed"));
        let active = own.len() as i64 - succeeded - failed;
        let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
        if failed == 0 && own.is_empty() {
            for index in 0..completions {
                create_pod(&mut store, &job, &ns, &name, index);
            }
        }
        let mut indexes: Vec<i64> = own
            .iter()
            .filter(|p| phase(p) == "Succeeded")
            .filter_map(|p| {
                p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                    .as_str()?
                    .parse()
                    .ok()
            })
            .collect();
        indexes.sort_unstable();
        let condition = if failed > backoff_limit {
            // The real controller also stops the pods still running.
            for pod in own
                .iter()
                .filter(|p| phase(p) == "Running" || phase(p) == "Pending")
            {
                let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                let _ = store.delete(&pods, &ns, pod_name, Propagation::Background);
            }
            Some(
                json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit"}),
            )
        } else if succeeded >= completions {
            Some(json!({"type": "Complete", "status": "True"}))
        } else {
            None
        };
        let _ = store.update(&jobs, &ns, &name, Part::Status, |job| {
            let status = &mut job["status"];
            if status.get("startTime").is_none() {
                status["startTime"] = json!(now());
            }
            status["active"] = json!(if condition.is_some() { 0 } else { active });
            status["succeeded"] = json!(succeeded);
            status["failed"] = json!(failed);
            status["completedIndexes"] = json!(
                indexes
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if let Some(condition) = condition {
                if condition["type"] == "Complete" {
                    status["completionTime"] = json!(now());
                }
                status["conditions"] = json!([condition]);
            }
            Ok(())
        });
    }
    // Pending Job pods whose image can run.
    let programs = shared
        .programs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let routes = shared
        .routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for pod in store.list(&pods, None, &Selector::default()) {
        let meta = &pod["metadata"];
        let key = (
            meta["namespace"].as_str().unwrap_or_default().to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        );
        let job_pod = meta["labels"].get("batch.kubernetes.io/job-name").is_some();
        let pending = pod["status"]["phase"].as_str().unwrap_or("Pending") == "Pending";
        if !job_pod
            || !pending
            || running.contains_key(&key)
            || meta.get("deletionTimestamp").is_some()
        {
            continue;
        }
        let container = &pod["spec"]["containers"][0];
        let image = container["image"].as_str().unwrap_or_default();
        let Some(program) = programs.get(image) else {
            let _ = store.update(&pods, &key.0, &key.1, Part::Status, |pod| {
                pod["status"]["phase"] = json!("Pending");
                pod["status"]["containerStatuses"] = json!([{"name": container["name"], "image": image, "ready": false,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": format!("no image {image} on this node")}}}]);
                Ok(())
            });
            continue;
        };
        match start(shared, &pod, program, &routes) {
            Ok(started) => {
                project(&pod, &started.volumes);
                running.insert(key.clone(), started);
                let _ = store.update(&pods, &key.0, &key.1, Part::Status, |pod| {
                    pod["status"] = json!({
                        "phase": "Running",
                        "podIP": "127.0.0.1",
                        "startTime": now(),
                        "containerStatuses": [{"name": container["name"], "image": image, "ready": true,
                            "started": true, "restartCount": 0, "state": {"running": {"startedAt": now()}}}],
                    });
                    Ok(())
                });
            }
            Err(message) => {
                let _ = store.update(&pods, &key.0, &key.1, Part::Status, |pod| {
                    pod["status"]["phase"] = json!("Failed");
                    pod["status"]["message"] = json!(message);
                    Ok(())
                });
            }
        }
    }
}

fn finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

fn create_pod(store: &mut Store, job: &Value, ns: &str, name: &str, index: i64) {
    let Some(pods) = store.resource("", "v1", "pods") else {
        return;
    };
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["job-name"] = json!(name);
    labels["batch.kubernetes.io/job-completion-index"] = json!(index.to_string());
    let mut spec = template["spec"].clone();
    for container in spec["containers"].as_array_mut().into_iter().flatten() {
        let env = container["env"].as_array().cloned().unwrap_or_default();
        let mut env: Vec<Value> = env;
        env.push(
            json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}),
        );
        container["env"] = json!(env);
    }
    let suffix = format!(
        "{:05x}",
        (store.resource_version() * 7919 + index as u64) % 0xfffff
    );
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{name}-{index}-{suffix}"),
            "namespace": ns,
            "labels": labels,
            "annotations": {"batch.kubernetes.io/job-completion-index": index.to_string()},
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    });
    let _ = store.create(&pods, ns, pod);
}

/// The value of a `fieldRef` of the pod (annotations, labels, name).
fn field(pod: &Value, path: &str) -> String {
    let meta = &pod["metadata"];
    let keyed = |prefix: &str, map: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|key| meta[map][key].as_str().unwrap_or_default().to_string())
    };
    keyed("metadata.annotations['", "annotations")
        .or_else(|| keyed("metadata.labels['", "labels"))
        .unwrap_or_else(|| match path {
            "metadata.name" => meta["name"].as_str().unwrap_or_default().to_string(),
            "metadata.namespace" => meta["namespace"].as_str().unwrap_or_default().to_string(),
            _ => String::new(),
        })
}

/// Writes the downward-API files of the pod's current metadata.
fn project(pod: &Value, volumes: &[(PathBuf, Vec<(String, String)>)]) {
    for (dir, items) in volumes {
        for (path, field_path) in items {
            let file = dir.join(path);
            let value = field(pod, field_path);
            if std::fs::read_to_string(&file).ok().as_deref() != Some(value.as_str()) {
                // Written whole, then renamed, as the kubelet's atomic writer does.
                let tmp = dir.join(format!(".{path}.tmp"));
                let _ = std::fs::write(&tmp, &value).and_then(|()| std::fs::rename(&tmp, &file));
            }
        }
    }
}

/// Starts the pod's first container as `program`.
fn start(
    shared: &Arc<Shared>,
    pod: &Value,
    program: &PathBuf,
    routes: &BTreeMap<String, String>,
) -> Result<Running, String> {
    let meta = &pod["metadata"];
    let (ns, name) = (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    );
    let container = &pod["spec"]["containers"][0];
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let key = var["name"].as_str().unwrap_or_default().to_string();
        if let Some(value) = var["value"].as_str() {
            env.insert(key, value.to_string());
        } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            env.insert(key, field(pod, path));
        } else {
            return Err(format!(
                "env {key}: only value and fieldRef are supported by the fake kubelet"
            ));
        }
    }
    let root =
        std::env::temp_dir().join(format!("fake-kubelet-{}-{ns}-{name}", std::process::id()));
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut volumes = Vec::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(items) = volume["downwardAPI"]["items"].as_array() else {
            continue;
        };
        let volume_name = volume["name"].as_str().unwrap_or_default();
        let dir = root.join(volume_name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("volume {volume_name}: {e}"))?;
        let items = items
            .iter()
            .map(|i| {
                (
                    i["path"].as_str().unwrap_or_default().to_string(),
                    i["fieldRef"]["fieldPath"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        volumes.push((dir.clone(), items));
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            if mount["name"] == volume_name {
                let path = mount["mountPath"].as_str().unwrap_or_default().to_string();
                mounts.push((path, dir.clone()));
            }
        }
    }
    let args: Vec<String> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let mut arg = a.as_str().unwrap_or_default().to_string();
            for (var, value) in &env {
                arg = arg.replace(&format!("$({var})"), value);
            }
            for (path, dir) in &mounts {
                if let Some(rest) = arg.strip_prefix(path.as_str()) {
                    arg = format!("{}{rest}", dir.display());
                }
            }
            for (service, addr) in routes {
                arg = arg.replace(service.as_str(), addr);
            }
            arg
        })
        .collect();
    let mut child = Command::new(program)
        .args(&args)
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let key = (ns, name);
    shared
        .logs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone(), String::new());
    if let Some(out) = child.stdout.take() {
        tokio::spawn(collect(shared.clone(), key.clone(), out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(collect(shared.clone(), key, err));
    }
    Ok(Running { child, volumes })
}

/// Appends a stream, line by line, to the pod's log.
async fn collect(shared: Arc<Shared>, key: (String, String), stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut logs = shared.logs.lock().unwrap_or_else(|p| p.into_inner());
        let log = logs.entry(key.clone()).or_default();
        log.push_str(&line);
        log.push('\n');
    }
}

/// The pod's log as `GET pods/<name>/log?tailLines=N` serves it.
pub fn log(
    shared: &Shared,
    store: &Store,
    ns: &str,
    name: &str,
    tail: Option<usize>,
) -> Result<String, super::store::ApiError> {
    let pods = store
        .resource("", "v1", "pods")
        .ok_or_else(|| super::store::ApiError::bad_request("no pods"))?;
    let pod = store.get(&pods, ns, name)?;
    let logs = shared.logs.lock().unwrap_or_else(|p| p.into_inner());
    let Some(log) = logs.get(&(ns.to_string(), name.to_string())) else {
        let container = pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or_default();
        return Err(super::store::ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    };
    Ok(match tail {
        None => log.clone(),
        Some(n) => {
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].iter().map(|l| format!("{l}\n")).collect()
        }
    })
}
