//! The ChatLoadTest controller: runs a `chat-load` test as an Indexed Job of
//! `parallelism` generator pods and writes the merged result into the status.
//!
//! One reconcile reads what is there and takes the next step:
//! 1. resolve the target (a ChatCluster's Service endpoint, and its JWT key
//!    when auth is on) and turn the spec into chat-load's command line,
//!    checked by chat-load's own parser (a bad spec fails the test at once);
//! 2. apply the Job: pod `I` runs `chat-load --shard I/N` (the index is the
//!    Job's `JOB_COMPLETION_INDEX`), and waits at the start barrier;
//! 3. the start barrier: once every pod of the Job is Running, the operator
//!    records a start time (now + `startDelaySeconds`) in the status, then
//!    sets it as the `chatback.dev/start-at` annotation of every pod. The
//!    kubelet projects that annotation into the pod as a downward-API file,
//!    which `chat-load --start-at-file` waits for; so every pod starts at the
//!    same instant, and none before all of them run. The status is written
//!    first, so a retry re-annotates with the same time;
//! 4. when the Job is complete, each pod's last log line is its summary with
//!    its HdrHistograms; `loadtest::merge` adds them up and judges the
//!    thresholds on the merged result, which becomes `status.result`.
//!
//! A ChatLoadTest runs once: Succeeded and Failed are final (the spec is
//! immutable; delete and recreate the resource to run again). The Job is
//! owned by the ChatLoadTest and goes with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use crds::{ChatCluster, ChatLoadTest, ChatLoadTestStatus, LoadTestPhase, Scenario};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use loadtest::Summary;
use loadtest::threshold::Threshold;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::children::chat_server;
use crate::children::secrets::JWT_SECRET_KEY;
use crate::controller::{Context, Scope, per_scope, scoped};
use crate::error::{Error, Result};
use crate::meta::{MANAGER, Names, PART_OF};
use crate::status::{Stamp, Verdict};

/// The pod annotation that carries the common start time (Unix ms).
pub const START_AT_ANNOTATION: &str = "chatback.dev/start-at";
/// The label naming a generator pod's (and Job's) ChatLoadTest.
pub const LOAD_TEST_LABEL: &str = "chatback.dev/load-test";
/// Where the start-time file is mounted in a generator pod.
pub const START_DIR: &str = "/etc/chat-load";
/// The generator container's name.
pub const CONTAINER: &str = "chat-load";
/// Log lines read back from each pod, looking for its summary.
const LOG_TAIL: i64 = 50;

/// Runs the ChatLoadTest controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: CancellationToken) {
    per_scope(ctx, scope, shutdown, run_in).await;
}

async fn run_in(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let ours = watcher::Config::default().labels(LOAD_TEST_LABEL);
    Controller::new(
        scoped::<ChatLoadTest>(&client, ns),
        watcher::Config::default(),
    )
    .owns(scoped::<Job>(&client, ns), ours.clone())
    .watches(scoped::<Pod>(&client, ns), ours, |pod: Pod| {
        let test = pod.labels().get(LOAD_TEST_LABEL)?.clone();
        Some(ObjectRef::new(&test).within(&pod.namespace()?))
    })
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => debug!(%object, "load test reconciled"),
            Err(error) => debug!(%error, "load test reconcile did not complete"),
        }
    })
    .await;
}

fn error_policy(lt: Arc<ChatLoadTest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    warn!(name = lt.name_any(), %error, "load test reconcile failed");
    Action::requeue(ctx.settings.retry_base)
}

/// What the status should say now.
struct Report {
    phase: LoadTestPhase,
    /// Conditions to set (others keep their previous value).
    conditions: Vec<(&'static str, bool, &'static str, String)>,
    start_at_unix_ms: Option<i64>,
    running_pods: i32,
    result: Option<Summary>,
}

