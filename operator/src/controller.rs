//! The reconciler: drives the cluster towards what the ChatCluster asks for.
//!
//! Shaped like kube-rs's controller-rs: a free [`reconcile`] and [`error_policy`]
//! over a shared [`Context`]. One reconcile runs three steps:
//! 1. validate: checks what cannot be built around (an invalid spec, a missing
//!    external Secret, a data volume whose password is gone), and stops with a
//!    Pending status that says what to do;
//! 2. provision: resolves the generated credentials (kept, never rotated),
//!    server-side-applies every child under one field manager (which also
//!    repairs drift: an edited or deleted child is restored), and deletes
//!    optional children whose switch was turned off. A child the API server
//!    refuses does not stop the others: every failure is collected into the
//!    Reconciled condition, and the reconcile is retried;
//! 3. observe: reads the workloads back and writes the status from what their
//!    controllers report for the current spec.
//!
//! Every Event goes through [`Context::event`], with one of the reasons in
//! [`EventReason`].
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
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::children::chat_server::{ExternalInputs, external_refs};
use crate::children::secrets::Credentials;
use crate::children::secrets::POSTGRES_PASSWORD_KEY;
use crate::children::{self, Child};
use crate::error::{Error, Result};
use crate::events::EventReason;
use crate::meta::{
    CONFIG_HASH_ANNOTATION, Component, FINALIZER, MANAGED_BY_SELECTOR, MANAGER, Names,
};
use crate::metrics::Metrics;
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

    /// Records an Event about `reference`, of the type and action its
    /// reason goes with; failing to record one is logged, never fatal.
    pub async fn event(&self, reason: EventReason, note: String, reference: &ObjectReference) {
        let event = Event {
            type_: reason.event_type(),
            reason: reason.as_str().into(),
            note: Some(note),
            action: reason.action().into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            warn!(%error, reason = reason.as_str(), "could not record an Event");
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
    ensure_served::<ChatCluster>(client).await
}

/// Fails unless the CRD of `K` is installed and serves `K`'s version.
pub async fn ensure_served<K: Resource<DynamicType = ()>>(client: &Client) -> Result<()> {
    let name = format!("{}.{}", K::plural(&()), K::group(&()));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .get_opt(&name)
        .await
        .map_err(Error::kube(
            "get",
            format!("CustomResourceDefinition/{name}"),
        ))?
        .ok_or_else(|| Error::CrdNotInstalled(format!("{name} not found")))?;
    let version = K::version(&());
    let served = crd
        .spec
        .versions
        .iter()
        .any(|v| v.name == version && v.served);
    if !served {
        return Err(Error::CrdNotInstalled(format!(
            "{name} does not serve {version}"
        )));
    }
    Ok(())
}

/// Which namespaces the controller watches and reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs the cluster-wide ClusterRole, k8s/rbac.yaml).
    #[default]
    Cluster,
    /// Only these (a Role per namespace is enough: k8s/namespaced/).
    Namespaces(Vec<String>),
}

