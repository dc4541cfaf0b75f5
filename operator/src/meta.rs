//! Names, labels and owner references shared by every child object.
//!
//! All naming lives here so the builders, the status reader, the finalizer and
//! the tests agree on which object is which. Selector labels are a stable subset
//! of the full label set: a Deployment's selector is immutable, so it must never
//! include anything (like a version) that could change.

use std::collections::BTreeMap;

use crds::ChatCluster;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

/// The field manager for every server-side apply, and the Event reporter.
pub const MANAGER: &str = "chatback-operator";

/// The finalizer that runs the PostgreSQL retention policy before deletion.
pub const FINALIZER: &str = "chatback.dev/retention";

/// The `app.kubernetes.io/part-of` value.
pub const PART_OF: &str = "chatback";

/// Label selecting every object the operator manages (its watches use it).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=chatback-operator";

/// Pod-template annotation with the hash of the config and secret inputs.
pub const CONFIG_HASH_ANNOTATION: &str = "chatback.dev/config-hash";

/// The three workloads of a chat cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Server,
    Redis,
    Postgres,
}

impl Component {
    /// `app.kubernetes.io/component`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Server => "server",
            Component::Redis => "redis",
            Component::Postgres => "postgres",
        }
    }

    /// `app.kubernetes.io/name`: the application the pods run.
    pub fn app_name(self) -> &'static str {
        match self {
            Component::Server => "chat-server",
            Component::Redis => "redis",
            Component::Postgres => "postgresql",
        }
    }
}

/// Object names derived from the ChatCluster's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
}

impl Names {
    pub fn of(cc: &ChatCluster) -> Self {
        Self {
            cluster: cc.name_any(),
            namespace: cc.namespace().unwrap_or_else(|| "default".into()),
        }
    }

    /// The chat-server Deployment, Service, HPA and PDB share the cluster's name,
    /// so the Service DNS name is `<name>.<namespace>.svc`.
    pub fn server(&self) -> String {
        self.cluster.clone()
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.cluster)
    }
    pub fn secret(&self) -> String {
        format!("{}-secrets", self.cluster)
    }
    pub fn redis(&self) -> String {
        format!("{}-redis", self.cluster)
    }
    pub fn postgres(&self) -> String {
        format!("{}-postgres", self.cluster)
    }
    /// The data claim of the managed PostgreSQL's pod (template `data`, ordinal 0).
    pub fn postgres_claim(&self) -> String {
        format!("data-{}-0", self.postgres())
    }
    pub fn network_policy(&self) -> String {
        format!("{}-backends", self.cluster)
    }

    /// `<svc>.<namespace>.svc`, the in-cluster DNS name of a Service.
    pub fn host(&self, service: &str) -> String {
        format!("{service}.{}.svc", self.namespace)
    }

    /// The label selector string of a component's pods (scale subresource, `kubectl -l`).
    pub fn selector_string(&self, component: Component) -> String {
        self.selector_labels(component)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The immutable labels that select a component's pods.
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                component.app_name().to_string(),
            ),
            (
                "app.kubernetes.io/instance".to_string(),
                self.cluster.clone(),
            ),
            (
                "app.kubernetes.io/component".to_string(),
                component.as_str().to_string(),
            ),
        ])
    }

    /// The full standard label set of a component's objects.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert("app.kubernetes.io/part-of".into(), PART_OF.into());
        labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
        labels
    }
}

/// The ownerReference that makes a child cascade with its ChatCluster.
///
/// `None` when the ChatCluster has no uid, i.e. it was read from a file by
/// `operator render`: an ownerReference to a uid that does not exist would make
/// the garbage collector delete the rendered objects right after they are applied.
pub fn owner_reference(cc: &ChatCluster) -> Option<OwnerReference> {
    cc.controller_owner_ref(&())
}

/// Metadata of a child object: name, namespace, standard labels, ownerReference.
pub fn child_meta(cc: &ChatCluster, name: String, component: Component) -> ObjectMeta {
    let names = Names::of(cc);
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels(component)),
        owner_references: owner_reference(cc).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The API version string of the ChatCluster kind (`chatback.dev/v1alpha1`).
pub fn cluster_api_version() -> String {
    ChatCluster::api_version(&()).into_owned()
}

/// A default ChatCluster `demo` in namespace `ns`, for the unit tests; the
/// [`TestCluster`] methods vary it.
#[cfg(test)]
pub(crate) fn test_cluster() -> ChatCluster {
    let mut cc = ChatCluster::new("demo", crds::ChatClusterSpec::default());
    cc.metadata.namespace = Some("ns".into());
    cc
}

/// Builder methods over [`test_cluster`], so each test says only what it
/// needs different.
#[cfg(test)]
pub(crate) trait TestCluster {
    /// In `namespace` instead of `ns`.
    fn in_namespace(self, namespace: &str) -> Self;
    /// With a UID, as the API server gives it (children get an ownerReference).
    fn with_uid(self, uid: &str) -> Self;
    /// At `metadata.generation`.
    fn with_generation(self, generation: i64) -> Self;
    /// With its spec changed by `change`.
    fn with_spec(self, change: impl FnOnce(&mut crds::ChatClusterSpec)) -> Self;
}

#[cfg(test)]
impl TestCluster for ChatCluster {
    fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }

    fn with_uid(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.into());
        self
    }

    fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    fn with_spec(mut self, change: impl FnOnce(&mut crds::ChatClusterSpec)) -> Self {
        change(&mut self.spec);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_cluster() {
        let names = Names::of(&test_cluster().in_namespace("chat-app"));
        assert_eq!(names.server(), "demo");
        assert_eq!(names.redis(), "demo-redis");
        assert_eq!(names.postgres(), "demo-postgres");
        assert_eq!(names.secret(), "demo-secrets");
        assert_eq!(names.host(&names.server()), "demo.chat-app.svc");
    }

    #[test]
    fn child_meta_carries_labels_and_controller_owner() {
        let cc = test_cluster().in_namespace("chat-app").with_uid("1234");
        let meta = child_meta(&cc, "demo-redis".into(), Component::Redis);
        let labels = meta.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        assert_eq!(labels["app.kubernetes.io/component"], "redis");
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
        assert_eq!(labels["app.kubernetes.io/part-of"], PART_OF);
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.uid, "1234");
        assert_eq!(owner.kind, "ChatCluster");
        assert_eq!(owner.api_version, "chatback.dev/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("chat-app"));
    }

    #[test]
    fn no_owner_reference_without_uid() {
        let meta = child_meta(
            &test_cluster().in_namespace("chat-app"),
            "demo".into(),
            Component::Server,
        );
        assert!(meta.owner_references.is_none());
    }

    #[test]
    fn selector_string_is_sorted_and_stable() {
        let names = Names::of(&test_cluster().in_namespace("chat-app"));
        assert_eq!(
            names.selector_string(Component::Server),
            "app.kubernetes.io/component=server,app.kubernetes.io/instance=demo,app.kubernetes.io/name=chat-server"
        );
    }
}
