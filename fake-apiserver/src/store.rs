//! The fake's object store: what etcd plus the API server's registry logic do.
//!
//! Objects are JSON, keyed by group/resource/namespace/name. Every write that
//! changes an object bumps the global resourceVersion and appends a watch
//! event to a bounded log, so a watch can resume from any recent
//! resourceVersion (older ones get 410 Gone, as from the real server). A write
//! that changes nothing is a no-op, exactly like the real server: otherwise a
//! controller that applies unchanged children would wake itself up forever.
//!
//! The registry behaviour modelled: metadata the server owns (uid,
//! creationTimestamp, generation, resourceVersion), generation bumps on spec
//! changes, status/scale subresources, finalizers with deletionTimestamp,
//! ownerReference garbage collection, CRD registration and schema defaulting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::merge::{self, json_path};
use super::resources::{ResourceType, apply_defaults};
use super::validation;

/// The watch log's length: watches resuming from further back get 410 Gone.
const LOG_LEN: usize = 20_000;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let resource = if rt.group.is_empty() {
            rt.plural.clone()
        } else {
            format!("{}.{}", rt.plural, rt.group)
        };
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// A watch's backlog and its live feed.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// The field manager of a server-side apply, and whether it forces conflicts.
pub struct Applier<'a> {
    pub manager: &'a str,
    pub force: bool,
}

/// One watch event.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub type_: &'static str,
    pub object: Value,
    /// The object before a MODIFIED change, so a watch with a label selector
    /// can tell an object that stopped matching (DELETED) or started (ADDED).
    pub old: Option<Value>,
}

/// DELETE's `propagationPolicy`: what happens to the object's dependents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes now; the garbage collector deletes the dependents after.
    #[default]
    Background,
    /// The dependents go first (the owner waits with a `foregroundDeletion` finalizer).
    Foreground,
    /// The dependents stay, their ownerReferences to the object removed.
    Orphan,
}

impl Propagation {
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            "Orphan" => Ok(Self::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
            ))),
        }
    }
}

/// The finalizer the API server adds for a foreground deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

struct Stored {
    object: Value,
    /// Each field manager's last applied configuration (server-side apply).
    applied: BTreeMap<String, Value>,
}

type Key = (String, String, String, String);

pub struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Stored>,
    rv: u64,
    uid_seq: u64,
    log: VecDeque<Arc<Change>>,
    tx: broadcast::Sender<Arc<Change>>,
}

/// A parsed label or field selector: every requirement must hold.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    labels: Vec<(String, Requirement)>,
    fields: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum Requirement {
    Equals(String),
    NotEquals(String),
    Exists,
    NotExists,
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self> {
        let mut selector = Selector::default();
        for term in labels
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let requirement = if let Some((k, v)) = term.split_once("!=") {
                (
                    k.trim().to_string(),
                    Requirement::NotEquals(v.trim().to_string()),
                )
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (
                    k.trim().to_string(),
                    Requirement::Equals(v.trim().to_string()),
                )
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim().to_string(), Requirement::NotExists)
            } else if term.contains(' ') {
                return Err(ApiError::bad_request(format!(
                    "unsupported label selector term {term:?}"
                )));
            } else {
                (term.to_string(), Requirement::Exists)
            };
            selector.labels.push(requirement);
        }
        for term in fields
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("unsupported field selector {term:?}"))
                })?;
            if k != "metadata.name" && k != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            selector.fields.push((k.to_string(), v.to_string()));
        }
        Ok(selector)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|(key, req)| {
            let value = labels.get(key).and_then(Value::as_str);
            match req {
                Requirement::Equals(v) => value == Some(v.as_str()),
                Requirement::NotEquals(v) => value != Some(v.as_str()),
                Requirement::Exists => value.is_some(),
                Requirement::NotExists => value.is_none(),
            }
        });
        let field_ok = self.fields.iter().all(|(key, v)| {
            let field = key.trim_start_matches("metadata.");
            object["metadata"][field].as_str() == Some(v.as_str())
        });
        label_ok && field_ok
    }
}