impl Scope {
    /// Parses `WATCH_NAMESPACES`: a comma-separated list of namespaces, or
    /// empty for every namespace.
    pub fn parse(list: &str) -> Result<Self> {
        let namespaces: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if let Some(bad) = namespaces.iter().find(|n| !is_dns_label(n)) {
            return Err(Error::Input(format!(
                "WATCH_NAMESPACES: {bad:?} is not a namespace name (a DNS label: lowercase letters, digits and '-', at most 63 characters)"
            )));
        }
        Ok(if namespaces.is_empty() {
            Scope::Cluster
        } else {
            Scope::Namespaces(namespaces)
        })
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// An Api over every namespace, or one.
pub(crate) fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller (one per watched namespace, or one for the cluster)
/// until `shutdown` is cancelled, then lets in-flight reconciles finish.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: CancellationToken) {
    per_scope(ctx, scope, shutdown, run_in).await;
    info!("controller stopped");
}

/// Runs `run_in` once for the cluster, or once per watched namespace.
pub(crate) async fn per_scope<F, Fut>(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: CancellationToken,
    run_in: F,
) where
    F: Fn(Arc<Context>, Option<String>, CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    match scope {
        Scope::Cluster => run_in(ctx, None, shutdown).await,
        Scope::Namespaces(namespaces) => {
            futures::future::join_all(
                namespaces
                    .into_iter()
                    .map(|ns| run_in(ctx.clone(), Some(ns), shutdown.clone())),
            )
            .await;
        }
    }
}

/// One controller over `namespace` (or all). Every child kind is owned and
/// watched (by the operator's label), so a deleted or edited child triggers a
/// reconcile that restores it. Every Secret is watched too: an External
/// backend's Secret is the user's, unlabelled, and a change to it must reach
/// the clusters that reference it.
async fn run_in(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let children = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    let controller = Controller::new(
        scoped::<ChatCluster>(&client, ns),
        watcher::Config::default(),
    );
    let clusters = controller.store();
    controller
        .owns(scoped::<Deployment>(&client, ns), children.clone())
        .owns(scoped::<StatefulSet>(&client, ns), children.clone())
        .owns(scoped::<Service>(&client, ns), children.clone())
        .owns(scoped::<ConfigMap>(&client, ns), children.clone())
        .owns(
            scoped::<HorizontalPodAutoscaler>(&client, ns),
            children.clone(),
        )
        .owns(scoped::<PodDisruptionBudget>(&client, ns), children.clone())
        .owns(scoped::<NetworkPolicy>(&client, ns), children)
        .watches(
            scoped::<Secret>(&client, ns),
            watcher::Config::default(),
            move |secret: Secret| referencing(&clusters.state(), &secret),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(%object, "reconciled"),
                Err(error) => debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
}

/// The ChatClusters a Secret matters to: the one whose generated Secret it
/// is (by name: under Retain it has no ownerReference), and those whose
/// External backend reads it.
fn referencing(clusters: &[Arc<ChatCluster>], secret: &Secret) -> Vec<ObjectRef<ChatCluster>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    clusters
        .iter()
        .filter(|cc| cc.namespace() == namespace)
        .filter(|cc| {
            Names::of(cc).secret() == name || external_refs(cc).iter().any(|(_, r)| r.name == name)
        })
        .map(|cc| ObjectRef::from_obj(cc.as_ref()))
        .collect()
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
        ctx.event(EventReason::ReconcileFailed, note, &reference)
            .await;
    });
    Action::requeue(delay)
}

/// Runs [`reconcile_children`]; a failure it did not already record in the
/// status (an API error before the children were applied) is recorded as the
/// Reconciled condition, so `kubectl get cc -o yaml` shows it, not only an Event.
async fn apply(cc: &ChatCluster, ctx: &Context) -> Result<Action> {
    let result = reconcile_children(cc, ctx).await;
    if let Err(error) = &result
        && !matches!(error, Error::Children(_))
    {
        let failed = status::with_reconcile_failure(cc, &[error.to_string()], &now());
        if let Err(e) = write_status(cc, ctx, failed).await {
            warn!(error = %e, "could not record the reconcile failure in the status");
        }
    }
    result
}

/// validate → provision → observe. A cluster that fails validation waits
/// (see [`hold`]) and is not provisioned.
async fn reconcile_children(cc: &ChatCluster, ctx: &Context) -> Result<Action> {
    let inputs = match validate(cc, ctx).await {
        Ok(inputs) => inputs,
        Err(error) => return hold(cc, ctx, error).await,
    };
    let provisioned = provision(cc, ctx, inputs).await?;
    observe(cc, ctx, provisioned).await
}

/// What validation read that provisioning needs.
struct Inputs {
    /// The External backends' Secret values.
    external: ExternalInputs,
    /// The cluster's generated Secret, if it exists yet.
    secret: Option<Secret>,
}

/// Checks what cannot be built around: the spec ([`Error::InvalidSpec`]), the
/// External backends' Secrets ([`Error::MissingSecret`]), and a PostgreSQL
/// password that cannot be generated ([`Error::PasswordMissing`]).
async fn validate(cc: &ChatCluster, ctx: &Context) -> Result<Inputs> {
    let problems = cc.spec.problems();
    if !problems.is_empty() {
        return Err(Error::InvalidSpec {
            name: cc.name_any(),
            problems,
        });
    }
    let external = external_inputs(cc, &ctx.client).await?;
    let names = Names::of(cc);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let secret = secrets
        .get_opt(&names.secret())
        .await
        .map_err(Error::kube("get", format!("Secret/{}", names.secret())))?;
    check_password(cc, ctx, secret.as_ref()).await?;
    Ok(Inputs { external, secret })
}

