//! The resource types the fake serves: the built-in kinds the operator and
//! kubectl touch, plus every CustomResourceDefinition applied to it.
//!
//! Like the real API server, a CRD becomes servable the moment it is stored:
//! its names, scope, subresources, printer columns and schema (for defaulting)
//! are read from the CRD object itself.

use serde_json::{Value, json};

/// Where the scale subresource reads and writes replicas.
#[derive(Clone, Debug)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub selector: Option<String>,
}

/// One servable resource.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub short_names: Vec<String>,
    pub printer_columns: Vec<Value>,
    /// The openAPIV3Schema of a custom resource, for structural defaulting.
    pub schema: Option<Value>,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status: false,
            scale: None,
            short_names: Vec::new(),
            printer_columns: Vec::new(),
            schema: None,
        }
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_scale(mut self) -> Self {
        self.scale = Some(ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            selector: None,
        });
        self
    }

    fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The built-in kinds.
    pub fn builtins() -> Vec<Self> {
        vec![
            Self::builtin("", "v1", "namespaces", "Namespace", false)
                .with_status()
                .with_short_names(&["ns"]),
            Self::builtin("", "v1", "secrets", "Secret", true),
            Self::builtin("", "v1", "configmaps", "ConfigMap", true).with_short_names(&["cm"]),
            Self::builtin("", "v1", "services", "Service", true)
                .with_status()
                .with_short_names(&["svc"]),
            Self::builtin(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
            )
            .with_status()
            .with_short_names(&["pvc"]),
            Self::builtin("", "v1", "pods", "Pod", true)
                .with_status()
                .with_short_names(&["po"]),
            Self::builtin("", "v1", "events", "Event", true).with_short_names(&["ev"]),
            Self::builtin("", "v1", "serviceaccounts", "ServiceAccount", true)
                .with_short_names(&["sa"]),
            Self::builtin("apps", "v1", "deployments", "Deployment", true)
                .with_status()
                .with_scale()
                .with_short_names(&["deploy"]),
            Self::builtin("apps", "v1", "statefulsets", "StatefulSet", true)
                .with_status()
                .with_scale()
                .with_short_names(&["sts"]),
            Self::builtin(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
            )
            .with_status()
            .with_short_names(&["hpa"]),
            Self::builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
            )
            .with_status()
            .with_short_names(&["pdb"]),
            Self::builtin(
                "networking.k8s.io",
                "v1",
                "networkpolicies",
                "NetworkPolicy",
                true,
            )
            .with_short_names(&["netpol"]),
            Self::builtin("events.k8s.io", "v1", "events", "Event", true).with_short_names(&["ev"]),
            Self::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
            .with_status()
            .with_short_names(&["crd", "crds"]),
            Self::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "ClusterRole",
                false,
            ),
            Self::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
            ),
            Self::builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
            Self::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "rolebindings",
                "RoleBinding",
                true,
            ),
            Self::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            Self::builtin("batch", "v1", "jobs", "Job", true).with_status(),
        ]
    }

    /// The served versions of a CRD object, as resource types.
    pub fn from_crd(crd: &Value) -> Vec<Self> {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut types = Vec::new();
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"] == json!(false) {
                continue;
            }
            let subresources = &version["subresources"];
            let scale = subresources.get("scale").map(|s| ScalePaths {
                spec_replicas: text(&s["specReplicasPath"]),
                status_replicas: text(&s["statusReplicasPath"]),
                selector: s["labelSelectorPath"].as_str().map(String::from),
            });
            types.push(Self {
                group: text(&spec["group"]),
                version: text(&version["name"]),
                plural: text(&names["plural"]),
                singular: text(&names["singular"]),
                kind: text(&names["kind"]),
                namespaced: spec["scope"] == "Namespaced",
                status: subresources.get("status").is_some(),
                scale,
                short_names: names["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect(),
                printer_columns: version["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                schema: version["schema"].get("openAPIV3Schema").cloned(),
            });
        }
        types
    }

    /// Its entry in an APIResourceList, subresources included.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut verbs = vec![
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        verbs.sort_unstable();
        let mut entries = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": self.short_names,
        })];
        if self.status {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.scale.is_some() {
            entries.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }
}

/// Fills in the schema's defaults, as the API server's structural defaulting does:
/// an absent property with a `default` gets it, then defaulting recurses into it.
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    if !map.contains_key(name)
                        && let Some(default) = property.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_defaults(child, property);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}
