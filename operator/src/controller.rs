//! The reconciler: drives the cluster towards what the ChatCluster asks for.
//!
//! Shaped like kube-rs's controller-rs: a free [`reconcile`] and [`error_policy`]
//! over a shared [`Context`]. One reconcile
//! 1. checks what cannot be built around (an invalid spec, a missing external Secret),
//! 2. resolves the generated credentials (kept, never rotated),
//! 3. server-side-applies every child under one field manager (which also
//!    repairs drift: an edited or deleted child is restored),
//! 4. deletes optional children whose switch was turned off,
//! 5. writes the status read from the applied children.
//!
//! Deletion runs through a finalizer that honours PostgreSQL's retention policy
//! before the garbage collector cascades over the ownerReferences.

use std::sync::Arc;
use std::time::Duration;

use crds::{BackendMode, ChatCluster, ChatClusterStatus, RetentionPolicy};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::children::{self, Child};
use crate::error::{Error, Result};
use crate::meta::{
    CONFIG_HASH_ANNOTATION, Component, FINALIZER, MANAGED_BY_SELECTOR, MANAGER, Names,
};
use crate::metrics::Metrics;
use crate::secrets::Credentials;
use crate::server::external_refs;
use crate::status::{self, Observed};

/// Timing knobs; tests shorten them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Periodic re-reconcile of a healthy cluster (drift the watches missed).
    pub requeue: Duration,
    /// Re-check interval while waiting on something outside the operator (a Secret).
    pub pending_requeue: Duration,
    /// First retry delay after an error; doubles per consecutive failure.
    pub retry_base: Duration,
    /// Upper bound of the retry delay.
    pub retry_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            requeue: Duration::from_secs(300),
            pending_requeue: Duration::from_secs(30),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    backoff: Backoff,
}

impl Context {
    /// `instance` names this operator replica in Events (its pod name).
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        instance: Option<String>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            backoff: Backoff::new(settings.retry_base, settings.retry_max),
            settings,
        })
    }

    /// Records an Event; failing to record one is logged, never fatal.
    async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        reference: &ObjectReference,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            warn!(%error, reason, "could not record an Event");
        }
    }
}

fn key_of(cc: &ChatCluster) -> (String, String) {
    (cc.namespace().unwrap_or_default(), cc.name_any())
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The name of the ChatCluster CRD.
pub const CRD_NAME: &str = "chatclusters.chatback.dev";

/// Fails with a clear message unless the ChatCluster CRD is installed and serves
/// the version this operator reads.
pub async fn ensure_crd_installed(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .get_opt(CRD_NAME)
        .await
        .map_err(Error::kube(
            "get",
            format!("CustomResourceDefinition/{CRD_NAME}"),
        ))?
        .ok_or_else(|| Error::CrdNotInstalled(format!("{CRD_NAME} not found")))?;
    let version = ChatCluster::version(&());
    let served = crd
        .spec
        .versions
        .iter()
        .any(|v| v.name == version && v.served);
    if !served {
        return Err(Error::CrdNotInstalled(format!(
            "{CRD_NAME} does not serve {version}"
        )));
    }
    Ok(())
}

/// Runs the controller until `shutdown` resolves, then lets in-flight
/// reconciles finish. Every child kind is owned and watched (by the operator's
/// label), so a deleted or edited child triggers a reconcile that restores it.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let children = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    Controller::new(
        Api::<ChatCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client.clone()), children.clone())
    .owns(Api::<StatefulSet>::all(client.clone()), children.clone())
    .owns(Api::<Service>::all(client.clone()), children.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), children.clone())
    .owns(Api::<Secret>::all(client.clone()), children.clone())
    .owns(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        children.clone(),
    )
    .owns(
        Api::<PodDisruptionBudget>::all(client.clone()),
        children.clone(),
    )
    .owns(Api::<NetworkPolicy>::all(client.clone()), children)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => debug!(%object, "reconciled"),
            Err(error) => debug!(%error, "reconcile did not complete"),
        }
    })
    .await;
    info!("controller stopped");
}