/// Stops on a validation failure with a Pending status and a Warning Event:
/// only the user can fix it, so it is not retried with backoff (an invalid
/// spec waits for a change, a Secret is looked at again now and then). Any
/// other error is returned as it is.
async fn hold(cc: &ChatCluster, ctx: &Context, error: Error) -> Result<Action> {
    let pending = Action::requeue(ctx.settings.pending_requeue);
    let (reason, message, action) = match &error {
        Error::InvalidSpec { problems, .. } => (
            EventReason::InvalidSpec,
            problems.join("; "),
            Action::await_change(),
        ),
        Error::MissingSecret { .. } => (EventReason::SecretNotFound, error.to_string(), pending),
        Error::PasswordMissing { .. } => (EventReason::PasswordMissing, error.to_string(), pending),
        _ => return Err(error),
    };
    ctx.event(reason, message.clone(), &cc.object_ref(&()))
        .await;
    let status = status::pending(cc, reason.as_str(), &message, &now());
    write_status(cc, ctx, status).await?;
    Ok(action)
}

/// What provisioning did, for [`observe`] to report.
struct Provisioned {
    /// The desired children less the failures: what the Provisioned Event counts.
    applied: usize,
    /// One message per child that could not be applied or pruned.
    failures: Vec<String>,
    /// The chat-server pod template's hash before the applies (None: no Deployment yet).
    previous_hash: Option<String>,
}

/// Resolves the credentials, server-side-applies every child and prunes the
/// ones the spec no longer asks for. Every child is attempted: one the API
/// server refuses must not keep the others (ConfigMap, Deployment, policies)
/// from following the spec.
async fn provision(cc: &ChatCluster, ctx: &Context, inputs: Inputs) -> Result<Provisioned> {
    let names = Names::of(cc);
    let reference = cc.object_ref(&());
    let (creds, generated) = Credentials::resolve(cc, inputs.secret.as_ref());
    if !generated.is_empty() {
        info!(secret = names.secret(), keys = ?generated, "generated credentials");
        let note = format!(
            "generated {} in Secret {}",
            generated.join(", "),
            names.secret()
        );
        ctx.event(EventReason::SecretGenerated, note, &reference)
            .await;
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let previous_hash = deployments
        .get_opt(&names.server())
        .await
        .map_err(Error::kube("get", format!("Deployment/{}", names.server())))?
        .map(|d| pod_template_hash(&d));

    let desired = children::desired(cc, &creds, &inputs.external);
    let mut failures = Vec::new();
    for child in &desired {
        if child.resource.kind == "StatefulSet" && child.name == names.redis() {
            recreate_on_claim_change(ctx, &names, child, &reference).await?;
        }
        if let Err(error) = apply_child(&ctx.client, &names.namespace, child).await {
            warn!(%error, "could not apply a child");
            failures.push(error.to_string());
        }
    }
    if let Err(error) = prune(cc, ctx, &desired, &reference).await {
        failures.push(error.to_string());
    }
    Ok(Provisioned {
        applied: desired.len().saturating_sub(failures.len()),
        failures,
        previous_hash,
    })
}

/// Reads the workloads back after the applies (the status a workload
/// controller wrote for the new spec, or has not yet: observedGeneration
/// tells), reports what changed in Events, and writes the status.
async fn observe(cc: &ChatCluster, ctx: &Context, provisioned: Provisioned) -> Result<Action> {
    let names = Names::of(cc);
    let reference = cc.object_ref(&());
    let observed = read_workloads(cc, ctx, &names).await?;
    let new_hash = observed.server.as_ref().map(pod_template_hash);
    match provisioned.previous_hash {
        None if observed.server.is_some() => {
            let note = format!("applied {} child objects", provisioned.applied);
            ctx.event(EventReason::Provisioned, note, &reference).await;
        }
        Some(previous) if new_hash.is_some() && Some(&previous) != new_hash.as_ref() => {
            let note = "configuration or credentials changed; rolling the chat-server pods";
            ctx.event(EventReason::ConfigChanged, note.into(), &reference)
                .await;
        }
        _ => {}
    }

    let failures = provisioned.failures;
    let computed = status::compute(cc, &observed, &failures, &now());
    let phase = computed.phase;
    let previous_phase = cc.status.as_ref().and_then(|s| s.phase);
    write_status(cc, ctx, computed).await?;
    if previous_phase != phase
        && let Some(phase) = phase
    {
        let note = format!("phase is now {}", phase.as_str());
        ctx.event(EventReason::PhaseChanged, note, &reference).await;
    }
    if !failures.is_empty() {
        return Err(Error::Children(failures));
    }
    Ok(Action::requeue(ctx.settings.requeue))
}

/// The workloads as the API server holds them now.
async fn read_workloads(cc: &ChatCluster, ctx: &Context, names: &Names) -> Result<Observed> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let server = deployments
        .get_opt(&names.server())
        .await
        .map_err(Error::kube("get", format!("Deployment/{}", names.server())))?;
    let redis = backend(ctx, names, cc.spec.redis.mode, names.redis()).await?;
    let postgres = backend(ctx, names, cc.spec.postgres.mode, names.postgres()).await?;
    Ok(Observed {
        server,
        redis,
        postgres,
    })
}