impl Report {
    fn new(phase: LoadTestPhase, condition: (&'static str, bool, &'static str, String)) -> Self {
        Self {
            phase,
            conditions: vec![condition],
            start_at_unix_ms: None,
            running_pods: 0,
            result: None,
        }
    }
}

async fn reconcile(lt: Arc<ChatLoadTest>, ctx: Arc<Context>) -> Result<Action> {
    let status = lt.status.clone().unwrap_or_default();
    if status.phase.is_some_and(LoadTestPhase::is_final) {
        return Ok(Action::await_change());
    }
    let namespace = lt.namespace().unwrap_or_default();
    let name = lt.name_any();
    let target = match resolve_target(&lt, &ctx, &namespace).await? {
        Ok(target) => target,
        Err(message) => {
            let report = Report::new(
                LoadTestPhase::Pending,
                ("Started", false, "TargetNotFound", message),
            );
            write_status(&lt, &ctx, &status, report, None).await?;
            return Ok(Action::requeue(ctx.settings.pending_requeue));
        }
    };
    let generators = match Generators::new(&lt, &target) {
        Ok(g) => g,
        Err(message) => {
            let mut report = Report::new(
                LoadTestPhase::Failed,
                ("Complete", false, "InvalidSpec", message.clone()),
            );
            report
                .conditions
                .push(("Started", false, "InvalidSpec", message));
            write_status(&lt, &ctx, &status, report, Some(&target)).await?;
            return Ok(Action::await_change());
        }
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job = jobs
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(generators.job(&lt, &target)),
        )
        .await
        .map_err(Error::kube("apply", format!("Job/{namespace}/{name}")))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{LOAD_TEST_LABEL}={name}")))
        .await
        .map_err(Error::kube("list", format!("Pods of {namespace}/{name}")))?
        .items;
    let running: Vec<&Pod> = listed
        .iter()
        .filter(|p| phase_of(p) == "Running" && p.metadata.deletion_timestamp.is_none())
        .collect();
    let running_count = running.len() as i32;
    let n = generators.parallelism;

    if let Some(reason) = job_condition(&job, "Failed") {
        let detail = failure_detail(&pods, &listed).await;
        let mut report = Report::new(
            LoadTestPhase::Failed,
            (
                "Complete",
                false,
                "JobFailed",
                format!("the Job failed ({reason}){detail}"),
            ),
        );
        report.start_at_unix_ms = status.start_at_unix_ms;
        write_status(&lt, &ctx, &status, report, Some(&target)).await?;
        return Ok(Action::await_change());
    }
    if job_condition(&job, "Complete").is_some() {
        let report = match collect(&pods, &listed, n).await {
            Ok(shards) => match loadtest::merge::merge(&shards, &generators.rules) {
                Ok(merged) => judged(merged),
                Err(e) => Report::new(
                    LoadTestPhase::Failed,
                    ("Complete", false, "ResultUnreadable", e.to_string()),
                ),
            },
            Err(message) => Report::new(
                LoadTestPhase::Failed,
                ("Complete", false, "ResultUnreadable", message),
            ),
        };
        let report = Report {
            start_at_unix_ms: status.start_at_unix_ms,
            ..report
        };
        write_status(&lt, &ctx, &status, report, Some(&target)).await?;
        return Ok(Action::await_change());
    }

    let start_at = match status.start_at_unix_ms {
        Some(at) => at,
        None if running_count == n => {
            let at =
                Timestamp::now().as_millisecond() + i64::from(lt.spec.start_delay_seconds) * 1000;
            let mut report = Report::new(
                LoadTestPhase::Running,
                (
                    "Started",
                    true,
                    "BarrierReleased",
                    format!(
                        "all {n} generator pods run; they start at {}",
                        Timestamp::from_millisecond(at).unwrap_or(Timestamp::UNIX_EPOCH)
                    ),
                ),
            );
            report.start_at_unix_ms = Some(at);
            report.running_pods = running_count;
            // Recorded before any pod sees it, so a retry gives the same time.
            write_status(&lt, &ctx, &status, report, Some(&target)).await?;
            at
        }
        None => {
            let mut report = Report::new(
                LoadTestPhase::Pending,
                (
                    "Started",
                    false,
                    "WaitingForPods",
                    format!("{running_count} of {n} generator pods running"),
                ),
            );
            report.running_pods = running_count;
            write_status(&lt, &ctx, &status, report, Some(&target)).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let value = start_at.to_string();
    for pod in &listed {
        if pod.annotations().get(START_AT_ANNOTATION) == Some(&value) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {START_AT_ANNOTATION: value}}});
        pods.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::kube(
            "annotate",
            format!("Pod/{namespace}/{}", pod.name_any()),
        ))?;
    }
    if status.start_at_unix_ms.is_some() && status.running_pods != running_count {
        let mut report = Report::new(
            LoadTestPhase::Running,
            ("Started", true, "BarrierReleased", started_message(&status)),
        );
        report.start_at_unix_ms = Some(start_at);
        report.running_pods = running_count;
        write_status(&lt, &ctx, &status, report, Some(&target)).await?;
    }
    Ok(Action::requeue(Duration::from_secs(10)))
}