/// A Secret's write-only `stringData` is merged into `data` (base64), as the
/// real registry does: it is never stored or returned.
fn merge_string_data(secret: &mut Value) {
    let Some(Value::Object(strings)) = secret.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    for (key, value) in strings {
        let bytes = k8s_openapi::ByteString(value.as_str().unwrap_or_default().as_bytes().to_vec());
        secret["data"][key] = serde_json::to_value(bytes).unwrap_or_default();
    }
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(Timestamp::now())
        .to_string()
}

impl Store {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(LOG_LEN);
        Self {
            types: ResourceType::builtins(),
            objects: BTreeMap::new(),
            rv: 1,
            uid_seq: 0,
            log: VecDeque::new(),
            tx,
        }
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The resource type serving `group/version/plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn type_of(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    fn key(rt: &ResourceType, namespace: &str, name: &str) -> Key {
        let ns = if rt.namespaced { namespace } else { "" };
        (
            rt.group.clone(),
            rt.plural.clone(),
            ns.to_string(),
            name.to_string(),
        )
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == rt.group && *p == rt.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, s)| s.object.clone())
            .filter(|o| selector.matches(o))
            .collect()
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .map(|s| s.object.clone())
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// The watch backlog after `since` plus a live receiver, taken atomically.
    pub fn watch(&self, since: u64) -> Result<Subscription> {
        if let Some(oldest) = self.log.front()
            && since + 1 < oldest.rv
        {
            return Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {since}"),
            ));
        }
        let backlog = self.log.iter().filter(|c| c.rv > since).cloned().collect();
        Ok((backlog, self.tx.subscribe()))
    }

    fn emit(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        type_: &'static str,
        object: Value,
        old: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: namespace.to_string(),
            type_,
            object,
            old,
        });
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(change.clone());
        let _ = self.tx.send(change);
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        let salt: u32 = rand::random();
        format!("{salt:08x}-0000-4000-8000-{:012x}", self.uid_seq)
    }

    /// Fills in what the server owns and checks the identity of a new object.
    fn admit_new(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<(Key, Value)> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if (!api_version.is_empty() && api_version != rt.api_version())
            || (!kind.is_empty() && kind != rt.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the body is {api_version} {kind}, but the URL is for {} {}",
                rt.api_version(),
                rt.kind
            )));
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let name = match object["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    let suffix: u32 = rand::random();
                    format!("{prefix}{:05x}", suffix & 0xfffff)
                }
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value",
                    ));
                }
            },
        };
        if let Some(ns) = object["metadata"]["namespace"].as_str()
            && rt.namespaced
            && ns != namespace
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({ns}) does not match the namespace of the request ({namespace})"
            )));
        }
        let key = Self::key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.plural),
            ));
        }
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        if rt.namespaced {
            meta["namespace"] = json!(namespace);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["uid"] = json!(self.next_uid());
        meta["creationTimestamp"] = json!(now());
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
        }
        if rt.status
            && let Some(m) = object.as_object_mut()
        {
            m.remove("status");
        }
        Ok((key, object))
    }

    /// Registry hooks run on every stored version of an object.
    fn prepare(&mut self, rt: &ResourceType, object: &mut Value) {
        if rt.group.is_empty() && rt.plural == "secrets" {
            merge_string_data(object);
        }
        if let Some(schema) = &rt.schema {
            apply_defaults(object, schema);
        }
        let is_crd = rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
        if is_crd && object["status"].get("conditions").is_none() {
            object["status"] = json!({
                "acceptedNames": object["spec"]["names"],
                "storedVersions": object["spec"]["versions"].as_array().into_iter().flatten()
                    .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
                ],
            });
        }
        if is_crd {
            let new_types = ResourceType::from_crd(object);
            self.types.retain(|t| {
                !new_types
                    .iter()
                    .any(|n| n.group == t.group && n.plural == t.plural)
            });
            self.types.extend(new_types);
        }
    }

    pub fn create(&mut self, rt: &ResourceType, namespace: &str, body: Value) -> Result<Value> {
        let (key, mut object) = self.admit_new(rt, namespace, body)?;
        self.prepare(rt, &mut object);
        validation::admit(rt, &mut object, None)?;
        object["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                applied: BTreeMap::new(),
            },
        );
        self.emit(rt, namespace, "ADDED", object.clone(), None);
        Ok(object)
    }

    /// Server-side apply. Returns the object and whether it was created.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut config: Value,
        applier: Applier<'_>,
        part: Part,
    ) -> Result<(Value, bool)> {
        let Applier { manager, force } = applier;
        if manager.is_empty() {
            return Err(ApiError::bad_request(
                "fieldManager is required for apply requests",
            ));
        }
        // As on the real server, a body without a name takes the URL's.
        match config["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name in the URL",
                ));
            }
            Some(_) => {}
            None => {
                if !config["metadata"].is_object() {
                    config["metadata"] = json!({});
                }
                config["metadata"]["name"] = json!(name);
            }
        }
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            if let Some(m) = config["metadata"].as_object_mut() {
                m.remove(field);
            }
        }
        let key = Self::key(rt, namespace, name);
        if !self.objects.contains_key(&key) {
            if part == Part::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let object = self.create(rt, namespace, config.clone())?;
            if let Some(stored) = self.objects.get_mut(&key) {
                stored.applied.insert(manager.to_string(), config);
            }
            return Ok((object, true));
        }
        let stored = &self.objects[&key];
        let others: Vec<(&str, &Value)> = stored
            .applied
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .map(|(m, v)| (m.as_str(), v))
            .collect();
        if !force {
            let found = merge::conflicts(&config, &others);
            if !found.is_empty() {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Apply failed with {} conflicts: {}",
                        found.len(),
                        found.join("; ")
                    ),
                ));
            }
        }
        let other_configs: Vec<&Value> = others.iter().map(|(_, v)| *v).collect();
        let mut updated = stored.object.clone();
        merge::server_side_apply(
            &mut updated,
            stored.applied.get(manager),
            &config,
            &other_configs,
        );
        let object = self.commit(rt, namespace, name, updated, part)?;
        if let Some(stored) = self.objects.get_mut(&key) {
            stored.applied.insert(manager.to_string(), config);
        }
        Ok((object, false))
    }

    /// Any other write: `change` edits a copy of the live object. As with
    /// server-side apply's field ownership, an appliers' field that this write
    /// changes (or removes) is no longer theirs: it stops conflicting with, and
    /// being removed by, their later applies.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&mut Value) -> Result<()>,
    ) -> Result<Value> {
        let mut updated = self.get(rt, namespace, name)?;
        change(&mut updated)?;
        let object = self.commit(rt, namespace, name, updated, part)?;
        if let Some(stored) = self.objects.get_mut(&Self::key(rt, namespace, name)) {
            for config in stored.applied.values_mut() {
                merge::release_changed(config, &object);
            }
        }
        Ok(object)
    }

    /// Stores a changed object: keeps server-owned metadata, confines the write
    /// to its part, bumps generation on spec changes, and finishes deletion
    /// once the last finalizer is gone.
    fn commit(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut new: Value,
        part: Part,
    ) -> Result<Value> {
        let key = Self::key(rt, namespace, name);
        let old = self.objects[&key].object.clone();
        let sent_rv = new["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
        if let Some(sent) = sent_rv
            && Some(sent.as_str()) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    rt.plural
                ),
            ));
        }
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        match part {
            Part::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) if !s.is_null() => new["status"] = s,
                    _ => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            Part::Main if rt.status => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            Part::Main => {}
        }
        self.prepare(rt, &mut new);
        validation::admit(rt, &mut new, Some(&old))?;
        if part == Part::Main {
            validation::immutable(rt, &new, &old)?;
        }
        if new == old {
            return Ok(old);
        }
        let content = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        if content(&new) != content(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        new["metadata"]["resourceVersion"] = json!(self.next_rv());
        if let Some(stored) = self.objects.get_mut(&key) {
            stored.object = new.clone();
        }
        let deleting = new["metadata"].get("deletionTimestamp").is_some();
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left {
            self.remove(rt, namespace, name);
        } else {
            self.emit(rt, namespace, "MODIFIED", new.clone(), Some(old));
        }
        Ok(new)
    }

    /// DELETE: orphans or deletes the dependents as `propagation` says, then
    /// marks an object with finalizers (deletionTimestamp) or removes it.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Value> {
        let key = Self::key(rt, namespace, name);
        let object = self.get(rt, namespace, name)?;
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match propagation {
            Propagation::Background => {}
            Propagation::Orphan => self.orphan_dependents(&uid),
            // The garbage collector deletes the dependents before the owner;
            // this fake's collector is synchronous, so they are gone (or
            // terminating) before the owner is even marked.
            Propagation::Foreground => self.collect_dependents(&uid),
        }
        let object = self.get(rt, namespace, name)?;
        let mut finalizers: Vec<Value> = object["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if propagation == Propagation::Foreground
            && self.has_dependents(&uid)
            && !finalizers.contains(&json!(FOREGROUND_FINALIZER))
        {
            finalizers.push(json!(FOREGROUND_FINALIZER));
        }
        if finalizers.is_empty() {
            return Ok(self.remove(rt, namespace, name).unwrap_or(object));
        }
        if object["metadata"].get("deletionTimestamp").is_some()
            && object["metadata"]["finalizers"] == json!(finalizers)
        {
            return Ok(object);
        }
        let mut marked = object.clone();
        if marked["metadata"].get("deletionTimestamp").is_none() {
            marked["metadata"]["deletionTimestamp"] = json!(now());
        }
        marked["metadata"]["finalizers"] = json!(finalizers);
        marked["metadata"]["resourceVersion"] = json!(self.next_rv());
        if let Some(stored) = self.objects.get_mut(&key) {
            stored.object = marked.clone();
        }
        self.emit(rt, namespace, "MODIFIED", marked.clone(), Some(object));
        Ok(marked)
    }

    fn owned_by(object: &Value, uid: &str) -> bool {
        object["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
    }

    fn has_dependents(&self, uid: &str) -> bool {
        self.objects
            .values()
            .any(|s| Self::owned_by(&s.object, uid))
    }

    /// The type, namespace and name of every object `uid` owns.
    fn dependents_of(&self, uid: &str) -> Vec<(ResourceType, String, String)> {
        self.objects
            .iter()
            .filter(|(_, s)| Self::owned_by(&s.object, uid))
            .filter_map(|((group, plural, namespace, name), _)| {
                let rt = self.type_of(group, plural)?;
                Some((rt, namespace.clone(), name.clone()))
            })
            .collect()
    }

    /// Removes the ownerReferences to `uid` from every dependent.
    fn orphan_dependents(&mut self, uid: &str) {
        for (rt, namespace, name) in self.dependents_of(uid) {
            let _ = self.update(&rt, &namespace, &name, Part::Main, |o| {
                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
                Ok(())
            });
        }
    }

    /// Drops the `foregroundDeletion` finalizer of owners (listed in
    /// `object`'s ownerReferences) that have no dependents left.
    fn finish_foreground(&mut self, object: &Value) {
        let owner_uids: Vec<String> = object["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["uid"].as_str().map(String::from))
            .collect();
        for uid in owner_uids {
            if self.has_dependents(&uid) {
                continue;
            }
            let owner = self.objects.iter().find(|(_, s)| {
                s.object["metadata"]["uid"] == uid.as_str()
                    && s.object["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.contains(&json!(FOREGROUND_FINALIZER)))
            });
            let Some(((group, plural, namespace, name), _)) = owner else {
                continue;
            };
            let (group, plural, namespace, name) = (
                group.clone(),
                plural.clone(),
                namespace.clone(),
                name.clone(),
            );
            if let Some(rt) = self.type_of(&group, &plural) {
                let _ = self.update(&rt, &namespace, &name, Part::Main, |o| {
                    if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                        f.retain(|f| f != FOREGROUND_FINALIZER);
                    }
                    Ok(())
                });
            }
        }
    }

    /// Removes an object for good and collects its dependents.
    fn remove(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let stored = self.objects.remove(&Self::key(rt, namespace, name))?;
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.emit(rt, namespace, "DELETED", object.clone(), None);
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            for gone in ResourceType::from_crd(&object) {
                self.types
                    .retain(|t| !(t.group == gone.group && t.plural == gone.plural));
                let keys: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|(g, p, _, _)| *g == gone.group && *p == gone.plural)
                    .cloned()
                    .collect();
                for (_, _, ns, n) in keys {
                    self.remove(&gone, &ns, &n);
                }
            }
        }
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.collect_dependents(uid);
        }
        self.finish_foreground(&object);
        Some(object)
    }

    /// The garbage collector: deletes every object owned by `uid`.
    fn collect_dependents(&mut self, uid: &str) {
        for (rt, namespace, name) in self.dependents_of(uid) {
            let _ = self.delete(&rt, &namespace, &name, Propagation::Background);
        }
    }

    /// The autoscaling/v1 Scale of an object with a scale subresource.
    pub fn scale(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value> {
        let paths = rt
            .scale
            .as_ref()
            .ok_or_else(|| ApiError::not_found(rt, &format!("{name}/scale")))?;
        let object = self.get(rt, namespace, name)?;
        let spec_replicas = merge::get_path(&object, &json_path(&paths.spec_replicas))
            .cloned()
            .unwrap_or(json!(0));
        let status_replicas = merge::get_path(&object, &json_path(&paths.status_replicas))
            .cloned()
            .unwrap_or(json!(0));
        let selector = match &paths.selector {
            Some(path) => merge::get_path(&object, &json_path(path))
                .cloned()
                .unwrap_or(json!("")),
            None => json!(
                object["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            ),
        };
        let meta = &object["metadata"];
        Ok(json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": spec_replicas},
            "status": {"replicas": status_replicas, "selector": selector},
        }))
    }

    /// Writes `spec.replicas` of a Scale back to the object.
    pub fn set_scale(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        scale: &Value,
    ) -> Result<Value> {
        let paths = rt
            .scale
            .clone()
            .ok_or_else(|| ApiError::not_found(rt, &format!("{name}/scale")))?;
        let replicas = scale["spec"]["replicas"]
            .as_i64()
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    422,
                    "Invalid",
                    "spec.replicas: must be a non-negative integer",
                )
            })?;
        let sent_rv = scale["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
        self.update(rt, namespace, name, Part::Main, |object| {
            if let Some(rv) = sent_rv {
                object["metadata"]["resourceVersion"] = json!(rv);
            }
            merge::set_path(object, &json_path(&paths.spec_replicas), json!(replicas));
            Ok(())
        })?;
        self.scale(rt, namespace, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new()
    }

    fn rt(store: &Store, group: &str, version: &str, plural: &str) -> ResourceType {
        store
            .resource(group, version, plural)
            .expect("a built-in type")
    }

    fn config_map(name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    }

    fn owned(kind_body: Value, owner: &Value) -> Value {
        let mut body = kind_body;
        body["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        }]);
        body
    }

    fn stateful_set(name: &str, size: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": size}}}}],
            },
        })
    }

    fn apply(store: &mut Store, rt: &ResourceType, body: Value) -> Result<Value> {
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        let applier = Applier {
            manager: "test",
            force: true,
        };
        store
            .apply(rt, "ns", &name, body, applier, Part::Main)
            .map(|(o, _)| o)
    }

    #[test]
    fn create_fills_in_what_the_server_owns() {
        let mut s = store();
        let cm = rt(&s, "", "v1", "configmaps");
        let created = s
            .create(&cm, "ns", config_map("a", json!({"k": "v"})))
            .unwrap();
        let meta = &created["metadata"];
        assert_eq!(meta["namespace"], "ns");
        assert_eq!(meta["generation"], 1);
        assert!(meta["uid"].is_string() && meta["creationTimestamp"].is_string());
        assert_eq!(s.get(&cm, "ns", "a").unwrap(), created);
        let again = s.create(&cm, "ns", config_map("a", json!({}))).unwrap_err();
        assert_eq!((again.code, again.reason), (409, "AlreadyExists"));
        assert_eq!(s.get(&cm, "other", "a").unwrap_err().code, 404);
    }

    #[test]
    fn an_unchanged_write_is_a_no_op_and_a_spec_change_bumps_generation() {
        let mut s = store();
        let sts = rt(&s, "apps", "v1", "statefulsets");
        let first = apply(&mut s, &sts, stateful_set("db", "1Gi")).unwrap();
        let rv = s.resource_version();
        let same = apply(&mut s, &sts, stateful_set("db", "1Gi")).unwrap();
        assert_eq!(same, first);
        assert_eq!(s.resource_version(), rv, "no write, no new resourceVersion");
        let mut scaled = stateful_set("db", "1Gi");
        scaled["spec"]["replicas"] = json!(2);
        assert_eq!(
            apply(&mut s, &sts, scaled).unwrap()["metadata"]["generation"],
            2
        );
        let status = s
            .update(&sts, "ns", "db", Part::Status, |o| {
                o["status"] = json!({"readyReplicas": 2});
                o["spec"]["replicas"] = json!(9);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            status["metadata"]["generation"], 2,
            "status writes keep generation"
        );
        assert_eq!(
            status["spec"]["replicas"], 2,
            "a status write cannot change the spec"
        );
    }

    #[test]
    fn a_stale_resource_version_conflicts() {
        let mut s = store();
        let cm = rt(&s, "", "v1", "configmaps");
        s.create(&cm, "ns", config_map("a", json!({}))).unwrap();
        let error = s
            .update(&cm, "ns", "a", Part::Main, |o| {
                o["metadata"]["resourceVersion"] = json!("1");
                o["data"] = json!({"k": "v"});
                Ok(())
            })
            .unwrap_err();
        assert_eq!((error.code, error.reason), (409, "Conflict"));
    }

    #[test]
    fn stateful_set_claim_templates_selector_and_service_name_are_immutable() {
        let mut s = store();
        let sts = rt(&s, "apps", "v1", "statefulsets");
        apply(&mut s, &sts, stateful_set("db", "1Gi")).unwrap();
        let bigger = apply(&mut s, &sts, stateful_set("db", "5Gi")).unwrap_err();
        assert_eq!(bigger.code, 422);
        assert!(
            bigger.message.contains("spec: Forbidden"),
            "{}",
            bigger.message
        );
        for (field, value) in [
            ("serviceName", json!("other")),
            ("selector", json!({"matchLabels": {"app": "x"}})),
        ] {
            let mut changed = stateful_set("db", "1Gi");
            changed["spec"][field] = value;
            assert_eq!(
                apply(&mut s, &sts, changed).unwrap_err().code,
                422,
                "{field}"
            );
        }
        let mut new_image = stateful_set("db", "1Gi");
        new_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:2");
        new_image["spec"]["replicas"] = json!(3);
        apply(&mut s, &sts, new_image).expect("template and replicas may change");
    }

    #[test]
    fn deployment_selector_is_immutable() {
        let mut s = store();
        let deploy = rt(&s, "apps", "v1", "deployments");
        let body = |app: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {}}})
        };
        apply(&mut s, &deploy, body("a")).unwrap();
        let error = apply(&mut s, &deploy, body("b")).unwrap_err();
        assert_eq!(error.code, 422);
        assert!(error.message.contains("spec.selector"), "{}", error.message);
    }

    #[test]
    fn finalizers_hold_a_deleted_object_until_removed() {
        let mut s = store();
        let cm = rt(&s, "", "v1", "configmaps");
        let mut body = config_map("a", json!({}));
        body["metadata"]["finalizers"] = json!(["x/y"]);
        s.create(&cm, "ns", body).unwrap();
        let marked = s.delete(&cm, "ns", "a", Propagation::Background).unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&cm, "ns", "a").is_ok());
        s.update(&cm, "ns", "a", Part::Main, |o| {
            o["metadata"]["finalizers"] = json!([]);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.get(&cm, "ns", "a").unwrap_err().code, 404);
    }

    /// An owner holding a finalizer, and one dependent.
    fn owner_and_dependent(s: &mut Store) -> ResourceType {
        let cm = rt(s, "", "v1", "configmaps");
        let mut body = config_map("owner", json!({}));
        body["metadata"]["finalizers"] = json!(["x/cleanup"]);
        let owner = s.create(&cm, "ns", body).unwrap();
        s.create(&cm, "ns", owned(config_map("dep", json!({})), &owner))
            .unwrap();
        cm
    }

    #[test]
    fn background_deletion_collects_dependents_after_the_owner() {
        let mut s = store();
        let cm = owner_and_dependent(&mut s);
        s.delete(&cm, "ns", "owner", Propagation::Background)
            .unwrap();
        assert!(
            s.get(&cm, "ns", "dep").is_ok(),
            "the owner still exists (finalizer)"
        );
        s.update(&cm, "ns", "owner", Part::Main, |o| {
            o["metadata"]["finalizers"] = json!([]);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.get(&cm, "ns", "dep").unwrap_err().code, 404);
    }

    #[test]
    fn foreground_deletion_removes_dependents_first() {
        let mut s = store();
        let cm = owner_and_dependent(&mut s);
        let marked = s
            .delete(&cm, "ns", "owner", Propagation::Foreground)
            .unwrap();
        assert_eq!(s.get(&cm, "ns", "dep").unwrap_err().code, 404);
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(marked["metadata"]["finalizers"], json!(["x/cleanup"]));
    }

    #[test]
    fn orphan_deletion_keeps_dependents_without_the_reference() {
        let mut s = store();
        let cm = owner_and_dependent(&mut s);
        s.delete(&cm, "ns", "owner", Propagation::Orphan).unwrap();
        s.update(&cm, "ns", "owner", Part::Main, |o| {
            o["metadata"]["finalizers"] = json!([]);
            Ok(())
        })
        .unwrap();
        let dep = s.get(&cm, "ns", "dep").expect("orphaned, not deleted");
        assert_eq!(dep["metadata"]["ownerReferences"], json!([]));
    }

    #[test]
    fn watches_resume_from_recent_versions_and_modified_carries_the_old_object() {
        let mut s = store();
        let cm = rt(&s, "", "v1", "configmaps");
        let start = s.resource_version();
        s.create(&cm, "ns", config_map("a", json!({"k": "1"})))
            .unwrap();
        s.update(&cm, "ns", "a", Part::Main, |o| {
            o["data"]["k"] = json!("2");
            Ok(())
        })
        .unwrap();
        let (backlog, _) = s.watch(start).unwrap();
        let types: Vec<&str> = backlog.iter().map(|c| c.type_).collect();
        assert_eq!(types, ["ADDED", "MODIFIED"]);
        assert_eq!(backlog[1].old.as_ref().unwrap()["data"]["k"], "1");
        assert!(s.watch(s.resource_version()).unwrap().0.is_empty());
    }

    #[test]
    fn a_field_another_writer_changed_is_no_longer_the_appliers() {
        let mut s = store();
        let cm = rt(&s, "", "v1", "configmaps");
        let applier = |manager| Applier {
            manager,
            force: false,
        };
        let body = config_map("a", json!({"holder": "x"}));
        s.apply(&cm, "ns", "a", body, applier("one"), Part::Main)
            .unwrap();
        let taken = config_map("a", json!({"holder": "y"}));
        let conflict = s
            .apply(&cm, "ns", "a", taken.clone(), applier("two"), Part::Main)
            .unwrap_err();
        assert_eq!(conflict.code, 409);
        s.update(&cm, "ns", "a", Part::Main, |o| {
            o["data"] = json!({});
            Ok(())
        })
        .unwrap();
        s.apply(&cm, "ns", "a", taken, applier("two"), Part::Main)
            .expect("nobody owns the removed field any more");
    }

    #[test]
    fn secret_string_data_is_stored_as_data() {
        let mut s = store();
        let secrets = rt(&s, "", "v1", "secrets");
        let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA=="}, "stringData": {"b": "hello"}});
        let stored = s.create(&secrets, "ns", body).unwrap();
        assert_eq!(stored["data"], json!({"a": "eA==", "b": "aGVsbG8="}));
        assert!(stored.get("stringData").is_none());
    }

    #[test]
    fn selectors_parse_and_match() {
        let object = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "x", "tier": "db"}}});
        let matches = |labels: &str, fields: Option<&str>| {
            Selector::parse(Some(labels), fields)
                .unwrap()
                .matches(&object)
        };
        assert!(matches("app=x,tier", None));
        assert!(matches(
            "app==x,tier!=web,!missing",
            Some("metadata.name=a")
        ));
        assert!(!matches("app=y", None));
        assert!(!matches("", Some("metadata.namespace=other")));
        assert!(Selector::parse(Some("app in (x)"), None).is_err());
        assert!(Selector::parse(None, Some("spec.x=1")).is_err());
    }
}