/// A managed backend's StatefulSet (None for an External one).
async fn backend(
    ctx: &Context,
    names: &Names,
    mode: BackendMode,
    name: String,
) -> Result<Option<StatefulSet>> {
    if mode != BackendMode::Managed {
        return Ok(None);
    }
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &names.namespace);
    statefulsets
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", format!("StatefulSet/{name}")))
}

/// Fails with [`Error::PasswordMissing`] if the PostgreSQL password cannot be
/// generated: the Secret lacks it but the data volume exists. PostgreSQL set
/// its password when that volume was initialised; a new one would lock
/// everyone out of the data.
async fn check_password(cc: &ChatCluster, ctx: &Context, secret: Option<&Secret>) -> Result<()> {
    let has_password = secret.is_some_and(|s| secret_value(s, POSTGRES_PASSWORD_KEY).is_some());
    if cc.spec.postgres.mode != BackendMode::Managed || has_password {
        return Ok(());
    }
    let names = Names::of(cc);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let claim = names.postgres_claim();
    let exists = claims
        .get_opt(&claim)
        .await
        .map_err(Error::kube("get", format!("PersistentVolumeClaim/{claim}")))?
        .is_some();
    if exists {
        return Err(Error::PasswordMissing {
            secret: names.secret(),
            key: POSTGRES_PASSWORD_KEY,
            claim,
        });
    }
    Ok(())
}

/// The Redis StatefulSet's volumeClaimTemplates are immutable, so switching
/// persistence on or off, or resizing it, cannot be applied in place. Redis
/// holds only derived state (counters, presence; PostgreSQL has the
/// history), so the StatefulSet is deleted and created again with the new claims.
async fn recreate_on_claim_change(
    ctx: &Context,
    names: &Names,
    desired: &Child,
    reference: &ObjectReference,
) -> Result<()> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let Some(live) = statefulsets
        .get_opt(&desired.name)
        .await
        .map_err(Error::kube("get", desired.describe()))?
    else {
        return Ok(());
    };
    let wanted: StatefulSet = serde_json::from_value(desired.object.clone()).unwrap_or_default();
    if claims_of(&live) == claims_of(&wanted) {
        return Ok(());
    }
    delete_ignoring_not_found(&statefulsets, &desired.name, desired.describe()).await?;
    let note = format!(
        "redis.persistence changed; recreated {} (its claim template cannot change in place)",
        desired.describe()
    );
    ctx.event(EventReason::RedisRecreated, note, reference)
        .await;
    Ok(())
}

/// What of a StatefulSet's claim templates matters: name, size (in bytes:
/// the API server may print `1024Mi` as `1Gi`), class.
fn claims_of(sts: &StatefulSet) -> Vec<(String, Option<u128>, Option<String>)> {
    sts.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|claim| {
            let spec = claim.spec.as_ref();
            let size = spec
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| quantity_bytes(&q.0));
            let class = spec.and_then(|s| s.storage_class_name.clone());
            (claim.metadata.name.clone().unwrap_or_default(), size, class)
        })
        .collect()
}

/// A storage quantity in bytes, for the forms the CRD admits (an integer or
/// decimal with an optional binary or decimal suffix); None otherwise.
fn quantity_bytes(quantity: &str) -> Option<u128> {
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    digits.checked_mul(multiplier).map(|b| b / scale)
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
        if delete_ignoring_not_found(&api, &stale.name, stale.describe()).await? {
            info!(child = stale.describe(), "deleted: no longer in the spec");
            let note = format!("deleted {}: no longer in the spec", stale.describe());
            ctx.event(EventReason::Removed, note, reference).await;
        }
    }
    Ok(())
}