fn started_message(status: &ChatLoadTestStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Started")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The final report of a merged result.
fn judged(merged: Summary) -> Report {
    let failed: Vec<String> = merged
        .failed()
        .iter()
        .map(|v| format!("{} (actual {})", v.rule, v.actual))
        .collect();
    let shards = merged.generator.threads;
    let mut report = Report::new(
        if merged.passed {
            LoadTestPhase::Succeeded
        } else {
            LoadTestPhase::Failed
        },
        (
            "Complete",
            true,
            "ResultsMerged",
            format!(
                "{} clients, {} deliveries, over {shards} generator thread(s)",
                merged.run.clients, merged.deliveries.total
            ),
        ),
    );
    report.conditions.push(if merged.passed {
        (
            "Passed",
            true,
            "ThresholdsPassed",
            format!("all {} thresholds passed", merged.thresholds.len()),
        )
    } else {
        (
            "Passed",
            false,
            "ThresholdsFailed",
            format!("failed: {}", failed.join(", ")),
        )
    });
    report.result = Some(merged);
    report
}

/// The status's view of the target.
struct Target {
    urls: Vec<String>,
    /// With a ChatCluster that has auth on: its Secret (name, key) holding the JWT key.
    jwt_secret: Option<(String, String)>,
}

/// The target, or why it cannot be resolved yet.
async fn resolve_target(
    lt: &ChatLoadTest,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Target, String>> {
    let target = &lt.spec.target;
    if let Some(urls) = &target.urls {
        return Ok(Ok(Target {
            urls: urls.clone(),
            jwt_secret: None,
        }));
    }
    let Some(cluster) = &target.chat_cluster else {
        return Ok(Err("target names neither a chatCluster nor urls".into()));
    };
    let clusters: Api<ChatCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let cc = clusters.get_opt(cluster).await.map_err(Error::kube(
        "get",
        format!("ChatCluster/{namespace}/{cluster}"),
    ))?;
    Ok(match cc {
        None => Err(format!(
            "ChatCluster {cluster} does not exist in namespace {namespace}"
        )),
        Some(cc) => Ok(Target {
            urls: vec![chat_server::endpoint(&cc)],
            jwt_secret: cc
                .spec
                .server
                .auth
                .enabled
                .then(|| (Names::of(&cc).secret(), JWT_SECRET_KEY.to_string())),
        }),
    })
}

/// The generator pods' command line, checked by chat-load's own parser.
struct Generators {
    parallelism: i32,
    /// chat-load's arguments, but the shard.
    args: Vec<String>,
    /// The rules the merged result is judged by (chat-load's defaults included).
    rules: Vec<Threshold>,
}

impl Generators {
    fn new(lt: &ChatLoadTest, target: &Target) -> Result<Self, String> {
        let spec = &lt.spec;
        let mut args: Vec<String> = Vec::new();
        for url in &target.urls {
            args.extend(["--url".into(), url.clone()]);
        }
        args.extend(scenario_args(&spec.scenario));
        for rule in &spec.thresholds {
            args.extend(["--threshold".into(), rule.clone()]);
        }
        let run_id = format!(
            "{}-{}",
            lt.name_any(),
            lt.uid().unwrap_or_default().get(..8).unwrap_or_default()
        );
        let run_id: String = run_id.trim_end_matches('-').chars().take(40).collect();
        args.extend([
            "--run-id".into(),
            run_id,
            "--no-progress".into(),
            "--start-at-file".into(),
            format!("{START_DIR}/start-at"),
        ]);
        let n = spec.parallelism;
        let mut parsed = loadtest::Args::try_parse_from(
            std::iter::once("chat-load".to_string())
                .chain(args.iter().cloned())
                .chain(["--shard".into(), format!("0/{n}")]),
        )
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_string()
        })?;
        parsed.resolve()?;
        Ok(Self {
            parallelism: n,
            rules: parsed.rules(),
            args,
        })
    }

    fn job(&self, lt: &ChatLoadTest, target: &Target) -> Value {
        let name = lt.name_any();
        let n = self.parallelism;
        let labels = json!({
            "app.kubernetes.io/name": "chat-load",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": MANAGER,
            LOAD_TEST_LABEL: name,
        });
        let mut args = self.args.clone();
        args.extend(["--shard".into(), format!("$(JOB_COMPLETION_INDEX)/{n}")]);
        let env: Vec<Value> = target
            .jwt_secret
            .iter()
            .map(|(secret, key)| {
                json!({
                    "name": "CHAT_LOAD_JWT_SECRET",
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
                })
            })
            .collect();
        let resources = if lt.spec.resources == Default::default() {
            json!({
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "1Gi"},
            })
        } else {
            serde_json::to_value(&lt.spec.resources).unwrap_or_default()
        };
        // Without blockOwnerDeletion, which would need chatloadtests/finalizers.
        let owner = lt.controller_owner_ref(&()).map(|mut o| {
            o.block_owner_deletion = None;
            vec![o]
        });
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": labels,
                "ownerReferences": owner,
            },
            "spec": {
                "completionMode": "Indexed",
                "completions": n,
                "parallelism": n,
                // A shard cannot be rerun alone: it would miss the barrier.
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [{
                            "name": CONTAINER,
                            "image": lt.spec.image,
                            "args": args,
                            "env": env,
                            "resources": resources,
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "start", "mountPath": START_DIR, "readOnly": true}],
                        }],
                        "volumes": [{
                            "name": "start",
                            "downwardAPI": {"items": [{
                                "path": "start-at",
                                "fieldRef": {"fieldPath": format!("metadata.annotations['{START_AT_ANNOTATION}']")},
                            }]},
                        }],
                    },
                },
            },
        })
    }
}

