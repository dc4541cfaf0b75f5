//! An in-process fake Kubernetes API server for the operator's tests.
//!
//! A crate of its own (test support, `publish = false`) so that it is built
//! once, used by every operator test binary as a dev-dependency, and tested
//! here: the unit tests next to each part, and `tests/api.rs` through
//! kube::Client over a real socket.
//!
//! No real API server runs on the build machines, so the controller tests run
//! the real kube-runtime `Controller` against this one: a real HTTP server on
//! 127.0.0.1 that kube::Client (and kubectl) reach through an ordinary
//! kubeconfig. It is generic (any resource type, including CRDs applied to
//! it) and models the API machinery the operator depends on: list, watch with
//! resourceVersion (an object that stops matching a label selector is DELETED
//! for that watch), get, create, server-side apply (with field ownership and
//! map-lists merged by key, see [`merge`]), merge and JSON patch, delete with
//! finalizers, `propagationPolicy` (Background, Foreground, Orphan) and
//! ownerReference garbage collection, the status and scale subresources,
//! generation bumps, the immutable fields of built-in kinds (StatefulSet
//! volumeClaimTemplates, selector, serviceName; Deployment selector; claim
//! specs), discovery, OpenAPI v3 stubs and Table output for kubectl, and
//! admission of custom resources against their CRD schema (structural rules
//! and CEL with transition rules, see [`validation`]). A fake kubelet
//! ([`kubelet`]) plays the workload controllers' part by filling in status,
//! rollouts included: an image marked broken never gets ready, and its
//! Deployment reports `ProgressDeadlineExceeded`.
//!
//! A Job's pods really run: [`jobs`] plays the Job controller and runs each
//! pod as a local process of an image the test registered, with its log
//! served at `pods/<name>/log`.
//!
//! Faults can be injected per verb and resource, to test retries.

pub mod http;
pub mod jobs;
pub mod kubelet;
pub mod merge;
pub mod resources;
pub mod store;
pub mod table;
pub mod validation;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use store::{ApiError, Store};

/// A request failure to inject: the next `remaining` matching requests fail.
struct Fault {
    method: Method,
    plural: String,
    code: u16,
    remaining: u32,
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub status: u16,
}

/// State shared by the HTTP handlers, the kubelet and the test.
pub struct Shared {
    pub store: Mutex<Store>,
    faults: Mutex<Vec<Fault>>,
    requests: Mutex<Vec<Request>>,
    /// Images whose pods never become ready (see [`kubelet`]).
    pub broken_images: Mutex<BTreeSet<String>>,
    /// Image → the local program its Job pods run (see [`jobs`]).
    pub programs: Mutex<BTreeMap<String, PathBuf>>,
    /// `<service>.<namespace>.svc:<port>` → the local address behind it.
    pub routes: Mutex<BTreeMap<String, String>>,
    /// (namespace, pod) → what its container wrote.
    pub logs: Mutex<HashMap<(String, String), String>>,
    pub shutdown: CancellationToken,
}

impl Shared {
    fn record(&self, request: Request) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.push(request);
    }

    fn take_fault(&self, method: &Method, plural: &str) -> Option<ApiError> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let fault = faults
            .iter_mut()
            .find(|f| f.method == method && f.plural == plural && f.remaining > 0)?;
        fault.remaining -= 1;
        Some(ApiError::new(
            fault.code,
            "InternalError",
            format!("injected fault on {method} {plural}"),
        ))
    }
}

/// A running fake API server; stops when dropped.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Whether the kubelet reports workloads as ready.
    pub pods_ready: Arc<AtomicBool>,
}

impl FakeApiServer {
    /// Starts the server and its kubelet (pods ready by default).
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            faults: Mutex::default(),
            requests: Mutex::default(),
            broken_images: Mutex::default(),
            programs: Mutex::default(),
            routes: Mutex::default(),
            logs: Mutex::default(),
            shutdown: CancellationToken::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .expect("fake API server");
        });
        let pods_ready = Arc::new(AtomicBool::new(true));
        tokio::spawn(kubelet::run(
            shared.clone(),
            pods_ready.clone(),
            Duration::from_millis(50),
        ));
        tokio::spawn(jobs::run(shared.clone(), Duration::from_millis(100)));
        Self {
            addr,
            shared,
            pods_ready,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube::Client talking to this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("a valid URL"));
        kube::Client::try_from(config).expect("a client for the fake API server")
    }

    /// Writes a kubeconfig pointing at this server (for kubectl and `operator run`).
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, kubeconfig).expect("write kubeconfig");
    }

    /// Makes the next `count` `method` requests on `plural` fail with `code`.
    pub fn inject_fault(&self, method: Method, plural: &str, count: u32, code: u16) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.push(Fault {
            method,
            plural: plural.into(),
            code,
            remaining: count,
        });
    }

    /// Injected failures not yet served.
    pub fn faults_left(&self) -> u32 {
        let faults = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.iter().map(|f| f.remaining).sum()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The stored objects of one resource in one namespace.
    pub fn objects(&self, group: &str, plural: &str, namespace: &str) -> Vec<Value> {
        let store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rt) = store
            .types()
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
        else {
            return Vec::new();
        };
        store.list(&rt, Some(namespace), &store::Selector::default())
    }

    /// One stored object, if it exists.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.objects(group, plural, namespace)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    /// Makes pods running `image` never become ready, as a crash loop would.
    pub fn break_image(&self, image: &str) {
        let mut broken = self
            .shared
            .broken_images
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        broken.insert(image.to_string());
    }

    /// Makes Job pods of `image` run `program` (see [`jobs`]).
    pub fn run_image(&self, image: &str, program: &Path) {
        let mut programs = self
            .shared
            .programs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        programs.insert(image.to_string(), program.to_path_buf());
    }

    /// Routes `<service>.<namespace>.svc:<port>`, as a Job pod's args name
    /// it, to `addr` (cluster DNS and kube-proxy, for [`jobs`]).
    pub fn route_service(&self, service: &str, addr: SocketAddr) {
        let mut routes = self.shared.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.insert(service.to_string(), addr.to_string());
    }

    pub fn set_pods_ready(&self, ready: bool) {
        self.pods_ready.store(ready, Ordering::Relaxed);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