/// Deletes `name` in the background; one that is already gone is fine. Returns
/// whether this call deleted it.
async fn delete_ignoring_not_found<K>(api: &Api<K>, name: &str, what: String) -> Result<bool>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(e) => Err(Error::kube("delete", what)(e)),
    }
}

/// The values of the External backends' Secret keys, by backend, for the
/// pod-template hash (a rotated URL rolls the pods); or [`Error::MissingSecret`]
/// saying why one is unusable.
async fn external_inputs(cc: &ChatCluster, client: &Client) -> Result<ExternalInputs> {
    let namespace = cc.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut inputs = ExternalInputs::default();
    for (backend, reference) in external_refs(cc) {
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube("get", format!("Secret/{}", reference.name)))?;
        let value = secret
            .as_ref()
            .and_then(|s| secret_value(s, &reference.key));
        let problem = match (&secret, value) {
            (None, _) => "not found",
            (Some(_), None) => "has no such key",
            (Some(_), Some(value)) => {
                inputs.insert(backend, value);
                continue;
            }
        };
        return Err(Error::MissingSecret {
            backend,
            secret: format!("{}/{}", reference.name, reference.key),
            reason: problem.into(),
        });
    }
    Ok(inputs)
}

/// A Secret's value under `key` (the API server has merged any `stringData` into `data`).
fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
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
/// with persistence on, goes with its StatefulSet: see `redis.rs`.) The
/// claims are looked up whatever the current mode: a cluster switched from
/// Managed to External still has the claims its managed PostgreSQL left.
///
/// The Secret with the PostgreSQL password is owned by the ChatCluster only
/// under Delete (see `secrets.rs`): under Retain nothing the garbage collector
/// does, foreground deletion included, can take the password of kept data.
async fn cleanup(cc: &ChatCluster, ctx: &Context) -> Result<Action> {
    let names = Names::of(cc);
    let reference = cc.object_ref(&());
    match cc.spec.postgres.storage.retention_policy {
        RetentionPolicy::Delete => {
            // The StatefulSet goes first: while it exists, a replacement pod
            // would have its claim created again.
            let statefulsets: Api<StatefulSet> =
                Api::namespaced(ctx.client.clone(), &names.namespace);
            let postgres = names.postgres();
            let what = format!("StatefulSet/{postgres}");
            delete_ignoring_not_found(&statefulsets, &postgres, what).await?;
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
                let what = format!("PersistentVolumeClaim/{name}");
                if delete_ignoring_not_found(&claims, &name, what).await? {
                    deleted.push(name);
                }
            }
            info!(cluster = names.cluster, claims = ?deleted, "retention policy Delete: claims deleted");
            let note = format!(
                "retention policy Delete: deleted claims [{}]",
                deleted.join(", ")
            );
            ctx.event(EventReason::VolumesDeleted, note, &reference)
                .await;
        }
        RetentionPolicy::Retain => {
            info!(
                cluster = names.cluster,
                "retention policy Retain: claims and Secret kept"
            );
            let note = format!(
                "retention policy Retain: kept PostgreSQL's claims and Secret {}",
                names.secret()
            );
            ctx.event(EventReason::VolumesRetained, note, &reference)
                .await;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_quantities_compare_by_size() {
        assert_eq!(quantity_bytes("1Gi"), quantity_bytes("1024Mi"));
        assert_eq!(quantity_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
        assert_eq!(quantity_bytes("512"), Some(512));
        assert_ne!(quantity_bytes("1Gi"), quantity_bytes("1G"));
        assert_eq!(quantity_bytes("1Xi"), None);
        assert_eq!(quantity_bytes("Gi"), None);
    }

    #[test]
    fn watch_namespaces_parse_or_explain() {
        assert_eq!(Scope::parse("").unwrap(), Scope::Cluster);
        assert_eq!(Scope::parse(" , ").unwrap(), Scope::Cluster);
        assert_eq!(
            Scope::parse("chat-a, chat-b").unwrap(),
            Scope::Namespaces(vec!["chat-a".into(), "chat-b".into()])
        );
        let error = Scope::parse("chat-a,Bad_NS").unwrap_err().to_string();
        assert!(
            error.contains("\"Bad_NS\" is not a namespace name"),
            "{error}"
        );
    }
}