/// chat-load flags for the scenario fields that are set.
fn scenario_args(s: &Scenario) -> Vec<String> {
    let mut args = Vec::new();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.extend([format!("--{name}"), value]);
        }
    };
    let text = |v: &Option<String>| v.clone();
    flag("clients", s.clients.map(|v| v.to_string()));
    flag("rooms", s.rooms.map(|v| v.to_string()));
    flag("messages", s.messages.map(|v| v.to_string()));
    flag("rate", s.rate.map(|v| v.to_string()));
    flag("batch-size", s.batch_size.map(|v| v.to_string()));
    flag("batch-interval", text(&s.batch_interval));
    flag("stages", text(&s.stages));
    flag("room-sizes", text(&s.room_sizes));
    flag("duration", text(&s.duration));
    flag("connect-timeout", text(&s.connect_timeout));
    flag("drain-timeout", text(&s.drain_timeout));
    flag("body-size", s.body_size.map(|v| v.to_string()));
    flag("churn", s.churn.map(|v| v.to_string()));
    flag("threads", s.threads.map(|v| v.to_string()));
    if s.closed_loop == Some(true) {
        args.push("--closed-loop".into());
    }
    args
}

fn phase_of(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The reason of a Job condition of this type with status True.
fn job_condition(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_else(|| type_.to_string()))
}