/// Reconciles one ChatCluster.
pub async fn reconcile(cc: Arc<ChatCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let key = key_of(&cc);
    let api: Api<ChatCluster> = Api::namespaced(ctx.client.clone(), &key.0);
    let action = finalizer(&api, FINALIZER, cc, |event| async {
        match event {
            FinalizerEvent::Apply(cc) => apply(&cc, &ctx).await,
            FinalizerEvent::Cleanup(cc) => cleanup(&cc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.backoff.reset(&key);
    Ok(action)
}

/// Retries a failed reconcile with exponential backoff, counting and reporting the failure.
pub fn error_policy(cc: Arc<ChatCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let delay = ctx.backoff.next(key_of(&cc));
    warn!(
        namespace = cc.namespace().unwrap_or_default(),
        name = cc.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    let reference = cc.object_ref(&());
    let note = error.to_string();
    tokio::spawn(async move {
        ctx.publish(
            EventType::Warning,
            "ReconcileFailed",
            "Reconcile",
            note,
            &reference,
        )
        .await;
    });
    Action::requeue(delay)
}

async fn apply(cc: &ChatCluster, ctx: &Context) -> Result<Action> {
    let names = Names::of(cc);
    let reference = cc.object_ref(&());

    let problems = cc.spec.problems();
    if !problems.is_empty() {
        let message = problems.join("; ");
        ctx.publish(
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            message.clone(),
            &reference,
        )
        .await;
        let pending = status::pending(cc, "InvalidSpec", &message, &now());
        write_status(cc, ctx, pending).await?;
        return Ok(Action::await_change());
    }
    if let Some(message) = missing_external_secret(cc, &ctx.client).await? {
        ctx.publish(
            EventType::Warning,
            "SecretNotFound",
            "Validate",
            message.clone(),
            &reference,
        )
        .await;
        let pending = status::pending(cc, "SecretNotFound", &message, &now());
        write_status(cc, ctx, pending).await?;
        return Ok(Action::requeue(ctx.settings.pending_requeue));
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let existing = secrets
        .get_opt(&names.secret())
        .await
        .map_err(Error::kube("get", format!("Secret/{}", names.secret())))?;
    let (creds, generated) = Credentials::resolve(cc, existing.as_ref());
    if !generated.is_empty() {
        info!(secret = names.secret(), keys = ?generated, "generated credentials");
        ctx.publish(
            EventType::Normal,
            "SecretGenerated",
            "Provision",
            format!(
                "generated {} in Secret {}",
                generated.join(", "),
                names.secret()
            ),
            &reference,
        )
        .await;
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let previous_hash = deployments
        .get_opt(&names.server())
        .await
        .map_err(Error::kube("get", format!("Deployment/{}", names.server())))?
        .map(|d| pod_template_hash(&d));

    let desired = children::desired(cc, &creds);
    let mut observed = Observed::default();
    for child in &desired {
        let applied = apply_child(&ctx.client, &names.namespace, child).await?;
        match (child.resource.kind.as_str(), child.name.as_str()) {
            ("Deployment", _) => observed.server = applied.try_parse::<Deployment>().ok(),
            ("StatefulSet", name) if name == names.redis() => {
                observed.redis = applied.try_parse::<StatefulSet>().ok();
            }
            ("StatefulSet", name) if name == names.postgres() => {
                observed.postgres = applied.try_parse::<StatefulSet>().ok();
            }
            _ => {}
        }
    }
    let new_hash = observed.server.as_ref().map(pod_template_hash);
    match previous_hash {
        None => {
            ctx.publish(
                EventType::Normal,
                "Provisioned",
                "Provision",
                format!("applied {} child objects", desired.len()),
                &reference,
            )
            .await;
        }
        Some(previous) if Some(&previous) != new_hash.as_ref() => {
            ctx.publish(
                EventType::Normal,
                "ConfigChanged",
                "Rollout",
                "configuration or credentials changed; rolling the chat-server pods".into(),
                &reference,
            )
            .await;
        }
        Some(_) => {}
    }

    prune(cc, ctx, &desired, &reference).await?;

    let computed = status::compute(cc, &observed, &now());
    let phase = computed.phase;
    let previous_phase = cc.status.as_ref().and_then(|s| s.phase);
    write_status(cc, ctx, computed).await?;
    if previous_phase != phase
        && let Some(phase) = phase
    {
        ctx.publish(
            EventType::Normal,
            "PhaseChanged",
            "Reconcile",
            format!("phase is now {}", phase.as_str()),
            &reference,
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.requeue))
}

fn pod_template_hash(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

/// Server-side apply under the operator's one field manager. `force` takes
/// ownership back from anyone who edited a field the operator owns: that is
/// how drift is repaired.
async fn apply_child(client: &Client, namespace: &str, child: &Child) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &child.resource);
    let params = PatchParams::apply(MANAGER).force();
    let applied = api
        .patch(&child.name, &params, &Patch::Apply(&child.object))
        .await
        .map_err(Error::kube("apply", child.describe()))?;
    debug!(child = child.describe(), "applied");
    Ok(applied)
}

/// Deletes optional children that the spec no longer asks for, but only those
/// this ChatCluster controls: a same-named object someone else made is left alone.
async fn prune(
    cc: &ChatCluster,
    ctx: &Context,
    desired: &[Child],
    reference: &ObjectReference,
) -> Result<()> {
    let namespace = cc.namespace().unwrap_or_default();
    let uid = cc.uid().unwrap_or_default();
    for stale in children::unwanted(cc, desired) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &stale.resource);
        let Some(object) = api
            .get_opt(&stale.name)
            .await
            .map_err(Error::kube("get", stale.describe()))?
        else {
            continue;
        };
        if !object.owner_references().iter().any(|o| o.uid == uid) {
            continue;
        }
        match api.delete(&stale.name, &DeleteParams::background()).await {
            Ok(_) => {
                info!(child = stale.describe(), "deleted: no longer in the spec");
                ctx.publish(
                    EventType::Normal,
                    "Removed",
                    "Prune",
                    format!("deleted {}: no longer in the spec", stale.describe()),
                    reference,
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(Error::kube("delete", stale.describe())(e)),
        }
    }
    Ok(())
}

/// Returns why an External backend's Secret is unusable, if it is.
async fn missing_external_secret(cc: &ChatCluster, client: &Client) -> Result<Option<String>> {
    let namespace = cc.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for (backend, reference) in external_refs(cc) {
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube("get", format!("Secret/{}", reference.name)))?;
        let problem = match secret {
            None => "not found",
            Some(s) if !has_key(&s, &reference.key) => "has no such key",
            Some(_) => continue,
        };
        let message = Error::MissingSecret {
            backend,
            secret: format!("{}/{}", reference.name, reference.key),
            reason: problem.into(),
        };
        return Ok(Some(message.to_string()));
    }
    Ok(None)
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

/// Writes the status subresource, skipping the write when nothing changed so a
/// settled cluster costs no API writes.
async fn write_status(cc: &ChatCluster, ctx: &Context, status: ChatClusterStatus) -> Result<()> {
    if cc.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<ChatCluster> =
        Api::namespaced(ctx.client.clone(), &cc.namespace().unwrap_or_default());
    let patch = json!({ "status": status });
    api.patch_status(
        &cc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::kube(
        "patch status of",
        format!("ChatCluster/{}", cc.name_any()),
    ))?;
    Ok(())
}

/// Runs the retention policy before the ChatCluster goes away. Children are
/// left to the garbage collector (ownerReferences); what is decided here is
/// the fate of PostgreSQL's data claims, which nothing owns. (Redis's claim,
/// with persistence on, goes with its StatefulSet: see `redis.rs`.)
async fn cleanup(cc: &ChatCluster, ctx: &Context) -> Result<Action> {
    let names = Names::of(cc);
    let reference = cc.object_ref(&());
    if cc.spec.postgres.mode == BackendMode::External {
        return Ok(Action::await_change());
    }
    match cc.spec.postgres.storage.retention_policy {
        RetentionPolicy::Delete => {
            // The StatefulSet goes first: while it exists, a replacement pod
            // would have its claim created again.
            let statefulsets: Api<StatefulSet> =
                Api::namespaced(ctx.client.clone(), &names.namespace);
            match statefulsets
                .delete(&names.postgres(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => {
                    return Err(Error::kube(
                        "delete",
                        format!("StatefulSet/{}", names.postgres()),
                    )(e));
                }
            }
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &names.namespace);
            let selector = format!(
                "{},app.kubernetes.io/managed-by={MANAGER}",
                names.selector_string(Component::Postgres)
            );
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::kube("list", "PersistentVolumeClaims"))?;
            let mut deleted = Vec::new();
            for claim in list {
                let name = claim.name_any();
                match claims.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => deleted.push(name),
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(e) => {
                        return Err(Error::kube(
                            "delete",
                            format!("PersistentVolumeClaim/{name}"),
                        )(e));
                    }
                }
            }
            info!(cluster = names.cluster, claims = ?deleted, "retention policy Delete: claims deleted");
            ctx.publish(
                EventType::Normal,
                "VolumesDeleted",
                "Cleanup",
                format!(
                    "retention policy Delete: deleted claims [{}]",
                    deleted.join(", ")
                ),
                &reference,
            )
            .await;
        }
        RetentionPolicy::Retain => {
            // The retained data needs its password: detach the Secret from the
            // ChatCluster (re-apply it without the ownerReference) so the garbage
            // collector keeps it, and a recreated cluster of the same name adopts both.
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
            let existing = secrets
                .get_opt(&names.secret())
                .await
                .map_err(Error::kube("get", format!("Secret/{}", names.secret())))?;
            if let Some(existing) = existing {
                let mut kept = Credentials::from_secret(&existing).to_secret(cc);
                kept.metadata.owner_references = None;
                apply_child(&ctx.client, &names.namespace, &Child::of(&kept)).await?;
            }
            info!(
                cluster = names.cluster,
                "retention policy Retain: claims and Secret kept"
            );
            ctx.publish(
                EventType::Normal,
                "VolumesRetained",
                "Cleanup",
                format!(
                    "retention policy Retain: kept PostgreSQL's claims and Secret {}",
                    names.secret()
                ),
                &reference,
            )
            .await;
        }
    }
    Ok(Action::await_change())
}