/// The completion index of a Job pod.
fn index_of(pod: &Pod) -> Option<u32> {
    pod.annotations()
        .get("batch.kubernetes.io/job-completion-index")?
        .parse()
        .ok()
}

/// The last lines of a pod's log.
async fn log_tail(pods: &Api<Pod>, pod: &Pod) -> Result<String, String> {
    let params = LogParams {
        container: Some(CONTAINER.into()),
        tail_lines: Some(LOG_TAIL),
        ..LogParams::default()
    };
    pods.logs(&pod.name_any(), &params)
        .await
        .map_err(|e| format!("cannot read the log of pod {}: {e}", pod.name_any()))
}

/// What the failed pods said last.
async fn failure_detail(pods: &Api<Pod>, listed: &[Pod]) -> String {
    let mut details = Vec::new();
    for pod in listed.iter().filter(|p| phase_of(p) == "Failed") {
        let last = log_tail(pods, pod)
            .await
            .map(|log| log.lines().last().unwrap_or_default().to_string())
            .unwrap_or_else(|e| e);
        details.push(format!("pod {}: {last}", pod.name_any()));
    }
    match details.is_empty() {
        true => String::new(),
        false => format!(": {}", details.join("; ")),
    }
}

/// Every shard's summary, from the last summary line of its pod's log.
async fn collect(pods: &Api<Pod>, listed: &[Pod], n: i32) -> Result<Vec<Summary>, String> {
    let mut by_index: BTreeMap<u32, Summary> = BTreeMap::new();
    for pod in listed.iter().filter(|p| phase_of(p) == "Succeeded") {
        let Some(index) = index_of(pod) else { continue };
        let log = log_tail(pods, pod).await?;
        let summary = log
            .lines()
            .rev()
            .find(|line| line.starts_with('{'))
            .ok_or_else(|| format!("pod {} logged no summary line", pod.name_any()))
            .and_then(|line| {
                serde_json::from_str::<Summary>(line).map_err(|e| {
                    format!(
                        "pod {}: the last JSON line is not a chat-load summary: {e}",
                        pod.name_any()
                    )
                })
            })?;
        by_index.insert(index, summary);
    }
    if by_index.len() != n as usize {
        return Err(format!(
            "results from {} of {n} generator pods (completion indexes {:?})",
            by_index.len(),
            by_index.keys().collect::<Vec<_>>()
        ));
    }
    Ok(by_index.into_values().collect())
}

/// Writes the status for `report`, keeping conditions it does not set.
async fn write_status(
    lt: &ChatLoadTest,
    ctx: &Context,
    previous: &ChatLoadTestStatus,
    report: Report,
    target: Option<&Target>,
) -> Result<()> {
    let now = Time(Timestamp::now());
    let stamp = Stamp {
        generation: lt.meta().generation,
        previous: &previous.conditions,
        now: &now,
    };
    let mut conditions: Vec<Condition> = previous.conditions.clone();
    for (kind, ready, reason, message) in report.conditions {
        let verdict = Verdict {
            ready,
            reason,
            message,
        };
        let updated = stamp.condition(kind, verdict);
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(existing) => *existing = updated,
            None => conditions.push(updated),
        }
    }
    let status = ChatLoadTestStatus {
        phase: Some(report.phase),
        conditions,
        job: Some(lt.name_any()),
        urls: target.map(|t| t.urls.clone()).unwrap_or_default(),
        running_pods: report.running_pods,
        start_at_unix_ms: report.start_at_unix_ms.or(previous.start_at_unix_ms),
        passed: report.result.as_ref().map(|r| r.passed),
        result: report
            .result
            .map(|r| serde_json::to_value(r).unwrap_or_default()),
    };
    if lt.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let namespace = lt.namespace().unwrap_or_default();
    let api: Api<ChatLoadTest> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch_status(
        &lt.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::kube(
        "update status of",
        format!("ChatLoadTest/{namespace}/{}", lt.name_any()),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{ChatLoadTestSpec, LoadTarget};

    fn load_test(scenario: Scenario, thresholds: &[&str]) -> ChatLoadTest {
        let mut lt = ChatLoadTest::new(
            "smoke",
            ChatLoadTestSpec {
                target: LoadTarget {
                    chat_cluster: None,
                    urls: Some(vec!["ws://chat.ns.svc:8080/ws".into()]),
                },
                parallelism: 3,
                image: "chat-load:test".into(),
                scenario,
                thresholds: thresholds.iter().map(|s| s.to_string()).collect(),
                start_delay_seconds: 5,
                resources: Default::default(),
            },
        );
        lt.metadata.uid = Some("0123456789abcdef".into());
        lt
    }

    fn target() -> Target {
        Target {
            urls: vec!["ws://chat.ns.svc:8080/ws".into()],
            jwt_secret: Some(("chat-secrets".into(), JWT_SECRET_KEY.into())),
        }
    }

    #[test]
    fn the_job_runs_one_shard_per_pod_behind_the_barrier() {
        let scenario = Scenario {
            clients: Some(30),
            rooms: Some(3),
            batch_interval: Some("1s".into()),
            ..Scenario::default()
        };
        let lt = load_test(scenario, &["delivery.p99<50ms"]);
        let g = Generators::new(&lt, &target()).unwrap();
        let job = g.job(&lt, &target());
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(
            (spec["completions"].clone(), spec["parallelism"].clone()),
            (json!(3), json!(3))
        );
        let container = &spec["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("--clients 30 --rooms 3 --batch-interval 1s"),
            "{joined}"
        );
        assert!(joined.contains("--threshold delivery.p99<50ms"), "{joined}");
        assert!(joined.contains("--run-id smoke-01234567"), "{joined}");
        assert!(
            joined.ends_with("--shard $(JOB_COMPLETION_INDEX)/3"),
            "{joined}"
        );
        assert!(
            joined.contains("--start-at-file /etc/chat-load/start-at"),
            "{joined}"
        );
        assert_eq!(
            container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "chat-secrets"
        );
        let volume = &spec["template"]["spec"]["volumes"][0]["downwardAPI"]["items"][0];
        assert_eq!(
            volume["fieldRef"]["fieldPath"],
            "metadata.annotations['chatback.dev/start-at']"
        );
        assert!(g.rules.iter().any(|r| r.rule == "missing==0"));
        assert!(g.rules.iter().any(|r| r.rule == "delivery.p99<50ms"));
    }

    #[test]
    fn a_bad_scenario_fails_with_chat_loads_message() {
        let bad = |scenario: Scenario, thresholds: &[&str]| {
            Generators::new(&load_test(scenario, thresholds), &target())
                .err()
                .unwrap()
        };
        let err = bad(
            Scenario {
                batch_interval: Some("5".into()),
                ..Scenario::default()
            },
            &[],
        );
        assert!(err.contains("has no unit"), "{err}");
        let err = bad(Scenario::default(), &["latency<5ms"]);
        assert!(err.contains("unknown metric 'latency'"), "{err}");
        let err = bad(
            Scenario {
                clients: Some(2),
                rooms: Some(1),
                ..Scenario::default()
            },
            &[],
        );
        assert!(err.contains("more shards than clients"), "{err}");
    }
}
